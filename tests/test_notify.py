"""Issue 19: --notify URL tells a monitor each run's start and end, in the healthchecks.io
convention (URL/start, URL with the report, URL/fail with it; each with the run's rid), or as an
Uptime Kuma push (GET with status=up|down). A real HTTP server on loopback."""
from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.parse

import pytest

import cloud_transfer as ct

from tests.conftest import photo_bytes
from tests.drive_emulator import Faults

UUID = "5b1f2c0e-3d4a-4e55-9c1b-0a6f8e2d7c91"


class Monitor:
    """A ping endpoint that records what it is told: (method, path, body)."""

    def __init__(self, status: int = 200):
        self.pings: list[tuple[str, str, bytes]] = []
        self.status = status
        monitor = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                monitor.pings.append((self.command, self.path, body))
                self.send_response(monitor.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/{UUID}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [urllib.parse.urlsplit(path).path for _, path, _ in self.pings]

    def queries(self) -> list[dict[str, str]]:
        return [dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query)) for _, path, _ in self.pings]


@pytest.fixture
def monitor():
    server = Monitor()
    yield server
    server.close()


def test_a_run_tells_the_monitor_its_start_and_its_end_with_the_report(env, monitor):
    for n in range(3):
        env.put(f"a/{n}.jpg", photo_bytes(str(n), 3000))
    result = env.run("--notify", monitor.url)
    assert result.returncode == 0, result.stderr
    assert monitor.paths() == [f"/{UUID}/start", f"/{UUID}"]
    report = json.loads(monitor.pings[1][2])
    assert (report["outcome"], report["transferred"], report["exit_code"]) == ("ok", 3, 0)
    first, last = monitor.queries()
    assert first["rid"] == last["rid"] and len(first["rid"]) == 36   # one run, told apart from others
    env.put("a/3.jpg")
    assert env.run("--notify", monitor.url).returncode == 0
    assert monitor.queries()[2]["rid"] == monitor.queries()[3]["rid"] != first["rid"]


def test_a_run_that_finds_the_lock_held_tells_the_monitor_nothing(env, monitor):
    env.put("a/0.jpg")
    with ct.RunLock(env.cwd / "cloud_transfer_checkpoint.json.lock"):
        busy = env.run("--notify", monitor.url)
    assert busy.returncode == 4, busy.stderr
    assert monitor.pings == []   # the run holding the lock reports for itself; no start left dangling


def test_an_uptime_kuma_push_url_gets_one_get_with_status_up_or_down(env, monitor):
    env.put("a/0.jpg")
    # pasted as Kuma shows it: each key must arrive once (a repeated key reaches Kuma as a list: "down")
    push = monitor.url.replace(f"/{UUID}", "/api/push/Tk3n") + "?status=up&msg=OK&ping="
    assert env.run("--notify", push).returncode == 0
    ((method, path, body),) = monitor.pings
    assert (method, body, monitor.paths()) == ("GET", b"", ["/api/push/Tk3n"])
    assert urllib.parse.parse_qsl(urllib.parse.urlsplit(path).query, keep_blank_values=True) == [
        ("status", "up"), ("msg", "ok: 1 copied")]
    env.drive.faults = Faults(storage_quota_bytes=1000)
    env.put("a/1.jpg", photo_bytes("1", 100_000))
    assert env.run("--notify", push).returncode == 5
    assert monitor.queries()[-1]["status"] == "down" and "storage" in monitor.queries()[-1]["msg"]


def test_a_failed_run_pings_fail_with_its_error_and_a_daily_stop_counts_as_on_track(env, monitor):
    env.put("a/0.jpg", photo_bytes("0", 100_000))
    env.put("a/1.jpg", photo_bytes("1", 100_000))
    env.vars["CLOUD_TRANSFER_NOTIFY"] = monitor.url   # from the environment (or .env), as cron has it
    daily = env.run("--daily-limit", "100000B", "--workers", "1")
    assert daily.returncode == 5, daily.stderr
    assert monitor.paths()[-1] == f"/{UUID}"   # the budget stops it: on track, the next run goes on
    refused = env.run("--daily-limit", "100000B")   # refused before it starts: still on track
    assert refused.returncode == 5 and monitor.paths()[-1] == f"/{UUID}"

    env.drive.faults = Faults(storage_quota_bytes=1000)   # Drive full: the user must act
    full = env.run("--daily-limit", "off")
    assert full.returncode == 5
    assert monitor.paths()[-2:] == [f"/{UUID}/start", f"/{UUID}/fail"]
    assert "storage" in json.loads(monitor.pings[-1][2])["error"]


def test_a_monitor_that_is_down_or_refuses_never_fails_the_run_nor_shows_its_secret(env):
    env.put("a/0.jpg")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = env.run("--notify", f"http://127.0.0.1:{port}/{UUID}")
    assert result.returncode == 0, result.stderr
    assert f"--notify: 127.0.0.1:{port} could not be told the run started" in result.stderr
    assert UUID not in result.stderr + result.stdout
    refusing = Monitor(status=404)
    try:
        env.put("a/1.jpg")
        result = env.run("--notify", refusing.url)
        assert result.returncode == 0
        assert "(HTTP 404)" in result.stderr
        assert len(refusing.pings) == 2   # a 404 is not retried: one ping at the start, one at the end
    finally:
        refusing.close()
    bad = env.run("--notify", "hc-ping.com/abc")
    assert bad.returncode == 2 and "--notify must be an http(s) URL" in bad.stderr
