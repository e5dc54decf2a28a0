"""jaxda: data assimilation and inverse problems as pure, jit-able, vmap-able JAX functions."""

from . import ensemble, metrics, models, observations
from .metrics import crps, rank_histogram, rmse, spread, weighted_norm

__version__ = "0.1.0"

__all__ = [
    "crps",
    "ensemble",
    "metrics",
    "models",
    "observations",
    "rank_histogram",
    "rmse",
    "spread",
    "weighted_norm",
]
