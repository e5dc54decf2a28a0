r"""Random search (Rastrigin 1963; Bergstra & Bengio 2012).

.. math::
    x^* = \arg\min_{x \in \{x^{(1)}, …, x^{(M)}\}} J(x),\qquad
    x^{(i)} \overset{iid}{\sim} \mathcal U(l, u)

The ``M = max_steps · batch_size`` points are drawn in ``max_steps`` batches by a
``lax.scan`` (one fresh key per batch), each batch evaluated with ``vmap``.

For a target set :math:`A` of volume :math:`|A|` inside the box, the success
probability is exactly :math:`1 - (1 - |A|/\prod_j (u_j - l_j))^M`, which the tests use as an
independent reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import catch_not_traceable
from ._bounds import check_bounds, check_objective, uniform_in_bounds
from ._result import GradientFreeResult, finite_or_inf, make_result


@catch_not_traceable()
def random_search(
    key: Array,
    objective: Callable[[Float[Array, " n"]], Float[Array, ""]],
    bounds: Any,
    *,
    max_steps: int = 100,
    batch_size: int = 100,
    throw: bool = False,
) -> GradientFreeResult:
    """Uniform random search in the box.

    Args:
        key: PRNG key (split once per batch).
        objective: ``J(x) -> scalar`` for one point; ``vmap``-ped over each batch.
        bounds: array ``(2, n)`` = ``(lower, upper)``.
        max_steps: number of batches (length of the scan), ``>= 1``.
        batch_size: points per batch, ``>= 1``.
        throw: raise (:func:`jaxda.core.raise_on_failure`) unless the status is ``SUCCESS``.

    Returns:
        :class:`GradientFreeResult` with ``n_evaluations = max_steps · batch_size`` and the
        running minimum after each batch in ``history.f``.

    Documented target (tests): 2-D Sphere on ``[-5.12, 5.12]²`` with ``M = 2000``, ``f < 0.01``
    holds with probability ``1 - (1 - π·0.01/10.24²)^2000 ≈ 0.45``; the measured success rate
    over 200 keys matches it within Monte-Carlo error. Random search is a baseline, not a solver.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.optimize import random_search, sphere
        >>> res = random_search(jax.random.key(0), sphere, jnp.array([[-1.0] * 2, [1.0] * 2]),
        ...                     max_steps=20, batch_size=50)
        >>> int(res.n_evaluations), bool(res.f < 0.05)
        (1000, True)
    """
    lower, upper = check_bounds(bounds)
    check_objective(objective, lower)
    if int(max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    def step(carry, k):
        best_f, best_x, n_bad = carry
        pts = uniform_in_bounds(k, lower, upper, (batch_size,))
        f, bad = finite_or_inf(jax.vmap(objective)(pts))
        i = jnp.argmin(f)
        better = f[i] < best_f
        best_f = jnp.where(better, f[i], best_f)
        best_x = jnp.where(better, pts[i], best_x)
        return (best_f, best_x, n_bad + bad), best_f

    keys = jax.random.split(key, max_steps)
    init = (jnp.asarray(jnp.inf, lower.dtype), 0.5 * (lower + upper), jnp.asarray(0, jnp.int32))
    (best_f, best_x, n_bad), history = jax.lax.scan(step, init, keys)
    idx_dtype = jnp.result_type(int)
    hist_evals = jnp.arange(1, max_steps + 1, dtype=idx_dtype) * batch_size
    return make_result(best_x, best_f, history, hist_evals, n_bad, throw)
