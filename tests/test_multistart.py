"""multistart: a pool of quasi-Newton restarts against jax.vmap of the solver and solo runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxda.core import Status
from jaxda.optimize import bfgs, lbfgs, multistart, newton, rosenbrock

STARTS = jax.random.uniform(jax.random.key(3), (12, 4), minval=-2.0, maxval=2.0)


def test_pool_runs_every_restart_as_vmap_does():
    solver, n_starts, pool_size = bfgs, 12, 3
    starts, opts = STARTS[:n_starts], {"gtol": 1e-8, "max_steps": 300}
    ref = jax.jit(jax.vmap(lambda x: solver(rosenbrock, x, **opts)))(starts)
    pool = jax.jit(lambda x: multistart(solver, rosenbrock, x, pool_size=pool_size, **opts))(starts)
    # the slots cycle through the restarts, each restart still takes its own iterations
    # (the same iterates; batched arithmetic of a different width may round differently)
    np.testing.assert_array_equal(pool.status, ref.status)
    np.testing.assert_array_equal(pool.n_steps, ref.n_steps)
    assert np.all(np.asarray(pool.status) == Status.SUCCESS)
    np.testing.assert_allclose(pool.x, ref.x, atol=1e-8)
    np.testing.assert_allclose(pool.f, ref.f, atol=1e-12)
    np.testing.assert_array_equal(np.isnan(pool.history.f), np.isnan(ref.history.f))
    np.testing.assert_allclose(pool.history.f, ref.history.f, rtol=1e-3, atol=1e-10)
    np.testing.assert_allclose(pool.history.grad_norm[:, 0], ref.history.grad_norm[:, 0])
    for i in range(n_starts):  # row i of the output is restart i, its history complete
        k = int(pool.n_steps[i])
        assert int(pool.history.n_evaluations[i, k]) == int(pool.n_evaluations[i])
        counts = np.asarray(pool.history.n_evaluations[i])
        assert np.all(np.diff(counts[: k + 1]) >= 1) and np.all(counts[k + 1 :] == -1)
    assert pool.hess_inv.shape == (n_starts, 4, 4)
    np.testing.assert_allclose(pool.hess_inv, ref.hess_inv, rtol=1e-3, atol=1e-8)


def test_lbfgs_pool_with_options_and_traced_args():
    c = jnp.array([1.0, -2.0, 3.0])

    def quad(x, c):  # ill-conditioned enough for several iterations, minimum at c
        return jnp.sum(jnp.array([1.0, 10.0, 100.0]) * (x - c) ** 2) + jnp.sum((x - c) ** 4)

    starts = jax.random.normal(jax.random.key(1), (9, 3))
    out = jax.jit(lambda s, c: multistart(lbfgs, quad, s, (c,), pool_size=4, memory=2))(starts, c)
    ref = jax.jit(jax.vmap(lambda s, c: lbfgs(quad, s, (c,), memory=2), (0, None)))(starts, c)
    assert np.all(np.asarray(out.status) == Status.SUCCESS)
    np.testing.assert_allclose(out.x, np.broadcast_to(c, (9, 3)), atol=1e-6)
    np.testing.assert_array_equal(out.n_steps, ref.n_steps)
    assert np.all(np.asarray(out.n_steps) >= 3)
    np.testing.assert_allclose(out.history.f, ref.history.f, rtol=1e-6, atol=1e-12)
    assert out.hess_inv is None


def test_mixed_statuses_land_in_their_rows():
    # a start at the minimum (stops before any step), a non-finite start, capped runs
    x0s = jnp.concatenate([jnp.ones((1, 4)), jnp.full((1, 4), jnp.nan), STARTS[:5]])
    res = multistart(bfgs, rosenbrock, x0s, pool_size=2, max_steps=5)
    assert int(res.status[0]) == Status.SUCCESS and int(res.n_steps[0]) == 0
    np.testing.assert_array_equal(res.x[0], np.ones(4))
    assert int(res.status[1]) == Status.NONFINITE and int(res.n_steps[1]) == 0
    assert np.all(np.asarray(res.status[2:]) == Status.MAX_STEPS)
    assert np.all(np.asarray(res.n_steps[2:]) == 5)
    np.testing.assert_allclose(res.history.f[:, 0], jax.vmap(rosenbrock)(x0s))
    assert res.history.f.shape == (7, 6)


def test_bad_arguments_and_throw():
    x0s = jnp.zeros((3, 2))
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="pool_size"):
            multistart(bfgs, rosenbrock, x0s, pool_size=bad)  # pyright: ignore[reportArgumentType]
    for shape in ((3,), (0, 2), (2, 0), (2, 3, 1)):
        with pytest.raises(ValueError, match="x0s must have shape"):
            multistart(bfgs, rosenbrock, jnp.zeros(shape))
    with pytest.raises(ValueError, match="solver must be"):
        multistart(newton, rosenbrock, x0s)
    with pytest.raises(ValueError, match="options"):
        multistart(bfgs, rosenbrock, x0s, memory=3)  # an L-BFGS option
    with pytest.raises(ValueError, match="memory must be"):
        multistart(lbfgs, rosenbrock, x0s, memory=0)
    with pytest.raises(ValueError, match="max_steps"):
        multistart(bfgs, rosenbrock, x0s, max_steps=0)
    with pytest.raises(RuntimeError, match="MAX_STEPS"):
        multistart(bfgs, rosenbrock, x0s, max_steps=2, throw=True)
