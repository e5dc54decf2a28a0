"""Tiny-model training: loss decreases, checkpoints resume bit-for-bit and are verified,
non-finite steps stop or are skipped, network properties."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxda.core import Status
from jaxda.diffusion import (
    PeriodicConvNet,
    ResidualMLP,
    dsm_loss,
    latest_checkpoint,
    restore_checkpoint,
    score_fn_from_model,
    train,
    vp_linear,
)

DATA = jax.random.normal(jax.random.key(0), (512, 2)) * jnp.array([0.3, 1.0]) + jnp.array(
    [1.0, 0.0]
)


def tiny():
    return ResidualMLP(2, width=16, depth=1, emb_dim=8, rngs=nnx.Rngs(0))


def test_training_decreases_loss_and_learns_score():
    sde = vp_linear()
    res = train(
        jax.random.key(1),
        tiny(),
        sde,
        DATA,
        n_steps=400,
        batch_size=128,
        learning_rate=3e-3,
        chunk=400,
        progress=False,
    )
    assert int(res.status) == Status.SUCCESS and res.n_steps == 400 and res.nonfinite_step == -1
    loss = np.asarray(res.history.loss)
    assert loss.shape == (400,) and np.all(np.isfinite(loss))
    assert loss[-100:].mean() < 0.8 * loss[:20].mean()
    # the learned score points towards the data mean at a moderate noise level
    score = score_fn_from_model(res.model, sde)
    t = 0.3
    x = jnp.array([3.0, 0.0])
    assert float(score(x, t)[0]) < 0.0


def test_checkpoint_resume_is_bitwise_identical(tmp_path):
    sde = vp_linear()
    opt = optax.adam(1e-3)  # schedule independent of n_steps, so 20 = 10 + 10 steps
    kw = dict(batch_size=32, optimizer=opt, chunk=5, progress=False)
    full = train(jax.random.key(2), tiny(), sde, DATA, n_steps=20, **kw)
    a = train(jax.random.key(2), tiny(), sde, DATA, n_steps=10, checkpoint_dir=tmp_path, **kw)
    assert latest_checkpoint(tmp_path) == 10
    b = train(jax.random.key(2), tiny(), sde, DATA, n_steps=20, checkpoint_dir=tmp_path, **kw)
    assert b.resumed_from == 10 and latest_checkpoint(tmp_path) == 20
    np.testing.assert_array_equal(np.asarray(b.history.loss), np.asarray(full.history.loss))
    np.testing.assert_array_equal(np.asarray(b.history.loss[:10]), np.asarray(a.history.loss))
    p_full = jax.tree.leaves(nnx.state(full.model, nnx.Param))
    p_res = jax.tree.leaves(nnx.state(b.model, nnx.Param))
    for a, b in zip(p_full, p_res, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dsm_loss_is_minimised_by_true_noise_predictor():
    """For Gaussian data the optimal ε-predictor is σ(t)·(-score); its loss beats a zero predictor."""
    sde = vp_linear()
    m, c = jnp.array([1.0, 0.0]), jnp.array([0.09, 1.0])

    def optimal(params, x, t):
        tb = t[:, None]
        mu, s = sde.mean_coef(tb), sde.std(tb)
        return s * (x - mu * m) / (mu**2 * c + s**2)

    key = jax.random.key(3)
    l_opt = dsm_loss(key, optimal, None, sde, DATA)
    l_zero = dsm_loss(key, lambda p, x, t: jnp.zeros_like(x), None, sde, DATA)
    assert float(l_opt) < float(l_zero)
    assert abs(float(l_zero) - 1.0) < 0.1  # E||ε||²/d = 1


def test_periodic_convnet_is_shift_equivariant():
    net = PeriodicConvNet(channels=8, depth=1, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(net)
    apply = jax.jit(lambda x: nnx.merge(graphdef, state)(x, 0.4))
    x = jax.random.normal(jax.random.key(4), (40,))
    np.testing.assert_allclose(apply(jnp.roll(x, 7)), jnp.roll(apply(x), 7), atol=1e-5)


def test_train_validation():
    with pytest.raises(ValueError, match="data"):
        train(jax.random.key(0), tiny(), vp_linear(), jnp.zeros(5), n_steps=1, progress=False)
    with pytest.raises(ValueError, match="last axis"):
        tiny()(jnp.zeros((3, 5)), 0.1)


def _flip_bytes(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(min(8, len(raw))):
        raw[len(raw) // 2 - i] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_checkpoint_restores_whole_state_and_detects_corruption(tmp_path):
    sde = vp_linear()
    res = train(
        jax.random.key(5),
        tiny(),
        sde,
        DATA,
        n_steps=6,
        batch_size=16,
        chunk=3,
        progress=False,
        checkpoint_dir=tmp_path,
    )
    # one call: model rebuilt from its recorded configuration, default optimizer state, step
    state = restore_checkpoint(tmp_path)
    assert state.step == 6 and isinstance(state.model, ResidualMLP)
    assert state.model.config() == tiny().config()
    np.testing.assert_array_equal(np.asarray(state.history.loss), np.asarray(res.history.loss))
    for x, y in zip(
        jax.tree.leaves((nnx.state(res.model, nnx.Param), res.opt_state)),
        jax.tree.leaves((nnx.state(state.model, nnx.Param), state.opt_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert restore_checkpoint(tmp_path, 3).step == 3

    # a network of another width: one sentence naming both configurations
    wide = ResidualMLP(2, width=32, depth=1, emb_dim=8, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"width=16.*does not match the model ResidualMLP\(dim=2, width=32"
    ):
        train(
            jax.random.key(5), wide, sde, DATA, n_steps=6, progress=False, checkpoint_dir=tmp_path
        )

    # flipped bytes in a data file of the orbax directory
    ckpt = tmp_path / "ckpt_00000006"
    data_files = [p for p in ckpt.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert data_files
    _flip_bytes(max(data_files, key=lambda p: p.stat().st_size))
    with pytest.raises(ValueError, match="ckpt_00000006 is corrupt: hash mismatch"):
        restore_checkpoint(tmp_path, 6)
    with pytest.raises(ValueError, match="hash mismatch"):
        train(
            jax.random.key(5), tiny(), sde, DATA, n_steps=6, progress=False, checkpoint_dir=tmp_path
        )


def test_checkpoint_with_custom_optimizer_needs_it(tmp_path):
    opt = optax.sgd(1e-2)
    train(
        jax.random.key(0),
        tiny(),
        vp_linear(),
        DATA,
        n_steps=2,
        batch_size=8,
        chunk=2,
        optimizer=opt,
        progress=False,
        checkpoint_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="custom optimizer: pass optimizer="):
        restore_checkpoint(tmp_path)
    assert restore_checkpoint(tmp_path, optimizer=opt).step == 2


class NaNAtLargeT(nnx.Module):
    """A linear noise predictor that returns nan whenever a sample of the batch has t > 0.9."""

    def __init__(self, rngs):
        self.lin = nnx.Linear(2, 2, rngs=rngs)

    def __call__(self, x, t):
        return jnp.where(jnp.asarray(t)[..., None] > 0.9, jnp.nan, self.lin(x))


def test_nonfinite_loss_stops_or_skips():
    kw = dict(n_steps=30, batch_size=4, chunk=7, progress=False)
    skip = train(
        jax.random.key(7), NaNAtLargeT(nnx.Rngs(0)), vp_linear(), DATA, on_nonfinite="skip", **kw
    )
    bad = ~np.isfinite(np.asarray(skip.history.loss))
    assert int(skip.status) == Status.SUCCESS and skip.n_steps == 30
    assert skip.n_skipped == bad.sum() > 0 and skip.nonfinite_step == int(np.argmax(bad))
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(nnx.state(skip.model)))

    stop = train(jax.random.key(7), NaNAtLargeT(nnx.Rngs(0)), vp_linear(), DATA, **kw)
    k = skip.nonfinite_step
    assert int(stop.status) == Status.NONFINITE and stop.nonfinite_step == k
    assert stop.n_steps == k + 1 and stop.history.loss.shape == (k + 1,)
    np.testing.assert_array_equal(
        np.asarray(stop.history.loss[:k]), np.asarray(skip.history.loss[:k])
    )
    with pytest.raises(RuntimeError, match=f"non-finite.*at step {k}"):
        train(jax.random.key(7), NaNAtLargeT(nnx.Rngs(0)), vp_linear(), DATA, throw=True, **kw)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_divergent_learning_rate_stops_with_last_finite_parameters():
    res = train(
        jax.random.key(8),
        tiny(),
        vp_linear(),
        DATA,
        n_steps=20,
        batch_size=16,
        chunk=20,
        optimizer=optax.sgd(1e200),
        progress=False,
    )
    assert int(res.status) == Status.NONFINITE and 0 <= res.nonfinite_step < 20
    assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(nnx.state(res.model)))
