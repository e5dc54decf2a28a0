r"""Figures of an assimilation run: Hovmöller panels, RMSE and spread, rank histogram.

:func:`plot_assimilation` draws the figure a data-assimilation user looks at first, from the
driver's :class:`jaxda.assimilate.History` and the arrays of the run:

1. Hovmöller panels of a 1-D field (x: the state index, y: the model time): the truth, the
   analysis mean and the analysis error (mean − truth) with a diverging colour map centred at
   0, each with a labelled colour bar, the end of the burn-in marked by a dashed line;
2. the time series of the analysis RMSE (with a truth) and the ensemble spread, the burn-in
   shaded and the time means after it in the legend (a reliable filter has spread ≈ RMSE);
3. the rank histogram of the truth among the ``N`` members (Anderson 1996; Hamill 2001), with
   the flat line a reliable ensemble gives (:func:`jaxda.metrics.rank_counts`).

A panel is drawn only when its data are given: without a truth there is no error panel and no
RMSE, without rank counts no histogram. :func:`plot_scores` and :func:`plot_rank_histogram`
draw panels 2 and 3 alone, in a new figure or in a given matplotlib ``Axes``.

matplotlib is an optional dependency (``pip install jaxda[plot]``), imported only when a
figure is drawn. The figures are ``matplotlib.figure.Figure`` objects made without
``pyplot``: no GUI backend is needed to save them (headless runs, the CLI's ``--plot``), and
they are not kept alive by pyplot's figure manager. In a notebook the returned figure
displays itself; ``path=`` saves it (the format from the file extension).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["plot_assimilation", "plot_rank_histogram", "plot_scores"]

MAX_ROWS = 400
"""Default cap on the number of time rows of a Hovmöller panel."""
MAX_COLUMNS = 1000
"""Default cap on the number of state columns of a Hovmöller panel."""


def _figure(figsize: tuple[float, float]) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "jaxda.plotting needs matplotlib: pip install 'jaxda[plot]' (or matplotlib)"
        ) from e
    return Figure(figsize=figsize, layout="constrained")


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax``, or the axes of a new figure."""
    return ax if ax is not None else _figure(figsize).add_subplot()


def _positive_int(name: str, value: Any, low: int = 1) -> int:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _time(history: Any) -> np.ndarray:
    if not hasattr(history, "time") or not hasattr(history, "spread_analysis"):
        raise TypeError(
            "history must be a jaxda.assimilate.History (from assimilate or twin_experiment), "
            f"got {type(history).__name__}"
        )
    t = np.asarray(history.time, dtype=float)
    if t.ndim != 1 or t.size < 1:
        raise ValueError(f"history.time must be a non-empty 1-D array, got shape {t.shape}")
    return t


def _check_burn_in(burn_in: Any, K: int) -> int:
    if not isinstance(burn_in, int | np.integer) or isinstance(burn_in, bool):
        raise ValueError(f"burn_in must be an int, got {burn_in!r}")
    if not 0 <= burn_in < K:
        raise ValueError(f"burn_in must be in [0, K) = [0, {K}), got {burn_in}")
    return int(burn_in)


def thin(n_rows: int, max_rows: int) -> slice:
    """The stride that keeps at most ``max_rows`` of ``n_rows`` rows: ``slice(None, None, s)``
    with ``s = ceil(n_rows / max_rows)``.

    A Hovmöller panel of a long run keeps every ``s``-th time (the states themselves, not
    averages over ``s`` times, which would smooth the field): a screen or a PNG shows a few
    hundred rows at most, and drawing thousands of rows only makes the file large and slow.

    Examples:
        >>> thin(10_000, 400), thin(300, 400)
        (slice(None, None, 25), slice(None, None, 1))
    """
    return slice(None, None, max(1, math.ceil(n_rows / max_rows)))


def _rows(n_rows: int, max_rows: int, how: str) -> slice:
    """The Hovmöller rows shown of ``n_rows``: all when at most ``max_rows``, else the last
    ``max_rows`` (``how="last"``) or every ``s``-th (``how="stride"``, :func:`thin`)."""
    if n_rows <= max_rows:
        return slice(None)
    return slice(n_rows - max_rows, None) if how == "last" else thin(n_rows, max_rows)


def _burn_in_time(t: np.ndarray, burn_in: int) -> float:
    """The boundary between the burn-in times ``t[:burn_in]`` and the scored ones."""
    return float(0.5 * (t[burn_in - 1] + t[burn_in])) if burn_in > 0 else float(t[0])


def plot_scores(
    history: Any,
    *,
    burn_in: int = 0,
    forecast: bool = False,
    log_scale: bool = True,
    ax: Axes | None = None,
) -> Axes:
    r"""Time series of the analysis RMSE and the ensemble spread, burn-in shaded.

    Draws ``history.rmse_analysis`` (when the run had a truth) as a solid line and
    ``history.spread_analysis`` dashed, in the same colour; ``forecast=True`` adds the
    forecast RMSE and spread in a second colour. The legend gives each series' time mean after
    the burn-in (the scores DAPPER reports as ``rmse.a`` and ``rmv.a``): for a reliable filter
    the spread tracks the RMSE. The burn-in times are shaded grey (legend "burn-in").
    ``log_scale`` draws the y axis in log scale (RMSE decays by decades during the burn-in);
    it falls back to a linear axis when a plotted value is ``≤ 0`` (the zero spread of a
    single-member method).

    Args:
        history: the driver's :class:`jaxda.assimilate.History`.
        burn_in: number of first observation times excluded from the time means and shaded.
        forecast: also draw the forecast RMSE and spread.
        log_scale: log-scale y axis (see above).
        ax: draw into this matplotlib ``Axes`` (default: a new figure).

    Returns:
        The ``Axes`` (x label "model time", y label "RMSE, spread" or "spread", a title).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.assimilate import History
        >>> t = jnp.linspace(0.05, 5.0, 100)                # a History made by hand
        >>> rmse = jnp.where(t < 1.0, 1.0, 0.2)             # 0.2 after t = 1 (20 times)
        >>> h = History(t, None, 0.3 + 0 * t, 0.25 + 0 * t, 1 + 0 * t, 1 + 0 * t,
        ...             rmse_forecast=0.3 + 0 * t, rmse_analysis=rmse)
        >>> ax = plot_scores(h, burn_in=20)
        >>> ax.get_xlabel(), ax.get_ylabel()
        ('model time', 'RMSE, spread')
        >>> [text.get_text() for text in ax.get_legend().get_texts()]
        ['analysis RMSE (mean 0.2)', 'analysis spread (mean 0.25)', 'burn-in']
    """
    t = _time(history)
    K = t.size
    burn_in = _check_burn_in(burn_in, K)
    series = []
    kinds = [("analysis", "C0")] + ([("forecast", "C1")] if forecast else [])
    for kind, colour in kinds:
        rmse = getattr(history, f"rmse_{kind}")
        if rmse is not None:
            series.append((f"{kind} RMSE", np.asarray(rmse, float), colour, "-"))
        spread = np.asarray(getattr(history, f"spread_{kind}"), float)
        series.append((f"{kind} spread", spread, colour, "--"))
    for label, y, _, _ in series:
        if y.shape != (K,):
            raise ValueError(f"history's {label} must have shape (K,) = ({K},), got {y.shape}")
    return _scores(_axes(ax, (8.0, 3.5)), t, series, burn_in, log_scale)


def _scores(ax: Axes, t: np.ndarray, series: list, burn_in: int, log_scale: bool) -> Axes:
    for label, y, colour, style in series:
        mean = float(np.mean(y[burn_in:]))
        lw = 1.0 if style == "-" else 0.9
        ax.plot(t, y, color=colour, ls=style, lw=lw, label=f"{label} (mean {mean:.3g})")
    if burn_in > 0:
        ax.axvspan(t[0], _burn_in_time(t, burn_in), color="0.5", alpha=0.2, lw=0, label="burn-in")
    values = np.concatenate([y for _, y, _, _ in series])
    finite = values[np.isfinite(values)]
    if log_scale and finite.size and np.all(finite > 0):
        from matplotlib.ticker import FormatStrFormatter, FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 0.1, not 10⁻¹
        if finite.max() / finite.min() < 100:  # two decades or less: label 2, 3, 5 × 10^k too

            def minor(v, _):
                mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
                return f"{v:g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""

            ax.yaxis.set_minor_formatter(FuncFormatter(minor))
    has_rmse = any(label.endswith("RMSE") for label, *_ in series)
    ax.set_xlabel("model time")
    ax.set_ylabel("RMSE, spread" if has_rmse else "spread")
    ax.set_title("RMSE of the mean and ensemble spread" if has_rmse else "ensemble spread")
    if t[-1] > t[0]:
        ax.set_xlim(t[0], t[-1])
    # outside the axes, right: a legend inside would hide part of the series
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.grid(True, which="major", alpha=0.3)
    return ax


def _rank_totals(ranks: Any, burn_in: int, K: int | None) -> np.ndarray:
    r = np.asarray(ranks)
    if not np.issubdtype(r.dtype, np.number) or r.ndim not in (1, 2) or r.shape[-1] < 2:
        raise ValueError(
            "ranks must be counts of shape (N+1,) or per-time counts (K, N+1) with N >= 1, "
            f"got shape {r.shape}"
        )
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError("ranks must be finite non-negative counts")
    if r.ndim == 2:
        if K is not None and r.shape[0] != K:
            raise ValueError(
                f"per-time ranks must have K = {K} rows (one per observation time), "
                f"got shape {r.shape}"
            )
        if not 0 <= burn_in < r.shape[0]:
            raise ValueError(f"burn_in must be in [0, {r.shape[0]}), got {burn_in}")
        r = r[burn_in:].sum(axis=0)
    return r


def plot_rank_histogram(
    ranks: Any,
    *,
    burn_in: int = 0,
    ax: Axes | None = None,
) -> Axes:
    r"""Bar plot of the rank histogram, with the flat line of a reliable ensemble.

    ``ranks`` are the counts of the truth's rank among the ``N`` members: either their total
    ``(N+1,)`` (e.g. :func:`jaxda.metrics.rank_histogram`) or the per-time counts ``(K, N+1)``
    of :func:`jaxda.metrics.rank_counts`, which are summed over the times from ``burn_in`` on.
    Bar ``r`` is the number of (time, variable) pairs at which ``r`` members lie below the
    truth; the dashed line is the expected count ``total / (N+1)`` if the truth were one more
    member. A U shape: too little spread; a dome: too much; a slope: a bias (Hamill 2001).

    Args:
        ranks: ``(N+1,)`` counts or ``(K, N+1)`` per-time counts.
        burn_in: first times left out of per-time counts (ignored for totals).
        ax: draw into this matplotlib ``Axes`` (default: a new figure).

    Returns:
        The ``Axes`` (x label "rank of the truth among N members", y label "frequency").

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.metrics import rank_counts
        >>> truth = jax.random.normal(jax.random.key(0), (50, 4))       # K = 50 times, n = 4
        >>> ens = jax.random.normal(jax.random.key(1), (50, 9, 4))      # N = 9 members
        >>> per_time = jax.vmap(rank_counts)(truth, ens)                # (K, N+1)
        >>> ax = plot_rank_histogram(per_time, burn_in=10)
        >>> len(ax.patches), float(sum(p.get_height() for p in ax.patches))   # 40 times × 4
        (10, 160.0)
        >>> ax.get_title(), ax.get_legend().get_texts()[0].get_text()
        ('rank histogram after burn-in', 'uniform: 160 values / 10')
        >>> ax.get_xlabel()
        'rank of the truth among 9 members'
    """
    if not isinstance(burn_in, int | np.integer) or isinstance(burn_in, bool) or burn_in < 0:
        raise ValueError(f"burn_in must be a non-negative int, got {burn_in!r}")
    r = _rank_totals(ranks, int(burn_in), None)
    scope = " after burn-in" if np.ndim(ranks) == 2 and burn_in > 0 else ""
    return _rank_bars(r, _axes(ax, (4.5, 3.5)), scope)


def _rank_bars(r: np.ndarray, ax: Axes, scope: str) -> Axes:
    N = r.size - 1
    total = float(r.sum())
    ax.bar(np.arange(N + 1), r.astype(float), width=0.9, color="C2", alpha=0.8)
    ax.axhline(
        total / (N + 1), color="k", ls="--", lw=1.0, label=f"uniform: {total:.0f} values / {N + 1}"
    )
    ax.set_xlim(-0.6, N + 0.6)
    ax.set_ylim(0.0, 1.3 * max(float(r.max()), total / (N + 1), 1.0))  # room for the legend
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.set_xlabel(f"rank of the truth among {N} members")
    ax.set_ylabel("frequency")
    ax.set_title(f"rank histogram{scope}")
    ax.legend(fontsize="small", loc="upper center")
    return ax


def _hovmoller(ax, t, field, *, title, cmap, vmin, vmax, t_burn, line):
    """One Hovmöller panel (x: state index, y: model time) of ``field`` ``(len(t), n)``."""
    x = np.arange(field.shape[1])
    cols = thin(field.shape[1], MAX_COLUMNS)
    im = ax.pcolormesh(
        x[cols],
        t,
        field[:, cols],
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        shading="nearest",
        rasterized=True,
    )
    if t_burn is not None:
        ax.axhline(t_burn, color=line, ls="--", lw=1.2, label="end of burn-in")
    ax.set_title(title)
    ax.set_xlabel("state index")
    ax.set_ylabel("model time")
    return im


def plot_assimilation(
    history: Any,
    *,
    truth: Any = None,
    mean: Any = None,
    burn_in: int = 0,
    ranks: Any = None,
    record_every: int = 1,
    forecast: bool = False,
    log_scale: bool = True,
    max_rows: int = MAX_ROWS,
    rows: str = "last",
    title: str | None = None,
    path: str | None = None,
    dpi: int = 120,
) -> Figure:
    r"""The figure of an assimilation run: Hovmöller panels, RMSE and spread, rank histogram.

    Top row (a 1-D field such as Lorenz-96's ring of ``n`` variables): Hovmöller panels
    (x: state index, y: model time) of the truth, the analysis mean and the analysis error
    ``mean − truth``. The truth and the mean share one colour scale; the error uses a diverging
    map (``RdBu_r``) centred at 0 whose range is the 99th percentile of ``|error|`` after the
    burn-in (larger burn-in errors saturate; the colour bar's arrows say so). A dashed line
    marks the end of the burn-in.

    A long run shows at most ``max_rows`` time rows, so that the travelling waves stay visible:
    by default (``rows="last"``) the last ``max_rows`` times, a contiguous window of the
    settled filter (400 Lorenz-96 times at ``dt = 0.05`` are 20 time units, about 15 waves
    passing); with ``rows="stride"`` every ``s``-th time over the whole run (:func:`thin`),
    an overview in which the waves alias into noise once ``s·dt`` exceeds the model's
    decorrelation time (Lorenz-96: ``s ≳ 5``). The panels' heading says which times are shown.
    States with more than 1000 variables show every ``s``-th variable (at most 1000 columns).
    For a 2-D field (a flattened grid) the state index runs over the flattened grid, which is
    not what a Hovmöller diagram is for.

    Bottom row: :func:`plot_scores` (RMSE and spread over model time, burn-in shaded) and, with
    ``ranks``, :func:`plot_rank_histogram`.

    A panel is drawn only when its data are given: no ``truth``: no truth and error panels
    (the RMSE still comes from ``history`` when the run had a truth); no ``mean``: no mean and
    error panels; no ``ranks``: no histogram.

    Args:
        history: the driver's :class:`jaxda.assimilate.History` (``time``, spreads, RMSEs).
        truth: ``(K, n)`` true states at the ``K`` observation times.
        mean: ``(K // record_every, n)`` analysis means, e.g. ``history.record`` of a run with
            ``record=jaxda.assimilate.ensemble_mean``.
        burn_in: number of first observation times marked as burn-in and left out of the time
            means, the error colour range and per-time rank counts.
        ranks: rank counts, ``(K, N+1)`` per time (:func:`jaxda.metrics.rank_counts` at every
            time; summed from ``burn_in`` on) or their ``(N+1,)`` total.
        record_every: the ``record_every`` of the run: ``mean[i]`` is the mean at time
            ``(i+1)·record_every − 1``.
        forecast: also plot the forecast RMSE and spread.
        log_scale: log-scale y axis of the RMSE/spread panel (see :func:`plot_scores`).
        max_rows: at most this many time rows per Hovmöller panel.
        rows: ``"last"`` (the last ``max_rows`` times) or ``"stride"`` (every ``s``-th time),
            for runs longer than ``max_rows``.
        title: figure title.
        path: save the figure there (PNG, PDF, SVG... from the extension); no GUI needed.
        dpi: resolution of a saved raster image.

    Returns:
        The ``matplotlib.figure.Figure``; every panel has a title and x and y labels, every
        colour bar a label.

    Examples:
        >>> import jax
        >>> from jaxda.assimilate import with_inflation
        >>> from jaxda.ensemble import etkf
        >>> from jaxda.experiments import sakov2008, twin_experiment
        >>> from jaxda.assimilate import ensemble_mean
        >>> setup = sakov2008(n=10, n_cycles=40, burn_in=10)
        >>> res = twin_experiment(jax.random.key(0), setup, with_inflation(etkf(), 1.02), 12,
        ...                       record=ensemble_mean)
        >>> fig = plot_assimilation(res.history, truth=res.data.truth, mean=res.history.record,
        ...                         burn_in=10)
        >>> [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]
        ['truth', 'analysis mean', 'analysis error', 'RMSE of the mean and ensemble spread']
    """
    t = _time(history)
    K = t.size
    burn_in = _check_burn_in(burn_in, K)
    every = _positive_int("record_every", record_every)
    max_rows = _positive_int("max_rows", max_rows, low=2)
    if rows not in ("last", "stride"):
        raise ValueError(f'rows must be "last" or "stride", got {rows!r}')
    _positive_int("dpi", dpi)
    if every > K:
        raise ValueError(f"record_every={every} exceeds the number of times K={K}")
    n = None
    if truth is not None:
        truth = np.asarray(truth, dtype=float)
        if truth.ndim != 2 or truth.shape[0] != K:
            raise ValueError(
                f"truth must have shape (K, n) with K = {K} observation times, got {truth.shape}"
            )
        n = truth.shape[1]
    t_mean = t[every - 1 :: every][: K // every]
    if mean is not None:
        if isinstance(mean, tuple | list | dict) or not hasattr(mean, "shape"):
            raise ValueError(
                "mean must be the (K // record_every, n) array of analysis means (a run's "
                f"record=ensemble_mean), got {type(mean).__name__}"
            )
        mean = np.asarray(mean, dtype=float)
        if mean.ndim != 2 or mean.shape[0] != t_mean.size or (n is not None and mean.shape[1] != n):
            want = f"({t_mean.size}, {'n' if n is None else n})"
            raise ValueError(
                f"mean must have shape (K // record_every, n) = {want} (K = {K}, "
                f"record_every = {every}), got {mean.shape}"
            )
    if ranks is not None:
        _rank_totals(ranks, burn_in, K)  # validate eagerly, before drawing

    # the Hovmöller rows: the mean's times (and the truth at them) when a mean is given
    panels = []
    if mean is not None:
        n_rows = t_mean.size
        shown = _rows(n_rows, max_rows, rows)
        th = t_mean[shown]
        if truth is not None:
            truth_rows = truth[every - 1 :: every][:n_rows]
            panels.append(("truth", truth_rows[shown]))
        panels.append(("analysis mean", mean[shown]))
        if truth is not None:
            panels.append(("analysis error", (mean - truth_rows)[shown]))
            # the error colour range from the scored times (burn-in errors may saturate)
            after = (np.arange(n_rows) + 1) * every - 1 >= burn_in
            scored = np.abs(mean - truth_rows)[after]
            scored = scored[np.isfinite(scored)]
    elif truth is not None:
        n_rows = K
        shown = _rows(K, max_rows, rows)
        th = t[shown]
        panels.append(("truth", truth[shown]))
    n_top = len(panels)
    fig = _figure((13.0, 8.0 if n_top else 3.8))
    # two subfigures, each with its own layout: the Hovmöller row's colour bars and the
    # scores' legend (outside its axes) do not push each other's columns around
    if n_top:
        split = fig.add_gridspec(2, 1, height_ratios=[1.5, 1.0])
        top, low = fig.add_subfigure(split[0]), fig.add_subfigure(split[1])
    else:
        top, low = None, fig
    if top is not None:
        fields = [f for name, f in panels if name != "analysis error"]
        finite = np.concatenate([f[np.isfinite(f)] for f in fields])
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        t_burn = _burn_in_time(t, burn_in) if burn_in > 0 else None
        if t_burn is not None and not th[0] <= t_burn <= th[-1]:
            t_burn = None  # the burn-in is not in the rows shown
        if th.size < n_rows:
            times = "recorded" if mean is not None and every > 1 else "observation"
            which = f"the last {th.size}" if rows == "last" else f"one in {shown.step}"
            top.suptitle(
                f"Hovmöller panels: {which} of the {n_rows} {times} times", fontsize="medium"
            )
        first = None
        for i, (name, field) in enumerate(panels):
            ax = top.add_subplot(1, n_top, i + 1, sharex=first, sharey=first)
            first = first or ax
            if name == "analysis error":
                lim = float(np.percentile(scored, 99)) if scored.size else 0.0
                if not lim > 0:  # no scored time, or a zero error: the whole panel's range
                    lim = float(np.nanmax(np.abs(field))) if np.any(np.isfinite(field)) else 0.0
                    lim = lim if lim > 0 else 1.0
                style = dict(cmap="RdBu_r", vmin=-lim, vmax=lim, line="k")
                label, extend = "mean − truth", "both"
            else:  # the truth and the mean share one colour scale
                style = dict(cmap="viridis", vmin=vmin, vmax=vmax, line="w")
                label, extend = "state value", "neither"
            im = _hovmoller(ax, th, field, title=name, t_burn=t_burn, **style)
            top.colorbar(im, ax=ax, label=label, extend=extend, pad=0.02, aspect=30)
    gs = low.add_gridspec(1, 3)
    ax_s = low.add_subplot(gs[0, : 2 if ranks is not None else 3])
    plot_scores(history, burn_in=burn_in, forecast=forecast, log_scale=log_scale, ax=ax_s)
    if ranks is not None:
        ax_r = low.add_subplot(gs[0, 2])
        plot_rank_histogram(ranks, burn_in=burn_in if np.ndim(ranks) == 2 else 0, ax=ax_r)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig
