"""Window methods (iEnKS, sliding-window 4D-Var) against exact linear-Gaussian references.

On a linear model with linear observations the iEnKS needs one Gauss–Newton step and its
square-root updates keep the ensemble's sample moments on the exact Kalman recursion, so:

* ``ienks(lag=1)`` equals the ETKF analysis by analysis (round-off);
* with lag ``L`` (shift 1 or ``S``), the smoothed window-start mean at observation index
  ``j - L`` after the update at ``j`` equals dense Gaussian conditioning of the trajectory on
  every observation up to ``j``, from the initial sample moments (round-off); the MDA and
  bundle variants give the same;
* 4D-Var's analysis of each window is the closed-form minimizer of its quadratic cost with
  the static ``B``, cycled by propagating the smoothed state.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import assimilate, with_inflation
from jaxda.ensemble import etkf, fourdenvar, ienks
from jaxda.models import LinearModel, Lorenz63, smoothed_record, with_noise
from jaxda.observations import linear, observation_model, observation_series
from jaxda.variational import background_covariance, var4d

n, N, K = 3, 8, 7
MT = np.array([[0.9, 0.3, 0.0], [-0.3, 0.9, 0.1], [0.0, 0.2, 0.95]])
H = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
R_STD = np.array([0.5, 0.8])
STEPS = 2  # model steps per observation interval


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    x = rng.normal(size=n)
    ys = []
    for _ in range(K):
        x = np.linalg.matrix_power(MT, STEPS) @ x
        ys.append(H @ x + R_STD * rng.normal(size=2))
    y = np.array(ys)
    y[3, 1] = np.nan  # one missing value
    om = observation_model(linear(jnp.asarray(H)), obs_std=jnp.asarray(R_STD))
    series = observation_series(jnp.asarray(y), om, n_steps=STEPS)
    model = LinearModel(jnp.asarray(MT), jnp.zeros(n))
    E0 = jnp.asarray(rng.normal(size=(N, n)) + 0.3)
    return model, series, y, E0


def conditioned_mean(E0, y, upto, at):
    """Mean of the state at observation index ``at`` (-1: initial) given ``y[0..upto]``, by
    dense Gaussian conditioning of the stacked trajectory (prior: the sample moments of E0)."""
    E0 = np.asarray(E0)
    m0, P0 = E0.mean(0), np.cov(E0.T)
    Ms = np.linalg.matrix_power(MT, STEPS)
    # x_k = Ms^{k+1} x_init: stack the maps of the observed times and of the target time
    A = [np.linalg.matrix_power(Ms, k + 1) for k in range(upto + 1)]
    G = np.concatenate([H @ a for a in A])
    yy = np.concatenate([y[k] for k in range(upto + 1)])
    std = np.tile(R_STD, upto + 1)
    ok = np.isfinite(yy)
    G, yy, R = G[ok], yy[ok], np.diag(std[ok] ** 2)
    T = np.linalg.matrix_power(Ms, at + 1)
    gain = np.linalg.solve(G @ P0 @ G.T + R, G @ P0 @ T.T).T
    return T @ m0 + gain @ (yy - G @ m0)


def test_ienks_lag1_equals_the_etkf(problem):
    model, series, _, E0 = problem
    run = lambda m: assimilate(jax.random.key(0), m, model, series, E0, store_ensembles=True)  # noqa: E731
    _, h_i = run(ienks(model, lag=1, max_steps=3))
    _, h_e = run(etkf())
    np.testing.assert_allclose(h_i.ensemble_analysis, h_e.ensemble_analysis, rtol=1e-9, atol=1e-9)
    # converged after the first Gauss-Newton step: later steps change w by round-off only
    assert np.all(np.asarray(h_i.info.n_steps) == 3)


@pytest.mark.parametrize(
    "options",
    [
        {"lag": 2},
        {"lag": 3, "shift": 3},
        {"lag": 3, "shift": 2},
        {"lag": 2, "mda": True, "max_steps": 4},
        {"lag": 2, "bundle": True, "max_steps": 2},
    ],
    ids=["lag2", "lag3-shift3", "lag3-shift2", "mda", "bundle"],
)
def test_ienks_smoother_is_exact_gaussian_conditioning(problem, options):
    model, series, y, E0 = problem
    method = ienks(model, **options)
    _, hist = jax.jit(
        lambda E: assimilate(jax.random.key(1), method, model, series, E, record=smoothed_record)
    )(E0)
    idx, means = (np.asarray(a) for a in hist.record)
    updated = np.asarray(hist.info.updated)
    lag, shift = options["lag"], options.get("shift", 1)
    assert updated.sum() == K // shift
    rtol = 1e-6 if options.get("bundle") else 1e-9
    for j in np.flatnonzero(updated):
        np.testing.assert_allclose(
            means[j], conditioned_mean(E0, y, j, idx[j]), rtol=rtol, atol=rtol
        )
        assert idx[j] >= j - lag  # the window start never lies more than lag intervals back
    assert idx[-1 if updated[-1] else np.flatnonzero(updated)[-1]] >= 0


def test_var4d_windows_are_the_closed_form_minimizers(problem):
    model, series, y, E0 = problem
    lag = 2
    Bstd = np.array([1.0, 0.7, 1.3])
    method = var4d(model, lag=lag, B=background_covariance(std=jnp.asarray(Bstd)), max_steps=2)
    x0 = np.asarray(E0).mean(0)
    start_state = jnp.asarray(x0)[None]
    _, hist = assimilate(
        jax.random.key(0), method, model, series, start_state, record=smoothed_record
    )
    idx, means = (np.asarray(a) for a in hist.record)
    Ms = np.linalg.matrix_power(MT, STEPS)
    B = np.diag(Bstd**2)
    xb, start = x0, -1  # background at the window start (observation index)
    for j in range(K):
        # the window [start, j] assimilates y_j only
        G = H @ np.linalg.matrix_power(Ms, j - start)
        ok = np.isfinite(y[j])
        G, R = G[ok], np.diag(R_STD[ok] ** 2)
        xs = xb + B @ G.T @ np.linalg.solve(G @ B @ G.T + R, y[j][ok] - G @ xb)
        assert idx[j] == start
        np.testing.assert_allclose(means[j], xs, rtol=1e-9, atol=1e-9)
        if j - start == lag:  # full window: slide by one interval
            xb, start = Ms @ xs, start + 1
        else:
            xb = xs


def test_bad_options_raise():
    model = Lorenz63()
    with pytest.raises(ValueError, match="lag"):
        ienks(model, lag=0)
    with pytest.raises(ValueError, match="shift"):
        ienks(model, lag=1, shift=2)
    with pytest.raises(ValueError, match="update"):
        ienks(model, update="order1")
    with pytest.raises(ValueError, match="deterministic"):
        var4d(with_noise(model, 0.1), B=background_covariance(std=1.0, dim=3))
    with pytest.raises(TypeError, match="Model"):
        ienks(lambda x: x)
    with pytest.raises(ValueError, match="window method"):
        with_inflation(ienks(model), 1.1)
    with pytest.raises(ValueError, match="same observation network"):
        ienks(model, lag=2, shift=2).init(jnp.ones((4, 3)) + jnp.arange(4.0)[:, None], None)


def test_fourdenvar_is_the_4d_etkf_on_a_linear_model(problem):
    """Linear model and observations: one window of one interval is the ETKF; windows of two
    intervals assimilated together are the (exact, linear) iEnKS with lag = shift = 2;
    localization with an infinite radius changes nothing; outer loops change nothing."""
    model, series, _, E0 = problem

    def run(m, s=series):
        return assimilate(jax.random.key(0), m, model, s, E0, store_ensembles=True)[1]

    located = observation_series(
        series.y,
        observation_model(linear(jnp.asarray(H), locations=[0.0, 1.5]), obs_std=jnp.asarray(R_STD)),
        n_steps=STEPS,
    )
    ref1 = run(etkf()).ensemble_analysis
    np.testing.assert_allclose(run(fourdenvar(model)).ensemble_analysis, ref1, atol=1e-10)
    ref2 = run(ienks(model, lag=2, shift=2)).ensemble_analysis
    for method in (fourdenvar(model, lag=2), fourdenvar(model, lag=2, n_outer=3)):
        np.testing.assert_allclose(run(method).ensemble_analysis, ref2, atol=1e-9)
    wide = fourdenvar(model, lag=2, localization_radius=1e6, periodic=False)
    np.testing.assert_allclose(run(wide, located).ensemble_analysis, ref2, atol=1e-8)
    # the same with 2-D coordinates (m, 2): the window's S copies stack along the observations
    located_2d = observation_series(
        series.y,
        observation_model(
            linear(jnp.asarray(H), locations=[[0.0, 0.0], [1.5, 0.0]]), obs_std=jnp.asarray(R_STD)
        ),
        n_steps=STEPS,
    )
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    wide_2d = fourdenvar(model, lag=2, localization_radius=1e6, periodic=False, state_locations=xy)
    np.testing.assert_allclose(run(wide_2d, located_2d).ensemble_analysis, ref2, atol=1e-8)


def test_fourdenvar_beats_the_letkf_at_small_ensembles():
    """Lorenz-96 observed every 4 steps, N = 10: localized 4DEnVar (1-interval windows with a
    4D-LETKF for the perturbations) is more accurate than the LETKF with the same radius and
    inflation, and both beat the free run by far."""
    from jaxda.assimilate import with_inflation as infl
    from jaxda.ensemble import letkf
    from jaxda.experiments import initial_ensemble, sakov2008, simulate

    setup = sakov2008(n_cycles=200, burn_in=50, obs_every=4)
    data = simulate(jax.random.key(3), setup)
    E0 = initial_ensemble(jax.random.key(4), setup, 10)

    def score(method):
        _, h = assimilate(
            jax.random.key(5), method, setup.model, data.observations, E0, truth=data.truth
        )
        return float(jnp.mean(h.rmse_analysis[setup.burn_in :]))

    envar = score(fourdenvar(setup.model, localization_radius=4.0, inflation=1.05))
    local = score(infl(letkf(localization_radius=4.0), 1.05))
    assert envar < 0.9 * local < 0.9, (envar, local)


def test_weak_constraint_var4d_windows_are_exact_smoothers(problem):
    """Weak-constraint 4D-Var (``Q=``) on a linear model: each window's analysis of the
    start state and of the model-error forcings is dense Gaussian conditioning of
    ``(x_start, η_1..η_c)`` on the window's newest observation, and the window slides along
    the analysed trajectory, forcing included."""
    model, series, y, E0 = problem
    lag = 2
    Bstd, Qstd = np.array([1.0, 0.7, 1.3]), np.array([0.3, 0.5, 0.2])
    method = var4d(
        model,
        lag=lag,
        B=background_covariance(std=jnp.asarray(Bstd)),
        Q=background_covariance(std=jnp.asarray(Qstd)),
        max_steps=2,
    )
    x0 = np.asarray(E0).mean(0)
    _, hist = assimilate(
        jax.random.key(0), method, model, series, jnp.asarray(x0)[None], record=smoothed_record
    )
    idx, means = (np.asarray(a) for a in hist.record)
    Ms = np.linalg.matrix_power(MT, STEPS)
    xb, start = x0, -1
    for j in range(K):
        c = j - start  # intervals in the window; control (x_start, eta_1..eta_c)
        blocks = [H @ np.linalg.matrix_power(Ms, c)]
        blocks += [H @ np.linalg.matrix_power(Ms, c - k) for k in range(1, c + 1)]
        G = np.concatenate(blocks, axis=1)
        prior_cov = np.diag(np.concatenate([Bstd**2] + [Qstd**2] * c))
        prior_mean = np.concatenate([xb, np.zeros(n * c)])
        ok = np.isfinite(y[j])
        G, R = G[ok], np.diag(R_STD[ok] ** 2)
        gain = np.linalg.solve(G @ prior_cov @ G.T + R, G @ prior_cov).T
        post = prior_mean + gain @ (y[j][ok] - G @ prior_mean)
        xs, eta1 = post[:n], post[n : 2 * n]
        assert idx[j] == start
        np.testing.assert_allclose(means[j], xs, rtol=1e-9, atol=1e-9)
        if c == lag:  # full window: slide along the analysed trajectory
            xb, start = Ms @ xs + eta1, start + 1
        else:
            xb = xs


def test_ienks_reaches_dappers_documented_lorenz63_score():
    """DAPPER's Lorenz63/sakov2012 with iEnKS('Sqrt', N=10, infl=1.02, rot=True): documented
    time-mean analysis RMSE 0.31 (goal <= 0.33); short runs (1,000 cycles, 4 seeds: one seed's
    time mean varies by about ±0.03) stay below 0.35 on average, and the smoother beats the
    filter on every seed."""
    from jaxda.experiments import initial_ensemble, sakov2012, simulate

    setup = sakov2012(n_cycles=1000, burn_in=200)
    method = ienks(setup.model, lag=1, inflation=1.02, rotate=True)
    b = setup.burn_in

    def one(key):
        k_data, k_init, k_run = jax.random.split(key, 3)
        data = simulate(k_data, setup)
        E0 = initial_ensemble(k_init, setup, 10)
        _, h = assimilate(
            k_run, method, setup.model, data.observations, E0,
            truth=data.truth, record=smoothed_record,
        )  # fmt: skip
        idx, means = h.record
        err = jnp.sqrt(jnp.mean((means - data.truth[idx]) ** 2, axis=1))
        keep = idx >= b
        smooth = jnp.sum(jnp.where(keep, err, 0.0)) / jnp.sum(keep)
        return jnp.mean(h.rmse_analysis[b:]), smooth

    filt, smooth = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), 4))
    assert float(jnp.mean(filt)) < 0.35, filt
    assert np.all(np.asarray(smooth) < np.asarray(filt)), (smooth, filt)
