"""``dmir train`` stops cleanly and refuses what would corrupt a run (issue 26, causes 2, 5, 17,
18 and the training part of 24): SIGINT/SIGTERM at any point of a step resume to the model of an
uninterrupted run bit for bit; a second run on the same state is refused; unwritable homes, bad
seeds and an early divergence give one clear error and leave nothing behind."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dmir.models import read_safetensors
from dmir.train import TrainConfig, TrainingError, TrainingInterrupted, load_state, train
from dmir.errors import ParameterError

DATA = Path(__file__).parent / "data"
QUIET = {"progress": False, "log": lambda m: None}


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DMIR_HOME", str(tmp_path / "cache"))


@pytest.fixture()
def folder(train_photos):
    return train_photos


def small(folder, out, steps, **kw):
    return TrainConfig(**{"data": [str(folder)], "out_dir": str(out), "crop": 16, "batch": 2,
                          "steps": steps, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                          "save_every": 3, "log_every": 1, "warmup": 2, "lr": 1e-3, "seed": 5,
                          **kw})


def weights(model_dir):
    return read_safetensors(Path(model_dir) / "model.safetensors")


def assert_identical(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    bad = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not bad, f"{len(bad)} tensors differ, e.g. {bad[:3]}"


# the places inside a step where a signal can land: drawing the data, the forward pass, the
# optimizer step, writing the state
def _hook(monkeypatch, where: str, at_call: int, signum: int):
    import dmir.train as tr
    import dmir.train_steps as ts

    calls = {"n": 0}

    def fire():
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signum)

    if where == "data":
        real = tr.CropSampler.sample
        monkeypatch.setattr(tr.CropSampler, "sample", lambda self, g: (fire(), real(self, g))[1])
    elif where == "forward":
        from dmir.models.nets import ddpm_unet as du

        real_f = du.DDPMUNet.forward
        monkeypatch.setattr(du.DDPMUNet, "forward", lambda self, *a, **k: (fire(), real_f(self, *a, **k))[1])
    elif where == "optimizer":
        real_s = torch.optim.Adam.step
        monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (fire(), real_s(self, *a, **k))[1])
    elif where == "save":
        real_v = ts.save_state
        monkeypatch.setattr(tr, "save_state", lambda *a: (fire(), real_v(*a))[1])
    return calls


@pytest.mark.parametrize("seed", range(6))
def test_cause17_signal_anywhere_in_a_step_resumes_bit_exactly(folder, tmp_path, monkeypatch, seed):
    """Cause 17: a stop request lands at a random point of a random step (data, forward,
    optimizer, saving; SIGINT or SIGTERM): training finishes that step, saves, raises
    TrainingInterrupted, and the resumed run ends bit-identical to an uninterrupted one."""
    steps = 8
    straight = train(small(folder, tmp_path / "a", steps), **QUIET)
    rng = random.Random(seed)
    where = ["data", "forward", "optimizer", "save"][seed % 4]
    signum = [signal.SIGINT, signal.SIGTERM][rng.randrange(2)]
    at = {"data": rng.randrange(1, 2 * steps), "forward": rng.randrange(1, steps),
          "optimizer": rng.randrange(1, steps), "save": rng.randrange(1, 3)}[where]
    with monkeypatch.context() as m:
        calls = _hook(m, where, at, signum)
        with pytest.raises(TrainingInterrupted, match=f"{signal.Signals(signum).name}: stopped at step"):
            train(small(folder, tmp_path / "b", steps), **QUIET)
        assert calls["n"] >= at
    cfg = small(folder, tmp_path / "b", steps)
    _, meta = load_state(str(Path(cfg.resolved_state_dir()) / "state.safetensors"))
    assert 1 <= meta["step"] < steps
    resumed = train(cfg, **QUIET)
    assert_identical(straight, resumed)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL     # handlers restored


def start_background_train(folder, out, save_every):
    """`dmir train` as a background process (its own session), returned once it trains."""
    cmd = [sys.executable, "-m", "dmir", "train", str(folder), "-o", str(out), "--crop", "16",
           "--batch", "2", "--steps", "100000", "--ch-mult", "1,2", "--res-blocks", "1",
           "--save-every", str(save_every), "--threads", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    line = p.stdout.readline()
    while line and "training on" not in line:
        line = p.stdout.readline()
    assert "training on" in line, p.stderr.read() if p.poll() is not None else "no start line"
    return p


def test_cause17_sigterm_from_outside_saves_and_says_so(folder, tmp_path):
    """A background `dmir train` stopped with SIGTERM (what `kill` sends) saves its state, says
    where, exits 130, and the same command resumes from that step."""
    out = tmp_path / "bg"
    p = start_background_train(folder, out, save_every=100000)
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    out_s, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "SIGTERM: stopped at step" in err and "state saved in" in err and "Traceback" not in err
    assert "no output written" not in err
    state = [ln for ln in err.splitlines() if "state saved in" in ln][0]
    stopped = int(state.split("stopped at step ")[1].split(";")[0])
    assert stopped >= 1
    cfg = TrainConfig(data=[str(folder)], out_dir=str(out), crop=16, batch=2, steps=100000,
                      ch_mult=[1, 2], num_res_blocks=1, save_every=100000)
    _, meta = load_state(str(Path(cfg.resolved_state_dir()) / "state.safetensors"))
    assert meta["step"] == stopped


def test_cause18_second_run_on_the_same_state_is_refused(folder, tmp_path):
    """Cause 18: while one `dmir train` holds a state, a second on the same output folder is
    refused with the first one's pid; after the first stops, the state can be resumed."""
    out = tmp_path / "shared"
    p = start_background_train(folder, out, save_every=5)
    try:
        cfg = small(folder, out, 100000, crop=16, seed=0, lr=2e-4, warmup=200, save_every=5,
                    log_every=25)
        cfg.ema_rate = 0.999
        with pytest.raises(TrainingError, match=rf"in use by another dmir train \(pid {p.pid}\)"):
            train(cfg, **QUIET)
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=120)
    assert p.returncode == 130


def test_cause02_unwritable_home_is_one_error_and_leaves_no_folder(folder, tmp_path, monkeypatch,
                                                                   capsys):
    """Cause 2: DMIR_HOME is a file (or cannot be created): one line naming it, exit 2, and no
    empty OUT folder."""
    from dmir import cli

    home = tmp_path / "home-is-a-file"
    home.write_text("x")
    monkeypatch.setenv("DMIR_HOME", str(home))
    rc = cli.main(["train", str(folder), "-o", str(tmp_path / "o"), "--crop", "16", "--batch",
                   "2", "--steps", "2", "--ch-mult", "1,2", "--res-blocks", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot create the training state folder" in err and "DMIR_HOME" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setenv("DMIR_HOME", str(tmp_path / "ro"))
    monkeypatch.setattr(os, "makedirs", denied)
    with pytest.raises(TrainingError, match="Permission denied"):
        train(small(folder, tmp_path / "o2", 2), **QUIET)
    monkeypatch.undo()
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize("seed", [2 ** 70, -1, 2 ** 63, 1.5, True])
def test_cause05_seed_out_of_range_is_refused(folder, tmp_path, seed):
    """Cause 5: seeds outside [0, 2^63) (or not integers) are refused before anything runs."""
    with pytest.raises(ParameterError, match=r"seed must be an integer in \[0, 2\^63\)"):
        train(small(folder, tmp_path / "s", 2, seed=seed), **QUIET)
    assert not (tmp_path / "s").exists()


def test_cause24_divergence_before_the_first_save_claims_no_state(folder, tmp_path, monkeypatch):
    """Cause 24 (training part): a divergence before any save says that no state was kept."""
    import dmir.train as tr

    real = tr.CropSampler.sample
    monkeypatch.setattr(tr.CropSampler, "sample", lambda self, g: real(self, g) * float("nan"))
    with pytest.raises(TrainingError, match="diverged at step 1 .*no state was saved"):
        train(small(folder, tmp_path / "n", 4), **QUIET)
