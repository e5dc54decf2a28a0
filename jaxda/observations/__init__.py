"""Observation operators and Gaussian observation noise."""

from ._noise import DiagonalNoise, FullNoise, Noise, full_noise_from_cholesky, gaussian_noise
from ._operators import (
    ObservationModel,
    ObsOperator,
    from_callable,
    identity,
    linear,
    observation_model,
    subset,
)

__all__ = [
    "DiagonalNoise",
    "FullNoise",
    "Noise",
    "ObsOperator",
    "ObservationModel",
    "from_callable",
    "full_noise_from_cholesky",
    "gaussian_noise",
    "identity",
    "linear",
    "observation_model",
    "subset",
]
