"""2-D Kolmogorov flow (jaxda.models.kolmogorov): speed, training-set cost, attractor statistics.

One run measures, side by side for each grid ``n`` (default 64 and 128, SDA's ``Re = 1000``,
drag 0.1, ``k_f = 4``, the default step ``0.64/n``):

1. ETDRK4 steps per second of one state (``jit`` + ``fori_loop``) and member-steps per second
   of a vmapped ensemble of 8 states, and their ratio to ``n = 64``;
2. the attractor: from the model's ``x0``, ``--spinup`` time units, then ``--average`` time
   units sampled every 0.2: the rms and maximum speed, the advective CFL number
   ``max|u|·K·h`` (``K = ⌊(n-1)/3⌋``, RK4 is stable below about 2.8), the time- and x-mean
   velocity ``ū(y)`` projected on ``sin(4y)`` (the four pairs of jets along the force), and
   the mean energy spectrum (in the JSON; the PNG plots it against ``k``);
3. the time to generate a small training set with
   :func:`jaxda.models.kolmogorov_trajectories` at ``n = 64`` observed every 0.2 time units
   (SDA's interval: ``dt = 0.2, substeps = 20``).

Writes ``benchmarks/results/kolmogorov[_quick].json`` and, with ``--png``, a figure (a
vorticity snapshot per ``n``, the mean spectra, the mean ``ū(y)``).

Usage::

    python benchmarks/bench_kolmogorov.py --png benchmarks/results/kolmogorov.png
    python benchmarks/bench_kolmogorov.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxda.models import energy_spectrum, kolmogorov, kolmogorov_trajectories, velocity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t


def speed(n: int, steps: int) -> dict:
    m = kolmogorov(n=n)
    one = jax.jit(lambda x: jax.lax.fori_loop(0, steps, lambda _, x: m(x), x))
    ens = jax.jit(lambda E: jax.lax.fori_loop(0, steps, lambda _, E: jax.vmap(m)(E), E))
    E = jnp.stack([m.x0] * 8)
    t1, t8 = _timed(one, m.x0), _timed(ens, E)
    return {"steps_per_s": steps / t1, "member_steps_per_s_ensemble8": 8 * steps / t8}


def attractor(n: int, spinup: float, average: float) -> dict:
    m = kolmogorov(n=n, spinup=spinup)
    every = round(0.2 / float(m.dt))
    run = jax.jit(
        lambda x: jax.lax.scan(
            lambda x, _: (jax.lax.fori_loop(0, every, lambda _, x: m(x), x),) * 2,
            x,
            None,
            length=round(average / 0.2),
        )[1]
    )
    xs = m.to_field(run(m.x0))
    u, v = velocity(xs)
    speed = jnp.sqrt(u**2 + v**2)
    y = m.grid
    ubar = np.asarray(u.mean(axis=(0, 2)))
    _, E = energy_spectrum(xs)
    cut = (n - 1) // 3
    umax = float(speed.max())
    return {
        "rms_speed": float(jnp.sqrt(jnp.mean(speed**2))),
        "max_speed": umax,
        "cfl_rk4": umax * cut * float(m.dt),
        "ubar_sin4y": float(2 * np.mean(ubar * np.sin(4 * y))),
        "ubar_profile": ubar.tolist(),
        "mean_spectrum": np.asarray(E.mean(axis=0)).tolist(),
        "finite": bool(jnp.all(jnp.isfinite(xs))),
        "snapshot": np.asarray(xs[-1]).tolist(),
    }


def training_set(n_traj: int, n_steps: int, spinup: int) -> dict:
    m = kolmogorov(n=64, dt=0.2, substeps=20)
    gen = lambda key: kolmogorov_trajectories(key, m, n_traj, n_steps, spinup)  # noqa: E731
    jax.block_until_ready(gen(jax.random.key(0)))
    t = time.perf_counter()
    X = jax.block_until_ready(gen(jax.random.key(1)))
    dt = time.perf_counter() - t
    etd = n_traj * (spinup + n_steps) * 20
    return {
        "n": 64,
        "trajectories": n_traj,
        "records": n_steps,
        "spinup_model_steps": spinup,
        "seconds": dt,
        "etdrk4_member_steps_per_s": etd / dt,
        "shape": list(X.shape),
        "finite": bool(jnp.all(jnp.isfinite(X))),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--spinup", type=float, default=50.0)
    ap.add_argument("--average", type=float, default=50.0)
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.spinup, args.average = [32, 64], 2.0, 2.0
    steps = 50 if args.quick else 200
    out = {"backend": jax.default_backend(), "dtype": str(jnp.zeros(()).dtype), "sizes": {}}
    for n in args.sizes:
        s = speed(n, steps)
        a = attractor(n, args.spinup, args.average)
        out["sizes"][n] = {**s, **a}
        print(
            f"n={n:4d}  steps/s {s['steps_per_s']:8.1f}  ensemble-8 member-steps/s "
            f"{s['member_steps_per_s_ensemble8']:8.1f}  rms|u| {a['rms_speed']:.2f}  "
            f"max|u| {a['max_speed']:.2f}  CFL {a['cfl_rk4']:.2f}  "
            f"<u(y) sin4y> {a['ubar_sin4y']:+.3f}",
            flush=True,
        )
    base = out["sizes"][args.sizes[0]]["steps_per_s"]
    for n in args.sizes:
        print(f"n={n}: step time / n={args.sizes[0]}: {base / out['sizes'][n]['steps_per_s']:.2f}")
    tr = training_set(*((4, 8, 10) if args.quick else (16, 32, 50)))
    out["training_set"] = tr
    print(
        f"training set {tr['shape']} (spin-up {tr['spinup_model_steps']} × 0.2 time units): "
        f"{tr['seconds']:.1f} s, {tr['etdrk4_member_steps_per_s']:.0f} ETDRK4 member-steps/s"
    )
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sizes = args.sizes
        fig, axes = plt.subplots(1, len(sizes) + 2, figsize=(4 * (len(sizes) + 2), 3.6))
        for ax, n in zip(axes[: len(sizes)], sizes, strict=True):
            w = np.asarray(out["sizes"][n]["snapshot"])
            lim = np.abs(w).max()
            ax.imshow(w, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim,
                      extent=(0, 2 * np.pi, 0, 2 * np.pi))  # fmt: skip
            ax.set(title=f"vorticity, n={n}", xlabel="x", ylabel="y")
        for n in sizes:
            kmax = int(np.ceil(np.sqrt(2.0) * ((n - 1) // 3)))  # shells holding kept modes
            E = np.asarray(out["sizes"][n]["mean_spectrum"])[: kmax + 1]
            k = np.arange(len(E))
            axes[-2].loglog(k[1:], E[1:], label=f"n={n}")
            axes[-1].plot(out["sizes"][n]["ubar_profile"], 2 * np.pi * np.arange(n) / n,
                          label=f"n={n}")  # fmt: skip
        axes[-2].set(title="mean energy spectrum", xlabel="k", ylabel="E(k)")
        axes[-2].legend()
        axes[-1].set(title="time/x-mean u(y)", xlabel="u", ylabel="y")
        axes[-1].legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=90)
        print("figure:", args.png)
    for n in args.sizes:
        out["sizes"][n].pop("snapshot")
    name = "kolmogorov_quick.json" if args.quick else "kolmogorov.json"
    with open(os.path.join(ROOT, "benchmarks", "results", name), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
