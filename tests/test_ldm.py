"""Latent diffusion checkpoints (CompVis LDM) and first-stage autoencoders.

Reference data: tests/data/ldm_tiny_ref.json holds, for two tiny LatentDiffusion models (an
unconditional one on a VQ first stage with scale_factor 0.5 and EMA weights, a class-conditional
cross-attention one) and a tiny AutoencoderKL, the full state-dict key → shape lists and the
outputs (ε, encode, decode) that the *official* latent-diffusion modules compute when every
parameter is set by :func:`fill` below (EMA shadows by ``fill("ema:" + key)``). Here the same
weights are written into a Lightning-style ``.ckpt`` and loaded with ``models.load``.
"""
import json
import math
import os
import zlib

import numpy as np
import pytest
import torch

from dmir import models
from dmir.errors import ParameterError, ShapeError
from dmir.models import autoencoder as ae
from dmir.models import ldm

DATA = os.path.join(os.path.dirname(__file__), "data")


@pytest.fixture(scope="module")
def ref():
    with open(os.path.join(DATA, "ldm_tiny_ref.json")) as f:
        return json.load(f)


def fill(name, shape):
    """The deterministic weight of parameter ``name`` (same rule as the fixture's generator)."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    t = torch.randn(tuple(shape), generator=g, dtype=torch.float64)
    if len(shape) >= 2:
        t = t / math.sqrt(math.prod(shape[1:]))
    elif name.endswith("weight"):
        t = 1 + 0.1 * t
    else:
        t = 0.1 * t
    return t.float()


def _linear_schedule(start, end, T):
    betas = np.linspace(start ** 0.5, end ** 0.5, T, dtype=np.float64) ** 2
    return betas, np.cumprod(1 - betas)


def official_checkpoint(case: dict, config: dict) -> dict:
    """A Lightning-style checkpoint with the official key layout of ``case``."""
    betas, abar = _linear_schedule(config["linear_start"], config["linear_end"],
                                   config["timesteps"])
    sd = {}
    for k, shape in case["keys"].items():
        if k == "betas":
            sd[k] = torch.tensor(betas, dtype=torch.float32)
        elif k == "alphas_cumprod":
            sd[k] = torch.tensor(abar, dtype=torch.float32)
        elif k in ("model_ema.decay", "model_ema.num_updates"):
            sd[k] = torch.tensor(0.9999) if k.endswith("decay") else torch.tensor(7)
        elif k.startswith("model_ema."):
            sd[k] = fill("ema:" + k, shape)
        else:
            sd[k] = fill(k, shape)
    return {"state_dict": sd, "global_step": 7, "epoch": 1,
            "pytorch-lightning_version": "1.4.2"}


def tiny_config(case: dict) -> dict:
    """The dmir config of a fixture case (its LatentDiffusion params, translated)."""
    p = case["config"]
    fs = p["first_stage_config"]["params"]
    unet = dict(p["unet_config"]["params"])
    cfg = {"linear_start": p["linear_start"], "linear_end": p["linear_end"],
           "timesteps": p["timesteps"], "scale_factor": p.get("scale_factor", 1.0),
           "unet": unet,
           "first_stage": {"type": "vq", "embed_dim": fs["embed_dim"], "n_embed": fs["n_embed"],
                           "ddconfig": fs["ddconfig"]}}
    if p.get("conditioning_key") == "crossattn":
        cs = p["cond_stage_config"]["params"]
        cfg.update(conditioning_key="crossattn",
                   cond_stage={"n_classes": cs["n_classes"], "embed_dim": cs["embed_dim"]})
    return cfg


def _t(x):
    return torch.tensor(x, dtype=torch.float32)


def _close(a, b, rel=1e-4):
    b = _t(b) if not isinstance(b, torch.Tensor) else b
    err = float((a - b).abs().max() / b.abs().max())
    assert err < rel, err
    return err


# ------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("case", ["vq_uncond", "vq_class"])
def test_key_layout_equals_official(ref, case):
    """dmir's module tree = the official LatentDiffusion state dict, less the EMA shadows and
    the schedule buffers; every UNet parameter has its LitEma shadow name when use_ema."""
    c = ref[case]
    cfg = tiny_config(c)
    with torch.device("meta"):
        net = ldm.build(cfg)
    mine = {k: list(v.shape) for k, v in net.state_dict().items()}
    official = {k: v for k, v in c["keys"].items()
                if not k.startswith("model_ema.") and k not in ldm._SCHEDULE_BUFFERS}
    assert mine == official
    ema = {k for k in c["keys"] if k.startswith("model_ema.diffusion_model")}
    if case == "vq_uncond":
        assert ema == {ldm._ema_name(k) for k in mine if k.startswith("model.")}
    else:
        assert not ema


def test_autoencoder_kl_layout_and_outputs(ref):
    c = ref["kl"]
    cfg = {"type": "kl", "embed_dim": 4, "ddconfig": {
        "double_z": True, "z_channels": 4, "resolution": 16, "in_channels": 3, "out_ch": 3,
        "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
        "dropout": 0.0}}
    net = ae.build(cfg)
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == c["keys"]
    net.load_state_dict({k: fill(k, s) for k, s in c["keys"].items()})
    x = _t(ref["inputs"]["x"])
    with torch.no_grad():
        e1 = _close(net.encode(x), c["encode_mean"])
        e2 = _close(net.decode(_t(c["z"])), c["decode"])
    print(f"KL autoencoder vs official: encode {e1:.1e}, decode {e2:.1e}")
    assert ae.infer_config(net.state_dict(), resolution=16) == ae.full_config(cfg)
    assert net.latent_shape((3, 16, 16)) == (4, 8, 8)
    with pytest.raises(ShapeError, match="multiples of 2"):
        net.latent_shape((3, 15, 16))


# ------------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("case", ["vq_uncond", "vq_class"])
def test_models_load_matches_official_outputs(ref, case, tmp_path):
    """models.load on a Lightning .ckpt with the official layout: ε (EMA weights when
    present), s·E(x) and D(z/s) (quantised, and not) equal the official code's outputs."""
    c = ref[case]
    cfg = tiny_config(c)
    path = tmp_path / "model.ckpt"
    torch.save(official_checkpoint(c, cfg), path)
    labels = ref["inputs"]["y"] if case == "vq_class" else None
    prior = models.load(str(path), config=cfg,
                        **({"class_labels": labels} if labels is not None else {}))
    assert isinstance(prior, ldm.LatentPrior) and prior.info["format"] == "ldm"
    notes = " ".join(prior.info["notes"])
    assert ("EMA" in notes) == (case == "vq_uncond"), notes
    z, x = _t(ref["inputs"]["z"]), _t(ref["inputs"]["x"])
    t = torch.tensor(ref["inputs"]["t"])
    with torch.no_grad():
        errs = [_close(prior.eps(z, t), c["eps"]), _close(prior.encode(x), c["encode"]),
                _close(prior.decode(z), c["decode"])]
        prior.quantize = False
        errs.append(_close(prior.decode(z), c["decode_not_quantized"]))
    print(f"{case} vs official: eps {errs[0]:.1e}, encode {errs[1]:.1e}, decode {errs[2]:.1e}, "
          f"decode (no VQ) {errs[3]:.1e}")
    # the schedule is LDM's linear one, and the latent shapes follow f = 2
    abar = _linear_schedule(cfg["linear_start"], cfg["linear_end"], 1000)[1]
    assert np.allclose(prior.alphas_cumprod.numpy(), abar, rtol=0, atol=1e-12)
    assert prior.latent_shape((3, 16, 16)) == (3, 8, 8) and prior.size_multiple == 4
    with pytest.raises(ShapeError, match="multiples of 4"):
        prior.latent_shape((3, 18, 16))


def test_raw_weights_differ_from_ema_and_ema_false(ref, tmp_path):
    c = ref["vq_uncond"]
    cfg = tiny_config(c)
    path = tmp_path / "model.ckpt"
    torch.save(official_checkpoint(c, cfg), path)
    z, t = _t(ref["inputs"]["z"]), torch.tensor(ref["inputs"]["t"])
    with torch.no_grad():
        raw = models.load(str(path), config=cfg, ema=False).eps(z, t)
    assert float((raw - _t(c["eps"])).abs().max()) > 0.05      # the EMA copy was really used
    assert "ema=False" in " ".join(models.load(str(path), config=cfg, ema=False).info["notes"])


def test_roundtrip_shapes_and_gradients(ref, tmp_path):
    """encode → decode round trip shapes, and the VQ decoder's straight-through gradient."""
    c = ref["vq_uncond"]
    cfg = tiny_config(c)
    path = tmp_path / "model.ckpt"
    torch.save(official_checkpoint(c, cfg), path)
    prior = models.load(str(path), config=cfg)
    x = torch.rand(3, 3, 32, 16) * 2 - 1
    z = prior.encode(x)
    assert z.shape == (3, 3, 16, 8)
    assert prior.decode(z).shape == x.shape
    zz = z.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(prior.decode(zz).square().sum(), zz)
    assert g.shape == zz.shape and g.abs().sum() > 0
    # the quantiser snaps every latent vector onto a codebook entry
    q = prior.autoencoder.quantize(z / prior.scale_factor)
    codes = prior.autoencoder.quantize.embedding.weight
    d = torch.cdist(q.detach().permute(0, 2, 3, 1).reshape(-1, 3).double(), codes.detach().double())
    assert d.min(1).values.max() < 1e-6        # (cdist itself is inexact in float32)


def test_class_labels_default_to_null_class(ref, tmp_path):
    c = ref["vq_class"]
    cfg = tiny_config(c)
    path = tmp_path / "model.ckpt"
    torch.save(official_checkpoint(c, cfg), path)
    prior = models.load(str(path), config=cfg)
    assert int(prior.latent_model.class_labels) == 10                 # n_classes − 1
    assert "null class 10" in " ".join(prior.info["notes"])
    with pytest.raises(ParameterError, match="0..10"):
        prior.set_class_labels(11)


# ------------------------------------------------------------------------------- full configs
def test_full_config_parameter_counts():
    """Meta-device counts of the released configs: 274,056,163 (FFHQ LDM-4 UNet; the paper's
    274 M), 400,920,579 (cin256-v2 UNet; the paper's 400 M for LDM-4 on ImageNet),
    55,322,782 (VQ-f4), 512,512 (1001×512 class embedding) — the same numbers the official
    modules give for the same configs."""
    counts = {}
    for name in ldm.CONFIGS:
        with torch.device("meta"):
            net = ldm.build(ldm.CONFIGS[name])
        cond = net.cond_stage_model.parameters() if hasattr(net, "cond_stage_model") else []
        counts[name] = (sum(p.numel() for p in net.model.parameters()),
                        sum(p.numel() for p in net.first_stage_model.parameters()),
                        sum(p.numel() for p in cond))
    assert counts["ldm-ffhq256-vq4"] == (274_056_163, 55_322_782, 0)
    assert counts["ldm-cin256-v2"] == (400_920_579, 55_322_782, 512_512)
    assert models.num_parameters("ldm", "ldm-ffhq256-vq4") == 274_056_163 + 55_322_782


@pytest.mark.parametrize("name", list(ldm.CONFIGS))
def test_full_configs_are_recognised_from_shapes(name):
    """A state dict of the released shape (meta tensors) is detected as ldm and mapped back
    to its named config, heads included (the shapes alone do not record them)."""
    with torch.device("meta"):
        sd = ldm.build(ldm.CONFIGS[name]).state_dict()
    from dmir.models.loading import detect_format
    assert detect_format(sd) == "ldm"
    cfg, notes = ldm.infer_config(sd)
    assert cfg == ldm.full_config(ldm.CONFIGS[name])
    assert f"config {name}" in notes[0]


def test_schedule_and_config_errors():
    abar = ldm.schedule(ldm.CONFIGS["ldm-ffhq256-vq4"])
    b = 1 - abar[0]
    assert abs(float(b) - 0.0015) < 1e-12 and abar.shape == (1000,)
    with pytest.raises(ParameterError, match="unknown ldm config"):
        ldm.full_config({"nonsense": 1})
    with pytest.raises(ParameterError, match="context_dim"):
        ldm.full_config({"unet": {"use_spatial_transformer": True, "num_heads": 1}})
    with pytest.raises(ParameterError, match="alphas_cumprod"):
        ldm.select_weights({"alphas_cumprod": torch.ones(1000)},
                           ldm.CONFIGS["ldm-ffhq256-vq4"], [])


def test_registry_entries():
    from dmir.models import registry
    e = registry.get("ldm-cin256-v2")
    assert e.format == "ldm" and e.config == "ldm-cin256-v2"
    url = "https://ommer-lab.com/files/latent-diffusion/nitro/cin/model.ckpt"
    assert e.main_file.urls == (url,)
    f = registry.get("ldm-ffhq256-vq4").main_file
    assert "https://ommer-lab.com/files/latent-diffusion/ffhq.zip" in f.manual
    assert "vq-f4.zip" in registry.get("vq-f4").main_file.manual
    with pytest.raises(ParameterError, match="autoencoder"):
        models.load("vq-f4")


def test_lightning_checkpoint_with_callback_metadata_loads(ref, tmp_path, monkeypatch):
    """Lightning 1.x keys its ``callbacks`` entry by the callback *class*; reading such a
    .ckpt must not need (or import) pytorch_lightning, and must still refuse real code."""
    import sys
    import types
    mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:
        pass
    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = mod.__name__, "ModelCheckpoint"
    mod.ModelCheckpoint = ModelCheckpoint
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    c = ref["vq_uncond"]
    cfg = tiny_config(c)
    ckpt = official_checkpoint(c, cfg)
    ckpt["callbacks"] = {ModelCheckpoint: {"best_model_score": torch.tensor(0.1)}}
    torch.save(ckpt, tmp_path / "model.ckpt")
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", mod.__name__):
        monkeypatch.delitem(sys.modules, name)
    prior = models.load(str(tmp_path / "model.ckpt"), config=cfg)
    with torch.no_grad():
        _close(prior.eps(_t(ref["inputs"]["z"]), torch.tensor(ref["inputs"]["t"])), c["eps"])
    assert "pytorch_lightning" not in sys.modules
    ckpt["callbacks"] = {os.system: {}}                        # a global that would run code
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(models.CheckpointError, match="refusing"):
        models.load(str(tmp_path / "evil.ckpt"), config=cfg)


def test_released_layout_with_buffers_and_ema_is_recognised():
    """A full-size ffhq-like state dict (meta tensors, with the schedule buffers and LitEma
    shadows of a real training checkpoint) is recognised as ldm-ffhq256-vq4 with its exact
    schedule, and select_weights leaves exactly the network's keys."""
    cfg = ldm.full_config(ldm.CONFIGS["ldm-ffhq256-vq4"])
    with torch.device("meta"):
        sd = dict(ldm.build(cfg).state_dict())
    for k in [k for k in sd if k.startswith("model.")]:
        sd[ldm._ema_name(k)] = sd[k]
    betas, abar = _linear_schedule(0.0015, 0.0195, 1000)
    sd.update(betas=torch.tensor(betas, dtype=torch.float32),
              alphas_cumprod=torch.tensor(abar, dtype=torch.float32),
              posterior_variance=torch.zeros(1000))
    inferred, notes = ldm.infer_config(sd)
    assert inferred == cfg and "checked against the checkpoint's betas" in " ".join(notes)
    kept = ldm.select_weights(sd, inferred, notes)
    with torch.device("meta"):
        assert set(kept) == set(ldm.build(cfg).state_dict())
    assert "EMA" in notes[-1]
