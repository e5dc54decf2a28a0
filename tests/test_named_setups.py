"""DAPPER's named setups (jaxda.experiments.SETUPS): every documented tuning builds through the
CLI, and a short CLI run of each setup with its documented method lands in the statistical band
of the documented score.

Bands: documented score ± max(3 sd, 10 % of the score), sd the seed-to-seed standard deviation
of the same run length measured with `jaxda run --setup S --method M --cycles K --burn-in B
--seed {0..3} --x64` (2-core CPU; README "Named setups"). One seed per row here.
"""

import inspect

import numpy as np
import pytest

from jaxda.assimilate import available_methods, method_options
from jaxda.cli import build_method, build_parser, make_setup, run_experiment
from jaxda.experiments import DEFAULT_SETUP, SETUPS

# setup, method, cycles, burn-in, seed-to-seed sd measured at that length (seeds 0-3)
ROWS = [
    ("sakov2008", "etkf", 500, 100, 0.015),  # 0.167 / 0.193 / 0.166
    ("sakov2012", "oi", 400, 50, 0.026),  # 1.275 / 1.231 / 1.230
    ("bocquet2010", "enkf_n", 1280, 400, 0.05),  # 0.435 / 0.469 / 0.545 / 0.433
    ("spantini2019", "letkf", 500, 50, 0.09),  # 0.94 / 1.10 / 0.96
    ("bocquet2019", "oi", 300, 50, 0.003),  # 0.532 / 0.532 / 0.536
]


def test_every_documented_tuning_is_a_registered_method_with_valid_options():
    cli_settings = {"N", "inflation", "rotate"}
    for name, named in SETUPS.items():
        assert inspect.signature(named.build).parameters.keys() >= {"n_cycles", "burn_in"}
        setup = named.build(n_cycles=10, burn_in=0)
        assert setup.n_cycles == 10 and setup.burn_in == 0
        assert 0 <= named.burn_in
        for method, tuning in named.tunings.items():
            assert method in available_methods(), (name, method)
            extra = set(tuning.settings) - cli_settings - set(method_options(method))
            assert not extra, (name, method, extra)
            assert (tuning.score is None) == (tuning.source == "jaxda")
    assert set(DEFAULT_SETUP.values()) <= set(SETUPS)


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_the_cli_builds_each_setup_and_its_documented_methods(name):
    for method in SETUPS[name].tunings:
        if method in ("oi", "climatology"):  # built from a long free run: see the band tests
            continue
        argv = ["run", "--setup", name, "--method", method, "--cycles", "20", "--burn-in", "2"]
        args = build_parser().parse_args(argv)
        setup = make_setup(args)
        assert setup.n_cycles == 20 and setup.burn_in == 2
        method_obj, settings = build_method(args, setup)
        assert callable(method_obj.step)
        documented = SETUPS[name].tunings[method].settings
        if "N" in documented and method not in ("oi", "climatology"):
            assert settings["ensemble_size"] == documented["N"]


@pytest.mark.parametrize(("name", "method", "cycles", "burn_in", "sd"), ROWS)
def test_a_short_cli_run_lands_in_the_documented_band(name, method, cycles, burn_in, sd):
    documented = SETUPS[name].tunings[method].score
    assert documented is not None
    argv = ["run", "--setup", name, "--method", method, "--cycles", str(cycles)]
    argv += ["--burn-in", str(burn_in), "--x64", "--no-compile-cache", "--seed", "0"]
    summary, _ = run_experiment(build_parser().parse_args(argv), progress=False)
    band = max(3 * sd, 0.1 * documented)
    rmse = summary["rmse_analysis"]
    assert np.isfinite(rmse) and abs(rmse - documented) <= band, (rmse, documented, band)
    assert summary["status"] == "SUCCESS"
