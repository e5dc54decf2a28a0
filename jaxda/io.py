"""Results and observations on disk, in the format DA users already use: netCDF via xarray.

* :func:`history_to_dataset` / :func:`save_run`: the driver's ``history`` (every per-time
  diagnostic and the method's ``info``), the final analysis ensemble, and optionally the
  recorded analysis means, observations and truth, as one :class:`xarray.Dataset` / netCDF
  file with dimensions ``time``, ``member``, ``state`` and ``obs``.
* :func:`save_observations` / :func:`load_observations`: an observation series with
  irregular times and missing values (``NaN``), in netCDF (``.nc``) or NumPy (``.npz``).
  Variables: ``y`` (time, obs), ``time`` (time), ``obs_std`` (obs) or (time, obs),
  ``locations`` (obs) or (time, obs) as integer state indices, attribute ``dt``.

Examples:
    >>> import tempfile, os, jax.numpy as jnp
    >>> from jaxda.observations import observation_model, observation_series, subset
    >>> om = observation_model(subset([0, 2], n=4), obs_std=0.5)
    >>> series = observation_series(jnp.array([[1.0, jnp.nan], [0.5, 2.0]]), om,
    ...                             times=[0.1, 0.3], dt=0.05)
    >>> path = os.path.join(tempfile.mkdtemp(), "obs.nc")
    >>> save_observations(path, series)
    >>> back = load_observations(path)
    >>> back.n_steps.tolist(), bool(jnp.isnan(back.y[0, 1]))
    ([2, 4], True)
"""

from __future__ import annotations

import os
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .assimilate import History, ensemble_mean
from .models import Empirical, empirical
from .observations import (
    DiagonalNoise,
    ObservationModel,
    ObservationSeries,
    Subset,
    observation_series,
)


def _xarray():
    try:
        import xarray as xr
    except ImportError as e:  # pragma: no cover - xarray is a dependency
        raise ImportError("jaxda.io needs xarray: pip install xarray h5netcdf") from e
    return xr


def _engine(path: str) -> Literal["h5netcdf", "netcdf4"]:
    try:
        import h5netcdf  # noqa: F401

        return "h5netcdf"
    except ImportError:  # pragma: no cover
        return "netcdf4"


def _flatten(prefix: str, tree: Any) -> dict[str, np.ndarray]:
    """Named arrays of a NamedTuple/pytree (``info.n_obs`` -> ``info_n_obs``)."""
    if tree is None:
        return {}
    if hasattr(tree, "_fields"):
        out = {}
        for name in tree._fields:
            out.update(_flatten(f"{prefix}_{name}" if prefix else name, getattr(tree, name)))
        return out
    if isinstance(tree, dict):
        out = {}
        for name, v in tree.items():
            out.update(_flatten(f"{prefix}_{name}", v))
        return out
    leaves = jax.tree.leaves(tree)
    if len(leaves) == 1:
        return {prefix: np.asarray(leaves[0])}
    return {f"{prefix}_{i}": np.asarray(v) for i, v in enumerate(leaves)}


def _dims(name: str, a: np.ndarray, K: int, n: int | None, N: int | None) -> tuple[str, ...]:
    dims: list[str] = []
    for i, size in enumerate(a.shape):
        if i == 0 and size == K:
            dims.append("time")
        elif n is not None and size == n and "state" not in dims:
            dims.append("state")
        elif N is not None and size == N and "member" not in dims:
            dims.append("member")
        else:
            dims.append(f"{name}_dim{i}")
    return tuple(dims)


def history_to_dataset(
    history: History,
    *,
    final_state: Any = None,
    observations: ObservationSeries | None = None,
    truth=None,
    attrs: dict | None = None,
    record_every: int = 1,
):
    """An :class:`xarray.Dataset` of a run: every field of ``history`` (``info`` fields become
    ``info_<name>``, a recorded pytree ``record_<name>``), the final ensemble
    (``ensemble`` (member, state)) and its mean, the observations and the truth when given.

    A run with ``record_every = k`` (:func:`jaxda.assimilate.assimilate`) stored its record and
    ensembles at every ``k``-th time only: they get the dimension ``record_time``, whose
    coordinate is those times."""
    xr = _xarray()
    K = int(np.shape(history.time)[0])
    thinned = ("record", "ensemble_forecast", "ensemble_analysis")
    n = N = None
    data_vars: dict[str, Any] = {}
    if final_state is not None:
        E = np.asarray(final_state.ensemble)
        N, n = E.shape
        data_vars["ensemble"] = (("member", "state"), E)
        data_vars["analysis_mean_final"] = (("state",), np.asarray(ensemble_mean(final_state)))
    coords: dict[str, Any] = {"time": np.asarray(history.time)}
    for name, a in _flatten("", history._replace(time=None)).items():
        if a.dtype == bool:  # netCDF has no boolean type
            a = a.astype(np.int8)
        if record_every > 1 and name.startswith(thinned):
            every = np.asarray(history.time)[record_every - 1 :: record_every][: a.shape[0]]
            coords["record_time"] = every
            dims = ("record_time", *_dims(name, a, K, n, N)[1:])
        else:
            dims = _dims(name, a, K, n, N)
        data_vars[name] = (dims, a)
    if observations is not None:
        data_vars["y"] = (("time", "obs"), np.asarray(observations.y))
        data_vars["n_steps"] = (("time",), np.asarray(observations.n_steps))
    if truth is not None:
        data_vars["truth"] = (("time", "state"), np.asarray(truth))
    ds = xr.Dataset(data_vars, coords=coords)
    for k, v in (attrs or {}).items():
        keep = isinstance(v, int | float | str) and not isinstance(v, bool)
        ds.attrs[k] = v if keep else str(v)
    ds.attrs.setdefault("created_by", "jaxda")
    return ds


def _check_writable(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ValueError(f"cannot write {path}: directory {d} does not exist")
    if not os.access(d, os.W_OK):
        raise ValueError(f"cannot write {path}: directory {d} is not writable")
    return path


def save_run(path: str | os.PathLike, history: History, **kwargs) -> None:
    """Write :func:`history_to_dataset` to a netCDF file (``path`` ending in ``.nc``)."""
    path = _check_writable(path)
    history_to_dataset(history, **kwargs).to_netcdf(path, engine=_engine(path))


def save_observations(path: str | os.PathLike, series: ObservationSeries) -> None:
    """Write an observation series (subset operators, diagonal ``R``) to ``.nc`` or ``.npz``."""
    path = _check_writable(path)
    op, noise = series.obs.operator, series.obs.noise
    if not isinstance(op, Subset) or not isinstance(noise, DiagonalNoise):
        raise ValueError("save_observations writes subset operators with a diagonal R only")
    arrays = {
        "y": np.asarray(series.y),
        "time": np.asarray(series.time),
        "n_steps": np.asarray(series.n_steps),
        "locations": np.asarray(op.indices),
        "obs_std": np.asarray(noise.std),
    }
    if path.endswith(".npz"):
        np.savez(path, **arrays)  # pyright: ignore[reportArgumentType]
        return
    xr = _xarray()
    loc_dims = ("time", "obs") if series.varying else ("obs",)
    ds = xr.Dataset(
        {
            "y": (("time", "obs"), arrays["y"]),
            "n_steps": (("time",), arrays["n_steps"]),
            "locations": (loc_dims, arrays["locations"]),
            "obs_std": (loc_dims, arrays["obs_std"]),
        },
        coords={"time": arrays["time"]},
    )
    ds.to_netcdf(path, engine=_engine(path))


def _read_arrays(path: str, what: str, *, coords: bool) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` or netCDF file (netCDF: data variables, and coordinates when
    ``coords``)."""
    if not os.path.exists(path):
        raise ValueError(f"{what} file {path} does not exist")
    if path.endswith(".npz"):
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    xr = _xarray()
    with xr.open_dataset(path, engine=_engine(path)) as ds:
        names = ds.variables if coords else ds.data_vars
        return {k: ds[k].values for k in names}


def load_observations(
    path: str | os.PathLike, *, dt: Any = None, obs_std=None
) -> ObservationSeries:
    """Read an observation series from ``.nc`` or ``.npz`` (see the module docstring).

    The model steps between times come from ``n_steps`` when stored, else from ``time`` and
    ``dt`` (the model time step, required then). ``obs_std`` overrides the stored one.
    ``locations`` (integer state indices) define subset operators, per time when 2-D.
    """
    path = os.fspath(path)
    data = _read_arrays(path, "observation", coords=True)
    for key in ("y", "locations"):
        if key not in data:
            raise ValueError(f"{path} has no variable {key!r}")
    y = np.asarray(data["y"], dtype=float)
    if y.ndim != 2:
        raise ValueError(f"y in {path} must be (time, obs), got shape {y.shape}")
    loc = np.asarray(data["locations"])
    if not np.issubdtype(loc.dtype, np.integer):
        if np.all(loc == np.round(loc)):
            loc = loc.astype(int)
        else:
            raise ValueError(f"locations in {path} must be integer state indices")
    std = np.asarray(data.get("obs_std", 1.0) if obs_std is None else obs_std, dtype=float)
    if obs_std is None and "obs_std" not in data:
        raise ValueError(f"{path} has no obs_std: pass obs_std=")
    K, m = y.shape
    if loc.ndim == 1:
        om = ObservationModel(
            Subset(jnp.asarray(loc, jnp.int32)),
            DiagonalNoise(jnp.broadcast_to(jnp.asarray(std), (m,))),
        )
        obs: Any = om
    else:
        stds = np.broadcast_to(std, (K, m))
        obs = [
            ObservationModel(
                Subset(jnp.asarray(loc[k], jnp.int32)), DiagonalNoise(jnp.asarray(stds[k]))
            )
            for k in range(K)
        ]
        y = list(y)
    if "n_steps" in data:
        series = observation_series(y, obs, n_steps=np.asarray(data["n_steps"]).astype(int), dt=dt)
        if "time" in data:  # keep the stored times
            series = eqx.tree_at(lambda s: s.time, series, jnp.asarray(data["time"]))
        return series
    if dt is None:
        raise ValueError(f"{path} stores times but no n_steps: pass the model time step dt=")
    return observation_series(y, obs, times=np.asarray(data["time"]), dt=dt)


def load_sample(path: str | os.PathLike, variable: str | None = None) -> Empirical:
    """An initial distribution from a file of states: the empirical distribution
    (:func:`jaxda.models.empirical`) of the rows of a ``(K, n)`` array in ``.npy``, ``.npz``
    or netCDF (``.nc``); ``variable`` names the array in ``.npz``/``.nc`` files (default: the
    only one, or ``"ensemble"``).

    Examples:
        >>> import os, tempfile, numpy as np
        >>> path = os.path.join(tempfile.mkdtemp(), "clim.npy")
        >>> np.save(path, np.arange(12.0).reshape(4, 3))
        >>> load_sample(path).states.shape
        (4, 3)
    """
    path = os.fspath(path)
    if path.endswith(".npy"):
        if not os.path.exists(path):
            raise ValueError(f"sample file {path} does not exist")
        if variable is not None:
            raise ValueError("a .npy file holds one array: do not pass variable=")
        return empirical(np.load(path))
    data = _read_arrays(path, "sample", coords=False)
    if variable is None:
        if len(data) == 1:
            variable = next(iter(data))
        elif "ensemble" in data:
            variable = "ensemble"
        else:
            raise ValueError(f"{path} holds {sorted(data)}: pass variable= to choose one")
    if variable not in data:
        raise ValueError(f"{path} has no variable {variable!r} (it has {sorted(data)})")
    return empirical(np.asarray(data[variable], dtype=float))
