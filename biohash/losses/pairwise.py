"""Pairwise hashing losses: DSH, DPSH, DHN (and DHN_paper), DCH, WGLHH, HashNet.

Each class computes exactly h2q's formula (``src/utils/losses.py`` of the
arXiv:2311.04207 code base), quoted in its docstring. Shared conventions
(see ``base.py``): ``z`` (B, nbits) is the activated hash output,
S = ``similarity(y)``, "mean" is over all B x B pairs with the diagonal
included, ``mean_b Σ_k`` sums over bits and averages over items, λ is
``penalty`` and w = S/p + (1-S)/(1-p) with p = ``similar_probability``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from biohash.losses.base import (
    LOSSES,
    HashLoss,
    cosine,
    l2_quantization,
    pair_weights,
    similarity,
)

__all__ = ["DSH", "DPSH", "DHN", "DHN_paper", "DCH", "WGLHH", "HashNet"]


def _likelihood(theta: Tensor, s: Tensor) -> Tensor:
    """mean(-(S·θ + log σ(-θ))): the pairwise negative log-likelihood of DPSH/DHN."""
    return -(s * theta + F.logsigmoid(-theta)).mean()


def _log_cosh(x: Tensor) -> Tensor:
    """log cosh x, = |x| + log(1 + e^(-2|x|)) - log 2: equal to float rounding,
    but finite where cosh overflows float32 (|x| > 89, reachable with -no_cube)."""
    x = x.abs()
    return x + F.softplus(-2 * x) - math.log(2.0)


def _cos_distance(cos: Tensor) -> Tensor:
    """h2q's DCH ``cosdist``: 1e-5 + (1 - cos)/2 · (1 - 2e-5), in [1e-5, 1 - 1e-5]
    (keeps log(d/γ) and γ/d finite for identical codes)."""
    eps = 1e-5
    return eps + (1 - cos) / 2 * (1 - 2 * eps)


@LOSSES.register("DSH")
class DSH(HashLoss):
    """Deep Supervised Hashing: contrastive loss on squared Euclidean distances.

    mean(½·S·D + ½·(1-S)·relu(2·nbits - D)), D_ij = ||z_i - z_j||²;
    + λ·mean_b Σ_k (1 - |z|).
    """

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        # Difference form, not |a|²+|b|²-2ab: exact zeros on the diagonal, as h2q.
        d = (z[:, None, :] - z[None, :, :]).pow(2).sum(dim=-1)  # (B, B)
        pairs = 0.5 * s * d + 0.5 * (1 - s) * F.relu(2.0 * self.nbits - d)
        return {"main": pairs.mean(),
                "quant": self.penalty * (1 - z.abs()).sum(dim=1).mean()}


@LOSSES.register("DPSH")
class DPSH(HashLoss):
    """Deep Pairwise-Supervised Hashing on θ = z zᵀ (h2q: no ½, unlike the paper).

    -mean(S·θ + log σ(-θ)) + λ·mean_b Σ_k (z - sign z)².
    """

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        theta = z @ z.T  # (B, B)
        return {"main": _likelihood(theta, similarity(y)),
                "quant": self.penalty * l2_quantization(z)}


@LOSSES.register("DHN")
class DHN(HashLoss):
    """Deep Hashing Network as h2q computes it: DPSH's pair term (θ = z zᵀ) and
    λ·mean_b Σ_k (log cosh|z| - 1).

    This quantization term is minimal at z = 0 (it pulls codes towards 0);
    the DHN paper's log cosh(|z| - 1) is the registered loss ``DHN_paper``.
    """

    def quantization(self, z: Tensor) -> Tensor:
        return (_log_cosh(z) - 1).sum(dim=1).mean()

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        return {"main": _likelihood(z @ z.T, similarity(y)),
                "quant": self.penalty * self.quantization(z)}


@LOSSES.register("DHN_paper")
class DHN_paper(DHN):  # noqa: N801 - the class is named after its registered loss name
    """DHN with the paper's quantization λ·mean_b Σ_k log cosh(|z| - 1),
    minimal at |z| = 1 (opt-in; ``DHN`` reproduces h2q)."""

    def quantization(self, z: Tensor) -> Tensor:
        return _log_cosh(z.abs() - 1).sum(dim=1).mean()


@LOSSES.register("DCH")
class DCH(HashLoss):
    """Deep Cauchy Hashing (γ = 10) on d = nbits·cd(z_i, z_j), cd = ``_cos_distance``:

    mean(w·(S·log(d/γ) + log(1 + γ/d))) + λ·mean_b log(1 + nbits·cd(|z_b|, 1)/γ).

    For a similar pair the bracket is log(1 + d/γ), for a dissimilar one
    log(1 + γ/d) (the paper's Cauchy cross-entropy), written as h2q does.
    """

    needs_similar_probability = True
    gamma = 10.0

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        w = pair_weights(s, self.similar_probability)
        d = self.nbits * _cos_distance(cosine(z, z))  # (B, B)
        pairs = w * (s * torch.log(d / self.gamma) + torch.log(1 + self.gamma / d))
        to_ones = F.cosine_similarity(z.abs(), torch.ones_like(z), dim=1)  # (B,)
        quant = torch.log(1 + self.nbits * _cos_distance(to_ones) / self.gamma).mean()
        return {"main": pairs.mean(), "quant": self.penalty * quant}


@LOSSES.register("WGLHH")
class WGLHH(HashLoss):
    """Weighted Gaussian-Like loss based Hamming Hashing (α = 0.1), as h2q:

    c = cos(z_i, z_j), d = nbits·(1 - c)/2, a = exp(|(c + 1)/2 - S|) (not
    detached: the hard-pair weight is differentiated too), x = α·d², e = e^(-x);
    mean(w·a·((1-S)·e + S·((1 + e)·log σ(x) - x·e))) + λ·mean_b Σ_k (z - sign z)².
    """

    needs_similar_probability = True
    alpha = 0.1

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        w = pair_weights(s, self.similar_probability)
        c = cosine(z, z)  # (B, B)
        d = self.nbits * (1 - c) / 2
        a = torch.exp(torch.abs(0.5 * (c + 1) - s))
        x = self.alpha * d.pow(2)
        e = torch.exp(-x)
        pairs = w * a * ((1 - s) * e + s * ((1 + e) * F.logsigmoid(x) - x * e))
        return {"main": pairs.mean(), "quant": self.penalty * l2_quantization(z)}


@LOSSES.register("HashNet")
class HashNet(HashLoss):
    """HashNet: -mean(w·(α·S·θ + log σ(-α·θ))), θ = z zᵀ, α = 10/nbits, with the
    continuation activation z = tanh(β·u), β = (1 + iter // 200)^0.5.

    ``iter`` counts training-mode forward calls (h2q's ``batch_iter``) and is
    a persistent buffer, so a checkpoint (``state_dict``) resumes the
    schedule. The activation is always the schedule's (h2q forces
    ``no_cube``); ``penalty`` is unused (no λ).
    """

    needs_similar_probability = True
    period = 200

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.register_buffer("iter", torch.zeros((), dtype=torch.long))

    @property
    def beta(self) -> float:
        return (1 + int(self.iter) // self.period) ** 0.5

    def activation(self, u: Tensor) -> Tensor:
        z = torch.tanh(self.beta * u)
        if self.training:
            self.iter += 1
        return z

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        w = pair_weights(s, self.similar_probability)
        alpha = 10 / self.nbits
        theta = z @ z.T  # (B, B)
        return {"main": -(w * (alpha * s * theta + F.logsigmoid(-alpha * theta))).mean()}
