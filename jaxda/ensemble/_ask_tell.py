r"""Ask/tell form of ES-MDA and of the subspace IES, for forward models that are not JAX.

:func:`jaxda.ensemble.esmda` and :func:`jaxda.ensemble.ies` call the forward model ``g``
themselves (vmapped, inside ``lax.scan`` / ``lax.while_loop``). Reservoir and hydrology
simulators are usually external programs: a subprocess, a job on a cluster, a file
exchange. The ask/tell form turns the loop inside out, like an optimizer's ask/tell
interface (and the ``assimilate(X, Y)`` shape of ``iterative_ensemble_smoother``):

.. code-block:: python

    state = esmda_init(key, prior, y, obs_std=theta, alpha=4)
    while not state.done:
        X = np.asarray(esmda_ask(state))  # (N, n) ensemble to evaluate
        Y = my_simulator(X)  # (N, m) predictions, a row of nan = failed member
        state = esmda_tell(state, Y)
    result = esmda_result(state)  # the ESMDAResult that esmda() returns

The user evaluates ``N_a + 1`` ensembles for ES-MDA (the prior, then the ensemble after
every assimilation) and at most ``max_steps + 1`` for the IES (the prior, then every
Gauss–Newton iterate until convergence). The state is an :class:`equinox.Module` of
arrays; :func:`esmda_tell` / :func:`ies_tell` are pure JAX functions (jit-compiled, one
compilation per run) that run **the same code** as the JAX loops: the update
(``_update`` of :mod:`jaxda.ensemble._esmda`, the Gauss–Newton step of
:mod:`jaxda.ensemble._ies`), the roll-back of failed members, the history and the status.
With the same key (or the same ``perturbations=``) and a simulator that computes the same
``g``, the result equals :func:`~jaxda.ensemble.esmda` / :func:`~jaxda.ensemble.ies` to
round-off.

**Failed members.** A row of ``predictions`` with a non-finite entry (where ``y`` is
observed) marks a failed simulation. As in the JAX path, the member is rolled back to its
last parameters with finite predictions, no longer updated and dropped from every ensemble
statistic (``failed`` in the result, ``status = FAILED_MEMBERS``). :func:`esmda_ask` still
returns every member (failed ones at their frozen values); their rows of the next
predictions are not used. With fewer than two active members no update is possible: the
run is finished at once (``status = NONFINITE``); the remaining ES-MDA history entries
repeat the last one with a zero step, as :func:`~jaxda.ensemble.esmda` records them.

For a black-box simulator that should rather run *inside* the JAX loop (one Python
callback per ensemble), wrap it with :func:`jaxda.black_box` and pass it to ``esmda``
(see :func:`jaxda.ensemble.esmda`).

References:
    Emerick & Reynolds (2013), *Ensemble smoother with multiple data assimilation*,
    Computers & Geosciences 55, 3-15.
    Evensen, Raanes, Stordal & Hove (2019), *Efficient implementation of an iterative
    ensemble smoother for data assimilation and reservoir history matching*,
    Frontiers in Applied Mathematics and Statistics 5:47.
    ``iterative_ensemble_smoother`` (Equinor), whose ``ESMDA.assimilate(X, Y)`` leaves
    the forward model to the user in the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..core import is_concrete, raise_on_failure
from ._esmda import (
    ESMDAResult,
    Noise,
    SmootherHistory,
    _check_bool,
    _check_key,
    _esmda_result,
    _esmda_setup,
    _history_entry,
    _initial_statistics,
    _roll_back,
    _unflatten_ensemble,
    _update,
)
from ._ies import (
    IESResult,
    _ies_accept,
    _ies_propose,
    _ies_running,
    _ies_setup,
    _ies_start,
    _IESCarry,
    _IESProblem,
    _result,
    _set,
)

PyTree = Any

__all__ = [
    "ESMDAState",
    "IESState",
    "esmda_ask",
    "esmda_init",
    "esmda_result",
    "esmda_tell",
    "ies_ask",
    "ies_init",
    "ies_result",
    "ies_tell",
]


def _told_predictions(predictions: Any, expected: Array, name: str) -> Array:
    """Validate the ``(N, m)`` predictions told by the user; cast to the state's dtype."""
    Y = jnp.asarray(predictions)
    if Y.shape != expected.shape:
        raise ValueError(
            f"{name} expects predictions of shape (N, m)={expected.shape} (one row per member "
            f"of the asked ensemble, nan rows for failed members), got {Y.shape}"
        )
    if not (jnp.issubdtype(Y.dtype, jnp.inexact) or jnp.issubdtype(Y.dtype, jnp.integer)):
        raise TypeError(f"predictions must be numeric, got dtype {Y.dtype}")
    return Y.astype(expected.dtype)


def _check_not_done(done: Array, what: str) -> None:
    if is_concrete(done) and bool(done):
        raise ValueError(f"the run is finished; {what}")


# ------------------------------------------------------------------------------- ES-MDA
class ESMDAState(eqx.Module):
    """State of an ask/tell ES-MDA run (:func:`esmda_init`).

    A pytree of arrays (the configuration is static), so it can be saved, passed through
    ``jit`` and restored. The fields are read-only: advance the run with :func:`esmda_tell`.

    Attributes:
        ensemble: ``(N, n)`` flat current ensemble (the prior until the first update is
            accepted).
        predictions: ``(N, m)`` predictions of ``ensemble`` (``nan`` before the first tell).
        proposal: ``(N, n)`` flat ensemble to evaluate next (:func:`esmda_ask`).
        active: ``(N,)`` members still updated (not failed).
        history: :class:`~jaxda.ensemble.SmootherHistory` with ``N_a + 1`` entries, filled
            as the run advances (``nan`` after the last tell).
        n_told: number of tells so far (``N_a + 1`` when the run went to the end).
        n_steps: number of assimilations applied.
        done: ``True`` when no ensemble is left to evaluate; then call :func:`esmda_result`.
    """

    ensemble: Float[Array, "N n"]
    predictions: Float[Array, "N m"]
    proposal: Float[Array, "N n"]
    active: Bool[Array, " N"]
    scale: Float[Array, ""]
    history: SmootherHistory
    n_told: Int[Array, ""]
    n_steps: Int[Array, ""]
    too_few: Bool[Array, ""]
    done: Bool[Array, ""]
    y: Float[Array, " m"]
    observed: Bool[Array, " m"]
    noise: Noise
    theta: Float[Array, " m"]
    alphas: Float[Array, " Na"]
    perturbations: Float[Array, "Na N m"]
    localization: Float[Array, "n m"] | None
    unravel: Callable = eqx.field(static=True)
    inversion: str = eqx.field(static=True)
    truncation: float = eqx.field(static=True)


def esmda_init(
    key: Array,
    prior: PyTree,
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    mask: Bool[Array, " m"] | None = None,
    alpha: int | Float[Array, " Na"] = 4,
    normalize: bool = True,
    inversion: str = "exact",
    truncation: float = 0.99,
    localization: Float[Array, "n m"] | None = None,
    perturbations: Float[Array, "Na N m"] | None = None,
) -> ESMDAState:
    r"""Start an ask/tell ES-MDA run (Emerick & Reynolds 2013) for an external forward model.

    Takes the arguments of :func:`jaxda.ensemble.esmda` without the forward model; the same
    key draws the same perturbations ``ε^{(i,j)} ~ N(0, R)``. The run then alternates
    :func:`esmda_ask` (the ensemble to evaluate) and :func:`esmda_tell` (its predictions):
    the first tell gives ``g(E_0)``; every tell ``j`` then applies assimilation ``j``,

    .. math:: x_j^{(i)} = x_{j-1}^{(i)} + C_{xg}(C_{gg} + α_j R)^{-1}
              \big(y + \sqrt{α_j}ε^{(i,j)} - g(x_{j-1}^{(i)})\big),

    until ``N_a`` assimilations are applied and their result evaluated (``N_a + 1`` tells).

    Args:
        key: PRNG key for the observation perturbations.
        prior: prior ensemble, ``(N, n)`` array or pytree with leading member axis.
        y: data ``(m,)``; ``nan`` entries are not observed.
        noise, obs_std, obs_cov, mask: observation noise and mask, as in
            :func:`jaxda.ensemble.esmda`.
        alpha, normalize: the inflation factors, as in :func:`jaxda.ensemble.esmda`.
        inversion, truncation, localization, perturbations: as in :func:`jaxda.ensemble.esmda`.

    Returns:
        :class:`ESMDAState`, whose :func:`esmda_ask` is the prior.

    Examples:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> prior = jax.random.normal(jax.random.key(0), (30, 2))
        >>> state = esmda_init(jax.random.key(1), prior, jnp.array([1.0]), obs_std=0.1,
        ...                    alpha=3)
        >>> while not state.done:
        ...     X = np.asarray(esmda_ask(state))          # any non-JAX simulator
        ...     state = esmda_tell(state, X[:, :1] + X[:, 1:] ** 2)
        >>> out = esmda_result(state)
        >>> int(out.n_steps), int(out.status), out.posterior.shape
        (3, 0, (30, 2))
    """
    _check_key(key)
    s = _esmda_setup(
        key, prior, y, noise, obs_std, obs_cov, mask, alpha, normalize,
        inversion, truncation, localization, perturbations,
    )  # fmt: skip
    N, m, n_a = s.E0.shape[0], s.y.shape[0], s.alphas.shape[0]
    dtype = s.E0.dtype
    nan = jnp.full((n_a + 1,), jnp.nan, dtype)
    return ESMDAState(
        ensemble=s.E0,
        predictions=jnp.full((N, m), jnp.nan, dtype),
        proposal=s.E0,
        active=jnp.ones((N,), bool),
        scale=jnp.ones((), dtype),
        history=SmootherHistory(nan, nan, nan, nan, nan),
        n_told=jnp.array(0, jnp.int32),
        n_steps=jnp.array(0, jnp.int32),
        too_few=jnp.array(False),
        done=jnp.array(False),
        y=s.y,
        observed=s.observed,
        noise=s.noise,
        theta=s.theta,
        alphas=s.alphas,
        perturbations=s.perturbations.astype(dtype),
        localization=None if localization is None else jnp.asarray(localization),
        unravel=s.unravel,
        inversion=inversion,
        truncation=float(truncation),
    )


def esmda_ask(state: ESMDAState) -> PyTree:
    """The ensemble to evaluate next: ``(N, n)`` (or the prior's pytree structure).

    A JAX array; ``np.asarray(esmda_ask(state))`` gives the NumPy array to hand to a
    simulator (members as rows). Members that failed are returned at their frozen values.
    Raises ``ValueError`` once the run is finished (``state.done``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jnp.arange(6.0).reshape(3, 2)
        >>> state = esmda_init(jax.random.key(0), prior, jnp.array([1.0]), obs_std=1.0)
        >>> esmda_ask(state).tolist()
        [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    """
    if not isinstance(state, ESMDAState):
        raise TypeError(f"state must be an ESMDAState (esmda_init), got {type(state).__name__}")
    _check_not_done(state.done, "call esmda_result(state)")
    return _unflatten_ensemble(state.proposal, state.unravel)


@jax.jit
def _esmda_tell(state: ESMDAState, Y: Array) -> ESMDAState:
    s = state
    nan = jnp.asarray(jnp.nan, s.ensemble.dtype)

    def first(_):  # the prior's predictions
        active, scale, h = _initial_statistics(s.ensemble, Y, s.y, s.observed, s.theta)
        return s.ensemble, Y, active, scale, h, s.n_steps

    def later(_):  # the predictions of the proposal: accept it, roll failed members back
        E, Yn, active, step = _roll_back(
            s.ensemble, s.predictions, s.active, s.proposal, Y, s.observed, s.scale
        )
        h = (*_history_entry(E, Yn, s.y, s.observed, active, s.theta), nan, step)
        return E, Yn, active, s.scale, h, s.n_steps + 1

    t = s.n_told
    E, Yn, active, scale, h, n_steps = jax.lax.cond(t == 0, first, later, None)
    history = _set(s.history, t, h)
    n_a = s.alphas.shape[0]
    more = t < n_a
    ok = jnp.sum(active) >= 2
    k = jnp.minimum(t, n_a - 1)
    proposal = _update(
        E, Yn, s.y, s.noise, s.perturbations[k], s.alphas[k], active, s.observed,
        s.inversion, s.truncation, s.localization,
    )  # fmt: skip
    propose = more & ok
    stalled = more & ~ok
    # esmda() applies the remaining assimilations as no-ops: same entry, zero step
    fill = stalled & (jnp.arange(n_a + 1) > t)
    last = (*h[:3], nan, jnp.zeros((), nan.dtype))
    history = SmootherHistory(
        *(jnp.where(fill, v, col) for v, col in zip(last, history, strict=True))
    )
    return eqx.tree_at(
        lambda z: (
            z.ensemble, z.predictions, z.proposal, z.active, z.scale, z.history,
            z.n_told, z.n_steps, z.too_few, z.done,
        ),
        s,
        (
            E, Yn, jnp.where(propose, proposal, E), active, scale, history,
            t + 1, n_steps, s.too_few | stalled, ~propose,
        ),
    )  # fmt: skip


def esmda_tell(state: ESMDAState, predictions: Float[Array, "N m"] | np.ndarray) -> ESMDAState:
    """Give the predictions ``g`` of the asked ensemble; apply the next assimilation.

    ``predictions`` is ``(N, m)`` (NumPy or JAX), one row per member of
    :func:`esmda_ask`, in the same order; a row with ``nan``/``inf`` in an observed entry
    marks a failed member (rolled back and dropped, as in :func:`jaxda.ensemble.esmda`).
    Pure and jit-compiled (the update is the one of :func:`jaxda.ensemble.esmda`); returns
    the new state, ``state.done`` once the last assimilation has been evaluated.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (10, 1))
        >>> state = esmda_init(jax.random.key(1), prior, jnp.array([0.5]), obs_std=0.1,
        ...                    alpha=1)
        >>> state = esmda_tell(state, esmda_ask(state))          # g(x) = x
        >>> state = esmda_tell(state, esmda_ask(state))
        >>> bool(state.done), int(state.n_steps)
        (True, 1)
    """
    if not isinstance(state, ESMDAState):
        raise TypeError(f"state must be an ESMDAState (esmda_init), got {type(state).__name__}")
    _check_not_done(state.done, "no ensemble is waiting for predictions")
    return _esmda_tell(state, _told_predictions(predictions, state.predictions, "esmda_tell"))


def esmda_result(state: ESMDAState, *, throw: bool = False) -> ESMDAResult:
    """The :class:`~jaxda.ensemble.ESMDAResult` of a finished ask/tell run.

    Same fields as :func:`jaxda.ensemble.esmda`: posterior (prior structure), predictions
    (the last told, ``(N, m)``), history, n_steps, status, failed, alpha. ``throw=True``
    raises when ``status`` is not ``SUCCESS``. Raises ``ValueError`` if the run is not
    finished.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (10, 1))
        >>> state = esmda_init(jax.random.key(1), prior, jnp.array([0.5]), obs_std=0.1,
        ...                    alpha=2)
        >>> while not state.done:
        ...     state = esmda_tell(state, esmda_ask(state))
        >>> esmda_result(state).history.misfit.shape
        (3,)
    """
    if not isinstance(state, ESMDAState):
        raise TypeError(f"state must be an ESMDAState (esmda_init), got {type(state).__name__}")
    _check_bool(throw, "throw")
    if is_concrete(state.done) and not bool(state.done):
        left = int(state.alphas.shape[0]) + 1 - int(state.n_told)
        raise ValueError(f"the run is not finished: {left} more esmda_tell call(s) needed")
    result = _esmda_result(
        state.ensemble, state.predictions, state.active, state.too_few, state.n_steps,
        state.history, state.alphas, state.unravel,
    )  # fmt: skip
    return raise_on_failure(result) if throw else result


# --------------------------------------------------------------------------------- IES
class IESState(eqx.Module):
    """State of an ask/tell subspace IES run (:func:`ies_init`).

    A pytree of arrays (the configuration is static). Advance it with :func:`ies_tell`.

    Attributes:
        proposal: ``(N, n)`` flat ensemble to evaluate next (:func:`ies_ask`).
        n_told: number of tells so far.
        done: ``True`` when converged, ``max_steps`` updates were made or fewer than two
            members are active; then call :func:`ies_result`.
    """

    problem: _IESProblem
    carry: _IESCarry
    scale: Float[Array, ""]
    proposal_w: Float[Array, "N N"]
    proposal: Float[Array, "N n"]
    n_told: Int[Array, ""]
    done: Bool[Array, ""]


def ies_init(
    key: Array,
    prior: PyTree,
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    mask: Bool[Array, " m"] | None = None,
    step_length: float | Callable[[Array], Array] | None = None,
    max_steps: int = 30,
    tol: float = 1e-3,
    perturbations: Float[Array, "N m"] | None = None,
) -> IESState:
    r"""Start an ask/tell subspace IES run (Evensen et al. 2019) for an external forward model.

    Takes the arguments of :func:`jaxda.ensemble.ies` without the forward model (same key,
    same fixed perturbed data ``d_j = y + ε_j``). Each tell after the first accepts the
    Gauss–Newton iterate ``x_j = x_j^f + Xᵀ w_j`` with

    .. math:: W_{i+1} = W_i - γ_i\,(W_i + \hat R_i \hat S_iᵀ)(I_N + \hat S_i \hat S_iᵀ)^{-1}

    (notation of :mod:`jaxda.ensemble._ies`), records the history and tests convergence
    ``rms(E_{i+1} - E_i)/spread(E_0) <= tol``; there is no accept/reject line search, as in
    :func:`~jaxda.ensemble.ies`. At most ``max_steps + 1`` ensembles are evaluated.

    Args:
        key: PRNG key for the fixed perturbations ``ε_j ~ N(0, R)``.
        prior: prior ensemble ``(N, n)`` or pytree with leading member axis.
        y: data ``(m,)``; ``nan`` entries are not observed.
        noise, obs_std, obs_cov, mask, step_length, max_steps, tol, perturbations: as in
            :func:`jaxda.ensemble.ies`.

    Returns:
        :class:`IESState`, whose :func:`ies_ask` is the prior.

    Examples:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> prior = jax.random.normal(jax.random.key(0), (40, 1))
        >>> state = ies_init(jax.random.key(1), prior, jnp.array([1.0]), obs_std=0.3)
        >>> while not state.done:
        ...     X = np.asarray(ies_ask(state))
        ...     state = ies_tell(state, X + 0.2 * X**3)
        >>> out = ies_result(state)
        >>> bool(out.converged), int(out.status)
        (True, 0)
    """
    _check_key(key)
    p = _ies_setup(
        key, prior, y, noise, obs_std, obs_cov, mask, step_length, max_steps, tol, perturbations
    )
    N, m = p.D.shape
    dtype = p.Ef.dtype
    # placeholder carry (replaced by the first tell): the one ies() starts from
    carry, _ = _ies_start(p, jnp.full((N, m), jnp.nan, dtype))
    return IESState(
        problem=p,
        carry=carry,
        scale=jnp.ones((), dtype),
        proposal_w=jnp.zeros((N, N), dtype),
        proposal=p.Ef,
        n_told=jnp.array(0, jnp.int32),
        done=jnp.array(False),
    )


def ies_ask(state: IESState) -> PyTree:
    """The ensemble to evaluate next, ``(N, n)`` (or the prior's pytree structure).

    ``np.asarray(ies_ask(state))`` for a simulator. Raises ``ValueError`` once
    ``state.done``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> state = ies_init(jax.random.key(0), jnp.eye(3), jnp.array([1.0]), obs_std=1.0)
        >>> ies_ask(state).shape
        (3, 3)
    """
    if not isinstance(state, IESState):
        raise TypeError(f"state must be an IESState (ies_init), got {type(state).__name__}")
    _check_not_done(state.done, "call ies_result(state)")
    return _unflatten_ensemble(state.proposal, state.problem.unravel)


@jax.jit
def _ies_tell(state: IESState, Y: Array) -> IESState:
    s, p = state, state.problem

    def first(_):
        return _ies_start(p, Y)

    def later(_):
        return _ies_accept(p, s.carry, s.proposal_w, s.proposal, Y, s.scale), s.scale

    carry, scale = jax.lax.cond(s.n_told == 0, first, later, None)
    running = _ies_running(p, carry)
    W, E = _ies_propose(p, carry)
    return IESState(
        p,
        carry,
        scale,
        jnp.where(running, W, carry.W),
        jnp.where(running, E, carry.E),
        s.n_told + 1,
        ~running,
    )


def ies_tell(state: IESState, predictions: Float[Array, "N m"] | np.ndarray) -> IESState:
    """Give the ``(N, m)`` predictions of the asked ensemble; take the next Gauss–Newton step.

    A row with ``nan``/``inf`` (observed entries) marks a failed member, handled as in
    :func:`jaxda.ensemble.ies` (rolled back to its last iterate, dropped). Pure and
    jit-compiled (the same step as :func:`~jaxda.ensemble.ies`).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (20, 1))
        >>> state = ies_init(jax.random.key(1), prior, jnp.array([0.5]), obs_std=0.2,
        ...                  max_steps=2)
        >>> for _ in range(3):
        ...     state = ies_tell(state, 2.0 * ies_ask(state))
        >>> bool(state.done), int(state.carry.i)
        (True, 2)
    """
    if not isinstance(state, IESState):
        raise TypeError(f"state must be an IESState (ies_init), got {type(state).__name__}")
    _check_not_done(state.done, "no ensemble is waiting for predictions")
    return _ies_tell(state, _told_predictions(predictions, state.carry.Y, "ies_tell"))


def ies_result(state: IESState, *, throw: bool = False) -> IESResult:
    """The :class:`~jaxda.ensemble.IESResult` of a finished ask/tell IES run.

    Same fields as :func:`jaxda.ensemble.ies` (posterior, predictions, history, n_steps,
    status, failed, converged). Raises ``ValueError`` if the run is not finished;
    ``throw=True`` raises when ``status`` is not ``SUCCESS``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (20, 1))
        >>> state = ies_init(jax.random.key(1), prior, jnp.array([0.5]), obs_std=0.2,
        ...                  max_steps=3, tol=0.0)
        >>> while not state.done:
        ...     state = ies_tell(state, ies_ask(state))
        >>> out = ies_result(state)
        >>> int(out.n_steps), int(out.status)   # tol=0 never converges
        (3, 1)
    """
    if not isinstance(state, IESState):
        raise TypeError(f"state must be an IESState (ies_init), got {type(state).__name__}")
    _check_bool(throw, "throw")
    if is_concrete(state.done) and not bool(state.done):
        raise ValueError("the run is not finished: call ies_tell until state.done")
    result = _result(state.carry, state.problem.unravel)
    return raise_on_failure(result) if throw else result
