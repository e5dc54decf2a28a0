"""EnKF-N (finite-size EnKF, dual form) and the adaptive multiplicative inflation wrapper.

References used here: the EnKF-N dual cost written independently in DAPPER's form (in the
inflation ``l``, from the singular values of the unscaled anomalies) and minimised by brute
force on a grid; DAPPER's own ``effective_N`` when DAPPER is installed; the ETKF
(:func:`jaxda.ensemble.etkf_analysis`) on the inflated ensemble; and, for the adaptive
inflation, a linear-Gaussian stream whose true forecast covariance is ``λ²`` times the
ensemble's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import (
    AdaptiveInflationState,
    ensemble_mean,
    with_adaptive_inflation,
    with_rotation,
)
from jaxda.core import Method, Status
from jaxda.ensemble import (
    enkf_n,
    enkf_n_analysis,
    enks,
    etkf,
    etkf_analysis,
    ienks,
    inflate,
    particle_filter,
)
from jaxda.models import Lorenz96
from jaxda.observations import identity, observation_model, subset

# (N, n, m, spread, innovation scale): m >= N with large innovations, m < N
CASES = [(10, 12, 12, 1.0, 2.0), (8, 6, 3, 0.7, 3.0)]


def _case(N, n, m, spread, scale, seed=0):
    rng = np.random.default_rng(seed)
    E = 1.0 + spread * rng.normal(size=(N, n))
    y = E[:, :m].mean(0) + scale * rng.normal(size=m)
    obs = observation_model(identity(n) if m == n else subset(list(range(m)), n=n), obs_std=0.8)
    return jnp.asarray(E), jnp.asarray(y), obs


@jax.jit
def _analysis(E, y, obs, xN):
    return enkf_n_analysis(E, y, obs, xN=xN)


@jax.jit
def _analysis_g1(E, y, obs, xN):
    return enkf_n_analysis(E, y, obs, xN=xN, g=1)


def _dual_cost_l(E, y, obs_std, m, xN, g):
    """DAPPER-form dual cost J(l) (independent of jaxda's ζ-form), its constants included."""
    E, y = np.asarray(E), np.asarray(y)
    N = E.shape[0]
    N1 = N - 1
    Y = (E[:, :m] - E[:, :m].mean(0)) / obs_std  # unscaled whitened anomalies
    dy = (y - E[:, :m].mean(0)) / obs_std
    _, s, Ut = np.linalg.svd(Y, full_matrices=False)
    du = Ut @ dy
    eN, cL = (N + 1) / N, (N + g) / N1
    s2N = np.zeros(N)
    s2N[: len(s)] = s**2
    kappa = np.mean(N1 / (s2N + N1))
    mc = np.sqrt((eN / cL) ** kappa)
    eN, cL = xN * eN / mc, xN * cL * mc

    def J(l):
        l = np.asarray(l)[..., None]
        data = np.sum(du**2 / ((l * s) ** 2 + N1), -1)
        return data + eN / l[..., 0] ** 2 + cL * np.log(l[..., 0] ** 2)

    return J, eN / cL


@jax.jit
def _etkf_inflated(E, l, y, obs):
    return etkf_analysis(inflate(E, l), y, obs)


def test_enkf_n_dual_minimiser_equals_grid_minimum():
    for case, xN, g, run in [
        (CASES[0], 1.0, 0, _analysis),
        (CASES[0], 2.0, 1, _analysis_g1),
        (CASES[1], 1.0, 0, _analysis),
    ]:
        E, y, obs = _case(*case)
        Ea, info = run(E, y, obs, xN)
        assert int(info.status) == Status.SUCCESS
        J, _ = _dual_cost_l(E, y, 0.8, case[2], xN, g)
        grid = np.exp(np.linspace(np.log(0.3), np.log(30.0), 200_001))
        l_grid = grid[np.argmin(J(grid))]
        fine = np.linspace(l_grid * (1 - 1e-4), l_grid * (1 + 1e-4), 20_001)
        l_ref = fine[np.argmin(J(fine))]
        assert l_ref > 1.05  # a case where the inflation matters
        np.testing.assert_allclose(float(info.inflation), l_ref, rtol=1e-7)
        # the analysis is the ETKF's on the ensemble inflated by l
        np.testing.assert_allclose(Ea, _etkf_inflated(E, l_ref, y, obs), rtol=1e-6, atol=1e-6)


def test_enkf_n_inflation_matches_dapper():
    ens = pytest.importorskip("dapper.da_methods.ensemble")
    for N, n, m, spread, scale in CASES:
        E, y, obs = _case(N, n, m, spread, scale, seed=3)
        En, yn = np.asarray(E), np.asarray(y)
        for xN in (1.0, 3.0):
            _, info = _analysis(E, y, obs, xN)
            Y = (En[:, :m] - En[:, :m].mean(0)) / 0.8
            za = ens.effective_N(Y, (yn - En[:, :m].mean(0)) / 0.8, xN, 0)
            # DAPPER's Newton stops at xtol = 1e-4
            np.testing.assert_allclose(float(info.inflation), np.sqrt((N - 1) / za), rtol=1e-4)


def test_enkf_n_with_sharp_hyperprior_is_the_etkf():
    """xN → ∞: l² is pinned at the corrected prior mode, and the analysis is the ETKF's."""
    for N, n, m, spread, scale in CASES:
        E, y, obs = _case(N, n, m, spread, scale, seed=1)
        Ea, info = _analysis(E, y, obs, 1e9)
        _, mode = _dual_cost_l(E, y, 0.8, m, 1.0, 0)
        np.testing.assert_allclose(float(info.inflation), np.sqrt(mode), rtol=1e-7)
        assert 0.95 < np.sqrt(mode) <= 1.0
        ref = _etkf_inflated(E, np.sqrt(mode), y, obs)
        np.testing.assert_allclose(Ea, ref, rtol=1e-8, atol=1e-8)


def test_enkf_n_nothing_observed_is_identity_and_missing_values_drop_out():
    E, y, obs = _case(10, 12, 12, 1.0, 2.0)
    Ea, info = _analysis(E, jnp.full(12, jnp.nan), obs, 1.0)
    assert float(info.inflation) == 1.0 and int(info.n_obs) == 0
    np.testing.assert_allclose(Ea, E, atol=1e-12)
    # a missing value = the same analysis without that observation
    y_nan = y.at[jnp.array([2, 11])].set(jnp.nan)
    Ea, info = _analysis(E, y_nan, obs, 1.0)
    keep = [i for i in range(12) if i not in (2, 11)]
    obs_k = observation_model(subset(keep, n=12), obs_std=0.8)
    Eb, info_b = _analysis(E, y[jnp.array(keep)], obs_k, 1.0)
    np.testing.assert_allclose(Ea, Eb, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(info.inflation, info_b.inflation, rtol=1e-9)


def _dapper_hess_analysis(E, y, obs_std, m, l, xN=1.0):
    """DAPPER's EnKF_N(Hess=True) transform given l (numpy), from its published formulas."""
    N = E.shape[0]
    N1 = N - 1
    mu = E.mean(0)
    A = (E - mu) * l
    Y = (E[:, :m] - E[:, :m].mean(0)) * l / obs_std
    dy = (y - E[:, :m].mean(0)) / obs_std
    _, s, _ = np.linalg.svd(Y / l, full_matrices=False)
    eN, cL = (N + 1) / N, N / N1
    s2N = np.zeros(N)
    s2N[: len(s)] = s**2
    mc = np.sqrt((eN / cL) ** np.mean(N1 / (s2N + N1)))
    eN = xN * eN / mc
    w = np.linalg.solve(Y @ Y.T + N1 * np.eye(N), Y @ dy)
    Hw = Y @ Y.T / N1 + np.eye(N) - 2 * np.outer(w, w) / (eN + w @ w)
    lam, V = np.linalg.eigh(Hw)
    T = (V * lam**-0.5) @ V.T
    return mu + w @ A + T @ A


def test_enkf_n_hessian_correction_matches_dapper_formula():
    E, y, obs = _case(10, 12, 12, 1.0, 2.0, seed=4)
    run = jax.jit(lambda E, y: enkf_n_analysis(E, y, obs, hessian_correction=True))
    Ea, info = run(E, y)
    ref = _dapper_hess_analysis(np.asarray(E), np.asarray(y), 0.8, 12, float(info.inflation))
    np.testing.assert_allclose(Ea, ref, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(Ea.mean(0), ref.mean(0), atol=1e-10)


def test_enkf_n_reports_non_convergence():
    E, y, obs = _case(10, 12, 12, 0.3, 3.0)
    _, info = jax.jit(lambda E, y: enkf_n_analysis(E, y, obs, max_steps=1))(E, y)
    assert int(info.status) == Status.MAX_STEPS


def test_enkf_n_bad_inputs():
    E, y, obs = _case(6, 4, 4, 1.0, 1.0)
    for kw, word in [
        ({"xN": 0.0}, "xN"),
        ({"xN": float("inf")}, "xN"),
        ({"g": -1}, "g "),
        ({"g": 1.5}, "g "),
        ({"hessian_correction": 1}, "hessian_correction"),
        ({"max_steps": 0}, "max_steps"),
    ]:
        with pytest.raises(ValueError, match=word):
            enkf_n(**kw)
        with pytest.raises(ValueError, match=word):
            enkf_n_analysis(E, y, obs, **kw)
    with pytest.raises(ValueError, match="y must have length 4"):
        enkf_n_analysis(E, y[:3], obs)
    with pytest.raises(ValueError, match="at least 2 members"):
        enkf_n_analysis(E[:1], y, obs)


def test_adaptive_inflation_converges_to_the_true_factor():
    """Forecast errors drawn with covariance λ² X Xᵀ (X the ensemble's scaled anomalies): the
    time-smoothed estimate converges to λ (within its own posterior standard deviation)."""
    N, n, K = 8, 10, 800
    obs = observation_model(identity(n), obs_std=1.0)
    method = with_adaptive_inflation(etkf(), memory=1e9, min_inflation=0.5)

    def run(lam_true, key):
        def cycle(state, key):
            ke, kz, ko = jax.random.split(key, 3)
            E = 0.8 * jax.random.normal(ke, (N, n))
            X = (E - E.mean(0)) / jnp.sqrt(N - 1.0)
            truth = E.mean(0) + lam_true * (jax.random.normal(kz, (N,)) @ X)
            y = truth + jax.random.normal(ko, (n,))
            y = y.at[3].set(jnp.nan)  # a missing value each time
            state, info = method.step(key, state._replace(ensemble=E), y, obs)
            return state, info.inflation

        return jax.lax.scan(cycle, method.init(jnp.zeros((N, n))), jax.random.split(key, K))

    lams = jnp.array([0.8, 1.0, 1.5])
    final, infl = jax.jit(jax.vmap(run))(lams, jax.random.split(jax.random.key(7), 3))
    theta, prec = np.asarray(final.estimate.theta), np.asarray(final.estimate.precision)
    sd = 1.0 / np.sqrt(prec)
    assert np.all(sd < 0.1)
    assert np.all(np.abs(theta - np.asarray(lams) ** 2) < 4 * sd), (theta, sd)
    np.testing.assert_allclose(infl[:, -1], np.sqrt(theta), rtol=1e-12)


def test_adaptive_wrapper_state_composition_and_errors():
    model = Lorenz96(n=6, dt=0.05)
    obs = observation_model(identity(6), obs_std=1.0)
    E = model.x0 + jax.random.normal(jax.random.key(0), (8, 6))
    y = jnp.arange(6.0)
    # composed with rotation, around a particle filter: its log-weights are forwarded
    m = with_rotation(with_adaptive_inflation(particle_filter(reg=0.1)))
    assert isinstance(m, Method)
    s = m.init(E, obs)
    assert isinstance(s, AdaptiveInflationState) and s.inner.ensemble is None
    s2, info = jax.jit(m.step)(jax.random.key(1), s, y, obs)
    assert s2.ensemble.shape == (8, 6) and float(info.inflation) >= 1.0
    assert s2.log_weights is s2.inner.log_weights
    np.testing.assert_allclose(
        ensemble_mean(s2), jax.nn.softmax(s2.inner.log_weights) @ s2.ensemble, rtol=1e-12
    )
    # nothing observed: no inflation, the estimate's mean is kept
    m = with_adaptive_inflation(etkf(), initial=1.2)
    s2, info = jax.jit(m.step)(jax.random.key(1), m.init(E), jnp.full(6, jnp.nan), obs)
    assert float(info.inflation) == 1.0 and int(info.n_obs) == 0
    np.testing.assert_allclose(s2.ensemble, E, atol=1e-12)
    assert float(s2.estimate.theta) == pytest.approx(1.44)
    # bad options and methods
    for kw, word in [
        ({"memory": 0.5}, "memory"),
        ({"memory": -1.0}, "memory"),
        ({"min_inflation": 0.0}, "min_inflation"),
        ({"max_inflation": 1.0}, "max_inflation"),
        ({"initial": 0.9}, "initial"),
        ({"initial_std": float("nan")}, "initial_std"),
    ]:
        with pytest.raises(ValueError, match=word):
            with_adaptive_inflation(etkf(), **kw)
    with pytest.raises(TypeError, match="Method"):
        with_adaptive_inflation(lambda x: x)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="window method"):
        with_adaptive_inflation(ienks(model, lag=1))
    m = with_adaptive_inflation(enks(lag=2))
    with pytest.raises(ValueError, match="smoother"):
        m.step(jax.random.key(0), m.init(E), y, obs)
