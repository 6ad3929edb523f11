"""Benchmark: real transfers with printed figures, each beside its target (issue 8).

    python -m tests.benchmark [SCENARIO ...] [--objects 400] [--json PATH] [--full] [--smoke]

Scenarios (default: all): rerun, quota, latency, faults, large, scale, walk, dates. Each starts moto server (S3)
and the Drive emulator on loopback, seeds a bucket, runs cloud_transfer.py as a subprocess and reads
its figures from the emulator's own counters and the OS (wall time; peak RSS from /proc VmHWM).
A figure that misses its target is printed as a miss, never hidden; `--smoke` shrinks everything so
the test suite can run it (it reports, it does not assert timings).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

from cloud_transfer import STAGING_WINDOW_CHUNKS, CheckpointEntry, snapshot_line
from tests.drive_emulator import DriveEmulator, Faults
from tests.local_cloud import LocalCloud, local_cloud
from tests.synthetic_drive import synthetic_drive
from tests.synthetic_s3 import synthetic_bucket, synthetic_object

PROJECT = Path(__file__).resolve().parent.parent
KINDS = [("jpg", 350_000), ("HEIC", 900_000), ("NEF", 2_500_000), ("mp4", 6_000_000), ("png", 40_000),
         ("txt", 300), ("json", 900)]
MIB = 2**20
CREATE_PATHS = ("/drive/v3/files", "/upload/drive/v3/files")


def body(seed: str, size: int) -> bytes:
    block, out = seed.encode(), bytearray()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:size])


@dataclasses.dataclass
class Row:
    scenario: str
    figure: str
    value: float | None
    unit: str
    target: str = ""
    met: bool | None = None   # None: a figure without a target

    def cells(self) -> list[str]:
        value = "-" if self.value is None else f"{self.value:,.2f}".rstrip("0").rstrip(".")
        verdict = {True: "ok", False: "MISS", None: ""}[self.met]
        return [self.scenario, self.figure, f"{value} {self.unit}".strip(), self.target, verdict]


@dataclasses.dataclass
class ToolRun:
    code: int
    seconds: float
    peak_rss_mib: float
    stderr: str
    stdout: str = ""


def run_tool(workdir: Path, env: dict[str, str], *args: str, kill_when: Callable[[], bool] | None = None,
             quiet: bool = True) -> ToolRun:
    """Run the script to the end (or SIGKILL it once `kill_when()` is true) and measure it.

    The peak is read from /proc/PID/status (VmHWM) while the tool runs: getrusage's ru_maxrss of a
    child would include the pages it shared with this process (which holds moto's data) at fork time.
    """
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(PROJECT / "cloud_transfer.py"), *(["--quiet"] if quiet else []), *args],
                               cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout_lines: list[str] = []
    stderr_lines: list[str] = []
    readers = [threading.Thread(target=lambda: stderr_lines.extend(process.stderr or []), daemon=True),
               threading.Thread(target=lambda: stdout_lines.extend(process.stdout or []), daemon=True)]
    for reader in readers:
        reader.start()
    peak_kib = 0
    status = Path(f"/proc/{process.pid}/status")
    while process.poll() is None:
        with contextlib.suppress(OSError, ValueError):
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib = max(peak_kib, int(line.split()[1]))
        if kill_when is not None and kill_when():
            process.send_signal(signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.02)   # sampling interval of the measurement, not synchronisation
    for reader in readers:
        reader.join(timeout=5)
    return ToolRun(process.returncode, time.perf_counter() - started, peak_kib / 1024, "".join(stderr_lines),
                   "".join(stdout_lines))


class Counters:
    """What the Drive emulator saw: requests, creates (with times), upload bytes, refusals."""

    def __init__(self, drive: DriveEmulator):
        self.drive = drive
        self.create_times: list[float] = []
        self.upload_bytes = 0
        self._lock = threading.Lock()
        drive.on_request = self._seen
        self.reset()

    def _seen(self, record: dict) -> None:
        if record["method"] == "POST" and record["path"] in CREATE_PATHS:
            with self._lock:
                self.create_times.append(time.monotonic())

    def reset(self) -> None:
        self.drive.clear_requests()
        with self.drive.lock:
            self.drive.fault_counts.clear()
        with self._lock:
            self.create_times.clear()

    def requests(self) -> int:
        with self.drive.lock:
            return len(self.drive.requests)

    def refused(self) -> int:
        with self.drive.lock:
            return sum(n for key, n in self.drive.fault_counts.items() if key.startswith("rate_limit_"))

    def uploaded_bytes(self) -> int:
        """Bytes the tool sent in upload requests (multipart bodies and resumable chunks)."""
        with self.drive.lock:
            return sum(int(r.get("body_bytes") or 0) for r in self.drive.requests if r["path"].startswith("/upload/"))


def seed_mixed(cloud: LocalCloud, objects: int, size_scale: float = 1.0) -> tuple[int, int]:
    """The mixed bucket: photos, RAW, videos and a few non-media files over 6 years x 17 albums.
    Returns (media files, media bytes)."""
    files = size = 0
    for n in range(objects):
        ext, kind_size = KINDS[n % len(KINDS)]
        key = f"{2015 + n % 6}/album-{n % 17:02d}/IMG_{n:05d}.{ext}"
        data = body(key, max(1, int(kind_size * size_scale)))
        cloud.s3.put_object(Bucket=cloud.bucket, Key=key, Body=data)
        if ext not in ("txt", "json"):
            files, size = files + 1, size + len(data)
    return files, size


def drive_files(drive: DriveEmulator) -> list[dict]:
    return [f for f in drive.list_files() if f["mimeType"] != "application/vnd.google-apps.folder"]


def put_large(cloud: LocalCloud, key: str, size: int, part: int = 64 * MIB) -> None:
    upload = cloud.s3.create_multipart_upload(Bucket=cloud.bucket, Key=key)
    parts = []
    for number, offset in enumerate(range(0, size, part), 1):
        etag = cloud.s3.upload_part(Bucket=cloud.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=number,
                                    Body=body(f"{key}{number}", min(part, size - offset)))["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    cloud.s3.complete_multipart_upload(Bucket=cloud.bucket, Key=key, UploadId=upload["UploadId"],
                                       MultipartUpload={"Parts": parts})


# -- scenarios -------------------------------------------------------------------------------------

def scenario_rerun(options: argparse.Namespace) -> list[Row]:
    """Target 4: the mixed bucket's first run, then a re-run with nothing to do."""
    with local_cloud("bench") as cloud:
        files, size = seed_mixed(cloud, options.objects, options.size_scale)
        counters = Counters(cloud.drive)
        first = run_tool(cloud.workdir, cloud.tool_env(), "--workers", "4")
        first_requests = counters.requests()
        copied = len(drive_files(cloud.drive))
        counters.reset()
        again = run_tool(cloud.workdir, cloud.tool_env())
        rerun_requests = counters.requests()
        verify = run_tool(cloud.workdir, cloud.tool_env(), "verify")
    per_1000 = rerun_requests / max(copied, 1) * 1000
    allowed = max(1.0, copied / 1000)   # one request checks the Drive folder is still there
    return [
        Row("rerun", "first run: files copied", copied, f"of {files}", f"= {files}", copied == files and first.code == 0),
        Row("rerun", "first run: wall time", first.seconds, "s"),
        Row("rerun", "first run: files/s", copied / first.seconds, "files/s"),
        Row("rerun", "first run: MiB/s", size / MIB / first.seconds, "MiB/s"),
        Row("rerun", "first run: Drive requests per file", first_requests / max(copied, 1), ""),
        Row("rerun", "first run: peak RSS", first.peak_rss_mib, "MiB"),
        Row("rerun", "re-run: wall time vs first", again.seconds / first.seconds * 100, "%", "<= 10 %",
            again.seconds <= 0.10 * first.seconds and again.code == 0),
        Row("rerun", "re-run: Drive requests", rerun_requests, f"for {copied} files", "<= 1 per 1,000 (min 1)",
            rerun_requests <= allowed),
        Row("rerun", "verify: wall time", verify.seconds, "s", "exit 0", verify.code == 0),
    ]


def scenario_quota(options: argparse.Namespace) -> list[Row]:
    """Target 1: Google's per-user create quota (token bucket 5/s, burst 10, 20 ms latency)."""
    rows = []
    for workers in (4, 16):
        with local_cloud("bench") as cloud:
            files, _ = seed_mixed(cloud, 12 if options.smoke else options.objects, 0.05)   # smoke: seconds, not a measure
            counters = Counters(cloud.drive)
            cloud.drive.faults = Faults(create_rate_per_s=options.quota_rate, create_burst=10, latency_s=0.02)
            fast = {"CLOUD_TRANSFER_BACKOFF_BASE_S": "0.05", "CLOUD_TRANSFER_BACKOFF_CAP_S": "0.5"} if options.smoke else {}
            run = run_tool(cloud.workdir, {**cloud.tool_env(), **fast}, "--workers", str(workers))
            creates = len(cloud.drive.list_files())   # files and folders, root included
            times = counters.create_times
            window = (times[-1] - times[0]) if len(times) > 1 else run.seconds
            used = creates / max(window, 1e-9) / options.quota_rate * 100
            refused = counters.refused()
            copied = len(drive_files(cloud.drive))
        name = f"{workers} workers"
        rows += [
            Row("quota", f"{name}: quota used", used, "%", ">= 98 %", used >= 98),
            Row("quota", f"{name}: refused answers / files", refused / max(copied, 1) * 100, "%",
                "<= 2 %", refused <= 0.02 * max(copied, 1) and copied == files and run.code == 0),
            Row("quota", f"{name}: files/s ({creates} creates in {window:.0f} s)", copied / run.seconds, "files/s"),
        ]
    return rows


def scenario_latency(options: argparse.Namespace) -> list[Row]:
    """40 ms per Drive request, no quota: files/s and Drive requests per file."""
    with local_cloud("bench") as cloud:
        files, _ = seed_mixed(cloud, options.objects, 0.05)
        counters = Counters(cloud.drive)
        cloud.drive.faults = Faults(latency_s=0.04)
        run = run_tool(cloud.workdir, cloud.tool_env(), "--workers", "4")
        copied = len(drive_files(cloud.drive))
        return [
            Row("latency", "40 ms per request: files/s", copied / run.seconds, "files/s", f"{files} copied",
                copied == files and run.code == 0),
            Row("latency", "40 ms per request: Drive requests per file", counters.requests() / max(copied, 1), ""),
        ]


def scenario_faults(options: argparse.Namespace) -> list[Row]:
    """5% of Drive answers 429/403 (random, no limit hit) or 503: files/s against a fault-free run."""
    figures = {}
    for label, faults in (("fault-free", Faults()),
                          ("faults", Faults(rate_limit_rate=0.033, error_rate=0.017, seed=8))):
        with local_cloud("bench") as cloud:
            files, _ = seed_mixed(cloud, options.objects, 0.05)
            cloud.drive.faults = faults
            run = run_tool(cloud.workdir, cloud.tool_env(), "--workers", "4")
            copied = len(drive_files(cloud.drive))
            figures[label] = (copied / run.seconds, copied == files and run.code == 0)
    ratio = figures["faults"][0] / figures["fault-free"][0] * 100
    return [
        Row("faults", "fault-free: files/s", figures["fault-free"][0], "files/s"),
        Row("faults", "5% 429/403/503: files/s vs fault-free", ratio, "%", ">= 70 %",
            ratio >= 70 and figures["faults"][1] and figures["fault-free"][1]),
    ]


def stage_seconds(cloud: LocalCloud, keys: list[str], path: Path) -> float:
    """The bytes the tool will send, staged as it stages them: one GET each, hashed, to disk."""
    started = time.perf_counter()
    with open(path, "wb") as out:
        for key in keys:
            md5 = hashlib.md5()
            for block in cloud.s3.get_object(Bucket=cloud.bucket, Key=key)["Body"].iter_chunks(MIB):
                md5.update(block)
                out.write(block)
    return time.perf_counter() - started


def raw_upload_seconds(drive: DriveEmulator, path: Path, chunk: int) -> float:
    """The emulator's own single-stream ceiling: one resumable session, the file sent from disk in
    `chunk`-sized PUTs over one connection, with no client library in the way."""
    url = urlsplit(drive.url)
    token = drive.issue_token()
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    size = path.stat().st_size
    started = time.perf_counter()
    connection.request("POST", "/upload/drive/v3/files?uploadType=resumable", body=json.dumps({"name": "raw.bin"}),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                                "X-Upload-Content-Length": str(size)})
    answer = connection.getresponse()
    answer.read()
    session = urlsplit(answer.getheader("Location"))
    target = session.path + "?" + session.query
    with open(path, "rb") as stream:
        for offset in range(0, size, chunk):
            length = min(chunk, size - offset)
            connection.request("PUT", target, body=_Slice(stream, length), headers={
                "Content-Length": str(length), "Content-Range": f"bytes {offset}-{offset + length - 1}/{size}"})
            answer = connection.getresponse()
            answer.read()
    seconds = time.perf_counter() - started
    connection.close()
    return seconds


class _Slice:
    """`length` bytes of a file, read in blocks (http.client streams objects with read())."""

    def __init__(self, stream: Any, length: int):
        self.stream, self.left = stream, length

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self.stream.read(min(size, 8 * MIB))
        self.left -= len(data)
        return data


@contextlib.contextmanager
def bounded_temp_dir(limit: int) -> Iterator[tuple[Path, str]]:
    """A directory of at most `limit` bytes: a tmpfs of that size where this process may mount one
    (root), else a plain directory whose bound only the staging-file sampling shows."""
    with tempfile.TemporaryDirectory(prefix="bench-temp-") as directory:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={limit}", "tmpfs", directory],
                                 capture_output=True).returncode == 0 if os.geteuid() == 0 else False
        try:
            yield Path(directory), "tmpfs" if mounted else "not enforced (no tmpfs without root)"
        finally:
            if mounted:
                subprocess.run(["umount", directory], check=False)


class TempDiskPeak:
    """The largest total size of the files under a directory, sampled while a run goes on."""

    def __init__(self, directory: Path):
        self.directory, self.peak = directory, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> TempDiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.wait(0.05):   # the measurement's sampling interval, not synchronisation
            total = 0
            for root, _, names in os.walk(self.directory):
                for name in names:
                    with contextlib.suppress(OSError):
                        total += os.stat(os.path.join(root, name)).st_blocks * 512
            self.peak = max(self.peak, total)


def scenario_large(options: argparse.Namespace) -> list[Row]:
    """Target 2: one large object and three mixed videos at --workers 1."""
    large = options.large_mib * MIB
    videos = [("video/clip-a.mp4", 40 * MIB), ("video/clip-b.mov", 120 * MIB), ("video/clip-c.mp4", 9 * MIB)]
    if options.smoke:
        videos = [(key, size // 8) for key, size in videos]
    total = large + sum(size for _, size in videos)
    # moto in a process of its own: in this one it would share the interpreter lock with the emulator
    with local_cloud("bench", moto_process=True) as cloud, tempfile.TemporaryDirectory(prefix="bench-raw-") as tmp:
        put_large(cloud, "video/large.mp4", large)
        for key, size in videos:
            cloud.s3.put_object(Bucket=cloud.bucket, Key=key, Body=body(key, size))
        keys = ["video/large.mp4"] + [key for key, _ in videos]
        raw, again = Path(tmp) / "raw.bin", Path(tmp) / "again.bin"
        staging_ceiling = total / MIB / stage_seconds(cloud, keys, raw)
        ceiling = total / MIB / raw_upload_seconds(cloud.drive, raw, 64 * MIB)
        # both halves at once, as independent streams: what this machine's cores allow the pipeline
        started = time.perf_counter()
        stager = threading.Thread(target=stage_seconds, args=(cloud, keys, again))
        stager.start()
        raw_upload_seconds(cloud.drive, raw, 64 * MIB)
        stager.join()
        both_ceiling = total / MIB / (time.perf_counter() - started)
        again.unlink()
        raw.unlink()
        cloud.drive.reset()
        counters = Counters(cloud.drive)
        # Temporary disk: a tenth of the large object (at least 256 MiB), against the staging window
        temp_limit = max(256 * MIB, large // 10)
        window = STAGING_WINDOW_CHUNKS * (8 if options.smoke else 64) * MIB
        chunk_args = ("--chunk-size", "8") if options.smoke else ()
        with bounded_temp_dir(temp_limit) as (temp_dir, bound), TempDiskPeak(temp_dir) as temp_peak:
            run = run_tool(cloud.workdir, cloud.tool_env(), "--workers", "1", "--temp-dir", str(temp_dir), *chunk_args)
        copied = len(drive_files(cloud.drive))
        rate = total / MIB / run.seconds
        requests = counters.requests()
        # kill -9 at 60% of the large upload (it goes last: keys sort before "video/large"), then re-run
        kill_at = total - large + 0.6 * large
        resume_args = ("--workers", "1", "--checkpoint", "resume.json", "--folder", "Resume test")
        counters.reset()
        killed = run_tool(cloud.workdir, cloud.tool_env(), *resume_args,
                          kill_when=lambda: counters.uploaded_bytes() >= kill_at)
        sent_before = counters.uploaded_bytes()
        counters.reset()
        resumed = run_tool(cloud.workdir, cloud.tool_env(), *resume_args)
        resent = counters.uploaded_bytes() / large * 100
        resumed_ok = killed.code == -signal.SIGKILL and resumed.code == 0 and sent_before < total
    return [
        Row("large", f"raw upload ceiling ({total / MIB:.0f} MiB)", ceiling, "MiB/s"),
        Row("large", "raw staging ceiling (one GET, MD5, disk)", staging_ceiling, "MiB/s"),
        Row("large", "raw staging and upload at once (2 streams)", both_ceiling, "MiB/s"),
        Row("large", f"{options.large_mib} MiB + 3 videos at --workers 1", rate, "MiB/s",
            f">= 80 % of ceiling = {0.8 * ceiling:.0f}", rate >= 0.8 * ceiling and copied == 4 and run.code == 0),
        Row("large", "... vs staging and upload at once", rate / both_ceiling * 100, "%"),
        Row("large", "Drive requests", requests, ""),
        Row("large", f"temporary disk at its peak (--temp-dir of {temp_limit / MIB:.0f} MiB: {bound})",
            temp_peak.peak / MIB, "MiB", f"<= staging window ({window / MIB:.0f} MiB: {STAGING_WINDOW_CHUNKS} chunks)",
            temp_peak.peak <= window and run.code == 0),
        Row("large", "peak RSS", run.peak_rss_mib, "MiB", "<= 150 MB", run.peak_rss_mib * MIB <= 150e6),
        Row("large", "killed at 60%: bytes sent again by the re-run", resent, "% of the large object",
            "<= 45 %", resent <= 45 and resumed_ok),
    ]


def write_synthetic_checkpoint(path: Path, count: int) -> None:
    """Every synthetic object done: the real checkpoint of a one-photo run (binding, root folder,
    identity) with its objects replaced by `count` entries, in the tool's own form (one object per
    line, in key order), written as a stream."""
    state = json.loads(path.read_text())
    run = state["runs"][-1]["id"] if state.get("runs") else "synthetic"
    state["objects"] = {}
    head = json.dumps(state, ensure_ascii=False, indent=1)
    assert head.endswith('"objects": {}\n}')
    with open(path, "w", encoding="utf-8") as out:
        out.write(head[: -len("{}\n}")] + "{\n")
        for n in range(count):   # synthetic keys are numbered in key order
            key, etag, size = synthetic_object(n)
            # as the tool records a copy: a Drive id of 33 characters, the capture day and its source
            entry = CheckpointEntry(status="done", etag=etag, size=size, md5=etag, drive_id=f"1{n:032d}",
                                    attempts=1, run=run, at="2026-12-01T00:00:00Z", taken="2021-06-01 exif")
            out.write((",\n" if n else "") + snapshot_line(key, entry.to_json()).decode("utf-8"))
        out.write("\n}\n}\n")
    path.with_name(path.name + ".journal").unlink(missing_ok=True)


def scenario_scale(options: argparse.Namespace) -> list[Row]:
    """Target 3: a re-run of a bucket whose checkpoint says every object is done (synthetic listing
    and checkpoint, see tests/synthetic_s3.py), against a dry run that has no checkpoint."""
    count = options.scale_objects
    with local_cloud("scale") as cloud, synthetic_bucket("scale", count) as s3_url:
        cloud.s3.put_object(Bucket="scale", Key="seed.jpg", Body=body("seed", 2000))
        seeded = run_tool(cloud.workdir, cloud.tool_env())   # binding, root folder, identity
        checkpoint = cloud.workdir / "cloud_transfer_checkpoint.json"
        control = cloud.workdir / "control.json"   # for status: a small checkpoint, the fixed cost
        control.write_bytes(checkpoint.read_bytes())
        write_synthetic_checkpoint(control, min(2000, count // 2))
        write_synthetic_checkpoint(checkpoint, count)
        env = {**cloud.tool_env(), "AWS_ENDPOINT_URL": s3_url}
        dry = run_tool(cloud.workdir, env, "--dry-run", "--checkpoint", "none.json")
        counters = Counters(cloud.drive)
        rerun = run_tool(cloud.workdir, env)
        requests = counters.requests()
        status = run_tool(cloud.workdir, env, "status")
        size_after = checkpoint.stat().st_size
        status_control = run_tool(cloud.workdir, env, "status", "--checkpoint", str(control))
        with synthetic_drive("scale", count) as drive_url:
            verify = run_tool(cloud.workdir, {**env, "DRIVE_ENDPOINT_URL": drive_url}, "verify", "--json")
    verified = json.loads(verify.stdout) if verify.code == 0 else {}
    verify_clean = verified.get("checked") == count and not any(
        verified.get(kind) for kind in ("missing", "duplicated", "mismatched", "extra"))
    above = (rerun.peak_rss_mib - dry.peak_rss_mib) * MIB / count
    beyond = rerun.seconds - dry.seconds
    ok = seeded.code == 0 and rerun.code == 0 and dry.code == 0
    for name, run in (("seed run", seeded), ("dry run", dry), ("re-run", rerun), ("status", status), ("verify", verify)):
        if run.code:
            print(f"scale: {name} exited {run.code}: {(run.stderr.strip() or run.stdout.strip())[:600]}", file=sys.stderr)
    full = count >= 1_000_000   # the targets (issue 20) are for a million objects; smaller runs only report
    status_above = (status.peak_rss_mib - status_control.peak_rss_mib) * MIB / (count - min(2000, count // 2))
    verify_above = (verify.peak_rss_mib - dry.peak_rss_mib) * MIB / count

    def at_full(met: bool) -> bool | None:
        return met if full else None

    def per_object(met: bool) -> bool | None:   # a few thousand objects: the fixed costs swamp them
        return met if count >= 100_000 else None

    return [
        Row("scale", f"{count:,} done objects: re-run peak RSS", rerun.peak_rss_mib, "MiB", "<= 150 MB at 1M",
            at_full(rerun.peak_rss_mib * MIB <= 150e6) if ok else False),
        Row("scale", "... above a dry run's (no checkpoint)", above, "bytes/object", "<= 60", per_object(above <= 60)),
        Row("scale", "... wall time beyond listing S3", beyond, "s", "<= 10 s", beyond <= 10),
        Row("scale", "... Drive requests (the root, the changes feed)", requests, "", "2", requests == 2),
        Row("scale", "dry run (listing only): wall time", dry.seconds, "s"),
        Row("scale", "... per listed key (botocore's XML parse included)", dry.seconds / count * 1e6, "µs"),
        Row("scale", "status: peak RSS above a 2,000-object checkpoint's", status_above, "bytes/object", "<= 80",
            per_object(status_above <= 80)),
        Row("scale", "... wall time", status.seconds, "s", "<= 3 s at 1M",
            at_full(status.seconds <= 3) if status.code == 0 else False),
        Row("scale", "checkpoint size", size_after / count, "bytes/object", "<= 200", per_object(size_after / count <= 200)),
        Row("scale", f"verify of {count:,} copies (synthetic Drive): peak RSS above a dry run's", verify_above,
            "bytes/object", "<= 100", per_object(verify_above <= 100) if verify_clean else False),
        Row("scale", "... wall time", verify.seconds, "s", "<= 60 s at 1M", at_full(verify.seconds <= 60) if verify_clean else False),
    ]


def scenario_walk(options: argparse.Namespace) -> list[Row]:
    """verify's walk of the Drive copy and rollback, under 150 ms per Drive request. One request at
    a time (as before issue 8), a walk costs at least folders x 150 ms and a rollback files x 2 x
    150 ms (a files.get for provenance, then the trash): the figures are compared with those bounds."""
    latency = 0.15
    with local_cloud("bench") as cloud:
        files, _ = seed_mixed(cloud, options.objects, 0.01)
        copied = run_tool(cloud.workdir, cloud.tool_env(), "--workers", "8")
        folders = len(cloud.drive.list_files()) - len(drive_files(cloud.drive))
        cloud.drive.faults = Faults(latency_s=latency)
        verify = run_tool(cloud.workdir, cloud.tool_env(), "verify")
        rollback = run_tool(cloud.workdir, cloud.tool_env(), "rollback", "--yes")
        left = len(drive_files(cloud.drive))
    walk_bound, rollback_bound = folders * latency, files * 2 * latency
    return [
        Row("walk", f"verify, {folders} folders at 150 ms: wall time", verify.seconds, "s",
            f"<= {walk_bound / 5:.1f} s (1/5 of one at a time)",
            verify.seconds <= walk_bound / 5 and verify.code == 0 and copied.code == 0),
        Row("walk", f"rollback, {files} files at 150 ms: wall time", rollback.seconds, "s",
            f"<= {rollback_bound / 5:.1f} s (1/5 of one at a time)",
            rollback.seconds <= rollback_bound / 5 and rollback.code == 0 and left == 0),
    ]


def exif_bytes_read(photo: Path) -> int:
    """Bytes the tool's EXIF reader reads from a staged photo (it reads local files only)."""
    import cloud_transfer as ct

    counted = 0

    class Counting(io.FileIO):
        def read(self, size: int = -1) -> bytes:
            nonlocal counted
            data = super().read(size)
            counted += len(data)
            return data

        def readinto(self, buffer: Any) -> int:
            nonlocal counted
            n = super().readinto(buffer)
            counted += n or 0
            return n

    ct.open = lambda path, mode="r", *args, **kwargs: io.BufferedReader(Counting(path, "rb"), 4096)  # type: ignore[attr-defined]
    try:
        assert ct.photo_capture_time(photo, None) is not None
    finally:
        del ct.open  # type: ignore[attr-defined]
    return counted


def scenario_dates(options: argparse.Namespace) -> list[Row]:
    """Issue 9: what reading each file's date costs. Real photos (Pillow JPEGs with EXIF, padded to
    a photo's size after their image) and videos (MOV with the moov after a large mdat, as phones
    write them) copied once reading dates (the default) and once with --date-from s3 (no reading)."""
    from tests import media_samples as media

    photos, videos = (12, 2) if options.smoke else (120, 6)
    photo_size, video_size = (200_000, 6 * MIB) if options.smoke else (3_000_000, 40 * MIB)
    taken = datetime_utc(2019, 7, 5, 18, 30, 12)
    with local_cloud("dates") as cloud, tempfile.TemporaryDirectory(prefix="bench-dates-") as tmp:
        for n in range(photos):
            head = media.jpeg("2019:07:05 18:30:12", "+02:00")
            cloud.s3.put_object(Bucket=cloud.bucket, Key=f"p/{n:04d}.jpg",
                                Body=head + body(str(n), photo_size - len(head)))
        for n in range(videos):
            cloud.s3.put_object(Bucket=cloud.bucket, Key=f"v/{n:02d}.mov",
                                Body=media.mov(taken, moov_last=True, mdat_bytes=video_size))
        sample = Path(tmp) / "sample.jpg"
        sample.write_bytes(cloud.s3.get_object(Bucket=cloud.bucket, Key="p/0000.jpg")["Body"].read())
        read_per_photo = exif_bytes_read(sample)
        with_dates = run_tool(cloud.workdir, cloud.tool_env(), "--checkpoint", "a.json", "--folder", "A", quiet=False)
        without = run_tool(cloud.workdir, cloud.tool_env(), "--checkpoint", "b.json", "--folder", "B",
                           "--date-from", "s3", quiet=False)
    summary = re.search(r"(\d+) from EXIF, (\d+) from video headers.*?(?:\((\d+) ranged GETs of file headers and sidecars, ([\d.]+) (\w+)\))?$",
                        with_dates.stdout, re.M)
    exif, video, gets = (int(summary[1]), int(summary[2]), int(summary[3] or 0)) if summary else (0, 0, 0)
    header_kib = float(summary[4]) * {"B": 1 / 1024, "KiB": 1, "MiB": 1024}.get(summary[5], 1) if summary and summary[4] else 0.0
    ok = with_dates.code == 0 and without.code == 0 and exif == photos and video == videos
    return [
        Row("dates", f"{photos} photos ({photo_size / 1e6:.1f} MB): EXIF bytes read per photo (from the staged file)",
            read_per_photo / 1024, "KiB"),
        Row("dates", f"{videos} videos ({video_size / MIB:.0f} MiB, moov last): ranged GETs per video", gets / max(videos, 1),
            "", "dates from every file", ok),
        Row("dates", "... S3 bytes read per video for its date", header_kib / max(videos, 1), "KiB"),
        Row("dates", "wall time, reading dates (the default)", with_dates.seconds, "s"),
        Row("dates", "... with --date-from s3 (no reading)", without.seconds, "s"),
        Row("dates", "... cost of reading dates", (with_dates.seconds / without.seconds - 1) * 100, "%"),
    ]


def datetime_utc(*parts: int) -> Any:
    import datetime as dt

    return dt.datetime(*parts, tzinfo=dt.timezone.utc)


SCENARIOS: dict[str, Callable[[argparse.Namespace], list[Row]]] = {
    "rerun": scenario_rerun, "quota": scenario_quota, "latency": scenario_latency, "faults": scenario_faults,
    "large": scenario_large, "scale": scenario_scale, "walk": scenario_walk, "dates": scenario_dates,
}


def print_table(rows: list[Row]) -> None:
    table = [["scenario", "figure", "value", "target", ""]] + [row.cells() for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for n, r in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cloud_transfer benchmark")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--objects", type=int, default=400, help="objects in the mixed bucket")
    parser.add_argument("--large-mib", type=int, default=1024, help="size of the single large object")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for the test suite")
    parser.add_argument("--full", action="store_true", help="scale: 1,000,000 objects (default 200,000)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    options = parser.parse_args(argv)
    unknown = set(options.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    options.size_scale, options.quota_rate = 1.0, 5.0
    options.scale_objects = 1_000_000 if options.full else 200_000
    if options.smoke:
        options.objects, options.large_mib, options.size_scale = min(options.objects, 30), 24, 0.05
        options.scale_objects = 2000
        options.quota_rate = 20.0   # the same pushback in a quarter of the time
    rows: list[Row] = []
    for name in options.scenarios or list(SCENARIOS):
        started = time.perf_counter()
        rows += SCENARIOS[name](options)
        print(f"[{name}: {time.perf_counter() - started:.0f} s]", file=sys.stderr, flush=True)
    print_table(rows)
    if options.json:
        options.json.write_text(json.dumps([dataclasses.asdict(row) for row in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
