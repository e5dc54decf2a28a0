"""Twin-experiment driver: published Lorenz-96 scores (short runs), vmap/jit/grad invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.experiments import (
    TwinSetup,
    cycle_step,
    initial_ensemble,
    make_analysis,
    run_filter,
    sakov2008,
    simulate,
    twin_experiment,
)
from jaxda.models import lorenz96
from jaxda.observations import identity, observation_model


@pytest.mark.parametrize(
    ("method", "N", "infl", "bound"),
    [("enkf", 40, 1.06, 0.24), ("etkf", 24, 1.013, 0.20)],
)
def test_sakov2008_short_run_reaches_published_rmse(method, N, infl, bound):
    # Sakov & Oke (2008) / DAPPER: EnKF PertObs N=40 infl 1.06 -> 0.22, ETKF N=24 infl 1.013 -> 0.18.
    setup = sakov2008(n_cycles=1500, burn_in=300)
    run = jax.jit(lambda k: twin_experiment(k, setup, make_analysis(method, setup.obs), N, infl))
    res = run(jax.random.key(42))
    assert np.isfinite(res.rmse_analysis)
    assert float(res.rmse_analysis) <= bound
    # spread should be of the size of the error for a well-tuned filter
    assert 0.6 < float(res.spread_analysis / res.rmse_analysis) < 1.6


def test_vmap_over_seeds_and_inflation_matches_single_runs():
    setup = sakov2008(n_cycles=60, burn_in=10)
    analysis = make_analysis("enkf", setup.obs)
    run = jax.jit(lambda k, a: twin_experiment(k, setup, analysis, 10, a).rmse_analysis)
    keys = jax.random.split(jax.random.key(0), 3)
    infl = jnp.array([1.0, 1.05, 1.1])
    grid = jax.jit(jax.vmap(jax.vmap(run, in_axes=(None, 0)), in_axes=(0, None)))(keys, infl)
    assert grid.shape == (3, 3)
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(grid[i, j], run(keys[i], infl[j]), rtol=1e-9)


def test_cycle_step_chunks_reproduce_run_filter():
    setup = sakov2008(n_cycles=30, burn_in=5)
    analysis = make_analysis("etkf", setup.obs, rotate=True)
    data = simulate(jax.random.key(1), setup)
    E0 = initial_ensemble(jax.random.key(2), setup, 8)
    key = jax.random.key(3)
    E_full, h_full = jax.jit(lambda k: run_filter(k, setup, analysis, E0, data, 1.02))(key)
    keys = jax.random.split(key, 30)
    chunk = jax.jit(lambda E, inputs: jax.lax.scan(cycle_step(setup, analysis, 1.02), E, inputs))
    E = E0
    parts = []
    for a, b in [(0, 15), (15, 30)]:
        E, h = chunk(E, (keys[a:b], data.observations[a:b], data.truth[a:b]))
        parts.append(h.rmse_analysis)
    np.testing.assert_allclose(E, E_full, rtol=1e-10)
    np.testing.assert_allclose(jnp.concatenate(parts), h_full.rmse_analysis, rtol=1e-10)


def test_experiment_is_differentiable_in_inflation():
    setup = sakov2008(n_cycles=40, burn_in=5)
    analysis = make_analysis("etkf", setup.obs)

    @jax.jit
    def score(a):
        return twin_experiment(jax.random.key(0), setup, analysis, 10, a).rmse_analysis

    g = jax.jit(jax.grad(score))(1.05)
    eps = 1e-5
    fd = (score(1.05 + eps) - score(1.05 - eps)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-4)


def test_perfect_observations_pin_the_filter_to_the_truth():
    # Independent sanity check: with tiny obs noise the analysis follows the truth.
    model = lorenz96(n=12)
    setup = TwinSetup(model, observation_model(identity(12), std=1e-3), n_cycles=50, burn_in=10)
    res = twin_experiment(jax.random.key(5), setup, make_analysis("etkf", setup.obs), 16, 1.0)
    assert float(res.rmse_analysis) < 5e-3


def test_driver_errors():
    with pytest.raises(ValueError, match="unknown method"):
        make_analysis("kalman-magic", sakov2008(n_cycles=10, burn_in=0).obs)
    with pytest.raises(ValueError, match="burn_in"):
        sakov2008(n_cycles=10, burn_in=10)
    with pytest.raises(ValueError, match="maps a state of size 40"):
        TwinSetup(lorenz96(40), observation_model(identity(12), std=1.0), n_cycles=5)
    setup = sakov2008(n_cycles=10, burn_in=0)
    data = simulate(jax.random.key(0), setup)
    with pytest.raises(ValueError, match="inflation"):
        run_filter(
            jax.random.key(0),
            setup,
            make_analysis("enkf", setup.obs),
            jnp.zeros((5, 40)),
            data,
            -1.0,
        )
    with pytest.raises(ValueError, match=r"shape \(N, 40\)"):
        run_filter(
            jax.random.key(0), setup, make_analysis("enkf", setup.obs), jnp.zeros((5, 41)), data
        )
