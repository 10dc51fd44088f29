"""Reading checkpoint files safely and fast, and fitting state dicts into networks.

- PyTorch files (``.pt``, ``.pth``, ``.ckpt``, ``.bin``) are read with
  ``torch.load(weights_only=True)``: tensors and plain containers only, so a pickle that would
  import or call anything is refused instead of executed. Zip-format files (every file saved by
  torch ≥ 1.6) are memory-mapped (``mmap=True``): loading costs page faults, not a copy.
- ``.safetensors`` files are read and written with the ``safetensors`` library (memory-mapped
  ``safe_open``), after dmir has validated the header itself (:func:`safetensors_header`: types,
  shapes, offsets, the file size), so a truncated download or an inconsistent header is
  reported as such, naming the file and the problem.
- :func:`fit_state_dict` loads a state dict into a network and, when it does not fit, raises one
  :class:`~dmir.errors.ParameterError` that summarises missing and unexpected keys and shape
  mismatches (counts and a few examples, not thousands of lines).

This is the only module of :mod:`dmir.models` that touches files; networks and priors do not.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile

import torch
from torch import nn

from ..cache import file_digest  # noqa: F401 - re-exported (its home before dmir.cache)
from ..errors import InputError, ParameterError

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors",)

_ST_NAMES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
             torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
             torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL", torch.uint16: "U16",
             torch.uint32: "U32", torch.uint64: "U64", torch.float8_e4m3fn: "F8_E4M3",
             torch.float8_e5m2: "F8_E5M2"}


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


#: safetensors dtypes dmir reads, with their element sizes in bytes (the format's byte-sized
#: types; the sub-byte float4/float6 types are not read)
ST_DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
                  "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
                  "F64": 8}
#: the longest header dmir reads: the format allows 100 MB, but a header takes ~150 bytes per
#: tensor (1 MB for the largest UNet dmir loads), and parsing 100 MB of hostile JSON costs GBs
ST_MAX_HEADER = 16 * 2 ** 20
_ST_MAX_ELEMENTS = 2 ** 62


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"the key {k!r} appears twice")
        d[k] = v
    return d


def safetensors_header(path, remedy: str | None = "download it again") -> tuple[dict, dict, int]:
    """The validated header of a ``.safetensors`` file: ``(entries, metadata, data_start)``.

    Checked as the format specifies, before any tensor is touched: an 8-byte little-endian
    header length within the file and at most :data:`ST_MAX_HEADER`; a UTF-8 JSON object (no
    duplicate keys; the type checks leave it nested 3 levels at most); ``__metadata__``
    (optional) a str → str object; every other entry an object with ``dtype`` (one of
    :data:`ST_DTYPE_SIZES`), ``shape`` (a list of non-negative integers) and ``data_offsets``
    (two integers, begin ≤ end) whose length is dtype size × number of elements; the entries, in offset order, contiguous and
    non-overlapping, covering the data section exactly. Anything else raises
    :class:`CheckpointError` naming the file and the problem (a file shorter than its header
    says is reported as truncated, followed by ``remedy``: what to do about it — a downloaded
    checkpoint is fetched again, a file dmir wrote itself (a training state) is not).
    """
    path = os.fspath(path)
    todo = f"; {remedy}" if remedy else ""

    def bad(msg):
        return CheckpointError(f"{path!r} is not a valid safetensors file: {msg}")

    size = os.path.getsize(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path!r} is not a safetensors file (only {size} bytes; "
                                  f"truncated?)")
        n = struct.unpack("<Q", raw)[0]
        if n > ST_MAX_HEADER:
            raise bad(f"header length {n:,} exceeds dmir's limit of "
                      f"{ST_MAX_HEADER:,} bytes")
        if n > size - 8:
            raise CheckpointError(f"{path!r} is truncated or not a safetensors file (header "
                                  f"length {n:,} > file size {size:,})")
        hb = f.read(n)
    if len(hb) != n:
        raise CheckpointError(f"{path!r} is truncated (the header is cut short)")
    if not hb.lstrip()[:1] == b"{":
        raise bad("the header is not a JSON object")
    try:
        header = json.loads(hb.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except RecursionError:     # json's scanner stops at the interpreter's recursion limit
        raise bad("the header is nested too deeply (a valid header is nested 3 levels: "
                  "{name: {'shape': [...]}})") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"corrupt header ({str(e)[:200]})") from None
    if not isinstance(header, dict):
        raise bad(f"the header is a JSON {type(header).__name__}, not an object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items())):
        raise bad("__metadata__ must be an object of strings to strings")
    data_len = size - 8 - n
    spans = []
    for name, v in header.items():
        if not isinstance(v, dict):
            raise bad(f"entry {name!r} is a {type(v).__name__}, not an object")
        missing = [k for k in ("dtype", "shape", "data_offsets") if k not in v]
        if missing:
            raise bad(f"entry {name!r} lacks {', '.join(missing)}")
        dt, shape, offs = v["dtype"], v["shape"], v["data_offsets"]
        if not isinstance(dt, str) or dt not in ST_DTYPE_SIZES:
            raise bad(f"entry {name!r} has dtype {dt!r}; allowed: {', '.join(ST_DTYPE_SIZES)}")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise bad(f"entry {name!r}: shape must be a list of non-negative integers, "
                      f"got {shape!r:.100}")
        count = 1
        for d in shape:
            count *= d
        if count > _ST_MAX_ELEMENTS:
            raise bad(f"entry {name!r}: shape {shape} has {count:.3g} elements (overflows)")
        if not (isinstance(offs, list) and len(offs) == 2 and all(
                isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offs)):
            raise bad(f"entry {name!r}: data_offsets must be two non-negative integers, got "
                      f"{offs!r:.100}")
        b0, b1 = offs
        if b0 > b1:
            raise bad(f"entry {name!r}: data_offsets {offs} end before they begin")
        if b1 - b0 != count * ST_DTYPE_SIZES[dt]:
            raise bad(f"entry {name!r} has {b1 - b0:,} bytes for shape {shape} {dt} "
                      f"({count * ST_DTYPE_SIZES[dt]:,} expected)")
        spans.append((b0, b1, name))
    spans.sort()
    pos = 0
    for b0, b1, name in spans:
        if b0 != pos:
            raise bad(f"entry {name!r} starts at byte {b0:,} of the data, expected {pos:,} "
                      f"(entries must be contiguous and must not overlap)")
        pos = b1
    if pos > data_len:
        raise CheckpointError(f"{path!r} is truncated: its header describes {8 + n + pos:,} "
                              f"bytes, the file has {size:,}{todo}")
    if pos != data_len:
        raise bad(f"{data_len - pos:,} bytes after the last tensor (the header describes "
                  f"{8 + n + pos:,} bytes, the file has {size:,})")
    return header, (meta or {}), 8 + n


def read_safetensors(path, remedy: str | None = "download it again") -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file as a dict of tensors, memory-mapped (copy-on-write) by the
    ``safetensors`` library, after :func:`safetensors_header` has validated the header
    (``remedy``: the advice a truncated file's error ends with)."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    header, meta, _ = safetensors_header(path, remedy)
    out = {}
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            for name in header:
                out[name] = f.get_tensor(name)
    except (SafetensorError, OSError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path!r}: cannot read the safetensors data "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
    if meta.get(INT8_KEY) == INT8_VALUE:
        out = dequantize_int8(out, path)
    return out


def write_safetensors(tensors: dict[str, torch.Tensor], path, metadata: dict | None = None):
    """Write tensors as ``.safetensors`` with the ``safetensors`` library, atomically (a temp
    file in the target folder, then a rename: :func:`dmir.io.atomic_write`). Tensors that
    share memory (tied weights) are stored as separate copies."""
    from safetensors.torch import save

    from ..io import atomic_write

    path = os.fspath(path)
    out, seen = {}, set()
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise ParameterError(f"cannot store {name!r} ({type(t).__name__}) in safetensors: "
                                 f"only tensors")
        if t.dtype not in _ST_NAMES:
            raise ParameterError(f"cannot store {name!r} of dtype {t.dtype} in safetensors; "
                                 f"dtypes: {', '.join(str(d) for d in _ST_NAMES)}")
        t = t.detach().to("cpu").contiguous()
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if t.numel() and key in seen:
            t = t.clone()
        seen.add(key)
        out[name] = t
    meta = {str(k): str(v) for k, v in metadata.items()} if metadata else None
    atomic_write(path, save(out, metadata=meta))




# ------------------------------------------------------------------- int8 weight storage
#: ``__metadata__`` entry that marks a file of :func:`quantize_int8` tensors
INT8_KEY, INT8_VALUE = "dmir_weights", "int8-per-channel"
INT8_SCALE = ".int8_scale"      # suffix of a quantized weight's per-channel scales


def quantize_int8(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights stored in a quarter of float32's bytes: every floating tensor with ≥ 2 dims
    (convolution and linear weights) as int8 ``q`` with one float32 scale per output channel
    (row) under ``name + INT8_SCALE``, ``w ≈ q · scale``, ``scale = max|row| / 127``
    (symmetric, so zero stays zero); the error of each weight is at most scale / 2, 0.4 % of
    its row's largest magnitude. Biases, norms and other tensors are kept as they are. Write
    the result with ``metadata={INT8_KEY: INT8_VALUE}``; :func:`read_safetensors` then returns
    float32 weights again (:func:`dequantize_int8`)."""
    out = {}
    for name, t in sd.items():
        if name.endswith(INT8_SCALE):
            raise ParameterError(f"{name!r}: names ending in {INT8_SCALE!r} are reserved for "
                                 f"the scales of int8 weights")
        if not (t.is_floating_point() and t.dim() >= 2 and t.numel()):
            out[name] = t
            continue
        rows = t.detach().float().reshape(t.shape[0], -1)
        if not torch.isfinite(rows).all():
            raise ParameterError(f"{name!r} holds NaN or infinite values; int8 cannot store it")
        scale = rows.abs().amax(1) / 127
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))   # all-zero rows stay 0
        out[name] = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8) \
            .reshape(t.shape)
        out[name + INT8_SCALE] = scale
    return out


def dequantize_int8(sd: dict[str, torch.Tensor], path="") -> dict[str, torch.Tensor]:
    """The float32 state dict of a :func:`quantize_int8` file; a scale without its int8
    weight, an int8 weight without its scales or scales that do not fit raise
    :class:`CheckpointError` naming the tensor."""
    def bad(msg):
        return CheckpointError(f"{os.fspath(path)!r}: int8 weights: {msg}")

    out = {}
    for name, t in sd.items():
        if name.endswith(INT8_SCALE):
            if name[:-len(INT8_SCALE)] not in sd:
                raise bad(f"scales {name!r} without the weight they scale")
            continue
        scale = sd.get(name + INT8_SCALE)
        if t.dtype != torch.int8:
            if scale is not None:
                raise bad(f"{name!r} has scales but is {t.dtype}, not int8")
            out[name] = t
            continue
        if scale is None:
            raise bad(f"{name!r} is int8 but its scales {name + INT8_SCALE!r} are missing")
        if (t.dim() < 1 or not scale.is_floating_point()
                or tuple(scale.shape) != (t.shape[0],)):
            rows = t.shape[0] if t.dim() else 0
            raise bad(f"{name!r}: scales of shape {tuple(scale.shape)} ({scale.dtype}) for a "
                      f"weight of shape {tuple(t.shape)}; expected ({rows},) floating")
        scale = scale.float()
        if not (torch.isfinite(scale).all() and (scale > 0).all()):
            raise bad(f"{name + INT8_SCALE!r} holds non-positive or non-finite scales")
        out[name] = t.float() * scale.view(-1, *([1] * (t.dim() - 1)))
    return out


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
