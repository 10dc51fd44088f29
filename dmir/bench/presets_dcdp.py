"""The ``dcdp`` paper preset (DCDP, Li et al., arXiv 2403.06054: FFHQ 256, the DPS measurement
protocol), kept apart from :mod:`dmir.bench.presets`, which builds it through :func:`dcdp_preset`."""
from __future__ import annotations

from ..operators.dps_protocol import DPS_SIGMA_MODEL, DPS_SIGMA_Y
from .spec import DatasetSpec, MethodSpec, Preset, TaskSpec


def dcdp_preset(_UNITS: str, _NO_NUMBERS: str) -> Preset:
    """The ``dcdp`` preset; the shared protocol sentences come from :mod:`dmir.bench.presets`."""
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
        TaskSpec("denoise", "denoising", {}, s,
                 f"the paper's denoising task (no released config: DCDP runs its default, the "
                 f"×4 SR setting); {paper_noise}"),
    ]
    methods = [
        MethodSpec("DCDP", "dcdp"),
        MethodSpec("DPS", "dps", 1000, 1.0),
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
        "random mask and motion kernel for all images. The motion kernel is drawn once per run "
        "in the references too, and dmir makes the same draw: the DPS/DCDP "
        "MotionBlurOperator builds the motionblur Kernel twice after np.random.seed(0) and uses "
        "the second (dps_protocol.motion_kernel draw=2). DPS draws a new box/random mask per "
        "image from its global RNG, so per-image inpainting numbers differ from the reference "
        "while the distribution is the same. The DCDP release itself (dcdp.py) overrides the inpainting "
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
        "model purification) are implemented in dmir — method 'dcdp' runs in latent space "
        "when the model is a latent-diffusion prior (dmir.solvers.dcdp_latent) and purifies "
        "with one consistency-model step when the model is a consistency model "
        "(purifier='consistency') — but they need another checkpoint than this preset's "
        "pixel-space ADM, and a preset has one model per dataset: run them as separate runs "
        "(--model ffhq=CHECKPOINT, another --out). The paper's other baselines could not be "
        "read.",
        "Model: adm-ffhq256 (DPS ffhq_10m.pt). Dataset: FFHQ 256 images supplied by the user; "
        "100 images (the release README reports averages over 100 FFHQ images; the release "
        "script stops after 10 — its test-set size for these tables could not be confirmed).",
        "Metrics (as the DCDP code computes them): PSNR with scikit-image "
        "peak_signal_noise_ratio on [0, 1] floats (psnr); SSIM with gaussian_weights=True, "
        "sigma 1.5, use_sample_covariance=False (ssim: Gaussian, Wang et al.); LPIPS = "
        "torchmetrics VGG fed images clamped to [-1, 1] (lpips_vgg, the standard input range).",
        "Seed: 0 (dcdp.py: torch.manual_seed(0)); dmir seeds every image by its index.",
        "Denoising (the paper's sixth task) has no released purification config: dmir's DCDP "
        "uses its default (the ×4 SR setting, K 10, τ 100, T0 400; with A = I the "
        "reconstruction phase converges to y, so DCDP is diffusion purification of y). The "
        "release's README adds two nonlinear results on 100 FFHQ images: phase retrieval "
        "28.45 dB and nonlinear deblurring 29.19 dB PSNR (dmir.operators.PhaseRetrieval with "
        "DCDP preset 'phase_retrieval'; no bench task, as nonlinear operators are not in the "
        "task registry).",
        _NO_NUMBERS.format(where="take DCDP's and the baselines' PSNR/SSIM/LPIPS from the DCDP "
                           "paper's FFHQ table (arXiv 2403.06054); it is not among the "
                           "transcribed tables"),
    ])
    return Preset("dcdp", "DCDP (FFHQ 256, DPS protocol, σ = 0.05 in [-1, 1])", protocol,
                  datasets, tasks, methods, ["psnr", "ssim", "lpips_vgg"], seed=0, paper={},
                  source="Li et al., arXiv 2403.06054 (FFHQ table)")
