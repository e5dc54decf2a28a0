r"""Example inverse problems for the ensemble smoothers.

Each builder returns an :class:`InverseProblem`: a forward model ``g`` written for
one parameter vector (or pytree), data ``y``, observation noise, the true
parameters and a prior sampler ``sample_prior(key, N)``. They are plain static
containers (close over them in jitted code), like :class:`jaxda.models.Model`.

* :func:`linear_gaussian_problem`: ``y = G x + ε`` with a Gaussian prior; the exact
  posterior is given by :func:`linear_gaussian_posterior` (dense conditioning).
* :func:`nonlinear_scalar_problem`: ``g(x) = x + β x³`` observed ``m`` times; its
  posterior is one-dimensional, so a dense grid gives a reference
  (:func:`grid_posterior`).
* :func:`lorenz96_parameter_problem`: estimate the Lorenz-96 forcing ``F`` and the
  initial state ``x_0`` from a noisy, partially observed trajectory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float

from ..core import check_in_range, positive_or_error
from ..models import lorenz96_rhs, rk4_step
from ..observations import DiagonalNoise, FullNoise, gaussian_noise
from ._esmda import _check_key, _check_positive_int

__all__ = [
    "InverseProblem",
    "grid_posterior",
    "linear_gaussian_posterior",
    "linear_gaussian_problem",
    "lorenz96_parameter_problem",
    "nonlinear_scalar_problem",
]


@dataclass(frozen=True, eq=False)
class InverseProblem:
    """An inverse problem ``y = g(x) + ε``, ``ε ~ N(0, R)``, with a prior.

    Attributes:
        forward: ``g(x) -> (m,)`` for one parameter vector / pytree.
        y: observed data ``(m,)``.
        noise: observation noise (``R``).
        truth: the parameters that generated ``y``.
        sample_prior: ``sample_prior(key, N)`` draws a members-first prior ensemble.
        prior_mean: prior mean (flat vector or pytree).
        prior_std: prior standard deviations (same structure as ``prior_mean``).
        name: short name.
        extra: problem-specific data (e.g. the matrix ``G``, observation times).
    """

    forward: Callable[[Any], Array]
    y: Float[Array, " m"]
    noise: DiagonalNoise | FullNoise
    truth: Any
    sample_prior: Callable[[Array, int], Any]
    prior_mean: Any
    prior_std: Any
    name: str
    extra: dict


def linear_gaussian_posterior(
    G: Float[Array, "m n"],
    y: Float[Array, " m"],
    R: Float[Array, "m m"],
    prior_mean: Float[Array, " n"],
    prior_cov: Float[Array, "n n"],
) -> tuple[Float[Array, " n"], Float[Array, "n n"]]:
    r"""Exact Gaussian posterior of ``y = G x + ε`` (dense, for small problems and tests).

    .. math:: μ_a = μ + P Gᵀ (G P Gᵀ + R)^{-1}(y - Gμ),\quad
              P_a = P - P Gᵀ (G P Gᵀ + R)^{-1} G P

    computed with a Cholesky solve (no explicit inverse).

    Examples:
        >>> mean, cov = linear_gaussian_posterior(jnp.eye(1), jnp.array([2.0]), jnp.eye(1),
        ...                                       jnp.zeros(1), jnp.eye(1))
        >>> jnp.round(mean, 6).tolist(), jnp.round(cov, 6).tolist()
        ([1.0], [[0.5]])
    """
    G, y, R = jnp.asarray(G), jnp.asarray(y), jnp.asarray(R)
    prior_mean, prior_cov = jnp.asarray(prior_mean), jnp.asarray(prior_cov)
    if G.ndim != 2:
        raise ValueError(f"G must be an (m, n) matrix, got shape {G.shape}")
    m, n = G.shape
    for name, arr, shape in (
        ("y", y, (m,)),
        ("R", R, (m, m)),
        ("prior_mean", prior_mean, (n,)),
        ("prior_cov", prior_cov, (n, n)),
    ):
        if arr.shape != shape:
            raise ValueError(
                f"{name} must have shape {shape} for G of shape {G.shape}, got {arr.shape}"
            )
    PGt = prior_cov @ G.T
    C = G @ PGt + R
    cf = jsl.cho_factor(C, lower=True)
    mean = prior_mean + PGt @ jsl.cho_solve(cf, y - G @ prior_mean)
    cov = prior_cov - PGt @ jsl.cho_solve(cf, PGt.T)
    return mean, 0.5 * (cov + cov.T)


def linear_gaussian_problem(
    key: Array, n: int = 10, m: int = 5, obs_std: float = 0.5, prior_std: float = 1.0
) -> InverseProblem:
    r"""Random linear-Gaussian problem ``y = G x + ε``, ``x ~ N(0, σ_x² I)``.

    ``G`` has i.i.d. ``N(0, 1/n)`` entries; the truth is a prior draw. The exact
    posterior is ``linear_gaussian_posterior(G, y, R, 0, σ_x² I)`` (see ``extra``).

    Examples:
        >>> p = linear_gaussian_problem(jax.random.key(0), n=4, m=3)
        >>> p.sample_prior(jax.random.key(1), 10).shape, p.y.shape
        ((10, 4), (3,))
    """
    _check_key(key)
    _check_positive_int("n", n)
    _check_positive_int("m", m)
    positive_or_error("obs_std", obs_std)
    positive_or_error("prior_std", prior_std)
    kG, kx, ke = jax.random.split(key, 3)
    G = jax.random.normal(kG, (m, n)) / jnp.sqrt(float(n))
    truth = prior_std * jax.random.normal(kx, (n,))
    noise = gaussian_noise(std=obs_std, dim=m)
    y = G @ truth + noise.sample(ke)
    mean0 = jnp.zeros(n)
    std0 = jnp.full((n,), float(prior_std))

    def sample_prior(k, N):
        return std0 * jax.random.normal(k, (N, n))

    post_mean, post_cov = linear_gaussian_posterior(G, y, noise.cov(), mean0, jnp.diag(std0**2))
    return InverseProblem(
        forward=lambda x: G @ x,
        y=y,
        noise=noise,
        truth=truth,
        sample_prior=sample_prior,
        prior_mean=mean0,
        prior_std=std0,
        name="linear-gaussian",
        extra={"G": G, "posterior_mean": post_mean, "posterior_cov": post_cov},
    )


def nonlinear_scalar_problem(
    key: Array,
    truth: float = 1.0,
    beta: float = 0.2,
    m: int = 3,
    obs_std: float = 0.5,
    prior_mean: float = 0.0,
    prior_std: float = 1.0,
) -> InverseProblem:
    r"""Scalar ``x`` observed ``m`` times through ``g(x) = x + β x³`` (Evensen 2018/2019 style).

    Prior ``x ~ N(μ_0, σ_0²)``; data ``y = g(x_true) 1_m + ε`` with ``ε ~ N(0, θ² I)``
    drawn from ``key``. The posterior density ``∝ N(x; μ_0, σ_0²) Π_k N(y_k; g(x), θ²)`` is
    one-dimensional: :func:`grid_posterior` integrates it on a dense grid.

    Examples:
        >>> p = nonlinear_scalar_problem(jax.random.key(0))
        >>> [round(v, 6) for v in p.forward(jnp.array([1.0])).tolist()]
        [1.2, 1.2, 1.2]
    """
    _check_key(key)
    _check_positive_int("m", m)
    positive_or_error("obs_std", obs_std)
    positive_or_error("prior_std", prior_std)
    check_in_range("beta", beta, 0.0, float("inf"), closed_high=False)
    check_in_range("truth", truth, -float("inf"), float("inf"), closed_low=False, closed_high=False)
    check_in_range(
        "prior_mean", prior_mean, -float("inf"), float("inf"), closed_low=False, closed_high=False
    )

    def forward(x):
        return jnp.full((m,), 1.0) * (x[0] + beta * x[0] ** 3)

    noise = gaussian_noise(std=obs_std, dim=m)
    x_true = jnp.array([float(truth)])
    y = forward(x_true) + noise.sample(key)

    def sample_prior(k, N):
        return prior_mean + prior_std * jax.random.normal(k, (N, 1))

    return InverseProblem(
        forward=forward,
        y=y,
        noise=noise,
        truth=x_true,
        sample_prior=sample_prior,
        prior_mean=jnp.array([float(prior_mean)]),
        prior_std=jnp.array([float(prior_std)]),
        name="nonlinear-scalar",
        extra={"beta": beta},
    )


def grid_posterior(
    problem: InverseProblem, lo: float = -6.0, hi: float = 6.0, n_grid: int = 20001
) -> dict[str, Array]:
    """Reference posterior of a scalar problem by dense-grid quadrature.

    Returns ``{"grid", "density", "mean", "std"}`` (density normalized on the grid).

    Examples:
        >>> ref = grid_posterior(nonlinear_scalar_problem(jax.random.key(0)), n_grid=2001)
        >>> ref["density"].shape
        (2001,)
    """
    if not isinstance(problem, InverseProblem):
        raise TypeError(f"problem must be an InverseProblem, got {type(problem).__name__}")
    if jnp.shape(problem.truth) != (1,):
        raise ValueError("grid_posterior needs a scalar (1-D) parameter problem")
    check_in_range("lo", lo, -float("inf"), float("inf"), closed_low=False, closed_high=False)
    check_in_range("hi", hi, lo, float("inf"), closed_low=False, closed_high=False)
    if not isinstance(n_grid, int) or isinstance(n_grid, bool) or n_grid < 3:
        raise ValueError(f"n_grid must be an integer >= 3, got {n_grid!r}")

    @jax.jit
    def compute(grid):
        mu0 = problem.prior_mean[0]
        s0 = problem.prior_std[0]
        log_prior = -0.5 * ((grid - mu0) / s0) ** 2
        log_lik = jax.vmap(lambda x: problem.noise.log_prob(problem.y - problem.forward(x[None])))(
            grid
        )
        logp = log_prior + log_lik
        w = jnp.exp(logp - jnp.max(logp))
        dx = grid[1] - grid[0]
        density = w / (jnp.sum(w) * dx)
        mean = jnp.sum(grid * density) * dx
        std = jnp.sqrt(jnp.sum((grid - mean) ** 2 * density) * dx)
        return {"grid": grid, "density": density, "mean": mean, "std": std}

    return compute(jnp.linspace(lo, hi, n_grid))


def lorenz96_parameter_problem(
    key: Array,
    n: int = 20,
    forcing: float = 8.0,
    dt: float = 0.05,
    n_steps: int = 20,
    obs_every: int = 2,
    obs_stride: int = 2,
    obs_std: float = 1.0,
    prior_forcing: tuple[float, float] = (6.5, 1.5),
    prior_state_std: float = 1.0,
    spinup: int = 200,
) -> InverseProblem:
    r"""Estimate the Lorenz-96 forcing ``F`` and the initial state ``x_0`` from a noisy trajectory.

    Parameters are the pytree ``{"forcing": (), "x0": (n,)}``. The truth starts on
    the attractor (``spinup`` steps from the model's reference state); the forward
    model integrates ``n_steps`` RK4 steps with the member's forcing and returns every
    ``obs_stride``-th variable every ``obs_every`` steps (flattened, time-major). The
    prior is ``F ~ N(prior_forcing)`` and ``x_0 ~ N(x_b, σ_b² I)`` with a background
    ``x_b = x_0^{true} + σ_b ξ`` (so the prior mean is *not* the truth).

    Examples:
        >>> p = lorenz96_parameter_problem(jax.random.key(0), n=8, n_steps=4)
        >>> p.forward(p.truth).shape
        (8,)
    """
    _check_key(key)
    for name, value in (("n", n), ("n_steps", n_steps), ("obs_every", obs_every)):
        _check_positive_int(name, value)
    _check_positive_int("obs_stride", obs_stride)
    if n < 4:
        raise ValueError(f"Lorenz-96 needs n >= 4 variables, got n={n}")
    if not isinstance(spinup, int) or isinstance(spinup, bool) or spinup < 0:
        raise ValueError(f"spinup must be a non-negative integer, got {spinup!r}")
    positive_or_error("dt", dt)
    if len(prior_forcing) != 2:
        raise ValueError(f"prior_forcing must be (mean, std), got {prior_forcing!r}")
    if n_steps % obs_every:
        raise ValueError(f"n_steps ({n_steps}) must be a multiple of obs_every ({obs_every})")
    positive_or_error("obs_std", obs_std)
    positive_or_error("prior_state_std", prior_state_std)
    positive_or_error("prior forcing std", prior_forcing[1])
    idx = jnp.arange(0, n, obs_stride)
    n_obs_times = n_steps // obs_every

    def integrate(x0, F, steps):
        def body(x, _):
            x = rk4_step(lambda z: lorenz96_rhs(z, F), x, dt)
            return x, x

        return jax.lax.scan(body, x0, None, length=steps)[1]

    def forward(params):
        xs = integrate(params["x0"], params["forcing"], n_steps)
        return xs[obs_every - 1 :: obs_every][:, idx].ravel()

    k_b, k_obs, _ = jax.random.split(key, 3)
    x_start = jnp.zeros(n).at[0].set(1.0)
    x0_true = integrate(x_start, forcing, spinup)[-1]
    truth = {"forcing": jnp.asarray(float(forcing)), "x0": x0_true}
    m = int(idx.size) * n_obs_times
    noise = gaussian_noise(std=obs_std, dim=m)
    y = forward(truth) + noise.sample(k_obs)
    x_b = x0_true + prior_state_std * jax.random.normal(k_b, (n,))
    f_mean, f_std = float(prior_forcing[0]), float(prior_forcing[1])

    def sample_prior(k, N):
        kf, kx = jax.random.split(k)
        return {
            "forcing": f_mean + f_std * jax.random.normal(kf, (N,)),
            "x0": x_b + prior_state_std * jax.random.normal(kx, (N, n)),
        }

    return InverseProblem(
        forward=forward,
        y=y,
        noise=noise,
        truth=truth,
        sample_prior=sample_prior,
        prior_mean={"forcing": jnp.asarray(f_mean), "x0": x_b},
        prior_std={"forcing": jnp.asarray(f_std), "x0": jnp.full((n,), float(prior_state_std))},
        name="lorenz96-parameters",
        extra={
            "obs_indices": idx,
            "obs_times": dt * jnp.arange(obs_every, n_steps + 1, obs_every),
            "integrate": integrate,
            "dt": dt,
        },
    )
