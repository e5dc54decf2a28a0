"""jaxda: data assimilation and inverse problems as pure, jit-able, vmap-able JAX functions."""

from . import ensemble, experiments, metrics, models, observations, optimize, sharding, variational
from .core import black_box
from .metrics import crps, rank_histogram, rmse, spread, weighted_norm

__version__ = "0.1.0"

__all__ = [
    "black_box",
    "crps",
    "ensemble",
    "experiments",
    "metrics",
    "models",
    "observations",
    "optimize",
    "rank_histogram",
    "rmse",
    "sharding",
    "spread",
    "variational",
    "weighted_norm",
]
