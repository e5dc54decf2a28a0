r"""Moment-matching posterior sampling (MMPS) guidance for a diffusion prior.

Rozet, Andry, Lanusse & Louppe (2024), *Learning diffusion priors from observations by
expectation maximization*, NeurIPS, Sec. 3 ("moment matching posterior sampling").

For observations ``y = A(x_0) + η``, ``η ~ N(0, Σ_y)``, the likelihood of the *diffused* state
``x_t`` is approximated by matching the first two moments of ``p(x_0 | x_t)``:

.. math::
    p(y \mid x_t) \approx \mathcal N\big(y \mid A\hat x_0,\ Σ_y + A V_t A^\top\big),\qquad
    \hat x_0 = \frac{x_t + σ_t^2 \nabla\log p_t(x_t)}{μ_t},\qquad
    V_t = \mathrm{Cov}[x_0 \mid x_t] = \frac{σ_t^2}{μ_t}\,\frac{\partial \hat x_0}{\partial x_t}

(Tweedie's formulas for the mean and the covariance). The guidance term is the gradient of that
Gaussian log-density with the covariance held fixed,

.. math:: \nabla_{x_t}\log p(y \mid x_t) \approx
    \Big(\frac{\partial \hat x_0}{\partial x_t}\Big)^{\!\top} A^\top u,\qquad
    (Σ_y + A V_t A^\top)\, u = y - A\hat x_0 ,

where ``u`` is found by a few conjugate-gradient iterations whose matrix–vector products are
vector–Jacobian products through the score (``V_t`` and ``A V_t Aᵀ`` are never formed). A
nonlinear ``A`` is linearised at ``\hat x_0`` (its Jacobian enters through ``jax.linearize``).

For a Gaussian prior ``N(m, C)`` and a linear ``A``, ``V_t = (C^{-1} + μ_t²/σ_t² I)^{-1}`` does
not depend on ``x_t`` and the approximation is exact: MMPS then returns the exact posterior
score (once CG has converged, at most ``m`` iterations for ``m`` observations). DPS
(Chung et al. 2023) drops ``A V_t Aᵀ`` and SDA (Rozet & Louppe 2023) replaces it by
``γ(σ_t/μ_t)² I``; both are in :func:`jaxda.diffusion.posterior_score`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import check_count, is_concrete, positive_or_error
from ._guidance import posterior_score
from ._sde import SDE

ScoreFn = Callable[[Array, Array], Array]


def _cg(matvec: Callable[[Array], Array], b: Array, n_iter: int) -> Array:
    """``n_iter`` conjugate-gradient iterations for ``M u = b`` from ``u = 0`` (fixed cost).

    Once the residual vanishes, or along a direction of non-positive curvature ``pᵀMp ≤ 0``
    (a score network whose Jacobian makes ``M`` indefinite), the iterate stops moving
    (truncated CG, as in trust-region methods) instead of dividing by zero.
    """

    def body(_, carry):
        u, r, p, rr = carry
        mp = matvec(p)
        pmp = jnp.vdot(p, mp)
        ok = (pmp > 0) & (rr > 0)
        alpha = jnp.where(ok, rr / jnp.where(ok, pmp, 1.0), 0.0)
        u = u + alpha * p
        r = r - alpha * mp
        rr_new = jnp.vdot(r, r)
        beta = jnp.where(ok, rr_new / jnp.where(rr > 0, rr, 1.0), 0.0)
        p = jnp.where(ok, r + beta * p, p)
        return u, r, p, jnp.where(ok, rr_new, 0.0)

    init = (jnp.zeros_like(b), b, b, jnp.vdot(b, b))
    return jax.lax.fori_loop(0, n_iter, body, init)[0]


def mmps_score(
    score_fn: ScoreFn,
    sde: SDE,
    obs_fn: Callable[[Array], Array],
    y: Float[Array, " m"],
    obs_std: Float[Array, " m"] | float | None = None,
    *,
    obs_cov: Float[Array, "m m"] | None = None,
    cg_steps: int = 3,
) -> ScoreFn:
    r"""MMPS guided score ``s(x_t, t) = s_θ(x_t, t) + ∇_{x_t} log p(y | x_t)`` (see module doc).

    Key-free and deterministic; the returned function is pure (jit / vmap / grad-able) and
    plugs into every sampler of :mod:`jaxda.diffusion` (:func:`~jaxda.diffusion.sample`, ...).
    Each call costs one forward and ``cg_steps + 1`` vector–Jacobian products of ``score_fn``.

    Args:
        score_fn: prior score ``(x, t) -> ∇ log p_t(x)`` for one state of any shape.
        sde: the forward SDE of ``score_fn``.
        obs_fn: observation operator ``A`` mapping one state to a vector ``(m,)`` (linearised
            at ``x̂_0`` when nonlinear).
        y: observations ``(m,)``; NaN marks a missing observation, which drops out exactly
            (its row and column of the system are replaced by the identity and its residual
            by 0).
        obs_std: observation noise std ``σ_y`` (scalar or ``(m,)``), ``Σ_y = diag(σ_y²)``.
        obs_cov: full observation noise covariance ``Σ_y`` ``(m, m)`` (symmetric positive
            definite), instead of ``obs_std``.
        cg_steps: conjugate-gradient iterations for ``(Σ_y + A V_t Aᵀ) u = y - A x̂_0``
            (``≥ 1``; ``m`` iterations solve the system exactly in exact arithmetic; the paper
            reports that 1–3 suffice in practice).

    Returns:
        a pure ``score_fn(x, t)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> post = mmps_score(lambda x, t: -x, vp_linear(), lambda x: x[:1], jnp.ones(1), 0.1)
        >>> post(jnp.zeros(2), 0.5).shape
        (2,)

        For the prior ``N(0, I)`` and ``A = [1, 0]`` the posterior score at small ``t`` pulls
        the first component towards ``y / (1 + σ_y²)``:

        >>> s = post(jnp.zeros(2), 1e-3)
        >>> bool(s[0] > 0), float(s[1])
        (True, 0.0)
    """
    y = jnp.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y must be a non-empty 1-D vector of observations, got shape {y.shape}")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"y must be floating point, got dtype {y.dtype}")
    if is_concrete(y) and bool(jnp.any(jnp.isinf(y))):
        raise ValueError("y contains inf values (use NaN for missing observations)")
    cg_steps = check_count("cg_steps", cg_steps)
    m = y.size
    if (obs_std is None) == (obs_cov is None):
        raise ValueError("give exactly one of obs_std and obs_cov")
    if obs_cov is None:
        obs_std = jnp.asarray(obs_std)
        if obs_std.ndim > 1 or (obs_std.ndim == 1 and obs_std.shape != y.shape):
            raise ValueError(
                f"obs_std must be a scalar or have the shape of y {y.shape}, got {obs_std.shape}"
            )
        var = jnp.broadcast_to(positive_or_error("obs_std", obs_std) ** 2, y.shape)
        noise = lambda u: var * u  # noqa: E731
    else:
        obs_cov = jnp.asarray(obs_cov)
        if obs_cov.shape != (m, m):
            raise ValueError(f"obs_cov must have shape {(m, m)}, got {obs_cov.shape}")
        if is_concrete(obs_cov):
            c = np.asarray(obs_cov, dtype=float)
            if not np.allclose(c, c.T, rtol=1e-10, atol=1e-12 * np.abs(c).max()):
                raise ValueError("obs_cov must be symmetric")
            if not np.all(np.isfinite(c)) or np.any(np.linalg.eigvalsh(c) <= 0):
                raise ValueError("obs_cov must be positive definite and finite")
        cov = obs_cov
        noise = lambda u: cov @ u  # noqa: E731

    observed = jnp.isfinite(y)
    y0 = jnp.where(observed, y, 0.0)

    def score(x, t):
        t = jnp.asarray(t)

        def denoise(x):
            s = score_fn(x, t)
            return sde.tweedie(x, s, t), s

        x0, vjp_x0, s = jax.vjp(denoise, x, has_aux=True)
        h, a_lin = jax.linearize(obs_fn, x0)
        if h.shape != y.shape:
            raise ValueError(f"obs_fn returns shape {h.shape} but y has shape {y.shape}")
        a_t = jax.linear_transpose(a_lin, x0)
        scale = sde.std(t) ** 2 / sde.mean_coef(t)
        dtype = h.dtype

        def back(u):  # (∂x̂_0/∂x_t)ᵀ Aᵀ u, zeroing missing entries
            (v,) = a_t(jnp.where(observed, u, 0.0).astype(dtype))
            return vjp_x0(v)[0]

        def matvec(u):  # (Σ_y + A V_t Aᵀ) u on the observed block, identity elsewhere
            um = jnp.where(observed, u, 0.0).astype(dtype)
            out = noise(um) + scale * a_lin(back(um))
            return jnp.where(observed, out, u)

        r = jnp.where(observed, y0 - h, 0.0).astype(dtype)
        u = _cg(matvec, r, cg_steps)
        return s + back(u)

    return score


_GUIDANCES = ("dps", "sda", "mmps")


def guided_score(
    score_fn: ScoreFn,
    sde: SDE,
    obs_fn: Callable[[Array], Array],
    y: Float[Array, " m"],
    obs_std: Float[Array, " m"] | float | None = None,
    *,
    guidance: str = "mmps",
    obs_cov: Float[Array, "m m"] | None = None,
    gamma: float = 1e-2,
    cg_steps: int = 3,
) -> ScoreFn:
    r"""Guided score with the likelihood approximation chosen by one flag.

    * ``"dps"``: ``p(y|x_t) ≈ N(y | A x̂_0, Σ_y)`` (Chung et al. 2023, with a Gaussian
      likelihood instead of a normalised step);
    * ``"sda"``: ``N(y | A x̂_0, Σ_y + γ (σ_t/μ_t)² I)`` (Rozet & Louppe 2023);
    * ``"mmps"``: ``N(y | A x̂_0, Σ_y + A V_t Aᵀ)`` with Tweedie's covariance (:func:`mmps_score`).

    ``"dps"`` and ``"sda"`` call :func:`~jaxda.diffusion.posterior_score` (they need every
    observation finite); ``gamma`` is used by ``"sda"`` only, ``cg_steps`` by ``"mmps"`` only.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> args = (lambda x, t: -x, vp_linear(), lambda x: x[:1], jnp.ones(1), 0.1)
        >>> [guided_score(*args, guidance=g)(jnp.zeros(2), 0.5).shape for g in ("dps", "mmps")]
        [(2,), (2,)]
    """
    if guidance not in _GUIDANCES:
        raise ValueError(f"guidance must be one of {_GUIDANCES}, got {guidance!r}")
    if guidance == "mmps":
        return mmps_score(score_fn, sde, obs_fn, y, obs_std, obs_cov=obs_cov, cg_steps=cg_steps)
    g = 0.0 if guidance == "dps" else gamma
    if (obs_std is None) == (obs_cov is None):
        raise ValueError("give exactly one of obs_std and obs_cov")
    if obs_std is not None:
        return posterior_score(score_fn, sde, obs_fn, y, obs_std, gamma=g)
    cov = jnp.asarray(obs_cov)
    if cov.shape != (jnp.size(y),) * 2:
        raise ValueError(f"obs_cov must have shape {(jnp.size(y),) * 2}, got {cov.shape}")
    eye = jnp.eye(cov.shape[0], dtype=cov.dtype)

    def obs_cov_fn(t):
        return cov + g * (sde.std(t) / sde.mean_coef(t)) ** 2 * eye

    return posterior_score(score_fn, sde, obs_fn, y, 1.0, gamma=g, obs_cov_fn=obs_cov_fn)
