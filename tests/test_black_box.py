"""jaxda.black_box: NumPy / non-traceable objectives inside the jit-ed gradient-free optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxda
from jaxda.optimize import (
    differential_evolution,
    genetic_algorithm,
    grid_search,
    particle_swarm,
    random_search,
    simulated_annealing,
)

SHIFT = np.array([0.3, -0.7])
BOUNDS = jnp.array([[-2.0, -2.0], [2.0, 2.0]])


def np_objective(x):
    x = np.asarray(x)
    return float(np.sum((x - SHIFT) ** 2) + 0.1 * np.sum(x**4))


def jax_objective(x):
    return jnp.sum((x - SHIFT) ** 2) + 0.1 * jnp.sum(x**4)


KEY = jax.random.key(7)
METHODS = {
    "grid": lambda f: grid_search(f, BOUNDS, num=9, batch_size=32),
    "random": lambda f: random_search(KEY, f, BOUNDS, max_steps=4, batch_size=8),
    "ga": lambda f: genetic_algorithm(KEY, f, BOUNDS, population_size=8, max_steps=4),
    "de": lambda f: differential_evolution(KEY, f, BOUNDS, population_size=6, max_steps=4),
    "sa": lambda f: simulated_annealing(KEY, f, BOUNDS, max_steps=20),
    "pso": lambda f: particle_swarm(KEY, f, BOUNDS, n_particles=5, max_steps=4),
}


@pytest.mark.parametrize("name", list(METHODS))
def test_black_box_matches_pure_jax_objective(name):
    run = METHODS[name]
    ref = run(jax_objective)
    got = run(jaxda.black_box(np_objective))
    np.testing.assert_allclose(np.asarray(got.x), np.asarray(ref.x), rtol=1e-12)
    assert float(got.f) == pytest.approx(float(ref.f), rel=1e-12)
    assert int(got.n_evaluations) == int(ref.n_evaluations)
    # the raw NumPy objective is not traceable: a TypeError naming the cause and the remedy
    with pytest.raises(TypeError, match=r"not JAX-traceable.*jaxda\.black_box"):
        run(np_objective)


def test_black_box_vectorized_shape_inference_and_jit_vmap():
    calls = []

    def batch_fn(X):
        calls.append(np.shape(X))
        return np.stack([np.sum(X**2, axis=1), np.max(X, axis=1)], axis=1)

    f = jaxda.black_box(batch_fn, vectorized=True)  # out_shape (2,) inferred by one eager call
    X = jnp.arange(12.0).reshape(4, 3)
    out = jax.jit(jax.vmap(f))(X)
    np.testing.assert_allclose(np.asarray(out), batch_fn(np.asarray(X)))
    assert (4, 3) in calls  # one callback for the whole batch
    g = jaxda.black_box(lambda x: np.array([np.prod(x)]), (1,))
    np.testing.assert_allclose(np.asarray(jax.vmap(g)(X))[:, 0], np.prod(np.asarray(X), axis=1))
    branchy = jaxda.black_box(lambda x: 1.0 if x[0] > 0 else -1.0)  # Python control flow
    assert jax.jit(branchy)(jnp.array([2.0])) == 1.0
    with pytest.raises(TypeError, match="callable"):
        jaxda.black_box(3)


def test_black_box_forward_model_in_esmda_and_ies():
    """A NumPy simulator through jaxda.black_box gives the same ES-MDA (and IES) posterior as the
    same forward model written in JAX, with the same key; the raw NumPy model raises the clear
    TypeError."""
    from jaxda.ensemble import esmda, ies

    G = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, -0.3], [0.2, 0.0, 1.0], [1.0, 1.0, 1.0]])

    def np_forward(x):  # NumPy, float(): not traceable
        x = np.asarray(x, dtype=float)
        return np.array([float(v) for v in G @ x + 0.1 * np.sin(x).sum()])

    def jax_forward(x):
        return jnp.asarray(G) @ x + 0.1 * jnp.sin(x).sum()

    prior = jax.random.normal(jax.random.key(0), (20, 3))
    y = jnp.array([0.5, -0.2, 1.0, 1.3])
    key = jax.random.key(1)
    ref = esmda(key, jax_forward, prior, y, obs_std=0.3, alpha=4)
    got = esmda(key, jaxda.black_box(np_forward), prior, y, obs_std=0.3, alpha=4)
    np.testing.assert_allclose(got.posterior, ref.posterior, rtol=1e-10, atol=1e-12)
    assert int(got.status) == int(ref.status) == 0
    ref_ies = ies(key, jax_forward, prior, y, obs_std=0.3, max_steps=3)
    got_ies = ies(key, jaxda.black_box(np_forward), prior, y, obs_std=0.3, max_steps=3)
    np.testing.assert_allclose(got_ies.posterior, ref_ies.posterior, rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match=r"the forward model is not JAX-traceable.*black_box"):
        esmda(key, np_forward, prior, y, obs_std=0.3, alpha=4)
