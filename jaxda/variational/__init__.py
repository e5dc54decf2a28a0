"""Variational data assimilation: 3D-Var and strong-constraint 4D-Var minimized by BFGS.

Costs (:func:`threedvar_cost`, :func:`fourdvar_cost` and their control-variable
forms), analyses (:func:`threedvar_analysis`, :func:`fourdvar_analysis`), the
method :func:`var3d` for the driver, and :func:`climatological_covariance` for a
climatological ``B``; :func:`var4d`, cycled 4D-Var with a sliding window (lag and shift) as a
window method for the driver.
"""

from ._analysis import (
    Var3DInfo,
    climatological_covariance,
    fourdvar_analysis,
    static_background,
    threedvar_analysis,
    var3d,
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
from ._var4d import var4d

__all__ = [
    "Var3DInfo",
    "as_background",
    "background_covariance",
    "climatological_covariance",
    "fourdvar_analysis",
    "fourdvar_cost",
    "fourdvar_cost_cv",
    "observation_term",
    "sqrt_apply",
    "static_background",
    "threedvar_analysis",
    "threedvar_cost",
    "threedvar_cost_cv",
    "var3d",
    "var4d",
    "window_trajectory",
]
