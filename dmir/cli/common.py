"""What every ``dmir`` command shares: the one-line error format, notes, help listings, the
progress bar. Imports nothing heavy (``dmir --help`` must stay fast)."""
from __future__ import annotations

import argparse
import sys
import textwrap

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


def note(msg) -> None:
    print(f"{PROG}: note: {one_line(msg)}", file=sys.stderr)


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
    """A tqdm step bar on stderr (only on a terminal), created at the first call."""

    def __init__(self, desc: str):
        self.bar = None
        self.desc = desc

    def __call__(self, i: int, n: int) -> None:
        if self.bar is None:
            from tqdm import tqdm

            from ..io import isatty

            self.bar = tqdm(total=n, desc=self.desc, unit="step", file=sys.stderr,
                            disable=not isatty(sys.stderr), leave=False, dynamic_ncols=True)
        if self.bar.total != n:
            self.bar.total = n
        self.bar.update(i - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
