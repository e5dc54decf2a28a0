"""Lorenz-96 (Sakov & Oke 2008) twin experiment: jaxda vs DAPPER side by side.

Runs the same setup (40 variables, F=8, dt=0.05, all variables observed every
step, R=I, X0 = N(e_0, 0.001 I), burn-in 400 cycles) with:

* EnKF with perturbed observations, N=40, inflation 1.06 (published rmse.a 0.22);
* ETKF (DAPPER's ``EnKF('Sqrt', rot=True)``), N=24, inflation 1.013 (published 0.18).

Reports, for each library: compile time (jaxda only), cycles per second, the
time-mean analysis RMSE and spread, and the speed ratio. A second jaxda row
vmaps the whole experiment over ``--seeds`` independent seeds in one call.

Usage::

    pip install -e ".[bench]"
    python benchmarks/bench_dapper_l96.py                 # full: 10,400 jaxda cycles, 1,000 DAPPER cycles
    python benchmarks/bench_dapper_l96.py --quick         # a smoke run
    python benchmarks/bench_dapper_l96.py --single-thread # XLA:CPU without intra-op threads
    python benchmarks/bench_dapper_l96.py --prng rbg      # jaxda draws with jax's 'rbg' keys
    python benchmarks/bench_dapper_l96.py --blas-threads 0 # OpenBLAS threads as configured

On a machine shared with other processes, multi-threaded OpenBLAS (used by XLA:CPU's LAPACK
calls, and by numpy for DAPPER) can make one small triangular solve take milliseconds instead
of microseconds; so by default (``--blas-threads 1``, threadpoolctl) both libraries use one
OpenBLAS thread.

DAPPER is slow per cycle (it also computes many statistics each cycle), so it
runs ``--dapper-cycles`` cycles; cycles/s is a rate and is compared directly.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

CONFIGS = [
    # name, jaxda method, options (make_method options; "rotate": with_rotation), N, inflation,
    # DAPPER constructor args, published rmse.a
    ("EnKF PertObs", "enkf", {}, 40, 1.06, ("PertObs", {}), 0.22),
    ("ETKF (Sqrt, rot)", "etkf", {"rotate": True}, 24, 1.013, ("Sqrt", {"rot": True}), 0.18),
]


def jaxda_method(method, options, infl):
    """The registered ``method`` with DAPPER's random rotation (``rotate``) and inflation
    ``infl`` applied after each analysis (DAPPER's ``infl``)."""
    from jaxda.assimilate import make_method, with_inflation, with_rotation

    options = dict(options)
    rotate = options.pop("rotate", False)
    m = make_method(method, **options)
    if rotate:
        m = with_rotation(m)
    return with_inflation(m, infl)


def run_jaxda(method, options, N, infl, cycles, burn_in, seed, n_seeds, prng=None):
    from jaxda.experiments import sakov2008, twin_experiment

    setup = sakov2008(n_cycles=cycles, burn_in=burn_in)
    m = jaxda_method(method, options, infl)

    def one(key):
        r = twin_experiment(key, setup, m, N)
        return r.rmse_analysis, r.spread_analysis

    key = jax.random.key(seed, impl=prng)
    t0 = time.perf_counter()
    compiled = jax.jit(one).lower(key).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(key))  # warm-up run
    t0 = time.perf_counter()
    rmse, spread = jax.block_until_ready(compiled(jax.random.key(seed + 1, impl=prng)))
    run_s = time.perf_counter() - t0

    keys = jax.random.split(key, n_seeds)
    batched = jax.jit(jax.vmap(one)).lower(keys).compile()
    jax.block_until_ready(batched(keys))
    t0 = time.perf_counter()
    rmses, _ = jax.block_until_ready(
        batched(jax.random.split(jax.random.key(seed + 2, impl=prng), n_seeds))
    )
    batch_s = time.perf_counter() - t0
    return {
        "compile_s": compile_s,
        "cycles_per_s": cycles / run_s,
        "rmse_a": float(rmse),
        "spread_a": float(spread),
        "batched_cycles_per_s": n_seeds * cycles / batch_s,
        "batched_rmse_a_mean": float(np.mean(rmses)),
        "batched_rmse_a_std": float(np.std(rmses)),
    }


def run_dapper(upd_a, extra, N, infl, cycles, seed):
    import dapper as dpr
    import dapper.da_methods as da
    from dapper.mods.Lorenz96.sakov2008 import HMM

    HMM = HMM.copy()
    HMM.tseq.Ko = cycles
    HMM.tseq.BurnIn = 20.0  # 400 cycles of dt=0.05, same as jaxda
    dpr.set_seed(seed)
    xx, yy = HMM.simulate()
    xp = da.EnKF(upd_a, N=N, infl=infl, **extra)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        xp.assimilate(HMM, xx, yy, liveplots=False)
        run_s = time.perf_counter() - t0
    xp.stats.average_in_time()
    av = xp.avrgs
    return {
        "cycles_per_s": cycles / run_s,
        "rmse_a": float(av.err.rms.a.val),
        "spread_a": float(av.spread.rms.a.val),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=10_400, help="jaxda cycles (incl. burn-in)")
    p.add_argument("--dapper-cycles", type=int, default=1_000)
    p.add_argument("--burn-in", type=int, default=400)
    p.add_argument("--seeds", type=int, default=16, help="seeds vmapped in the batched jaxda run")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--float32", action="store_true", help="run jaxda in float32 (default float64)")
    p.add_argument("--quick", action="store_true", help="short smoke run")
    p.add_argument("--no-dapper", action="store_true")
    p.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="limit OpenBLAS (numpy for DAPPER, scipy's for XLA:CPU's LAPACK calls) to this "
        "many threads with threadpoolctl; 0: leave as configured (default 1: on a shared "
        "machine a multi-threaded 40x40 triangular solve can take milliseconds)",
    )
    p.add_argument(
        "--prng",
        choices=["threefry2x32", "rbg", "unsafe_rbg"],
        default=None,
        help="jax.random key implementation of the jaxda runs (default: jax's default, "
        "threefry2x32); another one draws other (equally distributed) random numbers",
    )
    p.add_argument(
        "--single-thread",
        action="store_true",
        help="run XLA:CPU without intra-op threads (XLA_FLAGS --xla_cpu_multi_thread_eigen=false "
        "intra_op_parallelism_threads=1): the ensemble-space operations are too small to gain "
        "from threads, and on a loaded machine the hand-off between threads costs more",
    )
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "dapper_l96.json"))
    args = p.parse_args()
    limiter = contextlib.nullcontext()
    if args.blas_threads:  # numpy's and scipy's (XLA:CPU's LAPACK) OpenBLAS
        import scipy.linalg  # noqa: F401  (loads the OpenBLAS that XLA:CPU calls)
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(args.blas_threads)
    with limiter:
        _run(args)


def _run(args):
    if args.single_thread:  # read when the CPU backend starts, i.e. at the first computation
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    if args.quick:
        args.cycles, args.dapper_cycles, args.burn_in, args.seeds = 800, 500, 200, 4
    if not args.float32:
        jax.config.update("jax_enable_x64", True)

    rows = []
    for name, method, opts, N, infl, (upd_a, extra), published in CONFIGS:
        j = run_jaxda(
            method, opts, N, infl, args.cycles, args.burn_in, args.seed, args.seeds, args.prng
        )
        d = (
            None
            if args.no_dapper
            else run_dapper(upd_a, extra, N, infl, args.dapper_cycles, args.seed)
        )
        rows.append(
            {
                "method": name,
                "N": N,
                "inflation": infl,
                "published_rmse_a": published,
                "jaxda": j,
                "dapper": d,
            }
        )

    print(
        f"\nLorenz-96 Sakov 2008 | jaxda {args.cycles} cycles, DAPPER {args.dapper_cycles} cycles, "
        f"burn-in {args.burn_in} | {'float32' if args.float32 else 'float64'} | "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"device {jax.devices()[0].platform}, prng {args.prng or jax.random.key_impl(jax.random.key(0))}, blas threads {args.blas_threads or 'default'}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )
    print(
        "| method | N | infl | published rmse.a | jaxda rmse.a (spread) | DAPPER rmse.a (spread) "
        "| jaxda cycles/s | DAPPER cycles/s | speed ratio | jaxda compile [s] "
        f"| jaxda vmapped x{args.seeds} seeds cycles/s | batched ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        j, d = r["jaxda"], r["dapper"]
        dr = f"{d['rmse_a']:.3f} ({d['spread_a']:.3f})" if d else "-"
        dc = f"{d['cycles_per_s']:.0f}" if d else "-"
        ratio = f"{j['cycles_per_s'] / d['cycles_per_s']:.0f}x" if d else "-"
        bratio = f"{j['batched_cycles_per_s'] / d['cycles_per_s']:.0f}x" if d else "-"
        print(
            f"| {r['method']} | {r['N']} | {r['inflation']} | {r['published_rmse_a']} | "
            f"{j['rmse_a']:.3f} ({j['spread_a']:.3f}) | {dr} | {j['cycles_per_s']:.0f} | {dc} | {ratio} | "
            f"{j['compile_s']:.2f} | {j['batched_cycles_per_s']:.0f} | {bratio} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
