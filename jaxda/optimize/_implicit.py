r"""Differentiate through an argmin with the implicit function theorem (``jax.custom_jvp``).

For :math:`x^*(θ) = \arg\min_x J(x, θ)` the optimality condition
:math:`F(x^*, θ) = ∇_x J(x^*, θ) = 0` gives, by the implicit function theorem,

.. math::
    \frac{∂x^*}{∂θ} = -\big[∇^2_{xx}J(x^*, θ)\big]^{-1} ∇^2_{xθ}J(x^*, θ).

The solution map carries a custom JVP: for a tangent :math:`\dot θ` it solves one linear
system with the Hessian,

.. math::
    ∇^2_{xx}J\,\dot x = -∇^2_{xθ}J\,\dot θ,

using only differentiable, linear-in-:math:`\dot θ` operations (a JVP of :math:`∇_xJ`, then a
dense LU solve with the Hessian from ``jacfwd``). Reverse mode follows by
JAX's linearize-and-transpose, so ``jax.grad``, ``jax.jacrev``, ``jax.jvp``, ``jax.jacfwd`` all
work; and because the rule evaluates the Hessian at the differentiable solution map itself (not
at a stopped-gradient copy), second and higher derivatives (``jax.hessian`` of an outer loss)
are correct too.

The solver itself is *not* differentiated (its ``lax.while_loop`` could not be
reverse-differentiated anyway): it runs on ``stop_gradient`` inputs and the derivative is
attached afterwards, so the cost of a derivative is independent of the number of iterations.
``linear_solve="cg"`` (matrix-free, for large ``x``)
keeps a reverse-mode rule (``custom_vjp``) instead: first derivatives by ``jax.grad`` /
``jax.jacrev`` only. Accuracy depends on how well the solver converged: the derivative assumes
:math:`∇_xJ(x^*, θ) = 0`. An unconverged solve is flagged by ``result.status`` (the derivative
of ``result.x`` is then that of an approximate stationary point and not to be trusted);
``throw=True`` raises instead.

Reference:
    Blondel et al., *Efficient and Modular Implicit Differentiation*, NeurIPS 2022.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> J = lambda x, th: jnp.sum((x - th) ** 2) + 0.5 * jnp.sum(x**2)   # x* = 2θ/3
    >>> g = jax.grad(lambda th: jnp.sum(minimize(J, jnp.zeros(2), th, gtol=1e-10).x))(jnp.ones(2))
    >>> [round(float(v), 6) for v in g]
    [0.666667, 0.666667]
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from ..core import raise_on_failure
from ._bfgs import bfgs
from ._gradient import gradient_descent
from ._newton import newton
from ._status import OptimizeResult

SOLVERS: dict[str, Callable[..., OptimizeResult]] = {
    "bfgs": bfgs,
    "newton": newton,
    "gradient_descent": gradient_descent,
}
LINEAR_SOLVES = ("dense", "cg")


def _tangent_solve(objective, x, theta, dtheta):
    """``ẋ`` solving ``∇²ₓₓJ ẋ = -∇²ₓθJ θ̇`` at ``(x, θ)`` (dense LU), linear in ``θ̇``."""
    x_flat, unravel = ravel_pytree(x)

    def grad_flat(z, th):
        return ravel_pytree(jax.grad(objective)(unravel(z), th))[0]

    _, b = jax.jvp(lambda th: grad_flat(x_flat, th), (theta,), (dtheta,))
    H = jax.jacfwd(grad_flat)(x_flat, theta)
    return unravel(jnp.linalg.solve(0.5 * (H + H.T), -b.astype(x_flat.dtype)))


@partial(jax.custom_jvp, nondiff_argnums=(0,))
def _solution(objective, x_star, theta):
    """The solution map ``θ -> x*(θ)``; ``x_star`` is the (stopped-gradient) solver output."""
    return x_star


@_solution.defjvp
def _solution_jvp(objective, primals, tangents):
    x_star, theta = primals
    _, dtheta = tangents  # x* does not depend on the starting point: its tangent is dropped
    # Re-enter the solution map so that, when this rule is itself differentiated (second
    # derivatives), the Hessian is evaluated at a point that moves with θ.
    x = _solution(objective, x_star, theta)
    return x, _tangent_solve(objective, x, theta, dtheta)


# Matrix-free variant: JAX's CG (``custom_linear_solve``) cannot be transposed inside a custom
# JVP rule here, so ``linear_solve="cg"`` keeps a reverse-mode-only rule (first derivatives).
@partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _solution_cg(objective, x_star, theta, cg_maxiter):
    return x_star


def _solution_cg_fwd(objective, x_star, theta, cg_maxiter):
    return x_star, (x_star, theta)


def _solution_cg_bwd(objective, cg_maxiter, res, ct):
    x_star, theta = res
    x_flat, unravel = ravel_pytree(x_star)
    v = ravel_pytree(ct)[0].astype(x_flat.dtype)

    def grad_flat(z, th):
        return ravel_pytree(jax.grad(objective)(unravel(z), th))[0]

    def hvp(u):
        return jax.jvp(lambda z: grad_flat(z, theta), (x_flat,), (u,))[1]

    w, _ = jax.scipy.sparse.linalg.cg(hvp, v, maxiter=cg_maxiter)
    _, vjp = jax.vjp(lambda th: grad_flat(x_flat, th), theta)
    (theta_bar,) = vjp(-w)
    return jax.tree_util.tree_map(jnp.zeros_like, x_star), theta_bar


_solution_cg.defvjp(_solution_cg_fwd, _solution_cg_bwd)


def minimize(
    objective: Callable[[Any, Any], Array],
    x0: Any,
    theta: Any,
    *,
    method: str = "bfgs",
    linear_solve: str = "dense",
    cg_maxiter: int | None = None,
    throw: bool = False,
    **options,
) -> OptimizeResult:
    r"""Minimize ``objective(x, theta)`` over ``x``; ``result.x`` is differentiable w.r.t. ``theta``.

    Args:
        objective: scalar ``J(x, θ)``, twice differentiable in ``x`` and differentiable in ``θ``;
            ``x`` and ``θ`` may be pytrees.
        x0: starting point (not differentiated: the optimum does not depend on it).
        theta: parameters; derivatives of any function of ``result.x`` w.r.t. ``theta`` (forward
            or reverse mode, any order) use the implicit function theorem.
        method: ``"bfgs"`` (default), ``"newton"`` or ``"gradient_descent"``.
        linear_solve: ``"dense"`` (Hessian by ``jacfwd``, LU solve; forward and reverse mode,
            derivatives of any order) or ``"cg"`` (matrix-free conjugate gradients with
            Hessian-vector products, for large ``x``; needs a positive-definite Hessian at the
            optimum; reverse-mode first derivatives only: ``jax.grad``/``jax.jacrev``).
        cg_maxiter: iteration cap for CG.
        throw: raise (:func:`jaxda.core.raise_on_failure`) unless the inner solve ended
            ``SUCCESS``; otherwise an unconverged solve is flagged by ``result.status`` only.
        **options: passed to the solver (``gtol``, ``max_steps``, …).

    Only ``result.x`` carries the implicit derivative; the other fields are computed
    on stopped-gradient inputs.
    """
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)}, got {method!r}")
    if linear_solve not in LINEAR_SOLVES:
        raise ValueError(f"linear_solve must be one of {LINEAR_SOLVES}, got {linear_solve!r}")
    theta_sg = jax.lax.stop_gradient(theta)
    x0_sg = jax.lax.stop_gradient(x0)
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
    res = SOLVERS[method](objective, x0_sg, (theta_sg,), **options)
    x_sg = jax.lax.stop_gradient(res.x)
    if linear_solve == "dense":
        x = _solution(objective, x_sg, theta)
    else:
        x = _solution_cg(objective, x_sg, theta, cg_maxiter)
    res = res._replace(x=x)
    return raise_on_failure(res) if throw else res
