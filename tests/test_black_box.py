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
