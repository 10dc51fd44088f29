"""Evaluation image sets: folders, DDNM list files, centre-crop + resize to the model size.

A dataset is an ordered list of :class:`ImageItem` (a stable id, a path, a position, an optional
class label) plus one preprocessing rule that turns every file into a ``(1, C, size, size)``
float32 tensor in the model domain [-1, 1].

* **Folders** are searched recursively (symbolic links followed, each folder entered once, so
  a link loop lists nothing twice); files with an image extension (:data:`IMAGE_EXTENSIONS`,
  case-insensitive) are kept, hidden files and folders (``.name``) are skipped, and the order is
  the sorted list of relative POSIX paths — the same on every machine and file system.
* **DDNM list files** (``imagenet_val_1k.txt``): one ``filename label`` per line, the file name
  relative to the dataset folder; blank lines and ``#`` comments are skipped; a line with only a
  file name has no label. The order is the file's order (the published protocol's order).
* **Ids**: the relative path (folder) or the file name as written in the list (bytes of a name
  that are not valid UTF-8 written ``\\xNN``: :func:`image_id`). Ids — not
  positions — seed the degradations in ``dmir bench`` and key its resumable results, so a
  result never depends on how a run was ordered, limited or split across processes.

Preprocessing (``crop=``), as in the reference loaders (checked against their code):

* ``"center"`` — the DDNM / EquS ImageNet-1k loader (``datasets/imagenet_subset.py``):
  ``CenterCropLongEdge`` (a centred square of side min(H, W); offsets rounded as torchvision's
  ``center_crop``: ``round((H − s) / 2)``), then ``transforms.Resize(size)``, which on PIL images
  is Pillow's **bilinear** resize (with Pillow's built-in antialiasing). The default.
* ``"adm"`` — guided-diffusion's ``center_crop_arr`` (DDNM's loader for the full ImageNet
  validation set and out-of-distribution folders): halve with a BOX filter while the short side
  is ≥ 2·size, resize the short side to ``size`` with **bicubic**, then centre-crop
  (offset ``(H − size) // 2``).
* ``"resize"`` — the DDNM CelebA-HQ loader: ``Resize([size, size])`` (bilinear, no crop; the
  aspect ratio is not kept).
* ``"none"`` — no change: every image must already be size × size.

8-bit images (every value a multiple of 1/255) are resampled as 8-bit RGB/L Pillow images, so the
pixels equal the reference loaders' bit for bit; 16-bit and float images are resampled per
channel in float32 (Pillow mode ``F``) without rounding. Colour handling follows the reference's
``Image.convert("RGB")``: gray files are repeated to 3 channels, an alpha channel is dropped
(``channels=1`` converts RGB to luma with Pillow's ITU-R 601-2 weights instead). Files are read
by :func:`dmir.io` (so 16-bit PNG, TIFF, ``.npy`` work; JPEG EXIF orientation is applied — the
reference loaders ignore it, which only matters for photos that carry a rotation tag).

Masks (:meth:`ImageDataset.mask`): an inpainting mask file (``.npy`` of 0/1 or an image, white =
kept, read by :func:`dmir.io.load_mask`), or a folder holding one mask per image under the
image's relative path (any image extension or ``.npy``). A mask goes through the same crop and
resize as its image (in float) and is thresholded at 0.5, so a 256 × 256 protocol mask also
applies, scaled, to smaller test images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import io as dio
from ..errors import InputError, ParameterError, ShapeError
from ..types import CropMode

__all__ = ["IMAGE_EXTENSIONS", "CROP_MODES", "ImageItem", "ImageDataset", "find_images",
           "image_id", "read_list", "preprocess", "resource", "shard"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                    ".pnm", ".gif")
CROP_MODES = ("center", "adm", "resize", "none")
_MASK_EXTENSIONS = IMAGE_EXTENSIONS + (".npy",)


def resource(name: str) -> str:
    """Path of a data file shipped with dmir (``dmir/data/NAME``), e.g.
    ``resource("ddnm_inpainting_mask.npy")`` — the DDNM/EquS inpainting protocol mask."""
    folder = Path(__file__).resolve().parent
    p = (folder / name).resolve()
    if folder not in p.parents or not p.is_file():
        shipped = sorted(f.name for f in folder.iterdir() if f.suffix in (".npy", ".npz"))
        raise InputError(f"dmir ships no data file {name!r}; available: {', '.join(shipped)}")
    return str(p)


@dataclass(frozen=True)
class ImageItem:
    """One image of a dataset: ``id`` (stable: relative POSIX path or the list's file name),
    ``path`` (absolute), ``index`` (position in the dataset's order), ``label`` (class or None)."""

    id: str
    path: str
    index: int
    label: int | None = None


def _hidden(rel_parts) -> bool:
    return any(p.startswith(".") for p in rel_parts)


def find_images(root, extensions=IMAGE_EXTENSIONS) -> list[str]:
    """Relative POSIX paths of the image files under ``root`` (recursive, sorted; hidden files
    and folders skipped).

    Symbolic links are followed, but every folder is entered once (by device and inode), so a
    link back up the tree (``sub/loop -> ..``) neither repeats images nor recurses. The paths
    are the names on disk: a name that is not valid UTF-8 keeps its undecodable bytes as
    surrogate escapes (Python's file-name convention), so it opens; :func:`image_id` turns it
    into printable text."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise InputError(f"dataset folder '{root}' does not exist or is not a folder")
    exts = tuple(e.lower() for e in extensions)
    out = []
    seen = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:      # reached again through a link: once only
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root)
        for f in filenames:
            if f.startswith(".") or not f.lower().endswith(exts):
                continue
            rel = f if rel_dir == "." else os.path.join(rel_dir, f)
            out.append(Path(rel).as_posix())
    return sorted(out)


def image_id(rel: str) -> str:
    """The id of an image from its relative path, as text that can be printed, hashed and
    stored as JSON: bytes of the file name that are not valid UTF-8 (kept by Python as
    surrogate escapes) are written ``\\xNN`` (``caf\\xe9.png``); other names are unchanged."""
    try:
        rel.encode("utf-8")
        return rel
    except UnicodeEncodeError:
        pass
    try:
        return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:      # lone surrogates that are not escaped bytes
        return rel.encode("utf-8", "backslashreplace").decode("utf-8")


def read_list(list_file) -> list[tuple[str, int | None]]:
    """Parse a DDNM list file: ``filename label`` per line → [(filename, label or None)]."""
    list_file = os.fspath(list_file)
    try:
        # surrogateescape: a listed name that is not valid UTF-8 still names its file
        with open(list_file, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"cannot read list file '{list_file}': {e.strerror or e}") from None
    out = []
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split()
        if len(parts) > 2:
            raise InputError(f"list file '{list_file}', line {n}: expected 'filename label' "
                             f"(2 fields; file names cannot contain spaces), got {s!r}")
        label = None
        if len(parts) == 2:
            try:
                label = int(parts[1])
            except ValueError:
                raise InputError(f"list file '{list_file}', line {n}: the label must be an "
                                 f"integer, got {parts[1]!r}") from None
        out.append((parts[0], label))
    return out


# ----------------------------------------------------------------------------- preprocessing
def _is_8bit(a: np.ndarray) -> bool:
    v = a * 255.0
    return bool(np.all(np.abs(v - np.rint(v)) < 1e-6))


class _Planes:
    """An (H, W, C) image as Pillow images: one 8-bit L/RGB image, or C float ``F`` planes."""

    def __init__(self, a: np.ndarray, exact8: bool):
        self.exact8 = exact8
        if exact8:
            u = np.rint(a * 255).astype(np.uint8)
            self.ims = [Image.fromarray(u[:, :, 0] if u.shape[2] == 1 else u)]
        else:
            self.ims = [Image.fromarray(a[:, :, c].astype(np.float32), mode="F")
                        for c in range(a.shape[2])]

    @property
    def size(self):            # (W, H), as Pillow
        return self.ims[0].size

    def resize(self, wh, resample):
        if tuple(wh) != self.size:
            self.ims = [im.resize(tuple(wh), resample=resample) for im in self.ims]

    def crop(self, left, top, w, h):
        if (left, top, w, h) != (0, 0) + self.size:
            self.ims = [im.crop((left, top, left + w, top + h)) for im in self.ims]

    def array(self) -> np.ndarray:
        if self.exact8:
            a = np.asarray(self.ims[0], dtype=np.float64) / 255.0
            return a[:, :, None] if a.ndim == 2 else a
        return np.stack([np.asarray(im, dtype=np.float64) for im in self.ims], axis=2)


def preprocess(a: np.ndarray, size: int, crop: CropMode = "center", exact8: bool | None = None
               ) -> np.ndarray:
    """(H, W, C) float in [0, 1] → (size, size, C) by the rule ``crop`` (module doc).

    ``exact8=None`` detects 8-bit data (resampled as 8-bit Pillow images, bit-exact to the
    reference loaders); ``False`` resamples in float32 without rounding.
    """
    if crop not in CROP_MODES:
        raise ParameterError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
    size = int(size)
    if size < 1:
        raise ParameterError(f"image size must be a positive integer, got {size}")
    H, W = a.shape[:2]
    if crop == "none":
        if (H, W) != (size, size):
            raise ShapeError(f"image is {H}x{W} but crop='none' needs {size}x{size} images "
                             f"(use crop='center', 'adm' or 'resize')")
        return a
    if exact8 is None:
        exact8 = _is_8bit(a)
    p = _Planes(np.clip(a, 0.0, 1.0), exact8)
    if crop == "center":            # DDNM/EquS: CenterCropLongEdge + Resize(size) (bilinear)
        s = min(H, W)
        p.crop(int(round((W - s) / 2.0)), int(round((H - s) / 2.0)), s, s)
        p.resize((size, size), Image.Resampling.BILINEAR)
    elif crop == "resize":          # DDNM CelebA-HQ: Resize([size, size])
        p.resize((size, size), Image.Resampling.BILINEAR)
    else:                           # "adm": guided-diffusion center_crop_arr
        while min(p.size) >= 2 * size:
            p.resize(tuple(x // 2 for x in p.size), Image.Resampling.BOX)
        scale = size / min(p.size)
        p.resize(tuple(round(x * scale) for x in p.size), Image.Resampling.BICUBIC)
        w, h = p.size
        p.crop((w - size) // 2, (h - size) // 2, size, size)
    return p.array()


def _channels(a: np.ndarray, channels: int) -> np.ndarray:
    if a.shape[2] in (2, 4):       # alpha dropped, as Image.convert("RGB") does
        a = a[:, :, :-1]
    if channels == 3 and a.shape[2] == 1:
        return np.repeat(a, 3, axis=2)
    if channels == 1 and a.shape[2] == 3:   # Pillow's convert("L"): ITU-R 601-2 luma
        return (a @ np.array([0.299, 0.587, 0.114]))[:, :, None]
    return a


def shard(items: list, index: int, count: int) -> list:
    """The items of shard ``index`` of ``count``: those whose dataset position ≡ index mod count
    (stable: it depends only on the dataset order, not on what was already done)."""
    if not (0 <= index < count):
        raise ParameterError(f"shard index must be in 0..{count - 1}, got {index}")
    return [it for it in items if it.index % count == index]


# ----------------------------------------------------------------------------- datasets
class ImageDataset(torch.utils.data.Dataset):
    """Images of a folder (recursive, sorted) or of a DDNM list file, preprocessed to
    ``(1, channels, size, size)`` float32 tensors in [-1, 1].

    >>> ds = ImageDataset("imagenet/val", size=256, list_file="imagenet_val_1k.txt")
    >>> ds[0].shape, ds.items[0].id

    A :class:`torch.utils.data.Dataset`: it holds only file names, so it pickles to
    ``DataLoader`` workers. Each item is one image with its batch dimension; batch them with
    :meth:`collate` (concatenation along dim 0):

    >>> loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=4,
    ...                                      collate_fn=ImageDataset.collate)
    >>> next(iter(loader)).shape          # (8, 3, 256, 256)
    """

    def __init__(self, root, size: int = 256, crop: CropMode = "center", list_file=None,
                 limit: int | None = None, channels: int = 3, name: str | None = None):
        if crop not in CROP_MODES:
            raise ParameterError(f"crop must be one of {', '.join(CROP_MODES)}, got {crop!r}")
        if channels not in (1, 3):
            raise ParameterError(f"channels must be 1 or 3, got {channels}")
        if int(size) < 1:
            raise ParameterError(f"image size must be a positive integer, got {size}")
        if limit is not None and int(limit) < 1:
            raise ParameterError(f"limit must be a positive integer, got {limit}")
        self.root = os.path.abspath(os.fspath(root))
        self.size, self.crop, self.channels = int(size), crop, int(channels)
        self.name = name or os.path.basename(self.root.rstrip(os.sep)) or "dataset"
        self.list_file = os.path.abspath(os.fspath(list_file)) if list_file is not None else None
        if not os.path.isdir(self.root):
            raise InputError(f"dataset folder '{root}' does not exist or is not a folder")
        if list_file is not None:
            entries = read_list(list_file)
            missing = [f for f, _ in entries if not os.path.isfile(os.path.join(self.root, f))]
            if missing:
                raise InputError(f"{len(missing)} file(s) of list '{list_file}' are not in "
                                 f"'{root}', e.g. {', '.join(map(image_id, missing[:3]))}")
        else:
            entries = [(f, None) for f in find_images(self.root)]
        if limit is not None:
            entries = entries[: int(limit)]
        if not entries:
            raise InputError(f"dataset '{self.name}': no images in '{root}'"
                             + (f" listed in '{list_file}'" if list_file else
                                f" (extensions: {' '.join(IMAGE_EXTENSIONS)})"))
        seen = set()
        for f, _ in entries:
            if image_id(f) in seen:
                raise InputError(f"dataset '{self.name}': image {image_id(f)!r} is listed "
                                 f"twice")
            seen.add(image_id(f))
        self.items = [ImageItem(image_id(f), os.path.join(self.root, f), i, lab)
                      for i, (f, lab) in enumerate(entries)]

    @classmethod
    def from_spec(cls, spec, root=None, list_file=None, limit=None):
        """From a :class:`dmir.bench.spec.DatasetSpec` (``root``/``list_file``/``limit``
        override its fields)."""
        path = root if root is not None else spec.path
        if path is None:
            raise InputError(f"dataset '{spec.name}' has no folder: give it with --data "
                             f"{spec.name}=PATH")
        lf = list_file if list_file is not None else spec.list_file
        if lf is not None and not os.path.isabs(lf) and not os.path.exists(lf):
            lf = os.path.join(os.fspath(path), lf)      # a preset's list relative to the folder
        lim = limit if limit is not None else spec.limit
        if spec.limit is not None and limit is not None:
            lim = min(spec.limit, limit)
        return cls(path, size=spec.size, crop=getattr(spec, "crop", "center"), list_file=lf,
                   limit=lim, channels=getattr(spec, "channels", 3), name=spec.name)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.load(self.items[i])

    def __iter__(self):
        return (self.load(it) for it in self.items)

    @staticmethod
    def collate(batch: list[torch.Tensor]) -> torch.Tensor:
        """``DataLoader`` ``collate_fn``: the (1, C, H, W) items → one (B, C, H, W) batch."""
        return torch.cat(list(batch), 0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def load(self, item: ImageItem) -> torch.Tensor:
        """``item`` → (1, C, size, size) float32 in the model domain [-1, 1]."""
        a, _ = dio._read_array(item.path)
        a = preprocess(_channels(a, self.channels), self.size, self.crop)
        x = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).to(torch.float32)
        return (x * 2 - 1).unsqueeze(0)

    def mask(self, source, item: ImageItem | None = None) -> torch.Tensor:
        """The (size, size) 0/1 mask for ``item`` from ``source``: a mask file (the same for
        every image) or a folder with one mask per image under the image's relative path."""
        src = os.fspath(source)
        if os.path.isdir(src):
            if item is None:
                raise ParameterError("a mask folder needs the image the mask belongs to")
            stem = os.path.splitext(os.path.relpath(item.path, self.root))[0]   # name on disk
            cands = [os.path.join(src, stem + e) for e in _MASK_EXTENSIONS]
            cands += [os.path.join(src, stem + e.upper()) for e in _MASK_EXTENSIONS]
            found = next((c for c in cands if os.path.isfile(c)), None)
            if found is None:
                raise InputError(f"mask folder '{src}' has no mask for image '{item.id}' "
                                 f"(looked for {stem}.png/.npy/...)")
            src = found
        m = dio.load_mask(src).numpy().astype(np.float64)
        if m.shape != (self.size, self.size):
            m = preprocess(m[:, :, None], self.size, self.crop, exact8=False)[:, :, 0]
            m = (m > 0.5).astype(np.float64)
        return torch.from_numpy(m).to(torch.float32)
