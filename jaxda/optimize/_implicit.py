r"""Differentiate through an argmin with the implicit function theorem (``jax.custom_vjp``).

For :math:`x^*(θ) = \arg\min_x J(x, θ)` the optimality condition
:math:`F(x^*, θ) = ∇_x J(x^*, θ) = 0` gives, by the implicit function theorem,

.. math::
    \frac{∂x^*}{∂θ} = -\big[∇^2_{xx}J(x^*, θ)\big]^{-1} ∇^2_{xθ}J(x^*, θ).

The reverse-mode rule for a cotangent :math:`\bar x` therefore solves one linear
system with the (symmetric) Hessian and takes one vector–Jacobian product:

.. math::
    ∇^2_{xx}J\,w = \bar x,\qquad \bar θ = -∇_θ\big[∇_xJ(x^*, θ)^T w\big].

The solver itself is *not* differentiated (its ``lax.while_loop`` could not be
reverse-differentiated anyway): it runs on ``stop_gradient`` inputs and the
gradient is attached afterwards, so the cost of ``jax.grad`` is independent of
the number of iterations. The Hessian system is solved densely (Cholesky, then
LU if not positive definite) or matrix-free by conjugate gradients with
Hessian-vector products (``linear_solve="cg"``) for large ``x``. Accuracy
depends on how well the solver converged (use a tight ``gtol``).

Reference:
    Blondel et al., *Efficient and Modular Implicit Differentiation*, NeurIPS 2022.

Example:
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


def _hessian_solve(objective, x_star, theta, ct, linear_solve: str, cg_maxiter: int | None):
    x_flat, unravel = ravel_pytree(x_star)
    v = ravel_pytree(ct)[0].astype(x_flat.dtype)

    def grad_flat(z, th):
        return ravel_pytree(jax.grad(objective)(unravel(z), th))[0]

    if linear_solve == "dense":
        H = jax.jacfwd(grad_flat)(x_flat, theta)
        H = 0.5 * (H + H.T)
        L = jnp.linalg.cholesky(H)
        w_chol = jax.scipy.linalg.cho_solve((L, True), v)
        w = jnp.where(jnp.all(jnp.isfinite(L)), w_chol, jnp.linalg.solve(H, v))
    else:

        def hvp(u):
            return jax.jvp(lambda z: grad_flat(z, theta), (x_flat,), (u,))[1]

        w, _ = jax.scipy.sparse.linalg.cg(hvp, v, maxiter=cg_maxiter)
    return x_flat, w, grad_flat


@partial(jax.custom_vjp, nondiff_argnums=(0, 3, 4))
def _attach(objective, x_star, theta, linear_solve, cg_maxiter):
    return x_star


def _attach_fwd(objective, x_star, theta, linear_solve, cg_maxiter):
    return x_star, (x_star, theta)


def _attach_bwd(objective, linear_solve, cg_maxiter, res, ct):
    x_star, theta = res
    x_flat, w, grad_flat = _hessian_solve(objective, x_star, theta, ct, linear_solve, cg_maxiter)
    _, vjp = jax.vjp(lambda th: grad_flat(x_flat, th), theta)
    (theta_bar,) = vjp(-w)
    x_bar = jax.tree_util.tree_map(jnp.zeros_like, x_star)
    return x_bar, theta_bar


_attach.defvjp(_attach_fwd, _attach_bwd)


def minimize(
    objective: Callable[[Any, Any], Array],
    x0: Any,
    theta: Any,
    *,
    method: str = "bfgs",
    linear_solve: str = "dense",
    cg_maxiter: int | None = None,
    **options,
) -> OptimizeResult:
    r"""Minimize ``objective(x, theta)`` over ``x``; ``result.x`` is differentiable w.r.t. ``theta``.

    Args:
        objective: scalar ``J(x, θ)``, twice differentiable in ``x`` and differentiable in ``θ``;
            ``x`` and ``θ`` may be pytrees.
        x0: starting point (not differentiated: the optimum does not depend on it).
        theta: parameters; ``jax.grad`` of any function of ``result.x`` w.r.t. ``theta``
            uses the implicit function theorem.
        method: ``"bfgs"`` (default), ``"newton"`` or ``"gradient_descent"``.
        linear_solve: ``"dense"`` (Hessian by ``jacfwd``, Cholesky) or ``"cg"`` (Hessian-vector
            products; needs a positive-definite Hessian at the optimum).
        cg_maxiter: iteration cap for CG.
        **options: passed to the solver (``gtol``, ``max_steps``, ``throw``, …).

    Only ``result.x`` carries the implicit gradient; the other fields are computed
    on stopped-gradient inputs.
    """
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {sorted(SOLVERS)}, got {method!r}")
    if linear_solve not in LINEAR_SOLVES:
        raise ValueError(f"linear_solve must be one of {LINEAR_SOLVES}, got {linear_solve!r}")
    theta_sg = jax.lax.stop_gradient(theta)
    x0_sg = jax.lax.stop_gradient(x0)
    res = SOLVERS[method](objective, x0_sg, (theta_sg,), **options)
    x = _attach(objective, jax.lax.stop_gradient(res.x), theta, linear_solve, cg_maxiter)
    return res._replace(x=x)
