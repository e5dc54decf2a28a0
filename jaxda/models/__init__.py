"""Dynamical models as pytrees (``equinox.Module``), written for one state and vmapped over members.

A model implements ``step(key, x) -> x_next`` (deterministic models: ``__call__(x)``); its
parameters are fields, so ``jax.vmap``/``jax.grad`` act on them.
"""

from ._integrate import (
    AdditiveNoise,
    FunctionModel,
    LinearModel,
    Model,
    forecast,
    from_callable,
    rk4_step,
    trajectory,
    with_noise,
)
from ._lorenz import Lorenz63, Lorenz96, lorenz63, lorenz63_rhs, lorenz96, lorenz96_rhs

__all__ = [
    "AdditiveNoise",
    "FunctionModel",
    "LinearModel",
    "Lorenz63",
    "Lorenz96",
    "Model",
    "forecast",
    "from_callable",
    "lorenz63",
    "lorenz63_rhs",
    "lorenz96",
    "lorenz96_rhs",
    "rk4_step",
    "trajectory",
    "with_noise",
]
