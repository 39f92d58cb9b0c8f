"""biohash.bio: DFA, Hybrid Bio-Training scopes, diagnostics, errors, real models."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from biohash.bio import (BioConv2d, BioLinear, alignment_angles, convert, gradient_alignment,
                         is_bio)
from biohash.errors import ConfigError

from test_bio import ALL, BIO, TwoPart, _batch, _loss, _train, _weights


# --- DFA ------------------------------------------------------------------

class Residual(nn.Module):
    """x -> s = x + conv2(conv1(x)) -> head(pool(s)); no activations, so the
    expected gradients can be written down by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, groups=3)
        self.head = nn.Linear(3, 5)

    def forward(self, x):
        s = x + self.conv2(self.conv1(x))
        self.s = s
        s.retain_grad()
        return self.head(s.mean((2, 3)))


def test_dfa_residual_skip_carries_only_projections():
    torch.manual_seed(0)
    model = convert(Residual(), "dfa", seed=4)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    out = model(x)
    e = torch.randn_like(out)
    out.backward(e)
    proj = lambda layer: (e @ layer.feedback.t())[:, :, None, None]  # noqa: E731
    # s receives the head's projection through the (exact) mean: B_head e / HW
    torch.testing.assert_close(model.s.grad, (proj(model.head) / 36).expand_as(x))
    # x receives the skip (the head's projection again) + conv1's own projection:
    # no W^T of conv1, conv2 or head anywhere
    expected = model.s.grad + proj(model.conv1).expand_as(x)
    torch.testing.assert_close(x.grad, expected)
    # weight gradients are exact given the delta at each layer's output
    x2 = x.detach()
    with torch.no_grad():
        h1 = model.conv1(x2)
    y2 = F.conv2d(h1, model.conv2.weight, padding=1, groups=3)
    gw2 = torch.autograd.grad(y2, model.conv2.weight, model.s.grad)[0]
    torch.testing.assert_close(model.conv2.weight.grad, gw2)
    d1 = proj(model.conv2).expand_as(h1)
    y1 = F.conv2d(x2, model.conv1.weight, padding=1)
    gw1 = torch.autograd.grad(y1, model.conv1.weight, d1)[0]
    torch.testing.assert_close(model.conv1.weight.grad, gw1)


def test_dfa_top_layer_gets_the_true_error_and_hidden_layers_projections():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    model = convert(copy.deepcopy(plain), "dfa")
    x = torch.randn(5, 4)
    F.mse_loss(model(x), torch.zeros(5, 3)).backward()
    F.mse_loss(plain(x), torch.zeros(5, 3)).backward()
    torch.testing.assert_close(model[2].weight.grad, plain[2].weight.grad)  # exact top
    e = 2 * plain(x).detach() / 15  # dL/dy of the mean squared error
    h = torch.tanh(plain[0](x)).detach()
    delta0 = (e @ model[2].feedback.t()) * (1 - h**2)  # (B e) * f'(a)
    torch.testing.assert_close(model[0].weight.grad, delta0.t() @ x)
    assert model[2].feedback.shape == (8, 3) and model[0].feedback.shape == (4, 3)


def test_dfa_on_grouped_and_depthwise_convs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, groups=4), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, groups=8, stride=2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(32, 5))
    convert(model, "dfa")
    x = torch.randn(3, 4, 7, 7, requires_grad=True)
    out = model(x)
    e = torch.randn_like(out)
    out.backward(e)
    assert model[2].feedback.shape == (8, 5)  # projection onto the input channels
    expected = (e @ model[0].feedback.t())[:, :, None, None].expand_as(x)
    torch.testing.assert_close(x.grad, expected)
    for name, w in _weights(model).items():
        assert w.grad is not None and w.grad.abs().sum() > 0, name


def test_dfa_two_forwards_before_one_backward_use_their_own_errors():
    torch.manual_seed(0)
    model = convert(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), "dfa")
    x1, x2 = torch.randn(2, 3), torch.randn(2, 3)
    (model(x1).sum() + 3 * model(x2).sum()).backward()
    g_both = model[0].weight.grad.clone()
    model.zero_grad()
    model(x1).sum().backward()
    model(x2).mul(3).sum().backward()
    torch.testing.assert_close(model[0].weight.grad, g_both)


def test_dfa_errors():
    model = convert(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), "dfa")
    with pytest.raises(ConfigError, match="outside the forward of the model"):
        model[0](torch.randn(2, 3))
    with torch.no_grad():  # evaluation of a part is fine
        model[0](torch.randn(2, 3))
    with pytest.raises(ConfigError, match="output_dim=7"):
        convert(nn.Sequential(nn.Conv2d(1, 7, 1), nn.Flatten()), "dfa", output_dim=3)(
            torch.randn(2, 1, 1, 1))
    with pytest.raises(ConfigError, match="needs output_dim"):
        convert(nn.Sequential(nn.Conv2d(1, 2, 1)), "dfa")
    with pytest.raises(ConfigError, match="create them with convert"):
        BioLinear(3, 2, mode="dfa")


# --- Hybrid Bio-Training scopes -------------------------------------------

def test_scope_head_only_leaves_backbone_plain():
    model = convert(TwoPart(), "fa", "head")
    assert isinstance(model.head, BioLinear) and model.head.mode == "fa"
    assert all(type(m) in (nn.Conv2d, nn.Linear) for m in model.backbone.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_scope_mapping_per_part_modes_and_dotted_names():
    model = convert(TwoPart(), "fa", {"backbone.0": "usf", "backbone.3": "brsf",
                                      "head": "frsf"})
    assert (model.backbone[0].mode, model.backbone[3].mode, model.head.mode) == (
        "usf", "brsf", "frsf")
    assert type(model.backbone[5]) is nn.Conv2d
    before = {n: w.detach().clone() for n, w in _weights(model).items()}
    _train(model, 1)
    assert all(not torch.equal(before[n], w) for n, w in _weights(model).items())


@pytest.mark.parametrize("scope,exact", [
    # a usf head sees the true error (exact grad) but sends B to the backbone
    ({"backbone": "bp", "head": "usf"}, {"head"}),
    # a bp head sends the true gradient: the backbone's top layer is exact too
    ({"backbone": "usf", "head": "bp"}, {"head", "backbone.8"}),
])
def test_hybrid_scope_exact_where_backprop_reaches(scope, exact):
    torch.manual_seed(0)
    plain = TwoPart().eval()  # no dropout: identical forward passes
    model = convert(copy.deepcopy(plain), "fa", scope)
    x, y = _batch()
    _loss(model(x), y).backward()
    _loss(plain(x), y).backward()
    same = {n for (n, w), w_plain in zip(_weights(model).items(), _weights(plain).values())
            if torch.allclose(w.grad, w_plain.grad, atol=1e-7)}
    assert same == exact


def test_frozen_backbone_gets_no_gradient_bio_head_learns():
    model = convert(TwoPart(), "fa", {"backbone": "frozen", "head": "fa"})
    assert not any(p.requires_grad for p in model.backbone.parameters())
    before = model.backbone[0].weight.detach().clone()
    head_before = model.head.weight.detach().clone()
    _train(model, 2)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert torch.equal(model.backbone[0].weight, before)
    assert not torch.equal(model.head.weight, head_before)


def test_a_frozen_part_stays_in_eval_when_the_model_trains():
    torch.manual_seed(0)
    model = convert(TwoPart(), "fa", {"backbone": "frozen", "head": "fa"})
    bn = model.backbone[1]
    stats = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    model.train()
    assert model.training and model.head.training
    assert not any(m.training for m in model.backbone.modules())  # BN and Dropout too
    x, y = _batch()
    torch.manual_seed(1)
    first = model.backbone(x)
    torch.manual_seed(2)  # another dropout mask, if dropout were on
    assert torch.equal(model.backbone(x), first)
    _train(model, 2)
    assert torch.equal(bn.running_mean, stats[0]) and torch.equal(bn.running_var, stats[1])
    assert int(bn.num_batches_tracked) == stats[2]
    model.eval()
    model.train(True)
    assert not model.backbone.training and model.head.training
    twin = copy.deepcopy(model)  # copies keep the behaviour
    twin.train()
    assert not twin.backbone.training and twin.head.training
    assert twin.backbone.train.part is twin.backbone


def test_a_part_frozen_alone_leaves_the_rest_of_the_model_training():
    model = convert(TwoPart(), "frozen", "head")
    model.train()
    assert model.backbone.training and not model.head.training
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_dfa_in_a_mapping_scope_uses_the_model_output_error():
    torch.manual_seed(0)
    model = convert(TwoPart(), "dfa", {"backbone": "dfa", "head": "bp"})
    assert type(model.head) is nn.Linear and model.backbone[8].feedback.shape == (128, 6)
    _train(model, 1)
    assert all(w.grad is not None for w in _weights(model).values())


def test_converting_parts_in_two_calls_then_twice_fails():
    model = convert(TwoPart(), "fa", "head")
    convert(model, "dfa", "backbone")  # the other part: fine
    with pytest.raises(ConfigError, match="already converted"):
        convert(model, "usf", "head")
    with pytest.raises(ConfigError, match="already converted"):
        convert(model, "fa")


# --- errors ----------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="sgd"), "unknown mode 'sgd'; choose from bp, brsf, dfa, fa, frsf, usf"),
    (dict(mode="fa", init="orthogonal"), "unknown feedback init 'orthogonal'; choose from"),
    (dict(mode="fa", scope="neck"), "scope 'neck' names no submodule; top-level children: "
                                    "backbone, head"),
    (dict(mode="fa", scope="backbone.99"), "names no submodule"),
    (dict(mode="fa", scope={"head": "adam"}), "unknown mode 'adam' for scope 'head'; "
                                              "choose from .*frozen"),
    (dict(mode="fa", scope={}), "bad scope"),
    (dict(mode="fa", scope={"backbone": "fa", "backbone.0": "usf"}), "overlap"),
    (dict(mode="fa", scope="backbone.2"), "holds no nn.Linear/nn.Conv2d"),
    (dict(mode="fa", scope={"backbone": "frozen", "head": "frozen"}),
     "scope backbone=frozen,head=frozen freezes every trainable parameter, so nothing would "
     "learn"),
    (dict(mode="frozen"), "scope all=frozen freezes every trainable parameter"),
])
def test_bad_input_raises_one_line_config_error_and_changes_nothing(kwargs, match):
    model = TwoPart()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mode = kwargs.pop("mode")
    with pytest.raises(ConfigError, match=match) as info:
        convert(model, mode, **kwargs)
    assert "\n" not in str(info.value)
    assert not is_bio(model) and model.state_dict().keys() == state.keys()
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules()) and "train" not in vars(model.backbone)


def test_bad_layer_arguments():
    with pytest.raises(ConfigError, match="unknown mode 'xx'"):
        BioConv2d(1, 1, 1, mode="xx")
    with pytest.raises(ConfigError, match="unknown feedback init 'he'"):
        BioLinear(1, 1, init="he")


# --- diagnostics ------------------------------------------------------------

def test_alignment_angles_per_rule():
    torch.manual_seed(0)
    angles = {m: alignment_angles(convert(TwoPart(), m)) for m in ALL}
    names = {f"align/{n}" for n in _weights(TwoPart())}
    for mode in ("fa", "usf", "frsf", "brsf"):
        assert set(angles[mode]) == names
    assert angles["bp"] == {} and angles["dfa"] == {}
    for mode in ("usf", "frsf", "brsf"):  # sign-concordant: well below 90 degrees
        assert all(0 < a < 60 for a in angles[mode].values()), angles[mode]
    assert all(60 < a < 120 for a in angles["fa"].values())  # random B: near 90
    # frsf is measured against |M| * sign(W), the matrix actually used
    layer = convert(TwoPart(), "frsf").head
    b = layer.feedback * torch.sign(layer.weight.detach())
    cos = F.cosine_similarity(b.flatten(), layer.weight.detach().flatten(), dim=0)
    assert alignment_angles(nn.Sequential(layer))["align/0"] == pytest.approx(
        math.degrees(math.acos(cos.item())), abs=1e-3)


@pytest.mark.parametrize("mode", BIO)
def test_gradient_alignment_leaves_the_model_as_it_was(mode):
    torch.manual_seed(0)
    model = convert(TwoPart(), mode)
    x, y = _batch()
    _loss(model(x), y).backward()  # some existing grads to preserve
    grads = {n: p.grad for n, p in model.named_parameters()}
    grad_values = {n: g.clone() for n, g in grads.items()}
    state = copy.deepcopy(model.state_dict())
    rng = torch.get_rng_state()
    angles = gradient_alignment(model, _loss, (x, y))
    assert set(angles) == {f"grad_align/{n}" for n in _weights(model)}
    assert angles["grad_align/head"] == pytest.approx(0.0, abs=1e-3)  # top layer exact
    assert all(0 <= a <= 180 for a in angles.values())
    if mode in ("fa", "dfa"):
        assert max(angles.values()) > 5
    assert torch.equal(torch.get_rng_state(), rng)
    for n, p in model.named_parameters():
        assert p.grad is grads[n] and torch.equal(p.grad, grad_values[n])
    after = model.state_dict()
    for k, v in state.items():
        assert (torch.equal(v, after[k]) if torch.is_tensor(v) else v == after[k]), k


# --- real architectures -------------------------------------------------------

def _one_step(model, x, mode):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {n: w.detach().clone() for n, w in _weights(model).items()}
    out = model(x)
    loss = out.float().pow(2).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    changed = [n for n, w in _weights(model).items() if not torch.equal(before[n], w)]
    assert len(changed) == len(before), (mode, set(before) - set(changed))


@pytest.mark.slow
@pytest.mark.parametrize("mode", BIO)
@pytest.mark.parametrize("name, n_layers, side", [("alexnet", 8, 64), ("vgg16", 16, 32)])
def test_torchvision_models_convert_and_train(name, n_layers, side, mode):
    import torchvision

    torch.manual_seed(0)
    model = convert(getattr(torchvision.models, name)(weights=None, num_classes=10), mode)
    assert sum(isinstance(m, (BioConv2d, BioLinear)) for m in model.modules()) == n_layers
    _one_step(model, torch.randn(2, 3, side, side), mode)


@pytest.mark.slow
@pytest.mark.parametrize("mode", BIO)
def test_timm_hrnet_converts_and_trains(mode):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("hrnet_w18_small", pretrained=False, num_classes=0)
    convert(model, mode, output_dim=2048)
    assert is_bio(model)
    model.train()
    _one_step(model, torch.randn(2, 3, 64, 64), mode)


def test_a_deep_copy_of_a_dfa_model_trains_on_its_own():
    torch.manual_seed(0)
    model = convert(TwoPart().eval(), "dfa")
    twin = copy.deepcopy(model)
    assert twin._biohash_dfa_tap is not model._biohash_dfa_tap
    assert twin.head._dfa_tap is twin._biohash_dfa_tap
    x, y = _batch()
    _loss(model(x), y).backward()
    _loss(twin(x), y).backward()
    for w, w2 in zip(_weights(model).values(), _weights(twin).values()):
        torch.testing.assert_close(w.grad, w2.grad)
