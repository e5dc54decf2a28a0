r"""A cycled filter whose analysis samples the posterior of a learned diffusion prior.

The forecast ensemble comes from the model (the driver :func:`jaxda.assimilate.assimilate`
propagates it); at each observation time every analysis member is an independent draw from

.. math:: p(z \mid y) \propto p_θ(z)\; \mathcal N\big(y;\ H(c + d \odot z),\ R\big),
    \qquad x^a = c + d \odot z ,

where ``p_θ`` is a diffusion prior known through its score ``s_θ(z_t, t) ≈ ∇ log p_t(z_t)``
(trained outside the method, e.g. with :func:`jaxda.diffusion.train`) and ``(c, d)`` are the
prior's coordinates:

* ``prior="increment"`` (default): ``c = \bar x^f`` the forecast mean, ``d`` the forecast
  spread per component (``scale="spread"``) or a fixed scale. ``p_θ`` is the law of the
  *standardized forecast error* ``z = (x^{true} - \bar x^f)/s^f``, learned from a cycled
  reference filter on a training truth (``benchmarks/bench_prior_filter_l96.py``). The
  background is then the learned non-Gaussian error law, centred on the flow-dependent
  forecast mean and scaled by the flow-dependent spread: a hybrid of an ensemble filter
  (``\bar x^f``, ``s^f`` from the model) and a variational method with a learned
  (static-correlation) background error law.
* ``prior="state"``: ``c``, ``d`` fixed (``loc``, ``scale``, e.g. the climatological mean and
  std), ``p_θ`` the learned climatology. Alone it ignores the forecast and cannot track; with
  ``t_start < 1`` each member's sampling starts from its diffused forecast (below), so the
  forecast enters as the starting point (SDEdit).

* *Flow-dependent product prior* (``localization=ρ``, ``prior_cov=C_θ``, with
  ``"increment"``): ``p(z) ∝ p_θ(z)\, N(z; 0, ρ∘\hat C^f) / N(z; 0, C_θ)``, score
  ``s_θ - s_{N(0,C_θ)} + s_{N(0,ρ∘\hat C^f)}`` (each term diffused separately). The
  learned model contributes only its departure from its own Gaussian fit; the forecast
  ensemble's localized covariance ``ρ∘\hat C^f`` (in the prior's coordinates) gives the
  flow-dependent correlations. With a Gaussian ``p_θ`` the analysis is exactly the
  B-localized Kalman analysis, drawn i.i.d. (checked in ``tests/test_prior_filter.py``).

Why this design (increment prior, optionally times the ensemble Gaussian): a climatological
prior ignores the forecast and cannot track; the forecast-error law keeps the forecast as the
prior's centre and scale, its Gaussian case is exactly a Kalman analysis, and its training set
is cheap to collect from any cycled filter. Measured limits on Lorenz-96 (n = 40, every other
variable observed, R = I, dt_obs = 0.05; ``benchmarks/bench_prior_filter_l96.py``):

* the increment prior *alone* (static learned correlations, flow-dependent mean and spread,
  i.i.d. posterior draws) loses track, whether ``p_θ`` is learned or its Gaussian fit: the
  learned forecast-error correlations between neighbours are weak (|ρ| ≤ 0.3), so unobserved
  variables are hardly corrected, and i.i.d. draws lose the forecast anomalies' alignment
  with the growing modes, so the next forecast spread underestimates the error (inflation
  1.3–2, SDEdit starts ``t_start`` 0.1–0.4 and a fixed scale did not recover it);
* the flow-dependent product prior with the *Gaussian* fit (a B-localized EnKF posterior,
  drawn i.i.d.) tracks: RMSE 0.79 ± 0.09 (spread 0.46) against LETKF's 0.33 and EnSF's 1.56,
  N = 20; i.i.d. draws discard the anomalies' alignment with the growing modes, which a
  square-root filter keeps;
* with the *learned* score (:class:`GaussianResidual`, 800 DSM steps of a 16-channel
  :class:`PeriodicConvNet` on 1900 error vectors, CPU) it tracks for ~30 cycles, then one
  analysis blows up (all 3 seeds; MMPS and DPS alike): the learned correction is not
  accurate enough where the flow-dependent Gaussian puts the diffused state. A bigger
  network, more training data (errors of this filter itself rather than LETKF's) and a
  check on the correction's size are the next steps;
* ``pairing="transport"`` (below: a deterministic, member-by-member analysis that keeps each
  member paired with its forecast) recovers that alignment (3 seeds, 500 cycles): the
  Gaussian product prior with inflation 1.04 reaches RMSE 0.367 ± 0.007 (spread 0.41; i.i.d.
  0.787, LETKF 0.326); without inflation it under-disperses (spread 0.27) and loses track on
  2 of 3 seeds, as a square-root filter does. The learned product prior tracks with
  transport and ``t_start = 0.5`` (0.381 ± 0.012, all seeds; its Gaussian fit 0.383 at the
  same setting, so the learned part adds nothing measurable) and still blows up from
  ``t_start = 1`` (a few members per analysis land 10–33 forecast spreads away) and with DPS;
  ``t_start = 0.3`` (a weaker update) gives 0.695. The i.i.d. controls with the same
  inflation (0.619 Gaussian; learned with ``t_start = 0.5``: 0.928, it tracks) show that
  ``t_start = 0.5`` keeps the learned prior from blowing up and the pairing makes it accurate;
* a small score network trained alone by DSM on the errors was unusable as a prior (its
  unconditional samples had twice the data's std and guided analyses blew up);
  :class:`GaussianResidual` (the Gaussian fit's exact noise prediction plus ``μ(t)`` times a
  learned correction) fixes the unconditional law (std 1.01) and single analyses.
* ``sampler="ddim"`` with few steps under-disperses (variance ratio 0.65 at 20 ancestral
  steps, 0.8 at 50 on the exact Gaussian test); ``"dpmpp2m"`` is within 1–4 % at 10–20 steps.

Sampling. The posterior score is the prior score plus a likelihood score of the diffused state
(:func:`jaxda.diffusion.guided_score`): ``"mmps"`` (Rozet et al. 2024, moment matching with
Tweedie's covariance, exact for a Gaussian prior and linear ``H``), ``"dps"`` (Chung et al.
2023) or ``"sda"`` (Rozet & Louppe 2023). The observations are whitened first,
``\tilde y = R^{-1/2} y``, ``\tilde H = R^{-1/2} H`` (diagonal or full ``R``), and missing
values (``NaN``) are zeroed in both, so they drop out exactly. The reverse diffusion runs from
``t_start`` to ``sde.t_min`` on a grid uniform in the log signal-to-noise ratio with DDIM
(Song et al. 2021; ``eta = 1`` is the ancestral DDPM step, ``eta = 0`` the deterministic
probability-flow step) or DPM-Solver++(2M) (Lu et al. 2022). ``t_start = 1`` starts every
member from the terminal noise ``N(0, (μ_1² + σ_1²) I)``: independent posterior draws, as in
SDA (Rozet & Louppe 2023). ``t_start < 1`` starts member ``i`` from its diffused forecast
``μ(t_*) z^f_i + σ(t_*) ε`` (partial noising, SDEdit, Meng et al. 2022), as EnSF
(Bao et al. 2024) keeps each member paired with its forecast; the analysis then keeps part of
the forecast's memory (its non-Gaussian features) at the cost of being an approximate draw.

Pairing (``pairing=``). With ``"independent"`` (default) every analysis member is a fresh
posterior draw, as above: its link to its own forecast member is lost (``t_start = 1``) or
loosened (SDEdit). With ``"transport"`` each member is *carried* from the prior to the
posterior by a deterministic map,

.. math:: z^a_i = Φ^{y}_{t_* \to t_{min}}\big(Φ_{t_{min} \to t_*}(z^f_i)\big),

where ``Φ`` is the flow of the prior's probability-flow ODE
``dz/dt = f(t) z - ½ g(t)² s_θ(z, t)`` (Song et al. 2021), run forward in time: it *encodes*
the forecast member into its latent at ``t_* = t_start``, and ``Φ^y`` is the flow of the same
ODE with the posterior score (prior score plus guidance), run back: it *decodes* the latent
into an analysis member. Both are integrated with the chosen deterministic sampler on the same
log-SNR grid (DPM-Solver++(2M)'s exponential-integrator formula holds for negative log-SNR
steps too; ``"ddim"`` with ``eta = 0`` is DDIM inversion). The prior's flow pushes the prior
to its diffused law at ``t_*``, which at ``t_* = 1`` is the reference ``N(0, I)`` (up to
``μ(1) ≈ 0.007`` with :func:`vp_linear`); the posterior's flow pushes that reference back to
the posterior: so the composite pushes the prior to the posterior, member by member, with no
random number (the product prior's ``Ĉ^f`` does depend on the whole ensemble). This is the
"dual diffusion implicit bridge" of Su et al. (2023) with the posterior as the target domain,
a transport-map (coupling) filter in the sense of Spantini, Baptista & Marzouk (2022).

For a Gaussian prior ``N(0, P)``, linear ``H`` and MMPS (exact there) the flows are linear,
``Φ_{0 \to t}(z) = (μ_t^2 P + σ_t^2 I)^{1/2} P^{-1/2} z``, and as ``μ(1) \to 0``

.. math:: z^a_i = m^a + P_a^{1/2} P^{-1/2} z^f_i, \qquad
    P_a = (P^{-1} + \tilde H^\top \tilde H)^{-1},\quad m^a = P_a \tilde H^\top \tilde y

(symmetric square roots). With ``P`` the members' own covariance (``localization`` = ones)
the analysis ensemble has *exactly* the Kalman analysis mean and covariance of the forecast
ensemble: a deterministic square-root filter whose transform ``P_a^{1/2} P^{-1/2}`` acts in
state space (the ETKF's acts in ensemble space; Bishop, Etherton & Majumdar 2001). Checked
in ``tests/test_prior_filter.py`` (mean to 1 % of the posterior std, the ``O(μ(1))`` bias of a
terminal law that keeps ``μ(1)`` of the signal, shared with i.i.d. draws; covariance to
0.14 % at 20 DPM++(2M) steps, 3 % at 10, 0.002 % at 50; first-order DDIM is off by 38 % at
20 steps and 9 % at 100). With a taper (``ρ∘Ĉ^f``) it is a localized square-root update;
with ``inflation`` λ the encoded member is the inflated forecast ``\bar x^f + λ(x_i -
\bar x^f)`` (``"increment"``; ``"state"``: the member itself). ``t_start < 1`` encodes only
up to ``t_*``, where the latent still holds ``μ(t_*)`` of the member: the update is partial
(the analysis tends to the forecast as ``t_start \to t_{min}``). Cost: ``N · n_steps``
unguided score evaluations more per analysis (the encoding).

A time with no observation leaves the forecast unchanged. ``info`` is
:class:`jaxda.core.AnalysisInfo` (``n_obs``, ``status = NONFINITE`` if the analysis is not
finite).

References: Rozet & Louppe (2023), *Score-based data assimilation*, NeurIPS; Bao, Zhang &
Zhang (2024), *An ensemble score filter for tracking high-dimensional nonlinear dynamical
systems*, CMAME; Rozet, Andry, Lanusse & Louppe (2024), *Learning diffusion priors from
observations by expectation maximization*, NeurIPS (MMPS); Chung, Kim, Mccann, Klasky & Ye
(2023), *Diffusion posterior sampling for general noisy inverse problems*, ICLR (DPS);
Meng et al. (2022), *SDEdit*, ICLR.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from ..core import EnsembleState, Method, analysis_info, check_vector, ensemble_init, is_concrete
from ..observations import fill_missing, observed
from ._mmps import guided_score
from ._sde import SDE, sde_from_params, vp_linear
from ._training import _model_from_manifest, _model_info, _sde_info

ScoreFn = Callable[[Array, Array], Array]

_PRIORS = ("increment", "state")
_SAMPLERS = ("ddim", "dpmpp2m")
_GUIDANCES = ("mmps", "dps", "sda")
_PAIRINGS = ("independent", "transport")


def gaussian_score(
    mean: Float[Array, " n"], cov: Float[Array, "n n"], sde: SDE | None = None
) -> ScoreFn:
    r"""Exact score of a Gaussian prior ``N(m, C)`` diffused by ``sde``:
    ``∇ log p_t(x) = -(μ_t² C + σ_t² I)^{-1}(x - μ_t m)`` (one ``eigh`` of ``C``, ``O(n³)``,
    when built; ``O(n²)`` per call).

    The training-free reference prior of :func:`diffusion_filter` (tests, and the Gaussian
    baseline of the learned prior in the benchmark: ``C`` the empirical covariance of the
    training errors).

    Examples:
        >>> import jax.numpy as jnp
        >>> s = gaussian_score(jnp.zeros(2), jnp.eye(2))
        >>> [round(v, 6) for v in s(jnp.ones(2), 0.5).tolist()]  # VP: μ² + σ² = 1
        [-1.0, -1.0]
    """
    mean, cov = jnp.asarray(mean), jnp.asarray(cov)
    if mean.ndim != 1 or cov.shape != (mean.size, mean.size):
        raise ValueError(
            f"mean must be (n,) and cov (n, n), got shapes {mean.shape} and {cov.shape}"
        )
    sde = vp_linear() if sde is None else sde
    lam, U = jnp.linalg.eigh(0.5 * (cov + cov.T))  # once: each call is then O(n²)
    lam = jnp.maximum(lam, 0.0)

    def score(x, t):
        t = jnp.asarray(t)
        mu, s = sde.mean_coef(t), sde.std(t)
        return -U @ ((U.T @ (x - mu * mean)) / (mu**2 * lam + s**2))

    return score


class GaussianResidual(nnx.Module):
    r"""Noise predictor ``ε(x, t) = ε_G(x, t) + μ(t)\, \mathrm{net}(x, t)``: the exact noise
    prediction of a Gaussian ``N(0, C)`` (the training set's fit) plus a learned correction.

    ``ε_G(x, t) = σ_t (μ_t² C + σ_t² I)^{-1} x`` (one ``eigh`` of ``C`` when built). The
    network then only learns the departure from the Gaussian, which a small network trained
    briefly does well where it fails at the whole law; the factor ``μ(t)`` switches the
    correction off at high noise, where the diffused law is Gaussian anyway and where guidance
    multiplies the network's Jacobian errors by ``σ²/μ``. With :func:`diffusion_filter`'s
    product prior, ``s_θ - s_{N(0,C)} = -μ\,\mathrm{net}/σ`` is exactly the learned
    non-Gaussian part (pass ``prior_cov=C``). Train it with :func:`jaxda.diffusion.train`
    like any noise predictor (only ``net``'s parameters are ``nnx.Param``). When ``net`` has a
    ``config()`` (:class:`PeriodicConvNet`, :class:`ResidualMLP`) and ``sde`` is a built-in
    one, the checkpoint manifest records ``C``, the network and the SDE, and
    :func:`jaxda.diffusion.restore_checkpoint` rebuilds the model without a template (what
    ``jaxda run --method diffusion_filter --score-checkpoint DIR`` does).

    Examples:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from jaxda.diffusion import PeriodicConvNet, vp_linear
        >>> net = PeriodicConvNet(channels=4, depth=1, rngs=nnx.Rngs(0))
        >>> model = GaussianResidual(net, jnp.eye(8), vp_linear())
        >>> model(jnp.zeros((3, 8)), jnp.full(3, 0.5)).shape
        (3, 8)
    """

    def __init__(self, net: nnx.Module, cov: Array, sde: SDE):
        cov = jnp.asarray(cov)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"cov must be a square (n, n) matrix, got shape {cov.shape}")
        lam, U = jnp.linalg.eigh(0.5 * (cov + cov.T))
        self.net = net
        self.cov = nnx.Variable(cov)
        self.lam = nnx.Variable(jnp.maximum(lam, 0.0))
        self.U = nnx.Variable(U)
        self.sde = sde

    def config(self) -> dict[str, Any] | None:
        """``C``, the network's class and ``config()`` and the SDE, stored in training
        checkpoints; ``None`` when the network has no ``config()`` or the SDE is custom."""
        net, sde = _model_info(self.net), _sde_info(self.sde)
        if net["config"] is None or sde is None:
            return None
        return {"net": net, "cov": np.asarray(self.cov[...]).tolist(), "sde": sde}

    @classmethod
    def from_config(cls, config: dict[str, Any], *, rngs: nnx.Rngs) -> GaussianResidual:
        """The model described by :meth:`config` (a fresh network, initialised from ``rngs``)."""
        net = _model_from_manifest("(the network of a GaussianResidual)", config["net"])
        sde = sde_from_params(config["sde"]["name"], config["sde"]["params"])
        del rngs  # the network is built by its own config
        return cls(net, jnp.asarray(config["cov"]), sde)

    def __call__(self, x: Array, t: Array) -> Array:
        t = jnp.broadcast_to(jnp.asarray(t), x.shape[:-1])[..., None]
        mu, sig = self.sde.mean_coef(t), self.sde.std(t)
        U, lam = self.U[...], self.lam[...]
        eps_g = sig * (((x @ U) / (mu**2 * lam + sig**2)) @ U.T)
        return eps_g + mu * self.net(x, t[..., 0])  # pyright: ignore[reportCallIssue]


def _grid(sde: SDE, t_start: float, t_end: float, n_steps: int) -> np.ndarray:
    """``n_steps + 1`` times from ``t_start`` down to ``t_end``, uniform in ``λ = log(μ/σ)``."""
    with jax.ensure_compile_time_eval():
        t_tab = np.linspace(t_end, t_start, 20001)
        lam = np.asarray(sde.log_mean(jnp.asarray(t_tab)) - jnp.log(sde.std(jnp.asarray(t_tab))))
    if not np.all(np.isfinite(lam)):
        raise ValueError(
            f"the log signal-to-noise ratio must be finite on [t_end, t_start] = "
            f"[{t_end}, {t_start}] (σ(t_end) > 0 and μ(t_start) > 0)"
        )
    lams = np.linspace(lam[-1], lam[0], n_steps + 1)
    ts = np.interp(-lams, -lam, t_tab)  # -λ increases with t
    ts[0], ts[-1] = t_start, t_end
    return ts


def _ddim_step(score_fn, sde, eta, x, t, t1, key):
    """One DDIM step from ``t`` to ``t1``; ``eta = 0`` (then ``key`` may be ``None``) is the
    deterministic probability-flow step, valid in both directions (``t1 > t``: DDIM
    inversion)."""
    a, s = sde.mean_coef(t), sde.std(t)
    a1, s1 = sde.mean_coef(t1), sde.std(t1)
    sc = score_fn(x, t)
    x0 = (x + s**2 * sc) / a
    eps = -s * sc
    if eta == 0.0:
        return a1 * x0 + s1 * eps
    ratio = (a * s1) / (a1 * s)
    c = eta * s1 * jnp.sqrt(jnp.clip(1.0 - ratio**2, 0.0, 1.0))
    z = jax.random.normal(key, x.shape, x.dtype)
    return a1 * x0 + jnp.sqrt(jnp.maximum(s1**2 - c**2, 0.0)) * eps + c * z


def _run_sampler(sampler, score_fn, sde, eta, ts, key, x):
    """Diffusion of one state ``x`` (at ``ts[0]``) along the grid ``ts`` to ``ts[-1]``.

    Decreasing ``ts``: the reverse (generating) direction. Increasing ``ts`` (deterministic
    samplers only: ``"dpmpp2m"``, or ``"ddim"`` with ``eta = 0``): the probability-flow ODE run
    forward in time (encoding ``x_0`` into its latent ``x_t``); both exponential-integrator
    formulas hold for either sign of the log-SNR step ``h``. ``key`` may be ``None`` when the
    sampler is deterministic.
    """
    ts = jnp.asarray(ts, x.dtype)
    n = ts.size - 1
    if sampler == "ddim":
        if eta == 0.0:

            def body0(x, inp):
                t, t1 = inp
                return _ddim_step(score_fn, sde, 0.0, x, t, t1, None), None

            return jax.lax.scan(body0, x, (ts[:-1], ts[1:]))[0]

        def body(x, inp):
            t, t1, k = inp
            return _ddim_step(score_fn, sde, eta, x, t, t1, k), None

        keys = jax.random.split(key, n)
        return jax.lax.scan(body, x, (ts[:-1], ts[1:], keys))[0]

    # DPM-Solver++(2M) on the log-SNR grid
    lam = sde.log_mean(ts) - jnp.log(sde.std(ts))
    h = jnp.diff(lam)
    r = jnp.concatenate([jnp.ones(1, x.dtype), h[:-1] / h[1:]])
    first = jnp.arange(n) == 0

    def body2(carry, inp):
        x, x0_prev = carry
        t, t1, h_i, r_i, is_first = inp
        s, a1, s1 = sde.std(t), sde.mean_coef(t1), sde.std(t1)
        x0 = sde.tweedie(x, score_fn(x, t), t)
        d = jnp.where(is_first, x0, (1.0 + 0.5 / r_i) * x0 - (0.5 / r_i) * x0_prev)
        return ((s1 / s) * x - a1 * jnp.expm1(-h_i) * d, x0), None

    return jax.lax.scan(body2, (x, jnp.zeros_like(x)), (ts[:-1], ts[1:], h, r, first))[0][0]


def _transport(sampler, prior_score, post_score, sde, ts, z):
    """The transport analysis of one member ``z`` (at ``ts[-1] = t_min``): encoded with the
    prior's probability-flow ODE up to ``ts[0]`` and decoded with the posterior's back down."""
    latent = _run_sampler(sampler, prior_score, sde, 0.0, ts[::-1], None, z)
    return _run_sampler(sampler, post_score, sde, 0.0, ts, None, latent)


def _scale_array(name: str, value: Any) -> Array:
    arr = jnp.asarray(value)
    if is_concrete(arr):
        a = np.asarray(arr, dtype=float)
        if a.ndim > 1 or a.size == 0 or not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be a finite scalar or vector, got shape {a.shape}")
    return arr


def diffusion_filter(
    score_fn: ScoreFn,
    sde: SDE | None = None,
    *,
    prior: str = "increment",
    scale: str | float | Array = "spread",
    inflation: float = 1.0,
    localization: Array | None = None,
    prior_cov: Array | None = None,
    loc: float | Array = 0.0,
    guidance: str = "mmps",
    sampler: str = "dpmpp2m",
    n_steps: int = 20,
    eta: float = 1.0,
    t_start: float = 1.0,
    pairing: str = "independent",
    cg_steps: int = 3,
    gamma: float = 1e-2,
) -> Method:
    r"""A learned-prior (diffusion) filter as a :class:`jaxda.core.Method` (see module doc).

    Args:
        score_fn: prior score ``(z, t) -> ∇ log p_t(z)`` of one state ``z`` ``(n,)`` in the
            prior's coordinates, pure (jit/vmap/vjp-able), e.g. from
            :func:`jaxda.diffusion.score_fn_from_model` or :func:`gaussian_score`.
        sde: the forward SDE ``score_fn`` was trained with (default :func:`vp_linear`).
        prior: ``"increment"`` (``x = \bar x^f + d ⊙ z``, ``p_θ`` the law of the standardized
            forecast error) or ``"state"`` (``x = loc + scale ⊙ z``, ``p_θ`` e.g. the
            climatology; use ``t_start < 1``).
        scale: ``d``: ``"spread"`` (forecast std per component, ``"increment"`` only) or a
            positive scalar / ``(n,)`` vector.
        inflation: factor multiplying ``d`` (``≥ 1`` widens the prior): i.i.d. posterior draws
            lose the forecast anomalies' alignment with the growing modes, so the next forecast
            spread underestimates the error; the increment prior then needs this inflation,
            as an EnKF does (measured in ``benchmarks/bench_prior_filter_l96.py``).
        localization: ``(n, n)`` taper ``ρ`` (e.g. Gaspari–Cohn): the prior becomes the
            *flow-dependent product prior* ``p_θ(z) N(z; 0, ρ∘Ĉ^f) / N(z; 0, C_θ)``, with score
            ``s_θ - s_{N(0, C_θ)} + s_{N(0, ρ∘Ĉ^f)}`` at every diffusion time (each term
            diffused separately: exact when ``p_θ`` is Gaussian, an approximation otherwise);
            ``Ĉ^f`` is the forecast ensemble's covariance in the prior's coordinates. The
            learned model then only contributes its departure from its own Gaussian fit
            ``C_θ`` (``prior_cov``, required with ``localization``); the ensemble gives the
            flow-dependent correlations. Forms ``n × n`` matrices: for small ``n``.
        prior_cov: ``C_θ`` ``(n, n)``, the covariance of ``p_θ`` (of its training set).
        loc: ``c`` for ``prior="state"`` (scalar or ``(n,)``).
        guidance: ``"mmps"``, ``"dps"`` or ``"sda"`` (:func:`jaxda.diffusion.guided_score`).
        sampler: ``"dpmpp2m"`` (deterministic, default) or ``"ddim"`` (with ``eta``; needs
            many steps to keep the posterior variance).
        n_steps: reverse-diffusion steps (score evaluations per member and analysis).
        eta: DDIM stochasticity in ``[0, 1]`` (``1`` = ancestral DDPM step); ``0`` with
            ``pairing="transport"``.
        t_start: diffusion time the sampling starts from, in ``(sde.t_min, 1]``: ``1`` draws
            from the terminal noise, less starts from the diffused forecast member (SDEdit).
        pairing: ``"independent"`` (each member an independent posterior draw) or
            ``"transport"`` (each forecast member encoded by the prior's probability-flow ODE
            and decoded by the posterior's: a deterministic, member-by-member map; a
            square-root filter for a Gaussian prior; needs ``sampler="dpmpp2m"`` or
            ``"ddim"`` with ``eta=0``). See the module doc.
        cg_steps: conjugate-gradient iterations of MMPS.
        gamma: SDA's ``γ`` (``guidance="sda"`` only).

    Cost per analysis: ``N · n_steps`` guided-score evaluations (for MMPS each is one forward
    and ``cg_steps + 1`` vector–Jacobian products of ``score_fn``), plus ``N · n_steps``
    score evaluations with ``pairing="transport"``.

    Examples:
        With a standard normal increment prior and every variable observed (``R = I``), the
        analysis mean is half-way between the forecast mean and ``y`` when the forecast
        spread is 1:

        >>> import jax, jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> method = diffusion_filter(gaussian_score(jnp.zeros(3), jnp.eye(3)), n_steps=10)
        >>> obs = observation_model(identity(3), obs_std=1.0)
        >>> E = jax.random.normal(jax.random.key(0), (400, 3))
        >>> E = (E - E.mean(0)) / E.std(0, ddof=1)  # mean 0, spread 1
        >>> state, info = method.step(jax.random.key(1), method.init(E), jnp.full(3, 2.0), obs)
        >>> bool(jnp.allclose(state.ensemble.mean(0), 1.0, atol=0.15)), int(info.n_obs)
        (True, 3)

        ``pairing="transport"`` with the prior ``N(0, Ĉ^f)`` of the members themselves
        (``localization`` = ones; ``prior_cov`` cancels the ``N(0, I)`` score) maps the
        forecast ensemble deterministically onto the exact Kalman analysis, here mean ``1``
        and std ``1/√2`` per component, with any 20 members:

        >>> tr = diffusion_filter(
        ...     gaussian_score(jnp.zeros(3), jnp.eye(3)), pairing="transport", n_steps=20,
        ...     localization=jnp.ones((3, 3)), prior_cov=jnp.eye(3))
        >>> from jax.scipy.linalg import solve_triangular
        >>> E20 = jax.random.normal(jax.random.key(2), (20, 3))
        >>> L = jnp.linalg.cholesky(jnp.cov(E20.T))
        >>> E20 = solve_triangular(L, (E20 - E20.mean(0)).T, lower=True).T  # mean 0, cov I
        >>> Ea = tr.step(jax.random.key(1), tr.init(E20), jnp.full(3, 2.0), obs)[0].ensemble
        >>> Ea.mean(0).round(2).tolist(), jnp.diag(jnp.cov(Ea.T)).round(2).tolist()
        ([1.0, 1.0, 1.0], [0.5, 0.5, 0.5])
        >>> bool(jnp.allclose(Ea, tr.step(jax.random.key(9), tr.init(E20), jnp.full(3, 2.0),
        ...     obs)[0].ensemble))  # no randomness
        True
    """
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable (z, t) -> score, got {type(score_fn)}")
    sde = vp_linear() if sde is None else sde
    if not isinstance(sde, SDE):
        raise TypeError(f"sde must be a jaxda.diffusion.SDE, got {type(sde).__name__}")
    if prior not in _PRIORS:
        raise ValueError(f"prior must be one of {_PRIORS}, got {prior!r}")
    if sampler not in _SAMPLERS:
        raise ValueError(f"sampler must be one of {_SAMPLERS}, got {sampler!r}")
    if guidance not in _GUIDANCES:
        raise ValueError(f"guidance must be one of {_GUIDANCES}, got {guidance!r}")
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if not isinstance(cg_steps, int) or isinstance(cg_steps, bool) or cg_steps < 1:
        raise ValueError(f"cg_steps must be an integer >= 1, got {cg_steps!r}")
    if not (math.isfinite(float(eta)) and 0.0 <= float(eta) <= 1.0):
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if not (math.isfinite(float(inflation)) and float(inflation) > 0.0):
        raise ValueError(f"inflation must be finite and > 0, got {inflation}")
    if (localization is None) != (prior_cov is None):
        raise ValueError("give both localization and prior_cov (the product prior) or neither")
    if (
        localization is not None
        and prior_cov is not None
        and (jnp.ndim(localization) != 2 or jnp.shape(localization) != jnp.shape(prior_cov))
    ):
        raise ValueError("localization and prior_cov must be (n, n) matrices of the same shape")
    if not (math.isfinite(float(gamma)) and float(gamma) >= 0.0):
        raise ValueError(f"gamma must be finite and >= 0, got {gamma}")
    t_end = float(sde.t_min)
    if not (t_end < float(t_start) <= 1.0):
        raise ValueError(f"t_start must be in (sde.t_min, 1] = ({t_end}, 1], got {t_start}")
    if pairing not in _PAIRINGS:
        raise ValueError(f"pairing must be one of {_PAIRINGS}, got {pairing!r}")
    transport = pairing == "transport"
    if transport and sampler == "ddim" and float(eta) != 0.0:
        raise ValueError(
            f"pairing='transport' needs a deterministic sampler: sampler='dpmpp2m', or "
            f"sampler='ddim' with eta=0 (got eta={eta})"
        )
    if isinstance(scale, str):
        if scale != "spread":
            raise ValueError(f"scale must be 'spread' or a positive number/vector, got {scale!r}")
        if prior != "increment":
            raise ValueError("scale='spread' is for prior='increment'; give the state's scale")
        fixed_scale = None
    else:
        fixed_scale = _scale_array("scale", scale)
        if is_concrete(fixed_scale) and not bool(jnp.all(fixed_scale > 0)):
            raise ValueError(f"scale must be positive, got {scale!r}")
    loc_arr = _scale_array("loc", loc)
    ts = _grid(sde, float(t_start), t_end, n_steps)
    from_noise = float(t_start) == 1.0

    def coords(E):
        n = E.shape[1]
        if prior == "increment":
            c = E.mean(0)
        else:
            c = jnp.broadcast_to(loc_arr.astype(E.dtype), (n,))
        if fixed_scale is None:
            sd = E.std(0, ddof=1)
            d = jnp.maximum(sd, jnp.finfo(E.dtype).eps * (1.0 + jnp.abs(c)))
        else:
            d = jnp.broadcast_to(fixed_scale.astype(E.dtype), (n,))
        return c, d

    def step(key, state, y, obs):
        E = state.ensemble
        check_vector(y, "y", obs.dim)
        if prior == "state" and jnp.ndim(loc_arr) == 1 and loc_arr.shape[0] != E.shape[1]:
            raise ValueError(f"loc must have length n={E.shape[1]}, got {loc_arr.shape[0]}")
        if fixed_scale is not None and jnp.ndim(fixed_scale) == 1:
            if fixed_scale.shape[0] != E.shape[1]:
                raise ValueError(f"scale must have length n={E.shape[1]}")
        mask = observed(y)
        noise = obs.noise.restrict(mask)
        yw = noise.whiten(fill_missing(y, mask)) * mask
        c, d0 = coords(E)
        d = inflation * d0

        def obs_fn(z):
            return noise.whiten(obs.operator(c + d * z)) * mask

        prior_score: ScoreFn = score_fn
        if localization is not None and prior_cov is not None:
            Zf = (E - c) / d0  # unit forecast variance: d = inflation · d0 scales the prior
            Zf = Zf - Zf.mean(0)
            Cf = jnp.asarray(localization, E.dtype) * (Zf.T @ Zf) / (E.shape[0] - 1)
            zero = jnp.zeros(E.shape[1], E.dtype)
            g_ens = gaussian_score(zero, Cf, sde)
            g_fit = gaussian_score(zero, jnp.asarray(prior_cov, E.dtype), sde)

            def product_score(z, t):
                return score_fn(z, t) - g_fit(z, t) + g_ens(z, t)

            prior_score = product_score

        post = guided_score(
            prior_score, sde, obs_fn, yw, 1.0, guidance=guidance, gamma=gamma, cg_steps=cg_steps
        )
        if transport:
            # the (inflated) forecast member in the prior's coordinates: for "increment" the
            # anomaly λ(x_i - x̄) / (λ d0) = (x_i - x̄)/d0, for "state" the member itself
            Zf = (E - c) / (d0 if prior == "increment" else d)
            Z = jax.vmap(lambda z: _transport(sampler, prior_score, post, sde, ts, z))(Zf)
            Ea = (c + d * Z).astype(E.dtype)
            Ea = jnp.where(jnp.any(mask), Ea, E)
            return EnsembleState(Ea), analysis_info(Ea, mask)
        k_start, k_run = jax.random.split(key)
        eps = jax.random.normal(k_start, E.shape, E.dtype)
        if from_noise:
            Z0 = sde.terminal_std().astype(E.dtype) * eps
        else:
            Zf = (E - c) / d
            Z0 = sde.mean_coef(ts[0]) * Zf + sde.std(jnp.asarray(ts[0])) * eps
        keys = jax.random.split(k_run, E.shape[0])
        Z = jax.vmap(lambda k, z: _run_sampler(sampler, post, sde, eta, ts, k, z))(keys, Z0)
        Ea = (c + d * Z).astype(E.dtype)
        Ea = jnp.where(jnp.any(mask), Ea, E)
        return EnsembleState(Ea), analysis_info(Ea, mask)

    return Method(ensemble_init, step)
