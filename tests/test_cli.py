import json

import pytest

from jaxda.cli import main


def test_cli_json_summary(capsys):
    code = main(
        ["run", "--model", "lorenz96", "--method", "etkf", "-N", "20", "--cycles", "300", "--json"]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("rmse_analysis", "spread_analysis", "cycles", "seconds", "compile_seconds"):
        assert key in out
    assert out["cycles"] == 300
    assert 0 < out["rmse_analysis"] < 1.0  # all 40 variables observed with R = I


def test_cli_table_and_plot(tmp_path, capsys):
    png = tmp_path / "rmse.png"
    code = main(
        [
            "run",
            "--model",
            "lorenz63",
            "--method",
            "enkf",
            "--cycles",
            "100",
            "--plot",
            str(png),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "analysis RMSE" in capsys.readouterr().out
    assert png.stat().st_size > 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--model", "lorenz99"], "unknown model"),
        (["run", "--method", "magic"], "unknown method"),
        (["run", "-N", "1", "--cycles", "10"], "ensemble-size must be >= 2"),
        (["run", "--inflation", "0"], "inflation must be positive"),
        (["run", "--cycles", "-5"], "cycles must be >= 1"),
    ],
)
def test_cli_bad_input_gives_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("method", ["3dvar", "4dvar"])
def test_cli_variational_methods(method, capsys):
    argv = [
        "run",
        "--method",
        method,
        "--dim",
        "10",
        "--cycles",
        "20",
        "--obs-every",
        "2",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == method
    assert 0 < out["rmse_analysis"] < 2.0


@pytest.mark.parametrize(
    "method", [["ensf"], ["letkf", "--localization-radius", "2", "--inflation", "1.1"]]
)
def test_cli_arctan_observations(method, capsys):
    """Bao et al.'s nonlinear observations from the CLI: every variable seen through arctan."""
    argv = ["run", "--method", *method, "--obs-operator", "arctan", "--obs-std", "0.05"]
    argv += ["--obs-every", "2", "--cycles", "100", "--burn-in", "40", "--json", "--no-progress"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["obs_operator"] == "arctan"
    # the attractor's climatological RMSE is ≈ 3.6; the paper's EnSF schedule (ε_β = 0) ≈ 1.1
    assert 0 < out["rmse_analysis"] < 0.4


def test_cli_regularized_particle_filter(capsys):
    argv = ["run", "--model", "lorenz63", "--method", "pf", "--cycles", "300", "--json"]
    assert main([*argv, "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ensemble_size"] == 100
    assert 0 < out["rmse_analysis"] < 1.0  # R = 4 I, observations every 0.25 time units
    with pytest.raises(SystemExit):
        main([*argv, "--jitter", "-1"])
    assert "jitter" in capsys.readouterr().err
