r"""Box bounds ``lower <= x <= upper`` for the gradient-free optimizers.

Bounds are given as one array of shape ``(2, n)``: ``bounds[0]`` is the lower
and ``bounds[1]`` the upper corner (``jnp.array([lower, upper])`` or the tuple
``(lower, upper)``). scipy-style ``[(lo_1, hi_1), ..., (lo_n, hi_n)]`` pairs are
converted with :func:`bounds_from_pairs`.

Points leaving the box are brought back by one of two rules:

* ``"clip"``: :math:`x_j ← \min(\max(x_j, l_j), u_j)` (projection on the box);
* ``"reflect"``: mirror at the walls, repeatedly if needed, i.e. with
  :math:`w_j = u_j - l_j` and :math:`y = (x_j - l_j) \bmod 2w_j`,
  :math:`x_j ← l_j + \min(y, 2w_j - y)`. Any real point is mapped into the box.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
from jaxtyping import Array, Float

from ..core import is_concrete

BOUND_HANDLING = ("clip", "reflect")


def bounds_from_pairs(pairs: Any) -> Float[Array, "2 n"]:
    """Convert scipy-style ``[(lo_1, hi_1), ..., (lo_n, hi_n)]`` to the ``(2, n)`` layout.

    Example:
        >>> bounds_from_pairs([(-5.0, 5.0), (0.0, 1.0)]).tolist()
        [[-5.0, 0.0], [5.0, 1.0]]
    """
    arr = jnp.asarray(pairs)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"pairs must have shape (n, 2), got shape {arr.shape}")
    return arr.T


def check_bounds(bounds: Any) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Validate ``bounds`` of shape ``(2, n)`` and return ``(lower, upper)`` as float arrays.

    Raises ``ValueError`` for a wrong shape, and (for concrete values) for
    non-finite entries or ``lower >= upper`` in any coordinate.
    """
    b = jnp.asarray(bounds)
    if not jnp.issubdtype(b.dtype, jnp.floating):
        b = b.astype(jnp.result_type(float))
    if b.ndim != 2 or b.shape[0] != 2 or b.shape[1] < 1:
        hint = ""
        if b.ndim == 2 and b.shape[1] == 2:
            hint = " (scipy-style [(lo, hi), ...] pairs: use bounds_from_pairs)"
        raise ValueError(
            f"bounds must have shape (2, n) = (lower, upper) with n >= 1, got shape {b.shape}{hint}"
        )
    if is_concrete(b):
        arr = np.asarray(b)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"bounds must be finite, got {arr!r}")
        bad = np.nonzero(arr[0] >= arr[1])[0]
        if bad.size:
            raise ValueError(
                "bounds must satisfy lower < upper in every coordinate; violated at "
                f"indices {bad.tolist()} (lower={arr[0][bad].tolist()}, upper={arr[1][bad].tolist()})"
            )
    return b[0], b[1]


def check_bound_handling(mode: str) -> None:
    """Validate the name of a bound-handling rule."""
    if mode not in BOUND_HANDLING:
        raise ValueError(f"bound_handling must be one of {BOUND_HANDLING}, got {mode!r}")


def reflect(x: Float[Array, "... n"], lower: Array, upper: Array) -> Float[Array, "... n"]:
    """Mirror ``x`` into ``[lower, upper]`` (any number of reflections).

    Points already inside are returned bit-for-bit unchanged (the modular formula alone
    would round ``x`` to the precision of ``x - lower``).
    """
    width = upper - lower
    y = jnp.mod(x - lower, 2.0 * width)
    mirrored = jnp.clip(lower + jnp.minimum(y, 2.0 * width - y), lower, upper)
    return jnp.where((x < lower) | (x > upper), mirrored, x)


def reflection_sign(x: Float[Array, "... n"], lower: Array, upper: Array) -> Float[Array, "... n"]:
    """``+1`` where :func:`reflect` keeps the direction of motion, ``-1`` where it flips it."""
    width = upper - lower
    y = jnp.mod(x - lower, 2.0 * width)
    inside = (x >= lower) & (x <= upper)
    return jnp.where(inside | (y <= width), 1.0, -1.0).astype(x.dtype)


def apply_bounds(
    x: Float[Array, "... n"], lower: Array, upper: Array, mode: str
) -> Float[Array, "... n"]:
    """Bring ``x`` back into the box with rule ``mode`` (``"clip"`` or ``"reflect"``)."""
    check_bound_handling(mode)
    if mode == "clip":
        return jnp.clip(x, lower, upper)
    return reflect(x, lower, upper)


def normal_from_uniform(u: Array) -> Array:
    """Standard normal variates from uniforms on ``[0, 1)`` by inversion, ``√2 erf⁻¹(2u - 1)``.

    The optimizers draw all the randomness of one iteration with a single ``uniform`` call
    and derive normals from it: each distinct random call compiles its own generator, and
    that dominated compile time.
    """
    lo = jnp.nextafter(jnp.asarray(-1.0, u.dtype), jnp.asarray(0.0, u.dtype))
    return jnp.sqrt(2.0) * jax.scipy.special.erfinv(jnp.maximum(2.0 * u - 1.0, lo))


def uniform_in_bounds(key: Array, lower: Array, upper: Array, shape: tuple[int, ...]) -> Array:
    """Draw ``shape + (n,)`` points uniformly in the box."""
    u = jax.random.uniform(key, (*shape, lower.shape[-1]), lower.dtype)
    return lower + u * (upper - lower)
