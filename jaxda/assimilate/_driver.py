r"""The one driver: ``forecast → analysis`` over observation times with one ``lax.scan``.

:func:`assimilate` runs any :class:`jaxda.core.Method` on any :class:`jaxda.models.Model` and
an :class:`jaxda.observations.ObservationSeries`: real observations (no truth needed; scores
against a truth are added when one is given), irregular observation times (a model-step count
per time), missing values (``NaN``), and an observation network that changes from one time to
the next. It returns ``(final_state, history)`` like dynamax's filters.
:func:`assimilate_stream` runs the same cycle on observations made one time at a time inside
the scan (streaming twin experiments: no ``(K, n)`` truth or ``(K, m)`` observations in
memory), and ``record_every`` thins what is stored per time (``record``, ensembles) for long
runs of large states.

Per time ``k`` it records, besides the method's ``info``: the ensemble spread before and after
the analysis, the whitened innovation of the forecast mean and the innovation consistency
ratio

.. math:: χ_k = \frac{\sum_j d_j^2}{\sum_j (1 + s_j^2)},\qquad
    d = R^{-1/2}(y - \overline{H(x^f)}),\quad s_j^2 = \mathrm{var}_i\,[R^{-1/2}H(x^f_i)]_j

over the present observations, whose expectation is 1 for a consistent filter
(``E[d dᵀ] = H P Hᵀ + R``, Desroziers et al. 2005); a time mean far above 1 means the ensemble
spread underestimates its error (divergence, see :func:`run_status`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core import (
    Method,
    Status,
    check_ensemble,
    first_failure,
    is_concrete,
    not_traceable_as_type_error,
)
from ..ensemble import innovation_log_likelihood
from ..metrics import rank_counts, rmse, spread
from ..models import Model, forecast
from ..observations import (
    ObservationModel,
    ObservationSeries,
    fill_missing,
    observation_series,
    observed,
    whitened_residual,
)


class History(NamedTuple):
    """What :func:`assimilate` records at each of the ``K`` observation times.

    Attributes:
        time: observation times.
        info: the method's per-cycle ``info`` (``n_obs``, ``status``... stacked over times).
        spread_forecast, spread_analysis: ``√(mean variance)`` of the ensemble.
        innovation: RMS of the whitened innovation of the forecast mean (present obs).
        innovation_ratio: the consistency ratio ``χ_k`` (module docstring); ``NaN`` when no
            observation is present.
        log_likelihood: ``log p̂(y_k | y_{1:k-1})`` per time (``None`` unless
            ``likelihood=True``): the particle filter's evidence estimate (its
            ``info.log_evidence``), for every other method the Gaussian innovation likelihood of
            the forecast ensemble (:func:`jaxda.ensemble.innovation_log_likelihood`); ``0`` at a
            time with nothing observed.
        rmse_forecast, rmse_analysis: RMSE of the ensemble mean to the truth (``None``
            without a truth).
        record: the stacked output of ``record(state)`` (``None`` without one); with
            ``record_every=k`` only at the times ``k-1, 2k-1, …`` (``K // k`` entries).
        ensemble_forecast, ensemble_analysis: ``(K, N, n)`` ensembles before and after each
            analysis (``None`` unless ``store_ensembles=True``; e.g. for
            :func:`jaxda.ensemble.ensemble_rts`); thinned like ``record``.
        rank_counts: ``(K, N+1)`` per-time counts, over the variables, of the rank of the
            truth among the analysis members (:func:`jaxda.metrics.rank_counts`; ``None``
            unless ``ranks=True`` and a truth is known). Summed after the burn-in they are
            the rank histogram (Anderson 1996; Hamill 2001), with no ensemble stored.
    """

    time: Float[Array, " K"]
    info: Any
    spread_forecast: Float[Array, " K"]
    spread_analysis: Float[Array, " K"]
    innovation: Float[Array, " K"]
    innovation_ratio: Float[Array, " K"]
    log_likelihood: Float[Array, " K"] | None = None
    rmse_forecast: Float[Array, " K"] | None = None
    rmse_analysis: Float[Array, " K"] | None = None
    record: Any = None
    ensemble_forecast: Float[Array, "K N n"] | None = None
    ensemble_analysis: Float[Array, "K N n"] | None = None
    rank_counts: Int[Array, "K N1"] | None = None


def ensemble_mean(state: Any) -> Float[Array, " n"]:
    """Mean of ``state.ensemble``, weighted by ``state.log_weights`` when the state has them."""
    E = state.ensemble
    logw = getattr(state, "log_weights", None)
    if logw is None:
        return jnp.mean(E, axis=0)
    return jax.nn.softmax(logw) @ E


def _spread(state: Any, E: Float[Array, "N n"]) -> Float[Array, ""]:
    """:func:`jaxda.metrics.spread` of ``E``, weighted by ``state.log_weights`` when the state
    has them (``0`` for a single member: 3D-Var, 4D-Var)."""
    if E.shape[0] < 2:
        return jnp.zeros((), E.dtype)
    return spread(E, getattr(state, "log_weights", None))


def innovation_statistics(E, y, obs) -> tuple[Array, Array]:
    """RMS whitened innovation of the forecast mean and the consistency ratio ``χ``."""
    mask = observed(y)
    Y = jax.vmap(obs.operator)(E)
    ybar = jnp.mean(Y, axis=0)
    d = whitened_residual(obs.noise, fill_missing(y, mask) - ybar, mask)
    s = whitened_residual(obs.noise, Y - ybar, mask)
    var = jnp.sum(s**2, axis=0) / max(E.shape[0] - 1, 1)
    n = jnp.sum(mask)
    d2 = jnp.sum(d**2)
    rms = jnp.where(n > 0, jnp.sqrt(d2 / jnp.maximum(n, 1)), jnp.nan)
    ratio = jnp.where(n > 0, d2 / jnp.sum(jnp.where(mask, 1.0 + var, 0.0)), jnp.nan)
    return rms.astype(E.dtype), ratio.astype(E.dtype)


def _validate(method, model, observations, initial, truth):
    if not isinstance(method, Method):
        raise TypeError(
            f"method must be a jaxda.core.Method (init, step), got {type(method).__name__}"
        )
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jaxda.models.Model, got {type(model).__name__}")
    if not isinstance(observations, ObservationSeries):
        raise TypeError(
            "observations must be an ObservationSeries (see jaxda.observations.observation_series), "
            f"got {type(observations).__name__}"
        )
    check_ensemble(initial, "initial ensemble", min_members=1)
    n = model.dim
    if initial.shape[1] != n:
        raise ValueError(f"initial ensemble has {initial.shape[1]} variables, the model {n}")
    _, obs0 = observations.at(0)
    obs0.operator.check(n)
    if observations.varying and is_concrete(obs0.operator.locations):
        for k in range(1, min(len(observations), 64)):
            observations.at(k)[1].operator.check(n)
    if truth is not None and jnp.shape(truth) != (len(observations), n):
        raise ValueError(
            f"truth must have shape (K, n) = {(len(observations), n)}, got {jnp.shape(truth)}"
        )


def _cast_floats(tree, dtype):
    def cast(a):
        if isinstance(a, jax.Array | np.ndarray) and jnp.issubdtype(a.dtype, jnp.floating):
            return a.astype(dtype)
        return a

    return jax.tree.map(cast, tree)


def _check_record_every(record_every, K, store_ensembles, record) -> int:
    """Validate ``record_every`` eagerly (a positive int, at most ``K`` when something is
    recorded)."""
    if (
        not isinstance(record_every, int | np.integer)
        or isinstance(record_every, bool)
        or record_every < 1
    ):
        raise ValueError(f"record_every must be a positive int, got {record_every!r}")
    if record_every > K and (record is not None or store_ensembles):
        raise ValueError(
            f"record_every={record_every} exceeds the number of observation times K={K}: "
            "nothing would be recorded"
        )
    return int(record_every)


def _make_cycle(method, model, *, steps, max_steps, truncate_gradient, likelihood, ranks, dtype):
    """The one assimilation cycle (forecast, diagnostics, analysis) shared by
    :func:`assimilate` and :func:`assimilate_stream`.

    ``cycle(state, k, key, y, n_steps, obs, xt) -> (state, (history_k, Ef))``: ``history_k``
    holds the per-time diagnostics (the ``record`` and ensemble fields are filled later by
    :func:`_scan_cycles`), ``Ef`` is the forecast ensemble.
    """

    def cycle(state, k, k_key, y, n_steps, obs, xt):
        if truncate_gradient is not None:
            cut = k % truncate_gradient == 0
            state = jax.tree.map(
                lambda a: (
                    jnp.where(cut, jax.lax.stop_gradient(a), a)
                    if isinstance(a, jax.Array) and jnp.issubdtype(a.dtype, jnp.inexact)
                    else a
                ),
                state,
            )
        kf, ka = jax.random.split(k_key)
        n = steps if steps is not None else n_steps
        if method.forecast is not None:  # a window method propagates its own window
            state = method.forecast(kf, state, n, None if steps is not None else max_steps)
        elif steps is not None:
            state = state._replace(ensemble=forecast(kf, model, state.ensemble, steps))
        else:
            Ef = forecast(kf, model, state.ensemble, n_steps, max_steps=max_steps)
            state = state._replace(ensemble=Ef)
        Ef = state.ensemble
        spread_f = _spread(state, Ef)
        innov, ratio = innovation_statistics(Ef, y, obs)
        mean_f = ensemble_mean(state)
        state, info = method.step(ka, state, y, obs)
        log_lik = None
        if likelihood:
            evidence = getattr(info, "log_evidence", None)
            log_lik = innovation_log_likelihood(Ef, y, obs) if evidence is None else evidence
        h = History(
            time=jnp.zeros((), dtype),
            info=info,
            spread_forecast=spread_f,
            spread_analysis=_spread(state, state.ensemble),
            innovation=innov,
            innovation_ratio=ratio,
            log_likelihood=log_lik,
            rmse_forecast=None if xt is None else rmse(mean_f, xt),
            rmse_analysis=None if xt is None else rmse(ensemble_mean(state), xt),
            rank_counts=None if (xt is None or not ranks) else rank_counts(xt, state.ensemble),
        )
        return state, (h, Ef)

    return cycle


def _bulk_outputs(record, store_ensembles):
    """``bulk(state, Ef) -> (record, ensemble_forecast, ensemble_analysis)``: the per-time
    outputs of size ``n`` or more (``None`` where not asked for)."""

    def bulk(state, Ef):
        return (
            None if record is None else record(state),
            Ef if store_ensembles else None,
            state.ensemble if store_ensembles else None,
        )

    return bulk


def _scan_cycles(body, carry, xs, K, every, bulk, get_state, keep_forecast):
    """Scan ``body(carry, x_k) -> (carry, (history_k, Ef))`` over the ``K`` times of ``xs``,
    storing ``bulk(state, Ef)`` (``state = get_state(carry)``) at every ``every``-th time.

    ``every == 1``: one scan. Else a nested scan: an outer scan over ``K // every`` blocks,
    an inner scan over the ``every`` cycles of a block (per-time diagnostics stacked), the bulk
    outputs taken once per block from the block's final carry (and the forecast ensemble of
    its last cycle, carried only when ``keep_forecast``); then a plain scan over the
    ``K % every`` remaining cycles with no bulk output. Returns ``(carry, History)``.
    """

    def with_bulk(h, b):
        return h._replace(record=b[0], ensemble_forecast=b[1], ensemble_analysis=b[2])

    if every == 1:

        def step(c, x):
            c, (h, Ef) = body(c, x)
            return c, with_bulk(h, bulk(get_state(c), Ef))

        return jax.lax.scan(step, carry, xs)

    nb, rest = divmod(K, every)

    def inner(c, x):
        c, Ef_prev = c
        c, (h, Ef) = body(c, x)
        return (c, Ef if keep_forecast else Ef_prev), h

    def block(c, xb):
        Ef0 = jnp.zeros_like(get_state(c).ensemble) if keep_forecast else None
        (c, Ef), hs = jax.lax.scan(inner, (c, Ef0), xb)
        return c, (hs, bulk(get_state(c), Ef))

    head = jax.tree.map(lambda a: a[: nb * every].reshape(nb, every, *a.shape[1:]), xs)
    carry, (hs, b) = jax.lax.scan(block, carry, head)
    hs = jax.tree.map(lambda a: a.reshape(nb * every, *a.shape[2:]), hs)
    if rest:
        tail = jax.tree.map(lambda a: a[nb * every :], xs)

        def plain(c, x):
            c, (h, _) = body(c, x)
            return c, h

        carry, ht = jax.lax.scan(plain, carry, tail)
        hs = jax.tree.map(lambda a, t: jnp.concatenate([a, t]), hs, ht)
    return carry, with_bulk(hs, b)


def _initial_state(
    method, model, observations, initial, truth, init_obs, truncate_gradient, likelihood
):
    """Validate a run's inputs eagerly; the method's initial state (or ``initial`` itself when it
    is a state from an earlier run: the run continues it)."""
    if hasattr(initial, "ensemble"):
        state = initial
        _validate(method, model, observations, state.ensemble, truth)
    else:
        _validate(method, model, observations, initial, truth)
        # init_obs None: the observation series' own network when it is fixed
        state = method.init(initial, observations.fixed_obs() if init_obs is None else init_obs)
    if truncate_gradient is not None and (
        not isinstance(truncate_gradient, int | np.integer)
        or isinstance(truncate_gradient, bool)
        or truncate_gradient < 1
    ):
        raise ValueError(
            f"truncate_gradient must be a positive int or None, got {truncate_gradient!r}"
        )
    if likelihood and state.ensemble.shape[0] < 2:
        raise ValueError(
            "likelihood=True needs an ensemble of N >= 2 members (the innovation likelihood "
            f"uses the forecast spread); got N={state.ensemble.shape[0]}"
        )
    return state


def assimilate(
    key: Array,
    method: Method,
    model: Model,
    observations: ObservationSeries,
    initial: Any,
    *,
    truth: Float[Array, "K n"] | None = None,
    record: Callable[[Any], Any] | None = None,
    store_ensembles: bool = False,
    likelihood: bool = False,
    truncate_gradient: int | None = None,
    record_every: int = 1,
    ranks: bool = False,
) -> tuple[Any, History]:
    """Run ``method`` through all observation times: forecast ``n_steps[k]`` model steps, then
    ``method.step`` with that time's values and observation model.

    Args:
        key: PRNG key (split once per time into forecast and analysis keys).
        method: any :class:`jaxda.core.Method` (a registered one, or wrapped).
        model: the forecast model (stochastic models draw their noise from the key).
        observations: the observation series.
        initial: the initial ensemble ``(N, n)`` at the start time, or a state returned by an
            earlier call (to continue a run chunk by chunk).
        truth: optional ``(K, n)`` true states at the observation times (twin experiments).
        record: optional ``record(state) -> pytree`` stored at every time (e.g. the analysis
            mean, ``ensemble_mean``); without it nothing of size ``n`` is stored per time.
        store_ensembles: also store the whole forecast and analysis ensembles at every time
            (``K·N·n`` values each), e.g. for the ensemble RTS smoother.
        likelihood: also record ``history.log_likelihood``, the per-time log-likelihood
            estimate (see :class:`History` and :func:`log_likelihood`); needs ``N >= 2``
            members. Off by default: it costs one more ``N×N`` (or ``m×m``) factorization
            per time.
        truncate_gradient: truncated back-propagation through time: the gradient of anything
            the run returns flows back through at most ``truncate_gradient`` cycles (the state
            is cut from the graph, ``lax.stop_gradient``, at every multiple of that many
            cycles). The forward values are unchanged. For chaotic models whose exact
            gradient over many cycles explodes (fast scales, long windows); ``None``: the
            full gradient.
        record_every: store ``record(state)`` and the stored ensembles only at every
            ``record_every``-th time (see *Thinning* below); the scalar diagnostics stay per
            time.
        ranks: with a truth, also record ``history.rank_counts`` (the per-time rank
            histogram counts of the truth among the analysis members).

    **Thinning** (``record_every = k``): the run is a nested ``lax.scan`` (``⌊K/k⌋`` blocks of
    ``k`` cycles, then the ``K mod k`` remaining cycles). ``history.record``,
    ``ensemble_forecast`` and ``ensemble_analysis`` then have ``⌊K/k⌋`` entries, those of
    the times ``k-1, 2k-1, …`` (the end of each block: ``history.time[k-1::k]``); the
    remaining ``K mod k`` times are assimilated but not recorded. Everything else in the
    history (the scalar diagnostics and ``info``, ``O(K)`` values) is kept at every time, so
    the time means and :func:`run_status` are unchanged. With ``k = 1`` (default) this is the
    plain one-scan run; the forward values are the same for every ``k``.

    Returns:
        ``(final_state, history)`` (:class:`History`). The values are cast to the ensemble's
        dtype, so a float32 ensemble runs in float32.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.ensemble import etkf
        >>> from jaxda.models import Lorenz63
        >>> from jaxda.observations import identity, observation_model, observation_series
        >>> model = Lorenz63()
        >>> y = jnp.full((20, 3), 1.0).at[3, 1].set(jnp.nan)   # one missing value
        >>> obs = observation_series(y, observation_model(identity(3), obs_std=2.0), n_steps=5)
        >>> E0 = model.x0 + jax.random.normal(jax.random.key(0), (10, 3))
        >>> final, hist = assimilate(jax.random.key(1), etkf(), model, obs, E0)
        >>> hist.info.n_obs[3].item(), final.ensemble.shape
        (2, (10, 3))
        >>> _, thin = assimilate(jax.random.key(1), etkf(), model, obs, E0,
        ...                      record=ensemble_mean, record_every=5)
        >>> thin.record.shape, thin.rmse_analysis, thin.spread_analysis.shape
        ((4, 3), None, (20,))
    """
    state = _initial_state(
        method, model, observations, initial, truth, None, truncate_gradient, likelihood
    )
    every = _check_record_every(record_every, len(observations), store_ensembles, record)
    dtype = state.ensemble.dtype
    # One precision for the whole run: the ensemble's (float leaves of the model and the
    # observation model are cast, so a float32 run stays float32 under jax_enable_x64).
    model = _cast_floats(model, dtype)
    observations = _cast_floats(observations, dtype)
    K = len(observations)
    ys = observations.y.astype(dtype)
    obs_seq = observations.obs if observations.varying else None
    cycle = _make_cycle(
        method,
        model,
        steps=observations.steps,
        max_steps=observations.max_steps,
        truncate_gradient=truncate_gradient,
        likelihood=likelihood,
        ranks=ranks,
        dtype=dtype,
    )

    def body(state, inp):
        k, k_key, y, n_steps, obs_k, xt = inp
        obs = observations.obs if obs_k is None else obs_k
        return cycle(state, k, k_key, y, n_steps, obs, xt)

    xs = (
        jnp.arange(K),
        jax.random.split(key, K),
        ys,
        observations.n_steps,
        obs_seq,
        None if truth is None else jnp.asarray(truth, dtype),
    )
    bulk = _bulk_outputs(record, store_ensembles)
    with not_traceable_as_type_error("the model, the observation operator or the method"):
        final, hist = _scan_cycles(body, state, xs, K, every, bulk, lambda s: s, store_ensembles)
    return final, hist._replace(time=observations.time.astype(dtype))


def assimilate_stream(
    key: Array,
    method: Method,
    model: Model,
    obs: ObservationModel,
    initial: Any,
    generate: Callable[[Any, Any], tuple[Any, Array, Array | None]],
    source: Any,
    inputs: Any,
    *,
    n_steps: int = 1,
    record: Callable[[Any], Any] | None = None,
    record_every: int = 1,
    store_ensembles: bool = False,
    likelihood: bool = False,
    truncate_gradient: int | None = None,
    ranks: bool = False,
) -> tuple[Any, History, Any]:
    r""":func:`assimilate` with observations made *inside* the scan, one time at a time.

    At each time ``k`` the generator advances its own state and returns that time's
    observation values (and optionally the truth): ``source, y_k, x_k =
    generate(source, inputs[k])``; then the cycle of :func:`assimilate` (the same code: forecast
    ``n_steps`` model steps, analysis with ``obs``, diagnostics) runs on ``y_k``. Nothing of
    size ``K × m`` or ``K × n`` is held unless asked for (``record``, thinned with
    ``record_every``; see :func:`assimilate`), so a run of ``n = 10⁶`` variables over
    thousands of cycles needs the memory of one cycle. This is the streaming twin experiment
    (:func:`jaxda.experiments.twin_experiment` with ``streaming=True``: the truth is the
    generator's state), and also the way to assimilate observations computed on the fly.

    The filter's keys are those of :func:`assimilate` (``key`` split once per time), so when
    ``generate`` yields the same ``y_k`` and ``x_k`` as stored arrays given to
    :func:`assimilate`, the two runs agree.

    Args:
        key: PRNG key of the filter (the generator draws from its own keys, e.g. in
            ``inputs``).
        method, model: as in :func:`assimilate`.
        obs: the observation model, the same at every time (its ``y`` may contain ``NaN``).
        initial: initial ensemble ``(N, n)`` or a state of an earlier run.
        generate: ``generate(source, input_k) -> (source, y_k (m,), truth_k (n,) or None)``.
        source: the generator's initial state (e.g. the initial true state).
        inputs: pytree whose leaves have a leading axis of length ``K`` (the number of
            times), sliced per time for ``generate`` (e.g. per-time keys).
        n_steps: model steps between two observation times (a positive int).
        record, record_every, store_ensembles, likelihood, truncate_gradient, ranks: as in
            :func:`assimilate`.

    Returns:
        ``(final_state, history, final_source)``; ``history.time`` is ``(k+1)·n_steps·dt``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.ensemble import etkf
        >>> from jaxda.models import Lorenz63
        >>> from jaxda.observations import identity, observation_model
        >>> model = Lorenz63()
        >>> om = observation_model(identity(3), obs_std=1.0)
        >>> def generate(x, key):  # a truth run observed with noise, one time at a time
        ...     for _ in range(5):
        ...         x = model(x)
        ...     return x, x + om.noise.sample(key), x
        >>> E0 = model.x0 + jax.random.normal(jax.random.key(0), (10, 3))
        >>> keys = jax.random.split(jax.random.key(2), 100)
        >>> final, hist, x = assimilate_stream(jax.random.key(1), etkf(), model, om, E0,
        ...                                    generate, model.x0, keys, n_steps=5)
        >>> hist.rmse_analysis.shape, bool(hist.rmse_analysis[50:].mean() < 1.0)
        ((100,), True)
    """
    leaves = jax.tree.leaves(inputs)
    if not leaves or any(jnp.ndim(a) < 1 for a in leaves):
        raise ValueError("inputs must be a pytree of arrays with a leading time axis of length K")
    K = int(jnp.shape(leaves[0])[0])
    if K < 1 or any(jnp.shape(a)[0] != K for a in leaves):
        raise ValueError(
            f"inputs leaves must share a leading time axis K >= 1, got shapes "
            f"{[jnp.shape(a) for a in leaves]}"
        )
    if not isinstance(n_steps, int | np.integer) or isinstance(n_steps, bool) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
    if not isinstance(obs, ObservationModel):
        raise TypeError(
            f"obs must be a jaxda.observations.ObservationModel, got {type(obs).__name__}"
        )
    # One validation path with assimilate: a one-time series stands for the whole stream.
    probe = observation_series(jnp.zeros((1, obs.operator.dim)), obs, n_steps=int(n_steps))
    state = _initial_state(method, model, probe, initial, None, obs, truncate_gradient, likelihood)
    every = _check_record_every(record_every, K, store_ensembles, record)
    dtype = state.ensemble.dtype
    model = _cast_floats(model, dtype)
    obs = _cast_floats(obs, dtype)
    cycle = _make_cycle(
        method,
        model,
        steps=int(n_steps),
        max_steps=int(n_steps),
        truncate_gradient=truncate_gradient,
        likelihood=likelihood,
        ranks=ranks,
        dtype=dtype,
    )

    def body(carry, inp):
        state, src = carry
        k, k_key, x_in = inp
        src, y, xt = generate(src, x_in)
        y = jnp.asarray(y).astype(dtype)
        if jnp.shape(y) != (obs.operator.dim,):
            raise ValueError(
                f"generate must return y of shape (m,) = ({obs.operator.dim},), got {jnp.shape(y)}"
            )
        xt = None if xt is None else jnp.asarray(xt).astype(dtype)
        state, out = cycle(state, k, k_key, y, int(n_steps), obs, xt)
        return (state, src), out

    xs = (jnp.arange(K), jax.random.split(key, K), inputs)
    bulk = _bulk_outputs(record, store_ensembles)
    with not_traceable_as_type_error("the model, the generator or the method"):
        (final, src), hist = _scan_cycles(
            body, (state, source), xs, K, every, bulk, lambda c: c[0], store_ensembles
        )
    time = (jnp.arange(1, K + 1) * int(n_steps) * model.dt).astype(dtype)
    return final, hist._replace(time=time), src


def log_likelihood(
    key: Array,
    method: Method,
    model: Model,
    observations: ObservationSeries,
    initial: Any,
    *,
    truncate_gradient: int | None = None,
) -> Float[Array, ""]:
    r"""The filter's log marginal likelihood ``log p̂(y_{1:K}) = Σ_k log p̂(y_k | y_{1:k-1})``.

    Runs :func:`assimilate` with ``likelihood=True`` and sums ``history.log_likelihood``: the
    Gaussian innovation likelihood of the forecast ensemble for the ensemble Kalman filters
    (:func:`jaxda.ensemble.innovation_log_likelihood`), the evidence estimate for the particle
    filter. Differentiable in everything the run depends on: model parameters (``Lorenz96``'s
    ``forcing``), the model-error ``std`` of :func:`jaxda.models.with_noise` (``Q``), the
    observation noise (``R``), wrapper factors (:func:`with_inflation`) and the initial
    ensemble. The random draws (model noise, perturbed observations) are reparameterized
    (``std · z`` with ``z ~ N(0, I)`` from the key), so with a **fixed** key the function is a
    smooth deterministic objective (common random numbers) that ``jax.grad``, BFGS or optax can
    minimize; this is the auto-differentiable EnKF of Chen, Sanz-Alonso & Willett (2022). Over
    long runs of a chaotic model the exact gradient can explode (a two-scale Lorenz model over
    hundreds of steps): ``truncate_gradient=L`` back-propagates through at most ``L`` cycles
    (the truncated back-propagation those authors use), a biased but usable gradient.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.ensemble import enkf
        >>> from jaxda.models import LinearModel, with_noise
        >>> from jaxda.observations import identity, observation_model, observation_series
        >>> y = jnp.sin(jnp.arange(20.0))[:, None]
        >>> obs = observation_series(y, observation_model(identity(1), obs_std=0.5), n_steps=1)
        >>> E0 = jax.random.normal(jax.random.key(0), (50, 1))
        >>> def nll(a):  # AR(1) coefficient, model noise std 0.3
        ...     model = with_noise(LinearModel(a * jnp.eye(1), jnp.zeros(1)), 0.3)
        ...     return -log_likelihood(jax.random.key(1), enkf(), model, obs, E0)
        >>> bool(jnp.isfinite(jax.grad(nll)(0.5)))
        True
    """
    _, history = assimilate(
        key,
        method,
        model,
        observations,
        initial,
        likelihood=True,
        truncate_gradient=truncate_gradient,
    )
    assert history.log_likelihood is not None
    return jnp.sum(history.log_likelihood)


class RunStatus(NamedTuple):
    """Summary of a run: a :class:`jaxda.core.Status`, the time-mean consistency ratio and,
    with a truth, the ratio of the time-mean analysis RMSE to the time-mean spread (``NaN``
    without a truth or with a single member)."""

    status: Int[Array, ""]
    innovation_ratio: Float[Array, ""]
    error_ratio: Float[Array, ""]


def run_status(
    history: History,
    *,
    burn_in: int = 0,
    divergence_ratio: float = 4.0,
    lost_track_ratio: float = 3.0,
) -> RunStatus:
    """The first failed status of the analyses (e.g. ``NONFINITE``); else ``DIVERGED`` if the
    time-mean innovation consistency ratio after ``burn_in`` exceeds ``divergence_ratio`` (the
    innovations are that many times larger, in variance, than the ensemble spread and ``R``
    explain), or, when a truth is known, if the time-mean analysis RMSE exceeds
    ``lost_track_ratio`` times the time-mean spread (the filter has lost track of the truth
    while its spread says it is confident: with accurate observations of few variables the
    innovation ratio alone can miss it); else ``SUCCESS``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.core import AnalysisInfo
        >>> h = History(jnp.arange(3.0), AnalysisInfo(jnp.ones(3, int), jnp.zeros(3, int)),
        ...             *(jnp.ones(3),) * 3, jnp.array([9.0, 9.0, 9.0]))
        >>> int(run_status(h).status)
        5
    """
    codes = jnp.asarray(history.info.status)
    failed = codes != Status.SUCCESS
    status = jnp.where(jnp.any(failed), codes[jnp.argmax(failed)], Status.SUCCESS)
    r = history.innovation_ratio[burn_in:]
    mean_ratio = jnp.nanmean(r)
    diverged = mean_ratio > divergence_ratio
    spread = jnp.mean(history.spread_analysis[burn_in:])
    if history.rmse_analysis is None:
        error_ratio = jnp.full((), jnp.nan, spread.dtype)
    else:
        err = jnp.mean(history.rmse_analysis[burn_in:])
        error_ratio = jnp.where(spread > 0, err / jnp.where(spread > 0, spread, 1.0), jnp.nan)
        diverged = diverged | (error_ratio > lost_track_ratio)
    status = first_failure(
        status.astype(jnp.int32), jnp.where(diverged, Status.DIVERGED, Status.SUCCESS)
    )
    return RunStatus(status, mean_ratio, error_ratio)


def throw_on_failure(history: History) -> History:
    """Attach a runtime error (``equinox.error_if``) if any analysis was not finite."""
    bad = jnp.any(jnp.asarray(history.info.status) == Status.NONFINITE)
    return history._replace(
        spread_analysis=eqx.error_if(history.spread_analysis, bad, "an analysis became non-finite")
    )
