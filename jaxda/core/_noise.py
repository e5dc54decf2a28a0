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


def _float_matrix(cov, name: str, dim: int | None) -> Array:
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
    return c


def gaussian_noise(
    std: Float[Array, " m"] | float | None = None,
    cov: Float[Array, "m m"] | None = None,
    dim: int | None = None,
    *,
    name: str = "obs",
) -> Noise:
    r"""Non-degenerate Gaussian noise (observation noise ``R``) from a std vector ``θ`` (or a
    scalar with ``dim``) or a symmetric positive-definite covariance.

    Raises ``ValueError`` for non-positive std, a non-square or non-positive-definite
    covariance, or when both/neither of ``std`` and ``cov`` are given. ``name`` prefixes the
    error messages. For a covariance that may be singular (model error) see
    :func:`singular_noise`.

    Examples:
        >>> noise = gaussian_noise(std=[1.0, 2.0])
        >>> noise.cov().tolist()
        [[1.0, 0.0], [0.0, 4.0]]
    """
    if (std is None) == (cov is None):
        raise ValueError(f"{name} noise: give exactly one of std= or cov=")
    if std is not None:
        s = _float_array(std)
        if s.ndim == 0:
            if dim is None:
                raise ValueError(f"a scalar {name} std needs dim= (the vector size)")
            s = jnp.full((dim,), s)
        check_vector(s, f"{name} std", dim)
        return DiagonalNoise(positive_or_error(f"{name} std", s))
    c = _float_matrix(cov, name, dim)
    if is_concrete(c) and np.any(np.linalg.eigvalsh(np.asarray(c)) <= 0):
        raise ValueError(f"{name} cov must be positive definite")
    return full_noise_from_cholesky(jnp.linalg.cholesky(c))


def singular_noise(
    std: Float[Array, " n"] | float | None = None,
    cov: Float[Array, "n n"] | None = None,
    dim: int | None = None,
    *,
    sqrt: Float[Array, "n r"] | None = None,
    name: str = "model-noise",
) -> GaussianNoise:
    r"""Gaussian noise ``N(0, Q)`` that may be singular (model error ``Q``, an initial spread)
    from exactly one of ``std`` (a scalar: :class:`ScalarNoise`, one leaf; an ``(n,)`` vector
    with zeros allowed: :class:`DiagonalNoise`), ``cov`` (symmetric positive semi-definite;
    stored as its Cholesky factor when definite, else as the factor ``V diag(√λ)`` of its
    eigen-decomposition without the null directions) or ``sqrt`` (a factor ``F`` of shape
    ``(n, r)``, ``Q = F Fᵀ``: :class:`FactorNoise`, nothing ``n×n`` formed).

    Examples:
        >>> singular_noise(sqrt=[[1.0], [1.0]]).cov().tolist()
        [[1.0, 1.0], [1.0, 1.0]]
        >>> singular_noise(std=[0.0, 2.0]).variance().tolist()
        [0.0, 4.0]
    """
    if sum(a is not None for a in (std, cov, sqrt)) != 1:
        raise ValueError(f"{name}: give exactly one of std=, cov= or sqrt=")
    if std is not None:
        s = _float_array(std)
        if is_concrete(s):
            sn = np.asarray(s)
            if not (np.all(np.isfinite(sn)) and np.all(sn >= 0)):
                raise ValueError(f"{name} std must be non-negative and finite, got {sn}")
        if s.ndim == 0:
            if dim is None:
                raise ValueError(f"a scalar {name} std needs dim= (the vector size)")
            return ScalarNoise(s, dim)
        check_vector(s, f"{name} std", dim)
        return DiagonalNoise(s)
    if sqrt is not None:
        F = _float_array(sqrt)
        if F.ndim != 2:
            raise ValueError(f"{name} sqrt must be an (n, r) factor, got shape {F.shape}")
        if dim is not None and F.shape[0] != dim:
            raise ValueError(f"{name} sqrt must have {dim} rows, got shape {F.shape}")
        if is_concrete(F) and not np.all(np.isfinite(np.asarray(F))):
            raise ValueError(f"{name} sqrt must be finite")
        return FactorNoise(F)
    c = _float_matrix(cov, name, dim)
    if is_concrete(c):
        lam, V = np.linalg.eigh(np.asarray(c))
        tol = 1e-10 * max(float(np.max(np.abs(lam))), 1e-300)
        if np.any(lam < -tol):
            raise ValueError(f"{name} cov must be positive semi-definite")
        if np.any(lam <= tol):
            keep = lam > tol
            return FactorNoise(jnp.asarray(V[:, keep] * np.sqrt(lam[keep]), c.dtype))
    return full_noise_from_cholesky(jnp.linalg.cholesky(c))


def full_noise_from_cholesky(chol: Float[Array, "m m"]) -> FullNoise:
    """:class:`FullNoise` from a lower Cholesky factor ``L`` of ``R = L Lᵀ``."""
    eye = jnp.eye(chol.shape[0], dtype=chol.dtype)
    return FullNoise(chol, jsl.solve_triangular(chol, eye, lower=True))
