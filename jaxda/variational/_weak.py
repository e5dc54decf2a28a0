r"""Weak-constraint 4D-Var in the model-error forcing formulation.

The model is imperfect: each observation interval adds a model-error forcing,

.. math::
    x_k = M(x_{k-1}) + \eta_k, \qquad k = 1, \dots, L,

with :math:`M` the model integrated over one interval (``obs_every`` steps of ``step``) and
:math:`\eta_k \sim N(0, Q)`. The control is :math:`(x_0, \eta_1, \dots, \eta_L)` and the cost

.. math::
    J = \tfrac12\|x_0 - x_b\|^2_{B^{-1}} + \tfrac12\sum_{k=1}^{L}\|\eta_k\|^2_{Q^{-1}}
      + \tfrac12\sum_{k=1}^{L}\|y_k - H(x_k)\|^2_{R^{-1}}

(missing observations, ``NaN``, left out). With the control-variable transforms
:math:`x_0 = x_b + L_Bv_0` and :math:`\eta_k = L_Qw_k` (:math:`B = L_BL_B^T`,
:math:`Q = L_QL_Q^T`) the first two terms become :math:`\tfrac12\|v_0\|^2 +
\tfrac12\sum_k\|w_k\|^2`; BFGS (:func:`jaxda.optimize.bfgs`) minimizes over
:math:`(v_0, w_1..w_L)` with the gradient from ``jax.grad`` (the adjoint model). As
:math:`Q \to 0` the forcing vanishes and the analysis tends to the strong-constraint 4D-Var
of :func:`jaxda.variational.fourdvar_analysis`; with a linear model and :math:`H` it is the
fixed-interval Kalman smoother of the window (Gaussian conditioning of the joint trajectory).

References:
    Trémolet (2006), *Q. J. R. Meteorol. Soc.* 132 (accounting for an imperfect model in
    4D-Var); Zupanski (1997), *Mon. Wea. Rev.* 125 (model-error forcing).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..observations import ObservationModel
from ..optimize import bfgs
from ._costs import BackgroundCov, as_background, observation_term, sqrt_apply


class WeakFourDVarResult(NamedTuple):
    """Outcome of :func:`weak_fourdvar_analysis`.

    Attributes:
        x: analysis trajectory ``(L+1, n)``: ``x[0]`` is the window start, ``x[k]`` the state
            at the ``k``-th observation time (``ys[k-1]``).
        eta: model-error forcing ``(L, n)``, ``x[k] = M(x[k-1]) + eta[k-1]``.
        f: cost at the analysis.
        grad_norm: norm of the cost's gradient (control variables) at the analysis.
        n_steps: BFGS iterations.
        status: :class:`jaxda.core.Status` code of the minimization.
    """

    x: Float[Array, "L1 n"]
    eta: Float[Array, "L n"]
    f: Float[Array, ""]
    grad_norm: Float[Array, ""]
    n_steps: Int[Array, ""]
    status: Int[Array, ""]


def _forced_trajectory(step, x0, eta, obs_every):
    """``(x_0, x_1, .., x_L)`` with ``x_k = M(x_{k-1}) + eta_k``."""

    def interval(x, e):
        x = jax.lax.fori_loop(0, obs_every, lambda _, z: step(z), x) + e
        return x, x

    _, xs = jax.lax.scan(interval, x0, eta)
    return jnp.concatenate([x0[None], xs])


def weak_fourdvar_cost(
    x0: Float[Array, " n"],
    eta: Float[Array, "L n"],
    xb: Float[Array, " n"],
    ys: Float[Array, "L m"],
    obs: ObservationModel,
    B: BackgroundCov,
    Q: BackgroundCov,
    step: Callable[[Array], Array],
    obs_every: int = 1,
) -> Float[Array, ""]:
    r"""Weak-constraint 4D-Var cost of the start state ``x0`` and the forcing ``eta`` ``(L, n)``.

    :math:`\tfrac12\|x_0-x_b\|^2_{B^{-1}} + \tfrac12\sum_k\|\eta_k\|^2_{Q^{-1}}
    + \tfrac12\sum_k\|y_k - H(x_k)\|^2_{R^{-1}}` with :math:`x_k = M(x_{k-1}) + \eta_k`
    (``M`` = ``obs_every`` calls of ``step``); ``B`` and ``Q`` as returned by
    :func:`jaxda.variational.background_covariance`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> from jaxda.variational import background_covariance
        >>> obs = observation_model(identity(1), obs_std=1.0)
        >>> B = Q = background_covariance(std=1.0, dim=1)
        >>> eta = jnp.ones((2, 1))  # x = (0, 1, 2) under persistence, y = 0
        >>> float(weak_fourdvar_cost(jnp.zeros(1), eta, jnp.zeros(1), jnp.zeros((2, 1)), obs, B, Q, lambda x: x))
        3.5
    """
    xs = _forced_trajectory(step, x0, eta, obs_every)
    d = B.whiten(x0 - xb)
    e = Q.whiten(eta)
    obs_term = jnp.sum(
        jax.vmap(lambda y, x: observation_term(y, obs.operator(x), obs.noise))(ys, xs[1:])
    )
    return 0.5 * jnp.sum(d * d) + 0.5 * jnp.sum(e * e) + obs_term


def _cost_cv(control, xb, ys, obs, B, Q, step, obs_every):
    v0, w = control
    x0 = xb + sqrt_apply(B, v0)
    eta = jax.vmap(lambda wk: sqrt_apply(Q, wk))(w)
    xs = _forced_trajectory(step, x0, eta, obs_every)
    obs_term = jnp.sum(
        jax.vmap(lambda y, x: observation_term(y, obs.operator(x), obs.noise))(ys, xs[1:])
    )
    return 0.5 * (jnp.sum(v0 * v0) + jnp.sum(w * w)) + obs_term


def weak_fourdvar_analysis(
    xb: Float[Array, " n"],
    ys: Float[Array, "L m"],
    obs: ObservationModel,
    B: Any,
    Q: Any,
    step: Callable[[Array], Array],
    obs_every: int = 1,
    *,
    max_steps: int = 200,
    gtol: float = 1e-6,
) -> WeakFourDVarResult:
    r"""Weak-constraint 4D-Var analysis of one window (model-error forcing, BFGS).

    Args:
        xb: background state at the window start ``(n,)``.
        ys: observations ``(L, m)``; ``ys[k-1]`` is observed ``k·obs_every`` model steps after
            the window start; ``NaN`` marks a missing value.
        obs: the observation model (the same at every time).
        B: background covariance at the window start, ``Q``: model-error covariance per
            observation interval; each a ``DiagonalNoise``/``FullNoise``
            (:func:`jaxda.variational.background_covariance`) or what
            :func:`jaxda.variational.as_background` accepts (standard deviations, or a lower
            Cholesky factor).
        step: one model step ``x -> x'`` (a deterministic :class:`jaxda.models.Model` works).
        obs_every: model steps per observation interval.
        max_steps, gtol: BFGS iteration bound and gradient tolerance (in the control variables).

    Returns:
        :class:`WeakFourDVarResult`: the analysis trajectory ``x`` ``(L+1, n)`` (start state
        first), the forcing ``eta``, the cost ``f`` and the solver's ``n_steps``/``status``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(1), obs_std=1.0)
        >>> res = weak_fourdvar_analysis(jnp.zeros(1), jnp.ones((1, 1)), obs, 1.0, 1.0, lambda x: x)
        >>> [round(float(v), 4) for v in res.x[:, 0]], round(float(res.eta[0, 0]), 4), int(res.status)
        ([0.3333, 0.6667], 0.3333, 0)
    """
    xb, ys = jnp.asarray(xb), jnp.asarray(ys)
    if xb.ndim != 1:
        raise ValueError(f"xb must be a state vector (n,), got shape {xb.shape}")
    n = xb.shape[0]
    if ys.ndim != 2 or ys.shape[1] != obs.dim or ys.shape[0] < 1:
        raise ValueError(f"ys must have shape (L, {obs.dim}) with L >= 1, got {ys.shape}")
    if not callable(step):
        raise TypeError(f"step must be callable, got {type(step).__name__}")
    if not isinstance(obs_every, int) or obs_every < 1:
        raise ValueError(f"obs_every must be a positive int, got {obs_every!r}")
    B, Q = as_background(B, n), as_background(Q, n)
    out = jax.eval_shape(step, xb)
    if out.shape != (n,):
        raise ValueError(f"step(x) must return shape ({n},), got {out.shape}")
    xb = xb.astype(jnp.result_type(xb, float))
    control0 = (jnp.zeros_like(xb), jnp.zeros((ys.shape[0], n), xb.dtype))
    res = bfgs(
        _cost_cv,
        control0,
        (xb, ys, obs, B, Q, step, obs_every),
        max_steps=max_steps,
        gtol=gtol,
    )
    v0, w = res.x
    eta = jax.vmap(lambda wk: sqrt_apply(Q, wk))(w)
    xs = _forced_trajectory(step, xb + sqrt_apply(B, v0), eta, obs_every)
    return WeakFourDVarResult(xs, eta, res.f, res.grad_norm, res.n_steps, res.status)
