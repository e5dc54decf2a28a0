r"""Posterior (guided) scores for data assimilation with a diffusion prior.

For observations ``y = H(x_0) + η``, ``η ~ N(0, Σ_y)``, the score of the diffused posterior is

.. math:: \nabla_{x_t}\log p_t(x_t \mid y) = s_θ(x_t, t) + \nabla_{x_t} \log p(y \mid x_t).

The likelihood of the *diffused* state is approximated as in DPS (Chung et al. 2023) and
score-based data assimilation (SDA, Rozet & Louppe 2023, Eq. 13–14):

.. math:: p(y \mid x_t) \approx \mathcal N\big(y \mid H(\hat x_0(x_t)),\ Σ_y + γ\,
    (σ(t)/μ(t))^2 I\big), \qquad \hat x_0 = \frac{x_t + σ(t)^2 s_θ(x_t, t)}{μ(t)}

(Tweedie's formula), and its gradient is taken through ``\hat x_0`` (one vector–Jacobian
product through the score network). For a Gaussian prior ``N(m, C)`` the exact law is
``p(y|x_t) = N(y | H \hat x_0, Σ_y + H V_t Hᵀ)`` with ``V_t = (C^{-1} + μ²/σ² I)^{-1}``; pass it
as ``obs_cov_fn`` to get the exact posterior score (used by the tests). The SDA term
``γ(σ/μ)² I`` is the large-prior-variance limit of ``H V_t Hᵀ`` for ``H = I``.

:func:`local_score` composes the score of a long trajectory ``x_{1:L}`` from a score network
trained on short windows of ``2k+1`` states (Rozet & Louppe 2023, Sec. 3.1): the score of
state ``i`` is read from the window centred on ``i`` (the first/last ``k`` states from the
first/last window), valid for ``k``-th order Markov chains.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
from jaxtyping import Array, Float

from ..core import is_concrete, positive_or_error
from ._sde import SDE

ScoreFn = Callable[[Array, Array], Array]


def posterior_score(
    score_fn: ScoreFn,
    sde: SDE,
    obs_fn: Callable[[Array], Array],
    y: Float[Array, " m"],
    obs_std: Float[Array, " m"] | float,
    *,
    gamma: float = 1e-2,
    obs_cov_fn: Callable[[Array], Array] | None = None,
) -> ScoreFn:
    r"""Guided score ``s(x_t, t) = s_θ(x_t, t) + ∇_{x_t} log p(y | x_t)``.

    Args:
        score_fn: prior score ``(x, t) -> ∇ log p_t(x)`` for one state of any shape.
        sde: the forward SDE of ``score_fn``.
        obs_fn: observation operator ``H`` mapping one state to a vector ``(m,)``.
        y: observations ``(m,)``.
        obs_std: observation noise std ``σ_y`` (scalar or ``(m,)``), ``Σ_y = diag(σ_y²)``.
        gamma: SDA variance inflation ``γ`` in ``Σ_y + γ(σ_t/μ_t)² I`` (``γ = 0``: plain DPS-like
            Gaussian likelihood).
        obs_cov_fn: optional ``t -> (m, m)`` covariance replacing ``Σ_y + γ(σ_t/μ_t)² I``
            (e.g. the exact Gaussian-prior value; then ``obs_std`` is ignored).

    Returns:
        a pure ``score_fn(x, t)`` usable by every sampler.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.diffusion import vp_linear
        >>> post = posterior_score(lambda x, t: -x, vp_linear(), lambda x: x[:1], jnp.ones(1), 0.1)
        >>> post(jnp.zeros(2), 0.5).shape
        (2,)
    """
    y = jnp.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"y must be a non-empty 1-D vector of observations, got shape {y.shape}")
    if is_concrete(y) and not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError("y contains nan/inf values (drop missing observations from obs_fn and y)")
    if is_concrete(gamma) and not (np.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be finite and >= 0, got {gamma}")
    if obs_cov_fn is None:
        obs_std = jnp.asarray(obs_std)
        if obs_std.ndim > 1 or (obs_std.ndim == 1 and obs_std.shape != y.shape):
            raise ValueError(
                f"obs_std must be a scalar or have the shape of y {y.shape}, got {obs_std.shape}"
            )
        obs_var = positive_or_error("obs_std", obs_std) ** 2

    def score(x, t):
        t = jnp.asarray(t)

        def predict(x):
            s = score_fn(x, t)
            return obs_fn(sde.tweedie(x, s, t)), s

        h, vjp_fn, s = jax.vjp(predict, x, has_aux=True)
        if h.shape != y.shape:
            raise ValueError(f"obs_fn returns shape {h.shape} but y has shape {y.shape}")
        r = y - h
        if obs_cov_fn is None:
            w = r / (obs_var + gamma * (sde.std(t) / sde.mean_coef(t)) ** 2)
        else:
            cov = obs_cov_fn(t)
            if jnp.shape(cov) != (y.size, y.size):
                raise ValueError(
                    f"obs_cov_fn must return shape {(y.size, y.size)}, got {jnp.shape(cov)}"
                )
            w = jsl.cho_solve(jsl.cho_factor(cov, lower=True), r)
        (g,) = vjp_fn(w.astype(h.dtype))
        return s + g

    return score


def local_score(window_score_fn: ScoreFn, window: int) -> ScoreFn:
    r"""Score of a trajectory ``(L, d)`` stitched from a window score over ``(2k+1, d)`` windows.

    ``window_score_fn(w, t)`` is the score of one window ``w`` of ``window = 2k+1`` consecutive
    states. The ``L - 2k`` overlapping windows are scored in one ``vmap``; state ``i`` takes
    the centre of window ``i-k`` (``k ≤ i < L-k``), the first ``k`` and last ``k`` states take
    the corresponding positions of the first and last window.

    Examples:
        >>> import jax.numpy as jnp
        >>> score = local_score(lambda w, t: -w, 5)
        >>> score(jnp.ones((9, 3)), 0.1).shape
        (9, 3)
    """
    if not isinstance(window, int | np.integer) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number 2k+1 >= 1, got {window}")
    k = window // 2

    def score(x, t):
        if jnp.ndim(x) < 1:
            raise ValueError(f"local_score needs a trajectory (L, ...), got shape {jnp.shape(x)}")
        L = x.shape[0]
        if L < window:
            raise ValueError(f"trajectory length {L} is shorter than the window {window}")
        idx = jnp.arange(L - window + 1)[:, None] + jnp.arange(window)[None, :]
        s = jax.vmap(window_score_fn, in_axes=(0, None))(x[idx], t)
        return (
            jnp.concatenate([s[0, : k + 1], s[1:-1, k], s[-1, k:]], axis=0) if L > window else s[0]
        )

    return score
