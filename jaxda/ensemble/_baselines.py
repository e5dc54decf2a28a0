r"""Baselines: the climatology and optimal interpolation (OI) with a static climatological prior.

Both ignore the forecast model and give the score any assimilation method should beat
(DAPPER reports its ``Climatology`` and ``OptInterp`` next to the filters):

* :func:`climatology` estimates the state by the climatological distribution
  :math:`\mathcal N(μ_C, P_C)` at every time, whatever the observations.
* :func:`optimal_interpolation` conditions that climatological prior on the observations of
  each time, :math:`x^a = μ_C + K\,(y - H(μ_C))`, :math:`K = P_C H^T (H P_C H^T + R)^{-1}`,
  with :math:`H` linearised at :math:`μ_C` (``jax.jacfwd``); the analysis covariance is
  :math:`P^a = (I - KH) P_C`. The prior is the climatology at every time: no information is
  carried from one time to the next.

**The climatology** :math:`(μ_C, P_C)` is given in one of three ways: explicitly
(``mean=``, ``cov=``), as a sample of states ``(K, n)`` (``sample=``: its mean and unbiased
covariance), or, when neither is given, estimated from a long free run of the forecast model
(``model=``, :func:`jaxda.variational.climatological_sample`: ``n_climatology`` steps after a
spin-up of 1,000 steps from ``model.x0``). DAPPER estimates it from the true trajectory of the
experiment itself, which is slightly optimistic on short runs (the climatology is then fitted
to the very states being scored); a free run is independent of the truth.

**Spread.** The driver reads the RMSE and the spread off ``state.ensemble``. Both baselines
therefore represent their Gaussian :math:`\mathcal N(μ, P)` by ``2n`` deterministic *sigma
points* :math:`μ \pm c\,\ell_i` (:math:`\ell_i` the columns of a square root
:math:`L L^T = P`, :math:`c = \sqrt{(2n-1)/2}`), whose mean is :math:`μ` and whose unbiased
sample covariance is exactly :math:`P`; the reported spread is :math:`\sqrt{\mathrm{tr}\,P/n}`.
The ensemble passed to ``init`` only fixes the state size and dtype. The ``forecast`` of both
methods returns the climatology (the prior of the next analysis) without running the model.

**Cost.** These are static baselines for moderate ``n``: they store the dense ``n×n`` square
root of :math:`P_C`. One OI analysis with ``m`` observations costs ``O(n²m + m³)`` (products
of ``n×n`` by ``n×m``, one ``m×m`` symmetric eigendecomposition; no ``n×n`` factorization and
no inverse), plus the Jacobian of the observation operator at :math:`μ_C` (``n`` forward-mode
passes of ``H``). The gain is computed at every time from that time's observation model, so
missing values (``NaN``) and networks that change in time are exact.

Reference: DAPPER's ``da_methods/baseline.py`` (Raanes); Kalnay (2003), *Atmospheric
Modeling, Data Assimilation and Predictability*, §5.4 (optimal interpolation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from jaxtyping import Array, Float

from ..core import EnsembleState, Method, analysis_info, check_ensemble, check_sample, is_concrete
from ..models import Model
from ..observations import ObservationModel, fill_missing, observed, whitened_residual
from ..variational import climatological_sample

_SPINUP = 1_000


def _covariance_sqrt(cov: Array, name: str) -> Array:
    """A square root ``L`` (``L Lᵀ = cov``) along the principal axes of a symmetric positive
    semi-definite ``cov`` (eigendecomposition; singular covariances are fine)."""
    if is_concrete(cov):
        c = np.asarray(cov)
        if not np.all(np.isfinite(c)):
            raise ValueError(f"{name} must be finite")
        scale = max(float(np.max(np.abs(c))), 1e-300)
        if not np.allclose(c, c.T, rtol=1e-10, atol=1e-12 * scale):
            raise ValueError(f"{name} must be symmetric")
        if np.min(np.linalg.eigvalsh(0.5 * (c + c.T))) < -1e-8 * scale:
            raise ValueError(f"{name} must be positive semi-definite")
    lam, V = jnp.linalg.eigh(0.5 * (cov + cov.T))
    return V * jnp.sqrt(jnp.maximum(lam, 0.0))


def _climatology(mean, cov, sample, model, n_climatology, key, who) -> tuple[Array, Array]:
    """The climatological mean ``(n,)`` and a square root ``(n, n)`` of its covariance, from
    exactly one of ``mean``+``cov``, ``sample`` or a free run of ``model``."""
    explicit = mean is not None or cov is not None
    if explicit and (mean is None or cov is None):
        raise ValueError(f"{who}: give mean= and cov= together (the climatological N(mean, cov))")
    if explicit and sample is not None:
        raise ValueError(f"{who}: give either mean=/cov= or sample=, not both")
    if explicit:
        mu = jnp.asarray(mean)
        C = jnp.asarray(cov)
        if not jnp.issubdtype(mu.dtype, jnp.floating):
            mu = mu.astype(jnp.result_type(float))
        C = C.astype(mu.dtype)
        if mu.ndim != 1:
            raise ValueError(f"{who}: mean must be a vector (n,), got shape {mu.shape}")
        if C.shape != (mu.shape[0],) * 2:
            raise ValueError(f"{who}: cov must be (n, n) = {(mu.shape[0],) * 2}, got {C.shape}")
        if is_concrete(mu) and not np.all(np.isfinite(np.asarray(mu))):
            raise ValueError(f"{who}: mean must be finite")
    else:
        if sample is None:
            if model is None:
                raise ValueError(
                    f"{who} needs its climatology: mean= and cov=, a sample= of states (K, n), "
                    "or model= (estimated from a free run)"
                )
            if not isinstance(model, Model):
                raise TypeError(f"model must be a jaxda.models.Model, got {type(model).__name__}")
            if not isinstance(n_climatology, int | np.integer) or n_climatology < 2:
                raise ValueError(f"n_climatology must be an int >= 2, got {n_climatology!r}")
            if model.stochastic and key is None:
                raise ValueError(
                    f"{who}: the model is stochastic: give key= to draw the model noise of its "
                    "free run, or the climatology itself (sample=, or mean= and cov=)"
                )
            sample = climatological_sample(model, int(n_climatology), _SPINUP, key=key)
        X = check_sample(sample, f"{who}: the climatological sample", min_rows=2)
        mu = jnp.mean(X, axis=0)
        C = jnp.cov(X, rowvar=False).reshape(X.shape[1], X.shape[1])
    if model is not None and mu.shape[0] != model.dim:
        raise ValueError(f"{who}: the climatology has n={mu.shape[0]}, the model {model.dim}")
    return mu, _covariance_sqrt(C, f"{who}: cov")


def _sigma_points(mu: Float[Array, " n"], L: Float[Array, "n r"]) -> Float[Array, "2r n"]:
    """``2r`` members ``μ ± c ℓ_i`` with mean ``μ`` and unbiased covariance ``L Lᵀ``."""
    r = L.shape[1]
    c = jnp.sqrt((2 * r - 1) / 2.0).astype(L.dtype)
    D = c * L.T
    return mu + jnp.concatenate([D, -D], axis=0)


def _baseline_init(mu, L):
    """``init`` and ``forecast`` of both baselines: each gives the climatology's sigma points."""
    n = mu.shape[0]

    def init(ensemble, obs=None):
        del obs
        check_ensemble(ensemble, "ensemble", min_members=1)
        if ensemble.shape[1] != n:
            raise ValueError(f"the ensemble has {ensemble.shape[1]} variables, the climatology {n}")
        dt = ensemble.dtype if jnp.issubdtype(ensemble.dtype, jnp.floating) else mu.dtype
        return EnsembleState(_sigma_points(mu.astype(dt), L.astype(dt)))

    def forecast(key, state, n_steps, max_steps):  # the climatology, in the state's dtype
        del key, n_steps, max_steps
        dt = state.ensemble.dtype
        return EnsembleState(_sigma_points(mu.astype(dt), L.astype(dt)))

    return init, forecast


def climatology(
    mean: ArrayLike | None = None,
    cov: ArrayLike | None = None,
    *,
    sample: ArrayLike | None = None,
    model: Model | None = None,
    n_climatology: int = 20_000,
    key: Array | None = None,
) -> Method:
    r"""The climatology baseline: the estimate is :math:`\mathcal N(μ_C, P_C)` at every time.

    The observations are not used (``info.n_obs`` still counts the present ones); the
    state's ensemble is the ``2n`` sigma points of :math:`\mathcal N(μ_C, P_C)` (module
    docstring), so the driver's RMSE is that of :math:`μ_C` and its spread
    :math:`\sqrt{\mathrm{tr}\,P_C/n}`. ``forecast`` returns it unchanged (no model run).

    Args:
        mean, cov: the climatological mean ``(n,)`` and covariance ``(n, n)`` (positive
            semi-definite), given together.
        sample: instead, states ``(K, n)`` whose mean and unbiased covariance are the
            climatology.
        model: the forecast model; when neither of the above is given the climatology is
            estimated from a free run of ``n_climatology`` steps after a spin-up of 1,000
            steps from ``model.x0`` (DAPPER estimates it from the truth). Otherwise only
            used to check the state size.
        n_climatology: length of that free run.
        key: the key of the model noise of that free run, needed only for a stochastic model.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> method = climatology(jnp.array([1.0, -1.0]), jnp.diag(jnp.array([4.0, 1.0])))
        >>> state = method.init(jnp.zeros((1, 2)))
        >>> state.ensemble.shape, state.ensemble.mean(0).tolist()
        ((4, 2), [1.0, -1.0])
        >>> jnp.cov(state.ensemble, rowvar=False).round(6).tolist()
        [[4.0, 0.0], [0.0, 1.0]]
    """
    mu, L = _climatology(mean, cov, sample, model, n_climatology, key, "climatology")
    init, forecast = _baseline_init(mu, L)

    def step(key, state, y, obs):
        del key, obs
        return state, analysis_info(state.ensemble, observed(y))

    return Method(init, step, forecast)


def oi_analysis(
    mean: Float[Array, " n"],
    sqrt: Float[Array, "n r"],
    y: Float[Array, " m"],
    obs: ObservationModel,
) -> tuple[Float[Array, " n"], Float[Array, "n r"]]:
    r"""Gaussian conditioning of the prior :math:`\mathcal N(μ, L L^T)` on ``y``, with the
    observation operator linearised at :math:`μ`; returns ``(x_a, L_a)`` with
    :math:`L_a L_a^T = P^a`.

    With :math:`\tilde H = R^{-1/2} H'(μ)` (rows of missing values set to zero),
    :math:`d = R^{-1/2}(y - H(μ))` and :math:`Y = \tilde H L` (``m×r``), eigendecompose the
    ``m×m`` matrix :math:`Y Y^T = U Λ U^T`. Then

    .. math::
        x_a = μ + L Y^T U (I + Λ)^{-1} U^T d,\qquad
        L_a = L - L Y^T U\, f(Λ)\, U^T Y,\quad f(λ) = \frac{1}{\sqrt{1+λ}\,(1 + \sqrt{1+λ})},

    i.e. :math:`K = P H^T (H P H^T + R)^{-1}` and :math:`L_a = L (I + Y^T Y)^{-1/2}`, so
    :math:`L_a L_a^T = (I - KH) P`. A missing observation (``NaN``) has a zero row in
    :math:`\tilde H` and a zero innovation, and drops out exactly.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> xa, La = oi_analysis(jnp.zeros(2), jnp.eye(2), jnp.array([2.0, jnp.nan]),
        ...                      observation_model(identity(2), obs_std=1.0))
        >>> xa.tolist(), (La @ La.T).round(6).tolist()
        ([1.0, 0.0], [[0.5, 0.0], [0.0, 1.0]])
    """
    mask = observed(y)
    J = jax.jacfwd(obs.operator)(mean)  # (m, n): H linearised at the prior mean
    Ht = whitened_residual(obs.noise, J.T, mask)  # (n, m): columns R^{-1/2} H' rows, 0 if missing
    d = whitened_residual(obs.noise, fill_missing(y, mask) - obs.operator(mean), mask)
    Y = Ht.T @ sqrt  # (m, r)
    PHt = sqrt @ Y.T  # (n, m) = P H̃ᵀ
    lam, U = jnp.linalg.eigh(Y @ Y.T)
    lam = jnp.maximum(lam, 0.0)
    s = jnp.sqrt(1.0 + lam)
    xa = mean + PHt @ (U @ ((U.T @ d) / (1.0 + lam)))
    La = sqrt - PHt @ (U @ ((U.T @ Y) / (s * (1.0 + s))[:, None]))
    return xa, La


def optimal_interpolation(
    mean: ArrayLike | None = None,
    cov: ArrayLike | None = None,
    *,
    sample: ArrayLike | None = None,
    model: Model | None = None,
    n_climatology: int = 20_000,
    key: Array | None = None,
) -> Method:
    r"""Optimal interpolation: the climatological prior conditioned on each time's
    observations (DAPPER's ``OptInterp``).

    At every observation time, whatever the previous analyses,

    .. math:: x^a = μ_C + K (y - H(μ_C)),\quad K = P_C H^T (H P_C H^T + R)^{-1},\quad
        P^a = (I - KH) P_C,

    with :math:`H` linearised at :math:`μ_C` (:func:`oi_analysis`; exact Gaussian
    conditioning for a linear operator). The gain is formed from each time's observation
    model, so missing values (``NaN``) and time-varying networks are handled exactly; with
    everything missing the analysis is the climatology. The state's ensemble is the ``2n``
    sigma points of :math:`\mathcal N(x^a, P^a)` (module docstring), so the driver's spread is
    :math:`\sqrt{\mathrm{tr}\,P^a/n}`; ``forecast`` returns the climatology (the prior of the
    next analysis) without running the model. Dense ``n×n``: for moderate ``n`` only.

    The options give the climatology as in :func:`climatology` (``mean=``/``cov=``,
    ``sample=``, or a free run of ``model=``; ``key=`` for a stochastic model).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> method = optimal_interpolation(jnp.zeros(2), jnp.eye(2))
        >>> obs = observation_model(identity(2), obs_std=1.0)
        >>> state, info = method.step(jax.random.key(0), method.init(jnp.zeros((1, 2))),
        ...                           jnp.array([2.0, jnp.nan]), obs)
        >>> state.ensemble.mean(0).tolist(), int(info.n_obs)
        ([1.0, 0.0], 1)
        >>> jnp.var(state.ensemble, axis=0, ddof=1).round(6).tolist()
        [0.5, 1.0]
    """
    mu, L = _climatology(mean, cov, sample, model, n_climatology, key, "optimal_interpolation")
    init, forecast = _baseline_init(mu, L)

    def step(key, state, y, obs):
        del key
        dt = state.ensemble.dtype
        xa, La = oi_analysis(mu.astype(dt), L.astype(dt), y, obs)
        Ea = _sigma_points(xa, La)
        return EnsembleState(Ea), analysis_info(Ea, observed(y))

    return Method(init, step, forecast)
