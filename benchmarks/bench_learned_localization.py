"""Learned localization radius: does the LETKF log-likelihood's maximizer land in the RMSE-optimal band?

Setup: Sakov & Oke (2008) Lorenz-96 (:func:`jaxda.experiments.sakov2008`: ``n = 40``, every
variable observed every step, ``R = I``), an LETKF with ``N = 10`` members (too few without
localization), Gaspari–Cohn taper, multiplicative inflation fixed at ``--inflation``.

1. Scan: for every radius of a grid and every seed (``jax.vmap`` over both; the radius is then
   traced, so the LETKF tapers every observation instead of using its KD-tree table — the same
   analysis), the time-mean analysis RMSE and log-likelihood per cycle after the burn-in. The
   RMSE-optimal band: radii around the grid minimum whose seed-mean RMSE (linear between grid
   points) is within 5 % of the minimum (:func:`bench_learned_inflation.band_of`).
2. Learn: maximize the log-likelihood per cycle over ``log radius`` by BFGS, with the chunked
   objective of ``bench_learned_inflation.py`` (truncated gradient): the post-burn-in run cut
   into chunks of ``chunk`` cycles, each started from the analysis ensemble of a reference run
   at ``start_radius``, its first ``chunk_warm`` cycles left out; chunks and seeds in parallel.

Usage::

    python benchmarks/bench_learned_localization.py           # full (minutes)
    python benchmarks/bench_learned_localization.py --quick   # smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from bench_learned_inflation import band_of, series_at  # noqa: E402

from jaxda.assimilate import assimilate, with_inflation  # noqa: E402
from jaxda.ensemble import letkf  # noqa: E402
from jaxda.experiments import initial_ensemble, sakov2008, simulate  # noqa: E402
from jaxda.optimize import bfgs  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def config(quick: bool, inflation: float) -> dict:
    return {
        "N": 10,
        "inflation": inflation,
        "n_cycles": 400 if quick else 1_000,
        "burn_in": 100 if quick else 200,
        "seeds": 2 if quick else 4,
        "grid": [1.0, 2.0, 4.0, 8.0] if quick else [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0],
        "start_radius": 6.0,
        "chunk": 100,
        "chunk_warm": 30,
        "bfgs_steps": 10 if quick else 30,
    }


def method(cfg: dict, radius):
    return with_inflation(letkf(localization_radius=radius), cfg["inflation"])


def seed_data(setup, N: int, key):
    k_data, k_init = jax.random.split(key)
    data = simulate(k_data, setup)
    return data, initial_ensemble(k_init, setup, N)


def main():
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--inflation", type=float, default=1.04)
    args = ap.parse_args()
    cfg = config(args.quick, args.inflation)
    setup = sakov2008(n_cycles=cfg["n_cycles"], burn_in=cfg["burn_in"])
    N, b, L, w = cfg["N"], cfg["burn_in"], cfg["chunk"], cfg["chunk_warm"]
    keys = jax.random.split(jax.random.key(0), cfg["seeds"])
    data, E0 = jax.vmap(lambda k: seed_data(setup, N, k))(keys)

    @jax.jit
    def scan(radius, data, E0):
        _, hist = assimilate(
            jax.random.key(1), method(cfg, radius), setup.model, data.observations, E0,
            truth=data.truth, likelihood=True,
        )  # fmt: skip
        assert hist.rmse_analysis is not None and hist.log_likelihood is not None
        return jnp.mean(hist.rmse_analysis[b:]), jnp.mean(hist.log_likelihood[b:])

    grid = np.asarray(cfg["grid"])
    t0 = time.perf_counter()
    rmse, loglik = jax.vmap(lambda r: jax.vmap(lambda d, e: scan(r, d, e))(data, E0))(grid)
    rmse, loglik = np.asarray(rmse), np.asarray(loglik)
    scan_s = time.perf_counter() - t0
    lo, hi, _threshold = band_of(grid, rmse.mean(1), 0.05)

    # chunked objective from a reference run at start_radius
    K = cfg["n_cycles"]
    C = (K - b) // L
    t0s = b + L * np.arange(C)
    series = data.observations
    chunk_template = series_at(series, 0).slice(0, L)
    ys_chunks = jnp.stack([series.y[:, t : t + L] for t in t0s], axis=1)

    @jax.jit
    def starts(radius):
        def one(s_series, E):
            _, hist = assimilate(
                jax.random.key(1), method(cfg, radius), setup.model, s_series, E,
                store_ensembles=True,
            )  # fmt: skip
            assert hist.ensemble_analysis is not None
            return hist.ensemble_analysis[t0s - 1]

        return jax.vmap(one)(series, E0)

    def negloglik(s, starts):
        radius = jnp.exp(s[0])

        def chunk(E, y):
            obs = eqx.tree_at(lambda o: o.y, chunk_template, y)
            _, hist = assimilate(
                jax.random.key(1), method(cfg, radius), setup.model, obs, E, likelihood=True
            )
            assert hist.log_likelihood is not None
            return jnp.mean(hist.log_likelihood[w:])

        return -jnp.mean(jax.vmap(jax.vmap(chunk))(starts, ys_chunks))

    t0 = time.perf_counter()
    S = starts(cfg["start_radius"])
    s0 = jnp.array([np.log(cfg["start_radius"])])
    res = jax.jit(lambda s0, S: bfgs(negloglik, s0, (S,), max_steps=cfg["bfgs_steps"]))(s0, S)
    learned = float(jnp.exp(res.x[0]))
    fit_s = time.perf_counter() - t0
    r_learned, _ll_learned = jax.vmap(lambda d, e: scan(learned, d, e))(data, E0)
    r_learned = float(np.mean(r_learned))
    out = {
        "config": cfg,
        "band_rule": "radii around the grid minimum with seed-mean RMSE <= 1.05 x the minimum",
        "grid": grid.tolist(),
        "rmse": rmse.mean(1).tolist(),
        "loglik_per_cycle": loglik.mean(1).tolist(),
        "rmse_min": float(rmse.mean(1).min()),
        "rmse_argmin": float(grid[np.argmin(rmse.mean(1))]),
        "loglik_grid_argmax": float(grid[np.argmax(loglik.mean(1))]),
        "band": [lo, hi],
        "learned_radius": learned,
        "learned_rmse": r_learned,
        "learned_inside_band": bool(lo <= learned <= hi),
        "bfgs": {
            "status": int(res.status),
            "iterations": int(res.n_steps),
            "evaluations": int(res.n_evaluations),
        },
        "scan_s": round(scan_s, 1),
        "fit_s": round(fit_s, 1),
        "machine": platform.platform(),
        "jax": jax.__version__,
    }
    print("| radius | " + " | ".join(f"{g:g}" for g in grid) + " |")
    print("|---" * (len(grid) + 1) + "|")
    print("| RMSE | " + " | ".join(f"{v:.3f}" for v in rmse.mean(1)) + " |")
    print("| log-lik/cycle | " + " | ".join(f"{v:.2f}" for v in loglik.mean(1)) + " |")
    print(
        json.dumps({k: v for k, v in out.items() if k not in ("grid", "rmse", "loglik_per_cycle")})
    )
    name = "learned_localization_quick.json" if args.quick else "learned_localization.json"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
