"""Reading checkpoint files safely and fast, and fitting state dicts into networks.

- PyTorch files (``.pt``, ``.pth``, ``.ckpt``, ``.bin``) are read with
  ``torch.load(weights_only=True)``: tensors and plain containers only, so a pickle that would
  import or call anything is refused instead of executed. Zip-format files (every file saved by
  torch ≥ 1.6) are memory-mapped (``mmap=True``): loading costs page faults, not a copy.
- ``.safetensors`` files are parsed here (8-byte header length, JSON header, raw little-endian
  data) and memory-mapped copy-on-write; the header is validated against the file size, so a
  truncated download is reported as such.
- :func:`fit_state_dict` loads a state dict into a network and, when it does not fit, raises one
  :class:`~dmir.errors.ParameterError` that summarises missing and unexpected keys and shape
  mismatches (counts and a few examples, not thousands of lines).

This is the only module of :mod:`dmir.models` that touches files; networks and priors do not.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import torch
from torch import nn

from ..errors import InputError, ParameterError

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
              "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
              "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


class CheckpointError(InputError):
    """A checkpoint file that cannot be read: truncated, corrupt, unsafe or of another kind."""


# ---------------------------------------------------------------------------------- reading
def read_checkpoint(path, mmap: bool = True):
    """The object stored in a checkpoint file (usually a state dict), read safely.

    ``.safetensors`` → dict of tensors; anything else is treated as a torch pickle/zip file.
    Raises :class:`CheckpointError` for a missing, truncated, corrupt or unsafe file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist or is not a file")
    if path.endswith(SAFETENSORS_SUFFIXES) or _looks_like_safetensors(path):
        return read_safetensors(path)
    return _read_torch(path, mmap)


def _looks_like_safetensors(path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = struct.unpack("<Q", head[:8])[0]
    return head[8:9] == b"{" and 2 <= n < 100_000_000


class _LightningMetadata:
    """Inert stand-in for classes that PyTorch Lightning (1.x) pickles into the training
    metadata of a ``.ckpt`` (the ``callbacks`` dict is keyed by the callback class, e.g. in
    the CompVis latent-diffusion checkpoints). Only the name is resolved; nothing is imported
    or run, and the weights are unaffected."""


_INERT_GLOBALS = [(_LightningMetadata,
                   "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint")]


def _read_torch(path, mmap):
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes): an interrupted download?")
    is_zip = zipfile.is_zipfile(path)
    if not is_zip:
        with open(path, "rb") as f:
            head = f.read(4)
        if head[:2] == b"PK":
            raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt (a zip archive "
                                  f"without its directory; {size:,} bytes): download it again")
        if not head or head[0] != 0x80:   # legacy torch files start with a pickle PROTO opcode
            raise CheckpointError(
                f"{path!r} is not a PyTorch checkpoint (expected a torch.save zip/pickle file or "
                f".safetensors; first bytes {head!r})")
    try:
        with torch.serialization.safe_globals(_INERT_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True,
                              mmap=bool(mmap and is_zip))
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights_only" in msg or "Unsupported global" in msg or "Weights only" in msg:
            first = msg.strip().splitlines()
            detail = next((ln.strip() for ln in first if "GLOBAL" in ln or "global" in ln),
                          first[0] if first else "")
            raise CheckpointError(
                f"refusing to load {path!r}: it is a pickle that would import or run code "
                f"({detail[:200]}). dmir only reads tensors and plain containers "
                f"(weights_only). If you trust the file, re-save its state dict with "
                f"torch.save(obj['state_dict'], 'clean.pt') or convert it to .safetensors") from None
        raise CheckpointError(f"checkpoint {path!r} is corrupt ({msg[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError,
            IndexError, struct.error) as e:
        raise CheckpointError(f"checkpoint {path!r} is truncated or corrupt "
                              f"({type(e).__name__}: {str(e)[:200]}); download it again") from None


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a dict of tensors, memory-mapped copy-on-write."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path!r} is not a safetensors file (only {size} bytes)")
        n = struct.unpack("<Q", raw)[0]
        if n > size - 8:
            raise CheckpointError(f"{path!r} is truncated or not a safetensors file (header "
                                  f"length {n:,} > file size {size:,})")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path!r}: corrupt safetensors header ({e})") from None
    header.pop("__metadata__", None)
    start = 8 + n
    end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    if start + end > size:
        raise CheckpointError(f"{path!r} is truncated: its header describes {start + end:,} "
                              f"bytes, the file has {size:,}; download it again")
    buf = np.memmap(path, dtype=np.uint8, mode="c", offset=0, shape=(size,)) if size else None
    out = {}
    for name, v in header.items():
        try:
            dt = _ST_DTYPES[v["dtype"]]
            b0, b1 = (int(o) for o in v["data_offsets"])
            shape = [int(s) for s in v["shape"]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path!r}: corrupt safetensors entry {name!r}: {v!r}") from None
        count = int(np.prod(shape)) if shape else 1
        if b1 - b0 != count * torch.empty((), dtype=dt).element_size():
            raise CheckpointError(f"{path!r}: entry {name!r} has {b1 - b0} bytes for shape "
                                  f"{shape} {v['dtype']}")
        t = (torch.from_numpy(buf[start + b0:start + b1]) if b1 > b0 and buf is not None
             else torch.empty(0, dtype=torch.uint8))
        out[name] = t.view(dt).reshape(shape)
    return out


def write_safetensors(tensors: dict[str, torch.Tensor], path, metadata: dict | None = None):
    """Write tensors as ``.safetensors`` (atomically: temp file, then rename)."""
    path = os.fspath(path)
    header, offset, items = {}, 0, []
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _ST_NAMES:
            raise ParameterError(f"cannot store {name!r} of dtype {t.dtype} in safetensors")
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        items.append(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for d in items:
            f.write(d)
    os.replace(tmp, path)


def file_digest(path, algorithm: str = "sha256", chunk: int = 1 << 22) -> str:
    """Hex digest of a file, streamed."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------------- fitting
def _examples(items, k=4):
    items = list(items)
    s = ", ".join(items[:k])
    return s + (f", … ({len(items) - k} more)" if len(items) > k else "")


def state_dict_mismatch(net: nn.Module, sd: dict) -> str | None:
    """One paragraph describing how ``sd`` fails to fit ``net`` (``None`` if it fits)."""
    want = {k: tuple(v.shape) for k, v in net.state_dict(keep_vars=True).items()}
    have = {k: tuple(v.shape) for k, v in sd.items() if isinstance(v, torch.Tensor)}
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {have[k]} vs {want[k]}" for k in want if k in have and have[k] != want[k]]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (checkpoint vs config: "
                     f"{_examples(shapes, 3)})")
    return "; ".join(parts)


def fit_state_dict(net: nn.Module, sd: dict, what: str = "checkpoint", dtype=None,
                   device=None) -> nn.Module:
    """Load ``sd`` into ``net`` (built on any device, including ``meta``) without copying more
    than needed: tensors are assigned (memory-mapped ones stay mapped), cast to ``dtype``
    (default: the dtype each parameter was built with, so half-precision files become float32)
    and moved to ``device``.

    Raises :class:`~dmir.errors.ParameterError` summarising missing/unexpected keys and shape
    mismatches when ``sd`` does not fit.
    """
    problem = state_dict_mismatch(net, sd)
    if problem is not None:
        raise ParameterError(f"{what} does not match the network configuration: {problem}. "
                             f"Pass the right config (or format), or let dmir infer it "
                             f"(config=None)")
    ref = net.state_dict(keep_vars=True)
    conv = {}
    for k, v in sd.items():
        if v.is_floating_point():
            # the requested dtype, else the dtype the network was built with (float32, or
            # float16 where an architecture deliberately keeps part of itself in half)
            v = v.to(device=device or v.device, dtype=dtype or ref[k].dtype)
        elif device is not None:
            v = v.to(device)
        conv[k] = v
    net.load_state_dict(conv, strict=True, assign=True)
    leftover = [n for n, t in list(net.named_parameters()) + list(net.named_buffers())
                if t.is_meta]
    if leftover:
        raise ParameterError(f"{what}: tensors not provided by the checkpoint: "
                             f"{_examples(leftover)}")
    return net
