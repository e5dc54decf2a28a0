r"""Bootstrap particle filter (sequential importance resampling).

Gordon, Salmond & Smith (1993); Doucet & Johansen (2011), *A tutorial on particle filtering
and smoothing*. For a state-space model ``x_k ~ p(x_k | x_{k-1})``, ``y_k ~ p(y_k | x_k)``,
particles are propagated with the model (the proposal is the prior), weighted by the
likelihood and resampled (systematic resampling) when the effective sample size
``ESS = 1/∑w_i²`` falls below ``resample_threshold · N``.

The log-evidence estimate is ``log p̂(y_{0:K}) = ∑_k log ∑_i w^{(i)}_{k-1} p(y_k | x_k^{(i)})``
(unbiased for ``p``). Trajectory samples from the joint smoothing distribution are drawn by
tracing the genealogy (:func:`pf_trajectories`); they degenerate for long horizons, which is
the usual price of the bootstrap filter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core import Method, Status, analysis_info, check_ensemble, check_in_range, check_vector
from ..observations import log_likelihood, observed

Transition = Callable[[Array, Array], Array]
LogLik = Callable[[Array, Array], Array]


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


def systematic_resample(
    key: Array, log_weights: Float[Array, " N"], n: int | None = None
) -> Int[Array, " n"]:
    """Systematic resampling indices from normalised or unnormalised log-weights."""
    N = log_weights.shape[0]
    n = N if n is None else n
    w = jax.nn.softmax(log_weights)
    cdf = jnp.cumsum(w)
    u = (jax.random.uniform(key, (), w.dtype) + jnp.arange(n)) / n
    return jnp.clip(jnp.searchsorted(cdf, u), 0, N - 1)


def bootstrap_particle_filter(
    key: Array,
    transition: Transition,
    log_likelihood: LogLik,
    particles0: Float[Array, "N n"],
    ys: Float[Array, "K m"],
    *,
    mask: Bool[Array, " K"] | None = None,
    resample_threshold: float = 0.5,
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
        resample_threshold: resample when ``ESS < threshold · N`` (1 = always).

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
    N = particles0.shape[0]
    ll_fn = jax.vmap(log_likelihood, in_axes=(0, None))

    def weight(x, logw_prev, y, m):
        ll = jnp.where(m, ll_fn(x, y), 0.0)
        unnorm = logw_prev + ll
        log_inc = jax.nn.logsumexp(unnorm)
        logw = unnorm - log_inc
        return logw, log_inc, 1.0 / jnp.sum(jnp.exp(2.0 * logw))

    def resample(k, x, logw, ess):
        do = ess < resample_threshold * N
        idx = jnp.where(do, systematic_resample(k, logw), jnp.arange(N))
        logw = jnp.where(do, jnp.full((N,), -jnp.log(N), logw.dtype), logw)
        return idx, logw

    def body(carry, inp):
        x_prev, idx_prev, logw_prev = carry
        k, y, m = inp
        kt, kr = jax.random.split(k)
        x = jax.vmap(transition)(jax.random.split(kt, N), x_prev[idx_prev])
        logw, log_inc, ess = weight(x, logw_prev, y, m)
        idx, logw_next = resample(kr, x, logw, ess)
        return (x, idx, logw_next), (x, logw, idx, ess, log_inc)

    kr0, krest = jax.random.split(key)
    logw_u = jnp.full((N,), -jnp.log(N), particles0.dtype)
    logw0, inc0, ess0 = weight(particles0, logw_u, ys[0], mask[0])
    idx0, logw0_next = resample(kr0, particles0, logw0, ess0)
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


class PFState(NamedTuple):
    """Particle-filter state: the particles and their normalised log-weights."""

    ensemble: Float[Array, "N n"]
    log_weights: Float[Array, " N"]


class PFInfo(NamedTuple):
    """Per-cycle diagnostics of the particle filter (``n_obs``/``status`` as every method)."""

    n_obs: Int[Array, ""]
    status: Int[Array, ""]
    ess: Float[Array, ""]  # effective sample size 1/Σw² after weighting
    resampled: Bool[Array, ""]
    log_evidence: Float[Array, ""]  # log p(y_k | y_{<k}) estimate


def particle_filter(*, jitter: float = 0.0, resample_threshold: float = 1.0) -> Method:
    r"""Sequential importance resampling as a :class:`jaxda.core.Method`.

    Each step multiplies the weights by ``p(y | x)`` (missing observations left out), and
    resamples (systematic) when the effective sample size ``1/Σw²`` falls below
    ``resample_threshold · N`` (``1`` resamples whenever the weights are not uniform).

    ``jitter > 0`` regularizes it (post-regularized PF, Musso, Oudjane & Le Gland 2001): every
    resampled member gets ``ε ~ N(0, jitter² C_w)``, ``C_w`` the weighted covariance of the
    forecast particles, drawn in ensemble space as ``ε = jitter · zᵀ A`` with
    ``A_i = \sqrt{w_i}(x_i - \bar x_w)`` and ``z ~ N(0, I_N)`` (no ``n×n`` matrix). Without
    it the filter collapses onto a few members in perfect-model twin experiments, where
    nothing else renews the particles.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> pf = particle_filter(jitter=0.3)
        >>> obs = observation_model(identity(3), obs_std=1.0)
        >>> state = pf.init(jax.random.normal(jax.random.key(0), (100, 3)))
        >>> state, info = pf.step(jax.random.key(1), state, jnp.ones(3), obs)
        >>> state.ensemble.shape, bool(info.resampled)
        ((100, 3), True)
    """
    check_in_range("jitter", jitter, 0.0, float("inf"))
    check_in_range("resample_threshold", resample_threshold, 0.0, 1.0)

    def init(ensemble, obs=None):
        del obs
        check_ensemble(ensemble)
        N = ensemble.shape[0]
        return PFState(ensemble, jnp.full((N,), -jnp.log(N), ensemble.dtype))

    def step(key, state, y, obs):
        E = state.ensemble
        N = E.shape[0]
        mask = observed(y)
        k_res, k_jit = jax.random.split(key)
        ll = jax.vmap(lambda x: log_likelihood(obs.noise, y - obs.operator(x), mask))(E)
        unnorm = state.log_weights + ll
        log_inc = jax.nn.logsumexp(unnorm)
        logw = unnorm - log_inc
        w = jnp.exp(logw)
        ess = 1.0 / jnp.sum(w**2)
        do = ess < resample_threshold * N * (1.0 - 1e-6)
        Ea = E[systematic_resample(k_res, logw)]
        if jitter != 0.0:
            A = jnp.sqrt(w)[:, None] * (E - w @ E)
            z = jax.random.normal(k_jit, (N, N), E.dtype)
            Ea = Ea + jitter * (z @ A)
        E_new = jnp.where(do, Ea, E)
        logw_new = jnp.where(do, jnp.full((N,), -jnp.log(N), logw.dtype), logw)
        base = analysis_info(E_new, mask)
        status = jnp.where(jnp.isfinite(log_inc), base.status, Status.NONFINITE).astype(jnp.int32)
        return PFState(E_new, logw_new), PFInfo(base.n_obs, status, ess, do, log_inc)

    return Method(init, step)
