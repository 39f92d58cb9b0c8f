"""biohash.bio: the rules' gradients, modules, convert scopes, state and errors."""
from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from biohash.bio import MODES, BioConv2d, BioLinear, convert, is_bio
from biohash.bio import rules
from biohash.bio.rules import step_seed, weight_chunks
from biohash.errors import ConfigError

ALL = MODES.names()
WEIGHT_SHAPED = [m for m in ALL if m != "dfa"]  # B has W's shape
SIGN_CONCORDANT = [m for m in ALL if MODES.get(m).sign_concordant]
BIO = [m for m in ALL if m != "bp"]


class TwoPart(nn.Module):
    """The shape of every biohash model: ``backbone`` then a hash ``head``."""

    def __init__(self, bits: int = 6) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),  # depthwise
            nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Linear(16, bits)

    def forward(self, x):
        return self.head(self.backbone(x))


def _batch(n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randn(n, 6, generator=g)


def _loss(out, target):
    return F.mse_loss(out, target)


def _weights(model):
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def _train(model, steps: int, lr: float = 0.05, opt_state=None, seed: int = 0) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
    losses = []
    for i in range(steps):
        x, y = _batch(seed=seed + i)
        opt.zero_grad()
        loss = _loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model._opt = opt
    return losses


# --- the registry ----------------------------------------------------------

def test_modes_registry_is_exactly_the_six_rules():
    assert set(ALL) == {"bp", "fa", "usf", "frsf", "brsf", "dfa"}
    with pytest.raises(ConfigError, match="unknown mode 'sgd'; choose from bp, brsf"):
        MODES.check("sgd")


# --- gradients: grad-to-input = delta . B, exact weight/bias gradients -----

@pytest.mark.parametrize("mode", WEIGHT_SHAPED)
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 7)], ids=["2d", "3d"])
def test_linear_input_grad_is_delta_B_and_weight_grads_exact(mode, shape):
    torch.manual_seed(0)
    layer = BioLinear(7, 5, mode=mode, seed=3)
    x = torch.randn(*shape, requires_grad=True)
    y = layer(x)
    delta = torch.randn_like(y)
    y.backward(delta)
    B = layer.feedback_matrix()
    torch.testing.assert_close(x.grad, delta @ B, rtol=0, atol=1e-6)
    # exact weight and bias gradients: what autograd gives for the same delta
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    F.linear(x.detach(), w, b).backward(delta)
    torch.testing.assert_close(layer.weight.grad, w.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.bias.grad, b.grad, rtol=1e-6, atol=1e-6)
    if mode != "bp":
        assert not torch.allclose(B, layer.weight)


@pytest.mark.parametrize("shape", [(4096, 25088), (4096, 4096), (1000, 4096), (300, 1030),
                                   (7, 100_000), (100_000, 7), (64, 64)])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_weight_blocks_cover_the_weight_once_within_the_limits(shape, device):
    """Only ``device.type`` is read, so the GPU layout is checked on any machine."""
    parts = weight_chunks(torch.Size(shape), torch.device(device))
    seen = torch.zeros(shape, dtype=torch.int32)
    for part in parts:
        seen[part] += 1
    assert bool((seen == 1).all())
    if len(parts) == 1:
        assert shape[0] * shape[1] <= rules.CHUNK_ELEMS_CPU or device == "cuda"
        return
    sizes = [seen[part].shape for part in parts]
    if device == "cpu":  # tiles: cache-sized, rows read in runs of up to TILE_COLS_CPU floats
        assert all(r * c <= max(rules.CHUNK_ELEMS_CPU, c) and c <= rules.TILE_COLS_CPU
                   for r, c in sizes)
        offsets = [rules.part_offset(p, shape[1]) for p in parts]
        assert len(set(offsets)) == len(parts)  # one seed per tile
    else:  # full-height column blocks
        assert all(r == shape[0] for r, _ in sizes)


@pytest.mark.parametrize("mode", ["fa", "usf", "frsf", "brsf"])
def test_large_linear_uses_blocks_and_stays_exact(mode, monkeypatch):
    monkeypatch.setattr(rules, "CHUNK_ELEMS_CPU", 1 << 18)  # the test stays small
    layer = BioLinear(1030, 512, mode=mode, seed=1)  # 1030: a ragged last block
    assert len(weight_chunks(layer.weight.shape, layer.weight.device)) > 1
    assert layer.weight.numel() > rules.CHUNK_ELEMS_CPU
    x = torch.randn(4, 1030, requires_grad=True)
    delta = torch.randn(4, 512)
    layer(x).backward(delta)
    torch.testing.assert_close(x.grad, delta @ layer.feedback_matrix(), rtol=1e-5, atol=1e-5)


CONV_CASES = {
    "stride": dict(stride=2, padding=1),
    "dilation": dict(dilation=2, padding=2),
    "groups": dict(groups=2, padding=1),
    "depthwise": dict(groups=4, stride=(2, 1), padding=(1, 0)),
    "same": dict(padding="same", dilation=(1, 2)),
    "valid": dict(padding="valid"),
    "reflect": dict(padding=1, padding_mode="reflect", stride=2),
    "circular": dict(padding=(2, 1), padding_mode="circular"),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("mode", WEIGHT_SHAPED)
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_input_grad_is_delta_B_and_weight_grads_exact(mode, case):
    kw = CONV_CASES[case]
    torch.manual_seed(0)
    kernel = 4 if case == "same" else 3  # even kernel: asymmetric 'same' padding
    layer = BioConv2d(4, 8, kernel, mode=mode, seed=5, **kw)
    ref = nn.Conv2d(4, 8, kernel, **kw)
    ref.load_state_dict({"weight": layer.weight, "bias": layer.bias})
    x = torch.randn(2, 4, 9, 10, requires_grad=True)
    y = layer(x)
    y_ref = ref(x)
    torch.testing.assert_close(y, y_ref)
    delta = torch.randn_like(y)
    y.backward(delta)
    w_grad, b_grad = torch.autograd.grad(y_ref, [ref.weight, ref.bias], delta)
    torch.testing.assert_close(layer.weight.grad, w_grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bias.grad, b_grad, rtol=1e-5, atol=1e-5)
    # grad-to-input of the same conv with B in place of W
    ref_b = copy.deepcopy(ref)
    with torch.no_grad():
        ref_b.weight.copy_(layer.feedback_matrix())
    xb = x.detach().clone().requires_grad_()
    ref_b(xb).backward(delta)
    torch.testing.assert_close(x.grad, xb.grad, rtol=1e-5, atol=1e-5)


def test_conv_input_grad_matches_conv2d_input_formula():
    layer = BioConv2d(6, 4, 3, stride=2, dilation=2, groups=2, padding=1, mode="fa")
    x = torch.randn(2, 6, 11, 11, requires_grad=True)
    y = layer(x)
    delta = torch.randn_like(y)
    y.backward(delta)
    expected = torch.nn.grad.conv2d_input(x.shape, layer.feedback, delta, 2, 1, 2, 2)
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ALL)
def test_bp_conversion_is_bit_identical_and_others_differ(mode):
    torch.manual_seed(0)
    plain = TwoPart()
    bio = convert(copy.deepcopy(plain), mode)
    torch.manual_seed(1)
    a = _train(plain, 3)
    torch.manual_seed(1)
    b = _train(bio, 3)
    if mode == "bp":
        assert not is_bio(bio)
        assert all(type(m) in (nn.Linear, nn.Conv2d) for m in bio.modules()
                   if isinstance(m, (nn.Linear, nn.Conv2d)))
        assert a == b
        for p, q in zip(plain.parameters(), bio.parameters()):
            assert torch.equal(p, q)
    else:
        assert is_bio(bio)
        assert a[0] == b[0]  # same forward weights: same first loss
        assert a[1:] != b[1:]  # different rule: different training


def test_convert_bp_scope_all_returns_the_same_object():
    model = TwoPart()
    assert convert(model, "bp") is model
    assert convert(model, "bp", {"backbone": "bp", "head": "bp"}) is model
    assert not is_bio(model)


@pytest.mark.parametrize("mode", SIGN_CONCORDANT)
def test_sign_concordant_B_follows_sign_of_W_after_steps(mode):
    torch.manual_seed(0)
    model = convert(TwoPart(), mode, seed=2)
    signs_before = {n: torch.sign(w).clone() for n, w in _weights(model).items()}
    _train(model, 4, lr=0.5)
    flipped = 0
    for name, m in model.named_modules():
        if isinstance(m, (BioLinear, BioConv2d)):
            B, W = m.feedback_matrix(), m.weight.detach()
            nz = W != 0
            assert torch.equal(torch.sign(B)[nz], torch.sign(W)[nz]), name
            flipped += int((torch.sign(W) != signs_before[name]).sum())
    assert flipped > 0  # the test exercised sign changes


def test_usf_scale_is_xavier_std_and_kaiming_option():
    xav = BioLinear(30, 10, mode="usf")
    assert xav.feedback_matrix().abs().unique().tolist() == pytest.approx([(2 / 40) ** 0.5])
    kai = BioLinear(30, 10, mode="usf", init="kaiming")
    assert kai.feedback_matrix().abs().unique().tolist() == pytest.approx([(2 / 30) ** 0.5])
    fa = BioLinear(300, 100, mode="fa", init="xavier")
    assert fa.feedback.std().item() == pytest.approx((2 / 400) ** 0.5, rel=0.05)


def test_brsf_redraws_every_forward_and_frsf_does_not():
    brsf, frsf = BioLinear(6, 5, mode="brsf"), BioLinear(6, 5, mode="frsf")
    x = torch.randn(2, 6, requires_grad=True)
    mats = {"brsf": [], "frsf": []}
    for _ in range(2):
        for name, layer in (("brsf", brsf), ("frsf", frsf)):
            layer(x).sum().backward()
            mats[name].append(layer.feedback_matrix())
    assert not torch.equal(*mats["brsf"])
    assert torch.equal(*mats["frsf"])
    with torch.no_grad():  # evaluation does not advance the draws
        brsf(x)
    assert torch.equal(brsf.feedback_matrix(), mats["brsf"][1])


def _byte_level_B(layer) -> torch.Tensor:
    """brsf's B of the latest draw, from its definition, in one unblocked draw per chunk.

    Per block (a CPU tile of a Linear): NumPy's PCG64 seeded ``step_seed(draw
    seed, flat index of the block's first element)``, its 64-bit draws read as
    little-endian bytes k, and
    B = (k + 0.5) * sqrt(3) * std / 256 with the sign of W.
    """
    w = layer.weight.detach()
    seed = step_seed(layer.feedback_seed, layer._draws)
    b = torch.empty_like(w, dtype=torch.float64)
    parts = weight_chunks(w.shape, w.device)
    assert isinstance(layer, BioConv2d) or len(parts) > 1
    for part in parts:
        wp = w[part]
        offset = (part[0].start or 0) * w.shape[-1] + (part[1].start or 0)  # flat index
        bits = np.random.PCG64(step_seed(seed, offset)).random_raw((wp.numel() + 7) // 8)
        k = torch.from_numpy(bits.astype("<u8").view(np.uint8)[:wp.numel()].copy())
        k = k.view(wp.shape).double()
        b[part] = ((k + 0.5) * math.sqrt(3) * layer.feedback_std / 256).copysign(wp)
    return b.float()


@pytest.mark.parametrize("layer,block", [
    (lambda: BioConv2d(63, 44, 3, mode="brsf", seed=3), 4096),  # 8-row blocks, ragged last
    (lambda: BioConv2d(64, 44, 3, mode="brsf", seed=3), None),  # one block
    (lambda: BioConv2d(3, 5, 3, mode="brsf", seed=3), 64),  # fewer rows than one block
    (lambda: BioLinear(1030, 300, mode="brsf", seed=1), None),  # tiles, ragged last
    (lambda: BioLinear(1030, 300, mode="brsf", seed=1), 2048),  # ... each in row blocks
], ids=["conv-blocks", "conv-one-block", "conv-small", "linear-chunks", "linear-blocks"])
def test_brsf_blocked_draw_is_the_byte_level_draw_of_its_seed(layer, block, monkeypatch):
    monkeypatch.setattr(rules, "CHUNK_ELEMS_CPU", 1 << 16)  # BioLinear(1030, 300): 5 chunks
    if block is not None:
        monkeypatch.setattr(rules, "DRAW_BLOCK_CPU", block)
    layer = layer()
    if isinstance(layer, BioConv2d):
        x = torch.randn(2, layer.in_channels, 5, 5, requires_grad=True)
    else:
        x = torch.randn(2, 1030, requires_grad=True)
    y = layer(x)
    delta = torch.randn_like(y)
    y.backward(delta)
    B = layer.feedback_matrix()
    torch.testing.assert_close(B, _byte_level_B(layer), rtol=1e-6, atol=0)
    levels = B.abs().double() / (math.sqrt(3) * layer.feedback_std / 256) - 0.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-3)  # 256 midpoints
    assert levels.round().min() >= 0 and levels.round().max() <= 255
    nz = layer.weight != 0
    assert torch.equal(torch.sign(B)[nz], torch.sign(layer.weight.detach())[nz])
    # the gradient used exactly this B (scale applied to the product)
    if isinstance(layer, BioLinear):
        torch.testing.assert_close(x.grad, delta @ B, rtol=1e-5, atol=1e-6)
    else:
        expected = torch.nn.grad.conv2d_input(x.shape, B, delta)
        torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)


def test_brsf_levels_are_uniform_with_the_rule_mean_and_variance():
    layer = BioConv2d(256, 256, 3, mode="brsf", seed=0)  # 590k draws
    layer(torch.randn(1, 256, 3, 3, requires_grad=True)).sum().backward()
    bound = math.sqrt(3) * layer.feedback_std
    m = layer.feedback_matrix().abs().double() / bound  # should be ~U(0, 1) on 256 midpoints
    assert m.mean().item() == pytest.approx(0.5, abs=2e-3)
    # midpoint levels: variance (1 - 1/256^2) / 12, i.e. U(0, 1)'s to 1e-5
    assert m.var().item() == pytest.approx(1 / 12, rel=1e-2)
    counts = torch.bincount((m * 256).floor().long().flatten(), minlength=256)
    assert counts.numel() == 256 and counts.min() > 0.8 * counts.float().mean()


@pytest.mark.parametrize("mode", BIO)
def test_every_weight_changes_after_one_step(mode):
    torch.manual_seed(0)
    model = convert(TwoPart(), mode)
    before = {n: w.detach().clone() for n, w in _weights(model).items()}
    _train(model, 1)
    for name, w in _weights(model).items():
        assert not torch.equal(before[name], w), name
        assert torch.isfinite(w).all()


# --- state: buffers, seeds, checkpoints -----------------------------------

@pytest.mark.parametrize("mode", BIO)
def test_feedback_is_a_buffer_not_a_parameter(mode):
    model = TwoPart()
    n_params = len(list(model.parameters()))
    keys = set(model.state_dict())
    convert(model, mode)
    assert len(list(model.parameters())) == n_params
    assert not any("feedback" in n for n, _ in model.named_parameters())
    new_keys = set(model.state_dict()) - keys
    assert keys <= set(model.state_dict())  # weight/bias keys unchanged
    stored = mode in ("fa", "frsf", "dfa")  # usf, brsf compute B from W
    assert any(k.endswith(".feedback") for k in new_keys) == stored
    assert all(k.endswith((".feedback", "._extra_state")) for k in new_keys)


def test_convert_keeps_parameter_objects_device_and_dtype():
    model = TwoPart().to(torch.float64)
    params = [id(p) for p in model.parameters()]
    w = model.head.weight.detach().clone()
    convert(model, "fa")
    assert [id(p) for p in model.parameters()] == params
    assert torch.equal(model.head.weight, w)
    assert model.head.feedback.dtype == torch.float64
    assert isinstance(model.head, nn.Linear) and isinstance(model.backbone[0], nn.Conv2d)


@pytest.mark.parametrize("mode", ["fa", "frsf", "dfa"])
def test_seeds_reproduce_feedback(mode):
    def fb(seed):
        torch.manual_seed(123)  # same forward weights every time
        return {k: v for k, v in convert(TwoPart(), mode, seed=seed).state_dict().items()
                if k.endswith("feedback")}
    a, b, c = fb(0), fb(0), fb(1)
    assert a and all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], c[k]) for k in a)
    # every layer draws its own B (seed derived from its name)
    assert len({tuple(v.flatten()[:3].tolist()) for v in a.values()}) == len(a)


@pytest.mark.parametrize("mode", BIO)
def test_state_dict_round_trip_resumes_training_identically(mode):
    torch.manual_seed(0)
    model = convert(TwoPart(), mode, seed=7)
    _train(model, 2)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": model._opt.state_dict()}, buf)
    torch.manual_seed(1)
    expected = _train(model, 3, opt_state=model._opt.state_dict(), seed=10)

    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    fresh = convert(TwoPart(), mode, seed=99)  # other seed: the checkpoint must win
    fresh.load_state_dict(ckpt["model"])
    torch.manual_seed(1)
    assert _train(fresh, 3, opt_state=ckpt["opt"], seed=10) == expected


def test_loading_a_checkpoint_of_another_mode_fails_loudly():
    state = convert(TwoPart(), "usf").state_dict()
    with pytest.raises(ConfigError, match="trained with mode 'usf', this layer uses 'brsf'"):
        convert(TwoPart(), "brsf").load_state_dict(state)


# --- precision and memory format ------------------------------------------

@pytest.mark.parametrize("mode", ALL)
def test_autocast_bf16_forward_backward_on_cpu(mode):
    torch.manual_seed(0)
    model = convert(TwoPart(), mode)
    x, y = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.dtype == torch.bfloat16
        loss = _loss(out.float(), y)
    loss.backward()
    for name, w in _weights(model).items():
        assert w.grad is not None and w.grad.dtype == torch.float32, name
        assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0, name


def _saved_activation_bytes(model, x, amp: bool) -> int:
    """Bytes of distinct activations autograd saves for backward.

    Parameters, buffers and autocast's low-precision copies of parameters
    (same or transposed shapes; no activation of TwoPart at batch 4 has such a shape) are
    left out.
    """
    params = {t.data_ptr() for t in [*model.parameters(), *model.buffers()]}
    shapes = {s for p in model.parameters() for s in (tuple(p.shape), tuple(p.shape)[::-1])}
    seen = {}

    def pack(t):
        if t.data_ptr() not in params and tuple(t.shape) not in shapes:
            seen[(t.data_ptr(), t.dtype, tuple(t.shape))] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            model(x)
    return sum(seen.values())


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("mode", BIO)
def test_no_extra_copies_of_activations_are_saved(mode, amp):
    torch.manual_seed(0)
    plain = TwoPart()
    bio = convert(copy.deepcopy(plain), mode)
    x = torch.randn(4, 1, 8, 8)
    bp_bytes = _saved_activation_bytes(plain, x, amp)
    bio_bytes = _saved_activation_bytes(bio, x, amp)
    assert bio_bytes == bp_bytes


@pytest.mark.parametrize("mode", WEIGHT_SHAPED)
def test_autocast_input_grad_is_delta_B_in_bf16(mode):
    layer = BioConv2d(4, 6, 3, padding=1, mode=mode)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    delta = torch.randn_like(y)
    y.backward(delta)
    expected = torch.nn.grad.conv2d_input(x.shape, layer.feedback_matrix(), delta.float(),
                                          padding=1)
    assert x.grad.dtype == torch.float32
    torch.testing.assert_close(x.grad, expected, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("mode", BIO)
def test_channels_last_gives_the_same_gradients(mode):
    torch.manual_seed(0)
    model = convert(TwoPart(), mode)
    twin = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x, y = _batch()
    for m, inp in ((model, x), (twin, x.to(memory_format=torch.channels_last))):
        torch.manual_seed(5)  # same dropout mask
        _loss(m(inp), y).backward()
    for (name, w), w2 in zip(_weights(model).items(), _weights(twin).values()):
        torch.testing.assert_close(w.grad, w2.grad, rtol=1e-4, atol=1e-5, msg=name)


# --- unbatched input -----------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("mode", WEIGHT_SHAPED)
@pytest.mark.parametrize("case", ["stride", "same", "circular"])
def test_unbatched_conv_input_works_as_in_nn_conv2d(mode, case):
    kw = CONV_CASES[case]
    kernel = 4 if case == "same" else 3
    torch.manual_seed(0)
    layer = BioConv2d(4, 6, kernel, mode=mode, seed=2, **kw)
    twin = copy.deepcopy(layer)  # same draw counter: the same B for brsf
    ref = nn.Conv2d(4, 6, kernel, **kw)
    ref.load_state_dict({"weight": layer.weight, "bias": layer.bias})
    x = torch.randn(4, 9, 10, requires_grad=True)  # (C, H, W)
    y = layer(x)
    torch.testing.assert_close(y, ref(x))  # same output (and shape) as nn.Conv2d
    delta = torch.randn_like(y)
    y.backward(delta)
    xb = x.detach().unsqueeze(0).requires_grad_()
    twin(xb).backward(delta.unsqueeze(0))
    torch.testing.assert_close(x.grad, xb.grad.squeeze(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad, twin.weight.grad, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.bias.grad, twin.bias.grad, rtol=0, atol=1e-6)
    if mode == "bp":  # exactly nn.Conv2d's gradients
        expected = torch.autograd.grad(ref(x), [x, ref.weight], delta)
        torch.testing.assert_close(x.grad, expected[0])
        torch.testing.assert_close(layer.weight.grad, expected[1])
