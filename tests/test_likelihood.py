"""The EnKF innovation log-likelihood and its gradient against exact references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from jaxda.assimilate import assimilate, log_likelihood
from jaxda.ensemble import enkf, innovation_log_likelihood, particle_filter
from jaxda.models import LinearModel, with_noise
from jaxda.observations import linear, observation_model, observation_series


@pytest.mark.parametrize("N", [4, 30])  # N <= m (N×N system) and N > m (m×m system)
@pytest.mark.parametrize("full_R", [False, True])
def test_innovation_log_likelihood_is_the_gaussian_density(N, full_R):
    rng = np.random.default_rng(0)
    n, m = 5, 6
    H = rng.normal(size=(m, n))
    if full_R:
        A = rng.normal(size=(m, m))
        R = A @ A.T / m + 0.5 * np.eye(m)
        om = observation_model(linear(jnp.asarray(H)), obs_cov=jnp.asarray(R))
    else:
        std = rng.uniform(0.5, 2.0, m)
        R = np.diag(std**2)
        om = observation_model(linear(jnp.asarray(H)), obs_std=jnp.asarray(std))
    E = rng.normal(size=(N, n))
    y = rng.normal(size=m)
    y[[1, 4]] = np.nan
    ok = np.isfinite(y)
    Y = E @ H.T
    C = np.cov(Y.T, ddof=1) + R
    ref = multivariate_normal(Y.mean(0)[ok], C[np.ix_(ok, ok)]).logpdf(y[ok])
    got = innovation_log_likelihood(jnp.asarray(E), jnp.asarray(y), om)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


# ---------------------------------------------------------------- linear-Gaussian state space
M_TRUE = np.array([[0.9, 0.2], [-0.2, 0.9]])
H_OBS = np.array([[1.0, 0.0]])
Q_STD, R_STD, A_TRUE = 0.5, 0.7, 1.0
K = 12


def _data():
    rng = np.random.default_rng(3)
    x = np.zeros(2)
    ys = []
    for _ in range(K):
        x = M_TRUE @ x + Q_STD * rng.normal(size=2)
        ys.append(H_OBS @ x + R_STD * rng.normal(size=1))
    y = np.array(ys)
    y[4] = np.nan  # a time with nothing observed
    return y


def exact_log_likelihood(a, q, r, y):
    """Kalman filter log-likelihood (numpy) of x_{k+1} = a M x_k + η, η ~ N(0, q²I)."""
    m, P = np.zeros(2), np.eye(2)
    total = 0.0
    for yk in y:
        m, P = a * M_TRUE @ m, a**2 * M_TRUE @ P @ M_TRUE.T + q**2 * np.eye(2)
        if np.all(np.isfinite(yk)):
            S = H_OBS @ P @ H_OBS.T + r**2
            total += multivariate_normal(H_OBS @ m, S).logpdf(yk)
            G = np.linalg.solve(S, H_OBS @ P).T
            m, P = m + G @ (yk - H_OBS @ m), P - G @ H_OBS @ P
    return total


def _enkf_log_likelihood(theta, key, E0, y):
    a, q, r = theta
    model = with_noise(LinearModel(a * jnp.asarray(M_TRUE), jnp.zeros(2)), q)
    obs = observation_series(
        jnp.asarray(y), observation_model(linear(jnp.asarray(H_OBS)), obs_std=r), n_steps=1
    )
    return log_likelihood(key, enkf(), model, obs, E0)


def test_enkf_log_likelihood_and_gradient_match_the_kalman_filter():
    """Large ensemble: the EnKF log-likelihood and its gradient in (a, q, r) equal the exact
    Kalman filter's within Monte-Carlo error (mean over independent runs)."""
    y = _data()
    theta = jnp.array([A_TRUE, Q_STD, R_STD])
    N, runs = 2000, 6
    keys = jax.random.split(jax.random.key(0), runs)
    E0s = jax.vmap(lambda k: jax.random.normal(k, (N, 2)))(
        jax.random.split(jax.random.key(1), runs)
    )
    value_and_grad = jax.jit(jax.vmap(jax.value_and_grad(_enkf_log_likelihood), (None, 0, 0, None)))
    vals, grads = value_and_grad(theta, keys, E0s, y)
    ref = exact_log_likelihood(*np.asarray(theta), y)
    eps = 1e-5
    ref_grad = np.array(
        [
            (
                exact_log_likelihood(*(np.asarray(theta) + eps * e), y)
                - exact_log_likelihood(*(np.asarray(theta) - eps * e), y)
            )
            / (2 * eps)
            for e in np.eye(3)
        ]
    )
    vals, grads = np.asarray(vals), np.asarray(grads)
    # Monte-Carlo error of the mean over runs, plus a small allowance for the O(1/N) bias.
    assert abs(vals.mean() - ref) < 4 * vals.std(ddof=1) / np.sqrt(runs) + 0.02
    tol = 4 * grads.std(0, ddof=1) / np.sqrt(runs) + 0.02 * np.abs(ref_grad) + 0.02
    np.testing.assert_array_less(np.abs(grads.mean(0) - ref_grad), tol)
    # and the check can fail: a wrong parameter is far outside the tolerance
    wrong = exact_log_likelihood(A_TRUE, 2 * Q_STD, R_STD, y)
    assert abs(vals.mean() - wrong) > 10 * (4 * vals.std(ddof=1) / np.sqrt(runs) + 0.02)


def test_particle_filter_likelihood_is_its_evidence():
    y = _data()
    obs = observation_series(
        jnp.asarray(y), observation_model(linear(jnp.asarray(H_OBS)), obs_std=R_STD), n_steps=1
    )
    model = with_noise(LinearModel(jnp.asarray(M_TRUE), jnp.zeros(2)), Q_STD)
    E0 = jax.random.normal(jax.random.key(1), (50, 2))
    _, hist = assimilate(jax.random.key(0), particle_filter(), model, obs, E0, likelihood=True)
    np.testing.assert_array_equal(hist.log_likelihood, hist.info.log_evidence)
    assert np.all(np.isfinite(hist.log_likelihood)) and hist.log_likelihood[4] == 0.0


def test_likelihood_needs_two_members():
    obs = observation_series(
        jnp.zeros((3, 1)), observation_model(linear(jnp.asarray(H_OBS)), obs_std=1.0), n_steps=1
    )
    model = LinearModel(jnp.asarray(M_TRUE), jnp.zeros(2))
    with pytest.raises(ValueError, match="N >= 2"):
        assimilate(jax.random.key(0), enkf(), model, obs, jnp.zeros((1, 2)), likelihood=True)


def test_gram_functions_derivative_with_repeated_eigenvalues():
    """S has more members than columns, so SSᵀ has a repeated zero eigenvalue (where the
    derivative of eigh is undefined); the matrix functions' derivatives are still exact."""
    from jax.test_util import check_grads

    from jaxda.ensemble._spectral import gram_functions

    rng = np.random.default_rng(0)
    S = jnp.asarray(rng.normal(size=(5, 2)))
    B = jnp.asarray(rng.normal(size=(5, 3)))

    def f(S, B):
        kinds = ("inverse_1p", "inverse_sqrt_1p", "sqrt_correction")
        return gram_functions(S @ S.T, (B, B, B), kinds)

    check_grads(f, (S, B), order=1, modes=["fwd", "rev"])


@pytest.mark.parametrize("name", ["enkf-localized", "letkf"])
def test_gradient_of_hyperparameters_with_missing_observations(name):
    """d log-likelihood / d localization radius is finite and equals a central difference, with
    missing observations in the data (the LETKF's transform is the ETKF's)."""
    from jaxda.ensemble import letkf
    from jaxda.models import Lorenz96
    from jaxda.observations import subset

    n = 12
    y = 2.0 * jax.random.normal(jax.random.key(2), (6, n // 2))
    y = y.at[2, 1].set(jnp.nan).at[4, :3].set(jnp.nan)
    om = observation_model(subset(jnp.arange(0, n, 2), n), obs_std=1.0)
    obs = observation_series(y, om, n_steps=1)
    E0 = jax.random.normal(jax.random.key(0), (6, n)) + 2.0
    build = {
        "enkf-localized": lambda p: enkf(localization_radius=p),
        "letkf": lambda p: letkf(localization_radius=p),
    }[name]
    f = jax.jit(lambda p: log_likelihood(jax.random.key(1), build(p), Lorenz96(n=n), obs, E0))
    g = float(jax.grad(f)(2.0))
    fd = float((f(2.0 + 1e-5) - f(2.0 - 1e-5)) / 2e-5)
    assert np.isfinite(g) and abs(g) > 1e-3
    np.testing.assert_allclose(g, fd, rtol=1e-5)


def test_truncated_gradient_keeps_values_and_cuts_the_graph():
    y = _data()
    E0 = jax.random.normal(jax.random.key(1), (20, 2))
    obs = observation_series(
        jnp.asarray(y), observation_model(linear(jnp.asarray(H_OBS)), obs_std=R_STD), n_steps=1
    )

    def f(a, truncate):
        model = with_noise(LinearModel(a * jnp.asarray(M_TRUE), jnp.zeros(2)), Q_STD)
        key = jax.random.key(0)
        return log_likelihood(key, enkf(), model, obs, E0, truncate_gradient=truncate)

    full = jax.value_and_grad(f)(1.0, None)
    whole = jax.value_and_grad(f)(1.0, K)  # one cut, before the first cycle: the full gradient
    one = jax.value_and_grad(f)(1.0, 1)
    assert full[0] == whole[0] == one[0]
    np.testing.assert_allclose(whole[1], full[1], rtol=1e-12)
    assert abs(one[1] - full[1]) > 1e-3 * abs(full[1])
    with pytest.raises(ValueError, match="truncate_gradient"):
        f(1.0, 0)
