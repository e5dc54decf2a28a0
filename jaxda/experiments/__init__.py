"""Twin experiments from the literature (truth simulation, scoring) on top of the driver."""

from ._chronology import Chronology, chronology
from ._literature import (
    bocquet2010,
    bocquet2019,
    lorenz1996_uv,
    pinheiro2019,
    spantini2019,
    wilks2005,
)
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
from ._setups import DEFAULT_SETUP, SETUPS, NamedSetup, Tuning, get_setup
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
    "DEFAULT_SETUP",
    "SETUPS",
    "Chronology",
    "NamedSetup",
    "Tuning",
    "TwinData",
    "TwinResult",
    "TwinSetup",
    "bocquet2010",
    "bocquet2019",
    "chronology",
    "get_setup",
    "initial_ensemble",
    "linspace_int",
    "lorenz1996_uv",
    "pinheiro2019",
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
    "spantini2019",
    "time_mean",
    "twin_experiment",
    "twin_stream",
    "wilks2005",
]
