"""Phase 1: train one config, with per-epoch validation mAP and early stopping.

Plain library code (no Ray, no MLflow): ``train(cfg, run_dir, report=...)``
calls ``report(metrics, checkpoint_dir)`` after every epoch; the Tune
trainable turns that into ``tune.report`` and the CLI into a printed line.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from biohash.config import TrialConfig
from biohash.pipeline import checkpoint as ckpt
from biohash.pipeline.runtime import Runtime, TrialContext, forward_features, open_context

__all__ = ["TrainState", "TrainResult", "train", "ReportFn"]

log = logging.getLogger(__name__)

#: ``report(metrics, checkpoint_dir)``: called once per epoch.
ReportFn = Callable[[dict[str, Any], Path], None]

#: Learning rate of the loss's own parameters (HyP2 proxies), as in h2q.
LOSS_PARAM_LR = 1e-3
#: The hash layer learns this many times faster than the backbone (h2q).
HEAD_LR_FACTOR = 10.0


@dataclass
class TrainState:
    """Everything about progress that a resumed run must continue from."""

    epoch: int = 0
    best_val: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    status: str = "running"  # running | finished | early_stopped | diverged
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0


@dataclass(frozen=True)
class TrainResult:
    status: str
    best_epoch: int
    epochs_run: int
    best_val: float
    history: list[dict[str, Any]]
    train_seconds: float


def build_optimizer(cfg: TrialConfig, model: nn.Module, loss_fn: nn.Module) -> torch.optim.Optimizer:
    """Backbone at ``lr``, hash head at 10x, loss parameters at 1e-3 (no decay)."""
    head = [p for p in model.head.parameters() if p.requires_grad]
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [g for g in (
        {"params": body, "lr": cfg.lr, "weight_decay": cfg.wd},
        {"params": head, "lr": cfg.lr * HEAD_LR_FACTOR, "weight_decay": cfg.wd},
        {"params": list(loss_fn.parameters()), "lr": LOSS_PARAM_LR, "weight_decay": 0.0},
    ) if g["params"]]
    if cfg.optim == "adam":
        return torch.optim.Adam(groups)
    if cfg.optim == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    return torch.optim.RMSprop(groups, lr=cfg.lr)


def train(cfg: TrialConfig, run_dir: str | Path, *, runtime: Runtime | None = None,
          report: ReportFn | None = None, resume: str | Path | None = None,
          ctx: TrialContext | None = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir``; resume from a checkpoint folder if given.

    ``ctx``: an already opened context of ``cfg`` (``run_trial`` shares one
    with predict so data and model are built once per trial).

    Writes ``run_dir/checkpoints/{latest,best}.pt``. Stops early after
    ``cfg.pt`` epochs without a better validation mAP, or at the first
    non-finite loss or weights (status ``diverged``, val mAP 0).
    """
    run_dir = Path(run_dir)
    ctx = ctx or open_context(cfg, runtime or Runtime())
    model, loss_fn = ctx.model, ctx.loss_fn
    optimizer = build_optimizer(cfg, model, loss_fn)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.amp_dtype == torch.float16)
    ckpt_dir = run_dir / ckpt.CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = TrainState()
    if resume is not None:
        state = _restore(Path(resume), ckpt_dir, ctx, optimizer, scaler)
        log.info("resumed %s at epoch %d", run_dir.name, state.epoch)

    train_fold = ctx.store.fold("train")
    val_idx = _val_subset(len(ctx.store.fold("val")), cfg.val_size, cfg.seed)
    while state.status == "running" and state.epoch < cfg.ep:
        t0 = time.perf_counter()
        epoch = state.epoch + 1
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        losses = _train_epoch(ctx, optimizer, scaler, train_fold, epoch)
        train_seconds = time.perf_counter() - t0
        diverged = losses is None or not _weights_finite(model)
        val = 0.0 if diverged else _validate(ctx, val_idx, epoch)
        state.epoch = epoch
        if diverged:
            state.status = "diverged"
        elif val > state.best_val:
            state.best_val, state.best_epoch, state.bad_epochs = val, epoch, 0
            ckpt.save(ckpt_dir / ckpt.BEST, {"model": model.state_dict(), "loss": loss_fn.state_dict(),
                                             "epoch": epoch, "val_mAP": val, "config": cfg.to_dict()})
        else:
            state.bad_epochs += 1
            if state.bad_epochs >= cfg.pt:
                state.status = "early_stopped"
        if state.status == "running" and epoch == cfg.ep:
            state.status = "finished"
        seconds = time.perf_counter() - t0
        state.train_seconds += seconds
        metrics = _epoch_metrics(ctx, epoch, losses, val, state, seconds)
        metrics["time/train_images_per_s"] = len(train_fold) / max(train_seconds, 1e-9)
        state.history.append(metrics)
        ckpt.save(ckpt_dir / ckpt.LATEST, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "loss": loss_fn.state_dict(), "scaler": scaler.state_dict(),
            "state": dataclasses.asdict(state), "rng": ckpt.rng_state(), "config": cfg.to_dict()})
        if report is not None:
            report(metrics, ckpt_dir)
    return TrainResult(state.status, state.best_epoch, state.epoch, max(state.best_val, 0.0),
                       state.history, state.train_seconds)


#: Batches between host syncs that check the running loss for NaN/inf.
FINITE_CHECK_EVERY = 32


def _train_epoch(ctx: TrialContext, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 fold: Any, epoch: int) -> dict[str, float] | None:
    """One pass over the train fold; mean loss parts, or None if a loss was not finite.

    Loss sums stay on the device and are checked every ``FINITE_CHECK_EVERY``
    batches: a per-batch ``.item()`` would stall a GPU on every step. A
    non-finite step in between poisons the weights, which the epoch-end
    weight check reports as divergence all the same.
    """
    ctx.model.train()
    ctx.loss_fn.train()
    drop_last = len(fold) >= 2 * ctx.cfg.bs  # a trailing batch of 1 has no pairs
    names: list[str] = []
    sums: torch.Tensor | None = None
    batches = 0
    for x, y, _ in ctx.loader(fold, shuffle=True, epoch=epoch, drop_last=drop_last):
        if y.shape[0] < 2:
            continue
        with ctx.autocast():
            u = ctx.model(x)
        out = ctx.loss_fn(u.float(), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out.total).backward()
        scaler.step(optimizer)
        scaler.update()
        step = torch.stack([out.total.detach(), *(v.detach() for v in out.parts.values())])
        if sums is None:
            names, sums = ["loss", *out.parts], step.float()
        else:
            sums += step
        batches += 1
        if batches % FINITE_CHECK_EVERY == 0 and not bool(torch.isfinite(sums).all()):
            return None
    if sums is None:
        return {}
    if not bool(torch.isfinite(sums).all()):
        return None
    return dict(zip(names, (sums / batches).tolist()))


def _val_subset(n: int, size: int, seed: int) -> np.ndarray:
    """The fixed random subset of val items used every epoch (h2q protocol)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _validate(ctx: TrialContext, idx: np.ndarray, epoch: int) -> float:
    from biohash.metrics import validation_map

    fold = ctx.store.fold("val")
    feats = forward_features(ctx, fold, indices=idx)
    labels = np.asarray(fold.labels[idx])
    return float(validation_map(feats, labels, n_items=len(idx), query_fraction=0.1,
                                repeats=ctx.cfg.val_repeats, seed=ctx.cfg.seed))


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _epoch_metrics(ctx: TrialContext, epoch: int, losses: dict[str, float] | None, val: float,
                   state: TrainState, seconds: float) -> dict[str, Any]:
    metrics: dict[str, Any] = {"phase": "train", "epoch": epoch, "trial_id": ctx.cfg.trial_id}
    for name, value in (losses or {"loss": math.nan}).items():
        metrics[f"train/{name}"] = value
    metrics.update({"val_mAP": val, "best_val_mAP": max(state.best_val, 0.0),
                    "time/epoch_s": seconds})
    if ctx.device.type == "cuda":
        metrics["hw/gpu_max_mem_gib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30
    if ctx.is_bio:
        from biohash.bio import alignment_angles

        metrics.update(alignment_angles(ctx.model))
    return metrics


def _restore(src: Path, ckpt_dir: Path, ctx: TrialContext, optimizer: torch.optim.Optimizer,
             scaler: torch.amp.GradScaler) -> TrainState:
    payload = ckpt.load(src / ckpt.LATEST, map_location=ctx.device)
    ctx.model.load_state_dict(payload["model"])
    ctx.loss_fn.load_state_dict(payload["loss"])
    optimizer.load_state_dict(payload["optimizer"])
    scaler.load_state_dict(payload["scaler"])
    ckpt.set_rng_state(payload["rng"])
    if src.resolve() != ckpt_dir.resolve():  # resuming from a Tune checkpoint copy
        for name in (ckpt.LATEST, ckpt.BEST):
            if (src / name).exists():
                ckpt.copy(src / name, ckpt_dir / name)
    return TrainState(**payload["state"])
