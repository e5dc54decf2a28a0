"""Named analysis methods for the twin-experiment driver and the CLI.

Each factory takes the observation model and options and returns an
``analysis(key, E_forecast, y) -> E_analysis`` function.
"""

from __future__ import annotations

from collections.abc import Callable

from ..ensemble import (
    enkf_analysis,
    etkf_analysis,
    gain_taper,
    make_letkf,
    make_particle_filter,
    mean_and_anomalies,
    mean_preserving_rotation,
)
from ..observations import ObservationModel
from ._twin import AnalysisFn


def make_enkf(
    obs: ObservationModel,
    *,
    localization_radius: float | None = None,
    n: int | None = None,
    center_perturbations: bool = True,
) -> AnalysisFn:
    """Stochastic (perturbed-observations) EnKF; optional Gaspari–Cohn gain localization."""
    taper = None
    if localization_radius is not None:
        if n is None or obs.operator.indices is None:
            raise ValueError(
                "gain localization needs the state size n and an observation operator with indices"
            )
        taper = gain_taper(n, obs.operator.indices, localization_radius)

    def analysis(key, E, y):
        return enkf_analysis(
            key, E, y, obs, center_perturbations=center_perturbations, localization=taper
        )

    return analysis


def make_etkf(obs: ObservationModel, *, rotate: bool = False) -> AnalysisFn:
    """ETKF with the symmetric square root; ``rotate=True`` adds DAPPER's random mean-preserving rotation."""

    def analysis(key, E, y):
        Ea = etkf_analysis(E, y, obs)
        if rotate:
            mean, A = mean_and_anomalies(Ea)
            Ea = mean + mean_preserving_rotation(key, E.shape[0]).astype(A.dtype) @ A
        return Ea

    return analysis


def make_letkf_method(
    obs: ObservationModel,
    *,
    localization_radius: float | None = None,
    n: int | None = None,
    **options,
) -> AnalysisFn:
    """LETKF (local ETKF per grid point, Gaspari–Cohn R-localization); needs the radius and ``n``."""
    if localization_radius is None or n is None:
        raise ValueError(
            "letkf needs a localization radius (--localization-radius) and the state size n"
        )
    return make_letkf(obs, n, localization_radius, **options)


def make_var3d(
    obs: ObservationModel, *, model, xb: float = 0.02, n_climatology: int = 20_000, **options
) -> AnalysisFn:
    """3D-Var with ``B = xb · C_clim`` (climatological covariance of a free model run), as DAPPER's
    ``Var3D(xB=...)``; minimized by BFGS (:func:`jaxda.variational.make_3dvar`)."""
    from ..variational import background_covariance, climatological_covariance, make_3dvar

    C = climatological_covariance(model, n_steps=n_climatology)
    return make_3dvar(obs, background_covariance(cov=xb * C), **options)


def make_ensf_method(obs: ObservationModel, **options) -> AnalysisFn:
    """Training-free ensemble score filter (EnSF, Bao et al. 2024): :func:`jaxda.diffusion.make_ensf`."""
    from ..diffusion import make_ensf

    options.pop("n", None)
    options.pop("localization_radius", None)
    return make_ensf(obs, **options)


def make_pf_method(obs: ObservationModel, *, jitter: float = 0.0, **options) -> AnalysisFn:
    """Particle filter (resampling every cycle), regularized by ``jitter``:
    :func:`jaxda.ensemble.make_particle_filter`."""
    options.pop("n", None)
    options.pop("localization_radius", None)
    return make_particle_filter(obs, jitter=jitter, **options)


_FACTORIES: dict[str, Callable[..., AnalysisFn]] = {
    "3dvar": make_var3d,
    "enkf": make_enkf,
    "ensf": make_ensf_method,
    "etkf": make_etkf,
    "letkf": make_letkf_method,
    "pf": make_pf_method,
}


# Methods the CLI runs with their own cycling driver rather than ``analysis(key, E, y)``.
WINDOW_METHODS = ("4dvar",)


def available_methods() -> list[str]:
    """Names accepted by :func:`make_analysis` (``jaxda run --method`` also takes ``4dvar``)."""
    return sorted(_FACTORIES)


def make_analysis(method: str, obs: ObservationModel, **options) -> AnalysisFn:
    """Build a named analysis function ``analysis(key, E, y)``.

    Raises ``ValueError`` listing the known methods for an unknown name.
    """
    try:
        factory = _FACTORIES[method.lower()]
    except KeyError:
        raise ValueError(
            f"unknown method {method!r}; choose one of {available_methods()}"
        ) from None
    return factory(obs, **options)
