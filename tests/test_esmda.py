"""ES-MDA against the exact linear-Gaussian posterior, the single ES update and
iterative_ensemble_smoother; jit/vmap/grad invariance and input validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.core import Status
from jaxda.ensemble._core import kalman_gain, obs_space_from_predictions, scaled_anomalies
from jaxda.ensemble._esmda import (
    esmda,
    esmda_perturbations,
    esmda_update,
    geometric_alpha,
    normalize_alpha,
)
from jaxda.ensemble._problems import (
    linear_gaussian_problem,
    lorenz96_parameter_problem,
)
from jaxda.metrics import weighted_norm
from jaxda.observations import gaussian_noise

key = jax.random.key


def run(fn, k, forward, prior, y, **kw):
    """Call a smoother under one jit (op-by-op eager dispatch is slow to compile)."""
    return jax.jit(lambda kk, E, yy: fn(kk, forward, E, yy, **kw))(k, prior, y)


@pytest.fixture(scope="module")
def lin():
    return linear_gaussian_problem(key(0), n=3, m=2, obs_std=0.5)


def _replicates(problem, N, alpha, R=16, seed=1):
    """Posterior mean and covariance of R independent ES-MDA runs (vmapped over keys)."""

    def one(k):
        kp, kr = jax.random.split(k)
        out = esmda(
            kr,
            problem.forward,
            problem.sample_prior(kp, N),
            problem.y,
            noise=problem.noise,
            alpha=alpha,
        )
        E = out.posterior
        return jnp.mean(E, 0), jnp.cov(E.T)

    return jax.jit(jax.vmap(one))(jax.random.split(key(seed), R))


def _z_ok(samples, target, z=4.5):
    """Replicate average within z Monte-Carlo standard errors of the target (per entry)."""
    R = samples.shape[0]
    avg = jnp.mean(samples, 0)
    se = jnp.std(samples, 0, ddof=1) / np.sqrt(R)
    return bool(jnp.all(jnp.abs(avg - target) <= z * se + 1e-12)), np.asarray((avg - target) / se)


def test_linear_gaussian_converges_to_exact_posterior(lin):
    mu, P = lin.extra["posterior_mean"], lin.extra["posterior_cov"]
    # independent reference: information form P_a = (P^-1 + G^T R^-1 G)^-1, numpy
    G, Rinv = np.asarray(lin.extra["G"]), np.linalg.inv(np.asarray(lin.noise.cov()))
    Pa = np.linalg.inv(np.eye(3) + G.T @ Rinv @ G)
    np.testing.assert_allclose(P, Pa, atol=1e-12)
    np.testing.assert_allclose(mu, Pa @ G.T @ Rinv @ np.asarray(lin.y), atol=1e-12)
    errs_m, errs_c = [], []
    for N in (100, 800, 6400):
        means, covs = _replicates(lin, N, alpha=4)
        errs_m.append(float(jnp.mean(jnp.sum((means - mu) ** 2, 1)) / jnp.trace(P)))
        errs_c.append(float(jnp.mean(jnp.linalg.norm(covs - P, axis=(1, 2))) / jnp.linalg.norm(P)))
    # Monte-Carlo rates: squared mean error ~ 1/N, covariance error ~ 1/sqrt(N)
    assert errs_m[-1] < errs_m[0] / 16, errs_m  # expected ratio 64
    assert errs_c[-1] < errs_c[0] / 3, errs_c  # expected ratio 8
    # at the largest N the replicate averages are unbiased within MC standard errors
    ok_m, z_m = _z_ok(means, mu)
    ok_c, z_c = _z_ok(covs, P)
    assert ok_m, z_m
    assert ok_c, z_c


LARGE_N = 4000


@pytest.fixture(scope="module")
def es_large(lin):
    return _replicates(lin, LARGE_N, alpha=jnp.array([1.0]), seed=7)


@pytest.mark.parametrize(
    "alpha",
    [jnp.array([9.0, 7.0, 5.0, 3.0]), "geometric"],
    ids=["decreasing", "geometric"],
)
def test_any_alpha_matches_single_es_large_n(lin, es_large, alpha):
    alpha = geometric_alpha(5, 3.0) if isinstance(alpha, str) else alpha
    mu, P = lin.extra["posterior_mean"], lin.extra["posterior_cov"]
    es_m, es_c = es_large
    md_m, md_c = _replicates(lin, LARGE_N, alpha=alpha, seed=8)
    # both agree with the exact posterior, and with each other, within MC error
    for samples, target in ((md_m, mu), (md_c, P)):
        ok, z = _z_ok(samples, target)
        assert ok, z
    diff = jnp.mean(md_m, 0) - jnp.mean(es_m, 0)
    se = jnp.sqrt(jnp.var(md_m, 0, ddof=1) / 16 + jnp.var(es_m, 0, ddof=1) / 16)
    assert bool(jnp.all(jnp.abs(diff) <= 4.5 * se)), diff / se
    dc = jnp.mean(md_c, 0) - jnp.mean(es_c, 0)
    sc = jnp.sqrt(jnp.var(md_c, 0, ddof=1) / 16 + jnp.var(es_c, 0, ddof=1) / 16)
    assert bool(jnp.all(jnp.abs(dc) <= 4.5 * sc + 1e-12)), dc / sc


def _reference_esmda(prior, forward, y, cov, alpha, eps, truncation):
    ies = pytest.importorskip("iterative_ensemble_smoother")
    sm = ies.ESMDA(np.asarray(cov), np.asarray(y), alpha=np.asarray(alpha), seed=0)
    X = np.asarray(prior).T.copy()
    fwd = jax.jit(jax.vmap(forward))
    for j in range(sm.num_assimilations()):
        Y = np.asarray(fwd(jnp.asarray(X.T))).T
        sm.prepare_assimilation(
            Y=Y, truncation=truncation, observation_perturbations=np.asarray(eps[j]).T
        )
        X = sm.assimilate_batch(X=X)
    return X.T


@pytest.mark.parametrize("m,full_cov", [(40, False), (8, True)])
def test_matches_iterative_ensemble_smoother_same_perturbations(m, full_cov):
    N, n = 20, 30
    A = jax.random.normal(key(1), (m, n)) / np.sqrt(n)

    def forward(x):
        return A @ x + 0.1 * jnp.tanh(A @ x) ** 2

    prior = jax.random.normal(key(2), (N, n))
    y = jax.random.normal(key(3), (m,))
    if full_cov:
        B = jax.random.normal(key(4), (m, m))
        cov = B @ B.T / m + 0.3 * jnp.eye(m)
        noise = gaussian_noise(cov=cov)
        ref_cov = cov
    else:
        noise = gaussian_noise(std=jnp.linspace(0.3, 1.0, m))
        ref_cov = noise.variance()  # the reference takes a 1-D diagonal covariance
    alpha = jnp.array([4.0, 2.0, 1.0])
    eps = esmda_perturbations(key(5), noise, 3, N)
    variants = [("subspace", 0.99)] + ([("subspace", 1.0), ("exact", 1.0)] if full_cov else [])
    for inversion, trunc in variants:
        ours = run(
            esmda,
            key(5),
            forward,
            prior,
            y,
            noise=noise,
            alpha=alpha,
            inversion=inversion,
            truncation=trunc,
        )
        ref = _reference_esmda(prior, forward, y, ref_cov, alpha, eps, trunc)
        np.testing.assert_allclose(ours.posterior, ref, rtol=1e-8, atol=1e-8, err_msg=inversion)
        np.testing.assert_allclose(ours.alpha, normalize_alpha(alpha))


def test_subspace_full_truncation_equals_exact():
    N, n, m = 15, 12, 60
    G = jax.random.normal(key(1), (m, n))
    prior = jax.random.normal(key(2), (N, n))
    y = jax.random.normal(key(3), (m,))

    @jax.jit
    def three(prior, y):
        def g(x):
            return G @ x

        a = esmda(key(4), g, prior, y, obs_std=0.7, alpha=3)
        b = esmda(key(4), g, prior, y, obs_std=0.7, alpha=3, inversion="subspace", truncation=1.0)
        c = esmda(key(4), g, prior, y, obs_std=0.7, alpha=3, inversion="subspace", truncation=0.5)
        return a, b, c

    a, b, c = three(prior, y)
    np.testing.assert_allclose(a.posterior, b.posterior, atol=1e-10)
    assert float(jnp.max(jnp.abs(a.posterior - c.posterior))) > 1e-3  # truncation really acts


def test_localization_identity_and_zero_taper():
    N, n, m = 10, 6, 4
    G = jax.random.normal(key(1), (m, n))
    prior = jax.random.normal(key(2), (N, n))
    y = jax.random.normal(key(3), (m,))
    rho = jnp.zeros((n, m)).at[:3].set(1.0)

    @jax.jit
    def four(prior, y):
        def g(x):
            return G @ x

        base = esmda(key(4), g, prior, y, obs_std=0.5, alpha=2)
        ones = esmda(key(4), g, prior, y, obs_std=0.5, alpha=2, localization=jnp.ones((n, m)))
        zero = esmda(key(4), g, prior, y, obs_std=0.5, alpha=2, localization=jnp.zeros((n, m)))
        half = esmda(key(4), g, prior, y, obs_std=0.5, alpha=jnp.array([1.0]), localization=rho)
        return base, ones, zero, half

    base, ones, zero, half = four(prior, y)
    np.testing.assert_allclose(ones.posterior, base.posterior, atol=1e-10)
    np.testing.assert_allclose(zero.posterior, prior, atol=1e-12)
    # a taper that keeps the first half of the parameters only leaves the rest unchanged
    rho = jnp.zeros((n, m)).at[:3].set(1.0)
    half = run(
        esmda,
        key(4),
        lambda x: G @ x,
        prior,
        y,
        obs_std=0.5,
        alpha=jnp.array([1.0]),
        localization=rho,
    )
    np.testing.assert_allclose(half.posterior[:, 3:], prior[:, 3:], atol=1e-12)


def test_single_es_update_is_the_ensemble_kalman_update_and_grad():
    """alpha=[1]: mean update d(mean)/dy equals the ensemble Kalman gain (forward-mode AD)."""
    N, n, m = 12, 5, 3
    G = jax.random.normal(key(1), (m, n))
    prior = jax.random.normal(key(2), (N, n))
    noise = gaussian_noise(std=jnp.array([0.3, 0.5, 0.8]))

    def post_mean(y):
        out = esmda(key(4), lambda x: G @ x, prior, y, noise=noise, alpha=jnp.array([1.0]))
        return jnp.mean(out.posterior, 0)

    _, X = scaled_anomalies(prior)
    os = obs_space_from_predictions(prior @ G.T, noise)
    K = kalman_gain(X, os.S, noise)
    # dense reference for the same ensemble covariance
    P = X.T @ X
    K_dense = P @ G.T @ np.linalg.solve(G @ P @ G.T + noise.cov(), np.eye(m))
    np.testing.assert_allclose(K, K_dense, atol=1e-10)
    J = jax.jit(jax.jacfwd(post_mean))(jnp.zeros(m))
    np.testing.assert_allclose(J, K_dense, atol=1e-10)
    g = jax.jit(jax.grad(lambda y: jnp.sum(post_mean(y))))(jnp.ones(m))
    np.testing.assert_allclose(g, K_dense.sum(0), atol=1e-10)


def test_pytree_parameters_match_flat():
    N = 20
    prior = jax.random.normal(key(1), (N, 3))
    tree = {"a": prior[:, 0], "b": prior[:, 1:]}
    y = jnp.array([0.5, -1.0])

    def g_flat(x):
        return jnp.array([x[0] * x[1], x[2] + x[0] ** 2])

    def g_tree(p):
        return jnp.array([p["a"] * p["b"][0], p["b"][1] + p["a"] ** 2])

    flat, tr = jax.jit(
        lambda E, T: (
            esmda(key(2), g_flat, E, y, obs_std=0.2, alpha=3),
            esmda(key(2), g_tree, T, y, obs_std=0.2, alpha=3),
        )
    )(prior, tree)
    np.testing.assert_allclose(tr.posterior["a"], flat.posterior[:, 0], atol=1e-12)
    np.testing.assert_allclose(tr.posterior["b"], flat.posterior[:, 1:], atol=1e-12)


def test_history_and_misfit_definition():
    N, n, m = 30, 4, 6
    G = jax.random.normal(key(1), (m, n))
    prior = jax.random.normal(key(2), (N, n))
    y = G @ jnp.ones(n)
    theta = jnp.linspace(0.2, 0.6, m)
    out = run(esmda, key(3), lambda x: G @ x, prior, y, obs_std=theta, alpha=4)
    assert out.history.misfit.shape == (5,)
    np.testing.assert_allclose(
        out.history.misfit[0], weighted_norm(y, jnp.mean(prior @ G.T, 0), theta)
    )
    np.testing.assert_allclose(
        out.history.misfit[-1], weighted_norm(y, jnp.mean(out.posterior @ G.T, 0), theta)
    )
    np.testing.assert_allclose(out.predictions, out.posterior @ G.T, atol=1e-12)
    assert int(out.status) == Status.SUCCESS and int(out.n_steps) == 4
    assert not bool(jnp.any(out.failed))
    assert bool(jnp.all(jnp.isnan(out.history.cost))) and bool(jnp.isnan(out.history.step[0]))
    assert bool(jnp.all(out.history.step[1:] > 0))
    assert float(out.history.misfit[-1]) < float(out.history.misfit[0])
    assert float(out.history.spread[-1]) < float(out.history.spread[0])


def test_jit_and_vmap_over_independent_problems():
    B, N, n, m = 3, 16, 5, 4
    Gs = jax.random.normal(key(1), (B, m, n))
    priors = jax.random.normal(key(2), (B, N, n))
    ys = jax.random.normal(key(3), (B, m))
    keys = jax.random.split(key(4), B)

    def solve(k, G, E, y):
        return esmda(
            k, lambda x: jnp.tanh(G @ x), E, y, obs_std=0.3, alpha=geometric_alpha(3)
        ).posterior

    batched = jax.jit(jax.vmap(solve))(keys, Gs, priors, ys)
    solve_jit = jax.jit(solve)
    for b in range(B):
        np.testing.assert_allclose(
            batched[b], solve_jit(keys[b], Gs[b], priors[b], ys[b]), atol=1e-10
        )


def test_lorenz96_parameter_estimation_improves_forcing():
    p = lorenz96_parameter_problem(key(0), n=8, n_steps=10, obs_every=2, obs_stride=2, obs_std=0.5)
    prior = p.sample_prior(key(1), 40)
    out = jax.jit(lambda k, E: esmda(k, p.forward, E, p.y, noise=p.noise, alpha=4))(key(2), prior)
    f_prior = abs(float(jnp.mean(prior["forcing"])) - 8.0)
    f_post = abs(float(jnp.mean(out.posterior["forcing"])) - 8.0)
    assert f_post < 0.5 * f_prior
    assert float(out.history.misfit[-1]) < 0.5 * float(out.history.misfit[0])
    assert float(jnp.std(out.posterior["forcing"])) < float(jnp.std(prior["forcing"]))


def test_alpha_helpers():
    a = geometric_alpha(4, 2.0)
    np.testing.assert_allclose(jnp.sum(1.0 / a), 1.0)
    np.testing.assert_allclose(a[:-1] / a[1:], 2.0)
    np.testing.assert_allclose(normalize_alpha(jnp.array([1.0, 1.0])), [2.0, 2.0])


def test_input_validation():
    N, n, m = 10, 3, 2
    prior = jax.random.normal(key(1), (N, n))
    y = jnp.zeros(m)

    def g(x):
        return x[:m]

    with pytest.raises(ValueError, match="predictions per member"):
        esmda(key(0), lambda x: x, prior, y, obs_std=1.0)
    with pytest.raises(ValueError, match="positive"):
        esmda(key(0), g, prior, y, obs_std=-1.0)
    with pytest.raises(ValueError, match="positive"):
        esmda(key(0), g, prior, y, obs_std=jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="N >= 2"):
        esmda(key(0), g, prior[:1], y, obs_std=1.0)
    with pytest.raises(ValueError, match="sum"):
        esmda(key(0), g, prior, y, obs_std=1.0, alpha=jnp.array([2.0, 3.0]), normalize=False)
    out = run(esmda, key(0), g, prior, y, obs_std=1.0, alpha=jnp.array([2.0, 2.0]), normalize=False)
    np.testing.assert_allclose(out.alpha, [2.0, 2.0])
    with pytest.raises(ValueError, match="alpha"):
        esmda(key(0), g, prior, y, obs_std=1.0, alpha=0)
    with pytest.raises(ValueError, match="alpha"):
        esmda(key(0), g, prior, y, obs_std=1.0, alpha=jnp.array([1.0, -2.0]))
    with pytest.raises(ValueError, match="exactly one"):
        esmda(key(0), g, prior, y)
    with pytest.raises(ValueError, match="dimension"):
        esmda(key(0), g, prior, y, noise=gaussian_noise(std=jnp.ones(3)))
    with pytest.raises(ValueError, match="localization"):
        esmda(key(0), g, prior, y, obs_std=1.0, localization=jnp.ones((m, n)))
    with pytest.raises(ValueError, match="inversion"):
        esmda(key(0), g, prior, y, obs_std=1.0, inversion="svd")
    with pytest.raises(ValueError, match="truncation"):
        esmda(key(0), g, prior, y, obs_std=1.0, truncation=0.0)
    with pytest.raises(ValueError, match="perturbations"):
        esmda(key(0), g, prior, y, obs_std=1.0, alpha=2, perturbations=jnp.zeros((3, N, m)))
    with pytest.raises(ValueError, match=r"\(N, n\)"):
        esmda(key(0), g, jnp.zeros((N, n, 2)), y, obs_std=1.0)
    with pytest.raises(ValueError, match="ratio"):
        geometric_alpha(3, -1.0)


# --------------------------------------------------------------------------- failed members
def _failing_setup(N=24, n=4, m=3):
    G = jax.random.normal(key(11), (m, n))
    prior = jax.random.normal(key(12), (N, n))
    bad = np.zeros(N, bool)
    bad[[2, 7, 19]] = True
    prior = prior.at[bad, 0].set(1e6)  # these members crash the model

    def g(x):
        return jnp.where(jnp.abs(x[0]) > 1e3, jnp.nan, G @ x)

    y = jax.random.normal(key(13), (m,))
    return g, prior, y, bad


def test_failed_members_are_dropped_exactly(inversion="exact"):
    """The survivors' posterior is the ES-MDA posterior of the survivors alone."""
    g, prior, y, bad = _failing_setup()
    noise = gaussian_noise(std=jnp.array([0.3, 0.5, 0.8]))
    eps = esmda_perturbations(key(14), noise, 3, prior.shape[0])
    kw = dict(noise=noise, alpha=3, inversion=inversion)
    full = run(esmda, key(0), g, prior, y, perturbations=eps, **kw)
    ok = ~bad
    alone = run(esmda, key(0), g, prior[ok], y, perturbations=eps[:, ok], **kw)
    assert int(full.status) == Status.FAILED_MEMBERS and int(full.n_steps) == 3
    np.testing.assert_array_equal(full.failed, bad)
    np.testing.assert_allclose(full.posterior[ok], alone.posterior, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(full.posterior[bad], prior[bad])  # kept at the prior value
    np.testing.assert_allclose(full.history.misfit, alone.history.misfit, rtol=1e-10)
    assert int(alone.status) == Status.SUCCESS
    with pytest.raises(RuntimeError, match="FAILED_MEMBERS"):
        esmda(key(0), g, prior, y, perturbations=eps, throw=True, **kw)


def test_member_failing_mid_run_is_rolled_back():
    N, n = 30, 2
    prior = 0.3 * jax.random.normal(key(1), (N, n))

    def g(x):  # the data pull members to x0 ~ 2; those that pass 1.5 crash
        return jnp.where(x[0] > 1.5, jnp.inf, jnp.array([x[0], x[0] + x[1]]))

    out = run(esmda, key(2), g, prior, jnp.array([2.0, 2.0]), obs_std=0.1, alpha=4)
    failed = np.asarray(out.failed)
    assert int(out.status) == Status.FAILED_MEMBERS and 0 < failed.sum() < N - 2
    # every member, failed or not, ends at a value whose predictions are finite
    assert bool(jnp.all(jnp.isfinite(out.predictions)))
    np.testing.assert_allclose(out.predictions, jax.vmap(g)(out.posterior))
    assert bool(jnp.all(jnp.isfinite(out.history.misfit)))


def test_too_few_members_is_nonfinite_and_throw_raises():
    g, prior, y, _ = _failing_setup()
    crash = prior.at[:, 0].set(1e6).at[0, 0].set(0.0)  # a single member survives
    out = run(esmda, key(0), g, crash, y, obs_std=0.5, alpha=2)
    assert int(out.status) == Status.NONFINITE and int(out.n_steps) == 0
    np.testing.assert_array_equal(out.posterior, crash)  # no update, and no nan leaks
    assert bool(jnp.all(jnp.isfinite(out.history.misfit)))
    with pytest.raises(RuntimeError, match="NONFINITE"):
        esmda(key(0), g, crash, y, obs_std=0.5, alpha=2, throw=True)
    with pytest.raises(Exception, match="status is not SUCCESS"):
        jax.block_until_ready(
            jax.jit(lambda E: esmda(key(0), g, E, y, obs_std=0.5, alpha=2, throw=True))(crash)
        )


def test_esmda_update_skips_nan_members_and_needs_two():
    N, n, m = 12, 3, 2
    E = jax.random.normal(key(1), (N, n))
    Y = E[:, :m]
    noise = gaussian_noise(std=0.5, dim=m)
    eps = noise.sample(key(2), (N,))
    y = jnp.ones(m)
    Ynan = Y.at[3].set(jnp.nan)
    out = esmda_update(E, Ynan, y, noise, eps)
    keep = np.arange(N) != 3
    ref = esmda_update(E[keep], Y[keep], y, noise, eps[keep])
    np.testing.assert_allclose(out[keep], ref, atol=1e-12)
    np.testing.assert_array_equal(out[3], E[3])
    with pytest.raises(ValueError, match="at least 2 members with finite predictions"):
        esmda_update(E, Y.at[1:].set(jnp.nan), y, noise, eps)


# --------------------------------------------------------------------------- missing data
@pytest.mark.parametrize("full_cov,inversion", [(False, "exact"), (True, "subspace")])
def test_missing_observations_equal_removed_observations(full_cov, inversion):
    N, n, m = 20, 5, 8
    A = jax.random.normal(key(1), (m, n)) / np.sqrt(n)

    def g(x):
        return A @ x + 0.1 * jnp.sin(A @ x)

    prior = jax.random.normal(key(2), (N, n))
    y = jax.random.normal(key(3), (m,))
    if full_cov:
        B = jax.random.normal(key(4), (m, m))
        R = B @ B.T / m + 0.3 * jnp.eye(m)
    else:
        R = jnp.diag(jnp.linspace(0.2, 1.0, m) ** 2)
    keep = np.array([1, 0, 1, 1, 0, 0, 1, 0], bool)
    eps = esmda_perturbations(key(5), gaussian_noise(cov=R), 3, N)
    kw = dict(alpha=jnp.array([4.0, 2.0, 1.0]), inversion=inversion, truncation=0.95)
    y_nan = jnp.where(keep, y, jnp.nan)
    missing = run(esmda, key(0), g, prior, y_nan, obs_cov=R, perturbations=eps, **kw)
    masked = run(esmda, key(0), g, prior, y, obs_cov=R, mask=keep, perturbations=eps, **kw)
    Rk = R[np.ix_(keep, keep)]
    removed = run(
        esmda,
        key(0),
        lambda x: g(x)[keep],
        prior,
        y[keep],
        obs_cov=Rk,
        perturbations=eps[..., keep],
        **kw,
    )
    np.testing.assert_allclose(missing.posterior, removed.posterior, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(masked.posterior, removed.posterior, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(missing.history.misfit, removed.history.misfit, rtol=1e-10)
    assert int(missing.status) == Status.SUCCESS
    assert float(jnp.max(jnp.abs(missing.posterior - prior))) > 1e-2  # the kept data act


def test_all_missing_returns_the_prior_and_nan_predictions_there_are_ignored():
    N, n, m = 15, 3, 4
    prior = jax.random.normal(key(1), (N, n))

    def g(x):  # predictions of the unobserved entries are nan: not a failure
        return jnp.array([x[0], x[1], jnp.nan, x[2]])

    none = run(esmda, key(2), g, prior, jnp.full(m, jnp.nan), obs_std=0.5, alpha=3)
    np.testing.assert_array_equal(none.posterior, prior)
    assert int(none.status) == Status.SUCCESS
    y = jnp.array([0.5, jnp.nan, jnp.nan, 1.0])
    out = run(esmda, key(2), g, prior, y, obs_cov=jnp.eye(m) * 0.25 + 0.05, alpha=3)
    assert int(out.status) == Status.SUCCESS and not bool(jnp.any(out.failed))
    assert bool(jnp.all(jnp.isfinite(out.posterior)))
    assert bool(jnp.all(jnp.isnan(out.predictions[:, 2])))
