r"""Iterative ensemble smoothers: the seeds' repeated Kalman update and the
Gauss–Newton subspace IES of Evensen, Raanes, Stordal & Hove (2019).

**Seeds' iteration** (:func:`ies_kalman`). Starting from the prior ensemble, repeat

.. math:: x_k^{(i)} = x_{k-1}^{(i)} + K_k\,(y^{(i)} - g(x_{k-1}^{(i)})),\qquad
          K_k = C_{xg}(C_{gg} + R)^{-1}

with ``C`` the ensemble (cross-)covariances of iteration ``k-1`` (``P_k Hᵀ``,
``H P_k Hᵀ`` for a linear ``H``), until the change ``‖x_k - x_{k-1}‖`` is small or a
maximum number of iterations is reached. Each pass re-assimilates the full data with
weight ``R``, so the ensemble contracts towards a data fit: it is an iterative
*optimiser*, not a Bayesian sampler (use :func:`ies` or ES-MDA for the posterior).

**Subspace IES** (:func:`ies`). Each member minimises, in the ensemble subspace
``x_j = x_j^f + Xᵀ w_j`` (``X`` the prior scaled anomalies), the randomized-maximum-
likelihood cost with *fixed* perturbed data ``d_j = y + ε_j``:

.. math:: J(w_j) = \tfrac12 w_jᵀ w_j + \tfrac12 (g(x_j) - d_j)ᵀ R^{-1} (g(x_j) - d_j).

Gauss–Newton steps with the ensemble-average sensitivity ``S_i`` (``N×m``) give

.. math::
    Ω_i = I + Π W_i/\sqrt{N-1},\quad S_i = Ω_i^{-1} Π\,g(E_i)/\sqrt{N-1},\\
    W_{i+1} = W_i - γ_i\,(W_i + \hat R_i \hat S_iᵀ)(I_N + \hat S_i \hat S_iᵀ)^{-1},

with ``Ŝ = S R^{-T/2}``, ``R̂`` the whitened residuals ``g(x_j) - d_j`` (rows),
``Π = I - 11ᵀ/N`` and the step length ``γ_i = γ_{min} + (γ_{max}-γ_{min})
2^{-(i-1)/(γ_{dec}-1)}`` (Evensen et al. 2019, section 4). When ``n < N-1`` the
sensitivity is obtained by least squares on the current anomalies instead
(``S_i = X\,X_i^{+} Π g(E_i)/\sqrt{N-1}``), as the paper prescribes. Everything is an
``N×N`` solve: cost ``O(N²(n+m) + N³)`` per iteration. For a linear ``g`` one step
with ``γ=1`` is exactly the ES update with the same perturbations.

Both loops are ``lax.while_loop`` with a static ``max_iter`` bound; the result
reports the iterations done, a ``converged`` flag and an integer ``status``
(:class:`IESStatus`), and a history padded with ``NaN`` after the last iteration.

References:
    Evensen, Raanes, Stordal & Hove (2019), *Efficient implementation of an iterative
    ensemble smoother for data assimilation and reservoir history matching*,
    Frontiers in Applied Mathematics and Statistics 5:47.
    Chen & Oliver (2013), *Levenberg–Marquardt forms of the iterative ensemble
    smoother*, Computational Geosciences 17.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from enum import IntEnum
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Float, Int

from ..core import check_in_range, check_vector
from ..observations import ObservationModel
from ._core import ensemble_solve, scaled_anomalies
from ._esmda import (
    Noise,
    _check_common,
    _predict,
    esmda_update,
    flatten_ensemble,
    history_entry,
    resolve_noise,
    unflatten_ensemble,
)

PyTree = Any

__all__ = [
    "IESHistory",
    "IESResult",
    "IESStatus",
    "ies",
    "ies_kalman",
    "make_ies_analysis",
    "step_length_schedule",
]


class IESStatus(IntEnum):
    """Integer status carried in :class:`IESResult` (works under jit/vmap)."""

    CONVERGED = 0
    MAX_ITERATIONS = 1  # stopped by the iteration bound before meeting the criterion
    NONFINITE = 2  # a NaN/inf appeared (forward model blew up)


class IESHistory(NamedTuple):
    """Per-iteration diagnostics; entry 0 is the prior, entry ``k`` after ``k`` updates.

    Entries after ``n_iter`` are ``NaN``.

    Attributes:
        misfit: the seeds' weighted norm ``‖y - ȳ‖_W`` of the ensemble-mean prediction.
        member_misfit: mean over members of ``‖y - g(x^{(i)})‖_W``.
        spread: parameter spread ``√ mean var``.
        cost: mean over members of the RML cost ``J(w_j)`` (:func:`ies` only, else ``NaN``).
        step: size of the update that produced this entry (``NaN`` at index 0):
            ``rms(E_k - E_{k-1}) / spread(E_0)``, the change of the members in units of
            the prior spread (the convergence criterion).
    """

    misfit: Float[Array, " K"]
    member_misfit: Float[Array, " K"]
    spread: Float[Array, " K"]
    cost: Float[Array, " K"]
    step: Float[Array, " K"]


class IESResult(NamedTuple):
    """Output of :func:`ies` and :func:`ies_kalman`."""

    posterior: PyTree
    history: IESHistory
    n_iter: Int[Array, ""]
    converged: Bool[Array, ""]
    status: Int[Array, ""]
    predictions: Float[Array, "N m"]


def step_length_schedule(
    max_step: float = 0.6, min_step: float = 0.3, decay: float = 2.5
) -> Callable[[Array], Array]:
    r"""Evensen et al. (2019) step lengths ``γ_i = γ_min + (γ_max-γ_min) 2^{-(i-1)/(γ_dec-1)}``.

    ``i`` counts from 1. Returns a function of the (traced) iteration number.

    Example:
        >>> s = step_length_schedule(1.0, 0.5, 2.0)
        >>> [float(s(i)) for i in (1, 2, 3)]
        [1.0, 0.75, 0.625]
    """
    check_in_range("max_step", max_step, 0.0, 1.0, closed_low=False)
    check_in_range("min_step", min_step, 0.0, max_step, closed_low=False)
    if decay <= 1.0:
        raise ValueError(f"decay must be > 1, got {decay}")

    def gamma(i):
        i = jnp.asarray(i, dtype=jnp.result_type(float))
        return min_step + (max_step - min_step) * 2.0 ** (-(i - 1.0) / (decay - 1.0))

    return gamma


def _resolve_step(step_length) -> Callable[[Array], Array]:
    if step_length is None:
        return step_length_schedule()
    if callable(step_length):
        return step_length  # pyright: ignore[reportReturnType]
    check_in_range("step_length", step_length, 0.0, 1.0, closed_low=False)
    return lambda i: jnp.asarray(step_length, dtype=jnp.result_type(float))


def _check_iter(max_iter, tol):
    if not isinstance(max_iter, numbers.Integral) or isinstance(max_iter, bool) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
    check_in_range("tol", tol, 0.0, float("inf"))


def _fixed_perturbations(key, noise, N, m, perturbations):
    if perturbations is None:
        return noise.sample(key, (N,))
    if jnp.shape(perturbations) != (N, m):
        raise ValueError(
            f"perturbations must have shape (N, m)={(N, m)}, got {jnp.shape(perturbations)}"
        )
    return jnp.asarray(perturbations)


def _empty_history(max_iter, dtype):
    nan = jnp.full((max_iter + 1,), jnp.nan, dtype=dtype)
    return IESHistory(nan, nan, nan, nan, nan)


def _set(history: IESHistory, i, values) -> IESHistory:
    return IESHistory(*(h.at[i].set(v) for h, v in zip(history, values, strict=True)))


def _status(converged, finite):
    return jnp.where(
        ~finite,
        int(IESStatus.NONFINITE),
        jnp.where(converged, int(IESStatus.CONVERGED), int(IESStatus.MAX_ITERATIONS)),
    )


# --------------------------------------------------------------------- subspace IES
def ies(
    key: Array,
    forward: Callable[[PyTree], Float[Array, " m"]],
    prior: PyTree,
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    step_length: float | Callable[[Array], Array] | None = None,
    max_iter: int = 30,
    tol: float = 1e-3,
    perturbations: Float[Array, "N m"] | None = None,
) -> IESResult:
    r"""Gauss–Newton subspace iterative ensemble smoother (Evensen et al. 2019).

    Iterates the ensemble-space Gauss–Newton update of the module docstring with
    *fixed* perturbed observations ``d_j = y + ε_j`` until the applied step
    ``rms(E_{i+1} - E_i) / spread(E_0)`` (member change in units of the prior spread)
    is ``<= tol`` or
    ``max_iter`` updates were made (``lax.while_loop``).

    Args:
        key: PRNG key for the (fixed) observation perturbations ``ε_j ~ N(0, R)``.
        forward: ``g(params) -> (m,)`` for one member (pytree like one prior member).
        prior: prior ensemble ``(N, n)`` or pytree with leading member axis, ``N >= 2``.
        y: data ``(m,)``.
        noise, obs_std, obs_cov: observation noise (exactly one).
        step_length: ``None`` (Evensen's schedule ``(0.6, 0.3, 2.5)``), a float in
            ``(0, 1]`` or a function ``i -> γ_i`` of the 1-based iteration.
        max_iter: bound on the number of updates.
        tol: convergence threshold on the relative rms change of the members.
        perturbations: optional pre-drawn ``(N, m)`` ``ε`` used instead of ``key``.

    Returns:
        :class:`IESResult` (posterior, history, n_iter, converged, status, predictions).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (40, 1))
        >>> out = ies(jax.random.key(1), lambda x: x + 0.2 * x**3, prior, jnp.array([1.0]),
        ...           obs_std=0.3)
        >>> bool(out.converged), out.posterior.shape
        (True, (40, 1))
    """
    y = jnp.asarray(y)
    check_vector(y, "y")
    m = y.shape[0]
    Ef, unravel = flatten_ensemble(prior)
    _check_common(Ef, y, "exact", 0.99, None)
    _check_iter(max_iter, tol)
    noise = resolve_noise(noise, obs_std, obs_cov, m)
    gamma = _resolve_step(step_length)
    dtype = jnp.result_type(Ef.dtype, y.dtype)
    Ef = Ef.astype(dtype)
    N, n = Ef.shape
    eps = _fixed_perturbations(key, noise, N, m, perturbations)
    D = y + eps
    _, X = scaled_anomalies(Ef)
    scale = jnp.sqrt(jnp.mean(jnp.var(Ef, axis=0, ddof=1)))
    sq = jnp.sqrt(N - 1.0)

    def sensitivity(W, Y):
        St = (Y - jnp.mean(Y, axis=0)) / sq  # Π g(E_i)/√(N-1)
        PiW = W - jnp.mean(W, axis=0)  # Π W
        if n < N - 1:  # least squares on the current anomalies (static branch)
            Xi = X + PiW @ X / sq
            return X @ (jnp.linalg.pinv(Xi) @ St)
        Omega = jnp.eye(N, dtype=dtype) + PiW / sq
        return jnp.linalg.solve(Omega, St)

    def diagnostics(W, E, Y):
        Rw = noise.whiten(Y - D)
        cost = jnp.mean(0.5 * jnp.sum(W**2, axis=1) + 0.5 * jnp.sum(Rw**2, axis=1))
        return (*history_entry(E, Y, y, noise), cost), Rw

    class Carry(NamedTuple):
        i: Array
        W: Array
        E: Array
        Y: Array
        Rw: Array
        history: IESHistory
        converged: Array
        finite: Array

    Y0 = _predict(forward, unravel, Ef, m)
    W0 = jnp.zeros((N, N), dtype)
    (h0, Rw0) = diagnostics(W0, Ef, Y0)
    hist0 = _set(_empty_history(max_iter, dtype), 0, (*h0, jnp.nan))
    init = Carry(jnp.array(0), W0, Ef, Y0, Rw0, hist0, jnp.array(False), jnp.all(jnp.isfinite(Y0)))

    def cond(c: Carry):
        return (c.i < max_iter) & ~c.converged & c.finite

    def body(c: Carry) -> Carry:
        S = noise.whiten(sensitivity(c.W, c.Y))  # Ŝ (N, m)
        grad = c.W + c.Rw @ S.T  # rows: ∇J(w_j)ᵀ
        if m < N:  # Woodbury: (I + ŜŜᵀ)^{-1} = I - Ŝ (I_m + ŜᵀŜ)^{-1} Ŝᵀ, an m×m solve
            cf = jsl.cho_factor(jnp.eye(m, dtype=dtype) + S.T @ S, lower=True)
            Z = grad - jsl.cho_solve(cf, (grad @ S).T).T @ S.T
        else:
            Z = ensemble_solve(S, grad.T).T  # (I + ŜŜᵀ)^{-1} ∇J, as rows
        dW = -gamma(c.i + 1) * Z
        W = c.W + dW
        E = Ef + W @ X
        Y = _predict(forward, unravel, E, m)
        step = jnp.sqrt(jnp.mean((E - c.E) ** 2)) / scale
        h, Rw = diagnostics(W, E, Y)
        finite = jnp.all(jnp.isfinite(Y)) & jnp.all(jnp.isfinite(W))
        i = c.i + 1
        history = _set(c.history, i, (*h, step))
        return Carry(i, W, E, Y, Rw, history, step <= tol, finite)

    out = jax.lax.while_loop(cond, body, init)
    return IESResult(
        unflatten_ensemble(out.E, unravel),
        out.history,
        out.i,
        out.converged & out.finite,
        _status(out.converged, out.finite),
        out.Y,
    )


# --------------------------------------------------------------- seeds' iteration
def ies_kalman(
    key: Array,
    forward: Callable[[PyTree], Float[Array, " m"]],
    prior: PyTree,
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    max_iter: int = 10,
    tol: float = 1e-2,
    resample: bool = False,
    inversion: str = "exact",
    truncation: float = 0.99,
    localization: Float[Array, "n m"] | None = None,
    perturbations: Float[Array, "N m"] | None = None,
) -> IESResult:
    r"""The seeds' iterative ensemble smoother: repeated Kalman updates until the change is small.

    .. math:: x_k^{(i)} = x_{k-1}^{(i)} + K_k (y^{(i)} - g(x_{k-1}^{(i)})),\quad
              K_k = C_{xg}(C_{gg} + R)^{-1}\ \text{(ensemble of iteration } k-1)

    Stops when ``rms(E_k - E_{k-1}) / spread(E_0) <= tol`` or after ``max_iter``
    updates. The perturbed data ``y^{(i)} = y + ε^{(i)}`` are drawn once (or at every
    iteration with ``resample=True``). The first iteration is exactly one ES update;
    later ones re-use the data with full weight, so the ensemble collapses towards
    a data fit (no posterior guarantee, see the module docstring).

    Args:
        key: PRNG key for the perturbations.
        forward, prior, y, noise, obs_std, obs_cov: as in :func:`ies`.
        max_iter: bound on the number of updates.
        tol: threshold on the relative change.
        resample: draw new perturbations at every iteration.
        inversion, truncation, localization: gain options as in :func:`jaxda.ensemble.esmda`.
        perturbations: optional pre-drawn ``(N, m)`` ``ε`` (only with ``resample=False``).

    Returns:
        :class:`IESResult`; ``history.cost`` is ``NaN`` (no cost function is minimised).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (40, 2))
        >>> out = ies_kalman(jax.random.key(1), lambda x: x[:1] * x[1:], prior,
        ...                  jnp.array([0.5]), obs_std=0.1)
        >>> out.history.misfit.shape
        (11,)
    """
    y = jnp.asarray(y)
    check_vector(y, "y")
    m = y.shape[0]
    E0, unravel = flatten_ensemble(prior)
    _check_common(E0, y, inversion, truncation, localization)
    _check_iter(max_iter, tol)
    noise = resolve_noise(noise, obs_std, obs_cov, m)
    if resample and perturbations is not None:
        raise ValueError("perturbations= cannot be combined with resample=True")
    dtype = jnp.result_type(E0.dtype, y.dtype)
    E0 = E0.astype(dtype)
    N = E0.shape[0]
    key, sub = jax.random.split(key)
    eps0 = _fixed_perturbations(sub, noise, N, m, perturbations)
    scale = jnp.sqrt(jnp.mean(jnp.var(E0, axis=0, ddof=1)))

    class Carry(NamedTuple):
        i: Array
        key: Array
        E: Array
        Y: Array
        history: IESHistory
        converged: Array
        finite: Array

    Y0 = _predict(forward, unravel, E0, m)
    hist0 = _set(
        _empty_history(max_iter, dtype), 0, (*history_entry(E0, Y0, y, noise), jnp.nan, jnp.nan)
    )
    init = Carry(jnp.array(0), key, E0, Y0, hist0, jnp.array(False), jnp.all(jnp.isfinite(Y0)))

    def cond(c: Carry):
        return (c.i < max_iter) & ~c.converged & c.finite

    def body(c: Carry) -> Carry:
        if resample:
            key, sub = jax.random.split(c.key)
            eps = noise.sample(sub, (N,))
        else:
            key, eps = c.key, eps0
        E = esmda_update(
            c.E,
            c.Y,
            y,
            noise,
            eps,
            1.0,
            inversion=inversion,
            truncation=truncation,
            localization=localization,
        )
        Y = _predict(forward, unravel, E, m)
        step = jnp.sqrt(jnp.mean((E - c.E) ** 2)) / scale
        i = c.i + 1
        history = _set(c.history, i, (*history_entry(E, Y, y, noise), jnp.nan, step))
        finite = jnp.all(jnp.isfinite(Y)) & jnp.all(jnp.isfinite(E))
        return Carry(i, key, E, Y, history, step <= tol, finite)

    out = jax.lax.while_loop(cond, body, init)
    return IESResult(
        unflatten_ensemble(out.E, unravel),
        out.history,
        out.i,
        out.converged & out.finite,
        _status(out.converged, out.finite),
        out.Y,
    )


def make_ies_analysis(obs: ObservationModel, **options) -> Callable:
    """Filter-style analysis ``analysis(key, E_forecast, y) -> E_analysis`` by :func:`ies`
    with the observation operator as forward model (an iterative EnKF-like update)."""

    def analysis(key, ensemble, y):
        return ies(key, obs.operator.fn, ensemble, y, noise=obs.noise, **options).posterior

    return analysis
