"""Logging: the library never prints; it logs through ``logging.getLogger("dmir…")``.

Every module logs under the ``dmir`` logger tree (``dmir.models.registry``, ``dmir.bench`` …):
first-load notes (a computed checksum), downloads, what the bench runner does. Nothing is
shown unless the application configures logging — the ``dmir`` logger carries only a
:class:`logging.NullHandler`, so a library user sees nothing at INFO and Python's usual
last-resort handling for warnings and errors. Things that are warnings in the ``warnings``
sense (inferred checkpoint configs, DeqIR convergence) stay :mod:`warnings`.

The command line calls :func:`configure` once: a handler on stderr that prints
``dmir: <message>`` (``dmir bench: …`` for the bench), at INFO by default, WARNING with ``-q``, DEBUG with ``-v``. A notebook
user who wants the notes calls ``dmir.log.configure()`` (or configures ``logging`` as usual).
"""
from __future__ import annotations

import logging
import sys

ROOT = "dmir"

logging.getLogger(ROOT).addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """The logger of a dmir module (``__name__``), always inside the ``dmir`` tree."""
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".")
                             else f"{ROOT}.{name}")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (pytest's capsys, redirections)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    """``dmir: <message>``; ``dmir bench: <message>`` for the bench's loggers."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"{ROOT} bench" if record.name.startswith(f"{ROOT}.bench") else ROOT
        return f"{prefix}: {record.getMessage()}"


def level_for(verbosity: int) -> int:
    """-1 (``-q``) → WARNING, 0 → INFO, ≥ 1 (``-v``) → DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG


def configure(verbosity: int = 0) -> logging.Handler:
    """Show dmir's log on stderr as ``dmir: <message>`` (replacing an earlier configure).

    Returns the handler; :func:`unconfigure` removes it again."""
    logger = logging.getLogger(ROOT)
    unconfigure()
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    handler._dmir_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level_for(verbosity))
    logger.propagate = False
    return handler


def unconfigure() -> None:
    """Remove the handler of :func:`configure` and restore the library defaults."""
    logger = logging.getLogger(ROOT)
    for h in list(logger.handlers):
        if getattr(h, "_dmir_cli", False):
            logger.removeHandler(h)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


__all__ = ["get_logger", "configure", "unconfigure", "level_for", "ROOT"]
