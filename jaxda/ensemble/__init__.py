"""Ensemble data assimilation: EnKF, ETKF, inflation, localization (and smoothers)."""

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
from ._localization import gain_taper, gaspari_cohn, periodic_distance

__all__ = [
    "ObsSpace",
    "enkf_analysis",
    "ensemble_solve",
    "etkf_analysis",
    "etkf_transform",
    "gain_taper",
    "gaspari_cohn",
    "inflate",
    "kalman_gain",
    "kalman_increments",
    "mean_and_anomalies",
    "mean_preserving_rotation",
    "obs_space",
    "obs_space_from_predictions",
    "obs_space_solve",
    "periodic_distance",
    "perturbed_observations",
    "rtps",
    "scaled_anomalies",
]
