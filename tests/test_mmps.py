"""MMPS guidance against the exact Gaussian case.

Prior ``x_0 ~ N(m, C)``, ``y = H x_0 + η``, ``η ~ N(0, Σ_y)``. With ``x_t = μ x_0 + σ ε`` the
law of ``x_0 | x_t`` is Gaussian with covariance ``V_t = (C^{-1} + μ²/σ² I)^{-1}`` (independent of
``x_t``) and mean ``E[x_0|x_t] = V_t (C^{-1} m + μ/σ² x_t)``, so
``p(y | x_t) = N(y; H E[x_0|x_t], Σ_y + H V_t Hᵀ)`` exactly. Its gradient in ``x_t`` is written
here in closed form from these dense matrices (no autodiff, no Tweedie); MMPS with ``m`` CG
iterations must match it to round-off. Sampling with the guided score must then reproduce the
exact conditional Gaussian ``N(m_a, C_a)``, and do it better than DPS.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.diffusion import guided_score, mmps_score, posterior_score, sample, vp_linear

D = 5
_rng = np.random.default_rng(0)
_L = _rng.normal(size=(D, D)) / np.sqrt(D)
C = jnp.asarray(_L @ _L.T + 0.3 * np.eye(D))
M = jnp.asarray(_rng.normal(size=D))
H = jnp.asarray(_rng.normal(size=(3, D)))


def prior_score(sde):
    def score(x, t):
        mu, s = sde.mean_coef(t), sde.std(t)
        return -jnp.linalg.solve(mu**2 * C + s**2 * jnp.eye(D), x - mu * M)

    return score


def exact_lik_score(sde, Hm, y, R, x, t):
    """∇_x log N(y; Hm E[x_0|x], R + Hm V_t Hmᵀ), from the dense Gaussian formulas."""
    mu, s = float(sde.mean_coef(t)), float(sde.std(jnp.asarray(t)))
    Ci = np.linalg.inv(np.asarray(C))
    V = np.linalg.inv(Ci + (mu / s) ** 2 * np.eye(D))
    mean = V @ (Ci @ np.asarray(M) + mu / s**2 * np.asarray(x))
    dmean = V * mu / s**2  # ∂E[x_0|x_t]/∂x_t
    S = np.asarray(R) + Hm @ V @ Hm.T
    return dmean.T @ Hm.T @ np.linalg.solve(S, np.asarray(y) - Hm @ mean)


def exact_posterior(Hm, R, y):
    S = Hm @ C @ Hm.T + R
    K = jnp.linalg.solve(S, Hm @ C).T
    return M + K @ (y - Hm @ M), C - K @ Hm @ C


@pytest.mark.parametrize("noise", ["diag", "full", "missing"])
def test_mmps_likelihood_score_is_exact_for_gaussian_prior(noise):
    sde = vp_linear()
    prior = prior_score(sde)
    y = jnp.array([0.8, -1.2, 0.4])
    std = jnp.array([0.05, 0.2, 0.5])
    if noise == "full":
        R = 0.05 * jnp.array([[1.0, 0.5, 0.1], [0.5, 2.0, 0.3], [0.1, 0.3, 1.5]])
        post = mmps_score(prior, sde, lambda x: H @ x, y, obs_cov=R, cg_steps=3)
        Hm, yr, Rr = np.asarray(H), y, R
    elif noise == "diag":
        post = mmps_score(prior, sde, lambda x: H @ x, y, std, cg_steps=3)
        Hm, yr, Rr = np.asarray(H), y, jnp.diag(std**2)
    else:  # NaN = missing: must equal the problem with that observation removed
        y_nan = y.at[1].set(jnp.nan)
        post = mmps_score(prior, sde, lambda x: H @ x, y_nan, std, cg_steps=3)
        keep = np.array([0, 2])
        Hm, yr, Rr = np.asarray(H)[keep], y[keep], jnp.diag(std[keep] ** 2)
    fn = jax.jit(post)
    keys = jax.random.split(jax.random.key(1), 6)
    for k, t in zip(keys, (0.002, 0.05, 0.2, 0.5, 0.8, 1.0), strict=True):
        x = jax.random.normal(k, (D,)) * 1.5
        got = np.asarray(fn(x, t) - prior(x, t))
        ref = exact_lik_score(sde, Hm, yr, Rr, x, t)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())


def test_mmps_nonlinear_operator_is_linearised_at_the_denoised_state():
    """For a nonlinear ``A`` the guidance is ``Jᵀ Aᵀ (Σ + A V Aᵀ)^{-1}(y - A(x̂_0))`` with
    ``A = ∂A/∂x_0`` at ``x̂_0``: checked against dense Jacobians."""
    sde = vp_linear()
    prior = prior_score(sde)

    def obs(x):
        return jnp.array([jnp.sin(x[0]) + x[1] ** 2, x[2] * x[3]])

    y, std = jnp.array([0.3, -0.1]), 0.1
    post = mmps_score(prior, sde, obs, y, std, cg_steps=2)
    x, t = jnp.linspace(-1.0, 1.0, D), jnp.asarray(0.3)
    mu, s = sde.mean_coef(t), sde.std(jnp.asarray(t))
    x0 = sde.tweedie(x, prior(x, t), t)
    J = jax.jacfwd(lambda z: sde.tweedie(z, prior(z, t), t))(x)
    A = jax.jacfwd(obs)(x0)
    S = std**2 * jnp.eye(2) + A @ (s**2 / mu * J) @ A.T
    ref = J.T @ A.T @ jnp.linalg.solve(S, y - obs(x0))
    np.testing.assert_allclose(post(x, t) - prior(x, t), ref, rtol=1e-8, atol=1e-12)


def test_mmps_is_vmappable_and_cg_steps_matter():
    sde = vp_linear()
    prior = prior_score(sde)
    y = jnp.array([0.8, -1.2, 0.4])
    exact = mmps_score(prior, sde, lambda x: H @ x, y, 0.05, cg_steps=3)
    xs = jax.random.normal(jax.random.key(2), (4, D))
    t = jnp.asarray(0.6)
    batched = jax.vmap(exact, in_axes=(0, None))(xs, t)
    np.testing.assert_allclose(batched[2], exact(xs[2], t), rtol=1e-12)
    one = mmps_score(prior, sde, lambda x: H @ x, y, 0.05, cg_steps=1)
    ref = exact_lik_score(sde, np.asarray(H), y, 0.05**2 * jnp.eye(3), xs[0], t)
    assert np.linalg.norm(one(xs[0], t) - prior(xs[0], t) - ref) > 1e-3 * np.linalg.norm(ref)


def _moment_errors(X, mean, cov):
    return (
        float(np.linalg.norm(X.mean(0) - mean) / np.linalg.norm(mean)),
        float(np.linalg.norm(np.cov(X.T) - cov) / np.linalg.norm(cov)),
    )


def test_mmps_sampling_reproduces_exact_posterior_better_than_dps():
    sde = vp_linear()
    prior = prior_score(sde)
    std = 0.1
    y = jnp.array([0.8, -1.2, 0.4])
    R = std**2 * jnp.eye(3)
    n = 1000
    ma, Ca = exact_posterior(H, R, y)
    mu, s = sde.mean_coef(sde.t_min), sde.std(jnp.asarray(sde.t_min))
    mean, cov = np.asarray(mu * ma), np.asarray(mu**2 * Ca + s**2 * jnp.eye(D))

    def draw(score):
        run = jax.jit(lambda k: sample(k, score, sde, (D,), n, method="ode", n_steps=60).x)
        return np.asarray(run(jax.random.key(0)))

    X = draw(mmps_score(prior, sde, lambda x: H @ x, y, std, cg_steps=3))
    se = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(X.mean(0) - mean), 4.5 * se)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(X.T) - cov), 4.5 * se_cov)
    err_mmps = _moment_errors(X, mean, cov)
    err_dps = _moment_errors(
        draw(posterior_score(prior, sde, lambda x: H @ x, y, std, gamma=0.0)), mean, cov
    )
    print(f"relative errors (mean, cov): MMPS {err_mmps}, DPS {err_dps}")
    assert err_mmps[0] < 0.5 * err_dps[0] and err_mmps[1] < 0.5 * err_dps[1]


def test_mmps_validation():
    sde = vp_linear()
    f = lambda x, t: -x  # noqa: E731
    obs = lambda x: x[:2]  # noqa: E731
    with pytest.raises(ValueError, match="exactly one"):
        mmps_score(f, sde, obs, jnp.ones(2))
    with pytest.raises(ValueError, match="exactly one"):
        mmps_score(f, sde, obs, jnp.ones(2), 0.1, obs_cov=jnp.eye(2))
    with pytest.raises(ValueError, match="obs_std"):
        mmps_score(f, sde, obs, jnp.ones(2), -1.0)
    with pytest.raises(ValueError, match="obs_std"):
        mmps_score(f, sde, obs, jnp.ones(2), jnp.ones(3))
    with pytest.raises(ValueError, match="obs_cov"):
        mmps_score(f, sde, obs, jnp.ones(2), obs_cov=jnp.eye(3))
    with pytest.raises(ValueError, match="positive definite"):
        mmps_score(f, sde, obs, jnp.ones(2), obs_cov=-jnp.eye(2))
    with pytest.raises(ValueError, match="symmetric"):
        mmps_score(f, sde, obs, jnp.ones(2), obs_cov=jnp.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="1-D"):
        mmps_score(f, sde, obs, jnp.ones((2, 2)), 0.1)
    with pytest.raises(ValueError, match="inf"):
        mmps_score(f, sde, obs, jnp.array([1.0, jnp.inf]), 0.1)
    with pytest.raises(ValueError, match="cg_steps"):
        mmps_score(f, sde, obs, jnp.ones(2), 0.1, cg_steps=0)
    with pytest.raises(ValueError, match="obs_fn returns shape"):
        mmps_score(f, sde, obs, jnp.ones(3), 0.1)(jnp.zeros(4), jnp.asarray(0.5))


def test_guided_score_flag_selects_the_likelihood_approximation():
    sde = vp_linear()
    prior = prior_score(sde)
    y, std = jnp.array([0.8, -1.2, 0.4]), 0.2
    x, t = jnp.linspace(-1.0, 1.0, D), jnp.asarray(0.4)
    obs = lambda z: H @ z  # noqa: E731
    R = std**2 * jnp.eye(3)
    np.testing.assert_allclose(
        guided_score(prior, sde, obs, y, std, guidance="mmps")(x, t),
        mmps_score(prior, sde, obs, y, obs_cov=R)(x, t),
        rtol=1e-10,
    )
    for name, gamma in (("dps", 0.0), ("sda", 0.3)):
        ref = posterior_score(prior, sde, obs, y, std, gamma=gamma)(x, t)
        got = guided_score(prior, sde, obs, y, std, guidance=name, gamma=gamma)(x, t)
        full = guided_score(prior, sde, obs, y, obs_cov=R, guidance=name, gamma=gamma)(x, t)
        np.testing.assert_allclose(got, ref, rtol=1e-10)
        np.testing.assert_allclose(full, ref, rtol=1e-10)
    with pytest.raises(ValueError, match="guidance"):
        guided_score(prior, sde, obs, y, std, guidance="foo")
