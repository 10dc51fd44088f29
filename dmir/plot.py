"""Small PNG plots and image grids: loss curves, PSNR-vs-NFE charts and comparison grids for
``dmir train``, ``dmir bench`` and ``dmir demo``.

Line plots are drawn with matplotlib when it is installed (``pip install "dmir[plot]"``), else
with Pillow alone: axes with tick numbers on both axes (log axes get 1-2-5 ticks when a decade
is too few), a legend and titles sized to their text (nothing is cut). Image grids are always
Pillow (exact pixels, nearest-neighbour enlargement); their titles wrap to fit their column.
``DMIR_PLOT=pillow`` (or ``backend="pillow"``) forces the Pillow drawing.
"""
from __future__ import annotations

import io
import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io import atomic_write

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _font(size: int = 11):
    """DejaVu Sans when the system has it (Greek letters: ε), else Pillow's default font."""
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            pass
    return ImageFont.load_default()


def _width(font, text: str) -> int:
    box = font.getbbox(str(text))
    return int(math.ceil(box[2] - min(0, box[0])))


def _nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 5, 10) if s * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step - 1e-9) * step
    return [round(start + i * step, 12) for i in range(int((hi - start) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks for a log axis spanning log10 values lo..hi: decades, else 1-2-5 steps, else
    linear nice values (a range narrower than a factor 2 still gets numbers)."""
    for mult in ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7)):
        t = [m * 10.0 ** e for e in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in mult
             if lo - 1e-9 <= math.log10(m * 10.0 ** e) <= hi + 1e-9]
        if len(t) >= 3:
            return t
    return [v for v in _nice_ticks(10 ** lo, 10 ** hi, 4) if v > 0]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


def _save(img: Image.Image, path: str) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    _save_bytes(buf.getvalue(), path)


def _save_bytes(data: bytes, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, data)


def backend(choice: str | None = None) -> str:
    """The line-plot backend: ``choice`` or ``$DMIR_PLOT`` if given, else ``"matplotlib"``
    when it can be imported, else ``"pillow"``."""
    choice = choice or os.environ.get("DMIR_PLOT") or None
    if choice not in (None, "matplotlib", "pillow"):
        from .errors import ParameterError
        raise ParameterError(f"plot backend must be 'matplotlib' or 'pillow', got {choice!r}")
    if choice == "pillow":
        return "pillow"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if choice == "matplotlib":
            from .errors import ParameterError
            raise ParameterError('matplotlib is not installed: pip install "dmir[plot]"') from None
        return "pillow"
    return "matplotlib"


def line_plot(series: dict, path: str, xlabel: str = "", ylabel: str = "", title: str = "",
              logy: bool = False, logx: bool = False, markers: bool = False,
              size=(640, 420), backend: str | None = None) -> None:
    """Plot ``{label: [(x, y), ...]}`` as lines (``markers=True``: points joined by lines) into a
    PNG at ``path`` (written atomically). ``size``: the plot's size in pixels (Pillow: the
    minimum; the canvas grows to fit long legend labels). ``backend``: see :func:`backend`."""
    pts = {k: sorted((float(x), float(y)) for x, y in v if np.isfinite(y) and np.isfinite(x)
                     and (y > 0 or not logy) and (x > 0 or not logx))
           for k, v in series.items()}
    if globals()["backend"](backend) == "matplotlib":
        _mpl_line_plot(pts, path, xlabel, ylabel, title, logy, logx, markers, size)
    else:
        _pil_line_plot(pts, path, xlabel, ylabel, title, logy, logx, markers, size)


def _mpl_line_plot(pts, path, xlabel, ylabel, title, logy, logx, markers, size) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (label, p) in enumerate(pts.items()):
        c = tuple(v / 255 for v in _COLORS[i % len(_COLORS)])
        ax.plot([q[0] for q in p], [q[1] for q in p], color=c, label=str(label), lw=1.8,
                marker="o" if markers or len(p) == 1 else None, ms=4)
    if not any(pts.values()):
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    else:
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(True, which="major", color="0.9")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    _save_bytes(buf.getvalue(), path)


def _pil_line_plot(pts, path, xlabel, ylabel, title, logy, logx, markers, size) -> None:
    font = _font()
    allp = [p for v in pts.values() for p in v]
    if not allp:
        img = Image.new("RGB", size, "white")
        ImageDraw.Draw(img).text((size[0] // 2 - 20, size[1] // 2), "no data", fill="black",
                                 font=font)
        _save(img, path)
        return
    fx = (lambda v: math.log10(v)) if logx else (lambda v: v)
    fy = (lambda v: math.log10(v)) if logy else (lambda v: v)
    xs = [fx(p[0]) for p in allp]
    ys = [fy(p[1]) for p in allp]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    pad = (y1 - y0) * 0.05 or 0.5
    y0, y1 = y0 - pad, y1 + pad
    yt = [v for v in (_log_ticks(y0, y1) if logy else _nice_ticks(y0, y1)) if y0 <= fy(v) <= y1]
    xt = [v for v in (_log_ticks(x0, x1) if logx else _nice_ticks(x0, x1)) if x0 <= fx(v) <= x1]
    # margins from the text they hold: tick numbers on the left, the legend on the right
    left = max(40, 12 + max((_width(font, _fmt(v)) for v in yt), default=0))
    legend = max(_width(font, str(k)) for k in pts) + 40
    top, bottom = 40, 48
    plot_w = max(size[0] - 70 - 150, 160)
    W, H = left + plot_w + legend, size[1]
    W = max(W, _width(font, title) + 12, _width(font, ylabel) + 12)
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    right_edge = left + plot_w

    def px(x, y):
        return (left + (fx(x) - x0) / (x1 - x0) * plot_w,
                H - bottom - (fy(y) - y0) / (y1 - y0) * (H - top - bottom))

    d.rectangle([left, top, right_edge, H - bottom], outline="black")
    for v in yt:
        _, yy = px(10 ** x0 if logx else x0, v)
        d.line([left - 4, yy, left, yy], fill="black")
        d.line([left + 1, yy, right_edge - 1, yy], fill=(230, 230, 230))
        t = _fmt(v)
        d.text((left - 6 - _width(font, t), yy - 7), t, fill="black", font=font)
    for v in xt:
        xx, _ = px(v, 10 ** y0 if logy else y0)
        d.line([xx, H - bottom, xx, H - bottom + 4], fill="black")
        t = _fmt(v)
        d.text((xx - _width(font, t) / 2, H - bottom + 6), t, fill="black", font=font)
    d.text((left + plot_w / 2 - _width(font, xlabel) / 2, H - 20), xlabel, fill="black",
           font=font)
    d.text((4, 22), ylabel, fill="black", font=font)
    d.text((max(4, left + plot_w / 2 - _width(font, title) / 2), 4), title, fill="black",
           font=font)
    for i, (label, p) in enumerate(pts.items()):
        c = _COLORS[i % len(_COLORS)]
        xy = [px(*q) for q in p]
        if len(xy) > 1:
            d.line(xy, fill=c, width=2)
        if markers or len(xy) == 1:
            for x, y in xy:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
        ly = top + 16 * i
        d.line([right_edge + 8, ly + 7, right_edge + 24, ly + 7], fill=c, width=3)
        d.text((right_edge + 28, ly), str(label), fill="black", font=font)
    _save(img, path)


def _wrap(font, text: str, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels (words split only when one is wider)."""
    lines: list[str] = []
    for word in str(text).split():
        while _width(font, word) > width and len(word) > 1:      # a word longer than a line
            k = len(word)
            while k > 1 and _width(font, word[:k]) > width:
                k -= 1
            if lines and not lines[-1]:
                lines.pop()
            lines.append(word[:k])
            word = word[k:]
        if lines and _width(font, lines[-1] + " " + word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def image_grid(rows: list, path: str, col_titles=None, row_titles=None, pad: int = 4,
               max_side: int = 256) -> None:
    """Save a grid of images (each (C, H, W) or (H, W, C) in [0, 1], tensor or array).

    ``rows[i][j]`` is the image in row i, column j (None leaves the cell empty); images are
    scaled (nearest neighbour) so that their longer side is at most ``max_side``... and to the
    height of the tallest cell of their row, so a low-resolution measurement is shown enlarged.
    """
    def arr(x):
        if x is None:
            return None
        a = x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x, float)
        if a.ndim == 4:
            a = a[0]
        if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
            a = a.transpose(1, 2, 0)
        if a.ndim == 2:
            a = a[..., None]
        if a.shape[-1] == 1:
            a = np.repeat(a, 3, -1)
        return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)

    cells = [[arr(x) for x in r] for r in rows]
    hs = [a.shape[0] for r in cells for a in r if a is not None]
    ws = [a.shape[1] for r in cells for a in r if a is not None]
    ch = min(max(hs), max_side)
    cw = min(max(ws), max_side) if max(hs) <= max_side else round(max(ws) * ch / max(hs))
    ncol = max(len(r) for r in cells)
    font = _font()
    line_h = 14
    # column titles wrap to their column's width; row titles get the width they need (up to
    # 160 px, then wrap): no title is cut
    # a column is as wide as its images, or as its widest title up to 140 px
    slot = max([cw + pad] + [min(_width(font, t) + 8, 140) for t in (col_titles or [])])
    col_lines = [_wrap(font, t, slot - 4) for t in (col_titles or [])]
    top = (max(len(c) for c in col_lines) * line_h + 4) if col_lines else 0
    left = 0
    row_lines = []
    if row_titles:
        left = min(160, max(_width(font, t) for t in row_titles) + 8)
        row_lines = [_wrap(font, t, left - 6) for t in row_titles]
    img = Image.new("RGB", (left + ncol * slot + pad, top + len(cells) * (ch + pad) + pad),
                    "white")
    d = ImageDraw.Draw(img)
    for j, lines in enumerate(col_lines):
        for k, t in enumerate(lines):
            d.text((left + pad + j * slot + 1, 1 + k * line_h), t, fill="black", font=font)
    for i, r in enumerate(cells):
        for k, t in enumerate(row_lines[i] if i < len(row_lines) else []):
            y = top + pad + i * (ch + pad) + ch // 2 - len(row_lines[i]) * line_h // 2
            d.text((2, y + k * line_h), t, fill="black", font=font)
        for j, a in enumerate(r):
            if a is None:
                continue
            s = min(cw / a.shape[1], ch / a.shape[0])
            im = Image.fromarray(a).resize((max(1, round(a.shape[1] * s)),
                                            max(1, round(a.shape[0] * s))), Image.Resampling.NEAREST)
            img.paste(im, (left + pad + j * slot, top + pad + i * (ch + pad)))
    _save(img, path)


__all__ = ["line_plot", "image_grid", "backend"]
