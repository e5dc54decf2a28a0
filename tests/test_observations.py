import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.observations import (
    from_callable,
    gaussian_noise,
    identity,
    linear,
    log_likelihood,
    observation_model,
    observation_series,
    subset,
)


def test_operators_for_one_state():
    x = jnp.arange(6.0)
    np.testing.assert_allclose(identity(6)(x), x)
    np.testing.assert_allclose(subset([0, 2, 4], 6)(x), [0.0, 2.0, 4.0])
    H = jnp.array([[1.0, 1.0, 0, 0, 0, 0]])
    np.testing.assert_allclose(linear(H)(x), [1.0])
    op = from_callable(lambda v: jnp.arctan(v[:2]), 2)
    np.testing.assert_allclose(op(x), np.arctan([0.0, 1.0]))
    # an observation model applies its operator
    np.testing.assert_allclose(observation_model(subset([1, 3]), obs_std=1.0)(x), [1.0, 3.0])


def test_operator_locations_and_dims():
    np.testing.assert_array_equal(identity(4).locations, [0, 1, 2, 3])
    np.testing.assert_array_equal(subset([5, 1], 8).locations, [5, 1])
    assert linear(jnp.ones((2, 3))).locations is None
    np.testing.assert_array_equal(
        linear(jnp.ones((2, 3)), locations=[0.5, 2.0]).locations, [0.5, 2.0]
    )
    assert from_callable(jnp.sin, 3).locations is None
    assert [identity(4).dim, subset([5, 1]).dim, linear(jnp.ones((2, 3))).dim] == [4, 2, 2]


def test_operators_are_pytrees_that_vmap():
    # subset indices and linear H are leaves: operators stack along a leading axis and vmap
    x = jnp.arange(5.0)
    ops = jax.tree.map(lambda *a: jnp.stack(a), subset([0, 1]), subset([4, 2]))
    out = jax.vmap(lambda op: op(x))(ops)
    np.testing.assert_allclose(out, [[0.0, 1.0], [4.0, 2.0]])
    Hs = jnp.stack([jnp.eye(5)[:2], 2.0 * jnp.eye(5)[2:4]])
    out = jax.vmap(lambda H: linear(H)(x))(Hs)
    np.testing.assert_allclose(out, [[0.0, 1.0], [4.0, 6.0]])


def test_operator_validation():
    with pytest.raises(ValueError, match="integers"):
        subset([0.0, 2.5], 4)  # float indices are rejected, not truncated
    with pytest.raises(ValueError, match=r"lie in \[0, 4\)"):
        subset([0, 4], 4)
    with pytest.raises(ValueError, match=">= 0"):
        subset([-1, 2])
    with pytest.raises(ValueError, match="non-empty"):
        subset([])
    with pytest.raises(ValueError, match="2-D"):
        linear(jnp.ones(3))
    with pytest.raises(ValueError, match="declares dim=5"):
        from_callable(lambda x: x[:1], 5, n=3)
    with pytest.raises(ValueError, match="positive int"):
        identity(0)
    with pytest.raises(ValueError, match="columns"):
        linear(jnp.ones((2, 3))).check(4)
    with pytest.raises(ValueError, match="size 3"):
        identity(3).check(4)
    with pytest.raises(TypeError, match="ObsOperator"):
        observation_model(lambda x: x, obs_std=1.0)
    # deferred check: an operator built without n is checked against a state size later
    op = from_callable(lambda x: x[:1], 2)
    with pytest.raises(ValueError, match="declares dim=2"):
        op.check(3)


def test_diagonal_noise_sampling_and_whitening():
    noise = gaussian_noise(std=jnp.array([0.5, 2.0]))
    e = noise.sample(jax.random.key(0), (20000,))
    np.testing.assert_allclose(jnp.std(e, axis=0), [0.5, 2.0], rtol=0.03)
    np.testing.assert_allclose(noise.whiten(jnp.array([1.0, 1.0])), [2.0, 0.5])


def test_full_noise_matches_covariance():
    R = jnp.array([[2.0, 0.6], [0.6, 1.0]])
    noise = gaussian_noise(cov=R)
    e = noise.sample(jax.random.key(1), (40000,))
    np.testing.assert_allclose(jnp.cov(e.T), R, atol=0.05)
    r = jnp.array([0.3, -1.2])
    z = noise.whiten(r)
    np.testing.assert_allclose(z @ z, r @ jnp.linalg.solve(R, r), rtol=1e-10)
    # log density against scipy
    from scipy.stats import multivariate_normal

    np.testing.assert_allclose(
        noise.log_prob(r), multivariate_normal(np.zeros(2), np.asarray(R)).logpdf(np.asarray(r))
    )


def test_missing_observations_drop_out_of_the_likelihood():
    # NaN = missing: the log-likelihood is that of the observed block of R (scipy reference)
    from scipy.stats import multivariate_normal

    R = np.array([[2.0, 0.6, 0.3], [0.6, 1.0, 0.2], [0.3, 0.2, 1.5]])
    r = jnp.array([0.3, jnp.nan, -1.2])
    mask = jnp.isfinite(r)
    keep = [0, 2]
    ref = multivariate_normal(np.zeros(2), R[np.ix_(keep, keep)]).logpdf(np.asarray(r)[keep])
    np.testing.assert_allclose(log_likelihood(gaussian_noise(cov=R), r, mask), ref, rtol=1e-12)
    std = jnp.array([0.5, 1.0, 2.0])
    ref = multivariate_normal(np.zeros(2), np.diag(np.asarray(std)[keep] ** 2)).logpdf(
        np.asarray(r)[keep]
    )
    np.testing.assert_allclose(log_likelihood(gaussian_noise(std=std), r, mask), ref, rtol=1e-12)


def test_noise_errors_are_clear():
    with pytest.raises(ValueError, match="obs std must be positive"):
        gaussian_noise(std=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="obs std must be positive"):
        gaussian_noise(std=0.0, dim=3)
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_noise(cov=jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="exactly one"):
        gaussian_noise()
    with pytest.raises(ValueError, match="needs dim"):
        gaussian_noise(std=1.0)
    with pytest.raises(ValueError, match="length 2"):
        observation_model(subset([0, 1], 5), obs_std=jnp.ones(3))


def test_std_checked_under_jit():
    noise_std = jnp.array([1.0, -2.0])

    @jax.jit
    def f(s):
        return gaussian_noise(std=s).whiten(jnp.ones(2))

    with pytest.raises(Exception, match="obs std must be positive"):
        f(noise_std).block_until_ready()


def test_observation_series_times_steps_and_missing_values():
    om = observation_model(identity(2), obs_std=1.0)
    y = jnp.ones((3, 2))
    s = observation_series(y, om, times=[0.1, 0.3, 0.4], dt=0.1)
    assert s.n_steps.tolist() == [1, 2, 1] and s.max_steps == 2 and s.steps is None
    assert len(s) == 3 and s.dim == 2 and not s.varying
    regular = observation_series(y, om, n_steps=5, dt=0.01)
    assert regular.steps == 5 and regular.n_steps.tolist() == [5, 5, 5]
    np.testing.assert_allclose(regular.time, [0.05, 0.1, 0.15])
    masked = observation_series(
        y, om, n_steps=1, mask=[[True, False], [True, True], [False, False]]
    )
    np.testing.assert_array_equal(np.isnan(masked.y), [[False, True], [False, False], [True, True]])
    with pytest.raises(ValueError, match="whole number of model steps"):
        observation_series(y, om, times=[0.1, 0.25, 0.4], dt=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        observation_series(y, om)
    with pytest.raises(ValueError, match="must not decrease"):
        observation_series(y, om, n_steps=np.array([1, -1, 1]))
    with pytest.raises(ValueError, match=r"shape \(K, m=2\)"):
        observation_series(jnp.ones((3, 4)), om, n_steps=1)


def test_varying_observation_network_is_padded_with_missing_values():
    oms = [
        observation_model(subset([0, 2], 4), obs_std=jnp.array([0.5, 1.0])),
        observation_model(identity(4), obs_std=2.0),
        observation_model(subset([3], 4), obs_std=0.1),
    ]
    ys = [jnp.array([1.0, 2.0]), jnp.arange(4.0), jnp.array([7.0])]
    s = observation_series(ys, oms, n_steps=[1, 2, 3])
    assert s.varying and s.dim == 4 and s.y.shape == (3, 4)
    x = jnp.arange(10.0, 14.0)
    for k, (om, yk) in enumerate(zip(oms, ys, strict=True)):
        y_k, obs_k = s.at(k)
        m = om.dim
        np.testing.assert_allclose(y_k[:m], yk)
        assert bool(jnp.all(jnp.isnan(y_k[m:])))  # padding is missing
        np.testing.assert_allclose(obs_k(x)[:m], om(x))
        np.testing.assert_allclose(obs_k.noise.std[:m], om.noise.std)
    with pytest.raises(ValueError, match=r"y\[1\] has 3 values"):
        observation_series([ys[0], jnp.ones(3), ys[2]], oms, n_steps=1)
