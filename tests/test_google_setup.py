"""Issue 19, items 9 and 11: the two Google Cloud setup mistakes that break a first run or a cron
job a week later, each named in one line with its fix. Real script against the Drive emulator."""
from __future__ import annotations

import datetime as dt
import json

from tests.conftest import REFRESH_TOKEN, one_line_error, photo_bytes, write_token


def test_a_project_without_the_drive_api_is_named_with_the_link_to_enable_it(env):
    env.put("a/1.jpg", photo_bytes("1", 2000))
    env.drive.faults.api_disabled_project = "123456789012"
    result = env.run()
    assert result.returncode == 3, result.stderr
    line = one_line_error(result)
    assert "the Google Drive API is not enabled in the Google Cloud project of credentials.json" in line
    assert "https://console.developers.google.com/apis/api/drive.googleapis.com/overview?project=123456789012" in line
    check = env.run("--check")
    assert check.returncode == 3   # one of --check's documented codes, not 1
    assert "FAIL  Google sign-in: the Google Drive API is not enabled" in check.stdout
    assert env.drive.fault_counts["api_disabled"] >= 2
    env.drive.faults.api_disabled_project = None
    assert env.run().returncode == 0


def test_an_expired_refresh_token_names_the_testing_consent_screen_and_check_warns_before_a_week(env):
    env.put("a/1.jpg", photo_bytes("1", 2000))
    token = env.cwd / "token.json"
    write_token(token, "expired-access", expired=True)
    env.drive.revoke_refresh_token(REFRESH_TOKEN)
    result = env.run()
    assert result.returncode == 3
    line = one_line_error(result)
    assert "invalid_grant" in line and "python cloud_transfer.py auth" in line
    assert "Testing" in line and "7 days" in line and "service account" in line

    write_token(token, env.drive.issue_token())   # signed in again, 6.5 days ago (as `auth` records it)
    data = json.loads(token.read_text())
    six_days_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=6.5)
    data["cloud_transfer_signed_in"] = six_days_ago.isoformat()
    token.write_text(json.dumps(data))
    check = env.run("--check")
    assert "ok    Google sign-in:" in check.stdout and "this sign-in is 6 days old" in check.stdout, check.stdout
    assert "consent screen is in Testing" in check.stdout


def test_a_sign_in_seen_to_outlive_a_week_is_not_warned_about(env):
    env.put("a/1.jpg", photo_bytes("1", 2000))
    token = env.cwd / "token.json"
    write_token(token, "expired-access", expired=True)   # a refresh is due, and the grant is 8 days old
    data = json.loads(token.read_text())
    data["cloud_transfer_signed_in"] = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=8)).isoformat()
    token.write_text(json.dumps(data))
    assert env.run().returncode == 0
    saved = json.loads(token.read_text())
    assert saved["cloud_transfer_outlived_a_week"] is True and saved["cloud_transfer_signed_in"] == data[
        "cloud_transfer_signed_in"]
    assert (token.stat().st_mode & 0o777) == 0o600
    check = env.run("--check")
    assert check.returncode == 0 and "days old" not in check.stdout
