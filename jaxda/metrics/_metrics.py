"""Scores for data assimilation: the weighted norm ‖Y − Ŷ‖_W, RMSE, spread, CRPS, rank histogram."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core import check_ensemble, positive_or_error


def weighted_norm(
    y: Float[Array, " m"], y_hat: Float[Array, " m"], theta: Float[Array, " m"] | float
) -> Float[Array, ""]:
    r"""Weighted error norm :math:`\|Y-\hat Y\|_W`.

    .. math::
        \|Y - \hat Y\|_W = \sqrt{(Y-\hat Y)^T W (Y-\hat Y)}
        = \sqrt{\sum_i (y_i - \hat y_i)^2 / θ_i^2},\qquad W = \mathrm{diag}(1/θ_i^2)

    Errors on observations with a large uncertainty ``θ_i`` weigh less.
    Works on trailing axis, so batched inputs ``(..., m)`` give ``(...)``.

    Examples:
        >>> float(weighted_norm(jnp.array([1.0, 2.0]), jnp.zeros(2), jnp.array([1.0, 2.0])))
        1.4142135...
    """
    y = jnp.asarray(y)
    y_hat = jnp.asarray(y_hat)
    if jnp.shape(y)[-1:] != jnp.shape(y_hat)[-1:]:
        raise ValueError(
            f"y and y_hat must have the same last dimension, got {jnp.shape(y)} and {jnp.shape(y_hat)}"
        )
    theta = positive_or_error("theta", theta)
    return jnp.sqrt(jnp.sum(((y - y_hat) / theta) ** 2, axis=-1))


def rmse(x: Float[Array, "... n"], truth: Float[Array, "... n"]) -> Float[Array, "..."]:
    r"""Root-mean-square error over the last axis: :math:`\sqrt{\tfrac1n\sum_i (x_i-x^t_i)^2}`."""
    return jnp.sqrt(jnp.mean((jnp.asarray(x) - jnp.asarray(truth)) ** 2, axis=-1))


def spread(
    ensemble: Float[Array, "N n"], log_weights: Float[Array, " N"] | None = None
) -> Float[Array, ""]:
    r"""Ensemble spread: :math:`\sqrt{\tfrac1n \sum_i \mathrm{var}_i}` with unbiased (``N-1``) variances.

    This is DAPPER's ``rmv`` and should match the RMSE of the mean for a reliable ensemble.
    With ``log_weights`` (a particle filter's) the variances are the weighted ones,
    :math:`\sum_j w_j (x_j - \bar x_w)^2 / (1 - \sum_j w_j^2)` (the ``N-1`` variance for equal
    weights, as DAPPER's weighted spread), and ``0`` when one particle holds all the weight.

    Examples:
        >>> E = jnp.array([[0.0], [2.0], [10.0]])
        >>> w = jnp.log(jnp.array([0.5, 0.5, 0.0]))    # the third particle has no weight
        >>> round(float(spread(E[:2])), 4), round(float(spread(E, w)), 4)
        (1.4142, 1.4142)
    """
    check_ensemble(ensemble)
    if log_weights is None:
        return jnp.sqrt(jnp.mean(jnp.var(ensemble, axis=0, ddof=1)))
    w = jax.nn.softmax(log_weights).astype(ensemble.dtype)
    A = ensemble - w @ ensemble
    denom = 1.0 - jnp.sum(w**2)
    var = (w @ A**2) / jnp.where(denom > 0, denom, 1.0)
    return jnp.where(denom > 0, jnp.sqrt(jnp.mean(var)), 0.0)


def crps(ensemble: Float[Array, "N n"], truth: Float[Array, " n"]) -> Float[Array, ""]:
    r"""Continuous ranked probability score of the ensemble, averaged over variables.

    Uses the unbiased "fair" ensemble estimator (Ferro 2014)

    .. math:: \mathrm{CRPS} = \tfrac1N\sum_i |x_i - y| - \tfrac{1}{2N(N-1)}\sum_{i,j}|x_i - x_j|

    computed in ``O(N log N)`` per variable from the sorted members.
    """
    check_ensemble(ensemble)
    N = ensemble.shape[0]
    term1 = jnp.mean(jnp.abs(ensemble - truth), axis=0)
    xs = jnp.sort(ensemble, axis=0)
    # sum_{i,j} |x_i - x_j| = 2 * sum_k (2k - N + 1) x_(k) for sorted x (k from 0)
    w = 2.0 * jnp.arange(N) - N + 1.0
    pair_sum = 2.0 * jnp.sum(w[:, None] * xs, axis=0)
    term2 = pair_sum / (2.0 * N * (N - 1))
    return jnp.mean(term1 - term2)


def rank_histogram(
    ensembles: Float[Array, "K N n"], truths: Float[Array, "K n"]
) -> Int[Array, " N+1"]:
    """Talagrand rank histogram: counts of the truth's rank among the ``N`` members.

    Pools all times and variables; a flat histogram indicates a reliable ensemble.
    Ties are broken at random-free "strictly less" rank (continuous data has none).
    """
    ensembles = jnp.asarray(ensembles)
    if ensembles.ndim == 2:
        ensembles = ensembles[None]
        truths = jnp.asarray(truths)[None]
    if ensembles.ndim != 3 or jnp.shape(truths) != (ensembles.shape[0], ensembles.shape[2]):
        raise ValueError(
            f"expected ensembles (K, N, n) and truths (K, n), got {ensembles.shape} and {jnp.shape(truths)}"
        )
    N = ensembles.shape[1]
    ranks = jnp.sum(ensembles < truths[:, None, :], axis=1).ravel()
    return jnp.bincount(ranks, length=N + 1)


def ensemble_mean_rmse(
    ensemble: Float[Array, "N n"], truth: Float[Array, " n"]
) -> Float[Array, ""]:
    """RMSE of the ensemble mean to the truth."""
    return rmse(jnp.mean(ensemble, axis=0), truth)
