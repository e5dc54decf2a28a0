"""Observation operators ``H`` as pytrees (``equinox.Module``), each written for one state.

An operator maps a state ``(n,)`` to ``dim`` observations ``(m,)``; ``dim`` is static and
checked against what the operator returns (:meth:`ObsOperator.check`). Operators that know
where they observe carry ``locations`` (used by localization). Their arrays are leaves, so an
operator can change from one observation time to the next: stack operators of the same kind
and size along a leading time axis (see :func:`jaxda.observations.observation_series`).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core import Noise, gaussian_noise, is_concrete, not_traceable_as_type_error


class ObsOperator(eqx.Module):
    """Base class: ``y = H(x)`` for one state. Subclasses define ``__call__`` and ``dim``."""

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " m"]:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    @property
    def locations(self) -> Array | None:
        """Positions of the observations on the state's grid, or ``None``."""
        return None

    def check(self, n: int) -> None:
        """Eagerly check that a state of size ``n`` maps to exactly ``dim`` values."""
        with not_traceable_as_type_error("the observation operator"):
            out = jax.eval_shape(self, jax.ShapeDtypeStruct((n,), jnp.float32))
        if getattr(out, "shape", None) != (self.dim,):
            raise ValueError(
                f"observation operator declares dim={self.dim} observations but returns shape "
                f"{getattr(out, 'shape', type(out))} for a state of size {n}"
            )


class Identity(ObsOperator):
    """Observe every state variable: ``H = I_n``."""

    n: int = eqx.field(static=True)

    def __call__(self, x):
        return x

    @property
    def dim(self) -> int:
        return self.n

    @property
    def locations(self) -> Array:
        return jnp.arange(self.n)

    def check(self, n: int) -> None:
        if n != self.n:
            raise ValueError(f"identity operator of size {self.n} applied to a state of size {n}")


class Subset(ObsOperator):
    """Observe the state variables at integer ``indices`` (a leaf: may vary in time)."""

    indices: Int[Array, " m"]

    def __call__(self, x):
        return x[self.indices]

    @property
    def dim(self) -> int:
        return int(self.indices.shape[-1])

    @property
    def locations(self) -> Array:
        return self.indices

    def check(self, n: int) -> None:
        if is_concrete(self.indices):
            idx = np.asarray(self.indices)
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(
                    f"observed indices must lie in [0, {n}) for a state of size {n}, got "
                    f"[{idx.min()}, {idx.max()}]"
                )


class Linear(ObsOperator):
    """Linear observations ``y = H x`` with a dense ``H`` (a leaf), optional locations."""

    matrix: Float[Array, "m n"]
    positions: Array | None = None

    def __call__(self, x):
        return self.matrix @ x

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[-2])

    @property
    def locations(self) -> Array | None:
        return self.positions

    def check(self, n: int) -> None:
        if self.matrix.shape[-1] != n:
            raise ValueError(f"H has {self.matrix.shape[-1]} columns for a state of size {n}")


class FromCallable(ObsOperator):
    """Any JAX-traceable ``fn: (n,) -> (m,)`` with a declared size ``m`` and optional locations."""

    fn: Callable[[Array], Array] = eqx.field(static=True)
    m: int = eqx.field(static=True)
    positions: Array | None = None

    def __call__(self, x):
        return self.fn(x)

    @property
    def dim(self) -> int:
        return self.m

    @property
    def locations(self) -> Array | None:
        return self.positions


def identity(n: int) -> Identity:
    """Observe every state variable: ``H = I_n``.

    Examples:
        >>> identity(3).dim
        3
    """
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    return Identity(int(n))


def subset(indices, n: int | None = None) -> Subset:
    """Observe the state variables at ``indices`` (e.g. every 2nd variable).

    Indices must be integers (float indices are rejected, not truncated) and, when the state
    size ``n`` is given, lie in ``[0, n)``.

    Examples:
        >>> subset([0, 2], n=4)(jnp.arange(4.0)).tolist()
        [0.0, 2.0]
    """
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"indices must be a non-empty 1-D integer array, got shape {idx.shape}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {idx.dtype}: {idx}")
    op = Subset(jnp.asarray(idx, dtype=jnp.int32))
    if np.any(idx < 0):
        raise ValueError(f"indices must be >= 0, got {idx}")
    if n is not None:
        op.check(n)
    return op


def linear(H: Float[Array, "m n"], locations=None) -> Linear:
    """Linear observations ``y = H x`` with a dense matrix ``H``."""
    H = jnp.asarray(H)
    if H.ndim != 2:
        raise ValueError(f"H must be a 2-D (m, n) matrix, got shape {H.shape}")
    return Linear(H, None if locations is None else jnp.asarray(locations))


def from_callable(
    fn: Callable[[Array], Array], dim: int, *, n: int | None = None, locations=None
) -> FromCallable:
    """Any (possibly nonlinear) JAX-traceable ``fn: (n,) -> (m,)`` returning ``dim`` values.

    With the state size ``n`` the output shape is checked at once; otherwise it is checked
    when the operator first meets a state (the driver and :class:`ObservationModel`).

    Examples:
        >>> op = from_callable(jnp.arctan, 3, n=3)
        >>> from_callable(lambda x: x[:1], 5, n=3)
        Traceback (most recent call last):
        ...
        ValueError: observation operator declares dim=5 observations but returns shape (1,) for a state of size 3
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(dim, int | np.integer) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    op = FromCallable(fn, int(dim), None if locations is None else jnp.asarray(locations))
    if n is not None:
        op.check(n)
    return op


class ObservationModel(eqx.Module):
    """``y = H(x) + ε``, ``ε ~ N(0, R)``: an operator and its noise (a pytree).

    Examples:
        >>> om = observation_model(identity(2), obs_std=0.5)
        >>> om.noise.std.tolist(), om.dim
        ([0.5, 0.5], 2)
    """

    operator: ObsOperator
    noise: Noise

    def __check_init__(self):
        if self.noise.dim != self.operator.dim:
            raise ValueError(
                f"observation operator gives m={self.operator.dim} values but the noise has "
                f"dimension {self.noise.dim}"
            )

    @property
    def dim(self) -> int:
        return self.operator.dim

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " m"]:
        return self.operator(x)


def observation_model(operator: ObsOperator, obs_std=None, obs_cov=None) -> ObservationModel:
    """Pair an operator with Gaussian noise: ``obs_std`` (θ, scalar or vector) or ``obs_cov`` (R)."""
    if not isinstance(operator, ObsOperator):
        raise TypeError(
            f"operator must be an ObsOperator (identity, subset, linear, from_callable), got "
            f"{type(operator).__name__}"
        )
    return ObservationModel(operator, gaussian_noise(std=obs_std, cov=obs_cov, dim=operator.dim))
