"""mypy runs clean on dmir/ with the configuration in pyproject.toml ([tool.mypy]), and it really
checks: a snippet that misuses dmir's typed API (a Literal option, a Protocol) is reported."""
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BAD = '''\
from dmir import metrics, solvers
from dmir.types import Prior

metrics.LPIPS(net="resnet")                 # not a LpipsNet literal
metrics.FID(input_scale="inception")        # not a FidInputScale literal


def take(p: Prior) -> None: ...


take(object())                              # not a Prior
solvers.make_plan(10, 1000, "cosine")       # not a Schedule literal
'''


def test_mypy_clean_on_dmir_and_catches_misuse(tmp_path):
    pytest.importorskip("mypy", reason="mypy is a test extra: pip install -e '.[test]'")
    bad = tmp_path / "misuse.py"
    bad.write_text(BAD)
    cache = os.path.join(tempfile.gettempdir(), "dmir-mypy-cache")
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                        "--cache-dir", cache, "--no-color-output", "--no-error-summary",
                        "dmir", str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    errors = [ln for ln in r.stdout.splitlines() if ": error:" in ln]
    in_dmir = [ln for ln in errors if ln.startswith("dmir")]
    assert in_dmir == [], "\n".join(in_dmir)
    lines = sorted({int(m.group(1)) for ln in errors
                    if (m := re.match(r".*misuse\.py:(\d+): error", ln))})
    assert lines == [4, 5, 11, 12], r.stdout + r.stderr
