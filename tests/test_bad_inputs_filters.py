"""Bad or odd input to models, observations, filters, wrappers, the driver and the I/O: each gives
a clear error (exact class and a message fragment) or a status, never a NaN or a silently
different answer."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.assimilate import (
    assimilate,
    make_method,
    register,
    with_inflation,
    with_rotation,
    with_rtps,
)
from jaxda.core import Status
from jaxda.diffusion import ensf
from jaxda.ensemble import (
    enkf,
    enkf_analysis,
    etkf,
    etkf_analysis,
    gaspari_cohn,
    inflate,
    letkf,
    local_observations,
    particle_filter,
    rtps,
)
from jaxda.experiments import TwinSetup, chronology, sakov2008, twin_experiment
from jaxda.io import load_observations, save_observations
from jaxda.models import Lorenz96, forecast, from_callable, gaussian, trajectory, with_noise
from jaxda.observations import (
    from_callable as obs_from_callable,
)
from jaxda.observations import (
    gaussian_noise,
    identity,
    linear,
    observation_model,
    observation_series,
    subset,
)

E = jax.random.normal(jax.random.key(0), (10, 5))
OBS5 = observation_model(identity(5), obs_std=1.0)
MODEL5 = Lorenz96(n=5)


def series(y, obs=OBS5, **kw):
    kw.setdefault("n_steps", 1)
    return observation_series(y, obs, **kw)


@pytest.mark.parametrize(
    ("make", "error", "fragment"),
    [
        # observation operators
        (lambda: subset([1, 7], n=5), ValueError, "observed indices must lie in [0, 5)"),
        (lambda: subset([0.5, 2.0]), ValueError, "indices must be integers"),
        (lambda: subset([-1, 2]), ValueError, "indices must be >= 0"),
        (lambda: subset([]), ValueError, "non-empty 1-D"),
        (lambda: obs_from_callable(lambda x: x[:1], 5, n=5), ValueError, "declares dim=5"),
        (lambda: obs_from_callable("x", 5), TypeError, "fn must be callable"),
        (lambda: obs_from_callable(jnp.sin, 0), ValueError, "dim must be a positive int"),
        (lambda: identity(0), ValueError, "n must be a positive int"),
        (lambda: linear(jnp.ones(3)), ValueError, "2-D (m, n) matrix"),
        (
            lambda: observation_model(jnp.sin, obs_std=1.0),
            TypeError,
            "operator must be an ObsOperator",
        ),
        (lambda: observation_model(identity(3), obs_std=[1.0, 2.0]), ValueError, "length 3"),
        (
            lambda: observation_model(identity(2), obs_std=-1.0),
            ValueError,
            "obs std must be positive",
        ),
        (
            lambda: observation_model(identity(2), obs_std=1.0, obs_cov=jnp.eye(2)),
            ValueError,
            "exactly one",
        ),
        (
            lambda: gaussian_noise(cov=jnp.array([[1.0, 2.0], [2.0, 1.0]])),
            ValueError,
            "positive definite",
        ),
        (lambda: gaussian_noise(cov=jnp.array([[1.0, 0.5], [0.0, 1.0]])), ValueError, "symmetric"),
        # observation series
        (lambda: series(jnp.ones((3, 4))), ValueError, "y must have shape (K, m=5)"),
        (
            lambda: series(jnp.ones((3, 5)), n_steps=[1, 2]),
            ValueError,
            "n_steps must be an int or (K=3,)",
        ),
        (lambda: series(jnp.ones((3, 5)), n_steps=[1, -2, 1]), ValueError, "must not decrease"),
        (
            lambda: series(jnp.ones((2, 5)), n_steps=None, times=[0.1, 0.25], dt=0.1),
            ValueError,
            "not a whole number of model steps",
        ),
        (
            lambda: series(jnp.ones((2, 5)), n_steps=None, times=[0.1, 0.2]),
            ValueError,
            "needs the model time step dt",
        ),
        (
            lambda: series(jnp.ones((2, 5)), times=[0.1, 0.2], dt=0.1),
            ValueError,
            "exactly one of n_steps= or times=",
        ),
        (
            lambda: series(jnp.ones((2, 5)), mask=jnp.ones((2, 4), bool)),
            ValueError,
            "mask must have the shape of y",
        ),
        (
            lambda: observation_series(
                [jnp.ones(2), jnp.ones(3)],
                [observation_model(subset([0, 1]), obs_std=1.0)] * 2,
                n_steps=1,
            ),
            ValueError,
            "y[1] has 3 values",
        ),
        # models
        (lambda: Lorenz96(n=3), ValueError, "n >= 4"),
        (lambda: Lorenz96(n=8, dt=-0.1), ValueError, "dt must be positive"),
        (
            lambda: from_callable(lambda x: x[:2], jnp.ones(3)),
            ValueError,
            "must return a state of the same shape",
        ),
        (lambda: from_callable(jnp.sin, jnp.ones((2, 3))), ValueError, "1-D state"),
        (
            lambda: with_noise(Lorenz96(n=8), -1.0),
            ValueError,
            "model-noise std must be non-negative",
        ),
        (lambda: with_noise(Lorenz96(n=8), jnp.ones(3)), ValueError, "must have length 8"),
        (
            lambda: trajectory(jax.random.key(0), jnp.sin, jnp.ones(3), 2),
            TypeError,
            "model must be a jaxda.models.Model",
        ),
        (
            lambda: trajectory(jax.random.key(0), MODEL5, jnp.ones(5), 0),
            ValueError,
            "n_steps must be >= 1",
        ),
        (lambda: forecast(jax.random.key(0), MODEL5, E, -1), ValueError, "n_steps must be >= 0"),
        (
            lambda: jax.jit(lambda k: forecast(jax.random.key(0), MODEL5, E, k))(2),
            ValueError,
            "needs a static max_steps",
        ),
        # analyses and factors
        (lambda: etkf_analysis(E[:1], jnp.zeros(5), OBS5), ValueError, "at least 2 members"),
        (lambda: etkf_analysis(E[0], jnp.zeros(5), OBS5), ValueError, "shape (N, n)"),
        (
            lambda: enkf_analysis(jax.random.key(0), E, jnp.zeros(4), OBS5),
            ValueError,
            "y must have length 5",
        ),
        (lambda: inflate(E, -1.0), ValueError, "inflation factor must be positive"),
        (lambda: inflate(E, 0.0), ValueError, "inflation factor must be positive"),
        (lambda: rtps(E, E, 5.0), ValueError, "rtps alpha must be in [0.0, 1.0]"),
        (lambda: gaspari_cohn(jnp.ones(3), -2.0), ValueError, "localization radius must be in"),
        (lambda: local_observations(10, [0, 1], radius=0.0), ValueError, "radius must be positive"),
        (lambda: letkf(-1.0), ValueError, "localization_radius must be in"),
        (lambda: letkf(2.0, batch_size=0), ValueError, "batch_size must be a positive int"),
        (lambda: enkf(localization_radius=0.0), ValueError, "localization_radius must be in"),
        (lambda: particle_filter(reg=-1.0), ValueError, "reg must be in"),
        (
            lambda: particle_filter(resample_threshold=2.0),
            ValueError,
            "resample_threshold must be in",
        ),
        (lambda: ensf().init(E[:1]), ValueError, "at least 2 members"),
        (lambda: ensf(n_steps=0), ValueError, "n_steps must be >= 1"),
        (
            lambda: letkf(2.0).init(
                E, observation_model(obs_from_callable(jnp.sin, 5), obs_std=1.0)
            ),
            ValueError,
            "LETKF needs observation locations",
        ),
        # wrappers and registry
        (lambda: with_inflation(etkf(), -0.5), ValueError, "inflation factor must be positive"),
        (lambda: with_inflation(etkf, 1.1), TypeError, "expected a jaxda.core.Method"),
        (lambda: with_rtps(etkf(), 1.5), ValueError, "rtps alpha must be in"),
        (lambda: with_rotation(lambda: None), TypeError, "expected a jaxda.core.Method"),
        (lambda: make_method("magic"), ValueError, "unknown method 'magic'"),
        (lambda: make_method("letkf"), ValueError, "needs option(s) ['localization_radius']"),
        (lambda: make_method("enkf", reg=0.3), ValueError, "do not apply to method 'enkf'"),
        (lambda: register("etkf", etkf), ValueError, "already registered"),
        (lambda: register("Bad Name", etkf), ValueError, "lower-case words"),
        # driver
        (
            lambda: assimilate(jax.random.key(0), etkf, MODEL5, series(jnp.ones((2, 5))), E),
            TypeError,
            "method must be a jaxda.core.Method",
        ),
        (
            lambda: assimilate(jax.random.key(0), etkf(), jnp.sin, series(jnp.ones((2, 5))), E),
            TypeError,
            "model must be a jaxda.models.Model",
        ),
        (
            lambda: assimilate(jax.random.key(0), etkf(), MODEL5, jnp.ones((2, 5)), E),
            TypeError,
            "observations must be an ObservationSeries",
        ),
        (
            lambda: assimilate(
                jax.random.key(0), etkf(), Lorenz96(n=6), series(jnp.ones((2, 5))), E
            ),
            ValueError,
            "initial ensemble has 5 variables, the model 6",
        ),
        (
            lambda: assimilate(
                jax.random.key(0),
                etkf(),
                MODEL5,
                series(jnp.ones((2, 5))),
                E,
                truth=jnp.ones((3, 5)),
            ),
            ValueError,
            "truth must have shape (K, n)",
        ),
        (
            lambda: assimilate(
                jax.random.key(0),
                etkf(),
                Lorenz96(n=8),
                series(jnp.ones((2, 2)), observation_model(subset([1, 9]), obs_std=1.0)),
                jnp.ones((4, 8)),
            ),
            ValueError,
            "observed indices must lie in [0, 8)",
        ),
        (
            lambda: assimilate(
                jax.random.key(0),
                etkf(),
                MODEL5,
                series(
                    jnp.ones((2, 5)),
                    observation_model(obs_from_callable(lambda x: x[:2], 5), obs_std=1.0),
                ),
                E,
            ),
            ValueError,
            "declares dim=5",
        ),
        # twin setups
        (
            lambda: chronology(MODEL5.dt, obs_every=1, n_cycles=0),
            ValueError,
            "n_cycles must be a positive int",
        ),
        (
            lambda: chronology(MODEL5.dt, obs_every=1, n_cycles=5, burn_in=5),
            ValueError,
            "burn_in must be in [0, n_cycles)",
        ),
        (
            lambda: TwinSetup(
                MODEL5,
                observation_model(identity(4), obs_std=1.0),
                chronology(MODEL5.dt, obs_every=1, n_cycles=5),
                gaussian(MODEL5.x0, 1.0),
            ),
            ValueError,
            "identity operator of size 4",
        ),
        (
            lambda: TwinSetup(
                MODEL5, OBS5, chronology(0.01, obs_every=1, n_cycles=5), gaussian(MODEL5.x0, 1.0)
            ),
            ValueError,
            "differs from the model's dt",
        ),
        (
            lambda: TwinSetup(
                MODEL5, OBS5, chronology(MODEL5.dt, obs_every=1, n_cycles=5), gaussian(jnp.ones(4))
            ),
            ValueError,
            "exactly one of std",
        ),
        (
            lambda: TwinSetup(
                MODEL5,
                OBS5,
                chronology(MODEL5.dt, obs_every=1, n_cycles=5),
                gaussian(jnp.ones(4), 1.0),
            ),
            ValueError,
            "initial has dimension 4, the model 5",
        ),
        (
            lambda: chronology(0.05, obs_interval=0.07, n_cycles=5),
            ValueError,
            "not a positive multiple of dt",
        ),
        (
            lambda: chronology(0.05, obs_times=[0.1, 0.05]),
            ValueError,
            "strictly increasing",
        ),
        (
            lambda: twin_experiment(jax.random.key(0), sakov2008(n_cycles=5, burn_in=0), etkf(), 0),
            ValueError,
            "n_members must be a positive int",
        ),
        # files
        (lambda: load_observations("/nonexistent/obs.nc"), ValueError, "does not exist"),
        (
            lambda: save_observations(
                "/nonexistent/dir/obs.nc",
                series(jnp.ones((2, 5)), observation_model(subset([0, 1, 2, 3, 4]), obs_std=1.0)),
            ),
            ValueError,
            "directory /nonexistent/dir does not exist",
        ),
        (
            lambda: save_observations("/tmp/x.nc", series(jnp.ones((2, 5)))),
            ValueError,
            "subset operators with a diagonal R only",
        ),
    ],
)
def test_bad_input(make, error, fragment):
    with pytest.raises(error) as exc:
        make()
    assert fragment in str(exc.value)


RUNTIME = (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError)


def test_traced_bad_values_raise_at_run_time():
    with pytest.raises(RUNTIME, match="inflation factor must be positive"):
        jax.jit(inflate)(E, -1.0).block_until_ready()
    with pytest.raises(RUNTIME, match="rtps alpha must be in"):
        jax.jit(rtps)(E, E, 2.0).block_until_ready()
    with pytest.raises(RUNTIME, match="model-noise std"):
        f = jax.jit(lambda s: trajectory(jax.random.key(0), with_noise(MODEL5, s), jnp.ones(5), 2))
        f(-1.0).block_until_ready()


def test_nan_observation_does_not_poison_later_cycles():
    """One NaN at one time is a missing value, not a NaN spreading to every later cycle."""
    y = jax.random.normal(jax.random.key(1), (6, 5)).at[2, 3].set(jnp.nan)
    final, hist = assimilate(jax.random.key(0), etkf(), MODEL5, series(y), E)
    assert np.all(np.isfinite(final.ensemble))
    assert hist.info.n_obs.tolist() == [5, 5, 4, 5, 5, 5]


def test_nonfinite_analysis_sets_status():
    """A model that blows up gives a NONFINITE status per time, not a silent NaN."""
    blow = from_callable(lambda x: x * jnp.inf, jnp.ones(5))
    _, hist = assimilate(jax.random.key(0), etkf(), blow, series(jnp.ones((2, 5))), E)
    assert np.all(np.asarray(hist.info.status) == Status.NONFINITE)


def test_non_traceable_model_or_operator_names_the_cause_and_the_remedy():
    with pytest.raises(
        TypeError, match=r"the model step fn is not JAX-traceable.*jaxda\.black_box"
    ):
        from_callable(lambda x: np.asarray(x) * 0.9, jnp.ones(5))
    op = obs_from_callable(lambda x: np.asarray(x)[:2], 2)
    with pytest.raises(TypeError, match=r"the observation operator is not JAX-traceable"):
        assimilate(
            jax.random.key(0),
            etkf(),
            MODEL5,
            series(jnp.ones((2, 2)), observation_model(op, obs_std=1.0)),
            E,
        )

    class NumpyModel(Lorenz96):  # a user model whose step is NumPy code
        def __call__(self, x):
            return jnp.asarray(np.asarray(x) * 0.9)

    with pytest.raises(TypeError, match=r"not JAX-traceable.*jaxda\.black_box"):
        assimilate(jax.random.key(0), etkf(), NumpyModel(n=5), series(jnp.ones((2, 5))), E)
