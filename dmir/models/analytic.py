"""Analytic priors with exact noise predictions under any schedule.

For a prior p(x_0), x_t = √ᾱ x_0 + √(1-ᾱ) n has the exact denoiser E[x_0 | x_t] (Tweedie), and
the exact noise prediction ε(x_t, t) = (x_t - √ᾱ E[x_0 | x_t]) / √(1-ᾱ). For Gaussian and
Gaussian-mixture priors both are closed form, and so is the posterior p(x_0 | y) under a linear
operator with Gaussian noise: the ground truth against which solvers are scored.

All computations are in float64 internally and returned in the input's dtype.
"""
from __future__ import annotations

import math

import torch

from ..errors import ParameterError, ShapeError
from .base import DiffusionModel, _bcast, make_schedule


def operator_matrix(op) -> torch.Tensor:
    """Dense matrix of a linear operator (y_numel × x_dim), float64. For small images only."""
    D = op.x_dim
    opd = _as_double(op)
    eye = torch.eye(D, dtype=torch.float64, device=op.device).reshape(D, *op.x_shape)
    return opd.A(eye).reshape(D, -1).T.contiguous()


def _as_double(op):
    import copy

    return op if op.dtype == torch.float64 else copy.deepcopy(op).double()


def _gaussian_condition(mu, S, A, y, sigma):
    """Posterior of N(mu, S) given y = A x + N(0, σ² I); σ = 0 allowed (pseudo-inverse).

    Returns (mean, cov, log N(y; A mu, A S Aᵀ + σ² I)) with the density taken on the range of
    A S Aᵀ + σ² I when it is singular (noise-free, rank-deficient A).
    """
    G = A @ S @ A.T + sigma ** 2 * torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    lam, Q = torch.linalg.eigh(G)
    keep = lam > lam.max() * 1e-10
    lam, Q = lam[keep], Q[:, keep]
    r = y - A @ mu
    rq = Q.T @ r
    Ginv = (Q / lam) @ Q.T
    K = S @ A.T @ Ginv
    mean = mu + K @ r
    cov = S - K @ A @ S
    cov = 0.5 * (cov + cov.T)
    logp = -0.5 * ((rq ** 2 / lam).sum() + torch.log(lam).sum() + len(lam) * math.log(2 * math.pi))
    return mean, cov, logp


class GaussianPrior(DiffusionModel):
    """x_0 ~ N(mean, Σ) with Σ = var·I (scalar), diag(var) (per pixel, shape C×H×W) or a full
    (D × D) covariance (D = C·H·W, small images).

    Exact noise prediction: with r = x_t - √ᾱ μ,
        ε(x_t, t) = √(1-ᾱ) (ᾱ Σ + (1-ᾱ) I)⁻¹ r      (equivalently (x_t - √ᾱ x̂_0)/√(1-ᾱ) with
        x̂_0 = μ + √ᾱ Σ (ᾱΣ + (1-ᾱ)I)⁻¹ r).
    """

    mean: torch.Tensor      # buffers (typed for the checker)
    var: torch.Tensor
    lam: torch.Tensor
    Q: torch.Tensor

    def __init__(self, mean, var=0.25, schedule="linear", T: int = 1000):
        super().__init__(make_schedule(schedule, T))
        mean = torch.as_tensor(mean, dtype=torch.float64)
        if mean.dim() == 4 and mean.shape[0] == 1:
            mean = mean[0]
        if mean.dim() != 3:
            raise ShapeError(f"GaussianPrior: mean must have shape (C, H, W), got "
                             f"{tuple(mean.shape)}")
        self.shape = tuple(mean.shape)
        D = mean.numel()
        var = torch.as_tensor(var, dtype=torch.float64)
        self.register_buffer("mean", mean)
        self.kind = None
        if not torch.isfinite(var).all() or not torch.isfinite(mean).all():
            raise ParameterError("GaussianPrior: mean and variance must be finite (no NaN/Inf)")
        if var.dim() == 0 or tuple(var.shape) == self.shape:
            if not (var > 0).all():
                raise ParameterError("GaussianPrior: variance must be positive")
            self.kind = "diag"
            self.register_buffer("var", var.expand(self.shape).clone() if var.dim() else var)
        elif tuple(var.shape) == (D, D):
            lam, Q = torch.linalg.eigh(0.5 * (var + var.T))
            if lam.min() < -1e-10 * lam.max():
                raise ParameterError("GaussianPrior: covariance must be positive semi-definite")
            self.kind = "full"
            self.register_buffer("var", var)
            self.register_buffer("lam", lam.clamp_min(0))
            self.register_buffer("Q", Q)
        else:
            raise ShapeError(f"GaussianPrior: var must be a scalar, shape {self.shape} or "
                             f"({D}, {D}), got {tuple(var.shape)}")

    def covariance(self) -> torch.Tensor:
        """Full (D × D) covariance, float64."""
        if self.kind == "full":
            return self.var
        v = self.var.expand(self.shape).reshape(-1)
        return torch.diag(v)

    def eps(self, x_t, t):
        a = _bcast(self.alpha_bar(t), x_t).double()
        x = x_t.double()
        r = x - a.sqrt() * self.mean
        if self.kind == "diag":
            e = (1 - a).sqrt() * r / (a * self.var + 1 - a)
        else:
            B = x.shape[0]
            rq = r.reshape(B, -1) @ self.Q
            a2 = a.reshape(-1, 1) if a.dim() else a
            rq = rq / (a2 * self.lam + 1 - a2)
            e = (1 - a).sqrt() * (rq @ self.Q.T).reshape(x.shape)
        return e.to(x_t.dtype)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        z = torch.randn(n, *self.shape, generator=generator, dtype=torch.float64)
        if self.kind == "diag":
            return self.mean + self.var.sqrt() * z
        L = self.Q * self.lam.sqrt()
        return self.mean + (z.reshape(n, -1) @ L.T).reshape(n, *self.shape)

    def posterior(self, op, y, sigma_model: float = 0.0):
        """Exact p(x_0 | y) for y = A x_0 + N(0, σ² I) (σ in model units): (mean, cov).

        ``y``: one measurement (batch of 1). Returns mean (1, C, H, W) and cov (D × D), float64.
        """
        A = operator_matrix(op)
        yv = y.reshape(-1).double()
        m, S, _ = _gaussian_condition(self.mean.reshape(-1), self.covariance(), A, yv, sigma_model)
        return m.reshape(1, *self.shape), S


class GMMPrior(DiffusionModel):
    """x_0 ~ Σ_k π_k N(μ_k, Σ_k), exact ε for any schedule.

    Args:
        weights: (K,) mixture weights (normalised here).
        means: (K, C, H, W).
        covs: (K,) scalars, (K, C, H, W) diagonals, or (K, D, D) full covariances.
    """

    weights: torch.Tensor   # buffers (typed for the checker)
    means: torch.Tensor
    covs: torch.Tensor
    lam: torch.Tensor
    Q: torch.Tensor

    def __init__(self, weights, means, covs, schedule="linear", T: int = 1000):
        super().__init__(make_schedule(schedule, T))
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 4 or means.shape[0] != w.numel():
            raise ShapeError(f"GMMPrior: means must be (K, C, H, W) with K = {w.numel()}, got "
                             f"{tuple(means.shape)}")
        if not (w >= 0).all() or not w.sum() > 0 or not torch.isfinite(w).all():
            raise ParameterError("GMMPrior: weights must be finite, non-negative and not all "
                                 "zero")
        if not torch.isfinite(means).all():
            raise ParameterError("GMMPrior: means must be finite (no NaN/Inf)")
        K = w.numel()
        self.shape = tuple(means.shape[1:])
        D = math.prod(self.shape)
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.dim() == 1 and covs.numel() == K:
            full = covs.reshape(K, 1, 1) * torch.eye(D, dtype=torch.float64)
        elif tuple(covs.shape) == (K, *self.shape):
            full = torch.diag_embed(covs.reshape(K, D))
        elif tuple(covs.shape) == (K, D, D):
            full = 0.5 * (covs + covs.transpose(1, 2))
        else:
            raise ShapeError(f"GMMPrior: covs must be (K,), (K, C, H, W) or (K, D, D) with "
                             f"K = {K}, D = {D}; got {tuple(covs.shape)}")
        if not torch.isfinite(covs).all():
            raise ParameterError("GMMPrior: covariances must be finite (no NaN/Inf)")
        lam, Q = torch.linalg.eigh(full)
        if (lam < -1e-10 * lam.amax(-1, keepdim=True)).any():
            raise ParameterError("GMMPrior: covariances must be positive semi-definite")
        self.register_buffer("weights", w / w.sum())
        self.register_buffer("means", means)
        self.register_buffer("covs", full)
        self.register_buffer("lam", lam.clamp_min(0))
        self.register_buffer("Q", Q)

    def _resp_and_eps(self, x_t, t):
        a = self.alpha_bar(t).double()
        x = x_t.double().reshape(x_t.shape[0], -1)                 # (B, D)
        a = a.reshape(-1, 1, 1) if a.dim() else a                   # (B,1,1) or scalar
        mu = self.means.reshape(1, len(self.weights), -1)           # (1, K, D)
        r = x[:, None, :] - a.sqrt() * mu                           # (B, K, D)
        rq = torch.einsum("bkd,kde->bke", r, self.Q)                # coords in eigenbasis
        c = a * self.lam[None] + (1 - a)                            # (B|1, K, D) eigenvalues of C_k
        maha = (rq ** 2 / c).sum(-1)
        logdet = torch.log(c).sum(-1)
        logw = torch.log(self.weights)[None] - 0.5 * (maha + logdet)
        resp = torch.softmax(logw, dim=1)                           # (B, K)
        e_k = (1 - a).sqrt() * torch.einsum("bke,kde->bkd", rq / c, self.Q)
        e = (resp[..., None] * e_k).sum(1)
        return resp, e.reshape(x_t.shape)

    def eps(self, x_t, t):
        return self._resp_and_eps(x_t, t)[1].to(x_t.dtype)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.lam.shape[1], generator=generator, dtype=torch.float64)
        L = self.Q[k] * self.lam[k].sqrt()[:, None, :]
        x = self.means[k].reshape(n, -1) + torch.einsum("nde,ne->nd", L, z)
        return x.reshape(n, *self.shape)

    def posterior(self, op, y, sigma_model: float = 0.0) -> "GMMPrior":
        """Exact p(x_0 | y) for y = A x_0 + N(0, σ² I) (σ in model units), as a GMMPrior."""
        A = operator_matrix(op)
        yv = y.reshape(-1).double()
        ms, Ss, lps = [], [], []
        for k in range(len(self.weights)):
            m, S, lp = _gaussian_condition(self.means[k].reshape(-1), self.covs[k], A, yv,
                                           sigma_model)
            ms.append(m)
            Ss.append(S)
            lps.append(lp + torch.log(self.weights[k]))
        w = torch.softmax(torch.stack(lps), 0)
        return GMMPrior(w, torch.stack(ms).reshape(-1, *self.shape), torch.stack(Ss),
                        schedule=1 - self.alphas_cumprod / torch.cat(
                            [self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]]))
