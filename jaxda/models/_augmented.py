r"""Augmented-state parameter estimation: the unknown model parameters join the state.

A filter that only knows states can estimate parameters if they are carried as extra,
(nearly) persistent state variables (Anderson 2001; Evensen 2009, "The ensemble Kalman
filter for combined state and parameter estimation", *IEEE Control Syst. Mag.* 29(3)).
The augmented state is

.. math:: z = \begin{bmatrix} x \\ u \end{bmatrix}, \qquad
    z_{k+1} = \begin{bmatrix} M_{θ(u_k)}(x_k) \\ u_k + σ_u ξ_k \end{bmatrix},
    \quad ξ_k \sim N(0, I),

where ``x`` is the model state (``n`` values), ``u`` the ``p`` unknown parameters in an
unconstrained space, ``θ = T(u)`` the physical parameters (``T`` a
:class:`jaxda.core.Transform`, e.g. :func:`jaxda.core.positive` for a noise standard deviation),
and ``σ_u`` an optional random walk (``param_std``, default 0: persistent parameters). The model
``M_θ`` is the given model with the selected leaves (``where``, as in ``equinox.tree_at``)
replaced by ``θ``. The filter learns ``u`` through the ensemble cross-covariance between ``u``
and the observed state; observation operators act on ``z`` (observe the state part with
``jaxda.observations.subset(indices, n + p)``).

Only parameters that change the *ensemble mean* of the forecast are learnable this way (a
forcing, a coupling). A model-noise standard deviation changes the forecast spread, not its
mean, so its cross-covariance with the state is zero in expectation and an augmented-state
filter cannot learn it; estimate it by maximizing the filter likelihood instead
(``jaxda.assimilate``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..core import Transform, identity_transform, is_concrete
from ._integrate import Model


class Augmented(Model):
    r"""A model on the augmented state ``z = [x (n); u (p)]`` (module docstring); build it with
    :func:`augmented`.

    ``step(key, z) = [M_{T(u)}.step(key, x); u + param_std·ξ]``. ``dim = n + p`` and
    ``x0 = [model.x0; T⁻¹(θ_0)]``. The model (and ``param_std``, ``u0``) are pytree leaves;
    ``where``, the transform and the parameter layout are static.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from jaxda.models import Lorenz96
        >>> aug = augmented(Lorenz96(n=8), lambda m: m.forcing, 6.0)
        >>> aug.dim, aug.n_state, aug.n_params
        (9, 8, 1)
        >>> z1 = aug.step(jax.random.key(0), aug.x0)
        >>> bool(jnp.allclose(z1[:8], Lorenz96(n=8, forcing=6.0)(aug.x0[:8]))), float(z1[8])
        (True, 6.0)
    """

    model: Model
    u0: Float[Array, " p"]
    param_std: Float[Array, " p"]
    where: Callable[[Any], Any] = eqx.field(static=True)
    transform: Transform = eqx.field(static=True)
    treedef: Any = eqx.field(static=True)
    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    n_state: int = eqx.field(static=True)
    random_walk: bool = eqx.field(static=True)
    name: ClassVar[str] = "augmented"

    @property
    def stochastic(self) -> bool:  # pyright: ignore[reportIncompatibleVariableOverride]
        return bool(self.model.stochastic or self.random_walk)

    @property
    def n_params(self) -> int:
        return int(sum(int(np.prod(s)) for s in self.shapes))

    @property
    def dt(self) -> float | Array:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.model.dt

    @property
    def x0(self) -> Array:  # pyright: ignore[reportIncompatibleVariableOverride]
        x0 = jnp.asarray(self.model.x0)
        return jnp.concatenate([x0, self.u0.astype(x0.dtype)])

    def parameters(self, z: Float[Array, " d"]) -> Float[Array, " p"]:
        """The physical parameters ``θ = T(u)`` (flat, ``(p,)``) of one augmented state."""
        return self.transform.forward(z[self.n_state :])

    def state(self, z: Float[Array, " d"]) -> Float[Array, " n"]:
        """The model-state part ``x`` of one augmented state."""
        return z[: self.n_state]

    def augment(self, x: Float[Array, " n"], theta: Float[Array, " p"]) -> Float[Array, " d"]:
        """``[x; T⁻¹(θ)]`` for one state (vmap it to build an initial ensemble)."""
        x = jnp.asarray(x)
        u = self.transform.inverse(jnp.asarray(theta, x.dtype).reshape(-1))
        return jnp.concatenate([x, u.astype(x.dtype)])

    def model_at(self, u: Array) -> Model:
        """The model with the selected leaves set to ``T(u)`` (``u`` unconstrained, ``(p,)``)."""
        theta = self.transform.forward(u)
        leaves, start = [], 0
        for shape in self.shapes:
            size = int(np.prod(shape))
            leaves.append(theta[start : start + size].reshape(shape))
            start += size
        return eqx.tree_at(self.where, self.model, jax.tree.unflatten(self.treedef, leaves))

    def __call__(self, z):
        if self.stochastic:
            return super().__call__(z)
        return self.step(jax.random.key(0), z)

    def step(self, key, z):
        n = self.n_state
        x, u = z[:n], z[n:]
        m = self.model_at(u)
        if self.random_walk:
            key, k_walk = jax.random.split(key)
            u = u + self.param_std.astype(u.dtype) * jax.random.normal(k_walk, u.shape, u.dtype)
        x_next = m.step(key, x) if m.stochastic else m(x)
        return jnp.concatenate([x_next.astype(z.dtype), u])


def _flat_leaves(nodes: Any, what: str) -> tuple[list[Array], Any]:
    leaves, treedef = jax.tree.flatten(nodes)
    if not leaves:
        raise ValueError(f"{what} selects no parameter leaves")
    out = []
    for leaf in leaves:
        if not isinstance(leaf, int | float | np.ndarray | np.generic | jax.Array) or isinstance(
            leaf, bool
        ):
            raise ValueError(
                f"{what} must select numeric leaves (floats or float arrays), got "
                f"{type(leaf).__name__}"
            )
        arr = jnp.asarray(leaf)
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            arr = arr.astype(float)
        out.append(arr)
    return out, treedef


def augmented(
    model: Model,
    where: Callable[[Any], Any],
    theta0: Any = None,
    *,
    transform: Transform | None = None,
    param_std: ArrayLike = 0.0,
) -> Augmented:
    r"""Augment ``model`` with the parameters that ``where`` selects (module docstring).

    Args:
        model: the model whose parameters are estimated (any :class:`Model`, e.g.
            ``Lorenz96(...)`` or ``with_noise(Lorenz96(...), q)``).
        where: ``where(model)`` returns the estimated leaf or a tuple of leaves, as in
            ``equinox.tree_at`` (``lambda m: m.forcing``; for an additive-noise model
            ``lambda m: (m.model.forcing, m.noise.std)``). Their flattened values, in that order,
            are the ``p`` parameters.
        theta0: the parameters' initial (constrained) values, ``(p,)`` or the structure
            ``where`` returns; default the model's current values. The initial ensemble is
            usually built with :meth:`Augmented.augment` instead.
        transform: a :class:`jaxda.core.Transform` ``θ = T(u)`` for constrained parameters
            (default the identity): the filter then works on the unconstrained ``u``.
        param_std: standard deviation of the parameters' random walk per model step, in the
            unconstrained space (scalar or ``(p,)``, ``>= 0``); ``0`` keeps them persistent
            (inflate the ensemble to keep their spread from collapsing).

    Returns:
        An :class:`Augmented` model of dimension ``n + p``.

    Raises:
        ValueError: ``where`` selects no numeric leaf, ``theta0`` or ``param_std`` have the
            wrong size, a value is not finite, or ``theta0`` lies outside the transform's
            range.

    Examples:
        >>> import jax.numpy as jnp
        >>> from jaxda.core import bounded
        >>> from jaxda.models import Lorenz96, with_noise
        >>> noisy = with_noise(Lorenz96(n=8), 0.1)
        >>> aug = augmented(noisy, lambda m: (m.model.forcing, m.noise.std), jnp.array([7.0, 0.2]),
        ...                 transform=bounded(lower=jnp.array([-jnp.inf, 0.0])))
        >>> aug.n_params, aug.stochastic, [round(v, 6) for v in aug.parameters(aug.x0).tolist()]
        (2, True, [7.0, 0.2])
        >>> float(aug.model_at(aug.x0[8:]).std)
        0.2
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jaxda.models.Model, got {type(model).__name__}")
    if isinstance(model, Augmented):
        raise ValueError("model is already augmented: select all parameters in one `where`")
    if not callable(where):
        raise TypeError(f"where must be callable (model -> leaf or tuple of leaves), got {where!r}")
    if transform is None:
        transform = identity_transform()
    if not isinstance(transform, Transform):
        raise TypeError(f"transform must be a jaxda.core.Transform, got {type(transform).__name__}")
    try:
        nodes = where(model)
    except (AttributeError, TypeError, IndexError, KeyError) as err:
        raise ValueError(f"where(model) failed on {type(model).__name__}: {err}") from err
    leaves, treedef = _flat_leaves(nodes, "where(model)")
    shapes = tuple(tuple(int(d) for d in leaf.shape) for leaf in leaves)
    p = int(sum(int(np.prod(s)) for s in shapes))
    dtype = jnp.result_type(jnp.asarray(model.x0).dtype, float)
    if theta0 is None:
        theta = jnp.concatenate([leaf.reshape(-1) for leaf in leaves]).astype(dtype)
    else:
        flat, _ = jax.tree.flatten(theta0)
        theta = jnp.concatenate([jnp.asarray(v, dtype).reshape(-1) for v in flat])
        if theta.shape != (p,):
            raise ValueError(
                f"theta0 must hold p={p} values (the leaves where(model) selects), got "
                f"{theta.shape[0]}"
            )
    u0 = jnp.asarray(transform.inverse(theta), dtype)
    if is_concrete(u0) and not np.all(np.isfinite(np.asarray(u0))):
        raise ValueError(
            f"theta0 = {np.asarray(theta)} lies outside the transform's range (its "
            "unconstrained value is not finite)"
        )
    std = jnp.asarray(param_std, dtype)
    if std.ndim > 1 or (std.ndim == 1 and std.shape[0] != p):
        raise ValueError(f"param_std must be a scalar or a (p,) = ({p},) vector, got {std.shape}")
    if is_concrete(std):
        s = np.asarray(std)
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError(f"param_std must be non-negative and finite, got {s}")
        random_walk = bool(np.any(s > 0))
    else:
        random_walk = True
    return Augmented(  # pyright: ignore[reportCallIssue]  (dt, x0 are properties)
        model=model,
        u0=u0,
        param_std=jnp.broadcast_to(std, (p,)),
        where=where,
        transform=transform,
        treedef=treedef,
        shapes=shapes,
        n_state=model.dim,
        random_walk=random_walk,
    )
