"""``models.load`` on every checkpoint format: conformance with the reference implementations'
outputs (guided-diffusion ADM, DDPM "simple" UNet, diffusers UNet2DModel), format detection,
config precedence and inference, dtypes, and clear errors for mismatched input."""
import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch

from dmir import models, operators, solvers
from dmir.errors import ParameterError, ShapeError
from dmir.models import adm, registry
from dmir.models.checkpoint import CheckpointError

MODELS = os.path.join(os.path.dirname(__file__), "data", "models")
FOLDERS = ["adm_imagenet_like", "adm_ffhq_like", "ddpm_celebahq_like", "diffusers_ddpm_like"]


def _io(name):
    d = np.load(os.path.join(MODELS, name, "io.npz"))
    return torch.from_numpy(d["x"]), torch.from_numpy(d["t"]), torch.from_numpy(d["out"])


def _rel_err(prior, name, **kw):
    x, t, ref = _io(name)
    with torch.no_grad():
        out = prior.forward_raw(x.to(kw.get("dtype", torch.float32)), t.long()).float()
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize("name", FOLDERS)
def test_fixture_folders_reproduce_reference_outputs(name):
    """Each folder's reference forward output within 1e-4 of its max magnitude (measured
    1.1e-6 … 1.7e-6: float32 summation order)."""
    if name.startswith("diffusers"):
        pytest.importorskip("diffusers")
    prior = models.load(os.path.join(MODELS, name))
    assert isinstance(prior, models.NetworkPrior)
    assert _rel_err(prior, name) < 1e-4
    assert prior.alphas_cumprod.shape == (1000,)
    x, t, ref = _io(name)
    with torch.no_grad():
        eps = prior.eps(x, t.long())
    assert eps.shape == x.shape
    assert float((eps - ref[:, :3]).abs().max() / ref.abs().max()) < 1e-4


def test_format_detection_and_mismatch_errors(tmp_path):
    ddpm_file = os.path.join(MODELS, "ddpm_celebahq_like", "model.pt")
    adm_file = os.path.join(MODELS, "adm_ffhq_like", "model.pt")
    with pytest.raises(CheckpointError, match="not a adm checkpoint: its keys look like ddpm"):
        models.load(ddpm_file, format="adm")
    with pytest.raises(CheckpointError, match="keys look like adm"):
        models.load(adm_file, format="ddpm")
    # a config that does not match the weights is refused before the network is built, with
    # the setting, the config's value and the weights' value (issue 14, cause 7)
    with pytest.raises(ParameterError) as e:
        models.load(adm_file, config={"num_channels": 64})
    msg = str(e.value)
    assert "num_channels is 64 in the config" in msg and len(msg) < 900, msg
    with pytest.raises(ParameterError) as e:
        models.load(adm_file, config={"num_res_blocks": 2})
    assert "num_res_blocks is 2 in the config, 1 in the weights" in str(e.value)
    with pytest.raises(ParameterError, match="unknown"):
        models.load(adm_file, config={"num_chanels": 32})
    with pytest.raises(models.registry.UnknownNameError if hasattr(models.registry, "UnknownNameError")
                       else Exception, match="named configs"):
        models.load(adm_file, config="adm-celeba512")


def test_config_precedence_and_inference():
    """No config.json: the shapes give everything but the attention heads and the image size,
    which are assumed and reported; the sidecar config or an explicit config overrides."""
    folder = os.path.join(MODELS, "adm_ffhq_like")
    with open(os.path.join(folder, "config.json")) as f:
        ref_cfg = json.load(f)["config"]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        inferred = models.load(os.path.join(folder, "model.pt"), image_size=64)
    assert any(issubclass(x.category, models.InferredConfigWarning) for x in w)
    cfg = inferred.info["config"]
    for k in ("num_channels", "num_res_blocks", "learn_sigma", "use_scale_shift_norm",
              "resblock_updown", "class_cond"):
        assert cfg[k] == ref_cfg[k], k
    assert any("head" in n for n in inferred.info["notes"])
    explicit = models.load(os.path.join(folder, "model.pt"),
                           config={"num_heads": 4, "num_head_channels": 16, "image_size": 64,
                                   "attention_resolutions": "16"})
    assert _rel_err(explicit, "adm_ffhq_like") < 1e-4


@pytest.mark.parametrize("dtype,bound", [("bfloat16", 0.06), ("float16", 0.01)])
def test_half_precision_inference(dtype, bound):
    """fp16/bf16 weights and activations: ε keeps the input dtype; the error against float32
    is that of the format's mantissa (measured on the ADM fixture, 32×32 crop, relative to
    max|ε|: bf16 1.1e-2, fp16 1.0e-3; bounds 5-10× those). Half-precision convolutions are slow
    on CPU (no fast kernels): this is a GPU option."""
    name = "adm_imagenet_like"
    ref = models.load(os.path.join(MODELS, name))
    p = models.load(os.path.join(MODELS, name), dtype=dtype)
    assert p.compute_dtype == getattr(torch, dtype)
    x, t, _ = _io(name)
    x, t = x[:2, :, :32, :32], t[:2].long()
    with torch.no_grad():
        e32, eps = ref.eps(x, t), p.eps(x, t)
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()
    err = float((eps - e32).abs().max() / e32.abs().max())
    print(f"{dtype}: {err:.2e}")
    assert err < bound


def test_registry_name_resolves_local_copy(tmp_path, monkeypatch):
    """A named model is found in $DMIR_HOME, loaded with its registry config, and its sha256
    (not recorded) is computed, printed and remembered at first load."""
    monkeypatch.setenv("DMIR_HOME", str(tmp_path))
    with open(os.path.join(MODELS, "adm_ffhq_like", "config.json")) as f:
        cfg = adm.full_config(json.load(f)["config"])
    monkeypatch.setitem(adm.CONFIGS, "adm-toy", cfg)
    entry = registry.Entry("adm-toy", "adm", "adm-toy", (registry.File("toy_adm.pt"),), "toy")
    monkeypatch.setitem(registry.ENTRIES, "adm-toy", entry)
    shutil.copy(os.path.join(MODELS, "adm_ffhq_like", "model.pt"), tmp_path / "toy_adm.pt")
    prior = models.load("adm-toy")
    assert _rel_err(prior, "adm_ffhq_like") < 1e-4
    assert prior.name == "adm-toy" and len(prior.info["sha256"]) == 64
    db = json.loads((tmp_path / "checksums.json").read_text())
    memo = db[str(tmp_path / "toy_adm.pt")]
    assert memo["name"] == "adm-toy" and memo["sha256"] == prior.info["sha256"]
    assert registry.recorded_sha256(entry) == prior.info["sha256"]
    os.utime(tmp_path / "toy_adm.pt", (1, 1))          # a changed file is not trusted
    assert registry.recorded_sha256(entry) is None
    # the official file name alone selects the registry config too
    prior2 = models.load(str(tmp_path / "toy_adm.pt"))
    assert prior2.info["config"] == {**cfg, "use_fp16": False}


def test_network_prior_errors():
    p = models.load(os.path.join(MODELS, "ddpm_celebahq_like"))
    with pytest.raises(ShapeError, match=r"\(B, 3, H, W\)"):
        p.eps(torch.zeros(1, 1, 64, 64), 10)
    with pytest.raises(ShapeError, match="divisible by 8"):
        p.eps(torch.zeros(1, 3, 60, 64), 10)
    with pytest.raises(ParameterError, match="not class-conditional"):
        p.set_class_labels(3)


def test_restoration_runs_with_a_checkpoint_model():
    """The loaded network drives a solver end to end (random weights: only mechanics)."""
    p = models.load(os.path.join(MODELS, "adm_ffhq_like"))
    op = operators.build("sr_averagepooling", (3, 64, 64), scale=4)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    s = solvers.build("ddnm-equs+", p, op, steps=3)
    with torch.no_grad():
        out = s.sample(op.A(x), generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.allclose(op.A(out), op.A(x), atol=1e-4)


def test_cli_restores_with_a_checkpoint(tmp_path, capsys):
    from dmir.cli import main
    img = os.path.join(os.path.dirname(__file__), "data", "kodim05_crop64.png")
    out = tmp_path / "o.png"
    model_file = os.path.join(MODELS, "adm_ffhq_like", "model.pt")
    rc = main(["restore", img, "-o", str(out), "--task", "sr_averagepooling", "--scale", "4",
               "--degrade", "--model", model_file, "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 0 and out.exists()
    assert "num_head_channels=64 (assumed" in err       # inferred settings are reported
    rc = main(["restore", img, "-o", str(tmp_path / "p.png"), "--task", "sr_averagepooling",
               "--scale", "4", "--degrade", "--model", model_file, "--class-label", "3"])
    assert rc == 2 and "not class-conditional" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()
