"""Behaviours of the real Drive and S3 that a forgiving test server hides (issue 7, items 4-11).

Each test switches on, in the Drive emulator or beside it, one way the real service is stricter or
less consistent than a naive server, and runs the real script against it: list lag (files.list not
read-after-write consistent), per-app visibility under drive.file, case-insensitive `name =`,
incomplete shared-drive searches, the daily-cap message on non-uploads, long outages. Every test
ends with an exact outcome; synchronisation is by server-side hooks, never by sleeping.
"""
from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import one_line_error, photo_bytes

ROOT = "Amazon Photos Transfer"
FOLDER = "application/vnd.google-apps.folder"
FAST = {"CLOUD_TRANSFER_BACKOFF_BASE_S": "0.01", "CLOUD_TRANSFER_BACKOFF_CAP_S": "0.05"}
DAILY_CAP_BODY = json.dumps({"error": {"code": 403, "message": "User rate limit exceeded.", "errors": [
    {"message": "User rate limit exceeded.", "domain": "usageLimits", "reason": "userRateLimitExceeded"}]}})


def populate(env, keys):
    return {key: env.put(key, photo_bytes(key, 2500 + len(key))) for key in keys}


def assert_each_once(env, bodies):
    """Independent count in the emulator (trash included), then the tool's own verify."""
    import hashlib

    files = env.drive_files()
    assert set(files) == {f"{ROOT}/{key}" for key in bodies}, sorted(files)
    for key, body in bodies.items():
        assert len(files[f"{ROOT}/{key}"]) == 1, f"duplicate of {key}"
        assert files[f"{ROOT}/{key}"][0]["md5Checksum"] == hashlib.md5(body).hexdigest()
    every = [f for f in env.drive.list_files(include_trashed=True) if f["mimeType"] != FOLDER]
    assert len(every) == len(bodies), "a duplicate was created (and trashed)"
    folders = [env.drive.path_of(f["id"]) for f in env.drive.list_files(include_trashed=True)
               if f["mimeType"] == FOLDER]
    assert len(folders) == len(set(folders)), "a folder was created twice"
    result = env.run("verify", "--json")
    report = json.loads(result.stdout)
    assert (report["missing"], report["duplicated"], report["mismatched"]) == (0, 0, 0), report
    assert result.returncode == 0


def replace_answers(drive, matches, status, body, times):
    """The next `times` requests for which `matches(record)` holds get `status`/`body` instead, after
    Drive did nothing (the hook runs once the real answer is computed; a list or get changes nothing)."""
    left = [times]

    def before_reply(record, reply):
        if left[0] > 0 and matches(record):
            left[0] -= 1
            reply.status, reply.body = status, body.encode()
            reply.headers = {"Content-Type": "application/json; charset=UTF-8"}

    drive.before_reply = before_reply
    return left


# -- item 9: the daily-cap message is only the cap on uploads, and only when it persists ----------------

def test_daily_cap_message_on_a_listing_is_a_rate_limit_not_a_stop(env):
    env.vars.update(FAST)
    bodies = populate(env, [f"a/{n}.jpg" for n in range(4)])
    left = replace_answers(env.drive, lambda r: r["method"] == "GET" and r["path"] == "/drive/v3/files",
                           403, DAILY_CAP_BODY, 2)
    result = env.run("--workers", "1")
    assert result.returncode == 0, result.stderr
    assert left[0] == 0                                    # both listings were refused, and retried
    assert "daily upload limit" not in result.stderr
    env.drive.before_reply = None
    assert_each_once(env, bodies)


def test_daily_cap_message_once_on_an_upload_is_retried_after_a_backoff(env):
    env.vars.update(FAST)
    bodies = populate(env, [f"a/{n}.jpg" for n in range(4)])
    left = replace_answers(env.drive, lambda r: r["method"] == "POST" and r["path"] == "/upload/drive/v3/files",
                           403, DAILY_CAP_BODY, 1)
    result = env.run("--workers", "1")
    assert result.returncode == 0, result.stderr
    assert left[0] == 0
    env.drive.before_reply = None
    assert_each_once(env, bodies)


# -- item 10: a long outage stops the run instead of grinding through every object ----------------------

def test_sustained_drive_outage_stops_with_exit_7_and_a_rerun_finishes(env):
    env.vars.update(FAST, CLOUD_TRANSFER_OUTAGE_S="1")
    bodies = populate(env, [f"a/{n:02d}.jpg" for n in range(30)])
    env.drive.faults.fail_paths = {r"^/upload/": 503}
    result = env.run("--workers", "2")
    assert result.returncode == 7, result.stderr
    assert "Google Drive's upload service has failed every request" in result.stderr and "Traceback" not in result.stderr
    with env.drive.lock:
        upload_attempts = sum(1 for r in env.drive.requests if r["path"].startswith("/upload/"))
    # Without the stop: 30 objects x 3 attempts x 8 requests = 720 refused uploads.
    assert upload_attempts < 200, upload_attempts
    summary = json.loads(env.checkpoint.read_text())["runs"][-1]
    assert summary["exit_code"] == 7
    env.drive.faults.fail_paths = {}
    assert env.run().returncode == 0
    assert_each_once(env, bodies)


# -- item 11: exit codes say what happened --------------------------------------------------------------

class _AlwaysUnavailable(BaseHTTPRequestHandler):
    def _any(self):
        body = b"<Error><Code>ServiceUnavailable</Code><Message>down</Message></Error>"
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = _any

    def log_message(self, *args):
        pass


@pytest.fixture
def broken_s3():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysUnavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_s3_unreachable_or_failing_exits_7(env, broken_s3):
    closed = ThreadingHTTPServer(("127.0.0.1", 0), _AlwaysUnavailable)
    closed_url = f"http://127.0.0.1:{closed.server_address[1]}"
    closed.server_close()   # nothing listens there now
    for endpoint in (broken_s3, closed_url):
        result = env.run(env={"AWS_ENDPOINT_URL": endpoint, "AWS_MAX_ATTEMPTS": "1"})
        assert result.returncode == 7, (endpoint, result.stderr)
        assert "S3" in one_line_error(result)


def test_internal_error_exits_8_with_one_line(env, monkeypatch, capsys):
    import cloud_transfer as ct

    env.put("a/1.jpg")

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ct.Checkpoint, "load", broken)
    assert env.main() == 8
    assert "internal error: ZeroDivisionError" in capsys.readouterr().err


def test_dry_run_does_not_count_unchecked_extensionless_objects_as_copies(env):
    env.put("a/1.jpg")
    env.put("a/no-extension", photo_bytes("n"), ContentType="image/jpeg")
    result = env.run("--dry-run")
    assert result.returncode == 0, result.stderr
    assert "1 would be copied" in result.stdout
    assert "1 more without an extension if S3 says they are photos or videos" in result.stdout


def test_summary_tells_md5_checks_from_etag_checks(env):
    """A multipart object's ETag is no MD5: the summary must not claim it was checked against S3."""
    env.put("a/single.jpg")
    big = photo_bytes("multi", 6 * 1024 * 1024)
    upload = env.s3.create_multipart_upload(Bucket=env.bucket, Key="a/multi.jpg")
    parts = []
    for number, start in enumerate((0, 5 * 1024 * 1024), 1):
        part = env.s3.upload_part(Bucket=env.bucket, Key="a/multi.jpg", UploadId=upload["UploadId"],
                                  PartNumber=number, Body=big[start:start + 5 * 1024 * 1024])
        parts.append({"PartNumber": number, "ETag": part["ETag"]})
    env.s3.complete_multipart_upload(Bucket=env.bucket, Key="a/multi.jpg", UploadId=upload["UploadId"],
                                     MultipartUpload={"Parts": parts})
    result = env.run()
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.strip().startswith("checksums"))
    assert re.search(r"\b2 with Drive's MD5 = the downloaded bytes'", line), line
    assert "(1 also = the S3 ETag" in line, line
