r"""Twin experiments: simulate a truth and its observations, then cycle forecast/analysis.

A twin experiment (OSSE) runs the model from a hidden "true" state, observes it
with noise, and lets a DA method estimate it from the observations alone. The
analysis RMSE to the truth and the ensemble spread, time-averaged after a
burn-in, are the standard scores (e.g. DAPPER's ``rmse.a`` and ``rmv.a``).

Everything here is a pure function: one ``lax.scan`` over cycles, so a whole
experiment can be ``jit``-ed and ``vmap``-ed over seeds or inflation factors.

Example:
    >>> import jax
    >>> from jaxda.experiments import sakov2008, make_analysis, twin_experiment
    >>> setup = sakov2008(n_cycles=50, burn_in=10)
    >>> res = twin_experiment(jax.random.key(0), setup, make_analysis("etkf", setup.obs), 20, 1.02)
    >>> res.history.rmse_analysis.shape
    (50,)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import check_in_range
from ..ensemble import inflate, rtps
from ..metrics import rmse
from ..models import Model, forecast, lorenz63, lorenz96, trajectory
from ..observations import ObservationModel, identity, observation_model

AnalysisFn = Callable[[Array, Float[Array, "N n"], Float[Array, " m"]], Float[Array, "N n"]]


@dataclass(frozen=True, eq=False)
class TwinSetup:
    """Static description of a twin experiment (close over it; it is not a pytree).

    Attributes:
        model: the dynamical model (one state).
        obs: observation model ``y = H(x) + ε``.
        n_cycles: number of analysis cycles ``K``.
        obs_every: model steps between two analyses.
        burn_in: cycles discarded from time averages.
        init_std: std of the initial truth and ensemble around ``x0`` (DAPPER's ``X0``).
        model_noise_std: std of additive model noise η (truth and forecasts); 0 = perfect model.
        x0: centre of the initial distribution (defaults to ``model.x0``).
    """

    model: Model
    obs: ObservationModel
    n_cycles: int
    obs_every: int = 1
    burn_in: int = 0
    init_std: float = math.sqrt(0.001)
    model_noise_std: float = 0.0
    x0: Any = field(default=None)

    def __post_init__(self):
        if self.n_cycles < 1:
            raise ValueError(f"n_cycles must be >= 1, got {self.n_cycles}")
        if self.obs_every < 1:
            raise ValueError(f"obs_every must be >= 1, got {self.obs_every}")
        if not 0 <= self.burn_in < self.n_cycles:
            raise ValueError(
                f"burn_in must be in [0, n_cycles), got {self.burn_in} with n_cycles={self.n_cycles}"
            )
        if self.init_std < 0 or self.model_noise_std < 0:
            raise ValueError("init_std and model_noise_std must be >= 0")
        probe = jax.eval_shape(
            self.obs.operator.fn, jax.ShapeDtypeStruct((self.model.dim,), jnp.float32)
        )
        if probe.shape != (self.obs.dim,):
            raise ValueError(
                f"observation operator maps a state of size {self.model.dim} to shape {probe.shape}, "
                f"expected ({self.obs.dim},)"
            )

    @property
    def center(self) -> Float[Array, " n"]:
        return self.model.x0 if self.x0 is None else jnp.asarray(self.x0)


class TwinData(NamedTuple):
    """Truth and observations of a twin experiment."""

    truth0: Float[Array, " n"]  # initial true state
    truth: Float[Array, "K n"]  # true state at each analysis time
    observations: Float[Array, "K m"]


class CycleHistory(NamedTuple):
    """Per-cycle diagnostics (length ``K``) plus whatever ``record`` returned."""

    rmse_forecast: Float[Array, " K"]
    rmse_analysis: Float[Array, " K"]
    spread_forecast: Float[Array, " K"]
    spread_analysis: Float[Array, " K"]
    record: Any = None


class TwinResult(NamedTuple):
    """Outcome of :func:`twin_experiment`."""

    ensemble: Float[Array, "N n"]  # final analysis ensemble
    history: CycleHistory
    rmse_analysis: Float[Array, ""]  # time mean after burn-in
    spread_analysis: Float[Array, ""]
    rmse_forecast: Float[Array, ""]
    data: TwinData


def simulate(key: Array, setup: TwinSetup) -> TwinData:
    """Draw the initial truth, run the (noisy) model and observe every ``obs_every`` steps."""
    k0, kmodel, kobs = jax.random.split(key, 3)
    x0 = setup.center
    truth0 = x0 + setup.init_std * jax.random.normal(k0, x0.shape, x0.dtype)
    step = setup.model.step
    K, dk = setup.n_cycles, setup.obs_every

    def window(x, k):
        if setup.model_noise_std > 0:
            ks = jax.random.split(k, dk)
            for i in range(dk):  # dk is a small static int (unrolled)
                x = step(x) + setup.model_noise_std * jax.random.normal(ks[i], x.shape, x.dtype)
        else:
            x = trajectory(step, x, dk)[-1]
        return x, x

    _, truth = jax.lax.scan(window, truth0, jax.random.split(kmodel, K))
    noise = setup.obs.noise.sample(kobs, (K,)).astype(truth.dtype)
    ys = jax.vmap(setup.obs.operator.fn)(truth) + noise
    return TwinData(truth0, truth, ys)


def _spread(E: Float[Array, "N n"]) -> Float[Array, ""]:
    if E.shape[0] < 2:
        return jnp.zeros((), E.dtype)
    return jnp.sqrt(jnp.mean(jnp.var(E, axis=0, ddof=1)))


def cycle_step(
    setup: TwinSetup,
    analysis: AnalysisFn,
    inflation: float | Array = 1.0,
    rtps_alpha: float | Array = 0.0,
    record: Callable[[Float[Array, "N n"]], Any] | None = None,
):
    """The scan body of one forecast/analysis cycle: ``(E, (key, y, truth)) -> (E, diagnostics)``.

    Exposed so that drivers (e.g. the CLI's chunked runner with a progress bar)
    run exactly the same computation as :func:`run_filter`.
    """
    step = setup.model.step

    def body(E, inputs):
        key, y, xt = inputs
        kf, ka = jax.random.split(key)
        Ef = forecast(kf, step, E, setup.model_noise_std, setup.obs_every)
        Ea = analysis(ka, Ef, y)
        Ea = inflate(Ea, inflation)
        Ea = rtps(Ea, Ef, rtps_alpha)
        diag = CycleHistory(
            rmse(jnp.mean(Ef, 0), xt),
            rmse(jnp.mean(Ea, 0), xt),
            _spread(Ef),
            _spread(Ea),
            None if record is None else record(Ea),
        )
        return Ea, diag

    return body


def run_filter(
    key: Array,
    setup: TwinSetup,
    analysis: AnalysisFn,
    ensemble: Float[Array, "N n"],
    data: TwinData,
    inflation: float | Array = 1.0,
    rtps_alpha: float | Array = 0.0,
    record: Callable[[Float[Array, "N n"]], Any] | None = None,
) -> tuple[Float[Array, "N n"], CycleHistory]:
    """Cycle forecast → analysis → inflation over all observations with ``lax.scan``.

    Returns ``(final_ensemble, history)``; ``history`` has one entry per cycle and,
    if given, ``record(E_analysis)`` stacked over cycles (e.g. the analysis mean).
    """
    if isinstance(inflation, int | float):
        check_in_range("inflation", inflation, 0.0, math.inf, closed_low=False)
    if isinstance(rtps_alpha, int | float):
        check_in_range("rtps_alpha", rtps_alpha, 0.0, 1.0)
    if ensemble.ndim != 2 or ensemble.shape[1] != setup.model.dim:
        raise ValueError(f"ensemble must have shape (N, {setup.model.dim}), got {ensemble.shape}")
    keys = jax.random.split(key, setup.n_cycles)
    body = cycle_step(setup, analysis, inflation, rtps_alpha, record)
    return jax.lax.scan(body, ensemble, (keys, data.observations, data.truth))


def initial_ensemble(key: Array, setup: TwinSetup, n_members: int) -> Float[Array, "N n"]:
    """Members drawn from ``N(x0, init_std² I)`` (DAPPER's ``X0.sample(N)``)."""
    x0 = setup.center
    return x0 + setup.init_std * jax.random.normal(key, (n_members, *x0.shape), x0.dtype)


def time_mean(series: Float[Array, " K"], burn_in: int) -> Float[Array, ""]:
    """Mean over cycles ``burn_in..K-1``."""
    return jnp.mean(series[burn_in:])


def twin_experiment(
    key: Array,
    setup: TwinSetup,
    analysis: AnalysisFn,
    n_members: int,
    inflation: float | Array = 1.0,
    rtps_alpha: float | Array = 0.0,
    record: Callable[[Float[Array, "N n"]], Any] | None = None,
) -> TwinResult:
    """Simulate truth/observations, build the initial ensemble and run the filter.

    ``key`` and ``inflation`` may be traced: ``jax.vmap`` over seeds or inflation
    values and ``jax.jit`` the whole call.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.experiments import sakov2008, make_analysis, twin_experiment
        >>> setup = sakov2008(n_cycles=40, burn_in=10)
        >>> run = jax.jit(lambda k, a: twin_experiment(k, setup, make_analysis("enkf", setup.obs), 20, a))
        >>> res = jax.vmap(run, in_axes=(0, None))(jax.random.split(jax.random.key(0), 3), 1.05)
        >>> res.rmse_analysis.shape
        (3,)
    """
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    k_data, k_init, k_run = jax.random.split(key, 3)
    data = simulate(k_data, setup)
    E0 = initial_ensemble(k_init, setup, n_members)
    E, hist = run_filter(k_run, setup, analysis, E0, data, inflation, rtps_alpha, record)
    b = setup.burn_in
    return TwinResult(
        ensemble=E,
        history=hist,
        rmse_analysis=time_mean(hist.rmse_analysis, b),
        spread_analysis=time_mean(hist.spread_analysis, b),
        rmse_forecast=time_mean(hist.rmse_forecast, b),
        data=data,
    )


def sakov2008(
    n: int = 40, n_cycles: int = 10_400, burn_in: int = 400, obs_std: float = 1.0
) -> TwinSetup:
    """Lorenz-96 setup of Sakov & Oke (2008) as in DAPPER's ``Lorenz96/sakov2008``.

    ``n=40`` variables, ``F=8``, ``dt=0.05``, all variables observed every step with
    ``R = I``, initial truth and ensemble from ``N(e_0, 0.001 I)``. Default burn-in 400
    cycles (20 time units, DAPPER's ``BurnIn=2*Tplot``).
    """
    model = lorenz96(n=n, forcing=8.0, dt=0.05)
    return TwinSetup(
        model=model,
        obs=observation_model(identity(n), std=obs_std),
        n_cycles=n_cycles,
        obs_every=1,
        burn_in=burn_in,
        init_std=math.sqrt(0.001),
    )


def lorenz63_setup(
    n_cycles: int = 2_000, burn_in: int = 200, obs_every: int = 25, obs_std: float = 2.0
) -> TwinSetup:
    """Lorenz-63 with ``dt=0.01``, all variables observed every ``obs_every`` steps (DAPPER's
    ``Lorenz63/sakov2012``-like: ``dtObs=0.25``, ``R=2² I``)."""
    model = lorenz63(dt=0.01)
    return TwinSetup(
        model=model,
        obs=observation_model(identity(3), std=obs_std),
        n_cycles=n_cycles,
        obs_every=obs_every,
        burn_in=burn_in,
        init_std=1.0,
    )
