"""Variational data assimilation: 3D-Var and strong-constraint 4D-Var minimized by BFGS.

Costs (:func:`threedvar_cost`, :func:`fourdvar_cost` and their control-variable
forms), analyses (:func:`threedvar_analysis`, :func:`fourdvar_analysis`), the
method :func:`var3d` for the driver, and :func:`climatological_covariance` for a
climatological ``B``; :func:`var4d`, cycled 4D-Var with a sliding window (lag and shift) as a
window method for the driver.

Window-level analyses for cycling: :func:`fourdenvar_analysis` (4DEnVar: 4D-Var in the span
of the forecast ensemble's perturbations, no adjoint, optionally localized with
:func:`localization_sqrt` and hybrid with a static ``B``) and :func:`weak_fourdvar_analysis`
(weak-constraint 4D-Var with model-error forcing, cost :func:`weak_fourdvar_cost`).
"""

from ._analysis import (
    Var3DInfo,
    climatological_covariance,
    climatological_sample,
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
from ._fourdenvar import FourDEnVarResult, fourdenvar_analysis, localization_sqrt
from ._var4d import var4d
from ._weak import WeakFourDVarResult, weak_fourdvar_analysis, weak_fourdvar_cost

__all__ = [
    "FourDEnVarResult",
    "Var3DInfo",
    "WeakFourDVarResult",
    "as_background",
    "background_covariance",
    "climatological_covariance",
    "climatological_sample",
    "fourdenvar_analysis",
    "fourdvar_analysis",
    "fourdvar_cost",
    "fourdvar_cost_cv",
    "localization_sqrt",
    "observation_term",
    "sqrt_apply",
    "static_background",
    "threedvar_analysis",
    "threedvar_cost",
    "threedvar_cost_cv",
    "var3d",
    "var4d",
    "weak_fourdvar_analysis",
    "weak_fourdvar_cost",
    "window_trajectory",
]
