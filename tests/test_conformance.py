"""Conformance of every registered method with the protocol, through the one driver.

Each method in :func:`jaxda.assimilate.available_methods` must: run under ``jit``; ``vmap``
over seeds; give the same result for the same key; keep float32 in float32; trace its step
once (no retrace per cycle, nor for new data of the same shape); handle a missing observation,
an all-missing time and irregular observation times.
"""

import functools
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxda.assimilate import assimilate, available_methods, make_method
from jaxda.core import Method, Status
from jaxda.diffusion import GaussianResidual, PeriodicConvNet, train, vp_linear
from jaxda.models import Lorenz96
from jaxda.observations import observation_model, observation_series, subset
from jaxda.variational import background_covariance

n = 8
MODEL = Lorenz96(n=n, dt=0.05)

# Options and ensemble size per registered method (a new method must be added here).
SETTINGS = {
    "enkf": ({}, 10),
    "etkf": ({}, 10),
    "enkf_n": ({}, 10),
    "letkf": ({"localization_radius": 2.0}, 6),
    "pf": ({"reg": 1.0}, 30),
    "ensf": ({"n_steps": 20, "standardize": True, "eps_beta": 0.5}, 10),
    "3dvar": ({"B": background_covariance(std=0.5, dim=n)}, 1),
    "enks": ({"lag": 2}, 10),
    "ienks": ({"lag": 2, "max_steps": 3}, 10),
    "4denvar": ({"lag": 2, "localization_radius": 2.0}, 10),
    "4dvar": ({"lag": 2, "B": background_covariance(std=0.5, dim=n), "max_steps": 3}, 1),
    "denkf": ({"localization_radius": 2.0}, 10),
    "ensrf": ({"localization_radius": 2.0}, 10),
    "climatology": ({}, 2 * n),  # 2n sigma points whatever the initial ensemble
    "oi": ({}, 2 * n),
    # score_checkpoint: a Gaussian-residual checkpoint (_score_checkpoint)
    "diffusion_filter": ({"localization_radius": 2.0, "n_steps": 4}, 10),
}
# Baselines that never run the model: with nothing observed they stay at the climatology.
STATIC_BASELINES = ("climatology", "oi")


def _problem(dtype, K=8):
    rng = np.random.default_rng(1)
    y = rng.normal(0.0, 2.0, (K, 4))
    y[2, 1] = np.nan  # one missing value
    y[5, :] = np.nan  # a time with nothing observed
    om = observation_model(subset([0, 2, 4, 6], n=n), obs_std=1.0)
    series = observation_series(
        jnp.asarray(y, dtype), om, n_steps=np.array([1, 2, 1, 3, 1, 1, 2, 1])
    )
    E0 = (MODEL.x0 + 0.5 * rng.normal(size=(1, n))).astype(dtype)
    return series, E0


@functools.cache
def _score_checkpoint() -> str:
    """A :class:`GaussianResidual` score on ``n`` variables whose learned correction is zero
    (network weights zero, negligible learning rate), i.e. the Gaussian prior ``N(0, I)``: a
    barely trained network is a prior far off the forecast errors, under which the analyses
    blow up (the filter then reports NONFINITE), which is not what conformance tests."""
    directory = tempfile.mkdtemp(prefix="jaxda-conformance-score-")
    sde = vp_linear()
    net = PeriodicConvNet(channels=4, depth=1, rngs=nnx.Rngs(0))
    nnx.update(net, jax.tree.map(jnp.zeros_like, nnx.state(net, nnx.Param)))
    errors = jax.random.normal(jax.random.key(0), (64, n))
    model = GaussianResidual(net, jnp.eye(n), sde)
    train(jax.random.key(1), model, sde, errors, n_steps=2, batch_size=16, learning_rate=1e-12,
          checkpoint_dir=directory, progress=False)  # fmt: skip
    return directory


def _method(name):
    options, N = SETTINGS[name]
    if name == "diffusion_filter":
        options = {**options, "score_checkpoint": _score_checkpoint()}
    return make_method(name, context={"model": MODEL}, **options), N


def test_every_registered_method_has_settings():
    assert sorted(SETTINGS) == available_methods()


@pytest.mark.parametrize("name", available_methods())
def test_conformance(name):
    method, N = _method(name)
    assert isinstance(method, Method)
    series, x0 = _problem(jnp.float64)
    E0 = x0 + 0.5 * jax.random.normal(jax.random.key(0), (N, n))

    traces = []

    def counted_step(key, state, y, obs):
        traces.append(1)
        return method.step(key, state, y, obs)

    counted = Method(method.init, counted_step, method.forecast)
    run = jax.jit(lambda key, E, s: assimilate(key, counted, MODEL, s, E))
    final, hist = run(jax.random.key(1), E0, series)
    assert len(traces) == 1  # one trace for all 8 cycles
    run(jax.random.key(2), E0 + 0.1, series)  # new data, same shapes: no retrace
    assert len(traces) == 1

    # same key, same result
    final2, _ = run(jax.random.key(1), E0, series)
    np.testing.assert_array_equal(final.ensemble, final2.ensemble)

    # nothing observed at any time: a forecast only (same compiled function)
    empty = observation_series(
        jnp.full_like(series.y, jnp.nan), series.obs, n_steps=np.asarray(series.n_steps)
    )
    final_empty, _ = run(jax.random.key(1), E0, empty)
    assert len(traces) == 1
    free = E0
    for k in range(len(empty)):
        for _ in range(int(empty.n_steps[k])):
            free = jax.vmap(MODEL)(free)
    if name in STATIC_BASELINES:
        free = method.init(E0).ensemble  # the climatology's sigma points, not a free run
    np.testing.assert_allclose(final_empty.ensemble, free, rtol=1e-10, atol=1e-10)

    # missing values and an all-missing time
    np.testing.assert_array_equal(hist.info.n_obs, [4, 4, 3, 4, 4, 0, 4, 4])
    assert np.all(np.isfinite(final.ensemble))
    assert np.all(np.asarray(hist.info.status) != Status.NONFINITE)
    assert np.isnan(hist.innovation_ratio[5]) and np.all(
        np.isfinite(np.delete(hist.innovation_ratio, 5))
    )

    # vmap over seeds
    keys = jax.random.split(jax.random.key(3), 3)
    finals, hists = jax.vmap(lambda k: assimilate(k, method, MODEL, series, E0))(keys)
    assert finals.ensemble.shape == (3, N, n)
    assert hists.spread_analysis.shape == (3, 8)


@pytest.mark.parametrize("name", available_methods())
def test_float32_stays_float32(name):
    method, N = _method(name)
    series, x0 = _problem(jnp.float32)
    E0 = (x0 + 0.5 * jax.random.normal(jax.random.key(0), (N, n))).astype(jnp.float32)
    final, hist = jax.jit(lambda k: assimilate(k, method, MODEL, series, E0))(jax.random.key(0))
    assert final.ensemble.dtype == jnp.float32
    assert hist.spread_analysis.dtype == jnp.float32
    assert np.all(np.isfinite(final.ensemble))
