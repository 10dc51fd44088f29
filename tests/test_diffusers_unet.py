"""diffusers UNet2DModel folders: conformance, schedules, prediction types."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dmir.errors import DmirError, ParameterError
from dmir.models import diffusers_unet as U
from dmir.models.network import NetworkPrior

FIX = Path(__file__).parent / "data" / "models" / "diffusers_ddpm_like"


def _rel_err(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def fixture():
    pytest.importorskip("diffusers")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    cfg = json.loads((FIX / "config.json").read_text())
    sd = safetensors_torch.load_file(str(FIX / "diffusion_pytorch_model.safetensors"))
    sd = {k: v.float() for k, v in sd.items()}
    io = dict(np.load(FIX / "io.npz"))
    return cfg, sd, io


def test_conformance_forward(fixture):
    cfg, sd, io = fixture
    net = U.build(cfg).eval()
    assert set(net.state_dict()) == set(sd)
    net.load_state_dict(sd)
    assert U.matches(sd.keys())
    x, t, out = (torch.from_numpy(io[k]) for k in ("x", "t", "out"))
    assert t.dtype == torch.int64
    with torch.no_grad():
        got = net(x, t.float())              # the NetworkPrior protocol feeds float steps
        got_int = net(x, t)
    assert _rel_err(got, out) <= 1e-4 and _rel_err(got_int, out) <= 1e-4


def test_conformance_through_network_prior(fixture):
    cfg, sd, io = fixture
    net = U.build(cfg).eval()
    net.load_state_dict(sd)
    prior = U.prior(net, cfg, None)
    assert isinstance(prior, NetworkPrior) and prior.prediction == "epsilon"
    assert prior.image_size == 64 and prior.num_classes is None and not prior.learned_sigma
    assert any("no scheduler config" in n for n in prior.info["notes"])
    ref = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    assert torch.allclose(prior.alphas_cumprod, ref, rtol=0, atol=1e-15)
    x, t, out = (torch.from_numpy(io[k]) for k in ("x", "t", "out"))
    with torch.no_grad():
        eps = prior.eps(x, t)
    assert _rel_err(eps, out) <= 1e-4


def test_deprecated_attention_keys(fixture):
    """2022 conversions (google/ddpm-*) name attention weights query/key/value/proj_attn."""
    cfg, sd, io = fixture
    old = {}
    for k, v in sd.items():
        for new, dep in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"),
                         ("to_out.0", "proj_attn")):
            if ".attentions." in k and f".{new}." in k:
                k = k.replace(f".{new}.", f".{dep}.")
        old[k] = v
    assert any(".proj_attn." in k for k in old)
    fixed, notes = U.normalize_state_dict(old)
    assert fixed.keys() == sd.keys() and notes and "renamed" in notes[0]
    same, notes = U.normalize_state_dict(sd)
    assert same.keys() == sd.keys() and notes == []
    net = U.build(cfg).eval()
    net.load_state_dict(fixed)
    with torch.no_grad():
        got = net(torch.from_numpy(io["x"]), torch.from_numpy(io["t"]))
    assert _rel_err(got, torch.from_numpy(io["out"])) <= 1e-4


def test_build_on_meta_device(fixture):
    cfg, sd, _ = fixture
    with torch.device("meta"):
        net = U.build(cfg)
    assert all(p.is_meta for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == sum(v.numel() for v in sd.values())


def test_class_conditional_and_learned_sigma():
    pytest.importorskip("diffusers")
    cfg = {"_class_name": "UNet2DModel", "sample_size": 16, "in_channels": 3,
           "out_channels": 6, "block_out_channels": [32, 32], "layers_per_block": 1,
           "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
           "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "norm_num_groups": 8,
           "num_class_embeds": 10}
    net = U.build(cfg).eval()
    prior = U.prior(net, cfg, {"_class_name": "DDPMScheduler", "variance_type": "learned_range"},
                    class_labels=3)
    assert prior.learned_sigma and prior.num_classes == 10
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        raw = prior.forward_raw(x, 10)
        eps = prior.eps(x, 10)
        ref = net(x, torch.full((2,), 10.0), torch.tensor([3, 3]))
        other = net(x, torch.full((2,), 10.0), torch.tensor([4, 4]))
    assert raw.shape == (2, 6, 16, 16) and eps.shape == (2, 3, 16, 16)
    assert torch.allclose(raw, ref) and not torch.allclose(ref, other)
    with pytest.raises(ParameterError):
        U.prior(net, cfg, None)(x, 10)        # labels missing


def test_learned_time_embedding_takes_float_steps():
    pytest.importorskip("diffusers")
    cfg = {"sample_size": 8, "block_out_channels": [32, 32], "layers_per_block": 1,
           "down_block_types": ["DownBlock2D", "DownBlock2D"],
           "up_block_types": ["UpBlock2D", "UpBlock2D"], "norm_num_groups": 8,
           "time_embedding_type": "learned", "num_train_timesteps": 100}
    prior = U.prior(U.build(cfg).eval(), cfg, None)
    assert prior.num_timesteps == 100            # the UNet config's T without a scheduler
    with torch.no_grad():
        assert prior.eps(torch.randn(1, 3, 8, 8), 99).shape == (1, 3, 8, 8)


def test_bad_configs():
    pytest.importorskip("diffusers")
    with pytest.raises(ParameterError, match="UNet2DModel"):
        U.build({"_class_name": "UNet2DConditionModel"})
    with pytest.raises(ParameterError):
        U.build([1, 2])
    with pytest.raises(ParameterError, match="prediction_type"):
        U.schedule({"prediction_type": "flow"})
    with pytest.raises(ParameterError, match="beta_schedule"):
        U.schedule({"beta_schedule": "exp"})
    with pytest.raises(ParameterError):
        U.schedule({"_class_name": "ScoreSdeVeScheduler"})
    with pytest.raises(ParameterError):
        U.schedule({"rescale_betas_zero_snr": True})
    with pytest.raises(ParameterError, match="Fourier"):
        U.prior(nn.Identity(), {"time_embedding_type": "fourier"}, None)


def test_missing_diffusers_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)   # makes `import diffusers` fail
    U._unet_class.cache_clear()
    try:
        with pytest.raises(DmirError, match=r"pip install 'dmir\[diffusers\]'"):
            U.build({"sample_size": 8})
    finally:
        U._unet_class.cache_clear()


@pytest.mark.parametrize("kind,b0,b1", [("linear", 1e-4, 0.02),
                                        ("scaled_linear", 0.00085, 0.012),
                                        ("squaredcos_cap_v2", 1e-4, 0.02),
                                        ("sigmoid", 1e-4, 0.02)])
def test_schedules_match_diffusers(kind, b0, b1):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=b0, beta_end=b1,
                                    beta_schedule=kind, prediction_type="v_prediction")
    conf = {"_class_name": "DDPMScheduler", **dict(sched.config)}
    ab, pred, notes = U.schedule(json.loads(json.dumps(conf)), None)   # as parsed from json
    assert ab.dtype == torch.float64 and ab.shape == (1000,) and pred == "v_prediction"
    ref = sched.alphas_cumprod.double()        # diffusers computes in float32
    assert torch.allclose(ab, ref, rtol=1e-4, atol=1e-6)
    assert kind in notes[0]


def test_schedule_defaults_and_trained_betas():
    ab, pred, notes = U.schedule(None, {"num_train_timesteps": None})
    assert pred == "epsilon" and ab.shape == (1000,) and "no scheduler config" in notes[0]
    betas = [0.1, 0.2, 0.3]
    ab, _, _ = U.schedule({"trained_betas": betas, "num_train_timesteps": 3})
    assert torch.allclose(ab, torch.tensor([0.9, 0.72, 0.504], dtype=torch.float64))


def test_find_scheduler_config():
    flat = ["config.json", "diffusion_pytorch_model.bin", "model_index.json",
            "scheduler_config.json", "README.md"]
    assert U.find_scheduler_config(flat) == "scheduler_config.json"
    pipe = ["model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json"]
    assert U.find_scheduler_config(pipe, "unet") == "scheduler/scheduler_config.json"
    assert U.find_scheduler_config(pipe) == "scheduler/scheduler_config.json"
    assert U.find_scheduler_config(["config.json"]) is None


# ----------------------------------------------------------- prediction-type conversion
class _Fake(nn.Module):
    """A network that returns a fixed, precomputed output (x̂0 or v) whatever it is given."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x, t, y=None):
        return self.out


@pytest.mark.parametrize("pred", ["sample", "v_prediction", "epsilon"])
@pytest.mark.parametrize("t", [0, 250, 999, [3, 600]])
def test_prediction_conversion_recovers_eps(pred, t):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    sched = {"beta_schedule": "linear", "prediction_type": pred}
    ab_all, _, _ = U.schedule(sched)
    a = ab_all[torch.as_tensor(t)].reshape(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    out = {"sample": x0, "epsilon": eps,
           "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[pred]
    prior = U.prior(_Fake(out), {"in_channels": 3, "out_channels": 3}, sched)
    assert prior.prediction == pred
    got = prior.eps(x_t, torch.as_tensor(t))
    assert torch.allclose(got, eps, rtol=0, atol=1e-8)
    assert torch.allclose(prior.x0(x_t, torch.as_tensor(t)), x0, atol=1e-6)
