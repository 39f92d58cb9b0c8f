"""Loader benchmark: processed store vs the old per-image path, and peak memory.

1. Throughput (same process, same images): the old h2q path - open PNG,
   Resize(256), CenterCrop(224), ToTensor, Normalize, stack - versus
   ``BatchLoader`` over the store made from the same images (import_h2q),
   both yielding normalised 224x224 float32 batches on the CPU.
2. Peak RSS of a subprocess iterating (shuffled) a 20,000-image 224x224 fold
   (~3 GB, generated in the store format under /tmp, deleted afterwards).

    .venv/bin/python benchmarks/loader.py [--quick]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_old_folder(src: Path, n: int) -> None:
    """An h2q-style processed folder: PNGs of 500x375 + <fold>_metadata.txt."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (src / "images").mkdir(parents=True)
    yy, xx = np.mgrid[0:375, 0:500]
    base = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.int16)
    lines = []
    for i in range(n):
        img = np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(src / "images" / f"{i}.png")
        label = " ".join("1" if k == i % 100 else "0" for k in range(100))
        lines.append(f"data/processed/ImageNet/images/{i}.png,{label}")
    for fold in ("train", "query", "val"):
        (src / f"{fold}_metadata.txt").write_text("\n".join(lines[:2]) + "\n")
    (src / "database_metadata.txt").write_text("\n".join(lines) + "\n")


def old_path(src: Path, batch: int) -> float:
    import torch
    from PIL import Image
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    files = sorted((src / "images").glob("*.png"))
    t = time.perf_counter()
    for i in range(0, len(files), batch):
        x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files[i:i + batch]])
        assert x.shape[1:] == (3, 224, 224)
    return len(files) / (time.perf_counter() - t)


def new_path(root: Path, batch: int, epochs: int = 3) -> float:
    from biohash.data import BatchLoader, open_store

    fold = open_store("ImageNet", root).fold("database")
    loader = BatchLoader(fold, batch, shuffle=True, seed=0)
    for _ in loader:  # warm the page cache, as in every epoch after the first
        pass
    t = time.perf_counter()
    for e in range(epochs):
        loader.set_epoch(e + 1)
        for x, _, _ in loader:
            assert x.shape[1:] == (3, 224, 224)
    return epochs * len(fold) / (time.perf_counter() - t)


def write_big_store(root: Path, n: int) -> None:
    from biohash.data.store import StoreWriter

    writer = StoreWriter(root, "ImageNet", (224, 224, 3))
    writer.begin()
    block = np.random.default_rng(0).integers(0, 255, (500, 224, 224, 3), dtype=np.uint8)
    for fold, size in (("train", 10), ("query", 10), ("val", 10), ("database", n)):
        fw = writer.fold_writer(fold, size)
        for start in range(0, size, len(block)):
            fw.write_block(np.roll(block, start, axis=0)[:size - start], start)
        labels = np.eye(100, dtype=np.uint8)[np.arange(size) % 100]
        writer.commit_fold(fw, labels, [str(i) for i in range(size)])
    writer.finish(label_names=[str(k) for k in range(100)], seed=0, mean=(0.5,) * 3,
                  std=(0.25,) * 3, transform="resize256_centercrop224")


WRITE_CHILD = """
import sys, resource
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + "/benchmarks")
from loader import write_big_store
from pathlib import Path
write_big_store(Path({data!r}), {n})
print("writer peak RSS MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""

RSS_CHILD = """
import resource, sys, time
sys.path.insert(0, {root!r})
from biohash.data import BatchLoader, open_store
fold = open_store("ImageNet", {data!r}).fold("database")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter(); n = 0
for x, y, idx in BatchLoader(fold, 128, shuffle=True, seed=0):
    n += len(x)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
hwm = next((int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")), peak)
print(n, base, peak, n / dt, hwm)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    args = parser.parse_args(argv)
    n_img, n_big, batch = (128, 2000, 64) if args.quick else (512, 20000, 64)
    tmp = Path(tempfile.mkdtemp(prefix="biohash-bench-"))
    try:
        big = tmp / "big"
        t = time.perf_counter()
        # In a child: this process stays small, so the children's ru_maxrss (which
        # starts at the parent's RSS at fork time) measures the loader alone.
        subprocess.run([sys.executable, "-c", WRITE_CHILD.format(root=str(ROOT), data=str(big),
                                                                 n=n_big)], check=True)
        size = sum(f.stat().st_size for f in (big / "processed" / "ImageNet").iterdir())
        print(f"peak memory, iterating a {n_big}-image 224x224 fold ({size / 1e9:.2f} GB on disk, "
              f"written in {time.perf_counter() - t:.0f} s):")
        out = subprocess.run([sys.executable, "-c", RSS_CHILD.format(root=str(ROOT), data=str(big))],
                             check=True, capture_output=True, text=True).stdout.split()
        n, base, peak, rate, hwm = int(out[0]), int(out[1]), int(out[2]), float(out[3]), int(out[4])
        print(f"  items {n}, peak RSS (getrusage maxrss) {peak / 1024:.0f} MB, VmHWM {hwm / 1024:.0f} MB "
              f"(after imports {base / 1024:.0f} MB), {rate:.0f} img/s; "
              f"limit 1536 MB -> {'OK' if peak / 1024 <= 1536 else 'OVER'}")
        shutil.rmtree(big)

        from biohash.data.h2q import import_h2q

        src = tmp / "old" / "data" / "processed" / "ImageNet"
        make_old_folder(src, n_img)
        import_h2q(src, tmp / "new", "ImageNet")
        old = old_path(src, batch)
        new = new_path(tmp / "new", batch)
        print(f"\nthroughput, {n_img} images 500x375 PNG -> normalised 224x224 float32 batches "
              f"of {batch} (CPU, 1 process):")
        print(f"  old path (PIL decode+Resize+CenterCrop+ToTensor+Normalize): {old:9.1f} img/s")
        print(f"  store + BatchLoader (shuffled, page cache warm):           {new:9.1f} img/s")
        print(f"  ratio new/old: {new / old:.1f}x (target >= 5x)")

    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
