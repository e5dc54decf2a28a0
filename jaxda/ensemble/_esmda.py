r"""Ensemble smoother with multiple data assimilation (ES-MDA), Emerick & Reynolds (2013).

Inverse problem: find parameters ``x`` (``n`` values, or any pytree) from data
``y = g(x) + ε``, ``ε ~ N(0, R)``, where the forward model ``g`` is written for
**one** member and vmapped over the ensemble. ES-MDA (Emerick & Reynolds 2013)
assimilates the same data ``N_a`` times with inflated noise ``α_j R``:

.. math::
    y^{(i,j)} = y + \sqrt{α_j}\,ε^{(i,j)},\quad ε^{(i,j)} \sim N(0, R),\\
    x_j^{(i)} = x_{j-1}^{(i)} + K_j\,\big(y^{(i,j)} - g(x_{j-1}^{(i)})\big),\qquad
    K_j = C_{xg} (C_{gg} + α_j R)^{-1},

with ensemble (cross-)covariances ``C_{xg}``, ``C_{gg}`` of the current ensemble (for a
linear ``g = H`` this is ``K_j = P_j Hᵀ(H P_j Hᵀ + α_j R)^{-1}``) and
:math:`\sum_j 1/α_j = 1`, so that for a linear-Gaussian problem the product of the
tempered likelihoods is the likelihood and ES-MDA reproduces the single ES/Kalman
posterior (in the large-ensemble limit). Following Emerick & Reynolds (2013, eq. 22), an integer ``N_a`` means
``α_j = N_a``, any positive array is rescaled to ``Σ 1/α_j = 1``.

All algebra is in ensemble space (see :mod:`jaxda.ensemble._core`): with scaled
anomalies ``X`` (``N×n``) and whitened predicted anomalies ``S`` (``N×m``),

.. math:: K_j d = Xᵀ (α_j I_N + S Sᵀ)^{-1} S\,R^{-1/2} d,

a Cholesky solve of an ``N×N`` system (``inversion="exact"``), or, for ``m ≫ N``, the
truncated SVD ``S/\sqrt{α_j} = U Σ Vᵀ`` keeping the leading singular values that
hold a fraction ``truncation`` of their sum (Emerick 2016, appendix; the same rule
as ``iterative_ensemble_smoother``): ``K_j d ≈ Xᵀ U_r\,\mathrm{diag}(σ/(1+σ²))\,V_rᵀ
R^{-1/2} d/\sqrt{α_j}`` (``inversion="subspace"``).

**Failed members.** A member whose predictions are non-finite (nan/inf in an observed
entry), or whose parameters become non-finite, is *deactivated*: it is rolled back to its
last value with finite predictions (its prior value if the prior itself fails), is no
longer updated, and drops out of every ensemble statistic (means, anomalies, gain,
history), so the update is exactly the one of the surviving members alone. This is the
choice of ERT / ``iterative_ensemble_smoother`` (failed realizations are deactivated), not
EnsembleKalmanProcesses.jl's resampling of failed members: it adds no draws that did not
come from the prior and keeps the run deterministic. The result's ``failed`` mask flags
these members (drop them with ``posterior[~failed]``) and ``status`` is
``Status.FAILED_MEMBERS``; with fewer than two active members no update is possible: the
remaining updates are skipped and ``status`` is ``Status.NONFINITE``. ``throw=True``
raises on any status other than ``SUCCESS``.

**Missing observations.** ``nan`` entries of ``y`` (or ``False`` entries of ``mask=``)
are not observed: their columns of the whitened innovations and predicted anomalies are
zeroed, which removes them from the update exactly. With a full ``R`` the missing entries
are first decoupled (``R_{om} = 0``), so that the observed ones keep their correlations
``R_{oo}`` (the Cholesky factor of the decoupled ``R`` is block-diagonal, so whitening
the observed entries uses ``chol(R_{oo})``). With every observation missing the prior is
returned unchanged.

**Simulators that are not JAX.** ``forward`` is traced (vmapped inside ``lax.scan``).
A NumPy function, a subprocess or any other Python code can be passed through
:func:`jaxda.black_box`, a :func:`jax.pure_callback` wrapper: with ``vectorized=True`` it
is called once per assimilation with the whole ``(N, n)`` ensemble as a NumPy array and
returns the ``(N, m)`` predictions (a ``nan`` row for a failed member); it is not
differentiable (see the example of :func:`esmda`). When the simulator must drive the
loop itself (a cluster queue, restarts, days per run), use the ask/tell form
:func:`jaxda.ensemble.esmda_init` / :func:`~jaxda.ensemble.esmda_ask` /
:func:`~jaxda.ensemble.esmda_tell` (:mod:`jaxda.ensemble._ask_tell`), which runs the
same update. :func:`jaxda.ensemble.distance_localization` builds ``localization=`` from
the coordinates of the parameters and of the data.

References:
    Emerick & Reynolds (2013), *Ensemble smoother with multiple data assimilation*,
    Computers & Geosciences 55, 3-15.
    Emerick (2016), *Analysis of the performance of ensemble-based assimilation of
    production and seismic data*, J. Petroleum Sci. Eng. 139, 219-239.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float, Int

from ..core import (
    Status,
    catch_not_traceable,
    check_ensemble,
    check_in_range,
    check_vector,
    is_concrete,
    positive_or_error,
    raise_on_failure,
    status_array,
)
from ..observations import (
    DiagonalNoise,
    FullNoise,
    ObservationModel,
    full_noise_from_cholesky,
    gaussian_noise,
)
from ._core import kalman_gain, kalman_increments

Noise = DiagonalNoise | FullNoise
PyTree = Any

__all__ = [
    "ESMDAResult",
    "SmootherHistory",
    "esmda",
    "esmda_perturbations",
    "esmda_update",
    "geometric_alpha",
    "normalize_alpha",
]


class SmootherHistory(NamedTuple):
    """Per-step diagnostics of an ensemble smoother; entry 0 is the prior, entry ``k`` after
    ``k`` updates. Statistics use the active (non-failed) members and observed entries only.

    Entries after ``n_steps`` (iterative smoothers stopped early) are ``nan``.

    Attributes:
        misfit: the weighted norm ``‖y - ȳ‖_W`` of the ensemble-mean prediction
            ``ȳ = mean_i g(x^{(i)})``, with ``W = diag(1/θ²)``.
        member_misfit: mean over members of ``‖y - g(x^{(i)})‖_W``.
        spread: ensemble spread of the parameters (``√ mean var``).
        cost: mean over members of the RML cost ``J(w_j)`` (:func:`jaxda.ensemble.ies`
            only; ``nan`` for ES-MDA and ``ies_kalman``, which minimise no cost).
        step: size of the update that produced this entry (``nan`` at index 0):
            ``rms(E_k - E_{k-1}) / spread(E_0)``, the change of the members in units of the
            prior spread (the convergence criterion of the iterative smoothers).
    """

    misfit: Float[Array, " K"]
    member_misfit: Float[Array, " K"]
    spread: Float[Array, " K"]
    cost: Float[Array, " K"]
    step: Float[Array, " K"]


class ESMDAResult(NamedTuple):
    """Output of :func:`esmda`.

    Attributes:
        posterior: the posterior ensemble, same structure as the prior (``(N, n)``
            array or pytree with leading member axis).
        predictions: ``g`` of the posterior members, ``(N, m)``.
        history: :class:`SmootherHistory` with ``N_a + 1`` entries (prior, then after
            every assimilation).
        n_steps: number of assimilations applied (``N_a`` unless fewer than two members
            remained active).
        status: :class:`jaxda.core.Status` code: ``SUCCESS``, ``FAILED_MEMBERS`` (some
            members were dropped, see ``failed``) or ``NONFINITE`` (fewer than two members
            left, updates skipped).
        failed: ``(N,)`` mask of the members dropped because their predictions (or
            parameters) became non-finite.
        alpha: the (normalized) inflation factors used.
    """

    posterior: PyTree
    predictions: Float[Array, "N m"]
    history: SmootherHistory
    n_steps: Int[Array, ""]
    status: Int[Array, ""]
    failed: Bool[Array, " N"]
    alpha: Float[Array, " Na"]


# --------------------------------------------------------------------------- validation
def _check_key(key: Any) -> None:
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return
    if (
        isinstance(key, jax.Array | np.ndarray)
        and key.dtype == np.uint32
        and jnp.shape(key)[-1:] == (2,)
    ):
        return
    raise TypeError(
        f"key must be a JAX PRNG key (jax.random.key(seed)) given as the first argument, "
        f"got {type(key).__name__}"
    )


def _check_callable(fn: Any, name: str = "forward") -> None:
    if not callable(fn):
        raise TypeError(f"{name} must be a callable g(params) -> predictions, got {type(fn)}")


def _check_bool(value: Any, name: str) -> None:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _check_finite(name: str, x: Any) -> None:
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} contains nan or inf")


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _resolve_noise(noise: Any, obs_std: Any, obs_cov: Any, m: int) -> Noise:
    """Return a noise object from exactly one of ``noise``, ``obs_std`` (θ) or ``obs_cov`` (R)."""
    given = sum(v is not None for v in (noise, obs_std, obs_cov))
    if given != 1:
        raise ValueError("give exactly one of noise=, obs_std= or obs_cov=")
    if noise is not None:
        if isinstance(noise, ObservationModel):
            noise = noise.noise
        if not isinstance(noise, DiagonalNoise | FullNoise):
            raise TypeError(f"noise must be a jaxda.observations noise object, got {type(noise)}")
        if noise.dim != m:
            raise ValueError(f"noise has dimension {noise.dim} but y has {m} observations")
        return noise
    return gaussian_noise(std=obs_std, cov=obs_cov, dim=m)


def _observations(y: Any, mask: Any) -> tuple[Float[Array, " m"], Bool[Array, " m"]]:
    """Validate ``y`` (1-D, nan = missing, no inf) and ``mask``; return ``(y with 0 at missing
    entries, observed mask)``."""
    y = jnp.asarray(y)
    check_vector(y, "y")
    if y.shape[0] < 1:
        raise ValueError("y must hold at least one observation")
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        y = y.astype(jnp.result_type(float))
    if is_concrete(y):
        if np.any(np.isinf(np.asarray(y))):
            raise ValueError("y contains inf; mark missing observations with nan (or mask=)")
    else:
        y = eqx.error_if(y, jnp.any(jnp.isinf(y)), "y contains inf")
    observed = ~jnp.isnan(y)
    if mask is not None:
        mask = jnp.asarray(mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"mask must be a boolean array (True = observed), got {mask.dtype}")
        if mask.shape != y.shape:
            raise ValueError(f"mask must have the shape of y {y.shape}, got {mask.shape}")
        observed = observed & mask
    return jnp.where(observed, y, 0.0), observed


def _decouple(noise: Noise, observed: Bool[Array, " m"]) -> Noise:
    """Noise whose missing entries are uncorrelated with the observed ones (``R_om = 0``).

    Diagonal noise is returned as is. For a full ``R`` the decoupled
    ``R' = O R O + (I - O)`` (``O = diag(observed)``) has a Cholesky factor with no
    observed/missing coupling, so the observed entries are whitened with ``chol(R_oo)``.
    """
    if isinstance(noise, DiagonalNoise):
        return noise
    if is_concrete(observed) and bool(np.all(np.asarray(observed))):
        return noise

    def decoupled(noise):
        R = noise.cov()
        o = observed.astype(R.dtype)
        Rd = R * jnp.outer(o, o) + jnp.diag(1.0 - o)
        return full_noise_from_cholesky(jnp.linalg.cholesky(Rd))

    return jax.lax.cond(jnp.all(observed), lambda nz: nz, decoupled, noise)


def _flatten_ensemble(prior: PyTree) -> tuple[Float[Array, "N n"], Callable]:
    """Ravel a members-first pytree ensemble to ``(N, n)``; return the unravel of one member."""
    leaves = jax.tree_util.tree_leaves(prior)
    if not leaves:
        raise ValueError("the prior ensemble is empty")
    if isinstance(prior, jax.Array | np.ndarray) and jnp.ndim(prior) != 2:
        raise ValueError(
            f"the prior ensemble must have shape (N, n) (members first), got {jnp.shape(prior)}"
        )
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) > 0 else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError("every leaf of the prior ensemble needs the same leading member axis N")
    first = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[0], prior)
    _, unravel = ravel_pytree(first)
    E = jax.vmap(lambda t: ravel_pytree(t)[0])(prior)
    check_ensemble(E, "prior ensemble")
    if E.shape[1] < 1:
        raise ValueError("the prior ensemble has no parameters (n = 0)")
    if not jnp.issubdtype(E.dtype, jnp.inexact):
        E = E.astype(jnp.result_type(float))
    _check_finite("the prior ensemble", E)
    return E, unravel


def _unflatten_ensemble(E: Float[Array, "N n"], unravel: Callable) -> PyTree:
    """Inverse of :func:`_flatten_ensemble`."""
    return jax.vmap(unravel)(E)


def _predict(forward: Callable, unravel: Callable, E: Float[Array, "N n"], m: int) -> Array:
    Y = jax.vmap(lambda v: jnp.ravel(jnp.asarray(forward(unravel(v)))))(E)
    if Y.ndim != 2 or Y.shape[1] != m:
        raise ValueError(
            f"forward model returns {Y.shape[1:]} predictions per member but y has {m} observations"
        )
    return Y.astype(jnp.result_type(Y.dtype, E.dtype))


def _check_common(E, m, inversion, truncation, localization):
    if inversion not in ("exact", "subspace"):
        raise ValueError(f"inversion must be 'exact' or 'subspace', got {inversion!r}")
    check_in_range("truncation", truncation, 0.0, 1.0, closed_low=False)
    if localization is not None:
        expected = (E.shape[1], m)
        if jnp.shape(localization) != expected:
            raise ValueError(
                f"localization must have shape (n, m)={expected}, got {jnp.shape(localization)}"
            )
        _check_finite("localization", localization)


# --------------------------------------------------------------------------- masked algebra
def _active_rows(E, Y, observed) -> Bool[Array, " N"]:
    """Members with finite parameters and finite predictions in every observed entry."""
    return jnp.all(jnp.isfinite(E), axis=1) & jnp.all(jnp.isfinite(Y) | ~observed, axis=1)


def _mean_anomalies(A, active):
    """Mean and ``1/√(N_a-1)``-scaled anomalies over the active rows (others zero)."""
    n_act = jnp.sum(active)
    Az = jnp.where(active[:, None], A, 0.0)
    mean = jnp.sum(Az, axis=0) / jnp.maximum(n_act, 1)
    scale = jnp.sqrt(jnp.maximum(n_act - 1, 1).astype(A.dtype))
    return mean, jnp.where(active[:, None], Az - mean, 0.0) / scale


def _spread(E, active):
    _, X = _mean_anomalies(E, active)
    return jnp.sqrt(jnp.sum(X**2) / E.shape[1])


def _history_entry(E, Y, y, observed, active, theta):
    """(misfit, member misfit, spread) over active members and observed entries."""
    n_act = jnp.maximum(jnp.sum(active), 1)
    Yz = jnp.where(active[:, None] & observed, Y, 0.0)
    y_mean = jnp.sum(Yz, axis=0) / n_act
    misfit = jnp.sqrt(jnp.sum(jnp.where(observed, (y - y_mean) / theta, 0.0) ** 2))
    r = jnp.where(observed, (y - Yz) / theta, 0.0)
    member = jnp.sum(jnp.where(active, jnp.sqrt(jnp.sum(r**2, axis=1)), 0.0)) / n_act
    return misfit, member, _spread(E, active)


def _rms_change(E_new, E_old, active):
    n_act = jnp.maximum(jnp.sum(active), 1)
    d = jnp.where(active[:, None], E_new - E_old, 0.0)
    return jnp.sqrt(jnp.sum(d**2) / (n_act * E_new.shape[1]))


def _subspace_increments(X, S, Dw, truncation):
    """Increments ``K d`` from a truncated SVD of ``S`` (already scaled by ``1/√α``).

    With ``S = U Σ Vᵀ``: ``(I + SSᵀ)^{-1} S = U (I+Σ²)^{-1} Σ Vᵀ = U (I+Σ²)^{-1} Uᵀ S``, so only
    the ``N×N`` eigen-decomposition ``SSᵀ = U Σ² Uᵀ`` is needed (``O(N²m + N³)``).
    The kept singular values are the leading ones holding a fraction ``truncation`` of
    ``Σ σ_k`` (at most ``min(N-1, m)``: anomalies have rank ``<= N-1``).
    """
    N, m = S.shape
    lam, U = jnp.linalg.eigh(S @ S.T)
    lam, U = lam[::-1], U[:, ::-1]  # descending
    s = jnp.sqrt(jnp.clip(lam, 0.0))
    cum = jnp.cumsum(s) / jnp.maximum(jnp.sum(s), jnp.finfo(s.dtype).tiny)
    n_keep = jnp.minimum(jnp.searchsorted(cum, truncation, side="left") + 1, min(N - 1, m))
    f = jnp.where(jnp.arange(N) < n_keep, 1.0 / (1.0 + lam), 0.0)
    coeff = ((Dw @ S.T) @ U) * f  # (k, N)
    return (coeff @ U.T) @ X


def _update_and_roll_back(forward, unravel, m, E, Y, active, observed, scale, *update_args):
    """One ES(-MDA) update, the new predictions, and the roll-back of members whose new
    predictions fail (they keep their previous value and are dropped from then on).

    Returns ``(E, Y, active, step)``; ``update_args`` are :func:`_update`'s arguments after
    ``E, Y`` with ``active, observed`` spliced in (``y, noise, eps, alpha`` then
    ``inversion, truncation, localization``).
    """
    y, noise, eps, alpha, inversion, truncation, localization = update_args
    E_new = _update(
        E, Y, y, noise, eps, alpha, active, observed, inversion, truncation, localization
    )
    Y_new = _predict(forward, unravel, E_new, m)
    return _roll_back(E, Y, active, E_new, Y_new, observed, scale)


def _roll_back(E, Y, active, E_new, Y_new, observed, scale):
    """Accept the updated members ``E_new`` with their predictions ``Y_new``, except those whose
    new predictions (or parameters) fail: they keep ``E``, ``Y`` and are dropped from then on.

    Returns ``(E, Y, active, step)`` with ``step = rms(E_new - E) / scale`` over the members
    still active. Shared by the JAX loops and the ask/tell form (:mod:`._ask_tell`).
    """
    newly = active & ~_active_rows(E_new, Y_new, observed)
    E_new = jnp.where(newly[:, None], E, E_new)  # roll failed members back
    Y_new = jnp.where(newly[:, None], Y, Y_new)
    active = active & ~newly
    return E_new, Y_new, active, _rms_change(E_new, E, active) / scale


def _initial_statistics(E0, Y0, y, observed, theta):
    """Active members of the prior, the step scale ``spread(E_0)`` (1 when zero) and the
    history entry 0 ``(misfit, member misfit, spread, nan, nan)``."""
    active0 = _active_rows(E0, Y0, observed)
    scale = _spread(E0, active0)
    scale = jnp.where(scale > 0, scale, 1.0)
    nan = jnp.asarray(jnp.nan, E0.dtype)
    return active0, scale, (*_history_entry(E0, Y0, y, observed, active0, theta), nan, nan)


def _update(E, Y, y, noise, eps, alpha, active, observed, inversion, truncation, localization):
    """ES(-MDA) update of the active members, the others untouched (no checks, no nan leak).

    ``y`` has zeros at missing entries and ``noise`` is already decoupled (:func:`_decouple`).
    With fewer than two active members the ensemble is returned unchanged.
    """
    _, X = _mean_anomalies(E, active)
    use = active[:, None] & observed
    _, dY = _mean_anomalies(jnp.where(use, Y, 0.0), active)
    sa = jnp.sqrt(jnp.asarray(alpha, dtype=E.dtype))
    S = jnp.where(observed, noise.whiten(dY), 0.0) / sa
    D = jnp.where(use, y + sa * eps - Y, 0.0)  # (N, m) innovations, 0 where unused
    if localization is not None:
        K = localization * kalman_gain(X, S, noise.scale(alpha))
        inc = D @ K.T
    else:
        Dw = jnp.where(observed, noise.whiten(D), 0.0) / sa
        if inversion == "exact":
            N, m = S.shape
            if m < N:  # push-through: (I_N + SSᵀ)^{-1} S = S (I_m + SᵀS)^{-1}, an m×m solve
                cf = jsl.cho_factor(jnp.eye(m, dtype=S.dtype) + S.T @ S, lower=True)
                inc = jsl.cho_solve(cf, Dw.T).T @ (S.T @ X)
            else:
                inc = kalman_increments(X, S, Dw)
        else:
            inc = _subspace_increments(X, S, Dw, truncation)
    ok = jnp.sum(active) >= 2
    return jnp.where(active[:, None] & ok, E + inc, E)


def _combine_status(too_few, failed, converged=None) -> Int[Array, ""]:
    status = jnp.where(
        too_few,
        Status.NONFINITE,
        jnp.where(jnp.any(failed), Status.FAILED_MEMBERS, Status.SUCCESS),
    )
    if converged is not None:
        status = jnp.where((status == Status.SUCCESS) & ~converged, Status.MAX_STEPS, status)
    return status_array(status)


# --------------------------------------------------------------------------- alpha
def normalize_alpha(alpha: Float[Array, " Na"]) -> Float[Array, " Na"]:
    r"""Rescale inflation factors so that :math:`\sum_j 1/α_j = 1` (Emerick & Reynolds 2013).

    Examples:
        >>> round(float(jnp.sum(1.0 / normalize_alpha(jnp.array([1.0, 2.0, 4.0])))), 6)
        1.0
    """
    alpha = jnp.asarray(alpha, dtype=jnp.result_type(float))
    if alpha.ndim != 1 or alpha.shape[0] < 1:
        raise ValueError(f"alpha must be a non-empty 1-D array, got shape {alpha.shape}")
    alpha = positive_or_error("alpha", alpha)
    return alpha * jnp.sum(1.0 / alpha)


def geometric_alpha(n_assimilations: int, ratio: float = 2.0) -> Float[Array, " Na"]:
    r"""Decreasing geometric schedule ``α_{j+1} = α_j / ratio`` with ``Σ 1/α_j = 1``.

    Large inflation first (small, cautious updates while the ensemble is far from the
    data), smaller ones at the end (Emerick 2016; Rafiee & Reynolds 2017).

    Examples:
        >>> [round(a, 3) for a in geometric_alpha(3, 2.0).tolist()]
        [7.0, 3.5, 1.75]
    """
    _check_positive_int("n_assimilations", n_assimilations)
    check_in_range("ratio", ratio, 0.0, float("inf"), closed_low=False, closed_high=False)
    powers = jnp.asarray(ratio, dtype=jnp.result_type(float)) ** -jnp.arange(n_assimilations)
    return normalize_alpha(powers)


def _resolve_alpha(alpha: Any, normalize: bool = True) -> Float[Array, " Na"]:
    """Integer ``N_a`` → ``N_a`` copies of ``N_a``; array → validated / normalized array."""
    if isinstance(alpha, bool):
        raise ValueError(
            f"alpha must be an integer >= 1 or an array of positive floats, got {alpha}"
        )
    if isinstance(alpha, numbers.Integral):
        if alpha < 1:
            raise ValueError(f"alpha (number of assimilations) must be >= 1, got {alpha}")
        return jnp.full((int(alpha),), float(alpha), dtype=jnp.result_type(float))
    a = jnp.asarray(alpha, dtype=jnp.result_type(float))
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"alpha must be an integer or a non-empty 1-D array, got shape {a.shape}")
    a = positive_or_error("alpha", a)
    if normalize:
        return normalize_alpha(a)
    if is_concrete(a):
        total = float(np.sum(1.0 / np.asarray(a)))
        if not np.isclose(total, 1.0, rtol=1e-6, atol=0.0):
            raise ValueError(
                f"alpha must satisfy sum(1/alpha) = 1 when normalize=False, got sum(1/alpha)={total}"
            )
        return a
    bad = jnp.abs(jnp.sum(1.0 / a) - 1.0) > 1e-6
    return eqx.error_if(a, bad, "alpha must satisfy sum(1/alpha) = 1")


def esmda_perturbations(
    key: Array, noise: Noise, n_assimilations: int, n_members: int
) -> Float[Array, "Na N m"]:
    r"""The unscaled observation perturbations ``ε^{(i,j)} ~ N(0, R)`` that :func:`esmda` draws.

    One fresh draw per assimilation (``jax.random.split(key, N_a)``); :func:`esmda`
    scales them by ``√α_j``. Exposed so other codes can be fed the same perturbations.

    Examples:
        >>> from jaxda.observations import gaussian_noise
        >>> esmda_perturbations(jax.random.key(0), gaussian_noise(std=[1.0, 2.0]), 3, 10).shape
        (3, 10, 2)
    """
    _check_key(key)
    if not isinstance(noise, DiagonalNoise | FullNoise):
        raise TypeError(f"noise must be a jaxda.observations noise object, got {type(noise)}")
    _check_positive_int("n_assimilations", n_assimilations)
    _check_positive_int("n_members", n_members)
    keys = jax.random.split(key, n_assimilations)
    return jax.vmap(lambda k: noise.sample(k, (n_members,)))(keys)


# --------------------------------------------------------------------------- one update
def esmda_update(
    ensemble: Float[Array, "N n"],
    predictions: Float[Array, "N m"],
    y: Float[Array, " m"],
    noise: Noise,
    perturbations: Float[Array, "N m"],
    alpha: float | Array = 1.0,
    *,
    mask: Bool[Array, " m"] | None = None,
    inversion: str = "exact",
    truncation: float = 0.99,
    localization: Float[Array, "n m"] | None = None,
) -> Float[Array, "N n"]:
    r"""One ES / ES-MDA analysis of a flat ensemble given its predictions.

    .. math:: x^{(i)} ← x^{(i)} + K_α\,(y + \sqrt{α}\,ε^{(i)} - g(x^{(i)})),\qquad
              K_α = C_{xg}(C_{gg} + α R)^{-1}

    Members whose predictions are non-finite (in an observed entry) are left unchanged and
    excluded from the statistics; ``nan`` entries of ``y`` (and ``mask=False``) are not
    observed (see the module docstring). Fewer than two members with finite predictions
    raise ``ValueError`` (an ``EqxRuntimeError`` under ``jit``): no update exists.

    Args:
        ensemble: ``(N, n)`` current parameters.
        predictions: ``(N, m)`` ``g(x^{(i)})``.
        y: ``(m,)`` data, ``nan`` = not observed.
        noise: observation noise ``R`` (a :mod:`jaxda.observations` noise object).
        perturbations: ``(N, m)`` unscaled draws ``ε ~ N(0, R)``.
        alpha: inflation ``α > 0`` (``1`` = a plain ensemble smoother / EnKF update).
        mask: optional ``(m,)`` booleans, ``False`` = not observed.
        inversion: ``"exact"`` (Cholesky of ``I_N + SSᵀ``, or of ``I_m + SᵀS`` when ``m < N``)
            or ``"subspace"`` (truncated SVD).
        truncation: fraction in ``(0, 1]`` of the singular-value sum kept by ``"subspace"``.
        localization: optional ``n×m`` Schur taper on the gain, ``(ρ∘K_α)``; forms ``K``.

    Returns:
        The updated ``(N, n)`` ensemble.

    Examples:
        >>> from jaxda.observations import gaussian_noise
        >>> E = jax.random.normal(jax.random.key(0), (20, 2))
        >>> esmda_update(E, E[:, :1], jnp.array([1.0]), gaussian_noise(std=[0.5]),
        ...              jnp.zeros((20, 1))).shape
        (20, 2)
    """
    E = jnp.asarray(ensemble)
    check_ensemble(E, "ensemble")
    if not jnp.issubdtype(E.dtype, jnp.inexact):
        E = E.astype(jnp.result_type(float))
    _check_finite("ensemble", E)
    y, observed = _observations(y, mask)
    N, m = E.shape[0], y.shape[0]
    Y = jnp.asarray(predictions)
    if Y.shape != (N, m):
        raise ValueError(f"predictions must have shape (N, m)={(N, m)}, got {Y.shape}")
    eps = jnp.asarray(perturbations)
    if eps.shape != (N, m):
        raise ValueError(f"perturbations must have shape (N, m)={(N, m)}, got {eps.shape}")
    _check_finite("perturbations", eps)
    if not isinstance(noise, DiagonalNoise | FullNoise):
        raise TypeError(f"noise must be a jaxda.observations noise object, got {type(noise)}")
    if noise.dim != m:
        raise ValueError(f"noise has dimension {noise.dim} but y has {m} observations")
    positive_or_error("alpha", alpha)
    _check_common(E, m, inversion, truncation, localization)
    active = _active_rows(E, Y, observed)
    msg = "esmda_update needs at least 2 members with finite predictions"
    if is_concrete(active):
        n_ok = int(np.sum(np.asarray(active)))
        if n_ok < 2:
            raise ValueError(f"{msg}, got {n_ok}")
    else:
        E = eqx.error_if(E, jnp.sum(active) < 2, msg)
    dtype = jnp.result_type(E.dtype, y.dtype)
    return _update(
        E.astype(dtype),
        Y,
        y,
        _decouple(noise, observed),
        eps,
        alpha,
        active,
        observed,
        inversion,
        truncation,
        localization,
    )


class _ESMDASetup(NamedTuple):
    """Validated inputs of an ES-MDA run (shared by :func:`esmda` and the ask/tell form)."""

    E0: Array  # (N, n) flat prior in the working dtype
    unravel: Callable  # flat member -> one member of the prior's structure
    y: Array  # (m,) data, 0 at missing entries
    observed: Array  # (m,) mask
    noise: Noise  # decoupled observation noise (see _decouple)
    theta: Array  # (m,) observation std of the (undecoupled) noise
    alphas: Array  # (Na,) inflation factors
    perturbations: Array  # (Na, N, m) unscaled ε


def _esmda_setup(
    key, prior, y, noise, obs_std, obs_cov, mask, alpha, normalize,
    inversion, truncation, localization, perturbations,
) -> _ESMDASetup:  # fmt: skip
    """Check and resolve the arguments of :func:`esmda` (everything except the model)."""
    _check_bool(normalize, "normalize")
    y, observed = _observations(y, mask)
    m = y.shape[0]
    E0, unravel = _flatten_ensemble(prior)
    _check_common(E0, m, inversion, truncation, localization)
    noise = _resolve_noise(noise, obs_std, obs_cov, m)
    alphas = _resolve_alpha(alpha, normalize)
    N = E0.shape[0]
    n_a = alphas.shape[0]
    if perturbations is None:
        perturbations = esmda_perturbations(key, noise, n_a, N)
    elif jnp.shape(perturbations) != (n_a, N, m):
        raise ValueError(
            f"perturbations must have shape (N_a, N, m)={(n_a, N, m)}, got {jnp.shape(perturbations)}"
        )
    else:
        _check_finite("perturbations", perturbations)
    dtype = jnp.result_type(E0.dtype, y.dtype)
    return _ESMDASetup(
        E0.astype(dtype),
        unravel,
        y,
        observed,
        _decouple(noise, observed),
        noise.std,
        alphas,
        jnp.asarray(perturbations),
    )


def _esmda_result(E, Y, active, too_few, n_steps, history, alphas, unravel) -> ESMDAResult:
    """Assemble :class:`ESMDAResult` from the final state of an ES-MDA run."""
    too_few = too_few | (jnp.sum(active) < 2)
    failed = ~active
    return ESMDAResult(
        _unflatten_ensemble(E, unravel),
        Y,
        history,
        n_steps,
        _combine_status(too_few, failed),
        failed,
        alphas,
    )


# --------------------------------------------------------------------------- ES-MDA
@catch_not_traceable("forward", "the forward model")
def esmda(
    key: Array,
    forward: Callable[[PyTree], Float[Array, " m"]],
    prior: PyTree,
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    mask: Bool[Array, " m"] | None = None,
    alpha: int | Float[Array, " Na"] = 4,
    normalize: bool = True,
    inversion: str = "exact",
    truncation: float = 0.99,
    localization: Float[Array, "n m"] | None = None,
    perturbations: Float[Array, "Na N m"] | None = None,
    throw: bool = False,
) -> ESMDAResult:
    r"""Ensemble smoother with multiple data assimilation (Emerick & Reynolds 2013).

    For ``j = 1..N_a``: predict ``Y = g(E)`` (vmapped), draw fresh perturbations
    ``ε^{(i,j)} ~ N(0, R)`` and update every member with the ``α_j``-inflated gain

    .. math:: x_j^{(i)} = x_{j-1}^{(i)} + C_{xg}(C_{gg} + α_j R)^{-1}
              \big(y + \sqrt{α_j}ε^{(i,j)} - g(x_{j-1}^{(i)})\big).

    The loop is a ``lax.scan``; the whole function is jit-able, vmappable over
    independent problems (close over per-problem data inside the vmapped function)
    and differentiable with respect to the prior, the data and the model. Members whose
    forward model fails (nan/inf) are dropped from the update and flagged (``failed``,
    ``status``); missing observations (``nan`` in ``y``) drop out of the update. See the
    module docstring.

    Args:
        key: PRNG key for the observation perturbations.
        forward: ``g(params) -> predictions (m,)`` for **one** member (a pytree of the
            same structure as one member of ``prior``).
        prior: prior ensemble, ``(N, n)`` array or pytree whose leaves have a leading
            member axis ``N >= 2``.
        y: observed data ``(m,)``; ``nan`` entries are not observed.
        noise: observation noise object (:func:`jaxda.observations.gaussian_noise`),
            or give ``obs_std`` (θ, scalar or ``(m,)``) or ``obs_cov`` (``R``).
        mask: optional ``(m,)`` booleans, ``False`` = not observed (combined with ``nan``).
        alpha: integer ``N_a`` (``α_j = N_a``, ``N_a`` assimilations) or an array of
            positive inflation factors.
        normalize: rescale an array ``alpha`` so that ``Σ 1/α_j = 1``; when ``False``
            an ``alpha`` that violates it raises ``ValueError``.
        inversion: ``"exact"`` or ``"subspace"`` (truncated SVD, for ``m ≫ N``).
        truncation: kept fraction in ``(0, 1]`` of the singular-value sum for ``"subspace"``.
        localization: optional ``(n, m)`` taper on the gain (flat parameter order).
        perturbations: optional pre-drawn unscaled ``ε`` (``(N_a, N, m)``, ``N(0, R)``)
            used instead of drawing from ``key`` (to reproduce another code's draws).
        throw: raise when ``status`` is not ``SUCCESS`` (``RuntimeError`` eagerly, an
            ``EqxRuntimeError`` under ``jit``), see :func:`jaxda.core.raise_on_failure`.

    Returns:
        :class:`ESMDAResult` (posterior, predictions, history, n_steps, status, failed,
        alpha).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (50, 2))
        >>> out = esmda(jax.random.key(1), lambda x: x[:1] + x[1:] ** 2, prior,
        ...             jnp.array([1.0]), obs_std=0.1, alpha=4)
        >>> out.posterior.shape, out.history.misfit.shape, int(out.status)
        ((50, 2), (5,), 0)

        A simulator written in NumPy (or one that runs an external program) enters through
        :func:`jaxda.black_box`; ``vectorized=True`` hands it the whole ensemble, one call
        for the prior and one per assimilation:

        >>> import numpy as np
        >>> from jaxda import black_box
        >>> calls = []
        >>> def simulator(X):                        # X: (N, n) NumPy array
        ...     calls.append(X.shape)
        ...     return X[:, :1] + X[:, 1:] ** 2        # (N, m); a nan row = failed member
        >>> g = black_box(simulator, (1,), vectorized=True)
        >>> out_np = esmda(jax.random.key(1), g, prior, jnp.array([1.0]), obs_std=0.1,
        ...                alpha=4)
        >>> calls == [(50, 2)] * 5, bool(jnp.allclose(out_np.posterior, out.posterior))
        (True, True)
    """
    _check_key(key)
    _check_callable(forward)
    _check_bool(throw, "throw")
    setup = _esmda_setup(
        key, prior, y, noise, obs_std, obs_cov, mask, alpha, normalize,
        inversion, truncation, localization, perturbations,
    )  # fmt: skip
    E0, unravel, y, observed, wnoise, theta = setup[:6]
    m = y.shape[0]
    Y0 = _predict(forward, unravel, E0, m)
    active0, scale, h0 = _initial_statistics(E0, Y0, y, observed, theta)
    nan = jnp.asarray(jnp.nan, E0.dtype)

    class Carry(NamedTuple):
        E: Array
        Y: Array
        active: Array
        too_few: Array
        n_steps: Array

    def body(c: Carry, inputs):
        a, eps = inputs
        ok = jnp.sum(c.active) >= 2
        E, Y, active, step = _update_and_roll_back(
            forward, unravel, m, c.E, c.Y, c.active, observed, scale,
            y, wnoise, eps, a, inversion, truncation, localization,
        )  # fmt: skip
        hist = (*_history_entry(E, Y, y, observed, active, theta), nan, step)
        return Carry(E, Y, active, c.too_few | ~ok, c.n_steps + ok), hist

    init = Carry(E0, Y0, active0, jnp.array(False), jnp.array(0, jnp.int32))
    out, hist = jax.lax.scan(body, init, (setup.alphas, setup.perturbations))
    history = SmootherHistory(
        *(
            jnp.concatenate([jnp.reshape(h0_, (1,)).astype(E0.dtype), h])
            for h0_, h in zip(h0, hist, strict=True)
        )
    )
    result = _esmda_result(
        out.E, out.Y, out.active, out.too_few, out.n_steps, history, setup.alphas, unravel
    )
    return raise_on_failure(result) if throw else result
