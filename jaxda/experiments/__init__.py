"""Twin experiments: truth simulation, forecast/analysis cycling, standard setups, named methods."""

from ._methods import available_methods, make_analysis, make_enkf, make_etkf
from ._twin import (
    AnalysisFn,
    CycleHistory,
    TwinData,
    TwinResult,
    TwinSetup,
    cycle_step,
    initial_ensemble,
    lorenz63_setup,
    run_filter,
    sakov2008,
    simulate,
    time_mean,
    twin_experiment,
)

__all__ = [
    "AnalysisFn",
    "CycleHistory",
    "TwinData",
    "TwinResult",
    "TwinSetup",
    "available_methods",
    "cycle_step",
    "initial_ensemble",
    "lorenz63_setup",
    "make_analysis",
    "make_enkf",
    "make_etkf",
    "run_filter",
    "sakov2008",
    "simulate",
    "time_mean",
    "twin_experiment",
]
