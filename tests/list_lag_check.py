"""Duplicates under Drive's list lag: 150 photos, files.list blind to the last 60 s of writes, 15% of
Drive's answers lost after it acted, 4 workers, a run and a re-run. Prints what the emulator holds.

    python -m tests.list_lag_check [--script PATH] [--seed N]

`--script` compares another version of cloud_transfer.py (e.g. an older checkout) on the same faults.
A figure, not a test: tests/test_real_services.py asserts the same on a smaller bucket.
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
from pathlib import Path

from tests.local_cloud import local_cloud, photo_bytes

FOLDER = "application/vnd.google-apps.folder"
PHOTOS = 150


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", default=str(Path(__file__).resolve().parent.parent / "cloud_transfer.py"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with local_cloud("photos-list-lag") as cloud:
        for n in range(PHOTOS):
            key = f"y{n % 5}/m{n % 6}/IMG_{n:03d}.jpg"
            cloud.s3.put_object(Bucket=cloud.bucket, Key=key, Body=photo_bytes(key, 3000 + n))
        cloud.drive.faults.list_lag_s = 60.0
        cloud.drive.faults.drop_response_rate = 0.15
        cloud.drive.faults.seed = args.seed
        env = {**cloud.tool_env(), "CLOUD_TRANSFER_BACKOFF_BASE_S": "0.01", "CLOUD_TRANSFER_BACKOFF_CAP_S": "0.05"}
        codes = [subprocess.run([sys.executable, args.script, "--workers", "4"], cwd=cloud.workdir, env=env,
                                capture_output=True, text=True).returncode for _ in range(2)]
        every = cloud.drive.list_files(include_trashed=True)
        files = collections.Counter(cloud.drive.path_of(f["id"]) for f in every if f["mimeType"] != FOLDER)
        folders = collections.Counter(cloud.drive.path_of(f["id"]) for f in every if f["mimeType"] == FOLDER)
        print(f"{PHOTOS} photos, seed {args.seed}: exit codes {codes}, answers lost "
              f"{cloud.drive.fault_counts.get('drop_response', 0)}; in Drive: missing {PHOTOS - len(files)}, "
              f"duplicate files {sum(n - 1 for n in files.values())}, duplicate folders {sum(n - 1 for n in folders.values())}")


if __name__ == "__main__":
    main()
