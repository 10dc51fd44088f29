"""Checkpoint files: safe reading, safetensors, bad input, the registry and fetching (a local
HTTP server stands in for the network; no test needs the internet)."""
import hashlib
import http.server
import json
import os
import socket
import threading

import pytest
import torch
from torch import nn

from dmir import models
from dmir.cli import main
from dmir.errors import DmirError, ParameterError
from dmir.models import registry
from dmir.checkpoints.reading import CheckpointError, fit_state_dict, state_dict_mismatch


# ------------------------------------------------------------------------------- reading
def test_safetensors_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    t = {"a.weight": torch.randn(3, 4, generator=g), "b": torch.arange(5),
         "h": torch.randn(2, 2, generator=g).half(), "bf": torch.randn(3, generator=g).bfloat16(),
         "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.5, dtype=torch.float64)}
    p = tmp_path / "w.safetensors"
    models.write_safetensors(t, p, metadata={"format": "pt"})
    back = models.read_checkpoint(p)
    assert set(back) == set(t)
    for k in t:
        assert back[k].dtype == t[k].dtype and back[k].shape == t[k].shape
        assert torch.equal(back[k], t[k])
    back["a.weight"] += 1            # copy-on-write mapping: writable, the file is unchanged
    assert torch.equal(models.read_checkpoint(p)["a.weight"], t["a.weight"])
    # detected without the suffix too
    q = tmp_path / "weights.bin"
    q.write_bytes(p.read_bytes())
    assert torch.equal(models.read_checkpoint(q)["b"], t["b"])


def test_safetensors_matches_the_reference_library(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    t = {"x": torch.randn(4, 5), "y": torch.arange(7, dtype=torch.int32)}
    p = tmp_path / "ref.safetensors"
    st.save_file(t, str(p))
    back = models.read_safetensors(p)
    assert all(torch.equal(back[k], t[k]) for k in t)
    q = tmp_path / "ours.safetensors"
    models.write_safetensors(t, q)
    back = st.load_file(str(q))
    assert all(torch.equal(back[k], t[k]) for k in t)


def test_int8_weights_round_trip_within_half_a_step(tmp_path):
    from dmir.checkpoints.reading import INT8_KEY, INT8_SCALE, INT8_VALUE, quantize_int8

    g = torch.Generator().manual_seed(0)
    sd = {"conv.weight": torch.randn(64, 32, 3, 3, generator=g) * torch.linspace(1e-3, 2, 64)
          .view(64, 1, 1, 1), "lin.weight": torch.randn(5, 7, generator=g),
          "zero.weight": torch.zeros(4, 3), "conv.bias": torch.randn(64, generator=g),
          "steps": torch.arange(3)}
    sd["lin.weight"][2, 3] = 9.0                     # an outlier widens only its own row
    q = quantize_int8(sd)
    assert q["conv.weight"].dtype == torch.int8 and q["conv.bias"] is sd["conv.bias"]
    assert set(q) == set(sd) | {k + INT8_SCALE for k in ("conv.weight", "lin.weight",
                                                         "zero.weight")}
    p = tmp_path / "q.safetensors"
    models.write_safetensors(q, p, metadata={"format": "ddpm", INT8_KEY: INT8_VALUE})
    f32 = tmp_path / "f.safetensors"
    models.write_safetensors(sd, f32)
    assert p.stat().st_size < 0.3 * f32.stat().st_size
    back = models.read_checkpoint(p)
    assert set(back) == set(sd) and back["conv.weight"].dtype == torch.float32
    for k in ("conv.weight", "lin.weight"):
        rows = sd[k].reshape(sd[k].shape[0], -1)
        err = (back[k] - sd[k]).reshape(rows.shape).abs().amax(1)
        assert (err <= rows.abs().amax(1) / 254 * 1.0001).all(), k      # ≤ scale / 2 per row
    # per channel: the small-magnitude first rows keep their relative precision
    rel = ((back["conv.weight"] - sd["conv.weight"]).flatten(1).norm(dim=1)
           / sd["conv.weight"].flatten(1).norm(dim=1))
    assert float(rel.max()) < 0.01
    assert torch.equal(back["zero.weight"], sd["zero.weight"])
    assert torch.equal(back["conv.bias"], sd["conv.bias"]) and torch.equal(back["steps"],
                                                                           sd["steps"])
    # damaged files are refused, naming the tensor
    bad = dict(q)
    del bad["lin.weight" + INT8_SCALE]
    models.write_safetensors(bad, p, metadata={INT8_KEY: INT8_VALUE})
    with pytest.raises(CheckpointError, match="'lin.weight' is int8 but its scales"):
        models.read_checkpoint(p)
    bad = dict(q, **{"lin.weight" + INT8_SCALE: torch.ones(4)})
    models.write_safetensors(bad, p, metadata={INT8_KEY: INT8_VALUE})
    with pytest.raises(CheckpointError, match=r"scales of shape \(4,\).*expected \(5,\)"):
        models.read_checkpoint(p)
    bad = dict(q, **{"conv.weight" + INT8_SCALE: -q["conv.weight" + INT8_SCALE]})
    models.write_safetensors(bad, p, metadata={INT8_KEY: INT8_VALUE})
    with pytest.raises(CheckpointError, match="non-positive"):
        models.read_checkpoint(p)
    with pytest.raises(ParameterError, match="NaN"):
        quantize_int8({"w": torch.tensor([[1.0, float("nan")]])})


def test_truncated_and_corrupt_files(tmp_path):
    sd = {"w": torch.randn(64, 64), "b": torch.randn(64)}
    pt = tmp_path / "m.pt"
    torch.save(sd, pt)
    raw = pt.read_bytes()
    cases = {"trunc.pt": raw[: len(raw) // 2], "empty.pt": b"",
             "flipped.pt": raw[:100] + bytes(200) + raw[300:]}
    st = tmp_path / "m.safetensors"
    models.write_safetensors(sd, st)
    cases["trunc.safetensors"] = st.read_bytes()[:-100]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            models.read_checkpoint(tmp_path / name)
        msg = str(e.value)
        assert name in msg and ("truncated" in msg or "corrupt" in msg or "empty" in msg), msg
    png = tmp_path / "photo.pt"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        models.read_checkpoint(png)
    with pytest.raises(CheckpointError, match="does not exist"):
        models.read_checkpoint(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": _Evil()}, p)
    with pytest.raises(CheckpointError, match="would import or run code"):
        models.read_checkpoint(p)
    with pytest.raises(CheckpointError, match="would import or run code"):
        models.load(str(p))
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_legacy_and_cuda_saved_files_load(tmp_path):
    """Pre-zip torch files load (without mmap); tensors saved on a GPU are mapped to the CPU."""
    sd = {"w": torch.randn(3, 3)}
    p = tmp_path / "legacy.pth"
    torch.save(sd, p, _use_new_zipfile_serialization=False)
    assert torch.equal(models.read_checkpoint(p)["w"], sd["w"])


def test_fit_state_dict_summarises_mismatches():
    net = nn.Sequential(*[nn.Linear(4, 4) for _ in range(30)])
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    fit_state_dict(net, sd)
    bad = dict(sd)
    for i in range(10):
        bad.pop(f"{i}.weight")
    for i in range(12):
        bad[f"extra.{i}"] = torch.zeros(1)
    bad["20.weight"] = torch.zeros(5, 4)
    msg = state_dict_mismatch(net, bad)
    assert "10 missing keys" in msg and "12 unexpected keys" in msg and "1 shape mismatches" in msg
    assert "(5, 4) vs (4, 4)" in msg and "more)" in msg and len(msg) < 600
    with pytest.raises(ParameterError, match="does not match the network configuration"):
        fit_state_dict(net, bad)


def test_fit_on_meta_device_assigns_and_casts():
    with torch.device("meta"):
        net = nn.Linear(3, 2)
    sd = {"weight": torch.randn(2, 3).half(), "bias": torch.randn(2).half()}
    fit_state_dict(net, sd)
    assert net.weight.dtype == torch.float32 and not net.weight.is_meta
    assert torch.equal(net.weight, sd["weight"].float())
    with torch.device("meta"):
        net = nn.Linear(3, 2)
    fit_state_dict(net, sd, dtype=torch.bfloat16)
    assert net.weight.dtype == torch.bfloat16


# ------------------------------------------------------------------------------- loading
def test_load_unknown_and_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("DMIR_HOME", str(tmp_path))
    with pytest.raises(DmirError, match="unknown model 'nope'.*adm-imagenet256-uncond"):
        models.load("nope")
    with pytest.raises(models.ModelNotFoundError, match="dmir models fetch adm-imagenet256-uncond"):
        models.load("adm-imagenet256-uncond")
    with pytest.raises(models.ModelNotFoundError, match="Google Drive"):
        models.load("adm-ffhq256")
    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder.layer.0.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(CheckpointError, match="not a checkpoint of a supported format"):
        models.load(str(foreign))
    with pytest.raises(ParameterError, match="unknown checkpoint format"):
        models.load(str(foreign), format="keras")
    with pytest.raises(ParameterError, match="dtype"):
        models.load("natural", dtype="int8")


# ------------------------------------------------------------------------------- fetching
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` (path → bytes) with HTTP Range support; records the Range headers."""
    files: dict = {}
    ranges: list = []

    def do_GET(self):  # noqa: N802
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        self.ranges.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    payload = os.urandom(300_000)
    _RangeHandler.files = {"/model.pt": payload}
    _RangeHandler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", payload
    httpd.shutdown()


def test_download_verifies_resumes_and_is_atomic(server, tmp_path):
    url, payload = server
    sha = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "sub" / "model.pt"
    assert registry.download(url + "/model.pt", str(dest), sha256=sha, progress=False) == sha
    assert dest.read_bytes() == payload and not os.path.exists(str(dest) + ".part")
    # resume: a partial file is completed with a Range request
    dest2 = tmp_path / "model2.pt"
    (tmp_path / "model2.pt.part").write_bytes(payload[:123_456])
    registry.download(url + "/model.pt", str(dest2), sha256=sha, size=len(payload),
                      progress=False)
    assert dest2.read_bytes() == payload and _RangeHandler.ranges[-1] == "bytes=123456-"
    # wrong checksum: nothing is left behind
    dest3 = tmp_path / "model3.pt"
    with pytest.raises(registry.FetchError, match="checksum mismatch"):
        registry.download(url + "/model.pt", str(dest3), sha256="0" * 64, progress=False)
    assert not dest3.exists() and not os.path.exists(str(dest3) + ".part")
    with pytest.raises(registry.FetchError, match="HTTP 404"):
        registry.download(url + "/nothing.pt", str(tmp_path / "x.pt"), progress=False)


def _closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_fetch_without_network_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DMIR_HOME", str(tmp_path))
    e = registry.Entry("toy", "adm", None, (registry.File(
        "toy.pt", (f"http://127.0.0.1:{_closed_port()}/toy.pt",)),), "toy")
    monkeypatch.setitem(registry.ENTRIES, "toy", e)
    with pytest.raises(registry.FetchError, match="cannot reach .*no network"):
        registry.fetch("toy", progress=False, timeout=2)
    assert os.listdir(tmp_path) == []
    assert main(["models", "fetch", "toy"]) == 2


def test_fetch_and_models_listing(server, tmp_path, monkeypatch, capsys):
    url, payload = server
    monkeypatch.setenv("DMIR_HOME", str(tmp_path))
    e = registry.Entry("toy", "adm", None, (registry.File(
        "toy.pt", (url + "/model.pt",), size=len(payload),
        sha256=hashlib.sha256(payload).hexdigest()),), "a toy model", "tests")
    monkeypatch.setitem(registry.ENTRIES, "toy", e)
    assert registry.local_path(e) is None
    assert main(["models", "fetch", "toy"]) == 0
    assert (tmp_path / "toy.pt").read_bytes() == payload
    capsys.readouterr()
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    toy = next(m for m in listing["named"] if m["name"] == "toy")
    assert toy["local"] == str(tmp_path / "toy.pt") and toy["size"] == len(payload)
    assert {"natural", "patch-gmm"} <= set(listing["builtin"])
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "adm-imagenet256-uncond" in out and "256x256_diffusion_uncond.pt" in out
    assert main(["models", "fetch", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
