r"""Adaptive multiplicative inflation as a wrapper: any ensemble Kalman method, no inflation scan.

:func:`with_adaptive_inflation` keeps a Gaussian belief on the covariance inflation
``θ = λ²`` in the state, updates it at every analysis from the innovation of the forecast
(:func:`jaxda.ensemble.update_inflation_estimate`: the exact Gaussian likelihood of ``θ`` in
the ensemble subspace, accumulated over about ``memory`` cycles), inflates the *forecast*
anomalies by ``λ = √θ`` (prior inflation, as Anderson 2009) and then runs the wrapped method.

The wrapped state is :class:`AdaptiveInflationState`: the ``ensemble`` (so the driver forecasts
it and other wrappers can ``_replace`` it), the inner method's state with its ensemble field
emptied (kept once only), and the estimate. ``log_weights`` of the inner state (particle
filters) is forwarded, so :func:`jaxda.assimilate.ensemble_mean` still weighs the members.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core import Method
from ..ensemble import (
    InflationEstimate,
    check_adaptive_options,
    inflate,
    obs_space,
    update_inflation_estimate,
)
from ..observations import observed
from ._wrappers import _check_method, _refuse_smoother


class AdaptiveInflationState(NamedTuple):
    """State of a method wrapped by :func:`with_adaptive_inflation`.

    Attributes:
        ensemble: the ensemble ``(N, n)``.
        inner: the wrapped method's state, its ``ensemble`` field set to ``None``.
        estimate: the belief ``θ ~ N(theta, 1/precision)`` on the covariance inflation.
    """

    ensemble: Float[Array, "N n"]
    inner: Any
    estimate: InflationEstimate

    @property
    def log_weights(self):
        """The inner state's particle log-weights, ``None`` when it has none."""
        return getattr(self.inner, "log_weights", None)


class AdaptiveInflationInfo(NamedTuple):
    """Per-cycle diagnostics of a method wrapped by :func:`with_adaptive_inflation`.

    Attributes:
        n_obs, status: those of the wrapped method.
        inflation: the anomaly inflation ``λ = √θ`` applied to this cycle's forecast.
        inner: the wrapped method's whole ``info``.
    """

    n_obs: Int[Array, ""]
    status: Int[Array, ""]
    inflation: Float[Array, ""]
    inner: Any


def with_adaptive_inflation(
    method: Method,
    *,
    memory: float = 1000.0,
    initial: float = 1.0,
    initial_std: float = 1.0,
    min_inflation: float = 1.0,
    max_inflation: float | None = None,
) -> Method:
    r"""Adaptive multiplicative (prior) inflation of any ensemble method.

    At each analysis time: update the belief on ``θ = λ²`` with the innovation of the forecast
    ensemble (:mod:`jaxda.ensemble._adaptive_inflation` for the math), inflate the forecast
    anomalies by ``λ = √θ``, then run ``method.step``. A time with nothing observed leaves the
    estimate's mean and the ensemble unchanged (its precision still decays).

    Args:
        method: an ensemble method (EnKF, ETKF, LETKF, ...); not a window method or smoother.
        memory: cycles over which the estimate averages (``ρ = 1 - 1/memory``); the one
            setting, with a default meant to be kept.
        initial: the initial anomaly inflation ``λ₀``.
        initial_std: the initial standard deviation of ``θ``.
        min_inflation: lower bound on ``λ`` (default ``1``: no deflation).
        max_inflation: upper bound on ``λ`` (default ``None``: none).

    The applied ``λ`` is reported per cycle in ``info.inflation``.

    Examples:
        >>> import jax
        >>> from jaxda.ensemble import etkf
        >>> from jaxda.experiments import sakov2008, twin_experiment
        >>> setup = sakov2008(n_cycles=30, burn_in=10)
        >>> res = twin_experiment(jax.random.key(0), setup, with_adaptive_inflation(etkf()), 20)
        >>> res.history.info.inflation.shape, bool(res.history.info.inflation.min() >= 1.0)
        ((30,), True)
    """
    _check_method(method, "with_adaptive_inflation")
    check_adaptive_options(memory, min_inflation, max_inflation, initial, initial_std)

    def init(ensemble, obs=None):
        inner = method.init(ensemble, obs)
        dtype = inner.ensemble.dtype
        est = InflationEstimate(
            jnp.asarray(initial**2, dtype), jnp.asarray(1.0 / initial_std**2, dtype)
        )
        return AdaptiveInflationState(inner.ensemble, inner._replace(ensemble=None), est)

    def step(key, state, y, obs):
        if not isinstance(state, AdaptiveInflationState):
            raise TypeError(
                "with_adaptive_inflation: the state must come from this method's init, got "
                f"{type(state).__name__}"
            )
        _refuse_smoother(state.inner, "with_adaptive_inflation")
        Ef = state.ensemble
        os = obs_space(Ef, obs, y)
        S = os.S.astype(Ef.dtype)
        d = os.innovation(y).astype(Ef.dtype)
        new = update_inflation_estimate(
            state.estimate,
            S,
            d,
            memory=memory,
            min_inflation=min_inflation,
            max_inflation=max_inflation,
        )
        any_obs = jnp.any(observed(y))
        theta = jnp.where(any_obs, new.theta, state.estimate.theta)
        est = InflationEstimate(theta, new.precision)
        lam = jnp.where(any_obs, jnp.sqrt(theta), jnp.ones((), Ef.dtype))
        inner = state.inner._replace(ensemble=inflate(Ef, lam))
        inner, info = method.step(key, inner, y, obs)
        out = AdaptiveInflationState(inner.ensemble, inner._replace(ensemble=None), est)
        return out, AdaptiveInflationInfo(info.n_obs, info.status, lam, info)

    return Method(init, step)
