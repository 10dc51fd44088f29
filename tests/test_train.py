"""``dmir train``: the model it writes loads through models.load, resuming is exact, and bad
settings are refused with clear errors."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from dmir import cli, models
from dmir.errors import InputError, ParameterError
from dmir.models import read_safetensors
from dmir.train import TrainConfig, train

DATA = Path(__file__).parent / "data"


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "imgs" / "sub"
    d.mkdir(parents=True)
    for n in ("kodim05_crop64.png", "kodim23_crop64.png"):
        shutil.copy(DATA / n, d / n)
    return tmp_path / "imgs"


def small(folder, out, steps):
    return TrainConfig(data=[str(folder)], out_dir=str(out), crop=32, batch=2, steps=steps,
                       ch=32, ch_mult=[1, 2], num_res_blocks=1, save_every=2, log_every=1,
                       warmup=2, lr=1e-3, seed=3)


def test_resume_is_exact_and_model_loads(folder, tmp_path):
    straight = train(small(folder, tmp_path / "a", 4), progress=False, log=lambda m: None)
    train(small(folder, tmp_path / "b", 2), progress=False, log=lambda m: None)
    logs = []
    resumed = train(small(folder, tmp_path / "b", 4), progress=False, log=logs.append)
    assert any("resuming from step 2" in m for m in logs)
    wa, wb = read_safetensors(Path(straight) / "model.safetensors"), \
        read_safetensors(Path(resumed) / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:   # same data order, noise and optimizer state: bit-identical EMA weights
        assert torch.equal(wa[k], wb[k]), k
    hist = json.loads((tmp_path / "b" / "loss.json").read_text())
    assert [h[0] for h in hist] == [1, 2, 3, 4]
    assert (tmp_path / "b" / "loss.png").stat().st_size > 1000
    m = models.load(straight)
    assert m.info["format"] == "ddpm" and m.size_multiple == 2
    cfg = json.loads((Path(straight) / "config.json").read_text())
    assert cfg["training"]["step"] == 4 and cfg["config"]["image_size"] == 32
    x = torch.zeros(1, 3, 32, 32)
    assert m.eps(x, torch.tensor([500])).shape == x.shape
    # the EMA differs from the raw weights (it averages them) but stays finite
    assert all(torch.isfinite(v).all() for v in wa.values())


def test_training_reduces_the_loss(folder, tmp_path):
    cfg = small(folder, tmp_path / "c", 30)
    cfg.log_every = 10
    train(cfg, progress=False, log=lambda m: None)
    hist = json.loads((tmp_path / "c" / "loss.json").read_text())
    assert hist[-1][1] < 0.6 * hist[0][1], hist


def test_bad_settings_are_refused(folder, tmp_path):
    with pytest.raises(ParameterError, match="multiple of 2"):
        train(TrainConfig(data=[str(folder)], crop=33, ch_mult=[1, 2], out_dir=str(tmp_path)),
              progress=False)
    with pytest.raises(InputError, match="does not exist"):
        train(TrainConfig(data=[str(tmp_path / "nope")], out_dir=str(tmp_path)), progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        train(TrainConfig(data=[str(empty)], out_dir=str(tmp_path / "o")), progress=False)
    train(small(folder, tmp_path / "d", 2), progress=False, log=lambda m: None)
    other = small(folder, tmp_path / "d", 4)
    other.ch_mult = [1, 2, 2]
    with pytest.raises(ParameterError, match="another architecture"):
        train(other, progress=False, log=lambda m: None)


def test_cli_train(folder, tmp_path, capsys):
    rc = cli.main(["train", str(folder), "-o", str(tmp_path / "t"), "--crop", "32", "--batch",
                   "2", "--steps", "2", "--ch-mult", "1,2", "--res-blocks", "1"])
    assert rc == 0
    assert (tmp_path / "t" / "model" / "model.safetensors").exists()
    rc = cli.main(["train", str(folder), "-o", str(tmp_path / "u"), "--ch-mult", "1,x"])
    err = capsys.readouterr().err
    assert rc == 2 and "--ch-mult takes comma-separated integers" in err
