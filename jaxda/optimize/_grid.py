r"""Grid search (exhaustive evaluation on a regular grid).

.. math::
    x^* = \arg\min_{x \in \mathcal G} J(x),\qquad
    \mathcal G = \prod_{j=1}^n \{\, l_j + i\,\tfrac{u_j - l_j}{N_j - 1} : i = 0, …, N_j - 1 \,\}

(endpoints included, like ``np.linspace`` and ``scipy.optimize.brute``; a
coordinate with ``N_j = 1`` is held at the box centre).

The ``∏ N_j`` points are never materialized: a ``lax.scan`` walks over chunks of
``batch_size`` flat indices, decodes each index into grid coordinates (row-major,
the last coordinate varying fastest, as ``np.meshgrid(..., indexing="ij")``), evaluates
the objective with ``vmap`` on the chunk and keeps a running minimum. Memory is
``O(batch_size · n)`` whatever the grid size. Ties go to the first point in row-major
order (as ``np.argmin`` on the full grid).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import catch_not_traceable
from ._bounds import check_bounds, check_objective
from ._result import GradientFreeResult, finite_or_inf, make_result


@catch_not_traceable()
def grid_search(
    objective: Callable[[Float[Array, " n"]], Float[Array, ""]],
    bounds: Any,
    *,
    num: int | Sequence[int] = 11,
    batch_size: int = 4096,
    throw: bool = False,
) -> GradientFreeResult:
    r"""Exhaustive search on a regular grid, evaluated in chunks.

    Args:
        objective: ``J(x) -> scalar`` for one point ``x`` of shape ``(n,)``; it is ``vmap``-ped
            over each chunk. Non-finite values count as ``+inf``.
        bounds: array ``(2, n)`` = ``(lower, upper)``.
        num: points per coordinate ``N_j`` (an int for all, or one per coordinate), ``>= 1``.
        batch_size: points evaluated at once (memory ``O(batch_size·n)``), ``>= 1``.
        throw: raise (:func:`jaxda.core.raise_on_failure`) unless the status is ``SUCCESS``.

    Grid search is deterministic, so unlike the other gradient-free methods it takes no key.

    Returns:
        :class:`GradientFreeResult`; ``history.f`` holds the running minimum after each chunk,
        ``n_steps`` is the number of chunks and ``n_evaluations = ∏ N_j``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.optimize import grid_search, rastrigin
        >>> res = grid_search(rastrigin, jnp.array([[-5.12] * 2, [5.12] * 2]), num=129)
        >>> bool(res.f < 1e-12), int(res.n_evaluations)
        (True, 16641)
    """
    lower, upper = check_bounds(bounds)
    check_objective(objective, lower)
    n = lower.shape[0]
    nums = np.broadcast_to(np.asarray(num), (n,)) if np.ndim(num) == 0 else np.asarray(num)
    if nums.shape != (n,) or not np.issubdtype(nums.dtype, np.integer) or np.any(nums < 1):
        raise ValueError(f"num must be a positive int or {n} positive ints, got {num!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = math.prod(int(v) for v in nums)
    idx_dtype = jnp.result_type(int)
    if total > np.iinfo(idx_dtype).max // 2:
        raise ValueError(
            f"grid has {total} points, too many for {np.dtype(idx_dtype).name} indices "
            "(enable jax_enable_x64 or use a coarser grid)"
        )
    batch = min(int(batch_size), total)
    n_chunks = -(-total // batch)
    strides = np.array([math.prod(int(v) for v in nums[j + 1 :]) for j in range(n)])
    nums_j = jnp.asarray(nums, idx_dtype)
    strides_j = jnp.asarray(strides, idx_dtype)
    step = jnp.where(nums_j > 1, (upper - lower) / jnp.maximum(nums_j - 1, 1), 0.0)
    start = jnp.where(nums_j > 1, lower, 0.5 * (lower + upper))

    def chunk(carry, c):
        best_f, best_x, n_bad = carry
        flat = c * batch + jnp.arange(batch, dtype=idx_dtype)
        valid = flat < total
        multi = (flat[:, None] // strides_j) % nums_j
        pts = start + multi.astype(lower.dtype) * step
        f, bad = finite_or_inf(jnp.where(valid, jax.vmap(objective)(pts), 0.0))
        f = jnp.where(valid, f, jnp.inf)
        i = jnp.argmin(f)
        better = f[i] < best_f
        best_f = jnp.where(better, f[i], best_f)
        best_x = jnp.where(better, pts[i], best_x)
        return (best_f, best_x, n_bad + bad), best_f

    init = (jnp.asarray(jnp.inf, lower.dtype), start, jnp.asarray(0, jnp.int32))
    (best_f, best_x, n_bad), history = jax.lax.scan(
        chunk, init, jnp.arange(n_chunks, dtype=idx_dtype)
    )
    hist_evals = jnp.minimum(jnp.arange(1, n_chunks + 1, dtype=idx_dtype) * batch, total)
    return make_result(best_x, best_f, history, hist_evals, n_bad, throw)
