r"""Deterministic ensemble Kalman filter (DEnKF) of Sakov & Oke (2008).

The mean is updated with the Kalman gain and the anomalies with *half* the gain:

.. math::
    x̄^a = x̄ + K\,(y - \overline{H(x)}),\qquad
    A^a = A - \tfrac12 K\,(H A),\qquad K = P Hᵀ (H P Hᵀ + R)^{-1},

where :math:`A` holds the anomalies :math:`x^{(i)} - x̄` and :math:`(HA)_i = H(x^{(i)}) -
\overline{H(x)}` the predicted-observation anomalies. For linear ``H`` the analysis
covariance is

.. math:: P^a = (I - \tfrac12 KH)\,P\,(I - \tfrac12 KH)ᵀ = (I - KH)\,P + \tfrac14 KHPHᵀKᵀ,

the Kalman covariance :math:`(I-KH)P` plus a positive term of second order in ``KH``: the
DEnKF is a linearisation of the ensemble square-root filter that needs no perturbed
observations and no square root, and its small excess spread acts as built-in inflation.
Member ``i`` receives the increment :math:`K\,(d̄ - \tfrac12 (HA)_i)` with
:math:`d̄ = y - \overline{H(x)}`, so the whole analysis is one application of the gain to
``N`` innovation vectors, done in ensemble (or observation) space: ``K`` is never formed
as ``n×n`` (nor ``n×m`` unless localized). Missing observations (``NaN``) drop out.

References:
    Sakov & Oke (2008), "A deterministic formulation of the ensemble Kalman filter: an
    alternative to ensemble square root filters", *Tellus A* 60, 361-371.
"""

from __future__ import annotations

from jaxtyping import Array, Float

from ..core import (
    EnsembleState,
    Method,
    analysis_info,
    check_ensemble,
    check_vector,
    ensemble_init,
)
from ..observations import ObservationModel, fill_missing, observed
from ._core import kalman_gain, kalman_increments, obs_space, scaled_anomalies
from ._localization import EARTH_RADIUS_KM, covariance_localization


def denkf_analysis(
    ensemble: Float[Array, "N n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    *,
    localization: Float[Array, "n m"] | None = None,
) -> Float[Array, "N n"]:
    r"""DEnKF analysis (Sakov & Oke 2008): mean with ``K``, anomalies with ``K/2``.

    .. math:: x^{(i)} ← x^{(i)} + K\bigl(y - \overline{H(x)} - \tfrac12 (H(x^{(i)}) -
        \overline{H(x)})\bigr)

    Args:
        ensemble: forecast ensemble ``(N, n)``, ``N >= 2``.
        y: observation vector ``(m,)``; ``NaN`` marks a missing value.
        obs: observation model (operator ``H``, possibly nonlinear, and noise ``R``).
        localization: optional ``n×m`` taper ``ρ`` applied as ``ρ ∘ K`` (covariance
            localization, see :func:`jaxda.ensemble.gain_taper`); then ``K`` is formed
            explicitly as ``n×m`` (small problems).

    Returns:
        The analysis ensemble ``(N, n)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(3), obs_std=1.0)
        >>> E = jax.random.normal(jax.random.key(0), (20, 3))
        >>> Ea = denkf_analysis(E, jnp.zeros(3), obs)
        >>> bool(jnp.all(Ea.var(0) < E.var(0)))   # the observations reduce the spread
        True
    """
    check_ensemble(ensemble)
    check_vector(y, "y", obs.dim)
    _, X = scaled_anomalies(ensemble)
    os = obs_space(ensemble, obs, y)
    y0 = fill_missing(y, os.mask)
    # Innovation of member i: d̄ - ½ (Y_i - ȳ)  (missing entries are zeroed by whitening).
    D = (y0 - os.y_mean) - 0.5 * (os.Y - os.y_mean)  # (N, m)
    if localization is None:
        return (ensemble + kalman_increments(X, os.S, os.whiten(D))).astype(ensemble.dtype)
    if localization.shape != (ensemble.shape[1], obs.dim):
        raise ValueError(
            f"localization must have shape (n, m)={(ensemble.shape[1], obs.dim)}, "
            f"got {localization.shape}"
        )
    K = localization * kalman_gain(X, os.S, os.noise.restrict(os.mask))
    return (ensemble + (D * os.mask) @ K.T).astype(ensemble.dtype)


def denkf(
    *,
    localization_radius: float | None = None,
    state_locations=None,
    periodic: bool = True,
    domain_length=None,
    taper: str = "gaspari_cohn",
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
) -> Method:
    """The DEnKF (Sakov & Oke 2008) as a :class:`jaxda.core.Method` (deterministic: the key
    is unused; wrap with :func:`jaxda.assimilate.with_inflation` for DAPPER's ``infl``).

    This is DAPPER's ``EnKF('DEnKF', N, infl)``. ``localization_radius`` tapers the gain with
    Gaspari–Cohn (covariance localization, as in Sakov & Oke 2008; ``K`` is formed as
    ``n×m``: small problems). The localization options (coordinates in 1-D, d-D, periodic
    or on the sphere; the taper) are those of :func:`jaxda.ensemble.enkf`.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> method = denkf(localization_radius=2.0)
        >>> obs = observation_model(identity(8), obs_std=1.0)
        >>> state = method.init(jax.random.normal(jax.random.key(0), (10, 8)))
        >>> y = jnp.zeros(8).at[3].set(jnp.nan)
        >>> state, info = method.step(jax.random.key(1), state, y, obs)
        >>> int(info.n_obs)
        7
    """
    localizer = covariance_localization(
        localization_radius,
        state_locations=state_locations,
        periodic=periodic,
        domain_length=domain_length,
        taper=taper,
        geometry=geometry,
        sphere_radius=sphere_radius,
    )

    def step(key, state, y, obs):
        del key
        E = state.ensemble
        rho = None
        if localizer is not None:
            rho = localizer.gain(E.shape[1], obs.operator.locations, "DEnKF localization")
            rho = rho.astype(E.dtype)
        Ea = denkf_analysis(E, y, obs, localization=rho)
        return EnsembleState(Ea), analysis_info(Ea, observed(y))

    return Method(ensemble_init, step)
