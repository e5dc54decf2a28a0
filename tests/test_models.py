import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.models import (
    AdditiveNoise,
    Lorenz96,
    Model,
    forecast,
    from_callable,
    lorenz63,
    lorenz63_rhs,
    lorenz96,
    lorenz96_rhs,
    rk4_step,
    trajectory,
    with_noise,
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
    m = lorenz96()
    np.testing.assert_allclose(m(x), x, atol=1e-12)
    # the protocol step of a deterministic model ignores the key
    np.testing.assert_allclose(m.step(jax.random.key(0), x), x, atol=1e-12)


def test_lorenz63_rhs_by_hand():
    x = jnp.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(
        lorenz63_rhs(x), [10.0 * (2 - 1), 1 * (28 - 3) - 2, 1 * 2 - 8 / 3 * 3], rtol=1e-12
    )


def test_rk4_is_fourth_order():
    # dx/dt = -x has the exact solution exp(-t)
    def err(dt):
        steps = round(1.0 / dt)
        model = from_callable(lambda x: rk4_step(lambda v: -v, x, dt), jnp.ones(1), dt)
        x = trajectory(jax.random.key(0), model, jnp.ones(1), steps)[-1]
        return abs(float(x[0]) - np.exp(-1.0))

    ratio = err(0.1) / err(0.05)
    assert 14 < ratio < 18  # 2**4 = 16


def test_step_vmaps_over_members():
    m = lorenz96(n=12)
    E = jax.random.normal(jax.random.key(1), (5, 12))
    batched = jax.vmap(m)(E)
    for i in range(5):
        np.testing.assert_allclose(batched[i], m(E[i]), rtol=1e-12)


def test_trajectory_matches_python_loop():
    m = lorenz63()
    xs = trajectory(jax.random.key(0), m, m.x0, 7)
    x = m.x0
    for k in range(7):
        x = m(x)
        np.testing.assert_allclose(xs[k], x, rtol=1e-12)


def test_stochastic_trajectory_matches_python_loop():
    # with_noise + trajectory replaces stochastic_trajectory: x_{k+1} = M(x_k) + std·z_k with
    # z_k from the k-th split of the key
    m = with_noise(lorenz63(), 0.5)
    key = jax.random.key(3)
    xs = trajectory(key, m, m.x0, 5)
    x = m.x0
    for k, kk in enumerate(jax.random.split(key, 5)):
        x = lorenz63()(x) + 0.5 * jax.random.normal(kk, (3,))
        np.testing.assert_allclose(xs[k], x, rtol=1e-12)


def test_forecast_noise_statistics():
    m = with_noise(lorenz96(n=10), 0.3)
    E = jnp.tile(jnp.full(10, 8.0), (4000, 1))  # fixed point: the spread is the noise alone
    Ef = forecast(jax.random.key(2), m, E)
    np.testing.assert_allclose(jnp.std(Ef, axis=0), 0.3, rtol=0.06)


def test_noise_free_components():
    # a zero entry in a vector std leaves that variable deterministic
    m = with_noise(lorenz96(n=10), jnp.array([0.0] + [0.3] * 9))
    E = jnp.tile(jnp.full(10, 8.0), (2000, 1))
    Ef = forecast(jax.random.key(6), m, E)
    np.testing.assert_allclose(Ef[:, 0], 8.0, atol=1e-12)
    np.testing.assert_allclose(jnp.std(Ef[:, 1:], axis=0), 0.3, rtol=0.1)


def test_forecast_traced_n_steps_equals_static():
    m = with_noise(lorenz96(n=8), 0.1)
    E = jax.random.normal(jax.random.key(4), (5, 8)) + 8.0
    key = jax.random.key(5)
    ref = forecast(key, lorenz96(n=8), E, 3)
    det = jax.jit(lambda n: forecast(key, lorenz96(n=8), E, n, max_steps=6))(3)
    np.testing.assert_allclose(det, ref, rtol=1e-12)
    np.testing.assert_allclose(forecast(key, m, E, 0), E)  # zero steps: unchanged
    traced0 = jax.jit(lambda n: forecast(key, m, E, n, max_steps=4))(0)
    np.testing.assert_allclose(traced0, E)


def test_model_is_a_pytree_of_its_parameters():
    # the forcing is a leaf: grad and vmap act on it
    x = jnp.ones(8)
    g = jax.grad(lambda F: Lorenz96(n=8, forcing=F)(x).sum())(8.0)
    eps = 1e-6
    fd = (Lorenz96(n=8, forcing=8.0 + eps)(x).sum() - Lorenz96(n=8, forcing=8.0 - eps)(x).sum()) / (
        2 * eps
    )
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    Fs = jnp.array([6.0, 8.0, 10.0])
    out = jax.vmap(lambda F: Lorenz96(n=8, forcing=F)(x))(Fs)
    for i, F in enumerate(Fs):
        np.testing.assert_allclose(out[i], Lorenz96(n=8, forcing=F)(x), rtol=1e-12)
    assert lorenz96(n=8).dim == 8 and lorenz63().dim == 3
    assert isinstance(with_noise(lorenz63(), 1.0), AdditiveNoise)
    perfect = lorenz63()
    assert with_noise(perfect, 0.0) is perfect  # std 0: the perfect model itself


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="n >= 4"):
        lorenz96(n=3)
    with pytest.raises(ValueError, match="dt must be positive"):
        lorenz63(dt=0.0)
    with pytest.raises(ValueError, match="model-noise std must be non-negative"):
        with_noise(lorenz63(), -1.0)
    with pytest.raises(ValueError, match="model-noise std must be non-negative"):
        with_noise(lorenz63(), jnp.array([0.1, jnp.nan, 0.1]))
    with pytest.raises(ValueError, match="must have length 3"):
        with_noise(lorenz63(), jnp.ones(4))
    with pytest.raises(ValueError, match="positive semi-definite"):
        with_noise(lorenz63(), cov=-jnp.eye(3))
    with pytest.raises(ValueError, match="exactly one of"):
        with_noise(lorenz63(), 0.1, cov=jnp.eye(3))
    with pytest.raises(ValueError, match='per must be "step" or "time"'):
        with_noise(lorenz63(), 0.1, per="cycle")
    with pytest.raises(ValueError, match="3 rows"):
        with_noise(lorenz63(), sqrt=jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="same shape"):
        from_callable(lambda x: x[:2], jnp.ones(3))
    with pytest.raises(TypeError, match=r"jaxda\.models\.Model"):
        trajectory(jax.random.key(0), lambda x: x, jnp.ones(3), 2)
    with pytest.raises(ValueError, match="n_steps must be >= 0"):
        forecast(jax.random.key(0), lorenz63(), jnp.zeros((2, 3)), -1)
    with pytest.raises(ValueError, match="static max_steps"):
        jax.jit(lambda n: forecast(jax.random.key(0), lorenz63(), jnp.zeros((2, 3)), n))(2)
    assert issubclass(Lorenz96, Model)
