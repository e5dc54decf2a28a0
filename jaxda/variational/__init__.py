"""Variational data assimilation: 3D-Var and strong-constraint 4D-Var minimized by BFGS.

Costs (:func:`threedvar_cost`, :func:`fourdvar_cost` and their control-variable
forms), analyses (:func:`threedvar_analysis`, :func:`fourdvar_analysis`), the
twin-driver factory :func:`make_3dvar`, the cycled :func:`fourdvar_experiment`,
and :func:`climatological_covariance` for a climatological ``B``.
"""

from ._analysis import (
    climatological_covariance,
    fourdvar_analysis,
    make_3dvar,
    threedvar_analysis,
)
from ._costs import (
    as_background,
    background_covariance,
    fourdvar_cost,
    fourdvar_cost_cv,
    observation_term,
    sqrt_apply,
    threedvar_cost,
    threedvar_cost_cv,
    window_trajectory,
)
from ._cycling import FourDVarHistory, FourDVarResult, fourdvar_experiment

__all__ = [
    "FourDVarHistory",
    "FourDVarResult",
    "as_background",
    "background_covariance",
    "climatological_covariance",
    "fourdvar_analysis",
    "fourdvar_cost",
    "fourdvar_cost_cv",
    "fourdvar_experiment",
    "make_3dvar",
    "observation_term",
    "sqrt_apply",
    "threedvar_analysis",
    "threedvar_cost",
    "threedvar_cost_cv",
    "window_trajectory",
]
