r"""Ensemble score filter (EnSF): a training-free diffusion analysis step.

Bao, Zhang & Zhang (2024), *An ensemble score filter for tracking high-dimensional nonlinear
dynamical systems*, CMAME 432, 117447 (arXiv:2309.00983).

The forecast ensemble ``{x_0^{(j)}}`` is diffused with ``x_t = α(t)x_0 + \sqrt{t}\,ε``,
``α(t) = 1 - (1-ε_α)t`` (:func:`ensf_sde`). Its score is estimated **without training** from
the ensemble itself, then the likelihood score, damped by ``h(t) = 1 - t``, is added and the
reverse SDE is integrated from ``t = 1`` (``x_1 ~ N(0, I)``) to ``t = 0`` with Euler–Maruyama:

.. math::
    s(x, t) = \underbrace{-\sum_j w_j(x, t)\,\frac{x - α(t) x_0^{(j)}}{t}}_{\text{prior score}}
        + h(t)\, \nabla_x \log p(y \mid x),\qquad
    \nabla_x \log p(y\mid x) = J_H(x)^\top R^{-1}(y - H(x)).

``prior_score="mixture"`` (default) uses the Monte-Carlo weights ``w_j ∝ \exp(-\lVert x -
α x_0^{(j)}\rVert^2 / 2t)`` of the paper (Eq. 3.9); ``"paired"`` pairs member ``i`` with its own
forecast (``w_j = δ_{ij}``), as in the authors' Lorenz-96 script: cheaper (``O(N n)`` instead of
``O(N² n)``) but, because the paired prior score ``~1/t`` dominates the damped likelihood as
``t → 0``, it only moves members by a fraction of the Kalman increment for moderate ``R``
(measured in ``tests/test_diffusion_ensf.py``). Both are approximations of the Bayesian update.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_ensemble, check_in_range, check_vector
from ..observations import ObservationModel
from ._sde import SDE


def ensf_sde(eps_alpha: float = 0.05) -> SDE:
    r"""The EnSF forward SDE: ``μ(t) = 1 - (1-ε_α)t``, ``σ(t)² = t``,
    ``f = -(1-ε_α)/μ``, ``g² = 1 - 2 f t``."""
    check_in_range("eps_alpha", eps_alpha, 0.0, 1.0, closed_low=False)
    c = 1.0 - eps_alpha

    def drift(t):
        return -c / (1.0 - c * t)

    return SDE(
        name="ensf",
        log_mean=lambda t: jnp.log1p(-c * t),
        std=lambda t: jnp.sqrt(t),
        drift=drift,
        diffusion=lambda t: jnp.sqrt(1.0 - 2.0 * drift(t) * t),
        t_min=0.0,
    )


def make_ensf(
    obs: ObservationModel,
    *,
    n_steps: int = 100,
    eps_alpha: float = 0.05,
    prior_score: str = "mixture",
    damping: Callable[[Array], Array] | None = None,
) -> Callable[[Array, Float[Array, "N n"], Float[Array, " m"]], Float[Array, "N n"]]:
    r"""Build the EnSF analysis ``analysis(key, E_forecast, y) -> E_analysis``.

    Args:
        obs: observation model (operator ``H`` for one state, possibly nonlinear, and noise).
        n_steps: Euler–Maruyama steps of the reverse SDE (pseudo-time ``1 → 0``).
        eps_alpha: ``α(1) = ε_α``.
        prior_score: ``"paired"`` or ``"mixture"`` (see module docstring).
        damping: ``h(t)`` multiplying the likelihood score (default ``1 - t``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> analysis = make_ensf(observation_model(identity(3), std=0.5), n_steps=20)
        >>> E = jax.random.normal(jax.random.key(0), (10, 3))
        >>> analysis(jax.random.key(1), E, jnp.ones(3)).shape
        (10, 3)
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if prior_score not in ("paired", "mixture"):
        raise ValueError(f"prior_score must be 'paired' or 'mixture', got {prior_score!r}")
    sde = ensf_sde(eps_alpha)
    h_fn = damping if damping is not None else (lambda t: 1.0 - t)
    H, noise = obs.operator.fn, obs.noise

    def lik_score(x, y):
        hx, vjp_fn = jax.vjp(H, x)
        (g,) = vjp_fn(noise.whiten_t(noise.whiten(y - hx)))
        return g

    def analysis(key, E, y):
        check_ensemble(E, "E_forecast", min_members=1)
        check_vector(y, "y", obs.dim)
        dt = 1.0 / n_steps
        k0, k1 = jax.random.split(key)
        x = jax.random.normal(k0, E.shape, E.dtype)

        def prior(x, t):
            a, s2 = sde.mean_coef(t), t
            if prior_score == "paired":
                return -(x - a * E) / s2
            d = x[:, None, :] - a * E[None, :, :]  # (N, J, n)
            logw = -0.5 * jnp.sum(d**2, axis=-1) / s2
            w = jax.nn.softmax(logw, axis=1)
            return -jnp.einsum("ij,ijn->in", w, d) / s2

        def step(x, inp):
            k, t = inp
            g2 = sde.diffusion(t) ** 2
            s = prior(x, t) + h_fn(t) * jax.vmap(lik_score, (0, None))(x, y)
            x = x - dt * (sde.drift(t) * x - g2 * s)
            return x + jnp.sqrt(dt * g2) * jax.random.normal(k, x.shape, x.dtype), None

        ts = 1.0 - dt * jnp.arange(n_steps)
        x, _ = jax.lax.scan(step, x, (jax.random.split(k1, n_steps), ts))
        return x

    return analysis
