"""verify, rollback and status in depth (subprocess and in-process runs against the real servers)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import photo_bytes

ROOT = "Amazon Photos Transfer"
FOLDER = "application/vnd.google-apps.folder"


def two_runs(env):
    """Run 1 copies first/*, run 2 copies second/*; returns the checkpoint's run ids."""
    for n in range(3):
        env.put(f"first/{n}.jpg")
    assert env.run().returncode == 0
    for n in range(2):
        env.put(f"second/{n}.jpg")
    assert env.run().returncode == 0
    return [run["id"] for run in json.loads(env.checkpoint.read_text())["runs"]]


def test_rollback_dry_run_lists_and_changes_nothing(env):
    two_runs(env)
    before = sorted(f["id"] for f in env.drive.list_files())
    result = env.run("rollback", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("would remove") == 5
    assert sorted(f["id"] for f in env.drive.list_files()) == before


def test_rollback_last_run_only_and_leaves_folders(env):
    first_run, second_run = two_runs(env)
    result = env.run("rollback", "--run", "last", "--yes")
    assert result.returncode == 0, result.stderr
    assert "Folders are left in place" in result.stdout
    assert set(env.drive_files()) == {f"{ROOT}/first/{n}.jpg" for n in range(3)}
    live_folders = {env.drive.path_of(f["id"]) for f in env.drive.list_files() if f["mimeType"] == FOLDER}
    assert {f"{ROOT}/second", f"{ROOT}/first"} <= live_folders
    entries = json.loads(env.checkpoint.read_text())["objects"]
    assert {k for k, e in entries.items() if e["status"] == "rolled_back"} == {"second/0.jpg", "second/1.jpg"}
    assert all(f.get("trashed") for f in env.drive.list_files(include_trashed=True)
               if env.drive.path_of(f["id"]).startswith(f"{ROOT}/second/"))


@pytest.mark.parametrize("permanent", [False, True])
def test_rollback_never_removes_a_users_own_file_put_into_our_folder(env, permanent):
    """Under drive.file the user's own files in our folders are invisible to the tool, and trashing or
    deleting a folder takes all it holds: rollback must leave every folder alone (issue 7, item 6)."""
    env.drive.faults.app_visibility = True   # the user's file is invisible to the tool, as on real Drive
    two_runs(env)
    folder_id = json.loads(env.checkpoint.read_text())["folders"]["second"]["id"]
    users = env.drive.add_file("my-own-notes.txt", b"the user's", parent_id=folder_id)   # made in the web UI
    result = env.run("rollback", "--yes", *(["--permanent"] if permanent else []))
    assert result.returncode == 0, result.stderr
    assert users["id"] in env.drive.files and not env.drive.files[users["id"]]["trashed"]
    assert {env.drive.path_of(f["id"]) for f in env.drive.list_files() if f["mimeType"] != FOLDER} == {
        f"{ROOT}/second/my-own-notes.txt"}   # every photo rolled back, the user's file where it was


def test_rollback_permanent_deletes(env):
    two_runs(env)
    assert env.run("rollback", "--permanent", "--yes").returncode == 0
    assert [f for f in env.drive.list_files(include_trashed=True) if f["mimeType"] != FOLDER] == []


def test_rollback_never_touches_a_file_without_our_provenance(env):
    env.put("p/mine.jpg")
    assert env.run().returncode == 0
    checkpoint = json.loads(env.checkpoint.read_text())
    folder_id = checkpoint["folders"]["p"]["id"]
    stranger = env.drive.add_file("someone-elses.jpg", b"not ours", parent_id=folder_id)
    checkpoint["objects"]["p/mine.jpg"]["id"] = stranger["id"]   # a checkpoint that points astray
    env.checkpoint.write_text(json.dumps(checkpoint))
    result = env.run("rollback", "--yes")
    assert result.returncode == 1
    assert "does not carry this tool's provenance" in result.stderr
    assert not env.drive.files[stranger["id"]].get("trashed")


def test_verify_names_five_of_each_problem_and_says_how_many_more(env):
    for n in range(8):
        env.put(f"m/{n}.jpg")
    assert env.run().returncode == 0
    with env.drive.lock:
        for file_id in [f["id"] for f in env.drive.list_files() if f["name"].endswith(".jpg")][:7]:
            env.drive._set_trashed(env.drive.files[file_id], True)
    result = env.run("verify")
    assert result.returncode == 1
    assert result.stdout.count("  missing: m/") == 5
    assert "  missing: and 2 more (see --json)" in result.stdout


def test_verify_finds_duplicates_and_extras_and_writes_nothing(env):
    for n in range(3):
        env.put(f"v/{n}.jpg", photo_bytes(str(n), 900))
    assert env.run().returncode == 0
    files = env.drive_files()
    original = files[f"{ROOT}/v/0.jpg"][0]
    env.drive.add_file("0.jpg", env.drive.content(original["id"]), parent_id=original["parents"][0],
                       appProperties=original["appProperties"])
    env.drive.add_file("stray.jpg", b"stray", parent_id=original["parents"][0])
    env.drive.clear_requests()
    result = env.run("verify")
    assert result.returncode == 1
    assert "duplicated 1" in result.stdout and "extra in Drive 1" in result.stdout
    assert "duplicated: v/0.jpg" in result.stdout
    with env.drive.lock:
        assert {r["method"] for r in env.drive.requests} == {"GET"}


def test_status_reports_failures_with_reasons_and_runs(env):
    env.put("s/ok.jpg")
    env.put("s/cold.jpg", StorageClass="GLACIER")
    env.put("s/notes.txt", b"not a photo")
    env.put("s/.DS_Store", b"\0")
    run = env.run()
    assert run.returncode == 0
    assert "skipped                2" in run.stdout, run.stdout   # the run's own summary
    result = env.run("status")
    assert result.returncode == 0, result.stderr
    assert "done 1" in result.stdout and "skipped 2" in result.stdout and "pending 0" in result.stdout
    assert "1 object (2.0 KiB) waits for a restore" in result.stdout
    assert "aws s3api restore-object" in result.stdout
    assert "run " in result.stdout and "ok" in result.stdout


def test_rollback_asks_on_a_terminal_and_no_changes_nothing(env):
    """With a terminal attached and no --yes, rollback asks; answering 'n' removes nothing."""
    import os
    import pty
    import sys

    from tests.conftest import SCRIPT, read_pty

    for n in range(7):
        env.put(f"q/{n}.jpg")
    assert env.run().returncode == 0
    child_env = {"PATH": os.environ.get("PATH", ""), "HOME": str(env.cwd), **env.vars}
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(env.cwd)
        os.execve(sys.executable, [sys.executable, str(SCRIPT), "rollback"], child_env)
    output = read_pty(fd, until=b"[y/N]")
    assert b"[y/N]" in output, output
    os.write(fd, b"n\n")
    output += read_pty(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert b"nothing changed" in output
    assert b"Move these 7 files to the Drive trash? [y/N]" in output
    assert b"q/0.jpg, q/1.jpg, q/2.jpg, q/3.jpg, q/4.jpg and 2 more (rollback --dry-run lists them all)" in output
    assert len(env.drive_files()) == 7
