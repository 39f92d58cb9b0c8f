"""Cosine losses with a target separation: HyP2 (proxies + pairs) and CEL.

``separation(nbits, num_classes)`` is the cosine below which dissimilar codes
(and codes vs. other classes' proxies) are no longer pushed apart: the
smallest maximum pairwise cosine that ``num_classes`` ±1 codes of length
``nbits`` can reach. For ±1 codes cos = 1 - 2·dist/nbits, so this is coding
theory's "largest minimum distance of a code with C words", known only in
special cases (HyP2's authors looked it up in a table of best known linear
codes). We compute the value of explicit codes instead (an achievable upper
bound on the optimum), the better of two deterministic constructions:

* Reed-Muller: b = the largest power of two dividing nbits, m = log2(b);
  RM(r, m) repeated nbits/b times (repetition keeps cosines) has
  2^(Σ_{i<=r} binom(m, i)) words at distance >= 2^(m-r) per block, i.e. max
  cosine 1 - 2^(1-r); the smallest r with >= C words. r = 1 is the
  ±Hadamard code: up to 2b codes at cosine 0.
* Greedy linear code: for each dimension k from ceil(log2 C) to
  min(nbits, 9), columns of a k x nbits generator are added one at a time,
  each the nonzero vector of F_2^k that maximises the code's minimum weight
  (then minimises how many words have it). Minimum distance d gives
  cosine 1 - 2d/nbits; a code with more words contains one with C words,
  so larger k may only help, and the value is monotone in C.

C <= 2 gives -1 (a code and its negation); C > 2^nbits gives 1. Known lower
bounds (``separation_bound``): any C unit vectors have max cosine >= -1/(C-1)
(their sum has norm >= 0), and >= 0 once C > nbits + 1 (Rankin: at most n+1
pairwise-obtuse vectors in R^n). E.g. 16 bits: 3 classes -0.25 (optimal),
10 classes 0, 100 classes 0.25; 64 bits, 10 classes -0.03125 (optimal by the
Griesmer bound).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biohash.errors import ConfigError
from biohash.losses.base import LOSSES, HashLoss, pair_mask, pair_mean, similarity

__all__ = ["HyP2", "CEL", "separation", "separation_bound"]


def _check_sizes(nbits: int, num_classes: int) -> None:
    for name, value in (("nbits", nbits), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1; got {value!r}")


_GREEDY_MAX_K = 9  # 511 x 511 parity table; beyond, Reed-Muller only


def _reed_muller_cos(nbits: int, num_classes: int) -> float:
    b = nbits & -nbits  # largest power of two dividing nbits
    m = b.bit_length() - 1
    for r in range(1, m + 1):
        if sum(math.comb(m, i) for i in range(r + 1)) >= (num_classes - 1).bit_length():
            return 1.0 - 2.0 ** (1 - r)
    return 1.0


@lru_cache(maxsize=None)
def _greedy_linear_cos(nbits: int, k: int) -> float:
    words = np.arange(1, 2**k)
    parity = (np.bitwise_count(words[:, None] & words[None, :]) & 1).astype(np.int32)  # (M, V)
    weight = np.zeros(len(words), dtype=np.int32)  # weight of each nonzero codeword
    for _ in range(nbits):
        cand = weight[:, None] + parity            # (M, V) weights after adding column v
        low = cand.min(axis=0)
        ties = (cand == low[None, :]).sum(axis=0)
        weight += parity[:, np.lexsort((ties, -low))[0]]
    return 1.0 - 2.0 * int(weight.min()) / nbits


@lru_cache(maxsize=None)
def separation(nbits: int, num_classes: int) -> float:
    """Max pairwise cosine of an explicit code of ``num_classes`` ±1 words of
    length ``nbits`` (the better of two constructions, see the module docstring)."""
    _check_sizes(nbits, num_classes)
    if num_classes <= 2:
        return -1.0
    k = (num_classes - 1).bit_length()  # ceil(log2 C)
    if k > nbits:
        return 1.0
    best = _reed_muller_cos(nbits, num_classes)
    for dim in range(k, min(nbits, _GREEDY_MAX_K) + 1):
        best = min(best, _greedy_linear_cos(nbits, dim))
    return best


def separation_bound(nbits: int, num_classes: int) -> float:
    """A known lower bound on the best achievable max cosine (simplex / Rankin)."""
    _check_sizes(nbits, num_classes)
    if num_classes <= 1:
        return -1.0
    return 0.0 if num_classes > nbits + 1 else -1.0 / (num_classes - 1)


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return F.normalize(a, dim=1, eps=1e-12) @ F.normalize(b, dim=1, eps=1e-12).T


@LOSSES.register("HyP2")
class HyP2(HashLoss):
    """Hybrid Proxy-Pair loss (HyP²): one learnable proxy per class.

    proxy term = mean over (item, own class) of (1 - cos(z, proxy))
               + mean over (item, other class) of max(cos(z, proxy) - sep, 0);
    pair term  = mean over dissimilar pairs of max(cos(z_i, z_j) - sep, 0)
    (pairs with unlabelled items excluded), weighted by ``penalty``;
    sep = ``separation(nbits, num_classes)``. Proxies start Kaiming-normal
    (fan-out) from the global torch RNG (seeded by the trainer) and are
    trained with lr 1e-3 by the trainer.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.separation = separation(self.nbits, self.num_classes)
        self.proxies = nn.Parameter(torch.empty(self.num_classes, self.nbits))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        if y.shape[1] != self.num_classes:
            raise ConfigError(f"HyP2 has {self.num_classes} proxies but labels have "
                              f"{y.shape[1]} columns")
        pos = y > 0
        cos = _cos(z, self.proxies)  # (B, C)
        proxy = (pair_mean(1 - cos, pos)
                 + pair_mean((cos - self.separation).clamp(min=0), ~pos))
        labelled = pos.any(dim=1)
        dissimilar = (similarity(y) == 0) & pair_mask(len(z), z.device)
        dissimilar &= labelled[:, None] & labelled[None, :]
        pair = pair_mean((_cos(z, z) - self.separation).clamp(min=0), dissimilar)
        return {"main": proxy, "pair": self.penalty * pair}


@LOSSES.register("CEL")
class CEL(HashLoss):
    """Pairwise cosine embedding loss: mean over pairs of (1 - cos) for similar
    and max(cos - sep, 0) for dissimilar pairs, sep = ``separation``.
    ``penalty`` is unused."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.separation = separation(self.nbits, self.num_classes)

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        cos = _cos(z, z)
        pairs = s * (1 - cos) + (1 - s) * (cos - self.separation).clamp(min=0)
        return {"main": pair_mean(pairs, pair_mask(len(z), z.device))}
