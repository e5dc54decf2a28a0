r"""Sequential ensemble smoothers: the ensemble Kalman smoother (EnKS, fixed lag or whole
window) and the ensemble Rauch–Tung–Striebel smoother (EnRTS).

**EnKS** (Evensen & van Leeuwen 2000). Every ensemble Kalman analysis is a linear map in
ensemble space: with the forecast ensemble ``E^f`` (``N×n``), its mean ``x̄`` and unscaled
anomalies ``A = E^f - x̄``, the analysis is

.. math::
    \text{sqrt (ETKF):}\quad E^a = x̄ + \frac{wᵀA}{\sqrt{N-1}} + T A,\qquad
    \text{pertobs (EnKF):}\quad E^a = E^f + C\,\frac{A}{\sqrt{N-1}},

with the ETKF mean weights ``w`` and symmetric square root ``T`` (:func:`etkf_update`), or the
perturbed-observation coefficients ``C = D_w Sᵀ (I_N + S Sᵀ)^{-1}`` (:func:`kalman_increments`;
both ``N×N``, never formed when ``m < N``; ``S`` the whitened scaled observation anomalies,
row ``i`` of ``D_w`` the whitened perturbed innovation ``R^{-1/2}(y + ε_i - H(x_i))``). ``w``,
``T`` and ``C`` are computed from the forecast at the current observation time only. The EnKS
applies **the same** map to the analyses kept at the previous ``L`` observation times: since the
update of ``x_j`` by ``y_k`` is the regression ``Cov(x_j, Hx_k)(HP_kHᵀ + R)^{-1}`` and the
ensemble estimates this covariance from the same members, the lagged ensembles
``E_j, j = k-L..k-1`` are updated by replacing ``A`` with their own anomalies. In practice the
``L+1`` ensembles are laid side by side as one ``N×(L+1)n`` ensemble (DAPPER's reshaping), so
the existing ETKF/EnKF algebra serves unchanged and no ``n×n`` matrix is formed: a step costs
``O(N²(L+1)n + N²m)``, or ``O(N m (L+1)n + N m²)`` when ``m < N``.

After the step at time ``k`` the ensemble at time ``k-L`` is final (it has seen every
observation up to time ``k = (k-L) + L``) and leaves the buffer; ``lag = 0`` is the filter, and
``lag >= K-1`` smooths over the whole window of ``K`` observation times. The driver only
keeps the state, so the smoothed series is collected with a ``record``::

    final, hist = assimilate(key, enks(lag), model, obs, E0, record=enks_record)
    E_smooth = smoothed_ensembles(hist.record, final)  # (K, N, n)

**EnRTS** (Raanes 2016; DAPPER's ``EnRTS``). A backward pass over the forecast and analysis
ensembles of a filter run: with the anomalies ``A^a_k`` and ``A^f_{k+1}``,

.. math::
    E^s_K = E^a_K,\qquad
    E^s_k = E^a_k + δ\,(E^s_{k+1} - E^f_{k+1})\,(A^f_{k+1})^{+} A^a_k ,

where ``(A^f)^+ A^a`` is the least-squares regression of the analysis anomalies at ``k`` on
the forecast anomalies at ``k+1`` (the ensemble estimate of the RTS gain
``P^a_k Mᵀ (P^f_{k+1})^{-1}``, transposed) and ``δ`` is DAPPER's ``DeCorr`` factor. The
pseudo-inverse comes from the thin SVD of the ``N×n`` forecast anomalies, and the product is
taken as ``[(E^s - E^f) V Σ^{-1} Uᵀ] A^a``: an ``N×N`` matrix times ``A^a``, never ``n×n``.

References:
    Evensen & van Leeuwen (2000), *An ensemble Kalman smoother for nonlinear dynamics*,
    Mon. Wea. Rev. 128, 1852–1867.
    Evensen (2009), *Data Assimilation: The Ensemble Kalman Filter*, 2nd ed., Springer.
    Raanes (2016), *On the ensemble Rauch–Tung–Striebel smoother and its equivalence to the
    ensemble Kalman smoother*, Q. J. R. Meteorol. Soc. 142, 1259–1264.
    DAPPER ``da_methods.ensemble.EnKS`` and ``EnRTS`` (Raanes et al.).
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import (
    Method,
    analysis_info,
    check_ensemble,
    check_in_range,
    check_vector,
    is_concrete,
    positive_or_error,
)
from ..observations import fill_missing
from ._core import kalman_increments, mean_and_anomalies, obs_space, scaled_anomalies
from ._enkf import perturbed_observations
from ._etkf import etkf_update
from ._inflation import inflate

UPDATES = ("sqrt", "pertobs")


class EnKSState(NamedTuple):
    """State of :func:`enks` after the step at observation time ``k`` (lag ``L``).

    Attributes:
        ensemble: the filter analysis at time ``k`` ``(N, n)`` (what the driver forecasts).
        lagged: ``(L, N, n)`` analyses at times ``k-L+1, …, k`` (oldest first; the last one
            is the analysis at ``k``), each smoothed with the observations up to ``k``. Before
            ``L`` steps the oldest entries are copies of the initial ensemble.
        smoothed: the ensemble at time ``k-L``, smoothed with the observations up to ``k``: it
            is final and has just left the buffer (the analysis at ``k`` when ``L = 0``). Store
            it at every time with ``record=enks_record``.
    """

    ensemble: Float[Array, "N n"]
    lagged: Float[Array, "L N n"]
    smoothed: Float[Array, "N n"]


def _side_by_side(stack: Float[Array, "J N n"]) -> Float[Array, "N Jn"]:
    """``J`` ensembles ``(J, N, n)`` as one ensemble ``(N, J·n)`` (members kept as rows)."""
    J, N, n = stack.shape
    return jnp.transpose(stack, (1, 0, 2)).reshape(N, J * n)


def _unstack(flat: Float[Array, "N Jn"], J: int) -> Float[Array, "J N n"]:
    """Inverse of :func:`_side_by_side`."""
    N = flat.shape[0]
    return jnp.transpose(flat.reshape(N, J, -1), (1, 0, 2))


def _check_lag(lag) -> int:
    if isinstance(lag, bool) or not isinstance(lag, numbers.Integral):
        raise ValueError(f"lag must be a non-negative int, got {lag!r}")
    if lag < 0:
        raise ValueError(f"lag must be a non-negative int (0 = the filter), got {lag}")
    return int(lag)


def enks(
    lag: int, *, update: str = "sqrt", center_perturbations: bool = True, inflation: float = 1.0
) -> Method:
    r"""The ensemble Kalman smoother with a fixed ``lag`` as a :class:`jaxda.core.Method`.

    At each observation time the analysis of the current forecast (ETKF square root for
    ``update="sqrt"``, perturbed-observation EnKF for ``update="pertobs"``) is written as an
    ensemble-space transform, and the same transform updates the analyses of the previous
    ``lag`` observation times (module docstring). ``lag = 0`` is exactly
    :func:`jaxda.ensemble.etkf` / :func:`jaxda.ensemble.enkf`; ``lag >= K-1`` smooths the
    whole window of ``K`` observation times. Missing observations (``NaN``) drop out of the
    transform, hence of every lagged update. Collect the smoothed ensembles with
    ``record=enks_record`` and :func:`smoothed_ensembles`.

    ``inflation`` inflates the current analysis where it is forecast *and* where it is
    buffered (DAPPER's ``EnKS(infl=)``), so later smoother increments act on the ensemble that
    was forecast. The inflation, RTPS and rotation wrappers act on ``state.ensemble`` only and
    would desynchronize the buffer: they refuse an EnKS.

    Args:
        lag: number of past observation times updated by each analysis (a non-negative int).
        update: ``"sqrt"`` (deterministic ETKF transform; the key is unused) or
            ``"pertobs"`` (stochastic EnKF with perturbed observations).
        center_perturbations: with ``"pertobs"``, remove the sample mean of the observation
            perturbations (as :func:`jaxda.ensemble.enkf`).
        inflation: multiplicative inflation of the current analysis anomalies (positive).

    Raises:
        ValueError: ``lag`` not a non-negative int, or ``update`` not one of the two.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.assimilate import assimilate
        >>> from jaxda.models import Lorenz63
        >>> from jaxda.observations import identity, observation_model, observation_series
        >>> model = Lorenz63()
        >>> obs = observation_series(jnp.ones((6, 3)), observation_model(identity(3), obs_std=1.0),
        ...                          n_steps=5)
        >>> E0 = model.x0 + jax.random.normal(jax.random.key(0), (8, 3))
        >>> final, hist = assimilate(jax.random.key(1), enks(2), model, obs, E0,
        ...                          record=enks_record)
        >>> final.lagged.shape, smoothed_ensembles(hist.record, final).shape
        ((2, 8, 3), (6, 8, 3))
    """
    L = _check_lag(lag)
    if update not in UPDATES:
        raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
    if is_concrete(inflation):
        positive_or_error("inflation factor", inflation)

    def init(ensemble, obs=None) -> EnKSState:
        del obs
        check_ensemble(ensemble)
        E = jnp.asarray(ensemble)
        return EnKSState(E, jnp.broadcast_to(E, (L, *E.shape)), E)

    def step(key, state, y, obs):
        Ef = state.ensemble
        check_ensemble(Ef)
        check_vector(y, "y", obs.dim)
        N = Ef.shape[0]
        stack = jnp.concatenate([state.lagged.astype(Ef.dtype), Ef[None]])  # (L+1, N, n)
        flat = _side_by_side(stack)
        os = obs_space(Ef, obs, y)
        if update == "sqrt":
            # The ETKF analysis (as etkf_analysis) applied to the side-by-side ensembles.
            mean, A = mean_and_anomalies(flat)
            wA, TA = etkf_update(os.S, os.innovation(y), A)
            flat_a = mean + wA / jnp.sqrt(N - 1.0) + TA
        else:
            # The EnKF analysis (as enkf_analysis): the increments are linear in the anomalies.
            _, X = scaled_anomalies(flat)
            D = perturbed_observations(key, fill_missing(y, os.mask), obs, N, center_perturbations)
            flat_a = flat + kalman_increments(X, os.S, os.whiten(D - os.Y))
        stack_a = _unstack(flat_a.astype(Ef.dtype), L + 1)
        current = inflate(stack_a[-1], inflation)  # forecast and buffered alike
        stack_a = stack_a.at[-1].set(current)
        new = EnKSState(ensemble=current, lagged=stack_a[1:], smoothed=stack_a[0])
        return new, analysis_info(flat_a, os.mask)

    return Method(init, step)


def enks_record(state: EnKSState) -> Float[Array, "N n"]:
    """The ``record`` for :func:`jaxda.assimilate.assimilate` that stores, at each time ``k``,
    the ensemble that left the EnKS buffer (time ``k - lag``, final); pass the stacked record
    to :func:`smoothed_ensembles`.

    Examples:
        >>> import jax
        >>> state = enks(1).init(jax.random.normal(jax.random.key(0), (5, 2)))
        >>> enks_record(state).shape
        (5, 2)
    """
    return state.smoothed


def smoothed_ensembles(record: Float[Array, "K N n"], final_state: Any) -> Float[Array, "K N n"]:
    """The smoothed ensemble at every observation time from an :func:`enks` run.

    Times ``0..K-L-1`` (final when they left the buffer) come from ``record`` (the driver's
    ``history.record`` with ``record=enks_record``, whose first ``L`` entries are not yet
    smoothed times and are skipped), the last ``L`` times from the final state's buffer
    (smoothed with all the observations there are). For a run in chunks, concatenate the
    records of all chunks and pass the last final state.

    Args:
        record: ``(K, N, n)`` ensembles stored by :func:`enks_record`.
        final_state: the :class:`EnKSState` returned by the driver.

    Returns:
        ``(K, N, n)``: entry ``k`` is the ensemble at time ``k`` given the observations up to
        ``min(k + L, K - 1)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> final = EnKSState(jnp.full((2, 1), 3.0), jnp.stack([jnp.full((2, 1), 2.0),
        ...                   jnp.full((2, 1), 3.0)]), jnp.full((2, 1), 1.0))
        >>> record = jnp.stack([jnp.full((2, 1), v) for v in (9.0, 9.0, 0.0, 1.0)])
        >>> smoothed_ensembles(record, final)[:, 0, 0].tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    lagged = getattr(final_state, "lagged", None)
    if lagged is None:
        raise TypeError(
            f"final_state must be an EnKSState (from enks), got {type(final_state).__name__}"
        )
    record = jnp.asarray(record)
    if record.ndim != 3 or record.shape[1:] != lagged.shape[1:]:
        raise ValueError(
            f"record must have shape (K, N, n) = (K, {', '.join(map(str, lagged.shape[1:]))}) "
            f"(use record=enks_record), got {record.shape}"
        )
    K, L = record.shape[0], lagged.shape[0]
    return jnp.concatenate([record[L:], lagged.astype(record.dtype)])[-K:]


def _pinv_weights(s: Float[Array, " r"], truncation, size: int) -> Float[Array, " r"]:
    """``1/σ`` for the kept singular values (DAPPER's ``tsvd`` rule: the leading ones holding
    a fraction ``truncation`` of their sum, and none at round-off level for a matrix of largest
    dimension ``size``), ``0`` for the rest."""
    total = jnp.sum(s)
    before = (jnp.cumsum(s) - s) / jnp.where(total > 0, total, 1.0)
    tiny = s[0] * size * 8 * jnp.finfo(s.dtype).eps
    keep = (before < truncation) & (s > tiny) & (total > 0)
    return jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)


def ensemble_rts(
    ensemble_forecast: Float[Array, "K N n"],
    ensemble_analysis: Float[Array, "K N n"],
    *,
    decorrelation: float = 1.0,
    truncation: float = 0.99999,
) -> Float[Array, "K N n"]:
    r"""Ensemble Rauch–Tung–Striebel smoother: a backward pass over a filter's forecast and
    analysis ensembles at the ``K`` observation times (module docstring):

    .. math:: E^s_k = E^a_k + δ\,(E^s_{k+1} - E^f_{k+1})\,(A^f_{k+1})^{+} A^a_k,\qquad
        E^s_{K-1} = E^a_{K-1}

    computed with ``lax.scan(reverse=True)`` in ensemble space (no ``n×n`` matrix). For a
    linear-Gaussian model it converges to the RTS smoother as ``N → ∞`` and equals the
    whole-window EnKS in ensemble statistics (Raanes 2016).

    Args:
        ensemble_forecast: ``(K, N, n)`` forecast ensembles (``E^f_0`` is not used).
        ensemble_analysis: ``(K, N, n)`` analysis ensembles of the same run.
        decorrelation: ``δ`` in ``[0, 1]`` (DAPPER's ``DeCorr``), damping the regression;
            ``0`` returns the analyses.
        truncation: fraction in ``(0, 1]`` of the sum of the singular values of the forecast
            anomalies kept by the pseudo-inverse (DAPPER's ``tinv`` default ``0.99999``;
            singular values at round-off level, e.g. the null direction when ``N <= n``, are
            always dropped).

    Returns:
        The smoothed ensembles ``(K, N, n)``.

    Raises:
        ValueError: mismatched or non-``(K, N, n)`` shapes, ``N < 2``, options out of range.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> Ea = jax.random.normal(jax.random.key(0), (4, 20, 2))
        >>> Ef = 0.9 * Ea + 0.1 * jax.random.normal(jax.random.key(1), (4, 20, 2))
        >>> Es = ensemble_rts(Ef, Ea)
        >>> Es.shape, bool(jnp.allclose(Es[-1], Ea[-1]))
        ((4, 20, 2), True)
    """
    Ef = jnp.asarray(ensemble_forecast)
    Ea = jnp.asarray(ensemble_analysis)
    if Ef.ndim != 3 or Ef.shape != Ea.shape:
        raise ValueError(
            "ensemble_forecast and ensemble_analysis must both have shape (K, N, n), got "
            f"{Ef.shape} and {Ea.shape}"
        )
    if Ef.shape[0] < 1:
        raise ValueError("need at least one observation time (K >= 1)")
    check_ensemble(Ea[0], "ensemble_analysis[k]")
    check_in_range("decorrelation", decorrelation, 0.0, 1.0)
    check_in_range("truncation", truncation, 0.0, 1.0, closed_low=False)
    dtype = jnp.result_type(Ef.dtype, Ea.dtype)
    Ef, Ea = Ef.astype(dtype), Ea.astype(dtype)

    return _rts_backward(Ef, Ea, jnp.asarray(decorrelation, dtype), jnp.asarray(truncation, dtype))


@jax.jit
def _rts_backward(Ef, Ea, decorrelation, truncation):
    """The backward pass of :func:`ensemble_rts` (jitted: one compilation per shape)."""

    def back(Es_next, inp):
        Ef_next, Ea_k = inp
        _, Af = mean_and_anomalies(Ef_next)
        U, s, Vt = jnp.linalg.svd(Af, full_matrices=False)  # Af = U diag(s) Vt
        inv_s = _pinv_weights(s, truncation, max(Af.shape))
        G = (((Es_next - Ef_next) @ Vt.T) * inv_s) @ U.T  # (N, N)
        _, Aa = mean_and_anomalies(Ea_k)
        Es_k = Ea_k + decorrelation * (G @ Aa)
        return Es_k, Es_k

    _, Es = jax.lax.scan(back, Ea[-1], (Ef[1:], Ea[:-1]), reverse=True)
    return jnp.concatenate([Es, Ea[-1:]])
