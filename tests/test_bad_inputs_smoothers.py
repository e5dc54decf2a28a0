"""Bad inputs to every public function of the ES-MDA / IES / example-problem modules: each
raises a precise error (class and message) or returns a status, never a silent nan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.core import Status
from jaxda.ensemble import (
    esmda,
    esmda_perturbations,
    esmda_update,
    geometric_alpha,
    grid_posterior,
    ies,
    ies_kalman,
    linear_gaussian_posterior,
    linear_gaussian_problem,
    lorenz96_parameter_problem,
    nonlinear_scalar_problem,
    normalize_alpha,
    step_length_schedule,
)
from jaxda.observations import gaussian_noise

key = jax.random.key
N, n, m = 8, 3, 2
E = jax.random.normal(key(1), (N, n))
Y0 = jnp.zeros(m)


def g(x):
    return x[:m]


SMOOTHERS = {"esmda": esmda, "ies": ies, "ies_kalman": ies_kalman}

# (description, call(fn), error class, message fragment), for each of the three smoothers
COMMON = [
    ("key None", lambda f: f(None, g, E, Y0, obs_std=1.0), TypeError, "PRNG key"),
    ("key after forward", lambda f: f(g, key(0), E, Y0, obs_std=1.0), TypeError, "PRNG key"),
    ("key not a key", lambda f: f(3, g, E, Y0, obs_std=1.0), TypeError, "PRNG key"),
    ("forward not callable", lambda f: f(key(0), "g", E, Y0, obs_std=1.0), TypeError, "callable"),
    ("prior 3-D", lambda f: f(key(0), g, jnp.zeros((N, n, 2)), Y0, obs_std=1.0), ValueError, "(N, n)"),
    ("prior 1-D", lambda f: f(key(0), g, jnp.zeros(N), Y0, obs_std=1.0), ValueError, "(N, n)"),
    ("one member", lambda f: f(key(0), g, E[:1], Y0, obs_std=1.0), ValueError, "N >= 2"),
    ("prior nan", lambda f: f(key(0), g, E.at[0, 0].set(jnp.nan), Y0, obs_std=1.0), ValueError, "prior ensemble contains nan"),
    ("pytree axes", lambda f: f(key(0), g, {"a": E, "b": E[:3]}, Y0, obs_std=1.0), ValueError, "leading member axis"),
    ("y 2-D", lambda f: f(key(0), g, E, jnp.zeros((m, 1)), obs_std=1.0), ValueError, "1-D vector"),
    ("y empty", lambda f: f(key(0), g, E, jnp.zeros(0), obs_std=1.0), ValueError, "at least one observation"),
    ("y inf", lambda f: f(key(0), g, E, jnp.array([0.0, jnp.inf]), obs_std=1.0), ValueError, "y contains inf"),
    ("mask shape", lambda f: f(key(0), g, E, Y0, obs_std=1.0, mask=jnp.ones(3, bool)), ValueError, "mask must have the shape"),
    ("mask dtype", lambda f: f(key(0), g, E, Y0, obs_std=1.0, mask=jnp.ones(m)), TypeError, "boolean"),
    ("no noise", lambda f: f(key(0), g, E, Y0), ValueError, "exactly one of noise="),
    ("two noises", lambda f: f(key(0), g, E, Y0, obs_std=1.0, obs_cov=jnp.eye(m)), ValueError, "exactly one of noise="),
    ("noise dim", lambda f: f(key(0), g, E, Y0, noise=gaussian_noise(std=jnp.ones(3))), ValueError, "noise has dimension 3"),
    ("noise type", lambda f: f(key(0), g, E, Y0, noise=jnp.ones(m)), TypeError, "noise object"),
    ("obs_std <= 0", lambda f: f(key(0), g, E, Y0, obs_std=jnp.array([1.0, 0.0])), ValueError, "positive"),
    ("obs_cov not PD", lambda f: f(key(0), g, E, Y0, obs_cov=-jnp.eye(m)), ValueError, "positive definite"),
    ("forward size", lambda f: f(key(0), lambda x: x, E, Y0, obs_std=1.0), ValueError, "predictions per member"),
    ("throw not bool", lambda f: f(key(0), g, E, Y0, obs_std=1.0, throw="yes"), TypeError, "throw must be a bool"),
]  # fmt: skip


@pytest.mark.parametrize("name", list(SMOOTHERS))
@pytest.mark.parametrize("case", COMMON, ids=[c[0] for c in COMMON])
def test_common_bad_inputs(name, case):
    _, call, exc, fragment = case
    with pytest.raises(exc, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        call(SMOOTHERS[name])


ESMDA_CASES = [
    ("alpha 0", dict(alpha=0), ValueError, "alpha (number of assimilations) must be >= 1"),
    ("alpha bool", dict(alpha=True), ValueError, "alpha must be an integer >= 1"),
    ("alpha float scalar", dict(alpha=4.0), ValueError, "non-empty 1-D array"),
    ("alpha empty", dict(alpha=jnp.zeros(0)), ValueError, "non-empty 1-D array"),
    ("alpha negative", dict(alpha=jnp.array([1.0, -2.0])), ValueError, "alpha must be positive"),
    ("alpha nan", dict(alpha=jnp.array([1.0, jnp.nan])), ValueError, "alpha must be positive"),
    ("alpha sum", dict(alpha=jnp.array([2.0, 3.0]), normalize=False), ValueError, "sum(1/alpha) = 1"),
    ("normalize", dict(normalize=1), TypeError, "normalize must be a bool"),
    ("inversion", dict(inversion="svd"), ValueError, "inversion must be 'exact' or 'subspace'"),
    ("truncation 0", dict(truncation=0.0), ValueError, "truncation must be in (0.0, 1.0]"),
    ("truncation > 1", dict(truncation=1.5), ValueError, "truncation must be in (0.0, 1.0]"),
    ("truncation nan", dict(truncation=float("nan")), ValueError, "truncation must be in"),
    ("localization shape", dict(localization=jnp.ones((m, n))), ValueError, "localization must have shape (n, m)"),
    ("localization nan", dict(localization=jnp.full((n, m), jnp.nan)), ValueError, "localization contains nan"),
    ("perturbations shape", dict(alpha=2, perturbations=jnp.zeros((3, N, m))), ValueError, "perturbations must have shape (N_a, N, m)"),
    ("perturbations nan", dict(alpha=1, perturbations=jnp.full((1, N, m), jnp.nan)), ValueError, "perturbations contains nan"),
]  # fmt: skip


def _esc(s):
    return s.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")


@pytest.mark.parametrize("case", ESMDA_CASES, ids=[c[0] for c in ESMDA_CASES])
def test_esmda_bad_options(case):
    _, kw, exc, fragment = case
    with pytest.raises(exc, match=_esc(fragment)):
        esmda(key(0), g, E, Y0, obs_std=1.0, **kw)


IES_CASES = [
    ("max_steps 0", dict(max_steps=0), ValueError, "max_steps must be a positive integer"),
    ("max_steps float", dict(max_steps=2.5), ValueError, "max_steps must be a positive integer"),
    ("max_steps bool", dict(max_steps=True), ValueError, "max_steps must be a positive integer"),
    ("tol negative", dict(tol=-1.0), ValueError, "tol must be in"),
    ("tol nan", dict(tol=float("nan")), ValueError, "tol must be in"),
    ("perturbations shape", dict(perturbations=jnp.zeros((3, m))), ValueError, "perturbations must have shape (N, m)"),
    ("perturbations nan", dict(perturbations=jnp.full((N, m), jnp.nan)), ValueError, "perturbations contains nan"),
]  # fmt: skip


@pytest.mark.parametrize("name", ["ies", "ies_kalman"])
@pytest.mark.parametrize("case", IES_CASES, ids=[c[0] for c in IES_CASES])
def test_iterative_bad_options(name, case):
    _, kw, exc, fragment = case
    with pytest.raises(exc, match=_esc(fragment)):
        SMOOTHERS[name](key(0), g, E, Y0, obs_std=1.0, **kw)


@pytest.mark.parametrize(
    "kw,exc,fragment",
    [
        (dict(step_length=1.5), ValueError, "step_length must be in (0.0, 1.0]"),
        (dict(step_length=0.0), ValueError, "step_length must be in (0.0, 1.0]"),
        (dict(step_length="big"), TypeError, "step_length must be None, a float"),
    ],
)
def test_ies_bad_step_length(kw, exc, fragment):
    with pytest.raises(exc, match=_esc(fragment)):
        ies(key(0), g, E, Y0, obs_std=1.0, **kw)


@pytest.mark.parametrize(
    "kw,exc,fragment",
    [
        (dict(resample=True, perturbations=jnp.zeros((N, m))), ValueError, "resample=True"),
        (dict(resample=1), TypeError, "resample must be a bool"),
        (dict(inversion="svd"), ValueError, "inversion must be"),
        (dict(truncation=0.0), ValueError, "truncation must be in"),
        (dict(localization=jnp.ones((m, n))), ValueError, "localization must have shape"),
    ],
)
def test_ies_kalman_bad_options(kw, exc, fragment):
    with pytest.raises(exc, match=_esc(fragment)):
        ies_kalman(key(0), g, E, Y0, obs_std=1.0, **kw)


# ------------------------------------------------------------------- statuses, never nan
@pytest.mark.parametrize("name", list(SMOOTHERS))
def test_nan_members_all_nan_and_all_missing_give_statuses(name):
    fn = SMOOTHERS[name]

    def some_nan(x):  # members with x2 > 0.5 crash
        return jnp.where(x[2] > 0.5, jnp.nan, x[:m])

    @jax.jit
    def three(E):
        kw = dict(obs_std=1.0)
        part = fn(key(0), some_nan, E, Y0, **kw)
        allnan = fn(key(0), lambda x: jnp.full(m, jnp.nan), E, Y0, **kw)
        missing = fn(key(0), g, E, jnp.full(m, jnp.nan), **kw)
        return part, allnan, missing

    part, allnan, missing = three(E)
    bad = np.asarray(E[:, 2] > 0.5)
    assert 0 < bad.sum() < N - 2
    assert int(part.status) == Status.FAILED_MEMBERS
    assert np.all(np.asarray(part.failed)[bad])  # (later iterates may fail too)
    assert bool(jnp.all(jnp.isfinite(part.posterior)))
    assert int(allnan.status) == Status.NONFINITE and int(allnan.n_steps) == 0
    assert bool(jnp.all(allnan.failed))
    np.testing.assert_array_equal(allnan.posterior, E)  # untouched, no nan
    assert int(missing.status) == Status.SUCCESS
    np.testing.assert_array_equal(missing.posterior, E)
    with pytest.raises(RuntimeError, match="NONFINITE"):
        fn(key(0), lambda x: jnp.full(m, jnp.nan), E, Y0, obs_std=1.0, throw=True)


def test_traced_bad_values_raise_at_run_time():
    run = jax.jit(lambda y: esmda(key(0), g, E, y, obs_std=1.0, alpha=2).posterior)
    with pytest.raises(Exception, match="y contains inf"):
        jax.block_until_ready(run(jnp.array([0.0, jnp.inf])))
    run_a = jax.jit(
        lambda a: esmda(key(0), g, E, Y0, obs_std=1.0, alpha=a, normalize=False).posterior
    )
    with pytest.raises(Exception, match="sum\\(1/alpha\\) = 1"):
        jax.block_until_ready(run_a(jnp.array([2.0, 3.0])))


# ------------------------------------------------------------------- helpers
NOISE = gaussian_noise(std=jnp.ones(m))
EPS = jnp.zeros((N, m))

HELPERS = [
    ("geometric_alpha n 0", lambda: geometric_alpha(0), ValueError, "n_assimilations must be a positive integer"),
    ("geometric_alpha n float", lambda: geometric_alpha(2.5), ValueError, "n_assimilations must be a positive integer"),
    ("geometric_alpha ratio 0", lambda: geometric_alpha(3, 0.0), ValueError, "ratio must be in"),
    ("geometric_alpha ratio inf", lambda: geometric_alpha(3, float("inf")), ValueError, "ratio must be in"),
    ("normalize_alpha empty", lambda: normalize_alpha(jnp.zeros(0)), ValueError, "non-empty 1-D array"),
    ("normalize_alpha 2-D", lambda: normalize_alpha(jnp.ones((2, 2))), ValueError, "non-empty 1-D array"),
    ("normalize_alpha zero", lambda: normalize_alpha(jnp.array([1.0, 0.0])), ValueError, "alpha must be positive"),
    ("perturbations key", lambda: esmda_perturbations(0, NOISE, 2, N), TypeError, "PRNG key"),
    ("perturbations noise", lambda: esmda_perturbations(key(0), jnp.ones(m), 2, N), TypeError, "noise object"),
    ("perturbations n_a", lambda: esmda_perturbations(key(0), NOISE, 0, N), ValueError, "n_assimilations must be a positive integer"),
    ("perturbations N", lambda: esmda_perturbations(key(0), NOISE, 2, -1), ValueError, "n_members must be a positive integer"),
    ("update ensemble 1-D", lambda: esmda_update(jnp.zeros(N), EPS, Y0, NOISE, EPS), ValueError, "(N, n)"),
    ("update ensemble nan", lambda: esmda_update(E.at[0].set(jnp.nan), EPS, Y0, NOISE, EPS), ValueError, "ensemble contains nan"),
    ("update predictions", lambda: esmda_update(E, jnp.zeros((N, 3)), Y0, NOISE, EPS), ValueError, "predictions must have shape (N, m)"),
    ("update perturbations", lambda: esmda_update(E, EPS, Y0, NOISE, jnp.zeros((2, m))), ValueError, "perturbations must have shape (N, m)"),
    ("update noise dim", lambda: esmda_update(E, EPS, Y0, gaussian_noise(std=jnp.ones(3)), EPS), ValueError, "noise has dimension"),
    ("update noise type", lambda: esmda_update(E, EPS, Y0, 1.0, EPS), TypeError, "noise object"),
    ("update alpha", lambda: esmda_update(E, EPS, Y0, NOISE, EPS, -1.0), ValueError, "alpha must be positive"),
    ("update inversion", lambda: esmda_update(E, EPS, Y0, NOISE, EPS, inversion="x"), ValueError, "inversion must be"),
    ("update truncation", lambda: esmda_update(E, EPS, Y0, NOISE, EPS, inversion="subspace", truncation=2.0), ValueError, "truncation must be in"),
    ("update nan members", lambda: esmda_update(E, EPS.at[1:].set(jnp.nan), Y0, NOISE, EPS), ValueError, "at least 2 members with finite predictions"),
    ("update y inf", lambda: esmda_update(E, EPS, jnp.array([jnp.inf, 0.0]), NOISE, EPS), ValueError, "y contains inf"),
    ("schedule max_step", lambda: step_length_schedule(1.5), ValueError, "max_step must be in (0.0, 1.0]"),
    ("schedule min_step", lambda: step_length_schedule(0.5, 0.6), ValueError, "min_step must be in (0.0, 0.5]"),
    ("schedule decay", lambda: step_length_schedule(0.6, 0.3, 1.0), ValueError, "decay must be in (1.0, inf)"),
    ("schedule decay nan", lambda: step_length_schedule(0.6, 0.3, float("nan")), ValueError, "decay must be in"),
    ("linear problem key", lambda: linear_gaussian_problem(None), TypeError, "PRNG key"),
    ("linear problem n", lambda: linear_gaussian_problem(key(0), n=0), ValueError, "n must be a positive integer"),
    ("linear problem m", lambda: linear_gaussian_problem(key(0), m=1.5), ValueError, "m must be a positive integer"),
    ("linear problem obs_std", lambda: linear_gaussian_problem(key(0), obs_std=0.0), ValueError, "obs_std must be positive"),
    ("scalar problem key", lambda: nonlinear_scalar_problem(1.0), TypeError, "PRNG key"),
    ("scalar problem m", lambda: nonlinear_scalar_problem(key(0), m=0), ValueError, "m must be a positive integer"),
    ("scalar problem beta", lambda: nonlinear_scalar_problem(key(0), beta=-1.0), ValueError, "beta must be in"),
    ("scalar problem prior_std", lambda: nonlinear_scalar_problem(key(0), prior_std=-1.0), ValueError, "prior_std must be positive"),
    ("scalar problem truth", lambda: nonlinear_scalar_problem(key(0), truth=float("nan")), ValueError, "truth must be in"),
    ("l96 problem key", lambda: lorenz96_parameter_problem(0), TypeError, "PRNG key"),
    ("l96 problem n", lambda: lorenz96_parameter_problem(key(0), n=3), ValueError, "n >= 4"),
    ("l96 problem obs_every", lambda: lorenz96_parameter_problem(key(0), n_steps=5, obs_every=2), ValueError, "multiple of obs_every"),
    ("l96 problem dt", lambda: lorenz96_parameter_problem(key(0), dt=0.0), ValueError, "dt must be positive"),
    ("l96 problem prior", lambda: lorenz96_parameter_problem(key(0), prior_forcing=(6.0,)), ValueError, "prior_forcing must be (mean, std)"),
    ("l96 problem spinup", lambda: lorenz96_parameter_problem(key(0), spinup=-1), ValueError, "spinup must be a non-negative integer"),
    ("grid problem type", lambda: grid_posterior("p"), TypeError, "InverseProblem"),
    ("grid problem dim", lambda: grid_posterior(linear_gaussian_problem(key(0), n=2, m=2)), ValueError, "scalar (1-D) parameter"),
    ("grid lo hi", lambda: grid_posterior(nonlinear_scalar_problem(key(0)), lo=1.0, hi=0.0), ValueError, "hi must be in"),
    ("grid n_grid", lambda: grid_posterior(nonlinear_scalar_problem(key(0)), n_grid=2), ValueError, "n_grid must be an integer >= 3"),
    ("posterior G", lambda: linear_gaussian_posterior(jnp.ones(3), Y0, jnp.eye(m), jnp.zeros(n), jnp.eye(n)), ValueError, "G must be an (m, n) matrix"),
    ("posterior R", lambda: linear_gaussian_posterior(jnp.ones((m, n)), Y0, jnp.eye(3), jnp.zeros(n), jnp.eye(n)), ValueError, "R must have shape (2, 2)"),
    ("posterior mean", lambda: linear_gaussian_posterior(jnp.ones((m, n)), Y0, jnp.eye(m), jnp.zeros(2), jnp.eye(n)), ValueError, "prior_mean must have shape (3,)"),
]  # fmt: skip


@pytest.mark.parametrize("case", HELPERS, ids=[c[0] for c in HELPERS])
def test_helper_bad_inputs(case):
    _, call, exc, fragment = case
    with pytest.raises(exc, match=_esc(fragment)):
        call()
