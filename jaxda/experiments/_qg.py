r"""The quasi-geostrophic twin experiment of Sakov & Oke (2008), as DAPPER's ``QG/sakov2008``.

The truth is a run of the double-gyre QG model (:class:`jaxda.models.QG`, ``129 × 129``
stream function, one model step = 5 time units); every model step, ``ψ`` is observed at 300
grid points with ``R = 4 I``. The 300 points are ``jj = linspace_int(n², 300)`` (every 55th
state entry in row-major order: "satellite tracks" across the basin) shifted by one random
offset per observation time, ``0 <= offset < jj[1] - jj[0]``, drawn as DAPPER does with
``numpy.random.RandomState(k).rand()`` for observation time ``k`` (so the network is the
same as DAPPER's). The truth and the initial ensemble are drawn from a climatological
sample: snapshots of one long model run from rest (DAPPER: 700 steps of spin-up, then 400
snapshots 10 steps apart), made here with the JAX model (:func:`qg_climatology`).

Because the initial conditions come from a sample rather than a Gaussian, and the network
changes in time, run this setup with :func:`qg_twin_experiment` (the generic
:func:`jaxda.experiments.twin_experiment` would start truth and ensemble at rest and use the
fixed network ``jj``).

References:
    Sakov & Oke (2008), *Tellus A* 60(2), Fig. 7; DAPPER ``dapper.mods.QG.sakov2008``
    (Raanes et al.).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import Method
from ..models import QG, gaussian, trajectory
from ..observations import ObservationSeries, observation_model, observation_series, subset
from ._chronology import chronology
from ._twin import TwinData, TwinResult, TwinSetup, twin_experiment


def linspace_int(n: int, m: int) -> np.ndarray:
    """``m`` equispaced integers in ``[0, n)``: ``floor(k n / m)``, ``k = 0..m-1`` (DAPPER's
    ``linspace_int`` with ``periodic=True``).

    Examples:
        >>> linspace_int(10, 4).tolist()
        [0, 2, 5, 7]
    """
    if not (isinstance(n, int | np.integer) and isinstance(m, int | np.integer) and 1 <= m <= n):
        raise ValueError(f"need integers 1 <= m <= n, got n={n!r}, m={m!r}")
    return np.linspace(0, n, m + 1)[:-1].astype(int)


def qg_observation_network(n_state: int, n_obs: int = 300, n_times: int = 1) -> np.ndarray:
    """Observed state indices ``(n_times, n_obs)`` of DAPPER's QG network at observation
    times ``k = 0..n_times-1``: ``linspace_int(n_state, n_obs) + offset_k`` with
    ``offset_k = floor((jj[1] - jj[0]) · RandomState(k).rand())``.

    Examples:
        >>> net = qg_observation_network(129 * 129, 300, n_times=2)
        >>> net.shape, net[0, :3].tolist(), int(net.max()) < 129 * 129
        ((2, 300), [30, 85, 140], True)
    """
    jj = linspace_int(n_state, n_obs)
    if not (isinstance(n_times, int | np.integer) and n_times >= 1):
        raise ValueError(f"n_times must be an int >= 1, got {n_times!r}")
    if n_obs < 2:
        return np.broadcast_to(jj, (n_times, n_obs)).copy()
    max_offset = int(jj[1] - jj[0])
    offsets = [int(np.floor(max_offset * np.random.RandomState(k).rand())) for k in range(n_times)]
    return jj[None, :] + np.asarray(offsets)[:, None]


def qg_sakov2008(
    n_cycles: int = 300,
    burn_in: int = 50,
    *,
    n: int = 129,
    n_obs: int = 300,
    obs_std: float = 2.0,
    biharmonic_friction: float = 2.0e-12,
) -> TwinSetup:
    """DAPPER's ``QG/sakov2008`` twin: the setup (model and the fixed part of the network).

    ``T = 1500`` time units of ``dtout = 5`` (``n_cycles = 300`` observation times, one per
    model step), burn-in 250 time units (``burn_in = 50`` cycles; DAPPER's ``BurnIn=250``),
    ``n_obs = 300`` observed grid values with ``R = obs_std² I = 4 I``. The returned
    :class:`TwinSetup` holds the fixed network ``jj`` (``setup.obs``); the time-varying
    offsets and the climatological initial conditions are added by
    :func:`qg_twin_experiment`. ``n`` (grid points per side) may be reduced for quick runs
    (the observation count then scales with ``n_obs``).

    Documented scores (DAPPER, rmse.a after the burn-in, 129 × 129 grid): LETKF ``N=25``,
    ``infl=1.04``, ``loc_rad=10`` about **0.64**; SL_EAKF ``N=25`` ``infl=1.04``
    ``loc_rad=10`` about 0.62 (``infl=1.03``: 0.58); LETKF ``N=45`` ``infl=1.02`` about 0.52;
    iLEnKS ``N=25`` ``infl=1.03`` ``loc_rad=12`` ``Lag=2`` about 0.59. Localization distances
    are in grid units on the 2-D grid, not periodic: the state coordinates are
    ``setup.model.locations`` and the observation coordinates those of the observed entries
    (a :func:`jaxda.observations.subset` network), e.g. ``letkf(10.0,
    state_locations=setup.model.locations, periodic=False, cutoff=1e-3, max_local_obs=80)``
    (DAPPER drops taper coefficients below ``1e-3``; with radius 10 at most 63 of the 300
    observations are local to a grid point, so ``max_local_obs=80`` keeps each local analysis
    small while the network moves). DAPPER's notes:
    with ``N <= 25`` the ensemble may need more dissipation (``biharmonic_friction=2e-11``)
    to avoid divergence; its RMSE includes the boundary entries (always 0).

    Examples:
        >>> setup = qg_sakov2008(n_cycles=10, burn_in=2, n=33, n_obs=40)
        >>> setup.model.dim, setup.obs.dim, setup.n_cycles
        (1089, 40, 10)
    """
    model = QG(n, biharmonic_friction=biharmonic_friction)
    jj = linspace_int(model.dim, n_obs)
    return TwinSetup(
        model=model,
        obs=observation_model(subset(jj, n=model.dim), obs_std=obs_std),
        chronology=chronology(float(model.dt), obs_every=1, n_cycles=n_cycles, burn_in=burn_in),
        initial=gaussian(model.x0, 0.0),
    )


def qg_climatology(
    key: Array,
    model: QG,
    n_samples: int = 400,
    spin_up: int = 700,
    spacing: int = 10,
    perturbation: float = 1e-3,
) -> Float[Array, "S n"]:
    """A climatological sample of the QG model: ``n_samples`` snapshots ``spacing`` model
    steps apart from one run started at rest, after ``spin_up`` steps (DAPPER's
    ``gen_sample(model, 400, 700, 10)``, which it stores in ``QG_samples.npz``).

    The run starts from ``ψ = 0`` plus white noise of std ``perturbation`` on the interior,
    which breaks the reflection symmetry of the double gyre (DAPPER relies on the round-off
    of its multigrid solver for that). Costs ``spin_up + n_samples·spacing`` model steps
    (4700 by default). Generate it once and
    pass it to every run (it may be a traced argument of a jitted experiment).

    Examples:
        >>> import jax
        >>> from jaxda.models import QG
        >>> sample = qg_climatology(jax.random.key(0), QG(9), n_samples=3, spin_up=2, spacing=1)
        >>> sample.shape
        (3, 81)
    """
    for name, value, low in (
        ("n_samples", n_samples, 1),
        ("spin_up", spin_up, 0),
        ("spacing", spacing, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if not isinstance(model, QG):
        raise TypeError(f"model must be a jaxda.models.QG, got {type(model).__name__}")
    if not float(perturbation) >= 0:
        raise ValueError(f"perturbation must be >= 0, got {perturbation}")
    x0 = model.x0
    interior = jnp.asarray(_interior_mask(model.n)).ravel()
    x0 = x0 + perturbation * interior * jax.random.normal(key, x0.shape, x0.dtype)
    total = spin_up + n_samples * spacing

    def body(t, carry):  # one loop (one compiled model step) for spin-up and sampling
        x, buf = carry
        x = model(x)
        after = t + 1 - spin_up  # steps since the end of the spin-up
        take = (after > 0) & (after % spacing == 0)
        slot = jnp.clip(after // spacing - 1, 0, n_samples - 1)
        buf = buf.at[slot].set(jnp.where(take, x, buf[slot]))
        return x, buf

    buf = jnp.zeros((n_samples, x0.shape[0]), x0.dtype)
    _, sample = jax.lax.fori_loop(0, total, body, (x0, buf))
    return sample


def _interior_mask(n: int) -> np.ndarray:
    mask = np.zeros((n, n))
    mask[1:-1, 1:-1] = 1.0
    return mask


def _check_climatology(climatology, setup: TwinSetup) -> Array:
    clim = jnp.asarray(climatology)
    if clim.ndim != 2 or clim.shape[1] != setup.model.dim:
        raise ValueError(
            f"climatology must be (S, n={setup.model.dim}) states, got shape {clim.shape}"
        )
    return clim


def qg_initial_ensemble(
    key: Array, climatology: Float[Array, "S n"], n_members: int
) -> Float[Array, "N n"]:
    """``n_members`` states drawn uniformly with replacement from the climatological sample
    (DAPPER's ``RV(file=...).sample(N)``).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> qg_initial_ensemble(jax.random.key(0), jnp.eye(4), 3).shape
        (3, 4)
    """
    if isinstance(n_members, bool) or not isinstance(n_members, int) or n_members < 1:
        raise ValueError(f"n_members must be a positive int, got {n_members!r}")
    clim = jnp.asarray(climatology)
    if clim.ndim != 2:
        raise ValueError(f"climatology must be (S, n), got shape {clim.shape}")
    idx = jax.random.randint(key, (n_members,), 0, clim.shape[0])
    return clim[idx]


def qg_observation_series(
    setup: TwinSetup, y: Float[Array, "K m"] | None = None, *, varying_network: bool = True
) -> ObservationSeries:
    """The observation series of the setup (values ``y``, NaN until filled): DAPPER's network
    with its per-time offsets (``varying_network=True``) or the fixed ``jj``.

    Examples:
        >>> s = qg_observation_series(qg_sakov2008(n_cycles=3, burn_in=0, n=33, n_obs=40))
        >>> s.varying, s.obs.operator.indices.shape
        (True, (3, 40))
    """
    K = setup.n_cycles
    m = setup.obs.dim
    y = jnp.full((K, m), jnp.nan) if y is None else y
    if not varying_network:
        return observation_series(y, setup.obs, n_steps=setup.obs_every, dt=setup.model.dt)
    net = qg_observation_network(setup.model.dim, m, K)
    models = [eqx.tree_at(lambda o: o.operator, setup.obs, subset(idx)) for idx in net]
    template = observation_series(
        np.zeros((K, m)), models, n_steps=setup.obs_every, dt=setup.model.dt
    )
    return eqx.tree_at(lambda s: s.y, template, jnp.asarray(y, template.y.dtype))


def qg_simulate(
    key: Array,
    setup: TwinSetup,
    climatology: Float[Array, "S n"],
    *,
    varying_network: bool = True,
) -> TwinData:
    """Truth and observations of the QG twin: the initial truth is a random member of the
    climatological sample, observed every ``obs_every`` model steps at DAPPER's (time-varying)
    network with noise from ``setup.obs.noise``."""
    clim = _check_climatology(climatology, setup)
    k0, kmodel, kobs = jax.random.split(key, 3)
    truth0 = clim[jax.random.randint(k0, (), 0, clim.shape[0])]
    model = setup.model if setup.truth_model is None else setup.truth_model
    states = trajectory(kmodel, model, truth0, setup.n_cycles * setup.obs_every)
    truth = states[setup.obs_every - 1 :: setup.obs_every]
    series = qg_observation_series(setup, varying_network=varying_network)
    idx = series.obs.operator.indices  # pyright: ignore[reportAttributeAccessIssue]
    clean = jnp.take_along_axis(truth, idx, axis=1) if series.varying else truth[:, idx]
    noise = setup.obs.noise.sample(kobs, (setup.n_cycles,)).astype(truth.dtype)
    series = eqx.tree_at(lambda s: s.y, series, clean + noise)
    return TwinData(truth0, truth, series)


def qg_twin_experiment(
    key: Array,
    setup: TwinSetup,
    method: Method,
    n_members: int,
    climatology: Float[Array, "S n"],
    *,
    varying_network: bool = True,
    record: Callable[[Any], Any] | None = None,
    data: TwinData | None = None,
) -> TwinResult:
    """Run the QG twin: simulate (:func:`qg_simulate`), draw the initial ensemble from the
    climatology (:func:`qg_initial_ensemble`), cycle with
    :func:`jaxda.assimilate.assimilate`, and score after ``setup.burn_in`` cycles (RMSE over
    all ``n²`` entries, boundary included, as DAPPER).

    Examples:
        >>> import jax
        >>> from jaxda.assimilate import with_inflation
        >>> from jaxda.ensemble import letkf
        >>> setup = qg_sakov2008(n_cycles=3, burn_in=1, n=9, n_obs=20)
        >>> clim = qg_climatology(jax.random.key(0), setup.model, 20, spin_up=0, spacing=1)
        >>> loc = letkf(2.0, state_locations=setup.model.locations, periodic=False)
        >>> res = qg_twin_experiment(jax.random.key(1), setup, with_inflation(loc, 1.04), 5, clim)
        >>> res.history.rmse_analysis.shape
        (3,)
    """
    clim = _check_climatology(climatology, setup)
    k_data, k_init, _ = jax.random.split(key, 3)  # the split twin_experiment makes
    if data is None:
        data = qg_simulate(k_data, setup, clim, varying_network=varying_network)
    E0 = qg_initial_ensemble(k_init, clim, n_members)
    return twin_experiment(key, setup, method, n_members, record=record, data=data, initial=E0)
