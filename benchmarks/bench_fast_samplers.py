"""Few-step samplers (DDIM, EDM Heun, DPM-Solver++(2M)) against the SDE samplers, with guidance.

Problem: Gaussian prior ``N(m, C)`` in ``d = 3`` with its exact score, linear observation
``y = H x + η``, ``η ~ N(0, σ_y² I)`` (``σ_y = 0.05``: a sharp, stiff posterior), guided score
:func:`jaxda.diffusion.posterior_score` with the exact Gaussian ``p(y | x_t)`` covariance, so the
target is the exact conditional Gaussian diffused to ``t_min``: ``N(μ m_a, μ² C_a + σ² I)``.

Errors (relative, ``‖mean - mean*‖/‖mean*‖`` and Frobenius ``‖cov - cov*‖_F/‖cov*‖_F``):

* deterministic samplers (ODE: DDIM η = 0, EDM, DPM-Solver++(2M), probability flow Heun) are
  affine maps of ``x_T`` for a linear score, so their output law is computed **exactly**
  (the map at ``E x_T`` and at ``E x_T + e_i`` gives its Jacobian, pushed through the exact terminal Gaussian): pure discretisation
  error, no Monte-Carlo noise;
* stochastic samplers (DDIM η = 1, EDM with churn, Euler–Maruyama, predictor–corrector) are
  estimated from ``N`` samples; ``mc_floor`` is the same error of ``N`` exact draws.

Wall time: ``jax.jit(sample(..., method=...))`` for ``N`` samples, best of 3 after compilation,
in one run so that the ratios (to ``pc`` with 500 steps) are comparable.

    python benchmarks/bench_fast_samplers.py [--quick] [--out benchmarks/results/fast_samplers.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxda.diffusion import (  # noqa: E402
    ddim,
    dpmpp_2m,
    edm_heun,
    posterior_score,
    probability_flow,
    sample,
    vp_linear,
)

M = jnp.array([1.0, -0.5, 0.3])
C = jnp.array([[1.0, 0.5, 0.1], [0.5, 0.8, 0.2], [0.1, 0.2, 0.6]])
H = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
Y = jnp.array([2.0, 0.2])
SIG = 0.05


def problem(sde):
    def prior(x, t):
        mu, s = sde.mean_coef(t), sde.std(t)
        return -jnp.linalg.solve(mu**2 * C + s**2 * jnp.eye(3), x - mu * M)

    def obs_cov(t):
        mu, s = sde.mean_coef(t), sde.std(t)
        v = jnp.linalg.inv(jnp.linalg.inv(C) + (mu / s) ** 2 * jnp.eye(3))
        return SIG**2 * jnp.eye(2) + H @ v @ H.T

    post = posterior_score(prior, sde, lambda x: H @ x, Y, SIG, obs_cov_fn=obs_cov)
    gain = jnp.linalg.solve(H @ C @ H.T + SIG**2 * jnp.eye(2), H @ C).T
    return post, M + gain @ (Y - H @ M), C - gain @ H @ C


def marginal(sde, t, m, c):
    mu, s = sde.mean_coef(t), sde.std(jnp.asarray(t))
    return mu * m, mu**2 * c + s**2 * jnp.eye(3)


def rel(mean, cov, mean_x, cov_x):
    return (
        float(jnp.linalg.norm(mean - mean_x) / jnp.linalg.norm(mean_x)),
        float(jnp.linalg.norm(cov - cov_x) / jnp.linalg.norm(cov_x)),
    )


def timed(fn, *args, repeats=3):
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer samples and steps")
    ap.add_argument("--out", default="benchmarks/results/fast_samplers.json")
    args = ap.parse_args()
    n_mc = 4000 if args.quick else 20000
    fast_steps = (10, 20, 50) if args.quick else (5, 10, 20, 50, 100)
    sde_steps = (100, 500) if args.quick else (100, 250, 500, 1000)

    sde = vp_linear()
    post, ma, ca = problem(sde)
    m1, c1 = marginal(sde, 1.0, ma, ca)
    me, ce = marginal(sde, sde.t_min, ma, ca)
    key = jax.random.key(0)
    exact = jax.random.multivariate_normal(jax.random.key(1), me, ce, (n_mc,))
    mc_floor = rel(exact.mean(0), jnp.cov(exact.T), me, ce)

    deterministic = {
        "ddim": lambda x, n: ddim(key, post, sde, x, n_steps=n).x,
        "ddim_logsnr": lambda x, n: ddim(key, post, sde, x, n_steps=n, grid="log_snr").x,
        "edm": lambda x, n: edm_heun(key, post, sde, x, n_steps=n).x,
        "dpmpp2m": lambda x, n: dpmpp_2m(post, sde, x, n_steps=n).x,
        "ode_heun": lambda x, n: probability_flow(post, sde, x, n_steps=n).x,
    }
    # (method for sample(), options, score evaluations per step)
    evals = {"ddim": 1, "ddim_logsnr": 1, "edm": 2, "dpmpp2m": 1, "ode_heun": 2}
    sample_opts = {
        "ddim": ("ddim", {}),
        "ddim_logsnr": ("ddim", {"grid": "log_snr"}),
        "edm": ("edm", {}),
        "dpmpp2m": ("dpmpp2m", {}),
        "ode_heun": ("ode", {}),
        "ddim_eta1": ("ddim", {"eta": 1.0, "grid": "log_snr"}),
        "edm_churn": ("edm", {"s_churn": 10.0}),
        "euler": ("euler", {}),
        "pc": ("pc", {}),
    }

    def run_sample(name, n):
        method, opts = sample_opts[name]
        fn = jax.jit(lambda k: sample(k, post, sde, (3,), n_mc, method=method, n_steps=n, **opts))
        res = fn(key)
        assert bool(jnp.all(res.status == 0)), (name, n)
        return res.x, timed(lambda k: fn(k).x, key)

    rows = []
    for name, f in deterministic.items():
        for n in fast_steps if name != "ode_heun" else (*fast_steps, 200):
            # f is affine in x_T: its value at m1 and at m1 + e_i give the exact Jacobian
            out = jax.jit(jax.vmap(lambda x, n=n, f=f: f(x, n)))(
                jnp.concatenate([m1[None], m1 + jnp.eye(3)])
            )
            jac = (out[1:] - out[0]).T
            err = rel(out[0], jac @ c1 @ jac.T, me, ce)
            _, wall = run_sample(name, n)
            rows.append(
                dict(sampler=name, steps=n, evals=evals[name] * n, err_kind="exact", wall_s=wall)
                | dict(mean_rel_err=err[0], cov_rel_err=err[1])
            )
            print(rows[-1], flush=True)
    stochastic = [("ddim_eta1", fast_steps, 1), ("edm_churn", fast_steps, 2)]
    stochastic += [("euler", sde_steps, 1), ("pc", sde_steps, 2)]  # pc: predictor + corrector
    for name, steps, ev in stochastic:
        for n in steps:
            X, wall = run_sample(name, n)
            err = rel(X.mean(0), jnp.cov(X.T), me, ce)
            rows.append(
                dict(sampler=name, steps=n, evals=ev * n, err_kind=f"MC N={n_mc}", wall_s=wall)
                | dict(mean_rel_err=err[0], cov_rel_err=err[1])
            )
            print(rows[-1], flush=True)

    ref = next(r for r in rows if r["sampler"] == "pc" and r["steps"] == 500)
    for r in rows:
        r["time_ratio_to_pc500"] = r["wall_s"] / ref["wall_s"]
    summary = {}
    for name in sorted({r["sampler"] for r in rows}):
        ok = [
            r
            for r in rows
            if r["sampler"] == name and r["cov_rel_err"] <= max(ref["cov_rel_err"], mc_floor[1])
        ]
        if ok:
            best = min(ok, key=lambda r: r["steps"])
            summary[name] = dict(
                steps=best["steps"], time_ratio_to_pc500=best["time_ratio_to_pc500"]
            )
    print(
        "\n| sampler | steps | score evals | mean rel err | cov rel err (Frob.) | error | "
        "wall s | time / pc500 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['sampler']} | {r['steps']} | {r['evals']} | {r['mean_rel_err']:.1e} | "
            f"{r['cov_rel_err']:.1e} | {r['err_kind']} | {r['wall_s']:.3f} | "
            f"{r['time_ratio_to_pc500']:.3f} |"
        )
    print(f"\nMC floor (N={n_mc} exact draws): mean {mc_floor[0]:.1e}, cov {mc_floor[1]:.1e}")
    print("fewest steps reaching pc500's covariance error (or the MC floor):", summary)
    out = dict(
        problem=dict(d=3, obs_std=SIG, sde="vp_linear", t_end=sde.t_min),
        n_mc=n_mc,
        quick=args.quick,
        backend=jax.default_backend(),
        mc_floor=dict(mean_rel_err=mc_floor[0], cov_rel_err=mc_floor[1]),
        rows=rows,
        equal_accuracy=summary,
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
