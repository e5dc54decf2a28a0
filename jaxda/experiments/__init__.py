"""Twin experiments from the literature (truth simulation, scoring) on top of the driver."""

from ._twin import (
    TwinData,
    TwinResult,
    TwinSetup,
    initial_ensemble,
    sakov2008,
    sakov2012,
    simulate,
    time_mean,
    twin_experiment,
)

__all__ = [
    "TwinData",
    "TwinResult",
    "TwinSetup",
    "initial_ensemble",
    "sakov2008",
    "sakov2012",
    "simulate",
    "time_mean",
    "twin_experiment",
]
