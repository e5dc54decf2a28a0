r"""Many restarts of a quasi-Newton solver through a pool of slots, in one compiled loop.

``jax.vmap(bfgs)`` over ``R`` starting points runs its ``while_loop`` until the *slowest*
restart stops: every lane pays ``max_r K_r`` iterations (``K_r``: iterations of restart ``r``),
so the batch costs ``R · max_r K_r`` lane-iterations. :func:`multistart` keeps a pool of ``B``
slots instead. Each pass of one ``lax.while_loop`` advances every running slot by one
quasi-Newton iteration (:meth:`jaxda.optimize._quasi_newton.QuasiNewton.step`, the very step of
:func:`bfgs` / :func:`lbfgs`); a slot whose restart has stopped (any
:class:`jaxda.core.Status`) writes its result to row ``r`` of the output and takes the next
pending start. The loop runs about

.. math:: \max\Big(\max_r K_r,\ \frac{1}{B}\sum_r K_r\Big) \text{ passes of width } B,

i.e. about :math:`\sum_r K_r` lane-iterations instead of :math:`R\max_r K_r` — the gain when a
few restarts need many more iterations than the typical one (Rosenbrock from random starts).
Slots that have stopped search along a zero direction, so they never lengthen the batched
line-search loop of the others. This is the work-queue ("dynamic scheduling") way of running
independent jobs of uneven length on a fixed number of parallel lanes.

The slots carry no :class:`History`: each pass writes the ``B`` new entries straight into the
``(R, max_steps + 1)`` output arrays, whereas a vmapped ``while_loop`` selects (copies) every
lane's whole history at every iteration — on small problems that copy, not the arithmetic, is
most of the time of ``jax.vmap(bfgs)``, so even ``pool_size = R`` is faster.

Each restart runs the steps of a solo run of the solver, so it takes the same iterates and
ends with the same status and counts; only the rounding of batched arithmetic differs (as it
does between ``jax.vmap(bfgs)`` and solo runs), so values agree to round-off, and on a rare
ill-conditioned path a line search may take one evaluation more or less.

Reference:
    Nocedal & Wright, *Numerical Optimization* (2006), Algorithm 6.1 (BFGS) and 7.5 (L-BFGS);
    multistart: Martí, Resende & Ribeiro, "Multi-start methods for combinatorial optimization",
    *European J. Operational Research* 226 (2013).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxda.optimize import bfgs, multistart, rosenbrock
    >>> starts = jax.random.uniform(jax.random.key(0), (20, 4), minval=-2.0, maxval=2.0)
    >>> res = multistart(bfgs, rosenbrock, starts, pool_size=8, gtol=1e-8)
    >>> res.x.shape, res.status.shape
    ((20, 4), (20,))
    >>> best = int(jnp.argmin(res.f))
    >>> bool(res.f[best] < 1e-10), bool(jnp.allclose(res.x[best], 1.0, atol=1e-6))
    (True, True)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ..core import raise_on_failure
from ._bfgs import bfgs, bfgs_method
from ._lbfgs import lbfgs, lbfgs_method
from ._quasi_newton import QuasiNewton
from ._result import History
from ._status import RUNNING, OptimizeResult, empty_history, final_status, flatten_problem

DEFAULT_POOL_SIZE = 256

# solver -> builder of its step-wise form (fun, n, dtype, **options) -> QuasiNewton
_METHODS: dict[Callable[..., Any], Callable[..., QuasiNewton]] = {
    bfgs: bfgs_method,
    lbfgs: lbfgs_method,
}
_NOT_OPTIONS = ("objective", "x0", "args", "throw")


def _select(mask: Array, new: Any, old: Any) -> Any:
    """Per slot (leading axis): ``new`` where ``mask``, else ``old``."""

    def pick(a, b):
        m = mask.reshape(mask.shape + (1,) * (a.ndim - 1))
        return jnp.where(m, a, b)

    return jax.tree.map(pick, new, old)


def multistart(
    solver: Callable[..., OptimizeResult],
    objective: Callable[..., Array],
    x0s: Any,
    args: tuple = (),
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    throw: bool = False,
    **options: Any,
) -> OptimizeResult:
    r"""Run ``solver(objective, x0s[r], args, **options)`` for every row ``r`` of ``x0s``, through
    a pool of ``pool_size`` slots that never waits for the slowest restart.

    Args:
        solver: :func:`bfgs` or :func:`lbfgs` (the function itself).
        objective: scalar function ``objective(x, *args)`` of a flat vector ``x``.
        x0s: starting points, shape ``(R, n)`` (one restart per row).
        args: extra arguments passed to ``objective`` (may be traced).
        pool_size: number ``B`` of restarts advanced together (``min(B, R)`` slots). Larger pools
            waste less time per pass on the loop's overhead, smaller ones less on slots idling
            at the end; the default 256 was the fastest or within 15 % of it in three runs
            of 1,000 restarts of 10-D Rosenbrock on a 2-core CPU (pool sizes 32 to 1,000;
            ``benchmarks/bench_gradient_based.py``).
        throw: raise (eagerly, or via ``equinox.error_if`` under jit) unless every restart ends
            with ``SUCCESS``.
        **options: the solver's own options (``max_steps``, ``gtol``, ``norm``, ``c1``, ``c2``,
            ``max_linesearch``; ``memory`` for :func:`lbfgs`), with the solver's defaults.

    Returns:
        The :class:`OptimizeResult` of the solver with every field stacked over restarts
        (leading axis ``R``, in the order of ``x0s``): what ``jax.vmap`` of the solver returns.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.optimize import lbfgs, multistart, sphere
        >>> res = multistart(lbfgs, sphere, jnp.array([[1.0, 2.0], [-3.0, 0.5], [0.0, 0.0]]))
        >>> res.status.tolist(), res.n_steps.tolist()  # the start at the minimum takes no step
        ([0, 0, 0], [2, 2, 0])
    """
    builder = _METHODS.get(solver)
    if builder is None:
        raise ValueError(
            f"solver must be jaxda.optimize.bfgs or jaxda.optimize.lbfgs, got {solver!r}"
        )
    if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
        raise ValueError(f"pool_size must be a positive int, got {pool_size!r}")
    x0s = jnp.asarray(x0s)
    if x0s.ndim != 2 or x0s.shape[0] < 1 or x0s.shape[1] < 1:
        raise ValueError(f"x0s must have shape (R, n) with R, n >= 1, got {x0s.shape}")
    if not jnp.issubdtype(x0s.dtype, jnp.inexact):
        x0s = x0s.astype(jnp.result_type(float))
    try:
        bound = inspect.signature(solver).bind(objective, x0s[0], args, **options)
    except TypeError as e:
        raise ValueError(f"options: {e} (options of {solver.__name__})") from None
    bound.apply_defaults()
    opts = {k: v for k, v in bound.arguments.items() if k not in _NOT_OPTIONS}
    _, _, fun = flatten_problem(objective, x0s[0], args)
    R, n = x0s.shape
    qn = builder(fun, n, x0s.dtype, **opts)
    res = _run_pool(qn, x0s, min(pool_size, R))
    return raise_on_failure(res) if throw else res


def _run_pool(qn: QuasiNewton, x0s: Array, B: int) -> OptimizeResult:
    R = x0s.shape[0]
    init = jax.vmap(qn.init)
    step = jax.vmap(qn.step)
    keep_memory = qn.hess_inv(qn.memory0) is not None

    def kept(s):  # the fields of a stopped state that go into the result
        mem = s.memory if keep_memory else None
        return (s.x, s.f, s.grad_norm, s.k, s.n_evaluations, s.status, mem)

    def record_rows(hist, mask, owner, s):
        # history entry k of each masked slot's restart, written straight into the output
        # (R, max_steps + 1) arrays: O(B) work per pass, no per-slot history to carry
        rows = jnp.where(mask, owner, R)  # R: out of range, dropped

        def put(h, v):
            return h.at[rows, s.k].set(v.astype(h.dtype), mode="drop")

        return History(
            f=put(hist.f, s.f),
            n_evaluations=put(hist.n_evaluations, s.n_evaluations),
            grad_norm=put(hist.grad_norm, s.grad_norm),
        )

    slots = init(x0s[:B])
    owner = jnp.arange(B, dtype=jnp.int32)  # restart held by each slot; R = none
    hist = jax.tree.map(
        lambda a: jnp.broadcast_to(a, (R, *a.shape)), empty_history(qn.max_steps, x0s.dtype)
    )
    hist = record_rows(hist, jnp.ones(B, bool), owner, slots)
    # output rows, filled as restarts stop (shapes of one solo result, stacked over R)
    one = jax.eval_shape(lambda x: kept(qn.init(x)), x0s[0])
    out = jax.tree.map(lambda a: jnp.zeros((R, *a.shape), a.dtype), one)

    def cond(c):
        return jnp.any(c[1] < R)

    def body(c):
        slots, owner, nxt, out, hist = c
        running = (slots.status == RUNNING) & (owner < R)
        slots = _select(running, step(slots), slots)
        hist = record_rows(hist, running, owner, slots)
        done = (slots.status != RUNNING) & (owner < R)

        def harvest(out):
            rows = jnp.where(done, owner, R)  # R: out of range, dropped
            return jax.tree.map(lambda o, v: o.at[rows].set(v, mode="drop"), out, kept(slots))

        out = jax.lax.cond(jnp.any(done), harvest, lambda o: o, out)
        # the stopped slots take the next pending starts, in order
        new_owner = jnp.minimum(nxt + jnp.cumsum(done, dtype=jnp.int32) - 1, R)
        owner = jnp.where(done, new_owner, owner)
        nxt = nxt + jnp.sum(done, dtype=jnp.int32)
        refill = done & (owner < R)

        def load(c):
            slots, hist = c
            slots = _select(refill, init(x0s[jnp.minimum(owner, R - 1)]), slots)
            return slots, record_rows(hist, refill, owner, slots)

        slots, hist = jax.lax.cond(jnp.any(refill), load, lambda c: c, (slots, hist))
        return slots, owner, nxt, out, hist

    carry = (slots, owner, jnp.asarray(B, jnp.int32), out, hist)
    _, _, _, out, hist = jax.lax.while_loop(cond, body, carry)
    x, f, gn, k, nfev, status, memory = out
    return OptimizeResult(
        x=x,
        f=f,
        grad_norm=gn,
        n_steps=k,
        n_evaluations=nfev,
        status=final_status(status),
        history=hist,
        hess_inv=None if memory is None else qn.hess_inv(memory),
    )
