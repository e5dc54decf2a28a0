"""The method registry: names to factories, so the CLI and benchmarks can offer every method.

A factory takes keyword options and returns a :class:`jaxda.core.Method`. Options named
``model`` (the forecast model) are filled in by the caller's context when the factory asks for
them (3D-Var builds its climatological ``B`` from it). A new method is one factory plus one
:func:`register` line.

Examples:
    >>> "etkf" in available_methods()
    True
    >>> method_options("letkf")["localization_radius"] is REQUIRED
    True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from ..core import Method
from ..diffusion import ensf
from ..ensemble import (
    climatology,
    denkf,
    enkf,
    enkf_n,
    enks,
    ensrf,
    etkf,
    fourdenvar,
    ienks,
    letkf,
    optimal_interpolation,
    particle_filter,
)
from ..variational import var3d, var4d
from ._learned_prior import diffusion_filter_from_checkpoint

CONTEXT = ("model",)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_REGISTRY: dict[str, Callable[..., Method]] = {}


def register(name: str, factory: Callable[..., Method], *, replace: bool = False) -> None:
    """Register ``factory`` (keyword options -> :class:`jaxda.core.Method`) under ``name``."""
    if not isinstance(name, str) or not name or name != name.lower() or " " in name:
        raise ValueError(f"method names are non-empty lower-case words, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"method {name!r} is already registered (pass replace=True)")
    _REGISTRY[name] = factory


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_REGISTRY)


def get_factory(name: str) -> Callable[..., Method]:
    """The factory registered under ``name``; ``ValueError`` listing the names otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {available_methods()}") from None


def method_options(name: str) -> dict[str, Any]:
    """The options of a registered method and their defaults (``REQUIRED`` when none); the
    context arguments (``model``) are not listed."""
    sig = inspect.signature(get_factory(name))
    out = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in CONTEXT:
            continue
        out[p.name] = REQUIRED if p.default is p.empty else p.default
    return out


def make_method(name: str, *, context: dict[str, Any] | None = None, **options) -> Method:
    """Build the registered method ``name`` with ``options``; an option the factory does not
    take raises ``ValueError`` naming the valid ones (nothing is silently ignored)."""
    factory = get_factory(name)
    valid = method_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"option(s) {unknown} do not apply to method {name!r}; its options are {sorted(valid)}"
        )
    missing = [k for k, v in valid.items() if v is REQUIRED and k not in options]
    if missing:
        raise ValueError(f"method {name!r} needs option(s) {missing}")
    params = inspect.signature(factory).parameters
    for k, v in (context or {}).items():
        if k in params:
            options[k] = v
    return factory(**options)


register("enkf", enkf)
register("etkf", etkf)
register("letkf", letkf)
register("pf", particle_filter)
register("ensf", ensf)
register("3dvar", var3d)
register("enks", enks)
register("ienks", ienks)
register("4dvar", var4d)
register("4denvar", fourdenvar)
register("enkf_n", enkf_n)
register("denkf", denkf)
register("ensrf", ensrf)
register("climatology", climatology)
register("oi", optimal_interpolation)
register("diffusion_filter", diffusion_filter_from_checkpoint)
