"""Compressed sensing operators with orthonormal rows (so A⁺ = Aᵀ)."""
from __future__ import annotations

import math

import torch

from ..errors import ParameterError, ShapeError
from .base import LinearOperator


def hadamard(n: int, dtype=torch.float64) -> torch.Tensor:
    """Sylvester (natural-order) Hadamard matrix of size n = 2^k, unnormalised (±1)."""
    H = torch.ones(1, 1, dtype=dtype)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)], 0)
    return H


def _split_bits(k: int, chunk: int = 4):
    out = []
    while k > 0:
        b = min(chunk, k)
        out.append(b)
        k -= b
    return out


class WalshHadamardCS(LinearOperator):
    """Per channel: keep ``m = ⌊ratio·H·W⌋`` coefficients of the orthonormal Walsh–Hadamard
    transform (natural/Sylvester order) of the row-major flattened image.

    The kept indices are ``perm[:m]``. Requires H·W to be a power of two. The transform is
    computed as a Kronecker product of small Hadamard blocks (O(N log N) work in a few
    batched matrix products). Measurement layout (B, C, m); spectral layout: the WHT
    coefficients reshaped to (C, H, W); Σ = 1 on the kept coefficients.
    """

    has_svd = True

    def __init__(self, shape, ratio: float, perm: torch.Tensor, name="cs_walshhadamard"):
        C, H, W = shape
        N = H * W
        if N & (N - 1):
            raise ShapeError(f"{name}: image size {H}x{W} has H·W = {N} pixels, not a power of "
                             f"two as the Walsh–Hadamard transform needs (e.g. 64x64, 128x256)")
        m = int(N * ratio)
        if not (0 < m <= N):
            raise ParameterError(f"{name}: ratio must be in (0, 1] with at least one "
                                 f"measurement, got {ratio}")
        perm = torch.as_tensor(perm).long().reshape(-1)
        if perm.numel() != N or not torch.equal(perm.sort().values, torch.arange(N)):
            raise ParameterError(f"{name}: perm must be a permutation of 0..{N - 1}")
        super().__init__(shape, (C, m))
        self.name = name
        self.N = N
        self.register_buffer("keep", perm[:m].clone())
        mask = torch.zeros(N)
        mask[perm[:m]] = 1
        self.register_buffer("cmask", mask)
        self.register_buffer("_sing", mask.reshape(1, H, W).expand(C, H, W).contiguous())
        self._bits = _split_bits(int(math.log2(N)))
        for b in set(self._bits):
            self.register_buffer(f"H{b}", hadamard(2 ** b).to(torch.float32) / 2 ** (b / 2))

    def fwht(self, v: torch.Tensor) -> torch.Tensor:
        """Orthonormal WHT along the last axis (length N); self-inverse."""
        lead = v.shape[:-1]
        v = v.reshape(-1, self.N)
        M = v.shape[0]
        for b in self._bits:
            # H_N = H_f1 ⊗ H_f2 ⊗ …: transform the leading factor of the index and move it to
            # the end (one well-shaped GEMM per stage); after all stages the order is restored.
            # (H_f is symmetric, so right-multiplying by it applies it.)
            v = torch.matmul(v.reshape(M, 2 ** b, -1).transpose(1, 2), getattr(self, f"H{b}"))
        return v.reshape(*lead, self.N)

    def _A(self, x):
        B, C = x.shape[:2]
        return self.fwht(x.reshape(B, C, self.N))[..., self.keep]  # (faster than index_select)

    def _At(self, y):
        B, C = y.shape[:2]
        coeffs = y.new_zeros(B, C, self.N)
        coeffs.index_copy_(2, self.keep, y)
        return self.fwht(coeffs).reshape(B, *self.x_shape)

    _pinv = _At

    def _project(self, x, y):
        B, C = x.shape[:2]
        c = self.fwht(x.reshape(B, C, self.N))
        c = c * (1 - self.cmask)
        c.index_add_(2, self.keep, y)
        return self.fwht(c).reshape(B, *self.x_shape)

    def _Vt(self, x):
        B, C = x.shape[:2]
        return self.fwht(x.reshape(B, C, self.N)).reshape(B, *self.x_shape)

    _V = _Vt

    def _Ut(self, y):
        B, C = y.shape[:2]
        coeffs = y.new_zeros(B, C, self.N)
        coeffs.index_copy_(2, self.keep, y)
        return coeffs.reshape(B, *self.x_shape)

    def _U(self, z):
        B, C = z.shape[:2]
        return z.reshape(B, C, self.N)[..., self.keep]

    def _singulars(self):
        return self._sing


def random_orthogonal(n: int, generator: torch.Generator | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A Haar-distributed n×n orthogonal matrix (QR of a Gaussian matrix, signs fixed).

    float32 by default (the operators store float32; |QᵀQ - I| ≈ 6e-7 at n = 1024, and the QR
    is twice as fast as in float64); pass dtype=torch.float64 for a float64 operator."""
    G = torch.randn(n, n, generator=generator, dtype=dtype)
    Q, R = torch.linalg.qr(G)
    return Q * torch.sign(torch.diagonal(R)).reshape(1, n)


class BlockCS(LinearOperator):
    """Block-based compressed sensing: per channel and per non-overlapping b×b block,
    y_block = B[:, :m]ᵀ vec(block) (row-major vec) with B a (b² × b²) orthogonal basis and
    m = ⌊ratio·b²⌋. Any H×W that is a multiple of b. Measurement layout
    (B, C, n_blocks, m), blocks in raster order; spectral layout: all b² coefficients per block.
    """

    has_svd = True

    def __init__(self, shape, ratio: float, basis: torch.Tensor, name="cs_blockbased",
                 check_orthogonal: bool = True):
        C, H, W = shape
        basis = torch.as_tensor(basis, dtype=torch.float64)
        n = basis.shape[0]
        b = int(round(math.sqrt(n)))
        if basis.dim() != 2 or basis.shape[1] != n or b * b != n:
            raise ShapeError(f"{name}: basis must be a square (b²×b²) matrix, got "
                             f"{tuple(basis.shape)}")
        if H % b or W % b:
            raise ShapeError(f"{name}: image size {H}x{W} must be a multiple of the block "
                             f"size {b}")
        # (skipped for bases this package drew itself with random_orthogonal: an O(n³) check)
        err = ((basis.T @ basis - torch.eye(n, dtype=basis.dtype)).abs().max()
               if check_orthogonal else 0.0)
        if err > 1e-3:
            raise ParameterError(f"{name}: basis must be orthogonal (max |BᵀB - I| = {err:.2g})")
        m = int(n * ratio)
        if not (0 < m <= n):
            raise ParameterError(f"{name}: ratio must be in (0, 1] with at least one "
                                 f"measurement per block, got {ratio}")
        nb = (H // b) * (W // b)
        super().__init__(shape, (C, nb, m))
        self.name = name
        self.b, self.m = b, m
        self.register_buffer("basis", basis.to(torch.float32))
        self.register_buffer("Bm", basis[:, :m].to(torch.float32).contiguous())
        sing = torch.zeros(C, nb, n)
        sing[..., :m] = 1
        self.register_buffer("_sing", sing.reshape(C, H, W))

    def _blocks(self, x):
        B, C, H, W = x.shape
        b = self.b
        return (x.reshape(B, C, H // b, b, W // b, b).permute(0, 1, 2, 4, 3, 5)
                .reshape(B, C, -1, b * b))

    def _unblocks(self, v):
        B, C = v.shape[:2]
        _, H, W = self.x_shape
        b = self.b
        return (v.reshape(B, C, H // b, W // b, b, b).permute(0, 1, 2, 4, 3, 5)
                .reshape(B, C, H, W))

    def _A(self, x):
        return self._blocks(x) @ self.Bm

    def _At(self, y):
        return self._unblocks(y @ self.Bm.T)

    _pinv = _At

    def _project(self, x, y):
        # x − Aᵀ(Ax − y) in the block layout: one blocking copy, two fused GEMMs, one unblocking
        xb = self._blocks(x).reshape(-1, self.b ** 2)
        r = torch.addmm(y.reshape(-1, self.m), xb, self.Bm, beta=-1)      # A x − y
        out = torch.addmm(xb, r, self.Bm.T, alpha=-1)                      # x − Aᵀ r
        return self._unblocks(out.reshape(*x.shape[:2], -1, self.b ** 2))

    def _Vt(self, x):
        return (self._blocks(x) @ self.basis).reshape(x.shape)

    def _V(self, z):
        B, C = z.shape[:2]
        return self._unblocks(z.reshape(B, C, -1, self.b ** 2) @ self.basis.T)

    def _Ut(self, y):
        B, C = y.shape[:2]
        z = torch.nn.functional.pad(y, (0, self.b ** 2 - self.m))
        return z.reshape(B, *self.x_shape)

    def _U(self, z):
        B, C = z.shape[:2]
        return z.reshape(B, C, -1, self.b ** 2)[..., : self.m]

    def _singulars(self):
        return self._sing
