r"""Flax (nnx) noise-prediction networks ``ε_θ(x_t, t)`` and their score.

The networks predict the noise ``ε`` of ``x_t = μ(t)x_0 + σ(t)ε`` (Ho et al. 2020); the score
is then ``s_θ(x, t) = -ε_θ(x, t)/σ(t)`` (:func:`score_fn_from_model`).

* :class:`ResidualMLP` – vectors and short flattened trajectory windows (e.g. 5 Lorenz-63
  states = 15 numbers): input projection, pre-norm residual blocks with SiLU and an additive
  sinusoidal time embedding, linear output.
* :class:`PeriodicConvNet` – periodic 1-D fields (Lorenz-96 states): residual 1-D convolutions
  with circular padding, so the network is translation-equivariant on the ring.

Both accept any leading batch dimensions: ``x`` of shape ``(..., d)`` and ``t`` scalar or
``(...)``. Only the *model definition* uses nnx; training and sampling use the pure
``graphdef``/``state`` split (``nnx.split`` / ``nnx.merge``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from ._sde import SDE


def sinusoidal_embedding(
    t: Array, dim: int, max_frequency: float = 1000.0
) -> Float[Array, "... dim"]:
    r"""Sinusoidal embedding of diffusion time ``t ∈ [0, 1]`` (Vaswani et al. 2017 style).

    ``[sin(ω_k t), cos(ω_k t)]`` with ``ω_k`` geometric from 1 to ``max_frequency``.

    Examples:
        >>> sinusoidal_embedding(jnp.zeros(3), 8).shape
        (3, 8)
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"embedding dim must be an even number >= 2, got {dim}")
    half = dim // 2
    freqs = jnp.exp(jnp.linspace(0.0, math.log(max_frequency), half))
    arg = jnp.asarray(t)[..., None] * freqs
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


class _ResBlock(nnx.Module):
    def __init__(self, width: int, emb_dim: int, *, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.lin1 = nnx.Linear(width, width, rngs=rngs)
        self.temb = nnx.Linear(emb_dim, width, rngs=rngs)
        self.lin2 = nnx.Linear(width, width, rngs=rngs)

    def __call__(self, h, emb):
        z = self.lin1(jax.nn.silu(self.norm(h))) + self.temb(emb)
        return h + self.lin2(jax.nn.silu(z))


class ResidualMLP(nnx.Module):
    """Residual MLP ``ε_θ(x, t)`` for vectors ``x`` of size ``dim``.

    Args:
        dim: input/output size (flattened window size for trajectories).
        width: hidden width.
        depth: number of residual blocks.
        emb_dim: size of the sinusoidal time embedding.
        rngs: ``nnx.Rngs`` for parameter initialisation.

    Examples:
        >>> from flax import nnx
        >>> net = ResidualMLP(3, width=16, depth=1, rngs=nnx.Rngs(0))
        >>> net(jnp.zeros((4, 3)), jnp.full((4,), 0.5)).shape
        (4, 3)
    """

    def __init__(
        self, dim: int, *, width: int = 128, depth: int = 3, emb_dim: int = 32, rngs: nnx.Rngs
    ):
        if dim < 1 or width < 1 or depth < 0:
            raise ValueError(f"need dim >= 1, width >= 1, depth >= 0; got {dim}, {width}, {depth}")
        self.dim, self.width, self.depth, self.emb_dim = dim, width, depth, emb_dim
        self.inp = nnx.Linear(dim, width, rngs=rngs)
        self.emb = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
        self.blocks = nnx.List([_ResBlock(width, emb_dim, rngs=rngs) for _ in range(depth)])
        self.out_norm = nnx.LayerNorm(width, rngs=rngs)
        self.out = nnx.Linear(width, dim, rngs=rngs)

    def config(self) -> dict[str, int]:
        """Constructor arguments (without ``rngs``), stored in training checkpoints."""
        return {"dim": self.dim, "width": self.width, "depth": self.depth, "emb_dim": self.emb_dim}

    def __call__(self, x: Float[Array, "... d"], t: Array) -> Float[Array, "... d"]:
        if x.shape[-1] != self.dim:
            raise ValueError(f"ResidualMLP expects last axis {self.dim}, got shape {x.shape}")
        t = jnp.broadcast_to(jnp.asarray(t), x.shape[:-1])
        emb = jax.nn.silu(self.emb(sinusoidal_embedding(t, self.emb_dim)))
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(jax.nn.silu(self.out_norm(h)))


class _ConvBlock(nnx.Module):
    def __init__(self, channels: int, kernel: int, emb_dim: int, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(channels, channels, (kernel,), padding="CIRCULAR", rngs=rngs)
        self.temb = nnx.Linear(emb_dim, channels, rngs=rngs)
        self.conv2 = nnx.Conv(channels, channels, (kernel,), padding="CIRCULAR", rngs=rngs)

    def __call__(self, h, emb):
        z = self.conv1(jax.nn.silu(h)) + self.temb(emb)[..., None, :]
        return h + self.conv2(jax.nn.silu(z))


class PeriodicConvNet(nnx.Module):
    """Small residual 1-D CNN ``ε_θ(x, t)`` for periodic fields ``x`` of shape ``(..., n)``.

    Convolutions use circular padding, so shifting ``x`` around the ring shifts the output
    the same way (translation equivariance, as in Lorenz-96).

    Examples:
        >>> from flax import nnx
        >>> net = PeriodicConvNet(channels=8, depth=1, rngs=nnx.Rngs(0))
        >>> net(jnp.zeros((2, 40)), 0.3).shape
        (2, 40)
    """

    def __init__(
        self,
        *,
        channels: int = 32,
        depth: int = 3,
        kernel: int = 5,
        emb_dim: int = 32,
        rngs: nnx.Rngs,
    ):
        if channels < 1 or depth < 0 or kernel < 1:
            raise ValueError(
                f"need channels >= 1, depth >= 0, kernel >= 1; got {channels}, {depth}, {kernel}"
            )
        self.channels, self.depth, self.kernel, self.emb_dim = channels, depth, kernel, emb_dim
        self.inp = nnx.Conv(1, channels, (kernel,), padding="CIRCULAR", rngs=rngs)
        self.emb = nnx.Linear(emb_dim, emb_dim, rngs=rngs)
        self.blocks = nnx.List(
            [_ConvBlock(channels, kernel, emb_dim, rngs=rngs) for _ in range(depth)]
        )
        self.out = nnx.Conv(channels, 1, (kernel,), padding="CIRCULAR", rngs=rngs)

    def config(self) -> dict[str, int]:
        """Constructor arguments (without ``rngs``), stored in training checkpoints."""
        return {
            "channels": self.channels,
            "depth": self.depth,
            "kernel": self.kernel,
            "emb_dim": self.emb_dim,
        }

    def __call__(self, x: Float[Array, "... n"], t: Array) -> Float[Array, "... n"]:
        batch = x.shape[:-1]
        t = jnp.broadcast_to(jnp.asarray(t), batch)
        emb = jax.nn.silu(self.emb(sinusoidal_embedding(t, self.emb_dim)))
        xf = x.reshape((-1, x.shape[-1], 1))
        embf = emb.reshape((-1, self.emb_dim))
        h = self.inp(xf)
        for block in self.blocks:
            h = block(h, embf)
        return self.out(jax.nn.silu(h))[..., 0].reshape(x.shape)


def score_fn_from_model(model: nnx.Module, sde: SDE) -> Callable[[Array, Array], Array]:
    r"""Pure ``score_fn(x, t) = -ε_θ(x, t)/σ(t)`` from a noise-prediction nnx model.

    The model is split once (``nnx.split``) and merged inside the function, so the result
    is a pure function safe to ``jit``/``vmap``/``grad``; later changes to ``model`` are not seen.
    """
    graphdef, state = nnx.split(model)

    def score_fn(x, t):
        net = nnx.merge(graphdef, state)
        x = jnp.asarray(x)  # the score keeps the state's dtype (a float32 state stays float32)
        return (-net(x, t) / sde.std(jnp.asarray(t))).astype(x.dtype)

    return score_fn
