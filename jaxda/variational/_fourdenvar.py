r"""4DEnVar: strong-constraint 4D-Var solved in the space of ensemble perturbations.

The 4D-Var increment :math:`\delta x_0` at the window start is propagated to the
:math:`L` observation times of the window *without a tangent-linear or adjoint model*: it is
a combination of ensemble perturbations, and the perturbations of the background ensemble
forecast to time :math:`k` supply the propagated increment (Liu, Xian & Zou 2008),

.. math::
    \delta x_k = \sqrt{\beta_e}\, X_k w, \qquad
    X_k = \frac{1}{\sqrt{N-1}}\,[x^{(1)}_k - \bar x_k, \dots, x^{(N)}_k - \bar x_k],

so that :math:`M_k(x_b + \delta x_0) \approx x_{b,k} + \delta x_k` for increments in the
ensemble span. With the control-variable transform the background term is
:math:`\tfrac12\|w\|^2` and the cost

.. math::
    J(w) = \tfrac12\|w\|^2 + \tfrac12\sum_{k=1}^{L}
        \|d_k - H_k'\,\delta x_k(w)\|^2_{R^{-1}}, \qquad d_k = y_k - H(x_{b,k}),

is quadratic: its minimizer is computed exactly (one Cholesky solve; no iterations, no
outer loops).

**Localization** (Buehner 2005; Buehner et al. 2010) by the modulated ensemble: with a
square root :math:`C \approx C_{1/2}C_{1/2}^T` (``C_sqrt``, ``(n, r)``) of the
localization matrix, the control becomes :math:`\alpha \in \mathbb{R}^{N\times r}` and

.. math::
    \delta x_k = \sqrt{\beta_e}\sum_{i=1}^{N} X_k^{(i)} \circ (C_{1/2}\,\alpha_i),

whose implied covariance at the window start is :math:`\beta_e P_e \circ C`. The same
``C`` is used at every time. :func:`localization_sqrt` builds ``C_sqrt`` from a
(Gaspari-Cohn, say) correlation matrix by a truncated eigendecomposition.

**Hybrid covariance** (Buehner et al. 2010, "En-4DVar"): with a static
:math:`B_s = L_sL_s^T` the increment gains a term :math:`\sqrt{\beta_s}\,L_s v` at the
window start (:math:`B = \beta_e P_e\circ C + \beta_s B_s`). Propagating it to the
observation times needs a model: given ``propagate`` (the window's background run
:math:`x_0 \mapsto (x_1, \dots, x_L)`), its tangent-linear model
:math:`\mathbf M_k'` (``jax.linearize``, i.e. forward-mode AD) carries
:math:`\sqrt{\beta_s}\mathbf M_k' L_s v` as in Buehner et al. (2010); without it the static
increment is held constant through the window (the 3D-FGAT approximation), which is exact
only for a persistence model but needs no model at all.

**Observed increments.** By default (``obs_perturbations="tangent"``) the observation
operator is linearized at the background, :math:`H_k' = H'(x_{b,k})` (forward-mode AD; exact
for a linear :math:`H`). With ``obs_perturbations="ensemble"`` (no localization) the observed
perturbations are the observed ensemble's, :math:`(H(x^{(i)}_k) - \overline{H(x_k)})/\sqrt{N-1}`,
as in Liu et al. (2008): no derivative of :math:`H` is needed for the ensemble part.

The solve is in control space, :math:`(I + G^TG)\,u = G^Td`, or in observation space,
:math:`u = G^T(I + GG^T)^{-1}d`, whichever matrix is smaller (``G`` the whitened map from the
control to the observed increments; missing observations, ``NaN`` in ``ys``, are zero rows).
With a linear model and :math:`H`, an ensemble whose sample covariance is :math:`B` and no
localization, the result equals the strong-constraint 4D-Var analysis
(:func:`jaxda.variational.fourdvar_analysis`).

References:
    Liu, Xian & Zou (2008), *Mon. Wea. Rev.* 136 (En4DVar without adjoint);
    Buehner (2005), *Q. J. R. Meteorol. Soc.* 131 (localization by the modulated ensemble);
    Buehner et al. (2010), *Mon. Wea. Rev.* 138 (4D-EnVar, En-4DVar and hybrids);
    Desroziers et al. (2014), *Q. J. R. Meteorol. Soc.* 140 (4DEnVar review).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_factor, cho_solve
from jaxtyping import Array, Float, Int

from ..core import Status, check_in_range, is_concrete, status_array
from ..observations import ObservationModel, observed
from ._costs import as_background, sqrt_apply


class FourDEnVarResult(NamedTuple):
    """Outcome of :func:`fourdenvar_analysis` (a pytree: it goes through ``jit``/``vmap``).

    Attributes:
        x0: analysis state at the window start, ``xb0 + dx0`` ``(n,)``.
        x: analysis trajectory at the observation times, ``xb_traj + dx`` ``(L, n)``.
        dx0: analysis increment at the window start ``(n,)``.
        dx: analysis increments at the observation times ``(L, n)``.
        alpha: ensemble control, ``(N,)`` without localization, ``(N, r)`` with ``C_sqrt``.
        v: static control ``(n,)`` (``(0,)`` without ``B_static``).
        f: cost at the minimizer.
        n_obs: number of present observations in the window.
        status: :class:`jaxda.core.Status` code (``NONFINITE`` if any output is nan/inf).
    """

    x0: Float[Array, " n"]
    x: Float[Array, "L n"]
    dx0: Float[Array, " n"]
    dx: Float[Array, "L n"]
    alpha: Float[Array, "N ..."]
    v: Float[Array, " s"]
    f: Float[Array, ""]
    n_obs: Int[Array, ""]
    status: Int[Array, ""]


def localization_sqrt(
    C: Float[Array, "n n"], rank: int | None = None, *, trace_fraction: float = 0.99
) -> Float[Array, "n r"]:
    r"""Square root ``C_sqrt`` ``(n, r)`` of a localization matrix, ``C ≈ C_sqrt C_sqrtᵀ``.

    Truncated eigendecomposition (``eigh``): with :math:`C = V\Lambda V^T` and eigenvalues in
    decreasing order, :math:`C_{1/2} = V_r\Lambda_r^{1/2}`. ``rank`` keeps the ``r`` leading
    eigenpairs (then the function is ``jit``-able); without it, the fewest leading eigenpairs
    holding at least ``trace_fraction`` of the trace are kept (the number depends on the
    values of ``C``, so ``C`` must then be concrete). Small negative eigenvalues from
    round-off are clipped to zero. ``C`` is typically a Gaspari-Cohn matrix
    (``jaxda.ensemble.gaspari_cohn`` of the grid distances).

    Examples:
        >>> import jax.numpy as jnp
        >>> S = localization_sqrt(jnp.ones((3, 3)))
        >>> S.shape, (S @ S.T).round(6).tolist()
        ((3, 1), [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    """
    C = jnp.asarray(C, dtype=jnp.result_type(C, float))
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise ValueError(f"C must be a square (n, n) matrix, got shape {C.shape}")
    n = C.shape[0]
    lam, V = jnp.linalg.eigh(0.5 * (C + C.T))
    lam, V = jnp.clip(lam[::-1], 0.0), V[:, ::-1]
    if rank is None:
        check_in_range("trace_fraction", trace_fraction, 0.0, 1.0, closed_low=False)
        if not is_concrete(C):
            raise ValueError("localization_sqrt needs rank= when C is traced (under jit)")
        cum = np.cumsum(np.asarray(lam))
        if not cum[-1] > 0:
            raise ValueError("C has no positive eigenvalue")
        rank = int(np.searchsorted(cum, trace_fraction * cum[-1] * (1 - 1e-12))) + 1
    if not isinstance(rank, int | np.integer) or not 1 <= rank <= n:
        raise ValueError(f"rank must be an int in [1, {n}], got {rank!r}")
    rank = int(rank)
    return V[:, :rank] * jnp.sqrt(lam[:rank])


def _check_shapes(xb0, xb_traj, ens0, ens_traj, ys, obs, C_sqrt):
    if xb0.ndim != 1:
        raise ValueError(f"xb0 must be a state vector (n,), got shape {xb0.shape}")
    n = xb0.shape[0]
    if xb_traj.ndim != 2 or xb_traj.shape[1] != n:
        raise ValueError(f"xb_traj must have shape (L, {n}), got {xb_traj.shape}")
    L = xb_traj.shape[0]
    if L < 1:
        raise ValueError("the window needs at least one observation time (L >= 1)")
    if ens0.ndim != 2 or ens0.shape[1] != n:
        raise ValueError(f"ens0 must have shape (N, {n}) (members first), got {ens0.shape}")
    N = ens0.shape[0]
    if N < 2:
        raise ValueError(f"the ensemble needs at least 2 members, got N={N}")
    if ens_traj.shape != (L, N, n):
        raise ValueError(f"ens_traj must have shape (L, N, n) = {(L, N, n)}, got {ens_traj.shape}")
    if ys.shape != (L, obs.dim):
        raise ValueError(f"ys must have shape (L, m) = {(L, obs.dim)}, got {ys.shape}")
    if C_sqrt is not None and (C_sqrt.ndim != 2 or C_sqrt.shape[0] != n or C_sqrt.shape[1] < 1):
        raise ValueError(f"C_sqrt must have shape ({n}, r) with r >= 1, got {C_sqrt.shape}")
    return n, L, N


def fourdenvar_analysis(
    xb0: Float[Array, " n"],
    xb_traj: Float[Array, "L n"],
    ens0: Float[Array, "N n"],
    ens_traj: Float[Array, "L N n"],
    ys: Float[Array, "L m"],
    obs: ObservationModel,
    *,
    C_sqrt: Float[Array, "n r"] | None = None,
    B_static: Any = None,
    beta_ensemble: float = 1.0,
    beta_static: float = 1.0,
    propagate: Callable[[Array], Array] | None = None,
    obs_perturbations: str = "tangent",
) -> FourDEnVarResult:
    r"""4DEnVar analysis of one window: the exact minimizer of the ensemble-space 4D-Var cost.

    Args:
        xb0: background state at the window start ``(n,)``.
        xb_traj: background run at the window's ``L`` observation times ``(L, n)``
            (``xb_traj[k-1]`` is the background at the ``k``-th observation time; when the
            window start is itself an observation time, pass it as the first entry).
        ens0: background ensemble at the window start ``(N, n)``, ``N >= 2``.
        ens_traj: the same members forecast to the observation times ``(L, N, n)``; only
            their perturbations about the ensemble mean (scaled by ``1/√(N-1)``) are used.
        ys: observations ``(L, m)``; ``NaN`` marks a missing value.
        obs: the observation model (the same at every time).
        C_sqrt: square root ``(n, r)`` of the localization matrix (see
            :func:`localization_sqrt`); ``None`` for no localization.
        B_static: static background covariance for a hybrid (what
            :func:`jaxda.variational.as_background` accepts); ``None`` for pure 4DEnVar.
        beta_ensemble, beta_static: weights of the two covariances,
            ``B = β_e P_e∘C + β_s B_s`` (they need not sum to one; ``beta_static`` is
            ignored without ``B_static``).
        propagate: the window's background run ``x0 -> (L, n)`` (e.g.
            :func:`jaxda.variational.window_trajectory` of the model); with ``B_static``
            its tangent-linear model (forward-mode AD at ``xb0``) propagates the static
            increment. Without it the static increment is constant in time (3D-FGAT).
        obs_perturbations: ``"tangent"`` (``H`` linearized at the background run) or
            ``"ensemble"`` (the observed ensemble's perturbations; not with ``C_sqrt``).

    Returns:
        :class:`FourDEnVarResult`. Under ``jit``/``vmap`` only the shapes are checked
        eagerly (``ValueError``); a non-finite result gets status ``NONFINITE``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> obs = observation_model(identity(2), obs_std=1.0)
        >>> E0 = jnp.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) * jnp.sqrt(1.5)
        >>> xb = jnp.zeros(2)  # B = I (sample covariance of E0), persistence model, L = 1
        >>> res = fourdenvar_analysis(xb, xb[None], E0, E0[None], jnp.ones((1, 2)), obs)
        >>> res.x0.round(6).tolist(), round(float(res.f), 6), int(res.status)
        ([0.5, 0.5], 0.5, 0)
    """
    xb0, xb_traj, ens0, ens_traj, ys = (jnp.asarray(a) for a in (xb0, xb_traj, ens0, ens_traj, ys))
    C_sqrt = None if C_sqrt is None else jnp.asarray(C_sqrt)
    n, L, N = _check_shapes(xb0, xb_traj, ens0, ens_traj, ys, obs, C_sqrt)
    if obs_perturbations not in ("tangent", "ensemble"):
        raise ValueError(
            f'obs_perturbations must be "tangent" or "ensemble", got {obs_perturbations!r}'
        )
    if obs_perturbations == "ensemble" and C_sqrt is not None:
        raise ValueError('obs_perturbations="ensemble" cannot be localized: use "tangent"')
    if propagate is not None and not callable(propagate):
        raise TypeError(f"propagate must be callable, got {type(propagate).__name__}")
    check_in_range("beta_ensemble", beta_ensemble, 0.0, math.inf)
    check_in_range("beta_static", beta_static, 0.0, math.inf)
    dt = jnp.result_type(xb0, xb_traj, ens0, ens_traj, float)
    xb0, xb_traj, ens0, ens_traj = (a.astype(dt) for a in (xb0, xb_traj, ens0, ens_traj))
    Cs = jnp.ones((n, 1), dt) if C_sqrt is None else C_sqrt.astype(dt)
    r = Cs.shape[1]
    se = jnp.sqrt(jnp.asarray(beta_ensemble, dt))

    # state-space columns of the control-to-increment map: T0 (p, n) at the start, T (p, L, n)
    scale = 1.0 / math.sqrt(N - 1)
    X0 = (ens0 - ens0.mean(0)) * scale  # (N, n)
    Xk = (ens_traj - ens_traj.mean(1, keepdims=True)) * scale  # (L, N, n)
    T0 = se * (X0[:, None, :] * Cs.T[None]).reshape(N * r, n)
    T = se * jnp.moveaxis(Xk[:, :, None, :] * Cs.T[None, None], 0, 2).reshape(N * r, L, n)
    if B_static is not None:
        Bs = as_background(B_static, n)
        Bs = jax.tree.map(lambda a: a.astype(dt), Bs)
        ss = jnp.sqrt(jnp.asarray(beta_static, dt))
        Ls = ss * jax.vmap(lambda e: sqrt_apply(Bs, e), out_axes=1)(jnp.eye(n, dtype=dt))
        if propagate is None:
            Ts = jnp.broadcast_to(Ls.T[:, None, :], (n, L, n))
        else:
            out = jax.eval_shape(propagate, xb0)
            if out.shape != (L, n):
                raise ValueError(f"propagate(x0) must return shape {(L, n)}, got {out.shape}")
            _, tlm = jax.linearize(propagate, xb0)
            Ts = jax.vmap(tlm)(Ls.T)  # (n, L, n): column j propagated
        T0 = jnp.concatenate([T0, Ls.T])
        T = jnp.concatenate([T, Ts.astype(dt)])
        n_static = n
    else:
        n_static = 0

    # whitened observation-space map G (L*m, p) and innovation d (L*m,)
    mask = observed(ys)
    noises = jax.vmap(obs.noise.restrict)(mask)

    def whiten(res):  # (L, m) -> (L*m,) with missing entries zero
        w = jax.vmap(lambda nk, rk, mk: nk.whiten(jnp.where(mk, rk, 0.0)) * mk)(noises, res, mask)
        return w.reshape(-1)

    if obs_perturbations == "tangent":
        hxb, H_lin = jax.linearize(jax.vmap(obs.operator), xb_traj)
        G = jax.vmap(lambda t: whiten(H_lin(t)))(T).T
    else:  # the observed ensemble's perturbations; H linearized only for a static part
        HE = jax.vmap(jax.vmap(obs.operator))(ens_traj)  # (L, N, m)
        HX = (HE - HE.mean(1, keepdims=True)) * scale
        G = se * jax.vmap(whiten, in_axes=1)(HX).T
        if n_static:
            hxb, H_lin = jax.linearize(jax.vmap(obs.operator), xb_traj)
            G = jnp.concatenate([G, jax.vmap(lambda t: whiten(H_lin(t)))(T[N:]).T], axis=1)
        else:
            hxb = jax.vmap(obs.operator)(xb_traj)
    d = whiten(ys - hxb)

    p, q = G.shape[1], G.shape[0]
    if p <= q:
        A = jnp.eye(p, dtype=dt) + G.T @ G
        u = cho_solve(cho_factor(A, lower=True), G.T @ d)
    else:
        S = jnp.eye(q, dtype=dt) + G @ G.T
        u = G.T @ cho_solve(cho_factor(S, lower=True), d)
    resid = d - G @ u
    f = 0.5 * (jnp.sum(u * u) + jnp.sum(resid * resid))

    dx0 = u @ T0
    dx = jnp.tensordot(u, T, axes=1)
    alpha = u[: N * r].reshape(N, r)
    if C_sqrt is None:
        alpha = alpha[:, 0]
    v = u[N * r : N * r + n_static]
    x0, x = xb0 + dx0, xb_traj + dx
    finite = jnp.all(jnp.isfinite(x0)) & jnp.all(jnp.isfinite(x)) & jnp.isfinite(f)
    status = status_array(jnp.where(finite, Status.SUCCESS, Status.NONFINITE))
    n_obs = jnp.sum(mask).astype(jnp.int32)
    return FourDEnVarResult(x0, x, dx0, dx, alpha, v, f, n_obs, status)
