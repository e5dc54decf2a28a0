"""Score-based data assimilation (SDA) on noisy Lorenz-63: samplers × guidance vs a bootstrap PF.

Setting of Rozet & Louppe (2023), Sec. 4.1: noisy Lorenz-63 chain (RK4, dt = 0.025, transition
noise N(0, dt I)), states standardized with mean (0, 0, 25) and std (8, 9, 8.6), a score network
trained on windows of 5 consecutive states, trajectories of 65 states, every 8th state observed
with σ = 0.05 (standardized units). The network is trained once (or restored from ``--ckpt``);
posterior trajectories of the SAME cases are then sampled with the windowed local score and
several sampler × guidance combinations side by side:

* the reference: predictor–corrector (256 steps, one Langevin corrector, curvature step rule)
  with SDA guidance ``Σ_y + γ(σ_t/μ_t)² I`` (Rozet & Louppe 2023);
* few-step samplers DDIM, DPM-Solver++(2M) and EDM Heun with SDA or MMPS guidance
  (moment matching, ``Σ_y + A V_t Aᵀ`` by conjugate gradients; Rozet et al. 2024);

and compared with a bootstrap particle filter (genealogy-traced trajectories) that knows the
true dynamics, on the same cases.

Metrics per case (standardized units):
* RMSE of the posterior-sample mean trajectory to the truth (65 × 3 values);
* RMSE of that mean to the PF posterior mean (how close to the reference posterior);
* data log-likelihood ``E_x log N(y | A(x), σ² I)`` averaged over posterior samples;
* sample spread; sampling wall time (compiled, ``block_until_ready``, median of ``--repeats``
  runs) and its ratio to the PC reference; number of score-network evaluations per sample
  (NFE, network passes, counting a vector–Jacobian or Jacobian–vector product as one).

A combination is ``sampler:steps:guidance[:opt=value,...]`` with sampler ``pc | ddim | dpmpp2m |
edm``, guidance ``sda | mmps | dps | kalman`` and options ``gamma`` (SDA γ), ``cg`` (MMPS CG steps),
``tswitch`` (use the guidance only for ``t ≤ tswitch`` and SDA with ``ghi`` above, default
``gamma``), ``ghi``, sampler ``ddpmlc`` (DDPM step + one Langevin corrector, adaptive rule,
after the steps ending below ``t = lcbelow``, default 1), ``kappa`` (guidance ``kalman``: DDPM
/ DDIM steps whose Tweedie mean is Kalman-updated by the observations with the isotropic
covariance ``κ σ²/(μ² + σ²)``, no Jacobian: one network pass per step),
``sparse=1`` (guidance ``sda``: the same guided score, but the vector–Jacobian product goes
through the 9 windows whose centres are observed instead of all 61: only they carry the
observed states' Tweedie means; identical up to rounding, about half the cost per evaluation),
``width``, ``depth``, ``traj``, ``steps`` (the prior: network width and residual blocks,
training trajectories and training steps; default ``--width``, ``--depth``, ``--train-traj``,
``--train-steps``; each prior is trained once, all of them before any sampling), ``eta``
(DDIM), ``grid`` (DDIM ``t`` | ``log_snr``), ``churn``/``rho`` (EDM), ``tend`` (final time),
``rule`` (PC step rule), ``denoise=1`` (return Tweedie's ``x̂_0`` of the last state instead of
the noisy state at ``t_end``).

``--ckpt DIR`` keeps one checkpoint per prior under ``DIR`` (``w64-d3-traj512-steps6000``
for the defaults) and resumes from it. The first ``pc`` combination is the reference of the
time ratio. ``--step-rule``-like options go in the combination (``pc:256:sda:rule=adaptive``
is the setting of the README's 0.057).

Run:  python benchmarks/bench_sda_lorenz63.py --ckpt /tmp/sda_l63_ckpt     (~8 min on 2 cores)
      python benchmarks/bench_sda_lorenz63.py --quick                       (smoke test)
      python benchmarks/bench_sda_lorenz63.py --combos pc:256:sda:rule=adaptive \
          pc:256:sda:rule=adaptive,sparse=1,width=32,depth=1,traj=4096,steps=80000
          (the README's small prior against the reference, ~2 min)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxda.core import raise_on_failure
from jaxda.diffusion import (
    LORENZ63_STANDARDIZER as STD,
)
from jaxda.diffusion import (
    ResidualMLP,
    SampleResult,
    ddim,
    dpmpp_2m,
    edm_heun,
    guided_score,
    local_score,
    lorenz63_trajectories,
    noisy_lorenz63_step,
    predictor_corrector,
    score_fn_from_model,
    sliding_windows,
    train,
    vp_linear,
)
from jaxda.ensemble import bootstrap_particle_filter, pf_trajectories

WINDOW, LENGTH, EVERY, SIGMA = 5, 65, 8, 0.05

DEFAULT_COMBOS = (
    "pc:256:sda:rule=adaptive",  # the README's 0.057 setting: reference of the time ratio
    "pc:256:sda",  # curvature step rule (the library default)
    "ddim:96:sda:eta=1",  # DDPM ancestral steps
    "ddim:128:sda:eta=1",
    "ddim:192:sda:eta=1,gamma=0.005",
    "ddim:64:sda:gamma=0.1",  # deterministic samplers (γ = 0.01 diverges at 64 steps)
    "dpmpp2m:64:sda:gamma=0.1",
    "edm:32:sda:gamma=0.1,churn=20",
    "ddim:128:mmps:eta=1,tswitch=0.4",  # MMPS below t = 0.4, SDA above
)

QUICK_COMBOS = ("pc:64:sda", "ddim:16:sda", "dpmpp2m:16:mmps", "edm:8:mmps")
_OPTS = {
    "gamma",
    "cg",
    "eta",
    "grid",
    "churn",
    "rho",
    "tend",
    "rule",
    "denoise",
    "snr",
    "tswitch",
    "ghi",
    "lcbelow",
    "kappa",
    "sparse",
    "width",
    "depth",
    "traj",
    "steps",
}


def parse_combo(spec: str) -> dict:
    """``sampler:steps:guidance[:k=v,...]`` -> dict (validated)."""
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(f"combo must be sampler:steps:guidance[:opts], got {spec!r}")
    sampler, steps, guidance = parts[0], int(parts[1]), parts[2]
    if sampler not in ("pc", "ddim", "dpmpp2m", "edm", "ddpmlc"):
        raise ValueError(f"unknown sampler {sampler!r} in {spec!r}")
    if guidance not in ("sda", "mmps", "dps", "kalman"):
        raise ValueError(f"unknown guidance {guidance!r} in {spec!r}")
    if guidance == "kalman" and sampler != "ddim":
        raise ValueError(f"guidance 'kalman' is a DDIM/DDPM step: use ddim:N:kalman, got {spec!r}")
    opts: dict = {}
    if len(parts) == 4 and parts[3]:
        for kv in parts[3].split(","):
            k, v = kv.split("=")
            if k not in _OPTS:
                raise ValueError(f"unknown option {k!r} in {spec!r} (known: {sorted(_OPTS)})")
            opts[k] = v
    return {"spec": spec, "sampler": sampler, "steps": steps, "guidance": guidance, "opts": opts}


def nfe(c: dict) -> int:
    """Network passes per sample (forward, VJP or JVP each count 1), ignoring PC substeps."""
    per_eval = {"sda": 2, "dps": 2, "mmps": 2 + int(c["opts"].get("cg", 1)), "kalman": 1}[
        c["guidance"]
    ]
    n = c["steps"]
    evals = {"pc": 2 * n, "ddim": n, "dpmpp2m": n, "edm": 2 * n - 1, "ddpmlc": 2 * n}[c["sampler"]]
    if c["sampler"] == "ddpmlc":  # correctors only after the steps ending below t = lcbelow
        ts = np.linspace(1.0, vp_linear().t_min, n + 1)[1:]  # the benchmark's SDE
        evals = n + int(np.sum(ts < float(c["opts"].get("lcbelow", 1.0))))
    if c["sampler"] == "pc" and c["opts"].get("rule", "curvature") == "curvature":
        per_eval *= 2  # JVP of the guided score for the power iteration
    return evals * per_eval


def main():
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--train-traj", type=int, default=512)
    ap.add_argument("--train-steps", type=int, default=6000)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--gamma", type=float, default=1e-2, help="default SDA γ")
    ap.add_argument("--cg", type=int, default=1, help="default MMPS conjugate-gradient steps")
    ap.add_argument("--combos", nargs="+", default=None, help="sampler:steps:guidance[:opts]")
    ap.add_argument("--particles", type=int, default=32768)
    ap.add_argument("--ckpt", default=None, help="checkpoint directory (resume training)")
    ap.add_argument(
        "--repeats", type=int, default=3, help="sampling runs per combination (median time)"
    )
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--no-pf", action="store_true", help="skip the particle filter")
    ap.add_argument("--json", default="benchmarks/results/sda_lorenz63.json")
    args = ap.parse_args()
    if args.quick:
        args.train_traj, args.train_steps, args.cases, args.samples = 64, 300, 2, 8
        args.particles, args.repeats = 1024, 1
        if args.combos is None:
            args.combos = list(QUICK_COMBOS)
    combos = [parse_combo(s) for s in (args.combos or DEFAULT_COMBOS)]

    key = jax.random.key(2023)
    k_data, k_train, k_test, k_obs, k_sda, k_pf = jax.random.split(key, 6)
    sde = vp_linear()

    # ---- priors: data and training, once per (width, depth, trajectories, steps) ------------
    priors: dict[tuple[int, int, int, int], dict] = {}

    def prior(width: int, depth: int, n_traj: int, n_steps: int) -> dict:
        """The window score network of this size trained on ``n_traj`` trajectories."""
        spec = (width, depth, n_traj, n_steps)
        if spec in priors:
            return priors[spec]
        t0 = time.perf_counter()
        trajs = jax.block_until_ready(lorenz63_trajectories(k_data, n_traj, 129))
        windows = sliding_windows(STD.forward(trajs), WINDOW).reshape((-1, WINDOW * 3))
        t_data = time.perf_counter() - t0
        model = ResidualMLP(WINDOW * 3, width=width, depth=depth, emb_dim=32, rngs=nnx.Rngs(0))
        t0 = time.perf_counter()
        res = train(
            k_train,
            model,
            sde,
            windows,
            n_steps=n_steps,
            batch_size=256,
            learning_rate=2e-3,
            chunk=250,
            checkpoint_dir=(
                None
                if args.ckpt is None
                else os.path.join(args.ckpt, f"w{width}-d{depth}-traj{n_traj}-steps{n_steps}")
            ),
        )
        t_train = time.perf_counter() - t0
        raise_on_failure(res)
        loss = np.asarray(res.history.loss)
        print(
            f"prior width {width}, depth {depth}, {n_traj} trajectories: data {t_data:.1f}s "
            f"({windows.shape[0]} windows), training {t_train:.1f}s (steps {len(loss)}, "
            f"resumed from {res.resumed_from}), loss first/last 100: "
            f"{loss[:100].mean():.4f} / {loss[-100:].mean():.4f}",
            flush=True,
        )
        net_score = score_fn_from_model(res.model, sde)

        def window_score(w, t):
            return net_score(w.reshape(-1), t).reshape(w.shape)

        priors[spec] = {
            "window_score": window_score,
            "traj_score": local_score(window_score, WINDOW),
            "training": {
                "width": width,
                "depth": depth,
                "train_traj": n_traj,
                "train_steps": n_steps,
                "time": t_train,
                "resumed_from": int(res.resumed_from),
                "loss_first100": float(loss[:100].mean()),
                "loss_last100": float(loss[-100:].mean()),
            },
        }
        return priors[spec]

    def prior_of(c: dict) -> dict:
        o = c["opts"]
        return prior(
            int(o.get("width", args.width)),
            int(o.get("depth", args.depth)),
            int(o.get("traj", args.train_traj)),
            int(o.get("steps", args.train_steps)),
        )

    for c in combos:  # train every prior before any timing
        prior_of(c)
    if args.train_only:
        return

    # ---- test cases ------------------------------------------------------------------------
    truth_phys = lorenz63_trajectories(k_test, args.cases, LENGTH)
    truth = STD.forward(truth_phys)  # (B, 65, 3)
    obs_idx = jnp.arange(0, LENGTH, EVERY)
    ys = truth[:, obs_idx] + SIGMA * jax.random.normal(k_obs, truth[:, obs_idx].shape)
    ys_flat = ys.reshape((args.cases, -1))

    def obs_fn(X):
        return X[obs_idx].ravel()

    def data_loglik(X, y):
        r = (y - obs_fn(X)) / SIGMA
        return -0.5 * jnp.sum(r**2) - y.size * (math.log(SIGMA) + 0.5 * math.log(2 * math.pi))

    def metrics(X, ref_mean=None):
        mean = X.mean(axis=1)
        out = {
            "rmse": np.asarray(jnp.sqrt(jnp.mean((mean - truth) ** 2, axis=(1, 2)))),
            "loglik": np.asarray(
                jax.vmap(lambda Xs, y: jax.vmap(data_loglik, (0, None))(Xs, y).mean())(X, ys_flat)
            ),
            "spread": np.asarray(jnp.sqrt(jnp.mean(X.var(axis=1), axis=(1, 2)))),
        }
        if ref_mean is not None:
            out["rmse_to_pf"] = np.asarray(jnp.sqrt(jnp.mean((mean - ref_mean) ** 2, axis=(1, 2))))
        return out

    # ---- bootstrap particle filter reference -------------------------------------------
    pf_row = None
    pf_mean = None
    if not args.no_pf:
        # attractor states (physical), the default prior's training data: prior of the first state
        pool = lorenz63_trajectories(k_data, args.train_traj, 129).reshape((-1, 3))
        mask = (jnp.arange(LENGTH) % EVERY) == 0
        ys_full = jnp.zeros((args.cases, LENGTH, 3)).at[:, obs_idx].set(ys)

        def pf_case(key, y_full):
            ki, kf, kt = jax.random.split(key, 3)
            p0 = pool[jax.random.randint(ki, (args.particles,), 0, pool.shape[0])]
            p0 = p0 + 0.1 * jax.random.normal(jax.random.fold_in(ki, 1), p0.shape)

            def loglik(x, y):
                r = (y - STD.forward(x)) / SIGMA
                return -0.5 * jnp.sum(r**2)

            res = bootstrap_particle_filter(kf, noisy_lorenz63_step, loglik, p0, y_full, mask=mask)
            return STD.forward(pf_trajectories(kt, res, args.samples)), res.log_evidence, res.ess

        pf = jax.jit(lambda ks, yf: jax.lax.map(lambda a: pf_case(*a), (ks, yf)))
        keys = jax.random.split(k_pf, args.cases)
        t0 = time.perf_counter()
        pf_c = pf.lower(keys, ys_full).compile()
        t_pf_compile = time.perf_counter() - t0
        t0 = time.perf_counter()
        X_pf, log_ev, ess = jax.block_until_ready(pf_c(keys, ys_full))
        t_pf = time.perf_counter() - t0
        pf_mean = X_pf.mean(axis=1)
        m = metrics(X_pf)
        pf_row = {
            "name": f"bootstrap PF ({args.particles} particles, true model)",
            **{k: float(v.mean()) for k, v in m.items()},
            "rmse_std": float(m["rmse"].std()),
            "per_case_rmse": np.round(m["rmse"], 4).tolist(),
            "time": t_pf,
            "compile": t_pf_compile,
            "min_ess": float(jnp.min(ess)),
            "mean_log_evidence": float(jnp.mean(log_ev)),
        }
        print(
            f"PF: RMSE {pf_row['rmse']:.3f}, log-lik {pf_row['loglik']:.1f}, "
            f"spread {pf_row['spread']:.3f}, {t_pf:.1f}s (compile {t_pf_compile:.1f}s)",
            flush=True,
        )

    # ---- diffusion posterior samplers --------------------------------------------------
    # the window read for each observed state in local_score (start, position in the window)
    k_half = WINDOW // 2
    obs_start = jnp.clip(obs_idx - k_half, 0, LENGTH - WINDOW)
    obs_pos = obs_idx - obs_start
    obs_windows = obs_start[:, None] + jnp.arange(WINDOW)[None, :]

    def sparse_sda_score(p, y, gamma):
        """SDA guided score whose VJP runs through the observed states' windows only.

        ``obs_fn(x̂_0(x))`` reads ``x̂_0`` at the observed states, and local_score takes the
        score of state ``i`` from one window, so the likelihood term depends on ``x`` only
        through those windows; the prior score of every state is a forward pass."""

        def score(x, t):
            t = jnp.asarray(t)
            s = p["traj_score"](x, t)

            def predict(x):
                s_w = jax.vmap(p["window_score"], in_axes=(0, None))(x[obs_windows], t)
                s_o = s_w[jnp.arange(obs_idx.size), obs_pos]
                return sde.tweedie(x[obs_idx], s_o, t).ravel()

            h, vjp_fn = jax.vjp(predict, x)
            w = (y - h) / (SIGMA**2 + gamma * (sde.std(t) / sde.mean_coef(t)) ** 2)
            (g,) = vjp_fn(w)
            return s + g

        return score

    def ddim_move(x0, ep, t, t1, z, eta):
        """The DDIM step from ``t`` to ``t1`` given Tweedie's ``x̂_0, ε̂`` (``eta = 1``: DDPM)."""
        a, sg, a1, s1 = sde.mean_coef(t), sde.std(t), sde.mean_coef(t1), sde.std(t1)
        c = eta * s1 * jnp.sqrt(jnp.clip(1.0 - ((a * s1) / (a1 * sg)) ** 2, 0.0, 1.0))
        return a1 * x0 + jnp.sqrt(jnp.maximum(s1**2 - c**2, 0.0)) * ep + c * z

    def ddpm_langevin(key, post, x_T, n, snr, below=1.0):
        """DDPM ancestral step (DDIM η = 1) + one Langevin corrector with Song's adaptive step
        after the steps that end below ``t = below``."""
        ts = jnp.linspace(1.0, sde.t_min, n + 1)

        def step(x, inp):
            k, t, t1 = inp
            k1, k2 = jax.random.split(k)
            a, sg = sde.mean_coef(t), sde.std(t)
            sc = post(x, t)
            x0, ep = (x + sg**2 * sc) / a, -sg * sc
            x = ddim_move(x0, ep, t, t1, jax.random.normal(k1, x.shape), 1.0)

            def correct(x):
                sc = post(x, t1)
                v = jnp.minimum(sc.size / jnp.maximum(jnp.sum(sc**2), 1e-30), 1.0)
                eps = 2.0 * snr**2 * v
                return x + eps * sc + jnp.sqrt(2.0 * eps) * jax.random.normal(k2, x.shape)

            return jax.lax.cond(t1 < below, correct, lambda x: x, x), None

        x, _ = jax.lax.scan(step, x_T, (jax.random.split(key, n), ts[:-1], ts[1:]))
        return SampleResult(x, jnp.where(jnp.all(jnp.isfinite(x)), 0, 1), jnp.asarray(n))

    def make_sampler(c):
        o = c["opts"]
        gamma = float(o.get("gamma", args.gamma))
        cg = int(o.get("cg", args.cg))
        t_end = float(o["tend"]) if "tend" in o else None
        denoise = bool(int(o.get("denoise", 0)))
        n = c["steps"]
        p = prior_of(c)
        traj_score = p["traj_score"]

        def one(key, post, x_T):
            s = c["sampler"]
            if s == "pc":
                return predictor_corrector(
                    key,
                    post,
                    sde,
                    x_T,
                    n_steps=n,
                    n_corrector=1,
                    snr=float(o.get("snr", 0.16)),
                    step_rule=o.get("rule", "curvature"),
                    t_end=t_end,
                )
            if s == "ddim":
                return ddim(
                    key,
                    post,
                    sde,
                    x_T,
                    n_steps=n,
                    eta=float(o.get("eta", 0.0)),
                    grid=o.get("grid", "t"),
                    t_end=t_end,
                )
            if s == "ddpmlc":
                below = float(o.get("lcbelow", 1.0))
                return ddpm_langevin(key, post, x_T, n, float(o.get("snr", 0.16)), below)
            if s == "edm":
                return edm_heun(
                    key,
                    post,
                    sde,
                    x_T,
                    n_steps=n,
                    rho=float(o.get("rho", 7.0)),
                    s_churn=float(o.get("churn", 0.0)),
                    t_end=t_end,
                )
            return dpmpp_2m(post, sde, x_T, n_steps=n, t_end=t_end)

        te = jnp.asarray(sde.t_min if t_end is None else t_end)

        def kalman_ddpm(key, y, x_T):
            """DDPM/DDIM steps whose Tweedie mean is updated by the observations with the
            isotropic covariance ``r² = κ σ²/(μ² + σ²)`` (no Jacobian, no VJP)."""
            ts = jnp.linspace(1.0, sde.t_min, n + 1)
            eta = float(o.get("eta", 1.0))
            kappa = float(o.get("kappa", 1.0))
            yo = y.reshape(-1, 3)

            def step(x, inp):
                k, t, t1 = inp
                a, sg = sde.mean_coef(t), sde.std(t)
                sc = traj_score(x, t)
                x0, ep = (x + sg**2 * sc) / a, -sg * sc
                r2 = kappa * sg**2 / (a**2 + sg**2)
                x0 = x0.at[obs_idx].add(r2 / (r2 + SIGMA**2) * (yo - x0[obs_idx]))
                return ddim_move(x0, ep, t, t1, jax.random.normal(k, x.shape), eta), None

            x, _ = jax.lax.scan(step, x_T, (jax.random.split(key, n), ts[:-1], ts[1:]))
            return SampleResult(x, jnp.where(jnp.all(jnp.isfinite(x)), 0, 1), jnp.asarray(n))

        def case(key, y):
            k0, k1 = jax.random.split(key)
            x_T = sde.sample_terminal(k0, (args.samples, LENGTH, 3))
            ks = jax.random.split(k1, args.samples)
            if c["guidance"] == "kalman":
                r = jax.vmap(lambda k, x: kalman_ddpm(k, y, x))(ks, x_T)
                return r.x, r.status
            if bool(int(o.get("sparse", 0))):
                if c["guidance"] != "sda" or "tswitch" in o:
                    raise ValueError(f"sparse=1 is for plain sda guidance, got {c['spec']!r}")
                post = sparse_sda_score(p, y, gamma)
            else:
                post = guided_score(
                    traj_score,
                    sde,
                    obs_fn,
                    y,
                    SIGMA,
                    guidance=c["guidance"],
                    gamma=gamma,
                    cg_steps=cg,
                )
            if "tswitch" in o:  # this guidance only for t <= tswitch, SDA (γ) above
                low, t_sw = post, float(o["tswitch"])
                g_hi = float(o.get("ghi", gamma))
                high = guided_score(traj_score, sde, obs_fn, y, SIGMA, guidance="sda", gamma=g_hi)

                def switched(x, t):
                    return jax.lax.cond(jnp.asarray(t) > t_sw, high, low, x, t)

                post = switched

            r = jax.vmap(lambda k, x: one(k, post, x))(ks, x_T)
            x = r.x
            if denoise:  # Tweedie's x̂_0 of the final state (posterior score at t_end)
                x = jax.vmap(lambda xi: sde.tweedie(xi, post(xi, te), te))(x)
            return x, r.status

        return jax.jit(jax.vmap(case))

    # the sparse score is the dense one, up to rounding: checked once per prior that uses it
    sparse_priors = {
        id(prior_of(c)): prior_of(c) for c in combos if bool(int(c["opts"].get("sparse", 0)))
    }
    xs = jax.random.normal(jax.random.key(7), (3, LENGTH, 3))
    for p in sparse_priors.values():
        dense = guided_score(
            p["traj_score"], sde, obs_fn, ys_flat[0], SIGMA, guidance="sda", gamma=args.gamma
        )
        sparse = sparse_sda_score(p, ys_flat[0], args.gamma)
        rel = []
        for t in (0.9, 0.3, 0.05, 0.002):
            a = jax.vmap(dense, in_axes=(0, None))(xs, jnp.asarray(t))
            b = jax.vmap(sparse, in_axes=(0, None))(xs, jnp.asarray(t))
            rel.append(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a))))
        spec = "/".join(
            str(p["training"][k]) for k in ("width", "depth", "train_traj", "train_steps")
        )
        print(f"prior {spec}: sparse vs dense SDA score, max relative difference {max(rel):.1e}")
        if not max(rel) < 1e-4:
            raise RuntimeError(f"sparse SDA score differs from the dense one: {rel}")

    keys = jax.random.split(k_sda, args.cases)  # the same keys (x_T) for every combination
    rows = []
    t_ref = None
    for c in combos:
        fn = make_sampler(c)
        t0 = time.perf_counter()
        fc = fn.lower(keys, ys_flat).compile()
        t_comp = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):  # the same inputs, so the same samples each time
            t0 = time.perf_counter()
            X, status = jax.block_until_ready(fc(keys, ys_flat))
            times.append(time.perf_counter() - t0)
        t_run = float(np.median(times))
        n_bad = int(jnp.sum(status != 0))
        m = metrics(X, pf_mean)
        if c["sampler"] == "pc" and t_ref is None:
            t_ref = t_run
        row = {
            "spec": c["spec"],
            "sampler": c["sampler"],
            "steps": c["steps"],
            "guidance": c["guidance"],
            "opts": c["opts"],
            "prior": {
                k: prior_of(c)["training"][k]
                for k in ("width", "depth", "train_traj", "train_steps")
            },
            "gamma": float(c["opts"].get("gamma", args.gamma)) if c["guidance"] == "sda" else None,
            "cg": int(c["opts"].get("cg", args.cg)) if c["guidance"] == "mmps" else None,
            "nfe": nfe(c),
            **{k: float(np.nanmean(v)) for k, v in m.items()},
            "rmse_std": float(np.nanstd(m["rmse"])),
            "per_case_rmse": np.round(m["rmse"], 4).tolist(),
            "nonfinite_samples": n_bad,
            "time": t_run,
            "times": times,
            "compile": t_comp,
        }
        rows.append(row)
        print(
            f"{c['spec']:<36} RMSE {row['rmse']:.3f} ± {row['rmse_std']:.3f}"
            + (f" (to PF {row['rmse_to_pf']:.3f})" if pf_mean is not None else "")
            + f", log-lik {row['loglik']:.1f}, spread {row['spread']:.3f}, "
            f"{t_run:.1f}s (compile {t_comp:.1f}s), nfe {row['nfe']}, bad {n_bad}",
            flush=True,
        )
    ref = next((r for r in rows if r["sampler"] == "pc"), None)
    for row in rows:
        row["time_ratio_to_pc"] = None if t_ref is None else row["time"] / t_ref
        if ref is not None:  # paired over the same cases: mean and standard error
            d = np.asarray(row["per_case_rmse"]) - np.asarray(ref["per_case_rmse"])
            row["rmse_minus_ref"] = float(d.mean())
            row["rmse_minus_ref_se"] = float(d.std(ddof=1) / np.sqrt(d.size)) if d.size > 1 else 0.0

    # observation-only baseline: linear interpolation of the observed states
    t_all = np.arange(LENGTH)
    interp = np.stack(
        [
            np.stack(
                [np.interp(t_all, np.asarray(obs_idx), np.asarray(ys[b, :, d])) for d in range(3)],
                -1,
            )
            for b in range(args.cases)
        ]
    )
    r_int = np.sqrt(np.mean((interp - np.asarray(truth)) ** 2, axis=(1, 2)))
    ll_truth = np.asarray(jax.vmap(data_loglik)(truth, ys_flat))

    print()
    print(
        f"Lorenz-63 SDA, {args.cases} cases x {args.samples} posterior samples, "
        f"{LENGTH} states, every {EVERY}th observed, sigma={SIGMA} (standardized units); "
        "priors (width/depth/training trajectories/steps: training time): "
        + ", ".join(
            f"{w}/{dp}/{n}/{k}: {p['training']['time']:.0f}s (resumed from step "
            f"{p['training']['resumed_from']})"
            for (w, dp, n, k), p in priors.items()
        )
    )
    print(
        "| sampler | guidance | prior | steps | NFE | RMSE to truth | − reference (paired) "
        "| RMSE to PF mean | data log-lik | spread | time [s] | × PC time | compile [s] |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        g = r["guidance"] + (
            f" γ={r['gamma']:g}"
            if r["gamma"] is not None
            else (f" cg={r['cg']}" if r["cg"] is not None else "")
        )
        extra = {
            k: v
            for k, v in r["opts"].items()
            if k not in ("gamma", "cg", "width", "depth", "traj", "steps")
        }
        pr = "/".join(str(v) for v in r["prior"].values())
        diff = (
            f"{r['rmse_minus_ref']:+.4f} ± {r['rmse_minus_ref_se']:.4f}"
            if "rmse_minus_ref" in r
            else "–"
        )
        s = r["sampler"] + (" " + ",".join(f"{k}={v}" for k, v in extra.items()) if extra else "")
        ratio = "–" if r["time_ratio_to_pc"] is None else f"{r['time_ratio_to_pc']:.3f}"
        to_pf = f"{r['rmse_to_pf']:.3f}" if "rmse_to_pf" in r else "–"
        print(
            f"| {s} | {g} | {pr} | {r['steps']} | {r['nfe']} | {r['rmse']:.3f} ± {r['rmse_std']:.3f} "
            f"| {diff} | {to_pf} | {r['loglik']:.1f} | {r['spread']:.3f} | {r['time']:.1f} | {ratio} | "
            f"{r['compile']:.1f} |"
        )
    if pf_row is not None:
        print(
            f"| {pf_row['name']} | – | – | – | – | {pf_row['rmse']:.3f} ± {pf_row['rmse_std']:.3f} "
            "| – | 0 | "
            f"{pf_row['loglik']:.1f} | {pf_row['spread']:.3f} | {pf_row['time']:.1f} | "
            f"{pf_row['time'] / t_ref if t_ref else float('nan'):.3f} | {pf_row['compile']:.1f} |"
        )
    print(
        f"| linear interpolation of observations | – | – | – | – | {r_int.mean():.3f} | – | – | – "
        "| – | – | – | – |"
    )
    print(f"| truth | – | – | – | – | 0 | – | – | {ll_truth.mean():.1f} | – | – | – | – |")

    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        out = {
            "benchmark": "bench_sda_lorenz63",
            "args": vars(args),
            "machine": {
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "loadavg_at_end": os.getloadavg(),
                "backend": jax.default_backend(),
            },
            "training": [p["training"] for p in priors.values()],
            "rows": rows,
            "pf": pf_row,
            "interp_rmse": float(r_int.mean()),
            "truth_loglik": float(ll_truth.mean()),
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
