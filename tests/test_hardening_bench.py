"""Issue 14 (audit hardening), ``dmir bench``: one test per cause, the cause number in each
test's name.

Data loss: 2 (two runs on one --out; the merge under a concurrent appender), 3 (--save-images
names that sanitise alike), 5 (a refused resume must not overwrite plan.json).
Misleading output: 19 (a metric's mean over a subset of the images).
"""
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmir import cli
from dmir.bench import results as res
from dmir.bench import runner

ROOT = Path(__file__).parents[1]
DATA = Path(__file__).parent / "data"


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


@pytest.fixture()
def photos(tmp_path):
    """Four different 32×32 photos whose names sanitise alike in pairs."""
    k = np.asarray(Image.open(DATA / "kodim05_crop64.png").convert("RGB"))
    d = tmp_path / "photos"
    d.mkdir()
    names = ["a b.png", "a_b.png", "x.png", "x.jpg"]
    for i, n in enumerate(names):
        y, x = (i // 2) * 32, (i % 2) * 32
        Image.fromarray(k[y:y + 32, x:x + 32]).save(d / n, quality=95)
    return d


def _bench(out, data, *extra):
    return ["bench", "--data", str(data), "--size", "32", "--out", str(out), "--no-progress",
            "--task", "sr_averagepooling,scale=2", "--model", "natural",
            "--metrics", "psnr", "ssim", "cons", *extra]


def _rows(out):
    return res.read_jsonl(os.path.join(out, res.RESULTS))[0]


# ----------------------------------------------------------------------------- cause 2
def test_cause2_second_run_on_the_same_out_is_refused_with_the_holders_pid(photos, tmp_path,
                                                                          capsys):
    out = tmp_path / "run"
    code = ("import sys, time\nfrom dmir.bench.results import RunLock\n"
            "RunLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = cli.main(_bench(out, photos, "--method", "ddnm,steps=2"))
        err = capsys.readouterr().err
        assert rc == 2, err
        assert f"in use by another dmir bench run (pid {holder.pid}" in err
        assert len(err.strip().splitlines()) == 1
        assert not (out / "results.jsonl").exists() and not (out / "plan.json").exists()
    finally:
        holder.kill()
        holder.wait()
    # the OS released the lock with the process (a killed run never blocks the folder)
    assert cli.main(_bench(out, photos, "--method", "ddnm,steps=2")) == 0
    assert len(_rows(out)) == 4 * 2


def test_cause2_merge_never_replaces_results_under_a_concurrent_appender(tmp_path):
    """A run appending to results.jsonl while another process (a shard) merges: the merge
    must not replace the file, or every later append goes to the unlinked old file (the audit
    kept 3 of 16 records)."""
    out = tmp_path / "out"
    rec = lambda i: {"dataset": "d", "task": "t", "method": "m", "image": f"{i}.png",  # noqa
                     "psnr": float(i)}
    lock = res.RunLock(out)
    lock.acquire()
    try:
        with res.ResultWriter(out / res.RESULTS) as w:
            w.write(rec(0))
            with res.ResultWriter(out / res.part_name(1, 2)) as shard:
                shard.write(rec(1))
            before = os.stat(out / res.RESULTS).st_ino
            notes = []
            rows = res.merge(out, log=notes.append)    # another process would do the same
            assert sorted(r["image"] for r in rows) == ["0.png", "1.png"]
            assert os.stat(out / res.RESULTS).st_ino == before
            assert notes and f"pid {os.getpid()}" in notes[0]
            w.write(rec(2))                            # the appender goes on
        assert sorted(r["image"] for r in _rows(out)) == ["0.png", "2.png"]
        # the run that holds the lock may merge (it is the appender)
        rows = res.merge(out, lock=lock)
        assert len(rows) == 3 and os.stat(out / res.RESULTS).st_ino != before
    finally:
        lock.release()
    with res.ResultWriter(out / res.part_name(0, 2)) as shard:
        shard.write(rec(3))
    assert len(res.merge(out)) == 4 and len(_rows(out)) == 4     # free again: rewritten
    with pytest.raises(res.FolderInUse, match=f"pid {os.getpid()}"):
        with res.RunLock(out):
            res.RunLock(out).acquire()


# ----------------------------------------------------------------------------- cause 3
def test_cause3_saved_images_never_share_a_file(photos, tmp_path):
    out = tmp_path / "run"
    assert cli.main(_bench(out, photos, "--method", "ddnm,steps=2", "--save-images")) == 0
    for method in ("A+y", "ddnm"):
        d = out / "images" / "photos" / "sr_averagepooling" / method
        files = sorted(p.name for p in d.iterdir())
        assert len(files) == 4, files
        assert "a_b.png" in files and "x.png" in files                  # .png names kept
        assert any(f.startswith("x.jpg~") for f in files)              # extension kept
        assert any(f.startswith("a_b~") for f in files)
        assert len({(d / f).read_bytes() for f in files}) == 4          # four different images
    assert runner.image_file("x.jpg") == runner.image_file("x.jpg")     # stable
    assert runner.image_file("sub/k.png") == "sub/k.png"
    names = {runner.image_file(n) for n in ("a b.png", "a_b.png", "a?b.png", "x.png", "x.jpg",
                                            "x.JPG", "x", "x.png.png", "sub dir/x.png")}
    assert len(names) == 9 and all(n.endswith(".png") for n in names)


def test_cause3_labels_that_share_a_folder_are_refused(photos, tmp_path, capsys):
    rc = cli.main(_bench(tmp_path / "r", photos, "--method", "ddnm,steps=2,label=a b",
                         "--method", "ddnm,steps=3,label=a_b"))
    err = capsys.readouterr().err
    assert rc == 2 and "would share the folder 'a_b'" in err


# ----------------------------------------------------------------------------- cause 5
def test_cause5_refused_resume_keeps_plan_json(photos, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_bench(out, photos, "--method", "ddnm,steps=2")) == 0
    plan = (out / "plan.json").read_bytes()
    n = len(_rows(out))
    rc = cli.main(_bench(out, photos, "--method", "ddnm,steps=5", "--seed", "3"))
    assert rc == 2 and "computed with other settings" in capsys.readouterr().err
    assert (out / "plan.json").read_bytes() == plan and len(_rows(out)) == n
    assert json.loads(plan)["methods"][1]["steps"] == 2
    assert cli.main(["bench", "--out", str(out), "--summarize"]) == 0


# ----------------------------------------------------------------------------- cause 19
def test_cause19_summary_reports_each_metrics_own_count(photos, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(_bench(out, photos, "--method", "ddnm,steps=2")) == 0
    rows = _rows(out)
    ddnm = [r for r in rows if r["method"] == "ddnm"]
    del ddnm[0]["ssim"]                  # as if measured on 3 of the 4 images only
    ddnm[1]["ssim"] = None
    lines = "".join(json.dumps(r) + "\n" for r in rows)
    (out / res.RESULTS).write_text(lines)
    capsys.readouterr()
    assert cli.main(["bench", "--out", str(out), "--summarize"]) == 0
    with open(out / "summary.csv") as f:
        table = {r["method"]: r for r in csv.DictReader(f)}
    assert table["ddnm"]["n"] == "4" and table["ddnm"]["n_ssim"] == "2"
    assert table["ddnm"]["n_psnr"] == "4" and table["A+y"]["n_ssim"] == "4"
    mean = np.mean([r["ssim"] for r in ddnm[2:]])
    assert float(table["ddnm"]["ssim"]) == pytest.approx(mean)
    md = (out / "summary.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| ddnm |"))
    assert f"{mean:.4f} [2/4]" in line and "| 4/4 |" in line
    assert "[k/n]" in md
    # the command's own report names the count too
    from dmir.bench import summary
    plan = summary.load_plan(out)
    agg = {r["method"]: r for r in summary.aggregate(plan, _rows(out))}
    assert agg["ddnm"]["n_ssim"] == 2 and agg["ddnm"]["n"] == 4
