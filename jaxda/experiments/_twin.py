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

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..assimilate import History, assimilate, assimilate_stream, run_status
from ..core import Method, is_concrete
from ..models import (
    Distribution,
    Lorenz63,
    Lorenz96,
    Model,
    check_distribution,
    gaussian,
    trajectory,
)
from ..observations import ObservationModel, ObservationSeries, identity, observation_model
from ..observations import observation_series as _series
from ._chronology import Chronology, chronology


class TwinSetup(eqx.Module):
    """A twin experiment (a pytree: its model, noise and initial-distribution parameters are
    leaves; the chronology is static).

    Attributes:
        model: the forecast model (one state; a stochastic model adds its noise ``Q``).
        obs: observation model ``y = H(x) + ε``.
        chronology: the observation times and burn-in (:func:`chronology`, in model time).
        initial: the distribution of the initial truth (DAPPER's ``X0``;
            :func:`jaxda.models.gaussian`, :func:`jaxda.models.empirical`).
        ensemble_initial: the distribution the initial ensemble is drawn from (defaults to
            ``initial``; set it for a misspecified initial uncertainty).
        truth_model: the model that generates the truth (defaults to ``model``; set it for an
            imperfect-model twin: other parameters, other model noise ``Q``).

    The derived counts ``n_cycles``, ``obs_every`` and ``burn_in`` are the chronology's.
    """

    model: Model
    obs: ObservationModel
    chronology: Chronology = eqx.field(static=True)
    initial: Distribution
    ensemble_initial: Distribution | None = None
    truth_model: Model | None = None

    def __check_init__(self):
        if not isinstance(self.chronology, Chronology):
            raise TypeError(
                "chronology must be a jaxda.experiments.Chronology (see chronology()), got "
                f"{type(self.chronology).__name__}"
            )
        n = self.model.dim
        if is_concrete(self.model.dt) and not math.isclose(
            float(self.model.dt), self.chronology.dt, rel_tol=1e-9
        ):
            raise ValueError(
                f"the chronology's dt={self.chronology.dt} differs from the model's "
                f"dt={float(self.model.dt)}"
            )
        check_distribution(self.initial, n, "initial")
        if self.ensemble_initial is not None:
            check_distribution(self.ensemble_initial, n, "ensemble_initial")
        if self.truth_model is not None and self.truth_model.dim != n:
            raise ValueError(f"truth_model has dimension {self.truth_model.dim}, the model {n}")
        self.obs.operator.check(n)

    @property
    def n_cycles(self) -> int:
        return self.chronology.n_cycles

    @property
    def obs_every(self) -> int:
        return self.chronology.obs_every

    @property
    def burn_in(self) -> int:
        return self.chronology.burn_in

    def replace(self, **changes) -> TwinSetup:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def with_cycles(self, n_cycles: int, burn_in: int | None = None) -> TwinSetup:
        """The same setup over ``n_cycles`` observation times (a regular chronology)."""
        return self.replace(chronology=self.chronology.with_cycles(n_cycles, burn_in))


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
    """Draw the initial truth from ``setup.initial``, run the truth model and observe it at
    the chronology's observation times (regular or not)."""
    k0, kmodel, kobs = jax.random.split(key, 3)
    truth0 = setup.initial.sample(k0)
    model = setup.model if setup.truth_model is None else setup.truth_model
    chron = setup.chronology
    states = trajectory(kmodel, model, truth0, chron.n_steps)
    truth = states[np.cumsum(chron.obs_steps) - 1]
    noise = setup.obs.noise.sample(kobs, (chron.n_cycles,)).astype(truth.dtype)
    ys = jax.vmap(setup.obs.operator)(truth) + noise
    n_steps = chron.obs_every if chron.regular else np.asarray(chron.obs_steps)
    series = _series(ys, setup.obs, n_steps=n_steps, dt=setup.model.dt)
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
    if not setup.chronology.regular:
        raise ValueError(
            "a streaming twin needs regular observation times (the chronology is irregular): "
            "use simulate()"
        )
    k0, kmodel, kobs = jax.random.split(key, 3)
    truth0 = setup.initial.sample(k0)
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
    """``n_members`` members drawn from ``setup.ensemble_initial`` (default: the truth's
    ``setup.initial``; DAPPER's ``X0.sample(N)``)."""
    if not isinstance(n_members, int) or n_members < 1:
        raise ValueError(f"n_members must be a positive int, got {n_members!r}")
    dist = setup.initial if setup.ensemble_initial is None else setup.ensemble_initial
    return dist.sample(key, (n_members,))


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
    ranks: bool = False,
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
    :func:`jaxda.assimilate.assimilate`); the scores use every time. ``ranks=True`` also
    records the per-time rank histogram counts (``history.rank_counts``).

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
            ranks=ranks,
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
            ranks=ranks,
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
    ``xB`` 0.2/0.1/0.02 about 0.46/0.39/0.37. Baselines: ``Climatology`` 3.6, ``OptInterp``
    0.95, ``Var3D(xB=0.02)`` 0.41 (jaxda: ``climatology``, ``optimal_interpolation``,
    ``var3d``). Tunings and scores by method: ``SETUPS["sakov2008"]``.
    """
    model = Lorenz96(n=n, forcing=8.0, dt=0.05)
    return TwinSetup(
        model=model,
        obs=observation_model(identity(n), obs_std=obs_std),
        chronology=chronology(0.05, obs_every=obs_every, n_cycles=n_cycles, burn_in=burn_in),
        initial=gaussian(model.x0, math.sqrt(0.001)),
    )


def sakov2012(
    n_cycles: int = 2_000, burn_in: int = 200, obs_every: int = 25, obs_std: float = math.sqrt(2.0)
) -> TwinSetup:
    """Lorenz-63 as DAPPER's ``Lorenz63/sakov2012``: ``dt=0.01``, all variables observed every
    ``obs_every=25`` steps (``dtObs = 0.25``) with ``R = 2 I``, initial truth and ensemble from
    ``N(x0, 2 I)``. DAPPER's chronology ``Chronology(0.01, dko=25, Ko=1000, BurnIn=4·Tplot)``.
    Documented time-mean analysis RMSE (DAPPER): ``Climatology`` 7.6, ``OptInterp`` 1.25,
    ``Var3D(xB=0.1)`` 1.04, ``EnKF('Sqrt', N=10, infl=1.02, rot=True)`` 0.60,
    ``EnKF('PertObs', N=10, infl=1.04)`` 0.65, ``EnKF_N(N=10, rot=True)`` 0.54,
    ``iEnKS('Sqrt', N=10, infl=1.02, rot=True)`` 0.31, ``PartFilt(N=100, reg=2.4, NER=0.3)``
    0.38. Tunings by method: ``SETUPS["sakov2012"]``."""
    model = Lorenz63(dt=0.01)
    return TwinSetup(
        model=model,
        obs=observation_model(identity(3), obs_std=obs_std),
        chronology=chronology(0.01, obs_every=obs_every, n_cycles=n_cycles, burn_in=burn_in),
        initial=gaussian(model.x0, math.sqrt(2.0)),
    )
