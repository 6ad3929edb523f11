"""Issue 10: --report PATH, a JSON run report whose top-level counts are a stable contract and
agree with what verify finds. Real script, moto, the Drive emulator."""
from __future__ import annotations

import json

from tests.conftest import photo_bytes
from tests.drive_emulator import Faults

CONTRACT = ("listed", "eligible", "transferred", "already_done", "found_in_drive", "failed", "skipped",
            "bytes_transferred")


def test_the_report_counts_what_verify_finds(env):
    for n in range(5):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), 3000))
    env.put("a/notes.txt", b"not a photo")
    env.drive.faults = Faults(drop_rate=0.1)   # retries happen; the counts must not move
    result = env.run("--report", "run.json", "--workers", "2")
    assert result.returncode == 0, result.stderr
    report = json.loads((env.cwd / "run.json").read_text())
    assert all(isinstance(report[key], int) for key in CONTRACT)
    assert (report["listed"], report["eligible"], report["transferred"], report["skipped"]) == (6, 5, 5, 1)
    assert report["bytes_transferred"] == 5 * 3000 and report["outcome"] == "ok" and report["exit_code"] == 0
    assert report["skipped_by_reason"] == {"not a photo or video": 1} and isinstance(report["rate_limit_waits"], int)
    assert report["date_sources"]["s3"] == 5 and report["run_id"] and report["files_per_s"] > 0
    env.drive.faults = Faults()
    verify = json.loads(env.run("verify", "--json").stdout)
    assert verify["checked"] == report["eligible"] == report["transferred"] + report["already_done"] + report["found_in_drive"]
    assert (verify["missing"], verify["duplicated"], verify["mismatched"]) == (0, 0, 0)
    env.put("a/5.jpg", photo_bytes("5", 3000))
    assert env.run("--report", "run.json").returncode == 0
    again = json.loads((env.cwd / "run.json").read_text())
    assert (again["transferred"], again["already_done"], again["eligible"]) == (1, 5, 6)
    assert json.loads(env.run("verify", "--json").stdout)["checked"] == again["eligible"]


def test_a_run_refused_before_it_starts_still_writes_its_report(env):
    env.put("a/0.jpg", photo_bytes("0", 100_000))
    assert env.run("--daily-limit", "100000B").returncode == 0
    result = env.run("--daily-limit", "100000B", "--report", "run.json")
    assert result.returncode == 5
    report = json.loads((env.cwd / "run.json").read_text())
    assert report["exit_code"] == 5 and report["outcome"] == "quota" and "--daily-limit 100000B is used: this tool sent" in report["error"]
    assert all(report[key] == 0 for key in CONTRACT)


def test_the_report_lists_every_object_the_run_decided_about_with_its_drive_id_and_date_source(env):
    for n in range(3):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), 3000))
    env.put("a/notes.txt", b"not a photo")
    env.put("a/cold.jpg", photo_bytes("c", 3000), StorageClass="GLACIER")
    assert env.run("--report", "run.json").returncode == 0
    report = json.loads((env.cwd / "run.json").read_text())
    by_key = {item["key"]: item for item in report["objects"]}
    assert set(by_key) == {"a/0.jpg", "a/1.jpg", "a/2.jpg", "a/notes.txt", "a/cold.jpg"}
    for n in range(3):
        item = by_key[f"a/{n}.jpg"]
        assert item["outcome"] == "copied (new)" and item["date_source"] == "s3" and item["size"] == 3000
        assert item["drive_path"] == f"a/{n}.jpg" and item["drive_id"] in env.drive.files
    assert by_key["a/notes.txt"] == {"key": "a/notes.txt", "outcome": "skipped", "reason": "not a photo or video"}
    assert by_key["a/cold.jpg"]["outcome"] == "waiting for a restore"

    assert env.run("--report", "run.json").returncode == 0   # nothing to do: nothing to list but the waits
    quiet = json.loads((env.cwd / "run.json").read_text())
    assert {item["key"] for item in quiet["objects"]} == {"a/notes.txt", "a/cold.jpg"}

    env.checkpoint.unlink()   # another machine: the copies are found in Drive
    assert env.run("--report", "run.json").returncode == 0
    found = {item["key"]: item for item in json.loads((env.cwd / "run.json").read_text())["objects"]}
    assert found["a/1.jpg"]["outcome"] == "found in Drive" and found["a/1.jpg"]["drive_id"] == by_key["a/1.jpg"]["drive_id"]
