"""Issue 10: run budgets (--max-transfer, --max-duration) end with exit 6 and the next run goes on;
the rolling --daily-limit ends with exit 5 and the time to resume. Real script, moto, the emulator."""
from __future__ import annotations

import datetime as dt

import pytest

import cloud_transfer as ct
from tests.conftest import one_line_error, photo_bytes
from tests.drive_emulator import Faults


def copied(env) -> int:
    return sum(len(files) for files in env.drive_files().values())


def test_max_transfer_stops_new_uploads_with_exit_6_and_the_next_runs_finish(env):
    for n in range(6):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), 100_000))
    result = env.run("--max-transfer", "250K", "--workers", "1")
    assert result.returncode == 6, result.stderr
    assert "stopped at --max-transfer" in result.stderr
    assert copied(env) == 2   # 2 x 100,000 bytes fit in 250 KiB; a third would not
    assert env.run("--max-transfer", "250K", "--workers", "4").returncode == 6 and copied(env) == 4
    assert env.run().returncode == 0 and copied(env) == 6
    assert all(len(files) == 1 for files in env.drive_files().values())


def test_max_duration_starts_nothing_new_after_it_and_the_next_run_finishes(env):
    for n in range(10):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), 2000))
    env.drive.faults = Faults(latency_s=0.3)   # ten photos take several seconds
    env.vars["CLOUD_TRANSFER_LEASE_SETTLE_S"] = "1.5"   # longer than a read and a write at that latency
    result = env.run("--max-duration", "1s", "--workers", "1")
    assert result.returncode == 6, result.stderr
    assert copied(env) < 10
    env.drive.faults = Faults()
    assert env.run().returncode == 0 and copied(env) == 10


def test_daily_limit_stops_at_the_budget_then_refuses_at_once_naming_the_time(env):
    for n in range(6):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), 100_000))
    first = env.run("--daily-limit", "200000B", "--workers", "1")
    assert first.returncode == 5 and copied(env) == 2, first.stderr   # 2 x 100,000 bytes: all it allows
    assert "can upload from" in first.stderr
    with env.drive.lock:
        requests_before = len(env.drive.requests)
    second = env.run("--daily-limit", "200000B")
    assert second.returncode == 5
    message = one_line_error(second)
    assert "upload budget is spent" in message and "can upload from" in message
    with env.drive.lock:
        assert len(env.drive.requests) == requests_before   # not one Drive request
    assert env.run("--daily-limit", "off").returncode == 0 and copied(env) == 6


def test_daily_usage_rolls_over_24_hours_and_counts_a_google_cap_as_the_whole_limit():
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.timezone.utc)

    def run(hours_ago: float, sent: int = 0, cap: bool = False) -> dict:
        ended = (now - dt.timedelta(hours=hours_ago)).isoformat().replace("+00:00", "Z")
        return {"ended": ended, "counts": {"transferred_bytes": sent}, **({"daily_cap": True} if cap else {})}

    assert ct.daily_usage([run(30, 900), run(2, 100)], 500, now) == (100, None)
    spent, resume = ct.daily_usage([run(20, 300), run(2, 300)], 500, now)
    assert spent == 600 and resume == now + dt.timedelta(hours=4)     # when the 20-hour-old run ages out
    spent, resume = ct.daily_usage([run(1, 10, cap=True)], 500, now)
    assert spent == 500 and resume == now + dt.timedelta(hours=23)


def test_run_budget_reserves_sizes_and_gives_a_grace_period_after_the_duration():
    clock = [0.0]
    budget = ct.RunBudget(max_bytes=250, max_seconds=600, clock=lambda: clock[0])
    assert budget.admit(100) and budget.admit(100) and not budget.admit(100) and budget.reached == "transfer"
    big = ct.RunBudget(max_bytes=50)
    assert big.admit(100) and not big.admit(1)   # the first object may be larger than a run budget
    daily = ct.RunBudget(daily_bytes_left=50, daily_limit=500)
    assert not daily.admit(100) and daily.reached == "daily"   # never over what the day has left
    quiet_day = ct.RunBudget(daily_bytes_left=500, daily_limit=500)
    assert quiet_day.admit(900) and not quiet_day.admit(1)      # larger than a whole day: alone
    clock[0] = 600
    timed = ct.RunBudget(max_seconds=600, clock=lambda: clock[0] - 600)
    assert timed.grace_s == 60 and not timed.overdue()
    clock[0] = 600 + 600 + 61
    assert timed.overdue() and not timed.admit(1) and timed.reached == "duration"


@pytest.mark.parametrize("text, expected", [("700G", 700 * 1024 ** 3), ("1.5T", int(1.5 * 1024 ** 4)),
                                            ("500MB", 500_000_000), ("250k", 256_000), ("42", 42)])
def test_sizes(text, expected):
    assert ct.parse_size(text, "--max-transfer") == expected


@pytest.mark.parametrize("text", ["", "G", "-1G", "12 parsecs", "0"])
def test_bad_sizes_are_usage_errors(text):
    with pytest.raises(ct.UsageError, match="--max-transfer must be a size"):
        ct.parse_size(text, "--max-transfer")


@pytest.mark.parametrize("text, seconds", [("6h", 21600), ("1h30m", 5400), ("45s", 45), ("2d", 172800)])
def test_durations(text, seconds):
    assert ct.parse_duration(text, "--max-duration") == seconds


@pytest.mark.parametrize("text", ["6", "h", "1x", "0h"])
def test_bad_durations_are_usage_errors(text):
    with pytest.raises(ct.UsageError, match="--max-duration must be"):
        ct.parse_duration(text, "--max-duration")


def test_status_tells_what_is_left_the_rate_and_the_days_left_even_while_a_run_holds_the_lock(env):
    for n in range(4):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), 100_000))
    assert env.run("--max-transfer", "150K", "--workers", "1").returncode == 6   # one photo of four
    lock = env.checkpoint.with_name(env.checkpoint.name + ".lock")
    import fcntl

    with open(lock, "a+") as held:   # as a running transfer holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        status = env.run("status", "--daily-limit", "100K")
        report = env.run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert "left when the last run listed S3: 293.0 KiB" in status.stdout
    assert "days at the daily budget" in status.stdout
    data = __import__("json").loads(report.stdout)
    assert data["bytes_left"] == 300_000 and data["rate_bytes_per_s"] > 0


def test_too_little_drive_space_stops_before_anything_is_uploaded_naming_both_sizes(env):
    for n in range(3):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), 5000))
    env.drive.faults = Faults(storage_quota_bytes=12_000)
    result = env.run()
    assert result.returncode == 5
    message = one_line_error(result)
    assert "11.7 KiB free" in message and "needs 14.6 KiB" in message and "--ignore-quota" in message
    assert env.drive.list_files() == []   # not even the root folder
    assert env.run("--ignore-quota").returncode == 5 and copied(env) == 2   # what fits; then Drive says full
    env.drive.faults = Faults(storage_quota_bytes=100_000)
    assert env.run().returncode == 0 and copied(env) == 3   # room now: the check uses the last listing


def test_bwlimit_holds_the_upload_rate_of_all_workers_together_within_ten_percent(env):
    sizes = [1024 * 1024] * 5 + [3000] * 20   # resumable sessions and single requests, 4 workers
    for n, size in enumerate(sizes):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), size))
    report = env.cwd / "report.json"
    assert env.main("--bwlimit", "2M", "--workers", "4", "--chunk-size", "0.25", "--report", str(report)) == 0
    with env.drive.lock:   # the rate Drive saw: upload bytes from the first upload request to the last byte
        uploads = [r for r in env.drive.requests if r["path"].startswith("/upload/") and r.get("body_bytes")]
    sent = sum(r["body_bytes"] for r in uploads)
    rate = sent / (max(r["body_at"] for r in uploads) - min(r["at"] for r in uploads))
    assert sent >= sum(sizes)
    print(f"Drive saw {rate / 1024 ** 2:.3f} MiB/s")
    assert 0.9 * 2 * 1024 ** 2 <= rate <= 1.1 * 2 * 1024 ** 2, f"{rate / 1024 ** 2:.3f} MiB/s"
    data = __import__("json").loads(report.read_text())
    assert data["bwlimit"] == "2.0 MiB/s" and data["bwlimit_waited_s"] > 1
    assert copied(env) == len(sizes)


def test_bwlimit_timetable_changes_the_rate_at_each_time_and_wraps_past_midnight():
    moment = [dt.datetime(2026, 12, 1, 7, 59)]
    table = ct.parse_bwlimit("08:00,1M 19:00,4M 23:00,off")
    assert table == ((480, 1024 ** 2), (1140, 4 * 1024 ** 2), (1380, None))
    limit = ct.BandwidthLimit(table, __import__("threading").Event(), local_now=lambda: moment[0])
    assert limit.rate() is None                 # before 08:00: yesterday's 23:00 entry (off)
    moment[0] = moment[0].replace(hour=8, minute=0)
    assert limit.rate() == 1024 ** 2
    moment[0] = moment[0].replace(hour=22, minute=59)
    assert limit.rate() == 4 * 1024 ** 2
    assert ct.parse_bwlimit("off") == () and ct.parse_bwlimit("512k") == ((0, 512 * 1024),)
    assert ct.parse_bwlimit("512") == ((0, 512 * 1024),)   # a bare number is KiB/s, as in rclone
    assert ct.format_bwlimit(table) == "08:00,1.0 MiB/s 19:00,4.0 MiB/s 23:00,off"


def test_bwlimit_waits_are_shared_and_credit_at_most_a_second():
    clock = [100.0]
    waits = []

    class Stop:
        def wait(self, seconds):
            waits.append(round(seconds, 3))
            return False

    limit = ct.BandwidthLimit(((0, 1000),), Stop(), clock=lambda: clock[0])
    limit.take(500)
    limit.take(500)                 # a second worker queues behind the first
    assert waits == [0.5, 1.0]
    clock[0] += 10                  # idle: at most one second is credited
    limit.take(1500)
    assert waits[-1] == 0.5


@pytest.mark.parametrize("text", ["fast", "8:00", "25:00,1M", "08:00,1M 08:00,2M", "08:00,1M x"])
def test_bad_bwlimits_are_usage_errors(text):
    with pytest.raises(ct.UsageError, match="--bwlimit must be a rate"):
        ct.parse_bwlimit(text)


@pytest.mark.parametrize("order, expected", [("largest", ["c", "b", "a"]), ("smallest", ["a", "b", "c"]),
                                             ("key", ["a", "b", "c"])])
def test_order_sends_the_chosen_objects_first(env, order, expected):
    for name, size in {"a": 1000, "c": 3000, "b": 2000}.items():
        env.put(f"{name}.jpg", photo_bytes(name, size))
    assert env.run("--order", order, "--workers", "1").returncode == 0
    with env.drive.lock:   # the emulator keeps files in the order they were created
        created = [f["name"] for f in env.drive.files.values() if f["name"].endswith(".jpg")]
    assert created == [f"{name}.jpg" for name in expected]


def test_order_by_date_goes_by_last_modified_then_key():
    day = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    items = [ct.WorkItem(ct.SourceObject(key, 1, "e", day + dt.timedelta(days=offset)))
             for key, offset in [("a", 2), ("b", 0), ("c", 2), ("d", 1)]]
    assert [i.obj.key for i in sorted(items, key=ct.ORDER_KEYS["oldest"])] == ["b", "d", "a", "c"]
    assert [i.obj.key for i in sorted(items, key=ct.ORDER_KEYS["newest"])] == ["a", "c", "d", "b"]


def test_a_stop_during_a_bwlimit_wait_is_a_stop_not_a_failed_file():
    api = ct.DriveApi(lambda: None)

    def paced_request(service):
        raise ct.InterruptedRun("interrupted")   # what BandwidthLimit.take raises when stopped

    with pytest.raises(ct.InterruptedRun):
        api.call(paced_request, upload=True, write=True)
