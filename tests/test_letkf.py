"""LETKF: local observation tables, local analyses against a dense Hunt et al. (2007)
reference, memory (no n×m intermediates), and the Sakov (2008) Lorenz-96 benchmark."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla

from jaxda.assimilate import with_inflation
from jaxda.ensemble import (
    LocalObs,
    batched_gram_functions,
    etkf_analysis,
    etkf_transform,
    gaspari_cohn,
    letkf,
    letkf_analysis,
    letkf_transform,
    local_observations,
)
from jaxda.experiments import sakov2008, twin_experiment
from jaxda.observations import from_callable, identity, observation_model, subset

# jit once per batch_size: eager op-by-op dispatch of the vmapped local analyses is slow.
# obs is a pytree argument; the table `local` is built outside (concrete), so O(n k) memory.
letkf_jit = jax.jit(letkf_analysis, static_argnames=("batch_size", "solver"))


def method_analysis(method, E, y, obs, key=None):
    """One analysis of a Method from a forecast ensemble (the old ``analysis(key, E, y)``)."""
    key = jax.random.key(0) if key is None else key
    state, _ = method.step(key, method.init(E, obs), y, obs)
    return state.ensemble


def dense_taper(n, obs_loc, radius, periodic=True, L=None):
    """Independent reference: the full n×m Gaspari–Cohn matrix from pairwise distances."""
    L = n if L is None else L
    d = np.abs(np.arange(n)[:, None] - np.asarray(obs_loc, float)[None, :])
    if periodic:
        d = np.minimum(d % L, L - d % L)
    return np.asarray(gaspari_cohn(jnp.asarray(d), radius))


def table_to_dense(local: LocalObs, m):
    idx, c = np.asarray(local.indices), np.asarray(local.coeffs)
    D = np.zeros((idx.shape[0], m))
    np.add.at(D, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), c.ravel())
    return D


@pytest.mark.parametrize(
    "n, obs_loc, radius, periodic",
    [
        (40, np.arange(40), 4.0, True),
        (50, np.arange(1, 50, 3), 2.5, True),
        (50, np.arange(1, 50, 3), 2.5, False),
        (30, np.array([29, 0, 5, 14, 14]), 1.7, True),  # unsorted, repeated location
        (20, np.arange(20), 10.0, True),  # support wider than the ring
    ],
)
def test_local_observations_match_dense_taper(n, obs_loc, radius, periodic):
    local = local_observations(n, obs_loc, radius, periodic=periodic)
    ref = dense_taper(n, obs_loc, radius, periodic)
    np.testing.assert_allclose(table_to_dense(local, len(obs_loc)), ref, atol=1e-12)
    # static width = the largest number of non-zero coefficients in a row
    assert local.indices.shape[1] == max(int((ref > 0).sum(axis=1).max()), 1)


def test_local_observations_cutoff_and_width():
    local = local_observations(1000, np.arange(1000), 4.0)
    assert local.indices.shape == (1000, 29)  # |d| < 2·4·√(10/3) ≈ 14.6
    cut = local_observations(1000, np.arange(1000), 4.0, cutoff=1e-3)
    assert cut.indices.shape[1] < 29
    assert np.all((np.asarray(cut.coeffs) > 1e-3) | (np.asarray(cut.coeffs) == 0))


def dense_letkf(E, y, H, obs_std, taper):
    """Dense LETKF of Hunt et al. (2007, eqs. 20-24) with R_loc^{-1} = diag(ρ_i)/σ², via scipy sqrtm."""
    E, y, H, taper = (np.asarray(a, float) for a in (E, y, H, taper))
    N, n = E.shape
    xb = E.mean(0)
    X = (E - xb).T  # (n, N)
    Yf = E @ H.T
    yb = Yf.mean(0)
    Y = (Yf - yb).T  # (m, N)
    Ea = np.empty_like(E)
    for i in range(n):
        Rinv = np.diag(taper[i] / obs_std**2)
        Pa = np.linalg.inv((N - 1) * np.eye(N) + Y.T @ Rinv @ Y)
        wbar = Pa @ Y.T @ Rinv @ (y - yb)
        W = np.real(sla.sqrtm((N - 1) * Pa))
        Ea[:, i] = xb[i] + X[i] @ (wbar[:, None] + W)
    return Ea


# k >= N (N×N form, a wide spectrum: eigh) and k < N (k×k form, Chebyshev expansion) local
# problems; batched_gram_functions is tested solver by solver below
@pytest.mark.parametrize("N, stride, radius", [(6, 1, 2.0), (12, 2, 1.5)])
def test_letkf_matches_dense_hunt_reference(N, stride, radius):
    n = 24
    idx = np.arange(0, n, stride)
    H = np.eye(n)[idx]
    std = np.linspace(0.5, 1.5, idx.size)
    obs = observation_model(subset(idx, n), obs_std=std)
    k1, k2 = jax.random.split(jax.random.key(0))
    E = 3.0 * jax.random.normal(k1, (N, n))
    y = jax.random.normal(k2, (idx.size,))
    local = local_observations(n, idx, radius)
    Ea = letkf_jit(E, y, obs, local)
    ref = dense_letkf(E, y, H, std, dense_taper(n, idx, radius))
    np.testing.assert_allclose(Ea, ref, atol=1e-10)
    # blocks of another size, and all points at once, do not change the result
    Eb = letkf_jit(E, y, obs, local, batch_size=n, solver="eigh")
    np.testing.assert_allclose(Eb, Ea, atol=1e-12)


def test_letkf_transform_small_and_large_forms_agree():
    S = jax.random.normal(jax.random.key(1), (9, 4))
    d = jax.random.normal(jax.random.key(2), (4,))
    w, T = jax.jit(letkf_transform)(S, d)  # k < N: k×k form
    w_ref, T_ref = jax.jit(etkf_transform)(S, d)  # N×N form
    np.testing.assert_allclose(w, w_ref, atol=1e-12)
    np.testing.assert_allclose(T, T_ref, atol=1e-12)
    # zero (padded) columns change nothing
    Sp = jnp.concatenate([S, jnp.zeros((9, 3))], axis=1)
    wp, Tp = jax.jit(letkf_transform)(Sp, jnp.concatenate([d, jnp.ones(3)]))
    np.testing.assert_allclose(wp, w_ref, atol=1e-12)
    np.testing.assert_allclose(Tp, T_ref, atol=1e-12)


def test_huge_radius_gives_global_etkf():
    n, N = 16, 8
    obs = observation_model(identity(n), obs_std=0.7)
    E = jax.random.normal(jax.random.key(3), (N, n))
    y = jax.random.normal(jax.random.key(4), (n,))
    local = local_observations(n, np.arange(n), 1e7)  # every coefficient 1 - O(1e-13)
    np.testing.assert_allclose(letkf_jit(E, y, obs, local), etkf_analysis(E, y, obs), atol=1e-9)


def test_unobserved_points_are_unchanged_and_mean_weights_local():
    n = 60
    idx = np.arange(0, 10)
    obs = observation_model(subset(idx, n), obs_std=1.0)
    local = local_observations(n, idx, 2.0, periodic=False)
    E = jax.random.normal(jax.random.key(5), (10, n))
    Ea = letkf_jit(E, jnp.ones(10), obs, local)
    far = np.asarray(dense_taper(n, idx, 2.0, periodic=False)).sum(1) == 0
    assert far.sum() > 30
    np.testing.assert_allclose(np.asarray(Ea)[:, far], np.asarray(E)[:, far], atol=1e-14)
    assert not np.allclose(Ea[:, :10], E[:, :10])


def test_vmap_over_ensembles():
    n = 20
    obs = observation_model(identity(n), obs_std=1.0)
    local = local_observations(n, np.arange(n), 2.0)
    Es = jax.random.normal(jax.random.key(6), (3, 5, n))
    y = jnp.zeros(n)
    batched = jax.jit(jax.vmap(lambda E: letkf_analysis(E, y, obs, local)))(Es)
    for b in range(3):
        np.testing.assert_allclose(batched[b], letkf_jit(Es[b], y, obs, local), atol=1e-12)


def test_letkf_method_equals_analysis_with_table_and_varying_network_fallback():
    # letkf(radius) builds the local table from obs.operator.locations in init (fixed network);
    # with a network passed as a traced argument it tapers every observation (O(n m)): same result
    n, N, radius = 30, 6, 2.0
    idx = np.arange(1, n, 3)
    obs = observation_model(subset(idx, n), obs_std=np.linspace(0.5, 1.5, idx.size))
    E = 2.0 * jax.random.normal(jax.random.key(7), (N, n))
    y = jax.random.normal(jax.random.key(8), (idx.size,)).at[2].set(jnp.nan)
    ref = letkf_jit(E, y, obs, local_observations(n, idx, radius))
    method = letkf(radius)
    state = method.init(E, obs)
    assert state.local is not None and state.local.indices.shape[0] == n
    np.testing.assert_allclose(method_analysis(method, E, y, obs), ref, atol=1e-12)
    # traced locations (as for a time-varying network inside the driver's scan)
    traced = jax.jit(lambda E, y, obs: method.step(None, method.init(E), y, obs)[0].ensemble)
    np.testing.assert_allclose(traced(E, y, obs), ref, atol=1e-12)
    # an operator given by a callable with locations is localized the same way
    fc = observation_model(
        from_callable(lambda x: x[idx], idx.size, locations=idx), obs_std=obs.noise.std
    )
    np.testing.assert_allclose(method_analysis(method, E, y, fc), ref, atol=1e-12)
    # the missing observation drops out: same as removing it
    keep = np.delete(np.arange(idx.size), 2)
    obs_r = observation_model(subset(idx[keep], n), obs_std=obs.noise.std[keep])
    np.testing.assert_allclose(
        letkf_jit(E, y[keep], obs_r, local_observations(n, idx[keep], radius)), ref, atol=1e-12
    )


def _max_intermediate_size(jaxpr):
    size = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            size = max(size, int(np.prod(getattr(v.aval, "shape", ()))))
        for p in eqn.params.values():
            for sub in p if isinstance(p, list | tuple) else [p]:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    size = max(size, _max_intermediate_size(getattr(inner, "jaxpr", inner)))
    return size


def test_memory_is_linear_no_n_by_m_intermediate():
    n, N = 4000, 10
    idx = np.arange(0, n, 2)
    obs = observation_model(subset(idx, n), obs_std=1.0)
    method = letkf(4.0, batch_size=256)
    E = jnp.zeros((N, n))
    f = lambda key, E, y: method_analysis(method, E, y, obs, key)  # noqa: E731
    jaxpr = jax.make_jaxpr(f)(jax.random.key(0), E, jnp.zeros(idx.size))
    biggest = _max_intermediate_size(jaxpr.jaxpr)
    assert biggest <= 4 * n * N, biggest  # O(nN + mN + nk); n·m would be 8e6
    assert biggest < n * idx.size / 50


def test_validation_errors():
    obs = observation_model(identity(10), obs_std=1.0)
    with pytest.raises(ValueError, match="radius must be positive"):
        local_observations(10, np.arange(10), -1.0)
    with pytest.raises(ValueError, match="obs_locations must not be empty"):
        local_observations(10, [], 1.0)
    local = local_observations(10, np.arange(10), 1.0)
    E = jnp.zeros((4, 12))
    with pytest.raises(ValueError, match=r"local\.indices must have shape"):
        letkf_analysis(E, jnp.zeros(12), observation_model(identity(12), obs_std=1.0), local)
    with pytest.raises(ValueError, match="batch_size"):
        letkf_analysis(jnp.zeros((4, 10)), jnp.zeros(10), obs, local, batch_size=0)
    with pytest.raises(ValueError, match="state_locations must have length"):
        local_observations(10, np.arange(10), 1.0, state_locations=np.arange(5))
    nonlinear = observation_model(from_callable(lambda x: x**2, 10), obs_std=1.0)
    E = jnp.zeros((4, 10))
    with pytest.raises(ValueError, match="observation locations"):
        letkf(2.0).init(E, nonlinear)
    with pytest.raises(ValueError, match="observation locations"):
        letkf(2.0).step(jax.random.key(0), letkf(2.0).init(E), jnp.zeros(10), nonlinear)
    with pytest.raises(ValueError, match="state_locations must have length"):
        letkf(2.0, state_locations=np.arange(5)).init(E, obs)
    with pytest.raises(ValueError, match="localization_radius"):
        letkf(0.0)
    with pytest.raises(ValueError, match="batch_size"):
        letkf(2.0, batch_size=0)


def test_sakov2008_letkf_rmse():
    """Sakov & Oke (2008) L96: LETKF N=7, inflation 1.04, radius 4 (DAPPER lists 0.22).

    Shorter than the 10,000-cycle benchmark (1500 cycles, 300 burn-in); over seeds the
    time mean lies in 0.21-0.23 (std of a 1200-cycle mean ≈ 0.005), so 0.24 is > 3σ away.
    """
    setup = sakov2008(n_cycles=1500, burn_in=300)
    method = with_inflation(letkf(localization_radius=4.0), 1.04)
    res = jax.jit(lambda k: twin_experiment(k, setup, method, 7))(jax.random.key(0))
    assert int(res.status) == 0
    assert bool(jnp.all(jnp.isfinite(res.history.rmse_analysis)))
    assert float(res.rmse_analysis) <= 0.24
    # a filter that tracks the truth: spread of the same order as the error
    assert 0.5 < float(res.spread_analysis / res.rmse_analysis) < 1.5


def _dense_matrix_function(G, kind):
    """Independent reference: NumPy eigen-decomposition in float64 of one symmetric matrix."""
    lam, V = np.linalg.eigh(np.asarray(G, np.float64))
    lam = np.maximum(lam, 0.0)
    f = {
        "inverse_1p": 1.0 / (1.0 + lam),
        "inverse_sqrt_1p": (1.0 + lam) ** -0.5,
        "sqrt_correction": -1.0 / (np.sqrt(1.0 + lam) * (1.0 + np.sqrt(1.0 + lam))),
    }[kind]
    return (V * f) @ V.T


@pytest.mark.parametrize("scale", [1.0, 30.0])  # typical (Chebyshev), wide (eigh fallback)
def test_batched_gram_functions_solvers_agree_with_dense_reference(scale):
    kinds = ("inverse_1p", "inverse_sqrt_1p", "sqrt_correction")
    A = scale * jax.random.normal(jax.random.key(5), (6, 9, 5))
    A = A.at[0, :, 2:].set(0.0)  # a rank-deficient matrix (padded / missing observations)
    G = jnp.einsum("bni,bnj->bij", A, A)
    # vectors and a matrix of right-hand sides (the ETKF's T applied to the identity)
    shapes = ((6, 5), (6, 5, 3), (6, 5))
    keys = jax.random.split(jax.random.key(6), 3)
    Bs = tuple(jax.random.normal(k, shape) for k, shape in zip(keys, shapes, strict=True))
    refs = [
        np.stack([_dense_matrix_function(G[b], kind) @ np.asarray(B[b]) for b in range(6)])
        for kind, B in zip(kinds, Bs, strict=True)
    ]
    solvers = ("auto", "eigh") if scale > 10 else ("auto", "eigh", "chebyshev")
    for solver in solvers:
        out = jax.jit(batched_gram_functions, static_argnums=(2, 3))(G, Bs, kinds, solver)
        for o, r in zip(out, refs, strict=True):
            np.testing.assert_allclose(o, r, atol=1e-12 * max(1.0, scale**2))
    if scale > 10:  # the expansion cannot reach rounding accuracy: an error, never a guess
        with pytest.raises(Exception, match="spectrum is too wide"):
            jax.block_until_ready(batched_gram_functions(G, Bs, kinds, "chebyshev"))

    # derivatives do not depend on the solver (Daleckii–Krein through eigh)
    def loss(G, solver):
        return sum(jnp.sum(o**2) for o in batched_gram_functions(G, Bs, kinds, solver))

    g_auto = jax.grad(loss)(G, "auto")
    g_eigh = jax.grad(loss)(G, "eigh")
    assert bool(jnp.all(jnp.isfinite(g_auto)))
    np.testing.assert_allclose(g_auto, g_eigh, atol=1e-10)
    with pytest.raises(ValueError, match="solver"):
        batched_gram_functions(G, Bs, kinds, "qr")
    with pytest.raises(ValueError, match="solver"):
        letkf(2.0, solver="qr")
