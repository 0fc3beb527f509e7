"""A real S3-compatible server (moto's standalone server) on 127.0.0.1, reached like AWS S3 is."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server; AWS_ENDPOINT_URL and credentials are set for the session."""
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.skip("moto_server not installed (pip install 'moto[server]'; part of the test extra)")
    port = _free_port()
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bucket(s3_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test: s3://<name>."""
    import pyarrow.fs as pafs

    name = "t-" + request.node.name.lower().replace("_", "-")[:50].strip("-")
    pafs.S3FileSystem(endpoint_override=s3_server, allow_bucket_creation=True).create_dir(name)
    return f"s3://{name}"
