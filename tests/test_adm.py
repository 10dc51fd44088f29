"""The guided-diffusion (ADM) UNet: conformance with the reference code, configs, inference.

The fixtures in tests/data/models/adm_*_like are random-weight networks in the original
guided-diffusion format (fp16 state dicts), with the reference ``UNetModel`` forward output.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from dmir.errors import ParameterError
from dmir.models import adm, make_schedule
from dmir.models.network import NetworkPrior

DATA = Path(__file__).parent / "data" / "models"
FIXTURES = ["adm_imagenet_like", "adm_ffhq_like"]
# Settings the weights cannot tell; everything else must be inferred exactly.
UNREADABLE = {"num_heads", "num_head_channels", "num_heads_upsample",
              "use_new_attention_order", "dropout", "use_fp16", "diffusion_steps",
              "noise_schedule"}

# A small network with every structural feature, for tests that need random weights.
SMALL = dict(image_size=32, num_channels=32, channel_mult="1,2", num_res_blocks=1,
             attention_resolutions="16", num_head_channels=16, learn_sigma=True,
             resblock_updown=True, use_scale_shift_norm=True)


def _fixture(name):
    cfg = json.loads((DATA / name / "config.json").read_text())["config"]
    sd = torch.load(DATA / name / "model.pt", map_location="cpu", weights_only=True)
    io = np.load(DATA / name / "io.npz")
    return (cfg, {k: v.float() for k, v in sd.items()},
            *(torch.from_numpy(io[k]) for k in ("x", "t", "out")))


def _loaded(cfg, sd):
    net = adm.build(cfg)
    net.load_state_dict(sd, strict=True)
    return net.eval()


def _rel_err(a, ref):
    return float((a.float() - ref).abs().max() / ref.abs().max())


def _random_net(seed=0, **overrides):
    torch.manual_seed(seed)
    return adm.build({**SMALL, **overrides}).eval()


def _shapes(net_or_sd):
    sd = net_or_sd.state_dict() if isinstance(net_or_sd, torch.nn.Module) else net_or_sd
    return {k: tuple(v.shape) for k, v in sd.items()}


# ---------------------------------------------------------------------------- conformance
@pytest.mark.parametrize("name", FIXTURES)
def test_matches_reference_forward(name):
    """Measured: max|diff| / max|out| = 1.1e-6 (imagenet-like), 1.6e-6 (ffhq-like)."""
    cfg, sd, x, t, ref = _fixture(name)
    assert adm.matches(sd.keys())
    net = _loaded(cfg, sd)
    with torch.no_grad():
        out = net(x, t)
    assert out.shape == ref.shape == (x.shape[0], 6, *x.shape[2:])
    assert _rel_err(out, ref) <= 1e-4

    # the same through the model protocol: ε is the first 3 of the 6 learned-sigma channels
    model = adm.prior(net, cfg)
    assert isinstance(model, NetworkPrior)
    assert model.learned_sigma and model.num_classes is None and model.num_timesteps == 1000
    with torch.no_grad():
        eps = model.eps(x, t.long())
    assert eps.shape == x.shape
    assert _rel_err(eps, ref[:, :3]) <= 1e-4


def test_timestep_embedding_is_cos_then_sin():
    e = adm.timestep_embedding(torch.tensor([0.0, 10.0]), 8)
    assert torch.equal(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.tensor([10000 ** (-k / 4) for k in range(4)])
    assert torch.allclose(e[1], torch.cat([torch.cos(10 * freqs), torch.sin(10 * freqs)]))
    assert adm.timestep_embedding(torch.tensor([3.0]), 7).shape == (1, 7)


@pytest.mark.parametrize("new_order", [False, True])
def test_attention_head_orders(new_order):
    """Both channel layouts of ``qkv`` against an explicit einsum written from the
    reference's description (legacy: [head][q|k|v][d]; new: [q|k|v][head][d])."""
    torch.manual_seed(0)
    C, heads, d = 64, 4, 16
    block = adm.AttentionBlock(C, heads, new_order)
    x = torch.randn(2, C, 4, 5)
    flat = x.reshape(2, C, 20)
    qkv = block.qkv(block.norm(flat))
    if new_order:
        q, k, v = (z.reshape(2 * heads, d, 20) for z in qkv.chunk(3, dim=1))
    else:
        q, k, v = qkv.reshape(2 * heads, 3 * d, 20).split(d, dim=1)
    s = d ** -0.25
    w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(2, C, 20)
    expected = (flat + block.proj_out(a)).reshape(x.shape)
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-5)


def test_attention_order_changes_output_and_is_deterministic():
    cfg, sd, x, t, _ = _fixture("adm_imagenet_like")
    x, t = x[:2, :, :32, :32], t[:2]                    # any size divisible by 8 will do
    outs = {}
    for order in (False, True):
        net = _loaded({**cfg, "use_new_attention_order": order}, sd)
        with torch.no_grad():
            a, b = net(x, t), net(x, t)
        assert torch.equal(a, b)
        outs[order] = a
    # measured: 4.7e-2 relative — the split order matters for real checkpoints
    assert _rel_err(outs[True], outs[False]) > 1e-2


# ---------------------------------------------------------------------------- precision
def test_fp16_torso_close_to_fp32():
    """use_fp16 as guided-diffusion runs it: convolutions of the torso in float16; time MLP,
    embedding projections, GroupNorm (computed in float32) and the output head in float32.

    Measured with the fixture weights: 1.1e-3 (imagenet-like, full fixture input) and 2.2e-3
    (ffhq-like) relative to max|out|; here, on a 32×32 crop (CPU float16 convolutions are
    slow), 8.8e-4. float16 rounds to 2^-11 ≈ 4.9e-4 per operation and the error grows over
    the ~40 layers of the torso, so the bound is 1e-2; a conversion error (a float16 head,
    a mis-cast embedding) is far larger or fails outright."""
    cfg, sd, x, t, _ = _fixture("adm_imagenet_like")
    x, t = x[:1, :, :32, :32], t[:1]
    net = _loaded({**cfg, "use_fp16": True}, sd)
    assert net.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16
    assert net.middle_block[1].qkv.weight.dtype == torch.float16
    assert net.input_blocks[1][0].in_layers[0].weight.dtype == torch.float32   # GroupNorm
    assert net.input_blocks[1][0].emb_layers[1].weight.dtype == torch.float32  # Linear
    assert net.time_embed[0].weight.dtype == net.out[2].weight.dtype == torch.float32
    with torch.no_grad():
        out = net(x, t)
        ref = _loaded(cfg, sd)(x, t)
        # through NetworkPrior: the first parameter is float32, so inputs stay float32
        eps = adm.prior(net, cfg).eps(x, t.long())
    assert out.dtype == eps.dtype == torch.float32
    err = _rel_err(out, ref)
    assert 0 < err <= 1e-2
    assert torch.equal(eps, out[:, :3])


def test_whole_network_in_half_precision_runs():
    """``net.half()`` (NetworkPrior's compute_dtype path) keeps dtypes consistent."""
    net = _random_net().half()
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        out = net(x.half(), torch.tensor([5.0]))
        ref = _random_net()(x, torch.tensor([5.0]))
    assert out.dtype == torch.float16 and _rel_err(out, ref) < 1e-2


# ---------------------------------------------------------------------------- class labels
def test_class_conditional():
    net = _random_net(class_cond=True, num_classes=10)
    assert net.label_emb.weight.shape == (10, 128)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([100.0, 100.0])
    with torch.no_grad():
        a = net(x, t, torch.tensor([0, 0]))
        b = net(x, t, torch.tensor([3, 0]))
    assert not torch.allclose(a[0], b[0]) and torch.equal(a[1], b[1])

    model = adm.prior(net, {**SMALL, "class_cond": True, "num_classes": 10})
    assert model.num_classes == 10
    with pytest.raises(ParameterError, match="class_labels"):
        model.eps(x, 100)
    model.set_class_labels(torch.tensor([3, 0]))
    with torch.no_grad():
        assert torch.allclose(model.eps(x, 100), b[:, :3])
    with pytest.raises(ParameterError):
        net(x, t)                                          # labels required
    with pytest.raises(ParameterError):
        _random_net()(x, t, torch.tensor([0, 0]))          # unconditional: no labels


# ---------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name,count", [
    ("adm-imagenet256-uncond", 552_814_086),
    ("adm-imagenet256-cond", 553_838_086),       # + 1000 x 1024 label embedding
    ("adm-lsun-bedroom256", 552_814_086),
    ("adm-ffhq256", 93_563_910),
])
def test_named_config_parameter_counts(name, count):
    with torch.device("meta"):
        net = adm.build(adm.CONFIGS[name])
    assert sum(p.numel() for p in net.parameters()) == count
    assert set(adm.CONFIGS[name]) == set(adm.DEFAULTS)


def test_full_config_forms_and_errors():
    a = adm.full_config({"image_size": 256, "channel_mult": "", "attention_resolutions": 16})
    assert a["channel_mult"] == (1, 1, 2, 2, 4, 4) and a["attention_resolutions"] == (16,)
    b = adm.full_config({"image_size": 256, "channel_mult": [1, 1, 2, 2, 4, 4],
                         "attention_resolutions": "16"})
    assert a == b == adm.full_config(a)
    assert adm.full_config({"image_size": 512})["channel_mult"] == (0.5, 1, 1, 2, 2, 4, 4)
    assert adm.full_config({"attention_resolutions": "32, 16,8"})["attention_resolutions"] \
        == (32, 16, 8)
    # the DPS model_config.yaml, as its YAML loader reads it, is accepted as is
    dps = {k: v for k, v in adm.CONFIGS["adm-ffhq256"].items()
           if k not in ("diffusion_steps", "noise_schedule", "in_channels", "num_classes")}
    dps.update(attention_resolutions=16, use_checkpoint=False, model_path="models/ffhq_10m.pt")
    assert adm.full_config(dps) == adm.full_config(adm.CONFIGS["adm-ffhq256"])

    with pytest.raises(ParameterError, match="'num_chanels'.*allowed:.*num_channels"):
        adm.full_config({"num_chanels": 64})
    for bad in ({"image_size": 96}, {"channel_mult": "1,x"}, {"num_channels": 48},
                {"num_head_channels": 48, "image_size": 256}, {"learn_sigma": "yes"},
                {"noise_schedule": "sigmoid"}, {"predict_xstart": True}, {"dropout": 1.5},
                {"attention_resolutions": "16.5"}):
        with pytest.raises(ParameterError):
            adm.full_config(bad)


def test_schedule():
    assert torch.equal(adm.schedule(adm.CONFIGS["adm-imagenet256-uncond"]),
                       make_schedule("linear", 1000))
    ac = adm.schedule({"noise_schedule": "cosine", "diffusion_steps": 4000})
    assert ac.dtype == torch.float64 and torch.equal(ac, make_schedule("cosine", 4000))


# ---------------------------------------------------------------------------- inference
def _check_inferred(sd, cfg, image_size=None):
    inferred, notes = adm.infer_config(sd, image_size=image_size)
    with torch.device("meta"):
        assert _shapes(adm.build(inferred)) == _shapes(sd)
    want = adm.full_config(cfg)
    assert {k: v for k, v in inferred.items() if k not in UNREADABLE} == \
        {k: v for k, v in want.items() if k not in UNREADABLE}
    assert len(notes) >= 8 and all(isinstance(n, str) and n for n in notes)
    return inferred, notes


@pytest.mark.parametrize("name", FIXTURES)
def test_infer_config_on_fixtures(name):
    cfg, sd, *_ = _fixture(name)
    inferred, notes = _check_inferred(sd, cfg, image_size=64)
    # the fixtures use 16-channel heads, which the weights cannot show: 64 is assumed
    assert inferred["num_head_channels"] == 64
    assert any("num_head_channels=64 (assumed" in n for n in notes)
    assert not any("image_size=256 (assumed" in n for n in notes)


@pytest.mark.parametrize("name", sorted(adm.CONFIGS))
def test_infer_config_on_named_configs(name):
    cfg = adm.CONFIGS[name]
    with torch.device("meta"):
        sd = adm.build(cfg).state_dict()
    inferred, notes = _check_inferred(sd, cfg)
    assert inferred["num_head_channels"] == cfg["num_head_channels"] == 64
    assert any("image_size=256 (assumed" in n for n in notes)


@pytest.mark.parametrize("variant", [
    dict(resblock_updown=False),                         # Downsample `op` / Upsample `conv`
    dict(use_scale_shift_norm=False, learn_sigma=False),
    dict(class_cond=True, num_classes=7, attention_resolutions=""),
    dict(channel_mult="1", num_res_blocks=2, resblock_updown=False,
         attention_resolutions="32"),                    # one level: no resampling
    dict(num_res_blocks=0, attention_resolutions="32,16"),
    dict(image_size=512, channel_mult="", num_channels=64, attention_resolutions="32,16,8"),
    dict(in_channels=1),
])
def test_infer_config_variants(variant):
    cfg = {**SMALL, **variant}
    with torch.device("meta"):
        sd = adm.build(cfg).state_dict()
    _check_inferred(sd, cfg, image_size=cfg["image_size"])


def test_infer_config_rejects_other_formats():
    assert not adm.matches(["temb.dense.0.weight", "conv_in.weight"])
    with pytest.raises(ParameterError):
        adm.infer_config({"temb.dense.0.weight": torch.zeros(4, 4)})
    with torch.device("meta"):
        sd = adm.build(SMALL).state_dict()
    sd["out.2.weight"] = torch.empty(5, 32, 3, 3, device="meta")
    with pytest.raises(ParameterError):
        adm.infer_config(sd)
    sd = dict(_random_net().state_dict())
    del sd["output_blocks.1.0.skip_connection.weight"]
    with pytest.raises(ParameterError, match="does not reproduce"):
        adm.infer_config(sd, image_size=32)


def test_meta_build_allocates_nothing():
    with torch.device("meta"):
        net = adm.build(adm.CONFIGS["adm-imagenet256-cond"])
    assert all(p.is_meta for p in net.parameters())
    assert net.input_blocks[1][0].in_layers[2].weight.dtype == torch.float16   # use_fp16
    assert math.prod(net.label_emb.weight.shape) == 1000 * 1024
