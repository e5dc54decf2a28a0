r"""Damped Newton's method with an exact Hessian (``jax.hessian``) and a line search.

Newton's step

.. math:: x^{(k+1)} = x^{(k)} - α_k (H_k + λI)^{-1} ∇J(x^{(k)}),\qquad H_k = ∇^2 J(x^{(k)})

with a Levenberg-style damping :math:`λ ≥ 0` (default 0) and a step :math:`α_k`
either fixed (``line_search=None``: :math:`α_k = ` ``step_size``, the plain
formula) or found by backtracking Armijo / strong-Wolfe starting from ``step_size``.
The linear system is solved by Cholesky. If :math:`H_k + λI` is not positive
definite (the factorization fails), the fallback is the *modified Newton* step of
Nocedal & Wright §3.4: eigen-decompose and replace each eigenvalue by
:math:`\max(|μ_i|, δ)`, which always gives a descent direction. Near a
nondegenerate minimum, with :math:`λ = 0` and unit steps, convergence is quadratic.

Each iteration costs one gradient and one dense Hessian (:math:`O(n^2)` memory,
:math:`O(n^3)` solve): use BFGS for large ``n``.

Reference:
    Nocedal & Wright, *Numerical Optimization* (2006), §3.3–3.4.

Examples:
    >>> import jax.numpy as jnp
    >>> from jaxda.optimize import newton
    >>> res = newton(lambda x: jnp.sum(jnp.cosh(x - 1.0)), jnp.zeros(3))
    >>> int(res.status), [round(float(v), 6) for v in res.x]
    (0, [1.0, 1.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import Status, is_concrete, raise_on_failure
from ._linesearch import backtracking_armijo, strong_wolfe
from ._status import (
    RUNNING,
    OptimizeResult,
    check_iterations,
    empty_history,
    final_status,
    flatten_problem,
    grad_norm,
    model_negligible,
    newton_like_status,
    record,
    roundoff_tol,
    step_status,
)

LINE_SEARCHES = ("armijo", "wolfe", None)


def newton_direction(
    H: Float[Array, "n n"], g: Float[Array, " n"], damping: float | Array = 0.0
) -> Float[Array, " n"]:
    r"""Solve :math:`(H + λI)p = -g` by Cholesky, with the eigenvalue-modification fallback.

    Examples:
        >>> import jax.numpy as jnp
        >>> newton_direction(jnp.diag(jnp.array([2.0, -4.0])), jnp.array([2.0, 4.0])).tolist()
        [-1.0, -1.0]
    """
    n = g.shape[0]
    A = H + damping * jnp.eye(n, dtype=H.dtype)
    A = 0.5 * (A + A.T)
    L = jnp.linalg.cholesky(A)
    chol_ok = jnp.all(jnp.isfinite(L))

    def by_cholesky(_):
        z = jax.scipy.linalg.solve_triangular(L, -g, lower=True)
        return jax.scipy.linalg.solve_triangular(L.T, z, lower=False)

    def by_eigen(_):
        mu, Q = jnp.linalg.eigh(A)
        scale = jnp.maximum(1.0, jnp.max(jnp.abs(mu)))
        mu = jnp.maximum(jnp.abs(mu), 1e-8 * scale)
        return -Q @ ((Q.T @ g) / mu)

    return jax.lax.cond(chol_ok, by_cholesky, by_eigen, None)


def newton(
    objective: Callable[..., Array],
    x0: Any,
    args: tuple = (),
    *,
    max_steps: int = 100,
    gtol: float = 1e-8,
    norm: float = jnp.inf,
    step_size: float = 1.0,
    damping: float = 0.0,
    line_search: str | None = "armijo",
    max_linesearch: int = 40,
    throw: bool = False,
) -> OptimizeResult:
    """Minimize ``objective(x, *args)`` with damped Newton steps.

    Args:
        objective: twice-differentiable scalar function of a pytree ``x``.
        x0: starting point (any pytree of float arrays).
        args: extra arguments for ``objective``.
        max_steps: iteration bound (status ``MAX_STEPS`` when reached).
        gtol: stop when ``||∇J||_norm <= gtol``. Newton also stops at round-off (relative
            ``16 ε`` of the dtype): ``SUCCESS`` when the next Newton step can no longer change
            ``x``, or when it stalls where the model predicts no measurable decrease of ``J``;
            ``STAGNATED`` / ``LINESEARCH_FAILED`` when it stalls although the model predicts
            more (rule in ``jaxda.optimize._status.newton_like_status``).
        norm: ``jnp.inf`` or ``2``.
        step_size: α (fixed step, or the first trial of the line search).
        damping: Levenberg-style λ added to the Hessian diagonal.
        line_search: ``"armijo"`` (backtracking), ``"wolfe"`` (strong Wolfe) or ``None``.
        max_linesearch: evaluations allowed per line search.
        throw: raise unless the status is ``SUCCESS``.
    """
    check_iterations(max_steps, gtol)
    if line_search not in LINE_SEARCHES:
        raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}")
    if is_concrete(step_size) and not float(step_size) > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if is_concrete(damping) and not float(damping) >= 0:
        raise ValueError(f"damping must be >= 0, got {damping}")
    x_flat, unravel, fun = flatten_problem(objective, x0, args)
    vg = jax.value_and_grad(fun)
    hess = jax.hessian(fun)
    dt = x_flat.dtype

    tol = roundoff_tol(dt)

    def direction(x, g):
        p = newton_direction(hess(x), g, damping)
        return jnp.where(jnp.vdot(g, p) < 0, p, -g)

    f0, g0 = vg(x_flat)
    gn0 = grad_norm(g0, norm)
    p0 = direction(x_flat, g0)
    status0 = step_status(f0, g0, gn0, jnp.asarray(0), max_steps, gtol)
    status0 = jnp.where(
        (status0 == RUNNING) & model_negligible(x_flat, f0, g0, p0, tol)[0], Status.SUCCESS, status0
    ).astype(jnp.int32)
    hist = record(empty_history(max_steps, dt), 0, f0, 1, gn0)
    init = (jnp.asarray(0), x_flat, f0, g0, p0, gn0, jnp.asarray(1), status0, hist)

    def body(s):
        k, x, f, g, p, _, nfev, _, hist = s
        if line_search is None:
            f_new, g_new = vg(x + step_size * p)
            alpha, n_ls, ok = jnp.asarray(step_size, dt), 1, jnp.asarray(True)
        else:
            search = backtracking_armijo if line_search == "armijo" else strong_wolfe
            ls = search(vg, x, p, f, g, alpha_init=step_size, max_steps=max_linesearch)
            f_new, g_new, alpha, n_ls, ok = ls.f, ls.grad, ls.alpha, ls.n_evaluations, ls.success
        step = alpha * p
        x_new = x + step
        gn = grad_norm(g_new, norm)
        k1 = k + 1
        p_new = direction(x_new, g_new)  # the next iteration's step, used by the stopping rule
        status = newton_like_status(
            f=f_new,
            g=g_new,
            gnorm=gn,
            k=k1,
            max_steps=max_steps,
            gtol=gtol,
            model=model_negligible(x_new, f_new, g_new, p_new, tol),
            no_progress=(~ok) & (alpha == 0),
            f_prev=f,
            step=step,
            x=x_new,
            tol=tol,
        )
        nfev = nfev + n_ls
        hist = record(hist, k1, f_new, nfev, gn)
        return (k1, x_new, f_new, g_new, p_new, gn, nfev, status, hist)

    k, x, f, _, _, gn, nfev, status, hist = jax.lax.while_loop(
        lambda s: s[7] == RUNNING, body, init
    )
    res = OptimizeResult(
        x=unravel(x),
        f=f,
        grad_norm=gn,
        n_steps=k,
        n_evaluations=nfev,
        status=final_status(status),
        history=hist,
    )
    return raise_on_failure(res) if throw else res
