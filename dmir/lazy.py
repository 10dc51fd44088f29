"""Lazy package exports (PEP 562), shared by :mod:`dmir.models`, :mod:`dmir.operators` and
:mod:`dmir.solvers`, so that importing a package (and ``dmir --help``) does not load torch.

A package lists its public names and submodules and calls :func:`exports` once; a name is
imported on first access and then cached in the package's namespace.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Mapping


def exports(package: str, names: Mapping[str, str | tuple[str, str]],
            modules: Mapping[str, str] | None = None
            ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        names: public name → relative module defining it (same name there), or →
            ``(module, name there)``.
        modules: attribute name → relative submodule (``models.registry`` …).
    """
    space = sys.modules[package].__dict__
    modules = dict(modules or {})

    def __getattr__(name: str) -> Any:
        if name in names:
            src = names[name]
            mod, attr = (src, name) if isinstance(src, str) else src
            value = getattr(importlib.import_module(mod, package), attr)
        elif name in modules:
            value = importlib.import_module(modules[name], package)
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        space[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(space) | set(names) | set(modules))

    return __getattr__, __dir__
