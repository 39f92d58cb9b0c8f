"""Small, resumable HTTP download helpers (requests + tqdm).

Files are streamed to ``<dest>.part`` and renamed on success, so a partial
file never looks complete; an existing ``.part`` is resumed with an HTTP
Range request. Checksums (md5/sha256) are checked before the rename.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

from biohash.errors import DataError

__all__ = ["fetch_url", "fetch_many", "extract", "file_digest"]

log = logging.getLogger(__name__)
_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike, algo: str = "md5") -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fetch_url(url: str, dest: str | os.PathLike, *, md5: str | None = None,
              sha256: str | None = None, retries: int = 3, timeout: float = 60.0,
              progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (skipped when ``dest`` exists), resuming a ``.part``.

    Raises ``DataError`` after ``retries`` failed attempts or on a checksum mismatch
    (the bad file is removed so the next run starts over).
    """
    import requests

    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last: Exception | None = None
    for attempt in range(retries):
        try:
            _stream(requests, url, part, timeout, progress)
            break
        except (requests.RequestException, OSError) as exc:
            last = exc
            log.warning("download %s failed (%s), attempt %d/%d", url, exc, attempt + 1, retries)
            time.sleep(min(2 ** attempt, 30))
    else:
        raise DataError(f"could not download {url}: {last}; re-run to resume")
    for algo, want in (("md5", md5), ("sha256", sha256)):
        if want and (got := file_digest(part, algo)) != want:
            part.unlink()
            raise DataError(f"{algo} mismatch for {url}: got {got}, expected {want}; "
                            "the partial file was removed, re-run to download again")
    os.replace(part, dest)
    return dest


def _stream(requests, url: str, part: Path, timeout: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416:  # already complete
            return
        r.raise_for_status()
        if have and r.status_code != 206:  # server ignored Range: start over
            have = 0
        total = int(r.headers.get("Content-Length", 0)) + have or None
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=part.stem)
        with open(part, "ab" if have else "wb") as f:
            for chunk in r.iter_content(_CHUNK):
                f.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if bar is not None:
            bar.close()


def fetch_many(items: Sequence[tuple[str, Path]], *, workers: int = 16, retries: int = 2,
               timeout: float = 20.0, progress: bool = True) -> tuple[int, list[str]]:
    """Fetch many small files concurrently; existing files are skipped (resumable).

    Returns (number fetched or already present, urls that stayed dead).
    """
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=workers)
    session.mount("http://", adapter)
    session.mount("https://", adapter)

    def one(item: tuple[str, Path]) -> str | None:
        url, dest = item
        if dest.exists():
            return None
        for attempt in range(retries + 1):
            try:
                r = session.get(url, timeout=timeout)
                # Flickr answers dead photos with a redirect to a placeholder image.
                if r.status_code == 200 and "photo_unavailable" not in r.url and r.content:
                    tmp = dest.with_name(dest.name + ".part")
                    tmp.write_bytes(r.content)
                    os.replace(tmp, dest)
                    return None
                if r.status_code in (404, 410) or "photo_unavailable" in r.url:
                    return url
            except requests.RequestException:
                pass
            time.sleep(0.5 * (attempt + 1))
        return url

    dead: list[str] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="img", desc="images")
    with ThreadPoolExecutor(workers) as pool:
        for result in pool.map(one, items):
            if result is not None:
                dead.append(result)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return len(items) - len(dead), dead


def extract(archive: str | os.PathLike, dest: str | os.PathLike,
            members: Iterable[str] | None = None) -> None:
    """Extract a zip (Python) or a rar/7z (``unrar``/``7z``/``bsdtar`` on PATH)."""
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest, members=list(members) if members else None)
        return
    for tool, args in (("unrar", ["x", "-o+", str(archive), str(dest) + "/"]),
                       ("7z", ["x", "-y", f"-o{dest}", str(archive)]),
                       ("bsdtar", ["-xf", str(archive), "-C", str(dest)])):
        if shutil.which(tool):
            subprocess.run([tool, *args], check=True, stdout=subprocess.DEVNULL)
            return
    raise DataError(f"cannot extract {archive}: install unrar, 7z or bsdtar, "
                    f"or extract it by hand into {dest}")
