r"""The method protocol shared by every sequential assimilation method.

A method is a pair of pure functions built by a factory, in the spirit of optax's
``GradientTransformation(init, update)`` and blackjax's ``SamplingAlgorithm(init, step)``:

* ``init(ensemble, obs=None) -> state``: the state is a NamedTuple holding the ``ensemble``
  ``(N, n)`` and whatever the method keeps between cycles (particle log-weights, a
  precomputed localization table...). ``obs`` is the observation model when the network is
  the same at every time (methods may precompute from it), else ``None``.
* ``step(key, state, y, obs) -> (state, info)``: one analysis at one observation time. ``y``
  holds the values (``NaN`` = missing), ``obs`` the operator and noise of that time. ``info``
  is a NamedTuple of per-cycle diagnostics whose fields share names across methods
  (``n_obs``, ``status``, ``ess``...).

The forecast between observation times is the driver's job
(:func:`jaxda.assimilate.assimilate`), except for *window* methods (iEnKS, 4D-Var, 4DEnVar)
that re-run their own model over a data-assimilation window: they provide
``forecast(key, state, n_steps, max_steps) -> state``, which the driver calls instead of
propagating ``state.ensemble`` (``n_steps`` model steps to the next observation time, a static
``int`` or a traced count bounded by the static ``max_steps``). Wrappers
(:func:`jaxda.assimilate.with_inflation`...) take a method and return a method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from jaxtyping import Array, Float, Int


class Method(NamedTuple):
    """A sequential assimilation method: ``init(ensemble, obs=None)``,
    ``step(key, state, y, obs) -> (state, info)`` and, for window methods only,
    ``forecast(key, state, n_steps, max_steps) -> state`` (``None``: the driver propagates
    ``state.ensemble`` with its model)."""

    init: Callable[..., Any]
    step: Callable[..., tuple[Any, Any]]
    forecast: Callable[..., Any] | None = None


class EnsembleState(NamedTuple):
    """State of a method that keeps only its ensemble (EnKF, ETKF, EnSF...)."""

    ensemble: Float[Array, "N n"]


class AnalysisInfo(NamedTuple):
    """Per-cycle diagnostics common to every method.

    Attributes:
        n_obs: number of observations used (present, not missing) at this time.
        status: a :class:`jaxda.core.Status` code (``NONFINITE`` when the analysis is not finite).
    """

    n_obs: Int[Array, ""]
    status: Int[Array, ""]


def ensemble_init(ensemble: Array, obs: Any = None) -> EnsembleState:
    """The ``init`` of methods that keep only their ensemble: checks it is ``(N, n)`` with
    ``N >= 2`` and wraps it in :class:`EnsembleState` (``obs`` is not needed)."""
    from ._checks import check_ensemble

    del obs
    check_ensemble(ensemble)
    return EnsembleState(ensemble)


def analysis_info(ensemble: Array, mask: Array) -> AnalysisInfo:
    """:class:`AnalysisInfo` of an analysis ensemble given the mask of present observations."""
    import jax.numpy as jnp

    from ._status import Status

    ok = jnp.all(jnp.isfinite(ensemble))
    status = jnp.where(ok, Status.SUCCESS, Status.NONFINITE).astype(jnp.int32)
    return AnalysisInfo(jnp.sum(mask).astype(jnp.int32), status)
