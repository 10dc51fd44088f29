"""MkDocs hooks (mkdocs.yml ``hooks:``): pages generated from the code at build time.

* ``docs/gallery/`` — made by ``docs/gen_gallery.py`` (real restorations with the shipped
  prior) when it is missing; delete the folder to remake it.
* ``<!-- cli-reference -->`` in a page — replaced by the ``--help`` of every ``dmir`` command,
  read from the argparse parsers themselves.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def on_pre_build(config, **kw):
    gallery = os.path.join(HERE, "gallery", "index.md")
    if not os.path.exists(gallery):
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        # one thread: ~25 s for the four restorations; on a busy machine several threads per
        # process can be ten times slower
        env.setdefault("OMP_NUM_THREADS", "1")
        subprocess.run([sys.executable, os.path.join(HERE, "gen_gallery.py")], check=True,
                       env=env, cwd=ROOT)


def _help(argv) -> str:
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from dmir.cli import _parser

    buf = io.StringIO()
    os.environ["COLUMNS"] = "100"
    with redirect_stdout(buf):
        try:
            _parser(argv).parse_args(argv)
        except SystemExit:
            pass
    return buf.getvalue().rstrip()


def cli_reference() -> str:
    from dmir.cli import COMMANDS

    parts = ["## dmir", "", "```text", _help(["--help"]), "```", ""]
    for name in COMMANDS:
        parts += [f"## dmir {name}", "", "```text", _help([name, "--help"]), "```", ""]
    return "\n".join(parts)


def on_page_markdown(markdown, page, config, files, **kw):
    if "<!-- cli-reference -->" in markdown:
        markdown = markdown.replace("<!-- cli-reference -->", cli_reference())
    return markdown
