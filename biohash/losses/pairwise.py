"""Pairwise hashing losses: DSH, DPSH, DHN, DCH, WGLHH, HashNet.

Definitions follow the h2q code base's losses (themselves from the papers and
DeepHash-pytorch); see each class. Shared conventions: ``z`` (B, nbits) is the
activated hash output, S = ``similarity(y)``, pair terms are averaged over the
B·(B-1) ordered pairs i != j (the diagonal is excluded), per-item
quantization terms are summed over bits and averaged over the batch.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from biohash.losses.base import LOSSES, HashLoss, pair_mask, pair_mean, similarity

__all__ = ["DSH", "DPSH", "DHN", "DCH", "WGLHH", "HashNet"]


def _likelihood(theta: Tensor, s: Tensor) -> Tensor:
    """Pairwise negative log-likelihood -(s·θ + log σ(-θ)) = log(1 + e^θ) - s·θ, stably."""
    return F.softplus(theta) - s * theta


def _log_cosh(x: Tensor) -> Tensor:
    """log cosh x without overflow: |x| + log(1 + e^(-2|x|)) - log 2."""
    x = x.abs()
    return x + F.softplus(-2 * x) - math.log(2.0)


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    """(Ba, Bb) cosine similarities; eps keeps zero vectors finite."""
    return F.normalize(a, dim=1, eps=1e-12) @ F.normalize(b, dim=1, eps=1e-12).T


def _hamming_like(z: Tensor) -> Tensor:
    """d = nbits·(1 - cos)/2: cosine distance scaled to the Hamming range (B, B)."""
    return z.shape[1] * (1.0 - _cosine(z, z)) / 2.0


@LOSSES.register("DSH")
class DSH(HashLoss):
    """Deep Supervised Hashing: contrastive loss on squared Euclidean distances.

    main = mean_pairs[ s/2 · d + (1-s)/2 · max(m - d, 0) ], d = ||z_i - z_j||²,
    m = 2·nbits; quant = λ·mean_b Σ_k |1 - |z||.
    """

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        sq = z.pow(2).sum(dim=1)
        d = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp(min=0)  # (B, B), no sqrt: no NaN grad
        margin = 2.0 * self.nbits
        pairs = 0.5 * s * d + 0.5 * (1 - s) * (margin - d).clamp(min=0)
        return {"main": pair_mean(pairs, pair_mask(len(z), z.device)),
                "quant": self.penalty * (1 - z.abs()).abs().sum(dim=1).mean()}


@LOSSES.register("DPSH")
class DPSH(HashLoss):
    """Deep Pairwise-Supervised Hashing: pairwise likelihood on θ = ½ z_i·z_j.

    The ½ is the DPSH paper's Θ_ij = ½ U_iᵀU_j (also DeepHash-pytorch's);
    quant = λ·mean_b Σ_k (z - sign z)².
    """

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        theta = 0.5 * z @ z.T  # (B, B)
        main = pair_mean(_likelihood(theta, similarity(y)), pair_mask(len(z), z.device))
        return {"main": main,
                "quant": self.penalty * (z - z.detach().sign()).pow(2).sum(dim=1).mean()}


@LOSSES.register("DHN")
class DHN(HashLoss):
    """Deep Hashing Network: DPSH's likelihood (θ = ½ z_i·z_j) with a smooth
    quantization term quant = λ·mean_b Σ_k log cosh(|z| - 1).

    The reference text writes "log cosh|z| - 1"; read as log(cosh|z|) - 1 its
    gradient would pull codes to 0, so the DHN paper's (and DeepHash-pytorch's)
    log cosh(|z| - 1), minimal at |z| = 1, is used.
    """

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        theta = 0.5 * z @ z.T
        main = pair_mean(_likelihood(theta, similarity(y)), pair_mask(len(z), z.device))
        return {"main": main,
                "quant": self.penalty * _log_cosh(z.abs() - 1).sum(dim=1).mean()}


@LOSSES.register("DCH")
class DCH(HashLoss):
    """Deep Cauchy Hashing: Cauchy cross-entropy on d = nbits·(1 - cos)/2.

    main = mean_pairs w·[ s·log(1 + d/γ) + (1-s)·log(1 + γ/d) ], γ = 10,
    w = s/p + (1-s)/(1-p) with p = 0.5 (as in the reference, i.e. w = 2);
    d is clamped at 1e-6 so identical dissimilar codes stay finite.
    quant = λ·mean_b log(1 + d(|z|, 1)/γ) (Cauchy quantization).
    """

    gamma = 10.0
    p = 0.5

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        d = _hamming_like(z).clamp(min=1e-6)
        w = s / self.p + (1 - s) / (1 - self.p)
        pairs = w * (s * torch.log1p(d / self.gamma) + (1 - s) * torch.log1p(self.gamma / d))
        ones = torch.ones_like(z[:1])
        d_quant = self.nbits * (1.0 - _cosine(z.abs(), ones)) / 2.0  # (B, 1)
        return {"main": pair_mean(pairs, pair_mask(len(z), z.device)),
                "quant": self.penalty * torch.log1p(d_quant / self.gamma).mean()}


@LOSSES.register("WGLHH")
class WGLHH(HashLoss):
    """Weighted Gaussian-Like loss based Hamming Hashing.

    On d = nbits·(1 - cos)/2, the Gaussian-like similarity p = exp(-α d²),
    α = 0.1, is fitted to S by a weighted cross-entropy:
    main = mean_pairs w·-[s·log p + (1-s)·log(1 - p)] with hard-pair weights
    w = exp(|(1 + cos)/2 - s|) (constants: no gradient through the weights;
    p is clamped to [1e-6, 1 - 1e-6]); quant = λ·mean_b Σ_k (z - sign z)².
    """

    alpha = 0.1

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        cos = _cosine(z, z)
        d = self.nbits * (1.0 - cos) / 2.0
        p = torch.exp(-self.alpha * d.pow(2)).clamp(1e-6, 1 - 1e-6)
        w = torch.exp(((1 + cos) / 2 - s).abs()).detach()
        pairs = -w * (s * torch.log(p) + (1 - s) * torch.log1p(-p))
        return {"main": pair_mean(pairs, pair_mask(len(z), z.device)),
                "quant": self.penalty * (z - z.detach().sign()).pow(2).sum(dim=1).mean()}


@LOSSES.register("HashNet")
class HashNet(HashLoss):
    """HashNet: weighted pairwise likelihood on α·z_i·z_j, α = 10/nbits, with
    the continuation activation z = tanh(β·u), β = sqrt(1 + iter // 200).

    ``iter`` counts training-mode forward calls and is a persistent buffer,
    so a checkpoint (``state_dict``) resumes the schedule. The activation is
    always the schedule's (``no_cube`` is ignored); ``penalty`` is unused (no
    λ). Similar and dissimilar pairs are re-weighted to equal total weight:
    each similar pair by n/n₊, each dissimilar pair by n/n₋.
    """

    step = 200

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("iter", torch.zeros((), dtype=torch.long))

    @property
    def beta(self) -> float:
        return math.sqrt(1 + int(self.iter) // self.step)

    def activation(self, u: Tensor) -> Tensor:
        z = torch.tanh(self.beta * u)
        if self.training:
            self.iter += 1
        return z

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        mask = pair_mask(len(z), z.device).float()
        n_pos, n_neg = (s * mask).sum(), ((1 - s) * mask).sum()
        total = n_pos + n_neg
        w = torch.where(s > 0, total / n_pos.clamp(min=1), total / n_neg.clamp(min=1))
        loss = _likelihood(10.0 / self.nbits * z @ z.T, s)
        return {"main": (w * loss * mask).sum() / total}
