r"""Ensemble-space linear algebra shared by the ensemble Kalman methods.

Notation (members first): ensemble ``E`` of shape ``(N, n)``, mean ``x̄``,
scaled anomalies ``X = (E - x̄)/√(N-1)`` so that ``P = Xᵀ X``; predicted
observations ``Y_i = H(E_i)``, whitened scaled observation anomalies
``S = (Y - ȳ) R^{-T/2} / √(N-1)`` of shape ``(N, m)``.

The Kalman gain ``K = P Hᵀ (H P Hᵀ + R)^{-1}`` is never formed as ``n×n`` (nor
``m×m``): by the push-through identity

.. math:: K\,d = Xᵀ (I_N + S Sᵀ)^{-1} S\, R^{-1/2} d,

so an analysis costs ``O(N²(n+m) + N³)`` time and ``O(N(n+m))`` memory; with fewer
observations than members (``m < N``) the ``m×m`` form ``Xᵀ S (I_m + SᵀS)^{-1} R^{-1/2} d`` is
used, ``O(N m (n+m) + m³)``, and nothing ``N×N`` is formed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ..observations import ObservationModel, observed, whitened_residual
from ._spectral import gram_functions


class ObsSpace(NamedTuple):
    """Ensemble quantities in observation space.

    ``S`` has zero columns for missing observations, and :meth:`innovation` zero entries, so
    a missing observation drops out of every update built on them.
    """

    Y: Float[Array, "N m"]  # predicted observations H(E_i)
    y_mean: Float[Array, " m"]
    S: Float[Array, "N m"]  # whitened, scaled anomalies (zero columns where missing)
    noise: Any  # the observation noise
    mask: Bool[Array, " m"]  # present observations

    def whiten(self, r: Float[Array, "... m"]) -> Float[Array, "... m"]:
        """``R^{-1/2} r`` on present observations, ``0`` on missing ones."""
        return whitened_residual(self.noise, r, self.mask)

    def innovation(self, y: Float[Array, " m"]) -> Float[Array, " m"]:
        """Whitened innovation ``R^{-1/2}(y - ȳ)`` of the ensemble mean (``0`` where missing)."""
        return self.whiten(y - self.y_mean)


def mean_and_anomalies(E: Float[Array, "N n"]) -> tuple[Float[Array, " n"], Float[Array, "N n"]]:
    """Ensemble mean and *unscaled* anomalies ``E - x̄``."""
    mean = jnp.mean(E, axis=0)
    return mean, E - mean


def scaled_anomalies(E: Float[Array, "N n"]) -> tuple[Float[Array, " n"], Float[Array, "N n"]]:
    """Mean and anomalies scaled by ``1/√(N-1)`` (so ``P = Xᵀ X``)."""
    mean, A = mean_and_anomalies(E)
    return mean, A / jnp.sqrt(E.shape[0] - 1.0)


def obs_space(
    E: Float[Array, "N n"], obs: ObservationModel, y: Float[Array, " m"] | None = None
) -> ObsSpace:
    """Apply ``H`` to each member (vmapped) and whiten the scaled anomalies; entries where
    ``y`` is ``NaN`` (missing) are zeroed."""
    Y = jax.vmap(obs.operator)(E)
    return obs_space_from_predictions(Y, obs.noise, y)


def obs_space_from_predictions(
    Y: Float[Array, "N m"], noise, y: Float[Array, " m"] | None = None
) -> ObsSpace:
    """Same as :func:`obs_space` when the predictions ``Y`` are already computed."""
    mask = jnp.ones(Y.shape[-1], bool) if y is None else observed(y)
    y_mean, dY = mean_and_anomalies(Y)
    S = whitened_residual(noise, dY, mask) / jnp.sqrt(Y.shape[0] - 1.0)
    return ObsSpace(Y, y_mean, S, noise, mask)


def _identity_plus_gram_solve(
    G: Float[Array, "k k"], rhs: Float[Array, "k r"]
) -> Float[Array, "k r"]:
    """Solve ``(I + G) Z = rhs`` for a symmetric positive semi-definite Gram matrix ``G``.

    ``Z = (I+G)^{-1} rhs`` by :func:`gram_functions`: a Chebyshev expansion in matrix products
    when ``G``'s spectrum is narrow, else ``G = V Λ Vᵀ`` and ``Z = V (I+Λ)^{-1} Vᵀ rhs``.
    ``I + G`` has eigenvalues ``>= 1``, so either is well conditioned; not a Cholesky solve:
    XLA:CPU's triangular solves go through multi-threaded OpenBLAS and can stall by a factor
    of 1000 on a loaded machine. The derivative does not go through the eigenvectors, so it
    stays finite when ``G`` has repeated eigenvalues (missing observations).
    """
    return gram_functions(G, (rhs,), ("inverse_1p",))[0]


def innovation_spectrum(
    S: Float[Array, "N m"], d: Float[Array, " m"]
) -> tuple[Float[Array, " k"], Float[Array, "k k"], Float[Array, " k"]]:
    r"""Eigen-decomposition of the smaller Gram matrix (``SSᵀ``, ``N×N``, or ``SᵀS``, ``m×m``)
    and the innovation's weight on each eigenvector.

    Returns ``(λ, vecs, q)``: the eigenvalues (clipped at ``0``), their eigenvectors and
    ``q_i = (v_iᵀ S d)²`` (``N×N`` case) or ``λ_i (u_iᵀ d)²`` (``m×m`` case), the same numbers
    for the nonzero eigenvalues. Scalar functions of the innovation likelihood
    ``d ~ N(0, I + θ SᵀS)`` (EnKF-N's dual cost, the adaptive inflation's score) are sums over
    them, ``O(min(N, m))`` each.
    """
    N, m = S.shape
    if m < N:
        lam, U = jnp.linalg.eigh(S.T @ S)
        lam = jnp.maximum(lam, 0.0)
        return lam, U, lam * (U.T @ d) ** 2
    lam, V = jnp.linalg.eigh(S @ S.T)
    lam = jnp.maximum(lam, 0.0)
    return lam, V, (V.T @ (S @ d)) ** 2


def ensemble_solve(S: Float[Array, "N m"], rhs: Float[Array, "N k"]) -> Float[Array, "N k"]:
    """Solve ``(I_N + S Sᵀ) Z = rhs`` (symmetric positive definite, ``N×N``)."""
    return _identity_plus_gram_solve(S @ S.T, rhs)


def kalman_increments(
    X: Float[Array, "N n"], S: Float[Array, "N m"], Dw: Float[Array, "k m"]
) -> Float[Array, "k n"]:
    r"""Increments ``K d_j`` for whitened innovations ``Dw[j] = R^{-1/2} d_j``.

    .. math:: K d_j = Xᵀ (I_N + SSᵀ)^{-1} S\,(R^{-1/2} d_j) = Xᵀ S (I_m + SᵀS)^{-1} (R^{-1/2} d_j)

    The smaller of the two systems (``N×N`` or ``m×m``) is solved. With ``m < N`` the
    products are taken in the cheaper order: ``Z (SᵀX)`` (``Z = Dw (I+SᵀS)^{-1}``, ``k×m``) costs
    ``O(m n (N + k))`` and forms nothing ``N×N``; ``(Z Sᵀ) X`` costs ``O(k N (m + n))``.
    """
    N, m = S.shape
    if m < N:
        Z = obs_space_solve(S, Dw.T).T  # (k, m)
        k, n = Z.shape[0], X.shape[1]
        if m * n * (N + k) <= k * N * (m + n):
            return Z @ (S.T @ X)
        return (Z @ S.T) @ X
    G = ensemble_solve(S, S @ Dw.T)  # (N, k)
    return G.T @ X


def obs_space_solve(S: Float[Array, "N m"], rhs: Float[Array, "m k"]) -> Float[Array, "m k"]:
    """Solve ``(I_m + Sᵀ S) Z = rhs`` (used when ``m < N``)."""
    return _identity_plus_gram_solve(S.T @ S, rhs)


def kalman_gain(X: Float[Array, "N n"], S: Float[Array, "N m"], noise) -> Float[Array, "n m"]:
    r"""Explicit gain ``K`` (``n×m``), only needed for gain localization on small problems."""
    N, m = S.shape
    if m < N:
        Z = obs_space_solve(S, S.T @ X)  # (m, n) = (I + SᵀS)^{-1} Sᵀ X
    else:
        Z = S.T @ ensemble_solve(S, X)  # (m, n) = Sᵀ (I + SSᵀ)^{-1} X
    return noise.whiten_t(Z).T
