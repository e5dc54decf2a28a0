r"""Constrained parameters through bijections to an unconstrained space.

Ensemble Kalman inversion, the unscented Kalman inversion and the gradient optimizers work in an
unconstrained space ``u ∈ ℝⁿ``; a :class:`Transform` maps it to the physical parameters
``θ = T(u)`` the forward model sees (as EnsembleKalmanProcesses.jl's ``constrained_gaussian``
and its parameter distributions do). :func:`bounded` covers every componentwise case with one
vector of lower and one of upper bounds:

=====================  ======================================  =================================
bounds of ``θ_i``      ``θ_i = T(u)_i``                        ``u_i = T^{-1}(θ)_i``
=====================  ======================================  =================================
``(-∞, ∞)``            ``u_i``                                 ``θ_i``
``(a, ∞)``             ``a + exp(u_i)``                        ``log(θ_i - a)``
``(-∞, b)``            ``b - exp(-u_i)``                       ``-log(b - θ_i)``
``(a, b)``             ``a + (b - a) σ(u_i)``                  ``logit((θ_i - a)/(b - a))``
=====================  ======================================  =================================

with ``σ`` the logistic function. A Gaussian prior on ``u`` is then a log-normal (one bound) or
logit-normal (two bounds) prior on ``θ``; :meth:`Transform.inverse` maps a prior ensemble drawn in
``θ`` to ``u``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class Transform(NamedTuple):
    """A bijection ``forward: u ↦ θ`` (unconstrained to constrained) and its ``inverse``,
    both written for one parameter vector (``jax.vmap`` them over an ensemble)."""

    forward: Callable[[Array], Array]
    inverse: Callable[[Array], Array]


def _identity(x: Array) -> Array:
    return x


def identity_transform() -> Transform:
    """The identity (no constraint).

    Examples:
        >>> import jax.numpy as jnp
        >>> identity_transform().forward(jnp.array([-1.0, 2.0])).tolist()
        [-1.0, 2.0]
    """
    return Transform(_identity, _identity)


def bounded(lower=-np.inf, upper=np.inf) -> Transform:
    r"""Componentwise bounds ``lower < θ < upper`` (scalars or vectors; ``±inf`` = no bound).

    The bounds must be concrete (they decide which of the four maps in the module table each
    component uses); ``lower < upper`` everywhere.

    Examples:
        >>> import jax.numpy as jnp
        >>> T = bounded(lower=jnp.array([0.0, -jnp.inf, 1.0]), upper=jnp.array([jnp.inf, jnp.inf, 3.0]))
        >>> theta = T.forward(jnp.zeros(3))
        >>> theta.tolist()
        [1.0, 0.0, 2.0]
        >>> [round(v, 6) for v in T.inverse(theta).tolist()]
        [0.0, 0.0, 0.0]
    """
    lo = np.asarray(lower, dtype=float)
    hi = np.asarray(upper, dtype=float)
    if np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
        raise ValueError("bounds must not be NaN (use -inf / inf for no bound)")
    try:
        lo_b, hi_b = np.broadcast_arrays(lo, hi)
    except ValueError as err:
        raise ValueError(f"lower {lo.shape} and upper {hi.shape} do not broadcast") from err
    if np.any(lo_b >= hi_b):
        raise ValueError("every lower bound must be strictly below its upper bound")
    has_lo, has_hi = np.isfinite(lo), np.isfinite(hi)
    both = has_lo & has_hi
    # Finite stand-ins where a bound is absent, so no inf enters the arithmetic (or gradients).
    lo_f = np.where(has_lo, lo, 0.0)
    hi_f = np.where(has_hi, hi, 1.0)
    width = np.where(both, hi_f - lo_f, 1.0)

    def forward(u: Float[Array, " n"]) -> Float[Array, " n"]:
        u = jnp.asarray(u)
        two = lo_f + width * jax.nn.sigmoid(u)
        low = lo_f + jnp.exp(jnp.where(has_lo & ~has_hi, u, 0.0))
        high = hi_f - jnp.exp(-jnp.where(has_hi & ~has_lo, u, 0.0))
        out = jnp.where(both, two, jnp.where(has_lo, low, jnp.where(has_hi, high, u)))
        return out.astype(u.dtype)

    def inverse(theta: Float[Array, " n"]) -> Float[Array, " n"]:
        theta = jnp.asarray(theta)
        p = jnp.where(both, (theta - lo_f) / width, 0.5)
        two = jnp.log(p) - jnp.log1p(-p)
        low = jnp.log(jnp.where(has_lo & ~has_hi, theta - lo_f, 1.0))
        high = -jnp.log(jnp.where(has_hi & ~has_lo, hi_f - theta, 1.0))
        out = jnp.where(both, two, jnp.where(has_lo, low, jnp.where(has_hi, high, theta)))
        return out.astype(theta.dtype)

    return Transform(forward, inverse)


def positive() -> Transform:
    """``θ > 0`` through ``θ = exp(u)`` (:func:`bounded` with ``lower=0``).

    Examples:
        >>> import jax.numpy as jnp
        >>> round(float(positive().forward(jnp.log(2.0))), 6)
        2.0
    """
    return bounded(lower=0.0)
