r"""Limited-memory BFGS (L-BFGS) with a strong-Wolfe line search, in pure JAX.

For large ``n`` (variational problems) the dense ``n×n`` inverse Hessian of :func:`bfgs` is too
big. L-BFGS keeps only the last ``m`` pairs :math:`s_i = x^{(i+1)} - x^{(i)}`,
:math:`y_i = ∇J(x^{(i+1)}) - ∇J(x^{(i)})` and applies the BFGS inverse-Hessian approximation
(built from :math:`H_0 = γ_k I`, :math:`γ_k = s_{k-1}^T y_{k-1} / y_{k-1}^T y_{k-1}`) to the
gradient by the two-loop recursion (Nocedal & Wright 2006, Algorithm 7.4), in ``O(mn)`` time
and memory per iteration. Pairs whose curvature :math:`y^T s` is not positive are not stored.
Line search, stopping rules and statuses are those of :func:`bfgs`.

Reference:
    Nocedal & Wright, *Numerical Optimization* (2006), Algorithms 7.4 and 7.5; Liu & Nocedal
    (1989), *Math. Programming* 45.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxda.optimize import lbfgs, rosenbrock
    >>> res = lbfgs(rosenbrock, jnp.full(10, -1.0), gtol=1e-8)
    >>> int(res.status), bool(res.f < 1e-10)
    (0, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core import raise_on_failure
from ._quasi_newton import QuasiNewton
from ._status import OptimizeResult, check_iterations, flatten_problem


def two_loop_direction(
    g: Float[Array, " n"],
    S: Float[Array, "m n"],
    Y: Float[Array, "m n"],
    rho: Float[Array, " m"],
    n_stored: Int[Array, ""],
    head: Int[Array, ""],
) -> Float[Array, " n"]:
    """``-H g`` by the two-loop recursion over the ``n_stored`` newest pairs of the circular
    buffers ``S``, ``Y`` (the next write goes to ``head``); ``-g`` when none is stored."""
    m = S.shape[0]

    def newest_first(i, carry):
        q, alpha = carry
        j = (head - 1 - i) % m
        a = jnp.where(i < n_stored, rho[j] * jnp.vdot(S[j], q), 0.0)
        return q - a * Y[j], alpha.at[j].set(a)

    q, alpha = jax.lax.fori_loop(0, m, newest_first, (g, jnp.zeros(m, g.dtype)))
    last = (head - 1) % m
    gamma = jnp.where(n_stored > 0, jnp.vdot(S[last], Y[last]) / jnp.vdot(Y[last], Y[last]), 1.0)
    r = gamma * q

    def oldest_first(i, r):
        j = (head - m + i) % m
        b = rho[j] * jnp.vdot(Y[j], r)
        return jnp.where(i >= m - n_stored, r + S[j] * (alpha[j] - b), r)

    return -jax.lax.fori_loop(0, m, oldest_first, r)


def lbfgs(
    objective: Callable[..., Array],
    x0: Any,
    args: tuple = (),
    *,
    memory: int = 10,
    max_steps: int = 500,
    gtol: float = 1e-6,
    norm: float = jnp.inf,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_linesearch: int = 40,
    throw: bool = False,
) -> OptimizeResult:
    """Minimize ``objective(x, *args)`` with L-BFGS (``memory`` pairs) and a strong-Wolfe line
    search; arguments and result as :func:`bfgs` (``hess_inv`` is ``None``).

    Args:
        objective: scalar function of a pytree ``x`` (and ``args``), differentiable by JAX.
        x0: starting point (any pytree of float arrays).
        args: extra arguments passed to ``objective`` (may be traced).
        memory: number ``m >= 1`` of stored ``(s, y)`` pairs.
        max_steps: iteration bound (status ``MAX_STEPS`` when reached).
        gtol: stop when ``||∇J||_norm <= gtol`` (status ``SUCCESS``); the round-off stopping
            rules of :func:`bfgs` apply too.
        norm: ``jnp.inf`` (default, as scipy) or ``2``.
        c1, c2: Wolfe constants.
        max_linesearch: evaluations allowed per line search.
        throw: raise (eagerly, or via ``equinox.error_if`` under jit) unless ``SUCCESS``.
    """
    x_flat, unravel, fun = flatten_problem(objective, x0, args)
    qn = lbfgs_method(
        fun,
        x_flat.size,
        x_flat.dtype,
        memory=memory,
        max_steps=max_steps,
        gtol=gtol,
        norm=norm,
        c1=c1,
        c2=c2,
        max_linesearch=max_linesearch,
    )
    res = qn.result(*qn.run(x_flat), unravel)
    return raise_on_failure(res) if throw else res


def lbfgs_method(
    fun: Callable[[Array], Array],
    n: int,
    dtype: Any,
    *,
    memory: int,
    max_steps: int,
    gtol: float,
    norm: float,
    c1: float,
    c2: float,
    max_linesearch: int,
) -> QuasiNewton:
    """L-BFGS on the flat objective ``fun`` of ``n`` parameters, in step-wise form (not
    public)."""
    check_iterations(max_steps, gtol)
    if not isinstance(memory, int) or isinstance(memory, bool) or memory < 1:
        raise ValueError(f"memory must be a positive int, got {memory!r}")
    dt, m = dtype, memory
    zero = jnp.asarray(0)
    # (S, Y, rho, n_stored, head): circular buffers of the last m pairs
    memory0 = (jnp.zeros((m, n), dt), jnp.zeros((m, n), dt), jnp.zeros(m, dt), zero, zero)

    def update(mem, k, s_k, y_k, ok_curv, reset):
        del k, reset
        S, Y, rho, n_stored, head = mem
        S = jnp.where(ok_curv, S.at[head].set(s_k), S)
        Y = jnp.where(ok_curv, Y.at[head].set(y_k), Y)
        ys = jnp.where(ok_curv, jnp.vdot(y_k, s_k), 1.0)
        rho = jnp.where(ok_curv, rho.at[head].set(1.0 / ys), rho)
        head = jnp.where(ok_curv, (head + 1) % m, head)
        n_stored = jnp.where(ok_curv, jnp.minimum(n_stored + 1, m), n_stored)
        return S, Y, rho, n_stored, head

    return QuasiNewton(
        fun=fun,
        memory0=memory0,
        direction=lambda mem, g: two_loop_direction(g, *mem),
        forget=lambda mem: (*mem[:3], zero, mem[4]),
        update=update,
        unit_trial=lambda mem: mem[3] > 0,  # a scaled quasi-Newton step: try α = 1
        hess_inv=lambda mem: None,
        max_steps=max_steps,
        gtol=gtol,
        norm=norm,
        c1=c1,
        c2=c2,
        max_linesearch=max_linesearch,
    )
