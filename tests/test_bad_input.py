"""Bad input: each gets one clear line on stderr, its documented exit code, and loses nothing.

Every case runs the real script as a subprocess (no terminal) and checks that the checkpoint,
token.json and Drive are as they were (README: "Bad input" table).
"""
from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import one_line_error as one_line, photo_bytes, write_client

ROOT = "Amazon Photos Transfer"


def snapshot(env):
    """What must not change: checkpoint, token, Drive contents."""
    checkpoint = env.checkpoint.read_bytes() if env.checkpoint.exists() else None
    token = (env.cwd / "token.json").read_bytes() if (env.cwd / "token.json").exists() else None
    drive = sorted((f["id"], f.get("md5Checksum"), f.get("trashed")) for f in env.drive.list_files(include_trashed=True))
    return checkpoint, token, drive


@pytest.fixture
def done_env(env):
    """An env where one photo has already been transferred, so there is state to protect."""
    env.put("kept/one.jpg")
    assert env.run().returncode == 0
    return env


def remove_var(env, name):
    env.vars = {k: v for k, v in env.vars.items() if k != name}


CASES = {
    # name: (prepare(env) -> extra args, exit code, fragment of the message)
    "bucket empty in .env": (lambda e: (remove_var(e, "S3_BUCKET_NAME"),
                                        (e.cwd / ".env").write_text("S3_BUCKET_NAME=\n"), [])[-1],
                             2, "S3_BUCKET_NAME is empty or not set"),
    "secret key empty": (lambda e: (remove_var(e, "AWS_SECRET_ACCESS_KEY"),
                                    (e.cwd / ".env").write_text("AWS_SECRET_ACCESS_KEY=\n"), [])[-1],
                         2, "AWS_SECRET_ACCESS_KEY is empty or not set"),
    "malformed .env line": (lambda e: ((e.cwd / ".env").write_text("A=1\nthis line is wrong\n"), [])[-1],
                            2, ".env line 2 is not KEY=VALUE"),
    "no AWS credentials at all": (lambda e: (remove_var(e, "AWS_ACCESS_KEY_ID"), remove_var(e, "AWS_SECRET_ACCESS_KEY"),
                                             e.vars.update(AWS_EC2_METADATA_DISABLED="true"), [])[-1],
                                  3, "no AWS credentials found"),
    "bucket does not exist": (lambda e: ["--bucket", "there-is-no-such-bucket"], 2, "(from --bucket) does not exist"),
    "token.json corrupted": (lambda e: ((e.cwd / "token.json").write_text("{broken"), [])[-1],
                             3, "token.json is unreadable or corrupted"),
    "chunk size not 256 KiB multiple": (lambda e: ["--chunk-size", "0.3"], 2, "multiple of 0.25 MiB"),
    "zero workers": (lambda e: ["--workers", "0"], 2, "--workers must be between 1 and 64"),
    "unknown flag": (lambda e: ["--frobnicate"], 2, "unknown option --frobnicate"),
    "checkpoint directory not writable": (lambda e: ((e.cwd / "plainfile").write_text("x"),
                                                     ["--checkpoint", str(e.cwd / "plainfile" / "cp.json")])[-1],
                                          2, "cannot create lock file"),
    "log file directory missing": (lambda e: ["--log-file", str(e.cwd / "nowhere" / "x.log")], 2, "--log-file"),
    "folder id not visible": (lambda e: ["--folder-id", "1NotAFolderTheAppCanSee", "--checkpoint", "other.json"],
                              2, "--full-scope"),
    "drive endpoint not a URL": (lambda e: (e.vars.update(DRIVE_ENDPOINT_URL="localhost:1"), [])[-1],
                                 2, "DRIVE_ENDPOINT_URL"),
    "rollback without --yes and no terminal": (lambda e: ["rollback"], 2, "needs --yes"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_with_documented_code_and_changes_nothing(done_env, case):
    prepare, code, fragment = CASES[case]
    done_env.put("kept/two.jpg")
    args = prepare(done_env)
    before = snapshot(done_env)
    result = done_env.run(*args)
    assert result.returncode == code, result.stderr
    assert fragment in one_line(result)
    assert snapshot(done_env) == before


@pytest.mark.parametrize("kind, fragment", [
    ("missing", "OAuth client file not found"),
    ("not json", "is not a valid JSON OAuth client file"),
    ("web", "holds a 'web' OAuth client"),
])
def test_bad_credentials_json_when_consent_is_needed(env, kind, fragment):
    (env.cwd / "token.json").unlink()
    client = env.cwd / "credentials.json"
    if kind == "missing":
        client.unlink()
    elif kind == "not json":
        client.write_text("<html>not json</html>")
    else:
        write_client(client, kind="web")
    env.put("a.jpg")
    result = env.run()
    assert result.returncode == 2
    assert fragment in one_line(result)
    assert env.drive.list_files() == []


def test_prefix_matching_nothing_exits_0_saying_so(env):
    env.put("2019/a.jpg")
    result = env.run("--prefix", "2031/")
    assert result.returncode == 0, result.stderr
    assert "nothing to transfer" in result.stderr
    assert env.drive_files() == {}


def test_awkward_keys_land_under_predictable_names(env):
    keys = {
        "odd/../dots.jpg": f"{ROOT}/odd/../dots.jpg",
        "//leading/slashes.jpg": f"{ROOT}/leading/slashes.jpg",
        "double//slash.jpg": f"{ROOT}/double/slash.jpg",
        "ctrl/tab\there\x01.jpg": f"{ROOT}/ctrl/tab_here_.jpg",
        "long/" + "x" * 300 + ".jpg": f"{ROOT}/long/" + "x" * 300 + ".jpg",
        "ünï/名前 with spaces.jpg": f"{ROOT}/ünï/名前 with spaces.jpg",
    }
    bodies = {key: env.put(key, photo_bytes(key, 777)) for key in keys}
    result = env.run()
    assert result.returncode == 0, result.stderr
    files = env.drive_files()
    assert set(files) == set(keys.values())
    for key, path in keys.items():
        (item,) = files[path]
        assert item["md5Checksum"] == hashlib.md5(bodies[key]).hexdigest()
    verify = env.run("verify", "--json")
    assert verify.returncode == 0, verify.stdout
    assert json.loads(verify.stdout)["missing"] == 0


def test_keys_that_collapse_to_one_path_get_numbered_names(env):
    env.put("a/b.jpg", b"one" * 100)
    env.put("a//b.jpg", b"two" * 100)   # sorts first: keeps the name
    assert env.run().returncode == 0
    files = env.drive_files()
    assert [f["description"] for f in files[f"{ROOT}/a/b.jpg"]] == [f"Copied from s3://{env.bucket}/a//b.jpg by cloud_transfer"]
    assert [f["description"] for f in files[f"{ROOT}/a/b (2).jpg"]] == [f"Copied from s3://{env.bucket}/a/b.jpg by cloud_transfer"]
    assert env.run().returncode == 0
    assert len(env.drive_files()) == 2          # re-run: still two, not four
    verify = env.run("verify", "--json")
    report = json.loads(verify.stdout)
    assert (report["missing"], report["duplicated"], report["mismatched"]) == (0, 0, 0)
