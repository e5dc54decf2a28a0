"""Command-line interface: ``jaxda run`` assimilates with any registered method and prints a
summary (a twin experiment, or real observations read from a file).

Example::

    jaxda run --model lorenz96 --method etkf --ensemble-size 24 --inflation 1.013 --cycles 2000
    jaxda run --model lorenz96 --method letkf --observations obs.nc --output run.nc
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import itertools
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .assimilate import (
    assimilate,
    assimilate_stream,
    available_methods,
    ensemble_mean,
    make_method,
    method_options,
    run_status,
    with_adaptive_inflation,
    with_inflation,
    with_rotation,
    with_rtps,
)
from .core import Status, status_message
from .experiments import (
    DEFAULT_SETUP,
    SETUPS,
    TwinSetup,
    chronology,
    initial_ensemble,
    simulate,
    twin_stream,
)
from .models import smoothed_record
from .observations import from_callable, observation_model, subset

# --model -> its default setup (DEFAULT_SETUP): lorenz96 = DAPPER Lorenz96/sakov2008,
# lorenz63 = Lorenz63/sakov2012, ks = KS/bocquet2019 (Kuramoto–Sivashinsky),
# lorenz_uv = LorenzUV/wilks05 (two-scale Lorenz-96); --setup names any of SETUPS
MODELS = ("lorenz63", "lorenz96", "ks", "lorenz_uv")

# JAX's persistent compilation cache for the CLI's programs (--compile-cache).
DEFAULT_COMPILE_CACHE = os.path.join("~", ".cache", "jaxda", "xla")

# CLI flag -> factory option it sets (only accepted by methods whose factory takes it).
_METHOD_FLAGS = {
    "localization_radius": "--localization-radius",
    "xb": "--xb",
    "eps_alpha": "--eps-alpha",
    "eps_beta": "--eps-beta",
    "reg": "--reg",
    "resample_threshold": "--resample-threshold",
    "resampling": "--resampling",
    "n_steps": "--sampler-steps",
    "lag": "--lag",
    "shift": "--shift",
    "ordering": "--ordering",
    "n_climatology": "--n-climatology",
    "score_checkpoint": "--score-checkpoint",
    "guidance": "--guidance",
    "pairing": "--pairing",
    "t_start": "--t-start",
}

_ENSEMBLE_FREE = ("3dvar", "4dvar")
# baselines (DAPPER's Climatology, OptInterp): a climatology of a free run, no ensemble to tune
_BASELINES = ("climatology", "oi")


def _flag_value(args: argparse.Namespace, flag: str):
    return getattr(args, flag.lstrip("-").replace("-", "_"))


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {text!r}") from None
        if v < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {v}")
        return v

    return parse


def _positive_float(name: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not np.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be positive, got {v}")
        return v

    return parse


def _unit_float(name: str):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not 0.0 <= v <= 1.0:
            raise argparse.ArgumentTypeError(f"{name} must be in [0, 1], got {v}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxda", description="jaxda: data assimilation in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="assimilate with a registered method (twin experiment or real observations)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    methods = available_methods()
    run.add_argument(
        "--model",
        default=None,
        choices=MODELS,
        help="forecast model, run on its default literature setup (default lorenz96)",
    )
    run.add_argument(
        "--setup",
        default=None,
        choices=sorted(SETUPS),
        help="a named literature setup (DAPPER's mods), run with the tuning documented for "
        "the method (see jaxda.experiments.SETUPS)",
    )
    run.add_argument("--method", default="enkf", choices=methods, help="assimilation method")
    run.add_argument(
        "--ensemble-size",
        "-N",
        type=_positive_int("ensemble size"),
        default=None,
        help="members (default: the published tuning for the model/method)",
    )
    run.add_argument(
        "--inflation",
        type=_positive_float("inflation"),
        default=None,
        help="multiplicative inflation of the analysis anomalies (default: published tuning)",
    )
    run.add_argument(
        "--adaptive-inflation",
        action="store_true",
        help="estimate the inflation each cycle from the innovations (with_adaptive_inflation) "
        "instead of a fixed --inflation",
    )
    run.add_argument(
        "--inflation-memory",
        type=_positive_float("inflation-memory"),
        default=None,
        help="--adaptive-inflation: cycles over which the estimate averages (default 1000)",
    )
    run.add_argument(
        "--rtps",
        type=_unit_float("rtps"),
        default=None,
        help="relaxation to prior spread α in [0, 1]",
    )
    run.add_argument(
        "--rotate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random mean-preserving rotation of the analysis anomalies (DAPPER's rot=True; "
        "default: the published tuning)",
    )
    run.add_argument(
        "--cycles",
        type=_positive_int("cycles"),
        default=None,
        help="observation times (default 2000)",
    )
    run.add_argument(
        "--duration",
        type=_positive_float("duration"),
        default=None,
        help="model time of the last observation (DAPPER's T), instead of --cycles",
    )
    run.add_argument(
        "--burn-in",
        type=int,
        default=None,
        help="observation times excluded from time means (default: the setup's, at most cycles/5)",
    )
    run.add_argument(
        "--burn-in-time",
        type=float,
        default=None,
        help="model time up to which the scores leave observation times out (DAPPER's BurnIn), "
        "instead of --burn-in",
    )
    run.add_argument("--seed", type=int, default=0, help="PRNG seed")
    run.add_argument(
        "--obs-every",
        type=_positive_int("obs-every"),
        default=None,
        help="model steps per observation time (default: the setup's, 1 L96, 25 L63, 2 KS, 10 UV)",
    )
    run.add_argument(
        "--obs-interval",
        type=_positive_float("obs-interval"),
        default=None,
        help="model time between observations (DAPPER's dto), instead of --obs-every",
    )
    run.add_argument(
        "--obs-std",
        type=_positive_float("obs-std"),
        default=None,
        help="observation error std θ (default 1 L96 and KS, √2 L63)",
    )
    run.add_argument(
        "--obs-operator",
        default="identity",
        choices=["identity", "arctan"],
        help="observe x or arctan(x) (every variable)",
    )
    run.add_argument(
        "--obs-stride",
        type=_positive_int("obs-stride"),
        default=None,
        help="observe every k-th state variable (2: every other one) instead of all",
    )
    run.add_argument(
        "--dim",
        type=_positive_int("dim"),
        default=None,
        help="state size of lorenz96 (default 40) or ks (grid points, default 128)",
    )
    run.add_argument(
        "--localization-radius",
        type=_positive_float("localization radius"),
        default=None,
        help="LETKF/EnKF Gaspari–Cohn radius (grid units)",
    )
    run.add_argument(
        "--xb",
        type=_positive_float("xb"),
        default=None,
        help="3D/4D-Var: B = xb * C_clim (default 0.02 3D-Var, 0.05 4D-Var)",
    )
    run.add_argument(
        "--n-climatology",
        type=_positive_int("n-climatology"),
        default=None,
        help="3dvar, oi, climatology: model steps of the free run whose statistics are the "
        "climatology (default 20000)",
    )
    run.add_argument(
        "--climatology",
        choices=["free-run", "truth"],
        default="free-run",
        help="oi, climatology: estimate the climatology from a free model run (out of sample), "
        "or from the twin's own truth at the observation times (DAPPER's choice, which its "
        "documented scores use; favourable when the run is short against the mixing time)",
    )
    run.add_argument(
        "--lag",
        type=_positive_int("lag"),
        default=None,
        help="window methods (ienks, 4dvar): window length in observation intervals",
    )
    run.add_argument(
        "--shift",
        type=_positive_int("shift"),
        default=None,
        help="window methods: observation times between analyses (<= --lag)",
    )
    run.add_argument(
        "--eps-alpha",
        type=_positive_float("eps-alpha"),
        default=None,
        help="EnSF: terminal signal scale α(1) (default 0.5)",
    )
    run.add_argument(
        "--eps-beta",
        type=_positive_float("eps-beta"),
        default=None,
        help="EnSF: kernel variance σ(0)², relative to the forecast variance (default 0.5)",
    )
    run.add_argument(
        "--sampler-steps",
        type=_positive_int("sampler-steps"),
        default=None,
        help="EnSF, diffusion_filter: reverse-diffusion steps (default 200 EnSF, "
        "20 diffusion_filter)",
    )
    run.add_argument(
        "--score-checkpoint",
        default=None,
        help="diffusion_filter: directory of a score model trained by jaxda.diffusion.train on "
        "standardized forecast errors (a GaussianResidual for --localization-radius; see "
        "benchmarks/bench_prior_filter_l96.py --ckpt)",
    )
    run.add_argument(
        "--guidance",
        choices=["mmps", "dps", "sda"],
        default=None,
        help="diffusion_filter: likelihood guidance (default mmps)",
    )
    run.add_argument(
        "--pairing",
        choices=["independent", "transport"],
        default=None,
        help="diffusion_filter: i.i.d. posterior draws, or each forecast member carried to the "
        "posterior through the prior's and the posterior's probability-flow ODEs (default "
        "independent)",
    )
    run.add_argument(
        "--t-start",
        type=_unit_float("t-start"),
        default=None,
        help="diffusion_filter: diffusion time the analysis starts from, in (t_min, 1]: below 1 "
        "it starts from the diffused forecast (default 1)",
    )
    run.add_argument(
        "--reg",
        type=float,
        default=None,
        help="PF: regularization (DAPPER's reg): after resampling, Gaussian jitter of covariance "
        "(reg·N^(-1/(n+4)))² × the weighted particle covariance (default 2.4 Lorenz-63)",
    )
    run.add_argument(
        "--resample-threshold",
        type=_unit_float("resample-threshold"),
        default=None,
        help="PF: resample when ESS <= threshold·N (DAPPER's NER; default 0.3 Lorenz-63)",
    )
    run.add_argument(
        "--resampling",
        choices=["systematic", "residual", "stratified", "multinomial"],
        default=None,
        help="PF: resampling scheme (default systematic)",
    )
    run.add_argument(
        "--ordering",
        choices=["random", "sequential"],
        default=None,
        help="ensrf: order in which the observations are assimilated (default random)",
    )
    run.add_argument(
        "--observations",
        default=None,
        help="assimilate observations from this .nc/.npz file (no truth) instead of a twin experiment",
    )
    run.add_argument(
        "--streaming",
        action="store_true",
        help="twin experiment with the truth and observations made inside the run, one time at "
        "a time (no K×n truth in memory: n = 1e5-1e6 over thousands of cycles); scores as usual",
    )
    run.add_argument(
        "--record-every",
        type=int,
        default=1,
        help="store recorded fields (--output's analysis means) every K-th time only (the run is "
        "then cut into chunks at multiples of K: a stochastic method draws other random numbers "
        "than with --record-every 1, with the same statistics)",
    )
    run.add_argument("--x64", action="store_true", help="run in float64")
    run.add_argument(
        "--compile-cache",
        default=os.environ.get("JAXDA_COMPILE_CACHE", DEFAULT_COMPILE_CACHE),
        help="directory of JAX's persistent compilation cache: a later run of the same "
        "experiment loads its compiled programs instead of compiling them (default "
        "$JAXDA_COMPILE_CACHE or ~/.cache/jaxda/xla)",
    )
    run.add_argument(
        "--no-compile-cache",
        dest="compile_cache",
        action="store_const",
        const=None,
        help="do not use the persistent compilation cache",
    )
    run.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    run.add_argument(
        "--likelihood",
        action="store_true",
        help="also report the filter's log-likelihood log p(y_1..y_K) (EnKF innovation "
        "likelihood, PF evidence; needs N >= 2)",
    )
    run.add_argument(
        "--plot",
        default=None,
        help="save a figure to this PNG: Hovmöller panels of truth, analysis mean and error, "
        "RMSE and spread over time (burn-in marked), the rank histogram",
    )
    run.add_argument(
        "--output", default=None, help="write history and final ensemble to this netCDF file"
    )
    run.add_argument(
        "--fail-on-divergence",
        action="store_true",
        help="exit with status 3 when the filter diverges",
    )
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _check_output_path(flag: str, path: str | None) -> None:
    if path is None:
        return
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ValueError(f"{flag} {path}: directory {d} does not exist")
    if not os.access(d, os.W_OK):
        raise ValueError(f"{flag} {path}: directory {d} is not writable")


def _setup_name(args: argparse.Namespace) -> str:
    """The named setup the command line runs: ``--setup``, else ``--model``'s default one."""
    if args.setup is not None:
        family = SETUPS[args.setup].model
        if args.model is not None and args.model != family:
            raise ValueError(
                f"--setup {args.setup} runs the {family} model, not --model {args.model}"
            )
        return args.setup
    return DEFAULT_SETUP[args.model or "lorenz96"]


def _validate(args: argparse.Namespace) -> None:
    method = args.method
    name = _setup_name(args)
    params = inspect.signature(SETUPS[name].build).parameters
    if args.dim is not None and "n" not in params:
        raise ValueError(f"--dim does not apply to the setup {name} (its size is fixed)")
    if args.obs_std is not None and "obs_std" not in params:
        raise ValueError(f"--obs-std does not apply to the setup {name} (its R is fixed)")
    for a, b in (
        ("--cycles", "--duration"),
        ("--burn-in", "--burn-in-time"),
        ("--obs-every", "--obs-interval"),
    ):
        if _flag_value(args, a) is not None and _flag_value(args, b) is not None:
            raise ValueError(f"give {a} or {b}, not both")
    if method in _ENSEMBLE_FREE + _BASELINES:
        kind = (
            "a baseline from the climatology"
            if method in _BASELINES
            else "a deterministic single-state method"
        )
        for flag, v in (
            ("--ensemble-size", args.ensemble_size),
            ("--inflation", args.inflation),
            ("--rtps", args.rtps),
        ):
            if v is not None:
                raise ValueError(f"{flag} does not apply to {method} ({kind})")
        if args.rotate:
            raise ValueError(f"--rotate does not apply to {method}")
        if args.adaptive_inflation:
            raise ValueError(f"--adaptive-inflation does not apply to {method}")
    if args.observations is not None and (
        args.obs_stride is not None or args.obs_operator != "identity"
    ):
        raise ValueError(
            "--obs-stride/--obs-operator describe a twin's observations; a file given with "
            "--observations carries its own operator"
        )
    if args.climatology != "free-run":
        if method not in _BASELINES:
            raise ValueError(f"--climatology applies to {', '.join(_BASELINES)}, not {method}")
        if args.streaming or args.observations is not None:
            raise ValueError(
                "--climatology truth needs a stored twin (no --streaming/--observations)"
            )
    if args.adaptive_inflation and args.inflation is not None:
        raise ValueError(
            "--adaptive-inflation estimates the inflation: do not also give --inflation"
        )
    if args.inflation_memory is not None and not args.adaptive_inflation:
        raise ValueError("--inflation-memory applies with --adaptive-inflation only")
    valid = method_options(method)
    for opt, flag in _METHOD_FLAGS.items():
        if _flag_value(args, flag) is not None and opt not in valid:
            users = sorted(m for m in available_methods() if opt in method_options(m))
            raise ValueError(
                f"{flag} does not apply to {method} (it applies to {', '.join(users)})"
            )
    if args.streaming and args.observations is not None:
        raise ValueError("--streaming makes its own observations: not with --observations")
    if not (isinstance(args.record_every, int) and args.record_every >= 1):
        raise ValueError(f"--record-every must be a positive integer, got {args.record_every}")

    if args.observations is not None and not os.path.exists(args.observations):
        raise ValueError(f"--observations {args.observations}: file does not exist")
    _check_output_path("--plot", args.plot)
    _check_output_path("--output", args.output)


def make_setup(args: argparse.Namespace) -> TwinSetup:
    """The named setup of ``--setup`` (or ``--model``'s default one) with the command line's
    chronology (cycles or duration, burn-in as a count or a model time, observation interval)
    and observation options."""
    name = _setup_name(args)
    named = SETUPS[name]
    kwargs: dict[str, Any] = {}
    if args.dim is not None:
        kwargs["n"] = args.dim
    if args.obs_std is not None:
        kwargs["obs_std"] = args.obs_std
    base = named.build(n_cycles=1, burn_in=0, **kwargs)
    dt = base.chronology.dt
    every = args.obs_every
    if every is None and args.obs_interval is None:
        every = base.obs_every
    params = inspect.signature(named.build).parameters
    documented = args.setup is not None and args.cycles is None and args.duration is None
    if documented:  # --setup alone: the setup's documented chronology
        cycles = params["n_cycles"].default
    else:
        cycles = args.cycles if args.cycles is not None or args.duration is not None else 2000
    chron = chronology(
        dt,
        obs_every=every,
        obs_interval=args.obs_interval,
        n_cycles=cycles,
        duration=args.duration,
    )
    if args.burn_in_time is not None:
        burn = chronology(dt, obs_times=chron.obs_times, burn_in_time=args.burn_in_time).burn_in
    elif args.burn_in is not None:
        burn = args.burn_in
    elif documented:
        burn = params["burn_in"].default
    else:
        burn = min(named.burn_in, chron.n_cycles // 5)
    if not 0 <= burn < chron.n_cycles:
        raise ValueError(
            f"the burn-in must be in [0, {chron.n_cycles}) observation times, got {burn}"
        )
    setup = base.replace(chronology=dataclasses.replace(chron, burn_in=burn))
    if args.obs_operator == "arctan" or args.obs_stride is not None:
        n = setup.model.dim
        if setup.obs.dim != n:
            raise ValueError(
                f"--obs-operator/--obs-stride replace an operator that observes every variable; "
                f"the setup observes {setup.obs.dim} of {n}"
            )
        idx = np.arange(0, n, args.obs_stride or 1)
        if args.obs_operator == "arctan":
            op = from_callable(lambda x: jnp.arctan(x[idx]), idx.size, n=n, locations=idx)
        else:
            op = subset(idx, n=n)
        std = jnp.asarray(setup.obs.noise.std)
        std = std[idx] if std.ndim else std
        setup = setup.replace(obs=observation_model(op, obs_std=std))
    return setup


def build_method(args: argparse.Namespace, setup: TwinSetup, truth=None):
    """The registered method with the CLI's options and wrappers; returns ``(method, settings)``.
    ``truth`` (a stored twin's ``(K, n)`` truth) is the climatology of the baselines with
    ``--climatology truth``."""
    tuning = SETUPS[_setup_name(args)].tunings.get(args.method)
    defaults = dict(tuning.settings) if tuning is not None else {}
    N = args.ensemble_size or defaults.pop("N", 20)
    defaults.pop("N", None)
    inflation = args.inflation if args.inflation is not None else defaults.pop("inflation", 1.0)
    defaults.pop("inflation", None)
    if args.adaptive_inflation:
        inflation = 1.0
    rotate = args.rotate if args.rotate is not None else defaults.pop("rotate", False)
    defaults.pop("rotate", None)
    valid = method_options(args.method)
    options = {k: v for k, v in defaults.items() if k in valid}
    for opt, flag in _METHOD_FLAGS.items():
        v = _flag_value(args, flag)
        if v is not None:
            options[opt] = v
    # window methods (iEnKS) inflate and rotate their window-start ensemble themselves
    own = "inflation" in valid
    if own:
        options["inflation"] = inflation
        if "rotate" in valid:
            options["rotate"] = rotate
    if args.method in _BASELINES and args.climatology == "truth":
        if truth is None:
            raise ValueError(
                "--climatology truth needs a stored twin (not --streaming or --observations)"
            )
        options["sample"] = truth
        options.pop("n_climatology", None)
    elif args.method in _BASELINES:  # the climatology of a free run; a noisy model needs a key
        options["key"] = jax.random.fold_in(jax.random.key(args.seed), 1)
        N = 2 * setup.model.dim  # the method's sigma points, whatever the initial ensemble
    method = make_method(args.method, context={"model": setup.model}, **options)
    if inflation != 1.0 and not own:
        method = with_inflation(method, inflation)
    if args.adaptive_inflation:
        memory = args.inflation_memory or 1000.0
        method = with_adaptive_inflation(method, memory=memory)
    if args.rtps is not None:
        method = with_rtps(method, args.rtps)
    if rotate and "rotate" not in valid:
        method = with_rotation(method)
    if N < 2 and args.method not in _ENSEMBLE_FREE + _BASELINES:
        raise ValueError(f"--ensemble-size must be >= 2 for ensemble methods, got {N}")
    settings = {
        "ensemble_size": N,
        "inflation": "adaptive" if args.adaptive_inflation else inflation,
        "rtps": args.rtps or 0.0,
        "rotate": rotate,
        **{k: v for k, v in options.items() if k not in ("key", "sample")},
    }
    return method, settings


def use_compile_cache(directory: str | None) -> None:
    """Turn on JAX's persistent compilation cache in ``directory`` (``None``: leave it off),
    unless the process already configured one (a caller's own cache wins)."""
    if directory is None or getattr(jax.config, "jax_compilation_cache_dir", None) is not None:
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def run_experiment(args: argparse.Namespace, progress: bool = True) -> tuple[dict, Any]:
    """Run what the parsed arguments describe; return ``(summary, (history, state, data))``."""
    _validate(args)
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    use_compile_cache(args.compile_cache)
    setup = make_setup(args)
    if args.record_every > setup.n_cycles:
        raise ValueError(
            f"--record-every {args.record_every} exceeds the {setup.n_cycles} observation "
            "times: nothing recorded"
        )
    key = jax.random.key(args.seed)
    k_data, k_init, k_run = jax.random.split(key, 3)
    t0 = time.perf_counter()
    stream = None
    if args.observations is not None:
        from .io import load_observations

        series = load_observations(args.observations, dt=setup.model.dt)
        truth = None
        K = len(series)
    elif args.streaming:  # truth and observations made inside the scan (twin_stream)
        series = truth = None
        stream = twin_stream(k_data, setup)
        K = setup.n_cycles
    else:
        data = simulate(k_data, setup)
        series, truth = data.observations, data.truth
        K = len(series)
    method, settings = build_method(args, setup, truth=truth)
    N = settings["ensemble_size"]
    E = initial_ensemble(k_init, setup, N)
    # iEnKS, 4D-Var: also score the smoother (the baselines' forecast only keeps their prior)
    window = method.forecast is not None and args.method not in _BASELINES
    # --plot draws Hovmöller panels of the analysis means and a rank histogram
    record = ensemble_mean if (args.output or (args.plot and not window)) else None
    ranks = bool(args.plot) and not window
    if record is None and window and truth is not None:
        record = smoothed_record
    every = args.record_every

    def chunk_fn(key, state, s, xt):
        return assimilate(
            key,
            method,
            setup.model,
            s,
            state,
            truth=xt,
            record=record,
            likelihood=args.likelihood,
            record_every=every,
            ranks=ranks,
        )

    def stream_fn(key, state, source, inputs):
        assert stream is not None
        return assimilate_stream(
            key,
            method,
            setup.model,
            setup.obs,
            state,
            stream[0],
            source,
            inputs,
            n_steps=setup.obs_every,
            record=record,
            record_every=every,
            likelihood=args.likelihood,
            ranks=ranks,
        )

    chunk = jax.jit(stream_fn if stream is not None else chunk_fn)
    # the same chunks with or without the bar (same keys, same result); chunk boundaries are
    # multiples of --record-every so that every chunk records at the same times
    n_blocks = K // every
    n_chunks = max(1, min(50, n_blocks))
    bounds = np.linspace(0, n_blocks, n_chunks + 1).astype(int) * every
    bounds[-1] = K
    keys = jax.random.split(k_run, n_chunks)
    state = method.init(E, setup.obs if series is None else series.fixed_obs())
    # each piece: (its number of times, the arguments after (key, state))
    if stream is not None:
        pieces = [
            (int(b - a), (jax.tree.map(lambda v, a=a, b=b: v[a:b], stream[2]),))
            for a, b in itertools.pairwise(bounds)
        ]
    else:
        assert series is not None
        pieces = [
            (int(b - a), (series.slice(int(a), int(b)), None if truth is None else truth[a:b]))
            for a, b in itertools.pairwise(bounds)
        ]

    def signature(piece):  # chunks of the same length and static structure share an executable
        return piece[0], jax.tree.structure(piece[1])

    source = None if stream is None else stream[1]

    def call(fn, i, state, source, piece):
        if stream is None:
            state, h = fn(keys[i], state, *piece[1])
            return state, h, None
        return fn(keys[i], state, source, *piece[1])

    t_compile = time.perf_counter()
    compiled = {}
    for piece in pieces:
        if signature(piece) not in compiled:
            head = (keys[0], state) if stream is None else (keys[0], state, source)
            compiled[signature(piece)] = chunk.lower(*head, *piece[1]).compile()
    compile_s = time.perf_counter() - t_compile

    parts = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=K, unit="cycle", file=sys.stderr, desc=f"{args.method} {_setup_name(args)}"
        )
    t_run = time.perf_counter()
    for i, piece in enumerate(pieces):
        state, h, source = call(compiled[signature(piece)], i, state, source, piece)
        if bar is not None:
            jax.block_until_ready(state)
            bar.update(piece[0])
        parts.append(h)
    jax.block_until_ready(state)
    run_s = time.perf_counter() - t_run
    if bar is not None:
        bar.close()
    hist = jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)
    if stream is not None:  # each chunk counted its times from its own start
        dt = setup.obs_every * setup.model.dt
        hist = hist._replace(time=(jnp.arange(K) + 1.0) * dt)
    scored = hist.rmse_analysis is not None  # a truth was known (stored or streamed)
    b = setup.burn_in if scored else 0
    st = run_status(hist, burn_in=b)
    summary: dict[str, Any] = {
        "model": SETUPS[_setup_name(args)].model,
        "setup": _setup_name(args),
        "method": args.method,
        "dim": setup.model.dim,
        "obs_operator": args.obs_operator,
        "obs_stride": args.obs_stride or 1,
        "observations": args.observations or "twin",
        **{k: (float(v) if isinstance(v, float) else v) for k, v in settings.items()},
        "cycles": K,
        "burn_in": b,
        "seed": args.seed,
        "spread_analysis": float(np.mean(np.asarray(hist.spread_analysis)[b:])),
        "innovation_ratio": float(st.innovation_ratio),
        "error_spread_ratio": float(st.error_ratio),
        "status": Status(int(st.status)).name,
        "finite": bool(np.all(np.isfinite(np.asarray(hist.spread_analysis)))),
        "compile_seconds": compile_s,
        "run_seconds": run_s,
        "cycles_per_second": K / run_s if run_s > 0 else float("inf"),
        "seconds": time.perf_counter() - t0,
    }
    if hist.log_likelihood is not None:
        summary["log_likelihood"] = float(np.sum(np.asarray(hist.log_likelihood)))
    if scored:
        summary["rmse_analysis"] = float(np.mean(np.asarray(hist.rmse_analysis)[b:]))
        summary["rmse_forecast"] = float(np.mean(np.asarray(hist.rmse_forecast)[b:]))
        summary["finite"] = summary["finite"] and bool(
            np.all(np.isfinite(np.asarray(hist.rmse_analysis)))
        )
        if record is smoothed_record and truth is not None:
            summary["rmse_smoother"] = smoother_rmse(hist.record, truth, b)
    return summary, (hist, state, series, truth)


def smoother_rmse(record, truth, burn_in: int) -> float:
    """Time-mean RMSE of a window method's smoother estimates (:func:`smoothed_record`) at the
    observation times they refer to, from ``burn_in`` on."""
    idx, means = (np.asarray(a) for a in record)
    keep = idx >= burn_in
    err = means[keep] - np.asarray(truth)[idx[keep]]
    return float(np.mean(np.sqrt(np.mean(err**2, axis=1))))


def plot_run(args: argparse.Namespace, outputs, summary: dict):
    """The ``--plot`` figure of a run (:func:`jaxda.plotting.plot_assimilation`: Hovmöller
    panels of truth, analysis mean and error, RMSE and spread with the burn-in marked, rank
    histogram), saved to ``args.plot``; returns the matplotlib Figure."""
    from .plotting import plot_assimilation

    hist, _, _, truth = outputs
    return plot_assimilation(
        hist,
        truth=truth,
        mean=hist.record if isinstance(hist.record, jax.Array) else None,
        burn_in=summary["burn_in"],
        ranks=hist.rank_counts,
        record_every=args.record_every,
        forecast=True,
        title=f"{summary['method']} on {summary['setup']} (N={summary['ensemble_size']})",
        path=args.plot,
    )


def _table(summary: dict) -> str:
    rows = [
        ("model", f"{summary['model']} (n={summary['dim']})"),
        ("method", summary["method"]),
        ("ensemble size", summary["ensemble_size"]),
        ("inflation", summary.get("inflation", 1.0)),
        ("cycles (burn-in)", f"{summary['cycles']} ({summary['burn_in']})"),
    ]
    if "rmse_analysis" in summary:
        rows += [
            ("analysis RMSE (time mean)", f"{summary['rmse_analysis']:.4f}"),
            ("forecast RMSE (time mean)", f"{summary['rmse_forecast']:.4f}"),
        ]
    if "rmse_smoother" in summary:
        rows += [("smoother RMSE (time mean)", f"{summary['rmse_smoother']:.4f}")]
    if "log_likelihood" in summary:
        rows += [("log-likelihood", f"{summary['log_likelihood']:.2f}")]
    rows += [
        ("analysis spread", f"{summary['spread_analysis']:.4f}"),
        ("innovation ratio (≈1)", f"{summary.get('innovation_ratio', float('nan')):.3f}"),
        ("status", summary["status"]),
        ("compile [s]", f"{summary['compile_seconds']:.2f}"),
        ("run [s]", f"{summary['run_seconds']:.2f}"),
        ("cycles / s", f"{summary['cycles_per_second']:.0f}"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary, outputs = run_experiment(args, progress=not (args.no_progress or args.json))
    except (ValueError, FileNotFoundError) as e:  # bad options, a missing checkpoint
        parser.exit(2, f"jaxda: error: {e}\n")
    code = 0
    if outputs is not None and args.output:
        from .io import save_run

        hist, state, series, truth = outputs
        save_run(
            args.output,
            hist,
            final_state=state,
            observations=series,
            truth=truth,
            attrs={k: v for k, v in summary.items() if isinstance(v, int | float | str)},
            record_every=args.record_every,
        )
    if outputs is not None and args.plot:
        try:
            plot_run(args, outputs, summary)
        except Exception as e:  # the results are already printed/saved; say why the plot failed
            print(
                f"jaxda: warning: the plot could not be written ({type(e).__name__}: {e})",
                file=sys.stderr,
            )
            code = 1
    if args.json:
        print(json.dumps(summary))
    else:
        print(_table(summary))
    if not summary["finite"]:
        print("jaxda: warning: the analysis diverged (non-finite values)", file=sys.stderr)
        return 1
    if summary["status"] == Status.DIVERGED.name:
        print(
            f"jaxda: warning: the filter diverged: {status_message(Status.DIVERGED)} (innovation "
            f"ratio {summary['innovation_ratio']:.1f}, expected ≈ 1; analysis RMSE / spread "
            f"{summary['error_spread_ratio']:.1f})",
            file=sys.stderr,
        )
        if args.fail_on_divergence:
            return 3
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
