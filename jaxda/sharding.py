r"""Ensembles and LETKF grid points sharded across devices (``jax.sharding`` / ``shard_map`` only).

Two ways to spread an ensemble ``E`` (``N×n``, members first) over a 1-D device mesh:

* ``over="state"`` shards the state axis (``PartitionSpec(None, axis)``): each device holds
  ``n/d`` variables of every member, ``O(nN/d)`` memory. For the global EnKF/ETKF the
  ensemble-space reductions (``S Sᵀ``, ``S d``) become all-reduces inserted by the
  compiler (GSPMD), so :func:`sharded_analysis` only has to pin the sharding.
* ``over="members"`` shards the member axis (``PartitionSpec(axis, None)``): forecasts are
  embarrassingly parallel; the analysis gathers what it needs.

The LETKF is split explicitly with :func:`jax.shard_map`: each device runs the local
analyses of its own block of grid points (:func:`jaxda.ensemble._letkf.local_update`)
against the replicated whitened observation anomalies ``S`` (``N×m``), so the per-device
memory is ``O(nN/d + mN)`` and no communication is needed inside the local analyses.

Multi-host: call ``jax.distributed.initialize()`` first; :func:`make_mesh` then spans
all processes' devices (``jax.devices()``), and arrays are assembled from per-process
pieces with ``jax.make_array_from_callback``. See ``benchmarks/multihost_example.py``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> mesh = make_mesh()                     # all devices, axis "x"
    >>> E = shard_ensemble(jnp.zeros((8, 16)), mesh)
    >>> E.sharding.spec
    P(None, 'x')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float

from .core import check_ensemble, check_vector
from .ensemble._core import mean_and_anomalies, obs_space
from .ensemble._letkf import (
    LocalObs,
    _check_batch_size,
    _check_local,
    letkf_factory,
    local_update,
)
from .observations import ObservationModel

AnalysisFn = Callable[[Array, Float[Array, "N n"], Float[Array, " m"]], Float[Array, "N n"]]

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


def sharded_analysis(analysis: AnalysisFn, mesh: Mesh, over: str = "state") -> AnalysisFn:
    """Wrap any ``analysis(key, E, y)`` so its input and output ensembles stay sharded.

    Applies ``jax.lax.with_sharding_constraint`` to the forecast and analysis ensembles;
    the compiler partitions the computation in between (e.g. EnKF/ETKF ensemble-space
    reductions become all-reduces). Inside :func:`jaxda.experiments.twin_experiment`
    this keeps the scan carry (and the vmapped forecast) sharded.
    """
    sharding = ensemble_sharding(mesh, over)

    def wrapped(key, E, y):
        E = jax.lax.with_sharding_constraint(E, sharding)
        return jax.lax.with_sharding_constraint(analysis(key, E, y), sharding)

    return wrapped


def sharded_letkf_analysis(
    ensemble: Float[Array, "N n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    local: LocalObs,
    mesh: Mesh,
    *,
    batch_size: int | None = None,
) -> Float[Array, "N n"]:
    r"""LETKF analysis with the grid points split across the devices of a 1-D mesh.

    Same mathematics as :func:`jaxda.ensemble.letkf_analysis`; the grid points (and the
    ``(n, k)`` local-observation table) are padded to a multiple of the device count and
    sharded with :func:`jax.shard_map`; ``S`` and the innovation are replicated. The
    result is sharded over the state axis (``PartitionSpec(None, axis)``).
    """
    check_ensemble(ensemble)
    check_vector(y, "y", obs.dim)
    n = ensemble.shape[1]
    _check_local(local, n, obs.dim)
    _check_batch_size(batch_size)
    ax = _axis(mesh)
    d = mesh.devices.size
    n_pad = math.ceil(n / d) * d
    pad = n_pad - n

    mean, A = mean_and_anomalies(ensemble)
    os = obs_space(ensemble, obs)
    S = os.S.astype(ensemble.dtype)
    dw = obs.noise.whiten(y - os.y_mean).astype(ensemble.dtype)
    idx, coeff, At = local.indices, local.coeffs, A.T
    if pad:
        # Dummy grid points without observations: unchanged, then dropped.
        idx = jnp.pad(idx, ((0, pad), (0, 0)))
        coeff = jnp.pad(coeff, ((0, pad), (0, 0)))
        At = jnp.pad(At, ((0, pad), (0, 0)))
        mean = jnp.pad(mean, (0, pad))

    rows = PartitionSpec(ax)
    f = jax.shard_map(
        lambda S_, dw_, i_, c_, a_, m_: local_update(S_, dw_, i_, c_, a_, m_, batch_size),
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(), rows, rows, rows, rows),
        out_specs=rows,
    )
    cols = f(S, dw, idx, coeff, At, mean)  # (n_pad, N), sharded over grid points
    Ea = cols[:n].T if pad else cols.T
    if not pad:
        Ea = jax.lax.with_sharding_constraint(Ea, ensemble_sharding(mesh, "state"))
    return Ea


def make_sharded_letkf(
    obs: ObservationModel,
    n: int,
    localization_radius: float,
    mesh: Mesh,
    *,
    obs_locations=None,
    state_locations=None,
    periodic: bool = True,
    domain_length: float | None = None,
    cutoff: float = 0.0,
    batch_size: int | None = None,
    rotate: bool = False,
) -> AnalysisFn:
    """Sharded counterpart of :func:`jaxda.ensemble.make_letkf` (same options plus ``mesh``).

    Example:
        >>> import jax
        >>> from jaxda.experiments import sakov2008, twin_experiment
        >>> setup = sakov2008(n_cycles=20, burn_in=5)
        >>> f = make_sharded_letkf(setup.obs, 40, 4.0, make_mesh())
        >>> float(twin_experiment(jax.random.key(0), setup, f, 7, 1.04).rmse_analysis) > 0
        True
    """
    return letkf_factory(
        obs,
        n,
        localization_radius,
        lambda E, y, local: sharded_letkf_analysis(E, y, obs, local, mesh, batch_size=batch_size),
        obs_locations=obs_locations,
        state_locations=state_locations,
        periodic=periodic,
        domain_length=domain_length,
        cutoff=cutoff,
        batch_size=batch_size,
        rotate=rotate,
    )


__all__ = [
    "ensemble_sharding",
    "ensemble_spec",
    "make_mesh",
    "make_sharded_letkf",
    "shard_ensemble",
    "sharded_analysis",
    "sharded_letkf_analysis",
]
