r"""Variational data-assimilation costs: 3D-Var and strong-constraint 4D-Var.

With background :math:`x_b`, background-error covariance :math:`B`, observations
:math:`y` with noise covariance :math:`R` and observation operator :math:`H`:

.. math::
    J_{3D}(x) = \tfrac12\|x - x_b\|^2_{B^{-1}} + \tfrac12\|y - H(x)\|^2_{R^{-1}}

.. math::
    J_{4D}(x_0) = \tfrac12\|x_0 - x_b\|^2_{B^{-1}}
                + \tfrac12\sum_{k=1}^{K}\|y_k - H(M_k(x_0))\|^2_{R^{-1}}

where :math:`\|r\|^2_{A^{-1}} = r^TA^{-1}r` and :math:`M_k` integrates the model
from the start of the window to the :math:`k`-th observation time (``obs_every``
model steps apart; the model is perfect: *strong constraint*). For a diagonal
:math:`R = \mathrm{diag}(θ_i^2)` the observation term is the square of the
weighted norm, :math:`\tfrac12\|y - H(x)\|_W^2` with :math:`W = \mathrm{diag}(1/θ_i^2)`
(:func:`jaxda.metrics.weighted_norm`); it is computed as the squared norm of the
whitened residual :math:`R^{-1/2}(y - H(x))` (the noise's ``whiten``), which is
the same number without the square root's singular derivative at a zero residual.

**Control-variable transform.** With :math:`B = LL^T` (``L`` a Cholesky factor or
the diagonal of standard deviations) and :math:`x = x_b + Lv`, the background term
becomes :math:`\tfrac12\|v\|^2`; the Hessian of the transformed cost,
:math:`I + L^TH^TR^{-1}HL`, is much better conditioned than that of
:math:`J(x)`, so BFGS converges in far fewer iterations. The ``*_cv`` costs take
``v``.

References:
    Lorenc (1986), *Q. J. R. Meteorol. Soc.* 112; Courtier, Thépaut & Hollingsworth (1994),
    *Q. J. R. Meteorol. Soc.* 120; Bannister (2008), *Q. J. R. Meteorol. Soc.* 134 (control variables).

Examples:
    >>> import jax.numpy as jnp
    >>> from jaxda.observations import identity, observation_model
    >>> obs = observation_model(identity(2), obs_std=1.0)
    >>> B = background_covariance(std=1.0, dim=2)
    >>> float(threedvar_cost(jnp.zeros(2), jnp.ones(2), jnp.zeros(2), obs, B))
    1.0
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..observations import (
    DiagonalNoise,
    FullNoise,
    ObservationModel,
    full_noise_from_cholesky,
    gaussian_noise,
    observed,
    whitened_residual,
)

BackgroundCov = DiagonalNoise | FullNoise


def background_covariance(
    *,
    std: Any = None,
    variance: Any = None,
    cov: Any = None,
    chol: Any = None,
    dim: int | None = None,
) -> BackgroundCov:
    r"""Background-error covariance :math:`B` from exactly one of ``std``, ``variance``, ``cov``, ``chol``.

    ``std``/``variance`` may be scalars (then ``dim`` is required: :math:`B = σ^2 I`) or
    vectors (:math:`B = \mathrm{diag}(σ^2)`); ``cov`` is a full SPD matrix and ``chol`` a
    lower Cholesky factor :math:`L` with :math:`B = LL^T`. Returns the same
    ``DiagonalNoise``/``FullNoise`` objects used for :math:`R`
    (``whiten(r) = B^{-1/2} r``).

    Examples:
        >>> background_covariance(variance=4.0, dim=3).std.tolist()
        [2.0, 2.0, 2.0]
    """
    given = [a is not None for a in (std, variance, cov, chol)]
    if sum(given) != 1:
        raise ValueError("give exactly one of std=, variance=, cov=, chol=")
    if variance is not None:
        v = jnp.asarray(variance, dtype=jnp.result_type(float))
        if jnp.any(~(v > 0)):
            raise ValueError(f"background variance must be positive, got {variance}")
        std = jnp.sqrt(v)
    if std is not None:
        return gaussian_noise(std=std, dim=dim)
    if cov is not None:
        return gaussian_noise(cov=cov)
    L = jnp.asarray(chol, dtype=jnp.result_type(float))
    if L.ndim != 2 or L.shape[0] != L.shape[1]:
        raise ValueError(f"chol must be a square (n, n) matrix, got shape {L.shape}")
    if dim is not None and L.shape[0] != dim:
        raise ValueError(f"chol must have shape ({dim}, {dim}), got {L.shape}")
    d = jnp.diagonal(L)
    if not bool(jnp.all(d > 0)) or not bool(jnp.allclose(L, jnp.tril(L))):
        raise ValueError("chol must be lower-triangular with a positive diagonal")
    return full_noise_from_cholesky(L)  # precomputes L^{-1} (lead: FullNoise now holds chol_inv)


def as_background(B: Any, n: int) -> BackgroundCov:
    """Accept ``B`` as a ``DiagonalNoise``/``FullNoise``, or a raw array read as
    standard deviations (scalar or ``(n,)``) or a lower Cholesky factor ``(n, n)``."""
    if isinstance(B, DiagonalNoise | FullNoise):
        if B.dim != n:
            raise ValueError(f"B has dimension {B.dim}, the state has {n}")
        return B
    arr = jnp.asarray(B)
    if arr.ndim <= 1:
        return background_covariance(std=arr, dim=n)
    return background_covariance(chol=arr, dim=n)


def sqrt_apply(B: BackgroundCov, v: Float[Array, " n"]) -> Float[Array, " n"]:
    """``L v`` with ``B = L Lᵀ`` (the control-variable transform)."""
    if isinstance(B, DiagonalNoise):
        return B.std * v
    return B.chol @ v


def observation_term(
    y: Float[Array, " m"], hx: Float[Array, " m"], noise: DiagonalNoise | FullNoise
) -> Float[Array, ""]:
    r""":math:`\tfrac12\|y - H(x)\|^2_{R^{-1}}` (= ½ weighted_norm² for diagonal ``R``) over the
    present observations (``NaN`` in ``y`` = missing)."""
    r = whitened_residual(noise, y - hx, observed(y))
    return 0.5 * jnp.sum(r * r)


def threedvar_cost(
    x: Float[Array, " n"],
    xb: Float[Array, " n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    B: BackgroundCov,
) -> Float[Array, ""]:
    r"""3D-Var cost :math:`\tfrac12\|x-x_b\|^2_{B^{-1}} + \tfrac12\|y-H(x)\|^2_{R^{-1}}`."""
    d = B.whiten(x - xb)
    return 0.5 * jnp.sum(d * d) + observation_term(y, obs.operator(x), obs.noise)


def threedvar_cost_cv(
    v: Float[Array, " n"],
    xb: Float[Array, " n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    B: BackgroundCov,
) -> Float[Array, ""]:
    r"""3D-Var cost in the control variable, :math:`\tfrac12\|v\|^2 + \tfrac12\|y-H(x_b+Lv)\|^2_{R^{-1}}`."""
    x = xb + sqrt_apply(B, v)
    return 0.5 * jnp.sum(v * v) + observation_term(y, obs.operator(x), obs.noise)


def window_trajectory(
    step: Callable[[Array], Array], x0: Float[Array, " n"], n_obs: int, obs_every: int
) -> Float[Array, "K n"]:
    """States :math:`M_k(x_0)` at the ``n_obs`` observation times of a window (``lax.scan``)."""

    def obs_interval(x, _):
        x = jax.lax.fori_loop(0, obs_every, lambda _, z: step(z), x)
        return x, x

    _, xs = jax.lax.scan(obs_interval, x0, None, length=n_obs)
    return xs


def window_observation_term(
    x0: Float[Array, " n"],
    ys: Float[Array, "K m"],
    obs: ObservationModel,
    step: Callable[[Array], Array],
    obs_every: int = 1,
) -> Float[Array, ""]:
    r""":math:`\tfrac12 \sum_k \|y_k - H(M_k(x_0))\|^2_{R^{-1}}` over a window (shared by both 4D-Var forms)."""
    xs = window_trajectory(step, x0, ys.shape[0], obs_every)
    return observation_term(ys, jax.vmap(obs.operator)(xs), obs.noise)


def fourdvar_cost(
    x0: Float[Array, " n"],
    xb: Float[Array, " n"],
    ys: Float[Array, "K m"],
    obs: ObservationModel,
    B: BackgroundCov,
    step: Callable[[Array], Array],
    obs_every: int = 1,
) -> Float[Array, ""]:
    r"""Strong-constraint 4D-Var cost of the initial state ``x0`` of a window.

    ``ys[k-1]`` is observed at :math:`M_k(x_0)`, ``k·obs_every`` model steps after the
    window start. The gradient (``jax.grad``) is the adjoint model run backwards.
    """
    d = B.whiten(x0 - xb)
    return 0.5 * jnp.sum(d * d) + window_observation_term(x0, ys, obs, step, obs_every)


def fourdvar_cost_cv(
    v: Float[Array, " n"],
    xb: Float[Array, " n"],
    ys: Float[Array, "K m"],
    obs: ObservationModel,
    B: BackgroundCov,
    step: Callable[[Array], Array],
    obs_every: int = 1,
) -> Float[Array, ""]:
    r"""4D-Var cost in the control variable ``v`` with :math:`x_0 = x_b + Lv`."""
    x0 = xb + sqrt_apply(B, v)
    return 0.5 * jnp.sum(v * v) + window_observation_term(x0, ys, obs, step, obs_every)
