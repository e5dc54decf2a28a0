r"""Distance-based localization: Gaspari–Cohn taper with DAPPER's radius convention."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import check_in_range, is_concrete

GC_SCALE = math.sqrt(10.0 / 3.0)


def gaspari_cohn(distance: Float[Array, "..."], radius: float | Array) -> Float[Array, "..."]:
    r"""Gaspari & Cohn (1999, eq. 4.10) fifth-order compactly supported taper.

    ``radius`` follows DAPPER/Sakov: the GC half-width is ``c = radius·√(10/3)``,
    so the taper equals ``exp(-1/2)`` (approximately) at ``distance = radius``,
    like a Gaussian of std ``radius``, and vanishes beyond ``2c``.

    Examples:
        >>> float(gaspari_cohn(jnp.array(0.0), 4.0))
        1.0
    """
    if is_concrete(radius):
        check_in_range("localization radius", float(radius), 0.0, math.inf, closed_low=False)
    c = radius * GC_SCALE
    r = jnp.abs(jnp.asarray(distance)) / c
    inner = 1.0 + r**2 * (-(r**3) / 4.0 + r**2 / 2.0) + (5.0 / 8.0) * r**3 - (5.0 / 3.0) * r**2
    rs = jnp.where(r > 0, r, 1.0)
    outer = (
        r**2 * (r**3 / 12.0 - r**2 / 2.0)
        + (5.0 / 8.0) * r**3
        + (5.0 / 3.0) * r**2
        - 5.0 * r
        + 4.0
        - (2.0 / 3.0) / rs
    )
    return jnp.where(r <= 1.0, inner, jnp.where(r <= 2.0, outer, 0.0))


def periodic_distance(
    a: Float[Array, "..."], b: Float[Array, "..."], length: float
) -> Float[Array, "..."]:
    """Distance on a 1-D periodic domain of the given length (e.g. the Lorenz-96 ring)."""
    d = jnp.abs(jnp.asarray(a) - jnp.asarray(b))
    return jnp.minimum(d, length - d)


def gain_taper(
    n: int,
    obs_locations,
    radius: float,
    periodic: bool = True,
    *,
    state_locations=None,
    domain_length: float | None = None,
) -> Float[Array, "n m"]:
    r"""Localization matrix ``ρ`` (``n×m``) for a Schur product ``ρ ∘ K`` on the gain.

    State variable ``i`` (at ``state_locations[i]``, default the grid index ``i``) and
    observation ``j`` (at ``obs_locations[j]``, which may be traced) are tapered by
    ``gaspari_cohn(dist, radius)``, the distance taken on a ring of length ``domain_length``
    (default ``n``) when ``periodic``. Used by the EnKF's gain localization and by the LETKF when
    the observation network changes in time.
    """
    loc = jnp.asarray(obs_locations)
    s = jnp.arange(n) if state_locations is None else jnp.asarray(state_locations)
    L = float(n if domain_length is None else domain_length)
    d = (
        periodic_distance(s[:, None], loc[None, :], L)
        if periodic
        else jnp.abs(s[:, None] - loc[None, :])
    )
    return gaspari_cohn(d, radius)
