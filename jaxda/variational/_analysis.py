r"""3D-Var / 4D-Var analyses by BFGS in the control variable, and a climatological ``B``.

The analysis minimizes the cost of :mod:`jaxda.variational._costs` over the
control variable :math:`v` (:math:`x = x_b + Lv`, :math:`B = LL^T`) with
:func:`jaxda.optimize._bfgs.bfgs` starting from :math:`v = 0` (the background);
gradients come from ``jax.grad`` through the observation operator and, for
4D-Var, through the model integration (the adjoint, derived automatically).
With a linear :math:`H` the 3D-Var analysis equals the optimal-interpolation /
Kalman update with gain :math:`BH^T(HBH^T+R)^{-1}`, which the tests use as the
independent reference.

:func:`make_3dvar` wraps the analysis for the twin-experiment driver
(``analysis(key, E_forecast, y) -> E_analysis``): the background is the
ensemble mean and every member is shifted by the same increment (so ``N = 1`` is
a classical deterministic 3D-Var cycle).

Example:
    >>> import jax
    >>> from jaxda.experiments import sakov2008, twin_experiment
    >>> from jaxda.variational import background_covariance
    >>> setup = sakov2008(n_cycles=30, burn_in=10)
    >>> B = background_covariance(std=0.5, dim=40)
    >>> analysis = make_3dvar(setup.obs, B, members="collapse")
    >>> res = twin_experiment(jax.random.key(0), setup, analysis, 2)
    >>> res.history.rmse_analysis.shape
    (30,)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..models import Model, trajectory
from ..observations import ObservationModel
from ..optimize._bfgs import bfgs
from ..optimize._status import OptimizeResult
from ._costs import as_background, fourdvar_cost_cv, sqrt_apply, threedvar_cost_cv


def climatological_covariance(
    model: Model,
    n_steps: int = 20_000,
    spinup: int = 1_000,
    thin: int = 1,
    x0: Float[Array, " n"] | None = None,
) -> Float[Array, "n n"]:
    r"""Sample covariance of a long free model run (the "climatology").

    Runs ``spinup + n_steps`` steps from ``x0`` (default ``model.x0``), drops the
    spin-up and keeps every ``thin``-th state. DAPPER's ``Var3D(xB=...)`` uses
    :math:`B = x_B \cdot \mathrm{cov}(\text{free run})`.
    """
    if n_steps < 2 or spinup < 0 or thin < 1:
        raise ValueError(
            f"need n_steps >= 2, spinup >= 0, thin >= 1; got {n_steps}, {spinup}, {thin}"
        )
    x0 = model.x0 if x0 is None else jnp.asarray(x0)
    xs = trajectory(model.step, x0, spinup + n_steps)[spinup::thin]
    return jnp.cov(xs, rowvar=False)


def threedvar_analysis(
    xb: Float[Array, " n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    B: Any,
    *,
    max_iter: int = 100,
    gtol: float = 1e-6,
) -> tuple[Float[Array, " n"], OptimizeResult]:
    """3D-Var analysis ``x_a = x_b + L v*`` with ``v* = argmin J(v)`` by BFGS; returns ``(x_a, result)``.

    ``B`` is a ``DiagonalNoise``/``FullNoise`` (see :func:`background_covariance`) or an
    array read as background standard deviations (scalar or ``(n,)``) or a lower
    Cholesky factor ``(n, n)``.
    """
    B = as_background(B, xb.shape[-1])
    res = bfgs(
        threedvar_cost_cv, jnp.zeros_like(xb), (xb, y, obs, B), max_steps=max_iter, gtol=gtol
    )
    return xb + sqrt_apply(B, res.x), res


def fourdvar_analysis(
    xb: Float[Array, " n"],
    ys: Float[Array, "K m"],
    obs: ObservationModel,
    B: Any,
    step: Callable[[Array], Array],
    obs_every: int = 1,
    *,
    max_iter: int = 200,
    gtol: float = 1e-6,
) -> tuple[Float[Array, " n"], OptimizeResult]:
    """Strong-constraint 4D-Var: the window's initial state ``x0_a`` minimizing ``J_4D``; returns ``(x0_a, result)``."""
    B = as_background(B, xb.shape[-1])
    if ys.ndim != 2 or ys.shape[1] != obs.dim:
        raise ValueError(f"ys must have shape (K, {obs.dim}), got {ys.shape}")
    res = bfgs(
        fourdvar_cost_cv,
        jnp.zeros_like(xb),
        (xb, ys, obs, B, step, obs_every),
        max_steps=max_iter,
        gtol=gtol,
    )
    return xb + sqrt_apply(B, res.x), res


def make_3dvar(
    obs: ObservationModel,
    B: Any,
    *,
    max_iter: int = 100,
    gtol: float = 1e-6,
    members: str = "shift",
    n: int | None = None,
) -> Callable[[Array, Float[Array, "N n"], Float[Array, " m"]], Float[Array, "N n"]]:
    """3D-Var analysis function ``analysis(key, E, y)`` for the twin-experiment driver.

    The background is the ensemble mean. ``members="shift"`` (default) moves every
    member by the analysis increment; ``members="collapse"`` sets every member to
    the analysis state, so any ``N`` runs the classical deterministic 3D-Var cycle
    (the members stay identical under a deterministic model). ``key`` is unused
    (3D-Var is deterministic). ``n`` (optional) validates ``B`` eagerly.
    """
    if members not in ("shift", "collapse"):
        raise ValueError(f'members must be "shift" or "collapse", got {members!r}')
    if n is not None:
        as_background(B, n)

    def analysis(key, E, y):
        del key
        xb = jnp.mean(E, axis=0)
        xa, _ = threedvar_analysis(xb, y, obs, B, max_iter=max_iter, gtol=gtol)
        if members == "collapse":
            return jnp.broadcast_to(xa, E.shape)
        return E + (xa - xb)

    return analysis
