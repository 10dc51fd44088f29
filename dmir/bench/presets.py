"""Paper presets for ``dmir bench --preset NAME``: the datasets, tasks, methods and metric variants
of one published table, its protocol in words, and the numbers the paper reports.

Presets (see ``docs/presets.md`` for the long form):

* ``equs-table1`` — EquS (Wu et al., arXiv 2511.09965), Table 1: ImageNet and CelebA-HQ, five
  noise-free DDNM-protocol tasks, DDNM / DDRM / CDDB with and without EquS+, DPS, ΠGDM, DeqIR, A⁺y.
* ``deqir-table1`` … ``deqir-table3`` — DeqIR (Cao et al., CVPR 2024, arXiv 2311.11600).
* ``dcdp`` — DCDP (Li et al., arXiv 2403.06054): FFHQ 256, the DPS measurement protocol.

Conventions (as everywhere in dmir): ``TaskSpec.sigma_y`` is the Gaussian measurement noise in
**[0, 1] pixel units**; a paper that states σ in the [-1, 1] model domain (DPS, DCDP) is converted
once with :func:`dmir.operators.noise.sigma_from_model` (÷2), and its own value is kept in the
task's ``note``. ``Preset.paper`` maps ``(dataset, task, method)`` labels — the ``name`` fields of
the preset's specs — to ``{metric: value}`` with metric keys from ``Preset.metrics``.

Paper numbers: none are entered. The result tables of all three papers are published as images
(EquS README ``images/table.png``, DeqIR README ``figs/tab_sr_deblur.png`` and
``figs/tab_inp_color.png``) or only in the PDF/HTML body, which could not be read as text when
these presets were written; no number is entered that was not read from a source. Each preset's
``protocol`` says so and names the table to copy them from (:func:`check` validates entries).

Methods that dmir does not implement are kept in the preset (so a run reports them as missing
instead of silently dropping them): :func:`missing` lists them, :data:`MISSING` declares them.

The presets never read files: dataset folders, list files and checkpoints are supplied by the
user at run time (``DatasetSpec.path`` / ``list_file`` stay ``None`` here).
"""
from __future__ import annotations

import copy
from pathlib import Path

from ..errors import ParameterError
from ..operators.dps_protocol import DPS_SIGMA_MODEL, DPS_SIGMA_Y
from .spec import DatasetSpec, MethodSpec, Preset, TaskSpec

__all__ = ["PRESETS", "MISSING", "DDNM_MASK", "get", "names", "missing", "check"]

#: the DDNM/EquS inpainting mask (DDNM ``exp/inp_masks/mask.npy``, 256×256, 1 = kept), shipped
#: with dmir; an absolute path so the spec stays plain data
DDNM_MASK = str(Path(__file__).resolve().parent.parent / "data" / "ddnm_inpainting_mask.npy")

_UNITS = ("Noise units: σ_y is given in [0, 1] pixel units (dmir's convention; inside the "
          "library the noise std is 2·σ_y in the [-1, 1] model domain).")
_NO_NUMBERS = ("Paper numbers: none entered — {where}; they could not be read as text when this "
               "preset was written, and no number is entered that was not read from a source. "
               "Fill Preset.paper from that table (keys: dataset, task, method labels of this "
               "preset; metric keys from Preset.metrics).")


def _ddnm_protocol_operators() -> str:
    return ("Operators are the DDNM/DDRM reference-code ones, quirks included: sr_bicubic is the "
            "strided Keys (a = -0.5) kernel with reflected borders and an SVD truncated at 3e-2; "
            "deblur_gauss is the reference 'deblur_gauss' (5-tap σ = 10 kernel) WITH the "
            "reference's channel/singular-value mis-ordering — what the published deblurring "
            "numbers measured, but not a blur of the image (dmir.operators.ProtocolDeblur; use "
            "'deblur' with a kernel for true blur); inpainting uses the DDNM mask "
            "(dmir/data/ddnm_inpainting_mask.npy = DDNM exp/inp_masks/mask.npy, 26 % of the "
            "pixels missing); colorization is the mean of the three channels (weights "
            "0.3333/0.3334/0.3333).")


# --------------------------------------------------------------------------------- EquS
def _equs_table1() -> Preset:
    tasks = [
        TaskSpec("sr4", "sr_bicubic", {"scale": 4}, 0.0,
                 "EquS evaluation.sh: --deg sr_bicubic --deg_scale 4 --sigma_y 0 "
                 "(the script also runs sr_averagepooling ×4)"),
        TaskSpec("deblur_g", "deblur_gauss", {}, 0.0,
                 "reference 'deblur_gauss' with its channel quirk (not a true blur); the script "
                 "also runs deblur_aniso"),
        TaskSpec("inpainting", "inpainting", {"mask": DDNM_MASK}, 0.0,
                 "DDNM mask.npy (exp/inp_masks/mask.npy)"),
        TaskSpec("colorization", "colorization", {}, 0.0, "mean of the channels"),
        TaskSpec("cs25", "cs_blockbased", {"ratio": 0.25}, 0.0,
                 "block-based CS, ratio 0.25, 32×32 blocks, random orthogonal basis (the EquS "
                 "README's NFE study uses 'block-based CS 25%'; evaluation.sh also runs "
                 "cs_walshhadamard 0.25)"),
    ]
    methods = [
        MethodSpec("A⁺y", "apy"),
        MethodSpec("DDNM", "ddnm", 100, 0.85),
        MethodSpec("DDNM+EquS+", "ddnm-equs+", 100, 0.85),
        MethodSpec("DDRM", "ddrm", 20, 0.85),
        MethodSpec("DDRM+EquS+", "ddrm-equs+", 20, 0.85),
        MethodSpec("CDDB", "cddb", 100, 0.85),
        MethodSpec("CDDB+EquS+", "cddb-equs+", 100, 0.85),
        MethodSpec("DPS", "dps", 1000, 1.0),
        MethodSpec("ΠGDM", "pigdm", 100, 1.0),
        MethodSpec("DeqIR", "deqir", 25),
    ]
    datasets = [
        DatasetSpec("imagenet", size=256, limit=1000, model="adm-imagenet256-uncond"),
        DatasetSpec("celebahq", size=256, limit=1000, model="ddpm-celebahq256"),
    ]
    protocol = " ".join([
        "EquS Table 1 (Wu et al., arXiv 2511.09965): ImageNet 256 and CelebA-HQ 256, five "
        "noise-free tasks — ×4 super-resolution (sr_bicubic), Gaussian deblurring "
        "(deblur_gauss), inpainting (DDNM mask), colorization, compressed sensing 25 % "
        "(cs_blockbased) — following the release's evaluation.sh (FouierL/EquS) and the DDNM "
        "protocol. Which SR/deblur/CS variant each Table 1 column uses could not be confirmed "
        "from the paper text (the table is an image); evaluation.sh also runs "
        "sr_averagepooling ×4, deblur_aniso and cs_walshhadamard 0.25 — run those operators as "
        "extra tasks when a column turns out to be one of them.",
        _ddnm_protocol_operators(),
        "cs_blockbased draws its orthogonal 1024×1024 basis at random (seeded); the reference "
        "draws one per run from its global seed, so CS numbers also depend on that draw.",
        _UNITS, "All tasks here are noise-free: σ_y = 0.",
        "Datasets: ImageNet — the 1k validation subset of the DDNM list format "
        "(imagenet_val_1k.txt, 'filename label' per line; pass it as the list file); "
        "CelebA-HQ — the 1k DDNM CelebA-HQ test images. Both center-cropped and resized to 256. "
        "Models: adm-imagenet256-uncond (OpenAI 256x256_diffusion_uncond.pt) for ImageNet, "
        "ddpm-celebahq256 (SDEdit celeba_hq.ckpt) for CelebA-HQ.",
        "Methods and steps: DDNM 100 steps η 0.85 (evaluation.sh --eta 0.85, DDNM config "
        "T_sampling 100); '+EquS+' = the same sampler with EquS (hflip on alternate steps) and "
        "the quadratic Timestep-Aware Schedule, same NFE; DDRM 20 steps η 0.85; CDDB 100 steps; "
        "DPS 1000 steps (release step size per task); ΠGDM 100 steps η 1; DeqIR 25 steps "
        "(nw 0, etw 0.1, its README command); A⁺y = op.pinv(y) (the release saves y itself as "
        "'Apy' for deblurring and fills inpainting holes with -1, i.e. black).",
        "Metrics (as the EquS code computes them): PSNR on float [0, 1] images per image, then "
        "averaged (psnr); SSIM = scikit-image structural_similarity defaults, 7×7 uniform "
        "window with sample covariance, data_range 1, per channel (ssim_uniform); LPIPS = "
        "torchmetrics LearnedPerceptualImagePatchSimilarity(net_type='vgg') fed [0, 1] images "
        "without normalisation (lpips_vgg_01 — not the standard LPIPS, which expects [-1, 1]); "
        "FID (fid; not computed by the released code — dmir uses the TF-Inception FID network, "
        "so FID values may differ from the paper's implementation).",
        "Seed: 1234 (EquS main.py default); the reference shuffles the test set with that "
        "seed, dmir seeds every image by its index instead, so per-image noise differs.",
        _NO_NUMBERS.format(where="take them from EquS Table 1 (arXiv 2511.09965; the release "
                           "README shows it as images/table.png)"),
    ])
    return Preset("equs-table1", "EquS Table 1 (ImageNet, CelebA-HQ; noise-free)", protocol,
                  datasets, tasks, methods, ["psnr", "ssim_uniform", "lpips_vgg_01", "fid"],
                  seed=1234, paper={}, source="Wu et al., arXiv 2511.09965, Table 1")


# --------------------------------------------------------------------------------- DeqIR
def _deqir_methods() -> list:
    return [
        MethodSpec("A⁺y", "apy"),
        MethodSpec("DDRM", "ddrm", 20, 0.85),
        MethodSpec("DDNM", "ddnm", 100, 0.85),
        MethodSpec("DPS", "dps", 1000, 1.0),
        MethodSpec("ΠGDM", "pigdm", 100, 1.0),
        MethodSpec("DeqIR", "deqir", 25),
    ]


def _deqir_datasets() -> list:
    return [
        DatasetSpec("imagenet", size=256, limit=100, model="adm-imagenet256-uncond"),
        DatasetSpec("celebahq", size=256, limit=100, model="ddpm-celebahq256"),
    ]


def _deqir_protocol(table: str, what: str) -> str:
    return " ".join([
        f"DeqIR {table} (Cao et al., CVPR 2024, arXiv 2311.11600): {what}",
        _ddnm_protocol_operators(),
        _UNITS, "All tasks here are noise-free: σ_y = 0 (the release's --add_noise adds "
        "sigma_y directly in the [-1, 1] domain, without DDNM's ×2; not used here).",
        "Datasets as in the release configs (caojiezhang/DeqIR configs/*.yml, subset_100: "
        "True): ImageNet — the release's imagenet_val_100.txt list (DDNM list format, "
        "'filename label' per line; pass it as the list file); CelebA-HQ — every 10th image, "
        "in sorted order, of the CelebA-HQ folder (supply a folder holding those). Whether "
        "the paper's tables use these 100-image subsets or the 1k sets (--n_subset 1k) could "
        "not be confirmed. Images resized to 256. Models: adm-imagenet256-uncond for ImageNet, "
        "ddpm-celebahq256 for CelebA-HQ.",
        "DeqIR: 25 steps, uniform skip, nw 0, etw 0.1, Anderson m 5, λ 1e-3, β 1, 15 "
        "iterations (the README command --timesteps 25 --use_svd --etw 0.1 and main.py "
        "defaults). Baselines are dmir's selection of the DDNM-family methods it implements "
        "(A⁺y, DDRM 20 steps η 0.85, DDNM 100 steps η 0.85, DPS 1000 steps, ΠGDM 100 steps); "
        "the paper's full baseline list could not be read — add any it reports that dmir lacks "
        "as methods so they are reported as missing.",
        "Metrics: the release computes none (it only writes images); dmir reports PSNR (float "
        "[0, 1], per image then averaged), SSIM (Gaussian σ = 1.5, Wang et al.), LPIPS (AlexNet, "
        "standard [-1, 1] input), FID (TF-Inception), NFE and wall time; which of these the "
        "table reports could not be confirmed.",
        "Seed: 666 (DeqIR main.py default); dmir seeds every image by its index.",
        _NO_NUMBERS.format(where=f"take them from DeqIR {table} (arXiv 2311.11600)"),
    ])


_DEQIR_METRICS = ["psnr", "ssim", "lpips_alex", "fid", "nfe", "time"]


def _deqir_table1() -> Preset:
    tasks = [
        TaskSpec("sr4", "sr_bicubic", {"scale": 4}, 0.0,
                 "release --deg sr_bicubic --scale 4 (forces the SVD operator)"),
        TaskSpec("deblur_g", "deblur_gauss", {}, 0.0,
                 "release --deg deblur_gauss (5-tap σ = 10, reference channel quirk)"),
    ]
    what = ("×4 super-resolution and deblurring on ImageNet and CelebA-HQ. The task split "
            "follows the README's result images (figs/tab_sr_deblur.png first, then "
            "figs/tab_inp_color.png); the exact operator variants could not be read from the "
            "table (the release also implements sr_averagepooling, deblur_uni and "
            "deblur_aniso — run those as extra tasks if a column is one of them).")
    return Preset("deqir-table1", "DeqIR Table 1 (×4 SR, deblurring; ImageNet, CelebA-HQ)",
                  _deqir_protocol("Table 1", what), _deqir_datasets(), tasks, _deqir_methods(),
                  list(_DEQIR_METRICS), seed=666, paper={},
                  source="Cao et al., CVPR 2024, arXiv 2311.11600, Table 1")


def _deqir_table2() -> Preset:
    tasks = [
        TaskSpec("inpainting", "inpainting", {"mask": DDNM_MASK}, 0.0,
                 "the release reads experiments/inp_masks/<mask_type>.npy; which mask the table "
                 "used is not named — the DDNM mask.npy is used here"),
        TaskSpec("colorization", "colorization", {}, 0.0, "mean of the channels"),
    ]
    what = ("inpainting and colorization on ImageNet and CelebA-HQ (the README's second result "
            "image, figs/tab_inp_color.png). The release's inpainting mask is chosen by "
            "--mask_type (experiments/inp_masks/<mask_type>.npy) and not named in the README; "
            "dmir uses the DDNM mask.")
    return Preset("deqir-table2", "DeqIR Table 2 (inpainting, colorization; ImageNet, "
                  "CelebA-HQ)", _deqir_protocol("Table 2", what), _deqir_datasets(), tasks,
                  _deqir_methods(), list(_DEQIR_METRICS) + ["cons"], seed=666, paper={},
                  source="Cao et al., CVPR 2024, arXiv 2311.11600, Table 2")


def _deqir_table3() -> Preset:
    tasks = [
        TaskSpec("cs50", "cs_walshhadamard", {"ratio": 0.5}, 0.0,
                 "release --deg cs_walshhadamard: ratio hard-coded to 0.5 in "
                 "runners/diffusion.py, random pixel permutation (seeded)"),
    ]
    what = ("CONTENTS NOT VERIFIED — what Table 3 reports could not be read. This preset runs "
            "the one task the release implements beyond Tables 1–2's SR, deblurring, "
            "inpainting and colorization: Walsh–Hadamard compressed sensing with the ratio the "
            "release hard-codes (0.5), with NFE and wall time next to the quality metrics. "
            "Replace tasks/methods once the table is known.")
    return Preset("deqir-table3", "DeqIR Table 3 (unverified: Walsh–Hadamard CS 50 %)",
                  _deqir_protocol("Table 3", what), _deqir_datasets(), tasks, _deqir_methods(),
                  list(_DEQIR_METRICS), seed=666, paper={},
                  source="Cao et al., CVPR 2024, arXiv 2311.11600, Table 3 (unverified)")


# --------------------------------------------------------------------------------- DCDP
def _dcdp() -> Preset:
    s = DPS_SIGMA_Y
    paper_noise = f"paper/DPS σ = {DPS_SIGMA_MODEL} in [-1, 1] → σ_y = {s} in [0, 1] pixel units"
    tasks = [
        TaskSpec("deblur_g", "deblur_dps_gauss", {}, s,
                 f"61×61 Gaussian, std 3, reflected borders; {paper_noise}"),
        TaskSpec("deblur_m", "deblur_dps_motion", {}, s,
                 f"61×61 motionblur kernel, intensity 0.5, kernel seed 0; {paper_noise}"),
        TaskSpec("sr4", "sr_matlab_bicubic", {"scale": 4}, s,
                 f"MATLAB imresize bicubic ×4 with antialiasing (DPS Resizer); {paper_noise}"),
        TaskSpec("inpaint_box", "inpainting_box", {}, s,
                 f"128×128 hole at a seeded random position ≥ 16 px from the borders; "
                 f"{paper_noise}"),
        TaskSpec("inpaint_random", "inpainting_random", {"missing": 0.7}, s,
                 f"70 % of the pixels dropped (same for all channels), seeded; {paper_noise}"),
    ]
    methods = [
        MethodSpec("DCDP", "dcdp"),
        MethodSpec("DPS", "dps", 1000, 1.0),
        MethodSpec("DCDP-LDM", "dcdp-ldm"),
        MethodSpec("DCDP-CM", "dcdp-cm"),
    ]
    datasets = [DatasetSpec("ffhq", size=256, limit=100, model="adm-ffhq256")]
    protocol = " ".join([
        "DCDP (Li, Kwon, Alkhouri, Ravishankar & Qu, arXiv 2403.06054): FFHQ 256×256, the DPS "
        "measurement protocol (dmir.operators.dps_protocol): Gaussian deblurring "
        "(deblur_dps_gauss: 61×61, std 3, reflected borders), motion deblurring "
        "(deblur_dps_motion: 61×61 motionblur kernel, intensity 0.5), ×4 super-resolution "
        "(sr_matlab_bicubic: MATLAB-style antialiased bicubic), box inpainting (inpainting_box: "
        "128×128 hole, margin 16) and random inpainting (inpainting_random: 70 % missing).",
        "Mask and kernel seeds: the operators' `seed` parameter (default 0) gives ONE box, "
        "random mask and motion kernel for all images; DPS draws a new mask/kernel per image "
        "from its global RNG, so per-image numbers differ from the reference while the "
        "distribution is the same. The DCDP release itself (dcdp.py) overrides the inpainting "
        "mask with a fixed box [100:200, 100:200] — a quirk of the release, not used here.",
        _UNITS,
        f"Measurement noise: DPS/DCDP add Gaussian noise σ = {DPS_SIGMA_MODEL} to measurements "
        f"in the [-1, 1] domain; in dmir's [0, 1] pixel units that is σ_y = {s} "
        "(dps_protocol.DPS_SIGMA_Y = sigma_from_model(0.05), the one conversion). Note: the "
        "DCDP release's task_configurations (commit 15414d9) set sigma: 0; the 0.05 level is "
        "the DPS configs' (DPS2022/diffusion-posterior-sampling configs/*.yaml).",
        "DCDP: the released per-task settings (purification_configurations/*.yaml: SGD, "
        "momentum 0.9, K/τ/lr/T0 per task, linear purification schedule to 0, DDIM ≤ 20 "
        "steps; dmir.solvers.dcdp.DCDP_PRESETS deblur_gauss, deblur_motion, sr4, inpainting "
        "for the five tasks in order, both inpaintings using 'inpainting'). DPS: 1000 DDPM "
        "steps, step size from the DPS configs (0.3 for blur and SR, 0.5 for inpainting). "
        "DCDP-LDM (latent-space DCDP, the release's DCDP-LDM/ folder) and DCDP-CM (consistency-"
        "model purification, in the paper's abstract) are not implemented in dmir and are "
        "reported as missing. The paper's other baselines could not be read.",
        "Model: adm-ffhq256 (DPS ffhq_10m.pt). Dataset: FFHQ 256 images supplied by the user; "
        "100 images (the release README reports averages over 100 FFHQ images; the release "
        "script stops after 10 — its test-set size for these tables could not be confirmed).",
        "Metrics (as the DCDP code computes them): PSNR with scikit-image "
        "peak_signal_noise_ratio on [0, 1] floats (psnr); SSIM with gaussian_weights=True, "
        "sigma 1.5, use_sample_covariance=False (ssim: Gaussian, Wang et al.); LPIPS = "
        "torchmetrics VGG fed images clamped to [-1, 1] (lpips_vgg, the standard input range).",
        "Seed: 0 (dcdp.py: torch.manual_seed(0)); dmir seeds every image by its index.",
        _NO_NUMBERS.format(where="take DCDP's and the baselines' PSNR/SSIM/LPIPS from the DCDP "
                           "paper's FFHQ table (arXiv 2403.06054)"),
    ])
    return Preset("dcdp", "DCDP (FFHQ 256, DPS protocol, σ = 0.05 in [-1, 1])", protocol,
                  datasets, tasks, methods, ["psnr", "ssim", "lpips_vgg"], seed=0, paper={},
                  source="Li et al., arXiv 2403.06054 (FFHQ table)")


PRESETS: dict[str, Preset] = {p.name: p for p in [
    _equs_table1(), _deqir_table1(), _deqir_table2(), _deqir_table3(), _dcdp()]}

#: methods of each preset that dmir does not implement (MethodSpec.method names); kept in the
#: preset so runs report them as missing. Tests check this against :func:`missing`.
MISSING: dict[str, list[str]] = {
    "equs-table1": [], "deqir-table1": [], "deqir-table2": [], "deqir-table3": [],
    "dcdp": ["dcdp-ldm", "dcdp-cm"],
}


def names() -> list[str]:
    """The preset names, in a fixed order."""
    return list(PRESETS)


def get(name: str) -> Preset:
    """A copy of preset ``name`` (safe to fill in dataset paths). Unknown → ParameterError."""
    if name not in PRESETS:
        raise ParameterError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _preset(p) -> Preset:
    return get(p) if isinstance(p, str) else p


def missing(preset) -> list[MethodSpec]:
    """The methods of ``preset`` (a Preset or a name) that dmir cannot run: neither a name in
    :func:`dmir.solvers.names` nor ``"apy"``."""
    from .. import solvers

    available = set(solvers.names()) | {"apy"}
    return [m for m in _preset(preset).methods if m.method not in available]


def check(preset) -> None:
    """Validate a preset's internal consistency; raise ParameterError naming the problem.

    Labels are unique per kind; operators are registered and get only parameters they accept;
    σ_y is in [0, 1] (pixel units); ``paper`` keys are (dataset, task, method) labels of this
    preset and its metric keys are in ``metrics``.
    """
    from .. import operators

    p = _preset(preset)
    labels = {}
    for kind, specs in (("dataset", p.datasets), ("task", p.tasks), ("method", p.methods)):
        names_ = [s.name for s in specs]
        dup = sorted({n for n in names_ if names_.count(n) > 1})
        if dup:
            raise ParameterError(f"preset {p.name}: duplicate {kind} label(s) {dup}")
        labels[kind] = set(names_)
    for t in p.tasks:
        allowed, _ = operators.params(t.operator)        # unknown operator → UnknownNameError
        extra = set(t.params) - set(allowed)
        if extra:
            raise ParameterError(f"preset {p.name}, task {t.name}: operator {t.operator} does "
                                 f"not take {sorted(extra)}; allowed: {', '.join(allowed)}")
        if not (0.0 <= float(t.sigma_y) <= 1.0):
            raise ParameterError(f"preset {p.name}, task {t.name}: sigma_y must be in [0, 1] "
                                 f"pixel units, got {t.sigma_y}")
    for key, values in p.paper.items():
        if not (isinstance(key, tuple) and len(key) == 3):
            raise ParameterError(f"preset {p.name}: paper key {key!r} must be a (dataset, "
                                 f"task, method) tuple")
        for kind, label in zip(("dataset", "task", "method"), key):
            if label not in labels[kind]:
                raise ParameterError(f"preset {p.name}: paper entry {key} names unknown "
                                     f"{kind} {label!r}; known: {', '.join(sorted(labels[kind]))}")
        bad = set(values) - set(p.metrics)
        if bad:
            raise ParameterError(f"preset {p.name}: paper entry {key} has metric(s) "
                                 f"{sorted(bad)} not in the preset's metrics {p.metrics}")
