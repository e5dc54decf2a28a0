r"""Forward diffusion SDEs ``dx = f(t) x dt + g(t) dw`` with Gaussian marginals.

Every SDE here is linear in ``x`` with a scalar drift coefficient, so the
transition from clean data ``x_0`` to time ``t ∈ [0, 1]`` is Gaussian:

.. math::
    x_t \mid x_0 \sim \mathcal N(\mu(t)\, x_0,\ \sigma(t)^2 I), \qquad
    f(t) = \frac{d \log \mu}{dt}, \qquad
    g(t)^2 = \frac{d\sigma^2}{dt} - 2 f(t)\, \sigma(t)^2 .

The reverse-time SDE (Anderson 1982; Song et al. 2021) and the probability-flow ODE are

.. math::
    dx = [f(t)x - g(t)^2 \nabla_x \log p_t(x)]\,dt + g(t)\, d\bar w, \qquad
    \frac{dx}{dt} = f(t)x - \tfrac12 g(t)^2 \nabla_x \log p_t(x).

* :func:`vp_linear` – variance preserving, ``β(t) = β_min + t(β_max-β_min)``, ``μ² + σ² = 1``
  (Ho et al. 2020 in continuous time).
* :func:`vp_cosine` – variance preserving with the cosine schedule of Nichol & Dhariwal (2021),
  ``μ(t) = cos(ωt + φ)/cos φ``, truncated so that ``μ(1) = mu_min`` (β stays finite).
* :func:`ve` – variance exploding, ``μ = 1``, ``σ(t) = σ_min (σ_max/σ_min)^t``.
* :func:`ddpm_schedule` – the discrete DDPM chain ``x_k = √(1-β_k) x_{k-1} + √β_k ε`` as the
  exact discretisation of a VP SDE on the grid ``t_k = k/K`` (``ᾱ_k = μ(t_k)²``).

Convention: data are assumed standardized (unit variance per component); the terminal
distribution used by the samplers is ``N(0, (μ(1)² + σ(1)²) I)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import check_in_range

ScalarFn = Callable[[Array], Array]


@dataclass(frozen=True, eq=False)
class SDE:
    """A linear forward SDE given by its marginal coefficients (static, close over it in jit).

    Attributes:
        name: ``"vp_linear"``, ``"vp_cosine"``, ``"ve"`` or a custom name.
        log_mean: ``t ↦ log μ(t)``.
        std: ``t ↦ σ(t)`` (marginal std of ``x_t | x_0``).
        drift: ``t ↦ f(t) = d log μ / dt``.
        diffusion: ``t ↦ g(t)``.
        t_min: smallest time used for training / where sampling stops (``σ(t_min) > 0``).
        params: the constructor arguments of a built-in SDE (``vp_linear(**params)``), recorded
            in training checkpoints so :func:`sde_from_params` rebuilds it; ``None`` for a
            custom SDE.
    """

    name: str
    log_mean: ScalarFn
    std: ScalarFn
    drift: ScalarFn
    diffusion: ScalarFn
    t_min: float = 1e-3
    params: dict[str, float] | None = None

    def mean_coef(self, t: Array | float) -> Array:
        """``μ(t)``, the scale of the clean signal at time ``t``."""
        return jnp.exp(self.log_mean(jnp.asarray(t)))

    def marginal(self, x0: Array, t: Array | float) -> tuple[Array, Array]:
        """Mean ``μ(t) x_0`` and std ``σ(t)`` of ``x_t | x_0``."""
        return self.mean_coef(t) * x0, self.std(jnp.asarray(t))

    def perturb(self, key: Array, x0: Array, t: Array | float) -> tuple[Array, Array]:
        """Draw ``x_t = μ(t)x_0 + σ(t) ε``; returns ``(x_t, ε)``."""
        eps = jax.random.normal(key, jnp.shape(x0), jnp.result_type(x0))
        m, s = self.marginal(x0, t)
        return m + s * eps, eps

    def terminal_std(self) -> Array:
        """Std of the terminal reference ``N(0, (μ(1)² + σ(1)²) I)`` (unit-variance data)."""
        return jnp.sqrt(self.mean_coef(1.0) ** 2 + self.std(jnp.asarray(1.0)) ** 2)

    def sample_terminal(self, key: Array, shape: tuple[int, ...], dtype=None) -> Array:
        """Draw ``x_1`` from the terminal reference distribution."""
        dtype = dtype or jnp.result_type(float)
        return self.terminal_std() * jax.random.normal(key, shape, dtype)

    def tweedie(self, x: Array, score: Array, t: Array | float) -> Array:
        r"""Posterior mean ``E[x_0|x_t] = (x_t + σ² ∇log p_t(x_t)) / μ`` (Tweedie's formula)."""
        t = jnp.asarray(t)
        return (x + self.std(t) ** 2 * score) / self.mean_coef(t)


def vp_linear(beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3) -> SDE:
    r"""Variance-preserving SDE with linear ``β(t)``: ``f = -β/2``, ``g = √β``.

    .. math:: \log\mu(t) = -\tfrac12\big(β_{min} t + \tfrac12 (β_{max}-β_{min}) t^2\big),
        \quad σ(t)^2 = 1 - μ(t)^2 .

    Examples:
        >>> sde = vp_linear()
        >>> round(float(sde.mean_coef(0.0)), 6), round(float(sde.std(1.0)), 3)
        (1.0, 1.0)
    """
    if not (0 < beta_min < beta_max < math.inf):
        raise ValueError(f"need 0 < beta_min < beta_max, got {beta_min}, {beta_max}")
    check_in_range("t_min", t_min, 0.0, 0.5, closed_low=False)

    def beta(t):
        return beta_min + t * (beta_max - beta_min)

    def log_mean(t):
        return -0.5 * (beta_min * t + 0.5 * (beta_max - beta_min) * t**2)

    return SDE(
        name="vp_linear",
        log_mean=log_mean,
        std=lambda t: jnp.sqrt(-jnp.expm1(2.0 * log_mean(t))),
        drift=lambda t: -0.5 * beta(t),
        diffusion=lambda t: jnp.sqrt(beta(t)),
        t_min=t_min,
        params={"beta_min": beta_min, "beta_max": beta_max, "t_min": t_min},
    )


def vp_cosine(s: float = 0.008, mu_min: float = 0.02, t_min: float = 1e-3) -> SDE:
    r"""Variance-preserving SDE with the cosine schedule (Nichol & Dhariwal 2021).

    .. math:: μ(t) = \frac{\cos(ωt + φ)}{\cos φ},\ φ = \frac{π}{2}\frac{s}{1+s},\quad
        β(t) = -2\frac{d\log μ}{dt} = 2ω\tan(ωt + φ),

    with ``ω`` chosen so that ``μ(1) = mu_min`` (the original schedule has ``μ(1) = 0`` and
    ``β(1) = ∞``; truncating keeps ``g`` bounded for the samplers).
    """
    check_in_range("mu_min", mu_min, 0.0, 0.5, closed_low=False)
    if not (math.isfinite(s) and s >= 0):
        raise ValueError(f"s must be finite and >= 0, got {s}")
    check_in_range("t_min", t_min, 0.0, 0.5, closed_low=False)
    phi = 0.5 * math.pi * s / (1.0 + s)
    omega = math.acos(mu_min * math.cos(phi)) - phi

    def log_mean(t):
        return jnp.log(jnp.cos(omega * t + phi)) - math.log(math.cos(phi))

    def beta(t):
        return 2.0 * omega * jnp.tan(omega * t + phi)

    return SDE(
        name="vp_cosine",
        log_mean=log_mean,
        std=lambda t: jnp.sqrt(-jnp.expm1(2.0 * log_mean(t))),
        drift=lambda t: -0.5 * beta(t),
        diffusion=lambda t: jnp.sqrt(beta(t)),
        t_min=t_min,
        params={"s": s, "mu_min": mu_min, "t_min": t_min},
    )


def ve(sigma_min: float = 0.01, sigma_max: float = 50.0, t_min: float = 1e-3) -> SDE:
    r"""Variance-exploding SDE (Song et al. 2021): ``f = 0``, ``σ(t) = σ_min (σ_max/σ_min)^t``,
    ``g(t) = σ(t) \sqrt{2 \log(σ_max/σ_min)}``."""
    if not (0 < sigma_min < sigma_max < math.inf):
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    check_in_range("t_min", t_min, 0.0, 0.5, closed_low=False)
    log_ratio = math.log(sigma_max / sigma_min)

    def std(t):
        return sigma_min * jnp.exp(t * log_ratio)

    return SDE(
        name="ve",
        log_mean=lambda t: jnp.zeros_like(t),
        std=std,
        drift=lambda t: jnp.zeros_like(t),
        diffusion=lambda t: std(t) * math.sqrt(2.0 * log_ratio),
        t_min=t_min,
        params={"sigma_min": sigma_min, "sigma_max": sigma_max, "t_min": t_min},
    )


def sde_from_params(name: str, params: dict[str, float]) -> SDE:
    """Rebuild a built-in SDE from its ``name`` and ``params`` (``SDE.name``, ``SDE.params``),
    as recorded in a training checkpoint.

    Examples:
        >>> sde = vp_linear(beta_max=10.0)
        >>> sde_from_params(sde.name, sde.params).params == sde.params
        True
    """
    builders = {"vp_linear": vp_linear, "vp_cosine": vp_cosine, "ve": ve}
    if name not in builders:
        raise ValueError(f"no built-in SDE named {name!r}; choose one of {sorted(builders)}")
    return builders[name](**params)


class DDPMSchedule(NamedTuple):
    """Discrete DDPM chain on ``t_k = k/K``, ``k = 0..K``.

    Attributes:
        t: grid ``(K+1,)``.
        betas: ``β_k``, ``k = 1..K`` (index 0 unused and set to 0), shape ``(K+1,)``.
        alphas_bar: ``ᾱ_k = ∏_{j≤k} (1-β_j) = μ(t_k)²``, shape ``(K+1,)``.
    """

    t: Float[Array, " K1"]
    betas: Float[Array, " K1"]
    alphas_bar: Float[Array, " K1"]


def ddpm_schedule(sde: SDE, n_steps: int) -> DDPMSchedule:
    r"""The DDPM Markov chain ``q(x_k|x_{k-1}) = N(√(1-β_k) x_{k-1}, β_k I)`` matching a VP SDE.

    Choosing ``1 - β_k = μ(t_k)²/μ(t_{k-1})²`` makes the chain's marginals equal to the SDE's
    marginals on the grid, ``x_k | x_0 ~ N(√ᾱ_k x_0, (1-ᾱ_k) I)``, so DDPM is the VP SDE
    observed at ``K`` discrete times (and ``β_k ≈ β(t_k)/K`` for large ``K``).

    Examples:
        >>> sch = ddpm_schedule(vp_linear(), 1000)
        >>> bool(abs(sch.betas[1] - 0.1 / 1000) < 1e-5)
        True
    """
    if not sde.name.startswith("vp"):
        raise ValueError(f"the DDPM chain is a variance-preserving SDE, got sde {sde.name!r}")
    if not isinstance(n_steps, int | np.integer) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    t = jnp.linspace(0.0, 1.0, n_steps + 1)
    log_ab = 2.0 * sde.log_mean(t)
    betas = -jnp.expm1(jnp.diff(log_ab))
    return DDPMSchedule(
        t=t, betas=jnp.concatenate([jnp.zeros(1), betas]), alphas_bar=jnp.exp(log_ab)
    )
