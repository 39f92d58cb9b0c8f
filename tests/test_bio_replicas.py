"""biohash.bio under forward recomputation (torch.utils.checkpoint) and nn.DataParallel.

brsf's per-step draw and dfa's error slot must give the gradients of a plain
run: checkpointing recomputes forwards inside backward, DataParallel runs
shallow replicas of the model in parallel threads.
"""
from __future__ import annotations

import copy
import sys
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from biohash.bio import BioConv2d, BioLinear, convert
from biohash.errors import ConfigError

RULES = ["brsf", "dfa"]  # the rules with per-forward state


class Net(nn.Module):
    """conv -> conv -> linear -> linear, no BatchNorm/Dropout (their batch
    statistics and masks would differ between a full batch and replicas)."""

    def __init__(self, segment: str = "none") -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten())  # (N, 96)
        self.head = nn.Sequential(nn.Linear(96, 12), nn.Tanh(), nn.Linear(12, 5))
        self.segment = segment  # none | reentrant | nonreentrant

    def forward(self, x):
        h = self.features[:2](x)  # its output requires grad: reentrant checkpoint needs that
        if self.segment == "none":
            h = self.features[2:](h)
        else:  # the second conv recomputed in backward
            h = checkpoint(self.features[2:], h, use_reentrant=self.segment == "reentrant")
        return self.head(h)


def _batch(seed: int, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randn(n, 5, generator=g)


def _bio(model):
    return [m for m in model.modules() if isinstance(m, (BioConv2d, BioLinear))]


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def _step(model, x, y, forward=None):
    model.zero_grad()
    out = forward(x) if forward is not None else model(x)
    F.mse_loss(out, y).backward()
    return _grads(model)


# --- torch.utils.checkpoint ----------------------------------------------------

@pytest.mark.parametrize("mode", RULES)
def test_checkpoint_non_reentrant_matches_the_plain_run(mode):
    torch.manual_seed(0)
    plain = convert(Net(), mode, seed=3)
    ckpt = copy.deepcopy(plain)
    ckpt.segment = "nonreentrant"
    for step in range(3):  # brsf: three different B, in the same order
        x, y = _batch(step)
        expected = _step(plain, x, y)
        got = _step(ckpt, x, y)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
        # the recomputed forward drew nothing: one draw per layer and step
        assert [m._draws for m in _bio(ckpt)] == [m._draws for m in _bio(plain)]
    if mode == "brsf":
        assert all(m._draws == 3 for m in _bio(ckpt))
        for m, p in zip(_bio(ckpt), _bio(plain)):
            assert torch.equal(m.feedback_matrix(), p.feedback_matrix())


def test_checkpoint_of_the_whole_dfa_model_matches_the_plain_run():
    torch.manual_seed(0)
    plain = convert(Net(), "dfa", seed=3)
    ckpt = copy.deepcopy(plain)
    x, y = _batch(0)
    expected = _step(plain, x, y)
    got = _step(ckpt, x, y, forward=lambda inp: checkpoint(ckpt, inp, use_reentrant=False))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_checkpoint_reentrant_brsf_draws_once_and_dfa_refuses():
    torch.manual_seed(0)
    plain = convert(Net(), "brsf", seed=3)
    ckpt = copy.deepcopy(plain)
    ckpt.segment = "reentrant"
    for step in range(2):
        x, y = _batch(step)
        expected = _step(plain, x, y)
        for g, e in zip(_step(ckpt, x, y), expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    assert all(m._draws == 2 for m in _bio(ckpt))
    dfa = convert(Net("reentrant"), "dfa")
    with pytest.raises(ConfigError, match="use_reentrant=False"):
        _step(dfa, *_batch(0))


# --- nn.DataParallel ---------------------------------------------------------

def test_data_parallel_without_gpus_calls_the_module_itself():
    if torch.cuda.device_count() > 0:
        pytest.skip("with GPUs DataParallel replicates; see the replica test below")
    for mode in RULES:
        torch.manual_seed(0)
        plain = convert(Net(), mode, seed=1)
        wrapped = nn.DataParallel(copy.deepcopy(plain))
        for step in range(2):
            x, y = _batch(step)
            for g, e in zip(_step(wrapped, x, y), _step(plain, x, y)):
                torch.testing.assert_close(g, e, rtol=0, atol=0)
        assert [m._draws for m in _bio(wrapped.module)] == [m._draws for m in _bio(plain)]


def _cpu_broadcast(tensors, devices, detach=False):
    """CPU stand-in for DataParallel's GPU broadcast: one copy per "device"
    whose gradient flows back to the original (a view), as Broadcast's does."""
    return [[t.detach() if detach else t.view_as(t) for t in tensors] for _ in devices]


def _data_parallel_forward(model, x, n_replicas):
    """What nn.DataParallel.forward does with several GPUs, on CPU: the real
    ``replicate`` (its parameter broadcast swapped for ``_cpu_broadcast``),
    one thread per replica, outputs gathered along dim 0."""
    replicas = torch.nn.parallel.replicate(model, list(range(n_replicas)))
    chunks = x.chunk(n_replicas)
    outs: list = [None] * n_replicas
    grad_enabled = torch.is_grad_enabled()

    def work(i):
        torch.set_grad_enabled(grad_enabled)  # grad mode is per thread
        outs[i] = replicas[i](chunks[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return torch.cat(outs)


@pytest.mark.parametrize("mode", RULES)
def test_data_parallel_replicas_match_the_single_device_run(mode, monkeypatch):
    replicate_module = sys.modules["torch.nn.parallel.replicate"]  # the name is shadowed
    monkeypatch.setattr(replicate_module, "_broadcast_coalesced_reshape", _cpu_broadcast)
    torch.manual_seed(0)
    single = convert(Net(), mode, seed=5)
    model = copy.deepcopy(single)
    for step in range(3):
        x, y = _batch(step, n=6)
        expected = _step(single, x, y)
        got = _step(model, x, y, forward=lambda inp: _data_parallel_forward(model, inp, 3))
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
        # brsf: the replicas' draws reach the original layer, once per step
        assert [m._draws for m in _bio(model)] == [m._draws for m in _bio(single)]
    if mode == "brsf":
        assert all(m._draws == 3 for m in _bio(model))
