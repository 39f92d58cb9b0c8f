"""A real local S3 (moto server) for tests: ``start_moto()`` and the ``moto_s3`` fixture.

Import in a test module with ``from s3_server import moto_s3  # noqa: F401`` (tests/
is on sys.path under pytest's rootdir conftest) or use ``start_moto()`` directly.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from biohash.utils import free_port

__all__ = ["S3Server", "start_moto", "moto_s3"]


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    port: int

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="test", aws_secret_access_key="test")

    def filesystem(self):
        from pyarrow import fs

        # allow_delayed_open: a small file goes up in one PUT (moto's answer to pyarrow's
        # CompleteMultipartUpload can be an error inside a 200 OK).
        return fs.S3FileSystem(endpoint_override=f"127.0.0.1:{self.port}", scheme="http",
                               region="us-east-1", access_key="test", secret_key="test",
                               allow_delayed_open=True)




@contextlib.contextmanager
def start_moto(timeout: float = 30.0) -> Iterator[S3Server]:
    """Run ``moto_server`` on a free port; sets the test AWS credentials meanwhile."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start on port {port}")
            time.sleep(0.1)
        yield S3Server(f"http://127.0.0.1:{port}", port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    with start_moto() as server:
        yield server
