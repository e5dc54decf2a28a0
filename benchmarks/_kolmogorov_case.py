"""The Kolmogorov-flow data-assimilation case shared by ``bench_kolmogorov_sda.py``.

One place for: the model at the observation interval, the training set (standardized with one
scalar mean and std, so the U-Net's translation equivariance is kept), the held-out truth
and its observations (sparse grid points and/or block averages, Gaussian noise), and the
metrics (RMSE, spread, energy spectra per wavenumber band).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxda.models import coarsen, energy_spectrum, kolmogorov, kolmogorov_trajectories
from jaxda.observations import linear, observation_model, observation_series


class Case(NamedTuple):
    n: int
    model: object  # the forecast model on the n-grid, one step = the observation interval
    mean: float  # standardization: z = (x - mean) / std
    std: float
    train: jax.Array  # (M, n²) standardized training states
    truth: jax.Array  # (K, n²) truth at the K observation times (physical units)
    truth0: jax.Array  # (n²,) truth at the start time
    climatology: jax.Array  # (P, n²) held-out attractor states (physical), initial ensembles
    obs: object  # ObservationModel (physical units)
    obs_fn: object  # the operator as a function of one flat state
    obs_std: float  # physical observation noise std
    ys: jax.Array  # (K, m) observations
    series: object  # ObservationSeries for jaxda.assimilate.assimilate


def grid_locations(n: int) -> np.ndarray:
    """``(n², 2)`` coordinates ``(row, column)`` of the flat state, in grid cells."""
    iy, ix = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float), indexing="ij")
    return np.stack([iy.ravel(), ix.ravel()], axis=-1)


def observation_operator(n: int, kind: str, every: int):
    """``"sparse"``: every ``every``-th point in each direction; ``"coarse"``: averages over
    ``every × every`` blocks (located at the block centres)."""
    if kind == "sparse":
        iy, ix = np.meshgrid(np.arange(0, n, every), np.arange(0, n, every), indexing="ij")
        idx = (iy * n + ix).ravel()
        H = np.eye(n * n)[idx]
        loc = np.stack([iy.ravel(), ix.ravel()], axis=-1).astype(float)
        op = linear(jnp.asarray(H), locations=loc)  # (m, 2) coordinates for the localization
        return op, lambda x: x[idx]
    if kind == "coarse":
        eye = np.eye(n * n).reshape(n * n, n, n)
        H = np.asarray(coarsen(eye, every)).reshape(n * n, -1).T  # (m, n²)
        c = np.arange(n // every) * every + (every - 1) / 2
        cy, cx = np.meshgrid(c, c, indexing="ij")
        loc = np.stack([cy.ravel(), cx.ravel()], axis=-1)
        op = linear(jnp.asarray(H), locations=loc)
        Hj = jnp.asarray(H)
        return op, lambda x: Hj @ x
    raise ValueError(f"observation kind must be 'sparse' or 'coarse', got {kind!r}")


def make_case(
    key,
    *,
    n: int = 32,
    sim_n: int | None = None,
    reynolds: float = 1000.0,
    interval: float = 0.2,
    n_traj: int = 64,
    n_records: int = 64,
    spinup: float = 20.0,
    n_cycles: int = 10,
    n_clim: int = 64,
    obs_kind: str = "sparse",
    obs_every: int = 4,
    obs_noise: float = 0.1,
) -> Case:
    """Build the case. ``sim_n`` (default ``n``): simulate on a finer grid and block-average
    to ``n`` (SDA simulates at 256² and keeps 64²); the filters' forecast model is then the
    ``n``-grid model (an imperfect model). ``obs_noise`` is relative to the climatological
    std of the vorticity."""
    sim_n = n if sim_n is None else sim_n
    if sim_n % n:
        raise ValueError(f"sim_n = {sim_n} must be a multiple of n = {n}")
    f = sim_n // n

    def kmodel(side):
        sub = max(1, round(interval / (0.64 / side)))
        return kolmogorov(n=side, reynolds=reynolds, dt=interval, substeps=sub)

    sim, model = kmodel(sim_n), kmodel(n)
    spin = max(1, round(spinup / interval))

    def to_n(X):
        if f == 1:
            return X
        fields = X.reshape(*X.shape[:-1], sim_n, sim_n)
        return coarsen(fields, f).reshape(*X.shape[:-1], n * n)

    k_train, k_test, k_clim, k_noise = jax.random.split(key, 4)
    X = to_n(kolmogorov_trajectories(k_train, sim, n_traj, n_records, spin))
    X = X.reshape(-1, n * n)
    mean, std = float(X.mean()), float(X.std())
    # held-out: one truth trajectory (start + K cycles) and independent climatological states
    T = to_n(kolmogorov_trajectories(k_test, sim, 1, n_cycles + 1, spin))[0]
    C = to_n(kolmogorov_trajectories(k_clim, sim, n_clim, 1, spin))[:, 0]
    case = Case(n, model, mean, std, (X - mean) / std, T[1:], T[0], C, *(None,) * 5)
    return observe(case, k_noise, obs_kind, obs_every, obs_noise)


def observe(case: Case, key, kind: str, every: int, noise: float) -> Case:
    """The case with new observations of its truth: operator ``kind`` (``"sparse"`` /
    ``"coarse"``), noise std ``noise`` times the climatological std."""
    op, obs_fn = observation_operator(case.n, kind, every)
    sigma = noise * case.std
    obs = observation_model(op, obs_std=sigma)
    ys = jax.vmap(obs_fn)(case.truth)
    ys = ys + sigma * jax.random.normal(key, ys.shape, ys.dtype)
    series = observation_series(ys, obs, n_steps=1)
    return case._replace(obs=obs, obs_fn=obs_fn, obs_std=sigma, ys=ys, series=series)


def field(x, n):
    return jnp.asarray(x).reshape(*jnp.shape(x)[:-1], n, n)


def bands(n: int) -> list[tuple[int, int]]:
    """Three wavenumber bands ``[lo, hi]`` up to the 2/3-rule cut-off ``K = (n-1)//3``: large
    scales ``1..K/4``, intermediate ``K/4..K/2`` and small ``K/2..K``."""
    K = (n - 1) // 3
    q, h = max(1, K // 4), max(2, K // 2)
    return [(1, q), (q + 1, h), (h + 1, K)]


def spectrum(x, n) -> np.ndarray:
    """Energy spectrum ``E(k)`` (mean over leading axes) of flat states ``(..., n²)``."""
    _, E = energy_spectrum(field(x, n))
    E = np.asarray(E)
    return E.reshape(-1, E.shape[-1]).mean(axis=0)


def band_errors(E, E_ref, n) -> dict[str, float]:
    """Relative energy error per band, ``Σ_band E / Σ_band E_ref - 1``."""
    return {
        f"k{lo}-{hi}": float(E[lo : hi + 1].sum() / E_ref[lo : hi + 1].sum() - 1.0)
        for lo, hi in bands(n)
    }


def scores(samples, truth, n) -> dict:
    """RMSE of the mean, spread (``√`` mean variance), and spectra of the mean and samples."""
    samples = jnp.asarray(samples)
    mean = samples.mean(axis=0)
    E_true = spectrum(truth, n)
    E_mean, E_samp = spectrum(mean, n), spectrum(samples, n)
    return {
        "rmse_mean": float(jnp.sqrt(jnp.mean((mean - truth) ** 2))),
        "spread": float(jnp.sqrt(jnp.mean(samples.var(axis=0, ddof=1)))),
        "rmse_members": float(jnp.sqrt(jnp.mean((samples - truth) ** 2))),
        "spectral_error_mean": band_errors(E_mean, E_true, n),
        "spectral_error_samples": band_errors(E_samp, E_true, n),
        "spectrum_mean": E_mean.tolist(),
        "spectrum_samples": E_samp.tolist(),
    }
