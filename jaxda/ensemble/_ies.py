r"""Iterative ensemble smoothers: the repeated Kalman update (iterated ensemble smoother) and the
Gauss–Newton subspace IES of Evensen, Raanes, Stordal & Hove (2019).

**Repeated Kalman update** (:func:`ies_kalman`). Starting from the prior ensemble, repeat

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

Both loops are ``lax.while_loop`` with a static ``max_steps`` bound; the result reports
the updates done (``n_steps``), a ``converged`` flag, a :class:`jaxda.core.Status`
``status`` and a :class:`~jaxda.ensemble.SmootherHistory` padded with ``nan`` after the
last update. Failed members (non-finite predictions) and missing observations (``nan``
in ``y``) are handled as in :mod:`jaxda.ensemble._esmda`: a member whose predictions
become non-finite is rolled back to its last iterate with finite predictions, frozen
there, and excluded from the sensitivity, the gradient statistics and the history
(``status = FAILED_MEMBERS``, ``failed`` mask); the loop stops with ``NONFINITE`` when
fewer than two members remain. While members are inactive the ensemble-average
sensitivity is the least-squares fit on the active members' current anomalies
(``S = X X_iᵀ (X_i X_iᵀ)^{+} Π g(E_i)/\sqrt{N_a-1}``, ensemble space), which is exact for
a linear ``g`` in the span of those anomalies.

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
from functools import partial
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Bool, Float, Int

from ..core import catch_not_traceable, check_in_range, raise_on_failure
from ._core import ensemble_solve
from ._esmda import (
    Noise,
    SmootherHistory,
    _active_rows,
    _check_bool,
    _check_callable,
    _check_common,
    _check_finite,
    _check_key,
    _combine_status,
    _decouple,
    _flatten_ensemble,
    _history_entry,
    _mean_anomalies,
    _observations,
    _predict,
    _resolve_noise,
    _roll_back,
    _spread,
    _unflatten_ensemble,
    _update_and_roll_back,
)

PyTree = Any

__all__ = [
    "IESResult",
    "ies",
    "ies_kalman",
    "step_length_schedule",
]


class IESResult(NamedTuple):
    """Output of :func:`ies` and :func:`ies_kalman`.

    Attributes:
        posterior: the final ensemble, same structure as the prior.
        predictions: ``g`` of the final members, ``(N, m)``.
        history: :class:`~jaxda.ensemble.SmootherHistory` of length ``max_steps + 1``
            (``nan`` after ``n_steps``).
        n_steps: number of updates made.
        status: :class:`jaxda.core.Status`: ``SUCCESS`` (converged), ``MAX_STEPS``,
            ``FAILED_MEMBERS`` (some members dropped, see ``failed``; ``converged`` still
            tells whether the others converged) or ``NONFINITE`` (fewer than two members
            left).
        failed: ``(N,)`` mask of the members dropped for non-finite predictions.
        converged: the convergence test was met.
    """

    posterior: PyTree
    predictions: Float[Array, "N m"]
    history: SmootherHistory
    n_steps: Int[Array, ""]
    status: Int[Array, ""]
    failed: Bool[Array, " N"]
    converged: Bool[Array, ""]


def step_length_schedule(
    max_step: float = 0.6, min_step: float = 0.3, decay: float = 2.5
) -> Callable[[Array], Array]:
    r"""Evensen et al. (2019) step lengths ``γ_i = γ_min + (γ_max-γ_min) 2^{-(i-1)/(γ_dec-1)}``.

    ``i`` counts from 1. Returns a function of the (traced) iteration number. Requires
    ``0 < min_step <= max_step <= 1`` and ``decay > 1``.

    Examples:
        >>> s = step_length_schedule(1.0, 0.5, 2.0)
        >>> [float(s(i)) for i in (1, 2, 3)]
        [1.0, 0.75, 0.625]
    """
    check_in_range("max_step", max_step, 0.0, 1.0, closed_low=False)
    check_in_range("min_step", min_step, 0.0, max_step, closed_low=False)
    check_in_range("decay", decay, 1.0, float("inf"), closed_low=False, closed_high=False)

    def gamma(i):
        i = jnp.asarray(i, dtype=jnp.result_type(float))
        return min_step + (max_step - min_step) * 2.0 ** (-(i - 1.0) / (decay - 1.0))

    return gamma


def _resolve_step(step_length) -> Callable[[Array], Array]:
    if step_length is None:
        return step_length_schedule()
    if callable(step_length):
        return step_length  # pyright: ignore[reportReturnType]
    if isinstance(step_length, bool) or not isinstance(step_length, numbers.Real):
        raise TypeError(
            f"step_length must be None, a float in (0, 1] or a function i -> step, "
            f"got {type(step_length).__name__}"
        )
    check_in_range("step_length", float(step_length), 0.0, 1.0, closed_low=False)
    return lambda i: jnp.asarray(step_length, dtype=jnp.result_type(float))


def _check_steps(max_steps, tol):
    if not isinstance(max_steps, numbers.Integral) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    check_in_range("tol", tol, 0.0, float("inf"), closed_high=False)


def _fixed_perturbations(key, noise, N, m, perturbations):
    if perturbations is None:
        return noise.sample(key, (N,))
    if jnp.shape(perturbations) != (N, m):
        raise ValueError(
            f"perturbations must have shape (N, m)={(N, m)}, got {jnp.shape(perturbations)}"
        )
    _check_finite("perturbations", perturbations)
    return jnp.asarray(perturbations)


def _empty_history(max_steps, dtype):
    nan = jnp.full((max_steps + 1,), jnp.nan, dtype=dtype)
    return SmootherHistory(nan, nan, nan, nan, nan)


def _set(history: SmootherHistory, i, values) -> SmootherHistory:
    return SmootherHistory(*(h.at[i].set(v) for h, v in zip(history, values, strict=True)))


def _result(out, unravel) -> IESResult:
    too_few = jnp.sum(out.active) < 2
    failed = ~out.active
    converged = out.converged & ~too_few
    return IESResult(
        _unflatten_ensemble(out.E, unravel),
        out.Y,
        out.history,
        out.i,
        _combine_status(too_few, failed, converged),
        failed,
        converged,
    )


# --------------------------------------------------------------------- subspace IES
class _IESProblem(eqx.Module):
    """Validated inputs of a subspace IES run (shared by :func:`ies` and the ask/tell form)."""

    Ef: Array  # (N, n) flat prior
    X: Array  # (N, n) scaled prior anomalies of the finite prior members
    D: Array  # (N, m) fixed perturbed data y + ε (0 + ε at missing entries)
    y: Array  # (m,) data, 0 at missing entries
    observed: Array  # (m,) mask
    noise: Noise  # decoupled observation noise
    theta: Array  # (m,) observation std
    tol: Array
    unravel: Callable = eqx.field(static=True)
    gamma: Callable = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)


class _IESCarry(NamedTuple):
    i: Array  # updates made
    W: Array  # (N, N) ensemble-space coefficients, E = Ef + W X
    E: Array
    Y: Array
    Rw: Array  # whitened residuals g(E) - D
    history: SmootherHistory
    converged: Array
    active: Array


def _ies_setup(
    key, prior, y, noise, obs_std, obs_cov, mask, step_length, max_steps, tol, perturbations
) -> _IESProblem:
    """Check and resolve the arguments of :func:`ies` (everything except the model)."""
    y, observed = _observations(y, mask)
    m = y.shape[0]
    Ef, unravel = _flatten_ensemble(prior)
    _check_steps(max_steps, tol)
    noise = _resolve_noise(noise, obs_std, obs_cov, m)
    gamma = _resolve_step(step_length)
    dtype = jnp.result_type(Ef.dtype, y.dtype)
    Ef = Ef.astype(dtype)
    N = Ef.shape[0]
    eps = _fixed_perturbations(key, noise, N, m, perturbations)
    prior_ok = jnp.all(jnp.isfinite(Ef), axis=1)
    _, X = _mean_anomalies(Ef, prior_ok)
    return _IESProblem(
        Ef, X, y + eps, y, observed, _decouple(noise, observed), noise.std,
        jnp.asarray(tol), unravel, gamma, int(max_steps),
    )  # fmt: skip


def _ies_sensitivity(p: _IESProblem, W, E, Y, active):
    """Ensemble-average sensitivity ``S_i`` (``N×m``, not yet whitened)."""
    N, n = p.Ef.shape
    _, St = _mean_anomalies(jnp.where(p.observed, Y, 0.0), active)  # Π g(E_i)/√(N_a-1)

    def least_squares(_):  # regression on the active members' current anomalies
        _, Xi = _mean_anomalies(E, active)
        if n < N - 1:
            return p.X @ (jnp.linalg.pinv(Xi) @ St)
        return (p.X @ Xi.T) @ (jnp.linalg.pinv(Xi @ Xi.T, hermitian=True) @ St)

    if n < N - 1:  # static branch: least squares, as the paper prescribes
        return least_squares(None)

    def omega(_):  # all members active: Ω_i = I + Π W_i/√(N-1)
        PiW = W - jnp.mean(W, axis=0)
        return jnp.linalg.solve(jnp.eye(N, dtype=W.dtype) + PiW / jnp.sqrt(N - 1.0), St)

    return jax.lax.cond(jnp.all(active), omega, least_squares, None)


def _ies_diagnostics(p: _IESProblem, W, E, Y, active):
    """History entry ``(misfit, member misfit, spread, cost)`` and whitened residuals."""
    use = active[:, None] & p.observed
    Rw = jnp.where(p.observed, p.noise.whiten(jnp.where(use, Y - p.D, 0.0)), 0.0)
    per = 0.5 * jnp.sum(W**2, axis=1) + 0.5 * jnp.sum(Rw**2, axis=1)
    cost = jnp.sum(jnp.where(active, per, 0.0)) / jnp.maximum(jnp.sum(active), 1)
    return (*_history_entry(E, Y, p.y, p.observed, active, p.theta), cost), Rw


def _ies_start(p: _IESProblem, Y0) -> tuple[_IESCarry, Array]:
    """Initial carry from the prior predictions ``Y0``, and the step scale ``spread(E_0)``."""
    N = p.Ef.shape[0]
    dtype = p.Ef.dtype
    active0 = _active_rows(p.Ef, Y0, p.observed)
    scale = _spread(p.Ef, active0)
    scale = jnp.where(scale > 0, scale, 1.0)
    W0 = jnp.zeros((N, N), dtype)
    h0, Rw0 = _ies_diagnostics(p, W0, p.Ef, Y0, active0)
    hist0 = _set(_empty_history(p.max_steps, dtype), 0, (*h0, jnp.nan))
    init = _IESCarry(jnp.array(0, jnp.int32), W0, p.Ef, Y0, Rw0, hist0, jnp.array(False), active0)
    return init, scale


def _ies_running(p: _IESProblem, c: _IESCarry):
    """Another update is due: below ``max_steps``, not converged, two or more active members."""
    return (c.i < p.max_steps) & ~c.converged & (jnp.sum(c.active) >= 2)


def _ies_propose(p: _IESProblem, c: _IESCarry):
    """The Gauss–Newton step: new coefficients ``W`` and members ``E = E_f + W X``."""
    N, m = p.D.shape
    S = jnp.where(p.observed, p.noise.whiten(_ies_sensitivity(p, c.W, c.E, c.Y, c.active)), 0.0)
    grad = c.W + c.Rw @ S.T  # rows: ∇J(w_j)ᵀ
    if m < N:  # Woodbury: (I + ŜŜᵀ)^{-1} = I - Ŝ (I_m + ŜᵀŜ)^{-1} Ŝᵀ, an m×m solve
        cf = jsl.cho_factor(jnp.eye(m, dtype=S.dtype) + S.T @ S, lower=True)
        Z = grad - jsl.cho_solve(cf, (grad @ S).T).T @ S.T
    else:
        Z = ensemble_solve(S, grad.T).T  # (I + ŜŜᵀ)^{-1} ∇J, as rows
    W = jnp.where(c.active[:, None], c.W - p.gamma(c.i + 1) * Z, c.W)
    return W, p.Ef + W @ p.X


def _ies_accept(p: _IESProblem, c: _IESCarry, W, E, Y, scale) -> _IESCarry:
    """Take the proposed ``(W, E)`` with their predictions ``Y``; members whose predictions
    fail are rolled back and dropped; record the history and the convergence test."""
    newly = c.active & ~_active_rows(E, Y, p.observed)
    W = jnp.where(newly[:, None], c.W, W)  # roll failed members back
    E, Y, active, step = _roll_back(c.E, c.Y, c.active, E, Y, p.observed, scale)
    h, Rw = _ies_diagnostics(p, W, E, Y, active)
    i = c.i + 1
    history = _set(c.history, i, (*h, step))
    return _IESCarry(i, W, E, Y, Rw, history, step <= p.tol, active)


@catch_not_traceable("forward", "the forward model")
def ies(
    key: Array,
    forward: Callable[[PyTree], Float[Array, " m"]],
    prior: PyTree,
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    mask: Bool[Array, " m"] | None = None,
    step_length: float | Callable[[Array], Array] | None = None,
    max_steps: int = 30,
    tol: float = 1e-3,
    perturbations: Float[Array, "N m"] | None = None,
    throw: bool = False,
) -> IESResult:
    r"""Gauss–Newton subspace iterative ensemble smoother (Evensen et al. 2019).

    Iterates the ensemble-space Gauss–Newton update of the module docstring with
    *fixed* perturbed observations ``d_j = y + ε_j`` until the applied step
    ``rms(E_{i+1} - E_i) / spread(E_0)`` (member change in units of the prior spread)
    is ``<= tol`` or ``max_steps`` updates were made (``lax.while_loop``).

    Args:
        key: PRNG key for the (fixed) observation perturbations ``ε_j ~ N(0, R)``.
        forward: ``g(params) -> (m,)`` for one member (pytree like one prior member).
        prior: prior ensemble ``(N, n)`` or pytree with leading member axis, ``N >= 2``.
        y: data ``(m,)``; ``nan`` entries are not observed.
        noise, obs_std, obs_cov: observation noise (exactly one).
        mask: optional ``(m,)`` booleans, ``False`` = not observed.
        step_length: ``None`` (Evensen's schedule ``(0.6, 0.3, 2.5)``), a float in
            ``(0, 1]`` or a function ``i -> γ_i`` of the 1-based iteration.
        max_steps: bound on the number of updates.
        tol: convergence threshold on the relative rms change of the members.
        perturbations: optional pre-drawn ``(N, m)`` ``ε`` used instead of ``key``.
        throw: raise when ``status`` is not ``SUCCESS`` (see :func:`jaxda.core.raise_on_failure`).

    Returns:
        :class:`IESResult` (posterior, predictions, history, n_steps, status, failed,
        converged).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (40, 1))
        >>> out = ies(jax.random.key(1), lambda x: x + 0.2 * x**3, prior, jnp.array([1.0]),
        ...           obs_std=0.3)
        >>> bool(out.converged), int(out.status), out.posterior.shape
        (True, 0, (40, 1))
    """
    _check_key(key)
    _check_callable(forward)
    _check_bool(throw, "throw")
    p = _ies_setup(key, prior, y, noise, obs_std, obs_cov, mask, step_length, max_steps, tol,
                   perturbations)  # fmt: skip
    m = p.y.shape[0]
    init, scale = _ies_start(p, _predict(forward, p.unravel, p.Ef, m))

    def body(c: _IESCarry) -> _IESCarry:
        W, E = _ies_propose(p, c)
        return _ies_accept(p, c, W, E, _predict(forward, p.unravel, E, m), scale)

    result = _result(jax.lax.while_loop(partial(_ies_running, p), body, init), p.unravel)
    return raise_on_failure(result) if throw else result


# --------------------------------------------------------------- repeated Kalman update
@catch_not_traceable("forward", "the forward model")
def ies_kalman(
    key: Array,
    forward: Callable[[PyTree], Float[Array, " m"]],
    prior: PyTree,
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    mask: Bool[Array, " m"] | None = None,
    max_steps: int = 10,
    tol: float = 1e-2,
    resample: bool = False,
    inversion: str = "exact",
    truncation: float = 0.99,
    localization: Float[Array, "n m"] | None = None,
    perturbations: Float[Array, "N m"] | None = None,
    throw: bool = False,
) -> IESResult:
    r"""Iterative ensemble smoother by repeated Kalman updates until the change is small.

    .. math:: x_k^{(i)} = x_{k-1}^{(i)} + K_k (y^{(i)} - g(x_{k-1}^{(i)})),\quad
              K_k = C_{xg}(C_{gg} + R)^{-1}\ \text{(ensemble of iteration } k-1)

    Stops when ``rms(E_k - E_{k-1}) / spread(E_0) <= tol`` or after ``max_steps``
    updates. The perturbed data ``y^{(i)} = y + ε^{(i)}`` are drawn once (or at every
    iteration with ``resample=True``). The first iteration is exactly one ES update;
    later ones re-use the data with full weight, so the ensemble collapses towards
    a data fit (no posterior guarantee, see the module docstring).

    Args:
        key: PRNG key for the perturbations.
        forward, prior, y, noise, obs_std, obs_cov, mask: as in :func:`ies`.
        max_steps: bound on the number of updates.
        tol: threshold on the relative change.
        resample: draw new perturbations at every iteration.
        inversion, truncation, localization: gain options as in :func:`jaxda.ensemble.esmda`.
        perturbations: optional pre-drawn ``(N, m)`` ``ε`` (only with ``resample=False``).
        throw: raise when ``status`` is not ``SUCCESS``.

    Returns:
        :class:`IESResult`; ``history.cost`` is ``nan`` (no cost function is minimised).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (40, 2))
        >>> out = ies_kalman(jax.random.key(1), lambda x: x[:1] * x[1:], prior,
        ...                  jnp.array([0.5]), obs_std=0.1)
        >>> out.history.misfit.shape
        (11,)
    """
    _check_key(key)
    _check_callable(forward)
    _check_bool(resample, "resample")
    _check_bool(throw, "throw")
    y, observed = _observations(y, mask)
    m = y.shape[0]
    E0, unravel = _flatten_ensemble(prior)
    _check_common(E0, m, inversion, truncation, localization)
    _check_steps(max_steps, tol)
    noise = _resolve_noise(noise, obs_std, obs_cov, m)
    if resample and perturbations is not None:
        raise ValueError("perturbations= cannot be combined with resample=True")
    dtype = jnp.result_type(E0.dtype, y.dtype)
    E0 = E0.astype(dtype)
    N = E0.shape[0]
    key, sub = jax.random.split(key)
    eps0 = _fixed_perturbations(sub, noise, N, m, perturbations)
    wnoise = _decouple(noise, observed)
    theta = noise.std

    class Carry(NamedTuple):
        i: Array
        key: Array
        E: Array
        Y: Array
        history: SmootherHistory
        converged: Array
        active: Array

    Y0 = _predict(forward, unravel, E0, m)
    active0 = _active_rows(E0, Y0, observed)
    scale = _spread(E0, active0)
    scale = jnp.where(scale > 0, scale, 1.0)
    h0 = _history_entry(E0, Y0, y, observed, active0, theta)
    hist0 = _set(_empty_history(max_steps, dtype), 0, (*h0, jnp.nan, jnp.nan))
    init = Carry(jnp.array(0, jnp.int32), key, E0, Y0, hist0, jnp.array(False), active0)

    def cond(c: Carry):
        return (c.i < max_steps) & ~c.converged & (jnp.sum(c.active) >= 2)

    def body(c: Carry) -> Carry:
        if resample:
            key, sub = jax.random.split(c.key)
            eps = noise.sample(sub, (N,))
        else:
            key, eps = c.key, eps0
        E, Y, active, step = _update_and_roll_back(
            forward, unravel, m, c.E, c.Y, c.active, observed, scale,
            y, wnoise, eps, 1.0, inversion, truncation, localization,
        )  # fmt: skip
        i = c.i + 1
        h = _history_entry(E, Y, y, observed, active, theta)
        history = _set(c.history, i, (*h, jnp.nan, step))
        return Carry(i, key, E, Y, history, step <= tol, active)

    result = _result(jax.lax.while_loop(cond, body, init), unravel)
    return raise_on_failure(result) if throw else result
