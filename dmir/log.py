"""Logging: the library never prints; it logs through ``logging.getLogger("dmir…")``.

Every module logs under the ``dmir`` logger tree (``dmir.checkpoints.registry``, ``dmir.bench`` …):
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
from typing import Any

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


def isatty(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False for closed/replaced streams)."""
    try:
        return stream.isatty()
    except Exception:  # noqa: BLE001
        return False


class Progress:
    """The restore bar: network evaluations done / planned, NFE/s and the ETA, on stderr; a
    callable ``(i, n)`` as the solvers report progress. Used by the CLI and, when stderr is a
    terminal, by :func:`dmir.pipeline.restore`.

    Shown on a terminal unless ``quiet``; ``file``/``enabled`` override that (tests)."""

    FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} NFE "
              "[{elapsed}, ETA {remaining}, {rate_fmt}]")

    def __init__(self, desc: str, quiet: bool = False, file=None, enabled: bool | None = None):
        self.bar: Any = None
        self.desc = desc
        self.file = file
        self.enabled = (not quiet and isatty(sys.stderr)) if enabled is None else enabled

    @staticmethod
    def wanted() -> bool:
        """Whether a library call should show a bar (stderr is a terminal)."""
        return isatty(sys.stderr)

    def __call__(self, i: int, n: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            # the first report comes after the first network evaluation: start the bar there
            # (initial=i), or its rate (and ETA) would count that step as taking no time
            self.bar = tqdm(total=n, initial=i, desc=self.desc, unit="NFE",
                            file=self.file or sys.stderr, disable=not self.enabled, leave=False,
                            dynamic_ncols=True, bar_format=self.FORMAT, mininterval=0.2)
        if self.bar.total != n:
            self.bar.total = n
        self.bar.update(i - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["get_logger", "configure", "unconfigure", "level_for", "ROOT", "Progress", "isatty"]
