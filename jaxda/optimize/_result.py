r"""Result type shared by the gradient-free optimizers.

Every gradient-free method (:func:`grid_search`, :func:`random_search`,
:func:`genetic_algorithm`, :func:`differential_evolution`,
:func:`simulated_annealing`, :func:`particle_swarm`) returns a
:class:`GradientFreeResult`. It is a NamedTuple of arrays, hence a pytree: it
travels through ``jit`` and ``vmap`` (a ``vmap`` over keys gives a result whose
fields carry a leading restart axis).

The status is an integer array (not a Python exception), so it survives ``jit``:
``Status.SUCCESS`` means the fixed budget was spent and a finite objective value
was found; ``Status.NONFINITE`` means every evaluation returned ``nan``/``±inf``
(non-finite objective values are treated as ``+inf`` and can never become the best).
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class Status(enum.IntEnum):
    """Integer status codes stored in :attr:`GradientFreeResult.status`."""

    SUCCESS = 0
    NONFINITE = 1


class GradientFreeResult(NamedTuple):
    """Outcome of a gradient-free optimizer.

    Attributes:
        x_best: best point found, shape ``(n,)``.
        f_best: objective value at ``x_best`` (``+inf`` if none was finite).
        n_evaluations: total number of objective evaluations spent.
        history: best-so-far objective value after each iteration/generation
            (entry ``0`` is the initialization when the method has one), shape ``(T,)``;
            non-increasing by construction.
        history_evaluations: cumulative number of evaluations at each ``history``
            entry, shape ``(T,)``; used by :func:`evaluations_to_target`.
        status: ``Status.SUCCESS`` (0) or ``Status.NONFINITE`` (1), an int array.
    """

    x_best: Float[Array, " n"]
    f_best: Float[Array, ""]
    n_evaluations: Int[Array, ""]
    history: Float[Array, " T"]
    history_evaluations: Int[Array, " T"]
    status: Int[Array, ""]


def make_result(
    x_best: Array,
    f_best: Array,
    history: Array,
    history_evaluations: Array,
) -> GradientFreeResult:
    """Assemble a result; the status is derived from ``f_best``."""
    status = jnp.where(jnp.isfinite(f_best), Status.SUCCESS, Status.NONFINITE).astype(jnp.int32)
    return GradientFreeResult(
        x_best=x_best,
        f_best=f_best,
        n_evaluations=jnp.asarray(history_evaluations[-1]),
        history=history,
        history_evaluations=history_evaluations,
        status=status,
    )


def result_from_history(
    x_best: Array, f_best: Array, history: Array, n_init: int, n_per_iter: int
) -> GradientFreeResult:
    """Result for a method spending ``n_init`` evaluations, then ``n_per_iter`` per history step.

    ``history[0]`` is the best value after the initialization.
    """
    idx_dtype = jnp.result_type(int)
    hist_evals = n_init + jnp.arange(history.shape[0], dtype=idx_dtype) * n_per_iter
    return make_result(x_best, f_best, history, hist_evals)


def evaluations_to_target(result: GradientFreeResult, target: float | Array) -> Int[Array, "..."]:
    """Number of evaluations after which ``history <= target`` first held, else ``-1``.

    Works on a single result or on a ``vmap``-batched one (leading axes are kept).
    The resolution is one iteration (a whole population for population methods).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.optimize import random_search, sphere
        >>> res = random_search(jax.random.key(0), sphere, jnp.array([[-1.0], [1.0]]),
        ...                     n_iterations=50, batch_size=10)
        >>> int(evaluations_to_target(res, 1e12))
        10
    """
    hit = result.history <= target
    first = jnp.argmax(hit, axis=-1)
    evals = jnp.take_along_axis(result.history_evaluations, first[..., None], axis=-1)[..., 0]
    return jnp.where(jnp.any(hit, axis=-1), evals, -1)
