"""Regressions found in review: each reproduced a duplicate, a lost photo, a hang or a wrong exit code
before its fix. Real script, real servers; synchronisation by events, never by sleeping."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.conftest import SCRIPT, one_line_error, photo_bytes
from tests.s3_fault_proxy import S3FaultProxy

ROOT = "Amazon Photos Transfer"
FAST = {"CLOUD_TRANSFER_BACKOFF_BASE_S": "0.01", "CLOUD_TRANSFER_BACKOFF_CAP_S": "0.05"}


def start(env, *args):
    full_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(env.cwd), **env.vars}
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=env.cwd, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def verify_report(env):
    result = env.run("verify", "--json")
    return json.loads(result.stdout)


def test_lost_create_plus_failing_lookup_does_not_duplicate(env):
    """Drive made the file but the answer was lost, and the look-up of it by its pre-allocated id
    failed a few times: the object's next attempt must look at Drive again, not create anew."""
    env.vars.update(FAST)
    env.put("album/IMG_001.jpg", photo_bytes("x", 3000))
    creates, failed_lookups = [], []

    def on_request(record):
        is_create = record["method"] == "POST" and record["path"] == "/upload/drive/v3/files"
        if is_create:
            creates.append(1)
        env.drive.faults.drop_response_rate = 1.0 if (is_create and len(creates) == 1) else 0.0
        lookup = creates and record["method"] == "GET" and record["path"].startswith("/drive/v3/files/")
        if lookup:
            failed_lookups.append(1)
        env.drive.faults.error_rate = 1.0 if lookup and len(failed_lookups) <= 3 else 0.0

    env.drive.on_request = on_request
    result = env.run("--workers", "1")
    env.drive.on_request = None
    env.drive.faults.error_rate = 0.0
    assert result.returncode == 0, result.stderr
    assert len(failed_lookups) > 3   # the failures happened, and the run looked again
    assert len(env.drive_files()[f"{ROOT}/album/IMG_001.jpg"]) == 1
    assert verify_report(env)["duplicated"] == 0


def test_restart_after_lost_final_chunk_looks_before_uploading_again(env):
    env.vars.update(FAST)
    env.put("v/a.mp4", photo_bytes("v", 1024 * 1024 + 17))
    fired = []

    def before_reply(record, reply):
        if record["method"] == "PUT" and "upload_id" in record["query"] and reply.status in (200, 201) and not fired:
            fired.append(1)
            env.drive.expire_all_sessions()          # the session is gone by the time the client asks
            raise ConnectionResetError("answer lost")

    env.drive.before_reply = before_reply
    result = env.run("--chunk-size", "0.25")
    env.drive.before_reply = None
    assert fired and result.returncode == 0, result.stderr
    assert len(env.drive_files()[f"{ROOT}/v/a.mp4"]) == 1


def test_killed_rollback_never_leaves_trashed_photos_marked_done(env):
    for n in range(12):
        env.put(f"a/IMG_{n:02d}.jpg")
    assert env.run("--workers", "1").returncode == 0
    trashes = []

    def before_reply(record, reply):
        if record["method"] == "PATCH" and reply.status == 200:
            trashes.append(1)
            if len(trashes) == 5:
                process.kill()                        # power loss in the middle of a rollback

    env.drive.before_reply = before_reply
    process = start(env, "rollback", "--yes")
    process.communicate(timeout=60)
    env.drive.before_reply = None
    assert process.returncode == -signal.SIGKILL
    result = env.run()
    assert result.returncode == 0, result.stderr
    report = verify_report(env)
    assert (report["missing"], report["duplicated"]) == (0, 0)
    assert len(env.drive_files()) == 12


def test_recheck_recopies_a_photo_deleted_in_drive(env):
    for n in range(3):
        env.put(f"r/{n}.jpg")
    assert env.run().returncode == 0
    gone = env.drive_files()[f"{ROOT}/r/1.jpg"][0]["id"]
    env.drive.files.pop(gone)
    assert env.run().returncode == 0
    assert f"{ROOT}/r/1.jpg" not in env.drive_files()      # the checkpoint is trusted by default...
    env.drive.clear_requests()
    result = env.run("--recheck")
    assert result.returncode == 0, result.stderr
    assert set(env.drive_files()) == {f"{ROOT}/r/{n}.jpg" for n in range(3)}   # ...--recheck looks
    assert "found intact in Drive  2" in result.stdout


def test_trashed_root_folder_is_not_uploaded_into(env):
    env.put("a/one.jpg")
    assert env.run().returncode == 0
    root_id = json.loads(env.checkpoint.read_text())["root_folder_id"]
    with env.drive.lock:   # Drive trashes a folder's contents with it
        for file_id, record in env.drive.files.items():
            if file_id == root_id or env.drive.path_of(file_id).startswith(ROOT + "/"):
                record["trashed"] = True
    env.put("a/two.jpg")
    env.drive.clear_requests()
    result = env.run()   # restoring is one click; a second copy would take days under the daily cap
    assert result.returncode == 2
    assert "is in the trash: restore it and re-run, or pass --new-root" in one_line_error(result)
    assert [r for r in env.drive.requests if r["path"].startswith("/upload/")] == []
    result = env.run("--new-root")
    assert result.returncode == 0, result.stderr
    for name in ("one.jpg", "two.jpg"):   # one.jpg was "done", but in a folder now in the trash
        live = [f for f in env.drive.list_files() if f["name"] == name]
        assert len(live) == 1 and not live[0].get("trashed"), name
    report = verify_report(env)
    assert (report["missing"], report["duplicated"]) == (0, 0)


def sigterm_while_downloads_stall(env, moto_url):
    """Run the script, SIGTERM it while its S3 download is stalled, and return (exit code, stderr).
    The stall is released only after the process has exited: waiting for it would hang here."""
    with S3FaultProxy(moto_url) as proxy:
        env.vars["AWS_ENDPOINT_URL"] = proxy.url
        reached, release = proxy.hold_gets()
        process = start(env, "--workers", "1")
        try:
            assert reached.wait(60)
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
        finally:
            proxy.on_object_get = None
            release.set()
    return process.returncode, err


def test_sigterm_while_a_download_is_stalled_exits_130_without_waiting_for_it(env, moto_url):
    env.vars.update(FAST)
    for n in range(3):
        env.put(f"s/{n}.jpg")
    code, err = sigterm_while_downloads_stall(env, moto_url)
    assert code == 130, err
    assert "Traceback" not in err


def test_token_endpoint_outage_is_not_reported_as_a_revoked_token(env):
    from tests.conftest import write_token

    env.vars.update(FAST)
    env.put("t/1.jpg")
    write_token(env.cwd / "token.json", "stale-token", expired=True)
    env.drive.faults.fail_paths = {r"^/token": 503}
    result = env.run()
    assert result.returncode == 7
    line = one_line_error(result)
    assert "unavailable" in line and "auth" not in line.split(":")[-1]


def test_drive_outage_while_finding_the_root_is_one_line_not_an_internal_error(env):
    env.vars.update(FAST)
    env.put("x/1.jpg")
    env.drive.faults.fail_paths = {r"^/drive/v3/files": 503}
    for args in ([], ["verify"]):
        result = env.run(*args)
        assert result.returncode == 7   # Drive unavailable, not "some objects failed"
        line = one_line_error(result)
        assert "internal error" not in line and "503" in line


def test_reset_checkpoint_is_refused_outside_a_real_transfer(env):
    env.put("x/1.jpg")
    assert env.run().returncode == 0
    before = env.checkpoint.read_bytes()
    for args in (["verify", "--reset-checkpoint"], ["--dry-run", "--reset-checkpoint"]):
        result = env.run(*args)
        assert result.returncode == 2
        assert "--reset-checkpoint only applies" in one_line_error(result)
    assert env.checkpoint.read_bytes() == before


def test_sigterm_during_a_stalled_parallel_download_ends_the_process_and_frees_the_lock(env, moto_url):
    """s3transfer's threads are not daemons: an abandoned >64 MiB download kept the process (and the
    journal it could still write) alive for minutes after the run had ended."""
    import cloud_transfer as ct

    env.vars.update(FAST)
    env.put("v/big.mp4", photo_bytes("big", 65 * 1024 * 1024 + 5))
    code, err = sigterm_while_downloads_stall(env, moto_url)   # would hang until the stalled reads time out
    with ct.RunLock(env.cwd / "cloud_transfer_checkpoint.json.lock"):
        pass                                                     # and nobody holds the lock any more
    assert code == 130, err
    assert "abandoning" in err and "Traceback" not in err
    json.loads(env.checkpoint.read_text())


def test_recheck_after_a_lost_root_survives_an_interrupted_run(env):
    """The re-check forced by a new root lasts until a run finishes, not just one run."""
    env.vars.update(FAST)
    keys = [f"a/{n}.jpg" for n in range(6)]
    for key in keys:
        env.put(key)
    assert env.run("--workers", "1").returncode == 0
    root_id = json.loads(env.checkpoint.read_text())["root_folder_id"]
    with env.drive.lock:
        env.drive._set_trashed(env.drive.files[root_id], True)        # its contents follow, as in Drive
        env.drive.uploaded_bytes = 0
        env.drive.faults.daily_upload_cap_bytes = 4096                 # about two photos, then the cap
    assert env.run("--workers", "1", "--new-root").returncode == 5
    env.drive.faults.daily_upload_cap_bytes = None
    checkpoint = json.loads(env.checkpoint.read_text())
    second_run = checkpoint["runs"][-1]["id"]
    done_in_new_root = sum(e["status"] == "done" and e["run"] == second_run for e in checkpoint["objects"].values())
    result = env.run("--workers", "1", "--daily-limit", "off")   # the cap counts for 24 h otherwise
    assert result.returncode == 0, result.stderr
    # What the capped run put into the new root is trusted; only what went into the lost one is checked.
    assert done_in_new_root >= 1 and f"already done           {done_in_new_root}\n" in result.stdout
    assert set(env.drive_files()) == {f"{ROOT}/{key}" for key in keys}
    assert verify_report(env)["missing"] == 0


def test_recheck_keeps_the_run_that_uploaded_a_file_for_rollback(env):
    for n in range(4):
        env.put(f"k/{n}.jpg")
    assert env.run().returncode == 0
    env.drive.files.pop(env.drive_files()[f"{ROOT}/k/0.jpg"][0]["id"])
    assert env.run("--recheck").returncode == 0
    result = env.run("rollback", "--run", "last", "--dry-run")
    assert result.returncode == 0
    assert result.stdout.count("would remove") == 1 and "k/0.jpg" in result.stdout
