"""Twin experiments from the literature (truth simulation, scoring) on top of the driver."""

from ._chronology import Chronology, chronology
from ._literature import bocquet2019, lorenz1996_uv, wilks2005
from ._qg import (
    linspace_int,
    qg_climatology,
    qg_initial_ensemble,
    qg_observation_network,
    qg_observation_series,
    qg_sakov2008,
    qg_simulate,
    qg_twin_experiment,
)
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
    twin_stream,
)

__all__ = [
    "Chronology",
    "TwinData",
    "TwinResult",
    "TwinSetup",
    "bocquet2019",
    "chronology",
    "initial_ensemble",
    "linspace_int",
    "lorenz1996_uv",
    "qg_climatology",
    "qg_initial_ensemble",
    "qg_observation_network",
    "qg_observation_series",
    "qg_sakov2008",
    "qg_simulate",
    "qg_twin_experiment",
    "sakov2008",
    "sakov2012",
    "simulate",
    "time_mean",
    "twin_experiment",
    "twin_stream",
    "wilks2005",
]
