"""2-D Kolmogorov flow (jaxda.models.Kolmogorov): exact solutions of the vorticity equation,
the velocity and spectrum helpers against analytic fields, invariants, jit/vmap/grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.models import (
    Kolmogorov,
    coarsen,
    energy_spectrum,
    kolmogorov,
    kolmogorov_trajectories,
    random_vorticity,
    velocity,
)

N = 32


def _grid(n=N):
    g = 2.0 * np.pi * np.arange(n) / n
    y, x = np.meshgrid(g, g, indexing="ij")  # rows y, columns x
    return x, y


def _run(model, x, steps):
    return jax.jit(lambda x: jax.lax.fori_loop(0, steps, lambda _, x: model(x), x))(x)


def test_laminar_kolmogorov_state_is_steady():
    # ω* = -A k_f cos(k_f y)/(ν k_f² + α): advection vanishes (ω depends on y only, v = 0) and
    # ETDRK4 integrates the linear part and the constant force exactly
    nu, alpha, kf, amp = 1e-3, 0.1, 4.0, 1.3
    m = kolmogorov(n=N, reynolds=1 / nu, drag=alpha, forcing_wavenumber=kf, dt=0.05)
    m = Kolmogorov(N, viscosity=nu, drag=alpha, forcing_wavenumber=kf, forcing_amplitude=amp,
                   dt=0.05, x0=m.x0)  # fmt: skip
    _, y = _grid()
    steady = (-amp * kf * np.cos(kf * y) / (nu * kf**2 + alpha)).ravel()
    np.testing.assert_allclose(m.laminar(), steady, atol=1e-12)
    x = _run(m, jnp.asarray(steady), 200)
    np.testing.assert_allclose(x, steady, atol=1e-11 * np.abs(steady).max())
    # a perturbed start relaxes towards it only through the damping: not a fixed point
    assert float(jnp.abs(m(jnp.asarray(0.5 * steady)) - 0.5 * steady).max()) > 1e-3


@pytest.mark.parametrize("mode", ["taylor_green", "shell_25"])
def test_single_shell_decays_at_the_exact_viscous_rate(mode):
    # modes of one shell |k|² = K satisfy ω = K ψ, so u·∇ω = K u·∇ψ = 0: pure decay
    # exp(-(ν K + α) t) when unforced
    x, y = _grid()
    if mode == "taylor_green":
        w0, K = np.cos(x) * np.cos(y), 2.0
    else:
        w0, K = (
            np.cos(3 * x + 4 * y) + 0.7 * np.sin(5 * x + 0.3) - 0.4 * np.cos(4 * x - 3 * y),
            25.0,
        )
    nu, alpha, dt, steps = 0.02, 0.1, 0.1, 30
    m = Kolmogorov(N, viscosity=nu, drag=alpha, forcing_amplitude=0.0, dt=dt, substeps=2,
                   x0=jnp.asarray(w0.ravel()))  # fmt: skip
    out = _run(m, m.x0, steps)
    expected = w0.ravel() * np.exp(-(nu * K + alpha) * dt * steps)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_velocity_of_analytic_fields_is_divergence_free_with_curl_omega():
    x, y = _grid()
    # ω = cos(3x + 4y): ψ = ω/25, u = ∂_y ψ = -4 sin(.)/25, v = -∂_x ψ = 3 sin(.)/25
    u, v = velocity(np.cos(3 * x + 4 * y))
    np.testing.assert_allclose(u, -4 * np.sin(3 * x + 4 * y) / 25, atol=1e-13)
    np.testing.assert_allclose(v, 3 * np.sin(3 * x + 4 * y) / 25, atol=1e-13)
    # random field: finite-difference (4th order) divergence ≈ 0, curl ≈ ω (smooth field)
    w = np.asarray(random_vorticity(jax.random.key(1), 64, peak_wavenumber=3.0))
    u, v = map(np.asarray, velocity(w))
    h = 2 * np.pi / 64

    def d(f, axis):
        return (8 * (np.roll(f, -1, axis) - np.roll(f, 1, axis))
                - (np.roll(f, -2, axis) - np.roll(f, 2, axis))) / (12 * h)  # fmt: skip

    scale = np.abs(w).max()
    assert np.abs(d(u, 1) + d(v, 0)).max() < 1e-3 * scale
    assert np.abs(d(v, 1) - d(u, 0) - w).max() < 2e-2 * scale
    assert np.abs(d(v, 1) - d(u, 0) - w).max() > 0  # a finite-difference, not a spectral, check


def test_mean_vorticity_stays_zero_and_inviscid_invariants_are_conserved():
    # the dealiased advection conserves energy ½⟨|u|²⟩ and enstrophy ½⟨ω²⟩ exactly; with
    # ν = α = A = 0 only the RK4 time error (O(dt⁴)) remains
    w0 = random_vorticity(jax.random.key(2), N, rms_velocity=1.0).ravel()
    m = Kolmogorov(N, viscosity=0.0, drag=0.0, forcing_amplitude=0.0, dt=0.005, x0=w0)
    w0 = m(w0)  # projected on the dealiased modes
    out = _run(m, w0, 200)
    assert abs(float(out.mean())) < 1e-13
    assert float(jnp.abs(out - w0).max()) > 0.1 * float(jnp.abs(w0).max())  # the flow moved

    def energy(w):
        return float(energy_spectrum(m.to_field(w))[1].sum())

    np.testing.assert_allclose(energy(out), energy(w0), rtol=1e-7)
    np.testing.assert_allclose(float(jnp.mean(out**2)), float(jnp.mean(w0**2)), rtol=1e-6)
    # the forced, damped turbulent flow keeps a zero mean too
    forced = kolmogorov(n=N, reynolds=200.0, forcing_wavenumber=2.0)
    assert abs(float(_run(forced, w0, 100).mean())) < 1e-12


def test_energy_spectrum_of_known_fields():
    x, y = _grid()
    # ω = a cos(3x + 4y): |u|² = a² sin²/25, mean energy a²/(4·25) = 0.04 at a = 2, shell 5
    k, E = energy_spectrum(2.0 * np.cos(3 * x + 4 * y))
    assert k.shape == E.shape and int(k[-1]) >= int(np.ceil(np.sqrt(2) * N / 2))
    expected = np.zeros(E.shape)
    expected[5] = 0.04
    np.testing.assert_allclose(E, expected, atol=1e-14)
    # two shells and Parseval on a random field: Σ E = ½⟨u² + v²⟩; batched over a leading axis
    k, E = energy_spectrum(np.stack([np.sin(x), np.cos(x) * np.cos(y) + np.sin(7 * y)]))
    np.testing.assert_allclose(E[0, 1], 0.25, atol=1e-14)  # ω = sin x: ½⟨sin²⟩ = 1/4
    # cos x cos y = ½cos(x+y) + ½cos(x-y): |k|² = 2 (shell 1), energy 2·(½)²/(4·2) = 1/16
    np.testing.assert_allclose(E[1, [1, 7]], [1 / 16, 1 / (4 * 49)], atol=1e-14)
    w = random_vorticity(jax.random.key(3), N)
    u, v = velocity(w)
    np.testing.assert_allclose(energy_spectrum(w)[1].sum(), 0.5 * jnp.mean(u**2 + v**2), rtol=1e-12)


def test_coarsen_is_a_block_mean():
    f = np.random.default_rng(0).normal(size=(3, 8, 8))
    c = coarsen(f, 4)
    assert c.shape == (3, 2, 2)
    np.testing.assert_allclose(c[1, 1, 0], f[1, 4:8, 0:4].mean())
    with pytest.raises(ValueError, match="factor"):
        coarsen(f, 3)


def test_jit_vmap_grad_and_trajectories():
    m = kolmogorov(n=16, reynolds=100.0, forcing_wavenumber=2.0, dt=0.05)
    E = jnp.stack([random_vorticity(k, 16).ravel() for k in jax.random.split(jax.random.key(4), 3)])
    out = jax.jit(jax.vmap(m))(E)
    np.testing.assert_allclose(out[1], m(E[1]), atol=1e-12)

    def loss(nu):
        mm = Kolmogorov(16, viscosity=nu, drag=0.1, forcing_wavenumber=2.0, dt=0.05, x0=m.x0)
        x = jax.lax.fori_loop(0, 5, lambda _, x: mm(x), E[0])
        return jnp.sum(x**2)

    g = jax.jit(jax.grad(loss))(0.01)
    fd = jnp.diff(jax.jit(jax.vmap(loss))(jnp.array([0.01 - 1e-6, 0.01 + 1e-6])))[0] / 2e-6
    assert np.isfinite(g) and g < 0  # more viscosity, less enstrophy
    np.testing.assert_allclose(g, fd, rtol=1e-5)
    # vmap over a parameter
    nus = jnp.array([0.005, 0.01])
    outs = jax.vmap(lambda nu: Kolmogorov(16, viscosity=nu, x0=m.x0, forcing_wavenumber=2.0)(E[0]))(
        nus
    )
    assert outs.shape == (2, 256) and not np.allclose(outs[0], outs[1])
    # training set: shapes, the records are `every` steps apart, trajectories differ
    X = kolmogorov_trajectories(jax.random.key(5), m, 2, n_steps=3, spinup=4, every=2)
    assert X.shape == (2, 3, 256)
    np.testing.assert_allclose(X[0, 1], m(m(X[0, 0])), atol=1e-12)
    assert not np.allclose(X[0], X[1])


def test_bad_options_raise():
    with pytest.raises(ValueError, match="n"):
        kolmogorov(n=15)
    with pytest.raises(ValueError, match="forcing_wavenumber"):
        kolmogorov(n=16, forcing_wavenumber=6.0)  # (16-1)//3 = 5 is the largest resolved
    with pytest.raises(ValueError, match="drag"):
        kolmogorov(n=16, drag=-0.1)
    with pytest.raises(ValueError, match="reynolds"):
        kolmogorov(n=16, reynolds=0.0)
    with pytest.raises(ValueError, match="x0"):
        Kolmogorov(16, x0=jnp.zeros(17))
    with pytest.raises(ValueError, match="every"):
        kolmogorov_trajectories(jax.random.key(0), kolmogorov(n=16), 1, 1, 0, every=0)


def test_etdrk4_is_fourth_order_in_time_on_the_turbulent_flow():
    # the nonlinear, forced flow over one time unit against a 128-substep reference: halving
    # the step divides the error by about 2⁴ = 16
    w0 = random_vorticity(jax.random.key(6), 16, peak_wavenumber=2.0, rms_velocity=1.0).ravel()

    def run(substeps):
        m = Kolmogorov(16, viscosity=0.01, drag=0.1, forcing_wavenumber=2.0, dt=0.5,
                       substeps=substeps, x0=w0)  # fmt: skip
        return m(m(w0))

    ref = run(128)
    e1, e2 = (float(jnp.abs(run(s) - ref).max()) for s in (8, 16))
    assert 1e-9 < e2 < e1 < 1e-2
    assert 10.0 < e1 / e2 < 24.0, e1 / e2
