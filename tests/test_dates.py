"""Issue 9: every file gets one original date (createdTime = modifiedTime), the right type, and S3
user metadata as properties. Real media files (tests/media_samples.py) in moto, copied by the real
script into the Drive emulator; each expected instant is worked out here by hand."""
from __future__ import annotations

import datetime as dt

import pytest

import cloud_transfer as ct
from tests import media_samples as media

UTC = dt.timezone.utc


def at(*parts: int) -> str:
    """The RFC 3339 instant Drive reports, to the second, for a UTC time."""
    return dt.datetime(*parts, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def dates_of(env) -> dict[str, tuple[str, str, str]]:
    """Drive path → (createdTime, modifiedTime to the second, mimeType) of every copied file."""
    found = {}
    for path, files in env.drive_files().items():
        (item,) = files
        found[path.split("/", 1)[1]] = (item["createdTime"][:19], item["modifiedTime"][:19], item["mimeType"])
    return found


def last_modified(env, key: str) -> str:
    return env.s3.head_object(Bucket=env.bucket, Key=key)["LastModified"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_photos_take_their_exif_capture_time_in_every_format(env):
    env.put("p/a.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00"))
    env.put("p/b.HEIC", media.heic("2018:03:01 08:00:00", "-05:00"))       # as libheif writes it
    env.put("p/b2.heic", media.heic("2018:03:02 08:00:00", "+00:00", absolute_iloc=True))
    env.put("p/c.dng", media.tiff_raw("2017:12:31 23:59:59", "+01:00"))
    env.put("p/d.png", media.png("2016:02:29 12:00:00", "+09:00"))
    env.put("p/e.webp", media.webp("2015:06:15 06:15:00", "-03:30"))
    assert env.main() == 0
    assert dates_of(env) == {
        "p/a.jpg": (at(2019, 7, 5, 16, 30, 12),) * 2 + ("image/jpeg",),
        "p/b.HEIC": (at(2018, 3, 1, 13, 0, 0),) * 2 + ("image/heic",),
        "p/b2.heic": (at(2018, 3, 2, 8, 0, 0),) * 2 + ("image/heic",),
        "p/c.dng": (at(2017, 12, 31, 22, 59, 59),) * 2 + ("image/x-adobe-dng",),
        "p/d.png": (at(2016, 2, 29, 3, 0, 0),) * 2 + ("image/png",),
        "p/e.webp": (at(2015, 6, 15, 9, 45, 0),) * 2 + ("image/webp",),
    }


def test_exif_without_offset_is_read_in_the_timezone_given_or_the_machines(env):
    env.put("p/a.jpg", media.jpeg("2019:07:05 18:30:12"))
    assert env.main("--timezone", "America/New_York") == 0
    assert dates_of(env)["p/a.jpg"][:2] == (at(2019, 7, 5, 22, 30, 12),) * 2   # EDT, UTC-4
    env.put("q/a.jpg", media.jpeg("2019:01:05 18:30:12"))
    result = env.run("--prefix", "q/", "--checkpoint", "q.json", env={"TZ": "Asia/Tokyo"})
    assert result.returncode == 0, result.stderr
    assert dates_of(env)["q/a.jpg"][:2] == (at(2019, 1, 5, 9, 30, 12),) * 2


def test_without_a_usable_capture_time_the_file_time_in_metadata_then_s3s_time(env):
    mtime = dt.datetime(2012, 4, 1, 10, 0, 0, tzinfo=UTC).timestamp()
    env.put("p/broken.jpg", media.jpeg_broken_exif(), Metadata={"mtime": str(mtime)})
    env.put("p/unset-clock.jpg", media.jpeg("2000:01:01 00:00:00"), Metadata={"Mtime": f"{mtime + 60:.3f}"})
    env.put("p/future.jpg", media.jpeg("2099:01:01 10:00:00", "+00:00"),
            Metadata={"s3cmd-attrs": f"atime:1/mode:33188/mtime:{int(mtime) + 120}/uid:0"})
    env.put("p/plain.jpg", media.jpeg(None))
    env.put("p/no-date.mp4", media.mp4(None))
    assert env.main() == 0
    dates = dates_of(env)
    assert dates["p/broken.jpg"][:2] == (at(2012, 4, 1, 10, 0, 0),) * 2
    assert dates["p/unset-clock.jpg"][:2] == (at(2012, 4, 1, 10, 1, 0),) * 2
    assert dates["p/future.jpg"][:2] == (at(2012, 4, 1, 10, 2, 0),) * 2
    assert dates["p/plain.jpg"][:2] == (last_modified(env, "p/plain.jpg"),) * 2
    assert dates["p/no-date.mp4"] == (last_modified(env, "p/no-date.mp4"),) * 2 + ("video/mp4",)


def test_videos_take_their_container_creation_time_wherever_the_moov_is(env, capsys):
    taken = dt.datetime(2020, 8, 9, 10, 11, 12, tzinfo=UTC)
    env.put("v/front.mp4", media.mp4(taken))
    env.put("v/end.MOV", media.mov(taken + dt.timedelta(days=1), moov_last=True))
    env.put("v/v1.m4v", media.mp4(taken + dt.timedelta(days=2), version=1, large_mdat=True, brand=b"M4V "))
    # over the resumable threshold at 0.25 MiB chunks: uploaded while it downloads, its date read
    # beforehand from S3 with ranged GETs (the moov sits after 3 MiB of mdat)
    env.put("v/big.mov", media.mov(taken + dt.timedelta(days=3), moov_last=True, mdat_bytes=3 * 1024 * 1024))
    assert env.main("--chunk-size", "0.25") == 0
    assert "0 from EXIF, 4 from video headers" in capsys.readouterr().out
    dates = dates_of(env)
    assert dates["v/front.mp4"] == (at(2020, 8, 9, 10, 11, 12),) * 2 + ("video/mp4",)
    assert dates["v/end.MOV"] == (at(2020, 8, 10, 10, 11, 12),) * 2 + ("video/quicktime",)
    assert dates["v/v1.m4v"] == (at(2020, 8, 11, 10, 11, 12),) * 2 + ("video/x-m4v",)
    assert dates["v/big.mov"] == (at(2020, 8, 12, 10, 11, 12),) * 2 + ("video/quicktime",)


@pytest.mark.parametrize("date_from, expected", [
    ("exif", lambda env: at(2019, 7, 5, 16, 30, 12)),
    ("metadata", lambda env: at(2012, 4, 1, 10, 0, 0)),
    ("s3", lambda env: last_modified(env, "p/a.jpg")),
])
def test_date_from_forces_one_source(env, date_from, expected):
    mtime = dt.datetime(2012, 4, 1, 10, 0, 0, tzinfo=UTC).timestamp()
    env.put("p/a.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00"), Metadata={"mtime": str(mtime)})
    env.put("p/plain.jpg", media.jpeg(None))   # no EXIF, no metadata: S3's time whatever is forced
    assert env.main("--date-from", date_from) == 0
    dates = dates_of(env)
    assert dates["p/a.jpg"][:2] == (expected(env),) * 2
    assert dates["p/plain.jpg"][:2] == (last_modified(env, "p/plain.jpg"),) * 2


def test_s3_user_metadata_becomes_properties_and_a_specific_content_type_is_kept(env):
    env.put("p/a.jpg", media.jpeg(None), ContentType="image/jpeg",
            Metadata={"camera": "x100v", "album": "=?UTF-8?B?w4l0w6kgMjAxOQ==?=", "too-long": "x" * 130})
    env.put("p/b.heic", media.heic("2018:03:01 08:00:00"), ContentType="application/octet-stream")
    assert env.main() == 0
    files = {path.split("/", 1)[1]: items[0] for path, items in env.drive_files().items()}
    # S3 keeps non-ASCII metadata RFC 2047-encoded: Drive gets the text
    assert files["p/a.jpg"]["properties"] == {"camera": "x100v", "album": "Été 2019"}
    assert files["p/a.jpg"]["mimeType"] == "image/jpeg" and files["p/b.heic"]["mimeType"] == "image/heic"


def test_the_video_date_reader_skips_a_4_gb_mdat_instead_of_reading_it(tmp_path):
    taken = dt.datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)
    prefix, moov = media.mp4_header_with_huge_mdat(taken, 4 * 1024 ** 3 + 3)
    path = tmp_path / "huge.mp4"
    with open(path, "wb") as out:   # sparse: the mdat's bytes are never written
        out.write(prefix)
        out.seek(4 * 1024 ** 3 + 3, 1)
        out.write(moov)
    size, reads = path.stat().st_size, []

    def read_at(offset: int, length: int) -> bytes:
        reads.append(length)
        with open(path, "rb") as stream:
            stream.seek(offset)
            return stream.read(length)

    assert ct.mp4_creation_time(read_at, size) == taken
    assert sum(reads) < 200 and len(reads) <= 8


def test_not_an_mp4_and_truncated_boxes_give_no_date():
    assert ct.mp4_creation_time(lambda offset, n: b"RIFF\x00\x00\x00\x00AVI LIST"[offset:offset + n], 16) is None
    whole = media.mp4(dt.datetime(2021, 5, 6, tzinfo=UTC), moov_last=True)
    cut = whole[: len(whole) - 40]
    assert ct.mp4_creation_time(lambda offset, n: cut[offset:offset + n], len(cut)) is None


def test_video_times_counted_from_1970_by_mistake_are_read_as_such():
    taken = dt.datetime(2012, 6, 1, 12, 0, 0, tzinfo=UTC)
    wrong = media.mp4(taken - (dt.datetime(1970, 1, 1, tzinfo=UTC) - media.DATE_1904))   # seconds since 1970 in the field
    assert ct.mp4_creation_time(lambda offset, n: wrong[offset:offset + n], len(wrong)) == taken


def test_the_exif_item_of_a_heic_with_many_tiles_is_found():
    """iPhones list a hundred or more tile items before the Exif item (found in review: the walk
    stopped at 64)."""
    import struct

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I4s", 8 + len(body), kind) + body

    tiff = media.jpeg("2021:02:03 04:05:06", "+00:00")
    tiff = tiff[tiff.index(b"Exif\x00\x00") + 6:]                       # the TIFF block of a real EXIF
    items = [(n, b"hvc1") for n in range(1, 150)] + [(150, b"Exif")]
    iinf = box(b"iinf", b"\x00\x00\x00\x00" + struct.pack(">H", len(items)) + b"".join(
        box(b"infe", b"\x02\x00\x00\x00" + struct.pack(">HH4s", item, 0, kind) + b"\x00") for item, kind in items))
    head = box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic")
    iloc_size = 8 + 8 + len(items) * 16   # version 1, 4-byte offsets/lengths, no base offset
    meta_size = 12 + len(iinf) + iloc_size
    exif_at = len(head) + meta_size
    entries = b"".join(struct.pack(">HHHHII", item, 0, 0, 1, exif_at if kind == b"Exif" else 0,
                                   4 + 6 + len(tiff) if kind == b"Exif" else 0) for item, kind in items)
    iloc = box(b"iloc", b"\x01\x00\x00\x00" + bytes([0x44, 0x00]) + struct.pack(">H", len(items)) + entries)
    data = head + box(b"meta", b"\x00\x00\x00\x00" + iinf + iloc) + struct.pack(">I", 6) + b"Exif\x00\x00" + tiff
    assert len(iloc) == iloc_size
    assert ct.rfc3339(ct.parse_exif_datetime("2021:02:03 04:05:06", "+00:00")) == "2021-02-03T04:05:06.000Z"
    found = ct.heif_exif(lambda offset, n: data[offset:offset + n], len(data))
    assert found is not None and found.startswith((b"II", b"MM")) and b"2021:02:03 04:05:06" in found
