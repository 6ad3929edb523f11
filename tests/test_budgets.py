"""Issue 10: run budgets (--max-transfer, --max-duration) end with exit 6 and the next run goes on;
the rolling --daily-limit ends with exit 5 and the time to resume. Real script, moto, the emulator."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import cloud_transfer as ct
from tests.conftest import one_line_error, photo_bytes
from tests.drive_emulator import Faults

BINDING = {"bucket": "b", "prefix": "", "folder": "name:X"}


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
    assert "--daily-limit 200000B is used" in message and "195.3 KiB in the last 24 hours" in message
    assert "can upload from" in message
    with env.drive.lock:
        assert len(env.drive.requests) == requests_before   # not one Drive request
    assert env.run("--daily-limit", "off").returncode == 0 and copied(env) == 6


def test_the_daily_window_counts_bytes_from_the_minute_they_were_sent_and_ages_them_out_so():
    day = 24 * 3600
    window = ct.DailyWindow(500, [(0, 300), (600 // 60, 100)], clock=lambda: 0.0)   # at 00:00 and 00:10
    assert window.spent(60.0) == 400 and window.first_sent(60.0) == 0.0
    assert window.fits_at(100, 60.0) == 60.0                        # 400 + 100 fit under 500
    assert window.fits_at(101, 60.0) == 60 + day                    # once the 00:00 minute has aged out
    assert window.fits_at(450, 60.0) == 660 + day                   # both minutes must go
    assert window.fits_at(501, 60.0) == float("inf")                # never: larger than the limit
    window.add(50, now=7200.0)
    assert window.record() == [[120, 50]] and window.spent(7200.0) == 450
    assert window.unsaved() == [[120, 50]] and window.unsaved() == []   # journaled once
    window.add(25, now=7210.0)
    assert window.unsaved() == [[120, 25]] and window.record() == [[120, 75]]
    assert window.spent(61 + day) == 175 and window.spent(661 + day) == 75 and window.spent(7261 + day) == 0
    assert window.first_sent() is None and window.fits_at(500) == 0.0   # its clock: still 00:00, all aged out


def test_a_window_built_from_a_month_of_runs_keeps_only_the_last_day():
    day = 24 * 3600
    month = [(minute, 1000) for minute in range(0, 30 * 1440, 1)]   # a month of minutes, 1 kB each
    window = ct.DailyWindow(10 ** 9, month, clock=lambda: 30 * day)
    assert len(window._window) == 1440 and window.spent() == 1440 * 1000
    window.add(7, now=30 * day + 60)
    assert window.spent(30 * day + 60) == 1440 * 1000 + 7 - 1000   # the oldest minute aged out meanwhile


def test_a_killed_runs_bytes_are_in_its_record_from_the_journal(tmp_path):
    path = tmp_path / "cp.json"
    checkpoint = ct.Checkpoint.load(path, BINDING)
    checkpoint.save_run({"id": "r1", "started": "2026-12-01T01:00:00Z", "outcome": "running"})
    checkpoint.save_sent("r1", [[100, 5]])
    checkpoint.save_sent("r1", [[100, 2], [101, 9]])
    checkpoint.flush()   # what it has on disk when kill -9 comes
    runs = ct.Checkpoint.load(path, BINDING).runs
    assert sorted(ct.sent_by_minute(runs)) == [(100, 2), (100, 5), (101, 9)]


def test_a_refused_probe_is_the_only_upload_a_waiting_worker_does_not_follow_it():
    budget = ct.RunBudget(daily=ct.DailyWindow(10 ** 9, clock=lambda: 0.0))
    budget.probing = lambda: True   # Google refused in the last 24 hours; its answer is awaited
    assert budget.admit(10)
    with pytest.raises(ct.GoogleCapError):
        with budget.spending(10, ct.Staging(Path("unused"), None)):   # refused: nothing uploaded
            raise ct.GoogleCapError("Google refused new uploads again")
    assert not budget.admit(10) and budget.reached == "daily"
    assert budget.daily.spent() == 0


def test_runs_recorded_before_minutes_were_kept_count_at_their_end():
    ended = dt.datetime(2026, 12, 1, 7, 0, tzinfo=dt.timezone.utc)
    runs = [{"ended": ended.isoformat(), "counts": {"transferred_bytes": 900}},
            {"sent": [[1, 10], [2, 20]], "ended": ended.isoformat(), "counts": {"transferred_bytes": 30}}]
    assert list(ct.sent_by_minute(runs)) == [(int(ended.timestamp() // 60), 900), (1, 10), (2, 20)]


class FakeStaging:
    uploaded = True


def test_run_budget_reserves_sizes_and_gives_a_grace_period_after_the_duration():
    clock = [0.0]
    budget = ct.RunBudget(max_bytes=250, max_seconds=600, clock=lambda: clock[0])
    assert budget.admit(100) and budget.admit(100) and not budget.admit(100) and budget.reached == "transfer"
    big = ct.RunBudget(max_bytes=50)
    assert big.admit(100) and not big.admit(1)   # the first object may be larger than a run budget
    full = ct.DailyWindow(500, [(0, 450)], clock=lambda: 60.0)
    daily = ct.RunBudget(daily=full)
    assert not daily.admit(100) and daily.reached == "daily"   # never over what the day has left
    assert daily.daily_frees_at == 60 + 24 * 3600
    quiet_day = ct.RunBudget(daily=ct.DailyWindow(500, clock=lambda: 0.0))
    assert quiet_day.admit(900) and not quiet_day.admit(1)      # larger than a whole day: alone
    clock[0] = 600
    timed = ct.RunBudget(max_seconds=600, clock=lambda: clock[0] - 600)
    assert timed.grace_s == 60 and not timed.overdue()
    clock[0] = 600 + 600 + 61
    assert timed.overdue() and not timed.admit(1) and timed.reached == "duration"


def test_a_run_waits_minutes_for_yesterdays_bytes_to_age_out_but_not_hours():
    clock = [100.0]
    waits = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        clock[0] += seconds
        return False

    window = ct.DailyWindow(500, [(0, 200), (10, 300)], clock=lambda: clock[0])   # 00:00 and 00:10
    budget = ct.RunBudget(daily=window, clock=lambda: clock[0], wait=wait)
    clock[0] = 24 * 3600 - 30.0                       # a day later, 30 s before the 00:00 minute ages out
    assert budget.admit(150)                          # waited for it
    assert waits == [90.0] and clock[0] == 24 * 3600 + 60
    assert budget.admit(200)                          # with 150 in flight: waits for the 00:10 minute too
    assert waits == [90.0, 600.0]
    assert not budget.admit(200) and budget.reached == "daily"   # 350 in flight + 200: not today
    hours = ct.RunBudget(daily=ct.DailyWindow(500, [(600, 500)], clock=lambda: 700 * 60.0),
                         clock=lambda: clock[0], wait=wait)
    waits.clear()
    assert not hours.admit(1) and waits == [] and hours.reached == "daily"   # 23 hours away: stop


GB = 10 ** 9


def simulated_nights(link_bytes_per_s: float, nights: int = 7, limit: int = 740 * GB,
                     others: dict[int, tuple[float, int]] | None = None) -> tuple[list[int], int]:
    """Nightly cron runs from 01:00 with --max-duration 6h on a link of the given speed, each
    building its budget from the run records the ones before it left, on an injected clock.
    Returns the bytes each night sent and the most bytes any 24 hours held."""
    size = 2 * GB                                      # a library of 2 GB videos, never running out
    clock = [0.0]
    runs: list[dict] = []
    per_night = []

    def wait(seconds: float) -> bool:
        clock[0] += seconds
        return False

    for night in range(nights):
        clock[0] = night * 24 * 3600 + 3600.0          # 01:00
        window = ct.DailyWindow(limit, ct.sent_by_minute(runs), clock=lambda: clock[0])
        budget = ct.RunBudget(max_seconds=6 * 3600, daily=window, clock=lambda: clock[0], wait=wait)
        while budget.admit(size):
            with budget.spending(size, FakeStaging()):
                clock[0] += size / link_bytes_per_s
        runs.append({"sent": window.record(), "ended": dt.datetime.fromtimestamp(clock[0], dt.timezone.utc)
                     .isoformat()})
        per_night.append(sum(n for _, n in window.record()))
    minutes = ct.Counter()
    for run in runs:
        for minute, n in run["sent"]:
            minutes[minute] += n
    most = max(sum(n for m, n in minutes.items() if end - 1440 < m <= end) for end in minutes)
    return per_night, most


@pytest.mark.parametrize("mbit", [150, 1000])
def test_a_simulated_week_of_nightly_six_hour_runs_uses_the_daily_limit_and_never_passes_it(mbit):
    link = mbit * 10 ** 6 / 8
    limit = 740 * GB
    per_night, most = simulated_nights(link, limit=limit)
    expected = min(link * 6 * 3600, limit)
    print(f"{mbit} Mbit/s: " + ", ".join(f"{n / GB:.0f} GB" for n in per_night)
          + f" per night; most in any 24 h {most / GB:.0f} GB of {limit / GB:.0f} GB")
    assert all(n >= 0.95 * expected for n in per_night), per_night
    assert most <= limit


def test_a_cap_google_reached_through_other_uploads_costs_no_night_of_this_tool():
    refused = dt.datetime(2026, 12, 1, 14, 2, tzinfo=dt.timezone.utc)
    runs = [{"started": "2026-12-01T00:10:00Z", "ended": "2026-12-01T14:02:30Z", "sent": [
        [int(refused.timestamp() // 60) - 800, 22 * 10 ** 6]], "google_refused": refused.isoformat()}]
    config = ct.load_config(["--bucket", "b", "--daily-limit", "740GB"], {})
    next_night = refused.timestamp() + 11 * 3600                     # 01:02
    assert ct.last_google_refusal(runs, next_night) == refused.timestamp()   # so the run probes first
    assert ct.last_google_refusal(runs, refused.timestamp() + 24 * 3600) is None
    window = ct.DailyWindow(config.daily_limit, ct.sent_by_minute(runs), clock=lambda: next_night)
    assert window.fits_at(700 * GB, next_night) == next_night        # the tool's own 22 MB leave room
    at_refusal = ct.DailyWindow(config.daily_limit, ct.sent_by_minute(runs), clock=refused.timestamp)
    message = ct.google_refused_message(config, at_refusal, refused.timestamp())
    assert "22.0 MB" in message and "every upload to this account" in message and "GiB" not in message


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


@pytest.mark.parametrize("days, text", [(0.01, "under an hour"), (0.25, "about 6 hours"), (2.94, "about 2.9 days")])
def test_the_time_left_reads_as_a_person_would_say_it(days, text):
    assert ct.format_days(days) == text


def test_a_live_run_journals_its_bytes_as_it_goes_so_a_kill_cannot_hide_them(env, monkeypatch):
    import threading

    body = env.put("a/0.jpg", photo_bytes("0", 50_000))
    monkeypatch.setattr(ct, "SENT_SAVE_INTERVAL_S", 0.0)
    journaled = threading.Event()
    saved: list[list[list[int]]] = []
    real_add, real_save = ct.DailyWindow.add, ct.Checkpoint.save_sent

    def add_then_wait_for_the_journal(self, n, now=None):
        real_add(self, n, now)
        assert journaled.wait(30), "the run's tick never journaled the bytes sent"

    def save_sent(self, run_id, minutes):
        saved.append(minutes)
        real_save(self, run_id, minutes)
        journaled.set()

    monkeypatch.setattr(ct.DailyWindow, "add", add_then_wait_for_the_journal)
    monkeypatch.setattr(ct.Checkpoint, "save_sent", save_sent)
    assert env.main("--daily-limit", "1GB") == 0
    assert [n for minutes in saved for _, n in minutes] == [len(body)]   # before the run ended, once
