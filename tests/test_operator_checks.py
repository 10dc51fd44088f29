"""operators.check (deepinv-style numerical checks), compositions B @ A in float32 and float64,
``exact_pinv`` and the solvers' warning, and the deferred SVD of the separable operators.

* every built-in operator passes ``check`` in float32 and float64 (small sizes);
* every pairwise composition B @ A of the built-in operators (8×8 images, where the shapes
  chain) passes deepinv's concatenation and pseudo-inverse checks in both dtypes; a converged
  CG composition also satisfies the Penrose conditions;
* ``check`` fails on a wrong adjoint, a wrong pseudo-inverse and a wrong norm (it can fail);
* ``exact_pinv`` is False exactly for the DPS blurs whose A⁺ is truncated or early-stopped,
  and DDNM/DeqIR/ΠGDM warn once for them;
* the separable SVD is computed on first use, and building then costs about a millisecond.
"""
from __future__ import annotations

import itertools
import time
import warnings

import numpy as np
import pytest
import torch

from dmir import models, operators, solvers
from dmir.operators.base import InexactPinvWarning

S = (3, 8, 8)


def _g(seed):
    return torch.Generator().manual_seed(seed)


# the built-in operators at 8×8 (deblur_uni / deblur_aniso need 10×10 / 9×9: their own shapes)
BUILTIN = {
    "sr_bicubic": lambda: operators.build("sr_bicubic", S, scale=2),
    "sr_averagepooling": lambda: operators.build("sr_averagepooling", S, scale=2),
    "deblur_gauss": lambda: operators.build("deblur_gauss", S),
    "deblur_uni": lambda: operators.build("deblur_uni", (3, 10, 10)),
    "deblur_aniso": lambda: operators.build("deblur_aniso", (3, 9, 9)),
    "colorization": lambda: operators.build("colorization", S),
    "denoising": lambda: operators.build("denoising", S),
    "cs_walshhadamard": lambda: operators.build("cs_walshhadamard", S, ratio=0.5,
                                                generator=_g(1)),
    "cs_blockbased": lambda: operators.build("cs_blockbased", S, ratio=0.5, block=4,
                                             generator=_g(2)),
    "inpainting": lambda: operators.build(
        "inpainting", S, mask=(torch.rand(8, 8, generator=_g(3)) < 0.6).float()),
    "deblur-separable": lambda: operators.build("deblur", S,
                                                kernel=np.outer([.2, .6, .2], [.2, .6, .2])),
    "deblur-fft": lambda: operators.build(
        "deblur", S, kernel=np.array([[0, .1, .2], [.1, .3, .1], [.1, .1, 0]])),
    "sr_bicubic_aa": lambda: operators.build("sr_bicubic_aa", S, scale=2),
    "sr_matlab_bicubic": lambda: operators.build("sr_matlab_bicubic", S, scale=2),
    "deblur_dps_gauss": lambda: operators.build("deblur_dps_gauss", S, kernel_size=5, std=1.0),
    "inpainting_box": lambda: operators.build("inpainting_box", S, box=3, margin=1, seed=1),
    "inpainting_random": lambda: operators.build("inpainting_random", S, missing=0.5, seed=2),
    "deblur_dps_motion": lambda: operators.build("deblur_dps_motion", (1, 32, 34),
                                                 kernel_size=61, seed=3),
}
DTYPES = [torch.float32, torch.float64]


def _build(name, dtype):
    op = BUILTIN[name]()
    return op.double() if dtype == torch.float64 else op


def test_builtin_list_covers_the_registry():
    covered = {"deblur" if n.startswith("deblur-") else n for n in BUILTIN}
    assert set(operators.names()) <= covered | {"user_subsample", "user_composed"}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(BUILTIN))
def test_every_builtin_operator_passes_check(name, dtype):
    op = _build(name, dtype)
    rep = operators.check(op)               # raises OperatorCheckError on a failure
    assert rep.ok and rep.adjoint <= rep.tol["adjoint"]
    assert rep.pinv_checked == op.exact_pinv
    if op.exact_pinv:
        assert rep.pinv <= 1e-2 and max(rep.penrose.values()) <= rep.tol["penrose"]
    if op.has_svd:
        assert rep.norm_svd is not None and abs(rep.norm - rep.norm_svd) <= 1e-3 * rep.norm_svd


def _pairs():
    ops = {n: BUILTIN[n]() for n in BUILTIN if n != "deblur_dps_motion"}
    return [(b, a) for a, b in itertools.permutations(ops, 2)
            if tuple(ops[b].x_shape) == tuple(ops[a].y_shape)]


PAIRS = _pairs()


def test_there_are_many_compositions():
    assert len(PAIRS) >= 50


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_every_composition_passes_deepinv_concatenation_checks(dtype):
    """deepinv's concatenation test (adjoint, norm) and pseudo-inverse test (‖A⁺A r − r‖/‖r‖
    < 1e-2 for r in the row space) for every B @ A; Penrose conditions wherever CG converged.
    Before the dtype-aware CG tolerance, 52 of the 60 float32 compositions failed the
    pseudo-inverse test (errors up to 1e10) and float64 compositions rejected float64 input."""
    worst_pinv, worst_penrose, exact = 0.0, 0.0, 0
    for b, a in PAIRS:
        A, B = _build(a, dtype), _build(b, dtype)
        C = B @ A
        assert C.dtype == dtype
        x = torch.randn((2, *C.x_shape), generator=_g(0), dtype=torch.float64).to(dtype)
        assert C.A(x).dtype == dtype                  # float64 parts take float64 input
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InexactPinvWarning)   # unconverged: reported
            rep = operators.check(C, strict=False)
        assert rep.ok, f"{C.name} ({dtype}): {rep.failures}"
        worst_pinv = max(worst_pinv, rep.pinv)
        if C.exact_pinv:
            exact += 1
            worst_penrose = max(worst_penrose, max(rep.penrose.values()))
    assert worst_pinv <= 1e-2
    assert worst_penrose <= (1e-2 if dtype == torch.float32 else 1e-4)
    assert exact >= len(PAIRS) // 2


def test_composition_dtype_and_device_errors():
    a = operators.build("sr_averagepooling", S, scale=2)
    b = operators.build("denoising", (3, 4, 4)).double()
    with pytest.raises(operators.OperatorCheckError.__mro__[1]):    # ParameterError
        b @ a
    c = b @ a.double()
    assert c.dtype == torch.float64
    with pytest.raises(Exception, match="float32"):
        c.A(torch.zeros(1, *S))


# ------------------------------------------------------------------ check can fail
class _Broken(operators.FunctionOperator):
    def __init__(self, what):
        super().__init__(lambda x: 2 * x, lambda y: 2 * y, (1, 4, 4), (1, 4, 4), name=what)
        self.what = what

    def _At(self, y):
        return 3 * y if self.what == "adjoint" else 2 * y

    def _pinv(self, y):
        return y if self.what == "pinv" else y / 2


@pytest.mark.parametrize("what, match", [("adjoint", "adjoint"),
                                         ("pinv", "pseudo-inverse test")])
def test_check_detects_a_wrong_operator(what, match):
    op = _Broken(what)
    with pytest.raises(operators.OperatorCheckError, match=match):
        operators.check(op)
    rep = operators.check(op, strict=False)
    assert not rep.ok
    assert operators.check(_Broken("none")).ok


def test_check_detects_a_wrong_singular_value():
    op = operators.build("colorization", S).double()
    op._sing = op._sing * 2                    # claims ‖A‖ twice what it is
    with pytest.raises(operators.OperatorCheckError, match="SVD"):
        operators.check(op)


# ------------------------------------------------------------------ exact_pinv
def test_exact_pinv_flags():
    exact = {n: _build(n, torch.float64).exact_pinv for n in BUILTIN}
    assert [n for n, e in exact.items() if not e] == ["deblur_dps_gauss", "deblur_dps_motion"]
    # the protocol-size DPS blurs: truncated DCT (Gaussian), early-stopped CG (motion)
    g = operators.build("deblur_dps_gauss", (1, 64, 64))
    m = operators.build("deblur_dps_motion", (1, 64, 64))
    assert not g.exact_pinv and "cut" in g.pinv_note
    assert not m.exact_pinv and "conjugate gradients" in m.pinv_note
    # with nothing cut the DCT inverse is exact (and passes the Penrose conditions)
    e = operators.build("deblur_dps_gauss", (2, 12, 20), kernel_size=3, std=0.5)
    assert e.exact_pinv
    rep = operators.check(e.double(), pinv=True)
    assert max(rep.penrose.values()) <= 1e-6
    # the documented inexactness, measured: A A⁺ A = A only to ~1e-2, A⁺ A A⁺ far off for CG
    rg = operators.check(g.double(), strict=False, pinv=True)
    rm = operators.check(m.double(), strict=False, pinv=True)
    assert 1e-3 < rg.penrose[1] < 0.1
    assert rm.penrose[2] > 0.1


def test_solvers_that_need_exact_projection_warn_once():
    prior = models.load("natural")
    g = operators.build("deblur_dps_gauss", (1, 16, 16), kernel_size=9, std=2.0)
    assert not g.exact_pinv
    for method in ("ddnm", "deqir", "pigdm"):
        op = operators.build("deblur_dps_gauss", (1, 16, 16), kernel_size=9, std=2.0)
        with pytest.warns(InexactPinvWarning, match="inexact pseudo-inverse"):
            solvers.build(method, prior, op, steps=2)
        with warnings.catch_warnings():
            warnings.simplefilter("error", InexactPinvWarning)
            solvers.build(method, prior, op, steps=2)              # once per operator
    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactPinvWarning)
        solvers.build("dps", prior, g, steps=2)                    # DPS needs only A, Aᵀ
        solvers.build("ddnm", prior, operators.build("sr_bicubic", (1, 16, 16), scale=2),
                      steps=2)


def test_unconverged_cg_composition_warns_and_drops_exact_pinv():
    a = operators.build("deblur_gauss", S)
    c = operators.ComposedOperator(operators.build("denoising", S), a, cg_iters=2)
    assert c.exact_pinv
    with pytest.warns(InexactPinvWarning, match="stopped after 2 iterations"):
        c.pinv(c.A(torch.randn(1, *S, generator=_g(0))))
    assert not c.exact_pinv and "stopped" in c.pinv_note


# ------------------------------------------------------------------ deferred SVD
@pytest.mark.parametrize("name, params", [("sr_bicubic", dict(scale=4)), ("deblur_gauss", {}),
                                          ("deblur_aniso", {}), ("sr_matlab_bicubic",
                                                                 dict(scale=4))])
def test_svd_is_built_on_first_use(name, params):
    t0 = time.perf_counter()
    op = operators.build(name, (3, 256, 256), **params)
    build = time.perf_counter() - t0
    assert not op.built
    assert build < 0.02                 # was 16–170 ms (the SVD); now ~0.1–0.7 ms
    # the deferred factorisation gives the same operator, whenever and in whatever dtype
    x = torch.randn(1, 3, 256, 256, generator=_g(0))
    late = operators.build(name, (3, 256, 256), **params).double()
    early = operators.build(name, (3, 256, 256), **params)
    early.A(x)
    early = early.double()
    assert torch.equal(late.A(x.double()), early.A(x.double()))
    assert late.built and early.built
    assert torch.equal(op.A(x), operators.build(name, (3, 256, 256), **params).A(x))


def test_restore_tells_the_user_about_an_inexact_pseudo_inverse():
    from dmir import pipeline

    notes = []
    img = torch.rand(1, 1, 16, 16, generator=_g(0)) * 2 - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", InexactPinvWarning)        # a note, not a warning
        pipeline.restore(img, "deblur_dps_gauss", method="ddnm", model="natural", degrade=True,
                         steps=2, note=notes.append, kernel_size=9, std=2.0)
    assert any("inexact pseudo-inverse" in n for n in notes)
