r"""The result type of the gradient-based solvers, and helpers they share.

Statuses are :class:`jaxda.core.Status` codes (``SUCCESS``, ``MAX_STEPS``,
``LINESEARCH_FAILED``, ``NONFINITE``, ``STAGNATED``) stored as ``int32`` arrays, so they
travel through ``jit`` and ``vmap``; ``throw=True`` in the solvers calls
:func:`jaxda.core.raise_on_failure`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core import Status, is_concrete
from ._result import History


class OptimizeResult(NamedTuple):
    """Outcome of a gradient-based solver (a pytree: it goes through ``jit``/``vmap``).

    Attributes:
        x: the final iterate, with the same pytree structure as ``x0``.
        f: objective value at ``x``.
        grad_norm: norm of the gradient at ``x`` (the norm the tolerance uses).
        n_steps: iterations performed.
        n_evaluations: objective evaluations (each with its gradient, or Hessian for Newton).
        status: a :class:`jaxda.core.Status` code as an ``int32`` array.
        history: :class:`History` with ``f``, ``grad_norm`` and cumulative ``n_evaluations``
            after each iteration, entry ``0`` at ``x0``; entries past ``n_steps`` are ``nan``
            (``-1`` for the counts), fixed length ``max_steps + 1``.
        hess_inv: BFGS inverse-Hessian approximation on the flattened parameters
            (``None`` for other solvers).
    """

    x: Any
    f: Float[Array, ""]
    grad_norm: Float[Array, ""]
    n_steps: Int[Array, ""]
    n_evaluations: Int[Array, ""]
    status: Int[Array, ""]
    history: History
    hess_inv: Any = None

    @property
    def success(self) -> Array:
        """``status == SUCCESS`` (a boolean array)."""
        return self.status == Status.SUCCESS


# ---------------------------------------------------------------------------
# helpers shared by the solvers (not public API)

RUNNING = -1


def flatten_problem(objective, x0, args: tuple):
    """Ravel the pytree ``x0`` and wrap ``objective(x, *args)`` as a function of a flat vector.

    Returns ``(x_flat, unravel, fun_flat)``. Integer leaves are promoted to the
    default float dtype.
    """
    from jax.flatten_util import ravel_pytree

    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
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
        out = jnp.asarray(objective(unravel(z), *args))
        if jnp.shape(out) != ():
            raise ValueError(f"objective must return a scalar, got shape {jnp.shape(out)}")
        return out

    return x_flat, unravel, fun_flat


def check_iterations(max_steps: int, gtol: float) -> None:
    if int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if is_concrete(gtol) and not float(gtol) >= 0:
        raise ValueError(f"gtol must be >= 0, got {gtol}")


def grad_norm(g: Array, norm: float) -> Array:
    """``||g||_norm`` for ``norm`` in ``{2, inf}``."""
    if norm == jnp.inf:
        return jnp.max(jnp.abs(g))
    if norm == 2:
        return jnp.linalg.norm(g)
    raise ValueError(f"norm must be 2 or jnp.inf, got {norm}")


def empty_history(max_steps: int, dtype: Any) -> History:
    """A history of length ``max_steps + 1`` filled with ``nan`` (counts ``-1``)."""
    nan = jnp.full((max_steps + 1,), jnp.nan, dtype)
    return History(f=nan, n_evaluations=jnp.full((max_steps + 1,), -1, jnp.int32), grad_norm=nan)


def record(
    history: History, k: Array | int, f: Array, n_evaluations: Array | int, gnorm: Array
) -> History:
    """Write entry ``k`` of the history."""
    return History(
        f=history.f.at[k].set(f),
        n_evaluations=history.n_evaluations.at[k].set(jnp.asarray(n_evaluations, jnp.int32)),
        grad_norm=history.grad_norm.at[k].set(gnorm),
    )


def final_status(status: Array) -> Array:
    """Map the RUNNING sentinel (should not survive the loop) to MAX_STEPS."""
    return jnp.where(status == RUNNING, Status.MAX_STEPS, status).astype(jnp.int32)


def step_status(f: Array, g: Array, gnorm: Array, k: Array, max_steps: int, gtol) -> Array:
    """Status after iteration ``k`` (1-based count of finished iterations)."""
    nonfinite = ~(jnp.isfinite(f) & jnp.all(jnp.isfinite(g)))
    return jnp.where(
        nonfinite,
        Status.NONFINITE,
        jnp.where(
            gnorm <= gtol,
            Status.SUCCESS,
            jnp.where(k >= max_steps, Status.MAX_STEPS, RUNNING),
        ),
    ).astype(jnp.int32)


ROUNDOFF_FACTOR = 16.0


def roundoff_tol(dtype: Any) -> float:
    """Relative tolerance at which changes are round-off: ``16 ε`` of ``dtype``.

    ``1.9e-6`` in float32, ``3.6e-15`` in float64.
    """
    return ROUNDOFF_FACTOR * float(jnp.finfo(dtype).eps)


def model_negligible(x: Array, f: Array, g: Array, p: Array, tol: float) -> tuple[Array, Array]:
    """Whether the (quasi-)Newton step ``p`` can still change ``x`` / ``f`` measurably.

    Returns ``(small_x, small_f)``: ``small_x`` when the step is below the resolution of ``x``
    (``||p||_∞ <= tol ||x||_∞``), ``small_f`` when the decrease the quadratic model predicts
    for the full step, ``-gᵀp / 2``, is below the resolution of ``f`` (``<= tol |f|``).
    """
    finite = jnp.all(jnp.isfinite(p))
    small_x = jnp.max(jnp.abs(p)) <= tol * jnp.max(jnp.abs(x))
    small_f = -0.5 * jnp.vdot(g, p) <= tol * jnp.abs(f)
    return small_x & finite, small_f & finite


def newton_like_status(
    *,
    f: Array,
    g: Array,
    gnorm: Array,
    k: Array,
    max_steps: int,
    gtol: Any,
    model: tuple[Array, Array],
    no_progress: Array,
    f_prev: Array,
    step: Array,
    x: Array,
    tol: float,
) -> Array:
    """Status after iteration ``k`` of Newton/BFGS: the stopping rule, in priority order.

    ``model = (small_x, small_f)`` from :func:`model_negligible` for the *next* step;
    ``tol = 16 ε`` of the dtype (:func:`roundoff_tol`).

    1. ``NONFINITE``: ``f`` or ``g`` is nan/inf.
    2. ``SUCCESS``: ``||g|| <= gtol``, or the next step is below the resolution of ``x``.
    3. The solver stalled: the line search found no acceptable step (``no_progress``), or the
       step taken changed ``f`` by at most ``tol |f|`` or ``x`` by at most ``tol ||x||_∞``. Then
       ``SUCCESS`` if the model predicts no decrease measurable in ``f`` either (a minimum to
       working precision, e.g. float32 with a ``gtol`` below its round-off), otherwise
       ``LINESEARCH_FAILED`` (no acceptable step) or ``STAGNATED`` (steps at round-off).
    4. ``MAX_STEPS`` once ``k >= max_steps``, else still running.
    """
    small_x, small_f = model
    nonfinite = ~(jnp.isfinite(f) & jnp.all(jnp.isfinite(g)))
    f_stag = jnp.abs(f - f_prev) <= tol * jnp.maximum(jnp.abs(f), jnp.abs(f_prev))
    x_stag = jnp.max(jnp.abs(step)) <= tol * jnp.max(jnp.abs(x))
    stalled = no_progress | f_stag | x_stag
    status = jnp.where(k >= max_steps, Status.MAX_STEPS, RUNNING)
    status = jnp.where(f_stag | x_stag, Status.STAGNATED, status)
    status = jnp.where(no_progress, Status.LINESEARCH_FAILED, status)
    converged = (gnorm <= gtol) | small_x | (stalled & small_f)
    status = jnp.where(converged, Status.SUCCESS, status)
    return jnp.where(nonfinite, Status.NONFINITE, status).astype(jnp.int32)
