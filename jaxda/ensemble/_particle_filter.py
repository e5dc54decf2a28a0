r"""Bootstrap particle filter (sequential importance resampling) and its resampling schemes.

Gordon, Salmond & Smith (1993); Doucet & Johansen (2011), *A tutorial on particle filtering
and smoothing*. For a state-space model ``x_k ~ p(x_k | x_{k-1})``, ``y_k ~ p(y_k | x_k)``,
particles are propagated with the model (the proposal is the prior) and their weights are
multiplied by the likelihood, ``w_i ∝ w_i · p(y_k | x_i)``. When the effective sample size
``ESS = 1/∑w_i²`` falls to ``resample_threshold · N`` or below, the particles are resampled
(``N`` indices drawn with ``E[copies of i] = N w_i``) and the weights reset to ``1/N``;
otherwise the weights are carried to the next cycle (sequential importance sampling).

Resampling schemes (Douc, Cappé & Moulines 2005, *Comparison of resampling schemes for
particle filtering*), all unbiased, from most to least random: ``multinomial`` (``N``
independent draws), ``residual`` (``⌊N w_i⌋`` copies of each, the remaining
``N - ∑⌊N w_i⌋`` drawn multinomially from the fractional parts), ``stratified`` (one uniform
draw in each of the ``N`` strata ``[j/N, (j+1)/N)`` of the weight CDF) and ``systematic``
(one uniform shift shared by the ``N`` strata; the copies of ``i`` are ``⌊N w_i⌋`` or
``⌈N w_i⌉``).

Regularization (Musso, Oudjane & Le Gland 2001, *Improving regularised particle filters*;
Doucet, de Freitas & Gordon 2001, section 12.2.2): resampled particles are drawn from a
Gaussian kernel around each selected particle instead of the point mass, with kernel
covariance ``(reg · h)² C_w``, ``C_w`` the weighted covariance of the particles and
``h = N^{-1/(n+4)}`` the optimal bandwidth of a Gaussian kernel density estimate (Silverman's
rule of thumb up to its constant; ``reg`` absorbs the constant). This is DAPPER's
``PartFilt(reg=...)`` scaling. Without it a perfect-model twin experiment collapses onto a
few members, since nothing else renews the particles.

The log-evidence estimate is ``log p̂(y_{0:K}) = ∑_k log ∑_i w^{(i)}_{k-1} p(y_k | x_k^{(i)})``
(unbiased for ``p``). Trajectory samples from the joint smoothing distribution are drawn by
tracing the genealogy (:func:`pf_trajectories`); they degenerate for long horizons, which is
the usual price of the bootstrap filter.

Differentiable resampling (``resampling_gradient``): the ancestor indices are discrete, so
``jax.grad`` of the log-evidence through a resampling filter sees only the paths of the
surviving particles, not how the parameters changed which particles were selected
(``"none"``, biased). ``"stop_gradient"`` (Ścibior & Wood 2021) gives the selected particles
the log-weight ``log w_{a_i} - ⊥(log w_{a_i})`` (``⊥`` = ``jax.lax.stop_gradient``): zero on
the forward pass, which is unchanged bit for bit, and the score ``∇ log w_{a_i}`` of the
selection on the backward pass. ``"soft"`` (Karkus, Hsu & Lee 2018) draws the ancestors from
``q = α w + (1-α)/N`` and weights them ``∝ w_{a_i}/q_{a_i}``, which is differentiable but
biased unless ``α = 0``. See :func:`particle_filter` for the mathematics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core import (
    Method,
    Status,
    analysis_info,
    check_ensemble,
    check_in_range,
    check_vector,
    is_concrete,
)
from ..observations import log_likelihood, observed

Transition = Callable[[Array, Array], Array]
LogLik = Callable[[Array, Array], Array]
Resampler = Callable[..., Array]


class PFResult(NamedTuple):
    """History of a bootstrap particle filter run over ``K`` observation times.

    Attributes:
        particles: particles at each time before resampling ``(K, N, n)``.
        log_weights: normalised log-weights of those particles ``(K, N)``.
        ancestors: ``ancestors[k, i]`` = index at time ``k`` of the parent of particle ``i``
            at time ``k+1`` (identity when no resampling happened) ``(K, N)``.
        ess: effective sample size after weighting ``(K,)``.
        log_evidence: estimate of ``log p(y_{0:K-1})``.
    """

    particles: Float[Array, "K N n"]
    log_weights: Float[Array, "K N"]
    ancestors: Int[Array, "K N"]
    ess: Float[Array, " K"]
    log_evidence: Float[Array, ""]

    def mean(self) -> Float[Array, "K n"]:
        """Filtering means ``E[x_k | y_{0:k}]``."""
        return jnp.einsum("kn,knd->kd", jnp.exp(self.log_weights), self.particles)


# --------------------------------------------------------------------------------------------
# Resampling schemes: pure functions (key, log_weights, n) -> n indices, vmappable over keys.
# --------------------------------------------------------------------------------------------


def _normalized_cdf(log_weights: Array) -> Array:
    cdf = jnp.cumsum(jax.nn.softmax(log_weights))
    return cdf / cdf[-1]  # the last entry is exactly 1, so every u < 1 finds an index


def _check_n(log_weights: Array, n: int | None) -> int:
    check_vector(log_weights, "log_weights")
    n = log_weights.shape[0] if n is None else n
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return n


def _invert_cdf(log_weights: Array, u: Array) -> Array:
    # index of the first particle whose CDF exceeds u (side="right": a zero weight is never
    # drawn, even for u = 0)
    idx = jnp.searchsorted(_normalized_cdf(log_weights), u, side="right")
    return jnp.clip(idx, 0, log_weights.shape[0] - 1)


def systematic_resample(
    key: Array, log_weights: Float[Array, " N"], n: int | None = None
) -> Int[Array, " n"]:
    r"""Systematic resampling: ``n`` indices (sorted) from normalised or unnormalised log-weights.

    One uniform ``U`` shifts ``n`` evenly spaced points ``u_j = (j + U)/n`` through the
    cumulative weights; particle ``i`` gets ``⌊n w_i⌋`` or ``⌈n w_i⌉`` copies, ``n w_i`` on
    average (Carpenter, Clifford & Fearnhead 1999; Kitagawa 1996).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> logw = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
        >>> systematic_resample(jax.random.key(0), logw, 10).tolist().count(3)
        4
    """
    n = _check_n(log_weights, n)
    u = (jax.random.uniform(key, (), log_weights.dtype) + jnp.arange(n)) / n
    return _invert_cdf(log_weights, u)


def stratified_resample(
    key: Array, log_weights: Float[Array, " N"], n: int | None = None
) -> Int[Array, " n"]:
    r"""Stratified resampling: one independent uniform point ``u_j = (j + U_j)/n`` in each of
    the ``n`` strata of the weight CDF (Kitagawa 1996). ``n`` indices, sorted; particle ``i``
    gets ``n w_i`` copies on average, with a variance never above multinomial resampling.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> idx = stratified_resample(jax.random.key(0), jnp.log(jnp.array([0.5, 0.5])), 6)
        >>> idx.shape
        (6,)
    """
    n = _check_n(log_weights, n)
    u = (jax.random.uniform(key, (n,), log_weights.dtype) + jnp.arange(n)) / n
    return _invert_cdf(log_weights, u)


def multinomial_resample(
    key: Array, log_weights: Float[Array, " N"], n: int | None = None
) -> Int[Array, " n"]:
    r"""Multinomial resampling: ``n`` independent draws of index ``i`` with probability
    ``w_i`` (the copies are ``Multinomial(n, w)``; DAPPER's ``"Stochastic"``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> idx = multinomial_resample(jax.random.key(0), jnp.array([0.0, -jnp.inf]), 5)
        >>> idx.tolist()
        [0, 0, 0, 0, 0]
    """
    n = _check_n(log_weights, n)
    # inverse CDF of n independent uniforms: O(n log N) (categorical sampling would draw an
    # n × N Gumbel matrix)
    return _invert_cdf(log_weights, jax.random.uniform(key, (n,), log_weights.dtype))


def residual_resample(
    key: Array, log_weights: Float[Array, " N"], n: int | None = None
) -> Int[Array, " n"]:
    r"""Residual resampling (Liu & Chen 1998): particle ``i`` first gets ``⌊n w_i⌋`` copies
    deterministically; the ``R = n - ∑⌊n w_i⌋`` remaining indices are drawn multinomially
    with probabilities ``∝ n w_i - ⌊n w_i⌋``. The copies are ``n w_i`` on average and never
    fewer than ``⌊n w_i⌋``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> logw = jnp.log(jnp.array([0.25, 0.75]))
        >>> residual_resample(jax.random.key(0), logw, 4).tolist()
        [0, 1, 1, 1]
    """
    n = _check_n(log_weights, n)
    nw = n * jax.nn.softmax(log_weights)
    base = jnp.floor(nw)
    frac = nw - base
    counts = base.astype(jnp.int32)
    n_det = jnp.minimum(jnp.sum(counts), n)
    pos = jnp.arange(n)
    det = jnp.searchsorted(jnp.cumsum(counts), pos, side="right")
    # the remainder: independent draws from the fractional parts (when they sum to 0, R = 0
    # and the draws are not used)
    logf = jnp.where(frac > 0, jnp.log(jnp.where(frac > 0, frac, 1.0)), -jnp.inf)
    logf = jnp.where(jnp.any(frac > 0), logf, 0.0)
    rest = multinomial_resample(key, logf, n)
    idx = jnp.where(pos < n_det, det, rest[jnp.clip(pos - n_det, 0, n - 1)])
    return jnp.clip(idx, 0, log_weights.shape[0] - 1)


RESAMPLING: dict[str, Resampler] = {
    "systematic": systematic_resample,
    "stratified": stratified_resample,
    "residual": residual_resample,
    "multinomial": multinomial_resample,
}


def _resampler(name: str) -> Resampler:
    if name not in RESAMPLING:
        raise ValueError(f"resampling must be one of {sorted(RESAMPLING)}, got {name!r}")
    return RESAMPLING[name]


RESAMPLING_GRADIENTS = ("none", "stop_gradient", "soft")


def _check_resampling_gradient(mode: str, soft_alpha: float | None, weight_root: float) -> float:
    """Validate ``resampling_gradient``/``soft_alpha`` eagerly; return the ``α`` to use."""
    if mode not in RESAMPLING_GRADIENTS:
        raise ValueError(
            f"resampling_gradient must be one of {list(RESAMPLING_GRADIENTS)}, got {mode!r}"
        )
    if mode != "soft":
        if soft_alpha is not None:
            raise ValueError(
                f"soft_alpha is only used with resampling_gradient='soft', got "
                f"resampling_gradient={mode!r} and soft_alpha={soft_alpha!r}"
            )
        return 1.0
    if not (is_concrete(weight_root) and float(weight_root) == 1.0):
        raise ValueError(
            "resampling_gradient='soft' draws from its own mixture q = α w + (1-α)/N: it "
            f"cannot be combined with weight_root={weight_root!r} (use weight_root=1)"
        )
    alpha = 0.5 if soft_alpha is None else soft_alpha
    check_in_range("soft_alpha", alpha, 0.0, 1.0)
    return alpha


def _safe_log(p: Array) -> Array:
    # log p with -inf (and a zero, not NaN, gradient) where p = 0
    pos = p > 0
    return jnp.where(pos, jnp.log(jnp.where(pos, p, 1.0)), -jnp.inf)


def _resample_log_weights(
    key: Array,
    draw: Resampler,
    logw: Float[Array, " N"],
    mode: str,
    alpha: float | Array,
    weight_root: float,
) -> tuple[Int[Array, " N"], Float[Array, " N"], Float[Array, ""]]:
    """Ancestor indices, the log-weights of the resampled particles (normalised in value) and
    the log of the resampling's importance correction (added to the step's log-evidence; 0
    except for ``"soft"``), from normalised log-weights ``logw``."""
    N = logw.shape[0]
    zero = jnp.zeros((), logw.dtype)
    if mode == "soft":
        w = jax.nn.softmax(logw)
        support = (w > 0).astype(w.dtype)
        q = alpha * w + (1.0 - alpha) * support / jnp.sum(support)
        logq = _safe_log(q)
        idx = draw(key, logq)
        lr = logw[idx] - logq[idx]  # w/q: finite, q > 0 only where w > 0
        lse = jax.nn.logsumexp(lr)
        return idx, lr - lse, lse - jnp.log(N).astype(logw.dtype)
    if weight_root == 1.0:
        idx = draw(key, logw)
        new = jnp.full((N,), -jnp.log(N), logw.dtype)
    else:
        idx = draw(key, logw / weight_root)
        new = jax.nn.log_softmax((1.0 - 1.0 / weight_root) * logw[idx])
    if mode == "stop_gradient":
        # value: exactly `new` (x - x = 0 for finite x, and the drawn log-weights are finite);
        # gradient: the score ∇ log w_{a_i} of selecting particle a_i
        sel = logw[idx]
        new = jax.lax.stop_gradient(new) + (sel - jax.lax.stop_gradient(sel))
    return idx, new, zero


# --------------------------------------------------------------------------------------------
# Regularization (kernel jitter)
# --------------------------------------------------------------------------------------------


def kernel_bandwidth(n_particles: int, dim: int) -> float:
    r"""Optimal bandwidth ``h = N^{-1/(n+4)}`` of a Gaussian kernel density estimate from
    ``N`` particles in dimension ``n`` (Silverman 1986, without its constant; Doucet et al.
    2001, section 12.2.2). The regularization kernel has covariance ``(reg · h)² C_w``.

    Examples:
        >>> round(kernel_bandwidth(100, 3), 4)  # 100^(-1/7)
        0.5179
    """
    if n_particles < 1 or dim < 1:
        raise ValueError(f"n_particles and dim must be >= 1, got {n_particles}, {dim}")
    return float(n_particles) ** (-1.0 / (dim + 4))


def weighted_anomalies(
    ensemble: Float[Array, "N n"], log_weights: Float[Array, " N"]
) -> Float[Array, "N n"]:
    r"""Square-root factor ``A`` of the unbiased weighted covariance, ``C_w = AᵀA``.

    ``A_i = \sqrt{w_i / (1 - ∑_j w_j²)}\,(x_i - \bar x_w)`` with ``\bar x_w = ∑ w_i x_i``:
    the reliability-weights covariance (``numpy.cov(E.T, aweights=w)``), ``N/(N-1)`` times
    the biased one for uniform weights. When one weight holds all the mass
    (``1 - max w < 10⁻¹⁰``) the weighted covariance vanishes; the unweighted one is used
    instead so that the regularization still spreads the collapsed particles (as DAPPER).

    Examples:
        >>> import jax.numpy as jnp
        >>> E = jnp.array([[0.0], [2.0]])
        >>> A = weighted_anomalies(E, jnp.log(jnp.array([0.5, 0.5])))
        >>> float((A.T @ A)[0, 0])  # the unbiased variance of {0, 2}
        2.0
    """
    check_ensemble(ensemble)
    check_vector(log_weights, "log_weights", ensemble.shape[0])
    w = jax.nn.softmax(log_weights)
    N = ensemble.shape[0]
    w = jnp.where(1.0 - jnp.max(w) < 1e-10, jnp.full_like(w, 1.0 / N), w)
    A = ensemble - w @ ensemble
    return jnp.sqrt(w / (1.0 - jnp.sum(w**2)))[:, None] * A


def regularization_jitter(
    key: Array, ensemble: Float[Array, "N n"], log_weights: Float[Array, " N"], scale: float
) -> Float[Array, "N n"]:
    r"""``N`` independent draws of ``N(0, scale² C_w)``, ``C_w`` the unbiased weighted
    covariance of ``ensemble`` (:func:`weighted_anomalies`).

    Drawn in ensemble space as ``ε = scale · Z A`` with ``Z`` an ``N × N`` standard Gaussian
    matrix: no ``n × n`` matrix is formed. The particle filter uses
    ``scale = reg · kernel_bandwidth(N, n)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> E = jax.random.normal(jax.random.key(0), (50, 4))
        >>> regularization_jitter(jax.random.key(1), E, jnp.zeros(50), 0.5).shape
        (50, 4)
    """
    A = weighted_anomalies(ensemble, log_weights)
    N = ensemble.shape[0]
    Z = jax.random.normal(key, (N, N), ensemble.dtype)
    return scale * (Z @ A)


# --------------------------------------------------------------------------------------------
# Functional filter over a whole record
# --------------------------------------------------------------------------------------------


def bootstrap_particle_filter(
    key: Array,
    transition: Transition,
    log_likelihood: LogLik,
    particles0: Float[Array, "N n"],
    ys: Float[Array, "K m"],
    *,
    mask: Bool[Array, " K"] | None = None,
    resample_threshold: float = 0.5,
    resampling: str = "systematic",
    resampling_gradient: str = "none",
    soft_alpha: float | None = None,
) -> PFResult:
    r"""Run a bootstrap particle filter.

    Time convention: ``particles0`` are draws from ``p(x_0)``; ``ys[k]`` observes ``x_k``;
    particles are propagated with ``transition`` between ``k`` and ``k+1``.

    Args:
        key: PRNG key.
        transition: ``(key, x) -> x_next`` for one particle (stochastic model).
        log_likelihood: ``(x, y) -> log p(y | x)`` for one particle.
        particles0: ``(N, n)`` initial particles.
        ys: ``(K, m)`` observations (rows where ``mask`` is False are ignored).
        mask: ``(K,)`` booleans, True where ``ys[k]`` is an actual observation.
        resample_threshold: resample when ``ESS ≤ threshold · N`` (1 = always, 0 = never).
        resampling: ``"systematic"``, ``"stratified"``, ``"residual"`` or ``"multinomial"``.
        resampling_gradient: ``"none"``, ``"stop_gradient"`` or ``"soft"``: how
            ``jax.grad`` of ``log_evidence`` treats the resampling, as in
            :func:`particle_filter` (``transition`` must then draw its noise
            reparameterized, e.g. ``f(x) + σ·normal(key)``).
        soft_alpha: ``α ∈ [0, 1]`` of ``"soft"`` (default 0.5).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> tr = lambda k, x: 0.9 * x + 0.1 * jax.random.normal(k, x.shape)
        >>> ll = lambda x, y: -0.5 * jnp.sum((y - x) ** 2)
        >>> res = bootstrap_particle_filter(jax.random.key(0), tr, ll, jnp.zeros((100, 1)), jnp.ones((5, 1)))
        >>> res.particles.shape
        (5, 100, 1)
    """
    check_ensemble(particles0, "particles0")
    ys = jnp.asarray(ys)
    if ys.ndim != 2:
        raise ValueError(f"ys must have shape (K, m), got {ys.shape}")
    K = ys.shape[0]
    mask = jnp.ones(K, bool) if mask is None else jnp.asarray(mask, bool)
    check_vector(mask, "mask", K)
    check_in_range("resample_threshold", resample_threshold, 0.0, 1.0)
    draw = _resampler(resampling)
    alpha = _check_resampling_gradient(resampling_gradient, soft_alpha, 1.0)
    N = particles0.shape[0]
    ll_fn = jax.vmap(log_likelihood, in_axes=(0, None))

    def weight(x, logw_prev, y, m):
        ll = jnp.where(m, ll_fn(x, y), 0.0)
        unnorm = logw_prev + ll
        log_inc = jax.nn.logsumexp(unnorm)
        logw = unnorm - log_inc
        return logw, log_inc, 1.0 / jnp.sum(jnp.exp(2.0 * logw))

    def resample(k, x, logw, ess):
        do = _should_resample(ess, resample_threshold, N)
        idx_r, logw_r, corr = _resample_log_weights(k, draw, logw, resampling_gradient, alpha, 1.0)
        idx = jnp.where(do, idx_r, jnp.arange(N))
        logw = jnp.where(do, logw_r, logw)
        return idx, logw, jnp.where(do, corr, 0.0)

    def body(carry, inp):
        x_prev, idx_prev, logw_prev = carry
        k, y, m = inp
        kt, kr = jax.random.split(k)
        x = jax.vmap(transition)(jax.random.split(kt, N), x_prev[idx_prev])
        logw, log_inc, ess = weight(x, logw_prev, y, m)
        idx, logw_next, corr = resample(kr, x, logw, ess)
        return (x, idx, logw_next), (x, logw, idx, ess, log_inc + corr)

    kr0, krest = jax.random.split(key)
    logw_u = jnp.full((N,), -jnp.log(N), particles0.dtype)
    logw0, inc0, ess0 = weight(particles0, logw_u, ys[0], mask[0])
    idx0, logw0_next, corr0 = resample(kr0, particles0, logw0, ess0)
    inc0 = inc0 + corr0
    if K > 1:
        _, (xs, lws, idxs, esss, incs) = jax.lax.scan(
            body, (particles0, idx0, logw0_next), (jax.random.split(krest, K - 1), ys[1:], mask[1:])
        )
        xs = jnp.concatenate([particles0[None], xs])
        lws = jnp.concatenate([logw0[None], lws])
        idxs = jnp.concatenate([idx0[None], idxs])
        esss = jnp.concatenate([ess0[None], esss])
        log_ev = inc0 + jnp.sum(incs)
    else:
        xs, lws, idxs, esss, log_ev = particles0[None], logw0[None], idx0[None], ess0[None], inc0
    return PFResult(xs, lws, idxs, esss, log_ev)


def pf_trajectories(key: Array, result: PFResult, n: int) -> Float[Array, "n K d"]:
    """Draw ``n`` trajectories from the particle approximation of ``p(x_{0:K-1} | y_{0:K-1})``
    by sampling a final particle and tracing its ancestors (genealogy tracing)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    K = result.particles.shape[0]
    last = jax.random.categorical(key, result.log_weights[-1], shape=(n,))

    def back(idx, k):
        parent = result.ancestors[k, idx]
        return parent, result.particles[k, parent]

    _, xs = jax.lax.scan(back, last, jnp.arange(K - 2, -1, -1))
    final = result.particles[K - 1, last]
    traj = jnp.concatenate([xs[::-1], final[None]], axis=0)
    return jnp.swapaxes(traj, 0, 1)


def _should_resample(ess: Array, threshold: float, N: int) -> Array:
    # ESS ≤ threshold·N, with a relative round-off margin so that threshold 1 always
    # resamples (ESS of uniform weights can round to slightly above N) and 0 never does
    return ess <= threshold * N * (1.0 + 1e-9)


# --------------------------------------------------------------------------------------------
# The Method
# --------------------------------------------------------------------------------------------


class PFState(NamedTuple):
    """Particle-filter state: the particles and their normalised log-weights (uniform after
    a resampling, carried between cycles otherwise)."""

    ensemble: Float[Array, "N n"]
    log_weights: Float[Array, " N"]


class PFInfo(NamedTuple):
    """Per-cycle diagnostics of the particle filter (``n_obs``/``status`` as every method).

    Attributes:
        n_obs: number of observations used at this time.
        status: :class:`jaxda.core.Status`; ``NONFINITE`` when the weights are degenerate
            (every particle has likelihood zero, or a non-finite one): the state is then
            left as the forecast with its previous weights.
        ess: effective sample size ``1/∑w_i²`` after weighting, before any resampling (of
            the previous weights when the weights are degenerate).
        resampled: whether the particles were resampled (and regularized) this cycle.
        log_evidence: ``log p̂(y_k | y_{<k}) = log ∑_i w_i^{prev} p(y_k | x_i)`` (with
            ``resampling_gradient="soft"``, plus the log of the resampling's mean importance
            correction ``1/N ∑_i w_{a_i}/q_{a_i}`` in the cycles that resample); summed over
            the cycles, the log of an unbiased estimate of the likelihood.
    """

    n_obs: Int[Array, ""]
    status: Int[Array, ""]
    ess: Float[Array, ""]
    resampled: Bool[Array, ""]
    log_evidence: Float[Array, ""]


def particle_filter(
    *,
    resample_threshold: float = 1.0,
    resampling: str = "systematic",
    reg: float = 0.0,
    reg_duplicates_only: bool = True,
    weight_root: float = 1.0,
    resampling_gradient: str = "none",
    soft_alpha: float | None = None,
) -> Method:
    r"""Bootstrap particle filter as a :class:`jaxda.core.Method` (DAPPER's ``PartFilt``).

    Each step multiplies the weights by the likelihood, ``w_i ∝ w_i p(y | x_i)`` (missing
    observations left out), and computes ``ESS = 1/∑w_i²``. When ``ESS ≤ resample_threshold·N``
    (DAPPER's ``NER``) it resamples ``N`` particles with the ``resampling`` scheme and resets
    the weights to ``1/N``; otherwise the weighted particles are kept as they are and the
    weights carry over to the next cycle (the driver's mean and RMSE use them).

    Regularization (``reg > 0``, applied only in cycles that resample): the resampled
    particles get Gaussian kernel jitter ``ε ~ N(0, (reg·h)² C_w)`` with ``h = N^{-1/(n+4)}``
    (:func:`kernel_bandwidth`) and ``C_w`` the unbiased weighted covariance of the particles
    before resampling (:func:`weighted_anomalies`), drawn as ``reg·h·ZA`` from the ``N×n``
    weighted anomalies ``A`` (no ``n×n`` matrix). As in DAPPER (its ``nuj``), by default only
    the particles drawn more than once are jittered (``reg_duplicates_only``); particles
    drawn once keep their value.

    ``weight_root = r > 1`` (DAPPER's ``wroot``) resamples from the flattened weights
    ``∝ w^{1/r}`` and gives the new particles weights ``∝ w^{1 - 1/r}`` to stay consistent:
    more distinct particles survive, at the price of non-uniform weights after resampling.

    **Gradients of the log-likelihood** (``resampling_gradient``). The per-cycle
    ``info.log_evidence`` sums, over a run of :func:`jaxda.assimilate.assimilate`, to the
    estimate ``log p̂_θ(y_{1:K})``, where ``p̂_θ`` is unbiased for the likelihood ``p_θ``. To
    differentiate it with respect to parameters ``θ`` of the model (a
    :class:`~jaxda.models.LinearModel` matrix, Lorenz-96's forcing, the model-noise std of
    :func:`~jaxda.models.with_noise`, whose noise is drawn reparameterized as
    ``σ·normal(key)``) or of the observation model (its std), take ``jax.grad`` of that sum.
    Everything in a cycle is differentiable except the ancestor indices ``a_i``, which are
    piecewise constant in ``θ``:

    * ``"none"``: the weights reset to ``1/N`` after resampling carry no derivative, so the
      gradient follows each surviving particle's path but ignores that changing ``θ``
      changes which particles are selected. Biased, even for ``N → ∞``.
    * ``"stop_gradient"`` (Ścibior & Wood 2021): the resampled particle ``i`` gets the
      log-weight ``-log N + log w_{a_i} - ⊥(log w_{a_i})`` (``⊥`` = ``jax.lax.stop_gradient``):
      exactly ``-log N`` on the forward pass, which is unchanged (same particles, same
      values, bit for bit), and ``∇ log w_{a_i}`` on the backward pass. This is the
      derivative, at ``φ = θ``, of the filter whose ancestors are drawn from the weights
      ``w^φ`` of a frozen copy ``φ`` and importance-corrected by ``w^θ_{a_i}/w^φ_{a_i}``; that
      filter's ``p̂_θ`` is unbiased for ``p_θ`` for every ``φ`` (unbiased resampling, ESS
      decision taken from the past), so **the gradient ``∇p̂ = p̂ ∇log p̂`` is unbiased for
      ``∇p``** (model noise reparameterized, ``reg = 0``, ``weight_root = 1``). The returned
      ``∇log p̂`` is a ratio, hence consistent for ``∇log p`` with an ``O(1/N)`` bias; averaged
      over independent runs, ``∑_j p̂_j ∇log p̂_j / ∑_j p̂_j`` is consistent for ``∇log p``
      at any fixed ``N``. On the resampling cycles the selection term is the path-space
      score of Poyiadjis, Doucet & Singh (2011), whose variance grows with the number of
      cycles (path degeneracy). With ``weight_root > 1`` the ancestors are drawn from
      ``∝ w^{1/r}`` and the derivative is the same ``∇log w^θ_{a_i}``, but the forward
      estimate renormalises the new weights, so it is only consistent.
    * ``"soft"`` (Karkus, Hsu & Lee 2018, soft resampling): ancestors from
      ``q = α w + (1-α) u`` (``u`` uniform over the particles of positive weight,
      ``α = soft_alpha``), new weights ``∝ w_{a_i}/q_{a_i}``, differentiated through both
      ``w`` and ``q``. The cycle's ``log_evidence`` includes ``log(1/N ∑_i w_{a_i}/q_{a_i})``,
      so the summed evidence stays an unbiased estimate of ``p`` (but the forward pass
      differs: more, and unequally weighted, distinct particles). The gradient ignores the
      score of drawing from ``q``, so it is biased unless ``α = 0`` (uniform ancestors: no
      dependence on ``θ``, unbiased like ``"stop_gradient"`` but noisier; with
      ``resampling="multinomial"``, since the other schemes then keep each particle once:
      sequential importance sampling); at ``α = 1`` it reduces to ``"none"`` (up to
      rounding). Its bias can be larger than that of ``"none"`` (measured in
      ``benchmarks/bench_pf_gradient.py``).

    References: Ścibior & Wood (2021), *Differentiable particle filtering without modifying
    the forward pass*, arXiv:2106.10314; Karkus, Hsu & Lee (2018), *Particle filter
    networks with application to visual localization*, CoRL; Poyiadjis, Doucet & Singh
    (2011), *Particle approximations of the score and observed information matrix in
    state space models*, Biometrika 98(1).

    Args:
        resample_threshold: resample when ``ESS ≤ resample_threshold · N`` (``1``: every cycle,
            ``0``: never, i.e. sequential importance sampling).
        resampling: ``"systematic"``, ``"stratified"``, ``"residual"`` or ``"multinomial"``.
        reg: regularization factor (DAPPER's ``reg``); ``0``: none.
        reg_duplicates_only: jitter only the particles drawn more than once (else all).
        weight_root: ``r ≥ 1``; ``1`` is plain resampling.
        resampling_gradient: ``"none"`` (default), ``"stop_gradient"`` or ``"soft"`` (above).
        soft_alpha: ``α ∈ [0, 1]`` of ``"soft"`` (default 0.5; an error with the others).

    Tuning: on Lorenz-63 (:func:`jaxda.experiments.sakov2012`, ``R = 2 I``), ``N = 100``,
    ``reg = 2.4``, ``resample_threshold = 0.3`` (DAPPER's suggested ``PartFilt`` setting)
    gives an analysis RMSE of about 0.38 (median over seeds; DAPPER's own run the same), with
    occasional seeds that lose track for a while (in both).

    ``resample_threshold`` and ``reg`` may be traced (e.g. ``jax.vmap`` over a grid of them
    in a tuning sweep); ``resampling``, ``reg_duplicates_only`` and ``weight_root`` are static.

    Reference: DAPPER (Raanes et al.), ``dapper.da_methods.particle.PartFilt``; Doucet,
    de Freitas & Gordon (2001), *Sequential Monte Carlo methods in practice*, ch. 12.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> pf = particle_filter(resample_threshold=0.5, reg=1.0)
        >>> obs = observation_model(identity(3), obs_std=1.0)
        >>> state = pf.init(jax.random.normal(jax.random.key(0), (100, 3)))
        >>> state, info = pf.step(jax.random.key(1), state, jnp.full(3, 2.0), obs)
        >>> state.ensemble.shape, bool(info.resampled), bool(info.ess <= 50)
        ((100, 3), True, True)

        The log-likelihood of an AR(1) model and its derivative in the coefficient ``a``
        through the driver, the same forward value with and without the gradient correction:

        >>> from jaxda.assimilate import assimilate
        >>> from jaxda.models import LinearModel, with_noise
        >>> from jaxda.observations import observation_series
        >>> om = observation_model(identity(1), obs_std=0.5)
        >>> series = observation_series(jnp.ones((5, 1)), om, n_steps=1)
        >>> E0 = jax.random.normal(jax.random.key(2), (512, 1))
        >>> def loglik(a, method):
        ...     model = with_noise(LinearModel(a * jnp.eye(1), jnp.zeros(1)), 0.3)
        ...     _, hist = assimilate(jax.random.key(3), method, model, series, E0)
        ...     return jnp.sum(hist.info.log_evidence)
        >>> sg = particle_filter(resampling_gradient="stop_gradient")
        >>> bool(loglik(0.9, sg) == loglik(0.9, particle_filter()))
        True
        >>> bool(jax.grad(loglik)(0.9, sg) > 0)  # exact (Kalman filter): 1.90
        True
    """
    check_in_range("resample_threshold", resample_threshold, 0.0, 1.0)
    draw = _resampler(resampling)
    check_in_range("reg", reg, 0.0, float("inf"))
    check_in_range("weight_root", weight_root, 1.0, float("inf"))
    alpha = _check_resampling_gradient(resampling_gradient, soft_alpha, weight_root)

    def init(ensemble, obs=None):
        del obs
        check_ensemble(ensemble)
        N = ensemble.shape[0]
        return PFState(ensemble, jnp.full((N,), -jnp.log(N), ensemble.dtype))

    def step(key, state, y, obs):
        E = state.ensemble
        N, n = E.shape
        mask = observed(y)
        k_res, k_reg = jax.random.split(key)
        ll = jax.vmap(lambda x: log_likelihood(obs.noise, y - obs.operator(x), mask))(E)
        unnorm = state.log_weights + ll
        log_inc = jax.nn.logsumexp(unnorm)
        ok = jnp.isfinite(log_inc) & jnp.all(~jnp.isnan(unnorm))
        logw = jnp.where(ok, unnorm - log_inc, state.log_weights)
        ess = 1.0 / jnp.sum(jnp.exp(2.0 * logw))
        do = ok & _should_resample(ess, resample_threshold, N)

        def resample(_):
            idx, logw_r, corr = _resample_log_weights(
                k_res, draw, logw, resampling_gradient, alpha, weight_root
            )
            Ea = E[idx]
            if not (is_concrete(reg) and float(reg) == 0.0):
                eps = regularization_jitter(k_reg, E, logw, reg * kernel_bandwidth(N, n))
                if reg_duplicates_only:
                    copies = jnp.zeros(N, jnp.int32).at[idx].add(1)
                    eps = jnp.where((copies[idx] > 1)[:, None], eps, 0.0)
                Ea = Ea + eps
            return Ea, logw_r, corr

        def keep(_):
            return E, logw, jnp.zeros((), logw.dtype)

        E_new, logw_new, corr = jax.lax.cond(do, resample, keep, None)
        base = analysis_info(E_new, mask)
        status = jnp.where(ok, base.status, Status.NONFINITE).astype(jnp.int32)
        info = PFInfo(base.n_obs, status, ess, do, log_inc + corr)
        return PFState(E_new, logw_new), info

    return Method(init, step)
