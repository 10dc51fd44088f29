"""``dmir serve``: the local web app (:mod:`dmir.app`). Needs the ``app`` extra (Gradio)."""
from __future__ import annotations

import importlib.util
import ipaddress

from ..models.builtin import DEFAULT_MODEL
from .common import UsageError, note

INSTALL = 'pip install "dmir[app]"'


def add_parser(sub) -> None:
    s = sub.add_parser("serve", help="restore photos in the browser: a local web app (needs "
                       f"{INSTALL})",
                       description="Serve a local web page to restore photos: upload, choose "
                       "the task, paint the inpainting mask, watch the progress, compare "
                       "before/after, download the PNG, and copy the equivalent 'dmir restore' "
                       "command. One restoration at a time; the prior is loaded once. Binds to "
                       f"127.0.0.1 unless --host says otherwise. Needs the app extra: {INSTALL}.")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; anything else "
                   "exposes the app to the network, with a warning)")
    s.add_argument("--port", type=int, default=7860, metavar="N", help="port (default 7860)")
    s.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME",
                   help=f"the prior selected at start (default {DEFAULT_MODEL})")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu or cuda")
    s.add_argument("--max-upload-mb", type=float, default=25, metavar="MB",
                   help="largest upload accepted (default 25 MB)")
    s.add_argument("--max-pixels", type=int, default=4096 * 4096, metavar="N",
                   help="largest photo accepted, in pixels (default 4096*4096)")
    s.add_argument("--workdir", metavar="DIR",
                   help="folder for uploads and results (default: a new temporary folder)")


def _local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(a) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise UsageError(f"dmir serve needs Gradio, which is not installed: {INSTALL}")
    if not 1 <= a.port <= 65535:
        raise UsageError(f"--port must be in 1..65535, got {a.port}")
    if a.max_upload_mb <= 0 or a.max_pixels <= 0:
        raise UsageError("--max-upload-mb and --max-pixels must be positive")
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    import os
    import warnings

    from ..app.jobs import Workspace

    ws = Workspace(a.workdir, max_upload_mb=a.max_upload_mb, max_pixels=a.max_pixels,
                   device=a.device)
    # Gradio keeps its own copies of uploads: inside the workspace too, and no telemetry
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(ws.root, "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if not _local(a.host):
        warnings.warn(f"dmir serve: binding to {a.host} makes the app reachable from other "
                      "machines; it has no authentication", stacklevel=1)
    from ..app import ui

    note(f"uploads and results go to {ws.root}")
    print(f"dmir serve: http://{a.host if ':' not in a.host else f'[{a.host}]'}:{a.port}/ "
          f"(prior {a.model}, {a.device}; Ctrl-C stops)", flush=True)
    ui.launch(ws, a.model, a.device, a.host, a.port, block=True)
    return 0
