"""Download helpers against a local HTTP server: resume, checksum, dead links."""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from biohash.data.download import fetch_many, fetch_url
from biohash.errors import DataError

PAYLOAD = bytes(range(256)) * 400
SEEN_RANGES: list[str | None] = []


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        if self.path != "/file.bin":
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        SEEN_RANGES.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng else 0
        body = PAYLOAD[start:]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_resume_and_checksum(server, tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:1000])  # an interrupted download
    SEEN_RANGES.clear()
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    assert fetch_url(f"{server}/file.bin", dest, md5=md5, progress=False) == dest
    assert dest.read_bytes() == PAYLOAD and SEEN_RANGES == ["bytes=1000-"]
    assert not (tmp_path / "file.bin.part").exists()
    fetch_url(f"{server}/file.bin", dest, md5="0" * 32)  # already there: skipped
    with pytest.raises(DataError, match="md5 mismatch.*re-run"):
        fetch_url(f"{server}/file.bin", tmp_path / "other.bin", md5="0" * 32, progress=False)
    assert not list(tmp_path.glob("other.bin*"))


def test_fetch_many_counts_dead_links(server, tmp_path):
    items = [(f"{server}/file.bin", tmp_path / "a.jpg"), (f"{server}/gone.jpg", tmp_path / "b.jpg")]
    ok, dead = fetch_many(items, workers=2, retries=0, progress=False)
    assert ok == 1 and dead == [f"{server}/gone.jpg"]
    assert (tmp_path / "a.jpg").read_bytes() == PAYLOAD and not (tmp_path / "b.jpg").exists()
