"""The ``dmir`` command line: help, successful runs, and every bad-input case
(one-line ``dmir: error: ...`` on stderr, exit status 2, no output file left behind)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dmir
from dmir import cli, io as dio, operators, solvers
from dmir.errors import InputError

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def imgs(tmp_path):
    """Small test images made from the shipped 64×64 Kodak crop."""
    k = Image.open(DATA / "kodim05_crop64.png").convert("RGB")
    k32 = k.crop((8, 8, 40, 40))
    p = {
        "rgb": tmp_path / "clean.png", "lr": tmp_path / "lr.png", "gray": tmp_path / "gray.png",
        "rgba": tmp_path / "rgba.png", "odd": tmp_path / "odd.png", "r48": tmp_path / "r48.png",
        "mask": tmp_path / "mask.png", "mask_small": tmp_path / "mask16.png",
        "text": tmp_path / "text.png", "nan": tmp_path / "nan.npy", "rgb16": tmp_path / "c16.png",
    }
    k32.save(p["rgb"])
    k32.resize((16, 16), Image.BICUBIC).save(p["lr"])
    k32.convert("L").save(p["gray"])
    k32.convert("RGBA").save(p["rgba"])
    k.crop((0, 0, 33, 32)).save(p["odd"])
    k.crop((0, 0, 48, 32)).save(p["r48"])
    m = np.full((32, 32), 255, np.uint8)
    m[10:20, 8:24] = 0
    Image.fromarray(m).save(p["mask"])
    Image.fromarray(m[:16, :16]).save(p["mask_small"])
    p["text"].write_text("this is not a PNG")
    a = np.asarray(k32) / 255.0
    a[3, 4, 1] = np.nan
    np.save(p["nan"], a)
    dio.write_image(p["rgb16"], dio.read_image(p["rgb"]), bits=16)
    return p


def run(capsys, *args):
    """Run the CLI; restore runs use the fast analytic prior unless a test names a model (the
    default learned prior is exercised in test_learned_prior.py)."""
    args = [str(a) for a in args]
    if args and args[0] == "restore" and "--model" not in args and "--help" not in args:
        args += ["--model", "natural"]
    rc = cli.main(args)
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- help
def test_help_lists_tasks_and_methods(capsys):
    rc, out, _ = run(capsys, "restore", "--help")
    assert rc == 0
    for name in operators.names() + solvers.names():
        assert name in out
    for flag in ("--task", "--method", "--scale", "--mask", "--kernel", "--degrade", "--bits",
                 "--travel-length", "--poisson", "--weights", "--device", "gauss:SIGMA"):
        assert flag in out
    rc, out, _ = run(capsys, "--help")
    assert rc == 0 and "restore" in out and "models" in out and "sr_bicubic" in out


def test_python_m_dmir_help():
    r = subprocess.run([sys.executable, "-m", "dmir", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=Path(dmir.__file__).parent.parent)
    assert r.returncode == 0, r.stderr
    assert "restore" in r.stdout and "ddnm" in r.stdout


def test_models_command(capsys):
    rc, out, _ = run(capsys, "models")
    assert rc == 0 and "natural" in out


# ----------------------------------------------------------------------------- successful runs
def test_restore_degrade_sr(capsys, imgs, tmp_path):
    out_png = tmp_path / "out.png"
    rc, out, err = run(capsys, "restore", imgs["rgb"], "-o", out_png, "--task",
                       "sr_averagepooling", "--scale", 2, "--steps", 5, "--degrade")
    assert rc == 0, err
    assert "PSNR" in out and "SSIM" in out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("A+y", "ddnm"))]
    assert len(rows) == 2
    for r in rows:
        psnr, ssim = float(r[-2]), float(r[-1])
        assert 10 < psnr < 60 and 0 < ssim <= 1
    x = dio.read_image(out_png)
    assert x.shape == (1, 3, 32, 32)
    assert os.listdir(tmp_path).count("out.png") == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    # same seed → same bytes
    out2 = tmp_path / "out2.png"
    assert run(capsys, "restore", imgs["rgb"], "-o", out2, "--task", "sr_averagepooling",
               "--scale", 2, "--steps", 5, "--degrade")[0] == 0
    assert out2.read_bytes() == out_png.read_bytes()


def test_restore_given_measurements(capsys, imgs, tmp_path):
    # sr: the input is the low-resolution photo; output is s times larger
    rc, _, err = run(capsys, "restore", imgs["lr"], "-o", tmp_path / "sr.png", "--task",
                     "sr_bicubic_aa", "--scale", 2, "--steps", 4, "--method", "ddnm-equs+")
    assert rc == 0, err
    assert dio.read_image(tmp_path / "sr.png").shape == (1, 3, 32, 32)
    # colorization: gray in, RGB out, 16-bit
    rc, _, err = run(capsys, "restore", imgs["gray"], "-o", tmp_path / "col.png", "--task",
                     "colorization", "--steps", 4, "--bits", 16)
    assert rc == 0, err
    assert Image.open(tmp_path / "col.png").mode == "RGB"
    assert dio.read_image(tmp_path / "col.png").shape == (1, 3, 32, 32)
    # inpainting with a PNG mask; RGBA input: alpha dropped, with a note
    rc, _, err = run(capsys, "restore", imgs["rgba"], "-o", tmp_path / "inp.png", "--task",
                     "inpainting", "--mask", imgs["mask"], "--steps", 4)
    assert rc == 0, err
    assert "alpha" in err
    # gray image, noisy: denoising keeps one channel; 16-bit input
    rc, _, err = run(capsys, "restore", imgs["gray"], "-o", tmp_path / "den.png", "--task",
                     "denoising", "--sigma-y", 0.05, "--steps", 4)
    assert rc == 0, err
    assert dio.read_image(tmp_path / "den.png").shape == (1, 1, 32, 32)
    rc, _, err = run(capsys, "restore", imgs["rgb16"], "-o", tmp_path / "db.png", "--task",
                     "deblur", "--kernel", "motion:5:30", "--steps", 4, "--sigma-y", 0.01)
    assert rc == 0, err


@pytest.mark.parametrize("task,extra", [
    ("cs_walshhadamard", ["--ratio", "0.5"]),
    ("cs_blockbased", ["--block", "16"]),
    ("deblur", ["--kernel", "gauss:1.5"]),
    ("deblur", ["--kernel", "box:3"]),
    ("inpainting", ["--mask", "MASK"]),
    ("colorization", ["--weights", "0.299,0.587,0.114"]),
    ("denoising", ["--poisson", "50"]),
])
def test_restore_degrade_tasks(capsys, imgs, tmp_path, task, extra):
    extra = [str(imgs["mask"]) if e == "MASK" else e for e in extra]
    rc, out, err = run(capsys, "restore", imgs["rgb"], "-o", tmp_path / "o.png", "--task", task,
                       "--steps", 3, "--degrade", *extra)
    assert rc == 0, err
    assert "A+y" in out and (tmp_path / "o.png").exists()


def test_kernel_specs(tmp_path):
    g = cli.parse_kernel("gauss:1.0")
    assert g.shape == (7, 7) and abs(g.sum() - 1) < 1e-12
    assert cli.parse_kernel("gauss:2:5").shape == (5, 5)
    assert np.allclose(cli.parse_kernel("box:3"), 1 / 9)
    m = cli.parse_kernel("motion:7:45")
    assert abs(m.sum() - 1) < 1e-12 and np.linalg.matrix_rank(m, tol=1e-8) > 1   # non-separable
    h = cli.parse_kernel("motion:5:0")
    assert np.count_nonzero(h.sum(1) > 1e-9) == 1                                # one row
    np.save(tmp_path / "k.npy", np.ones((3, 5)) * 4)
    assert np.allclose(cli.parse_kernel(str(tmp_path / "k.npy")), 1 / 15)


# ----------------------------------------------------------------------------- bad input
BAD = [
    (["--task", "nope"], "unknown task 'nope'"),
    (["--task", "denoising", "--method", "nope"], "unknown method 'nope'"),
    (["--task", "denoising", "--model", "nope"], "unknown model 'nope'"),
    (["--task", "denoising", "--steps", "-1"], "--steps must be a positive integer"),
    (["--task", "denoising", "--steps", "0"], "--steps must be a positive integer"),
    (["--task", "denoising", "--steps", "abc"], "invalid int value"),
    (["--task", "denoising", "--sigma-y", "1.5"], "--sigma-y must be in [0, 1]"),
    (["--task", "denoising", "--sigma-y", "-0.1"], "--sigma-y must be in [0, 1]"),
    (["--task", "denoising", "--eta", "2"], "--eta must be in [0, 1]"),
    (["--task", "denoising", "--eta", "nan"], "--eta must be in [0, 1]"),
    (["--task", "denoising", "--poisson", "0"], "--poisson must be a positive"),
    (["--task", "denoising", "--seed", "-1"], "--seed"),
    (["--task", "denoising", "--bits", "12"], "invalid choice"),
    (["--task", "denoising", "--device", "tpu"], "invalid choice"),
    (["--task", "sr_bicubic"], "needs --scale"),
    (["--task", "sr_bicubic", "--scale", "1"], "--scale must be an integer ≥ 2"),
    (["--task", "deblur_gauss", "--scale", "2"], "--scale does not apply"),
    (["--task", "inpainting"], "needs --mask"),
    (["--task", "inpainting", "--mask", "MASK_SMALL"], "mask must be 32x32"),
    (["--task", "inpainting", "--mask", "MISSING"], "does not exist"),
    (["--task", "deblur"], "needs --kernel"),
    (["--task", "deblur", "--kernel", "blur:3"], "neither a kernel spec"),
    (["--task", "deblur", "--kernel", "gauss:x"], "not a number"),
    (["--task", "deblur", "--kernel", "box:64"], "larger than the image"),
    (["--task", "colorization", "--weights", "1,2"], "2 channel weights"),
    (["--task", "colorization", "--weights", "a,b,c"], "--weights must be"),
    (["--task", "cs_walshhadamard"], "needs --degrade"),
    (["--task", "denoising", "--steps", "5000"], "steps must be in 1..1000"),
    (["--task", "denoising", "--travel-length", "9", "--travel-repeat", "2", "--steps", "5"],
     "travel_length"),
]


def _check_failure(rc, out, err, out_png, needle):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dmir: error: ")
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert not out_png.exists()
    assert not [f for f in os.listdir(out_png.parent) if f.endswith(".tmp")]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options(capsys, imgs, tmp_path, args, needle):
    args = [{"MASK_SMALL": str(imgs["mask_small"]),
             "MISSING": str(tmp_path / "none.npy")}.get(a, a) for a in args]
    out_png = tmp_path / "out.png"
    rc, out, err = run(capsys, "restore", imgs["rgb"], "-o", out_png, *args)
    _check_failure(rc, out, err, out_png, needle)


@pytest.mark.parametrize("key,args,needle", [
    ("odd", ["--task", "sr_averagepooling", "--scale", "2", "--degrade"],
     "32x33 is not divisible by scale 2"),
    ("r48", ["--task", "cs_walshhadamard", "--degrade"], "not a power of two"),
    ("r48", ["--task", "cs_blockbased", "--degrade"], "multiple of the block size 32"),
    ("gray", ["--task", "colorization", "--degrade"], "colour (RGB) clean image"),
    ("nan", ["--task", "denoising"], "NaN or Inf"),
    ("text", ["--task", "denoising"], "not a recognised image"),
    ("missing", ["--task", "denoising"], "does not exist"),
    ("dir", ["--task", "denoising"], "is a directory"),
])
def test_bad_inputs(capsys, imgs, tmp_path, key, args, needle):
    src = {"missing": tmp_path / "missing.png", "dir": tmp_path}.get(key) or imgs[key]
    out_png = tmp_path / "out.png"
    rc, out, err = run(capsys, "restore", src, "-o", out_png, *args)
    _check_failure(rc, out, err, out_png, needle)


@pytest.mark.parametrize("target,needle", [
    ("nodir/out.png", "does not exist"),
    ("out.jpg", "extension .png"),
    ("clean.png/out.png", "does not exist"),
])
def test_unwritable_output(capsys, imgs, tmp_path, target, needle):
    out_png = tmp_path / target
    rc, out, err = run(capsys, "restore", imgs["rgb"], "-o", out_png, "--task", "denoising",
                       "--steps", 2)
    assert rc == 2 and err.startswith("dmir: error: ") and needle in err
    assert len(err.strip().splitlines()) == 1 and not out_png.exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can write into read-only folders")
def test_read_only_folder(capsys, imgs, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc, _, err = run(capsys, "restore", imgs["rgb"], "-o", ro / "o.png", "--task",
                         "denoising", "--steps", 2)
        assert rc == 2 and "not writable" in err and not (ro / "o.png").exists()
    finally:
        ro.chmod(0o700)


def test_missing_command_and_arguments(capsys, imgs, tmp_path):
    for args in ([], ["restore", imgs["rgb"], "--task", "denoising"],
                 ["restore", imgs["rgb"], "-o", tmp_path / "o.png"], ["frobnicate"]):
        rc, _, err = run(capsys, *args)
        assert rc == 2 and err.startswith("dmir: error: ")
        assert len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- interrupted runs
class _FailingSampler:
    """Calls progress a couple of times, then fails like a long run interrupted halfway."""

    def __init__(self, exc):
        self.exc, self.nfe = exc, 0

    def sample(self, y, x_T=None, generator=None, progress=None):
        for i in (1, 2):
            if progress:
                progress(i, 10)
        raise self.exc


@pytest.mark.parametrize("exc,code,needle", [
    (KeyboardInterrupt(), 130, "interrupted"),
    (InputError("the measurement y contains NaN or Inf values"), 2, "NaN or Inf"),
])
def test_no_output_when_sampling_fails(capsys, imgs, tmp_path, monkeypatch, exc, code, needle):
    monkeypatch.setattr(solvers, "build", lambda *a, **k: _FailingSampler(exc))
    out_png = tmp_path / "out.png"
    out_png.write_bytes(b"previous result")          # an existing file is left untouched
    rc, _, err = run(capsys, "restore", imgs["rgb"], "-o", out_png, "--task", "denoising",
                     "--steps", 10)
    assert rc == code and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert out_png.read_bytes() == b"previous result"
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_samples_average_and_validation(tmp_path, capsys):
    """--samples K writes the mean of K posterior samples; it must be a positive integer."""
    from dmir.cli import main
    src = tmp_path / "clean.png"
    Image.open(os.path.join(os.path.dirname(__file__), "data", "kodim05_crop64.png")).save(src)
    out = tmp_path / "o.png"
    assert main(["restore", str(src), "-o", str(out), "--task", "sr_averagepooling", "--scale",
                 "2", "--degrade", "--steps", "5", "--samples", "3"]) == 0
    assert "mean of 3 samples" in capsys.readouterr().out and out.exists()
    out2 = tmp_path / "o2.png"
    assert main(["restore", str(src), "-o", str(out2), "--task", "sr_averagepooling", "--scale",
                 "2", "--degrade", "--samples", "0"]) == 2
    assert "--samples" in capsys.readouterr().err and not out2.exists()


@pytest.mark.parametrize("extra,needle", [
    (["--task", "sr_averagepooling", "--scale", "1000"], "3x64000x64000"),    # issue 14 cause 8
    (["--task", "denoising", "--samples", "100000"], "100000 sample"),
])
def test_runs_that_cannot_fit_in_memory_are_refused_up_front(tmp_path, capsys, extra, needle):
    from dmir.cli import main
    src = tmp_path / "in.png"
    Image.open(os.path.join(os.path.dirname(__file__), "data", "kodim05_crop64.png")).save(src)
    out = tmp_path / "o.png"
    t0 = time.perf_counter()
    rc = main(["restore", str(src), "-o", str(out), "--steps", "2", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and "available" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
    assert time.perf_counter() - t0 < 10            # refused before any work


def test_cpu_allocator_failure_is_one_line(tmp_path, capsys, monkeypatch):
    """torch's CPU allocator raises RuntimeError, not MemoryError: still one line, exit 2."""
    from dmir import cli
    src = tmp_path / "in.png"
    Image.open(os.path.join(os.path.dirname(__file__), "data", "kodim05_crop64.png")).save(src)

    def boom(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 1099511627776 bytes.")
    from dmir import operators
    monkeypatch.setattr(operators, "build", boom)
    out = tmp_path / "o.png"
    rc = cli.main(["restore", str(src), "-o", str(out), "--task", "denoising", "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "out of memory" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
