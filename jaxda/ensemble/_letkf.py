r"""Local ensemble transform Kalman filter (LETKF) with Gaspari–Cohn observation tapering.

For every grid point ``i`` an ETKF analysis is computed from the observations
within the taper support only, the whitened observation anomalies of
observation ``j`` being multiplied by ``√ρ_ij`` (``R^{-1}`` scaled by the taper
coefficient ``ρ_ij = GC(dist(i, j), radius)``, DAPPER's convention). With the
local whitened scaled anomalies ``S_i = S[:, J_i] diag(√ρ_i)`` (``N×k``) and the
local whitened innovation ``d_i = diag(√ρ_i) R^{-1/2}(y - ȳ)[J_i]``:

.. math::
    w_i = (I + S_i S_iᵀ)^{-1} S_i d_i,\qquad
    T_i = (I + S_i S_iᵀ)^{-1/2},\qquad
    E^a_{:,i} = x̄_i + \frac{w_iᵀ A_{:,i}}{\sqrt{N-1}} + T_i A_{:,i}

with the unscaled anomalies ``A = E - x̄`` (``N×n``). ``T_i`` is the symmetric square root, so each local
analysis preserves the ensemble mean. When ``k < N`` the transform is computed
from the ``k×k`` matrix ``S_iᵀ S_i`` instead of the ``N×N`` one (same result).

Memory: the observation indices of every grid point's taper support are found
once (:func:`local_observations`, a ``(n, k)`` table with a static maximum count
``k``) and gathered by index, so an analysis needs ``O(nN + mN + n k)`` memory,
never ``O(nm)``; ``batch_size`` runs the grid points in sequential batches
(``lax.map``) to bound the ``O(n N max(N, k))`` work arrays as well.

Missing observations (``NaN`` in ``y``) have zero whitened anomalies and innovation, so they
drop out of every local analysis. With a ``mesh`` the grid points are split across devices with
:func:`jax.shard_map` (each device runs the local analyses of its block against the replicated
``S``), so the per-device memory is ``O(nN/d + mN)``.

References:
    Hunt, Kostelich & Szunyogh (2007), *Physica D* 230;
    Sakov & Bertino (2011), *Comput. Geosci.* 15 (R- vs gain localization);
    DAPPER ``da_methods.ensemble.LETKF`` (Raanes et al.).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core import Method, analysis_info, check_ensemble, check_in_range, check_vector, is_concrete
from ..observations import ObservationModel, observed
from ._core import mean_and_anomalies, obs_space
from ._localization import GC_SCALE, gain_taper, gaspari_cohn


class LocalObs(NamedTuple):
    """Observations local to each grid point (a pytree; pass it through ``jit``/``shard_map``).

    Attributes:
        indices: ``(n, k)`` observation indices within the taper support of each
            grid point, padded with ``0``.
        coeffs: ``(n, k)`` Gaspari–Cohn taper coefficients; ``0`` marks padding.
    """

    indices: Int[Array, "n k"]
    coeffs: Float[Array, "n k"]


def local_observations(
    n: int,
    obs_locations,
    radius: float,
    *,
    state_locations=None,
    periodic: bool = True,
    domain_length: float | None = None,
    cutoff: float = 0.0,
) -> LocalObs:
    r"""Table of the observations within the Gaspari–Cohn support of each grid point (1-D).

    Observation ``j`` is local to grid point ``i`` when its taper coefficient
    ``gaspari_cohn(dist(s_i, o_j), radius)`` exceeds ``cutoff`` (the support is
    ``dist < 2·radius·√(10/3)``). Computed eagerly with NumPy by sorting the
    observation locations and searching the window ``[s_i - 2c, s_i + 2c]`` of
    each grid point: ``O((n + m) log m)`` time and ``O(n k)`` memory, with ``k``
    the largest local count (e.g. ``k = 29`` for ``radius = 4`` and observations
    at every grid point); no ``n×m`` array is formed.

    Args:
        n: number of grid points (state variables).
        obs_locations: ``(m,)`` observation positions, e.g. ``obs.operator.indices``.
        radius: localization radius (DAPPER convention, see :func:`gaspari_cohn`).
        state_locations: ``(n,)`` grid positions; defaults to ``0, 1, …, n-1``.
        periodic: distances on a ring of length ``domain_length`` (default ``n``).
        domain_length: ring length when ``periodic``.
        cutoff: drop observations whose coefficient is ``<= cutoff`` (DAPPER uses ``1e-3``).

    Examples:
        >>> loc = local_observations(40, range(40), radius=4.0)
        >>> loc.indices.shape
        (40, 29)
    """
    if not (isinstance(radius, int | float) and math.isfinite(radius) and radius > 0):
        raise ValueError(f"localization radius must be positive and finite, got {radius}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= cutoff < 1.0:
        raise ValueError(f"cutoff must be in [0, 1), got {cutoff}")
    obs_loc = np.asarray(obs_locations, dtype=np.float64).reshape(-1)
    m = obs_loc.size
    if m == 0:
        raise ValueError("obs_locations must not be empty")
    s = (
        np.arange(n, dtype=np.float64)
        if state_locations is None
        else np.asarray(state_locations, dtype=np.float64).reshape(-1)
    )
    if s.size != n:
        raise ValueError(f"state_locations must have length n={n}, got {s.size}")
    L = float(n if domain_length is None else domain_length)
    if periodic and L <= 0:
        raise ValueError(f"domain_length must be positive, got {L}")
    half = 2.0 * radius * GC_SCALE  # support half-width 2c

    if periodic and 2.0 * half >= L:
        # The support covers the whole ring: every observation is local.
        idx = np.broadcast_to(np.arange(m), (n, m))
        d = np.abs(s[:, None] - obs_loc[None, :]) % L
        d = np.minimum(d, L - d)
        valid = np.ones((n, m), dtype=bool)
    else:
        order = np.argsort(obs_loc, kind="stable")
        pos = obs_loc[order]
        if periodic:
            pos = np.mod(pos, L)
            order = order[np.argsort(pos, kind="stable")]
            pos = np.sort(pos)
            ext = np.concatenate([pos - L, pos, pos + L])
            ext_idx = np.concatenate([order, order, order])
            s = np.mod(s, L)
        else:
            ext, ext_idx = pos, order
        lo = np.searchsorted(ext, s - half, side="right")
        hi = np.searchsorted(ext, s + half, side="left")
        counts = hi - lo
        k = max(int(counts.max()), 1)
        slot = lo[:, None] + np.arange(k)[None, :]
        valid = np.arange(k)[None, :] < counts[:, None]
        slot = np.where(valid, slot, 0)
        idx = ext_idx[slot]
        d = np.abs(ext[slot] - s[:, None])
    with jax.ensure_compile_time_eval():  # eager even when called under jit
        coeff = np.asarray(gaspari_cohn(jnp.asarray(d), radius))
    keep = valid & (coeff > cutoff)
    if not keep.all():
        # Compact so that the static width k is as small as possible.
        k = max(int(keep.sum(axis=1).max()), 1)
        rank = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        idx = np.take_along_axis(np.asarray(idx), rank, axis=1)
        coeff = np.take_along_axis(coeff, rank, axis=1)
        kept = np.take_along_axis(keep, rank, axis=1)
        idx = np.where(kept, idx, 0)
        coeff = np.where(kept, coeff, 0.0)
    return LocalObs(jnp.asarray(np.ascontiguousarray(idx), dtype=jnp.int32), jnp.asarray(coeff))


def letkf_transform(
    S: Float[Array, "N k"], d: Float[Array, " k"]
) -> tuple[Float[Array, " N"], Float[Array, "N N"]]:
    r"""Mean weights ``w = (I+SSᵀ)^{-1} S d`` and ``T = (I+SSᵀ)^{-1/2}`` of one local analysis.

    If ``k >= N`` the ``N×N`` eigen-decomposition of ``S Sᵀ`` is used; otherwise
    that of ``SᵀS = UΛUᵀ`` (``k×k``) with ``w = S U (I+Λ)^{-1} Uᵀ d`` and
    ``T = I + S U g(Λ) Uᵀ Sᵀ``, ``g(λ) = ((1+λ)^{-1/2} - 1)/λ = -1/(√(1+λ)(1+√(1+λ)))``,
    which is the same matrix and is well defined for ``λ = 0`` (padded observations).
    """
    N, k = S.shape
    if k >= N:
        lam, V = jnp.linalg.eigh(S @ S.T)
        lam = jnp.maximum(lam, 0.0)
        w = V @ ((V.T @ (S @ d)) / (1.0 + lam))
        T = (V * jax.lax.rsqrt(1.0 + lam)) @ V.T
        return w, T
    lam, U = jnp.linalg.eigh(S.T @ S)
    lam = jnp.maximum(lam, 0.0)
    SU = S @ U  # (N, k)
    w = SU @ ((U.T @ d) / (1.0 + lam))
    r = jnp.sqrt(1.0 + lam)
    g = -1.0 / (r * (1.0 + r))
    T = jnp.eye(N, dtype=S.dtype) + (SU * g) @ SU.T
    return w, T


def local_update(
    S: Float[Array, "N m"],
    dw: Float[Array, " m"],
    indices: Int[Array, "p k"],
    coeffs: Float[Array, "p k"],
    anomalies_t: Float[Array, "p N"],
    mean: Float[Array, " p"],
    batch_size: int | None = None,
) -> Float[Array, "p N"]:
    """Local analyses of ``p`` grid points (rows of ``anomalies_t``; returns ``E^a`` transposed).

    ``S`` are the global whitened scaled observation anomalies and ``dw`` the
    whitened innovation; each grid point gathers its ``k`` local observations by
    index. Grid points are vmapped, or processed ``batch_size`` at a time with
    ``lax.map`` to bound memory. Building block of :func:`letkf_analysis` and of
    the sharded LETKF in :mod:`jaxda.sharding` (where ``p`` is one device's block).
    """
    N = S.shape[0]
    scale = 1.0 / math.sqrt(N - 1.0)
    ST = S.T  # (m, N): gather contiguous rows

    def point(args):
        ii, c, a, mu = args
        sq = jnp.sqrt(c).astype(S.dtype)
        Sl = (ST[ii] * sq[:, None]).T  # (N, k)
        dl = dw[ii] * sq
        w, T = letkf_transform(Sl, dl)
        return mu + scale * (w @ a) + T @ a

    xs = (indices, coeffs, anomalies_t, mean)
    p = indices.shape[0]
    if batch_size is None or batch_size >= p:
        return jax.vmap(point)(xs)
    # Pad to whole batches: lax.map's separate remainder batch was seen to deadlock XLA:CPU's
    # thread pool (n = 10,000, batch 4,096, several forced host devices). Padded grid points
    # have no observations (coefficient 0) and are dropped.
    pad = -p % batch_size
    if pad:
        xs = jax.tree.map(lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), xs)
    return jax.lax.map(point, xs, batch_size=batch_size)[:p]


def _check_local(local: LocalObs, n: int, m: int) -> None:
    if not isinstance(local, LocalObs):
        raise ValueError(f"local must be a LocalObs (see local_observations), got {type(local)}")
    if local.indices.ndim != 2 or local.indices.shape[0] != n:
        raise ValueError(f"local.indices must have shape (n={n}, k), got {local.indices.shape}")
    if local.coeffs.shape != local.indices.shape:
        raise ValueError(
            f"local.coeffs shape {local.coeffs.shape} differs from local.indices shape "
            f"{local.indices.shape}"
        )
    if is_concrete(local.indices):
        idx = np.asarray(local.indices)
        if idx.size and (idx.min() < 0 or idx.max() >= m):
            raise ValueError(
                f"local.indices must lie in [0, m={m}), got [{idx.min()}, {idx.max()}]"
            )


def _check_batch_size(batch_size) -> None:
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")


def _analysis_inputs(ensemble, y, obs):
    mean, A = mean_and_anomalies(ensemble)
    os = obs_space(ensemble, obs, y)
    return mean, A, os.S.astype(ensemble.dtype), os.innovation(y).astype(ensemble.dtype)


def letkf_analysis(
    ensemble: Float[Array, "N n"],
    y: Float[Array, " m"],
    obs: ObservationModel,
    local: LocalObs,
    *,
    batch_size: int | None = None,
    mesh=None,
) -> Float[Array, "N n"]:
    r"""Deterministic LETKF analysis (local symmetric-square-root ETKF per grid point).

    Args:
        ensemble: forecast ensemble ``(N, n)``, ``N >= 2``.
        y: observations ``(m,)``; ``NaN`` marks a missing value.
        obs: observation model; ``R^{-1/2}`` is applied globally (use a diagonal
            ``R`` for a meaningful localization, as DAPPER does).
        local: local observation table from :func:`local_observations`.
        batch_size: process grid points ``batch_size`` at a time (``lax.map``)
            instead of all at once (``vmap``): bounds the ``O(n N max(N, k))`` work memory.
        mesh: a 1-D :class:`jax.sharding.Mesh`: split the grid points across its devices.

    Returns:
        The analysis ensemble ``(N, n)``. With an infinite radius (every
        coefficient 1) it equals :func:`jaxda.ensemble.etkf_analysis`.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(10), obs_std=1.0)
        >>> loc = local_observations(10, obs.operator.locations, radius=2.0)
        >>> E = jax.random.normal(jax.random.key(0), (5, 10))
        >>> letkf_analysis(E, jnp.zeros(10), obs, loc).shape
        (5, 10)
    """
    check_ensemble(ensemble)
    check_vector(y, "y", obs.dim)
    _check_local(local, ensemble.shape[1], obs.dim)
    _check_batch_size(batch_size)
    mean, A, S, dw = _analysis_inputs(ensemble, y, obs)
    if mesh is not None:
        return _sharded_local_update(S, dw, local, A, mean, mesh, batch_size)
    cols = local_update(S, dw, local.indices, local.coeffs, A.T, mean, batch_size)
    return cols.T.astype(ensemble.dtype)


def _sharded_local_update(S, dw, local, A, mean, mesh, batch_size):
    from jax.sharding import NamedSharding, PartitionSpec

    if len(mesh.axis_names) != 1:
        raise ValueError(f"expected a 1-D mesh, got axes {mesh.axis_names}")
    ax = mesh.axis_names[0]
    n = A.shape[1]
    d = mesh.devices.size
    pad = -n % d
    idx, coeff, At = local.indices, local.coeffs, A.T
    if pad:  # dummy grid points without observations: unchanged, then dropped
        idx = jnp.pad(idx, ((0, pad), (0, 0)))
        coeff = jnp.pad(coeff, ((0, pad), (0, 0)))
        At = jnp.pad(At, ((0, pad), (0, 0)))
        mean = jnp.pad(mean, (0, pad))
    rows = PartitionSpec(ax)
    if jax.default_backend() == "cpu":
        # One local analysis at a time on each CPU device: two batched LAPACK eigh calls running
        # at once on XLA:CPU's shared thread pool (several host devices on one CPU) can wait on
        # each other forever (seen with 2 and 4 forced host devices). The result is the same.
        batch_size = 1
    f = jax.shard_map(
        lambda S_, dw_, i_, c_, a_, m_: local_update(S_, dw_, i_, c_, a_, m_, batch_size),
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(), rows, rows, rows, rows),
        out_specs=rows,
    )
    cols = f(S, dw, idx, coeff, At, mean)  # (n + pad, N), sharded over grid points
    if pad:
        return cols[:n].T
    return jax.lax.with_sharding_constraint(cols.T, NamedSharding(mesh, PartitionSpec(None, ax)))


class LETKFState(NamedTuple):
    """LETKF state: the ensemble and, for a fixed observation network, the local table."""

    ensemble: Float[Array, "N n"]
    local: LocalObs | None


def letkf(
    localization_radius: float,
    *,
    state_locations=None,
    periodic: bool = True,
    domain_length: float | None = None,
    cutoff: float = 0.0,
    batch_size: int | None = None,
    mesh=None,
) -> Method:
    """The LETKF as a :class:`jaxda.core.Method` (Gaspari–Cohn R-localization, DAPPER's radius).

    State positions default to the grid indices ``0..n-1`` on a periodic domain of length
    ``n`` (the Lorenz-96 ring); observation positions are ``obs.operator.locations``. When the
    observation network is fixed, ``init(ensemble, obs)`` builds the table of local
    observations once (``O(n k)`` memory); when it changes in time, each step computes the
    taper against every observation (``O(n m)`` memory). ``mesh`` shards the grid points
    across devices. Deterministic: the key is unused (see :func:`jaxda.assimilate.with_rotation`).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(10), obs_std=1.0)
        >>> method = letkf(2.0)
        >>> state = method.init(jax.random.normal(jax.random.key(0), (5, 10)), obs)
        >>> state.local.indices.shape
        (10, 10)
    """
    check_in_range("localization_radius", localization_radius, 0.0, float("inf"), closed_low=False)
    check_in_range("cutoff", cutoff, 0.0, 1.0, closed_high=False)
    _check_batch_size(batch_size)

    def positions(n):
        s = (
            np.arange(n, dtype=float)
            if state_locations is None
            else np.asarray(state_locations, float)
        )
        if s.shape != (n,):
            raise ValueError(f"state_locations must have length n={n}, got shape {s.shape}")
        return s, float(n if domain_length is None else domain_length)

    def table(n, obs):
        loc = obs.operator.locations
        if loc is None:
            raise ValueError(
                "LETKF needs observation locations: use an operator with locations (identity, "
                "subset, or linear/from_callable with locations=)"
            )
        with jax.ensure_compile_time_eval():
            loc = obs.operator.locations
        s, L = positions(n)
        if is_concrete(loc):
            return local_observations(
                n,
                np.asarray(loc),
                localization_radius,
                state_locations=s,
                periodic=periodic,
                domain_length=L,
                cutoff=cutoff,
            )
        # traced locations (a network that changes in time): every observation, tapered
        coeff = gain_taper(
            n, loc, localization_radius, periodic, state_locations=s, domain_length=L
        )
        coeff = jnp.where(coeff > cutoff, coeff, 0.0)
        idx = jnp.broadcast_to(jnp.arange(loc.shape[0], dtype=jnp.int32), coeff.shape)
        return LocalObs(idx, coeff)

    def init(ensemble, obs=None):
        check_ensemble(ensemble)
        return LETKFState(ensemble, None if obs is None else table(ensemble.shape[1], obs))

    def step(key, state, y, obs):
        del key
        E = state.ensemble
        local = state.local if state.local is not None else table(E.shape[1], obs)
        Ea = letkf_analysis(E, y, obs, local, batch_size=batch_size, mesh=mesh)
        return LETKFState(Ea, state.local), analysis_info(Ea, observed(y))

    return Method(init, step)
