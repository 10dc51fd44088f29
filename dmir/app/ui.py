"""The ``dmir serve`` page (Gradio, ``pip install "dmir[app]"``): upload, task and sampler
fields, a brush for the inpainting mask, progress in network evaluations with the ETA, cancel,
before/after slider, PNG download, the equivalent ``dmir restore`` command, and PSNR/SSIM/LPIPS
in degrade mode. Every restoration goes through :meth:`dmir.app.jobs.Workspace.run`."""
# no `from __future__ import annotations`: Gradio reads the gr.Request annotations at run time
import logging
import os
from typing import Any

from ..errors import DmirError
from . import form as F
from .jobs import Cancelled, Workspace

_log = logging.getLogger("dmir.app")

RESTORE, DEGRADE = "restore a degraded photo", "degrade a clean photo, restore, measure"
WHITE_KEEPS, BLACK_KEEPS = "white = kept (dmir)", "black = kept"
#: defaults of the task fields (the real-photo defaults of dmir restore where it has one)
FIELD_DEFAULTS: dict[str, Any] = {"scale": 4, "ratio": 0.25, "block": 32, "kernel": "gauss:2",
                                  "weights": "", "boundary": None}
FIELD_LABELS = {"scale": "scale factor (integer ≥ 2)", "ratio": "fraction of measurements kept",
                "block": "block size", "kernel": "blur kernel: gauss:SIGMA[:SIZE], box:SIZE, "
                "motion:LENGTH:ANGLE", "weights": "gray weights W1,W2,W3 (empty: the "
                "default)", "boundary": "boundary"}


def message(kind: str, text: object) -> str:
    return f"**{kind}:** {' '.join(str(text).split())}"


def _action(flag: str):
    return next(a for a in F.restore_parser()._actions if flag in a.option_strings)


def _default(name: str):
    """A task field's initial value: ``dmir restore``'s own default for the option when it
    has one (e.g. the real-photo boundary), else :data:`FIELD_DEFAULTS`."""
    d = _action(F.TASK_FIELDS[name]).default
    return FIELD_DEFAULTS.get(name) if d is None else d


def painted(ed) -> tuple:
    """(pixels painted in the editor's layers, pixels of the photo)."""
    import numpy as np

    if not isinstance(ed, dict) or ed.get("background") is None:
        return 0, 0
    bg = np.asarray(ed["background"])
    fill = np.zeros(bg.shape[:2], bool)
    for layer in ed.get("layers") or []:
        a = np.asarray(layer)
        if a.ndim == 3 and a.shape[2] == 4 and a.shape[:2] == fill.shape:
            fill |= a[..., 3] > 0
    return int(fill.sum()), int(fill.size)


def _metrics_table(rows: dict) -> str:
    if not rows:
        return ""

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    lines = ["| | PSNR [dB] | SSIM | LPIPS |", "|---|---|---|---|"]
    lines += [f"| {k} | {f(r['PSNR'], '.2f')} | {f(r['SSIM'], '.4f')} | {f(r['LPIPS'], '.4f')} |"
              for k, r in rows.items()]
    if any(r["LPIPS"] is None for r in rows.values()):
        lines.append("\nLPIPS: run `dmir metrics setup --lpips` once to see it.")
    return "\n".join(lines)


def build(ws: Workspace, model: str, device: str = "cpu"):
    """The page as a ``gradio.Blocks``, serving restorations through ``ws``."""
    import gradio as gr

    from .. import operators, solvers

    tasks = operators.names()
    have = F.restore_options()
    with gr.Blocks(title="dmir — restore a photo") as page:
        gr.Markdown("## dmir — zero-shot photo restoration with a diffusion prior\n"
                    "Upload a photo, pick the task, paint the holes for inpainting, press "
                    "**Restore**. The command under the result reproduces it from the shell.")
        photo_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.File(label="Photo (PNG or JPEG)", file_types=[".png", ".jpg", ".jpeg"],
                                type="filepath", elem_id="photo")
                mode = gr.Radio([RESTORE, DEGRADE], value=RESTORE, label="mode",
                                elem_id="mode")
                task = gr.Dropdown(tasks, value="inpainting", label="task", elem_id="task")
                fields: dict[str, Any] = {}
                for name in F.TASK_FIELDS:
                    if F.TASK_FIELDS[name] not in have:     # this dmir restore lacks it
                        continue
                    kw: dict[str, Any] = dict(label=FIELD_LABELS[name], visible=False,
                                              elem_id=f"f-{name}")
                    value, choices = _default(name), _action(F.TASK_FIELDS[name]).choices
                    if name in ("scale", "block"):
                        fields[name] = gr.Number(value, precision=0, **kw)
                    elif name == "ratio":
                        fields[name] = gr.Number(value, **kw)
                    elif choices:                   # e.g. --boundary: a menu of its choices
                        c = list(choices)
                        fields[name] = gr.Dropdown(c, value=value if value in c else c[0], **kw)
                    else:
                        fields[name] = gr.Textbox(value, **kw)
                sigma = gr.Number(0.0, label="σ_y: measurement noise in [0, 1] pixel units",
                                  elem_id="sigma")
                with gr.Group(visible=True) as mask_group:
                    editor = gr.ImageEditor(
                        label="Inpainting mask: paint the region to fill (eraser to undo)",
                        type="numpy", image_mode="RGBA", sources=[], layers=False,
                        transforms=(), brush=gr.Brush(colors=["#ff00ff"], default_size=6),
                        eraser=gr.Eraser(default_size=6), elem_id="editor", height=420)
                    mask_info = gr.Markdown("Nothing painted yet.", elem_id="maskinfo")
                    mask_file = gr.File(label="…or a mask file (PNG or .npy)",
                                        file_types=[".png", ".jpg", ".jpeg", ".npy"],
                                        type="filepath", elem_id="maskfile")
                    convention = gr.Radio([WHITE_KEEPS, BLACK_KEEPS], value=WHITE_KEEPS,
                                          label="mask file convention", elem_id="convention")
                with gr.Accordion("sampler", open=True):
                    method = gr.Dropdown(solvers.names(), value="ddnm-equs+", label="method",
                                         elem_id="method")
                    prior = gr.Dropdown(F.model_choices(model), value=model, label="prior",
                                        allow_custom_value=False, elem_id="model")
                    with gr.Row():
                        steps = gr.Textbox("", label="steps (empty: the method's default)",
                                           placeholder="e.g. 100", elem_id="steps")
                        eta = gr.Textbox("", label="η in [0, 1] (empty: the method's default)",
                                         placeholder="e.g. 0.85", elem_id="eta")
                    with gr.Row():
                        seed = gr.Number(0, precision=0, label="seed", elem_id="seed")
                        samples = gr.Number(1, precision=0, label="K samples (their mean)",
                                            elem_id="samples")
                with gr.Row():
                    run_btn = gr.Button("Restore", variant="primary", elem_id="run")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=1):
                status = gr.Markdown("Upload a photo to begin.", elem_id="status")
                slider = gr.ImageSlider(label="before / after", type="filepath", format="png",
                                        elem_id="slider", interactive=False)
                download = gr.DownloadButton("Download PNG", value=None, elem_id="download",
                                             interactive=False)
                command = gr.Textbox(label="the same result from the shell", lines=2,
                                     interactive=False, elem_id="command")
                metrics = gr.Markdown(elem_id="metrics")

        def on_task(t):
            names = F.task_fields(t)
            return [gr.update(visible=n in names) for n in fields] + [
                gr.update(visible=t == "inpainting")]

        task.change(on_task, task, [*fields.values(), mask_group], queue=False)
        page.load(on_task, task, [*fields.values(), mask_group], queue=False)

        def on_photo(path):
            if not path:                  # cleared (by the user, or after a refused file)
                return None, None, gr.update(), gr.update()
            try:
                saved = ws.accept_upload(path)
            except DmirError as e:        # refused: say why, and empty the field for the next
                return None, None, message("Cannot use this file", e), None
            bg = {"background": saved, "layers": [], "composite": None}
            return (saved, bg, f"Photo loaded ({os.path.basename(saved)}). Choose the task.",
                    gr.update())

        def on_paint(ed):
            n, total = painted(ed)
            if not total:
                return "Nothing painted yet."
            return (f"Mask: {n:,} pixels to fill ({100 * n / total:.1f} %)" if n else
                    "Nothing painted yet.")

        editor.change(on_paint, editor, mask_info, queue=False, show_progress="hidden")

        photo.upload(on_photo, photo, [photo_state, editor, status, photo], queue=False)
        photo.clear(on_photo, photo, [photo_state, editor, status, photo], queue=False)

        named = {**fields, "sigma_y": sigma, "method": method, "model": prior, "steps": steps,
                 "eta": eta, "seed": seed, "samples": samples}

        def on_run(data, request: gr.Request, progress=gr.Progress()):
            # Gradio passes the inputs as one dict when they are given as a set
            saved, ed, mfile = data[photo_state], data[editor], data[mask_file]
            conv, md, t = data[convention], data[mode], data[task]
            vals = {k: data[c] for k, c in named.items()}
            no = (gr.update(), gr.update(value=None, interactive=False), "", "")
            if not saved:
                return (message("Error", "upload a photo first"), *no)
            try:
                fm = F.Form.from_values(task=t, degrade=md == DEGRADE, device=device,
                                        **{k: v for k, v in vals.items()
                                           if k not in fields or k in F.task_fields(t)})
                strokes = (ed or {}).get("layers") if isinstance(ed, dict) else None

                def prog(i, n, eta_s):
                    desc = f"{i}/{n} NFE" + (f", ETA {eta_s:.0f} s" if eta_s is not None else "")
                    progress((i, n), desc=desc, unit="NFE")

                r = ws.run(fm, saved, strokes=strokes, mask_file=mfile,
                           black_keeps=conv == BLACK_KEEPS, progress=prog,
                           session=getattr(request, "session_hash", "") or "",
                           waiting=lambda: progress(0, desc="waiting for the restoration of "
                                                    "another tab"))
            except Cancelled:
                return (message("Cancelled", "the restoration was stopped; nothing written"),
                        *no)
            except (DmirError, MemoryError) as e:
                return (message("Error", e), *no)
            except Exception as e:  # noqa: BLE001 - the page shows a message, never a traceback
                from ..models import memory

                if type(e).__name__ == "OutOfMemoryError" or memory.is_out_of_memory(e):
                    return (message("Error", "out of memory; try a smaller image or fewer "
                                    "samples"), *no)
                _log.exception("restoration failed")
                return (message("Error", f"the restoration failed ({type(e).__name__}: {e})"),
                        *no)
            notes = "".join(f"\n- {n}" for n in r.notes)
            text = (f"**Done** in {r.seconds:.1f} s, {r.nfe} network evaluations, seed "
                    f"{r.seed}.{notes}")
            return (text, (r.before, r.output), gr.update(value=r.output, interactive=True),
                    r.command, _metrics_table(r.metrics))

        inputs: set[Any] = {photo_state, editor, mask_file, convention, mode, task,
                            *named.values()}
        run_evt = run_btn.click(on_run, inputs, [status, slider, download, command, metrics],
                                concurrency_limit=1, concurrency_id="restore")

        def on_cancel(request: gr.Request):
            if ws.cancel(getattr(request, "session_hash", "") or ""):
                return message("Cancelled", "stopping after the current network evaluation")
            return gr.update()

        cancel_btn.click(on_cancel, None, status, queue=False, cancels=[run_evt])
    return page


def launch(ws: Workspace, model: str, device: str, host: str, port: int | None,
           block: bool = True):
    """Build the page and serve it (blocking unless ``block=False``)."""
    page = build(ws, model, device)
    page.queue(default_concurrency_limit=1, max_size=32)
    return page.launch(server_name=host, server_port=port, max_file_size=
                       f"{int(ws.max_upload_mb * 1024)}kb", allowed_paths=[ws.root],
                       show_error=False, ssr_mode=False, prevent_thread_lock=not block,
                       footer_links=[], quiet=True)


__all__ = ["build", "launch", "message"]
