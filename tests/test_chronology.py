"""Chronology (observation times and burn-in in model time) and initial distributions of twin
setups, against DAPPER's Chronology and exact trajectories."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.ensemble import etkf
from jaxda.experiments import (
    chronology,
    initial_ensemble,
    sakov2008,
    simulate,
    twin_experiment,
)
from jaxda.models import empirical, gaussian, trajectory


@pytest.mark.parametrize(
    ("dapper_kw", "ours"),
    [
        # Lorenz63/sakov2012, Lorenz96/sakov2008, Lorenz96/spantini2019, Lorenz96/bocquet2010
        (dict(dt=0.01, dko=25, Ko=1000, BurnIn=4.0), dict(obs_every=25, n_cycles=1001)),
        (dict(dt=0.05, dko=1, Ko=1000, BurnIn=20.0), dict(obs_interval=0.05, n_cycles=1001)),
        (dict(dt=0.02, dto=0.4, Ko=2000, BurnIn=20.0), dict(obs_interval=0.4, n_cycles=2001)),
        (dict(dt=0.05, dko=1, T=64.0, BurnIn=20.0), dict(obs_every=1, duration=64.0)),
    ],
)
def test_chronology_counts_match_dappers(dapper_kw, ours):
    chronos = pytest.importorskip("dapper.tools.chronos")
    ref = chronos.Chronology(**dapper_kw)
    c = chronology(dapper_kw["dt"], burn_in_time=dapper_kw["BurnIn"], **ours)
    assert c.n_cycles == len(ref.tto) == ref.Ko + 1
    assert c.obs_every == ref.dko and c.n_steps == ref.K
    np.testing.assert_allclose(c.obs_times, ref.tto, rtol=1e-12)
    # DAPPER scores the observation times t > BurnIn
    assert c.burn_in == int(np.sum(~ref.masko))
    assert c.duration == pytest.approx(ref.T)


def test_irregular_observation_times_simulate_and_assimilate():
    base = sakov2008(n=10, n_cycles=5, burn_in=0)
    chron = chronology(0.05, obs_times=[0.05, 0.1, 0.3, 0.35, 0.6], burn_in=1)
    setup = base.replace(chronology=chron)
    assert chron.obs_steps == (1, 1, 4, 1, 5) and not chron.regular
    with pytest.raises(ValueError, match="irregular"):
        _ = setup.obs_every
    data = simulate(jax.random.key(0), setup)
    states = trajectory(jax.random.key(1), setup.model, data.truth0, chron.n_steps)
    np.testing.assert_allclose(data.truth, states[np.cumsum(chron.obs_steps) - 1], rtol=1e-12)
    assert data.observations.n_steps.tolist() == [1, 1, 4, 1, 5]
    np.testing.assert_allclose(data.observations.time, chron.obs_times, rtol=1e-12)
    res = twin_experiment(jax.random.key(2), setup, etkf(), 10, data=data)
    assert res.history.rmse_analysis.shape == (5,)
    assert np.all(np.isfinite(res.history.rmse_analysis))
    with pytest.raises(ValueError, match="regular observation times"):
        twin_experiment(jax.random.key(2), setup, etkf(), 10, streaming=True)


def test_initial_distributions_full_covariance_and_climatology_sample():
    n = 3
    P = np.array([[1.0, 0.6, 0.0], [0.6, 2.0, -0.5], [0.0, -0.5, 0.5]])
    g = gaussian(jnp.array([1.0, -1.0, 0.0]), cov=jnp.asarray(P))
    X = np.asarray(g.sample(jax.random.key(0), (20_000,)))
    # sample mean within 5 standard errors, covariance within 5 of its standard errors
    np.testing.assert_allclose(X.mean(0), [1.0, -1.0, 0.0], atol=5 * np.sqrt(2.0 / 20_000))
    se = np.sqrt((P**2 + np.outer(np.diag(P), np.diag(P))) / 20_000)
    assert np.all(np.abs(np.cov(X.T) - P) < 5 * se + 1e-12)
    # a factor (n×r) gives the same covariance
    F = np.linalg.cholesky(P)
    np.testing.assert_allclose(gaussian(jnp.zeros(n), sqrt=jnp.asarray(F)).cov(), P, rtol=1e-12)
    # a climatology sample: members are distinct rows (no replacement while N <= K)
    clim = jnp.arange(30.0).reshape(10, n)
    E = np.asarray(empirical(clim).sample(jax.random.key(1), (10,)))
    assert sorted(map(tuple, E)) == sorted(map(tuple, np.asarray(clim)))


def test_truth_and_ensemble_from_different_distributions():
    base = sakov2008(n=6, n_cycles=3, burn_in=0)
    far = gaussian(jnp.full(6, 5.0), 0.0)
    setup = base.replace(ensemble_initial=far)
    E = initial_ensemble(jax.random.key(0), setup, 4)
    np.testing.assert_allclose(E, 5.0)
    truth0 = simulate(jax.random.key(1), setup).truth0
    assert (
        float(jnp.max(jnp.abs(truth0 - base.initial.mean))) < 0.2
    )  # from the truth's N(e0, 0.001)


def test_initial_distribution_from_a_file(tmp_path):
    xr = pytest.importorskip("xarray")
    from jaxda.io import load_sample

    clim = np.arange(24.0).reshape(8, 3)
    np.savez(tmp_path / "c.npz", ensemble=clim, other=np.zeros(2))
    xr.Dataset({"states": (("sample", "state"), clim)}).to_netcdf(tmp_path / "c.nc")
    for dist in (load_sample(tmp_path / "c.npz"), load_sample(tmp_path / "c.nc")):
        np.testing.assert_allclose(dist.states, clim)
        E = np.asarray(dist.sample(jax.random.key(0), (8,)))
        assert sorted(map(tuple, E)) == sorted(map(tuple, clim))
    np.savez(tmp_path / "two.npz", a=clim, b=clim)
    with pytest.raises(ValueError, match="pass variable="):
        load_sample(tmp_path / "two.npz")
    with pytest.raises(ValueError, match="does not exist"):
        load_sample(tmp_path / "missing.nc")
