r"""Ensemble score filter (EnSF): a training-free diffusion analysis step.

Bao, Zhang & Zhang (2024), *An ensemble score filter for tracking high-dimensional nonlinear
dynamical systems*, CMAME 432, 117447 (arXiv:2309.00983).

The forecast ensemble ``{x_0^{(j)}}`` is diffused with ``x_t = α(t)x_0 + σ(t)ε``,
``α(t) = 1 - (1-ε_α)t``, ``σ(t)² = ε_β + (1-ε_β)t`` (:func:`ensf_sde`). Its score is estimated
**without training** from the ensemble itself, then the likelihood score, damped by
``h(t) = 1 - t``, is added and the reverse SDE is integrated from ``t = 1``
(``x_1 ~ N(0, I)``) to ``t = 0`` with Euler–Maruyama:

.. math::
    s(x, t) = \underbrace{-\sum_j w_j(x, t)\,\frac{x - α(t) x_0^{(j)}}{σ(t)^2}}_{\text{prior score}}
        + h(t)\, \nabla_x \log p(y \mid x),\qquad
    \nabla_x \log p(y\mid x) = J_H(x)^\top R^{-1}(y - H(x)).

``prior_score="paired"`` (default) pairs member ``i`` with its own forecast (``w_j = δ_{ij}``),
as in the authors' code: ``O(N n)`` per step. Each member is then drawn from a Gaussian kernel
of variance ``σ(0)² = ε_β`` around its forecast, tilted by the damped likelihood, so ``ε_β``
acts like a per-member prior variance (and, without observations, as additive inflation:
``x^a = x^f + N(0, ε_β I)``, checked in ``tests/test_diffusion_ensf.py``). With the paper's
``ε_β = 0`` the ``1/t`` prior score dominates the damped likelihood as ``t → 0`` and members
hardly move; the authors' later code and tuning use ``ε_β > 0`` (``0.025`` on Lorenz-96 with
arctan observations, reproduced in ``benchmarks/bench_ensf_l96.py``). ``ε_β`` is a
problem-dependent tuning parameter, like inflation.

``prior_score="mixture"`` uses the Monte-Carlo weights ``w_j ∝ \exp(-\lVert x -
α x_0^{(j)}\rVert^2 / 2σ^2)`` of the paper (Eq. 3.9), ``O(N² n)``; with few members in many
dimensions the weights degenerate onto the nearest member. Both are approximations of the
Bayesian update.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ..core import (
    EnsembleState,
    Method,
    Status,
    analysis_info,
    check_in_range,
    check_vector,
    ensemble_init,
)
from ..observations import observed, whitened_residual
from ._sde import SDE

_LOG_GROWTH_LIMIT = 2.302585092994046  # log 10: unstable steps amplified a perturbation 10x


def ensf_sde(eps_alpha: float = 0.05, eps_beta: float = 0.0) -> SDE:
    r"""The EnSF forward SDE: ``μ(t) = 1 - (1-ε_α)t``, ``σ(t)² = ε_β + (1-ε_β)t``,
    ``f = d\log μ/dt = -(1-ε_α)/μ``, ``g² = dσ²/dt - 2fσ² = (1-ε_β) - 2fσ²``.

    ``ε_β = 0`` is the schedule of the paper; ``ε_β > 0`` keeps ``σ(0)² = ε_β`` so the
    paired prior score ``-(x - μx_0^{(i)})/σ²`` stays bounded at ``t = 0`` (the authors' later
    code, see :func:`ensf`)."""
    check_in_range("eps_alpha", eps_alpha, 0.0, 1.0, closed_low=False)
    check_in_range("eps_beta", eps_beta, 0.0, 1.0, closed_high=False)
    c = 1.0 - eps_alpha
    b = 1.0 - eps_beta

    def drift(t):
        return -c / (1.0 - c * t)

    def var(t):
        return eps_beta + b * t

    return SDE(
        name="ensf",
        log_mean=lambda t: jnp.log1p(-c * t),
        std=lambda t: jnp.sqrt(var(t)),
        drift=drift,
        diffusion=lambda t: jnp.sqrt(b - 2.0 * drift(t) * var(t)),
        t_min=0.0,
    )


def ensf(
    *,
    n_steps: int = 200,
    eps_alpha: float = 0.5,
    eps_beta: float = 0.025,
    prior_score: str = "paired",
    damping: Callable[[Array], Array] | None = None,
    standardize: bool = False,
) -> Method:
    r"""The EnSF as a :class:`jaxda.core.Method` (the observation operator may be nonlinear).

    Missing observations (``NaN``) drop out of the likelihood score; a time with no
    observation leaves the forecast unchanged (no kernel jitter).

    Args:
        n_steps: Euler–Maruyama steps of the reverse SDE (pseudo-time ``1 → 0``).
        eps_alpha: ``μ(1) = ε_α``. The reverse SDE starts from ``N(0, I)``, not from the exact
            terminal law ``N(ε_α x_0, I)``; a large ``ε_α`` therefore also shrinks members
            towards 0 a little, which the authors' tuning exploits.
        eps_beta: ``σ(0)² = ε_β`` (:func:`ensf_sde`): with ``prior_score="paired"`` the
            variance of the kernel around each forecast member, i.e. how far the likelihood
            may pull a member. ``0`` is the paper's schedule.
        prior_score: ``"paired"`` or ``"mixture"`` (see module docstring).
        damping: ``h(t)`` multiplying the likelihood score (default ``1 - t``).
        standardize: run the diffusion on the forecast ensemble standardized per component,
            ``z = (x - \bar x^f)/s^f``, so that ``ε_β`` is a fraction of the forecast variance
            rather than an absolute variance (a jaxda option, not in the paper). The kernel
            jitter then acts as additive inflation of ``ε_β`` times the forecast variance where
            the data are uninformative: good with observations every 0.1 time units or more,
            divergent on the authors' every-step (dt = 0.005) problem
            (``benchmarks/bench_ensf_l96.py --problem legacy``). Kernel-centre shrinkage
            (Liu & West 2001), which removes that inflation, made the filter lose track in
            every setup tried.

    The defaults (200 steps, ``ε_α = 0.5``, ``ε_β = 0.025``, paired) are the best setting of
    the authors' published tuning grid for Lorenz-96 with ``arctan`` observations
    (σ = 0.05). Other problems need another ``ε_β``: with ``R = I`` on the Sakov Lorenz-96
    setup ``0.15`` gives 0.43 RMSE and ``0.025`` 1.2–1.4; the CLI uses
    ``standardize=True`` with ``ε_β = 0.5`` on all its setups.

    **Not the Kalman analysis, even for a linear-Gaussian problem.** Each paired member is
    pulled by the likelihood only as far as its kernel variance ``ε_β`` allows, and the
    damped likelihood is evaluated at ``x_t``, not at the denoised state. Measured in one
    analysis (prior ``N(m, C)`` with unit variances in ``d = 8``, 1000 members, ``H`` 3 × 8,
    ``R = 0.5² I``): the defaults move the ensemble mean 31 % of the way to the Kalman
    analysis mean and leave the variance in the observed directions 3.5–7.6 × the Kalman
    analysis variance; ``ε_β = 0.5`` (or ``standardize=True, ε_β = 0.5``) 87 % (86 %) with
    variance ratios 0.85–1.23; the mixture score (``ε_α = 0.05, ε_β = 0``) 103 %, variances
    1.9–2.3 ×. With ``R = 0.05² I`` and 1000 steps the defaults move it 89 %, variances
    3.3–4.4 ×. Use an ensemble Kalman method when the problem is linear-Gaussian.

    **Stability.** The reverse SDE is integrated with explicit Euler–Maruyama steps, which are
    unstable where ``Δt g(t)² (1/σ(t)² + h(t) κ) + Δt f(t) ≥ 2``, ``κ`` the curvature of the
    log-likelihood (``‖Hᵀ R^{-1} H‖`` for a linear ``H``): sharp observations need many steps
    (on the problem above with ``R = 0.05² I``, 200 steps blow the ensemble up to 1e124, 1000
    are stable). Every step measures ``κ`` for free along the member's last move (secant of
    the likelihood score, a lower bound), so a step with ``b = Δt(g²(1/σ² + hκ) + f) > 2``
    multiplies some direction by at least ``b - 1``; an analysis in which these factors
    multiply to more than 10 for a member reports ``info.status = Status.DIVERGED`` (the
    ensemble is returned as computed). Lorenz-96 with ``arctan`` observations of std 0.05
    (60 analyses, 2 seeds): the defaults and the CLI's standardized setting are never flagged,
    the paper's schedule (100 steps, ``ε_β = 0``) in 10–11 of 60 analyses.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> method = ensf(n_steps=20)
        >>> obs = observation_model(identity(3), obs_std=0.5)
        >>> state = method.init(jax.random.normal(jax.random.key(0), (10, 3)))
        >>> state, info = method.step(jax.random.key(1), state, jnp.ones(3), obs)
        >>> state.ensemble.shape
        (10, 3)
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if prior_score not in ("paired", "mixture"):
        raise ValueError(f"prior_score must be 'paired' or 'mixture', got {prior_score!r}")
    sde = ensf_sde(eps_alpha, eps_beta)
    h_fn = damping if damping is not None else (lambda t: 1.0 - t)

    def step(key, state, y, obs):
        E = state.ensemble
        check_vector(y, "y", obs.dim)
        mask = observed(y)
        noise = obs.noise.restrict(mask)

        def lik_score(x):
            hx, vjp_fn = jax.vjp(obs.operator, x)
            (g,) = vjp_fn(noise.whiten_t(whitened_residual(obs.noise, y - hx, mask)))
            return g

        if standardize:
            m = E.mean(0)
            sd = jnp.maximum(E.std(0, ddof=1), jnp.finfo(E.dtype).eps * (1.0 + jnp.abs(m)))
            Za, unstable = sample(key, (E - m) / sd, lambda z: sd * lik_score(m + sd * z))
            Ea = m + sd * Za
        else:
            Ea, unstable = sample(key, E, lik_score)
        Ea = jnp.where(jnp.any(mask), Ea, E)
        info = analysis_info(Ea, mask)
        diverged = unstable & jnp.any(mask) & (info.status == Status.SUCCESS)
        return EnsembleState(Ea), info._replace(
            status=jnp.where(diverged, Status.DIVERGED, info.status).astype(jnp.int32)
        )

    def sample(key, E, lik):
        dt = 1.0 / n_steps
        k0, k1 = jax.random.split(key)
        x = jax.random.normal(k0, E.shape, E.dtype)

        def prior(x, t):
            a, s2 = sde.mean_coef(t), sde.std(t) ** 2
            if prior_score == "paired":
                return -(x - a * E) / s2
            d = x[:, None, :] - a * E[None, :, :]  # (N, J, n)
            logw = -0.5 * jnp.sum(d**2, axis=-1) / s2
            w = jax.nn.softmax(logw, axis=1)
            return -jnp.einsum("ij,ijn->in", w, d) / s2

        def step(carry, inp):
            x, x_prev, g_prev, log_growth = carry
            k, t, first = inp
            g2 = sde.diffusion(t) ** 2
            gl = jax.vmap(lik)(x)
            # secant curvature of the (time-independent) likelihood score along the last step
            dx = jnp.linalg.norm(x - x_prev, axis=1)
            kappa = jnp.linalg.norm(gl - g_prev, axis=1) / jnp.where(dx > 0, dx, 1.0)
            kappa = jnp.where(first | (dx <= 0), 0.0, kappa)
            curv = (1.0 / sde.std(t) ** 2 if prior_score == "paired" else 0.0) + h_fn(t) * kappa
            # an explicit step multiplies that direction by |1 - b|: accumulate the growth
            b = dt * (g2 * curv + sde.drift(t))
            log_growth = log_growth + jnp.log(jnp.maximum(b - 1.0, 1.0))
            s = prior(x, t) + h_fn(t) * gl
            x_new = x - dt * (sde.drift(t) * x - g2 * s)
            x_new = x_new + jnp.sqrt(dt * g2) * jax.random.normal(k, x.shape, x.dtype)
            return (x_new, x, gl, log_growth), None

        ts = 1.0 - dt * jnp.arange(n_steps)
        first = jnp.arange(n_steps) == 0
        init = (x, x, jnp.zeros_like(x), jnp.zeros(x.shape[0], x.dtype))
        (x, _, _, log_growth), _ = jax.lax.scan(
            step, init, (jax.random.split(k1, n_steps), ts, first)
        )
        return x, jnp.max(log_growth) >= _LOG_GROWTH_LIMIT

    return Method(ensemble_init, step)
