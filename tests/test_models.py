import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.models import (
    forecast,
    lorenz63,
    lorenz63_rhs,
    lorenz96,
    lorenz96_rhs,
    rk4_step,
    trajectory,
)


def test_lorenz96_rhs_matches_loop_formula():
    x = jax.random.normal(jax.random.key(0), (9,))
    F = 8.0
    n = x.shape[0]
    expected = np.array(
        [(x[(i + 1) % n] - x[i - 2]) * x[i - 1] - x[i] + F for i in range(n)], dtype=float
    )
    np.testing.assert_allclose(lorenz96_rhs(x, F), expected, rtol=1e-12)


def test_lorenz96_constant_state_is_fixed_point():
    x = jnp.full(40, 8.0)
    np.testing.assert_allclose(lorenz96().step(x), x, atol=1e-12)


def test_lorenz63_rhs_by_hand():
    x = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(
        lorenz63_rhs(x), [10.0 * (2 - 1), 1 * (28 - 3) - 2, 1 * 2 - 8 / 3 * 3], rtol=1e-12
    )


def test_rk4_is_fourth_order():
    # dx/dt = -x has the exact solution exp(-t)
    def err(dt):
        steps = round(1.0 / dt)
        x = trajectory(lambda x: rk4_step(lambda v: -v, x, dt), jnp.ones(1), steps)[-1]
        return abs(float(x[0]) - np.exp(-1.0))

    ratio = err(0.1) / err(0.05)
    assert 14 < ratio < 18  # 2**4 = 16


def test_step_vmaps_over_members():
    m = lorenz96(n=12)
    E = jax.random.normal(jax.random.key(1), (5, 12))
    batched = jax.vmap(m.step)(E)
    for i in range(5):
        np.testing.assert_allclose(batched[i], m.step(E[i]), rtol=1e-12)


def test_trajectory_matches_python_loop():
    m = lorenz63()
    xs = trajectory(m.step, m.x0, 7)
    x = m.x0
    for k in range(7):
        x = m.step(x)
        np.testing.assert_allclose(xs[k], x, rtol=1e-12)


def test_forecast_noise_statistics():
    m = lorenz96(n=10)
    E = jnp.tile(jnp.full(10, 8.0), (4000, 1))  # fixed point: the spread is the noise alone
    Ef = forecast(jax.random.key(2), m.step, E, noise_std=0.3)
    np.testing.assert_allclose(jnp.std(Ef, axis=0), 0.3, rtol=0.06)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="n >= 4"):
        lorenz96(n=3)
    with pytest.raises(ValueError, match="dt must be positive"):
        lorenz63(dt=0.0)
    with pytest.raises(ValueError, match="PRNG key"):
        forecast(None, lorenz63().step, jnp.zeros((2, 3)), noise_std=1.0)
