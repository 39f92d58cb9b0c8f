"""Backbone families: torchvision AlexNet/VGG16, timm HRNet (HHNet), a small CNN.

AlexNet/VGG16 follow h2q (``src/utils/architectures/{alexnet,vgg16}.py``):
the conv stack plus ``classifier[0..5]``, so the hash layer sees the same
4096-d features the paper did. For AlexNet those six layers end with the
last ReLU; for VGG16 with the second Dropout(0.5) after the last ReLU, so in
training the hash layer of VGG16 sees dropped-out features, as in h2q.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from biohash.models.hashing import ARCHS, ArchSpec, pretrained_error

__all__ = ["SmallCNN"]


#: h2q keeps ``classifier[0..5]``: every layer before the 1000-way Linear.
H2Q_CLASSIFIER_LAYERS = 6


def _torchvision(name: str):
    def build(*, pretrained: bool) -> tuple[nn.Module, int]:
        import torchvision

        ctor = getattr(torchvision.models, name)
        try:
            net = ctor(weights="DEFAULT" if pretrained else None)
        except Exception as exc:  # network / hub errors vary by version
            raise pretrained_error(name, exc) from exc
        # avgpool is the identity at h2q's 224x224 input (h2q skipped it); kept
        # so that smaller test inputs still reach the 25088/9216-d classifier.
        backbone = nn.Sequential(net.features, net.avgpool, nn.Flatten(1),
                                 *net.classifier[:H2Q_CLASSIFIER_LAYERS])
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


class BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """BatchNorm1d that also trains on a batch of one item.

    h2q keeps the last partial batch, which can hold a single item; batch
    statistics of one item are undefined (``nn.BatchNorm1d`` raises), so such
    a batch is normalised with the running statistics, which it leaves alone.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C)
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, eps=self.eps)
        return super().forward(x)


class SmallCNN(nn.Module):
    """A small conv net for 8x8 / 8x16 single-channel images (DIGITS, DIGITS_ML).

    The last block is Linear -> BatchNorm1d -> ReLU. Without the BatchNorm the
    256-d features of a from-scratch net are tiny (mean |h| ~ 0.03, where a
    pretrained VGG16's are O(1)), so with h2q's N(0, 0.01) hash layer every
    code starts near 0, the saddle of DPSH/DHN's likelihood where the pair
    gradient vanishes; the dissimilar pairs (90 % on DIGITS) then push the
    common (non-negative) feature mean down and, at lr 1e-3, kill the last
    ReLU: 55 % -> 7 % of units alive in two epochs and one code for every
    item. BatchNorm keeps the features at unit scale, as a pretrained
    backbone's are.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, out_dim: int = 256) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.BatchNorm2d(4 * width), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
        )
        self.fc = nn.Sequential(nn.Linear(4 * width, out_dim), BatchNorm1dAnyBatch(out_dim),
                                nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, out_dim)
        return self.fc(self.features(x))


def _small_cnn(*, pretrained: bool) -> tuple[nn.Module, int]:
    # No pretrained weights exist for it; -weights imagenet is accepted and
    # means nothing here, so the old default flag value keeps working.
    return SmallCNN(), 256


ARCHS.register("alexnet", ArchSpec(_torchvision("alexnet"), 224, 3, "torchvision AlexNet (h2q)"))
ARCHS.register("vgg16", ArchSpec(_torchvision("vgg16"), 224, 3, "torchvision VGG16 (h2q)"))
for _variant in ("w18", "w32", "w18_small"):
    ARCHS.register(f"hhnet-{_variant}", ArchSpec(_hrnet(_variant), 224, 3,
                                                 f"HHNet: timm hrnet_{_variant} + hash head"))
# The HHNet paper's default backbone; `-arch hhnet` keeps working like `hhnet-w18`.
ARCHS.register("hhnet", ARCHS.get("hhnet-w18"))
ARCHS.register("cnn-small", ArchSpec(_small_cnn, None, 1, "small CNN for DIGITS / DIGITS_ML"))
