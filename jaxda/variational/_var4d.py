r"""Cycled strong-constraint 4D-Var with a sliding window (lag and shift), Gauss–Newton.

The state at the start of a window of ``L`` observation intervals is estimated every ``S``
observation times from the ``S`` newest observations, with a static background covariance
:math:`B = LL^T`, in the control variable :math:`x_0 = x_b + L w`:

.. math::
    J(w) = \tfrac12\|w\|^2 + \tfrac12\sum_{k \in \text{last } S}
        \|R^{-1/2}(y_k - H(M_{0→k}(x_b + Lw)))\|^2 .

Each outer iteration linearizes the window (the tangent-linear model is ``jax.jvp`` of the
model integration, applied to the columns of ``L``) and takes the exact Gauss–Newton step
:math:`Δw = (I + GᵀG)^{-1}(Gᵀ d - w)` with ``G`` the whitened linearized observations; the
window then slides by ``S`` intervals and the propagated analysis is the next background.
This is DAPPER's ``Var4D`` (which has ``S = 1``): the same windows and the same
Gauss–Newton iterations; its documented scores on Lorenz-96 Sakov 2008 observed every 4 steps
(``dto = 0.2``) are 0.46 / 0.39 / 0.37 for ``lag`` 1 / 2 / 4 with ``xb`` 0.2 / 0.1 / 0.02. It
forms the ``n×n`` tangent-linear image of ``L``: meant for moderate ``n`` (for large ``n``
use :func:`fourdvar_analysis`, BFGS with the adjoint).

**Weak constraint** (``Q=``, Trémolet 2006): the model is imperfect, ``x_k = M(x_{k-1}) +
η_k`` per observation interval with ``η_k ~ N(0, Q)``; the control adds the forcings,
:math:`η_k = L_Q e_k`, with the term :math:`\tfrac12\sum_k\|e_k\|^2`, and the same
Gauss–Newton iterations run on ``(w, e_1..e_L)`` (``n·(L+1)`` tangent-linear runs per
iteration). The window slides along the analysed trajectory, forcings included, and the
analysis at the latest time is that trajectory's end. On a linear model each window is the
exact Kalman smoother of its observations with process noise ``Q`` (tested).

The state's ``ensemble`` is the analysis at the latest observation time (every member equal),
``start``/``smoothed`` are ``(1, n)``; see :class:`jaxda.models.WindowState`.

References:
    Courtier, Thépaut & Hollingsworth (1994), *Q. J. R. Meteorol. Soc.* 120;
    Fisher, Leutbecher & Kelly (2005), *Q. J. R. Meteorol. Soc.* 131 (long windows);
    Bocquet & Sakov (2013), *Nonlin. Processes Geophys.* 20 (lag/shift comparison).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxda.assimilate import assimilate
    >>> from jaxda.models import Lorenz63
    >>> from jaxda.observations import identity, observation_model, observation_series
    >>> from jaxda.variational import background_covariance
    >>> model = Lorenz63()
    >>> obs = observation_series(jnp.ones((4, 3)), observation_model(identity(3), obs_std=1.0), n_steps=5)
    >>> method = var4d(model, lag=2, B=background_covariance(std=1.0, dim=3))
    >>> final, hist = assimilate(jax.random.key(0), method, model, obs, model.x0[None])
    >>> hist.info.n_steps.tolist()
    [10, 10, 10, 10]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..core import Method
from ..models import Model, check_window_options, propagate, run_window, window_method
from ..observations import ObservationModel, fill_missing, whitened_residual_per_time
from ._analysis import static_background
from ._costs import as_background, sqrt_apply


def var4d(
    model: Model,
    lag: int = 1,
    shift: int = 1,
    *,
    B: Any = None,
    xb: float = 1.0,
    n_climatology: int = 20_000,
    Q: Any = None,
    max_steps: int = 10,
    tol: float = 0.0,
) -> Method:
    """Cycled 4D-Var with a sliding window (module docstring) as a window
    :class:`jaxda.core.Method`.

    Args:
        model: the (deterministic) model, the same as the driver's (the registry fills it in).
        lag: window length ``L`` in observation intervals.
        shift: observation times between analyses (``1 <= shift <= lag``).
        B: static background covariance (what :func:`as_background` accepts); ``None``:
            ``xb`` times the climatological covariance of a free run of ``model``.
        xb: scale of the climatological ``B`` (DAPPER's ``xB``).
        n_climatology: length of the free run for the climatological ``B``.
        Q: model-error covariance per observation interval (what :func:`as_background`
            accepts): weak-constraint 4D-Var (module docstring); ``None``: strong constraint.
        max_steps: Gauss–Newton iteration cap (DAPPER's ``nIter``).
        tol: stop when ``‖Δw‖² < tol · n`` (DAPPER's ``wtol``).

    The initial ensemble's mean is the first background.
    """
    check_window_options(model, lag, shift)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    B = as_background(static_background(B, model, xb, n_climatology, "4D-Var"), model.dim)
    n = model.dim
    if Q is not None:
        Q = as_background(Q, n)
        return Method(
            *window_method(
                model, lag, shift, _weak_analysis(model, lag, shift, B, Q, max_steps, tol),
                lambda E: jnp.mean(E, 0)[None], slides=True,
            )
        )  # fmt: skip

    def analysis(key, start, window, ys, mask, obs: ObservationModel):
        del key
        dtype = start.dtype
        Bd = jax.tree.map(lambda a: a.astype(dtype), B)
        L = jax.vmap(lambda v: sqrt_apply(Bd, v), in_axes=1, out_axes=1)(jnp.eye(n, dtype=dtype))
        x0 = start[0]
        y = fill_missing(ys, mask)

        def whiten(r):
            return whitened_residual_per_time(obs.noise, r, mask)

        def window_map(x):
            return run_window(model, obs.operator, x, window, shift)

        def iteration(carry):
            i, w, _, _ = carry
            x = x0 + L @ w
            (x_end, pred), lin = jax.linearize(window_map, x)
            X_end, P = jax.vmap(lin, in_axes=1, out_axes=-1)(L)  # (n, n), (S, m, n)
            G = whiten(jnp.moveaxis(P, -1, 0)).reshape(n, -1).T  # (S*m, n)
            d = whiten(y - pred).reshape(-1)
            A = jnp.eye(n, dtype=dtype) + G.T @ G
            dw = jnp.linalg.solve(A, G.T @ d - w)
            return i + 1, w + dw, dw, x_end + X_end @ dw

        def cond(carry):
            i, _, dw, _ = carry
            return (i < max_steps) & ~((dw @ dw < tol * n) & (i > 0))

        z = jnp.zeros(n, dtype)
        n_steps, w, _, x_now = jax.lax.while_loop(
            cond, iteration, (jnp.zeros((), jnp.int32), z, z, z)
        )
        return (x0 + L @ w)[None], x_now, n_steps

    return Method(*window_method(model, lag, shift, analysis, lambda E: jnp.mean(E, 0)[None]))


def _weak_analysis(model, lag, shift, B, Q, max_steps, tol):
    """The Gauss–Newton window analysis of weak-constraint 4D-Var (see :func:`var4d`)."""
    n = model.dim
    P = n * (lag + 1)

    def analysis(key, start, window, ys, mask, obs: ObservationModel, d):
        del key
        dtype = start.dtype
        eye = jnp.eye(n, dtype=dtype)
        Lb = jax.vmap(lambda v: sqrt_apply(jax.tree.map(lambda a: a.astype(dtype), B), v), 1, 1)(
            eye
        )
        Lq = jax.vmap(lambda v: sqrt_apply(jax.tree.map(lambda a: a.astype(dtype), Q), v), 1, 1)(
            eye
        )
        x0 = start[0]
        y = fill_missing(ys, mask)

        def trajectory(u):  # u (L+1, n) -> end state, predictions (S, m), states (L, n)
            def body(x, inp):
                i, k, e = inp
                active = i < window.count
                x = propagate(model, x, jnp.where(active, k, 0))
                x = x + jnp.where(active, Lq @ e, 0.0)
                return x, (x, obs.operator(x))

            slots = (jnp.arange(lag), window.n_steps, u[1:])
            x_end, (xs, preds) = jax.lax.scan(body, x0 + Lb @ u[0], slots)
            return x_end, preds[window.count - shift + jnp.arange(shift)], xs

        def whiten(r):
            return whitened_residual_per_time(obs.noise, r, mask)

        def iteration(carry):
            i, u, _ = carry
            _, pred, _ = trajectory(u)
            lin = jax.linearize(lambda v: trajectory(v)[1], u)[1]
            basis = jnp.eye(P, dtype=dtype).reshape(P, lag + 1, n)
            G = whiten(jax.vmap(lin)(basis)).reshape(P, -1).T  # (S*m, P)
            dvec = whiten(y - pred).reshape(-1)
            uf = u.reshape(-1)
            du = jnp.linalg.solve(jnp.eye(P, dtype=dtype) + G.T @ G, G.T @ dvec - uf)
            return i + 1, (uf + du).reshape(lag + 1, n), du

        def cond(carry):
            i, _, du = carry
            return (i < max_steps) & ~((du @ du < tol * P) & (i > 0))

        n_steps, u, _ = jax.lax.while_loop(
            cond,
            iteration,
            (jnp.zeros((), jnp.int32), jnp.zeros((lag + 1, n), dtype), jnp.zeros(P, dtype)),
        )
        x_end, _, xs = trajectory(u)
        x0a = x0 + Lb @ u[0]
        slid = jnp.where(d > 0, xs[jnp.maximum(d - 1, 0)], x0a)
        return x0a[None], slid[None], x_end, n_steps

    return analysis
