"""Dynamical models, written for one state (vmap them over ensemble members)."""

from ._integrate import Model, forecast, rk4_step, stochastic_trajectory, trajectory
from ._lorenz import lorenz63, lorenz63_rhs, lorenz96, lorenz96_rhs

__all__ = [
    "Model",
    "forecast",
    "lorenz63",
    "lorenz63_rhs",
    "lorenz96",
    "lorenz96_rhs",
    "rk4_step",
    "stochastic_trajectory",
    "trajectory",
]
