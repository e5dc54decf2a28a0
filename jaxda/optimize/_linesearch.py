r"""Line searches in pure JAX (``lax.while_loop``): backtracking Armijo and strong Wolfe.

Both search along a descent direction :math:`p` from :math:`x` for the step
:math:`α` of :math:`φ(α) = J(x + α p)`, with :math:`φ'(α) = ∇J(x+αp)^T p`.

* **Armijo (sufficient decrease)**: :math:`φ(α) ≤ φ(0) + c_1 α φ'(0)`;
  backtracking tries :math:`α_0, ρα_0, ρ^2α_0, …` until it holds.
* **Strong Wolfe**: Armijo plus the curvature condition
  :math:`|φ'(α)| ≤ c_2 |φ'(0)|`, found by bracketing (Nocedal & Wright 2006,
  Algorithm 3.5) then *zoom* (Algorithm 3.6) with safeguarded cubic interpolation
  (their eq. 3.59), falling back to bisection.

Each trial costs one evaluation of the objective and its gradient. Both
functions work on flat vectors ``x`` and ``p`` and take
``value_and_grad(x) -> (f, g)``. They never raise: the result carries a
``success`` flag (and, on failure, the best point found that satisfies the
Armijo condition, if any), so they can be used under ``jit``/``vmap``.

Reference:
    J. Nocedal and S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, §3.1, §3.5.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> vg = jax.value_and_grad(lambda x: jnp.sum((x - 1.0) ** 2))
    >>> x = jnp.zeros(2); f0, g0 = vg(x)
    >>> res = strong_wolfe(vg, x, -g0, f0, g0)
    >>> bool(res.success), float(res.alpha)
    (True, 0.5)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

ValueAndGrad = Callable[[Array], tuple[Array, Array]]


class LineSearchResult(NamedTuple):
    """Accepted step ``alpha`` with the objective ``f`` and gradient ``grad`` at ``x + alpha p``.

    ``success`` is ``False`` when no step satisfied the conditions; then ``alpha``
    is the best Armijo step found, or ``0`` (``f``/``grad`` at ``x``) if none.
    """

    alpha: Float[Array, ""]
    f: Float[Array, ""]
    grad: Float[Array, " n"]
    n_evaluations: Int[Array, ""]
    success: Bool[Array, ""]


def _check_constants(c1: float, c2: float | None = None) -> None:
    if not 0.0 < c1 < 1.0:
        raise ValueError(f"c1 must be in (0, 1), got {c1}")
    if c2 is not None and not c1 < c2 < 1.0:
        raise ValueError(f"c2 must be in (c1, 1) = ({c1}, 1), got {c2}")


def backtracking_armijo(
    value_and_grad: ValueAndGrad,
    x: Float[Array, " n"],
    p: Float[Array, " n"],
    f0: Float[Array, ""],
    g0: Float[Array, " n"],
    *,
    alpha_init: float | Array = 1.0,
    c1: float = 1e-4,
    shrink: float = 0.5,
    max_steps: int = 40,
) -> LineSearchResult:
    r"""Backtracking: the first of :math:`α_0ρ^j` (``j = 0..max_steps-1``) with sufficient decrease.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> vg = jax.value_and_grad(lambda x: jnp.sum(x**2))
        >>> x = jnp.ones(1); f0, g0 = vg(x)
        >>> float(backtracking_armijo(vg, x, -g0, f0, g0).alpha)
        0.5
    """
    _check_constants(c1)
    if not 0.0 < shrink < 1.0:
        raise ValueError(f"shrink must be in (0, 1), got {shrink}")
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    d0 = jnp.vdot(g0, p)
    a0 = jnp.asarray(alpha_init, dtype=x.dtype)

    def cond(s):
        i, _, _, _, ok = s
        return (~ok) & (i < max_steps)

    def body(s):
        i, _, _, _, _ = s
        a = a0 * shrink**i
        f, g = value_and_grad(x + a * p)
        ok = jnp.isfinite(f) & (f <= f0 + c1 * a * d0) & jnp.all(jnp.isfinite(g))
        return i + 1, a, f, g, ok

    init = (jnp.asarray(0), jnp.zeros_like(a0), f0, g0, jnp.asarray(False))
    n, a, f, g, ok = jax.lax.while_loop(cond, body, init)
    a = jnp.where(ok, a, 0.0)
    f = jnp.where(ok, f, f0)
    g = jnp.where(ok, g, g0)
    return LineSearchResult(a, f, g, n, ok)


def _cubic_min(a, fa, da, b, fb, db):
    """Minimizer of the cubic interpolating φ, φ' at ``a`` and ``b`` (N&W eq. 3.59); nan if none."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
    return b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)


class _WolfeState(NamedTuple):
    i: Array
    done: Array
    zoom: Array
    a_next: Array  # next trial in the bracketing stage
    a_prev: Array
    f_prev: Array
    d_prev: Array
    g_prev: Array
    a_lo: Array
    f_lo: Array
    d_lo: Array
    g_lo: Array
    a_hi: Array
    f_hi: Array
    d_hi: Array
    a_star: Array
    f_star: Array
    g_star: Array


def strong_wolfe(
    value_and_grad: ValueAndGrad,
    x: Float[Array, " n"],
    p: Float[Array, " n"],
    f0: Float[Array, ""],
    g0: Float[Array, " n"],
    *,
    alpha_init: float | Array = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    alpha_max: float = 1e10,
    max_steps: int = 40,
) -> LineSearchResult:
    r"""Strong-Wolfe line search (Nocedal & Wright Alg. 3.5 bracketing + Alg. 3.6 zoom).

    Finds :math:`α` with :math:`φ(α) ≤ φ(0) + c_1αφ'(0)` and :math:`|φ'(α)| ≤ c_2|φ'(0)|`.
    Bracketing doubles the trial step (capped at ``alpha_max``) until a bracket is
    found; zoom shrinks ``[α_lo, α_hi]`` with safeguarded cubic interpolation
    (bisection when the cubic has no minimizer inside the middle 80 % of the
    interval). ``c2 = 0.9`` suits quasi-Newton methods, ``0.1`` nonlinear CG.
    ``p`` must be a descent direction (``g0·p < 0``); otherwise ``success`` is False.
    """
    _check_constants(c1, c2)
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    dt = x.dtype
    d0 = jnp.vdot(g0, p)
    zero = jnp.zeros((), dt)
    a0 = jnp.minimum(jnp.asarray(alpha_init, dt), alpha_max)
    inf = jnp.asarray(jnp.inf, dt)

    def trial(s: _WolfeState):
        lo, hi = s.a_lo, s.a_hi
        width = jnp.abs(hi - lo)
        a_c = _cubic_min(lo, s.f_lo, s.d_lo, hi, s.f_hi, s.d_hi)
        left = jnp.minimum(lo, hi) + 0.1 * width
        right = jnp.maximum(lo, hi) - 0.1 * width
        ok = jnp.isfinite(a_c) & (a_c >= left) & (a_c <= right)
        a_z = jnp.where(ok, a_c, 0.5 * (lo + hi))
        return jnp.where(s.zoom, a_z, s.a_next)

    def cond(s: _WolfeState):
        collapsed = s.zoom & (jnp.abs(s.a_hi - s.a_lo) <= 1e-12 * jnp.maximum(1.0, s.a_hi))
        return (~s.done) & (s.i < max_steps) & (~collapsed) & (d0 < 0)

    def body(s: _WolfeState):
        a = trial(s)
        f, g = value_and_grad(x + a * p)
        d = jnp.vdot(g, p)
        finite = jnp.isfinite(f) & jnp.isfinite(d)
        armijo_fail = (~finite) | (f > f0 + c1 * a * d0)
        curv = finite & (jnp.abs(d) <= -c2 * d0)

        # --- bracketing stage (Alg. 3.5)
        b_zoom1 = armijo_fail | ((s.i > 0) & (f >= s.f_prev))  # bracket [prev, a]
        b_accept = (~b_zoom1) & curv
        b_zoom2 = (~b_zoom1) & (~curv) & (d >= 0)  # bracket [a, prev]
        # --- zoom stage (Alg. 3.6)
        z_hi = armijo_fail | (f >= s.f_lo)
        z_accept = (~z_hi) & curv
        z_flip = (~z_hi) & (~curv) & (d * (s.a_hi - s.a_lo) >= 0)

        zoom = s.zoom
        accept = jnp.where(zoom, z_accept, b_accept)

        # new lo
        def pick(cond_, new, old):
            return jax.tree_util.tree_map(lambda u, v: jnp.where(cond_, u, v), new, old)

        cur = (a, f, d, g)
        prev = (s.a_prev, s.f_prev, s.d_prev, s.g_prev)
        lo = (s.a_lo, s.f_lo, s.d_lo, s.g_lo)
        hi = (s.a_hi, s.f_hi, s.d_hi)
        # bracketing transitions
        b_lo = pick(b_zoom1, prev, pick(b_zoom2, cur, lo))
        b_hi = pick(b_zoom1, cur[:3], pick(b_zoom2, prev[:3], hi))
        # zoom transitions
        z_new_hi = pick(z_hi, cur[:3], pick(z_flip, lo[:3], hi))
        z_new_lo = pick(z_hi, lo, cur)
        new_lo = pick(zoom, z_new_lo, b_lo)
        new_hi = pick(zoom, z_new_hi, b_hi)
        new_zoom = zoom | b_zoom1 | b_zoom2
        b_continue = ~(b_zoom1 | b_zoom2 | b_accept)
        new_prev = pick((~zoom) & b_continue, cur, prev)
        a_next = jnp.where((~zoom) & b_continue, jnp.minimum(2.0 * a, alpha_max), s.a_next)
        star = pick(accept, (a, f, g), (s.a_star, s.f_star, s.g_star))
        return _WolfeState(
            s.i + 1,
            accept,
            new_zoom,
            a_next,
            *new_prev,
            *new_lo,
            *new_hi,
            *star,
        )

    init = _WolfeState(
        jnp.asarray(0),
        jnp.asarray(False),
        jnp.asarray(False),
        a0,
        zero,
        f0,
        d0,
        g0,
        zero,
        f0,
        d0,
        g0,
        zero,
        inf,
        zero,
        zero,
        f0,
        g0,
    )
    s = jax.lax.while_loop(cond, body, init)
    # On failure fall back to the best Armijo point (α_lo of the bracket, or the last
    # accepted bracketing trial), which has φ(α_lo) < φ(0) whenever α_lo > 0.
    fb_a = jnp.where(s.zoom, s.a_lo, s.a_prev)
    fb_f = jnp.where(s.zoom, s.f_lo, s.f_prev)
    fb_g = jnp.where(s.zoom, s.g_lo, s.g_prev)
    use_fb = (~s.done) & (fb_a > 0) & (fb_f < f0)
    alpha = jnp.where(s.done, s.a_star, jnp.where(use_fb, fb_a, 0.0))
    f = jnp.where(s.done, s.f_star, jnp.where(use_fb, fb_f, f0))
    g = jnp.where(s.done, s.g_star, jnp.where(use_fb, fb_g, g0))
    return LineSearchResult(alpha, f, g, s.i, s.done)
