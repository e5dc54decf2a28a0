"""The quasi-Newton iteration shared by :func:`bfgs` and :func:`lbfgs` (not public API).

Both take the step ``x ← x + α p`` along the quasi-Newton direction ``p = -H ∇J`` with a
strong-Wolfe line search (first trial step as scipy), store the pair ``(s, y)`` when its
curvature ``yᵀs`` is positive, and stop by the rules of
:func:`jaxda.optimize._status.newton_like_status`. They differ only in how ``H`` is kept (a
dense matrix, or the last ``m`` pairs), which the caller passes as three functions of its
``memory`` pytree.

The iteration is written in step-wise form: :meth:`QuasiNewton.init` evaluates the start,
:meth:`QuasiNewton.step` performs one iteration on a :class:`QuasiNewtonState`, and
:meth:`QuasiNewton.run` loops ``step`` in a ``lax.while_loop`` while the status is running.
:func:`jaxda.optimize.multistart` drives the same ``init``/``step`` over a pool of restarts, so a
restart run there goes through exactly the iterates of a solo run.
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


class QuasiNewtonState(NamedTuple):
    """State of one quasi-Newton run after ``k`` iterations (flat parameters)."""

    k: Array
    x: Array
    f: Array
    g: Array
    grad_norm: Array
    memory: Any
    f_old: Array  # objective before the last step (scipy's first-trial rule)
    n_evaluations: Array
    status: Array  # RUNNING or a jaxda.core.Status code


class QuasiNewton(NamedTuple):
    """A quasi-Newton method on a flat objective ``fun``, as ``init`` / ``step`` / ``run``.

    ``direction(memory, g)`` is ``-H g``; ``forget(memory)`` resets ``H`` to the identity (after
    a non-descent direction); ``update(memory, k, s, y, ok, reset)`` stores the pair of iteration
    ``k`` when ``ok`` (positive curvature; ``reset``: the memory was just forgotten);
    ``unit_trial(memory)`` says whether the line search starts from ``α = 1`` (else scipy's
    ``min(1, 2.02 (J_k - J_{k-1}) / φ'(0))``); ``hess_inv(memory)`` is what the result reports as
    ``hess_inv`` (``None`` when there is nothing to report).
    """

    fun: Callable[[Array], Array]
    memory0: Any
    direction: Callable[[Any, Array], Array]
    forget: Callable[[Any], Any]
    update: Callable[[Any, Array, Array, Array, Array, Array], Any]
    unit_trial: Callable[[Any], Array]
    hess_inv: Callable[[Any], Any]
    max_steps: int
    gtol: Any
    norm: float
    c1: float
    c2: float
    max_linesearch: int

    def init(self, x0: Array) -> QuasiNewtonState:
        """The state at ``x0`` (one evaluation; already stopped if ``x0`` is a minimum)."""
        f0, g0 = jax.value_and_grad(self.fun)(x0)
        gn0 = grad_norm(g0, self.norm)
        status0 = step_status(f0, g0, gn0, jnp.asarray(0), self.max_steps, self.gtol)
        # scipy's convention for the first trial step: pretend J_{-1} = J_0 + ||g_0|| / 2
        f_old0 = f0 + 0.5 * jnp.linalg.norm(g0)
        return QuasiNewtonState(
            jnp.asarray(0), x0, f0, g0, gn0, self.memory0, f_old0, jnp.asarray(1), status0
        )

    def step(self, s: QuasiNewtonState) -> QuasiNewtonState:
        """One iteration: direction, strong-Wolfe line search, memory update, stopping rule.

        Meant for running states; on a stopped state (e.g. a finished lane under ``vmap``) the
        line search is skipped (zero direction) and the caller discards the result.
        """
        vg = jax.value_and_grad(self.fun)
        k, x, f, g, _, memory, f_old, nfev, status = s
        p = self.direction(memory, g)
        d0 = jnp.vdot(g, p)
        bad_dir = ~(d0 < 0)
        memory = jax.lax.cond(bad_dir, self.forget, lambda mem: mem, memory)
        p = jnp.where(bad_dir, -g, p)
        d0 = jnp.where(bad_dir, -jnp.vdot(g, g), d0)
        a_init = 1.01 * 2.0 * (f - f_old) / d0
        a_init = jnp.where(jnp.isfinite(a_init) & (a_init > 0), jnp.minimum(1.0, a_init), 1.0)
        a_init = jnp.where(self.unit_trial(memory), 1.0, a_init)
        # a stopped lane searches along p = 0, which the line search ends at once, so it never
        # holds up the batched line-search loop of the running lanes
        p_ls = jnp.where(status == RUNNING, p, jnp.zeros_like(p))
        ls = strong_wolfe(
            vg,
            x,
            p_ls,
            f,
            g,
            alpha_init=a_init,
            c1=self.c1,
            c2=self.c2,
            max_steps=self.max_linesearch,
        )
        s_k = ls.alpha * p
        y_k = ls.grad - g
        ys = jnp.vdot(y_k, s_k)
        ok_curv = ys > 1e-12 * jnp.linalg.norm(y_k) * jnp.linalg.norm(s_k)
        memory = self.update(memory, k, s_k, y_k, ok_curv, bad_dir)
        x_new = x + s_k
        gn = grad_norm(ls.grad, self.norm)
        k1 = k + 1
        tol = roundoff_tol(x.dtype)
        status = newton_like_status(
            f=ls.f,
            g=ls.grad,
            gnorm=gn,
            k=k1,
            max_steps=self.max_steps,
            gtol=self.gtol,
            model=model_negligible(x_new, ls.f, ls.grad, self.direction(memory, ls.grad), tol),
            no_progress=(~ls.success) & (ls.alpha == 0),
            f_prev=f,
            step=s_k,
            x=x_new,
            tol=tol,
        )
        nfev = nfev + ls.n_evaluations
        return QuasiNewtonState(k1, x_new, ls.f, ls.grad, gn, memory, f, nfev, status)

    def run(self, x0: Array) -> tuple[QuasiNewtonState, History]:
        """Iterate :meth:`step` from ``x0`` until the status is no longer running; also return
        the :class:`History` (entry ``k`` after iteration ``k``)."""

        def body(c):
            s, hist = c
            s = self.step(s)
            return s, record(hist, s.k, s.f, s.n_evaluations, s.grad_norm)

        s = self.init(x0)
        hist = record(empty_history(self.max_steps, x0.dtype), 0, s.f, 1, s.grad_norm)
        return jax.lax.while_loop(lambda c: c[0].status == RUNNING, body, (s, hist))

    def result(
        self, s: QuasiNewtonState, history: History, unravel: Callable[[Array], Any]
    ) -> OptimizeResult:
        """The :class:`OptimizeResult` of a stopped state (``x`` unravelled to the caller's
        pytree)."""
        return OptimizeResult(
            x=unravel(s.x),
            f=s.f,
            grad_norm=s.grad_norm,
            n_steps=s.k,
            n_evaluations=s.n_evaluations,
            status=final_status(s.status),
            history=history,
            hess_inv=self.hess_inv(s.memory),
        )
