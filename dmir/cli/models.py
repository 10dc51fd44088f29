"""``dmir models``: list the built-in priors and named checkpoints, or fetch one."""
from __future__ import annotations

import json

from .common import UsageError


def add_parser(sub) -> None:
    m = sub.add_parser("models", help="list the available models, or fetch one",
                       description="List the built-in priors and the named pretrained "
                       "checkpoints (format, config, download URLs, size, checksum, local "
                       "copy), or download one. Local copies are searched in $DMIR_HOME, "
                       "then $XDG_CACHE_HOME/dmir, then ~/.cache/dmir; hub ids "
                       "(org/name) in the huggingface_hub cache.")
    m.add_argument("action", nargs="?", choices=["list", "fetch"], default="list",
                   help="list (default) or fetch")
    m.add_argument("name", nargs="?", metavar="NAME", help="fetch: the model to download")
    m.add_argument("--dest", metavar="DIR", help="fetch: download folder (default: "
                   "$DMIR_HOME, else $XDG_CACHE_HOME/dmir or ~/.cache/dmir)")
    m.add_argument("--json", action="store_true", help="list: machine-readable output")


def _size(n) -> str:
    return "no weights" if not n else f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _listing() -> dict:
    """{name: "description [built in, size]"} of the built-in priors, from their files only:
    no prior is loaded and no network module imported (the listing answers at once)."""
    from ..models.builtin import builtin_info, builtin_names

    out = {}
    for n in builtin_names():
        info = builtin_info(n)
        out[n] = f"{info['description']} [built in, {_size(info['size'])}]"
    return out


def run(a) -> int:
    from .. import models

    if a.action == "fetch":
        if not a.name:
            raise UsageError("dmir models fetch NAME: a model name is required; named models: "
                             + ", ".join(models.registry.names()))
        entry = models.registry.get(a.name)
        path = models.registry.fetch(entry.name, dest_dir=a.dest)
        print(f"{entry.name}: {path}")
        return 0
    if a.name:
        raise UsageError(f"unexpected argument {a.name!r} (did you mean: dmir models fetch "
                         f"{a.name}?)")
    builtin = _listing()
    named = [models.registry.status(e) for e in models.registry.ENTRIES.values()]
    if a.json:
        print(json.dumps({"builtin": builtin, "named": named}, indent=1))
        return 0
    print("built-in priors (no download):")
    for k, v in builtin.items():
        print(f"  {k:<31}{v}")
    print(f"\npretrained checkpoints (searched in {' then '.join(models.registry.home_dirs())}):")
    for st in named:
        size = f"{st['size'] / 1e9:.2f} GB" if st["size"] else "size unknown"
        check = (f"sha256 {st['sha256']}" if st["sha256"] else
                 f"md5 {st['md5']} (sha256 computed at first load)" if st["md5"] else
                 "sha256 computed at first load")
        print(f"  {st['name']:<31}{st['description']}")
        print(f"  {'':<31}format {st['format']}, config {st['config'] or 'from its folder'}; "
              f"used by {st['used_by']}")
        for u in st["urls"]:
            print(f"  {'':<31}{u}")
        for note in st["manual"]:
            print(f"  {'':<31}note: {note}")
        print(f"  {'':<31}{size}; {check}")
        print(f"  {'':<31}local: {st['local'] or 'not found (dmir models fetch ' + st['name'] + ')'}")
    return 0

