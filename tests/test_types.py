"""Typing: the Protocols every prior and operator satisfies, the Literal option types agree with
the option lists the code checks at run time, and the package is marked typed (py.typed)."""
from pathlib import Path
from typing import get_args

import pytest
import torch

import dmir
from dmir import models, operators, solvers, types
from dmir.data import CROP_MODES


def test_literals_match_runtime_options():
    assert set(get_args(types.EqusGroup)) == set(solvers.EQUS_GROUPS)
    assert set(get_args(types.CropMode)) == set(CROP_MODES)
    import importlib
    fid, lpips = (importlib.import_module(f"dmir.metrics.{m}") for m in ("fid", "lpips"))
    assert set(get_args(types.LpipsNet)) == set(lpips.NETS)
    assert set(get_args(types.LpipsInputRange)) == set(lpips.INPUT_RANGES)
    assert set(get_args(types.FidInputScale)) == set(fid.INPUT_SCALES)
    for s in get_args(types.Schedule):           # every literal is accepted ...
        solvers.make_plan(10, 1000, s)
    with pytest.raises(Exception):               # ... and other strings are not
        solvers.make_plan(10, 1000, "cosine")


@pytest.mark.parametrize("name", ["natural", "patch-gmm", models.LEARNED_PRIOR])
def test_builtin_priors_satisfy_the_prior_protocol(name):
    assert isinstance(models.load(name), types.Prior)


def test_operators_satisfy_the_operator_protocol():
    shape = (3, 16, 16)
    ops = [operators.build("sr_averagepooling", shape, scale=2),
           operators.build("colorization", shape),
           operators.build("inpainting", shape, mask=torch.ones(16, 16)),
           operators.build("deblur", shape, kernel=torch.ones(3, 3) / 9)]
    for op in ops:
        assert isinstance(op, types.Operator), op.name
    assert isinstance(ops[0], types.SVDOperator)
    assert not isinstance(object(), types.Operator) and not isinstance(ops[0], types.Prior)


def test_a_duck_typed_prior_works_with_a_solver():
    class Zero:                                   # no dmir base class, only the protocol
        alphas_cumprod = models.make_schedule("linear", 1000)
        num_timesteps = 1000

        def eps(self, x_t, t):
            return torch.zeros_like(x_t)

    p = Zero()
    assert isinstance(p, types.Prior)
    op = operators.build("sr_averagepooling", (1, 8, 8), scale=2)
    y = op.A(torch.rand(1, 1, 8, 8) * 2 - 1)
    x = solvers.build("ddnm", p, op, steps=5).sample(y, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(op.A(x), y, atol=1e-5)


def test_package_is_marked_typed():
    assert (Path(dmir.__file__).parent / "py.typed").is_file()
