"""Issue 23, point 8 (user-facing polish): the demo shows its progress, `dmir models` answers at
once without loading a network, bench and restore share their default prior, FID/KID warn on
small sets, and the plots have numbers on both axes and labels that fit."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import cli, models, plot

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


# ----------------------------------------------------------------------------- dmir demo
def test_demo_announces_each_task_and_shows_the_nfe_bar(tmp_path, monkeypatch, capsys):
    import dmir.log

    monkeypatch.setattr(dmir.log, "isatty", lambda stream: True)     # as on a terminal
    assert cli.main(["demo", "-o", str(tmp_path / "d"), "--size", "32", "--steps", "3",
                     "--model", "natural"]) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("task ")]
    assert [lines[i].split(":")[0] for i in starts] == [f"task {k}/4" for k in range(1, 5)]
    # each announcement comes before that task's result line
    assert all("A+y" in lines[i + 1] for i in starts)
    assert "task 1/4:" in cap.err and "NFE" in cap.err                # the bar, per task
    capsys.readouterr()
    assert cli.main(["-q", "demo", "-o", str(tmp_path / "q"), "--size", "32", "--steps", "2",
                     "--model", "natural"]) == 0
    assert "NFE" not in capsys.readouterr().err                         # -q: no bar


def test_demo_library_progress_callbacks(tmp_path):
    from dmir.demo import run_demo

    seen: dict = {}

    class Bar:
        def __init__(self, desc):
            self.desc, self.calls, self.closed = desc, [], False
            seen[desc] = self

        def __call__(self, i, n):
            self.calls.append((i, n))

        def close(self):
            self.closed = True

    logged = []
    run_demo(str(tmp_path / "d"), size=32, steps=4, model="natural", log=logged.append,
             progress=Bar)
    assert list(seen) == [f"task {k}/4" for k in range(1, 5)]
    for b in seen.values():
        assert b.closed and b.calls[-1] == (4, 4) and len(b.calls) == 4
    assert sum(m.startswith("task ") for m in logged) == 4


# ----------------------------------------------------------------------------- dmir models
def test_models_listing_loads_no_network_and_gives_sizes():
    code = ("import sys, io, contextlib\nfrom dmir import cli\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    rc = cli.main(['models']) + cli.main(['models', '--json'])\n"
            "heavy = sorted(m for m in sys.modules if m == 'torch' or m.startswith("
            "('dmir.models.nets', 'dmir.models.network', 'dmir.models.loading', "
            "'dmir.models.natural', 'dmir.models.patch_gmm', 'safetensors')))\n"
            "print(rc, heavy)\nprint(buf.getvalue())\n")
    p = subprocess.run([sys.executable, "-c", code], env=_env(), cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    first, rest = p.stdout.split("\n", 1)
    assert first == "0 []", first                       # no torch, no network, no weights
    from dmir.models.builtin import builtin_info, builtin_names

    listing = json.loads(rest[rest.index("{"):rest.rindex("}") + 1])["builtin"]
    assert list(listing) == builtin_names()
    ddpm = builtin_info("dmir-ddpm")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in
               os.walk(models.learned_prior_path()) for f in fs if f.endswith(".safetensors"))
    assert ddpm["size"] >= size > 4e6 and f"{ddpm['size'] / 1e6:.1f} MB" in listing["dmir-ddpm"]
    assert "no weights" in listing["natural"] and "MB" in listing["patch-gmm"]
    for line in listing.values():
        assert len(line) > 40 and line.endswith("]")
    assert "dmir-ddpm" in rest and "learned DDPM UNet" in rest


# ----------------------------------------------------------------------------- defaults
def test_bench_and_restore_share_the_default_prior(tmp_path):
    from dmir import pipeline
    from dmir.bench import command, runner
    from dmir.cli import _parser

    assert inspect.signature(pipeline.restore).parameters["model"].default == \
        models.DEFAULT_MODEL == "dmir-ddpm"
    assert _parser(["restore"]).parse_args(["restore", "x.png", "-o", "y.png", "--task",
                                            "denoising"]).model == models.DEFAULT_MODEL
    a = _parser(["bench"]).parse_args(["bench", "--data", str(ROOT / "tests/data/bench"),
                                       "--task", "denoising", "--out", str(tmp_path)])
    plan = runner.make_plan(command.adhoc_preset(a), runner.RunOptions(out=str(tmp_path)))
    assert [d.model for d in plan.datasets] == [models.DEFAULT_MODEL]


# ----------------------------------------------------------------------------- FID / KID
def test_fid_and_kid_warn_on_small_sets():
    from dmir.bench.fid import compare
    from dmir.metrics.fid import (FID_MIN_IMAGES, KID_MIN_IMAGES, FeatureStats,
                                  SmallSampleWarning, warn_small_sets)

    assert (FID_MIN_IMAGES, KID_MIN_IMAGES) == (2048, 100)
    g = torch.Generator().manual_seed(0)
    a = FeatureStats(8, True).update(torch.randn(4, 8, generator=g))
    b = FeatureStats(8, True).update(torch.randn(4, 8, generator=g))
    with pytest.warns(SmallSampleWarning) as rec:
        v = compare(a, b, with_kid=True)
    msgs = [str(w.message) for w in rec]
    assert any(m.startswith("FID from 4 and 4 images is biased") for m in msgs)
    assert any(m.startswith("KID from 4 and 4 images is too noisy") for m in msgs)
    assert v["fid"] > 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallSampleWarning)
        warn_small_sets(2048, 5000)                                   # enough: silent
        warn_small_sets(100, 120, kid=True)
    with pytest.warns(SmallSampleWarning, match="FID from 2047 and 5000"):
        warn_small_sets(2047, 5000)


# ----------------------------------------------------------------------------- plots
def _dark(a):
    return a < 128


def _frame_left(a):
    """The x of the plot frame's left edge: the first column dark over most of the height."""
    cols = _dark(a).mean(0)
    return int(np.argmax(cols > 0.5))


@pytest.mark.parametrize("logy,ys", [(False, [20.2, 22.1, 24.9]),
                                     (True, [0.031, 0.036, 0.045]),      # < a decade
                                     (True, [0.002, 0.03, 1.2])])
def test_pillow_plot_has_y_tick_numbers(tmp_path, logy, ys):
    path = tmp_path / "p.png"
    plot.line_plot({"a": [(10, ys[0]), (20, ys[1]), (50, ys[2])]}, str(path), xlabel="NFE",
                   ylabel="", logy=logy, backend="pillow")
    a = np.asarray(Image.open(path).convert("L"))
    x = _frame_left(a)
    assert x > 20
    # digits left of the frame, below the label line: at least three tick labels' worth
    band = _dark(a[45:-50, :x - 5])
    rows = np.flatnonzero(band.any(1))
    groups = np.count_nonzero(np.diff(rows) > 3) + 1 if rows.size else 0
    assert groups >= 3, (logy, ys, groups)
    ticks = plot._log_ticks(np.log10(ys[0]), np.log10(ys[-1])) if logy else \
        plot._nice_ticks(ys[0], ys[-1])
    assert len(ticks) >= 3


def test_pillow_plot_legend_and_grid_titles_are_not_cut(tmp_path):
    long = "ddnm-equs+ with a rather long label"
    plot.line_plot({"A+y": [(1, 20.0)], long: [(10, 21.0), (20, 22.0)]}, str(tmp_path / "l.png"),
                   backend="pillow")
    font = plot._font()
    img = Image.open(tmp_path / "l.png")
    a = np.asarray(img.convert("L"))
    x = _frame_left(a)
    assert img.width >= plot._width(font, long) + 28 + x     # the legend fits the canvas
    # grid titles: wrapped, never cut, each line within its column
    titles = ["measurement", "A+y", "ddnm (dmir-ddpm)", "ground truth"]
    for t in titles + ["a-very-long-single-word-title-without-spaces"]:
        lines = plot._wrap(font, t, 60)
        assert "".join(lines).replace(" ", "") == t.replace(" ", "")
        assert all(plot._width(font, ln) <= 60 for ln in lines)
    r = np.random.default_rng(0).random((3, 32, 32))
    plot.image_grid([[r] * 4] * 2, str(tmp_path / "g.png"), col_titles=titles,
                    row_titles=["sr4: astronaut", "inpaint: coffee"])
    g = Image.open(tmp_path / "g.png")
    assert g.width >= 4 * plot._width(font, "measurement")


def test_plot_backend_choice(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)             # not installed
    monkeypatch.delenv("DMIR_PLOT", raising=False)
    assert plot.backend() == "pillow"
    with pytest.raises(Exception, match=r'pip install "dmir\[plot\]"'):
        plot.backend("matplotlib")
    monkeypatch.setenv("DMIR_PLOT", "pillow")
    assert plot.backend() == "pillow"
    with pytest.raises(Exception, match="must be 'matplotlib' or 'pillow'"):
        plot.backend("svg")


def test_matplotlib_plot_when_installed(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.delenv("DMIR_PLOT", raising=False)
    assert plot.backend() == "matplotlib"
    plot.line_plot({"a": [(1, 0.5), (10, 0.05)]}, str(tmp_path / "m.png"), logy=True,
                   xlabel="step", ylabel="loss", backend="matplotlib")
    assert Image.open(tmp_path / "m.png").size[0] > 300
