"""Score-based data assimilation on the 2-D Kolmogorov flow: a U-Net prior vs LETKF and 4DEnVar.

The experiment of SDA (Rozet & Louppe 2023) at a size a CPU affords, all in one run:

1. **Training set**: ``--n-traj`` trajectories of the Kolmogorov flow (``jaxda.models``,
   ``Re = --reynolds``, states ``--interval`` = 0.2 time units apart after a spin-up), on the
   ``--n`` grid (or simulated on ``--sim-n`` and block-averaged to ``--n``), standardized with
   one scalar mean and std.
2. **Prior**: a :class:`jaxda.diffusion.UNet2D` (circular padding) trained by denoising score
   matching (:func:`jaxda.diffusion.train`: optax Adam with cosine decay, tqdm, orbax
   checkpoints in ``--checkpoint-dir``, resumed when present) on the VP cosine SDE. Loss curve
   to ``kolmogorov_sda_loss.png``. Check of the prior: unconditional samples' energy spectrum
   against the climatological one.
3. **Observations**: a held-out truth trajectory of ``--cycles`` observation times,
   observed at every ``--obs-every``-th grid point in each direction (``--obs sparse``) or as
   ``--obs-every``² block averages (``--obs coarse``), Gaussian noise of std ``--obs-noise``
   times the climatological std.
4. **Posterior at the last time** from the diffusion prior and **the last observation only**,
   with :func:`jaxda.diffusion.guided_score` (``mmps`` / ``dps`` / ``sda``) and the few-step
   samplers of :func:`jaxda.diffusion.sample` (``ddim`` / ``dpmpp2m`` / ``edm``).
5. **Baselines on the same observations**: the LETKF (2-D periodic Gaspari–Cohn
   localization, multiplicative inflation) and cycled 4DEnVar (``jaxda.ensemble.fourdenvar``,
   lag 1, same localization) started from ``--N`` climatological states and cycled over
   **all** ``--cycles`` observation times (they see the earlier observations, the diffusion
   posterior does not); and, with the same information as the diffusion posterior, a single
   LETKF analysis of the last observation from a climatological ensemble.
6. **Metrics** at the last time: RMSE of the posterior/ensemble mean to the truth, the
   spread (``√`` mean variance), the members' RMSE, and the kinetic-energy spectrum
   (:func:`jaxda.models.energy_spectrum`) of the mean and of the members, as the relative error
   of the energy in three wavenumber bands (large / intermediate / small scales) against the
   truth's.

Writes ``benchmarks/results/kolmogorov_sda[_quick].json`` and the figures
``kolmogorov_sda[_quick].png`` (fields and spectra) and ``kolmogorov_sda[_quick]_loss.png``.

Measured (CPU default, 2 cores shared with other jobs: data 36 s, training 1000 steps 15 min,
U-Net (8, 16, 32) with 126k parameters, final DSM loss 0.26; climatological std 5.06, RMSE of the
climatological mean 4.85; N = 16 members, inflation 1.05; RMSE / spread at the last time):

* coarse observations (4×4 block means, m = 64): diffusion from the last observation only
  MMPS + DPM++(2M) 16 steps 3.78 / 4.11, MMPS + EDM 12 steps 3.80 / 4.20, SDA + DDIM 32 steps
  3.87 / 4.36 (sample spectra within +2% to +42% of the truth's per band), MMPS + DDIM 32 steps
  diverged (11.4 / 30.3), DPS diverged; cycled over 10 times: 4DEnVar r = 3 3.13 / 1.73,
  LETKF r = 3 3.72 / 2.13; one LETKF analysis of the last observation 5.36 / 2.65;
* sparse observations (every 4th point, m = 64): nothing beats the climatological mean by much
  at this resolution (grid-scale vorticity): diffusion 4.42–4.69 with spread 4.7–5.1, the
  filters collapse (spread 0.3–0.8) with RMSE 6.0–10.2.

Usage::

    python benchmarks/bench_kolmogorov_sda.py --quick            # smoke run (minutes on CPU)
    python benchmarks/bench_kolmogorov_sda.py                    # CPU default: n = 32
    python benchmarks/bench_kolmogorov_sda.py --n 64 --sim-n 128 --channels 64 128 256 \\
        --depth 2 --train-steps 50000 --batch-size 64 --n-traj 256   # GPU, SDA-like size
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxda.assimilate import assimilate, with_inflation
from jaxda.diffusion import UNet2D, guided_score, sample, score_fn_from_model, train, vp_cosine
from jaxda.ensemble import fourdenvar, letkf

try:
    from _kolmogorov_case import bands, field, grid_locations, make_case, observe, scores, spectrum
except ImportError:  # imported as benchmarks.bench_kolmogorov_sda
    from benchmarks._kolmogorov_case import (
        bands,
        field,
        grid_locations,
        make_case,
        observe,
        scores,
        spectrum,
    )

RESULTS = Path(__file__).parent / "results"
DEFAULT_CONFIGS = ["mmps:ddim:32", "mmps:dpmpp2m:16", "mmps:edm:12", "sda:ddim:32", "dps:ddim:32"]


def _timed(fn, *args):
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def _compiled(fn, *args):
    """``(compile seconds, run seconds, output)`` of ``jax.jit(fn)(*args)``."""
    t = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    tc = time.perf_counter() - t
    out, tr = _timed(exe, *args)
    return tc, tr, out


def _strip(s: dict) -> dict:
    return {k: v for k, v in s.items() if not k.startswith("spectrum_")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny everything")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=32, help="grid side of the state")
    ap.add_argument("--sim-n", type=int, default=None, help="simulate on this grid, coarsen")
    ap.add_argument("--reynolds", type=float, default=1000.0)
    ap.add_argument("--interval", type=float, default=0.2, help="time between states")
    ap.add_argument("--n-traj", type=int, default=32)
    ap.add_argument("--records", type=int, default=64, help="states per training trajectory")
    ap.add_argument("--spinup", type=float, default=20.0, help="time units before recording")
    ap.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--emb-dim", type=int, default=32)
    ap.add_argument("--train-steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--checkpoint-dir", default=None, help="default: a folder in $TMPDIR")
    ap.add_argument("--cycles", type=int, default=10, help="observation times")
    ap.add_argument("--obs", nargs="+", choices=["sparse", "coarse"], default=["sparse", "coarse"])
    ap.add_argument("--obs-every", type=int, default=4)
    ap.add_argument("--obs-noise", type=float, default=0.1, help="x climatological std")
    ap.add_argument("--samples", type=int, default=8, help="posterior samples per config")
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                    help="guidance:sampler:steps, e.g. mmps:ddim:32")  # fmt: skip
    ap.add_argument("--cg-steps", type=int, default=3)
    ap.add_argument("--N", type=int, default=16, help="LETKF / 4DEnVar ensemble size")
    ap.add_argument("--radii", type=float, nargs="+", default=[3.0, 6.0],
                    help="localization radii (grid cells) of the LETKF and 4DEnVar")  # fmt: skip
    ap.add_argument("--inflation", type=float, default=1.05)
    args = ap.parse_args()
    if args.quick:
        args.n_traj, args.records, args.spinup = 16, 16, 10.0
        args.channels, args.train_steps, args.cycles = [8, 16], 100, 4
        args.samples, args.configs = 4, ["mmps:ddim:16", "dps:ddim:16"]
    suffix = "_quick" if args.quick else ""
    n = args.n
    ckpt = args.checkpoint_dir or os.path.join(
        tempfile.gettempdir(), f"jaxda_kolmogorov_sda_n{n}{suffix}_s{args.seed}"
    )
    out: dict = {"args": vars(args), "backend": jax.default_backend(), "checkpoint_dir": ckpt}
    key = jax.random.key(args.seed)
    k_case, k_train, k_prior, k_post, k_da = jax.random.split(key, 5)

    # 1. data -------------------------------------------------------------------------------
    t = time.perf_counter()
    case = make_case(
        k_case, n=n, sim_n=args.sim_n, reynolds=args.reynolds, interval=args.interval,
        n_traj=args.n_traj, n_records=args.records, spinup=args.spinup, n_cycles=args.cycles,
        n_clim=max(2 * args.N, 16), obs_kind=args.obs[0], obs_every=args.obs_every,
        obs_noise=args.obs_noise,
    )  # fmt: skip
    jax.block_until_ready(case.train)
    out["data"] = {
        "seconds": time.perf_counter() - t,
        "train_shape": list(case.train.shape),
        "mean": case.mean,
        "std": case.std,
        "obs_std": case.obs_std,
    }
    print(f"data: {out['data']}", flush=True)

    # 2. prior --------------------------------------------------------------------------------
    sde = vp_cosine()
    net = UNet2D(n, channels=tuple(args.channels), depth=args.depth, emb_dim=args.emb_dim,
                 rngs=nnx.Rngs(args.seed))  # fmt: skip
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(net, nnx.Param)))
    t = time.perf_counter()
    res = train(k_train, net, sde, case.train, n_steps=args.train_steps,
                batch_size=args.batch_size, learning_rate=args.lr,
                chunk=min(100, args.train_steps), checkpoint_dir=ckpt)  # fmt: skip
    loss = np.asarray(res.history.loss)
    w = max(1, len(loss) // 20)
    smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
    out["training"] = {
        "seconds_this_run": time.perf_counter() - t,
        "resumed_from": res.resumed_from,
        "n_params": n_params,
        "steps": int(res.n_steps),
        "status": int(res.status),
        "loss_first": float(smooth[0]),
        "loss_last": float(smooth[-1]),
        "loss_curve_every": w,
        "loss_curve": smooth[::w].tolist(),
    }
    print(f"training: {_strip(out['training'])}", flush=True)
    prior = score_fn_from_model(res.model, sde)

    def unstd(z):
        return z * case.std + case.mean

    # prior check: unconditional samples vs climatology
    S = args.samples
    tc, tr, zs = _compiled(
        lambda k: sample(k, prior, sde, (n * n,), S, method="ddim", n_steps=32).x, k_prior
    )
    E_clim = spectrum(case.climatology, n)
    E_prior = spectrum(unstd(zs), n)
    out["prior_check"] = {
        "seconds_compile": tc,
        "seconds_run": tr,
        "std_ratio": float(jnp.std(zs)),  # 1 for a perfect prior (standardized units)
        "spectral_error_vs_climatology": {
            f"k{lo}-{hi}": float(E_prior[lo : hi + 1].sum() / E_clim[lo : hi + 1].sum() - 1)
            for lo, hi in bands(n)
        },
        "spectrum_prior": E_prior.tolist(),
        "spectrum_climatology": E_clim.tolist(),
    }
    print(f"prior check: {_strip(out['prior_check'])}", flush=True)

    out["experiments"] = {}
    for kind in args.obs:
        case_k = observe(case, jax.random.fold_in(k_da, 7), kind, args.obs_every, args.obs_noise)
        print(f"\n=== observations: {kind}, every {args.obs_every}, m = {case_k.ys.shape[1]}")
        exp, posterior_samples = assimilation(case_k, args, prior, sde, unstd, k_post, k_da)
        out["experiments"][kind] = exp
        _figures(case_k, args, out, exp, posterior_samples, loss, f"{suffix}_{kind}")
    out["notes"] = (
        "RMSE and spread in vorticity units (climatological std in data.std). The filters "
        "assimilate all observation times up to the last; the diffusion posterior and the "
        "single LETKF analysis use the last observation only. Spectral errors: energy in the "
        "band / truth's energy in the band - 1, for the mean and for the members (mean "
        "spectrum). Times: compile and run separately, on a CPU shared with other jobs."
    )
    RESULTS.mkdir(exist_ok=True)
    _loss_figure(args, out, loss, suffix, n)
    path = RESULTS / f"kolmogorov_sda{suffix}.json"
    path.write_text(json.dumps(out, indent=1))
    for kind, exp in out["experiments"].items():
        print(f"\nsummary, {kind} observations (last time):")
        print(f"{'method':90s} {'RMSE':>7s} {'spread':>7s}  spectral error of members per band")
        for name, r in exp["results"].items():
            se = "  ".join(f"{k} {v:+.2f}" for k, v in r["spectral_error_samples"].items())
            print(f"{name:90s} {r['rmse_mean']:7.3f} {r['spread']:7.3f}  {se}")
    print("wrote", path)


def assimilation(case, args, prior, sde, unstd, k_post, k_da):
    """Diffusion posteriors, LETKF and 4DEnVar on the observations of ``case``."""
    n, S = case.n, args.samples
    exp: dict = {"obs_dim": int(case.ys.shape[1]), "obs_std": case.obs_std}
    # 3.-4. diffusion posterior at the last time, last observation only ----------------------
    truth = case.truth[-1]
    y = case.ys[-1]
    offset = case.obs_fn(jnp.full(n * n, case.mean, y.dtype))
    y_std = (y - offset) / case.std  # observations of the standardized state
    sigma_std = case.obs_std / case.std
    results: dict = {}
    posterior_samples: dict = {}
    for cfg in args.configs:
        g, method, steps = cfg.split(":")
        score = guided_score(prior, sde, case.obs_fn, y_std, sigma_std, guidance=g,
                             cg_steps=args.cg_steps)  # fmt: skip

        def draw(k, score=score, method=method, steps=int(steps)):
            r = sample(k, score, sde, (n * n,), S, method=method, n_steps=steps)
            return r.x, r.status

        tc, tr, (zs, status) = _compiled(draw, jax.random.fold_in(k_post, len(results)))
        xs = unstd(zs)
        posterior_samples[cfg] = xs
        results[f"diffusion {cfg} (last obs only)"] = {
            **scores(xs, truth, n),
            "n_failed": int(jnp.sum(status != 0)),
            "seconds_compile": tc,
            "seconds_run": tr,
        }
        print(f"{cfg}: {_strip(results[f'diffusion {cfg} (last obs only)'])}", flush=True)

    # 5. LETKF and 4DEnVar on the same observations ----------------------------------------------
    N = args.N
    E0 = case.climatology[:N]
    geo = dict(state_locations=grid_locations(n), periodic=True, domain_length=float(n))
    filters = {}
    for r in args.radii:
        filters[f"LETKF N={N} r={r:g} infl={args.inflation} (cycled, {args.cycles} obs times)"] = (
            with_inflation(letkf(r, **geo), args.inflation)
        )
        filters[
            f"4DEnVar N={N} r={r:g} infl={args.inflation} lag 1 (cycled, {args.cycles} obs times)"
        ] = fourdenvar(case.model, 1, localization_radius=r, inflation=args.inflation, **geo)
    for name, method in filters.items():

        def run(k, method=method):
            _, h = assimilate(k, method, case.model, case.series, E0, truth=case.truth,
                              store_ensembles=True)  # fmt: skip
            return h.ensemble_analysis[-1], h.rmse_analysis

        tc, tr, (Ea, rm) = _compiled(run, k_da)
        posterior_samples[name] = Ea
        results[name] = {**scores(Ea, truth, n), "seconds_compile": tc, "seconds_run": tr,
                         "rmse_analysis_per_time": np.asarray(rm).tolist()}  # fmt: skip
        print(f"{name}: {_strip(results[name])}", flush=True)
    for r in args.radii:
        one = letkf(r, **geo)

        def single(E, one=one):
            st = one.init(E, case.obs)
            return one.step(None, st, y, case.obs)[0].ensemble

        tc, tr, Ea = _compiled(single, case.climatology[N : 2 * N])
        name = f"LETKF N={N} r={r:g} (one analysis of the last obs, climatological ensemble)"
        posterior_samples[name] = Ea
        results[name] = {**scores(Ea, truth, n), "seconds_compile": tc, "seconds_run": tr}
        print(f"{name}: {_strip(results[name])}", flush=True)
    results["climatology (no observation)"] = scores(case.climatology, truth, n)
    exp["results"] = results
    exp["spectrum_truth"] = spectrum(truth, n).tolist()
    exp["bands"] = bands(n)
    return exp, posterior_samples


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _loss_figure(args, out, loss, suffix, n):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.semilogy(loss, lw=0.5, alpha=0.5, label="mini-batch")
    tr = out["training"]
    ax.semilogy(np.arange(len(tr["loss_curve"])) * tr["loss_curve_every"], tr["loss_curve"],
                label="running mean")  # fmt: skip
    ax.set(xlabel="step", ylabel="DSM loss", title=f"U-Net {args.channels}, n={n}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / f"kolmogorov_sda{suffix}_loss.png", dpi=100)
    plt.close(fig)


def _figures(case, args, out, exp, posterior_samples, loss, suffix):
    plt = _plt()
    n = case.n
    truth = case.truth[-1]
    diff = [k for k in posterior_samples if ":" in k]
    filt = [k for k in posterior_samples if ":" not in k]
    first = posterior_samples[diff[0]]
    panels = [("truth", truth)]
    panels.append((f"{diff[0]}: mean", first.mean(0)))
    panels += [(f"sample {i + 1}", first[i]) for i in range(2)]
    panels += [(k.split(" infl")[0].split(" (")[0] + (" cycled" if "cycled" in k else " 1 obs"),
                posterior_samples[k].mean(0)) for k in filt]  # fmt: skip
    lim = float(jnp.abs(truth).max())
    cols = len(panels) + 1
    fig, axes = plt.subplots(1, cols, figsize=(2.4 * cols, 2.9))
    for ax, (title, x) in zip(axes[:-1], panels, strict=True):
        ax.imshow(np.asarray(field(x, n)), origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(title, fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    loc = np.asarray(case.obs.operator.locations)
    axes[0].scatter(loc[:, 1], loc[:, 0], s=2, c="k")
    k = np.arange(len(exp["spectrum_truth"]))
    K = (n - 1) // 3
    s = slice(1, int(np.ceil(np.sqrt(2) * K)) + 1)
    ax = axes[-1]
    ax.loglog(k[s], np.asarray(exp["spectrum_truth"])[s], "k", lw=2, label="truth")
    for name, r in exp["results"].items():
        if name.startswith("climatology") or "one analysis" in name:
            continue
        short = name.split(" infl")[0].split(" (")[0].replace("diffusion ", "")
        ax.loglog(k[s], np.asarray(r["spectrum_samples"])[s], lw=1, label=short)
    ax.axvline(K, color="gray", ls=":", lw=1)
    ax.set(xlabel="k", title="E(k) of members, last time")
    ax.legend(fontsize=5)
    fig.tight_layout()
    fig.savefig(RESULTS / f"kolmogorov_sda{suffix}.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
