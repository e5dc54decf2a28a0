"""Dynamical models as pytrees (``equinox.Module``), written for one state and vmapped over members.

A model implements ``step(key, x) -> x_next`` (deterministic models: ``__call__(x)``); its
parameters are fields, so ``jax.vmap``/``jax.grad`` act on them.
"""

from ._augmented import Augmented, augmented
from ._distributions import (
    Distribution,
    Empirical,
    Gaussian,
    check_distribution,
    empirical,
    gaussian,
)
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
from ._kolmogorov import (
    Kolmogorov,
    coarsen,
    energy_spectrum,
    kolmogorov,
    kolmogorov_trajectories,
    random_vorticity,
    velocity,
)
from ._ks import KuramotoSivashinsky, kuramoto_sivashinsky
from ._lorenz import Lorenz63, Lorenz96, lorenz63, lorenz63_rhs, lorenz96, lorenz96_rhs
from ._lorenz_uv import LorenzUV, lorenz_uv, lorenz_uv_rhs
from ._qg import QG, arakawa_jacobian, helmholtz_solve, laplacian, qg
from ._window import (
    Window,
    WindowInfo,
    WindowState,
    check_window_options,
    empty_window,
    propagate,
    run_window,
    slide,
    smoothed_record,
    window_drop,
    window_method,
    window_push,
)

__all__ = [
    "QG",
    "AdditiveNoise",
    "Augmented",
    "Distribution",
    "Empirical",
    "FunctionModel",
    "Gaussian",
    "Kolmogorov",
    "KuramotoSivashinsky",
    "LinearModel",
    "Lorenz63",
    "Lorenz96",
    "LorenzUV",
    "Model",
    "Window",
    "WindowInfo",
    "WindowState",
    "arakawa_jacobian",
    "augmented",
    "check_distribution",
    "check_window_options",
    "coarsen",
    "empirical",
    "empty_window",
    "energy_spectrum",
    "forecast",
    "from_callable",
    "gaussian",
    "helmholtz_solve",
    "kolmogorov",
    "kolmogorov_trajectories",
    "kuramoto_sivashinsky",
    "laplacian",
    "lorenz63",
    "lorenz63_rhs",
    "lorenz96",
    "lorenz96_rhs",
    "lorenz_uv",
    "lorenz_uv_rhs",
    "propagate",
    "qg",
    "random_vorticity",
    "rk4_step",
    "run_window",
    "slide",
    "smoothed_record",
    "trajectory",
    "velocity",
    "window_drop",
    "window_method",
    "window_push",
    "with_noise",
]
