"""4DEnVar and weak-constraint 4D-Var against dense Gaussian conditioning (linear model and
observations, tiny problems)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.core import Status
from jaxda.observations import linear, observation_model, subset
from jaxda.variational import (
    background_covariance,
    fourdenvar_analysis,
    fourdvar_analysis,
    localization_sqrt,
    weak_fourdvar_analysis,
    weak_fourdvar_cost,
)

N_STATE, L_WIN = 3, 3
M = np.array([[0.9, 0.2, 0.0], [-0.1, 1.0, 0.3], [0.05, 0.0, 0.8]])
B = np.array([[1.0, 0.3, 0.1], [0.3, 0.8, -0.2], [0.1, -0.2, 0.5]])
H = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
R = np.array([[0.3, 0.05], [0.05, 0.2]])
XB = np.array([0.5, -1.0, 0.2])
YS = np.array([[0.9, -0.1], [0.2, 0.4], [-0.3, 0.8]])


def _exact_ensemble(cov, mean):
    """``n+1`` members whose sample mean is ``mean`` and sample covariance is ``cov`` exactly."""
    n = cov.shape[0]
    basis = np.concatenate([np.ones((n + 1, 1)), np.eye(n + 1)[:, :n]], axis=1)
    U = np.linalg.qr(basis)[0][:, 1:]  # orthonormal columns orthogonal to the ones vector
    return mean + np.sqrt(n) * U @ np.linalg.cholesky(cov).T


def _powers(A, L):
    return [np.linalg.matrix_power(A, k + 1) for k in range(L)]


def _condition(xb, cov, G, Rw, y):
    """Gaussian conditioning: the exact 4D-Var minimizer and the minimum of its cost."""
    d = y - G @ xb
    S = G @ cov @ G.T + Rw
    return xb + cov @ G.T @ np.linalg.solve(S, d), 0.5 * d @ np.linalg.solve(S, d)


def _window(A=M, mean=XB, cov=B):
    E0 = _exact_ensemble(cov, mean)
    Ms = _powers(A, L_WIN)
    traj = np.stack([Mk @ mean for Mk in Ms])
    ens_traj = np.stack([E0 @ Mk.T for Mk in Ms])
    G = np.concatenate([H @ Mk for Mk in Ms])
    return E0, traj, ens_traj, G, Ms


OBS = observation_model(linear(H), obs_cov=R)
RW = np.kron(np.eye(L_WIN), R)


def test_fourdenvar_exact_ensemble_equals_strong_4dvar():
    """An ensemble with sample covariance B and no localization: 4DEnVar = 4D-Var (control-
    space solve), with tangent or ensemble observed perturbations; jit and vmap agree."""
    E0, traj, ens_traj, G, Ms = _window()
    ref, f_ref = _condition(XB, B, G, RW, YS.ravel())
    for mode in ("tangent", "ensemble"):
        res = fourdenvar_analysis(XB, traj, E0, ens_traj, YS, OBS, obs_perturbations=mode)
        np.testing.assert_allclose(res.x0, ref, atol=1e-12)
        np.testing.assert_allclose(res.x, np.stack([Mk @ ref for Mk in Ms]), atol=1e-12)
        np.testing.assert_allclose(res.dx0, ref - XB, atol=1e-12)
        np.testing.assert_allclose(res.f, f_ref, rtol=1e-12)
        assert res.alpha.shape == (N_STATE + 1,) and res.v.shape == (0,)
        assert int(res.status) == Status.SUCCESS and int(res.n_obs) == YS.size
    run = jax.jit(lambda y: fourdenvar_analysis(XB, traj, E0, ens_traj, y, OBS).x0)
    np.testing.assert_allclose(run(YS), ref, atol=1e-12)
    batch = jax.vmap(run)(jnp.stack([YS, 2 * YS]))
    np.testing.assert_allclose(batch[1], _condition(XB, B, G, RW, 2 * YS.ravel())[0], atol=1e-12)


def test_fourdenvar_localization():
    """C = all ones is no localization; C = I keeps only the ensemble variances, which for a
    persistence model is 4D-Var with the diagonal B (observation-space solve); the eigen
    square root reproduces C."""
    E0, traj, ens_traj, G, _ = _window()
    plain = fourdenvar_analysis(XB, traj, E0, ens_traj, YS, OBS)
    ones = fourdenvar_analysis(XB, traj, E0, ens_traj, YS, OBS, C_sqrt=jnp.ones((N_STATE, 1)))
    np.testing.assert_allclose(ones.x, plain.x, atol=1e-12)
    assert ones.alpha.shape == (N_STATE + 1, 1)

    E0, traj, ens_traj, G, _ = _window(A=np.eye(N_STATE))
    C_sqrt = localization_sqrt(jnp.eye(N_STATE))
    assert C_sqrt.shape == (N_STATE, N_STATE)
    res = fourdenvar_analysis(XB, traj, E0, ens_traj, YS, OBS, C_sqrt=C_sqrt)
    ref, f_ref = _condition(XB, np.diag(np.diag(B)), G, RW, YS.ravel())
    np.testing.assert_allclose(res.x0, ref, atol=1e-12)
    np.testing.assert_allclose(res.f, f_ref, rtol=1e-12)
    assert not np.allclose(res.x0, plain.x0, atol=1e-3)

    d = np.abs(np.arange(6)[:, None] - np.arange(6)[None, :])
    C = np.exp(-0.5 * d**2)
    np.testing.assert_allclose(
        localization_sqrt(C, rank=6) @ localization_sqrt(C, rank=6).T, C, atol=1e-12
    )
    S = localization_sqrt(C, trace_fraction=0.9)
    lam = np.sort(np.linalg.eigvalsh(C))[::-1]
    assert S.shape[1] == np.searchsorted(np.cumsum(lam), 0.9 * lam.sum()) + 1


def test_fourdenvar_hybrid():
    """beta_e = 0, beta_s = 1 with the tangent-linear model of ``propagate`` is 4D-Var with the
    static B; half of each of the same B is 4D-Var with B (tangent or ensemble observed
    perturbations); the time-constant (FGAT) static
    increment is exact for a persistence model."""
    E0, traj, ens_traj, G, Ms = _window()
    Bs = 0.5 * np.eye(N_STATE) + 0.2
    propagate = lambda x0: jnp.stack([jnp.asarray(Mk) @ x0 for Mk in Ms])  # noqa: E731
    res = fourdenvar_analysis(
        XB,
        traj,
        E0,
        ens_traj,
        YS,
        OBS,
        B_static=background_covariance(cov=Bs),
        beta_ensemble=0.0,
        beta_static=1.0,
        propagate=propagate,
    )
    ref, f_ref = _condition(XB, Bs, G, RW, YS.ravel())
    np.testing.assert_allclose(res.x0, ref, atol=1e-12)
    np.testing.assert_allclose(res.x[-1], Ms[-1] @ ref, atol=1e-12)
    np.testing.assert_allclose(res.f, f_ref, rtol=1e-12)
    np.testing.assert_allclose(res.alpha, 0.0, atol=1e-14)
    assert res.v.shape == (N_STATE,)

    for mode in ("tangent", "ensemble"):
        half = fourdenvar_analysis(
            XB,
            traj,
            E0,
            ens_traj,
            YS,
            OBS,
            B_static=np.linalg.cholesky(B),
            beta_ensemble=0.5,
            beta_static=0.5,
            propagate=propagate,
            obs_perturbations=mode,
        )
        np.testing.assert_allclose(half.x0, _condition(XB, B, G, RW, YS.ravel())[0], atol=1e-12)

    E0, traj, ens_traj, G, _ = _window(A=np.eye(N_STATE))
    fgat = fourdenvar_analysis(
        XB, traj, E0, ens_traj, YS, OBS, B_static=np.linalg.cholesky(Bs), beta_ensemble=0.0
    )
    np.testing.assert_allclose(fgat.x0, _condition(XB, Bs, G, RW, YS.ravel())[0], atol=1e-12)


def test_fourdenvar_missing_observations_drop_out():
    """NaN observations (with a correlated R) equal conditioning on the present ones only."""
    E0, traj, ens_traj, G, _ = _window()
    ys = YS.copy()
    ys[0, 1] = ys[2, 0] = np.nan
    keep = np.isfinite(ys.ravel())
    ref, f_ref = _condition(XB, B, G[keep], RW[np.ix_(keep, keep)], ys.ravel()[keep])
    res = fourdenvar_analysis(XB, traj, E0, ens_traj, ys, OBS)
    np.testing.assert_allclose(res.x0, ref, atol=1e-12)
    np.testing.assert_allclose(res.f, f_ref, rtol=1e-12)
    assert int(res.n_obs) == keep.sum()
    bad = fourdenvar_analysis(XB * np.nan, traj, E0, ens_traj, ys, OBS)
    assert int(bad.status) == Status.NONFINITE


def _weak_reference(A, Bm, Qm, Hm, Rm, xb, ys):
    """Gaussian conditioning of the joint (x_0, eta_1..eta_L) of a linear model on the present
    observations (NaN rows dropped)."""
    n, L = len(xb), len(ys)
    T = [np.concatenate([np.eye(n)] + [np.zeros((n, n))] * L, axis=1)]
    for k in range(L):
        nxt = A @ T[-1]
        nxt[:, n * (k + 1) : n * (k + 2)] += np.eye(n)
        T.append(nxt)
    P = np.kron(np.diag([1.0] + [0.0] * L), Bm) + np.kron(np.diag([0.0] + [1.0] * L), Qm)
    G = np.concatenate([Hm @ Tk for Tk in T[1:]])
    keep = np.isfinite(ys.ravel())
    Rw = np.kron(np.eye(L), Rm)[np.ix_(keep, keep)]
    z, _ = _condition(np.concatenate([xb, np.zeros(n * L)]), P, G[keep], Rw, ys.ravel()[keep])
    return np.stack([Tk @ z for Tk in T])


def test_weak_fourdvar_equals_smoother_and_strong_limit():
    """Weak-constraint 4D-Var on a linear model = the Kalman smoother of the window (dense
    conditioning of the joint trajectory with process noise Q); as Q -> 0 it is 4D-Var."""
    step = lambda x: jnp.asarray(M) @ x  # noqa: E731
    obs_every = 2
    obs = observation_model(subset(jnp.array([0, 2]), N_STATE), obs_std=jnp.array([0.4, 0.6]))
    Hm = np.eye(N_STATE)[[0, 2]]
    Qm = np.array([[0.2, 0.05, 0.0], [0.05, 0.1, 0.0], [0.0, 0.0, 0.15]])
    Bo = background_covariance(chol=np.linalg.cholesky(B))
    Qo = background_covariance(chol=np.linalg.cholesky(Qm))
    ys = YS.copy()
    ys[1, 0] = np.nan
    weak = eqx.filter_jit(weak_fourdvar_analysis)  # one compilation for both calls
    res = weak(XB, ys, obs, Bo, Qo, step, obs_every, gtol=1e-10)
    assert int(res.status) == Status.SUCCESS and res.x.shape == (L_WIN + 1, N_STATE)
    A = np.linalg.matrix_power(M, obs_every)
    ref = _weak_reference(A, B, Qm, Hm, np.diag([0.16, 0.36]), XB, ys)
    np.testing.assert_allclose(res.x, ref, atol=1e-7)
    np.testing.assert_allclose(res.x[1:], res.x[:-1] @ A.T + res.eta, atol=1e-12)
    f = jax.jit(weak_fourdvar_cost, static_argnums=(7, 8))(
        res.x[0], res.eta, XB, ys, obs, Bo, Qo, step, obs_every
    )
    np.testing.assert_allclose(res.f, f, rtol=1e-12)

    tiny = weak(XB, ys, obs, Bo, Qo.scale(1e-12), step, obs_every, gtol=1e-10)
    strong, _ = eqx.filter_jit(fourdvar_analysis)(XB, ys, obs, Bo, step, obs_every, gtol=1e-10)
    np.testing.assert_allclose(tiny.x[0], strong, atol=1e-7)
    np.testing.assert_allclose(tiny.eta, 0.0, atol=1e-8)


def test_bad_inputs_raise():
    E0, traj, ens_traj, _, _ = _window()
    args = (XB, traj, E0, ens_traj, YS, OBS)

    def call(i, value, **kw):
        a = list(args)
        a[i] = value
        return fourdenvar_analysis(*a, **kw)

    with pytest.raises(ValueError, match="xb0"):
        call(0, XB[None])
    with pytest.raises(ValueError, match="xb_traj"):
        call(1, traj[:, :2])
    with pytest.raises(ValueError, match="ens0"):
        call(2, E0[:, :2])
    with pytest.raises(ValueError, match="2 members"):
        call(2, E0[:1])
    with pytest.raises(ValueError, match="ens_traj"):
        call(3, ens_traj[:2])
    with pytest.raises(ValueError, match="ys"):
        call(4, YS[:, :1])
    with pytest.raises(ValueError, match="C_sqrt"):
        call(0, XB, C_sqrt=jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="ensemble"):
        call(0, XB, C_sqrt=jnp.ones((3, 1)), obs_perturbations="ensemble")
    with pytest.raises(ValueError, match="obs_perturbations"):
        call(0, XB, obs_perturbations="exact")
    with pytest.raises(ValueError, match="beta_ensemble"):
        call(0, XB, beta_ensemble=-1.0)
    with pytest.raises(ValueError, match="dimension"):
        call(0, XB, B_static=background_covariance(std=1.0, dim=4))
    with pytest.raises(ValueError, match="propagate"):
        call(0, XB, B_static=1.0, propagate=lambda x: x)
    with pytest.raises(ValueError, match="square"):
        localization_sqrt(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="rank"):
        localization_sqrt(jnp.eye(3), rank=4)
    with pytest.raises(ValueError, match="trace_fraction"):
        localization_sqrt(jnp.eye(3), trace_fraction=1.5)

    step = lambda x: x  # noqa: E731
    with pytest.raises(ValueError, match="xb"):
        weak_fourdvar_analysis(XB[None], YS, OBS, 1.0, 1.0, step)
    with pytest.raises(ValueError, match="ys"):
        weak_fourdvar_analysis(XB, YS[:, :1], OBS, 1.0, 1.0, step)
    with pytest.raises(ValueError, match="obs_every"):
        weak_fourdvar_analysis(XB, YS, OBS, 1.0, 1.0, step, 0)
    with pytest.raises(ValueError, match="dimension"):
        weak_fourdvar_analysis(XB, YS, OBS, 1.0, background_covariance(std=1.0, dim=2), step)
    with pytest.raises(ValueError, match="step"):
        weak_fourdvar_analysis(XB, YS, OBS, 1.0, 1.0, lambda x: x[:2])
