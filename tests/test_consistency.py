"""Consistency models (OpenAI consistency_models format): network layout, EDM/CM preconditioning,
the VP mapping, loading, parameter counts, and DCDP with one-step consistency purification.

No released weights are available offline: the checks use small random-weight networks in the
official state-dict layout. That layout is derived from ``cm/unet.py``: guided-diffusion's key
tree, with the attention ``qkv``/``proj_out`` built by ``conv_nd(dims=2, …)`` (4-D weights) and
the flash attention split ``"b (three h d) s -> b s three h d"``.
"""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from dmir import models, operators, solvers
from dmir.errors import ParameterError
from dmir.models import adm, consistency as cm, loading, registry
from dmir.checkpoints.reading import CheckpointError

# widths 64, 128: attention at 8×8 and in the middle with 2 heads of 64 channels (the official
# head width), so the head order matters and the config can be inferred from the weights
TINY = dict(image_size=16, num_channels=64, channel_mult="1,2", num_res_blocks=1,
            attention_resolutions="8", num_head_channels=64, resblock_updown=True,
            use_scale_shift_norm=False)


def _net(seed=0, **over):
    torch.manual_seed(seed)
    return cm.build({**TINY, **over}).eval()


def _x(B=2, seed=1, size=16):
    return torch.randn(B, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- the network
def test_key_layout_is_adm_with_conv2d_attention():
    """Same keys as guided-diffusion's UNet for the same flags; only the attention qkv/proj_out
    weights gain a trailing 1×1 (Conv2d)."""
    with torch.device("meta"):
        c = {k: tuple(v.shape) for k, v in cm.build(TINY).state_dict().items()}
        a = {k: tuple(v.shape) for k, v in adm.build(TINY).state_dict().items()}
    assert set(c) == set(a)
    conv2d = {k for k in c if k.endswith((".qkv.weight", ".proj_out.weight"))}
    assert len(conv2d) == 8          # 4 attention blocks: input 3, middle, output 0 and 1
    assert "middle_block.1.qkv.weight" in conv2d and "input_blocks.3.1.qkv.weight" in conv2d
    for k in c:
        assert c[k] == (a[k] + (1,) if k in conv2d else a[k]), k
    assert c["middle_block.1.qkv.weight"] == (384, 128, 1, 1)
    # no use_scale_shift_norm (the LSUN flags): the embedding projection is out_channels wide
    assert c["middle_block.0.emb_layers.1.weight"] == (128, 256)
    assert c["out.2.weight"] == (3, 64, 3, 3)                     # learn_sigma False


def test_same_function_as_adm_with_the_new_head_order():
    """The CM network equals the (reference-verified) ADM network with the same weights
    squeezed to Conv1d and use_new_attention_order=True — and differs with the legacy order."""
    net = _net()
    sd = {k: (v[..., 0] if v.dim() == 4 and k.endswith(("qkv.weight", "proj_out.weight"))
              else v) for k, v in net.state_dict().items()}
    x, t = _x(), torch.tensor([-300.0, 700.0])
    with torch.no_grad():
        ref = net(x, t)
        new = adm.build({**TINY, "use_new_attention_order": True}).eval()
        new.load_state_dict(sd, strict=True)
        old = adm.build(TINY).eval()
        old.load_state_dict(sd, strict=True)
        d_new = float((new(x, t) - ref).abs().max())
        d_old = float((old(x, t) - ref).abs().max())
    print(f"|cm - adm(new order)| = {d_new:.2e}, |cm - adm(legacy order)| = {d_old:.2e}")
    assert d_new < 1e-5 * float(ref.abs().max())
    assert d_old > 1e-3 * float(ref.abs().max())


def test_attention_block_is_the_flash_split():
    """One attention block against the official formula written out: qkv channels read as
    (three, heads, d), softmax(q·k/√d) per head, heads concatenated, 1×1 Conv2d out, residual."""
    block = _net().middle_block[1]
    torch.manual_seed(3)
    with torch.no_grad():
        for p in block.parameters():        # make the residual branch non-trivial
            p.normal_(0, 0.3)
        x = torch.randn(2, 128, 4, 4)
        b, C, H, W = x.shape
        h, d = 2, 64
        qkv = F.conv2d(block.norm(x), block.qkv.weight, block.qkv.bias).reshape(b, 3 * C, H * W)
        qkv = qkv.reshape(b, 3, h, d, H * W).permute(0, 4, 1, 2, 3)      # b s three h d
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]                # b s h d
        w = torch.softmax(torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(d), dim=-1)
        o = torch.einsum("bhst,bthd->bshd", w, v).reshape(b, H * W, C)    # b s (h d)
        o = o.permute(0, 2, 1).reshape(b, C, H, W)
        ref = x + F.conv2d(o, block.proj_out.weight, block.proj_out.bias)
        got = block(x)
    assert float((got - ref).abs().max()) < 1e-4 * float(ref.abs().max())


# ---------------------------------------------------------------------------- the denoiser
class _Recorder(torch.nn.Module):
    """Stands in for the UNet: records (x, t) and returns a fixed field F."""

    def __init__(self, F):
        super().__init__()
        self.F, self.calls = F, []
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, y=None):
        self.calls.append((x.clone(), t.clone()))
        return self.F.expand_as(x)


@pytest.mark.parametrize("distillation", [True, False])
def test_preconditioning_matches_karras_denoiser(distillation):
    """D = c_skip x + c_out F(c_in x, 250 ln σ) with the KarrasDenoiser scalings, σ_d = 0.5."""
    Fv = torch.full((1, 3, 4, 4), 0.3)
    rec = _Recorder(Fv)
    p = cm.ConsistencyPrior(rec, models.make_schedule("linear"), distillation=distillation)
    x = _x(2, size=4)
    out = p.denoise(x, torch.tensor([1.0, 80.0]))
    (xin, tin), = rec.calls
    for i, s in enumerate((1.0, 80.0)):
        s_eff = s - 0.002 if distillation else s
        c_skip = 0.25 / (s_eff ** 2 + 0.25)
        c_out = s_eff * 0.5 / math.sqrt(s * s + 0.25)
        c_in = 1 / math.sqrt(s * s + 0.25)
        assert float(tin[i]) == pytest.approx(250 * math.log(s), abs=1e-3)
        assert torch.allclose(xin[i], c_in * x[i], rtol=1e-6, atol=1e-7)
        assert torch.allclose(out[i], c_skip * x[i] + c_out * 0.3, rtol=1e-6, atol=1e-7)
    assert float(tin[1]) == pytest.approx(1095.5, abs=0.1)      # σ_max = 80 → t = 1095.5


def test_boundary_condition_is_exact():
    """A consistency model is the identity at σ_min: D(x, 0.002) = x bit for bit."""
    p = cm.prior(_net(), TINY)
    x = _x(3)
    with torch.no_grad():
        assert torch.equal(p.denoise(x, 0.002), x)
        mixed = p.denoise(x, torch.tensor([0.002, 0.5, 5.0]))
    assert torch.equal(mixed[0], x[0]) and not torch.allclose(mixed[1], x[1], atol=1e-3)
    with pytest.raises(ParameterError, match="positive"):
        p.denoise(x, 0.0)


def test_vp_mapping_of_eps_and_x0():
    """x̂0(x_t, t) = D(x_t/√ᾱ, σ_t) with σ_t = √((1-ᾱ)/ᾱ); ε consistent with it; one call each."""
    net = _net()
    p = cm.prior(net, TINY)
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    x_t, t = _x(2), 400
    a = float(p.alphas_cumprod[t])
    sig = math.sqrt((1 - a) / a)
    assert float(p.sigma_of(t)) == pytest.approx(sig, rel=1e-12)
    with torch.no_grad():
        x0 = p.x0(x_t, t)
        ref = p.denoise(x_t / math.sqrt(a), sig)
        eps = p.eps(x_t, t)
    assert len(calls) == 3
    assert torch.allclose(x0, ref, atol=1e-5)
    assert torch.allclose((x_t - math.sqrt(1 - a) * eps) / math.sqrt(a), x0, atol=1e-4)
    # per-sample timesteps
    with torch.no_grad():
        both = p.x0(x_t, torch.tensor([10, 900]))
        one = p.x0(x_t[1:], 900)
    assert torch.allclose(both[1:], one, atol=1e-5)


# ---------------------------------------------------------------------------- loading
def test_load_detects_format_and_matches_direct_forward(tmp_path):
    net = _net(seed=5)
    path = tmp_path / "tiny_cm.pt"
    torch.save(net.state_dict(), path)
    sd = torch.load(path, weights_only=True)
    assert loading.detect_format(sd) == "cm"
    assert loading.detect_format(set(sd)) == "adm"        # keys alone cannot tell
    with pytest.warns(models.InferredConfigWarning, match="num_channels=64"):
        p = models.load(path, image_size=16)
    assert isinstance(p, cm.ConsistencyPrior) and p.info["format"] == "cm"
    assert p.distillation and p.size_multiple == 2
    cfg = p.info["config"]
    assert cfg["num_head_channels"] == 64 and cfg["use_scale_shift_norm"] is False
    assert cfg["resblock_updown"] is True and cfg["channel_mult"] == (1, 2)
    direct = cm.prior(net, TINY)
    x = _x(2)
    with torch.no_grad():
        for s in (0.01, 1.0, 40.0):
            assert torch.allclose(p.denoise(x, s), direct.denoise(x, s), atol=1e-6), s
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", models.InferredConfigWarning)
        edm = models.load(path, format="edm", config={"distillation": False})
        assert not edm.distillation
        with pytest.raises(CheckpointError, match="look like cm"):
            models.load(path, format="adm")


def test_infer_config_on_named_configs():
    for name in ("cm-lsun256", "cm-imagenet64"):     # the edm-* networks are the same
        cfg = cm.CONFIGS[name]
        with torch.device("meta"):
            sd = cm.build(cfg).state_dict()
        got, notes = cm.infer_config(sd)
        for k in ("image_size", "num_channels", "num_res_blocks", "channel_mult",
                  "attention_resolutions", "num_head_channels", "class_cond",
                  "use_scale_shift_norm", "resblock_updown", "learn_sigma"):
            assert got[k] == cfg[k], (name, k)
        assert any("flash" in n for n in notes)


# Parameter counts of the released configurations (scripts/launch.sh flags), built on meta.
COUNTS = {"cm-lsun256": 526_304_771, "cm-imagenet64": 295_899_267}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts_of_released_configs(name):
    assert loading.num_parameters("cm", name) == COUNTS[name]
    assert loading.num_parameters("cm", "edm-" + name[3:]) == COUNTS[name]


def test_parameter_counts_derived_from_guided_diffusion():
    """Independent derivation. LSUN: guided-diffusion's LSUN-bedroom ADM (552,814,086, see
    test_adm) has use_scale_shift_norm (every ResBlock's emb projection is 2·out wide) and
    learned σ (6 output channels); the CM has neither. ImageNet-64: guided-diffusion's
    class-conditional 64×64 ADM (use_scale_shift_norm, learned σ) minus 3 output channels."""
    with torch.device("meta"):
        gd = adm.build(adm.CONFIGS["adm-lsun-bedroom256"])
    assert sum(p.numel() for p in gd.parameters()) == 552_814_086
    emb_half = sum(m.emb_layers[1].weight.numel() // 2 + m.emb_layers[1].bias.numel() // 2
                   for m in gd.modules() if isinstance(m, adm.ResBlock))
    out_half = 3 * 256 * 9 + 3
    assert COUNTS["cm-lsun256"] == 552_814_086 - emb_half - out_half
    g64 = dict(image_size=64, num_channels=192, num_res_blocks=3, num_head_channels=64,
               attention_resolutions="32,16,8", resblock_updown=True, class_cond=True,
               use_scale_shift_norm=True, learn_sigma=True)
    with torch.device("meta"):
        n64 = sum(p.numel() for p in adm.build(g64).parameters())
    assert COUNTS["cm-imagenet64"] == n64 - (3 * 192 * 9 + 3)
    assert round(COUNTS["cm-imagenet64"] / 1e6) == 296      # EDM's "ADM, 296M" at 64×64


def test_registry_entries_and_file_names():
    e = registry.get("cd-lsun-bedroom256-lpips")
    assert e.format == "cm" and e.config == "cm-lsun256"
    assert e.main_file.urls == ("https://openaipublic.blob.core.windows.net/consistency/"
                                "cd_bedroom256_lpips.pt",)
    for name, cfg in (("ct-lsun-bedroom256", "cm-lsun256"), ("cd-imagenet64-l2", "cm-imagenet64"),
                      ("edm-lsun-bedroom256", "edm-lsun256")):
        assert registry.get(name).config == cfg and cfg in cm.CONFIGS
    assert loading._entry_for_file("/x/ct_bedroom256.pt").name == "ct-lsun-bedroom256"
    assert cm.CONFIGS["cm-imagenet64"]["class_cond"] and not cm.CONFIGS["edm-lsun256"][
        "distillation"]


def test_config_errors_and_flags():
    assert cm.full_config({"training_mode": "edm"})["distillation"] is False
    assert cm.full_config({"training_mode": "consistency_training"})["distillation"] is True
    assert cm.full_config({"weight_schedule": "uniform"})["attention_resolutions"] == (32, 16, 8)
    for bad, word in (({"learn_sigma": True}, "learn_sigma"), ({"sigma_min": 100.0}, "sigma_min"),
                      ({"sigma_data": -1}, "sigma_data"), ({"foo": 1}, "unknown cm config"),
                      ({"distillation": "yes"}, "distillation")):
        with pytest.raises(ParameterError, match=word):
            cm.full_config(bad)


def test_class_conditional_needs_labels():
    net = _net(class_cond=True, num_classes=10)
    p = cm.prior(net, {**TINY, "class_cond": True, "num_classes": 10})
    with pytest.raises(ParameterError, match="class_labels"):
        p.denoise(_x(1), 1.0)
    p.set_class_labels(3)
    with torch.no_grad():
        a = p.denoise(_x(1), 1.0)
        b = p.set_class_labels(4).denoise(_x(1), 1.0)
    assert not torch.allclose(a, b)


# ---------------------------------------------------------------------------- DCDP
def test_dcdp_with_consistency_purification_costs_one_nfe_per_iteration():
    net = _net()
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    p = cm.prior(net, TINY)
    op = operators.build("sr_averagepooling", (3, 16, 16), scale=2)
    y = op.A(_x(2) * 0.3)
    s = solvers.build("dcdp", p, op, K=5, tau=10, lr=20.0, T0=300)
    assert s.purifier == "consistency"                   # default for a consistency model
    out = s.sample(y, generator=torch.Generator().manual_seed(0))
    assert s.nfe == s.total_nfe == len(calls) == 5
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()
    assert float(out.abs().max()) <= 1.0
    d = solvers.build("dcdp", p, op, K=3, tau=2, lr=20.0, T0=40, purifier="ddim")
    d.sample(y, generator=torch.Generator().manual_seed(0))
    assert d.nfe == sum(min(20, max(t, 2)) for t in d.levels)   # DDIM through eps still works


def test_cli_restore_dcdp_with_a_consistency_checkpoint(tmp_path, capsys):
    """`dmir restore --method dcdp --model tiny_cm.pt`: the consistency purifier is the default
    for a cm checkpoint, K network evaluations; --purifier tweedie also runs on it."""
    from dmir import cli
    from dmir import io as dio
    path = tmp_path / "tiny_cm.pt"
    torch.save(_net(seed=2).state_dict(), path)
    src = tmp_path / "clean.png"
    dio.write_image(src, (_x(1, seed=4, size=32) * 0.3).clamp(-1, 1))
    for extra, tag in (([], "consistency"), (["--purifier", "tweedie"], "tweedie")):
        out = tmp_path / f"out_{tag}.png"
        rc = cli.main(["restore", str(src), "-o", str(out), "--task", "sr_averagepooling",
                       "--scale", "2", "--degrade", "--method", "dcdp", "--steps", "3",
                       "--model", str(path)] + extra)
        captured = capsys.readouterr()
        assert rc == 0, captured.err
        assert out.is_file() and dio.read_image(out).shape == (1, 3, 32, 32)
        assert "(cm)" in captured.err + captured.out
