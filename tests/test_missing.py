"""Missing observations: a run with 10 % of the values missing at random scores between the
fully observed run and the free run, with no NaN."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxda.assimilate import assimilate, with_inflation
from jaxda.ensemble import enkf, etkf, letkf
from jaxda.experiments import initial_ensemble, sakov2008, simulate
from jaxda.models import forecast
from jaxda.observations import observation_series


def test_ten_percent_missing_between_full_and_free_run():
    setup = sakov2008(n_cycles=400, burn_in=100)
    data = simulate(jax.random.key(0), setup)
    E0 = initial_ensemble(jax.random.key(1), setup, 40)
    drop = jax.random.uniform(jax.random.key(2), data.observations.y.shape) < 0.1
    y_missing = jnp.where(drop, jnp.nan, data.observations.y)
    partial = observation_series(y_missing, setup.obs, n_steps=1)
    assert 0.08 < float(jnp.mean(drop)) < 0.12

    # free run: the ensemble mean without any analysis
    def free_step(E, _):
        E = forecast(jax.random.key(0), setup.model, E, 1)
        return E, E.mean(0)

    _, free_means = jax.lax.scan(free_step, E0, None, length=400)
    free = float(jnp.mean(jnp.sqrt(jnp.mean((free_means - data.truth) ** 2, -1))[100:]))

    # DAPPER's tunings (the stochastic EnKF needs N = 40 without localization)
    cases = [(etkf(), 1.02, 20), (enkf(), 1.06, 40), (letkf(4.0), 1.04, 10)]
    for method, infl, N in cases:
        m = with_inflation(method, infl)
        run = jax.jit(
            lambda s, m=m, N=N: assimilate(
                jax.random.key(3), m, setup.model, s, E0[:N], truth=data.truth
            )
        )
        _, h_full = run(data.observations)
        _, h_part = run(partial)
        full = float(jnp.mean(h_full.rmse_analysis[100:]))
        part = float(jnp.mean(h_part.rmse_analysis[100:]))
        assert np.all(np.isfinite(h_part.rmse_analysis))
        assert full < part < free, (full, part, free)
        assert part < 0.5 * free  # still a working filter
        np.testing.assert_array_equal(h_part.info.n_obs, 40 - jnp.sum(drop, axis=1))
