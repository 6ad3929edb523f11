"""A local S3 (moto server) and the Drive emulator on 127.0.0.1, with a working directory the real
script can run in. Shared by the sandbox and the benchmark (the pytest fixtures build the same
pieces per test, in conftest.py)."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import boto3
from moto.server import ThreadedMotoServer

from tests.drive_emulator import DriveEmulator

DRIVE_FILE_SCOPE = "https://www.googleapis.com/auth/drive.file"


def photo_bytes(seed: str, size: int = 2048) -> bytes:
    """Deterministic bytes that start like a JPEG."""
    out = bytearray(b"\xff\xd8\xff\xe0")
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def jpeg_with_exif(date: str, offset: str | None = None, body: bytes = b"\x00" * 100) -> bytes:
    """A minimal JPEG whose EXIF holds DateTimeOriginal (tag 0x9003) and OffsetTimeOriginal (0x9011)."""
    entries = [(0x9003, date.encode() + b"\x00")] + ([(0x9011, offset.encode() + b"\x00")] if offset else [])
    ifd0_at = 8
    exif_ifd_at = ifd0_at + 2 + 12 + 4
    data_at = exif_ifd_at + 2 + 12 * len(entries) + 4
    tiff = bytearray(b"II*\x00" + struct.pack("<I", ifd0_at))
    tiff += struct.pack("<H", 1) + struct.pack("<HHII", 0x8769, 4, 1, exif_ifd_at) + struct.pack("<I", 0)
    tiff += struct.pack("<H", len(entries))
    values = b""
    for tag, value in entries:
        tiff += struct.pack("<HHII", tag, 2, len(value), data_at + len(values))
        values += value
    tiff += struct.pack("<I", 0) + values
    app1 = b"Exif\x00\x00" + bytes(tiff)
    return b"\xff\xd8\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + b"\xff\xda" + body + b"\xff\xd9"


@dataclasses.dataclass
class LocalCloud:
    moto_url: str
    drive: DriveEmulator
    s3: Any                 # a boto3 S3 client for moto
    bucket: str
    workdir: Path           # holds token.json; run the script here

    def tool_env(self) -> dict[str, str]:
        """The environment the script needs to use these servers (as .env would give it)."""
        return {**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local-secret-key",
                "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.moto_url, "S3_BUCKET_NAME": self.bucket,
                "DRIVE_ENDPOINT_URL": self.drive.url}


@contextlib.contextmanager
def moto_in_a_process() -> Iterator[str]:
    """moto server as a process of its own (its URL): the benchmark's byte streams then do not
    share one interpreter lock with the Drive emulator."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:   # ready when it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def local_cloud(bucket: str, moto_process: bool = False) -> Iterator[LocalCloud]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # moto's per-request access log
    with contextlib.ExitStack() as stack:
        if moto_process:
            moto_url = stack.enter_context(moto_in_a_process())
        else:
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            moto.start()
            stack.callback(moto.stop)
            host, port = moto.get_host_and_port()
            moto_url = f"http://{host}:{port}"
        yield from _local_cloud(bucket, moto_url)


def _local_cloud(bucket: str, moto_url: str) -> Iterator[LocalCloud]:
    with DriveEmulator() as drive, tempfile.TemporaryDirectory(prefix="cloud-transfer-local-") as tmp:
        workdir = Path(tmp)
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                          aws_access_key_id="local", aws_secret_access_key="local-secret-key")
        s3.create_bucket(Bucket=bucket)
        token = workdir / "token.json"
        token.write_text(json.dumps({
            "token": drive.issue_token(), "refresh_token": "local-refresh-token", "client_id": "local-client",
            "client_secret": "local-client-secret", "scopes": [DRIVE_FILE_SCOPE]}))
        token.chmod(0o600)
        yield LocalCloud(moto_url, drive, s3, bucket, workdir)
