"""Imperfect-model twin: the truth has model noise Q, the ensemble forecasts with a right, an
underestimated or no Q; filters side by side on the same observations.

Lorenz-96 (n = 20, F = 8, dt = 0.05), every variable observed every 4 steps with R = I, truth
with model noise Q = 0.5 I per time unit (``with_noise(..., per="time")``). Rows: the ETKF and
the stochastic EnKF (N = 20, no inflation) with the right Q, Q/4 and Q = 0; the ETKF with
adaptive inflation for each; optimal interpolation as the baseline. Time-mean analysis RMSE
after a burn-in of K/5 cycles, per seed.

Usage::

    python benchmarks/bench_imperfect_model.py            # 300 cycles, 2 seeds
    python benchmarks/bench_imperfect_model.py --quick    # 60 cycles, 1 seed
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax

jax.config.update("jax_enable_x64", True)

from jaxda.assimilate import with_adaptive_inflation  # noqa: E402
from jaxda.ensemble import enkf, etkf, optimal_interpolation  # noqa: E402
from jaxda.experiments import sakov2008, simulate, twin_experiment  # noqa: E402
from jaxda.models import with_noise  # noqa: E402

Q = 0.5  # model-error covariance per time unit (times I)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="imperfect-model twin: filters under a misspecified Q"
    )
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    K, seeds = (60, 1) if args.quick else (args.cycles, args.seeds)
    base = sakov2008(n=20, n_cycles=K, burn_in=K // 5, obs_every=4)
    setup = base.replace(truth_model=with_noise(base.model, Q**0.5, per="time"))
    models = {
        "Q right": with_noise(base.model, Q**0.5, per="time"),
        "Q/4": with_noise(base.model, (Q / 4) ** 0.5, per="time"),
        "Q = 0": base.model,
    }
    rows: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for seed in range(seeds):
        key = jax.random.key(seed)
        data = simulate(jax.random.fold_in(key, 7), setup)
        for name, model in models.items():
            s = setup.replace(model=model)
            for label, method in (
                ("ETKF", etkf()),
                ("EnKF", enkf()),
                ("ETKF + adaptive inflation", with_adaptive_inflation(etkf())),
            ):
                r = twin_experiment(key, s, method, 20, data=data)
                rows.setdefault(f"{label}, {name}", []).append(float(r.rmse_analysis))
        oi = optimal_interpolation(model=base.model)
        r = twin_experiment(key, setup.replace(model=base.model), oi, 40, data=data)
        rows.setdefault("optimal interpolation", []).append(float(r.rmse_analysis))
    print(f"| filter, forecast model error | RMSE per seed ({K} cycles) |")
    print("|---|---|")
    for name, v in rows.items():
        print(f"| {name} | {' / '.join(f'{x:.3f}' for x in v)} |")
    print(f"({time.perf_counter() - t0:.0f} s)")
    out = os.path.join(os.path.dirname(__file__), "results", "imperfect_model.json")
    with open(out, "w") as f:
        json.dump({"cycles": K, "seeds": seeds, "Q_per_time": Q, "rmse": rows}, f, indent=1)


if __name__ == "__main__":
    main()
