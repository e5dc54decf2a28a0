"""Shared type aliases (jaxtyping) used in signatures across jaxda."""

from __future__ import annotations

from typing import Any

from jaxtyping import Array, Float, PRNGKeyArray

Key = PRNGKeyArray
Scalar = Float[Array, ""]
Ensemble = Float[Array, "N n"]
State = Float[Array, " n"]
ObsVector = Float[Array, " m"]
PyTree = Any

__all__ = ["Array", "Ensemble", "Float", "Key", "ObsVector", "PyTree", "Scalar", "State"]
