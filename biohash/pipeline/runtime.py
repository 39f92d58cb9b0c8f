"""What a trial needs at run time, built once from a config.

``TrialContext`` bundles the opened data store, the (bio-converted) model,
the loss, the device and the precision policy, so train and predict share
one definition of "how a batch goes through the model".
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from biohash.config import TrialConfig
# Runtime is part of the trial contract (torch-free); re-exported here, where it is used.
from biohash.contract import Runtime
from biohash.errors import ConfigError
from biohash.utils import resolve_device, seed_everything

__all__ = ["Runtime", "TrialContext", "open_context", "forward_features"]


@dataclass
class TrialContext:
    cfg: TrialConfig
    runtime: Runtime
    store: Any
    model: nn.Module
    loss_fn: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    is_bio: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def loader(self, fold: Any, *, shuffle: bool, epoch: int = 0, drop_last: bool = False,
               batch_size: int | None = None, indices: np.ndarray | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
        """Batches ready for the model: resized, channel-matched, channels_last on CUDA."""
        from biohash.data import BatchLoader

        loader = BatchLoader(fold, batch_size or self.cfg.bs, shuffle=shuffle, seed=self.cfg.seed,
                             epoch=epoch, device=self.device, drop_last=drop_last,
                             image_size=self.model.input_size, indices=indices,
                             channels_last=self.device.type == "cuda")
        for x, y, idx in loader:
            if x.shape[1] != self.model.channels:
                x = x.expand(-1, self.model.channels, -1, -1)  # grey stores into RGB nets
            yield x, y, idx


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training, or None for plain fp32 (the default, as h2q)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"bad -precision 'fp16' on {device.type}; allowed there: fp32, bf16, auto")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def open_context(cfg: TrialConfig, runtime: Runtime) -> TrialContext:
    """Validate, seed, open the data and build model + loss on the device."""
    from biohash.data import materialize, open_store
    from biohash.losses import create_loss
    from biohash.models import create_model

    cfg.validate()
    device = resolve_device(runtime.device)
    amp = _amp_dtype(cfg.precision, device)
    store = open_store(cfg.db, materialize(cfg.db, runtime.data_root, cache_dir=runtime.cache_dir))
    seed_everything(cfg.seed)
    model = create_model(cfg.arch, nbits=cfg.nbits, mode=cfg.mode, bio_scope=cfg.bio_scope,
                         weights=cfg.weights, seed=cfg.seed).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loss_fn = create_loss(cfg.loss, nbits=cfg.nbits, num_classes=store.num_classes,
                          penalty=cfg.penalty, l2_penalty=cfg.L2_penalty,
                          hswd_penalty=cfg.HSWD_penalty, no_cube=cfg.no_cube,
                          similar_probability=store.similar_probability, seed=cfg.seed,
                          hswd_sample=cfg.hswd_sample).to(device)
    from biohash.bio import is_bio

    return TrialContext(cfg, runtime, store, model, loss_fn, device, amp, is_bio(model))


@torch.no_grad()
def forward_features(ctx: TrialContext, fold: Any, *, indices: np.ndarray | None = None) -> np.ndarray:
    """Raw hash-layer outputs (float32, N x nbits, before tanh) in fold order.

    Always computed in fp32, whatever ``-precision`` trained the model: the
    codes are signs of these outputs, and a bf16 forward flips the sign of
    near-zero outputs, so predict, evaluate and the per-epoch validation stay
    comparable with h2q's (fp32) numbers. With ``indices`` (sorted), only
    those items, in that order.
    """
    rows = np.arange(len(fold)) if indices is None else np.asarray(indices)
    was_training = ctx.model.training
    ctx.model.eval()
    out = np.empty((len(rows), ctx.cfg.nbits), dtype=np.float32)
    try:
        for x, _, idx in ctx.loader(fold, shuffle=False, batch_size=ctx.runtime.eval_batch_size,
                                    indices=indices):
            # Explicitly off: a caller's autocast region must not lower it either.
            with torch.autocast(ctx.device.type, enabled=False):
                u = ctx.model(x)
            out[np.searchsorted(rows, idx.cpu().numpy())] = u.float().cpu().numpy()
    finally:
        ctx.model.train(was_training)
    return out
