"""Build benchmarks/gpu_data/: the training photos that travel with the repo to the GPU machine
(it cannot reach shared/), for stage 4 of benchmarks/gpu_run.py.

Native-scale 256×256 centre crops (no resizing: the held-out evaluation of
benchmarks/prior_quality.py uses native-scale centre crops too) of every second BSDS500
train/test photo and of evenly spaced ImageNet sample photos whose short side is ≥ 256, JPEG
quality 90 (≈ 24 KB each). Neither set overlaps the held-out sets (CBSD68 is BSDS500's val split,
imagenet-heldout the classes left out of imagenet-samples).

    python benchmarks/make_gpu_data.py [--per-set 200] [--src ../shared/data/train]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = 256


def crops(folder: Path, n: int):
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))
    ok = []
    for f in files:
        with Image.open(f) as im:
            if min(im.size) >= SIZE:
                ok.append(f)
    step = len(ok) / n
    return [ok[int(i * step)] for i in range(min(n, len(ok)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(HERE.parent.parent / "shared" / "data" / "train"))
    ap.add_argument("--per-set", type=int, default=200)
    ap.add_argument("--out", default=str(HERE / "gpu_data"))
    a = ap.parse_args()
    out = Path(a.out)
    total = 0
    for name in ("bsds500", "imagenet-samples"):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for f in crops(Path(a.src) / name, a.per_set):
            with Image.open(f) as im:
                im = im.convert("RGB")
                W, H = im.size
                l, t = (W - SIZE) // 2, (H - SIZE) // 2
                dst = d / (f.stem + ".jpg")
                im.crop((l, t, l + SIZE, t + SIZE)).save(dst, "JPEG", quality=90)
                total += dst.stat().st_size
    print(f"wrote {out}: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
