r"""Standard optimization test functions, each written for one point ``x`` of any dimension ``n``.

=============  ==========================================================================  ====================  ============
name           :math:`f(x)`                                                                usual box             minimum
=============  ==========================================================================  ====================  ============
sphere         :math:`\sum_j x_j^2`                                                        :math:`[-5.12,5.12]`  0 at 0
rosenbrock     :math:`\sum_{j<n} 100 (x_{j+1} - x_j^2)^2 + (1 - x_j)^2`                    :math:`[-5, 10]`      0 at 1
rastrigin      :math:`10 n + \sum_j x_j^2 - 10 \cos(2π x_j)`                               :math:`[-5.12,5.12]`  0 at 0
ackley         :math:`-20 e^{-0.2\sqrt{\frac1n\sum x_j^2}} - e^{\frac1n\sum\cos 2πx_j}+20+e`  :math:`[-32.768,…]`   0 at 0
=============  ==========================================================================  ====================  ============

References:
    Surjanovic & Bingham, *Virtual Library of Simulation Experiments: Test Functions*
    (https://www.sfu.ca/~ssurjano/optimization.html); Rastrigin (1974); Ackley (1987).

Examples:
    >>> import jax.numpy as jnp
    >>> p = benchmark_problem("rosenbrock", 3)
    >>> float(p.fn(p.x_opt)), p.bounds.shape
    (0.0, (2, 3))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float


def sphere(x: Float[Array, " n"]) -> Float[Array, ""]:
    """Sphere ``Σ x_j²``; convex, minimum 0 at the origin."""
    return jnp.sum(x**2)


def rosenbrock(x: Float[Array, " n"]) -> Float[Array, ""]:
    """Rosenbrock ``Σ 100 (x_{j+1} - x_j²)² + (1 - x_j)²`` (n >= 2); minimum 0 at ``(1, …, 1)``."""
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rastrigin(x: Float[Array, " n"]) -> Float[Array, ""]:
    """Rastrigin ``10 n + Σ (x_j² - 10 cos 2π x_j)``; ~10ⁿ local minima, global 0 at 0."""
    return 10.0 * x.shape[-1] + jnp.sum(x**2 - 10.0 * jnp.cos(2.0 * jnp.pi * x))


def ackley(x: Float[Array, " n"]) -> Float[Array, ""]:
    """Ackley (a=20, b=0.2, c=2π); nearly flat outer region, global minimum 0 at 0."""
    n = x.shape[-1]
    r = jnp.sqrt(jnp.sum(x**2) / n)
    c = jnp.sum(jnp.cos(2.0 * jnp.pi * x)) / n
    return -20.0 * jnp.exp(-0.2 * r) - jnp.exp(c) + 20.0 + math.e


class Problem(NamedTuple):
    """A test problem: objective for one point, its usual box, and the known minimizer."""

    name: str
    fn: Callable[[Array], Array]
    bounds: Float[Array, "2 n"]
    x_opt: Float[Array, " n"]
    f_opt: float


_TABLE = {
    "sphere": (sphere, -5.12, 5.12, 0.0),
    "rosenbrock": (rosenbrock, -5.0, 10.0, 1.0),
    "rastrigin": (rastrigin, -5.12, 5.12, 0.0),
    "ackley": (ackley, -32.768, 32.768, 0.0),
}

PROBLEM_NAMES = tuple(_TABLE)


def benchmark_problem(name: str, dim: int) -> Problem:
    """Return the named test problem in dimension ``dim`` with its usual box and known minimum.

    ``name`` is one of ``"sphere"``, ``"rosenbrock"``, ``"rastrigin"``, ``"ackley"``.
    """
    if name not in _TABLE:
        raise ValueError(f"unknown problem {name!r}; expected one of {PROBLEM_NAMES}")
    dim = int(dim)
    if dim < 1 or (name == "rosenbrock" and dim < 2):
        raise ValueError(f"dim must be >= {2 if name == 'rosenbrock' else 1} for {name}, got {dim}")
    fn, lo, hi, xo = _TABLE[name]
    bounds = jnp.stack([jnp.full(dim, lo), jnp.full(dim, hi)])
    return Problem(name=name, fn=fn, bounds=bounds, x_opt=jnp.full(dim, xo), f_opt=0.0)
