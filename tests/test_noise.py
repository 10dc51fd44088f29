"""Noise models: units ([0, 1] pixel σ → 2σ in the model domain) and Poisson statistics."""
import pytest
import torch

from dmir import operators
from dmir.errors import ParameterError


def test_gaussian_noise_units_and_seed():
    n = operators.GaussianNoise(0.05)
    assert n.sigma_model == pytest.approx(0.1) == operators.sigma_to_model(0.05)
    assert operators.sigma_from_model(0.1) == pytest.approx(0.05)
    y = torch.zeros(4, 3, 64, 64)
    a = n(y, generator=torch.Generator().manual_seed(0))
    b = n(y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert float(a.std()) == pytest.approx(0.1, rel=0.02)      # 49k draws: s.e. 0.3%
    assert torch.equal(operators.GaussianNoise(0.0)(y), y)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ParameterError, match=r"\[0, 1\]"):
            operators.GaussianNoise(bad)


def test_poisson_noise_statistics():
    peak = 50.0
    n = operators.PoissonNoise(peak)
    v = 0.3                                       # intensity in [0, 1] units
    y = torch.full((200000,), 2 * v - 1)
    out = n(y, generator=torch.Generator().manual_seed(1))
    v_out = (out + 1) / 2
    assert float(v_out.mean()) == pytest.approx(v, abs=3e-3)
    # shot noise: variance v/peak in [0, 1] units, counts are integers
    assert float(v_out.var()) == pytest.approx(v / peak, rel=0.02)
    assert torch.allclose(v_out * peak, (v_out * peak).round(), atol=1e-3)
    assert n.sigma_equivalent == pytest.approx((0.5 / peak) ** 0.5)
    with pytest.raises(ParameterError):
        operators.PoissonNoise(0)
