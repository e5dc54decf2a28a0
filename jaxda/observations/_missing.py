r"""Missing observations: ``NaN`` in an observation vector means "not observed".

Every analysis in jaxda calls these helpers, so a missing value drops out of the update
exactly: its whitened innovation and its whitened predicted anomalies are zero (with a full
``R`` the missing entries are first decoupled from the observed ones, see
:meth:`FullNoise.restrict`). A time where everything is missing is a forecast only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ..core import FullNoise, Noise


def observed(y: Float[Array, "... m"]) -> Bool[Array, "... m"]:
    """The mask of present observations: ``True`` where ``y`` is finite.

    Examples:
        >>> observed(jnp.array([1.0, jnp.nan])).tolist()
        [True, False]
    """
    return jnp.isfinite(y)


def fill_missing(y: Float[Array, "... m"], mask: Bool[Array, "... m"], value=0.0) -> Array:
    """``y`` with missing entries replaced by ``value`` (so no NaN reaches the arithmetic)."""
    return jnp.where(mask, y, jnp.asarray(value, y.dtype))


def whitened_residual(
    noise: Noise, r: Float[Array, "... m"], mask: Bool[Array, " m"]
) -> Float[Array, "... m"]:
    r"""``R^{-1/2} r`` on the observed entries and ``0`` on the missing ones (``r`` may hold NaN
    where ``mask`` is False)."""
    r = jnp.where(mask, r, 0.0)
    return noise.restrict(mask).whiten(r) * mask


def whitened_residual_per_time(
    noise: Noise, r: Float[Array, "... S m"], mask: Bool[Array, "S m"]
) -> Float[Array, "... S m"]:
    """:func:`whitened_residual` at each of ``S`` observation times of the same network
    (``r`` with the time axis second to last, ``mask`` the present entries of each time).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.observations import gaussian_noise
        >>> r = jnp.array([[2.0, 4.0], [6.0, jnp.nan]])
        >>> whitened_residual_per_time(gaussian_noise(std=2.0, dim=2), r, observed(r)).tolist()
        [[1.0, 2.0], [3.0, 0.0]]
    """
    return jax.vmap(lambda rk, mk: whitened_residual(noise, rk, mk), (-2, 0), -2)(r, mask)


def log_likelihood(
    noise: Noise, r: Float[Array, " m"], mask: Bool[Array, " m"]
) -> Float[Array, ""]:
    """Gaussian log-density of the residual ``r`` over the observed entries only."""
    restricted = noise.restrict(mask)
    z = restricted.whiten(jnp.where(mask, r, 0.0)) * mask
    if isinstance(restricted, FullNoise):
        logdet = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(restricted.chol))) * mask)
    else:
        logdet = jnp.sum(jnp.log(restricted.std) * mask)
    return -0.5 * jnp.sum(z**2) - logdet - 0.5 * jnp.sum(mask) * math.log(2 * math.pi)
