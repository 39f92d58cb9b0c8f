"""Backbone families: torchvision AlexNet/VGG16, timm HRNet (HHNet), a small CNN.

AlexNet/VGG16 follow h2q: the conv stack plus the classifier up to its last
4096-d ReLU, so the hash layer sees the same 4096-d features the paper did.
"""
from __future__ import annotations

import torch
from torch import nn

from biohash.models.hashing import ARCHS, ArchSpec, pretrained_error

__all__ = ["SmallCNN"]


def _torchvision(name: str, classifier_end: int):
    def build(*, pretrained: bool) -> tuple[nn.Module, int]:
        import torchvision

        ctor = getattr(torchvision.models, name)
        try:
            net = ctor(weights="DEFAULT" if pretrained else None)
        except Exception as exc:  # network / hub errors vary by version
            raise pretrained_error(name, exc) from exc
        # classifier[:classifier_end] ends at the last 4096-d ReLU.
        backbone = nn.Sequential(net.features, net.avgpool, nn.Flatten(1),
                                 *net.classifier[:classifier_end])
        return backbone, 4096
    return build


def _hrnet(variant: str):
    def build(*, pretrained: bool) -> tuple[nn.Module, int]:
        import timm

        try:
            net = timm.create_model(f"hrnet_{variant}", pretrained=pretrained, num_classes=0)
        except Exception as exc:
            raise pretrained_error(f"hrnet_{variant}", exc) from exc
        return net, net.num_features  # 2048 for every hrnet_w* incremental head
    return build


class SmallCNN(nn.Module):
    """A small conv net for 8x8 / 8x16 single-channel images (DIGITS, DIGITS_ML)."""

    def __init__(self, in_channels: int = 1, width: int = 32, out_dim: int = 256) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
        )
        self.fc = nn.Sequential(nn.Linear(4 * width, out_dim), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, out_dim)
        return self.fc(self.features(x))


def _small_cnn(*, pretrained: bool) -> tuple[nn.Module, int]:
    # No pretrained weights exist for it; -weights imagenet is accepted and
    # means nothing here, so the old default flag value keeps working.
    return SmallCNN(), 256


ARCHS.register("alexnet", ArchSpec(_torchvision("alexnet", 6), 224, 3, "torchvision AlexNet (h2q)"))
ARCHS.register("vgg16", ArchSpec(_torchvision("vgg16", 5), 224, 3, "torchvision VGG16 (h2q)"))
for _variant in ("w18", "w32", "w18_small"):
    ARCHS.register(f"hhnet-{_variant}", ArchSpec(_hrnet(_variant), 224, 3,
                                                 f"HHNet: timm hrnet_{_variant} + hash head"))
# The HHNet paper's default backbone; `-arch hhnet` keeps working like `hhnet-w18`.
ARCHS.register("hhnet", ARCHS.get("hhnet-w18"))
ARCHS.register("cnn-small", ArchSpec(_small_cnn, None, 1, "small CNN for DIGITS / DIGITS_ML"))
