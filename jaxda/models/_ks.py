r"""Kuramoto–Sivashinsky equation: pseudo-spectral in space, ETDRK4 in time, for one state.

The Kuramoto–Sivashinsky (KS) equation on a periodic domain of length ``L``,

.. math:: u_t = -u\,u_x - u_{xx} - u_{xxxx},

is the standard one-dimensional chaotic PDE of data assimilation (Bocquet & Farchi 2019,
DAPPER's ``KS``). The state is ``u`` at ``n`` equispaced points. In Fourier space
(``v = \mathrm{rfft}(u)``, wavenumbers ``k_j = 2π j / L``) it reads

.. math:: \dot v = \mathcal{L} v + \mathcal{N}(v),\qquad
    \mathcal{L}_j = k_j^2 - k_j^4,\qquad
    \mathcal{N}(v) = -\tfrac{i k}{2}\,\mathrm{rfft}\big(\mathrm{irfft}(v)^2\big),

with the stiff linear part diagonal. Exponential time differencing with a fourth-order
Runge–Kutta stage scheme (ETDRK4, Cox & Matthews 2002) integrates ``\mathcal{L}`` exactly and
the nonlinear term to fourth order. With ``z = h\mathcal{L}`` (``h`` the time step):

.. math::
    a &= e^{z/2} v + Q\,\mathcal{N}(v),\quad b = e^{z/2} v + Q\,\mathcal{N}(a),\quad
    c = e^{z/2} a + Q\,(2\mathcal{N}(b) - \mathcal{N}(v)),\\
    v_{+} &= e^{z} v + f_1 \mathcal{N}(v) + 2 f_2 (\mathcal{N}(a) + \mathcal{N}(b))
        + f_3 \mathcal{N}(c),

with ``Q = h(e^{z/2}-1)/z``, ``f_1 = h(-4 - z + e^z(4 - 3z + z^2))/z^3``,
``f_2 = h(2 + z + e^z(z-2))/z^3``, ``f_3 = h(-4 - 3z - z^2 + e^z(4 - z))/z^3``. These
functions suffer catastrophic cancellation for small ``|z|``; as Kassam & Trefethen (2005)
propose, each is evaluated as its mean over a circle of radius 1 around ``z`` in the complex
plane (Cauchy's integral formula), which is exact for these analytic functions up to the
quadrature error of the trapezoidal rule (geometric in the number of points).

References:
    Cox & Matthews (2002), *J. Comput. Phys.* 176, 430–455;
    Kassam & Trefethen (2005), *SIAM J. Sci. Comput.* 26(4), 1214–1233;
    Bocquet & Farchi (2019), *Tellus A* 71 (the KS twin setup);
    DAPPER ``mods.KS`` (Raanes et al.).
"""

from __future__ import annotations

import math
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._integrate import Model, _check_dt

N_CONTOUR = 32  # points on the circle of the contour-integral evaluation of Q, f1, f2, f3


def _wavenumbers(n: int, length: float) -> np.ndarray:
    """rfft wavenumbers ``2πj/L``, ``j = 0..n/2``, with the Nyquist one set to 0.

    On an even grid the Nyquist mode has no well-defined odd derivative; like DAPPER (and
    Kassam & Trefethen's ``kursiv.m``) it gets wavenumber 0, so it is neither differentiated
    nor damped and keeps its (for a smooth state, negligible) initial value.
    """
    k = 2.0 * np.pi / length * np.arange(n // 2 + 1, dtype=np.float64)
    k[-1] = 0.0
    return k


def _etdrk4_coefficients(lin: np.ndarray, h: float, n_contour: int = N_CONTOUR):
    """``e^{z}``, ``e^{z/2}``, ``Q``, ``f1``, ``f2``, ``f3`` for ``z = h·lin`` (real, numpy)."""
    theta = 2.0 * np.pi * (np.arange(n_contour) + 0.5) / n_contour
    z = h * lin[:, None] + np.exp(1j * theta)[None, :]  # circle of radius 1 around each h·L_j
    ez, ez2 = np.exp(z), np.exp(z / 2.0)
    Q = h * np.mean((ez2 - 1.0) / z, axis=1).real
    f1 = h * np.mean((-4.0 - z + ez * (4.0 - 3.0 * z + z**2)) / z**3, axis=1).real
    f2 = h * np.mean((2.0 + z + ez * (z - 2.0)) / z**3, axis=1).real
    f3 = h * np.mean((-4.0 - 3.0 * z - z**2 + ez * (4.0 - z)) / z**3, axis=1).real
    return np.exp(h * lin), np.exp(h * lin / 2.0), Q, f1, f2, f3


def _etdrk4(x, k, coeffs, nonlinearity, xp):
    """One ETDRK4 step of the KS equation for a real state ``x`` (numpy or jax.numpy ``xp``)."""
    E, E2, Q, f1, f2, f3 = coeffs
    n = x.shape[-1]
    g = -0.5j * nonlinearity * k  # F[-u u_x] = -(ik/2) F[u²]

    def N(v):
        u = xp.fft.irfft(v, n=n)
        return g * xp.fft.rfft(u * u)

    v = xp.fft.rfft(x)
    Nv = N(v)
    a = E2 * v + Q * Nv
    Na = N(a)
    b = E2 * v + Q * Na
    Nb = N(b)
    c = E2 * a + Q * (2.0 * Nb - Nv)
    Nc = N(c)
    v = E * v + f1 * Nv + 2.0 * f2 * (Na + Nb) + f3 * Nc
    return xp.fft.irfft(v, n=n)


class KuramotoSivashinsky(Model):
    r"""Kuramoto–Sivashinsky ``u_t = -ν u u_x - u_xx - u_xxxx`` (``ν = nonlinearity``, 1 by
    default) on a periodic domain of length ``length`` with ``n`` grid points; one ETDRK4
    step of length ``dt`` per call (see the module docstring for the scheme).

    The ETDRK4 coefficients depend on ``dt``, ``n`` and ``length``, which are therefore static;
    they are computed once in numpy (float64) at construction. ``nonlinearity`` is a pytree
    leaf (``jax.grad``/``jax.vmap`` act on it; 0 gives the linear equation, integrated
    exactly). The step is pure ``jax.numpy`` and differentiable in the state.

    The reference state ``x0`` is, as in DAPPER and Kassam & Trefethen (2005),
    ``u(x) = cos(2πx/L)(1 + sin(2πx/L))`` integrated for ``spinup`` time units (150) with the
    model's own step, so it lies on the attractor. The spatial mean of ``u`` is conserved
    exactly (the zero mode has neither linear growth nor nonlinear forcing).

    Attributes:
        grid: positions ``x_j = (j+1) L/n`` of the state entries (as DAPPER).
        locations: grid indices ``0..n-1`` (float), the coordinates used for localization in
            :func:`jaxda.experiments.bocquet2019` (radii in grid spacings, a ring of length
            ``n``, as DAPPER's ``nd_Id_localization((n,))``).

    Examples:
        >>> import jax
        >>> m = KuramotoSivashinsky()
        >>> m.dim, m.dt, round(m.length, 4)
        (128, 0.25, 100.531)
        >>> x1 = m(m.x0)
        >>> bool(jnp.allclose(x1.mean(), m.x0.mean()))
        True
        >>> jax.vmap(m)(jnp.stack([m.x0, x1])).shape
        (2, 128)
    """

    n: int = eqx.field(static=True)
    length: float = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    nonlinearity: float | Array
    x0: Array
    wavenumbers: Array  # rfft wavenumbers (Nyquist set to 0)
    coefficients: tuple[Array, ...]  # e^z, e^{z/2}, Q, f1, f2, f3 of ETDRK4
    name: ClassVar[str] = "kuramoto_sivashinsky"

    def __init__(
        self,
        n: int = 128,
        length: float = 32.0 * math.pi,
        dt: float = 0.25,
        nonlinearity: float | Array = 1.0,
        spinup: float = 150.0,
    ):
        if not isinstance(n, int) or n < 4 or n % 2:
            raise ValueError(f"n (grid points) must be an even int >= 4, got {n!r}")
        if not (math.isfinite(float(length)) and float(length) > 0):
            raise ValueError(f"length (domain length) must be positive and finite, got {length}")
        _check_dt(dt)
        if not (math.isfinite(float(spinup)) and float(spinup) >= 0):
            raise ValueError(f"spinup must be >= 0 and finite, got {spinup}")
        if jnp.ndim(nonlinearity) != 0:
            raise ValueError(f"nonlinearity must be a scalar, got shape {jnp.shape(nonlinearity)}")
        self.n, self.length, self.dt = n, float(length), float(dt)
        self.nonlinearity = nonlinearity
        k = _wavenumbers(n, self.length)
        coeffs = _etdrk4_coefficients(k**2 - k**4, self.dt)
        # reference state: the Kassam–Trefethen initial condition, spun up in float64 numpy
        # (independent of jax's x64 flag; always with the full equation, nonlinearity 1)
        x = self.grid
        u = np.cos(2 * np.pi * x / self.length) * (1 + np.sin(2 * np.pi * x / self.length))
        for _ in range(int(spinup / self.dt)):
            u = _etdrk4(u, k, coeffs, 1.0, np)
        self.x0 = jnp.asarray(u)
        self.wavenumbers = jnp.asarray(k)
        self.coefficients = tuple(jnp.asarray(c) for c in coeffs)

    @property
    def grid(self) -> np.ndarray:
        """Positions ``x_j = (j+1)·length/n``, ``j = 0..n-1`` (DAPPER's and Kassam–Trefethen's)."""
        return self.length / self.n * np.arange(1, self.n + 1, dtype=np.float64)

    @property
    def locations(self) -> np.ndarray:
        """Grid indices ``0..n-1`` as floats: localization coordinates on a ring of length
        ``n`` (radii in grid spacings, DAPPER's convention)."""
        return np.arange(self.n, dtype=np.float64)

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " n"]:
        return _etdrk4(x, self.wavenumbers, self.coefficients, self.nonlinearity, jnp)


def kuramoto_sivashinsky(
    n: int = 128,
    length: float = 32.0 * math.pi,
    dt: float = 0.25,
    nonlinearity: float | Array = 1.0,
    spinup: float = 150.0,
) -> KuramotoSivashinsky:
    """:class:`KuramotoSivashinsky` with ``n`` grid points on ``[0, length)`` and an ETDRK4
    step ``dt``; defaults are DAPPER's ``KS.Model`` (``n=128``, ``L=32π``, ``dt=0.25``;
    :func:`jaxda.experiments.bocquet2019` uses ``dt=0.5``).

    Examples:
        >>> m = kuramoto_sivashinsky(dt=0.5)
        >>> m(m.x0).shape
        (128,)
    """
    return KuramotoSivashinsky(n=n, length=length, dt=dt, nonlinearity=nonlinearity, spinup=spinup)
