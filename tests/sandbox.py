"""See cloud_transfer work without any cloud account: ``python -m tests.sandbox``.

Starts a local S3 (moto server) and the project's Drive emulator on 127.0.0.1, puts a few sample
photos and videos in a bucket, runs a real transfer with ``cloud_transfer.py`` as a subprocess, and
prints where every file landed in the emulated Drive plus the tool's own summary. A second run
shows that nothing is uploaded twice. Needs requirements-dev.txt installed.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from tests.local_cloud import local_cloud, photo_bytes

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


def run_tool(workdir: Path, env: dict[str, str], *args: str) -> int:
    command = [sys.executable, str(PROJECT / "cloud_transfer.py"), *args]
    print(f"\n$ {' '.join(['python', 'cloud_transfer.py', *args])}", flush=True)
    return subprocess.run(command, cwd=workdir, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the servers running until Enter is pressed")
    options = parser.parse_args(argv)
    with local_cloud("sandbox-photos") as cloud:
        for key, size in SAMPLES.items():
            cloud.s3.put_object(Bucket=cloud.bucket, Key=key, Body=photo_bytes(key, size))
        print(f"local S3 (moto):    {cloud.moto_url}  bucket {cloud.bucket}, {len(SAMPLES)} objects")
        print(f"Drive emulator:     {cloud.drive.url}")
        print(f"working directory:  {cloud.workdir}")
        env = cloud.tool_env()
        first = run_tool(cloud.workdir, env)
        print("\nWhere the files landed in (emulated) Google Drive:")
        drive = cloud.drive
        for item in sorted(drive.list_files(), key=lambda f: drive.path_of(f["id"])):
            if item.get("mimeType") != "application/vnd.google-apps.folder":
                print(f"  {drive.path_of(item['id'])}  ({item['size']} bytes, md5 {item['md5Checksum']})")
        second = run_tool(cloud.workdir, env)
        verified = run_tool(cloud.workdir, env, "verify")
        if options.keep:
            input("\nServers still running; press Enter to stop them. ")
        return first or second or verified


if __name__ == "__main__":
    sys.exit(main())
