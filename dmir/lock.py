"""One process per output: an exclusive OS lock (``fcntl.flock``) on a file beside what a run
writes, held for as long as it writes (the bench's results files, a training state)."""
from __future__ import annotations

import os
import time

try:
    import fcntl
except ImportError:              # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

from .errors import InputError

RESULTS = "results.jsonl"


class FolderInUse(InputError):
    """Another process holds the lock of a results file."""

    def __init__(self, msg, pid=None):
        super().__init__(msg)
        self.pid = pid


class RunLock:
    """An exclusive OS lock (``fcntl.flock``) on ``out_dir/.<name>.lock`` for as long as a
    process appends to (or rewrites) results file ``name``; the lock file holds the owner's
    pid. The OS releases the lock when the process ends, however it ends (kill -9 included),
    so a stale lock file never blocks. :meth:`acquire` raises :class:`FolderInUse` naming the
    holder's pid, or returns False with ``wait=False, fail=False``."""

    def __init__(self, out_dir, name: str = RESULTS):
        self.out_dir = os.fspath(out_dir)
        self.name = name
        self.path = os.path.join(self.out_dir, f".{name}.lock")
        self.fd: int | None = None

    def holder(self) -> int | None:
        """The pid written by the current (or last) holder, if readable."""
        try:
            with open(self.path, encoding="ascii") as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def acquire(self, fail: bool = True, wait: float = 0.0) -> bool:
        """Take the lock; if it is held, retry for up to ``wait`` seconds, then raise
        :class:`FolderInUse` (or return False when ``fail`` is False)."""
        if self.fd is not None:
            return True
        os.makedirs(self.out_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        if fcntl is not None:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError:
                    if time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                os.close(fd)
                if not fail:
                    return False
                pid = self.holder()
                raise FolderInUse(
                    f"'{self.out_dir}' is in use by another dmir bench run (pid "
                    f"{pid or 'unknown'}, writing {self.name}); wait for it to finish or use "
                    f"another --out folder", pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            os.close(self.fd)           # closing the descriptor releases the flock
            self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()
        return False
