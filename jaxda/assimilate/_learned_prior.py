r"""The learned-prior (diffusion) filter built from a training checkpoint, for the registry
and the CLI (``jaxda run --method diffusion_filter --score-checkpoint DIR``).

:func:`jaxda.diffusion.diffusion_filter` takes a score function; a command line can only name
a checkpoint. :func:`diffusion_filter_from_checkpoint` restores the noise predictor and the SDE
it was trained with (both recorded in the manifest by :func:`jaxda.diffusion.train`), and
builds the flow-dependent product prior when a localization radius is given.
"""

from __future__ import annotations

import functools
import os

import jax.numpy as jnp
import numpy as np

from ..core import EnsembleState, Method, check_in_range, ensemble_init
from ..diffusion import GaussianResidual, diffusion_filter, restore_checkpoint, score_fn_from_model
from ..ensemble import gaspari_cohn, periodic_distance


def diffusion_filter_from_checkpoint(
    score_checkpoint: str | os.PathLike,
    *,
    checkpoint_step: int | None = None,
    localization_radius: float | None = None,
    guidance: str = "mmps",
    sampler: str = "dpmpp2m",
    n_steps: int = 20,
    eta: float = 1.0,
    t_start: float = 1.0,
    pairing: str = "independent",
    inflation: float = 1.0,
    cg_steps: int = 3,
) -> Method:
    r""":func:`jaxda.diffusion.diffusion_filter` with the increment prior learned in a checkpoint.

    ``score_checkpoint`` is a directory written by :func:`jaxda.diffusion.train`
    (``checkpoint_dir=``): a noise predictor of the *standardized forecast error*
    ``z = (x^{true} - \bar x^f)/s^f`` (see :func:`jaxda.diffusion.diffusion_filter`), trained
    with a built-in SDE; ``checkpoint_step`` picks a step (default the newest). Every analysis
    member is a posterior draw ``x = \bar x^f + s^f ⊙ z`` given the observations.

    With ``localization_radius`` the prior is the flow-dependent product
    ``p_θ(z) N(z; 0, ρ∘\hat C^f) / N(z; 0, C_θ)``: ``ρ`` the Gaspari–Cohn taper of that radius
    (DAPPER's convention, as :func:`jaxda.ensemble.letkf`) between the grid indices
    ``0..n-1`` of a periodic domain of length ``n`` (the Lorenz-96 ring), and ``C_θ`` the
    Gaussian fit stored in the checkpoint, which must then hold a
    :class:`jaxda.diffusion.GaussianResidual`.

    The other options are those of :func:`jaxda.diffusion.diffusion_filter`. On Lorenz-96 with
    every other variable observed (``benchmarks/bench_prior_filter_l96.py``) a learned prior
    tracks with ``localization_radius=2, pairing="transport", inflation=1.04, t_start=0.5``
    (i.i.d. draws, or transport from ``t_start=1``, lose track).

    Raises:
        FileNotFoundError: no complete checkpoint in ``score_checkpoint``.
        ValueError: a checkpoint without its SDE (a custom one), a localization without a
            :class:`GaussianResidual`, or a state size other than the model's.

    Examples:
        Train a tiny increment prior for a few steps, then filter with it:

        >>> import tempfile, jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxda.diffusion import GaussianResidual, PeriodicConvNet, train, vp_linear
        >>> from jaxda.observations import identity, observation_model
        >>> sde, directory = vp_linear(), tempfile.mkdtemp()
        >>> net = PeriodicConvNet(channels=4, depth=1, rngs=nnx.Rngs(0))
        >>> errors = jax.random.normal(jax.random.key(0), (64, 6))
        >>> _ = train(jax.random.key(1), GaussianResidual(net, jnp.eye(6), sde), sde, errors,
        ...           n_steps=10, batch_size=16, checkpoint_dir=directory, progress=False)
        >>> method = diffusion_filter_from_checkpoint(directory, localization_radius=2.0)
        >>> obs = observation_model(identity(6), obs_std=1.0)
        >>> E = jax.random.normal(jax.random.key(2), (10, 6))
        >>> state, info = method.step(jax.random.key(3), method.init(E), jnp.zeros(6), obs)
        >>> state.ensemble.shape, int(info.n_obs)
        ((10, 6), 6)
    """
    if localization_radius is not None:
        check_in_range("localization_radius", localization_radius, 0.0, np.inf, closed_low=False)
    restored = restore_checkpoint(score_checkpoint, checkpoint_step)
    if restored.sde is None:
        raise ValueError(
            f"the checkpoint in {score_checkpoint} does not record its SDE (trained with a "
            "custom SDE): build jaxda.diffusion.diffusion_filter from the score in Python"
        )
    model, sde = restored.model, restored.sde
    score_fn = score_fn_from_model(model, sde)
    build = functools.partial(
        diffusion_filter,
        score_fn,
        sde,
        guidance=guidance,
        sampler=sampler,
        n_steps=n_steps,
        eta=eta,
        t_start=t_start,
        pairing=pairing,
        inflation=inflation,
        cg_steps=cg_steps,
    )
    n = int(model.cov[...].shape[0]) if isinstance(model, GaussianResidual) else None
    if localization_radius is None:
        inner = build()
    elif n is None:
        raise ValueError(
            "localization_radius needs the Gaussian fit C_θ of the prior: the checkpoint must "
            f"hold a jaxda.diffusion.GaussianResidual, not a {type(model).__name__}"
        )
    else:
        idx = jnp.arange(n, dtype=float)
        dist = periodic_distance(idx[:, None], idx[None, :], float(n))
        taper = gaspari_cohn(dist, localization_radius)
        cov = jnp.asarray(model.cov[...])  # pyright: ignore[reportAttributeAccessIssue]
        inner = build(localization=taper, prior_cov=cov)

    def step(key, state: EnsembleState, y, obs):
        if n is not None and state.ensemble.shape[-1] != n:
            raise ValueError(
                f"the score model in {score_checkpoint} is for states of size {n}, "
                f"got an ensemble of shape {state.ensemble.shape}"
            )
        return inner.step(key, state, y, obs)

    return Method(ensemble_init, step)
