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

References: Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole (2021), *Score-based generative
modeling through stochastic differential equations*, ICLR.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array

from ._sde import SDE, ddpm_schedule

ScoreFn = Callable[[Array, Array], Array]

_SDE_SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun}
_ODE_SOLVERS = {"euler": diffrax.Euler, "heun": diffrax.Heun, "tsit5": diffrax.Tsit5}


def _check_steps(n_steps: int) -> None:
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")


def _t_end(sde: SDE, t_end: float | None) -> float:
    t_end = sde.t_min if t_end is None else float(t_end)
    if not 0.0 <= t_end < 1.0:
        raise ValueError(f"t_end must be in [0, 1), got {t_end}")
    return t_end


def reverse_sde(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Array,
    *,
    n_steps: int = 500,
    solver: str = "euler",
    t_end: float | None = None,
) -> Array:
    """Integrate the reverse-time SDE from ``x_T`` at ``t = 1`` to ``t_end`` (one sample).

    Args:
        key: PRNG key of the Brownian path.
        score_fn: ``(x, t) -> ∇ log p_t(x)``, ``x`` of the shape of ``x_T``, ``t`` a scalar.
        sde: the forward SDE.
        x_T: initial state, e.g. ``sde.sample_terminal(key, shape)``.
        n_steps: number of constant steps.
        solver: ``"euler"`` (Euler–Maruyama) or ``"heun"``.
        t_end: final time (default ``sde.t_min``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> sde = vp_linear()
        >>> x = reverse_sde(jax.random.key(0), lambda x, t: -x, sde, jnp.zeros(2), n_steps=10)
        >>> x.shape
        (2,)
    """
    _check_steps(n_steps)
    if solver not in _SDE_SOLVERS:
        raise ValueError(f"solver must be one of {sorted(_SDE_SOLVERS)}, got {solver!r}")
    t_end = _t_end(sde, t_end)
    shape = jnp.shape(x_T)
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
    sol = diffrax.diffeqsolve(terms, _SDE_SOLVERS[solver](), 0.0, s1, ds, y0, max_steps=n_steps + 2)
    assert sol.ys is not None  # SaveAt(t1=True) is diffrax's default
    return sol.ys[-1].reshape(shape)


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
) -> Array:
    r"""Integrate the probability-flow ODE ``dx/dt = f(t)x - ½g(t)² s_θ(x,t)`` from 1 to ``t_end``.

    Deterministic: the randomness is in ``x_T`` only. With ``solver="tsit5"`` and ``rtol``
    given, an adaptive PID step-size controller is used (``n_steps`` sets the first step).
    """
    _check_steps(n_steps)
    if solver not in _ODE_SOLVERS:
        raise ValueError(f"solver must be one of {sorted(_ODE_SOLVERS)}, got {solver!r}")
    t_end = _t_end(sde, t_end)
    shape = jnp.shape(x_T)
    y0 = jnp.ravel(x_T)
    s1 = 1.0 - t_end

    def drift(s, y, args):
        t = 1.0 - s
        x = y.reshape(shape)
        return -(sde.drift(t) * y - 0.5 * sde.diffusion(t) ** 2 * jnp.ravel(score_fn(x, t)))

    if rtol is not None:
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
    )
    assert sol.ys is not None  # SaveAt(t1=True) is diffrax's default
    return sol.ys[-1].reshape(shape)


def predictor_corrector(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    x_T: Array,
    *,
    n_steps: int = 500,
    n_corrector: int = 1,
    snr: float = 0.16,
    step_rule: str = "fixed",
    t_end: float | None = None,
) -> Array:
    r"""Predictor–corrector sampler (Song et al. 2021, Alg. 1–3), one sample.

    Predictor: Euler–Maruyama step of the reverse SDE from ``t`` to ``t - h``.
    Corrector: ``n_corrector`` Langevin MCMC steps targeting ``p_{t-h}``,

    .. math:: x ← x + ε\, s_θ(x, t) + \sqrt{2ε}\, z,\qquad
        ε = 2\,\mathrm{snr}^2\, v(x, t) .

    Song et al. set ``ε = 2(snr ‖z‖/‖s_θ‖)²`` with norms averaged over a batch; for one sample
    ``‖s_θ‖`` can be near zero and the step explodes. Two batch-free rules:

    * ``step_rule="fixed"`` (default): ``v = μ(t)² + σ(t)²``, the marginal variance of
      unit-variance data. State-independent, so the Langevin step leaves ``p_t`` invariant up
      to discretisation error (exact Gaussian moments in the tests).
    * ``step_rule="adaptive"``: ``v = min(d/‖s_θ(x,t)‖², μ² + σ²)``. Shrinks the step for stiff
      guided (posterior) scores, e.g. sharp observations, where the fixed rule diverges; the
      state-dependent step adds a small bias (no Metropolis correction).

    Loops are ``lax.scan``.
    """
    _check_steps(n_steps)
    if n_corrector < 0:
        raise ValueError(f"n_corrector must be >= 0, got {n_corrector}")
    if snr <= 0:
        raise ValueError(f"snr must be positive, got {snr}")
    if step_rule not in ("fixed", "adaptive"):
        raise ValueError(f"step_rule must be 'fixed' or 'adaptive', got {step_rule!r}")
    t_end = _t_end(sde, t_end)
    ts = jnp.linspace(1.0, t_end, n_steps + 1)
    dtype = jnp.result_type(x_T)

    def langevin(x, inp):
        k, t = inp
        z = jax.random.normal(k, x.shape, dtype)
        s = score_fn(x, t)
        v = sde.mean_coef(t) ** 2 + sde.std(t) ** 2
        if step_rule == "adaptive":
            v = jnp.minimum(s.size / jnp.maximum(jnp.sum(s**2), 1e-30), v)
        eps = 2.0 * snr**2 * v
        return x + eps * s + jnp.sqrt(2.0 * eps) * z, None

    def step(x, inp):
        k, t0, t1 = inp
        kp, kc = jax.random.split(k)
        h = t0 - t1
        g = sde.diffusion(t0)
        x = x - h * (sde.drift(t0) * x - g**2 * score_fn(x, t0))
        x = x + g * jnp.sqrt(h) * jax.random.normal(kp, x.shape, dtype)
        if n_corrector:
            kcs = jax.random.split(kc, n_corrector)
            x, _ = jax.lax.scan(langevin, x, (kcs, jnp.full((n_corrector,), t1)))
        return x, None

    keys = jax.random.split(key, n_steps)
    x, _ = jax.lax.scan(step, x_T, (keys, ts[:-1], ts[1:]))
    return x


def ddpm_ancestral(
    key: Array, score_fn: ScoreFn, sde: SDE, x_T: Array, *, n_steps: int = 1000
) -> Array:
    r"""Ancestral sampling of the DDPM chain of :func:`ddpm_schedule` (Ho et al. 2020, Alg. 2).

    .. math:: x_{k-1} = \frac{x_k + β_k s_θ(x_k, t_k)}{\sqrt{1-β_k}} + \tilde β_k^{1/2} z,\quad
        \tilde β_k = \frac{1-ᾱ_{k-1}}{1-ᾱ_k} β_k

    (``s_θ = -ε_θ/√(1-ᾱ_k)`` recovers the usual ε-parametrisation). Ends at ``t = 0``.
    """
    _check_steps(n_steps)
    sch = ddpm_schedule(sde, n_steps)
    dtype = jnp.result_type(x_T)
    ks = jnp.arange(n_steps, 0, -1)

    def step(x, inp):
        k, kk = inp
        b = sch.betas[k]
        ab, ab_prev = sch.alphas_bar[k], sch.alphas_bar[k - 1]
        mean = (x + b * score_fn(x, sch.t[k])) / jnp.sqrt(1.0 - b)
        var = b * (1.0 - ab_prev) / (1.0 - ab)
        return mean + jnp.sqrt(var) * jax.random.normal(kk, x.shape, dtype), None

    x, _ = jax.lax.scan(step, x_T, (ks, jax.random.split(key, n_steps)))
    return x


_METHODS = ("euler", "heun", "ode", "pc", "ddpm")


def sample(
    key: Array,
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    n_samples: int,
    *,
    method: str = "euler",
    **options,
) -> Array:
    """Draw ``n_samples`` samples of shape ``shape`` (terminal draw + vmapped sampler).

    ``method``: ``"euler"``/``"heun"`` (reverse SDE), ``"ode"`` (probability flow),
    ``"pc"`` (predictor–corrector) or ``"ddpm"`` (ancestral). ``options`` go to the sampler.
    Returns ``(n_samples, *shape)``.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    k_init, k_run = jax.random.split(key)
    x_T = sde.sample_terminal(k_init, (n_samples, *shape))
    keys = jax.random.split(k_run, n_samples)
    if method in ("euler", "heun"):
        fn = lambda k, x: reverse_sde(k, score_fn, sde, x, solver=method, **options)  # noqa: E731
    elif method == "ode":
        fn = lambda k, x: probability_flow(score_fn, sde, x, **options)  # noqa: E731
    elif method == "pc":
        fn = lambda k, x: predictor_corrector(k, score_fn, sde, x, **options)  # noqa: E731
    else:
        fn = lambda k, x: ddpm_ancestral(k, score_fn, sde, x, **options)  # noqa: E731
    return jax.vmap(fn)(keys, x_T)
