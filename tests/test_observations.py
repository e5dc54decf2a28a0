import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.observations import (
    from_callable,
    gaussian_noise,
    identity,
    linear,
    observation_model,
    subset,
)


def test_operators_for_one_state():
    x = jnp.arange(6.0)
    np.testing.assert_allclose(identity(6)(x), x)
    np.testing.assert_allclose(subset([0, 2, 4], 6)(x), [0.0, 2.0, 4.0])
    H = jnp.array([[1.0, 1.0, 0, 0, 0, 0]])
    np.testing.assert_allclose(linear(H)(x), [1.0])
    op = from_callable(lambda v: jnp.arctan(v[:2]), 2)
    np.testing.assert_allclose(op(x), np.arctan([0.0, 1.0]))


def test_diagonal_noise_sampling_and_whitening():
    noise = gaussian_noise(std=jnp.array([0.5, 2.0]))
    e = noise.sample(jax.random.key(0), (20000,))
    np.testing.assert_allclose(jnp.std(e, axis=0), [0.5, 2.0], rtol=0.03)
    np.testing.assert_allclose(noise.whiten(jnp.array([1.0, 1.0])), [2.0, 0.5])


def test_full_noise_matches_covariance():
    R = jnp.array([[2.0, 0.6], [0.6, 1.0]])
    noise = gaussian_noise(cov=R)
    e = noise.sample(jax.random.key(1), (40000,))
    np.testing.assert_allclose(jnp.cov(e.T), R, atol=0.05)
    r = jnp.array([0.3, -1.2])
    z = noise.whiten(r)
    np.testing.assert_allclose(z @ z, r @ jnp.linalg.solve(R, r), rtol=1e-10)
    # log density against scipy
    from scipy.stats import multivariate_normal

    np.testing.assert_allclose(
        noise.log_prob(r), multivariate_normal(np.zeros(2), np.asarray(R)).logpdf(np.asarray(r))
    )


def test_noise_errors_are_clear():
    with pytest.raises(ValueError, match="obs std must be positive"):
        gaussian_noise(std=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="obs std must be positive"):
        gaussian_noise(std=0.0, dim=3)
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_noise(cov=jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="exactly one"):
        gaussian_noise()
    with pytest.raises(ValueError, match="needs dim"):
        gaussian_noise(std=1.0)
    with pytest.raises(ValueError, match="length 2"):
        observation_model(subset([0, 1], 5), std=jnp.ones(3))


def test_std_checked_under_jit():
    noise_std = jnp.array([1.0, -2.0])

    @jax.jit
    def f(s):
        return gaussian_noise(std=s).whiten(jnp.ones(2))

    with pytest.raises(Exception, match="obs std must be positive"):
        f(noise_std).block_until_ready()
