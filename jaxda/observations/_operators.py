"""Observation operators ``H``, each written for one state ``(n,) -> (m,)``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._noise import Noise, gaussian_noise


@dataclass(frozen=True, eq=False)
class ObsOperator:
    """Observation operator for one state.

    Attributes:
        fn: ``y = fn(x)``, maps ``(n,)`` to ``(m,)``; vmap it over members.
        dim: number of observations ``m``.
        matrix: the dense ``H`` when the operator is linear and small, else ``None``.
        indices: observed state indices when it is a subset selection, else ``None``
            (used for distances in localization).
    """

    fn: Callable[[Array], Array]
    dim: int
    matrix: Float[Array, "m n"] | None = None
    indices: np.ndarray | None = None

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " m"]:
        return self.fn(x)


def identity(n: int) -> ObsOperator:
    """Observe every state variable: ``H = I_n``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return ObsOperator(fn=lambda x: x, dim=n, indices=np.arange(n))


def subset(indices, n: int | None = None) -> ObsOperator:
    """Observe the state variables at ``indices`` (e.g. every 2nd variable)."""
    idx = np.asarray(indices, dtype=int)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"indices must be a non-empty 1-D integer array, got shape {idx.shape}")
    if np.any(idx < 0) or (n is not None and np.any(idx >= n)):
        raise ValueError(f"indices out of range for a state of size {n}: {idx}")
    jidx = jnp.asarray(idx)
    return ObsOperator(fn=lambda x: x[jidx], dim=int(idx.size), indices=idx)


def linear(H: Float[Array, "m n"]) -> ObsOperator:
    """Linear observations ``y = H x`` with a dense matrix ``H``."""
    H = jnp.asarray(H)
    if H.ndim != 2:
        raise ValueError(f"H must be a 2-D (m, n) matrix, got shape {H.shape}")
    return ObsOperator(fn=lambda x: H @ x, dim=H.shape[0], matrix=H)


def from_callable(fn: Callable[[Array], Array], dim: int) -> ObsOperator:
    """Any (possibly nonlinear) JAX-traceable ``fn: (n,) -> (m,)``."""
    if not callable(fn):
        raise ValueError("fn must be callable")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    return ObsOperator(fn=fn, dim=dim)


@dataclass(frozen=True, eq=False)
class ObservationModel:
    """``y = H(x) + ε``, ``ε ~ N(0, R)``: an operator and its noise."""

    operator: ObsOperator
    noise: Noise

    def __post_init__(self):
        if self.noise.dim != self.operator.dim:
            raise ValueError(
                f"observation operator gives m={self.operator.dim} values but the noise has "
                f"dimension {self.noise.dim}"
            )

    @property
    def dim(self) -> int:
        return self.operator.dim


def observation_model(operator: ObsOperator, std=None, cov=None) -> ObservationModel:
    """Pair an operator with Gaussian noise given by ``std`` (θ, scalar or vector) or ``cov``."""
    return ObservationModel(operator, gaussian_noise(std=std, cov=cov, dim=operator.dim))
