"""jaxda's EnKF/ETKF vs cuthbert's ensemble Kalman filter on the Sakov 2008 Lorenz-96 twin.

`cuthbert <https://pypi.org/project/cuthbert/>`_ is a JAX library for state-space inference
with an ensemble Kalman filter. Both libraries run on the **same** truth, observations and
initial ensemble (numpy arrays simulated once by jaxda), with the same Lorenz-96 model step,
the same ensemble size and the same inflation factor, and are scored the same way.

Setup (``jaxda.experiments.sakov2008``): ``n = 40`` variables, ``F = 8``, RK4 ``dt = 0.05``,
every variable observed at every step with ``R = I``, initial truth and ensemble drawn from
``N(x0, 0.001 I)``. One truth + observation series of ``--cycles`` cycles (default 10,000; the
first ``--burn-in`` = 1,000 are left out of the time means) and one initial ensemble per ``N``
are simulated once in float64, written to a temporary ``.npz``, and passed to both libraries.

What each side runs (one ``jax.jit`` of the whole run, ``lax.scan`` over the cycles inside):

* **jaxda EnKF**: :func:`jaxda.experiments.twin_experiment` (which calls
  :func:`jaxda.assimilate.assimilate`) with ``with_inflation(jaxda.ensemble.enkf(), infl)``:
  the stochastic EnKF with perturbed observations (perturbations centred, the default), the
  gain applied in ensemble space, inflation of the *analysis* anomalies by ``infl``.
* **jaxda ETKF**: the same driver with ``with_inflation(jaxda.ensemble.etkf(), infl)``: the
  deterministic square-root filter (symmetric transform from the ``N x N`` Gram matrix).
* **cuthbert EnKF (dense)**: ``cuthbert.filter`` with
  ``cuthbert.ensemble_kalman.ensemble_kalman_filter.build_filter(..., n_particles=N,
  inflation=infl - 1, perturbed_obs=True)`` and a dense ``chol_R = I`` (its default path:
  the ``m x m`` innovation covariance factored by QR, gain applied by Cholesky solves), the
  stochastic EnKF with uncentred perturbed observations; inflation of the *forecast*
  anomalies by ``1 + inflation``.
* **cuthbert EnKF (subspace)**: the same with ``ensemble_subspace=True`` and a diagonal
  ``chol_R`` (its ``N``-dimensional ensemble-subspace analysis, algebraically the same
  update).

The cuthbert dynamics are ``lambda x, key: model(x)`` with jaxda's ``Lorenz96`` RK4 step, and
the observation function is the identity; its initial state is ``init_prepare`` with the
ensemble replaced by the shared initial ensemble. ``cuthbert.filter`` returns the filter state
(the whole ensemble) at every time; the analysis mean is taken from it inside the same jit.
The analysis RMSE at a time is ``sqrt(mean_i (mean_i - truth_i)^2)``
(:func:`jaxda.metrics.rmse`), averaged over the cycles after the burn-in, for both sides; the
spread is :func:`jaxda.metrics.spread` of the analysis ensemble.

Timing: compile (``jit(...).lower(...).compile()``) is measured apart from the run; every run
ends with ``jax.block_until_ready``. The compiled runs are interleaved (one run of every
variant per round, ``--seeds`` rounds, a new filter key each round), so load from other
processes hits all variants alike; cycles/s is from the fastest round (the median is in the
JSON), RMSE is the mean (and std) over the seeds. float32 and float64 each run in their own
subprocess, so the x64 flag never mixes. Each subprocess is pinned to one core by default
(``--threads one``): on a small machine shared with other jobs, XLA's multi-threaded CPU
kernels (notably the triangular solves with 30 or more right-hand sides in cuthbert's
Cholesky-based gain) stall on busy cores, and single-threaded runs are the fair and
reproducible comparison; ``--threads all`` lets XLA use every core. The two filters' random numbers differ (each draws
its own perturbations), so RMSEs agree only statistically.

Usage::

    pip install cuthbert
    python benchmarks/bench_cuthbert.py            # 10,000 cycles, burn-in 1,000, N = 20, 40
    python benchmarks/bench_cuthbert.py --quick    # 1,000 cycles, a smoke run

Writes ``benchmarks/results/bench_cuthbert.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = ["jaxda EnKF", "jaxda ETKF", "cuthbert EnKF (dense)", "cuthbert EnKF (subspace)"]


def simulate_data(path: Path, cycles: int, burn_in: int, members: list[int], seed: int) -> None:
    """Simulate the truth, the observations and one initial ensemble per ``N`` in float64."""
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxda.experiments import initial_ensemble, sakov2008, simulate

    setup = sakov2008(n_cycles=cycles, burn_in=burn_in)
    k_data, k_init = jax.random.split(jax.random.key(seed))
    data = simulate(k_data, setup)
    arrays = {
        "truth0": np.asarray(data.truth0),
        "truth": np.asarray(data.truth),
        "y": np.asarray(data.observations.y),
    }
    for N, k in zip(members, jax.random.split(k_init, len(members)), strict=True):
        arrays[f"E0_{N}"] = np.asarray(initial_ensemble(k, setup, N))
    np.savez(str(path), **arrays)  # type: ignore[arg-type]


def make_runs(burn_in: int, cycles: int, N: int, infl: float, truth0):
    """The four runs ``run(key, y, truth, E0) -> (rmse_a, spread_a)``, each to be jitted."""
    import cuthbert
    import jax
    import jax.numpy as jnp
    from cuthbert.ensemble_kalman import ensemble_kalman_filter as cb_enkf

    from jaxda.assimilate import with_inflation
    from jaxda.ensemble import enkf, etkf
    from jaxda.experiments import TwinData, sakov2008, twin_experiment
    from jaxda.metrics import rmse, spread
    from jaxda.observations import observation_series

    setup = sakov2008(n_cycles=cycles, burn_in=burn_in)
    model, n = setup.model, setup.model.dim

    def jaxda_run(method):
        def run(key, y, truth, E0):
            obs = observation_series(y, setup.obs, n_steps=1, dt=model.dt)
            data = TwinData(jnp.asarray(truth0, y.dtype), truth, obs)
            r = twin_experiment(key, setup, method, N, data=data, initial=E0)
            return r.rmse_analysis, r.spread_analysis

        return run

    def cuthbert_run(subspace: bool):
        def run(key, y, truth, E0):
            chol_R = jnp.ones(n, y.dtype) if subspace else jnp.eye(n, dtype=y.dtype)

            def init_sample(key):  # only sets the shape: the ensemble is replaced by E0 below
                return jnp.zeros(n, y.dtype)

            def get_dynamics(model_inputs):
                return lambda x, key: model(x)  # deterministic Lorenz-96 RK4 step

            def get_observations(model_inputs):
                return (lambda x: x), chol_R, jnp.asarray(model_inputs)  # H = I, y_k

            filt = cb_enkf.build_filter(
                init_sample=init_sample,
                get_dynamics=get_dynamics,
                get_observations=get_observations,
                n_particles=N,
                inflation=infl - 1.0,
                perturbed_obs=True,
                ensemble_subspace=subspace,
            )
            k_init, k_run = jax.random.split(key)
            state0 = filt.init_prepare(key=k_init)._replace(ensemble=E0)
            states = cuthbert.filter(filt, y, state0, key=k_run)
            Ea = states.ensemble[1:]  # (K, N, n): the analysis ensembles, initial state dropped
            err = rmse(jnp.mean(Ea, axis=1), truth)
            spr = jax.vmap(spread)(Ea)
            return jnp.mean(err[burn_in:]), jnp.mean(spr[burn_in:])

        return run

    return {
        "jaxda EnKF": jaxda_run(with_inflation(enkf(), infl)),
        "jaxda ETKF": jaxda_run(with_inflation(etkf(), infl)),
        "cuthbert EnKF (dense)": cuthbert_run(False),
        "cuthbert EnKF (subspace)": cuthbert_run(True),
    }


def worker(args) -> None:
    """Run every variant for every ``N`` in one precision; print one JSON line."""
    if args.threads == "one":  # before jax starts: XLA then sees (and threads over) one core
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import jax

    if args.worker == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    dtype = jnp.float64 if args.worker == "float64" else jnp.float32
    d = np.load(args.data)
    y, truth = jnp.asarray(d["y"], dtype), jnp.asarray(d["truth"], dtype)
    cycles = y.shape[0]
    out = []
    for N, infl in zip(args.members, args.inflation, strict=True):
        E0 = jnp.asarray(d[f"E0_{N}"], dtype)
        runs = make_runs(args.burn_in, cycles, N, infl, d["truth0"])
        key0 = jax.random.key(args.seed)
        compiled, compile_s = {}, {}
        for name in VARIANTS:
            t0 = time.perf_counter()
            compiled[name] = jax.jit(runs[name]).lower(key0, y, truth, E0).compile()
            compile_s[name] = time.perf_counter() - t0
        times = {name: [] for name in VARIANTS}
        scores = {name: [] for name in VARIANTS}
        for s in range(args.seeds):  # interleaved rounds, a new filter key each round
            key = jax.random.fold_in(key0, s)
            for name in VARIANTS:
                t0 = time.perf_counter()
                r, sp = jax.block_until_ready(compiled[name](key, y, truth, E0))
                times[name].append(time.perf_counter() - t0)
                scores[name].append((float(r), float(sp)))
        for name in VARIANTS:
            rm = np.array([a for a, _ in scores[name]])
            sp = np.array([b for _, b in scores[name]])
            out.append(
                {
                    "precision": args.worker,
                    "N": N,
                    "inflation": infl,
                    "variant": name,
                    "compile_s": compile_s[name],
                    "cycles_per_s": cycles / min(times[name]),
                    "cycles_per_s_median": cycles / float(np.median(times[name])),
                    "run_s": times[name],
                    "rmse_a": float(np.mean(rm)),
                    "rmse_a_std": float(np.std(rm)),
                    "rmse_a_seeds": rm.tolist(),
                    "spread_a": float(np.mean(sp)),
                }
            )
    print("RESULT " + json.dumps(out))


def table(rows: list[dict], seeds: int) -> str:
    """Markdown table: one line per (precision, N, variant), ratios to cuthbert's dense EnKF."""
    lines = [
        "| precision | N | infl | filter | rmse.a (± std over "
        f"{seeds} seeds) | spread.a | cycles/s | vs cuthbert dense | compile [s] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = next(
            q
            for q in rows
            if q["precision"] == r["precision"]
            and q["N"] == r["N"]
            and q["variant"] == "cuthbert EnKF (dense)"
        )
        lines.append(
            f"| {r['precision']} | {r['N']} | {r['inflation']} | {r['variant']} | "
            f"{r['rmse_a']:.3f} ± {r['rmse_a_std']:.3f} | {r['spread_a']:.3f} | "
            f"{r['cycles_per_s']:,.0f} | {r['cycles_per_s'] / ref['cycles_per_s']:.2f}x | "
            f"{r['compile_s']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--cycles", type=int, default=10_000, help="cycles incl. burn-in")
    p.add_argument("--burn-in", type=int, default=1_000)
    p.add_argument("--members", type=int, nargs="+", default=[20, 40], help="ensemble sizes N")
    p.add_argument(
        "--inflation",
        type=float,
        nargs="+",
        default=[1.06, 1.06],
        help="one multiplicative inflation factor per N (cuthbert gets inflation=factor-1)",
    )
    p.add_argument("--seeds", type=int, default=3, help="interleaved timed rounds (filter keys)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precisions", nargs="+", default=["float32", "float64"])
    p.add_argument(
        "--threads",
        choices=["one", "all"],
        default="one",
        help="pin each worker to one core (default) or let XLA use every core",
    )
    p.add_argument("--quick", action="store_true", help="1,000 cycles, burn-in 200, 2 seeds")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_cuthbert.json"))
    p.add_argument("--worker", choices=["float32", "float64"], help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.cycles, args.burn_in, args.seeds = 1_000, 200, 2
    if len(args.inflation) != len(args.members):
        p.error("--inflation needs one factor per --members entry")
    if not 0 <= args.burn_in < args.cycles:
        p.error("--burn-in must be in [0, --cycles)")
    if args.worker:
        worker(args)
        return

    import cuthbert
    import jax

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "twin.npz"
        t0 = time.perf_counter()
        simulate_data(data, args.cycles, args.burn_in, args.members, args.seed)
        print(f"simulated {args.cycles} cycles in {time.perf_counter() - t0:.1f} s", flush=True)
        rows = []
        for prec in args.precisions:
            cmd = [sys.executable, __file__, "--worker", prec, "--data", str(data)]
            cmd += ["--burn-in", str(args.burn_in), "--seeds", str(args.seeds)]
            cmd += ["--seed", str(args.seed), "--members", *map(str, args.members)]
            cmd += ["--inflation", *map(str, args.inflation), "--threads", args.threads]
            t0 = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                sys.exit(f"{prec} worker failed:\n{res.stderr[-4000:]}")
            line = next(s for s in res.stdout.splitlines() if s.startswith("RESULT "))
            rows += json.loads(line[len("RESULT ") :])
            print(f"{prec} done in {time.perf_counter() - t0:.0f} s", flush=True)

    header = (
        f"Lorenz-96 Sakov 2008 twin | {args.cycles} cycles, burn-in {args.burn_in} | "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores "
        f"({'each run pinned to one core' if args.threads == 'one' else 'all cores'}), "
        f"jax {jax.__version__}, cuthbert {cuthbert.__version__}, device {jax.devices()[0].platform}"
    )
    print("\n" + header)
    print(table(rows, args.seeds))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(
        json.dumps({"args": vars(args), "header": header, "rows": rows}, indent=2)
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
