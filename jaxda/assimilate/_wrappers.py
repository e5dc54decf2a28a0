"""Wrappers: each takes a :class:`jaxda.core.Method` and returns a method (optax ``chain``
style), so inflation, relaxation and rotation are composable rather than driver flags.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxda.ensemble import etkf
    >>> method = with_rotation(with_inflation(etkf(), 1.02))
    >>> isinstance(method, Method)
    True
"""

from __future__ import annotations

import jax

from ..core import Method, check_in_range, is_concrete, positive_or_error
from ..ensemble import inflate, mean_and_anomalies, mean_preserving_rotation, rtps


def _check_method(method, wrapper: str) -> None:
    if not isinstance(method, Method):
        raise TypeError(f"expected a jaxda.core.Method, got {type(method).__name__}")
    if method.forecast is not None:
        # A window method's state.ensemble is only its estimate at the latest observation
        # time; what is cycled is its window-start ensemble, so the wrapper would do nothing.
        raise ValueError(
            f"{wrapper} cannot wrap a window method (iEnKS, 4D-Var, 4DEnVar): it keeps its own "
            "window ensemble; use the method's inflation= / rotate= options"
        )


def _refuse_smoother(state, wrapper: str) -> None:
    """An EnKS keeps the current analysis in its lag buffer too: a wrapper changing only
    ``state.ensemble`` would desynchronize them (checked when the step is traced)."""
    if hasattr(state, "lagged"):
        raise ValueError(
            f"{wrapper} cannot wrap an ensemble smoother: it would change the forecast members "
            "but not the buffered analyses; use enks(inflation=...)"
        )


def with_inflation(method: Method, factor) -> Method:
    r"""Multiplicative inflation of the analysis anomalies by ``factor`` after each step
    (:func:`jaxda.ensemble.inflate`, DAPPER's ``infl``). ``factor`` may be traced (vmap or grad
    over it); it must be positive."""
    _check_method(method, "with_inflation")
    if is_concrete(factor):
        positive_or_error("inflation factor", factor)

    def step(key, state, y, obs):
        _refuse_smoother(state, "with_inflation")
        state, info = method.step(key, state, y, obs)
        return state._replace(ensemble=inflate(state.ensemble, factor)), info

    return Method(method.init, step)


def with_rtps(method: Method, alpha) -> Method:
    """Relaxation to prior spread (Whitaker & Hamill 2012) with ``alpha`` in ``[0, 1]``
    (:func:`jaxda.ensemble.rtps`)."""
    _check_method(method, "with_rtps")
    if is_concrete(alpha):
        check_in_range("rtps alpha", float(alpha), 0.0, 1.0)

    def step(key, state, y, obs):
        _refuse_smoother(state, "with_rtps")
        Ef = state.ensemble
        state, info = method.step(key, state, y, obs)
        return state._replace(ensemble=rtps(state.ensemble, Ef, alpha)), info

    return Method(method.init, step)


def with_rotation(method: Method) -> Method:
    """DAPPER's random mean-preserving rotation of the analysis anomalies
    (:func:`jaxda.ensemble.mean_preserving_rotation`), with its own split of the key."""
    _check_method(method, "with_rotation")

    def step(key, state, y, obs):
        _refuse_smoother(state, "with_rotation")
        k_method, k_rot = jax.random.split(key)
        state, info = method.step(k_method, state, y, obs)
        E = state.ensemble
        mean, A = mean_and_anomalies(E)
        Omega = mean_preserving_rotation(k_rot, E.shape[0]).astype(E.dtype)
        return state._replace(ensemble=mean + Omega @ A), info

    return Method(method.init, step)
