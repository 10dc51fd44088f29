"""The fast path for network priors: mixed precision, channels_last, torch.compile, CUDA graphs.

On a GPU, restoration time is network time: the solver's own arithmetic is a few element-wise
kernels per step, the network a few hundred. :func:`accelerate` speeds up the network of a
:class:`~dmir.models.network.NetworkPrior` in place and leaves everything else as it is:

- ``dtype`` (autocast): convolutions, linear layers and attention run in bfloat16 / float16
  under :func:`torch.autocast`; what accuracy needs stays float32 — the sinusoidal timestep
  embedding (both UNets compute it from ``t.float()``: t up to 999 has a resolution of 4 in
  bfloat16), the GroupNorm statistics (autocast runs ``group_norm`` in float32; ADM's
  ``GroupNorm32`` does so explicitly) and the whole sampler state: ε is cast back to the
  state's dtype (float32) before the solver sees it. The weights of convolutions and linear
  layers are stored in that dtype once (autocast would round them identically at every call),
  normalisation weights stay float32.
- ``channels_last``: weights and the network input in NHWC layout, the layout of the tensor-core
  convolution kernels. The sampler state stays NCHW.
- attention: both UNets (``adm``, ``ddpm``) call ``F.scaled_dot_product_attention``. Its fused
  kernels (flash / memory-efficient on CUDA, flash on CPU) need q, k, v with a unit stride on
  the last (head) dimension: the DDPM UNet's projections give that in channels_last layout,
  so the fast path runs its attention fused; the ADM block's q, k, v (views of the qkv
  convolution output) have stride H·W there, so SDPA falls back to its unfused math path
  until ``adm.AttentionBlock`` makes them contiguous.
- ``compile``: :func:`torch.compile` of the network, ``dynamic=False`` (one graph per batch
  shape). Modes: ``"default"``, ``"reduce-overhead"`` (adds CUDA graphs), ``"max-autotune"``,
  ``"max-autotune-no-cudagraphs"``. Compiling takes minutes for the 550 M-parameter ADM; it
  pays only for long runs, so it is off by default.
- ``cuda_graphs``: the network call is captured once per input shape as a CUDA graph and
  replayed (static input buffers, one graph kept at a time); removes the kernel-launch overhead
  that dominates at batch 1. CUDA only; not together with a compile mode that graphs itself.

Defaults (:func:`default_options`) are the fastest setting that is correct on each device:
CUDA — bfloat16 autocast + channels_last (float16 on Volta/Turing, whose tensor cores have no
bfloat16; float32 before them; compile and CUDA graphs are opt-in); CPU —
channels_last, plus bfloat16 autocast on CPUs with native bfloat16 instructions
(:func:`cpu_has_native_bf16`: AVX512-BF16 or AMX; elsewhere bf16 is emulated and slow, so the
default stays float32). Measured for the shipped prior at 256² on a 2-core AMD EPYC with
AVX512-BF16 (``benchmarks/cpu_fast_path.py``, round-robin on a loaded machine): NFE/s × 1.26
with channels_last, × 1.90 bf16, × 2.30 bf16 + channels_last, PSNR of a DDNM restoration
−0.002 dB; ``torch.compile`` × 0.92 (float32) and × 1.90 (bf16, no gain over eager) after
6–13 minutes of compiling, so it stays opt-in. Accuracy: float32 + channels_last equals the plain path
to ~1e-5 (summation order); bfloat16 changes one network evaluation by ~1e-2 relative, and a
whole restoration by what ``benchmarks/gpu_throughput.py`` reports as PSNR(bf16 vs fp32).

Timestep experts (:class:`~dmir.models.experts.TimestepExperts`, the shipped prior) get one
fast path per expert network; the routing between them stays eager and reads the timestep on
the host, so a captured graph or a compiled one never holds the expert of another timestep.
Priors that are not networks (analytic, built-in) are returned unchanged.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ParameterError
from .network import NetworkPrior, parse_dtype

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
_GRAPHING_MODES = ("reduce-overhead", "max-autotune")
_CAST_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.Embedding)


@dataclass(frozen=True)
class FastOptions:
    """What :func:`accelerate` applies. ``dtype`` None = float32 (no autocast);
    ``compile`` None = eager, else one of :data:`COMPILE_MODES`."""

    dtype: torch.dtype | None = None
    channels_last: bool = False
    compile: str | None = None
    cuda_graphs: bool = False

    def describe(self) -> str:
        parts = [str(self.dtype).replace("torch.", "") if self.dtype else "float32"]
        parts.append("channels_last" if self.channels_last else "NCHW")
        if self.compile:
            parts.append(f"compile={self.compile}")
        if self.cuda_graphs:
            parts.append("cuda_graphs")
        return ", ".join(parts)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def default_options(device) -> FastOptions:
    """The fastest correct setting on ``device`` (see the module docstring)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        # bf16 tensor cores from Ampere (8.x) on; Volta/Turing have fp16 ones only (bf16 is
        # emulated there), older GPUs neither
        major = torch.cuda.get_device_capability(dev)[0] if torch.cuda.is_available() else 8
        dt = torch.bfloat16 if major >= 8 else torch.float16 if major >= 7 else None
        return FastOptions(dtype=dt, channels_last=True)
    return FastOptions(dtype=torch.bfloat16 if cpu_has_native_bf16() else None,
                       channels_last=True)


def resolve_options(device, dtype="auto", channels_last="auto", compile=None,
                    cuda_graphs: bool = False, weights_dtype: torch.dtype | None = None
                    ) -> FastOptions:
    """Validated :class:`FastOptions` for ``device``; ``"auto"`` takes :func:`default_options`.

    ``dtype``: "auto", None/"float32" (no autocast), "bfloat16" or "float16". With "auto", a
    network whose weights are already half precision (``weights_dtype``) keeps that dtype.
    ``compile``: None/False (eager), True ("default") or a mode of :data:`COMPILE_MODES`.
    """
    dev = torch.device(device)
    base = default_options(dev)
    if isinstance(dtype, str) and dtype == "auto":
        half = weights_dtype in (torch.float16, torch.bfloat16)
        dt = weights_dtype if (half and dev.type == "cuda") else base.dtype
    else:
        dt = parse_dtype(dtype)
        if dt == torch.float64:
            raise ParameterError("the fast path runs in float32, bfloat16 or float16, "
                                 "not float64")
        if dt == torch.float32:
            dt = None
    if isinstance(channels_last, str):
        if channels_last != "auto":
            raise ParameterError(f"channels_last must be True, False or 'auto', "
                                 f"got {channels_last!r}")
        channels_last = base.channels_last
    if compile is None or compile is False:
        mode = None
    elif compile is True:
        mode = "default"
    elif compile in COMPILE_MODES:
        mode = compile
    else:
        raise ParameterError(f"compile must be True, False or one of "
                             f"{', '.join(COMPILE_MODES)}, got {compile!r}")
    if cuda_graphs and dev.type != "cuda":
        raise ParameterError(f"cuda_graphs needs a CUDA device, got {dev}")
    if cuda_graphs and mode in _GRAPHING_MODES:
        raise ParameterError(f"cuda_graphs and compile mode {mode!r} both capture CUDA graphs; "
                             f"use one of them")
    return FastOptions(dtype=dt, channels_last=bool(channels_last), compile=mode,
                       cuda_graphs=bool(cuda_graphs))


class FastNet(nn.Module):
    """``net`` behind the fast-path options; same call ``forward(x, t, y=None)``.

    The wrapped network is the submodule ``net`` (state-dict keys gain a ``net.`` prefix);
    the compiled callable and the CUDA graph are kept outside the module tree.
    """

    def __init__(self, net: nn.Module, options: FastOptions, device_type: str):
        super().__init__()
        self.net = net
        self.options = options
        self.device_type = device_type
        self.__dict__["_fn"] = (torch.compile(net, mode=options.compile, dynamic=False)
                                if options.compile else net)
        self.__dict__["_graph"] = None          # (key, graph, static inputs, static output)

    def __deepcopy__(self, memo):
        """A copy with its own copy of the network, compiled anew if compiling, and no captured
        graph: a CUDA graph and its static buffers belong to the original and its device (DeqIR
        copies the prior to every GPU)."""
        new = FastNet(copy.deepcopy(self.net, memo), self.options, self.device_type)
        new.training = self.training          # the flag only: the copied network keeps its mode
        memo[id(self)] = new
        return new

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        graphed = x.is_cuda and not (torch.is_grad_enabled() and x.requires_grad)
        if self.options.cuda_graphs and graphed:   # (a captured graph has no autograd)
            out = self._replay(x, t, y)
        elif self.options.compile in _GRAPHING_MODES and graphed:
            torch.compiler.cudagraph_mark_step_begin()
            # the graph's output buffer is reused by the next call
            out = self._call(x, t, y).clone(memory_format=torch.contiguous_format)
        else:
            out = self._call(x, t, y)
        # the sampler state stays NCHW (operators may view it flat); a no-op without
        # channels_last, one small copy of the output otherwise
        return out.contiguous()

    def _call(self, x, t, y):
        dt = self.options.dtype
        if dt is None:
            return self._fn(x, t, y)
        # cache_enabled=False: no autocast weight cache across calls (needed for graph capture;
        # the weights are stored in ``dt`` already, so there is nothing to cache)
        # the input's device, not the one accelerate() saw: a prior moved later (CPU → CUDA)
        # would otherwise run under the wrong device's autocast, i.e. none
        with torch.autocast(x.device.type, dtype=dt, cache_enabled=False):
            return self._fn(x, t, y)

    def _replay(self, x, t, y):
        """Run the network as a CUDA graph captured for this input shape."""
        key = (tuple(x.shape), x.dtype, tuple(x.stride()), tuple(t.shape), t.dtype,
               None if y is None else (tuple(y.shape), y.dtype))
        if self._graph is None or self._graph[0] != key:
            self.__dict__["_graph"] = None      # release the previous graph's memory pool
            self.__dict__["_graph"] = self._capture(key, x, t, y)
        _, graph, (sx, st, sy), out = self._graph
        sx.copy_(x)
        st.copy_(t)
        if sy is not None:
            sy.copy_(y)
        graph.replay()
        return out.clone(memory_format=torch.contiguous_format)   # the next replay overwrites it

    def _capture(self, key, x, t, y):
        sx, st = x.clone(), t.clone()
        sy = None if y is None else y.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):           # warm-up (cuDNN autotuning, allocations)
            for _ in range(2):
                self._call(sx, st, sy)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._call(sx, st, sy)
        return key, graph, (sx, st, sy), out


def _cast_weights(net: nn.Module, dtype: torch.dtype) -> None:
    """Convolution / linear / embedding weights to ``dtype``; normalisations stay as they are."""
    for m in net.modules():
        if isinstance(m, _CAST_TYPES):
            m.to(dtype)


def accelerate(prior, device=None, *, dtype="auto", channels_last="auto", compile=None,
               cuda_graphs: bool = False):
    """Put ``prior``'s network on the fast path, in place; returns ``prior``.

    Args:
        prior: a :class:`NetworkPrior` (anything else is returned unchanged).
        device: move the prior there first (default: where its weights are).
        dtype, channels_last, compile, cuda_graphs: see :func:`resolve_options`; "auto" means
            :func:`default_options` of the device.

    The result computes the same ε as before within floating-point tolerance: equal to ~1e-5
    in float32, ~1e-2 relative per network evaluation in bfloat16. Accelerate after moving the
    prior to its device (CUDA graphs and compiled code are bound to it). Calling it again
    re-wraps the original network with the new options (weights already cast stay cast).
    """
    if not isinstance(prior, NetworkPrior):
        return prior
    if device is not None:
        prior.to(device)
    p = next(prior.net.parameters(), None)
    dev = p.device if p is not None else torch.device("cpu")
    opts = resolve_options(dev, dtype, channels_last, compile, cuda_graphs,
                           weights_dtype=prior.param_dtype)
    earlier = options_of(prior)
    if opts.dtype is None and earlier is not None and earlier.dtype is not None:
        raise ParameterError(f"this prior's weights were cast to {earlier.dtype} by an earlier "
                             f"accelerate(); to run it in float32, load the model again")
    net = _unwrapped(prior.net)                  # only once the options are known to be valid
    if opts.dtype is not None:
        _cast_weights(net, opts.dtype)
        # the network gets the float32 state; autocast picks each operation's precision
        prior.compute_dtype = torch.float32
    if opts.channels_last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # not in the stubs
    net.eval()
    nets = _expert_nets(net)
    if nets is not None:
        # each expert behind its own FastNet, the routing outside: a CUDA graph or a compiled
        # graph of the whole would hold the expert of the timestep it was captured at
        for i, sub in enumerate(nets):
            nets[i] = FastNet(sub, opts, dev.type)
        prior.net = net
    else:
        prior.net = FastNet(net, opts, dev.type)
    prior.info["fast"] = opts.describe()
    return prior


def _expert_nets(net) -> nn.ModuleList | None:
    """The expert networks of a :class:`~dmir.models.experts.TimestepExperts`, else None."""
    from .experts import TimestepExperts
    return net.nets if isinstance(net, TimestepExperts) else None


def _unwrapped(net: nn.Module) -> nn.Module:
    """``net`` without the FastNet wrapper(s) an earlier :func:`accelerate` put around it
    (around the network, or around each of a :class:`~dmir.models.experts.TimestepExperts`'
    networks, which are unwrapped in place)."""
    if isinstance(net, FastNet):
        return net.net
    nets = _expert_nets(net)
    if nets is not None:
        for i, sub in enumerate(nets):
            if isinstance(sub, FastNet):
                nets[i] = sub.net
    return net


def options_of(prior) -> FastOptions | None:
    """The options ``prior`` was accelerated with, or None."""
    net = getattr(prior, "net", None)
    nets = _expert_nets(net)
    if nets is not None:
        net = nets[0]
    return net.options if isinstance(net, FastNet) else None


__all__ = ["FastOptions", "FastNet", "accelerate", "default_options", "resolve_options",
           "options_of", "cpu_has_native_bf16", "COMPILE_MODES"]

