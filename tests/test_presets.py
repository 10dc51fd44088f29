"""Paper presets of ``dmir bench``: every preset is runnable as declared (operators build at the
dataset size, methods exist or are declared missing, solvers accept the declared options), its
paper entries point at its own labels, and its protocol states the noise units."""
import dataclasses
import json

import pytest
import torch

from dmir import models, operators, solvers
from dmir.bench import presets as P
from dmir.bench.spec import MethodSpec, Preset
from dmir.errors import DmirError, ParameterError
from dmir.checkpoints.registry import ENTRIES
from dmir.operators.dps_protocol import DPS_SIGMA_Y
from dmir.operators.noise import sigma_from_model

EXPECTED = ["equs-table1", "deqir-table1", "deqir-table2", "deqir-table3", "dcdp", "equs-nfe",
            "equs-transforms"]


#: masks a preset leaves to the user (DeqIR Table 2's text/stripe masks): a stand-in
USER_MASKS = {"inp_masks/text.npy", "inp_masks/stripe.npy"}


@pytest.fixture(scope="module")
def ops256():
    """Every (preset, dataset, task) operator, built once at the dataset's size."""
    built = {}
    for name in P.names():
        p = P.get(name)
        for d in p.datasets:
            for t in p.tasks:
                params = dict(t.params)
                if params.get("mask") in USER_MASKS:
                    params["mask"] = (torch.arange(d.size * d.size).reshape(d.size, d.size)
                                      % 7 > 1).float()
                built[name, d.name, t.name] = operators.build(
                    t.operator, (3, d.size, d.size), **params)
    return built


def test_names_and_get_returns_an_independent_copy():
    assert P.names() == EXPECTED == list(P.PRESETS)
    p = P.get("equs-table1")
    assert isinstance(p, Preset) and p == P.PRESETS["equs-table1"]
    p.datasets[0].path = "/somewhere"
    p.methods.clear()
    assert P.PRESETS["equs-table1"].datasets[0].path is None
    assert len(P.get("equs-table1").methods) == 13     # 11 published rows + 2 named variants


def test_unknown_preset_lists_the_names():
    with pytest.raises(ParameterError) as e:
        P.get("nope")
    msg = str(e.value)
    assert "nope" in msg and all(n in msg for n in EXPECTED)
    assert isinstance(e.value, DmirError)


@pytest.mark.parametrize("name", EXPECTED)
def test_tasks_build_at_the_dataset_size(name, ops256):
    p = P.get(name)
    assert p.datasets and p.tasks and p.methods
    for d in p.datasets:
        assert d.size == 256 and d.model in ENTRIES
        x = torch.zeros(1, 3, d.size, d.size)
        for t in p.tasks:
            op = ops256[name, d.name, t.name]
            assert tuple(op.x_shape) == (3, 256, 256)
            y = op.A(x + 0.5)
            assert torch.isfinite(y).all() and y.numel() > 0
            assert set(t.params) <= set(operators.params(t.operator)[0])
            if t.params.get("mask") in USER_MASKS:          # the protocol says how to supply it
                assert t.params["mask"] in t.note


@pytest.mark.parametrize("name", EXPECTED)
def test_methods_exist_or_are_declared_missing(name):
    p = P.get(name)
    available = set(solvers.names())
    declared = P.MISSING[name]
    for m in p.methods:
        assert m.method in available or m.method == "apy" or m.method in declared, m
    assert [m.method for m in P.missing(p)] == declared
    assert P.missing(name) == P.missing(p)
    for label in (m.name for m in P.missing(p)):   # the protocol tells the user why
        assert label in p.protocol


def test_missing_list_is_accurate():
    assert set(P.MISSING) == set(P.names())
    assert P.missing("dcdp") == [] and P.missing("equs-table1") == []
    assert [m.name for m in P.missing("deqir-table1")] == ["DGP"]          # ILVR runs now
    assert [m.name for m in P.missing("deqir-table2")] == ["Palette"]      # RePaint runs now
    assert sum(len(v) for v in P.MISSING.values()) == 3      # DGP ×2, Palette
    p = P.get("equs-table1")
    p.methods.append(MethodSpec("MCG", "mcg"))
    assert [m.name for m in P.missing(p)] == ["MCG"]


def test_declared_options_build_every_available_solver(ops256):
    """steps, eta and kwargs of every runnable method are accepted by solvers.build on every task
    of its preset (construction only; the analytic prior stands in for the checkpoint)."""
    prior = models.GaussianPrior(mean=torch.zeros(3, 256, 256), var=0.25)
    n = 0
    for name in P.names():
        p = P.get(name)
        missing = {m.method for m in P.missing(p)}
        for t in p.tasks:
            op = ops256[name, p.datasets[0].name, t.name]
            for m in p.methods:
                if m.method == "apy" or m.method in missing:
                    continue
                s = solvers.build(m.method, prior, op, steps=m.steps, eta=m.eta,
                                  sigma_y=t.sigma_y, **m.kwargs)
                if m.steps is not None and hasattr(s, "steps"):
                    assert s.steps == m.steps
                n += 1
    assert n == 5 * 11 + 4 * 6 + 2 * 4 + 1 * 3 + 6 * 2 + 14 + 6   # equs-table1: 9 rows + 2 variants; ... equs-nfe, -transforms


def test_dcdp_solver_picks_the_released_setting_of_each_task(ops256):
    prior = models.GaussianPrior(mean=torch.zeros(3, 256, 256), var=0.25)
    expected = {"deblur_g": "deblur_gauss", "deblur_m": "deblur_motion", "sr4": "sr4",
                "inpaint_box": "inpainting", "inpaint_random": "inpainting", "denoise": "sr4"}
    got = {t.name: solvers.build("dcdp", prior, ops256["dcdp", "ffhq", t.name]).task
           for t in P.get("dcdp").tasks}
    assert got == expected


def test_dps_uses_the_dps_config_step_size_on_dcdp_tasks(ops256):
    prior = models.GaussianPrior(mean=torch.zeros(3, 256, 256), var=0.25)
    expected = {"deblur_g": 0.3, "deblur_m": 0.3, "sr4": 0.3, "inpaint_box": 0.5,
                "inpaint_random": 0.5, "denoise": 0.3}
    got = {t.name: solvers.build("dps", prior, ops256["dcdp", "ffhq", t.name]).scale
           for t in P.get("dcdp").tasks}
    assert got == expected


@pytest.mark.parametrize("name", EXPECTED)
def test_presets_are_consistent_and_json_able(name):
    p = P.get(name)
    P.check(p)
    d = dataclasses.asdict(p)
    d["paper"] = [[*k, v] for k, v in d["paper"].items()]     # as plan.json stores it
    s = json.dumps(d, ensure_ascii=False)
    assert json.loads(s)["name"] == name
    assert p.source and p.title and p.seed is not None
    assert all(m in ("psnr", "ssim", "ssim_uniform", "lpips_alex", "lpips_vgg", "lpips_vgg_01",
                     "fid", "kid", "cons", "cons_8bit", "nfe", "time") for m in p.metrics)


def test_check_rejects_paper_entries_with_unknown_labels_or_metrics():
    p = P.get("equs-table1")
    p.paper = {("imagenet", "sr4", "DDNM+EquS+"): {"psnr": 1.0, "ssim_uniform": 0.5}}
    P.check(p)                                          # a well-formed entry passes
    for key, vals, word in [
            (("imagenet", "sr8", "DDNM"), {"psnr": 1.0}, "task"),
            (("ffhq", "sr4", "DDNM"), {"psnr": 1.0}, "dataset"),
            (("imagenet", "sr4", "DDNM+EquS"), {"psnr": 1.0}, "method"),
            (("imagenet", "sr4", "DDNM"), {"lpips_alex": 0.2}, "metric"),
            (("imagenet", "sr4"), {"psnr": 1.0}, "tuple")]:
        p.paper = {key: vals}
        with pytest.raises(ParameterError, match=word):
            P.check(p)
    p.paper = {}
    p.tasks[0].params = {"scale": 4, "kernel": "x"}
    with pytest.raises(ParameterError, match="kernel"):
        P.check(p)


@pytest.mark.parametrize("name", EXPECTED)
def test_protocol_states_units_sources_and_the_missing_numbers(name):
    p = P.get(name)
    text = p.protocol
    assert "σ_y" in text and "[0, 1] pixel units" in text
    assert "Seed" in text and "Metrics" in text and "Dataset" in text
    assert "arXiv" in text
    if not p.paper:
        assert "Paper numbers: none entered" in text


def test_noise_levels_and_units():
    for name in ("equs-table1", "deqir-table1", "deqir-table2", "deqir-table3"):
        assert all(t.sigma_y == 0.0 for t in P.get(name).tasks)
    dcdp = P.get("dcdp")
    assert DPS_SIGMA_Y == sigma_from_model(0.05) == 0.025
    assert [t.sigma_y for t in dcdp.tasks] == [0.025] * 6
    assert all("σ = 0.05 in [-1, 1]" in t.note and "0.025" in t.note for t in dcdp.tasks)


def test_equs_table1_protocol_choices():
    p = P.get("equs-table1")
    assert [t.operator for t in p.tasks] == ["deblur_gauss", "cs_blockbased", "inpainting",
                                             "sr_bicubic", "colorization"]
    assert p.metrics[:3] == ["psnr", "ssim_uniform", "lpips_vgg_01"] and p.seed == 1234
    assert {d.name: d.model for d in p.datasets} == {"imagenet": "adm-imagenet256-uncond",
                                                     "celebahq": "ddpm-celebahq256"}
    pairs = {m.method for m in p.methods}
    for base in ("ddnm", "ddrm", "cddb"):                  # with and without EquS+
        assert {base, base + "-equs+"} <= pairs
    mask = operators.build("inpainting", (3, 256, 256), mask=P.DDNM_MASK)
    kept = mask.A(torch.ones(1, 3, 256, 256)).numel() / (3 * 256 * 256)
    assert abs(kept - 0.7391) < 1e-3                    # the DDNM mask keeps 73.9 % of pixels


def test_equs_ablation_presets():
    """equs-nfe carries the figure's 7 × 2 (PSNR, LPIPS) cells on its own labels, NFE = steps;
    equs-transforms runs every EquS group dmir implements and enters no numbers."""
    from dmir.solvers.equivariance import GROUPS

    p = P.get("equs-nfe")
    assert [t.operator for t in p.tasks] == ["cs_blockbased"] and p.tasks[0].params == {
        "ratio": 0.25}
    assert len(p.paper) == 14 and p.paper["imagenet", "cs25", "DDNM+EquS+@100"] == {
        "psnr": 30.0, "lpips_vgg_01": 0.173}
    assert p.paper["imagenet", "cs25", "DDNM@1000"]["psnr"] == 31.56
    steps = {m.name: m.steps for m in p.methods}
    assert steps["DDNM@50"] == 50 and steps["DDNM+EquS+@1000"] == 1000
    t = P.get("equs-transforms")
    assert t.paper == {} and "Paper numbers: none entered" in t.protocol
    assert {m.kwargs.get("equs") for m in t.methods if m.method == "ddnm-equs+"} == set(GROUPS)
