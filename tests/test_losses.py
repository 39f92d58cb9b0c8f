"""biohash.losses: the loss contract for every registered loss, hand-computed
values, penalties, HashNet's schedule and the separation construction."""
from __future__ import annotations

import math

import pytest
import torch

from biohash.errors import ConfigError
from biohash.losses import (
    LOSSES,
    HashLoss,
    create_loss,
    separation,
    separation_bound,
)

NAMES = LOSSES.names()
NBITS, CLASSES = 16, 4


def make(name: str, **kw) -> HashLoss:
    args = dict(nbits=NBITS, num_classes=CLASSES, penalty=0.1)
    args.update(kw)
    return create_loss(name, **args)


def batch(seed: int = 0, multi: bool = False, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, NBITS, generator=g, requires_grad=True)
    y = torch.nn.functional.one_hot(torch.arange(n) % CLASSES, CLASSES).float()
    if multi:
        y[::3, (torch.arange(n)[::3] + 1) % CLASSES] = 1.0
    return u, y


def test_registry_names() -> None:
    assert set(NAMES) == {"DCH", "DPSH", "HyP2", "DSH", "DHN", "WGLHH", "HashNet", "CEL"}
    with pytest.raises(ConfigError, match=r"unknown loss 'dsh'; choose from CEL, DCH"):
        make("dsh")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("multi", [False, True])
def test_contract(name: str, multi: bool) -> None:
    loss = make(name, l2_penalty=0.1, hswd_penalty=0.1)
    u, y = batch(multi=multi)
    out = loss(u, y)
    assert out.total.ndim == 0 and out.total.dtype == torch.float32
    assert torch.isfinite(out.total)
    assert {"l2", "hswd"} <= set(out.parts)
    assert out.total.item() == pytest.approx(sum(v.item() for v in out.parts.values()), rel=1e-5)
    assert all(not v.requires_grad for v in out.parts.values())
    out.total.backward()
    assert u.grad is not None and torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_extreme_inputs_stay_finite(name: str) -> None:
    u = torch.tensor([[20.0] * NBITS, [20.0] * NBITS, [-20.0] * NBITS, [0.0] * NBITS],
                     requires_grad=True)  # saturated tanh, identical and zero codes
    y = torch.eye(CLASSES)[[0, 1, 1, 2]]
    out = make(name, l2_penalty=1.0, hswd_penalty=1.0)(u, y)
    out.total.backward()
    assert torch.isfinite(out.total) and torch.isfinite(u.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast(name: str) -> None:
    u, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = make(name)(u.bfloat16(), y)
    assert out.total.dtype == torch.float32 and torch.isfinite(out.total)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("multi", [False, True])
def test_decreases_on_separable_problem(name: str, multi: bool) -> None:
    torch.manual_seed(0)
    n = 16
    y = torch.nn.functional.one_hot(torch.arange(n) % CLASSES, CLASSES).float()
    if multi:
        y[::4, 1] = 1.0
    x = y + 0.1 * torch.randn(n, CLASSES)
    w = torch.nn.Parameter(0.1 * torch.randn(CLASSES, NBITS))
    loss = make(name)
    opt = torch.optim.Adam([w, *loss.parameters()], lr=0.05)
    values = []
    for _ in range(40):
        out = loss(x @ w, y)
        opt.zero_grad()
        out.total.backward()
        opt.step()
        values.append(out.total.item())
    assert values[-1] < 0.95 * values[0], values[::8]


def test_only_hyp2_has_parameters() -> None:
    for name in NAMES:
        params = list(make(name).parameters())
        if name == "HyP2":
            assert [p.shape for p in params] == [torch.Size([CLASSES, NBITS])]
        else:
            assert params == [], name


# ------------------------------------------------------------- hand-computed values
Z2 = torch.tensor([[1.0, 0.5], [-0.5, 1.0]])
Z3 = torch.tensor([[1.0, 0.5], [-0.5, 1.0], [1.0, 1.0]])
Y3 = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # 1~2 similar, 3 dissimilar


def hand(name: str, z: torch.Tensor, y: torch.Tensor, penalty: float = 0.1):
    loss = create_loss(name, nbits=2, num_classes=2, penalty=penalty, no_cube=True)
    return loss(z, y).parts


def test_dsh_by_hand() -> None:
    # d12 = 1.5² + 0.5² = 2.5 (similar: 2.5/2); margin 2·nbits = 4.
    parts = hand("DSH", Z2, Y3[:2])
    assert parts["main"].item() == pytest.approx(1.25)
    assert parts["quant"].item() == pytest.approx(0.1 * 0.5)  # Σ|1-|z|| = 0.5 per item
    # 3 items: d13 = 0.25 (dissimilar: (4 - 0.25)/2), d23 = 2.25 (dissimilar: (4 - 2.25)/2)
    parts = hand("DSH", Z3, Y3)
    assert parts["main"].item() == pytest.approx((1.25 + 1.875 + 0.875) / 3)


def test_dpsh_by_hand() -> None:
    z = torch.tensor([[1.0, 0.5], [0.5, 1.0]])  # z1·z2 = 1, θ = 0.5
    parts = hand("DPSH", z, Y3[:2])
    assert parts["main"].item() == pytest.approx(math.log1p(math.exp(0.5)) - 0.5)
    assert parts["quant"].item() == pytest.approx(0.1 * 0.25)  # Σ(z - sign z)² = 0.25
    parts = hand("DPSH", z, Y3[1:])  # dissimilar
    assert parts["main"].item() == pytest.approx(math.log1p(math.exp(0.5)))


def test_dch_by_hand() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # cos 0 -> d = 2·(1 - 0)/2 = 1
    quant = 0.1 * math.log1p((1 - 1 / math.sqrt(2)) / 10)  # d(|z|, 1) = 1 - cos 45°
    parts = hand("DCH", z, Y3[:2])
    assert parts["main"].item() == pytest.approx(2 * math.log1p(1 / 10))  # w = 1/p = 2
    assert parts["quant"].item() == pytest.approx(quant)
    parts = hand("DCH", z, Y3[1:])
    assert parts["main"].item() == pytest.approx(2 * math.log1p(10 / 1))


def test_cel_and_hashnet_by_hand() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    # sep(2 bits, 2 classes) = -1. Pairs: (1,2) similar, cos 0 -> 1 - 0 = 1;
    # (1,3) dissimilar, cos 1 -> 1 - (-1) = 2; (2,3) dissimilar, cos 0 -> 0 - (-1) = 1
    assert hand("CEL", z, Y3)["main"].item() == pytest.approx((1 + 2 + 1) / 3)
    # HashNet, β = 1: z = tanh(u); similar pair, α = 10/2 -> θ = 5·z1·z2
    u = torch.tensor([[0.3, -0.2], [0.1, 0.4]])
    t = torch.tanh(u)
    theta = 5 * (t[0] @ t[1]).item()
    got = hand("HashNet", u, Y3[:2])["main"].item()
    assert got == pytest.approx(math.log1p(math.exp(theta)) - theta, rel=1e-5)


# ------------------------------------------------------------- penalties, schedule
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("penalty", ["l2_penalty", "hswd_penalty"])
def test_penalties_change_the_gradient(name: str, penalty: str) -> None:
    grads = []
    for weight in (0.0, 0.5):
        u, y = batch(seed=3)
        make(name, **{penalty: weight})(u, y).total.backward()
        grads.append(u.grad)
    assert not torch.allclose(grads[0], grads[1])


def test_hswd_is_zero_on_balanced_codes() -> None:
    loss = make("CEL", hswd_penalty=1.0, no_cube=True)
    z = torch.ones(4, NBITS)
    z[:2] = -1.0
    assert loss(z, torch.eye(CLASSES)).parts["hswd"].item() == pytest.approx(0.0)


def test_hashnet_schedule_survives_state_dict() -> None:
    loss = make("HashNet")
    u, y = batch()
    for _ in range(450):
        loss(u.detach(), y)
    assert loss.beta == pytest.approx(math.sqrt(3))
    fresh = make("HashNet")
    assert fresh.beta == 1.0
    fresh.load_state_dict(loss.state_dict())
    assert fresh.beta == pytest.approx(math.sqrt(3))
    fresh.eval()
    fresh(u.detach(), y)  # evaluation forwards do not advance the schedule
    assert int(fresh.iter) == 450


@pytest.mark.parametrize("kw, match", [
    ({"nbits": 0}, "nbits must be an integer >= 1; got 0"),
    ({"penalty": -1.0}, "penalty must be a finite number >= 0; got -1.0"),
    ({"hswd_penalty": float("nan")}, "HSWD_penalty must be"),
])
def test_bad_arguments(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        make("DSH", **kw)


def test_bad_batch() -> None:
    with pytest.raises(ConfigError, match="need >= 2"):
        make("DSH")(torch.zeros(1, NBITS), torch.ones(1, CLASSES))
    with pytest.raises(ConfigError, match=r"\(batch, 16\)"):
        make("DSH")(torch.zeros(3, 8), torch.ones(3, CLASSES))


# ------------------------------------------------------------- separation
@pytest.mark.parametrize("nbits", [8, 12, 16, 32, 48, 64])
def test_separation_properties(nbits: int) -> None:
    assert separation(nbits, 2) == -1.0
    values = [separation(nbits, c) for c in range(2, 130)]
    assert values == sorted(values)  # monotone in the number of classes
    for c in range(2, 130):
        assert separation_bound(nbits, c) <= separation(nbits, c) + 1e-12
    if nbits & (nbits - 1) == 0:  # power of two: ±Hadamard rows
        assert all(separation(nbits, c) <= 0.0 for c in range(2, 2 * nbits + 1))
        # Rankin: more than nbits + 1 codes cannot be pairwise obtuse -> exactly 0
        assert separation(nbits, nbits + 2) == 0.0 == separation(nbits, 2 * nbits)
        assert separation(nbits, 2 * nbits + 1) > 0.0


def test_separation_known_values() -> None:
    assert separation(16, 3) == -0.25       # [16, 2, 10] code, optimal (Plotkin)
    assert separation(64, 10) == -0.03125   # [64, 4, 33] code, optimal (Griesmer)
    assert separation(16, 100) == 0.25      # distance 6 of 16
    assert separation(4, 17) == 1.0         # more classes than 2**nbits codes


def test_dhn_quantization_by_hand() -> None:
    # Σ log cosh(|z| - 1): item 1 -> log cosh 0 + log cosh 0.5, item 2 the same
    parts = hand("DHN", Z2, Y3[:2])
    assert parts["quant"].item() == pytest.approx(0.1 * math.log(math.cosh(0.5)), rel=1e-5)
