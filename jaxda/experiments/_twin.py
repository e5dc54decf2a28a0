r"""Twin experiments: simulate a truth and its observations, then run the driver on them.

A twin experiment (OSSE) runs the model from a hidden "true" state, observes it with noise,
and lets a DA method estimate it from the observations alone. The analysis RMSE to the truth
and the ensemble spread, time-averaged after a burn-in, are the standard scores (DAPPER's
``rmse.a`` and ``rmv.a``). The cycling itself is :func:`jaxda.assimilate.assimilate`, the
same driver that runs on real observations.

Everything is pure: the setup is a pytree (``jax.vmap``/``jax.grad`` over the forcing, R,
the initial spread...), and a whole experiment can be ``jit``-ed and ``vmap``-ed over seeds.

Examples:
    >>> import jax
    >>> from jaxda.assimilate import with_inflation
    >>> from jaxda.ensemble import etkf
    >>> setup = sakov2008(n_cycles=50, burn_in=10)
    >>> res = twin_experiment(jax.random.key(0), setup, with_inflation(etkf(), 1.02), 20)
    >>> res.history.rmse_analysis.shape
    (50,)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..assimilate import History, assimilate, assimilate_stream, run_status
from ..core import Method, is_concrete
from ..models import Lorenz63, Lorenz96, Model, trajectory
from ..observations import ObservationModel, ObservationSeries, identity, observation_model
from ..observations import observation_series as _series


class TwinSetup(eqx.Module):
    """A twin experiment (a pytree: its model and observation parameters are leaves).

    Attributes:
        model: the forecast model (one state; stochastic models add their noise).
        obs: observation model ``y = H(x) + ε``.
        n_cycles: number of observation times ``K`` (static).
        obs_every: model steps between two observation times (static).
        burn_in: observation times discarded from time averages (static).
        init_std: std of the initial truth and ensemble around ``x0`` (DAPPER's ``X0``).
        x0: centre of the initial distribution (defaults to ``model.x0``).
        truth_model: the model that generates the truth (defaults to ``model``; set it for an
            imperfect-model twin).
    """

    model: Model
    obs: ObservationModel
    n_cycles: int = eqx.field(static=True)
    obs_every: int = eqx.field(static=True, default=1)
    burn_in: int = eqx.field(static=True, default=0)
    init_std: float | Array = math.sqrt(0.001)
    x0: Array | None = None
    truth_model: Model | None = None

    def __check_init__(self):
        if self.n_cycles < 1:
            raise ValueError(f"n_cycles must be >= 1, got {self.n_cycles}")
        if self.obs_every < 1:
            raise ValueError(f"obs_every must be >= 1, got {self.obs_every}")
        if not 0 <= self.burn_in < self.n_cycles:
            raise ValueError(
                f"burn_in must be in [0, n_cycles), got {self.burn_in} with n_cycles={self.n_cycles}"
            )
        if is_concrete(self.init_std) and not float(self.init_std) >= 0:
            raise ValueError(f"init_std must be >= 0, got {self.init_std}")
        self.obs.operator.check(self.model.dim)

    @property
    def center(self) -> Float[Array, " n"]:
        return self.model.x0 if self.x0 is None else jnp.asarray(self.x0)


class TwinData(NamedTuple):
    """Truth and observations of a twin experiment."""

    truth0: Float[Array, " n"]  # initial true state
    truth: Float[Array, "K n"]  # true state at each observation time
    observations: ObservationSeries


class TwinResult(NamedTuple):
    """Outcome of :func:`twin_experiment`: the driver's final state and history, time means
    after the burn-in, the run status (:func:`jaxda.assimilate.run_status`) and the data
    (``None`` for a streaming run, which stores no truth or observations)."""

    state: Any
    history: History
    rmse_analysis: Float[Array, ""]
    spread_analysis: Float[Array, ""]
    rmse_forecast: Float[Array, ""]
    status: Array
    data: TwinData | None


def simulate(key: Array, setup: TwinSetup) -> TwinData:
    """Draw the initial truth, run the truth model and observe every ``obs_every`` steps."""
    k0, kmodel, kobs = jax.random.split(key, 3)
    x0 = setup.center
    truth0 = x0 + setup.init_std * jax.random.normal(k0, x0.shape, x0.dtype)
    model = setup.model if setup.truth_model is None else setup.truth_model
    states = trajectory(kmodel, model, truth0, setup.n_cycles * setup.obs_every)
    truth = states[setup.obs_every - 1 :: setup.obs_every]
    noise = setup.obs.noise.sample(kobs, (setup.n_cycles,)).astype(truth.dtype)
    ys = jax.vmap(setup.obs.operator)(truth) + noise
    series = _series(ys, setup.obs, n_steps=setup.obs_every, dt=setup.model.dt)
    return TwinData(truth0, truth, series)


def twin_stream(key: Array, setup: TwinSetup):
    r"""The truth and its observations of a twin experiment as a generator for
    :func:`jaxda.assimilate.assimilate_stream`: one observation time per call, nothing stored.

    Returns ``(generate, truth0, inputs)``: ``generate(x, input_k) -> (x_k, y_k, x_k)``
    advances the truth ``obs_every`` steps of the truth model and observes it,
    ``y_k = H(x_k) + ε_k``; ``truth0`` is the initial truth; ``inputs`` are the per-time keys
    (``O(K)`` keys, no state-sized array).

    Keys: ``k0, k_model, k_obs = split(key, 3)`` as in :func:`simulate`, so the initial truth
    and the whole truth trajectory (model noise included: ``split(k_model, K·obs_every)``,
    one key per model step) are those of :func:`simulate` with the same key. The observation
    noise of time ``k`` is drawn from ``split(k_obs, K)[k]``, one key per time (a streaming
    run cannot draw all ``K × m`` values at once as :func:`simulate` does), so the noise
    values differ from :func:`simulate`'s draw while having the same distribution.

    Examples:
        >>> import jax
        >>> setup = sakov2008(n=10, n_cycles=5, burn_in=0)
        >>> generate, x0, inputs = twin_stream(jax.random.key(0), setup)
        >>> x1, y1, _ = generate(x0, jax.tree.map(lambda a: a[0], inputs))
        >>> bool(jnp.allclose(x1, simulate(jax.random.key(0), setup).truth[0])), y1.shape
        (True, (10,))
    """
    k0, kmodel, kobs = jax.random.split(key, 3)
    x0 = setup.center
    truth0 = x0 + setup.init_std * jax.random.normal(k0, x0.shape, x0.dtype)
    model = setup.model if setup.truth_model is None else setup.truth_model
    K, s = setup.n_cycles, setup.obs_every
    model_keys = jax.random.split(kmodel, K * s).reshape(K, s) if model.stochastic else None
    inputs = (model_keys, jax.random.split(kobs, K))
    obs = setup.obs

    def generate(x, inp):
        keys, k_obs = inp
        x, _ = jax.lax.scan(lambda x, k: (model.step(k, x), None), x, keys, length=s)
        y = obs.operator(x) + obs.noise.sample(k_obs).astype(x.dtype)
        return x, y, x

    return generate, truth0, inputs


def initial_ensemble(key: Array, setup: TwinSetup, n_members: int) -> Float[Array, "N n"]:
    """Members drawn from ``N(x0, init_std² I)`` (DAPPER's ``X0.sample(N)``)."""
    if not isinstance(n_members, int) or n_members < 1:
        raise ValueError(f"n_members must be a positive int, got {n_members!r}")
    x0 = setup.center
    return x0 + setup.init_std * jax.random.normal(key, (n_members, *x0.shape), x0.dtype)


def time_mean(series: Float[Array, " K"], burn_in: int) -> Float[Array, ""]:
    """Mean over times ``burn_in..K-1``."""
    return jnp.mean(series[burn_in:])


def twin_experiment(
    key: Array,
    setup: TwinSetup,
    method: Method,
    n_members: int,
    *,
    record: Callable[[Any], Any] | None = None,
    data: TwinData | None = None,
    initial: Float[Array, "N n"] | None = None,
    streaming: bool = False,
    record_every: int = 1,
) -> TwinResult:
    """Simulate truth and observations, draw the initial ensemble, run
    :func:`jaxda.assimilate.assimilate` and score it.

    ``key`` and the setup's leaves may be traced: ``jax.vmap`` over seeds or parameters and
    ``jax.jit`` the whole call. ``data`` reuses a simulated truth (e.g. to compare methods on
    the same observations); ``initial`` is an initial ensemble of ``n_members`` drawn elsewhere
    (e.g. from a climatology) instead of :func:`initial_ensemble`.

    ``streaming=True`` propagates the truth and draws each observation inside the filter's
    scan (:func:`twin_stream`, :func:`jaxda.assimilate.assimilate_stream`): no ``(K, n)``
    truth and no ``(K, m)`` observations are stored, so ``n = 10⁵``–``10⁶`` runs over
    thousands of cycles fit in memory; ``result.data`` is then ``None``. The truth is that of
    the stored run with the same key; the observation noise is drawn per time
    (:func:`twin_stream`), so the scores differ from the stored run's by sampling error only.
    ``record_every=k`` stores ``record(state)`` at every ``k``-th time only (see
    :func:`jaxda.assimilate.assimilate`); the scores use every time.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.assimilate import with_inflation
        >>> from jaxda.ensemble import enkf
        >>> setup = sakov2008(n_cycles=40, burn_in=10)
        >>> run = jax.jit(lambda k, a: twin_experiment(k, setup, with_inflation(enkf(), a), 20))
        >>> res = jax.vmap(run, in_axes=(0, None))(jax.random.split(jax.random.key(0), 3), 1.05)
        >>> res.rmse_analysis.shape
        (3,)
        >>> big = twin_experiment(jax.random.key(0), sakov2008(n_cycles=40, burn_in=10),
        ...                       with_inflation(enkf(), 1.05), 20, streaming=True)
        >>> big.data is None, big.history.rmse_analysis.shape
        (True, (40,))
    """
    k_data, k_init, k_run = jax.random.split(key, 3)
    if streaming and data is not None:
        raise ValueError("data= is a stored truth: give it without streaming=True")
    if data is None and not streaming:
        data = simulate(k_data, setup)
    if initial is None:
        E0 = initial_ensemble(k_init, setup, n_members)
    elif jnp.shape(initial)[0] != n_members:
        raise ValueError(f"initial has {jnp.shape(initial)[0]} members, n_members={n_members}")
    else:
        E0 = initial
    if streaming:
        generate, truth0, inputs = twin_stream(k_data, setup)
        state, hist, _ = assimilate_stream(
            k_run,
            method,
            setup.model,
            setup.obs,
            E0,
            generate,
            truth0,
            inputs,
            n_steps=setup.obs_every,
            record=record,
            record_every=record_every,
        )
    else:
        assert data is not None
        state, hist = assimilate(
            k_run,
            method,
            setup.model,
            data.observations,
            E0,
            truth=data.truth,
            record=record,
            record_every=record_every,
        )
    b = setup.burn_in
    assert hist.rmse_analysis is not None and hist.rmse_forecast is not None
    return TwinResult(
        state=state,
        history=hist,
        rmse_analysis=time_mean(hist.rmse_analysis, b),
        spread_analysis=time_mean(hist.spread_analysis, b),
        rmse_forecast=time_mean(hist.rmse_forecast, b),
        status=run_status(hist, burn_in=b).status,
        data=data,
    )


def sakov2008(
    n: int = 40,
    n_cycles: int = 10_400,
    burn_in: int = 400,
    obs_std: float = 1.0,
    obs_every: int = 1,
) -> TwinSetup:
    """Lorenz-96 setup of Sakov & Oke (2008) as in DAPPER's ``Lorenz96/sakov2008``.

    ``n=40`` variables, ``F=8``, ``dt=0.05``, all variables observed every step with
    ``R = I``, initial truth and ensemble from ``N(e_0, 0.001 I)``. Default burn-in 400
    cycles (20 time units, DAPPER's ``BurnIn=2*Tplot``). Documented scores (DAPPER): EnKF
    N=40 infl 1.06 about 0.22, ETKF N=24 infl 1.013 about 0.18-0.20, LETKF N=7 infl 1.04
    radius 4 about 0.22. With ``obs_every=12`` (DAPPER's ``dko = 12``): iEnKS N=25 lag 1
    infl 1.2 rot about 0.46; with ``obs_every=4`` (``dto = 0.2``): 4D-Var lag 1/2/4 with
    ``xB`` 0.2/0.1/0.02 about 0.46/0.39/0.37.
    """
    return TwinSetup(
        model=Lorenz96(n=n, forcing=8.0, dt=0.05),
        obs=observation_model(identity(n), obs_std=obs_std),
        n_cycles=n_cycles,
        obs_every=obs_every,
        burn_in=burn_in,
        init_std=math.sqrt(0.001),
    )


def sakov2012(
    n_cycles: int = 2_000, burn_in: int = 200, obs_every: int = 25, obs_std: float = math.sqrt(2.0)
) -> TwinSetup:
    """Lorenz-63 as DAPPER's ``Lorenz63/sakov2012``: ``dt=0.01``, all variables observed every
    ``obs_every=25`` steps (``dtObs = 0.25``) with ``R = 2 I``, initial truth and ensemble from
    ``N(x0, 2 I)``. Documented scores (DAPPER): EnKF N=10 infl 1.02 rot about 0.6-0.7 (ETKF),
    iEnKS about 0.31."""
    return TwinSetup(
        model=Lorenz63(dt=0.01),
        obs=observation_model(identity(3), obs_std=obs_std),
        n_cycles=n_cycles,
        obs_every=obs_every,
        burn_in=burn_in,
        init_std=math.sqrt(2.0),
    )
