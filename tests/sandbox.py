"""See cloud_transfer work without any cloud account: ``python -m tests.sandbox``.

Starts a local S3 (moto server) and the project's Drive emulator on 127.0.0.1, puts a few sample
photos and videos in a bucket, runs a real transfer with ``cloud_transfer.py`` as a subprocess, and
prints where every file landed in the emulated Drive plus the tool's own summary. A second run
shows that nothing is uploaded twice. Needs requirements-dev.txt installed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

from tests.drive_emulator import DriveEmulator

PROJECT = Path(__file__).resolve().parent.parent
SAMPLES = {
    "2019/Trip to Lisbon/IMG_0001.jpg": 180_000,
    "2019/Trip to Lisbon/IMG_0002.HEIC": 240_000,
    "2019/Trip to Lisbon/clip.mov": 1_400_000,
    "2020/O'Brien's party.jpg": 95_000,
    "2020/Ünïcødé фото.png": 60_000,
    "2020/": 0,                     # a folder marker: not copied
    "notes/shopping-list.txt": 120,  # not a photo: not copied
}


def sample_bytes(key: str, size: int) -> bytes:
    out, block = bytearray(b"\xff\xd8\xff\xe0"), key.encode()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


def run_tool(workdir: Path, env: dict[str, str], *args: str) -> int:
    command = [sys.executable, str(PROJECT / "cloud_transfer.py"), *args]
    print(f"\n$ {' '.join(['python', 'cloud_transfer.py', *args])}", flush=True)
    return subprocess.run(command, cwd=workdir, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the servers running until Enter is pressed")
    options = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)   # moto's per-request access log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    moto_url = f"http://{host}:{port}"
    try:
        with DriveEmulator() as drive, tempfile.TemporaryDirectory(prefix="cloud-transfer-sandbox-") as tmp:
            workdir = Path(tmp)
            s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1",
                              aws_access_key_id="sandbox", aws_secret_access_key="sandbox-secret")
            s3.create_bucket(Bucket="sandbox-photos")
            for key, size in SAMPLES.items():
                s3.put_object(Bucket="sandbox-photos", Key=key, Body=sample_bytes(key, size))
            print(f"local S3 (moto):    {moto_url}  bucket sandbox-photos, {len(SAMPLES)} objects")
            print(f"Drive emulator:     {drive.url}")
            print(f"working directory:  {workdir}")
            (workdir / "token.json").write_text(json.dumps({
                "token": drive.issue_token(), "refresh_token": "sandbox-refresh-token", "client_id": "sandbox-client",
                "client_secret": "sandbox-client-secret", "scopes": ["https://www.googleapis.com/auth/drive.file"]}))
            (workdir / "token.json").chmod(0o600)
            env = {**os.environ, "AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox-secret",
                   "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_url, "S3_BUCKET_NAME": "sandbox-photos",
                   "DRIVE_ENDPOINT_URL": drive.url}
            first = run_tool(workdir, env)
            print("\nWhere the files landed in (emulated) Google Drive:")
            for item in sorted(drive.list_files(), key=lambda f: drive.path_of(f["id"])):
                if item.get("mimeType") != "application/vnd.google-apps.folder":
                    print(f"  {drive.path_of(item['id'])}  ({item['size']} bytes, md5 {item['md5Checksum']})")
            second = run_tool(workdir, env)
            verified = run_tool(workdir, env, "verify")
            if options.keep:
                input("\nServers still running; press Enter to stop them. ")
            return first or second or verified
    finally:
        moto.stop()


if __name__ == "__main__":
    sys.exit(main())
