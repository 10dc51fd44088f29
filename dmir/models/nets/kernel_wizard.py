"""The blur-kernel encoder of Tran et al., "Explore Image Deblurring via Encoded Blur Kernel
Space" (CVPR 2021; VinAIResearch/blur-kernel-space-exploring, ``models/kernel_encoding/
kernel_wizard.py``), whose ``GOPRO_wVAE.pth`` checkpoint is the forward model of the nonlinear
deblurring task of DPS (Chung et al., ICLR 2023) and DCDP: y = G(x, k), a sharp image x in
[0, 1] blurred by a network conditioned on a kernel code k.

Three parts, named as in the release so its state dict loads unchanged:

* ``feature_extractor`` — conv 3×3 (3 → nf), LeakyReLU 0.1, two stride-2 convs with LeakyReLU
  (H/4), ``front_RBs`` residual blocks without normalisation (conv–ReLU–conv + identity);
* ``kernel_extractor`` (F in the paper: (sharp, blurred) features → kernel code, not used by the
  forward model) — reflection pad 3, conv 7×7 (2nf → nf), five stride-2 convs with channels
  min(nf·2^(i+1), 2·kernel_dim), ``n_blocks`` ResNet blocks (reflect padding); with the
  checkpoint's ``norm: none`` the norms are identities and the convs have no bias;
* ``adapter`` (G: features and a code → blurred features) — a 5-level U-Net, nf → 2nf → 4nf →
  8nf → 8nf, each level conv 4×4 stride 2 down (LeakyReLU 0.2 before all but the outermost)
  and up by ReLU, two 5×5 convs with ReLU (``DoubleConv``), bilinear ×2 (align_corners) and,
  at the outermost level, tanh; the innermost level concatenates the kernel code k
  (kernel_dim = 8 nf channels at H/128 × W/128) to its features; skip connections concatenate;
* ``recon_trunk`` — ``back_RBs`` residual blocks, two (conv, PixelShuffle 2, LeakyReLU) up-steps
  and two convs back to 3 channels; the result is added to the input image.

``adapt_kernel(x, k)`` (the release's ``adaptKernel``) is the blur; inputs in [0, 1], H and W
multiples of 128 (the encoder F needs H, W ≥ 256: its ResNet blocks reflect-pad the 2×2 code).
:func:`load_kernel_wizard` reads a checkpoint (safely; a ``module.`` prefix is
stripped) into the architecture of :data:`GOPRO_WVAE` (the release's
``options/generate_blur/default.yml``).
"""
from __future__ import annotations

import torch
from torch import nn

#: the configuration of GOPRO_wVAE.pth (bkse options/generate_blur/default.yml)
GOPRO_WVAE = {"input_nc": 3, "nf": 64, "front_RBs": 10, "back_RBs": 20, "kernel_dim": 512,
              "use_vae": True, "n_blocks": 4}


class ResidualBlockNoBN(nn.Module):
    """x + conv2(relu(conv1(x))), 3×3 convs with bias."""

    def __init__(self, nf: int):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)

    def forward(self, x):
        return x + self.conv2(torch.relu(self.conv1(x)))


class ResnetBlock(nn.Module):
    """x + [pad, conv, (norm), ReLU, pad, conv, (norm)](x), reflect padding, no bias."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False), nn.Identity(),
            nn.ReLU(True), nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False),
            nn.Identity())

    def forward(self, x):
        return x + self.conv_block(x)


class DoubleConv(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.double_conv = nn.Sequential(nn.Conv2d(cin, cout, 5, padding=2), nn.ReLU(True),
                                         nn.Conv2d(cout, cout, 5, padding=2), nn.ReLU(True))

    def forward(self, x):
        return self.double_conv(x)


class UNetLevel(nn.Module):
    """One level of the adapter U-Net (the release's ``UnetSkipConnectionBlock`` with norm
    'none'): down, the inner level (or the kernel code, innermost), up; skip by concatenation
    except at the outermost level."""

    def __init__(self, outer: int, inner: int, cin: int | None = None, sub=None,
                 outermost: bool = False, innermost: bool = False):
        super().__init__()
        self.outermost, self.innermost = outermost, innermost
        conv = nn.Conv2d(outer if cin is None else cin, inner, 4, 2, 1, bias=False)
        up = [nn.ReLU(True), DoubleConv(inner * 2, outer),
              nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)]
        if outermost:
            self.down = nn.Sequential(conv)
            self.up = nn.Sequential(*up, nn.Tanh())
        elif innermost:
            self.down = nn.Sequential(nn.LeakyReLU(0.2, True), conv)
            self.up = nn.Sequential(*up, nn.Identity())
        else:
            self.down = nn.Sequential(nn.LeakyReLU(0.2, True), conv, nn.Identity())
            self.up = nn.Sequential(*up, nn.Identity())
        if not innermost:
            self.submodule = sub

    def forward(self, x, k):
        if self.innermost:
            inner = torch.cat((self.down(x), k), 1)
        else:
            inner = self.submodule(self.down(x), k)
        out = self.up(inner)
        return out if self.outermost else torch.cat((out, x), 1)


class KernelAdapter(nn.Module):
    def __init__(self, nf: int):
        super().__init__()
        level = UNetLevel(nf * 8, nf * 8, innermost=True)
        level = UNetLevel(nf * 4, nf * 8, sub=level)
        level = UNetLevel(nf * 2, nf * 4, sub=level)
        level = UNetLevel(nf, nf * 2, sub=level)
        self.model = UNetLevel(nf, nf, cin=nf, sub=level, outermost=True)

    def forward(self, x, k):
        return self.model(x, k)


class KernelExtractor(nn.Module):
    def __init__(self, nf: int, kernel_dim: int, use_vae: bool, n_blocks: int):
        super().__init__()
        self.kernel_dim, self.use_vae = kernel_dim, use_vae
        out = kernel_dim * 2 if use_vae else kernel_dim
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(nf * 2, nf, 7, bias=False), nn.Identity(),
                  nn.ReLU(True)]
        for i in range(5):
            layers += [nn.Conv2d(min(nf * 2 ** i, out), min(nf * 2 ** (i + 1), out), 3, 2, 1,
                                 bias=False), nn.Identity(), nn.ReLU(True)]
        layers += [ResnetBlock(out) for _ in range(n_blocks)]
        self.model = nn.Sequential(*layers)

    def forward(self, sharp, blur):
        out = self.model(torch.cat((sharp, blur), 1))
        if self.use_vae:       # (mean, log-variance) of the code
            return out[:, : self.kernel_dim], out[:, self.kernel_dim:]
        return out, torch.zeros_like(out)


class KernelWizard(nn.Module):
    """The release's ``KernelWizard`` (module docstring). ``config``: keys of
    :data:`GOPRO_WVAE`; kernel_dim must be 8·nf (the innermost U-Net level)."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        c = dict(GOPRO_WVAE, **(config or {}))
        nf, C = int(c["nf"]), int(c["input_nc"])
        if int(c["kernel_dim"]) != 8 * nf:
            from ...errors import ParameterError
            raise ParameterError(f"KernelWizard: kernel_dim must be 8·nf = {8 * nf}, got "
                                 f"{c['kernel_dim']}")
        self.config, self.kernel_dim = c, int(c["kernel_dim"])
        lrelu = nn.LeakyReLU(0.1)
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(C, nf, 3, 1, 1), lrelu, nn.Conv2d(nf, nf, 3, 2, 1), lrelu,
            nn.Conv2d(nf, nf, 3, 2, 1), lrelu, *[ResidualBlockNoBN(nf)
                                                 for _ in range(int(c["front_RBs"]))])
        self.kernel_extractor = KernelExtractor(nf, self.kernel_dim, bool(c["use_vae"]),
                                                int(c["n_blocks"]))
        self.adapter = KernelAdapter(nf)
        self.recon_trunk = nn.Sequential(
            *[ResidualBlockNoBN(nf) for _ in range(int(c["back_RBs"]))],
            nn.Conv2d(nf, nf * 4, 3, 1, 1), nn.PixelShuffle(2), lrelu,
            nn.Conv2d(nf, 64 * 4, 3, 1, 1), nn.PixelShuffle(2), lrelu,
            nn.Conv2d(64, 64, 3, 1, 1), lrelu, nn.Conv2d(64, C, 3, 1, 1))

    def code_shape(self, H: int, W: int) -> tuple:
        """Shape (kernel_dim, H/128, W/128) of the kernel code for an H×W image."""
        return (self.kernel_dim, H // 128, W // 128)

    def adapt_kernel(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Blur x ((B, 3, H, W) in [0, 1], H, W multiples of 128) with the kernel code k."""
        return x + self.recon_trunk(self.adapter(self.feature_extractor(x), k))

    def forward(self, sharp, blurred):
        """The kernel code (mean, log-variance) of a (sharp, blurred) pair (the encoder F)."""
        return self.kernel_extractor(self.feature_extractor(sharp),
                                     self.feature_extractor(blurred))


def load_kernel_wizard(path, config: dict | None = None, device=None) -> KernelWizard:
    """``KernelWizard(config)`` with the weights of ``path`` (e.g. GOPRO_wVAE.pth), read
    without running pickled code; a ``module.`` prefix (DataParallel) is stripped. A file that
    does not fit the architecture raises ParameterError listing the mismatches."""
    from ...checkpoints.reading import fit_state_dict, read_checkpoint

    sd = read_checkpoint(path)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items()}
    net = KernelWizard(config)
    fit_state_dict(net, sd, what=f"kernel-wizard checkpoint {path}", device=device)
    return net.eval()
