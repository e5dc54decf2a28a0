"""Ask/tell ES-MDA and IES (external simulators) against the JAX loops, and distance-based
localization for ES-MDA."""

import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.core import Status
from jaxda.ensemble import (
    distance_localization,
    esmda,
    esmda_ask,
    esmda_init,
    esmda_result,
    esmda_tell,
    ies,
    ies_ask,
    ies_init,
    ies_result,
    ies_tell,
)

N, n, m = 8, 3, 4
Y_OBS = jnp.array([3.0, 1.0, 1.5, 2.0])
OBS_STD = jnp.array([0.3, 0.2, 0.3, 0.5])
RTOL = 1e-10
ALPHA = jnp.array([3.0, 1.5])  # two assimilations everywhere: one compilation of each path
IES_OPTIONS: dict = dict(obs_std=OBS_STD, max_steps=4, step_length=0.7)

# the same forward model three times: JAX, NumPy on the ensemble, and as a program
SIMULATOR = """
import sys
import numpy as np

X = np.load(sys.argv[1])
threshold = float(sys.argv[3])
Y = np.stack([X[:, 0] + X[:, 1] ** 2, X[:, 1] * X[:, 2], X[:, 0] - 0.5 * X[:, 2],
              X[:, 0] * X[:, 1] * X[:, 2]], axis=1)
Y[X[:, 0] > threshold] = np.nan
np.save(sys.argv[2], Y)
"""


def g_jax(threshold=math.inf):
    def g(x):
        out = jnp.stack([x[0] + x[1] ** 2, x[1] * x[2], x[0] - 0.5 * x[2], x[0] * x[1] * x[2]])
        return jnp.where(x[0] > threshold, jnp.nan, out)

    return g


def g_numpy(threshold=math.inf):
    def g(X):
        X = np.asarray(X)
        Y = np.stack(
            [
                X[:, 0] + X[:, 1] ** 2,
                X[:, 1] * X[:, 2],
                X[:, 0] - 0.5 * X[:, 2],
                X[:, 0] * X[:, 1] * X[:, 2],
            ],
            axis=1,
        )
        Y[X[:, 0] > threshold] = np.nan
        return Y

    return g


# the JAX paths, jitted once per shape with the failure threshold traced (compilation
# dominates the time of these small problems)
@jax.jit
def esmda_jax(key, prior, threshold, localization=None):
    return esmda(
        key, g_jax(threshold), prior, Y_OBS, obs_std=OBS_STD, alpha=ALPHA, localization=localization
    )


@jax.jit
def ies_jax(key, prior, threshold):
    return ies(key, g_jax(threshold), prior, Y_OBS, **IES_OPTIONS)


@pytest.fixture(scope="module")
def prior():
    return 1.0 + 0.5 * jax.random.normal(jax.random.key(0), (N, n))


def run_esmda_ask_tell(key, prior, simulate, **kw):
    state = esmda_init(key, prior, Y_OBS, obs_std=OBS_STD, alpha=ALPHA, **kw)
    n_calls = 0
    while not state.done:
        state = esmda_tell(state, simulate(np.asarray(esmda_ask(state))))
        n_calls += 1
    return esmda_result(state), n_calls


def assert_same(a, b, rtol=RTOL):
    """Two ESMDAResult/IESResult agree to round-off (nan where nan)."""
    for name in a._fields:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        if name == "history":
            x, y = np.stack(getattr(a, name)), np.stack(getattr(b, name))
        if x.dtype == bool or np.issubdtype(x.dtype, np.integer):
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-12, equal_nan=True, err_msg=name)


# ----------------------------------------------------------------------------------- ES-MDA
def test_esmda_ask_tell_with_a_separate_process_equals_jax_path(prior, tmp_path):
    script = tmp_path / "simulator.py"
    script.write_text(SIMULATOR)
    calls = []

    def simulate(X):  # one process per ensemble, files in and out
        np.save(tmp_path / "x.npy", X)
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "inf"],
            check=True,
        )
        calls.append(X.shape)
        return np.load(tmp_path / "y.npy")

    key = jax.random.key(1)
    got, n_calls = run_esmda_ask_tell(key, prior, simulate)
    ref = esmda_jax(key, prior, math.inf)
    assert n_calls == 3 and calls == [(N, n)] * 3
    assert int(got.status) == Status.SUCCESS and int(got.n_steps) == 2
    assert_same(got, ref)
    assert not np.allclose(got.posterior, prior)  # the data moved the ensemble


def test_failed_members_are_deactivated_like_the_jax_path(prior):
    key = jax.random.key(2)
    # the member with the largest x0 fails in the prior (others may fail later)
    x0 = np.sort(np.asarray(prior[:, 0]))
    thr = 0.5 * (x0[-1] + x0[-2])
    got, _ = run_esmda_ask_tell(key, prior, g_numpy(thr))
    ref = esmda_jax(key, prior, thr)
    first = int(np.argmax(prior[:, 0]))
    assert int(got.status) == Status.FAILED_MEMBERS
    assert bool(got.failed[first]) and not bool(got.failed.all())
    assert_same(got, ref)
    np.testing.assert_array_equal(got.posterior[first], prior[first])  # never updated

    # no member fails in the prior, some after the first update: rolled back
    state = esmda_init(key, prior, Y_OBS, obs_std=OBS_STD, alpha=ALPHA)
    state = esmda_tell(state, g_numpy()(np.asarray(esmda_ask(state))))
    E1 = np.asarray(esmda_ask(state))
    assert E1[:, 0].max() > x0[-1]
    thr = 0.5 * (x0[-1] + E1[:, 0].max())
    got, _ = run_esmda_ask_tell(key, prior, g_numpy(thr))
    ref = esmda_jax(key, prior, thr)
    assert int(got.status) == Status.FAILED_MEMBERS and 1 <= int(got.failed.sum()) < N - 1
    assert_same(got, ref)

    # all but one member fail in the prior: finished after one tell, NONFINITE, same record
    thr = 0.5 * (x0[0] + x0[1])
    got, n_calls = run_esmda_ask_tell(key, prior, g_numpy(thr))
    ref = esmda_jax(key, prior, thr)
    assert n_calls == 1 and int(got.status) == Status.NONFINITE and int(got.n_steps) == 0
    assert_same(got, ref)
    state = esmda_init(key, prior, Y_OBS, obs_std=OBS_STD, alpha=ALPHA)
    state = esmda_tell(state, np.full((N, m), np.nan))
    with pytest.raises(RuntimeError):
        esmda_result(state, throw=True)


def test_esmda_ask_tell_misuse_raises(prior):
    state = esmda_init(jax.random.key(0), prior, Y_OBS, obs_std=OBS_STD, alpha=ALPHA)
    with pytest.raises(ValueError, match="not finished"):
        esmda_result(state)
    with pytest.raises(ValueError, match=r"shape \(N, m\)"):
        esmda_tell(state, np.zeros((N, m + 1)))
    with pytest.raises(TypeError, match="ESMDAState"):
        esmda_ask(prior)
    for _ in range(3):
        state = esmda_tell(state, g_numpy()(esmda_ask(state)))
    assert bool(state.done)
    with pytest.raises(ValueError, match="finished"):
        esmda_ask(state)
    with pytest.raises(ValueError, match="finished"):
        esmda_tell(state, np.zeros((N, m)))


# -------------------------------------------------------------------------------------- IES
def run_ies_ask_tell(key, prior, simulate):
    state = ies_init(key, prior, Y_OBS, **IES_OPTIONS)
    n_calls = 0
    while not state.done:
        state = ies_tell(state, simulate(ies_ask(state)))
        n_calls += 1
    return ies_result(state), n_calls, state


def test_ies_ask_tell_equals_ies(prior):
    E = prior[:4]  # n >= N - 1: the Ω_i sensitivity, and least squares once a member fails
    key = jax.random.key(3)
    got, n_calls, state = run_ies_ask_tell(key, E, g_numpy())
    assert n_calls == int(got.n_steps) + 1 == 5  # max_steps=4 updates
    assert_same(got, ies_jax(key, E, math.inf))
    with pytest.raises(ValueError, match="finished"):
        ies_ask(state)
    # a member failing mid-run: rolled back and dropped, in both paths alike
    state = ies_tell(ies_init(key, E, Y_OBS, **IES_OPTIONS), g_numpy()(E))
    x0, x1 = float(E[:, 0].max()), float(ies_ask(state)[:, 0].max())
    assert x1 > x0
    got, _, _ = run_ies_ask_tell(key, E, g_numpy(0.5 * (x0 + x1)))
    assert int(got.status) == Status.FAILED_MEMBERS and 1 <= int(got.failed.sum()) <= 2
    assert_same(got, ies_jax(key, E, 0.5 * (x0 + x1)))


# ----------------------------------------------------------------------------- localization
def gaspari_cohn_by_hand(d, c):
    """Gaspari & Cohn (1999) eq. 4.10 with half-width c, written out."""
    r = np.abs(d) / c
    out = np.zeros_like(r)
    a = r <= 1
    out[a] = -(r[a] ** 5) / 4 + r[a] ** 4 / 2 + 5 * r[a] ** 3 / 8 - 5 * r[a] ** 2 / 3 + 1
    b = (r > 1) & (r <= 2)
    rb = r[b]
    out[b] = rb**5 / 12 - rb**4 / 2 + 5 * rb**3 / 8 + 5 * rb**2 / 3 - 5 * rb + 4 - 2 / (3 * rb)
    return out


def test_distance_taper_equals_hand_built_gaspari_cohn():
    rng = np.random.default_rng(0)
    p, o = rng.uniform(0, 10, (7, 2)), rng.uniform(0, 10, (5, 2))
    radius = 2.0
    d = np.sqrt(((p[:, None, :] - o[None, :, :]) ** 2).sum(-1))
    expected = gaspari_cohn_by_hand(d, radius * math.sqrt(10 / 3))
    rho = distance_localization(p, o, radius)
    assert rho.shape == (7, 5)
    np.testing.assert_allclose(rho, expected, rtol=1e-12, atol=1e-14)
    # 1-D coordinates, given as (k,) or (k, 1), and other tapers
    np.testing.assert_allclose(
        distance_localization(p[:, 0], o[:, 0], radius),
        gaspari_cohn_by_hand(p[:, :1] - o[:, 0], radius * math.sqrt(10 / 3)),
        rtol=1e-12,
        atol=1e-14,
    )
    np.testing.assert_array_equal(
        distance_localization(p[:, :1], o[:, :1], radius),
        distance_localization(p[:, 0], o[:, 0], radius),
    )
    np.testing.assert_allclose(
        distance_localization(p, o, radius, taper="gaussian"),
        np.exp(-0.5 * (d / radius) ** 2),
        rtol=1e-12,
    )
    np.testing.assert_array_equal(distance_localization(p, o, radius, taper="boxcar"), d <= radius)
    # periodic domain: 0.5 and 9.5 are 1 apart on a ring of length 10
    ring = distance_localization(jnp.array([0.5]), jnp.array([9.5]), radius, domain_length=10.0)
    np.testing.assert_allclose(
        ring, gaspari_cohn_by_hand(np.array([[1.0]]), radius * math.sqrt(10 / 3))
    )


def test_localized_esmda_huge_radius_tiny_radius_and_ask_tell(prior):
    key = jax.random.key(4)
    p_loc = jnp.array([0.0, 1.0, 100.0])  # the third parameter is far from every datum
    o_loc = jnp.array([0.0, 0.5, 1.0, 1.5])
    plain = esmda_jax(key, prior, math.inf)
    huge = esmda_jax(key, prior, math.inf, localization=distance_localization(p_loc, o_loc, 1e8))
    np.testing.assert_allclose(huge.posterior, plain.posterior, rtol=1e-9)
    rho = distance_localization(p_loc, o_loc, 1.0)
    assert np.all(np.asarray(rho[2]) == 0.0) and np.all(np.asarray(rho[:2]) > 0.0)
    local = esmda_jax(key, prior, math.inf, localization=rho)
    np.testing.assert_array_equal(local.posterior[:, 2], prior[:, 2])
    assert not np.allclose(local.posterior[:, :2], prior[:, :2])
    got, _ = run_esmda_ask_tell(key, prior, g_numpy(), localization=rho)
    assert_same(got, local)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((np.zeros((3, 2, 1)), np.zeros(4), 1.0), {}, r"param_locations must have shape \(k,\)"),
        ((np.zeros(3), np.zeros((4, 1, 1)), 1.0), {}, r"obs_locations must have shape \(k,\)"),
        ((np.zeros((3, 2)), np.zeros((4, 3)), 1.0), {}, "2 coordinate.*but obs_locations have 3"),
        ((np.zeros(3), np.zeros(4), -1.0), {}, "radius must be a positive finite number"),
        ((np.zeros(3), np.zeros(4), 0.0), {}, "radius must be a positive finite number"),
        ((np.zeros(3), np.zeros(4), np.inf), {}, "radius must be a positive finite number"),
        ((np.zeros(3), np.zeros(4), [1.0, 2.0]), {}, "radius must be a positive finite number"),
        ((np.array([0.0, np.nan]), np.zeros(4), 1.0), {}, "param_locations contains nan"),
        ((np.zeros((0, 2)), np.zeros((4, 2)), 1.0), {}, "at least one point"),
        ((np.zeros((3, 0)), np.zeros((4, 0)), 1.0), {}, "at least one point"),
        ((np.zeros(3), np.zeros(4), 1.0), {"taper": "cosine"}, "taper must be one of"),
        (
            (np.zeros(3), np.zeros(4), 1.0),
            {"domain_length": -2.0},
            "domain_length must be positive",
        ),
    ],
)
def test_distance_localization_bad_inputs(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        distance_localization(*args, **kwargs)


def test_localization_of_the_wrong_shape_is_rejected(prior):
    rho = distance_localization(jnp.arange(n + 1.0), jnp.arange(m), 1.0)  # (n + 1, m)
    with pytest.raises(ValueError, match=r"localization must have shape \(n, m\)"):
        esmda_init(jax.random.key(0), prior, Y_OBS, obs_std=OBS_STD, localization=rho)
