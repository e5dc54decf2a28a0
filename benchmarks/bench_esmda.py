"""ES-MDA: jaxda vs iterative_ensemble_smoother (ESMDA), side by side in one run.

Same problem, same prior ensemble and the *same observation perturbations* (drawn by
``jaxda.ensemble._esmda.esmda_perturbations`` and handed to the reference through its
``observation_perturbations=`` argument), float64 in both, same inversion (truncated
SVD keeping 99% of the singular-value sum, the reference default). Reported:

1. single problem: posterior agreement (max |Δ| in prior-std units) and wall time
   of the whole ES-MDA (forward runs + updates), steady state; jaxda compile time
   separately;
2. batched: ``B`` independent problems (own prior, data) in one ``jit(vmap(esmda))``
   call vs a Python loop of the reference.

The forward model is a mildly nonlinear block average (each observation sees a block
of ``n/m`` parameters): ``z = √k · mean(block)``, ``g = z + 0.05 z²``, vectorised in
NumPy for the reference (no per-member Python loop) and written for one member in JAX.

Usage::

    python benchmarks/bench_esmda.py                 # 100k params x 1000 obs x 100 members
    python benchmarks/bench_esmda.py --quick         # small sizes, seconds
    python benchmarks/bench_esmda.py --n 20000 --m 500 --N 100 --batch 64 --bn 2000 --bm 100
"""

from __future__ import annotations

import argparse
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxda.ensemble import esmda, esmda_perturbations  # noqa: E402
from jaxda.observations import gaussian_noise  # noqa: E402


def make_forward(n, m):
    k = n // m

    def g_jax(x):  # one member
        z = jnp.sqrt(k) * jnp.mean(x.reshape(m, k), axis=1)
        return z + 0.05 * z**2

    def g_np(X):  # (n, N) -> (m, N), vectorised over members
        z = np.sqrt(k) * X.reshape(m, k, -1).mean(axis=1)
        return z + 0.05 * z**2

    return g_jax, g_np


def make_problem(key, n, m, N, obs_std):
    g_jax, _ = make_forward(n, m)
    kx, kp, ke = jax.random.split(key, 3)
    truth = jax.random.normal(kx, (n,))
    y = g_jax(truth) + obs_std * jax.random.normal(ke, (m,))
    prior = jax.random.normal(kp, (N, n))
    return prior, y


def reference(prior, y, obs_std, alpha, eps, g_np, truncation):
    import iterative_ensemble_smoother as ies

    m = y.shape[0]
    sm = ies.ESMDA(np.full(m, obs_std**2), np.asarray(y), alpha=np.asarray(alpha), seed=0)
    X = np.asarray(prior).T.copy()
    for j in range(sm.num_assimilations()):
        sm.prepare_assimilation(
            Y=g_np(X), truncation=truncation, observation_perturbations=eps[j].T
        )
        X = sm.assimilate_batch(X=X)
    return X.T


def best_time(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000, help="parameters (single problem)")
    ap.add_argument("--m", type=int, default=1_000, help="observations (single problem)")
    ap.add_argument("--N", type=int, default=100, help="ensemble members")
    ap.add_argument("--alpha", type=int, default=4, help="number of assimilations (constant alpha)")
    ap.add_argument(
        "--batch", type=int, default=64, help="independent problems in the batched test"
    )
    ap.add_argument("--bn", type=int, default=2_000, help="parameters per batched problem")
    ap.add_argument("--bm", type=int, default=100, help="observations per batched problem")
    ap.add_argument("--bN", type=int, default=50, help="members per batched problem")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--truncation", type=float, default=0.99)
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    a = ap.parse_args()
    if a.quick:
        a.n, a.m, a.N, a.batch, a.bn, a.bm, a.bN, a.repeats = 5_000, 100, 50, 16, 500, 50, 30, 2
    for n, m in ((a.n, a.m), (a.bn, a.bm)):
        if n % m:
            raise SystemExit(f"n ({n}) must be a multiple of m ({m}) for the block forward model")
    obs_std = 0.5
    alpha = np.full(a.alpha, float(a.alpha))
    print(
        f"# ES-MDA benchmark  ({platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"devices {jax.devices()}, float64)"
    )
    rows = []

    # ---------------------------------------------------------------- single problem
    n, m, N = a.n, a.m, a.N
    g_jax, g_np = make_forward(n, m)
    prior, y = make_problem(jax.random.key(0), n, m, N, obs_std)
    noise = gaussian_noise(std=obs_std, dim=m)
    kpert = jax.random.key(1)
    eps = np.asarray(esmda_perturbations(kpert, noise, a.alpha, N))

    def ours_fn(inversion):
        f = jax.jit(
            lambda k, E, yy: (
                esmda(
                    k,
                    g_jax,
                    E,
                    yy,
                    noise=noise,
                    alpha=a.alpha,
                    inversion=inversion,
                    truncation=a.truncation,
                ).posterior
            )
        )
        return f

    results = {}
    for inversion in ("subspace", "exact"):
        f = ours_fn(inversion)
        t0 = time.perf_counter()
        jax.block_until_ready(f(kpert, prior, y))
        first = time.perf_counter() - t0
        t, post = best_time(lambda f=f: jax.block_until_ready(f(kpert, prior, y)), a.repeats)
        results[inversion] = (t, max(first - t, 0.0), np.asarray(post))
    prior_np = np.asarray(prior)
    y_np = np.asarray(y)
    t_ref, post_ref = best_time(
        lambda: reference(prior_np, y_np, obs_std, alpha, eps, g_np, a.truncation), a.repeats
    )
    sd = prior_np.std(axis=0, ddof=1).mean()
    for inversion, (t, comp, post) in results.items():
        diff = np.max(np.abs(post - post_ref)) / sd
        dmean = np.max(np.abs(post.mean(0) - post_ref.mean(0))) / sd
        rows.append(
            (
                f"single {n}x{m}x{N}, {a.alpha} assim.",
                f"jaxda {inversion}",
                t,
                comp,
                t_ref,
                t_ref / t,
                f"{diff:.1e}",
                f"{dmean:.1e}",
            )
        )

    # ---------------------------------------------------------------- batched problems
    B, bn, bm, bN = a.batch, a.bn, a.bm, a.bN
    bg_jax, bg_np = make_forward(bn, bm)
    keys = jax.random.split(jax.random.key(2), B)
    priors, ys = jax.vmap(lambda k: make_problem(k, bn, bm, bN, obs_std))(keys)
    bnoise = gaussian_noise(std=obs_std, dim=bm)
    pkeys = jax.random.split(jax.random.key(3), B)
    beps = np.asarray(jax.vmap(lambda k: esmda_perturbations(k, bnoise, a.alpha, bN))(pkeys))
    fb = jax.jit(
        jax.vmap(
            lambda k, E, yy: (
                esmda(
                    k,
                    bg_jax,
                    E,
                    yy,
                    noise=bnoise,
                    alpha=a.alpha,
                    truncation=a.truncation,
                    inversion="subspace",
                ).posterior
            )
        )
    )
    t0 = time.perf_counter()
    jax.block_until_ready(fb(pkeys, priors, ys))
    first = time.perf_counter() - t0
    tb, bpost = best_time(lambda: jax.block_until_ready(fb(pkeys, priors, ys)), a.repeats)
    priors_np, ys_np = np.asarray(priors), np.asarray(ys)

    def ref_loop():
        return np.stack(
            [
                reference(priors_np[b], ys_np[b], obs_std, alpha, beps[b], bg_np, a.truncation)
                for b in range(B)
            ]
        )

    tbr, bref = best_time(ref_loop, max(1, a.repeats - 1))
    bsd = priors_np.std(axis=1, ddof=1).mean()
    bdiff = np.max(np.abs(np.asarray(bpost) - bref)) / bsd
    bdmean = np.max(np.abs(np.asarray(bpost).mean(1) - bref.mean(1))) / bsd
    rows.append(
        (
            f"batched {B} x ({bn}x{bm}x{bN}), {a.alpha} assim.",
            "jaxda vmap subspace",
            tb,
            max(first - tb, 0.0),
            tbr,
            tbr / tb,
            f"{bdiff:.1e}",
            f"{bdmean:.1e}",
        )
    )

    print()
    print(
        "| problem | method | jaxda time (s) | jaxda compile (s) | iterative_ensemble_smoother (s) "
        "| speed-up | max abs diff (prior sd) | max mean diff (prior sd) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.2f} | {r[4]:.3f} | {r[5]:.2f}x | {r[6]} | {r[7]} |"
        )
    print()
    print(
        "speed-up = reference time / jaxda time (steady state, best of repeats; "
        "compile time excluded and shown separately). 'exact' = N x N Cholesky "
        "(no truncation), so its difference to the truncated reference is the truncation effect."
    )


if __name__ == "__main__":
    main()
