r"""A 2-D U-Net noise-prediction network ``ε_θ(x_t, t)`` for periodic fields (flax.nnx).

The network of image diffusion models (Ronneberger, Fischer & Brox 2015, *U-Net*; Ho, Jain &
Abbeel 2020, *DDPM*), as used for the Kolmogorov flow by Rozet & Louppe (2023, *Score-based
data assimilation*), for one scalar field on the ``n × n`` torus stored flat, ``x = ω.ravel()``
(row-major, as :class:`jaxda.models.Kolmogorov`):

* **encoder**: level ``ℓ = 1..L`` works on a ``n/2^{ℓ-1}`` grid with ``channels[ℓ-1]``
  channels, ``depth`` residual blocks per level, then a 3×3 convolution of stride 2 halves the
  grid (``L - 1`` down-samplings, total factor ``2^{L-1}``);
* **bottleneck**: one residual block at the coarsest level;
* **decoder**: nearest-neighbour up-sampling by 2 followed by a 3×3 convolution, the encoder's
  output of the same level concatenated (skip connection), ``depth`` residual blocks;
* **residual block**: ``h + conv(SiLU(GN(conv(SiLU(GN(h))) + W e(t))))`` with group
  normalisation (GN), and a 1×1 convolution on the skip path when the width changes;
* **time**: ``e(t)`` is a two-layer SiLU MLP of the sinusoidal embedding of ``t``
  (:func:`jaxda.diffusion.sinusoidal_embedding`), added per channel in every block;
* **input skip**: the output is ``F(x, t) + c(t) x`` with a learned scalar ``c(t)`` (linear in
  ``e(t)``, zero at initialisation). For standardized data and a VP SDE the best linear
  predictor of the noise is ``σ(t) x``, and at high noise ``ε ≈ x_t``: the skip gives the
  network that path directly, where the convolutional stack would have to learn an identity
  through its normalisations (few-step samplers amplify the noise-prediction error at
  high noise by ``σ/μ``).

**Periodicity.** Every convolution pads circularly (``padding="CIRCULAR"``), the stride-2
convolutions sample the torus without a seam, and group normalisation averages over the whole
grid. Hence the network commutes with translations of the torus by multiples of the total
down-sampling factor ``2^{L-1}`` (in each direction): rolling the input field by ``(a, b)``
cells rolls the predicted noise by ``(a, b)``. With ``periodic=False`` the convolutions pad
with zeros (a field on a box) and this symmetry is lost at the edges.

The grid side ``n`` must be divisible by ``2^{L-1}``. ``x`` has shape ``(..., n²)`` with any
leading batch dimensions and ``t`` is a scalar or has shape ``(...)``; the result has the shape
of ``x``, so the network plugs into :func:`jaxda.diffusion.train`,
:func:`jaxda.diffusion.score_fn_from_model` and the samplers exactly like
:class:`~jaxda.diffusion.ResidualMLP`, and :meth:`UNet2D.config` lets
:func:`jaxda.diffusion.restore_checkpoint` rebuild it from a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from ._networks import sinusoidal_embedding


def _groups(channels: int, max_groups: int = 8) -> int:
    """The largest number of groups ``<= max_groups`` dividing ``channels``."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


class _UResBlock(nnx.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, padding: str, *, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(c_in, num_groups=_groups(c_in), rngs=rngs)
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), padding=padding, rngs=rngs)
        self.temb = nnx.Linear(emb_dim, c_out, rngs=rngs)
        self.norm2 = nnx.GroupNorm(c_out, num_groups=_groups(c_out), rngs=rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), padding=padding, rngs=rngs)
        self.skip = nnx.Conv(c_in, c_out, (1, 1), rngs=rngs) if c_in != c_out else None

    def __call__(self, h, emb):
        z = self.conv1(jax.nn.silu(self.norm1(h))) + self.temb(emb)[:, None, None, :]
        z = self.conv2(jax.nn.silu(self.norm2(z)))
        return (h if self.skip is None else self.skip(h)) + z


class UNet2D(nnx.Module):
    r"""2-D U-Net ``ε_θ(x, t)`` for fields on the ``n × n`` torus, flat input ``(..., n²)``.

    See the module docstring for the architecture (Ronneberger et al. 2015; Ho et al. 2020;
    the U-Net of SDA, Rozet & Louppe 2023) and its translation equivariance on the torus.

    Args:
        n: grid points per side (the input has ``n²`` entries, row-major); divisible by
            ``2^{len(channels)-1}``.
        channels: widths of the levels, finest first, e.g. ``(32, 64, 128)`` (``L`` levels,
            ``L - 1`` down-samplings by 2).
        depth: residual blocks per level in the encoder and in the decoder (``>= 1``).
        emb_dim: size of the sinusoidal time embedding (even).
        periodic: circular padding in every convolution (default); ``False``: zero padding.
        rngs: ``nnx.Rngs`` for parameter initialisation.

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> net = UNet2D(8, channels=(4, 8), depth=1, emb_dim=8, rngs=nnx.Rngs(0))
        >>> x = jnp.arange(2 * 64.0).reshape(2, 64) / 64
        >>> net(x, jnp.array([0.1, 0.9])).shape
        (2, 64)

        Rolling the field on the torus by an even number of cells rolls the output:

        >>> roll = lambda v: jnp.roll(v.reshape(2, 8, 8), (2, 4), axis=(1, 2)).reshape(2, 64)
        >>> bool(jnp.allclose(net(roll(x), 0.5), roll(net(x, 0.5)), atol=1e-5))
        True
    """

    def __init__(
        self,
        n: int,
        *,
        channels: Sequence[int] = (32, 64, 128),
        depth: int = 2,
        emb_dim: int = 64,
        periodic: bool = True,
        rngs: nnx.Rngs,
    ):
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"n (grid points per side) must be an int >= 2, got {n!r}")
        try:
            chans = tuple(int(c) for c in channels)
        except TypeError:
            raise ValueError(f"channels must be a sequence of ints, got {channels!r}") from None
        if not chans or any(c < 1 for c in chans):
            raise ValueError(
                f"channels must be a non-empty sequence of ints >= 1, got {channels!r}"
            )
        factor = 2 ** (len(chans) - 1)
        if n % factor:
            raise ValueError(
                f"n = {n} must be divisible by the down-sampling factor 2^(len(channels)-1) = "
                f"{factor} (channels={list(chans)})"
            )
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        if emb_dim < 2 or emb_dim % 2:
            raise ValueError(f"emb_dim must be an even int >= 2, got {emb_dim!r}")
        self.n, self.channels, self.depth = n, chans, depth
        self.emb_dim, self.periodic = emb_dim, bool(periodic)
        pad = "CIRCULAR" if self.periodic else "SAME"
        e = 4 * emb_dim
        self.emb1 = nnx.Linear(emb_dim, e, rngs=rngs)
        self.emb2 = nnx.Linear(e, e, rngs=rngs)
        self.inp = nnx.Conv(1, chans[0], (3, 3), padding=pad, rngs=rngs)
        down, pools = [], []
        for i, c in enumerate(chans):
            c_prev = chans[max(i - 1, 0)]
            down.append(nnx.List([_UResBlock(c_prev if j == 0 else c, c, e, pad, rngs=rngs)
                                  for j in range(depth)]))  # fmt: skip
            if i < len(chans) - 1:
                pools.append(nnx.Conv(c, c, (3, 3), strides=(2, 2), padding=pad, rngs=rngs))
        self.down, self.pools = nnx.List(down), nnx.List(pools)
        self.mid = _UResBlock(chans[-1], chans[-1], e, pad, rngs=rngs)
        up, ups = [], []
        for i in reversed(range(len(chans))):
            c = chans[i]
            c_from = chans[min(i + 1, len(chans) - 1)]
            if i < len(chans) - 1:
                ups.append(nnx.Conv(c_from, c, (3, 3), padding=pad, rngs=rngs))
            up.append(nnx.List([_UResBlock(2 * c if j == 0 else c, c, e, pad, rngs=rngs)
                                for j in range(depth)]))  # fmt: skip
        self.up, self.ups = nnx.List(up), nnx.List(ups)
        self.out_norm = nnx.GroupNorm(chans[0], num_groups=_groups(chans[0]), rngs=rngs)
        self.out = nnx.Conv(chans[0], 1, (3, 3), padding=pad, rngs=rngs)
        self.skip = nnx.Linear(e, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def config(self) -> dict:
        """Constructor arguments (without ``rngs``), stored in training checkpoints (JSON:
        ``channels`` as a list)."""
        return {
            "n": self.n,
            "channels": list(self.channels),
            "depth": self.depth,
            "emb_dim": self.emb_dim,
            "periodic": self.periodic,
        }

    def __call__(self, x: Float[Array, "... n2"], t: Array | float) -> Float[Array, "... n2"]:
        n = self.n
        if x.shape[-1:] != (n * n,):
            raise ValueError(f"UNet2D expects a last axis of n² = {n * n}, got shape {x.shape}")
        batch = x.shape[:-1]
        t = jnp.broadcast_to(jnp.asarray(t), batch)
        emb = sinusoidal_embedding(t, self.emb_dim).reshape(-1, self.emb_dim)
        emb = self.emb2(jax.nn.silu(self.emb1(emb.astype(x.dtype))))
        h = self.inp(x.reshape(-1, n, n, 1))
        skips = []
        for i, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if i < len(self.pools):
                h = self.pools[i](h)
        h = self.mid(h, emb)
        for k, blocks in enumerate(self.up):
            if k > 0:  # up-sample to the next finer level
                h = self.ups[k - 1](jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2))
            h = jnp.concatenate([h, skips.pop()], axis=-1)
            for block in blocks:
                h = block(h, emb)
        h = self.out(jax.nn.silu(self.out_norm(h))).reshape(*batch, n * n)
        gain = self.skip(emb).reshape(*batch, 1)  # c(t): the input skip ε̂ = F(x, t) + c(t) x
        return (h + gain * x).astype(x.dtype)

    @property
    def downsampling(self) -> int:
        """Total down-sampling factor ``2^{L-1}``: the shifts the network commutes with."""
        return 2 ** (len(self.channels) - 1)
