r"""Unscented Kalman inversion (UKI), Huang, Schneider & Stuart (2022).

Inverse problem: find parameters ``θ`` (``n`` values) from data ``y = G(θ) + η``,
``η ~ N(0, Γ)``. The UKI embeds it in the stochastic dynamical system

.. math::
    θ_{k+1} = r + α(θ_k - r) + ω_{k+1},\quad ω \sim N(0, Σ_ω),\qquad
    y = G(θ_{k+1}) + ν_{k+1},\quad ν \sim N(0, Σ_ν),

and runs the unscented Kalman filter on it with the same data ``y`` at every step, so
that the filtering mean ``m_k`` and covariance ``C_k`` converge to a Gaussian
approximation of the solution. One step from ``(m_k, C_k)``:

1. prediction: ``m̂ = r + α(m_k - r)``, ``Ĉ = α² C_k + Σ_ω``;
2. sigma points ``θ^0 = m̂``, ``θ^j = m̂ + L z_j`` (``Ĉ = L Lᵀ``, Cholesky); the
   ``"symmetric"`` set has ``2n + 1`` points, ``z_{j} = c e_j``, ``z_{j+n} = -c e_j``
   with ``c = a\sqrt{n}``, ``a = \min(\sqrt{4/n}, 1)`` and weights ``W_j = 1/(2c²)``;
   the ``"simplex"`` set has ``n + 2`` points (the centre and a regular simplex of
   ``n + 1`` directions with ``Σ_j z_j = 0``, weights ``W_j = n / (4(n+1))`` and
   ``Σ_j W_j z_j z_jᵀ = I``, the spherical-simplex set used by EnsembleKalmanProcesses.jl);
3. predictions ``ŷ^j = G(θ^j)`` (``forward`` is written for **one** parameter vector and
   vmapped over the sigma points) and the *modified* unscented transform of the paper:
   the predicted mean is the centre prediction ``ŷ = ŷ^0`` (mean weight 1 on the centre),

   .. math::
       \hat C^{θp} = \sum_{j≥1} W_j (θ^j - m̂)(ŷ^j - ŷ)ᵀ,\qquad
       \hat C^{pp} = \sum_{j≥1} W_j (ŷ^j - ŷ)(ŷ^j - ŷ)ᵀ + Σ_ν;

4. analysis: ``m_{k+1} = m̂ + \hat C^{θp}(\hat C^{pp})^{-1}(y - ŷ)``,
   ``C_{k+1} = Ĉ - \hat C^{θp}(\hat C^{pp})^{-1}\hat C^{θp\,T}``.

The weights reproduce ``Ĉ`` exactly (``Σ_j W_j (θ^j - m̂)(θ^j - m̂)ᵀ = Ĉ``), so for a
linear ``G`` every step is an exact Kalman update. The algebra is done in the
``k``-dimensional space of the off-centre points (``k = 2n`` or ``n + 1``) with whitened
prediction anomalies ``S`` (``Σ_ν^{-1/2}`` applied), ``K d = Aᵀ(I + SSᵀ)^{-1} S d`` and
``C_{k+1} = Aᵀ (I + SSᵀ)^{-1} A`` (``A``: weighted parameter anomalies, ``AᵀA = Ĉ``), a
Cholesky solve of the smaller of ``k×k`` and ``p×p``; no ``m×m`` inverse is formed.

**Free parameters** (Huang, Schneider & Stuart 2022, section 3): ``r`` is the prior mean,
``Σ_ν = 2Γ`` and ``Σ_ω = (2 - α²)Λ``, with ``α = alpha_reg ∈ (0, 1]`` (``α < 1`` pulls
the estimate towards ``r``: a Tikhonov-like regularization) and ``Λ = C_0`` (``update_freq=0``)
or ``Λ`` reset to the current ``C_k`` every ``update_freq`` steps (``update_freq=1``:
``Λ = C_k``, for identifiable problems, where ``C_k`` then approximates the posterior
covariance under an uninformative prior). For a linear ``G`` and ``α = 1`` the mean
converges to the least-squares solution (``update_freq = 0``).

**Bayesian setting** (``impose_prior=True``, the default). The prior ``N(r_0, C_0)`` is
imposed by augmenting the data with the prior mean (Huang, Huang, Reich & Stuart 2022;
Chada, Stuart & Tong 2020):

.. math::
    F(θ) = \begin{bmatrix} G(θ) \\ θ \end{bmatrix},\quad
    x = \begin{bmatrix} y \\ r_0 \end{bmatrix},\quad
    Σ_ν = 2\begin{bmatrix} Γ & 0 \\ 0 & C_0 \end{bmatrix},\qquad α = 1,\ Λ = C_k
    \ (\text{update\_freq} = 1),

i.e. ``Ĉ = 2C_k`` and both blocks of the artificial noise carry the factor 2 (the mean-field
system of Huang et al. 2022 with time step ``Δt = 1/2``). For a linear ``G = H`` each step
is an exact Kalman update, ``C_{k+1}^{-1} = ½C_k^{-1} + ½(HᵀΓ^{-1}H + C_0^{-1})`` and
``C_{k+1}^{-1}m_{k+1} = ½C_k^{-1}m_k + ½(HᵀΓ^{-1}y + C_0^{-1}r_0)``, whose fixed point is
the exact Gaussian posterior, reached geometrically (the error halves every step). Note
that EnsembleKalmanProcesses.jl (``Unscented(...; impose_prior=true)``, read at commit
2f291a7) adds ``C_0`` without the factor 2 to the prior block while using ``2Γ`` for the
data; in the linear case its fixed point has precision ``HᵀΓ^{-1}H + 2C_0^{-1}`` (the
prior counted twice). Here the two blocks are treated alike, and the test suite checks
the fixed point against :func:`jaxda.ensemble.linear_gaussian_posterior`.
``impose_prior=True`` therefore requires ``alpha_reg = 1`` and ``update_freq = 1`` (the
defaults); other values raise ``ValueError``.

**Deterministic.** The UKI draws no random numbers (the sigma points are a quadrature
rule), so :func:`uki` takes no key: the same inputs give the same result.

**Constrained parameters.** With ``transform=`` (a :class:`jaxda.core.Transform`, e.g.
:func:`jaxda.core.bounded`) the iteration runs in the unconstrained ``u`` and the forward
model sees ``θ = T(u)`` at every sigma point, so ``θ`` never leaves its bounds;
``prior_mean`` / ``prior_cov`` are the Gaussian prior *of u*. The result holds the
``u``-space mean and covariance and ``constrained_mean = T(mean)`` (for the componentwise
maps of :func:`~jaxda.core.bounded`, the median of each constrained marginal).

**Failed forward runs.** If a sigma-point prediction is non-finite in an observed entry
(or ``Ĉ`` is not positive definite, or the update is not finite), the unscented transform
is undefined: the run stops, keeps the last finite ``(m_k, C_k)``, and ``status`` is
``Status.NONFINITE`` (no silent ``nan``; ``throw=True`` raises). The same holds when the
final evaluation ``G(T(mean))`` is non-finite. **Missing observations** (``nan`` in ``y``
or ``mask=False``) drop out of the update exactly, as in :func:`jaxda.ensemble.esmda`.

**Stopping.** The loop (``lax.while_loop``) stops after ``max_steps`` updates, or when the
change of one update, ``max(rms(Δm / σ_0), max_{ij}|ΔC_{ij}|/(σ_{0,i} σ_{0,j}))`` in units
of the prior standard deviations ``σ_0 = \sqrt{\mathrm{diag}\,C_0}``, is ``<= tol``
(``status`` ``SUCCESS``; ``MAX_STEPS`` if the budget ran out first). ``tol=None`` runs
exactly ``max_steps`` updates (``SUCCESS``). Each update costs ``2n + 1`` (``n + 2``)
forward runs, plus one at the end for ``predictions``.

References:
    Huang, Schneider & Stuart (2022), *Iterated Kalman methodology for inverse problems*,
    J. Comput. Phys. 463, 111262.
    Huang, Huang, Reich & Stuart (2022), *Efficient derivative-free Bayesian inference for
    large-scale inverse problems*, Inverse Problems 38, 125006.
    Chada, Stuart & Tong (2020), *Tikhonov regularization within ensemble Kalman
    inversion*, SIAM J. Numer. Anal. 58(2), 1263-1294.
    EnsembleKalmanProcesses.jl (CliMA), ``Unscented`` process.
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
    Transform,
    catch_not_traceable,
    check_in_range,
    is_concrete,
    raise_on_failure,
    status_array,
)
from ._eki import _resolve_transform
from ._esmda import (
    Noise,
    _check_bool,
    _check_callable,
    _check_finite,
    _check_positive_int,
    _decouple,
    _observations,
    _resolve_noise,
)

PyTree = Any

__all__ = [
    "SIGMA_POINTS",
    "UKIHistory",
    "UKIResult",
    "UKIState",
    "uki",
    "uki_ask",
    "uki_init",
    "uki_result",
    "uki_tell",
]

SIGMA_POINTS = ("symmetric", "simplex")


class UKIHistory(NamedTuple):
    """Per-step diagnostics of :func:`uki`; entry 0 is the prior, entry ``k`` after ``k``
    updates, ``nan`` after ``n_steps``. Names follow :class:`~jaxda.ensemble.SmootherHistory`.

    Attributes:
        misfit: ``‖y - G(T(m̂))‖_W`` over the observed entries, ``W = diag(1/θ²)`` (θ the
            observation standard deviations), at the centre sigma point ``m̂ = r + α(m_k - r)``
            of the update that starts from entry ``k`` (``= m_k`` when ``alpha_reg = 1``);
            the last entry is at the final mean.
        spread: ``√ mean diag C_k`` (parameter spread, in ``u``).
        step: change made by the update that produced this entry (``nan`` at index 0):
            ``max(rms(Δm/σ_0), max|ΔC_ij|/(σ_0,i σ_0,j))``, the stopping criterion.
    """

    misfit: Float[Array, " K"]
    spread: Float[Array, " K"]
    step: Float[Array, " K"]


class UKIResult(NamedTuple):
    """Output of :func:`uki` (and :func:`uki_result`).

    Attributes:
        mean: final mean ``m`` of ``u`` (same structure as ``prior_mean``).
        cov: final covariance ``C`` of ``u``, ``(n, n)`` in flat parameter order.
        constrained_mean: ``T(mean)`` (equal to ``mean`` without a ``transform``).
        predictions: ``G(T(mean))``, ``(m,)``.
        history: :class:`UKIHistory` of length ``max_steps + 1``.
        n_steps: number of updates made.
        status: :class:`jaxda.core.Status`: ``SUCCESS`` (converged, or ``tol=None`` and the
            budget was spent), ``MAX_STEPS`` (``tol`` not met) or ``NONFINITE`` (a forward
            run or the update was non-finite; the last finite state is returned).
        converged: the ``tol`` test was met.
    """

    mean: PyTree
    cov: Float[Array, "n n"]
    constrained_mean: PyTree
    predictions: Float[Array, " m"]
    history: UKIHistory
    n_steps: Int[Array, ""]
    status: Int[Array, ""]
    converged: Bool[Array, ""]


# --------------------------------------------------------------------------- sigma points
def _sigma_offsets(n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Off-centre directions ``z_j`` (rows, ``(k, n)``) and weights ``W_j`` with
    ``Σ_j W_j z_j z_jᵀ = I`` and ``Σ_j W_j z_j = 0``."""
    if kind == "symmetric":
        c = min(np.sqrt(4.0 / n), 1.0) * np.sqrt(n)
        Z = np.concatenate([c * np.eye(n), -c * np.eye(n)])
        return Z, np.full(2 * n, 1.0 / (2.0 * c**2))
    # Regular simplex: an orthonormal basis of the complement of the ones vector in
    # R^{n+1} (Helmert's construction), scaled so that the weights are n / (4(n+1)).
    w = n / (4.0 * (n + 1.0))
    V = np.zeros((n + 1, n))
    V[0, 0], V[1, 0] = -1.0 / np.sqrt(2.0), 1.0 / np.sqrt(2.0)
    for i in range(2, n + 1):  # concrete, at set-up time only
        V[:i, i - 1] = 1.0 / np.sqrt(i * (i + 1.0))
        V[i, i - 1] = -i / np.sqrt(i * (i + 1.0))
    return V / np.sqrt(w), np.full(n + 1, w)


# --------------------------------------------------------------------------- set-up
class _UKIProblem(eqx.Module):
    """Validated inputs of a UKI run (shared by :func:`uki` and the ask/tell form)."""

    m0: Array  # (n,) prior mean (flat), also r
    C0: Array  # (n, n) prior covariance
    L0: Array  # (n, n) Cholesky factor of C0
    sigma0: Array  # (n,) prior standard deviations (step units)
    y: Array  # (m,) data, 0 at missing entries
    observed: Array  # (m,) mask
    noise: Noise  # decoupled observation noise Γ
    theta: Array  # (m,) observation std
    alpha: Array  # alpha_reg
    tol: Array  # tol (inf-free; unused when use_tol is False)
    Z: Array  # (k, n) sigma directions
    w: Array  # (k,) sigma weights
    unravel: Callable = eqx.field(static=True)
    to_theta: Callable = eqx.field(static=True)  # transform.forward (identity without one)
    max_steps: int = eqx.field(static=True)
    update_freq: int = eqx.field(static=True)
    impose_prior: bool = eqx.field(static=True)
    use_tol: bool = eqx.field(static=True)


def _identity(u):
    return u


def _uki_setup(
    prior_mean, prior_cov, y, noise, obs_std, obs_cov, mask, max_steps, alpha_reg,
    update_freq, impose_prior, sigma_points, transform, tol,
) -> _UKIProblem:  # fmt: skip
    """Check and resolve the arguments of :func:`uki` (everything except the model)."""
    _check_bool(impose_prior, "impose_prior")
    _check_positive_int("max_steps", max_steps)
    if sigma_points not in SIGMA_POINTS:
        raise ValueError(f"sigma_points must be one of {SIGMA_POINTS}, got {sigma_points!r}")
    if isinstance(alpha_reg, bool) or not isinstance(alpha_reg, numbers.Real):
        raise TypeError(f"alpha_reg must be a float in (0, 1], got {type(alpha_reg).__name__}")
    check_in_range("alpha_reg", float(alpha_reg), 0.0, 1.0, closed_low=False)
    if update_freq is not None and (
        not isinstance(update_freq, numbers.Integral)
        or isinstance(update_freq, bool)
        or update_freq < 0
    ):
        raise ValueError(f"update_freq must be None or an integer >= 0, got {update_freq!r}")
    if impose_prior:
        if float(alpha_reg) != 1.0:
            raise ValueError(
                f"impose_prior=True needs alpha_reg=1 (the prior enters through the augmented "
                f"data; Huang et al. 2022), got alpha_reg={alpha_reg}"
            )
        if update_freq not in (None, 1):
            raise ValueError(
                f"impose_prior=True needs update_freq=1 (Λ = C_k), got update_freq={update_freq}"
            )
        update_freq = 1
    elif update_freq is None:
        update_freq = 0
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
            raise TypeError(f"tol must be None or a float >= 0, got {type(tol).__name__}")
        check_in_range("tol", float(tol), 0.0, float("inf"), closed_high=False)
    checked = _resolve_transform(transform)
    to_theta = _identity if checked is None else checked.forward

    leaves = jax.tree_util.tree_leaves(prior_mean)
    if not leaves:
        raise ValueError("prior_mean is empty")
    if isinstance(prior_mean, jax.Array | np.ndarray) and jnp.ndim(prior_mean) == 1:
        m0, unravel = jnp.asarray(prior_mean), _identity  # a fixed function: compiled once
    else:
        m0, unravel = ravel_pytree(prior_mean)
    n = m0.shape[0]
    if n < 1:
        raise ValueError("prior_mean has no parameters (n = 0)")
    if not jnp.issubdtype(m0.dtype, jnp.inexact):
        m0 = m0.astype(jnp.result_type(float))
    _check_finite("prior_mean", m0)
    C0 = jnp.asarray(prior_cov)
    if C0.shape != (n, n):
        raise ValueError(
            f"prior_cov must have shape (n, n)={(n, n)} (flat parameter order), got {C0.shape}"
        )
    y, observed = _observations(y, mask)
    m = y.shape[0]
    noise = _resolve_noise(noise, obs_std, obs_cov, m)
    dtype = jnp.result_type(m0.dtype, C0.dtype, y.dtype)
    m0, C0 = m0.astype(dtype), C0.astype(dtype)
    L0 = jnp.linalg.cholesky(0.5 * (C0 + C0.T))
    if is_concrete(C0):
        C0n = np.asarray(C0)
        if not np.all(np.isfinite(C0n)):
            raise ValueError("prior_cov contains nan or inf")
        if not np.allclose(C0n, C0n.T, rtol=1e-8, atol=1e-12 * np.max(np.abs(C0n))):
            raise ValueError("prior_cov must be symmetric")
        try:
            np.linalg.cholesky(0.5 * (C0n + C0n.T))
        except np.linalg.LinAlgError:
            raise ValueError("prior_cov must be positive definite") from None
    else:
        L0 = eqx.error_if(
            L0, ~jnp.all(jnp.isfinite(L0)), "prior_cov must be positive definite and finite"
        )
    out = jax.eval_shape(to_theta, jax.ShapeDtypeStruct((n,), dtype))
    if getattr(out, "shape", None) != (n,):
        raise ValueError(
            f"transform.forward must map a ({n},) vector to a ({n},) vector, got "
            f"{getattr(out, 'shape', out)}"
        )
    Z, w = _sigma_offsets(n, sigma_points)
    return _UKIProblem(
        m0, C0, L0, jnp.sqrt(jnp.diagonal(C0)), y, observed, _decouple(noise, observed),
        noise.std.astype(dtype), jnp.asarray(alpha_reg, dtype),
        jnp.asarray(0.0 if tol is None else tol, dtype), jnp.asarray(Z, dtype),
        jnp.asarray(w, dtype), unravel, to_theta, int(max_steps), int(update_freq),
        bool(impose_prior), tol is not None,
    )  # fmt: skip


# --------------------------------------------------------------------------- one step
def _sigma_points(p: _UKIProblem, m, C, Lam):
    """Prediction step and sigma points: ``(m̂, ok, U)`` with ``U`` ``(k+1, n)``, centre first."""
    a = p.alpha
    mh = p.m0 + a * (m - p.m0)
    Ch = a**2 * C + (2.0 - a**2) * Lam
    L = jnp.linalg.cholesky(0.5 * (Ch + Ch.T))
    ok = jnp.all(jnp.isfinite(L))
    U = jnp.concatenate([mh[None], mh + p.Z @ L.T])
    return mh, ok, U


def _evaluate(forward: Callable, p: _UKIProblem, U: Array) -> Array:
    """``G(T(u))`` for every row of ``U`` (vmapped), ``(J, m)``."""
    m = p.y.shape[0]
    Y = jax.vmap(lambda u: jnp.ravel(jnp.asarray(forward(p.unravel(p.to_theta(u))))))(U)
    if Y.ndim != 2 or Y.shape[1] != m:
        raise ValueError(
            f"forward model returns {Y.shape[1:]} predictions per parameter vector but y has "
            f"{m} observations"
        )
    return Y.astype(p.m0.dtype)


def _finite_rows(p: _UKIProblem, Y):
    return jnp.all(jnp.isfinite(Y) | ~p.observed, axis=-1)


def _misfit(p: _UKIProblem, yhat):
    r = jnp.where(p.observed, (p.y - jnp.where(p.observed, yhat, 0.0)) / p.theta, 0.0)
    return jnp.sqrt(jnp.sum(r**2))


def _analysis(p: _UKIProblem, mh, U, Y):
    """Kalman analysis with the modified unscented transform: new ``(m, C)``."""
    Y = jnp.where(p.observed & jnp.isfinite(Y), Y, 0.0)  # failures are caught by the caller
    sw = jnp.sqrt(p.w)[:, None]
    A = sw * (U[1:] - mh)  # (k, n), AᵀA = Ĉ
    half = jnp.sqrt(jnp.asarray(0.5, mh.dtype))  # Σ_ν = 2Γ (and 2C_0)
    S = jnp.where(p.observed, p.noise.whiten(sw * (Y[1:] - Y[0])), 0.0) * half
    d = jnp.where(p.observed, p.noise.whiten(p.y - Y[0]), 0.0) * half
    if p.impose_prior:  # whiten [θ^j - m̂ | r_0 - m̂] by C_0 in one triangular solve
        P = jsl.solve_triangular(p.L0, jnp.concatenate([A.T, (p.m0 - mh)[:, None]], 1), lower=True)
        S = jnp.concatenate([S, P[:, :-1].T * half], axis=1)
        d = jnp.concatenate([d, P[:, -1] * half])
    k, q = S.shape
    if q < k:  # push-through: (I_k + SSᵀ)^{-1}S = S(I_q + SᵀS)^{-1}, a q×q solve
        cf = jsl.cho_factor(jnp.eye(q, dtype=S.dtype) + S.T @ S, lower=True)
        B = S.T @ A
        Z = jsl.cho_solve(cf, jnp.concatenate([d[:, None], B], axis=1))
        inc = A.T @ (S @ Z[:, 0])
        C = A.T @ A - B.T @ Z[:, 1:]
    else:
        cf = jsl.cho_factor(jnp.eye(k, dtype=S.dtype) + S @ S.T, lower=True)
        Z = jsl.cho_solve(cf, jnp.concatenate([(S @ d)[:, None], A], axis=1))
        inc = A.T @ Z[:, 0]
        C = A.T @ Z[:, 1:]
    return mh + inc, 0.5 * (C + C.T)


def _change(p: _UKIProblem, m_new, m, C_new, C):
    dm = jnp.sqrt(jnp.mean(((m_new - m) / p.sigma0) ** 2))
    dC = jnp.max(jnp.abs(C_new - C) / jnp.outer(p.sigma0, p.sigma0))
    return jnp.maximum(dm, dC)


class _UKICarry(NamedTuple):
    i: Array  # updates made
    m: Array
    C: Array
    Lam: Array  # Λ of Σ_ω = (2 - α²)Λ
    history: UKIHistory
    converged: Array
    failed: Array


def _uki_start(p: _UKIProblem) -> _UKICarry:
    n1 = p.max_steps + 1
    nan = jnp.full((n1,), jnp.nan, p.m0.dtype)
    spread0 = jnp.sqrt(jnp.mean(jnp.diagonal(p.C0)))
    hist = UKIHistory(nan, nan.at[0].set(spread0), nan)
    false = jnp.array(False)
    return _UKICarry(jnp.array(0, jnp.int32), p.m0, p.C0, p.C0, hist, false, false)


def _uki_running(p: _UKIProblem, c: _UKICarry):
    return (c.i < p.max_steps) & ~c.converged & ~c.failed


def _uki_lambda(p: _UKIProblem, c: _UKICarry):
    """``Λ`` for update ``i + 1``: reset to ``C_i`` every ``update_freq`` updates."""
    if p.update_freq == 0:
        return c.Lam
    return jnp.where((c.i + 1) % p.update_freq == 0, c.C, c.Lam)


def _uki_propose(p: _UKIProblem, c: _UKICarry):
    """The sigma points of the next update (and its prediction)."""
    return _sigma_points(p, c.m, c.C, _uki_lambda(p, c))


def _uki_accept(p: _UKIProblem, c: _UKICarry, mh, ok_pts, U, Y) -> _UKICarry:
    """Analysis from the sigma predictions ``Y``; on failure keep the state and stop."""
    m_new, C_new = _analysis(p, mh, U, Y)
    ok = (
        ok_pts
        & jnp.all(_finite_rows(p, Y))
        & jnp.all(jnp.isfinite(m_new))
        & jnp.all(jnp.isfinite(C_new))
    )
    step = _change(p, m_new, c.m, C_new, c.C)
    i1 = c.i + 1
    h = c.history
    misfit = h.misfit.at[c.i].set(_misfit(p, Y[0]))
    spread = jnp.where(ok, h.spread.at[i1].set(jnp.sqrt(jnp.mean(jnp.diagonal(C_new)))), h.spread)
    steps = jnp.where(ok, h.step.at[i1].set(step), h.step)
    converged = ok & (step <= p.tol) if p.use_tol else jnp.array(False)
    return _UKICarry(
        jnp.where(ok, i1, c.i),
        jnp.where(ok, m_new, c.m),
        jnp.where(ok, C_new, c.C),
        _uki_lambda(p, c),
        UKIHistory(misfit, spread, steps),
        converged,
        ~ok,
    )


def _uki_finish(p: _UKIProblem, c: _UKICarry, y_final) -> UKIResult:
    """Assemble the result from the final carry and ``G(T(m))`` at the final mean."""
    bad_final = ~_finite_rows(p, y_final)
    h = c.history
    history = UKIHistory(h.misfit.at[c.i].set(_misfit(p, y_final)), h.spread, h.step)
    status = jnp.where(
        c.failed | bad_final,
        Status.NONFINITE,
        jnp.where(c.converged, Status.SUCCESS, Status.MAX_STEPS if p.use_tol else Status.SUCCESS),
    )
    return UKIResult(
        p.unravel(c.m),
        c.C,
        p.unravel(p.to_theta(c.m)),
        y_final,
        history,
        c.i,
        status_array(status),
        c.converged,
    )


# --------------------------------------------------------------------------- UKI
@catch_not_traceable("forward", "the forward model")
def uki(
    forward: Callable[[PyTree], Float[Array, " m"]],
    prior_mean: PyTree,
    prior_cov: Float[Array, "n n"],
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    mask: Bool[Array, " m"] | None = None,
    max_steps: int = 50,
    alpha_reg: float = 1.0,
    update_freq: int | None = None,
    impose_prior: bool = True,
    sigma_points: str = "symmetric",
    transform: Transform | None = None,
    tol: float | None = 1e-6,
    throw: bool = False,
) -> UKIResult:
    r"""Unscented Kalman inversion (Huang, Schneider & Stuart 2022).

    Iterates the unscented Kalman filter on ``θ_{k+1} = r + α(θ_k - r) + ω``,
    ``y = G(θ) + ν`` (``Σ_ω = (2-α²)Λ``, ``Σ_ν = 2Γ``) with the modified unscented
    transform; by default (``impose_prior=True``) with the data augmented by the prior,
    ``[G(θ); θ] ≈ [y; r_0]`` with noise ``2·blockdiag(Γ, C_0)``, whose fixed point for a
    linear ``G`` is the exact Gaussian posterior. See the module docstring for the
    update, the choice of the free parameters and the handling of failures.

    Deterministic (no key). The loop is a ``lax.while_loop``: jit-able and vmappable
    (close over per-problem data); not reverse-mode differentiable.

    Args:
        forward: ``G(θ) -> (m,)`` for **one** parameter vector (a pytree like
            ``prior_mean``), vmapped over the ``2n + 1`` (``n + 2``) sigma points.
        prior_mean: prior / initial mean ``r_0 = m_0`` (``(n,)`` vector or pytree; with a
            ``transform``, in the unconstrained ``u``).
        prior_cov: prior / initial covariance ``C_0``, ``(n, n)`` symmetric positive
            definite, flat parameter order.
        y: data ``(m,)``; ``nan`` entries are not observed.
        noise: observation noise object (:func:`jaxda.observations.gaussian_noise`),
            or give ``obs_std`` (θ, scalar or ``(m,)``) or ``obs_cov`` (``Γ``).
        mask: optional ``(m,)`` booleans, ``False`` = not observed.
        max_steps: bound on the number of updates.
        alpha_reg: ``α ∈ (0, 1]`` (``1``: no shrinkage towards the prior mean); must be 1
            with ``impose_prior``.
        update_freq: ``Λ = C_k`` reset every ``update_freq`` updates (``0``: ``Λ = C_0``);
            ``None`` = 1 with ``impose_prior``, 0 without.
        impose_prior: augment the data with the prior (the Bayesian setting).
        sigma_points: ``"symmetric"`` (``2n + 1`` points) or ``"simplex"`` (``n + 2``).
        transform: optional :class:`jaxda.core.Transform`; ``forward`` sees
            ``transform.forward(u)``.
        tol: stop when the change of an update (in prior standard deviations) is
            ``<= tol``; ``None`` runs exactly ``max_steps`` updates.
        throw: raise when ``status`` is not ``SUCCESS`` (see
            :func:`jaxda.core.raise_on_failure`).

    Returns:
        :class:`UKIResult` (mean, cov, constrained_mean, predictions, history, n_steps,
        status, converged).

    Examples:
        A linear problem: the result is the exact Gaussian posterior.

        >>> import jax.numpy as jnp
        >>> from jaxda.ensemble import linear_gaussian_posterior
        >>> G = jnp.array([[1.0, 0.5], [0.0, 1.0], [1.0, 1.0]])
        >>> y = jnp.array([1.0, 2.0, 3.0])
        >>> out = uki(lambda u: G @ u, jnp.zeros(2), jnp.eye(2), y, obs_std=0.5, tol=1e-10)
        >>> mean, cov = linear_gaussian_posterior(G, y, 0.25 * jnp.eye(3), jnp.zeros(2),
        ...                                       jnp.eye(2))
        >>> int(out.status), bool(jnp.allclose(out.mean, mean)), bool(jnp.allclose(out.cov, cov))
        (0, True, True)

        A positive parameter through :func:`jaxda.core.positive` (``θ = exp(u)``):

        >>> from jaxda.core import positive
        >>> out = uki(lambda th: jnp.array([th[0], th[0] ** 2]), jnp.zeros(1), jnp.eye(1),
        ...           jnp.array([2.0, 4.0]), obs_std=0.1, transform=positive())
        >>> round(float(out.constrained_mean[0]), 1)
        2.0
    """
    _check_callable(forward)
    _check_bool(throw, "throw")
    p = _uki_setup(
        prior_mean, prior_cov, y, noise, obs_std, obs_cov, mask, max_steps, alpha_reg,
        update_freq, impose_prior, sigma_points, transform, tol,
    )  # fmt: skip

    result = _uki_run(forward, p)
    return raise_on_failure(result) if throw else result


@eqx.filter_jit
def _uki_run(forward: Callable, p: _UKIProblem) -> UKIResult:
    """The UKI loop and the final evaluation, compiled as one program."""

    def body(c: _UKICarry) -> _UKICarry:
        mh, ok, U = _uki_propose(p, c)
        return _uki_accept(p, c, mh, ok, U, _evaluate(forward, p, U))

    out = jax.lax.while_loop(lambda c: _uki_running(p, c), body, _uki_start(p))
    return _uki_finish(p, out, _evaluate(forward, p, out.m[None])[0])


# --------------------------------------------------------------------------- ask / tell
class UKIState(eqx.Module):
    """State of an ask/tell UKI run (:func:`uki_init`); advance it with :func:`uki_tell`.

    Attributes:
        mean: ``(n,)`` flat current mean ``m_k`` (``u``).
        cov: ``(n, n)`` current covariance ``C_k``.
        points: the ``u``-space points to evaluate next: the ``(J, n)`` sigma points while
            updates remain, then the ``(1, n)`` final mean.
        n_steps: number of updates made.
        final: ``True`` once the updates are over and only ``G`` at the final mean is asked.
        done: ``True`` when nothing is left to evaluate; then call :func:`uki_result`.
    """

    problem: _UKIProblem
    carry: _UKICarry
    mh: Float[Array, " n"]
    ok_points: Bool[Array, ""]
    points: Float[Array, "J n"]
    final: bool = eqx.field(static=True)
    done: bool = eqx.field(static=True)
    result: UKIResult | None = None

    @property
    def mean(self) -> Array:
        return self.carry.m

    @property
    def cov(self) -> Array:
        return self.carry.C

    @property
    def n_steps(self) -> Array:
        return self.carry.i


def uki_init(
    prior_mean: PyTree,
    prior_cov: Float[Array, "n n"],
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    mask: Bool[Array, " m"] | None = None,
    max_steps: int = 50,
    alpha_reg: float = 1.0,
    update_freq: int | None = None,
    impose_prior: bool = True,
    sigma_points: str = "symmetric",
    transform: Transform | None = None,
    tol: float | None = 1e-6,
) -> UKIState:
    r"""Start an ask/tell UKI run (the arguments of :func:`uki` without the forward model).

    For simulators that must drive the loop themselves (an external program, a job queue):

    .. code-block:: python

        state = uki_init(prior_mean, prior_cov, y, obs_std=theta)
        while not state.done:
            theta = uki_ask(state)  # (J, n) constrained points to evaluate
            state = uki_tell(state, my_simulator(theta))  # (J, m) predictions
        result = uki_result(state)  # the UKIResult that uki() returns

    :func:`uki_tell` runs the same code as :func:`uki` (same prediction, analysis,
    stopping rule and status), so with a simulator computing the same ``G`` the result is
    the same to round-off. The last ask is the single final mean (one row).

    Examples:
        >>> import jax.numpy as jnp
        >>> state = uki_init(jnp.zeros(2), jnp.eye(2), jnp.array([1.0, 2.0]), obs_std=0.5)
        >>> uki_ask(state).shape
        (5, 2)
    """
    p = _uki_setup(
        prior_mean, prior_cov, y, noise, obs_std, obs_cov, mask, max_steps, alpha_reg,
        update_freq, impose_prior, sigma_points, transform, tol,
    )  # fmt: skip
    c = _uki_start(p)
    mh, ok, U = _uki_propose(p, c)
    return UKIState(p, c, mh, ok, U, final=False, done=False)


def uki_ask(state: UKIState) -> Float[Array, "J n"]:
    """The constrained parameter vectors ``T(u)`` to evaluate next, one per row (flat order).

    ``(J, n)`` sigma points (``J = 2n + 1`` or ``n + 2``, centre first) while updates
    remain, then ``(1, n)``: the final mean. Raises ``ValueError`` when the run is done.

    Examples:
        >>> import jax.numpy as jnp
        >>> state = uki_init(jnp.zeros(1), jnp.eye(1), jnp.array([1.0]), obs_std=0.5,
        ...                  sigma_points="simplex")
        >>> uki_ask(state).shape
        (3, 1)
    """
    if not isinstance(state, UKIState):
        raise TypeError(f"state must be a UKIState (uki_init), got {type(state).__name__}")
    if state.done:
        raise ValueError("the run is finished; call uki_result(state)")
    return jax.vmap(state.problem.to_theta)(state.points)


@eqx.filter_jit
def _tell_update(state: UKIState, Y: Array):
    p, c = state.problem, state.carry
    c = _uki_accept(p, c, state.mh, state.ok_points, state.points, Y)
    mh, ok, U = _uki_propose(p, c)
    return c, mh, ok, U, _uki_running(p, c)


_tell_finish = eqx.filter_jit(_uki_finish)


def uki_tell(state: UKIState, predictions: Float[Array, "J m"]) -> UKIState:
    """Feed ``G`` of the asked points (``(J, m)``, a row per point, ``nan`` = failed run)
    and advance the run: one UKI update, or the final evaluation.

    Examples:
        >>> import jax.numpy as jnp
        >>> state = uki_init(jnp.zeros(1), jnp.eye(1), jnp.array([1.0]), obs_std=0.5,
        ...                  max_steps=3, tol=None)
        >>> while not state.done:
        ...     state = uki_tell(state, 2.0 * uki_ask(state))
        >>> int(uki_result(state).n_steps)
        3
    """
    if not isinstance(state, UKIState):
        raise TypeError(f"state must be a UKIState (uki_init), got {type(state).__name__}")
    if state.done:
        raise ValueError("the run is finished; call uki_result(state)")
    p = state.problem
    Y = jnp.asarray(predictions)
    expected = (state.points.shape[0], p.y.shape[0])
    if Y.shape != expected:
        raise ValueError(
            f"uki_tell expects predictions of shape {expected} (one row per asked point), "
            f"got {Y.shape}"
        )
    if not (jnp.issubdtype(Y.dtype, jnp.inexact) or jnp.issubdtype(Y.dtype, jnp.integer)):
        raise TypeError(f"predictions must be numeric, got dtype {Y.dtype}")
    Y = Y.astype(p.m0.dtype)
    if state.final:
        result = _tell_finish(p, state.carry, Y[0])
        return UKIState(p, state.carry, state.mh, state.ok_points, state.points, True, True, result)
    c, mh, ok, U, running = _tell_update(state, Y)
    if bool(running):
        return UKIState(p, c, mh, ok, U, final=False, done=False)
    return UKIState(p, c, c.m, jnp.array(True), c.m[None], final=True, done=False)


def uki_result(state: UKIState) -> UKIResult:
    """The :class:`UKIResult` of a finished ask/tell run (``state.done``).

    Examples:
        >>> import jax.numpy as jnp
        >>> state = uki_init(jnp.zeros(1), jnp.eye(1), jnp.array([1.0]), obs_std=1.0)
        >>> while not state.done:
        ...     state = uki_tell(state, uki_ask(state))
        >>> [round(v, 3) for v in uki_result(state).mean.tolist()]
        [0.5]
    """
    if not isinstance(state, UKIState):
        raise TypeError(f"state must be a UKIState (uki_init), got {type(state).__name__}")
    if not state.done or state.result is None:
        raise ValueError("the run is not finished: keep calling uki_ask / uki_tell")
    return state.result
