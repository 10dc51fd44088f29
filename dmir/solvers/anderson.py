"""Batched Anderson acceleration for fixed-point problems z = f(z).

Anderson mixing (type II, in the bordered least-squares form used by the DEQ / DeqIR code,
Walker & Ni 2011): keep the last ``m`` iterates x_i and their images f_i = f(x_i), residuals
r_i = f_i - x_i, and take the next iterate as

    α = argmin ‖Σ_i α_i r_i‖² + λ‖α‖²   subject to Σ_i α_i = 1
    x_next = β Σ_i α_i f_i + (1 - β) Σ_i α_i x_i

solved through the (n+1)×(n+1) system [[0, 1ᵀ], [1, R Rᵀ + λI]] [ν; α] = [1; 0].

The unknown is a tensor z of shape (G, ...): G *slots* (e.g. the T states of a diffusion chain,
or T·B (state, image) pairs). ``groups`` says which slots share mixing weights:

* ``None`` — one least-squares problem for the whole tensor (classical Anderson);
* ``"slot"`` — every slot solves its own problem (DeqIR: "per state");
* a 1-D integer tensor of length G — slots with the same label share weights.

Units: λ is absolute, in the units of ‖r‖² (squared pixel units summed over the slot), as in the
published code (DeqIR: λ = 1e-3). Once ‖r‖² falls to about λ the regularisation dominates and
the weights drift towards a plain average of the history, which slows the last digits down;
pass lam=0 (or a smaller value) for tight tolerances. m = 1 is plain fixed-point iteration. The stopping test is the relative residual
‖f(x) − x‖ / (‖f(x)‖ + 1e-5) over the whole tensor (the published criterion), after every
evaluation of f.

:class:`AndersonMixer` is the mixing state on its own (push an evaluation, mix the next iterate,
drop or append slots), for solvers that manage their own loop (DeqIR's sliding window);
:func:`anderson` is the ready-made loop.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import ParameterError

#: added to ‖f(x)‖ in the relative residual (the published code's 1e-5)
RES_EPS = 1e-5


def check_options(m, lam, beta, tol, max_iter) -> None:
    """Validate Anderson options (raise :class:`ParameterError`)."""
    if not (isinstance(m, int) and m >= 1):
        raise ParameterError(f"Anderson memory m must be an integer ≥ 1, got {m!r}")
    try:
        lam, beta, tol = float(lam), float(beta), float(tol)
    except (TypeError, ValueError):
        raise ParameterError("Anderson lam, beta and tol must be numbers") from None
    if not lam >= 0:
        raise ParameterError(f"Anderson regularisation lam must be ≥ 0, got {lam}")
    if not (0 < beta <= 1):
        raise ParameterError(f"Anderson mixing beta must be in (0, 1], got {beta}")
    if not tol >= 0:
        raise ParameterError(f"tolerance tol must be ≥ 0, got {tol}")
    if not (isinstance(max_iter, int) and max_iter >= 1):
        raise ParameterError(f"max_iter must be an integer ≥ 1, got {max_iter!r}")


def _labels(groups, G: int, device) -> torch.Tensor | None:
    """Slot → group label (None = one group per slot)."""
    if groups is None:
        return torch.zeros(G, dtype=torch.long, device=device)
    if isinstance(groups, str):
        if groups != "slot":
            raise ParameterError(f"groups must be None, 'slot' or a tensor of labels, got "
                                 f"{groups!r}")
        return None
    lab = torch.as_tensor(groups, device=device)
    if lab.dim() != 1 or lab.shape[0] != G or lab.dtype.is_floating_point:
        raise ParameterError(f"groups must be a 1-D integer tensor of length {G} (one label per "
                             f"slot), got shape {tuple(lab.shape)}")
    _, inv = torch.unique(lab, return_inverse=True)   # labels → 0..NG-1
    return inv


class AndersonMixer:
    """Mixing state over G slots of dimension D (flattened), memory m.

    ``push(x, fx)`` records one evaluation (x, f(x)) for every slot; ``mix()`` returns the next
    iterate. Slots can be removed from the front (:meth:`drop_front`) and appended at the back
    (:meth:`append`); an appended slot has no history until its first ``push`` and must not be
    mixed before it (its iterate is chosen by the caller). A slot's history is the last
    ``min(pushes since it joined, m)`` evaluations.
    """

    def __init__(self, G: int, D: int, m: int = 5, lam: float = 1e-3, beta: float = 1.0,
                 groups=None, dtype=torch.float32, device=None):
        self.m, self.lam, self.beta = int(m), float(lam), float(beta)
        self.per_slot = isinstance(groups, str) and groups == "slot"
        self.labels = _labels(groups, G, device)
        self.X = torch.zeros(G, self.m, D, dtype=dtype, device=device)
        self.F = torch.zeros_like(self.X)
        self.valid = torch.zeros(G, dtype=torch.long, device=device)   # history length
        self.k = 0                                                       # pushes so far

    @property
    def G(self) -> int:
        return self.X.shape[0]

    def push(self, x: torch.Tensor, fx: torch.Tensor) -> None:
        """Record x and f(x), both (G, D)."""
        c = self.k % self.m
        self.X[:, c] = x
        self.F[:, c] = fx
        self.k += 1
        self.valid = (self.valid + 1).clamp_max(self.m)

    def drop_front(self, d: int) -> None:
        """Forget the first d slots (per-slot mixing only)."""
        if not self.per_slot:
            raise ParameterError("drop_front needs per-slot mixing (groups='slot')")
        self.X, self.F, self.valid = self.X[d:], self.F[d:], self.valid[d:]

    def append(self, n: int) -> None:
        """Add n slots without history at the back (per-slot mixing only)."""
        if not self.per_slot:
            raise ParameterError("append needs per-slot mixing (groups='slot')")
        if n <= 0:
            return
        z = self.X.new_zeros(n, self.m, self.X.shape[2])
        self.X = torch.cat([self.X, z])
        self.F = torch.cat([self.F, z.clone()])
        self.valid = torch.cat([self.valid, self.valid.new_zeros(n)])

    def weights(self) -> torch.Tensor:
        """The mixing weights α per slot, (G, m) (zero on columns outside a slot's history)."""
        m = self.m
        R = self.F - self.X
        gram = torch.bmm(R, R.transpose(1, 2)).double()                 # (G, m, m)
        valid = self.valid
        if not self.per_slot:
            assert self.labels is not None        # set whenever slots share a group
            NG = int(self.labels.max()) + 1
            gram = gram.new_zeros(NG, m, m).index_add_(0, self.labels, gram)
            valid = valid.new_full((NG,), m).scatter_reduce(0, self.labels, valid, "amin")
        if bool((valid == 0).any()):
            raise ParameterError("AndersonMixer.mix: a slot has no history yet (push first)")
        age = (self.k - 1 - torch.arange(m, device=gram.device)) % m   # 0 = newest column
        ok = age[None, :] < valid[:, None]                               # (NG, m)
        okf = ok.double()
        eye = torch.eye(m, dtype=torch.float64, device=gram.device)
        Hm = (gram + self.lam * eye) * okf[:, :, None] * okf[:, None, :]
        Hm = Hm + torch.diag_embed(1 - okf)                              # α_i = 0 off-history
        NG = Hm.shape[0]
        H = Hm.new_zeros(NG, m + 1, m + 1)
        H[:, 0, 1:] = okf
        H[:, 1:, 0] = okf
        H[:, 1:, 1:] = Hm
        rhs = Hm.new_zeros(NG, m + 1, 1)
        rhs[:, 0] = 1.0
        alpha = torch.linalg.solve(H, rhs)[:, 1:, 0]                      # (NG, m)
        if not self.per_slot:
            alpha = alpha[self.labels]
        return alpha.to(self.X.dtype)

    def mix(self) -> torch.Tensor:
        """The next iterate, (G, D)."""
        alpha = self.weights()
        out = torch.einsum("gm,gmd->gd", alpha, self.F)
        if self.beta != 1.0:
            out = self.beta * out + (1 - self.beta) * torch.einsum("gm,gmd->gd", alpha, self.X)
        return out


def relative_residual(x: torch.Tensor, fx: torch.Tensor) -> float:
    """‖f(x) − x‖ / (‖f(x)‖ + 1e-5) over the whole tensor."""
    return float((fx - x).norm()) / (float(fx.norm()) + RES_EPS)


def slot_residuals(x: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
    """Per-slot relative residuals (G,), same definition as :func:`relative_residual`."""
    G = x.shape[0]
    d = (fx - x).reshape(G, -1).norm(dim=1)
    return d / (fx.reshape(G, -1).norm(dim=1) + RES_EPS)


def anderson(f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor, m: int = 5,
             lam: float = 1e-3, beta: float = 1.0, tol: float = 1e-3, max_iter: int = 15,
             groups=None, callback: Callable[[int, float], None] | None = None):
    """Solve z = f(z) by Anderson acceleration, batched over the G slots of z (G, ...).

    Args:
        f: the map, (G, ...) → (G, ...). Called without any autograd context of its own (wrap
            the call in ``torch.no_grad()`` for a graph-free solve).
        z0: the starting point.
        m: memory (number of past evaluations mixed).
        lam: Tikhonov regularisation of the mixing least-squares problem (absolute).
        beta: mixing (1 = undamped: combine the f values only).
        tol: stop when the relative residual ‖f(x) − x‖ / (‖f(x)‖ + 1e-5) < tol.
        max_iter: the maximum number of evaluations of f (the published loop: 15).
        groups: which slots share mixing weights (see the module docstring).
        callback: ``callback(k, residual)`` after the k-th evaluation.

    Returns:
        (z, info): z = f(x_k) for the last iterate x_k (one free plain step: for a contraction,
        or a triangular system such as a diffusion chain, at least as accurate as x_k);
        info = {"iterations": evaluations of f, "residuals": relative residual after each
        evaluation, "converged": bool, "slot_residuals": (G,) relative residuals of the last
        evaluation, "iterate": x_k itself (what the DEQ/DeqIR release code returns)}.

    The first two iterates are x_0 = z0 and x_1 = f(x_0) (as in the published loop); from then
    on x_{k+1} is the Anderson mix of the last min(k+1, m) evaluations.
    """
    check_options(m, lam, beta, tol, max_iter)
    if not isinstance(z0, torch.Tensor) or z0.dim() < 1:
        raise ParameterError("z0 must be a tensor with a leading slot dimension (G, ...)")
    shape, G = z0.shape, z0.shape[0]
    mixer = AndersonMixer(G, z0[0].numel(), m, lam, beta, groups, z0.dtype, z0.device)
    x = z0
    res: list[float] = []
    fx = None
    for k in range(1, max_iter + 1):
        fx = f(x)
        if fx.shape != shape:
            raise ParameterError(f"f must return the shape of its input {tuple(shape)}, got "
                                 f"{tuple(fx.shape)}")
        r = relative_residual(x, fx)
        res.append(r)
        if callback is not None:
            callback(k, r)
        if r < tol or k == max_iter:
            break
        mixer.push(x.reshape(G, -1), fx.reshape(G, -1))
        x = fx if k == 1 else mixer.mix().reshape(shape)
    assert fx is not None                       # max_iter ≥ 1 (check_options)
    info = {"iterations": len(res), "residuals": res, "converged": res[-1] < tol,
            "slot_residuals": slot_residuals(x, fx), "iterate": x}
    return fx, info
