"""EnSF analysis: mixture form against the exact Kalman update on a linear-Gaussian case,
paired form against its exact no-observation limit (forecast + N(0, ε_β I) kernel jitter).

EnSF is an approximate Bayesian update (damped likelihood score evaluated at ``x_t``), so the
mixture test checks it lands near the Kalman posterior mean — with a tolerance (0.15, i.e. 19%
of the 0.8 Kalman increment) measured to hold with margin, not Monte-Carlo tight — and that it
reduces the error much more than the forecast does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.diffusion import ensf, ensf_sde
from jaxda.observations import from_callable, identity, observation_model, subset

M = jnp.array([1.0, -1.0])
Y = jnp.array([0.0, 0.5])


def make_ensf(obs, **options):
    """``analysis(key, E, y)`` of the EnSF Method for a fixed observation model."""
    method = ensf(**options)

    def analysis(key, E, y):
        return method.step(key, method.init(E), y, obs)[0].ensemble

    return analysis


@pytest.fixture(scope="module")
def forecast():
    return jax.random.normal(jax.random.key(0), (1000, 2)) + M


def test_mixture_ensf_close_to_kalman_mean(forecast):
    obs = observation_model(identity(2), obs_std=0.5)
    analysis = make_ensf(obs, n_steps=100, eps_alpha=0.05, eps_beta=0.0, prior_score="mixture")
    Ea = jax.jit(analysis)(jax.random.key(1), forecast, Y)
    # prior N(M, I) (sample), R = 0.25 I: K = P (P + R)^{-1}
    P = jnp.cov(forecast.T)
    K = jnp.linalg.solve(P + 0.25 * jnp.eye(2), P).T
    ma = forecast.mean(0) + K @ (Y - forecast.mean(0))
    assert Ea.shape == forecast.shape and bool(jnp.all(jnp.isfinite(Ea)))
    np.testing.assert_allclose(Ea.mean(0), ma, atol=0.15)
    assert float(jnp.linalg.norm(Ea.mean(0) - ma)) < 0.25 * float(
        jnp.linalg.norm(forecast.mean(0) - ma)
    )


def test_paired_ensf_moves_towards_observation(forecast):
    obs = observation_model(from_callable(jnp.arctan, 2), obs_std=0.05)
    Ea = jax.jit(make_ensf(obs, n_steps=100, prior_score="paired"))(
        jax.random.key(2), forecast, jnp.arctan(Y)
    )
    before = jnp.linalg.norm(forecast.mean(0) - Y)
    assert float(jnp.linalg.norm(Ea.mean(0) - Y)) < float(before)


def test_paired_ensf_without_observations_is_kernel_jitter():
    """Uninformative data: members end at ``x^f + N(0, ε_β I)`` as the step count grows."""
    n, N, eps_beta = 50, 400, 0.1
    E = 2.0 * jax.random.normal(jax.random.key(0), (N, n)) + 1.0
    obs = observation_model(identity(n), obs_std=1e4)
    errors = []
    for steps in (100, 1600):
        analysis = make_ensf(obs, n_steps=steps, eps_alpha=0.001, eps_beta=eps_beta)
        d = jax.jit(analysis)(jax.random.key(1), E, jnp.zeros(n)) - E
        # 20,000 draws: the sample variance has relative sd 1%, the mean sd 0.002
        assert abs(float(d.mean())) < 0.01
        assert abs(float(jnp.corrcoef(d.ravel(), E.ravel())[0, 1])) < 0.03
        errors.append(abs(float(d.var()) / eps_beta - 1.0))
    assert errors[1] < 0.04
    assert errors[1] < errors[0]


def test_paired_ensf_gain_grows_with_kernel_variance(forecast):
    """Linear H = I: the increment is a fraction of the innovation that grows with ε_β."""
    obs = observation_model(identity(2), obs_std=0.3)
    gains = []
    for eps_beta in (0.01, 0.1, 0.5):
        Ea = jax.jit(make_ensf(obs, eps_alpha=0.001, eps_beta=eps_beta))(
            jax.random.key(3), forecast, Y
        )
        inc, innov = (Ea - forecast).ravel(), (Y - forecast).ravel()
        gains.append(float(inc @ innov / (innov @ innov)))
    assert 0.0 < gains[0] < gains[1] < gains[2] < 1.0


def test_standardized_ensf_is_affine_equivariant(forecast):
    """``standardize=True``: rescaling/shifting the state (and H accordingly) commutes."""
    # σ_y = 0.5 keeps the explicit Euler steps non-stiff, so rounding is not amplified
    obs = observation_model(from_callable(jnp.arctan, 2), obs_std=0.5)
    c, b = jnp.array([3.0, 0.2]), jnp.array([-5.0, 1.0])
    obs_scaled = observation_model(from_callable(lambda x: jnp.arctan((x - b) / c), 2), obs_std=0.5)
    y = jnp.arctan(Y)
    kw = dict(n_steps=50, eps_beta=0.5, standardize=True)
    Ea = make_ensf(obs, **kw)(jax.random.key(4), forecast, y)
    Ea_scaled = make_ensf(obs_scaled, **kw)(jax.random.key(4), c * forecast + b, y)
    np.testing.assert_allclose(Ea_scaled, c * Ea + b, rtol=1e-9, atol=1e-9)
    # and the kernel is relative: without data members get N(0, ε_β var_f) jitter
    obs_flat = observation_model(identity(2), obs_std=1e6)
    d = make_ensf(obs_flat, n_steps=800, eps_alpha=0.001, eps_beta=0.5, standardize=True)(
        jax.random.key(5), c * forecast + b, jnp.zeros(2)
    ) - (c * forecast + b)
    ratio = jnp.var(d, axis=0) / (0.5 * jnp.var(c * forecast + b, axis=0, ddof=1))
    np.testing.assert_allclose(ratio, 1.0, atol=0.1)  # 1000 members: sd of ratio ≈ 0.045


@pytest.mark.parametrize("standardize", [False, True])
def test_missing_observations_drop_out(forecast, standardize):
    """NaN = missing: the analysis equals the one without that observation (same key), and a
    time with every observation missing leaves the forecast unchanged."""
    method = ensf(n_steps=50, standardize=standardize)
    full = observation_model(identity(2), obs_std=jnp.array([0.3, 0.6]))
    reduced = observation_model(subset([1], 2), obs_std=0.6)

    @jax.jit
    def run(y, obs):
        state, info = method.step(jax.random.key(6), method.init(forecast), y, obs)
        return state.ensemble, info

    a, info = run(jnp.array([jnp.nan, 0.5]), full)
    b, _ = run(jnp.array([0.5]), reduced)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert not np.allclose(a, forecast)
    assert int(info.n_obs) == 1 and int(info.status) == 0
    none, info = run(jnp.full(2, jnp.nan), full)
    np.testing.assert_array_equal(none, forecast)
    assert int(info.n_obs) == 0


@pytest.mark.parametrize("eps_beta", [0.0, 0.025])
def test_ensf_sde_coefficients(eps_beta):
    sde = ensf_sde(0.05, eps_beta)
    t = jnp.array(0.37)
    f = jax.grad(lambda s: sde.log_mean(s))(t)
    np.testing.assert_allclose(sde.drift(t), f, rtol=1e-12)
    g2 = jax.grad(lambda s: sde.std(s) ** 2)(t) - 2 * f * sde.std(t) ** 2
    np.testing.assert_allclose(sde.diffusion(t) ** 2, g2, rtol=1e-12)
    np.testing.assert_allclose(sde.mean_coef(1.0), 0.05, rtol=1e-12)
    np.testing.assert_allclose(sde.std(0.0) ** 2, eps_beta, atol=1e-15)
    np.testing.assert_allclose(sde.std(1.0), 1.0, rtol=1e-12)


def test_ensf_validation(forecast):
    obs = observation_model(identity(2), obs_std=0.5)
    with pytest.raises(ValueError, match="prior_score"):
        ensf(prior_score="kde")
    with pytest.raises(ValueError, match="eps_beta"):
        ensf(eps_beta=1.0)
    with pytest.raises(ValueError, match="eps_beta"):
        ensf(eps_beta=-0.1)
    with pytest.raises(ValueError, match="n_steps"):
        ensf(n_steps=0)
    with pytest.raises(ValueError, match="y"):
        make_ensf(obs)(jax.random.key(0), forecast, jnp.ones(3))
    with pytest.raises(ValueError, match="N >= 2"):
        ensf().init(forecast[:1])
