"""Issue 17: the Drive folder is shared (other runs, other machines, the user's own hands, AWS's and
Google's limits). Each test runs the real script against moto and the Drive emulator."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

import boto3
import pytest

import cloud_transfer as ct
from tests.conftest import AWS_KEY_ID, AWS_SECRET, assert_drive_matches, one_line_error, photo_bytes
from tests.drive_emulator import Faults
from tests.s3_fault_proxy import S3FaultProxy

ROOT = "Amazon Photos Transfer"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_a_content_type_without_a_slash_uploads_with_the_extensions_type(env):
    # upload scripts write headers such as `jpg`; googleapiclient cannot send a body typed so
    bodies = {"a/small.jpg": env.put("a/small.jpg", photo_bytes("s", 2000), ContentType="jpg"),
              "a/clip.mov": env.put("a/clip.mov", photo_bytes("v", 3000), ContentType="mov")}

    assert env.main() == 0

    files = env.drive_files()
    assert files[f"{ROOT}/a/small.jpg"][0]["mimeType"] == "image/jpeg"
    assert files[f"{ROOT}/a/clip.mov"][0]["mimeType"] == "video/quicktime"
    assert_drive_matches(env, bodies)


def _aws_profile(env, tmp_path, profile_lines: str) -> None:
    """Runs whose AWS sign-in comes from a profile in its own config file."""
    config = tmp_path / "aws-config"
    config.write_text(f"[profile photos]\n{profile_lines}\n")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.vars.pop(name)
    env.vars.update(AWS_CONFIG_FILE=str(config), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
                    AWS_PROFILE="photos")


def test_an_expired_sso_sign_in_is_an_auth_error_with_the_login_command(env, tmp_path):
    env.put("a/1.jpg")
    _aws_profile(env, tmp_path, "sso_start_url = https://example.awsapps.com/start\n"
                             "sso_region = us-east-1\nsso_account_id = 123456789012\nsso_role_name = Photos")

    result = env.run()   # HOME is the run's own directory: no SSO token is cached

    assert result.returncode == 3, result.stderr
    line = one_line_error(result)
    assert "AWS sign-in" in line and "aws sso login --profile photos" in line
    assert "network" not in line
    assert env.drive_files() == {}


def test_a_failing_credential_process_is_an_auth_error_not_an_outage(env, tmp_path):
    env.put("a/1.jpg")
    _aws_profile(env, tmp_path, "credential_process = false")

    result = env.run()

    assert result.returncode == 3, result.stderr
    assert "CredentialRetrievalError" in one_line_error(result)


def test_a_sign_in_that_expires_mid_run_stops_with_exit_3_and_the_next_run_finishes(env, tmp_path):
    # A credential_process whose sessions last 5 minutes: botocore asks it again before each request
    # (it renews 10 minutes ahead), and it stops giving credentials after a few, as an SSO or MFA
    # session does at its end.
    bodies = {f"a/{n:02}.jpg": env.put(f"a/{n:02}.jpg") for n in range(30)}
    calls, allowed = tmp_path / "calls", tmp_path / "allowed"
    allowed.write_text("12")
    process = tmp_path / "signin.py"
    process.write_text(f"""import datetime, json, pathlib, sys
calls = pathlib.Path({str(calls)!r})
count = int(calls.read_text()) + 1 if calls.exists() else 1
calls.write_text(str(count))
if count > int(pathlib.Path({str(allowed)!r}).read_text()):
    sys.exit("the session has expired")
soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)
print(json.dumps({{"Version": 1, "AccessKeyId": "AKIAPROCESS0000001", "SecretAccessKey": "process-secret",
                  "SessionToken": "session", "Expiration": soon.isoformat()}}))
""")
    _aws_profile(env, tmp_path, f"credential_process = {sys.executable} {process}")

    result = env.run("--workers", "2")

    assert result.returncode == 3, result.stdout + result.stderr
    assert "CredentialRetrievalError" in result.stderr and "cannot reach S3" not in result.stderr
    assert "process-secret" not in result.stdout + result.stderr
    copied = len(env.drive_files())
    assert 0 < copied < len(bodies)
    allowed.write_text("1000000")   # signed in again

    assert env.run().returncode == 0
    assert_drive_matches(env, bodies)


# -- item 6: archived objects --------------------------------------------------------------------

@pytest.fixture
def penv(env, moto_url):
    """`env` with S3 behind the fault proxy, which plays AWS's archive answers moto lacks."""
    with S3FaultProxy(moto_url) as proxy:
        env.vars["AWS_ENDPOINT_URL"] = proxy.url
        env.proxy = proxy
        env.proxy_s3 = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1",
                                    aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET)
        yield env


def _archive_library(env) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """0.3 MiB readable, 4 MiB in GLACIER, DEEP_ARCHIVE and an Intelligent-Tiering archive tier."""
    readable = {f"a/{n}.jpg": env.put(f"a/{n}.jpg", photo_bytes(f"a{n}", 100_000)) for n in range(3)}
    archived = {"cold/glacier.jpg": env.put("cold/glacier.jpg", photo_bytes("g", 1_400_000), StorageClass="GLACIER"),
                "cold/deep.mov": env.put("cold/deep.mov", photo_bytes("d", 1_400_000), StorageClass="DEEP_ARCHIVE"),
                "tiered/old.jpg": env.put("tiered/old.jpg", photo_bytes("t", 1_400_000))}
    env.proxy.intelligent_tiering["tiered/old.jpg"] = "ARCHIVE_ACCESS"
    return readable, archived


def test_archived_objects_wait_for_a_restore_without_blocking_the_copy(penv):
    env = penv
    readable, archived = _archive_library(env)
    env.drive.faults = Faults(storage_quota_bytes=2 * 1024 * 1024)   # room for the readable ones only

    first = env.run()

    assert first.returncode == 0, first.stderr
    output = first.stdout + first.stderr
    assert "3 objects (4.0 MiB) wait for a restore" in output
    assert f"aws s3api restore-object --bucket {env.bucket} --key " in output
    folders = {f["name"] for f in env.drive.list_files(include_trashed=True)
               if f["mimeType"] == "application/vnd.google-apps.folder"}
    assert folders == {ROOT, "a"}   # none made for what could not be read
    assert_drive_matches(env, readable)   # and verify calls none of them missing
    assert sum(env.proxy.gets[key] for key in archived) == 0

    second = env.run()

    assert second.returncode == 0, second.stderr
    assert "3 objects (4.0 MiB) wait for a restore" in second.stdout + second.stderr
    assert sum(env.proxy.gets[key] for key in archived) == 0   # asked with a HEAD, never fetched
    status = json.loads(env.run("status", "--json").stdout)
    assert status["waiting_for_restore"] == 3

    for key in archived:
        env.proxy_s3.restore_object(Bucket=env.bucket, Key=key, RestoreRequest={} if key.startswith("tiered/")
                                    else {"Days": 1, "GlacierJobParameters": {"Tier": "Bulk"}})
    env.drive.faults = Faults()

    third = env.run()

    assert third.returncode == 0, third.stderr
    assert "wait for a restore" not in third.stdout + third.stderr
    assert_drive_matches(env, readable | archived)


def test_on_aws_the_listing_tells_archived_restoring_and_restored_apart_without_a_head(penv):
    # AWS lists RestoreStatus only for objects restored or being restored (API_RestoreStatus);
    # moto lists none, so the proxy plays AWS here.
    env = penv
    env.proxy.restore_status_in_listing = True
    env.put("a/standard.jpg")
    for key in ("g/archived.jpg", "g/restored.jpg", "g/restoring.jpg"):
        env.put(key, StorageClass="GLACIER")
    env.proxy_s3.restore_object(Bucket=env.bucket, Key="g/restored.jpg", RestoreRequest={"Days": 1})
    env.proxy.restoring.add("g/restoring.jpg")
    env.put("t/archived.jpg")
    env.put("t/frequent.jpg")
    env.proxy.intelligent_tiering.update({"t/archived.jpg": "DEEP_ARCHIVE_ACCESS", "t/frequent.jpg": None})
    source = ct.S3Source(env.proxy_s3, env.bucket, other_store=False)

    plans = {p.obj.key: p for p in ct.plan_listing(source, ct.ObjectFilter(ct.Config()), all_files=False)}

    assert env.proxy.heads == {}
    assert {key: (p.action, p.reason, p.ask_archive) for key, p in plans.items()} == {
        "a/standard.jpg": (ct.PLAN_COPY, None, False),
        "g/archived.jpg": (ct.PLAN_ARCHIVED, ct.SKIP_ARCHIVED, False),
        "g/restored.jpg": (ct.PLAN_COPY, None, False),
        "g/restoring.jpg": (ct.PLAN_ARCHIVED, ct.SKIP_RESTORING, False),
        # an Intelligent-Tiering object's tier is only in its HEAD
        "t/archived.jpg": (ct.PLAN_COPY, None, True),
        "t/frequent.jpg": (ct.PLAN_COPY, None, True)}
    assert source.archive_state(plans["t/archived.jpg"].obj) == ct.ARCHIVED
    assert source.archive_state(plans["t/frequent.jpg"].obj) == ct.READABLE
    assert source.archive_state(plans["g/restoring.jpg"].obj) == ct.RESTORING
    # an earlier run that found this version archived trusts the listing until it lists a restore
    again = ct.plan_listing(source, ct.ObjectFilter(ct.Config()), all_files=False,
                            archived_before=lambda obj: obj.key == "t/archived.jpg")
    assert next(p for p in again if p.obj.key == "t/archived.jpg").action == ct.PLAN_ARCHIVED


def test_a_store_that_refuses_the_restore_status_is_listed_without_it(penv):
    env = penv
    env.proxy.refuse_optional_attributes = True
    env.put("a/1.jpg")
    env.put("g/archived.jpg", StorageClass="GLACIER")
    source = ct.S3Source(env.proxy_s3, env.bucket, other_store=False)

    plans = {p.obj.key: p for p in ct.plan_listing(source, ct.ObjectFilter(ct.Config()), all_files=False)}

    assert env.proxy.counts["optional_attributes_refused"] == 1
    assert source.restores_listed is False
    assert plans["a/1.jpg"].action == ct.PLAN_COPY
    assert plans["g/archived.jpg"].ask_archive   # no status to trust: a HEAD tells
    assert source.archive_state(plans["g/archived.jpg"].obj) == ct.ARCHIVED


def test_an_intelligent_tiering_object_found_archived_is_asked_again_after_its_slowest_restore():
    # Its restore moves it back to a readable tier with no restored copy: a listing may never say so,
    # and believing the record for ever left it "waiting for a restore" after the user restored it.
    import datetime as dt

    when = dt.datetime(2026, 12, 7, 1, 0, tzinfo=dt.timezone.utc)
    listed = dict(key="a/1.jpg", size=10, etag="e1", last_modified=when)
    entry = ct.CheckpointEntry(status=ct.STATUS_SKIPPED, etag="e1", size=10, reason=ct.SKIP_ARCHIVED,
                               at="2026-12-07T01:00:00Z")
    tiered, glacier = ct.SourceObject(**listed, storage_class="INTELLIGENT_TIERING"), \
        ct.SourceObject(**listed, storage_class="GLACIER")

    assert ct.recorded_as_archived(entry, tiered, when + dt.timedelta(hours=47))
    assert not ct.recorded_as_archived(entry, tiered, when + dt.timedelta(hours=49))
    assert ct.recorded_as_archived(entry, glacier, when + dt.timedelta(days=30))   # the listing tells its restores
    assert ct.listed_archive_state(tiered, ct.recorded_as_archived(entry, tiered, when + dt.timedelta(hours=49)),
                                   restores_listed=True) == ct.ASK_S3
    assert not ct.recorded_as_archived(dataclasses.replace(entry, etag="e2"), tiered, when)


@pytest.mark.parametrize("headers, state", [
    (("GLACIER", None, None), ct.ARCHIVED),
    (("DEEP_ARCHIVE", None, 'ongoing-request="true"'), ct.RESTORING),
    (("GLACIER", None, 'ongoing-request="false", expiry-date="Fri, 23 Dec 2012 00:00:00 GMT"'), ct.READABLE),
    (("INTELLIGENT_TIERING", "ARCHIVE_ACCESS", None), ct.ARCHIVED),
    (("INTELLIGENT_TIERING", None, None), ct.READABLE),
    (("STANDARD", None, None), ct.READABLE),
])
def test_head_archive_state(headers, state):
    assert ct.head_archive_state(*headers) == state


# -- item 4: the root is found by its mark, wherever it is -----------------------------------------

def _report(env, *args):
    result = env.run("--report", str(env.cwd / "report.json"), *args)
    assert result.returncode == 0, result.stderr
    return result, json.loads((env.cwd / "report.json").read_text())


def _root(env) -> dict:
    return next(f for f in env.drive.list_files(include_trashed=True) if f["name"] == ROOT)


def test_a_moved_and_renamed_root_is_used_where_it_is_after_the_checkpoint_is_lost(env):
    bodies = {f"a/{n}.jpg": env.put(f"a/{n}.jpg", photo_bytes(str(n), 3000)) for n in range(10)}
    assert env.run().returncode == 0
    root = _root(env)
    archive = env.drive.add_folder("Archive")   # made in the web UI: this app cannot see it
    env.drive.user_edit(root["id"], name="Old photos", move_to=archive["id"])
    (env.cwd / "cloud_transfer_checkpoint.json").unlink()   # a new machine, a cron line's other `cd`

    result, report = _report(env)

    assert (report["transferred"], report["found_in_drive"]) == (0, 10)
    assert "'Old photos' (renamed from 'Amazon Photos Transfer', moved from the top of My Drive: used where " \
           f"it is, https://drive.google.com/drive/folders/{root['id']})" in result.stdout + result.stderr
    assert_drive_matches(env, bodies, root="Archive/Old photos")
    assert [f for f in env.drive.list_files() if f["name"] == ROOT] == []   # no second root


def test_a_root_at_the_top_is_not_called_moved_when_drive_file_hides_my_drives_id(env):
    # rclone saw files.get('root') answer 404 under drive.file; then where "the top" is is unknown
    env.drive.faults.root_hidden_under_drive_file = True
    bodies = {f"a/{n}.jpg": env.put(f"a/{n}.jpg", photo_bytes(str(n), 3000)) for n in range(3)}
    assert env.run().returncode == 0
    env.checkpoint.unlink()

    result, report = _report(env)

    assert (report["transferred"], report["found_in_drive"]) == (0, 3)
    assert "moved" not in result.stdout + result.stderr
    assert_drive_matches(env, bodies)


def test_a_root_made_by_an_older_version_is_marked_and_found_after_a_move(env):
    bodies = {f"a/{n}.jpg": env.put(f"a/{n}.jpg", photo_bytes(str(n), 3000)) for n in range(3)}
    assert env.run().returncode == 0
    root = _root(env)
    with env.drive.lock:   # as an older version made it: no mark
        env.drive.files[root["id"]]["_app_props"] = {}
    assert "appProperties" not in _root(env)

    assert env.run().returncode == 0   # found by the checkpoint, and marked
    assert _root(env)["appProperties"] == {ct.PROP_ROOT: ct.root_marker(ROOT)}
    env.drive.user_edit(root["id"], move_to=env.drive.add_folder("Archive")["id"])
    (env.cwd / "cloud_transfer_checkpoint.json").unlink()

    _, report = _report(env)

    assert (report["transferred"], report["found_in_drive"]) == (0, 3)
    assert_drive_matches(env, bodies, root=f"Archive/{ROOT}")


def test_a_root_in_the_trash_is_not_copied_again_without_the_checkpoint(env):
    env.put("a/1.jpg")
    assert env.run().returncode == 0
    env.drive.user_edit(_root(env)["id"], trashed=True)
    (env.cwd / "cloud_transfer_checkpoint.json").unlink()

    result = env.run()

    assert result.returncode == 2
    assert "is in the trash: restore it" in one_line_error(result)
    assert sorted(f["name"] for f in env.drive.list_files(include_trashed=True)) == ["1.jpg", ROOT, "a"]


# -- item 2: rollback removes only what its own run uploaded ---------------------------------------

def test_rollback_keeps_the_copies_its_run_found_in_drive_from_another_checkpoint(env):
    first = {f"a/{n:02}.jpg": env.put(f"a/{n:02}.jpg", photo_bytes(str(n), 3000)) for n in range(12)}
    assert env.run("--checkpoint", "cron.json").returncode == 0
    later = {f"b/{n}.jpg": env.put(f"b/{n}.jpg", photo_bytes(f"b{n}", 3000)) for n in range(4)}
    env.drive.settle()

    _, report = _report(env, "--checkpoint", "by-hand.json")   # another directory's checkpoint
    assert (report["found_in_drive"], report["transferred"]) == (12, 4)

    result = env.run("rollback", "--run", "last", "--yes", "--checkpoint", "by-hand.json")

    assert result.returncode == 0, result.stderr
    assert "removed 4 files" in result.stdout and "kept 12 that another run or checkpoint uploaded" in result.stdout
    assert sorted(path for path in env.drive_files()) == sorted(f"{ROOT}/{key}" for key in first)
    assert env.run("--checkpoint", "cron.json").returncode == 0   # the 4 in the trash are copied again
    files = env.drive_files()
    assert {path: len(copies) for path, copies in files.items()} == {f"{ROOT}/{key}": 1 for key in first | later}


# -- item 1: one writer per Drive folder, whichever checkpoint ------------------------------------

def test_a_second_run_from_another_directory_stops_while_the_first_writes(env):
    import os
    import subprocess
    import time

    from tests.conftest import SCRIPT
    env.put("a/000.jpg")
    assert env.run().returncode == 0   # the cron run's copy exists
    bodies = {f"a/{n:03}.jpg": env.put(f"a/{n:03}.jpg", photo_bytes(str(n), 3000)) for n in range(60)}
    env.drive.faults = Faults(latency_s=0.05)   # the first run takes a few seconds
    full_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(env.cwd), **env.vars,
                "CLOUD_TRANSFER_LEASE_SETTLE_S": "1.0"}
    first = subprocess.Popen([sys.executable, str(SCRIPT), "--workers", "2"], cwd=env.cwd, env=full_env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while ct.PROP_LEASE not in (_root(env).get("appProperties") or {}) and time.monotonic() < deadline:
        time.sleep(0.05)   # waiting for a condition, bounded
    other = env.cwd / "by-hand"
    other.mkdir()
    for name in ("token.json", "credentials.json"):
        (other / name).write_bytes((env.cwd / name).read_bytes())

    second = subprocess.run([sys.executable, str(SCRIPT)], cwd=other, env=full_env, capture_output=True,
                            text=True, timeout=120)
    out, err = first.communicate(timeout=120)

    assert first.returncode == 0, err
    assert second.returncode == 4, second.stderr
    assert f"pid {first.pid} on " in second.stderr and "another run is copying into this Drive folder" in second.stderr
    assert ct.PROP_LEASE not in (_root(env).get("appProperties") or {})   # given back at the end
    env.drive.faults = Faults()
    env.drive.settle()
    assert subprocess.run([sys.executable, str(SCRIPT)], cwd=other, env=full_env, capture_output=True,
                          text=True, timeout=120).returncode == 0
    assert_drive_matches(env, bodies)


def test_a_lease_is_live_until_it_expires_or_its_process_on_this_host_is_gone():
    holder = ct.LeaseHolder.parse("1000 20261207T061308Z-f66939 4242 nas")
    assert holder == ct.LeaseHolder(1000.0, "20261207T061308Z-f66939", 4242, "nas")
    assert ct.LeaseHolder.parse(holder.value()) == holder
    assert ct.lease_is_live(holder, 999, "laptop", lambda pid: False)       # another host: only time counts
    assert not ct.lease_is_live(holder, 1000, "laptop", lambda pid: True)   # expired
    assert not ct.lease_is_live(holder, 999, "nas", lambda pid: False)      # killed on this host
    assert ct.lease_is_live(holder, 999, "nas", lambda pid: True)
    assert ct.LeaseHolder.parse("garbage") is None and ct.LeaseHolder.parse(None) is None
    long = ct.LeaseHolder(1e9, "r", 1, "h" * 300)
    assert len((ct.PROP_LEASE + long.value()).encode()) <= 124
    marked = ct.LeaseHolder.parse(long.value())   # as read back from Drive: the host name cut
    assert not ct.lease_is_live(marked, 999, "h" * 300, lambda pid: False)   # still this host: a dead pid frees it


# -- item 3: re-runs learn what the user removed in Drive (the changes feed) -----------------------

def test_a_drive_that_fails_while_the_lease_is_taken_stops_the_run_instead_of_writing_without_it(env):
    # Before, any exhausted retry made the lease "unsupported" for the run: a burst of 503s was
    # exactly when a second run could write too.
    from google.oauth2.credentials import Credentials

    root = env.drive.add_folder(ROOT)
    config = ct.Config(bucket="b", drive_endpoint_url=env.drive.url)
    api = ct.DriveApi(ct.make_drive_service_factory(config, Credentials(token=env.drive.issue_token())),
                      backoff=ct.Backoff(0.001, 0.002))
    lease = ct.DriveLease(api, root["id"], "run-1", settle_s=0.05)
    env.drive.faults.error_rate = 1.0

    with pytest.raises(ct.ObjectError):
        lease.hold()
    assert not lease.held
    env.drive.faults.error_rate = 0.0
    lease.hold()   # Drive is back: the lease is taken for real, and shows in Drive
    mark = next(f for f in env.drive.list_files() if f["id"] == root["id"])["appProperties"][ct.PROP_LEASE]
    assert lease.held and ct.LeaseHolder.parse(mark).run_id == "run-1"
    lease.release()


def _live_copies(env) -> dict[str, list[str]]:
    """path → MD5 of each non-trashed copy."""
    return {path: [f["md5Checksum"] for f in copies] for path, copies in env.drive_files().items()}


def _library(env, n: int = 10) -> dict[str, bytes]:
    bodies = {f"a/{i}.jpg": env.put(f"a/{i}.jpg", photo_bytes(str(i), 3000)) for i in range(n)}
    assert env.run().returncode == 0
    return bodies


def _remove_five(env) -> list[str]:
    """The user trashes 3 copies and deletes 2 for good, in the web UI."""
    files = env.drive_files()
    for i in range(3):
        env.drive.user_edit(files[f"{ROOT}/a/{i}.jpg"][0]["id"], trashed=True)
    for i in (3, 4):
        env.drive.user_delete(files[f"{ROOT}/a/{i}.jpg"][0]["id"])
    return [f"a/{i}.jpg" for i in range(5)]


def test_copies_trashed_or_deleted_in_drive_are_copied_again_and_named_before_validated(env):
    bodies = _library(env)
    _, quiet = _report(env)
    removed = _remove_five(env)
    dry = env.run("--dry-run")   # reads the feed too, without moving its position
    assert dry.returncode == 0, dry.stderr
    assert "10 listed, 5 would be copied" in dry.stdout and "5 of them again, their copy left Drive" in dry.stdout
    assert "would copy again (its copy left Drive): a/0.jpg" in dry.stderr

    result, report = _report(env)

    assert (report["copied_again"], report["transferred"], report["already_done"]) == (5, 5, 5)
    assert sorted(e["key"] for e in report["copied_again_examples"]) == removed
    err = result.stderr
    assert "since the last run, 5 copies left Drive (2 deleted for good, 3 trashed): copying them again" in err
    named = err.index("copied again 5 whose copy had left Drive: a/0.jpg (trashed); a/1.jpg (trashed); a/2.jpg "
                      "(trashed); a/3.jpg (deleted for good); a/4.jpg (deleted for good)")
    assert named < err.index("done: everything eligible is in Drive and validated")
    assert _live_copies(env) == {f"{ROOT}/{key}": [md5(body)] for key, body in bodies.items()}
    _, after = _report(env)
    # what the feed costs: a re-run with nothing changed asks the root and one page of changes
    assert (quiet["drive_requests"], after["drive_requests"], after["transferred"]) == (2, 2, 0)
    print(f"requests per re-run: {quiet['drive_requests']} unchanged, {report['drive_requests']} with 5 removed")


def test_copies_moved_out_of_the_copy_are_copied_again_renamed_ones_stay(env):
    bodies = _library(env, 4)
    files = env.drive_files()
    favourites = env.drive.add_folder("Favourites")   # the user's own folder, outside the copy
    env.drive.user_edit(files[f"{ROOT}/a/0.jpg"][0]["id"], move_to=favourites["id"])
    env.drive.user_edit(files[f"{ROOT}/a/1.jpg"][0]["id"], name="best day.jpg")

    _, report = _report(env)

    assert (report["copied_again"], report["transferred"]) == (1, 1)
    assert report["copied_again_examples"] == [{"key": "a/0.jpg", "reason": ct.REMOVED_HOW["moved"]}]
    live = _live_copies(env)
    assert live[f"{ROOT}/a/0.jpg"] == [md5(bodies["a/0.jpg"])] and "Favourites/a/0.jpg" not in live
    assert live[f"{ROOT}/a/best day.jpg"] == [md5(bodies["a/1.jpg"])] and f"{ROOT}/a/1.jpg" not in live
    # a walk agrees with the feed: a copy moved between the copy's own folders stays the copy
    env.drive.user_edit(env.drive_files()[f"{ROOT}/a/2.jpg"][0]["id"], move_to=_root(env)["id"])
    _, walked = _report(env, "--recheck")
    assert (walked["transferred"], walked["found_in_drive"]) == (0, 4)
    verify = json.loads(env.run("verify", "--json").stdout)
    assert (verify["missing"], verify["duplicated"]) == (0, 0)


def test_a_folder_moved_within_the_copy_keeps_its_copies_when_its_path_gets_a_new_folder(env):
    bodies = {key: env.put(key, photo_bytes(key, 3000)) for key in ("a/trip/1.jpg", "a/trip/2.jpg", "b/3.jpg")}
    assert env.run().returncode == 0
    folders = {f["name"]: f for f in env.drive.list_files() if f["mimeType"] == FOLDER}
    env.drive.user_edit(folders["trip"]["id"], move_to=folders["b"]["id"])   # tidied up by hand
    bodies["a/trip/new.jpg"] = env.put("a/trip/new.jpg", photo_bytes("new", 3000))
    assert env.run().returncode == 0   # a new a/trip folder for the new photo
    one = next(f for f in env.drive.list_files() if f["name"] == "1.jpg")
    env.drive.user_edit(one["id"], name="1 (beach).jpg")   # and a rename in the moved folder

    _, report = _report(env)

    # before: the rename showed a copy outside the copy's folders, and it was uploaded a second time
    assert (report["transferred"], report["copied_again"]) == (0, 0)
    assert sorted(f["md5Checksum"] for f in env.drive.list_files() if f["mimeType"] != FOLDER) == \
        sorted(md5(body) for body in bodies.values())


def test_copies_removed_on_purpose_can_be_left_out_and_the_checkpoint_remembers(env):
    bodies = _library(env, 6)
    _remove_five(env)

    result, report = _report(env, "--removed-in-drive", "leave")

    assert (report["transferred"], report["copied_again"]) == (0, 0)
    assert report["skipped_by_reason"] == {ct.SKIP_LEFT_OUT: 5}
    assert "5 copies left Drive (2 deleted for good, 3 trashed): left out" in result.stderr
    _, later = _report(env)   # cron's line has no flag: the choice holds
    assert (later["transferred"], later["skipped_by_reason"]) == (0, {ct.SKIP_LEFT_OUT: 5})
    status = env.run("status")
    assert "copies removed in Drive: left out (5 now; --removed-in-drive copy brings them back)" in status.stdout
    assert "3 × removed in Drive: trashed" in status.stdout
    assert json.loads(env.run("status", "--json").stdout)["removed_in_drive"] == "leave"
    verify = json.loads(env.run("verify", "--json").stdout)
    assert (verify["missing"], verify["left_out"]) == (0, 5)

    _, back = _report(env, "--removed-in-drive", "copy")

    assert (back["transferred"], back["copied_again"]) == (5, 5)
    assert _live_copies(env) == {f"{ROOT}/{key}": [md5(body)] for key, body in bodies.items()}


def test_an_unusable_changes_token_makes_the_run_walk_drive_and_say_so(env):
    bodies = _library(env, 6)
    _remove_five(env)
    env.drive.expire_change_tokens()

    result, report = _report(env)

    assert "Drive's changes feed could not be read" in result.stderr and "a walk" in result.stderr
    assert (report["copied_again"], report["transferred"]) == (5, 5)
    assert {e["reason"] for e in report["copied_again_examples"]} == {ct.REMOVED_HOW["missing"]}
    assert _live_copies(env) == {f"{ROOT}/{key}": [md5(body)] for key, body in bodies.items()}
    again, quiet = _report(env)   # the walk finished: the feed is read again, from a fresh token
    assert "a walk" not in again.stderr and (quiet["drive_requests"], quiet["transferred"]) == (2, 0)


def test_a_folder_of_the_copy_trashed_in_drive_is_made_again_with_everything_in_it(env):
    bodies = {key: env.put(key, photo_bytes(key, 3000)) for key in ("a/1.jpg", "a/b/2.jpg", "c/3.jpg")}
    assert env.run().returncode == 0
    folder_a = next(f for f in env.drive.list_files() if f["name"] == "a")
    env.drive.user_edit(folder_a["id"], trashed=True)

    result, report = _report(env)

    assert "of the copy's folders were trashed, deleted or moved away in Drive" in result.stderr
    assert (report["transferred"], report["already_done"], report["copied_again"]) == (2, 0, 2)
    assert _live_copies(env) == {f"{ROOT}/{key}": [md5(body)] for key, body in bodies.items()}
    _, quiet = _report(env)
    assert (quiet["drive_requests"], quiet["transferred"]) == (2, 0)


def test_a_walk_that_stops_midway_goes_on_in_the_next_run_until_it_has_looked_at_everything(env):
    # A trashed folder may be one change in the feed, its files none: the walk it starts must survive
    # a run stopped by a budget (or the daily cap), or the rest of that folder stays "done" for ever.
    env.drive.faults.folder_changes_only = True
    bodies = {f"a/{n}.jpg": env.put(f"a/{n}.jpg", photo_bytes(str(n), 3000)) for n in range(6)}
    assert env.run().returncode == 0
    env.drive.user_edit(next(f for f in env.drive.list_files() if f["name"] == "a")["id"], trashed=True)

    first = env.run("--report", str(env.cwd / "report.json"), "--max-transfer", "5K", "--workers", "1")
    stopped = json.loads((env.cwd / "report.json").read_text())   # room for about one photo

    assert "of the copy's folders were trashed" in first.stderr
    assert 0 < stopped["transferred"] < 6
    dry = env.run("--dry-run")
    assert "the next run looks for every copy in Drive" in dry.stderr
    second, rest = _report(env)
    assert "of the copy's folders were trashed" in second.stderr and "looking for every copy" in second.stderr
    assert stopped["transferred"] + rest["transferred"] == 6
    assert _live_copies(env) == {f"{ROOT}/{key}": [md5(body)] for key, body in bodies.items()}
    _, quiet = _report(env)   # the walk is complete: the feed again
    assert (quiet["drive_requests"], quiet["transferred"]) == (2, 0)


def test_a_checkpoint_of_an_older_version_walks_once_then_reads_the_feed(env):
    bodies = _library(env, 3)
    data = json.loads(env.checkpoint.read_text())
    data.pop("changes_token")   # as written before the feed was read
    env.checkpoint.write_text(json.dumps(data))
    env.drive.user_delete(env.drive_files()[f"{ROOT}/a/0.jpg"][0]["id"])

    result, report = _report(env)

    assert "this checkpoint has not read Drive's changes feed before" in result.stderr
    assert (report["copied_again"], report["transferred"]) == (1, 1)
    assert _live_copies(env) == {f"{ROOT}/{key}": [md5(body)] for key, body in bodies.items()}
    env.drive.requests.clear()
    _, quiet = _report(env)
    assert quiet["drive_requests"] == 2, [(r["method"], r["path"]) for r in env.drive.requests]


def test_removals_in_sorts_what_left_the_copy_from_what_stayed():
    folders_of_copy = {"root", "f1"}
    files: dict[str, str] = {}
    folders: dict[str, str] = {}
    ct.removals_in([
        {"fileId": "root", "file": {"id": "root", "parents": ["elsewhere"]}},   # the root: found by its mark
        {"fileId": "x1", "removed": True},
        {"fileId": "x2", "file": {"trashed": True, "parents": ["f1"]}},
        {"fileId": "x3", "file": {"parents": ["users-folder"]}},
        {"fileId": "x4", "file": {"parents": ["f1"]}},                          # renamed, or this run's upload
        {"fileId": "f1", "file": {"mimeType": ct.FOLDER_MIME, "trashed": True, "parents": ["root"]}},
    ], folders_of_copy, "root", files, folders)
    assert files == {"x1": "deleted", "x2": "trashed", "x3": "moved"} and folders == {"f1": "trashed"}
    ct.removals_in([{"fileId": "x2", "file": {"parents": ["f1"]}}], folders_of_copy, "root", files, folders)
    assert "x2" not in files   # restored from the trash before the next run


# -- item 7: a changed object's earlier content is kept, and rollback brings it back --------------

def test_a_changed_photo_keeps_its_earlier_content_and_rollback_restores_it(env):
    first = env.put("a/1.jpg", photo_bytes("first", 3000))
    env.put("a/2.jpg", photo_bytes("other", 3000))
    assert env.run().returncode == 0
    copy = env.drive_files()[f"{ROOT}/a/1.jpg"][0]
    second = env.put("a/1.jpg", photo_bytes("second", 3500))   # edited, and uploaded again to S3

    _, report = _report(env)

    assert (report["transferred"], report["updated"]) == (1, 1)
    revisions = env.drive.revisions_of(copy["id"])
    assert [(md5(r["content"]), r["keepForever"]) for r in revisions[:-1]] == [(md5(first), True)]
    assert md5(revisions[-1]["content"]) == md5(second)
    env.drive.purge_old_revisions()   # what Drive does about 30 days later
    assert [md5(r["content"]) for r in env.drive.revisions_of(copy["id"])] == [md5(first), md5(second)]

    result = env.run("rollback", "--run", "last", "--yes")

    assert result.returncode == 0, result.stderr
    assert "removed 0 files" in result.stdout and "restored 1 to the content the run had replaced" in result.stdout
    now = env.drive_files()[f"{ROOT}/a/1.jpg"]
    assert [(f["id"], f["md5Checksum"]) for f in now] == [(copy["id"], md5(first))]
    assert now[0]["appProperties"][ct.PROP_ETAG] == copy["appProperties"][ct.PROP_ETAG]
    assert now[0]["appProperties"][ct.PROP_RUN] == copy["appProperties"][ct.PROP_RUN]
    assert now[0]["modifiedTime"] == copy["modifiedTime"]
    _, again = _report(env)   # S3 still holds the second version: the next run puts it back, in place
    assert (again["transferred"], again["updated"]) == (1, 1)
    assert_drive_matches(env, {"a/1.jpg": second, "a/2.jpg": photo_bytes("other", 3000)})


# -- item 5: a full Drive folder -----------------------------------------------------------------

FOLDER = "application/vnd.google-apps.folder"


def _logical_copies(env) -> dict[str, list[dict]]:
    """Live copies by the path they stand for: a file in "a (2)", which continues "a", is under "a"."""
    every = {f["id"]: f for f in env.drive.list_files(include_trashed=True)}
    found: dict[str, list[dict]] = {}
    for item in every.values():
        if item["mimeType"] == FOLDER or item["trashed"]:
            continue
        parts, parent = [item["name"]], (item.get("parents") or [None])[0]
        while parent in every:
            folder = every[parent]
            first = folder.get("appProperties", {}).get(ct.PROP_MORE_OF)
            parts.append(every[first]["name"] if first in every else folder["name"])
            parent = (folder.get("parents") or [None])[0]
        found.setdefault("/".join(reversed(parts)), []).append(item)
    return found


def _folders_named(env, prefix: str) -> list[dict]:
    return sorted((f for f in env.drive.list_files() if f["mimeType"] == FOLDER and f["name"].startswith(prefix)),
                  key=lambda f: f["name"])


def _assert_each_once(env, bodies: dict[str, bytes]) -> None:
    copies = _logical_copies(env)
    assert set(copies) == {f"{ROOT}/{key}" for key in bodies}
    assert all(len(found) == 1 and found[0]["md5Checksum"] == md5(bodies[path.split("/", 1)[1]])
               for path, found in copies.items())
    every = env.drive.list_files(include_trashed=True)
    assert len([f for f in every if f["mimeType"] != FOLDER]) == len(bodies), "a duplicate was created"


def test_a_full_drive_folder_continues_beside_it_and_every_run_finds_what_it_holds(env):
    env.drive.faults.folder_item_limit = 5   # Drive's is 500,000 (numChildrenInNonRootLimitExceeded)
    bodies = {f"a/{n:02}.jpg": env.put(f"a/{n:02}.jpg", photo_bytes(str(n), 3000)) for n in range(12)}
    bodies["b/1.jpg"] = env.put("b/1.jpg", photo_bytes("b", 3000))

    result, report = _report(env, "--workers", "3")

    # the old code stopped with exit 5 after 5 photos: "copy that prefix with --prefix into another --folder"
    assert report["transferred"] == 13 and report["failed"] == 0
    assert "is full" in result.stderr and "'a (2)'" in result.stderr
    chain = _folders_named(env, "a")
    assert [f["name"] for f in chain] == ["a", "a (2)", "a (3)"]
    assert [len([g for g in env.drive.list_files() if chain[i]["id"] in g.get("parents", ())]) for i in range(3)] == [5, 5, 2]
    assert chain[0]["appProperties"][ct.PROP_NEXT] == chain[1]["id"]
    assert chain[1]["appProperties"] == {ct.PROP_MORE_OF: chain[0]["id"], ct.PROP_NEXT: chain[2]["id"]}
    assert chain[2]["appProperties"] == {ct.PROP_MORE_OF: chain[0]["id"]}
    _assert_each_once(env, bodies)
    verify = env.run("verify", "--json")   # its walk takes "a (2)" for "a"
    assert verify.returncode == 0, verify.stdout + verify.stderr

    status = env.run("status")
    assert "continue beside them: a (+2)" in status.stdout, status.stdout
    _, again = _report(env)
    assert again["transferred"] == 0 and again["found_in_drive"] == 0
    env.checkpoint.unlink()   # a new machine: the chain is found from Drive's marks alone
    _, fresh = _report(env)
    assert (fresh["transferred"], fresh["found_in_drive"]) == (0, 13)
    _assert_each_once(env, bodies)


def test_a_full_root_continues_beside_it_in_my_drive_and_is_found_without_the_checkpoint(env):
    env.drive.faults.folder_item_limit = 4
    env.drive.faults.root_hidden_under_drive_file = True   # My Drive's id may be unreadable: 'root' takes children
    bodies = {f"{n}.jpg": env.put(f"{n}.jpg", photo_bytes(str(n), 3000)) for n in range(7)}

    _, report = _report(env, "--workers", "1")

    assert report["transferred"] == 7
    roots = _folders_named(env, ROOT)
    assert [f["name"] for f in roots] == [ROOT, f"{ROOT} (2)"]
    assert roots[1]["parents"] == roots[0]["parents"]   # beside the root, at the top of My Drive
    _assert_each_once(env, bodies)
    assert env.run("verify").returncode == 0

    env.checkpoint.unlink()
    _, fresh = _report(env)
    assert (fresh["transferred"], fresh["found_in_drive"]) == (0, 7)
    assert len(_folders_named(env, ROOT)) == 2


def test_a_continuation_made_by_a_run_killed_before_it_marked_the_full_folder_is_used(env):
    # The order of writes: the continuation's id in the checkpoint, its create, the mark on the full
    # folder, then uploads. A run that dies before the mark leaves an empty continuation that the
    # next spill finds by the recorded id instead of making another.
    env.drive.faults.folder_item_limit = 3
    bodies = {f"a/{n}.jpg": env.put(f"a/{n}.jpg", photo_bytes(str(n), 3000)) for n in range(4)}
    assert env.run("--workers", "1").returncode == 0
    full, more = _folders_named(env, "a")
    moved = [f for f in env.drive.list_files() if more["id"] in f.get("parents", ())]
    assert len(moved) == 1
    env.drive.user_delete(moved[0]["id"])   # as if the run had died before its upload...
    for props in env.drive.files[full["id"]]["_app_props"].values():   # ...and before the mark
        props.pop(ct.PROP_NEXT, None)
    assert ct.PROP_NEXT not in _folders_named(env, "a")[0].get("appProperties", {})
    bodies["a/new.jpg"] = env.put("a/new.jpg", photo_bytes("new", 3000))

    _, report = _report(env, "--workers", "1")

    assert report["transferred"] == 2   # the deleted one and the new one
    assert [f["id"] for f in _folders_named(env, "a")] == [full["id"], more["id"]]
    assert _folders_named(env, "a")[0]["appProperties"][ct.PROP_NEXT] == more["id"]
    _assert_each_once(env, bodies)


def test_the_dry_run_and_check_warn_of_a_prefix_that_fills_more_than_one_drive_folder():
    import datetime as dt

    def planned(key: str, action: str = ct.PLAN_COPY) -> ct.Planned:
        return ct.Planned(ct.SourceObject(key, 1, "e", dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)), action, None)

    keys = [f"camera/{n}.jpg" for n in range(4)] + ["camera/old.jpg", "other/1.jpg", "top.jpg"]
    mirror, flat, dated = (ct.FolderFill(layout, ROOT) for layout in ("mirror", "flat", "date:YYYY/MM"))
    for fill in (mirror, flat, dated):
        for key in keys:
            fill.add(planned(key, ct.PLAN_DONE if key.endswith("old.jpg") else ct.PLAN_COPY))
        fill.add(planned("camera/notes.txt", ct.PLAN_SKIP))   # skipped: lands nowhere

    assert mirror.warnings(limit=4) == ["camera: 5 files for one Drive folder, more than Drive's 4: the rest go on in "
                                        "'camera (2)' beside it (--layout date keeps folders small)"]
    assert flat.warnings(limit=4) == [f"{ROOT}: 7 files for one Drive folder, more than Drive's 4: the rest go on in "
                                      f"'{ROOT} (2)' beside it (--layout date keeps folders small)"]
    assert dated.warnings(limit=1) == [] and mirror.warnings() == []   # dates need the files; 500,000 by default
