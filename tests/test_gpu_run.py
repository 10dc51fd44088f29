"""benchmarks/gpu_run.py, the one prepared GPU run, on the CPU with ``--small``: every stage writes
its JSON with the expected keys and sane numbers, the output folder holds at most the 8 files the
device machine returns, the trained prior loads, and a budget too short for a stage records it as
skipped instead of overrunning."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from dmir import models, solvers

ROOT = Path(__file__).resolve().parents[1]


def _gpu_run():
    if "gpu_run" in sys.modules:
        return sys.modules["gpu_run"]
    spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "benchmarks" / "gpu_run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_run"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    g = _gpu_run()
    base = tmp_path_factory.mktemp("gpu_run")
    out = base / "out"
    summary = g.main(["--small", "--out", str(out), "--work", str(base / "work")])
    return g, out, summary


def _load(out, name):
    return json.loads((out / name).read_text())


def test_every_stage_ran_and_the_output_fits_what_the_device_returns(small_run):
    g, out, summary = small_run
    assert summary["small"] and summary["device"].startswith("cpu")
    assert set(summary["stages"]) == {"1", "2", "3", "4"}
    for i in "1234":
        assert summary["stages"][i]["status"] == "ok", summary["stages"][i]
        s = _load(out, g.NAMES[int(i)])
        assert s["stage"] == int(i) and s["status"] == "ok" and s["device"] == summary["device"]
        assert 0 < s["seconds"] < 600
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2 ** 20 for p in files)
    assert all(len(p.relative_to(out).parts) <= 2 for p in files)
    assert _load(out, g.SUMMARY)["stages"] == summary["stages"]


def test_stage1_every_method_on_the_device_matches_the_cpu(small_run):
    g, out, _ = small_run
    r = _load(out, g.NAMES[1])
    assert [m["method"] for m in r["methods"]] == solvers.names()     # every method and variant
    for m in r["methods"]:
        assert "error" not in m, m
        # --small: the device run is bf16 autocast on the CPU, the fast path's arithmetic
        assert m["pass"] == {"fast": True}, m
        assert r["tolerances"]["fast_psnr_vs_cpu_min"] <= m["psnr_vs_cpu"]["fast"] < 200
        assert 3 < m["psnr_truth"]["cpu"] < 40
        assert abs(m["fast_truth_delta_db"]) <= r["tolerances"]["fast_truth_delta_max"]
        nfe = m["solver"]["cpu"]["nfe"], m["solver"]["fast"]["nfe"]
        if m["method"].startswith("deqir"):   # the window stops on a residual: ± a few
            assert abs(nfe[0] - nfe[1]) <= 0.2 * nfe[0], m
        else:
            assert nfe[0] == nfe[1] > 0, m
    assert all(m["solver"]["cpu"]["converged"] for m in r["methods"]
               if m["method"].startswith("deqir"))
    t = r["extras"]["tiling"]
    assert t["pass"] == {"fast": True} and t["image"] == "48x64"
    assert r["extras"]["cuda_graphs"]["status"].startswith("skipped")
    assert r["summary"]["all_pass"] and r["summary"]["methods_run"] == len(solvers.names())


def test_stage2_throughput_rows_and_reference(small_run):
    g, out, _ = small_run
    r = _load(out, g.NAMES[2])
    m = r["models"]["adm"]
    assert m["flops_per_forward"] > 0 and m["limit_s_per_image"] > 0
    assert math.isclose(r["adm256_tflop_per_image_per_nfe"], 2.24, abs_tol=0.005)
    assert math.isclose(r["limit_s_per_image_100_steps"], 0.28, abs_tol=0.001)
    got = {(x["method"], x["batch"]) for x in m["runs"]}
    assert got == {(a, b) for a in ("ddnm", "ddnm-equs+") for b in (1, 2)}
    for x in m["runs"]:
        assert x["finite"] and x["seconds"] > 0 and x["nfe"] == r["steps"]
        assert math.isclose(x["images_per_s"], x["batch"] / x["seconds"])
        assert 0 < x["frac_peak"] < 1
    for method in ("ddnm", "ddnm-equs+"):
        s = r["summary"][method]
        assert s["speedup_vs_reference"] > 0 and s["reference_s_per_image_100_steps"] > 0
        assert set(m["reference"]) == {"ddnm", "ddnm-equs+"}
    assert m["bf16_vs_fp32"]["ddnm"]["rel_l2"] < 0.1
    # benchmarks/gpu_throughput.py's tables read the stage's JSON
    g._module("gpu_throughput").print_tables(r, r["peak_tflops"])


def test_stage3_deqir_solvers_reach_the_sequential_chain(small_run):
    g, out, _ = small_run
    r = _load(out, g.NAMES[3])
    rows = r["rows"]
    assert {x["method"] for x in rows} == {"sequential", *g.SMALL_DEQIR}
    assert len({x["prior"] for x in rows}) == 2
    for x in rows:
        assert x["wall"] > 0 and x["ratio"] > 0
        if x["method"] != "sequential":
            assert x["converged"] and x["equal_output"] and x["err"] < 1e-2, x
    assert len(r["summary"]) == 2


def test_stage4_trains_and_exports_a_loadable_bf16_prior(small_run):
    g, out, _ = small_run
    r = _load(out, g.NAMES[4])
    assert r["ignored_recipe_keys"] == []
    assert r["steps"] == r["steps_this_run"] >= 4 and r["seconds_per_step"] > 0
    assert len(r["loss"]) >= 2 and all(0 < v < 10 for _, v in r["loss"])
    assert r["export"]["returnable"] and r["export"]["step"] == r["steps"]
    assert (out / g.LOSS_PNG).stat().st_size > 1000
    sd = models.read_safetensors(out / g.PRIOR_DIR / "model.safetensors")
    assert all(v.dtype == torch.bfloat16 for v in sd.values() if v.is_floating_point())
    m = models.load(str(out / g.PRIOR_DIR))
    x = torch.zeros(1, 3, 32, 32)
    assert torch.isfinite(m.eps(x, torch.tensor([500]))).all()
    cfg = json.loads((out / g.PRIOR_DIR / "config.json").read_text())
    assert cfg["config"]["ch"] == g.SMALL_RECIPE["ch"]
    assert cfg["training"]["stored_as"] == "bfloat16"


def test_a_short_budget_skips_stages_and_says_so(tmp_path):
    g = _gpu_run()
    s = g.main(["--small", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "w"),
                "--budget", "1", "--stages", "3", "4"])
    for i in ("3", "4"):
        assert s["stages"][i]["status"] == "skipped" and "needs" in s["stages"][i]["reason"]
        assert json.loads((tmp_path / "out" / g.NAMES[int(i)]).read_text())["status"] == "skipped"


def test_recipe_keys_are_train_config_fields():
    g = _gpu_run()
    cfg, ignored = g.train_config(g.RECIPE, data=["x"], steps=1)
    assert ignored == [] and cfg.crop == g.RECIPE["crop"] and cfg.batch == g.RECIPE["batch"]
    cfg.validate()
    # 16 MiB per returned file: the bf16 weights must fit
    n = models.num_parameters("ddpm", cfg.model_config())
    assert 2 * n < 16 * 2 ** 20
    _, ignored = g.train_config({**g.RECIPE, "no_such_option": 1}, data=["x"])
    assert ignored == ["no_such_option"]
