"""Caches where users keep them: ``$DMIR_HOME`` → ``$XDG_CACHE_HOME/dmir`` → ``~/.cache/dmir``;
hub ids loaded offline from a cache laid out as huggingface_hub lays it out."""
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dmir import cache, hub, models
from dmir.metrics import weights
from dmir.models import registry

FIX = Path(__file__).parent / "data" / "models" / "diffusers_ddpm_like"
REPO = "google/ddpm-ema-celebahq-256"
REV = "0123456789abcdef0123456789abcdef01234567"    # a commit hash, as the hub's refs hold


# ----------------------------------------------------------------------------- dmir homes
def test_home_order_dmir_home_then_xdg_then_dot_cache(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DMIR_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache.home_dirs() == [str(home / ".cache" / "dmir")]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.home_dirs() == [str(tmp_path / "xdg" / "dmir"), str(home / ".cache" / "dmir")]
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")      # the spec: absolute only
    assert cache.home_dirs() == [str(home / ".cache" / "dmir")]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("DMIR_HOME", str(tmp_path / "dm"))
    assert cache.home_dirs() == [str(tmp_path / "dm"), str(tmp_path / "xdg" / "dmir"),
                                 str(home / ".cache" / "dmir")]
    # everything that writes or searches uses that order
    assert registry.home_dirs() == cache.home_dirs()
    assert registry.download_dir() == str(tmp_path / "dm")
    assert weights.cache_dir() == str(tmp_path / "dm" / "metrics")
    monkeypatch.delenv("DMIR_HOME")
    assert weights.cache_dir() == str(tmp_path / "xdg" / "dmir" / "metrics")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert cache.torch_hub_dir() == str(tmp_path / "th" / "hub" / "checkpoints")
    monkeypatch.delenv("TORCH_HOME")
    assert cache.torch_hub_dir() == str(tmp_path / "xdg" / "torch" / "hub" / "checkpoints")


def test_named_model_found_in_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("DMIR_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    entry = registry.get("ddpm-celebahq256")
    assert registry.local_path(entry) is None
    d = tmp_path / "dmir"
    d.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "models" / "ddpm_celebahq_like" / "model.pt",
                d / entry.main_file.name)
    assert registry.local_path(entry) == str(d / entry.main_file.name)


# ----------------------------------------------------------------------------- the hub cache
def _hf_cache(root: Path) -> Path:
    """A huggingface_hub cache holding REPO at REV: blobs named by hash, snapshot symlinks,
    refs/main → REV (the layout huggingface_hub writes)."""
    repo = root / ("models--" + REPO.replace("/", "--"))
    blobs, snap = repo / "blobs", repo / "snapshots" / REV
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    sched = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000,
             "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}
    files = {"config.json": (FIX / "config.json").read_bytes(),
             "diffusion_pytorch_model.safetensors":
                 (FIX / "diffusion_pytorch_model.safetensors").read_bytes(),
             "scheduler_config.json": json.dumps(sched).encode()}
    for name, data in files.items():
        h = hashlib.sha256(data).hexdigest()
        (blobs / h).write_bytes(data)
        os.symlink(os.path.join("..", "..", "blobs", h), snap / name)
    return snap


@pytest.fixture()
def hf_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    root = tmp_path / "hf"
    snap = _hf_cache(root)
    monkeypatch.setenv("HF_HUB_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snap


def test_hub_id_loads_offline_from_the_hf_cache(hf_offline):
    assert hub.is_hub_id(REPO) and not hub.is_hub_id("some/missing.pt")
    assert hub.resolve(REPO) == str(hf_offline)
    prior = models.load(REPO)
    ref = models.load(str(FIX))                       # the same folder, loaded by path
    io = np.load(FIX / "io.npz")
    x, t = torch.from_numpy(io["x"]), torch.from_numpy(io["t"])
    with torch.no_grad():
        out = prior.net(x, t)
        assert torch.allclose(out, torch.from_numpy(io["out"]), atol=1e-4)
        assert torch.equal(out, ref.net(x, t))
    assert prior.info["path"] == str(hf_offline)


def test_hub_pinned_revision_and_missing_models(hf_offline, monkeypatch):
    # an explicit (or pinned) revision that the cache does not hold: a clear offline error
    with pytest.raises(hub.HubError, match=r"not in the huggingface_hub cache.*HF_HUB_OFFLINE"):
        hub.resolve(REPO, revision="f" * 40)
    monkeypatch.setitem(hub.PINNED, REPO, REV)
    assert hub.resolve(REPO) == str(hf_offline)
    monkeypatch.setitem(hub.PINNED, REPO, "e" * 40)
    with pytest.raises(models.ModelNotFoundError, match="eeeeeeee"):
        models.load(REPO)
    with pytest.raises(models.ModelNotFoundError, match="not in the huggingface_hub cache"):
        models.load("nobody/no-such-model")
    # a missing local file that looks like a path is reported as a missing file
    with pytest.raises(models.ModelNotFoundError, match="no such file"):
        models.load("nowhere/model.pt")


def test_hub_needs_huggingface_hub(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "huggingface_hub" or name.startswith("huggingface_hub."):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    from dmir.errors import ParameterError
    with pytest.raises(ParameterError, match=r"pip install 'dmir\[hub\]'"):
        hub.resolve(REPO)
