"""Shared fixtures: a real moto S3 server and the project's Drive emulator, both on loopback.

The script under test is run for real, in-process through ``cloud_transfer.main(argv, environ)``
and as a subprocess (``python cloud_transfer.py``), against these servers.
"""
from __future__ import annotations

import datetime as dt
import logging
import json
import os
import struct
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from tests.drive_emulator import DriveEmulator
from tests.local_cloud import DRIVE_FILE_SCOPE, photo_bytes  # noqa: F401  (re-exported for the tests)

logging.getLogger("werkzeug").setLevel(logging.WARNING)   # moto server's per-request access log

PROJECT = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT / "cloud_transfer.py"
AWS_KEY_ID = "AKIATESTKEYID0000001"
AWS_SECRET = "test-secret-key-must-never-be-logged-0001"
CLIENT_SECRET = "client-secret-must-never-be-logged-0001"
REFRESH_TOKEN = "refresh-token-must-never-be-logged-0001"


@pytest.fixture(scope="session")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_url):
    requests.post(f"{moto_url}/moto-api/reset", timeout=10)
    return boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                        aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET)


@pytest.fixture
def bucket(s3):
    name = f"photos-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def drive():
    with DriveEmulator() as emulator:
        yield emulator


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


@dataclass
class Env:
    """A working directory with .env-equivalent variables, token.json and credentials.json."""
    cwd: Path
    vars: dict[str, str]
    drive: DriveEmulator
    bucket: str
    s3: object
    extra_args: list[str] = field(default_factory=list)

    @property
    def checkpoint(self) -> Path:
        return self.cwd / "cloud_transfer_checkpoint.json"

    def run(self, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
        """The real script as a subprocess (no TTY), in self.cwd."""
        full_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.cwd), "PYTHONPATH": str(PROJECT),
                    **self.vars, **(env or {})}
        return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=self.cwd, env=full_env,
                              capture_output=True, text=True, timeout=kwargs.pop("timeout", 120), **kwargs)

    def main(self, *args: str, env: dict[str, str] | None = None) -> int:
        """The real script in-process: main(argv, environ), with paths made absolute."""
        import cloud_transfer

        paths = ["--token", str(self.cwd / "token.json"), "--credentials", str(self.cwd / "credentials.json"),
                 "--checkpoint", str(self.checkpoint), "--env-file", str(self.cwd / ".env")]
        (self.cwd / ".env").touch()
        return cloud_transfer.main([*args, *paths], environ={**self.vars, **(env or {})})

    def put(self, key: str, body: bytes | None = None, **kwargs) -> bytes:
        body = photo_bytes(key) if body is None else body
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, **kwargs)
        return body

    def drive_files(self) -> dict[str, dict]:
        """Non-folder, non-trashed Drive files by path below the emulator's My Drive."""
        found = {}
        for item in self.drive.list_files():
            if item.get("mimeType") != "application/vnd.google-apps.folder":
                found.setdefault(self.drive.path_of(item["id"]), []).append(item)
        return found


def read_pty(fd: int, until: bytes | None = None) -> bytes:
    """Read a pty's output until `until` appears, or until the child closes it."""
    output = b""
    while until is None or until not in output:
        try:
            chunk = os.read(fd, 65536)
        except OSError:   # EIO: the child exited and closed its side
            break
        if not chunk:
            break
        output += chunk
    return output


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single, traceback-free line a failed run printed on stderr."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def write_token(path: Path, access_token: str, *, expired: bool = False, refresh_token: str = REFRESH_TOKEN,
                scopes: list[str] | None = None) -> None:
    expiry = dt.datetime.utcnow() + (dt.timedelta(hours=-1) if expired else dt.timedelta(hours=1))
    path.write_text(json.dumps({
        "token": access_token, "refresh_token": refresh_token, "client_id": "test-client.apps.googleusercontent.com",
        "client_secret": CLIENT_SECRET, "token_uri": "https://oauth2.googleapis.com/token",
        "scopes": scopes or [DRIVE_FILE_SCOPE], "expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")}))
    path.chmod(0o600)


def write_client(path: Path, kind: str = "installed") -> None:
    path.write_text(json.dumps({kind: {
        "client_id": "test-client.apps.googleusercontent.com", "client_secret": CLIENT_SECRET,
        "project_id": "test", "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token", "redirect_uris": ["http://localhost"]}}))


@pytest.fixture
def env(tmp_path, moto_url, s3, bucket, drive) -> Env:
    cwd = tmp_path / "work"
    cwd.mkdir()
    write_token(cwd / "token.json", drive.issue_token())
    write_client(cwd / "credentials.json")
    variables = {
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_url, "S3_BUCKET_NAME": bucket, "DRIVE_ENDPOINT_URL": drive.url,
    }
    return Env(cwd=cwd, vars=variables, drive=drive, bucket=bucket, s3=s3)
