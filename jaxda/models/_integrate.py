r"""Models as pytrees, and time stepping shared by all models.

A model is an :class:`equinox.Module` written for **one** state ``x`` of shape ``(n,)``: its
parameters (forcing, time step, noise level...) are fields, hence pytree leaves, so a user
can ``jax.vmap`` or ``jax.grad`` over them. The protocol is one method,
``model.step(key, x) -> x_next``; deterministic models implement ``__call__(x)`` and ignore
the key. Ensembles are propagated by vmapping over members (:func:`forecast`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..core import GaussianNoise, is_concrete, not_traceable_as_type_error, singular_noise

Rhs = Callable[[Array], Array]


class Model(eqx.Module):
    """A discrete-time model for one state ``(n,)``; subclasses are pytrees of parameters.

    Deterministic models implement ``__call__(x)``; stochastic ones set ``stochastic = True``
    and override :meth:`step`. Every model has ``dt`` (time per step) and ``x0`` (a reference
    state, e.g. on the attractor), and ``dim`` (the state size ``n``).

    Examples:
        >>> import jax.numpy as jnp
        >>> class Decay(Model):
        ...     rate: float
        ...     dt: float = 0.1
        ...     x0: jax.Array = eqx.field(default_factory=lambda: jnp.ones(2))
        ...     def __call__(self, x):
        ...         return x * jnp.exp(-self.rate * self.dt)
        >>> print(Decay(rate=1.0).step(jax.random.key(0), jnp.ones(2)).round(4))
        [0.9048 0.9048]
    """

    stochastic: ClassVar[bool] = False
    name: ClassVar[str] = "model"
    if TYPE_CHECKING:  # subclasses declare the fields (or properties) ``dt`` and ``x0``
        dt: float | Array
        x0: Array

    def __call__(self, x: Float[Array, " n"]) -> Float[Array, " n"]:
        raise NotImplementedError(f"{type(self).__name__} is stochastic: use step(key, x)")

    def step(self, key: Array, x: Float[Array, " n"]) -> Float[Array, " n"]:
        """One model step; the key is used only by stochastic models."""
        del key
        return self(x)

    @property
    def dim(self) -> int:
        return int(jnp.shape(self.x0)[-1])  # pyright: ignore[reportAttributeAccessIssue]


class FunctionModel(Model):
    """A deterministic model from a callable ``fn(x) -> x_next`` (see :func:`from_callable`)."""

    fn: Callable[[Array], Array] = eqx.field(static=True)
    dt: float
    x0: Array
    name: ClassVar[str] = "function"

    def __call__(self, x):
        return self.fn(x)


def from_callable(fn: Callable[[Array], Array], x0, dt: float = 1.0) -> FunctionModel:
    """Wrap a JAX-traceable one-state step ``fn(x) -> x_next`` as a :class:`Model`.

    The output shape is checked eagerly against ``x0``.

    Examples:
        >>> import jax.numpy as jnp
        >>> m = from_callable(lambda x: 0.5 * x, jnp.ones(3))
        >>> m(m.x0).tolist()
        [0.5, 0.5, 0.5]
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    x0 = jnp.asarray(x0)
    if x0.ndim != 1:
        raise ValueError(f"x0 must be a 1-D state (n,), got shape {x0.shape}")
    with not_traceable_as_type_error("the model step fn", fn):
        out = jax.eval_shape(fn, x0)
    if getattr(out, "shape", None) != x0.shape:
        raise ValueError(
            f"fn maps a state of shape {x0.shape} to {getattr(out, 'shape', type(out))}; a model "
            "step must return a state of the same shape"
        )
    _check_dt(dt)
    return FunctionModel(fn=fn, dt=dt, x0=x0)


class LinearModel(Model):
    """A linear model ``x_{k+1} = M x_k`` (``M`` a leaf: differentiable, vmappable).

    Examples:
        >>> import jax.numpy as jnp
        >>> m = LinearModel(jnp.array([[0.0, 1.0], [-1.0, 0.0]]), jnp.array([1.0, 0.0]))
        >>> m(m.x0).tolist()
        [0.0, -1.0]
    """

    M: Array
    x0: Array
    dt: float | Array = 1.0
    name: ClassVar[str] = "linear"

    def __check_init__(self):
        if is_concrete(self.M) and (
            jnp.ndim(self.M) != 2 or jnp.shape(self.M) != (jnp.shape(self.x0)[-1],) * 2
        ):
            raise ValueError(
                f"M must be square (n, n) with n = len(x0) = {jnp.shape(self.x0)[-1]}, got "
                f"shape {jnp.shape(self.M)}"
            )
        _check_dt(self.dt)

    def __call__(self, x):
        return self.M @ x


class AdditiveNoise(Model):
    r"""A stochastic model ``x_{k+1} = M(x_k) + η_k``, ``η_k ~ N(0, Q)`` per model step.

    ``noise`` is a :class:`jaxda.core.DiagonalNoise`, :class:`jaxda.core.FullNoise` or
    :class:`jaxda.core.FactorNoise` holding the per-step ``Q`` (a pytree: its leaves are
    differentiable). Build it with :func:`with_noise`.
    """

    model: Model
    noise: GaussianNoise
    stochastic: ClassVar[bool] = True
    name: ClassVar[str] = "noisy"

    def __init__(self, model: Model, noise: GaussianNoise):
        if model.stochastic:
            raise ValueError("AdditiveNoise wraps a deterministic model")
        if noise.dim != model.dim:
            raise ValueError(f"model noise has dimension {noise.dim}, the model {model.dim}")
        self.model = model
        self.noise = noise

    @property
    def dt(self) -> float | Array:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.model.dt

    @property
    def x0(self) -> Array:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.model.x0

    @property
    def std(self) -> Array:
        """Per-step model-noise standard deviations ``√diag(Q)`` (a scalar for an isotropic
        ``Q``)."""
        return self.noise.std

    def deterministic(self, x):
        return self.model(x)

    def step(self, key, x):
        return self.model(x) + self.noise.sample(key).astype(x.dtype)


def with_noise(
    model: Model,
    std=None,
    *,
    cov=None,
    sqrt=None,
    per: str = "step",
) -> Model:
    r"""``model`` plus additive Gaussian model error ``η ~ N(0, Q)`` at every model step.

    ``Q`` is given by exactly one of ``std`` (a scalar or an ``(n,)`` vector:
    ``Q = diag(std²)``), ``cov`` (a full ``(n, n)`` positive semi-definite matrix) or ``sqrt``
    (a factor ``F`` of shape ``(n, r)``, ``Q = F Fᵀ``: the form for large ``n``, nothing
    ``n×n`` is formed). ``per="step"`` (default): ``Q`` is the covariance added at each model
    step. ``per="time"``: ``Q`` is a covariance per model time unit, as DAPPER states it
    (``Dyn.noise``), so each step of length ``dt`` adds ``Q·dt`` (a Wiener increment:
    ``std·√dt``). A zero ``std`` returns the model unchanged (a perfect model).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> m = LinearModel(jnp.eye(2), jnp.zeros(2), dt=0.01)
        >>> noisy = with_noise(m, cov=jnp.array([[1.0, 0.5], [0.5, 1.0]]), per="time")
        >>> noisy.noise.cov().round(4).tolist()
        [[0.01, 0.005], [0.005, 0.01]]
        >>> with_noise(m, 0.0) is m
        True
    """
    if per not in ("step", "time"):
        raise ValueError(f'per must be "step" or "time", got {per!r}')
    if model.stochastic:
        raise ValueError("with_noise wraps a deterministic model")
    if std is not None and is_concrete(std) and np.all(np.asarray(std) == 0):
        return model
    scale = 1.0
    if per == "time":
        _check_dt(model.dt)
        scale = model.dt
    if std is not None:
        s = jnp.asarray(std)
        if not is_concrete(s):
            bad = jnp.any(s < 0) | ~jnp.all(jnp.isfinite(s))
            s = eqx.error_if(s, bad, "model-noise std must be non-negative and finite")
        std = s * jnp.sqrt(scale)
    elif cov is not None:
        cov = jnp.asarray(cov) * scale
    else:
        sqrt = jnp.asarray(sqrt) * jnp.sqrt(scale)
    noise = singular_noise(std=std, cov=cov, sqrt=sqrt, dim=model.dim, name="model-noise")
    return AdditiveNoise(model, noise)


def _check_dt(dt) -> None:
    if is_concrete(dt) and not (np.isfinite(dt) and float(dt) > 0):
        raise ValueError(f"dt must be positive and finite, got {dt}")


def rk4_step(rhs: Rhs, x: Float[Array, " n"], dt: float | Array) -> Float[Array, " n"]:
    r"""One classical Runge–Kutta (RK4) step of ``dx/dt = rhs(x)``.

    .. math:: x_{k+1} = x_k + \tfrac{dt}{6}(k_1 + 2k_2 + 2k_3 + k_4)

    Examples:
        >>> import jax.numpy as jnp
        >>> print(rk4_step(lambda x: -x, jnp.ones(2), 0.1).round(4))
        [0.9048 0.9048]
    """
    k1 = rhs(x)
    k2 = rhs(x + 0.5 * dt * k1)
    k3 = rhs(x + 0.5 * dt * k2)
    k4 = rhs(x + dt * k3)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def trajectory(
    key: Array, model: Model, x0: Float[Array, " n"], n_steps: int
) -> Float[Array, "K n"]:
    """States ``x_1 .. x_K`` from ``x0`` (``lax.scan``); the key drives a stochastic model.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> m = from_callable(lambda x: 2 * x, jnp.ones(1))
        >>> trajectory(jax.random.key(0), m, m.x0, 3)[:, 0].tolist()
        [2.0, 4.0, 8.0]
    """
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jaxda.models.Model, got {type(model).__name__}")
    if int(n_steps) < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")

    def body(x, k):
        x = model.step(k, x)
        return x, x

    keys = jax.random.split(key, n_steps) if model.stochastic else None
    _, xs = jax.lax.scan(body, x0, keys, length=n_steps)
    return xs


def forecast(
    key: Array,
    model: Model,
    ensemble: Float[Array, "N n"],
    n_steps: int | Int[Array, ""] = 1,
    *,
    max_steps: int | None = None,
) -> Float[Array, "N n"]:
    r"""Propagate every member ``n_steps`` model steps: ``x^{(i)} ← M(x^{(i)}) (+ η^{(i)})``.

    The model is vmapped over members. ``n_steps`` may be a traced integer (irregular
    observation times): then the loop runs ``max_steps`` (static) iterations and freezes the
    state after ``n_steps``, so the forecast stays reverse-differentiable. ``n_steps = 0``
    returns the ensemble unchanged.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> m = from_callable(lambda x: x + 1.0, jnp.zeros(2))
        >>> forecast(jax.random.key(0), m, jnp.zeros((3, 2)), 2)[0].tolist()
        [2.0, 2.0]
    """
    N = ensemble.shape[0]

    def one(E, k):
        if model.stochastic:
            return jax.vmap(model.step)(jax.random.split(k, N), E)
        return jax.vmap(model)(E)

    if is_concrete(n_steps) and max_steps is None:
        n = int(n_steps)
        if n < 0:
            raise ValueError(f"n_steps must be >= 0, got {n}")
        if n == 0:
            return ensemble
        keys = jax.random.split(key, n) if model.stochastic else None
        E, _ = jax.lax.scan(lambda E, k: (one(E, k), None), ensemble, keys, length=n)
        return E
    if max_steps is None:
        raise ValueError("a traced n_steps needs a static max_steps")
    keys = jax.random.split(key, max_steps) if model.stochastic else None

    def body(E, inp):
        i, k = inp
        return jnp.where(i < n_steps, one(E, k), E), None

    E, _ = jax.lax.scan(body, ensemble, (jnp.arange(max_steps), keys))
    return E
