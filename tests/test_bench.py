"""dmir bench: per-image results, resume after SIGKILL, shards and torchrun, summaries."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dmir import cli
from dmir import io as dio
from dmir import metrics
from dmir.bench import results as res
from dmir.bench import runner
from dmir.bench.pipeline import seed_for
from dmir.bench.spec import DatasetSpec, MethodSpec, Preset, TaskSpec

BENCH = str(Path(__file__).parent / "data" / "bench")
IDS = ["cbsd_108005.png", "junco.png", "sub/kodim05_80x64.png"]
INPAINT = "inpainting,mask=ddnm_inpainting_mask.npy"       # the packaged protocol mask
VALUES = ("psnr", "ssim", "ssim_uniform", "cons", "nfe")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    return env


def _bench(out, *extra, data=BENCH):
    return ["bench", "--data", data, "--size", "64", "--out", str(out), "--no-progress",
            *([] if "--model" in extra else ["--model", "natural"]), *extra]


def _rows(out, name="results.jsonl"):
    rs, bad = res.read_jsonl(os.path.join(out, name))
    assert bad == 0
    return rs


def _by_key(rows):
    d = {}
    for r in rows:
        assert res.key_of(r) not in d, f"duplicate result {res.key_of(r)}"
        d[res.key_of(r)] = r
    return d


def _same_values(a, b, tol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        for v in VALUES:
            assert a[k][v] == pytest.approx(b[k][v], abs=tol, rel=0), (k, v)


def test_end_to_end_adhoc_run(tmp_path):
    out = tmp_path / "run"
    rc = cli.main(_bench(out, "--task", INPAINT, "--task", "sr_averagepooling,scale=4",
                         "--method", "ddnm,steps=10", "--save-images"))
    assert rc == 0
    rows = _rows(out)
    by = _by_key(rows)
    assert len(rows) == 3 * 2 * 2                 # images × tasks × (A+y, ddnm)
    assert {r["image"] for r in rows} == set(IDS)
    for r in rows:
        assert r["shape"] == [3, 64, 64] and "error" not in r
        assert r["time"] > 0 and r["nfe"] == (0 if r["solver"] == "apy" else 10)
        assert 5 < r["psnr"] < 60 and 0 < r["ssim"] <= 1 and 0 < r["ssim_uniform"] <= 1
        assert r["lpips_alex"] is None or 0 <= r["lpips_alex"] < 1
    inp = [(by[("bench", "inpainting", "ddnm", i)], by[("bench", "inpainting", "A+y", i)])
           for i in IDS]
    # the prior fills the holes: DDNM beats A⁺y on every image, by > 1 dB on average
    assert all(d["psnr"] > a["psnr"] for d, a in inp)
    assert np.mean([d["psnr"] - a["psnr"] for d, a in inp]) > 1.0
    # DDNM's range–null-space projection keeps the measured pixels: Cons ≈ 0 (ℓ1, [0, 1])
    assert all(d["cons"] < 1e-3 for d, _ in inp)
    # the saved PNG is the measured image (up to 8-bit rounding)
    gt = dio.read_image(os.path.join(BENCH, "junco.png"))
    png = dio.read_image(str(out / "images" / "bench" / "inpainting" / "ddnm" / "junco.png"))
    assert metrics.psnr_model(png, gt) == pytest.approx(
        by[("bench", "inpainting", "ddnm", "junco.png")]["psnr"], abs=0.05)
    # summaries and plots
    with open(out / "summary.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 4 and all(t["status"] == "ok" and t["n"] == "3" for t in table)
    row = next(t for t in table if t["task"] == "inpainting" and t["method"] == "ddnm")
    assert float(row["psnr"]) == pytest.approx(np.mean([d["psnr"] for d, _ in inp]))
    md = (out / "summary.md").read_text()
    assert "## bench · inpainting" in md and "| ddnm | 3/3 |" in md
    for p in ("plots/psnr_nfe_bench_inpainting.png", "plots/grid_bench_inpainting.png",
              "plots/grid_bench_sr_averagepooling.png", "plan.json"):
        assert (out / p).stat().st_size > 0
    grid = sorted(os.listdir(out / "grid" / "bench" / "inpainting"))
    assert grid == ["000000_cbsd_108005", "000001_junco", "000002_sub_kodim05_80x64"]
    assert sorted(os.listdir(out / "grid" / "bench" / "inpainting" / grid[0])) == [
        "apy.png", "gt.png", "input.png", "m_ddnm.png"]
    # seeds depend on names, not on order: shard 1/2 (only junco) gives the same numbers
    out2 = tmp_path / "shard"
    assert cli.main(_bench(out2, "--task", INPAINT, "--task", "sr_averagepooling,scale=4",
                           "--method", "ddnm,steps=10", "--shard", "1/2")) == 0
    part = _by_key(_rows(out2, "results.part-1-of-2.jsonl"))
    assert {k[3] for k in part} == {"junco.png"}
    _same_values(part, {k: by[k] for k in part})


def test_seeds_are_stable_names():
    # stored results are resumed across versions: the seed derivation must never change
    assert seed_for(0, "imagenet", "sr4", "a.png", "sample") == seed_for(
        0, "imagenet", "sr4", "a.png", "sample")
    assert seed_for(0, "bench", "inpainting", "junco.png", "noise") == 6530817916202743387
    assert len({seed_for(s, "d", "t", i) for s in range(3) for i in IDS}) == 9


def test_mask_files_enter_the_settings_fingerprint_by_content():
    from dmir.bench.runner import _param_id
    from dmir.data import resource

    # a preset's absolute path to the shipped mask and its bare name are the same setting
    assert _param_id("ddnm_inpainting_mask.npy") == _param_id(
        resource("ddnm_inpainting_mask.npy"))
    assert _param_id("ddnm_inpainting_mask.npy").startswith("file-sha256:")
    assert _param_id("gauss:2") == "gauss:2" and _param_id(4) == 4


def test_result_file_repair_and_tolerant_reading(tmp_path):
    p = tmp_path / "r.jsonl"
    with res.ResultWriter(p) as w:
        w.write({"dataset": "d", "task": "t", "method": "m", "image": "a", "psnr": 1.5})
        w.write({"dataset": "d", "task": "t", "method": "m", "image": "b", "psnr": 2.5})
    with open(p, "ab") as f:
        f.write(b'{"dataset": "d", "task": "t", "met')          # killed mid-write
    rows, bad = res.read_jsonl(p)
    assert [r["image"] for r in rows] == ["a", "b"] and bad == 1
    with res.ResultWriter(p) as w:                              # reopening repairs the file
        assert w.repaired == len(b'{"dataset": "d", "task": "t", "met')
        w.write({"dataset": "d", "task": "t", "method": "m", "image": "c", "psnr": float("inf")})
    rows, bad = res.read_jsonl(p)
    assert [r["image"] for r in rows] == ["a", "b", "c"] and bad == 0
    assert rows[2]["psnr"] == float("inf")
    # an error record is replaced by a later result of the same key
    with res.ResultWriter(tmp_path / "results.part-0-of-2.jsonl") as w:
        w.write({"dataset": "d", "task": "t", "method": "m", "image": "x", "error": "boom"})
    with res.ResultWriter(tmp_path / "results.part-1-of-2.jsonl") as w:
        w.write({"dataset": "d", "task": "t", "method": "m", "image": "x", "psnr": 3.0})
    recs, _ = res.load(tmp_path)
    assert recs[("d", "t", "m", "x")]["psnr"] == 3.0


def _wait_for_line(path, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.exists(path) and os.path.getsize(path) > 0:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def test_resume_after_sigkill_loses_nothing_and_duplicates_nothing(tmp_path):
    args = ["--task", INPAINT, "--method", "ddnm,steps=100", "--method", "ddnm-equs+,steps=100"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dmir", *_bench(out, *args)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_for_line(out / "results.jsonl", proc), proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    n_before = len(_rows(out))
    assert 1 <= n_before < 9                         # killed mid-way
    with open(out / "results.jsonl", "ab") as f:     # as if killed inside a write
        f.write(b'{"dataset":"bench","task":"inpainting","method":"ddnm","ima')
    assert cli.main(_bench(out, *args)) == 0         # restart: resumes
    ref = tmp_path / "uninterrupted"
    assert cli.main(_bench(ref, *args)) == 0
    resumed = _by_key(_rows(out))                    # no key twice
    assert len(resumed) == 9
    _same_values(resumed, _by_key(_rows(ref)))       # identical per-image values
    # a rerun with other settings into the same folder is refused, nothing is appended
    assert cli.main(_bench(out, "--task", INPAINT, "--method", "ddnm,steps=7")) == 2
    assert len(_rows(out)) == 9


def test_torchrun_two_processes_match_one_process(tmp_path):
    args = ["--task", INPAINT, "--method", "ddnm,steps=5", "--metrics", "psnr", "ssim", "cons"]
    one = tmp_path / "one"
    assert cli.main(_bench(one, *args)) == 0
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "dmir", *_bench(two, *args)]
    p = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    parts = [_rows(two, f"results.part-{r}-of-2.jsonl") for r in range(2)]
    assert sorted(r["index"] for r in parts[0]) == [0, 0, 2, 2]      # rank 0: images 0, 2
    assert sorted(r["index"] for r in parts[1]) == [1, 1]            # rank 1: image 1
    merged = _by_key(_rows(two))                                     # rank 0 merged them
    a = _by_key(_rows(one))
    assert len(merged) == len(a) == 6
    _same_values(merged, a, tol=1e-6)
    assert (two / "summary.md").exists() and (two / "summary.csv").exists()


def _tiny_preset(**kw):
    d = dict(
        name="tiny", title="Tiny table (test)", protocol="inpainting with the DDNM mask",
        datasets=[DatasetSpec("faces", None, size=64), DatasetSpec("bench", None, size=64)],
        tasks=[TaskSpec("inp", "inpainting", {"mask": "ddnm_inpainting_mask.npy"}),
               TaskSpec("sr4", "sr_averagepooling", {"scale": 4}, sigma_y=0.05)],
        methods=[MethodSpec("A+y", "apy"), MethodSpec("DDNM", "ddnm", steps=5),
                 MethodSpec("ΠGDM-next", "pigdm-next")],
        metrics=["psnr", "ssim", "lpips_vgg_01", "fid"], seed=3,
        paper={("bench", "inp", "DDNM"): {"psnr": 12.34, "lpips": 0.567}},
        source="nobody 2024")
    d.update(kw)
    return Preset(**d)


def test_preset_run_reports_missing_methods_datasets_and_paper_numbers(tmp_path, monkeypatch):
    import types
    from dmir.bench import command

    fake = types.SimpleNamespace(get=lambda n: {"tiny": _tiny_preset()}[n],
                                 names=lambda: ["tiny"])
    monkeypatch.setattr(command, "_presets_module", lambda: fake)
    out = tmp_path / "p"
    rc = cli.main(["bench", "--preset", "tiny", "--data", f"bench={BENCH}", "--limit", "2",
                   "--out", str(out), "--no-progress", "--tasks", "inp", "sr4",
                   "--model", "natural"])
    assert rc == 0
    rows = _rows(out)
    assert {r["method"] for r in rows} == {"A+y", "DDNM"} and len(rows) == 2 * 2 * 2
    assert all(r["run_seed"] == 3 for r in rows)
    assert all(r["sigma_y"] == (0.05 if r["task"] == "sr4" else 0) for r in rows)
    with open(out / "summary.csv") as f:
        table = {(t["dataset"], t["task"], t["method"]): t for t in csv.DictReader(f)}
    assert len(table) == 2 * 2 * 3
    assert table[("bench", "inp", "ΠGDM-next")]["status"].startswith("missing: method "
                                                                       "'pigdm-next'")
    assert table[("faces", "inp", "DDNM")]["status"].startswith("missing: no images")
    assert table[("bench", "inp", "DDNM")]["n"] == "2"
    assert table[("bench", "inp", "DDNM")]["n_expected"] == "2"
    assert float(table[("bench", "inp", "DDNM")]["paper_psnr"]) == 12.34
    assert float(table[("bench", "inp", "DDNM")]["paper_lpips_vgg_01"]) == 0.567
    md = (out / "summary.md").read_text()
    ours = float(table[("bench", "inp", "DDNM")]["psnr"])
    assert f"| DDNM | 2/2 | {ours:.2f} | 12.34 | {summary_delta(ours, 12.34)} |" in md
    assert float(table[("bench", "inp", "DDNM")]["delta_psnr"]) == pytest.approx(ours - 12.34)
    assert "Tiny table (test)" in md and "FID/KID not computed" in md
    assert "ΠGDM-next" in md and "missing: method" in md
    # a preset dataset name that does not exist is a usage error
    assert cli.main(["bench", "--preset", "tiny", "--data", f"nope={BENCH}", "--out",
                     str(tmp_path / "x")]) == 2
    # --summarize rebuilds the summaries from the folder alone
    (out / "summary.md").unlink()
    assert cli.main(["bench", "--out", str(out), "--summarize"]) == 0
    assert (out / "summary.md").read_text() == md


def summary_delta(ours, paper):
    from dmir.bench.summary import FLAG, compare
    d, bad = compare("psnr", ours, paper)
    return ("+" if d >= 0 else "−") + f"{abs(d):.2f}" + (f" {FLAG}" if bad else "")


class _FakeInception(torch.nn.Module):
    """A stand-in for the FID network (tests the plumbing, not the network): a fixed random
    projection of 8×8-pooled images to 32 features (2048 would make each matrix square root
    take seconds on a CPU)."""

    def __init__(self, *a, **k):
        super().__init__()
        self.w = torch.randn(3 * 64, 32, generator=torch.Generator().manual_seed(0))

    def forward(self, images, batch_size=32):
        x = torch.nn.functional.adaptive_avg_pool2d(torch.as_tensor(images).float(), 8)
        return x.flatten(1) @ self.w


def test_fid_per_method_and_between_folders(tmp_path, monkeypatch, capsys):
    from dmir.bench import fid as bfid
    from dmir.metrics.fid import FeatureStats, frechet_distance

    monkeypatch.setattr(metrics, "FIDInception", _FakeInception)
    out = tmp_path / "f"
    assert cli.main(_bench(out, "--task", INPAINT, "--method", "ddnm,steps=5", "--kid")) == 0
    with open(out / "summary.csv") as f:
        table = {t["method"]: t for t in csv.DictReader(f)}
    # recompute the FID of DDNM from the saved PNGs and the ground truth directly
    net = _FakeInception()
    ds = runner.ImageDataset(BENCH, size=64)
    real = FeatureStats(32).update(torch.cat([net(metrics.to_unit(x)) for x in ds]))
    pngs = sorted(Path(out, "images", "bench", "inpainting", "ddnm").rglob("*.png"))
    assert len(pngs) == 3
    fake = FeatureStats(32).update(torch.cat([net(metrics.to_unit(dio.read_image(p)))
                                                for p in pngs]))
    ref = frechet_distance(real.mean, real.cov, fake.mean, fake.cov)
    assert float(table["ddnm"]["fid"]) == pytest.approx(ref, rel=1e-6)
    assert float(table["A+y"]["fid"]) > 0 and float(table["ddnm"]["fid"]) > 0
    assert table["ddnm"]["kid"] != ""
    # dmir metrics fid DIR1 DIR2: a folder against itself is 0, against another is not
    gt = tmp_path / "gt"
    gt.mkdir()
    for i, x in enumerate(ds):
        dio.write_image(str(gt / f"{i}.png"), x)
    assert cli.main(["metrics", "fid", str(gt), str(gt)]) == 0
    assert "FID 0.0000 (3 and 3 images)" in capsys.readouterr().out
    v = bfid.fid_folders(str(gt), str(Path(out, "images", "bench", "inpainting", "ddnm")))
    assert v["fid"] == pytest.approx(ref, rel=1e-6)
    assert cli.main(["metrics", "fid", str(gt)]) == 2


def test_fid_without_weights_is_a_note_not_a_crash(tmp_path, monkeypatch):
    def missing(*a, **k):
        raise metrics.WeightsNotSetUpError("FID Inception weights are not set up: run `dmir "
                                           "metrics setup`")
    monkeypatch.setattr(metrics, "FIDInception", missing)
    out = tmp_path / "nf"
    assert cli.main(_bench(out, "--task", "denoising,sigma_y=0.1", "--method", "ddnm,steps=3",
                           "--fid", "--limit", "2")) == 0
    assert "FID/KID not computed: FID Inception weights are not set up" in \
        (out / "summary.md").read_text()


def test_bad_input_fails_with_one_line_and_errors_are_recorded(tmp_path, capsys):
    assert cli.main(_bench(tmp_path / "a", "--task", "sr_nope")) == 2
    assert "unknown task 'sr_nope'" in capsys.readouterr().err
    assert cli.main(_bench(tmp_path / "b", "--task", "sr_bicubic,scale=4", "--shard",
                           "2/2")) == 2
    assert cli.main(["bench", "--data", BENCH, "--out", str(tmp_path / "c")]) == 2
    # a method that cannot run on a task: an error per image, shown in the summary
    out = tmp_path / "d"
    assert cli.main(_bench(out, "--task", "deblur,kernel=motion:5:30", "--method", "ddrm,steps=3",
                           "--limit", "1")) == 0
    rows = _rows(out)
    err = [r for r in rows if r["method"] == "ddrm"]
    assert len(err) == 1 and "error" in err[0]
    with open(out / "summary.csv") as f:
        st = {t["method"]: t["status"] for t in csv.DictReader(f)}
    assert st["ddrm"].startswith("error: ") and st["A+y"] == "ok"


@pytest.mark.slow
def test_fid_with_the_real_inception(tmp_path, monkeypatch, fid_cache):
    """The bench's per-method FID equals `dmir metrics fid` on the same images (real network,
    fetched by `dmir metrics setup --fid` through the conftest fixture)."""
    from dmir.bench import fid as bfid
    from dmir.metrics import weights

    monkeypatch.setattr(weights, "search_dirs", lambda: [str(fid_cache.cache)])
    out = tmp_path / "f"
    assert cli.main(_bench(out, "--task", INPAINT, "--method", "ddnm,steps=5", "--fid")) == 0
    with open(out / "summary.csv") as f:
        table = {t["method"]: t for t in csv.DictReader(f)}
    gt = tmp_path / "gt"
    gt.mkdir()
    for i, x in enumerate(runner.ImageDataset(BENCH, size=64)):
        dio.write_image(str(gt / f"{i}.png"), x)
    v = bfid.fid_folders(str(gt), str(Path(out, "images", "bench", "inpainting", "ddnm")))
    assert float(table["ddnm"]["fid"]) == pytest.approx(v["fid"], rel=1e-6)
    assert v["fid"] > 1
