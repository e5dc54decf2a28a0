"""Sharded vs unsharded EnKF / ETKF / LETKF on 4 forced host (CPU) devices.

The comparisons run in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` so this test process keeps
its single device. The subprocess prints one JSON line of measured differences and
shardings; the assertions are made here.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jaxda.assimilate import with_inflation
    from jaxda.ensemble import enkf, etkf, letkf, letkf_analysis, local_observations
    from jaxda.experiments import sakov2008, twin_experiment
    from jaxda.observations import identity, observation_model, subset
    from jaxda.sharding import make_mesh, shard_ensemble, with_sharding

    out = {"n_devices": len(jax.devices())}
    mesh = make_mesh()
    def diff(a, b):
        return float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))
    def ndev(x):
        return len(x.sharding.device_set)

    # LETKF: grid points split with shard_map (n divisible by 4, and padded n = 42)
    for n, stride, bs in [(40, 1, None), (42, 2, 4)]:
        obs = observation_model(subset(np.arange(0, n, stride), n), obs_std=0.8)
        loc = local_observations(n, obs.operator.locations, 3.0)
        E = jax.random.normal(jax.random.key(n), (8, n))
        y = jax.random.normal(jax.random.key(n + 1), (obs.dim,))
        ref = jax.jit(lambda E, y: letkf_analysis(E, y, obs, loc))(E, y)
        sh = jax.jit(lambda E, y: letkf_analysis(E, y, obs, loc, mesh=mesh, batch_size=bs))(
            shard_ensemble(E, mesh, "members") if n % 4 else shard_ensemble(E, mesh), y)
        out[f"letkf_{n}"] = [diff(ref, sh), ndev(sh), float(jnp.max(jnp.abs(ref - E)))]

    # global EnKF / ETKF: ensembles sharded over the state or the member axis
    n, N = 40, 8
    obs = observation_model(identity(n), obs_std=1.0)
    E = jax.random.normal(jax.random.key(7), (N, n))
    y = jax.random.normal(jax.random.key(8), (n,))
    key = jax.random.key(9)
    def analysis(method):
        return jax.jit(lambda k, E, y: method.step(k, method.init(E, obs), y, obs)[0].ensemble)
    for name, factory in {"enkf": enkf, "etkf": etkf}.items():
        ref = analysis(factory())(key, E, y)
        for over in ("state", "members"):
            f = analysis(with_sharding(factory(), mesh, over))
            sh = f(key, shard_ensemble(E, mesh, over), y)
            out[f"{name}_{over}"] = [diff(ref, sh), ndev(sh), str(sh.sharding.spec)]

    # a short twin experiment: sharded LETKF (shard_map) and sharded ETKF vs unsharded
    setup = sakov2008(n_cycles=60, burn_in=10)
    runs = {
        "twin_letkf": (letkf(4.0), letkf(4.0, mesh=mesh), 7),
        "twin_etkf": (etkf(), with_sharding(etkf(), mesh), 20),
    }
    for name, (f, g, N) in runs.items():
        k = jax.random.key(11)
        a = jax.jit(lambda k: twin_experiment(k, setup, with_inflation(f, 1.04), N))(k)
        b = jax.jit(lambda k: twin_experiment(k, setup, with_inflation(g, 1.04), N))(k)
        out[name] = [diff(a.history.rmse_analysis, b.history.rmse_analysis),
                     float(a.rmse_analysis), ndev(b.state.ensemble)]
    print("RESULT" + json.dumps(out))
    """
)


def _sharded_results():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_sharded_filters_equal_unsharded_on_four_devices():
    """One test (the 4-device subprocess runs once, whichever xdist worker takes it)."""
    res = _sharded_results()
    assert res["n_devices"] == 4
    for n in (40, 42):  # LETKF, with n divisible by 4 and not
        d, ndev, change = res[f"letkf_{n}"]
        assert change > 0.1, n  # the analysis does something
        assert d < 1e-12, n
        if n == 40:
            assert ndev == 4  # result spread over the 4 devices
    for name in ("enkf", "etkf"):
        for over in ("state", "members"):
            d, ndev, spec = res[f"{name}_{over}"]
            assert d < 1e-12, (name, over)
            assert ndev == 4, (name, over)
            assert "'x'" in spec, (name, over)
    for name in ("twin_letkf", "twin_etkf"):
        d, rmse, ndev = res[name]
        assert 0 < rmse < 1.0, name  # converged filter (spin-up included in the 50-cycle mean)
        # 60 chaotic cycles amplify round-off of the different reduction order only mildly
        assert d < 1e-8, name
        assert ndev == 4, name
