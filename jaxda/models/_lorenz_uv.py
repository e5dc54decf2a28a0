r"""Two-scale Lorenz (1996) model ("LorenzUV"), written for one state, as a pytree of parameters.

``K`` slow variables ``U_k`` on a ring, each coupled to ``J`` fast variables ``V_{k,j}``
(all ``KJ`` fast variables form one ring, ``V_i`` with ``i = kJ + j`` belonging to
``U_{⌊i/J⌋}``):

.. math::
    \dot U_k &= (U_{k+1} - U_{k-2})\,U_{k-1} - U_k + F - \frac{hc}{b}\sum_{j=0}^{J-1} V_{k,j},\\
    \dot V_i &= c\,b\,V_{i+1}(V_{i-1} - V_{i+2}) - c\,V_i + \frac{hc}{b}\,U_{⌊i/J⌋},

with forcing ``F``, coupling ``h``, amplitude (spatial-scale) ratio ``b`` and time-scale
ratio ``c``. The state is the concatenation ``[U, V]`` of length ``K(J+1)``. With ``h = 0``
the slow variables follow the one-scale Lorenz-96 model (:func:`jaxda.models.lorenz96_rhs`).

References:
    Lorenz (1996), "Predictability: a problem partly solved", ECMWF Seminar on Predictability;
    Wilks (2005), *Q. J. R. Meteorol. Soc.* 131, 389–407;
    DAPPER ``mods.LorenzUV`` (Raanes et al.).
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import is_concrete
from ._integrate import Model, _check_dt, rk4_step
from ._lorenz import lorenz96_rhs


def lorenz_uv_rhs(
    x: Float[Array, " n"],
    n_slow: int,
    forcing: float | Array = 10.0,
    coupling: float | Array = 1.0,
    spatial_scale: float | Array = 10.0,
    time_scale: float | Array = 10.0,
) -> Float[Array, " n"]:
    r"""Two-scale Lorenz-96 vector field for the state ``x = [U, V]`` (module docstring).

    ``n_slow`` (static) is the number ``K`` of slow variables; the number of fast variables
    per slow one is ``J = (len(x) - K) / K``. ``coupling``, ``spatial_scale`` and
    ``time_scale`` are ``h``, ``b`` and ``c`` of Lorenz (1996).

    Examples:
        >>> import jax.numpy as jnp
        >>> lorenz_uv_rhs(jnp.zeros(6), n_slow=2, forcing=8.0).tolist()
        [8.0, 8.0, 0.0, 0.0, 0.0, 0.0]
    """
    n = x.shape[-1]
    J = (n - n_slow) // n_slow
    U, V = x[:n_slow], x[n_slow:]
    h, b, c = coupling, spatial_scale, time_scale
    hcb = h * c / b
    dU = lorenz96_rhs(U, forcing) - hcb * V.reshape(n_slow, J).sum(axis=1)
    dV = (
        c * b * jnp.roll(V, -1) * (jnp.roll(V, 1) - jnp.roll(V, -2))
        - c * V
        + hcb * jnp.broadcast_to(U[:, None], (n_slow, J)).reshape(-1)
    )
    return jnp.concatenate([dU, dV])


class LorenzUV(Model):
    r"""Two-scale Lorenz (1996) model with ``n_slow`` slow and ``n_slow·n_fast`` fast variables,
    one RK4 step of length ``dt`` per call; state ``[U, V]``.

    ``forcing`` (``F``), ``coupling`` (``h``), ``spatial_scale`` (``b``) and ``time_scale``
    (``c``) are pytree leaves: ``jax.grad`` and ``jax.vmap`` act on them (e.g. to learn the
    coupling). The fast variables make the system stiff: RK4 needs ``dt ≲ 0.005`` for
    ``c = 10``. The reference state ``x0`` is ``e_0`` (DAPPER's), from which the flow spins up.

    Examples:
        >>> import jax
        >>> m = LorenzUV()  # Lorenz (1996): 36 slow, 10 fast per slow, F = 10
        >>> m.dim, m(m.x0).shape
        (396, (396,))
        >>> g = jax.grad(lambda h: LorenzUV(n_slow=4, n_fast=2, coupling=h)(jnp.ones(12)).sum())
        >>> bool(jnp.isfinite(g(1.0)))
        True
    """

    n_slow: int = eqx.field(static=True)
    n_fast: int = eqx.field(static=True)
    forcing: float | Array
    coupling: float | Array
    spatial_scale: float | Array
    time_scale: float | Array
    dt: float | Array
    x0: Array
    name: ClassVar[str] = "lorenz_uv"

    def __init__(
        self,
        n_slow: int = 36,
        n_fast: int = 10,
        forcing: float | Array = 10.0,
        coupling: float | Array = 1.0,
        spatial_scale: float | Array = 10.0,
        time_scale: float | Array = 10.0,
        dt: float | Array = 0.005,
    ):
        if not isinstance(n_slow, int) or n_slow < 4:
            raise ValueError(f"n_slow must be an int >= 4 (a Lorenz-96 ring), got {n_slow!r}")
        if not isinstance(n_fast, int) or n_fast < 1:
            raise ValueError(
                f"n_fast (fast variables per slow one) must be an int >= 1, got {n_fast!r}"
            )
        if n_slow * n_fast < 4:
            raise ValueError(f"the fast ring needs n_slow·n_fast >= 4, got {n_slow * n_fast}")
        _check_dt(dt)
        for name, val in (
            ("forcing", forcing),
            ("coupling", coupling),
            ("spatial_scale", spatial_scale),
            ("time_scale", time_scale),
        ):
            if is_concrete(val) and jnp.ndim(val) != 0:
                raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(val)}")
        if is_concrete(spatial_scale) and float(spatial_scale) == 0:
            raise ValueError("spatial_scale (b) must be nonzero")
        self.n_slow, self.n_fast = n_slow, n_fast
        self.forcing, self.coupling = forcing, coupling
        self.spatial_scale, self.time_scale = spatial_scale, time_scale
        self.dt = dt
        self.x0 = jnp.zeros(n_slow * (n_fast + 1)).at[0].set(1.0)

    def rhs(self, x: Float[Array, " n"]) -> Float[Array, " n"]:
        """The vector field :func:`lorenz_uv_rhs` with this model's parameters."""
        return lorenz_uv_rhs(
            x, self.n_slow, self.forcing, self.coupling, self.spatial_scale, self.time_scale
        )

    @property
    def slow(self) -> slice:
        """Index of the slow variables ``U`` in the state (``x[model.slow]``)."""
        return slice(0, self.n_slow)

    @property
    def fast(self) -> slice:
        """Index of the fast variables ``V`` in the state."""
        return slice(self.n_slow, None)

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " n"]:
        return rk4_step(self.rhs, x, self.dt)


def lorenz_uv(
    n_slow: int = 36,
    n_fast: int = 10,
    forcing: float | Array = 10.0,
    coupling: float | Array = 1.0,
    spatial_scale: float | Array = 10.0,
    time_scale: float | Array = 10.0,
    dt: float | Array = 0.005,
) -> LorenzUV:
    """:class:`LorenzUV`; defaults are Lorenz (1996) (DAPPER's ``LorenzUV/lorenz96``): 36 slow
    variables, 10 fast ones each, ``F = 10``, ``h = 1``, ``b = c = 10``, ``dt = 0.005``.
    :func:`jaxda.experiments.wilks2005` uses 8 slow, 32 fast each and ``F = 20``.

    Examples:
        >>> lorenz_uv(n_slow=8, n_fast=32, forcing=20.0).dim
        264
    """
    return LorenzUV(
        n_slow=n_slow,
        n_fast=n_fast,
        forcing=forcing,
        coupling=coupling,
        spatial_scale=spatial_scale,
        time_scale=time_scale,
        dt=dt,
    )
