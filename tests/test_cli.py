import json

import jax
import numpy as np
import pytest

from jaxda.cli import main

QUIET = ["--no-progress"]


def test_cli_json_summary(capsys):
    argv = ["run", "--method", "etkf", "-N", "20", "--cycles", "300", "--json", "--likelihood"]
    code = main(argv)
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    # about -½ log det(2πe·(HPHᵀ + R)) per cycle: 40 observations, R = I, a small HPHᵀ
    assert (
        -0.5 * 40 * np.log(2 * np.pi * np.e * 1.5)
        < out["log_likelihood"] / 300
        < -0.5 * 40 * np.log(2 * np.pi * np.e)
    )
    for key in (
        "rmse_analysis",
        "spread_analysis",
        "cycles",
        "seconds",
        "compile_seconds",
        "status",
    ):
        assert key in out
    assert out["cycles"] == 300
    assert out["status"] == "SUCCESS"
    assert 0 < out["rmse_analysis"] < 1.0  # all 40 variables observed with R = I
    assert 0.5 < out["innovation_ratio"] < 2.0  # a well-tuned filter is consistent


def test_cli_table_plot_and_netcdf_output(tmp_path, capsys):
    xr = pytest.importorskip("xarray")
    png, nc = tmp_path / "rmse.png", tmp_path / "run.nc"
    argv = ["run", "--model", "lorenz63", "--method", "enkf", "--cycles", "100"]
    assert main([*argv, "--plot", str(png), "--output", str(nc), *QUIET]) == 0
    assert "analysis RMSE" in capsys.readouterr().out
    assert png.stat().st_size > 1000
    with xr.open_dataset(nc) as ds:
        assert ds["ensemble"].shape == (10, 3)
        assert ds["record"].shape == (100, 3)  # the analysis mean at every time
        assert ds["truth"].shape == (100, 3)
        err = np.sqrt(np.mean((ds["record"].values - ds["truth"].values) ** 2, axis=1))
        np.testing.assert_allclose(err, ds["rmse_analysis"].values, rtol=1e-5)
        assert ds.attrs["method"] == "enkf"


def test_cli_plot_figure_for_lorenz96_has_hovmoller_panels_and_labelled_axes(tmp_path):
    """The --plot figure of a Lorenz-96 run: Hovmöller panels of truth, analysis mean and error
    (state index × model time), RMSE/spread over model time with the burn-in marked, and the
    rank histogram of the N members, every axes labelled."""
    from jaxda.cli import build_parser, plot_run, run_experiment

    png = tmp_path / "l96.png"
    argv = ["run", "--model", "lorenz96", "--method", "etkf", "--cycles", "60", "--burn-in"]
    args = build_parser().parse_args([*argv, "12", "--plot", str(png), "--no-compile-cache"])
    summary, outputs = run_experiment(args, progress=False)
    fig = plot_run(args, outputs, summary)
    assert png.stat().st_size > 10_000
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    for title in ("truth", "analysis mean", "analysis error"):
        assert axes[title].get_xlabel() == "state index"
        assert axes[title].get_ylabel() == "model time"
        image = axes[title].collections[0].get_array()
        assert image is not None and image.shape[-1] == 40  # one column per variable
    series = next(ax for t, ax in axes.items() if "RMSE" in t)
    assert series.get_xlabel() == "model time" and "RMSE" in series.get_ylabel()
    labels = series.get_legend_handles_labels()[1]
    assert "burn-in" in labels and any("analysis spread" in lab for lab in labels)
    ranks = next(ax for t, ax in axes.items() if "rank" in t)
    assert ranks.get_xlabel() == "rank of the truth among 24 members"
    assert ranks.get_ylabel() == "frequency" and len(ranks.patches) == 25
    # the histogram counts every (time, variable) pair after the burn-in
    assert sum(p.get_height() for p in ranks.patches) == (60 - 12) * 40
    colorbars = [ax.get_ylabel() for ax in fig.axes if not ax.get_title()]
    assert "state value" in colorbars and "mean − truth" in colorbars


def test_cli_streaming_twin_with_a_thinned_record(tmp_path, capsys):
    """--streaming makes truth and observations inside the run; --record-every thins --output's
    record (its times on their own axis); the scores are those of a twin experiment."""
    xr = pytest.importorskip("xarray")
    nc = tmp_path / "run.nc"
    argv = ["run", "--model", "lorenz63", "--method", "enkf", "--cycles", "60", "--streaming"]
    assert main([*argv, "--record-every", "7", "--output", str(nc), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["status"] == "SUCCESS" and 0.2 < summary["rmse_analysis"] < 1.5
    with xr.open_dataset(nc) as ds:
        assert ds["record"].dims == ("record_time", "state") and ds["record"].shape == (8, 3)
        assert "truth" not in ds  # nothing of size K × n was kept
        time = ds["time"].values
        np.testing.assert_allclose(np.diff(time), time[0])  # times continue across chunks
        np.testing.assert_allclose(ds["record_time"].values, time[6::7][:8])
        assert ds["rmse_analysis"].shape == (60,)


def test_cli_runs_on_an_observation_file(tmp_path, capsys):
    """Real-observation mode: no truth, irregular times and missing values read from a file."""
    import jax.numpy as jnp

    from jaxda.io import save_observations
    from jaxda.observations import observation_model, observation_series, subset

    rng = np.random.default_rng(0)
    y = rng.normal(0.0, 3.0, (60, 20))
    y[rng.random(y.shape) < 0.1] = np.nan
    times = np.cumsum(rng.integers(1, 3, 60)) * 0.05
    om = observation_model(subset(np.arange(0, 40, 2), n=40), obs_std=1.0)
    path = tmp_path / "obs.nc"
    save_observations(str(path), observation_series(jnp.asarray(y), om, times=times, dt=0.05))
    assert main(["run", "--method", "letkf", "--observations", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cycles"] == 60 and out["observations"] == str(path)
    assert "rmse_analysis" not in out  # no truth, no RMSE
    assert np.isfinite(out["spread_analysis"])


def test_cli_plot_failure_keeps_results(tmp_path, capsys, monkeypatch):
    import jaxda.cli as cli

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cli, "plot_run", broken)
    nc = tmp_path / "run.nc"
    argv = ["run", "--model", "lorenz63", "--method", "etkf", "--cycles", "50", "--json"]
    code = main([*argv, "--plot", str(tmp_path / "x.png"), "--output", str(nc)])
    captured = capsys.readouterr()
    assert code == 1
    assert "plot could not be written" in captured.err and "disk full" in captured.err
    assert json.loads(captured.out)["cycles"] == 50  # the summary is still printed
    assert nc.stat().st_size > 0  # and the results written


def test_cli_warns_on_divergence(capsys):
    argv = ["run", "--method", "enkf", "--inflation", "1.0", "--cycles", "400", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["status"] == "DIVERGED" and out["innovation_ratio"] > 4
    assert "diverged" in captured.err
    assert main([*argv, "--fail-on-divergence"]) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--model", "lorenz99"], "invalid choice: 'lorenz99'"),
        (["run", "--method", "magic"], "invalid choice: 'magic'"),
        (["run", "-N", "1", "--cycles", "10"], "ensemble-size must be >= 2"),
        (["run", "--inflation", "0"], "inflation must be positive"),
        (["run", "--cycles", "-5"], "cycles must be >= 1"),
        (["run", "--rtps", "5"], "rtps must be in [0, 1]"),
        (
            ["run", "--model", "lorenz63", "--dim", "5"],
            "--dim does not apply to the setup sakov2012",
        ),
        (["run", "--setup", "bocquet2010", "--obs-std", "2"], "--obs-std does not apply"),
        (["run", "--setup", "bocquet2019", "--model", "lorenz96"], "runs the ks model"),
        (["run", "--cycles", "10", "--duration", "5"], "give --cycles or --duration, not both"),
        (["run", "--obs-interval", "0.07"], "obs_interval=0.07 is not a positive multiple"),
        (["run", "--method", "enkf", "--eps-beta", "0.1"], "--eps-beta does not apply to enkf"),
        (["run", "--method", "enkf", "--reg", "0.5"], "--reg does not apply to enkf"),
        (["run", "--method", "3dvar", "-N", "5"], "--ensemble-size does not apply to 3dvar"),
        (["run", "--method", "etkf", "--lag", "3"], "--lag does not apply to etkf"),
        (["run", "--method", "ienks", "--lag", "1", "--shift", "2"], "shift (2) must not exceed"),
        (["run", "--method", "ienks", "--rtps", "0.5"], "cannot wrap a window method"),
        (["run", "--plot", "/nonexistent/dir/x.png"], "directory /nonexistent/dir does not exist"),
        (["run", "--output", "/nonexistent/dir/x.nc"], "directory /nonexistent/dir does not exist"),
        (["run", "--observations", "/nonexistent.nc"], "file does not exist"),
        (["run", "--cycles", "10", "--burn-in", "10"], "the burn-in must be in [0, 10)"),
        (["run", "--method", "pf", "--reg", "-1", "--cycles", "5"], "reg must be in"),
        (["run", "--record-every", "0"], "--record-every must be a positive integer"),
        (["run", "--cycles", "5", "--record-every", "6"], "exceeds the 5 observation times"),
        (["run", "--streaming", "--observations", "x.nc"], "not with --observations"),
    ],
)
def test_cli_bad_input_gives_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_help_documents_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--model",
        "--method",
        "--localization-radius",
        "--eps-beta",
        "--reg",
        "--output",
        "--observations",
        "--rotate",
        "--setup",
        "--duration",
        "--burn-in-time",
        "--obs-interval",
    ):
        assert flag in text
    assert "(default lorenz96)" in text and "letkf" in text and "spantini2019" in text


@pytest.mark.parametrize(
    "method",
    [
        ["3dvar"],
        ["4dvar", "--lag", "2"],
        ["ienks", "--lag", "2", "--shift", "2"],
        ["4denvar", "--lag", "2", "-N", "8"],
    ],
)
def test_cli_variational_and_window_methods(method, capsys):
    argv = ["run", "--method", *method, "--dim", "10", "--cycles", "20", "--obs-every", "2"]
    assert main([*argv, "--json", *QUIET]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == method[0]
    assert 0 < out["rmse_analysis"] < 2.0
    if method[0] != "3dvar":  # window methods also report their smoother
        assert 0 < out["rmse_smoother"] < 2.0 and out["lag"] == 2


@pytest.mark.parametrize(
    "method", [["ensf"], ["letkf", "--localization-radius", "2", "--inflation", "1.1"]]
)
def test_cli_arctan_observations(method, capsys):
    """Bao et al.'s nonlinear observations from the CLI: every variable seen through arctan."""
    argv = ["run", "--method", *method, "--obs-operator", "arctan", "--obs-std", "0.05"]
    argv += ["--obs-every", "2", "--cycles", "100", "--burn-in", "40", "--json", *QUIET]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["obs_operator"] == "arctan"
    # the attractor's climatological RMSE is ≈ 3.6; the paper's EnSF schedule (ε_β = 0) ≈ 1.1
    assert 0 < out["rmse_analysis"] < 0.4


def test_cli_regularized_particle_filter_and_rotation(capsys):
    argv = ["run", "--model", "lorenz63", "--cycles", "300", "--json", *QUIET]
    assert main([*argv, "--method", "pf"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ensemble_size"] == 100 and out["reg"] == 2.4
    assert 0 < out["rmse_analysis"] < 1.0  # R = 2 I, observations every 0.25 time units
    # the ETKF rotates by default (DAPPER's published tuning is rot=True); --no-rotate turns it off
    assert main([*argv, "--method", "etkf"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rotate"] is True and 0 < out["rmse_analysis"] < 1.2
    assert main([*argv, "--method", "etkf", "--no-rotate"]) == 0
    assert json.loads(capsys.readouterr().out)["rotate"] is False


def test_cli_enkf_n_and_adaptive_inflation(capsys):
    """No inflation value to tune: EnKF-N, and any filter with --adaptive-inflation."""
    argv = ["run", "--model", "lorenz63", "--cycles", "300", "--burn-in", "60", "--json", *QUIET]
    assert main([*argv, "--method", "enkf_n"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ensemble_size"] == 10 and out["rotate"] is True and out["inflation"] == 1.0
    assert 0 < out["rmse_analysis"] < 1.0  # R = 2 I; DAPPER's documented EnKF-N score is 0.54
    assert main([*argv, "--method", "etkf", "--adaptive-inflation"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["inflation"] == "adaptive" and 0 < out["rmse_analysis"] < 1.0
    with pytest.raises(SystemExit):
        main([*argv, "--method", "etkf", "--adaptive-inflation", "--inflation", "1.02"])


@pytest.mark.parametrize(
    ("model", "method", "bound"),
    [("ks", "letkf", 0.5), ("lorenz_uv", "etkf", 0.6)],
)
def test_cli_new_models(model, method, bound, capsys):
    """Kuramoto–Sivashinsky (Bocquet 2019) and two-scale Lorenz-96 (Wilks 2005) from the CLI with
    their published tunings (short runs: documented scores 0.11 and 0.27 after long ones)."""
    argv = ["run", "--model", model, "--method", method, "--cycles", "150", "--x64", "--json"]
    argv += QUIET
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == model and out["status"] == "SUCCESS"
    assert 0 < out["rmse_analysis"] < bound


def test_compile_cache_option_keeps_a_configured_cache(tmp_path):
    """--compile-cache turns JAX's persistent cache on, unless the process set one (the test
    suite's own, here) — which stays."""
    from jaxda.cli import build_parser, use_compile_cache

    configured = jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue]
    assert configured is not None  # tests/conftest.py sets it
    use_compile_cache(str(tmp_path))
    assert jax.config.jax_compilation_cache_dir == configured  # pyright: ignore[reportAttributeAccessIssue]
    args = build_parser().parse_args(["run", "--no-compile-cache"])
    assert args.compile_cache is None
    args = build_parser().parse_args(["run", "--compile-cache", str(tmp_path)])
    assert args.compile_cache == str(tmp_path)
