"""Guided posterior sampling against exact Gaussian conditioning, and local-score stitching.

Prior ``x ~ N(m, C)``, observation ``y = H x + η``, ``η ~ N(0, σ_y² I)``. The exact posterior is
``N(m_a, C_a)`` with ``K = C Hᵀ (H C Hᵀ + σ_y² I)^{-1}``. With the exact likelihood of the
diffused state, ``p(y|x_t) = N(H x̂_0(x_t), σ_y² I + H V_t Hᵀ)``, ``V_t = (C^{-1} + μ²/σ²)^{-1}``,
the guided score is the exact posterior score, so the probability-flow ODE must reproduce ``N(m_a, C_a)``
up to Monte-Carlo error. The SDA variance ``σ_y² + γ(σ/μ)²`` is an approximation: it is only
required to land much closer to the posterior than the prior does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.diffusion import local_score, posterior_score, sample, vp_linear

M = jnp.array([1.0, -0.5, 0.3])
C = jnp.array([[1.0, 0.5, 0.1], [0.5, 0.8, 0.2], [0.1, 0.2, 0.6]])
H = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
SIG_Y = 0.3
N = 1500


def prior_score(sde):
    def score(x, t):
        mu, s = sde.mean_coef(t), sde.std(t)
        return -jnp.linalg.solve(mu**2 * C + s**2 * jnp.eye(3), x - mu * M)

    return score


def exact_posterior(y):
    S = H @ C @ H.T + SIG_Y**2 * jnp.eye(2)
    K = jnp.linalg.solve(S, H @ C).T
    return M + K @ (y - H @ M), C - K @ H @ C


def test_exact_diffused_likelihood_gives_exact_posterior():
    sde = vp_linear()
    y = jnp.array([2.0, 0.2])
    Cinv = jnp.linalg.inv(C)

    def obs_cov(t):
        mu, s = sde.mean_coef(t), sde.std(t)
        V = jnp.linalg.inv(Cinv + (mu / s) ** 2 * jnp.eye(3))
        return SIG_Y**2 * jnp.eye(2) + H @ V @ H.T

    post = posterior_score(prior_score(sde), sde, lambda x: H @ x, y, SIG_Y, obs_cov_fn=obs_cov)
    X = np.asarray(
        jax.jit(lambda k: sample(k, post, sde, (3,), N, method="ode", n_steps=60).x)(
            jax.random.key(0)
        )
    )
    ma, Ca = exact_posterior(y)
    # samples are at t_min: N(μ m_a, μ² C_a + σ² I)
    mu, s = sde.mean_coef(sde.t_min), sde.std(jnp.asarray(sde.t_min))
    mean, cov = np.asarray(mu * ma), np.asarray(mu**2 * Ca + s**2 * jnp.eye(3))
    se = np.sqrt(np.diag(cov) / N)
    np.testing.assert_array_less(np.abs(X.mean(0) - mean), 4.5 * se)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / N)
    np.testing.assert_array_less(np.abs(np.cov(X.T) - cov), 4.5 * se_cov)


def test_sda_variance_approximation_is_close_to_posterior():
    sde = vp_linear()
    y = jnp.array([2.0, 0.2])
    post = posterior_score(prior_score(sde), sde, lambda x: H @ x, y, SIG_Y, gamma=1.0)
    X = np.asarray(
        jax.jit(lambda k: sample(k, post, sde, (3,), 600, method="pc", n_steps=200).x)(
            jax.random.key(1)
        )
    )
    ma, _ = exact_posterior(y)
    shift = np.linalg.norm(ma - M)
    assert np.linalg.norm(X.mean(0) - ma) < 0.2 * shift


def test_likelihood_score_matches_finite_differences():
    """The guidance term is the gradient of log N(y | H x̂_0(x), Σ) through Tweedie's formula."""
    sde = vp_linear()
    y = jnp.array([0.7, -0.4])
    prior = prior_score(sde)
    post = posterior_score(prior, sde, lambda x: H @ x, y, SIG_Y, gamma=0.5)
    x, t = jnp.array([0.3, -0.2, 0.9]), 0.4

    def loglik(x):
        x0 = sde.tweedie(x, prior(x, t), t)
        var = SIG_Y**2 + 0.5 * (sde.std(jnp.asarray(t)) / sde.mean_coef(t)) ** 2
        return -0.5 * jnp.sum((y - H @ x0) ** 2) / var

    eps = 1e-6
    fd = jnp.array([(loglik(x + eps * e) - loglik(x - eps * e)) / (2 * eps) for e in jnp.eye(3)])
    np.testing.assert_allclose(post(x, t) - prior(x, t), fd, rtol=1e-6, atol=1e-8)


def test_local_score_is_exact_for_markov_chain():
    """For a stationary Gaussian AR(1) chain the joint score of ``x_{1:L}`` depends on each state's
    neighbours only, so stitching window-of-3 scores reproduces the full score exactly."""
    a, q, L, d = 0.8, 0.5, 9, 2
    var = q / (1 - a**2)
    lag = jnp.abs(jnp.arange(L)[:, None] - jnp.arange(L)[None, :])
    cov_full = var * a**lag  # stationary AR(1) covariance, per component

    def gauss_score(cov):
        return lambda x, t: -jnp.linalg.solve(cov, x)  # x: (len, d), independent components

    window = 3
    full = gauss_score(cov_full)
    stitched = local_score(gauss_score(cov_full[:window, :window]), window)
    x = jax.random.normal(jax.random.key(0), (L, d))
    np.testing.assert_allclose(jax.jit(stitched)(x, 0.0), full(x, 0.0), rtol=1e-10, atol=1e-10)
    assert stitched(x[:window], 0.0).shape == (window, d)


def test_guidance_validation():
    sde = vp_linear()
    with pytest.raises(ValueError, match="obs_std"):
        posterior_score(lambda x, t: -x, sde, lambda x: x, jnp.ones(2), -1.0)
    with pytest.raises(ValueError, match="1-D"):
        posterior_score(lambda x, t: -x, sde, lambda x: x, jnp.ones((2, 2)), 1.0)
    with pytest.raises(ValueError, match="odd"):
        local_score(lambda w, t: -w, 4)


@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "ve"])
def test_sde_coefficients_are_consistent(name):
    """f = d log μ/dt and g² = dσ²/dt - 2fσ² (checked with autodiff), and the DDPM chain."""
    from jaxda.diffusion import ddpm_schedule, ve, vp_cosine

    sde = {"vp_linear": vp_linear, "vp_cosine": vp_cosine, "ve": ve}[name]()
    for t in (0.05, 0.5, 0.95):
        t = jnp.asarray(t)
        f = jax.grad(sde.log_mean)(t)
        np.testing.assert_allclose(sde.drift(t), f, rtol=1e-9)
        g2 = jax.grad(lambda s: sde.std(s) ** 2)(t) - 2 * f * sde.std(t) ** 2
        np.testing.assert_allclose(sde.diffusion(t) ** 2, g2, rtol=1e-7)
    if name == "vp_linear":
        # 1 - β_k = exp(-∫ β dt over [t_{k-1}, t_k]); the midpoint rule is exact for linear β
        sch = ddpm_schedule(sde, 1000)
        beta_mid = 0.1 + (sch.t[1:] - 0.5e-3) * (20.0 - 0.1)
        np.testing.assert_allclose(sch.betas[1:], -np.expm1(-beta_mid / 1000), rtol=1e-9)
