"""The app's server side, independent of the web framework: a temporary workspace, upload
checks, masks from brush strokes, one restoration at a time with the prior loaded once,
progress and cancel.

Every file the app reads or writes lies inside :attr:`Workspace.root` (a fresh temporary
folder): uploads are copied there under names the app chooses (never the uploaded name), and
each restoration gets its own ``job-N`` folder with ``input.*``, ``mask.png`` (white = kept,
the ``dmir restore --mask`` convention), ``restored.png`` and the ``before.png`` shown on the
slider.
"""
from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import DmirError, InputError, ResourceError
from . import form as F

#: upload defaults (``dmir serve --max-upload-mb / --max-pixels``)
MAX_UPLOAD_MB = 25
MAX_PIXELS = 4096 * 4096
_EXTENSIONS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg"}


class Cancelled(Exception):
    """The user pressed Cancel; raised from the progress callback between network calls."""


@dataclass
class Result:
    """What one restoration produced (paths inside the job folder)."""

    output: str                   # restored.png, written by dmir.io.write_image
    before: str                   # what the slider shows on its "before" side
    command: str                  # the equivalent dmir restore command line
    seed: int
    seconds: float
    nfe: object
    notes: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)   # degrade mode: PSNR/SSIM/LPIPS rows


class Workspace:
    """A temporary folder, the loaded priors and the one-at-a-time lock of one server."""

    def __init__(self, root: str | None = None, max_upload_mb: float = MAX_UPLOAD_MB,
                 max_pixels: int = MAX_PIXELS, device: str = "cpu"):
        self.root = os.path.realpath(root or tempfile.mkdtemp(prefix="dmir-serve-"))
        os.makedirs(self.root, exist_ok=True)
        self.max_upload_mb, self.max_pixels, self.device = max_upload_mb, max_pixels, device
        self.lock = threading.Lock()            # one restoration at a time per process
        self._priors: dict = {}
        self._prior_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._cancel: dict = {}                 # session → threading.Event of its running job
        self.loads = 0                          # how many times a prior was loaded (tests)

    # ------------------------------------------------------------------ files
    def new_dir(self, kind: str = "job") -> str:
        d = os.path.join(self.root, f"{kind}-{next(self._ids)}")
        os.makedirs(d)
        return d

    def inside(self, path: str) -> bool:
        p = os.path.realpath(path)
        return os.path.commonpath([p, self.root]) == self.root

    def accept_upload(self, path: str) -> str:
        """Check an uploaded photo (type, file size, pixel count, readable by dmir) and copy it
        into a new folder of the workspace as ``input.png``/``input.jpg``; returns the copy.
        Raises :class:`~dmir.errors.DmirError` with a message for the page."""
        from PIL import Image

        from .. import io as dio

        if not path or not os.path.isfile(path):
            raise InputError("no file arrived; upload a PNG or JPEG photo")
        ext = _EXTENSIONS.get(os.path.splitext(path)[1].lower())
        if ext is None:
            raise InputError(f"'{os.path.basename(path)}' is not a PNG or JPEG file")
        size = os.path.getsize(path)
        if size > self.max_upload_mb * 2 ** 20:
            raise ResourceError(f"the file is {size / 2 ** 20:.1f} MB; this server accepts "
                                f"uploads up to {self.max_upload_mb:g} MB (--max-upload-mb)")
        try:
            with Image.open(path) as im:             # reads the header only
                w, h = im.size
        except Exception:  # noqa: BLE001 - any decoder failure is a bad file
            raise InputError(f"'{os.path.basename(path)}' is not a readable image") from None
        if w * h > self.max_pixels:
            raise ResourceError(f"the photo is {w}×{h} = {w * h:,} pixels; this server accepts "
                                f"at most {self.max_pixels:,} pixels (--max-pixels)")
        d = self.new_dir("upload")
        dst = os.path.join(d, "input" + ext)
        shutil.copyfile(path, dst)
        dio.read_image(dst)                          # decodable as dmir reads it (raises)
        return dst

    def write_mask(self, folder: str, shape, strokes=None, mask_file: str | None = None,
                   black_keeps: bool = False) -> str | None:
        """``folder/mask.png`` (white = kept) for an image of ``shape`` (H, W): pixels painted
        in ``strokes`` (RGBA layers from the editor; alpha > 0 = fill) or black in the mask
        file (white in it when ``black_keeps``) are filled. None when neither marks anything."""
        from PIL import Image

        from .. import io as dio

        H, W = shape
        fill = np.zeros((H, W), bool)
        given = False
        for layer in strokes or []:
            a = np.asarray(layer)
            if a.ndim != 3 or a.shape[2] != 4:
                continue
            paint = a[..., 3] > 0
            if paint.shape != (H, W):               # the editor kept another size: rescale
                paint = np.asarray(Image.fromarray(paint).resize((W, H), Image.Resampling.NEAREST))
            fill |= paint
            given = given or bool(paint.any())
        if mask_file:
            if not os.path.isfile(mask_file):
                raise InputError("the mask file did not arrive; upload it again")
            m = dio.load_mask(mask_file).numpy()
            if m.ndim == 3:
                m = m.min(axis=0)
            if m.shape != (H, W):
                raise InputError(f"the mask is {m.shape[1]}×{m.shape[0]} pixels but the photo "
                                 f"is {W}×{H}; they must have the same size")
            fill |= (m > 0.5) if black_keeps else (m < 0.5)
            given = True
        if not given:
            return None
        out = os.path.join(folder, "mask.png")
        Image.fromarray(np.where(fill, 0, 255).astype(np.uint8), "L").save(out)
        return out

    # ------------------------------------------------------------------ priors
    def prior(self, name: str, dtype=None, class_label=None):
        """The prior ``name``, loaded once (by :func:`dmir.pipeline.load_prior`) and reused."""
        from .. import pipeline

        key = (name, dtype, class_label)
        with self._prior_lock:
            if key not in self._priors:
                self._priors[key] = pipeline.load_prior(name, dtype, class_label)
                self.loads += 1
            return self._priors[key]

    # ------------------------------------------------------------------ cancel
    def cancel(self, session: str) -> bool:
        """Ask the running restoration of ``session`` to stop; False when it has none."""
        ev = self._cancel.get(session)
        if ev is None:
            return False
        ev.set()
        return True

    # ------------------------------------------------------------------ one restoration
    def run(self, form: F.Form, input_path: str, *, strokes=None, mask_file=None,
            black_keeps: bool = False, progress=None, session: str = "",
            waiting=None) -> Result:
        """Restore ``input_path`` (an accepted upload) as ``form`` says; one at a time.

        ``progress(done, total, eta_seconds)`` after every network evaluation;
        ``waiting()`` is called once if another restoration holds the lock first."""
        if not self.inside(input_path):
            raise InputError("the photo is not one this server received; upload it again")
        if mask_file and not self.inside(mask_file):
            raise InputError("the mask file is not one this server received; upload it again")
        if not self.lock.acquire(blocking=False):
            if waiting is not None:
                waiting()
            self.lock.acquire()
        ev = threading.Event()
        self._cancel[session] = ev
        try:
            return self._run(form, input_path, strokes, mask_file, black_keeps, progress, ev)
        finally:
            self._cancel.pop(session, None)
            self.lock.release()

    def _run(self, form, input_path, strokes, mask_file, black_keeps, progress, ev) -> Result:
        import torch

        from .. import io as dio
        from .. import pipeline
        from ..errors import NumericalError

        job = self.new_dir("job")
        src = os.path.join(job, "input" + os.path.splitext(input_path)[1])
        shutil.copyfile(input_path, src)
        image = dio.read_image(src)                        # as dmir restore reads it
        mask = None
        if form.task == "inpainting":
            mask = self.write_mask(job, image.shape[-2:], strokes, mask_file, black_keeps)
        out = os.path.join(job, "restored.png")
        p = F.plan(form, src, out, mask)
        kw = F.restore_arguments(p.args, tuple(image.shape))
        kw["model"] = self.prior(p.args.model, p.args.dtype, p.args.class_label)
        notes: list = []
        t0 = time.perf_counter()

        def report(i, n):
            if ev.is_set():
                raise Cancelled()
            if progress is not None:
                el = time.perf_counter() - t0
                progress(i, n, el / i * (n - i) if i else None)

        r = pipeline.restore(image, progress=report, note=notes.append, **kw)
        if not torch.isfinite(r.x).all():
            raise NumericalError(f"the sampler produced NaN/Inf values (method {form.method}); "
                                 "try more steps or another method")
        dio.write_image(out, r.x, bits=p.args.bits)
        before = os.path.join(job, "before.png")
        _write_before(before, r, image, tuple(r.x.shape[-2:]))
        metrics = _metrics(r) if r.clean is not None else {}
        return Result(output=out, before=before, command=p.command, seed=p.args.seed,
                      seconds=r.seconds, nfe=r.nfe, notes=notes, metrics=metrics)


def _write_before(path, r, image, hw) -> None:
    """The slider's "before": A⁺y of the degraded photo (``--degrade``) or the input, as RGB
    at the result's size (nearest neighbour, display only)."""
    import torch
    import torch.nn.functional as Fn

    from .. import io as dio

    if r.clean is not None:
        x = r.op.pinv(r.y).detach().to("cpu", torch.float32).reshape(1, *r.x.shape[1:])
    else:
        x = image
    x = x.clamp(-1, 1)
    if x.shape[1] == 1:
        x = x.expand(1, 3, *x.shape[2:])
    if tuple(x.shape[-2:]) != hw:
        x = Fn.interpolate(x, size=hw, mode="nearest")
    dio.write_image(path, x)


def _metrics(r) -> dict:
    """PSNR/SSIM (as ``dmir restore --degrade`` prints them) and LPIPS (when its weights are
    set up) of A⁺y and of the result against the clean photo."""
    import torch

    from .. import metrics
    from ..errors import ShapeError

    base = r.op.pinv(r.y).detach().to("cpu", torch.float32).reshape(r.x.shape)
    rows = {}
    for name, img in (("A+y", base), ("result", r.x)):
        row: dict[str, float | None] = {"PSNR": float(metrics.psnr_model(img, r.clean))}
        try:
            row["SSIM"] = float(metrics.ssim_model(img, r.clean))
        except ShapeError:
            row["SSIM"] = None
        try:
            row["LPIPS"] = float(metrics.lpips(metrics.to_unit(img), metrics.to_unit(r.clean)))
        except DmirError:          # weights not set up: `dmir metrics setup --lpips`
            row["LPIPS"] = None
        rows[name] = row
    return rows


__all__ = ["Workspace", "Result", "Cancelled", "MAX_UPLOAD_MB", "MAX_PIXELS"]
