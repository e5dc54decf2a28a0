r"""Cycled strong-constraint 4D-Var twin experiment (one ``lax.scan`` over windows).

The observation sequence of a :class:`TwinSetup` is cut into
consecutive windows of ``window`` analysis cycles. In each window the initial
state :math:`x_0` is estimated by minimizing :math:`J_{4D}` (BFGS through the
model adjoint, in the control variable :math:`x_0 = x_b + Lv`); the analysed
trajectory :math:`M_k(x_0^a)` is the estimate at the window's observation
times, and its value at the window end is the background of the next window
(:math:`x_b ← M_K(x_0^a)`, with a static :math:`B`).

Scores, comparable with :func:`jaxda.experiments.twin_experiment` (RMSE to the
truth of a single state, averaged over windows after the burn-in):

* ``rmse_analysis``: at the window end, the *filter* analysis (uses only
  observations up to that time) — compare with a sequential method at the
  same times;
* ``rmse_smoother``: along the analysed trajectory at all observation times of
  the window (uses later observations in the window);
* ``rmse_forecast``: the background trajectory before the analysis.

Examples:
    >>> import jax
    >>> from jaxda.experiments import sakov2008
    >>> from jaxda.variational import background_covariance
    >>> setup = sakov2008(n_cycles=20, burn_in=4)
    >>> res = fourdvar_experiment(jax.random.key(0), setup, 4, background_covariance(std=0.5, dim=40))
    >>> res.history.rmse_analysis.shape
    (5,)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..metrics import rmse
from ..variational import as_background, fourdvar_analysis, window_trajectory
from ._twin import TwinData, TwinSetup, initial_ensemble, simulate


class FourDVarHistory(NamedTuple):
    """Per-window (``W``) and per-cycle (``W·window``) diagnostics."""

    rmse_analysis: Float[Array, " W"]  # at window ends
    rmse_smoother: Float[Array, " K"]  # analysed trajectory, every cycle
    rmse_forecast: Float[Array, " K"]  # background trajectory, every cycle
    n_steps: Int[Array, " W"]
    status: Int[Array, " W"]
    cost: Float[Array, " W"]


class FourDVarResult(NamedTuple):
    """Outcome of :func:`fourdvar_experiment`; time means skip ``ceil(burn_in / window)`` windows."""

    state: Float[Array, " n"]  # final analysis (end of the last window)
    history: FourDVarHistory
    rmse_analysis: Float[Array, ""]
    rmse_smoother: Float[Array, ""]
    rmse_forecast: Float[Array, ""]
    data: TwinData


def fourdvar_experiment(
    key: Array,
    setup: TwinSetup,
    window: int,
    B: Any,
    *,
    max_steps: int = 200,
    gtol: float = 1e-6,
    data: TwinData | None = None,
) -> FourDVarResult:
    """Cycle strong-constraint 4D-Var over ``setup.n_cycles // window`` windows.

    Args:
        key: PRNG key (truth/observations via :func:`simulate` and the
            initial background, a draw from ``N(x0, init_std² I)`` as one member of
            :func:`initial_ensemble`).
        setup: twin setup (perfect model: ``model_noise_std`` must be 0).
        window: number of observation times per window.
        B: static background covariance (see :func:`background_covariance`).
        max_steps: BFGS iteration cap per window.
        gtol: BFGS gradient tolerance.
        data: reuse a simulated truth/observations (e.g. to compare with 3D-Var on the same data).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if window > setup.n_cycles:
        raise ValueError(f"window ({window}) longer than the experiment ({setup.n_cycles} cycles)")
    if setup.model.stochastic:
        raise ValueError("strong-constraint 4D-Var assumes a perfect (deterministic) model")
    n = setup.model.dim
    B = as_background(B, n)
    k_data, k_init = jax.random.split(key)
    if data is None:
        data = simulate(k_data, setup)
    W = setup.n_cycles // window
    K = W * window
    ys = data.observations.y[:K].reshape(W, window, -1)
    xt = data.truth[:K].reshape(W, window, n)
    xb0 = initial_ensemble(k_init, setup, 1)[0]
    step, dk = setup.model, setup.obs_every

    def body(xb, inp):
        y_w, x_w = inp
        x0a, res = fourdvar_analysis(
            xb, y_w, setup.obs, B, step, dk, max_steps=max_steps, gtol=gtol
        )
        traj_a = window_trajectory(step, x0a, window, dk)
        traj_b = window_trajectory(step, xb, window, dk)
        diag = (
            rmse(traj_a[-1], x_w[-1]),
            rmse(traj_a, x_w),
            rmse(traj_b, x_w),
            res.n_steps,
            res.status,
            res.f,
        )
        return traj_a[-1], diag

    x_end, (ra, rs, rf, nit, st, cost) = jax.lax.scan(body, xb0, (ys, xt))
    hist = FourDVarHistory(ra, rs.reshape(K), rf.reshape(K), nit, st, cost)
    bw = -(-setup.burn_in // window)
    bw = min(bw, W - 1)
    return FourDVarResult(
        state=x_end,
        history=hist,
        rmse_analysis=jnp.mean(ra[bw:]),
        rmse_smoother=jnp.mean(hist.rmse_smoother[bw * window :]),
        rmse_forecast=jnp.mean(hist.rmse_forecast[bw * window :]),
        data=data,
    )
