"""Cosine losses with a target separation: HyP2 (proxies + pairs) and CEL.

The separation s is the cosine below which dissimilar codes (and codes vs.
other classes' proxies) are no longer pushed apart. As in h2q it is read from
h2q's code table (``h2q-codetable.csv`` beside this file, h2q's
``data/codetable.csv``): row = nbits (1..256), column k = ceil(log2 C), value
= a maximum pairwise cosine 1 - 2·d/nbits of a binary linear [nbits, k, d]
code (2^k >= C codewords at minimum distance d). E.g. CIFAR-10 (10
classes) reads column 4, NUS-WIDE (21) 5, MS-COCO (80 or 90) and
ImageNet-100 7.

A class count of 1 has no column (ceil(log2 1) = 0; h2q's lookup then read
the row label, nbits, as the separation), nor has C > 2^nbits (the cell is
empty): both are refused with a ``ConfigError``, as is nbits outside 1..256.

Exactly h2q's formulas, with cos = cosine similarity of rows (``cosine``)
and every mean over all entries:

* CEL: mean((1 - cos(z_i, z_j))·S + (1 - S)·relu(cos(z_i, z_j) - s)).
* HyP2, P = tanh(proxies) (C x nbits), D = [y_i · y_j <= 0] (an unlabelled
  item is dissimilar to everything, itself included):
  pair  = mean(D·relu(cos(z_i, z_j) - s)) / mean(D);
  proxy = mean(y·(-cos(z, P))) / mean(y) + mean((1-y)·relu(cos(z, P) - s)) / mean(1-y);
  total = λ·(pair + L2 + HSWD terms) + proxy.
  A ratio whose mask is empty (no dissimilar pair in the batch, no label, or
  every label set) is 0 where h2q's 0/0 gave NaN (``safe_ratio``).
"""
from __future__ import annotations

import csv
import math
from functools import lru_cache
from importlib import resources

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from biohash.errors import ConfigError
from biohash.losses.base import LOSSES, HashLoss, cosine, safe_ratio, similarity

__all__ = ["HyP2", "CEL", "separation", "CODETABLE_FILE"]

#: Package data: h2q's code table, with one provenance comment line on top.
CODETABLE_FILE = "h2q-codetable.csv"


@lru_cache(maxsize=None)
def _codetable() -> dict[int, tuple[float, ...]]:
    """nbits -> separations by column 1..; NaN where the table has no entry."""
    text = resources.files("biohash.losses").joinpath(CODETABLE_FILE).read_text()
    rows = csv.reader(line for line in text.splitlines() if not line.startswith("#"))
    next(rows)  # header: n_bits, 1, 2, ...
    return {int(row[0]): tuple(float(v) if v else math.nan for v in row[1:]) for row in rows}


def separation(nbits: int, num_classes: int) -> float:
    """h2q's separation: ``codetable[nbits][ceil(log2 num_classes)]``.

    Raises:
        ConfigError: nbits or num_classes outside the table.
    """
    table = _codetable()
    if isinstance(nbits, bool) or not isinstance(nbits, int) or nbits not in table:
        raise ConfigError(f"nbits {nbits!r} is outside h2q's separation table "
                          f"(nbits {min(table)}..{max(table)})")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise ConfigError(f"num_classes must be an integer; got {num_classes!r}")
    column = (num_classes - 1).bit_length()  # = ceil(log2 C), exactly, for C >= 1
    values = table[nbits]
    if num_classes < 2 or column > len(values) or math.isnan(values[column - 1]):
        raise ConfigError(f"num_classes {num_classes} is outside h2q's separation table at "
                          f"{nbits} bits: it covers 2..2**{nbits} classes "
                          f"(columns ceil(log2 classes) = 1..{nbits})")
    return values[column - 1]


@LOSSES.register("HyP2")
class HyP2(HashLoss):
    """Hybrid Proxy-Pair loss (HyP²) with one learnable proxy per class.

    ``proxies`` is a raw (classes x nbits) parameter, Kaiming-normal
    (fan-out) from the global torch RNG (seeded by the trainer), used as
    tanh(proxies); the trainer gives it lr 1e-3. Logged parts, which add up
    to ``total``: ``main`` = proxy term, ``pair`` = λ·pair term and, when
    enabled, ``l2``/``hswd`` = λ·(their weighted penalty) — for HyP2, λ
    multiplies the penalties too (h2q's ``training_step``).
    """

    penalties_inside_lambda = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.separation = separation(self.nbits, self.num_classes)
        self.proxies = nn.Parameter(torch.zeros(self.num_classes, self.nbits))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        if y.shape[1] != self.num_classes:
            raise ConfigError(f"HyP2 has {self.num_classes} proxies but labels have "
                              f"{y.shape[1]} columns")
        sep = self.separation
        dissimilar = (y @ y.T <= 0).float()  # (B, B)
        pair = safe_ratio((dissimilar * F.relu(cosine(z, z) - sep)).mean(), dissimilar.mean())
        cos_p = cosine(z, torch.tanh(self.proxies))  # (B, C)
        proxy = (safe_ratio((y * -cos_p).mean(), y.mean())
                 + safe_ratio(((1 - y) * F.relu(cos_p - sep)).mean(), (1 - y).mean()))
        return {"main": proxy, "pair": self.penalty * pair}


@LOSSES.register("CEL")
class CEL(HashLoss):
    """Pairwise cosine embedding loss:
    mean((1 - cos)·S + (1 - S)·relu(cos - s)); ``penalty`` is unused."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.separation = separation(self.nbits, self.num_classes)

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        s = similarity(y)
        cos = cosine(z, z)  # (B, B)
        return {"main": ((1 - cos) * s + (1 - s) * F.relu(cos - self.separation)).mean()}
