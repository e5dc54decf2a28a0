"""Window methods and ensemble smoothers (iEnKS, 4D-Var, EnKS, EnRTS): jaxda vs DAPPER side by side.

Configurations are DAPPER's documented ones (``dapper/mods/Lorenz63/sakov2012.py`` and
``dapper/mods/Lorenz96/sakov2008.py``, "Suggested tuning"):

1. Lorenz-63 ``sakov2012``: iEnKS Sqrt N=10, infl 1.02, rot, lag 1 (documented rmse.a 0.31),
   plus lag 2/3 and the PertObs / MDA / bundle variants (no documented score).
2. Lorenz-96 Sakov 2008 observed every 12 steps (``dko = 12``): iEnKS Sqrt N=25, lag 1,
   infl 1.2, rot (documented 0.46).
3. Lorenz-96 Sakov 2008 observed every 4 steps (``dto = 0.2``): 4D-Var lag 1/2/4 with
   ``xB`` 0.2/0.1/0.02 (documented 0.46/0.39/0.37).
4. Lorenz-63 ``sakov2012``: EnKS Sqrt N=10, infl 1.02, lag 1/2/3 and the EnRTS (DeCorr 1)
   on the ETKF with the same inflation: filter vs smoother RMSE of the same run.

For each configuration three runs are scored (time-mean RMSE of the ensemble mean after the
burn-in, filter "a" and smoother "s"):

* DAPPER on its own simulated truth and observations (``avrgs.err.rms.a`` / ``.s``);
* jaxda on **the same truth and observations** as that DAPPER run (only the initial ensemble
  and the random draws of the method differ; for 4D-Var, which is deterministic, jaxda is given
  DAPPER's ``B = xB · cov(truth)`` and the same first background, so the two runs differ only
  by the tangent-linear model: jaxda's is the exact derivative of the RK4 step, DAPPER's
  Lorenz-96 ``dstep_dx`` is ``expm(dt · J(x))``). Its speed is compared with DAPPER's on
  this same run length (compile time excluded and reported apart);
* jaxda on its own longer runs, ``--seeds`` seeds vmapped in one call (mean ± standard
  deviation over seeds); 4D-Var there uses jaxda's default ``B = xb ·`` the covariance of a
  long free run.

Smoother RMSE: both libraries average at the observation times after the burn-in. jaxda's
window methods record, after each update, the window-start estimate (the state ``lag``
observation times back, given the observations up to now; :func:`jaxda.models.smoothed_record`,
averaged as ``jaxda.cli.smoother_rmse``), which is what DAPPER's iEnKS/Var4D assess as "s";
the EnKS/EnRTS smoothed ensembles are scored at every observation time, as DAPPER's "s"
(DAPPER 1.7.1 keeps no "u" average unless ``store_u`` is set, so "u" is not compared). The
burn-in is counted in observation times for both (DAPPER's ``BurnIn`` is set so that
``tto > BurnIn`` keeps the same observation indices).

**DAPPER 1.7.1 workaround**: ``Var4D.assimilate`` calls ``Obs(ko).linear(x)`` where ``Obs`` is
already the observation operator at ``ko``, which raises "IndexError: invalid index to scalar
variable". This benchmark patches ``dapper.mods.Operator.__call__`` at runtime (only while
DAPPER runs) so that a call with one integer argument returns the operator itself; every
other call is unchanged.

Usage::

    python benchmarks/bench_window_methods.py             # full (about 20-25 minutes on 2 cores)
    python benchmarks/bench_window_methods.py --quick     # smoke run (a few minutes)
    python benchmarks/bench_window_methods.py --no-dapper --out results/window_methods.json
    python benchmarks/bench_window_methods.py --only none --update   # the 4DEnVar curve alone

The 4DEnVar section (Lorenz-96 observed every 4 steps, RMSE vs ensemble size against 3D-Var,
ETKF/LETKF and 4D-Var lag 4, written to ``fourdenvar_curve.png``) runs when a method
``"4denvar"`` is registered in :mod:`jaxda.assimilate` (or with ``--curve``, without it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).parent

# ----------------------------------------------------------------------------------------------
# Configurations
# ----------------------------------------------------------------------------------------------
# Each: key, section, label, setup ("l63" | "l96_12" | "l96_4"), kind ("window" | "enks" |
# "enrts"), jaxda builder options, N (1 = a state, 4D-Var), DAPPER constructor (name, kwargs),
# documented DAPPER rmse.a (None if none), whether it is a "main" config (run in --quick).
IENKS_L63 = dict(inflation=1.02, rotate=True)
CONFIGS = [
    # Lorenz-63 sakov2012, iEnKS
    dict(
        key="l63_ienks_sqrt_lag1",
        section="iEnKS, Lorenz-63 sakov2012",
        label="iEnKS Sqrt, lag 1, infl 1.02, rot",
        setup="l63",
        kind="window",
        method=("ienks", dict(lag=1, update="sqrt", **IENKS_L63)),
        N=10,
        dapper=("iEnKS", dict(upd_a="Sqrt", N=10, Lag=1, infl=1.02, rot=True)),
        documented=0.31,
        main=True,
    ),
    dict(
        key="l63_ienks_sqrt_lag2",
        section="iEnKS, Lorenz-63 sakov2012",
        label="iEnKS Sqrt, lag 2, infl 1.02, rot",
        setup="l63",
        kind="window",
        method=("ienks", dict(lag=2, update="sqrt", **IENKS_L63)),
        N=10,
        dapper=("iEnKS", dict(upd_a="Sqrt", N=10, Lag=2, infl=1.02, rot=True)),
        documented=None,
        main=False,
    ),
    dict(
        key="l63_ienks_sqrt_lag3",
        section="iEnKS, Lorenz-63 sakov2012",
        label="iEnKS Sqrt, lag 3, infl 1.02, rot",
        setup="l63",
        kind="window",
        method=("ienks", dict(lag=3, update="sqrt", **IENKS_L63)),
        N=10,
        dapper=("iEnKS", dict(upd_a="Sqrt", N=10, Lag=3, infl=1.02, rot=True)),
        documented=None,
        main=False,
    ),
    dict(
        key="l63_ienks_pertobs_lag1",
        section="iEnKS, Lorenz-63 sakov2012",
        label="iEnKS PertObs, lag 1, infl 1.02",
        setup="l63",
        kind="window",
        method=("ienks", dict(lag=1, update="pertobs", inflation=1.02)),
        N=10,
        dapper=("iEnKS", dict(upd_a="PertObs", N=10, Lag=1, infl=1.02)),
        documented=None,
        main=False,
    ),
    dict(
        key="l63_ienks_mda_lag1",
        section="iEnKS, Lorenz-63 sakov2012",
        label="iEnKS Sqrt MDA, lag 1, infl 1.02, rot",
        setup="l63",
        kind="window",
        method=("ienks", dict(lag=1, update="sqrt", mda=True, **IENKS_L63)),
        N=10,
        dapper=("iEnKS", dict(upd_a="Sqrt", N=10, Lag=1, MDA=True, infl=1.02, rot=True)),
        documented=None,
        main=False,
    ),
    dict(
        key="l63_ienks_bundle_lag1",
        section="iEnKS, Lorenz-63 sakov2012",
        label="iEnKS Sqrt bundle, lag 1, infl 1.02, rot",
        setup="l63",
        kind="window",
        method=("ienks", dict(lag=1, update="sqrt", bundle=True, **IENKS_L63)),
        N=10,
        dapper=("iEnKS", dict(upd_a="Sqrt", N=10, Lag=1, bundle=True, infl=1.02, rot=True)),
        documented=None,
        main=False,
    ),
    # Lorenz-96, dko = 12
    dict(
        key="l96_dko12_ienks_sqrt_lag1",
        section="iEnKS, Lorenz-96 Sakov 2008, obs every 12 steps (dko 12)",
        label="iEnKS Sqrt, lag 1, infl 1.2, rot",
        setup="l96_12",
        kind="window",
        method=("ienks", dict(lag=1, update="sqrt", inflation=1.2, rotate=True)),
        N=25,
        dapper=("iEnKS", dict(upd_a="Sqrt", N=25, Lag=1, nIter=10, infl=1.2, rot=True)),
        documented=0.46,
        main=True,
    ),
    # Lorenz-96, dto = 0.2, 4D-Var
    *[
        dict(
            key=f"l96_dto02_var4d_lag{lag}",
            section="4D-Var, Lorenz-96 Sakov 2008, obs every 4 steps (dto 0.2)",
            label=f"4D-Var, lag {lag}, xB {xb}",
            setup="l96_4",
            kind="window",
            method=("4dvar", dict(lag=lag, xb=xb)),
            N=1,
            dapper=("Var4D", dict(Lag=lag, xB=xb)),
            documented=doc,
            main=lag == 4,
        )
        for lag, xb, doc in ((1, 0.2, 0.46), (2, 0.1, 0.39), (4, 0.02, 0.37))
    ],
    # Lorenz-63 sakov2012, EnKS / EnRTS on the ETKF (Sqrt) with infl 1.02
    *[
        dict(
            key=f"l63_enks_sqrt_lag{lag}",
            section="EnKS / EnRTS, Lorenz-63 sakov2012 (Sqrt, N=10, infl 1.02)",
            label=f"EnKS Sqrt, lag {lag}, infl 1.02",
            setup="l63",
            kind="enks",
            method=("enks", dict(lag=lag, inflation=1.02)),
            N=10,
            dapper=("EnKS", dict(upd_a="Sqrt", N=10, Lag=lag, infl=1.02)),
            documented=None,
            main=lag == 2,
        )
        for lag in (1, 2, 3)
    ],
    dict(
        key="l63_enrts_sqrt",
        section="EnKS / EnRTS, Lorenz-63 sakov2012 (Sqrt, N=10, infl 1.02)",
        label="EnRTS Sqrt, DeCorr 1, infl 1.02",
        setup="l63",
        kind="enrts",
        method=("etkf", dict(inflation=1.02, decorrelation=1.0)),
        N=10,
        dapper=("EnRTS", dict(upd_a="Sqrt", N=10, DeCorr=1.0, infl=1.02)),
        documented=None,
        main=True,
    ),
]

# Run lengths in observation times: (jaxda seeds runs, DAPPER runs). DAPPER is slow per
# cycle (Var4D forms n×n tangent-linear propagators with an eigendecomposition per model
# step), so it runs fewer observation times; jaxda is also run on DAPPER's data.
FULL = dict(
    burn_in={"l63": 100, "l96_12": 100, "l96_4": 100},
    jaxda_cycles={"l63": 10_000, "l96_12": 5_000, "l96_4": 4_000},
    dapper_cycles={
        "l63_ienks_sqrt_lag1": 2_000,
        "l63_ienks_sqrt_lag2": 600,
        "l63_ienks_sqrt_lag3": 600,
        "l63_ienks_pertobs_lag1": 600,
        "l63_ienks_mda_lag1": 600,
        "l63_ienks_bundle_lag1": 600,
        "l96_dko12_ienks_sqrt_lag1": 2_000,
        "l96_dto02_var4d_lag1": 1_500,
        "l96_dto02_var4d_lag2": 1_000,
        "l96_dto02_var4d_lag4": 600,
        "l63_enks_sqrt_lag1": 2_000,
        "l63_enks_sqrt_lag2": 2_000,
        "l63_enks_sqrt_lag3": 2_000,
        "l63_enrts_sqrt": 2_000,
    },
    seeds=4,
)
QUICK = dict(
    burn_in={"l63": 50, "l96_12": 20, "l96_4": 20},
    jaxda_cycles={"l63": 1_000, "l96_12": 300, "l96_4": 200},
    dapper_cycles={"default": 150, "l96_dto02_var4d_lag4": 40, "l96_dko12_ienks_sqrt_lag1": 100},
    seeds=2,
)

DAPPER_SETUPS = {
    "l63": ("dapper.mods.Lorenz63.sakov2012", None),
    "l96_12": ("dapper.mods.Lorenz96.sakov2008", 12),
    "l96_4": ("dapper.mods.Lorenz96.sakov2008", 4),
}


def jaxda_setup(name, n_cycles, burn_in):
    from jaxda.experiments import sakov2008, sakov2012

    if name == "l63":
        return sakov2012(n_cycles=n_cycles, burn_in=burn_in)
    obs_every = {"l96_12": 12, "l96_4": 4}[name]
    return sakov2008(n_cycles=n_cycles, burn_in=burn_in, obs_every=obs_every)


# ----------------------------------------------------------------------------------------------
# jaxda
# ----------------------------------------------------------------------------------------------
def build_method(cfg, model, B_chol=None):
    """The jaxda method of a configuration (4D-Var with ``B_chol``: DAPPER's ``B``)."""
    from jaxda.assimilate import with_inflation
    from jaxda.ensemble import enks, etkf, ienks
    from jaxda.variational import var4d

    name, opts = cfg["method"]
    opts = dict(opts)
    if name == "ienks":
        return ienks(model, **opts)
    if name == "4dvar":
        if B_chol is not None:
            opts.pop("xb")
            return var4d(model, B=B_chol, **opts)
        return var4d(model, **opts)
    if name == "enks":
        return enks(**opts)
    if name == "etkf":
        return with_inflation(etkf(), opts["inflation"])
    raise ValueError(name)


def _per_time_rmse(means, truth):
    return jnp.sqrt(jnp.mean((means - truth) ** 2, axis=-1))


def make_score(cfg, setup, method):
    """``score(key, data) -> (rmse_f, rmse_a, rmse_s)``: time means after the burn-in."""
    from jaxda.assimilate import assimilate
    from jaxda.ensemble import enks_record, ensemble_rts, smoothed_ensembles
    from jaxda.experiments import initial_ensemble
    from jaxda.models import smoothed_record

    b = setup.burn_in
    kind = cfg["kind"]
    N = cfg["N"]

    def score(key, data):
        k_init, k_run = jax.random.split(key)
        if N == 1:  # 4D-Var: the first background is the centre of X0 (DAPPER's X0.mu)
            E0 = setup.initial.mean[None]
        else:
            E0 = initial_ensemble(k_init, setup, N)
        run = dict(truth=data.truth)
        if kind == "window":
            run["record"] = smoothed_record
        elif kind == "enks":
            run["record"] = enks_record
        else:
            run["store_ensembles"] = True
        final, h = assimilate(k_run, method, setup.model, data.observations, E0, **run)
        rmse_f = jnp.mean(h.rmse_forecast[b:])
        rmse_a = jnp.mean(h.rmse_analysis[b:])
        if kind == "window":
            idx, means = h.record
            keep = idx >= b
            err = _per_time_rmse(means, data.truth[jnp.maximum(idx, 0)])
            rmse_s = jnp.sum(jnp.where(keep, err, 0.0)) / jnp.sum(keep)
        else:
            if kind == "enks":
                Es = smoothed_ensembles(h.record, final)
            else:
                dc = cfg["method"][1]["decorrelation"]
                Es = ensemble_rts(h.ensemble_forecast, h.ensemble_analysis, decorrelation=dc)
            rmse_s = jnp.mean(_per_time_rmse(jnp.mean(Es, axis=1), data.truth)[b:])
        return rmse_f, rmse_a, rmse_s

    return score


def twin_data_from_dapper(setup, xx, yy, dko):
    """jaxda ``TwinData`` holding DAPPER's truth and observations."""
    from jaxda.experiments import TwinData
    from jaxda.observations import observation_series

    yy = np.stack([np.asarray(y, float) for y in yy])  # DAPPER 1.7.1: an object array
    series = observation_series(jnp.asarray(yy), setup.obs, n_steps=dko, dt=setup.model.dt)
    xx = np.asarray(xx, float)
    return TwinData(jnp.asarray(xx[0]), jnp.asarray(xx[dko::dko]), series)


def run_jaxda_on_data(cfg, setup, data, seed, B_chol=None):
    """One jaxda run on given data (DAPPER's): RMSEs, compile time and cycles/s."""
    method = build_method(cfg, setup.model, B_chol)
    score = make_score(cfg, setup, method)
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    compiled = jax.jit(score).lower(key, data).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    f, a, s = jax.block_until_ready(compiled(key, data))
    run_s = time.perf_counter() - t0
    K = setup.n_cycles
    return {
        "cycles": K,
        "compile_s": compile_s,
        "run_s": run_s,
        "cycles_per_s": K / run_s,
        "rmse_f": float(f),
        "rmse_a": float(a),
        "rmse_s": float(s),
    }


def run_jaxda_seeds(cfg, setup, n_seeds, seed):
    """``n_seeds`` independent twin experiments (truth, observations, ensemble), vmapped."""
    from jaxda.experiments import simulate

    method = build_method(cfg, setup.model)
    score = make_score(cfg, setup, method)

    def one(key):
        k_data, k_run = jax.random.split(key)
        return score(k_run, simulate(k_data, setup))

    keys = jax.random.split(jax.random.key(seed), n_seeds)
    t0 = time.perf_counter()
    compiled = jax.jit(jax.vmap(one)).lower(keys).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    f, a, s = (np.asarray(v) for v in jax.block_until_ready(compiled(keys)))
    run_s = time.perf_counter() - t0
    K = setup.n_cycles

    def stats(v):
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}

    return {
        "cycles": K,
        "burn_in": setup.burn_in,
        "seeds": n_seeds,
        "compile_s": compile_s,
        "run_s": run_s,
        "batched_cycles_per_s": n_seeds * K / run_s,
        "rmse_f": stats(f),
        "rmse_a": stats(a),
        "rmse_s": stats(s),
        "rmse_a_per_seed": a.tolist(),
        "rmse_s_per_seed": s.tolist(),
    }


# ----------------------------------------------------------------------------------------------
# DAPPER
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def dapper_var4d_workaround():
    """DAPPER 1.7.1 bug workaround (see the module docstring): ``Operator(ko)`` with a single
    integer argument returns the operator itself, only while the context is active."""
    import dapper.mods as modelling

    original = modelling.Operator.__call__

    def call(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and isinstance(args[0], int | np.integer):
            return self
        return original(self, *args, **kwargs)

    modelling.Operator.__call__ = call
    try:
        yield
    finally:
        modelling.Operator.__call__ = original


def run_dapper(cfg, K, burn_in, seed):
    """DAPPER on its own simulated truth/observations: ``K`` observation times (``Ko = K-1``),
    the burn-in counted in observation times as jaxda's. Returns scores, speed and the data."""
    import importlib

    import dapper as dpr
    import dapper.da_methods as da

    module, dko = DAPPER_SETUPS[cfg["setup"]]
    quiet = contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO())
    with quiet[0], quiet[1]:
        HMM = importlib.import_module(module).HMM.copy()
        if dko is not None:
            HMM.tseq.dko = dko
        HMM.tseq.Ko = K - 1
        HMM.tseq.BurnIn = (burn_in + 0.5) * HMM.tseq.dto  # keeps ko >= burn_in (tto > BurnIn)
        dpr.set_seed(seed)
        xx, yy = HMM.simulate()
        name, kwargs = cfg["dapper"]
        xp = getattr(da, name)(**kwargs)
        with dapper_var4d_workaround():
            t0 = time.perf_counter()
            xp.assimilate(HMM, xx, yy, liveplots=False)
            run_s = time.perf_counter() - t0
        xp.stats.average_in_time()
    rms = xp.avrgs.err.rms
    out = {"cycles": K, "burn_in": burn_in, "run_s": run_s, "cycles_per_s": K / run_s}
    for sub in "fas":
        out[f"rmse_{sub}"] = float(getattr(rms, sub).val) if hasattr(rms, sub) else None
    return out, xx, yy, HMM.tseq.dko


# ----------------------------------------------------------------------------------------------
# 4DEnVar curve (runs when "4denvar" is registered, or with --curve)
# ----------------------------------------------------------------------------------------------
def fourdenvar_curve(args, sizes=(5, 10, 20, 40)):
    """RMSE vs ensemble size on Lorenz-96 observed every 4 steps: 4DEnVar (localized, lag 1
    and 4) vs ETKF (inflation 1.08, rotation), LETKF (radius 4, inflation 1.05) and, as
    horizontal lines, 3D-Var (xb 0.05, tuned for observations every 4 steps) and 4D-Var (lag 4,
    xb 0.02).
    Returns the rows and writes the PNG."""
    from jaxda.assimilate import available_methods, make_method, with_inflation, with_rotation
    from jaxda.ensemble import etkf, letkf
    from jaxda.experiments import initial_ensemble, simulate
    from jaxda.variational import var3d, var4d

    K = args.curve_cycles
    setup = jaxda_setup("l96_4", K, args.curve_burn_in)
    model = setup.model
    # 4DEnVar with the CLI's Lorenz-96 defaults (radius 4, inflation 1.05, lag 1), and with a
    # 4-interval window; the LETKF with the same radius and inflation; the ETKF (no
    # localization) with a larger inflation and DAPPER's rotation.
    methods = {
        "ETKF (infl 1.08, rot)": lambda N: with_inflation(with_rotation(etkf()), 1.08),
        "LETKF (radius 4, infl 1.05)": lambda N: with_inflation(letkf(4.0), 1.05),
    }
    if "4denvar" in available_methods():
        envar = dict(localization_radius=4.0, inflation=1.05)
        ctx = {"model": model}
        methods["4DEnVar (radius 4, infl 1.05, lag 1)"] = lambda N: make_method(
            "4denvar", context=ctx, **envar
        )
        # (lag=4, non-overlapping 4-interval windows, diverged at N=5 and 10 in a smoke run
        # (RMSE about 4): left out to keep the run short.)
    references = {
        "3D-Var (xb 0.05)": (var3d(model=model, xb=0.05), 1),
        "4D-Var (lag 4, xb 0.02)": (var4d(model, 4, xb=0.02), 1),
    }
    from jaxda.assimilate import assimilate

    b = setup.burn_in

    def scorer(method, N):
        def one(key):
            k_data, k_init, k_run = jax.random.split(key, 3)
            data = simulate(k_data, setup)
            E0 = initial_ensemble(k_init, setup, N) if N > 1 else setup.initial.mean[None]
            _, h = assimilate(k_run, method, model, data.observations, E0, truth=data.truth)
            return jnp.mean(h.rmse_analysis[b:])

        # A loop over seeds, not jax.vmap: jit(vmap) over seeds of fourdenvar hung (threads
        # idle in futex waits, no progress) at N=20 on this machine; one seed at a time runs.
        keys = jax.random.split(jax.random.key(args.seed), args.curve_seeds)
        run = jax.jit(one)
        r = np.asarray([run(k) for k in keys])
        return {"mean": float(r.mean()), "std": float(r.std(ddof=1)) if len(r) > 1 else 0.0}

    rows = {"cycles": K, "burn_in": b, "seeds": args.curve_seeds, "curves": {}, "refs": {}}
    for name, (method, N) in references.items():
        rows["refs"][name] = scorer(method, N)
        print(f"  {name}: {rows['refs'][name]}", flush=True)
    for name, make in methods.items():
        rows["curves"][name] = {}
        for N in sizes:
            rows["curves"][name][N] = scorer(make(N), N)
            print(f"  {name} N={N}: {rows['curves'][name][N]}", flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in rows["curves"].items():
        m = [curve[N]["mean"] for N in sizes]
        e = [curve[N]["std"] for N in sizes]
        ax.errorbar(sizes, m, yerr=e, marker="o", capsize=3, label=name)
    for (name, ref), ls in zip(rows["refs"].items(), ("--", ":"), strict=True):
        ax.axhline(ref["mean"], color="k", ls=ls, lw=1, label=f"{name}: {ref['mean']:.3f}")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.set_yscale("log")
    ax.set_xlabel("ensemble size N")
    ax.set_ylabel("time-mean analysis RMSE")
    ax.set_title(f"Lorenz-96, obs every 4 steps (dto 0.2), {K} cycles, {args.curve_seeds} seeds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = Path(args.out).parent / "fourdenvar_curve.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    rows["png"] = str(png)
    return rows


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------
def _fmt(v, nd=3):
    return "–" if v is None else f"{v:.{nd}f}"


def print_tables(rows, n_seeds):
    sections = []
    for r in rows:
        if r["section"] not in sections:
            sections.append(r["section"])
    for sec in sections:
        print(f"\n#### {sec}\n")
        print(
            "| configuration | documented rmse.a | DAPPER a / s (obs times) "
            "| jaxda on DAPPER's data a / s | jaxda a / s, mean ± sd "
            f"({n_seeds} seeds, obs times) | jaxda cycles/s | DAPPER cycles/s | speed ratio "
            "| jaxda compile [s] | jaxda vmapped seeds cycles/s |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in (r for r in rows if r["section"] == sec):
            d, jd, js = r["dapper"], r["jaxda_on_dapper_data"], r["jaxda_seeds"]
            dcell = f"{_fmt(d['rmse_a'])} / {_fmt(d['rmse_s'])} ({d['cycles']})" if d else "–"
            jdcell = f"{_fmt(jd['rmse_a'])} / {_fmt(jd['rmse_s'])}" if jd else "–"
            jscell = (
                f"{js['rmse_a']['mean']:.3f} ± {js['rmse_a']['std']:.3f} / "
                f"{js['rmse_s']['mean']:.3f} ± {js['rmse_s']['std']:.3f} ({js['cycles']})"
            )
            jrate = jd["cycles_per_s"] if jd else None
            drate = d["cycles_per_s"] if d else None
            ratio = f"{jrate / drate:.0f}x" if jrate and drate else "–"
            comp = _fmt(jd["compile_s"], 1) if jd else _fmt(js["compile_s"], 1)
            print(
                f"| {r['label']} | {_fmt(r['documented'], 2)} | {dcell} | {jdcell} | {jscell} | "
                f"{_fmt(jrate, 0)} | {_fmt(drate, 1)} | {ratio} | {comp} | "
                f"{js['batched_cycles_per_s']:.0f} |"
            )


def print_curve(curve):
    sizes = sorted({int(n) for c in curve["curves"].values() for n in c})
    print(
        f"\n#### 4DEnVar vs ensemble size, Lorenz-96 obs every 4 steps ({curve['cycles']} cycles, "
        f"burn-in {curve['burn_in']}, {curve['seeds']} seeds, analysis RMSE mean ± sd)\n"
    )
    print("| method | " + " | ".join(f"N={n}" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for name, c in curve["curves"].items():
        cells = [f"{c[n]['mean']:.3f} ± {c[n]['std']:.3f}" for n in sizes]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, ref in curve["refs"].items():
        cell = f"{ref['mean']:.3f} ± {ref['std']:.3f}"
        print(f"| {name} | " + " | ".join([cell] * len(sizes)) + " |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run (main configs, short runs)")
    p.add_argument("--no-dapper", action="store_true", help="jaxda only (its own seeds runs)")
    p.add_argument("--seeds", type=int, default=None, help="jaxda seeds vmapped per config")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--only", default=None, help="comma-separated config keys (default: all)")
    p.add_argument("--curve", action="store_true", help="run the 4DEnVar-curve section anyway")
    p.add_argument("--curve-cycles", type=int, default=3_000)
    p.add_argument("--curve-burn-in", type=int, default=100)
    p.add_argument("--curve-seeds", type=int, default=3)
    p.add_argument("--out", default=str(HERE / "results" / "window_methods.json"))
    p.add_argument(
        "--update",
        action="store_true",
        help="merge into an existing --out file: replace the rows run now (by key) and the curve",
    )
    args = p.parse_args()
    jax.config.update("jax_enable_x64", True)
    plan = QUICK if args.quick else FULL
    n_seeds = args.seeds or plan["seeds"]
    if args.quick:
        args.curve_cycles, args.curve_burn_in, args.curve_seeds = 200, 20, 2
    configs = [c for c in CONFIGS if c["main"] or not args.quick]
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in CONFIGS if c["key"] in wanted]

    t_start = time.perf_counter()
    rows = []
    for cfg in configs:
        t_cfg = time.perf_counter()
        name = cfg["setup"]
        b = plan["burn_in"][name]
        row = {k: cfg[k] for k in ("key", "section", "label", "N", "documented")}
        row["jaxda_method"] = [cfg["method"][0], cfg["method"][1]]
        row["dapper_method"] = [cfg["dapper"][0], cfg["dapper"][1]]
        row["dapper"] = row["jaxda_on_dapper_data"] = None
        if not args.no_dapper:
            dc = plan["dapper_cycles"]
            K_d = dc.get(cfg["key"], dc.get("default"))
            d, xx, yy, dko = run_dapper(cfg, K_d, b, args.seed)
            row["dapper"] = d
            setup_d = jaxda_setup(name, K_d, b)
            data = twin_data_from_dapper(setup_d, xx, yy, dko)
            B_chol = None
            if cfg["method"][0] == "4dvar":  # DAPPER's B: xB times the covariance of its truth
                B_chol = np.linalg.cholesky(cfg["method"][1]["xb"] * np.cov(xx.T))
            row["jaxda_on_dapper_data"] = run_jaxda_on_data(cfg, setup_d, data, args.seed, B_chol)
        setup_j = jaxda_setup(name, plan["jaxda_cycles"][name], b)
        row["jaxda_seeds"] = run_jaxda_seeds(cfg, setup_j, n_seeds, args.seed)
        row["wall_s"] = time.perf_counter() - t_cfg
        rows.append(row)
        js = row["jaxda_seeds"]
        print(
            f"[{row['wall_s']:6.1f}s] {cfg['key']}: jaxda a {js['rmse_a']['mean']:.3f} "
            f"s {js['rmse_s']['mean']:.3f}"
            + (
                f" | DAPPER a {row['dapper']['rmse_a']:.3f} s {_fmt(row['dapper']['rmse_s'])}"
                f" | jaxda on DAPPER data a {row['jaxda_on_dapper_data']['rmse_a']:.3f}"
                f" s {row['jaxda_on_dapper_data']['rmse_s']:.3f}"
                if row["dapper"]
                else ""
            ),
            flush=True,
        )

    from jaxda.assimilate import available_methods

    curve = None
    if "4denvar" in available_methods() or args.curve:
        print("\n4DEnVar curve:", flush=True)
        curve = fourdenvar_curve(args)

    total_s = time.perf_counter() - t_start
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__}, device {jax.devices()[0].platform}, float64"
    )
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    print(f"\n{machine}; load average at the end {load}; total {total_s:.0f} s")
    print_tables(rows, n_seeds)
    if curve is not None:
        print_curve(curve)
    meta = {
        "args": vars(args),
        "machine": machine,
        "load_average_end": load,
        "total_s": total_s,
        "plan": plan,
    }
    out = {"meta": meta, "rows": rows, "fourdenvar_curve": curve}
    if args.update and Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())
        new_keys = {r["key"] for r in rows}
        out["rows"] = [r for r in old["rows"] if r["key"] not in new_keys] + rows
        out["fourdenvar_curve"] = curve if curve is not None else old.get("fourdenvar_curve")
        out["meta"] = old["meta"]
        out["meta_updates"] = [*old.get("meta_updates", []), meta]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
