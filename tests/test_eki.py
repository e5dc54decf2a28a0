"""Ensemble Kalman inversion family (EKI, Tikhonov EKI, ETKI, data-misfit controller, EKS,
failed members, transforms, ask/tell) against closed-form references: numpy least squares,
the Tikhonov normal equations and dense Gaussian conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.core import Status, bounded
from jaxda.ensemble import (
    eki,
    eki_ask,
    eki_init,
    eki_result,
    eki_tell,
    eks,
    linear_gaussian_posterior,
)

RNG = np.random.default_rng(42)
N_PAR, N_OBS = 3, 8
G = jnp.asarray(RNG.normal(size=(N_OBS, N_PAR)))
THETA = jnp.asarray(RNG.uniform(0.3, 0.8, size=N_OBS))
X_TRUE = jnp.array([0.7, -0.4, 1.1])
Y = G @ X_TRUE + THETA * jnp.asarray(RNG.normal(size=N_OBS))


def linear(x):
    return G @ x


def whitened_lstsq(G, y, theta):
    return np.linalg.lstsq(np.asarray(G / theta[:, None]), np.asarray(y / theta), rcond=None)[0]


def prior_ensemble(key, N, n=N_PAR, mean=0.0, std=1.0):
    return mean + std * jax.random.normal(key, (N, n))


def test_eki_converges_to_least_squares():
    # over-determined linear G, N > n: the ensemble collapses onto the whitened least squares
    # (ETKI: see test_dropped_members_leave_the_update_of_the_others_unchanged)
    # observation 3 is missing (nan): it must drop out of the update
    keep = np.arange(N_OBS) != 3
    ref = whitened_lstsq(G[keep], Y[keep], THETA[keep])
    prior = prior_ensemble(jax.random.key(0), 12)
    dist0 = np.linalg.norm(np.mean(np.asarray(prior), 0) - ref)
    y = Y.at[3].set(jnp.nan)
    out = eki(jax.random.key(1), linear, prior, y, obs_std=THETA, step=100.0, max_steps=30)
    mean = np.mean(np.asarray(out.posterior), axis=0)
    assert int(out.status) == Status.SUCCESS and int(out.n_steps) == 30
    assert np.linalg.norm(mean - ref) < 2e-2 * dist0, (mean, ref)
    assert float(out.time) == pytest.approx(3000.0)
    # the ensemble collapses (covariance ~ 1/t)
    assert float(out.history.spread[-1]) < 0.05 * float(out.history.spread[0])


def test_tikhonov_eki_converges_to_tikhonov_solution():
    # under-determined G (m = 2 < n = 3): only the regulariser makes the solution unique
    Gu = G[:2]
    yu = Y[:2]
    R = np.array([[0.25, 0.1], [0.1, 0.36]])
    m0 = np.array([0.3, -0.2, 0.5])
    C0 = np.array([[1.0, 0.3, 0.0], [0.3, 2.0, -0.4], [0.0, -0.4, 0.5]])
    lam = 0.7
    Ri, C0i = np.linalg.inv(R), np.linalg.inv(C0)
    A = np.asarray(Gu).T @ Ri @ np.asarray(Gu) + lam * C0i
    ref = np.linalg.solve(A, np.asarray(Gu).T @ Ri @ np.asarray(yu) + lam * C0i @ m0)
    prior = prior_ensemble(jax.random.key(2), 12)
    dist0 = np.linalg.norm(np.mean(np.asarray(prior), 0) - ref)
    out = eki(jax.random.key(3), lambda x: Gu @ x, prior, yu, obs_cov=R, step=100.0,
              max_steps=30, tikhonov=lam, prior_mean=m0, prior_cov=C0)  # fmt: skip
    mean = np.mean(np.asarray(out.posterior), axis=0)
    assert np.linalg.norm(mean - ref) < 3e-2 * dist0, (mean, ref)
    assert out.predictions.shape == (12, 2)  # the data part only, not the augmented one
    assert int(out.status) == Status.SUCCESS


def test_dmc_reaches_t1_and_etki_gives_the_kalman_posterior():
    N = 10
    prior = prior_ensemble(jax.random.key(4), N, mean=0.5, std=1.5)
    P = np.asarray(prior)
    mu0, C0 = P.mean(0), np.cov(P.T)
    mean, cov = linear_gaussian_posterior(G, Y, jnp.diag(THETA**2), mu0, C0)
    out = eki(jax.random.key(5), linear, prior, Y, obs_std=THETA, step="dmc", max_steps=40,
              update="transform")  # fmt: skip
    k = int(out.n_steps)
    assert int(out.status) == Status.SUCCESS and 1 < k < 40
    dt = np.asarray(out.history.dt)
    assert np.sum(dt[1 : k + 1]) == pytest.approx(1.0, abs=1e-12)
    assert float(out.time) == 1.0 and float(out.history.time[k]) == 1.0
    assert np.all(np.isnan(dt[k + 1 :])) and np.all(np.diff(out.history.time[: k + 1]) > 0)
    # square-root updates tempered to Σ Δt = 1: exactly the Gaussian posterior of the
    # ensemble's own prior mean and covariance (linear G, N > n)
    post = np.asarray(out.posterior)
    np.testing.assert_allclose(post.mean(0), mean, atol=1e-9)
    np.testing.assert_allclose(np.cov(post.T), cov, atol=1e-9)

    # perturbed EKI with the controller: the posterior within Monte-Carlo error
    N = 200
    prior = prior_ensemble(jax.random.key(6), N)
    P = np.asarray(prior)
    mean, cov = linear_gaussian_posterior(G, Y, jnp.diag(THETA**2), P.mean(0), np.cov(P.T))
    out = eki(jax.random.key(7), linear, prior, Y, obs_std=THETA, max_steps=40)
    post = np.asarray(out.posterior)
    sd = np.sqrt(np.diag(cov))
    assert float(out.time) == 1.0 and int(out.status) == Status.SUCCESS
    assert np.all(np.abs(post.mean(0) - mean) < 4 * sd / np.sqrt(N))
    np.testing.assert_allclose(post.std(0, ddof=1), sd, rtol=0.2)


def test_eks_samples_the_linear_gaussian_posterior():
    n, m, N = 2, 3, 50
    Gs = jnp.array([[1.0, 0.5], [0.2, -1.0], [0.7, 0.7]])
    ys = jnp.array([1.0, -0.5, 0.8])
    theta = 0.5
    m0, C0 = jnp.array([0.2, -0.1]), jnp.array([[1.0, 0.3], [0.3, 0.8]])
    mean, cov = linear_gaussian_posterior(Gs, ys, theta**2 * jnp.eye(m), m0, C0)
    prior = m0 + jax.random.normal(jax.random.key(8), (N, n)) @ jnp.linalg.cholesky(C0).T
    out = eks(jax.random.key(9), lambda x: Gs @ x, prior, ys, obs_std=theta, prior_mean=m0,
              prior_cov=C0, max_steps=500, step=0.05, n_samples=400)  # fmt: skip
    assert int(out.status) == Status.SUCCESS and out.samples.shape == (400, N, n)
    pooled = np.asarray(out.samples).reshape(-1, n)
    sd = np.sqrt(np.diag(np.asarray(cov)))
    np.testing.assert_allclose(pooled.mean(0), mean, atol=0.15 * sd.max())
    np.testing.assert_allclose(np.cov(pooled.T), cov, rtol=0.15, atol=0.1 * sd.max() ** 2)
    assert np.all(np.isfinite(out.history.dt[1:])) and float(out.time) > 5.0


def nan_region(x):
    # fails for x[0] > 3: the data pull the members towards X_TRUE, far from that region
    return jnp.where(x[0] > 3.0, jnp.nan, G @ x)


def test_dropped_members_leave_the_update_of_the_others_unchanged():
    N = 12
    prior = prior_ensemble(jax.random.key(10), N)
    bad = jnp.array([1, 5, 8])
    prior = prior.at[bad, 0].set(5.0)
    # drop, deterministic update (ETKI): exactly the run of the successful members alone
    opts = dict(obs_std=THETA, step=100.0, max_steps=30, update="transform")
    out = eki(jax.random.key(11), nan_region, prior, Y, **opts)
    good = np.setdiff1d(np.arange(N), np.asarray(bad))
    alone = eki(jax.random.key(11), nan_region, prior[good], Y, **opts)
    assert int(out.status) == Status.FAILED_MEMBERS and int(alone.status) == Status.SUCCESS
    np.testing.assert_array_equal(np.flatnonzero(out.failed), np.asarray(bad))
    np.testing.assert_allclose(out.posterior[good], alone.posterior, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(out.posterior[bad], prior[bad])  # frozen at the prior
    assert np.all(np.asarray(out.history.n_failed) == 3)
    # and ETKI has the least-squares fixed point (over-determined G, 9 members > 3 parameters)
    ref = whitened_lstsq(G, Y, THETA)
    dist0 = np.linalg.norm(np.mean(np.asarray(prior[good]), 0) - ref)
    mean = np.mean(np.asarray(alone.posterior), axis=0)
    assert np.linalg.norm(mean - ref) < 1e-3 * dist0, (mean, ref)


def test_transform_keeps_the_posterior_inside_the_bounds():
    # data pull x0 below 0 and x1 above 1; the constraints 0 < x0, -1 < x1 < 1 must hold
    T = bounded(lower=jnp.array([0.0, -1.0]), upper=jnp.array([jnp.inf, 1.0]))
    y = jnp.array([-1.0, 2.0, 1.0])
    prior = jnp.stack([jnp.exp(jax.random.normal(jax.random.key(13), (16,))),
                       jnp.tanh(jax.random.normal(jax.random.key(14), (16,)))], axis=1)  # fmt: skip

    def g(x):  # the model needs x0 >= 0 (sqrt): it sees the constrained values
        return jnp.array([jnp.sqrt(x[0]) ** 2, x[1], x[0] + x[1]])

    out = eki(jax.random.key(15), g, prior, y, obs_std=0.2, step=1.0, max_steps=10,
              transform=T, update="transform")  # fmt: skip
    post = np.asarray(out.posterior)
    assert int(out.status) == Status.SUCCESS
    assert np.all(post[:, 0] > 0.0) and np.all(np.abs(post[:, 1]) < 1.0)
    np.testing.assert_allclose(post, jax.vmap(T.forward)(out.posterior_unconstrained))
    assert np.mean(post[:, 0]) < 0.2 and np.mean(post[:, 1]) > 0.8  # pushed to the bounds
    misfit = np.asarray(out.history.misfit)
    assert misfit[-1] < misfit[0]


def test_resampled_members_and_ask_tell_equals_the_jax_loop():
    N = 12
    bad = jnp.array([2, 7, 9])
    prior = prior_ensemble(jax.random.key(16), N).at[bad, 0].set(4.0)

    def flagged(x, g):
        return x[1] < -2.0

    # perturbed update, controller, failed members redrawn from the Gaussian of the updated
    # successful ones; is_failed flags more members
    opts = dict(obs_std=THETA, max_steps=25, failure="resample", is_failed=flagged)
    ref = eki(jax.random.key(17), nan_region, prior, Y, **opts)
    assert int(ref.status) == Status.FAILED_MEMBERS and float(ref.time) == 1.0
    n_failed = np.asarray(ref.history.n_failed)
    assert n_failed[0] == 3 + int(jnp.sum(prior[:, 1] < -2.0)) and n_failed[1] == 0
    post = np.asarray(ref.posterior)
    assert not np.any(ref.failed) and np.all(np.isfinite(post)) and np.all(post[:, 0] < 3.0)
    # the redrawn members sit with the others (none is left at the outlying prior value)
    assert np.max(np.abs(post - post.mean(0))) < 1.0

    def simulator(X):  # NumPy, outside JAX
        out = X @ np.asarray(G).T
        out[X[:, 0] > 3.0] = np.nan
        return out

    state = eki_init(jax.random.key(17), prior, Y, **opts)
    n_told = 0
    while not state.done:
        state = eki_tell(state, simulator(np.asarray(eki_ask(state))))
        n_told += 1
    out = eki_result(state)
    assert n_told == int(out.n_steps) + 1 and int(out.status) == Status.FAILED_MEMBERS
    np.testing.assert_allclose(out.posterior, ref.posterior, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(out.failed, ref.failed)
    assert int(out.n_steps) == int(ref.n_steps) and float(out.time) == float(ref.time)
    for a, b in zip(out.history, ref.history, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="finished"):
        eki_ask(state)
    fresh = eki_init(jax.random.key(0), prior, Y, obs_std=THETA)
    with pytest.raises(ValueError, match="shape"):
        eki_tell(fresh, np.zeros((N, 3)))
    with pytest.raises(ValueError, match="not finished"):
        eki_result(fresh)


def test_bad_options_raise_eagerly():
    key, prior = jax.random.key(0), prior_ensemble(jax.random.key(1), 6)
    cases = [
        (dict(update="square-root"), "update"),
        (dict(failure="ignore"), "failure"),
        (dict(step="adaptive"), "step"),
        (dict(step=-0.5), "step"),
        (dict(max_steps=0), "max_steps"),
        (dict(tikhonov=1.0), "prior_mean"),
        (dict(tikhonov=-1.0, prior_mean=0.0, prior_cov=1.0), "tikhonov"),
        (dict(prior_mean=jnp.zeros(3)), "tikhonov"),
        (dict(tikhonov=1.0, prior_mean=jnp.zeros(2), prior_cov=1.0), "prior_mean"),
        (dict(tikhonov=1.0, prior_mean=jnp.zeros(3), prior_cov=jnp.ones((2, 2))), "prior_cov"),
        (dict(tikhonov=1.0, prior_mean=jnp.zeros(3), prior_cov=-1.0), "prior_cov"),
        (dict(transform=bounded(lower=0.0)), "domain"),  # the prior has negative entries
        (dict(perturbations=jnp.zeros((5, 6, N_OBS))), "perturbations"),
        (dict(tol=-1.0, step=1.0), "tol"),
        (dict(tol=0.1), "tol"),  # the controller has its own stopping rule
        (dict(tikhonov=1.0, prior_mean=jnp.zeros(3), prior_cov=-jnp.eye(3)), "prior_cov"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            eki(key, linear, prior, Y, obs_std=THETA, **kwargs)
        with pytest.raises(ValueError, match=match):
            eki_init(key, prior, Y, obs_std=THETA, **kwargs)
    with pytest.raises(TypeError, match="transform"):
        eki(key, linear, prior, Y, obs_std=THETA, transform=lambda u: u)
    with pytest.raises(ValueError, match="exactly one"):
        eki(key, linear, prior, Y)
    with pytest.raises(TypeError, match="key"):
        eki(0, linear, prior, Y, obs_std=THETA)
    eks_opts = dict(obs_std=THETA, prior_mean=jnp.zeros(3), prior_cov=1.0)
    for kwargs, match in [
        (dict(n_samples=10, max_steps=5), "n_samples"),
        (dict(step=0.0), "step"),
        (dict(nugget=-1.0), "nugget"),
        (dict(failure="keep"), "failure"),
    ]:
        with pytest.raises(ValueError, match=match):
            eks(key, linear, prior, Y, **{**eks_opts, **kwargs})
    with pytest.raises(ValueError, match="prior_mean"):
        eks(key, linear, prior, Y, **{**eks_opts, "prior_mean": jnp.zeros(4)})
