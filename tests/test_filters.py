"""Issue 10: --include/--exclude (rclone's order), --min-size/--max-size, --newer-than/--older-than
on the original date. Real script, moto, the Drive emulator."""
from __future__ import annotations

import pytest

import cloud_transfer as ct
from tests import media_samples as media
from tests.conftest import photo_bytes


def keys_in_drive(env) -> set[str]:
    return {path.split("/", 1)[1] for path in env.drive_files()}


@pytest.mark.parametrize("rules, expected", [
    (["--exclude", "2019/raw/**", "--include", "2019/**"], {"2019/a.jpg"}),
    (["--include", "2019/**", "--exclude", "2019/raw/**"], {"2019/a.jpg", "2019/raw/b.dng"}),   # first match wins
    (["--exclude", "tmp/**"], {"2019/a.jpg", "2019/raw/b.dng", "2020/c.JPG"}),
    (["--include", "*.{jpg,JPG}"], {"2019/a.jpg", "2020/c.JPG", "tmp/d.jpg"}),
])
def test_include_and_exclude_rules_apply_in_command_line_order(env, rules, expected):
    for key in ("2019/a.jpg", "2019/raw/b.dng", "2020/c.JPG", "tmp/d.jpg"):
        env.put(key, photo_bytes(key))
    assert env.main(*rules) == 0
    assert keys_in_drive(env) == expected


def test_size_filters_and_changing_filters_never_removes_anything(env):
    env.put("a/small.jpg", photo_bytes("s", 1000))
    env.put("a/mid.jpg", photo_bytes("m", 3000))
    env.put("a/big.jpg", photo_bytes("b", 9000))
    assert env.main("--min-size", "2K", "--max-size", "5K") == 0
    assert keys_in_drive(env) == {"a/mid.jpg"}
    assert env.main("--max-size", "1500B") == 0                 # narrower: adds small, removes nothing
    assert keys_in_drive(env) == {"a/mid.jpg", "a/small.jpg"}
    assert env.main() == 0 and keys_in_drive(env) == {"a/mid.jpg", "a/small.jpg", "a/big.jpg"}


def test_date_filters_use_the_original_date_and_verify_agrees(env):
    env.put("p/2015.jpg", media.jpeg("2015:05:05 10:00:00", "+00:00"))
    env.put("p/2019.jpg", media.jpeg("2019:05:05 10:00:00", "+00:00"))
    env.put("p/2022.jpg", media.jpeg("2022:05:05 10:00:00", "+00:00"))   # S3's own date: today, for all three
    window = ("--newer-than", "2018-01-01", "--older-than", "2021-01-01")
    assert env.main(*window) == 0
    assert keys_in_drive(env) == {"p/2019.jpg"}
    assert env.main("verify", *window) == 0
    status = env.run("status", "--json")
    assert ct.SKIP_DATE_FILTERED in status.stdout
    assert env.main() == 0 and len(keys_in_drive(env)) == 3   # without them, the others follow


@pytest.mark.parametrize("pattern", ["[abc", "{a,b"])
def test_malformed_globs_are_usage_errors(env, pattern):
    result = env.run("--include", pattern)
    assert result.returncode == 2 and "filter" in result.stderr


def test_a_nightly_run_with_a_date_filter_does_not_download_what_it_already_judged(env, moto_url):
    from tests.s3_fault_proxy import S3FaultProxy

    env.put("p/2015.jpg", media.jpeg("2015:05:05 10:00:00", "+00:00"))
    env.put("p/2019.jpg", media.jpeg("2019:05:05 10:00:00", "+00:00"))
    newer = ("--newer-than", "2018-01-01")
    with S3FaultProxy(moto_url) as proxy:
        env.vars["AWS_ENDPOINT_URL"] = proxy.url
        gets: list[str] = []
        proxy.on_object_get = gets.append
        assert env.main(*newer) == 0 and keys_in_drive(env) == {"p/2019.jpg"}
        assert sorted(gets) == ["p/2015.jpg", "p/2019.jpg"]   # read once to learn its date
        gets.clear()
        assert env.main(*newer) == 0
        assert gets == []                                      # judged by the date recorded then
        assert env.main("--newer-than", "2010-01-01") == 0     # a wider window: now it is copied
        assert gets == ["p/2015.jpg"] and keys_in_drive(env) == {"p/2015.jpg", "p/2019.jpg"}


def test_a_recorded_date_is_not_trusted_once_date_from_or_timezone_changed(env, moto_url):
    from tests.s3_fault_proxy import S3FaultProxy

    env.put("p/2015.jpg", media.jpeg("2015:05:05 10:00:00", "+00:00"))   # S3's date: today
    older = ("--older-than", "2018-01-01")
    with S3FaultProxy(moto_url) as proxy:
        env.vars["AWS_ENDPOINT_URL"] = proxy.url
        gets: list[str] = []
        proxy.on_object_get = gets.append
        assert env.main("--date-from", "s3", *older) == 0 and keys_in_drive(env) == set()
        gets.clear()
        assert env.main(*older) == 0                     # auto reads EXIF: 2015, inside the window
        assert gets == ["p/2015.jpg"] and keys_in_drive(env) == {"p/2015.jpg"}
        assert env.main("verify", *older) == 0
