"""The driver (:func:`jaxda.assimilate.assimilate`) against independent references.

* A linear-Gaussian model with irregular observation times (one interval of zero steps),
  missing values and a time with every observation missing: the ETKF's sample moments
  reproduce the exact Kalman filter (numpy) run from the initial sample moments to round-off,
  and the Kalman filter from the true prior within Monte-Carlo error; the history's diagnostics
  are checked against their definitions.
* An observation network that changes in size and place from one time to the next equals
  running the per-time networks by hand.
* Float32 in, float32 out; wrappers, registry and run status.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import (
    REQUIRED,
    assimilate,
    available_methods,
    ensemble_mean,
    innovation_statistics,
    make_method,
    method_options,
    register,
    run_status,
    throw_on_failure,
    with_inflation,
    with_rotation,
    with_rtps,
)
from jaxda.core import AnalysisInfo, EnsembleState, Method, Status
from jaxda.ensemble import etkf, inflate, letkf, rtps
from jaxda.experiments import sakov2008, twin_experiment
from jaxda.models import Lorenz96, Model, forecast, trajectory
from jaxda.observations import identity, observation_model, observation_series, subset


class LinearModel(Model):
    """``x_{k+1} = M x_k``: a deterministic linear model written by a user."""

    M: jax.Array
    x0: jax.Array
    dt: float = 0.5

    def __call__(self, x):
        return self.M @ x


# ---------------------------------------------------------------- linear-Gaussian, exact KF
n = 5
OBS_IDX = np.array([0, 2, 3])
OBS_STD = np.array([0.6, 0.9, 0.4])
STEPS = np.array([1, 3, 2, 1, 0, 4, 1, 2, 1, 3])  # irregular, one zero-length interval
K = STEPS.size
M0 = np.array([1.0, -0.5, 0.3, 0.0, 2.0])
P0 = np.diag([1.0, 0.5, 2.0, 1.5, 0.8])


def _transition():
    th = 0.4
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    M = np.zeros((n, n))
    M[:2, :2] = rot
    M[2:4, 2:4] = 0.9 * rot.T
    M[4, 4] = 1.02
    M[4, 0] = 0.3  # couples an unobserved variable to an observed one
    return 0.99 * M


MT = _transition()


@pytest.fixture(scope="module")
def linear_problem():
    rng = np.random.default_rng(0)
    x = rng.multivariate_normal(M0, P0)
    truth, ys = [], []
    for s in STEPS:
        x = np.linalg.matrix_power(MT, s) @ x
        truth.append(x)
        ys.append(x[OBS_IDX] + OBS_STD * rng.normal(size=3))
    y = np.array(ys)
    y[2, 1] = np.nan  # one missing value
    y[6, :] = np.nan  # nothing observed at this time
    y[8, 0] = np.nan
    times = np.cumsum(STEPS) * 0.5
    om = observation_model(subset(OBS_IDX, n), obs_std=OBS_STD)
    series = observation_series(jnp.asarray(y), om, times=times, dt=0.5)
    return np.array(truth), y, series


def exact_kalman(m, P, y):
    """Kalman filter in numpy over the irregular times; missing entries are skipped."""
    H = np.eye(n)[OBS_IDX]
    out = {k: [] for k in ("mf", "Pf", "ma", "Pa")}
    for s, yk in zip(STEPS, y, strict=True):
        Ms = np.linalg.matrix_power(MT, s)
        m, P = Ms @ m, Ms @ P @ Ms.T
        out["mf"].append(m)
        out["Pf"].append(P)
        ok = np.isfinite(yk)
        if ok.any():
            Hk, Rk = H[ok], np.diag(OBS_STD[ok] ** 2)
            S = Hk @ P @ Hk.T + Rk
            G = np.linalg.solve(S, Hk @ P).T
            m, P = m + G @ (yk[ok] - Hk @ m), P - G @ Hk @ P
        out["ma"].append(m)
        out["Pa"].append(P)
    return {k: np.array(v) for k, v in out.items()}


def _run_etkf(series, E0, truth):
    model = LinearModel(jnp.asarray(MT), jnp.asarray(M0))
    record = lambda s: (s.ensemble.mean(0), jnp.cov(s.ensemble.T))  # noqa: E731
    return jax.jit(
        lambda E: assimilate(
            jax.random.key(1),
            etkf(),
            model,
            series,
            E,
            truth=truth,
            record=record,
            store_ensembles=True,
        )
    )(E0)


def test_series_from_irregular_times(linear_problem):
    _, _, series = linear_problem
    np.testing.assert_array_equal(series.n_steps, STEPS)
    assert series.max_steps == 4 and series.steps is None


def test_etkf_is_the_kalman_filter_of_its_sample_moments(linear_problem):
    """Deterministic linear model + ETKF: the sample mean and covariance follow the exact
    Kalman recursion started from the initial sample moments (round-off only), through the
    irregular intervals, the zero-length one, the missing values and the empty time."""
    truth, y, series = linear_problem
    N = 50
    E0 = jax.random.multivariate_normal(jax.random.key(0), M0, P0, (N,))
    _, hist = _run_etkf(series, E0, truth)
    means, covs = (np.asarray(a) for a in hist.record)
    E0n = np.asarray(E0)
    ref = exact_kalman(E0n.mean(0), np.cov(E0n.T), y)
    np.testing.assert_allclose(means, ref["ma"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(covs, ref["Pa"], rtol=1e-8, atol=1e-10)
    # the stored ensembles (store_ensembles=True)
    np.testing.assert_allclose(hist.ensemble_analysis.mean(1), ref["ma"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(hist.ensemble_forecast.mean(1), ref["mf"], rtol=1e-9, atol=1e-9)

    # the history, against its definitions
    present = np.isfinite(y)
    np.testing.assert_array_equal(hist.info.n_obs, present.sum(1))
    assert np.all(np.asarray(hist.info.status) == Status.SUCCESS)
    np.testing.assert_allclose(hist.time, np.cumsum(STEPS) * 0.5)
    np.testing.assert_allclose(
        hist.spread_forecast, np.sqrt(np.trace(ref["Pf"], axis1=1, axis2=2) / n), rtol=1e-9
    )
    np.testing.assert_allclose(
        hist.spread_analysis, np.sqrt(np.trace(ref["Pa"], axis1=1, axis2=2) / n), rtol=1e-9
    )
    np.testing.assert_allclose(
        hist.rmse_analysis, np.sqrt(np.mean((ref["ma"] - truth) ** 2, axis=1)), rtol=1e-9
    )
    np.testing.assert_allclose(
        hist.rmse_forecast, np.sqrt(np.mean((ref["mf"] - truth) ** 2, axis=1)), rtol=1e-9
    )
    d = (y - ref["mf"][:, OBS_IDX]) / OBS_STD  # whitened innovation of the forecast mean
    s2 = np.diagonal(ref["Pf"], axis1=1, axis2=2)[:, OBS_IDX] / OBS_STD**2
    count = present.sum(1)
    d2 = np.nansum(d**2, axis=1)
    rms = np.where(count > 0, np.sqrt(d2 / np.maximum(count, 1)), np.nan)
    ratio = d2 / np.maximum(np.sum(np.where(present, 1 + s2, 0), axis=1), 1e-300)
    ratio[~present.any(1)] = np.nan
    np.testing.assert_allclose(hist.innovation, rms, rtol=1e-9)
    np.testing.assert_allclose(hist.innovation_ratio, ratio, rtol=1e-9)
    # the empty time is a forecast only
    assert np.isnan(hist.innovation_ratio[6]) and np.isnan(hist.innovation[6])
    np.testing.assert_allclose(hist.spread_analysis[6], hist.spread_forecast[6], rtol=1e-12)


def test_large_ensemble_etkf_matches_the_exact_kalman_filter(linear_problem):
    """From the true prior N(m0, P0): within Monte-Carlo error of N = 2000 draws."""
    truth, y, series = linear_problem
    N = 2000
    E0 = jax.random.multivariate_normal(jax.random.key(2), M0, P0, (N,))
    _, hist = _run_etkf(series, E0, truth)
    means, covs = (np.asarray(a) for a in hist.record)
    ref = exact_kalman(M0, P0, y)
    var_ref = np.diagonal(ref["Pa"], axis1=1, axis2=2)
    # mean errors in units of the Monte-Carlo error sd/sqrt(N) of an ensemble mean
    z = (means - ref["ma"]) / np.sqrt(var_ref / N)
    # variances: relative error in units of sqrt(2/N)
    zc = (np.diagonal(covs, axis1=1, axis2=2) / var_ref - 1) / np.sqrt(2.0 / N)
    assert np.sqrt(np.mean(z**2)) < 3.0 and np.abs(z).max() < 8.0, z
    assert np.sqrt(np.mean(zc**2)) < 3.0 and np.abs(zc).max() < 8.0, zc


# ---------------------------------------------------------------- varying observation network
L96 = Lorenz96(n=12, dt=0.05)
NETWORKS = [
    observation_model(identity(12), obs_std=1.0),
    observation_model(subset([0, 3, 6, 9], 12), obs_std=0.5),
    observation_model(subset([1, 2], 12), obs_std=np.array([0.3, 0.7])),
    observation_model(subset(np.arange(0, 12, 2), 12), obs_std=0.8),
    observation_model(identity(12), obs_std=np.linspace(0.5, 1.5, 12)),
    observation_model(subset([11], 12), obs_std=0.2),
]
NET_STEPS = np.array([1, 2, 1, 3, 1, 2])


@pytest.fixture(scope="module")
def varying_problem():
    x0 = trajectory(jax.random.key(0), L96, L96.x0, 200)[-1]  # on the attractor
    rng = np.random.default_rng(3)
    xs, ys = x0, []
    for s, om in zip(NET_STEPS, NETWORKS, strict=True):
        for _ in range(s):
            xs = L96(xs)
        ys.append(np.asarray(om(xs)) + np.asarray(om.noise.std) * rng.normal(size=om.dim))
    ys[3][2] = np.nan  # a missing value inside a varying network
    E0 = x0 + jax.random.normal(jax.random.key(4), (10, 12))
    return ys, E0


def by_hand(method, ys, E0):
    """Forecast and analyse time by time with each time's own (unpadded) network; also the
    innovation statistics of each forecast against that network. One jit of the unrolled
    loop; the networks are closed over (concrete, as fixed networks)."""

    @jax.jit
    def run(E0):
        state = method.init(E0)
        means, stats = [], []
        for s, om, yk in zip(NET_STEPS, NETWORKS, ys, strict=True):
            Ef = forecast(jax.random.key(0), L96, state.ensemble, int(s))
            stats.append(jnp.stack(innovation_statistics(Ef, jnp.asarray(yk), om)))
            state, _ = method.step(jax.random.key(0), state._replace(ensemble=Ef), yk, om)
            means.append(state.ensemble.mean(0))
        return state.ensemble, jnp.stack(means), jnp.stack(stats)

    return run(E0)


@pytest.mark.parametrize("name", ["etkf", "letkf"])
def test_varying_network_equals_per_time_networks_by_hand(varying_problem, name):
    ys, E0 = varying_problem
    # in the driver's scan the LETKF sees traced locations: its O(n m) taper fallback; by hand
    # each network is concrete: the local table of local_observations
    method = {"etkf": etkf(), "letkf": letkf(3.0)}[name]
    series = observation_series(ys, NETWORKS, n_steps=NET_STEPS)
    assert series.varying and series.y.shape == (6, 12)
    final, hist = jax.jit(
        lambda E: assimilate(
            jax.random.key(5), method, L96, series, E, record=lambda s: s.ensemble.mean(0)
        )
    )(E0)
    E_ref, means_ref, stats = by_hand(method, ys, E0)
    np.testing.assert_allclose(final.ensemble, E_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(hist.record, means_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(hist.info.n_obs, [12, 4, 2, 5, 12, 1])
    # the innovation statistics on the padded network are those of each time's own network
    np.testing.assert_allclose(hist.innovation, stats[:, 0], rtol=1e-10)
    np.testing.assert_allclose(hist.innovation_ratio, stats[:, 1], rtol=1e-10)
    assert not np.allclose(final.ensemble, E0)


# ---------------------------------------------------------------- float32
def test_float32_in_float32_out(linear_problem, varying_problem):
    """A float32 ensemble runs in float32 although the model matrix, the observation model,
    the values and the truth are float64 (x64 is on), and agrees with the float64 run."""
    truth, _, series = linear_problem
    assert series.y.dtype == jnp.float64 and series.obs.noise.std.dtype == jnp.float64
    E0 = jax.random.multivariate_normal(jax.random.key(0), M0, P0, (50,))
    model = LinearModel(jnp.asarray(MT), jnp.asarray(M0))
    method = with_inflation(etkf(), 1.01)
    run = jax.jit(
        lambda E: assimilate(
            jax.random.key(1), method, model, series, E, truth=truth, record=ensemble_mean
        )
    )
    f32, h32 = run(E0.astype(jnp.float32))
    f64, h64 = run(E0)
    assert f32.ensemble.dtype == jnp.float32 and f64.ensemble.dtype == jnp.float64
    for leaf in jax.tree.leaves(h32):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == jnp.float32, leaf
    np.testing.assert_allclose(f32.ensemble, f64.ensemble, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(h32.record, h64.record, rtol=1e-4, atol=1e-4)
    # a varying network (float64 values padded from numpy) in float32
    ys, E0v = varying_problem
    vseries = observation_series(ys, NETWORKS, n_steps=NET_STEPS)
    final, hist = jax.jit(lambda E: assimilate(jax.random.key(0), letkf(3.0), L96, vseries, E))(
        E0v.astype(jnp.float32)
    )
    assert final.ensemble.dtype == jnp.float32 and hist.innovation_ratio.dtype == jnp.float32
    assert np.all(np.isfinite(final.ensemble))


# ---------------------------------------------------------------- wrappers
def test_wrappers_apply_their_post_processing():
    obs = observation_model(identity(6), obs_std=0.5)
    E = 2.0 * jax.random.normal(jax.random.key(0), (8, 6)) + 1.0
    y = jnp.ones(6).at[2].set(jnp.nan)
    key = jax.random.key(1)

    def analysis(method):
        state, info = method.step(key, method.init(E, obs), y, obs)
        assert int(info.n_obs) == 5
        return state.ensemble

    Ea = analysis(etkf())
    np.testing.assert_allclose(analysis(with_inflation(etkf(), 1.3)), inflate(Ea, 1.3), rtol=1e-12)
    np.testing.assert_allclose(analysis(with_rtps(etkf(), 0.7)), rtps(Ea, E, 0.7), rtol=1e-12)
    # rotation: another ensemble with the same mean and covariance
    Er = analysis(with_rotation(etkf()))
    assert not np.allclose(Er, Ea)
    np.testing.assert_allclose(Er.mean(0), Ea.mean(0), atol=1e-12)
    np.testing.assert_allclose(jnp.cov(Er.T), jnp.cov(Ea.T), atol=1e-12)
    # composition: rotate the inflated analysis
    Eri = analysis(with_rotation(with_inflation(etkf(), 1.3)))
    np.testing.assert_allclose(jnp.cov(Eri.T), 1.69 * jnp.cov(Ea.T), atol=1e-12)
    with pytest.raises(TypeError, match="Method"):
        with_inflation(lambda k, E, y: E, 1.1)
    with pytest.raises(ValueError, match="rtps alpha"):
        with_rtps(etkf(), 1.5)
    # a window method cycles its own window ensemble: wrapping it would do nothing
    window = Method(etkf().init, etkf().step, lambda key, state, n, max_steps: state)
    for wrap in (lambda m: with_inflation(m, 1.1), lambda m: with_rtps(m, 0.5), with_rotation):
        with pytest.raises(ValueError, match="window method"):
            wrap(window)


# ---------------------------------------------------------------- registry
def test_registry():
    assert {"enkf", "etkf", "letkf", "pf", "ensf", "3dvar"} <= set(available_methods())
    assert method_options("letkf")["localization_radius"] is REQUIRED
    assert method_options("pf")["reg"] == 0.0
    assert "model" not in method_options("3dvar")  # a context argument, not an option
    with pytest.raises(ValueError, match="needs option"):
        make_method("letkf")
    with pytest.raises(ValueError, match="do not apply"):
        make_method("etkf", reg=0.1)
    with pytest.raises(ValueError, match="unknown method"):
        make_method("kalman-magic")
    # the context fills in the model only for factories that take it
    model = Lorenz96(n=8)
    assert isinstance(make_method("enkf", context={"model": model}), Method)
    method = make_method("3dvar", context={"model": model}, n_climatology=2_000)
    state, info = method.step(
        None,
        method.init(jnp.zeros((1, 8))),
        jnp.ones(8),
        observation_model(identity(8), obs_std=1.0),
    )
    assert int(info.status) == Status.SUCCESS and bool(jnp.all(state.ensemble != 0))
    with pytest.raises(ValueError, match="already registered"):
        register("etkf", etkf)
    with pytest.raises(ValueError, match="lower-case"):
        register("My Filter", etkf)


# ---------------------------------------------------------------- run status
def _collapse_to_mean():
    """A 'method' that ignores the observations and collapses the members to their mean."""

    def step(key, state, y, obs):
        E = state.ensemble
        Ea = jnp.broadcast_to(E.mean(0), E.shape)
        info = AnalysisInfo(jnp.sum(jnp.isfinite(y)).astype(jnp.int32), jnp.int32(Status.SUCCESS))
        return EnsembleState(Ea), info

    return Method(lambda E, obs=None: EnsembleState(E), step)


def test_run_status_flags_divergence_and_nonfinite_analyses():
    setup = sakov2008(n=20, n_cycles=150, burn_in=75)
    bad = jax.jit(lambda k: twin_experiment(k, setup, _collapse_to_mean(), 10))(jax.random.key(0))
    assert int(bad.status) == Status.DIVERGED
    assert float(run_status(bad.history, burn_in=75).innovation_ratio) > 4.0
    good = jax.jit(lambda k: twin_experiment(k, setup, with_inflation(etkf(), 1.02), 20))(
        jax.random.key(0)
    )
    assert int(good.status) == Status.SUCCESS
    assert 0.3 < float(run_status(good.history, burn_in=75).innovation_ratio) < 3.0
    assert 0.5 < float(run_status(good.history, burn_in=75).error_ratio) < 2.0
    # lost track with a consistent-looking innovation ratio: RMSE 10x the spread -> DIVERGED
    lost = good.history._replace(rmse_analysis=10.0 * good.history.spread_analysis)
    st = run_status(lost, burn_in=75)
    assert float(st.innovation_ratio) < 3.0 and float(st.error_ratio) == pytest.approx(10.0)
    assert int(st.status) == Status.DIVERGED
    # a model step far beyond stability: the analyses become non-finite
    blowup = Lorenz96(n=8, dt=5.0)
    om = observation_model(identity(8), obs_std=1.0)
    series = observation_series(jnp.ones((6, 8)), om, n_steps=1)
    E0 = 8.0 + jax.random.normal(jax.random.key(1), (6, 8))
    _, hist = jax.jit(lambda E: assimilate(jax.random.key(2), etkf(), blowup, series, E))(E0)
    assert np.any(np.asarray(hist.info.status) == Status.NONFINITE)
    assert int(run_status(hist).status) == Status.NONFINITE
    with pytest.raises(Exception, match="non-finite"):
        jax.jit(lambda h: throw_on_failure(h).spread_analysis)(hist).block_until_ready()
