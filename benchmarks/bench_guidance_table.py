"""Every sampler × guidance pair against the exact conditional Gaussian (issue 16).

Problem: prior ``x_0 ~ N(m, C)`` in ``d = 8`` (random SPD ``C`` with unit-order variances, fixed
seed) with its **exact** diffused score ``-(μ²C + σ²I)^{-1}(x - μm)`` (VP linear SDE), a linear
observation ``y = H x_0 + η``, ``H`` 3 × 8, ``η ~ N(0, σ_y² I)`` with ``σ_y = 0.5`` (easy) and
``σ_y = 0.05`` (stiff: posterior variances down to ~1e-3). The target is the exact conditional
Gaussian ``N(m_a, C_a)`` (Kalman formulas), diffused to the sampler's last time ``t_e``:
``N(μ m_a, μ² C_a + σ² I)`` (``t_e = t_min`` for all samplers, ``0`` for DDPM).

Guidance (likelihood score of the diffused state, :mod:`jaxda.diffusion`):

* ``dps``: ``posterior_score(gamma=0)``, ``p(y|x_t) ≈ N(y | H x̂_0, Σ_y)``;
* ``sda``: ``posterior_score(gamma=1e-2)``, covariance ``Σ_y + γ(σ_t/μ_t)² I``;
* ``mmps1`` / ``mmps3``: ``mmps_score(cg_steps=1 | 3)``, covariance ``Σ_y + H V_t Hᵀ`` with
  Tweedie's ``V_t`` solved by CG (3 iterations solve the 3 × 3 system: exact here);
* ``exact``: ``posterior_score(obs_cov_fn=...)`` with the closed-form ``Σ_y + H V_t Hᵀ``.

``mmps3`` and ``exact`` are the exact posterior score, so their errors are the sampler's
discretisation error only; ``dps`` / ``sda`` add the error of the likelihood approximation.

Samplers (``jaxda.diffusion.sample`` methods): ``euler`` (reverse SDE, Euler–Maruyama),
``pc_curvature`` / ``pc_adaptive`` / ``pc_fixed`` (predictor–corrector with each Langevin
``step_rule``), ``ode`` (probability flow, Heun), ``ddpm`` (ancestral), ``ddim`` (η = 0 and
η = 1), ``edm`` (EDM Heun), ``dpmpp2m`` (DPM-Solver++(2M)), each at a few step counts.

Errors: ``mean_rel = ‖mean - mean*‖/‖mean*‖``, ``cov_rel = ‖cov - cov*‖_F/‖cov*‖_F``,
``mean_wh`` = Mahalanobis norm of the mean error in the target's covariance (in posterior
standard deviations: what matters in the stiff directions that ``mean_rel`` hides), and the
range ``[min, max]`` of the variance ratio ``vᵢᵀ cov vᵢ / λᵢ`` along the eigenvectors of the
target covariance (1 is exact; > 1 overdispersed). A deterministic sampler with an affine guided
score (all but ``mmps1``, whose truncated CG is nonlinear in ``x``) is an affine map of
``x_T ~ N(0, I)``: its output law is computed **exactly** from the map at ``0`` and at ``e_i``
(law ``exact``). The others are estimated from ``N`` samples (law ``MC``); the MC floor line is
the same errors of ``N`` exact draws. ``bad`` counts samples whose ``status`` is not SUCCESS
(``NONFINITE`` / ``DIVERGED``) among the ``N`` drawn with ``sample()``; their errors are over
the finite samples only. Wall time: one run of the jitted ``sample()`` for ``N`` samples after
ahead-of-time compilation (ratios within one run are comparable; the 2-core machine may be
loaded by other jobs).

    python benchmarks/bench_guidance_table.py [--quick] [--n-samples N] [--steps 20 100]
        [--samplers ...] [--guidance ...] [--obs-std 0.5 0.05] [--out PATH]

Writes ``benchmarks/results/guidance_table.json`` (``guidance_table_quick.json`` with
``--quick``) and prints a markdown table.
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
    mmps_score,
    posterior_score,
    probability_flow,
    sample,
    vp_linear,
)

D, M_OBS, SEED = 8, 3, 0
GUIDANCES = ("dps", "sda", "mmps1", "mmps3", "exact")
# name -> (sample() method, options, deterministic)
SAMPLERS = {
    "euler": ("euler", {}, False),
    "pc_curvature": ("pc", {"step_rule": "curvature"}, False),
    "pc_adaptive": ("pc", {"step_rule": "adaptive"}, False),
    "pc_fixed": ("pc", {"step_rule": "fixed"}, False),
    "ode": ("ode", {}, True),
    "ddpm": ("ddpm", {}, False),
    "ddim_eta0": ("ddim", {"eta": 0.0}, True),
    "ddim_eta1": ("ddim", {"eta": 1.0}, False),
    "edm": ("edm", {}, True),
    "dpmpp2m": ("dpmpp2m", {}, True),
}


def gaussian_problem(seed: int = SEED) -> dict:
    """Prior ``N(m, C)``, ``H`` and a fixed standard-normal draw ``z`` for the observations."""
    rng = np.random.default_rng(seed)
    L = rng.normal(size=(D, D)) / np.sqrt(D)
    C = L @ L.T + 0.3 * np.eye(D)
    C = C / np.sqrt(np.outer(np.diag(C), np.diag(C)))  # unit variances (standardized data)
    m = 0.5 * rng.normal(size=D)
    H = rng.normal(size=(M_OBS, D)) / np.sqrt(D / 2)
    x_true = m + np.linalg.cholesky(C) @ rng.normal(size=D)
    z = rng.normal(size=M_OBS)
    return dict(m=jnp.asarray(m), C=jnp.asarray(C), H=jnp.asarray(H), x_true=x_true, z=z)


def observations(p: dict, sig: float) -> jax.Array:
    return jnp.asarray(p["H"] @ p["x_true"] + sig * p["z"])


def kalman(p: dict, y, sig):
    """Exact conditional Gaussian ``N(m_a, C_a)`` of ``x_0 | y``."""
    C, H, m = p["C"], p["H"], p["m"]
    S = H @ C @ H.T + sig**2 * jnp.eye(M_OBS)
    K = jnp.linalg.solve(S, H @ C).T
    return m + K @ (y - H @ m), C - K @ H @ C


def prior_score(p: dict, sde):
    C, m = p["C"], p["m"]

    def score(x, t):
        mu, s = sde.mean_coef(t), sde.std(t)
        return -jnp.linalg.solve(mu**2 * C + s**2 * jnp.eye(D), x - mu * m)

    return score


def guided(p: dict, sde, guidance: str, y, sig):
    """The guided score ``(x, t) -> ∇ log p_t(x | y)`` for one guidance (``y``, ``sig`` may be
    traced)."""
    prior, H = prior_score(p, sde), p["H"]

    def obs_fn(x):
        return H @ x

    if guidance == "dps":
        return posterior_score(prior, sde, obs_fn, y, sig, gamma=0.0)
    if guidance == "sda":
        return posterior_score(prior, sde, obs_fn, y, sig, gamma=1e-2)
    if guidance in ("mmps1", "mmps3"):
        return mmps_score(prior, sde, obs_fn, y, sig, cg_steps=int(guidance[-1]))
    if guidance == "exact":
        Ci = jnp.linalg.inv(p["C"])

        def obs_cov(t):
            mu, s = sde.mean_coef(t), sde.std(t)
            V = jnp.linalg.inv(Ci + (mu / s) ** 2 * jnp.eye(D))
            return sig**2 * jnp.eye(M_OBS) + H @ V @ H.T

        return posterior_score(prior, sde, obs_fn, y, sig, obs_cov_fn=obs_cov)
    raise ValueError(f"unknown guidance {guidance!r}")


def target(sde, sampler: str, m_a, C_a):
    """The exact law at the sampler's last time (``t = 0`` for DDPM, ``t_min`` otherwise)."""
    t = 0.0 if sampler == "ddpm" else sde.t_min
    mu, s = sde.mean_coef(t), sde.std(jnp.asarray(t))
    return mu * m_a, mu**2 * C_a + s**2 * jnp.eye(D)


def errors(mean, cov, mt, ct) -> dict:
    mean, cov, mt, ct = (np.asarray(a, dtype=float) for a in (mean, cov, mt, ct))
    lam, vec = np.linalg.eigh(ct)
    ratio = np.diag(vec.T @ cov @ vec) / lam
    dm = mean - mt
    return dict(
        mean_rel=float(np.linalg.norm(dm) / np.linalg.norm(mt)),
        cov_rel=float(np.linalg.norm(cov - ct) / np.linalg.norm(ct)),
        mean_wh=float(np.sqrt(dm @ np.linalg.solve(ct, dm))),
        var_ratio_min=float(ratio.min()),
        var_ratio_max=float(ratio.max()),
    )


def single(sampler: str, score, sde, n: int):
    """``x_T -> x`` of a deterministic sampler for one sample."""
    key = jax.random.key(0)  # unused by the deterministic samplers
    if sampler == "ode":
        return lambda x: probability_flow(score, sde, x, n_steps=n).x
    if sampler == "ddim_eta0":
        return lambda x: ddim(key, score, sde, x, n_steps=n).x
    if sampler == "edm":
        return lambda x: edm_heun(key, score, sde, x, n_steps=n).x
    if sampler == "dpmpp2m":
        return lambda x: dpmpp_2m(score, sde, x, n_steps=n).x
    raise ValueError(sampler)


def run_config(p, sde, sampler, guidance, n, n_mc, sigs):
    """All rows of one (sampler, guidance, steps) for every observation std (one compile)."""
    method, opts, deterministic = SAMPLERS[sampler]
    exact_law = deterministic and guidance != "mmps1"

    def draw(key, y, sig):
        score = guided(p, sde, guidance, y, sig)
        return sample(key, score, sde, (D,), n_mc, method=method, n_steps=n, **opts)

    compiled = jax.jit(draw).lower(jax.random.key(0), jnp.zeros(M_OBS), jnp.asarray(1.0)).compile()
    if exact_law:

        def law(y, sig):
            f = single(sampler, guided(p, sde, guidance, y, sig), sde, n)
            out = jax.vmap(f)(jnp.concatenate([jnp.zeros((1, D)), jnp.eye(D)]))
            jac = (out[1:] - out[0]).T
            return out[0], sde.terminal_std() ** 2 * jac @ jac.T

        law = jax.jit(law)
    rows = []
    for sig in sigs:
        y = observations(p, sig)
        m_a, C_a = kalman(p, y, sig)
        mt, ct = target(sde, sampler, m_a, C_a)
        t0 = time.perf_counter()
        res = jax.block_until_ready(compiled(jax.random.key(1), y, jnp.asarray(sig)))
        wall = time.perf_counter() - t0
        status = np.asarray(res.status)
        X = np.asarray(res.x)
        ok = (status == 0) & np.all(np.isfinite(X), axis=1)
        bad = {int(s): int((status == s).sum()) for s in np.unique(status) if s != 0}
        if exact_law:
            mean, cov = law(y, jnp.asarray(sig))
            kind = "exact"
        elif ok.sum() > D:
            mean, cov = X[ok].mean(0), np.cov(X[ok].T)
            kind = f"MC {n_mc}"
        else:
            mean, cov, kind = np.full(D, np.nan), np.full((D, D), np.nan), f"MC {n_mc}"
        finite = bool(np.all(np.isfinite(mean)) and np.all(np.isfinite(cov)))
        err = (
            errors(mean, cov, mt, ct)
            if finite
            else dict.fromkeys(
                ("mean_rel", "cov_rel", "mean_wh", "var_ratio_min", "var_ratio_max"), np.nan
            )
        )
        rows.append(
            dict(obs_std=sig, guidance=guidance, sampler=sampler, steps=n, law=kind)
            | err
            | dict(n_bad=int((~ok).sum()), bad_status=bad, wall_s=wall)
        )
    return rows


def mc_floor(p, sde, sig, n_mc) -> dict:
    y = observations(p, sig)
    mt, ct = target(sde, "euler", *kalman(p, y, sig))
    X = np.asarray(jax.random.multivariate_normal(jax.random.key(2), mt, ct, (n_mc,)))
    return errors(X.mean(0), np.cov(X.T), mt, ct)


STATUS_NAMES = {1: "MAX_STEPS", 3: "NONFINITE", 5: "DIVERGED"}


def fmt(v, spec=".1e"):
    if v is None or not np.isfinite(v):
        return "nan"
    return format(v, ".0e" if abs(v) >= 1e4 else spec)


def markdown(rows, floors, n_mc) -> str:
    out = [
        "| obs std | guidance | sampler | steps | law | mean rel | cov rel (Frob.) | "
        "mean err [post. sd] | var ratio [min, max] | bad / N | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        bad = ", ".join(f"{STATUS_NAMES.get(int(k), k)} {v}" for k, v in r["bad_status"].items())
        bad = f"{r['n_bad']} ({bad})" if r["n_bad"] else "0"
        out.append(
            f"| {r['obs_std']} | {r['guidance']} | {r['sampler']} | {r['steps']} | {r['law']} | "
            f"{fmt(r['mean_rel'])} | {fmt(r['cov_rel'])} | {fmt(r['mean_wh'], '.2f')} | "
            f"[{fmt(r['var_ratio_min'], '.2f')}, {fmt(r['var_ratio_max'], '.2f')}] | "
            f"{bad} / {n_mc} | {r['wall_s']:.2f} |"
        )
    for sig, f in floors.items():
        out.append(
            f"\nMC floor (obs std {sig}, N = {n_mc} exact draws): mean rel {f['mean_rel']:.1e}, "
            f"cov rel {f['cov_rel']:.1e}, mean err {f['mean_wh']:.2f} sd, var ratio "
            f"[{f['var_ratio_min']:.2f}, {f['var_ratio_max']:.2f}]"
        )
    return "\n".join(out)


def pivot(rows, steps) -> str:
    """cov rel error at one step count: samplers × guidance, per observation std."""
    out = []
    for sig in sorted({r["obs_std"] for r in rows}, reverse=True):
        sub = [r for r in rows if r["obs_std"] == sig and r["steps"] == steps]
        if not sub:
            continue
        gs = [g for g in GUIDANCES if any(r["guidance"] == g for r in sub)]
        out.append(
            f"\ncov rel error [variance ratio min, max], obs std {sig}, {steps} steps "
            "(bad: samples with a non-SUCCESS status):\n"
        )
        out.append("| sampler | " + " | ".join(gs) + " |")
        out.append("|---|" + "---|" * len(gs))
        for s in SAMPLERS:
            cells = []
            for g in gs:
                r = next((r for r in sub if r["sampler"] == s and r["guidance"] == g), None)
                if r is None:
                    cells.append("–")
                    continue
                c = (
                    f"{fmt(r['cov_rel'])} [{fmt(r['var_ratio_min'], '.2f')}, "
                    f"{fmt(r['var_ratio_max'], '.2f')}]"
                )
                cells.append(c + (f" bad {r['n_bad']}" if r["n_bad"] else ""))
            if any(c != "–" for c in cells):
                out.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 steps, 400 samples")
    ap.add_argument("--n-samples", type=int, default=None)
    ap.add_argument("--steps", type=int, nargs="+", default=None)
    ap.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    ap.add_argument("--guidance", nargs="+", default=None, choices=list(GUIDANCES))
    ap.add_argument("--obs-std", type=float, nargs="+", default=[0.5, 0.05])
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--tables-from", nargs="+", default=None, help="print the tables of result JSONs, no run"
    )
    args = ap.parse_args()
    if args.tables_from:
        results = [json.loads(Path(f).read_text()) for f in args.tables_from]
        rows = [r for res in results for r in res["rows"]]
        rows.sort(
            key=lambda r: (GUIDANCES.index(r["guidance"]), list(SAMPLERS).index(r["sampler"]))
        )
        floors = {float(k): v for k, v in results[0]["mc_floor"].items()}
        print(markdown(rows, floors, results[0]["n_mc"]))
        for n in sorted({r["steps"] for r in rows}):
            print(pivot(rows, n))
        return
    n_mc = args.n_samples or (400 if args.quick else 1000)
    steps = args.steps or ([20] if args.quick else [20, 100])
    guidances = args.guidance or (["dps", "mmps1", "exact"] if args.quick else list(GUIDANCES))
    out_path = args.out or (
        "benchmarks/results/guidance_table_quick.json"
        if args.quick
        else "benchmarks/results/guidance_table.json"
    )
    sde = vp_linear()
    p = gaussian_problem()
    t_start = time.perf_counter()
    floors = {sig: mc_floor(p, sde, sig, n_mc) for sig in args.obs_std}
    y_stiff = observations(p, min(args.obs_std))
    C_a = kalman(p, y_stiff, min(args.obs_std))[1]

    def write(rows, complete):
        out = dict(
            problem=dict(
                d=D,
                m_obs=M_OBS,
                seed=SEED,
                sde="vp_linear",
                t_end=sde.t_min,
                obs_std=args.obs_std,
                posterior_var_min_stiff=float(np.linalg.eigvalsh(np.asarray(C_a))[0]),
            ),
            n_mc=n_mc,
            steps=steps,
            guidance=guidances,
            samplers=args.samplers,
            quick=args.quick,
            complete=complete,
            backend=jax.default_backend(),
            total_s=time.perf_counter() - t_start,
            mc_floor={str(k): v for k, v in floors.items()},
            rows=rows,
        )
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(json.dumps(out, indent=1))

    rows = []
    for guidance in guidances:
        for sampler in args.samplers:
            for n in steps:
                new = run_config(p, sde, sampler, guidance, n, n_mc, args.obs_std)
                for r in new:
                    print(
                        f"{r['obs_std']:5} {guidance:6} {sampler:13} {n:4} {r['law']:8} "
                        f"mean {fmt(r['mean_rel'])} cov {fmt(r['cov_rel'])} "
                        f"wh {fmt(r['mean_wh'], '.2f')} var "
                        f"[{fmt(r['var_ratio_min'], '.2f')}, {fmt(r['var_ratio_max'], '.2f')}] "
                        f"bad {r['n_bad']} {r['bad_status']} {r['wall_s']:.2f}s",
                        flush=True,
                    )
                rows += new
                write(rows, complete=False)  # partial results survive an interrupted run
    print()
    print(markdown(rows, floors, n_mc))
    for n in steps:
        print(pivot(rows, n))
    write(rows, complete=True)
    print("wrote", out_path)


if __name__ == "__main__":
    main()
