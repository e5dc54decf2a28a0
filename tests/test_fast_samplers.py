"""Few-step samplers (DDIM, EDM Heun, DPM-Solver++(2M)) on a Gaussian prior with its exact score.

For ``x_0 ~ N(m, C)`` the diffused marginal is ``N(μ m, μ² C + σ² I)``; with a linear observation
``y = H x + η`` and the exact Gaussian ``p(y | x_t)`` in :func:`posterior_score`, the guided
score is the exact score of the diffused conditional Gaussian ``N(μ m_a, μ² C_a + σ² I)``.

The deterministic samplers are affine maps ``x_T ↦ A x_T + b`` for such (linear) scores, so the
law of their output is computed exactly, with no Monte-Carlo noise: mean ``f(E x_T)``,
covariance ``A Cov(x_T) Aᵀ`` with ``A = jax.jacfwd(f)``. Their errors against the exact
Gaussian are pure discretisation errors; the tolerances are ~1.5× the errors measured on this
problem (benchmarks/bench_fast_samplers.py) and the convergence-order checks would fail for a
wrong update. The stochastic variants are checked by Monte-Carlo (mean within 4.5 standard
errors, covariance within 4.5 standard errors plus the measured discretisation bias).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.core import Status
from jaxda.diffusion import (
    ddim,
    dpmpp_2m,
    edm_heun,
    posterior_score,
    sample,
    ve,
    vp_linear,
)

M = jnp.array([1.0, -0.5, 0.3])
C = jnp.array([[1.0, 0.5, 0.1], [0.5, 0.8, 0.2], [0.1, 0.2, 0.6]])
H = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
Y = jnp.array([2.0, 0.2])
SIG = 0.05  # sharp observation: posterior variances ~1e-3, a stiff guided score


def prior_score(sde):
    def score(x, t):
        mu, s = sde.mean_coef(t), sde.std(t)
        return -jnp.linalg.solve(mu**2 * C + s**2 * jnp.eye(3), x - mu * M)

    return score


def guided_score(sde):
    def obs_cov(t):  # exact p(y | x_t) covariance for the Gaussian prior
        mu, s = sde.mean_coef(t), sde.std(t)
        v = jnp.linalg.inv(jnp.linalg.inv(C) + (mu / s) ** 2 * jnp.eye(3))
        return SIG**2 * jnp.eye(2) + H @ v @ H.T

    return posterior_score(prior_score(sde), sde, lambda x: H @ x, Y, SIG, obs_cov_fn=obs_cov)


def exact_posterior():
    gain = jnp.linalg.solve(H @ C @ H.T + SIG**2 * jnp.eye(2), H @ C).T
    return M + gain @ (Y - H @ M), C - gain @ H @ C


def marginal(sde, t, m, c):
    mu, s = sde.mean_coef(t), sde.std(jnp.asarray(t))
    return mu * m, mu**2 * c + s**2 * jnp.eye(3)


def exact_errors(f, sde, m, c):
    """Relative errors (mean, Frobenius cov) of the affine sampler ``f`` started from the exact
    terminal marginal, against the exact marginal at ``t_min``."""
    m1, c1 = marginal(sde, 1.0, m, c)
    me, ce = marginal(sde, sde.t_min, m, c)
    out = jax.jit(jax.vmap(f))(jnp.concatenate([m1[None], m1 + jnp.eye(3)]))
    mean, jac = out[0], (out[1:] - out[0]).T  # f is affine: exact columns of its Jacobian
    cov = jac @ c1 @ jac.T
    return (
        float(jnp.linalg.norm(mean - me) / jnp.linalg.norm(me)),
        float(jnp.linalg.norm(cov - ce) / jnp.linalg.norm(ce)),
    )


def samplers(score, sde):
    key = jax.random.key(0)
    return {
        "ddim": lambda n: lambda x: ddim(key, score, sde, x, n_steps=n).x,
        "edm": lambda n: lambda x: edm_heun(key, score, sde, x, n_steps=n).x,
        "dpmpp2m": lambda n: lambda x: dpmpp_2m(score, sde, x, n_steps=n).x,
    }


# covariance tolerance at 20 steps, and the error ratio from 20 to 40 steps (order 1 → 2, 2 → 4)
TOL20 = {"ddim": 0.3, "edm": 0.12, "dpmpp2m": 0.04}
ORDER = {"ddim": 1.6, "edm": 3.0, "dpmpp2m": 3.0}


@pytest.mark.parametrize("target", ["prior", "posterior"])
def test_deterministic_samplers_exact_law(target):
    """VP SDE, exact output law at 20 and 40 steps vs the exact (conditional) Gaussian."""
    sde = vp_linear()
    if target == "prior":
        score, (m, c) = prior_score(sde), (M, C)
    else:
        score, (m, c) = guided_score(sde), exact_posterior()
    for name, make in samplers(score, sde).items():
        e20, e40 = exact_errors(make(20), sde, m, c), exact_errors(make(40), sde, m, c)
        print(name, target, e20, e40)
        assert e20[0] < 1e-6 and e40[0] < 1e-6, name  # the mean of a linear flow is exact
        assert e20[1] < TOL20[name], (name, e20)
        assert e40[1] < e20[1] / ORDER[name], (name, e20, e40)


def test_deterministic_samplers_ve_posterior():
    sde = ve()
    ma, ca = exact_posterior()
    for name, make in samplers(guided_score(sde), sde).items():
        err = exact_errors(make(20), sde, ma, ca)
        assert err[0] < 1e-6 and err[1] < TOL20[name], (name, err)


def assert_moments(X, mean, cov, bias, n_sigma=4.5):
    X = np.asarray(X)
    n = X.shape[0]
    np.testing.assert_array_less(np.abs(X.mean(0) - mean), n_sigma * np.sqrt(np.diag(cov) / n))
    se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + np.asarray(cov) ** 2) / n)
    np.testing.assert_array_less(np.abs(np.cov(X.T) - cov), n_sigma * se + bias * np.abs(cov))


@pytest.mark.parametrize(
    ("method", "options", "bias"),
    [
        ("ddim", {"eta": 1.0, "grid": "log_snr", "n_steps": 50}, 0.1),
        ("edm", {"s_churn": 10.0, "n_steps": 40}, 0.1),  # churn at 20 steps: 21 % cov error
        ("dpmpp2m", {"n_steps": 20}, 0.05),
    ],
)
def test_sample_entry_point_posterior(method, options, bias):
    """Stochastic variants (and the sample() dispatch) by Monte-Carlo on the sharp posterior."""
    sde = vp_linear()
    post = guided_score(sde)
    res = jax.jit(lambda k: sample(k, post, sde, (3,), 2000, method=method, **options))(
        jax.random.key(3)
    )
    assert np.all(np.asarray(res.status) == Status.SUCCESS)
    assert np.all(np.asarray(res.n_steps) == options["n_steps"])
    assert_moments(res.x, *marginal(sde, sde.t_min, *exact_posterior()), bias)


def test_fast_samplers_stop_on_nonfinite_state():
    sde = vp_linear()

    def score(x, t):
        return jnp.where(t < 0.5, jnp.nan, -x)

    for method in ("ddim", "edm", "dpmpp2m"):
        res = sample(jax.random.key(0), score, sde, (2,), 2, method=method, n_steps=10)
        assert np.all(np.asarray(res.status) == Status.NONFINITE), method
        assert np.all(np.asarray(res.n_steps) < 10), method
    with pytest.raises(RuntimeError, match="NONFINITE"):
        sample(jax.random.key(0), score, sde, (2,), 2, method="edm", n_steps=10, throw=True)


def test_fast_sampler_validation():
    sde, key, x = vp_linear(), jax.random.key(0), jnp.zeros(2)
    with pytest.raises(ValueError, match="eta"):
        ddim(key, lambda x, t: -x, sde, x, eta=1.5)
    with pytest.raises(ValueError, match="grid"):
        ddim(key, lambda x, t: -x, sde, x, grid="quadratic")
    with pytest.raises(ValueError, match="rho"):
        edm_heun(key, lambda x, t: -x, sde, x, rho=0.0)
    with pytest.raises(ValueError, match="n_steps"):
        dpmpp_2m(lambda x, t: -x, sde, x, n_steps=0)
    with pytest.raises(ValueError, match="signal-to-noise"):
        dpmpp_2m(lambda x, t: -x, sde, x, t_end=0.0)
    # t_end = 0 with a VP SDE: EDM's last step to σ = 0 is an Euler step, returning x̂_0
    res = edm_heun(key, prior_score(sde), sde, jnp.zeros(3), n_steps=10, t_end=0.0)
    assert int(res.status) == Status.SUCCESS and np.all(np.isfinite(np.asarray(res.x)))
