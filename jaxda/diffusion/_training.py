r"""Denoising score matching and an optax training loop for noise-prediction networks.

Loss (Vincent 2011; Ho et al. 2020, ε-parametrisation; equals σ²-weighted DSM):

.. math:: \mathcal L(θ) = \mathbb E_{t \sim U(t_{min},1),\, x_0,\, ε}
    \lVert ε_θ(μ(t)x_0 + σ(t)ε,\ t) - ε \rVert^2 / d .

The loop is pure: the nnx model is split into ``graphdef`` and parameters, the optax state
is explicit, and ``chunk`` optimisation steps run inside one jitted ``lax.scan``. Batch and
noise keys of step ``k`` are ``fold_in(key, k)``, so a run resumed from a checkpoint is
bitwise identical to an uninterrupted one. Checkpoints are written with orbax
(``StandardCheckpointer``) plus a small ``.npz`` with the step and loss history.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float

from ._sde import SDE


class TrainHistory(NamedTuple):
    """Diagnostics of :func:`train`: ``loss[k]`` is the mini-batch loss of step ``k``."""

    loss: Float[Array, " K"]
    resumed_from: int


def dsm_loss(
    key: Array,
    apply_fn: Callable[[Any, Array, Array], Array],
    params: Any,
    sde: SDE,
    x0: Float[Array, "B ..."],
) -> Float[Array, ""]:
    """Denoising score-matching (ε-prediction) loss on a batch ``x0`` (batch first).

    ``apply_fn(params, x_t, t)`` returns the predicted noise for the batch.
    """
    k_t, k_eps = jax.random.split(key)
    batch = x0.shape[0]
    t = jax.random.uniform(k_t, (batch,), x0.dtype, minval=sde.t_min, maxval=1.0)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    tb = t.reshape((batch,) + (1,) * (x0.ndim - 1))
    xt = sde.mean_coef(tb) * x0 + sde.std(tb) * eps
    pred = apply_fn(params, xt, t)
    return jnp.mean((pred - eps) ** 2)


def _ckpt_steps(directory: Path) -> list[int]:
    if not directory.exists():
        return []
    steps = []
    for p in directory.glob("ckpt_*.npz"):
        step = int(p.stem.split("_")[1])
        if (directory / f"ckpt_{step:08d}").is_dir():
            steps.append(step)
    return sorted(steps)


def save_checkpoint(
    directory: str | os.PathLike, step: int, params: Any, opt_state: Any, loss: np.ndarray
) -> Path:
    """Write parameters and optimizer state (orbax) and the loss history (npz) at ``step``."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"ckpt_{step:08d}"
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, {"params": params, "opt_state": opt_state}, force=True)
    ckptr.wait_until_finished()
    np.savez(directory / f"ckpt_{step:08d}.npz", step=step, loss=np.asarray(loss))
    return path


def latest_checkpoint(directory: str | os.PathLike) -> int | None:
    """Step of the newest complete checkpoint in ``directory`` (``None`` if there is none)."""
    steps = _ckpt_steps(Path(directory).absolute())
    return steps[-1] if steps else None


def restore_checkpoint(
    directory: str | os.PathLike, step: int, params_like: Any, opt_state_like: Any
):
    """Restore ``(params, opt_state, loss_history)`` saved at ``step``; ``*_like`` give the structure."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    target = {"params": params_like, "opt_state": opt_state_like}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = ocp.StandardCheckpointer().restore(directory / f"ckpt_{step:08d}", abstract)
    meta = np.load(directory / f"ckpt_{step:08d}.npz")
    return restored["params"], restored["opt_state"], meta["loss"]


def train(
    key: Array,
    model: nnx.Module,
    sde: SDE,
    data: Float[Array, "M ..."],
    *,
    n_steps: int = 2000,
    batch_size: int = 256,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 1e-3,
    chunk: int = 100,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    progress: bool = True,
) -> tuple[nnx.Module, TrainHistory]:
    r"""Train a noise-prediction network by denoising score matching.

    Args:
        key: PRNG key (step ``k`` uses ``fold_in(key, k)``).
        model: an nnx module ``model(x_t, t) -> ε̂`` (batch first); it is **not** mutated.
        sde: forward SDE defining ``μ(t), σ(t)``.
        data: training samples ``(M, ...)`` (standardized).
        n_steps: total number of optimisation steps (including resumed ones).
        batch_size: mini-batch size (sampled with replacement).
        optimizer: optax transformation (default Adam with a cosine-decayed ``learning_rate``
            and global-norm clipping at 1).
        chunk: steps per jitted ``lax.scan`` call (progress-bar granularity).
        checkpoint_dir: if given, checkpoints are saved there every ``checkpoint_every`` steps
            (default: at each chunk end that crosses a multiple of ``max(n_steps // 5, chunk)``)
            and at the end; with ``resume`` the newest checkpoint is loaded first.
        progress: show a tqdm progress bar with the running loss.

    Returns:
        ``(trained_model, TrainHistory(loss, resumed_from))``: a new model holding the trained
        parameters and the per-step loss history.

    Example:
        >>> import jax
        >>> from flax import nnx
        >>> from jaxda.diffusion import ResidualMLP, vp_linear
        >>> data = jax.random.normal(jax.random.key(0), (64, 2))
        >>> net, hist = train(jax.random.key(1), ResidualMLP(2, width=8, depth=1, rngs=nnx.Rngs(0)),
        ...                   vp_linear(), data, n_steps=20, batch_size=16, chunk=10, progress=False)
        >>> hist.loss.shape
        (20,)
    """
    from tqdm.auto import tqdm

    if n_steps < 1 or batch_size < 1 or chunk < 1:
        raise ValueError(
            f"n_steps, batch_size and chunk must be >= 1, got {n_steps}, {batch_size}, {chunk}"
        )
    data = jnp.asarray(data)
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (M, ...) with M >= 1 samples, got {data.shape}")
    if optimizer is None:
        schedule = optax.cosine_decay_schedule(learning_rate, n_steps, alpha=0.05)
        optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply_fn(p, x, t):
        return nnx.merge(graphdef, p, rest)(x, t)

    opt_state = optimizer.init(params)
    losses = np.zeros(0)
    start = 0
    if checkpoint_dir is not None and resume:
        last = latest_checkpoint(checkpoint_dir)
        if last is not None:
            params, opt_state, losses = restore_checkpoint(checkpoint_dir, last, params, opt_state)
            start = min(last, n_steps)
            losses = np.asarray(losses)[:start]
    resumed_from = start
    every = checkpoint_every or max(n_steps // 5, chunk)
    n_data = data.shape[0]

    def one_step(carry, k):
        p, s = carry
        kb, kl = jax.random.split(jax.random.fold_in(key, k))
        idx = jax.random.randint(kb, (batch_size,), 0, n_data)
        loss, grads = jax.value_and_grad(lambda q: dsm_loss(kl, apply_fn, q, sde, data[idx]))(p)
        updates, s = optimizer.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), loss

    @jax.jit
    def run_chunk(p, s, steps):
        (p, s), loss = jax.lax.scan(one_step, (p, s), steps)
        return p, s, loss

    history = [losses]
    bar = tqdm(total=n_steps, initial=start, disable=not progress, desc="DSM training")
    step = start
    while step < n_steps:
        stop = min(step + chunk, n_steps)
        params, opt_state, loss = run_chunk(params, opt_state, jnp.arange(step, stop))
        history.append(np.asarray(loss))
        bar.update(stop - step)
        bar.set_postfix(loss=f"{float(np.mean(history[-1])):.4f}")
        crossed = (stop // every) > (step // every)
        step = stop
        if checkpoint_dir is not None and (crossed or step == n_steps):
            save_checkpoint(checkpoint_dir, step, params, opt_state, np.concatenate(history))
    bar.close()
    trained = nnx.merge(graphdef, params, rest)
    return trained, TrainHistory(jnp.asarray(np.concatenate(history)), resumed_from)
