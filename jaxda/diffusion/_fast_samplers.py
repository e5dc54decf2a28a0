r"""Few-step samplers: DDIM, the EDM Heun sampler and DPM-Solver++(2M).

All three are written for any score ``score_fn(x, t) ≈ ∇_x log p_t(x)`` of a linear forward SDE
``x_t = α_t x_0 + σ_t ε`` (``α_t = sde.mean_coef(t)``, ``σ_t = sde.std(t)``), so a guided score
from :func:`~jaxda.diffusion.posterior_score` works unchanged. They only use the score through
the data prediction (Tweedie's formula)

.. math:: \hat x_0(x, t) = \frac{x + σ_t^2\, s_θ(x, t)}{α_t}, \qquad
    \hat ε(x, t) = -σ_t\, s_θ(x, t),

and through the half log signal-to-noise ratio ``λ_t = log(α_t/σ_t)`` (decreasing in ``t``).
Like the other samplers they run one sample from ``x_T`` at ``t = 1`` down to ``t_end`` (default
``sde.t_min``), return a :class:`~jaxda.diffusion.SampleResult` ``(x, status, n_steps)``, stop at
the first non-finite state with ``Status.NONFINITE`` (``throw=True`` raises instead), and are
reached through :func:`~jaxda.diffusion.sample` with ``method="ddim"``, ``"edm"`` or
``"dpmpp2m"``.

* :func:`ddim` – Song, Meng & Ermon (2021), *Denoising diffusion implicit models*, ICLR:
  deterministic (``eta = 0``, a first-order solver of the probability-flow ODE in ``λ``) or
  stochastic (``eta = 1`` is the DDPM ancestral step).
* :func:`edm_heun` – Karras, Aittala, Aila & Laine (2022), *Elucidating the design space of
  diffusion-based generative models*, NeurIPS, Algorithms 1–2: Heun steps on the ``ρ = 7`` noise
  grid, optional stochastic churn.
* :func:`dpmpp_2m` – Lu, Zhou, Bao, Chen, Li & Zhu (2022), *DPM-Solver++: fast solver for guided
  sampling of diffusion probabilistic models*, Algorithm 2: second-order multistep exponential
  integrator of the data prediction on a grid uniform in ``λ``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..core import check_count, is_concrete
from ._samplers import (
    SampleResult,
    ScoreFn,
    _check_state,
    _finish,
    _guarded_scan,
    _t_end,
)
from ._sde import SDE

_TABLE = 20001


def _log_snr(sde: SDE, t: Any) -> Array:
    """``λ_t = log α_t - log σ_t`` (``+inf`` where ``σ_t = 0``)."""
    t = jnp.asarray(t)
    return sde.log_mean(t) - jnp.log(sde.std(t))


def _t_of_log_snr(sde: SDE, lam: Any, t_lo: float) -> np.ndarray:
    """Times ``t ∈ [t_lo, 1]`` with ``λ_t ≈ lam`` (``λ`` decreasing), from a table of ``λ``.

    Only used to place a grid: the samplers then recompute ``α, σ, λ`` at the returned times,
    so the small interpolation error changes the grid, never the consistency of the update.
    """
    with jax.ensure_compile_time_eval():
        t_tab = np.linspace(t_lo, 1.0, _TABLE)
        neg_lam = -np.asarray(_log_snr(sde, jnp.asarray(t_tab)), dtype=np.float64)
    neg_lam = np.maximum(neg_lam, -1e300)  # σ(t_lo) = 0 gives λ = +inf
    return np.interp(-np.asarray(lam, dtype=np.float64), neg_lam, t_tab)


def _log_snr_grid(sde: SDE, t_end: float, n_steps: int, who: str) -> tuple[Array, Array]:
    """``n_steps + 1`` values of ``λ`` uniform from ``λ(1)`` to ``λ(t_end)`` and their times."""
    with jax.ensure_compile_time_eval():
        lam_1, lam_e = float(_log_snr(sde, 1.0)), float(_log_snr(sde, t_end))
        if not (math.isfinite(lam_1) and math.isfinite(lam_e)):
            raise ValueError(
                f"{who} needs 0 < σ(t) and 0 < α(t) on [t_end, 1]; t_end = {t_end} gives "
                "an infinite log signal-to-noise ratio (use t_end > 0)"
            )
        lams = np.linspace(lam_1, lam_e, n_steps + 1)
        ts = _t_of_log_snr(sde, lams, t_end)
        ts[0], ts[-1] = 1.0, t_end
        lams = np.asarray(_log_snr(sde, jnp.asarray(ts)), dtype=np.float64)  # λ at the grid
    return jnp.asarray(lams), jnp.asarray(ts)


def _alpha_sigma(sde: SDE, t: Array) -> tuple[Array, Array]:
    return sde.mean_coef(t), sde.std(t)


def _x0(score_fn: ScoreFn, sde: SDE, x: Array, t: Array) -> Array:
    return sde.tweedie(x, score_fn(x, t), t)


def ddim(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Array,
    *,
    n_steps: int = 50,
    eta: float = 0.0,
    grid: str = "t",
    t_end: float | None = None,
    throw: bool = False,
) -> SampleResult:
    r"""DDIM sampler (Song, Meng & Ermon 2021), one sample.

    From ``x`` at ``t`` to ``t' < t``, with ``\hat x_0, \hat ε`` from Tweedie's formula,

    .. math:: x_{t'} = α_{t'} \hat x_0 + \sqrt{σ_{t'}^2 - c^2}\; \hat ε + c\, z, \qquad
        c = η\, σ_{t'} \sqrt{1 - \Big(\frac{α_t σ_{t'}}{α_{t'} σ_t}\Big)^2},\quad z \sim N(0, I).

    ``c`` is ``η`` times the std of the forward posterior ``q(x_{t'} | x_t, x_0)``, so
    ``eta = 1`` is the DDPM ancestral step and ``eta = 0`` the deterministic DDIM map (the
    exponential-Euler step of the probability-flow ODE). The update only uses ``α`` and ``σ``,
    so it is valid for the VP and the VE SDE alike. The last step lands on ``t_end`` and returns
    the noisy state there (as the other samplers), not ``\hat x_0``.

    Args:
        key: PRNG key (used only if ``eta > 0``).
        score_fn: ``(x, t) -> ∇ log p_t(x)`` for one state, e.g. a guided score.
        sde: the forward SDE.
        x_T: initial state at ``t = 1``.
        n_steps: number of steps (>= 1).
        eta: stochasticity ``η ∈ [0, 1]``.
        grid: ``"t"`` (uniform in time, as DDIM) or ``"log_snr"`` (uniform in ``λ``, as
            DPM-Solver; deterministic DDIM is then DPM-Solver-1, usually more accurate).
        t_end: final time (default ``sde.t_min``).
        throw: raise instead of returning a ``NONFINITE`` or ``DIVERGED`` status.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> res = ddim(jax.random.key(0), lambda x, t: -x, vp_linear(), jnp.ones(2), n_steps=10)
        >>> res.x.shape, int(res.status), int(res.n_steps)
        ((2,), 0, 10)
    """
    n_steps = check_count("n_steps", n_steps)
    if is_concrete(eta) and not (math.isfinite(float(eta)) and 0.0 <= float(eta) <= 1.0):
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    t_end = _t_end(sde, t_end)
    x_T = _check_state(score_fn, x_T)
    dtype = x_T.dtype
    if grid == "t":
        ts = jnp.linspace(1.0, t_end, n_steps + 1, dtype=dtype)
    elif grid == "log_snr":
        ts = _log_snr_grid(sde, t_end, n_steps, "ddim")[1].astype(dtype)
    else:
        raise ValueError(f"grid must be 't' or 'log_snr', got {grid!r}")

    def step(x, extra, inp):
        k, t, t1 = inp
        a, s = _alpha_sigma(sde, t)
        a1, s1 = _alpha_sigma(sde, t1)
        sc = score_fn(x, t)
        x0 = (x + s**2 * sc) / a
        eps = -s * sc
        ratio = jnp.where(s > 0, (a * s1) / (a1 * jnp.where(s > 0, s, 1.0)), 0.0)
        c = eta * s1 * jnp.sqrt(jnp.clip(1.0 - ratio**2, 0.0, 1.0))
        z = jax.random.normal(k, x.shape, dtype)
        return a1 * x0 + jnp.sqrt(jnp.maximum(s1**2 - c**2, 0.0)) * eps + c * z, extra

    keys = jax.random.split(key, n_steps)
    return _finish(_guarded_scan(step, x_T, (keys, ts[:-1], ts[1:]))[0], throw)


def edm_heun(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Array,
    *,
    n_steps: int = 18,
    rho: float = 7.0,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = math.inf,
    s_noise: float = 1.0,
    t_end: float | None = None,
    throw: bool = False,
) -> SampleResult:
    r"""EDM Heun sampler (Karras et al. 2022, Alg. 1, with churn Alg. 2), one sample.

    **Change of variables.** EDM integrates the ODE of the scaled state ``\hat x = x_t / α_t``,
    a variance-exploding diffusion ``\hat x = x_0 + \tilde σ ε`` with noise level
    ``\tilde σ(t) = σ_t/α_t = e^{-λ_t}`` (EDM's ``σ(t) = t`` parametrisation):

    .. math:: \frac{d\hat x}{d\tilde σ} = \frac{\hat x - D(\hat x; \tilde σ)}{\tilde σ},\qquad
        D(\hat x; \tilde σ) = \hat x_0(α_t \hat x, t),\ t = t(\tilde σ),

    where the denoiser ``D`` is Tweedie's data prediction of the given score and ``t(\tilde σ)``
    inverts ``\tilde σ(t)`` (bisection). So the VP and VE SDEs map to EDM's form with
    ``σ_max = \tilde σ(1)`` and ``σ_min = \tilde σ(t_end)``, and the result is mapped back,
    ``x = α_{t_end} \hat x``.

    **Grid.** ``\tilde σ_i = (σ_{max}^{1/ρ} + \tfrac{i}{N}(σ_{min}^{1/ρ} - σ_{max}^{1/ρ}))^ρ``,
    ``i = 0..N`` (Eq. 5, with ``σ_N = σ_{min}``; concentrates steps at low noise). Each step is an
    Euler step with the Heun (trapezoidal) correction, except a last step to ``\tilde σ = 0``
    (a VP SDE with ``t_end = 0``), which stays Euler as in Alg. 1.

    **Churn** (Alg. 2, ``s_churn > 0``): before step ``i``, if ``s_tmin ≤ \tilde σ_i ≤ s_tmax``, the
    noise level is raised to ``\hat σ = \tilde σ_i (1 + γ)``, ``γ = min(s_churn/N, √2 - 1)``
    (capped at ``σ_max``), by adding ``\sqrt{\hat σ^2 - \tilde σ_i^2}\, s_{noise} z``.

    Args:
        key: PRNG key (used only if ``s_churn > 0``).
        score_fn: ``(x, t) -> ∇ log p_t(x)`` for one state.
        sde: the forward SDE.
        x_T: initial state at ``t = 1``.
        n_steps: number of steps ``N`` (>= 1); ``2N - 1`` or ``2N`` score evaluations.
        rho: grid exponent ``ρ > 0`` (7 in EDM; 1 is uniform in ``\tilde σ``).
        s_churn, s_tmin, s_tmax, s_noise: churn options of Alg. 2 (in ``\tilde σ`` units).
        t_end: final time (default ``sde.t_min``).
        throw: raise instead of returning a ``NONFINITE`` or ``DIVERGED`` status.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> res = edm_heun(jax.random.key(0), lambda x, t: -x, vp_linear(), jnp.ones(2), n_steps=8)
        >>> res.x.shape, int(res.status), int(res.n_steps)
        ((2,), 0, 8)
    """
    n_steps = check_count("n_steps", n_steps)
    for name, v in (("rho", rho), ("s_noise", s_noise)):
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be finite and > 0, got {v}")
    if not (math.isfinite(s_churn) and s_churn >= 0):
        raise ValueError(f"s_churn must be finite and >= 0, got {s_churn}")
    if not (0 <= s_tmin <= s_tmax):
        raise ValueError(f"need 0 <= s_tmin <= s_tmax, got {s_tmin}, {s_tmax}")
    t_end = _t_end(sde, t_end)
    x_T = _check_state(score_fn, x_T)
    dtype = x_T.dtype
    with jax.ensure_compile_time_eval():
        sig_max = float(sde.std(jnp.asarray(1.0)) / sde.mean_coef(1.0))
        sig_min = float(sde.std(jnp.asarray(t_end)) / sde.mean_coef(t_end))
        i = jnp.arange(n_steps + 1) / n_steps
        sig = (sig_max ** (1 / rho) + i * (sig_min ** (1 / rho) - sig_max ** (1 / rho))) ** rho
        sig = sig.at[0].set(sig_max).at[-1].set(sig_min)
        gamma = min(s_churn / n_steps, math.sqrt(2.0) - 1.0)
        churn = (sig[:-1] >= s_tmin) & (sig[:-1] <= s_tmax) & (gamma > 0)
        sig_hat = jnp.where(churn, jnp.minimum(sig[:-1] * (1.0 + gamma), sig_max), sig[:-1])

        def times(s):
            t = _t_of_log_snr(sde, -jnp.log(jnp.maximum(s, 1e-300)), t_end)
            return jnp.where(s >= sig_max, 1.0, jnp.where(s <= sig_min, t_end, t))

        t_hat, t_next = times(sig_hat), times(sig[1:])
    heun = sig[1:] > 0
    a_end = sde.mean_coef(t_end)

    def denoise(xh, t):
        a = sde.mean_coef(t)
        return _x0(score_fn, sde, a * xh, t)

    def step(xh, extra, inp):
        k, s_i, s_h, t_h, s_n, t_n, use_heun = inp
        z = jax.random.normal(k, xh.shape, dtype)
        xh = xh + jnp.sqrt(jnp.maximum(s_h**2 - s_i**2, 0.0)) * s_noise * z
        d = (xh - denoise(xh, t_h)) / s_h
        x_e = xh + (s_n - s_h) * d
        s_safe = jnp.where(use_heun, s_n, 1.0)
        d2 = (x_e - denoise(x_e, jnp.where(use_heun, t_n, t_h))) / s_safe
        return jnp.where(use_heun, xh + (s_n - s_h) * 0.5 * (d + d2), x_e), extra

    keys = jax.random.split(key, n_steps)
    xs = (keys, sig[:-1], sig_hat, t_hat, sig[1:], t_next, heun)
    xs = jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, xs)
    x_hat_T = x_T / sde.mean_coef(1.0)
    res = _guarded_scan(step, x_hat_T, xs)[0]
    return _finish(SampleResult(a_end * res.x, res.status, res.n_steps), throw)


def dpmpp_2m(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Array,
    *,
    n_steps: int = 20,
    t_end: float | None = None,
    throw: bool = False,
) -> SampleResult:
    r"""DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), deterministic, one sample.

    On the grid ``t_0 = 1 > … > t_N = t_end`` uniform in ``λ = log(α/σ)``, with
    ``h_i = λ_{t_i} - λ_{t_{i-1}}`` and the data predictions ``\hat x_0^{(i)} = \hat x_0(x_{t_i},
    t_i)``, the exact solution of the probability-flow ODE written for the data prediction is
    approximated by

    .. math:: x_{t_i} = \frac{σ_{t_i}}{σ_{t_{i-1}}} x_{t_{i-1}} - α_{t_i}(e^{-h_i} - 1)\, D_i,
        \qquad D_i = \Big(1 + \frac{1}{2r_i}\Big)\hat x_0^{(i-1)} - \frac{1}{2r_i}
        \hat x_0^{(i-2)},\ r_i = \frac{h_{i-1}}{h_i},

    (``D_1 = \hat x_0^{(0)}``, the first step is first order). One score evaluation per step;
    second order. Needs ``σ(t_end) > 0`` (finite ``λ``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> res = dpmpp_2m(lambda x, t: -x, vp_linear(), jnp.ones(2), n_steps=10)
        >>> res.x.shape, int(res.status), int(res.n_steps)
        ((2,), 0, 10)
    """
    n_steps = check_count("n_steps", n_steps)
    t_end = _t_end(sde, t_end)
    x_T = _check_state(score_fn, x_T)
    dtype = x_T.dtype
    lams, ts = _log_snr_grid(sde, t_end, n_steps, "dpmpp_2m")
    lams, ts = lams.astype(dtype), ts.astype(dtype)
    h = jnp.diff(lams)
    r = jnp.concatenate([jnp.ones(1, dtype), h[:-1] / h[1:]])
    first = jnp.arange(n_steps) == 0

    def step(x, x0_prev, inp):
        t, t1, h_i, r_i, is_first = inp
        s = sde.std(t)
        a1, s1 = _alpha_sigma(sde, t1)
        x0 = _x0(score_fn, sde, x, t)
        d = jnp.where(is_first, x0, (1.0 + 0.5 / r_i) * x0 - (0.5 / r_i) * x0_prev)
        return (s1 / s) * x - a1 * jnp.expm1(-h_i) * d, x0

    res, _ = _guarded_scan(step, x_T, (ts[:-1], ts[1:], h, r, first), extra=jnp.zeros_like(x_T))
    return _finish(res, throw)
