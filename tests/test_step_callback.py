"""The diffusers-style step callback: ``sample(..., callback=cb)`` gets every step's x_t, x̂0
and the next state, without changing the result."""
import pytest
import torch

from dmir import models, solvers
from dmir.errors import ParameterError
from solver_helpers import small_ops


def _problem(seed=0):
    prior = models.GaussianPrior(torch.zeros(1, 8, 8), 0.25)
    op = small_ops()["inpainting"]
    g = torch.Generator().manual_seed(seed)
    y = op.A(prior.sample(2, generator=g).float())
    return prior, op, y


@pytest.mark.parametrize("method", ["ddnm", "ddnm-equs+", "dps", "ddrm"])
def test_callback_sees_every_step_and_changes_nothing(method):
    prior, op, y = _problem()
    kw = {"steps": 10} if method != "dps" else {"steps": 10, "scale": 0.3}
    s = solvers.build(method, prior, op, **kw)
    ref = s.sample(y, generator=torch.Generator().manual_seed(1))
    seen = []

    def cb(i, t, tensors):
        assert set(tensors) == {"x_t", "x0", "x_next"}
        assert all(v.shape == y.shape[:1] + op.x_shape and not v.requires_grad
                   for v in tensors.values())
        seen.append((i, t, {k: v.clone() for k, v in tensors.items()}))

    out = s.sample(y, generator=torch.Generator().manual_seed(1), callback=cb)
    assert torch.equal(out, ref)
    assert [i for i, _, _ in seen] == list(range(s.plan.nfe)) == list(range(s.nfe))
    ts = [t for _, t, _ in seen]
    assert ts == sorted(ts, reverse=True) and len(set(ts)) == len(ts)
    # the chain: each step starts where the previous one ended, the last ends at the output
    for (_, _, a), (_, _, b) in zip(seen, seen[1:]):
        assert torch.equal(a["x_next"], b["x_t"])
    assert torch.equal(seen[-1][2]["x_next"], out)
    # x̂0 sharpens towards the output: the last prediction is closer than the first
    d = [float((v["x0"] - out).norm()) for _, _, v in seen]
    assert d[-1] < 0.5 * d[0]


def test_dcdp_callback_per_outer_iteration_and_deqir_refuses():
    prior, op, y = _problem()
    s = solvers.build("dcdp", prior, op, steps=3)
    seen = []
    out = s.sample(y, generator=torch.Generator().manual_seed(0),
                   callback=lambda k, t, d: seen.append((k, t, d["x0"].clone())))
    assert [k for k, _, _ in seen] == [0, 1, 2] and torch.equal(seen[-1][2], out)
    with pytest.raises(ParameterError, match="no per-step callback"):
        solvers.build("deqir", prior, op, steps=5).sample(y, callback=lambda *a: None)
