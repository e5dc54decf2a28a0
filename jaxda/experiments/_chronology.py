r"""The time axis of an experiment: model time step, observation times and burn-in, in model
time units, with the integer counts the driver uses derived from them.

DAPPER states an experiment's chronology as ``Chronology(dt, dko or dto, T or Ko, BurnIn)``:
the model step ``dt``, the observation interval in steps (``dko``) or time (``dto``), the
duration ``T`` or the last observation index ``Ko`` (``Ko + 1`` observation times), and the
burn-in time ``BurnIn`` (scores average the observation times ``t > BurnIn``). The first
observation is at ``dto``, none at ``t = 0``. :func:`chronology` takes those quantities under
jaxda's names:

==================  =====================  ==============================================
DAPPER              :func:`chronology`     meaning
==================  =====================  ==============================================
``dt``              ``dt``                 model time step
``dko``             ``obs_every``          model steps between observation times
``dto``             ``obs_interval``       time between observation times
``Ko + 1``          ``n_cycles``           number of observation times
``T``               ``duration``           time of the last observation
``BurnIn``          ``burn_in_time``       scores use the times ``t > burn_in_time``
==================  =====================  ==============================================

Irregular observation times are given as ``obs_times`` (increasing multiples of ``dt``).

Examples:
    >>> c = chronology(0.05, obs_interval=0.05, duration=50.0, burn_in_time=20.0)
    >>> c.n_cycles, c.obs_every, c.burn_in
    (1000, 1, 400)
    >>> chronology(0.01, obs_times=[0.05, 0.1, 0.3]).obs_steps
    (5, 5, 20)
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Chronology:
    """Observation times of an experiment as model-step counts (static, hashable).

    Attributes:
        dt: model time step.
        obs_steps: model steps before each of the ``K`` observation times.
        burn_in: observation times left out of time-mean scores (those at ``t <= burn_in_time``).
    """

    dt: float
    obs_steps: tuple[int, ...]
    burn_in: int = 0

    def __post_init__(self):
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be positive and finite, got {self.dt}")
        if len(self.obs_steps) < 1:
            raise ValueError("a chronology needs at least one observation time")
        if any((not isinstance(s, int | np.integer)) or s < 1 for s in self.obs_steps):
            raise ValueError("steps between observation times must be positive integers")
        if not 0 <= self.burn_in < len(self.obs_steps):
            raise ValueError(
                f"burn_in must be in [0, n_cycles), got {self.burn_in} with "
                f"n_cycles={len(self.obs_steps)}"
            )

    @property
    def n_cycles(self) -> int:
        """Number of observation times ``K`` (DAPPER's ``Ko + 1``)."""
        return len(self.obs_steps)

    @property
    def regular(self) -> bool:
        return len(set(self.obs_steps)) == 1

    @property
    def obs_every(self) -> int:
        """Model steps between observation times (DAPPER's ``dko``); only for a regular one."""
        if not self.regular:
            raise ValueError(
                "the observation times are irregular: there is no single obs_every (use obs_steps)"
            )
        return int(self.obs_steps[0])

    @property
    def n_steps(self) -> int:
        """Total number of model steps (DAPPER's ``K``)."""
        return int(sum(self.obs_steps))

    @property
    def obs_times(self) -> np.ndarray:
        """Observation times ``t_k`` (model time units)."""
        return np.cumsum(self.obs_steps) * self.dt

    @property
    def duration(self) -> float:
        """Time of the last observation (DAPPER's ``T``)."""
        return self.n_steps * self.dt

    @property
    def burn_in_time(self) -> float:
        """Time of the last observation left out of the scores (0 without burn-in)."""
        return float(self.obs_times[self.burn_in - 1]) if self.burn_in else 0.0

    def with_cycles(self, n_cycles: int, burn_in: int | None = None) -> Chronology:
        """The same regular chronology over ``n_cycles`` observation times."""
        return Chronology(
            self.dt, (self.obs_every,) * n_cycles, self.burn_in if burn_in is None else burn_in
        )

    def __repr__(self) -> str:
        every = f"obs_every={self.obs_every}" if self.regular else "irregular"
        return (
            f"Chronology(dt={self.dt:g}, {every}, n_cycles={self.n_cycles}, "
            f"duration={self.duration:g}, burn_in={self.burn_in} (t <= {self.burn_in_time:g}))"
        )


def _steps_of(value: float, dt: float, name: str) -> int:
    k = round(value / dt)
    if k < 1 or abs(value - k * dt) > 1e-9 * max(dt, abs(value)):
        raise ValueError(f"{name}={value} is not a positive multiple of dt={dt}")
    return int(k)


def chronology(
    dt: float,
    *,
    obs_every: int | None = None,
    obs_interval: float | None = None,
    obs_times=None,
    n_cycles: int | None = None,
    duration: float | None = None,
    burn_in: int | None = None,
    burn_in_time: float | None = None,
) -> Chronology:
    r"""An experiment's time axis from model-time quantities (module docstring: the DAPPER
    names). Give the observation times as one of ``obs_every`` (steps), ``obs_interval``
    (time) or ``obs_times`` (an increasing list, irregular allowed); with the first two, the
    length as one of ``n_cycles`` or ``duration`` (a multiple of the observation interval);
    the burn-in as ``burn_in_time`` (scores use ``t > burn_in_time``) or ``burn_in`` (a count
    of observation times), default none.

    Examples:
        >>> chronology(0.01, obs_every=25, n_cycles=1000, burn_in_time=4.0)
        Chronology(dt=0.01, obs_every=25, n_cycles=1000, duration=250, burn_in=16 (t <= 4))
    """
    dt = float(dt)
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be positive and finite, got {dt}")
    if sum(a is not None for a in (obs_every, obs_interval, obs_times)) != 1:
        raise ValueError("give exactly one of obs_every=, obs_interval= or obs_times=")
    if obs_times is not None:
        if n_cycles is not None or duration is not None:
            raise ValueError("obs_times fixes the length: do not also give n_cycles= or duration=")
        t = np.asarray(obs_times, dtype=float)
        if t.ndim != 1 or t.size < 1:
            raise ValueError(f"obs_times must be a non-empty 1-D sequence, got shape {t.shape}")
        ks = [_steps_of(float(v), dt, "obs_times entry") for v in t]
        if any(b <= a for a, b in itertools.pairwise(ks)):
            raise ValueError("obs_times must be strictly increasing")
        steps = tuple(int(b - a) for a, b in itertools.pairwise([0, *ks]))
    else:
        if obs_interval is not None:
            every = _steps_of(float(obs_interval), dt, "obs_interval")
        else:
            assert obs_every is not None
            if not isinstance(obs_every, int | np.integer) or obs_every < 1:
                raise ValueError(f"obs_every must be a positive int, got {obs_every!r}")
            every = int(obs_every)
        if (n_cycles is None) == (duration is None):
            raise ValueError("give exactly one of n_cycles= or duration=")
        if duration is not None:
            K = _steps_of(float(duration), every * dt, "duration (in observation intervals)")
        else:
            assert n_cycles is not None
            if not isinstance(n_cycles, int | np.integer) or n_cycles < 1:
                raise ValueError(f"n_cycles must be a positive int, got {n_cycles!r}")
            K = int(n_cycles)
        steps = (every,) * K
    if burn_in is not None and burn_in_time is not None:
        raise ValueError("give burn_in= (a count) or burn_in_time= (model time), not both")
    if burn_in_time is not None:
        times = np.cumsum(steps) * dt
        b = int(np.sum(times <= float(burn_in_time) + 1e-9 * dt))
        if b >= len(steps):
            raise ValueError(
                f"burn_in_time={burn_in_time} covers every observation time (the last is at "
                f"t={times[-1]:g})"
            )
    else:
        b = 0 if burn_in is None else burn_in
    return Chronology(dt, steps, int(b))
