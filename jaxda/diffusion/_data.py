r"""Training data generated in code from jaxda's Lorenz models (no downloads).

The noisy Lorenz-63 chain of score-based data assimilation (Rozet & Louppe 2023):

.. math:: x_{i+1} = \mathrm{RK4}(x_i; Δt) + η_i, \qquad η_i \sim \mathcal N(0, Δt\, I),
    \quad Δt = 0.025,

started from ``N((0,0,25), [[64,50,0],[50,81,0],[0,0,75]])`` and spun up onto the attractor.
States are standardized with :data:`LORENZ63_STANDARDIZER` (mean ``(0, 0, 25)``, std
``(8, 9, 8.6)``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import positive_or_error
from ..models import lorenz63, trajectory, with_noise


class Standardizer(NamedTuple):
    """Affine map ``z = (x - mean)/std`` applied on the last axis."""

    mean: Float[Array, " d"]
    std: Float[Array, " d"]

    def forward(self, x: Array) -> Array:
        return (x - self.mean) / self.std

    def inverse(self, z: Array) -> Array:
        return self.mean + self.std * z


LORENZ63_STANDARDIZER = Standardizer(jnp.array([0.0, 0.0, 25.0]), jnp.array([8.0, 9.0, 8.6]))


def noisy_lorenz63_step(key: Array, x: Float[Array, " 3"], dt: float = 0.025) -> Float[Array, " 3"]:
    """One transition of the noisy Lorenz-63 chain (RK4 step + ``N(0, dt I)`` noise), one state."""
    if jnp.shape(x) != (3,):
        raise ValueError(f"x must be one Lorenz-63 state of shape (3,), got {jnp.shape(x)}")
    positive_or_error("dt", dt)
    model = lorenz63(dt)
    return model(x) + math.sqrt(dt) * jax.random.normal(key, x.shape, x.dtype)


def lorenz63_trajectories(
    key: Array, n_traj: int, length: int, *, dt: float = 0.025, spinup: int = 1024
) -> Float[Array, "B L 3"]:
    """``n_traj`` independent noisy Lorenz-63 trajectories of ``length`` states (physical units).

    Examples:
        >>> import jax
        >>> lorenz63_trajectories(jax.random.key(0), 2, 5, spinup=10).shape
        (2, 5, 3)
    """
    if n_traj < 1 or length < 1 or spinup < 0:
        raise ValueError(
            f"need n_traj >= 1, length >= 1, spinup >= 0; got {n_traj}, {length}, {spinup}"
        )
    positive_or_error("dt", dt)
    model = with_noise(lorenz63(dt), math.sqrt(dt))
    k0, k1 = jax.random.split(key)
    mean = jnp.array([0.0, 0.0, 25.0])
    cov = jnp.array([[64.0, 50.0, 0.0], [50.0, 81.0, 0.0], [0.0, 0.0, 75.0]])
    x0 = jax.random.multivariate_normal(k0, mean, cov, (n_traj,))

    def one(k, x):
        xs = trajectory(k, model, x, spinup + length)
        return xs[spinup:]

    return jax.vmap(one)(jax.random.split(k1, n_traj), x0)


def sliding_windows(trajectories: Float[Array, "B L d"], window: int) -> Float[Array, "M window d"]:
    """All windows of ``window`` consecutive states, ``M = B (L - window + 1)``."""
    trajectories = jnp.asarray(trajectories)
    if trajectories.ndim != 3:
        raise ValueError(f"trajectories must have shape (B, L, d), got {trajectories.shape}")
    L = trajectories.shape[1]
    if not 1 <= window <= L:
        raise ValueError(f"window must be in [1, {L}], got {window}")
    idx = jnp.arange(L - window + 1)[:, None] + jnp.arange(window)[None, :]
    w = trajectories[:, idx]
    return w.reshape((-1, window, trajectories.shape[2]))
