"""Bias and variance of the particle filter's log-likelihood gradient estimators
(``particle_filter(resampling_gradient=...)``) against the exact Kalman-filter gradient.

Problem: scalar AR(1) observed in noise, ``x_0 ~ N(0.3, 1)``, ``x_k = a x_{k-1} + 0.5 η_k``,
``y_k = x_k + r ε_k``, ``k = 1..K``, true ``a = 0.8``, ``r = 0.7``; one simulated record.
Parameters ``θ = (a, r)``; exact ``∇_θ log p(y_{1:K})`` from a NumPy Kalman filter and central
finite differences. Every estimator runs through :func:`jaxda.assimilate.assimilate` with
``resample_threshold = 1`` (resampling every cycle, the hardest case for the gradient), ``R``
independent keys vmapped in one jitted call, float64 on CPU.

Reported per estimator and particle count ``N`` (per parameter):

* ``mean``/``bias``/``std``/``rmse``: of the per-run ``∇log p̂`` (what one run returns);
  ``bias`` is ``mean - exact``, ``se_mean = std/√R`` its Monte-Carlo error;
* ``ratio``/``ratio_bias``/``ratio_se``: ``∑_j p̂_j ∇log p̂_j / ∑_j p̂_j`` (estimates
  ``E[∇p̂]/E[p̂]``; equals ``∇log p`` when ``∇p̂`` is unbiased), delta-method error;
* ``seconds_per_500_runs``: steady time of the vmapped value-and-gradient call over 500
  keys, and ``cost_vs_forward``, its ratio to the forward-only call with the same method.

A second section checks the part of the filter that is smooth (no resampling) on Lorenz-96:
``jax.grad`` with respect to the forcing ``F`` against central finite differences.

Usage: ``python benchmarks/bench_pf_gradient.py [--quick] [--keys 4000] [--steps 20]``;
writes ``benchmarks/results/pf_gradient.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxda.assimilate import assimilate  # noqa: E402
from jaxda.ensemble import particle_filter  # noqa: E402
from jaxda.models import LinearModel, Lorenz96, trajectory, with_noise  # noqa: E402
from jaxda.observations import identity, observation_model, observation_series  # noqa: E402

A0, Q, R0, M0, P0 = 0.8, 0.5, 0.7, 0.3, 1.0
THETA = np.array([A0, R0])
NAMES = ("a", "r")
CHUNK = 500  # runs per vmapped call (bounded memory for the reverse pass)


def simulate(K, seed=0):
    rng = np.random.default_rng(seed)
    x = M0 + np.sqrt(P0) * rng.normal()
    ys = []
    for _ in range(K):
        x = A0 * x + Q * rng.normal()
        ys.append(x + R0 * rng.normal())
    return np.array(ys)


def kalman_loglik(theta, ys):
    a, r = theta
    m, P, ll = M0, P0, 0.0
    for y in ys:
        m, P = a * m, a * a * P + Q * Q
        S = P + r * r
        ll += -0.5 * ((y - m) ** 2 / S + np.log(2 * np.pi * S))
        G = P / S
        m, P = m + G * (y - m), (1 - G) * P
    return ll


def kalman_gradient(ys, h=1e-5):
    return np.array(
        [
            (kalman_loglik(THETA + h * e, ys) - kalman_loglik(THETA - h * e, ys)) / (2 * h)
            for e in np.eye(2)
        ]
    )


def make_loglik(method, N, ys):
    y = jnp.asarray(ys)[:, None]

    def loglik(theta, key):
        model = with_noise(LinearModel(M=theta[0] * jnp.eye(1), x0=jnp.zeros(1)), Q)
        series = observation_series(y, observation_model(identity(1), obs_std=theta[1]), n_steps=1)
        k0, k1 = jax.random.split(key)
        E0 = M0 + np.sqrt(P0) * jax.random.normal(k0, (N, 1))
        _, hist = assimilate(k1, method, model, series, E0)
        return jnp.sum(hist.info.log_evidence)

    return loglik


def steady(fn, *args, repeat=2):
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best, out


def summarize(values, grads, exact):
    R = len(values)
    mean, std = grads.mean(0), grads.std(0, ddof=1)
    z = np.exp(values - values.max())
    ratio = (z[:, None] * grads).sum(0) / z.sum()
    ratio_se = np.sqrt(((z[:, None] * (grads - ratio)) ** 2).sum(0)) / z.sum()
    out = {}
    for i, name in enumerate(NAMES):
        out[name] = {
            "mean": float(mean[i]),
            "bias": float(mean[i] - exact[i]),
            "se_mean": float(std[i] / np.sqrt(R)),
            "std": float(std[i]),
            "rmse": float(np.sqrt(np.mean((grads[:, i] - exact[i]) ** 2))),
            "ratio": float(ratio[i]),
            "ratio_bias": float(ratio[i] - exact[i]),
            "ratio_se": float(ratio_se[i]),
        }
    out["ess_of_run_weights"] = float(z.sum() ** 2 / (z**2).sum())
    return out


ESTIMATORS = {
    "none": {},
    "stop_gradient": {"resampling_gradient": "stop_gradient"},
    "soft(alpha=0.5)": {"resampling_gradient": "soft", "soft_alpha": 0.5},
    # with systematic resampling α = 0 would keep every particle once (no resampling at all)
    "soft(alpha=0, multinomial)": {
        "resampling_gradient": "soft",
        "soft_alpha": 0.0,
        "resampling": "multinomial",
    },
}


def linear_gaussian_section(Ns, n_keys, K):
    ys = simulate(K)
    exact = kalman_gradient(ys)
    print(f"exact log p = {kalman_loglik(THETA, ys):.4f}, grad (a, r) = {exact.round(4)}")
    keys = jax.random.split(jax.random.key(0), n_keys)
    theta = jnp.asarray(THETA)
    rows = []
    for N in Ns:
        for name, opts in ESTIMATORS.items():
            f = make_loglik(particle_filter(**opts), N, ys)
            vg = jax.jit(jax.vmap(jax.value_and_grad(f), (None, 0)))
            fwd = jax.jit(jax.vmap(f, (None, 0)))
            chunk = keys[:CHUNK]
            t_vg, _ = steady(vg, theta, chunk)
            t_f, _ = steady(fwd, theta, chunk)
            parts = [vg(theta, keys[i : i + CHUNK]) for i in range(0, n_keys, CHUNK)]
            v = np.concatenate([np.asarray(p[0]) for p in parts])
            g = np.concatenate([np.asarray(p[1]) for p in parts])
            row = {"N": N, "estimator": name, "seconds_per_500_runs": t_vg}
            row["cost_vs_forward"] = t_vg / t_f
            row.update(summarize(v, g, exact))
            rows.append(row)
            a, r = row["a"], row["r"]
            print(
                f"N={N:5d} {name:26s} a: bias {a['bias']:+.3f}±{a['se_mean']:.3f} "
                f"std {a['std']:.3f} ratio-bias {a['ratio_bias']:+.3f}±{a['ratio_se']:.3f} | "
                f"r: bias {r['bias']:+.3f}±{r['se_mean']:.3f} std {r['std']:.3f} "
                f"ratio-bias {r['ratio_bias']:+.3f}±{r['ratio_se']:.3f} | "
                f"grad/forward time {row['cost_vs_forward']:.2f}"
            )
    return {"exact_gradient": dict(zip(NAMES, exact.tolist(), strict=True)), "K": K, "rows": rows}


def lorenz96_section(N, n_keys):
    """Lorenz-96 (n = 8, F = 8, dt = 0.05, model noise 0.3, every variable observed with std
    1, 10 cycles of 2 steps): (i) no resampling: jax.grad in F vs central finite differences
    with the same key; (ii) resampling every cycle: mean ∇_F log p̂ over keys (no exact
    reference: the spread between estimators shows what the selection term contributes)."""
    truth_model = with_noise(Lorenz96(n=8, forcing=8.0), 0.3)
    xs = trajectory(jax.random.key(1), truth_model, truth_model.x0 + 1.0, 70)[40::2][:11]
    ys = xs[1:] + jax.random.normal(jax.random.key(2), xs[1:].shape)  # y_k observes xs[k+1]

    def loglik(F, key, method):
        model = with_noise(Lorenz96(n=8, forcing=F), 0.3)
        series = observation_series(ys, observation_model(identity(8), obs_std=1.0), n_steps=2)
        k0, k1 = jax.random.split(key)
        E0 = xs[0] + jax.random.normal(k0, (N, 8))
        _, hist = assimilate(k1, method, model, series, E0)
        return jnp.sum(hist.info.log_evidence)

    sis = particle_filter(resample_threshold=0.0, resampling_gradient="stop_gradient")
    key = jax.random.key(3)
    g = float(jax.jit(jax.grad(loglik), static_argnums=2)(8.0, key, sis))
    f = jax.jit(loglik, static_argnums=2)
    h = 1e-5
    fd = float((f(8.0 + h, key, sis) - f(8.0 - h, key, sis)) / (2 * h))
    out = {"no_resampling": {"grad": g, "finite_difference": fd}}
    print(f"L96, no resampling: dlogp/dF autodiff {g:.6f} vs finite differences {fd:.6f}")
    keys = jax.random.split(jax.random.key(4), n_keys)
    for name in ("none", "stop_gradient"):
        m = particle_filter(resampling_gradient=name)
        gs = np.asarray(
            jax.jit(jax.vmap(jax.grad(loglik), (None, 0, None)), static_argnums=2)(8.0, keys, m)
        )
        out[name] = {"mean": float(gs.mean()), "se_mean": float(gs.std(ddof=1) / np.sqrt(n_keys))}
        print(
            f"L96, resampling, {name:14s}: mean dlogp/dF {gs.mean():+.3f} ± {out[name]['se_mean']:.3f}"
        )
    return out


def main():
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: N in (16, 64), 500 keys")
    p.add_argument("--keys", type=int, default=4000)
    p.add_argument("--steps", type=int, default=20, help="observation times K")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "pf_gradient.json"))
    args = p.parse_args()
    Ns = (16, 64) if args.quick else (16, 64, 256, 1024)
    n_keys = 500 if args.quick else args.keys
    if n_keys % CHUNK:
        raise ValueError(f"--keys must be a multiple of {CHUNK}, got {n_keys}")
    K = 10 if args.quick else args.steps
    t0 = time.perf_counter()
    res = {
        "settings": {"quick": args.quick, "keys": n_keys, "N": list(Ns), "K": K},
        "machine": {"platform": platform.platform(), "jax": jax.__version__,
                    "device": str(jax.devices()[0])},
        "linear_gaussian": linear_gaussian_section(Ns, n_keys, K),
        "lorenz96": lorenz96_section(64 if args.quick else 256, 200 if args.quick else 1000),
    }  # fmt: skip
    res["wall_seconds"] = time.perf_counter() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out} ({res['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
