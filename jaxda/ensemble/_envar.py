r"""Cycled 4DEnVar: ensemble-variational analysis of each window, ensemble kept by a 4D-ETKF.

Every ``shift`` observation times the window-start ensemble (``lag`` intervals back) is run
through the window by the model; :func:`jaxda.variational.fourdenvar_analysis` then gives the
mean analysis — the 4D-Var cost in the span of the forecast perturbations, no adjoint
(Liu, Xian & Zou 2008), with optional Gaspari–Cohn localization of the ensemble covariance
(modulated ensemble, Buehner 2005) and an optional static ``B`` (hybrid, ``B = β_e P_e∘C +
β_s B_s``; Buehner et al. 2010). The perturbations are updated by the symmetric ETKF transform
of the window's stacked observed perturbations (a 4D-ETKF, Hunt et al. 2004; with
localization, the local transforms of a 4D-LETKF with the same radius), so the
ensemble that feeds the next window is a consistent sample about the 4DEnVar mean (the
"EnVar with an EnKF for the perturbations" of operational centres, Desroziers et al. 2014,
in its simplest deterministic form). The window then slides by ``shift`` intervals.

The localization matrix is ``n×n`` (its square root keeps the eigenpairs holding 99% of its
trace): meant for moderate ``n``.

References:
    Liu, Xian & Zou (2008), *Mon. Wea. Rev.* 136; Buehner et al. (2010), *Mon. Wea. Rev.* 138;
    Desroziers, Camino & Berre (2014), *Q. J. R. Meteorol. Soc.* 140;
    Hunt et al. (2004), *Tellus A* 56 (4D ensemble transform).

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jaxda.assimilate import assimilate
    >>> from jaxda.models import Lorenz96
    >>> from jaxda.observations import identity, observation_model, observation_series
    >>> model = Lorenz96(n=10)
    >>> y = jnp.full((4, 10), 8.0)
    >>> obs = observation_series(y, observation_model(identity(10), obs_std=1.0), n_steps=4)
    >>> E0 = model.x0 + jax.random.normal(jax.random.key(0), (6, 10))
    >>> method = fourdenvar(model, lag=2, localization_radius=2.0)
    >>> final, hist = assimilate(jax.random.key(1), method, model, obs, E0)
    >>> hist.info.updated.tolist(), final.ensemble.shape
    ([False, True, False, True], (6, 10))
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ..core import Method, check_in_range
from ..models import Model, check_window_options, run_window, window_method
from ..observations import ObservationModel, whitened_residual_per_time
from ..variational import as_background, fourdenvar_analysis, localization_sqrt
from ._core import mean_and_anomalies
from ._etkf import etkf_transform, mean_preserving_rotation
from ._inflation import inflate
from ._letkf import LocalObs, local_update
from ._localization import gain_taper

# Local analyses in sequential batches (lax.map): batched LAPACK eigh calls of this analysis,
# vmapped over seeds, were seen to deadlock XLA:CPU's thread pool (as in the sharded LETKF).
_BATCH = 16


def fourdenvar(
    model: Model,
    lag: int = 1,
    shift: int | None = None,
    *,
    localization_radius: float | None = None,
    state_locations: Any = None,
    periodic: bool = True,
    domain_length: float | None = None,
    B: Any = None,
    beta_ensemble: float = 1.0,
    beta_static: float = 1.0,
    n_outer: int = 1,
    inflation: float = 1.0,
    rotate: bool = False,
) -> Method:
    """Cycled 4DEnVar (module docstring) as a window :class:`jaxda.core.Method`.

    Args:
        model: the (deterministic) model, the same as the driver's (the registry fills it in).
        lag: window length in observation intervals.
        shift: observation times assimilated per window (default ``lag``: consecutive,
            non-overlapping windows); ``1 <= shift <= lag``.
        localization_radius: Gaspari–Cohn radius (DAPPER's convention) in the units of
            ``state_locations`` (default: grid indices ``0..n-1``); ``None``: no localization.
        periodic, domain_length: periodic distances (default period: ``n`` for grid indices).
        B: optional static background covariance (hybrid); what
            :func:`jaxda.variational.as_background` accepts.
        beta_ensemble, beta_static: hybrid weights ``β_e``, ``β_s``.
        n_outer: outer loops: after the first analysis the model is re-run from the analysed
            start state and the cost re-linearized around the background trajectory moved by
            that run's response (Gauss–Newton with the perturbations kept); ``1`` is the
            classical single-linearization 4DEnVar.
        inflation: multiplicative inflation of the window-start anomalies after each update.
        rotate: random mean-preserving rotation of those anomalies.
    """
    shift = lag if shift is None else shift
    check_window_options(model, lag, shift)
    check_in_range("inflation", inflation, 0.0, float("inf"), closed_low=False)
    if not isinstance(n_outer, int) or isinstance(n_outer, bool) or n_outer < 1:
        raise ValueError(f"n_outer must be an integer >= 1, got {n_outer!r}")
    n = model.dim
    C_sqrt = None
    if localization_radius is not None:
        locs = jnp.arange(n, dtype=float) if state_locations is None else state_locations
        C = gain_taper(
            n, locs, localization_radius, periodic,
            state_locations=locs, domain_length=domain_length,
        )  # fmt: skip
        C_sqrt = localization_sqrt(C)
    if B is not None:
        B = as_background(B, n)

    def _local_table(obs: ObservationModel, radius: float) -> LocalObs:
        """Every observation of the window with its Gaspari-Cohn coefficient for every grid
        point (``n × S·m``; works with traced locations)."""
        locations = obs.operator.locations
        if locations is None:
            raise ValueError("localized 4DEnVar needs an observation operator with locations")
        locs = jnp.asarray(locations)  # (m,) indices or coordinates, or (m, d) coordinates
        locs = jnp.concatenate([locs] * shift, axis=0)  # the S copies of the window
        coeffs = gain_taper(
            n, locs, radius, periodic,
            state_locations=state_locations, domain_length=domain_length,
        )  # fmt: skip
        indices = jnp.broadcast_to(jnp.arange(locs.shape[0]), coeffs.shape)
        return LocalObs(indices, coeffs)

    def analysis(key, start, window, ys, mask, obs: ObservationModel):
        dtype = start.dtype
        N = start.shape[0]

        def states(x):  # (S, n): the member at the window's last S observation times
            return run_window(model, lambda z: z, x, window, shift)[1]

        xb0, A0 = mean_and_anomalies(start)
        ens_traj = jnp.swapaxes(jax.vmap(states)(start), 0, 1)  # (S, N, n)

        def solve(xb_traj):
            return fourdenvar_analysis(
                xb0,
                xb_traj,
                start,
                ens_traj,
                ys,
                obs,
                C_sqrt=None if C_sqrt is None else C_sqrt.astype(dtype),
                B_static=None if B is None else jax.tree.map(lambda a: a.astype(dtype), B),
                beta_ensemble=beta_ensemble,
                beta_static=beta_static,
                propagate=states if B is not None else None,
            )

        # background trajectory: the ensemble mean at each time (so that without observations
        # the members are simply forecast, and a linear model gives the 4D-ETKF exactly)
        mean_traj = jnp.mean(ens_traj, axis=1)
        res = solve(mean_traj)
        if n_outer > 1:
            # outer loops: move the linearization point by the model's nonlinear response to
            # the analysed start increment (Gauss-Newton with the perturbations kept); the
            # background term still measures the total increment
            control = states(xb0)

            def outer(_, r):
                return solve(mean_traj + states(r.x0) - control - r.dx)

            res = jax.lax.fori_loop(1, n_outer, outer, res)
        # 4D-ETKF transform of the perturbations from the stacked observed perturbations
        Y = jax.vmap(jax.vmap(obs.operator))(jnp.swapaxes(ens_traj, 0, 1))  # (N, S, m)
        Y = Y - jnp.mean(Y, axis=0)
        Z = whitened_residual_per_time(obs.noise, Y, mask).reshape(N, -1) / jnp.sqrt(N - 1.0)
        _, A_now = mean_and_anomalies(ens_traj[-1])
        if localization_radius is None:
            _, T = etkf_transform(Z, jnp.zeros(Z.shape[1], dtype))
            start_a, now = res.x0 + T @ A0, res.x[-1] + T @ A_now
        else:  # 4D-LETKF: local transforms of the window's observations (Hunt et al. 2004)
            # the start and latest-time anomalies go through one local analysis
            local = _local_table(obs, float(localization_radius))
            both = local_update(
                Z,
                jnp.zeros(Z.shape[1], dtype),
                jnp.concatenate([local.indices, local.indices]),
                jnp.concatenate([local.coeffs, local.coeffs]),
                jnp.concatenate([A0.T, A_now.T]),
                jnp.concatenate([res.x0, res.x[-1]]),
                batch_size=_BATCH,
            ).T
            start_a, now = both[:, :n], both[:, n:]
        new_start = inflate(start_a, inflation)
        if rotate:
            mean, A = mean_and_anomalies(new_start)
            new_start = mean + mean_preserving_rotation(key, N).astype(dtype) @ A
        return new_start, now, jnp.asarray(n_outer, jnp.int32)

    return Method(*window_method(model, lag, shift, analysis))
