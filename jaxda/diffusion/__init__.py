"""Diffusion-model data assimilation: SDEs, score networks, samplers, guidance and EnSF.

* SDEs: :func:`vp_linear`, :func:`vp_cosine`, :func:`ve` (and :func:`ddpm_schedule`).
* Networks (flax.nnx): :class:`ResidualMLP`, :class:`PeriodicConvNet`, :func:`score_fn_from_model`.
* 2-D U-Net on the torus (flax.nnx): :class:`UNet2D`.
* Training: :func:`dsm_loss`, :func:`train` (optax, jit, tqdm, orbax checkpoints with content
  hashes: :func:`save_checkpoint`, :func:`restore_checkpoint`, :func:`latest_checkpoint`).
* Samplers: :func:`reverse_sde`, :func:`probability_flow`, :func:`predictor_corrector`,
  :func:`ddpm_ancestral`, :func:`sample`.
* Few-step samplers: :func:`ddim`, :func:`edm_heun`, :func:`dpmpp_2m`.
* Data assimilation: :func:`posterior_score` (DPS/SDA guidance), :func:`local_score`
  (windowed trajectories), :func:`ensf` (ensemble score filter).
* MMPS guidance (moment matching, CG covariance solves): :func:`mmps_score`; one flag for
  DPS / SDA / MMPS: :func:`guided_score`.
* Data: :func:`lorenz63_trajectories`, :func:`sliding_windows`, :data:`LORENZ63_STANDARDIZER`.
"""

from ._data import (
    LORENZ63_STANDARDIZER,
    Standardizer,
    lorenz63_trajectories,
    noisy_lorenz63_step,
    sliding_windows,
)
from ._ensf import ensf, ensf_sde
from ._fast_samplers import ddim, dpmpp_2m, edm_heun
from ._guidance import local_score, posterior_score
from ._mmps import guided_score, mmps_score
from ._networks import PeriodicConvNet, ResidualMLP, score_fn_from_model, sinusoidal_embedding
from ._prior_filter import GaussianResidual, diffusion_filter, gaussian_score
from ._samplers import (
    SampleResult,
    ddpm_ancestral,
    predictor_corrector,
    probability_flow,
    reverse_sde,
    sample,
)
from ._sde import SDE, DDPMSchedule, ddpm_schedule, sde_from_params, ve, vp_cosine, vp_linear
from ._training import (
    TrainHistory,
    TrainResult,
    TrainState,
    dsm_loss,
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    train,
)
from ._unet import UNet2D

__all__ = [
    "LORENZ63_STANDARDIZER",
    "SDE",
    "DDPMSchedule",
    "GaussianResidual",
    "PeriodicConvNet",
    "ResidualMLP",
    "SampleResult",
    "Standardizer",
    "TrainHistory",
    "TrainResult",
    "TrainState",
    "UNet2D",
    "ddim",
    "ddpm_ancestral",
    "ddpm_schedule",
    "diffusion_filter",
    "dpmpp_2m",
    "dsm_loss",
    "edm_heun",
    "ensf",
    "ensf_sde",
    "gaussian_score",
    "guided_score",
    "latest_checkpoint",
    "local_score",
    "lorenz63_trajectories",
    "mmps_score",
    "noisy_lorenz63_step",
    "posterior_score",
    "predictor_corrector",
    "probability_flow",
    "restore_checkpoint",
    "reverse_sde",
    "sample",
    "save_checkpoint",
    "score_fn_from_model",
    "sde_from_params",
    "sinusoidal_embedding",
    "sliding_windows",
    "train",
    "ve",
    "vp_cosine",
    "vp_linear",
]
