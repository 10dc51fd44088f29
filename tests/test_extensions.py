"""Public extension points: a user's operator, solver and checkpoint format, registered once,
are reachable from dmir.pipeline, the CLI and the bench."""
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from dmir import cli, models, operators, pipeline, solvers
from dmir import io as dio
from dmir.bench import results as res
from dmir.errors import ParameterError
from dmir.models import loading

DATA = Path(__file__).parent / "data"
BENCH = str(DATA / "bench")


def _keep_columns(shape, step=2):
    C, H, W = shape

    def A(x):
        return x[..., ::step]

    def At(y):
        out = y.new_zeros((y.shape[0], C, H, W))
        out[..., ::step] = y
        return out
    return operators.FunctionOperator(A, At, shape, (C, H, len(range(0, W, step))),
                                      name="keep_columns")


class ProjectOnly:
    """A user's 'solver': A⁺y (the baseline), with the sampler interface."""

    def __init__(self, model, op, sigma_y=0.0, steps=None, eta=None, shift=0.0):
        self.op, self.steps, self.eta, self.shift, self.nfe = op, 0, 0.0, shift, 0

    def sample(self, y, generator=None, progress=None):
        return self.op.pinv(y) + self.shift


@pytest.fixture()
def user_ext():
    operators.register("keep_columns", ["step"], "every step-th column", builder=_keep_columns)
    solvers.register("project-only", ProjectOnly, "A⁺y through the solver interface")
    yield
    operators.unregister("keep_columns")
    solvers.unregister("project-only")


def test_user_operator_and_solver_reach_the_pipeline_cli_and_bench(user_ext, tmp_path, capsys):
    assert "keep_columns" in operators.names() and "project-only" in solvers.names()
    x = dio.read_image(str(DATA / "kodim05_crop64.png"))[..., :32, :32]
    r = pipeline.restore(x, "keep_columns", step=2, degrade=True, method="project-only",
                         model="natural")
    torch.testing.assert_close(r.x, r.op.pinv(r.y))
    assert float((r.x[..., ::2] - x[..., ::2]).abs().max()) < 1e-5   # kept columns exact
    # the CLI lists and runs them
    assert cli.main(["restore", "--help"]) == 0
    out = capsys.readouterr().out
    assert "keep_columns" in out and "project-only" in out
    src = tmp_path / "clean.png"
    dio.write_image(str(src), x)
    assert cli.main(["restore", str(src), "-o", str(tmp_path / "o.png"), "--task",
                     "keep_columns", "--degrade", "--method", "project-only", "--model",
                     "natural"]) == 0
    # the bench takes them as specs, with parameters
    out = tmp_path / "b"
    assert cli.main(["bench", "--data", BENCH, "--size", "32", "--limit", "1", "--out", str(out),
                     "--no-progress", "--task", "keep_columns,step=2", "--method",
                     "project-only,shift=0.5", "--metrics", "psnr", "--model", "natural"]) == 0
    rows, _ = res.read_jsonl(os.path.join(out, res.RESULTS))
    by = {r["method"]: r for r in rows}
    assert "error" not in by["project-only"]
    assert by["project-only"]["psnr"] < by["A+y"]["psnr"] - 3      # shifted by 0.5: worse
    with pytest.raises(ParameterError, match="already registered"):
        solvers.register("ddnm", ProjectOnly)


# ----------------------------------------------------------------------------- formats
class Toy(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.toy_conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, t, y=None):         # NetworkPrior calls net(x, t, class labels)
        return self.toy_conv(x)


class ToyFormat:
    """A checkpoint format: one 3×3 convolution named toy_conv."""

    FORMAT = "toy"
    CONFIGS = {"toy-rgb": {"ch": 3}}

    @staticmethod
    def matches(keys):
        return set(keys) == {"toy_conv.weight", "toy_conv.bias"}

    @staticmethod
    def infer_config(sd, image_size=None):
        return {"ch": int(sd["toy_conv.weight"].shape[0])}, ["ch from the weights"]

    @staticmethod
    def full_config(cfg):
        return {"ch": int(cfg["ch"])}

    @staticmethod
    def build(cfg):
        return Toy(cfg["ch"])

    @staticmethod
    def prior(net, cfg, name=None, info=None, class_labels=None):
        ab = torch.linspace(0.999, 0.01, 100, dtype=torch.float64)
        return models.NetworkPrior(net, ab, name=name, info=info)


def test_registered_checkpoint_format_loads_by_path(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "_USER_FORMATS", {})
    monkeypatch.setattr(loading, "_ALIASES", dict(loading._ALIASES))
    net = Toy(3)
    path = tmp_path / "toy.safetensors"
    models.write_safetensors(net.state_dict(), str(path))
    with pytest.raises(models.CheckpointError, match="not a checkpoint of a supported format"):
        models.load(str(path))
    models.register_format(ToyFormat, aliases=["toy-net"])
    assert "toy" in models.formats()
    with pytest.warns(models.InferredConfigWarning, match="ch from the weights"):
        prior = models.load(str(path))
    assert prior.info["format"] == "toy" and isinstance(prior, models.NetworkPrior)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(prior.eps(x, 10), net(x, None))
    assert models.load(str(path), format="toy-net", config="toy-rgb").info["format"] == "toy"
    with pytest.raises(ParameterError, match="already exists"):
        models.register_format(ToyFormat)
    with pytest.raises(ParameterError, match="missing: prior"):
        models.register_format(type("Bad", (), {k: 1 for k in loading.FORMAT_PROTOCOL[:-1]}))
