r"""Local ensemble transform Kalman filter (LETKF) with distance-based observation tapering.

For every grid point ``i`` an ETKF analysis is computed from the observations
within the taper support only, the whitened observation anomalies of
observation ``j`` being multiplied by ``√ρ_ij`` (``R^{-1}`` scaled by the taper
coefficient ``ρ_ij = f(dist(i, j))``, Gaspari–Cohn by default with DAPPER's radius
convention, on any coordinates: see :func:`jaxda.ensemble.gain_taper`). With the
local whitened scaled anomalies ``S_i = S[:, J_i] diag(√ρ_i)`` (``N×k``) and the
local whitened innovation ``d_i = diag(√ρ_i) R^{-1/2}(y - ȳ)[J_i]``:

.. math::
    w_i = (I + S_i S_iᵀ)^{-1} S_i d_i,\qquad
    T_i = (I + S_i S_iᵀ)^{-1/2},\qquad
    E^a_{:,i} = x̄_i + \frac{w_iᵀ A_{:,i}}{\sqrt{N-1}} + T_i A_{:,i}

with the unscaled anomalies ``A = E - x̄`` (``N×n``). ``T_i`` is the symmetric square root, so each local
analysis preserves the ensemble mean. Column ``i`` of the analysis needs ``T_i`` only applied
to ``A_{:,i}``, so no ``N×N`` matrix is formed: when ``k < N`` everything is computed from the
``k×k`` matrix ``S_iᵀ S_i`` (observation space; same result), and the two matrix functions are
applied to vectors, by a Chebyshev expansion in matrix–vector products where it reaches
rounding accuracy and by ``eigh`` otherwise (``solver``, see
:func:`jaxda.ensemble.batched_gram_functions`).

Memory: the observation indices of every grid point's taper support are found
once (:func:`local_observations`, a ``(n, k)`` table with a static maximum count
``k``) and gathered by index, so an analysis needs ``O(nN + mN + n k)`` memory,
never ``O(nm)``; the grid points run in cache-sized blocks (``batch_size``, ``lax.map``), so
the local work arrays take ``O(batch_size · N k)``.

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
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core import Method, analysis_info, check_ensemble, check_in_range, check_vector, is_concrete
from ..observations import ObservationModel, observed
from ._core import mean_and_anomalies, obs_space
from ._localization import (
    EARTH_RADIUS_KM,
    _distance,
    _search_distance,
    _taper,
    check_geometry,
    check_taper,
    gain_taper,
    obs_coordinates,
    resolve_geometry,
)
from ._spectral import batched_gram_functions, check_solver, gram_functions


class LocalObs(NamedTuple):
    """Observations local to each grid point (a pytree; pass it through ``jit``/``shard_map``).

    Attributes:
        indices: ``(n, k)`` observation indices within the taper support of each
            grid point, padded with ``0``.
        coeffs: ``(n, k)`` taper coefficients; ``0`` marks padding.
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
    domain_length=None,
    cutoff: float = 0.0,
    taper: str = "gaspari_cohn",
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
) -> LocalObs:
    r"""Table of the observations within the taper support of each state variable.

    Observation ``j`` is local to state variable ``i`` when its taper coefficient
    ``ρ_ij = f(dist(s_i, o_j))`` (:func:`jaxda.ensemble.taper_coefficients`) exceeds ``cutoff``.
    The geometry is that of :func:`jaxda.ensemble.gain_taper` (same options): 1-D or ``d``-D
    coordinates, each optionally periodic, or ``(longitude, latitude)`` on the sphere. The
    table holds exactly the non-zero entries (``> cutoff``) of the dense ``n×m`` matrix
    ``gain_taper(...)``, which is never formed:

    * one coordinate: the observation positions are sorted and each state variable searches
      the window ``[s_i - r, s_i + r]`` (``r`` the taper support), ``O((n + m) log m)``;
    * ``d`` coordinates: a k-d tree (:class:`scipy.spatial.KDTree`, with a periodic box for
      periodic coordinates) of the observations is queried for the neighbours within ``r``;
    * the sphere: the same in 3-D unit vectors with the chord length ``2 sin(r/(2R))`` of the
      great-circle support ``r``; coefficients are then computed from great-circle distances.

    Memory ``O(n k)``, with ``k`` the largest local count (e.g. ``k = 29`` for
    Gaspari–Cohn with ``radius = 4`` and observations at every point of a 1-D grid). The
    Gaussian and exponential tapers have no compact support: their search stops where the
    coefficient reaches ``cutoff`` (or underflows to ``0`` in double precision when
    ``cutoff = 0``). Computed eagerly with NumPy/SciPy (also when called under ``jit``, from
    concrete locations).

    Args:
        n: number of state variables (grid points).
        obs_locations: ``(m,)`` or ``(m, d)`` observation coordinates, e.g.
            ``obs.operator.locations``; with ``d >= 2`` (or the sphere) an ``(m,)`` integer
            array holds the indices of the observed state variables.
        radius: localization radius ``> 0`` (``inf``: every observation, coefficient 1).
        state_locations: ``(n,)`` or ``(n, d)`` coordinates; defaults to ``0, 1, …, n-1``.
        periodic: wrap each coordinate with period ``domain_length`` (Euclidean geometry).
        domain_length: period, a scalar or one per coordinate (``inf``: that coordinate does not
            wrap); default ``n`` for one coordinate, required for ``d >= 2``.
        cutoff: drop observations whose coefficient is ``<= cutoff`` (DAPPER uses ``1e-3``).
        taper: one of :data:`jaxda.ensemble.TAPERS` (default Gaspari–Cohn).
        geometry: ``"euclidean"`` or ``"sphere"``.
        sphere_radius: sphere radius for ``geometry="sphere"`` (default 6371 km).

    Examples:
        >>> loc = local_observations(40, range(40), radius=4.0)
        >>> loc.indices.shape
        (40, 29)
        >>> import numpy as np
        >>> xy = np.stack(np.meshgrid(np.arange(20.0), np.arange(20.0)), -1).reshape(-1, 2)
        >>> local_observations(400, xy[::7], 2.0, state_locations=xy, periodic=False).indices.shape
        (400, 27)
    """
    check_taper(taper)
    if not (isinstance(radius, int | float | np.floating) and radius > 0):
        raise ValueError(
            f"localization radius must be positive (inf: no localization), got {radius!r}"
        )
    if not isinstance(cutoff, int | float | np.floating) or not 0.0 <= cutoff < 1.0:
        raise ValueError(f"cutoff must be in [0, 1), got {cutoff}")
    if np.size(obs_locations) == 0:
        raise ValueError("obs_locations must not be empty")
    with jax.ensure_compile_time_eval():  # eager even when called under jit
        s_j, geo = resolve_geometry(
            n,
            state_locations,
            periodic=periodic,
            domain_length=domain_length,
            geometry=geometry,
            sphere_radius=sphere_radius,
        )
        if not is_concrete(obs_locations) or not is_concrete(s_j):
            raise ValueError("local_observations needs concrete (not traced) locations")
        o_j = obs_coordinates(obs_locations, s_j, geo)
    s = np.asarray(s_j, dtype=np.float64)
    o = np.asarray(o_j, dtype=np.float64)
    m = o.shape[0]
    search = _search_distance(float(radius), taper, float(cutoff))
    if math.isinf(search):
        idx = np.broadcast_to(np.arange(m), (n, m))
        valid = np.ones((n, m), dtype=bool)
    elif geo.kind == "euclidean" and s.shape[1] == 1:
        idx, valid = _window_search(s[:, 0], o[:, 0], search, geo.periods)
    else:
        idx, valid = _tree_search(s, o, search, geo)
    d = _distance(s[:, None, :], o[idx], geo, np)
    coeff = _taper(d, float(radius), taper, np)
    if not jax.config.read("jax_enable_x64"):
        coeff = coeff.astype(np.float32)
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


def _window_search(s, o, r, periods):
    """Candidates within ``r`` on a line or ring (one coordinate): sort and binary search."""
    m = o.size
    r = r * (1.0 + 1e-9) + 1e-12  # a margin: exact distances and the taper decide afterwards
    L = None if periods is None or math.isinf(periods[0]) else periods[0]
    if L is not None and 2.0 * r >= L:  # the support covers the whole ring
        return np.broadcast_to(np.arange(m), (s.size, m)), np.ones((s.size, m), dtype=bool)
    if L is not None:
        pos = np.mod(o, L)
        order = np.argsort(pos, kind="stable")
        pos = pos[order]
        ext = np.concatenate([pos - L, pos, pos + L])
        ext_idx = np.concatenate([order, order, order])
        s = np.mod(s, L)
    else:
        order = np.argsort(o, kind="stable")
        ext, ext_idx = o[order], order
    lo = np.searchsorted(ext, s - r, side="left")
    hi = np.searchsorted(ext, s + r, side="right")
    counts = hi - lo
    k = max(int(counts.max()), 1)
    slot = lo[:, None] + np.arange(k)[None, :]
    valid = np.arange(k)[None, :] < counts[:, None]
    return ext_idx[np.where(valid, slot, 0)], valid


def _tree_search(s, o, r, geo):
    """Candidates within ``r`` with a k-d tree of the observations (``d`` coordinates, sphere)."""
    from scipy.spatial import KDTree

    m = o.shape[0]
    boxsize = None
    if geo.kind == "sphere":
        angle = r / geo.sphere_radius
        if angle >= math.pi:
            return np.broadcast_to(np.arange(m), (s.shape[0], m)), np.ones((s.shape[0], m), bool)
        s, o = _unit_vectors(s), _unit_vectors(o)
        r = 2.0 * math.sin(0.5 * angle)
    elif geo.periods is not None and any(math.isfinite(L) for L in geo.periods):
        box = np.array([L if math.isfinite(L) else 0.0 for L in geo.periods])
        wrap = box > 0
        s, o = s.copy(), o.copy()
        for a in (s, o):
            a[:, wrap] = np.mod(a[:, wrap], box[wrap])
            a[:, wrap] = np.where(a[:, wrap] >= box[wrap], 0.0, a[:, wrap])  # mod rounding
        boxsize = box
    r = r * (1.0 + 1e-9) + 1e-12  # a margin: exact distances and the taper decide afterwards
    tree = KDTree(o, boxsize=boxsize)
    counts = tree.query_ball_point(s, r, return_length=True)
    k = max(int(np.max(counts)), 1)
    _, idx = tree.query(s, k=k, distance_upper_bound=r)
    idx = np.asarray(idx).reshape(s.shape[0], k)
    valid = idx < m
    return np.where(valid, idx, 0), valid


def _unit_vectors(lonlat):
    lon, lat = np.radians(lonlat[:, 0]), np.radians(lonlat[:, 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=1)


def letkf_transform(
    S: Float[Array, "N k"], d: Float[Array, " k"]
) -> tuple[Float[Array, " N"], Float[Array, "N N"]]:
    r"""Mean weights ``w = (I+SSᵀ)^{-1} S d`` and ``T = (I+SSᵀ)^{-1/2}`` of one local analysis.

    If ``k >= N`` the ``N×N`` eigen-decomposition of ``S Sᵀ`` is used; otherwise
    that of ``SᵀS = UΛUᵀ`` (``k×k``) with ``w = S U (I+Λ)^{-1} Uᵀ d`` and
    ``T = I + S U g(Λ) Uᵀ Sᵀ``, ``g(λ) = ((1+λ)^{-1/2} - 1)/λ = -1/(√(1+λ)(1+√(1+λ)))``,
    which is the same matrix and is well defined for ``λ = 0`` (padded observations).
    Derivatives go through :func:`gram_functions`, finite for repeated eigenvalues (padded
    or missing observations).
    """
    N, k = S.shape
    if k >= N:
        w, T = gram_functions(
            S @ S.T, (S @ d, jnp.eye(N, dtype=S.dtype)), ("inverse_1p", "inverse_sqrt_1p")
        )
        return w, T
    v, C = gram_functions(S.T @ S, (d, S.T), ("inverse_1p", "sqrt_correction"))
    return S @ v, jnp.eye(N, dtype=S.dtype) + S @ C


def local_update(
    S: Float[Array, "N m"],
    dw: Float[Array, " m"],
    indices: Int[Array, "p k"],
    coeffs: Float[Array, "p k"],
    anomalies_t: Float[Array, "p N"],
    mean: Float[Array, " p"],
    batch_size: int | None = None,
    solver: str = "auto",
) -> Float[Array, "p N"]:
    r"""Local analyses of ``p`` grid points (rows of ``anomalies_t``; returns ``E^a`` transposed).

    ``S`` are the global whitened scaled observation anomalies and ``dw`` the
    whitened innovation; each grid point gathers its ``k`` local observations by
    index. A grid point's analysis needs ``T_i`` only applied to its own anomalies ``a_i``:
    ``T_i a_i = a_i + S_i g(S_iᵀS_i) S_iᵀ a_i`` when ``k < N`` (observation space,
    ``g(λ) = ((1+λ)^{-1/2} - 1)/λ``), ``(I + S_i S_iᵀ)^{-1/2} a_i`` otherwise, so no ``N×N``
    matrix is formed; the two matrix functions come from
    :func:`jaxda.ensemble.batched_gram_functions` with ``solver``. Grid points run in blocks
    of ``batch_size`` (``lax.map``; default: blocks of about 256 KB of local anomalies, sized
    to stay in cache) or all at once when ``batch_size >= p``. Building block of
    :func:`letkf_analysis` and of the sharded LETKF in :mod:`jaxda.sharding` (where ``p`` is
    one device's block).
    """
    N = S.shape[0]
    p, k = indices.shape
    scale = 1.0 / math.sqrt(N - 1.0)
    ST = S.T  # (m, N): gather contiguous rows

    def block(args):
        ii, c, a, mu = args  # (b, k), (b, k), (b, N), (b,)
        sq = jnp.sqrt(c).astype(S.dtype)
        Sl = ST[ii] * sq[..., None]  # (b, k, N): local scaled anomalies, one row per obs
        dl = dw[ii] * sq
        if k < N:  # observation space: k×k Gram matrices
            G = jnp.einsum("bkn,bln->bkl", Sl, Sl)
            u = jnp.einsum("bkn,bn->bk", Sl, a)
            v, z = batched_gram_functions(G, (dl, u), ("inverse_1p", "sqrt_correction"), solver)
            w = jnp.einsum("bkn,bk->bn", Sl, v)
            Ta = a + jnp.einsum("bkn,bk->bn", Sl, z)
        else:  # ensemble space: N×N Gram matrices
            G = jnp.einsum("bkn,bkl->bnl", Sl, Sl)
            Sd = jnp.einsum("bkn,bk->bn", Sl, dl)
            w, Ta = batched_gram_functions(G, (Sd, a), ("inverse_1p", "inverse_sqrt_1p"), solver)
        return mu[:, None] + scale * jnp.sum(w * a, axis=-1, keepdims=True) + Ta

    if batch_size is None:
        batch_size = max(8, (1 << 16) // max(k * N, 1))  # ~256 KB of float32 local anomalies
    xs = (indices, coeffs, anomalies_t, mean)
    if batch_size >= p:
        return block(xs)
    # Pad to whole blocks; padded grid points have no observations (coefficient 0), dropped.
    pad = -p % batch_size
    if pad:
        xs = jax.tree.map(lambda a: jnp.pad(a, [(0, pad)] + [(0, 0)] * (a.ndim - 1)), xs)
    xs = jax.tree.map(lambda a: a.reshape((-1, batch_size, *a.shape[1:])), xs)
    out = jax.lax.map(block, xs)
    return out.reshape((-1, N))[:p]


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
    solver: str = "auto",
    mesh=None,
) -> Float[Array, "N n"]:
    r"""Deterministic LETKF analysis (local symmetric-square-root ETKF per grid point).

    Args:
        ensemble: forecast ensemble ``(N, n)``, ``N >= 2``.
        y: observations ``(m,)``; ``NaN`` marks a missing value.
        obs: observation model; ``R^{-1/2}`` is applied globally (use a diagonal
            ``R`` for a meaningful localization, as DAPPER does).
        local: local observation table from :func:`local_observations`.
        batch_size: grid points per block (``lax.map`` over blocks; default: blocks of about
            256 KB of local anomalies, which stay in cache); memory ``O(batch_size N k)``.
        solver: how the local matrix functions are applied, one of
            :data:`jaxda.ensemble.SOLVERS` (see :func:`jaxda.ensemble.batched_gram_functions`):
            ``"auto"`` (Chebyshev expansion where it reaches rounding accuracy, else ``eigh``),
            ``"eigh"`` or ``"chebyshev"``. The same analysis to rounding.
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
    check_solver(solver)
    mean, A, S, dw = _analysis_inputs(ensemble, y, obs)
    if mesh is not None:
        return _sharded_local_update(S, dw, local, A, mean, mesh, batch_size, solver)
    cols = local_update(S, dw, local.indices, local.coeffs, A.T, mean, batch_size, solver)
    return cols.T.astype(ensemble.dtype)


def _sharded_local_update(S, dw, local, A, mean, mesh, batch_size, solver):
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
        lambda S_, dw_, i_, c_, a_, m_: local_update(S_, dw_, i_, c_, a_, m_, batch_size, solver),
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
    domain_length=None,
    taper: str = "gaspari_cohn",
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
    cutoff: float = 0.0,
    max_local_obs: int | None = None,
    batch_size: int | None = None,
    solver: str = "auto",
    mesh=None,
) -> Method:
    """The LETKF as a :class:`jaxda.core.Method` (R-localization, DAPPER's radius convention).

    State positions default to the grid indices ``0..n-1`` on a periodic domain of length
    ``n`` (the Lorenz-96 ring); observation positions are ``obs.operator.locations``. Any
    coordinates work: ``state_locations`` ``(n, d)`` with ``periodic``/``domain_length`` (one
    period per coordinate, ``inf`` for one that does not wrap), or ``geometry="sphere"`` with
    ``(longitude, latitude)`` in degrees and ``sphere_radius`` (km by default); with ``d >= 2``
    an operator's integer ``(m,)`` locations (e.g. :func:`jaxda.observations.subset`) are the
    indices of the observed state variables. ``taper`` is one of
    :data:`jaxda.ensemble.TAPERS` (see :func:`jaxda.ensemble.taper_coefficients`).

    When the observation network is fixed, ``init(ensemble, obs)`` builds the table of local
    observations once (:func:`local_observations`, ``O(n k)`` memory); when it changes in time,
    each step computes the taper against every observation (:func:`jaxda.ensemble.gain_taper`,
    ``O(n m)`` memory) and every local analysis uses all ``m`` observations, unless
    ``max_local_obs = k`` is given: then each grid point keeps its ``k`` largest coefficients
    (``jax.lax.top_k``, missing observations excluded), so the local analyses cost ``O(n k)``
    as with a table, and the step raises an error at run time (``equinox.error_if``) if a
    dropped observation had a coefficient ``> cutoff`` (choose ``k`` at least the largest local
    count of any network). ``cutoff`` drops coefficients ``<= cutoff`` (DAPPER uses ``1e-3``).
    ``batch_size`` and ``solver`` are those of :func:`letkf_analysis` (grid points in cache-sized
    blocks; local matrix functions by a Chebyshev expansion where it is accurate, else
    ``eigh``). ``mesh`` shards the grid points across devices. Deterministic: the key is unused (see
    :func:`jaxda.assimilate.with_rotation`).

    Examples:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> from jaxda.observations import identity, observation_model, subset
        >>> obs = observation_model(identity(10), obs_std=1.0)
        >>> method = letkf(2.0)
        >>> state = method.init(jax.random.normal(jax.random.key(0), (5, 10)), obs)
        >>> state.local.indices.shape
        (10, 10)

        A 2-D 30×30 grid (not periodic), observed at every 9th point, radius 3 grid units:

        >>> xy = np.stack(np.meshgrid(np.arange(30.0), np.arange(30.0)), -1).reshape(-1, 2)
        >>> obs2 = observation_model(subset(np.arange(0, 900, 9), 900), obs_std=1.0)
        >>> method = letkf(3.0, state_locations=xy, periodic=False)
        >>> E = jax.random.normal(jax.random.key(1), (8, 900))
        >>> state, info = method.step(None, method.init(E, obs2), jnp.zeros(100), obs2)
        >>> state.ensemble.shape, int(info.n_obs)
        ((8, 900), 100)
    """
    check_in_range("localization_radius", localization_radius, 0.0, float("inf"), closed_low=False)
    check_in_range("cutoff", cutoff, 0.0, 1.0, closed_high=False)
    check_taper(taper)
    check_geometry(geometry, sphere_radius)
    _check_batch_size(batch_size)
    check_solver(solver)
    if max_local_obs is not None and (
        not isinstance(max_local_obs, int | np.integer)
        or isinstance(max_local_obs, bool)
        or max_local_obs < 1
    ):
        raise ValueError(f"max_local_obs must be a positive int or None, got {max_local_obs!r}")
    geometry_options: dict[str, Any] = dict(
        state_locations=state_locations,
        periodic=periodic,
        domain_length=domain_length,
        taper=taper,
        geometry=geometry,
        sphere_radius=sphere_radius,
    )
    if state_locations is not None:  # validate what is known before n (shape, values)
        resolve_geometry(
            int(np.shape(state_locations)[0]) if np.ndim(state_locations) else 1,
            state_locations,
            periodic=periodic,
            domain_length=domain_length,
            geometry=geometry,
            sphere_radius=sphere_radius,
        )

    def table(n, obs, y=None):
        loc = obs.operator.locations
        if loc is None:
            raise ValueError(
                "LETKF needs observation locations: use an operator with locations (identity, "
                "subset, or linear/from_callable with locations=)"
            )
        with jax.ensure_compile_time_eval():
            loc = obs.operator.locations
        if is_concrete(loc) and is_concrete(localization_radius):
            return local_observations(
                n, np.asarray(loc), localization_radius, cutoff=cutoff, **geometry_options
            )
        # traced locations (a network that changes in time) or a traced radius (learning it by
        # gradient): every observation, tapered
        coeff = gain_taper(n, loc, localization_radius, **geometry_options)
        coeff = jnp.where(coeff > cutoff, coeff, 0.0)
        m = coeff.shape[1]
        if max_local_obs is None or max_local_obs >= m:
            idx = jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), coeff.shape)
            return LocalObs(idx, coeff)
        if y is not None:  # missing observations have no influence: do not keep them
            coeff = jnp.where(observed(y)[None, :], coeff, 0.0)
        top, idx = jax.lax.top_k(coeff, max_local_obs + 1)
        top = eqx.error_if(
            top,
            jnp.any(top[:, -1] > 0.0),
            "LETKF: a grid point has more than max_local_obs local observations; raise "
            "max_local_obs (or the cutoff)",
        )
        return LocalObs(idx[:, :-1].astype(jnp.int32), top[:, :-1])

    def init(ensemble, obs=None):
        check_ensemble(ensemble)
        return LETKFState(ensemble, None if obs is None else table(ensemble.shape[1], obs))

    def step(key, state, y, obs):
        del key
        E = state.ensemble
        local = state.local if state.local is not None else table(E.shape[1], obs, y)
        Ea = letkf_analysis(E, y, obs, local, batch_size=batch_size, solver=solver, mesh=mesh)
        return LETKFState(Ea, state.local), analysis_info(Ea, observed(y))

    return Method(init, step)
