"""Training-step throughput: bio-vgg16 (fa) vs torchvision vgg16 (bp), same run.

A step = forward, DPSH loss, backward, Adam step, through biohash's own
``create_model`` / ``create_loss``. Modes are interleaved over repetitions
so machine noise hits both alike; the ratio of medians is printed.
CPU: 32x32 fp32. GPU (when available): 224x224 under bf16 autocast,
channels_last. Target: bio/bp images/s >= 0.87.

    python benchmarks/train_step.py [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from biohash.losses import create_loss
from biohash.models import create_model


def _setup(arch: str, device: torch.device, nbits: int = 32):
    model = create_model(arch, nbits=nbits, mode="fa", weights="none", seed=0).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loss = create_loss("DPSH", nbits=nbits, num_classes=10, penalty=0.01).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    return model, loss, opt


def _step(model, loss_fn, opt, x, y, amp: bool) -> None:
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        u = model(x)
    out = loss_fn(u.float(), y)
    opt.zero_grad(set_to_none=True)
    out.total.backward()
    opt.step()


def bench(device: torch.device, size: int, batch: int, reps: int, amp: bool) -> dict[str, float]:
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.nn.functional.one_hot(torch.arange(batch, device=device) % 10, 10).float()
    setups = {name: _setup(name, device) for name in ("vgg16", "bio-vgg16")}
    times: dict[str, list[float]] = {name: [] for name in setups}
    for name, (m, l, o) in setups.items():  # warm-up (allocator, cudnn autotune)
        for _ in range(2):
            _step(m, l, o, x, y, amp)
    for _ in range(reps):
        for name, (m, l, o) in setups.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            _step(m, l, o, x, y, amp)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: batch / statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    runs = [("cpu", torch.device("cpu"), 32, 32, 6 if args.quick else 20, False)]
    if torch.cuda.is_available():
        runs.append(("cuda bf16", torch.device("cuda"), 224, 64, 10 if args.quick else 30, True))
    print(f"{'device':<10} {'input':>7} {'bp img/s':>10} {'fa img/s':>10} {'fa/bp':>7}  target >= 0.87")
    for label, device, size, batch, reps, amp in runs:
        ips = bench(device, size, batch, reps, amp)
        ratio = ips["bio-vgg16"] / ips["vgg16"]
        print(f"{label:<10} {size:>4}x{size:<3} {ips['vgg16']:>10.1f} {ips['bio-vgg16']:>10.1f} "
              f"{ratio:>7.3f}  {'OK' if ratio >= 0.87 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
