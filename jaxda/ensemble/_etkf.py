r"""Ensemble transform Kalman filter (ETKF) with the symmetric square root.

With whitened scaled observation anomalies ``S`` (``N×m``) and the
eigen-decomposition :math:`S Sᵀ = V Λ Vᵀ` (``N×N``):

.. math::
    w = V (I+Λ)^{-1} Vᵀ S\, R^{-1/2}(y - ȳ),\qquad
    T = V (I+Λ)^{-1/2} Vᵀ,\qquad
    x̄^a = x̄ + Xᵀ w,\qquad E^a = x̄^a + T (E - x̄)

The symmetric ``T`` preserves the ensemble mean (Wang et al. 2004; Sakov & Oke 2008).

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
from ._letkf import letkf_transform
from ._spectral import gram_functions


def etkf_transform(
    S: Float[Array, "N m"], dw: Float[Array, " m"]
) -> tuple[Float[Array, " N"], Float[Array, "N N"]]:
    """Mean weights ``w = (I+SSᵀ)^{-1} S dw`` and symmetric transform ``T = (I+SSᵀ)^{-1/2}`` of
    the ETKF, from the ``N×N`` system (:func:`letkf_transform` picks the smaller one)."""
    N = S.shape[0]
    eye = jnp.eye(N, dtype=S.dtype)
    w, T = gram_functions(S @ S.T, (S @ dw, eye), ("inverse_1p", "inverse_sqrt_1p"))
    return w, T


def etkf_analysis(
    ensemble: Float[Array, "N n"], y: Float[Array, " m"], obs: ObservationModel
) -> Float[Array, "N n"]:
    """Deterministic ETKF analysis (symmetric square root, mean preserving); ``NaN`` in ``y``
    marks a missing observation, which drops out of the update.

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
    # The smaller of the N×N and m×m eigen-problems (letkf_transform): O(N m²) when m < N; its
    # derivative (jax.grad through a filter) stays finite with missing observations.
    w, T = letkf_transform(os.S, os.innovation(y))
    mean_a = mean + (w @ A) / jnp.sqrt(N - 1.0)
    return (mean_a + T @ A).astype(ensemble.dtype)


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
