r"""Reverse-time samplers for any score ``score_fn(x, t) ≈ ∇_x log p_t(x)``.

All samplers are written for **one** sample ``x_T`` (any shape); vmap them over keys /
initial states, or use :func:`sample`. Time runs from ``t = 1`` down to ``t_end``
(default ``sde.t_min``). Internally the diffrax solves use the forward pseudo-time
``s = 1 - t``, so the reverse SDE

.. math:: dx = [f(t)x - g(t)^2 s_θ(x,t)]\,dt + g(t)\,d\bar w

becomes the ordinary forward Itô SDE ``dx = -[f x - g² s_θ] ds + g dW_s``. The noise is
additive (``g`` depends on ``t`` only), so Itô and Stratonovich coincide and the
Heun scheme converges (strong order 1 for additive noise).

* :func:`reverse_sde` – diffrax Euler–Maruyama (``solver="euler"``) or Heun
  (``solver="heun"``) with a ``VirtualBrownianTree``.
* :func:`probability_flow` – the deterministic ODE ``dx/dt = f x - ½ g² s_θ`` with diffrax
  (``euler``, ``heun`` or adaptive ``tsit5``).
* :func:`predictor_corrector` – Song et al. (2021) PC sampler: Euler–Maruyama predictor and
  ``n_corrector`` Langevin corrector steps with signal-to-noise ratio ``snr``.
* :func:`ddpm_ancestral` – ancestral sampling of the discrete DDPM chain (Ho et al. 2020).

Every sampler returns a :class:`SampleResult` ``(x, status, n_steps)``. A state that becomes
nan/inf stops the sampler: ``x`` is that (non-finite) state, ``status`` is
``Status.NONFINITE`` and ``n_steps`` the steps taken, the failing one included; ``throw=True``
raises instead (eagerly ``RuntimeError``, under ``jit`` an ``equinox`` runtime error). A state
that blows up (rms above ``10⁶`` times that of ``x_T``, at least 1: an unstable explicit step
of a stiff guided score) stops it the same way with ``Status.DIVERGED``.

References: Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole (2021), *Score-based generative
modeling through stochastic differential equations*, ICLR.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Int

from ..core import (
    Status,
    check_count,
    is_concrete,
    positive_or_error,
    raise_on_failure,
    status_array,
)
from ._sde import SDE, ddpm_schedule

ScoreFn = Callable[[Array, Array], Array]

_SDE_SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun}
_ODE_SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun, "tsit5": diffrax.Tsit5}
_STEP_RULES = ("curvature", "adaptive", "fixed")
_PRED_STIFFNESS = (
    0.25  # predictor substeps keep dt g² L̂ <= 1/4 (stable below 2, variance bias ~ dt g² L̂ / 4)
)
_MAX_SUBSTEPS = 64
_BLOWUP = 1e6  # a state this many times larger than its start (rms, at least 1) diverged


class SampleResult(NamedTuple):
    """Result of every sampler.

    Attributes:
        x: the final state (shape of ``x_T``; ``(n_samples, *shape)`` from :func:`sample`),
            or the first non-finite state when the sampler stopped.
        status: ``Status.SUCCESS``, ``Status.NONFINITE``, (adaptive ODE only)
            ``Status.MAX_STEPS`` or ``Status.DIVERGED``: an unstable step detected, either a
            state whose rms grew beyond ``10⁶`` times that of ``x_T`` (at least 1; every
            sampler) or, in :func:`predictor_corrector`, a step larger than the secant
            curvature of the score allows; one per sample from :func:`sample`.
        n_steps: steps taken (the non-finite one included).
    """

    x: Array
    status: Int[Array, "..."]
    n_steps: Int[Array, "..."]


def _t_end(sde: SDE, t_end: float | None) -> float:
    t_end = sde.t_min if t_end is None else float(t_end)
    if not 0.0 <= t_end < 1.0:
        raise ValueError(f"t_end must be in [0, 1), got {t_end}")
    return t_end


def _check_state(score_fn: ScoreFn, x_T: Any) -> Array:
    x_T = jnp.asarray(x_T)
    if not jnp.issubdtype(x_T.dtype, jnp.floating):
        raise ValueError(f"x_T must be floating point, got dtype {x_T.dtype}")
    if x_T.size == 0:
        raise ValueError(f"x_T must not be empty, got shape {x_T.shape}")
    if is_concrete(x_T) and not bool(jnp.all(jnp.isfinite(x_T))):
        raise ValueError("x_T contains nan/inf values")
    out = jax.eval_shape(score_fn, x_T, jnp.asarray(0.5, x_T.dtype))
    if out.shape != x_T.shape:
        raise ValueError(
            f"score_fn returns shape {out.shape}, expected the state shape {x_T.shape}"
        )
    return x_T


def _finish(result: SampleResult, throw: bool) -> SampleResult:
    return raise_on_failure(result) if throw else result


def _rms(x: Array) -> Array:
    return jnp.sqrt(jnp.mean(jnp.square(x)))


def _blown_up(x: Array, scale: Array) -> Array:
    """``True`` once the rms of ``x`` exceeds :data:`_BLOWUP` times ``scale``."""
    return _rms(x) > _BLOWUP * scale


def _scale(x_T: Array) -> Array:
    """Reference size of a sampler's states: the rms of its start, at least 1."""
    return jnp.maximum(_rms(x_T), 1.0)


def _diffrax_result(sol: Any, shape: tuple[int, ...], scale: Array) -> SampleResult:
    assert sol.ys is not None  # SaveAt(t1=True) is diffrax's default
    x = sol.ys[-1].reshape(shape)
    finite = jnp.all(jnp.isfinite(x))
    stopped = sol.result == diffrax.RESULTS.event_occurred
    status = jnp.where(
        ~finite,
        Status.NONFINITE,
        jnp.where(
            stopped | _blown_up(x, scale),
            Status.DIVERGED,
            jnp.where(sol.result == diffrax.RESULTS.successful, Status.SUCCESS, Status.MAX_STEPS),
        ),
    )
    return SampleResult(x, status_array(status), jnp.asarray(sol.stats["num_steps"], jnp.int32))


def _failure_event(scale: Array) -> diffrax.Event:
    """Stops the solve at a non-finite state or one blown up beyond ``_BLOWUP * scale``."""

    def cond(t, y, args, **kwargs):
        return ~jnp.all(jnp.isfinite(y)) | _blown_up(y, scale)

    return diffrax.Event(cond)


def reverse_sde(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Array,
    *,
    n_steps: int = 500,
    solver: str = "euler",
    t_end: float | None = None,
    throw: bool = False,
) -> SampleResult:
    """Integrate the reverse-time SDE from ``x_T`` at ``t = 1`` to ``t_end`` (one sample).

    Args:
        key: PRNG key of the Brownian path.
        score_fn: ``(x, t) -> ∇ log p_t(x)``, ``x`` of the shape of ``x_T``, ``t`` a scalar.
        sde: the forward SDE.
        x_T: initial state, e.g. ``sde.sample_terminal(key, shape)``.
        n_steps: number of constant steps.
        solver: ``"euler"`` (Euler–Maruyama) or ``"heun"``.
        t_end: final time (default ``sde.t_min``).
        throw: raise instead of returning a ``NONFINITE`` or ``DIVERGED`` status.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> sde = vp_linear()
        >>> res = reverse_sde(jax.random.key(0), lambda x, t: -x, sde, jnp.zeros(2), n_steps=10)
        >>> res.x.shape, int(res.status)
        ((2,), 0)
    """
    n_steps = check_count("n_steps", n_steps)
    if solver not in _SDE_SOLVERS:
        raise ValueError(f"solver must be one of {sorted(_SDE_SOLVERS)}, got {solver!r}")
    t_end = _t_end(sde, t_end)
    x_T = _check_state(score_fn, x_T)
    shape = x_T.shape
    y0 = jnp.ravel(x_T)
    s1 = 1.0 - t_end
    ds = s1 / n_steps

    def drift(s, y, args):
        t = 1.0 - s
        x = y.reshape(shape)
        return -(sde.drift(t) * y - sde.diffusion(t) ** 2 * jnp.ravel(score_fn(x, t)))

    def noise(s, y, args):
        return lx.DiagonalLinearOperator(sde.diffusion(1.0 - s) * jnp.ones_like(y))

    bm = diffrax.VirtualBrownianTree(0.0, s1, tol=ds / 4, shape=y0.shape, key=key)
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(noise, bm))
    sol = diffrax.diffeqsolve(
        terms,
        _SDE_SOLVERS[solver](),
        0.0,
        s1,
        ds,
        y0,
        max_steps=n_steps + 2,
        event=_failure_event(_scale(y0)),
        throw=False,
    )
    return _finish(_diffrax_result(sol, shape, _scale(y0)), throw)


def probability_flow(
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Array,
    *,
    n_steps: int = 200,
    solver: str = "heun",
    t_end: float | None = None,
    rtol: float | None = None,
    atol: float = 1e-6,
    throw: bool = False,
) -> SampleResult:
    r"""Integrate the probability-flow ODE ``dx/dt = f(t)x - ½g(t)² s_θ(x,t)`` from 1 to ``t_end``.

    Deterministic: the randomness is in ``x_T`` only. With ``rtol`` given, an adaptive PID
    step-size controller is used (``n_steps`` sets the first step, at most ``100 n_steps``
    steps, else ``Status.MAX_STEPS``).
    """
    n_steps = check_count("n_steps", n_steps)
    if solver not in _ODE_SOLVERS:
        raise ValueError(f"solver must be one of {sorted(_ODE_SOLVERS)}, got {solver!r}")
    t_end = _t_end(sde, t_end)
    x_T = _check_state(score_fn, x_T)
    shape = x_T.shape
    y0 = jnp.ravel(x_T)
    s1 = 1.0 - t_end

    def drift(s, y, args):
        t = 1.0 - s
        x = y.reshape(shape)
        return -(sde.drift(t) * y - 0.5 * sde.diffusion(t) ** 2 * jnp.ravel(score_fn(x, t)))

    if rtol is not None:
        positive_or_error("rtol", rtol)
        positive_or_error("atol", atol)
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
        max_steps = 100 * n_steps
    else:
        controller = diffrax.ConstantStepSize()
        max_steps = n_steps + 2
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(drift),
        _ODE_SOLVERS[solver](),
        0.0,
        s1,
        s1 / n_steps,
        y0,
        stepsize_controller=controller,
        max_steps=max_steps,
        event=_failure_event(_scale(y0)),
        throw=False,
    )
    return _finish(_diffrax_result(sol, shape, _scale(y0)), throw)


def _guarded_scan(step, x0, xs, extra=None):
    """``lax.scan`` of ``step(x, extra, inp) -> (x, extra)`` that stops at the first failure.

    A non-finite state stops it with ``NONFINITE``; a state whose rms exceeds :data:`_BLOWUP`
    times that of ``x0`` (at least 1) stops it with ``DIVERGED`` (an unstable explicit step: a
    stiff guided score with too few steps). After a failure the remaining iterations leave the
    carry untouched. Returns ``(SampleResult(x, status, n_steps), extra)``.
    """
    scale = _scale(x0)

    def body(carry, inp):
        x, ex, status, n = carry
        x_new, ex_new = step(x, ex, inp)
        running = status == Status.SUCCESS
        x = jnp.where(running, x_new, x)
        ex = jax.tree.map(lambda a, b: jnp.where(running, a, b), ex_new, ex)
        nonfinite = running & ~jnp.all(jnp.isfinite(x_new))
        blown = running & ~nonfinite & _blown_up(x_new, scale)
        status = jnp.where(nonfinite, jnp.int32(Status.NONFINITE), status)
        status = jnp.where(blown, jnp.int32(Status.DIVERGED), status)
        return (x, ex, status, n + running.astype(jnp.int32)), None

    init = (x0, extra, status_array(Status.SUCCESS), jnp.int32(0))
    (x, extra, status, n), _ = jax.lax.scan(body, init, xs)
    return SampleResult(x, status, n), extra


def predictor_corrector(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Array,
    *,
    n_steps: int = 500,
    n_corrector: int = 1,
    snr: float = 0.16,
    step_rule: str = "curvature",
    t_end: float | None = None,
    throw: bool = False,
) -> SampleResult:
    r"""Predictor–corrector sampler (Song et al. 2021, Alg. 1–3), one sample.

    Predictor: Euler–Maruyama step of the reverse SDE from ``t`` to ``t - h``.
    Corrector: ``n_corrector`` Langevin MCMC steps targeting ``p_{t-h}``,

    .. math:: x ← x + ε\, s_θ(x, t) + \sqrt{2ε}\, z,\qquad ε = 2\,\mathrm{snr}^2\, v(x, t),

    where ``v`` is a local variance of the target. For a Gaussian target with variances
    ``λ_i`` the Langevin step is stable only if ``ε < 2 λ_min``, and it inflates the variance
    of direction ``i`` by ``1/(1 - ε/(2λ_i))``. Rules for ``v``:

    * ``"curvature"`` (default): ``v = min(μ(t)² + σ(t)², 1/L̂)`` with ``L̂ = ‖∇s_θ(x,t) u‖``
      a power-iteration estimate of the largest curvature ``1/λ_min`` of the target (one
      Jacobian–vector product per score evaluation of the predictor and the corrector,
      warm-started from the previous vector ``u``). Then ``ε/λ_min ≈ 2 snr² ≈ 0.05``: stable
      whatever the conditioning (e.g. sharp observations in a guided score), variance bias at
      most ``snr²`` (2.6 %). The Euler–Maruyama predictor is split into
      ``ceil(h g² L̂₁ / 0.25)`` substeps (at most 64), ``L̂₁`` the curvature predicted at the
      end of the step (for a Gaussian of smallest variance ``λ_0`` it is
      ``1/(μ(t)² λ_0 + σ(t)²)``, which grows fast as ``t → 0``), so the predictor stays stable
      and its variance bias (about ``dt g² L / 4`` per direction) small; the cost grows only
      where the score is stiff. Measured on an 8-dimensional Gaussian prior with its exact
      score, 3 linear observations of std 0.05 (posterior variances down to 1.4e-3) and the
      exact guidance: variance ratios to the exact posterior 0.95–1.16 with 20 steps and
      0.95–1.08 with 100 (1000 samples, ``benchmarks/bench_guidance_table.py``).
    * ``"adaptive"``: Song's rule with one sample's score norm,
      ``v = min(d/‖s_θ(x,t)‖², μ² + σ²)``. Cheaper (no Jacobian–vector product), but
      ``‖s_θ‖`` is small near the mode, so in low dimension the step is often too large, and
      the predictor is one Euler–Maruyama step whatever the stiffness. **Overdispersed** even
      with the exact score: on the problem above, variance ratios up to 1.5–2.1 with
      observation std 0.5 and 2.4 (500 steps), 4.7 (100 steps) and 155 (20 steps) with
      observation std 0.05. Use ``"curvature"`` when the posterior is sharper than the prior.
    * ``"fixed"``: ``v = μ(t)² + σ(t)²``, the marginal variance of unit-variance data.
      Unstable once a variance of the target falls below ``snr² (μ² + σ²)`` (0.026 for
      ``snr = 0.16`` with a VP SDE), e.g. a posterior with observation std 0.05 (then every
      sample is reported ``DIVERGED``, see below); overdispersed well before that (variance
      ratios up to 1.8–1.9 with observation std 0.5 on the problem above). Only for
      well-conditioned targets.

    **Stability check** (every rule, ``n_corrector >= 1``, no extra cost but the last score
    evaluation at ``t_end``): two score evaluations at one time, before and after a Langevin
    step, give a secant curvature ``κ = ‖s(x') - s(x)‖/‖x' - x‖``, a lower bound of the largest
    curvature along the step. A Langevin step with ``ε κ ≥ 2`` or a predictor step with
    ``h g² κ ≥ 2`` was unstable (it amplifies some direction), so the sampler stops there with
    ``Status.DIVERGED`` instead of returning a finite but exploded state; ``n_steps`` counts
    the steps up to the one where it was detected. A step that is stable but too large (the
    overdispersion above, or too few steps for the stiffness) is **not** detected.

    Args:
        key: PRNG key.
        score_fn: ``(x, t) -> ∇ log p_t(x)`` for one state.
        sde: the forward SDE.
        x_T: initial state.
        n_steps: predictor steps (>= 1).
        n_corrector: Langevin steps after each predictor step (>= 0).
        snr: signal-to-noise ratio (> 0).
        step_rule: ``"curvature"``, ``"adaptive"`` or ``"fixed"``.
        t_end: final time (default ``sde.t_min``).
        throw: raise instead of returning a ``NONFINITE`` or ``DIVERGED`` status.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> sde = vp_linear()
        >>> score = lambda x, t: -x / (0.001 * sde.mean_coef(t) ** 2 + sde.std(t) ** 2)
        >>> key, x_T = jax.random.key(0), jnp.ones(2)
        >>> int(predictor_corrector(key, score, sde, x_T, n_steps=50).status)  # SUCCESS
        0
        >>> res = predictor_corrector(key, score, sde, x_T, n_steps=50, step_rule="fixed")
        >>> int(res.status)  # DIVERGED: the target's variance 0.001 is below 2 snr² = 0.05
        5
    """
    n_steps = check_count("n_steps", n_steps)
    n_corrector = check_count("n_corrector", n_corrector, low=0)
    positive_or_error("snr", snr)
    if step_rule not in _STEP_RULES:
        raise ValueError(f"step_rule must be one of {_STEP_RULES}, got {step_rule!r}")
    t_end = _t_end(sde, t_end)
    x_T = _check_state(score_fn, x_T)
    ts = jnp.linspace(1.0, t_end, n_steps + 1)
    dtype = x_T.dtype
    k_u, key = jax.random.split(key)
    u0 = jax.random.normal(k_u, x_T.shape, dtype)
    u0 = u0 / jnp.linalg.norm(u0)
    if step_rule == "curvature":  # a few power iterations at t = 1 to start from a good u
        for _ in range(3):
            u0 = jax.jvp(lambda y: score_fn(y, ts[0]), (x_T,), (u0,))[1]
            u0 = u0 / jnp.maximum(jnp.linalg.norm(u0), jnp.finfo(dtype).tiny)

    curvature = step_rule == "curvature"

    def power(ju, u):
        """One power-iteration update: ``(‖J u‖, J u / ‖J u‖)``, keeping ``u`` on failure."""
        lam = jnp.linalg.norm(ju)
        ok = jnp.isfinite(lam) & (lam > 0)
        return jnp.where(ok, lam, 0.0), jnp.where(ok, ju / jnp.where(ok, lam, 1.0), u)

    def secant(x, s, prev):
        """``ε κ`` and ``h g² κ`` bounds from the secant ``κ = ‖s - s_c‖/‖x - x_c‖`` of two score
        evaluations at one time (``κ ≤`` the largest curvature along the segment)."""
        x_c, s_c, eps_c = prev
        dx = jnp.linalg.norm(x - x_c)
        kappa = jnp.where(dx > 0, jnp.linalg.norm(s - s_c) / jnp.where(dx > 0, dx, 1.0), 0.0)
        return jnp.where(eps_c > 0, kappa, 0.0)

    def langevin(carry, inp):
        x, u, prev, worst = carry
        k, t = inp
        z = jax.random.normal(k, x.shape, dtype)
        v = sde.mean_coef(t) ** 2 + sde.std(t) ** 2
        if curvature:
            s, ju = jax.jvp(lambda y: score_fn(y, t), (x,), (u,))
            lam, u = power(ju, u)
            v = jnp.where(lam > 0, jnp.minimum(v, 1.0 / jnp.where(lam > 0, lam, 1.0)), v)
        else:
            s = score_fn(x, t)
            if step_rule == "adaptive":
                v = jnp.minimum(s.size / jnp.maximum(jnp.sum(s**2), 1e-30), v)
        worst = jnp.maximum(worst, prev[2] * secant(x, s, prev))
        eps = 2.0 * snr**2 * v
        return (x + eps * s + jnp.sqrt(2.0 * eps) * z, u, (x, s, eps), worst), None

    def em(x, s, t, dt, k):
        g = sde.diffusion(t)
        x = x - dt * (sde.drift(t) * x - g**2 * s)
        return x + g * jnp.sqrt(dt) * jax.random.normal(k, x.shape, dtype)

    def step(x, extra, inp):
        u, prev, diverged, n_ok = extra
        k, t0, t1 = inp
        kp, kc = jax.random.split(k)
        h = t0 - t1
        if curvature:
            # predictor in ceil(h g² L̂ / _PRED_STIFFNESS) Euler–Maruyama substeps
            s, ju = jax.jvp(lambda y: score_fn(y, t0), (x,), (u,))
            lam, u = power(ju, u)
            # the curvature grows as t falls: for a Gaussian of smallest variance λ_0 it is
            # 1/(μ(t)² λ_0 + σ(t)²); λ_0 from L̂ at t0 predicts it at t1, the step's worst
            mu0, mu1 = sde.mean_coef(t0), sde.mean_coef(t1)
            lam0 = jnp.where(lam > 0, 1.0 / jnp.where(lam > 0, lam, 1.0), jnp.inf)
            var0 = jnp.maximum(lam0 - sde.std(t0) ** 2, 0.0) / mu0**2
            lam1 = 1.0 / (mu1**2 * var0 + sde.std(t1) ** 2)
            g2 = jnp.maximum(sde.diffusion(t0) ** 2, sde.diffusion(t1) ** 2)
            n_sub = jnp.ceil(h * g2 * jnp.maximum(lam, lam1) / _PRED_STIFFNESS)
            n_sub = jnp.clip(n_sub, 1, _MAX_SUBSTEPS).astype(jnp.int32)
        else:
            s = score_fn(x, t0)
            n_sub = jnp.int32(1)
        # the last Langevin step (same time t0) and this predictor step, against the secant
        kappa = secant(x, s, prev)
        worst = jnp.maximum(prev[2] * kappa, h / n_sub * sde.diffusion(t0) ** 2 * kappa)
        dt = h / n_sub
        x_new = em(x, s, t0, dt, jax.random.fold_in(kp, 0))
        if curvature:

            def sub(i, x):
                t = t0 - i * dt
                return em(x, score_fn(x, t), t, dt, jax.random.fold_in(kp, i))

            x_new = jax.lax.fori_loop(1, n_sub, sub, x_new)
        if n_corrector:
            kcs = jax.random.split(kc, n_corrector)
            no_prev = (x_new, jnp.zeros_like(x_new), jnp.zeros((), dtype))
            (x_new, u, prev, worst_c), _ = jax.lax.scan(
                langevin,
                (x_new, u, no_prev, jnp.zeros((), dtype)),
                (kcs, jnp.full((n_corrector,), t1)),
            )
            worst = jnp.maximum(worst, worst_c)
        # a secant bound >= 2: a step of this predictor-corrector step was unstable
        x_out = jnp.where(diverged, x, x_new)
        n_ok = n_ok + (~diverged).astype(jnp.int32)
        return x_out, (u, prev, diverged | (worst >= 2.0), n_ok)

    keys = jax.random.split(key, n_steps)
    prev0 = (x_T, jnp.zeros_like(x_T), jnp.zeros((), dtype))
    extra0 = (u0, prev0, jnp.asarray(False), jnp.int32(0))
    (x, status, n), extra = _guarded_scan(step, x_T, (keys, ts[:-1], ts[1:]), extra0)
    assert extra is not None
    diverged, n_ok = extra[2], extra[3]
    if n_corrector:  # the last Langevin step, against one more score evaluation at t_end
        prev = extra[1]
        last = prev[2] * secant(x, score_fn(x, ts[-1]), prev) >= 2.0
        diverged = diverged | (last & (status == Status.SUCCESS))
    status = jnp.where((status == Status.SUCCESS) & diverged, Status.DIVERGED, status)
    result = SampleResult(x, status_array(status), jnp.where(diverged, n_ok, n))
    return _finish(result, throw)


def ddpm_ancestral(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Array,
    *,
    n_steps: int = 1000,
    throw: bool = False,
) -> SampleResult:
    r"""Ancestral sampling of the DDPM chain of :func:`ddpm_schedule` (Ho et al. 2020, Alg. 2).

    .. math:: x_{k-1} = \frac{x_k + β_k s_θ(x_k, t_k)}{\sqrt{1-β_k}} + \tilde β_k^{1/2} z,\quad
        \tilde β_k = \frac{1-ᾱ_{k-1}}{1-ᾱ_k} β_k

    (``s_θ = -ε_θ/√(1-ᾱ_k)`` recovers the usual ε-parametrisation). Ends at ``t = 0``.
    """
    n_steps = check_count("n_steps", n_steps)
    sch = ddpm_schedule(sde, n_steps)
    x_T = _check_state(score_fn, x_T)
    dtype = x_T.dtype
    ks = jnp.arange(n_steps, 0, -1)

    def step(x, extra, inp):
        k, kk = inp
        b = sch.betas[k]
        ab, ab_prev = sch.alphas_bar[k], sch.alphas_bar[k - 1]
        mean = (x + b * score_fn(x, sch.t[k])) / jnp.sqrt(1.0 - b)
        var = b * (1.0 - ab_prev) / (1.0 - ab)
        return mean + jnp.sqrt(var) * jax.random.normal(kk, x.shape, dtype), extra

    result = _guarded_scan(step, x_T, (ks, jax.random.split(key, n_steps)))[0]
    return _finish(result, throw)


_METHODS = ("euler", "heun", "ode", "pc", "ddpm", "ddim", "edm", "dpmpp2m")


def sample(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    n_samples: int,
    *,
    method: str = "euler",
    throw: bool = False,
    **options,
) -> SampleResult:
    """Draw ``n_samples`` samples of shape ``shape`` (terminal draw + vmapped sampler).

    ``method``: ``"euler"``/``"heun"`` (reverse SDE), ``"ode"`` (probability flow),
    ``"pc"`` (predictor–corrector) or ``"ddpm"`` (ancestral). ``options`` go to the sampler.
    Few-step samplers: ``"ddim"``, ``"edm"`` (EDM Heun) and ``"dpmpp2m"`` (DPM-Solver++(2M)).
    Returns a :class:`SampleResult` with ``x`` of shape ``(n_samples, *shape)`` and one
    ``status``/``n_steps`` per sample; ``throw=True`` raises if any sample failed.

    Examples:
        >>> import jax
        >>> from jaxda.diffusion import vp_linear
        >>> res = sample(jax.random.key(0), lambda x, t: -x, vp_linear(), (2,), 3, n_steps=10)
        >>> res.x.shape, res.status.tolist()
        ((3, 2), [0, 0, 0])
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    n_samples = check_count("n_samples", n_samples)
    try:
        shape = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of integers, got {shape!r}") from None
    if any(n < 1 for n in shape):
        raise ValueError(f"shape must have positive entries, got {shape}")
    for name in ("key", "x_T", "solver"):
        if name in options:
            raise ValueError(f"option {name!r} is set by sample(), do not pass it")
    k_init, k_run = jax.random.split(key)
    x_T = sde.sample_terminal(k_init, (n_samples, *shape))
    keys = jax.random.split(k_run, n_samples)
    if method in ("euler", "heun"):
        fn = lambda k, x: reverse_sde(k, score_fn, sde, x, solver=method, **options)  # noqa: E731
    elif method == "ode":
        fn = lambda k, x: probability_flow(score_fn, sde, x, **options)  # noqa: E731
    elif method == "pc":
        fn = lambda k, x: predictor_corrector(k, score_fn, sde, x, **options)  # noqa: E731
    elif method in ("ddim", "edm", "dpmpp2m"):
        from . import _fast_samplers as fs  # imports this module: import at call time

        if method == "dpmpp2m":
            fn = lambda k, x: fs.dpmpp_2m(score_fn, sde, x, **options)  # noqa: E731
        else:
            fast = fs.ddim if method == "ddim" else fs.edm_heun
            fn = lambda k, x: fast(k, score_fn, sde, x, **options)  # noqa: E731
    else:
        fn = lambda k, x: ddpm_ancestral(k, score_fn, sde, x, **options)  # noqa: E731
    return _finish(jax.vmap(fn)(keys, x_T), throw)
