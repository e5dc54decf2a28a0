r"""Status codes and the result type shared by the gradient-based solvers.

The status is an ``int32`` array inside the result (like optimistix's ``RESULTS``),
so it travels through ``jit`` and ``vmap``: a batch of restarts gives a batch of
statuses. :func:`raise_on_failure` (or ``throw=True`` in the solvers) turns a
non-converged status into an error: eagerly a ``RuntimeError``, under ``jit`` an
``equinox`` runtime error attached to the result.

=====================  =====  ==========================================================
name                   value  meaning
=====================  =====  ==========================================================
``CONVERGED``          0      the gradient-norm (or step) tolerance was met
``MAX_ITERATIONS``     1      the iteration bound was reached first (also: fixed-budget
                              methods such as SGD, which have no convergence test)
``LINESEARCH_FAILED``  2      no step satisfying the line-search conditions was found
``NONFINITE``          3      the objective or its gradient became ``nan``/``inf``
=====================  =====  ==========================================================
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core import is_concrete


class SolverStatus(enum.IntEnum):
    """Integer status codes stored in :attr:`OptimizeResult.status`."""

    CONVERGED = 0
    MAX_ITERATIONS = 1
    LINESEARCH_FAILED = 2
    NONFINITE = 3


_MESSAGES = {
    SolverStatus.CONVERGED: "converged",
    SolverStatus.MAX_ITERATIONS: "maximum number of iterations reached",
    SolverStatus.LINESEARCH_FAILED: "line search failed to find an acceptable step",
    SolverStatus.NONFINITE: "objective or gradient became non-finite",
}


def status_message(status: int | Array) -> str:
    """Human-readable text for a (concrete, scalar) status code."""
    return _MESSAGES[SolverStatus(int(status))]


class OptimizeResult(NamedTuple):
    """Outcome of a gradient-based solver (a pytree: it goes through ``jit``/``vmap``).

    Attributes:
        x: the final iterate, with the same pytree structure as ``x0``.
        f: objective value at ``x``.
        grad_norm: norm of the gradient at ``x`` (the norm the tolerance uses).
        n_iterations: iterations performed.
        n_evaluations: objective evaluations (each with its gradient, or Hessian for Newton).
        status: a :class:`SolverStatus` code as an ``int32`` array.
        f_history: objective after each iteration, entry ``0`` at ``x0``; entries past
            ``n_iterations`` are ``nan`` (fixed length ``max_iter + 1``).
        grad_norm_history: gradient norm, same layout as ``f_history``.
        hess_inv: BFGS inverse-Hessian approximation on the flattened parameters
            (``None`` for other solvers).
    """

    x: Any
    f: Float[Array, ""]
    grad_norm: Float[Array, ""]
    n_iterations: Int[Array, ""]
    n_evaluations: Int[Array, ""]
    status: Int[Array, ""]
    f_history: Float[Array, " T"]
    grad_norm_history: Float[Array, " T"]
    hess_inv: Any = None

    @property
    def success(self) -> Array:
        """``status == CONVERGED`` (a boolean array)."""
        return self.status == SolverStatus.CONVERGED


def raise_on_failure(result: OptimizeResult) -> OptimizeResult:
    """Raise if ``result.status`` is not ``CONVERGED``.

    Eagerly (concrete status) this raises ``RuntimeError`` with the reason; under
    ``jit`` it attaches an :func:`equinox.error_if` check to ``result.x`` that fails
    when the compiled function runs. Under ``vmap`` any failing member raises.
    """
    status = result.status
    if is_concrete(status):
        arr = np.asarray(status)
        bad = arr != SolverStatus.CONVERGED
        if np.any(bad):
            first = int(arr[bad].ravel()[0]) if arr.ndim else int(arr)
            raise RuntimeError(
                f"optimizer did not converge: {status_message(first)} (status={first})"
            )
        return result
    failed = status != SolverStatus.CONVERGED
    leaves, tree = jax.tree_util.tree_flatten(result.x)
    msg = "optimizer did not converge (status != CONVERGED)"
    leaves = [eqx.error_if(leaf, jnp.any(failed), msg) for leaf in leaves]
    return result._replace(x=jax.tree_util.tree_unflatten(tree, leaves))


# ---------------------------------------------------------------------------
# helpers shared by the solvers (not public API)

RUNNING = -1


def flatten_problem(objective, x0, args: tuple):
    """Ravel the pytree ``x0`` and wrap ``objective(x, *args)`` as a function of a flat vector.

    Returns ``(x_flat, unravel, fun_flat)``. Integer leaves are promoted to the
    default float dtype.
    """
    from jax.flatten_util import ravel_pytree

    if not isinstance(args, tuple):
        raise ValueError(
            f"args must be a tuple of extra objective arguments, got {type(args).__name__}"
        )
    x0 = jax.tree_util.tree_map(
        lambda a: (
            jnp.asarray(a)
            if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)
            else jnp.asarray(a, jnp.result_type(float))
        ),
        x0,
    )
    x_flat, unravel = ravel_pytree(x0)
    if x_flat.size == 0:
        raise ValueError("x0 has no parameters")

    def fun_flat(z):
        out = objective(unravel(z), *args)
        if jnp.shape(out) != ():
            raise ValueError(f"objective must return a scalar, got shape {jnp.shape(out)}")
        return out

    return x_flat, unravel, fun_flat


def check_iterations(max_iter: int, gtol: float) -> None:
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if is_concrete(gtol) and not float(gtol) >= 0:
        raise ValueError(f"gtol must be >= 0, got {gtol}")


def grad_norm(g: Array, norm: float) -> Array:
    """``||g||_norm`` for ``norm`` in ``{2, inf}``."""
    if norm == jnp.inf:
        return jnp.max(jnp.abs(g))
    if norm == 2:
        return jnp.linalg.norm(g)
    raise ValueError(f"norm must be 2 or jnp.inf, got {norm}")


def final_status(status: Array) -> Array:
    """Map the RUNNING sentinel (should not survive the loop) to MAX_ITERATIONS."""
    return jnp.where(status == RUNNING, SolverStatus.MAX_ITERATIONS, status).astype(jnp.int32)


def step_status(f: Array, g: Array, gnorm: Array, k: Array, max_iter: int, gtol) -> Array:
    """Status after iteration ``k`` (1-based count of finished iterations)."""
    nonfinite = ~(jnp.isfinite(f) & jnp.all(jnp.isfinite(g)))
    return jnp.where(
        nonfinite,
        SolverStatus.NONFINITE,
        jnp.where(
            gnorm <= gtol,
            SolverStatus.CONVERGED,
            jnp.where(k >= max_iter, SolverStatus.MAX_ITERATIONS, RUNNING),
        ),
    ).astype(jnp.int32)
