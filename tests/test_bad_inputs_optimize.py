"""Bad inputs to every public jaxda.optimize function: the exact error class and message, or the
status value. Nothing is silent."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxda.core import Status
from jaxda.optimize import (
    bfgs,
    differential_evolution,
    genetic_algorithm,
    gradient_descent,
    grid_search,
    minimize,
    newton,
    particle_swarm,
    random_search,
    sgd,
    simulated_annealing,
    sphere,
)

K = jax.random.key(0)
B = jnp.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
X0 = jnp.zeros(2)
DATA = (jnp.ones((8, 2)), jnp.ones(8))


def mse(w, batch):
    return jnp.mean((batch[0] @ w - batch[1]) ** 2)


GF = {
    "grid": lambda f, b, **kw: grid_search(f, b, num=3, **kw),
    "random": lambda f, b, **kw: random_search(K, f, b, max_steps=2, batch_size=4, **kw),
    "ga": lambda f, b, **kw: genetic_algorithm(K, f, b, population_size=4, max_steps=2, **kw),
    "de": lambda f, b, **kw: differential_evolution(K, f, b, population_size=4, max_steps=2, **kw),
    "sa": lambda f, b, **kw: simulated_annealing(K, f, b, max_steps=3, **kw),
    "pso": lambda f, b, **kw: particle_swarm(K, f, b, n_particles=3, max_steps=2, **kw),
}

# (call, error class, message fragment)
CASES = {
    # bounds: shapes, lo >= hi, the ambiguous (2, 2) layout, non-finite
    "bounds_1d": (lambda m: GF[m](sphere, jnp.zeros(3)), ValueError, r"shape \(2, n\)"),
    "bounds_3d": (lambda m: GF[m](sphere, jnp.zeros((2, 3, 1))), ValueError, r"shape \(2, n\)"),
    "bounds_3x3": (lambda m: GF[m](sphere, jnp.zeros((3, 3))), ValueError, r"shape \(2, n\)"),
    "lo_eq_hi": (
        lambda m: GF[m](sphere, jnp.array([[0.0, 0, 0], [1, 0, 1]])),
        ValueError,
        r"lower < upper.*indices \[1\]",
    ),
    "lo_gt_hi": (lambda m: GF[m](sphere, B[::-1]), ValueError, "lower < upper"),
    "pairs_inverted": (
        lambda m: GF[m](sphere, jnp.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])),
        ValueError,
        r"\(n, 2\) pairs",
    ),
    "ambiguous_2x2": (
        lambda m: GF[m](sphere, jnp.array([[0.0, 1.0], [2.0, 0.5]])),  # pairs (0, 1), (2, 0.5)?
        ValueError,
        "bounds_from_pairs",
    ),
    "bounds_nan": (lambda m: GF[m](sphere, B.at[0, 0].set(jnp.nan)), ValueError, "finite"),
    # objective
    "not_callable": (lambda m: GF[m](3.0, B), TypeError, "objective must be callable"),
    "vector_valued": (lambda m: GF[m](lambda x: x, B), ValueError, "must return a scalar"),
    "numpy_objective": (
        lambda m: GF[m](lambda x: float(np.sum(x)), B),
        TypeError,
        r"not JAX-traceable.*jaxda\.black_box",
    ),
    "bad_handling": (
        lambda m: GF[m](sphere, B, **({} if m in ("grid", "random") else {"bound_handling": "x"})),
        ValueError,
        "bound_handling",
    ),
}


@pytest.mark.parametrize("method", list(GF))
@pytest.mark.parametrize("case", list(CASES))
def test_gradient_free_bad_inputs(method, case):
    call, err, match = CASES[case]
    if case == "bad_handling" and method in ("grid", "random"):
        pytest.skip("no bound handling: every point is generated inside the box")
    with pytest.raises(err, match=match):
        call(method)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: random_search(K, sphere, B, max_steps=0), "max_steps must be >= 1"),
        (lambda: random_search(K, sphere, B, batch_size=0), "batch_size must be >= 1"),
        (lambda: grid_search(sphere, B, num=-1), "num must be"),
        (lambda: grid_search(sphere, B, batch_size=0), "batch_size must be >= 1"),
        (lambda: genetic_algorithm(K, sphere, B, mutation_rate=-0.1), "mutation_rate must be in"),
        (lambda: genetic_algorithm(K, sphere, B, mutation_rate=np.nan), "mutation_rate"),
        (lambda: genetic_algorithm(K, sphere, B, crossover_rate=1.5), "crossover_rate must be in"),
        (lambda: genetic_algorithm(K, sphere, B, mutation_scale=0.0), "mutation_scale"),
        (lambda: genetic_algorithm(K, sphere, B, mutation_decay=1.5), "mutation_decay"),
        (lambda: genetic_algorithm(K, sphere, B, max_steps=0), "max_steps must be >= 1"),
        (lambda: differential_evolution(K, sphere, B, F=-0.5), "F must be in"),
        (lambda: differential_evolution(K, sphere, B, F=(0.9, 0.5)), "F_min <= F_max"),
        (lambda: differential_evolution(K, sphere, B, CR=-0.1), "CR must be in"),
        (lambda: simulated_annealing(K, sphere, B, T0=-1.0), "T0 must be in"),
        (lambda: simulated_annealing(K, sphere, B, T_end=0.0), "T_end must be in"),
        (lambda: simulated_annealing(K, sphere, B, T0=np.inf), "T0 must be in"),
        (lambda: simulated_annealing(K, sphere, B, step_size=0.0), "step_size must be in"),
        (lambda: particle_swarm(K, sphere, B, w=-0.1), "w must be in"),
        (lambda: particle_swarm(K, sphere, B, c1=-1.0), "c1 must be in"),
        (lambda: particle_swarm(K, sphere, B, v_max=0.0), "v_max must be in"),
        (lambda: gradient_descent(sphere, X0, learning_rate=0.0), "learning_rate must be positive"),
        (lambda: gradient_descent(sphere, X0, learning_rate=-1e-3), "learning_rate"),
        (lambda: gradient_descent(sphere, X0, optimizer="adam"), r"optax\.GradientTransformation"),
        (lambda: gradient_descent(sphere, X0, max_steps=0), "max_steps must be >= 1"),
        (lambda: sgd(K, mse, X0, DATA, batch_size=2, learning_rate=-0.1), "learning_rate"),
        (lambda: sgd(K, mse, X0, DATA, batch_size=0), "batch_size"),
        (lambda: sgd(K, mse, X0, (jnp.ones((8, 2)), jnp.ones(7)), batch_size=2), "same leading"),
        (lambda: bfgs(sphere, X0, gtol=-1.0), "gtol must be >= 0"),
        (lambda: bfgs(sphere, X0, c1=0.5, c2=0.4), "c2 must be in"),
        (lambda: bfgs(sphere, X0, max_steps=0), "max_steps must be >= 1"),
        (lambda: bfgs(sphere, X0, args=3), "args must be a tuple"),
        (lambda: bfgs(lambda x: x, X0), "must return a scalar"),
        (lambda: newton(sphere, X0, step_size=0.0), "step_size must be positive"),
        (lambda: newton(sphere, X0, damping=-1.0), "damping must be >= 0"),
        (lambda: newton(sphere, X0, line_search="exact"), "line_search must be one of"),
        (lambda: bfgs(sphere, X0, norm=3), "norm must be 2 or"),
        (lambda: minimize(lambda x, t: jnp.sum(x**2), X0, 1.0, method="lbfgs"), "method must be"),
        (lambda: minimize(lambda x, t: jnp.sum(x**2), X0, 1.0, linear_solve="qr"), "linear_solve"),
    ],
)
def test_bad_hyper_parameters(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    "call",
    [
        lambda: bfgs(3, X0),
        lambda: newton("f", X0),
        lambda: gradient_descent(None, X0),
        lambda: sgd(K, 3, X0, DATA, batch_size=2),
        lambda: minimize(3, X0, 1.0),
    ],
)
def test_gradient_based_non_callable_objective(call):
    with pytest.raises(TypeError, match="must be callable"):
        call()


def test_nan_objective_statuses_and_throw():
    nan_f = lambda x: jnp.sum(x) * jnp.nan  # noqa: E731
    for method in GF:
        r = GF[method](nan_f, B)
        assert int(r.status) == Status.NONFINITE, method
        assert int(r.n_nonfinite) == int(r.n_evaluations)
    with pytest.raises(RuntimeError, match="NONFINITE"):
        GF["random"](nan_f, B, throw=True)
    # NaN on part of the box: counted, not silent, and the finite optimum is still found
    half = lambda x: jnp.where(x[0] < 0, jnp.nan, jnp.sum(x**2))  # noqa: E731
    r = GF["grid"](half, B)
    assert int(r.status) == Status.SUCCESS and int(r.n_nonfinite) == 9
    for solver in (bfgs, newton, gradient_descent):
        r = solver(lambda x: jnp.sum(jnp.log(x)), jnp.array([-1.0, 2.0]))
        assert int(r.status) == Status.NONFINITE, solver.__name__
        with pytest.raises(RuntimeError, match="non-finite"):
            solver(lambda x: jnp.sum(jnp.log(x)), jnp.array([-1.0, 2.0]), throw=True)
    r = sgd(K, lambda w, b: jnp.mean(b[1]) * jnp.nan + jnp.sum(w), X0, DATA, batch_size=4)
    assert int(r.status) == Status.NONFINITE


def test_traced_bounds_checked_under_jit():
    run = eqx.filter_jit(lambda b: random_search(K, sphere, b, max_steps=2, batch_size=4).f)
    assert np.isfinite(float(run(B)))
    # the equinox runtime error surfaces as JAX's runtime error on CPU callbacks
    with pytest.raises(
        (eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError), match="lower < upper"
    ):
        jax.block_until_ready(run(B[::-1]))


def test_bad_optax_optimizer_object():
    with pytest.raises(ValueError, match=r"optax\.GradientTransformation"):
        gradient_descent(sphere, X0, optimizer=optax.adam)
