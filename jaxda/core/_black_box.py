r"""Black-box objectives: call NumPy / subprocess / any Python code from jit-ed JAX functions.

JAX functions such as the optimizers trace their objective: they call it on abstract values
(tracers) inside ``jit``, ``vmap`` and ``lax.scan``. A function that converts its input to NumPy
(``np.sin(x)``, ``float(x)``), branches on its values (``if x > 0``) or runs an external program
cannot be traced. :func:`black_box` wraps such a function in :func:`jax.pure_callback`: the
compiled program calls back into Python with concrete NumPy arrays, so the function works inside
``jit``/``vmap`` (not under ``grad``: a black box has no derivative; gradient-free methods do not
need one).

:func:`not_traceable_as_type_error` is the helper the public entry points use to turn JAX's
tracer errors, when they come from the user's function, into a ``TypeError`` that names the
cause and the remedy.

Examples:
    >>> import jax, jax.numpy as jnp, numpy as np
    >>> f = black_box(lambda x: float(np.sum((x - 1.0) ** 2)))
    >>> jax.jit(jax.vmap(f))(jnp.zeros((3, 2))).tolist()
    [2.0, 2.0, 2.0]
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

TRACER_ERRORS = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,  # includes TracerBoolConversionError
    jax.errors.TracerIntegerConversionError,
)

_LIBRARY_DIRS = (
    os.path.dirname(os.path.abspath(jax.__file__ or "")),
    os.path.dirname(os.path.abspath(np.__file__ or "")),
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # jaxda itself
)


def _caused_by_user_code(err: BaseException, fn: Any = None) -> bool:
    """True when the traceback of ``err`` runs through ``fn`` or other code outside jax/jaxda."""
    code = getattr(fn, "__code__", None)
    tb = err.__traceback__
    seen_library = False
    while tb is not None:
        frame_code = tb.tb_frame.f_code
        if code is not None and frame_code is code:
            return True
        path = os.path.abspath(frame_code.co_filename)
        in_library = path.startswith(_LIBRARY_DIRS) or any(
            part in path for part in ("site-packages", "dist-packages", "/lib/python", "<frozen")
        )
        if seen_library and not in_library:
            return True
        seen_library = seen_library or in_library
        tb = tb.tb_next
    return False


def not_traceable_error(what: str, cause: BaseException) -> TypeError:
    """The ``TypeError`` raised when ``what`` (e.g. "the objective") cannot be traced by JAX."""
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return TypeError(
        f"{what} is not JAX-traceable ({type(cause).__name__}: {first}). It is called on traced "
        "values inside jit/vmap/lax.scan, so it cannot convert them to NumPy (np.*, float(), "
        "int()), branch on them (if/while) or hand them to an external program. Wrap it with "
        "jaxda.black_box(fn) (a jax.pure_callback that calls it with concrete NumPy arrays), or "
        "rewrite it with jax.numpy."
    )


@contextlib.contextmanager
def not_traceable_as_type_error(what: str = "the objective", fn: Any = None) -> Iterator[None]:
    """Turn tracer errors raised by user code (``fn``) inside the block into a clear ``TypeError``.

    Errors raised by library code (e.g. a traced hyper-parameter that must be a Python int)
    propagate unchanged, so the message never blames the objective wrongly.
    """
    try:
        yield
    except TRACER_ERRORS as err:
        if _caused_by_user_code(err, fn):
            raise not_traceable_error(what, err) from err
        raise


def catch_not_traceable(argname: str = "objective", what: str = "the objective") -> Callable:
    """Decorator form of :func:`not_traceable_as_type_error` for public entry points.

    ``argname`` names the parameter holding the user's function.
    """

    def deco(func: Callable) -> Callable:
        sig = inspect.signature(func)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                fn = sig.bind_partial(*args, **kwargs).arguments.get(argname)
            except TypeError:
                fn = None
            with not_traceable_as_type_error(what, fn):
                return func(*args, **kwargs)

        return wrapper

    return deco


def _float_dtype(dtype: Any) -> Any:
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def black_box(
    fn: Callable[[np.ndarray], Any],
    out_shape: tuple[int, ...] | None = None,
    *,
    vectorized: bool = False,
) -> Callable[[jax.Array], jax.Array]:
    """Make a non-traceable Python function of one point usable inside ``jit``/``vmap``.

    Args:
        fn: ``fn(x) -> value`` called with a concrete NumPy array ``x`` of shape ``(n,)``
            (NumPy, ``float()``, a subprocess, ...). With ``vectorized=True`` it is called with a
            batch ``(B, n)`` and must return ``(B, *out_shape)``.
        out_shape: shape of ``fn``'s value for one point (``()`` for a scalar objective). When
            ``None`` it is inferred by one eager call of ``fn`` on a point of zeros the first
            time the wrapper is traced for a given input shape (that call costs one evaluation;
            pass ``out_shape`` if ``fn`` is expensive or undefined at zero).
        vectorized: ``False``: under ``vmap`` the callback runs once per point
            (``vmap_method="sequential"``). ``True``: the callback receives the whole batch
            (``vmap_method="expand_dims"``), one Python call per population.

    Returns:
        ``f(x) -> jax.Array`` of one point ``x`` (``(n,)``), output dtype the floating dtype of
        ``x`` (``float64`` under x64). It is not differentiable.

    Examples:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> calls = []
        >>> def batch_fn(X):
        ...     calls.append(X.shape)
        ...     return np.sum(X**2, axis=1)
        >>> f = black_box(batch_fn, (), vectorized=True)
        >>> jax.vmap(f)(jnp.ones((4, 3))).tolist(), calls
        ([3.0, 3.0, 3.0, 3.0], [(4, 3)])
    """
    if not callable(fn):
        raise TypeError(f"black_box needs a callable, got {type(fn).__name__}")
    if out_shape is not None:
        out_shape = tuple(int(d) for d in np.atleast_1d(out_shape)) if np.ndim(out_shape) else ()
    inferred: dict[tuple, tuple[int, ...]] = {}

    def shape_for(x_shape: tuple[int, ...], dtype: Any) -> tuple[int, ...]:
        if out_shape is not None:
            return out_shape
        key = (x_shape, np.dtype(dtype).str)
        if key not in inferred:
            probe = np.zeros(x_shape, dtype)
            val = np.asarray(fn(probe[None]) if vectorized else fn(probe))
            inferred[key] = val.shape[1:] if vectorized else val.shape
        return inferred[key]

    def wrapped(x: Any) -> jax.Array:
        x = jnp.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.inexact):
            x = x.astype(jnp.result_type(float))
        dt = _float_dtype(x.dtype)
        shape = shape_for(tuple(x.shape), x.dtype)
        n_dims = x.ndim

        if vectorized:

            def host(xs: np.ndarray) -> np.ndarray:
                xs = np.asarray(xs)
                lead = xs.shape[: xs.ndim - n_dims]
                flat = xs.reshape((-1, *xs.shape[xs.ndim - n_dims :]))
                out = np.asarray(fn(flat), dtype=dt)
                return out.reshape((*lead, *shape))

            return jax.pure_callback(
                host, jax.ShapeDtypeStruct(shape, dt), x, vmap_method="expand_dims"
            )

        def host_one(xi: np.ndarray) -> np.ndarray:
            return np.asarray(fn(np.asarray(xi)), dtype=dt).reshape(shape)

        return jax.pure_callback(
            host_one, jax.ShapeDtypeStruct(shape, dt), x, vmap_method="sequential"
        )

    wrapped.__doc__ = getattr(fn, "__doc__", None)
    return wrapped
