r"""3D-Var / 4D-Var analyses by BFGS in the control variable, and a climatological ``B``.

The analysis minimizes the cost of :mod:`jaxda.variational._costs` over the
control variable :math:`v` (:math:`x = x_b + Lv`, :math:`B = LL^T`) with
:func:`jaxda.optimize.bfgs` starting from :math:`v = 0` (the background);
gradients come from ``jax.grad`` through the observation operator and, for
4D-Var, through the model integration (the adjoint, derived automatically).
With a linear :math:`H` the 3D-Var analysis equals the optimal-interpolation /
Kalman update with gain :math:`BH^T(HBH^T+R)^{-1}`, which the tests use as the
independent reference.

:func:`var3d` is 3D-Var as a :class:`jaxda.core.Method` for the driver
(:func:`jaxda.assimilate.assimilate`): the background is the ensemble mean and every member
is shifted by the same increment (so ``N = 1`` is a classical deterministic 3D-Var cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..core import (
    EnsembleState,
    Method,
    analysis_info,
    check_ensemble,
    check_in_range,
    first_failure,
)
from ..models import Model, trajectory
from ..observations import ObservationModel, observed
from ..optimize import OptimizeResult, bfgs
from ._costs import (
    as_background,
    background_covariance,
    fourdvar_cost_cv,
    sqrt_apply,
    threedvar_cost_cv,
)


def climatological_sample(
    model: Model,
    n_steps: int = 20_000,
    spinup: int = 1_000,
    thin: int = 1,
    x0: Float[Array, " n"] | None = None,
    *,
    key: Array | None = None,
) -> Float[Array, "K n"]:
    r"""The states of a long free model run (a sample of the "climatology"), ``(K, n)``.

    Runs ``spinup + n_steps`` steps from ``x0`` (default ``model.x0``), drops the
    spin-up and keeps every ``thin``-th state (``K = ⌈n_steps / thin⌉``). A stochastic model
    needs ``key`` (its model noise); a deterministic one ignores it. The sample mean and
    covariance of these states are the climatological mean and covariance used by
    :func:`climatological_covariance` (3D-Var's ``B``) and by the baselines
    :func:`jaxda.ensemble.climatology` and :func:`jaxda.ensemble.optimal_interpolation`.

    Examples:
        >>> import jax
        >>> from jaxda.models import Lorenz63
        >>> climatological_sample(Lorenz63(), n_steps=100, spinup=10, thin=10).shape
        (10, 3)
    """
    if n_steps < 2 or spinup < 0 or thin < 1:
        raise ValueError(
            f"need n_steps >= 2, spinup >= 0, thin >= 1; got {n_steps}, {spinup}, {thin}"
        )
    x0 = model.x0 if x0 is None else jnp.asarray(x0)
    if model.stochastic and key is None:
        raise ValueError(
            "the free run of a stochastic model needs key= (the key of its model noise)"
        )
    key = jax.random.key(0) if key is None else key  # unused by a deterministic model
    return trajectory(key, model, x0, spinup + n_steps)[spinup::thin]


def climatological_covariance(
    model: Model,
    n_steps: int = 20_000,
    spinup: int = 1_000,
    thin: int = 1,
    x0: Float[Array, " n"] | None = None,
) -> Float[Array, "n n"]:
    r"""Sample covariance of a long free model run (the "climatology").

    Runs ``spinup + n_steps`` steps from ``x0`` (default ``model.x0``), drops the
    spin-up and keeps every ``thin``-th state (:func:`climatological_sample`). DAPPER's
    ``Var3D(xB=...)`` uses :math:`B = x_B \cdot \mathrm{cov}(\text{free run})`.
    """
    if model.stochastic:
        raise ValueError("climatological_covariance needs a deterministic model")
    return jnp.cov(climatological_sample(model, n_steps, spinup, thin, x0), rowvar=False)


def static_background(
    B: Any, model: Model | None, xb: float, n_climatology: int, who: str = "this method"
) -> Any:
    """``B`` as given (checked against ``model.dim`` when a model is given), or, when ``B`` is
    ``None``, ``xb`` times the climatological covariance of a free run of ``model``
    (DAPPER's ``xB``)."""
    if B is None:
        if model is None:
            raise ValueError(f"{who} needs B= or a model= to build a climatological B")
        check_in_range("xb", xb, 0.0, float("inf"), closed_low=False)
        return background_covariance(
            cov=xb * climatological_covariance(model, n_steps=n_climatology)
        )
    if model is not None:
        as_background(B, model.dim)
    return B


def threedvar_analysis(
    xb: Float[Array, " n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    B: Any,
    *,
    max_steps: int = 100,
    gtol: float = 1e-6,
) -> tuple[Float[Array, " n"], OptimizeResult]:
    """3D-Var analysis ``x_a = x_b + L v*`` with ``v* = argmin J(v)`` by BFGS; returns ``(x_a, result)``.

    ``B`` is a ``DiagonalNoise``/``FullNoise`` (see :func:`background_covariance`) or an
    array read as background standard deviations (scalar or ``(n,)``) or a lower
    Cholesky factor ``(n, n)``.
    """
    B = as_background(B, xb.shape[-1])
    res = bfgs(
        threedvar_cost_cv, jnp.zeros_like(xb), (xb, y, obs, B), max_steps=max_steps, gtol=gtol
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
    max_steps: int = 200,
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
        max_steps=max_steps,
        gtol=gtol,
    )
    return xb + sqrt_apply(B, res.x), res


class Var3DInfo(NamedTuple):
    """Per-cycle diagnostics of 3D-Var (``n_obs``/``status`` as every method, plus the solver's)."""

    n_obs: Int[Array, ""]
    status: Int[Array, ""]
    n_steps: Int[Array, ""]  # BFGS iterations
    f: Float[Array, ""]  # cost at the analysis


def var3d(
    B: Any = None,
    *,
    model: Model | None = None,
    xb: float = 0.02,
    n_climatology: int = 20_000,
    max_steps: int = 100,
    gtol: float = 1e-6,
    members: str = "shift",
) -> Method:
    """3D-Var as a :class:`jaxda.core.Method`: the background is the ensemble mean, the
    analysis minimizes the 3D-Var cost by BFGS (missing observations left out).

    ``B`` is a background covariance (:func:`background_covariance`, or what
    :func:`as_background` accepts); without it, ``B = xb · C_clim`` with ``C_clim`` the
    climatological covariance of a free run of ``model`` (DAPPER's ``Var3D(xB=...)``).
    ``members="shift"`` (default) moves every member by the analysis increment;
    ``members="collapse"`` sets every member to the analysis (then any ``N`` runs the
    classical deterministic 3D-Var cycle). The solver status is the step's ``status``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> method = var3d(background_covariance(std=1.0, dim=2))
        >>> obs = observation_model(identity(2), obs_std=1.0)
        >>> state, info = method.step(jax.random.key(0), method.init(jnp.zeros((1, 2))), jnp.ones(2), obs)
        >>> state.ensemble.round(3).tolist(), int(info.status)
        ([[0.5, 0.5]], 0)
    """
    if members not in ("shift", "collapse"):
        raise ValueError(f'members must be "shift" or "collapse", got {members!r}')
    B = static_background(B, model, xb, n_climatology, "3D-Var")

    def init(ensemble, obs=None):
        del obs
        check_ensemble(ensemble, "ensemble", min_members=1)
        as_background(B, ensemble.shape[1])
        return EnsembleState(ensemble)

    def step(key, state, y, obs):
        del key
        E = state.ensemble
        x_b = jnp.mean(E, axis=0)
        B_E = jax.tree.map(lambda a: a.astype(E.dtype), as_background(B, E.shape[1]))
        xa, res = threedvar_analysis(x_b, y, obs, B_E, max_steps=max_steps, gtol=gtol)
        Ea = jnp.broadcast_to(xa, E.shape) if members == "collapse" else E + (xa - x_b)
        base = analysis_info(Ea, observed(y))
        status = first_failure(base.status, res.status)
        return EnsembleState(Ea), Var3DInfo(base.n_obs, status, res.n_steps, res.f)

    return Method(init, step)
