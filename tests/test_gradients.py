"""Differentiating through the driver: models and observation models are pytrees, so
``jax.grad`` of a filter's score with respect to the forcing F, the observation error R or the
inflation factor works, and agrees with central finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import assimilate, with_inflation
from jaxda.ensemble import enkf, etkf
from jaxda.experiments import sakov2008, simulate
from jaxda.models import Lorenz96
from jaxda.observations import observation_model, observation_series, subset

n, K, N = 10, 15, 12


@pytest.fixture(scope="module")
def data():
    setup = sakov2008(n=n, n_cycles=K, burn_in=0)
    d = simulate(jax.random.key(0), setup)
    E0 = d.truth0 + 0.5 * jax.random.normal(jax.random.key(1), (N, n))
    return d, E0


def _score(method, F, obs_std, data, infl=1.0):
    d, E0 = data
    om = observation_model(subset(np.arange(0, n, 2), n=n), obs_std=obs_std)
    series = observation_series(d.observations.y[:, ::2], om, n_steps=1)
    m = with_inflation(method, infl)
    _, hist = assimilate(jax.random.key(2), m, Lorenz96(n=n, forcing=F), series, E0, truth=d.truth)
    return jnp.mean(hist.rmse_analysis)


def _fd(f, x, h):
    return (f(x + h) - f(x - h)) / (2 * h)


@pytest.mark.parametrize("method", [etkf(), enkf()], ids=["etkf", "enkf"])
def test_grad_wrt_forcing_matches_finite_differences(method, data):
    f = jax.jit(lambda F: _score(method, F, 1.0, data))
    g = jax.grad(f)(8.5)
    fd = _fd(f, 8.5, 1e-4)
    assert np.isfinite(g) and abs(g) > 1e-4
    np.testing.assert_allclose(g, fd, rtol=1e-4)


@pytest.mark.parametrize("method", [etkf(), enkf()], ids=["etkf", "enkf"])
def test_grad_wrt_observation_error_matches_finite_differences(method, data):
    """The EnKF's perturbations are ``std * z`` (reparameterized), so R is differentiable too."""
    f = jax.jit(lambda s: _score(method, 8.0, s, data))
    g = jax.grad(f)(1.3)
    fd = _fd(f, 1.3, 1e-5)
    np.testing.assert_allclose(g, fd, rtol=1e-4)


def test_grad_wrt_inflation_and_vector_R(data):
    f = jax.jit(lambda a: _score(etkf(), 8.0, 1.0, data, a))
    np.testing.assert_allclose(jax.grad(f)(1.05), _fd(f, 1.05, 1e-5), rtol=1e-4)
    # a per-observation std vector: the gradient has one entry per observation
    std = jnp.full(n // 2, 1.0)
    g = jax.grad(lambda s: _score(etkf(), 8.0, s, data))(std)
    assert g.shape == (n // 2,) and np.all(np.isfinite(g))
    e0 = jnp.zeros(n // 2).at[0].set(1e-5)
    fd0 = (_score(etkf(), 8.0, std + e0, data) - _score(etkf(), 8.0, std - e0, data)) / 2e-5
    np.testing.assert_allclose(g[0], fd0, rtol=1e-4)


def test_vmap_over_forcing(data):
    scores = jax.vmap(lambda F: _score(etkf(), F, 1.0, data))(jnp.array([6.0, 8.0, 10.0]))
    assert scores.shape == (3,)
    assert scores[1] < scores[0] and scores[1] < scores[2]  # the true F = 8 fits best
