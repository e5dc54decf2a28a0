r"""The 2-D quasi-geostrophic (QG) ocean model of Sakov & Oke (2008), DAPPER's ``QG``.

A wind-driven, single-layer ("1.5-layer") quasi-geostrophic flow on the unit square: the
double-gyre setup used as a 16 641-variable test bed in data assimilation. The state is the
stream function ``ψ`` on an ``n × n`` grid **including** its boundary (``n = 129`` in the
paper), flattened row by row. The prognostic variable is the potential vorticity

.. math::
    q = ∇²ψ - F ψ,

advanced by

.. math::
    ∂_t q = -r\,J(ψ, q) - β\,∂_x ψ - r_b\,∇²ψ + r_h\,∇⁴ψ - r_{h2}\,∇⁶ψ + \operatorname{curl} τ,

    \operatorname{curl} τ(y) = -2π \sin(2π y),

with ``ψ = 0`` on the boundary of the unit square ``[0, 1]²`` and (in these non-dimensional
units) ``β = 1``. The discretisation follows Sakov's model:

* grid spacing ``h = 1/(n-1)`` in ``x`` and ``y``; ``∇²`` is the 5-point Laplacian on the
  interior, set to zero on the boundary (so ``∇⁴`` and ``∇⁶`` are repeated 5-point
  Laplacians, each zero on the boundary), ``∂_x`` a centred difference;
* ``J`` is the Arakawa (1966) Jacobian, the mean of three second-order Jacobians, which
  conserves the discrete energy and enstrophy (:func:`arakawa_jacobian`);
* ``ψ`` is recovered from ``q`` by solving the Helmholtz problem ``(∇² - F)ψ = q``,
  ``ψ = 0`` on the boundary, **exactly** with a discrete sine transform
  (:func:`helmholtz_solve`), where Sakov's Fortran code runs three multigrid cycles;
* the tendency is zero on the boundary; time stepping is classical RK4 with ``substeps``
  internal steps per model step (DAPPER: internal ``dt = 1.25``, one model step
  ``dtout = 5``, so ``substeps = 4``).

Parameters of the paper (DAPPER ``QG.default_prms``): ``F = 1600`` (``(L/R_d)²``),
``r = 10⁻⁵`` (the factor of the nonlinear advection, DAPPER's ``R``), ``r_b = r_h = 0``,
``r_{h2} = 2·10⁻¹²`` (biharmonic friction; Sakov increases it to ``2·10⁻¹¹`` for small
ensembles).

Layout: the 2-D field has rows indexed by ``y`` and columns by ``x``, ``field[iy, ix]``, and
the state vector is ``field.ravel()`` (row-major), which is DAPPER's ordering (DAPPER
reshapes its state to the Fortran array ``PSI(ix, iy)`` in column-major order, i.e. the flat
index is ``ix + n·iy``).

References:
    Sakov & Oke (2008), "A deterministic formulation of the ensemble Kalman filter: an
    alternative to ensemble square root filters", *Tellus A* 60(2), section 4 and Fig. 7;
    Arakawa (1966), *J. Comput. Phys.* 1(1); DAPPER ``dapper.mods.QG`` (Raanes et al.), which
    wraps Sakov's Fortran code from EnKF-Matlab.
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import is_concrete
from ._integrate import Model, _check_dt, rk4_step


def _interior(f: Array, dx: int = 0, dy: int = 0) -> Array:
    """The interior block of a full ``(..., ny, nx)`` field shifted by ``dx`` columns (x) and
    ``dy`` rows (y): entry ``[j, i]`` is ``f[1 + j + dy, 1 + i + dx]``."""
    ny, nx = f.shape[-2:]
    return f[..., 1 + dy : ny - 1 + dy, 1 + dx : nx - 1 + dx]


def _pad(interior: Array) -> Array:
    """Embed an interior block in a full field with zeros on the boundary."""
    widths = [(0, 0)] * (interior.ndim - 2) + [(1, 1), (1, 1)]
    return jnp.pad(interior, widths)


def laplacian(field: Float[Array, "ny nx"], spacing: float | Array) -> Float[Array, "ny nx"]:
    r"""The 5-point Laplacian on the interior of a grid, zero on the boundary.

    .. math::
        (∇²f)_{j,i} = \frac{f_{j,i+1} + f_{j,i-1} + f_{j+1,i} + f_{j-1,i} - 4 f_{j,i}}{h²}

    Examples:
        >>> import jax.numpy as jnp
        >>> y, x = jnp.meshgrid(jnp.arange(5.0), jnp.arange(5.0), indexing="ij")
        >>> laplacian(x**2 + y**2, 1.0)[1:-1, 1:-1].tolist()[0]
        [4.0, 4.0, 4.0]
    """
    f = jnp.asarray(field)
    lap = (
        _interior(f, 1, 0)
        + _interior(f, -1, 0)
        + _interior(f, 0, 1)
        + _interior(f, 0, -1)
        - 4.0 * _interior(f)
    ) / spacing**2
    return _pad(lap)


def arakawa_jacobian(
    a: Float[Array, "ny nx"], b: Float[Array, "ny nx"], spacing: float | Array
) -> Float[Array, "ny nx"]:
    r"""Arakawa's (1966) energy- and enstrophy-conserving Jacobian ``J(a, b) = a_x b_y - a_y b_x``.

    The mean of the three second-order Jacobians built from centred differences in the
    "++", "+×" and "×+" forms (:math:`J = (J^{++} + J^{+×} + J^{×+})/3`), on the interior of
    the grid (zero on the boundary); ``x`` runs along columns, ``y`` along rows. When ``a``
    and ``b`` are zero on the boundary (as ``ψ`` and ``q`` in the model),
    :math:`\sum a\,J(a,b) = \sum b\,J(a,b) = 0` up to round-off, so the discrete advection
    conserves energy and enstrophy.

    Examples:
        >>> import jax.numpy as jnp
        >>> y, x = jnp.meshgrid(jnp.arange(5.0), jnp.arange(5.0), indexing="ij")
        >>> arakawa_jacobian(x, y, 1.0)[1:-1, 1:-1].tolist()[0]  # x_x y_y - x_y y_x = 1
        [1.0, 1.0, 1.0]
    """

    def A(dx, dy):
        return _interior(a, dx, dy)

    def B(dx, dy):
        return _interior(b, dx, dy)

    j_pp = (A(1, 0) - A(-1, 0)) * (B(0, 1) - B(0, -1)) - (A(0, 1) - A(0, -1)) * (B(1, 0) - B(-1, 0))
    j_px = (
        A(1, 0) * (B(1, 1) - B(1, -1))
        - A(-1, 0) * (B(-1, 1) - B(-1, -1))
        - A(0, 1) * (B(1, 1) - B(-1, 1))
        + A(0, -1) * (B(1, -1) - B(-1, -1))
    )
    j_xp = (
        B(0, 1) * (A(1, 1) - A(-1, 1))
        - B(0, -1) * (A(1, -1) - A(-1, -1))
        - B(1, 0) * (A(1, 1) - A(1, -1))
        + B(-1, 0) * (A(-1, 1) - A(-1, -1))
    )
    return _pad((j_pp + j_px + j_xp) / (12.0 * spacing**2))


def _dst1(v: Array, axis: int) -> Array:
    r"""Unnormalised type-I discrete sine transform along ``axis`` via a real FFT:
    :math:`S(v)_k = \sum_{j=1}^{m} v_j \sin(π jk/(m+1))`, ``k = 1..m``. ``S∘S = (m+1)/2·I``.

    The odd extension ``u = (0, v, 0, -reverse(v))`` of length ``2(m+1)`` has the Fourier
    transform ``U_k = -2i S(v)_k``.
    """
    v = jnp.moveaxis(v, axis, -1)
    m = v.shape[-1]
    zero = jnp.zeros((*v.shape[:-1], 1), v.dtype)
    u = jnp.concatenate([zero, v, zero, -v[..., ::-1]], axis=-1)
    # one batch of contiguous rows for the FFT (much faster under vmap on CPU)
    s = -0.5 * jnp.fft.rfft(u.reshape(-1, 2 * (m + 1)), axis=-1)[:, 1 : m + 1].imag
    return jnp.moveaxis(s.astype(v.dtype).reshape(v.shape), -1, axis)


def _laplacian_eigenvalues(m: int, spacing, dtype) -> Array:
    """Eigenvalues ``-4 sin²(πk/(2(m+1)))/h²``, ``k = 1..m``, of the 1-D second difference
    with zero Dirichlet boundary values (eigenvectors ``sin(πjk/(m+1))``)."""
    k = jnp.arange(1, m + 1, dtype=dtype)
    return -4.0 * jnp.sin(jnp.pi * k / (2.0 * (m + 1))) ** 2 / spacing**2


def helmholtz_solve(
    rhs: Float[Array, "ny nx"], F: float | Array, spacing: float | Array
) -> Float[Array, "ny nx"]:
    r"""Solve ``(∇² - F) ψ = rhs`` on the grid interior with ``ψ = 0`` on the boundary.

    ``∇²`` is the 5-point Laplacian (:func:`laplacian`) and only the interior of ``rhs`` is
    used. The interior operator is diagonal in the basis of 2-D sine modes
    ``sin(π k j/(m_y+1)) sin(π l i/(m_x+1))`` with eigenvalues ``λ_k + λ_l - F``, so the
    solution is exact (up to round-off): a type-I discrete sine transform (built from
    ``jnp.fft``, ``O(n² log n)``, no matrix), a division, and the inverse transform.
    Requires ``F > -λ_min`` (true for every ``F >= 0``). Differentiable in ``rhs`` and ``F``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> q = jax.random.normal(jax.random.key(0), (9, 9))
        >>> psi = helmholtz_solve(q, 4.0, 0.125)
        >>> residual = laplacian(psi, 0.125) - 4.0 * psi - q
        >>> bool(jnp.abs(residual[1:-1, 1:-1]).max() < 1e-3), float(jnp.abs(psi[0]).max())
        (True, 0.0)
    """
    rhs = jnp.asarray(rhs)
    inner = _interior(rhs)
    my, mx = inner.shape[-2:]
    dtype = inner.dtype
    lam_y = _laplacian_eigenvalues(my, spacing, dtype)
    lam_x = _laplacian_eigenvalues(mx, spacing, dtype)
    hat = _dst1(_dst1(inner, -1), -2)
    hat = hat / (lam_y[:, None] + lam_x[None, :] - F)
    psi = _dst1(_dst1(hat, -1), -2) * (4.0 / ((my + 1) * (mx + 1)))
    return _pad(psi)


class QG(Model):
    r"""Sakov & Oke (2008) quasi-geostrophic double-gyre model (DAPPER's ``QG``), one state.

    ``__call__(x)`` advances the stream function ``x = ψ.ravel()`` (``n × n`` grid with its
    boundary, row ``iy``, column ``ix``) by ``dt`` time units with ``substeps`` RK4 steps of
    the potential-vorticity equation (see the module docstring). The boundary entries of
    ``x`` are ignored (``ψ = 0`` there by the boundary condition) and returned as 0. The
    physical parameters are pytree leaves: ``jax.grad``/``jax.vmap`` act on them.

    Attributes:
        n: grid points per side, boundary included (static; DAPPER 129).
        F: ``(L/R_d)²`` (DAPPER ``F = 1600``).
        rossby: factor ``r`` of the nonlinear advection (DAPPER ``R = 1e-5``).
        bottom_friction: ``r_b`` (DAPPER ``RKB = 0``).
        horizontal_friction: ``r_h`` (DAPPER ``RKH = 0``).
        biharmonic_friction: ``r_{h2}`` (DAPPER ``RKH2 = 2e-12``).
        wind: amplitude of the wind forcing ``curl τ`` (1 in DAPPER; 0 gives the free,
            unforced flow).
        dt: time per model step (DAPPER ``dtout = 5``).
        substeps: RK4 steps per model step (static; DAPPER ``dtout/dt = 5/1.25 = 4``).
        x0: the state at rest, ``ψ = 0`` (where DAPPER starts its climatology spin-up).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> m = QG(n=17)
        >>> x = m(m(m.x0))  # the wind starts the circulation from rest
        >>> x.shape, bool(jnp.abs(x).max() > 0), float(jnp.abs(m.to_field(x)[0]).max())
        ((289,), True, 0.0)
        >>> m.locations[18].tolist()  # (row iy, column ix) of state entry 18
        [1.0, 1.0]
    """

    F: float | Array
    rossby: float | Array
    bottom_friction: float | Array
    horizontal_friction: float | Array
    biharmonic_friction: float | Array
    wind: float | Array
    dt: float | Array
    x0: Array
    n: int = eqx.field(static=True)
    substeps: int = eqx.field(static=True)
    name: ClassVar[str] = "qg"

    def __init__(
        self,
        n: int = 129,
        *,
        F: float | Array = 1600.0,
        rossby: float | Array = 1.0e-5,
        bottom_friction: float | Array = 0.0,
        horizontal_friction: float | Array = 0.0,
        biharmonic_friction: float | Array = 2.0e-12,
        wind: float | Array = 1.0,
        dt: float | Array = 5.0,
        substeps: int = 4,
    ):
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 5:
            raise ValueError(f"n (grid points per side) must be an int >= 5, got {n!r}")
        if isinstance(substeps, bool) or not isinstance(substeps, int | np.integer) or substeps < 1:
            raise ValueError(f"substeps must be an int >= 1, got {substeps!r}")
        _check_dt(dt)
        for name, value in (
            ("F", F),
            ("rossby", rossby),
            ("bottom_friction", bottom_friction),
            ("horizontal_friction", horizontal_friction),
            ("biharmonic_friction", biharmonic_friction),
            ("wind", wind),
        ):
            if is_concrete(value):
                v = np.asarray(value)
                if v.ndim != 0 or not np.isfinite(v):
                    raise ValueError(f"{name} must be a finite scalar, got {value!r}")
        if is_concrete(F) and float(F) < 0:
            raise ValueError(f"F must be >= 0 (the Helmholtz operator must stay definite), got {F}")
        self.n = int(n)
        self.substeps = int(substeps)
        self.F = F
        self.rossby = rossby
        self.bottom_friction = bottom_friction
        self.horizontal_friction = horizontal_friction
        self.biharmonic_friction = biharmonic_friction
        self.wind = wind
        self.dt = dt
        self.x0 = jnp.zeros(self.n * self.n)

    @property
    def spacing(self) -> float:
        """Grid spacing ``h = 1/(n-1)`` of the unit square."""
        return 1.0 / (self.n - 1)

    def to_field(self, x: Float[Array, "... n2"]) -> Float[Array, "... n n"]:
        """State vector(s) ``(..., n²)`` to 2-D field(s) ``(..., n, n)`` (rows ``y``, columns ``x``)."""
        x = jnp.asarray(x)
        if x.shape[-1] != self.n * self.n:
            raise ValueError(f"a QG state has n² = {self.n**2} entries, got shape {x.shape}")
        return x.reshape(*x.shape[:-1], self.n, self.n)

    def to_state(self, field: Float[Array, "... n n"]) -> Float[Array, "... n2"]:
        """2-D field(s) ``(..., n, n)`` to state vector(s) ``(..., n²)`` (row-major)."""
        field = jnp.asarray(field)
        if field.shape[-2:] != (self.n, self.n):
            raise ValueError(f"a QG field has shape (..., {self.n}, {self.n}), got {field.shape}")
        return field.reshape(*field.shape[:-2], self.n * self.n)

    @property
    def locations(self) -> np.ndarray:
        """``(n², 2)`` grid coordinates ``(iy, ix)`` of the state entries, in grid units (for
        2-D distance localization; the domain is not periodic)."""
        iy, ix = np.unravel_index(np.arange(self.n * self.n), (self.n, self.n))
        return np.stack([iy, ix], axis=1).astype(float)

    def wind_curl(self, dtype=None) -> Float[Array, "n n"]:
        """The forcing ``curl τ = -2π sin(2π y)`` on the grid (constant along ``x``)."""
        y = jnp.arange(self.n, dtype=dtype) / (self.n - 1)
        curl = -2.0 * jnp.pi * jnp.sin(2.0 * jnp.pi * y)
        return jnp.broadcast_to(curl[:, None], (self.n, self.n))

    def potential_vorticity(self, psi: Float[Array, "n n"]) -> Float[Array, "n n"]:
        """``q = ∇²ψ - Fψ`` on the interior, zero on the boundary."""
        psi = _pad(_interior(psi))
        return laplacian(psi, self.spacing) - self.F * psi

    def stream_function(self, q: Float[Array, "n n"]) -> Float[Array, "n n"]:
        """``ψ`` from ``q``: the Helmholtz solve ``(∇² - F)ψ = q``, ``ψ = 0`` on the boundary."""
        return helmholtz_solve(q, self.F, self.spacing)

    def tendency(self, q: Float[Array, "n n"]) -> Float[Array, "n n"]:
        r"""``∂_t q`` (zero on the boundary) for the potential vorticity field ``q``."""
        h = self.spacing
        psi = self.stream_function(q)
        zeta = laplacian(psi, h)
        zeta2 = laplacian(zeta, h)
        zeta4 = laplacian(zeta2, h)
        dpsi_dx = _pad((_interior(psi, 1, 0) - _interior(psi, -1, 0)) / (2.0 * h))
        dq = (
            -self.rossby * arakawa_jacobian(psi, q, h)
            - dpsi_dx
            - self.bottom_friction * zeta
            + self.horizontal_friction * zeta2
            - self.biharmonic_friction * zeta4
            + self.wind * self.wind_curl(q.dtype)
        )
        return _pad(_interior(dq))

    def __call__(self, x):
        q = self.potential_vorticity(self.to_field(x))
        dt = self.dt / self.substeps
        q = jax.lax.fori_loop(0, self.substeps, lambda _, q: rk4_step(self.tendency, q, dt), q)
        return self.to_state(self.stream_function(q))


def qg(
    n: int = 129,
    *,
    F: float | Array = 1600.0,
    rossby: float | Array = 1.0e-5,
    biharmonic_friction: float | Array = 2.0e-12,
    dt: float | Array = 5.0,
    substeps: int = 4,
) -> QG:
    """:class:`QG` with Sakov & Oke's (2008) parameters (DAPPER ``QG.default_prms``).

    ``n = 129`` grid points per side (DAPPER's resolution level 7: ``2·2⁶ + 1``), one model
    step ``dt = 5`` made of ``substeps = 4`` RK4 steps of 1.25. Smaller ``n`` (e.g. 33) keeps
    the physics and coarsens the grid (for tests and quick experiments).

    Examples:
        >>> m = qg(n=33)
        >>> m.dim, m.dt, m.substeps
        (1089, 5.0, 4)
    """
    return QG(
        n,
        F=F,
        rossby=rossby,
        biharmonic_friction=biharmonic_friction,
        dt=dt,
        substeps=substeps,
    )
