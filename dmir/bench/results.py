"""Crash-safe result files of ``dmir bench``.

* Per-image results are JSON lines appended to a results file, each with ONE ``write`` of the
  complete line followed by ``fsync``: a process killed at any moment (SIGKILL included) leaves
  every earlier line intact and at most one truncated last line, which :func:`repair` cuts off
  before the file is appended to again and :func:`read_jsonl` ignores.
* A single process appends to ``results.jsonl``; shards and ``torchrun`` ranks append to their
  own ``results.part-I-of-N.jsonl`` (no two processes ever write one file). :func:`load` reads
  them all (the first line of a key wins: duplicates are identical re-reads after a merge) and
  :func:`merge` rewrites ``results.jsonl`` as their sorted union.
* Every other file (summaries, plots, PNGs, the plan) is written whole to a temporary file in
  the same folder and moved into place with ``os.replace`` (:func:`atomic_write`).
* Concurrency: every results file has one appender at a time, enforced by an OS file lock
  (:class:`RunLock`: ``fcntl.flock`` on ``.<file>.lock`` beside it, holding the owner's pid).
  A second run that would append to the same file is refused with the holder's pid. Rewriting
  ``results.jsonl`` (:func:`merge`) takes its lock too: while another process appends to it,
  the file is left as it is (its appends would otherwise go to a replaced, unlinked file).
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re

from .. import io as dio
from ..errors import InputError
from ..lock import RESULTS, FolderInUse, RunLock  # noqa: F401 - the lock is shared with training

__all__ = ["RESULTS", "PLAN_FILE", "key_of", "atomic_write", "repair", "read_jsonl",
           "ResultWriter", "part_name", "result_files", "load", "merge", "RunLock", "FolderInUse",
           "safe_name", "image_file", "image_path", "grid_dir"]

PLAN_FILE = "plan.json"
_PART = re.compile(r"^results\.part-(\d+)-of-(\d+)\.jsonl$")


def key_of(rec: dict) -> tuple:
    """The identity of a result: (dataset, task, method, image)."""
    return (rec.get("dataset"), rec.get("task"), rec.get("method"), rec.get("image"))


def atomic_write(path, data) -> None:
    """Write ``data`` (str or bytes) to ``path`` atomically (temp file + fsync + os.replace),
    creating the folder first."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    dio.atomic_write(path, data)


def safe_name(s: str) -> str:
    """A label as a file/folder name (letters, digits, . _ + - kept)."""
    out = "".join(c if c.isalnum() or c in "._+-" else "_" for c in str(s))
    return out.strip(".") or "_"


def image_file(image_id: str) -> str:
    """The relative PNG path of a restored image: the image id itself when it is a ``.png``
    name that :func:`safe_name` keeps unchanged (``sub/x.png`` → ``sub/x.png``); otherwise the
    sanitised name, its original extension kept, plus ``~`` and a short hash of the id
    (``x.jpg`` → ``x.jpg~1a2b3c4d.png``, ``a b.png`` → ``a_b~5e6f7a8b.png``). ``~`` never
    survives :func:`safe_name`, so two different ids never share a file, and a name does not
    depend on the other images of the dataset (stable across runs)."""
    parts = str(image_id).split("/")
    stem, ext = os.path.splitext(parts[-1])
    clean = [safe_name(p) for p in parts[:-1]] + [safe_name(stem)]
    if ext == ".png" and clean == parts[:-1] + [stem] and stem:
        return "/".join(parts)
    tag = hashlib.sha256(str(image_id).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    keep = "" if ext.lower() == ".png" or not ext else "." + safe_name(ext[1:])
    stem, suffix = clean[-1], f"{keep}~{tag}.png"
    while len((stem + suffix).encode("utf-8", "surrogateescape")) > 255:   # name limit
        stem = stem[:-1]
    return "/".join(clean[:-1] + [f"{stem}{suffix}"])


def image_path(out, ds, task, method, image_id):
    """out/images/DATASET/TASK/METHOD/<:func:`image_file` of the id> (sub-folders kept)."""
    return os.path.join(out, "images", safe_name(ds), safe_name(task), safe_name(method),
                        *image_file(image_id).split("/"))


def grid_dir(out, ds, task, item):
    """out/grid/DATASET/TASK/<position>_<image stem>: one image's comparison-grid pictures."""
    stem = os.path.splitext(item.id)[0]
    return os.path.join(out, "grid", safe_name(ds), safe_name(task),
                        f"{item.index:06d}_{safe_name(stem)}")


def repair(path) -> int:
    """Cut a truncated last line (a write killed midway) off ``path``; returns the number of
    bytes removed (0 if the file is complete or absent)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return 0
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # scan back for the last complete line
        pos, chunk = size, 1 << 16
        keep = 0
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


def read_jsonl(path) -> tuple[list[dict], int]:
    """(records, number of unreadable lines) of a JSON-lines file; a truncated or corrupt line
    is skipped, never fatal."""
    recs, bad = [], 0
    try:
        with open(path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(r, dict):
                    recs.append(r)
                else:
                    bad += 1
    except FileNotFoundError:
        pass
    return recs, bad


class ResultWriter:
    """Appends records to one JSON-lines file: one ``os.write`` of a complete line, then
    ``fsync``. The file is repaired (truncated last line removed) when opened."""

    def __init__(self, path):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self.repaired = repair(self.path)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def write(self, rec: dict) -> None:
        data = (json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        n = os.write(self.fd, data)
        while n < len(data):                   # regular files write everything at once; a
            n += os.write(self.fd, data[n:])   # short write is finished (and stays repairable)
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def part_name(index: int, count: int) -> str:
    """The results file of shard ``index`` of ``count`` (``results.jsonl`` when count is 1)."""
    return RESULTS if count == 1 else f"results.part-{index}-of-{count}.jsonl"


def result_files(out_dir) -> list[str]:
    """``results.jsonl`` and every part file in ``out_dir`` (merged file first)."""
    out = []
    main = os.path.join(out_dir, RESULTS)
    if os.path.exists(main):
        out.append(main)
    parts = [p for p in glob.glob(os.path.join(glob.escape(os.fspath(out_dir)), "results.part-*"))
             if _PART.match(os.path.basename(p))]
    return out + sorted(parts)


def load(out_dir) -> tuple[dict, int]:
    """({key: record}, unreadable lines) over all result files of ``out_dir``.

    Per key the first result wins, except that a result replaces an earlier *error* record
    (records with an ``"error"`` field are retried by a restarted run)."""
    recs: dict = {}
    bad = 0
    for p in result_files(out_dir):
        rs, b = read_jsonl(p)
        bad += b
        for r in rs:
            k = key_of(r)
            if k not in recs or ("error" in recs[k] and "error" not in r):
                recs[k] = r
    return recs, bad


def merge(out_dir, order=None, lock: RunLock | None = None, log=None) -> list[dict]:
    """Rewrite ``results.jsonl`` (atomically) as the union of all result files, sorted by
    ``order(record)`` (default: the key); returns the records. Part files are kept.

    The rewrite needs ``results.jsonl``'s :class:`RunLock`: ``lock`` when the caller holds it,
    else it is taken for the rewrite. If another process holds it (a run appending to
    ``results.jsonl``), the file is not replaced — that run's later appends would be lost —
    and the union is returned all the same (``log`` is told)."""
    own = None
    if lock is None or not lock.held:
        own = RunLock(out_dir, RESULTS)
        if not own.acquire(fail=False, wait=2.0):     # another shard's merge takes a moment
            own = None
            if log:
                log(f"results.jsonl is being appended to by another run (pid "
                    f"{RunLock(out_dir, RESULTS).holder() or 'unknown'}); it was not rewritten "
                    f"(run dmir bench --summarize when that run has finished)")
            recs, _ = load(out_dir)
            rows = list(recs.values())
            rows.sort(key=order or (lambda r: tuple(str(v) for v in key_of(r))))
            return rows
    try:
        recs, _ = load(out_dir)
        rows = list(recs.values())
        rows.sort(key=order or (lambda r: tuple(str(v) for v in key_of(r))))
        text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n"
                       for r in rows)
        try:
            atomic_write(os.path.join(out_dir, RESULTS), text)
        except OSError as e:
            raise InputError(f"cannot write '{os.path.join(out_dir, RESULTS)}': "
                             f"{e.strerror or e}") from None
        return rows
    finally:
        if own is not None:
            own.release()
