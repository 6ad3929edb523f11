"""Issue 9: --layout mirror|flat|date[:pattern], deterministic names for clashes, and the layout
bound to the checkpoint. Real script, moto, the Drive emulator."""
from __future__ import annotations

import datetime as dt
import json

from tests import media_samples as media
from tests.conftest import one_line_error
from tests.drive_emulator import Faults

ROOT = "Amazon Photos Transfer"


def copied(env, root: str = ROOT) -> dict[str, str]:
    """Drive path below the root → the S3 key it was copied from (from the file's description)."""
    found = {}
    for path, files in env.drive_files().items():
        if path.startswith(root + "/"):
            assert len(files) == 1, f"two files named {path}"
            key = files[0]["description"].split(f"s3://{env.bucket}/", 1)[1].rsplit(" by cloud_transfer", 1)[0]
            found[path[len(root) + 1:]] = key
    return found


def test_date_layouts_file_photos_by_their_original_date(env):
    env.put("trip/a.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00"))
    env.put("trip/b.jpg", media.jpeg("2020:01:01 00:30:00", "+01:00"))   # 2019-12-31 in UTC: its own date wins
    env.put("clips/c.mp4", media.mp4(dt.datetime(2021, 3, 4, 5, 6, 7, tzinfo=dt.timezone.utc)))
    assert env.main("--layout", "date", "--timezone", "UTC") == 0
    assert copied(env) == {"2019/07/a.jpg": "trip/a.jpg", "2020/01/b.jpg": "trip/b.jpg", "2021/03/c.mp4": "clips/c.mp4"}
    result = env.run("--layout", "date:YYYY/MM/DD", "--timezone", "UTC", "--folder", "Days", "--checkpoint", "days.json")
    assert result.returncode == 0, result.stderr
    assert copied(env, "Days") == {"2019/07/05/a.jpg": "trip/a.jpg", "2020/01/01/b.jpg": "trip/b.jpg",
                                   "2021/03/04/c.mp4": "clips/c.mp4"}


def test_a_large_video_is_filed_by_its_header_date_before_its_upload_starts(env):
    taken = dt.datetime(2018, 11, 30, 23, 0, 0, tzinfo=dt.timezone.utc)
    env.put("v/big.mov", media.mov(taken, moov_last=True, mdat_bytes=3 * 1024 * 1024))
    assert env.main("--layout", "date:YYYY", "--chunk-size", "0.25", "--timezone", "Asia/Tokyo") == 0
    assert copied(env) == {"2018/big.mov": "v/big.mov"}   # 2018-12-01 in Tokyo, but YYYY only


def test_flat_layout_numbers_clashing_names_in_key_order_whatever_the_workers(env):
    keys = ["c/IMG_1.jpg", "a/IMG_1.jpg", "b/sub/IMG_1.jpg", "b/IMG_2.jpg", "z/noext", "y/noext"]
    for key in keys:
        env.put(key, media.jpeg(None), ContentType="image/jpeg")
    expected = {"IMG_1.jpg": "a/IMG_1.jpg", "IMG_1 (2).jpg": "b/sub/IMG_1.jpg", "IMG_1 (3).jpg": "c/IMG_1.jpg",
                "IMG_2.jpg": "b/IMG_2.jpg", "noext": "y/noext", "noext (2)": "z/noext"}
    assert env.main("--layout", "flat", "--workers", "1") == 0
    assert copied(env) == expected
    # 8 workers through dropped connections, into another root: the same names
    env.drive.faults = Faults(drop_rate=0.15, drop_response_rate=0.1)
    result = env.run("--layout", "flat", "--workers", "8", "--folder", "Again", "--checkpoint", "again.json")
    assert result.returncode == 0, result.stderr
    env.drive.faults = Faults()
    assert copied(env, "Again") == expected
    assert env.main("--layout", "flat") == 0 and copied(env) == expected   # a re-run adds nothing


def test_names_given_are_kept_when_a_key_that_sorts_first_arrives_later(env):
    env.put("b/IMG_1.jpg", media.jpeg(None))
    assert env.main("--layout", "flat") == 0
    env.put("a/IMG_1.jpg", media.jpeg("2019:01:01 10:00:00"))   # sorts first, but the name is taken
    assert env.main("--layout", "flat") == 0
    assert copied(env) == {"IMG_1.jpg": "b/IMG_1.jpg", "IMG_1 (2).jpg": "a/IMG_1.jpg"}
    snapshot = env.checkpoint.read_text()
    assert '"a/IMG_1.jpg":{' in snapshot and '"name":"IMG_1 (2).jpg"' in snapshot


def test_mirror_layout_resolves_keys_that_differ_only_by_slashes(env):
    env.put("a/IMG_1.jpg", media.jpeg(None))
    assert env.main() == 0
    env.put("a//IMG_1.jpg", media.jpeg("2019:01:01 10:00:00"))   # sorts before a/IMG_1.jpg
    env.put("/a/IMG_1.jpg", media.jpeg("2018:01:01 10:00:00"))   # and this before both
    env.put("a/IMG_2.jpg", media.jpeg(None))
    env.put("a//IMG_2.jpg", media.jpeg("2017:01:01 10:00:00"))   # both new: key order decides
    assert env.main("--workers", "8") == 0
    assert copied(env) == {"a/IMG_1.jpg": "a/IMG_1.jpg", "a/IMG_1 (2).jpg": "/a/IMG_1.jpg",
                           "a/IMG_1 (3).jpg": "a//IMG_1.jpg",
                           "a/IMG_2.jpg": "a//IMG_2.jpg", "a/IMG_2 (2).jpg": "a/IMG_2.jpg"}
    assert env.main() == 0 and len(copied(env)) == 5


def test_another_layout_on_an_existing_checkpoint_is_refused_and_changes_nothing(env):
    env.put("a/IMG_1.jpg", media.jpeg(None))
    assert env.run().returncode == 0
    before = env.checkpoint.read_bytes()
    files_before = env.drive.list_files()
    result = env.run("--layout", "date")
    assert result.returncode == 2
    assert "--layout mirror" in one_line_error(result) and "second time" in one_line_error(result)
    assert env.checkpoint.read_bytes() == before and env.drive.list_files() == files_before
    assert json.loads(before.split(b'"objects"')[0] + b'"objects": {}}')["binding"]["layout"] == "mirror"


def test_verify_finds_copies_by_provenance_in_every_layout(env):
    env.put("trip/a.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00"))
    env.put("other/a.jpg", media.jpeg(None))
    assert env.main("--layout", "date") == 0
    assert env.main("--layout", "date", "verify") == 0
    for command in ("transfer", "verify"):
        result = env.run(command, "--layout", "flat", "--checkpoint", "flat.json", "--folder", "Flat")
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_changed_object_keeps_its_name_and_is_updated_in_place(env):
    """Found in review: a key's own earlier name counted as taken, so a changed photo became 'IMG (2)'."""
    env.put("b/IMG.jpg", media.jpeg(None))
    env.put("a/IMG.jpg", media.jpeg(None))
    assert env.main("--layout", "flat") == 0
    env.put("b/IMG.jpg", media.jpeg("2019:01:01 10:00:00"))   # a new version
    assert env.main("--layout", "flat") == 0
    assert copied(env) == {"IMG.jpg": "a/IMG.jpg", "IMG (2).jpg": "b/IMG.jpg"}
    assert len(env.drive.list_files()) == 3   # the root and two files: updated, not copied again


def test_a_numbered_name_never_lands_on_another_keys_own_name(env):
    """Found in review: 'a/IMG.jpg' second to 'a//IMG.jpg' took 'IMG (2).jpg', the name of the key
    'a/IMG (2).jpg'."""
    for key in ("a//IMG.jpg", "a/IMG (2).jpg", "a/IMG.jpg"):
        env.put(key, media.jpeg(None))
    assert env.main("--workers", "8") == 0
    assert copied(env) == {"a/IMG.jpg": "a//IMG.jpg", "a/IMG (2).jpg": "a/IMG (2).jpg", "a/IMG (3).jpg": "a/IMG.jpg"}


def test_a_failed_object_keeps_the_name_it_was_given(env, monkeypatch):
    """Found in review: names recorded on failed entries were not reserved, so a new key could take
    the name of a file the failed one may already have in Drive."""
    import cloud_transfer as ct

    env.put("a/IMG.jpg", media.jpeg(None))
    env.put("b/IMG.jpg", media.jpeg(None))
    real_copy = ct.Transfer._copy

    def failing_b(self, obj, *args):
        if obj.key == "b/IMG.jpg":
            raise ct.ObjectError(ct.Verdict(ct.Verdict.FAIL, "refused (test)"))
        return real_copy(self, obj, *args)

    monkeypatch.setattr(ct.Transfer, "_copy", failing_b)
    assert env.main("--layout", "flat") == 1
    monkeypatch.setattr(ct.Transfer, "_copy", real_copy)
    env.put("c/IMG.jpg", media.jpeg(None))
    assert env.main("--layout", "flat") == 0
    assert copied(env) == {"IMG.jpg": "a/IMG.jpg", "IMG (2).jpg": "b/IMG.jpg", "IMG (3).jpg": "c/IMG.jpg"}


def test_recheck_in_a_date_layout_finds_intact_copies_without_reading_the_photos_again(env, moto_url):
    from tests import media_samples as media
    from tests.s3_fault_proxy import S3FaultProxy

    for n in range(3):
        env.put(f"p/{n}.jpg", media.jpeg(f"201{n}:05:05 10:00:00", "+00:00"))
    with S3FaultProxy(moto_url) as proxy:
        env.vars["AWS_ENDPOINT_URL"] = proxy.url
        gets: list[str] = []
        proxy.on_object_get = gets.append
        assert env.main("--layout", "date") == 0 and len(gets) == 3
        gets.clear()
        report = env.cwd / "report.json"
        assert env.main("--layout", "date", "--recheck", "--report", str(report)) == 0
        assert gets == []   # each recorded copy was asked for by id, intact: no download for its date
        assert __import__("json").loads(report.read_text())["found_in_drive"] == 3
        trashed = next(f for f in env.drive.list_files() if f["name"] == "1.jpg")
        env.drive.files[trashed["id"]]["trashed"] = True
        assert env.main("--layout", "date", "--recheck") == 0
        assert gets == ["p/1.jpg"] and len(env.drive_files()) == 3   # the trashed one is read and sent again
