"""Ensemble data assimilation: EnKF, ETKF, LETKF, inflation, localization, smoothers, particle filter."""

from ._core import (
    ObsSpace,
    ensemble_solve,
    kalman_gain,
    kalman_increments,
    mean_and_anomalies,
    obs_space,
    obs_space_from_predictions,
    obs_space_solve,
    scaled_anomalies,
)
from ._enkf import enkf_analysis, perturbed_observations
from ._etkf import etkf_analysis, etkf_transform, mean_preserving_rotation
from ._inflation import inflate, rtps
from ._letkf import (
    LocalObs,
    letkf_analysis,
    letkf_transform,
    local_observations,
    make_letkf,
)
from ._localization import gain_taper, gaspari_cohn, periodic_distance
from ._particle_filter import (
    PFResult,
    bootstrap_particle_filter,
    make_particle_filter,
    pf_trajectories,
    systematic_resample,
)

__all__ = [
    "LocalObs",
    "ObsSpace",
    "PFResult",
    "bootstrap_particle_filter",
    "enkf_analysis",
    "ensemble_solve",
    "etkf_analysis",
    "etkf_transform",
    "gain_taper",
    "gaspari_cohn",
    "inflate",
    "kalman_gain",
    "kalman_increments",
    "letkf_analysis",
    "letkf_transform",
    "local_observations",
    "make_letkf",
    "make_particle_filter",
    "mean_and_anomalies",
    "mean_preserving_rotation",
    "obs_space",
    "obs_space_from_predictions",
    "obs_space_solve",
    "periodic_distance",
    "perturbed_observations",
    "pf_trajectories",
    "rtps",
    "scaled_anomalies",
    "systematic_resample",
]
