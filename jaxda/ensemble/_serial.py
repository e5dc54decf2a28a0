r"""Serial ensemble square-root filter (EnSRF ≡ serial EAKF): one scalar observation at a time.

With uncorrelated observation errors (diagonal ``R``) the Kalman update by ``m`` observations
equals ``m`` successive updates by one scalar observation each. For observation ``j``, with
the predicted-observation anomalies ``a_i = (H_j(x^{(i)}) - \overline{H_j(x)})/σ_j``
(whitened by the error std ``σ_j``), their variance ``s² = \sum_i a_i²/(N-1)`` and the
whitened innovation ``d = (y_j - \overline{H_j(x)})/σ_j``, every quantity ``z`` carried by the
ensemble (state variables and predicted observations, an *augmented* state) is updated by

.. math::
    k_z = ρ_{zj}\,\frac{\operatorname{cov}(z, a)}{s² + 1},\qquad
    \bar z ← \bar z + k_z\, d,\qquad
    z^{(i)} - \bar z ← (z^{(i)} - \bar z) - \tilde α\, k_z\, a_i,\qquad
    \tilde α = \Bigl(1 + \sqrt{\tfrac{1}{s² + 1}}\Bigr)^{-1},

the Kalman gain for the mean and the reduced gain :math:`\tildeα K` of Whitaker & Hamill
(2002) for the anomalies, so that without localization the analysis mean and covariance are
exactly those of the Kalman update of the ensemble's sample mean and covariance, whatever the
order of the observations. ``ρ_{zj}`` is an optional Gaspari–Cohn taper between the location of
``z`` and that of observation ``j`` (covariance localization; ``1`` without).

This is the same ensemble as Anderson's (2001, 2003) two-step *ensemble adjustment Kalman
filter* (EAKF) for a scalar observation: first shrink the observed variable's anomalies by
:math:`\sqrt{R/(σ_y² + R)}` and shift them to the posterior mean, then regress those
observation-space increments onto every other variable. So ``ensrf`` is the serial EAKF,
DAPPER's ``EnKF('Serial')`` (the Potter scheme) and, with ``localization_radius``, DAPPER's
``SL_EAKF``.

The predicted observations ``H(x^{(i)})`` are computed once per analysis (``H`` may be
nonlinear) and then updated with the state, instead of being re-evaluated after each scalar
observation (as DAPPER's ``SL_EAKF`` does): identical for linear ``H`` without localization,
and with localization for point observations (``H`` picks state variables), where the
observation–observation taper equals the state taper at the observed point. Cost:
``O(m N (n + m))`` time, ``O(N (n + m))`` memory; no matrix is factorized.

References:
    Whitaker & Hamill (2002), "Ensemble data assimilation without perturbed observations",
    *Mon. Wea. Rev.* 130, 1913-1924.
    Anderson (2001), "An ensemble adjustment Kalman filter for data assimilation",
    *Mon. Wea. Rev.* 129, 2884-2903; Anderson (2003), "A local least squares framework for
    ensemble filtering", *Mon. Wea. Rev.* 131, 634-642.
    Karspeck & Anderson (2007) (serial localized EAKF, DAPPER's ``SL_EAKF``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ..core import (
    EnsembleState,
    Method,
    analysis_info,
    check_ensemble,
    check_vector,
    ensemble_init,
    is_concrete,
)
from ..observations import DiagonalNoise, ObservationModel, fill_missing, observed
from ._core import mean_and_anomalies
from ._localization import EARTH_RADIUS_KM, CovarianceLocalization, covariance_localization

ORDERINGS = ("random", "sequential")


def _diagonal_std(obs: ObservationModel) -> Float[Array, " m"]:
    """The error standard deviations of uncorrelated observations; ``ValueError`` otherwise."""
    if not isinstance(obs.noise, DiagonalNoise):
        raise ValueError(
            "the serial EnSRF/EAKF needs uncorrelated observation errors (diagonal R, "
            f"obs_std=); got {type(obs.noise).__name__}. For a full R, whiten first: observe "
            "L^{-1} y with operator L^{-1} H and unit noise (R = L Lᵀ; the observations then "
            "have no locations for localization), or use etkf / enkf, which take a full R"
        )
    return obs.noise.std


def ensrf_analysis(
    ensemble: Float[Array, "N n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    *,
    order: Any = None,
    state_taper=None,
    obs_taper=None,
) -> Float[Array, "N n"]:
    r"""Serial EnSRF / EAKF analysis: the observations are assimilated one scalar at a time
    (a ``lax.scan`` over them), see the module documentation for the update.

    Args:
        ensemble: forecast ensemble ``(N, n)``, ``N >= 2``.
        y: observation vector ``(m,)``; ``NaN`` marks a missing value (skipped: no update).
        obs: observation model; its noise must be diagonal (``obs_std=``, uncorrelated
            errors), else ``ValueError``.
        order: optional permutation of ``0..m-1`` (may be traced), the order in which the
            observations are assimilated (default ``0, 1, ..., m-1``).
        state_taper: optional ``taper(j) -> (n,)`` localization row between observation
            ``j`` (a traced index) and the state variables (covariance localization of the
            state regression).
        obs_taper: optional ``taper(j) -> (m,)`` localization row between observation ``j``
            and all observations (localization of the observation-space regression); give it
            together with ``state_taper``.

    Returns:
        The analysis ensemble ``(N, n)``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(3), obs_std=1.0)
        >>> E = jax.random.normal(jax.random.key(0), (20, 3))
        >>> Ea = ensrf_analysis(E, jnp.zeros(3), obs)
        >>> P, Pa = jnp.cov(E.T), jnp.cov(Ea.T)    # Kalman: Pa = P - P (P + R)^{-1} P
        >>> bool(jnp.allclose(Pa, P - P @ jnp.linalg.solve(P + jnp.eye(3), P), atol=1e-6))
        True
    """
    check_ensemble(ensemble)
    check_vector(y, "y", obs.dim)
    if (state_taper is None) != (obs_taper is None):
        raise ValueError("give both state_taper and obs_taper, or neither")
    std = _diagonal_std(obs)
    N = ensemble.shape[0]
    m = obs.dim
    dtype = ensemble.dtype
    mask = observed(y)
    y0 = fill_missing(y, mask)
    x_mean, A = mean_and_anomalies(ensemble)
    y_mean, Yd = mean_and_anomalies(jax.vmap(obs.operator)(ensemble).astype(dtype))
    idx = jnp.arange(m) if order is None else jnp.asarray(order)
    if idx.shape != (m,) or (
        is_concrete(idx) and not np.array_equal(np.sort(np.asarray(idx)), np.arange(m))
    ):
        raise ValueError(f"order must be a permutation of 0..{m - 1}, got {idx}")
    n1 = jnp.asarray(N - 1.0, dtype)

    def assimilate_one(carry, j):
        x_mean, A, y_mean, Yd = carry
        present: Bool[Array, ""] = mask[j]
        a = Yd[:, j] / std[j]  # whitened predicted-observation anomalies (N,)
        s2 = a @ a / n1  # their variance (R = 1 after whitening)
        d = jnp.where(present, (y0[j] - y_mean[j]) / std[j], 0.0)
        scale = jnp.where(present, 1.0 / (s2 + 1.0), 0.0) / n1
        kx = (a @ A) * scale  # Kalman gain of the state for this observation (n,)
        ky = (a @ Yd) * scale  # and of the predicted observations (m,)
        if state_taper is not None and obs_taper is not None:
            kx = kx * state_taper(j).astype(dtype)
            ky = ky * obs_taper(j).astype(dtype)
        alpha = 1.0 / (1.0 + jnp.sqrt(1.0 / (s2 + 1.0)))  # Whitaker & Hamill's reduced gain
        x_mean = x_mean + kx * d
        y_mean = y_mean + ky * d
        A = A - alpha * jnp.outer(a, kx)
        Yd = Yd - alpha * jnp.outer(a, ky)
        return (x_mean, A, y_mean, Yd), None

    (x_mean, A, _, _), _ = jax.lax.scan(assimilate_one, (x_mean, A, y_mean, Yd), idx)
    return (x_mean + A).astype(dtype)


def _taper_rows(
    localizer: CovarianceLocalization, n: int, obs_locations
) -> tuple[Callable, Callable]:
    """Localization rows of observation ``j`` against the state (``(n,)``) and against every
    observation (``(m,)``), computed one observation at a time inside the scan (the
    observation-observation distances use the state's geometry)."""
    s, o, geo = localizer.coordinates(n, obs_locations, "EnSRF localization")

    def state_taper(j):
        return localizer.coefficients(s, o[j][None, :], geo)

    def obs_taper(j):
        return localizer.coefficients(o, o[j][None, :], geo)

    return state_taper, obs_taper


def ensrf(
    *,
    ordering: str = "random",
    localization_radius: float | None = None,
    state_locations=None,
    periodic: bool = True,
    domain_length=None,
    taper: str = "gaspari_cohn",
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
) -> Method:
    r"""Serial ensemble square-root filter (Whitaker & Hamill 2002) as a
    :class:`jaxda.core.Method`: the observations are assimilated one at a time.

    ``ensrf`` ≡ the serial EAKF (Anderson 2001, 2003) ≡ DAPPER's ``EnKF('Serial')``; with
    ``localization_radius`` it is DAPPER's ``SL_EAKF`` (serial, covariance-localized EAKF).
    Needs uncorrelated observation errors (diagonal ``R``). Without localization the analysis
    mean and covariance are the Kalman update of the ensemble's, for any ordering; the
    members themselves depend on the ordering. Wrap with
    :func:`jaxda.assimilate.with_inflation` / :func:`jaxda.assimilate.with_rotation` for
    DAPPER's ``infl`` / ``rot``.

    Args:
        ordering: ``"random"`` (a new random order of the observations at every analysis,
            drawn from the step's key: DAPPER's default) or ``"sequential"`` (the order of
            ``y``; the method is then deterministic).
        localization_radius: optional Gaspari–Cohn radius (DAPPER's ``loc_rad``
            convention, see :func:`jaxda.ensemble.gaspari_cohn`) tapering each scalar
            observation's regression onto the state and onto the other observations.
        periodic: distances on a ring (Lorenz-96) of length ``domain_length``.
        domain_length: ring length (default ``n``, the state dimension).
        state_locations: positions of the state variables (default the grid points
            ``0..n-1``); the observations sit at ``obs.operator.locations``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> method = ensrf(ordering="sequential", localization_radius=2.0)
        >>> obs = observation_model(identity(8), obs_std=1.0)
        >>> state = method.init(jax.random.normal(jax.random.key(0), (10, 8)))
        >>> y = jnp.zeros(8).at[3].set(jnp.nan)
        >>> state, info = method.step(jax.random.key(1), state, y, obs)
        >>> int(info.n_obs)
        7
    """
    if ordering not in ORDERINGS:
        raise ValueError(f"ordering must be one of {ORDERINGS}, got {ordering!r}")
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
        n, m = E.shape[1], obs.dim
        order = jax.random.permutation(key, m) if ordering == "random" else None
        state_taper: Callable | None = None
        obs_taper: Callable | None = None
        if localizer is not None:
            state_taper, obs_taper = _taper_rows(localizer, n, obs.operator.locations)
        Ea = ensrf_analysis(E, y, obs, order=order, state_taper=state_taper, obs_taper=obs_taper)
        return EnsembleState(Ea), analysis_info(Ea, observed(y))

    return Method(ensemble_init, step)
