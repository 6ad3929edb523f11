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
import tempfile
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
def local_cloud(bucket: str) -> Iterator[LocalCloud]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # moto's per-request access log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    try:
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
    finally:
        moto.stop()
