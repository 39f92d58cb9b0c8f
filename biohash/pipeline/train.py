"""Phase 1: train one config, with per-epoch validation mAP and early stopping.

The protocol is h2q's (``src/models/*/lightning_module.py`` and ``train.py``
of the public h2q code): param groups backbone lr / hash layer 10x lr /
HyP2 proxies 1e-3, ``-wd`` on all; StepLR only with SGD (DSH, HyP2); every
batch trained, the last partial one included; fp32 unless ``-precision``
opts in to autocast; each epoch the whole val fold hashed and scored on 5
random query/retrieval draws (``biohash.metrics.validation``); Lightning's
``EarlyStopping(min_delta=0.05)``; ``best.pt`` = the highest val mAP.

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
from biohash.contract import PHASE, TRAIN, TUNE_METRIC, EpochReport
from biohash.pipeline import checkpoint as ckpt
from biohash.pipeline.runtime import Runtime, TrialContext, forward_features, open_context

__all__ = ["TrainState", "TrainResult", "train", "ReportFn", "build_optimizer", "build_scheduler",
           "early_stopping_step", "validation_radius"]

log = logging.getLogger(__name__)

#: ``report(metrics, checkpoint_dir)``: called once per epoch.
ReportFn = Callable[[dict[str, Any], Path], None]

#: Learning rate of the loss's own parameters (HyP2 proxies), as in h2q.
LOSS_PARAM_LR = 1e-3
#: The hash layer learns this many times faster than the backbone (h2q).
HEAD_LR_FACTOR = 10.0
#: h2q's per-epoch StepLR, used only with ``-optim sgd``: loss -> (step_size, gamma).
STEP_LR: dict[str, tuple[int, float]] = {"DSH": (20, 0.4), "HyP2": (10, 0.5)}
#: Losses whose validation mAP is taken within this Hamming radius (h2q's
#: ``val_h``); every other loss is validated over the full ranking.
VAL_RADIUS: dict[str, int] = {"DCH": 2, "WGLHH": 2}
#: Share of each validation draw that becomes queries (h2q: coin <= 0.1).
VAL_QUERY_FRACTION = 0.1
#: h2q's ``EarlyStopping(monitor="val_mAP", mode="max", min_delta=0.05)``.
EARLY_STOP_MIN_DELTA = 0.05


@dataclass
class TrainState:
    """Everything about progress that a resumed run must continue from.

    Two notions of "best", as in h2q's two Lightning callbacks:
    ``best_val``/``best_epoch`` is the highest val mAP so far (any increase
    counts; that epoch is ``best.pt``, used by predict), while ``stop_best``
    and ``bad_epochs`` are EarlyStopping's counted best and wait count (see
    ``early_stopping_step``).
    """

    epoch: int = 0
    best_val: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    status: str = "running"  # running | finished | early_stopped | diverged
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    stop_best: float | None = None


@dataclass(frozen=True)
class TrainResult:
    status: str
    best_epoch: int
    epochs_run: int
    best_val: float
    history: list[dict[str, Any]]
    train_seconds: float


def early_stopping_step(value: float, best: float | None, wait: int, *, patience: int,
                        min_delta: float = EARLY_STOP_MIN_DELTA) -> tuple[float | None, int, bool]:
    """One epoch of Lightning's ``EarlyStopping(mode="max")``: ``(best, wait, stop)``.

    An epoch improves only if ``value - min_delta > best`` (the first epoch,
    ``best is None``, always does); an improvement resets ``wait`` and
    becomes the new ``best``; otherwise ``wait`` grows and training stops
    once ``wait >= patience``. Note that ``best`` is the last *counted*
    value, not the highest seen: three epochs of +0.03 each never count.
    """
    if best is None or value - min_delta > best:
        return value, 0, False
    return best, wait + 1, wait + 1 >= patience


def validation_radius(loss: str) -> int | None:
    """Hamming radius of the per-epoch val mAP for ``loss`` (None = full ranking)."""
    return VAL_RADIUS.get(loss)


def build_optimizer(cfg: TrialConfig, model: nn.Module, loss_fn: nn.Module) -> torch.optim.Optimizer:
    """Backbone at ``lr``, hash head at 10x, loss parameters (HyP2 proxies) at 1e-3.

    ``-wd`` applies to every group, the proxies included, as in h2q (its
    optimiser took one ``weight_decay`` for all groups).
    """
    head = [p for p in model.head.parameters() if p.requires_grad]
    body = [p for p in model.backbone.parameters() if p.requires_grad]
    groups = [g for g in (
        {"params": body, "lr": cfg.lr},
        {"params": head, "lr": cfg.lr * HEAD_LR_FACTOR},
        {"params": list(loss_fn.parameters()), "lr": LOSS_PARAM_LR},
    ) if g["params"]]
    if cfg.optim == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.wd)
    if cfg.optim == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, weight_decay=cfg.wd, momentum=0.9)
    return torch.optim.RMSprop(groups, lr=cfg.lr, weight_decay=cfg.wd)


def build_scheduler(cfg: TrialConfig, optimizer: torch.optim.Optimizer
                    ) -> torch.optim.lr_scheduler.StepLR | None:
    """h2q's StepLR (stepped once per epoch), only for ``-optim sgd`` with DSH or HyP2."""
    if cfg.optim != "sgd" or cfg.loss not in STEP_LR:
        return None
    step_size, gamma = STEP_LR[cfg.loss]
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)


def train(cfg: TrialConfig, run_dir: str | Path, *, runtime: Runtime | None = None,
          report: ReportFn | None = None, resume: str | Path | None = None,
          ctx: TrialContext | None = None) -> TrainResult:
    """Train ``cfg`` into ``run_dir``; resume from a checkpoint folder if given.

    ``ctx``: an already opened context of ``cfg`` (``run_trial`` shares one
    with predict so data and model are built once per trial).

    Writes ``run_dir/checkpoints/{latest,best}.pt``: ``best.pt`` is the epoch
    with the highest val mAP. Stops early as h2q's Lightning EarlyStopping
    (``cfg.pt`` epochs without a gain of more than 0.05, see
    ``early_stopping_step``), or at the first non-finite loss or weights
    (status ``diverged``, val mAP 0).
    """
    run_dir = Path(run_dir)
    ctx = ctx or open_context(cfg, runtime or Runtime())
    model, loss_fn = ctx.model, ctx.loss_fn
    optimizer = build_optimizer(cfg, model, loss_fn)
    scheduler = build_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=ctx.amp_dtype == torch.float16)
    ckpt_dir = run_dir / ckpt.CHECKPOINT_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = TrainState()
    if resume is not None:
        state = _restore(Path(resume), ckpt_dir, ctx, optimizer, scheduler, scaler)
        log.info("resumed %s at epoch %d", run_dir.name, state.epoch)

    train_fold = ctx.store.fold("train")
    while state.status == "running" and state.epoch < cfg.ep:
        t0 = time.perf_counter()
        epoch = state.epoch + 1
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        losses = _train_epoch(ctx, optimizer, scaler, train_fold, epoch)
        train_seconds = time.perf_counter() - t0
        diverged = losses is None or not _weights_finite(model)
        val = 0.0 if diverged else _validate(ctx, epoch)
        state.epoch = epoch
        _update_state(state, cfg, val, diverged)
        if state.best_epoch == epoch:
            ckpt.save(ckpt_dir / ckpt.BEST, {"model": model.state_dict(), "loss": loss_fn.state_dict(),
                                             "epoch": epoch, "val_mAP": val, "config": cfg.to_dict()})
        if scheduler is not None:
            scheduler.step()
        seconds = time.perf_counter() - t0
        state.train_seconds += seconds
        metrics = _epoch_metrics(ctx, epoch, losses, val, state, seconds)
        metrics["time/train_images_per_s"] = len(train_fold) / max(train_seconds, 1e-9)
        state.history.append(metrics)
        ckpt.save(ckpt_dir / ckpt.LATEST, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": None if scheduler is None else scheduler.state_dict(),
            "loss": loss_fn.state_dict(), "scaler": scaler.state_dict(),
            "state": dataclasses.asdict(state), "rng": ckpt.rng_state(), "config": cfg.to_dict()})
        if report is not None:
            report(metrics, ckpt_dir)
    return TrainResult(state.status, state.best_epoch, state.epoch, max(state.best_val, 0.0),
                       state.history, state.train_seconds)


def _update_state(state: TrainState, cfg: TrialConfig, val: float, diverged: bool) -> None:
    """Fold one finished epoch's val mAP into ``state`` (best checkpoint, early stop, status)."""
    if diverged:
        # h2q trained on with NaN weights (val 0) until patience ran out; no
        # later epoch could become best, so stopping now changes no result.
        state.status = "diverged"
        return
    if val > state.best_val:  # strict, as Lightning's ModelCheckpoint(mode="max")
        state.best_val, state.best_epoch = val, state.epoch
    state.stop_best, state.bad_epochs, stop = early_stopping_step(
        val, state.stop_best, state.bad_epochs, patience=cfg.pt)
    if stop:
        state.status = "early_stopped"
    elif state.epoch == cfg.ep:
        state.status = "finished"


#: Batches between host syncs that check the running loss for NaN/inf.
FINITE_CHECK_EVERY = 32


def _train_epoch(ctx: TrialContext, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 fold: Any, epoch: int) -> dict[str, float] | None:
    """One pass over the train fold; mean loss parts, or None if a loss was not finite.

    Every batch counts, the last partial one included (h2q's DataLoader had
    no ``drop_last``; a batch of one item is a defined 1 x 1 pair matrix).
    Loss sums stay on the device and are checked every ``FINITE_CHECK_EVERY``
    batches: a per-batch ``.item()`` would stall a GPU on every step. A
    non-finite step in between poisons the weights, which the epoch-end
    weight check reports as divergence all the same.
    """
    ctx.model.train()
    ctx.loss_fn.train()
    names: list[str] = []
    sums: torch.Tensor | None = None
    batches = 0
    for x, y, _ in ctx.loader(fold, shuffle=True, epoch=epoch):
        with ctx.autocast():
            u = ctx.model(x)  # (B, nbits)
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
    return {**dict(zip(names, (sums / batches).tolist())), "steps": float(batches)}


def _validate(ctx: TrialContext, epoch: int) -> float:
    """h2q's per-epoch val mAP: the whole val fold hashed (fp32), fresh draws per epoch.

    The draws come from ``default_rng([seed, epoch])``: new every epoch like
    h2q's global-RNG draws, yet identical after a resume.
    """
    from biohash.metrics.validation import validation_map

    cfg = ctx.cfg
    fold = ctx.store.fold("val")
    feats = forward_features(ctx, fold)  # (N_val, nbits), raw outputs
    return validation_map(feats, np.asarray(fold.labels), n_items=cfg.val_size,
                          query_fraction=VAL_QUERY_FRACTION, repeats=cfg.val_repeats,
                          radius=validation_radius(cfg.loss), seed=(cfg.seed, epoch))


def _weights_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _epoch_metrics(ctx: TrialContext, epoch: int, losses: dict[str, float] | None, val: float,
                   state: TrainState, seconds: float) -> EpochReport:
    """The per-epoch report (``biohash.contract.EpochReport``; per-layer ``align/*``
    angles of bio models come on top, named by layer)."""
    metrics: dict[str, Any] = {PHASE: TRAIN, "epoch": epoch, "trial_id": ctx.cfg.trial_id}
    losses = dict(losses or {"loss": math.nan})
    steps = losses.pop("steps", None)
    for name, value in losses.items():
        metrics[f"train/{name}"] = value
    if steps is not None:
        metrics["train/steps"] = int(steps)
    metrics.update({TUNE_METRIC: val, "best_val_mAP": max(state.best_val, 0.0),
                    "time/epoch_s": seconds})
    if epoch == 1:
        # The p of DCH/WGLHH/HashNet's pair weights; recorded once per trial.
        metrics["data/similar_probability"] = float(ctx.store.similar_probability)
    if ctx.device.type == "cuda":
        metrics["hw/gpu_max_mem_gib"] = torch.cuda.max_memory_allocated(ctx.device) / 2**30
    if ctx.is_bio:
        from biohash.bio import alignment_angles

        metrics.update(alignment_angles(ctx.model))
    return metrics


def _restore(src: Path, ckpt_dir: Path, ctx: TrialContext, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.StepLR | None,
             scaler: torch.amp.GradScaler) -> TrainState:
    payload = ckpt.load(src / ckpt.LATEST, map_location=ctx.device)
    ctx.model.load_state_dict(payload["model"])
    ctx.loss_fn.load_state_dict(payload["loss"])
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload.get("scheduler") is not None:
        scheduler.load_state_dict(payload["scheduler"])
    scaler.load_state_dict(payload["scaler"])
    ckpt.set_rng_state(payload["rng"])
    if src.resolve() != ckpt_dir.resolve():  # resuming from a Tune checkpoint copy
        for name in (ckpt.LATEST, ckpt.BEST):
            if (src / name).exists():
                ckpt.copy(src / name, ckpt_dir / name)
    return TrainState(**payload["state"])
