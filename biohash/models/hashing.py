"""The arch registry, the shared hash head and ``create_model``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from biohash.config import base_arch, parse_bio_scope
from biohash.errors import ConfigError
from biohash.registry import Registry

__all__ = ["ARCHS", "ArchSpec", "HashingModel", "create_model"]


@dataclass(frozen=True)
class ArchSpec:
    """How to build one backbone.

    ``build(pretrained=bool) -> (backbone, feature_dim)``.
    ``input_size``: the square side images are resized to on the device
    (``None`` = native size of the stored images). ``channels``: what the
    backbone expects; 1-channel stores are repeated to 3 on the device.
    """

    build: Callable[..., tuple[nn.Module, int]]
    input_size: int | None
    channels: int
    description: str


ARCHS: Registry[ArchSpec] = Registry("arch")


class HashingModel(nn.Module):
    """``backbone`` -> features (B, D); ``head`` -> raw hash outputs (B, nbits).

    The head output is returned *before* tanh: the loss applies its own
    activation (tanh, HashNet's scheduled tanh, or none with -no_cube), and
    predict stores the raw outputs as the old workflow did.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, nbits: int, *,
                 input_size: int | None, channels: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(feature_dim, nbits)
        # h2q's init for the hash layer: N(0, 0.01), bias 0.
        nn.init.normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)
        self.input_size = input_size
        self.channels = channels
        self.nbits = nbits

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, nbits)
        return self.head(self.backbone(x))


def create_model(arch: str, *, nbits: int, mode: str = "bp", bio_scope: str = "all",
                 weights: str = "none", seed: int = 0) -> HashingModel:
    """Build ``arch`` (``bio-`` prefix = converted with ``mode`` over ``bio_scope``).

    ``weights``: ``"imagenet"`` loads the pretrained backbone (needs network
    access the first time), ``"none"`` starts from random init.
    """
    spec = ARCHS.get(base_arch(arch))
    if nbits < 1:
        raise ConfigError(f"bad nbits {nbits!r}; allowed: an integer >= 1")
    backbone, dim = spec.build(pretrained=(weights == "imagenet"))
    model = HashingModel(backbone, dim, nbits, input_size=spec.input_size, channels=spec.channels)
    if arch.startswith("bio-"):
        from biohash.bio import convert

        parts = parse_bio_scope(bio_scope, mode)
        if len(set(parts.values())) == 1:
            model = convert(model, mode if bio_scope == "all" else next(iter(parts.values())),
                            scope="all", seed=seed)
        else:
            model = convert(model, mode, scope=parts, seed=seed)
    return model


def pretrained_error(arch: str, exc: Exception) -> ConfigError:
    """The message for weights that cannot be fetched (offline machines)."""
    return ConfigError(
        f"cannot load ImageNet weights for {arch!r} ({type(exc).__name__}: {exc}); "
        f"this machine may be offline: use -weights none, or pre-populate the torch hub cache")


# Import the arch families so their registrations run.
from biohash.models import archs  # noqa: E402,F401
