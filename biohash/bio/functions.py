"""Autograd functions: exact weight/bias gradients, B in the gradient to the input.

Mixed precision: under autocast the forward casts the input to the autocast
dtype and saves that copy -- exactly what backprop's autocast saves -- and
F.linear/F.conv2d autocast the weight as usual. The backward turns autocast
off and computes in the dtype of the incoming gradient delta, casting B to
it; every gradient is returned in the dtype of the tensor it belongs to.
This works for any device type (CPU bf16, CUDA bf16/fp16), which
``torch.amp.custom_bwd`` (one device type per function) does not. Nothing
but that input and W (a Parameter, alive anyway) is saved.
"""
from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from biohash.bio.rules import ErrorSlot, Feedback, weight_chunks
from biohash.errors import ConfigError

__all__ = ["BioLinearFunction", "BioConv2dFunction", "CaptureOutputError"]


def _exact_autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    # CPU backward runs on the caller's thread, so an autocast region around
    # loss.backward() would otherwise re-cast our matmuls.
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _autocast_input(x: Tensor) -> Tensor:
    """``x`` in the autocast dtype when autocast is on (what backprop would save)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and x.is_floating_point():
        return x.to(torch.get_autocast_dtype(device_type))
    return x


def _output_error(fb: Feedback, batch: int, dtype: torch.dtype) -> Tensor:
    """The recorded dL/d(output) as (N, output_dim) in ``dtype``."""
    error = fb.slot.error if fb.slot is not None else None
    if error is None:
        raise ConfigError(
            "dfa: no output error was recorded for this backward; the loss must be "
            "computed from the output of the model passed to convert() (with "
            "torch.utils.checkpoint, pass use_reentrant=False)")
    error = error.reshape(error.shape[0], -1)
    if error.shape[0] != batch:
        raise ConfigError(f"dfa: output batch size {error.shape[0]} != layer input batch "
                          f"size {batch}; dim 0 of every layer input must be the batch")
    return error.to(dtype)


def _direct_input_grad(fb: Feedback, x_shape: torch.Size, dtype: torch.dtype,
                       channel_dim: int) -> Tensor:
    """dfa: B_l e broadcast over every input dim except batch and ``channel_dim``."""
    proj = _output_error(fb, x_shape[0], dtype) @ fb.buffer.to(dtype).t()  # (N, C_in)
    view = [x_shape[0]] + [1] * (len(x_shape) - 1)
    view[channel_dim] = proj.shape[1]
    return proj.view(view).expand(x_shape)


class BioLinearFunction(torch.autograd.Function):
    """y = x W^T + b over any leading dims; grad-to-input uses B (or dfa's B e)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, fb: Feedback) -> Tensor:
        ctx.fb, ctx.x_dtype = fb, x.dtype
        x = _autocast_input(x)
        ctx.save_for_backward(x, weight)
        return F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        fb: Feedback = ctx.fb.drawn()  # brsf: this backward's B
        gx = gw = gb = None
        with _exact_autocast_off(g.device.type):
            if need_x:
                gx = _linear_input_grad(g, weight, x, fb).to(ctx.x_dtype)
            if need_w or need_b:
                g2 = g.reshape(-1, g.shape[-1])  # (N*, out)
                if need_w:
                    x2 = x.reshape(-1, x.shape[-1]).to(g.dtype)  # (N*, in)
                    gw = g2.t().mm(x2).to(weight.dtype)
                if need_b:
                    gb = g2.sum(0).to(weight.dtype)
        return gx, gw, gb, None


def _linear_input_grad(g: Tensor, weight: Tensor, x: Tensor, fb: Feedback) -> Tensor:
    if fb.rule.direct:
        return _direct_input_grad(fb, x.shape, g.dtype, x.dim() - 1)
    if fb.rule.stored and fb.buffer.dtype == g.dtype:
        return g.matmul(fb.buffer)  # stored B: no copy at all
    chunks = weight_chunks(weight.shape, weight.device)
    if len(chunks) == 1:
        t, scale = fb.factors(weight)  # B = scale * T
        return _scaled(g.matmul(t.to(g.dtype)), scale)  # (..., in)
    # Blocks of B (one lives at a time, in cache), column block by column block:
    # the first row block of each writes its columns of the input gradient, the
    # others add to them; accumulated in >= float32.
    acc = torch.promote_types(g.dtype, torch.float32)
    g2 = g.reshape(-1, g.shape[-1]).to(acc)  # (N*, out)
    gx = g2.new_empty(g2.shape[0], weight.shape[1])  # (N*, in)
    first = weight[chunks[0]]
    scratch = weight.new_empty(first.shape)
    scale = 1.0
    for rows, cols in chunks:
        n_rows, n_cols = weight[rows, cols].shape
        t, scale = fb.factors(weight, (rows, cols), out=scratch[:n_rows, :n_cols])  # B = scale T
        if not rows.start:
            torch.mm(g2[:, rows], t.to(acc), out=gx[:, cols])
        else:
            gx[:, cols].addmm_(g2[:, rows], t.to(acc))
    return _scaled(gx, scale).view(*g.shape[:-1], weight.shape[1])


def _scaled(gx: Tensor, scale: float) -> Tensor:
    """``scale * gx`` in place (``gx`` is a fresh product): B = scale * T."""
    return gx if scale == 1.0 else gx.mul_(scale)


class BioConv2dFunction(torch.autograd.Function):
    """2-D convolution with integer padding; grad-to-input uses B (or dfa's B e).

    One ``aten.convolution_backward`` call computes the input gradient with B
    and the exact weight/bias gradients, as backprop's own backward does.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, fb: Feedback,
                stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                groups: int) -> Tensor:
        ctx.fb = fb
        ctx.conf = (list(stride), list(padding), list(dilation), groups)
        ctx.x_dtype = x.dtype
        x = _autocast_input(x)
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        stride, padding, dilation, groups = ctx.conf
        fb: Feedback = ctx.fb.drawn()  # brsf: this backward's B
        direct = fb.rule.direct
        gx = gw = gb = None
        with _exact_autocast_off(g.device.type):
            dtype = g.dtype
            # B = scale * T replaces W only where the input gradient is computed;
            # the weight gradient depends on (x, g) alone, W/T only give it its shape.
            t, scale = fb.factors(weight) if need_x and not direct else (weight, 1.0)
            mask = [need_x and not direct, need_w, need_b]
            if any(mask):
                gx, gw, gb = torch.ops.aten.convolution_backward.default(
                    g, x.to(dtype), t.to(dtype), [weight.shape[0]] if need_b else None,
                    stride, padding, dilation, False, [0, 0], groups, mask)
            if gx is not None:
                gx = _scaled(gx, scale)
            if need_x and direct:
                gx = _direct_input_grad(fb, x.shape, dtype, 1)
            gx = gx.to(ctx.x_dtype) if gx is not None else None
            gw = gw.to(weight.dtype) if gw is not None else None
            gb = gb.to(weight.dtype) if gb is not None else None
        return gx, gw, gb, None, None, None, None, None


class CaptureOutputError(torch.autograd.Function):
    """Identity on the model output; its backward records dL/d(output) for dfa.

    Backward runs output-first, so the error is in ``slot`` before any hidden
    layer's backward reads it.
    """

    @staticmethod
    def forward(ctx, y: Tensor, slot: ErrorSlot) -> Tensor:
        ctx.slot = slot
        return y.view_as(y)

    @staticmethod
    @once_differentiable
    def backward(ctx, g: Tensor):
        ctx.slot.error = g
        return g, None
