r"""Iterative ensemble Kalman smoother (iEnKS), Bocquet & Sakov (2012, 2014).

The iEnKS keeps the ensemble at the *start* of a data-assimilation window of ``L``
observation intervals (the *lag*) and, every ``S`` observation times (the *shift*), minimizes
the cost of the window's newest ``S`` observations in the ensemble space of its start:

.. math::
    x_0 = x̄_0 + (w + εT) X_0, \qquad
    J(w) = \tfrac12 (N-1)\|w\|^2
        + \tfrac12 \sum_{k \in \text{last } S}\|R^{-1/2}(y_k - H(M_{0→k}(x_0)))\|^2

by Gauss–Newton, re-running the model over the whole window at every iteration (no adjoint:
the sensitivities are the ensemble's, by regression of the observed anomalies on ``T`` —
the *transform* variant, ``ε = 1`` — or by finite differences of a tiny ensemble — the
*bundle* variant, ``ε = 10^{-4}``). The anomalies are updated with the square-root
(``"sqrt"``, ETKF-like) or the perturbed-observation (``"pertobs"``, EnRML) transform; with
``mda=True`` the iterations are multiple data assimilation (Emerick & Reynolds 2013) instead
of Gauss–Newton. The window then slides by ``S`` intervals: its start ensemble is propagated
by the model (that is the forecast of the next cycle). ``lag=1, shift=1`` is the iterative
EnKF (iEnKF, Sakov et al. 2012); ``max_steps=1`` without iteration is the EnKF.

With ``shift=1`` this is the single-data-assimilation iEnKS of DAPPER's ``iEnKS``; its
documented configurations are :func:`jaxda.experiments.sakov2012` with ``N=10, lag=1..``
(about 0.31) and Lorenz-96 Sakov 2008 observed every 12 steps (about 0.46).

As a :class:`jaxda.core.Method` it is a *window* method: it has a ``forecast`` hook (the
driver calls it instead of propagating the ensemble) and ``state.ensemble`` is its estimate
at the latest observation time (the linearized analysis, as DAPPER's "a" statistics), while
``state.smoothed`` holds the window-start ensemble after the latest update (the smoother
estimate at observation index ``state.smoothed_index``, ``-1`` = the initial time; record it
with :func:`jaxda.models.smoothed_record`). State and info are
:class:`jaxda.models.WindowState` and :class:`jaxda.models.WindowInfo`.

References:
    Sakov, Oliver & Bertino (2012), *Mon. Wea. Rev.* 140, 1988-2004;
    Bocquet & Sakov (2012), *Nonlin. Processes Geophys.* 19, 383-399;
    Bocquet & Sakov (2014), *Q. J. R. Meteorol. Soc.* 140, 1521-1535;
    Raanes, Stordal & Evensen (2019), *Comput. Geosci.* 23 (EnRML/pertobs form).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxda.assimilate import assimilate
    >>> from jaxda.models import smoothed_record
    >>> from jaxda.models import Lorenz63
    >>> from jaxda.observations import identity, observation_model, observation_series
    >>> model = Lorenz63()
    >>> obs = observation_series(jnp.ones((5, 3)), observation_model(identity(3), obs_std=1.0), n_steps=5)
    >>> E0 = model.x0 + jax.random.normal(jax.random.key(0), (10, 3))
    >>> final, hist = assimilate(jax.random.key(1), ienks(model, lag=2), model, obs, E0)
    >>> final.ensemble.shape, hist.info.n_steps.shape, int(final.smoothed_index)
    ((10, 3), (5,), 2)
    >>> hist_s = assimilate(jax.random.key(1), ienks(model, lag=2), model, obs, E0, record=smoothed_record)[1]
    >>> hist_s.record[0].tolist()   # observation index of each smoother estimate
    [-1, -1, 0, 1, 2]
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ..core import Method, check_in_range
from ..models import Model, check_window_options, run_window, window_method
from ..observations import ObservationModel, fill_missing, whitened_residual_per_time
from ._core import mean_and_anomalies
from ._etkf import mean_preserving_rotation
from ._inflation import inflate


def _cov_power(V, s2, za, expo):
    return (V * (s2 + za) ** (-expo)) @ V.T


def _gauss_newton(
    key, model, obs, ys, mask, E, window, n_obs_times, update, mda, bundle, max_steps, tol
):
    """One iEnKS update of the window-start ensemble ``E``; returns
    ``(E_start, E_now, n_steps)`` (DAPPER's ``iEnKS_update``, in ensemble space)."""
    N = E.shape[0]
    N1 = N - 1
    dtype = E.dtype
    eps = 1e-4 if bundle else 1.0
    x0, X0 = mean_and_anomalies(E)
    flat_mask = mask.reshape(-1)
    y_flat = fill_missing(ys, mask).reshape(-1)
    noise = obs.noise
    za = N1 * (max_steps if mda else 1)
    sqrt = update == "sqrt"
    D = jax.random.normal(key, (N, flat_mask.shape[0]), dtype)
    D = (D - D.mean(0)) * math.sqrt(max_steps if mda else 1)

    def whiten(r):  # r (..., S*m) -> whitened per time slot, missing entries 0
        r = r.reshape(*r.shape[:-1], n_obs_times, -1)
        return whitened_residual_per_time(noise, r, mask).reshape(*r.shape[:-2], -1)

    def simulate(w, T):
        Ew = x0 + (w + eps * T) @ X0
        En, pred = jax.vmap(lambda x: run_window(model, obs.operator, x, window, n_obs_times))(Ew)
        pred = pred.reshape(N, -1)
        if eps != 1.0:
            En = jnp.mean(En, 0) + (En - jnp.mean(En, 0)) / eps
            pred = jnp.mean(pred, 0) + (pred - jnp.mean(pred, 0)) / eps
        return En, pred

    def iteration(carry):
        i, w, T, Tinv, _, _, Xf, _ = carry
        En, pred = simulate(w, T)
        Xf = jnp.where(i == 0, En - jnp.mean(En, 0), Xf)
        xo = jnp.mean(pred, 0)
        Y = whiten(pred - xo)
        dy = whiten(y_flat - xo)
        Y0 = Tinv @ Y
        s2, V = jnp.linalg.eigh(Y0 @ Y0.T)
        s2 = jnp.maximum(s2, 0.0)
        Cow1 = _cov_power(V, s2, za, 1.0)
        if mda:
            Cow1 = Cow1 @ T
            dw = dy @ Y.T @ Cow1
            if sqrt:
                T_new = (_cov_power(V, s2, za, 0.5) * math.sqrt(za)) @ T
            else:
                T_new = T - (Y + D) @ Y.T @ Cow1
            Tinv_new = Tinv
        else:
            grad = Y0 @ dy - w * za
            dw = grad @ Cow1
            if sqrt:
                T_new = _cov_power(V, s2, za, 0.5) * math.sqrt(N1)
                Tinv_new = _cov_power(V, s2, za, -0.5) / math.sqrt(N1)
            else:
                gradT = -(Y + D) @ Y0.T + N1 * (jnp.eye(N, dtype=dtype) - T)
                T_new = T + gradT @ Cow1
                Tinv_new = jnp.linalg.solve((T_new + 1.0).T, jnp.eye(N, dtype=dtype)).T
        increment = (dw + T_new - T) @ Xf  # linearized analysis at the latest time
        return (i + 1, w + dw, T_new, Tinv_new, dw, increment, Xf, En)

    def cond(carry):
        i, _, _, _, dw, _, _, _ = carry
        small = (dw @ dw < tol * N) & (i > 0)
        return (i < max_steps) & ~small

    eye = jnp.eye(N, dtype=dtype)
    zN = jnp.zeros(N, dtype)
    zE = jnp.zeros_like(E)
    init = (jnp.zeros((), jnp.int32), zN, eye, eye, zN, zE, zE, zE)
    n_steps, w, T, _, _, increment, _, En = jax.lax.while_loop(cond, iteration, init)
    E_start = x0 + (w + T) @ X0
    return E_start, En + increment, n_steps


def ienks(
    model: Model,
    lag: int = 1,
    shift: int = 1,
    *,
    update: str = "sqrt",
    mda: bool = False,
    bundle: bool = False,
    max_steps: int = 10,
    tol: float = 0.0,
    inflation: float = 1.0,
    rotate: bool = False,
) -> Method:
    r"""The iEnKS (module docstring) as a window :class:`jaxda.core.Method`.

    Args:
        model: the (deterministic) forecast model the window is re-run with (the same as the
            driver's; the registry fills it in).
        lag: ``L``, window length in observation intervals (``>= 1``).
        shift: ``S``, observation times between updates (``1 <= S <= L``); each update
            assimilates the ``S`` newest observation times. ``shift > 1`` needs the same
            observation network at every time.
        update: ``"sqrt"`` (square-root transform) or ``"pertobs"`` (perturbed observations).
        mda: multiple-data-assimilation iterations (observation error inflated by
            ``max_steps``) instead of Gauss–Newton.
        bundle: finite-difference sensitivities (ε = 1e-4) instead of the transform's.
        max_steps: outer-iteration cap (DAPPER's ``nIter``); ``1`` gives the EnKF/EnKS update.
        tol: stop when ``‖Δw‖² < tol · N`` (DAPPER's ``wtol``; ``0``: always ``max_steps``).
        inflation: multiplicative inflation of the window-start anomalies after each update
            (DAPPER's ``infl``).
        rotate: random mean-preserving rotation of those anomalies (DAPPER's ``rot``).
    """
    check_window_options(model, lag, shift)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if update not in ("sqrt", "pertobs"):
        raise ValueError(f'update must be "sqrt" or "pertobs", got {update!r}')
    check_in_range("tol", tol, 0.0, float("inf"))
    check_in_range("inflation", inflation, 0.0, float("inf"), closed_low=False)

    def analysis(key, start, window, ys, mask, obs: ObservationModel):
        k_gn, k_rot = jax.random.split(key)
        E_start, E_now, n_steps = _gauss_newton(
            k_gn, model, obs, ys, mask, start, window, shift, update, mda, bundle, max_steps, tol
        )
        E_start = inflate(E_start, inflation)
        if rotate:
            mean, A = mean_and_anomalies(E_start)
            E_start = mean + mean_preserving_rotation(k_rot, A.shape[0]).astype(A.dtype) @ A
        return E_start, E_now, n_steps

    return Method(*window_method(model, lag, shift, analysis))
