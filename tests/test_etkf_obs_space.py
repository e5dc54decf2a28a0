"""The global ETKF in observation space (``m < N``, issue 17) against dense references.

The reference is computed independently in NumPy (float64) from the ``N×N`` ensemble-space
formulas of the symmetric square-root ETKF (``eigh`` of ``S Sᵀ``), with missing observations
removed from ``H`` and ``R`` before anything is computed, and checked against the Kalman
analysis (mean ``x̄ + K(y - Hx̄)`` and covariance ``(I - KH)P`` with the ensemble covariance
``P``). Both branches of :func:`jaxda.ensemble.etkf_update` (``m < N``: the ``m×m`` Gram matrix;
``m >= N``: the ``N×N`` one) and both ways of applying each matrix function (to the right-hand
side, or formed and multiplied when the right-hand side is wider) are covered.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxda.ensemble import (
    denkf_analysis,
    enkf_analysis,
    enkf_n_analysis,
    etkf_analysis,
    etkf_update,
)
from jaxda.observations import linear, observation_model

N = 12


def _dense_etkf(E, y, H, R):
    """ETKF analysis from the ``N×N`` eigen-problem, NumPy float64; NaN entries of ``y``
    removed with their rows of ``H`` and rows/columns of ``R``."""
    E, y, H, R = (np.asarray(a, np.float64) for a in (E, y, H, R))
    keep = ~np.isnan(y)
    y, H, R = y[keep], H[keep], R[np.ix_(keep, keep)]
    Nm = E.shape[0]
    xm = E.mean(0)
    A = E - xm
    if y.size == 0:
        return E
    Y = E @ H.T
    dY = Y - Y.mean(0)
    W = np.linalg.inv(np.linalg.cholesky(R))  # Wᵀ W = R^{-1}
    S = dY @ W.T / np.sqrt(Nm - 1.0)
    d = W @ (y - Y.mean(0))
    lam, V = np.linalg.eigh(S @ S.T)
    lam = np.maximum(lam, 0.0)
    T = (V * (1.0 + lam) ** -0.5) @ V.T
    w = (V / (1.0 + lam)) @ (V.T @ (S @ d))
    return xm + w @ A / np.sqrt(Nm - 1.0) + T @ A


def _kalman(E, y, H, R):
    """Kalman mean and covariance with the ensemble mean and covariance as the prior."""
    E, y, H, R = (np.asarray(a, np.float64) for a in (E, y, H, R))
    keep = ~np.isnan(y)
    y, H, R = y[keep], H[keep], R[np.ix_(keep, keep)]
    xm = E.mean(0)
    P = np.atleast_2d(np.cov(E, rowvar=False, ddof=1))
    K = np.linalg.solve(H @ P @ H.T + R, H @ P).T
    return xm + K @ (y - H @ xm), (np.eye(len(xm)) - K @ H) @ P


def _problem(seed, n, m, correlated=False, dtype=np.float64):
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(N, n)) * rng.uniform(0.5, 2.0, n) + rng.normal(size=n)
    H = rng.normal(size=(m, n))
    if correlated:
        B = rng.normal(size=(m, m))
        R = B @ B.T / m + np.diag(rng.uniform(0.3, 1.0, m))
        noise = dict(obs_cov=jnp.asarray(R, dtype))
    else:
        std = rng.uniform(0.3, 2.0, m)
        R = np.diag(std**2)
        noise = dict(obs_std=jnp.asarray(std, dtype))
    y = H @ E.mean(0) + rng.normal(size=m) * 2.0
    obs = observation_model(linear(jnp.asarray(H, dtype)), **noise)
    return jnp.asarray(E, dtype), jnp.asarray(y, dtype), obs, H, R


# (m, n): m < N (observation space) and m >= N (ensemble space), with n below and above the
# Gram matrix's size (the function applied to the anomalies, or formed and multiplied).
CASES = [(3, 6), (9, 6), (12, 6), (20, 30)]


@pytest.mark.parametrize(("m", "n"), CASES)
def test_etkf_analysis_equals_the_dense_ensemble_space_reference(m, n):
    E, y, obs, H, R = _problem(100 * m + n, n, m, correlated=(n == 6))
    analysis = jax.jit(etkf_analysis)
    # all observed, and every other observation missing (the same compiled analysis)
    for y_case in (y, y.at[np.arange(0, m, 2)].set(jnp.nan)):
        Ea = np.asarray(analysis(E, y_case, obs))
        np.testing.assert_allclose(Ea, _dense_etkf(E, y_case, H, R), rtol=1e-10, atol=1e-10)
        # the Kalman analysis with the ensemble covariance as the prior (linear H)
        xa, Pa = _kalman(E, y_case, H, R)
        np.testing.assert_allclose(Ea.mean(0), xa, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.cov(Ea, rowvar=False, ddof=1), Pa, rtol=1e-8, atol=1e-9)
        # the symmetric transform keeps the anomalies centred (T 1 = 1)
        np.testing.assert_allclose(np.sum(Ea - Ea.mean(0), axis=0), 0.0, atol=1e-10)


@pytest.mark.parametrize("m", [3, 20])
def test_transform_is_symmetric_and_preserves_the_mean(m):
    """``etkf_update`` applied to ``I_N`` returns ``T`` itself: symmetric, ``T² (I + SSᵀ) = I``
    and ``T 1 = 1`` for centred ``S`` (the ensemble mean is kept), and the weights ``w`` of the
    ensemble-space solve."""
    rng = np.random.default_rng(m)
    S = rng.normal(size=(N, m))
    S = S - S.mean(0)
    S[:, 1] = 0.0  # a missing observation: a zero column
    d = rng.normal(size=m)
    d[1] = 0.0
    w, T = jax.jit(etkf_update)(jnp.asarray(S), jnp.asarray(d), jnp.eye(N))
    T = np.asarray(T)
    np.testing.assert_allclose(T, T.T, atol=1e-12)
    np.testing.assert_allclose(T @ T @ (np.eye(N) + S @ S.T), np.eye(N), atol=1e-10)
    np.testing.assert_allclose(T @ np.ones(N), np.ones(N), atol=1e-12)
    np.testing.assert_allclose(w, np.linalg.solve(np.eye(N) + S @ S.T, S @ d), atol=1e-12)


def _shapes_in(jaxpr, out):
    """Every intermediate shape of a jaxpr, sub-jaxprs (custom_jvp, cond, loops) included."""
    for eqn in jaxpr.eqns:
        out.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
        for p in eqn.params.values():
            for sub in p if isinstance(p, tuple | list) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _shapes_in(inner, out)
    return out


def test_observation_space_forms_nothing_ensemble_by_ensemble():
    """With ``m < N`` no ``N×N`` array appears in the ETKF analysis nor in its gradient, nor in
    the EnKF's, DEnKF's and EnKF-N's analyses; with ``m >= N`` the ``N×N`` Gram matrix does (the test
    would notice the branch not taken)."""
    Nb, n, m = 50, 7, 3
    E = jax.random.normal(jax.random.key(0), (Nb, n))
    obs = observation_model(linear(jnp.eye(n)[:m]), obs_std=1.0)
    y = jnp.zeros(m)

    def loss(E):
        return jnp.sum(etkf_analysis(E, y, obs) ** 2)

    for f in (lambda E: etkf_analysis(E, y, obs), jax.grad(loss)):
        shapes = _shapes_in(jax.make_jaxpr(f)(E).jaxpr, set())
        assert not any(sum(s == Nb for s in shape) >= 2 for shape in shapes), shapes
    # nor the stochastic EnKF, the DEnKF (kalman_increments) and the EnKF-N
    for f in (
        lambda E: enkf_analysis(jax.random.key(1), E, y, obs),
        lambda E: denkf_analysis(E, y, obs),
        lambda E: enkf_n_analysis(E, y, obs)[0],
    ):
        shapes = _shapes_in(jax.make_jaxpr(f)(E).jaxpr, set())
        assert not any(sum(s == Nb for s in shape) >= 2 for shape in shapes), shapes
    obs_big = observation_model(linear(jnp.ones((Nb, n))), obs_std=1.0)
    f = jax.make_jaxpr(lambda E: etkf_analysis(E, jnp.zeros(Nb), obs_big))
    assert (Nb, Nb) in _shapes_in(f(E).jaxpr, set())


@pytest.mark.parametrize("m", [4, 20], ids=["obs_space", "ensemble_space"])
def test_gradient_with_missing_observations_is_finite_and_matches_finite_differences(m):
    """``jax.grad`` through the analysis with respect to the observation errors: finite with
    missing observations (repeated zero eigenvalues), and equal to central differences."""
    n = 6
    E, y, _, H, _ = _problem(7 + m, n, m)
    y = y.at[np.array([0, 2])].set(jnp.nan)
    Hj = jnp.asarray(H)

    def score(std):
        Ea = etkf_analysis(E, y, observation_model(linear(Hj), obs_std=std))
        return jnp.sum(jnp.sin(Ea))

    value_and_grad = jax.jit(jax.value_and_grad(score))  # one compilation for both

    def f(s):
        return float(value_and_grad(s)[0])

    std = jnp.linspace(0.5, 1.5, m)
    g = np.asarray(value_and_grad(std)[1])
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[[0, 2]], 0.0, atol=1e-12)  # missing: no influence
    h = 1e-6
    fd = np.array([(f(std.at[j].add(h)) - f(std.at[j].add(-h))) / (2 * h) for j in (1, 3)])
    np.testing.assert_allclose(g[[1, 3]], fd, rtol=1e-5, atol=1e-8)


@settings(max_examples=5, deadline=None)
@given(
    st.integers(2, 10),  # N
    st.integers(1, 14),  # m
    st.integers(1, 8),  # n
    st.sampled_from([np.float32, np.float64]),
    st.integers(0, 2**31 - 1),
)
def test_etkf_update_matches_the_dense_transform_on_random_shapes(Nh, m, n, dtype, seed):
    rng = np.random.default_rng(seed)
    S = rng.normal(size=(Nh, m)) * rng.uniform(0.2, 1.5)
    S[:, rng.random(m) < 0.2] = 0.0  # some missing observations
    d = rng.normal(size=m) * (S.any(0))
    A = rng.normal(size=(Nh, n))
    wA, TA = jax.jit(etkf_update)(
        jnp.asarray(S, dtype), jnp.asarray(d, dtype), jnp.asarray(A, dtype)
    )
    assert wA.dtype == dtype and TA.dtype == dtype and wA.shape == (n,) and TA.shape == (Nh, n)
    lam, V = np.linalg.eigh(S @ S.T)
    T = (V * (1.0 + np.maximum(lam, 0.0)) ** -0.5) @ V.T
    w_ref = np.linalg.solve(np.eye(Nh) + S @ S.T, S @ d)
    tol = 2e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(TA, T @ A, rtol=tol, atol=tol * (1 + np.abs(A).max()))
    wA_ref = w_ref @ A
    np.testing.assert_allclose(wA, wA_ref, rtol=tol, atol=tol * (1 + np.abs(wA_ref).max()))
