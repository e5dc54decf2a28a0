"""Augmented-state parameter estimation (jaxda.models.augmented)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import assimilate, with_inflation
from jaxda.core import bounded, positive
from jaxda.ensemble import etkf
from jaxda.models import Augmented, Lorenz63, Lorenz96, augmented, trajectory, with_noise
from jaxda.observations import observation_model, observation_series, subset


def test_step_is_the_model_with_the_parameters_and_keeps_them():
    base = Lorenz96(n=10, forcing=8.0)
    aug = augmented(base, lambda m: m.forcing)
    assert isinstance(aug, Augmented) and not aug.stochastic
    x = jax.random.normal(jax.random.key(0), (10,)) + 3.0
    for F in (5.5, 8.0, 11.0):
        z = aug.augment(x, jnp.array([F]))
        z1 = aug.step(jax.random.key(1), z)
        np.testing.assert_allclose(z1[:10], Lorenz96(n=10, forcing=F)(x), rtol=1e-13)
        assert float(z1[10]) == F
        np.testing.assert_allclose(aug(z), z1, rtol=1e-13)


def test_noise_model_with_positive_std_and_vector_parameters():
    # Lorenz-63 with (rho, beta) and the model-noise std (through exp) estimated.
    base = with_noise(Lorenz63(), 0.3)
    aug = augmented(
        base,
        lambda m: (m.model.rho, m.model.beta, m.std),
        jnp.array([20.0, 2.0, 0.05]),
        transform=bounded(lower=np.array([-np.inf, -np.inf, 0.0])),  # pyright: ignore[reportArgumentType]
    )
    assert aug.dim == 6 and aug.stochastic
    np.testing.assert_allclose(aug.x0[3:], [20.0, 2.0, np.log(0.05)], rtol=1e-13)
    x, key = jnp.array([1.0, 2.0, 20.0]), jax.random.key(3)
    z1 = aug.step(key, aug.augment(x, jnp.array([20.0, 2.0, 0.05])))
    ref = with_noise(Lorenz63(rho=20.0, beta=2.0), 0.05).step(key, x)
    np.testing.assert_allclose(z1[:3], ref, rtol=1e-13)
    np.testing.assert_allclose(aug.parameters(z1), [20.0, 2.0, 0.05], rtol=1e-13)
    # A vector leaf (a forcing per variable) is flattened into the parameter vector.
    vec = augmented(Lorenz96(n=6, forcing=jnp.full(6, 8.0)), lambda m: m.forcing)
    assert vec.n_params == 6 and vec.dim == 12


def test_random_walk_moves_the_parameters_with_the_given_std():
    aug = augmented(Lorenz96(n=8), lambda m: m.forcing, transform=positive(), param_std=0.1)
    assert aug.stochastic
    keys = jax.random.split(jax.random.key(0), 4000)
    z = aug.augment(aug.x0[:8] + 1.0, jnp.array([8.0]))
    u1 = jax.jit(jax.vmap(aug.step, in_axes=(0, None)))(keys, z)[:, 8]
    du = u1 - jnp.log(8.0)
    # std 0.1 in the unconstrained (log) space: sample std within 5 standard errors.
    assert abs(float(jnp.std(du)) - 0.1) < 5 * 0.1 / np.sqrt(2 * 4000)
    assert abs(float(jnp.mean(du))) < 5 * 0.1 / np.sqrt(4000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"where": lambda m: m.nothing}, "where"),
        ({"theta0": jnp.array([1.0, 2.0])}, "theta0 must hold p=1"),
        ({"theta0": -1.0, "transform": positive()}, "outside the transform"),
        ({"param_std": -0.1}, "param_std"),
        ({"param_std": jnp.ones(3)}, "param_std"),
    ],
)
def test_bad_options_raise(kwargs, match):
    kwargs = {"where": lambda m: m.forcing, **kwargs}
    with pytest.raises(ValueError, match=match):
        augmented(Lorenz96(n=8), **kwargs)


def test_etkf_on_the_augmented_lorenz96_recovers_the_forcing():
    # Truth F = 8, n = 20, every other variable observed every step with std 0.5; the prior
    # on F is N(6, 0.7^2) (the truth 2.9 prior std away). After 150 cycles the ensemble mean
    # of F must be within 0.15 of 8 (8 seeds gave 7.94-8.04) and the ensemble must still cover it.
    n, F_true, K, N = 20, 8.0, 150, 20
    truth_model = Lorenz96(n=n, forcing=F_true)
    k_spin, k_obs, k_x, k_F, k_run = jax.random.split(jax.random.key(7), 5)
    x_start = trajectory(k_spin, truth_model, truth_model.x0, 300)[-1]
    xs = trajectory(k_spin, truth_model, x_start, K)
    idx = np.arange(0, n, 2)
    ys = xs[:, idx] + 0.5 * jax.random.normal(k_obs, (K, idx.size))
    aug = augmented(Lorenz96(n=n, forcing=6.0), lambda m: m.forcing)
    obs = observation_model(subset(idx, aug.dim), obs_std=0.5)
    series = observation_series(ys, obs, n_steps=1)
    X0 = x_start + 1.0 * jax.random.normal(k_x, (N, n))
    F0 = 6.0 + 0.7 * jax.random.normal(k_F, (N, 1))
    E0 = jax.vmap(aug.augment)(X0, F0)
    final, hist = assimilate(k_run, with_inflation(etkf(), 1.03), aug, series, E0)
    F = jax.vmap(aug.parameters)(final.ensemble)[:, 0]
    assert abs(float(F.mean()) - F_true) < 0.15, float(F.mean())
    assert abs(float(F.mean()) - F_true) < 4 * float(F.std()) + 0.05
    assert bool(jnp.all(hist.info.status == 0))
