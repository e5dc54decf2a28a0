r"""Result types shared by every optimizer in :mod:`jaxda.optimize`.

One convention for all of them (gradient-free and gradient-based):

* ``x``: the optimum found; ``f``: the objective value there;
* ``n_steps``: iterations / generations / chunks performed (the cap argument is ``max_steps``);
* ``n_evaluations``: objective evaluations spent;
* ``history``: a :class:`History` with one entry per step (``history.f``,
  ``history.n_evaluations`` and, for gradient-based solvers, ``history.grad_norm``);
* ``status``: a :class:`jaxda.core.Status` code as an ``int32`` array, so it travels through
  ``jit`` and ``vmap`` (a batch of restarts gives a batch of statuses); every solver takes
  ``throw=True`` to raise (:func:`jaxda.core.raise_on_failure`) instead.

Gradient-free methods spend a fixed budget: their status is ``SUCCESS`` when a finite objective
value was found and ``NONFINITE`` when every evaluation returned ``nan``/``±inf`` (non-finite
values are treated as ``+inf`` and can never become the best; ``n_nonfinite`` counts them, so
an objective undefined on part of the box is visible rather than silent).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core import Status, raise_on_failure


class History(NamedTuple):
    """Per-step record of a run (entry ``0`` is the initialization when the method has one).

    Attributes:
        f: objective after each step (gradient-free: best value so far, non-increasing).
            Gradient-based solvers stop early: entries past ``n_steps`` are ``nan``.
        n_evaluations: cumulative objective evaluations at each entry (gradient-based:
            ``-1`` past ``n_steps``).
        grad_norm: gradient norm after each step (gradient-based solvers; ``None`` otherwise).
    """

    f: Float[Array, " T"]
    n_evaluations: Int[Array, " T"]
    grad_norm: Any = None


class GradientFreeResult(NamedTuple):
    """Outcome of a gradient-free optimizer (a pytree: it goes through ``jit``/``vmap``).

    Attributes:
        x: best point found, shape ``(n,)``.
        f: objective value at ``x`` (``+inf`` if none was finite).
        n_steps: iterations / generations performed (grid search: chunks evaluated).
        n_evaluations: total number of objective evaluations spent.
        n_nonfinite: how many of them returned ``nan``/``±inf`` (counted as ``+inf``).
        history: :class:`History` of the best-so-far value after each step.
        status: ``Status.SUCCESS`` or ``Status.NONFINITE`` (no finite value at all), ``int32``.
    """

    x: Float[Array, " n"]
    f: Float[Array, ""]
    n_steps: Int[Array, ""]
    n_evaluations: Int[Array, ""]
    n_nonfinite: Int[Array, ""]
    history: History
    status: Int[Array, ""]

    @property
    def success(self) -> Array:
        """``status == SUCCESS`` (a boolean array)."""
        return self.status == Status.SUCCESS


def finite_or_inf(f: Array) -> tuple[Array, Array]:
    """Replace non-finite objective values by ``+inf``; also return how many there were."""
    f = jnp.asarray(f)
    ok = jnp.isfinite(f)
    return jnp.where(ok, f, jnp.inf), jnp.sum(~ok).astype(jnp.int32)


def make_result(
    x: Array,
    f: Array,
    history_f: Array,
    history_evaluations: Array,
    n_nonfinite: Array,
    throw: bool = False,
) -> GradientFreeResult:
    """Assemble a result; the status is derived from ``f``; ``throw`` raises unless SUCCESS."""
    status = jnp.where(jnp.isfinite(f), Status.SUCCESS, Status.NONFINITE).astype(jnp.int32)
    res = GradientFreeResult(
        x=x,
        f=f,
        n_steps=jnp.asarray(history_f.shape[0], jnp.int32),
        n_evaluations=jnp.asarray(history_evaluations[-1]),
        n_nonfinite=jnp.asarray(n_nonfinite, jnp.int32),
        history=History(f=history_f, n_evaluations=history_evaluations),
        status=status,
    )
    return raise_on_failure(res) if throw else res


def result_from_history(
    x: Array,
    f: Array,
    history_f: Array,
    n_init: int,
    n_per_step: int,
    n_nonfinite: Array,
    throw: bool = False,
) -> GradientFreeResult:
    """Result for a method spending ``n_init`` evaluations, then ``n_per_step`` per step.

    ``history_f[0]`` is the best value after the initialization; ``n_steps`` counts the steps
    after it.
    """
    idx_dtype = jnp.result_type(int)
    hist_evals = n_init + jnp.arange(history_f.shape[0], dtype=idx_dtype) * n_per_step
    res = make_result(x, f, history_f, hist_evals, n_nonfinite, throw=False)
    res = res._replace(n_steps=jnp.asarray(history_f.shape[0] - 1, jnp.int32))
    return raise_on_failure(res) if throw else res


def evaluations_to_target(result: Any, target: float | Array) -> Int[Array, "..."]:
    """Number of evaluations after which ``history.f <= target`` first held, else ``-1``.

    Works on any result with a :class:`History` (gradient-free or gradient-based), single or
    ``vmap``-batched (leading axes are kept). The resolution is one step (a whole population
    for population methods).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.optimize import random_search, sphere
        >>> res = random_search(jax.random.key(0), sphere, jnp.array([[-1.0], [1.0]]),
        ...                     max_steps=50, batch_size=10)
        >>> int(evaluations_to_target(res, 1e12))
        10
    """
    hist = result.history
    hit = hist.f <= target
    first = jnp.argmax(hit, axis=-1)
    evals = jnp.take_along_axis(hist.n_evaluations, first[..., None], axis=-1)[..., 0]
    return jnp.where(jnp.any(hit, axis=-1), evals, -1)
