"""The ``dmir`` command line.

    dmir restore INPUT -o OUTPUT --task NAME [task options] [--method NAME] [sampler options]
    dmir models
    dmir metrics [setup [--lpips] [--fid]]
    dmir metrics fid DIR1 DIR2 [--kid]
    dmir bench (--preset NAME | --data [NAME=]FOLDER --task SPEC --method SPEC) --out DIR ...
    dmir serve [--host 127.0.0.1] [--port N] [--model NAME] [--device cpu|cuda]

Every user mistake (unknown name, bad number, wrong size, unreadable input, unwritable output)
ends with ONE line ``dmir: error: <what was wrong and what is allowed>`` on stderr and exit
status 2. The output file is written only at the very end, atomically, so nothing is left
behind by a failure, a crash or Ctrl-C (exit status 130).
"""
from __future__ import annotations

import argparse
import sys

from .. import log as dlog
from ..errors import DmirError
from . import bench, demo, metrics, models, restore, serve, train
from .common import EXIT_INTERRUPT, EXIT_USAGE, PROG, Parser, UsageError, add_verbosity, fail

__all__ = ["main", "parse_kernel", "UsageError", "PROG", "EXIT_USAGE", "EXIT_INTERRUPT"]

#: the commands, in the order of ``dmir --help``; each module has add_parser(sub) and run(a)
COMMANDS = {"restore": restore, "models": models, "metrics": metrics, "train": train,
            "demo": demo, "bench": bench, "serve": serve}


def __getattr__(name):
    if name == "parse_kernel":          # moved to dmir.pipeline; kept here for old callers
        from ..pipeline import parse_kernel

        return parse_kernel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _command_of(argv):
    """The command named in ``argv`` (its first non-option word), "" when none; None when
    argv is None (build every command's full parser)."""
    if argv is None:
        return None
    return next((w for w in argv if not str(w).startswith("-")), "")


def _parser(argv=None) -> argparse.ArgumentParser:
    """The argument parser. With ``argv``, commands other than the one it names get only their
    help line (``dmir --help`` must not load torch, see dmir.cli.train)."""
    chosen = _command_of(argv)
    p = Parser(prog=PROG, description="Zero-shot image restoration with diffusion priors.",
               epilog=restore.epilog().split("\n\nkernels")[0]
               + "\n\nRun 'dmir restore --help' for the options.",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, mod in COMMANDS.items():
        if mod is train:
            mod.add_parser(sub, full=chosen in (None, name))
        else:
            mod.add_parser(sub)
    add_verbosity(p, top=True)
    for sp in sub.choices.values():
        add_verbosity(sp)
    return p


def main(argv=None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = _parser(argv)
    try:
        a = parser.parse_args(argv)
    except SystemExit as e:       # --help (0) or a usage error (2, already printed)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    if a.command is None:
        return fail("a command is required: restore, models, metrics, train, demo, bench or serve "
                    "(see dmir --help)")
    dlog.configure(-1 if a.quiet else min(int(a.verbose or 0), 1))
    try:
        rc = _run(a)
        sys.stdout.flush()        # a closed pipe shows here, not at exit
        return rc
    except BrokenPipeError:
        # the reader went away (`dmir models | head`): stop quietly, as Unix tools do
        _drop_stdout()
        return EXIT_BROKEN_PIPE
    finally:
        dlog.unconfigure()


#: 128 + SIGPIPE, the status of a tool the reader of its output stopped
EXIT_BROKEN_PIPE = 141


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so that Python's final flush does not report the broken pipe
    again (the recipe of the Python docs, "Note on SIGPIPE")."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):   # no real file descriptor (tests)
        pass


def _run(a) -> int:
    try:
        return COMMANDS[a.command].run(a)
    except DmirError as e:
        return fail(e)
    except KeyboardInterrupt as e:
        # a command that keeps something on purpose (training state, bench results) says so
        print(f"{PROG}: {e}" if str(e) else f"{PROG}: interrupted; no output written",
              file=sys.stderr)
        return EXIT_INTERRUPT
    except MemoryError:
        return fail("out of memory; try a smaller image or fewer samples")
    except Exception as e:  # noqa: BLE001 - torch.cuda.OutOfMemoryError without importing torch
        # (torch's CPU allocator raises RuntimeError, not MemoryError)
        if type(e).__name__ == "OutOfMemoryError" or (isinstance(e, RuntimeError)
                                                      and _is_out_of_memory(e)):
            return fail("out of memory; try a smaller image or fewer samples")
        raise


def _is_out_of_memory(e: BaseException) -> bool:
    from ..models import memory     # torch is loaded already: the error came from it

    return memory.is_out_of_memory(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
