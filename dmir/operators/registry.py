"""The operator registry: task name → builder ``fn(shape, **params)``, its parameter names and a
one-line description. Imports nothing heavy, so the command line can list the tasks without
loading torch; builders import what they need when called.

A user's operator joins the registry with :func:`register` and is then reachable everywhere a
task name is: ``dmir.pipeline``, the bench (``--task NAME,param=...``) and the property tests
every registered operator gets (tests/test_operators.py).
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError, ShapeError, UnknownNameError

if TYPE_CHECKING:     # types only: listing the tasks must not import torch
    from ..types import Operator

__all__ = ["register", "names", "params", "describe", "build", "check_shape"]

_REGISTRY: dict = {}


def register(name: str, params=(), help: str = "", *, builder=None, replace: bool = False):
    """Register ``builder(shape, **params) -> LinearOperator`` as task ``name``; ``params`` are
    the keyword names it accepts (plus ``generator=`` when its signature has one: the operator's
    own randomness). A decorator — ``@register("my_blur", ["sigma"], "Gaussian blur")`` — or a
    call with ``builder=``. Registering a taken name raises unless ``replace=True``."""
    def deco(fn):
        if not callable(fn):
            raise ParameterError(f"operator {name!r}: the builder must be callable")
        if name in _REGISTRY and not replace and _REGISTRY[name][0] is not fn:
            raise ParameterError(f"operator {name!r} is already registered (replace=True "
                                 f"overrides it)")
        _REGISTRY[name] = (fn, list(params), help)
        return fn

    if not isinstance(name, str) or not name or any(c in name for c in ", ="):
        raise ParameterError(f"operator name must be a non-empty string without ',', ' ' or "
                             f"'=', got {name!r}")
    return deco if builder is None else deco(builder)


def unregister(name: str) -> None:
    """Remove a registered operator (tests, user code replacing a task)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """All registered operator names."""
    return list(_REGISTRY)


def _entry(name):
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown task/operator {name!r}; available: "
                               f"{', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def params(name: str) -> tuple[list[str], bool]:
    """(parameter names, whether it draws random numbers from ``generator=``) of an operator."""
    fn, allowed, _ = _entry(name)
    return list(allowed), "generator" in inspect.signature(fn).parameters


def describe() -> dict[str, str]:
    """name → one-line description with its parameters."""
    return {n: f"{h} [params: {', '.join(p) or 'none'}]" for n, (_, p, h) in _REGISTRY.items()}


def check_shape(shape):
    """(C, H, W) of positive whole numbers; 3.5 is an error, never truncated."""
    try:
        dims = tuple(shape)
        C, H, W = (int(s) for s in dims)
        whole = all(not isinstance(s, bool) and int(s) == s for s in dims)
    except Exception:
        raise ShapeError(f"shape must be (C, H, W), got {shape!r}") from None
    if not whole:
        raise ShapeError(f"shape must be whole numbers (C, H, W), got {shape!r}")
    if min(C, H, W) < 1:
        raise ShapeError(f"shape must be positive, got {shape!r}")
    return C, H, W


def build(name: str, shape: Any, **params: Any) -> Operator:
    """Build operator ``name`` for images of shape (C, H, W). See :func:`describe`."""
    fn, allowed, _ = _entry(name)
    extra = set(params) - set(allowed) - {"generator"}
    if extra:
        raise ParameterError(f"{name}: unexpected parameter(s) {sorted(extra)}; allowed: "
                             f"{', '.join(allowed) or 'none'}")
    return fn(check_shape(shape), **params)
