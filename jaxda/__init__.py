"""jaxda: data assimilation and inverse problems as pure, jit-able, vmap-able JAX functions."""

from . import (
    assimilate,
    core,
    diffusion,
    ensemble,
    experiments,
    io,
    metrics,
    models,
    observations,
    optimize,
    sharding,
    variational,
)
from .core import black_box
from .metrics import crps, rank_histogram, rmse, spread, weighted_norm

__version__ = "0.1.0"

__all__ = [
    "assimilate",
    "black_box",
    "core",
    "crps",
    "diffusion",
    "ensemble",
    "experiments",
    "io",
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
