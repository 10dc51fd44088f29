"""The sliding-window fixed-point solve (ParaDiGMS, Shih et al., "Parallel Sampling of Diffusion
Models", NeurIPS 2023) for DeqIR's joint system (:mod:`dmir.solvers.deqir`, ``window=w``).

Only the w oldest not-yet-converged states are iterated (Anderson per state inside the window);
after each batched evaluation the leading states whose relative residual is below ``tol`` are
frozen, plus the first unconverged one (its inputs are converged, so its new value is exact),
and the window slides forward, new states starting from the latest iterate of their
predecessor (or from ``z0`` when the caller gives one: ``warm``). Network evaluations are spent
only where states still move; the result is the exact chain.

``solver`` provides ``steps``, ``window``, ``m``, ``lam``, ``beta``, ``tol``, ``nfe`` and the
batched pieces ``_eval(x_in, lo)`` (ε at the inputs of steps lo..) and ``_unrolled(start, lo,
eps_x, eps_r, ctx)`` (the states they give). Layout (T, B, C, H, W).
"""
from __future__ import annotations

import math

import torch

from ..errors import ParameterError
from .anderson import AndersonMixer, slot_residuals

__all__ = ["solve_window", "check_layout"]


def check_layout(chunk, window, mixing: str, form, sigma_model: float):
    """DeqIR's evaluation layout options, checked: (chunk, window, form). ``chunk``: images per
    network call (None: all); ``window``: None (full Anderson) or the sliding window's width
    (per-state mixing only); ``form``: the unrolled chain, 'cumsum' (noise-free, the default
    then) or 'recurrence' (the default with σ_y > 0)."""
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int)
                              or chunk < 1):
        raise ParameterError(f"chunk must be None or a positive number of images per "
                             f"network call, got {chunk!r}")
    if window is not None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ParameterError(f"window must be None (full Anderson) or an integer ≥ 1, "
                                 f"got {window!r}")
        if mixing != "state":
            raise ParameterError("the sliding window mixes per state; use mixing='state'")
    if form is None:
        form = "cumsum" if sigma_model == 0 else "recurrence"
    if form not in ("cumsum", "recurrence"):
        raise ParameterError(f"form must be 'cumsum' or 'recurrence', got {form!r}")
    if form == "cumsum" and sigma_model > 0:
        raise ParameterError("form='cumsum' is the noise-free (σ_y = 0) unrolled chain; "
                             "σ_y > 0 uses form='recurrence'")
    return chunk, window, form


def solve_window(solver, x_T, ctx, z0, progress=None, warm=False):
    """(z*, info): the fixed point of ``solver``'s map by the sliding window (see above)."""
    T, B = solver.steps, ctx["B"]
    w = min(solver.window, T)
    img = z0.shape[2:]
    D = math.prod(img)
    z = z0.clone()
    lo, hi = 0, w                       # the window: states lo..hi-1
    x = z[lo:hi].clone()                # current iterates in the window
    mixer = AndersonMixer(w * B, D, solver.m, solver.lam, solver.beta, "slot", z.dtype, z.device)
    count = [0] * T
    res, rounds = [], 0
    while lo < T:
        start = x_T if lo == 0 else z[lo - 1]
        x_in = torch.cat([start[None], x[:-1]])
        eps_x, eps_r = solver._eval(x_in, lo)
        fx = solver._unrolled(start, lo, eps_x, eps_r, ctx)
        rounds += 1
        for i in range(lo, hi):
            count[i] += 1
        r = slot_residuals(x.reshape((hi - lo) * B, -1),
                           fx.reshape((hi - lo) * B, -1)).reshape(hi - lo, B).amax(1)
        res.append(float(r.max()))
        if progress is not None:
            progress(solver.nfe, solver.nfe + (T - lo) * 2)
        # freeze the leading converged states and the first unconverged one (its inputs
        # are converged, so its new value is final): at least one state per round
        k = 0
        while k < hi - lo and float(r[k]) < solver.tol:
            k += 1
        k = min(k + 1, hi - lo)
        z[lo:lo + k] = fx[:k]
        mixer.push(x.reshape(-1, D), fx.reshape(-1, D))
        mixer.drop_front(k * B)
        rest = mixer.mix().reshape(-1, B, *img) if k < hi - lo else x[:0]
        new_lo, new_hi = lo + k, min(lo + k + w, T)
        n_new = new_hi - hi
        if n_new > 0:
            if warm:                    # the caller's start (e.g. the previous z*)
                x_new = z[hi:new_hi]
            else:                       # the latest iterate of the predecessor
                last = rest[-1] if rest.shape[0] else z[new_lo - 1]
                x_new = last[None].expand(n_new, *last.shape)
            mixer.append(n_new * B)
            rest = torch.cat([rest, x_new])
        lo, hi, x = new_lo, new_hi, rest
    info = {"iterations": rounds, "residuals": res, "converged": True,
            "evaluations_per_state": count}
    return z, info
