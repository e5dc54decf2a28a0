r"""Gaussian observation noise ``ε ~ N(0, R)``.

Two representations share one interface (``sample``, ``whiten``, ``cov``,
``std``, ``log_prob``): :class:`DiagonalNoise` stores the standard deviations
``θ`` (``R = diag(θ²)``, the weights ``W = R^{-1}`` of the weighted norm) and never forms an
``m×m`` matrix; :class:`FullNoise` stores a covariance and its lower Cholesky
factor ``L`` (``R = L Lᵀ``). Both are pytrees, so they can be passed through
``jit``/``vmap``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, Bool, Float

from ..core import check_vector, is_concrete, positive_or_error


class DiagonalNoise(NamedTuple):
    """Independent Gaussian noise with standard deviations ``std`` (θ), ``R = diag(θ²)``."""

    std: Float[Array, " m"]

    @property
    def dim(self) -> int:
        return self.std.shape[-1]

    def sample(self, key: Array, shape: tuple[int, ...] = ()) -> Float[Array, "... m"]:
        """Draw noise of shape ``shape + (m,)``."""
        return self.std * jax.random.normal(key, (*shape, self.dim), self.std.dtype)

    def whiten(self, r: Float[Array, "... m"]) -> Float[Array, "... m"]:
        """``R^{-1/2} r`` applied to the last axis."""
        return r / self.std

    def whiten_t(self, z: Float[Array, "m ..."]) -> Float[Array, "m ..."]:
        """``R^{-T/2} z`` applied to the first axis (the adjoint of :meth:`whiten`)."""
        return z / self.std.reshape((-1,) + (1,) * (z.ndim - 1))

    def cov(self) -> Float[Array, "m m"]:
        """Dense ``R`` (only for small ``m``: tests, reference solutions)."""
        return jnp.diag(self.std**2)

    def variance(self) -> Float[Array, " m"]:
        return self.std**2

    def scale(self, alpha: float | Array) -> DiagonalNoise:
        """Noise with covariance ``α R``."""
        return DiagonalNoise(self.std * jnp.sqrt(alpha))

    def restrict(self, mask: Bool[Array, " m"]) -> DiagonalNoise:
        """Noise for the observed entries only: missing ones (``mask`` False) get unit
        variance, to be zeroed after whitening (see :func:`jaxda.observations.missing`)."""
        return DiagonalNoise(jnp.where(mask, self.std, jnp.ones_like(self.std)))

    def log_prob(self, r: Float[Array, " m"]) -> Float[Array, ""]:
        """Gaussian log-density of residual ``r``."""
        z = self.whiten(r)
        return (
            -0.5 * jnp.sum(z**2)
            - jnp.sum(jnp.log(self.std))
            - 0.5 * self.dim * math.log(2 * math.pi)
        )


class FullNoise(NamedTuple):
    """Correlated Gaussian noise with covariance ``R = chol @ chol.T``.

    ``chol_inv`` (``L^{-1}``) is computed once at construction so that whitening
    is a matrix product (one triangular solve when the noise is built).
    """

    chol: Float[Array, "m m"]
    chol_inv: Float[Array, "m m"]

    @property
    def dim(self) -> int:
        return self.chol.shape[-1]

    def sample(self, key: Array, shape: tuple[int, ...] = ()) -> Float[Array, "... m"]:
        z = jax.random.normal(key, (*shape, self.dim), self.chol.dtype)
        return z @ self.chol.T

    def whiten(self, r: Float[Array, "... m"]) -> Float[Array, "... m"]:
        """``L^{-1} r`` applied to the last axis."""
        return r @ self.chol_inv.T

    def whiten_t(self, z: Float[Array, "m ..."]) -> Float[Array, "m ..."]:
        """``L^{-T} z`` applied to the first axis."""
        return jnp.tensordot(self.chol_inv.T, z, axes=1)

    def cov(self) -> Float[Array, "m m"]:
        return self.chol @ self.chol.T

    def variance(self) -> Float[Array, " m"]:
        return jnp.sum(self.chol**2, axis=-1)

    @property
    def std(self) -> Float[Array, " m"]:
        return jnp.sqrt(self.variance())

    def scale(self, alpha: float | Array) -> FullNoise:
        return FullNoise(self.chol * jnp.sqrt(alpha), self.chol_inv / jnp.sqrt(alpha))

    def restrict(self, mask: Bool[Array, " m"]) -> FullNoise:
        """Decouple the missing entries (``mask`` False) from the observed ones: the observed
        block of ``R`` is kept, missing entries get unit variance and no correlation, so that
        whitening then zeroing them removes exactly those observations."""
        both = mask[:, None] & mask[None, :]
        R = jnp.where(both, self.cov(), 0.0) + jnp.diag(jnp.where(mask, 0.0, 1.0))
        return full_noise_from_cholesky(jnp.linalg.cholesky(R))

    def log_prob(self, r: Float[Array, " m"]) -> Float[Array, ""]:
        z = self.whiten(r)
        logdet = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(self.chol))))
        return -0.5 * jnp.sum(z**2) - logdet - 0.5 * self.dim * math.log(2 * math.pi)


Noise = DiagonalNoise | FullNoise


def gaussian_noise(
    std: Float[Array, " m"] | float | None = None,
    cov: Float[Array, "m m"] | None = None,
    dim: int | None = None,
) -> Noise:
    r"""Build observation noise from a std vector ``θ`` (or scalar with ``dim``) or a covariance.

    Raises ``ValueError`` for non-positive std, a non-square or non-positive-definite
    covariance, or when both/neither of ``std`` and ``cov`` are given.

    Examples:
        >>> noise = gaussian_noise(std=[1.0, 2.0])
        >>> noise.cov().tolist()
        [[1.0, 0.0], [0.0, 4.0]]
    """
    if (std is None) == (cov is None):
        raise ValueError("give exactly one of std= or cov=")
    if std is not None:
        s = jnp.asarray(std)
        if not jnp.issubdtype(s.dtype, jnp.floating):  # keep float32 as float32
            s = s.astype(jnp.result_type(float))
        if s.ndim == 0:
            if dim is None:
                raise ValueError("a scalar std needs dim= (the number of observations)")
            s = jnp.full((dim,), s)
        check_vector(s, "obs std", dim)
        return DiagonalNoise(positive_or_error("obs std", s))
    c = jnp.asarray(cov)
    if not jnp.issubdtype(c.dtype, jnp.floating):
        c = c.astype(jnp.result_type(float))
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"obs cov must be a square (m, m) matrix, got shape {c.shape}")
    if dim is not None and c.shape[0] != dim:
        raise ValueError(f"obs cov must be ({dim}, {dim}), got {c.shape}")
    if is_concrete(c):
        cn = np.asarray(c)
        if not np.allclose(cn, cn.T):
            raise ValueError("obs cov must be symmetric")
        if np.any(np.linalg.eigvalsh(cn) <= 0):
            raise ValueError("obs cov must be positive definite")
    return full_noise_from_cholesky(jnp.linalg.cholesky(c))


def full_noise_from_cholesky(chol: Float[Array, "m m"]) -> FullNoise:
    """:class:`FullNoise` from a lower Cholesky factor ``L`` of ``R = L Lᵀ``."""
    eye = jnp.eye(chol.shape[0], dtype=chol.dtype)
    return FullNoise(chol, jsl.solve_triangular(chol, eye, lower=True))
