"""The weight files users of the usual packages already have, read into dmir's layouts.

An alternative to ``dmir metrics setup`` when the files are on disk already:

* LPIPS trunk — torchvision's ImageNet state dicts, as torch.hub saves them:
  ``alexnet-owt-7be5be79.pth`` (AlexNet, ``features.{0,3,6,8,10}.*``) and
  ``vgg16-397923af.pth`` (VGG16, ``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.*``); the
  ``classifier.*`` tensors are ignored. Default: torch.hub's checkpoints folder
  (:func:`dmir.cache.torch_hub_dir`).
* LPIPS heads — the ``lpips`` package's linear layers ``lpips/weights/v0.1/{alex,vgg}.pth``
  (``lin{k}.model.1.weight``). Default: the installed ``lpips`` package's folder (found
  without importing it, so torchvision is not needed).
* FID — pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (the TF FID Inception in
  torchvision's ``inception_v3`` names: ``Conv2d_1a_3x3.conv.weight``, ``….bn.{weight,bias,
  running_mean,running_var}``, ``Mixed_5b.branch1x1…`` …; ``fc.*`` is ignored). Its batch-norm
  scale γ is folded into the conv weight and mean (dmir's layer has β only; γ is 1 in the
  published file, so the fold is exact there).

Files are read with :func:`dmir.models.checkpoint.read_checkpoint` (weights-only, no pickled
code runs); every tensor's shape is checked against the network, and a file with other keys or
shapes is refused with a message naming the file and what was expected.
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping

import torch

from ..errors import DmirError
from ..log import get_logger

__all__ = ["lpips_state_dict", "fid_state_dict", "TORCHVISION_FILES", "PYTORCH_FID_FILE",
           "LPIPS_TRUNK_INDICES", "FID_BLOCKS", "default_trunk", "default_heads",
           "StandardWeightsError"]

_log = get_logger(__name__)

#: torch.hub file names of torchvision's ImageNet weights
TORCHVISION_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
#: pytorch-fid's Inception weights (its FID_WEIGHTS_URL file name)
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
#: the ``features.N`` conv indices of torchvision's AlexNet / VGG16, in dmir's ``convs`` order
LPIPS_TRUNK_INDICES = {"alex": (0, 3, 6, 8, 10),
                       "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}


class StandardWeightsError(DmirError):
    """A standard weight file that is missing or does not hold what it should."""


def _read(path) -> Mapping:
    from ..models.checkpoint import CheckpointError, read_checkpoint
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise StandardWeightsError(f"weight file {path!r} does not exist")
    try:
        obj = read_checkpoint(path)
    except CheckpointError as e:
        raise StandardWeightsError(str(e)) from None
    if not isinstance(obj, Mapping):
        raise StandardWeightsError(f"{path!r} holds a {type(obj).__name__}, not a state dict")
    return {(k[7:] if isinstance(k, str) and k.startswith("module.") else k): v
            for k, v in obj.items()}


def _check(sd: dict, net: torch.nn.Module, what: str) -> dict:
    want = net.state_dict()
    missing = sorted(set(want) - set(sd))
    if missing:
        raise StandardWeightsError(f"{what}: missing {len(missing)} tensor(s), e.g. "
                                   f"{', '.join(missing[:3])}")
    bad = [f"{k} {tuple(sd[k].shape)} (expected {tuple(want[k].shape)})" for k in want
           if tuple(sd[k].shape) != tuple(want[k].shape)]
    if bad:
        raise StandardWeightsError(f"{what}: wrong shapes: {'; '.join(bad[:3])}")
    return {k: sd[k].detach().to(torch.float32).contiguous() for k in want}


# ----------------------------------------------------------------------------- LPIPS
def default_trunk(net: str) -> str:
    """torch.hub's copy of torchvision's AlexNet / VGG16 weights."""
    from ..cache import torch_hub_dir
    return os.path.join(torch_hub_dir(), TORCHVISION_FILES[net])


def default_heads(net: str) -> str | None:
    """``lpips/weights/v0.1/<net>.pth`` of the installed ``lpips`` package (not imported)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "weights", "v0.1",
                        f"{net}.pth")


def lpips_state_dict(net: str, trunk=None, heads=None) -> dict[str, torch.Tensor]:
    """dmir's LPIPS state dict from torchvision's trunk weights and the lpips package's heads
    (defaults: :func:`default_trunk`, :func:`default_heads`)."""
    from .lpips import NETS, LPIPSNetwork
    if net not in NETS:
        raise StandardWeightsError(f"LPIPS net must be one of {', '.join(NETS)}, got {net!r}")
    trunk = os.fspath(trunk) if trunk is not None else default_trunk(net)
    heads = os.fspath(heads) if heads is not None else default_heads(net)
    if heads is None:
        raise StandardWeightsError(f"LPIPS heads: pass heads= (the lpips package's "
                                   f"weights/v0.1/{net}.pth); the lpips package is not installed")
    t, h = _read(trunk), _read(heads)
    sd = {}
    for i, idx in enumerate(LPIPS_TRUNK_INDICES[net]):
        for p in ("weight", "bias"):
            if f"features.{idx}.{p}" in t:
                sd[f"convs.{i}.{p}"] = t[f"features.{idx}.{p}"]
    for k in range(5):
        if f"lin{k}.model.1.weight" in h:
            sd[f"lins.{k}.weight"] = h[f"lin{k}.model.1.weight"]
    _log.debug("LPIPS-%s from %s and %s", net, trunk, heads)
    return _check(sd, LPIPSNetwork(net, init=False),
                  f"LPIPS-{net} from {trunk!r} (torchvision {TORCHVISION_FILES[net]} layout) and "
                  f"{heads!r} (lpips v0.1 heads)")


# ----------------------------------------------------------------------------- FID
#: dmir (TF-archive) block name → torchvision name, and per block dmir conv → torchvision conv
FID_BLOCKS = {
    "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3",
    "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
      "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
      "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
      "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
      "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      "tower_1.conv": "branch7x7x3_1", "tower_1.conv_1": "branch7x7x3_2",
      "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
      "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
      "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
_BLOCK_CONVS = {"mixed": _A, "mixed_1": _A, "mixed_2": _A, "mixed_3": _B, "mixed_4": _C,
                "mixed_5": _C, "mixed_6": _C, "mixed_7": _C, "mixed_8": _D, "mixed_9": _E,
                "mixed_10": _E}


def fid_conv_names() -> dict[str, str]:
    """dmir conv-layer prefix (``layers.mixed_4.tower_1.conv_2``) → torchvision prefix
    (``Mixed_6b.branch7x7dbl_3``), for all 94 conv + batch-norm layers."""
    out = {}
    for blk, tv in FID_BLOCKS.items():
        if blk in _BLOCK_CONVS:
            for conv, tvc in _BLOCK_CONVS[blk].items():
                out[f"layers.{blk}.{conv}"] = f"{tv}.{tvc}"
        else:
            out[f"layers.{blk}"] = tv
    return out


def fid_state_dict(path=None) -> dict[str, torch.Tensor]:
    """dmir's FID Inception state dict from pytorch-fid's ``pt_inception-2015-12-05-*.pth``
    (default: torch.hub's checkpoints folder, where pytorch-fid downloads it)."""
    from ..cache import torch_hub_dir
    from .fid import InceptionV3
    path = os.fspath(path) if path is not None else os.path.join(torch_hub_dir(),
                                                                 PYTORCH_FID_FILE)
    src = _read(path)
    sd = {}
    for mine, tv in fid_conv_names().items():
        keys = {n: f"{tv}.{n}" for n in ("conv.weight", "bn.weight", "bn.bias",
                                         "bn.running_mean", "bn.running_var")}
        if not all(k in src for k in keys.values()):
            continue                      # reported as missing by _check
        w = src[keys["conv.weight"]].to(torch.float64)
        gamma = src[keys["bn.weight"]].to(torch.float64)
        sd[f"{mine}.weight"] = (w * gamma.view(-1, 1, 1, 1)).float()
        sd[f"{mine}.mean"] = (src[keys["bn.running_mean"]].to(torch.float64) * gamma).float()
        sd[f"{mine}.var"] = src[keys["bn.running_var"]]
        sd[f"{mine}.beta"] = src[keys["bn.bias"]]
    return _check(sd, InceptionV3(init=False),
                  f"FID Inception from {path!r} (pytorch-fid {PYTORCH_FID_FILE} layout)")
