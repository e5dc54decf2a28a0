r"""Distributions of states: where a twin experiment draws its initial truth and ensemble.

Two kinds share one interface, ``sample(key, shape=()) -> (*shape, n)``, ``mean`` and ``dim``
(both are pytrees, so ``jax.vmap``/``jax.grad`` act on the mean and the covariance):

* :class:`Gaussian`: ``N(μ, P)`` with ``P`` scalar (``σ² I``), diagonal, full or given by a
  square-root factor (``P = F Fᵀ``, ``F`` of shape ``(n, r)``, for large ``n``); DAPPER's
  ``GaussRV``.
* :class:`Empirical`: the rows of a sample, e.g. a climatology (states of a long model run)
  or an ensemble read from a file (:func:`jaxda.io.load_sample`); members are drawn without
  replacement when the sample is large enough. DAPPER's ``RV`` from a sample.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> g = gaussian(jnp.zeros(3), cov=jnp.eye(3))
    >>> g.sample(jax.random.key(0), (5,)).shape
    (5, 3)
    >>> e = empirical(jnp.arange(12.0).reshape(4, 3))
    >>> e.sample(jax.random.key(0), (2,)).shape, e.mean.tolist()
    ((2, 3), [4.5, 5.5, 6.5])
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import GaussianNoise, check_sample, singular_noise


class Gaussian(eqx.Module):
    """``N(mean, P)`` with ``P`` held by a noise object (scalar, diagonal, full or factor)."""

    mean: Float[Array, " n"]
    noise: GaussianNoise

    @property
    def dim(self) -> int:
        return int(jnp.shape(self.mean)[-1])

    def sample(self, key: Array, shape: tuple[int, ...] = ()) -> Float[Array, "... n"]:
        """Draw ``shape`` states: ``mean + P^{1/2} z``."""
        return self.mean + self.noise.sample(key, shape).astype(self.mean.dtype)

    def cov(self) -> Float[Array, "n n"]:
        """Dense ``P`` (small ``n`` only)."""
        return self.noise.cov()


class Empirical(eqx.Module):
    """The empirical distribution of the ``K`` rows of ``sample`` ``(K, n)``."""

    states: Float[Array, "K n"]

    @property
    def dim(self) -> int:
        return int(self.states.shape[-1])

    @property
    def mean(self) -> Float[Array, " n"]:
        return jnp.mean(self.states, axis=0)

    def sample(self, key: Array, shape: tuple[int, ...] = ()) -> Float[Array, "... n"]:
        """Draw ``shape`` rows: without replacement when ``prod(shape) <= K``, else with."""
        K = self.states.shape[0]
        size = int(np.prod(shape)) if shape else 1
        idx = jax.random.choice(key, K, (size,), replace=size > K)
        out = self.states[idx]
        return out.reshape(*shape, self.dim) if shape else out[0]


Distribution = Gaussian | Empirical


def gaussian(mean, std=None, *, cov=None, sqrt=None) -> Gaussian:
    r"""``N(mean, P)`` from exactly one of ``std`` (scalar: ``P = std² I``; vector:
    ``diag(std²)``), ``cov`` (full, positive semi-definite) or ``sqrt`` (``P = F Fᵀ``).

    A zero ``std`` is allowed: every draw is then ``mean`` (a known initial state).

    Examples:
        >>> import jax.numpy as jnp
        >>> g = gaussian(jnp.ones(2), 0.5)
        >>> g.cov().tolist()
        [[0.25, 0.0], [0.0, 0.25]]
    """
    mu = jnp.asarray(mean)
    if not jnp.issubdtype(mu.dtype, jnp.floating):
        mu = mu.astype(jnp.result_type(float))
    if mu.ndim != 1:
        raise ValueError(f"mean must be a state vector (n,), got shape {mu.shape}")
    noise = singular_noise(std=std, cov=cov, sqrt=sqrt, dim=mu.shape[0], name="initial")
    return Gaussian(mu, noise)


def empirical(sample) -> Empirical:
    """The empirical distribution of the rows of ``sample`` ``(K, n)`` (``K >= 1``, finite).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> empirical(jnp.eye(3)).sample(jax.random.key(1), (3,)).sum(0).tolist()
        [1.0, 1.0, 1.0]
    """
    return Empirical(check_sample(sample, "sample"))


def check_distribution(dist, n: int, name: str = "initial distribution") -> None:
    """Eager check that ``dist`` is a :class:`Gaussian`/:class:`Empirical` of dimension ``n``."""
    if not isinstance(dist, Gaussian | Empirical):
        raise TypeError(
            f"{name} must be a jaxda.models.Gaussian or Empirical (see gaussian(), "
            f"empirical()), got {type(dist).__name__}"
        )
    if dist.dim != n:
        raise ValueError(f"{name} has dimension {dist.dim}, the model {n}")
