"""Tiny-model training: loss decreases, checkpoints resume bit-for-bit, network properties."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxda.diffusion import (
    PeriodicConvNet,
    ResidualMLP,
    dsm_loss,
    latest_checkpoint,
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
    model, hist = train(
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
    loss = np.asarray(hist.loss)
    assert loss.shape == (400,) and np.all(np.isfinite(loss))
    assert loss[-100:].mean() < 0.8 * loss[:20].mean()
    # the learned score points towards the data mean at a moderate noise level
    score = score_fn_from_model(model, sde)
    t = 0.3
    x = jnp.array([3.0, 0.0])
    assert float(score(x, t)[0]) < 0.0


def test_checkpoint_resume_is_bitwise_identical(tmp_path):
    sde = vp_linear()
    opt = optax.adam(1e-3)  # schedule independent of n_steps, so 20 = 10 + 10 steps
    kw = dict(batch_size=32, optimizer=opt, chunk=5, progress=False)
    full, h_full = train(jax.random.key(2), tiny(), sde, DATA, n_steps=20, **kw)
    _, h_a = train(jax.random.key(2), tiny(), sde, DATA, n_steps=10, checkpoint_dir=tmp_path, **kw)
    assert latest_checkpoint(tmp_path) == 10
    resumed, h_b = train(
        jax.random.key(2), tiny(), sde, DATA, n_steps=20, checkpoint_dir=tmp_path, **kw
    )
    assert h_b.resumed_from == 10 and latest_checkpoint(tmp_path) == 20
    np.testing.assert_array_equal(np.asarray(h_b.loss), np.asarray(h_full.loss))
    np.testing.assert_array_equal(np.asarray(h_b.loss[:10]), np.asarray(h_a.loss))
    p_full = jax.tree.leaves(nnx.state(full, nnx.Param))
    p_res = jax.tree.leaves(nnx.state(resumed, nnx.Param))
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
