"""Issue 23, points 6 and 7: :func:`dmir.pipeline.restore` takes images as people have them
(PIL, numpy H×W×C uint8/float, tensors C×H×W and B×C×H×W, [0, 1] or [-1, 1]) and gives the
result back in the same form; ``generator=``; task parameters in ``task_params`` or as
keywords, any other keyword named; a progress bar only on a terminal; and the typed entry
points (``models.load``, ``solvers.build``) make a user's misuse fail ``mypy --strict``.
The analytic ``natural`` prior with a few steps keeps it fast: every assertion compares
numbers that a wrong conversion would change."""
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import inputs, pipeline, solvers
from dmir.errors import InputError, ParameterError, UnknownKeywordError

ROOT = Path(__file__).resolve().parents[1]
FAST = dict(model="natural", method="ddnm", steps=3, seed=1)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", solvers.FewStepsWarning)
        yield


@pytest.fixture(scope="module")
def photo_u8():
    """A 16×16 RGB crop of a real photo, H×W×3 uint8."""
    im = Image.open(ROOT / "tests" / "data" / "kodim05_crop64.png").convert("RGB")
    return np.asarray(im.crop((20, 20, 36, 36))).copy()


def _reference(photo_u8, task="sr_averagepooling", **kw):
    """The same restoration through dmir's own convention: (1, C, H, W) in [-1, 1]."""
    x = torch.from_numpy(photo_u8).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    params = {"scale": 2} if task == "sr_averagepooling" else {}
    return pipeline.restore(x, task, input_range="model", **params, **FAST, **kw)


def test_pil_in_pil_out(photo_u8):
    ref = _reference(photo_u8)
    r = pipeline.restore(Image.fromarray(photo_u8), "sr_averagepooling", scale=2, **FAST)
    assert isinstance(r.image, Image.Image) and r.image.size == (32, 32)
    assert r.image.mode == "RGB"
    want = np.rint(((ref.x[0].clamp(-1, 1) + 1) / 2 * 255).permute(1, 2, 0).numpy())
    assert np.abs(np.asarray(r.image).astype(int) - want.astype(int)).max() <= 1


def test_pil_gray_in_gray_out(photo_u8):
    g = Image.fromarray(photo_u8).convert("L")
    r = pipeline.restore(g, "denoising", **FAST)
    assert isinstance(r.image, Image.Image) and r.image.mode == "L" and r.image.size == (16, 16)


def test_numpy_hwc_uint8_and_float(photo_u8):
    ref = _reference(photo_u8)
    r8 = pipeline.restore(photo_u8, "sr_averagepooling", scale=2, **FAST)
    assert r8.image.dtype == np.uint8 and r8.image.shape == (32, 32, 3)
    rf = pipeline.restore(photo_u8.astype(np.float32) / 255, "sr_averagepooling", scale=2,
                          **FAST)
    assert rf.image.dtype == np.float32 and rf.image.shape == (32, 32, 3)
    assert 0.0 <= rf.image.min() and rf.image.max() <= 1.0
    want = ((ref.x[0].clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    assert np.abs(rf.image - want).max() < 1e-5
    assert np.abs(r8.image.astype(float) / 255 - want).max() <= 0.5 / 255 + 1e-6


def test_tensor_chw_unit_and_model_ranges(photo_u8):
    ref = _reference(photo_u8)
    unit = torch.from_numpy(photo_u8).permute(2, 0, 1).float() / 255        # torchvision
    r = pipeline.restore(unit, "sr_averagepooling", scale=2, input_range="unit", **FAST)
    assert tuple(r.image.shape) == (3, 32, 32)
    assert torch.allclose(r.image, (ref.x[0].clamp(-1, 1) + 1) / 2, atol=1e-6)
    rm = pipeline.restore(unit * 2 - 1, "sr_averagepooling", scale=2, input_range="model",
                          **FAST)
    assert torch.allclose(rm.image, ref.x[0].clamp(-1, 1), atol=1e-6)


def test_a_unit_tensor_without_input_range_warns(photo_u8):
    unit = torch.from_numpy(photo_u8).permute(2, 0, 1).float() / 255
    with pytest.warns(inputs.RangeWarning, match="input_range='unit'"):
        pipeline.restore(unit, "denoising", **FAST)
    with warnings.catch_warnings():
        warnings.simplefilter("error", inputs.RangeWarning)      # declared: no warning
        pipeline.restore(unit, "denoising", input_range="model", **FAST)
        pipeline.restore(unit * 2 - 1, "denoising", **FAST)      # spans [-1, 1]: no warning


def test_bchw_batch_is_restored_together_and_matches_one_by_one(photo_u8):
    a = torch.from_numpy(photo_u8).permute(2, 0, 1).float() / 255 * 2 - 1
    b = a.flip(-1)
    batch = pipeline.restore(torch.stack([a, b]), "sr_averagepooling", scale=2, **FAST)
    assert tuple(batch.image.shape) == (2, 3, 32, 32) and batch.x.shape[0] == 2
    # every image of the batch satisfies its own measurement (DDNM, no noise: A x = y),
    # not its neighbour's, and equals the image restored alone (same seed, same stream
    # for a batch of one: only the first)
    pool = torch.nn.functional.avg_pool2d
    for i, src in enumerate((a, b)):
        other = b if i == 0 else a
        assert float((pool(batch.x[i:i + 1], 2) - src).abs().max()) < 1e-4
        assert float((pool(batch.x[i:i + 1], 2) - other).abs().mean()) > 0.05
    alone = pipeline.restore(a[None], "sr_averagepooling", scale=2, **FAST)
    assert alone.x.shape == (1, 3, 32, 32)
    listed = pipeline.restore([Image.fromarray(photo_u8)] * 2, "denoising", **FAST)
    assert isinstance(listed.image, list) and len(listed.image) == 2


def test_generator_is_accepted_and_equals_seed(photo_u8):
    x = torch.from_numpy(photo_u8).permute(2, 0, 1).float() / 255
    kw = {k: v for k, v in FAST.items() if k != "seed"}
    a = pipeline.restore(x, "denoising", input_range="unit", sigma_y=0.1, seed=7, **kw)
    b = pipeline.restore(x, "denoising", input_range="unit", sigma_y=0.1,
                         generator=torch.Generator().manual_seed(7), **kw)
    c = pipeline.restore(x, "denoising", input_range="unit", sigma_y=0.1, seed=8, **kw)
    assert torch.equal(a.image, b.image) and not torch.equal(a.image, c.image)
    with pytest.raises(ParameterError, match="either seed= or generator="):
        pipeline.restore(x, "denoising", input_range="unit", seed=3,
                         generator=torch.Generator(), **kw)
    with pytest.raises(ParameterError, match="torch.Generator"):
        pipeline.restore(x, "denoising", input_range="unit", generator=7, **kw)


def test_unknown_keyword_is_named_as_a_keyword_of_restore(photo_u8):
    with pytest.raises(UnknownKeywordError, match=r"unknown keyword 'num_inference_steps' "
                                                  r"\(did you mean steps=\?\)"):
        pipeline.restore(photo_u8, "sr_bicubic_aa", scale=2, num_inference_steps=20)
    with pytest.raises(TypeError):                   # it is also a TypeError, as in Python
        pipeline.restore(photo_u8, "denoising", strenght=0.5)


def test_task_params_mapping_and_keywords_agree(photo_u8):
    a = pipeline.restore(photo_u8, "sr_averagepooling", task_params={"scale": 2}, **FAST)
    b = pipeline.restore(photo_u8, "sr_averagepooling", scale=2, **FAST)
    assert np.array_equal(a.image, b.image)
    with pytest.raises(ParameterError, match="'zoom'"):
        pipeline.restore(photo_u8, "sr_averagepooling", task_params={"zoom": 2}, **FAST)
    with pytest.raises(ParameterError, match="both"):
        pipeline.restore(photo_u8, "sr_averagepooling", scale=2, task_params={"scale": 2},
                         **FAST)


def test_output_type_converts(photo_u8):
    r = pipeline.restore(photo_u8, "denoising", output_type="pil", **FAST)
    assert isinstance(r.image, Image.Image)
    r = pipeline.restore(Image.fromarray(photo_u8), "denoising", output_type="pt", **FAST)
    assert tuple(r.image.shape) == (1, 3, 16, 16) and 0 <= float(r.image.min())
    with pytest.raises(ParameterError, match="output_type"):
        pipeline.restore(photo_u8, "denoising", output_type="jpeg", **FAST)


def test_bad_kinds_are_named():
    with pytest.raises(InputError, match="PIL image, a numpy array or a torch tensor"):
        pipeline.restore("photo.png", "denoising", **FAST)
    with pytest.raises(InputError, match="boolean"):
        pipeline.restore(np.ones((8, 8), bool), "denoising", **FAST)
    with pytest.raises(ParameterError, match="input_range"):
        pipeline.restore(np.ones((8, 8)), "denoising", input_range="percent", **FAST)


def test_progress_bar_only_on_a_terminal(photo_u8, monkeypatch, capsys):
    calls = []
    pipeline.restore(photo_u8, "denoising", progress=lambda i, n: calls.append((i, n)), **FAST)
    assert calls and calls[-1][0] == calls[-1][1]
    made = []
    real = inputs.ProgressBar.__call__

    def spy(self, i, n):
        made.append(i)
        return real(self, i, n)
    monkeypatch.setattr(inputs.ProgressBar, "__call__", spy)
    monkeypatch.setattr(inputs.ProgressBar, "wanted", staticmethod(lambda: False))
    pipeline.restore(photo_u8, "denoising", **FAST)                  # not a terminal
    assert made == []
    monkeypatch.setattr(inputs.ProgressBar, "wanted", staticmethod(lambda: True))
    pipeline.restore(photo_u8, "denoising", **FAST)                  # a terminal: the bar
    assert made and "NFE" in capsys.readouterr().err
    made.clear()
    pipeline.restore(photo_u8, "denoising", progress=None, **FAST)   # off when asked
    assert made == []


# ----------------------------------------------------------------------------- point 7
USER_GOOD = '''\
import torch

from dmir import models, operators, solvers
from dmir.types import Operator, Prior, Solver

prior: Prior = models.load("natural")
op: Operator = operators.build("denoising", (3, 8, 8))
solver: Solver = solvers.build("ddnm", prior, op, steps=2)
y = op.A(torch.zeros(1, 3, 8, 8))
x: torch.Tensor = solver.sample(y, generator=torch.Generator().manual_seed(0))
eps: torch.Tensor = prior.eps(x, 10)
steps: int = solver.steps + prior.num_timesteps
'''

USER_BAD = '''\
import torch

from dmir import models, operators, solvers

prior = models.load("natural")
op = operators.build("denoising", (3, 8, 8))
solver = solvers.build("ddnm", prior, op, steps=2)
y = op.A(torch.zeros(1, 3, 8, 8))
eps = prior.eps(y)                                  # 9: t is missing
x = solver.sample(y, generater=torch.Generator())   # 10: misspelt keyword
name: str = solver.steps                            # 11: an int
other = solvers.build("ddnm", "natural", op)        # 12: a name, not a loaded prior
again = models.load(5)                              # 13: not a path
'''


def test_mypy_strict_catches_a_users_misuse(tmp_path):
    pytest.importorskip("mypy", reason="mypy is a test extra: pip install -e '.[test]'")
    (tmp_path / "user_good.py").write_text(USER_GOOD)
    (tmp_path / "user_bad.py").write_text(USER_BAD)
    cache = os.path.join(tempfile.gettempdir(), "dmir-mypy-strict-cache")
    env = dict(os.environ, MYPYPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
                        "--cache-dir", cache, "--no-color-output", "--no-error-summary",
                        "user_good.py", "user_bad.py"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=900)
    errors = [ln for ln in r.stdout.splitlines() if ": error:" in ln]
    assert not [e for e in errors if e.startswith("user_good.py")], r.stdout
    lines = sorted({int(m.group(1)) for e in errors
                    if (m := re.match(r"user_bad\.py:(\d+): error", e))})
    assert lines == [9, 10, 11, 12, 13], r.stdout + r.stderr
