"""Issue 26 (hardening audit), causes 7–15 and 21: the library entry point
:func:`dmir.pipeline.restore` checks its arguments, the operators its registry builds and the
results its solvers return; one test (or more) per cause, the cause number in each name, and a
seeded property test over random combinations of everything it takes.
Everything runs the analytic ``natural`` prior on tiny images with a few steps."""
import math
import random
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dmir import models, operators, pipeline, solvers
from dmir.errors import (DmirError, InputError, NumericalError, ParameterError, ShapeError,
                         UnknownKeywordError)

FAST = dict(model="natural", method="ddnm", steps=2)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", solvers.FewStepsWarning)
        yield


def _img(C=3, H=8, W=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, C, H, W, generator=g) * 1.6 - 0.8           # model domain


# ----------------------------------------------------------------------------- cause 7
def test_cause07_dtype_uint8_is_read_as_0_255_and_float64_runs():
    x = _img()
    u8 = torch.round((x[0] + 1) / 2 * 255).to(torch.uint8)              # (C, H, W) uint8
    r8 = pipeline.restore(u8, "denoising", **FAST)                      # was NotImplementedError
    assert r8.image.dtype == torch.uint8 and tuple(r8.image.shape) == (3, 8, 8)
    # the uint8 image restored as an identity denoising comes back within a level or two
    assert (r8.image.int() - u8.int()).abs().max() <= 2
    r64 = pipeline.restore(x.double(), "sr_averagepooling", scale=2, **FAST)   # was: convert op
    assert r64.image.dtype == torch.float64 and tuple(r64.image.shape) == (1, 3, 16, 16)
    r32 = pipeline.restore(x, "sr_averagepooling", scale=2, **FAST)
    assert torch.allclose(r64.image.float(), r32.image, atol=1e-5)
    with pytest.raises(InputError, match="int64.*uint8"):
        pipeline.restore(np.zeros((8, 8, 3), np.int64), "denoising", **FAST)


# ----------------------------------------------------------------------------- cause 8
@pytest.mark.parametrize("device", ["bogus", "meta", 3.5, "cuda:99"])
def test_cause08_device_is_checked_first(device):
    with pytest.raises(ParameterError, match="device"):
        pipeline.restore(_img(), "denoising", device=device, **FAST)


def test_cause08_an_image_on_the_meta_device():
    with pytest.raises(InputError, match="meta"):
        pipeline.restore(torch.zeros(1, 3, 8, 8, device="meta"), "denoising", **FAST)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cause08_cuda_without_cuda_is_a_parameter_error():
    with pytest.raises(ParameterError, match="no CUDA device"):
        pipeline.restore(_img(), "denoising", device="cuda", **FAST)   # was AssertionError


# ----------------------------------------------------------------------------- cause 9
@pytest.mark.parametrize("seed", [2 ** 70, float("nan"), -1, 1.5, True, "3", None])
def test_cause09_seed_outside_0_to_2_64_is_refused(seed):
    with pytest.raises(ParameterError, match="seed"):
        pipeline.restore(_img(), "denoising", seed=seed, **FAST)


def test_cause09_seed_at_the_limit_and_numpy_integers_run():
    a = pipeline.restore(_img(), "denoising", seed=2 ** 64 - 1, **FAST).x
    b = pipeline.restore(_img(), "denoising", seed=np.int64(5), **FAST).x
    assert torch.isfinite(a).all() and torch.isfinite(b).all()


# ----------------------------------------------------------------------------- cause 10
@pytest.mark.parametrize("samples", [0, -5, 2.5, True, "2"])
def test_cause10_samples_must_be_a_positive_integer(samples):
    with pytest.raises(ParameterError, match="samples"):
        pipeline.restore(_img(), "denoising", samples=samples, **FAST)


def test_cause10_check_memory_refuses_negative_samples():
    with pytest.raises(ParameterError, match="samples"):
        pipeline.check_memory((3, 8, 8), samples=-5)          # returned a negative size
    assert pipeline.check_memory((3, 8, 8), samples=2) > pipeline.check_memory((3, 8, 8), 1) > 0


# ----------------------------------------------------------------------------- cause 11
@pytest.mark.parametrize("model", [None, object(), 5, ""])
def test_cause11_model_must_be_a_name_path_or_prior(model):
    with pytest.raises(ParameterError, match="model"):
        pipeline.restore(_img(), "denoising", model=model, method="ddnm", steps=2)


def test_cause11_models_load_refuses_a_non_path():
    for bad in (5, None, ""):
        with pytest.raises(ParameterError, match="models.load takes a name"):
            models.load(bad)


def test_cause11_a_loaded_prior_object_is_accepted():
    prior = models.GaussianPrior(torch.zeros(3, 8, 8), 0.25)
    r = pipeline.restore(_img(), "denoising", model=prior, method="ddnm", steps=2)
    assert r.prior is prior and torch.isfinite(r.x).all()


# ----------------------------------------------------------------------------- cause 12
@pytest.mark.parametrize("key", ["eta", "steps", "sigma_y"])
def test_cause12_solver_options_repeating_an_argument(key):
    with pytest.raises(ParameterError, match=f"repeats '{key}'"):      # was TypeError
        pipeline.restore(_img(), "denoising", solver_options={key: 0.5}, **FAST)


def test_cause12_an_unknown_solver_option_is_a_parameter_error():
    with pytest.raises(ParameterError, match="bogus"):
        pipeline.restore(_img(), "denoising", solver_options={"bogus": 1}, **FAST)


# ----------------------------------------------------------------------------- cause 13
@pytest.fixture
def registered():
    names = []

    def reg(name, builder, params=()):
        operators.register(name, list(params), "test", builder=builder, replace=True)
        names.append(name)
    yield reg
    for n in names:
        operators.registry.unregister(n)


def test_cause13_builder_with_a_wrong_shaped_adjoint(registered):
    def build(shape):
        C, H, W = shape
        return operators.FunctionOperator(lambda x: x[..., ::2, :],
                                          lambda y: torch.cat([y, y], -2),   # right shape
                                          shape, (C, H // 2, W), check=False)

    def bad(shape):
        op = build(shape)
        op._fAt = lambda y: y                                   # (C, H/2, W): wrong
        return op
    registered("half_rows_ok", build)
    registered("half_rows_bad", bad)
    assert torch.isfinite(pipeline.restore(_img(), "half_rows_ok", degrade=True, **FAST).x).all()
    with pytest.raises(ShapeError, match="half_rows_bad.*At"):
        pipeline.restore(_img(), "half_rows_bad", degrade=True, **FAST)


@pytest.mark.parametrize("result", [42, None, "op"])
def test_cause13_builder_returning_a_non_operator(registered, result):
    registered("returns_junk", lambda shape: result)
    with pytest.raises(ParameterError, match="returns_junk.*not an operator"):
        pipeline.restore(_img(), "returns_junk", **FAST)


def test_cause13_operator_for_another_shape(registered):
    registered("wrong_size", lambda shape: operators.build("denoising", (3, 4, 4)))
    with pytest.raises(ShapeError, match=r"wrong_size.*\(3, 4, 4\)"):
        pipeline.restore(_img(), "wrong_size", **FAST)


# ----------------------------------------------------------------------------- cause 14
def _fop(**kw):
    args = dict(A=lambda x: x, At=lambda y: y, x_shape=(1, 4, 4), y_shape=(1, 4, 4))
    args.update(kw)
    return operators.FunctionOperator(**args)


@pytest.mark.parametrize("kw", [dict(x_shape=(1, -4, 4)), dict(y_shape=(1, 4, -4)),
                                dict(x_shape=(1, 0, 4)), dict(x_shape=(1, 2.5, 4)),
                                dict(x_shape="abc")])
def test_cause14_function_operator_refuses_bad_shapes(kw):
    with pytest.raises(ShapeError, match="positive whole numbers"):
        _fop(**kw)


@pytest.mark.parametrize("kw", [dict(cg_iters=float("nan")), dict(cg_iters=-1),
                                dict(cg_iters=0), dict(cg_tol=float("nan")), dict(cg_tol=-1.0)])
def test_cause14_function_operator_refuses_bad_cg_settings(kw):
    with pytest.raises(ParameterError, match="cg_"):
        _fop(**kw)


def test_cause14_function_operator_pinv_still_inverts():
    op = _fop(A=lambda x: 2 * x, At=lambda y: 2 * y, cg_iters=5)
    y = torch.randn(2, 1, 4, 4)
    assert torch.allclose(op.pinv(y), y / 2, atol=1e-5)           # cg_iters=-1 gave zeros


# ----------------------------------------------------------------------------- cause 15
class _Junk:
    def __init__(self, model, op, sigma_y=0.0, steps=None, eta=None, result="nan"):
        self.result, self.steps, self.eta = result, steps or 1, eta or 0.0
        if result == "small, no .op":             # a solver that does not expose its operator
            self._op = op
        else:
            self.op = op

    def sample(self, y, x_T=None, generator=None, progress=None, callback=None):
        B = y.shape[0]
        if self.result == "nan":
            return torch.full((B, *self.op.x_shape), float("nan"))
        if self.result.startswith("small"):
            return torch.zeros(B, 3, 5, 5)
        return None


@pytest.fixture
def junk_solver():
    solvers.register("junk", _Junk, "test", replace=True)
    yield
    solvers.unregister("junk")


@pytest.mark.parametrize("result,err,msg", [("nan", NumericalError, "NaN/Inf"),
                                            ("small", ShapeError, r"\(1, 3, 5, 5\).*16, 16"),
                                            ("small, no .op", ShapeError, r"\(1, 3, 5, 5\)"),
                                            ("none", ShapeError, "NoneType")])
def test_cause15_solver_results_are_checked(junk_solver, result, err, msg):
    with pytest.raises(err, match=msg):
        pipeline.restore(_img(H=16, W=16), "denoising", model="natural", method="junk",
                         solver_options={"result": result})


# ----------------------------------------------------------------------------- cause 21
def test_cause21_images_in_0_255_are_refused_with_advice():
    x255 = torch.rand(1, 3, 8, 8) * 255
    for rng in (None, "model", "unit"):
        with pytest.raises(InputError, match="0..255"):
            pipeline.restore(x255, "denoising", input_range=rng, **FAST)
    with pytest.raises(InputError, match="0..255"):
        pipeline.restore(np.random.rand(8, 8, 3) * 255, "denoising", **FAST)


def test_cause21_results_stay_in_the_input_range():
    x = torch.rand(1, 3, 8, 8)
    r = pipeline.restore(x, "sr_averagepooling", scale=2, input_range="unit", **FAST)
    assert 0.0 <= float(r.image.min()) and float(r.image.max()) <= 1.0
    r = pipeline.restore(x * 2 - 1, "sr_averagepooling", scale=2, input_range="model", **FAST)
    assert -1.0 <= float(r.image.min()) and float(r.image.max()) <= 1.0


# ----------------------------------------------------------------------------- property test
def _case(rnd: random.Random):
    """A random combination of everything restore takes (each argument wrong with a small
    probability, so that both results and errors occur): (image, task, keywords)."""
    def pick(good, bad=(), p_bad=0.06):
        return rnd.choice(list(bad)) if bad and rnd.random() < p_bad else rnd.choice(list(good))

    kind = pick(["pil", "np_u8", "np_u16", "np_f32", "np_f64", "pt_u8", "pt_f16", "pt_f32",
                 "pt_f64", "list"], ["np_i64", "np_bool", "pt_i32", "junk"])
    C = pick([1, 3, 3], [2, 4], 0.1)
    H, W = pick([(8, 8), (8, 12), (12, 8)], [(6, 8), (0, 8)])
    B = rnd.choice([1, 1, 2])
    layout = pick(["hw", "chw", "bchw", "hwc"], ["5d"])
    scale255 = rnd.random() < 0.05
    g = np.random.default_rng(rnd.randrange(2 ** 32))
    u = g.random((B, H, W, C))
    if kind == "pil":
        mode = {1: "L", 3: "RGB", 2: "LA", 4: "RGBA"}[C]
        arr = (g.random((max(H, 1), W, C)) * 255).astype(np.uint8)
        image = Image.fromarray(arr[:, :, 0] if C == 1 else arr, mode)
    elif kind.startswith("np"):
        dt = {"np_u8": np.uint8, "np_u16": np.uint16, "np_f32": np.float32,
              "np_f64": np.float64, "np_i64": np.int64, "np_bool": bool}[kind]
        peak = {"np_u8": 255, "np_u16": 65535}.get(kind, 1)
        a = (u * peak * (255 if scale255 else 1)).astype(dt)
        image = {"hw": a[0, :, :, 0], "chw": a[0].transpose(2, 0, 1), "bchw": a,
                 "hwc": a[0], "5d": a[None]}[layout]
    elif kind.startswith("pt") or kind == "list":
        t = torch.from_numpy(u).permute(0, 3, 1, 2)
        if kind == "pt_u8":
            t = (t * 255).to(torch.uint8)
        elif kind == "pt_i32":
            t = (t * 255).to(torch.int32)
        else:
            t = t.to({"pt_f16": torch.float16, "pt_f64": torch.float64}.get(kind,
                                                                           torch.float32))
            if rnd.random() < 0.5:
                t = t * 2 - 1
            if scale255:
                t = t * 255
        image = {"hw": t[0, 0], "chw": t[0], "bchw": t, "hwc": t[0].permute(1, 2, 0),
                 "5d": t[None]}[layout]
        if kind == "list":
            image = [t[i] for i in range(B)]
    else:
        image = rnd.choice(["photo.png", 5, None, [1, 2, 3]])
    task = pick(["denoising", "sr_averagepooling", "inpainting", "colorization", "deblur"],
                ["no_such_task"])
    kw = dict(method=pick(["ddnm", "ddnm", "ddrm"], ["no-such-method"]),
              steps=rnd.choice([1, 2, 3]))
    if task == "sr_averagepooling":
        kw["scale"] = pick([2], [3, 0, 2.5])
    if task == "inpainting":
        kw["mask"] = pick([np.ones((H, W)), (g.random((H, W)) > 0.3).astype(np.uint8),
                           Image.fromarray(((g.random((max(H, 1), W)) > 0.3) * 255)
                                           .astype(np.uint8))],
                          [np.ones((5, 5)), np.full((H, W), 0.5)])
    if task == "deblur":
        kw["kernel"] = pick(["gauss:1", "box:3", "motion:3:20"], ["gauss:-1", "box:99"])
    for name, good, bad in (("input_range", [None, None, "unit", "model"], ["bogus"]),
                            ("device", ["cpu"], ["meta", "bogus", "cuda", 3]),
                            ("seed", [0, 7, 2 ** 64 - 1], [2 ** 70, -1, float("nan")]),
                            ("samples", [1, 1, 2], [0, -5, 2.5]),
                            ("model", ["natural"], [None, object(), "no-such-model"]),
                            ("solver_options", [None, {}, {"travel_length": 2}],
                             [{"eta": 0.5}, {"bogus": 1}]),
                            ("output_type", [None, None, "pil", "np", "pt"], ["jpeg"]),
                            ("sigma_y", [0.0, 0.05], [-1.0]),
                            ("generator", [None, None, torch.Generator().manual_seed(1)],
                             ["gen"])):
        kw[name] = pick(good, bad)
    if kw["generator"] is not None:
        kw["seed"] = 0
    if rnd.random() < 0.05:
        kw["num_inference_steps"] = 5
    return image, task, kw


def _check_result(r, task, kw):
    x = r.x
    assert isinstance(x, torch.Tensor) and x.dim() == 4 and torch.isfinite(x).all()
    assert x.shape[1] in (1, 3)
    img = r.image
    out = kw.get("output_type")
    if isinstance(img, list):
        assert len(img) == x.shape[0]
        img = img[0]
    if isinstance(img, Image.Image):
        assert img.size == (x.shape[-1], x.shape[-2])
    elif isinstance(img, np.ndarray):
        v = img.astype(np.float64)
        peak = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(img.dtype, 1.0)
        assert v.min() >= -peak - 1e-3 and v.max() <= peak + 1e-3
        assert x.shape[-1] in img.shape
    else:
        assert isinstance(img, torch.Tensor), type(img)
        v = img.double()
        peak = 255 if img.dtype == torch.uint8 else 1.0
        assert v.min() >= -peak - 1e-3 and v.max() <= peak + 1e-3
        assert img.shape[-1] == x.shape[-1] and img.shape[-2] == x.shape[-2]
    if out is None and task == "sr_averagepooling":
        assert x.shape[-1] % kw["scale"] == 0


def test_property_random_calls_give_a_result_or_a_dmir_error():
    rnd = random.Random(2026)
    outcomes = {"ok": 0, "dmir": 0}
    for i in range(200):
        image, task, kw = _case(rnd)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = pipeline.restore(image, task, **kw)
        except DmirError:
            outcomes["dmir"] += 1
            continue
        except Exception as e:  # noqa: BLE001
            raise AssertionError(f"case {i}: {task} {type(image).__name__} {kw}: "
                                 f"{type(e).__name__}: {e}") from e
        _check_result(r, task, kw)
        batch = (len(image) if isinstance(image, list) else image.shape[0]
                 if getattr(image, "ndim", 0) == 4 else 1)
        assert r.x.shape[0] == batch, (i, r.x.shape, batch)
        outcomes["ok"] += 1
    # both branches are exercised: the property test is not all errors, nor all successes
    assert outcomes["ok"] >= 20 and outcomes["dmir"] >= 20, outcomes


def test_property_unknown_keyword_is_named():
    with pytest.raises(UnknownKeywordError, match="num_inference_steps.*steps="):
        pipeline.restore(_img(), "denoising", num_inference_steps=5, **FAST)
    assert math.isfinite(float(pipeline.restore(_img(), "denoising", **FAST).x.sum()))
