"""What every ``dmir`` command shares: the one-line error format, notes, help listings, the
progress bar. Imports nothing heavy (``dmir --help`` must stay fast)."""
from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

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


class Progress:
    """The restore bar: network evaluations done / planned, NFE/s and the ETA.

    Shown on a terminal unless -q; ``file``/``enabled`` override that (tests)."""

    FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} NFE "
              "[{elapsed}, ETA {remaining}, {rate_fmt}]")

    def __init__(self, desc: str, quiet: bool = False, file=None, enabled: bool | None = None):
        from ..io import isatty

        self.bar: Any = None
        self.desc = desc
        self.file = file
        self.enabled = (not quiet and isatty(sys.stderr)) if enabled is None else enabled

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

    def close(self):
        if self.bar is not None:
            self.bar.close()
