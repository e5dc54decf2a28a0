"""Gradient-free optimizers: jaxda vs scipy.optimize and evosax, side by side in one run.

Sections (all float64, CPU):

1. Single runs (after compile; compile time reported separately), fixed budgets, the same
   population sizes and rates across libraries where the algorithms match:
   * DE rand/1/bin on 5-D Rastrigin: jaxda vs ``scipy.optimize.differential_evolution``
     (``strategy="rand1bin"``, ``polish=False``, ``tol=0``, random init) vs evosax ``DifferentialEvolution``;
   * PSO on 10-D Sphere: jaxda vs evosax ``PSO`` (scipy has no PSO);
   * annealing on 2-D Ackley: jaxda ``simulated_annealing`` vs ``scipy.optimize.dual_annealing``
     (generalized SA with local search: a different, stronger algorithm; reported for reference);
   * grid on 4-D Rastrigin (21^4 points): jaxda ``grid_search`` vs ``scipy.optimize.brute``.
   "evals to target" is the number of objective evaluations when the best value first fell
   below the target (one-generation resolution for population methods), median over the seeds.
2. Batched: ``R`` DE restarts on 5-D Rastrigin in one vmapped call vs a Python loop of scipy DE
   over a subset, extrapolated linearly to ``R`` (and evosax DE vmapped over the same keys).

Usage: ``python benchmarks/bench_gradient_free.py [--restarts 1000] [--scipy-subset 10] [--seeds 5]``
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

jax.config.update("jax_enable_x64", True)

from evosax.algorithms import PSO as EvoPSO  # noqa: E402
from evosax.algorithms import DifferentialEvolution as EvoDE  # noqa: E402

from jaxda.optimize import (  # noqa: E402
    benchmark_problem,
    differential_evolution,
    evaluations_to_target,
    grid_search,
    particle_swarm,
    simulated_annealing,
)


def rastrigin_np(x):
    return 10.0 * x.shape[0] + np.sum(x**2 - 10.0 * np.cos(2.0 * np.pi * x), axis=0)


def ackley_np(x):
    n = x.shape[0]
    return (
        -20.0 * np.exp(-0.2 * np.sqrt(np.sum(x**2, axis=0) / n))
        - np.exp(np.sum(np.cos(2.0 * np.pi * x), axis=0) / n)
        + 20.0
        + np.e
    )


def timed(fn, *args, repeat=1):
    """(first-call seconds, best-of-``repeat`` steady seconds, output)."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return first, best, out


def compile_time(jitted, *args):
    t0 = time.perf_counter()
    jitted.lower(*args).compile()
    return time.perf_counter() - t0


def evosax_runner(algo, params, fn, bounds, n_gen):
    """Fixed-budget evosax loop in a lax.scan; returns (best f, per-generation best-so-far)."""
    lower, upper = bounds
    n_pop = algo.population_size

    def run(key):
        k_pop, k_init, k_loop = jax.random.split(key, 3)
        pop = lower + jax.random.uniform(k_pop, (n_pop, lower.shape[0])) * (upper - lower)
        fit = jax.vmap(fn)(pop)
        state = algo.init(k_init, pop, fit, params)

        def body(state, k):
            k_ask, k_tell = jax.random.split(k)
            x, state = algo.ask(k_ask, state, params)
            state, _ = algo.tell(k_tell, x, jax.vmap(fn)(x), state, params)
            return state, state.best_fitness

        state, hist = jax.lax.scan(body, state, jax.random.split(k_loop, n_gen))
        return state.best_fitness, jnp.concatenate([jnp.min(fit)[None], hist])

    return run


def evals_to_target_hist(hist, target, n_init, n_per):
    hit = np.asarray(hist) <= target
    return np.where(hit.any(-1), n_init + np.argmax(hit, -1) * n_per, -1)


def median_evals(e):
    e = np.asarray(e)
    ok = e[e >= 0]
    return (f"{int(np.median(ok))}" if ok.size else "—") + f" ({ok.size}/{e.size})"


ROWS: list[tuple[str, ...]] = []


def row(*cells):
    ROWS.append(tuple(str(c) for c in cells))


def scipy_de_run(seed, bounds_pairs, pop, gens, F, CR, target, vectorized=False):
    """scipy DE with a callback recording nfev when the target was first reached."""
    state = {"nfev": -1}
    counter = {"n": 0}

    def f(x):
        counter["n"] += 1 if x.ndim == 1 else x.shape[1]
        return rastrigin_np(x)

    def cb(intermediate_result):
        if state["nfev"] < 0 and intermediate_result.fun <= target:
            state["nfev"] = counter["n"]

    res = scipy.optimize.differential_evolution(
        f,
        bounds_pairs,
        strategy="rand1bin",
        maxiter=gens,
        popsize=pop // len(bounds_pairs),
        mutation=F,
        recombination=CR,
        tol=0,
        atol=0,
        polish=False,
        init="random",
        rng=seed,
        callback=cb,
        vectorized=vectorized,
        updating="deferred" if vectorized else "immediate",
    )
    return res.fun, state["nfev"], counter["n"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--restarts", type=int, default=1000)
    ap.add_argument("--scipy-subset", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batched-generations", type=int, default=200)
    args = ap.parse_args()
    S = args.seeds
    keys = jax.random.split(jax.random.key(0), S)

    # ------------------------------------------------------------------ 1a. DE, 5-D Rastrigin
    p = benchmark_problem("rastrigin", 5)
    pop, gens, F, CR, target = 50, 400, 0.5, 0.1, 1e-6
    de_one = jax.jit(
        lambda k: differential_evolution(
            k, p.fn, p.bounds, population_size=pop, max_steps=gens, F=F, CR=CR
        )
    )
    c_de = compile_time(de_one, keys[0])
    t_de = []
    res_de = []
    for k in keys:
        _, t, r = timed(de_one, k)
        t_de.append(t)
        res_de.append(r)
    ev_de = [int(evaluations_to_target(r, target)) for r in res_de]
    row(
        "DE rand/1/bin, 5-D Rastrigin",
        "jaxda",
        f"{np.median(t_de) * 1e3:.1f} ms",
        f"{c_de:.1f} s",
        median_evals(ev_de),
        f"{np.median([float(r.f) for r in res_de]):.1e}",
        "1.0",
    )

    evo = EvoDE(pop, jnp.zeros(5))
    eparams = evo.default_params.replace(
        elitism=False,
        crossover_rate=CR,
        differential_weight=F,
        differential_weight_min=F,
        differential_weight_max=F,
    )
    evo_run = jax.jit(evosax_runner(evo, eparams, p.fn, (p.bounds[0], p.bounds[1]), gens))
    c_evo = compile_time(evo_run, keys[0])
    t_evo, ev_evo, f_evo = [], [], []
    for k in keys:
        _, t, (fb, hist) = timed(evo_run, k)
        t_evo.append(t)
        ev_evo.append(int(evals_to_target_hist(hist, target, pop, pop)))
        f_evo.append(float(fb))
    row(
        "DE rand/1/bin, 5-D Rastrigin",
        "evosax 0.3 (no bounds handling)",
        f"{np.median(t_evo) * 1e3:.1f} ms",
        f"{c_evo:.1f} s",
        median_evals(ev_evo),
        f"{np.median(f_evo):.1e}",
        f"{np.median(t_evo) / np.median(t_de):.1f}",
    )

    pairs = [(-5.12, 5.12)] * 5
    t_sp, ev_sp, f_sp = [], [], []
    for s in range(S):
        t0 = time.perf_counter()
        fb, nf, _ = scipy_de_run(s, pairs, pop, gens, F, CR, target)
        t_sp.append(time.perf_counter() - t0)
        ev_sp.append(nf)
        f_sp.append(fb)
    row(
        "DE rand/1/bin, 5-D Rastrigin",
        "scipy DE (per-point calls)",
        f"{np.median(t_sp) * 1e3:.1f} ms",
        "—",
        median_evals(ev_sp),
        f"{np.median(f_sp):.1e}",
        f"{np.median(t_sp) / np.median(t_de):.1f}",
    )
    t_spv = []
    for s in range(S):
        t0 = time.perf_counter()
        scipy_de_run(s, pairs, pop, gens, F, CR, target, vectorized=True)
        t_spv.append(time.perf_counter() - t0)
    row(
        "DE rand/1/bin, 5-D Rastrigin",
        "scipy DE (vectorized=True)",
        f"{np.median(t_spv) * 1e3:.1f} ms",
        "—",
        "",
        "",
        f"{np.median(t_spv) / np.median(t_de):.1f}",
    )

    # ------------------------------------------------------------------ 1b. PSO, 10-D Sphere
    p = benchmark_problem("sphere", 10)
    n_part, iters, target = 40, 500, 1e-8
    pso_one = jax.jit(
        lambda k: particle_swarm(k, p.fn, p.bounds, n_particles=n_part, max_steps=iters)
    )
    c_pso = compile_time(pso_one, keys[0])
    t_pso, r_pso = [], []
    for k in keys:
        _, t, r = timed(pso_one, k)
        t_pso.append(t)
        r_pso.append(r)
    row(
        "PSO (Clerc), 10-D Sphere",
        "jaxda",
        f"{np.median(t_pso) * 1e3:.1f} ms",
        f"{c_pso:.1f} s",
        median_evals([int(evaluations_to_target(r, target)) for r in r_pso]),
        f"{np.median([float(r.f) for r in r_pso]):.1e}",
        "1.0",
    )
    evp = EvoPSO(n_part, jnp.zeros(10))
    pparams = evp.default_params.replace(
        inertia_coeff=0.7298, cognitive_coeff=1.49618, social_coeff=1.49618
    )
    evp_run = jax.jit(evosax_runner(evp, pparams, p.fn, (p.bounds[0], p.bounds[1]), iters))
    c_evp = compile_time(evp_run, keys[0])
    t_evp, ev_evp, f_evp = [], [], []
    for k in keys:
        _, t, (fb, hist) = timed(evp_run, k)
        t_evp.append(t)
        ev_evp.append(int(evals_to_target_hist(hist, target, n_part, n_part)))
        f_evp.append(float(fb))
    row(
        "PSO (Clerc), 10-D Sphere",
        "evosax 0.3 (r1, r2 shared across coords)",
        f"{np.median(t_evp) * 1e3:.1f} ms",
        f"{c_evp:.1f} s",
        median_evals(ev_evp),
        f"{np.median(f_evp):.1e}",
        f"{np.median(t_evp) / np.median(t_pso):.1f}",
    )

    # ------------------------------------------------------------------ 1c. annealing, 2-D Ackley
    p = benchmark_problem("ackley", 2)
    iters, target = 20_000, 1e-3
    sa_one = jax.jit(
        lambda k: simulated_annealing(
            k, p.fn, p.bounds, max_steps=iters, T0=10.0, T_end=1e-9, step_size=0.2
        )
    )
    c_sa = compile_time(sa_one, keys[0])
    t_sa, r_sa = [], []
    for k in keys:
        _, t, r = timed(sa_one, k)
        t_sa.append(t)
        r_sa.append(r)
    row(
        "SA (exp. schedule), 2-D Ackley",
        "jaxda",
        f"{np.median(t_sa) * 1e3:.1f} ms",
        f"{c_sa:.1f} s",
        median_evals([int(evaluations_to_target(r, target)) for r in r_sa]),
        f"{np.median([float(r.f) for r in r_sa]):.1e}",
        "1.0",
    )
    t_da, ev_da, f_da = [], [], []
    for s in range(S):
        cnt = {"n": 0, "hit": -1}

        def f(x, cnt=cnt):
            cnt["n"] += 1
            v = float(ackley_np(x))
            if cnt["hit"] < 0 and v <= target:
                cnt["hit"] = cnt["n"]
            return v

        t0 = time.perf_counter()
        res = scipy.optimize.dual_annealing(f, [(-32.768, 32.768)] * 2, maxfun=iters, rng=s)
        t_da.append(time.perf_counter() - t0)
        ev_da.append(cnt["hit"])
        f_da.append(res.fun)
    row(
        "SA (exp. schedule), 2-D Ackley",
        "scipy dual_annealing (maxfun=20000, with local search)",
        f"{np.median(t_da) * 1e3:.1f} ms",
        "—",
        median_evals(ev_da),
        f"{np.median(f_da):.1e}",
        f"{np.median(t_da) / np.median(t_sa):.1f}",
    )

    # ------------------------------------------------------------------ 1d. grid, 4-D Rastrigin
    p = benchmark_problem("rastrigin", 4)
    num = 21
    g_one = jax.jit(lambda: grid_search(p.fn, p.bounds, num=num, batch_size=8192))
    c_g = compile_time(g_one)
    _, t_g, r_g = timed(g_one, repeat=3)
    row(
        f"grid {num}^4, 4-D Rastrigin",
        "jaxda (chunks of 8192)",
        f"{t_g * 1e3:.1f} ms",
        f"{c_g:.1f} s",
        f"{num**4}",
        f"{float(r_g.f):.1e}",
        "1.0",
    )
    t0 = time.perf_counter()
    xb, fb, _, _ = scipy.optimize.brute(
        rastrigin_np, [slice(-5.12, 5.12, complex(0, num))] * 4, full_output=True, finish=None
    )
    t_b = time.perf_counter() - t0
    assert np.allclose(xb, np.asarray(r_g.x)) and np.isclose(fb, float(r_g.f))
    row(
        f"grid {num}^4, 4-D Rastrigin",
        "scipy brute (finish=None)",
        f"{t_b * 1e3:.1f} ms",
        "—",
        f"{num**4}",
        f"{fb:.1e}",
        f"{t_b / t_g:.1f}",
    )

    # ------------------------------------------------------------------ 2. batched DE restarts
    p = benchmark_problem("rastrigin", 5)
    R, gens_b = args.restarts, args.batched_generations
    target = 1e-6
    bkeys = jax.random.split(jax.random.key(1), R)
    de_many = jax.jit(
        jax.vmap(
            lambda k: differential_evolution(
                k, p.fn, p.bounds, population_size=pop, max_steps=gens_b, F=F, CR=CR
            )
        )
    )
    c_b = compile_time(de_many, bkeys)
    _, t_b, r_b = timed(de_many, bkeys)
    succ = int(np.sum(np.asarray(r_b.f) < target))
    row(
        f"{R} DE restarts ({gens_b} gen), 5-D Rastrigin",
        "jaxda vmap (one call)",
        f"{t_b:.2f} s",
        f"{c_b:.1f} s",
        median_evals(np.asarray(evaluations_to_target(r_b, target))),
        f"success {succ}/{R}",
        "1.0",
    )
    evo_many = jax.jit(
        jax.vmap(evosax_runner(evo, eparams, p.fn, (p.bounds[0], p.bounds[1]), gens_b))
    )
    c_eb = compile_time(evo_many, bkeys)
    _, t_eb, (fb_e, hist_e) = timed(evo_many, bkeys)
    row(
        f"{R} DE restarts ({gens_b} gen), 5-D Rastrigin",
        "evosax vmap (one call)",
        f"{t_eb:.2f} s",
        f"{c_eb:.1f} s",
        median_evals(evals_to_target_hist(hist_e, target, pop, pop)),
        f"success {int(np.sum(np.asarray(fb_e) < target))}/{R}",
        f"{t_eb / t_b:.1f}",
    )
    m = args.scipy_subset
    t0 = time.perf_counter()
    sp = [scipy_de_run(s, pairs, pop, gens_b, F, CR, target) for s in range(m)]
    t_loop = (time.perf_counter() - t0) * R / m
    row(
        f"{R} DE restarts ({gens_b} gen), 5-D Rastrigin",
        f"scipy DE loop ({m} runs x {R // m} extrapolated)",
        f"{t_loop:.1f} s",
        "—",
        median_evals([s[1] for s in sp]),
        f"success {sum(s[0] < target for s in sp)}/{m}",
        f"{t_loop / t_b:.1f}",
    )

    print(
        f"\njax {jax.__version__}, scipy {scipy.__version__}, backend {jax.default_backend()}, "
        f"{S} seeds per single-run row (median), float64\n"
    )
    head = (
        "problem",
        "implementation",
        "wall (after compile)",
        "compile",
        "evals to target (hits)",
        "median best f",
        "time / jaxda",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in ROWS:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
