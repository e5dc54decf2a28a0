"""Peak memory of the streaming twin experiment against the stored one (issue 15).

The stored twin (:func:`jaxda.experiments.twin_experiment`) first simulates the whole truth
``(K, n)`` and the observations ``(K, m)``, then runs the filter; the streaming twin
(``streaming=True``) propagates the truth and draws each observation inside the filter's scan,
so its memory should not grow with the number of cycles ``K``. Each run is one jitted
``twin_experiment`` in its own subprocess; the figure is that process's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``), read after the run, side by side with a
process that only imports JAX and builds the same initial ensemble (the floor).

Lorenz-96 (F=8, dt=0.05), every variable observed every step with R=I (``sakov2008``), ETKF
(:func:`jaxda.ensemble.etkf`) with inflation 1.02, float64. A third variant records the
analysis mean every ``K/4`` cycles (``record=ensemble_mean, record_every=K//4``).

Usage::

    python benchmarks/bench_streaming.py            # n = 100,000, N = 20, K = 50 and 200
    python benchmarks/bench_streaming.py --quick    # n = 5,000, K = 20 and 80 (smoke run)
    python benchmarks/bench_streaming.py --cycles 1000 --modes streaming --out streaming_long.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(spec: dict) -> dict:
    import jax

    jax.config.update("jax_enable_x64", True)
    from jaxda.assimilate import ensemble_mean, with_inflation
    from jaxda.ensemble import etkf
    from jaxda.experiments import sakov2008, twin_experiment

    n, N, K, mode = spec["n"], spec["N"], spec["K"], spec["mode"]
    setup = sakov2008(n=n, n_cycles=K, burn_in=K // 4)
    method = with_inflation(etkf(), 1.02)
    if mode == "floor":  # imports, setup and an initial ensemble only
        from jaxda.experiments import initial_ensemble

        jax.block_until_ready(initial_ensemble(jax.random.key(0), setup, N))
        return {"rss_mb": _rss_mb(), "seconds": 0.0, "rmse": float("nan")}
    kw: dict = {"streaming": mode != "stored"}
    if mode == "streaming+record":
        kw.update(record=ensemble_mean, record_every=max(K // 4, 1))
    run = jax.jit(lambda k: twin_experiment(k, setup, method, N, **kw))
    t0 = time.perf_counter()
    res = jax.block_until_ready(run(jax.random.key(0)))
    seconds = time.perf_counter() - t0
    return {"rss_mb": _rss_mb(), "seconds": seconds, "rmse": float(res.rmse_analysis)}


def run_one(spec: dict) -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return {**spec, **json.loads(line[6:])}
    raise RuntimeError(f"worker failed for {spec}:\n{out.stderr[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--N", type=int, default=20)
    p.add_argument("--cycles", type=int, nargs="+", default=None)
    p.add_argument(
        "--modes",
        nargs="+",
        default=["stored", "streaming", "streaming+record"],
        choices=["stored", "streaming", "streaming+record"],
    )
    p.add_argument("--out", help="JSON file name under benchmarks/results/")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print("RESULT" + json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    n = args.n or (5_000 if args.quick else 100_000)
    cycles = args.cycles or ([20, 80] if args.quick else [50, 200])
    rows = [run_one({"n": n, "N": args.N, "K": cycles[0], "mode": "floor"})]
    for K in cycles:
        for mode in args.modes:
            rows.append(run_one({"n": n, "N": args.N, "K": K, "mode": mode}))
    state_mb = n * 8 / 2**20
    print(f"n={n}, N={args.N}, ETKF, float64; one (n,) state = {state_mb:.2f} MB")
    print(f"{'mode':<18}{'K':>6}{'peak RSS MB':>13}{'above floor':>13}{'seconds':>9}{'rmse.a':>8}")
    floor = rows[0]["rss_mb"]
    for r in rows:
        print(
            f"{r['mode']:<18}{r['K']:>6}{r['rss_mb']:>13.0f}{r['rss_mb'] - floor:>13.0f}"
            f"{r['seconds']:>9.1f}{r['rmse']:>8.3f}"
        )
    name = args.out or ("streaming_quick.json" if args.quick else "streaming.json")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name)
    with open(path, "w") as fh:
        json.dump({"n": n, "N": args.N, "rows": rows}, fh, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
