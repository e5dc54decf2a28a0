"""Bootstrap particle filter against the exact Kalman filter on a linear-Gaussian model.

Model: ``x_k = A x_{k-1} + w``, ``w ~ N(0, Q)``; ``y_k = H x_k + v``, ``v ~ N(0, R)``, ``x_0 ~ N(m0, P0)``.
Monte-Carlo tolerance: the PF mean has std ≈ sqrt(P/ESS) (ESS after weighting); the log-evidence
estimate has std O(sqrt(K/N)).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import assimilate, ensemble_mean
from jaxda.ensemble import (
    bootstrap_particle_filter,
    particle_filter,
    pf_trajectories,
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


def test_single_step_analysis_matches_exact_posterior():
    obs = observation_model(linear(H), obs_cov=R)
    pf = particle_filter()
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


def test_systematic_resampling_counts():
    logw = jnp.log(jnp.array([0.1, 0.2, 0.3, 0.4]))
    idx = systematic_resample(jax.random.key(0), logw, 1000)
    counts = np.bincount(np.asarray(idx), minlength=4)
    # systematic resampling: each count is floor or ceil of n w_i
    assert np.all(np.abs(counts - np.array([100, 200, 300, 400])) <= 1)


def test_pf_validation():
    with pytest.raises(ValueError, match="ys"):
        bootstrap_particle_filter(
            jax.random.key(0), transition, loglik, jnp.zeros((10, 2)), jnp.zeros(3)
        )
    with pytest.raises(ValueError, match="resample_threshold"):
        particle_filter(resample_threshold=1.5)
    with pytest.raises(ValueError, match="jitter"):
        particle_filter(jitter=-0.1)
    with pytest.raises(ValueError, match="resample_threshold"):
        bootstrap_particle_filter(
            jax.random.key(0),
            transition,
            loglik,
            jnp.zeros((10, 2)),
            jnp.zeros((3, 1)),
            resample_threshold=2.0,
        )


def test_regularization_jitter_has_the_weighted_covariance():
    """``Ea(jitter) - Ea(0)`` with the same key is ``N(0, jitter² C_w)``, ``C_w`` the weighted
    forecast covariance (computed here with numpy's ``aweights``)."""
    obs = observation_model(linear(H), obs_cov=R)
    n_members, jitter = 4000, 0.5
    E = jax.random.multivariate_normal(jax.random.key(6), M0, P0, (n_members,))
    y = jnp.array([1.2])

    def analysis(pf):
        return pf.step(jax.random.key(7), pf.init(E), y, obs)[0].ensemble

    d = analysis(particle_filter(jitter=jitter)) - analysis(particle_filter())
    w = jax.nn.softmax(jax.vmap(lambda x: obs.noise.log_prob(y - H @ x))(E))
    C_w = np.cov(np.asarray(E).T, aweights=np.asarray(w), bias=True)
    # 4000 draws: sample-covariance entries have relative sd ≈ 2-3%
    np.testing.assert_allclose(np.cov(np.asarray(d).T), jitter**2 * C_w, rtol=0.12, atol=0.01)
    assert abs(float(d.mean())) < 0.05


def test_regularized_pf_tracks_lorenz63_where_the_plain_one_collapses():
    import dataclasses

    from jaxda.experiments import sakov2012, twin_experiment

    # the former lorenz63_setup: sakov2012 with R = 4 I and an initial spread of 1
    setup = dataclasses.replace(sakov2012(n_cycles=300, burn_in=100, obs_std=2.0), init_std=1.0)

    def rmse(jitter):
        pf = particle_filter(jitter=jitter)
        run = jax.jit(jax.vmap(lambda k: twin_experiment(k, setup, pf, 100).rmse_analysis))
        return np.asarray(run(jax.random.split(jax.random.key(8), 2)))

    plain, regularized = rmse(0.0), rmse(0.8)
    assert np.all(regularized < 1.0), regularized  # R = 4 I; climatological RMSE ≈ 8
    assert np.all(plain > 3.0 * regularized), (plain, regularized)
