"""Twin experiments: truth simulation, forecast/analysis cycling, standard setups, named methods."""

from ._methods import (
    WINDOW_METHODS,
    available_methods,
    make_analysis,
    make_enkf,
    make_etkf,
    make_var3d,
)
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
    "WINDOW_METHODS",
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
    "make_var3d",
    "run_filter",
    "sakov2008",
    "simulate",
    "time_mean",
    "twin_experiment",
]
