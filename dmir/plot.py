"""Small PNG plots and image grids with Pillow only (no matplotlib): loss curves, PSNR-vs-NFE
charts and comparison grids for ``dmir train``, ``dmir bench`` and ``dmir demo``."""
from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _font():
    return ImageFont.load_default()


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 5, 10) if s * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.0e}"
    return f"{v:.4g}"


def _save(img: Image.Image, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.png"
    img.save(tmp)
    os.replace(tmp, path)


def line_plot(series: dict, path: str, xlabel: str = "", ylabel: str = "", title: str = "",
              logy: bool = False, logx: bool = False, markers: bool = False,
              size=(640, 420)) -> None:
    """Plot ``{label: [(x, y), ...]}`` as lines (``markers=True``: points joined by lines) into a
    PNG at ``path`` (written atomically)."""
    W, H = size
    left, right, top, bottom = 70, 150, 30, 45
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = _font()
    pts = {k: [(float(x), float(y)) for x, y in v if np.isfinite(y) and (y > 0 or not logy)
               and (x > 0 or not logx)] for k, v in series.items()}
    allp = [p for v in pts.values() for p in v]
    if not allp:
        d.text((W // 2 - 40, H // 2), "no data", fill="black", font=font)
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

    def px(x, y):
        return (left + (fx(x) - x0) / (x1 - x0) * (W - left - right),
                H - bottom - (fy(y) - y0) / (y1 - y0) * (H - top - bottom))

    d.rectangle([left, top, W - right, H - bottom], outline="black")
    yt = [10 ** e for e in range(math.floor(y0), math.ceil(y1) + 1)] if logy else _nice_ticks(y0, y1)
    for v in yt:
        if y0 <= fy(v) <= y1:
            _, yy = px(10 ** x0 if logx else x0, v)
            d.line([left - 4, yy, left, yy], fill="black")
            d.line([left + 1, yy, W - right - 1, yy], fill=(230, 230, 230))
            d.text((4, yy - 6), _fmt(v), fill="black", font=font)
    xt = [10 ** e for e in range(math.floor(x0), math.ceil(x1) + 1)] if logx else _nice_ticks(x0, x1)
    for v in xt:
        if x0 <= fx(v) <= x1:
            xx, _ = px(v, 10 ** y0 if logy else y0)
            d.line([xx, H - bottom, xx, H - bottom + 4], fill="black")
            d.text((xx - 12, H - bottom + 6), _fmt(v), fill="black", font=font)
    d.text((left + (W - left - right) // 2 - 3 * len(xlabel), H - 18), xlabel, fill="black",
           font=font)
    d.text((4, 8), ylabel, fill="black", font=font)
    d.text((left + 4, 10), title, fill="black", font=font)
    for i, (label, p) in enumerate(pts.items()):
        c = _COLORS[i % len(_COLORS)]
        p = sorted(p)
        xy = [px(*q) for q in p]
        if len(xy) > 1:
            d.line(xy, fill=c, width=2)
        if markers or len(xy) == 1:
            for x, y in xy:
                d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=c)
        ly = top + 14 * i
        d.line([W - right + 8, ly + 6, W - right + 24, ly + 6], fill=c, width=3)
        d.text((W - right + 28, ly), str(label)[:20], fill="black", font=font)
    _save(img, path)


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
    top = 14 if col_titles else 0
    left = 90 if row_titles else 0
    img = Image.new("RGB", (left + ncol * (cw + pad) + pad, top + len(cells) * (ch + pad) + pad),
                    "white")
    d = ImageDraw.Draw(img)
    font = _font()
    fit = max(3, min(40, (cw + pad) // 7))        # characters that fit over a column (≈7 px)
    for j, t in enumerate(col_titles or []):
        d.text((left + pad + j * (cw + pad) + 2, 1), str(t)[:fit], fill="black", font=font)
    for i, r in enumerate(cells):
        if row_titles:
            d.text((2, top + pad + i * (ch + pad) + ch // 2 - 6), str(row_titles[i])[:14],
                   fill="black", font=font)
        for j, a in enumerate(r):
            if a is None:
                continue
            s = min(cw / a.shape[1], ch / a.shape[0])
            im = Image.fromarray(a).resize((max(1, round(a.shape[1] * s)),
                                            max(1, round(a.shape[0] * s))), Image.Resampling.NEAREST)
            img.paste(im, (left + pad + j * (cw + pad), top + pad + i * (ch + pad)))
    _save(img, path)


__all__ = ["line_plot", "image_grid"]
