r"""Distance-based localization on arbitrary coordinates: distances, tapers and gain tapers.

Localization multiplies the influence of observation ``j`` on state variable ``i`` by a taper
coefficient ``ρ_ij = f(dist(s_i, o_j))`` that decreases from ``f(0) = 1`` with the distance
between their locations. The same flat options describe the geometry everywhere
(:func:`gain_taper`, :func:`jaxda.ensemble.local_observations`, :func:`jaxda.ensemble.letkf`,
:func:`jaxda.ensemble.enkf`):

* ``state_locations``: ``(n,)`` or ``(n, d)`` coordinates of the state variables (default: the
  grid index ``0, 1, …, n-1``, one coordinate);
* observation locations (``obs.operator.locations``): ``(m,)`` or ``(m, d)`` coordinates in the
  same space; with ``d >= 2`` coordinates (or on the sphere) an ``(m,)`` *integer* array is read
  as the indices of the observed state variables (what :func:`jaxda.observations.subset`
  carries), i.e. the coordinates ``state_locations[indices]``;
* ``geometry="euclidean"`` (default): Euclidean distance; with ``periodic=True`` each coordinate
  ``k`` wraps with period ``domain_length[k]`` (a scalar applies to every coordinate, ``inf``
  marks a coordinate that does not wrap; default ``n`` for one coordinate, the Lorenz-96 ring);
* ``geometry="sphere"``: coordinates are ``(longitude, latitude)`` in degrees and the distance is
  the great-circle distance on a sphere of radius ``sphere_radius`` (default the Earth's mean
  radius in km, so distances and radii are in km); ``periodic``/``domain_length`` are ignored;
* ``taper``: one of :data:`TAPERS` (see :func:`taper_coefficients`), with ``radius`` in the
  units of the distances.

References:
    Gaspari & Cohn (1999), *Q. J. R. Meteorol. Soc.* 125, 723–757;
    Houtekamer & Mitchell (2001), *Mon. Wea. Rev.* 129;
    Sakov & Bertino (2011), *Comput. Geosci.* 15 (radius conventions);
    DAPPER ``tools.localization`` (Raanes et al.).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import check_in_range, is_concrete

GC_SCALE = math.sqrt(10.0 / 3.0)
"""Gaspari–Cohn half-width ``c`` per unit radius (DAPPER's convention ``c = radius·√(10/3)``)."""

EARTH_RADIUS_KM = 6371.0
"""Mean Earth radius in km: the default ``sphere_radius``."""

TAPERS = ("gaspari_cohn", "gaussian", "exponential", "cubic", "quartic", "boxcar")
"""Names accepted by ``taper=``."""

GEOMETRIES = ("euclidean", "sphere")
"""Names accepted by ``geometry=``."""

# (1 - x^p)^p = e^{-1/2} at x = radius / support  =>  support / radius = (1 - e^{-1/(2p)})^{-1/p}
_CUBIC_SCALE = (1.0 - math.exp(-1.0 / 6.0)) ** (-1.0 / 3.0)  # ≈ 1.8676
_QUARTIC_SCALE = (1.0 - math.exp(-1.0 / 8.0)) ** (-1.0 / 4.0)  # ≈ 1.7080
_SUPPORT = {
    "gaspari_cohn": 2.0 * GC_SCALE,
    "cubic": _CUBIC_SCALE,
    "quartic": _QUARTIC_SCALE,
    "boxcar": 1.0,
    "gaussian": math.inf,
    "exponential": math.inf,
}
_TINY = float(np.finfo(np.float64).smallest_subnormal)


def check_taper(taper: Any) -> str:
    """Validate a taper name (one of :data:`TAPERS`) and return it.

    Examples:
        >>> check_taper("cubic")
        'cubic'
    """
    if not isinstance(taper, str) or taper not in TAPERS:
        raise ValueError(f"taper must be one of {TAPERS}, got {taper!r}")
    return taper


def check_geometry(geometry: Any, sphere_radius: Any = EARTH_RADIUS_KM) -> str:
    """Validate ``geometry`` (one of :data:`GEOMETRIES`) and ``sphere_radius`` (``> 0``, finite).

    Examples:
        >>> check_geometry("sphere", 6371.0)
        'sphere'
    """
    if not isinstance(geometry, str) or geometry not in GEOMETRIES:
        raise ValueError(f"geometry must be one of {GEOMETRIES}, got {geometry!r}")
    r = np.asarray(sphere_radius)
    if r.ndim != 0 or not np.isfinite(r) or r <= 0:
        raise ValueError(f"sphere_radius must be a positive finite number, got {sphere_radius!r}")
    return geometry


def _check_radius(radius: Any, name: str = "localization radius") -> None:
    """A concrete radius must be a positive scalar; ``inf`` (no localization) is allowed."""
    if not is_concrete(radius):
        return
    r = np.asarray(radius)
    if r.ndim != 0 or np.isnan(r) or r <= 0:
        raise ValueError(
            f"{name} must be positive (inf: no localization), got {np.asarray(radius).tolist()!r}"
        )


def gaspari_cohn(distance: Float[Array, "..."], radius: float | Array) -> Float[Array, "..."]:
    r"""Gaspari & Cohn (1999, eq. 4.10) fifth-order compactly supported taper.

    ``radius`` follows DAPPER/Sakov: the GC half-width is ``c = radius·√(10/3)``,
    so the taper is about ``0.64 ≈ exp(-1/2)`` at ``distance = radius``,
    like a Gaussian of std ``radius``, and vanishes beyond ``2c ≈ 3.65·radius``.

    Examples:
        >>> float(gaspari_cohn(jnp.array(0.0), 4.0))
        1.0
        >>> float(gaspari_cohn(jnp.array(15.0), 4.0))    # beyond 2c ≈ 14.6
        0.0
    """
    if is_concrete(radius):
        check_in_range("localization radius", float(radius), 0.0, math.inf, closed_low=False)
    return _gaspari_cohn(jnp.asarray(distance), radius, jnp)


def _gaspari_cohn(distance, radius, xp):
    r = xp.abs(distance) / (radius * GC_SCALE)
    inner = 1.0 + r**2 * (-(r**3) / 4.0 + r**2 / 2.0) + (5.0 / 8.0) * r**3 - (5.0 / 3.0) * r**2
    rs = xp.where(r > 0, r, 1.0)
    outer = (
        r**2 * (r**3 / 12.0 - r**2 / 2.0)
        + (5.0 / 8.0) * r**3
        + (5.0 / 3.0) * r**2
        - 5.0 * r
        + 4.0
        - (2.0 / 3.0) / rs
    )
    return xp.where(r <= 1.0, inner, xp.where(r <= 2.0, outer, 0.0))


def taper_coefficients(
    distance: Float[Array, "..."], radius: float | Array, taper: str = "gaspari_cohn"
) -> Float[Array, "..."]:
    r"""Taper coefficients ``f(distance)`` of a named taper with localization radius ``radius``.

    All tapers equal ``1`` at distance ``0`` and do not increase with the distance. Except the
    boxcar, ``radius`` plays the role of a Gaussian standard deviation: ``f(radius) ≈ e^{-1/2}``
    (the convention of Sakov & Bertino 2011 and DAPPER), so radii are comparable across tapers.
    With ``x = distance / radius``:

    * ``"gaspari_cohn"``: :func:`gaspari_cohn`, the fifth-order piecewise rational function of
      Gaspari & Cohn (1999, eq. 4.10) with half-width ``c = √(10/3)·radius`` (DAPPER's value,
      ``f(radius) ≈ 0.64``), zero beyond ``2c ≈ 3.65·radius``;
    * ``"gaussian"``: ``exp(-x²/2)`` (no compact support);
    * ``"exponential"``: ``exp(-x/2)`` (no compact support; DAPPER's ``"Exp"`` is instead
      ``exp(-x³/2)``);
    * ``"cubic"``: ``(1 - (d/L)³)³`` for ``d <= L``, else ``0``, with
      ``L = radius/(1 - e^{-1/6})^{1/3} ≈ 1.868·radius``;
    * ``"quartic"``: ``(1 - (d/L)⁴)⁴`` for ``d <= L``, else ``0``, with
      ``L = radius/(1 - e^{-1/8})^{1/4} ≈ 1.708·radius`` (DAPPER's ``"Quadro"`` uses ``1.64``);
    * ``"boxcar"``: ``1`` for ``d <= radius``, else ``0`` (DAPPER's ``"Step"``).

    ``radius = inf`` gives coefficients ``1`` (no localization). :func:`taper_support` gives the
    distance beyond which a taper vanishes.

    Args:
        distance: distances ``>= 0`` (any shape).
        radius: localization radius ``> 0`` (may be traced).
        taper: one of :data:`TAPERS`.

    Returns:
        The coefficients, same shape as ``distance``, in ``[0, 1]``.

    Examples:
        >>> d = jnp.array([0.0, 2.0, 10.0])
        >>> taper_coefficients(d, 2.0, "boxcar").tolist()
        [1.0, 1.0, 0.0]
        >>> round(float(taper_coefficients(d, 2.0, "cubic")[1]), 4)    # ≈ e^{-1/2}
        0.6065
    """
    check_taper(taper)
    _check_radius(radius)
    return _taper(jnp.asarray(distance), radius, taper, jnp)


def _taper(distance, radius, taper, xp):
    """:func:`taper_coefficients` for ``xp`` = ``numpy`` (eager tables) or ``jax.numpy``."""
    if taper == "gaspari_cohn":
        return _gaspari_cohn(distance, radius, xp)
    d = xp.abs(distance)
    d = d.astype(xp.result_type(d.dtype, float))
    if taper == "boxcar":
        return (d <= radius).astype(d.dtype)
    x = d / radius
    if taper == "gaussian":
        return xp.exp(-0.5 * x**2)
    if taper == "exponential":
        return xp.exp(-0.5 * x)
    p, scale = (3, _CUBIC_SCALE) if taper == "cubic" else (4, _QUARTIC_SCALE)
    u = x / scale
    return xp.where(u <= 1.0, (1.0 - xp.minimum(u, 1.0) ** p) ** p, 0.0)


def taper_support(radius: float, taper: str = "gaspari_cohn") -> float:
    """Distance beyond which the taper is exactly zero (``inf`` for the Gaussian/exponential).

    Examples:
        >>> round(taper_support(4.0), 3)                  # 2·√(10/3)·4
        14.606
        >>> taper_support(4.0, "gaussian")
        inf
    """
    check_taper(taper)
    _check_radius(radius)
    return float(radius) * _SUPPORT[taper]


def _search_distance(radius: float, taper: str, cutoff: float) -> float:
    """Distance beyond which every coefficient is ``<= cutoff`` (or underflows to 0 in float64)."""
    support = taper_support(radius, taper)
    if math.isfinite(support) or math.isinf(radius):
        return support
    c = max(cutoff, _TINY)
    if taper == "gaussian":
        return radius * math.sqrt(-2.0 * math.log(c))
    return -2.0 * radius * math.log(c)  # exponential


def periodic_distance(
    a: Float[Array, "..."], b: Float[Array, "..."], length: float | Array
) -> Float[Array, "..."]:
    """Distance on a 1-D periodic domain of the given length (e.g. the Lorenz-96 ring).

    ``min(|a - b| mod L, L - |a - b| mod L)``: any real coordinates, not only ``[0, L)``.

    Examples:
        >>> float(periodic_distance(0.5, 9.5, 10.0)), float(periodic_distance(-1.0, 23.0, 10.0))
        (1.0, 4.0)
    """
    d = jnp.mod(jnp.abs(jnp.asarray(a) - jnp.asarray(b)), length)
    return jnp.minimum(d, length - d)


def great_circle_distance(
    a: Float[Array, "... 2"],
    b: Float[Array, "... 2"],
    sphere_radius: float = EARTH_RADIUS_KM,
) -> Float[Array, "..."]:
    r"""Great-circle distance between points given as ``(longitude, latitude)`` in degrees.

    Haversine formula (accurate for small distances, where ``arccos`` of the dot product is not):

    .. math::
        h = \sin^2\frac{φ_b-φ_a}{2} + \cos φ_a \cos φ_b \sin^2\frac{λ_b-λ_a}{2},\qquad
        d = 2R\arcsin\sqrt{h}

    with latitudes ``φ``, longitudes ``λ`` and the sphere radius ``R`` (default the Earth's mean
    radius, 6371 km). ``a`` and ``b`` broadcast against each other (last axis: the 2 coordinates).

    Examples:
        >>> pole, equator = jnp.array([0.0, 90.0]), jnp.array([123.0, 0.0])
        >>> round(float(great_circle_distance(pole, equator, 1.0)), 6)   # a quarter circle
        1.570796
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    return _sphere_distance(a[..., 0], a[..., 1], b[..., 0], b[..., 1], sphere_radius, jnp)


def _sphere_distance(lon_a, lat_a, lon_b, lat_b, R, xp):
    rad = math.pi / 180.0
    pa, pb = lat_a * rad, lat_b * rad
    h = (
        xp.sin(0.5 * (pb - pa)) ** 2
        + xp.cos(pa) * xp.cos(pb) * xp.sin(0.5 * rad * (lon_b - lon_a)) ** 2
    )
    return 2.0 * R * xp.arcsin(xp.sqrt(xp.clip(h, 0.0, 1.0)))


class Geometry(NamedTuple):
    """A resolved localization geometry (see the module docstring for the options).

    Attributes:
        kind: ``"euclidean"`` or ``"sphere"``.
        periods: for a periodic Euclidean domain the period of each coordinate (``inf``: that
            coordinate does not wrap), else ``None``.
        sphere_radius: radius of the sphere (``kind="sphere"``).
    """

    kind: str
    periods: tuple[float, ...] | None
    sphere_radius: float


def _distance(a, b, geo: Geometry, xp=jnp):
    """Distances between ``a`` and ``b`` (``(..., d)``, broadcast; ``xp`` = ``np`` or ``jnp``).

    Only arrays of the broadcast shape without the coordinate axis are formed (one per
    coordinate), never ``(..., d)`` differences.
    """
    if geo.kind == "sphere":
        return _sphere_distance(a[..., 0], a[..., 1], b[..., 0], b[..., 1], geo.sphere_radius, xp)
    d = a.shape[-1]

    def coordinate(k):
        dk = xp.abs(a[..., k] - b[..., k])
        if geo.periods is not None and math.isfinite(geo.periods[k]):
            L = geo.periods[k]
            dk = xp.mod(dk, L)
            dk = xp.minimum(dk, L - dk)
        return dk

    if d == 1:
        return coordinate(0)
    return xp.sqrt(sum(coordinate(k) ** 2 for k in range(d)))


def _coordinates(name: str, locations: Any, geometry: str = "euclidean") -> Float[Array, "k d"]:
    """Validate coordinates ``(k,)`` (1-D) or ``(k, d)``; return them as ``(k, d)`` floats."""
    loc = jnp.asarray(locations)
    if not (jnp.issubdtype(loc.dtype, jnp.floating) or jnp.issubdtype(loc.dtype, jnp.integer)):
        raise TypeError(f"{name} must be real coordinates, got dtype {loc.dtype}")
    if loc.ndim not in (1, 2):
        raise ValueError(
            f"{name} must have shape (k,) (1-D coordinates) or (k, d) (one row per point, "
            f"d coordinates), got {loc.shape}"
        )
    if loc.ndim == 1:
        loc = loc[:, None]
    loc = loc.astype(jnp.result_type(loc.dtype, float))
    if loc.shape[0] < 1 or loc.shape[1] < 1:
        raise ValueError(
            f"{name} must hold at least one point with one coordinate, got {loc.shape}"
        )
    if geometry == "sphere" and loc.shape[1] != 2:
        raise ValueError(
            f"{name} on the sphere must have shape (k, 2) (longitude, latitude in degrees), "
            f"got {loc.shape}"
        )
    if is_concrete(loc):
        v = np.asarray(loc)
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} contains nan or inf")
        if geometry == "sphere" and not np.all(np.abs(v[:, 1]) <= 90.0):
            raise ValueError(
                f"{name}: latitudes (second column) must lie in [-90, 90] degrees, got "
                f"[{v[:, 1].min()}, {v[:, 1].max()}]"
            )
    return loc


def _periods(d: int, n: int, periodic: bool, domain_length: Any) -> tuple[float, ...] | None:
    """Per-coordinate periods (``inf``: no wrap) of a periodic domain, or ``None``."""
    if not periodic:
        return None
    if domain_length is None:
        if d != 1:
            raise ValueError(
                f"periodic localization with {d} coordinates needs domain_length (one period per "
                "coordinate, inf for a coordinate that does not wrap), or pass periodic=False"
            )
        return (float(n),)
    if not is_concrete(domain_length):
        raise ValueError("domain_length must be concrete (a number or a list of numbers)")
    L = np.asarray(domain_length, dtype=float)
    if L.ndim > 1 or (L.ndim == 1 and L.size not in (1, d)):
        raise ValueError(
            f"domain_length must be a scalar or hold one period per coordinate ({d}), got "
            f"shape {L.shape}"
        )
    if np.any(np.isnan(L)) or np.any(L <= 0):
        raise ValueError(f"domain_length must be positive (inf: not periodic), got {L.tolist()}")
    return tuple(float(x) for x in np.broadcast_to(L, (d,)))


def resolve_geometry(
    n: int,
    state_locations: Any = None,
    *,
    periodic: bool = True,
    domain_length: Any = None,
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
) -> tuple[Float[Array, "n d"], Geometry]:
    """Validate the geometry options; return the ``(n, d)`` state coordinates and a :class:`Geometry`.

    Defaults: state variable ``i`` at coordinate ``i`` (``d = 1``), and for ``periodic`` with
    one coordinate a period ``domain_length = n``. On the sphere ``state_locations`` (``(n, 2)``
    longitudes and latitudes in degrees) are required. Raises ``ValueError`` for a wrong shape,
    a latitude outside ``[-90, 90]``, a non-positive period or a periodic domain of several
    coordinates without ``domain_length``.

    Examples:
        >>> s, geo = resolve_geometry(40)                   # the Lorenz-96 ring
        >>> s.shape, geo.periods
        ((40, 1), (40.0,))
    """
    check_geometry(geometry, sphere_radius)
    if not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if state_locations is None:
        if geometry == "sphere":
            raise ValueError(
                "geometry='sphere' needs state_locations: (n, 2) longitudes and latitudes in "
                "degrees"
            )
        s = jnp.arange(n, dtype=float)[:, None]
    else:
        s = _coordinates("state_locations", state_locations, geometry)
        if s.shape[0] != n:
            raise ValueError(
                f"state_locations must have length n={n} (one row per state variable), got "
                f"shape {jnp.shape(state_locations)}"
            )
    if geometry == "sphere":
        return s, Geometry("sphere", None, float(sphere_radius))
    periods = _periods(s.shape[1], n, bool(periodic), domain_length)
    return s, Geometry("euclidean", periods, float(sphere_radius))


def obs_coordinates(
    obs_locations: Any, state_coordinates: Float[Array, "n d"], geo: Geometry
) -> Float[Array, "m d"]:
    """Observation coordinates ``(m, d)`` in the space of ``state_coordinates`` (``(n, d)``).

    ``(m, d)`` arrays (or ``(m,)`` with ``d = 1``) are coordinates. With ``d >= 2`` (or on the
    sphere) an ``(m,)`` integer array holds indices of observed state variables, whose
    coordinates are gathered (also when traced). Anything else is a ``ValueError``.

    Examples:
        >>> s, geo = resolve_geometry(4, jnp.array([[0., 0.], [0., 1.], [1., 0.], [1., 1.]]),
        ...                           periodic=False)
        >>> obs_coordinates(jnp.array([3, 0]), s, geo).tolist()
        [[1.0, 1.0], [0.0, 0.0]]
    """
    loc = jnp.asarray(obs_locations)
    n, d = state_coordinates.shape
    if loc.ndim == 1 and (d >= 2 or geo.kind == "sphere"):
        if not jnp.issubdtype(loc.dtype, jnp.integer):
            raise ValueError(
                f"obs_locations of shape {loc.shape} do not match the state's {d} coordinates: "
                f"give (m, {d}) coordinates, or integer indices of the observed state variables"
            )
        if is_concrete(loc) and loc.size:
            v = np.asarray(loc)
            lo, hi = int(v.min()), int(v.max())
            if lo < 0 or hi >= n:
                raise ValueError(
                    f"obs_locations read as state indices must lie in [0, {n}), got [{lo}, {hi}]"
                )
            if is_concrete(state_coordinates):  # gather in NumPy: no compilation
                return jnp.asarray(np.asarray(state_coordinates)[v])
        return state_coordinates[loc]
    if loc.ndim == 2 and loc.shape[1] != d:
        raise ValueError(
            f"obs_locations have {loc.shape[1]} coordinate(s) per point but the state has {d}"
        )
    o = _coordinates("obs_locations", loc, geo.kind)
    return o.astype(jnp.result_type(o.dtype, state_coordinates.dtype))


def pairwise_distances(
    a: Float[Array, "n ..."],
    b: Float[Array, "m ..."],
    *,
    domain_length: float | Float[Array, " d"] | None = None,
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
) -> Float[Array, "n m"]:
    r"""Distances ``(n, m)`` between points ``a`` (``(n,)``/``(n, d)``) and ``b`` (``(m,)``/``(m, d)``).

    Euclidean, each coordinate ``k`` wrapping with period ``domain_length[k]`` when given
    (:func:`periodic_distance`; ``inf``: no wrap), or great-circle on the sphere
    (:func:`great_circle_distance`, ``(longitude, latitude)`` in degrees). Forms one ``n×m``
    array per coordinate, never ``n×m×d``.

    Examples:
        >>> a = jnp.array([[0.5, 0.5]])
        >>> b = jnp.array([[9.5, 0.5], [3.5, 4.5]])
        >>> pairwise_distances(a, b, domain_length=10.0).tolist()   # wraps in x: 1; 3-4-5
        [[1.0, 5.0]]
    """
    check_geometry(geometry, sphere_radius)
    p = _coordinates("a", a, geometry)
    o = _coordinates("b", b, geometry)
    if p.shape[1] != o.shape[1]:
        raise ValueError(f"a has {p.shape[1]} coordinate(s) per point but b has {o.shape[1]}")
    periods = None
    if geometry == "euclidean" and domain_length is not None:
        periods = _periods(p.shape[1], 0, True, domain_length)
    geo = Geometry(geometry, periods, float(sphere_radius))
    return _distance(p[:, None, :], o[None, :, :], geo)


def gain_taper(
    n: int,
    obs_locations,
    radius: float,
    periodic: bool = True,
    *,
    state_locations=None,
    domain_length: float | Any | None = None,
    taper: str = "gaspari_cohn",
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
) -> Float[Array, "n m"]:
    r"""Localization matrix ``ρ`` (``n×m``) for a Schur product ``ρ ∘ K`` on the gain.

    ``ρ_ij = f(dist(s_i, o_j))`` for state variable ``i`` at ``state_locations[i]`` (default the
    grid index ``i``) and observation ``j`` at ``obs_locations[j]`` (which may be traced, e.g. a
    network that changes in time), with the taper ``f`` of :func:`taper_coefficients`. The
    geometry options are those of the module docstring: ``periodic`` with ``domain_length``
    (default ``n`` for one coordinate), ``geometry="sphere"`` with ``sphere_radius``. Used by the
    EnKF's gain localization, the serial filters and by the LETKF when the observation network
    changes in time. Forms ``O(nm)`` memory; :func:`jaxda.ensemble.local_observations` builds
    the sparse ``(n, k)`` version for a fixed network.

    Examples:
        >>> gain_taper(5, jnp.array([0, 4]), 1.0, taper="boxcar").tolist()   # ring of 5
        [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
        >>> xy = jnp.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])           # 2-D, not periodic
        >>> gain_taper(3, jnp.array([0]), 5.0, False, state_locations=xy,
        ...            taper="boxcar").ravel().tolist()
        [1.0, 1.0, 0.0]
    """
    check_taper(taper)
    _check_radius(radius)
    s, geo = resolve_geometry(
        n,
        state_locations,
        periodic=periodic,
        domain_length=domain_length,
        geometry=geometry,
        sphere_radius=sphere_radius,
    )
    o = obs_coordinates(obs_locations, s, geo)
    return taper_coefficients(_distance(s[:, None, :], o[None, :, :], geo), radius, taper)


def _require_obs_locations(obs_locations: Any, method: str) -> None:
    if obs_locations is None:
        raise ValueError(
            f"{method} needs observation locations: use an operator with locations "
            "(identity, subset, or linear/from_callable with locations=)"
        )


class CovarianceLocalization(NamedTuple):
    """Covariance (Schur-product) localization from a method's options: the one place where the
    EnKF, the DEnKF and the serial filters turn ``localization_radius``, ``state_locations``,
    ``periodic``, ``domain_length``, ``taper``, ``geometry`` and ``sphere_radius`` into tapers
    (built by :func:`covariance_localization`)."""

    radius: float
    state_locations: Any
    periodic: bool
    domain_length: Any
    taper: str
    geometry: str
    sphere_radius: float

    def coordinates(
        self, n: int, obs_locations: Any, method: str = "localization"
    ) -> tuple[Float[Array, "n d"], Float[Array, "m d"], Geometry]:
        """State and observation coordinates (``obs_locations`` may be traced) and the geometry."""
        _require_obs_locations(obs_locations, method)
        s, geo = resolve_geometry(
            n,
            self.state_locations,
            periodic=self.periodic,
            domain_length=self.domain_length,
            geometry=self.geometry,
            sphere_radius=self.sphere_radius,
        )
        return s, obs_coordinates(obs_locations, s, geo), geo

    def gain(self, n: int, obs_locations: Any, method: str = "localization") -> Float[Array, "n m"]:
        """The ``n×m`` taper ``ρ`` of a Schur product ``ρ ∘ K`` (:func:`gain_taper`)."""
        _require_obs_locations(obs_locations, method)
        return gain_taper(
            n,
            obs_locations,
            self.radius,
            self.periodic,
            state_locations=self.state_locations,
            domain_length=self.domain_length,
            taper=self.taper,
            geometry=self.geometry,
            sphere_radius=self.sphere_radius,
        )

    def coefficients(self, a, b, geo: Geometry) -> Float[Array, "..."]:
        """Taper of the distances between coordinates ``a`` and ``b`` (broadcast, ``(..., d)``)."""
        return taper_coefficients(_distance(a, b, geo), self.radius, self.taper)


def covariance_localization(
    localization_radius: float | None,
    *,
    state_locations: Any = None,
    periodic: bool = True,
    domain_length: Any = None,
    taper: str = "gaspari_cohn",
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
) -> CovarianceLocalization | None:
    """Validate a method's localization options eagerly; ``None`` when ``localization_radius``
    is ``None`` (no localization). What can only be checked against the state size (the length
    of ``state_locations``) is checked at the first analysis.

    Examples:
        >>> loc = covariance_localization(1.0, taper="boxcar")
        >>> loc.gain(5, jnp.array([0, 4])).tolist()          # the ring of 5 points
        [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    """
    check_taper(taper)
    check_geometry(geometry, sphere_radius)
    if localization_radius is None:
        return None
    check_in_range("localization_radius", localization_radius, 0.0, math.inf, closed_low=False)
    if state_locations is not None:  # validate what is known before n (shape, values)
        resolve_geometry(
            int(jnp.shape(state_locations)[0]),
            state_locations,
            periodic=periodic,
            domain_length=domain_length,
            geometry=geometry,
            sphere_radius=sphere_radius,
        )
    return CovarianceLocalization(
        float(localization_radius) if is_concrete(localization_radius) else localization_radius,
        state_locations,
        bool(periodic),
        domain_length,
        taper,
        geometry,
        float(sphere_radius),
    )


def distance_localization(
    param_locations: Float[Array, "n ..."] | np.ndarray,
    obs_locations: Float[Array, "m ..."] | np.ndarray,
    radius: float | Array,
    *,
    taper: str = "gaspari_cohn",
    domain_length: float | Float[Array, " d"] | None = None,
    geometry: str = "euclidean",
    sphere_radius: float = EARTH_RADIUS_KM,
) -> Float[Array, "n m"]:
    r"""Distance-based localization ``ρ`` (``n×m``) of parameters and observations with coordinates.

    For parameter ``i`` at ``p_i`` and observation ``j`` at ``o_j`` (``d``-dimensional, or
    scalars), ``ρ_{ij} = f(dist(p_i, o_j))`` with the taper ``f`` of :func:`taper_coefficients`
    (``"gaspari_cohn"``, DAPPER's radius convention: ``f(radius) ≈ e^{-1/2}`` and ``f = 0``
    beyond ``2·√(10/3)·radius ≈ 3.65·radius``; for a taper that vanishes beyond ``2c``, pass
    ``radius = c/√(10/3)``; or ``"gaussian"``, ``"exponential"``, ``"cubic"``, ``"quartic"``,
    ``"boxcar"``) and the Euclidean distance (periodic per coordinate with ``domain_length``) or
    the great-circle distance (``geometry="sphere"``, see :func:`pairwise_distances`).

    Pass the result as ``localization=`` of :func:`jaxda.ensemble.esmda` (or
    :func:`jaxda.ensemble.esmda_init`, :func:`jaxda.ensemble.esmda_update`): the gain is
    tapered entry-wise, ``K_α ← ρ ∘ K_α``, so a parameter far from every observation is not
    updated. Parameters are in the flat order of the prior (``ravel_pytree`` of one member).
    This is the Schur-product localization of Houtekamer & Mitchell (2001) with distances
    between parameters and data, as used for reservoir history matching (Emerick & Reynolds
    2011) and by ``iterative_ensemble_smoother``; only the ``n×m`` taper is formed (one
    ``n×m`` array per coordinate).

    Args:
        param_locations: ``(n,)`` or ``(n, d)`` coordinates of the parameters.
        obs_locations: ``(m,)`` or ``(m, d)`` coordinates of the observations (same ``d``).
        radius: localization radius ``> 0`` (same units as the distances).
        taper: one of :data:`TAPERS` (default ``"gaspari_cohn"``).
        domain_length: optional period (scalar or one per coordinate) of a periodic
            domain: distances are taken on the ring (:func:`periodic_distance`).
        geometry: ``"euclidean"`` or ``"sphere"`` (``(longitude, latitude)`` in degrees).
        sphere_radius: radius of the sphere (default 6371 km).

    Returns:
        The ``(n, m)`` taper, entries in ``[0, 1]``.

    Examples:
        >>> rho = distance_localization(jnp.array([0.0, 1.0, 10.0]), jnp.array([0.0, 0.5]),
        ...                             radius=1.0)
        >>> rho.shape, float(rho[0, 0]), float(rho[2, 0])
        ((3, 2), 1.0, 0.0)
        >>> xy = jnp.array([[0.0, 0.0], [3.0, 4.0]])         # 2-D coordinates, distance 5
        >>> distance_localization(xy, xy[:1], 5.0, taper="boxcar").ravel().tolist()
        [1.0, 1.0]
    """
    check_taper(taper)
    check_geometry(geometry, sphere_radius)
    p = _coordinates("param_locations", param_locations, geometry)
    o = _coordinates("obs_locations", obs_locations, geometry)
    if p.shape[1] != o.shape[1]:
        raise ValueError(
            f"param_locations have {p.shape[1]} coordinate(s) per point but obs_locations have "
            f"{o.shape[1]}"
        )
    if is_concrete(radius):
        r = np.asarray(radius)
        if r.ndim != 0 or not np.isfinite(r) or r <= 0:
            raise ValueError(f"radius must be a positive finite number, got {radius!r}")
    radius = jnp.asarray(radius, dtype=p.dtype)
    periods = None
    if geometry == "euclidean" and domain_length is not None:
        periods = _periods(p.shape[1], 0, True, domain_length)
    geo = Geometry(geometry, periods, float(sphere_radius))
    return taper_coefficients(_distance(p[:, None, :], o[None, :, :], geo), radius, taper)
