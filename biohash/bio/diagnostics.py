"""Alignment diagnostics researchers plot over training.

* ``alignment_angles``: angle between each layer's effective B and W. For
  fa it is the stored B; usf: std * sign(W); frsf/brsf: |M| * sign(W) (the
  matrix actually used -- not |M|, BioTorch's defect 3); brsf uses the B of
  the latest draw (the latest backward pass). dfa layers are skipped: their
  B maps the output error onto the layer input and has no W to compare with.
* ``gradient_alignment``: angle between each bio layer's weight gradient and
  the true backprop weight gradient on one batch (the update actually
  applied vs the one backprop would apply; works for every rule incl. dfa).
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from biohash.bio.layers import BioLayer
from biohash.bio.rules import Feedback, step_seed, weight_chunks

__all__ = ["alignment_angles", "gradient_alignment"]


def _bio_layers(model: nn.Module) -> dict[str, BioLayer]:
    return {n: m for n, m in model.named_modules() if isinstance(m, BioLayer) and m.mode != "bp"}


def _angle(dot: float, norm_a: float, norm_b: float) -> float:
    if norm_a == 0.0 or norm_b == 0.0:
        return float("nan")
    return math.degrees(math.acos(max(-1.0, min(1.0, dot / (norm_a * norm_b)))))


@torch.no_grad()
def alignment_angles(model: nn.Module) -> dict[str, float]:
    """``{"align/<layer>": degrees}`` between B and W for every non-dfa bio layer.

    Computed chunk by chunk in float64, so no full-size B is built.
    """
    out = {}
    for name, layer in _bio_layers(model).items():
        if layer._rule.direct:
            continue
        fb = Feedback(layer._rule, layer._buffers.get("feedback"), layer.feedback_std,
                      step_seed(layer.feedback_seed, layer._draws))
        dot = nb = nw = 0.0
        for part in weight_chunks(layer.weight.shape, layer.weight.device):
            b = fb.matrix(layer.weight, part).double()
            w = layer.weight[part].double()
            dot += float((b * w).sum())
            nb += float((b * b).sum())
            nw += float((w * w).sum())
        out[f"align/{name}"] = _angle(dot, math.sqrt(nb), math.sqrt(nw))
    return out


def gradient_alignment(model: nn.Module, loss_fn: Callable[..., Tensor],
                       batch: Any) -> dict[str, float]:
    """``{"grad_align/<layer>": degrees}`` between bio and backprop weight gradients.

    ``batch`` is ``(inputs, *rest)`` -> ``loss_fn(model(inputs), *rest)``, or
    a tensor -> ``loss_fn(model(batch))``. Both passes run in the model's
    current train/eval mode with the same RNG state (same dropout masks).
    Afterwards the model is as before: gradients (the same tensor objects),
    buffers such as BN running stats, brsf draw counters and the global RNG
    state are restored. Frozen layers (no weight gradient) are left out.
    """
    layers = {n: m for n, m in _bio_layers(model).items() if m.weight.requires_grad}
    if not layers:
        return {}
    params = list(model.parameters())
    saved_grads = [p.grad for p in params]
    feedback_ids = {id(m._buffers.get("feedback")) for m in layers.values()}
    # Only the buffers a forward may change (BN stats); B buffers never change.
    saved_bufs = [(b, b.detach().clone()) for b in model.buffers() if id(b) not in feedback_ids]
    saved_draws = {m: m._draws for m in layers.values()}
    devices = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            rng = _rng_state(devices)
            bio = _weight_grads(model, loss_fn, batch, layers)
            _restore(saved_bufs, saved_draws)
            _set_rng_state(rng, devices)
            with _exact_backprop(layers.values()):
                true = _weight_grads(model, loss_fn, batch, layers)
    finally:
        for p, g in zip(params, saved_grads):
            p.grad = g
        _restore(saved_bufs, saved_draws)
    out = {}
    for name in layers:
        a, b = bio[name].double(), true[name].double()
        out[f"grad_align/{name}"] = _angle(float((a * b).sum()), float(a.norm()), float(b.norm()))
    return out


def _weight_grads(model: nn.Module, loss_fn: Callable[..., Tensor], batch: Any,
                  layers: dict[str, BioLayer]) -> dict[str, Tensor]:
    for p in model.parameters():
        p.grad = None
    with torch.enable_grad():
        if isinstance(batch, (tuple, list)):
            loss = loss_fn(model(batch[0]), *batch[1:])
        else:
            loss = loss_fn(model(batch))
        loss.backward()
    return {n: (m.weight.grad if m.weight.grad is not None else torch.zeros_like(m.weight))
            for n, m in layers.items()}


def _restore(bufs: list[tuple[Tensor, Tensor]], draws: dict[BioLayer, int]) -> None:
    with torch.no_grad():
        for buf, saved in bufs:
            buf.copy_(saved)
    for layer, n in draws.items():
        layer._draws = n


@contextlib.contextmanager
def _exact_backprop(layers: Any) -> Iterator[None]:
    layers = list(layers)
    before = [m._exact for m in layers]
    for m in layers:
        m._exact = True
    try:
        yield
    finally:
        for m, flag in zip(layers, before):
            m._exact = flag


def _rng_state(devices: list[int]) -> list[Tensor]:
    return [torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state: list[Tensor], devices: list[int]) -> None:
    torch.set_rng_state(state[0])
    for d, s in zip(devices, state[1:]):
        torch.cuda.set_rng_state(s, d)
