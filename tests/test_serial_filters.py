"""DEnKF (Sakov & Oke 2008) and the serial EnSRF / EAKF against independent references.

References written here: the dense Kalman update of the ensemble's sample mean and covariance,
the DEnKF covariance ``(I-KH)P + ¼ KHPHᵀKᵀ``, and Anderson's two-step EAKF (adjust the observed
variable, then regress), one scalar observation at a time, in plain NumPy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.ensemble import (
    denkf,
    denkf_analysis,
    ensrf,
    ensrf_analysis,
    gaspari_cohn,
    periodic_distance,
)
from jaxda.observations import from_callable, linear, observation_model, subset

KEY = jax.random.key(0)


def _prior(n=6, N=8, seed=0):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(N, n)) @ rng.normal(size=(n, n)) + rng.normal(size=n)
    return jnp.asarray(E)


def _kalman(E, H, R, y):
    """Exact Kalman update of the ensemble's sample mean and covariance (dense)."""
    E, H, R, y = map(np.asarray, (E, H, R, y))
    xb, P = E.mean(0), np.cov(E.T)
    K = np.linalg.solve(H @ P @ H.T + R, H @ P).T
    return xb + K @ (y - H @ xb), (np.eye(len(xb)) - K @ H) @ P, K, P


def _linear_problem(n=6, m=4, seed=1):
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(m, n))
    std = rng.uniform(0.5, 2.0, m)
    obs = observation_model(linear(jnp.asarray(H)), obs_std=jnp.asarray(std))
    y = jnp.asarray(rng.normal(size=m))
    return obs, H, np.diag(std**2), y


def _exact_moments_ensemble(mu, B, N, seed=0):
    """N members whose sample mean and covariance are exactly ``mu`` and ``B``."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(N, len(mu)))
    Z = Z - Z.mean(0)
    Z = Z @ np.linalg.inv(np.linalg.cholesky(np.cov(Z.T))).T  # sample covariance I
    return jnp.asarray(mu + Z @ np.linalg.cholesky(B).T)


def test_denkf_mean_is_gaussian_conditioning_and_covariance_is_sakov_oke():
    """Prior ensemble with sample moments exactly (μ, B): the DEnKF mean is the mean of
    N(μ, B) conditioned on y (dense), its covariance (I-KH)B + ¼ KHBHᵀKᵀ (Sakov & Oke 2008)."""
    n = 6
    rng = np.random.default_rng(3)
    L = rng.normal(size=(n, n)) / 2
    B, mu = L @ L.T + 0.5 * np.eye(n), rng.normal(size=n)
    E = _exact_moments_ensemble(mu, B, N=8)
    obs, H, R, y = _linear_problem()
    K = np.linalg.solve(H @ B @ H.T + R, H @ B).T
    post_mean = mu + K @ (np.asarray(y) - H @ mu)
    post_cov = B - K @ H @ B
    Ea = np.asarray(denkf_analysis(E, y, obs))
    np.testing.assert_allclose(Ea.mean(0), post_mean, atol=1e-10)
    np.testing.assert_allclose(np.cov(Ea.T), post_cov + 0.25 * K @ H @ B @ H.T @ K.T, atol=1e-10)
    # more spread than the Kalman (square-root) covariance, never less
    assert np.all(np.linalg.eigvalsh(np.cov(Ea.T) - post_cov) > -1e-10)
    # with localization (here: taper 1 everywhere, the explicit n×m gain path) the same
    Eloc = np.asarray(denkf_analysis(E, y, obs, localization=jnp.ones((n, 4))))
    np.testing.assert_allclose(Eloc, Ea, atol=1e-10)


@pytest.mark.parametrize("order", [None, [3, 1, 0, 2], [2, 3, 1, 0]])
def test_ensrf_is_the_exact_kalman_update_for_any_order(order):
    E = _prior()
    obs, H, R, y = _linear_problem()
    xa, Pa, _, _ = _kalman(E, H, R, y)
    Ea = np.asarray(ensrf_analysis(E, y, obs, order=None if order is None else jnp.array(order)))
    np.testing.assert_allclose(Ea.mean(0), xa, atol=1e-10)
    np.testing.assert_allclose(np.cov(Ea.T), Pa, atol=1e-10)


def test_ensrf_random_ordering_method_is_exact_and_orders_differ():
    E = _prior(N=8)
    obs, H, R, y = _linear_problem()
    xa, Pa, _, _ = _kalman(E, H, R, y)
    method = ensrf()  # ordering="random"
    state, step = method.init(E), jax.jit(method.step)
    ens = []
    for k in range(3):
        s, info = step(jax.random.key(k), state, y, obs)
        Ea = np.asarray(s.ensemble)
        np.testing.assert_allclose(Ea.mean(0), xa, atol=1e-10)
        np.testing.assert_allclose(np.cov(Ea.T), Pa, atol=1e-10)
        ens.append(Ea)
    assert int(info.n_obs) == 4
    # same mean and covariance, but (N < n+1) the members depend on the order
    assert max(np.abs(ens[0] - e).max() for e in ens[1:]) > 1e-6


def _eakf_two_step(E, H_fn, std, y, taper_x=None, taper_y=None, recompute=False):
    """Anderson's serial EAKF in NumPy: for each scalar observation j, (1) move the observed
    ensemble to the posterior mean and shrink its anomalies by √(R/(σ²+R)); (2) regress the
    observation-space increments onto every state variable (and every predicted observation).
    ``recompute``: re-evaluate H on the updated state before each observation (DAPPER SL_EAKF)
    instead of carrying the predicted observations along."""
    X = np.array(E, dtype=float)
    Z = np.array([H_fn(x) for x in X])
    for j in range(len(y)):
        if not np.isfinite(y[j]):
            continue
        if recompute:
            Z = np.array([H_fn(x) for x in X])
        z = Z[:, j]
        zbar, var, R = z.mean(), z.var(ddof=1), std[j] ** 2
        post_var = 1.0 / (1.0 / var + 1.0 / R)
        post_mean = post_var * (zbar / var + y[j] / R)
        z_new = post_mean + np.sqrt(R / (var + R)) * (z - zbar)
        dz = z_new - z
        zc = z - zbar
        beta_x = (X - X.mean(0)).T @ zc / (zc @ zc)  # regression of each variable on z
        beta_y = (Z - Z.mean(0)).T @ zc / (zc @ zc)
        if taper_x is not None and taper_y is not None:
            beta_x, beta_y = beta_x * taper_x[:, j], beta_y * taper_y[:, j]
        X = X + np.outer(dz, beta_x)
        Z = Z + np.outer(dz, beta_y)
    return X


def test_ensrf_equals_anderson_two_step_eakf_nonlinear_obs():
    E = _prior()
    rng = np.random.default_rng(5)
    W = rng.normal(size=(4, 6)) / 2
    std = np.array([0.7, 1.3, 0.4, 1.0])
    y = np.array([0.5, -1.0, 2.0, 0.1])

    def h_np(x):
        return np.sin(W @ x) + 0.1 * (W @ x) ** 2

    obs = observation_model(
        from_callable(lambda x: jnp.sin(jnp.asarray(W) @ x) + 0.1 * (jnp.asarray(W) @ x) ** 2, 4),
        obs_std=jnp.asarray(std),
    )
    Ea = np.asarray(ensrf_analysis(E, jnp.asarray(y), obs))
    np.testing.assert_allclose(Ea, _eakf_two_step(E, h_np, std, y), atol=1e-10)


def _ring_taper(n, idx, radius):
    d = periodic_distance(jnp.arange(n)[:, None], jnp.asarray(idx)[None, :], n)
    return np.asarray(gaspari_cohn(d, radius))


def test_localized_ensrf_equals_sl_eakf_with_recomputed_point_observations():
    """With point observations, carrying the predicted observations with the obs-obs taper is
    the same as DAPPER's SL_EAKF, which re-evaluates H on the localized state each time."""
    n, radius = 6, 0.6  # tapers 1, 0.28 and 3e-4 at distances 0, 1 and 2; 0 beyond
    idx = np.array([0, 2, 3, 5])
    E = _prior(seed=2)
    std = np.array([0.5, 1.0, 0.8, 1.2])
    y = np.array([1.0, -0.5, 0.2, 2.0])
    obs = observation_model(subset(idx, n=n), obs_std=jnp.asarray(std))
    method = ensrf(ordering="sequential", localization_radius=radius)
    Ea = np.asarray(method.step(KEY, method.init(E), jnp.asarray(y), obs)[0].ensemble)
    tx = _ring_taper(n, idx, radius)
    ref = _eakf_two_step(E, lambda x: x[idx], std, y, tx, tx[idx], recompute=True)
    np.testing.assert_allclose(Ea, ref, atol=1e-10)
    # the taper acts
    unloc = np.asarray(ensrf_analysis(E, jnp.asarray(y), obs))
    assert np.abs(Ea - unloc).max() > 1e-3


@pytest.mark.parametrize("name", ["denkf", "ensrf"])
def test_missing_observation_is_dropping_it(name):
    E = _prior()
    rng = np.random.default_rng(6)
    idx, std = np.array([0, 2, 3, 5]), np.array([0.5, 1.0, 2.0, 0.7])
    y = jnp.asarray(rng.normal(size=4))
    factory = {"denkf": denkf, "ensrf": lambda **k: ensrf(ordering="sequential", **k)}[name]
    for opts in ({}, {"localization_radius": 2.0}):
        method = factory(**opts)
        step = method.step
        full = observation_model(subset(idx, n=6), obs_std=jnp.asarray(std))
        keep = np.array([0, 1, 3])
        fewer = observation_model(subset(idx[keep], n=6), obs_std=jnp.asarray(std[keep]))
        s1, i1 = step(KEY, method.init(E), y.at[2].set(jnp.nan), full)
        s2, _ = step(KEY, method.init(E), y[keep], fewer)
        np.testing.assert_allclose(s1.ensemble, s2.ensemble, atol=1e-10)
        assert int(i1.n_obs) == 3
        s3, i3 = step(KEY, method.init(E), jnp.full(4, jnp.nan), full)
        np.testing.assert_allclose(s3.ensemble, E, atol=1e-12)
        assert int(i3.n_obs) == 0


@pytest.mark.parametrize("name", ["denkf", "ensrf"])
def test_infinite_radius_is_no_localization(name):
    E = _prior()
    obs = observation_model(subset([0, 2, 3, 5], n=6), obs_std=0.8)
    y = jnp.array([0.3, -1.0, 1.5, 0.2])
    extra = {"ordering": "sequential"} if name == "ensrf" else {}
    factory = {"denkf": denkf, "ensrf": ensrf}[name]
    a = factory(localization_radius=float("inf"), **extra)
    b = factory(**extra)
    Ea = a.step(KEY, a.init(E), y, obs)[0].ensemble
    Eb = b.step(KEY, b.init(E), y, obs)[0].ensemble
    np.testing.assert_allclose(Ea, Eb, atol=1e-10)


def test_localization_options_state_locations_and_domain_length():
    """Explicit state locations on a ring of the same length = the default grid; a far
    variable is not updated by a localized DEnKF or EnSRF."""
    n = 6
    E = _prior()
    obs = observation_model(subset([0, 2, 3, 5], n=n), obs_std=1.0)
    y = jnp.array([3.0, jnp.nan, jnp.nan, jnp.nan])  # only variable 0 is observed
    for factory in (denkf, lambda **k: ensrf(ordering="sequential", **k)):
        m1 = factory(localization_radius=0.4)
        m2 = factory(
            localization_radius=0.8, state_locations=2.0 * jnp.arange(n), domain_length=2.0 * n
        )
        E1 = m1.step(KEY, m1.init(E), y, obs)[0].ensemble
        E2 = m2.step(KEY, m2.init(E), y, obs)[0].ensemble
        np.testing.assert_allclose(E1, E2, atol=1e-10)
        np.testing.assert_allclose(E1[:, 2:5], E[:, 2:5], atol=1e-12)  # beyond 3.65 radii
        assert np.abs(E1[:, 1] - E[:, 1]).max() > 1e-3  # variable 1 tapered, not cut
        assert np.abs(E1[:, 0] - E[:, 0]).max() > 1e-3


def test_bad_inputs_raise():
    E = _prior()
    y = jnp.zeros(2)
    full = observation_model(subset([0, 1], n=6), obs_cov=jnp.array([[1.0, 0.5], [0.5, 1.0]]))
    with pytest.raises(ValueError, match="diagonal R"):
        ensrf_analysis(E, y, full)
    method = ensrf()
    with pytest.raises(ValueError, match="diagonal R"):
        method.step(KEY, method.init(E), y, full)
    with pytest.raises(ValueError, match="ordering"):
        ensrf(ordering="sorted")
    for factory in (denkf, ensrf):
        with pytest.raises(ValueError, match="localization_radius"):
            factory(localization_radius=-1.0)
        with pytest.raises(ValueError, match="state_locations"):
            factory(localization_radius=1.0, state_locations=jnp.zeros((2, 2, 2)))
        m = factory(localization_radius=1.0, state_locations=jnp.arange(5.0))
        ok = observation_model(subset([0, 1], n=6), obs_std=1.0)
        with pytest.raises(ValueError, match="state_locations"):
            m.step(KEY, m.init(E), y, ok)
        m = factory(localization_radius=1.0)
        no_loc = observation_model(from_callable(lambda x: x[:2], 2), obs_std=1.0)
        with pytest.raises(ValueError, match="locations"):
            m.step(KEY, m.init(E), y, no_loc)
    ok = observation_model(subset([0, 1], n=6), obs_std=1.0)
    with pytest.raises(ValueError, match="order"):
        ensrf_analysis(E, y, ok, order=jnp.arange(3))
    with pytest.raises(ValueError, match="order"):
        ensrf_analysis(E, y, ok, order=jnp.array([1, 1]))
    with pytest.raises(ValueError, match="localization must have shape"):
        denkf_analysis(E, y, ok, localization=jnp.ones((6, 3)))
    with pytest.raises(ValueError, match="y must have length"):
        denkf_analysis(E, jnp.zeros(3), ok)
    with pytest.raises(ValueError, match="members"):
        ensrf_analysis(E[:1], y, ok)
