"""The page's fields → the ``dmir restore`` command line → :func:`dmir.pipeline.restore`'s
arguments. This is the one place that maps them (:func:`plan` and :func:`restore_arguments`):
the app runs exactly the command it shows, so a result in the browser is reproduced from the
shell bit for bit.

How the mapping stays one implementation: the app builds the argument list of ``dmir
restore``, parses it with the CLI's own parser (``dmir.cli.restore.add_parser``), checks it
with the CLI's own option checks, and converts it with the CLI's own converters (task
parameters, masks, kernels, fast-path options). Only the final ``pipeline.restore`` call is
the app's, with the same keywords as the CLI's.

Options that only some versions of ``dmir restore`` have (``--boundary``, ``--weights``, …)
are feature-detected from that parser (:func:`restore_options`): a field appears on the page
only when the installed command has the option. To expose a new task option, add it to
:data:`TASK_FIELDS` (field name → flag); nothing else changes.
"""
from __future__ import annotations

import argparse
import functools
import shlex
from dataclasses import dataclass, fields

from ..errors import ParameterError
from ..models.builtin import DEFAULT_MODEL

#: task parameter fields of the page → ``dmir restore`` flags. A field is offered for a task
#: when the task takes the parameter (``pipeline.task_params``) AND the installed ``dmir
#: restore`` has the flag (:func:`restore_options`). ``--boundary`` (deblur) arrives with the
#: real-photo options; until then it is simply not shown.
TASK_FIELDS = {"scale": "--scale", "ratio": "--ratio", "block": "--block",
               "kernel": "--kernel", "weights": "--weights", "boundary": "--boundary"}


class FormError(ParameterError):
    """A field of the page that ``dmir restore`` would not accept."""


@dataclass
class Form:
    """The page's fields (None / "" = not given: the command's default)."""

    task: str = "inpainting"
    degrade: bool = False
    scale: int | None = None
    ratio: float | None = None
    block: int | None = None
    kernel: str | None = None
    weights: str | None = None
    boundary: str | None = None
    sigma_y: float = 0.0
    method: str = "ddnm-equs+"
    model: str = DEFAULT_MODEL
    steps: int | None = None
    eta: float | None = None
    samples: int = 1
    seed: int = 0
    device: str = "cpu"

    @classmethod
    def from_values(cls, **values) -> Form:
        """A form from the widgets' raw values (numbers may arrive as floats or None; unknown
        keys are an error)."""
        names = {f.name for f in fields(cls)}
        bad = set(values) - names
        if bad:
            raise FormError(f"unknown form fields: {', '.join(sorted(bad))}")
        out = {}
        for k, v in values.items():
            if isinstance(v, str) and k in _NUMBERS:
                v = v.strip()
                if v:
                    try:
                        v = _NUMBERS[k](v)
                    except ValueError:
                        raise FormError(f"{k.replace('_', ' ')} must be "
                                        f"{'an integer' if _NUMBERS[k] is int else 'a number'}"
                                        f", got {v!r}") from None
            if v is not None and v != "":
                out[k] = v
        return cls(**out)


#: numeric fields that may arrive as text
_NUMBERS = {"scale": int, "block": int, "steps": int, "samples": int, "seed": int,
            "ratio": float, "sigma_y": float, "eta": float}


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`FormError` instead of printing and exiting."""

    def error(self, message):
        raise FormError(message)

    def exit(self, status=0, message=None):
        raise FormError(message or f"exit {status}")


@functools.lru_cache(maxsize=1)
def restore_parser() -> argparse.ArgumentParser:
    """The parser of ``dmir restore`` (the CLI's own definition)."""
    from ..cli import restore as restore_cli

    top = _Parser(prog="dmir", add_help=False)
    sub = top.add_subparsers(dest="command", parser_class=_Parser)
    restore_cli.add_parser(sub)
    return sub.choices["restore"]


def restore_options() -> set:
    """Every option string the installed ``dmir restore`` accepts (feature detection)."""
    return {o for act in restore_parser()._actions for o in act.option_strings}


def task_fields(task: str) -> list:
    """The :data:`TASK_FIELDS` the page offers for ``task``."""
    from .. import pipeline

    allowed, _ = pipeline.task_params(task)
    have = restore_options()
    return [name for name, flag in TASK_FIELDS.items() if name in allowed and flag in have]


def _number(v) -> str:
    """A number as the command line writes it: integers without a point, floats as repr (the
    exact double)."""
    f = float(v)
    return str(int(f)) if f.is_integer() and not isinstance(v, float) else repr(f)


@dataclass
class Plan:
    """A restoration ready to run: the ``dmir restore`` arguments and their parsed form."""

    argv: list                  # the arguments after ``dmir restore``
    args: argparse.Namespace    # as the CLI parses them

    @property
    def command(self) -> str:
        """The equivalent shell command line."""
        return shlex.join(["dmir", "restore", *self.argv])


def plan(form: Form, input_path: str, output_path: str, mask_path: str | None = None) -> Plan:
    """The ``dmir restore`` command for ``form`` on the files of one job; checked as the CLI
    checks it (:class:`FormError` / :class:`~dmir.errors.DmirError` with the CLI's message)."""
    from .. import operators, solvers
    from ..cli import restore as restore_cli

    task = form.task
    if task not in operators.names():
        raise FormError(f"unknown task {task!r}; available: {', '.join(operators.names())}")
    if form.method not in solvers.names():
        raise FormError(f"unknown method {form.method!r}")
    argv = [str(input_path), "-o", str(output_path), "--task", task]
    for name in task_fields(task):
        v = getattr(form, name)
        if v is None or (isinstance(v, str) and not v.strip()):
            continue
        argv += [TASK_FIELDS[name], v.strip() if isinstance(v, str) else _number(int(v))
                 if name in ("scale", "block") else _number(float(v))]
    if task == "inpainting":
        if mask_path is None:
            raise FormError("inpainting needs a mask: paint the region to fill with the brush, "
                            "or upload a mask file")
        argv += ["--mask", str(mask_path)]
    if float(form.sigma_y):
        argv += ["--sigma-y", _number(float(form.sigma_y))]
    if form.degrade:
        argv.append("--degrade")
    argv += ["--method", form.method, "--model", str(form.model)]
    if form.steps is not None:
        argv += ["--steps", _number(int(form.steps))]
    if form.eta is not None:
        argv += ["--eta", _number(float(form.eta))]
    argv += ["--samples", _number(int(form.samples)), "--seed", _number(int(form.seed)),
             "--device", form.device]
    a = restore_parser().parse_args(argv)
    a.quiet = False
    restore_cli._check_numbers(a)
    restore_cli._check_init_opt(a)
    if task.startswith("cs_") and not a.degrade:
        raise FormError(f"task {task!r} needs 'degrade a clean photo': a compressed-sensing "
                        "measurement is not an image")
    return Plan(argv, a)


def restore_arguments(a: argparse.Namespace, image_shape) -> dict:
    """:func:`dmir.pipeline.restore` keywords (all but the image) for the parsed command
    ``a`` and an input of ``image_shape`` (1, C, H, W): the keywords ``dmir restore`` passes,
    converted by its own helpers (masks, kernels, weights, fast path)."""
    from ..cli import restore as restore_cli

    _, C, H, W = image_shape
    params = restore_cli._operator_params(a, a.task, C, (H, W))
    return dict(task=a.task, method=a.method, model=a.model, degrade=a.degrade,
                sigma_y=a.sigma_y, poisson=a.poisson, steps=a.steps, eta=a.eta,
                samples=a.samples, seed=a.seed, device=a.device, tile=a.tile,
                fast=restore_cli._fast_options(a), dtype=a.dtype, class_label=a.class_label,
                **params)


def model_choices(default: str | None = None) -> list:
    """Priors the page offers: the built-in ones, named checkpoints with a local copy in the
    cache, and ``default`` (``dmir serve --model``)."""
    from ..checkpoints import registry
    from ..models.builtin import builtin_names

    out = list(builtin_names())
    for name in registry.names():
        try:
            if registry.local_path(registry.get(name)):
                out.append(name)
        except Exception:  # noqa: BLE001 - a broken cache entry is simply not offered
            pass
    if default and default not in out:
        out.insert(0, default)
    return out


__all__ = ["Form", "FormError", "Plan", "plan", "restore_arguments", "restore_options",
           "task_fields", "model_choices", "TASK_FIELDS"]
