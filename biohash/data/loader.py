"""The training/prediction loader: store fold -> normalised device batches, fast.

Per batch the loader reads the rows of the fold's ``.npy`` file with
``os.preadv`` straight into a reused (pinned on CUDA) uint8 buffer - indices
sorted within the batch and contiguous runs coalesced into one read - copies
the uint8 batch to the device and converts, resizes and normalises there.
Reading with ``preadv`` instead of touching a memmap keeps the process's
resident memory at a few buffers even when an epoch streams a 20 GB fold
(memmapped pages would count towards RSS). A background thread reads the
next batches while the caller computes.
"""
from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from biohash.data.store import Fold
from biohash.errors import ConfigError

__all__ = ["BatchLoader"]

_H2Q_CROP_RATIO = 224 / 256  # Resize(256) + CenterCrop(224)
_DONE = object()


class BatchLoader:
    """Iterate a fold in batches of ``(x, y, idx)``, all on ``device``.

    - ``x``: (B, C, H, W) ``dtype`` (float32 default), ``(x/255 - mean) / std``
      with the store's per-channel stats;
    - ``y``: (B, L) float32 labels; ``idx``: (B,) int64 positions in the fold
      (or in ``indices`` order's underlying fold positions).

    ``shuffle``: a permutation from ``(seed, epoch)`` - the same pair always gives
    the same order; call ``set_epoch(e)`` each epoch. Within a batch the indices
    are sorted (read locality); ``idx`` says which items came.

    ``image_size``: None keeps the stored size. An int ``s`` gives s x s: for
    stores kept at native size (CIFAR, DIGITS) it is h2q's upsampling - resize the
    shorter side to ``s * 256 / 224`` (bilinear) and centre-crop ``s`` - and for
    stores already cropped at processing time a plain resize. A tuple (h, w)
    always resizes to exactly (h, w) (use it for non-square images like DIGITS_ML).

    ``indices``: iterate only these fold positions (e.g. a validation subset).
    ``prefetch``: batches read ahead by a background thread (0 = none).
    """

    def __init__(self, fold: Fold, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 device: str | torch.device = "cpu", image_size: int | Sequence[int] | None = None,
                 drop_last: bool = False, epoch: int = 0, dtype: torch.dtype = torch.float32,
                 indices: Sequence[int] | np.ndarray | None = None, prefetch: int = 2,
                 read_threads: int = 4, channels_last: bool = False) -> None:
        if batch_size < 1:
            raise ConfigError(f"bad batch_size {batch_size!r}; allowed: an integer >= 1")
        self.fold, self.batch_size = fold, int(batch_size)
        self.shuffle, self.seed, self.epoch, self.drop_last = shuffle, int(seed), int(epoch), drop_last
        self.device, self.dtype = torch.device(device), dtype
        self.prefetch, self.channels_last = max(0, int(prefetch)), channels_last
        n = len(fold)
        self.indices = (np.arange(n, dtype=np.int64) if indices is None
                        else np.asarray(indices, dtype=np.int64))
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
            raise ConfigError(f"indices out of range for fold {fold.name!r} of size {n}")
        self.out_size, self.crop = _target_size(fold, image_size)
        self._pool = ThreadPoolExecutor(read_threads) if read_threads > 1 else None
        c = fold.images.shape[-1]
        std = torch.tensor(fold.std, dtype=torch.float32).expand(c)
        mean = torch.tensor(fold.mean, dtype=torch.float32).expand(c)
        # x/255 normalised in one fused multiply-add: x * scale + shift.
        self._scale = (1.0 / (255.0 * std)).view(1, c, 1, 1).to(self.device)
        self._shift = (-mean / std).view(1, c, 1, 1).to(self.device)
        self._labels = torch.from_numpy(np.ascontiguousarray(fold.labels, dtype=np.uint8))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """The fold positions in the order an epoch visits them."""
        if not self.shuffle:
            return self.indices
        rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
        return self.indices[rng.permutation(len(self.indices))]

    def __len__(self) -> int:
        n, b = len(self.indices), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _batches(self) -> list[np.ndarray]:
        order = self.order()
        stop = len(self) * self.batch_size
        return [np.sort(order[i:min(i + self.batch_size, stop)])
                for i in range(0, min(stop, len(order)), self.batch_size)]

    # ------------------------------------------------------------- host side
    def _read(self, idx: np.ndarray, out: np.ndarray, fd: int | None) -> None:
        """Fill ``out[:len(idx)]`` with rows ``idx`` (sorted) of the images file."""
        images = self.fold.images
        if fd is None:
            np.take(images, idx, axis=0, out=out[:len(idx)])
            return
        row = int(np.prod(images.shape[1:]))
        flat = out.reshape(-1)
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(idx)]))
        jobs = [(int(s), int(e), self.fold.offset + int(idx[s]) * row) for s, e in zip(starts, ends)]

        def run(job: tuple[int, int, int]) -> None:
            s, e, offset = job
            view = memoryview(flat[s * row:e * row])
            done = 0
            while done < len(view):
                got = os.preadv(fd, [view[done:]], offset + done)
                if got <= 0:
                    raise OSError(f"short read from {self.fold.path} at {offset + done}")
                done += got

        if self._pool is not None and len(jobs) > 1:
            list(self._pool.map(run, jobs))
        else:
            for job in jobs:
                run(job)

    def _host_batches(self, buffers: list[torch.Tensor], free: "queue.Queue[int]",
                      ready: "queue.Queue", stop: threading.Event,
                      events: list, fd: int | None) -> None:
        try:
            for idx in self._batches():
                slot = free.get()
                if stop.is_set():
                    return
                if events[slot] is not None:
                    events[slot].synchronize()  # the previous H2D copy from this buffer is done
                self._read(idx, buffers[slot].numpy(), fd)
                ready.put((slot, idx))
            ready.put(_DONE)
        except BaseException as exc:  # surfaced in the consumer
            ready.put(exc)

    # ----------------------------------------------------------- device side
    def _to_device(self, buf: torch.Tensor, idx: np.ndarray) -> tuple[torch.Tensor, ...]:
        n = len(idx)
        u8 = buf[:n].to(self.device, non_blocking=True)  # (B, H, W, C) uint8
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = u8.permute(0, 3, 1, 2).to(torch.float32, memory_format=fmt)  # (B, C, H, W)
        if self.out_size is not None and tuple(x.shape[-2:]) != self.out_size:
            x = _resize(x, self.out_size, self.crop)
        x = x.mul_(self._scale).add_(self._shift)
        if self.dtype != torch.float32:
            x = x.to(self.dtype)
        idx_t = torch.from_numpy(idx)
        y = self._labels[idx_t].to(self.device, non_blocking=True).float()
        return x, y, idx_t.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        cuda = self.device.type == "cuda"
        slots = self.prefetch + 2
        shape = (self.batch_size, *self.fold.images.shape[1:])
        buffers = [torch.empty(shape, dtype=torch.uint8, pin_memory=cuda) for _ in range(slots)]
        events: list = [None] * slots
        free: queue.Queue[int] = queue.Queue()
        for s in range(slots):
            free.put(s)
        ready: queue.Queue = queue.Queue()
        stop = threading.Event()
        fd = os.open(self.fold.path, os.O_RDONLY) if hasattr(os, "preadv") else None
        worker = threading.Thread(target=self._host_batches, daemon=True,
                                  args=(buffers, free, ready, stop, events, fd))
        worker.start()
        try:
            while True:
                item = ready.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                slot, idx = item
                batch = self._to_device(buffers[slot], idx)
                if cuda:
                    events[slot] = torch.cuda.Event()
                    events[slot].record()
                free.put(slot)
                yield batch
        finally:
            stop.set()
            free.put(0)  # wake the worker if it waits for a buffer
            worker.join()
            if fd is not None:
                os.close(fd)


def _target_size(fold: Fold, image_size: int | Sequence[int] | None
                 ) -> tuple[tuple[int, int] | None, bool]:
    """-> ((H, W) to produce or None, whether h2q's resize-then-crop applies)."""
    if image_size is None:
        return None, False
    if isinstance(image_size, int):
        if image_size < 1:
            raise ConfigError(f"bad image_size {image_size!r}; allowed: None, an int >= 1 or (h, w)")
        return (image_size, image_size), fold.transform == "native"
    h, w = (int(v) for v in image_size)
    if h < 1 or w < 1:
        raise ConfigError(f"bad image_size {image_size!r}; allowed: None, an int >= 1 or (h, w)")
    return (h, w), False


def _resize(x: torch.Tensor, size: tuple[int, int], crop: bool) -> torch.Tensor:
    """Bilinear resize on the device; with ``crop`` torchvision's Resize+CenterCrop."""
    if crop:
        h, w = x.shape[-2:]
        short = int(round(size[0] / _H2Q_CROP_RATIO))
        new = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        x = F.interpolate(x, size=new, mode="bilinear", align_corners=False,
                          antialias=new[0] < h)
        top, left = int(round((new[0] - size[0]) / 2.0)), int(round((new[1] - size[1]) / 2.0))
        return x[..., top:top + size[0], left:left + size[1]]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                         antialias=size[0] < x.shape[-2])
