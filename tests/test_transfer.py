"""End-to-end runs of the real script against moto server (S3) and the Drive emulator."""
from __future__ import annotations

import hashlib
import json
import socket

import boto3
import requests

import cloud_transfer as ct
from tests.drive_emulator import Faults
from tests.conftest import (AWS_SECRET, CLIENT_SECRET, REFRESH_TOKEN, assert_drive_matches, one_line_error,
                            photo_bytes, write_token)

FOLDER = "application/vnd.google-apps.folder"
ROOT = "Amazon Photos Transfer"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def upload_counts(drive) -> dict[str, int]:
    with drive.lock:
        requests_seen = list(drive.requests)
    return {
        "creates": sum(1 for r in requests_seen if r["method"] == "POST" and "/files" in r["path"]),
        "total": len(requests_seen),
    }


MIXED = {
    "2019/Trip/IMG_1.jpg": 3000,
    "2019/Trip/IMG_2.HEIC": 5000,
    "2019/Trip/clip.mov": 7000,
    "2020/O'Brien's party.jpg": 1234,
    "2020/back\\slash.png": 999,
    "2020/Ünïcødé фото 写真.jpeg": 2222,
    "2020/with  two spaces .jpg": 100,
    "raw/DSC0001.NEF": 4096,
    "top.jpg": 10,
    "empty.jpg": 0,
}
NOT_COPIED = {
    "2019/": 0,                      # folder marker
    "2019/Trip/": 0,
    "old_$folder$": 0,               # s3fs/Hadoop placeholder
    "notes/readme.txt": 50,          # not a photo
    "2019/Trip/album.json": 80,
}


def test_mixed_bucket_lands_once_at_mirrored_paths_and_rerun_uploads_nothing(env):
    bodies = {key: env.put(key, photo_bytes(key, size)) for key, size in {**MIXED, **NOT_COPIED}.items()}

    assert env.main("--workers", "3") == 0

    files = env.drive_files()
    expected = {f"{ROOT}/{key}" for key in MIXED}
    assert set(files) == expected
    for key in MIXED:
        (item,) = files[f"{ROOT}/{key}"]
        assert item["md5Checksum"] == md5(bodies[key])
        assert int(item["size"]) == len(bodies[key])
        assert item["appProperties"]["ctSrc"] == ct.source_id_for(env.bucket, key)
        assert item["appProperties"]["ctMd5"] == md5(bodies[key])
        assert f"s3://{env.bucket}/{key}" in item["description"]
    folders = [f for f in env.drive.list_files() if f["mimeType"] == FOLDER]
    folder_paths = [env.drive.path_of(f["id"]) for f in folders]
    assert len(folder_paths) == len(set(folder_paths)), "a folder was created twice"
    assert sorted(folder_paths) == sorted({ROOT, f"{ROOT}/2019", f"{ROOT}/2019/Trip", f"{ROOT}/2020", f"{ROOT}/raw"})

    checkpoint = json.loads(env.checkpoint.read_text())
    done = {k for k, e in checkpoint["objects"].items() if e["status"] == "done"}
    assert done == set(MIXED)

    env.drive.clear_requests()
    assert env.main() == 0
    counts = upload_counts(env.drive)
    assert counts["creates"] == 0
    assert len(env.drive.list_files()) == len(MIXED) + len(folders)


def test_subprocess_run_prints_summary_and_exit_code(env):
    env.put("a/b/c.jpg")
    result = env.run("--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "transferred" in result.stdout and "Summary of run" in result.stdout
    assert AWS_SECRET not in result.stdout + result.stderr
    assert set(env.drive_files()) == {f"{ROOT}/a/b/c.jpg"}
    assert oct(env.checkpoint.stat().st_mode & 0o777) == "0o600"


def test_multipart_s3_object_and_multi_chunk_drive_upload(env):
    part1 = photo_bytes("part1", 5 * 1024 * 1024)
    part2 = photo_bytes("part2", 300 * 1024 + 7)
    upload = env.s3.create_multipart_upload(Bucket=env.bucket, Key="video/long.mp4")
    etags = [env.s3.upload_part(Bucket=env.bucket, Key="video/long.mp4", UploadId=upload["UploadId"], PartNumber=n,
                                Body=body)["ETag"] for n, body in ((1, part1), (2, part2))]
    env.s3.complete_multipart_upload(
        Bucket=env.bucket, Key="video/long.mp4", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]})
    listed_etag = env.s3.head_object(Bucket=env.bucket, Key="video/long.mp4")["ETag"].strip('"')
    assert "-" in listed_etag and not ct.etag_is_plain_md5(listed_etag)

    assert env.main("--chunk-size", "1") == 0

    (item,) = env.drive_files()[f"{ROOT}/video/long.mp4"]
    assert item["md5Checksum"] == md5(part1 + part2)
    with env.drive.lock:
        chunk_puts = [r for r in env.drive.requests if r["method"] == "PUT" and "upload_id" in r["query"]]
    assert len(chunk_puts) == 6   # 5 MiB + 300 KiB in 1 MiB chunks


def test_dry_run_writes_nothing_anywhere(env):
    env.put("x/one.jpg")
    env.put("x/two.mp4")
    env.put("x/notes.txt")
    env.drive.clear_requests()
    before = sorted(p.name for p in env.cwd.iterdir())

    result = env.run("--dry-run")

    assert result.returncode == 0, result.stderr
    assert "2 would be copied" in result.stdout
    assert sorted(p.name for p in env.cwd.iterdir()) == before
    assert env.drive.list_files() == []
    with env.drive.lock:
        assert env.drive.requests == []


def test_changed_object_gets_a_new_revision_not_a_second_file(env):
    env.put("p/photo.jpg", b"first version" * 100)
    assert env.main() == 0
    (first,) = env.drive_files()[f"{ROOT}/p/photo.jpg"]
    new_body = env.put("p/photo.jpg", b"second version" * 100)
    assert env.main() == 0
    (second,) = env.drive_files()[f"{ROOT}/p/photo.jpg"]
    assert second["id"] == first["id"]
    assert second["md5Checksum"] == md5(new_body)


def test_checkpoint_deleted_rerun_adopts_what_is_in_drive(env):
    for n in range(5):
        env.put(f"d/{n}.jpg")
    assert env.main() == 0
    env.checkpoint.unlink()
    env.drive.clear_requests()
    assert env.main() == 0
    assert upload_counts(env.drive)["creates"] == 0
    assert all(len(v) == 1 for v in env.drive_files().values())
    assert len(env.drive_files()) == 5


# -- configuration and auth errors: one line, documented exit code ---------------------------------

def test_missing_bucket_variable_exits_2(env):
    result = env.run(env={"S3_BUCKET_NAME": ""})
    assert result.returncode == 2
    assert "S3_BUCKET_NAME" in one_line_error(result)


def test_missing_secret_key_exits_2_naming_the_variable(env):
    variables = dict(env.vars)
    del variables["AWS_SECRET_ACCESS_KEY"]
    env.vars = variables
    result = env.run()
    assert result.returncode == 2
    assert "AWS_SECRET_ACCESS_KEY" in one_line_error(result)


def test_values_come_from_dotenv_file_and_environment_wins(env):
    env.put("e/1.jpg")
    variables = dict(env.vars)
    bucket = variables.pop("S3_BUCKET_NAME")
    (env.cwd / ".env").write_text(f"S3_BUCKET_NAME={bucket}\nDRIVE_FOLDER_NAME=From dotenv\n")
    env.vars = variables
    result = env.run(env={"DRIVE_FOLDER_NAME": "From environment"})
    assert result.returncode == 0, result.stderr
    assert set(env.drive_files()) == {"From environment/e/1.jpg"}


def test_missing_credentials_without_token_exits_2(env):
    (env.cwd / "token.json").unlink()
    (env.cwd / "credentials.json").unlink()
    env.put("c/1.jpg")
    result = env.run()
    assert result.returncode == 2
    assert "credentials.json" in one_line_error(result)


def test_no_token_and_no_terminal_exits_3_pointing_to_auth(env):
    (env.cwd / "token.json").unlink()
    env.put("c/1.jpg")
    result = env.run()
    assert result.returncode == 3
    assert "cloud_transfer.py auth" in one_line_error(result)


def test_nonexistent_bucket_exits_2(env):
    result = env.run("--bucket", "no-such-bucket-here")
    assert result.returncode == 2
    assert "no-such-bucket-here" in one_line_error(result)


def test_access_denied_exits_3(env, moto_url):
    iam = boto3.client("iam", endpoint_url=moto_url, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="y")
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    requests.post(f"{moto_url}/moto-api/reset-auth", data=b"0", timeout=10)
    try:
        result = env.run(env={"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]})
    finally:
        requests.post(f"{moto_url}/moto-api/reset-auth", data=b"inf", timeout=10)
    assert result.returncode == 3
    line = one_line_error(result)
    assert "denied" in line and env.bucket in line
    assert key["SecretAccessKey"] not in result.stderr


def test_unrefreshable_token_without_tty_exits_3_and_keeps_token(env):
    env.put("t/1.jpg")
    token_path = env.cwd / "token.json"
    write_token(token_path, "stale-access-token", expired=True)
    env.drive.revoke_refresh_token(REFRESH_TOKEN)
    before = token_path.read_bytes()
    result = env.run()
    assert result.returncode == 3
    assert "cloud_transfer.py auth" in one_line_error(result)
    assert token_path.read_bytes() == before
    assert env.drive.list_files() == []


def test_expired_token_is_refreshed_at_endpoint_and_saved_0600(env):
    env.put("t/1.jpg")
    token_path = env.cwd / "token.json"
    write_token(token_path, "stale-access-token", expired=True)
    result = env.run()
    assert result.returncode == 0, result.stderr
    assert env.drive.token_refreshes >= 1
    saved = json.loads(token_path.read_text())
    assert saved["token"] != "stale-access-token"
    with env.drive.lock:
        first = env.drive.requests[0]
    assert first["path"] == "/token", "an expired token is refreshed before use, not after a 401"
    assert oct(token_path.stat().st_mode & 0o777) == "0o600"
    for secret in (CLIENT_SECRET, REFRESH_TOKEN, saved["token"], AWS_SECRET):
        assert secret not in result.stdout + result.stderr


def test_drive_endpoint_url_keeps_every_request_off_google(env, monkeypatch):
    """Uploads (single and resumable) and the token refresh all go to DRIVE_ENDPOINT_URL."""
    env.put("g/small.jpg")
    env.put("g/large.mp4", photo_bytes("large", 700 * 1024))
    write_token(env.cwd / "token.json", "stale-access-token", expired=True)
    resolved = []
    real_getaddrinfo = socket.getaddrinfo

    def recording_getaddrinfo(host, *args, **kwargs):
        resolved.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording_getaddrinfo)
    assert env.main("--chunk-size", "0.25") == 0
    assert env.drive.token_refreshes >= 1
    assert not [h for h in resolved if "google" in str(h)], resolved
    assert set(env.drive_files()) == {f"{ROOT}/g/small.jpg", f"{ROOT}/g/large.mp4"}


# -- concurrency, commands --------------------------------------------------------------------------

def test_many_workers_never_create_a_folder_twice(env):
    for n in range(24):
        env.put(f"deep/er/still/{n:02d}.jpg", photo_bytes(str(n), 500))
    env.drive.faults.latency_s = 0.02     # widen the window in which workers race for the same folder
    assert env.main("--workers", "8") == 0
    folder_paths = [env.drive.path_of(f["id"]) for f in env.drive.list_files() if f["mimeType"] == FOLDER]
    assert sorted(folder_paths) == [ROOT, f"{ROOT}/deep", f"{ROOT}/deep/er", f"{ROOT}/deep/er/still"]
    assert len(env.drive_files()) == 24


def test_second_run_while_lock_is_held_exits_4_at_once(env):
    env.put("l/1.jpg")
    with ct.RunLock(env.cwd / "cloud_transfer_checkpoint.json.lock"):
        result = env.run()
    assert result.returncode == 4
    assert "cloud_transfer_checkpoint.json.lock" in one_line_error(result)
    assert env.drive.list_files() == []


def test_verify_reports_missing_and_mismatched_and_json(env, capsys):
    for n in range(4):
        env.put(f"v/{n}.jpg")
    assert env.main() == 0
    assert env.main("verify") == 0
    capsys.readouterr()
    files = env.drive_files()
    env.drive.files.pop(files[f"{ROOT}/v/0.jpg"][0]["id"])
    with env.drive.lock:
        record = env.drive.files[files[f"{ROOT}/v/1.jpg"][0]["id"]]
        record["md5Checksum"] = "0" * 32
    env.drive.clear_requests()
    assert env.main("verify", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["checked"], report["missing"], report["mismatched"], report["duplicated"]) == (4, 1, 1, 0)
    assert report["details"]["missing"] == [{"key": "v/0.jpg"}]
    with env.drive.lock:
        assert all(r["method"] == "GET" for r in env.drive.requests), "verify must not write"


def test_rollback_trashes_uploads_and_a_rerun_copies_them_again(env, capsys):
    for n in range(3):
        env.put(f"r/{n}.jpg")
    assert env.main() == 0
    assert env.main("rollback", "--yes") == 0
    assert env.drive_files() == {}
    trashed = [f for f in env.drive.list_files(include_trashed=True) if f.get("trashed")]
    assert len(trashed) >= 3
    status = json.loads(env.checkpoint.read_text())
    assert {e["status"] for e in status["objects"].values()} == {"rolled_back"}
    assert env.main() == 0
    assert len(env.drive_files()) == 3


def test_status_summarises_the_checkpoint(env, capsys):
    env.put("s/1.jpg")
    env.put("s/2.jpg", b"")
    assert env.main() == 0
    capsys.readouterr()
    assert env.main("status", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["objects"] == {"done": 2}
    assert report["runs"][-1]["outcome"] == "ok"


def test_progress_bars_on_a_terminal_with_rate_and_eta(env):
    """stderr is a terminal (a pty sized 100x30): tqdm draws files and bytes bars."""
    import fcntl
    import os
    import pty
    import struct
    import sys
    import termios

    from tests.conftest import SCRIPT, read_pty

    for n in range(12):
        env.put(f"tty/{n}.jpg", photo_bytes(str(n), 50_000))
    child_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(env.cwd), **env.vars}
    pid, fd = pty.fork()
    if pid == 0:  # the child: a terminal of a real size, then the script
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        os.chdir(env.cwd)
        os.execve(sys.executable, [sys.executable, str(SCRIPT), "--workers", "2"], child_env)
    output = read_pty(fd)
    _, status = os.waitpid(pid, 0)
    text = output.decode("utf-8", "replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "files: 100%" in text and "12/12" in text
    assert "bytes: 100%" in text and "files/s" in text and "KiB/s" in text and "MB" not in text
    assert "Summary of run" in text


def test_auth_runs_the_installed_app_flow_and_saves_a_0600_token(env):
    """`auth --no-browser`: the consent URL is printed, the browser's redirect to the local server
    carries a code, the code is exchanged at the token endpoint; token.json is written 0600."""
    import os
    import subprocess
    import sys
    from urllib.parse import parse_qs, urlsplit

    from tests.conftest import SCRIPT, write_client

    (env.cwd / "token.json").unlink()
    write_client(env.cwd / "credentials.json")
    client = json.loads((env.cwd / "credentials.json").read_text())
    client["installed"]["token_uri"] = f"{env.drive.url}/token"       # the emulator plays Google's OAuth server
    (env.cwd / "credentials.json").write_text(json.dumps(client))
    child_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(env.cwd), **env.vars,
                 "OAUTHLIB_INSECURE_TRANSPORT": "1"}                     # the emulator speaks plain http
    process = subprocess.Popen([sys.executable, str(SCRIPT), "auth", "--no-browser"], cwd=env.cwd, env=child_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        consent_url = line[line.index("https://"):].strip()
        params = parse_qs(urlsplit(consent_url).query)
        assert params["scope"] == ["https://www.googleapis.com/auth/drive.file"]
        assert params["access_type"] == ["offline"] and params["prompt"] == ["consent"]   # a refresh token, always
        redirect = params["redirect_uri"][0]
        assert redirect.startswith("http://localhost:")
        answer = requests.get(redirect, params={"code": env.drive.issue_auth_code(), "state": params["state"][0]},
                              timeout=30)
        assert answer.status_code == 200
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, err
    token_path = env.cwd / "token.json"
    saved = json.loads(token_path.read_text())
    assert saved["refresh_token"].startswith("1//emu-")
    assert oct(token_path.stat().st_mode & 0o777) == "0o600"
    assert saved["refresh_token"] not in out + err and CLIENT_SECRET not in out + err
    env.put("after-auth/1.jpg")
    assert env.run().returncode == 0


def test_sandbox_shows_a_real_transfer():
    """`python -m tests.sandbox`, as the README tells a newcomer to run it."""
    import subprocess
    import sys

    from tests.conftest import PROJECT

    result = subprocess.run([sys.executable, "-m", "tests.sandbox"], cwd=PROJECT, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr
    assert "Amazon Photos Transfer/2020/O'Brien's party.jpg" in result.stdout
    assert "dated 2019-05-04" in result.stdout   # its EXIF date, not the day it was uploaded
    assert "already done           5" in result.stdout
    assert "missing 0, duplicated 0, mismatched 0" in result.stdout


def test_a_folder_of_more_than_one_page_is_listed_whole(env):
    """Drive answers at most 1000 files a page: adoption must see the 1001st file too."""
    from google.oauth2.credentials import Credentials

    folder = env.drive.add_folder("big")
    for n in range(1003):
        env.drive.add_file(f"{n}.jpg", b"x", parent_id=folder["id"], appProperties={ct.PROP_SOURCE: f"s{n}"})
    config = ct.Config(bucket="b", drive_endpoint_url=env.drive.url)
    creds = Credentials(token=env.drive.issue_token())
    api = ct.DriveApi(ct.make_drive_service_factory(config, creds))
    listed = list(api.list_folder(folder["id"]))
    assert len(listed) == 1003 and len({f.id for f in listed}) == 1003
    assert [f.id for f in ct.DriveFolders(api).files_for_source(folder["id"], "s1002")] == [listed[-1].id]
    with env.drive.lock:
        pages = [r for r in env.drive.requests if r["path"] == "/drive/v3/files" and r["method"] == "GET"]
    assert len(pages) == 4   # two for list_folder, two for the cached listing behind files_for_source


def test_a_rerun_that_changes_nothing_rewrites_no_snapshot(env):
    """At a million objects the snapshot takes seconds and hundreds of MB to serialise: a nightly run
    with nothing to do appends its run record to the journal and leaves the snapshot alone."""
    for n in range(3):
        env.put(f"a/{n}.jpg")
    assert env.run().returncode == 0
    before = env.checkpoint.stat()
    env.drive.faults = Faults(storage_quota_bytes=10 ** 9)   # a real account has a quota: still not asked
    result = env.run()
    assert result.returncode == 0, result.stderr
    # a re-run with nothing to do: the root (files.get) and what changed in Drive (changes.list)
    assert "Drive requests         2\n" in result.stdout
    after = env.checkpoint.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    status = env.run("status", "--json")
    report = json.loads(status.stdout)
    assert len(report["runs"]) == 2 and report["runs"][-1]["outcome"] == "ok" and report["objects"] == {"done": 3}
    env.put("a/3.jpg")
    assert env.run().returncode == 0
    assert env.checkpoint.stat().st_ino != before.st_ino   # a run that changed something folds the journal in
    assert not env.checkpoint.with_name(env.checkpoint.name + ".journal").exists()


def test_refused_reads_back_off_alone_and_never_pace_writes(env):
    """verify only reads; Drive's per-user quota refuses reads too. Those refusals must not start
    write pacing or pile up global pauses (found in review: they did, through the shared pacer)."""
    from google.oauth2.credentials import Credentials

    from tests.drive_emulator import Faults

    folder = env.drive.add_folder("f")
    config = ct.Config(bucket="b", drive_endpoint_url=env.drive.url)
    stats = ct.Stats()
    api = ct.DriveApi(ct.make_drive_service_factory(config, Credentials(token=env.drive.issue_token())),
                      backoff=ct.Backoff(0.001, 0.002), stats=stats)
    env.drive.faults = Faults(rate_limit_rate=0.5)
    for _ in range(40):
        assert list(api.list_folder(folder["id"])) == []
    assert stats["rate_limited"] >= 10
    assert api.pacer.rate is None and api.pacer.reserve(write=True) == 0


def test_a_video_whose_md5_update_failed_is_finished_not_uploaded_again(env, monkeypatch):
    """A streamed video gets its MD5 by an update after the upload. When that update fails (or the
    run is killed just before it), the bytes are in Drive: the next attempt or run checks them and
    records the MD5 instead of sending the whole video again (found in review)."""
    video = env.put("v/clip.mp4", photo_bytes("clip", 3 * 1024 * 1024))
    real_set_md5 = ct.Transfer._set_md5

    def failing(self, *args, **kwargs):
        raise ct.ObjectError(ct.Verdict(ct.Verdict.FAIL, "update refused (test)"))

    monkeypatch.setattr(ct.Transfer, "_set_md5", failing)
    assert env.main("--chunk-size", "0.25") == 1
    assert env.drive.uploaded_bytes == len(video)
    monkeypatch.setattr(ct.Transfer, "_set_md5", real_set_md5)
    assert env.main("--chunk-size", "0.25") == 0
    assert env.drive.uploaded_bytes == len(video)   # nothing sent again
    assert_drive_matches(env, {"v/clip.mp4": video})
    (copy,) = env.drive_files()[f"{ROOT}/v/clip.mp4"]
    assert copy["appProperties"][ct.PROP_MD5] == hashlib.md5(video).hexdigest()
