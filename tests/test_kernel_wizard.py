"""The nonlinear-deblur forward model: the bkse KernelWizard architecture (state-dict names of
the release, so GOPRO_wVAE.pth loads), its loader, and NonlinearBlur with DPS/DCDP."""
import pytest
import torch

from dmir import models, solvers
from dmir.errors import ParameterError, ShapeError
from dmir.models.nets.kernel_wizard import GOPRO_WVAE, KernelWizard, load_kernel_wizard
from dmir.operators import NonlinearBlur

TINY = {"nf": 8, "kernel_dim": 64, "front_RBs": 1, "back_RBs": 1, "n_blocks": 1}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_gopro_architecture_has_the_release_names_and_shapes():
    """Built on the meta device (no memory): the keys and shapes the GOPRO_wVAE.pth state dict
    has under the release's module names (read off the release's constructors)."""
    with torch.device("meta"):
        net = KernelWizard()
    sd = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expect = {
        "feature_extractor.0.weight": (64, 3, 3, 3),
        "feature_extractor.15.conv2.bias": (64,),                  # 10 front RBs: 6..15
        "kernel_extractor.model.1.weight": (64, 128, 7, 7),        # no bias (norm 'none')
        "kernel_extractor.model.16.weight": (1024, 1024, 3, 3),    # 5th stride-2 conv
        "kernel_extractor.model.22.conv_block.5.weight": (1024, 1024, 3, 3),
        "adapter.model.down.0.weight": (64, 64, 4, 4),
        "adapter.model.up.1.double_conv.0.weight": (64, 128, 5, 5),
        "adapter.model.submodule.submodule.submodule.submodule.down.1.weight": (512, 512, 4, 4),
        "adapter.model.submodule.submodule.submodule.submodule.up.1.double_conv.0.weight":
            (512, 1024, 5, 5),
        "recon_trunk.19.conv1.weight": (64, 64, 3, 3),             # 20 back RBs: 0..19
        "recon_trunk.20.weight": (256, 64, 3, 3),
        "recon_trunk.23.weight": (256, 64, 3, 3),
        "recon_trunk.28.weight": (3, 64, 3, 3),
    }
    for k, shape in expect.items():
        assert sd.get(k) == shape, (k, sd.get(k))
    assert "kernel_extractor.model.1.bias" not in sd and "adapter.model.down.0.bias" not in sd
    assert not any(k.startswith("adapter.model.submodule.submodule.submodule.submodule."
                                "submodule") for k in sd)                # 5 levels
    assert GOPRO_WVAE["kernel_dim"] == 8 * GOPRO_WVAE["nf"]
    with pytest.raises(ParameterError, match="kernel_dim"):
        KernelWizard({"nf": 8, "kernel_dim": 32})


def test_loader_round_trip_and_nonlinear_blur(tmp_path):
    torch.manual_seed(0)
    net = KernelWizard(TINY).eval()
    path = tmp_path / "GOPRO_tiny.pth"
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, path)   # DataParallel
    loaded = load_kernel_wizard(path, TINY)
    x = torch.rand(1, 3, 128, 128)
    k = torch.randn(1, *net.code_shape(128, 128))
    assert net.code_shape(128, 128) == (64, 1, 1)
    with torch.no_grad():
        assert torch.equal(net.adapt_kernel(x, k), loaded.adapt_kernel(x, k))
        x2 = torch.rand(1, 3, 256, 256)      # the encoder's reflect padding needs ≥ 2×2 codes
        mu, logvar = net(x2, x2)
    assert mu.shape == logvar.shape == (1, 64, 2, 2)
    with pytest.raises(ParameterError, match="does not match"):
        load_kernel_wizard(path, dict(TINY, back_RBs=2))
    op = NonlinearBlur(loaded, (3, 128, 128), seed=3)
    xm = x * 2 - 1
    y = op.A(xm)
    with torch.no_grad():
        ref = (2 * loaded.adapt_kernel(x, op.code) - 1).clamp(-1, 1)
    assert torch.equal(y, ref) and torch.equal(op.A(xm), y)          # one fixed code
    assert not torch.equal(NonlinearBlur(loaded, (3, 128, 128), seed=4).A(xm), y)
    with pytest.raises(ShapeError, match="128"):
        NonlinearBlur(loaded, (3, 96, 96))
    with pytest.raises(ParameterError, match="nonlinear"):
        solvers.build("ddnm", models.GaussianPrior(torch.zeros(3, 128, 128), 0.25), op)
    # DPS takes it (gradient through the network): the release's scale, a few steps
    prior = models.GaussianPrior(torch.zeros(3, 128, 128), 0.25)
    s = solvers.build("dps", prior, op, steps=3)
    assert s.scale == 0.3
    out = s.sample(y, generator=torch.Generator().manual_seed(0))
    assert out.shape == xm.shape and bool(torch.isfinite(out).all())
    d = solvers.build("dcdp", prior, op, K=2, tau=2, purifier="tweedie")
    assert d.task == "nonlinear_deblur" and d.T_end == 50
