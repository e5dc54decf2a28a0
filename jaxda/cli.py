"""Command-line interface: ``jaxda run`` runs a twin experiment and prints a summary.

Example::

    jaxda run --model lorenz96 --method etkf --ensemble-size 24 --inflation 1.013 --cycles 2000
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .experiments import (
    WINDOW_METHODS,
    CycleHistory,
    TwinSetup,
    available_methods,
    cycle_step,
    initial_ensemble,
    lorenz63_setup,
    make_analysis,
    sakov2008,
    simulate,
)
from .observations import from_callable, observation_model

MODELS = ("lorenz63", "lorenz96")


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxda", description="jaxda: data assimilation in JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a twin experiment (truth → observations → DA cycles)")
    run.add_argument("--model", default="lorenz96", help=f"one of {', '.join(MODELS)}")
    run.add_argument(
        "--method",
        default="enkf",
        help=f"one of {', '.join(available_methods() + list(WINDOW_METHODS))}",
    )
    run.add_argument("--ensemble-size", "-N", type=_positive_int("ensemble size"), default=None)
    run.add_argument("--inflation", type=_positive_float("inflation"), default=None)
    run.add_argument(
        "--rtps", type=float, default=0.0, help="relaxation to prior spread α in [0, 1]"
    )
    run.add_argument("--cycles", type=_positive_int("cycles"), default=2000)
    run.add_argument("--burn-in", type=int, default=None, help="cycles excluded from time means")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--obs-every", type=_positive_int("obs-every"), default=None, help="model steps per cycle"
    )
    run.add_argument("--obs-std", type=_positive_float("obs-std"), default=None)
    run.add_argument(
        "--obs-operator",
        default="identity",
        choices=["identity", "arctan"],
        help="observe x or arctan(x) (every variable)",
    )
    run.add_argument("--dim", type=_positive_int("dim"), default=40, help="Lorenz-96 state size")
    run.add_argument(
        "--localization-radius", type=_positive_float("localization radius"), default=None
    )
    run.add_argument(
        "--xb", type=_positive_float("xb"), default=None, help="3D/4D-Var: B = xb * C_clim"
    )
    run.add_argument(
        "--window", type=_positive_int("window"), default=5, help="4D-Var: obs times per window"
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
        help="EnSF: kernel variance σ(0)² around each member, relative to the forecast "
        "variance (default 0.5)",
    )
    run.add_argument(
        "--jitter",
        type=float,
        default=None,
        help="PF: regularization noise, a multiple of the weighted particle spread (default 0.8)",
    )
    run.add_argument("--x64", action="store_true", help="run in float64")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    run.add_argument("--plot", default=None, help="save RMSE/spread time series to this PNG")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


# Defaults per (model, method): the published tunings of DAPPER's benchmark setups
# (ensf and pf: choices measured with jaxda, see the README).
_DEFAULTS = {
    ("lorenz96", "enkf"): (40, 1.06),
    ("lorenz96", "etkf"): (24, 1.013),
    ("lorenz63", "enkf"): (10, 1.02),
    ("lorenz63", "etkf"): (10, 1.02),
    ("lorenz96", "letkf"): (7, 1.04),
    ("lorenz63", "letkf"): (10, 1.02),
    ("lorenz96", "ensf"): (20, 1.0),
    ("lorenz63", "pf"): (100, 1.0),
    ("lorenz96", "3dvar"): (1, 1.0),
    ("lorenz63", "3dvar"): (1, 1.0),
}
_ENSEMBLE_FREE = ("3dvar", "4dvar")


def make_setup(args: argparse.Namespace) -> TwinSetup:
    if args.model == "lorenz96":
        burn = args.burn_in if args.burn_in is not None else min(400, args.cycles // 5)
        setup = sakov2008(
            n=args.dim, n_cycles=args.cycles, burn_in=burn, obs_std=args.obs_std or 1.0
        )
        if args.obs_every:
            setup = TwinSetup(**{**setup.__dict__, "obs_every": args.obs_every})
    else:
        burn = args.burn_in if args.burn_in is not None else min(200, args.cycles // 5)
        setup = lorenz63_setup(
            n_cycles=args.cycles,
            burn_in=burn,
            obs_every=args.obs_every or 25,
            obs_std=args.obs_std or 2.0,
        )
    if args.obs_operator == "arctan":
        n = setup.model.dim
        std = setup.obs.noise.std
        arctan_obs = observation_model(from_callable(jnp.arctan, n), std=std)
        setup = TwinSetup(**{**setup.__dict__, "obs": arctan_obs})
    return setup


def _method_options(args: argparse.Namespace, setup: TwinSetup) -> dict:
    opts = {}
    if args.method.lower() == "3dvar":
        opts["model"] = setup.model
        opts["xb"] = args.xb or 0.02
    if args.method.lower() == "letkf" and args.localization_radius is None:
        args.localization_radius = 4.0 if args.model == "lorenz96" else 1e9  # L63: no localization
    if args.localization_radius is not None:
        opts["localization_radius"] = args.localization_radius
        opts["n"] = setup.model.dim
        if args.obs_operator == "arctan":  # every variable observed at its own grid point
            opts["obs_locations"] = jnp.arange(setup.model.dim)
    if args.method.lower() == "pf":
        opts["jitter"] = 0.8 if args.jitter is None else args.jitter
    if args.method.lower() == "ensf":  # standardized: ε_β is relative to the forecast variance
        opts["standardize"] = True
        opts["eps_alpha"] = args.eps_alpha or 0.5
        opts["eps_beta"] = args.eps_beta or 0.5
    return opts


def run_experiment(args: argparse.Namespace, progress: bool = True) -> dict:
    """Run the twin experiment described by parsed CLI arguments; return a summary dict."""
    if args.model not in MODELS:
        raise ValueError(f"unknown model {args.model!r}; choose one of {list(MODELS)}")
    method = args.method.lower()
    known = available_methods() + list(WINDOW_METHODS)
    if method not in known:
        raise ValueError(f"unknown method {args.method!r}; choose one of {known}")
    if not 0.0 <= args.rtps <= 1.0:
        raise ValueError(f"--rtps must be in [0, 1], got {args.rtps}")
    if args.x64:
        jax.config.update("jax_enable_x64", True)
    default_N, default_infl = _DEFAULTS.get((args.model, args.method.lower()), (20, 1.0))
    N = args.ensemble_size or default_N
    infl = args.inflation or default_infl
    setup = make_setup(args)
    if N < 2 and method not in _ENSEMBLE_FREE:
        raise ValueError(f"--ensemble-size must be >= 2 for ensemble methods, got {N}")
    if method == "4dvar":
        return _run_4dvar(args, setup)
    analysis = make_analysis(args.method, setup.obs, **_method_options(args, setup))

    key = jax.random.key(args.seed)
    k_data, k_init, k_run = jax.random.split(key, 3)
    t0 = time.perf_counter()
    data = simulate(k_data, setup)
    E = initial_ensemble(k_init, setup, N)
    keys = jax.random.split(k_run, setup.n_cycles)
    body = cycle_step(setup, analysis, infl, args.rtps)

    @jax.jit
    def chunk(E, keys, ys, xs):
        return jax.lax.scan(body, E, (keys, ys, xs))

    # Same computation as run_filter, cut into equal chunks for a progress bar.
    K = setup.n_cycles
    n_chunks = min(50, K) if progress else 1
    bounds = np.linspace(0, K, n_chunks + 1).astype(int)
    sizes = set(np.diff(bounds).tolist())
    t_compile = time.perf_counter()
    for s in sizes:
        chunk.lower(E, keys[:s], data.observations[:s], data.truth[:s]).compile()
    compile_s = time.perf_counter() - t_compile

    hist_parts = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=K, unit="cycle", file=sys.stderr, desc=f"{args.method} {args.model}")
    t_run = time.perf_counter()
    for a, b in itertools.pairwise(bounds):
        E, h = chunk(E, keys[a:b], data.observations[a:b], data.truth[a:b])
        if bar is not None:
            jax.block_until_ready(E)
            bar.update(int(b - a))
        hist_parts.append(h)
    jax.block_until_ready(E)
    run_s = time.perf_counter() - t_run
    if bar is not None:
        bar.close()
    hist = jax.tree.map(lambda *xs: jnp.concatenate(xs), *hist_parts)
    assert isinstance(hist, CycleHistory)
    b = setup.burn_in
    ra = np.asarray(hist.rmse_analysis)
    summary = {
        "model": args.model,
        "method": args.method.lower(),
        "dim": setup.model.dim,
        "obs_operator": args.obs_operator,
        "ensemble_size": N,
        "inflation": infl,
        "rtps": args.rtps,
        "cycles": K,
        "burn_in": b,
        "seed": args.seed,
        "rmse_analysis": float(np.mean(ra[b:])),
        "rmse_forecast": float(np.mean(np.asarray(hist.rmse_forecast)[b:])),
        "spread_analysis": float(np.mean(np.asarray(hist.spread_analysis)[b:])),
        "finite": bool(np.all(np.isfinite(ra))),
        "compile_seconds": compile_s,
        "run_seconds": run_s,
        "cycles_per_second": K / run_s if run_s > 0 else float("inf"),
        "seconds": time.perf_counter() - t0,
    }
    if args.plot:
        _plot(args.plot, hist, summary)
    return summary


def _run_4dvar(args: argparse.Namespace, setup: TwinSetup) -> dict:
    """Strong-constraint 4D-Var cycled over windows of ``--window`` observation times."""
    from .variational import background_covariance, climatological_covariance, fourdvar_experiment

    if setup.n_cycles < args.window:
        raise ValueError(f"--cycles must be >= --window ({args.window}), got {setup.n_cycles}")
    t0 = time.perf_counter()
    xb = args.xb or 0.05
    B = background_covariance(cov=xb * climatological_covariance(setup.model))

    def run(key):
        return fourdvar_experiment(key, setup, args.window, B)

    key = jax.random.key(args.seed)
    t_compile = time.perf_counter()
    compiled = jax.jit(run).lower(key).compile()
    compile_s = time.perf_counter() - t_compile
    t_run = time.perf_counter()
    res = jax.block_until_ready(compiled(key))
    run_s = time.perf_counter() - t_run
    return {
        "model": args.model,
        "method": "4dvar",
        "dim": setup.model.dim,
        "ensemble_size": 1,
        "inflation": 1.0,
        "rtps": 0.0,
        "window": args.window,
        "xb": xb,
        "cycles": setup.n_cycles,
        "burn_in": setup.burn_in,
        "seed": args.seed,
        "rmse_analysis": float(res.rmse_analysis),
        "rmse_smoother": float(res.rmse_smoother),
        "rmse_forecast": float(res.rmse_forecast),
        "spread_analysis": 0.0,
        "finite": bool(np.isfinite(float(res.rmse_analysis))),
        "compile_seconds": compile_s,
        "run_seconds": run_s,
        "cycles_per_second": setup.n_cycles / run_s if run_s > 0 else float("inf"),
        "seconds": time.perf_counter() - t0,
    }


def _plot(path: str, hist: CycleHistory, summary: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SystemExit("--plot needs matplotlib: pip install 'jaxda[plot]'") from e
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(np.asarray(hist.rmse_analysis), lw=0.7, label="analysis RMSE")
    ax.plot(np.asarray(hist.spread_analysis), lw=0.7, label="analysis spread")
    ax.axvline(summary["burn_in"], color="k", ls=":", lw=0.8)
    ax.set_xlabel("cycle")
    ax.set_yscale("log")
    ax.set_title(
        f"{summary['method']} on {summary['model']} (N={summary['ensemble_size']}): "
        f"mean RMSE {summary['rmse_analysis']:.3f}"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(summary: dict) -> str:
    rows = [
        ("model", f"{summary['model']} (n={summary['dim']})"),
        ("method", summary["method"]),
        ("ensemble size", summary["ensemble_size"]),
        ("inflation", summary["inflation"]),
        ("cycles (burn-in)", f"{summary['cycles']} ({summary['burn_in']})"),
        ("analysis RMSE (time mean)", f"{summary['rmse_analysis']:.4f}"),
        ("forecast RMSE (time mean)", f"{summary['rmse_forecast']:.4f}"),
        ("analysis spread", f"{summary['spread_analysis']:.4f}"),
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
        summary = run_experiment(args, progress=not (args.no_progress or args.json))
    except ValueError as e:
        parser.exit(2, f"jaxda: error: {e}\n")
    if args.json:
        print(json.dumps(summary))
    else:
        print(_table(summary))
        if not summary["finite"]:
            print("warning: the analysis diverged (non-finite RMSE)", file=sys.stderr)
    return 0 if summary["finite"] else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
