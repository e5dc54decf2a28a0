r"""The ensemble Kalman smoother (``enks``) and the ensemble RTS smoother (``ensemble_rts``).

References are independent of the library: on a linear-Gaussian model the exact smoothed
distributions come from dense Gaussian conditioning of the joint trajectory ``(x_1..x_K)``
(built from ``M``, ``Q``, ``P0`` in NumPy), not from a Kalman filter/RTS recursion.

Tolerances (Monte-Carlo, derived rather than tuned). With ``N`` members, an ensemble mean
estimates the exact posterior mean with an error of variance ``γ σ²/N`` per component
(``σ`` the exact posterior std; ``γ = 1`` for ``N`` independent posterior draws; the
finite-ensemble gains and the sampled initial, model and observation noises make it larger:
over 6 seeds we measured ``γ ≈ 1.6`` for the square root, ``≈ 2.3`` with perturbed
observations and ``≈ 1.4`` for the EnRTS, so we bound ``γ ≤ 3``). The sample std has a
relative error of std ``√(γ/(2N))``. Each of the ``d = K·n = 20`` components must lie within
``Z = 5`` such standard errors: a false alarm has probability ``≤ 20·2Φ(-5) ≈ 1e-5`` per
check. ``N = 2000`` keeps this tolerance at ``5√3/√2000 ≈ 0.19 σ``, while the filter's means
(the smoother's obvious wrong answer) miss the smoothed ones by up to ``~1 σ``; each test also
asserts that this wrong answer fails the same tolerance, so it can fail.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import assimilate, with_inflation, with_rotation, with_rtps
from jaxda.ensemble import (
    EnKSState,
    enkf,
    enks,
    enks_record,
    ensemble_rts,
    etkf,
    smoothed_ensembles,
)
from jaxda.experiments import initial_ensemble, sakov2012, simulate
from jaxda.models import LinearModel, Lorenz63, from_callable, with_noise
from jaxda.observations import (
    identity,
    linear,
    observation_model,
    observation_series,
)

# ---------------------------------------------------------------- linear-Gaussian problem
n, K, N_MC = 2, 10, 2000
M = np.array([[0.95, 0.25], [-0.3, 0.9]])  # a damped rotation
Q_STD, R_STD, P0_STD = 0.3, 0.4, 0.7
MU0 = np.array([1.0, 0.0])
H = np.array([[1.0, 0.0]])  # only the first variable is observed
GAMMA, Z = 3.0, 5.0  # variance factor bound and z-score (module docstring)


def _data():
    rng = np.random.default_rng(0)
    x, ys = MU0 + P0_STD * rng.standard_normal(n), []
    for _ in range(K):
        x = M @ x + Q_STD * rng.standard_normal(n)
        ys.append(H @ x + R_STD * rng.standard_normal(1))
    y = np.array(ys)
    y[4, 0] = np.nan  # a missing observation
    return y


Y = _data()


def exact_posterior(upto: int):
    """Mean and std ``(K, n)`` of ``x_1..x_K`` given the present observations at times
    ``0..upto`` (0-based), by conditioning the joint Gaussian of the trajectory."""
    F = np.vstack([np.linalg.matrix_power(M, k + 1) for k in range(K)])
    B = np.zeros((K * n, K * n))  # x = F x0 + B η
    for k in range(K):
        for i in range(k + 1):
            B[k * n : (k + 1) * n, i * n : (i + 1) * n] = np.linalg.matrix_power(M, k - i)
    mean = F @ MU0
    cov = P0_STD**2 * F @ F.T + Q_STD**2 * B @ B.T
    Hb, yb = np.kron(np.eye(K), H), Y.reshape(-1)
    rows = [i for i in range(K) if i <= upto and np.isfinite(yb[i])]
    Hs = Hb[rows]
    gain = np.linalg.solve(Hs @ cov @ Hs.T + R_STD**2 * np.eye(len(rows)), Hs @ cov).T
    m = mean + gain @ (yb[rows] - Hs @ mean)
    C = cov - gain @ Hs @ cov
    return m.reshape(K, n), np.sqrt(np.diag(C)).reshape(K, n)


def mc_z(E, mean, std):
    """z-scores of the ensemble means and stds ``(K, N, n)`` against the exact ones, in units
    of their Monte-Carlo standard errors bounded with ``GAMMA`` (module docstring)."""
    N = E.shape[1]
    E = np.asarray(E)
    z_mean = (E.mean(1) - mean) / (std * math.sqrt(GAMMA / N))
    z_std = (E.std(1, ddof=1) / std - 1.0) / math.sqrt(GAMMA / (2 * N))
    return np.abs(z_mean).max(), np.abs(z_std).max()


@pytest.fixture(scope="module")
def linear_problem():
    model = with_noise(LinearModel(M=jnp.asarray(M), x0=jnp.asarray(MU0)), Q_STD)
    obs = observation_series(
        jnp.asarray(Y), observation_model(linear(jnp.asarray(H)), obs_std=R_STD), n_steps=1
    )
    E0 = jnp.asarray(MU0 + P0_STD * np.random.default_rng(1).standard_normal((N_MC, n)))
    return model, obs, E0


@pytest.fixture(scope="module")
def whole_window(linear_problem):
    """Whole-window EnKS runs with the filter's ensembles stored: ``lag = K-1`` (sqrt) and a lag
    beyond the window, ``K+3`` (pertobs: the buffer's extra entries must be discarded). The
    ``sqrt`` run's filter is the ETKF, whose ensembles also feed the EnRTS."""
    model, obs, E0 = linear_problem
    runs = {}
    for seed, (update, lag) in enumerate([("sqrt", K - 1), ("pertobs", K + 3)]):
        final, hist = assimilate(
            jax.random.key(seed), enks(lag, update=update), model, obs, E0,
            record=enks_record, store_ensembles=True,
        )  # fmt: skip
        assert final.lagged.shape == (lag, N_MC, n)
        runs[update] = (smoothed_ensembles(hist.record, final), hist)
    return runs


@pytest.mark.parametrize("update", ["sqrt", "pertobs"])
def test_whole_window_enks_matches_exact_smoother(whole_window, update):
    Es, hist = whole_window[update]
    assert Es.shape == (K, N_MC, n)
    mean, std = exact_posterior(K - 1)
    z_mean, z_std = mc_z(Es, mean, std)
    assert z_mean < Z and z_std < Z, (z_mean, z_std)
    # The filter (each time given the past only) fails the same test: the check has power.
    assert mc_z(hist.ensemble_analysis, mean, std)[0] > Z
    # The last time has no future observation: smoothed = filter analysis.
    np.testing.assert_allclose(Es[-1], hist.ensemble_analysis[-1], rtol=0, atol=1e-12)


def test_fixed_lag_enks_conditions_on_data_up_to_k_plus_lag(linear_problem):
    model, obs, E0 = linear_problem
    lag = 2
    final, hist = assimilate(jax.random.key(3), enks(lag), model, obs, E0, record=enks_record)
    Es = np.asarray(smoothed_ensembles(hist.record, final))
    whole_mean, whole_std = exact_posterior(K - 1)
    worst, worst_whole = 0.0, 0.0
    for k in range(K):
        mean, std = exact_posterior(k + lag)
        worst = max(worst, *mc_z(Es[k : k + 1], mean[k : k + 1], std[k : k + 1]))
        z_whole = mc_z(Es[k : k + 1], whole_mean[k : k + 1], whole_std[k : k + 1])[0]
        worst_whole = max(worst_whole, z_whole)
    assert worst < Z, worst
    # ...and not on the whole window: a lag that is ignored would fail one of the two.
    assert worst_whole > Z, worst_whole


def test_ensemble_rts_matches_exact_smoother(whole_window):
    _, hist = whole_window["sqrt"]  # the ETKF's forecast and analysis ensembles
    Ef, Ea = hist.ensemble_forecast, hist.ensemble_analysis
    Es = ensemble_rts(Ef, Ea)
    mean, std = exact_posterior(K - 1)
    z_mean, z_std = mc_z(Es, mean, std)
    assert z_mean < Z and z_std < Z, (z_mean, z_std)
    assert mc_z(Ea, mean, std)[0] > Z  # the filter fails it
    np.testing.assert_array_equal(Es[-1], Ea[-1])
    np.testing.assert_array_equal(ensemble_rts(Ef, Ea, decorrelation=0.0), Ea)
    jitted = jax.jit(lambda f, a: ensemble_rts(f, a))(Ef, Ea)
    np.testing.assert_allclose(jitted, Es, rtol=1e-9, atol=1e-9)


# -------------------------------------------------------------------- nonlinear twin run
def test_smoothers_beat_the_filter_on_lorenz63():
    """Lorenz-63 (DAPPER sakov2012, 200 cycles, N = 10): the smoothed means are closer to the
    truth than the filter's analysis means on the same run. Over 4 truth seeds the RMSE ratios
    were 0.75-0.78 for the EnKS with lag 2 and 0.71-0.78 for the EnRTS; a smoother that does
    nothing gives 1 and a wrong update more, so the bound 0.9 keeps a margin to both sides."""
    setup = sakov2012(n_cycles=200, burn_in=40)
    data = simulate(jax.random.key(0), setup)
    E0 = initial_ensemble(jax.random.key(1), setup, 10)
    final, hist = assimilate(
        jax.random.key(2), enks(2, inflation=1.02), setup.model, data.observations, E0,
        truth=data.truth, record=enks_record, store_ensembles=True,
    )  # fmt: skip
    b = setup.burn_in
    Ef, Ea = hist.ensemble_forecast, hist.ensemble_analysis
    assert Ef is not None and Ea is not None and hist.rmse_analysis is not None

    def rmse(E):
        return float(np.mean(np.sqrt(np.mean((E.mean(1) - data.truth) ** 2, axis=1))[b:]))

    filter_rmse = rmse(Ea)
    assert filter_rmse == pytest.approx(float(np.mean(hist.rmse_analysis[b:])))
    assert filter_rmse < 1.5  # the filter itself tracks the truth
    enks_rmse = rmse(smoothed_ensembles(hist.record, final))
    rts_rmse = rmse(ensemble_rts(Ef, Ea))
    assert enks_rmse < 0.9 * filter_rmse, (enks_rmse, filter_rmse)
    assert rts_rmse < 0.9 * filter_rmse, (rts_rmse, filter_rmse)


# ------------------------------------------------------------------------ exact properties
def _small_run(method, *, record=None, key=5):
    model = Lorenz63()
    y = 5.0 * jax.random.normal(jax.random.key(0), (12, 3))
    y = y.at[3, 1].set(jnp.nan).at[6].set(jnp.nan)  # partly and wholly missing times
    obs = observation_series(y, observation_model(identity(3), obs_std=2.0), n_steps=5)
    E0 = model.x0 + jax.random.normal(jax.random.key(1), (8, 3))
    return assimilate(
        jax.random.key(key), method, model, obs, E0, record=record, store_ensembles=True
    )


def test_lag_zero_sqrt_is_the_etkf_through_the_driver():
    final, hist = _small_run(enks(0), record=enks_record)
    ref_final, ref = _small_run(etkf())
    Ea, Ea_ref = hist.ensemble_analysis, ref.ensemble_analysis
    assert Ea is not None and Ea_ref is not None
    np.testing.assert_allclose(final.ensemble, ref_final.ensemble, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Ea, Ea_ref, rtol=1e-12, atol=1e-12)
    Es = smoothed_ensembles(hist.record, final)
    np.testing.assert_allclose(Es, Ea_ref, rtol=1e-12, atol=1e-12)
    assert final.lagged.shape == (0, 8, 3)
    np.testing.assert_array_equal(hist.info.n_obs, ref.info.n_obs)


def test_lag_zero_pertobs_is_the_enkf():
    """Same perturbations from the same key (the driver hands both methods the same key)."""
    E = jax.random.normal(jax.random.key(7), (8, 3))
    obs = observation_model(identity(3), obs_std=jnp.array([1.0, 2.0, 0.5]))
    y = jnp.array([0.3, jnp.nan, 1.0])
    step, ref_step = jax.jit(enks(0, update="pertobs").step), jax.jit(enkf().step)
    for seed in (0, 1):
        new, info = step(jax.random.key(seed), enks(0).init(E), y, obs)
        ref, ref_info = ref_step(jax.random.key(seed), enkf().init(E), y, obs)
        np.testing.assert_allclose(new.ensemble, ref.ensemble, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(new.smoothed, new.ensemble)
        assert int(info.n_obs) == int(ref_info.n_obs) == 2


def _buffered_state(N=6, L=2):
    """Analyses at ``L`` past times and the forecast at the current time (distinct draws)."""
    E = jax.random.normal(jax.random.key(7), (L + 1, N, 3))
    return EnKSState(ensemble=E[-1], lagged=E[:-1], smoothed=jnp.zeros_like(E[0])), E


@pytest.mark.parametrize("update", ["sqrt", "pertobs"])
def test_lagged_linear_image_of_the_forecast_is_mapped_with_the_analysis(update):
    """If a past state is an affine function of the present one, member by member
    (``x_j = G x_k + c``), smoothing it with the EnKS gives exactly the affine image of the
    filter's analysis: the same transform acts on every ensemble of the buffer. With every
    observation missing nothing changes."""
    state, E = _buffered_state()
    G = jax.random.normal(jax.random.key(8), (3, 3))
    c = jnp.array([1.0, -2.0, 0.5])
    state = state._replace(lagged=state.lagged.at[0].set(E[-1] @ G.T + c))
    obs = observation_model(identity(3), obs_std=jnp.array([1.0, 2.0, 0.5]))
    y = jnp.array([0.3, jnp.nan, 1.0])
    step = jax.jit(enks(2, update=update).step)
    new, info = step(jax.random.key(0), state, y, obs)
    # (new.ensemble is the filter analysis: the test_lag_zero_* tests)
    np.testing.assert_allclose(new.smoothed, new.ensemble @ G.T + c, rtol=1e-11, atol=1e-11)
    assert not np.allclose(new.smoothed, state.lagged[0])  # the observations did change it
    assert int(info.n_obs) == 2 and int(info.status) == 0
    # With every observation missing, every ensemble of the buffer is left unchanged.
    same, info = step(jax.random.key(0), state, jnp.full(3, jnp.nan), obs)
    np.testing.assert_allclose(same.smoothed, state.lagged[0], atol=1e-13)
    np.testing.assert_allclose(
        same.lagged, jnp.stack([state.lagged[1], state.ensemble]), atol=1e-13
    )
    np.testing.assert_allclose(same.ensemble, state.ensemble, atol=1e-13)
    assert int(info.n_obs) == 0


# ----------------------------------------------------------------------------- bad options
@pytest.mark.parametrize("lag", [-1, 1.5, True, "2", None])
def test_enks_rejects_bad_lag(lag):
    with pytest.raises(ValueError, match="lag must be a non-negative int"):
        enks(lag)


def test_enks_rejects_bad_update():
    with pytest.raises(ValueError, match="update must be one of"):
        enks(1, update="serial")


def test_enks_init_rejects_bad_ensemble():
    with pytest.raises(ValueError, match=r"shape \(N, n\)"):
        enks(1).init(jnp.zeros(3))


def test_ensemble_rts_rejects_bad_inputs():
    E = jnp.zeros((4, 5, 2))
    with pytest.raises(ValueError, match="must both have shape"):
        ensemble_rts(E, E[:3])
    with pytest.raises(ValueError, match="must both have shape"):
        ensemble_rts(E[0], E[0])
    with pytest.raises(ValueError, match="at least 2 members"):
        ensemble_rts(E[:, :1], E[:, :1])
    with pytest.raises(ValueError, match="decorrelation must be in"):
        ensemble_rts(E, E, decorrelation=1.5)
    with pytest.raises(ValueError, match="truncation must be in"):
        ensemble_rts(E, E, truncation=0.0)


def test_smoothed_ensembles_rejects_bad_inputs():
    state = enks(2).init(jnp.zeros((5, 2)))
    with pytest.raises(ValueError, match="record must have shape"):
        smoothed_ensembles(jnp.zeros((4, 5, 3)), state)
    with pytest.raises(TypeError, match="EnKSState"):
        smoothed_ensembles(jnp.zeros((4, 5, 2)), etkf().init(jnp.zeros((5, 2))))


def test_wrappers_refuse_an_enks():
    """Rotating, inflating or relaxing only the current members would silently desynchronize
    the lag buffer: the wrappers refuse an EnKS (enks(inflation=) inflates both)."""
    E = jnp.arange(12.0).reshape(4, 3) ** 1.5
    obs = observation_model(identity(3), obs_std=1.0)
    for method in (with_rotation(enks(1)), with_inflation(enks(1), 1.1), with_rtps(enks(1), 0.5)):
        with pytest.raises(ValueError, match="ensemble smoother"):
            method.step(jax.random.key(0), method.init(E, obs), jnp.ones(3), obs)


def test_enks_inflation_acts_on_the_buffered_analysis_too():
    """Persistence model: the state does not change, so the smoothed mean at time 0 after the
    observation of time 1 is the filter mean at time 1, whatever the inflation."""
    model = from_callable(lambda x: x, jnp.zeros(2))
    obs = observation_series(
        jnp.array([[1.0, -0.5], [2.0, 0.5]]),
        observation_model(identity(2), obs_std=0.7),
        n_steps=1,
    )
    E0 = jax.random.normal(jax.random.key(0), (6, 2))
    for infl in (1.0, 2.0):
        final, hist = assimilate(
            jax.random.key(1), enks(1, inflation=infl), model, obs, E0, record=enks_record
        )
        smoothed = smoothed_ensembles(hist.record, final)
        np.testing.assert_allclose(smoothed[0].mean(0), final.ensemble.mean(0), rtol=1e-12)
