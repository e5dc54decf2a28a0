"""The ensemble-space solves of the stochastic EnKF family (Cholesky) against dense references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.ensemble import ensemble_solve, kalman_increments, obs_space_solve


def _anomalies(key, N, m, zero_cols=()):
    S = np.asarray(jax.random.normal(key, (N, m)))
    S = S - S.mean(axis=0)  # rows sum to zero: S Sᵀ is singular (repeated eigenvalue 0)
    S[:, list(zero_cols)] = 0.0  # missing observations: more zero eigenvalues
    return S


@pytest.mark.parametrize("N, m", [(6, 9), (9, 4)])
def test_solves_match_dense_numpy(N, m):
    S = _anomalies(jax.random.key(0), N, m, zero_cols=(1, 2))
    rhs_n = np.asarray(jax.random.normal(jax.random.key(1), (N, 3)))
    rhs_m = np.asarray(jax.random.normal(jax.random.key(2), (m, 3)))
    np.testing.assert_allclose(
        ensemble_solve(jnp.asarray(S), jnp.asarray(rhs_n)),
        np.linalg.solve(np.eye(N) + S @ S.T, rhs_n),
        rtol=1e-12,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        obs_space_solve(jnp.asarray(S), jnp.asarray(rhs_m)),
        np.linalg.solve(np.eye(m) + S.T @ S, rhs_m),
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("N, m", [(6, 9), (9, 4)])
def test_increment_gradient_finite_with_repeated_eigenvalues(N, m):
    """d/dθ of the Kalman increments at S·θ, with zero columns (missing observations) and the
    null vector 1: equals the derivative of the dense formula (central difference, float64)."""
    S = _anomalies(jax.random.key(3), N, m, zero_cols=(0,))
    X = np.asarray(jax.random.normal(jax.random.key(4), (N, 5)))
    Dw = np.array(jax.random.normal(jax.random.key(5), (3, m)))
    Dw[:, 0] = 0.0

    def f(theta):
        return jnp.sum(kalman_increments(jnp.asarray(X), theta * jnp.asarray(S), jnp.asarray(Dw)))

    def dense(theta):  # K d = Xᵀ Sθ (I + SθᵀSθ)^{-1} d  (independent: m×m, numpy)
        St = theta * S
        return np.sum(Dw @ np.linalg.solve(np.eye(m) + St.T @ St, St.T) @ X)

    g = float(jax.grad(f)(1.3))
    h = 1e-6
    assert np.isfinite(g)
    np.testing.assert_allclose(g, (dense(1.3 + h) - dense(1.3 - h)) / (2 * h), rtol=1e-6)
