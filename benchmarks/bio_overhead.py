"""Cost of each learning rule relative to backprop: step time and peak memory.

    .venv/bin/python benchmarks/bio_overhead.py [--quick] [--reps N] [--workload NAME]

One process. For each workload every mode gets its own converted copy of the
same model; steps (forward + backward + SGD step) are timed with the modes
interleaved, in a rotated order each round, so machine noise hits all modes
alike. Each round gives a ratio per mode (its step / bp's step of the same
round); the table shows the median ratio over at least ``MIN_ROUNDS`` rounds
and, beside it, the min / max of those ratios: a wide spread means the
machine was busy and the median is the figure to trust, a spread that
straddles a target means "not decided", run again. Workloads: a tiny DIGITS-like
CNN (1x8x8) and torchvision VGG16 (weights=None) at 32x32, batch 16, on CPU;
VGG16 at 224x224 under bf16 autocast when CUDA is available.

Memory, measured per mode after timing, as the peak of one training step
above what was resident before it (gradients freed): on CUDA
``torch.cuda.max_memory_allocated``; on CPU the process peak RSS (VmHWM,
reset through /proc/self/clear_refs), with glibc's mmap threshold pinned
(mallopt, only for this phase: it slows allocation) so freed tensors go back
to the OS and RSS follows live tensors. ``resident``
is parameters + buffers (fa/frsf/dfa keep their B there). Wall time on a
shared machine is noisy; the CPU-time column (process_time) is less so.

Targets: fa, usf, frsf <= 1.15x bp (CPU) / 1.10x (GPU); brsf <= 1.30x;
step peak memory <= 1.10x bp.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from biohash.bio import MODES, convert

TIME_TARGET = {"fa": 1.15, "usf": 1.15, "frsf": 1.15, "brsf": 1.30}
GPU_TIME_TARGET = {"fa": 1.10, "usf": 1.10, "frsf": 1.10, "brsf": 1.30}
MEM_TARGET = 1.10
#: Fewest interleaved rounds per workload: fewer gives no usable median on a shared machine.
MIN_ROUNDS = 11
#: Below this, a step's RSS peak is allocator/page noise: no memory verdict.
MIN_MEASURABLE_MB = 16.0


@dataclass
class Workload:
    name: str
    build: Callable[[], nn.Module]
    batch: int
    size: int
    channels: int
    classes: int
    device: str = "cpu"
    amp: torch.dtype | None = None


def digits_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (32, 4, 4)
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))


def vgg16() -> nn.Module:
    from torchvision.models import vgg16 as tv_vgg16

    return tv_vgg16(weights=None)


def _pin_mmap_threshold() -> None:
    """Large allocations come from mmap and return to the OS when freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD
        libc.malloc_trim(0)
    except OSError:  # not glibc: RSS is then an upper bound
        pass


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


class Trial:
    """One mode's model, optimizer and fixed batch."""

    def __init__(self, mode: str, base: nn.Module, wl: Workload) -> None:
        self.mode, self.wl = mode, wl
        self.model = copy.deepcopy(base)
        if mode != "bp":
            convert(self.model, mode, seed=0)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(wl.batch, wl.channels, wl.size, wl.size, generator=g).to(wl.device)
        self.y = torch.randint(0, wl.classes, (wl.batch,), generator=g).to(wl.device)
        self.loss = nn.CrossEntropyLoss()

    def step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.wl.device, dtype=self.wl.amp or torch.float32,
                            enabled=self.wl.amp is not None):
            loss = self.loss(self.model(self.x).float(), self.y)
        loss.backward()
        self.opt.step()

    def timed_step(self) -> tuple[float, float]:
        cuda = self.wl.device == "cuda"
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        self.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - wall, time.process_time() - cpu

    def resident_mb(self) -> float:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20

    def step_peak_mb(self) -> float:
        """Peak memory of one step above what was resident before it."""
        self.opt.zero_grad(set_to_none=True)
        gc.collect()
        if self.wl.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            self.step()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _rss_mb("VmRSS")
        self.step()
        return _rss_mb("VmHWM") - base


def run(wl: Workload, reps: int, warmup: int) -> list[dict]:
    torch.manual_seed(0)
    base = wl.build().to(wl.device)
    trials = [Trial(m, base, wl) for m in MODES.names() if m != "bp"]
    trials.insert(0, Trial("bp", base, wl))
    del base
    for t in trials:
        for _ in range(warmup):
            t.step()
    wall = {t.mode: [] for t in trials}
    cpu = {t.mode: [] for t in trials}
    for r in range(reps):
        for t in trials[r % len(trials):] + trials[:r % len(trials)]:
            w, c = t.timed_step()
            wall[t.mode].append(w)
            cpu[t.mode].append(c)
    rows = []
    _pin_mmap_threshold()
    for t in trials:
        peak = min(t.step_peak_mb() for _ in range(2))  # min: other processes add noise
        ratios = [w / b for w, b in zip(wall[t.mode], wall["bp"])]  # per round, paired
        rows.append(dict(mode=t.mode, wall=statistics.median(wall[t.mode]),
                         ratio=statistics.median(ratios), lo=min(ratios), hi=max(ratios),
                         cpu=statistics.median(c / b for c, b in zip(cpu[t.mode], cpu["bp"])),
                         peak=peak, resident=t.resident_mb()))
    for t in trials:  # free this workload's models before the next one
        del t.model, t.opt
    return rows


def report(wl: Workload, rows: list[dict]) -> list[str]:
    bp = rows[0]
    targets = GPU_TIME_TARGET if wl.device == "cuda" else TIME_TARGET
    print(f"\n== {wl.name}: batch {wl.batch}, {wl.size}x{wl.size}, {wl.device}"
          f"{', autocast ' + str(wl.amp).removeprefix('torch.') if wl.amp else ''} ==")
    print(f"{'mode':6s} {'step ms':>9s} {'time/bp':>8s} {'(min-max)':>13s} {'cpu/bp':>7s} "
          f"{'peak MB':>9s} {'peak/bp':>8s} {'resident MB':>12s}")
    misses = []
    for r in rows:
        tr, cr = r["ratio"], r["cpu"]
        mr = r["peak"] / bp["peak"] if bp["peak"] > 0 else float("nan")
        spread = f"({r['lo']:.2f}-{r['hi']:.2f})"
        print(f"{r['mode']:6s} {r['wall'] * 1e3:9.1f} {tr:8.3f} {spread:>13s} {cr:7.3f} "
              f"{r['peak']:9.1f} {mr:8.3f} {r['resident']:12.1f}")
        if r["mode"] in targets and tr > targets[r["mode"]]:
            misses.append(f"{wl.name} {r['mode']}: time {tr:.2f}x > {targets[r['mode']]}x")
        if r["mode"] != "bp" and mr > MEM_TARGET and bp["peak"] >= MIN_MEASURABLE_MB:
            misses.append(f"{wl.name} {r['mode']}: peak memory {mr:.2f}x > {MEM_TARGET}x")
    if wl.device == "cpu" and bp["peak"] < MIN_MEASURABLE_MB:
        print(f"(peak below {MIN_MEASURABLE_MB:.0f} MB: RSS noise, memory not judged)")
    return misses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{MIN_ROUNDS} rounds, fewer DIGITS steps per round")
    parser.add_argument("--reps", type=int, default=None,
                        help=f"timed rounds per workload (at least {MIN_ROUNDS}; default 15)")
    parser.add_argument("--workload", action="append", default=None,
                        choices=["digits-cnn", "vgg16@32", "vgg16@224"],
                        help="run only this workload (repeatable; default: all available)")
    args = parser.parse_args(argv)
    if args.reps is not None and args.reps < MIN_ROUNDS:
        parser.error(f"--reps {args.reps}: at least {MIN_ROUNDS} rounds give a usable median")
    reps = args.reps or (MIN_ROUNDS if args.quick else 15)
    workloads = [
        Workload("digits-cnn", digits_cnn, batch=64, size=8, channels=1, classes=10),
        Workload("vgg16@32", vgg16, batch=16, size=32, channels=3, classes=1000),
    ]
    if torch.cuda.is_available():  # after the CPU runs: mallopt then applies to all
        workloads.append(Workload("vgg16@224", vgg16, batch=32, size=224, channels=3,
                                  classes=1000, device="cuda", amp=torch.bfloat16))
    if args.workload:
        workloads = [wl for wl in workloads if wl.name in args.workload]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"{reps} interleaved rounds; time/bp = median of per-round ratios (min-max); "
          f"memory = peak of one step above resident", flush=True)
    misses = []
    for wl in workloads:
        digits = wl.name.startswith("digits")
        rounds = reps * ((5 if args.quick else 25) if digits else 1)  # DIGITS steps are ~ms
        misses += report(wl, run(wl, rounds, warmup=5 if digits else 1))
        sys.stdout.flush()
    print("\ntargets: " + ("all met" if not misses else "; ".join(misses)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
