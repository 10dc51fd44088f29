"""The documentation site's generated parts (the full build, ``mkdocs build --strict``, runs in
CI, .ci/run): the CLI reference covers every command from its own parser, the navigation names
only pages that exist, and every method has a page."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _hooks():
    spec = importlib.util.spec_from_file_location("dmir_docs_hooks", DOCS / "hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_cli_reference_is_every_commands_help():
    from dmir.cli import COMMANDS

    text = _hooks().cli_reference()
    for name in COMMANDS:
        assert f"## dmir {name}\n" in text
        assert f"usage: dmir {name}" in text, name
    assert "--max-pixels" in text and "--task NAME" in text       # serve's and restore's
    page = _hooks().on_page_markdown("x\n<!-- cli-reference -->\n", None, None, None)
    assert "usage: dmir restore" in page and "<!-- cli-reference -->" not in page


def test_the_navigation_names_existing_pages():
    nav = re.findall(r":\s*([\w/.-]+\.md)\s*$|^\s*-\s*([\w/.-]+\.md)\s*$",
                     (ROOT / "mkdocs.yml").read_text(), re.M)
    pages = [a or b for a, b in nav]
    assert "index.md" in pages and "cli.md" in pages and "app.md" in pages
    for p in pages:
        if p.startswith("gallery/"):            # made by docs/gen_gallery.py at build time
            continue
        assert (DOCS / p).is_file(), p


def _base_methods():
    from dmir import solvers

    return sorted({n.split("-equs")[0] for n in solvers.names()})


def test_every_registered_method_has_a_page():
    missing = [m for m in _base_methods() if not (DOCS / "methods" / f"{m}.md").is_file()]
    assert not missing, missing


@pytest.mark.parametrize("method", ["ddnm", "ddrm", "pigdm", "dps", "cddb", "diffpir", "deqir",
                                    "dcdp", "equs", "ilvr", "repaint"])
def test_every_method_has_a_page_with_equations_and_a_reference(method):
    text = (DOCS / "methods" / f"{method}.md").read_text(encoding="utf-8")
    assert "\\[" in text                                   # display equations
    assert re.search(r"arxiv\.org|openreview\.net", text)   # the paper
    assert f"--method {method}" in text or "NAME-equs" in text
