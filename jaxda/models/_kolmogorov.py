r"""2-D Kolmogorov flow: incompressible Navier–Stokes in vorticity form, pseudo-spectral, ETDRK4.

The flow of the score-based data assimilation paper (Rozet & Louppe 2023, "SDA"), there
generated with jax-cfd: a 2-D incompressible fluid on the periodic square ``[0, 2π)²``, driven
by the steady body force ``F = A sin(k_f y) x̂`` and damped by viscosity and a linear drag. In
vorticity form (``ω = ∂_x v - ∂_y u``),

.. math::
    ∂_t ω + \mathbf u·∇ω = ν∇²ω - αω + f,\qquad f = \operatorname{curl} F = -A k_f \cos(k_f y),

with the velocity from the stream function: ``∇²ψ = -ω``, ``u = ∂_y ψ``, ``v = -∂_x ψ``
(divergence-free by construction). SDA's setting: ``ν = 1/Re`` with ``Re = 1000``, ``α = 0.1``,
``k_f = 4``, ``A = 1``.

**Space.** Fourier–Galerkin with pseudo-spectral products on an ``n × n`` grid
``x_j = y_j = 2πj/n``: ``ω̂ = \mathrm{rfft2}(ω)`` (integer wavenumbers ``k = (k_x, k_y)``),
``ψ̂ = ω̂/|k|²`` (``ψ̂_0 = 0``), derivatives are multiplications by ``i k``, and the advection
``u ∂_x ω + v ∂_y ω`` is formed on the grid and transformed back. The 2/3 rule removes
aliasing: only modes with ``|k_x|, |k_y| ≤ K = ⌊(n-1)/3⌋`` are kept (then no product of two
kept modes aliases onto a kept mode), so the discrete advection conserves energy and
enstrophy exactly, as the continuous one does. Every step starts by projecting the state on
these modes (finer content of an input state, e.g. an analysis increment, is dropped).

**Time.** The linear part ``\mathcal L = -ν|k|² - α`` is diagonal; exponential time
differencing with fourth-order Runge–Kutta stages (ETDRK4, Cox & Matthews 2002) integrates it
**exactly** and the advection plus the (constant) forcing to fourth order. With
``z = h\mathcal L`` and ``φ_1(z) = (e^z - 1)/z``, ``φ_2 = (e^z - 1 - z)/z²``,
``φ_3 = (e^z - 1 - z - z²/2)/z³``, one step of length ``h`` reads

.. math::
    a &= e^{z/2} v + \tfrac h2 φ_1(\tfrac z2) N(v),\quad
    b = e^{z/2} v + \tfrac h2 φ_1(\tfrac z2) N(a),\quad
    c = e^{z/2} a + \tfrac h2 φ_1(\tfrac z2)(2N(b) - N(v)),\\
    v_+ &= e^{z} v + h(φ_1 - 3φ_2 + 4φ_3) N(v) + 2h(φ_2 - 2φ_3)(N(a) + N(b))
        + h(4φ_3 - φ_2) N(c),

with ``N(v) = -\widehat{\mathbf u·∇ω} + \hat f``. The ``φ`` functions are evaluated by their
Taylor series for ``|z| < 1`` and in closed form beyond (no cancellation, no ``0/0``), in
``jax.numpy`` from the parameters at every call, so ``ν``, ``α``, ``A``, ``k_f`` and ``dt`` are
ordinary pytree leaves (``jax.grad``/``jax.vmap`` act on them). A constant ``N`` is integrated
exactly (the three weights sum to ``hφ_1``), hence the laminar solution ``ω^* = f/(ν k_f² + α)``
is a fixed point to rounding. The time step is limited by the advective CFL condition of RK4
(about ``|u|_{max} K h ≲ 2.8``): the default internal step ``0.64/n`` (0.01 at ``n = 64``) is
stable on the ``Re = 1000`` attractor, whose speeds stay below about 6 (measured maximum 5.3
over 50 time units at ``n = 64``, 4.6 at ``n = 128``: CFL number about 1.1).

**Resolution.** At ``Re = 1000`` a ``64²`` grid (``K = 21``) is marginal: its mean energy
spectrum (50 time units) is within about 10% of the ``128²`` one up to ``k ≈ 11`` and then
rises above it, to 2.6 times at the cut-off (a pile-up, visible as grid-scale noise in the
vorticity). SDA solves on
a finer grid and block-averages to ``64²``; here ``coarsen(field, 2)`` of an ``n = 128`` run
does the same (``benchmarks/bench_kolmogorov.py`` compares the two grids).

**State layout.** The state is the vorticity field ``ω[iy, ix]`` (rows ``y``, columns ``x``)
flattened row-major, ``x = ω.ravel()`` of size ``n²`` (as :class:`jaxda.models.QG`);
:meth:`Kolmogorov.to_field` / :meth:`Kolmogorov.to_state` convert. The helpers
:func:`velocity`, :func:`energy_spectrum`, :func:`coarsen` take 2-D fields ``(..., n, n)``.

References:
    Rozet & Louppe (2023), "Score-based data assimilation", NeurIPS (Kolmogorov experiment);
    Kochkov et al. (2021), "Machine learning-accelerated computational fluid dynamics", PNAS
    (jax-cfd, the Kolmogorov setup); Cox & Matthews (2002), *J. Comput. Phys.* 176;
    Canuto, Hussaini, Quarteroni & Zang (2006), *Spectral Methods* (the 2/3 rule).
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import is_concrete
from ._integrate import Model, _check_dt

_SERIES_TERMS = 18  # Taylor terms of φ_k(z) for |z| < 1: the remainder is below 1/(18+3)! ≈ 2e-20


def _check_side(n, name: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 8 or n % 2:
        raise ValueError(f"{name} (grid points per side) must be an even int >= 8, got {n!r}")
    return int(n)


def _side_of(field: Array, name: str = "omega") -> int:
    """The grid side ``n`` of a field ``(..., n, n)``, checked eagerly."""
    shape = jnp.shape(field)
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise ValueError(f"{name} must be a square 2-D field (..., n, n), got shape {shape}")
    return _check_side(shape[-1], f"the side of {name}")


def _wavenumbers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer wavenumbers ``(k_x, k_y)`` of ``rfft2`` on ``[0, 2π)²``, broadcast to
    ``(n, n//2 + 1)`` (rows ``k_y``, columns ``k_x``)."""
    kx = np.arange(n // 2 + 1, dtype=np.float64)
    ky = np.fft.fftfreq(n, 1.0 / n)
    return np.broadcast_to(kx[None, :], (n, n // 2 + 1)), np.broadcast_to(
        ky[:, None], (n, n // 2 + 1)
    )


def _dealias_mask(n: int) -> np.ndarray:
    """The 2/3 rule: keep ``|k_x|, |k_y| ≤ ⌊(n-1)/3⌋`` (no kept triad aliases onto a kept mode)."""
    kx, ky = _wavenumbers(n)
    cut = (n - 1) // 3
    return (np.abs(kx) <= cut) & (np.abs(ky) <= cut)


def _phi(z: Array) -> tuple[Array, Array, Array]:
    """``φ_1, φ_2, φ_3`` of a real array ``z``: Taylor series for ``|z| < 1``, closed form beyond."""
    small = jnp.abs(z) < 1.0
    zs = jnp.where(small, z, 0.0)  # series argument
    zl = jnp.where(small, 1.0, z)  # closed-form argument, away from 0 (no NaN in the gradient)

    def series(k: int) -> Array:
        acc = jnp.zeros_like(zs) + 1.0 / math.factorial(_SERIES_TERMS + k)
        for j in range(_SERIES_TERMS - 1, -1, -1):
            acc = acc * zs + 1.0 / math.factorial(j + k)
        return acc

    em1 = jnp.expm1(zl)
    p1 = em1 / zl
    p2 = (em1 - zl) / zl**2
    p3 = (em1 - zl - 0.5 * zl**2) / zl**3
    return (
        jnp.where(small, series(1), p1),
        jnp.where(small, series(2), p2),
        jnp.where(small, series(3), p3),
    )


def _stream(w: Array, k2: Array) -> Array:
    """``ψ̂ = ω̂/|k|²`` with ``ψ̂_0 = 0``."""
    return w / jnp.where(k2 == 0, 1.0, k2) * (k2 != 0)


class Kolmogorov(Model):
    r"""2-D Kolmogorov flow (vorticity, pseudo-spectral, ETDRK4) for one state ``x = ω.ravel()``.

    ``__call__(x)`` advances the vorticity by ``dt`` time units with ``substeps`` ETDRK4 steps
    of length ``dt/substeps`` (see the module docstring for the equations and the scheme). The
    physical parameters and ``dt`` are pytree leaves: ``jax.grad``/``jax.vmap`` act on them.
    Build it with :func:`kolmogorov`.

    Attributes:
        n: grid points per side (static, even).
        viscosity: ``ν = 1/Re``.
        drag: linear drag ``α``.
        forcing_wavenumber: ``k_f`` of ``F = A sin(k_f y) x̂`` (an integer for a periodic force).
        forcing_amplitude: ``A`` (0: the free, decaying flow).
        dt: time per model step.
        substeps: ETDRK4 steps per model step (static).
        x0: the reference state (see :func:`kolmogorov`).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> m = Kolmogorov(n=16, viscosity=0.01, drag=0.1, forcing_wavenumber=2.0, dt=0.05,
        ...                x0=jnp.zeros(256))
        >>> x = m(m(m.x0))  # the force starts the flow from rest
        >>> x.shape, bool(jnp.abs(x).max() > 0), abs(float(x.mean())) < 1e-12
        ((256,), True, True)
    """

    viscosity: float | Array
    drag: float | Array
    forcing_wavenumber: float | Array
    forcing_amplitude: float | Array
    dt: float | Array
    x0: Array
    n: int = eqx.field(static=True)
    substeps: int = eqx.field(static=True)
    name: ClassVar[str] = "kolmogorov"

    def __init__(
        self,
        n: int = 64,
        *,
        viscosity: float | Array = 1.0e-3,
        drag: float | Array = 0.1,
        forcing_wavenumber: float | Array = 4.0,
        forcing_amplitude: float | Array = 1.0,
        dt: float | Array = 0.01,
        substeps: int = 1,
        x0: Array | None = None,
    ):
        n = _check_side(n)
        if isinstance(substeps, bool) or not isinstance(substeps, int | np.integer) or substeps < 1:
            raise ValueError(f"substeps must be an int >= 1, got {substeps!r}")
        _check_dt(dt)
        for label, value in (
            ("viscosity", viscosity),
            ("drag", drag),
            ("forcing_wavenumber", forcing_wavenumber),
            ("forcing_amplitude", forcing_amplitude),
        ):
            if is_concrete(value):
                v = np.asarray(value)
                if v.ndim != 0 or not np.isfinite(v):
                    raise ValueError(f"{label} must be a finite scalar, got {value!r}")
                if label in ("viscosity", "drag") and float(v) < 0:
                    raise ValueError(f"{label} must be >= 0, got {value!r}")
        if is_concrete(forcing_wavenumber):
            kf = float(forcing_wavenumber)
            if kf != round(kf) or not 1 <= kf <= (n - 1) // 3:
                raise ValueError(
                    "forcing_wavenumber must be an integer in [1, (n-1)//3] (a periodic force "
                    f"on a resolved mode; (n-1)//3 = {(n - 1) // 3}), got {forcing_wavenumber!r}"
                )
        if x0 is None:
            x0 = jnp.zeros(n * n)
        x0 = jnp.asarray(x0)
        if x0.shape != (n * n,):
            raise ValueError(
                f"x0 must be a flat vorticity state of shape ({n * n},), got {x0.shape}"
            )
        self.n, self.substeps = n, int(substeps)
        self.viscosity, self.drag = viscosity, drag
        self.forcing_wavenumber, self.forcing_amplitude = forcing_wavenumber, forcing_amplitude
        self.dt, self.x0 = dt, x0

    @property
    def grid(self) -> np.ndarray:
        """Grid coordinates ``2πj/n``, ``j = 0..n-1`` (the same in ``x`` and ``y``)."""
        return 2.0 * np.pi / self.n * np.arange(self.n, dtype=np.float64)

    def to_field(self, x: Float[Array, "... n2"]) -> Float[Array, "... n n"]:
        """State vector(s) ``(..., n²)`` to vorticity field(s) ``(..., n, n)`` (rows ``y``)."""
        x = jnp.asarray(x)
        if x.shape[-1:] != (self.n * self.n,):
            raise ValueError(f"a Kolmogorov state has n² = {self.n**2} entries, got {x.shape}")
        return x.reshape(*x.shape[:-1], self.n, self.n)

    def to_state(self, field: Float[Array, "... n n"]) -> Float[Array, "... n2"]:
        """Vorticity field(s) ``(..., n, n)`` to state vector(s) ``(..., n²)`` (row-major)."""
        field = jnp.asarray(field)
        if field.shape[-2:] != (self.n, self.n):
            raise ValueError(
                f"a Kolmogorov field has shape (..., {self.n}, {self.n}), got {field.shape}"
            )
        return field.reshape(*field.shape[:-2], self.n * self.n)

    def forcing(self, dtype=None) -> Float[Array, "n n"]:
        """The vorticity forcing ``f = curl F = -A k_f cos(k_f y)`` on the grid."""
        y = jnp.asarray(self.grid, dtype=dtype)
        f = -self.forcing_amplitude * self.forcing_wavenumber * jnp.cos(self.forcing_wavenumber * y)
        return jnp.broadcast_to(f[:, None], (self.n, self.n))

    def laminar(self) -> Float[Array, " n2"]:
        """The laminar steady state ``ω^* = f/(ν k_f² + α)`` as a state vector (unstable at
        ``Re = 1000``: the flow leaves it for the turbulent attractor)."""
        rate = self.viscosity * self.forcing_wavenumber**2 + self.drag
        return self.to_state(self.forcing() / rate)

    def __call__(self, x: Float[Array, " n2"]) -> Float[Array, " n2"]:
        n = self.n
        kx_np, ky_np = _wavenumbers(n)
        mask = jnp.asarray(_dealias_mask(n))
        kx, ky = jnp.asarray(kx_np), jnp.asarray(ky_np)
        k2 = kx**2 + ky**2
        h = self.dt / self.substeps
        z = h * (-self.viscosity * k2 - self.drag)
        p1, p2, p3 = _phi(z)
        q1 = _phi(0.5 * z)[0]
        E, E2, Q = jnp.exp(z), jnp.exp(0.5 * z), 0.5 * h * q1
        f1, f2, f3 = h * (p1 - 3.0 * p2 + 4.0 * p3), h * (p2 - 2.0 * p3), h * (4.0 * p3 - p2)
        f_hat = jnp.fft.rfft2(self.forcing(dtype=x.dtype)) * mask

        def N(w):
            psi = _stream(w, k2)
            u, v, wx, wy = jnp.fft.irfft2(
                jnp.stack([1j * ky * psi, -1j * kx * psi, 1j * kx * w, 1j * ky * w]), s=(n, n)
            )
            return f_hat - mask * jnp.fft.rfft2(u * wx + v * wy)

        def etdrk4(w, _):
            Nw = N(w)
            a = E2 * w + Q * Nw
            Na = N(a)
            b = E2 * w + Q * Na
            Nb = N(b)
            c = E2 * a + Q * (2.0 * Nb - Nw)
            Nc = N(c)
            return E * w + f1 * Nw + 2.0 * f2 * (Na + Nb) + f3 * Nc, None

        w = mask * jnp.fft.rfft2(x.reshape(n, n))
        w, _ = jax.lax.scan(etdrk4, w, None, length=self.substeps)
        return jnp.fft.irfft2(w, s=(n, n)).reshape(n * n).astype(x.dtype)


def _deterministic_initial_field(n: int) -> np.ndarray:
    """A fixed, asymmetric large-scale vorticity field (the start of ``x0``'s spin-up)."""
    y, x = np.meshgrid(
        2.0 * np.pi / n * np.arange(n), 2.0 * np.pi / n * np.arange(n), indexing="ij"
    )
    return (
        np.sin(x + y)
        + 0.8 * np.cos(2.0 * x - y + 1.0)
        + 0.6 * np.sin(3.0 * x + 2.0 * y + 2.0)
        + 0.5 * np.cos(x - 3.0 * y + 0.5)
        + 0.4 * np.sin(4.0 * x + 3.0)
    )


def kolmogorov(
    n: int = 64,
    reynolds: float | Array = 1000.0,
    drag: float | Array = 0.1,
    forcing_wavenumber: float | Array = 4.0,
    dt: float | Array | None = None,
    *,
    substeps: int = 1,
    forcing_amplitude: float | Array = 1.0,
    spinup: float = 0.0,
) -> Kolmogorov:
    r""":class:`Kolmogorov` flow of SDA (Rozet & Louppe 2023): ``ν = 1/reynolds``, linear
    ``drag``, force ``forcing_amplitude · sin(forcing_wavenumber · y) x̂`` on an ``n × n`` grid.

    ``dt`` is the time per model step (default ``0.64/n · substeps``: 0.01 per ETDRK4 step at
    ``n = 64``, stable at ``Re = 1000``); each model step takes ``substeps`` ETDRK4 steps (SDA
    observes every 0.2 time units: ``kolmogorov(dt=0.2, substeps=20)``). ``x0`` is a fixed
    large-scale field (five Fourier modes of unit size, see ``_deterministic_initial_field``)
    integrated for ``spinup`` time units with the model itself: ``spinup ≳ 50`` puts it on
    the turbulent attractor; the default 0 keeps construction instant.

    Examples:
        >>> import jax.numpy as jnp
        >>> m = kolmogorov(n=32, reynolds=100.0, spinup=0.5)
        >>> m.dim, round(float(m.viscosity), 4), round(float(m.dt), 4)
        (1024, 0.01, 0.02)
        >>> m(m.x0).shape
        (1024,)
    """
    n = _check_side(n)
    if is_concrete(reynolds) and not (np.ndim(reynolds) == 0 and float(reynolds) > 0):
        raise ValueError(f"reynolds must be a positive scalar, got {reynolds!r}")
    if not (math.isfinite(float(spinup)) and float(spinup) >= 0):
        raise ValueError(f"spinup must be >= 0 and finite, got {spinup!r}")
    if dt is None:
        dt = 0.64 / n * substeps
    x0 = jnp.asarray(_deterministic_initial_field(n).ravel())
    model = Kolmogorov(
        n,
        viscosity=1.0 / reynolds,
        drag=drag,
        forcing_wavenumber=forcing_wavenumber,
        forcing_amplitude=forcing_amplitude,
        dt=dt,
        substeps=substeps,
        x0=x0,
    )
    steps = round(float(spinup) / float(dt)) if spinup > 0 else 0
    if steps > 0:
        x0 = _run(model, x0, steps)
        model = eqx.tree_at(lambda m: m.x0, model, x0)
    return model


@eqx.filter_jit
def _run(model: Kolmogorov, x: Array, steps: int) -> Array:
    return jax.lax.fori_loop(0, steps, lambda _, x: model(x), x)


def random_vorticity(
    key: Array,
    n: int,
    peak_wavenumber: float = 4.0,
    rms_velocity: float | Array = 1.0,
    dtype=None,
) -> Float[Array, "n n"]:
    r"""A random, smooth, zero-mean vorticity field ``(n, n)`` on ``[0, 2π)²``.

    Independent complex Gaussian Fourier coefficients with the energy spectrum
    ``E(k) ∝ k⁴ exp(-2(k/k_p)²)`` (peaked at ``k_p = peak_wavenumber``), resolved modes only
    (2/3 rule), scaled to the root-mean-square velocity ``rms_velocity`` (``⟨|u|²⟩^{1/2}``).
    The initial fields of :func:`kolmogorov_trajectories` (jax-cfd's
    ``filtered_velocity_field`` plays this role in SDA).

    Examples:
        >>> import jax
        >>> w = random_vorticity(jax.random.key(0), 32)
        >>> u, v = velocity(w)
        >>> w.shape, round(float(jnp.sqrt(jnp.mean(u**2 + v**2))), 6), abs(float(w.mean())) < 1e-12
        ((32, 32), 1.0, True)
    """
    n = _check_side(n)
    if not (np.isfinite(peak_wavenumber) and peak_wavenumber > 0):
        raise ValueError(f"peak_wavenumber must be positive, got {peak_wavenumber!r}")
    kx, ky = _wavenumbers(n)
    k = np.sqrt(kx**2 + ky**2)
    # a shell holds ∝ k modes, each with energy ½|ω̂|²/k² = E(k)/k: |ω̂| ∝ k^{5/2} exp(-(k/k_p)²)
    amp = np.where(_dealias_mask(n) & (k > 0), k**2.5 * np.exp(-((k / peak_wavenumber) ** 2)), 0.0)
    kr, ki = jax.random.split(key)
    shape = (n, n // 2 + 1)
    dtype = dtype or jnp.result_type(float)
    noise = jax.random.normal(kr, shape, dtype) + 1j * jax.random.normal(ki, shape, dtype)
    w = jnp.fft.irfft2(jnp.asarray(amp) * noise, s=(n, n))  # Hermitian symmetry enforced here
    u, v = velocity(w)
    return w * (rms_velocity / jnp.sqrt(jnp.mean(u**2 + v**2)))


def velocity(omega: Float[Array, "... n n"]) -> tuple[Array, Array]:
    r"""The velocity ``(u, v)`` of a vorticity field ``(..., n, n)`` on ``[0, 2π)²``.

    ``∇²ψ = -ω`` solved spectrally (``ψ̂ = ω̂/|k|²``, mean of ``ψ`` 0), then ``u = ∂_y ψ``,
    ``v = -∂_x ψ``: divergence-free, and its curl ``∂_x v - ∂_y u`` is ``ω`` minus its mean.
    The Nyquist modes (no odd derivative) are dropped.

    Examples:
        >>> import numpy as np
        >>> y = 2 * np.pi * np.arange(16) / 16
        >>> omega = np.broadcast_to(np.cos(2 * y)[:, None], (16, 16))  # ω = cos(2y)
        >>> u, v = velocity(omega)  # ψ = cos(2y)/4, u = -sin(2y)/2, v = 0
        >>> bool(np.allclose(u[:, 0], -np.sin(2 * y) / 2)), bool(np.allclose(v, 0))
        (True, True)
    """
    omega = jnp.asarray(omega)
    n = _side_of(omega)
    kx_np, ky_np = _wavenumbers(n)
    nyq = (np.abs(ky_np) == n // 2) | (kx_np == n // 2)
    kx, ky = jnp.asarray(np.where(nyq, 0.0, kx_np)), jnp.asarray(np.where(nyq, 0.0, ky_np))
    psi = _stream(jnp.fft.rfft2(omega), jnp.asarray(kx_np**2 + ky_np**2))
    u = jnp.fft.irfft2(1j * ky * psi, s=(n, n))
    v = jnp.fft.irfft2(-1j * kx * psi, s=(n, n))
    return u, v


def energy_spectrum(omega: Float[Array, "... n n"]) -> tuple[Array, Array]:
    r"""Isotropic kinetic-energy spectrum ``(k, E(k))`` of a vorticity field ``(..., n, n)``.

    The energy of each Fourier mode, ``½|û(k)|² + ½|v̂(k)|² = ½|ω̂(k)|²/|k|²`` (normalised
    so that the modes sum to the mean kinetic energy ``½⟨u² + v²⟩``, Parseval), summed over
    the shells ``k - ½ ≤ |k| < k + ½``, ``k = 0, 1, ..., ⌈n/√2⌉`` (all modes, corners
    included, so ``Σ_k E(k) = ½⟨u² + v²⟩``). Used to compare the spectra of analyses and
    samples against the truth (log-log plot of ``E`` against ``k``).

    Examples:
        >>> import numpy as np
        >>> y, x = np.meshgrid(*2 * [2 * np.pi * np.arange(32) / 32], indexing="ij")
        >>> k, E = energy_spectrum(np.cos(3 * x + 4 * y))  # |k| = 5, energy 1/(4·25)
        >>> int(k[jnp.argmax(E)]), round(float(E[5]), 6), round(float(E.sum()), 6)
        (5, 0.01, 0.01)
    """
    omega = jnp.asarray(omega)
    n = _side_of(omega)
    kx, ky = _wavenumbers(n)
    k2 = kx**2 + ky**2
    weight = np.where((kx == 0) | (kx == n // 2), 1.0, 2.0)  # rfft: count ±k_x once each
    scale = np.where(k2 > 0, weight / np.where(k2 > 0, k2, 1.0), 0.0) / (2.0 * n**4)
    shells = math.ceil(n / math.sqrt(2.0)) + 1
    index = np.floor(np.sqrt(k2) + 0.5).astype(int).ravel()
    onehot = np.zeros((index.size, shells))
    onehot[np.arange(index.size), index] = 1.0
    w = jnp.fft.rfft2(omega)
    e = (jnp.abs(w) ** 2 * jnp.asarray(scale, dtype=jnp.real(w).dtype)).reshape(*w.shape[:-2], -1)
    return jnp.arange(shells), e @ jnp.asarray(onehot, dtype=e.dtype)


def coarsen(omega: Float[Array, "... n n"], factor: int) -> Float[Array, "... m m"]:
    r"""Block averages of a field ``(..., n, n)`` over ``factor × factor`` cells: ``(..., n/factor,
    n/factor)``. The coarse observations of SDA (e.g. ``64² → 8²`` with ``factor = 8``).

    Examples:
        >>> import jax.numpy as jnp
        >>> coarsen(jnp.arange(16.0).reshape(4, 4), 2).tolist()
        [[2.5, 4.5], [10.5, 12.5]]
    """
    omega = jnp.asarray(omega)
    if omega.ndim < 2:
        raise ValueError(f"omega must be a 2-D field (..., n, n), got shape {omega.shape}")
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer) or factor < 1:
        raise ValueError(f"factor must be an int >= 1, got {factor!r}")
    ny, nx = omega.shape[-2:]
    if ny % factor or nx % factor:
        raise ValueError(f"factor {factor} must divide the field's sides, got shape {omega.shape}")
    blocks = omega.reshape(*omega.shape[:-2], ny // factor, factor, nx // factor, factor)
    return blocks.mean(axis=(-3, -1))


def kolmogorov_trajectories(
    key: Array,
    model: Kolmogorov,
    n_trajectories: int,
    n_steps: int,
    spinup: int,
    every: int = 1,
    *,
    peak_wavenumber: float = 4.0,
    rms_velocity: float = 1.0,
) -> Float[Array, "B K n2"]:
    r"""A training set: ``n_trajectories`` independent trajectories of ``n_steps`` states each.

    Each trajectory starts from its own :func:`random_vorticity` field (one key split per
    trajectory), runs ``spinup`` model steps to reach the attractor, then records the state
    ``n_steps`` times, ``every`` model steps apart (the first record is the state right after
    the spin-up). All trajectories run at once (``jax.vmap``, ``lax.scan`` in time, one jit).
    Returns ``(n_trajectories, n_steps, n²)`` flat states (use ``model.to_field``).

    Examples:
        >>> import jax
        >>> m = kolmogorov(n=16, reynolds=100.0, forcing_wavenumber=2.0, dt=0.1, substeps=2)
        >>> X = kolmogorov_trajectories(jax.random.key(0), m, 3, n_steps=4, spinup=2, every=2)
        >>> X.shape, bool(jnp.all(jnp.isfinite(X)))
        ((3, 4, 256), True)
    """
    if not isinstance(model, Kolmogorov):
        raise TypeError(f"model must be a Kolmogorov model, got {type(model).__name__}")
    for label, value, low in (
        ("n_trajectories", n_trajectories, 1),
        ("n_steps", n_steps, 1),
        ("spinup", spinup, 0),
        ("every", every, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
    keys = jax.random.split(key, n_trajectories)
    x0 = jax.vmap(lambda k: random_vorticity(k, model.n, peak_wavenumber, rms_velocity).ravel())(
        keys
    )
    return _trajectories(model, x0.astype(model.x0.dtype), int(n_steps), int(spinup), int(every))


@eqx.filter_jit
def _trajectories(model: Kolmogorov, x0: Array, n_steps: int, spinup: int, every: int) -> Array:
    def one(x):
        x = jax.lax.fori_loop(0, spinup, lambda _, x: model(x), x)

        def record(x, _):
            return jax.lax.fori_loop(0, every, lambda _, x: model(x), x), x

        _, xs = jax.lax.scan(record, x, None, length=n_steps)
        return xs

    return jax.vmap(one)(x0)
