"""Lorenz-63 and Lorenz-96 models, written for one state, as pytrees of their parameters."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import is_concrete
from ._integrate import Model, _check_dt, rk4_step


def lorenz63_rhs(
    x: Float[Array, " 3"],
    sigma: float | Array = 10.0,
    rho: float | Array = 28.0,
    beta: float | Array = 8.0 / 3.0,
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


class Lorenz63(Model):
    """Lorenz-63 with an RK4 step of length ``dt``; ``sigma``, ``rho``, ``beta`` are leaves.

    Examples:
        >>> m = Lorenz63()
        >>> m(m.x0).shape
        (3,)
    """

    sigma: float | Array = 10.0
    rho: float | Array = 28.0
    beta: float | Array = 8.0 / 3.0
    dt: float | Array = 0.01
    x0: Array = eqx.field(default_factory=lambda: jnp.array([1.509, -1.531, 25.46]))
    name: ClassVar[str] = "lorenz63"

    def __check_init__(self):
        _check_dt(self.dt)

    def __call__(self, x):
        return rk4_step(lambda z: lorenz63_rhs(z, self.sigma, self.rho, self.beta), x, self.dt)


class Lorenz96(Model):
    """Lorenz-96 on a ring of ``n`` variables with forcing ``F`` and an RK4 step ``dt``.

    The reference initial state ``x0`` is ``e_0`` (one at index 0), as in DAPPER's Sakov et
    al. (2008) setup; the flow then spins up onto the attractor. ``forcing`` is a pytree leaf:
    ``jax.grad`` and ``jax.vmap`` act on it.

    Examples:
        >>> import jax
        >>> m = Lorenz96(n=40)
        >>> m(m.x0).shape
        (40,)
        >>> float(jax.grad(lambda F: Lorenz96(n=8, forcing=F)(jnp.ones(8)).sum())(8.0)) > 0
        True
    """

    forcing: float | Array
    dt: float | Array
    x0: Array
    name: ClassVar[str] = "lorenz96"

    def __init__(self, n: int = 40, forcing: float | Array = 8.0, dt: float | Array = 0.05):
        if n < 4:
            raise ValueError(f"Lorenz-96 needs n >= 4 variables, got n={n}")
        _check_dt(dt)
        if is_concrete(forcing) and jnp.ndim(forcing) not in (0, 1):
            raise ValueError(
                f"forcing must be a scalar or an (n,) vector, got shape {jnp.shape(forcing)}"
            )
        self.forcing = forcing
        self.dt = dt
        self.x0 = jnp.zeros(n).at[0].set(1.0)

    def __call__(self, x):
        return rk4_step(lambda z: lorenz96_rhs(z, self.forcing), x, self.dt)


def lorenz63(
    dt: float = 0.01, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0
) -> Lorenz63:
    """:class:`Lorenz63` with the classical parameters."""
    return Lorenz63(sigma=sigma, rho=rho, beta=beta, dt=dt)


def lorenz96(n: int = 40, forcing: float | Array = 8.0, dt: float | Array = 0.05) -> Lorenz96:
    """:class:`Lorenz96` with ``n`` variables, forcing ``F`` and step ``dt``."""
    return Lorenz96(n=n, forcing=forcing, dt=dt)
