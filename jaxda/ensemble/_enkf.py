r"""Stochastic ensemble Kalman filter (perturbed observations).

Forecast: :math:`x_k^{(i)} = M(x_{k-1}^{(i)}) + η_k^{(i)}` (see :func:`jaxda.models.forecast`).

Analysis, for every member :math:`i`:

.. math::
    y^{(i)} = y + ε^{(i)},\quad ε^{(i)} \sim N(0, R),\qquad
    x^{(i)} ← x^{(i)} + K\,(y^{(i)} - H(x^{(i)})),\qquad K = P Hᵀ (H P Hᵀ + R)^{-1}

with the ensemble covariance :math:`P = \tfrac{1}{N-1}\sum_i (x^{(i)} - x̄)(x^{(i)} - x̄)ᵀ`.
``P H^T`` and ``H P H^T`` are estimated from the members' predicted observations, so
nonlinear ``H`` is supported, and the gain is applied in ensemble space (never ``n×n``).
Missing observations (``NaN`` in ``y``) drop out of the update.

References:
    Evensen (1994); Burgers, van Leeuwen & Evensen (1998), *Mon. Wea. Rev.* 126.
"""

from __future__ import annotations

import jax.numpy as jnp
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
from ._localization import (
    EARTH_RADIUS_KM,
    covariance_localization,
)


def perturbed_observations(
    key: Array, y: Float[Array, " m"], obs: ObservationModel, n_members: int, center: bool = True
) -> Float[Array, "N m"]:
    """Draw ``y + ε^{(i)}``, ``ε^{(i)} ~ N(0, R)``; optionally centre the perturbations (DAPPER)."""
    eps = obs.noise.sample(key, (n_members,)).astype(y.dtype)
    if center:
        eps = eps - jnp.mean(eps, axis=0)
    return y + eps


def enkf_analysis(
    key: Array,
    ensemble: Float[Array, "N n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    *,
    center_perturbations: bool = True,
    localization: Float[Array, "n m"] | None = None,
) -> Float[Array, "N n"]:
    r"""Stochastic EnKF analysis with perturbed observations.

    Args:
        key: PRNG key for the observation perturbations.
        ensemble: forecast ensemble ``(N, n)``, ``N >= 2``.
        y: observation vector ``(m,)``; ``NaN`` marks a missing value.
        obs: observation model (operator ``H`` and noise ``R``).
        center_perturbations: remove the sample mean of the perturbations (as
            DAPPER's ``PertObs``), so the mean update is the Kalman update of the mean.
        localization: optional ``n×m`` taper ``ρ`` applied as ``ρ ∘ K`` (see
            :func:`jaxda.ensemble.gain_taper`); then ``K`` is formed explicitly.

    Returns:
        The analysis ensemble ``(N, n)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(3), obs_std=1.0)
        >>> E = jax.random.normal(jax.random.key(0), (20, 3))
        >>> enkf_analysis(jax.random.key(1), E, jnp.zeros(3), obs).shape
        (20, 3)
    """
    check_ensemble(ensemble)
    check_vector(y, "y", obs.dim)
    N = ensemble.shape[0]
    _, X = scaled_anomalies(ensemble)
    os = obs_space(ensemble, obs, y)
    y0 = fill_missing(y, os.mask)
    D = perturbed_observations(key, y0, obs, N, center_perturbations) - os.Y  # (N, m)
    Dw = os.whiten(D)
    if localization is None:
        return (ensemble + kalman_increments(X, os.S, Dw)).astype(ensemble.dtype)
    if localization.shape != (ensemble.shape[1], obs.dim):
        raise ValueError(
            f"localization must have shape (n, m)={(ensemble.shape[1], obs.dim)}, got {localization.shape}"
        )
    K = localization * kalman_gain(X, os.S, os.noise.restrict(os.mask))
    return (ensemble + (D * os.mask) @ K.T).astype(ensemble.dtype)


def enkf(
    *,
    center_perturbations: bool = True,
    localization_radius: float | None = None,
    state_locations=None,
    periodic: bool = True,
    domain_length=None,
    taper: str = "gaspari_cohn",
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
) -> Method:
    """The stochastic EnKF as a :class:`jaxda.core.Method`.

    ``localization_radius`` tapers the gain, ``K ← ρ ∘ K`` with ``ρ = gain_taper(...)``
    (covariance localization, forming ``K`` as ``n×m``: small problems). The geometry options
    are those of :func:`jaxda.ensemble.gain_taper` and :func:`jaxda.ensemble.letkf`: the state
    at ``state_locations`` (default the grid points ``0..n-1``, a ring of length
    ``domain_length``, default ``n``, when ``periodic``; ``(n, d)`` coordinates with one period
    per coordinate; or ``geometry="sphere"`` with ``(longitude, latitude)`` in degrees and
    ``sphere_radius``), the observations at ``obs.operator.locations`` (which may change in
    time), and ``taper`` one of :data:`jaxda.ensemble.TAPERS`.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> method = enkf()
        >>> obs = observation_model(identity(3), obs_std=1.0)
        >>> state = method.init(jax.random.normal(jax.random.key(0), (10, 3)))
        >>> state, info = method.step(jax.random.key(1), state, jnp.array([0.0, jnp.nan, 1.0]), obs)
        >>> int(info.n_obs)
        2

        Localized on 2-D coordinates (a 4×4 grid, not periodic), cubic taper of radius 1:

        >>> xy = jnp.stack(jnp.meshgrid(jnp.arange(4.0), jnp.arange(4.0)), -1).reshape(-1, 2)
        >>> method = enkf(localization_radius=1.0, state_locations=xy, periodic=False,
        ...               taper="cubic")
        >>> obs = observation_model(identity(16), obs_std=1.0)
        >>> E = jax.random.normal(jax.random.key(0), (10, 16))
        >>> method.step(jax.random.key(1), method.init(E), jnp.zeros(16), obs)[0].ensemble.shape
        (10, 16)
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
        E = state.ensemble
        rho = None
        if localizer is not None:
            rho = localizer.gain(E.shape[1], obs.operator.locations, "EnKF localization")
            rho = rho.astype(E.dtype)
        Ea = enkf_analysis(
            key, E, y, obs, center_perturbations=center_perturbations, localization=rho
        )
        return EnsembleState(Ea), analysis_info(Ea, observed(y))

    return Method(ensemble_init, step)
