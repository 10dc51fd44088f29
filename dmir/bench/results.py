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
"""
from __future__ import annotations

import glob
import json
import os
import re

from .. import io as dio
from ..errors import InputError

__all__ = ["RESULTS", "key_of", "atomic_write", "repair", "read_jsonl", "ResultWriter",
           "part_name", "result_files", "load", "merge"]

RESULTS = "results.jsonl"
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


def merge(out_dir, order=None) -> list[dict]:
    """Rewrite ``results.jsonl`` (atomically) as the union of all result files, sorted by
    ``order(record)`` (default: the key); returns the records. Part files are kept."""
    recs, _ = load(out_dir)
    rows = list(recs.values())
    rows.sort(key=order or (lambda r: tuple(str(v) for v in key_of(r))))
    text = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows)
    try:
        atomic_write(os.path.join(out_dir, RESULTS), text)
    except OSError as e:
        raise InputError(f"cannot write '{os.path.join(out_dir, RESULTS)}': "
                         f"{e.strerror or e}") from None
    return rows
