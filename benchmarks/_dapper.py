"""Running DAPPER experiments for the side-by-side benchmarks (shared by
``bench_filters_dapper.py`` and ``bench_named_setups.py``)."""

from __future__ import annotations

import contextlib
import io
import time


def run_dapper_seeds(HMM, method: str, seeds) -> dict:
    """Run the DAPPER method ``method`` (an expression in ``da``, e.g.
    ``"da.EnKF('Sqrt', N=24, infl=1.013, rot=True)"``) on ``HMM`` once per seed (DAPPER's
    ``set_seed``), quietly. Returns ``{"rmses", "spreads", "times"}`` (time-mean analysis RMSE
    and spread, assimilation seconds) or ``{"error": message}``."""
    import dapper as dpr
    import dapper.da_methods as da

    rmses, spreads, times = [], [], []
    for s in seeds:
        dpr.set_seed(s)
        xp = eval(method, {"da": da})
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            try:
                xx, yy = HMM.simulate()
                t0 = time.perf_counter()
                xp.assimilate(HMM, xx, yy, liveplots=False)
                times.append(time.perf_counter() - t0)
            except Exception as e:
                return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
        xp.stats.average_in_time()
        rmses.append(float(xp.avrgs.err.rms.a.val))
        spreads.append(float(xp.avrgs.spread.rms.a.val))
    return {"rmses": rmses, "spreads": spreads, "times": times}
