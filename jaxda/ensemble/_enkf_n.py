r"""Finite-size ensemble Kalman filter (EnKF-N): the inflation is estimated at every analysis.

The EnKF-N (Bocquet 2011) does not trust the ensemble's sample covariance as the forecast
covariance ``B``: it integrates over the unknown ``B`` (and mean) under a Jeffreys hyperprior,
which turns the Gaussian prior of the ETKF into a Student-like prior in ensemble space. Its
analysis is the ETKF's applied to anomalies inflated by a factor ``l`` that the filter finds
itself from the innovation, so no inflation scan is needed in a perfect-model setting.

**Dual form** (Bocquet, Raanes & Hannart 2015). With whitened scaled observation anomalies
``S`` (``N×m``, :mod:`jaxda.ensemble._core`'s notation), the whitened innovation ``d`` of the
forecast mean, ``N₁ = N - 1`` and ``ζ = N₁/l²``, the inflation solves the scalar problem

.. math::
    \min_{ζ>0}\; D(ζ) = \tfrac12\, dᵀ\big(I_m + N₁ SᵀS/ζ\big)^{-1} d
        + \tfrac12\, ε_N\, ζ - \tfrac12\, N₁ c_L \log ζ .

With the eigen-decomposition ``SSᵀ = V Λ Vᵀ`` and ``b = Vᵀ S d``, Woodbury gives
``dᵀ(I + N₁SᵀS/ζ)^{-1}d = |d|² - N₁ Σ_i b_i²/(ζ + N₁λ_i)``, an ``O(N)`` function of ``ζ`` once
``V`` is known (the ``m×m`` problem ``SᵀS`` is used instead when ``m < N``). The hyperprior
constants are ``ε_N = (N+1)/N`` (the unknown mean) and ``c_L = (N+g)/N₁`` (``g`` null modes),
then *mode-corrected* as in DAPPER (Bocquet et al. 2015, eq. 36): with
``π = ε_N/c_L`` (the prior mode of ``l²``) and the prior weight
``κ = mean_i 1/(1+λ_i) ≈ tr(I - KH)/N``, ``ε_N ← ε_N/√(π^κ)`` and ``c_L ← c_L √(π^κ)``, so
that the mode is ``π^{1-κ}``: ``l = 1`` when nothing is observed. ``xN`` multiplies both
constants (DAPPER's ``xN``: a sharper hyperprior; ``xN → ∞`` pins ``l²`` at the corrected prior
mode and the EnKF-N becomes an ETKF with that fixed inflation).

``D'(ζ) < 0`` near ``0`` and ``D'(ζ) > 0`` beyond ``ζ_hi = N₁c_L/ε_N`` (``l²`` is never below
the corrected prior mode), so a minimiser is bracketed; it is found by Newton's method on
``D'`` in ``log ζ``, safeguarded by bisection (a step leaving the bracket or a non-positive
curvature bisects), in a ``lax.while_loop``. A bracket that does not close within
``max_steps`` reports ``Status.MAX_STEPS``.

**Posterior transform.** With the inflated anomalies ``S ← lS``: the symmetric square-root
ETKF, ``w = (I + l²SSᵀ)^{-1} l S d``, ``T = (I + l²SSᵀ)^{-1/2}``, ``E^a = x̄ + wᵀ lX + T lA``.
With ``hessian_correction=True`` (DAPPER's ``Hess``) ``T`` is the inverse square root of the
full Hessian of the primal cost including the radial-angular coupling,
``H_w = I + l²SSᵀ - 2 w̃w̃ᵀ/(ε_N + w̃ᵀw̃)`` with ``w̃ = w/√N₁`` (an ``N×N`` eigen-problem;
``H_w`` is positive definite at a minimum of the primal cost, its eigenvalues are floored at
machine epsilon against round-off).

References:
    Bocquet (2011), *Nonlin. Processes Geophys.* 18, 735-750;
    Bocquet, Raanes & Hannart (2015), *Nonlin. Processes Geophys.* 22, 645-662;
    Raanes, Bocquet & Carrassi (2019), *Q. J. R. Meteorol. Soc.* 145;
    DAPPER ``da_methods.ensemble.EnKF_N`` (Raanes et al.).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core import (
    EnsembleState,
    Method,
    Status,
    analysis_info,
    check_ensemble,
    check_vector,
    ensemble_init,
    first_failure,
)
from ..observations import ObservationModel, observed
from ._core import innovation_spectrum, mean_and_anomalies, obs_space


class EnKFNInfo(NamedTuple):
    """Per-cycle diagnostics of :func:`enkf_n`.

    Attributes:
        n_obs: number of observations used.
        status: ``SUCCESS``; ``MAX_STEPS`` if the scalar minimisation did not converge;
            ``NONFINITE`` if the analysis is not finite.
        inflation: the anomaly inflation factor ``l`` applied to the forecast (``1`` when
            nothing is observed).
    """

    n_obs: Int[Array, ""]
    status: Int[Array, ""]
    inflation: Float[Array, ""]


class _Spectrum(NamedTuple):
    lam: Array  # eigenvalues of S Sᵀ (N×N case) or SᵀS (m×m case), clipped at 0
    vecs: Array  # their eigenvectors (N×N or m×m)
    q: Array  # weights of the dual cost: Σ q_i/(ζ + N₁λ_i) (q_i = (vᵢᵀ S d)²)
    kappa: Array  # prior weight mean_{N} 1/(1+λ_i) ≈ tr(I - KH)/N


def _spectrum(S: Array, d: Array) -> _Spectrum:
    N, m = S.shape
    lam, vecs, q = innovation_spectrum(S, d)
    # the m×m problem lacks the N - m unit eigenvalues of I + SSᵀ
    kappa = (jnp.sum(1.0 / (1.0 + lam)) + max(N - m, 0)) / N
    return _Spectrum(lam, vecs, q, kappa)


def hyperprior_constants(
    n_members: int, kappa: Array | float, xN: float | Array = 1.0, g: int = 0
) -> tuple[Array, Array]:
    r"""The EnKF-N hyperprior constants ``(ε_N, c_L)`` after DAPPER's mode correction.

    ``ε_N = (N+1)/N``, ``c_L = (N+g)/(N-1)``; with the prior mode ``π = ε_N/c_L`` of ``l²``
    and the prior weight ``κ ∈ (0, 1]`` (``mean_i 1/(1+λ_i)``, ``λ`` the eigenvalues of
    ``SSᵀ`` padded to ``N``): ``ε_N ← xN ε_N/√(π^κ)``, ``c_L ← xN c_L √(π^κ)``, so the corrected
    mode ``ε_N/c_L = π^{1-κ}`` is ``1`` without observations (``κ = 1``).

    Examples:
        >>> eN, cL = hyperprior_constants(10, 1.0)
        >>> round(float(eN / cL), 12)
        1.0
    """
    N = n_members
    eN = (N + 1.0) / N
    cL = (N + g) / (N - 1.0)
    mode = eN / cL
    mc = jnp.sqrt(mode ** jnp.asarray(kappa))
    return xN * eN / mc, xN * cL * mc


def _dual_solve(sp: _Spectrum, N: int, eN, cL, max_steps: int, dtype):
    """Minimiser ``ζ`` of the dual cost: safeguarded Newton on ``D'`` in ``t = log ζ``."""
    N1 = N - 1.0
    lam, q = sp.lam, sp.q
    a = N1 * cL  # N + g, corrected

    def fprime(z):  # 2 D'(ζ) and its ζ-derivative
        den = z + N1 * lam
        f = N1 * jnp.sum(q / den**2) + eN - a / z
        fp = -2.0 * N1 * jnp.sum(q / den**3) + a / z**2
        return f, fp

    z_hi = a / eN  # D' > 0 beyond: l² >= corrected prior mode
    # D' <= Σ q/(N₁λ²) + ε_N - a/ζ on the range of S: negative below this ζ_lo
    pos = lam > jnp.finfo(dtype).eps * jnp.maximum(jnp.max(lam), 1.0)
    c = jnp.sum(jnp.where(pos, q / (N1 * jnp.where(pos, lam, 1.0) ** 2), 0.0))
    z_lo = jnp.maximum(a / (eN + c), z_hi * 1e-12)
    t_lo, t_hi = jnp.log(z_lo), jnp.log(z_hi)
    t0 = jnp.clip(jnp.log(N1), t_lo, t_hi)  # start at l = 1 (DAPPER's start)
    eps = jnp.finfo(dtype).eps
    tol = max(1e-10, 100.0 * float(eps))

    def cond(carry):
        i, _, _, _, done = carry
        return (i < max_steps) & ~done

    def body(carry):
        i, t, lo, hi, _ = carry
        z = jnp.exp(t)
        f, fp = fprime(z)
        lo = jnp.where(f < 0, t, lo)
        hi = jnp.where(f > 0, t, hi)
        g, gp = z * f, z * f + z**2 * fp  # d/dt of D' ζ (same sign as D')
        newton = t - g / jnp.where(gp > 0, gp, 1.0)
        ok = (gp > 0) & (newton > lo) & (newton < hi)
        t_new = jnp.where(f == 0, t, jnp.where(ok, newton, 0.5 * (lo + hi)))
        done = (jnp.abs(t_new - t) < tol) | (hi - lo < tol)
        return i + 1, t_new, lo, hi, done

    init = (jnp.asarray(0), t0, t_lo, t_hi, jnp.asarray(False))
    _, t, _, _, done = jax.lax.while_loop(cond, body, init)
    return jnp.exp(t), done


def enkf_n_analysis(
    ensemble: Float[Array, "N n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    *,
    xN: float | Array = 1.0,
    g: int = 0,
    hessian_correction: bool = False,
    max_steps: int = 100,
) -> tuple[Float[Array, "N n"], EnKFNInfo]:
    r"""One EnKF-N analysis (dual form, symmetric square root); returns ``(E^a, info)`` with the
    inflation ``l`` it applied in ``info.inflation``.

    ``NaN`` in ``y`` marks a missing observation, which drops out (nothing observed: ``l = 1``
    and ``E^a = E``). See the module docstring for the cost, the hyperprior and its options.

    Args:
        ensemble: forecast ensemble ``(N, n)``, ``N >= 2``.
        y: observations ``(m,)``.
        obs: observation model.
        xN: hyperprior sharpness (DAPPER's ``xN``, ``> 0``; ``1`` is the agnostic Jeffreys
            prior, larger values trust the ensemble spread more).
        g: number of null modes of the anomalies (``>= 0``; DAPPER's default ``0``).
        hessian_correction: use the full primal Hessian (radial-angular coupling) in the
            transform (DAPPER's ``Hess``).
        max_steps: iterations of the scalar solver.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(3), obs_std=1.0)
        >>> E = jax.random.normal(jax.random.key(0), (10, 3))
        >>> Ea, info = enkf_n_analysis(E, jnp.full(3, 5.0), obs)
        >>> Ea.shape, bool(info.inflation > 1.0)     # a large innovation inflates
        ((10, 3), True)
    """
    check_ensemble(ensemble)
    check_vector(y, "y", obs.dim)
    _check_options(xN, g, hessian_correction, max_steps)
    dtype = ensemble.dtype
    N = ensemble.shape[0]
    N1 = N - 1.0
    mean, A = mean_and_anomalies(ensemble)
    os = obs_space(ensemble, obs, y)
    S = os.S.astype(dtype)
    d = os.innovation(y).astype(dtype)
    mask = observed(y)
    n_obs = jnp.sum(mask)

    sp = _spectrum(S, d)
    eN, cL = hyperprior_constants(N, sp.kappa, xN, g)
    zeta, converged = _dual_solve(sp, N, eN, cL, max_steps, dtype)
    l2 = jnp.where(n_obs > 0, N1 / zeta, 1.0)
    converged = converged | (n_obs == 0)
    infl = jnp.sqrt(l2)

    lam, vecs = sp.lam, sp.vecs
    m = S.shape[1]
    lA = infl * A
    if m < N:  # m×m eigen-problem: w = lS U (Uᵀd)/(1+l²λ), T = I + l² SU g(l²λ) (SU)ᵀ
        SU = S @ vecs
        w = infl * (SU @ ((vecs.T @ d) / (1.0 + l2 * lam)))
        r = jnp.sqrt(1.0 + l2 * lam)
        g_lam = -1.0 / (r * (1.0 + r))
        # T lA without forming the N×N T: O(N m n)
        TlA = lA + l2 * (SU @ (g_lam[:, None] * (SU.T @ lA)))
    else:
        w = infl * (vecs @ ((vecs.T @ (S @ d)) / (1.0 + l2 * lam)))
        TlA = ((vecs * jax.lax.rsqrt(1.0 + l2 * lam)) @ vecs.T) @ lA
    if hessian_correction:
        wt = w / jnp.sqrt(N1)
        Hw = jnp.eye(N, dtype=dtype) + l2 * (S @ S.T) - 2.0 * jnp.outer(wt, wt) / (eN + wt @ wt)
        mu, W = jnp.linalg.eigh(Hw)
        # At the minimum the Hessian is positive definite; guard round-off only.
        mu = jnp.maximum(mu, jnp.finfo(dtype).eps)
        TlA = ((W * jax.lax.rsqrt(mu)) @ W.T) @ lA
    mean_a = mean + (w @ lA) / jnp.sqrt(N1)
    Ea = (mean_a + TlA).astype(dtype)
    base = analysis_info(Ea, mask)
    status = first_failure(
        base.status, jnp.where(converged, Status.SUCCESS, Status.MAX_STEPS).astype(jnp.int32)
    )
    return Ea, EnKFNInfo(base.n_obs, status, infl.astype(dtype))


def _check_options(xN, g, hessian_correction, max_steps) -> None:
    from ..core import is_concrete

    if is_concrete(xN):
        v = float(xN)
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"xN must be positive and finite, got {xN!r}")
    if isinstance(g, bool) or not isinstance(g, int) or g < 0:
        raise ValueError(f"g (number of null modes) must be an int >= 0, got {g!r}")
    if not isinstance(hessian_correction, bool):
        raise ValueError(f"hessian_correction must be a bool, got {hessian_correction!r}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")


def enkf_n(
    *,
    xN: float = 1.0,
    g: int = 0,
    hessian_correction: bool = False,
    max_steps: int = 100,
) -> Method:
    r"""The finite-size EnKF (EnKF-N, dual form) as a :class:`jaxda.core.Method`.

    Every analysis estimates its own inflation (:func:`enkf_n_analysis`, reported per cycle in
    ``info.inflation``), so a perfect-model run needs no inflation scan. Deterministic: the key
    is unused (wrap it with :func:`jaxda.assimilate.with_rotation` for DAPPER's ``rot=True``).
    Options as DAPPER's ``EnKF_N(N, xN=1, g=0, Hess=False)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> method = enkf_n()
        >>> obs = observation_model(identity(2), obs_std=1.0)
        >>> state = method.init(jax.random.normal(jax.random.key(0), (5, 2)))
        >>> state, info = method.step(jax.random.key(1), state, jnp.zeros(2), obs)
        >>> state.ensemble.shape, int(info.status), bool(info.inflation > 0)
        ((5, 2), 0, True)
    """
    _check_options(xN, g, hessian_correction, max_steps)

    def step(key, state, y, obs):
        del key
        Ea, info = enkf_n_analysis(
            state.ensemble,
            y,
            obs,
            xN=xN,
            g=g,
            hessian_correction=hessian_correction,
            max_steps=max_steps,
        )
        return EnsembleState(Ea), info

    return Method(ensemble_init, step)
