"""Paper presets for ``dmir bench --preset NAME``: the datasets, tasks, methods and metric variants
of one published table, its protocol in words, and the numbers the paper reports.

Presets (see ``docs/presets.md`` for the long form):

* ``equs-table1`` — EquS (Wu et al., arXiv 2511.09965), Table 1: ImageNet and CelebA-HQ, five
  noise-free DDNM-protocol tasks, DDNM / DDRM / CDDB with and without EquS+, DPS, ΠGDM, DeqIR, A⁺y
  and the release's "Apy" baseline.
* ``deqir-table1`` … ``deqir-table3`` — DeqIR (Cao et al., CVPR 2024, arXiv 2311.11600): SR and
  deblurring, text/stripe inpainting (CelebA-HQ), colorization.
* ``dcdp`` — DCDP (Li et al., arXiv 2403.06054): FFHQ 256, the DPS measurement protocol.

Conventions (as everywhere in dmir): ``TaskSpec.sigma_y`` is the Gaussian measurement noise in
**[0, 1] pixel units**; a paper that states σ in the [-1, 1] model domain (DPS, DCDP) is converted
once with :func:`dmir.operators.noise.sigma_from_model` (÷2), and its own value is kept in the
task's ``note``. ``Preset.paper`` maps ``(dataset, task, method)`` labels — the ``name`` fields of
the preset's specs — to ``{metric: value}`` with metric keys from ``Preset.metrics``.

Paper numbers: ``equs-table1`` and ``deqir-table1`` … ``deqir-table3`` carry the published
numbers, transcribed from the papers' table images and copied here as data (the tables below:
:data:`EQUS_TABLE1_IMAGENET`, …); ``dcdp`` has none (its table was not transcribed). The
summaries print paper, ours and Δ per cell (:mod:`dmir.bench.summary`).

Methods that dmir does not implement are kept in the preset (so a run reports them as missing
instead of silently dropping them): :func:`missing` lists them, :data:`MISSING` declares them.

The presets never read files: dataset folders, list files and checkpoints are supplied by the
user at run time (``DatasetSpec.path`` / ``list_file`` stay ``None`` here).
"""
from __future__ import annotations

import copy
from pathlib import Path

from ..errors import ParameterError
from .spec import DatasetSpec, MethodSpec, Preset, TaskSpec, validate

__all__ = ["PRESETS", "MISSING", "DDNM_MASK", "CDDB_TABLE", "CDDB_RELEASE", "PIGDM_PAPER",
           "PIGDM_REDDIFF", "get", "names", "missing", "check"]

#: the DDNM/EquS inpainting mask (DDNM ``exp/inp_masks/mask.npy``, 256×256, 1 = kept), shipped
#: with dmir; an absolute path so the spec stays plain data
DDNM_MASK = str(Path(__file__).resolve().parent.parent / "data" / "ddnm_inpainting_mask.npy")

_UNITS = ("Noise units: σ_y is given in [0, 1] pixel units (dmir's convention; inside the "
          "library the noise std is 2·σ_y in the [-1, 1] model domain).")
_NO_NUMBERS = ("Paper numbers: none entered — {where}; they could not be read as text when this "
               "preset was written, and no number is entered that was not read from a source. "
               "Fill Preset.paper from that table (keys: dataset, task, method labels of this "
               "preset; metric keys from Preset.metrics).")


# --------------------------------------------------------------------------------- paper tables
# Transcribed from the papers' table images (EquS: the release README's images/table.png; DeqIR:
# figs/tab_sr_deblur.png, figs/tab_inp_color.png), as collected in the project's papers/tables.md.
# Cells are "a/b/c" in the paper's column order; "-" = not reported. Copied here (not read from
# a file) so the presets stay plain data.

def _cells(table: dict, dataset: str, tasks: list, methods: dict, metrics: dict) -> dict:
    """{(dataset, task, method label): {metric: value}} from rows of "a/b/c" cells.

    ``table[row]`` lists one cell per task (in ``tasks`` order); ``methods`` maps a table row to
    the preset's method label; ``metrics[task]`` names the metric of each number of a cell."""
    out = {}
    for row, cells in table.items():
        for task, cell in zip(tasks, cells):
            vals = {}
            for metric, v in zip(metrics[task], cell.split("/")):
                v = v.strip()
                if v not in ("-", "–", ""):
                    vals[metric] = float(v)
            if vals:
                out[(dataset, task, methods[row])] = vals
    return out


_EQUS_TASKS = ["deblur_g", "cs25", "inpainting", "sr4", "colorization"]
_EQUS_METRICS = {t: ("psnr", "ssim_uniform", "lpips_vgg_01") for t in _EQUS_TASKS}
_EQUS_METRICS["colorization"] = ("cons_8bit", "fid", "lpips_vgg_01")
_EQUS_ROWS = {"A†y": "A†y (release Apy)", "DPS": "DPS", "ΠGDM": "ΠGDM", "DeqIR": "DeqIR",
              "CDDB": "CDDB", "CDDB-EquS+": "CDDB+EquS+", "DDRM": "DDRM",
              "DDRM-EquS+": "DDRM+EquS+", "DDNM": "DDNM", "DDNM-EquS+": "DDNM+EquS+"}
#: EquS Table 1, ImageNet (1k): Gaussian deblurring | block CS 25 % | inpainting | 4× bicubic SR
#: (PSNR/SSIM/LPIPS) | colorization (Cons/FID/LPIPS)
EQUS_TABLE1_IMAGENET = {
    "A†y": ["18.57/0.586/0.376", "12.83/0.192/0.724", "14.62/0.661/0.413", "26.27/0.771/0.302",
            "53.92/44.95/0.167"],
    "DPS": ["26.12/0.729/0.341", "30.61/0.868/0.170", "35.56/0.964/0.052", "22.49/0.584/0.468",
            "619.3/54.78/0.277"],
    "ΠGDM": ["42.19/0.980/0.035", "30.61/0.867/0.170", "35.54/0.964/0.052",
             "27.89/0.815/0.217", "177.3/36.75/0.194"],
    "DeqIR": ["43.57/0.986/0.017", "25.26/0.696/0.296", "32.36/0.956/0.036",
              "26.90/0.788/0.250", "25.26/39.05/0.176"],
    "CDDB": ["26.42/0.750/0.311", "28.60/0.795/0.225", "34.92/0.968/0.026", "23.47/0.630/0.423",
             "275.1/39.04/0.183"],
    "CDDB-EquS+": ["27.55/0.797/0.268", "32.05/0.890/0.099", "36.18/0.976/0.020",
                   "25.41/0.712/0.358", "114.0/41.18/0.168"],
    "DDRM": ["43.01/0.986/0.014", "27.54/0.766/0.276", "34.60/0.965/0.030", "27.39/0.801/0.241",
             "144.4/36.77/0.162"],
    "DDRM-EquS+": ["44.69/0.990/0.010", "31.70/0.886/0.109", "35.93/0.973/0.025",
                   "27.54/0.807/0.248", "142.9/39.70/0.162"],
    "DDNM": ["44.94/0.990/0.011", "28.59/0.795/0.225", "34.93/0.968/0.025", "27.45/0.801/0.231",
             "21.92/36.87/0.157"],
    "DDNM-EquS+": ["46.99/0.993/0.006", "31.87/0.887/0.103", "36.13/0.976/0.021",
                   "27.63/0.809/0.242", "21.68/39.34/0.158"],
}
#: EquS Table 1, CelebA-HQ (1k), same columns
EQUS_TABLE1_CELEBAHQ = {
    "A†y": ["18.85/0.686/0.305", "12.11/0.155/0.790", "14.65/0.653/0.459", "30.64/0.881/0.214",
            "54.86/46.65/0.138"],
    "DPS": ["30.65/0.856/0.173", "34.02/0.919/0.122", "37.80/0.967/0.061", "26.83/0.778/0.229",
            "578.0/42.33/0.160"],
    "ΠGDM": ["40.19/0.975/0.051", "34.02/0.919/0.122", "37.80/0.966/0.061",
             "31.80/0.890/0.124", "353.5/33.32/0.103"],
    "DeqIR": ["46.85/0.992/0.011", "32.56/0.894/0.120", "38.22/0.979/0.019",
              "31.82/0.892/0.125", "72.16/32.93/0.201"],
    "CDDB": ["30.86/0.862/0.161", "33.51/0.907/0.111", "39.36/0.982/0.017", "27.20/0.789/0.219",
             "347.8/32.25/0.123"],
    "CDDB-EquS+": ["32.60/0.898/0.162", "34.78/0.927/0.091", "39.82/0.983/0.016",
                   "30.16/0.855/0.209", "235.4/32.43/0.110"],
    "DDRM": ["43.07/0.985/0.023", "32.50/0.896/0.128", "38.30/0.973/0.035", "31.63/0.886/0.123",
             "170.6/31.20/0.105"],
    "DDRM-EquS+": ["43.15/0.986/0.023", "34.47/0.925/0.103", "38.69/0.975/0.034",
                   "32.39/0.901/0.134", "169.4/31.20/0.102"],
    "DDNM": ["46.73/0.992/0.011", "33.51/0.907/0.111", "39.37/0.982/0.017", "31.64/0.885/0.116",
             "28.49/26.19/0.090"],
    "DDNM-EquS+": ["46.88/0.993/0.010", "34.76/0.926/0.091", "39.85/0.983/0.016",
                   "32.44/0.901/0.126", "31.01/26.08/0.086"],
}

_DEQIR1_TASKS = ["sr2", "sr4", "deblur_g", "deblur_a", "nfe"]
_DEQIR_PSL = ("psnr", "ssim", "lpips_alex")
_DEQIR1_METRICS = {"sr2": _DEQIR_PSL, "sr4": _DEQIR_PSL, "deblur_g": _DEQIR_PSL,
                   "deblur_a": _DEQIR_PSL, "nfe": ("nfe",)}
_DEQIR_ROWS = {"Baseline": "Baseline (release Apy)", "DGP": "DGP", "DPS": "DPS", "ILVR": "ILVR",
               "DiffPIR": "DiffPIR", "DDRM": "DDRM", "DDNM": "DDNM", "DeqIR": "DeqIR",
               "Palette": "Palette", "RePaint": "RePaint"}
#: DeqIR Table 1, ImageNet: 2× SR | 4× SR | deblur (gauss) | deblur (aniso) (PSNR/SSIM/LPIPS) |
#: NFEs as published (DeqIR: 15 batched evaluations)
DEQIR_TABLE1_IMAGENET = {
    "Baseline": ["29.63/0.875/0.165", "25.15/0.699/0.351", "18.22/0.529/0.433",
                 "20.86/0.544/0.480", "-"],
    "DGP": ["22.32/0.583/0.426", "18.35/0.398/0.529", "21.81/0.522/0.472", "20.77/0.459/0.504",
            "1500"],
    "DPS": ["22.40/0.597/0.405", "20.34/0.488/0.464", "22.04/0.569/0.394", "21.82/0.561/0.381",
            "1000"],
    "ILVR": ["23.36/0.613/0.334", "22.76/0.583/0.383", "-", "-", "100"],
    "DiffPIR": ["27.16/0.790/0.214", "24.31/0.649/0.350", "25.32/0.673/0.296",
                "23.37/0.535/0.439", "100"],
    "DDRM": ["31.43/0.906/0.117", "26.21/0.745/0.288", "40.70/0.978/0.040", "37.69/0.964/0.057",
             "20"],
    "DDNM": ["31.81/0.908/0.096", "26.49/0.753/0.266", "43.83/0.987/0.021", "38.40/0.969/0.039",
             "100"],
    "DeqIR": ["32.33/0.913/0.081", "27.44/0.782/0.235", "43.55/0.987/0.020",
              "39.47/0.970/0.036", "15"],
}
#: DeqIR Table 1, CelebA-HQ, same columns
DEQIR_TABLE1_CELEBAHQ = {
    "Baseline": ["35.87/0.953/0.099", "30.12/0.857/0.240", "18.94/0.704/0.337",
                 "23.16/0.727/0.354", "-"],
    "DGP": ["28.61/0.809/0.279", "25.25/0.690/0.405", "27.02/0.738/0.372", "25.73/0.663/0.426",
            "1500"],
    "DPS": ["28.71/0.818/0.219", "25.01/0.710/0.282", "27.56/0.775/0.229", "26.91/0.754/0.234",
            "1000"],
    "ILVR": ["27.31/0.783/0.234", "27.09/0.775/0.245", "-", "-", "100"],
    "DiffPIR": ["32.51/0.882/0.156", "28.60/0.795/0.228", "30.63/0.835/0.197",
                "29.32/0.802/0.232", "100"],
    "DDRM": ["36.76/0.952/0.074", "31.91/0.880/0.149", "43.06/0.983/0.036", "41.27/0.976/0.053",
             "20"],
    "DDNM": ["36.37/0.950/0.065", "31.86/0.876/0.136", "46.99/0.992/0.021", "43.43/0.983/0.037",
             "100"],
    "DeqIR": ["36.57/0.953/0.061", "32.19/0.887/0.154", "47.46/0.993/0.019",
              "43.58/0.984/0.035", "15"],
}
#: DeqIR Table 2, zero-shot inpainting, CelebA-HQ: text mask | stripe mask (PSNR/SSIM/LPIPS)
DEQIR_TABLE2_CELEBAHQ = {
    "Baseline": ["14.55/0.642/0.515", "9.02/0.131/0.730"],
    "Palette": ["38.09/0.978/0.027", "25.91/0.733/0.343"],
    "RePaint": ["38.54/0.974/0.039", "36.25/0.950/0.087"],
    "DDRM": ["37.25/0.969/0.223", "34.34/0.933/0.223"],
    "DDNM": ["39.45/0.980/0.023", "36.75/0.951/0.076"],
    "DeqIR": ["39.60/0.981/0.026", "36.97/0.952/0.086"],
}
#: DeqIR Table 3, zero-shot colorization (Cons/LPIPS/FID): ImageNet | CelebA-HQ
DEQIR_TABLE3 = {
    "Baseline": ["0/0.196/90.93", "0/0.210/70.69"],
    "DGP": ["-/0.256/99.86", "-/0.218/73.24"],
    "DDRM": ["265.08/0.223/79.42", "472.25/0.245/57.29"],
    "DDNM": ["45.07/0.186/77.21", "51.43/0.139/45.73"],
    "DeqIR": ["43.15/0.171/70.94", "50.16/0.092/43.98"],
}

_PAPER_NOTE = ("Paper numbers: transcribed from the paper's table image ({where}); they were "
               "read from an image, not text, and are entered as printed (docs/presets.md lists "
               "the cells that look inconsistent with their rows). The summary prints paper, "
               "ours and Δ per cell and flags |Δ| above the metric's tolerance "
               "(dmir.bench.summary.TOLERANCES).")

#: the release's "Apy" baseline (EquS/DeqIR/DDNM code): y itself for deblurring, the masked
#: image with black (-1) holes for inpainting, y repeated for colorization, else A⁺y
APY_RELEASE = {"form": "release"}
#: DeqIR's published protocol (m 5, 15 evaluations, the release's returned iterate)
DEQIR_PUBLISHED = {"strategy": "published"}
#: CDDB's own step rule (HJ-harry/CDDB dds_sampling: x̂0 − step·∇‖A x̂0 − y‖², --step-size 1.0,
#: i.e. 2·Aᵀ(A x̂0 − y)): dmir's step_size multiplies Aᵀ(A x̂0 − y), so 2.0. Kept in equs-table1
#: as the variant row "CDDB (release step 2)": it does NOT reproduce EquS Table 1.
CDDB_RELEASE = {"step_size": 2.0}
#: the step that reproduces EquS Table 1 (equs-table1's CDDB rows): one step on Aᵀ(A x̂0 − y)
#: (½∇‖A x̂0 − y‖²). Measured at 32², 50 steps (benchmarks/cddb_step.py, docs/presets.md): it
#: equals DDNM on inpainting and block CS, as the table's CDDB rows do (CelebA-HQ CS identical),
#: and leaves SR ×4 3.7–7.2 dB below DDNM (table: 4.0, 4.4); step 2 loses 2.8–3.8 dB on
#: inpainting and gains on CS, which the table does not show.
CDDB_TABLE = {"step_size": 1.0}
#: ΠGDM as in equs-table1: 100 steps, η 1.0 — dmir's choice, taken as the ΠGDM paper's ImageNet
#: setting (Song et al., ICLR 2023, appendix; EquS does not say what it ran). Not verified
#: against the paper's text here.
PIGDM_PAPER = {"steps": 100, "eta": 1.0}
#: ΠGDM in the authors' public code (NVlabs/RED-diff, algos/pgdm.py and its configs): 50 steps,
#: η 0 — the variant row "ΠGDM (RED-diff 50, η 0)" of equs-table1
PIGDM_REDDIFF = {"steps": 50, "eta": 0.0}


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


def _apy_rows(label: str) -> list:
    return [MethodSpec("A⁺y", "apy"), MethodSpec(label, "apy", kwargs=dict(APY_RELEASE))]


_APY_TEXT = ("Baselines: 'A⁺y' is the true pseudo-inverse op.pinv(y); the paper's A†y/Baseline "
             "row is what the release saves as 'Apy' images — y itself for deblurring, the "
             "masked image with black (-1) holes for inpainting, y repeated over the channels "
             "for colorization, A⁺y otherwise (EquS guided_diffusion/diffusion.py) — run as its "
             "own row '{label}' (MethodSpec method 'apy', kwargs form='release').")


# --------------------------------------------------------------------------------- EquS
def _equs_table1() -> Preset:
    tasks = [
        TaskSpec("deblur_g", "deblur_gauss", {}, 0.0,
                 "reference 'deblur_gauss' with its channel quirk (not a true blur); the script "
                 "also runs deblur_aniso"),
        TaskSpec("cs25", "cs_blockbased", {"ratio": 0.25}, 0.0,
                 "block-based CS, ratio 0.25, 32×32 blocks, random orthogonal basis (the EquS "
                 "README's NFE study uses 'block-based CS 25%'; evaluation.sh also runs "
                 "cs_walshhadamard 0.25)"),
        TaskSpec("inpainting", "inpainting", {"mask": DDNM_MASK}, 0.0,
                 "DDNM mask.npy (exp/inp_masks/mask.npy)"),
        TaskSpec("sr4", "sr_bicubic", {"scale": 4}, 0.0,
                 "EquS evaluation.sh: --deg sr_bicubic --deg_scale 4 --sigma_y 0 "
                 "(the script also runs sr_averagepooling ×4)"),
        TaskSpec("colorization", "colorization", {}, 0.0,
                 "mean of the channels; the paper reports Cons (ℓ1 on 8-bit images: cons_8bit), "
                 "FID and LPIPS"),
    ]
    methods = _apy_rows("A†y (release Apy)") + [
        MethodSpec("DPS", "dps", 1000, 1.0),
        MethodSpec("ΠGDM", "pigdm", int(PIGDM_PAPER["steps"]), PIGDM_PAPER["eta"]),
        MethodSpec("DeqIR", "deqir", 25, kwargs=dict(DEQIR_PUBLISHED)),
        MethodSpec("CDDB", "cddb", 100, 0.85, kwargs=dict(CDDB_TABLE)),
        MethodSpec("CDDB+EquS+", "cddb-equs+", 100, 0.85, kwargs=dict(CDDB_TABLE)),
        MethodSpec("DDRM", "ddrm", 20, 0.85),
        MethodSpec("DDRM+EquS+", "ddrm-equs+", 20, 0.85),
        MethodSpec("DDNM", "ddnm", 100, 0.85),
        MethodSpec("DDNM+EquS+", "ddnm-equs+", 100, 0.85),
        # named variants (no published row): the CDDB release's step, RED-diff's ΠGDM settings
        MethodSpec("CDDB (release step 2)", "cddb", 100, 0.85, kwargs=dict(CDDB_RELEASE)),
        MethodSpec("ΠGDM (RED-diff 50, η 0)", "pigdm", int(PIGDM_REDDIFF["steps"]),
                   PIGDM_REDDIFF["eta"]),
    ]
    datasets = [
        DatasetSpec("imagenet", size=256, limit=1000, model="adm-imagenet256-uncond"),
        DatasetSpec("celebahq", size=256, limit=1000, model="ddpm-celebahq256"),
    ]
    paper = _cells(EQUS_TABLE1_IMAGENET, "imagenet", _EQUS_TASKS, _EQUS_ROWS, _EQUS_METRICS)
    paper.update(_cells(EQUS_TABLE1_CELEBAHQ, "celebahq", _EQUS_TASKS, _EQUS_ROWS,
                        _EQUS_METRICS))
    protocol = " ".join([
        "EquS Table 1 (Wu et al., arXiv 2511.09965): ImageNet 256 and CelebA-HQ 256 (1k images "
        "each), five noise-free tasks — Gaussian deblurring (deblur_gauss), compressed sensing "
        "25 % (cs_blockbased), inpainting (DDNM mask), ×4 super-resolution (sr_bicubic), "
        "colorization — following the release's evaluation.sh (FouierL/EquS) and the DDNM "
        "protocol; the DDNM family at 100 NFE.",
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
        "the quadratic Timestep-Aware Schedule, same NFE; DDRM 20 steps η 0.85; CDDB 100 steps "
        "with one step on Aᵀ(A x̂0 − y) (step_size=1: what reproduces Table 1 — CDDB equal to "
        "DDNM on inpainting and CS, far below it on SR ×4, deblurring and colorization; "
        "measured in docs/presets.md); the CDDB release's own rule (HJ-harry/CDDB "
        "dds_sampling: one step of size 1 on ∇‖A x̂0 − y‖², step_size=2 in dmir) is the "
        "variant row 'CDDB (release step 2)' and does not reproduce the table; DPS 1000 steps "
        "(release step size per task); ΠGDM 100 steps η 1 (dmir's choice, taken as the ΠGDM "
        "paper's ImageNet setting; the authors' public code, NVlabs/RED-diff, uses 50 steps "
        "η 0: the variant row 'ΠGDM (RED-diff 50, η 0)'); DeqIR 25 steps in its published "
        "protocol (strategy 'published': nw 0, etw 0.1, Anderson m 5, 15 evaluations, the "
        "release's returned iterate). The step counts of the non-DDNM baselines are not "
        "stated in the paper.",
        _APY_TEXT.format(label="A†y (release Apy)"),
        "Metrics (as the EquS code computes them): PSNR on float [0, 1] images per image, then "
        "averaged (psnr); SSIM = scikit-image structural_similarity defaults, 7×7 uniform "
        "window with sample covariance, data_range 1, per channel (ssim_uniform); LPIPS = "
        "the lpips VGG network fed [0, 1] images without normalisation (lpips_vgg_01 — not the "
        "standard LPIPS input, which is [-1, 1]); Cons for colorization = ℓ1 of A x̂ − y on the "
        "8-bit result in [0, 1] pixel units (cons_8bit: the values fit 8-bit images, the "
        "release computes no Cons); FID (fid; not computed by the released code — dmir uses "
        "the TF-Inception FID network, so FID values may differ from the paper's "
        "implementation).",
        "Seed: 1234 (EquS main.py default); the reference shuffles the test set with that "
        "seed, dmir seeds every image by its index instead, so per-image noise differs.",
        _PAPER_NOTE.format(where="EquS Table 1, the release README's images/table.png"),
    ])
    return Preset("equs-table1", "EquS Table 1 (ImageNet, CelebA-HQ; noise-free)", protocol,
                  datasets, tasks, methods,
                  ["psnr", "ssim_uniform", "lpips_vgg_01", "cons_8bit", "fid"],
                  seed=1234, paper=paper, source="Wu et al., arXiv 2511.09965, Table 1")


# --------------------------------------------------------------------------------- DeqIR
def _deqir_methods(extra_missing=("DGP", "ILVR"), diffpir=True, dps=True) -> list:
    ms = _apy_rows("Baseline (release Apy)")
    missing = {"DGP": "dgp", "ILVR": "ilvr", "Palette": "palette", "RePaint": "repaint"}
    # ILVR: DDPM at the table's 100 NFE; RePaint: the release's 250 steps, jumps 10 × 10
    runnable = {"ILVR": MethodSpec("ILVR", "ilvr", 100, 1.0),
                "RePaint": MethodSpec("RePaint", "repaint", 250, 1.0)}
    ms += [runnable.get(label, MethodSpec(label, missing[label])) for label in extra_missing]
    if dps:
        ms.append(MethodSpec("DPS", "dps", 1000, 1.0))
    if diffpir:
        ms.append(MethodSpec("DiffPIR", "diffpir", 100, 0.0))
    ms += [MethodSpec("DDRM", "ddrm", 20, 0.85),
           MethodSpec("DDNM", "ddnm", 100, 0.85),
           MethodSpec("DeqIR", "deqir", 25, kwargs=dict(DEQIR_PUBLISHED))]
    return ms


def _deqir_datasets(names=("imagenet", "celebahq")) -> list:
    ds = {"imagenet": DatasetSpec("imagenet", size=256, limit=100,
                                  model="adm-imagenet256-uncond"),
          "celebahq": DatasetSpec("celebahq", size=256, limit=100, model="ddpm-celebahq256")}
    return [ds[n] for n in names]


def _deqir_protocol(table: str, what: str, cons: bool = False, missing: str = "") -> str:
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
        "DeqIR: 25 steps in its published protocol (strategy 'published': uniform skip, nw 0, "
        "etw 0.1, Anderson m 5, λ 1e-3, β 1, tol 1e-3, at most 15 evaluations of the batched "
        "map, returning the last mixed iterate as the release does — the README command "
        "--timesteps 25 --use_svd --etw 0.1 and main.py defaults); the paper's NFE column "
        "counts those 15 batched evaluations (dmir's nfe counts single-image network "
        "evaluations: 25 × 15 = 375; the summary flags that NFE cell as a difference of "
        "units, not of protocol). Baselines: DDRM 20 steps η 0.85, DDNM 100 steps η 0.85, "
        "DPS 1000 steps, DiffPIR 100 steps (20 for inpainting), ILVR 100 DDPM steps (the "
        "table's NFE), RePaint 250 steps with jumps 10 × 10 (its release's setting); methods "
        "dmir does not "
        "implement are listed and reported as missing" + (f" ({missing})." if missing else "."),
        _APY_TEXT.format(label="Baseline (release Apy)"),
        "Metrics: the release computes none (it only writes images); dmir reports PSNR (float "
        "[0, 1], per image then averaged), SSIM (Gaussian σ = 1.5, Wang et al.), LPIPS (AlexNet, "
        "standard [-1, 1] input), FID (TF-Inception), NFE and wall time"
        + ("; Cons = ℓ1 of A x̂ − y in float [0, 1] pixel units (cons: the paper's Baseline "
           "Cons 0 fits float, not 8-bit, images)" if cons else "")
        + "; which SSIM/LPIPS variant the paper used could not be confirmed.",
        "Seed: 666 (DeqIR main.py default); dmir seeds every image by its index.",
        _PAPER_NOTE.format(where=f"DeqIR {table}, the release README's figs/tab_sr_deblur.png "
                           f"and figs/tab_inp_color.png"),
    ])


_DEQIR_METRICS = ["psnr", "ssim", "lpips_alex", "fid", "nfe", "time"]


def _deqir_table1() -> Preset:
    tasks = [
        TaskSpec("sr2", "sr_bicubic", {"scale": 2}, 0.0,
                 "release --deg sr_bicubic --scale 2 (forces the SVD operator)"),
        TaskSpec("sr4", "sr_bicubic", {"scale": 4}, 0.0,
                 "release --deg sr_bicubic --scale 4 (forces the SVD operator)"),
        TaskSpec("deblur_g", "deblur_gauss", {}, 0.0,
                 "release --deg deblur_gauss (5-tap σ = 10, reference channel quirk)"),
        TaskSpec("deblur_a", "deblur_aniso", {}, 0.0,
                 "release --deg deblur_aniso (9-tap σ = 20 / σ = 1 kernels, reference channel "
                 "quirk)"),
    ]
    what = ("2× and 4× super-resolution, Gaussian and anisotropic deblurring on ImageNet and "
            "CelebA-HQ (figs/tab_sr_deblur.png). The SR variant (bicubic vs average pooling) is "
            "not named in the table; sr_bicubic is the release's --deg for its README command.")
    paper = _cells(DEQIR_TABLE1_IMAGENET, "imagenet", _DEQIR1_TASKS, _DEQIR_ROWS,
                   _DEQIR1_METRICS)
    paper.update(_cells(DEQIR_TABLE1_CELEBAHQ, "celebahq", _DEQIR1_TASKS, _DEQIR_ROWS,
                        _DEQIR1_METRICS))
    paper = _nfe_per_task(paper, [t.name for t in tasks])
    return Preset("deqir-table1", "DeqIR Table 1 (×2/×4 SR, deblurring; ImageNet, CelebA-HQ)",
                  _deqir_protocol("Table 1", what, missing="DGP"), _deqir_datasets(), tasks, _deqir_methods(),
                  list(_DEQIR_METRICS), seed=666, paper=paper,
                  source="Cao et al., CVPR 2024, arXiv 2311.11600, Table 1")


def _nfe_per_task(paper: dict, tasks: list) -> dict:
    """The table's one NFE column, repeated on every task of its row."""
    out = {k: v for k, v in paper.items() if k[1] != "nfe"}
    for (d, t, m), v in paper.items():
        if t == "nfe":
            for task in tasks:
                if (d, task, m) in out:
                    out[(d, task, m)] = dict(out[(d, task, m)], **v)
    return out


def _deqir_table2() -> Preset:
    tasks = [
        TaskSpec("inp_text", "inpainting", {"mask": "inp_masks/text.npy"}, 0.0,
                 "the release's experiments/inp_masks/text.npy (--mask_type text); not in the "
                 "release repository: supply it as inp_masks/text.npy under the working "
                 "folder (a 256×256 .npy/.png, 1 = kept)"),
        TaskSpec("inp_stripe", "inpainting", {"mask": "inp_masks/stripe.npy"}, 0.0,
                 "the release's experiments/inp_masks/stripe.npy (--mask_type stripe); supply "
                 "it as inp_masks/stripe.npy under the working folder"),
    ]
    what = ("zero-shot inpainting on CelebA-HQ with a text mask and a stripe mask "
            "(figs/tab_inp_color.png). The masks are the release's "
            "experiments/inp_masks/<mask_type>.npy, which the public repository does not "
            "contain; the user supplies them.")
    paper = _cells(DEQIR_TABLE2_CELEBAHQ, "celebahq", ["inp_text", "inp_stripe"], _DEQIR_ROWS,
                   {"inp_text": _DEQIR_PSL, "inp_stripe": _DEQIR_PSL})
    return Preset("deqir-table2", "DeqIR Table 2 (inpainting: text and stripe masks; "
                  "CelebA-HQ)", _deqir_protocol("Table 2", what, missing="Palette"), _deqir_datasets(["celebahq"]),
                  tasks, _deqir_methods(("Palette", "RePaint"), diffpir=False, dps=False),
                  list(_DEQIR_METRICS), seed=666, paper=paper,
                  source="Cao et al., CVPR 2024, arXiv 2311.11600, Table 2")


def _deqir_table3() -> Preset:
    tasks = [TaskSpec("colorization", "colorization", {}, 0.0,
                      "mean of the channels; Cons in float (cons)")]
    what = ("zero-shot colorization on ImageNet and CelebA-HQ, Cons / LPIPS / FID "
            "(figs/tab_inp_color.png); the paper notes the FIDs are on small subsets and noisy.")
    paper = {}
    for i, ds in enumerate(("imagenet", "celebahq")):
        rows = {r: [cells[i]] for r, cells in DEQIR_TABLE3.items()}
        paper.update(_cells(rows, ds, ["colorization"], _DEQIR_ROWS,
                            {"colorization": ("cons", "lpips_alex", "fid")}))
    return Preset("deqir-table3", "DeqIR Table 3 (colorization; ImageNet, CelebA-HQ)",
                  _deqir_protocol("Table 3", what, cons=True, missing="DGP"), _deqir_datasets(), tasks,
                  _deqir_methods(("DGP",), diffpir=False, dps=False),
                  list(_DEQIR_METRICS) + ["cons"], seed=666, paper=paper,
                  source="Cao et al., CVPR 2024, arXiv 2311.11600, Table 3")


# --------------------------------------------------------------------------------- DCDP
def _dcdp() -> Preset:
    from .presets_dcdp import dcdp_preset

    return dcdp_preset(_UNITS, _NO_NUMBERS)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    _equs_table1(), _deqir_table1(), _deqir_table2(), _deqir_table3(), _dcdp()]}

#: methods of each preset that dmir does not implement (MethodSpec.method names); kept in the
#: preset so runs report them as missing. Tests check this against :func:`missing`.
MISSING: dict[str, list[str]] = {
    "equs-table1": [], "deqir-table1": ["dgp"],
    "deqir-table2": ["palette"], "deqir-table3": ["dgp"], "dcdp": [],
}

# the EquS ablation presets (dmir.bench.presets_ablation): every method runnable
from .presets_ablation import ablation_presets  # noqa: E402

for _p in ablation_presets():
    PRESETS[_p.name] = _p
    MISSING[_p.name] = []


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
    """Validate a preset (a Preset or a name): :func:`dmir.bench.spec.validate`."""
    validate(_preset(preset))
