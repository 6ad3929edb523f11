"""Issue 17: the Drive folder is shared (other runs, other machines, the user's own hands, AWS's and
Google's limits). Each test runs the real script against moto and the Drive emulator."""
from __future__ import annotations

import hashlib
import sys

import cloud_transfer as ct
from tests.conftest import assert_drive_matches, one_line_error, photo_bytes

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
