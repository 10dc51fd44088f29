"""What every ``dmir`` command shares: the one-line error format, notes, help listings, the
progress bar. Imports nothing heavy (``dmir --help`` must stay fast)."""
from __future__ import annotations

import argparse
import sys
import textwrap

from .. import log as dlog
from ..errors import DmirError

PROG = "dmir"
EXIT_USAGE = 2
EXIT_INTERRUPT = 130


class UsageError(DmirError):
    """A command-line mistake detected by the CLI itself."""


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line ``dmir: error: ...`` (exit 2), no usage dump."""

    def error(self, message):
        fail(message)
        raise SystemExit(EXIT_USAGE)


def one_line(msg) -> str:
    return " ".join(str(msg).split())


def fail(msg) -> int:
    print(f"{PROG}: error: {one_line(msg)}", file=sys.stderr)
    return EXIT_USAGE


_log = dlog.get_logger("dmir.cli")


def note(msg) -> None:
    _log.info("note: %s", one_line(msg))   # shown unless -q (dmir.log.configure in main)


def add_verbosity(p: argparse.ArgumentParser, top: bool = False) -> None:
    """-q/--quiet and -v/--verbose, accepted before or after the command name."""
    d: dict = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on "
                   "stderr (no notes, no progress bar)", **d)
    g.add_argument("-v", "--verbose", action="count", help="more detail on stderr (debug log)",
                   **({"default": 0} if top else d))


def listing(title: str, items: dict) -> str:
    width = max(len(k) for k in items) + 2 if items else 0
    lines = [title]
    for k, v in items.items():
        wrapped = textwrap.wrap(v, 100 - width - 2) or [""]
        lines.append(f"  {k:<{width}}{wrapped[0]}")
        lines += [" " * (width + 2) + w for w in wrapped[1:]]
    return "\n".join(lines)


def safe(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - help must always print
        return {}


Progress = dlog.Progress      # the one NFE bar (dmir.log), shared with the library
