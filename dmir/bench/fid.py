"""FID / KID for ``dmir bench``: between two folders, and per (dataset, task, method) between
the restored images and the ground-truth set.

Both use the streaming statistics of :mod:`dmir.metrics.fid` (the TF FID Inception, 2048-d
pool features; images quantised to 8 bits and resized to 299×299 as pytorch-fid does), so any
number of images fits in memory; KID needs the features themselves and keeps them
(8 KiB per image).
"""
from __future__ import annotations

import os

import torch

from .. import io as dio
from .. import metrics
from ..data import find_images
from ..errors import InputError, ShapeError
from ..metrics.fid import FEATURE_DIM, FeatureStats, frechet_distance, kid, warn_small_sets

__all__ = ["features", "folder_stats", "fid_folders", "compare"]


def _batches(tensors, batch: int):
    """Group consecutive (1, C, H, W) images of equal shape into batches of ≤ ``batch``."""
    group: list = []
    for t in tensors:
        if group and (t.shape != group[0].shape or len(group) == batch):
            yield torch.cat(group)
            group = []
        group.append(t)
    if group:
        yield torch.cat(group)


def features(net, images, keep: bool = False, batch: int = 16) -> FeatureStats:
    """Streaming statistics of the FID features of ``images`` (an iterable of (1, C, H, W)
    tensors in [0, 1])."""
    st = None
    for b in _batches(images, batch):
        f = net(b, batch_size=batch)
        if st is None:                       # the network's feature size (2048 for FID)
            st = FeatureStats(f.shape[1], keep_features=keep)
        st.update(f)
    return st if st is not None else FeatureStats(FEATURE_DIM, keep_features=keep)


def _read_unit(path):
    return metrics.to_unit(dio.read_image(path))


def folder_stats(net, folder, keep: bool = False, batch: int = 16) -> FeatureStats:
    files = find_images(folder)
    if not files:
        raise InputError(f"folder '{folder}' holds no images")
    return features(net, (_read_unit(os.path.join(folder, f)) for f in files), keep, batch)


def compare(a: FeatureStats, b: FeatureStats, with_kid: bool = False) -> dict:
    """{"fid", "kid", "kid_std" (with_kid), "n1", "n2"}; needs ≥ 2 images per set."""
    if a.n < 2 or b.n < 2:
        raise ShapeError(f"FID needs at least 2 images in each set, got {a.n} and {b.n}")
    warn_small_sets(a.n, b.n)
    out = {"fid": frechet_distance(a.mean, a.cov, b.mean, b.cov), "n1": a.n, "n2": b.n}
    if with_kid:
        warn_small_sets(a.n, b.n, kid=True)
        out["kid"], out["kid_std"] = kid(a.features, b.features,
                                         generator=torch.Generator().manual_seed(0))
    return out


def fid_folders(dir1, dir2, with_kid: bool = False, device=None, batch: int = 16) -> dict:
    """FID (and KID) between the images of two folders (recursive; any sizes)."""
    for d in (dir1, dir2):
        if not os.path.isdir(d):
            raise InputError(f"'{d}' is not a folder")
    net = metrics.FIDInception(device=device)
    return compare(folder_stats(net, dir1, with_kid, batch),
                   folder_stats(net, dir2, with_kid, batch), with_kid)
