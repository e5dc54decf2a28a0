"""Lorenz-63 and Lorenz-96 models, written for one state and pure."""

from __future__ import annotations

from functools import partial

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._integrate import Model, rk4_step


def lorenz63_rhs(
    x: Float[Array, " 3"], sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> Float[Array, " 3"]:
    r"""Lorenz (1963) vector field.

    .. math::
        \dot x = σ(y - x),\quad \dot y = x(ρ - z) - y,\quad \dot z = xy - βz
    """
    return jnp.stack([sigma * (x[1] - x[0]), x[0] * (rho - x[2]) - x[1], x[0] * x[1] - beta * x[2]])


def lorenz96_rhs(x: Float[Array, " n"], forcing: float | Array = 8.0) -> Float[Array, " n"]:
    r"""Lorenz (1996) vector field on a periodic ring of ``n >= 4`` variables.

    .. math:: \dot x_i = (x_{i+1} - x_{i-2})\,x_{i-1} - x_i + F
    """
    return (jnp.roll(x, -1) - jnp.roll(x, 2)) * jnp.roll(x, 1) - x + forcing


def lorenz63(
    dt: float = 0.01, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> Model:
    """Lorenz-63 with an RK4 step of length ``dt``.

    Example:
        >>> m = lorenz63()
        >>> m.step(m.x0).shape
        (3,)
    """
    if dt <= 0:
        raise ValueError(f"dt must be positive, got {dt}")
    rhs = partial(lorenz63_rhs, sigma=sigma, rho=rho, beta=beta)
    x0 = jnp.array([1.509, -1.531, 25.46])
    return Model(step=partial(rk4_step, rhs, dt=dt), dim=3, dt=dt, name="lorenz63", x0=x0)


def lorenz96(n: int = 40, forcing: float = 8.0, dt: float = 0.05) -> Model:
    """Lorenz-96 with ``n`` variables, forcing ``F`` and an RK4 step of length ``dt``.

    The reference initial state is ``e_0`` (one at index 0), as in DAPPER's
    Sakov et al. (2008) setup; the flow then spins up onto the attractor.

    Example:
        >>> m = lorenz96(n=40)
        >>> m.step(m.x0).shape
        (40,)
    """
    if n < 4:
        raise ValueError(f"Lorenz-96 needs n >= 4 variables, got n={n}")
    if dt <= 0:
        raise ValueError(f"dt must be positive, got {dt}")
    rhs = partial(lorenz96_rhs, forcing=forcing)
    x0 = jnp.zeros(n).at[0].set(1.0)
    return Model(step=partial(rk4_step, rhs, dt=dt), dim=n, dt=dt, name="lorenz96", x0=x0)
