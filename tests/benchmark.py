"""Benchmark: a real transfer of a mixed bucket, with printed figures.

    python -m tests.benchmark [--objects 300] [--large-mib 200] [--workers 4]

Runs cloud_transfer.py as a subprocess against moto server (S3) and the Drive emulator on
loopback, then re-runs it, and prints: objects, bytes, seconds, Drive requests per file (first run
and re-run), and the tool's peak memory (max RSS) — once for the mixed bucket and once for a single
large object, to show memory does not grow with file size. Figures, not pass/fail: targets are
judged by reading them.
"""
from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from pathlib import Path

from tests.drive_emulator import DriveEmulator
from tests.local_cloud import local_cloud

PROJECT = Path(__file__).resolve().parent.parent
KINDS = [("jpg", 350_000), ("HEIC", 900_000), ("NEF", 2_500_000), ("mp4", 6_000_000), ("png", 40_000),
         ("txt", 300), ("json", 900)]


def body(seed: str, size: int) -> bytes:
    block, out = seed.encode(), bytearray()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


def run_tool(workdir: Path, env: dict[str, str], *args: str) -> tuple[int, float, int]:
    """(exit code, seconds, peak RSS in KiB of the tool's process).

    The peak is read from /proc/PID/status (VmHWM) while the tool runs: getrusage's ru_maxrss of a
    child would include the pages it shared with this process (which holds moto's data) at fork time.
    """
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(PROJECT / "cloud_transfer.py"), "--quiet", *args],
                               cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_kib = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.05)   # sampling interval of the measurement, not synchronisation
    stderr = process.stderr.read() if process.stderr else ""
    if process.returncode:
        print(stderr, file=sys.stderr)
    return process.returncode, time.perf_counter() - started, peak_kib


def drive_requests_since_last(drive: DriveEmulator) -> int:
    with drive.lock:
        count = len(drive.requests)
    drive.clear_requests()
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cloud_transfer benchmark")
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--large-mib", type=int, default=200, help="size of the single large object (0: skip)")
    parser.add_argument("--workers", type=int, default=4)
    options = parser.parse_args(argv)
    with local_cloud("bench") as cloud:
        s3, drive, workdir, env = cloud.s3, cloud.drive, cloud.workdir, cloud.tool_env()
        total_bytes, eligible, eligible_bytes = 0, 0, 0
        for n in range(options.objects):
            ext, size = KINDS[n % len(KINDS)]
            key = f"{2015 + n % 6}/album-{n % 17:02d}/IMG_{n:05d}.{ext}"
            s3.put_object(Bucket=cloud.bucket, Key=key, Body=body(key, size))
            total_bytes += size
            if ext not in ("txt", "json"):
                eligible, eligible_bytes = eligible + 1, eligible_bytes + size
        drive.clear_requests()
        code, seconds, rss = run_tool(workdir, env, "--workers", str(options.workers))
        first_requests = drive_requests_since_last(drive)
        files = [f for f in drive.list_files() if f["mimeType"] != "application/vnd.google-apps.folder"]
        code2, seconds2, _ = run_tool(workdir, env)
        rerun_requests = drive_requests_since_last(drive)
        verify, seconds3, _ = run_tool(workdir, env, "verify")
        print(f"mixed bucket: {options.objects} objects ({total_bytes / 2**20:.1f} MiB), {eligible} photos/videos "
              f"({eligible_bytes / 2**20:.1f} MiB), workers {options.workers}")
        print(f"  first run:  exit {code}, {seconds:.1f} s, {len(files)} files in Drive, "
              f"{first_requests} Drive requests ({first_requests / max(len(files), 1):.2f} per file), "
              f"{eligible_bytes / 2**20 / seconds:.1f} MiB/s, peak RSS {rss / 1024:.0f} MiB")
        print(f"  re-run:     exit {code2}, {seconds2:.1f} s, {rerun_requests} Drive requests")
        print(f"  verify:     exit {verify}, {seconds3:.1f} s")
        if options.large_mib:
            key, size, part = "video/large.mp4", options.large_mib * 2**20, 16 * 2**20
            upload = s3.create_multipart_upload(Bucket=cloud.bucket, Key=key)
            parts = []
            for number, offset in enumerate(range(0, size, part), 1):
                etag = s3.upload_part(Bucket=cloud.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                                      Body=body(f"{key}{number}", min(part, size - offset)))["ETag"]
                parts.append({"ETag": etag, "PartNumber": number})
            s3.complete_multipart_upload(Bucket=cloud.bucket, Key=key, UploadId=upload["UploadId"],
                                         MultipartUpload={"Parts": parts})
            drive.clear_requests()
            code, seconds, rss = run_tool(workdir, env, "--prefix", "video/", "--checkpoint", "large.json")
            print(f"large object: {options.large_mib} MiB, exit {code}, {seconds:.1f} s "
                  f"({options.large_mib / seconds:.1f} MiB/s), {drive_requests_since_last(drive)} Drive requests, "
                  f"peak RSS {rss / 1024:.0f} MiB")
        return 0


if __name__ == "__main__":
    sys.exit(main())
