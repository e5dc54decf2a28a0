"""LETKF at n = 100,000 (Lorenz-96, N = 40, radius 4): the CLI's own path, before and after.

Two tables, each measured in one run:

1. ``jaxda run --model lorenz96 --dim 100000 --method letkf -N 40 --localization-radius 4``
   (float32, and float64 with ``--x64``), the command a user types, run by this checkout and
   by an earlier revision (``--before REV``, checked out in a temporary ``git worktree``).
   Every run is its own subprocess: seconds per cycle (the CLI's ``run_seconds / cycles``,
   compile excluded), compile seconds, and the subprocess's peak resident memory
   (``ru_maxrss``, the ``/usr/bin/time -v`` figure).
2. One LETKF analysis (``jaxda.ensemble.letkf_analysis``) on a forecast ensemble of spread
   ``s`` around a Lorenz-96-like state, ``R = I``, for each ``solver``: the Chebyshev
   expansion's degree grows with the local spectrum (``s² × local observations``), ``eigh``'s
   cost does not; ``"auto"`` picks per block. This is the measurement behind the default.

Usage::

    python benchmarks/bench_letkf.py                     # both tables (a few minutes)
    python benchmarks/bench_letkf.py --quick             # n = 20,000, 3 cycles
    python benchmarks/bench_letkf.py --before 36f52da --cycles 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CLI_WORKER = """
import json, resource, sys, io, contextlib
from jaxda.cli import main
buf = io.StringIO()
with contextlib.redirect_stdout(buf):
    code = main(sys.argv[1:])
out = json.loads(buf.getvalue().strip().splitlines()[-1])
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
out["exit_code"] = code
print(json.dumps(out))
"""

_ANALYSIS_WORKER = """
import json, resource, sys, time
import jax
spec = json.loads(sys.argv[1])
jax.config.update("jax_enable_x64", spec["dtype"] == "float64")
import jax.numpy as jnp
from jaxda.ensemble import letkf_analysis, local_observations
from jaxda.observations import identity, observation_model
n, N, s = spec["n"], spec["N"], spec["spread"]
obs = observation_model(identity(n), obs_std=1.0)
local = local_observations(n, obs.operator.locations, 4.0)
k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
x = 8.0 + 3.0 * jax.random.normal(k1, (n,))
E = x + s * jax.random.normal(k2, (N, n))
y = x + jax.random.normal(k3, (n,))
f = jax.jit(lambda E, y: letkf_analysis(E, y, obs, local, solver=spec["solver"]))
t0 = time.perf_counter(); Ea = jax.block_until_ready(f(E, y)); t1 = time.perf_counter()
reps = 3
for _ in range(reps):
    Ea = jax.block_until_ready(f(E, y))
t2 = time.perf_counter()
print(json.dumps({"compile_s": t1 - t0 - (t2 - t1) / reps, "seconds": (t2 - t1) / reps,
                  "spread_after": float(jnp.mean(jnp.std(Ea, axis=0, ddof=1))),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))
"""


def _run(code: str, args: list[str], pythonpath: str, timeout: int) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", ""))
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=pythonpath,  # `python -c` puts the working directory first on sys.path
        timeout=timeout,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr[-400:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _worktree(rev: str) -> str:
    path = tempfile.mkdtemp(prefix=f"jaxda-{rev[:10]}-")
    subprocess.run(
        ["git", "-C", ROOT, "worktree", "add", "--detach", "--force", path, rev],
        check=True,
        capture_output=True,
    )
    return path


def cli_table(args) -> list[dict]:
    n = 20_000 if args.quick else args.dim
    cycles = 3 if args.quick else args.cycles
    trees = [("this checkout", ROOT)]
    before = None
    if args.before:
        before = _worktree(args.before)
        trees.insert(0, (f"before ({args.before})", before))
    cmd = [
        "run", "--model", "lorenz96", "--dim", str(n), "--method", "letkf", "-N", "40",
        "--localization-radius", "4", "--cycles", str(cycles), "--burn-in", "1",
        "--json", "--no-progress", "--no-compile-cache",
    ]  # fmt: skip
    print(f"\n## `jaxda run --model lorenz96 --dim {n} --method letkf -N 40 "
          f"--localization-radius 4 --cycles {cycles}`\n")  # fmt: skip
    print("| code | dtype | s / cycle | compile s | peak RSS GB | RMSE a | spread a |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    try:
        for dtype in ("float32", "float64"):
            for label, tree in trees:
                extra = ["--x64"] if dtype == "float64" else []
                r = _run(_CLI_WORKER, cmd + extra, tree, timeout=3600)
                r.update(code=label, dtype=dtype)
                rows.append(r)
                if "error" in r:
                    print(f"| {label} | {dtype} | error: {r['error'][-200:]!r} |")
                    continue
                print(
                    f"| {label} | {dtype} | {r['run_seconds'] / cycles:.2f} | "
                    f"{r['compile_seconds']:.1f} | {r['peak_rss_mb'] / 1024:.2f} | "
                    f"{r['rmse_analysis']:.4f} | {r['spread_analysis']:.4f} |",
                    flush=True,
                )
    finally:
        if before is not None:
            subprocess.run(
                ["git", "-C", ROOT, "worktree", "remove", "--force", before], capture_output=True
            )
    return rows


def solver_table(args) -> list[dict]:
    n = 20_000 if args.quick else args.dim
    print(f"\n## One LETKF analysis, n = {n}, N = 40, radius 4, R = I: solver by spread\n")
    print("| dtype | forecast spread | solver | seconds | compile s | peak RSS GB |")
    print("|---|---|---|---|---|---|")
    rows = []
    for dtype in ("float32", "float64"):
        for spread in (0.1, 0.3, 1.0, 3.0):
            for solver in ("auto", "eigh"):
                spec = {"n": n, "N": 40, "spread": spread, "solver": solver, "dtype": dtype}
                r = _run(_ANALYSIS_WORKER, [json.dumps(spec)], ROOT, timeout=1800)
                r.update(spec)
                rows.append(r)
                if "error" in r:
                    print(f"| {dtype} | {spread} | {solver} | error: {r['error'][-200:]!r} |")
                    continue
                print(
                    f"| {dtype} | {spread} | {solver} | {r['seconds']:.3f} | "
                    f"{r['compile_s']:.1f} | {r['peak_rss_mb'] / 1024:.2f} |",
                    flush=True,
                )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="n = 20,000, 3 cycles")
    p.add_argument("--dim", type=int, default=100_000)
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument("--before", default=None, help="an earlier git revision to compare with")
    p.add_argument("--no-solvers", action="store_true", help="only the CLI table")
    p.add_argument(
        "--json", default=os.path.join(ROOT, "benchmarks", "results", "bench_letkf.json")
    )
    args = p.parse_args(argv)
    out = {"cli": cli_table(args)}
    if not args.no_solvers:
        out["solvers"] = solver_table(args)
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
