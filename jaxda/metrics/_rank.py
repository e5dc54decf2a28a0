r"""The rank of the truth among the ensemble members, one time at a time.

For a reliable ensemble the truth is statistically one more member: its rank among the ``N``
sorted members is uniform on ``0..N`` and the rank (Talagrand) histogram is flat (Anderson
1996; Talagrand et al. 1997; Hamill 2001). A U shape means too little spread (the truth falls
outside the ensemble too often), a dome too much, a slope a bias. :func:`rank_counts` gives one
time's counts, so a ``lax.scan`` over the times can accumulate the histogram (or store the
``(K, N+1)`` per-time counts) without storing any ensemble; summing them after a burn-in gives
:func:`jaxda.metrics.rank_histogram`'s counts.

References:
    Anderson, J. L. (1996). A method for producing and evaluating probabilistic forecasts from
    ensemble model integrations. J. Climate 9, 1518-1530.
    Hamill, T. M. (2001). Interpretation of rank histograms for verifying ensemble forecasts.
    Mon. Wea. Rev. 129, 550-560.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core import check_ensemble, check_vector


def rank_counts(
    truth: Float[Array, " n"],
    ensemble: Float[Array, "N n"],
    *,
    key: Array | None = None,
) -> Int[Array, " N+1"]:
    r"""Counts, over the ``n`` variables, of the rank of the truth among the ``N`` members.

    The rank of the truth ``t_j`` of variable ``j`` is the number of members below it,

    .. math:: r_j = \#\{i : x_{ij} < t_j\} \in \{0, …, N\},

    and the result is ``counts[r] = #{j : r_j = r}`` (``N+1`` integers). Rank 0: the truth lies
    below every member; rank ``N``: above every member.

    Ties (a member equal to the truth: a collapsed ensemble, a discrete variable) have
    probability zero for continuous data. Without ``key`` they are counted as "not below", so
    ties pull the ranks down (the convention of :func:`jaxda.metrics.rank_histogram`). With a
    ``key`` they are broken at random, as Hamill (2001) recommends: with ``e_j`` members equal
    to the truth the rank is ``r_j + u_j``, ``u_j`` uniform on ``0..e_j``, which keeps the
    histogram of a reliable ensemble flat.

    A variable whose truth or any member is not finite (a missing truth, a diverged member) is
    not counted, so ``counts.sum()`` is the number of variables that were ranked.

    Pure JAX for one time: ``jax.vmap`` it over times (and sum), or call it inside a
    ``lax.scan`` to accumulate the histogram of a long run without storing the ensembles.

    Args:
        truth: the true state ``(n,)`` at one time.
        ensemble: the members ``(N, n)`` at that time (members first).
        key: optional PRNG key to break ties at random (``None``: ties count as not below).

    Returns:
        ``(N+1,)`` int32 counts summing to the number of finite variables.

    Examples:
        >>> E = jnp.array([[0.0, 1.0, 5.0], [1.0, 2.0, 6.0]])   # N = 2 members, n = 3
        >>> rank_counts(jnp.array([-1.0, 1.5, 9.0]), E)          # ranks 0, 1, 2
        Array([1, 1, 1], dtype=int32)
        >>> truths = jnp.array([[-1.0, 1.5, 9.0], [0.5, 0.5, 0.5]])
        >>> jax.vmap(rank_counts, (0, None))(truths, E).sum(axis=0).tolist()   # two times
        [3, 2, 1]
    """
    truth = jnp.asarray(truth)
    ensemble = jnp.asarray(ensemble)
    check_ensemble(ensemble, "ensemble", min_members=1)
    check_vector(truth, "truth", ensemble.shape[1])
    N = ensemble.shape[0]
    below = jnp.sum(ensemble < truth, axis=0)
    if key is not None:
        equal = jnp.sum(ensemble == truth, axis=0)
        # u uniform on 0..equal: floor(U · (equal + 1)) with U uniform on [0, 1)
        u = jax.random.uniform(key, truth.shape)
        below = below + jnp.minimum(jnp.floor(u * (equal + 1)).astype(below.dtype), equal)
    valid = jnp.isfinite(truth) & jnp.all(jnp.isfinite(ensemble), axis=0)
    return jnp.zeros(N + 1, jnp.int32).at[below].add(valid.astype(jnp.int32))
