"""Bootstrap particle filter against the exact Kalman filter on a linear-Gaussian model, its
resampling schemes against their defining properties, and its regularization against DAPPER's
formula.

Model: ``x_k = A x_{k-1} + w``, ``w ~ N(0, Q)``; ``y_k = H x_k + v``, ``v ~ N(0, R)``, ``x_0 ~ N(m0, P0)``.
Monte-Carlo tolerance: the PF mean has std ≈ sqrt(P/ESS) (ESS after weighting); the log-evidence
estimate has std O(sqrt(K/N)).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import assimilate, ensemble_mean
from jaxda.core import Status
from jaxda.ensemble import (
    RESAMPLING,
    bootstrap_particle_filter,
    kernel_bandwidth,
    particle_filter,
    pf_trajectories,
    regularization_jitter,
    systematic_resample,
)
from jaxda.models import LinearModel, with_noise
from jaxda.observations import linear, observation_model, observation_series

A = jnp.array([[0.9, 0.2], [-0.1, 0.8]])
Q = jnp.diag(jnp.array([0.2, 0.1]))
H = jnp.array([[1.0, 0.5]])
R = jnp.array([[0.3]])
M0 = jnp.array([0.5, -0.5])
P0 = jnp.eye(2)
K_STEPS, N = 15, 20000


def kalman(ys, mask):
    """Exact Kalman filter (NumPy, independent of the JAX code) with the log-evidence."""
    A_, Q_, H_, R_ = (np.asarray(a) for a in (A, Q, H, R))
    m, P, logev = np.asarray(M0), np.asarray(P0), 0.0
    means, covs = [], []
    for k in range(ys.shape[0]):
        if k > 0:
            m, P = A_ @ m, A_ @ P @ A_.T + Q_
        if mask[k]:
            S = H_ @ P @ H_.T + R_
            r = ys[k] - H_ @ m
            logev += -0.5 * (r @ np.linalg.solve(S, r) + np.linalg.slogdet(2 * np.pi * S)[1])
            Kg = np.linalg.solve(S, H_ @ P).T
            m, P = m + Kg @ r, P - Kg @ H_ @ P
        means.append(m)
        covs.append(P)
    return np.stack(means), np.stack(covs), logev


def simulate(seed):
    rng = np.random.default_rng(seed)
    x = rng.multivariate_normal(np.asarray(M0), np.asarray(P0))
    xs = [x]
    for _ in range(K_STEPS - 1):
        x = np.asarray(A) @ x + rng.multivariate_normal(np.zeros(2), np.asarray(Q))
        xs.append(x)
    xs = np.stack(xs)
    return xs, xs @ np.asarray(H).T + rng.normal(size=(K_STEPS, 1)) * np.sqrt(float(R[0, 0]))


def transition(k, x):
    return A @ x + jnp.sqrt(jnp.diag(Q)) * jax.random.normal(k, (2,))


def loglik(x, y):
    r = y - H @ x
    return -0.5 * r @ jnp.linalg.solve(R, r) - 0.5 * jnp.linalg.slogdet(2 * jnp.pi * R)[1]


@pytest.fixture(scope="module")
def run():
    _, ys = simulate(0)
    ys = jnp.asarray(ys)
    mask = jnp.arange(K_STEPS) % 2 == 0  # observe every other step
    p0 = jax.random.multivariate_normal(jax.random.key(1), M0, P0, (N,))
    pf = jax.jit(lambda k: bootstrap_particle_filter(k, transition, loglik, p0, ys, mask=mask))
    return ys, mask, pf(jax.random.key(2))


def test_pf_matches_kalman_filter(run):
    ys, mask, res = run
    means, covs, logev = kalman(ys, np.asarray(mask))
    pf_mean = res.mean()
    se = np.sqrt(np.diagonal(covs, axis1=1, axis2=2) / np.asarray(res.ess)[:, None])
    np.testing.assert_array_less(np.abs(pf_mean - means), 5 * se + 1e-12)
    w = jnp.exp(res.log_weights)
    d = res.particles - pf_mean[:, None]
    pf_var = jnp.einsum("kn,knd->kd", w, d**2)
    np.testing.assert_allclose(pf_var, np.diagonal(covs, axis1=1, axis2=2), rtol=0.1)
    assert abs(float(res.log_evidence) - logev) < 0.1
    assert res.particles.shape == (K_STEPS, N, 2)


def test_genealogy_trajectories_end_in_filtering_distribution(run):
    ys, mask, res = run
    means, covs, _ = kalman(ys, np.asarray(mask))
    trajs = jax.jit(pf_trajectories, static_argnums=2)(jax.random.key(3), res, 4000)
    assert trajs.shape == (4000, K_STEPS, 2)
    se = np.sqrt(np.diag(covs[-1]) / 4000)
    np.testing.assert_array_less(np.abs(trajs[:, -1].mean(0) - means[-1]), 5 * se)
    # every traced path is a valid ancestry: consecutive states are particles of their time
    first = np.asarray(res.particles[0, :, 0])
    assert all(np.any(first == v) for v in np.asarray(trajs[:5, 0, 0]))


@pytest.mark.parametrize("resampling", ["systematic", "residual"])
def test_single_step_analysis_matches_exact_posterior(resampling):
    obs = observation_model(linear(H), obs_cov=R)
    pf = particle_filter(resampling=resampling)
    analysis = jax.jit(lambda k, E, y: pf.step(k, pf.init(E), y, obs))
    E = jax.random.multivariate_normal(jax.random.key(4), M0, P0, (N,))
    y = jnp.array([1.2])
    state, info = analysis(jax.random.key(5), E, y)
    Ea = state.ensemble
    # resample_threshold=1: resampled, so the weights are uniform again
    assert bool(info.resampled) and int(info.status) == 0 and int(info.n_obs) == 1
    np.testing.assert_allclose(state.log_weights, -np.log(N), rtol=1e-12)
    assert 1.0 < float(info.ess) < N
    S = H @ P0 @ H.T + R
    Kg = jnp.linalg.solve(S, H @ P0).T
    ma, Pa = M0 + Kg @ (y - H @ M0), P0 - Kg @ H @ P0
    np.testing.assert_array_less(np.abs(Ea.mean(0) - ma), 5 * np.sqrt(np.diag(Pa) / (N / 2)))
    np.testing.assert_allclose(jnp.cov(Ea.T), Pa, atol=0.05)


def test_particle_filter_method_through_the_driver_matches_kalman_filter(run):
    """The Method (ESS-triggered resampling) run by ``assimilate`` on the same problem: the
    first observation is at the initial time (``n_steps = 0``), the unobserved times are
    all-NaN rows, and the per-time ``log_evidence`` sums to the Kalman log-evidence."""
    ys, mask, _ = run
    means, covs, logev = kalman(ys, np.asarray(mask))
    model = with_noise(LinearModel(A, M0), jnp.sqrt(jnp.diag(Q)))
    y_nan = jnp.where(mask[:, None], ys, jnp.nan)
    steps = np.ones(K_STEPS, int)
    steps[0] = 0
    series = observation_series(y_nan, observation_model(linear(H), obs_cov=R), n_steps=steps)
    p0 = jax.random.multivariate_normal(jax.random.key(1), M0, P0, (N,))

    def record(state):
        w = jax.nn.softmax(state.log_weights)
        m = ensemble_mean(state)
        return m, w @ (state.ensemble - m) ** 2

    pf = particle_filter(resample_threshold=0.5)
    _, hist = jax.jit(lambda k: assimilate(k, pf, model, series, p0, record=record))(
        jax.random.key(9)
    )
    pf_mean, pf_var = hist.record
    info = hist.info
    np.testing.assert_array_equal(info.n_obs, np.asarray(mask, int))
    assert np.all(np.asarray(info.status) == 0)
    # no observation: weights unchanged, hence no resampling
    assert not np.any(np.asarray(info.resampled)[~np.asarray(mask)])
    se = np.sqrt(np.diagonal(covs, axis1=1, axis2=2) / np.asarray(info.ess)[:, None])
    np.testing.assert_array_less(np.abs(pf_mean - means), 5 * se + 1e-12)
    np.testing.assert_allclose(pf_var, np.diagonal(covs, axis1=1, axis2=2), rtol=0.1)
    assert abs(float(jnp.sum(info.log_evidence)) - logev) < 0.1


# ---------------------------------------------------------------------------------------------
# Resampling schemes
# ---------------------------------------------------------------------------------------------

W8 = np.array([0.02, 0.31, 0.0, 0.07, 0.155, 0.2, 0.045, 0.2])  # sums to 1, one zero weight
N_KEYS = 4000


@functools.cache
def _counts(name, n=8):
    keys = jax.random.split(jax.random.key(11), N_KEYS)
    idx = jax.jit(jax.vmap(lambda k: RESAMPLING[name](k, jnp.log(jnp.asarray(W8)), n)))(keys)
    idx = np.asarray(idx)
    assert idx.shape == (N_KEYS, n) and idx.min() >= 0 and idx.max() < len(W8)
    return np.stack([np.bincount(row, minlength=len(W8)) for row in idx])


@pytest.mark.parametrize("name", sorted(RESAMPLING))
def test_resampling_is_unbiased(name):
    """Mean copies over many keys = n w_i (tolerance from the multinomial variance, the
    largest of the four schemes); a zero weight is never drawn."""
    n = 8
    c = _counts(name)
    assert np.all(c.sum(1) == n)
    se = np.sqrt(n * W8 * (1 - W8) / N_KEYS)
    np.testing.assert_array_less(np.abs(c.mean(0) - n * W8), 5 * se + 1e-12)
    assert np.all(c[:, 2] == 0)
    # another number of draws than of weights
    idx = RESAMPLING[name](jax.random.key(12), jnp.log(jnp.asarray(W8)), 13)
    assert idx.shape == (13,) and not np.any(np.asarray(idx) == 2)


def test_resampling_schemes_spread_of_copies():
    """Systematic: ⌊n w⌋ or ⌈n w⌉ copies (the least variance an unbiased integer count can
    have); residual: never fewer than ⌊n w⌋; stratified: within one of those; residual and
    stratified have less variance than multinomial (Douc, Cappé & Moulines 2005)."""
    n = 8
    lo, hi = np.floor(n * W8), np.ceil(n * W8)
    sys_c, res_c = _counts("systematic"), _counts("residual")
    str_c, mul_c = _counts("stratified"), _counts("multinomial")
    assert np.all((sys_c == lo) | (sys_c == hi))
    assert np.all(res_c >= lo)
    assert np.all((str_c >= lo - 1) & (str_c <= hi + 1))
    frac = n * W8 - lo
    np.testing.assert_allclose(sys_c.var(0), frac * (1 - frac), atol=0.03)
    multinomial_var = n * W8 * (1 - W8)
    np.testing.assert_allclose(mul_c.var(0), multinomial_var, rtol=0.1, atol=0.01)
    # residual: multinomial over the R = n - Σ⌊n w⌋ remaining draws
    R = n - lo.sum()
    np.testing.assert_allclose(res_c.var(0), frac * (1 - frac / R), rtol=0.1, atol=0.01)
    assert str_c.var(0).sum() < 0.8 * multinomial_var.sum()
    assert res_c.var(0).sum() < 0.8 * multinomial_var.sum()


# ---------------------------------------------------------------------------------------------
# When the filter resamples, and how it keeps its weights
# ---------------------------------------------------------------------------------------------

OBS_1D = observation_model(linear(H), obs_cov=R)


def _numpy_loglik(E, y):
    r = y - E @ np.asarray(H).T
    return -0.5 * np.sum(r**2, axis=1) / float(R[0, 0])


def test_resamples_only_when_ess_is_at_most_the_threshold():
    E = np.asarray(jax.random.multivariate_normal(jax.random.key(12), M0, P0, (200,)))
    y = np.array([1.5])
    w = np.exp(_numpy_loglik(E, y) - _numpy_loglik(E, y).max())
    w /= w.sum()
    ess_frac = 1.0 / np.sum(w**2) / len(w)
    assert 0.1 < ess_frac < 0.9
    # the threshold may be traced: one compilation for both
    step = jax.jit(
        lambda thr: particle_filter(resample_threshold=thr).step(
            jax.random.key(13), particle_filter().init(jnp.asarray(E)), jnp.asarray(y), OBS_1D
        )
    )
    for threshold, expected in [(ess_frac * 0.99, False), (ess_frac * 1.01, True)]:
        state, info = step(threshold)
        assert bool(info.resampled) is expected
        np.testing.assert_allclose(float(info.ess), ess_frac * len(w), rtol=1e-10)
        if expected:
            np.testing.assert_allclose(state.log_weights, -np.log(len(w)), rtol=1e-12)
        else:
            np.testing.assert_array_equal(state.ensemble, E)
            np.testing.assert_allclose(np.exp(state.log_weights), w, rtol=1e-10, atol=1e-300)


def test_threshold_zero_is_sequential_importance_sampling():
    """Never resamples: the weights are the normalised product of the likelihoods of every
    cycle, and the log-evidence increments sum to log of the mean prior-weighted product."""
    E = jnp.asarray(jax.random.multivariate_normal(jax.random.key(14), M0, P0, (50,)))
    ys = [np.array([0.3]), np.array([np.nan]), np.array([-0.4]), np.array([0.8])]
    pf = particle_filter(resample_threshold=0.0, reg=2.0)
    step = jax.jit(pf.step)
    state, logev = pf.init(E), 0.0
    for k, y in enumerate(ys):
        state, info = step(jax.random.key(k), state, jnp.asarray(y), OBS_1D)
        assert not bool(info.resampled)
        logev += float(info.log_evidence)
    np.testing.assert_array_equal(state.ensemble, E)
    ll = np.sum([_numpy_loglik(np.asarray(E), y) for y in ys if np.all(np.isfinite(y))], axis=0)
    w = np.exp(ll - ll.max())
    np.testing.assert_allclose(np.exp(state.log_weights), w / w.sum(), rtol=1e-9)
    # the Gaussian normalising constants: 3 observed times of one value
    const = 3 * (-0.5 * np.log(2 * np.pi * float(R[0, 0])))
    np.testing.assert_allclose(logev, np.log(np.mean(np.exp(ll))) + const, rtol=1e-10)


def test_all_zero_likelihood_is_a_failure_status_not_nan():
    E = jax.random.multivariate_normal(jax.random.key(15), M0, P0, (30,))
    pf = particle_filter(reg=1.0)
    state0 = pf.init(E)
    # every residual squares to inf: p(y | x_i) = 0 for every particle
    state, info = jax.jit(pf.step)(jax.random.key(16), state0, jnp.array([1e200]), OBS_1D)
    assert int(info.status) == Status.NONFINITE and not bool(info.resampled)
    np.testing.assert_array_equal(state.ensemble, E)
    np.testing.assert_array_equal(state.log_weights, state0.log_weights)
    assert float(info.log_evidence) == -np.inf


def test_weight_root_keeps_the_weighted_mean():
    """Resampling from ``w^{1/r}`` with compensating weights ``w^{1-1/r}``: the weighted mean
    after resampling estimates the one before; more distinct particles survive than with
    plain resampling."""
    E = jax.random.multivariate_normal(jax.random.key(17), M0, P0, (2000,))
    y = jnp.array([2.0])

    def analysis(pf):
        return jax.jit(pf.step)(jax.random.key(18), pf.init(E), y, OBS_1D)

    rooted, info = analysis(particle_filter(weight_root=3.0))
    w = jax.nn.softmax(jax.vmap(lambda x: OBS_1D.noise.log_prob(y - H @ x))(E))
    mean_before = np.asarray(w @ E)
    mean_after = np.asarray(jax.nn.softmax(rooted.log_weights) @ rooted.ensemble)
    sd = np.sqrt(np.diag(np.cov(np.asarray(E).T, aweights=np.asarray(w))) / float(info.ess))
    np.testing.assert_array_less(np.abs(mean_after - mean_before), 5 * sd)
    plain = systematic_resample(jax.random.key(19), jnp.log(w))
    assert len(np.unique(rooted.ensemble[:, 0])) > 1.2 * len(np.unique(np.asarray(plain)))


# ---------------------------------------------------------------------------------------------
# Regularization
# ---------------------------------------------------------------------------------------------


def test_kernel_bandwidth_is_dappers_optimal_bandwidth():
    auto_bandw = pytest.importorskip("dapper.da_methods.particle").auto_bandw
    for N_, n_ in [(100, 3), (40, 10), (2, 1)]:
        assert kernel_bandwidth(N_, n_) == pytest.approx(auto_bandw(N_, n_), rel=1e-14)


def test_regularization_jitter_has_dappers_covariance():
    """Draws of ``regularization_jitter`` have covariance ``scale² C_w`` with ``C_w`` DAPPER's
    ``raw_C12ᵀ raw_C12`` (the unbiased weighted covariance, numpy's ``aweights``)."""
    rng = np.random.default_rng(19)
    E = rng.normal(size=(30, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.5]])
    logw = rng.normal(size=30)
    w = np.exp(logw - logw.max())
    w /= w.sum()
    C_w = np.cov(E.T, aweights=w)
    raw_C12 = pytest.importorskip("dapper.da_methods.particle").raw_C12
    C12 = raw_C12(E, w)
    np.testing.assert_allclose(C12.T @ C12, C_w, rtol=1e-10)
    scale = 2.4 * kernel_bandwidth(30, 3)
    draws = jax.jit(
        jax.vmap(lambda k: regularization_jitter(k, jnp.asarray(E), jnp.asarray(logw), scale))
    )(jax.random.split(jax.random.key(20), 400))
    d = np.asarray(draws).reshape(-1, 3)  # 12000 independent draws
    np.testing.assert_allclose(np.cov(d.T), scale**2 * C_w, rtol=0.05, atol=0.02 * scale**2)
    assert np.all(np.abs(d.mean(0)) < 5 * scale * np.sqrt(np.diag(C_w) / len(d)))


def test_filter_jitters_the_resampled_duplicates_with_the_weighted_covariance():
    """``Ea(reg) - Ea(0)`` with the same key: zero for particles drawn once, and for the
    duplicates ``N(0, (reg·h)² C_w)`` with ``C_w`` the weighted covariance before resampling;
    with ``reg_duplicates_only=False`` every particle moves."""
    obs = observation_model(linear(H), obs_cov=R)
    N_, reg = 1500, 2.0
    E = jax.random.multivariate_normal(jax.random.key(21), M0, P0, (N_,))
    y = jnp.array([1.2])
    state0 = particle_filter().init(E)
    # reg traced: one compilation for reg = 0 and reg = 2
    analysis = jax.jit(
        lambda r: particle_filter(reg=r).step(jax.random.key(22), state0, y, obs)[0].ensemble
    )
    plain = np.asarray(analysis(0.0))
    d = np.asarray(analysis(reg)) - plain
    _, inverse, copies = np.unique(plain[:, 0], return_inverse=True, return_counts=True)
    dup = copies[inverse] > 1
    assert 100 < dup.sum() < N_
    assert np.all(d[~dup] == 0) and np.all(d[dup] != 0)
    w = np.asarray(jax.nn.softmax(jax.vmap(lambda x: obs.noise.log_prob(y - H @ x))(E)))
    C = (reg * N_ ** (-1 / (2 + 4))) ** 2 * np.cov(np.asarray(E).T, aweights=w)
    np.testing.assert_allclose(np.cov(d[dup].T), C, rtol=0.15, atol=0.01)
    pf_all = particle_filter(reg=reg, reg_duplicates_only=False)
    small = pf_all.init(E[:40])
    moved = jax.jit(pf_all.step)(jax.random.key(23), small, y, obs)[0].ensemble
    assert not np.any(np.isin(np.asarray(moved[:, 0]), np.asarray(E[:40, 0])))


def test_regularized_pf_tracks_lorenz63_where_the_plain_one_collapses():
    """DAPPER's tuning for sakov2012 (R = 2 I): PartFilt N=100, reg 2.4, NER 0.3 (rmse.a
    0.38 over 2000 cycles); without regularization the particles collapse."""
    from jaxda.experiments import sakov2012, twin_experiment

    setup = sakov2012(n_cycles=250, burn_in=50)

    def rmse(key, reg):
        pf = particle_filter(resample_threshold=0.3, reg=reg)
        return twin_experiment(key, setup, pf, 100).rmse_analysis

    keys = jax.random.split(jax.random.key(8), 2)
    regs = jnp.array([0.0, 2.4])
    out = jax.jit(jax.vmap(jax.vmap(rmse, (None, 0)), (0, None)))(keys, regs)
    plain, regularized = np.asarray(out[:, 0]), np.asarray(out[:, 1])
    assert np.all(regularized < 0.6), regularized  # climatological RMSE ≈ 7.6
    assert np.all(plain > 3.0 * regularized), (plain, regularized)


def test_pf_validation():
    with pytest.raises(ValueError, match="ys"):
        bootstrap_particle_filter(
            jax.random.key(0), transition, loglik, jnp.zeros((10, 2)), jnp.zeros(3)
        )
    with pytest.raises(ValueError, match="resample_threshold"):
        particle_filter(resample_threshold=1.5)
    with pytest.raises(ValueError, match="reg"):
        particle_filter(reg=-0.1)
    with pytest.raises(ValueError, match="weight_root"):
        particle_filter(weight_root=0.5)
    with pytest.raises(ValueError, match="resampling must be one of"):
        particle_filter(resampling="Sys")
    with pytest.raises(ValueError, match="resampling must be one of"):
        bootstrap_particle_filter(
            jax.random.key(0),
            transition,
            loglik,
            jnp.zeros((10, 2)),
            jnp.zeros((3, 1)),
            resampling="x",
        )
    with pytest.raises(ValueError, match="n must be a positive int"):
        systematic_resample(jax.random.key(0), jnp.zeros(4), 0)
    with pytest.raises(ValueError, match="resample_threshold"):
        bootstrap_particle_filter(
            jax.random.key(0),
            transition,
            loglik,
            jnp.zeros((10, 2)),
            jnp.zeros((3, 1)),
            resample_threshold=2.0,
        )
