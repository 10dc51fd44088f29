"""Cons (‖A x̂ − y‖₁ in [0, 1] units), NFE counting and timing."""
import torch
import pytest

from dmir import metrics, models, operators, solvers
from dmir.errors import ParameterError, ShapeError


def _clean(seed=0, shape=(2, 3, 16, 16)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


def test_consistency_colorization():
    op = operators.build("colorization", (3, 16, 16))
    x = _clean()
    y = op.A(x)
    assert metrics.consistency(x, y, op) == pytest.approx(0.0, abs=1e-12)   # same ops, same bits
    # a colour change that keeps the gray value is invisible to Cons
    d = torch.zeros_like(x)
    d[:, 0], d[:, 1] = 0.1, -0.1
    xs = x * 0.5
    assert metrics.consistency(xs + d, op.A(xs), op) < 2e-3     # weights 1/3 to 4 decimals
    # a gray shift of δ (model units) everywhere: ℓ1 = H·W·δ/2 in [0, 1] units
    x2 = (x * 0.5) + 0.02
    y2 = op.A(x * 0.5)
    per = metrics.consistency(x2, y2, op, reduction="none")
    assert per.shape == (2,)
    torch.testing.assert_close(per, torch.full((2,), 16 * 16 * 0.01, dtype=torch.float64),
                               rtol=1e-5, atol=0)
    assert metrics.consistency(x2, y2, op, per_entry=True) == pytest.approx(0.01, rel=1e-5)
    assert metrics.consistency(x2, y2, op, norm="l2") == pytest.approx(16 * 0.01, rel=1e-5)
    assert metrics.consistency(x2, y2, op, norm="l2", per_entry=True) == pytest.approx(0.01, rel=1e-5)
    # callables work too; x̂ is clamped to [-1, 1] like a written file unless clamp=False
    assert metrics.consistency(x2, y2, op.A) == pytest.approx(metrics.consistency(x2, y2, op))
    big = x.clone()
    big[:, :, 0, 0] = 3.0
    assert metrics.consistency(big, op.A(big), op) > 0
    assert metrics.consistency(big, op.A(big), op, clamp=False) == pytest.approx(0, abs=1e-9)
    q = metrics.consistency(x, y, op, uint8=True, per_entry=True)
    assert 0 < q < 1 / 255                                     # 8-bit rounding only


def test_consistency_errors():
    op = operators.build("colorization", (3, 16, 16))
    x = _clean()
    with pytest.raises(ParameterError, match="'l1' or 'l2'"):
        metrics.consistency(x, op.A(x), op, norm="linf")
    with pytest.raises(ShapeError, match="y has"):
        metrics.consistency(x, op.A(x)[:, :, :8], op)


def test_nfe_counter_and_timer():
    op = operators.build("sr_averagepooling", (3, 16, 16), scale=2)
    prior = models.GaussianPrior(mean=torch.zeros(3, 16, 16), var=0.25)
    solver = solvers.build("ddnm", prior, op, steps=7, eta=0.85)
    y = op.A(_clean())
    with metrics.NFECounter(prior) as c:
        x, secs = metrics.timed(solver.sample, y, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 16, 16) and secs > 0
    assert c.calls == 7 == solver.nfe
    assert c.images == 14 and c.per_image(2) == 7
    assert "eps" not in vars(prior)                 # the wrapper is removed afterwards
    with metrics.NFECounter(prior) as c2:
        prior.eps(y.new_zeros(3, 3, 16, 16), 10)
    assert (c2.calls, c2.images) == (1, 3)
