"""Kuramoto–Sivashinsky (ETDRK4) and two-scale Lorenz-96 models, and their literature setups."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.experiments import bocquet2019, lorenz1996_uv, wilks2005
from jaxda.models import (
    KuramotoSivashinsky,
    LorenzUV,
    kuramoto_sivashinsky,
    lorenz96,
    lorenz96_rhs,
    lorenz_uv,
    lorenz_uv_rhs,
    trajectory,
)


def _ks_run(dt, t_end, x, n, length):
    m = KuramotoSivashinsky(n=n, length=length, dt=dt, spinup=0.0)
    return trajectory(jax.random.key(0), m, jnp.asarray(x), round(t_end / dt))[-1]


def test_ks_etdrk4_is_fourth_order():
    # A smooth state (Kassam & Trefethen's initial condition) over 2 time units; the reference
    # uses a 64x finer step. (With many stiff modes, n=32 on L=8π, ETDRK4 shows the known
    # stiff order reduction at large steps: ratios 7-13 for dt 0.25..1/32.)
    n, length = 32, 32.0 * math.pi
    xg = length / n * np.arange(1, n + 1)
    x = np.cos(2 * np.pi * xg / length) * (1 + np.sin(2 * np.pi * xg / length))
    ref = _ks_run(1 / 256, 2.0, x, n, length)
    errs = [
        float(jnp.max(jnp.abs(_ks_run(dt, 2.0, x, n, length) - ref)))
        for dt in (0.25, 0.125, 0.0625)
    ]
    ratios = [errs[0] / errs[1], errs[1] / errs[2]]
    assert errs[0] > 1e-9  # the nonlinear term is resolved: not a trivially exact step
    for r in ratios:
        assert 13.0 < r < 19.0, (errs, ratios)  # 2^4 = 16


def test_ks_linear_part_exact_for_a_fourier_mode():
    n, length, dt = 64, 32.0 * math.pi, 0.5
    m = KuramotoSivashinsky(n=n, length=length, dt=dt, nonlinearity=0.0, spinup=0.0)
    x = m.grid
    for j in (1, 3, 7, 20):
        k = 2 * math.pi * j / length
        u0 = np.cos(k * x) + 0.5 * np.sin(k * x)
        growth = math.exp((k**2 - k**4) * 3 * dt)
        u3 = trajectory(jax.random.key(0), m, jnp.asarray(u0), 3)[-1]
        np.testing.assert_allclose(u3, growth * u0, rtol=0, atol=1e-12 * max(1.0, growth))


def test_ks_tiny_amplitude_follows_linear_growth():
    m = KuramotoSivashinsky(n=64, dt=0.5, spinup=0.0)
    k = 2 * math.pi * 5 / m.length  # an unstable mode: k² > k⁴
    u0 = 1e-8 * np.sin(k * m.grid)
    u1 = m(jnp.asarray(u0))
    np.testing.assert_allclose(u1, math.exp((k**2 - k**4) * 0.5) * u0, rtol=1e-6, atol=1e-20)


def test_ks_mean_conserved_and_attractor():
    m = kuramoto_sivashinsky(dt=0.5)
    u0 = m.x0 + 0.3  # a non-zero mean
    traj = trajectory(jax.random.key(0), m, u0, 200)
    np.testing.assert_allclose(traj.mean(axis=1), float(u0.mean()), atol=1e-12)
    assert bool(jnp.all(jnp.isfinite(traj)))
    assert 1.0 < float(jnp.abs(traj).max()) < 5.0  # KS amplitude stays O(1)


def test_ks_vmap_equals_per_member_and_grad():
    m = kuramoto_sivashinsky(dt=0.5)
    E = m.x0 + 0.1 * jax.random.normal(jax.random.key(1), (3, m.dim))
    batched = jax.vmap(m)(E)
    for i in range(3):
        np.testing.assert_allclose(batched[i], m(E[i]), atol=1e-13)
    small = m.x0[::4]  # 32 points of the attractor state
    g = jax.jit(
        jax.grad(
            lambda nu: jnp.sum(KuramotoSivashinsky(n=32, spinup=0.0, nonlinearity=nu)(small) ** 2)
        )
    )
    assert bool(jnp.isfinite(g(1.0))) and float(g(1.0)) != 0.0
    m32 = KuramotoSivashinsky(n=32, spinup=0.0)
    J = jax.jit(jax.jacfwd(lambda z: m32(z)))(small)
    assert J.shape == (32, 32) and bool(jnp.all(jnp.isfinite(J)))


def test_ks_locations_and_bad_inputs():
    m = KuramotoSivashinsky(n=16, spinup=0.0)
    np.testing.assert_array_equal(m.locations, np.arange(16.0))
    np.testing.assert_allclose(np.diff(m.grid), m.length / 16)
    with pytest.raises(ValueError, match="n"):
        KuramotoSivashinsky(n=15)
    with pytest.raises(ValueError, match="dt"):
        KuramotoSivashinsky(dt=-1.0)
    with pytest.raises(ValueError, match="length"):
        KuramotoSivashinsky(length=0.0)


def test_lorenz_uv_slow_part_is_lorenz96_without_coupling():
    K, J = 8, 4
    x = jax.random.normal(jax.random.key(0), (K * (J + 1),))
    d = lorenz_uv_rhs(x, K, forcing=10.0, coupling=0.0)
    np.testing.assert_allclose(d[:K], lorenz96_rhs(x[:K], 10.0), atol=1e-13)
    # with h = 0 the slow variables do not see the fast ones: one RK4 step of the two-scale
    # model moves U exactly as one Lorenz-96 step does
    m = lorenz_uv(n_slow=K, n_fast=J, forcing=10.0, coupling=0.0, dt=0.005)
    l96 = lorenz96(n=K, forcing=10.0, dt=0.005)
    np.testing.assert_allclose(jax.jit(m.__call__)(x)[:K], jax.jit(l96.__call__)(x[:K]), atol=1e-13)


def test_lorenz_uv_coupling_terms():
    # only one fast variable non-zero: the slow tendency feels -hc/b of it, and every fast
    # variable of block k feels +hc/b U_k
    K, J, h, b, c = 4, 3, 0.7, 5.0, 4.0
    x = jnp.zeros(K * (J + 1)).at[K + 4].set(2.0).at[2].set(1.5)
    d = lorenz_uv_rhs(x, K, forcing=0.0, coupling=h, spatial_scale=b, time_scale=c)
    expect_U = np.array([0, -h * c / b * 2.0, -1.5, 0])  # U_1 owns V_4; U_2 decays
    np.testing.assert_allclose(d[:K], expect_U, atol=1e-13)
    dV = np.asarray(d[K:])
    np.testing.assert_allclose(dV[6:9], h * c / b * 1.5, atol=1e-13)  # block of U_2
    assert dV[4] == pytest.approx(-c * 2.0)


def test_lorenz_uv_grad_and_shapes():
    m = lorenz_uv()
    assert m.dim == 36 * 11 and m.x0.shape == (396,)
    assert m.x0[m.slow].shape == (36,) and m.x0[m.fast].shape == (360,)
    x = jax.random.normal(jax.random.key(0), (8 * 5,))

    @jax.jit
    def loss(p):
        F, h, c, b = p
        mm = LorenzUV(n_slow=8, n_fast=4, forcing=F, coupling=h, time_scale=c, spatial_scale=b)
        return jnp.sum(mm(x) ** 2)

    g = jax.jit(jax.grad(loss))(jnp.array([10.0, 1.0, 10.0, 10.0]))
    assert g.shape == (4,) and bool(jnp.all(jnp.isfinite(g))) and bool(jnp.all(g != 0))
    # finite-difference check of the coupling derivative
    e = 1e-6
    p = jnp.array([10.0, 1.0, 10.0, 10.0])
    fd = (loss(p.at[1].add(e)) - loss(p.at[1].add(-e))) / (2 * e)
    assert float(g[1]) == pytest.approx(float(fd), rel=1e-5)
    Fs = jnp.array([8.0, 10.0])
    out = jax.vmap(lambda F: LorenzUV(n_slow=4, n_fast=2, forcing=F)(jnp.ones(12)))(Fs)
    assert out.shape == (2, 12)
    with pytest.raises(ValueError, match="n_slow"):
        LorenzUV(n_slow=2)
    with pytest.raises(ValueError, match="n_fast"):
        LorenzUV(n_fast=0)


def test_literature_setups():
    s = bocquet2019(n_cycles=10, burn_in=2)
    assert (s.model.dim, s.model.dt, s.obs_every, s.obs.dim) == (128, 0.5, 2, 128)
    np.testing.assert_allclose(s.initial.noise.std**2, 0.001)
    assert bocquet2019().n_cycles == 20_000 and bocquet2019().burn_in == 2_000
    w = wilks2005()
    assert (w.model.dim, w.obs.dim, w.obs_every, w.n_cycles, w.burn_in) == (264, 8, 10, 1280, 120)
    np.testing.assert_allclose(np.asarray(w.obs.operator.locations), np.arange(8))
    assert lorenz1996_uv().model.dim == 396
