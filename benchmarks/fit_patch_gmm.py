"""Fit the patch-GMM natural-image prior shipped as ``dmir/data/patch_gmm.npz``.

EPLL-style (Zoran & Weiss 2011) colour patch prior: p×p×3 patches of the training photographs
(../shared/data/train, model domain [-1, 1]) are split into their per-channel mean (DC) and the
zero-mean rest (AC). The AC parts get a K-component full-covariance Gaussian mixture fitted by
EM; the DC part a single Gaussian. Since DC and AC live in orthogonal subspaces, the product
prior is itself a Gaussian mixture over whole patches (means μ_k + μ_DC, covariances
Σ_k + Σ_DC), which is what is stored.

    python benchmarks/fit_patch_gmm.py [--patch 6] [--components 32] [--patches 300000]
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import time

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.join(HERE, "..", "..", "shared", "data", "train")
OUT = os.path.join(HERE, "..", "dmir", "data", "patch_gmm.npz")


def sample_patches(files, n, p, rng):
    per = max(1, n // len(files) + 1)
    out = []
    for f in files:
        im = np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 127.5 - 1
        H, W, _ = im.shape
        ys = rng.integers(0, H - p + 1, per)
        xs = rng.integers(0, W - p + 1, per)
        for y, x in zip(ys, xs):
            out.append(im[y:y + p, x:x + p].transpose(2, 0, 1).reshape(-1))
    X = np.stack(out)
    rng.shuffle(X)
    return torch.from_numpy(X[:n]).double()


def split_dc(X, p):
    N = X.shape[0]
    Xc = X.reshape(N, 3, p * p)
    dc = Xc.mean(-1, keepdim=True)
    return (Xc - dc).reshape(N, -1), dc.reshape(N, 3)


def log_gauss(X, mu, L):
    """log N(X; mu, L Lᵀ) for all rows of X (N, D)."""
    D = X.shape[1]
    z = torch.linalg.solve_triangular(L, (X - mu).T, upper=False)
    return -0.5 * (z ** 2).sum(0) - torch.log(torch.diagonal(L)).sum() - 0.5 * D * math.log(2 * math.pi)


def em(X, K, iters, reg, rng):
    N, D = X.shape
    mu = X[torch.from_numpy(rng.choice(N, K, replace=False))]
    cov = torch.cov(X.T).expand(K, D, D).clone() + reg * torch.eye(D, dtype=X.dtype)
    w = torch.full((K,), 1.0 / K, dtype=X.dtype)
    prev = -math.inf
    for it in range(iters):
        L = torch.linalg.cholesky(cov)
        logp = torch.stack([log_gauss(X, mu[k], L[k]) for k in range(K)], 1) + torch.log(w)
        ll = torch.logsumexp(logp, 1)
        r = torch.exp(logp - ll[:, None])                        # (N, K)
        Nk = r.sum(0) + 1e-10
        w = Nk / N
        mu = (r.T @ X) / Nk[:, None]
        for k in range(K):
            d = X - mu[k]
            cov[k] = (d * r[:, k:k + 1]).T @ d / Nk[k] + reg * torch.eye(D, dtype=X.dtype)
        mean_ll = float(ll.mean())
        print(f"  EM {it:2d}: mean log-likelihood {mean_ll:.3f}", flush=True)
        if mean_ll - prev < 1e-3 * abs(mean_ll):
            break
        prev = mean_ll
    return w, mu, cov


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--patch", type=int, default=6)
    ap.add_argument("--components", type=int, default=32)
    ap.add_argument("--patches", type=int, default=300000)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    files = sorted(glob.glob(os.path.join(TRAIN, "*", "*.jpg")) +
                   glob.glob(os.path.join(TRAIN, "*", "*.JPEG")))
    p = a.patch
    t0 = time.time()
    X = sample_patches(files, a.patches, p, rng)
    print(f"{len(files)} images, {X.shape[0]} patches {p}x{p}x3 ({time.time() - t0:.0f} s)")
    ac, dc = split_dc(X, p)
    D = ac.shape[1]
    # the AC data lives in a (D - 3)-dim subspace: EM there through an orthonormal basis B
    Pdc = torch.zeros(3, D, dtype=X.dtype)
    for c in range(3):
        Pdc[c, c * p * p:(c + 1) * p * p] = 1 / p
    Q, _ = torch.linalg.qr(torch.cat([Pdc.T, torch.randn(D, D - 3, dtype=X.dtype,
                                                         generator=torch.Generator().manual_seed(0))], 1))
    B = Q[:, 3:]                                                 # (D, D-3) orthonormal AC basis
    w, mu, cov = em(ac @ B, a.components, a.iters, 1e-5, rng)
    mu_full = mu @ B.T
    cov_full = B @ cov @ B.T
    # DC: Gaussian on the per-channel patch means, spread over the patch pixels
    dc_mean, dc_cov = dc.mean(0), torch.cov(dc.T)
    E = torch.zeros(D, 3, dtype=X.dtype)
    for c in range(3):
        E[c * p * p:(c + 1) * p * p, c] = 1.0
    mu_full = mu_full + (E @ dc_mean)[None]
    cov_full = cov_full + (E @ dc_cov @ E.T)[None]
    np.savez_compressed(OUT, weights=w.float().numpy(), means=mu_full.float().numpy(),
                        covs=cov_full.float().numpy(), patch=np.int64(p),
                        source=np.array(f"fit_patch_gmm.py seed {a.seed}: {len(files)} images, "
                                        f"{X.shape[0]} patches, K={a.components}"))
    print(f"wrote {OUT} ({os.path.getsize(OUT) / 1e6:.2f} MB), {time.time() - t0:.0f} s; "
          f"weights {np.round(np.sort(w.numpy())[::-1][:8], 3)}")


if __name__ == "__main__":
    main()
