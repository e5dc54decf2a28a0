"""Property-based tests (hypothesis) of the core analyses on random shapes and dtypes:
outputs finite with the right shape and dtype, and the invariances that define each method."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxda.ensemble import enkf_analysis, etkf_analysis, letkf_analysis, local_observations
from jaxda.observations import linear, observation_model, subset

shapes = st.tuples(st.integers(2, 12), st.integers(1, 9), st.integers(1, 9))  # N, n, m
dtypes = st.sampled_from([jnp.float32, jnp.float64])
SETTINGS = settings(max_examples=4, deadline=None)
# each example has new shapes: one jitted program compiles faster than every primitive eagerly
_enkf, _etkf, _letkf = jax.jit(enkf_analysis), jax.jit(etkf_analysis), jax.jit(letkf_analysis)


def _case(seed, N, n, m, dtype):
    rng = np.random.default_rng(seed)
    E = jnp.asarray(rng.normal(size=(N, n)) * rng.uniform(0.5, 2.0, n), dtype)
    H = jnp.asarray(rng.normal(size=(m, n)), dtype)
    std = jnp.asarray(rng.uniform(0.3, 2.0, m), dtype)
    y = jnp.asarray(rng.normal(size=m), dtype)
    return E, observation_model(linear(H), obs_std=std), y, H, std


@SETTINGS
@given(shapes, dtypes, st.integers(0, 2**31 - 1))
def test_etkf_mean_is_the_kalman_mean_and_anomalies_stay_centred(shape, dtype, seed):
    N, n, m = shape
    E, obs, y, H, std = _case(seed, N, n, m, dtype)
    Ea = _etkf(E, y, obs)
    assert Ea.shape == (N, n) and Ea.dtype == dtype and bool(jnp.all(jnp.isfinite(Ea)))
    # dense Kalman update of the mean with the ensemble covariance (float64 reference)
    E64, H64, s64 = (np.asarray(a, np.float64) for a in (E, H, std))
    P = np.cov(E64, rowvar=False, ddof=1).reshape(n, n)
    S = H64 @ P @ H64.T + np.diag(s64**2)
    K = P @ H64.T @ np.linalg.inv(S)
    xm = E64.mean(0) + K @ (np.asarray(y, np.float64) - H64 @ E64.mean(0))
    tol = 1e-3 if dtype == jnp.float32 else 1e-8
    np.testing.assert_allclose(
        np.asarray(Ea).mean(0), xm, rtol=tol, atol=tol * (1 + np.abs(xm).max())
    )
    # analysis covariance is the Kalman one: (I - KH) P
    Pa = np.cov(np.asarray(Ea, np.float64), rowvar=False, ddof=1).reshape(n, n)
    Pk = (np.eye(n) - K @ H64) @ P
    np.testing.assert_allclose(Pa, Pk, atol=tol * 10 * (1 + np.abs(P).max()))


@SETTINGS
@given(shapes, st.integers(0, 2**31 - 1))
def test_enkf_equals_the_dense_perturbed_observation_formula(shape, seed):
    N, n, m = shape
    E, obs, y, H, std = _case(seed, N, n, m, jnp.float64)
    key = jax.random.key(seed % 1000)
    Ea = _enkf(key, E, y, obs)
    eps = obs.noise.sample(key, (N,))
    eps = eps - eps.mean(0)
    E64 = np.asarray(E)
    P = np.cov(E64, rowvar=False, ddof=1).reshape(n, n)
    Y = E64 @ np.asarray(H).T
    C_xy = (E64 - E64.mean(0)).T @ (Y - Y.mean(0)) / (N - 1)
    C_yy = (Y - Y.mean(0)).T @ (Y - Y.mean(0)) / (N - 1) + np.diag(np.asarray(std) ** 2)
    K = C_xy @ np.linalg.inv(C_yy)
    ref = E64 + (np.asarray(y) + np.asarray(eps) - Y) @ K.T
    np.testing.assert_allclose(Ea, ref, rtol=1e-8, atol=1e-8 * (1 + np.abs(P).max()))


@SETTINGS
@given(shapes, dtypes, st.integers(0, 2**31 - 1))
def test_missing_observation_equals_dropping_it(shape, dtype, seed):
    N, n, m = shape
    E, obs, y, H, std = _case(seed, N, n, m, dtype)
    j = seed % m
    y_missing = y.at[j].set(jnp.nan)
    keep = np.delete(np.arange(m), j)
    Ea = _etkf(E, y_missing, obs)
    assert bool(jnp.all(jnp.isfinite(Ea)))
    tol = 1e-4 if dtype == jnp.float32 else 1e-10
    if keep.size == 0:  # nothing observed: the forecast comes back (up to round-off)
        np.testing.assert_allclose(Ea, E, rtol=tol, atol=tol)
        return
    reduced = observation_model(linear(H[keep]), obs_std=std[keep])
    np.testing.assert_allclose(Ea, _etkf(E, y[keep], reduced), rtol=tol, atol=tol)


@SETTINGS
@given(st.integers(3, 8), st.integers(4, 16), dtypes, st.integers(0, 2**31 - 1))
def test_letkf_with_infinite_radius_is_the_etkf(N, n, dtype, seed):
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(n, size=rng.integers(1, n + 1), replace=False))
    obs = observation_model(subset(idx, n=n), obs_std=1.0)
    E = jnp.asarray(rng.normal(size=(N, n)), dtype)
    y = jnp.asarray(rng.normal(size=idx.size), dtype)
    local = local_observations(n, idx, radius=1e6)
    Ea = _letkf(E, y, obs, local)
    assert Ea.dtype == dtype
    tol = 2e-4 if dtype == jnp.float32 else 1e-9
    np.testing.assert_allclose(Ea, _etkf(E, y, obs), rtol=tol, atol=tol)
