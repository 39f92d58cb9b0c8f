"""Every registered arch builds offline, runs forward/backward, and converts."""
from __future__ import annotations

import pytest
import torch

from biohash.models import ARCHS, HashingModel, create_model

#: Smallest input each family accepts quickly on CPU.
_INPUT = {"cnn-small": (1, 8, 8), "alexnet": (3, 64, 64), "vgg16": (3, 32, 32)}
_SLOW = {"hhnet", "hhnet-w18", "hhnet-w32"}


def _shape(name: str) -> tuple[int, int, int]:
    return _INPUT.get(name, (3, 64, 64))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n
                                  for n in ARCHS.names()])
def test_arch_forward_backward_and_finite(name):
    torch.manual_seed(0)
    model = create_model(name, nbits=12, weights="none")
    assert isinstance(model, HashingModel) and set(dict(model.named_children())) == {"backbone", "head"}
    x = torch.randn(2, *_shape(name))
    u = model(x)
    assert u.shape == (2, 12) and torch.isfinite(u).all()
    u.square().sum().backward()
    assert model.head.weight.grad is not None and torch.isfinite(model.head.weight.grad).all()
    assert model.head.bias.abs().sum() == 0 and 0.005 < float(model.head.weight.detach().std()) < 0.02


def test_bio_prefix_converts_every_layer_and_scope_limits_it():
    from biohash.bio import is_bio

    plain = create_model("cnn-small", nbits=8, weights="none")
    full = create_model("bio-cnn-small", nbits=8, mode="fa", weights="none")
    head_only = create_model("bio-cnn-small", nbits=8, mode="fa", bio_scope="head", weights="none")
    assert not is_bio(plain) and is_bio(full)
    assert is_bio(head_only.head) and not is_bio(head_only.backbone)
    frozen = create_model("bio-cnn-small", nbits=8, mode="fa", weights="none",
                          bio_scope="backbone=frozen,head=usf")
    assert not any(p.requires_grad for p in frozen.backbone.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())


def test_same_seed_same_model():
    a = create_model("bio-cnn-small", nbits=8, mode="fa", weights="none", seed=3)
    b = create_model("bio-cnn-small", nbits=8, mode="fa", weights="none", seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    feedback = [k for k, v in sa.items()
                if torch.is_tensor(v) and k not in dict(a.named_parameters()) and "running" not in k
                and "num_batches" not in k]
    assert feedback, "feedback matrices must be buffers in the state_dict"
    assert all(torch.equal(sa[k], sb[k]) for k in feedback)
    c = create_model("bio-cnn-small", nbits=8, mode="fa", weights="none", seed=4).state_dict()
    assert not all(torch.equal(sa[k], c[k]) for k in feedback)


@pytest.mark.parametrize("name, last", [("alexnet", torch.nn.ReLU), ("vgg16", torch.nn.Dropout)])
def test_torchvision_extractor_is_h2q_classifier_0_to_5(name, last):
    """h2q's features: conv stack + classifier[0..5] (VGG16: ends with the 2nd Dropout)."""
    import torchvision

    model = create_model(name, nbits=8, weights="none")
    reference = getattr(torchvision.models, name)(weights=None).classifier[:6]
    tail = list(model.backbone)[-6:]
    assert [type(m) for m in tail] == [type(m) for m in reference]
    assert isinstance(tail[-1], last) and isinstance(model.backbone[-7], torch.nn.Flatten)
    assert model.head.in_features == 4096
    model.eval()
    assert model.backbone(torch.randn(2, *_shape(name))).shape == (2, 4096)
