r"""Denoising score matching and an optax training loop for noise-prediction networks.

Loss (Vincent 2011; Ho et al. 2020, ε-parametrisation; equals σ²-weighted DSM):

.. math:: \mathcal L(θ) = \mathbb E_{t \sim U(t_{min},1),\, x_0,\, ε}
    \lVert ε_θ(μ(t)x_0 + σ(t)ε,\ t) - ε \rVert^2 / d .

The loop is pure: the nnx model is split into ``graphdef`` and parameters, the optax state
is explicit, and ``chunk`` optimisation steps run inside one jitted ``lax.scan``. Batch and
noise keys of step ``k`` are ``fold_in(key, k)``, so a run resumed from a checkpoint is
bitwise identical to an uninterrupted one.

A step whose loss, gradient or updated parameters are not finite is never applied: with
``on_nonfinite="stop"`` (default) training stops there and the result has
``status == Status.NONFINITE`` and ``nonfinite_step``; with ``"skip"`` the batch is skipped
(counted in ``n_skipped``) and training goes on.

Checkpoint layout (``directory/ckpt_00000100`` for step 100):

* ``ckpt_00000100/`` – orbax ``StandardCheckpointer`` tree ``{params, opt_state, loss}``;
* ``ckpt_00000100.json`` – manifest written last (a checkpoint without it is incomplete): the
  step, the model's class and constructor arguments (``model.config()`` when the class has it,
  as :class:`ResidualMLP` and :class:`PeriodicConvNet`; ``config()`` and a ``from_config``
  class method for a model built from other modules, as :class:`GaussianResidual`), parameter
  shapes and dtypes, the optimizer (default or custom), the training SDE (a built-in one,
  rebuilt by :func:`restore_checkpoint` into ``TrainState.sde``), the sha256 of every file of the orbax directory and the sha256
  of the saved arrays. :func:`restore_checkpoint` checks all of them, so a corrupt file or a
  model of another width fails with one sentence instead of an orbax traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import operator
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float, Int

from ..core import (
    Status,
    check_count,
    is_concrete,
    positive_or_error,
    raise_on_failure,
    status_array,
)
from ._sde import SDE, sde_from_params

_FORMAT = 1


class TrainHistory(NamedTuple):
    """Per-step records of :func:`train`: ``loss[k]`` is the mini-batch loss of step ``k``
    (``nan``/``inf`` at a non-finite step, which was not applied)."""

    loss: Float[Array, " K"]


class TrainState(NamedTuple):
    """Everything needed to continue training: what :func:`restore_checkpoint` returns.

    Attributes:
        model: the nnx model holding the parameters after ``step`` steps.
        opt_state: the optax state.
        step: number of optimisation steps done.
        history: the per-step losses of those steps.
        sde: the forward SDE the model was trained with (recorded in the manifest when it is a
            built-in one, see :func:`jaxda.diffusion.sde_from_params`; ``None`` otherwise).
    """

    model: nnx.Module
    opt_state: Any
    step: int
    history: TrainHistory
    sde: SDE | None = None


class TrainResult(NamedTuple):
    """Result of :func:`train`.

    Attributes:
        model: a new model with the trained parameters (the last finite ones).
        opt_state: the final optax state.
        history: per-step losses, length ``n_steps``.
        status: ``Status.SUCCESS`` or ``Status.NONFINITE`` (stopped at a non-finite step).
        n_steps: steps run, the resumed ones included (with ``"stop"``: up to and including
            the non-finite step, which was not applied).
        nonfinite_step: index of the first non-finite step (``-1`` if none).
        n_skipped: steps skipped with ``on_nonfinite="skip"``.
        resumed_from: step of the checkpoint training resumed from (0 if none).
    """

    model: nnx.Module
    opt_state: Any
    history: TrainHistory
    status: Int[Array, ""]
    n_steps: int
    nonfinite_step: int
    n_skipped: int
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

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> x0 = jnp.zeros((8, 2))
        >>> loss = dsm_loss(jax.random.key(0), lambda p, x, t: jnp.zeros_like(x), None,
        ...                 vp_linear(), x0)
        >>> loss.shape
        ()
    """
    x0 = jnp.asarray(x0)
    if x0.ndim < 2 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be a batch of shape (B, ...) with B >= 1, got {x0.shape}")
    k_t, k_eps = jax.random.split(key)
    batch = x0.shape[0]
    t = jax.random.uniform(k_t, (batch,), x0.dtype, minval=sde.t_min, maxval=1.0)
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    tb = t.reshape((batch,) + (1,) * (x0.ndim - 1))
    xt = sde.mean_coef(tb) * x0 + sde.std(tb) * eps
    pred = apply_fn(params, xt, t)
    if jnp.shape(pred) != x0.shape:
        raise ValueError(f"apply_fn returns shape {jnp.shape(pred)}, expected {x0.shape}")
    return jnp.mean((pred - eps) ** 2)


# ---------------------------------------------------------------------------------------------
# checkpoints


def _name(step: int) -> str:
    return f"ckpt_{step:08d}"


def _ckpt_steps(directory: Path) -> list[int]:
    if not directory.is_dir():
        return []
    steps = []
    for p in directory.glob("ckpt_*.json"):
        try:
            step = int(p.stem.split("_")[1])
        except ValueError:
            continue
        if (directory / _name(step)).is_dir():
            steps.append(step)
    return sorted(steps)


def _file_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _tree_hash(tree: Any) -> str:
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _param_specs(params: Any) -> dict[str, list]:
    return {
        jax.tree_util.keystr(path): [list(np.shape(leaf)), str(jnp.asarray(leaf).dtype)]
        for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
    }


def _model_info(model: nnx.Module) -> dict[str, Any]:
    cls = type(model)
    config = model.config() if callable(getattr(model, "config", None)) else None  # pyright: ignore
    return {"class": f"{cls.__module__}:{cls.__qualname__}", "config": config}


def _describe(info: dict[str, Any]) -> str:
    name = info["class"].rsplit(":", 1)[-1]
    if info.get("config") is None:
        return name
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in info['config'].items())})"


def _default_optimizer(learning_rate: float, n_steps: int) -> optax.GradientTransformation:
    schedule = optax.cosine_decay_schedule(learning_rate, n_steps, alpha=0.05)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


def _sde_info(sde: SDE | None) -> dict[str, Any] | None:
    if sde is None or sde.params is None:
        return None
    return {"name": sde.name, "params": dict(sde.params)}


def save_checkpoint(
    directory: str | os.PathLike, state: TrainState, *, optimizer_spec: dict | None = None
) -> Path:
    """Write ``state`` (parameters, optimizer state, step, loss history) at ``state.step``.

    The orbax directory is written first, then the JSON manifest with content hashes and
    the model configuration (see the module docstring). ``optimizer_spec`` records how to
    rebuild the optimizer (:func:`train` stores its default Adam schedule there); ``None``
    means a custom optimizer, which :func:`restore_checkpoint` then needs as an argument.
    Returns the path of the orbax directory.
    """
    import orbax.checkpoint as ocp

    step = operator.index(state.step)
    if step < 0:
        raise ValueError(f"state.step must be >= 0, got {step}")
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _name(step)
    manifest_path = directory / f"{_name(step)}.json"
    manifest_path.unlink(missing_ok=True)  # an overwritten checkpoint is incomplete until done
    params = nnx.state(state.model, nnx.Param)
    tree = {
        "params": params,
        "opt_state": state.opt_state,
        "loss": jnp.asarray(state.history.loss),
    }
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path, tree, force=True)
    ckptr.wait_until_finished()
    manifest = {
        "format": _FORMAT,
        "step": step,
        "n_loss": int(np.shape(state.history.loss)[0]),
        "loss_dtype": str(jnp.asarray(state.history.loss).dtype),
        "model": _model_info(state.model),
        "params": _param_specs(params),
        "optimizer": optimizer_spec,
        "sde": _sde_info(state.sde),
        "arrays_sha256": _tree_hash(tree),
        "files_sha256": _file_hashes(path),
    }
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(manifest_path)
    return path


def latest_checkpoint(directory: str | os.PathLike, *, max_step: int | None = None) -> int | None:
    """Step of the newest complete checkpoint in ``directory`` (at most ``max_step``), or ``None``."""
    steps = [
        s for s in _ckpt_steps(Path(directory).absolute()) if max_step is None or s <= max_step
    ]
    return steps[-1] if steps else None


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path.with_name(path.name + ".json")
    try:
        manifest = json.loads(manifest_path.read_text())
        for field in ("files_sha256", "arrays_sha256", "params", "model", "step", "n_loss"):
            manifest[field]  # KeyError if absent
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(
            f"checkpoint manifest {manifest_path} is missing or unreadable ({e})"
        ) from None
    return manifest


def _verify_files(path: Path, manifest: dict[str, Any]) -> None:
    expected = manifest["files_sha256"]
    found = _file_hashes(path) if path.is_dir() else {}
    for name, digest in expected.items():
        if name not in found:
            raise ValueError(f"checkpoint {path} is corrupt: file {name} is missing")
        if found[name] != digest:
            raise ValueError(f"checkpoint {path} is corrupt: hash mismatch in file {name}")


def _model_from_manifest(path: Path | str, info: dict[str, Any]) -> nnx.Module:
    """The model described by ``info`` (``_model_info``), freshly initialised; ``path`` names
    where ``info`` comes from in error messages."""
    if info.get("config") is None:
        raise ValueError(
            f"checkpoint {path} holds a {_describe(info)} without constructor arguments "
            "(no config() method): pass model= with a model of the same structure"
        )
    module, _, qualname = info["class"].partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"checkpoint {path}: cannot import model class {info['class']} ({e})"
        ) from None
    if callable(getattr(obj, "from_config", None)):  # a model built from other modules
        return obj.from_config(info["config"], rngs=nnx.Rngs(0))
    return obj(**info["config"], rngs=nnx.Rngs(0))


def _check_model(path: Path, manifest: dict[str, Any], model: nnx.Module) -> None:
    saved, given = manifest["model"], _model_info(model)
    if saved["class"] != given["class"] or (
        saved.get("config") is not None
        and given["config"] is not None
        and saved["config"] != given["config"]
    ):
        raise ValueError(
            f"checkpoint {path} was saved for {_describe(saved)}, "
            f"which does not match the model {_describe(given)}"
        )
    specs = _param_specs(nnx.state(model, nnx.Param))
    if specs != manifest["params"]:
        saved = manifest["params"]
        name = next(k for k in sorted(set(specs) | set(saved)) if specs.get(k) != saved.get(k))
        raise ValueError(
            f"checkpoint {path} has parameters that do not match the model: {name} is "
            f"{saved.get(name)} (shape, dtype) in the checkpoint and {specs.get(name)} in the model"
        )


def restore_checkpoint(
    directory: str | os.PathLike,
    step: int | None = None,
    *,
    model: nnx.Module | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> TrainState:
    """Restore the whole training state saved at ``step`` (default: the newest) in one call.

    The model is rebuilt from the class and constructor arguments in the manifest (or checked
    against ``model`` when given), the optimizer state is restored with the structure of
    ``optimizer`` (default: the one recorded by :func:`train`), and every file hash and the
    array hash are verified first.

    Raises:
        FileNotFoundError: no complete checkpoint at ``step`` in ``directory``.
        ValueError: corrupt checkpoint (``hash mismatch``), a model of another configuration,
            or a custom optimizer that was not passed.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if step is None:
        step = latest_checkpoint(directory)
        if step is None:
            raise FileNotFoundError(f"no complete checkpoint in {directory}")
    path = directory / _name(operator.index(step))
    if not path.is_dir():
        raise FileNotFoundError(f"no checkpoint for step {step} in {directory}")
    manifest = _read_manifest(path)
    _verify_files(path, manifest)
    if model is None:
        model = _model_from_manifest(path, manifest["model"])
    _check_model(path, manifest, model)
    if optimizer is None:
        spec = manifest.get("optimizer")
        if not spec:
            raise ValueError(
                f"checkpoint {path} was saved with a custom optimizer: pass optimizer="
            )
        optimizer = _default_optimizer(spec["learning_rate"], spec["n_steps"])
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    target = {
        "params": params,
        "opt_state": optimizer.init(params),
        "loss": jax.ShapeDtypeStruct((manifest["n_loss"],), jnp.dtype(manifest["loss_dtype"])),
    }
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        restored = ocp.StandardCheckpointer().restore(path, abstract)
    except Exception as e:  # orbax raises many types; give one sentence
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"checkpoint {path} does not match the model/optimizer state structure ({first})"
        ) from None
    if _tree_hash(restored) != manifest["arrays_sha256"]:
        raise ValueError(f"checkpoint {path} is corrupt: hash mismatch of the restored arrays")
    info = manifest.get("sde")
    return TrainState(
        model=nnx.merge(graphdef, restored["params"], rest),
        opt_state=restored["opt_state"],
        step=int(manifest["step"]),
        history=TrainHistory(restored["loss"]),
        sde=None if info is None else sde_from_params(info["name"], info["params"]),
    )


# ---------------------------------------------------------------------------------------------
# training


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
    on_nonfinite: str = "stop",
    progress: bool = True,
    throw: bool = False,
) -> TrainResult:
    r"""Train a noise-prediction network by denoising score matching.

    Args:
        key: PRNG key (step ``k`` uses ``fold_in(key, k)``).
        model: an nnx module ``model(x_t, t) -> ε̂`` (batch first); it is **not** mutated.
        sde: forward SDE defining ``μ(t), σ(t)``.
        data: finite training samples ``(M, ...)`` (standardized).
        n_steps: total number of optimisation steps (including resumed ones).
        batch_size: mini-batch size (sampled with replacement).
        optimizer: optax transformation (default Adam with a cosine-decayed ``learning_rate``
            and global-norm clipping at 1).
        learning_rate: peak learning rate of the default optimizer (> 0).
        chunk: steps per jitted ``lax.scan`` call (progress-bar granularity).
        checkpoint_dir: if given, checkpoints are saved there every ``checkpoint_every`` steps
            (default: at each chunk end that crosses a multiple of ``max(n_steps // 5, chunk)``)
            and at the end; with ``resume`` the newest checkpoint with step ``<= n_steps`` is
            loaded first (its model configuration must match ``model``).
        on_nonfinite: ``"stop"`` (default) or ``"skip"``: what to do with a step whose loss,
            gradient or updated parameters are nan/inf (the step is never applied).
        progress: show a tqdm progress bar with the running loss.
        throw: raise ``RuntimeError`` instead of returning a ``NONFINITE`` status.

    Returns:
        :class:`TrainResult` (model, opt_state, history, status, n_steps, nonfinite_step,
        n_skipped, resumed_from).

    Examples:
        >>> import jax
        >>> from flax import nnx
        >>> from jaxda.diffusion import ResidualMLP, vp_linear
        >>> data = jax.random.normal(jax.random.key(0), (64, 2))
        >>> res = train(jax.random.key(1), ResidualMLP(2, width=8, depth=1, rngs=nnx.Rngs(0)),
        ...             vp_linear(), data, n_steps=20, batch_size=16, chunk=10, progress=False)
        >>> res.history.loss.shape, int(res.status)
        ((20,), 0)
    """
    from tqdm.auto import tqdm

    n_steps = check_count("n_steps", n_steps)
    batch_size = check_count("batch_size", batch_size)
    chunk = check_count("chunk", chunk)
    if checkpoint_every is not None:
        checkpoint_every = check_count("checkpoint_every", checkpoint_every)
    positive_or_error("learning_rate", learning_rate)
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
    data = jnp.asarray(data)
    if data.ndim < 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (M, ...) with M >= 1 samples, got {data.shape}")
    if not jnp.issubdtype(data.dtype, jnp.floating):
        raise ValueError(f"data must be floating point, got dtype {data.dtype}")
    if is_concrete(data) and not bool(jnp.all(jnp.isfinite(data))):
        bad = int(jnp.sum(~jnp.all(jnp.isfinite(data.reshape(data.shape[0], -1)), axis=1)))
        raise ValueError(f"data contains nan/inf values ({bad} of {data.shape[0]} samples)")
    optimizer_spec = None
    if optimizer is None:
        optimizer = _default_optimizer(learning_rate, n_steps)
        optimizer_spec = {"default": True, "learning_rate": learning_rate, "n_steps": n_steps}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def apply_fn(p, x, t):
        return nnx.merge(graphdef, p, rest)(x, t)

    probe = jax.ShapeDtypeStruct((batch_size, *data.shape[1:]), data.dtype)
    out = jax.eval_shape(apply_fn, params, probe, jax.ShapeDtypeStruct((batch_size,), data.dtype))
    if out.shape != probe.shape:
        raise ValueError(
            f"model output shape {out.shape} does not match its input shape {probe.shape}"
        )

    opt_state = optimizer.init(params)
    losses = np.zeros(0, dtype=data.dtype)
    start = 0
    if checkpoint_dir is not None and resume:
        last = latest_checkpoint(checkpoint_dir, max_step=n_steps)
        if last is not None:
            state = restore_checkpoint(checkpoint_dir, last, model=model, optimizer=optimizer)
            if _sde_info(state.sde) != _sde_info(sde):
                raise ValueError(
                    f"the checkpoint in {checkpoint_dir} was trained with the SDE "
                    f"{_sde_info(state.sde)}, not {_sde_info(sde)}: resume with the same SDE"
                )
            params = nnx.state(state.model, nnx.Param)
            opt_state, start = state.opt_state, state.step
            losses = np.asarray(state.history.loss)
    resumed_from = start
    every = checkpoint_every or max(n_steps // 5, chunk)
    n_data = data.shape[0]
    skip = on_nonfinite == "skip"

    def all_finite(tree):
        return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))

    def one_step(carry, k):
        p, s, stopped = carry
        kb, kl = jax.random.split(jax.random.fold_in(key, k))
        idx = jax.random.randint(kb, (batch_size,), 0, n_data)
        loss, grads = jax.value_and_grad(lambda q: dsm_loss(kl, apply_fn, q, sde, data[idx]))(p)
        updates, s_new = optimizer.update(grads, s, p)
        p_new = optax.apply_updates(p, updates)
        finite = jnp.isfinite(loss) & all_finite(grads) & all_finite(p_new)
        ok = finite & ~stopped
        p, s = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (p_new, s_new), (p, s))
        if not skip:
            stopped = stopped | ~finite
        return (p, s, stopped), (loss, finite)

    @jax.jit
    def run_chunk(p, s, steps):
        (p, s, _), (loss, finite) = jax.lax.scan(one_step, (p, s, jnp.asarray(False)), steps)
        return p, s, loss, finite

    history = [losses]
    bar = tqdm(total=n_steps, initial=start, disable=not progress, desc="DSM training")
    step, nonfinite_step, n_skipped = start, -1, 0
    status = Status.SUCCESS
    while step < n_steps:
        stop = min(step + chunk, n_steps)
        params, opt_state, loss, finite = run_chunk(params, opt_state, jnp.arange(step, stop))
        loss, finite = np.asarray(loss), np.asarray(finite)
        if not finite.all():
            first = int(np.argmin(finite))
            if nonfinite_step < 0:
                nonfinite_step = step + first
            if not skip:
                history.append(loss[: first + 1])
                step += first + 1
                status = Status.NONFINITE
                bar.update(first + 1)
                break
            n_skipped += int((~finite).sum())
        history.append(loss)
        bar.update(stop - step)
        if finite.any():
            bar.set_postfix(loss=f"{float(np.mean(loss[finite])):.4f}")
        crossed = (stop // every) > (step // every)
        step = stop
        if checkpoint_dir is not None and (crossed or step == n_steps):
            state = TrainState(
                nnx.merge(graphdef, params, rest),
                opt_state,
                step,
                TrainHistory(jnp.asarray(np.concatenate(history))),
                sde,
            )
            save_checkpoint(checkpoint_dir, state, optimizer_spec=optimizer_spec)
    bar.close()
    result = TrainResult(
        model=nnx.merge(graphdef, params, rest),
        opt_state=opt_state,
        history=TrainHistory(jnp.asarray(np.concatenate(history))),
        status=status_array(status),
        n_steps=step,
        nonfinite_step=nonfinite_step,
        n_skipped=n_skipped,
        resumed_from=resumed_from,
    )
    if throw and status != Status.SUCCESS:
        try:
            raise_on_failure(result)
        except RuntimeError as e:
            raise RuntimeError(f"training {e} at step {nonfinite_step}") from None
    return result
