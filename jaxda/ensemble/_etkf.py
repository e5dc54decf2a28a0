r"""Ensemble transform Kalman filter (ETKF) with the symmetric square root.

With whitened scaled observation anomalies ``S`` (``N×m``), the whitened innovation
``d = R^{-1/2}(y - ȳ)`` and the unscaled anomalies ``A = E - x̄`` (``N×n``):

.. math::
    w = (I_N + S Sᵀ)^{-1} S d,\qquad
    T = (I_N + S Sᵀ)^{-1/2},\qquad
    E^a = x̄ + \frac{Aᵀ w}{\sqrt{N-1}} + T A

The symmetric ``T`` preserves the ensemble mean (Wang et al. 2004; Sakov & Oke 2008).

**Which space.** ``T`` is ``N×N``, but the analysis only needs ``T A``. When there are fewer
observations than members (``m < N``) both terms come from the ``m×m`` Gram matrix
``G = SᵀS`` (push-through identity, and ``f(SSᵀ) = I + S g(G) Sᵀ`` for ``f(λ) = (1+λ)^{-1/2}``):

.. math::
    w = S (I_m + G)^{-1} d,\qquad
    T A = A + S\, g(G)\, (Sᵀ A),\qquad g(λ) = \frac{(1+λ)^{-1/2} - 1}{λ}
        = \frac{-1}{\sqrt{1+λ}\,(1 + \sqrt{1+λ})}

(``g(0) = -1/2``: a missing observation's zero column of ``S`` is a zero eigenvalue of ``G``,
harmless), so an analysis costs ``O(N m² + m³ + N m n)`` time and ``O(N(n+m) + m²)`` memory,
the same order as the stochastic EnKF's, and nothing ``N×N`` is formed. Otherwise
(``m >= N``) the ``N×N`` matrix ``SSᵀ`` is used, ``O(N² m + N³ + N² n)``. The choice is made
from the shapes (static under ``jit``): :func:`etkf_update`.

References:
    Bishop, Etherton & Majumdar (2001); Hunt, Kostelich & Szunyogh (2007);
    Sakov & Oke (2008), *Mon. Wea. Rev.* 136.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import EnsembleState, Method, analysis_info, check_ensemble, check_vector, ensemble_init
from ..observations import ObservationModel, observed
from ._core import mean_and_anomalies, obs_space
from ._spectral import gram_functions


def etkf_transform(
    S: Float[Array, "N m"], dw: Float[Array, " m"]
) -> tuple[Float[Array, " N"], Float[Array, "N N"]]:
    """Mean weights ``w = (I+SSᵀ)^{-1} S dw`` and symmetric transform ``T = (I+SSᵀ)^{-1/2}`` of
    the ETKF as an explicit ``N×N`` matrix, from the ``N×N`` system. To apply ``T`` to
    anomalies without forming it, use :func:`etkf_update` (``O(N m²)`` when ``m < N``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> S = jax.random.normal(jax.random.key(0), (6, 2))
        >>> w, T = etkf_transform(S, jnp.ones(2))
        >>> bool(jnp.allclose(T @ T @ (jnp.eye(6) + S @ S.T), jnp.eye(6), atol=1e-5))
        True
    """
    N = S.shape[0]
    eye = jnp.eye(N, dtype=S.dtype)
    w, T = gram_functions(S @ S.T, (S @ dw, eye), ("inverse_1p", "inverse_sqrt_1p"))
    return w, T


def _apply_functions(G, v, B, kinds):
    """``(f₁(G) v, f₂(G) B)`` by :func:`gram_functions`; when ``B`` has more columns than ``G``
    has rows, ``f₂(G)`` is formed (``k×k``) and multiplied, which is cheaper for the Chebyshev
    expansion (its cost grows with the number of right-hand sides)."""
    k = G.shape[0]
    if B.shape[1] <= k:
        return gram_functions(G, (v, B), kinds)
    fv, F = gram_functions(G, (v, jnp.eye(k, dtype=G.dtype)), kinds)
    return fv, F @ B


def etkf_update(
    S: Float[Array, "N m"], dw: Float[Array, " m"], A: Float[Array, "N n"]
) -> tuple[Float[Array, " n"], Float[Array, "N n"]]:
    r"""The ETKF applied to anomalies ``A`` without forming ``T``: returns ``(Aᵀw, T A)`` with
    the mean weights ``w = (I+SSᵀ)^{-1} S dw`` and ``T = (I+SSᵀ)^{-1/2}``.

    For the unscaled anomalies ``A = E - x̄`` the analysis is ``E^a = x̄ + Aᵀw/√(N-1) + T A``
    (:func:`etkf_analysis`). When ``m < N`` (fewer observations than members) everything comes
    from the ``m×m`` Gram matrix ``G = SᵀS`` and ``U = SᵀA``: ``Aᵀw = Uᵀ(I+G)^{-1} dw`` and
    ``T A = A + S g(G) U`` with ``g(λ) = ((1+λ)^{-1/2} - 1)/λ`` (the ``"sqrt_correction"`` of
    :func:`jaxda.ensemble.batched_gram_functions`, finite at ``λ = 0``), ``O(N m² + m³ + N m n)``;
    otherwise from ``SSᵀ`` (``N×N``). The branch is chosen from the static shapes; both give
    the same result to rounding, and derivatives stay finite for repeated eigenvalues (zero
    columns of ``S``: missing observations).

    Args:
        S: whitened scaled observation anomalies ``(N, m)`` (zero columns where missing).
        dw: whitened innovation ``R^{-1/2}(y - ȳ)`` ``(m,)`` (zero where missing).
        A: anomalies ``(N, n)`` to transform (any columns: the state, a lag window, ...).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> S = jax.random.normal(jax.random.key(0), (8, 3))      # m = 3 < N = 8
        >>> A = jax.random.normal(jax.random.key(1), (8, 4))
        >>> wA, TA = etkf_update(S, jnp.ones(3), A)
        >>> w, T = etkf_transform(S, jnp.ones(3))                 # the explicit 8×8 transform
        >>> bool(jnp.allclose(TA, T @ A, atol=1e-5)), bool(jnp.allclose(wA, w @ A, atol=1e-5))
        (True, True)
    """
    N, m = S.shape
    if m < N:  # observation space: m×m
        U = S.T @ A  # (m, n)
        v, Z = _apply_functions(S.T @ S, dw, U, ("inverse_1p", "sqrt_correction"))
        return v @ U, A + S @ Z
    w, TA = _apply_functions(S @ S.T, S @ dw, A, ("inverse_1p", "inverse_sqrt_1p"))
    return w @ A, TA


def etkf_analysis(
    ensemble: Float[Array, "N n"], y: Float[Array, " m"], obs: ObservationModel
) -> Float[Array, "N n"]:
    """Deterministic ETKF analysis (symmetric square root, mean preserving); ``NaN`` in ``y``
    marks a missing observation, which drops out of the update.

    With fewer observations than members (``m < N``) the analysis is computed in observation
    space, ``O(N m² + m³ + N m n)``, else in ensemble space, ``O(N² (m + n) + N³)``: chosen
    automatically from the shapes (:func:`etkf_update`; module docstring for the formulas).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(3), obs_std=1.0)
        >>> E = jax.random.normal(jax.random.key(0), (10, 3))
        >>> etkf_analysis(E, jnp.zeros(3), obs).shape
        (10, 3)
    """
    check_ensemble(ensemble)
    check_vector(y, "y", obs.dim)
    N = ensemble.shape[0]
    mean, A = mean_and_anomalies(ensemble)
    os = obs_space(ensemble, obs, y)
    wA, TA = etkf_update(os.S, os.innovation(y), A)
    return (mean + wA / jnp.sqrt(N - 1.0) + TA).astype(ensemble.dtype)


def mean_preserving_rotation(key: Array, n_members: int) -> Float[Array, "N N"]:
    """Random orthogonal ``Ω`` (``N×N``) with ``Ω 1 = 1``: rotates anomalies, keeps the mean.

    Applying ``A ← Ω A`` to anomalies is DAPPER's ``rot=True`` post-processing; it
    decorrelates the members from the deterministic square-root transform.
    ``Ω = U diag(1, Q) Uᵀ`` with ``U`` a fixed orthonormal basis whose first column is
    ``1/√N`` and ``Q`` Haar-distributed on ``O(N-1)`` (one QR of a Gaussian matrix), so ``Ω``
    is Haar-distributed on the orthogonal matrices that fix ``1``.
    """
    N = n_members
    # Fixed orthonormal basis (a constant of the trace) whose first column is 1/√N.
    U, _ = np.linalg.qr(np.concatenate([np.ones((N, 1)), np.eye(N)[:, 1:]], axis=1))
    U = U * np.sign(U[0, 0])
    Q, R = jnp.linalg.qr(jax.random.normal(key, (N - 1, N - 1)))
    Q = Q * jnp.sign(jnp.diagonal(R))
    U1, U2 = jnp.asarray(U[:, :1]), jnp.asarray(U[:, 1:])
    return U1 @ U1.T + U2 @ Q @ U2.T


def etkf() -> Method:
    """The ETKF as a :class:`jaxda.core.Method` (deterministic: the key is unused; wrap it with
    :func:`jaxda.assimilate.with_rotation` for DAPPER's random rotation).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> method = etkf()
        >>> obs = observation_model(identity(2), obs_std=1.0)
        >>> state = method.init(jax.random.normal(jax.random.key(0), (5, 2)))
        >>> state, info = method.step(jax.random.key(1), state, jnp.zeros(2), obs)
        >>> state.ensemble.shape, int(info.status)
        ((5, 2), 0)
    """

    def step(key, state, y, obs):
        del key
        Ea = etkf_analysis(state.ensemble, y, obs)
        return EnsembleState(Ea), analysis_info(Ea, observed(y))

    return Method(ensemble_init, step)
