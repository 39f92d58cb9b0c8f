"""The hashing-loss contract, the shared penalties and the loss registry.

Every loss takes the RAW hash-layer output ``u`` (B x nbits, before any tanh)
and float multi-hot labels ``y`` (B x L), applies its own activation
(``z = tanh(u)`` unless ``no_cube``), and returns a :class:`LossOutput`:
``total`` to back-propagate and ``parts`` (detached scalars) to log, with
``total == sum(parts.values())``. The loss is always computed in float32
(``u`` is cast and autocast is disabled inside), so bf16/fp16 training
cannot underflow the pairwise terms.

Extra penalties, added to any loss (the old fork silently dropped them):

* ``l2_penalty · mean_b Σ_k (z - sign z)²``;
* ``hswd_penalty ·`` mean over bits of the 1-D Wasserstein-2 distance
  (squared, i.e. mean squared difference of sorted values) between the
  batch's column of ``z`` and a balanced ±1 sample: half -1, half +1 (the
  odd one out +1). Sorted, a Rademacher sample is just its count of -1s, and
  the balanced vector is the expected sample: deterministic, no draw from the
  global RNG (which would shift the data order of a seeded run).

Learnable loss parameters (HyP2's class proxies) are ``HashLoss.parameters()``;
the trainer optimises them in their own param group with lr 1e-3, as h2q did.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from biohash.errors import ConfigError
from biohash.registry import Registry

__all__ = ["LOSSES", "HashLoss", "LossOutput", "create_loss", "similarity", "pair_mask",
           "l2_quantization", "hswd_penalty"]

#: Loss classes by their old ``-loss`` names (case-sensitive).
LOSSES: Registry[Callable[..., "HashLoss"]] = Registry("loss")


class LossOutput(NamedTuple):
    """``total``: scalar to back-propagate; ``parts``: detached weighted terms."""

    total: Tensor
    parts: dict[str, Tensor]


def similarity(y: Tensor) -> Tensor:
    """S (B, B) float: 1 where two items share a label (``y_i · y_j > 0``)."""
    return (y @ y.T > 0).float()


def pair_mask(batch: int, device: torch.device) -> Tensor:
    """(B, B) bool, True off the diagonal: pairs i != j."""
    return ~torch.eye(batch, dtype=torch.bool, device=device)


def pair_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over ``mask``; 0 (with a gradient path) if empty."""
    count = mask.sum()
    return (values * mask).sum() / count.clamp(min=1)


def l2_quantization(z: Tensor) -> Tensor:
    """mean_b Σ_k (z - sign z)²."""
    return (z - z.detach().sign()).pow(2).sum(dim=1).mean()


def hswd_penalty(z: Tensor) -> Tensor:
    """Per-bit squared 1-D Wasserstein-2 distance to a balanced ±1 sample, averaged."""
    b = z.shape[0]
    target = torch.ones(b, dtype=z.dtype, device=z.device)
    target[: b // 2] = -1.0  # sorted balanced Rademacher sample  # (B,)
    sorted_z, _ = torch.sort(z, dim=0)  # (B, nbits)
    return (sorted_z - target[:, None]).pow(2).mean()


class HashLoss(nn.Module):
    """Base class: activation, penalties, float32, ``LossOutput``.

    Subclasses implement :meth:`terms` (``z`` after the activation, ``y``
    float labels) returning the loss's own weighted terms; ``penalty`` is the
    loss's own weight λ (quantization weight, or HyP2's pair-term weight).
    """

    def __init__(self, *, nbits: int, num_classes: int, penalty: float,
                 l2_penalty: float = 0.0, hswd_penalty: float = 0.0,
                 no_cube: bool = False) -> None:
        super().__init__()
        for name, value in (("nbits", nbits), ("num_classes", num_classes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1; got {value!r}")
        for name, value in (("penalty", penalty), ("L2_penalty", l2_penalty),
                            ("HSWD_penalty", hswd_penalty)):
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")
        self.nbits, self.num_classes = nbits, num_classes
        self.penalty, self.l2_penalty, self.hswd_penalty = (
            float(penalty), float(l2_penalty), float(hswd_penalty))
        self.no_cube = bool(no_cube)

    def activation(self, u: Tensor) -> Tensor:
        return u if self.no_cube else torch.tanh(u)

    def terms(self, z: Tensor, y: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def forward(self, u: Tensor, y: Tensor) -> LossOutput:
        if u.ndim != 2 or u.shape[1] != self.nbits:
            raise ConfigError(f"hash output must be (batch, {self.nbits}); got {tuple(u.shape)}")
        if y.ndim != 2 or y.shape[0] != u.shape[0]:
            raise ConfigError(f"labels must be (batch, classes) matching the hash output's "
                              f"batch {u.shape[0]}; got {tuple(y.shape)}")
        if u.shape[0] < 2:
            raise ConfigError(f"batch of {u.shape[0]} item(s); pairwise hashing losses need >= 2")
        with torch.autocast(device_type=u.device.type, enabled=False):
            z = self.activation(u.float())  # (B, nbits)
            parts = self.terms(z, y.float())
            if self.l2_penalty > 0:
                parts["l2"] = self.l2_penalty * l2_quantization(z)
            if self.hswd_penalty > 0:
                parts["hswd"] = self.hswd_penalty * hswd_penalty(z)
            total = torch.stack(list(parts.values())).sum()
        return LossOutput(total, {k: v.detach() for k, v in parts.items()})

    def extra_repr(self) -> str:
        return (f"nbits={self.nbits}, num_classes={self.num_classes}, penalty={self.penalty}, "
                f"l2_penalty={self.l2_penalty}, hswd_penalty={self.hswd_penalty}, "
                f"no_cube={self.no_cube}")


def create_loss(name: str, *, nbits: int, num_classes: int, penalty: float,
                l2_penalty: float = 0.0, hswd_penalty: float = 0.0,
                no_cube: bool = False) -> HashLoss:
    """Build the registered loss ``name`` (e.g. ``"DCH"``).

    Raises:
        ConfigError: unknown name (the message lists the registered ones),
            or a non-positive size / negative or non-finite weight.
    """
    cls = LOSSES.get(name)
    return cls(nbits=nbits, num_classes=num_classes, penalty=penalty,
               l2_penalty=l2_penalty, hswd_penalty=hswd_penalty, no_cube=no_cube)
