r"""Box bounds ``lower <= x <= upper`` for the gradient-free optimizers.

Bounds are given as one array of shape ``(2, n)``: ``bounds[0]`` is the lower
and ``bounds[1]`` the upper corner (``jnp.array([lower, upper])`` or the tuple
``(lower, upper)``). scipy-style ``[(lo_1, hi_1), ..., (lo_n, hi_n)]`` pairs of shape
``(n, 2)`` are converted with :func:`bounds_from_pairs`, and accepted directly when ``n != 2``
(the shape is then unambiguous); a ``(2, 2)`` array is read as rows and rejected, naming both
conventions, if that reading has ``lower >= upper`` (see :func:`check_bounds`).

Points leaving the box are brought back by one of two rules:

* ``"clip"``: :math:`x_j ← \min(\max(x_j, l_j), u_j)` (projection on the box);
* ``"reflect"``: mirror at the walls, repeatedly if needed, i.e. with
  :math:`w_j = u_j - l_j` and :math:`y = (x_j - l_j) \bmod 2w_j`,
  :math:`x_j ← l_j + \min(y, 2w_j - y)`. Any real point is mapped into the box.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np
from jaxtyping import Array, Float

from ..core import is_concrete

BOUND_HANDLING = ("clip", "reflect")


def bounds_from_pairs(pairs: Any) -> Float[Array, "2 n"]:
    """Convert scipy-style ``[(lo_1, hi_1), ..., (lo_n, hi_n)]`` to the ``(2, n)`` layout.

    Examples:
        >>> bounds_from_pairs([(-5.0, 5.0), (0.0, 1.0)]).tolist()
        [[-5.0, 0.0], [5.0, 1.0]]
    """
    arr = jnp.asarray(pairs)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"pairs must have shape (n, 2), got shape {arr.shape}")
    return arr.T


def check_bounds(bounds: Any) -> tuple[Float[Array, " n"], Float[Array, " n"]]:
    """Validate box bounds and return ``(lower, upper)`` as float arrays of shape ``(n,)``.

    The documented layout is ``(2, n)``: row 0 the lower and row 1 the upper corner.
    Nothing is guessed silently:

    * shape ``(2, n)`` with ``n != 2``: rows ``(lower, upper)``;
    * shape ``(n, 2)`` with ``n != 2`` (scipy's per-parameter pairs ``[(lo, hi), ...]``): the
      layout is unambiguous, so it is transposed (same as :func:`bounds_from_pairs`);
    * shape ``(2, 2)``: ambiguous, read as rows ``(lower, upper)``; when that reading has
      ``lower >= upper`` anywhere the error names both conventions (pass
      ``bounds_from_pairs(pairs)`` for scipy-style pairs).

    Raises ``ValueError`` for any other shape, non-finite entries or ``lower >= upper`` (eagerly
    for concrete bounds; traced bounds under ``jit`` get an :func:`equinox.error_if` check that
    fails when the compiled function runs).
    """
    b = jnp.asarray(bounds)
    if not jnp.issubdtype(b.dtype, jnp.floating):
        b = b.astype(jnp.result_type(float))
    if b.ndim != 2 or 2 not in b.shape or b.size < 2 or 0 in b.shape:
        raise ValueError(
            "bounds must have shape (2, n) = (lower, upper) rows (or scipy-style (n, 2) "
            f"(lo, hi) pairs), got shape {b.shape}"
        )
    pairs = b.shape[0] != 2  # (n, 2) with n != 2: unambiguous per-parameter pairs
    if pairs:
        b = b.T
    ambiguous = b.shape == (2, 2)
    if is_concrete(b):
        arr = np.asarray(b)
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"bounds must be finite, got {arr!r}")
        bad = np.nonzero(arr[0] >= arr[1])[0]
        if bad.size:
            layout = "(n, 2) pairs (lo, hi)" if pairs else "(2, n) rows (lower, upper)"
            hint = (
                " bounds of shape (2, 2) are read as (2, n) rows (lower; upper); for scipy-style "
                "(n, 2) pairs [(lo_1, hi_1), (lo_2, hi_2)] pass bounds_from_pairs(pairs)."
                if ambiguous
                else ""
            )
            raise ValueError(
                f"bounds read as {layout} must satisfy lower < upper in every coordinate; "
                f"violated at indices {bad.tolist()} (lower={arr[0][bad].tolist()}, "
                f"upper={arr[1][bad].tolist()}).{hint}"
            )
    else:
        b = eqx.error_if(
            b,
            jnp.any(b[0] >= b[1]) | ~jnp.all(jnp.isfinite(b)),
            "bounds must be finite with lower < upper in every coordinate "
            "(read as (2, n) rows (lower, upper))",
        )
    return b[0], b[1]


def check_objective(objective: Any, lower: Array) -> None:
    """Eager checks of a gradient-free objective: callable, and a scalar for one point.

    The objective is traced once abstractly (``jax.eval_shape``, nothing is computed), so a
    function that JAX cannot trace raises the tracer error here (turned into a clear
    ``TypeError`` by :func:`jaxda.core.reraise_not_traceable`).
    """
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
    spec = jax.ShapeDtypeStruct(lower.shape, lower.dtype)
    out = jax.eval_shape(objective, spec)
    if not hasattr(out, "shape") or tuple(out.shape) != ():
        shape = getattr(out, "shape", type(out).__name__)
        raise ValueError(
            f"objective must return a scalar for one point of shape {lower.shape}, got {shape}"
        )


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
