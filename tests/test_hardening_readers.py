"""Issue 14 (outside audit), part A: hostile files and downloads. Every test names the audit's
cause number; grouped by severity as the issue is: crashes with a traceback (6, 7, 11, 12), hangs
and memory bombs (14), misleading output (15, 16, 18), then the fuzz test over the safetensors
and PNG readers. Also issue 17's safetensors item (the `safetensors` package behind dmir's own
header validation)."""
import errno
import hashlib
import http.server
import io
import json
import os
import shutil
import struct
import threading
import time
import tracemalloc
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from dmir import io as dio
from dmir import models
from dmir.cli import main
from dmir.data import ImageDataset, find_images, image_id
from dmir.errors import DmirError, InputError, ParameterError
from dmir.models import registry
from dmir.checkpoints.reading import CheckpointError, read_checkpoint, safetensors_header

DATA = Path(__file__).parent / "data"
SHIPPED = Path(models.__file__).resolve().parent.parent / "data" / "dmir-ddpm"
if not (SHIPPED / "model.safetensors").exists():        # timestep experts: their first network
    SHIPPED = SHIPPED / json.loads((SHIPPED / "config.json").read_text())["experts"][0]["path"]


# =============================================================================== safetensors
def _st_bytes(header, data: bytes = b"", length: int | None = None) -> bytes:
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(hb) if length is None else length) + hb + data


def _entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


_DEEP = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
#: cause 6: (name, file bytes, what the message must say)
_BAD_HEADERS = [
    ("list", _st_bytes([1, 2]), "not a JSON object"),
    ("entry-not-dict", _st_bytes({"w": [1, 2]}, bytes(8)), "'w' is a list, not an object"),
    ("entry-int", _st_bytes({"w": 3}, bytes(8)), "'w' is a int, not an object"),
    ("string-offsets", _st_bytes({"w": _entry(offsets=("0", "8"))}, bytes(8)),
     "data_offsets must be two non-negative integers"),
    ("three-offsets", _st_bytes({"w": _entry(offsets=(0, 4, 8))}, bytes(8)),
     "data_offsets must be two"),
    ("negative-offset", _st_bytes({"w": _entry(offsets=(-8, 0))}, bytes(8)),
     "non-negative integers"),
    ("reversed-offsets", _st_bytes({"w": _entry(shape=(0,), offsets=(8, 0))}, bytes(8)),
     "end before they begin"),
    ("overflowing-shape", _st_bytes({"w": _entry(shape=(2 ** 40, 2 ** 40))}, bytes(8)),
     "overflows"),
    ("negative-dim", _st_bytes({"w": _entry(shape=(-2, -1))}, bytes(8)),
     "shape must be a list of non-negative integers"),
    ("bool-dim", _st_bytes({"w": _entry(shape=(True, 2))}, bytes(8)),
     "shape must be a list of non-negative integers"),
    ("shape-not-list", _st_bytes({"w": _entry() | {"shape": "2"}}, bytes(8)), "shape must be"),
    ("unknown-dtype", _st_bytes({"w": _entry(dtype="F128")}, bytes(8)), "allowed: BOOL"),
    ("missing-field", _st_bytes({"w": {"dtype": "F32", "shape": [2]}}, bytes(8)),
     "lacks data_offsets"),
    ("size-mismatch", _st_bytes({"w": _entry(shape=(3,))}, bytes(8)), "8 bytes for shape [3]"),
    ("overlap", _st_bytes({"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(4, 12))},
                          bytes(12)), "must be contiguous and must not overlap"),
    ("gap", _st_bytes({"a": _entry(offsets=(0, 8)), "b": _entry(offsets=(12, 20))},
                      bytes(20)), "starts at byte 12"),
    ("trailing-bytes", _st_bytes({"w": _entry()}, bytes(16)), "8 bytes after the last tensor"),
    ("truncated-data", _st_bytes({"w": _entry(shape=(4,), offsets=(0, 16))}, bytes(8)),
     "truncated"),
    ("length-beyond-file", _st_bytes({"w": _entry()}, bytes(8), length=10 ** 6), "truncated"),
    ("length-beyond-limit", _st_bytes({"w": _entry()}, bytes(8), length=2 ** 62),
     "exceeds dmir's limit"),
    ("short", b"\x10\x00\x00", "only 3 bytes"),
    ("deeply-nested", _st_bytes(_DEEP), "nested too deeply"),
    ("metadata-not-str", _st_bytes({"__metadata__": {"k": 1}, "w": _entry()}, bytes(8)),
     "__metadata__ must be an object of strings"),
    ("duplicate-key", _st_bytes(b'{"w":' + json.dumps(_entry()).encode() + b',"w":'
                                + json.dumps(_entry()).encode() + b"}", bytes(8)),
     "appears twice"),
    ("not-utf8", _st_bytes(b'{"\xff\xfe":1}'), "corrupt header"),
    ("bad-json", _st_bytes(b'{"w": {"dtype": "F32",'), "corrupt header"),
]


@pytest.mark.parametrize("name,data,says", _BAD_HEADERS, ids=[c[0] for c in _BAD_HEADERS])
def test_cause6_malformed_safetensors_headers_are_named_errors(tmp_path, name, data, says):
    """Cause 6: every malformed header is one CheckpointError naming the file and the problem
    (no traceback, nothing handed to the safetensors library); also through models.load."""
    p = tmp_path / f"{name}.safetensors"
    p.write_bytes(data)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(p)
    msg = str(e.value)
    assert says in msg and str(p) in msg and "\n" not in msg, msg
    with pytest.raises(CheckpointError):
        models.load(str(p))


def test_cause6_valid_edge_cases_are_accepted(tmp_path):
    """Cause 6: the validation does not refuse what the format allows: zero-size tensors at the
    same offset, scalars, entries listed out of offset order, metadata, header padding."""
    hdr = {"__metadata__": {"format": "pt"},
           "b": _entry(shape=(2,), offsets=(8, 16)), "a": _entry(shape=(), dtype="I32",
                                                                 offsets=(4, 8)),
           "e": _entry(shape=(0, 3), offsets=(16, 16)), "z": _entry(shape=(1,), dtype="U8",
                                                                    offsets=(0, 1)),
           "y": _entry(shape=(3,), dtype="U8", offsets=(1, 4))}
    hb = json.dumps(hdr).encode()
    hb += b" " * (-len(hb) % 8)
    data = bytes([7, 1, 2, 3]) + struct.pack("<i", -5) + struct.pack("<2f", 1.5, -2.0)
    p = tmp_path / "edge.safetensors"
    p.write_bytes(_st_bytes(hb, data))
    out = read_checkpoint(p)
    assert out["a"].item() == -5 and out["a"].shape == ()
    assert out["b"].tolist() == [1.5, -2.0] and out["e"].shape == (0, 3)
    assert out["z"].tolist() == [7] and out["y"].tolist() == [1, 2, 3]
    entries, meta, start = safetensors_header(p)
    assert meta == {"format": "pt"} and start == 8 + len(hb) and set(entries) == set("abezy")


def test_issue17_safetensors_package_reads_and_writes(tmp_path):
    """Issue 17: files are written by the safetensors package (readable by its safe_open, with
    metadata), tied tensors become two copies, unsupported dtypes and non-tensors are refused,
    a failed write leaves nothing, and reading is memory-mapped copy-on-write."""
    from safetensors import safe_open

    w = torch.randn(4, 3)
    tensors = {"w": w, "tied": w, "u16": torch.arange(5).to(torch.uint16),
               "f8": torch.tensor([0.5, 1.0]).to(torch.float8_e4m3fn)}
    p = tmp_path / "m.safetensors"
    models.write_safetensors(tensors, p, metadata={"step": 3})
    with safe_open(str(p), framework="pt") as f:
        assert f.metadata() == {"step": "3"} and set(f.keys()) == set(tensors)
        assert torch.equal(f.get_tensor("tied"), w)
    back = models.read_safetensors(p)
    assert torch.equal(back["u16"].to(torch.int64), torch.arange(5))
    assert back["f8"].dtype == torch.float8_e4m3fn
    back["w"] += 1                   # copy-on-write: the file keeps the original values
    assert torch.equal(models.read_safetensors(p)["w"], w)
    with pytest.raises(ParameterError, match="complex64"):
        models.write_safetensors({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "c.st")
    with pytest.raises(ParameterError, match="only tensors"):
        models.write_safetensors({"x": [1, 2]}, tmp_path / "x.safetensors")
    with pytest.raises(InputError):
        models.write_safetensors({"w": w}, tmp_path / "missing" / "m.safetensors")
    assert not (tmp_path / "missing").exists()
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


# =============================================================================== config.json
def _dmir_folder(tmp_path, name, meta):
    d = tmp_path / name
    d.mkdir()
    os.symlink(SHIPPED / "model.safetensors", d / "model.safetensors")
    (d / "config.json").write_text(meta if isinstance(meta, str) else json.dumps(meta))
    return d


_BASE = json.loads((SHIPPED / "config.json").read_text())


def _with(**kw):
    return {**_BASE, "config": {**_BASE["config"], **kw}}


_BAD_CONFIGS = [
    ("a-list", [1, 2], "must hold a JSON object"),
    ("not-json", "{oops", "cannot read"),
    ("config-a-string", {**_BASE, "config": "x"}, "'config' an object"),
    ("format-a-number", {**_BASE, "format": 5}, "'format' must be a string"),
    ("channels-1e9", _with(ch=1e9), "config.ch = 1000000000.0 is out of range"),
    ("timesteps-1e9", _with(num_diffusion_timesteps=1e9), "num_diffusion_timesteps"),
    ("res-blocks-1e5", _with(num_res_blocks=100_000), "num_res_blocks = 100000 is out of range"),
    ("ch-mult-200-levels", _with(ch_mult=[1] * 200), "ch_mult has 200 entries"),
    ("image-size-1e9", _with(image_size=10 ** 9), "image_size"),
    ("nan", _with(beta_start=float("nan")), "not a finite number"),
    ("wide-but-bounded", _with(ch=4096), "ch is 4096 in the config, 32 in the weights"),
    ("one-block-more", _with(num_res_blocks=3), "num_res_blocks is 3 in the config, 2 in"),
    ("other-levels", _with(ch_mult=[1, 2, 2, 4, 4]), "ch_mult is [1, 2, 2, 4, 4] in the config"),
]


@pytest.mark.parametrize("name,meta,says", _BAD_CONFIGS, ids=[c[0] for c in _BAD_CONFIGS])
def test_cause7_absurd_or_mismatched_config_json_is_refused_before_building(
        tmp_path, name, meta, says):
    """Cause 7: a config.json that is not an object, has absurd values, or does not describe
    the weights is one CheckpointError naming config.json, raised before any module is built
    (so in well under a second, with no memory to speak of)."""
    d = _dmir_folder(tmp_path, name, meta)
    with pytest.raises(CheckpointError) as e:
        models.load(str(d))
    msg = str(e.value)
    assert says in msg and "config.json" in msg, msg
    assert main(["restore", str(DATA / "kodim05_crop64.png"), "-o", str(tmp_path / "o.png"),
                 "--model", str(d), "--op", "denoise", "--steps", "2"]) == 2
    assert not (tmp_path / "o.png").exists()


def test_cause7_config_overrides_are_bounded_and_compared(tmp_path):
    """Cause 7, library API: config= dicts get the same bounds and the same comparison."""
    d = _dmir_folder(tmp_path, "ok", _BASE)
    assert models.load(str(d)).info["config"]["ch"] == 32     # the valid folder loads
    with pytest.raises(ParameterError, match="num_res_blocks = 100000 is out of range"):
        models.load(str(d / "model.safetensors"), format="ddpm",
                    config={"num_res_blocks": 100_000})
    with pytest.raises(ParameterError, match="ch is 64 in the config, 32 in the weights"):
        models.load(str(d / "model.safetensors"), config={"ch": 64})


def test_cause7_diffusers_config_compared_with_the_weights(tmp_path):
    """Cause 7, diffusers folders: a UNet config whose widths/levels differ from the weights,
    or a scheduler config with 1e9 timesteps, is refused before building."""
    pytest.importorskip("diffusers")
    src = DATA / "models" / "diffusers_ddpm_like"
    cfg = json.loads((src / "config.json").read_text())
    for name, change, says in [
            ("wide", {"block_out_channels": [c * 64 for c in cfg["block_out_channels"]]},
             r"block_out_channels\[0\] is 1024 in the config, 16 in the weights"),
            ("levels", {"block_out_channels": cfg["block_out_channels"] * 2,
                        "down_block_types": cfg["down_block_types"] * 2,
                        "up_block_types": cfg["up_block_types"] * 2}, "levels"),
            ("blocks", {"layers_per_block": 60}, "layers_per_block is 60")]:
        d = tmp_path / name
        shutil.copytree(src, d)
        (d / "config.json").write_text(json.dumps({**cfg, **change}))
        with pytest.raises(CheckpointError, match=says):
            models.load(str(d))
    d = tmp_path / "sched"
    shutil.copytree(src, d)
    (d / "scheduler_config.json").write_text(json.dumps({"num_train_timesteps": 10 ** 9}))
    with pytest.raises(CheckpointError, match="num_train_timesteps = 1000000000 is out of range"):
        models.load(str(d))


# =============================================================================== datasets
def _two_images(folder: Path, second: str):
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "kodim05_crop64.png", folder / "a.png")
    shutil.copy(DATA / "kodim23_crop64.png", folder / second)


def test_cause11_non_utf8_file_name_gets_a_printable_id(tmp_path):
    """Cause 11: a file name that is not valid UTF-8 is listed, opens, and gets an id that can
    be printed, hashed and stored as JSON (its bad byte written \\xNN); a list file may name it."""
    import sys
    if sys.getfilesystemencoding().lower() != "utf-8":
        pytest.skip("needs a UTF-8 file system encoding")
    bad = os.fsdecode(b"caf\xe9.png")
    _two_images(tmp_path / "ds", bad)
    assert find_images(tmp_path / "ds") == ["a.png", bad]
    ds = ImageDataset(tmp_path / "ds", size=32)
    assert [it.id for it in ds.items] == ["a.png", "caf\\xe9.png"]
    assert ds[1].shape == (1, 3, 32, 32)
    json.dumps([it.id for it in ds.items], ensure_ascii=False).encode("utf-8")
    from dmir.bench.pipeline import seed_for
    assert seed_for(0, "ds", "task", ds.items[1].id) != seed_for(0, "ds", "task", "a.png")
    assert image_id("plain/name.png") == "plain/name.png"
    (tmp_path / "list.txt").write_bytes(b"caf\xe9.png 3\na.png 1\n")
    lst = ImageDataset(tmp_path / "ds", size=32, list_file=tmp_path / "list.txt")
    assert [(it.id, it.label) for it in lst.items] == [("caf\\xe9.png", 3), ("a.png", 1)]


def test_cause11_bench_runs_on_a_non_utf8_name(tmp_path, capsys):
    """Cause 11 end to end: `dmir bench` on a folder holding such a file finishes and records
    both images."""
    _two_images(tmp_path / "ds", os.fsdecode(b"caf\xe9.png"))
    out = tmp_path / "out"
    assert main(["bench", "--data", str(tmp_path / "ds"), "--size", "32", "--out", str(out),
                 "--no-progress", "--task", "sr_averagepooling,scale=2",
                 "--method", "ddnm,steps=1", "--model", "natural"]) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["image"] for r in rows} == {"a.png", "caf\\xe9.png"} and len(rows) == 4


def test_cause18_symlink_loop_counts_each_image_once(tmp_path):
    """Cause 18: a link back up the tree (sub/loop -> ..) lists every image once; a linked
    folder outside the tree is still followed."""
    _two_images(tmp_path / "ds", "b.png")
    (tmp_path / "ds" / "sub").mkdir()
    os.symlink("..", tmp_path / "ds" / "sub" / "loop")
    os.symlink(tmp_path / "ds", tmp_path / "ds" / "self")
    _two_images(tmp_path / "elsewhere", "c.png")
    os.symlink(tmp_path / "elsewhere", tmp_path / "ds" / "linked")
    assert find_images(tmp_path / "ds") == ["a.png", "b.png", "linked/a.png", "linked/c.png"]
    assert len(ImageDataset(tmp_path / "ds", size=16)) == 4


# =============================================================================== downloads
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``routes`` (path → dict(body, ctype, headers, short, ignore_range))."""
    routes: dict = {}

    def do_GET(self):  # noqa: N802
        spec = self.routes.get(self.path)
        if spec is None:
            self.send_error(404)
            return
        body = spec["body"]
        rng = self.headers.get("Range")
        start = int(rng.split("=")[1].split("-")[0]) if rng and not spec.get("ignore_range") \
            else 0
        if start >= len(body) and start:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(body)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", spec.get("ctype", "application/octet-stream"))
        self.send_header("Content-Length", str(len(body) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        for k, v in spec.get("headers", {}).items():
            self.send_header(k, v)
        self.end_headers()
        sent = body[start:]
        if spec.get("short"):
            sent = sent[: len(sent) // 2]
        self.wfile.write(sent)
        self.wfile.flush()
        if spec.get("short"):
            self.close_connection = True

    def log_message(self, *a):
        pass


@pytest.fixture
def http_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


PAYLOAD = os.urandom(200_000)


def test_cause15_short_transfer_html_and_stale_part(http_server, tmp_path):
    """Cause 15: with no size or checksum recorded, a short transfer is not installed (its
    .part is kept to resume), an HTML error page is refused whatever its Content-Type says, and
    a stale .part larger than the file is discarded, not installed."""
    _Handler.routes = {
        "/short": {"body": PAYLOAD, "short": True},
        "/html": {"body": b"<!DOCTYPE html><html>Sign in</html>", "ctype": "text/html"},
        "/html-as-binary": {"body": b"\n <html><body>404</body></html>"},
        "/file": {"body": PAYLOAD},
        "/no-range": {"body": PAYLOAD, "ignore_range": True},
    }
    dest = tmp_path / "m.pt"
    with pytest.raises(registry.FetchError, match="stopped after 100,000 of 200,000 bytes|"
                                                  "interrupted"):
        registry.download(http_server + "/short", str(dest), progress=False)
    assert not dest.exists() and os.path.getsize(str(dest) + ".part") == 100_000
    # the kept part resumes against a good server
    assert registry.download(http_server + "/file", str(dest), progress=False) == \
        hashlib.sha256(PAYLOAD).hexdigest()
    assert dest.read_bytes() == PAYLOAD
    for route in ("/html", "/html-as-binary"):
        d = tmp_path / f"{route[1:]}.pt"
        with pytest.raises(registry.FetchError, match="web page"):
            registry.download(http_server + route, str(d), progress=False)
        assert not d.exists() and not os.path.exists(str(d) + ".part")
    # a stale, oversized .part: the server answers 416 with the real size; start over
    stale = tmp_path / "stale.pt"
    (tmp_path / "stale.pt.part").write_bytes(os.urandom(300_000))
    registry.download(http_server + "/file", str(stale), progress=False)
    assert stale.read_bytes() == PAYLOAD
    # ... and with a recorded size it is dropped before asking
    (tmp_path / "stale2.pt.part").write_bytes(os.urandom(300_000))
    registry.download(http_server + "/file", str(tmp_path / "stale2.pt"), size=len(PAYLOAD),
                      progress=False)
    assert (tmp_path / "stale2.pt").read_bytes() == PAYLOAD
    # a server that ignores Range restarts cleanly instead of appending
    (tmp_path / "nr.pt.part").write_bytes(PAYLOAD[:5000])
    registry.download(http_server + "/no-range", str(tmp_path / "nr.pt"), progress=False)
    assert (tmp_path / "nr.pt").read_bytes() == PAYLOAD


def test_cause15_published_checksums_and_announced_size(http_server, tmp_path):
    """Cause 15: a checksum the server publishes (Hugging Face's X-Linked-ETag sha256,
    Content-MD5) is verified; a server announcing another size than the registry is refused."""
    import base64
    good_md5 = base64.b64encode(hashlib.md5(PAYLOAD).digest()).decode()
    _Handler.routes = {
        "/hf-bad": {"body": PAYLOAD, "headers": {"X-Linked-ETag": '"' + "ab" * 32 + '"'}},
        "/hf-good": {"body": PAYLOAD, "headers": {
            "X-Linked-ETag": '"' + hashlib.sha256(PAYLOAD).hexdigest() + '"'}},
        "/md5-bad": {"body": PAYLOAD, "headers": {
            "Content-MD5": base64.b64encode(bytes(16)).decode()}},
        "/md5-good": {"body": PAYLOAD, "headers": {"Content-MD5": good_md5}},
    }
    for route in ("/hf-bad", "/md5-bad"):
        d = tmp_path / f"{route[1:]}.bin"
        with pytest.raises(registry.FetchError, match="checksum mismatch"):
            registry.download(http_server + route, str(d), progress=False)
        assert not d.exists() and not os.path.exists(str(d) + ".part")
    for route in ("/hf-good", "/md5-good"):
        d = tmp_path / f"{route[1:]}.bin"
        registry.download(http_server + route, str(d), progress=False)
        assert d.read_bytes() == PAYLOAD
    with pytest.raises(registry.FetchError, match="announces 200,000 bytes, the registry "
                                                  "records 123"):
        registry.download(http_server + "/hf-good", str(tmp_path / "x.bin"), size=123,
                          progress=False)


def _toy_entry(monkeypatch, url, **file_kw):
    e = registry.Entry("toy", "adm", None, (registry.File("toy.pt", (url,), **file_kw),), "toy")
    monkeypatch.setitem(registry.ENTRIES, "toy", e)
    return e


def _zip_checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.randn(200, 200)}, buf)
    return buf.getvalue()


def test_cause16_fetch_verifies_an_existing_copy(http_server, tmp_path, monkeypatch, capsys):
    """Cause 16: `dmir models fetch` checks a copy that is already there — against the sha256
    and size it recorded when it downloaded it, the registry's checksum, or the archive's own
    CRCs — and reports a corrupt one (exit 2, one line) without deleting it."""
    ckpt = _zip_checkpoint()
    _Handler.routes = {"/toy.pt": {"body": ckpt}}
    monkeypatch.setenv("DMIR_HOME", str(tmp_path))
    _toy_entry(monkeypatch, http_server + "/toy.pt")
    assert main(["models", "fetch", "toy"]) == 0
    db = json.loads((tmp_path / "checksums.json").read_text())
    rec = db[str(tmp_path / "toy.pt")]
    assert rec["sha256"] == hashlib.sha256(ckpt).hexdigest() and rec["size"] == len(ckpt)
    assert main(["models", "fetch", "toy"]) == 0            # intact: accepted
    capsys.readouterr()
    corrupt = bytearray(ckpt)
    corrupt[len(corrupt) // 2] ^= 0xFF                      # same size, one byte flipped
    (tmp_path / "toy.pt").write_bytes(bytes(corrupt))
    assert main(["models", "fetch", "toy"]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and "sha256 changed" in err and err.count("\n") == 1
    assert (tmp_path / "toy.pt").read_bytes() == bytes(corrupt)     # left as it was
    # a copy dmir did not download: the zip archive's CRCs tell
    (tmp_path / "checksums.json").unlink()
    assert main(["models", "fetch", "toy"]) == 2
    assert "fails its CRC check" in capsys.readouterr().err
    (tmp_path / "toy.pt").write_bytes(ckpt[: len(ckpt) // 2])
    assert main(["models", "fetch", "toy"]) == 2
    assert "truncated or corrupt zip" in capsys.readouterr().err
    (tmp_path / "toy.pt").write_bytes(ckpt)
    assert main(["models", "fetch", "toy"]) == 0
    # the registry's md5, when recorded, decides
    _toy_entry(monkeypatch, http_server + "/toy.pt", md5="0" * 32)
    assert main(["models", "fetch", "toy"]) == 2
    assert "md5 is not the recorded" in capsys.readouterr().err


def test_cause16_crc_check_finds_a_flipped_byte(tmp_path):
    """Cause 16: without any record, a bit flip inside a torch zip checkpoint is found by the
    members' CRC-32 (the structural check of verify_copy)."""
    ckpt = bytearray(_zip_checkpoint())
    p = tmp_path / "c.pt"
    p.write_bytes(bytes(ckpt))
    f = registry.File("c.pt")
    assert registry.verify_copy("c", f, str(p)) is None
    ckpt[len(ckpt) // 2] ^= 0x01
    p.write_bytes(bytes(ckpt))
    assert "CRC" in registry.verify_copy("c", f, str(p))
    p.write_bytes(b"<!doctype html><html>login</html>")
    assert "web page" in registry.verify_copy("c", f, str(p))


def test_cause12_fetch_into_a_place_that_cannot_be_written(http_server, tmp_path, monkeypatch,
                                                            capsys):
    """Cause 12: `dmir models fetch --dest` on a read-only file system, a file, a folder
    below a file or a read-only folder: one line, exit 2, nothing left behind."""
    _Handler.routes = {"/toy.pt": {"body": PAYLOAD}}
    monkeypatch.setenv("DMIR_HOME", str(tmp_path / "home"))
    _toy_entry(monkeypatch, http_server + "/toy.pt")
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    targets = [str(a_file), str(a_file / "sub")]
    if os.geteuid() != 0:            # root writes into read-only folders anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        targets.append(str(ro))
    for dest in targets:
        assert main(["models", "fetch", "toy", "--dest", dest]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and dest in err, err
    real_makedirs = os.makedirs

    def read_only_fs(path, *a, **kw):        # what a read-only mount answers
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    monkeypatch.setattr(os, "makedirs", read_only_fs)
    assert main(["models", "fetch", "toy", "--dest", str(tmp_path / "rofs")]) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and err.count("\n") == 1
    monkeypatch.setattr(os, "makedirs", real_makedirs)
    assert not (tmp_path / "rofs").exists() and a_file.read_text() == "x"


# =============================================================================== PNG bombs
def _png(W, H, depth, ctype, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", W, H, depth, ctype, 0, 0, 0)
    return (dio._PNG_SIG + dio._chunk(b"IHDR", ihdr) + dio._chunk(b"IDAT", idat)
            + dio._chunk(b"IEND", b""))


def _peak_mb(fn):
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2 ** 20


def test_cause14_16bit_png_bomb_refused_before_decompressing(tmp_path):
    """Cause 14: a small 16-bit colour PNG declaring 30000 × 30000 pixels (24 GB decoded) is
    refused by the pixel limit before anything is decompressed."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(30_000, 30_000, 16, 2, zlib.compress(bytes(2_000_000), 9)))
    assert bomb.stat().st_size < 10_000
    def read():
        with pytest.raises(InputError, match="too large: 30000x30000"):
            dio.read_image(bomb)
    assert _peak_mb(read) < 20
    assert main(["restore", str(bomb), "-o", str(tmp_path / "o.png"), "--op", "denoise",
                 "--steps", "2"]) == 2
    assert not (tmp_path / "o.png").exists()


def test_cause14_same_limit_as_pillow_and_bounded_output(tmp_path, monkeypatch):
    """Cause 14: the 16-bit decoder follows PIL.Image.MAX_IMAGE_PIXELS as Pillow does (warn
    above it, refuse above twice it), and decompresses no more than the header announces: a
    4×4 image whose data inflates to 64 MB is read with a few MB."""
    from PIL import Image
    a = (np.arange(10 * 12 * 3).reshape(10, 12, 3) * 500).astype(np.uint16)
    p = tmp_path / "small.png"
    p.write_bytes(dio._encode_png(a))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.warns(Image.DecompressionBombWarning):
        x = dio.read_image(p)
    assert x.shape == (1, 3, 10, 12)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(InputError, match="too large"):
        dio.read_image(p)
    monkeypatch.undo()
    rows = b"".join(b"\x00" + bytes(4 * 6) for _ in range(4))
    inflating = zlib.compress(rows + bytes(64 * 2 ** 20), 9)
    q = tmp_path / "inflating.png"
    q.write_bytes(_png(4, 4, 16, 2, inflating))
    got = {}
    assert _peak_mb(lambda: got.setdefault("x", dio.read_image(q))) < 8
    assert got["x"].shape == (1, 3, 4, 4) and float(got["x"].max()) == -1.0


# =============================================================================== fuzz
def _recrc(data: bytes) -> bytes:
    """Recompute every chunk CRC of a (mutated) PNG, so the decoders get past the CRC check."""
    out, pos = bytearray(data[:8]), 8
    while pos + 8 <= len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if len(body) != n or pos + 12 + n > len(data):
            out += data[pos:]
            break
        out += data[pos:pos + 8] + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        pos += 12 + n
    else:
        out += data[pos:]
    return bytes(out)


def _mutations(valid: bytes, rng, n: int, png: bool):
    L = len(valid)
    for i in range(n):
        b = bytearray(valid)
        kind = i % 6
        if kind == 0:                                  # flip a few bytes anywhere
            for _ in range(int(rng.integers(1, 9))):
                b[int(rng.integers(0, L))] ^= int(rng.integers(1, 256))
        elif kind == 1:                                # truncate
            b = b[: int(rng.integers(0, L))]
        elif kind == 2:                                # bytes in the first 64 (length, IHDR)
            for _ in range(int(rng.integers(1, 5))):
                b[int(rng.integers(0, min(64, L)))] = int(rng.integers(0, 256))
        elif kind == 3:                                # a random block overwritten
            s = int(rng.integers(0, L))
            b[s:s + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        elif kind == 4:                                # a header length/dimension set large
            s = int(rng.integers(0, 4)) if not png else 16 + 4 * int(rng.integers(0, 2))
            b[s:s + 4] = struct.pack(">I" if png else "<I",
                                     int(rng.choice([2 ** 31 - 1, 2 ** 20, 65_535, 0])))
        else:                                          # bytes inserted
            s = int(rng.integers(0, L))
            b[s:s] = rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
        data = bytes(b)
        yield _recrc(data) if png and i % 2 else data


def _valid_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    st = tmp_path / "valid.safetensors"
    models.write_safetensors({"a.weight": torch.randn(8, 5, generator=g),
                              "b": torch.arange(6, dtype=torch.int64),
                              "h": torch.randn(3, 3, generator=g).half(),
                              "e": torch.zeros(0)}, st, metadata={"k": "v"})
    img = (torch.rand(1, 3, 12, 10, generator=g) * 2 - 1)
    out = {"safetensors": st.read_bytes()}
    for name, bits, im in (("png8", 8, img), ("png16", 16, img), ("gray16", 16, img[:, :1])):
        p = tmp_path / f"{name}.png"
        dio.write_image(p, im, bits=bits)
        out[name] = p.read_bytes()
    return out


@pytest.mark.parametrize("kind", ["safetensors", "png8", "png16", "gray16"])
def test_fuzz_corrupted_files_give_only_dmir_errors(tmp_path, kind):
    """Must show (issue 14): random corruption of valid safetensors and PNG files (flips,
    truncation, overwritten and inserted blocks, absurd lengths and dimensions, with and
    without repaired PNG CRCs) gives a result or a dmir error — never another exception —
    each case in bounded time (< 5 s) and memory (< 64 MB traced)."""
    valid = _valid_files(tmp_path)[kind]
    rng = np.random.default_rng({"safetensors": 1, "png8": 2, "png16": 3, "gray16": 4}[kind])
    p = tmp_path / ("case.safetensors" if kind == "safetensors" else "case.png")
    read = ((lambda: {k: v.float().sum() for k, v in read_checkpoint(p).items()})
            if kind == "safetensors" else (lambda: dio.read_image(p)))
    outcomes = {"ok": 0, "error": 0}
    worst_t = worst_m = 0.0
    for data in _mutations(valid, rng, 120, png=kind != "safetensors"):
        p.write_bytes(data)
        t0 = time.perf_counter()
        tracemalloc.start()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read()
            outcomes["ok"] += 1
        except DmirError as e:
            assert str(p) in str(e) or p.name in str(e), str(e)
            outcomes["error"] += 1
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{kind}: {type(e).__name__}: {e} for a corrupted file "
                        f"(first bytes {data[:40]!r})")
        finally:
            worst_m = max(worst_m, tracemalloc.get_traced_memory()[1] / 2 ** 20)
            tracemalloc.stop()
        worst_t = max(worst_t, time.perf_counter() - t0)
    assert outcomes["error"] >= 30, outcomes       # the corruptions were mostly noticed
    assert worst_t < 5.0 and worst_m < 64, (worst_t, worst_m)
