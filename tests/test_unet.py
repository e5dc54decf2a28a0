"""UNet2D: shapes, translation equivariance on the torus, DSM training, checkpoints, sampling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxda.diffusion import (
    UNet2D,
    restore_checkpoint,
    score_fn_from_model,
    train,
    vp_cosine,
)


def _roll(x, n, shift):
    return jnp.roll(x.reshape(*x.shape[:-1], n, n), shift, axis=(-2, -1)).reshape(x.shape)


def _small(n=8, periodic=True, channels=(4, 8), seed=0):
    return UNet2D(n, channels=channels, depth=1, emb_dim=8, periodic=periodic, rngs=nnx.Rngs(seed))


# one compiled program per call signature: op-by-op (eager) U-Net calls cost ~4x more compile
_apply = nnx.jit(lambda net, x, t: net(x, t))


def test_shapes_dtypes_and_bad_arguments():
    net = _small()
    x = jax.random.normal(jax.random.key(0), (3, 64), jnp.float32)
    out = _apply(net, x.reshape(1, 3, 64), jnp.full((1, 3), 0.4, jnp.float32))
    assert out.shape == (1, 3, 64) and out.dtype == jnp.float32
    assert _apply(net, x, 0.4).shape == (3, 64)
    assert _apply(net, x.astype(jnp.float64), 0.4).dtype == jnp.float64
    # leading batch dimensions are independent: a batch equals its members one by one
    np.testing.assert_allclose(out[0, 2], _apply(net, x[2], 0.4), rtol=1e-5, atol=1e-6)
    assert net.config() == {
        "n": 8, "channels": [4, 8], "depth": 1, "emb_dim": 8, "periodic": True
    }  # fmt: skip
    with pytest.raises(ValueError, match="divisible"):
        UNet2D(10, channels=(4, 8, 8), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="channels"):
        UNet2D(8, channels=(), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="last axis"):
        net(jnp.zeros((2, 60)), 0.1)


def test_translation_equivariance_on_the_torus():
    """Rolling the field by multiples of the down-sampling factor (4) rolls the output; with
    zero padding (periodic=False) the same network is far from equivariant."""
    n, chans = 8, (4, 8, 8)
    x = jax.random.normal(jax.random.key(1), (3, n * n), jnp.float32)
    t = jnp.array([0.05, 0.5, 0.95], jnp.float32)
    net, zero = _small(n, True, chans), _small(n, False, chans)
    for shift in ((4, 4), (0, 4), (4, 0)):
        err = jnp.abs(_apply(net, _roll(x, n, shift), t) - _roll(_apply(net, x, t), n, shift))
        assert float(err.max()) < 1e-4, (shift, float(err.max()))
        scale = float(jnp.abs(_apply(zero, x, t)).mean())
        err0 = jnp.abs(_apply(zero, _roll(x, n, shift), t) - _roll(_apply(zero, x, t), n, shift))
        err0 = err0.max()
        assert float(err0) > 0.1 * scale, (shift, float(err0), scale)


def _fields(key, m, n):
    """Smooth random periodic fields: a few Fourier modes with random phases, standardized."""
    yy, xx = jnp.meshgrid(*2 * [2 * jnp.pi * jnp.arange(n) / n], indexing="ij")
    ka, kb = jax.random.split(key)
    ph = jax.random.uniform(ka, (m, 2), maxval=2 * jnp.pi)
    amp = 1.0 + 0.3 * jax.random.normal(kb, (m, 1, 1))
    f = amp * (jnp.sin(xx + ph[:, :1, None]) + jnp.cos(2 * yy + ph[:, 1:, None]))
    return (f / jnp.sqrt(jnp.mean(f**2))).reshape(m, n * n)


def test_training_decreases_loss_and_checkpoint_round_trip(tmp_path):
    n = 8
    data = _fields(jax.random.key(2), 64, n).astype(jnp.float32)
    sde = vp_cosine()
    # one resolution level: the round trip is the same, the training program compiles 2x faster
    res = train(jax.random.key(3), _small(n, channels=(4,)), sde, data, n_steps=60,
                batch_size=16, chunk=60, learning_rate=3e-3, checkpoint_dir=tmp_path,
                progress=False)  # fmt: skip
    loss = np.asarray(res.history.loss)
    assert int(res.status) == 0 and loss.shape == (60,)
    assert loss[-15:].mean() < 0.8 * loss[:15].mean(), (loss[:15].mean(), loss[-15:].mean())

    state = restore_checkpoint(tmp_path)  # the model is rebuilt from the manifest's config
    assert isinstance(state.model, UNet2D) and state.step == 60
    assert isinstance(res.model, UNet2D) and state.model.config() == res.model.config()
    x = data[:3]
    np.testing.assert_array_equal(_apply(state.model, x, 0.3), _apply(res.model, x, 0.3))
    np.testing.assert_array_equal(state.history.loss, res.history.loss)
    with pytest.raises(ValueError, match="does not match"):
        restore_checkpoint(tmp_path, model=_small(n, channels=(4, 4)))

    # the score of the restored network: s = -ε_θ/σ(t)
    score = score_fn_from_model(state.model, sde)
    t = jnp.float32(0.3)
    np.testing.assert_allclose(
        jax.jit(score)(x, t), -_apply(res.model, x, t) / sde.std(t), rtol=1e-6
    )
