"""Observation operators (pytrees), Gaussian observation noise, missing values, and time series
of observations for the driver."""

from ..core import DiagonalNoise, FullNoise, Noise, full_noise_from_cholesky, gaussian_noise
from ._missing import (
    fill_missing,
    log_likelihood,
    observed,
    whitened_residual,
    whitened_residual_per_time,
)
from ._operators import (
    FromCallable,
    Identity,
    Linear,
    ObservationModel,
    ObsOperator,
    Subset,
    from_callable,
    identity,
    linear,
    observation_model,
    subset,
)
from ._series import ObservationSeries, observation_series, stack_observation_models

__all__ = [
    "DiagonalNoise",
    "FromCallable",
    "FullNoise",
    "Identity",
    "Linear",
    "Noise",
    "ObsOperator",
    "ObservationModel",
    "ObservationSeries",
    "Subset",
    "fill_missing",
    "from_callable",
    "full_noise_from_cholesky",
    "gaussian_noise",
    "identity",
    "linear",
    "log_likelihood",
    "observation_model",
    "observation_series",
    "observed",
    "stack_observation_models",
    "subset",
    "whitened_residual",
    "whitened_residual_per_time",
]
