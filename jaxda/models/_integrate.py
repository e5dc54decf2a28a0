"""Time stepping shared by all models: RK4 and trajectory generation with ``lax.scan``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import positive_or_error

Rhs = Callable[[Array], Array]
Step = Callable[[Array], Array]


@dataclass(frozen=True, eq=False)
class Model:
    """A deterministic discrete-time model written for **one** state.

    A plain static container (not a pytree): close over it in jitted code.

    Attributes:
        step: ``x_{k+1} = step(x_k)`` for a single state of shape ``(n,)``; vmap it
            for ensembles.
        dim: state dimension ``n``.
        dt: time step between two calls of ``step``.
        name: short name used by the CLI and reports.
        x0: a reference initial state (e.g. on or near the attractor).
    """

    step: Step
    dim: int
    dt: float
    name: str
    x0: Float[Array, " n"]


def rk4_step(rhs: Rhs, x: Float[Array, " n"], dt: float) -> Float[Array, " n"]:
    r"""One classical Runge–Kutta (RK4) step of ``dx/dt = rhs(x)``.

    .. math:: x_{k+1} = x_k + \tfrac{dt}{6}(k_1 + 2k_2 + 2k_3 + k_4)

    Example:
        >>> import jax.numpy as jnp
        >>> rk4_step(lambda x: -x, jnp.ones(2), 0.1).round(6).tolist()
        [0.904837, 0.904837]
    """
    k1 = rhs(x)
    k2 = rhs(x + 0.5 * dt * k1)
    k3 = rhs(x + 0.5 * dt * k2)
    k4 = rhs(x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def trajectory(step: Step, x0: Float[Array, " n"], n_steps: int) -> Float[Array, "K n"]:
    """States ``x_1 .. x_K`` obtained by iterating ``step`` from ``x0`` (``lax.scan``).

    Example:
        >>> import jax.numpy as jnp
        >>> trajectory(lambda x: 2 * x, jnp.ones(1), 3)[:, 0].tolist()
        [2.0, 4.0, 8.0]
    """

    def body(x, _):
        x = step(x)
        return x, x

    _, xs = jax.lax.scan(body, x0, None, length=n_steps)
    return xs


def stochastic_trajectory(
    key: Array, step: Step, x0: Float[Array, " n"], n_steps: int, noise_std: Array | float
) -> Float[Array, "K n"]:
    r"""Trajectory of ``x_{k+1} = step(x_k) + η_k`` with ``η_k ~ N(0, diag(noise_std²))``."""
    noise_std = jnp.asarray(noise_std)
    keys = jax.random.split(key, n_steps)

    def body(x, k):
        x = step(x) + noise_std * jax.random.normal(k, x.shape, x.dtype)
        return x, x

    _, xs = jax.lax.scan(body, x0, keys)
    return xs


def forecast(
    key: Array | None,
    step: Step,
    ensemble: Float[Array, "N n"],
    noise_std: Array | float = 0.0,
    n_steps: int = 1,
) -> Float[Array, "N n"]:
    r"""Propagate every member ``n_steps`` times: ``x^{(i)} ← M(x^{(i)}) + η^{(i)}``.

    The model is vmapped over members. Model noise ``η ~ N(0, diag(noise_std²))``
    is added after each step when ``noise_std`` is non-zero (then ``key`` is required).
    """
    static_zero = isinstance(noise_std, int | float) and noise_std == 0.0
    vstep = jax.vmap(step)
    if static_zero:  # perfect model: no random numbers are drawn (key may be None)

        def body(E, _):
            return vstep(E), None

        E, _ = jax.lax.scan(body, ensemble, None, length=n_steps)
        return E
    if key is None:
        raise ValueError("forecast with model noise needs a PRNG key")
    noise_std = positive_or_error("noise_std", noise_std)
    keys = jax.random.split(key, n_steps)

    def body_noisy(E, k):
        E = vstep(E) + noise_std * jax.random.normal(k, E.shape, E.dtype)
        return E, None

    E, _ = jax.lax.scan(body_noisy, ensemble, keys)
    return E
