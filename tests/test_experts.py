"""Timestep experts (dmir.models.experts; issue 27): an ε-prediction and a v-prediction network,
each serving its own timestep range, combine into one prior whose ε is each expert's exact ε —
checked against an analytic Gaussian prior whose ε (and so v) is known in closed form — and which
loads from a folder, runs through the fast path and the CLI, and refuses malformed folders.
``dmir train --timesteps`` draws only the expert's timesteps."""
import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from dmir import models
from dmir.checkpoints.reading import CheckpointError
from dmir.errors import ParameterError
from dmir.models import experts
from dmir.models.analytic import GaussianPrior
from dmir.models.network import NetworkPrior
from dmir.models.nets import ddpm_unet
from dmir.train import TrainConfig, draw_samples, CropSampler, export_model


class _Exact(nn.Module):
    """A 'network' that outputs the exact ε or v of an analytic prior."""

    def __init__(self, prior, what):
        super().__init__()
        self.prior, self.what = prior, what

    def forward(self, x, t, y=None):
        t = t.round().long()
        eps = self.prior.eps(x.double(), t).to(x.dtype)
        if self.what == "epsilon":
            return eps
        a = self.prior.alpha_bar(t).to(x.dtype).view(-1, 1, 1, 1)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0          # v (Salimans & Ho 2022)


@pytest.fixture(scope="module")
def gauss():
    return GaussianPrior(torch.linspace(-0.5, 0.5, 3 * 8 * 8).reshape(3, 8, 8), var=0.2)


def _exact_prior(gauss, what):
    return NetworkPrior(_Exact(gauss, what), gauss.alphas_cumprod, prediction=what, name=what)


@pytest.mark.parametrize("order", [("epsilon", "v_prediction"), ("v_prediction", "epsilon")])
def test_combined_eps_is_the_exact_eps_at_every_timestep(gauss, order):
    lo, hi = (_exact_prior(gauss, w) for w in order)
    p = experts.combine([hi, lo], [(600, 1000), (0, 600)])       # any order in, sorted
    assert p.info["experts"][0]["prediction"] == order[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    for t in (0, 1, 599, 600, 601, 900, 999):
        want = gauss.eps(x, t)
        got = p.eps(x, t)
        # float64 in, float64 out: the v → ε conversion is exact to rounding (ᾱ held in float32)
        assert float((got - want).abs().max()) < 2e-5 * float(want.abs().max()), t
    # a batch whose samples sit in different experts' ranges: each gets its own expert
    tt = torch.tensor([3, 700, 599, 999])
    want = torch.cat([gauss.eps(x[i:i + 1], int(tt[i])) for i in range(4)])
    assert float((p.eps(x, tt) - want).abs().max()) < 2e-5 * float(want.abs().max())


def test_combine_refuses_gaps_overlaps_and_mismatches(gauss):
    e, v = _exact_prior(gauss, "epsilon"), _exact_prior(gauss, "v_prediction")
    for ranges in ([(0, 500), (600, 1000)], [(0, 700), (600, 1000)], [(0, 600), (600, 999)],
                   [(10, 600), (600, 1000)]):
        with pytest.raises(ParameterError, match="tile 0..1000"):
            experts.combine([e, v], ranges)
    other = NetworkPrior(_Exact(gauss, "epsilon"), gauss.alphas_cumprod ** 1.01, name="other")
    with pytest.raises(ParameterError, match="another schedule"):
        experts.combine([e, other], [(0, 500), (500, 1000)])
    with pytest.raises(ParameterError, match="network priors"):
        experts.combine([e, gauss], [(0, 500), (500, 1000)])


def _small_net(prediction, seed):
    cfg = ddpm_unet.full_config({"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                                 "attn_resolutions": [], "image_size": 16,
                                 "prediction": prediction})
    torch.manual_seed(seed)
    net = ddpm_unet.build(cfg)
    with torch.no_grad():                       # a non-trivial output layer (zero-init in DDPM)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net, cfg


def _export(folder, prediction, seed):
    net, cfg = _small_net(prediction, seed)
    tc = TrainConfig(ch=32, ch_mult=[1, 2], num_res_blocks=1, crop=16, prediction=prediction,
                     data=["x"])
    export_model(net.state_dict(), tc, str(folder), 0, None)
    return models.load(str(folder))


def test_save_model_copies_a_run_output_in_each_precision(tmp_path):
    """A training run's best/ (float32, with its step) copied for committing: float16 halves the
    bytes and changes ε by float16 rounding only, int8 quarters them, the step survives, and a
    missing folder or an unknown precision is refused by name."""
    from dmir.checkpoints.reading import INT8_KEY, safetensors_header

    net, _ = _small_net("v_prediction", 4)
    tc = TrainConfig(ch=32, ch_mult=[1, 2], num_res_blocks=1, crop=16,
                     prediction="v_prediction", data=["x"])
    export_model(net.state_dict(), tc, str(tmp_path / "best"), 2000, 0.2)
    ref = models.load(str(tmp_path / "best"))
    one = (tmp_path / "best" / "model.safetensors").stat().st_size
    cfg = (tmp_path / "best" / "config.json").read_bytes()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    for kind, size, tol in (("float16", 0.55, 2e-3), ("int8", 0.30, 5e-2), ("float32", 1.01, 1e-7)):
        dst = tmp_path / kind
        experts.save_model(str(tmp_path / "best"), str(dst), kind)
        f = dst / "model.safetensors"
        assert f.stat().st_size < size * one, kind
        meta = safetensors_header(str(f))[1]
        assert meta["step"] == "2000" and meta["format"] == "ddpm"
        assert (INT8_KEY in meta) == (kind == "int8")
        assert (dst / "config.json").read_bytes() == cfg
        p = models.load(str(dst))
        assert p.param_dtype == torch.float32
        for t in (100, 900):
            want, got = ref.eps(x, t), p.eps(x, t)
            rel = float((got - want).norm() / want.norm())
            assert 0 <= rel < tol, (kind, t, rel)
    # the int8 copy back to float16: the int8 marker does not follow it
    experts.save_model(str(tmp_path / "int8"), str(tmp_path / "back"), "float16")
    assert INT8_KEY not in safetensors_header(str(tmp_path / "back" / "model.safetensors"))[1]
    with pytest.raises(CheckpointError, match="is not a model folder: config.json is missing"):
        experts.save_model(str(tmp_path / "nothing"), str(tmp_path / "x"))
    with pytest.raises(ParameterError, match="precision must be one of float32, float16, int8"):
        experts.save_model(str(tmp_path / "best"), str(tmp_path / "y"), "bfloat16")
    with pytest.raises(ParameterError, match="another folder"):
        experts.save_model(str(tmp_path / "best"), str(tmp_path / "best"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_save_model_failing_on_config_leaves_no_truncated_file(tmp_path, monkeypatch):
    """The copy's config.json is written atomically like its weights: a failure while it is
    replaced is one OutputError, the config.json there stays as it was (not truncated), and no
    temp file remains."""
    from dmir.io import OutputError

    net, _ = _small_net("v_prediction", 4)
    tc = TrainConfig(ch=32, ch_mult=[1, 2], num_res_blocks=1, crop=16,
                     prediction="v_prediction", data=["x"])
    export_model(net.state_dict(), tc, str(tmp_path / "best"), 2000, 0.2)
    dst = tmp_path / "committed"
    dst.mkdir()
    (dst / "config.json").write_text('{"earlier": true}')
    real = os.replace

    def replace(a, b):
        if str(b).endswith("config.json"):
            raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OutputError, match="config.json.*No space left"):
        experts.save_model(str(tmp_path / "best"), str(dst))
    assert (dst / "config.json").read_text() == '{"earlier": true}'
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors"]


def test_folder_roundtrip_half_storage_and_fast_path(tmp_path):
    lo = _export(tmp_path / "eps", "epsilon", 1)
    hi = _export(tmp_path / "v", "v_prediction", 2)
    experts.save_folder(str(tmp_path / "pair"), [(str(tmp_path / "v"), (700, 1000)),
                                                  (str(tmp_path / "eps"), (0, 700))])
    meta = json.loads((tmp_path / "pair" / "config.json").read_text())
    assert meta == {"format": "experts", "experts": [{"path": "expert0", "timesteps": [0, 700]},
                                                     {"path": "expert1", "timesteps": [700, 1000]}]}
    # float16 on disk: half the bytes of float32 each
    one = (tmp_path / "eps" / "model.safetensors").stat().st_size
    assert (tmp_path / "pair" / "expert0" / "model.safetensors").stat().st_size < 0.55 * one
    p = models.load(str(tmp_path / "pair"))
    assert p.param_dtype == torch.float32 and p.size_multiple == 2
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    for t, ref in ((0, lo), (699, lo), (700, hi), (999, hi)):
        want, got = ref.eps(x, t), p.eps(x, t)
        rel = float((got - want).norm() / want.norm())
        assert rel < 2e-3, (t, rel)                # float16 rounding of the weights only
    # the fast path reaches the experts' layers (bf16 autocast, channels_last) and stays close
    from dmir.models.fast import accelerate

    q = accelerate(models.load(str(tmp_path / "pair")), "cpu", dtype="bfloat16",
                   channels_last=True)
    for t in (100, 900):
        want, got = p.eps(x, t), q.eps(x, t)
        assert float((got - want).norm() / want.norm()) < 5e-2
        assert got.dtype == torch.float32


def test_routing_reads_no_timestep_back_from_the_device(tmp_path):
    """A solver's scalar t reaches the experts on the host: routing reads nothing back from the
    device (on a GPU a read is a sync per network call, and fails inside CUDA-graph capture).
    The meta device stands in: any read of a meta tensor's values raises."""
    _export(tmp_path / "eps", "epsilon", 1)
    _export(tmp_path / "v", "v_prediction", 2)
    experts.save_folder(str(tmp_path / "pair"), [(str(tmp_path / "eps"), (0, 700)),
                                                  (str(tmp_path / "v"), (700, 1000))])
    from dmir.models.tiled import TiledPrior

    p = models.load(str(tmp_path / "pair"))
    tiled = TiledPrior(p, tile=16, overlap=4)       # checks its schedule where it is
    p.to("meta")
    x = torch.empty(2, 3, 16, 16, device="meta")
    for t in (0, 699, 700, 999):
        out = p.eps(x, t)
        assert out.device.type == "meta" and out.shape == x.shape
    t_dev = torch.full((2,), 700.0, device="meta")
    with pytest.raises((NotImplementedError, RuntimeError)):
        p.net(x, t_dev)                     # without the host timesteps the route is read back
    # through tiles (sizes not a multiple of 8, --tile, memory-planned tiles): the same
    big = torch.empty(1, 3, 40, 40, device="meta")
    for t in (100, 900):
        out = tiled.eps(big, t)
        assert out.device.type == "meta" and out.shape == big.shape
    # a single v-prediction network: ᾱ for a scalar t comes from the host too
    v = models.load(str(tmp_path / "v"))
    v.eps(torch.zeros(1, 3, 16, 16), 5)      # ᾱ read once, where it is
    v.to("meta")
    assert v.eps(x, 900).device.type == "meta"


def test_fast_path_wraps_each_expert_and_rewraps_cleanly(tmp_path):
    """accelerate() puts each expert behind its own FastNet with the routing outside (a graph
    captured of the whole would keep one expert); ε is unchanged in float32 in every range and
    in a mixed batch; accelerating again re-wraps instead of nesting."""
    from dmir.models import fast

    _export(tmp_path / "eps", "epsilon", 1)
    _export(tmp_path / "v", "v_prediction", 2)
    experts.save_folder(str(tmp_path / "pair"), [(str(tmp_path / "eps"), (0, 700)),
                                                  (str(tmp_path / "v"), (700, 1000))],
                        precision="float32")
    p = models.load(str(tmp_path / "pair"))
    q = fast.accelerate(models.load(str(tmp_path / "pair")), "cpu", dtype="float32",
                        channels_last=True)
    assert isinstance(q.net, experts.TimestepExperts)
    assert all(isinstance(n, fast.FastNet) for n in q.net.nets)
    assert fast.options_of(q) == fast.FastOptions(None, True, None, False)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    for t in (0, 699, 700, 999, torch.tensor([3, 700, 699, 999])):
        want, got = p.eps(x, t), q.eps(x, t)
        assert float((got - want).norm() / want.norm()) < 1e-5, t
    fast.accelerate(q, dtype="float32", channels_last=False)
    assert all(isinstance(n, fast.FastNet) and not isinstance(n.net, fast.FastNet)
               for n in q.net.nets)
    assert fast.options_of(q) == fast.FastOptions(None, False, None, False)
    assert float((q.eps(x, 800) - p.eps(x, 800)).norm() / p.eps(x, 800).norm()) < 1e-5
    # bf16 weights cannot go back to float32, and a refused call leaves the prior as it was
    fast.accelerate(q, dtype="bfloat16")
    for kw, msg in ((dict(dtype=None), "load the model again"), (dict(compile="bad"), "compile")):
        with pytest.raises(ParameterError, match=msg):
            fast.accelerate(q, **kw)
        assert fast.options_of(q) == fast.FastOptions(torch.bfloat16, True, None, False)
        assert q.eps(x, 800).isfinite().all()


def test_v_expert_eps_keeps_float32_under_bf16_autocast(tmp_path):
    """Under bf16 autocast a v-expert's output is bf16; its ε must not be rounded to bf16 too
    (at t = 999 x̂₀ multiplies an ε rounding by √(1−ᾱ)/√ᾱ ≈ 157): x̂₀ from the prior's ε equals
    x̂₀ = √ᾱ x_t − √(1−ᾱ) v from the expert's own output to float32 rounding."""
    from dmir.models import fast

    _export(tmp_path / "eps", "epsilon", 1)
    _export(tmp_path / "v", "v_prediction", 2)
    experts.save_folder(str(tmp_path / "pair"), [(str(tmp_path / "eps"), (0, 700)),
                                                  (str(tmp_path / "v"), (700, 1000))],
                        precision="float32")
    q = fast.accelerate(models.load(str(tmp_path / "pair")), "cpu", dtype="bfloat16",
                        channels_last=False)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    ab = float(q.alphas_cumprod[999])
    with torch.no_grad():
        eps = q.eps(x, 999)
        v = q.net.nets[1](x, torch.full((2,), 999.0), None)
    assert v.dtype == torch.bfloat16 and eps.dtype == torch.float32
    x0_ref = ab ** 0.5 * x.double() - (1 - ab) ** 0.5 * v.double()
    x0 = (x.double() - (1 - ab) ** 0.5 * eps.double()) / ab ** 0.5
    assert float((x0 - x0_ref).abs().max()) < 1e-3


def test_int8_expert_storage(tmp_path):
    """An expert stored as int8 (a quarter of the float32 bytes) predicts what its float32
    network predicts to within int8 rounding; a wrong precision is refused."""
    lo = _export(tmp_path / "eps", "epsilon", 1)
    hi = _export(tmp_path / "v", "v_prediction", 2)
    experts.save_folder(str(tmp_path / "mix"), [(str(tmp_path / "v"), (700, 1000)),
                                                 (str(tmp_path / "eps"), (0, 700))],
                        precision=["int8", "float16"])      # per expert, in the order given
    one = (tmp_path / "v" / "model.safetensors").stat().st_size
    assert (tmp_path / "mix" / "expert1" / "model.safetensors").stat().st_size < 0.3 * one
    assert (tmp_path / "mix" / "expert0" / "model.safetensors").stat().st_size > 0.45 * one
    p = models.load(str(tmp_path / "mix"))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    for t, ref, tol in ((300, lo, 2e-3), (800, hi, 2e-2)):
        want, got = ref.eps(x, t), p.eps(x, t)
        rel = float((got - want).norm() / want.norm())
        assert 0 < rel < tol, (t, rel)
    with pytest.raises(ParameterError, match="precision must be"):
        experts.save_folder(str(tmp_path / "bad"), [(str(tmp_path / "v"), (0, 1000))],
                            precision="int4")


def test_malformed_expert_folders_are_refused(tmp_path):
    _export(tmp_path / "eps", "epsilon", 1)
    d = tmp_path / "bad"
    d.mkdir()
    cases = {
        json.dumps({"format": "experts", "experts": []}): "non-empty list",
        json.dumps({"format": "experts", "experts": [{"path": "x", "timesteps": [0, 1.5]}]}):
            "integers",
        json.dumps({"format": "experts", "experts": [{"path": "../eps", "timesteps": [0, 1000]}]}):
            "leaves the folder",
        json.dumps({"format": "experts", "experts": [{"path": "nope", "timesteps": [0, 1000]}]}):
            "missing",
    }
    for text, msg in cases.items():
        (d / "config.json").write_text(text)
        with pytest.raises(CheckpointError, match=msg):
            models.load(str(d))
    import shutil

    shutil.copytree(tmp_path / "eps", d / "a")
    (d / "config.json").write_text(json.dumps(
        {"format": "experts", "experts": [{"path": "a", "timesteps": [0, 500]}]}))
    with pytest.raises(CheckpointError, match="tile 0..1000"):
        models.load(str(d))


def test_cli_restores_with_an_expert_folder(tmp_path):
    _export(tmp_path / "eps", "epsilon", 1)
    _export(tmp_path / "v", "v_prediction", 2)
    experts.save_folder(str(tmp_path / "pair"), [(str(tmp_path / "eps"), (0, 800)),
                                                  (str(tmp_path / "v"), (800, 1000))])
    from PIL import Image
    import numpy as np

    img = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")
    Image.fromarray(img).save(tmp_path / "in.png")
    r = subprocess.run([sys.executable, "-m", "dmir", "restore", str(tmp_path / "in.png"),
                        "-o", str(tmp_path / "out.png"), "--task", "sr_averagepooling",
                        "--scale", "2", "--degrade", "--method", "ddnm", "--steps", "5",
                        "--model", str(tmp_path / "pair")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == (32, 32, 3)


def test_train_draws_only_the_experts_timesteps(train_photos):
    data = CropSampler(sorted(str(p) for p in train_photos.iterdir()), 16)
    _, t, _ = draw_samples(data, 1000, 0, 1, range(64), (650, 1000))
    assert int(t.min()) >= 650 and int(t.max()) < 1000 and len(set(t.tolist())) > 40
    _, t_all, _ = draw_samples(data, 1000, 0, 1, range(64))
    assert int(t_all.min()) < 650                      # without a range: the whole schedule
    with pytest.raises(ParameterError, match="START:STOP"):
        TrainConfig(data=["x"], timesteps=[800, 800]).validate()
    with pytest.raises(ParameterError, match="--val-base"):
        TrainConfig(data=["x"], timesteps=[0, 800], val=["y"]).validate()
    with pytest.raises(ParameterError, match="timestep experts"):
        TrainConfig(data=["x"], val_base="dmir-ddpm").validate()
