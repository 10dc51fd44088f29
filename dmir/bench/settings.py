"""The settings a benchmark result depends on: as plain data, as the fingerprint stored with
every result (``cfg``), and, when a folder holds results of other settings, which ones differ.

The fingerprint of a (dataset, task, method) is a hash of :func:`settings`; a resumed run
compares it with each stored result's, and :func:`differs` names what changed, rebuilding the
stored settings from the folder's ``plan.json`` (checked against the stored fingerprint).
"""
from __future__ import annotations

import hashlib
import json
import os

from ..errors import DmirError
from .results import PLAN_FILE

__all__ = ["settings", "fingerprint", "differs"]


def _param_id(v):
    """A task parameter as it enters the fingerprint: files by content (a preset's absolute
    path to a mask shipped with dmir must not change when the installation moves)."""
    if isinstance(v, str) and len(v) < 4096:
        try:
            from .pipeline import _resolve_file
            path = _resolve_file(v)
        except (DmirError, OSError):
            return v
        if os.path.isfile(path):
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            return "file-sha256:" + h.hexdigest()
    return v


def settings(size, crop, channels, task: dict, method: dict, seed, model, steps) -> dict:
    """Every setting that changes a (dataset, task, method) result, as plain data (``task`` /
    ``method``: their specs as dicts; ``steps``: the run's --steps override)."""
    t = {k: v for k, v in task.items() if k != "note"}
    t["params"] = {k: _param_id(v) for k, v in t["params"].items()}
    m = {k: v for k, v in method.items() if k not in ("name", "status")}
    if steps is not None and m["method"] != "apy":
        m["steps"] = steps
    return json.loads(json.dumps(
        {"v": 1, "size": size, "crop": crop, "channels": channels, "task": t, "method": m,
         "seed": seed, "model": None if m["method"] == "apy" else model},
        sort_keys=True, default=str))


def fingerprint(s: dict) -> str:
    """The short hash of :func:`settings` stored with each result (``cfg``)."""
    return hashlib.sha256(json.dumps(s, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stored_settings(stored: dict, key, rec) -> dict | None:
    """The settings a stored result was computed with, rebuilt from the folder's plan.json;
    None when they cannot be (no plan, labels gone, or they do not hash to the record's)."""
    try:
        d, t, m, _ = key
        ds = next(x for x in stored["datasets"] if x["name"] == d)
        task = next(x for x in stored["tasks"] if x["name"] == t)
        meth = next(x for x in stored["methods"] if x["name"] == m)
        old = settings(ds["size"], ds["crop"], ds.get("channels", 3), task, meth,
                       stored["run"]["seed"], rec.get("model"), stored["run"]["steps"])
    except (KeyError, TypeError, StopIteration, AttributeError):
        return None
    return old if fingerprint(old) == rec.get("cfg") else None


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``setting: stored A, now B`` for every leaf that differs."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, prefix + k + ".")
        elif a != b:
            out.append(f"{prefix}{k}: stored {a}, now {b}")
    return out


def differs(out, key, rec: dict, new: dict) -> str:
    """What differs between the stored result ``rec`` (of ``key``) in folder ``out`` and the
    settings ``new``: ``setting: stored A, now B; ...`` when the folder's plan.json tells, else
    the stored values the record itself holds (a no-model A+y row: its seed only)."""
    try:
        with open(os.path.join(out, PLAN_FILE)) as f:
            stored = json.load(f)
    except (OSError, ValueError):
        stored = None
    old = _stored_settings(stored, key, rec) if isinstance(stored, dict) else None
    if old is not None:
        diff = _differences(old, new)
        if diff:
            return "; ".join(diff)
    if rec.get("solver") == "apy":
        return f"stored: seed {rec.get('run_seed')}"
    return (f"stored: model {rec.get('model')}, steps {rec.get('steps')}, seed "
            f"{rec.get('run_seed')}")
