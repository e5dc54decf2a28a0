"""Eager argument validation shared by every public function.

Shapes are static under ``jax.jit``, so shape errors are raised eagerly as
``ValueError``. Values (e.g. a standard deviation) are checked eagerly when they
are concrete; when they are traced, :func:`positive_or_error` attaches a runtime
check with :func:`equinox.error_if`, so bad input still fails loudly under jit
instead of propagating a silent NaN.
"""

from __future__ import annotations

import operator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds concrete values (not a tracer)."""
    return not isinstance(x, jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]


def check_count(name: str, value: Any, low: int = 1) -> int:
    """``value`` as a Python ``int``, raising ``ValueError`` unless it is an integer ``>= low``.

    Examples:
        >>> check_count("n_steps", 20)
        20
    """
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}") from None
    if v < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {v}")
    return v


def positive_or_error(name: str, x: Any) -> jax.Array:
    """Return ``x`` as an array, raising if any entry is not strictly positive.

    Concrete input raises ``ValueError`` immediately; traced input gets a
    runtime check that raises an ``EqxRuntimeError`` when the compiled function
    runs with non-positive entries.
    """
    if is_concrete(x):
        arr = np.asarray(x)
        if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
            raise ValueError(f"{name} must be positive and finite, got {arr!r}")
        return jnp.asarray(x)
    x = jnp.asarray(x)
    return eqx.error_if(x, jnp.any(x <= 0) | ~jnp.all(jnp.isfinite(x)), f"{name} must be positive")


def check_ensemble(E: Any, name: str = "ensemble", min_members: int = 2) -> None:
    """Validate a members-first ensemble of shape ``(N, n)`` with ``N >= min_members``."""
    shape = jnp.shape(E)
    if len(shape) != 2:
        raise ValueError(f"{name} must have shape (N, n) (members first), got shape {shape}")
    if shape[0] < min_members:
        raise ValueError(
            f"{name} needs at least {min_members} members (N >= {min_members}), got N={shape[0]}"
        )


def check_vector(x: Any, name: str, size: int | None = None) -> None:
    """Validate a 1-D array, optionally of a given length."""
    shape = jnp.shape(x)
    if len(shape) != 1:
        raise ValueError(f"{name} must be a 1-D vector, got shape {shape}")
    if size is not None and shape[0] != size:
        raise ValueError(f"{name} must have length {size}, got {shape[0]}")


def check_in_range(
    name: str,
    value: float,
    low: float,
    high: float,
    *,
    closed_low: bool = True,
    closed_high: bool = True,
) -> None:
    """Validate a concrete scalar hyper-parameter lies in ``[low, high]`` (ends open on request)."""
    if not is_concrete(value):
        return
    v = float(value)
    ok = (low <= v if closed_low else low < v) and (v <= high if closed_high else v < high)
    if not ok:
        left = "[" if closed_low else "("
        right = "]" if closed_high else ")"
        raise ValueError(f"{name} must be in {left}{low}, {high}{right}, got {v}")


def check_sample(sample: Any, name: str = "sample", min_rows: int = 1) -> jax.Array:
    """``sample`` as a floating ``(K, n)`` array of states with ``K >= min_rows``, all finite
    when concrete (``ValueError`` naming ``name`` otherwise).

    Examples:
        >>> check_sample([[1, 2], [3, 4]]).dtype.kind, check_sample([[1.0, 2.0]]).shape
        ('f', (1, 2))
    """
    s = jnp.asarray(sample)
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(jnp.result_type(float))
    if s.ndim != 2 or s.shape[0] < min_rows:
        raise ValueError(f"{name} must be states (K, n) with K >= {min_rows}, got shape {s.shape}")
    if is_concrete(s) and not np.all(np.isfinite(np.asarray(s))):
        raise ValueError(f"{name} has non-finite values (a diverged run?)")
    return s
