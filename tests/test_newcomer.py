"""Issue 10: what a new user meets first, each as a subprocess: missing packages, .env typos and
a missing .env, s3:// bucket URLs, closed pipes, `rollback --run last` after a quiet night."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import PROJECT, SCRIPT, one_line_error, photo_bytes


def test_the_script_run_outside_its_virtualenv_says_what_to_install_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-S", str(SCRIPT), "status"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60, env={"PATH": os.environ.get("PATH", "")})   # -S: no site-packages
    assert result.returncode == 2
    line = one_line_error(result)
    assert "pip install -r requirements.txt" in line and str(PROJECT) in line and "Traceback" not in result.stderr


def test_env_typos_get_a_did_you_mean_and_a_missing_env_points_to_the_example(env, tmp_path):
    (env.cwd / ".env").write_text(f"S3_BUCKET={env.bucket}\nDRIVE_FOLDER=Photos\nAWS_SECRET_ACCES_KEY=x\n"
                                  "AWS_DEFAULT_OUTPUT=json\n")
    variables = {k: v for k, v in env.vars.items() if k != "S3_BUCKET_NAME"}
    result = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], cwd=env.cwd, env={**variables,
                            "PATH": os.environ.get("PATH", "")}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    line = one_line_error(result)   # the typo is named beside the error it caused
    assert "S3_BUCKET_NAME is empty or not set" in line
    assert "S3_BUCKET is not a setting of this tool; did you mean S3_BUCKET_NAME?" in line
    assert re.search(r"DRIVE_FOLDER is not a setting of this tool; did you mean [A-Za-z_ ]*DRIVE_FOLDER_NAME", line)
    assert "did you mean AWS_SECRET_ACCESS_KEY?" in line
    assert "AWS_DEFAULT_OUTPUT" not in result.stderr   # botocore's own: not questioned
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=elsewhere, env={**variables, "PATH": os.environ["PATH"]},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "copy .env.example to .env" in one_line_error(result)


def test_bucket_given_as_an_s3_url_is_understood_or_refused_with_how_to_write_it(env):
    env.put("a/1.jpg")
    env.put("b/2.jpg")
    result = env.run("--dry-run", "--bucket", f"s3://{env.bucket}/a/")
    assert result.returncode == 0, result.stderr
    assert "1 would be copied" in result.stdout and "2 listed" not in result.stdout
    refused = env.run("--dry-run", "--bucket", f"arn:aws:s3:::{env.bucket}")
    assert refused.returncode == 2 and "s3://my-photos/some/prefix" in one_line_error(refused)


def test_a_closed_pipe_ends_status_quietly(env):
    env.put("a/1.jpg")
    assert env.run().returncode == 0
    process = subprocess.Popen([sys.executable, str(SCRIPT), "status", "--json"], cwd=env.cwd,
                               env={**env.vars, "PATH": os.environ["PATH"]}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.close()   # like `| head -1` that has its line: nothing reads what follows
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0 and stderr == ""


def test_rollback_last_takes_the_last_run_that_uploaded_something_and_quiet_is_quiet(env):
    env.put("a/1.jpg", photo_bytes("1"))
    env.put("a/2.jpg", photo_bytes("2"))
    assert env.run().returncode == 0
    assert env.run().returncode == 0   # a nightly run with nothing to do
    result = env.run("rollback", "--run", "last", "--yes", "-q")
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    assert env.drive_files() == {}


def test_a_quiet_cron_run_keeps_progress_and_summary_in_its_log_file_and_no_carriage_returns(env):
    from tests.drive_emulator import Faults

    for n in range(6):
        env.put(f"a/{n}.jpg", photo_bytes(str(n)))
    env.drive.faults = Faults(latency_s=0.05)   # a run long enough for a few progress lines
    result = env.run("--quiet", "--log-file", "run.log", env={"CLOUD_TRANSFER_PROGRESS_S": "0.1"})
    assert result.returncode == 0 and result.stdout == "" and result.stderr == ""
    logged = (env.cwd / "run.log").read_text()
    assert "progress: " in logged and "Summary of run" in logged and "transferred            6" in logged
    assert "\r" not in logged
    loud = env.run("--log-file", "loud.log", "--checkpoint", "other.json", "--folder", "Other")
    assert "\r" not in loud.stdout + loud.stderr and "Summary of run" in (env.cwd / "loud.log").read_text()
    plain = env.run("--checkpoint", "third.json", "--folder", "Third")   # no --log-file: the summary once
    assert plain.stdout.count("Summary of run") == 1 and "Summary of run" not in plain.stderr


def _auth_process(env, *args: str):
    import json as _json

    from tests.conftest import write_client

    (env.cwd / "token.json").unlink()
    write_client(env.cwd / "credentials.json")
    client = _json.loads((env.cwd / "credentials.json").read_text())
    client["installed"]["token_uri"] = f"{env.drive.url}/token"
    (env.cwd / "credentials.json").write_text(_json.dumps(client))
    child_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(env.cwd), **env.vars,
                 "OAUTHLIB_INSECURE_TRANSPORT": "1"}   # no DISPLAY, no BROWSER: a server over ssh
    return subprocess.Popen([sys.executable, str(SCRIPT), "auth", *args], cwd=env.cwd, env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sign_in_without_a_browser_prints_the_url_and_the_ssh_line_and_a_signal_ends_the_wait(env):
    import signal

    import pytest

    import webbrowser

    try:
        webbrowser.get()
        pytest.skip("this machine has a browser")
    except webbrowser.Error:
        pass
    process = _auth_process(env)
    try:
        line = process.stdout.readline()   # the consent URL: the process now waits for the redirect
        assert "Open this URL" in line and "https://" in line
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "no web browser found here" in err and "ssh -L " in err and "the consent URL is printed" not in err
    assert "Traceback" not in err


def test_a_missing_bucket_names_where_the_name_came_from_and_the_lowercase_rule(env):
    variables = {k: v for k, v in env.vars.items() if k != "S3_BUCKET_NAME"}
    (env.cwd / ".env").write_text("S3_BUCKET_NAME=My-Photos\n")
    from_file = subprocess.run([sys.executable, str(SCRIPT), "--dry-run"], cwd=env.cwd, capture_output=True,
                               text=True, timeout=60, env={**variables, "PATH": os.environ["PATH"]})
    assert from_file.returncode == 2
    line = one_line_error(from_file)
    assert "'My-Photos' (from S3_BUCKET_NAME in .env) does not exist at " + env.vars["AWS_ENDPOINT_URL"] in line
    assert "bucket names on AWS are lowercase: did you mean 'my-photos'?" in line
    from_flag = env.run("--dry-run", "--bucket", "no-such-photos")
    assert "'no-such-photos' (from --bucket) does not exist" in one_line_error(from_flag)
    assert "lowercase" not in from_flag.stderr


def test_an_unreachable_s3_is_named_and_said_while_retrying_then_exit_7(env):
    import socket

    with socket.socket() as closed:   # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    result = env.run("--dry-run", env={"AWS_ENDPOINT_URL": endpoint, "AWS_MAX_ATTEMPTS": "3",
                                       "CLOUD_TRANSFER_BACKOFF_CAP_S": "0.1"})
    assert result.returncode == 7
    assert f"cannot reach S3 at {endpoint} (EndpointConnectionError): retrying" in result.stderr
    assert f"error: cannot reach S3 at {endpoint}: EndpointConnectionError" in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def test_check_says_ok_for_each_precondition_and_writes_nothing(env):
    env.put("a/1.jpg", photo_bytes("1", 5000))
    env.put("a/2.jpg", photo_bytes("2", 7000))
    result = env.run("--check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok    settings", "ok    photo dates", "ok    checkpoint", "ok    S3", "ok    Google sign-in", "ok    Drive folder", "ok    temp dir",
        "ok    Drive storage", "ok    daily budget"]
    assert "2 objects, 2 to copy (11.7 KiB)" in result.stdout
    assert re.search(r"photo dates: ExifRead [\d.]+, hachoir [\d.]+, libexiv2 0\.\d+", result.stdout)
    assert "signed in as emulated.user@example.com" in result.stdout
    assert "will be created in My Drive" in result.stdout
    assert env.drive.list_files() == [] and not env.checkpoint.exists()
    assert env.run().returncode == 0
    refused = env.run("--check", "--reset-checkpoint")   # a check never moves the checkpoint aside
    assert refused.returncode == 2 and "--reset-checkpoint only applies" in one_line_error(refused)
    again = env.run("--check")
    assert again.returncode == 0 and "0 to copy" in again.stdout and "of earlier runs is usable" in again.stdout


def test_check_fails_with_the_first_failures_exit_code_and_says_why_on_each_line(env):
    from tests.drive_emulator import Faults

    env.put("a/1.jpg", photo_bytes("1", 50_000))
    env.drive.faults = Faults(storage_quota_bytes=10_000)
    full = env.run("--check", "--daily-limit", "off")
    assert full.returncode == 5
    assert "FAIL  Drive storage: Google Drive has 9.8 KiB free and the copy needs 48.8 KiB more" in full.stdout
    assert "ok    daily budget: off" in full.stdout
    (env.cwd / "token.json").unlink()
    signed_out = env.run("--check")
    assert signed_out.returncode == 3
    assert "FAIL  Google sign-in: no Google token" in signed_out.stdout
    assert "Drive storage" not in signed_out.stdout and "ok    temp dir" in signed_out.stdout


def test_an_unreachable_drive_is_named_and_said_while_retrying_then_exit_7(env):
    import socket

    env.put("a/1.jpg")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    result = env.run(env={"DRIVE_ENDPOINT_URL": endpoint, "CLOUD_TRANSFER_BACKOFF_CAP_S": "0.05",
                          "CLOUD_TRANSFER_BACKOFF_BASE_S": "0.01"})
    assert result.returncode == 7, result.stderr
    assert f"cannot reach Google Drive at {endpoint} (network error talking to Drive: " in result.stderr
    assert ": retrying" in result.stderr and "Traceback" not in result.stderr
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"error: cannot reach Google Drive at {endpoint}")


def test_verbose_logs_one_line_per_copied_object_on_screen_and_in_the_log_file(env):
    # rclone -v logs "Copied (new)" per file; a plain run stays one line per run
    env.put("2019/a.jpg", photo_bytes("a", 3000))
    env.put("2019/b.mov", b"\0\0\0\x14ftypqt  " + bytes(3000))
    log_file = env.cwd / "copy.log"

    plain = env.run()
    assert plain.returncode == 0 and "copied (" not in plain.stderr
    env.put("2019/c.jpg", photo_bytes("c", 3000))
    env.put("2019/a.jpg", photo_bytes("a2", 3100))   # changed in S3

    result = env.run("-v", "--log-file", str(log_file))

    assert result.returncode == 0, result.stderr
    for text in (result.stderr, log_file.read_text()):
        assert "copied (new): 2019/c.jpg → 2019/c.jpg (" in text and "date from " in text
        assert "copied (new revision): 2019/a.jpg → 2019/a.jpg" in text
        assert "2019/b.mov" not in [line.split(": ", 1)[-1].split(" ")[0] for line in text.splitlines()
                                    if "copied (" in line]   # copied by the first run, not this one


def test_the_readmes_dry_run_of_one_prefix_works_after_a_run_of_the_whole_bucket(env):
    env.put("2019/a.jpg", photo_bytes("a", 3000))
    env.put("2020/b.jpg", photo_bytes("b", 3000))
    assert env.run().returncode == 0
    env.put("2019/c.jpg", photo_bytes("c", 3000))
    before = env.checkpoint.read_bytes()

    dry = env.run("--prefix", "2019/", "--dry-run")

    assert dry.returncode == 0, dry.stderr
    assert "2 listed, 1 would be copied" in dry.stdout and "1 already done" in dry.stdout
    assert "a real run with --prefix '2019/' would stop" in dry.stderr
    assert env.checkpoint.read_bytes() == before
    real = env.run("--prefix", "2019/")   # a real run keeps its clear refusal
    assert real.returncode == 2 and "belongs to prefix ''" in one_line_error(real)


def test_check_fails_on_a_checkpoint_the_run_could_not_write_or_a_lock_a_run_holds(env, tmp_path):
    import fcntl

    env.put("a/1.jpg", photo_bytes("1", 5000))
    missing = env.run("--check", "--checkpoint", str(tmp_path / "no-such-dir" / "cp.json"))
    assert missing.returncode == 2
    assert "FAIL  checkpoint: the checkpoint's directory" in missing.stdout and "does not exist" in missing.stdout
    assert "ok    S3" in missing.stdout   # the other checks still run
    assert env.run().returncode == 0
    lock = env.checkpoint.with_name(env.checkpoint.name + ".lock")
    with open(lock, "a+") as held:   # as a running transfer holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        busy = env.run("--check")
    assert busy.returncode == 4 and "FAIL  checkpoint: a cloud_transfer run (pid " in busy.stdout
    if os.geteuid() != 0:   # root writes anywhere
        read_only = tmp_path / "read-only"
        read_only.mkdir()
        read_only.chmod(0o500)
        denied = env.run("--check", "--checkpoint", str(read_only / "cp.json"))
        assert denied.returncode == 2 and "cannot write in the checkpoint's directory" in denied.stdout
    other = env.run("--check", "--prefix", "b/")   # a checkpoint of another prefix: named, not a traceback
    assert other.returncode == 2 and "FAIL  checkpoint: checkpoint" in other.stdout and "belongs to prefix" in other.stdout


def test_a_service_account_key_or_the_examples_placeholders_are_named_for_what_they_are(env, tmp_path):
    import shutil

    from tests.service_accounts import make_service_account

    env.put("a/1.jpg")
    (env.cwd / "token.json").unlink()   # a first run: the client file is read
    key = make_service_account(tmp_path, env.drive)
    shutil.copy(key, env.cwd / "credentials.json")
    result = env.run()
    assert result.returncode == 2
    line = one_line_error(result)
    assert "credentials.json is a service-account key, not an OAuth client" in line and "--service-account" in line

    shutil.copy(PROJECT / "credentials.json.example", env.cwd / "credentials.json")
    result = env.run()
    assert result.returncode == 2 and "still holds the example's client from credentials.json.example" in \
        one_line_error(result)

    example = (PROJECT / ".env.example").read_text()
    (env.cwd / ".env").write_text(example)
    variables = {k: v for k, v in env.vars.items() if k not in ("S3_BUCKET_NAME", "AWS_ACCESS_KEY_ID")}
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=env.cwd, capture_output=True, text=True, timeout=60,
                            env={**variables, "PATH": os.environ.get("PATH", "")})
    assert result.returncode == 2
    assert "in .env still holds the example's value" in one_line_error(result)
    assert env.drive.list_files() == []
