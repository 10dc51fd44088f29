"""A trained network as a prior: :class:`NetworkPrior` wraps any ``nn.Module`` noise network.

Every checkpoint format (guided-diffusion ADM, DDPM "simple" UNet, diffusers ``UNet2DModel``,
…) builds a plain ``nn.Module`` whose ``forward(x, t, y=None)`` takes

- ``x``: (B, C, H, W) in the network's input domain ([-1, 1] for all formats dmir ships),
- ``t``: (B,) float timesteps 0..T-1 of the training schedule (the reference codes feed the
  integer index as a float),
- ``y``: (B,) int64 class labels for class-conditional networks, else ``None``,

and returns its raw output: ε, or [ε, v-interpolation] stacked on channels for learned-sigma
networks (6 channels for RGB), or x̂0 / v for other parameterisations. :class:`NetworkPrior`
turns that into the model protocol of :mod:`dmir.models.base` (``eps``, ``alphas_cumprod``).
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

from ..errors import ParameterError, ShapeError
from .base import DiffusionModel, _bcast

PREDICTIONS = ("epsilon", "sample", "v_prediction")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
           "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16}


def parse_dtype(dtype) -> torch.dtype | None:
    """``None``, a torch floating dtype, or one of float32/float16/bfloat16 (and short names)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in (torch.float32, torch.float16, torch.bfloat16,
                                               torch.float64):
            raise ParameterError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        return dtype
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPES:
        raise ParameterError(f"dtype must be one of float32, float16, bfloat16, got {dtype!r}")
    return _DTYPES[key]


class NetworkPrior(DiffusionModel):
    """A noise-prediction network with its training schedule.

    Args:
        net: ``nn.Module`` with ``forward(x, t, y=None)`` (see the module docstring).
        alphas_cumprod: ᾱ_t of the training schedule, length T.
        in_channels: image channels C (the output may have 2C channels: learned sigma).
        image_size: the training resolution (int or (H, W)), informational; other sizes are
            accepted where the architecture allows (fully convolutional UNets).
        prediction: what the network predicts — ``epsilon`` (all formats by default),
            ``sample`` (x̂0) or ``v_prediction`` (v = √ᾱ ε − √(1−ᾱ) x0); converted to ε.
        learned_sigma: the output carries a second half (the variance interpolation of
            improved DDPM); ``eps`` returns the first half and :meth:`forward_raw` both.
        num_classes: for class-conditional networks; ``class_labels`` (int or (B,) tensor) is
            then required, set at construction or with :meth:`set_class_labels`.
        size_multiple: H and W must be multiples of it (2^(levels-1) for a UNet).
        compute_dtype: run the network in float16/bfloat16 (inputs cast down, ε cast back to
            the input dtype); ``None`` runs in the weights' dtype.
        name, info: human-readable provenance (format, source, inferred settings).
    """

    def __init__(self, net: nn.Module, alphas_cumprod: torch.Tensor, *, in_channels: int = 3,
                 image_size=None, prediction: str = "epsilon", learned_sigma: bool = False,
                 num_classes: int | None = None, class_labels=None, compute_dtype=None,
                 size_multiple: int = 1, name: str = "network", info: dict | None = None):
        super().__init__(alphas_cumprod)
        if prediction not in PREDICTIONS:
            raise ParameterError(f"prediction must be one of {', '.join(PREDICTIONS)}, "
                                 f"got {prediction!r}")
        self.net = net
        self.in_channels = int(in_channels)
        self.image_size = image_size
        self.prediction = prediction
        self.learned_sigma = bool(learned_sigma)
        self.num_classes = num_classes
        self.compute_dtype = parse_dtype(compute_dtype)
        self.size_multiple = int(size_multiple)
        self.name = name
        self.info = dict(info or {})
        self.class_labels: torch.Tensor | None = None
        if class_labels is not None:
            self.set_class_labels(class_labels)

    # ------------------------------------------------------------------ configuration
    def set_class_labels(self, labels) -> "NetworkPrior":
        """Class label(s) passed to a class-conditional network (int or (B,) ints)."""
        if self.num_classes is None:
            raise ParameterError(f"{self.name} is not class-conditional; it takes no labels")
        lab = torch.as_tensor(labels, dtype=torch.long)
        if lab.dim() > 1 or (lab.numel() and (lab.min() < 0 or lab.max() >= self.num_classes)):
            raise ParameterError(f"class labels must be ints in 0..{self.num_classes - 1} "
                                 f"(scalar or one per image), got {labels!r}")
        self.class_labels = lab
        return self

    def _labels(self, B: int, device):
        if self.num_classes is None:
            return None
        if self.class_labels is None:
            raise ParameterError(f"{self.name} is class-conditional ({self.num_classes} "
                                 f"classes): pass class_labels=... when loading")
        # kept on the device after the first call: no host-to-device copy at every step
        lab = self.class_labels = self.class_labels.to(device)
        if lab.dim() == 0:
            return lab.expand(B)
        if lab.shape[0] != B:
            raise ShapeError(f"{lab.shape[0]} class labels given for a batch of {B}")
        return lab

    @property
    def param_dtype(self) -> torch.dtype:
        p = next(self.net.parameters(), None)
        return p.dtype if p is not None else torch.float32

    # ------------------------------------------------------------------ forward
    def forward_raw(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """The network's raw output for x_t (B, C, H, W) at integer timestep(s) t."""
        if x_t.dim() != 4 or x_t.shape[1] != self.in_channels:
            raise ShapeError(f"{self.name} takes (B, {self.in_channels}, H, W) inputs, got "
                             f"{tuple(x_t.shape)}")
        B = x_t.shape[0]
        if isinstance(t, numbers.Real):   # filled on the device: no host-to-device copy
            tt = torch.full((B,), float(t), dtype=torch.float32, device=x_t.device)
        else:
            tt = torch.as_tensor(t, device=x_t.device)
            tt = (tt.expand(B) if tt.dim() == 0 else tt).to(torch.float32)
        dt = self.compute_dtype or self.param_dtype
        kw = {}
        if getattr(self.net, "takes_host_timesteps", False) and (
                isinstance(t, numbers.Real) or (torch.is_tensor(t) and t.device.type == "cpu")):
            kw["at"] = t              # timestep experts route on it without a device read
        out = self.net(x_t.to(dt), tt, self._labels(B, x_t.device), **kw)
        return out.to(x_t.dtype)

    def eps(self, x_t: torch.Tensor, t) -> torch.Tensor:
        self.check_timesteps(t)       # forward_raw also takes continuous times (consistency)
        out = self.forward_raw(x_t, t)
        C = self.in_channels
        if self.learned_sigma:
            out = out[:, :C]
        if self.prediction == "epsilon":
            return out
        if isinstance(t, numbers.Real):     # a solver's scalar t: ᾱ from the host, no device copy
            a = torch.tensor(self._alpha_bar_host(round(float(t))), dtype=x_t.dtype)
        else:
            a = _bcast(self.alpha_bar(t), x_t)
        if self.prediction == "sample":           # ε = (x_t − √ᾱ x̂0)/√(1−ᾱ)
            return (x_t - a.sqrt() * out) / (1 - a).sqrt()
        return a.sqrt() * out + (1 - a).sqrt() * x_t   # v-prediction: ε = √ᾱ v + √(1−ᾱ) x_t

    def _alpha_bar_host(self, t: int) -> float:
        """ᾱ_t as a Python float (1 for t = −1), from a list read once."""
        ab = self.__dict__.get("_ab_host")
        if ab is None:
            ab = self.__dict__["_ab_host"] = [float(a) for a in self.alphas_cumprod.cpu()]
        return 1.0 if t < 0 else ab[t]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, prediction={self.prediction}, "
                f"learned_sigma={self.learned_sigma}, params={self.num_parameters():,}")
