"""The rank counts (against a numpy reference) and the figure of a run (its axes, labels,
colour bars, burn-in marks and rank histogram), on a small Lorenz-96 twin."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import assimilate, ensemble_mean, with_inflation
from jaxda.ensemble import etkf
from jaxda.experiments import initial_ensemble, sakov2008, simulate
from jaxda.metrics import rank_counts, rank_histogram

K, BURN_IN, N, n = 40, 10, 8, 12


def _reference_ranks(truth, ensemble):
    """Rank of the truth of each variable by sorting the members (an independent route:
    the insertion point of the truth among the sorted members, ties to the left)."""
    E = np.sort(np.asarray(ensemble), axis=0)
    t = np.asarray(truth)
    ranks = [np.searchsorted(E[:, j], t[j], side="left") for j in range(t.size)]
    return np.bincount(ranks, minlength=E.shape[0] + 1)


def test_rank_counts_against_numpy_reference_and_extremes():
    E = jax.random.normal(jax.random.key(0), (N, 50))
    truth = jax.random.normal(jax.random.key(1), (50,))
    # variable 0: below every member; variable 1: above every member
    truth = truth.at[0].set(E[:, 0].min() - 1.0).at[1].set(E[:, 1].max() + 1.0)
    counts = np.asarray(rank_counts(truth, E))
    assert counts.shape == (N + 1,) and counts.sum() == 50
    np.testing.assert_array_equal(counts, _reference_ranks(truth, E))
    only_low = rank_counts(jnp.full(3, -10.0), E[:, :3])
    only_high = rank_counts(jnp.full(3, 10.0), E[:, :3])
    assert only_low.tolist() == [3] + [0] * N
    assert only_high.tolist() == [0] * N + [3]


def test_rank_counts_per_time_sum_to_the_pooled_histogram_in_a_scan():
    Es = jax.random.normal(jax.random.key(2), (30, N, n))
    truths = jax.random.normal(jax.random.key(3), (30, n))

    def body(total, x):
        t, E = x
        return total + rank_counts(t, E), None

    total, _ = jax.lax.scan(body, jnp.zeros(N + 1, jnp.int32), (truths, Es))
    per_time = jax.vmap(rank_counts)(truths, Es)
    ref = sum(_reference_ranks(t, E) for t, E in zip(truths, Es, strict=True))
    np.testing.assert_array_equal(total, ref)
    np.testing.assert_array_equal(per_time.sum(axis=0), ref)
    np.testing.assert_array_equal(rank_histogram(Es, truths), ref)


def test_rank_counts_ties_and_non_finite_values():
    # a collapsed ensemble equal to the truth: every rank ties with all N members
    m = 20_000
    E = jnp.zeros((N, m))
    truth = jnp.zeros(m)
    assert rank_counts(truth, E).tolist() == [m] + [0] * N  # ties count as not below
    counts = np.asarray(rank_counts(truth, E, key=jax.random.key(4)))
    assert counts.sum() == m
    expected = m / (N + 1)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 26.1  # chi2(8) 99.9% quantile; random tie-breaking is uniform on 0..N
    # partial ties: 3 members equal, 2 below -> ranks 2..5 only
    E2 = jnp.array([[-1.0], [-1.0], [0.0], [0.0], [0.0], [1.0], [1.0], [1.0]]) * jnp.ones((1, 4000))
    c2 = np.asarray(rank_counts(jnp.zeros(4000), E2, key=jax.random.key(5)))
    assert c2[[0, 1, 6, 7, 8]].sum() == 0 and np.all(c2[2:6] > 800)
    # a NaN truth or member is not counted
    E3 = jax.random.normal(jax.random.key(6), (N, 5)).at[2, 1].set(jnp.nan)
    t3 = jnp.zeros(5).at[3].set(jnp.nan)
    assert int(rank_counts(t3, E3).sum()) == 3


def test_rank_counts_validates_shapes():
    with pytest.raises(ValueError, match="truth"):
        rank_counts(jnp.zeros(4), jnp.zeros((N, 5)))
    with pytest.raises(ValueError, match="ensemble"):
        rank_counts(jnp.zeros(5), jnp.zeros(5))


@pytest.fixture(scope="module")
def run():
    setup = sakov2008(n=n, n_cycles=K, burn_in=BURN_IN)
    data = simulate(jax.random.key(0), setup)
    E0 = initial_ensemble(jax.random.key(1), setup, N)
    _, hist = assimilate(
        jax.random.key(2),
        with_inflation(etkf(), 1.02),
        setup.model,
        data.observations,
        E0,
        truth=data.truth,
        record=ensemble_mean,
        store_ensembles=True,
        ranks=True,
    )
    ranks = jax.vmap(rank_counts)(data.truth, hist.ensemble_analysis)
    # the driver's per-time counts (no ensemble stored) are those of the stored ensembles
    np.testing.assert_array_equal(hist.rank_counts, ranks)
    return hist, np.asarray(data.truth), ranks


def _panels(fig):
    """The figure's axes by title, and its colour bars' labels, in drawing order."""
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    return {ax.get_title(): ax for ax in axes}, axes, bars


def test_plot_assimilation_axes_labels_and_panels(run, tmp_path):
    pytest.importorskip("matplotlib")
    from jaxda.plotting import plot_assimilation

    hist, truth, ranks = run
    path = tmp_path / "run.png"
    fig = plot_assimilation(
        hist, truth=truth, mean=hist.record, burn_in=BURN_IN, ranks=ranks, title="L96", path=path
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_title, axes, bars = _panels(fig)
    hov = ["truth", "analysis mean", "analysis error"]
    assert list(by_title)[:3] == hov
    assert len(axes) == 5
    assert bars == ["state value", "state value", "mean − truth"]
    for ax in axes:
        assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    t = np.asarray(hist.time)
    t_burn = 0.5 * (t[BURN_IN - 1] + t[BURN_IN])
    for name in hov:
        ax = by_title[name]
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("state index", "model time")
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "end of burn-in"]
        assert line.get_ydata()[0] == pytest.approx(t_burn)
    # the error panel shows mean − truth (no thinning at K = 40) on a colour scale centred at 0
    mesh = by_title["analysis error"].collections[0]
    np.testing.assert_allclose(
        np.asarray(mesh.get_array()).reshape(K, n), np.asarray(hist.record) - truth
    )
    assert mesh.norm.vmin == pytest.approx(-mesh.norm.vmax) and mesh.norm.vmax > 0
    assert mesh.get_cmap().name == "RdBu_r"

    scores = by_title["RMSE of the mean and ensemble spread"]
    assert (scores.get_xlabel(), scores.get_ylabel()) == ("model time", "RMSE, spread")
    legend = [tx.get_text() for tx in scores.get_legend().get_texts()]
    assert "burn-in" in legend and any(s.startswith("analysis RMSE (mean ") for s in legend)
    mean_rmse = float(np.mean(np.asarray(hist.rmse_analysis)[BURN_IN:]))
    assert f"analysis RMSE (mean {mean_rmse:.3g})" in legend
    (span,) = scores.patches
    x0, x1 = span.get_x(), span.get_x() + span.get_width()
    assert (x0, x1) == pytest.approx((t[0], t_burn))

    hist_ax = by_title["rank histogram after burn-in"]
    assert hist_ax.get_xlabel() == f"rank of the truth among {N} members"
    assert hist_ax.get_ylabel() == "frequency"
    heights = [p.get_height() for p in hist_ax.patches]
    assert len(heights) == N + 1
    assert sum(heights) == (K - BURN_IN) * n
    np.testing.assert_array_equal(heights, np.asarray(ranks)[BURN_IN:].sum(axis=0))
    (flat,) = hist_ax.get_lines()
    assert flat.get_ydata()[0] == pytest.approx((K - BURN_IN) * n / (N + 1))


def test_plot_panels_only_for_given_data_and_thinning(run):
    pytest.importorskip("matplotlib")
    from jaxda.plotting import plot_assimilation

    hist, truth, ranks = run
    # no truth array and a run without one: no truth/error panels, no RMSE; no ranks: no histogram
    no_truth = hist._replace(rmse_analysis=None, rmse_forecast=None)
    every = 4
    fig = plot_assimilation(no_truth, mean=hist.record[every - 1 :: every], record_every=every)
    by_title, _, bars = _panels(fig)
    assert list(by_title) == ["analysis mean", "ensemble spread"]
    assert bars == ["state value"]
    assert by_title["ensemble spread"].get_ylabel() == "spread"
    assert not by_title["ensemble spread"].patches  # no burn-in to shade
    mesh = by_title["analysis mean"].collections[0]
    assert np.asarray(mesh.get_array()).size == (K // every) * n
    # a long run shows at most max_rows time rows: the last ones, or every s-th time
    fig = plot_assimilation(hist, truth=truth, mean=hist.record, burn_in=BURN_IN, max_rows=7)
    by_title, _, _ = _panels(fig)
    mesh = by_title["truth"].collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(-1, n), truth[-7:])
    assert not by_title["truth"].get_lines()  # the burn-in is not in the window shown
    assert fig.subfigs[0].get_suptitle() == (
        f"Hovmöller panels: the last 7 of the {K} observation times"
    )
    fig = plot_assimilation(hist, truth=truth, max_rows=7, rows="stride")
    by_title, _, _ = _panels(fig)
    stride = int(np.ceil(K / 7))
    mesh = by_title["truth"].collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(-1, n), truth[::stride])
    # the total counts (N+1,) are accepted as well; forecast curves on request
    fig = plot_assimilation(hist, ranks=np.asarray(ranks).sum(axis=0), forecast=True)
    by_title, _, _ = _panels(fig)
    assert list(by_title) == ["RMSE of the mean and ensemble spread", "rank histogram"]
    labels = [tx.get_text() for tx in by_title["rank histogram"].get_legend().get_texts()]
    assert labels == [f"uniform: {K * n} values / {N + 1}"]
    scores = [tx.get_text() for tx in fig.axes[0].get_legend().get_texts()]
    assert [s.split(" (")[0] for s in scores] == [
        "analysis RMSE",
        "analysis spread",
        "forecast RMSE",
        "forecast spread",
    ]


def test_plot_assimilation_validates_inputs(run):
    pytest.importorskip("matplotlib")
    from jaxda.plotting import plot_assimilation

    hist, truth, ranks = run
    with pytest.raises(ValueError, match="burn_in"):
        plot_assimilation(hist, burn_in=K)
    with pytest.raises(ValueError, match="truth"):
        plot_assimilation(hist, truth=truth[1:])
    with pytest.raises(ValueError, match="mean"):
        plot_assimilation(hist, mean=hist.record, record_every=2)
    with pytest.raises(ValueError, match="ranks"):
        plot_assimilation(hist, ranks=ranks[1:])
    with pytest.raises(ValueError, match="rows"):
        plot_assimilation(hist, truth=truth, rows="first")
    with pytest.raises(TypeError, match="History"):
        plot_assimilation(truth)
