"""Pure logic of cloud_transfer.py, table-tested: no network, no clock."""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import os
import re
import threading
import types
import time
import json

import botocore.exceptions
import httplib2
import pytest
from google.auth.exceptions import RefreshError
from googleapiclient.errors import HttpError

import cloud_transfer as ct
from tests import pacer_sim

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def obj(key="a/b.jpg", size=10, etag="0" * 32):
    return ct.SourceObject(key=key, size=size, etag=etag, last_modified=NOW)


def drive_http_error(status, reason="", message="", headers=None):
    resp = httplib2.Response({"status": status, **(headers or {})})
    body = {"error": {"code": status, "message": message, "errors": [{"reason": reason, "message": message}]}}
    return HttpError(resp, json.dumps(body).encode())


def s3_error(code, status):
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


# -- names and paths ------------------------------------------------------------------------------

@pytest.mark.parametrize("value, quoted", [
    ("plain", "'plain'"),
    ("O'Brien's party.jpg", r"'O\'Brien\'s party.jpg'"),
    ("back\\slash", r"'back\\slash'"),
    ("both\\'", r"'both\\\''"),
    ("Ünïcødé фото", "'Ünïcødé фото'"),
])
def test_drive_query_literal_escapes_backslash_then_quote(value, quoted):
    assert ct.drive_query_literal(value) == quoted


@pytest.mark.parametrize("key, parts", [
    ("2019/Trip/IMG_1.jpg", ("2019", "Trip", "IMG_1.jpg")),
    ("top.jpg", ("top.jpg",)),
    ("/lead//double/x.jpg", ("lead", "double", "x.jpg")),
    ("a b/ c .jpg", ("a b", " c .jpg")),
])
def test_drive_path_for(key, parts):
    assert ct.drive_path_for(key) == parts


@pytest.mark.parametrize("key, size, marker", [
    ("x/", 0, True), ("x/y/", 5, True), ("old_$folder$", 0, True), ("/", 0, True),
    ("old_$folder$", 3, False), ("empty.jpg", 0, False), ("a/b.jpg", 10, False),
])
def test_is_folder_marker(key, size, marker):
    assert ct.is_folder_marker(obj(key, size)) is marker


@pytest.mark.parametrize("key, kind", [
    ("a.JPG", True), ("b.heic", True), ("c.NEF", True), ("d.cr3", True), ("e.mov", True), ("f.MP4", True),
    ("g.txt", False), ("h.json", False), ("noext", None), ("dir/.hidden", None), ("x.tar.gz", False),
])
def test_media_kind_for(key, kind):
    assert ct.media_kind_for(key) is kind


def test_plan_object_decisions():
    assert ct.plan_object(obj("x/"), False, False) == (ct.PLAN_SKIP, ct.SKIP_MARKER)
    assert ct.plan_object(obj("n.txt"), False, False) == (ct.PLAN_SKIP, ct.SKIP_NOT_MEDIA)
    assert ct.plan_object(obj("n.txt"), False, True) == (ct.PLAN_COPY, None)
    assert ct.plan_object(obj("noext"), False, False) == (ct.PLAN_CHECK_TYPE, None)
    assert ct.plan_object(obj(), True, False) == (ct.PLAN_DONE, None)
    assert ct.plan_object(obj(), False, False) == (ct.PLAN_COPY, None)


@pytest.mark.parametrize("compacted", [False, True])
def test_checkpoint_done_run_answers_only_for_the_same_version(tmp_path, compacted):
    checkpoint = ct.Checkpoint.load(tmp_path / "c.json", BINDING)
    checkpoint.record("a.jpg", ct.CheckpointEntry(status="done", etag="0" * 32, size=10, run="r1"))
    checkpoint.record("b.jpg", ct.CheckpointEntry(status="failed", etag="0" * 32, size=10, run="r1"))
    checkpoint.record("c.jpg", ct.CheckpointEntry(status="done", etag="", size=7, run="r2"))
    if compacted:   # answered from the snapshot's index, not from memory
        checkpoint.compact()
        checkpoint = ct.Checkpoint.load(tmp_path / "c.json", BINDING)
    assert checkpoint.done_run("a.jpg", "0" * 32, 10) == "r1"
    assert checkpoint.done_run("a.jpg", "1" * 32, 10) is None     # another version
    assert checkpoint.done_run("a.jpg", "0" * 32, 11) is None     # another size
    assert checkpoint.done_run("b.jpg", "0" * 32, 10) is None     # not done
    assert checkpoint.done_run("c.jpg", "", 7) == "r2"            # an empty ETag is a version too
    assert checkpoint.done_run("x.jpg", "0" * 32, 10) is None     # never seen
    assert checkpoint.get("b.jpg").status == "failed" and checkpoint.get("x.jpg") is None


@pytest.mark.parametrize("etag, plain", [
    ("d41d8cd98f00b204e9800998ecf8427e", True), ("d41d8cd98f00b204e9800998ecf8427e-2", False),
    ("D41D8CD98F00B204E9800998ECF8427E", False), ("", False),
])
def test_etag_is_plain_md5(etag, plain):
    assert ct.etag_is_plain_md5(etag) is plain


def test_source_id_fits_app_properties_limit():
    source_id = ct.source_id_for("bucket", "k" * 1024)
    assert len((ct.PROP_SOURCE + source_id).encode()) <= 124
    assert source_id != ct.source_id_for("bucket", "k" * 1023)


# -- validation -----------------------------------------------------------------------------------

def drive_file(size=10, md5="0" * 32, props=None):
    return ct.DriveFile(id="f", name="b.jpg", mime_type="image/jpeg", parent_id="p", size=size, md5=md5,
                        app_properties=props if props is not None else {ct.PROP_ETAG: "0" * 32, ct.PROP_MD5: "0" * 32})


def test_validate_upload_names_both_values():
    assert ct.validate_upload(10, "0" * 32, drive_file()) is None
    assert ct.validate_upload(11, "0" * 32, drive_file()) == "size 10 in Drive vs 11 sent"
    assert ct.validate_upload(10, "1" * 32, drive_file()) == f"MD5 {'0' * 32} in Drive vs {'1' * 32} sent"


def test_is_intact_copy():
    assert ct.is_intact_copy(drive_file(), obj())
    assert not ct.is_intact_copy(drive_file(size=9), obj())
    assert not ct.is_intact_copy(drive_file(md5="2" * 32), obj())
    assert not ct.is_intact_copy(drive_file(), obj(etag="3" * 32))            # source changed
    assert not ct.is_intact_copy(drive_file(props={}), obj())                  # no provenance
    multipart = "abc-2"
    copy = drive_file(md5="9" * 32, props={ct.PROP_ETAG: multipart, ct.PROP_MD5: "9" * 32})
    assert ct.is_intact_copy(copy, obj(etag=multipart))


# -- error classification -------------------------------------------------------------------------

@pytest.mark.parametrize("status, reason, message, action, stop_error", [
    (403, "storageQuotaExceeded", "The user's Drive storage quota has been exceeded.", "stop", ct.QuotaExceededError),
    (403, "userRateLimitExceeded", "User rate limit exceeded.", "retry", None),   # not an upload: a throttle
    (403, "userRateLimitExceeded", "User rate limit exceeded for quota metric 'Queries'.", "retry", None),
    (403, "rateLimitExceeded", "Rate Limit Exceeded", "retry", None),
    (429, "rateLimitExceeded", "", "retry", None),
    (500, "backendError", "", "retry", None),
    (503, "", "", "retry", None),
    (401, "authError", "", "stop", ct.AuthError),
    (403, "insufficientPermissions", "", "stop", ct.AuthError),
    (403, "numChildrenInNonRootLimitExceeded", "", "folder-full", None),   # 500,000 in a folder: continue beside it
    (403, "activeItemCreationLimitExceeded", "", "stop", ct.QuotaExceededError),
    (403, "dailyLimitExceeded", "Daily Limit Exceeded", "stop", ct.QuotaExceededError),
    # Google's answer to a request without a usable token, whatever its name says
    (403, "dailyLimitExceededUnreg", "Daily Limit for Unauthenticated Use Exceeded.", "stop", ct.AuthError),
    (404, "notFound", "File not found: x.", "fail", None),
    (400, "invalid", "Invalid Value", "fail", None),
])
def test_classify_drive_error(status, reason, message, action, stop_error):
    verdict = ct.classify_drive_error(drive_http_error(status, reason, message))
    assert verdict.action == action
    assert verdict.stop_error is stop_error


def test_daily_cap_message_on_an_upload_stops_only_when_it_persists_after_a_backoff():
    verdict = ct.classify_drive_error(drive_http_error(403, "userRateLimitExceeded", "User rate limit exceeded."),
                                      upload=True)
    assert (verdict.action, verdict.rate_limited, verdict.daily_cap) == ("retry", True, True)
    clock = FakeClock()
    pacer = ct.Pacer(ct.Backoff(base_s=1, cap_s=8, rng=lambda: 1.0), clock=clock)
    pacer.rate_limited(None, daily_cap=True)           # first refusal: everyone pauses
    clock.now += 7
    pacer.rate_limited(None, daily_cap=True)           # still refused 7 s on: maybe a long throttle
    pacer.succeeded(upload=True)                       # an upload went through: it was a throttle
    pacer.rate_limited(None, daily_cap=True)
    clock.now += 60
    pacer.rate_limited(None, daily_cap=True)           # a lone answer long after: a new episode
    clock.now += 4
    pacer.rate_limited(None, daily_cap=True)
    pacer.succeeded(upload=False)                      # a listing going through proves nothing
    clock.now += 4
    with pytest.raises(ct.QuotaExceededError):         # 3 refusals over the longest backoff (8 s): the cap
        pacer.rate_limited(None, daily_cap=True)


def test_outage_watch_stops_only_after_a_whole_window_of_failures():
    clock = FakeClock()
    watch = ct.OutageWatch(window_s=60, clock=clock)
    watch.failed("Google Drive", "503")
    clock.now += 59
    watch.failed("Google Drive", "503")
    watch.ok("Google Drive")                           # one success resets the window
    clock.now += 30
    watch.failed("Google Drive", "503")
    clock.now += 16
    watch.failed("Google Drive", "503")                # then a quiet spell over half the window:
    clock.now += 50                                    # isolated failures, not an outage
    watch.failed("Google Drive", "503")
    for _ in range(5):                                 # failing every 10 s for 60 s: down
        clock.now += 10
        watch.failed("Google Drive", "503")
    clock.now += 10
    with pytest.raises(ct.UnavailableError, match="Google Drive has failed every request"):
        watch.failed("Google Drive", "503")


def test_classify_drive_error_session_expiry_and_retry_after():
    assert ct.classify_drive_error(drive_http_error(404, "notFound"), in_upload_session=True).action == "restart"
    verdict = ct.classify_drive_error(drive_http_error(429, "rateLimitExceeded", headers={"retry-after": "30"}))
    assert verdict.rate_limited and verdict.retry_after_s == 30.0
    assert ct.classify_drive_error(RefreshError("invalid_grant")).stop_error is ct.AuthError
    user = ct.classify_drive_error(RefreshError("invalid_grant: Token has been expired or revoked.", {
        "error": "invalid_grant", "error_description": "Token has been expired or revoked."}))
    robot = ct.classify_drive_error(RefreshError("invalid_grant: Invalid JWT Signature.", {
        "error": "invalid_grant", "error_description": "Invalid JWT Signature."}))
    assert "Testing" in user.reason and "token.json" in user.reason
    assert "service account's key" in robot.reason and "Testing" not in robot.reason and "token.json" not in robot.reason
    assert ct.classify_drive_error(ConnectionResetError()).action == "retry"
    assert ct.classify_drive_error(TimeoutError()).action == "retry"


def test_an_error_with_only_error_info_details_is_classified_by_their_reason():
    # the AIP-193 shape: no `errors` list, the reason in google.rpc.ErrorInfo
    body = {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "Google Drive API has not been used in "
                      "project 12 before or it is disabled. Enable it by visiting https://console.developers.google"
                      ".com/apis/api/drive.googleapis.com/overview?project=12 then retry.",
                      "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                                   "domain": "googleapis.com"}]}}
    verdict = ct.classify_drive_error(HttpError(httplib2.Response({"status": 403}), json.dumps(body).encode()))
    assert verdict.stop_error is ct.AuthError
    assert "enable it at https://console.developers.google.com/apis/api/drive.googleapis.com/overview?project=12 " \
        in verdict.reason


@pytest.mark.parametrize("code, status, action", [
    ("NoSuchKey", 404, "skip"), ("InvalidObjectState", 403, "skip"), ("PreconditionFailed", 412, "fail"),
    ("SlowDown", 503, "retry"), ("InternalError", 500, "retry"), ("AccessDenied", 403, "fail"),
    ("InvalidAccessKeyId", 403, "stop"),
])
def test_classify_s3_error(code, status, action):
    assert ct.classify_s3_error(s3_error(code, status)).action == action


def test_classify_s3_network_and_disk_errors():
    assert ct.classify_s3_error(botocore.exceptions.ReadTimeoutError(endpoint_url="x")).action == "retry"
    assert ct.classify_s3_error(botocore.exceptions.NoCredentialsError()).stop_error is ct.AuthError
    assert ct.classify_s3_error(botocore.exceptions.FlexibleChecksumError(error_msg="crc32")).action == "retry"
    import errno
    assert ct.classify_s3_error(OSError(errno.ENOSPC, "full")).action == "stop"


# -- retry and pacing -----------------------------------------------------------------------------

def test_backoff_full_jitter_cap_and_retry_after():
    top = ct.Backoff(base_s=1, cap_s=8, rng=lambda: 1.0)
    assert [top.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 8, 8]
    assert ct.Backoff(base_s=1, cap_s=8, rng=lambda: 0.5).delay(3) == 2
    assert ct.Backoff(rng=lambda: 0.0).delay(5) == 0
    assert top.delay(1, retry_after_s=30) == 30
    assert top.delay(6, retry_after_s=0.5) == 8


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def accept_writes(pacer, clock, n, spacing_s=0.0):
    for _ in range(n):
        clock.now += spacing_s
        while wait := pacer.reserve(write=True):
            clock.now += wait
        pacer.succeeded(write=True, sent_at=clock.now)


def test_pacer_does_not_pace_until_a_limit_is_plainly_hit_then_measures_it():
    clock = FakeClock()
    pacer = ct.Pacer(ct.Backoff(base_s=1, cap_s=8, rng=lambda: 1.0), clock=clock)
    accept_writes(pacer, clock, 10, spacing_s=0.05)          # ten writes in 0.5 s: no pacing at all
    pacer.rate_limited(None, sent_at=clock.now)               # a sporadic refusal: retried, no pacing
    accept_writes(pacer, clock, 1)
    assert pacer.rate is None and pacer.reserve(write=True) == 0
    sent_at = clock.now
    pacer.rate_limited(None, sent_at=sent_at)
    pacer.rate_limited(None, sent_at=sent_at)
    assert pacer.rate is None
    pacer.rate_limited(None, sent_at=sent_at)                 # three in a row: the writes in flight at a limit
    cut_at = clock.now
    assert pacer.rate == pytest.approx(5.5)     # half of the 11/s accepted (over at least 1 s)
    assert pacer.reserve() == 0                 # reads are not paced
    assert pacer.reserve(write=True) == pytest.approx(1 / 5.5)
    assert pacer.reserve(write=True) == pytest.approx(1 / 5.5)   # asking again takes no slot
    clock.now += 1 / 5.5
    assert pacer.reserve(write=True) == 0                        # the slot: taken
    assert pacer.reserve(write=True) == pytest.approx(1 / 5.5)
    pacer.rate_limited(None, sent_at=sent_at)   # already in flight when pacing began: the same episode
    assert pacer.rate == pytest.approx(5.5)
    accept_writes(pacer, clock, 6)              # until refused, the rate doubles every second
    assert clock.now - cut_at < 1.2 and pacer.rate > 1.7 * 5.5
    accept_writes(pacer, clock, 14)
    pacer.rate_limited(None, sent_at=clock.now)   # 20 writes since the cut: the bucket's rate
    limit = 20 / (clock.now - cut_at)
    assert pacer.limit == pytest.approx(limit)
    assert pacer.rate == pytest.approx((1 - ct.PACE_MARGIN) * limit)


def measured_pacer():
    """A pacer that started at three refusals in a row and measured the limit at the next one."""
    clock = FakeClock()
    pacer = ct.Pacer(ct.Backoff(base_s=1, cap_s=8, rng=lambda: 1.0), clock=clock)
    accept_writes(pacer, clock, 10, spacing_s=0.05)
    for _ in range(ct.PACE_START_IN_A_ROW):
        pacer.rate_limited(None, sent_at=clock.now)
    accept_writes(pacer, clock, 40)
    pacer.rate_limited(None, sent_at=clock.now)
    return clock, pacer


def test_pacer_ignores_refusals_under_the_measured_limit_and_finds_a_limit_that_fell():
    clock, pacer = measured_pacer()
    limit, paced = pacer.limit, pacer.rate
    assert paced < limit
    for _ in range(5):                        # random refusals, far apart: nothing changes
        accept_writes(pacer, clock, ct.PACE_MEASURE_WRITES)
        rate = pacer.rate
        pacer.rate_limited(None, sent_at=clock.now)
        assert (pacer.rate, pacer.limit) == (rate, limit)
    for _ in range(ct.PACE_NOISE_REFUSALS - 1):   # refusals again and again under the limit ...
        accept_writes(pacer, clock, 2)
        rate = pacer.rate
        pacer.rate_limited(None, sent_at=clock.now)
        assert pacer.rate == rate
    accept_writes(pacer, clock, 2)
    rate = pacer.rate
    pacer.rate_limited(None, sent_at=clock.now)   # ... are a limit that fell: found anew
    assert pacer.limit is None and pacer.rate == pytest.approx(rate * ct.PACE_DECREASE)
    clock.now += 0.5
    pacer.rate_limited(None, sent_at=clock.now)   # refused again, nothing accepted: a second cut in a row
    assert pacer.reserve() == pytest.approx(1.0)  # ... pauses everyone
    pacer.rate_limited(retry_after_s=30, sent_at=clock.now)
    assert pacer.reserve() == pytest.approx(30.0)  # Retry-After holds every request


def test_pacer_forgets_what_it_measured_after_minutes_without_a_refusal():
    clock, pacer = measured_pacer()
    assert pacer.limit is not None
    accept_writes(pacer, clock, 10, spacing_s=ct.PACE_FORGET_S / 20)   # half the quiet spell: still paced
    assert pacer.rate is not None
    accept_writes(pacer, clock, 11, spacing_s=ct.PACE_FORGET_S / 20)
    assert pacer.rate is None and pacer.limit is None and pacer.reserve(write=True) == 0


def test_pacer_is_not_started_by_refusals_spread_over_a_quiet_spell_nor_starts_at_a_crawl():
    clock = FakeClock()
    pacer = ct.Pacer(ct.Backoff(base_s=1, cap_s=8, rng=lambda: 1.0), clock=clock)
    for _ in range(ct.PACE_START_REFUSALS - 1):   # one refusal a minute, between large videos
        accept_writes(pacer, clock, 1)
        pacer.rate_limited(None, sent_at=clock.now)
        clock.now += 60
    pacer.rate_limited(None, sent_at=clock.now)
    assert pacer.rate is None
    for _ in range(ct.PACE_START_REFUSALS):       # a limit plainly hit, with nothing accepted lately
        pacer.rate_limited(None, sent_at=clock.now)
    assert pacer.rate == ct.PACE_START_MIN_RATE


def simulated(workers, seeds=3, **kwargs):
    return [pacer_sim.simulate(lambda clock: ct.Pacer(ct.Backoff(), clock=clock), workers=workers, seed=seed, **kwargs)
            for seed in range(seeds)]


@pytest.mark.parametrize("workers", [4, 16])
def test_pacer_uses_a_create_quota_to_the_full_with_few_refusals(workers):
    """Drive's create quota as the benchmark emulates it (5/s, burst 10, 20 ms), the run's lease
    written a few seconds before the workers start (the rate Drive accepted is diluted by it)."""
    runs = simulated(workers, writes=400, rate=5.0, burst=10, lead_s=4)
    assert min(run.used for run in runs) >= 0.98
    assert sum(run.refused for run in runs) / sum(run.writes for run in runs) <= 0.025
    noisy = simulated(workers, writes=400, rate=5.0, burst=10, lead_s=4, noise=0.01)   # and 1 % random refusals
    assert sum(run.used for run in noisy) / len(noisy) >= 0.95


@pytest.mark.parametrize("rate, writes, used, refused", [(1.0, 400, 0.98, 0.08), (20.0, 1600, 0.6, 0.02)])
def test_pacer_finds_slow_and_fast_limits(rate, writes, used, refused):
    runs = simulated(16, writes=writes, rate=rate, burst=10, noise=0.005)
    assert sum(run.used for run in runs) / len(runs) >= used
    assert max(run.refused_share for run in runs) <= refused


def test_random_refusals_without_a_limit_barely_slow_writes():
    clean = simulated(4, writes=2000, rate=0)
    noisy = simulated(4, writes=2000, rate=0, noise=0.05)
    assert sum(run.writes_per_s for run in noisy) >= 0.75 * sum(run.writes_per_s for run in clean)


# -- configuration --------------------------------------------------------------------------------

@pytest.mark.parametrize("mib, ok", [(0.25, True), (8, True), (1.5, True), (0.3, False), (0, False), (-1, False)])
def test_parse_chunk_size(mib, ok):
    if ok:
        assert ct.parse_chunk_size(mib) % ct.CHUNK_QUANTUM_BYTES == 0
    else:
        with pytest.raises(ct.UsageError):
            ct.parse_chunk_size(mib)


def test_config_precedence_flag_over_environment_over_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("S3_BUCKET_NAME=from-dotenv\nS3_PREFIX=dotenv/\nDRIVE_FOLDER_NAME=Dotenv folder\n")
    config = ct.load_config(["--env-file", str(dotenv), "--prefix", "flag/"],
                            {"S3_PREFIX": "env/", "DRIVE_FOLDER_NAME": "Env folder"})
    assert (config.bucket, config.prefix, config.folder_name) == ("from-dotenv", "flag/", "Env folder")


def test_one_table_of_settings_makes_every_config_field_flag_and_variable():
    derived = {"command", "daily_limit_text", "notices", "bucket_origin"}
    assert {f.name for f in dataclasses.fields(ct.Config)} == {row.field for row in ct.SETTINGS} | derived
    parser_flags = {flag for action in ct.build_parser()._actions for flag in action.option_strings}
    assert {flag for row in ct.SETTINGS for flag in row.flags} == parser_flags - {"-h", "--help", "--version"}
    help_text = ct.build_parser().format_help()
    environment = help_text.split("environment (", 1)[1].split("exit codes:", 1)[0]
    assert {name for row in ct.SETTINGS for name in row.env} <= set(re.findall(r"[A-Z0-9_]{4,}", environment))
    # a variable or a flag that names a setting reads it the same way, and an error names what the user typed
    environ = {"S3_BUCKET_NAME": "b", "CLOUD_TRANSFER_ORDER": "newest", "AWS_MAX_ATTEMPTS": "3"}
    config = ct.load_config([], environ)
    assert (config.order, config.aws_max_attempts, config.workers) == ("newest", 3, ct.DEFAULT_WORKERS)
    assert ct.load_config(["--order", "oldest"], environ).order == "oldest"
    with pytest.raises(ct.UsageError, match="^AWS_MAX_ATTEMPTS must be a whole number"):
        ct.load_config([], {**environ, "AWS_MAX_ATTEMPTS": "many"})
    with pytest.raises(ct.UsageError, match="^--workers must be a whole number, not 'four'"):
        ct.load_config(["--workers", "four"], environ)


@pytest.mark.parametrize("argv, message", [
    (["status", "--workers", "2"], "--workers only applies to transfer"),
    (["verify", "--html", "x.html"], "--html only applies to status"),
    (["status", "--report", "r.json"], "--report only applies to transfer"),
    (["transfer", "--yes"], "--yes only applies to rollback"),
    (["auth", "--json"], "--json only applies to verify and status"),
])
def test_a_flag_given_to_a_command_it_does_nothing_for_is_named(argv, message):
    with pytest.raises(ct.UsageError, match=f"^{message}$"):
        ct.load_config(argv, {"S3_BUCKET_NAME": "b"})


@pytest.mark.parametrize("argv, fragment", [
    (["--workers", "0"], "--workers"),
    (["--chunk-size", "0.3"], "--chunk-size"),
    (["--page-size", "5000"], "--page-size"),
    (["--quiet", "--verbose"], "--quiet"),
    (["--prefix", "/abs"], "--prefix"),
    (["--permanent"], "--permanent"),
    (["bogus-command"], "invalid choice"),
    (["--no-such-flag"], "unknown option --no-such-flag"),
])
def test_bad_flags_are_usage_errors(argv, fragment):
    with pytest.raises(ct.UsageError, match=fragment.replace("-", r"\-")):
        ct.load_config(argv, {"S3_BUCKET_NAME": "b"})


@pytest.mark.parametrize("argv, message", [
    # argparse took "photos" for the command: "invalid choice: 'photos' (choose from 'transfer', ...)"
    (["--bukcet", "photos"], "unknown option --bukcet (did you mean --bucket?)"),
    (["--bukcet=photos"], "unknown option --bukcet (did you mean --bucket?)"),
    (["status", "--jsn"], "unknown option --jsn (did you mean --json?)"),
    (["--dry"], "unknown option --dry (did you mean --dry-run?)"),   # argparse's abbreviation ran a dry run
    (["--daily-limit", "740", "GB"], "--daily-limit 740 GB: write the value without a space, as --daily-limit 740GB"),
    (["--max-duration", "6", "hours"], "--max-duration 6 hours: write the value without a space, as --max-duration 6h"),
    (["--bwlimit", "10", "MiB"], "as --bwlimit 10MiB"),
])
def test_a_mistyped_option_or_a_unit_apart_is_named_in_one_line(argv, message):
    with pytest.raises(ct.UsageError) as raised:
        ct.load_config(argv, {"S3_BUCKET_NAME": "b"})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_rclones_short_dry_run_and_values_that_look_like_options_are_taken():
    assert ct.load_config(["-n"], {"S3_BUCKET_NAME": "b"}).dry_run
    assert ct.load_config(["-nv"], {"S3_BUCKET_NAME": "b"}).verbose   # short flags together, as argparse takes them
    assert ct.load_config(["--exclude=-draft*"], {"S3_BUCKET_NAME": "b"}).filters == (("-", "-draft*"),)


def test_config_repr_hides_secrets():
    config = ct.load_config([], {"S3_BUCKET_NAME": "b", "AWS_ACCESS_KEY_ID": "AKIAXXXX",
                                 "AWS_SECRET_ACCESS_KEY": "very-secret-value"})
    assert "very-secret-value" not in repr(config)


def test_secret_filter_blanks_secrets():
    secrets = ct.SecretFilter()
    secrets.add("s3cr3t-value", None, "")
    assert secrets.redact("key=s3cr3t-value!") == "key=***!"


# -- checkpoint -----------------------------------------------------------------------------------

BINDING = {"bucket": "b", "prefix": "", "folder": "name:X"}


def test_checkpoint_journal_replays_and_compacts(tmp_path):
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    checkpoint.record("a.jpg", ct.CheckpointEntry(status="done", etag="e", size=1, drive_id="d1", run="r"))
    checkpoint.set_root("root-id")
    checkpoint.flush()
    reloaded = ct.Checkpoint.load(path, BINDING)
    assert reloaded.get("a.jpg").drive_id == "d1" and reloaded.root_folder_id == "root-id"
    reloaded.compact()
    assert not reloaded.journal_path.exists()
    assert ct.Checkpoint.load(path, BINDING).get("a.jpg").status == "done"
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_checkpoint_torn_last_line_is_ignored_and_cut_off_so_later_appends_stay_whole(tmp_path):
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    checkpoint.record("a.jpg", ct.CheckpointEntry(status="done", etag="e", size=1))
    checkpoint.flush()
    checkpoint.record("b.jpg", ct.CheckpointEntry(status="done", etag="e", size=1))
    checkpoint.flush()
    whole = checkpoint.journal_path.read_bytes()
    with open(checkpoint.journal_path, "ab") as journal:
        journal.write(b'{"key": "c.jpg", "entr')               # a crash cut this write short
    read_only = ct.Checkpoint.load(path, BINDING, create=False)
    assert read_only.get("a.jpg") and read_only.get("b.jpg") and read_only.get("c.jpg") is None
    assert checkpoint.journal_path.read_bytes().endswith(b'"entr')  # status/verify never write
    resumed = ct.Checkpoint.load(path, BINDING)
    assert checkpoint.journal_path.read_bytes() == whole
    resumed.record("d.jpg", ct.CheckpointEntry(status="done", etag="e", size=1))
    resumed.flush()
    assert ct.Checkpoint.load(path, BINDING).get("d.jpg") is not None


def test_checkpoint_damage_in_the_middle_of_the_journal_is_refused(tmp_path):
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    checkpoint.record("a.jpg", ct.CheckpointEntry(status="done", etag="e", size=1))
    checkpoint.flush()
    with open(checkpoint.journal_path, "ab") as journal:
        journal.write(b'{"key": "b.jpg", "entr\n{"key": "c.jpg", "entry": {"status": "done", "etag": "e", "size": 1}}\n')
    with pytest.raises(ct.CheckpointError, match="damaged at line 1"):
        ct.Checkpoint.load(path, BINDING)


def test_checkpoint_is_written_only_once_there_is_something_to_keep(tmp_path):
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    assert not path.exists()
    checkpoint.set_root("root-id")
    checkpoint.flush()
    assert json.loads(path.read_text())["root_folder_id"] == "root-id"


@pytest.mark.parametrize("content, fragment", [
    (b"{not json", "not valid JSON"),
    (json.dumps({"kind": "something else"}).encode(), "not a cloud_transfer checkpoint"),
    (json.dumps({"kind": ct.CHECKPOINT_KIND, "version": 99, "binding": BINDING}).encode(), "newer"),
    (json.dumps({"kind": ct.CHECKPOINT_KIND, "version": 1,
                 "binding": {**BINDING, "bucket": "other"}}).encode(), "belongs to bucket 'other'"),
])
def test_unusable_checkpoint_is_refused_and_left_untouched(tmp_path, content, fragment):
    path = tmp_path / "cp.json"
    path.write_bytes(content)
    with pytest.raises(ct.CheckpointError, match=fragment):
        ct.Checkpoint.load(path, BINDING)
    assert path.read_bytes() == content


def test_checkpoint_of_an_older_version_loads_then_is_rewritten_one_object_per_line(tmp_path):
    path = tmp_path / "cp.json"
    entries = {"b.jpg": {"status": "done", "etag": "e1", "size": 5, "md5": "e1", "drive_id": "d1", "run": "r1",
                         "attempts": 1},
               "a.jpg": {"status": "failed", "size": 6, "reason": "x"}}   # no etag: older versions dropped ""
    path.write_text(json.dumps({"kind": ct.CHECKPOINT_KIND, "version": 1, "binding": BINDING, "runs": [],
                                "objects": entries}, indent=1))
    checkpoint = ct.Checkpoint.load(path, BINDING)
    assert checkpoint.done_run("b.jpg", "e1", 5) == "r1" and checkpoint.get("a.jpg").etag == ""
    assert checkpoint.get("b.jpg").drive_id == "d1"
    checkpoint.finish()   # read whole once, then rewritten in the current form
    written = path.read_bytes()
    lines = written.splitlines()
    assert lines[lines.index(ct.OBJECTS_LINE.rstrip(b"\n")) + 1].startswith(b'"a.jpg":{"status":"failed"')
    assert json.loads(written)["version"] == ct.CHECKPOINT_VERSION
    assert json.loads(written)["objects"]["b.jpg"] == {"status": "done", "etag": "e1", "size": 5, "id": "d1", "run": "r1"}
    reloaded = ct.Checkpoint.load(path, BINDING)
    assert [key for key, _ in reloaded.entries()] == ["a.jpg", "b.jpg"]
    assert reloaded.done_run("b.jpg", "e1", 5) == "r1" and reloaded.get("a.jpg").reason == "x"
    assert reloaded.get("b.jpg").drive_id == "d1" and reloaded.get("b.jpg").md5 == "e1"


def test_checkpoint_index_tells_apart_keys_whose_hashes_collide(tmp_path, monkeypatch):
    import builtins
    monkeypatch.setattr(ct, "hash", lambda value: 42 if isinstance(value, str) else builtins.hash(value),
                        raising=False)   # every key hashes alike
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    checkpoint.record("a.jpg", ct.CheckpointEntry(status="done", etag="e", size=1, run="r1"))
    checkpoint.record("b.jpg", ct.CheckpointEntry(status="failed", etag="e", size=1, run="r1"))
    checkpoint.compact()
    reloaded = ct.Checkpoint.load(path, BINDING)
    assert reloaded.done_run("a.jpg", "e", 1) == "r1"
    assert reloaded.done_run("b.jpg", "e", 1) is None
    assert reloaded.done_run("c.jpg", "e", 1) is None and reloaded.get("c.jpg") is None   # same version, other key
    assert reloaded.get("b.jpg").status == "failed"
    single = ct.Checkpoint.load(tmp_path / "one.json", BINDING)
    single.record("a.jpg", ct.CheckpointEntry(status="done", etag="e", size=1, run="r1"))
    single.compact()
    single = ct.Checkpoint.load(tmp_path / "one.json", BINDING)
    assert single.done_run("c.jpg", "e", 1) is None    # one line with its hash, but not its key


def test_listing_pages_skip_botocores_second_xml_parse_and_nothing_else_does(monkeypatch):
    import boto3
    import botocore.handlers
    parsed = []
    looks = botocore.handlers._looks_like_special_case_error
    monkeypatch.setattr(botocore.handlers, "_looks_like_special_case_error",
                        lambda status, body: parsed.append(body) or looks(status, body))
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    assert ct.lighten_200_error_check(client)   # botocore's handler is where it is expected
    handlers = list(client.meta.events._emitter._handlers.prefix_search("before-parse.s3.ListObjectsV2"))
    assert botocore.handlers._handle_200_error not in handlers   # private, but what is registered is the point
    check = handlers[0]
    listing = client.meta.service_model.operation_model("ListObjectsV2")
    page = b"<ListBucketResult><Contents/></ListBucketResult>\n"
    for body, status in [(page, 200),
                         (page.strip() + b"<!-- XML allows this -->", 200),   # botocore's parse says
                         (b"<ListBucketResult><Conte", 500),                   # cut short
                         (b"<Error><Code>InternalError</Code></Error>", 500),  # an error sent as 200
                         (b"", 200)]:                                          # botocore accepts an empty one
        answer = {"status_code": 200, "body": body, "headers": {}}
        check(listing, answer)
        assert answer["status_code"] == status, body
    assert page not in parsed and len(parsed) == 4   # the end tag spared one parse; the rest were parsed
    other = {"status_code": 200, "body": b"<Error><Code>InternalError</Code></Error>", "headers": {}}
    check(client.meta.service_model.operation_model("CompleteMultipartUpload"), other)
    assert other["status_code"] == 500   # every other operation: botocore's check


def test_checkpoint_index_keeps_run_numbers_past_sixteen_bits():
    index = ct.SnapshotIndex()
    count = 0x10000 + 5
    index.add_lines(((f"k{n}", {"status": "done", "etag": "e", "size": 1, "run": f"r{n}"}) for n in range(count)),
                    range(count))
    index.seal(os.open(os.devnull, os.O_RDONLY))
    try:
        assert index.done_run(f"k{count - 1}", "e", 1) == f"r{count - 1}"
        assert index.done_run("k7", "e", 1) == "r7"
    finally:
        index.close()


def test_checkpoint_snapshot_cut_short_is_refused(tmp_path):
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    for n in range(5):
        checkpoint.record(f"{n}.jpg", ct.CheckpointEntry(status="done", etag="e", size=n))
    checkpoint.compact()
    whole = path.read_bytes()
    path.write_bytes(whole[: whole.index(b'"3.jpg"')])
    with pytest.raises(ct.CheckpointError, match="damaged"):
        ct.Checkpoint.load(path, BINDING)
    read_only = ct.Checkpoint.load(path, BINDING, create=False)   # status streams it instead
    with pytest.raises(ct.CheckpointError, match="damaged"):
        list(read_only.entries())


def test_checkpoint_compacts_mid_run_so_a_first_run_keeps_little_in_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(ct, "COMPACT_AFTER_OBJECTS", 3)
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    for n in range(7):
        checkpoint.record(f"{n}.jpg", ct.CheckpointEntry(status="done", etag="e", size=n, run="r"))
        assert len(checkpoint._recent) < 3
    checkpoint.record("3.jpg", ct.CheckpointEntry(status="failed", etag="e", size=3, reason="again"))
    assert [(key, entry.status) for key, entry in checkpoint.entries()] == [
        (f"{n}.jpg", "failed" if n == 3 else "done") for n in range(7)]   # newer wins, key order
    checkpoint.finish()
    reloaded = ct.Checkpoint.load(path, BINDING)
    assert reloaded.get("3.jpg").reason == "again" and reloaded.done_run("6.jpg", "e", 6) == "r"


def test_checkpoint_killed_after_compaction_before_the_journal_is_gone_keeps_the_newest(tmp_path, monkeypatch):
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    checkpoint.record("k.jpg", ct.CheckpointEntry(status="done", etag="e", size=1, run="r1"), durable=True)
    checkpoint.record("k.jpg", ct.CheckpointEntry(status="rolled_back", etag="e", size=1, run="r2"))  # only buffered
    real_unlink = os.unlink
    monkeypatch.setattr(ct.os, "unlink", lambda p, *a, **k: None if str(p) == str(checkpoint.journal_path)
                        else real_unlink(p, *a, **k))   # killed between the snapshot's rename and this
    checkpoint.compact()
    assert checkpoint.journal_path.exists()
    reloaded = ct.Checkpoint.load(path, BINDING)   # the journal replays over the new snapshot
    assert reloaded.get("k.jpg").status == "rolled_back" and reloaded.done_run("k.jpg", "e", 1) is None


def test_checkpoint_without_objects_is_written_in_the_line_form(tmp_path):
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    checkpoint.save_run({"id": "r1"})
    header, first_object = ct.read_snapshot_header(path)   # not mistaken for an older version's
    assert header["runs"] == [{"id": "r1"}] and list(ct.Checkpoint.load(path, BINDING).entries()) == []


def test_reset_checkpoint_moves_it_aside(tmp_path):
    path = tmp_path / "cp.json"
    path.write_bytes(b"{not json")
    checkpoint = ct.Checkpoint.load(path, BINDING, reset=True)
    assert list(checkpoint.entries()) == []
    assert [p.read_bytes() for p in tmp_path.glob("cp.json.*.bak")] == [b"{not json"]


def test_run_lock_is_exclusive(tmp_path):
    with ct.RunLock(tmp_path / "x.lock"):
        with pytest.raises(ct.LockHeldError, match="x.lock"):
            with ct.RunLock(tmp_path / "x.lock"):
                pass
    with ct.RunLock(tmp_path / "x.lock"):
        pass


def test_a_run_starting_while_status_asks_the_lock_waits_for_it_instead_of_exiting_4(tmp_path):
    import fcntl
    lock = tmp_path / "x.lock"
    lock.write_text("")
    asker = os.open(lock, os.O_RDONLY)
    fcntl.flock(asker, fcntl.LOCK_SH | fcntl.LOCK_NB)   # what lock_holder() holds for an instant
    waits: list[float] = []

    def status_lets_go(seconds: float) -> None:
        waits.append(seconds)
        os.close(asker)

    with ct.RunLock(lock, wait=status_lets_go):
        assert ct.lock_holder(lock) == os.getpid()
    assert len(waits) == 1
    with ct.RunLock(lock):   # held for good (a live run): a few short tries, then exit 4
        tries: list[float] = []
        with pytest.raises(ct.LockHeldError):
            with ct.RunLock(lock, wait=tries.append):
                pass
        assert len(tries) == ct.LOCK_ATTEMPTS - 1 and sum(tries) <= 0.2


def test_readme_and_help_document_the_same_flags():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    parser = ct.build_parser()
    flags_in_help = {flag for action in parser._actions for flag in action.option_strings
                     if flag.startswith("--")} - {"--help", "--version"}
    table = readme.split("### Options", 1)[1].split("\n#", 1)[0]
    flags_in_readme = set(re.findall(r"`(--[a-z][a-z-]+)", table))
    assert flags_in_help == flags_in_readme


def test_reporter_logs_a_progress_line_per_interval_without_a_terminal(caplog, monkeypatch):
    clock = FakeClock()
    stats = ct.Stats()
    reporter = ct.Reporter(stats, enabled=True, use_bars=False, clock=clock, interval_s=30)
    caplog.set_level("INFO", logger="cloud_transfer")
    monkeypatch.setattr(ct.log, "propagate", True)   # main() turns it off; caplog listens at the root
    monkeypatch.setattr(ct.log, "handlers", [])       # ...and leaves its own handlers behind
    stats.add("eligible", 10)
    stats.add("transferred", 3)
    stats.add("transferred_bytes", 3 * 1024 * 1024)
    reporter.tick()
    assert not [r for r in caplog.records if "progress" in r.getMessage()]
    clock.now += 30
    reporter.tick()
    clock.now += 1
    reporter.tick()
    lines = [r.getMessage() for r in caplog.records if "progress" in r.getMessage()]
    assert lines == ["progress: 3/10+ files, 3.0 MiB at 102.4 KiB/s, 0 failed"]
    limited = ct.Reporter(stats, enabled=True, use_bars=False, clock=clock, interval_s=30,
                          bandwidth=ct.BandwidthLimit(((0, 4 * 1024 ** 2),), threading.Event()))
    clock.now += 30
    limited.tick()
    assert "at 102.4 KiB/s (--bwlimit 4.0 MiB/s), 0 failed" in caplog.records[-1].getMessage()


def test_summary_table_counts_and_request_cost():
    stats = ct.Stats()
    for name, n in {"listed": 12, "eligible": 10, "transferred": 8, "adopted": 2, "drive_requests": 15}.items():
        stats.add(name, n)
    stats.skip("folder marker")
    stats.skip("folder marker")
    text = ct.summary_table(stats.as_dict(), 2.0, "run-1")
    assert "folder marker 2" in text and "15 (1.50 per file)" in text and "run-1" in text


@pytest.mark.parametrize("value, offset, zone, expected", [
    ("2014:07:05 18:30:12", "+02:00", None, "2014-07-05T16:30:12.000Z"),
    ("2014:07:05 18:30:12", "-05:30", None, "2014-07-06T00:00:12.000Z"),
    ("2014:07:05 18:30:12", "", "UTC", "2014-07-05T18:30:12.000Z"),
    ("2014:07:05 18:30:12", "", "Europe/Paris", "2014-07-05T16:30:12.000Z"),    # summer time
    ("2014:01:05 18:30:12", "", "Europe/Paris", "2014-01-05T17:30:12.000Z"),    # winter time
    ("2014:07:05 18:30:12", "", "America/New_York", "2014-07-05T22:30:12.000Z"),
    ("0000:00:00 00:00:00", "", "UTC", None),
    ("1970:01:01 00:00:00 ", "", "UTC", None),      # an unset clock
    ("2000:01:01 00:00:00", "+01:00", None, None),
    ("1899:12:31 23:00:00", "", "UTC", None),
    ("2099:01:01 00:00:00", "", "UTC", None),
    ("garbage", "", "UTC", None),
    ("2014:07:05 18:30:12", "+24:00", "UTC", "2014-07-05T18:30:12.000Z"),   # malformed zone: ignored, not fatal
    ("2014:07:05 18:30:12", "+05:99", "UTC", "2014-07-05T18:30:12.000Z"),
])
def test_parse_exif_datetime(value, offset, zone, expected):
    moment = ct.parse_exif_datetime(value, offset, ct.parse_timezone(zone))
    assert (ct.rfc3339(moment) if moment else None) == expected


def test_exif_time_without_offset_is_read_in_the_machine_zone_by_default(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert ct.rfc3339(ct.parse_exif_datetime("2014:07:05 18:30:12")) == "2014-07-05T09:30:12.000Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_unknown_timezone_is_a_usage_error():
    with pytest.raises(ct.UsageError, match="not a time zone name"):
        ct.parse_timezone("Mars/Olympus_Mons")


def test_capture_time_from_a_real_exif_block_and_none_without_one(tmp_path):
    from tests.conftest import jpeg_with_exif

    photo = tmp_path / "a.jpg"
    photo.write_bytes(jpeg_with_exif("2019:12:24 20:15:00", "+01:00"))
    assert ct.rfc3339(ct.photo_capture_time(photo, None)) == "2019-12-24T19:15:00.000Z"
    photo.write_bytes(b"\xff\xd8\xff\xe0 no exif here")
    assert ct.photo_capture_time(photo, None) is None


def test_metadata_carries_one_date_properties_and_provenance():
    download = ct.Download(md5="a" * 32, content_type="image/jpeg", source_mtime=None,
                           metadata={"camera": "x100", "mtime": "1577000000", "long": "v" * 200})
    taken = ct.OriginalDate(dt.datetime(2019, 12, 24, 19, 15, tzinfo=dt.timezone.utc), "exif")
    metadata = ct.build_file_metadata(obj("x/y.jpg"), "y.jpg", "bkt", "parent", "a" * 32, download, taken, "run-1")
    assert metadata["name"] == "y.jpg" and metadata["parents"] == ["parent"]
    assert metadata["createdTime"] == metadata["modifiedTime"] == "2019-12-24T19:15:00.000Z"
    assert metadata["properties"] == {"camera": "x100", "mtime": "1577000000"}   # "long" does not fit
    assert all(len((k + v).encode()) <= 124 for k, v in metadata["appProperties"].items())


def test_properties_keep_at_most_30_entries():
    fitting = ct.drive_properties({f"k{n:02d}": "v" for n in range(40)}, "a.jpg")
    assert len(fitting) == 30 and "k00" in fitting and "k30" not in fitting


@pytest.mark.parametrize("key, content_type, expected", [
    ("a/IMG_1.HEIC", "binary/octet-stream", "image/heic"),
    ("a/IMG_1.cr3", "application/octet-stream", "image/x-canon-cr3"),
    ("a/IMG_1.dng", "", "image/x-adobe-dng"),
    ("a/clip.MOV", None, "video/quicktime"),
    ("a/clip.mts", "binary/octet-stream", "video/mp2t"),
    ("a/photo.jpg", "image/png", "image/png"),       # S3 says so: kept
    ("a/photo.jpg", "image/jpg", "image/jpeg"),      # a common misspelling
    ("a/photo.jpg", "Image/JPEG; charset=binary", "image/jpeg"),
    ("a/notes.txt", "binary/octet-stream", "text/plain"),
    ("a/unknown", None, "application/octet-stream"),
    ("a/photo.jpg", "jpg", "image/jpeg"),              # not type/subtype: the extension decides
    ("a/clip.mp4", "video/", "video/mp4"),
])
def test_mime_type_from_s3_unless_generic_then_from_the_extension(key, content_type, expected):
    assert ct.guess_mimetype(key, content_type) == expected


@pytest.mark.parametrize("metadata, expected", [
    ({"mtime": "1577000000.5"}, "2019-12-22T07:33:20.500Z"),
    ({"Mtime": "1577000000"}, "2019-12-22T07:33:20.000Z"),
    ({"MTIME": "1577000000"}, "2019-12-22T07:33:20.000Z"),
    ({"s3cmd-attrs": "atime:1600000000/ctime:1600000000/gid:0/mode:33188/mtime:1577000000/uid:0"},
     "2019-12-22T07:33:20.000Z"),
    ({"src_last_modified_millis": "1577000000000"}, "2019-12-22T07:33:20.000Z"),
    ({"mtime": "1577000000000"}, "2019-12-22T07:33:20.000Z"),                  # older Cyberduck: milliseconds
    ({"Mc-Attrs": "atime:1611177602#786120200/gid:0/mtime:1577000000#786120200/uid:0"}, "2019-12-22T07:33:20.000Z"),
    ({"file-mtime": "1577000000000000000ns"}, "2019-12-22T07:33:20.000Z"),     # AWS DataSync
    ({"mtime": "0"}, None),                # an unset clock
    ({"mtime": "2000000000"}, None),       # 2033: in the future, not 1970-01-24 in milliseconds
    ({"mtime": "not a number"}, None),
    ({}, None),
])
def test_original_file_time_from_s3_user_metadata(metadata, expected):
    moment = ct.metadata_mtime(metadata)
    assert (ct.rfc3339(moment) if moment else None) == expected


def test_a_failed_journal_append_leaves_no_half_line_behind(tmp_path, monkeypatch):
    """A short write then ENOSPC: the half line is cut, so a later append cannot glue onto it."""
    import errno
    import os

    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    checkpoint.save_run({"id": "r1", "outcome": "running"})
    checkpoint.record("a.jpg", ct.CheckpointEntry(status="done", etag="e", size=1, run="r1"))
    checkpoint.flush()
    before = checkpoint.journal_path.read_bytes()
    checkpoint.record("b.jpg", ct.CheckpointEntry(status="done", etag="f", size=1, run="r1"))
    real_write, calls = os.write, []

    def disk_full(fd, data):
        calls.append(1)
        if len(calls) == 1:
            return real_write(fd, data[: len(data) // 3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ct.os, "write", disk_full)
    with pytest.raises(ct.CloudTransferError, match="cannot write the checkpoint journal"):
        checkpoint.flush()
    monkeypatch.setattr(ct.os, "write", real_write)
    assert checkpoint.journal_path.read_bytes() == before
    checkpoint.flush()                                 # space again: the buffered line goes in whole
    reloaded = ct.Checkpoint.load(path, BINDING)
    assert reloaded.get("a.jpg") and reloaded.get("b.jpg")


@pytest.mark.parametrize("value", [
    "2026-11-30T12:00:05.000Z", "2026-11-30T12:00:05Z", "2026-11-30T12:00:05.123456789Z",   # Go servers
    "Mon, 30 Nov 2026 12:00:05 GMT", "1796040005",
])
def test_s3_timestamps_parse_as_botocore_would(value):
    import botocore.utils

    assert ct.parse_s3_timestamp(value) == botocore.utils.parse_timestamp(value)


# -- a download read behind by an upload ------------------------------------------------------------

class _ScriptedSource:
    """Stands in for S3Source.stream/checked: hands `body` from `start` on in blocks, one per `step`
    release when stepped, and records where each pass started."""

    def __init__(self, body, block=1000, fail=None, stepped=True, etag_checked=False):
        self.body, self.block, self.fail = body, block, fail
        self.step = threading.Semaphore(0) if stepped else None
        self.starts, self.etag_checked = [], etag_checked

    def stream(self, obj, write, start, on_response):
        self.starts.append(start)
        on_response(ct.Download("", "video/mp4", None, etag_checked=self.etag_checked))
        for at in range(start, len(self.body), self.block):
            if self.step:
                self.step.acquire()
            write(self.body[at:at + self.block])
        if self.fail:
            raise self.fail
        return ct.Download("", "video/mp4", None)

    def checked(self, obj, download, received):
        assert received == len(self.body)
        return download


def _staged(tmp_path, source, window, size=None):
    stream = open(tmp_path / "staged", "w+b")
    staged = ct.StagedDownload(size or len(source.body), stream, threading.Event(), window)
    listed = types.SimpleNamespace(key="v.mp4", size=len(source.body), etag="0123456789abcdef" * 2)
    thread = threading.Thread(target=staged.fill, args=(source, listed))
    thread.start()
    return staged, thread, stream


def test_staged_download_lets_an_upload_read_bytes_as_soon_as_they_are_on_disk(tmp_path):
    source = _ScriptedSource(b"a" * 1000 + b"b" * 1000 + b"c" * 500)
    staged, thread, stream = _staged(tmp_path, source, window=10_000)
    assert staged.headers().content_type == "video/mp4"   # before any byte
    reader = staged.reader()
    assert reader.seek(0, os.SEEK_END) == 2500             # MediaIoBaseUpload's size: the object's
    reader.seek(0)
    source.step.release()
    assert reader.read(1000) == b"a" * 1000                # the first block, the rest not yet there
    got = []
    later = threading.Thread(target=lambda: got.append(reader.read(1500)))
    later.start()
    source.step.release()
    source.step.release()
    later.join(timeout=10)
    assert got == [b"b" * 1000 + b"c" * 500]
    staged.close()
    thread.join(timeout=10)
    assert staged.result.md5 == hashlib.md5(source.body).hexdigest() and staged.error is None
    assert staged.holds_all() and stream.read() == source.body   # a retry can send the file as it is
    stream.close()


def test_staged_download_hands_a_failed_download_to_the_reader(tmp_path):
    failure = ct.ObjectError(ct.Verdict(ct.Verdict.RETRY, "corrupted download"))
    source = _ScriptedSource(b"a" * 100, fail=failure)
    staged, thread, stream = _staged(tmp_path, source, window=10_000, size=1000)   # cut off after 100
    source.step.release()
    reader = staged.reader()
    with pytest.raises(ct.ObjectError, match="corrupted download"):
        reader.read(1000)
    staged.close()
    thread.join(timeout=10)
    stream.close()


def test_staging_window_holds_only_what_drive_lacks_and_fetches_again_what_it_overwrote(tmp_path):
    body = bytes(range(256)) * 40   # 10,240 bytes through a 3,000-byte window
    source = _ScriptedSource(body, block=700, stepped=False)
    staged, thread, stream = _staged(tmp_path, source, window=3000)
    reader = staged.reader()
    reader.seek(0, os.SEEK_END)
    for chunk_start in range(0, 6000, 1000):   # as Drive acknowledges chunk after chunk
        reader.seek(chunk_start)
        assert reader.read(1000) == body[chunk_start:chunk_start + 1000]
        assert os.fstat(stream.fileno()).st_size <= 3000
    reader.seek(500)   # a session started again: bytes 500.. were overwritten
    assert reader.read(2000) == body[500:2500]
    for chunk_start in range(2500, len(body), 1000):
        reader.seek(chunk_start)
        assert reader.read(1000) == body[chunk_start:chunk_start + 1000]
    staged.close()
    thread.join(timeout=10)
    assert source.starts == [0, 500] and staged.error is None
    assert staged.result.md5 == hashlib.md5(body).hexdigest()   # of every byte, hashed once
    assert not staged.holds_all() and os.fstat(stream.fileno()).st_size <= 3000
    stream.close()


def test_staging_window_skips_to_where_a_resumed_session_goes_on_when_the_etag_is_the_md5(tmp_path):
    body = b"x" * 20_000
    for etag_checked, starts in ((True, [0, 15_000]), (False, [0])):
        source = _ScriptedSource(body, block=1000, stepped=False, etag_checked=etag_checked)
        staged, thread, stream = _staged(tmp_path, source, window=3000)
        reader = staged.reader()
        staged.headers()
        for chunk_start in range(15_000, len(body), 1000):   # Drive holds 15,000 bytes of an earlier run's session
            reader.seek(chunk_start)
            assert reader.read(1000) == body[chunk_start:chunk_start + 1000]
        staged.close()
        thread.join(timeout=10)
        assert source.starts == starts
        # skipped: the ETag stands for the MD5 (checked against Drive's); else every byte was hashed
        assert staged.result.md5 == ("0123456789abcdef" * 2 if etag_checked else hashlib.md5(body).hexdigest())
        stream.close()


def test_verify_walk_spill_finds_copies_by_provenance_or_path_even_when_hashes_collide(tmp_path, monkeypatch):
    import builtins
    monkeypatch.setattr(ct, "hash", lambda value: 7 if isinstance(value, tuple) else builtins.hash(value),
                        raising=False)   # every path and provenance hashes alike
    copies = ct.DriveCopies(tmp_path)

    def drive_file(file_id: str, source: str | None) -> ct.DriveFile:
        return ct.DriveFile(id=file_id, name="x.jpg", mime_type="image/jpeg", parent_id="p", size=3, md5="m",
                            app_properties={ct.PROP_SOURCE: source} if source else {})

    copies.add(("a",), [drive_file("1", "s1"), drive_file("3", None)])   # the second copied by another tool
    copies.add(("2020", "01"), [drive_file("2", "s1")])                 # a duplicate, elsewhere
    copies.add(("b",), [drive_file("4", "s9")])
    copies.seal()
    try:
        ours = copies.copies_of("s1", ("a", "x.jpg"))
        assert sorted(f.id for _, f in ours) == ["1", "2"] and ours[0][1].app_properties == {ct.PROP_SOURCE: "s1"}
        assert [f.id for _, f in copies.copies_of("s2", ("a", "x.jpg"))] == ["3"]
        assert copies.copies_of("s2", ("b", "x.jpg")) == [] and copies.copies_of("s2", None) == []
        for position, _ in ours:
            copies.claimed[position] = 1
        assert copies.claimed.count(0) == 2 and copies.unclaimed(10) == ["a/x.jpg", "b/x.jpg"]
    finally:
        copies.close()


def test_progress_bars_mark_a_growing_total_guess_no_time_left_until_it_is_known_and_name_units_right():
    import re
    import io

    listing = [True]
    files = ct.progress_bar("files", position=0, as_bytes=False, growing=lambda: listing[0], file=io.StringIO())
    data = ct.progress_bar("bytes", position=1, as_bytes=True, growing=lambda: listing[0], file=io.StringIO())
    files.total, data.total = 51, 51 * 2 ** 20
    files.update(30)
    data.update(30 * 2 ** 20)
    shown = str(files)
    assert "30/51+ files" in shown and " left" not in shown
    assert "30.0 MiB/51.0 MiB+" in str(data) and "MB" not in str(data)
    assert re.search(r"\d (B|KiB|MiB|GiB|TiB)/s\]$", str(data)), str(data)
    listing[0] = False   # the listing is complete: the total is the total
    assert "30/51 files" in str(files) and " left" in str(files)
    files.close()
    data.close()
