"""``dmir train``: the model it writes loads through models.load, resuming is exact and safe
(no unpickling), the v-parametrisation is exposed as ε, validation picks the best weights, and
bad settings or data are refused with clear errors (issue 14, causes 1, 10, 17, 20, 24)."""
import io
import json
import os
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import cli, models
from dmir.errors import InputError, ParameterError
from dmir.models import read_safetensors
from dmir.train import (CropSampler, TrainConfig, TrainingError, evaluate_prior, load_state,
                        save_state, train)
from dmir.train_steps import resume_validation, validation_protocol

DATA = Path(__file__).parent / "data"
QUIET = {"progress": False, "log": lambda m: None}


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """Training state goes to dmir's cache: keep it inside the test's folder."""
    monkeypatch.setenv("DMIR_HOME", str(tmp_path / "cache"))


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "imgs" / "sub"
    d.mkdir(parents=True)
    for n in ("kodim05_crop64.png", "kodim23_crop64.png"):
        shutil.copy(DATA / n, d / n)
    return tmp_path / "imgs"


def small(folder, out, steps, **kw):
    return TrainConfig(**{"data": [str(folder)], "out_dir": str(out), "crop": 32, "batch": 2,
                          "steps": steps, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                          "save_every": 2, "log_every": 1, "warmup": 2, "lr": 1e-3, "seed": 3,
                          **kw})


def test_resume_is_exact_and_model_loads(folder, tmp_path):
    straight = train(small(folder, tmp_path / "a", 4), **QUIET)
    train(small(folder, tmp_path / "b", 2), **QUIET)
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
    # the state lives in the cache, not in the output folder
    assert not (tmp_path / "b" / "checkpoint.pt").exists()
    assert list((tmp_path / "cache" / "train").glob("b-*/state.safetensors"))
    m = models.load(straight)
    assert m.info["format"] == "ddpm" and m.size_multiple == 2
    assert m.prediction == "v_prediction"
    cfg = json.loads((Path(straight) / "config.json").read_text())
    assert cfg["training"]["step"] == 4 and cfg["config"]["image_size"] == 32
    x = torch.zeros(1, 3, 32, 32)
    assert m.eps(x, torch.tensor([500])).shape == x.shape
    assert all(torch.isfinite(v).all() for v in wa.values())


def test_v_prediction_is_exposed_as_eps(folder, tmp_path):
    """ε = √ᾱ v + √(1−ᾱ) x_t: the prior converts the network's v output for every solver."""
    m = models.load(train(small(folder, tmp_path / "v", 2), **QUIET))
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 900])
    v = m.forward_raw(x, t)
    a = m.alphas_cumprod[t].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(m.eps(x, t), a.sqrt() * v + (1 - a).sqrt() * x)


@pytest.mark.parametrize("prediction,ratio", [("v_prediction", 0.75), ("epsilon", 0.6)])
def test_training_reduces_the_loss(folder, tmp_path, prediction, ratio):
    cfg = small(folder, tmp_path / "c", 30, log_every=10, prediction=prediction)
    train(cfg, **QUIET)
    hist = json.loads((tmp_path / "c" / "loss.json").read_text())
    assert hist[-1][1] < ratio * hist[0][1], hist


def test_warm_start_and_validation_choose_best(folder, tmp_path):
    first = train(small(folder, tmp_path / "w0", 2, prediction="epsilon"), **QUIET)
    logs = []
    cfg = small(folder, tmp_path / "w1", 4, init=first, prediction="epsilon",
                val=[str(folder)], val_every=2, val_images=2, val_size=32, val_steps=3)
    train(cfg, progress=False, log=logs.append)
    assert any("warm start from" in m for m in logs)
    val = json.loads((tmp_path / "w1" / "val.json").read_text())
    assert [v["step"] for v in val] == [0, 2, 4]
    # the CPU time spent so far (all threads, validation included) goes with every validation
    hours = [v["cpu_hours"] for v in val]
    assert hours[0] == 0 and hours[1] > 0 and hours[2] > hours[1]
    assert any(re.match(r"step 4 \(\d+\.\d\d CPU-h\): held-out gain", m) for m in logs)
    for v in val:
        assert set(v) >= {"sr4", "inpaint", "color", "sr4_eta0", "score"}
        assert v["score"] == pytest.approx(np.mean([v[k]["gain"] for k in ("sr4", "inpaint",
                                                                            "color")]), abs=2e-3)
    best = max(val, key=lambda v: v["score"])
    bcfg = json.loads((tmp_path / "w1" / "best" / "config.json").read_text())
    assert bcfg["training"]["step"] == best["step"]
    # the warm start copied the weights: at step 0 the net equals the init model
    w0 = read_safetensors(Path(first) / "model.safetensors")
    with pytest.raises(ParameterError, match="not a DDPM UNet with this architecture"):
        train(small(folder, tmp_path / "w2", 2, init=first, ch_mult=[1, 2, 2]), **QUIET)
    assert w0


def test_evaluate_prior_numbers_are_psnr_gains():
    """With the exact (analytic) natural prior, DDNM beats A⁺y on SR and inpainting."""
    x = torch.from_numpy(np.asarray(Image.open(DATA / "kodim05_crop64.png"), dtype=np.float32))
    x = (x.permute(2, 0, 1)[None] / 127.5 - 1)
    r = evaluate_prior(models.load("natural"), x, steps=10)
    for k in ("sr4", "inpaint"):
        assert r[k]["gain"] == pytest.approx(r[k]["ddnm"] - r[k]["apy"], abs=2e-3)
    assert r["inpaint"]["gain"] > 1.0


# ------------------------------------------------------------------ issue 14: hardening
class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def test_cause01_crafted_pickle_is_never_executed(folder, tmp_path):
    """Cause 1: a crafted checkpoint in the output or state folder runs no code."""
    flag = tmp_path / "pwned"
    _Boom.flag = flag
    out = tmp_path / "p"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(pickle.dumps({"model": _Boom()}))
    cfg = small(folder, out, 2)
    state = Path(cfg.resolved_state_dir())
    state.mkdir(parents=True)
    (state / "state.safetensors").write_bytes(pickle.dumps({"model": _Boom()}))
    with pytest.raises(TrainingError, match="unusable"):
        train(cfg, **QUIET)
    assert not flag.exists()
    (state / "state.safetensors").unlink()
    train(cfg, **QUIET)           # the old-style checkpoint.pt is simply not read
    assert not flag.exists()


@pytest.mark.parametrize("content", [b"", b"garbage" * 10, None], ids=["empty", "garbage", "truncated"])
def test_cause10_corrupt_state_is_one_clear_error(folder, tmp_path, content, capsys):
    """Cause 10: an empty, garbage or truncated training state → one line, exit 2."""
    cfg = small(folder, tmp_path / "s", 2)
    train(cfg, **QUIET)
    sp = Path(cfg.resolved_state_dir()) / "state.safetensors"
    data = sp.read_bytes()
    sp.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(TrainingError, match="unusable.*delete it"):
        train(small(folder, tmp_path / "s", 4), **QUIET)
    rc = cli.main(["train", str(folder), "-o", str(tmp_path / "s"), "--crop", "32", "--batch",
                   "2", "--steps", "4", "--ch-mult", "1,2", "--res-blocks", "1",
                   "--save-every", "2", "--warmup", "2", "--lr", "1e-3", "--seed", "3",
                   "--log-every", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "unusable" in err and "Traceback" not in err


def test_cause10_unreadable_image_is_skipped(folder, tmp_path):
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    logs = []
    train(small(folder, tmp_path / "u", 1), progress=False, log=logs.append)
    assert any("skipped 1 unreadable image" in m for m in logs)
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="could be read"):
        train(small(only_bad, tmp_path / "u2", 1), **QUIET)


def test_cause10_divergence_and_bad_lr(folder, tmp_path, capsys):
    with pytest.raises(ParameterError, match="lr must be"):
        train(small(folder, tmp_path / "i", 2, lr=float("inf")), **QUIET)
    with pytest.raises(ParameterError, match="lr must be"):
        train(small(folder, tmp_path / "i", 2, lr=float("nan")), **QUIET)
    rc = cli.main(["train", str(folder), "-o", str(tmp_path / "d"), "--crop", "32", "--batch",
                   "2", "--steps", "50", "--ch-mult", "1,2", "--res-blocks", "1", "--lr", "1e6"])
    err = capsys.readouterr().err
    assert rc == 2 and ("diverged" in err or "lr must be" in err) and "Traceback" not in err


def test_cause10_divergence_is_a_training_error(folder, tmp_path, monkeypatch):
    """A loss that turns NaN stops training with TrainingError; the saved state is kept."""
    import dmir.train as tr

    calls = {"n": 0}
    real = tr.CropSampler.sample

    def poisoned(self, generator):          # batch 2: samples 7, 8 are those of step 4
        calls["n"] += 1
        x = real(self, generator)
        return x * float("nan") if calls["n"] > 6 else x

    monkeypatch.setattr(tr.CropSampler, "sample", poisoned)
    cfg = small(folder, tmp_path / "n", 10)
    with pytest.raises(TrainingError, match="diverged at step 4"):
        train(cfg, **QUIET)
    _, meta = load_state(str(Path(cfg.resolved_state_dir()) / "state.safetensors"))
    assert meta["step"] == 2


def test_cause17_16bit_gray_images_are_not_white(tmp_path):
    """Cause 17: 16-bit grayscale training images keep their values (PIL clipped them)."""
    d = tmp_path / "g16"
    d.mkdir()
    a = np.full((40, 40), 30000, dtype=np.uint16)       # ≈ 0.458 of full range
    Image.fromarray(a).save(d / "g.png")
    s = CropSampler([str(d / "g.png")], 32)
    x = s.batch(1, torch.Generator().manual_seed(0))
    assert x.shape == (1, 3, 32, 32)
    assert (x + 1).mul(127.5).mean().item() == pytest.approx(30000 / 65535 * 255, abs=1)


def test_cause20_resume_with_other_settings_is_refused(folder, tmp_path):
    train(small(folder, tmp_path / "r", 2), **QUIET)
    for change in ({"batch": 3}, {"lr": 5e-4}, {"seed": 4}, {"prediction": "epsilon"},
                   {"data": [str(folder / "sub")]}):
        with pytest.raises(ParameterError, match=f"other settings.*{next(iter(change))}"):
            train(small(folder, tmp_path / "r", 4, **change), **QUIET)
    train(small(folder, tmp_path / "r", 4), **QUIET)   # the same settings resume


def test_cause20_loss_history_survives_any_save_interval(folder, tmp_path):
    straight = small(folder, tmp_path / "h1", 6, log_every=2, save_every=3)
    train(straight, **QUIET)
    train(small(folder, tmp_path / "h2", 3, log_every=2, save_every=3), **QUIET)
    train(small(folder, tmp_path / "h2", 6, log_every=2, save_every=3), **QUIET)
    h1 = json.loads((tmp_path / "h1" / "loss.json").read_text())
    h2 = json.loads((tmp_path / "h2" / "loss.json").read_text())
    assert [h[0] for h in h2] == [2, 4, 6]
    assert h1 == h2


def test_state_file_holds_no_pickle(folder, tmp_path):
    cfg = small(folder, tmp_path / "st", 2)
    train(cfg, **QUIET)
    path = Path(cfg.resolved_state_dir()) / "state.safetensors"
    tensors, meta = load_state(str(path))
    assert meta["step"] == 2 and any(k.startswith("opt.") for k in tensors)
    save_state(str(tmp_path / "x.safetensors"), {"a": torch.ones(2)}, {"version": 1})
    t, m = load_state(str(tmp_path / "x.safetensors"))
    assert torch.equal(t["a"], torch.ones(2)) and m == {"version": 1}


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
    # cause 24: an input error leaves no (empty) output folder behind
    assert not (tmp_path / "o").exists()
    # cause 24: an attention resolution that never occurs is refused, not ignored
    with pytest.raises(ParameterError, match=r"never occur.*\[32, 16\]"):
        train(small(folder, tmp_path / "a", 2, attn_resolutions=[8]), **QUIET)
    train(small(folder, tmp_path / "d", 2), **QUIET)
    other = small(folder, tmp_path / "d", 4)
    other.ch_mult = [1, 2, 2]
    with pytest.raises(ParameterError, match="another architecture"):
        train(other, **QUIET)


def test_cli_train(folder, tmp_path, capsys):
    rc = cli.main(["train", str(folder), "-o", str(tmp_path / "t"), "--crop", "32", "--batch",
                   "2", "--steps", "2", "--ch-mult", "1,2", "--res-blocks", "1"])
    assert rc == 0
    assert (tmp_path / "t" / "model" / "model.safetensors").exists()
    rc = cli.main(["train", str(folder), "-o", str(tmp_path / "u"), "--ch-mult", "1,x"])
    err = capsys.readouterr().err
    assert rc == 2 and "--ch-mult takes comma-separated integers" in err
    assert not (tmp_path / "u").exists()


def test_cli_train_with_a_closed_stderr(folder, tmp_path, monkeypatch):
    """A detached stderr (closed: isatty() raises ValueError) neither crashes `dmir train` nor
    switches on the progress bar; it trains and writes the model."""
    closed = io.StringIO()
    closed.close()
    with pytest.raises(ValueError):
        closed.isatty()
    monkeypatch.setattr(sys, "stderr", closed)
    rc = cli.main(["train", str(folder), "-o", str(tmp_path / "c"), "--crop", "32", "--batch",
                   "2", "--steps", "1", "--ch-mult", "1,2", "--res-blocks", "1"])
    assert rc == 0
    assert (tmp_path / "c" / "model" / "model.safetensors").exists()


def test_no_ema_warmup_starts_the_average_at_the_init_weights(folder, tmp_path):
    """With --no-ema-warmup the EMA after n steps is 0.999ⁿ·init + the rest from training: two
    steps of lr 1e-3 move it at most ~2e-3·lr from the init; with the warm-up it follows the
    trained weights (rate (1+n)/(10+n) = 0.18, 0.25)."""
    first = train(small(folder, tmp_path / "i", 2, prediction="epsilon"), **QUIET)
    w0 = read_safetensors(Path(first) / "model.safetensors")

    def drift(out, **kw):
        m = train(small(folder, tmp_path / out, 2, init=first, prediction="epsilon", **kw),
                  **QUIET)
        w = read_safetensors(Path(m) / "model.safetensors")
        return max(float((w[k] - w0[k]).abs().max()) for k in w0)

    no_warm, warm = drift("nw", ema_warmup=False), drift("w")
    assert no_warm < 1e-5 and warm > 100 * no_warm, (no_warm, warm)
    # a setting of the run: resuming with the other choice is refused
    with pytest.raises(ParameterError, match="ema_warmup"):
        train(small(folder, tmp_path / "nw", 3, init=first, prediction="epsilon"), **QUIET)


def test_timestep_expert_trains_and_validates_with_its_base(folder, tmp_path):
    """--timesteps 500:1000 with --val-base: validation scores the combined prior (the base
    below 500, the expert above), and the exported expert is an ordinary model folder."""
    base = train(small(folder, tmp_path / "b", 2, prediction="epsilon"), **QUIET)
    logs = []
    out = train(small(folder, tmp_path / "x", 2, timesteps=[500, 1000], val_base=base,
                      val=[str(folder)], val_every=2, val_images=1, val_size=32, val_steps=3),
                progress=False, log=logs.append)
    assert sum("held-out gain" in m for m in logs) == 2
    from dmir.models import experts

    experts.save_folder(str(tmp_path / "pair"), [(base, (0, 500)), (out, (500, 1000))])
    p = models.load(str(tmp_path / "pair"))
    assert [e["prediction"] for e in p.info["experts"]] == ["epsilon", "v_prediction"]


def test_resume_with_another_validation_protocol_restarts_the_best(folder, tmp_path):
    """Scores of two validation protocols (here 32² and 64² crops) are not comparable: a run
    resumed with another --val-size validates at once under the new protocol, its best restarts
    there, and the earlier best weights move to best-step<N>; the same protocol again changes
    nothing."""
    kw = {"val": [str(folder)], "val_every": 2, "val_images": 1, "val_steps": 3}
    out = tmp_path / "p"
    train(small(folder, out, 2, val_size=32, **kw), **QUIET)
    old = json.loads((out / "best" / "config.json").read_text())["training"]["step"]
    logs = []
    train(small(folder, out, 4, val_size=64, **kw), progress=False, log=logs.append)
    val = json.loads((out / "val.json").read_text())
    assert [(v["step"], v["protocol"]["size"]) for v in val] == [(0, 32), (2, 32), (2, 64),
                                                                  (4, 64)]
    assert all(v["protocol"]["folders"] == [str(folder.resolve())] for v in val)
    assert sum("the validation protocol changed (size 32 → 64)" in m for m in logs) == 1
    best = max(val[2:], key=lambda v: v["score"])
    assert json.loads((out / "best" / "config.json").read_text())["training"]["step"] == \
        best["step"]
    assert (out / f"best-step{old}" / "model.safetensors").is_file()
    logs.clear()
    train(small(folder, out, 6, val_size=64, **kw), progress=False, log=logs.append)
    assert not any("protocol changed" in m for m in logs)
    assert [v["step"] for v in json.loads((out / "val.json").read_text())] == [0, 2, 2, 4, 6]


def test_validation_entries_from_older_states_get_the_stored_protocol(tmp_path):
    """A state saved before protocols were recorded: its entries and best take the stored
    run's protocol; a run without --val keeps the best, since it compares nothing."""
    stored = {"val": ["v"], "val_images": 2, "val_size": 128, "val_steps": 20, "seed": 0}
    same, other = validation_protocol(stored), validation_protocol({**stored, "val_size": 256})
    logs = []
    hist, best = [{"step": 0, "score": 1.0}], {"step": 0, "score": 1.0}
    assert resume_validation(hist, best, stored, same, str(tmp_path), logs.append) is best
    assert hist[0]["protocol"] == same and same["folders"] == [os.path.abspath("v")]
    assert resume_validation(hist, dict(best), stored, validation_protocol({}), str(tmp_path),
                             logs.append) is not None
    assert resume_validation(hist, dict(best), stored, other, str(tmp_path), logs.append) is None
    assert logs == ["the validation protocol changed (size 128 → 256): earlier scores (best "
                    "+1.000 at step 0) are not comparable, so the best restarts under the new "
                    "one"]


def test_progress_lines_give_step_loss_and_rate_for_a_log_file():
    """Without a terminal the bar becomes a plain line at most every `every_s` seconds, whose
    rate counts the steps since the previous line over the wall time between them."""
    from dmir.train_steps import ProgressLines

    now = [100.0]
    lines = []
    p = ProgressLines(lines.append, total=1000, initial=40, every_s=300, clock=lambda: now[0])
    for _ in range(29):                        # 29 steps in 290 s: too early for a line
        now[0] += 10
        p.update(1)
        p.set_postfix(loss="0.2000")
    assert lines == []
    now[0] += 10                               # 30 steps in 300 s: one line, 6 steps/min
    p.update(1)
    p.set_postfix(loss="0.1900")
    assert lines == ["step 70/1,000: loss 0.1900, 6.0 steps/min over the last 5.0 min"]
    now[0] += 299
    p.update(1)
    p.set_postfix(loss="0.1800")
    assert len(lines) == 1                     # the interval restarts at the line
    now[0] += 1
    p.update(1)
    p.set_postfix(loss="0.1700")
    assert lines[-1] == "step 72/1,000: loss 0.1700, 0.4 steps/min over the last 5.0 min"


def test_training_without_a_terminal_logs_plain_progress_lines(folder, tmp_path, monkeypatch):
    import dmir.train_steps as ts

    monkeypatch.setattr(ts, "PROGRESS_EVERY_S", 0.0)
    logs = []
    train(small(folder, tmp_path / "p", 3), progress=False, log=logs.append)
    lines = [m for m in logs if re.fullmatch(r"step \d/3: loss \d\.\d{4}, [\d.]+ steps/min over "
                                             r"the last [\d.]+ min", m)]
    assert [m.split(":")[0] for m in lines] == ["step 1/3", "step 2/3", "step 3/3"], logs
