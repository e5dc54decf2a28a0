r"""Observation time series for the driver: values, missing entries, irregular times, and an
observation network that may change from one time to the next.

:class:`ObservationSeries` holds ``K`` observation times: ``y`` ``(K, m)`` with ``NaN`` for
missing values, the number of model steps ``n_steps`` ``(K,)`` from the previous observation
time (the first from the initial time), the times, and the observation model, either one for
all times or one per time stacked along a leading axis (different operators and different
numbers of observations, padded to the largest with missing values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core import DiagonalNoise, is_concrete
from ._operators import Identity, Linear, ObservationModel, Subset


class ObservationSeries(eqx.Module):
    """``K`` observation times (a pytree; build it with :func:`observation_series`).

    Attributes:
        y: ``(K, m)`` observed values, ``NaN`` where missing.
        n_steps: ``(K,)`` model steps before each observation time.
        time: ``(K,)`` observation times (model time units).
        obs: the observation model: the same at every time, or stacked ``(K, ...)`` leaves when
            ``varying`` is True.
        varying: whether ``obs`` has a leading time axis.
        max_steps: the largest entry of ``n_steps`` (static), or ``None`` when every interval
            has the same length ``steps`` (static).
        steps: the common number of steps per interval when regular, else ``None``.
    """

    y: Float[Array, "K m"]
    n_steps: Int[Array, " K"]
    time: Float[Array, " K"]
    obs: ObservationModel
    varying: bool = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    steps: int | None = eqx.field(static=True)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def dim(self) -> int:
        return int(self.y.shape[-1])

    def at(self, k: int) -> tuple[Array, ObservationModel]:
        """Values and observation model of time ``k``."""
        obs = jax.tree.map(lambda a: a[k], self.obs) if self.varying else self.obs
        return self.y[k], obs

    def slice(self, start: int, stop: int) -> ObservationSeries:
        """Observation times ``start..stop-1`` (e.g. to run a long series in chunks)."""
        if not 0 <= start < stop <= len(self):
            raise ValueError(f"need 0 <= start < stop <= {len(self)}, got {start}, {stop}")
        obs = jax.tree.map(lambda a: a[start:stop], self.obs) if self.varying else self.obs
        steps = np.asarray(self.n_steps[start:stop])
        regular = bool(np.all(steps == steps[0]))
        return ObservationSeries(
            y=self.y[start:stop],
            n_steps=self.n_steps[start:stop],
            time=self.time[start:stop],
            obs=obs,
            varying=self.varying,
            max_steps=int(steps.max()),
            steps=int(steps[0]) if regular else None,
        )

    def fixed_obs(self) -> ObservationModel | None:
        """The observation model when it is the same at every time, else ``None``."""
        return None if self.varying else self.obs


def _pad_model(om: ObservationModel, m: int) -> ObservationModel:
    k = om.dim
    if k == m:
        return om
    if not isinstance(om.noise, DiagonalNoise):
        raise ValueError("padding an observation network of varying size needs a diagonal R")
    noise = DiagonalNoise(jnp.concatenate([om.noise.std, jnp.ones(m - k, om.noise.std.dtype)]))
    op = om.operator
    if isinstance(op, Subset):
        op = Subset(jnp.concatenate([op.indices, jnp.zeros(m - k, op.indices.dtype)]))
    elif isinstance(op, Identity):
        op = Subset(
            jnp.concatenate([jnp.arange(op.n), jnp.zeros(m - k, jnp.int32)]).astype(jnp.int32)
        )
    elif isinstance(op, Linear):
        pos = None
        if op.positions is not None:
            pos = jnp.concatenate([op.positions, jnp.zeros(m - k, op.positions.dtype)])
        op = Linear(jnp.pad(op.matrix, ((0, m - k), (0, 0))), pos)
    else:
        raise ValueError(
            f"cannot pad a {type(op).__name__} operator to {m} observations: use subset/identity/"
            "linear operators for a network whose size changes in time"
        )
    return ObservationModel(op, noise)


def stack_observation_models(models: Sequence[ObservationModel], m: int | None = None):
    """Stack per-time observation models into one with a leading time axis, padding every
    network to ``m`` (default: the largest) observations. Returns ``(stacked, sizes)``."""
    sizes = [om.dim for om in models]
    m = max(sizes) if m is None else m
    padded = [_pad_model(om, m) for om in models]
    if any(isinstance(om.operator, Identity) for om in padded):  # mixed kinds: use subsets
        padded = [
            ObservationModel(Subset(jnp.arange(om.dim, dtype=jnp.int32)), om.noise)
            if isinstance(om.operator, Identity)
            else om
            for om in padded
        ]
    structures = {jax.tree.structure(om) for om in padded}
    if len(structures) != 1:
        raise ValueError(
            "per-time observation models must be of the same kind (operator and noise type) "
            f"to be stacked; got {sorted({type(om.operator).__name__ for om in padded})}"
        )
    return jax.tree.map(lambda *a: jnp.stack(a), *padded), sizes


def observation_series(
    y,
    obs: ObservationModel | Sequence[ObservationModel],
    *,
    n_steps=None,
    times=None,
    dt: Any = None,
    t0: float = 0.0,
    mask=None,
) -> ObservationSeries:
    r"""Build an :class:`ObservationSeries`.

    Args:
        y: ``(K, m)`` values (``NaN`` = missing), or a list of ``K`` vectors of different sizes
            when ``obs`` is a list (padded with missing values).
        obs: one :class:`ObservationModel` for all times, or a list of ``K`` of them.
        n_steps: model steps before each observation time: an int (regular) or ``(K,)`` ints.
        times: observation times instead of ``n_steps``; with the model step ``dt`` and start
            time ``t0`` they must fall on model steps (checked, no silent rounding).
        dt, t0: model time step and initial time (with ``times``).
        mask: optional ``(K, m)`` booleans, False = missing (combined with ``NaN``).

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.observations import identity, observation_model
        >>> om = observation_model(identity(2), obs_std=1.0)
        >>> s = observation_series(jnp.ones((3, 2)), om, times=[0.1, 0.3, 0.4], dt=0.1)
        >>> s.n_steps.tolist(), s.max_steps
        ([1, 2, 1], 2)
    """
    if isinstance(obs, ObservationModel):
        y = jnp.asarray(y)
        if not jnp.issubdtype(y.dtype, jnp.floating):
            y = y.astype(jnp.result_type(float))
        if y.ndim != 2 or y.shape[1] != obs.dim:
            raise ValueError(f"y must have shape (K, m={obs.dim}), got {y.shape}")
        stacked, varying = obs, False
    else:
        models = list(obs)
        if not models or not all(isinstance(om, ObservationModel) for om in models):
            raise TypeError("obs must be an ObservationModel or a list of ObservationModels")
        stacked, sizes = stack_observation_models(models)
        if len(y) != len(models):
            raise ValueError(
                f"got {len(y)} observation vectors for {len(models)} observation models"
            )
        m = max(sizes)
        rows = []
        for k, (yk, mk) in enumerate(zip(y, sizes, strict=True)):
            yk = np.asarray(yk, dtype=float).reshape(-1)
            if yk.size != mk:
                raise ValueError(f"y[{k}] has {yk.size} values, its observation model {mk}")
            rows.append(np.concatenate([yk, np.full(m - mk, np.nan)]))
        y = jnp.asarray(np.stack(rows), dtype=jnp.result_type(float))
        varying = True
    K = y.shape[0]
    if K < 1:
        raise ValueError("need at least one observation time")
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.shape != y.shape:
            raise ValueError(f"mask must have the shape of y {y.shape}, got {mask.shape}")
        y = jnp.where(mask, y, jnp.nan)
    if (n_steps is None) == (times is None):
        raise ValueError("give exactly one of n_steps= or times=")
    if times is not None:
        if dt is None:
            raise ValueError("times= needs the model time step dt=")
        t = np.asarray(times, dtype=float).reshape(-1)
        if t.size != K:
            raise ValueError(f"times must have length K={K}, got {t.size}")
        steps_f = np.diff(np.concatenate([[t0], t])) / dt
        steps = np.rint(steps_f).astype(int)
        if np.any(np.abs(steps_f - steps) > 1e-6 * np.maximum(1.0, np.abs(steps_f))):
            bad = int(np.argmax(np.abs(steps_f - steps)))
            raise ValueError(
                f"observation time {t[bad]} is not a whole number of model steps dt={dt} after "
                f"the previous time"
            )
    else:
        if not is_concrete(n_steps):
            raise ValueError("n_steps must be concrete (known before tracing)")
        steps = np.asarray(n_steps)
        if steps.ndim == 0:
            steps = np.broadcast_to(steps, (K,))
        if steps.shape != (K,) or not np.issubdtype(steps.dtype, np.integer):
            raise ValueError(f"n_steps must be an int or (K={K},) integers, got {steps!r}")
        t = None
    if np.any(steps < 0):
        raise ValueError(f"observation times must not decrease (n_steps >= 0), got {steps}")
    if t is None:
        t = t0 + np.cumsum(steps) * (1.0 if dt is None else dt)
    regular = bool(np.all(steps == steps[0]))
    return ObservationSeries(
        y=y,
        n_steps=jnp.asarray(steps, dtype=jnp.int32),
        time=jnp.asarray(t),
        obs=stacked,
        varying=varying,
        max_steps=int(steps.max()),
        steps=int(steps[0]) if regular else None,
    )
