"""The one driver (:func:`assimilate`), method wrappers, and the method registry.

Every sequential method (EnKF, ETKF, LETKF, particle filter, EnSF, 3D-Var) is a
:class:`jaxda.core.Method`; :func:`assimilate` runs any of them on any model and observation
series with one ``lax.scan``.
"""

from ._adaptive import AdaptiveInflationInfo, AdaptiveInflationState, with_adaptive_inflation
from ._driver import (
    History,
    RunStatus,
    assimilate,
    assimilate_stream,
    ensemble_mean,
    innovation_statistics,
    log_likelihood,
    run_status,
    throw_on_failure,
)
from ._learned_prior import diffusion_filter_from_checkpoint
from ._registry import (
    REQUIRED,
    available_methods,
    get_factory,
    make_method,
    method_options,
    register,
)
from ._wrappers import with_inflation, with_rotation, with_rtps

__all__ = [
    "REQUIRED",
    "AdaptiveInflationInfo",
    "AdaptiveInflationState",
    "History",
    "RunStatus",
    "assimilate",
    "assimilate_stream",
    "available_methods",
    "diffusion_filter_from_checkpoint",
    "ensemble_mean",
    "get_factory",
    "innovation_statistics",
    "log_likelihood",
    "make_method",
    "method_options",
    "register",
    "run_status",
    "throw_on_failure",
    "with_adaptive_inflation",
    "with_inflation",
    "with_rotation",
    "with_rtps",
]
