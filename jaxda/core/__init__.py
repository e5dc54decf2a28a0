"""The bottom layer: the status enum and result conventions, the method protocol, eager checks.

Every other package imports from here; this package imports no other part of jaxda.
"""

from ._black_box import (
    TRACER_ERRORS,
    black_box,
    catch_not_traceable,
    not_traceable_as_type_error,
    not_traceable_error,
)
from ._checks import (
    check_count,
    check_ensemble,
    check_in_range,
    check_sample,
    check_vector,
    is_concrete,
    positive_or_error,
)
from ._noise import (
    DiagonalNoise,
    FactorNoise,
    FullNoise,
    GaussianNoise,
    Noise,
    ScalarNoise,
    full_noise_from_cholesky,
    gaussian_noise,
    singular_noise,
)
from ._protocol import AnalysisInfo, EnsembleState, Method, analysis_info, ensemble_init
from ._status import (
    Status,
    first_failure,
    raise_on_failure,
    status_array,
    status_message,
)
from ._transforms import Transform, bounded, identity_transform, positive

__all__ = [
    "TRACER_ERRORS",
    "AnalysisInfo",
    "DiagonalNoise",
    "EnsembleState",
    "FactorNoise",
    "FullNoise",
    "GaussianNoise",
    "Method",
    "Noise",
    "ScalarNoise",
    "Status",
    "Transform",
    "analysis_info",
    "black_box",
    "bounded",
    "catch_not_traceable",
    "check_count",
    "check_ensemble",
    "check_in_range",
    "check_sample",
    "check_vector",
    "ensemble_init",
    "first_failure",
    "full_noise_from_cholesky",
    "gaussian_noise",
    "identity_transform",
    "is_concrete",
    "not_traceable_as_type_error",
    "not_traceable_error",
    "positive",
    "positive_or_error",
    "raise_on_failure",
    "singular_noise",
    "status_array",
    "status_message",
]
