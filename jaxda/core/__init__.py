"""The bottom layer: the status enum and result conventions, the method protocol, eager checks.

Every other package imports from here; this package imports no other part of jaxda.
"""

from ._checks import check_ensemble, check_in_range, check_vector, is_concrete, positive_or_error
from ._protocol import AnalysisInfo, EnsembleState, Method, analysis_info
from ._status import (
    Status,
    first_failure,
    raise_on_failure,
    status_array,
    status_message,
)

__all__ = [
    "AnalysisInfo",
    "EnsembleState",
    "Method",
    "Status",
    "analysis_info",
    "check_ensemble",
    "check_in_range",
    "check_vector",
    "first_failure",
    "is_concrete",
    "positive_or_error",
    "raise_on_failure",
    "status_array",
    "status_message",
]
