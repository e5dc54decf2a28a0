r"""Ask/tell form of ensemble Kalman inversion, for forward models that are not JAX.

The same inside-out loop as :func:`jaxda.ensemble.esmda_init` / ``esmda_ask`` /
``esmda_tell`` / ``esmda_result``, for :func:`jaxda.ensemble.eki` (every option: perturbed
or transform update, fixed step or the data-misfit controller, Tikhonov, transforms,
failed members dropped or resampled, ``is_failed``):

.. code-block:: python

    state = eki_init(key, prior, y, obs_std=theta, step="dmc")
    while not state.done:
        X = np.asarray(eki_ask(state))  # (N, n) constrained ensemble to evaluate
        Y = my_simulator(X)  # (N, m) predictions, a row of nan = failed member
        state = eki_tell(state, Y)
    result = eki_result(state)  # the EKIResult that eki() returns

:func:`eki_tell` is a pure, jit-compiled function running the same code as the JAX loop
(the update, the Δt controller, the roll-back or redraw of failed members, the history),
so with the same key and a simulator computing the same ``g`` the result equals
:func:`~jaxda.ensemble.eki` to round-off. At most ``max_steps + 1`` ensembles are
evaluated (the initial one, then one per update); with ``step="dmc"`` the run ends when
``t = Σ Δt`` reaches ``1``. ``eki_ask`` returns every member, in the constrained space (a
member redrawn under ``failure="resample"`` included); a row of the told predictions with
``nan``/``inf`` in an observed entry (or flagged by ``is_failed``) marks a failed member.

References:
    Iglesias, Law & Stuart (2013), *Ensemble Kalman methods for inverse problems*,
    Inverse Problems 29, 045001.
    Iglesias & Yang (2021), *Adaptive regularisation for ensemble Kalman inversion*,
    Inverse Problems 37, 025008.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..core import Transform, is_concrete, raise_on_failure
from ._ask_tell import _check_not_done, _told_predictions
from ._eki import (
    EKIResult,
    _accept,
    _eki_propose,
    _eki_result,
    _eki_running,
    _eki_setup,
    _eki_start,
    _EKICarry,
    _EKIProblem,
    _empty_history,
    _to_constrained,
)
from ._esmda import Noise, _check_bool, _unflatten_ensemble

PyTree = Any

__all__ = ["EKIState", "eki_ask", "eki_init", "eki_result", "eki_tell"]


class EKIState(eqx.Module):
    """State of an ask/tell EKI run (:func:`eki_init`).

    A pytree of arrays (the configuration is static). Advance it with :func:`eki_tell`.

    Attributes:
        proposal: ``(N, n)`` flat unconstrained ensemble to evaluate next (:func:`eki_ask`
            returns its constrained form).
        n_told: number of tells so far.
        done: ``True`` when no ensemble is left to evaluate (``t = 1`` reached with
            ``step="dmc"``, ``tol`` met, ``max_steps`` updates made, or fewer than two
            members left); then call :func:`eki_result`.
    """

    problem: _EKIProblem
    carry: _EKICarry
    scale: Float[Array, ""]
    proposal: Float[Array, "N n"]
    proposal_key: Array
    proposal_dt: Float[Array, ""]
    proposal_last: Bool[Array, ""]
    n_told: Int[Array, ""]
    done: Bool[Array, ""]


def eki_init(
    key: Array,
    prior: PyTree,
    y: Float[Array, " m"],
    *,
    noise: Noise | None = None,
    obs_std: Float[Array, " m"] | float | None = None,
    obs_cov: Float[Array, "m m"] | None = None,
    mask: Bool[Array, " m"] | None = None,
    max_steps: int = 50,
    step: float | str = "dmc",
    update: str = "perturbed",
    tikhonov: float | None = None,
    prior_mean: Float[Array, " n"] | None = None,
    prior_cov: Float[Array, "n n"] | Float[Array, " n"] | float | None = None,
    transform: Transform | None = None,
    failure: str = "drop",
    is_failed: Callable[[PyTree, Array], Array] | None = None,
    tol: float | None = None,
    perturbations: Float[Array, "K N m"] | None = None,
) -> EKIState:
    r"""Start an ask/tell ensemble Kalman inversion for an external forward model.

    Takes the arguments of :func:`jaxda.ensemble.eki` without the forward model. The first
    tell gives ``g`` of the initial ensemble; every later tell accepts the update
    ``u ← u + C_{ug}(C_{gg} + Δt^{-1}Γ)^{-1}(y + ε - g)`` (or its transform / Tikhonov
    form) proposed from the previous predictions, with ``Δt`` fixed or from the
    data-misfit controller.

    Args:
        key: PRNG key (the same key gives the draws of :func:`jaxda.ensemble.eki`).
        prior: initial ensemble ``(N, n)`` or pytree with leading member axis
            (constrained space).
        y: data ``(m,)``; ``nan`` entries are not observed.
        noise, obs_std, obs_cov, mask: observation noise and mask, as in
            :func:`jaxda.ensemble.eki`.
        max_steps, step, update, tikhonov: as in :func:`jaxda.ensemble.eki`.
        prior_mean, prior_cov, transform: as in :func:`jaxda.ensemble.eki`.
        failure, is_failed, tol, perturbations: as in :func:`jaxda.ensemble.eki`.

    Returns:
        :class:`EKIState`, whose :func:`eki_ask` is the initial ensemble.

    Examples:
        >>> import jax, jax.numpy as jnp, numpy as np
        >>> prior = jax.random.normal(jax.random.key(0), (20, 2))
        >>> state = eki_init(jax.random.key(1), prior, jnp.array([1.0, 0.5]), obs_std=0.1)
        >>> while not state.done:
        ...     X = np.asarray(eki_ask(state))          # any non-JAX simulator
        ...     state = eki_tell(state, np.stack([X[:, 0] + X[:, 1], X[:, 1] ** 3], axis=1))
        >>> out = eki_result(state)
        >>> float(out.time), int(out.status)
        (1.0, 0)
    """
    p = _eki_setup(
        key, prior, y, noise, obs_std, obs_cov, mask, max_steps, step, update, tikhonov,
        prior_mean, prior_cov, transform, failure, is_failed, tol, perturbations,
    )  # fmt: skip
    N = p.U0.shape[0]
    m = p.y.shape[0]
    dtype = p.U0.dtype
    # placeholder carry with the layout of _eki_start's, replaced at the first tell
    carry = _EKICarry(
        jnp.array(0, jnp.int32), p.key, p.U0, jnp.full((N, m), jnp.nan, dtype),
        jnp.ones((N,), bool), jnp.zeros((N,), bool), jnp.zeros((), dtype),
        _empty_history(p.max_steps, dtype), jnp.array(False),
    )  # fmt: skip
    return EKIState(
        problem=p,
        carry=carry,
        scale=jnp.ones((), dtype),
        proposal=p.U0,
        proposal_key=p.key,
        proposal_dt=jnp.zeros((), dtype),
        proposal_last=jnp.array(False),
        n_told=jnp.array(0, jnp.int32),
        done=jnp.array(False),
    )


def eki_ask(state: EKIState) -> PyTree:
    """The ensemble to evaluate next, in the constrained space: ``(N, n)`` (or the prior's
    pytree structure).

    ``np.asarray(eki_ask(state))`` gives the NumPy array for a simulator (members as rows).
    Raises ``ValueError`` once ``state.done``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> state = eki_init(jax.random.key(0), jnp.eye(3), jnp.array([1.0]), obs_std=1.0)
        >>> eki_ask(state).shape
        (3, 3)
    """
    if not isinstance(state, EKIState):
        raise TypeError(f"state must be an EKIState (eki_init), got {type(state).__name__}")
    _check_not_done(state.done, "call eki_result(state)")
    p = state.problem
    return _unflatten_ensemble(_to_constrained(state.proposal, p.transform), p.unravel)


@jax.jit
def _eki_tell(state: EKIState, Y: Array) -> EKIState:
    s, p = state, state.problem
    drop = p.failure == "drop"

    def first(_):
        return _eki_start(p, Y)

    def later(_):
        c = _accept(
            p, s.carry, s.proposal, Y, s.proposal_key, s.proposal_dt, s.proposal_last,
            s.scale, drop,
        )  # fmt: skip
        return c, s.scale

    carry, scale = jax.lax.cond(s.n_told == 0, first, later, None)
    running = _eki_running(p, carry)
    U, key, dt, last = _eki_propose(p, carry)
    return EKIState(
        p,
        carry,
        scale,
        jnp.where(running, U, carry.U),
        key,
        dt.astype(s.proposal_dt.dtype),
        last,
        s.n_told + 1,
        ~running,
    )


def eki_tell(state: EKIState, predictions: Float[Array, "N m"] | np.ndarray) -> EKIState:
    """Give the ``(N, m)`` predictions of the asked ensemble; propose the next update.

    One row per member of :func:`eki_ask`, same order; a row with ``nan``/``inf`` in an
    observed entry marks a failed member (dropped or redrawn, as in
    :func:`jaxda.ensemble.eki`). Pure and jit-compiled.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (10, 1))
        >>> state = eki_init(jax.random.key(1), prior, jnp.array([0.5]), obs_std=0.1,
        ...                  step=1.0, max_steps=1)
        >>> state = eki_tell(state, eki_ask(state))          # g(x) = x
        >>> state = eki_tell(state, eki_ask(state))
        >>> bool(state.done), int(state.carry.i)
        (True, 1)
    """
    if not isinstance(state, EKIState):
        raise TypeError(f"state must be an EKIState (eki_init), got {type(state).__name__}")
    _check_not_done(state.done, "no ensemble is waiting for predictions")
    return _eki_tell(state, _told_predictions(predictions, state.carry.Y, "eki_tell"))


def eki_result(state: EKIState, *, throw: bool = False) -> EKIResult:
    """The :class:`~jaxda.ensemble.EKIResult` of a finished ask/tell EKI run.

    Same fields as :func:`jaxda.ensemble.eki`. Raises ``ValueError`` if the run is not
    finished; ``throw=True`` raises when ``status`` is not ``SUCCESS``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> prior = jax.random.normal(jax.random.key(0), (10, 1))
        >>> state = eki_init(jax.random.key(1), prior, jnp.array([0.5]), obs_std=0.2,
        ...                  step=0.5, max_steps=3)
        >>> while not state.done:
        ...     state = eki_tell(state, eki_ask(state))
        >>> out = eki_result(state)
        >>> int(out.n_steps), out.history.time.tolist()
        (3, [0.0, 0.5, 1.0, 1.5])
    """
    if not isinstance(state, EKIState):
        raise TypeError(f"state must be an EKIState (eki_init), got {type(state).__name__}")
    _check_bool(throw, "throw")
    if is_concrete(state.done) and not bool(state.done):
        raise ValueError("the run is not finished: call eki_tell until state.done")
    result = _eki_result(state.problem, state.carry)
    return raise_on_failure(result) if throw else result
