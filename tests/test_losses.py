"""biohash.losses: every registered loss equals an independent re-derivation of
h2q's formula (written out below, plain torch, as h2q's ``src/utils/losses.py``
and ``training_step`` compute it), the loss contract, HSWD's generator,
HashNet's schedule, h2q's separation table and bad input."""
from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import biohash.losses
from biohash.errors import ConfigError
from biohash.losses import LOSSES, HashLoss, create_loss, separation

NAMES = LOSSES.names()
NBITS, CLASSES, P = 16, 4, 0.25
CODETABLE = Path(biohash.losses.__file__).parent / "h2q-codetable.csv"


def make(name: str, **kw) -> HashLoss:
    args = dict(nbits=NBITS, num_classes=CLASSES, penalty=0.1, similar_probability=P)
    args.update(kw)
    return create_loss(name, **args)


def batch(seed: int = 0, multi: bool = False, n: int = 12) -> tuple[Tensor, Tensor]:
    """Raw outputs u (n, NBITS) and labels; multi-label adds second labels and
    one unlabelled item (h2q's MS_COCO keeps all-zero label rows)."""
    g = torch.Generator().manual_seed(seed)
    u = (1.5 * torch.randn(n, NBITS, generator=g)).requires_grad_()
    y = torch.nn.functional.one_hot(torch.arange(n) % CLASSES, CLASSES).float()
    if multi:
        y[::3, (torch.arange(n)[::3] + 1) % CLASSES] = 1.0
        y[-1] = 0.0
    return u, y


# ------------------------------------------------------------- h2q, re-derived
def reference(name: str, u: Tensor, y: Tensor, *, nbits: int, penalty: float, p: float,
              no_cube: bool = False, l2: float = 0.0, hswd: float = 0.0, r: Tensor | None = None,
              proxies: Tensor | None = None, sep: float = 0.0, step: int = 0) -> Tensor:
    """h2q's training-step loss, written from the formulas with broadcasting."""
    cossim, logsig, relu = nn.CosineSimilarity(), nn.LogSigmoid(), nn.ReLU()
    if name == "HashNet":  # h2q forces no_cube and applies tanh(scale * u)
        z = torch.tanh((1 + step // 200) ** 0.5 * u)
    else:
        z = u if no_cube else torch.tanh(u)
    sm = (y @ y.T > 0).float()
    w = sm / p + (1 - sm) / (1 - p)
    cs = cossim(z[:, :, None], z.t()[None, :, :])  # (B, B)
    sims = z @ z.t()
    sq = torch.mean(torch.sum((z - torch.sign(z)) ** 2, dim=-1))

    def cd(a, b):
        return 1e-5 + (1 - cossim(a, b)) / 2 * (1 - 2e-5)

    if name == "DSH":
        d = torch.sum((z[:, None, :] - z[None, :, :]) ** 2, dim=-1)
        loss = (torch.mean(0.5 * sm * d + 0.5 * (1 - sm) * relu(2 * nbits - d))
                + penalty * torch.mean(torch.sum(1 - torch.abs(z), dim=-1)))
    elif name == "DPSH":
        loss = -torch.mean(sm * sims + logsig(-sims)) + penalty * sq
    elif name in ("DHN", "DHN_paper"):
        q = (torch.log(torch.cosh(torch.abs(z))) - 1 if name == "DHN"
             else torch.log(torch.cosh(torch.abs(z) - 1)))
        loss = -torch.mean(sm * sims + logsig(-sims)) + penalty * torch.mean(torch.sum(q, dim=-1))
    elif name == "DCH":
        d = nbits * cd(z[:, :, None], z.t()[None, :, :])
        loss = (torch.mean(w * (sm * torch.log(d / 10) + torch.log(1 + 10 / d)))
                + penalty * torch.mean(torch.log(1 + nbits * cd(torch.abs(z), z ** 0) / 10)))
    elif name == "WGLHH":
        d = nbits * (1 - cs) / 2
        a = torch.exp(torch.abs(0.5 * (cs + 1) - sm))
        x = 0.1 * d ** 2
        ex = torch.exp(-x)
        loss = (torch.mean(w * a * ((1 - sm) * ex + sm * ((1 + ex) * logsig(x) - x * ex)))
                + penalty * sq)
    elif name == "HashNet":
        alpha = 10 / nbits
        loss = -torch.mean(w * (alpha * sm * sims + logsig(-alpha * sims)))
    elif name == "CEL":
        loss = torch.mean((1 - cs) * sm + (1 - sm) * relu(cs - sep))
    elif name == "HyP2":
        smc = (y @ y.T <= 0).float()
        loss = torch.mean(smc * relu(cs - sep)) / torch.mean(smc)
    else:
        raise AssertionError(name)
    if l2 > 0:
        loss = loss + l2 * sq
    if hswd > 0:
        zs, _ = torch.sort(z, dim=0)
        rs, _ = torch.sort(r, dim=0)
        loss = loss + hswd * torch.dot((zs - rs).view(-1), (zs - rs).view(-1)) / len(z) / nbits
    if name == "HyP2":
        pc = cossim(z[:, :, None], torch.tanh(proxies).t()[None, :, :])  # (B, C)
        proxy = (torch.mean(y * -pc) / torch.mean(y)
                 + torch.mean((1 - y) * relu(pc - sep)) / torch.mean(1 - y))
        loss = penalty * loss + proxy
    return loss


def h2q_codetable(nbits: int, classes: int) -> float:
    """h2q's lookup: genfromtxt (header row -> row 0), then [nbits][ceil(log2 C)]."""
    table = np.genfromtxt(CODETABLE, delimiter=",", comments="#")
    return float(table[nbits][int(np.ceil(np.log2(classes)))])


def reference_for(loss: HashLoss, name: str, u: Tensor, y: Tensor, **kw) -> Tensor:
    extra = {}
    if name in ("HyP2", "CEL"):
        extra["sep"] = h2q_codetable(loss.nbits, loss.num_classes)
    if name == "HyP2":
        extra["proxies"] = loss.proxies.detach()
    return reference(name, u.detach(), y, nbits=loss.nbits, penalty=loss.penalty,
                     p=P, no_cube=loss.no_cube, l2=loss.l2_penalty,
                     hswd=loss.hswd_penalty, **extra, **kw)


def rademacher(seed: int, shape: tuple[int, int], draws: int = 1) -> Tensor:
    """The ``draws``-th ±1 matrix from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(draws):
        r = torch.randint(0, 2, shape, generator=g) * 2 - 1
    return r.float()


# ------------------------------------------------------------- equality with h2q
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("no_cube", [False, True])
@pytest.mark.parametrize("penalties", ["none", "l2+hswd", "l2+hswd balanced"])
def test_equals_h2q(name: str, multi: bool, no_cube: bool, penalties: str) -> None:
    kw = {} if penalties == "none" else dict(l2_penalty=0.3, hswd_penalty=0.7, seed=5)
    if penalties.endswith("balanced"):
        kw["hswd_sample"] = "balanced"
    torch.manual_seed(1)
    loss = make(name, no_cube=no_cube, **kw)
    u, y = batch(multi=multi)
    r = None
    if penalties == "l2+hswd":
        r = rademacher(5, (len(u), NBITS))
    elif penalties.endswith("balanced"):  # sorted balanced sample: half -1, then +1
        r = torch.ones(len(u), NBITS)
        r[: len(u) // 2] = -1.0
    out = loss(u, y)
    expected = reference_for(loss, name, u, y, r=r)
    assert torch.isfinite(expected)
    assert out.total.item() == pytest.approx(expected.item(), rel=1e-5)
    out.total.backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_gradient_equals_h2q(name: str) -> None:
    torch.manual_seed(1)
    loss = make(name, l2_penalty=0.2)
    u, y = batch(seed=4, multi=True)
    loss(u, y).total.backward()
    v = u.detach().clone().requires_grad_()
    extra = {"sep": h2q_codetable(NBITS, CLASSES)} if name in ("HyP2", "CEL") else {}
    if name == "HyP2":
        extra["proxies"] = loss.proxies.detach()
    reference(name, v, y, nbits=NBITS, penalty=0.1, p=P, l2=0.2, **extra).backward()
    torch.testing.assert_close(u.grad, v.grad, rtol=1e-4, atol=1e-6)


def test_before_after_table_batch() -> None:
    """The issue's batch: 8 x 16, labels [0,1,2,0,1,2,3,3], penalty 0.1, p 0.25."""
    torch.manual_seed(0)
    u = torch.randn(8, 16)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 3, 3]), 4).float()
    for name in NAMES:
        torch.manual_seed(0)
        loss = make(name)
        assert loss(u, y).total.item() == pytest.approx(
            reference_for(loss, name, u, y).item(), rel=1e-5), name


@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one(name: str) -> None:
    loss = make(name, l2_penalty=0.1, hswd_penalty=0.1, hswd_sample="balanced")
    u, y = batch(n=1)
    out = loss(u, y)
    out.total.backward()
    assert torch.isfinite(out.total) and torch.isfinite(u.grad).all()
    if name == "HyP2":  # no dissimilar pair: h2q's 0/0; here the pair term is 0
        assert out.parts["pair"].item() == 0.0
    else:
        r = torch.ones(1, NBITS)  # balanced sample of one item: +1
        assert out.total.item() == pytest.approx(
            reference_for(loss, name, u, y, r=r).item(), rel=1e-5)


def test_hyp2_empty_masks_are_zero_not_nan() -> None:
    loss = make("HyP2")
    u, _ = batch(n=6)
    same = torch.zeros(6, CLASSES)
    same[:, 0] = 1.0  # one class: no dissimilar pair
    out = loss(u, same)
    out.total.backward()
    assert out.parts["pair"].item() == 0.0 and torch.isfinite(u.grad).all()
    everything = torch.ones(6, CLASSES)  # every label set: mean(1 - y) = 0
    out = loss(u.detach(), everything)
    expected = -torch.nn.functional.cosine_similarity(
        torch.tanh(u.detach())[:, :, None], torch.tanh(loss.proxies.detach()).t()[None], dim=1)
    assert out.parts["main"].item() == pytest.approx(expected.mean().item(), rel=1e-5)
    nothing = torch.zeros(6, CLASSES)  # no label at all: mean(y) = 0
    assert torch.isfinite(loss(u.detach(), nothing).total)


# ------------------------------------------------------------- contract
def test_registry_names() -> None:
    assert set(NAMES) == {"DCH", "DPSH", "HyP2", "DSH", "DHN", "DHN_paper", "WGLHH",
                          "HashNet", "CEL"}
    assert all("-" not in name for name in NAMES)  # run names are split on '-'
    with pytest.raises(ConfigError, match=r"unknown loss 'dsh'; choose from CEL, DCH"):
        make("dsh")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("multi", [False, True])
def test_contract(name: str, multi: bool) -> None:
    loss = make(name, l2_penalty=0.1, hswd_penalty=0.1)
    u, y = batch(multi=multi)
    out = loss(u, y)
    assert out.total.ndim == 0 and out.total.dtype == torch.float32
    assert {"l2", "hswd"} <= set(out.parts)
    assert out.total.item() == pytest.approx(sum(v.item() for v in out.parts.values()), rel=1e-5)
    assert all(not v.requires_grad for v in out.parts.values())


def test_hyp2_parts_carry_lambda() -> None:
    u, y = batch(multi=True)
    parts = {}
    for lam in (1.0, 0.5):
        torch.manual_seed(0)
        parts[lam] = make("HyP2", penalty=lam, l2_penalty=0.2, hswd_penalty=0.3,
                          hswd_sample="balanced")(u, y).parts
    for key in ("pair", "l2", "hswd"):
        assert parts[0.5][key].item() == pytest.approx(0.5 * parts[1.0][key].item(), rel=1e-6)
    assert parts[0.5]["main"].item() == pytest.approx(parts[1.0]["main"].item(), rel=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_extreme_inputs_stay_finite(name: str) -> None:
    u = torch.tensor([[20.0] * NBITS, [20.0] * NBITS, [-20.0] * NBITS, [0.0] * NBITS,
                      [150.0] * NBITS], requires_grad=True)  # saturated, identical, zero codes
    y = torch.eye(CLASSES)[[0, 1, 1, 2, 3]]
    out = make(name, l2_penalty=1.0, hswd_penalty=1.0, no_cube=True)(u, y)
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
    assert values[-1] < values[0] - 0.05 * abs(values[0]), values[::8]


def test_only_hyp2_has_parameters() -> None:
    for name in NAMES:
        params = dict(make(name).named_parameters())
        if name == "HyP2":
            assert list(params) == ["proxies"]
            assert params["proxies"].shape == (CLASSES, NBITS)
        else:
            assert params == {}, name


def test_hyp2_proxies_are_kaiming_fan_out() -> None:
    torch.manual_seed(7)
    proxies = make("HyP2", num_classes=100, nbits=64).proxies.detach()
    torch.manual_seed(7)
    expected = torch.empty(100, 64)
    nn.init.kaiming_normal_(expected, mode="fan_out")  # std sqrt(2 / 100)
    assert torch.equal(proxies, expected)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("penalty", ["l2_penalty", "hswd_penalty"])
def test_penalties_change_the_gradient(name: str, penalty: str) -> None:
    grads = []
    for weight in (0.0, 0.5):
        torch.manual_seed(0)
        u, y = batch(seed=3)
        make(name, **{penalty: weight})(u, y).total.backward()
        grads.append(u.grad)
    assert not torch.allclose(grads[0], grads[1])


# ------------------------------------------------------------- HSWD generator
def test_hswd_random_draw_is_seeded_fresh_and_private() -> None:
    u, y = batch()
    rng = torch.random.get_rng_state()
    a, b, c = (make("DPSH", hswd_penalty=1.0, seed=s) for s in (3, 3, 4))
    first = [a(u, y).parts["hswd"].item() for _ in range(3)]
    assert torch.equal(torch.random.get_rng_state(), rng)  # global RNG untouched
    assert [b(u, y).parts["hswd"].item() for _ in range(3)] == first  # same seed, same draws
    assert len(set(first)) == 3  # a fresh draw every step
    assert c(u, y).parts["hswd"].item() != first[0]  # another seed, another draw
    z = torch.tanh(u.detach())
    for step, value in enumerate(first, start=1):
        r = rademacher(3, tuple(z.shape), draws=step)
        expected = ((z.sort(dim=0)[0] - r.sort(dim=0)[0]) ** 2).sum() / z.numel()
        assert value == pytest.approx(expected.item(), rel=1e-6)


def test_hswd_generator_resumes_from_state_dict() -> None:
    u, y = batch()
    run = make("HyP2", hswd_penalty=1.0, seed=1)
    run(u, y)
    buffer = io.BytesIO()
    torch.save(run.state_dict(), buffer)
    expected = [run(u, y).total.item() for _ in range(2)]
    resumed = make("HyP2", hswd_penalty=1.0, seed=99)
    buffer.seek(0)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert [resumed(u, y).total.item() for _ in range(2)] == expected
    twin = copy.deepcopy(run)
    assert twin(u, y).total.item() == run(u, y).total.item()


def test_hswd_is_zero_on_balanced_codes() -> None:
    loss = make("CEL", hswd_penalty=1.0, no_cube=True, hswd_sample="balanced")
    z = torch.ones(5, NBITS)
    z[:2] = -1.0
    assert loss(z, torch.eye(CLASSES)[[0, 1, 2, 3, 0]]).parts["hswd"].item() == 0.0


# ------------------------------------------------------------- HashNet schedule
def test_hashnet_schedule_survives_state_dict() -> None:
    loss = make("HashNet", no_cube=False)  # h2q forces no_cube for HashNet anyway
    u, y = batch()
    with torch.no_grad():
        for _ in range(450):
            loss(u[:2], y[:2])
    assert loss.beta == (1 + 2) ** 0.5
    fresh = make("HashNet")
    assert fresh.beta == 1.0
    fresh.load_state_dict(loss.state_dict())
    assert fresh.beta == loss.beta
    fresh.eval()
    out = fresh(u.detach(), y)  # evaluation forwards do not advance the schedule
    assert int(fresh.iter) == 450
    assert out.total.item() == pytest.approx(
        reference_for(fresh, "HashNet", u, y, step=450).item(), rel=1e-5)


# ------------------------------------------------------------- separation table
@pytest.mark.parametrize("nbits", [16, 32, 48, 64])
@pytest.mark.parametrize("classes, column", [(10, 4), (21, 5), (80, 7), (90, 7), (100, 7)])
def test_separation_reads_h2q_codetable(nbits: int, classes: int, column: int) -> None:
    assert math.ceil(math.log2(classes)) == column
    assert separation(nbits, classes) == h2q_codetable(nbits, classes)
    assert make("CEL", nbits=nbits, num_classes=classes).separation == separation(nbits, classes)


def test_separation_known_cells() -> None:
    assert separation(16, 10) == 0.0
    assert separation(64, 10) == -0.03125
    assert separation(48, 100) == pytest.approx(0.08333333333)
    assert separation(16, 2) == -1.0 and separation(4, 16) == 0.5


@pytest.mark.parametrize("nbits, classes, match", [
    (300, 10, r"nbits 300 is outside h2q's separation table \(nbits 1\.\.256\)"),
    (0, 10, r"nbits 0 is outside"),
    (16, 1, r"num_classes 1 is outside h2q's separation table at 16 bits: it covers 2\.\.2\*\*16"),
    (4, 17, r"num_classes 17 is outside .* at 4 bits"),
])
def test_separation_outside_table(nbits: int, classes: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        separation(nbits, classes)
    if nbits >= 1:
        with pytest.raises(ConfigError, match=match):
            make("HyP2", nbits=nbits, num_classes=classes)


# ------------------------------------------------------------- bad input
@pytest.mark.parametrize("kw, match", [
    ({"nbits": 0}, "nbits must be an integer >= 1; got 0"),
    ({"penalty": -1.0}, "penalty must be a finite number >= 0; got -1.0"),
    ({"hswd_penalty": float("nan")}, "HSWD_penalty must be"),
    ({"seed": -1}, "seed must be an integer >= 0; got -1"),
    ({"hswd_sample": "sorted"}, "hswd_sample must be one of random, balanced; got 'sorted'"),
] + [({"similar_probability": p}, rf"similar_probability must be a number in \(0, 1\).*got {p!r}")
     for p in (0.0, 1.0, -0.1, 1.5, float("nan"), True)])
def test_bad_arguments(kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        make("DSH", **kw)


@pytest.mark.parametrize("name", ["DCH", "WGLHH", "HashNet"])
def test_similar_probability_required_where_used(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"loss {name} weights pairs .* got None"):
        make(name, similar_probability=None)
    make("DPSH", similar_probability=None)  # unused there: not required


def test_bad_batch() -> None:
    with pytest.raises(ConfigError, match=r"\(batch >= 1, 16\)"):
        make("DSH")(torch.zeros(3, 8), torch.ones(3, CLASSES))
    with pytest.raises(ConfigError, match=r"\(batch >= 1, 16\)"):
        make("DSH")(torch.zeros(0, NBITS), torch.ones(0, CLASSES))
    with pytest.raises(ConfigError, match="matching the hash output's batch 3"):
        make("DSH")(torch.zeros(3, NBITS), torch.ones(2, CLASSES))
    with pytest.raises(ConfigError, match="HyP2 has 4 proxies but labels have 5 columns"):
        make("HyP2")(torch.zeros(3, NBITS), torch.ones(3, 5))
