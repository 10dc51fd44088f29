"""The named pretrained checkpoints of the papers, where to get them, and where they live locally.

Each :class:`Entry` records the checkpoint's format and named config, its official download
URL(s), and its size and checksum where known. Checksums not recorded here are computed at
first load, logged once (logger ``dmir.checkpoints.registry``, INFO), and remembered in
``<home>/checksums.json``.

Local copies are looked up in this order: an explicit path, ``$DMIR_HOME``, then
``$XDG_CACHE_HOME/dmir``, then ``~/.cache/dmir`` (:mod:`dmir.cache`). :func:`fetch` downloads with a progress bar, resumes an interrupted download
(HTTP Range on ``<file>.part``), verifies what it received (the announced length, no web page,
recorded or server-published checksums) and renames into place atomically, and remembers the
sha256 and size of what it downloaded; an existing copy is verified before it is accepted.
With no network it fails at once with a clear message.
"""
from __future__ import annotations

import base64
import binascii
import http.client
import json
import os
import re
import socket
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from ..cache import file_digest
from ..errors import DmirError, UnknownNameError
from ..log import get_logger


class ModelNotFoundError(DmirError, FileNotFoundError):
    """A named model without a local copy, or a path that does not exist."""


log = get_logger(__name__)


class FetchError(DmirError):
    """A download that could not be done (no network, HTTP error, checksum mismatch)."""


@dataclass(frozen=True)
class File:
    """One file of a model: its local name, download URL(s) and known size/checksums."""
    name: str
    urls: tuple = ()
    size: int | None = None
    sha256: str | None = None
    md5: str | None = None          # where only the publisher's MD5 is known (DDIM repo)
    manual: str | None = None       # instructions when there is no direct download


@dataclass(frozen=True)
class Entry:
    name: str
    format: str                     # adm | ddpm | diffusers | cm
    config: str | None              # a named config of that format (None: inferred/folder)
    files: tuple
    description: str
    used_by: str = ""
    options: dict = field(default_factory=dict)

    @property
    def main_file(self) -> File:
        return self.files[0]

    @property
    def is_folder(self) -> bool:
        return self.format == "diffusers"


_OPENAI = "https://openaipublic.blob.core.windows.net/diffusion/jul-2021/"
_HEIBOX = "https://heibox.uni-heidelberg.de/f/{}/?dl=1"
_SDEDIT = "https://image-editing-test-12345.s3-us-west-2.amazonaws.com/checkpoints/"
_HF = "https://huggingface.co/google/ddpm-ema-celebahq-256/resolve/main/"

ENTRIES: dict[str, Entry] = {e.name: e for e in [
    Entry("adm-imagenet256-uncond", "adm", "adm-imagenet256-uncond",
          (File("256x256_diffusion_uncond.pt", (_OPENAI + "256x256_diffusion_uncond.pt",)),),
          "OpenAI guided-diffusion, ImageNet 256×256, unconditional (552.8 M params)",
          "EquS, DeqIR, DCDP, DDNM, DDRM"),
    Entry("adm-imagenet256-cond", "adm", "adm-imagenet256-cond",
          (File("256x256_diffusion.pt", (_OPENAI + "256x256_diffusion.pt",)),),
          "OpenAI guided-diffusion, ImageNet 256×256, class-conditional (needs class_labels)",
          "DDNM, DDRM (class-conditional runs)"),
    Entry("adm-lsun-bedroom256", "adm", "adm-lsun-bedroom256",
          (File("lsun_bedroom.pt", (_OPENAI + "lsun_bedroom.pt",)),),
          "OpenAI guided-diffusion, LSUN bedroom 256×256", "DDRM, ΠGDM"),
    Entry("adm-ffhq256", "adm", "adm-ffhq256",
          (File("ffhq_10m.pt", (), manual=(
              "the DPS authors distribute ffhq_10m.pt through Google Drive only: "
              "https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh — "
              "download it by hand and place it in the dmir home folder")),),
          "DPS FFHQ 256×256 ADM (ffhq_10m.pt)", "DPS, DiffPIR, DCDP"),
    Entry("ddpm-celebahq256", "ddpm", "ddpm-celebahq256",
          (File("celeba_hq.ckpt", (_SDEDIT + "celeba_hq.ckpt",), manual=(
              "if the SDEdit S3 link is refused, the DDNM authors mirror celeba_hq.ckpt at "
              "https://drive.google.com/file/d/1wSoA5fm_d6JBZk4RZ1SzWLMgev4WqH21 — download "
              "it by hand and place it in the dmir home folder")),),
          "SDEdit DDPM, CelebA-HQ 256×256 (113.7 M params)", "EquS, DeqIR, DDNM"),
    Entry("ddpm-cifar10", "ddpm", "ddpm-cifar10",
          (File("ema_cifar10.ckpt", (_HEIBOX.format("2e4f01e2d9ee49bab1d5"),),
                md5="1fa350b952534ae442b1d5235cce5cd3"),),
          "DDPM CIFAR-10 32×32, EMA weights (pytorch_diffusion conversion, DDIM repo)", "DDIM"),
    Entry("ddpm-lsun-bedroom256", "ddpm", "ddpm-lsun-bedroom256",
          (File("ema_lsun_bedroom.ckpt", (_HEIBOX.format("b95206528f384185889b"),),
                md5="1921fa46b66a3665e450e42f36c2720f"),),
          "DDPM LSUN bedroom 256×256, EMA weights (DDIM repo)", "DDIM, DDRM"),
    Entry("ddpm-lsun-church256", "ddpm", "ddpm-lsun-church256",
          (File("ema_lsun_church.ckpt", (_HEIBOX.format("44ccb50ef3c6436db52e"),),
                md5="fdc68a23938c2397caba4a260bc2445f"),),
          "DDPM LSUN church 256×256, EMA weights (DDIM repo)", "DDIM, DDRM"),
    Entry("ddpm-lsun-cat256", "ddpm", "ddpm-lsun-cat256",
          (File("ema_lsun_cat.ckpt", (_HEIBOX.format("0701aac3aa69457bbe34"),),
                md5="646f23f4821f2459b8bafc57fd824558"),),
          "DDPM LSUN cat 256×256, EMA weights (DDIM repo)", "DDIM"),
    Entry("diffusers-ddpm-ema-celebahq256", "diffusers", None,
          (File("ddpm-ema-celebahq-256/diffusion_pytorch_model.bin",
                (_HF + "diffusion_pytorch_model.bin",)),
           File("ddpm-ema-celebahq-256/config.json", (_HF + "config.json",)),
           File("ddpm-ema-celebahq-256/scheduler_config.json", (_HF + "scheduler_config.json",))),
          "google/ddpm-ema-celebahq-256 (diffusers UNet2DModel folder; pip install dmir[diffusers])",
          "diffusers"),
]}

#: OpenAI consistency_models checkpoints (download links of github.com/openai/consistency_models
#: README; format "cm", see dmir.models.nets.consistency). CD = consistency distillation (from the
#: EDM teacher, LPIPS or l2 metric), CT = consistency training; the edm-* files are the EDM
#: teachers (denoisers, no boundary condition). ImageNet-64 models are class-conditional.
_CM = "https://openaipublic.blob.core.windows.net/consistency/"
_CM_MODELS = [  # (name, file, config, description)
    ("cd-lsun-bedroom256-lpips", "cd_bedroom256_lpips.pt", "cm-lsun256",
     "consistency model (CD, LPIPS), LSUN bedroom 256×256 (526.3 M params)"),
    ("cd-lsun-bedroom256-l2", "cd_bedroom256_l2.pt", "cm-lsun256",
     "consistency model (CD, l2), LSUN bedroom 256×256"),
    ("ct-lsun-bedroom256", "ct_bedroom256.pt", "cm-lsun256",
     "consistency model (CT), LSUN bedroom 256×256"),
    ("cd-lsun-cat256-lpips", "cd_cat256_lpips.pt", "cm-lsun256",
     "consistency model (CD, LPIPS), LSUN cat 256×256"),
    ("cd-lsun-cat256-l2", "cd_cat256_l2.pt", "cm-lsun256",
     "consistency model (CD, l2), LSUN cat 256×256"),
    ("ct-lsun-cat256", "ct_cat256.pt", "cm-lsun256",
     "consistency model (CT), LSUN cat 256×256"),
    ("cd-imagenet64-lpips", "cd_imagenet64_lpips.pt", "cm-imagenet64",
     "consistency model (CD, LPIPS), ImageNet 64×64, class-conditional (needs class_labels)"),
    ("cd-imagenet64-l2", "cd_imagenet64_l2.pt", "cm-imagenet64",
     "consistency model (CD, l2), ImageNet 64×64, class-conditional (needs class_labels)"),
    ("ct-imagenet64", "ct_imagenet64.pt", "cm-imagenet64",
     "consistency model (CT), ImageNet 64×64, class-conditional (needs class_labels)"),
    ("edm-lsun-bedroom256", "edm_bedroom256_ema.pt", "edm-lsun256",
     "EDM teacher of the consistency models, LSUN bedroom 256×256 (denoiser D(x, σ))"),
    ("edm-lsun-cat256", "edm_cat256_ema.pt", "edm-lsun256",
     "EDM teacher of the consistency models, LSUN cat 256×256 (denoiser D(x, σ))"),
    ("edm-imagenet64", "edm_imagenet64_ema.pt", "edm-imagenet64",
     "EDM teacher of the consistency models, ImageNet 64×64, class-conditional"),
]
ENTRIES.update({name: Entry(name, "cm", config, (File(file, (_CM + file,)),), what,
                            "DCDP (consistency purification)")
                for name, file, config, what in _CM_MODELS})

#: CompVis latent-diffusion checkpoints (links of the latent-diffusion README and of the
#: DCDP-LDM README; format "ldm", see dmir.models.nets.ldm). The .zip downloads hold model.ckpt
#: (+ config.yaml): unpack them by hand.
_LDM = "https://ommer-lab.com/files/latent-diffusion/"


def _unzip_note(zip_name, local):
    return (f"download {_LDM}{zip_name}, unzip it and place its model.ckpt in the dmir home "
            f"folder as {local}")


ENTRIES.update({e.name: e for e in [
    Entry("ldm-ffhq256-vq4", "ldm", "ldm-ffhq256-vq4",
          (File("ldm-ffhq256-vq4.ckpt", (), manual=_unzip_note("ffhq.zip",
                                                                "ldm-ffhq256-vq4.ckpt")),),
          "latent diffusion LDM-VQ-4, FFHQ 256×256, unconditional (274.1 M UNet + 55.3 M VQ-f4)",
          "DCDP (latent)"),
    Entry("ldm-cin256-v2", "ldm", "ldm-cin256-v2",
          (File("ldm-cin256-v2.ckpt", (_LDM + "nitro/cin/model.ckpt",)),),
          "latent diffusion LDM-4 cin256-v2, ImageNet 256×256, class-conditional by "
          "cross-attention (400.9 M UNet + 55.3 M VQ-f4; class 1000 = unconditional)",
          "DCDP (latent, ImageNet)"),
    Entry("vq-f4", "autoencoder", "vq-f4",
          (File("vq-f4.ckpt", (), manual=_unzip_note("vq-f4.zip", "vq-f4.ckpt")),),
          "first-stage VQ-f4 autoencoder (Z = 8192, d = 3; 55.3 M) of the LDM-VQ-4 models; "
          "load with dmir.models.nets.autoencoder.load", "latent diffusion"),
]})


def names() -> list[str]:
    return list(ENTRIES)


def get(name: str) -> Entry:
    if name not in ENTRIES:
        raise UnknownNameError(f"unknown model {name!r}; named models: {', '.join(ENTRIES)}")
    return ENTRIES[name]


# ------------------------------------------------------------------------------ local copies
def home_dirs() -> list[str]:
    """Where local copies are searched, in order: ``$DMIR_HOME``, ``$XDG_CACHE_HOME/dmir``,
    ``~/.cache/dmir`` (:func:`dmir.cache.home_dirs`)."""
    from ..cache import home_dirs as dirs
    return dirs()


def download_dir() -> str:
    """Where :func:`fetch` writes: the first of :func:`home_dirs`."""
    return home_dirs()[0]


def local_path(entry: Entry, path=None) -> str | None:
    """The local copy of ``entry``: ``path`` if given (file or folder), else the first home
    directory holding all its files. For folder formats the folder is returned."""
    if path is not None:
        return os.fspath(path) if os.path.exists(path) else None
    for d in home_dirs():
        if all(os.path.isfile(os.path.join(d, f.name)) for f in entry.files):
            p = os.path.join(d, entry.main_file.name)
            return os.path.dirname(p) if entry.is_folder else p
    return None


def not_downloaded(entry: Entry) -> str:
    """The message for a named model that has no local copy (what to run to get it)."""
    f = entry.main_file
    where = " or ".join(home_dirs())
    how = (f"run `dmir models fetch {entry.name}`" if f.urls else f.manual)
    return (f"model {entry.name} is not available locally (looked for {f.name} in {where}); "
            f"{how}; or pass the file's path instead of the name")


def _checksum_db() -> str:
    return os.path.join(download_dir(), "checksums.json")


def _file_key(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime": int(st.st_mtime)}


def _read_db() -> dict:
    """The memo of sha256s ``{abs path: {"name", "sha256", "size", "mtime"}}``; a file that is
    not such an object (hand-edited, another program's) counts as empty, entries that are not
    objects are ignored — the memo only ever saves work, it never decides alone."""
    try:
        with open(_checksum_db()) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        log.warning("%s is not a JSON object; ignoring it", _checksum_db())
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)
            and isinstance(v.get("sha256"), str)}


def recorded_sha256(entry: Entry, path: str | None = None) -> str | None:
    """The sha256 of the main file: recorded in the registry, else the one computed at first
    load of the local copy ``path`` (default: the one found), if that file is unchanged."""
    if entry.main_file.sha256:
        return entry.main_file.sha256
    path = path or local_path(entry)
    if path is None or not os.path.isfile(path):
        return None
    memo = _read_db().get(os.path.abspath(path))
    if memo and memo.get("name") == entry.name and \
            {k: memo.get(k) for k in ("size", "mtime")} == _file_key(path):
        return memo.get("sha256")
    return None


def remember_sha256(entry: Entry, path: str) -> str:
    """Compute, log and remember the sha256 of a registry model's local file (first load).
    The memo is keyed by the file's absolute path, size and mtime."""
    digest = file_digest(path)
    db = _checksum_db()
    log.info("sha256 of %s (%s): %s (not recorded in the registry; remembered in %s)",
             entry.name, path, digest, db)
    from ..io import OutputError, atomic_write     # (torch: listing models must not need it)

    try:
        os.makedirs(os.path.dirname(db), exist_ok=True)
        data = _read_db()
        data[os.path.abspath(path)] = {"name": entry.name, "sha256": digest, **_file_key(path)}
        atomic_write(db, json.dumps(data, indent=1, sort_keys=True))
    except (OSError, OutputError):
        pass   # a read-only home only loses the memo
    return digest


def status(entry: Entry) -> dict:
    """A JSON-able description of one named model, including whether a local copy exists."""
    f = entry.main_file
    return {"name": entry.name, "format": entry.format, "config": entry.config,
            "description": entry.description, "used_by": entry.used_by,
            "urls": [u for x in entry.files for u in x.urls],
            "manual": [x.manual for x in entry.files if x.manual],
            "size": f.size, "sha256": recorded_sha256(entry), "md5": f.md5,
            "local": local_path(entry)}


# ------------------------------------------------------------------------------ downloading
def _open(url, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": "dmir"})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)


def _range_total(headers) -> int | None:
    """The full size from a ``Content-Range: bytes a-b/N`` (or ``bytes */N``) header."""
    m = re.match(r"\s*bytes\s+(?:\d+-\d+|\*)/(\d+)\s*$", headers.get("Content-Range") or "")
    return int(m.group(1)) if m else None


def _published_checksums(headers) -> dict:
    """Checksums the server publishes with the file: Hugging Face's LFS sha256
    (``X-Linked-ETag``), a ``Content-MD5`` (Azure blob storage, S3)."""
    out = {}
    etag = (headers.get("X-Linked-ETag") or "").strip().strip('"').removeprefix("W/").strip('"')
    if re.fullmatch(r"[0-9a-fA-F]{64}", etag):
        out["sha256"] = etag.lower()
    md5 = (headers.get("Content-MD5") or "").strip()
    if md5:
        try:
            raw = base64.b64decode(md5, validate=True)
            if len(raw) == 16:
                out["md5"] = raw.hex()
        except (ValueError, binascii.Error):
            pass
    return out


def _looks_like_html(head: bytes) -> bool:
    h = head.lstrip()[:64].lower()
    return h.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def download(url: str, dest: str, *, size: int | None = None, sha256: str | None = None,
             md5: str | None = None, timeout: float = 15.0, progress: bool = True,
             chunk: int = 1 << 20) -> str:
    """Download ``url`` to ``dest``: resumable (``dest.part``), verified, atomic.

    Verified even when no size or checksum is recorded: the transfer must deliver the
    ``Content-Length`` (or ``Content-Range`` total) the server announced; a web page
    (``text/html``, or a body that starts like HTML) is refused; a ``.part`` left over from
    another file (larger than the file, or refused by the server as out of range) is
    discarded and the download starts over; checksums the server publishes (Hugging Face's
    LFS sha256, ``Content-MD5``) are checked as well as recorded ones.

    Returns the sha256 of the file. Raises :class:`FetchError` on network errors, HTTP
    errors, a short transfer (the ``.part`` is kept: run again to resume), a size or checksum
    mismatch (the file is removed), or a destination that cannot be written.
    """
    folder = os.path.dirname(os.path.abspath(dest))
    part = dest + ".part"
    try:
        os.makedirs(folder, exist_ok=True)
        digest = _download(url, dest, part, size, sha256, md5, timeout, progress, chunk)
    except FetchError:
        raise
    except OSError as e:     # the local side: read-only or full disk, a folder in the way
        where = getattr(e, "filename", None) or dest
        raise FetchError(f"cannot write {where}: {e.strerror or e}; choose a writable folder "
                         f"(--dest DIR or $DMIR_HOME)") from None
    return digest


def _download(url, dest, part, size, sha256, md5, timeout, progress, chunk):
    start = os.path.getsize(part) if os.path.exists(part) else 0
    if size is not None and start > size:       # a stale .part of some other, larger file
        os.remove(part)
        start = 0
    published: dict = {}
    for attempt in range(2):
        try:
            r = _open(url, start, timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and start:
                total = _range_total(e.headers)
                if total is not None and total == start:     # the .part is already complete
                    r = None
                    break
                os.remove(part)                              # stale/oversized: start over
                start = 0
                continue
            raise FetchError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, socket.timeout, OSError) as e:
            reason = getattr(e, "reason", e)
            raise FetchError(f"cannot reach {url} ({reason}); no network? Download the file "
                             f"by hand and place it at {dest}") from None
        break
    else:   # pragma: no cover - the second attempt starts at 0 and cannot get a 416
        raise FetchError(f"download of {url} failed: the server refused the byte range")
    if r is not None:
        with r:
            ctype = (r.headers.get("Content-Type") or "").lower()
            if ctype.startswith(("text/html", "application/xhtml")):
                raise FetchError(f"download of {url} returned a web page ({ctype}) instead of "
                                 f"the file: the link may need a login or may have moved; "
                                 f"download the file by hand and place it at {dest}")
            published = _published_checksums(r.headers)
            if start and r.status != 206:    # server ignored the Range header: start over
                start = 0
            length = r.headers.get("Content-Length")
            length = int(length) if length is not None and length.strip().isdigit() else None
            total = _range_total(r.headers) if r.status == 206 else None
            if total is None and length is not None:
                total = start + length
            if size is not None and total is not None and total != size:
                raise FetchError(f"download of {url}: the server announces {total:,} bytes, "
                                 f"the registry records {size:,}; not downloaded")
            received = 0
            from tqdm import tqdm
            with open(part, "ab" if start else "wb") as f, \
                    tqdm(total=total or size, initial=start, unit="B", unit_scale=True,
                         desc=os.path.basename(dest), disable=not progress,
                         file=sys.stderr) as bar:
                while True:
                    try:
                        b = r.read(chunk)
                    except (OSError, socket.timeout, http.client.HTTPException) as e:
                        raise FetchError(f"download of {url} interrupted ({e!r:.200}); run "
                                         f"the same command again to resume") from None
                    if not b:
                        break
                    if received == 0 and start == 0 and _looks_like_html(b):
                        f.close()
                        _remove(part)
                        raise FetchError(f"download of {url} returned a web page instead of "
                                         f"the file: the link may need a login or may have "
                                         f"moved; download the file by hand and place it at "
                                         f"{dest}")
                    f.write(b)
                    received += len(b)
                    bar.update(len(b))
            if length is not None and received < length:
                raise FetchError(f"download of {url} stopped after {start + received:,} of "
                                 f"{start + length:,} bytes; run the same command again to "
                                 f"resume")
            size = size if size is not None else total
    got = os.path.getsize(part)
    if size is not None and got != size:
        if got > size:
            os.remove(part)
        raise FetchError(f"download of {url} has {got:,} bytes, expected {size:,}"
                         + ("; run again to resume" if got < size else "; removed it"))
    if got == 0:
        os.remove(part)
        raise FetchError(f"download of {url} is empty (0 bytes); removed it")
    digest = file_digest(part)
    want_sha = (sha256 or published.get("sha256") or "").lower() or None
    want_md5 = (md5 or published.get("md5") or "").lower() or None
    bad = (want_sha and digest != want_sha) or (want_md5 and file_digest(part, "md5") != want_md5)
    if bad:
        os.remove(part)
        want = f"sha256 {want_sha}" if want_sha else f"md5 {want_md5}"
        raise FetchError(f"checksum mismatch for {url}: expected {want}, got sha256 {digest}; "
                         f"the partial file was removed")
    if not (want_sha or want_md5):      # nothing to compare with: the format's own integrity
        problem = _structure_problem(part, name=dest)
        if problem:
            os.remove(part)
            raise FetchError(f"download of {url} is damaged ({problem}); it was not installed "
                             f"and the partial file was removed: run the same command again")
    os.replace(part, dest)
    return digest


def _remember_download(name: str, path: str, digest: str) -> None:
    """Record the sha256 and size of a file :func:`fetch` downloaded (``checksums.json``), so a
    later ``fetch`` or load can tell whether the copy changed."""
    from ..io import OutputError, atomic_write

    try:
        db = _checksum_db()
        os.makedirs(os.path.dirname(db), exist_ok=True)
        data = _read_db()
        data[os.path.abspath(path)] = {"name": name, "sha256": digest, **_file_key(path)}
        atomic_write(db, json.dumps(data, indent=1, sort_keys=True))
    except (OSError, OutputError):
        pass


def verify_copy(entry_name: str, f: File, path: str) -> str | None:
    """Why the existing local copy ``path`` of ``f`` is not right (``None``: it checks out).

    Checked, as far as anything is known: the recorded size; the recorded sha256/md5; else
    the sha256 and size remembered when dmir downloaded it; else its structure (a torch zip
    archive's CRCs, a safetensors header, a JSON file's syntax)."""
    got = os.path.getsize(path)
    if got == 0:
        return "it is empty (0 bytes)"
    if f.size is not None and got != f.size:
        return f"it has {got:,} bytes, the registry records {f.size:,}"
    if f.sha256 or f.md5:
        if f.sha256 and file_digest(path) != f.sha256.lower():
            return f"its sha256 is not the recorded {f.sha256}"
        if f.md5 and file_digest(path, "md5") != f.md5.lower():
            return f"its md5 is not the recorded {f.md5}"
        return None
    memo = _read_db().get(os.path.abspath(path))
    if memo and memo.get("name") == entry_name and memo.get("sha256"):
        if isinstance(memo.get("size"), int) and memo["size"] != got:
            return f"it has {got:,} bytes, {memo['size']:,} when it was downloaded"
        if file_digest(path) != memo["sha256"]:
            return "its sha256 changed since it was downloaded"
        return None
    return _structure_problem(path)


def _structure_problem(path: str, name: str | None = None) -> str | None:
    """What is wrong with the file's own structure (``name``: the file name that tells its
    kind, default ``path``)."""
    import zipfile

    from .reading import CheckpointError, safetensors_header
    name = name or path
    if name.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as fh:
                json.load(fh)
        except (OSError, ValueError) as e:
            return f"it is not valid JSON ({e})"
        return None
    if name.endswith(".safetensors"):
        try:
            safetensors_header(path)
        except CheckpointError as e:
            return str(e)
        return None
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                badname = z.testzip()          # every member's CRC-32
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            return f"it is a truncated or corrupt zip archive ({e})"
        return f"the archive member {badname} fails its CRC check" if badname else None
    if _looks_like_html(head):
        return "it is a web page, not a checkpoint"
    return None


def fetch(name: str, dest_dir: str | None = None, progress: bool = True,
          timeout: float = 15.0) -> str:
    """Download the named model into ``dest_dir`` (default :func:`download_dir`); returns the
    local path. A file already present is verified (:func:`verify_copy`) and kept; a copy
    that fails is reported (:class:`FetchError`) and left for the user to remove — nothing
    is deleted or replaced."""
    entry = get(name)
    dest_dir = os.path.expanduser(dest_dir or download_dir())
    if os.path.exists(dest_dir) and not os.path.isdir(dest_dir):
        raise FetchError(f"cannot download into {dest_dir}: it is a file, not a folder")
    for f in entry.files:
        dest = os.path.join(dest_dir, f.name)
        if os.path.isfile(dest):
            problem = verify_copy(entry.name, f, dest)
            if problem:
                raise FetchError(f"{name}: the existing copy {dest} is corrupt: {problem}. "
                                 f"It was left as it is: delete it (or move it away) and run "
                                 f"`dmir models fetch {name}` again")
            continue
        if not f.urls:
            raise FetchError(f"{name}: no direct download for {f.name}; {f.manual}")
        errors = []
        for url in f.urls:
            try:
                digest = download(url, dest, size=f.size, sha256=f.sha256, md5=f.md5,
                                  timeout=timeout, progress=progress)
                if not f.sha256:
                    _remember_download(entry.name, dest, digest)
                break
            except FetchError as e:
                errors.append(str(e))
        else:
            hint = f" ({f.manual})" if f.manual else ""
            raise FetchError("; ".join(errors) + hint)
    out = local_path(entry, os.path.join(dest_dir, entry.main_file.name)
                     if not entry.is_folder else
                     os.path.dirname(os.path.join(dest_dir, entry.main_file.name)))
    if out is None:
        raise FetchError(f"{name}: the files were fetched into {dest_dir} but are not there")
    return out
