"""Gradient-based optimizers and variational DA: jaxda vs scipy.optimize, side by side.

1. Single runs on Rosenbrock (n = 2, 5, 10, 20, float64) from x0 = 0: jaxda BFGS and
   Newton vs scipy BFGS (same jitted value-and-gradient, ``jac=True``): iterations,
   evaluations, final f, wall time after compile (median of repeats), compile time apart.
2. Batched restarts: R BFGS restarts in one jit call, as ``jax.vmap(bfgs)`` (runs until the
   slowest restart stops) and as :func:`jaxda.optimize.multistart` pools of several sizes
   (a slot whose restart stops takes the next start), vs a scipy BFGS loop; repeats
   interleaved, median wall time; table also written to results/gradient_based_batched.json.
3. Variational DA: 3D-Var on Sakov 2008 L96 (B = 0.02 × climatological covariance from a
   long free run; DAPPER Var3D reports 0.41). Sliding-window 4D-Var is compared with DAPPER in
   ``bench_window_methods.py``.

Run:  python benchmarks/bench_gradient_based.py [--restarts 1000] [--cycles 10400] [--quick]
      [--only-batched] [--pool-sizes 64 128 256 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize as so  # noqa: E402

from jaxda.experiments import sakov2008, twin_experiment  # noqa: E402
from jaxda.models import lorenz96  # noqa: E402
from jaxda.optimize import bfgs, multistart, newton  # noqa: E402
from jaxda.variational import (  # noqa: E402
    background_covariance,
    climatological_covariance,
    var3d,
)

RESULTS = Path(__file__).resolve().parent / "results"


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def timed(fn, *args, repeats=5):
    out = jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return out, statistics.median(ts)


def compile_time(fn, *args):
    t = time.perf_counter()
    c = jax.jit(fn).lower(*args).compile()
    return c, time.perf_counter() - t


def scipy_bfgs(x0, vg, gtol):
    def fun(z):
        f, g = vg(jnp.asarray(z))
        return float(f), np.asarray(g)

    return so.minimize(fun, np.asarray(x0), jac=True, method="BFGS", options={"gtol": gtol})


def single_runs(dims, gtol, repeats):
    rows = []
    vg = jax.jit(jax.value_and_grad(rosenbrock))
    for n in dims:
        x0 = jnp.zeros(n)
        vg(x0)  # compile scipy's callback once
        for name, solver in (("jaxda BFGS", bfgs), ("jaxda Newton", newton)):
            c, tc = compile_time(
                lambda x, s=solver: s(rosenbrock, x, gtol=gtol, max_steps=1000), x0
            )
            r, t = timed(c, x0, repeats=repeats)
            rows.append((n, name, int(r.n_steps), int(r.n_evaluations), float(r.f), t, tc))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            s = scipy_bfgs(x0, vg, gtol)
            ts.append(time.perf_counter() - t0)
        rows.append((n, "scipy BFGS", s.nit, s.nfev, float(s.fun), statistics.median(ts), 0.0))
    return rows


def batched(R, n, gtol, pool_sizes=(64, 128, 256, 1000), rounds=1):
    """R BFGS restarts: jax.vmap(bfgs) vs multistart pools vs a scipy BFGS loop, one run."""
    starts = jax.random.uniform(jax.random.key(0), (R, n), minval=-2.0, maxval=2.0)
    opts = {"gtol": gtol, "max_steps": 1000}
    fns = {"jaxda vmap(bfgs)": jax.vmap(lambda x: bfgs(rosenbrock, x, **opts))}
    for B in pool_sizes:
        fns[f"jaxda multistart(bfgs, pool_size={B})"] = lambda x, B=B: multistart(
            bfgs, rosenbrock, x, pool_size=B, **opts
        )
    compiled = {}
    for name, fn in fns.items():
        compiled[name] = compile_time(fn, starts)
    vg = jax.jit(jax.value_and_grad(rosenbrock))
    vg(starts[0])
    # rounds of (every jaxda method, median of 3 calls; then the scipy loop once), so that a
    # change in the (shared) machine's load hits every method
    times = {name: [] for name in fns}
    t_sp = []
    for _ in range(rounds):
        for name, (c, _) in compiled.items():
            res, t = timed(c, starts, repeats=3)
            times[name].append(t)
        t0 = time.perf_counter()
        sc = [scipy_bfgs(x, vg, gtol) for x in np.asarray(starts)]
        t_sp.append(time.perf_counter() - t0)
    rows = []
    for name, (c, tc) in compiled.items():
        res = c(starts)
        f_jx = np.asarray(res.f)
        rows.append(
            {
                "method": name,
                "wall": statistics.median(times[name]),
                "compile": tc,
                "converged": int(np.sum(np.asarray(res.status) == 0)),
                "global": int(np.sum(f_jx < 1e-10)),
                "mean_iters": float(np.mean(np.asarray(res.n_steps))),
                "max_iters": int(np.max(np.asarray(res.n_steps))),
            }
        )
    f_sp = np.array([s.fun for s in sc])
    nit = np.array([s.nit for s in sc])
    rows.append(
        {
            "method": "scipy BFGS loop",
            "wall": statistics.median(t_sp),
            "compile": 0.0,
            "converged": int(sum(s.success for s in sc)),
            "global": int(np.sum(f_sp < 1e-10)),
            "mean_iters": float(np.mean(nit)),
            "max_iters": int(np.max(nit)),
        }
    )
    t_scipy = rows[-1]["wall"]
    for r in rows:
        r["speedup_vs_scipy"] = t_scipy / r["wall"]
    return {"R": R, "n": n, "gtol": gtol, "rounds": rounds, "rows": rows}


def run_batched(a, gtol):
    b = batched(a.restarts, 10, gtol, pool_sizes=a.pool_sizes, rounds=a.rounds)
    print_batched(b)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / a.out).write_text(json.dumps(b, indent=2))


def print_batched(b):
    print(
        "| | wall (s) | compile (s) | converged | reached f<1e-10 | mean / max iterations | scipy/this time |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in b["rows"]:
        compile_s = f"{r['compile']:.2f}" if r["compile"] else "–"
        print(
            f"| {r['method']} | {r['wall']:.3f} | {compile_s} | {r['converged']} | {r['global']} "
            f"| {r['mean_iters']:.1f} / {r['max_iters']} | {r['speedup_vs_scipy']:.1f}x |"
        )


def variational(n_cycles):
    t0 = time.perf_counter()
    C = climatological_covariance(lorenz96(40), n_steps=20_000, spinup=1_000)
    out: dict[str, Any] = {"clim_time": time.perf_counter() - t0}
    setup = sakov2008(n_cycles=n_cycles, burn_in=400)
    B = background_covariance(cov=0.02 * C)
    run = jax.jit(lambda k: twin_experiment(k, setup, var3d(B, members="collapse"), 2))
    keys = jax.random.split(jax.random.key(0), 3)
    t0 = time.perf_counter()
    r = [float(run(k).rmse_analysis) for k in keys]
    out["3dvar_rmse"] = r
    out["3dvar_time"] = time.perf_counter() - t0
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--restarts", type=int, default=1000)
    ap.add_argument("--cycles", type=int, default=10_400)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only-batched", action="store_true", help="only the batched restarts")
    ap.add_argument("--rounds", type=int, default=1, help="batched: timing rounds")
    ap.add_argument("--pool-sizes", type=int, nargs="+", default=[64, 128, 256, 1000])
    ap.add_argument("--out", default="gradient_based_batched.json", help="in benchmarks/results/")
    a = ap.parse_args()
    if a.quick:
        a.restarts, a.cycles = 100, 2_000
        a.out = a.out.replace(".json", "_quick.json")
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, CPUs {os.cpu_count()}")
    gtol = 1e-8
    if a.only_batched:
        print(f"\n## {a.restarts} BFGS restarts on 10-D Rosenbrock, starts U[-2, 2]\n")
        run_batched(a, gtol)
        return

    print("\n## Rosenbrock single runs (x0 = 0, gtol = 1e-8 inf-norm, float64)\n")
    rows = single_runs((2, 5, 10, 20), gtol, repeats=5)
    print(
        "| n | method | iterations | evaluations | final f | wall (ms, after compile) | compile (s) | scipy/jaxda time |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in (2, 5, 10, 20):
        sp = next(r for r in rows if r[0] == n and r[1] == "scipy BFGS")
        for r in (r for r in rows if r[0] == n):
            ratio = sp[5] / r[5]
            print(
                f"| {n} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1e} | {1e3 * r[5]:.2f} | {r[6]:.2f} | {ratio:.1f}x |"
            )

    print(f"\n## {a.restarts} BFGS restarts on 10-D Rosenbrock, starts U[-2, 2]\n")
    run_batched(a, gtol)

    print(f"\n## 3D-Var, Sakov 2008 L96 ({a.cycles} cycles, burn-in 400, B = 0.02 x clim. cov.)\n")
    v = variational(a.cycles)
    r = v["3dvar_rmse"]
    print(
        f"time-mean analysis RMSE over 3 seeds: {', '.join(f'{x:.3f}' for x in r)} "
        f"(mean {np.mean(r):.3f}; DAPPER Var3D xB=0.02: 0.41); {v['3dvar_time']:.1f} s incl. compile"
    )
    print("\n(4D-Var with sliding windows: benchmarks/bench_window_methods.py)")


if __name__ == "__main__":
    main()
