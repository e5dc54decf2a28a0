"""The quasi-geostrophic model (Sakov & Oke 2008, DAPPER's QG) and its twin setup.

Small grids (17 × 17, 33 × 33) keep the tests fast; the discretisation does not depend on
the grid size. The comparison with DAPPER's compiled Fortran model at 129 × 129 is reported
in the project notes (it needs gfortran, so it is not a test here).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import with_inflation
from jaxda.ensemble import etkf
from jaxda.experiments import (
    linspace_int,
    qg_climatology,
    qg_initial_ensemble,
    qg_observation_network,
    qg_observation_series,
    qg_sakov2008,
    qg_simulate,
    qg_twin_experiment,
)
from jaxda.models import QG, arakawa_jacobian, forecast, helmholtz_solve, laplacian, qg


def _smooth_field(key, n, modes=4):
    """A smooth random field, zero on the boundary (a few sine modes)."""
    y = jnp.linspace(0.0, 1.0, n)
    c = jax.random.normal(key, (modes, modes))
    k = jnp.arange(1, modes + 1)
    sy = jnp.sin(jnp.pi * k[:, None] * y[None, :])  # (modes, n)
    return jnp.einsum("kl,ky,lx->yx", c, sy, sy)


def _random_interior(key, shape):
    return jnp.pad(jax.random.normal(key, (shape[0] - 2, shape[1] - 2)), 1)


_step = eqx.filter_jit(lambda m, x: m(x))
_jacobian = jax.jit(arakawa_jacobian)
_helmholtz = jax.jit(helmholtz_solve)


@pytest.mark.parametrize("shape", [(33, 33), (17, 33)])
def test_helmholtz_solve_inverts_the_five_point_operator(shape):
    q = jax.random.normal(jax.random.key(0), shape)
    h, F = 1.0 / 32, 1600.0
    psi = _helmholtz(q, F, h)
    assert np.all(np.asarray(psi[[0, -1], :]) == 0) and np.all(np.asarray(psi[:, [0, -1]]) == 0)
    back = jax.jit(laplacian)(psi, h) - F * psi
    np.testing.assert_allclose(back[1:-1, 1:-1], q[1:-1, 1:-1], rtol=0, atol=1e-11)


def test_helmholtz_solve_matches_a_dense_solve():
    # an independent reference: the 5-point operator assembled as a dense (81 × 81) matrix
    n, h, F = 11, 0.1, 3.0
    m = n - 2
    D = (
        np.diag(-2.0 * np.ones(m)) + np.diag(np.ones(m - 1), 1) + np.diag(np.ones(m - 1), -1)
    ) / h**2
    A = np.kron(D, np.eye(m)) + np.kron(np.eye(m), D) - F * np.eye(m * m)
    q = np.asarray(jax.random.normal(jax.random.key(1), (n, n)))
    ref = np.linalg.solve(A, q[1:-1, 1:-1].ravel()).reshape(m, m)
    np.testing.assert_allclose(_helmholtz(q, F, h)[1:-1, 1:-1], ref, rtol=1e-10, atol=1e-13)


def test_arakawa_jacobian_conserves_energy_and_enstrophy():
    k1, k2 = jax.random.split(jax.random.key(2))
    psi = _random_interior(k1, (33, 33))  # zero on the boundary, as ψ and q in the model
    q = _random_interior(k2, (33, 33))
    J = _jacobian(psi, q, 1.0 / 32)
    scale = float(jnp.sum(jnp.abs(J)))
    for weight in (psi, q):  # Σ ψ J(ψ, q) = 0 (energy), Σ q J(ψ, q) = 0 (enstrophy)
        assert abs(float(jnp.sum(weight * J))) < 1e-13 * scale * float(jnp.abs(weight).max())
    # antisymmetric, zero on the boundary
    np.testing.assert_allclose(J, -_jacobian(q, psi, 1.0 / 32), atol=1e-11)
    assert float(jnp.abs(J[0]).max()) == 0.0


def test_arakawa_jacobian_is_second_order_accurate():
    def error(n):
        y, x = jnp.meshgrid(jnp.linspace(0, 1, n), jnp.linspace(0, 1, n), indexing="ij")
        a, b = jnp.sin(2 * x) * jnp.cos(y), x * y**2
        exact = 2 * jnp.cos(2 * x) * jnp.cos(y) * 2 * x * y + jnp.sin(2 * x) * jnp.sin(y) * y**2
        return float(jnp.abs(_jacobian(a, b, 1.0 / (n - 1)) - exact)[1:-1, 1:-1].max())

    e1, e2 = error(17), error(33)
    assert e2 < 3e-3 and 3.5 < e1 / e2 < 4.5  # J = a_x b_y - a_y b_x, O(h²)


def test_first_step_from_rest_is_driven_by_the_wind():
    # q(t) = t curl τ + O(t²) from rest: an independent short-time Taylor check
    m = QG(9, dt=1e-3, substeps=1)
    psi = m.to_field(_step(m, m.x0))
    ref = _helmholtz(1e-3 * m.wind_curl(), m.F, m.spacing)
    # the O(t²) remainder (β-term, friction) is ~1e-6 relative here; a wrong sign, scale or
    # orientation of the wind would be O(1)
    np.testing.assert_allclose(psi, ref, rtol=0, atol=1e-4 * float(jnp.abs(ref).max()))


def test_free_inviscid_flow_conserves_energy():
    # no wind, no friction: E = -½ Σ ψ q is conserved by the Arakawa Jacobian and the
    # antisymmetric β-term (up to the RK4 time error)
    m = QG(17, F=10.0, wind=0.0, biharmonic_friction=0.0, rossby=1.0, dt=1e-3, substeps=4)
    psi = _smooth_field(jax.random.key(3), 17)
    x = m.to_state(psi)

    @jax.jit
    def energy(x):
        p = m.to_field(x)
        return -0.5 * jnp.sum(p * m.potential_vorticity(p))

    x1 = x
    for _ in range(3):
        x1 = _step(m, x1)
    assert float(jnp.abs(x1 - x).max()) > 0.05 * float(jnp.abs(x).max())  # it moved
    assert abs(float(energy(x1) / energy(x)) - 1.0) < 1e-9


def test_boundary_stays_zero_and_steps_stay_finite():
    m = qg(n=33)
    x = m.to_state(50.0 * _smooth_field(jax.random.key(4), 33))
    x_noisy_boundary = x.at[0].set(7.0)  # boundary entries of the input are ignored
    np.testing.assert_array_equal(_step(m, x_noisy_boundary), _step(m, x))
    for _ in range(3):
        x = _step(m, x)
    field = m.to_field(x)
    assert bool(jnp.all(jnp.isfinite(x)))
    assert float(jnp.abs(field[[0, -1], :]).max()) == 0.0
    assert float(jnp.abs(field[:, [0, -1]]).max()) == 0.0


def test_vmap_over_members_equals_one_by_one():
    m = qg(n=33)  # the model of the test above: its compiled step is reused
    keys = jax.random.split(jax.random.key(5), 2)
    E = jax.vmap(lambda k: m.to_state(_smooth_field(k, 33)))(keys)
    Ef = forecast(jax.random.key(0), m, E, 1)
    for i in range(2):
        np.testing.assert_allclose(Ef[i], _step(m, E[i]), rtol=1e-12, atol=1e-14)


def test_jvp_and_grad_are_finite_and_match_finite_differences():
    m = QG(9, substeps=1)
    x = m.to_state(20.0 * _smooth_field(jax.random.key(6), 9))
    v = m.to_state(_smooth_field(jax.random.key(7), 9))

    @jax.jit
    def derivatives(x, v, F):
        eps = 1e-5
        _, tangent = jax.jvp(m, (x,), (v,))
        fd = (m(x + eps * v) - m(x - eps * v)) / (2 * eps)
        g_F = jax.grad(lambda F: jnp.sum(eqx.tree_at(lambda m: m.F, m, F)(x) ** 2))(F)
        return tangent, fd, g_F

    tangent, fd, g_F = derivatives(x, v, jnp.asarray(1600.0))
    assert bool(jnp.all(jnp.isfinite(tangent)))
    np.testing.assert_allclose(tangent, fd, rtol=0, atol=1e-6 * float(jnp.abs(fd).max()))
    assert np.isfinite(float(g_F)) and float(g_F) != 0.0


def test_layout_and_locations_follow_dapper():
    m = qg(n=5)
    x = jnp.arange(25.0)
    field = m.to_field(x)
    # DAPPER: the Fortran array PSI(ix, iy) is x.reshape((n, n), order="F") -> flat ix + n iy
    np.testing.assert_array_equal(field, np.asarray(x).reshape((5, 5), order="F").T)
    np.testing.assert_array_equal(m.to_state(field), x)
    loc = m.locations
    assert loc.shape == (25, 2) and loc[7].tolist() == [1.0, 2.0]
    # the wind curl varies along y (rows) only: -2π sin(2π y)
    np.testing.assert_allclose(m.wind_curl()[1], -2 * np.pi * np.sin(2 * np.pi * 0.25) * np.ones(5))


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="n"):
        QG(4)
    with pytest.raises(ValueError, match="substeps"):
        QG(17, substeps=0)
    with pytest.raises(ValueError, match="F"):
        QG(17, F=-1.0)
    with pytest.raises(ValueError, match="dt"):
        QG(17, dt=0.0)
    with pytest.raises(ValueError, match="n²"):
        qg(n=17).to_field(jnp.zeros(10))
    with pytest.raises(ValueError, match="climatology"):
        qg_simulate(jax.random.key(0), qg_sakov2008(3, 0, n=17, n_obs=10), jnp.zeros((4, 10)))
    with pytest.raises(ValueError, match="spin_up"):
        qg_climatology(jax.random.key(0), qg(n=17), spin_up=-1)


def test_observation_network_is_dapper_s():
    jj = linspace_int(129 * 129, 300)
    assert jj[1] - jj[0] == 55 and jj[-1] == 16585
    net = qg_observation_network(129 * 129, 300, n_times=20)
    offsets = net - jj[None, :]
    assert np.all(offsets == offsets[:, :1]) and offsets.min() >= 0 and offsets.max() < 55
    # DAPPER seeds numpy's legacy generator with the observation index k
    assert offsets[3, 0] == int(np.floor(55 * np.random.RandomState(3).rand()))
    assert len(np.unique(offsets[:, 0])) > 5


def test_qg_twin_simulation_and_a_short_run():
    setup = qg_sakov2008(n_cycles=5, burn_in=2, n=9, n_obs=20)
    clim = qg_climatology(jax.random.key(0), qg(n=9), n_samples=20, spin_up=5, spacing=2)
    assert clim.shape == (20, 81) and bool(jnp.all(jnp.isfinite(clim)))
    res = qg_twin_experiment(jax.random.key(3), setup, with_inflation(etkf(), 1.04), 8, clim)
    assert np.isfinite(float(res.rmse_analysis)) and int(res.status) == 0
    data = res.data
    idx = np.asarray(data.observations.obs.operator.indices)  # pyright: ignore[reportAttributeAccessIssue]
    assert idx.shape == (5, 20) and data.observations.varying
    resid = np.asarray(data.observations.y) - np.take_along_axis(np.asarray(data.truth), idx, 1)
    assert 1.5 < resid.std() < 2.5  # R = 4 I
    fixed = qg_observation_series(setup, varying_network=False)
    assert not fixed.varying and fixed.obs.dim == 20
    E0 = np.asarray(qg_initial_ensemble(jax.random.key(2), clim, 8))
    assert all((np.asarray(clim) == e).all(axis=1).any() for e in E0)  # members of the sample
