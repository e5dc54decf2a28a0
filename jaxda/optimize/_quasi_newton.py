"""The quasi-Newton iteration shared by :func:`bfgs` and :func:`lbfgs` (not public API).

Both take the step ``x ← x + α p`` along the quasi-Newton direction ``p = -H ∇J`` with a
strong-Wolfe line search (first trial step as scipy), store the pair ``(s, y)`` when its
curvature ``yᵀs`` is positive, and stop by the rules of
:func:`jaxda.optimize._status.newton_like_status`. They differ only in how ``H`` is kept (a
dense matrix, or the last ``m`` pairs), which the caller passes as three functions of its
``memory`` pytree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._linesearch import strong_wolfe
from ._status import (
    RUNNING,
    History,
    OptimizeResult,
    empty_history,
    final_status,
    grad_norm,
    model_negligible,
    newton_like_status,
    record,
    roundoff_tol,
    step_status,
)


class QuasiNewtonRun(NamedTuple):
    """Final state of :func:`quasi_newton`."""

    x: Array
    f: Array
    grad_norm: Array
    n_steps: Array
    n_evaluations: Array
    status: Array
    history: History
    memory: Any

    def result(self, unravel: Callable[[Array], Any], hess_inv: Any = None) -> OptimizeResult:
        """The :class:`OptimizeResult` of this run (``x`` unravelled to the caller's pytree)."""
        return OptimizeResult(
            x=unravel(self.x),
            f=self.f,
            grad_norm=self.grad_norm,
            n_steps=self.n_steps,
            n_evaluations=self.n_evaluations,
            status=self.status,
            history=self.history,
            hess_inv=hess_inv,
        )


def quasi_newton(
    fun: Callable[[Array], Array],
    x0: Array,
    memory0: Any,
    *,
    direction: Callable[[Any, Array], Array],
    forget: Callable[[Any], Any],
    update: Callable[[Any, Array, Array, Array, Array, Array], Any],
    unit_trial: Callable[[Any], Array],
    max_steps: int,
    gtol: float,
    norm: float,
    c1: float,
    c2: float,
    max_linesearch: int,
) -> QuasiNewtonRun:
    """Minimize ``fun`` from the flat ``x0``.

    ``direction(memory, g)`` is ``-H g``; ``forget(memory)`` resets ``H`` to the identity (after
    a non-descent direction); ``update(memory, k, s, y, ok, reset)`` stores the pair of iteration
    ``k`` when ``ok`` (positive curvature; ``reset``: the memory was just forgotten); ``unit_trial(memory)`` says whether the line search starts
    from ``α = 1`` (else scipy's ``min(1, 2.02 (J_k - J_{k-1}) / φ'(0))``).
    """
    vg = jax.value_and_grad(fun)
    dt = x0.dtype
    f0, g0 = vg(x0)
    gn0 = grad_norm(g0, norm)
    hist = record(empty_history(max_steps, dt), 0, f0, 1, gn0)
    status0 = step_status(f0, g0, gn0, jnp.asarray(0), max_steps, gtol)
    # scipy's convention for the first trial step: pretend J_{-1} = J_0 + ||g_0|| / 2
    f_old0 = f0 + 0.5 * jnp.linalg.norm(g0)
    tol = roundoff_tol(dt)
    init = (jnp.asarray(0), x0, f0, g0, gn0, memory0, f_old0, jnp.asarray(1), status0, hist)

    def cond(s):
        return s[8] == RUNNING

    def body(s):
        k, x, f, g, _, memory, f_old, nfev, _, hist = s
        p = direction(memory, g)
        d0 = jnp.vdot(g, p)
        bad_dir = ~(d0 < 0)
        memory = jax.lax.cond(bad_dir, forget, lambda mem: mem, memory)
        p = jnp.where(bad_dir, -g, p)
        d0 = jnp.where(bad_dir, -jnp.vdot(g, g), d0)
        a_init = 1.01 * 2.0 * (f - f_old) / d0
        a_init = jnp.where(jnp.isfinite(a_init) & (a_init > 0), jnp.minimum(1.0, a_init), 1.0)
        a_init = jnp.where(unit_trial(memory), 1.0, a_init)
        ls = strong_wolfe(vg, x, p, f, g, alpha_init=a_init, c1=c1, c2=c2, max_steps=max_linesearch)
        s_k = ls.alpha * p
        y_k = ls.grad - g
        ys = jnp.vdot(y_k, s_k)
        ok_curv = ys > 1e-12 * jnp.linalg.norm(y_k) * jnp.linalg.norm(s_k)
        memory = update(memory, k, s_k, y_k, ok_curv, bad_dir)
        x_new = x + s_k
        gn = grad_norm(ls.grad, norm)
        k1 = k + 1
        status = newton_like_status(
            f=ls.f,
            g=ls.grad,
            gnorm=gn,
            k=k1,
            max_steps=max_steps,
            gtol=gtol,
            model=model_negligible(x_new, ls.f, ls.grad, direction(memory, ls.grad), tol),
            no_progress=(~ls.success) & (ls.alpha == 0),
            f_prev=f,
            step=s_k,
            x=x_new,
            tol=tol,
        )
        nfev = nfev + ls.n_evaluations
        hist = record(hist, k1, ls.f, nfev, gn)
        return (k1, x_new, ls.f, ls.grad, gn, memory, f, nfev, status, hist)

    k, x, f, _, gn, memory, _, nfev, status, hist = jax.lax.while_loop(cond, body, init)
    return QuasiNewtonRun(x, f, gn, k, nfev, final_status(status), hist, memory)
