r"""Data-assimilation windows: the model intervals between observation times, re-run at will.

Window methods (iEnKS, 4D-Var, 4DEnVar) keep the ensemble (or state) at the *start* of a
window of ``L`` observation intervals and re-run the model over the whole window at every
outer iteration. :class:`Window` holds the lengths (model steps) of the intervals currently in
the window, oldest first, as a fixed-size ``(L,)`` buffer with a count, so it can live in a
``lax.scan`` carry even when the observation times are irregular.

:func:`run_window` integrates **one** state through the window (vmap it over members) and
returns the state at the last observation time with the predictions ``observe(x_k)`` at the
last ``S`` observation times; :func:`slide` moves the window start forward by ``d`` intervals.
The integration uses a loop whose trip count may be traced (``lax.fori_loop``): it is
forward-differentiable (``jax.jvp``, the tangent-linear model of 4D-Var), not reverse.

Examples:
    >>> import jax.numpy as jnp
    >>> from jaxda.models import from_callable
    >>> model = from_callable(lambda x: 2.0 * x, jnp.ones(1))
    >>> w = window_push(window_push(empty_window(3), 1), 2)
    >>> x, pred = run_window(model, lambda x: x, jnp.ones(1), w, 2)
    >>> x.tolist(), pred[:, 0].tolist()
    ([8.0], [2.0, 8.0])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core import Status, check_ensemble
from ._integrate import Model, forecast


class Window(NamedTuple):
    """Model steps of the intervals in a window, oldest first.

    Attributes:
        n_steps: ``(L,)`` interval lengths; entries at and after ``count`` are 0.
        count: number of intervals in the window (``0 <= count <= L``).
    """

    n_steps: Int[Array, " L"]
    count: Int[Array, ""]


def empty_window(length: int) -> Window:
    """A window with room for ``length`` intervals and none in it."""
    if length < 1:
        raise ValueError(f"a window needs room for at least 1 interval, got {length}")
    return Window(jnp.zeros(length, jnp.int32), jnp.zeros((), jnp.int32))


def window_push(window: Window, n_steps: int | Int[Array, ""]) -> Window:
    """Append an interval of ``n_steps`` model steps (the caller keeps ``count < L``)."""
    return Window(
        window.n_steps.at[window.count].set(jnp.asarray(n_steps, jnp.int32)), window.count + 1
    )


def window_drop(window: Window, d: Int[Array, ""]) -> Window:
    """Remove the ``d`` oldest intervals."""
    L = window.n_steps.shape[0]
    rolled = jnp.roll(window.n_steps, -d)
    count = window.count - d
    return Window(jnp.where(jnp.arange(L) < count, rolled, 0), count)


def propagate(model: Model, x: Float[Array, " n"], n_steps: Int[Array, ""]) -> Float[Array, " n"]:
    """``n_steps`` steps of a deterministic model from one state (``n_steps`` may be traced)."""
    if model.stochastic:
        raise ValueError("window methods re-run the model: it must be deterministic")
    return jax.lax.fori_loop(0, n_steps, lambda _, x: model(x), x)


def run_window(
    model: Model,
    observe: Callable[[Array], Array],
    x0: Float[Array, " n"],
    window: Window,
    n_observed: int | Int[Array, ""],
) -> tuple[Float[Array, " n"], Float[Array, "S m"]]:
    """Integrate ``x0`` through the window; return the state at its end and ``observe(x)`` at
    the ends of its last ``S = n_observed`` intervals (``(S, m)``, oldest first; ``S`` static,
    ``S <= count``)."""
    L = window.n_steps.shape[0]

    def body(x, inp):
        i, n = inp
        x = propagate(model, x, jnp.where(i < window.count, n, 0))
        return x, observe(x)

    x, preds = jax.lax.scan(body, x0, (jnp.arange(L), window.n_steps))
    S = int(n_observed)
    return x, preds[window.count - S + jnp.arange(S)]


def slide(
    model: Model, x: Float[Array, " n"], window: Window, d: Int[Array, ""]
) -> tuple[Float[Array, " n"], Window]:
    """Move the window start ``d`` intervals forward: propagate ``x`` through them and drop them."""
    L = window.n_steps.shape[0]
    steps = jnp.where(jnp.arange(L) < d, window.n_steps, 0)
    x = jax.lax.fori_loop(0, L, lambda i, x: propagate(model, x, steps[i]), x)
    return x, window_drop(window, d)


class WindowState(NamedTuple):
    """State of a window method (:func:`window_method`).

    Attributes:
        ensemble: estimate at the latest observation time ``(N, n)`` (forecast before a step,
            analysis after an update); what the driver scores.
        start: ensemble (or state, ``(1, n)``) at the window start: what is cycled.
        window: the model intervals from the window start to the latest observation time.
        ys: observations received since the last update, newest last (``(S, m)``; ``None``
            when ``shift=1``).
        n_new: observation times received since the last update.
        smoothed: the window-start ensemble right after the latest update (the smoother
            estimate); ``smoothed_index`` its observation index (``-1``: the initial time).
        index: observation index of the latest time (``-1`` before the first).
    """

    ensemble: Float[Array, "N n"]
    start: Float[Array, "M n"]
    window: Window
    ys: Float[Array, "S m"] | None
    n_new: Int[Array, ""]
    smoothed: Float[Array, "M n"]
    smoothed_index: Int[Array, ""]
    index: Int[Array, ""]


class WindowInfo(NamedTuple):
    """Per-time diagnostics of a window method: ``n_obs`` (observations present at this time;
    with ``shift > 1`` they are assimilated at the next update), ``status``, ``n_steps`` (outer
    iterations, 0 without update) and ``updated``."""

    n_obs: Int[Array, ""]
    status: Int[Array, ""]
    n_steps: Int[Array, ""]
    updated: Bool[Array, ""]


def check_window_options(model: Model, lag: int, shift: int) -> None:
    """Eager checks shared by window methods (deterministic model, ``1 <= shift <= lag``)."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jaxda.models.Model, got {type(model).__name__}")
    if model.stochastic:
        raise ValueError(
            "a window method re-runs the model over its window: it must be deterministic"
        )
    for name, v in (("lag", lag), ("shift", shift)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if shift > lag:
        raise ValueError(f"shift ({shift}) must not exceed lag ({lag})")


def window_method(
    model: Model,
    lag: int,
    shift: int,
    analysis: Callable[..., tuple[Array, ...]],
    start_of: Callable[[Array], Array] = lambda E: E,
    slides: bool = False,
):
    r"""Build the ``init``/``step``/``forecast`` of a window method around its ``analysis``.

    The window holds ``lag`` observation intervals; every ``shift`` observation times,
    ``analysis(key, start, window, ys, mask, obs) -> (start_new, now, n_steps)`` updates the
    window-start ensemble with the ``shift`` newest observations ``ys`` (``mask``: present
    entries) and returns the estimate at the latest time and its iteration count; the window
    start then slides forward so the next window again spans ``lag`` intervals. Between
    updates ``step`` only stores the observations. ``start_of(ensemble)`` maps the initial
    ensemble to what is cycled (e.g. its mean for 4D-Var). With ``slides=True`` the analysis
    moves the start itself (e.g. with its estimated model error):
    ``analysis(key, start, window, ys, mask, obs, d) -> (start_new, start_slid, now, n_steps)``
    with ``d`` the number of intervals to slide. Returns ``(init, step, forecast)`` for
    :class:`jaxda.core.Method`.
    """
    check_window_options(model, lag, shift)

    def init(ensemble, obs=None) -> WindowState:
        check_ensemble(ensemble, "ensemble", min_members=1)
        if ensemble.shape[1] != model.dim:
            raise ValueError(f"ensemble has {ensemble.shape[1]} variables, the model {model.dim}")
        ys = None
        if shift > 1:
            if obs is None:
                raise ValueError(
                    "a shift > 1 needs the same observation network at every time "
                    "(mark absent values as NaN instead of changing the network)"
                )
            ys = jnp.full((shift, obs.dim), jnp.nan, ensemble.dtype)
        start = start_of(ensemble)
        zero = jnp.zeros((), jnp.int32)
        return WindowState(ensemble, start, empty_window(lag), ys, zero, start, zero - 1, zero - 1)

    def forecast_hook(key, state: WindowState, n_steps, max_steps=None) -> WindowState:
        Ef = forecast(key, model, state.ensemble, n_steps, max_steps=max_steps)
        return state._replace(
            ensemble=Ef, window=window_push(state.window, n_steps), index=state.index + 1
        )

    def step(key, state: WindowState, y, obs):
        if state.ys is not None:  # shift > 1
            ys = jnp.concatenate([state.ys[1:], y[None].astype(state.ys.dtype)])
        else:
            ys = y[None]
        n_new = state.n_new + 1
        mask = jnp.isfinite(ys)
        zero = jnp.zeros((), jnp.int32)

        def update(state):
            d = jnp.maximum(state.window.count - (lag - shift), 0)
            if slides:
                start, slid, now, n_steps = analysis(
                    key, state.start, state.window, ys, mask, obs, d
                )
                window = window_drop(state.window, d)
            else:
                start, now, n_steps = analysis(key, state.start, state.window, ys, mask, obs)
                slid, window = jax.vmap(
                    lambda x: slide(model, x, state.window, d), out_axes=(0, None)
                )(start)
            new = WindowState(
                jnp.broadcast_to(now, state.ensemble.shape).astype(state.ensemble.dtype),
                slid,
                window,
                ys if shift > 1 else None,
                zero,
                start,
                state.index - state.window.count,
                state.index,
            )
            return new, jnp.asarray(n_steps, jnp.int32)

        def wait(state):
            return state._replace(ys=ys, n_new=n_new), zero

        if shift == 1:
            new, n_steps = update(state)
            updated = jnp.ones((), bool)
        else:
            updated = n_new == shift
            new, n_steps = jax.lax.cond(updated, update, wait, state)
        n_obs = jnp.sum(jnp.isfinite(y)).astype(jnp.int32)
        ok = jnp.all(jnp.isfinite(new.ensemble)) & jnp.all(jnp.isfinite(new.start))
        status = jnp.where(ok, Status.SUCCESS, Status.NONFINITE).astype(jnp.int32)
        return new, WindowInfo(n_obs, status, n_steps, updated)

    return init, step, forecast_hook


def smoothed_record(state: WindowState) -> tuple[Int[Array, ""], Float[Array, " n"]]:
    """``record=`` for :func:`jaxda.assimilate.assimilate` with a window method: the
    observation index of the latest smoother estimate and its mean (``-1``: initial time).

    Examples:
        >>> import jax.numpy as jnp
        >>> E = jnp.ones((2, 1))
        >>> s = WindowState(E, E, empty_window(1), None, jnp.array(0), E, jnp.array(3), jnp.array(4))
        >>> [a.tolist() for a in smoothed_record(s)]
        [3, [1.0]]
    """
    return state.smoothed_index, jnp.mean(state.smoothed, axis=0)
