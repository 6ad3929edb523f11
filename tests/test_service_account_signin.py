"""Issue 10: service accounts for headless servers. The real script signs in with a key file
(google-auth's JWT grant against the emulator's /token), acts for a Workspace user by domain-wide
delegation, or writes into a shared drive; and says what is wrong, in one line, when it cannot."""
from __future__ import annotations

from tests.conftest import one_line_error, photo_bytes
from tests.service_accounts import DEFAULT_SERVICE_ACCOUNT, make_service_account

USER = "alice@example.com"


def without_token(env) -> None:
    (env.cwd / "token.json").unlink()   # a server has no OAuth sign-in: the key is all it has


def test_impersonation_copies_into_the_users_drive_with_the_users_token(env, tmp_path):
    key = make_service_account(tmp_path, env.drive, delegation=True)
    without_token(env)
    for n in range(3):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), 3000))
    check = env.run("--check", "--service-account", str(key), "--impersonate", USER)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"works: acting as {USER}" in check.stdout
    result = env.run("--service-account", str(key), "--impersonate", USER)
    assert result.returncode == 0, result.stderr
    with env.drive.lock:
        owners = [f["_owner"] for f in env.drive.files.values() if f["name"].endswith(".jpg")]
    assert owners == [USER] * 3
    assert set(env.drive.requests_by_user) == {USER}   # every request spoke for her, none for the robot
    assert not (env.cwd / "token.json").exists()       # nothing to store: the key is the sign-in
    assert env.run("--service-account", str(key), "--impersonate", USER, "verify").returncode == 0


def test_the_environment_variable_names_the_key_and_a_user_file_in_it_is_not_taken(env, tmp_path):
    key = make_service_account(tmp_path, env.drive, delegation=True)
    env.put("a/1.jpg")
    variables = {"GOOGLE_APPLICATION_CREDENTIALS": str(key), "DRIVE_IMPERSONATE": USER}
    assert env.run(env=variables).returncode == 0   # asked to impersonate: the variable's key
    assert set(env.drive.requests_by_user) == {USER}
    env.put("a/2.jpg")
    env.drive.requests.clear()
    set_for_other_tools = {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    assert env.run("--checkpoint", "mine.json", env=set_for_other_tools).returncode == 0
    assert set(env.drive.requests_by_user) == {"emulated.user@example.com"}   # token.json keeps signing in
    user_file = tmp_path / "adc.json"   # gcloud's application-default credentials: a user's, not ours
    user_file.write_text('{"type": "authorized_user", "client_id": "x", "client_secret": "y", "refresh_token": "z"}')
    result = env.run(env={"GOOGLE_APPLICATION_CREDENTIALS": str(user_file)})
    assert result.returncode == 0, result.stderr   # signed in with token.json, as without the variable


def test_delegation_not_granted_says_what_the_admin_must_allow_exit_3(env, tmp_path):
    key = make_service_account(tmp_path, env.drive, delegation=False)
    env.put("a/1.jpg")
    result = env.run("--service-account", str(key), "--impersonate", USER)
    assert result.returncode == 3
    line = one_line_error(result)
    assert f"service account {DEFAULT_SERVICE_ACCOUNT} may not act for {USER}" in line
    assert "Domain-wide delegation" in line and "https://www.googleapis.com/auth/drive.file" in line
    assert env.drive.list_files() == []


def test_without_impersonation_a_service_account_needs_a_shared_drive(env, tmp_path):
    key = make_service_account(tmp_path, env.drive)
    without_token(env)
    env.put("a/1.jpg")
    refused = env.run("--service-account", str(key))
    assert refused.returncode == 2
    assert "has no Drive storage of its own" in one_line_error(refused) and env.drive.requests == []
    shared = env.drive.add_shared_drive("Team photos")
    result = env.run("--service-account", str(key), "--folder-id", shared, "--full-scope")
    assert result.returncode == 0, result.stderr
    my_drive_folder = env.drive.add_folder("shared with the robot")["id"]
    in_my_drive = env.run("--service-account", str(key), "--folder-id", my_drive_folder, "--full-scope",
                          "--checkpoint", "other.json")
    assert in_my_drive.returncode == 2 and "is in a My Drive" in one_line_error(in_my_drive)
    copied = [f for f in env.drive.list_files() if f["name"] == "1.jpg"]
    assert len(copied) == 1 and copied[0]["driveId"] == shared
    assert set(env.drive.requests_by_user) == {DEFAULT_SERVICE_ACCOUNT}


def test_a_key_google_does_not_know_and_a_file_that_is_no_key_are_one_line_errors(env, tmp_path):
    make_service_account(tmp_path, env.drive)   # the account exists, with another key
    deleted_key = make_service_account(tmp_path, env.drive, key_index=1, register=False)
    env.put("a/1.jpg")
    result = env.run("--service-account", str(deleted_key), "--impersonate", USER)
    assert result.returncode == 3
    line = one_line_error(result)
    assert "was refused" in line and "Invalid JWT Signature" in line and "may not act" not in line
    not_a_key = tmp_path / "credentials.json"
    not_a_key.write_text('{"installed": {"client_id": "x"}}')
    wrong = env.run("--service-account", str(not_a_key), "--impersonate", USER)
    assert wrong.returncode == 2 and "is not a service-account key" in one_line_error(wrong)
    auth = env.run("auth", "--service-account", str(make_service_account(tmp_path, env.drive, delegation=True)),
                   "--impersonate", USER)
    assert auth.returncode == 0 and f"works, acting for {USER}" in auth.stdout
