r"""Adaptive multiplicative inflation: estimate ``λ²`` from the innovations, smoothed in time.

The forecast ensemble's covariance is assumed to be right up to a factor: the true forecast
error covariance is ``θ P^f`` with ``θ = λ²`` (``λ`` scales the anomalies). In whitened
observation space, with the whitened scaled observation anomalies ``S`` (``N×m``) and the
whitened innovation ``d = R^{-1/2}(y - \overline{H(x^f)})``, this says
``d ~ N(0, I_m + θ SᵀS)``. With the singular values ``σ_i`` of ``S`` (``λ_i = σ_i²``) and the
components ``c_i`` of ``d`` along its right singular vectors, the log-likelihood of ``θ`` is

.. math::
    \ell(θ) = -\tfrac12 \sum_i \Big[\log(1 + θλ_i) + \frac{c_i^2}{1 + θλ_i}\Big],

with score and Fisher information

.. math::
    U(θ) = \tfrac12 \sum_i \frac{λ_i (c_i^2 - 1 - θλ_i)}{(1+θλ_i)^2},\qquad
    F(θ) = \tfrac12 \sum_i \frac{λ_i^2}{(1+θλ_i)^2}.

Only the ``rank(S) <= N - 1`` directions spanned by the ensemble carry information on ``θ``;
the ``m - rank`` others hold pure observation noise, which the innovation-variance
(Desroziers) estimate ``θ̂ = (|d|² - m)/tr(SᵀS)`` of Li, Kalnay & Miyoshi (2009) counts in its
numerator. Near ``θ̂`` one Fisher-scoring step is this estimate with the optimal weights.

One cycle's information is small when the observation noise dominates (on the Lorenz-96
benchmark ``F ≈ 0.1-0.3``: a single-cycle estimate has a standard deviation of about 2), so
the estimate is accumulated over cycles as a Gaussian belief ``θ ~ N(θ_k, 1/P_k)``
(Anderson 2007, 2009, here with all observations at once and the exact Gaussian likelihood):

.. math::
    P^f = ρ P_{k-1},\qquad
    P_k = P^f + F(θ_{k-1}),\qquad
    θ_k = θ_{k-1} + U(θ_{k-1}) / P_k,

clipped to ``[λ_min², λ_max²]``. ``ρ = 1 - 1/τ`` forgets old cycles with a memory of about
``τ`` cycles (in steady state ``P ≈ τ F``, so the estimate averages about the last ``τ``
cycles). The only setting is that memory: long enough to average out the observation noise,
shorter than the time over which the needed inflation changes; the default ``τ = 1000``
cycles is not tuned per problem.

Why this scheme: the Desroziers ratio estimate (Li et al. 2009) is cheap but noisy, and its
temporal smoothing needs a tuned error variance; Anderson's (2009) Bayesian scheme assimilates
observations one at a time with an approximate likelihood and a tuned inflation standard
deviation. Here the likelihood is exact (Gaussian, all observations at once, in ensemble
space) and the accumulation is an exponential forgetting whose one setting, the memory, is
not sensitive (the README's benchmark section shows a memory scan on Lorenz-96).

Everything is computed in ensemble space from one eigen-decomposition of the ``N×N`` matrix
``SSᵀ`` (or the ``m×m`` ``SᵀS`` when ``m < N``). Missing observations have zero columns in
``S`` and zero entries in ``d``, so they carry no information.

References:
    Anderson (2007), *Tellus* 59A, 210-224; Anderson (2009), *Tellus* 61A, 72-83;
    Li, Kalnay & Miyoshi (2009), *Q. J. R. Meteorol. Soc.* 135, 523-533;
    Desroziers, Berre, Chapnik & Poli (2005), *Q. J. R. Meteorol. Soc.* 131;
    Miyoshi (2011), *Mon. Wea. Rev.* 139, 1519-1535.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._core import innovation_spectrum


class InflationEstimate(NamedTuple):
    """The Gaussian belief on the covariance inflation ``θ = λ²``.

    Attributes:
        theta: its mean (the anomaly inflation factor is ``√θ``).
        precision: its precision ``1/var(θ)``.
    """

    theta: Float[Array, ""]
    precision: Float[Array, ""]


def inflation_score(
    S: Float[Array, "N m"], d: Float[Array, " m"], theta: Float[Array, ""] | float
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Score ``U(θ)`` and Fisher information ``F(θ)`` of the covariance inflation ``θ`` given
    the whitened scaled anomalies ``S`` (``N×m``) and whitened innovation ``d`` (module
    docstring), from the ``N×N`` or ``m×m`` eigen-problem, whichever is smaller.

    Examples:
        >>> import jax.numpy as jnp
        >>> S = jnp.array([[1.0, 0.0], [-1.0, 0.0]]) / jnp.sqrt(2.0)   # λ = 1 along x
        >>> U, F = inflation_score(S, jnp.array([2.0, 5.0]), 1.0)   # c² = 4 along x
        >>> round(float(U), 12), round(float(F), 12)          # ½(4-2)/4, ½/4
        (0.25, 0.125)
    """
    lam, _, q = innovation_spectrum(S, d)  # q_i = λ_i c_i²
    den = 1.0 + theta * lam
    score = 0.5 * jnp.sum((q - lam - theta * lam**2) / den**2)
    fisher = 0.5 * jnp.sum(lam**2 / den**2)
    return score, fisher


def check_adaptive_options(memory, min_inflation, max_inflation, initial, initial_std) -> None:
    """Eager validation of the options of the adaptive inflation (``ValueError`` naming the
    argument)."""
    for name, v in (
        ("memory", memory),
        ("min_inflation", min_inflation),
        ("initial", initial),
        ("initial_std", initial_std),
    ):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    if memory < 1:
        raise ValueError(f"memory must be >= 1 cycle, got {memory!r}")
    if max_inflation is not None and (
        isinstance(max_inflation, bool)
        or not isinstance(max_inflation, int | float)
        or not max_inflation > min_inflation
    ):
        raise ValueError(
            f"max_inflation must be None or a number > min_inflation={min_inflation}, "
            f"got {max_inflation!r}"
        )
    if not min_inflation <= initial <= (math.inf if max_inflation is None else max_inflation):
        raise ValueError(
            f"initial={initial} must lie in [min_inflation, max_inflation] = "
            f"[{min_inflation}, {max_inflation}]"
        )


def update_inflation_estimate(
    estimate: InflationEstimate,
    S: Float[Array, "N m"],
    d: Float[Array, " m"],
    *,
    memory: float = 1000.0,
    min_inflation: float = 1.0,
    max_inflation: float | None = None,
) -> InflationEstimate:
    r"""One cycle of the time-smoothed inflation estimate (module docstring): forget with
    ``ρ = 1 - 1/memory``, then one Fisher-scoring step with this cycle's innovation,
    clipped to ``[min_inflation², max_inflation²]``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> S = jax.random.normal(jax.random.key(0), (10, 5)) / 3.0
        >>> d = 3.0 * jax.random.normal(jax.random.key(1), (5,))   # innovations too large
        >>> est = InflationEstimate(jnp.asarray(1.0), jnp.asarray(1.0))
        >>> bool(update_inflation_estimate(est, S, d).theta > 1.0)
        True
    """
    check_adaptive_options(memory, min_inflation, max_inflation, 1.0 * min_inflation, 1.0)
    theta, prec = estimate
    score, fisher = inflation_score(S, d, theta)
    prec = (1.0 - 1.0 / memory) * prec + fisher
    theta = theta + score / prec
    hi = jnp.inf if max_inflation is None else max_inflation**2
    theta = jnp.clip(theta, min_inflation**2, hi)
    return InflationEstimate(theta.astype(S.dtype), prec.astype(S.dtype))
