"""Ablation presets of ``dmir bench``: the EquS NFE study and the EquS transformation ablation.

* ``equs-nfe`` — EquS (Wu et al., arXiv 2511.09965), the NFE ablation figure: block-based
  compressed sensing 25 % on ImageNet, DDNM against DDNM + EquS+ at 50 … 1000 NFE, PSNR and
  LPIPS read off the plot (±0.05 dB / ±0.003, as collected in the project's papers/tables.md).
* ``equs-transforms`` — the transformation ablation: DDNM + EquS+ with each transformation
  group dmir implements (hflip — the published one —, vflip, rot90, shift, random) next to plain
  DDNM, on the same task. No numbers are entered: the paper's transformation-ablation values
  are not among the transcribed tables.

Kept apart from :mod:`dmir.bench.presets` (which imports this module and adds the presets to
``PRESETS``) so that each module stays readable; plain data, no files read.
"""
from __future__ import annotations

from .spec import DatasetSpec, MethodSpec, Preset, TaskSpec

#: the NFE study as printed (papers/tables.md, "EquS, ablation figure"): NFE → (baseline PSNR,
#: +ours PSNR, baseline LPIPS, +ours LPIPS)
EQUS_NFE_FIGURE = {
    50: (27.3, 28.6, 0.274, 0.229),
    100: (28.6, 30.0, 0.225, 0.173),
    200: (29.65, 31.1, 0.184, 0.133),
    400: (30.8, 32.2, 0.139, 0.099),
    600: (31.55, 32.75, 0.113, 0.087),
    800: (31.56, 32.75, 0.113, 0.086),
    1000: (31.56, 32.75, 0.113, 0.085),
}
#: the EquS transformation groups dmir implements (dmir.solvers.equivariance.GROUPS)
EQUS_GROUPS = ("hflip", "vflip", "rot90", "shift", "random")

_TASK = TaskSpec("cs25", "cs_blockbased", {"ratio": 0.25}, 0.0,
                 "block-based CS, ratio 0.25, 32×32 blocks, random orthogonal basis (seeded)")
_DATASET = DatasetSpec("imagenet", size=256, limit=1000, model="adm-imagenet256-uncond")
_COMMON = " ".join([
    "Task: noise-free block-based compressed sensing at 25 % (cs_blockbased, ratio 0.25, "
    "32×32 blocks; the orthogonal basis is drawn from dmir's seed, the reference draws it from "
    "its global RNG).",
    "Noise units: σ_y is given in [0, 1] pixel units (dmir's convention); here σ_y = 0.",
    "Dataset: the ImageNet 1k validation subset of the DDNM list format (imagenet_val_1k.txt; "
    "pass it as the list file), center-cropped and resized to 256; model "
    "adm-imagenet256-uncond.",
    "Metrics (as the EquS code computes them): PSNR on float [0, 1] images (psnr); LPIPS = the "
    "lpips VGG network fed [0, 1] images (lpips_vgg_01); NFE.",
    "Seed: 1234 (EquS main.py default); dmir seeds every image by its index.",
])


def _equs_nfe() -> Preset:
    methods, paper = [], {}
    for n, (b_psnr, o_psnr, b_lp, o_lp) in EQUS_NFE_FIGURE.items():
        methods += [MethodSpec(f"DDNM@{n}", "ddnm", n, 0.85),
                    MethodSpec(f"DDNM+EquS+@{n}", "ddnm-equs+", n, 0.85)]
        paper[("imagenet", "cs25", f"DDNM@{n}")] = {"psnr": b_psnr, "lpips_vgg_01": b_lp}
        paper[("imagenet", "cs25", f"DDNM+EquS+@{n}")] = {"psnr": o_psnr, "lpips_vgg_01": o_lp}
    protocol = " ".join([
        "EquS NFE ablation (Wu et al., arXiv 2511.09965, the figure of PSNR/LPIPS against NFE): "
        "DDNM ('baseline') and DDNM + EquS+ ('+ours': hflip on alternate steps and the "
        "quadratic timestep-aware schedule) at 50, 100, 200, 400, 600, 800 and 1000 steps, "
        "η 0.85, one network evaluation per step.", _COMMON,
        "Paper numbers: read off the figure's plot (±0.05 dB PSNR, ±0.003 LPIPS), as collected "
        "in the project's papers/tables.md; the summary prints paper, ours and Δ per cell.",
    ])
    return Preset("equs-nfe", "EquS NFE ablation (CS 25 %, ImageNet; DDNM vs DDNM+EquS+)",
                  protocol, [DatasetSpec(**vars(_DATASET))], [TaskSpec(**vars(_TASK))],
                  methods, ["psnr", "lpips_vgg_01", "nfe", "time"], seed=1234, paper=paper,
                  source="Wu et al., arXiv 2511.09965, NFE ablation figure")


def _equs_transforms() -> Preset:
    methods = [MethodSpec("DDNM", "ddnm", 100, 0.85)]
    methods += [MethodSpec(f"DDNM+EquS+ ({g})", "ddnm-equs+", 100, 0.85, kwargs={"equs": g})
                for g in EQUS_GROUPS]
    protocol = " ".join([
        "EquS transformation ablation (Wu et al., arXiv 2511.09965): which group element the "
        "network sees on alternate steps — hflip (the published choice), vflip, rot90 (square "
        "images), a circular shift by a quarter of the image ('shift'), or one element of the "
        "pixel grid's dihedral group drawn per step ('random', identity included) — with "
        "the quadratic timestep-aware schedule, 100 steps, η 0.85, next to plain DDNM. The "
        "task of the paper's own transformation ablation could not be confirmed; this preset "
        "runs it on the NFE study's task.", _COMMON,
        "Paper numbers: none entered — the transformation ablation's values are not among the "
        "transcribed tables (papers/tables.md); fill Preset.paper from the paper (keys: "
        "dataset, task, method labels of this preset).",
    ])
    return Preset("equs-transforms", "EquS transformation ablation (CS 25 %, ImageNet)",
                  protocol, [DatasetSpec(**vars(_DATASET))], [TaskSpec(**vars(_TASK))],
                  methods, ["psnr", "lpips_vgg_01", "nfe", "time"], seed=1234, paper={},
                  source="Wu et al., arXiv 2511.09965, transformation ablation")


def ablation_presets() -> list[Preset]:
    return [_equs_nfe(), _equs_transforms()]
