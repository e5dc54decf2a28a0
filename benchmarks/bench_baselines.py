"""Baselines (climatology, optimal interpolation): jaxda and DAPPER side by side, one run.

On DAPPER's ``Lorenz96/sakov2008`` (documented rmse.a: Climatology 3.6, OptInterp 0.95) and
``Lorenz63/sakov2012`` (7.6, 1.25) setups, the time-mean analysis RMSE and spread over seeds of

* jaxda with its default climatology, a free run of the model (``model=``: 20,000 steps after a
  1,000-step spin-up), independent of the truth;
* jaxda with DAPPER's choice, the climatology of the experiment's own true trajectory at the
  observation times (``sample=truth``), which is optimistic on short runs (the prior is fitted
  to the states being scored);
* DAPPER's ``Climatology`` and ``OptInterp`` (truth climatology). DAPPER's OptInterp spread is a
  sigmoid model of the error growth, not the analysis covariance: only its RMSE is comparable.
  jaxda's spread is the exact ``√(tr P / n)`` of the climatology and of ``(I - KH) P_C``.

Usage::

    python benchmarks/bench_baselines.py            # 5,000 cycles, 4 seeds
    python benchmarks/bench_baselines.py --quick    # 500 cycles, 2 seeds
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

DOCUMENTED = {
    ("sakov2008", "climatology"): 3.6,
    ("sakov2008", "oi"): 0.95,
    ("sakov2012", "climatology"): 7.6,
    ("sakov2012", "oi"): 1.25,
}
DAPPER_NAMES = {"climatology": "Climatology", "oi": "OptInterp"}


def _summary(rmses, spreads, seconds) -> dict:
    r = np.asarray(rmses, float)
    return {
        "rmse_a": float(r.mean()),
        "rmse_a_sd": float(r.std(ddof=1)) if r.size > 1 else 0.0,
        "rmse_a_per_seed": [float(v) for v in r],
        "spread_a": float(np.mean(spreads)),
        "seconds": seconds,
    }


def run_jaxda(setup_name: str, cycles: int, burn_in: int, seeds: int) -> dict:
    from jaxda.assimilate import make_method
    from jaxda.experiments import sakov2008, sakov2012, simulate, twin_experiment

    setup = (sakov2008 if setup_name == "sakov2008" else sakov2012)(
        n_cycles=cycles, burn_in=burn_in
    )
    keys = jax.random.split(jax.random.key(0), seeds)
    out = {}
    for name in ("climatology", "oi"):
        t0 = time.perf_counter()
        method = make_method(name, context={"model": setup.model})  # free-run climatology
        res = jax.jit(jax.vmap(lambda k, m=method: twin_experiment(k, setup, m, 1)))(keys)
        res = jax.block_until_ready(res)
        out[f"{name} (free run)"] = _summary(
            res.rmse_analysis, res.spread_analysis, time.perf_counter() - t0
        )
        t0 = time.perf_counter()
        rmses, spreads = [], []
        for k in keys:  # DAPPER's choice: the climatology of this experiment's truth
            data = simulate(jax.random.split(k, 3)[0], setup)  # twin_experiment's k_data
            m = make_method(name, context={"model": setup.model}, sample=data.truth)
            r = twin_experiment(k, setup, m, 1, data=data)
            rmses.append(float(r.rmse_analysis))
            spreads.append(float(r.spread_analysis))
        out[f"{name} (truth)"] = _summary(rmses, spreads, time.perf_counter() - t0)
    return out


def run_dapper(setup_name: str, cycles: int, burn_in: int, seeds: int) -> dict:
    import dapper as dpr
    import dapper.da_methods as da

    if setup_name == "sakov2008":
        from dapper.mods.Lorenz96.sakov2008 import HMM
    else:
        from dapper.mods.Lorenz63.sakov2012 import HMM
    HMM = HMM.copy()
    HMM.tseq.Ko = cycles
    HMM.tseq.BurnIn = burn_in * HMM.tseq.dto
    out = {}
    for name, cls in DAPPER_NAMES.items():
        rmses, spreads = [], []
        t0 = time.perf_counter()
        for s in range(seeds):
            dpr.set_seed(3 + s)
            xp = getattr(da, cls)()
            with (
                contextlib.redirect_stderr(io.StringIO()),
                contextlib.redirect_stdout(io.StringIO()),
            ):
                xx, yy = HMM.simulate()
                xp.assimilate(HMM, xx, yy, liveplots=False)
            xp.stats.average_in_time()
            rmses.append(float(xp.avrgs.err.rms.a.val))
            spreads.append(float(xp.avrgs.spread.rms.a.val))
        out[name] = _summary(rmses, spreads, time.perf_counter() - t0)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=5_000)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="500 cycles, 2 seeds")
    p.add_argument("--no-dapper", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "baselines.json"))
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)
    cycles, seeds = (500, 2) if args.quick else (args.cycles, args.seeds)
    burn_in = cycles // 10
    results = {}
    for setup in ("sakov2008", "sakov2012"):
        print(f"[{setup}] jaxda {cycles} cycles x {seeds} seeds ...", flush=True)
        results[setup] = {"jaxda": run_jaxda(setup, cycles, burn_in, seeds)}
        if not args.no_dapper:
            print(f"[{setup}] DAPPER ...", flush=True)
            results[setup]["dapper"] = run_dapper(setup, cycles, burn_in, seeds)

    print(
        f"\n{cycles} cycles (burn-in {burn_in}) x {seeds} seeds | "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}"
    )
    print("| setup | method | documented | jaxda, free-run clim. | jaxda, truth clim. | DAPPER |")
    print("|---|---|---|---|---|---|")

    def cell(s):
        return f"{s['rmse_a']:.3f} ± {s['rmse_a_sd']:.3f} (spread {s['spread_a']:.2f})"

    for setup, res in results.items():
        for name in ("climatology", "oi"):
            j = res["jaxda"]
            d = res.get("dapper", {}).get(name)
            print(
                f"| {setup} | {name} | {DOCUMENTED[(setup, name)]} | "
                f"{cell(j[f'{name} (free run)'])} | {cell(j[f'{name} (truth)'])} | "
                f"{cell(d) if d else '-'} |"
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    out = {"args": vars(args), "cycles": cycles, "burn_in": burn_in, "seeds": seeds}
    Path(args.out).write_text(json.dumps(out | {"results": results}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
