"""Localization on arbitrary coordinates: distances (periodic d-D, sphere) against independent
formulas, taper properties, local tables against the dense taper, and the LETKF/EnKF on 2-D
and spherical coordinates."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.ensemble import (
    TAPERS,
    enkf,
    enkf_analysis,
    etkf_analysis,
    gain_taper,
    great_circle_distance,
    letkf,
    letkf_analysis,
    local_observations,
    pairwise_distances,
    taper_coefficients,
    taper_support,
)
from jaxda.observations import observation_model, subset

R_EARTH = 6371.0


def unit_vectors(lonlat):
    lon, lat = np.radians(lonlat[..., 0]), np.radians(lonlat[..., 1])
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)


def arc_reference(a, b, R):
    """Great-circle distance from 3-D unit vectors: R·atan2(|u×v|, u·v) (not the haversine)."""
    u, v = unit_vectors(np.asarray(a, float)), unit_vectors(np.asarray(b, float))
    return R * np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), np.sum(u * v, axis=-1))


def periodic_reference(a, b, periods):
    """Brute force: the shortest Euclidean distance over all periodic images (-1, 0, +1)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    diff = a[:, None, :] - b[None, :, :]
    best = np.full(diff.shape[:2], np.inf)
    d = a.shape[1]
    for shift in np.ndindex(*(3,) * d):
        off = np.array(
            [(s - 1) * (L if np.isfinite(L) else 0.0) for s, L in zip(shift, periods, strict=True)]
        )
        best = np.minimum(best, np.sqrt(((diff + off) ** 2).sum(-1)))
    return best


def table_to_dense(local, m):
    idx, c = np.asarray(local.indices), np.asarray(local.coeffs)
    D = np.zeros((idx.shape[0], m))
    np.add.at(D, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), idx.ravel()), c.ravel())
    return D


def grid(nx, ny):
    """(nx·ny, 2) coordinates of a grid, x varying slowest."""
    x, y = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float), indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


def random_lonlat(rng, k):
    lon = rng.uniform(-180.0, 180.0, k)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, k)))  # uniform on the sphere
    return np.stack([lon, lat], axis=1)


# ---------------------------------------------------------------------------------------------
# distances


def test_great_circle_distance_against_vectors_and_hand_values():
    rng = np.random.default_rng(0)
    a, b = random_lonlat(rng, 200), random_lonlat(rng, 200)
    b[:50] = a[:50] + rng.normal(0.0, 1e-3, (50, 2))  # short distances (metres)
    b[:50, 1] = np.clip(b[:50, 1], -90.0, 90.0)
    got = great_circle_distance(jnp.asarray(a), jnp.asarray(b), R_EARTH)
    np.testing.assert_allclose(got, arc_reference(a, b, R_EARTH), rtol=1e-9, atol=1e-9)
    hand = [
        ([0.0, 90.0], [37.0, 0.0], math.pi / 2),  # pole to equator: a quarter circle
        ([10.0, 0.0], [11.0, 0.0], math.pi / 180),  # one degree along the equator
        ([179.5, 0.0], [-179.5, 0.0], math.pi / 180),  # across the date line
        ([0.0, 0.0], [180.0, 0.0], math.pi),  # antipodes
        ([-70.0, 45.0], [110.0, -45.0], math.pi),  # antipodes
        ([5.0, 60.0], [95.0, 60.0], 2 * math.asin(math.cos(math.radians(60)) * math.sqrt(0.5))),
        ([12.3, -33.0], [12.3, -33.0], 0.0),
    ]
    for p, q, angle in hand:
        assert float(great_circle_distance(jnp.array(p), jnp.array(q), 2.0)) == pytest.approx(
            2.0 * angle, abs=1e-12
        )
    # pairwise on the sphere: the (n, m) matrix of the same distances
    D = pairwise_distances(a[:7], b[:5], geometry="sphere", sphere_radius=R_EARTH)
    np.testing.assert_allclose(D, arc_reference(a[:7, None], b[None, :5], R_EARTH), atol=1e-8)


@pytest.mark.parametrize("periods", [(10.0, 7.0), (10.0, np.inf), (5.0, 5.0, 3.0)])
def test_periodic_distances_against_images(periods):
    rng = np.random.default_rng(1)
    d = len(periods)
    span = np.array([L if np.isfinite(L) else 20.0 for L in periods])
    a = rng.uniform(-0.5, 1.5, (13, d)) * span  # also outside [0, L): wraps
    b = rng.uniform(0.0, 1.0, (9, d)) * span
    D = pairwise_distances(a, b, domain_length=jnp.array(periods))
    np.testing.assert_allclose(D, periodic_reference(a, b, periods), atol=1e-12)
    # non-periodic: plain Euclidean
    np.testing.assert_allclose(
        pairwise_distances(a, b), periodic_reference(a, b, [np.inf] * d), atol=1e-12
    )


# ---------------------------------------------------------------------------------------------
# tapers


@pytest.mark.parametrize("taper", TAPERS)
def test_taper_properties(taper):
    radius = 2.5
    d = np.linspace(0.0, 12.0 * radius, 4001)
    f = np.asarray(taper_coefficients(jnp.asarray(d), radius, taper))
    assert f[0] == 1.0
    assert np.all((f >= 0.0) & (f <= 1.0))
    assert np.all(np.diff(f) <= 1e-15)  # non-increasing
    support = taper_support(radius, taper)
    if math.isfinite(support):
        assert np.all(f[d > support] == 0.0)
        assert np.all(f[d < 0.99 * support] > 0.0)
    else:
        assert np.all(f > 0.0)
    at_radius = float(taper_coefficients(jnp.array(radius), radius, taper))
    expected = {"boxcar": 1.0, "gaspari_cohn": 0.6353742}.get(taper, math.exp(-0.5))
    assert at_radius == pytest.approx(expected, abs=1e-6)
    # an infinite radius: no localization
    np.testing.assert_array_equal(taper_coefficients(jnp.asarray(d), jnp.inf, taper), 1.0)


def test_tapers_against_independent_formulas():
    radius = 1.7
    d = np.linspace(0.0, 8.0, 801)
    x = d / radius
    # Gaussian and step tapers in DAPPER's radius convention (its "Gauss" and "Step")
    np.testing.assert_allclose(
        taper_coefficients(jnp.asarray(d), radius, "gaussian"), np.exp(-0.5 * x**2)
    )
    np.testing.assert_array_equal(
        taper_coefficients(jnp.asarray(d), radius, "boxcar"), (d <= radius).astype(float)
    )
    np.testing.assert_allclose(
        taper_coefficients(jnp.asarray(d), radius, "exponential"), np.exp(-x / 2)
    )
    for name, p in [("cubic", 3), ("quartic", 4)]:
        L = radius / (1 - math.exp(-1 / (2 * p))) ** (1 / p)  # (1 - (r/L)^p)^p = e^{-1/2}
        ref = np.where(d <= L, (1 - np.minimum(d / L, 1) ** p) ** p, 0.0)
        np.testing.assert_allclose(
            taper_coefficients(jnp.asarray(d), radius, name), ref, atol=1e-14
        )


def test_tapers_match_dapper():
    """DAPPER's own tapers (DAPPER is a benchmark dependency: skipped without it)."""
    radius = 1.7
    d = np.linspace(0.0, 8.0, 801)
    # DAPPER (a benchmark dependency, not a test one) rounds the cubic support factor to 1.87
    # (ours 1.8676): close, not equal
    dapper_localization = pytest.importorskip("dapper.tools.localization")
    for name, dname in [("gaussian", "Gauss"), ("boxcar", "Step")]:
        np.testing.assert_allclose(
            taper_coefficients(jnp.asarray(d), radius, name),
            dapper_localization.dist2coeff(d, radius, dname),
        )
    np.testing.assert_allclose(
        taper_coefficients(jnp.asarray(d), radius, "cubic"),
        dapper_localization.dist2coeff(d, radius, "Cubic"),
        atol=0.01,
    )


# ---------------------------------------------------------------------------------------------
# local tables = non-zero entries of the dense taper


def assert_table_is_dense(local, dense):
    dense = np.asarray(dense)
    np.testing.assert_allclose(table_to_dense(local, dense.shape[1]), dense, atol=1e-12)
    assert local.indices.shape[1] == max(int((dense > 0).sum(axis=1).max()), 1)


@pytest.mark.parametrize(
    "taper, radius, periodic, domain_length, cutoff",
    [
        ("gaspari_cohn", 1.5, True, (12.0, 9.0), 0.0),  # 2-D periodic
        ("gaspari_cohn", 1.5, False, None, 0.0),  # 2-D bounded
        ("boxcar", 2.0, True, (12.0, np.inf), 0.0),  # a channel: periodic in x only
        ("cubic", 2.2, True, 9.0, 0.0),  # one period for both coordinates (x wraps at 9)
        ("quartic", 1.0, False, None, 0.0),
        ("gaussian", 1.0, True, (12.0, 9.0), 1e-3),
        ("exponential", 0.5, False, None, 1e-2),
        ("gaspari_cohn", 40.0, True, (12.0, 9.0), 0.0),  # support wider than the box
    ],
)
def test_local_table_equals_dense_taper_2d(taper, radius, periodic, domain_length, cutoff):
    rng = np.random.default_rng(2)
    s = grid(12, 9)
    o = rng.uniform(0.0, 1.0, (40, 2)) * np.array([12.0, 9.0])
    o[:5] = s[[0, 8, 50, 100, 107]]  # on grid points, at the corners
    opts = dict(periodic=periodic, domain_length=domain_length, taper=taper)
    local = local_observations(len(s), o, radius, state_locations=s, cutoff=cutoff, **opts)
    dense = np.asarray(gain_taper(len(s), o, radius, state_locations=s, **opts))
    dense = np.where(dense > cutoff, dense, 0.0)
    assert_table_is_dense(local, dense)
    # the dense taper itself uses the brute-force periodic distances
    periods = [np.inf, np.inf] if not periodic else np.broadcast_to(domain_length, (2,))
    ref = taper_coefficients(jnp.asarray(periodic_reference(s, o, periods)), radius, taper)
    np.testing.assert_allclose(
        np.asarray(gain_taper(len(s), o, radius, state_locations=s, **opts)), ref, atol=1e-12
    )


@pytest.mark.parametrize("taper", TAPERS)
@pytest.mark.parametrize("periodic", [True, False])
def test_local_table_equals_dense_taper_1d(taper, periodic):
    # the 1-D window search (sorted positions), obs at grid points: boxcar edges exactly at d = r
    obs = np.array([0.0, 3.0, 3.0, 17.5, 29.0, 12.0, 44.0, 47.0])
    opts = dict(periodic=periodic, domain_length=48.0, taper=taper)
    cutoff = 1e-3 if taper in ("gaussian", "exponential") else 0.0
    local = local_observations(48, obs, 3.0, cutoff=cutoff, **opts)
    dense = np.asarray(gain_taper(48, obs, 3.0, **opts))
    assert_table_is_dense(local, np.where(dense > cutoff, dense, 0.0))


@pytest.mark.parametrize("taper, radius", [("gaspari_cohn", 800.0), ("boxcar", 3000.0)])
def test_local_table_equals_dense_taper_sphere(taper, radius):
    rng = np.random.default_rng(3)
    lon, lat = np.meshgrid(np.arange(-180.0, 180.0, 15.0), np.arange(-87.5, 90.0, 12.5))
    s = np.stack([lon.ravel(), lat.ravel()], axis=1)  # includes the date line and near-poles
    o = random_lonlat(rng, 60)
    o[0] = [179.9, 89.0]
    o[1] = [-179.9, -90.0]  # the south pole
    opts = dict(geometry="sphere", sphere_radius=R_EARTH, taper=taper)
    local = local_observations(len(s), o, radius, state_locations=s, **opts)
    dense = gain_taper(len(s), o, radius, state_locations=s, **opts)
    assert_table_is_dense(local, dense)
    ref = taper_coefficients(
        jnp.asarray(arc_reference(s[:, None], o[None], R_EARTH)), radius, taper
    )
    np.testing.assert_allclose(dense, ref, atol=1e-9)
    assert 0 < local.indices.shape[1] < len(o)


def test_integer_obs_locations_are_state_indices_in_2d():
    s = grid(8, 6)
    idx = np.array([0, 5, 17, 47, 30])
    local = local_observations(len(s), idx, 1.2, state_locations=s, periodic=False)
    ref = local_observations(len(s), s[idx], 1.2, state_locations=s, periodic=False)
    np.testing.assert_array_equal(local.indices, ref.indices)
    np.testing.assert_array_equal(local.coeffs, ref.coeffs)
    # traced indices (a network that changes in time) gather the same coordinates
    f = jax.jit(lambda i: gain_taper(len(s), i, 1.2, False, state_locations=s))
    np.testing.assert_allclose(f(jnp.asarray(idx)), table_to_dense(ref, idx.size), atol=1e-12)


def test_gain_taper_with_traced_locations_inside_scan():
    # as the serial filters use it: one observation location at a time, inside lax.scan
    s = grid(6, 5)
    o = np.random.default_rng(4).uniform(0, 6, (7, 2))
    dense = gain_taper(len(s), o, 1.3, True, state_locations=s, domain_length=(6.0, 5.0))

    def body(carry, loc):
        col = gain_taper(len(s), loc[None], 1.3, True, state_locations=s, domain_length=(6.0, 5.0))
        return carry, col[:, 0]

    _, cols = jax.jit(lambda o: jax.lax.scan(body, 0, o))(jnp.asarray(o))
    np.testing.assert_allclose(cols.T, dense, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# LETKF and EnKF on 2-D and spherical coordinates


def field_problem(s, idx, N=6, seed=5):
    n = len(s)
    obs = observation_model(subset(idx, n), obs_std=np.linspace(0.6, 1.4, idx.size))
    k1, k2 = jax.random.split(jax.random.key(seed))
    E = 2.0 * jax.random.normal(k1, (N, n))
    y = jax.random.normal(k2, (idx.size,)).at[1].set(jnp.nan)
    return obs, E, y


def analyse(method, E, y, obs):
    """One analysis, jitted (eager op-by-op dispatch is slow); the table is built at trace time
    from the concrete locations of ``obs`` (closed over)."""
    return jax.jit(lambda E, y: method.step(None, method.init(E, obs), y, obs)[0].ensemble)(E, y)


def test_letkf_infinite_radius_is_etkf_in_2d_and_on_the_sphere():
    s = grid(6, 5)
    obs, E, y = field_problem(s, np.arange(0, 30, 4))
    ref = jax.jit(etkf_analysis)(E, y, obs)
    analysis = jax.jit(letkf_analysis)  # one compilation: the tables have the same shape
    for options in [
        dict(periodic=False),
        dict(domain_length=(6.0, 5.0), taper="boxcar"),
        dict(geometry="sphere", taper="quartic"),
    ]:
        local = local_observations(30, obs.operator.locations, np.inf, state_locations=s, **options)
        np.testing.assert_array_equal(local.coeffs, 1.0)
        np.testing.assert_allclose(analysis(E, y, obs, local), ref, atol=1e-10)
    # the method with an infinite radius
    np.testing.assert_allclose(
        analyse(letkf(np.inf, state_locations=s, periodic=False), E, y, obs), ref, atol=1e-10
    )


@pytest.mark.parametrize(
    "options",
    [
        dict(periodic=False),
        dict(domain_length=(7.0, 6.0), taper="cubic"),
        dict(geometry="sphere", sphere_radius=1.0, taper="gaussian", cutoff=1e-4),
    ],
)
def test_letkf_2d_table_equals_dense_traced_path(options):
    s = grid(7, 6)
    if options.get("geometry") == "sphere":
        s = s * np.array([25.0, 12.0]) - np.array([80.0, 30.0])  # lon/lat degrees
        radius = 0.2  # radians, on the unit sphere
    else:
        radius = 0.7
    idx = np.arange(1, 42, 3)
    obs, E, y = field_problem(s, idx)
    method = letkf(radius, state_locations=s, **options)
    state = method.init(E, obs)
    assert state.local is not None and 1 < state.local.indices.shape[1] < idx.size
    with_table = analyse(method, E, y, obs)
    # traced locations: every observation tapered with gain_taper (the time-varying network path)
    traced = jax.jit(lambda E, y, obs: method.step(None, method.init(E), y, obs)[0].ensemble)
    np.testing.assert_allclose(traced(E, y, obs), with_table, atol=1e-12)
    assert not np.allclose(with_table, E, atol=1e-3)


def test_letkf_time_varying_network_keeps_the_largest_coefficients():
    # a network passed as a traced argument with max_local_obs = k: top-k coefficients per
    # grid point, same analysis as the exact table of that network; too small a k is an error
    s = grid(7, 6)
    idx = np.arange(1, 42, 3)
    obs, E, y = field_problem(s, idx)
    exact = letkf(0.7, state_locations=s, periodic=False)
    local = exact.init(E, obs).local
    assert local is not None
    present = (np.asarray(local.coeffs) > 0) & (np.asarray(local.indices) != 1)  # y[1] is NaN
    k = int(present.sum(axis=1).max())
    assert k < idx.size
    ref = analyse(exact, E, y, obs)

    def traced(k):
        method = letkf(0.7, state_locations=s, periodic=False, max_local_obs=k)
        return jax.jit(lambda E, y, obs: method.step(None, method.init(E), y, obs)[0].ensemble)

    np.testing.assert_allclose(traced(k)(E, y, obs), ref, atol=1e-12)
    with pytest.raises(Exception, match="max_local_obs"):
        jax.block_until_ready(traced(k - 1)(E, y, obs))


def test_letkf_2d_far_points_unchanged():
    s = grid(10, 10)
    idx = np.array([0, 1, 10, 11])  # a corner
    obs, E, y = field_problem(s, idx, N=5)
    Ea = np.asarray(analyse(letkf(1.0, state_locations=s, periodic=False), E, y, obs))
    # beyond the Gaspari-Cohn support 2·√(10/3) of every observation: unchanged
    far = np.hypot(s[:, 0] - 1.0, s[:, 1] - 1.0) > 2 * math.sqrt(10 / 3) * 1.0 + 1.0
    assert far.sum() > 50
    np.testing.assert_allclose(Ea[:, far], np.asarray(E)[:, far], atol=1e-14)
    assert not np.allclose(Ea[:, :2], np.asarray(E)[:, :2])


def test_enkf_with_2d_locations_is_the_tapered_gain_update():
    s = grid(5, 4)
    idx = np.arange(0, 20, 3)
    obs, E, y = field_problem(s, idx, N=8)
    key = jax.random.key(9)

    @jax.jit
    def step(key, E, y, obs):
        method = enkf(
            localization_radius=1.2, state_locations=s, domain_length=(5.0, 4.0), taper="quartic"
        )
        return method.step(key, method.init(E), y, obs)[0].ensemble

    rho = taper_coefficients(jnp.asarray(periodic_reference(s, s[idx], (5.0, 4.0))), 1.2, "quartic")
    ref = jax.jit(enkf_analysis)(key, E, y, obs, localization=rho)
    got = step(key, E, y, obs)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    assert np.isfinite(np.asarray(got)).all()


# ---------------------------------------------------------------------------------------------
# bad inputs


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: gain_taper(20, np.zeros((3, 3)), 1.0, False, state_locations=s), "3 coordinate"),
        (lambda s: gain_taper(20, np.zeros(3), 1.0, False, state_locations=s), "do not match"),
        (
            lambda s: local_observations(
                20, np.zeros((3, 1)), 1.0, state_locations=s, periodic=False
            ),
            "1 coordinate",
        ),
        (
            lambda s: local_observations(20, [0, 20], 1.0, state_locations=s, periodic=False),
            r"in \[0, 20\)",
        ),
        (lambda s: gain_taper(20, np.zeros((3, 2)), 1.0, state_locations=s), "needs domain_length"),
        (
            lambda s: gain_taper(
                20, np.zeros((3, 2)), 1.0, state_locations=s, domain_length=(1, 2, 3)
            ),
            "one period per",
        ),
        (
            lambda s: gain_taper(
                20, np.zeros((3, 2)), 1.0, state_locations=s, domain_length=(4, -1)
            ),
            "domain_length must be positive",
        ),
        (
            lambda s: gain_taper(20, np.zeros((3, 2)), 1.0, state_locations=s[:5], periodic=False),
            "length n=20",
        ),
        (
            lambda s: gain_taper(20, np.zeros((3, 2)), 1.0, False, state_locations=s, taper="hann"),
            "taper must be one of",
        ),
        (
            lambda s: local_observations(
                20, np.zeros((3, 2)), 1.0, state_locations=s, periodic=False, taper="GC"
            ),
            "taper must be one of",
        ),
        (
            lambda s: gain_taper(20, np.zeros((3, 2)), -1.0, False, state_locations=s),
            "radius must be positive",
        ),
        (
            lambda s: local_observations(
                20, np.zeros((3, 2)), -1.0, state_locations=s, periodic=False
            ),
            "radius must be positive",
        ),
        (
            lambda s: gain_taper(20, np.zeros((3, 2)), 1.0, state_locations=s, geometry="torus"),
            "geometry must be one of",
        ),
        (
            lambda s: gain_taper(
                20, np.zeros((3, 2)), 1.0, state_locations=s, geometry="sphere", sphere_radius=0.0
            ),
            "sphere_radius",
        ),
        (
            lambda s: gain_taper(20, np.zeros((3, 2)), 1.0, geometry="sphere"),
            "needs state_locations",
        ),
        (
            lambda s: gain_taper(20, [[0.0, 91.0]], 1.0, state_locations=s, geometry="sphere"),
            r"latitudes .* \[-90, 90\]",
        ),
        (
            lambda s: local_observations(
                20, [[0.0, 0.0]], 1.0, state_locations=s + np.array([0, 88]), geometry="sphere"
            ),
            r"latitudes .* \[-90, 90\]",
        ),
        (
            lambda s: gain_taper(
                20, np.zeros((3, 3)), 1.0, state_locations=np.zeros((20, 3)), geometry="sphere"
            ),
            r"\(k, 2\)",
        ),
        (lambda s: pairwise_distances(s, np.zeros((2, 3))), "2 coordinate.*but b has 3"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, match):
    s = grid(5, 4)
    with pytest.raises(ValueError, match=match):
        call(s)


def test_bad_method_options_raise_at_construction():
    s = grid(5, 4)
    for factory in (letkf, lambda r, **kw: enkf(localization_radius=r, **kw)):
        with pytest.raises(ValueError, match="taper must be one of"):
            factory(1.0, taper="triangle")
        with pytest.raises(ValueError, match="localization_radius"):
            factory(-2.0)
        with pytest.raises(ValueError, match="geometry must be one of"):
            factory(1.0, geometry="plane")
        with pytest.raises(ValueError, match="latitudes"):
            factory(1.0, state_locations=s * [1, 40], geometry="sphere")
        with pytest.raises(ValueError, match="needs domain_length"):
            factory(1.0, state_locations=s)
    obs = observation_model(subset(np.arange(3), 20), obs_std=1.0)
    with pytest.raises(ValueError, match="state_locations must have length n=12"):
        letkf(1.0, state_locations=s, periodic=False).init(jnp.zeros((4, 12)), obs)
