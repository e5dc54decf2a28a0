r"""Ensembles and LETKF grid points sharded across devices (``jax.sharding`` / ``shard_map`` only).

Two ways to spread an ensemble ``E`` (``N×n``, members first) over a 1-D device mesh:

* ``over="state"`` shards the state axis (``PartitionSpec(None, axis)``): each device holds
  ``n/d`` variables of every member, ``O(nN/d)`` memory. For the global EnKF/ETKF the
  ensemble-space reductions (``S Sᵀ``, ``S d``) become all-reduces inserted by the
  compiler (GSPMD), so :func:`sharded_analysis` only has to pin the sharding.
* ``over="members"`` shards the member axis (``PartitionSpec(axis, None)``): forecasts are
  embarrassingly parallel; the analysis gathers what it needs.

The LETKF is split explicitly with :func:`jax.shard_map` (``jaxda.ensemble.letkf(...,
mesh=mesh)``): each device runs the local analyses of its own block of grid points against
the replicated whitened observation anomalies ``S`` (``N×m``), so the per-device memory is
``O(nN/d + mN)`` and no communication is needed inside the local analyses.

Multi-host: call ``jax.distributed.initialize()`` first; :func:`make_mesh` then spans
all processes' devices (``jax.devices()``), and arrays are assembled from per-process
pieces with ``jax.make_array_from_callback``. See ``benchmarks/multihost_example.py``.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> mesh = make_mesh()                     # all devices, axis "x"
    >>> E = shard_ensemble(jnp.zeros((8, 16)), mesh)
    >>> E.sharding.spec
    P(None, 'x')
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float

from .core import Method, check_ensemble

_OVER = ("state", "members")


def make_mesh(
    n_devices: int | None = None,
    axis_name: str = "x",
    devices: Sequence | None = None,
) -> Mesh:
    """A 1-D :class:`jax.sharding.Mesh` over the first ``n_devices`` devices (default: all).

    With ``jax.distributed`` initialised, ``jax.devices()`` lists the devices of every
    process, so the mesh spans all hosts.
    """
    devs = list(jax.devices() if devices is None else devices)
    if n_devices is None:
        n_devices = len(devs)
    if not isinstance(n_devices, int) or not 1 <= n_devices <= len(devs):
        raise ValueError(f"n_devices must be in [1, {len(devs)}], got {n_devices!r}")
    return Mesh(np.array(devs[:n_devices]), (axis_name,))


def _axis(mesh: Mesh) -> str:
    if len(mesh.axis_names) != 1:
        raise ValueError(f"expected a 1-D mesh, got axes {mesh.axis_names}")
    return mesh.axis_names[0]


def ensemble_spec(mesh: Mesh, over: str = "state") -> PartitionSpec:
    """``PartitionSpec`` of a members-first ensemble sharded over the state or the member axis."""
    if over not in _OVER:
        raise ValueError(f"over must be one of {_OVER}, got {over!r}")
    ax = _axis(mesh)
    return PartitionSpec(None, ax) if over == "state" else PartitionSpec(ax, None)


def ensemble_sharding(mesh: Mesh, over: str = "state") -> NamedSharding:
    """:class:`jax.sharding.NamedSharding` for a members-first ``(N, n)`` ensemble."""
    return NamedSharding(mesh, ensemble_spec(mesh, over))


def shard_ensemble(E: Float[Array, "N n"], mesh: Mesh, over: str = "state") -> Float[Array, "N n"]:
    """Place ``E`` on the mesh (``jax.device_put``), sharded over ``over`` (``"state"``/``"members"``).

    The sharded axis must be divisible by the number of devices.
    """
    check_ensemble(E, min_members=1)
    d = mesh.devices.size
    size = E.shape[1] if over == "state" else E.shape[0]
    sharding = ensemble_sharding(mesh, over)
    if size % d:
        raise ValueError(
            f"the {over} axis (size {size}) must be divisible by the number of devices ({d})"
        )
    return jax.device_put(E, sharding)


def with_sharding(method: Method, mesh: Mesh, over: str = "state") -> Method:
    """Wrap any :class:`jaxda.core.Method` so its ensemble stays sharded over ``mesh``.

    Applies ``jax.lax.with_sharding_constraint`` to the ensemble before and after each step;
    the compiler partitions the computation in between (e.g. EnKF/ETKF ensemble-space
    reductions become all-reduces). Inside :func:`jaxda.assimilate.assimilate` this keeps the
    scan carry (and the vmapped forecast) sharded. For the LETKF use ``letkf(..., mesh=mesh)``,
    which splits the local analyses explicitly with ``shard_map``.
    """
    if not isinstance(method, Method):
        raise TypeError(f"expected a jaxda.core.Method, got {type(method).__name__}")
    sharding = ensemble_sharding(mesh, over)

    def init(ensemble, obs=None):
        return method.init(jax.lax.with_sharding_constraint(ensemble, sharding), obs)

    def step(key, state, y, obs):
        state = state._replace(ensemble=jax.lax.with_sharding_constraint(state.ensemble, sharding))
        state, info = method.step(key, state, y, obs)
        return state._replace(
            ensemble=jax.lax.with_sharding_constraint(state.ensemble, sharding)
        ), info

    return Method(init, step, method.forecast)


__all__ = [
    "ensemble_sharding",
    "ensemble_spec",
    "make_mesh",
    "shard_ensemble",
    "with_sharding",
]
