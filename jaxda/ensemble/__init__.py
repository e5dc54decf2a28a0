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
from ._esmda import (
    ESMDAResult,
    SmootherHistory,
    esmda,
    esmda_perturbations,
    esmda_update,
    geometric_alpha,
    normalize_alpha,
)
from ._etkf import etkf_analysis, etkf_transform, mean_preserving_rotation
from ._ies import IESResult, ies, ies_kalman, step_length_schedule
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
from ._problems import (
    InverseProblem,
    grid_posterior,
    linear_gaussian_posterior,
    linear_gaussian_problem,
    lorenz96_parameter_problem,
    nonlinear_scalar_problem,
)

__all__ = [
    "ESMDAResult",
    "IESResult",
    "InverseProblem",
    "LocalObs",
    "ObsSpace",
    "PFResult",
    "SmootherHistory",
    "bootstrap_particle_filter",
    "enkf_analysis",
    "ensemble_solve",
    "esmda",
    "esmda_perturbations",
    "esmda_update",
    "etkf_analysis",
    "etkf_transform",
    "gain_taper",
    "gaspari_cohn",
    "geometric_alpha",
    "grid_posterior",
    "ies",
    "ies_kalman",
    "inflate",
    "kalman_gain",
    "kalman_increments",
    "letkf_analysis",
    "letkf_transform",
    "linear_gaussian_posterior",
    "linear_gaussian_problem",
    "local_observations",
    "lorenz96_parameter_problem",
    "make_letkf",
    "make_particle_filter",
    "mean_and_anomalies",
    "mean_preserving_rotation",
    "nonlinear_scalar_problem",
    "normalize_alpha",
    "obs_space",
    "obs_space_from_predictions",
    "obs_space_solve",
    "periodic_distance",
    "perturbed_observations",
    "pf_trajectories",
    "rtps",
    "scaled_anomalies",
    "step_length_schedule",
    "systematic_resample",
]
