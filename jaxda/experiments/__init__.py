"""Twin experiments from the literature (truth simulation, scoring) on top of the driver."""

from ._literature import bocquet2019, lorenz1996_uv, wilks2005
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
    "bocquet2019",
    "initial_ensemble",
    "lorenz1996_uv",
    "sakov2008",
    "sakov2012",
    "simulate",
    "time_mean",
    "twin_experiment",
    "wilks2005",
]
