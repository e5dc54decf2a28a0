r"""The ensemble Kalman filter's innovation log-likelihood (Gaussian approximation).

With the forecast ensemble ``E`` (``N × n``), predicted observations ``Y_i = H(E_i)``, their mean
``ȳ`` and the observation noise ``R``, the ensemble Kalman filter approximates the predictive
distribution of the next observation by a Gaussian (the innovation likelihood of the Kalman
filter, with the ensemble covariance in place of ``P``):

.. math::
    \log p(y_k \mid y_{1:k-1}) ≈ \log N\big(y_k;\ ȳ,\ C_{yy} + R\big),\qquad
    C_{yy} = \tfrac{1}{N-1}\textstyle\sum_i (Y_i - ȳ)(Y_i - ȳ)ᵀ.

Whitening by ``R^{-1/2}`` (``d = R^{-1/2}(y - ȳ)``, ``S`` the whitened scaled anomalies of
:mod:`jaxda.ensemble._core`) turns the covariance into ``I_m + SᵀS``; by the matrix determinant
lemma and Woodbury's identity the density needs only the smaller of the ``N×N`` and ``m×m``
systems:

.. math::
    -2\log p = dᵀd - (Sd)ᵀ(I_N + SSᵀ)^{-1}(Sd) + \log\det(I_N + SSᵀ) + \log\det R + m\log 2π.

A Cholesky factorization is used (not an eigen-decomposition), so the value is differentiable
in every input without trouble at repeated eigenvalues. Missing observations (``NaN``) drop out.
Summed over the observation times it is the EnKF log marginal likelihood whose gradient
Chen, Sanz-Alonso & Willett (2022, *Auto-differentiable ensemble Kalman filters*, SIAM J. Math.
Data Sci. 4) use to learn model parameters; with a linear-Gaussian model and a large ensemble it
tends to the exact Kalman filter log-likelihood.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float

from ..observations import ObservationModel, fill_missing, log_likelihood
from ._core import obs_space


def innovation_log_likelihood(
    ensemble: Float[Array, "N n"], y: Float[Array, " m"], obs: ObservationModel
) -> Float[Array, ""]:
    r"""``log N(y; ȳ, C_yy + R)`` of a forecast ensemble (module docstring); ``0`` when nothing
    is observed.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(2), obs_std=1.0)
        >>> E = jnp.array([[1.0, 0.0], [-1.0, 0.0]])      # C_yy = diag(2, 0)
        >>> ll = innovation_log_likelihood(E, jnp.zeros(2), obs)
        >>> bool(jnp.isclose(ll, -0.5 * jnp.log(3.0) - jnp.log(2 * jnp.pi)))
        True
    """
    N = ensemble.shape[0]
    if N < 2:
        raise ValueError(f"the innovation likelihood needs an ensemble of N >= 2 members, got {N}")
    os = obs_space(ensemble, obs, y)
    d = os.innovation(fill_missing(y, os.mask))
    S = os.S
    m = S.shape[1]
    if m < N:
        C = jnp.eye(m, dtype=S.dtype) + S.T @ S
        L = jnp.linalg.cholesky(C)
        z = jsl.solve_triangular(L, d, lower=True)
        quad = z @ z
    else:
        C = jnp.eye(N, dtype=S.dtype) + S @ S.T
        L = jnp.linalg.cholesky(C)
        z = jsl.solve_triangular(L, S @ d, lower=True)
        quad = d @ d - z @ z
    logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L)))
    # -½ log det R_o - (m_o/2) log 2π over the present observations (zero residual).
    gauss_const = log_likelihood(obs.noise, jnp.zeros_like(d), os.mask)
    return (gauss_const - 0.5 * (quad + logdet)).astype(ensemble.dtype)
