r"""Covariance inflation applied to the analysis ensemble (as in DAPPER's post-processing)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import check_in_range, is_concrete, positive_or_error
from ._core import mean_and_anomalies


def inflate(E: Float[Array, "N n"], factor: float | Array) -> Float[Array, "N n"]:
    r"""Multiplicative inflation of the anomalies: :math:`x_i ← x̄ + a\,(x_i - x̄)`.

    ``factor = a`` scales the covariance by ``a²``; ``a = 1`` is a no-op. ``factor``
    may be traced, so it can be vmapped over (a traced non-positive factor raises at run time).
    """
    factor = positive_or_error("inflation factor", factor)
    mean, A = mean_and_anomalies(E)
    return mean + factor * A


def rtps(
    E_analysis: Float[Array, "N n"], E_forecast: Float[Array, "N n"], alpha: float | Array
) -> Float[Array, "N n"]:
    r"""Relaxation to prior spread (Whitaker & Hamill 2012).

    Per variable, :math:`σ_a ← σ_a + α(σ_f - σ_a)`, i.e. analysis anomalies are
    multiplied by :math:`α σ_f/σ_a + 1 - α`. ``alpha = 0`` is a no-op, and so is a
    single-member "ensemble" (no spread to relax to, e.g. 3D-Var in the twin driver).
    """
    if is_concrete(alpha):
        check_in_range("rtps alpha", float(alpha), 0.0, 1.0)
    else:
        alpha = eqx.error_if(alpha, (alpha < 0) | (alpha > 1), "rtps alpha must be in [0, 1]")
    if E_analysis.shape[0] < 2:
        return E_analysis
    mean, A = mean_and_anomalies(E_analysis)
    sa = jnp.std(E_analysis, axis=0, ddof=1)
    sf = jnp.std(E_forecast, axis=0, ddof=1)
    factor = alpha * sf / jnp.where(sa > 0, sa, 1.0) + 1.0 - alpha
    return mean + A * factor
