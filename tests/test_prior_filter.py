"""The learned-prior (diffusion) filter: exact Kalman analysis for a Gaussian prior, missing
observations, protocol conformance through the driver, option checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxda.assimilate import assimilate
from jaxda.diffusion import (
    GaussianResidual,
    diffusion_filter,
    gaussian_score,
    score_fn_from_model,
    vp_linear,
)
from jaxda.models import Lorenz96
from jaxda.observations import identity, observation_model, observation_series, subset

n = 5


def _problem(N=3000):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(n, n))
    C = A @ A.T / n + 0.3 * np.eye(n)
    d = np.sqrt(np.diag(C))
    C = C / np.outer(d, d)  # a correlation matrix: z has unit variance
    E = rng.normal(size=(N, n)) * np.array([0.5, 1.0, 2.0, 1.0, 0.7]) + np.arange(n)
    obs = observation_model(subset([0, 2, 3], n=n), obs_std=jnp.array([0.5, 1.0, 0.8]))
    return jnp.asarray(C), jnp.asarray(E), obs


def _kalman(E, C, rows, R, y):
    """Exact analysis mean and covariance for the prior N(mean(E), D C D), D = diag(spread)."""
    E = np.asarray(E)
    m, s = E.mean(0), E.std(0, ddof=1)
    B = np.diag(s) @ np.asarray(C) @ np.diag(s)
    H = np.eye(n)[rows]
    K = np.linalg.solve(H @ B @ H.T + R, H @ B).T
    return m + K @ (y - H @ m), B - K @ H @ B


def test_gaussian_prior_gives_the_kalman_analysis_and_missing_obs_drop_out():
    C, E, obs = _problem()
    y = jnp.array([1.0, jnp.nan, 4.5])  # the middle observation is missing
    method = diffusion_filter(gaussian_score(jnp.zeros(n), C), sampler="dpmpp2m", n_steps=20)
    state, info = jax.jit(method.step)(jax.random.key(1), method.init(E), y, obs)
    Ea = np.asarray(state.ensemble)
    # the Kalman analysis with only the present observations (variables 0 and 3)
    ma, Pa = _kalman(E, C, [0, 3], np.diag([0.5, 0.8]) ** 2, np.array([1.0, 4.5]))
    N = Ea.shape[0]
    sd = np.sqrt(np.diag(Pa))
    np.testing.assert_array_less(np.abs(Ea.mean(0) - ma) / (sd / np.sqrt(N)), 4.5)
    # sample covariance vs exact: relative s.e. of a variance ≈ sqrt(2/N) ≈ 0.026
    np.testing.assert_allclose(np.cov(Ea.T), Pa, atol=0.12 * np.outer(sd, sd).max(), rtol=0.1)
    assert int(info.n_obs) == 2 and int(info.status) == 0


def test_product_prior_with_gaussian_fit_is_the_localized_kalman_analysis():
    """p_θ = N(0, C_θ) cancels its own fit: the prior is N(0, ρ∘Ĉf) scaled by the spread,
    inflated by ``inflation``."""
    C, E, obs = _problem()
    i = np.arange(n)
    rho = np.exp(-0.5 * (i[:, None] - i[None, :]) ** 2 / 1.5**2)
    y = jnp.array([1.0, 2.0, 4.5])
    infl = 1.2
    method = diffusion_filter(
        gaussian_score(jnp.zeros(n), C), sampler="dpmpp2m", n_steps=20, inflation=infl,
        localization=jnp.asarray(rho), prior_cov=C,
    )  # fmt: skip
    state, _ = jax.jit(method.step)(jax.random.key(3), method.init(E), y, obs)
    Ea = np.asarray(state.ensemble)
    corr = np.corrcoef(np.asarray(E).T)
    ma, Pa = _kalman(E, infl**2 * rho * corr, [0, 2, 3], np.diag([0.5, 1.0, 0.8]) ** 2, y)
    sd = np.sqrt(np.diag(Pa))
    np.testing.assert_array_less(np.abs(Ea.mean(0) - ma) / (sd / np.sqrt(len(Ea))), 4.5)
    np.testing.assert_allclose(np.cov(Ea.T), Pa, atol=0.12 * np.outer(sd, sd).max(), rtol=0.1)


def test_full_noise_whitening_matches_kalman():
    C, E, _ = _problem(N=2000)
    R = np.array([[1.0, 0.5], [0.5, 2.0]])
    obs = observation_model(subset([1, 4], n=n), obs_cov=jnp.asarray(R))
    y = jnp.array([2.0, 3.0])
    method = diffusion_filter(gaussian_score(jnp.zeros(n), C), sampler="dpmpp2m", n_steps=20)
    state, _ = jax.jit(method.step)(jax.random.key(2), method.init(E), y, obs)
    ma, Pa = _kalman(E, C, [1, 4], R, np.array([2.0, 3.0]))
    sd = np.sqrt(np.diag(Pa))
    Ea = np.asarray(state.ensemble)
    np.testing.assert_array_less(np.abs(Ea.mean(0) - ma) / (sd / np.sqrt(len(Ea))), 4.5)


def test_nothing_observed_leaves_the_forecast():
    C, E, obs = _problem(N=10)
    method = diffusion_filter(gaussian_score(jnp.zeros(n), C), n_steps=3)
    state, info = method.step(jax.random.key(0), method.init(E), jnp.full(3, jnp.nan), obs)
    np.testing.assert_array_equal(state.ensemble, E)
    assert int(info.n_obs) == 0


def test_driver_runs_it_under_jit_vmap_and_is_reproducible():
    model = Lorenz96(n=8, dt=0.05)
    rng = np.random.default_rng(1)
    y = rng.normal(0.0, 2.0, (6, 4))
    y[2, 1] = np.nan
    y[4, :] = np.nan
    series = observation_series(
        jnp.asarray(y), observation_model(subset([0, 2, 4, 6], n=8), obs_std=1.0), n_steps=1
    )
    E0 = model.x0 + 0.5 * jax.random.normal(jax.random.key(0), (10, 8))
    method = diffusion_filter(
        gaussian_score(jnp.zeros(8), jnp.eye(8)), sampler="ddim", eta=1.0, n_steps=4
    )
    run = jax.jit(lambda k: assimilate(k, method, model, series, E0))
    final, hist = run(jax.random.key(1))
    final2, _ = run(jax.random.key(1))
    np.testing.assert_array_equal(final.ensemble, final2.ensemble)
    np.testing.assert_array_equal(hist.info.n_obs, [4, 4, 3, 4, 0, 4])
    assert np.all(np.asarray(hist.info.status) == 0)
    finals, _ = jax.vmap(lambda k: assimilate(k, method, model, series, E0))(
        jax.random.split(jax.random.key(3), 2)
    )
    assert finals.ensemble.shape == (2, 10, 8) and np.all(np.isfinite(finals.ensemble))


def test_sdedit_start_keeps_members_near_their_forecast():
    """``t_start`` small: each member moves little from its own forecast."""
    C, E, _ = _problem(N=50)
    obs = observation_model(identity(n), obs_std=1.0)
    y = jnp.asarray(np.asarray(E).mean(0))
    score = gaussian_score(jnp.zeros(n), C)
    near = diffusion_filter(score, t_start=0.05, n_steps=5, sampler="dpmpp2m")
    far = diffusion_filter(score, t_start=1.0, n_steps=5, sampler="dpmpp2m")
    d_near = np.abs(near.step(jax.random.key(0), near.init(E), y, obs)[0].ensemble - E).mean()
    d_far = np.abs(far.step(jax.random.key(0), far.init(E), y, obs)[0].ensemble - E).mean()
    assert d_near < 0.5 * d_far


@pytest.mark.parametrize("infl", [1.0, 1.3])
def test_transport_pairing_is_the_exact_kalman_analysis_member_by_member(infl):
    """``pairing="transport"`` with the prior ``N(0, Ĉf)`` of the forecast members themselves
    (``localization`` = ones, ``p_θ = N(0, I)`` cancelled by ``prior_cov = I``): the composite
    of the prior's and the posterior's probability-flow maps is affine and carries the
    forecast ensemble's sample mean and covariance to the exact Kalman analysis of them (a
    deterministic square-root filter), up to the ODE discretization and the terminal
    ``μ(1) ≈ 0.0066`` (an ``O(μ(1))`` mean bias, shared with i.i.d. draws). Each member is a
    function of its own forecast member: no key dependence, permutation equivariant.
    ``inflation`` λ: the analysis of the inflated forecast ``x̄ + λ(x_i - x̄)``."""
    rng = np.random.default_rng(5)
    N = 12  # > n: a full-rank sample covariance; 12 i.i.d. draws could not match it
    E = jnp.asarray(rng.normal(size=(N, n)) @ rng.normal(size=(n, n)) / 2 + np.arange(n))
    obs = observation_model(subset([0, 2, 3], n=n), obs_std=jnp.array([0.5, 1.0, 0.8]))
    y = jnp.array([1.0, jnp.nan, 4.5])  # the middle observation is missing
    method = diffusion_filter(
        gaussian_score(jnp.zeros(n), jnp.eye(n)), pairing="transport", n_steps=20, inflation=infl,
        localization=jnp.ones((n, n)), prior_cov=jnp.eye(n),
    )  # fmt: skip
    step = jax.jit(method.step)
    Ea = np.asarray(step(jax.random.key(1), method.init(E), y, obs)[0].ensemble)
    # dense conditioning of N(mean(E), cov(E)) on the present observations (variables 0, 3)
    Ef = np.asarray(E)
    B, m = infl**2 * np.cov(Ef.T), Ef.mean(0)
    H, R = np.eye(n)[[0, 3]], np.diag([0.5, 0.8]) ** 2
    K = np.linalg.solve(H @ B @ H.T + R, H @ B).T
    ma, Pa = m + K @ (np.array([1.0, 4.5]) - H @ m), B - K @ H @ B
    sd = np.sqrt(np.diag(Pa))
    np.testing.assert_array_less(np.abs(Ea.mean(0) - ma) / sd, 0.02)
    np.testing.assert_allclose(np.cov(Ea.T), Pa, atol=5e-3 * np.abs(Pa).max())
    # deterministic: another key gives the same members; permuting the forecast members
    # permutes the analysis members
    Eb = np.asarray(step(jax.random.key(7), method.init(E), y, obs)[0].ensemble)
    np.testing.assert_array_equal(Ea, Eb)
    perm = rng.permutation(N)
    Ep = np.asarray(step(jax.random.key(2), method.init(E[perm]), y, obs)[0].ensemble)
    np.testing.assert_allclose(Ep, Ea[perm], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prior="climate"), "prior"),
        (dict(sampler="euler"), "sampler"),
        (dict(guidance="foo"), "guidance"),
        (dict(n_steps=0), "n_steps"),
        (dict(eta=1.5), "eta"),
        (dict(t_start=0.0), "t_start"),
        (dict(prior="state"), "scale"),
        (dict(scale=-1.0), "scale"),
        (dict(cg_steps=0), "cg_steps"),
        (dict(inflation=0.0), "inflation"),
        (dict(localization=jnp.eye(3)), "prior_cov"),
        (dict(localization=jnp.eye(3), prior_cov=jnp.eye(2)), "same shape"),
        (dict(pairing="nearest"), "pairing"),
        (dict(pairing="transport", sampler="ddim", eta=0.5), "deterministic sampler"),
    ],
)
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        diffusion_filter(lambda z, t: -z, vp_linear(), **kwargs)


class _Zero(nnx.Module):
    def __call__(self, x, t):
        return jnp.zeros_like(x)


def test_gaussian_residual_with_zero_correction_is_the_gaussian_score():
    C, _, _ = _problem(N=2)
    sde = vp_linear()
    score = score_fn_from_model(GaussianResidual(_Zero(), C, sde), sde)
    x = jnp.linspace(-1.0, 1.0, n)
    for t in jnp.array([0.01, 0.3, 0.9]):
        np.testing.assert_allclose(
            score(x, t), gaussian_score(jnp.zeros(n), C, sde)(x, t), rtol=1e-8
        )
