"""h2q's training protocol: validation draws, early stopping, optimiser, scheduler, batches, precision."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from biohash.config import TrialConfig
from biohash.metrics import retrieval_map
from biohash.metrics.validation import validation_map, validation_split
from biohash.pipeline import Runtime
from biohash.pipeline import checkpoint as ckpt
from biohash.pipeline.runtime import forward_features, open_context
from biohash.pipeline.train import (
    EARLY_STOP_MIN_DELTA,
    _validate,
    build_optimizer,
    build_scheduler,
    early_stopping_step,
    train,
    validation_radius,
)


# ------------------------------------------------------------ early stopping
def _stop_epoch(values: list[float], patience: int) -> int | None:
    best, wait = None, 0
    for epoch, value in enumerate(values, start=1):
        best, wait, stop = early_stopping_step(value, best, wait, patience=patience)
        if stop:
            return epoch
    return None


def test_early_stopping_needs_a_gain_above_min_delta_over_the_counted_best():
    assert EARLY_STOP_MIN_DELTA == 0.05
    # +0.02 per epoch does not count: stops after `patience` epochs, although
    # every epoch is the highest val mAP so far.
    assert _stop_epoch([0.30, 0.32, 0.34], patience=2) == 3
    # gains are measured from the last counted value (0.30), not the highest (0.34)
    assert _stop_epoch([0.30, 0.34, 0.36], patience=2) is None
    # 0.39 beats the counted best 0.30 by 0.09: the wait restarts there.
    assert _stop_epoch([0.30, 0.34, 0.39, 0.40, 0.41, 0.42], patience=3) == 6
    assert _stop_epoch([0.30, 0.34, 0.39, 0.40, 0.41, 0.42], patience=4) is None
    # patience 1: the first epoch without such a gain stops training
    assert _stop_epoch([0.5, 0.2], patience=1) == 2
    # the first epoch always counts, even at 0
    assert early_stopping_step(0.0, None, 0, patience=1) == (0.0, 0, False)
    assert early_stopping_step(0.36, 0.30, 2, patience=3) == (0.36, 0, False)
    assert early_stopping_step(0.34, 0.30, 2, patience=3) == (0.30, 3, True)


# ---------------------------------------------------------------- validation
def _toy(n: int = 300, nbits: int = 12, classes: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.eye(classes, dtype=np.uint8)[rng.integers(0, classes, n)]
    centres = rng.standard_normal((classes, nbits))
    feats = (labels @ centres + 0.8 * rng.standard_normal((n, nbits))).astype(np.float32)
    return feats, labels


def test_validation_draws_follow_h2q_coins_and_are_seeded():
    feats, labels = _toy()
    # independent re-derivation of one h2q draw: 200 items, a coin each, <= 0.1 -> query
    rng = np.random.default_rng([7, 3])
    items = rng.choice(300, size=200, replace=False)
    coins = rng.random(200)
    q, db = items[coins <= 0.1], items[coins > 0.1]
    for radius in (None, 2):
        want = retrieval_map(feats[q], feats[db], labels[q], labels[db], radius=radius)
        got = validation_map(feats, labels, n_items=200, repeats=1, radius=radius, seed=(7, 3))
        assert got == pytest.approx(want)
    a = validation_map(feats, labels, n_items=200, seed=(7, 3))
    assert a == validation_map(feats, labels, n_items=200, seed=(7, 3))
    assert a != validation_map(feats, labels, n_items=200, seed=(7, 4))  # new draws per epoch
    # more items than the fold: all of them, in a random order
    split = validation_split(np.random.default_rng(0), 30, 1000, 0.1)
    assert sorted(np.concatenate(split).tolist()) == list(range(30))


def test_a_draw_without_queries_is_redrawn_and_without_retrieval_scores_zero():
    class Coins:  # a generator whose first coins make no query, then one query
        def __init__(self, rounds):
            self.rounds = list(rounds)

        def choice(self, n, size, replace):
            return np.arange(size)

        def random(self, n):
            return np.asarray(self.rounds.pop(0))

    q, db = validation_split(Coins([[0.5, 0.9, 0.3], [0.5, 0.05, 0.3]]), 3, 3, 0.1)
    assert q.tolist() == [1] and db.tolist() == [0, 2]
    feats, labels = _toy(n=2)
    # with 2 items and query_fraction 0.99 most draws leave no retrieval item
    assert validation_map(feats, labels, n_items=2, query_fraction=0.99, repeats=1, seed=0) == 0.0


def test_radius_two_only_for_dch_and_wglhh():
    assert validation_radius("DCH") == validation_radius("WGLHH") == 2
    for loss in ("DSH", "DPSH", "DHN", "HashNet", "HyP2", "CEL"):
        assert validation_radius(loss) is None


def test_train_validates_the_whole_val_fold_with_the_loss_metric(digits_root, tiny_cfg):
    ctx = open_context(tiny_cfg.replace(loss="DCH", arch="cnn-small"),
                       Runtime(data_root=str(digits_root)))
    fold = ctx.store.fold("val")
    feats, labels = forward_features(ctx, fold), np.asarray(fold.labels)
    assert len(feats) == len(fold) == 180
    kw = dict(n_items=ctx.cfg.val_size, repeats=ctx.cfg.val_repeats)
    at_h2 = validation_map(feats, labels, radius=2, seed=(0, 3), **kw)
    full = validation_map(feats, labels, seed=(0, 3), **kw)
    assert at_h2 != full and _validate(ctx, 3) == pytest.approx(at_h2)
    assert _validate(ctx, 3) == _validate(ctx, 3) and _validate(ctx, 4) != _validate(ctx, 3)


# ------------------------------------------------------- optimiser, scheduler
def test_weight_decay_on_every_group_and_h2q_learning_rates(digits_root, tiny_cfg):
    from biohash.losses import create_loss

    cfg = tiny_cfg.replace(loss="HyP2", wd=5e-4, lr=1e-5, arch="cnn-small")
    model = open_context(cfg, Runtime(data_root=str(digits_root))).model
    loss = create_loss("HyP2", nbits=16, num_classes=10, penalty=0.5, similar_probability=0.1)
    for optim in ("adam", "sgd", "rmsprop"):
        groups = build_optimizer(cfg.replace(optim=optim), model, loss).param_groups
        assert [g["lr"] for g in groups] == [1e-5, pytest.approx(1e-4), 1e-3]
        assert [g["weight_decay"] for g in groups] == [5e-4] * 3
    assert groups[2]["params"] == list(loss.parameters())


@pytest.mark.parametrize("loss, optim, want", [
    ("DSH", "sgd", (20, 0.4)), ("HyP2", "sgd", (10, 0.5)), ("DSH", "adam", None),
    ("HyP2", "rmsprop", None), ("DPSH", "sgd", None), ("DCH", "sgd", None),
])
def test_step_lr_only_for_sgd_with_dsh_or_hyp2(loss, optim, want):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = build_scheduler(TrialConfig(loss=loss, optim=optim), opt)
    if want is None:
        assert sched is None
        return
    assert (sched.step_size, sched.gamma) == want
    for _ in range(want[0]):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(want[1])


class _Crash(Exception):
    pass


def _crash_after_first(metrics, _ckpt):
    if metrics["epoch"] == 1:
        raise _Crash()


@pytest.mark.slow
def test_scheduler_state_is_checkpointed_and_resumed(tmp_path, digits_root, tiny_cfg, monkeypatch):
    from biohash.pipeline.train import STEP_LR

    monkeypatch.setitem(STEP_LR, "DSH", (1, 0.4))  # decay inside 2 epochs
    cfg = tiny_cfg.replace(loss="DSH", optim="sgd", ep=2, arch="cnn-small")
    runtime = Runtime(data_root=str(digits_root))
    whole = train(cfg, tmp_path / "a", runtime=runtime)
    latest = ckpt.load(tmp_path / "a" / "checkpoints" / "latest.pt")
    assert latest["scheduler"]["last_epoch"] == 2
    assert latest["optimizer"]["param_groups"][0]["lr"] == pytest.approx(cfg.lr * 0.4**2)
    with pytest.raises(_Crash):
        train(cfg, tmp_path / "b", runtime=runtime, report=_crash_after_first)
    resumed = train(cfg, tmp_path / "b", runtime=runtime, resume=tmp_path / "b" / "checkpoints")
    strip = lambda h: [{k: v for k, v in m.items() if not k.startswith("time/")} for m in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)


# ------------------------------------------------------ batches, precision
def test_last_partial_batch_and_batches_of_one_are_trained(tmp_path, digits_root, tiny_cfg):
    # DIGITS train fold: 900 items; bs 899 leaves a last batch of exactly one item
    cfg = tiny_cfg.replace(bs=899, ep=1, arch="cnn-small")
    result = train(cfg, tmp_path / "run", runtime=Runtime(data_root=str(digits_root)))
    first = result.history[0]
    assert first["train/steps"] == math.ceil(900 / 899) == 2 and math.isfinite(first["train/loss"])
    store = open_context(cfg, Runtime(data_root=str(digits_root))).store
    assert first["data/similar_probability"] == pytest.approx(store.similar_probability)
    assert 0.0 < first["data/similar_probability"] < 1.0


def test_fp32_by_default_and_features_always_fp32(digits_root, tiny_cfg):
    runtime = Runtime(data_root=str(digits_root))
    fp32 = open_context(tiny_cfg.replace(arch="cnn-small"), runtime)
    assert TrialConfig().precision == "fp32" and fp32.amp_dtype is None
    bf16 = open_context(tiny_cfg.replace(arch="cnn-small", precision="bf16"), runtime)
    assert bf16.amp_dtype == torch.bfloat16
    bf16.model.load_state_dict(fp32.model.state_dict())
    fold = fp32.store.fold("val")
    x, _, _ = next(iter(bf16.loader(fold, shuffle=False)))
    with torch.no_grad(), bf16.autocast():
        assert bf16.model.eval()(x).dtype == torch.bfloat16  # training would autocast
    want = forward_features(fp32, fold)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # not even a caller's autocast lowers it
        got = forward_features(bf16, fold)
    assert got.dtype == np.float32 and np.array_equal(got, want)
