r"""One status enum for the whole library, and the ``throw`` convention.

Every result that can fail (optimizers, ES-MDA/IES, filters run by the driver, training,
samplers) carries a ``status`` field: an ``int32`` array holding a :class:`Status` code, so it
travels through ``jit`` and ``vmap`` (a batch of restarts gives a batch of statuses), as
optimistix's ``RESULTS``. :func:`raise_on_failure` (``throw=True`` in the solvers) turns a
failed status into an error: eagerly a ``RuntimeError`` naming the reason, under ``jit`` an
``equinox`` runtime error attached to the result.

=======================  =====  =========================================================
name                     value  meaning
=======================  =====  =========================================================
``SUCCESS``              0      converged, or the fixed budget was spent with finite values
``MAX_STEPS``            1      the step bound (``max_steps``) was reached before convergence
``LINESEARCH_FAILED``    2      no step satisfying the line-search conditions was found
``NONFINITE``            3      a value (objective, gradient, state, loss) became nan/inf
``STAGNATED``            4      no progress at round-off level before the tolerance was met
``DIVERGED``             5      errors grew far beyond the spread, or an unstable step blew up
``FAILED_MEMBERS``       6      some ensemble members failed and were dropped
=======================  =====  =========================================================

Examples:
    >>> import jax.numpy as jnp
    >>> status_message(jnp.asarray(Status.NONFINITE))
    'a value became non-finite (nan or inf)'
"""

from __future__ import annotations

import enum
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int

from ._checks import is_concrete


class Status(enum.IntEnum):
    """Integer status codes stored in the ``status`` field of every result."""

    SUCCESS = 0
    MAX_STEPS = 1
    LINESEARCH_FAILED = 2
    NONFINITE = 3
    STAGNATED = 4
    DIVERGED = 5
    FAILED_MEMBERS = 6


_MESSAGES = {
    Status.SUCCESS: "success",
    Status.MAX_STEPS: "maximum number of steps reached before convergence",
    Status.LINESEARCH_FAILED: "line search failed to find an acceptable step",
    Status.NONFINITE: "a value became non-finite (nan or inf)",
    Status.STAGNATED: "stalled at round-off before the tolerance was met",
    Status.DIVERGED: "diverged: errors far above the ensemble spread, or an unstable step",
    Status.FAILED_MEMBERS: "some ensemble members failed and were dropped",
}


def status_message(status: int | Array) -> str:
    """Human-readable text for a concrete scalar status code."""
    return _MESSAGES[Status(int(status))]


def status_array(code: Status | int | Array) -> Int[Array, ""]:
    """A status as the ``int32`` array stored in results."""
    return jnp.asarray(code, dtype=jnp.int32)


def first_failure(current: Array, new: Array) -> Int[Array, "..."]:
    """Keep ``current`` unless it is ``SUCCESS``, then take ``new``: the first failure sticks."""
    return jnp.where(current == Status.SUCCESS, new, current).astype(jnp.int32)


def raise_on_failure(result: Any, *, ok: tuple[Status, ...] = (Status.SUCCESS,)) -> Any:
    """Raise if ``result.status`` is not one of ``ok`` (default: ``SUCCESS``).

    ``result`` is any NamedTuple/pytree with a ``status`` field. Eagerly (concrete status)
    this raises ``RuntimeError`` with the reason; under ``jit`` it attaches an
    :func:`equinox.error_if` check to every array leaf of the result, which fails when the
    compiled function runs. Under ``vmap`` any failing member raises.

    Examples:
        >>> from typing import NamedTuple
        >>> class R(NamedTuple):
        ...     x: jax.Array
        ...     status: jax.Array
        >>> raise_on_failure(R(jnp.zeros(2), status_array(Status.MAX_STEPS)))
        Traceback (most recent call last):
        ...
        RuntimeError: failed: maximum number of steps reached before convergence (status=1, MAX_STEPS)
    """
    status = result.status
    ok_codes = np.asarray([int(s) for s in ok])
    if is_concrete(status):
        arr = np.asarray(status)
        bad = ~np.isin(arr, ok_codes)
        if np.any(bad):
            first = int(arr[bad].ravel()[0]) if arr.ndim else int(arr)
            raise RuntimeError(
                f"failed: {status_message(first)} (status={first}, {Status(first).name})"
            )
        return result
    failed = jnp.any(~jnp.isin(status, jnp.asarray(ok_codes)))
    msg = "failed: status is not SUCCESS (see jaxda.core.Status)"

    def check(leaf):
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.inexact):
            return eqx.error_if(leaf, failed, msg)
        return leaf

    return jax.tree.map(check, result)
