"""Reading and writing images and masks.

Conventions (docs/architecture.md): files hold 8-bit or 16-bit images in [0, 1]; in memory images are
``(1, C, H, W)`` float32 tensors in the model domain [-1, 1] with C = 1 (gray) or C = 3 (RGB).

* :func:`read_image` — PNG (8/16-bit), JPEG, and anything else Pillow opens (TIFF, BMP, WebP, …),
  plus ``.npy`` arrays (H×W or H×W×C; floats in [0, 1], integers of dtype uint8/uint16 at their
  full range). Gray (and gray + alpha) → C = 1; RGB, RGBA, palette, CMYK, … → C = 3. An alpha
  channel is dropped, with a :class:`UserWarning` that says so. JPEG EXIF orientation is applied.
* :func:`write_image` — PNG only, 8- or 16-bit, gray or RGB, written atomically (a temporary file
  in the target folder, then ``os.replace``): a failure never leaves a partial file behind.
* :func:`load_mask` — an inpainting mask (H, W) of 0/1 from ``.npy`` (values must be 0/1) or an
  image file (white = kept: a pixel is kept where its gray value is > 0.5; a file with
  transparency: its alpha channel, transparent = to fill).

Pillow reads 16-bit *colour* PNGs only at 8-bit precision, so 16-bit colour PNGs are decoded and
encoded by the small PNG codec at the end of this module (zlib + the five PNG row filters),
which applies Pillow's decompression-bomb pixel limit (``PIL.Image.MAX_IMAGE_PIXELS``) before
decompressing and inflates no more than the header announces.

Every bad file raises :class:`dmir.errors.InputError` (:class:`OutputError` for outputs) with a
one-line message that names the path.
"""
from __future__ import annotations

import os
import stat
import struct
import tempfile
import warnings
import zlib

import numpy as np
import torch

from .errors import InputError, ShapeError

__all__ = ["read_image", "write_image", "load_mask", "check_output_path", "check_not_input",
           "same_file", "atomic_write", "OutputError"]


class OutputError(InputError):
    """An output file cannot be written (missing or read-only folder, wrong extension)."""


# ----------------------------------------------------------------------------- reading
def _check_input_file(path) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"input file '{path}' does not exist")
    if os.path.isdir(path):
        raise InputError(f"input '{path}' is a directory, not an image file")
    if not os.access(path, os.R_OK):
        raise InputError(f"input file '{path}' is not readable (permission denied)")
    return path


def _read_bytes(path: str, n: int | None = None) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read() if n is None else f.read(n)
    except OSError as e:
        raise InputError(f"cannot read '{path}': {e.strerror or e}") from None


def _from_numeric(a: np.ndarray, path: str) -> np.ndarray:
    """A numeric array → float64 in [0, 1] (uint8/uint16 at full range, floats as they are)."""
    if a.dtype == np.bool_:
        return a.astype(np.float64)
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float64) / 65535.0
    if np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise InputError(f"'{path}' contains NaN or Inf pixel values")
        lo, hi = float(a.min()), float(a.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(f"'{path}': floating-point pixel values must lie in [0, 1], found "
                             f"[{lo:.4g}, {hi:.4g}]")
        return np.clip(a, 0.0, 1.0)
    if np.issubdtype(a.dtype, np.integer):   # other integer arrays (.npy): 8-bit if ≤ 255
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise InputError(f"'{path}': integer pixel values must lie in 0..65535, found "
                             f"{lo}..{hi}")
        return a.astype(np.float64) / (255.0 if hi <= 255 else 65535.0)
    raise InputError(f"'{path}': unsupported pixel type {a.dtype}; use uint8, uint16 or float "
                     f"in [0, 1]")


def _read_npy(path: str) -> tuple[np.ndarray, list[str]]:
    try:
        a = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any failure means the file is not a usable array
        raise InputError(f"'{path}' is not a readable .npy array ({type(e).__name__})") from None
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf":
        raise InputError(f"'{path}' must hold a numeric array, got dtype "
                         f"{getattr(a, 'dtype', type(a).__name__)}")
    if a.ndim == 2:
        a = a[:, :, None]
    elif a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4) and a.shape[0] in (1, 3, 4):
        a = np.moveaxis(a, 0, 2)   # C×H×W → H×W×C
    if a.ndim != 3 or a.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"'{path}': array image must be H×W, H×W×C or C×H×W with C in 1..4, "
                         f"got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"'{path}' is an empty image ({a.shape[0]}x{a.shape[1]} pixels)")
    return _from_numeric(a, path), []


def _drop_alpha(a: np.ndarray, path: str, notes: list) -> np.ndarray:
    if a.shape[2] in (2, 4):
        notes.append(f"'{path}' has an alpha channel; it was dropped "
                     f"({'gray' if a.shape[2] == 2 else 'RGB'} kept)")
        a = a[:, :, :-1]
    return a


def _read_pil(path: str) -> tuple[np.ndarray, list[str]]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    notes: list[str] = []
    try:
        with Image.open(path) as opened:
            im: Image.Image = opened
            im.load()
            try:
                im = ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 - a broken EXIF block is not worth failing for
                pass
            mode = im.mode
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
                a = np.asarray(im)
                if (np.array_equal(a[:, :, 0], a[:, :, 1])
                        and np.array_equal(a[:, :, 0], a[:, :, 2])):
                    a = a[:, :, [0, 3]] if a.shape[2] == 4 else a[:, :, :1]  # gray palette
                if a.shape[2] in (2, 4) and (a[:, :, -1] == 255).all():
                    a = a[:, :, :-1]                                       # opaque
            elif mode == "1":
                a = np.asarray(im.convert("L"))
            elif mode in ("L", "LA", "RGB", "RGBA"):
                a = np.asarray(im)
            elif mode in ("La", "PA"):
                a = np.asarray(im.convert("LA"))
            elif mode == "RGBa":
                a = np.asarray(im.convert("RGBA"))
            elif mode.startswith("I;16"):
                a = np.asarray(im).astype(np.uint16)
            elif mode == "I":   # 32-bit integer: taken as 16-bit data
                a = np.asarray(im).astype(np.int64)
                if a.size and (a.min() < 0 or a.max() > 65535):
                    raise InputError(f"'{path}': 32-bit integer pixel values must lie in "
                                     f"0..65535, found {a.min()}..{a.max()}")
                a = a.astype(np.uint16)
            elif mode == "F":
                a = np.asarray(im).astype(np.float64)
            else:  # CMYK, YCbCr, LAB, HSV, ...
                a = np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        msg = ("is not a recognised image file (expected PNG, JPEG or another format Pillow "
               "reads, or .npy)" if isinstance(e, UnidentifiedImageError) else f"is too large: {e}")
        raise InputError(f"'{path}' {msg}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"cannot decode image '{path}' (truncated or corrupt: {e})") from None
    if a.ndim == 2:
        a = a[:, :, None]
    return _from_numeric(np.ascontiguousarray(a), path), notes


def _read_array(path) -> tuple[np.ndarray, list[str]]:
    """Any supported file → (H, W, C) float64 in [0, 1], C in 1..4 (alpha still attached)."""
    path = _check_input_file(path)
    if path.lower().endswith(".npy"):
        a, notes = _read_npy(path)
    else:
        head = _read_bytes(path, 32)
        is_png16_colour = (head.startswith(_PNG_SIG) and len(head) >= 29 and head[24] == 16
                           and head[25] in (2, 4, 6))
        if is_png16_colour:
            data = _read_bytes(path)
            a16, notes = _decode_png16(data, path)
            if a16 is not None:
                a = a16.astype(np.float64) / 65535.0
            else:  # interlaced: Pillow reads it at 8-bit precision
                a, more = _read_pil(path)
                notes += more
        else:
            if head.startswith(_PNG_SIG):
                _check_png_chunks(path)
            a, notes = _read_pil(path)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"'{path}' is an empty image ({a.shape[0]}x{a.shape[1]} pixels)")
    return a, notes


def read_image(path) -> torch.Tensor:
    """Read an image file as a ``(1, C, H, W)`` float32 tensor in [-1, 1], C = 1 or 3.

    Gray and gray+alpha files give C = 1; everything else (RGB, RGBA, palette, CMYK, …) C = 3.
    An alpha channel is dropped with a :class:`UserWarning`. 16-bit files keep their precision.
    Raises :class:`~dmir.errors.InputError` for missing, unreadable, non-image, empty files and
    for NaN/Inf or out-of-range values (``.npy``, float TIFF).
    """
    a, notes = _read_array(path)
    a = _drop_alpha(a, os.fspath(path), notes)
    for n in notes:
        warnings.warn(n, UserWarning, stacklevel=2)
    x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(torch.float32)
    return (x * 2 - 1).unsqueeze(0)


def load_mask(path) -> torch.Tensor:
    """An inpainting mask as an ``(H, W)`` (or ``(C, H, W)``) float32 tensor of 0/1 (1 = pixel
    kept).

    ``.npy``: any numeric or bool dtype, 2-D (or with one singleton axis), or C×H×W with C = 3
    (one mask per colour channel, as the ``inpainting`` operator takes); values must be 0 or 1.
    Image files (PNG, …): gray value > 0.5 (of the full range) = kept, i.e. white = kept; colour
    masks are averaged over channels. A file with transparency (an alpha channel that is not
    fully opaque) is read from its alpha channel instead: transparent = to fill, opaque = kept
    (how an image editor's eraser marks the area to fill).
    """
    p = _check_input_file(path)
    if p.lower().endswith(".npy"):
        try:
            m = np.load(p, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise InputError(f"mask '{p}' is not a readable .npy array "
                             f"({type(e).__name__})") from None
        if not isinstance(m, np.ndarray) or m.dtype.kind not in "biuf":
            raise InputError(f"mask '{p}' must be a numeric or boolean array")
        if m.ndim == 3 and 1 in m.shape:
            m = m.squeeze(axis=m.shape.index(1))
        if not (m.ndim == 2 or (m.ndim == 3 and m.shape[0] == 3)) or m.size == 0:
            raise InputError(f"mask '{p}' must be a non-empty 2-D (H×W) or 3×H×W array, got "
                             f"shape {m.shape}")
        m = m.astype(np.float64)
        if not np.isfinite(m).all():
            raise InputError(f"mask '{p}' contains NaN or Inf values")
        if not np.isin(m, (0.0, 1.0)).all():
            bad = m[~np.isin(m, (0.0, 1.0))].flat[0]
            raise InputError(f"mask '{p}' must contain only 0 (missing) and 1 (kept), found "
                             f"{bad:g}")
    else:
        a, _ = _read_array(p)
        if a.shape[2] in (2, 4) and (a[:, :, -1] < 1.0).any():
            m = (a[:, :, -1] > 0.5).astype(np.float64)          # transparent = to fill
        else:
            if a.shape[2] in (2, 4):
                a = a[:, :, :-1]
            m = (a.mean(axis=2) > 0.5).astype(np.float64)
    return torch.from_numpy(np.ascontiguousarray(m)).to(torch.float32)


# ----------------------------------------------------------------------------- writing
def check_output_path(path) -> str:
    """Validate an output path before work starts: ``.png``, existing writable folder."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise OutputError(f"output '{path}' is a directory; give a file name ending in .png")
    if not path.lower().endswith(".png"):
        raise OutputError(f"output '{path}' must have the extension .png (PNG is the only "
                          f"output format)")
    # a symbolic link is written through: its target's folder is the one written to
    folder = os.path.dirname(os.path.realpath(path) if os.path.islink(path)
                             else os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"cannot write '{path}': folder '{folder}' does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write '{path}': folder '{folder}' is not writable")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputError(f"cannot write '{path}': the file exists and is read-only")
    return path


def _to_hwc(x, bits: int) -> np.ndarray:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ShapeError(f"write_image writes one image; got a batch of {x.shape[0]}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ShapeError(f"write_image needs (1, C, H, W) or (C, H, W) with C = 1 or 3, got "
                         f"{tuple(x.shape)}")
    if min(x.shape[1:]) < 1:
        raise ShapeError(f"cannot write an empty image of shape {tuple(x.shape)}")
    x = x.detach().to("cpu", torch.float64)
    if not torch.isfinite(x).all():
        raise InputError("the image to write contains NaN or Inf values")
    u = ((x.clamp(-1, 1) + 1) / 2).numpy().transpose(1, 2, 0)
    peak = 255 if bits == 8 else 65535
    return np.rint(u * peak).astype(np.uint8 if bits == 8 else np.uint16)


def write_image(path, x, bits: int = 8) -> None:
    """Write ``x`` ((1, C, H, W) or (C, H, W), C = 1 or 3, model domain [-1, 1], clamped) as an
    8- or 16-bit PNG, atomically: nothing is left at ``path`` (or beside it) if anything fails."""
    if bits not in (8, 16):
        raise InputError(f"bits must be 8 or 16, got {bits!r}")
    path = check_output_path(path)
    a = _to_hwc(x, bits)
    if bits == 8:
        import io as _io

        from PIL import Image

        buf = _io.BytesIO()
        Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(buf, format="PNG")
        data = buf.getvalue()
    else:
        data = _encode_png(a)
    atomic_write(path, data)


from .log import isatty  # noqa: E402,F401 - one definition (dmir.log), public here too


def _temp_prefix(target: str, folder: str) -> str:
    """``.NAME.`` for the temporary file next to ``target``, NAME cut (at a character
    boundary) so that the temporary name — prefix, mkstemp's 8 random characters and ``.tmp``
    — stays within the file system's name limit whenever ``target``'s own name does."""
    try:
        name_max = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    room = max(1, name_max - 2 - 8 - 4)          # "." + NAME + "." + 8 random + ".tmp"
    name = os.fsencode(os.path.basename(target))
    if len(name) > room:
        name = name[:room]
        while name and (name[-1] & 0xC0) == 0x80:            # a cut UTF-8 continuation
            name = name[:-1]
        if name and name[-1] >= 0xC0:                         # a lead byte left alone
            name = name[:-1]
    return "." + os.fsdecode(name) + "."


def atomic_write(path, data) -> None:
    """Write ``data`` (bytes or str, UTF-8) to ``path`` atomically: a temp file in the same
    folder, fsync, then ``os.replace``; nothing is left behind on failure (:class:`OutputError`).

    Replacing an existing file keeps its permission bits (a 0600 file stays 0600); a new file
    gets the umask's default. A ``path`` that is a symbolic link is written through: the link's
    final target is replaced (atomically, in the target's folder) and the link itself is kept.
    """
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    target = os.path.realpath(path) if os.path.islink(path) else path
    folder = os.path.dirname(os.path.abspath(target))
    try:
        mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target, folder), suffix=".tmp",
                                   dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise OutputError(f"cannot write '{path}': {e.strerror or e}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def same_file(a, b) -> bool:
    """Whether paths ``a`` and ``b`` name the same existing file (through symbolic or hard
    links too); False when either does not exist."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_not_input(output, *inputs) -> None:
    """Refuse an output path that is one of the input files (also through links): writing it
    would destroy the input (:class:`OutputError`)."""
    for inp in inputs:
        if inp is not None and same_file(output, inp):
            raise OutputError(f"output '{os.fspath(output)}' is the input file "
                              f"'{os.fspath(inp)}'; writing it would replace the input: choose "
                              f"another output name")


# ----------------------------------------------------------------------------- a tiny PNG codec
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (struct.pack(">I", len(body)) + kind + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))


def _encode_png(a: np.ndarray) -> bytes:
    """(H, W, C) uint8/uint16, C in {1, 3} → PNG bytes (Sub filter on every row)."""
    H, W, C = a.shape
    depth = 16 if a.dtype == np.uint16 else 8
    raw = np.ascontiguousarray(a.astype(">u2" if depth == 16 else np.uint8))
    raw = raw.view(np.uint8).reshape(H, W * C * depth // 8)
    bpp = C * depth // 8
    filt = raw.copy()
    filt[:, bpp:] = raw[:, bpp:] - raw[:, :-bpp]          # Sub filter, mod 256 by uint8
    rows = np.concatenate([np.ones((H, 1), np.uint8), filt], axis=1)
    ihdr = struct.pack(">IIBBBBB", W, H, depth, 0 if C == 1 else 2, 0, 0, 0)
    return (_PNG_SIG + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))


def _unfilter(raw: np.ndarray, ftype: np.ndarray, bpp: int) -> np.ndarray:
    """Undo the PNG row filters. raw: (H, W, bpp) filtered bytes, ftype: (H,) filter types.

    Each byte depends on its left, upper and upper-left neighbours only, so all pixels on an
    anti-diagonal r + x = d are independent: H + W - 1 vectorised sweeps. The result is kept
    as bytes (one byte per output byte, plus a zero border); only one diagonal at a time is
    widened to int16 for the predictors.
    """
    H, W, _ = raw.shape
    out = np.zeros((H + 1, W + 1, bpp), np.uint8)       # zero row/column = "outside the image"
    for d in range(H + W - 1):
        r = np.arange(max(0, d - W + 1), min(H - 1, d) + 1)
        x = d - r
        a = out[r + 1, x].astype(np.int16)          # left
        b = out[r, x + 1].astype(np.int16)          # up
        c = out[r, x].astype(np.int16)              # up-left
        f = ftype[r][:, None]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) >> 1, paeth], 0)
        out[r + 1, x + 1] = (raw[r, x] + pred) & 0xFF
    return out[1:, 1:]


def _check_png_chunks(path: str) -> None:
    """Walk a PNG's chunk headers (not their data) before Pillow reads it: a chunk that claims
    more bytes than the file holds is a corrupt file, refused here rather than handed to a
    reader that would reserve the claimed size (up to 4 GB) first."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            pos = 8
            while pos + 8 <= size:
                f.seek(pos)
                n, kind = struct.unpack(">I4s", f.read(8))
                if n > 2 ** 31 - 1 or pos + 12 + n > size:
                    raise InputError(f"'{path}' is a truncated or corrupt PNG file (its "
                                     f"{kind.decode('latin-1')!r} chunk claims {n:,} bytes, the "
                                     f"file has {size - pos - 12:,} left)")
                if kind == b"IEND":
                    return
                pos += 12 + n
    except OSError as e:
        raise InputError(f"cannot read '{path}': {e.strerror or e}") from None


def _pixel_limit(W: int, H: int, path: str) -> None:
    """Pillow's decompression-bomb rule, applied before anything is decompressed: more than
    ``2 * Image.MAX_IMAGE_PIXELS`` pixels is refused, more than ``MAX_IMAGE_PIXELS`` warns."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit is None:
        return
    if W * H > 2 * limit:
        raise InputError(f"'{path}' is too large: {W}x{H} = {W * H:,} pixels is more than the "
                         f"decompression-bomb limit of {2 * limit:,} pixels "
                         f"(2 x PIL.Image.MAX_IMAGE_PIXELS)")
    if W * H > limit:
        warnings.warn(f"'{path}' has {W * H:,} pixels, more than PIL.Image.MAX_IMAGE_PIXELS "
                      f"({limit:,}): could be a decompression bomb", Image.DecompressionBombWarning,
                      stacklevel=4)


def _decode_png16(data: bytes, path: str):
    """16-bit PNG bytes → ((H, W, C) uint16, notes), or (None, notes) if interlaced.

    The image size is checked against the pixel limit (:func:`_pixel_limit`) before the data
    is decompressed, and decompression stops at the H × (W × bpp + 1) bytes the header
    announces, so a small file cannot expand into gigabytes."""
    bad = InputError(f"'{path}' is a corrupt PNG file")
    pos, idat, hdr = 8, [], None
    while True:
        if pos + 8 > len(data):
            raise bad
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        crc = data[pos + 8 + n:pos + 12 + n]
        if len(body) != n or len(crc) != 4 or \
                struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise bad
        pos += 12 + n
        if kind == b"IHDR":
            if hdr is not None or len(body) != 13:
                raise bad
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if hdr is None or not idat:
        raise bad
    W, H, depth, ctype, _, _, interlace = hdr
    if depth != 16 or ctype not in _CHANNELS or W >= 2 ** 31 or H >= 2 ** 31:
        raise bad
    if W == 0 or H == 0:
        raise InputError(f"'{path}' is an empty image ({H}x{W} pixels)")
    _pixel_limit(W, H, path)
    if interlace:
        return None, [f"'{path}' is an interlaced 16-bit PNG; it was read at 8-bit precision"]
    C = _CHANNELS[ctype]
    bpp = 2 * C
    stride = W * bpp + 1
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), H * stride)   # at most that
    except zlib.error:
        raise bad from None
    if len(raw) < H * stride:
        raise InputError(f"'{path}' is a truncated PNG file")
    rows = np.frombuffer(raw, np.uint8, count=H * stride).reshape(H, stride)
    ftype = rows[:, 0].astype(np.int32)
    if (ftype > 4).any():
        raise bad
    px = _unfilter(rows[:, 1:].reshape(H, W, bpp), ftype, bpp)
    a = px.reshape(H, W * bpp).view(">u2").astype(np.uint16).reshape(H, W, C)
    return a, []
