r"""Gaussian noise ``ε ~ N(0, C)``: observation noise ``R`` and model noise ``Q``.

Three representations share one interface (``sample``, ``cov``, ``variance``, ``std``,
``scale``; the first two also ``whiten`` and ``log_prob``): :class:`DiagonalNoise` stores the
standard deviations ``θ`` (``R = diag(θ²)``, the weights ``W = R^{-1}`` of the weighted norm)
and never forms an ``m×m`` matrix; :class:`FullNoise` stores a covariance's lower Cholesky
factor ``L`` (``R = L Lᵀ``); :class:`FactorNoise` stores a square-root factor ``F``
(``n×r``, ``Q = F Fᵀ``, possibly singular) for model noise of large states; :class:`ScalarNoise`
holds one scalar level ``σ`` (``Q = σ² I``) for model noise. All are pytrees,
so they can be passed through ``jit``/``vmap``. Build them with :func:`gaussian_noise`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, Bool, Float

from ._checks import check_vector, is_concrete, positive_or_error


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


class FactorNoise(NamedTuple):
    """Gaussian noise given by a square-root factor ``F`` (``n×r``): ``η = F z``,
    ``z ~ N(0, I_r)``, covariance ``F Fᵀ``.

    The form for large states (``r ≪ n``: a low-rank or a localized model error, never an
    ``n×n`` matrix) and for singular covariances (noise on some variables only). It samples
    and reports its covariance; it cannot whiten (the covariance may be singular), so it is a
    model-error noise, not an observation noise.
    """

    factor: Float[Array, "n r"]

    @property
    def dim(self) -> int:
        return self.factor.shape[0]

    def sample(self, key: Array, shape: tuple[int, ...] = ()) -> Float[Array, "... n"]:
        z = jax.random.normal(key, (*shape, self.factor.shape[1]), self.factor.dtype)
        return z @ self.factor.T

    def cov(self) -> Float[Array, "n n"]:
        return self.factor @ self.factor.T

    def variance(self) -> Float[Array, " n"]:
        return jnp.sum(self.factor**2, axis=-1)

    @property
    def std(self) -> Float[Array, " n"]:
        return jnp.sqrt(self.variance())

    def scale(self, alpha: float | Array) -> FactorNoise:
        return FactorNoise(self.factor * jnp.sqrt(alpha))


class ScalarNoise(eqx.Module):
    """Isotropic Gaussian noise ``N(0, σ² I_n)`` with one scalar ``std`` leaf (a model-error
    level to differentiate or estimate as one parameter)."""

    std: Float[Array, ""]  # a scalar (broadcasts against (n,) vectors)
    dim: int = eqx.field(static=True)

    def sample(self, key: Array, shape: tuple[int, ...] = ()) -> Float[Array, "... n"]:
        s = jnp.asarray(self.std)
        return s * jax.random.normal(key, (*shape, self.dim), s.dtype)

    def cov(self) -> Float[Array, "n n"]:
        return self.std**2 * jnp.eye(self.dim)

    def variance(self) -> Float[Array, " n"]:
        return jnp.full((self.dim,), self.std**2)

    def scale(self, alpha: float | Array) -> ScalarNoise:
        return ScalarNoise(self.std * jnp.sqrt(alpha), self.dim)


Noise = DiagonalNoise | FullNoise
GaussianNoise = DiagonalNoise | FullNoise | FactorNoise | ScalarNoise


def _float_array(a) -> Array:
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):  # keep float32 as float32
        a = a.astype(jnp.result_type(float))
    return a


def gaussian_noise(
    std: Float[Array, " m"] | float | None = None,
    cov: Float[Array, "m m"] | None = None,
    dim: int | None = None,
    *,
    sqrt: Float[Array, "m r"] | None = None,
    singular: bool = False,
    name: str = "obs",
) -> GaussianNoise:
    r"""Gaussian noise ``N(0, C)`` from exactly one of a std vector ``θ`` (``C = diag(θ²)``; a
    scalar needs ``dim``), a covariance ``cov``, or a square-root factor ``sqrt`` (``C = F Fᵀ``,
    ``F`` of shape ``(m, r)``: :class:`FactorNoise`).

    Observation noise (the default, ``singular=False``) must be non-degenerate: a positive std,
    a symmetric positive-definite ``cov``. Model noise may be singular (``singular=True``): a
    std with zeros (a scalar std then stays one scalar leaf, :class:`ScalarNoise`), a positive semi-definite ``cov`` (then stored as the factor
    ``V diag(√λ)`` of its eigen-decomposition, dropping null directions). ``name`` prefixes
    the error messages (``"obs"``, ``"model-noise"``...).

    Examples:
        >>> noise = gaussian_noise(std=[1.0, 2.0])
        >>> noise.cov().tolist()
        [[1.0, 0.0], [0.0, 4.0]]
        >>> gaussian_noise(sqrt=[[1.0], [1.0]]).cov().tolist()
        [[1.0, 1.0], [1.0, 1.0]]
    """
    if sum(a is not None for a in (std, cov, sqrt)) != 1:
        raise ValueError(f"{name} noise: give exactly one of std=, cov= or sqrt=")
    if std is not None:
        s = _float_array(std)
        if s.ndim == 0:
            if dim is None:
                raise ValueError(f"a scalar {name} std needs dim= (the vector size)")
            if singular:  # one scalar leaf (ScalarNoise)
                if is_concrete(s) and not (np.isfinite(float(s)) and float(s) >= 0):
                    raise ValueError(f"{name} std must be non-negative and finite, got {s}")
                return ScalarNoise(s, dim)
            s = jnp.full((dim,), s)
        check_vector(s, f"{name} std", dim)
        if not singular:
            return DiagonalNoise(positive_or_error(f"{name} std", s))
        if is_concrete(s):
            sn = np.asarray(s)
            if not (np.all(np.isfinite(sn)) and np.all(sn >= 0)):
                raise ValueError(f"{name} std must be non-negative and finite, got {sn}")
        return DiagonalNoise(s)
    if sqrt is not None:
        F = _float_array(sqrt)
        if F.ndim != 2:
            raise ValueError(f"{name} sqrt must be an (m, r) factor, got shape {F.shape}")
        if dim is not None and F.shape[0] != dim:
            raise ValueError(f"{name} sqrt must have {dim} rows, got shape {F.shape}")
        if is_concrete(F) and not np.all(np.isfinite(np.asarray(F))):
            raise ValueError(f"{name} sqrt must be finite")
        return FactorNoise(F)
    c = _float_array(cov)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"{name} cov must be a square (m, m) matrix, got shape {c.shape}")
    if dim is not None and c.shape[0] != dim:
        raise ValueError(f"{name} cov must be ({dim}, {dim}), got {c.shape}")
    if is_concrete(c):
        cn = np.asarray(c)
        if not np.all(np.isfinite(cn)):
            raise ValueError(f"{name} cov must be finite")
        if not np.allclose(cn, cn.T):
            raise ValueError(f"{name} cov must be symmetric")
        lam, V = np.linalg.eigh(cn)
        tol = 1e-10 * max(float(np.max(np.abs(lam))), 1e-300)
        if singular and np.any(lam < -tol):
            raise ValueError(f"{name} cov must be positive semi-definite")
        if singular and np.any(lam <= tol):
            keep = lam > tol
            return FactorNoise(jnp.asarray(V[:, keep] * np.sqrt(lam[keep]), c.dtype))
        if not singular and np.any(lam <= 0):
            raise ValueError(f"{name} cov must be positive definite")
    return full_noise_from_cholesky(jnp.linalg.cholesky(c))


def full_noise_from_cholesky(chol: Float[Array, "m m"]) -> FullNoise:
    """:class:`FullNoise` from a lower Cholesky factor ``L`` of ``R = L Lᵀ``."""
    eye = jnp.eye(chol.shape[0], dtype=chol.dtype)
    return FullNoise(chol, jsl.solve_triangular(chol, eye, lower=True))
