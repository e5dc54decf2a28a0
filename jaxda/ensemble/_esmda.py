r"""Ensemble smoother with multiple data assimilation (ES-MDA), as in the seeds.

Inverse problem: find parameters ``x`` (``n`` values, or any pytree) from data
``y = g(x) + ε``, ``ε ~ N(0, R)``, where the forward model ``g`` is written for
**one** member and vmapped over the ensemble. ES-MDA (Emerick & Reynolds 2013)
assimilates the same data ``N_a`` times with inflated noise ``α_j R``:

.. math::
    y^{(i,j)} = y + \sqrt{α_j}\,ε^{(i,j)},\quad ε^{(i,j)} \sim N(0, R),\\
    x_j^{(i)} = x_{j-1}^{(i)} + K_j\,\big(y^{(i,j)} - g(x_{j-1}^{(i)})\big),\qquad
    K_j = C_{xg} (C_{gg} + α_j R)^{-1},

with ensemble (cross-)covariances ``C_{xg}``, ``C_{gg}`` of the current ensemble (for a
linear ``g = H`` this is the seeds' ``K_j = P_j Hᵀ(H P_j Hᵀ + α_j R)^{-1}``) and
:math:`\sum_j 1/α_j = 1`, so that for a linear-Gaussian problem the product of the
tempered likelihoods is the likelihood and ES-MDA reproduces the single ES/Kalman
posterior (in the large-ensemble limit). The seeds' ``α_j = m/\text{steps}`` is
garbled; we follow Emerick & Reynolds (2013, eq. 22): an integer ``N_a`` means
``α_j = N_a``, any positive array is rescaled to ``Σ 1/α_j = 1``.

All algebra is in ensemble space (see :mod:`jaxda.ensemble._core`): with scaled
anomalies ``X`` (``N×n``) and whitened predicted anomalies ``S`` (``N×m``),

.. math:: K_j d = Xᵀ (α_j I_N + S Sᵀ)^{-1} S\,R^{-1/2} d,

a Cholesky solve of an ``N×N`` system (``inversion="exact"``), or, for ``m ≫ N``, the
truncated SVD ``S/\sqrt{α_j} = U Σ Vᵀ`` keeping the leading singular values that
hold a fraction ``truncation`` of their sum (Emerick 2016, appendix; the same rule
as ``iterative_ensemble_smoother``): ``K_j d ≈ Xᵀ U_r\,\mathrm{diag}(σ/(1+σ²))\,V_rᵀ
R^{-1/2} d/\sqrt{α_j}`` (``inversion="subspace"``).

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
from jaxtyping import Array, Float

from ..core import check_ensemble, check_in_range, check_vector, is_concrete, positive_or_error
from ..metrics import weighted_norm
from ..observations import DiagonalNoise, FullNoise, ObservationModel, gaussian_noise
from ._core import kalman_gain, kalman_increments, obs_space_from_predictions, scaled_anomalies

Noise = DiagonalNoise | FullNoise
PyTree = Any

__all__ = [
    "ESMDAResult",
    "SmootherHistory",
    "esmda",
    "esmda_perturbations",
    "esmda_update",
    "geometric_alpha",
    "make_esmda_analysis",
    "normalize_alpha",
]


class SmootherHistory(NamedTuple):
    """Per-iteration diagnostics of an ensemble smoother (index 0 = prior).

    Attributes:
        misfit: the seeds' weighted norm ``‖y - ȳ‖_W`` of the ensemble-mean
            prediction ``ȳ = mean_i g(x^{(i)})``, with ``W = diag(1/θ²)``.
        member_misfit: mean over members of ``‖y - g(x^{(i)})‖_W``.
        spread: ensemble spread of the parameters (``√ mean var``).
    """

    misfit: Float[Array, " K"]
    member_misfit: Float[Array, " K"]
    spread: Float[Array, " K"]


class ESMDAResult(NamedTuple):
    """Output of :func:`esmda`.

    Attributes:
        posterior: the posterior ensemble, same structure as the prior (``(N, n)``
            array or pytree with leading member axis).
        history: :class:`SmootherHistory` with ``N_a + 1`` entries (prior, then after
            every assimilation).
        alpha: the (normalized) inflation factors used.
        predictions: ``g`` of the posterior members, ``(N, m)``.
    """

    posterior: PyTree
    history: SmootherHistory
    alpha: Float[Array, " Na"]
    predictions: Float[Array, "N m"]


# --------------------------------------------------------------------------- helpers
def resolve_noise(noise: Any, std: Any, cov: Any, m: int) -> Noise:
    """Return a noise object from exactly one of ``noise``, ``std`` (θ) or ``cov`` (R)."""
    given = sum(v is not None for v in (noise, std, cov))
    if given != 1:
        raise ValueError("give exactly one of noise=, obs_std= or obs_cov=")
    if noise is not None:
        if isinstance(noise, ObservationModel):
            noise = noise.noise
        if not isinstance(noise, DiagonalNoise | FullNoise):
            raise ValueError(f"noise must be a jaxda.observations noise object, got {type(noise)}")
        if noise.dim != m:
            raise ValueError(f"noise has dimension {noise.dim} but y has {m} observations")
        return noise
    return gaussian_noise(std=std, cov=cov, dim=m)


def flatten_ensemble(prior: PyTree) -> tuple[Float[Array, "N n"], Callable]:
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
    return E, unravel


def unflatten_ensemble(E: Float[Array, "N n"], unravel: Callable) -> PyTree:
    """Inverse of :func:`flatten_ensemble`."""
    return jax.vmap(unravel)(E)


def _predict(forward: Callable, unravel: Callable, E: Float[Array, "N n"], m: int) -> Array:
    Y = jax.vmap(lambda v: jnp.ravel(jnp.asarray(forward(unravel(v)))))(E)
    if Y.shape[1] != m:
        raise ValueError(
            f"forward model returns {Y.shape[1]} predictions per member but y has {m} observations"
        )
    return Y


def history_entry(E, Y, y, noise) -> tuple[Array, Array, Array]:
    theta = noise.std
    misfit = weighted_norm(y, jnp.mean(Y, axis=0), theta)
    member = jnp.mean(weighted_norm(y, Y, theta))
    spread = jnp.sqrt(jnp.mean(jnp.var(E, axis=0, ddof=1)))
    return misfit, member, spread


def normalize_alpha(alpha: Float[Array, " Na"]) -> Float[Array, " Na"]:
    r"""Rescale inflation factors so that :math:`\sum_j 1/α_j = 1` (Emerick & Reynolds 2013).

    Example:
        >>> float(jnp.sum(1.0 / normalize_alpha(jnp.array([1.0, 2.0, 4.0]))))
        1.0
    """
    alpha = jnp.asarray(alpha, dtype=jnp.result_type(float))
    return alpha * jnp.sum(1.0 / alpha)


def geometric_alpha(n_assimilations: int, ratio: float = 2.0) -> Float[Array, " Na"]:
    r"""Decreasing geometric schedule ``α_{j+1} = α_j / ratio`` with ``Σ 1/α_j = 1``.

    Large inflation first (small, cautious updates while the ensemble is far from the
    data), smaller ones at the end (Emerick 2016; Rafiee & Reynolds 2017).

    Example:
        >>> [round(a, 3) for a in geometric_alpha(3, 2.0).tolist()]
        [7.0, 3.5, 1.75]
    """
    if not isinstance(n_assimilations, numbers.Integral) or n_assimilations < 1:
        raise ValueError(f"n_assimilations must be a positive integer, got {n_assimilations}")
    check_in_range("ratio", ratio, 0.0, float("inf"), closed_low=False)
    powers = jnp.asarray(ratio, dtype=jnp.result_type(float)) ** -jnp.arange(n_assimilations)
    return normalize_alpha(powers)


def resolve_alpha(alpha: Any, normalize: bool = True) -> Float[Array, " Na"]:
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
    """
    keys = jax.random.split(key, n_assimilations)
    return jax.vmap(lambda k: noise.sample(k, (n_members,)))(keys)


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
    cum = jnp.cumsum(s) / jnp.sum(s)
    n_keep = jnp.minimum(jnp.searchsorted(cum, truncation, side="left") + 1, min(N - 1, m))
    f = jnp.where(jnp.arange(N) < n_keep, 1.0 / (1.0 + lam), 0.0)
    coeff = ((Dw @ S.T) @ U) * f  # (k, N)
    return (coeff @ U.T) @ X


def esmda_update(
    ensemble: Float[Array, "N n"],
    predictions: Float[Array, "N m"],
    y: Float[Array, " m"],
    noise: Noise,
    perturbations: Float[Array, "N m"],
    alpha: float | Array = 1.0,
    *,
    inversion: str = "exact",
    truncation: float = 0.99,
    localization: Float[Array, "n m"] | None = None,
) -> Float[Array, "N n"]:
    r"""One ES / ES-MDA analysis of a flat ensemble given its predictions.

    .. math:: x^{(i)} ← x^{(i)} + K_α\,(y + \sqrt{α}\,ε^{(i)} - g(x^{(i)})),\qquad
              K_α = C_{xg}(C_{gg} + α R)^{-1}

    Args:
        ensemble: ``(N, n)`` current parameters.
        predictions: ``(N, m)`` ``g(x^{(i)})``.
        y: ``(m,)`` data.
        noise: observation noise ``R``.
        perturbations: ``(N, m)`` unscaled draws ``ε ~ N(0, R)``.
        alpha: inflation ``α`` (``1`` = a plain ensemble smoother / EnKF update).
        inversion: ``"exact"`` (Cholesky of ``I_N + SSᵀ``, or of ``I_m + SᵀS`` when ``m < N``)
            or ``"subspace"`` (truncated SVD).
        truncation: fraction of the singular-value sum kept by ``"subspace"``.
        localization: optional ``n×m`` Schur taper on the gain, ``(ρ∘K_α)``; forms ``K``.

    Returns:
        The updated ``(N, n)`` ensemble.
    """
    _, X = scaled_anomalies(ensemble)
    os = obs_space_from_predictions(predictions, noise)
    sa = jnp.sqrt(jnp.asarray(alpha, dtype=ensemble.dtype))
    S = os.S / sa
    D = y + sa * perturbations - predictions  # (N, m) innovations
    if localization is not None:
        K = localization * kalman_gain(X, S, noise.scale(alpha))
        return ensemble + D @ K.T
    Dw = noise.whiten(D) / sa
    if inversion == "exact":
        N, m = S.shape
        if m < N:  # push-through: (I_N + SSᵀ)^{-1} S = S (I_m + SᵀS)^{-1}, an m×m solve
            cf = jsl.cho_factor(jnp.eye(m, dtype=S.dtype) + S.T @ S, lower=True)
            return ensemble + jsl.cho_solve(cf, Dw.T).T @ (S.T @ X)
        return ensemble + kalman_increments(X, S, Dw)
    if inversion == "subspace":
        return ensemble + _subspace_increments(X, S, Dw, truncation)
    raise ValueError(f"inversion must be 'exact' or 'subspace', got {inversion!r}")


def _check_common(E, y, inversion, truncation, localization):
    check_ensemble(E, "prior ensemble")
    check_vector(y, "y")
    if inversion not in ("exact", "subspace"):
        raise ValueError(f"inversion must be 'exact' or 'subspace', got {inversion!r}")
    check_in_range("truncation", truncation, 0.0, 1.0, closed_low=False)
    if localization is not None:
        expected = (E.shape[1], jnp.shape(y)[0])
        if jnp.shape(localization) != expected:
            raise ValueError(
                f"localization must have shape (n, m)={expected}, got {jnp.shape(localization)}"
            )


# --------------------------------------------------------------------------- ES-MDA
def esmda(
    key: Array,
    forward: Callable[[PyTree], Float[Array, " m"]],
    prior: PyTree,
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    alpha: int | Float[Array, " Na"] = 4,
    normalize: bool = True,
    inversion: str = "exact",
    truncation: float = 0.99,
    localization: Float[Array, "n m"] | None = None,
    perturbations: Float[Array, "Na N m"] | None = None,
) -> ESMDAResult:
    r"""Ensemble smoother with multiple data assimilation (Emerick & Reynolds 2013).

    For ``j = 1..N_a``: predict ``Y = g(E)`` (vmapped), draw fresh perturbations
    ``ε^{(i,j)} ~ N(0, R)`` and update every member with the ``α_j``-inflated gain

    .. math:: x_j^{(i)} = x_{j-1}^{(i)} + C_{xg}(C_{gg} + α_j R)^{-1}
              \big(y + \sqrt{α_j}ε^{(i,j)} - g(x_{j-1}^{(i)})\big).

    The loop is a ``lax.scan``; the whole function is jit-able, vmappable over
    independent problems (close over per-problem data inside the vmapped function)
    and differentiable with respect to the prior, the data and the model.

    Args:
        key: PRNG key for the observation perturbations.
        forward: ``g(params) -> predictions (m,)`` for **one** member (a pytree of the
            same structure as one member of ``prior``).
        prior: prior ensemble, ``(N, n)`` array or pytree whose leaves have a leading
            member axis ``N >= 2``.
        y: observed data ``(m,)``.
        noise: observation noise object (:func:`jaxda.observations.gaussian_noise`),
            or give ``obs_std`` (θ, scalar or ``(m,)``) or ``obs_cov`` (``R``).
        alpha: integer ``N_a`` (``α_j = N_a``, ``N_a`` assimilations) or an array of
            positive inflation factors.
        normalize: rescale an array ``alpha`` so that ``Σ 1/α_j = 1``; when ``False``
            an ``alpha`` that violates it raises ``ValueError``.
        inversion: ``"exact"`` or ``"subspace"`` (truncated SVD, for ``m ≫ N``).
        truncation: kept fraction of the singular-value sum for ``"subspace"``.
        localization: optional ``(n, m)`` taper on the gain (flat parameter order).
        perturbations: optional pre-drawn unscaled ``ε`` (``(N_a, N, m)``, ``N(0, R)``)
            used instead of drawing from ``key`` (to reproduce another code's draws).

    Returns:
        :class:`ESMDAResult` (posterior, history, alpha, predictions).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (50, 2))
        >>> out = esmda(jax.random.key(1), lambda x: x[:1] + x[1:] ** 2, prior,
        ...             jnp.array([1.0]), obs_std=0.1, alpha=4)
        >>> out.posterior.shape, out.history.misfit.shape
        ((50, 2), (5,))
    """
    y = jnp.asarray(y)
    check_vector(y, "y")
    m = y.shape[0]
    E0, unravel = flatten_ensemble(prior)
    _check_common(E0, y, inversion, truncation, localization)
    noise = resolve_noise(noise, obs_std, obs_cov, m)
    alphas = resolve_alpha(alpha, normalize)
    N = E0.shape[0]
    n_a = alphas.shape[0]
    if perturbations is None:
        perturbations = esmda_perturbations(key, noise, n_a, N)
    elif jnp.shape(perturbations) != (n_a, N, m):
        raise ValueError(
            f"perturbations must have shape (N_a, N, m)={(n_a, N, m)}, got {jnp.shape(perturbations)}"
        )
    E0 = E0.astype(jnp.result_type(E0.dtype, y.dtype))

    def body(E, inputs):
        a, eps = inputs
        Y = _predict(forward, unravel, E, m)
        hist = history_entry(E, Y, y, noise)
        E = esmda_update(
            E,
            Y,
            y,
            noise,
            eps,
            a,
            inversion=inversion,
            truncation=truncation,
            localization=localization,
        )
        return E, hist

    E, hist = jax.lax.scan(body, E0, (alphas, perturbations))
    Y = _predict(forward, unravel, E, m)
    last = history_entry(E, Y, y, noise)
    history = SmootherHistory(
        *(jnp.append(h, h_last) for h, h_last in zip(hist, last, strict=True))
    )
    return ESMDAResult(unflatten_ensemble(E, unravel), history, alphas, Y)


def make_esmda_analysis(obs: ObservationModel, **options) -> Callable:
    """Filter-style analysis ``analysis(key, E_forecast, y) -> E_analysis`` by ES-MDA.

    The observation operator plays the forward model (an "EnKF-MDA" analysis step,
    useful with nonlinear ``H``); ``options`` are passed to :func:`esmda`.
    """

    def analysis(key, ensemble, y):
        return esmda(key, obs.operator.fn, ensemble, y, noise=obs.noise, **options).posterior

    return analysis
