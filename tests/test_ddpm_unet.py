"""DDPM "simple" UNet (SDEdit celeba_hq.ckpt / DDIM / pytorch_diffusion checkpoints)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dmir.errors import ParameterError, ShapeError
from dmir.models import ddpm_unet as D
from dmir.models.network import NetworkPrior

FIX = Path(__file__).parent / "data" / "models" / "ddpm_celebahq_like"


@pytest.fixture(scope="module")
def fixture():
    cfg = json.loads((FIX / "config.json").read_text())
    assert cfg["format"] == D.FORMAT
    sd = torch.load(FIX / "model.pt", weights_only=True, map_location="cpu")
    sd = {k: v.float() for k, v in sd.items()}
    io = dict(np.load(FIX / "io.npz"))
    return cfg["config"], sd, io


def _rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_fixture_keys_load_unchanged(fixture):
    cfg, sd, _ = fixture
    net = D.build(cfg)
    ref = net.state_dict()
    assert list(ref) == list(sd)            # same keys, same order as the original Model
    assert all(ref[k].shape == sd[k].shape for k in sd)
    assert D.matches(sd.keys())
    assert not D.matches(["input_blocks.0.0.weight", "out.2.weight"])


def test_conformance_forward(fixture):
    cfg, sd, io = fixture
    net = D.build(cfg).eval()
    net.load_state_dict(sd)
    x, t, out = (torch.from_numpy(io[k]) for k in ("x", "t", "out"))
    with torch.no_grad():
        got = net(x, t)
    assert got.shape == out.shape
    assert _rel_err(got, out) <= 1e-4


def test_conformance_through_network_prior(fixture):
    cfg, sd, io = fixture
    net = D.build(cfg).eval()
    net.load_state_dict(sd)
    prior = D.prior(net, cfg)
    assert isinstance(prior, NetworkPrior)
    assert prior.prediction == "epsilon" and not prior.learned_sigma
    assert torch.allclose(prior.alphas_cumprod, D.schedule(cfg))
    x, t, out = (torch.from_numpy(io[k]) for k in ("x", "t", "out"))
    with torch.no_grad():
        eps = prior.eps(x, t.long())
        eps0 = prior.eps(x[:1], int(t[0]))      # scalar t is broadcast
    assert _rel_err(eps, out) <= 1e-4
    assert _rel_err(eps0, out[:1]) <= 1e-4


def test_bad_inputs_rejected(fixture):
    cfg, _, _ = fixture
    net = D.build(cfg)
    with pytest.raises(ParameterError):
        net(torch.zeros(1, 3, 64, 64), torch.zeros(1), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ShapeError):
        net(torch.zeros(1, 3, 60, 64), torch.zeros(1))      # 3 downsamplings: needs /8


@pytest.mark.parametrize("name", sorted(D.CONFIGS))
def test_named_config_param_counts_on_meta(name):
    with torch.device("meta"):
        net = D.build(D.CONFIGS[name])
    assert all(p.is_meta for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == D.PARAM_COUNTS[name]


def test_celebahq_param_count_exact():
    with torch.device("meta"):
        net = D.build(D.CONFIGS["ddpm-celebahq256"])
    assert sum(p.numel() for p in net.parameters()) == 113_673_219


def _meta_state(cfg):
    with torch.device("meta"):
        return D.build(cfg).state_dict()


@pytest.mark.parametrize("name", sorted(D.CONFIGS))
def test_infer_config_round_trip_named(name):
    cfg = D.CONFIGS[name]
    sd = _meta_state(cfg)
    got, notes = D.infer_config(sd, image_size=cfg["image_size"])
    sd2 = _meta_state(got)
    assert list(sd2) == list(sd)
    assert all(sd2[k].shape == sd[k].shape for k in sd)
    for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "in_channels", "out_ch",
              "resamp_with_conv", "type", "image_size"):
        assert got[k] == cfg[k], k


def test_infer_config_round_trip_fixture(fixture):
    cfg, sd, _ = fixture
    got, notes = D.infer_config(sd)          # image_size unknown: defaults to 256
    assert got["image_size"] == 256 and any("256" in n for n in notes)
    assert any("image size is 64" in n for n in notes)   # the 16x16-attention hint
    sd2 = _meta_state(got)
    assert list(sd2) == list(sd) and all(sd2[k].shape == sd[k].shape for k in sd)
    got64, _ = D.infer_config(sd, image_size=64)
    for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "in_channels", "out_ch",
              "resamp_with_conv", "type"):
        assert got64[k] == cfg[k], k


def test_infer_config_variants():
    base = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
            "image_size": 16}
    for extra in ({"resamp_with_conv": False}, {"type": "bayesian",
                                                "num_diffusion_timesteps": 50},
                  {"in_channels": 1, "out_ch": 1}, {"attn_resolutions": [8, 16]}):
        cfg = D.full_config({**base, **extra})
        sd = _meta_state(cfg)
        assert ("logvar" in sd) == (cfg["type"] == "bayesian")
        got, _ = D.infer_config(sd, image_size=16)
        for k, v in extra.items():
            assert (sorted(got[k]) if k == "attn_resolutions" else got[k]) == v, k
        sd2 = _meta_state(got)
        assert list(sd2) == list(sd) and all(sd2[k].shape == sd[k].shape for k in sd)
    with pytest.raises(ParameterError, match="missing"):
        D.infer_config({"conv_in.weight": torch.zeros(32, 3, 3, 3)})


def test_avgpool_and_bayesian_forward():
    cfg = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
           "image_size": 16, "resamp_with_conv": False, "type": "bayesian"}
    net = D.build(cfg).eval()
    assert "down.0.downsample.conv.weight" not in net.state_dict()
    assert net.state_dict()["logvar"].shape == (1000,)
    with torch.no_grad():
        out = net(torch.randn(2, 3, 16, 16), torch.tensor([3.0, 700.0]))
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


def test_timestep_embedding_formula():
    t = torch.tensor([0.0, 1.0, 999.0])
    e = D.timestep_embedding(t, 8)
    w = torch.exp(-np.log(10000) * torch.arange(4) / 3)
    ref = torch.cat([torch.sin(t[:, None] * w), torch.cos(t[:, None] * w)], 1)
    assert torch.allclose(e, ref, atol=1e-5)
    assert D.timestep_embedding(t, 9).shape == (3, 9)


def test_downsample_is_asymmetric():
    ds = D.Downsample(1, True)
    with torch.no_grad():
        ds.conv.weight.zero_()
        ds.conv.bias.zero_()
        ds.conv.weight[0, 0, 0, 0] = 1.0      # picks the top-left pixel of each 3x3 window
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    # padding only right/bottom: window origins are (0, 0), (0, 2), (2, 0), (2, 2)
    assert torch.equal(ds(x)[0, 0], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))
    assert torch.equal(D.Downsample(1, False)(x)[0, 0],
                       torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


def test_full_config_validation():
    c = D.full_config(None)
    assert c == {**D.DEFAULTS, **D.CONFIGS["ddpm-celebahq256"]}
    with pytest.raises(ParameterError, match="allowed: .*ch_mult"):
        D.full_config({"chmult": [1, 2]})
    with pytest.raises(ParameterError):
        D.full_config({"type": "openai"})
    with pytest.raises(ParameterError):
        D.full_config({"ch": 48})                      # GroupNorm(32) needs multiples of 32
    with pytest.raises(ParameterError):
        D.full_config({"ch_mult": []})
    with pytest.raises(ParameterError):
        D.full_config({"beta_schedule": "cosine"})
    # a whole DDIM/SDEdit yaml, parsed
    yml = {"data": {"dataset": "CelebA_HQ", "image_size": 256, "channels": 3},
           "model": {"type": "simple", "in_channels": 3, "out_ch": 3, "ch": 128,
                     "ch_mult": [1, 1, 2, 2, 4, 4], "num_res_blocks": 2,
                     "attn_resolutions": [16], "dropout": 0.0, "var_type": "fixedsmall",
                     "ema_rate": 0.999, "ema": True, "resamp_with_conv": True},
           "diffusion": {"beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                         "num_diffusion_timesteps": 1000},
           "sampling": {"batch_size": 8, "last_only": True}}
    assert D.full_config(yml) == D.full_config(D.CONFIGS["ddpm-celebahq256"])


def test_schedules():
    ab = D.schedule(None)
    assert ab.dtype == torch.float64 and ab.shape == (1000,)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(ab, torch.cumprod(1 - betas, 0), rtol=0, atol=1e-15)
    quad = D.schedule({"beta_schedule": "quad", "num_diffusion_timesteps": 10})
    b = np.linspace(1e-2, 0.02 ** 0.5, 10) ** 2
    assert np.allclose(quad.numpy(), np.cumprod(1 - b))
    assert D.schedule({"beta_schedule": "sigmoid"}).shape == (1000,)
    assert D.schedule({"beta_schedule": "const", "num_diffusion_timesteps": 5})[-1] == \
        pytest.approx(0.98 ** 5)


def _toy_state(prefix=""):
    sd = _meta_state({"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                      "attn_resolutions": [], "image_size": 16})
    return {prefix + k: torch.full(v.shape, 1.0) for k, v in sd.items()}


def test_normalize_module_prefix():
    raw = _toy_state("module.")
    sd, notes = D.normalize_state_dict(raw)
    assert list(sd) == [k[len("module."):] for k in raw]
    assert any("module." in n for n in notes)
    assert D.matches(raw.keys()) and D.matches(sd.keys())
    plain, notes = D.normalize_state_dict(_toy_state())
    assert list(plain) == list(sd) and notes == ["plain state dict"]


def test_normalize_ddim_training_list():
    model = _toy_state("module.")               # DataParallel-wrapped training weights
    ema = {k: torch.full(v.shape, 2.0) for k, v in _toy_state().items()}   # EMA shadow
    opt = {"state": {}, "param_groups": [{"lr": 2e-5, "eps": 1e-8}]}
    sd, notes = D.normalize_state_dict([model, opt, 3, 5000, ema])
    assert all(float(v.flatten()[0]) == 2.0 for v in sd.values())          # EMA chosen
    assert any("EMA" in n and "states[-1]" in n for n in notes)
    sd, notes = D.normalize_state_dict([model, opt, 3, 5000])               # no EMA
    assert all(float(v.flatten()[0]) == 1.0 for v in sd.values())
    assert "conv_in.weight" in sd and any("states[0]" in n for n in notes)
    net = D.build({"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [],
                   "image_size": 16})
    net.load_state_dict(sd)


def test_normalize_dict_entries():
    ema = {k: torch.full(v.shape, 2.0) for k, v in _toy_state().items()}
    sd, notes = D.normalize_state_dict({"model": _toy_state(), "ema": ema, "step": 7})
    assert all(float(v.flatten()[0]) == 2.0 for v in sd.values()) and "'ema'" in notes[0]
    sd, notes = D.normalize_state_dict({"state_dict": _toy_state("module."), "epoch": 1})
    assert "conv_in.weight" in sd
    with pytest.raises(ParameterError, match="no state dict"):
        D.normalize_state_dict({"optimizer": {"lr": 1}})
    with pytest.raises(ParameterError):
        D.normalize_state_dict([1, 2, 3])
