import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.metrics import crps, rank_histogram, rmse, spread, weighted_norm


def test_weighted_norm_equals_quadratic_form():
    key = jax.random.key(0)
    y, yh = jax.random.normal(key, (2, 7))
    theta = jnp.linspace(0.5, 3.0, 7)
    W = np.diag(1.0 / np.asarray(theta) ** 2)
    r = np.asarray(y - yh)
    np.testing.assert_allclose(weighted_norm(y, yh, theta), np.sqrt(r @ W @ r), rtol=1e-12)
    # batched over a leading axis
    Y = jnp.stack([y, yh])
    np.testing.assert_allclose(
        weighted_norm(Y, jnp.zeros(7), theta)[1], weighted_norm(yh, 0 * yh, theta)
    )


def test_weighted_norm_rejects_bad_theta_and_shapes():
    with pytest.raises(ValueError, match="theta must be positive"):
        weighted_norm(jnp.ones(2), jnp.zeros(2), jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="same last dimension"):
        weighted_norm(jnp.ones(2), jnp.zeros(3), 1.0)


def test_weighted_norm_is_differentiable():
    g = jax.grad(lambda yh: weighted_norm(jnp.ones(3), yh, 2.0) ** 2)(jnp.zeros(3))
    np.testing.assert_allclose(g, -2 * jnp.ones(3) / 4.0)


def test_crps_matches_pairwise_definition():
    E = jax.random.normal(jax.random.key(1), (9, 4))
    x = jnp.array([0.1, -0.5, 2.0, 0.0])
    N = E.shape[0]
    e = np.asarray(E)
    ref = []
    for j in range(4):
        t1 = np.mean(np.abs(e[:, j] - float(x[j])))
        t2 = sum(abs(a - b) for a, b in itertools.product(e[:, j], e[:, j])) / (2 * N * (N - 1))
        ref.append(t1 - t2)
    np.testing.assert_allclose(crps(E, x), np.mean(ref), rtol=1e-10)


def test_crps_gaussian_limit():
    # CRPS of N(0,1) at 0 is (sqrt(2) - 1)/sqrt(pi)
    E = jax.random.normal(jax.random.key(2), (20000, 1))
    np.testing.assert_allclose(crps(E, jnp.zeros(1)), (np.sqrt(2) - 1) / np.sqrt(np.pi), rtol=0.02)


def test_rank_histogram_flat_for_calibrated_ensemble():
    K, N, n = 400, 9, 5
    draws = jax.random.normal(jax.random.key(3), (K, N + 1, n))
    counts = np.asarray(rank_histogram(draws[:, :N], draws[:, N]))
    assert counts.sum() == K * n
    expected = K * n / (N + 1)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 25.0  # chi2(9) 99.7% quantile ≈ 25.2
    # an under-dispersive ensemble piles up at the extremes
    counts_bad = np.asarray(rank_histogram(0.2 * draws[:, :N], draws[:, N]))
    assert counts_bad[0] + counts_bad[-1] > 0.5 * K * n


def test_rmse_and_spread():
    np.testing.assert_allclose(rmse(jnp.array([1.0, 3.0]), jnp.zeros(2)), np.sqrt(5.0))
    E = jnp.array([[0.0, 0.0], [2.0, 4.0]])
    np.testing.assert_allclose(spread(E), np.sqrt((2.0 + 8.0) / 2))
    with pytest.raises(ValueError, match="N >= 2"):
        spread(jnp.ones((1, 3)))


def test_weighted_spread():
    """Weighted spread (particle filters): equal weights give the N-1 spread, zero-weight
    particles do not count, and random weights match the unbiased weighted variance in NumPy."""
    rng = np.random.default_rng(0)
    E = rng.normal(size=(6, 4))
    np.testing.assert_allclose(spread(E, jnp.zeros(6)), spread(E), rtol=1e-12)
    logw = jnp.log(jnp.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_allclose(spread(E, logw), spread(E[:3]), rtol=1e-12)
    w = rng.random(6)
    w /= w.sum()
    m = w @ E
    var = (w @ (E - m) ** 2) / (1 - np.sum(w**2))
    np.testing.assert_allclose(spread(E, jnp.log(w)), np.sqrt(var.mean()), rtol=1e-12)
    assert float(spread(E, jnp.log(jnp.eye(6)[0]))) == 0.0  # one particle holds all the weight
