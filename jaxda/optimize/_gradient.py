r"""Gradient descent and stochastic gradient descent (SGD), with any optax optimizer.

Gradient descent:

.. math:: x^{(k+1)} = x^{(k)} - α ∇J(x^{(k)})

SGD replaces the gradient by that of a minibatch :math:`ξ_k` drawn at random
from the data set:

.. math:: x^{(k+1)} = x^{(k)} - α ∇J(x^{(k)}, ξ_k)

By default the update is exactly this plain step (``optax.sgd(α)``); any
``optax.GradientTransformation`` (Adam, momentum, schedules, …) can be passed
instead as ``optimizer``. Optimizers that need the objective value (e.g.
``optax.lbfgs`` with its line search) receive ``value``, ``grad`` and ``value_fn``
as extra arguments.

SGD draws minibatches without replacement within an epoch from a random
permutation (one key split per epoch) and runs a fixed budget of epochs
(status ``SUCCESS``: the budget was spent with finite values, unless something became
non-finite, ``NONFINITE``).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxda.optimize import gradient_descent
    >>> res = gradient_descent(lambda x: jnp.sum((x - 3.0) ** 2), jnp.zeros(2), learning_rate=0.1)
    >>> int(res.status), [round(float(v), 4) for v in res.x]
    (0, [3.0, 3.0])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from ..core import Status, is_concrete, raise_on_failure
from ._result import History
from ._status import (
    RUNNING,
    OptimizeResult,
    check_iterations,
    empty_history,
    final_status,
    grad_norm,
    record,
    step_status,
)


def _as_float_tree(x0):
    return jax.tree_util.tree_map(
        lambda a: (
            jnp.asarray(a)
            if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)
            else jnp.asarray(a, jnp.result_type(float))
        ),
        x0,
    )


def _optimizer(optimizer, learning_rate):
    if optimizer is None:
        if is_concrete(learning_rate) and not float(learning_rate) > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        optimizer = optax.sgd(learning_rate)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"optimizer must be an optax.GradientTransformation, got {type(optimizer)}"
        )
    return optax.with_extra_args_support(optimizer)


def _flat_norm(tree, norm):
    return grad_norm(ravel_pytree(tree)[0], norm)


def gradient_descent(
    objective: Callable[..., Array],
    x0: Any,
    args: tuple = (),
    *,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    max_steps: int = 1000,
    gtol: float = 1e-6,
    norm: float = jnp.inf,
    throw: bool = False,
) -> OptimizeResult:
    """Minimize ``objective(x, *args)`` by (optax-driven) gradient descent.

    Args:
        objective: scalar function of a pytree ``x``.
        x0: starting point (pytree); optax sees the same pytree structure.
        args: extra arguments for ``objective``.
        learning_rate: α for the default plain step ``optax.sgd(α)``.
        optimizer: any ``optax.GradientTransformation`` (then ``learning_rate`` is ignored).
        max_steps: iteration bound; gtol, norm: stop when ``||∇J||_norm <= gtol``.
        throw: raise unless the status is ``SUCCESS``.
    """
    check_iterations(max_steps, gtol)
    if not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
    if not isinstance(args, tuple):
        raise ValueError(f"args must be a tuple, got {type(args).__name__}")
    opt = _optimizer(optimizer, learning_rate)
    x0 = _as_float_tree(x0)

    def fun(x):
        return objective(x, *args)

    vg = jax.value_and_grad(fun)
    f0, g0 = vg(x0)
    if jnp.shape(f0) != ():
        raise ValueError(f"objective must return a scalar, got shape {jnp.shape(f0)}")
    gn0 = _flat_norm(g0, norm)
    dt = ravel_pytree(x0)[0].dtype
    status0 = step_status(f0, ravel_pytree(g0)[0], gn0, jnp.asarray(0), max_steps, gtol)
    hist = record(empty_history(max_steps, dt), 0, f0, 1, gn0)
    init = (jnp.asarray(0), x0, f0, g0, gn0, opt.init(x0), status0, hist)

    def body(s):
        k, x, f, g, _, st, _, hist = s
        updates, st = opt.update(g, st, x, value=f, grad=g, value_fn=fun)
        x = optax.apply_updates(x, updates)
        f, g = vg(x)
        gn = _flat_norm(g, norm)
        k1 = k + 1
        status = step_status(f, ravel_pytree(g)[0], gn, k1, max_steps, gtol)
        return (k1, x, f, g, gn, st, status, record(hist, k1, f, k1 + 1, gn))

    k, x, f, _, gn, _, status, hist = jax.lax.while_loop(lambda s: s[6] == RUNNING, body, init)
    res = OptimizeResult(x, f, gn, k, k + 1, final_status(status), hist)
    return raise_on_failure(res) if throw else res


def sgd(
    key: Array,
    loss: Callable[..., Array],
    x0: Any,
    data: Any,
    args: tuple = (),
    *,
    batch_size: int,
    n_epochs: int = 10,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    norm: float = jnp.inf,
    throw: bool = False,
) -> OptimizeResult:
    r"""Stochastic gradient descent on ``loss(x, batch, *args)`` over minibatches of ``data``.

    ``data`` is a pytree whose leaves share a leading axis of ``n_data`` samples;
    ``loss`` must return the *mean* loss over the batch it is given, so that
    ``loss(x, data)`` is the full-data objective. Each epoch draws a random
    permutation (its own key) and takes ``n_data // batch_size`` steps on disjoint
    minibatches (the remainder is skipped that epoch). Fixed budget: one
    ``lax.scan`` over epochs, one over steps.

    Returns:
        :class:`OptimizeResult`; ``history.f`` / ``history.grad_norm`` hold the full-data
        loss / gradient norm after each epoch (entry 0 at ``x0``, ``history.n_evaluations``
        counts minibatch gradients); ``n_steps`` counts steps and ``n_evaluations`` minibatch
        gradient evaluations. Status is ``SUCCESS`` (budget spent, finite values) or
        ``NONFINITE``; ``throw=True`` raises on ``NONFINITE``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> X = jax.random.normal(jax.random.key(1), (256, 2)); y = X @ jnp.array([1.0, -2.0])
        >>> mse = lambda w, b: jnp.mean((b[0] @ w - b[1]) ** 2)
        >>> res = sgd(jax.random.key(0), mse, jnp.zeros(2), (X, y), batch_size=32, n_epochs=20,
        ...           learning_rate=0.1)
        >>> [round(float(v), 3) for v in res.x]
        [1.0, -2.0]
    """
    if not callable(loss):
        raise TypeError(f"loss must be callable, got {type(loss).__name__}")
    if not isinstance(args, tuple):
        raise ValueError(f"args must be a tuple, got {type(args).__name__}")
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data must contain at least one array")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"all data leaves need the same leading (sample) axis, got sizes {sizes}")
    n_data = int(sizes.pop() or 0)  # None was excluded above
    if not 1 <= batch_size <= n_data:
        raise ValueError(f"batch_size must be in [1, n_data={n_data}], got {batch_size}")
    if n_epochs < 1:
        raise ValueError(f"n_epochs must be >= 1, got {n_epochs}")
    opt = _optimizer(optimizer, learning_rate)
    x0 = _as_float_tree(x0)
    n_batches = n_data // batch_size

    def full(x):
        return jax.value_and_grad(lambda z: loss(z, data, *args))(x)

    def batch_vg(x, idx):
        batch = jax.tree_util.tree_map(lambda a: a[idx], data)
        fn = lambda z: loss(z, batch, *args)  # noqa: E731
        f, g = jax.value_and_grad(fn)(x)
        return f, g, fn

    def step(carry, idx):
        x, st = carry
        f, g, fn = batch_vg(x, idx)
        updates, st = opt.update(g, st, x, value=f, grad=g, value_fn=fn)
        return (optax.apply_updates(x, updates), st), f

    def epoch(carry, k):
        perm = jax.random.permutation(k, n_data)[: n_batches * batch_size]
        carry, _ = jax.lax.scan(step, carry, perm.reshape(n_batches, batch_size))
        f, g = full(carry[0])
        return carry, (f, _flat_norm(g, norm))

    f0, g0 = full(x0)
    if jnp.shape(f0) != ():
        raise ValueError(f"loss must return a scalar, got shape {jnp.shape(f0)}")
    (x, _), (fs, gs) = jax.lax.scan(epoch, (x0, opt.init(x0)), jax.random.split(key, n_epochs))
    fh = jnp.concatenate([f0[None], fs])
    gh = jnp.concatenate([_flat_norm(g0, norm)[None], gs])
    status = jnp.where(
        jnp.isfinite(fh[-1]) & jnp.isfinite(gh[-1]), Status.SUCCESS, Status.NONFINITE
    ).astype(jnp.int32)
    n_steps = jnp.asarray(n_epochs * n_batches, jnp.int32)
    evals = jnp.arange(n_epochs + 1, dtype=jnp.int32) * n_batches
    res = OptimizeResult(x, fh[-1], gh[-1], n_steps, n_steps, status, History(fh, evals, gh))
    return raise_on_failure(res) if throw else res
