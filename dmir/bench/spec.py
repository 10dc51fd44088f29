"""What a benchmark run is made of: datasets × tasks × methods (× one model per dataset).

These dataclasses are the contract between the paper presets (:mod:`dmir.bench.presets`), the
runner (:mod:`dmir.bench.runner`) and the CLI (``dmir bench``). Everything is plain data
(JSON-able through :func:`dataclasses.asdict`) so a run's plan is stored next to its results.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TaskSpec:
    """One degradation: ``operators.build(operator, shape, **params)`` plus measurement noise.

    ``sigma_y`` is always stored in dmir's [0, 1] pixel units; a preset that follows a paper's
    [-1, 1] convention converts once with :func:`dmir.operators.noise.sigma_from_model`
    (or states the conversion) and records the paper's value in ``note``.
    """

    name: str                          # short label used in tables, e.g. "sr4", "deblur_g"
    operator: str                      # a name from operators.names()
    params: dict = field(default_factory=dict)   # scale, kernel, mask path, ratio, ...
    sigma_y: float = 0.0               # Gaussian noise std in [0, 1] pixel units
    note: str = ""                     # protocol remarks (quirks, paper units)


@dataclass
class MethodSpec:
    """One solver: ``solvers.build(method, model, op, steps=steps, eta=eta, **kwargs)``.

    ``method == "apy"`` means a no-model baseline: A⁺y, or with ``kwargs={"form": "release"}``
    the releases' "Apy" image (:mod:`dmir.bench.baselines`).
    """

    name: str                          # label in tables, e.g. "DDNM+EquS+"
    method: str                        # a name from solvers.names(), or "apy"
    steps: int | None = None
    eta: float | None = None
    kwargs: dict = field(default_factory=dict)


@dataclass
class DatasetSpec:
    """Images to evaluate on: a folder (recursive, sorted) or a DDNM-style list file."""

    name: str                          # e.g. "imagenet", "celebahq"
    path: str | None = None            # supplied by the user for presets (None = not given yet)
    size: int = 256                    # center-crop + resize to size × size (model resolution)
    list_file: str | None = None       # DDNM list format: "filename label" per line
    limit: int | None = None           # first N images only
    model: str | None = None           # model name/path for this dataset (None = the run's default)
    crop: str = "center"               # dmir.data.CROP_MODES: "center" (DDNM/EquS ImageNet-1k
                                       # list loader), "adm" (guided-diffusion center_crop_arr),
                                       # "resize" (DDNM CelebA-HQ: no crop), "none"
    channels: int = 3                  # 3 (gray files repeated) or 1


@dataclass
class Preset:
    """A paper table: its protocol and the numbers it reports, next to which ours are printed.

    ``paper`` maps ``(dataset, task, method)`` labels to metric values, e.g.
    ``{("imagenet", "sr4", "DDNM"): {"psnr": 27.46, "ssim": 0.871, "lpips": 0.278, "fid": 38.0}}``.
    ``metrics`` names the metric variants the paper used: "psnr", "ssim" (Gaussian, Wang et al.),
    "ssim_uniform" (7×7 uniform window, scikit-image defaults as in the EquS code), "lpips_alex",
    "lpips_vgg", "lpips_vgg_01" (torchmetrics-style VGG fed [0, 1] without normalisation, the EquS
    protocol), "fid", "kid", "cons" (ℓ1 of A x̂ − y, float), "cons_8bit" (the same on the 8-bit
    result), "nfe", "time".
    """

    name: str
    title: str                         # e.g. "EquS Table 1 (ImageNet, CelebA-HQ)"
    protocol: str                      # operators, noise units, metric variants, seeds, sources
    datasets: list = field(default_factory=list)    # [DatasetSpec]
    tasks: list = field(default_factory=list)       # [TaskSpec]
    methods: list = field(default_factory=list)     # [MethodSpec]
    metrics: list = field(default_factory=lambda: ["psnr", "ssim", "lpips_alex"])
    seed: int = 0
    paper: dict = field(default_factory=dict)
    source: str = ""                   # paper and table, arXiv id


__all__ = ["TaskSpec", "MethodSpec", "DatasetSpec", "Preset"]
