"""The global ETKF in observation space (issue 17): per-analysis time against the EnKF and the
pre-change ETKF, side by side in one run.

Four analyses of the same forecast ensemble, each ``jax.jit``-compiled, timed after a warm-up
call (median of ``--repeats`` timed calls, the four methods taking turns so that a loaded
machine slows them alike):

* ``etkf``: :func:`jaxda.ensemble.etkf_analysis` as it is now: with ``m < N`` the ``m×m``
  Gram matrix ``SᵀS`` only (``T A = A + S g(SᵀS) SᵀA``), ``O(N m² + m³ + N m n)``;
* ``etkf_before``: the ETKF before issue 17, rebuilt from public functions exactly as
  ``etkf_analysis`` computed it: :func:`jaxda.ensemble.letkf_transform` (the ``m×m``
  eigen-problem, but the ``N×N`` transform ``T`` formed) and ``T @ A``, ``O(N² (m + n))``
  time and ``N×N`` memory;
* ``enkf``: :func:`jaxda.ensemble.enkf_analysis`, the stochastic EnKF (perturbed observations,
  gain in observation space when ``m < N``, increments ``Z (SᵀX)``): the yardstick of the issue;
* ``enkf_before``: the same EnKF with the increments as before issue 17 when ``m < N``,
  ``(Z Sᵀ) X``, which forms an ``N×N`` product (``O(N² (m + n))``), rebuilt from public
  functions (with ``m >= N`` the code did not change: the same function as ``enkf``).

The problem: ``n`` state variables, ``m`` observations of evenly spaced variables (``subset``;
repeated when ``m > n``), ``R = I``, a forecast ensemble of spread 1 around a random state.
Sizes: every combination of ``n ∈ {40, 1000}``, ``m ∈ {5, 50}``, ``N ∈ {100, 500, 2000}``
(the issue's case is ``n = 40, m = 5, N = 2000``), plus ``m = 500 > N = 100`` (ensemble space,
``SSᵀ`` as before; ``T`` is applied to ``A`` directly when ``n <= N``, else formed). Reported: milliseconds per analysis (median), the ratio ``etkf / enkf``
of the medians and of the fastest calls (goal: at most 2 at ``m = 5, N = 2000``), and
``etkf_before / etkf``; every timed call goes to the JSON,
``benchmarks/results/etkf_obs_space.json`` (``_quick`` for ``--quick``). A second table times
the other global filters at ``n = 40, m = 5, N = 2000`` next to the ETKF: the DEnKF, the EnKF-N
(with and without ``hessian_correction``, which still forms and decomposes ``I + SSᵀ``,
``O(N³)``) and the random rotation of :func:`jaxda.assimilate.with_rotation`
(:func:`jaxda.ensemble.mean_preserving_rotation`: a QR of an ``(N-1)×(N-1)`` Gaussian matrix and
an ``N×N`` product, ``O(N³ + N² n)`` whatever ``m``).

Usage::

    python benchmarks/bench_etkf_obs_space.py              # the full sweep (2 to 3 minutes)
    python benchmarks/bench_etkf_obs_space.py --quick      # a smoke run (seconds)
    python benchmarks/bench_etkf_obs_space.py --x64        # float64 (default float32)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, 3 repeats (smoke run)")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls per method and size")
    ap.add_argument("--x64", action="store_true", help="float64 (default float32)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    a = ap.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", a.x64)
    import jax.numpy as jnp
    import numpy as np

    from jaxda.ensemble import (
        denkf_analysis,
        enkf_analysis,
        enkf_n_analysis,
        etkf_analysis,
        letkf_transform,
        mean_and_anomalies,
        mean_preserving_rotation,
        obs_space,
        obs_space_solve,
        perturbed_observations,
        scaled_anomalies,
    )
    from jaxda.observations import fill_missing, observation_model, subset

    def etkf_before(E, y, obs):
        """The pre-issue-17 ``etkf_analysis``: the N×N transform T formed, then T @ A."""
        N = E.shape[0]
        mean, A = mean_and_anomalies(E)
        os_ = obs_space(E, obs, y)
        w, T = letkf_transform(os_.S, os_.innovation(y))
        return (mean + (w @ A) / jnp.sqrt(N - 1.0) + T @ A).astype(E.dtype)

    def enkf_before(key, E, y, obs):
        """The pre-issue-17 ``enkf_analysis``: with m < N increments ``(Z Sᵀ) X`` (N×N); with
        m >= N the code did not change."""
        N = E.shape[0]
        if y.shape[0] >= N:
            return enkf_analysis(key, E, y, obs)
        _, X = scaled_anomalies(E)
        os_ = obs_space(E, obs, y)
        D = perturbed_observations(key, fill_missing(y, os_.mask), obs, N) - os_.Y
        Z = obs_space_solve(os_.S, os_.whiten(D).T).T
        return (E + (Z @ os_.S.T) @ X).astype(E.dtype)

    if a.quick:
        sizes = [(40, 5, 100), (40, 5, 500), (200, 50, 500)]
        repeats = 3
    else:
        sizes = [(n, m, N) for n in (40, 1000) for m in (5, 50) for N in (100, 500, 2000)]
        sizes += [(40, 500, 100), (1000, 500, 100)]
        repeats = a.repeats
    dtype = jnp.float64 if a.x64 else jnp.float32
    cores = os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# ETKF in observation space (issue 17): {platform.processor() or platform.machine()}, "
        f"{cores} cores (load average {load:.1f}), jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, {jnp.dtype(dtype).name}; ms per analysis, median of "
        f"{repeats} calls"
    )
    header = (
        f"{'n':>5} {'m':>4} {'N':>5} | {'etkf':>7} {'before':>7} | {'enkf':>7} {'before':>7} | "
        f"{'etkf/enkf':>9} {'(fastest)':>9} | {'etkf before/now':>15} | {'max|Δ| etkf':>11}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    key = jax.random.key(0)
    for n, m, N in sizes:
        k1, k2, k3, k4 = jax.random.split(jax.random.fold_in(key, n * 1_000_003 + m * 1009 + N), 4)
        x = 3.0 * jax.random.normal(k1, (n,), dtype)
        E = x + jax.random.normal(k2, (N, n), dtype)
        idx = (np.arange(m) * n) // m if m <= n else np.arange(m) % n
        obs = observation_model(subset(idx, n=n), obs_std=1.0)
        y = (x[idx] + jax.random.normal(k3, (m,), dtype)).astype(dtype)
        fns = {
            "etkf": jax.jit(lambda E, y, k, obs=obs: etkf_analysis(E, y, obs)),
            "etkf_before": jax.jit(lambda E, y, k, obs=obs: etkf_before(E, y, obs)),
            "enkf": jax.jit(lambda E, y, k, obs=obs: enkf_analysis(k, E, y, obs)),
            "enkf_before": jax.jit(lambda E, y, k, obs=obs: enkf_before(k, E, y, obs)),
        }
        outs, compile_s = {}, {}
        for name, f in fns.items():  # compile and warm up
            t = time.perf_counter()
            outs[name] = jax.block_until_ready(f(E, y, k4))
            compile_s[name] = time.perf_counter() - t
            jax.block_until_ready(f(E, y, k4))
        times = {name: [] for name in fns}
        for _ in range(repeats):  # the methods take turns
            for name, f in fns.items():
                t = time.perf_counter()
                jax.block_until_ready(f(E, y, k4))
                times[name].append(time.perf_counter() - t)
        med = {name: statistics.median(v) for name, v in times.items()}
        fastest = {name: min(v) for name, v in times.items()}
        diff = float(jnp.max(jnp.abs(outs["etkf"] - outs["etkf_before"])))
        diff_enkf = float(jnp.max(jnp.abs(outs["enkf"] - outs["enkf_before"])))
        row = dict(
            n=n,
            m=m,
            N=N,
            space="observation" if m < N else "ensemble",
            ms={k: 1e3 * v for k, v in med.items()},
            ms_all={k: [1e3 * t for t in v] for k, v in times.items()},
            first_call_s=compile_s,
            etkf_over_enkf=med["etkf"] / med["enkf"],
            etkf_over_enkf_fastest=fastest["etkf"] / fastest["enkf"],
            before_over_etkf=med["etkf_before"] / med["etkf"],
            enkf_before_over_enkf=med["enkf_before"] / med["enkf"],
            max_abs_diff_etkf_before=diff,
            max_abs_diff_enkf_before=diff_enkf,
        )
        rows.append(row)
        ms = row["ms"]
        print(
            f"{n:>5} {m:>4} {N:>5} | {ms['etkf']:>7.2f} {ms['etkf_before']:>7.2f} | "
            f"{ms['enkf']:>7.2f} {ms['enkf_before']:>7.2f} | {row['etkf_over_enkf']:>9.2f} "
            f"{row['etkf_over_enkf_fastest']:>9.2f} | {row['before_over_etkf']:>15.1f} | "
            f"{diff:>11.1e}"
        )
    goal = [r for r in rows if r["m"] == 5 and r["N"] == 2000]
    for r in goal:
        print(
            f"# issue 17 case n={r['n']}, m=5, N=2000: etkf/enkf = {r['etkf_over_enkf']:.2f} "
            f"(fastest calls {r['etkf_over_enkf_fastest']:.2f}; goal <= 2), ETKF before/now = "
            f"{r['before_over_etkf']:.0f}x, EnKF before/now = {r['enkf_before_over_enkf']:.0f}x"
        )
    # ---------------------------------------------------------------- the other global filters
    # at the issue's size: what they cost next to the ETKF (those still forming N×N at m < N:
    # the EnKF-N with hessian_correction, an N×N eigh; with_rotation's Haar rotation, a QR of
    # (N-1)×(N-1) and an N×N product, whatever m)
    n, m, N = (40, 5, 500) if a.quick else (40, 5, 2000)
    k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
    x = 3.0 * jax.random.normal(k1, (n,), dtype)
    E = x + jax.random.normal(k2, (N, n), dtype)
    idx = (np.arange(m) * n) // m
    obs = observation_model(subset(idx, n=n), obs_std=1.0)
    y = (x[idx] + jax.random.normal(k3, (m,), dtype)).astype(dtype)
    others = {
        "etkf": lambda E, y, k: etkf_analysis(E, y, obs),
        "enkf": lambda E, y, k: enkf_analysis(k, E, y, obs),
        "denkf": lambda E, y, k: denkf_analysis(E, y, obs),
        "enkf_n": lambda E, y, k: enkf_n_analysis(E, y, obs)[0],
        "enkf_n_hessian": lambda E, y, k: enkf_n_analysis(E, y, obs, hessian_correction=True)[0],
        "rotation": lambda E, y, k: mean_preserving_rotation(k, N).astype(E.dtype) @ E,
    }
    print(f"\n# other global filters, n={n}, m={m}, N={N}: ms per analysis (median)")
    other_rows = {}
    for name, fn in others.items():
        f = jax.jit(fn)
        jax.block_until_ready(f(E, y, k4))
        reps = min(repeats, 3) if name in ("rotation", "enkf_n_hessian") else repeats
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            jax.block_until_ready(f(E, y, k4))
            ts.append(time.perf_counter() - t)
        other_rows[name] = dict(ms=1e3 * statistics.median(ts), ms_all=[1e3 * t for t in ts])
        print(f"{name:>15} {other_rows[name]['ms']:>10.2f}")

    out = a.out or os.path.join(
        ROOT, "benchmarks", "results", f"etkf_obs_space{'_quick' if a.quick else ''}.json"
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(
            dict(
                benchmark="bench_etkf_obs_space",
                machine=dict(
                    processor=platform.processor() or platform.machine(),
                    cores=cores,
                    load_average_1min=load,
                    backend=jax.devices()[0].platform,
                ),
                jax=jax.__version__,
                dtype=jnp.dtype(dtype).name,
                repeats=repeats,
                rows=rows,
                others=dict(n=n, m=m, N=N, rows=other_rows),
            ),
            fh,
            indent=1,
        )
    print(f"# wrote {os.path.relpath(out, ROOT)}")
    return rows


if __name__ == "__main__":
    main()
