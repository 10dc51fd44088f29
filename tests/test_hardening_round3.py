"""Issue 26 (hardening, round three): one test per cause, the cause number in each test's name,
grouped by severity.

Data loss or wrong results kept: 20 (a truncated download installed and "verified"), 19 (valid
long file names refused; a bench with --save-images aborted), 6 (the demo refusing its output
only after all the work).
Crashes with a traceback: 1 (hub ids huggingface_hub rejects), 3 (metrics setup into an
unwritable home), 4 (a malformed checksums.json), 23 (a closed output pipe).
Misleading or silent: 16 (unbounded time travel), 22 (Ctrl-C in a bench says nothing was
kept), 24 (a truncated training state says "download it again"), 25 (a bench whose every row
is an error exits 0), 26 (the other-settings refusal does not say which), 27 (gpu_run.py's
--budget and exit status).
"""
from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import cli, hub, models
from dmir.bench import results as res
from dmir.bench import runner
from dmir.checkpoints import registry
from dmir.io import atomic_write, write_image

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
PHOTO = str(DATA / "kodim05_crop64.png")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("WORLD_SIZE", None)
    return env


# ----------------------------------------------------------------------------- helpers
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``routes``: path → (body, send_length, cut): the body, whether a
    Content-Length is announced, and how many bytes are sent before the connection closes."""
    routes: dict = {}

    def do_GET(self):  # noqa: N802
        if self.path not in self.routes:
            self.send_error(404)
            return
        body, send_length, cut = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if send_length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:cut] if cut is not None else body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *a):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _toy(monkeypatch, url, name="toy.pt"):
    e = registry.Entry("toy", "adm", None, (registry.File(name, (url,)),), "a toy checkpoint")
    monkeypatch.setitem(registry.ENTRIES, "toy", e)
    return e


def _zip_checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(40000, dtype=torch.float32)}, buf)
    return buf.getvalue()


@pytest.fixture()
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    k = np.asarray(Image.open(PHOTO).convert("RGB"))
    for i, n in enumerate(["a.png", "b.png"]):
        Image.fromarray(k[:32, 32 * i:32 * i + 32]).save(d / n)
    return d


def _bench(out, data, *extra):
    return ["bench", "--data", str(data), "--size", "32", "--out", str(out), "--no-progress",
            "--task", "sr_averagepooling,scale=2", "--model", "natural", "--metrics", "psnr",
            *extra]


# ======================================================================= data loss, wrong results
def test_cause20_truncated_download_without_length_or_checksum_is_not_installed(
        server, tmp_path, monkeypatch, capsys):
    """Cause 20: a download that arrives short with no announced length and no recorded
    checksum is checked by its own structure (zip CRCs / directory, safetensors header) before
    it is installed: it is refused, nothing is installed or recorded, and the next fetch does
    not answer OK; a complete transfer of the same kind is installed and recorded."""
    ckpt = _zip_checkpoint()
    _Handler.routes = {"/cut.pt": (ckpt, False, len(ckpt) // 2),
                       "/whole.pt": (ckpt, False, None)}
    monkeypatch.setenv("DMIR_HOME", str(tmp_path))
    _toy(monkeypatch, server + "/cut.pt")
    for _ in range(2):                                  # a second fetch does not "verify" it
        assert cli.main(["models", "fetch", "toy"]) == 2
        err = capsys.readouterr().err
        assert "is damaged" in err and "truncated or corrupt zip" in err, err
        assert sum(line.startswith("dmir: error") for line in err.splitlines()) == 1
        assert not (tmp_path / "toy.pt").exists() and not (tmp_path / "toy.pt.part").exists()
        assert not (tmp_path / "checksums.json").exists()       # no hash of a bad file
    _toy(monkeypatch, server + "/whole.pt")
    assert cli.main(["models", "fetch", "toy"]) == 0
    assert (tmp_path / "toy.pt").read_bytes() == ckpt
    rec = json.loads((tmp_path / "checksums.json").read_text())[str(tmp_path / "toy.pt")]
    assert rec["sha256"] == hashlib.sha256(ckpt).hexdigest()
    # a safetensors file cut short: its header describes more bytes than arrived
    from dmir.checkpoints.reading import write_safetensors
    write_safetensors({"w": torch.zeros(5000)}, tmp_path / "src.safetensors")
    st = (tmp_path / "src.safetensors").read_bytes()
    _Handler.routes["/cut.safetensors"] = (st, False, len(st) - 100)
    with pytest.raises(registry.FetchError, match="damaged.*truncated"):
        registry.download(server + "/cut.safetensors", str(tmp_path / "m.safetensors"),
                          progress=False)
    assert not (tmp_path / "m.safetensors").exists()


def test_cause19_file_names_of_243_to_255_bytes_are_written(tmp_path, photos):
    """Cause 19: the atomic writer's temporary name fits the file system's limit whenever the
    target's name does (255 bytes, multi-byte names too), and leaves nothing behind; a bench
    with --save-images keeps such a name, and a hashed name is cut to fit."""
    names = ["a" * 255, "é" * 127, "x" * 251 + ".png", "y" * 243]
    for n in names:
        atomic_write(tmp_path / n, n.encode())
        assert (tmp_path / n).read_bytes() == n.encode()
    atomic_write(tmp_path / names[0], b"again")                   # replacing works as well
    assert (tmp_path / names[0]).read_bytes() == b"again"
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == sorted(names)
    write_image(tmp_path / ("z" * 251 + ".png"), torch.zeros(1, 3, 8, 8))
    assert (tmp_path / ("z" * 251 + ".png")).stat().st_size > 0
    # the bench's names for images that are not plain .png names: ≤ 255 bytes, still unique
    a, b = res.image_file("q" * 250 + "1.jpg"), res.image_file("q" * 250 + "2.jpg")
    assert a != b and max(len(a.encode()), len(b.encode())) <= 255 and a.endswith(".png")
    long_name = "p" * 246 + ".png"                                 # 250 bytes
    os.rename(photos / "a.png", photos / long_name)
    out = tmp_path / "run"
    assert cli.main(_bench(out, photos, "--method", "ddnm,steps=1", "--save-images")) == 0
    saved = out / "images" / "photos" / "sr_averagepooling" / "ddnm" / long_name
    assert saved.is_file() and Image.open(saved).size == (32, 32)


def test_cause06_demo_refuses_an_existing_file_before_any_work(tmp_path, monkeypatch, capsys):
    """Cause 6: `dmir demo -o FILE` is refused before the demo runs (the photos are never
    loaded), in one line, and the file is left as it was; so is a folder below a file."""
    import dmir.demo

    def no_work(*a, **k):
        raise AssertionError("the demo started working before checking -o")

    monkeypatch.setattr(dmir.demo, "demo_images", no_work)
    mine = tmp_path / "notes.txt"
    mine.write_text("mine")
    for target in (mine, mine / "sub"):
        rc = cli.main(["demo", "-o", str(target), "--size", "32", "--steps", "2", "--model",
                       "natural"])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and str(mine) in err, err
    assert mine.read_text() == "mine"


# ===================================================================================== crashes
def test_cause01_hub_id_trailing_newline_and_ids_huggingface_hub_rejects(monkeypatch, tmp_path):
    """Cause 1: ids huggingface_hub rejects (a--b/c, a trailing newline, over 96 characters, a
    part ending in '-' or '.git') are not hub ids: models.load names the problem with a
    DmirError, hub.resolve refuses them, and a validation error raised by huggingface_hub
    itself is translated too."""
    bad = ["a--b/c", "org/name\n", "a" * 97 + "/b", "org/" + "b" * 97, "org/name-",
           "org/name.git", "-org/name", "org/na..me"]
    for name in bad:
        assert not hub.is_hub_id(name), repr(name)
        with pytest.raises(hub.HubError, match="not a valid hub id"):
            hub.resolve(name)
        with pytest.raises(registry.ModelNotFoundError, match="not a hub id"):
            models.load(name)
    assert hub.is_hub_id("google/ddpm-ema-celebahq-256") and hub.is_hub_id("a" * 96 + "/b")
    hf = pytest.importorskip("huggingface_hub")
    from huggingface_hub import errors as hfe

    def rejects(*a, **k):
        raise hfe.HFValidationError("Repo id must use alphanumeric chars: 'x'")

    monkeypatch.setattr(hf, "snapshot_download", rejects)
    with pytest.raises(hub.HubError, match="huggingface_hub refuses it"):
        hub.resolve("org/name", local_only=True, cache=str(tmp_path))


def test_cause03_metrics_setup_into_an_unwritable_home(tmp_path, monkeypatch, capsys):
    """Cause 3: `dmir metrics setup` with a home that cannot be written says so in one line
    (exit 2) before anything is downloaded."""
    from dmir.metrics import install

    fetched = []
    monkeypatch.setattr(install, "_archive", lambda *a, **k: fetched.append(a))
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    homes = [a_file, a_file / "home"]
    if os.geteuid() != 0:                 # root writes into read-only folders anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        homes.append(ro)
    for home in homes:
        monkeypatch.setenv("DMIR_HOME", str(home))
        assert cli.main(["metrics", "setup"]) == 2
        err = capsys.readouterr().err
        assert "cannot write the metric networks into" in err and str(home) in err, err
        assert err.count("\n") == 1
    assert not fetched
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("content", ['[1, 2, 3]', '{"/x/toy.pt": 5, "/y": "s", "/z": null}',
                                     '"a string"', '{"/a": {"name": "toy", "sha256": 7}}'])
def test_cause04_malformed_checksums_json(content, server, tmp_path, monkeypatch, capsys):
    """Cause 4: a checksums.json that is a list, a string, or holds entries that are not
    objects (or have no string sha256) is ignored: `dmir models` and `dmir models fetch` work,
    and the file is replaced by a valid one when fetch records a download."""
    monkeypatch.setenv("DMIR_HOME", str(tmp_path))
    (tmp_path / "checksums.json").write_text(content)
    ckpt = _zip_checkpoint()
    _Handler.routes = {"/toy.pt": (ckpt, True, None)}
    _toy(monkeypatch, server + "/toy.pt")
    assert cli.main(["models"]) == 0
    assert cli.main(["models", "--json"]) == 0
    assert cli.main(["models", "fetch", "toy"]) == 0
    assert cli.main(["models", "fetch", "toy"]) == 0             # the existing copy verifies
    capsys.readouterr()
    db = json.loads((tmp_path / "checksums.json").read_text())
    assert db[str(tmp_path / "toy.pt")]["sha256"] == hashlib.sha256(ckpt).hexdigest()


def test_cause23_closed_pipe_ends_quietly():
    """Cause 23: `dmir models --json | head -c 0`: the reader closes the pipe; dmir ends with
    the status of a tool stopped by SIGPIPE (141) and prints no traceback."""
    for cmd in (["models", "--json"], ["models"], ["bench", "--list-presets"]):
        p = subprocess.Popen([sys.executable, "-m", "dmir", *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
        p.stdout.close()                        # before the child (≥ 0.2 s to start) writes
        err = p.stderr.read().decode()
        p.wait(timeout=120)
        assert p.returncode == 141 and err == "", (cmd, p.returncode, err)


# ============================================================================ misleading, silent
def test_cause16_time_travel_is_bounded_by_the_total_work(tmp_path, capsys):
    """Cause 16: --travel-repeat is bounded through the network evaluations of the whole walk
    (at most 10,000): a clear error before any work, no output; RePaint's setting runs."""
    from dmir.solvers.schedules import MAX_NFE, make_plan
    from dmir.errors import ParameterError

    assert MAX_NFE == 10_000
    assert make_plan(250, 1000, "uniform", 10, 10).nfe == 2410          # RePaint's 250/10/10
    with pytest.raises(ParameterError, match="10,900 network evaluations"):
        make_plan(1000, 1000, "uniform", 10, 11)
    out = tmp_path / "r.png"
    rc = cli.main(["restore", PHOTO, "-o", str(out), "--task", "denoising", "--degrade",
                   "--model", "natural", "--method", "ddnm", "--steps", "3", "--travel-length",
                   "2", "--travel-repeat", "100000"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert "200,001 network evaluations" in err and "at most 10,000" in err
    assert "travel_repeat" in err and not out.exists()


def test_cause22_ctrl_c_in_a_bench_says_what_was_kept(photos, tmp_path, monkeypatch, capsys):
    """Cause 22: Ctrl-C during `dmir bench` says how many results are kept and how to resume
    (not "no output written"); rerunning the command completes the run."""
    real = runner._restore_rows
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "_restore_rows", interrupted)
    out = tmp_path / "run"
    args = _bench(out, photos, "--method", "ddnm,steps=1")
    assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert "the 2 results finished so far are kept in" in err, err
    assert "run the same command again to resume" in err and "no output written" not in err
    monkeypatch.setattr(runner, "_restore_rows", real)
    assert cli.main(args) == 0
    assert len(res.read_jsonl(out / res.RESULTS)[0]) == 2 * 2
    # interrupted before anything was finished: says so
    monkeypatch.setattr(runner, "_restore_rows", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    assert cli.main(_bench(tmp_path / "new", photos)) == 130
    assert "no results were written to" in capsys.readouterr().err


def test_cause24_truncated_training_state_does_not_say_download(tmp_path):
    """Cause 24: a truncated training state is reported as truncated with what to do about a
    file dmir wrote itself (delete it or use another state folder), not "download it again";
    a truncated downloaded checkpoint still says to download it again."""
    from dmir.checkpoints.reading import CheckpointError, read_safetensors, write_safetensors
    from dmir.train import TrainingError, load_state

    p = tmp_path / "state.safetensors"
    write_safetensors({"w": torch.zeros(4000)}, p)
    p.write_bytes(p.read_bytes()[:-1000])
    with pytest.raises(TrainingError) as e:
        load_state(str(p))
    msg = str(e.value)
    assert "truncated" in msg and "delete it to start over" in msg and "download" not in msg
    with pytest.raises(CheckpointError, match="truncated.*download it again"):
        read_safetensors(p)


@pytest.mark.parametrize("spec,expected", [
    (["--method", "ddnm,eta=5"], "--method ddnm: eta must be in [0, 1], got 5.0"),
    (["--method", "ddnm,foo=1"], "unexpected keyword argument 'foo'"),
    (["--method", "ddnm,steps=5000"], "steps must be in 1..1000"),
    (["--method", "ddnm", "--steps", "5000"], "--method ddnm with --steps 5000"),
    (["--method", "nosuch"], "unknown method 'nosuch'"),
    (["--task", "sr_averagepooling,scale=0", "--method", "ddnm"], "--task sr_averagepooling"),
])
def test_cause25_bench_refuses_bad_specs_before_running(spec, expected, photos, tmp_path,
                                                        capsys):
    """Cause 25: a method or task spec no row could run with is refused up front — exit 2,
    one line naming the spec and what is allowed — instead of a run of error rows that exits
    0; nothing is written."""
    out = tmp_path / "run"
    args = ["bench", "--data", str(photos), "--size", "32", "--out", str(out), "--no-progress",
            "--model", "natural", *([] if "--task" in spec else
                                    ["--task", "sr_averagepooling,scale=2"]), *spec]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err
    assert not out.exists()


def test_cause26_other_settings_refusal_names_the_setting(photos, tmp_path, capsys):
    """Cause 26: resuming into a folder with results of other settings names each setting that
    differs (stored and new value); the A+y row never shows `model None, steps 0`."""
    out = tmp_path / "run"
    assert cli.main(_bench(out, photos, "--method", "ddnm,steps=2")) == 0
    capsys.readouterr()
    assert cli.main(_bench(out, photos, "--method", "ddnm,steps=3")) == 2
    err = capsys.readouterr().err
    assert "ddnm computed with other settings (method.steps: stored 2, now 3)" in err, err
    assert cli.main(_bench(out, photos, "--method", "ddnm,steps=2", "--seed", "4")) == 2
    err = capsys.readouterr().err
    assert "seed: stored 0, now 4" in err and "None" not in err, err
    # without the folder's plan.json the stored values come from the record: A+y has no model
    os.remove(out / "plan.json")
    assert cli.main(_bench(out, photos, "--method", "ddnm,steps=2", "--seed", "4")) == 2
    err = capsys.readouterr().err
    assert "A+y computed with other settings (stored: seed 0)" in err, err
    assert "model None" not in err and "steps 0" not in err


def _gpu_run():
    if "gpu_run" in sys.modules:
        return sys.modules["gpu_run"]
    spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "benchmarks" / "gpu_run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_cause27_gpu_run_budget_and_exit_status(tmp_path, capsys):
    """Cause 27: benchmarks/gpu_run.py refuses a --budget that is not a positive, finite number
    of seconds (before any stage); a run whose summary says FAILED (stage 1's "incomplete") or
    whose stage failed exits non-zero, naming it; a clean run (skipped stages included) exits
    0. The docstring's --small time is the measured CPU time (not "< 1 min"), and --small's
    default budget lets a loaded machine complete it."""
    g = _gpu_run()
    for budget in ("-5", "nan", "0", "inf"):
        with pytest.raises(SystemExit) as e:
            g.main(["--small", "--budget", budget, "--out", str(tmp_path / "o")])
        assert e.value.code == 2
        assert "--budget must be a number of seconds" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    incomplete = {"stages": {"1": {"status": "ok", "summary": "20/22 methods; min PSNR vs CPU: "
                                   "float32 48.1 dB; FAILED: incomplete"},
                             "2": {"status": "ok", "summary": "fine"}}}
    assert g.exit_status(incomplete) == 1
    assert "gpu_run: FAILED stage 1: 20/22 methods" in capsys.readouterr().err
    assert g.exit_status({"stages": {"3": {"status": "failed",
                                           "summary": "RuntimeError: boom"}}}) == 1
    assert g.exit_status({"stages": {"1": {"status": "ok", "summary": "all pass"},
                                     "4": {"status": "skipped"}}}) == 0
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_run.py"), "--small",
                        "--budget", "nan", "--out", str(tmp_path / "p")], env=_env(),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--budget must be" in p.stderr
    assert "--small [--out DIR]   # CPU, tiny models" in g.__doc__
    assert "< 1 min" not in g.__doc__ and "about 47 s of CPU time" in g.__doc__
    assert g.SMALL_BUDGET_S >= 1800
