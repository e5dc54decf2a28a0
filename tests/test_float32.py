"""Float32 and float64 twin experiments on Sakov (2008) Lorenz-96.

x64 is enabled in this process (conftest), so a float32 run built with explicit
float32 state, noise and initial condition stays float32 only if no step promotes
to float64 — checked through the dtypes of the outputs. The float32 time-mean RMSE
must agree with the float64 one within the Monte-Carlo error of the seed average.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxda.assimilate import with_inflation
from jaxda.ensemble import enkf, etkf, letkf
from jaxda.experiments import sakov2008, twin_experiment
from jaxda.models import gaussian
from jaxda.observations import DiagonalNoise, ObservationModel

N_SEEDS = 3


def setup_in(dtype, n_cycles=500, burn_in=100):
    base = sakov2008(n_cycles=n_cycles, burn_in=burn_in)
    n = base.model.dim
    obs = ObservationModel(base.obs.operator, DiagonalNoise(jnp.ones(n, dtype)))
    initial = gaussian(jnp.zeros(n, dtype).at[0].set(1.0), base.initial.noise.std.astype(dtype))
    return base.replace(obs=obs, initial=initial)


# DAPPER references: EnKF('PertObs', N=28, infl=1.08) -> 0.24; EnKF('Sqrt', N=20, infl=1.04, rot) -> 0.20
METHODS = {"enkf": (enkf, 28, 1.08), "etkf": (etkf, 20, 1.04)}


def run_both(dtype):
    """EnKF and ETKF, N_SEEDS seeds each, in one jitted computation (one compilation per dtype)."""
    setup = setup_in(dtype)
    keys = jax.random.split(jax.random.key(2024), N_SEEDS)

    def one(k):
        return {
            m: twin_experiment(k, setup, with_inflation(factory(), infl), N)
            for m, (factory, N, infl) in METHODS.items()
        }

    return jax.jit(jax.vmap(one))(keys)


def test_float32_matches_float64():
    res = {dtype: run_both(dtype) for dtype in (jnp.float32, jnp.float64)}
    for method in METHODS:
        out = {}
        for dtype, r in res.items():
            r = r[method]
            assert r.state.ensemble.dtype == dtype, (method, r.state.ensemble.dtype)  # no promotion
            assert r.history.rmse_analysis.dtype == dtype
            assert r.history.spread_analysis.dtype == dtype
            assert r.history.innovation_ratio.dtype == dtype
            assert r.data.truth.dtype == dtype and r.data.observations.y.dtype == dtype
            assert np.all(np.asarray(r.status) == 0), (method, dtype, r.status)
            assert np.all(np.isfinite(np.asarray(r.history.rmse_analysis))), f"{method} {dtype}"
            out[dtype] = np.asarray(r.rmse_analysis, np.float64)
            assert np.all(out[dtype] < 0.35), (method, dtype, out[dtype])  # stable in every seed
        r32, r64 = out[jnp.float32], out[jnp.float64]
        # Float32 round-off decorrelates the chaotic trajectories, so the two runs differ by
        # sampling error only: compare seed means within 4 standard errors (floor 0.005).
        se = np.sqrt(r32.var(ddof=1) / N_SEEDS + r64.var(ddof=1) / N_SEEDS)
        assert abs(r32.mean() - r64.mean()) < max(4 * se, 0.005), (method, r32, r64)


def test_letkf_float32_analysis():
    setup32, setup64 = setup_in(jnp.float32), setup_in(jnp.float64)
    method = letkf(4.0)

    def analysis(obs):
        return lambda key, E, y: method.step(key, method.init(E, obs), y, obs)[0].ensemble

    f32, f64 = analysis(setup32.obs), analysis(setup64.obs)
    # one analysis: float32 agrees with float64 to float32 round-off
    E = 3.0 * jax.random.normal(jax.random.key(0), (7, 40))
    y = jax.random.normal(jax.random.key(1), (40,))
    key = jax.random.key(2)
    a32 = jax.jit(f32)(key, E.astype(jnp.float32), y.astype(jnp.float32))
    a64 = jax.jit(f64)(key, E, y)
    assert a32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(a32, np.float64), a64, rtol=0, atol=1e-4)
