"""EnKF / ETKF against the exact Kalman filter (linear-Gaussian references)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import assimilate
from jaxda.ensemble import enkf, enkf_analysis, etkf, etkf_analysis, gain_taper, inflate, rtps
from jaxda.experiments import TwinSetup, chronology, initial_ensemble, simulate
from jaxda.models import LinearModel, gaussian, with_noise
from jaxda.observations import linear, observation_model, subset


def _kalman_update(mean, P, H, R, y):
    S = H @ P @ H.T + R
    K = np.linalg.solve(S, H @ P).T
    return mean + K @ (y - H @ mean), (np.eye(len(mean)) - K @ H) @ P


@pytest.fixture
def problem():
    key = jax.random.key(0)
    k1, k2 = jax.random.split(key)
    n, N = 6, 30
    E = jax.random.normal(k1, (N, n)) @ jnp.diag(jnp.linspace(0.5, 2.0, n)) + 1.0
    H = np.zeros((3, n))
    H[0, 0], H[1, 2], H[2, 5] = 1.0, 1.0, 1.0
    H[1, 3] = 0.5
    R = np.array([[0.5, 0.1, 0.0], [0.1, 0.8, 0.0], [0.0, 0.0, 0.3]])
    y = jax.random.normal(k2, (3,))
    return E, H, R, y


def test_etkf_equals_kalman_update_of_sample_statistics(problem):
    E, H, R, y = problem
    obs = observation_model(linear(H), obs_cov=R)
    Ea = etkf_analysis(E, y, obs)
    xb, Pb = np.mean(E, 0), np.cov(np.asarray(E).T)
    xa, Pa = _kalman_update(xb, Pb, H, R, np.asarray(y))
    np.testing.assert_allclose(Ea.mean(0), xa, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.cov(np.asarray(Ea).T), Pa, rtol=1e-9, atol=1e-10)


def test_enkf_mean_is_kalman_mean_with_centred_perturbations(problem):
    E, H, R, y = problem
    obs = observation_model(linear(H), obs_cov=R)
    Ea = enkf_analysis(jax.random.key(3), E, y, obs)
    xa, _ = _kalman_update(np.mean(E, 0), np.cov(np.asarray(E).T), H, R, np.asarray(y))
    np.testing.assert_allclose(Ea.mean(0), xa, rtol=1e-10, atol=1e-10)


def test_enkf_gain_is_ensemble_space_form_of_PHt(problem):
    # member-wise: x_i + K (y + eps_i - H x_i), K = P Hᵀ (H P Hᵀ + R)^{-1}, written out densely
    E, H, R, y = problem
    obs = observation_model(linear(H), obs_cov=R)
    key = jax.random.key(4)
    Ea = enkf_analysis(key, E, y, obs, center_perturbations=False)
    eps = obs.noise.sample(key, (E.shape[0],))
    P = np.cov(np.asarray(E).T)
    K = P @ H.T @ np.linalg.inv(H @ P @ H.T + R)
    ref = np.asarray(E) + (np.asarray(y + eps) - np.asarray(E) @ H.T) @ K.T
    np.testing.assert_allclose(Ea, ref, rtol=1e-9, atol=1e-9)


def test_m_smaller_and_larger_than_N_agree():
    # m < N uses the m×m system, m >= N the N×N one: same answer
    n = 12
    E = jax.random.normal(jax.random.key(5), (8, n))
    y = jnp.arange(n) / n
    big = observation_model(subset(np.arange(n), n), obs_std=0.7)
    Ea_big = enkf_analysis(jax.random.key(6), E, y, big)
    H = np.eye(n)
    ref = enkf_analysis(jax.random.key(6), E, y, observation_model(linear(H), obs_std=0.7))
    np.testing.assert_allclose(Ea_big, ref, rtol=1e-10)
    few = observation_model(subset([1, 5], n), obs_std=0.7)
    Efew = jax.random.normal(jax.random.key(7), (30, n))
    P = np.cov(np.asarray(Efew).T)
    Hs = np.eye(n)[[1, 5]]
    xa, _ = _kalman_update(
        np.mean(Efew, 0), P, Hs, 0.49 * np.eye(2), np.asarray(y[jnp.array([1, 5])])
    )
    np.testing.assert_allclose(
        enkf_analysis(jax.random.key(8), Efew, y[jnp.array([1, 5])], few).mean(0), xa, rtol=1e-9
    )


def test_full_and_diagonal_noise_give_the_same_update(problem):
    E, H, _, y = problem
    std = jnp.array([0.5, 1.5, 0.9])
    a = enkf_analysis(jax.random.key(1), E, y, observation_model(linear(H), obs_std=std))
    b = enkf_analysis(
        jax.random.key(1), E, y, observation_model(linear(H), obs_cov=jnp.diag(std**2))
    )
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_localization_with_huge_radius_is_no_localization():
    n = 10
    E = jax.random.normal(jax.random.key(2), (6, n))
    obs = observation_model(subset(np.arange(0, n, 2), n), obs_std=1.0)
    y = jnp.ones(5)
    taper = gain_taper(n, obs.operator.locations, radius=1e7)
    a = enkf_analysis(jax.random.key(3), E, y, obs)
    b = enkf_analysis(jax.random.key(3), E, y, obs, localization=taper)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
    # and a short radius really cuts far-away increments
    c = enkf_analysis(
        jax.random.key(3), E, y, obs, localization=gain_taper(n, obs.operator.locations, 0.25)
    )
    np.testing.assert_allclose(c[:, 1], E[:, 1], atol=1e-12)  # odd variables are > 2c from any obs


def test_enkf_method_localization_is_the_gaspari_cohn_gain_taper():
    # enkf(localization_radius=r) tapers the gain with gain_taper at the operator's locations
    n = 10
    E = jax.random.normal(jax.random.key(2), (6, n))
    obs = observation_model(subset(np.arange(0, n, 2), n), obs_std=1.0)
    y = jnp.ones(5)
    key = jax.random.key(3)
    for radius in (0.25, 1.5):
        method = enkf(localization_radius=radius)
        state, info = method.step(key, method.init(E, obs), y, obs)
        ref = enkf_analysis(key, E, y, obs, localization=gain_taper(n, np.arange(0, n, 2), radius))
        np.testing.assert_allclose(state.ensemble, ref, rtol=1e-12, atol=1e-12)
        assert int(info.n_obs) == 5 and int(info.status) == 0
    # without localization the method is enkf_analysis itself
    state, _ = enkf().step(key, enkf().init(E), y, obs)
    np.testing.assert_allclose(state.ensemble, enkf_analysis(key, E, y, obs), rtol=1e-12)
    nonlocal_obs = observation_model(linear(np.eye(n)[:3]), obs_std=1.0)  # no locations
    with pytest.raises(ValueError, match="locations"):
        enkf(localization_radius=1.0).step(key, enkf().init(E), jnp.ones(3), nonlocal_obs)


def test_missing_observations_drop_out_of_the_update(problem):
    # NaN in y: the analysis equals the analysis with that observation removed (diagonal R)
    E, H, _, y = problem
    std = jnp.array([0.5, 1.5, 0.9])
    y_nan = y.at[1].set(jnp.nan)
    keep = np.array([0, 2])
    full = observation_model(linear(H), obs_std=std)
    reduced = observation_model(linear(H[keep]), obs_std=std[keep])
    np.testing.assert_allclose(
        etkf_analysis(E, y_nan, full), etkf_analysis(E, y[keep], reduced), rtol=1e-10, atol=1e-12
    )
    # EnKF: the mean update is the Kalman update on the present observations
    xa, _ = _kalman_update(
        np.mean(E, 0),
        np.cov(np.asarray(E).T),
        H[keep],
        np.diag(np.asarray(std[keep]) ** 2),
        np.asarray(y[keep]),
    )
    Ea = enkf_analysis(jax.random.key(3), E, y_nan, full)
    np.testing.assert_allclose(Ea.mean(0), xa, rtol=1e-10, atol=1e-10)
    # full R: the observed block of R is used
    _, _, R, _ = problem
    xa, Pa = _kalman_update(
        np.mean(E, 0), np.cov(np.asarray(E).T), H[keep], R[np.ix_(keep, keep)], np.asarray(y[keep])
    )
    Ea = etkf_analysis(E, y_nan, observation_model(linear(H), obs_cov=R))
    np.testing.assert_allclose(Ea.mean(0), xa, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.cov(np.asarray(Ea).T), Pa, rtol=1e-9, atol=1e-10)
    # all missing: nothing changes
    np.testing.assert_allclose(etkf_analysis(E, jnp.full(3, jnp.nan), full), E, atol=1e-12)


def test_inflation_and_rtps():
    E = jax.random.normal(jax.random.key(0), (50, 3))
    Ei = inflate(E, 1.5)
    np.testing.assert_allclose(Ei.mean(0), E.mean(0), atol=1e-12)
    np.testing.assert_allclose(Ei.std(0), 1.5 * E.std(0), rtol=1e-12)
    Ea = 0.5 * E
    Er = rtps(Ea, E, 1.0)
    np.testing.assert_allclose(Er.std(0), E.std(0), rtol=1e-12)
    np.testing.assert_allclose(rtps(Ea, E, 0.0), Ea, rtol=1e-12)


def test_bad_input_errors(problem):
    E, H, R, y = problem
    obs = observation_model(linear(H), obs_cov=R)
    with pytest.raises(ValueError, match="N >= 2"):
        enkf_analysis(jax.random.key(0), E[:1], y, obs)
    with pytest.raises(ValueError, match="members first"):
        etkf_analysis(E[0], y, obs)
    with pytest.raises(ValueError, match="length 3"):
        etkf_analysis(E, jnp.ones(4), obs)


# ---------------------------------------------------------------- cycled, large ensemble
# a correlated model-error covariance (per time unit; dt = 0.5)
Q_FULL = np.array(
    [[0.2, 0.1, 0.0, 0.05], [0.1, 0.3, 0.1, 0.0], [0.0, 0.1, 0.2, 0.1], [0.05, 0.0, 0.1, 0.4]]
)


def _linear_setup(n_cycles=12, q="scalar"):
    theta = 0.3
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    M = 0.97 * np.block([[rot, np.zeros((2, 2))], [np.zeros((2, 2)), rot.T]])
    linear_model = LinearModel(jnp.asarray(M), jnp.array([1.0, 0, -1, 0.5]), dt=0.5)
    if q == "scalar":
        model = with_noise(linear_model, 0.3)
    else:
        model = with_noise(linear_model, cov=jnp.asarray(Q_FULL), per="time")
    obs = observation_model(subset([0, 3], 4), obs_std=jnp.array([0.7, 0.4]))
    setup = TwinSetup(
        model, obs, chronology(0.5, obs_every=1, n_cycles=n_cycles), gaussian(model.x0, 1.0)
    )
    return setup, M


def _exact_kalman(setup, M, data):
    n = setup.model.dim
    H = np.eye(n)[[0, 3]]
    R = np.diag([0.49, 0.16])
    Q = np.asarray(setup.model.noise.cov())
    m, P = np.asarray(setup.initial.mean), np.eye(n)
    means, covs = [], []
    for y in np.asarray(data.observations.y):
        m, P = M @ m, M @ P @ M.T + Q
        m, P = _kalman_update(m, P, H, R, y)
        means.append(m)
        covs.append(P)
    return np.array(means), np.array(covs)


@pytest.mark.parametrize(
    ("method", "N", "q"), [("enkf", 2000, "scalar"), ("etkf", 400, "scalar"), ("etkf", 400, "full")]
)
def test_cycled_filter_matches_exact_kalman_filter(method, N, q):
    """Stochastic forecasts with a scalar or a full model-error Q (per time unit, scaled by
    dt) against the exact Kalman filter with that Q."""
    setup, M = _linear_setup(q=q)
    if q == "full":  # the per-step covariance is Q·dt
        np.testing.assert_allclose(setup.model.noise.cov(), Q_FULL * 0.5, rtol=1e-12)
    data = simulate(jax.random.key(10), setup)
    E0 = initial_ensemble(jax.random.key(11), setup, N)
    filt = enkf() if method == "enkf" else etkf()
    record = lambda s: (s.ensemble.mean(0), jnp.cov(s.ensemble.T))  # noqa: E731
    _, hist = jax.jit(
        lambda k: assimilate(k, filt, setup.model, data.observations, E0, record=record)
    )(jax.random.key(12))
    means, covs = hist.record
    km, kP = _exact_kalman(setup, M, data)
    sd = np.sqrt(np.diagonal(kP, axis1=1, axis2=2))
    # Mean errors in units of the Monte-Carlo error sd/sqrt(N) of an ensemble mean.
    z = (np.asarray(means) - km) / (sd / np.sqrt(N))
    # Covariance: relative error of the variances in units of sqrt(2/N).
    var = np.diagonal(np.asarray(covs), axis1=1, axis2=2)
    zc = (var / np.diagonal(kP, axis1=1, axis2=2) - 1) / np.sqrt(2.0 / N)
    print(
        method,
        "rms z",
        np.sqrt(np.mean(z**2)),
        "max",
        np.abs(z).max(),
        "cov rms",
        np.sqrt(np.mean(zc**2)),
        np.abs(zc).max(),
    )
    assert np.sqrt(np.mean(z**2)) < 3.0 and np.abs(z).max() < 8.0
    assert np.sqrt(np.mean(zc**2)) < 3.0 and np.abs(zc).max() < 8.0


def test_mean_preserving_rotation_is_orthogonal_fixes_ones_and_averages_to_the_projector():
    from jaxda.ensemble import mean_preserving_rotation

    N, reps = 6, 4000
    Om = jax.vmap(lambda k: mean_preserving_rotation(k, N))(
        jax.random.split(jax.random.key(0), reps)
    )
    eye = jnp.broadcast_to(jnp.eye(N), Om.shape)
    np.testing.assert_allclose(jnp.einsum("rij,rkj->rik", Om, Om), eye, atol=1e-12)
    np.testing.assert_allclose(Om @ jnp.ones(N), jnp.ones((reps, N)), atol=1e-12)
    # Haar on the complement of 1: E[Ω] = 11ᵀ/N; each entry's MC sd ≤ 1/sqrt(reps) ≈ 0.016
    np.testing.assert_allclose(Om.mean(0), jnp.full((N, N), 1.0 / N), atol=0.07)
    # Ω = P + U₂QU₂ᵀ with E[Q_ab Q_cd] = δ_ac δ_bd/(N-1): Var(Ω_ij) = (1 - 1/N)²/(N-1)
    np.testing.assert_allclose(jnp.var(Om, axis=0), (N - 1) / N**2, rtol=0.15)
