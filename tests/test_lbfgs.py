"""L-BFGS against scipy's L-BFGS-B and closed-form minima."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize as scipy_minimize

from jaxda.core import Status
from jaxda.optimize import lbfgs, rosenbrock


def test_rosenbrock_matches_scipy_lbfgsb():
    x0 = jnp.full(10, -1.0).at[0].set(-1.2)
    res = jax.jit(lambda x: lbfgs(rosenbrock, x, gtol=1e-8, max_steps=1000))(x0)
    ref = scipy_minimize(
        lambda x: float(rosenbrock(jnp.asarray(x))),
        np.asarray(x0),
        jac=lambda x: np.asarray(jax.grad(rosenbrock)(jnp.asarray(x))),
        method="L-BFGS-B",
        options={"gtol": 1e-8, "maxiter": 1000, "maxcor": 10},
    )
    assert int(res.status) == Status.SUCCESS and ref.success
    np.testing.assert_allclose(res.x, ref.x, atol=1e-5)
    np.testing.assert_allclose(res.x, np.ones(10), atol=1e-8)
    # the same algorithm: iteration counts within 25% of scipy's
    assert abs(int(res.n_steps) - ref.nit) <= 0.25 * ref.nit
    assert int(res.n_evaluations) == int(res.history.n_evaluations[int(res.n_steps)])


def test_large_quadratic_and_pytree_and_memory_one():
    n = 2000
    a = jnp.linspace(1.0, 50.0, n)

    def f(p):
        return 0.5 * jnp.sum(a * p["x"] ** 2) - jnp.sum(p["x"])

    res = lbfgs(f, {"x": jnp.zeros(n)}, gtol=1e-10, max_steps=300)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x["x"], 1.0 / a, rtol=1e-5)  # stops at f's round-off
    assert res.hess_inv is None
    one = lbfgs(rosenbrock, jnp.array([-1.2, 1.0]), memory=1, gtol=1e-8, max_steps=2000)
    assert int(one.status) == Status.SUCCESS
    np.testing.assert_allclose(one.x, [1.0, 1.0], atol=1e-6)


def test_vmapped_restarts_and_bad_memory():
    starts = jax.random.uniform(jax.random.key(0), (8, 4), minval=-2.0, maxval=2.0)
    res = jax.jit(jax.vmap(lambda x: lbfgs(rosenbrock, x, gtol=1e-8)))(starts)
    assert res.status.shape == (8,)
    ok = np.asarray(res.status) == Status.SUCCESS
    assert ok.sum() >= 7
    assert np.all(np.asarray(res.f)[ok] < 1e-10)
    with pytest.raises(ValueError, match="memory"):
        lbfgs(rosenbrock, jnp.zeros(2), memory=0)
