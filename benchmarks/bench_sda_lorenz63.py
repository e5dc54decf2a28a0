"""Score-based data assimilation (SDA) on noisy Lorenz-63 vs a bootstrap particle filter.

Setting of Rozet & Louppe (2023), Sec. 4.1: noisy Lorenz-63 chain (RK4, dt = 0.025, transition
noise N(0, dt I)), states standardized with mean (0, 0, 25) and std (8, 9, 8.6), a score network
trained on windows of 5 consecutive states, trajectories of 65 states, every 8th state observed
with σ = 0.05 (standardized units). Posterior trajectories are sampled with the windowed local
score + SDA guidance (predictor–corrector sampler) and compared, on the same cases, with a
bootstrap particle filter (genealogy-traced trajectories) that knows the true dynamics.

Metrics per case (standardized units):
* RMSE of the posterior-sample mean trajectory to the truth (65 × 3 values);
* data log-likelihood ``E_x log N(y | A(x), σ² I)`` averaged over posterior samples.

Run:  python benchmarks/bench_sda_lorenz63.py            (full, ~minutes on 2 CPU cores)
      python benchmarks/bench_sda_lorenz63.py --quick    (smoke test)
"""

from __future__ import annotations

import argparse
import math
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
    local_score,
    lorenz63_trajectories,
    noisy_lorenz63_step,
    posterior_score,
    predictor_corrector,
    score_fn_from_model,
    sliding_windows,
    train,
    vp_linear,
)
from jaxda.ensemble import bootstrap_particle_filter, pf_trajectories

WINDOW, LENGTH, EVERY, SIGMA = 5, 65, 8, 0.05


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--train-traj", type=int, default=512)
    ap.add_argument("--train-steps", type=int, default=6000)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--sampler-steps", type=int, default=256)
    ap.add_argument("--gamma", type=float, default=1e-2)
    ap.add_argument("--step-rule", default="curvature", choices=["curvature", "adaptive", "fixed"])
    ap.add_argument("--particles", type=int, default=32768)
    ap.add_argument("--ckpt", default=None, help="checkpoint directory (resume training)")
    args = ap.parse_args()
    if args.quick:
        args.train_traj, args.train_steps, args.cases, args.samples = 64, 300, 2, 8
        args.sampler_steps, args.particles = 64, 1024

    key = jax.random.key(2023)
    k_data, k_train, k_test, k_obs, k_sda, k_pf = jax.random.split(key, 6)
    sde = vp_linear()

    # ---- data --------------------------------------------------------------------------
    t0 = time.perf_counter()
    trajs = jax.block_until_ready(lorenz63_trajectories(k_data, args.train_traj, 129))
    z = STD.forward(trajs)
    windows = sliding_windows(z, WINDOW).reshape((-1, WINDOW * 3))
    t_data = time.perf_counter() - t0

    # ---- training ----------------------------------------------------------------------
    model = ResidualMLP(WINDOW * 3, width=args.width, depth=3, emb_dim=32, rngs=nnx.Rngs(0))
    t0 = time.perf_counter()
    res = train(
        k_train,
        model,
        sde,
        windows,
        n_steps=args.train_steps,
        batch_size=256,
        learning_rate=2e-3,
        chunk=250,
        checkpoint_dir=args.ckpt,
    )
    t_train = time.perf_counter() - t0
    raise_on_failure(res)
    model = res.model
    loss = np.asarray(res.history.loss)
    print(
        f"data {t_data:.1f}s ({windows.shape[0]} windows), training {t_train:.1f}s "
        f"(steps {len(loss)}, resumed from {res.resumed_from}), "
        f"loss first/last 100: {loss[:100].mean():.4f} / {loss[-100:].mean():.4f}"
    )

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

    # ---- SDA ---------------------------------------------------------------------------
    net_score = score_fn_from_model(model, sde)

    def window_score(w, t):
        return net_score(w.reshape(-1), t).reshape(w.shape)

    traj_score = local_score(window_score, WINDOW)

    def sda_case(key, y):
        post = posterior_score(traj_score, sde, obs_fn, y, SIGMA, gamma=args.gamma)
        k0, k1 = jax.random.split(key)
        x_T = sde.sample_terminal(k0, (args.samples, LENGTH, 3))

        def run(k, x):
            return predictor_corrector(
                k, post, sde, x, n_steps=args.sampler_steps, n_corrector=1, step_rule=args.step_rule
            )

        return jax.vmap(run)(jax.random.split(k1, args.samples), x_T)

    sda = jax.jit(jax.vmap(sda_case))
    keys = jax.random.split(k_sda, args.cases)
    t0 = time.perf_counter()
    sda_c = sda.lower(keys, ys_flat).compile()
    t_sda_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    res_sda = jax.block_until_ready(sda_c(keys, ys_flat))
    t_sda = time.perf_counter() - t0
    raise_on_failure(res_sda)
    X_sda = res_sda.x  # (B, S, 65, 3)

    # ---- bootstrap particle filter reference -------------------------------------------
    pool = trajs.reshape((-1, 3))  # attractor states (physical): prior of the first state
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

    # ---- metrics -----------------------------------------------------------------------
    def metrics(X):
        mean = X.mean(axis=1)
        rmse = jnp.sqrt(jnp.mean((mean - truth) ** 2, axis=(1, 2)))
        ll = jax.vmap(lambda Xs, y: jax.vmap(data_loglik, (0, None))(Xs, y).mean())(X, ys_flat)
        spread = jnp.sqrt(jnp.mean(X.var(axis=1), axis=(1, 2)))
        return np.asarray(rmse), np.asarray(ll), np.asarray(spread)

    r_sda, ll_sda, sp_sda = metrics(X_sda)
    r_pf, ll_pf, sp_pf = metrics(X_pf)
    ll_truth = np.asarray(jax.vmap(data_loglik)(truth, ys_flat))
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

    print()
    print(
        f"Lorenz-63 SDA, {args.cases} cases x {args.samples} posterior samples, "
        f"{LENGTH} states, every {EVERY}th observed, sigma={SIGMA} (standardized units)"
    )
    print(
        "| method | mean-trajectory RMSE | data log-lik | sample spread | run time [s] | compile [s] |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| SDA (window {WINDOW}, PC {args.sampler_steps} steps, {args.step_rule}, gamma={args.gamma}) | "
        f"{r_sda.mean():.3f} ± {r_sda.std():.3f} | {ll_sda.mean():.1f} | {sp_sda.mean():.3f} | "
        f"{t_sda:.1f} | {t_sda_compile:.1f} |"
    )
    print(
        f"| bootstrap PF ({args.particles} particles, true model) | {r_pf.mean():.3f} ± {r_pf.std():.3f} | "
        f"{ll_pf.mean():.1f} | {sp_pf.mean():.3f} | {t_pf:.1f} | {t_pf_compile:.1f} |"
    )
    print(
        f"| linear interpolation of observations | {r_int.mean():.3f} ± {r_int.std():.3f} | – | – | – | – |"
    )
    print(f"| truth | 0 | {ll_truth.mean():.1f} | – | – | – |")
    print()
    print(
        f"ratio RMSE SDA/PF = {r_sda.mean() / r_pf.mean():.2f}; "
        f"data log-lik SDA - PF = {ll_sda.mean() - ll_pf.mean():.1f}; "
        f"PF min ESS = {float(jnp.min(ess)):.0f}; PF mean log-evidence = {float(jnp.mean(log_ev)):.1f}; "
        f"training time {t_train:.0f}s"
    )
    print("per-case RMSE SDA:", np.round(r_sda, 3).tolist())
    print("per-case RMSE PF: ", np.round(r_pf, 3).tolist())


if __name__ == "__main__":
    main()
