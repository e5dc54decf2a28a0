r"""BFGS quasi-Newton minimization with a strong-Wolfe line search, in pure JAX.

The quasi-Newton step (Nocedal & Wright 2006, ch. 6)

.. math:: x^{(k+1)} = x^{(k)} - α_k B_k^{-1}\nabla J(x^{(k)})

keeps an approximation :math:`H_k ≈ B_k^{-1}` of the *inverse* Hessian and
updates it from the step :math:`s_k = x^{(k+1)} - x^{(k)}` and the gradient change
:math:`y_k = ∇J(x^{(k+1)}) - ∇J(x^{(k)})` (Nocedal & Wright eq. 6.17):

.. math::
    H_{k+1} = (I - ρ_k s_k y_k^T) H_k (I - ρ_k y_k s_k^T) + ρ_k s_k s_k^T,
    \qquad ρ_k = 1 / (y_k^T s_k).

:math:`α_k` comes from a strong-Wolfe line search (:func:`strong_wolfe`), which
guarantees :math:`y_k^Ts_k > 0` and so keeps :math:`H_k` positive definite; the
update is skipped if curvature is not positive (e.g. after a failed search).
:math:`H_0 = I`, rescaled before the first update by
:math:`y_0^Ts_0 / y_0^Ty_0` (N&W eq. 6.20). The initial trial step follows
scipy: :math:`\min(1, 2.02 (J_k - J_{k-1})/φ'(0))`.

Gradients come from ``jax.value_and_grad``; parameters may be any pytree
(flattened with ``jax.flatten_util.ravel_pytree``). The loop is a
``lax.while_loop`` bounded by ``max_steps``; the result status is an int
(:class:`jaxda.core.Status`), so ``jax.vmap(bfgs)`` over starting points runs many
restarts in one compiled call.

Reference:
    Nocedal & Wright, *Numerical Optimization* (2006), Algorithm 6.1.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxda.optimize import bfgs, rosenbrock
    >>> res = bfgs(rosenbrock, jnp.array([-1.2, 1.0]), gtol=1e-8)
    >>> int(res.status), bool(res.f < 1e-10)
    (0, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array

from ..core import raise_on_failure
from ._quasi_newton import QuasiNewton
from ._status import OptimizeResult, check_iterations, flatten_problem


def bfgs(
    objective: Callable[..., Array],
    x0: Any,
    args: tuple = (),
    *,
    max_steps: int = 200,
    gtol: float = 1e-6,
    norm: float = jnp.inf,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_linesearch: int = 40,
    throw: bool = False,
) -> OptimizeResult:
    """Minimize ``objective(x, *args)`` with BFGS and a strong-Wolfe line search.

    Args:
        objective: scalar function of a pytree ``x`` (and ``args``), differentiable by JAX.
        x0: starting point (any pytree of float arrays).
        args: extra arguments passed to ``objective`` (may be traced).
        max_steps: iteration bound (status ``MAX_STEPS`` when reached).
        gtol: stop when ``||∇J||_norm <= gtol`` (status ``SUCCESS``). The solver also stops at
            round-off, tolerances relative and scaled to the dtype (``16 ε``): ``SUCCESS`` when
            the quasi-Newton step ``-H∇J`` can no longer change ``x``, or when the solver stalls
            (no acceptable step, or ``x``/``J`` changing only at round-off) where the model
            predicts no measurable decrease of ``J``; ``STAGNATED`` / ``LINESEARCH_FAILED`` when
            it stalls although the model predicts more. So float32 runs ending at a minimum
            report ``SUCCESS`` even when ``gtol`` is below float32 round-off (rule in
            ``jaxda.optimize._status.newton_like_status``).
        norm: ``jnp.inf`` (default, as scipy) or ``2``.
        c1, c2: Wolfe constants.
        max_linesearch: evaluations allowed per line search.
        throw: raise (eagerly, or via ``equinox.error_if`` under jit) unless ``SUCCESS``.

    Returns:
        :class:`OptimizeResult` with ``hess_inv`` the final inverse-Hessian approximation.
    """
    x_flat, unravel, fun = flatten_problem(objective, x0, args)
    qn = bfgs_method(
        fun,
        x_flat.size,
        x_flat.dtype,
        max_steps=max_steps,
        gtol=gtol,
        norm=norm,
        c1=c1,
        c2=c2,
        max_linesearch=max_linesearch,
    )
    res = qn.result(*qn.run(x_flat), unravel)
    return raise_on_failure(res) if throw else res


def bfgs_method(
    fun: Callable[[Array], Array],
    n: int,
    dtype: Any,
    *,
    max_steps: int,
    gtol: float,
    norm: float,
    c1: float,
    c2: float,
    max_linesearch: int,
) -> QuasiNewton:
    """BFGS on the flat objective ``fun`` of ``n`` parameters, in step-wise form (not public)."""
    check_iterations(max_steps, gtol)
    eye = jnp.eye(n, dtype=dtype)

    def update(H, k, s_k, y_k, ok_curv, reset):
        ys = jnp.vdot(y_k, s_k)
        # first update: scale H_0 = (yᵀs / yᵀy) I  (N&W eq. 6.20)
        H = jnp.where((k == 0) & ok_curv & ~reset, (ys / jnp.vdot(y_k, y_k)) * eye, H)
        rho = 1.0 / jnp.where(ok_curv, ys, 1.0)
        Hy = H @ y_k
        H_new = (
            H
            - rho * (jnp.outer(s_k, Hy) + jnp.outer(Hy, s_k))
            + (rho * rho * jnp.vdot(y_k, Hy) + rho) * jnp.outer(s_k, s_k)
        )
        return jnp.where(ok_curv, H_new, H)

    return QuasiNewton(
        fun=fun,
        memory0=eye,
        direction=lambda H, g: -H @ g,
        forget=lambda H: eye,
        update=update,
        unit_trial=lambda H: jnp.asarray(False),
        hess_inv=lambda H: H,
        max_steps=max_steps,
        gtol=gtol,
        norm=norm,
        c1=c1,
        c2=c2,
        max_linesearch=max_linesearch,
    )
