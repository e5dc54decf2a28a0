"""Optimizers: six gradient-free methods and four gradient-based ones, all pure JAX.

Gradient-free (``method(key, objective, bounds, ..., max_steps=..., throw=False) ->
GradientFreeResult``, a fixed-length ``lax.scan``, so they vmap over restarts and problems):
:func:`grid_search` (deterministic: ``grid_search(objective, bounds, ...)``, no key),
:func:`random_search`, :func:`genetic_algorithm`, :func:`differential_evolution`,
:func:`simulated_annealing`, :func:`particle_swarm`.

Gradient-based (``-> OptimizeResult`` with a :class:`jaxda.core.Status` that travels under jit):
:func:`gradient_descent` and :func:`sgd` (any optax transformation), :func:`newton`
(``jax.hessian``), :func:`bfgs` (strong-Wolfe line search), :func:`lbfgs` (limited memory, for
large ``n``), and :func:`minimize`, which is
differentiable through the argmin by the implicit function theorem.

One convention for every result: optimum ``x``, value ``f``, ``n_steps`` (the cap argument is
``max_steps``), ``n_evaluations``, per-step ``history`` (:class:`History`) and ``status``
(:class:`jaxda.core.Status`); every solver takes ``throw=False`` (``True``: raise through
:func:`jaxda.core.raise_on_failure` unless ``SUCCESS``).
"""

from ._annealing import metropolis_accept, simulated_annealing
from ._annealing import temperature as annealing_temperature
from ._bfgs import bfgs
from ._bounds import apply_bounds, bounds_from_pairs, check_bounds, reflect
from ._differential_evolution import differential_evolution
from ._genetic import genetic_algorithm
from ._gradient import gradient_descent, sgd
from ._grid import grid_search
from ._implicit import minimize
from ._lbfgs import lbfgs
from ._linesearch import LineSearchResult, backtracking_armijo, strong_wolfe
from ._multistart import multistart
from ._newton import newton, newton_direction
from ._pso import particle_swarm
from ._random_search import random_search
from ._result import GradientFreeResult, History, evaluations_to_target
from ._status import OptimizeResult
from ._test_functions import (
    PROBLEM_NAMES,
    Problem,
    ackley,
    benchmark_problem,
    rastrigin,
    rosenbrock,
    sphere,
)

__all__ = [
    "PROBLEM_NAMES",
    "GradientFreeResult",
    "History",
    "LineSearchResult",
    "OptimizeResult",
    "Problem",
    "ackley",
    "annealing_temperature",
    "apply_bounds",
    "backtracking_armijo",
    "benchmark_problem",
    "bfgs",
    "bounds_from_pairs",
    "check_bounds",
    "differential_evolution",
    "evaluations_to_target",
    "genetic_algorithm",
    "gradient_descent",
    "grid_search",
    "lbfgs",
    "metropolis_accept",
    "minimize",
    "multistart",
    "newton",
    "newton_direction",
    "particle_swarm",
    "random_search",
    "rastrigin",
    "reflect",
    "rosenbrock",
    "sgd",
    "simulated_annealing",
    "sphere",
    "strong_wolfe",
]
