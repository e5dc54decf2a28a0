"""Multi-host (multi-process) LETKF twin experiment with ``jax.distributed`` and ``jax.sharding``.

JAX runs one Python process per host (multi-controller SPMD): every process runs this
same script, ``jax.distributed.initialize`` connects them, ``jax.devices()`` then lists
the devices of all processes, and one :class:`jax.sharding.Mesh` spans them. The
ensemble is a global ``jax.Array`` sharded over the state axis; each process only
creates its own shards (``jax.make_array_from_callback``); the LETKF grid points are
split across all devices with ``shard_map`` (``jaxda.ensemble.letkf(radius, mesh=mesh)``), and
the cycling is the library driver :func:`jaxda.assimilate.assimilate`.

Single process (any machine; with ``--host-devices 4`` it fakes 4 CPU devices)::

    python benchmarks/multihost_example.py
    python benchmarks/multihost_example.py --host-devices 4

Two processes on one machine (CPU, gloo collectives), e.g. to try it out::

    python benchmarks/multihost_example.py --num-processes 2 --process-id 0 &
    python benchmarks/multihost_example.py --num-processes 2 --process-id 1

On a cluster, start one process per host with the coordinator's address
(``--coordinator host0:12355 --num-processes P --process-id i``), or use
``--auto`` where JAX detects the cluster itself (SLURM, Open MPI, Cloud TPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--coordinator", default="localhost:12355")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument(
        "--auto", action="store_true", help="jax.distributed.initialize() auto-detection"
    )
    p.add_argument(
        "--host-devices", type=int, default=0, help="force this many CPU devices per process"
    )
    p.add_argument("--n", type=int, default=4000, help="Lorenz-96 state size")
    p.add_argument("--members", type=int, default=20)
    p.add_argument("--cycles", type=int, default=50)
    p.add_argument("--radius", type=float, default=4.0)
    args = p.parse_args(argv)

    if args.host_devices:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.host_devices}"
        )
    import jax

    jax.config.update("jax_enable_x64", True)
    if args.auto:
        jax.distributed.initialize()
    elif args.num_processes > 1:
        # CPU processes need a collectives backend (GPU/TPU have their own; harmless there).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    import jax.numpy as jnp
    import numpy as np
    from jax.experimental import multihost_utils

    from jaxda.assimilate import assimilate, with_inflation
    from jaxda.ensemble import letkf
    from jaxda.experiments import TwinSetup, chronology, initial_ensemble, simulate
    from jaxda.models import gaussian, lorenz96, trajectory
    from jaxda.observations import identity, observation_model
    from jaxda.sharding import ensemble_sharding, make_mesh

    mesh = make_mesh()  # every device of every process
    d = mesh.devices.size
    n = args.n - args.n % d  # the state axis is split evenly over the devices
    model = lorenz96(n=n)
    # Every process computes the same (small) inputs from the same seed: identical replicas.
    x_spun = trajectory(jax.random.key(1), model, 8.0 + jnp.sin(jnp.arange(n)), 200)[-1]
    setup = TwinSetup(
        model=model,
        obs=observation_model(identity(n), obs_std=1.0),
        chronology=chronology(
            model.dt, obs_every=1, n_cycles=args.cycles, burn_in=args.cycles // 5
        ),
        initial=gaussian(x_spun, 1.0),
    )
    kd, ki, kr = jax.random.split(jax.random.key(0), 3)
    data = jax.tree.map(np.asarray, simulate(kd, setup))  # host copies, same in every process
    E_host = np.asarray(initial_ensemble(ki, setup, args.members))
    sharding = ensemble_sharding(mesh, "state")
    # Each process materializes only the shards of its own devices.
    E0 = jax.make_array_from_callback(E_host.shape, sharding, lambda index: E_host[index])
    # LETKF with its grid points split across the mesh (shard_map), inflation 1.04
    method = with_inflation(letkf(args.radius, mesh=mesh, batch_size=2048), 1.04)

    @jax.jit
    def run(E0, observations, truth):
        return assimilate(kr, method, setup.model, observations, E0, truth=truth)

    t0 = time.perf_counter()
    state, hist = jax.block_until_ready(run(E0, data.observations, data.truth))
    E = state.ensemble
    wall = time.perf_counter() - t0
    rmse = multihost_utils.process_allgather(hist.rmse_analysis, tiled=True)
    if jax.process_index() == 0:
        b = setup.burn_in
        print(
            f"processes={jax.process_count()} devices={d} ({jax.default_backend()}) n={n} "
            f"N={args.members} cycles={args.cycles}: analysis RMSE first {float(rmse[0]):.3f}, "
            f"time mean after burn-in {float(np.mean(rmse[b:])):.3f}; wall {wall:.1f} s incl. compile; "
            f"ensemble sharding {E.sharding.spec} over {len(E.sharding.device_set)} devices"
        )
    if args.num_processes > 1 or args.auto:
        jax.distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
