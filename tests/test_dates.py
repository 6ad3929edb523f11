"""Issue 9: every file gets one original date (createdTime = modifiedTime), the right type, and S3
user metadata as properties. Real media files (tests/media_samples.py) in moto, copied by the real
script into the Drive emulator; each expected instant is worked out here by hand."""
from __future__ import annotations

import datetime as dt
import io
import json
import re

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
    env.put("p/unset-clock.jpg", media.jpeg("2000:01:01 00:00:00", written=None), Metadata={"Mtime": f"{mtime + 60:.3f}"})
    env.put("p/future.jpg", media.jpeg("2099:01:01 10:00:00", "+00:00", written=None),
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


def test_apples_creation_date_is_read_in_either_meta_form_and_mvhd_without_it():
    taken = dt.datetime(2019, 7, 4, 14, 10, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    export = dt.datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC)
    for full_box in (False, True):
        data = media.mp4(export, meta=media.apple_keys_meta("2019-07-04T14:10:00+0200", full_box=full_box))
        assert ct.mp4_creation_time(lambda at, n: data[at:at + n], len(data)) == taken
    moov_last = media.mov(export, moov_last=True, meta=media.apple_keys_meta("2019-07-04T14:10:00+0200"))
    assert ct.mp4_creation_time(lambda at, n: moov_last[at:at + n], len(moov_last)) == taken
    ended = media.mov(export, meta=media.apple_keys_meta("2019-07-04T14:10:00+0200\0"))   # some writers add a NUL
    assert ct.mp4_creation_time(lambda at, n: ended[at:at + n], len(ended)) == taken
    broken = media.mov(export, meta=media.apple_keys_meta("tomorrow at noon"))
    assert ct.mp4_creation_time(lambda at, n: broken[at:at + n], len(broken)) == export   # mvhd, then
    assert ct.apple_creation_date(b"", None) is None and ct.apple_creation_date(bytes(40), None) is None


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


def test_without_exif_capture_time_a_date_in_the_name_then_exifs_last_written_time(env):
    """Phone and messenger libraries (issue 18): WhatsApp strips metadata and keeps the day in the
    name; screenshots have no EXIF; scans and thermal cameras carry only IFD0 DateTime."""
    mtime = str(dt.datetime(2012, 4, 1, 10, 0, 0, tzinfo=UTC).timestamp())
    env.put("w/IMG-20190704-WA0001.jpg", media.jpeg(None), Metadata={"mtime": mtime})     # a day: its noon
    env.put("w/Screenshot_20200315-142233.png", media.jpeg(None))
    env.put("w/Screenshot 2022-11-05 at 09.08.07.png", media.jpeg(None))
    env.put("w/PXL_20210101_123456789.jpg", media.jpeg(None))                       # Pixel names are UTC
    env.put("w/scan.tif", media.tiff_raw(None, written="2014:05:06 07:08:09"), Metadata={"mtime": mtime})
    env.put("w/IMG_20190101_000000.jpg", media.jpeg("2018:12:31 23:00:00", "+00:00"))   # EXIF first
    env.put("w/IMG_1234.jpg", media.jpeg(None), Metadata={"mtime": mtime})            # no date in the name
    assert env.main("--timezone", "Europe/Paris", "--report", str(env.cwd / "r.json")) == 0
    sources = json.loads((env.cwd / "r.json").read_text())["date_sources"]
    assert (sources["filename"], sources["exif-datetime"], sources["exif"], sources["metadata"]) == (4, 1, 1, 1)
    dates = dates_of(env)
    assert dates["w/IMG-20190704-WA0001.jpg"][:2] == (at(2019, 7, 4, 10, 0, 0),) * 2   # 12:00 CEST
    assert dates["w/Screenshot_20200315-142233.png"][:2] == (at(2020, 3, 15, 13, 22, 33),) * 2
    assert dates["w/Screenshot 2022-11-05 at 09.08.07.png"][:2] == (at(2022, 11, 5, 8, 8, 7),) * 2
    assert dates["w/PXL_20210101_123456789.jpg"][:2] == (at(2021, 1, 1, 12, 34, 56),) * 2
    assert dates["w/scan.tif"][:2] == (at(2014, 5, 6, 5, 8, 9),) * 2
    assert dates["w/IMG_20190101_000000.jpg"][:2] == (at(2018, 12, 31, 23, 0, 0),) * 2
    assert dates["w/IMG_1234.jpg"][:2] == (at(2012, 4, 1, 10, 0, 0),) * 2


@pytest.mark.parametrize("name, expected", [
    ("IMG-20190704-WA0001.jpg", (2019, 7, 4, 12, 0, 0)),
    ("VID-20190704-WA0003.mp4", (2019, 7, 4, 12, 0, 0)),
    ("IMG_20200315_142233.jpg", (2020, 3, 15, 14, 22, 33)),
    ("VID_20200315_142233.mp4", (2020, 3, 15, 14, 22, 33)),
    ("Screenshot_20200315-142233.png", (2020, 3, 15, 14, 22, 33)),
    ("Screenshot_2020-03-15-14-22-33.png", (2020, 3, 15, 14, 22, 33)),
    ("Screenshot 2022-11-05 at 09.08.07.png", (2022, 11, 5, 9, 8, 7)),
    ("Screen Shot 2019-03-01 at 1.11.12 PM.png", (2019, 3, 1, 13, 11, 12)),
    ("Screen Shot 2019-03-01 at 12.11.12 AM.png", (2019, 3, 1, 0, 11, 12)),
    ("Screen Recording 2022-11-05 at 09.08.07.mov", (2022, 11, 5, 9, 8, 7)),
    ("signal-2021-02-03-040506.jpg", (2021, 2, 3, 4, 5, 6)),
    ("signal-2021-02-03-04-05-06-123.jpg", (2021, 2, 3, 4, 5, 6)),
    ("20190704_123456.jpg", (2019, 7, 4, 12, 34, 56)),
    ("2019-07-04 12.34.56.jpg", (2019, 7, 4, 12, 34, 56)),
    ("photo_2021-05-06_07-08-09.jpg", (2021, 5, 6, 7, 8, 9)),
    ("holiday 2018-08-01.jpg", (2018, 8, 1, 12, 0, 0)),
    ("PXL_20210101_123456789.jpg", "utc"),
    ("IMG_1234.jpg", None), ("DSC01234.JPG", None), ("1234567890123.jpg", None),
    ("IMG-19850704-WA0001.jpg", None),         # before 1990: a number that looks like a date
    ("IMG_20201340_101010.jpg", None),         # month 13
    ("IMG_20990101_101010.jpg", None),         # the future
    ("20190704123456.jpg", None),              # fourteen digits in a row: no telling
    ("id-2019123412.jpg", None),
])
def test_dates_in_file_names(name, expected):
    zone = dt.timezone(dt.timedelta(hours=2))
    moment = ct.date_in_name(f"some/prefix/{name}", zone)
    if expected is None:
        assert moment is None
    elif expected == "utc":
        assert moment == dt.datetime(2021, 1, 1, 12, 34, 56, tzinfo=UTC)
    else:
        assert moment == dt.datetime(*expected, tzinfo=zone)


def test_an_object_without_extension_is_told_by_its_first_bytes_and_typed_for_drive(env):
    env.put("scans/0001", media.jpeg("2019:07:05 18:30:12", "+02:00"))              # moto: binary/octet-stream
    env.put("scans/notes", b"shopping list: milk, eggs\n" * 20)
    env.put("cams/A001_C002.R3D", b"\x00\x00\x00\x20RED2" + bytes(4000))
    env.put("cams/00001.MTS", bytes([0x47] + [0] * 191) * 30)
    assert env.main("--report", str(env.cwd / "r.json")) == 0
    dates = dates_of(env)
    assert dates["scans/0001"] == (at(2019, 7, 5, 16, 30, 12),) * 2 + ("image/jpeg",)
    assert "scans/notes" not in dates
    assert dates["cams/A001_C002.R3D"][2] == "video/x-red-r3d" and dates["cams/00001.MTS"][2] == "video/mp2t"
    report = json.loads((env.cwd / "r.json").read_text())
    assert report["skipped_by_reason"] == {ct.SKIP_NOT_MEDIA: 1}


def test_first_bytes_name_the_format_of_real_files():
    assert ct.sniff_format(media.jpeg(None)) == "jpg"
    assert ct.sniff_format(media.heic("2018:03:01 08:00:00")) == "heic"
    assert ct.sniff_format(media.tiff_raw("2017:12:31 23:59:59")) == "tif"
    assert ct.sniff_format(media.mp4(None)) == "mp4"
    assert ct.sniff_format(media.mov(None)) == "mov"
    assert ct.sniff_format(media.webp("2015:06:15 06:15:00")) == "webp"
    assert ct.sniff_format(bytes([0x47] + [0] * 187) * 2) == "ts"
    assert ct.sniff_format(bytes(4) + bytes([0x47] + [0] * 191) * 2) == "m2ts"
    assert ct.sniff_format(b"BM" + bytes(12) + (40).to_bytes(4, "little") + bytes(40)) == "bmp"
    assert ct.sniff_format(b"BMW service history.txt") is None
    assert ct.sniff_format(b"%PDF-1.7") is None and ct.sniff_format(b"") is None
    # every known format has a type of its own in Drive, photo or video
    assert all(kind.startswith(("image/", "video/", "application/mxf")) for kind in ct.MEDIA_TYPES.values())
    assert {"r3d", "braw", "mod", "tod", "vob", "mts", "m2ts", "3gp", "3g2", "insv", "insp", "cr3", "raf", "mrw",
            "x3f", "crw"} <= ct.MEDIA_EXTENSIONS
    assert {extension for _, _, extension in ct.MEDIA_SIGNATURES} <= ct.MEDIA_EXTENSIONS


# --- AVI and Matroska, read by hachoir; compared with ExifTool where it is installed ---------------

BERLIN_SUMMER = dt.timezone(dt.timedelta(hours=2))   # --timezone Europe/Berlin in June


def exif_time(text: str, zone: dt.tzinfo) -> dt.datetime:
    """An ExifTool time ("2015:06:07 08:09:10", maybe with fractions, a Z or "+02:00") as an
    instant, to the second; a day alone is its noon; without Z or offset, a wall-clock time in `zone`."""
    found = re.fullmatch(r"(\d{4}):(\d\d):(\d\d)(?: (\d\d):(\d\d):(\d\d)(?:\.\d+)?)?(Z|[+-]\d\d:\d\d)?", text)
    assert found, text
    year, month, day, hour, minute, second, offset = found.groups()
    if offset and offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        zone = dt.timezone(sign * dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:])))
    return dt.datetime(int(year), int(month), int(day), int(hour or 12), int(minute or 0), int(second or 0),
                       tzinfo=UTC if offset == "Z" else zone)


CONTAINER_SAMPLES = [
    # (key, sample, ExifTool's tag, the instant expected with --timezone Europe/Berlin)
    ("v/camera.avi", media.avi("SUN JUN 07 08:09:10 2015\n", "2001-01-01"), "RIFF:DateTimeOriginal",
     dt.datetime(2015, 6, 7, 6, 9, 10, tzinfo=UTC)),
    ("v/ffmpeg.avi", media.avi(None, "2014-06-02"), "RIFF:DateCreated", dt.datetime(2014, 6, 2, 10, 0, 0, tzinfo=UTC)),
    ("v/late.AVI", media.avi(None, "2013-05-06 07:08:09", info_after_movi=True), "RIFF:DateCreated",
     dt.datetime(2013, 5, 6, 5, 8, 9, tzinfo=UTC)),
    ("v/clip.mkv", media.matroska(dt.datetime(2016, 7, 8, 9, 10, 11, 500000, tzinfo=UTC)), "Matroska:DateTimeOriginal",
     dt.datetime(2016, 7, 8, 9, 10, 11, tzinfo=UTC)),
    ("v/clip.webm", media.matroska(dt.datetime(2017, 1, 2, 3, 4, 5, tzinfo=UTC), doctype="webm"),
     "Matroska:DateTimeOriginal", dt.datetime(2017, 1, 2, 3, 4, 5, tzinfo=UTC)),
    # an iPhone video edited or exported: mvhd holds the export's time, Apple's key the capture's
    ("v/IMG_0100.MOV", media.mov(dt.datetime(2023, 1, 2, 3, 4, 5, tzinfo=UTC),
                                 meta=media.apple_keys_meta("2019-07-04T14:10:00+0200")), "Keys:CreationDate",
     dt.datetime(2019, 7, 4, 12, 10, 0, tzinfo=UTC)),
    # AVCHD: the camera's wall clock and its zone (+09:00, -05:30) in the H.264 stream's MDPM
    ("v/PRIVATE/AVCHD/BDMV/STREAM/00001.MTS", media.avchd(dt.datetime(2010, 4, 5, 10, 0, 0)), "H264:DateTimeOriginal",
     dt.datetime(2010, 4, 5, 1, 0, 0, tzinfo=UTC)),
    ("v/00002.m2ts", media.avchd(dt.datetime(2011, 12, 31, 23, 59, 58), zone_byte=0x2B, m2ts=False),
     "H264:DateTimeOriginal", dt.datetime(2012, 1, 1, 5, 29, 58, tzinfo=UTC)),
]


TAKEN = "2014:05:06 07:08:09"   # a wall-clock time: 05:08:09 UTC in Berlin in May
PHOTO_TAG_SAMPLES = [
    # the containers ExifRead does not open, then XMP and IPTC (read by libexiv2)
    ("r/fuji.RAF", media.raf(TAKEN), "ExifIFD:DateTimeOriginal", dt.datetime(2014, 5, 6, 5, 8, 9, tzinfo=UTC)),
    ("r/minolta.mrw", media.mrw(TAKEN), "ExifIFD:DateTimeOriginal", dt.datetime(2014, 5, 6, 5, 8, 9, tzinfo=UTC)),
    ("r/canon.crw", media.crw(dt.datetime(2014, 5, 6, 7, 8, 9)), "CanonRaw:DateTimeOriginal",
     dt.datetime(2014, 5, 6, 5, 8, 9, tzinfo=UTC)),
    ("r/canon.CR3", media.cr3(TAKEN), "ExifIFD:DateTimeOriginal", dt.datetime(2014, 5, 6, 5, 8, 9, tzinfo=UTC)),
    # Sigma: the PROP section's TIME (every camera), the EXIF of the JPEG preview (newer ones) first
    ("r/sd14.X3F", media.x3f(dt.datetime(2009, 8, 7, 6, 5, 4)), "SigmaRaw:DateTimeOriginal",
     dt.datetime(2009, 8, 7, 4, 5, 4, tzinfo=UTC)),
    ("r/dp2.x3f", media.x3f(dt.datetime(2009, 8, 7, 6, 5, 4), TAKEN, thumbnail=True), "ExifIFD:DateTimeOriginal",
     dt.datetime(2014, 5, 6, 5, 8, 9, tzinfo=UTC)),
    # Lightroom's export: XMP with an offset; the decoy xmp:CreateDate comes later in the chain
    ("x/IMG_20200101_101010.jpg", media.jpeg_with_xmp(exif_DateTimeOriginal="2013-04-05T06:07:08.25+02:00",
                                                       xmp_CreateDate="2001-01-01T00:00:00"),
     "XMP-exif:DateTimeOriginal", dt.datetime(2013, 4, 5, 4, 7, 8, tzinfo=UTC)),
    ("x/extended.jpg", media.jpeg_with_xmp(extended=True, photoshop_DateCreated="2013-04-05"),
     "XMP-photoshop:DateCreated", dt.datetime(2013, 4, 5, 10, 0, 0, tzinfo=UTC)),
    ("x/created.jpg", media.jpeg_with_xmp(xmp_CreateDate="2012-01-02T03:04:05"), "XMP-xmp:CreateDate",
     dt.datetime(2012, 1, 2, 2, 4, 5, tzinfo=UTC)),
    ("i/agency.jpg", media.jpeg_with_iptc("20120304", "050607+0100"), "Composite:DateTimeCreated",
     dt.datetime(2012, 3, 4, 4, 6, 7, tzinfo=UTC)),
    ("i/day.jpg", media.jpeg_with_iptc("20110708"), "IPTC:DateCreated", dt.datetime(2011, 7, 8, 10, 0, 0, tzinfo=UTC)),
]
BERLIN_WINTER = dt.timezone(dt.timedelta(hours=1))


@pytest.mark.parametrize("key, sample, tag, expected", CONTAINER_SAMPLES + PHOTO_TAG_SAMPLES,
                         ids=[row[0] for row in CONTAINER_SAMPLES + PHOTO_TAG_SAMPLES])
def test_samples_hold_what_exiftool_reads(key, sample, tag, expected):
    reading = media.exiftool_reading(sample, key.rsplit(".", 1)[1].lower())
    if reading is None:
        pytest.skip("ExifTool is not installed: the recorded values stand")
    zone = BERLIN_SUMMER if 4 <= expected.month <= 9 else BERLIN_WINTER
    assert exif_time(reading[tag], zone) == expected


def test_avi_and_matroska_videos_keep_their_recording_time_also_when_streamed(env, capsys):
    for key, sample, _, _ in CONTAINER_SAMPLES:
        env.put(key, sample)
    # over the resumable threshold at 0.25 MiB chunks: uploaded while they download, their dates
    # read beforehand with ranged GETs, an INFO list after 3 MiB of frames included
    env.put("v/big.avi", media.avi(None, "2012-03-04 05:06:07", info_after_movi=True, movi_bytes=3 * 1024 * 1024))
    env.put("v/big.mkv", media.matroska(dt.datetime(2011, 2, 3, 4, 5, 6, tzinfo=UTC), cluster_bytes=3 * 1024 * 1024))
    env.put("v/undated.mkv", media.matroska(None))
    assert env.main("--chunk-size", "0.25", "--timezone", "Europe/Berlin", "--report", str(env.cwd / "r.json")) == 0
    out = capsys.readouterr().out
    assert "0 from EXIF, 10 from video headers" in out
    # the streamed ones: big.mkv's header in one GET, big.avi's header and its INFO after the frames
    assert "(3 ranged GETs of file headers and sidecars, " in out
    dates = dates_of(env)
    for key, _, _, expected in CONTAINER_SAMPLES:
        assert dates[key][:2] == (expected.strftime("%Y-%m-%dT%H:%M:%S"),) * 2, key
    assert dates["v/camera.avi"][2] == "video/x-msvideo" and dates["v/clip.webm"][2] == "video/webm"
    assert dates["v/big.avi"][:2] == (at(2012, 3, 4, 4, 6, 7),) * 2     # CET in March
    assert dates["v/big.mkv"] == (at(2011, 2, 3, 4, 5, 6),) * 2 + ("video/x-matroska",)
    assert dates["v/undated.mkv"][:2] == (last_modified(env, "v/undated.mkv"),) * 2
    report = json.loads((env.cwd / "r.json").read_text())
    assert report["date_sources"]["video"] == 10 and report["date_sources"]["s3"] == 1


@pytest.mark.parametrize("text, expected", [
    ("MON JUN 07 08:09:10 2015\n\0", (2015, 6, 7, 8, 9, 10)),       # IDIT as cameras write it
    ("Mon Jun  7 08:09:10 2015", (2015, 6, 7, 8, 9, 10)),
    ("2002-12-16  15:35:01\0\0", (2002, 12, 16, 15, 35, 1)),         # Konica
    ("2005:08:11 14:03:54", (2005, 8, 11, 14, 3, 54)),
    ("2001/ 1/27  1:42PM", (2001, 1, 27, 13, 42, 0)),                # Casio QV-3EX
    ("2001/ 1/27 12:05AM", (2001, 1, 27, 0, 5, 0)),
    ("2005/11/28/ 09:19", (2005, 11, 28, 9, 19, 0)),                 # Casio EX-Z30
    ("2015-06-07", (2015, 6, 7, 12, 0, 0)),                          # ICRD, a day alone: its noon
    ("junk", None), ("1899-01-01", None), ("2015-13-40 10:00:00", None), ("", None),
])
def test_avi_dates_in_the_forms_cameras_write(text, expected):
    moment = ct.riff_date(text, UTC)
    assert moment == (dt.datetime(*expected, tzinfo=UTC) if expected else None)


def test_avchd_dates_need_their_mdpm_whole_and_a_zone_or_the_timezone():
    taken = dt.datetime(2010, 4, 5, 10, 0, 0)
    clip = media.avchd(taken)
    assert ct.avchd_recording_time(clip, None) == dt.datetime(2010, 4, 5, 10, tzinfo=dt.timezone(dt.timedelta(hours=9)))
    no_zone = dt.timezone(dt.timedelta(hours=-3))
    assert ct.avchd_recording_time(media.avchd(taken, zone_byte=0x80), no_zone) == taken.replace(tzinfo=no_zone)
    assert ct.avchd_recording_time(media.avchd(None), UTC) is None              # MDPM without a date
    assert ct.avchd_recording_time(clip[:600], UTC) is None                      # cut off before it
    assert ct.avchd_recording_time(clip.replace(b"MDPM", b"MDPX"), UTC) is None
    assert ct.avchd_recording_time(b"\x47" + bytes(400), UTC) is None and ct.avchd_recording_time(b"", UTC) is None


def test_cut_off_or_foreign_containers_give_no_date():
    sample = media.avi("SUN JUN 07 08:09:10 2015\n")
    assert ct.avi_recording_time(io.BytesIO(sample[:40]), UTC) is None
    assert ct.avi_recording_time(io.BytesIO(media.matroska(dt.datetime(2016, 1, 1, tzinfo=UTC))), UTC) is None
    assert ct.matroska_recording_time(io.BytesIO(sample)) is None
    assert ct.matroska_recording_time(io.BytesIO(b"\x1aE\xdf\xa3" + bytes(30))) is None
    assert ct.avi_recording_time(io.BytesIO(b""), UTC) is None


def test_raw_containers_xmp_and_iptc_keep_their_capture_time(env, capsys):
    for key, sample, _, _ in PHOTO_TAG_SAMPLES:
        env.put(key, sample)
    env.put("x/plain.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00"))   # EXIF first: libexiv2 is not asked
    assert env.main("--timezone", "Europe/Berlin", "--report", str(env.cwd / "r.json")) == 0
    assert "7 from EXIF, 3 from XMP, 2 from IPTC, 0 from video headers" in capsys.readouterr().out
    dates = dates_of(env)
    for key, _, _, expected in PHOTO_TAG_SAMPLES:
        assert dates[key][:2] == (expected.strftime("%Y-%m-%dT%H:%M:%S"),) * 2, key
    assert dates["r/fuji.RAF"][2] == "image/x-fuji-raf" and dates["r/canon.CR3"][2] == "image/x-canon-cr3"
    assert dates["r/sd14.X3F"][2] == "image/x-sigma-x3f"
    report = json.loads((env.cwd / "r.json").read_text())
    assert {source: n for source, n in report["date_sources"].items() if n} == {"exif": 7, "xmp": 3, "iptc": 2}
    sources = {item["key"]: item["date_source"] for item in report["objects"]}
    assert sources["x/IMG_20200101_101010.jpg"] == "xmp"   # the XMP time, not the name's
    assert sources["i/day.jpg"] == "iptc" and sources["r/canon.crw"] == "exif"


def test_xmp_and_iptc_dates_in_their_forms():
    zone = dt.timezone(dt.timedelta(hours=-5))
    assert ct.parse_xmp_datetime("2013-04-05T06:07:08.25+02:00", None) == dt.datetime(
        2013, 4, 5, 6, 7, 8, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert ct.parse_xmp_datetime("2013-04-05T06:07Z", None) == dt.datetime(2013, 4, 5, 6, 7, tzinfo=UTC)
    assert ct.parse_xmp_datetime("2013-04-05T06:07:08", zone) == dt.datetime(2013, 4, 5, 6, 7, 8, tzinfo=zone)
    assert ct.parse_xmp_datetime("2013-04-05", zone) == dt.datetime(2013, 4, 5, 12, tzinfo=zone)
    assert ct.parse_xmp_datetime("2012-03-04T05:06:07-0330", None).utcoffset() == -dt.timedelta(hours=3, minutes=30)
    for vague_or_wrong in ("2013", "2013-04", "2013-13-01", "1850-01-01", "tomorrow", "", "2013-04-05T25:00:00"):
        assert ct.parse_xmp_datetime(vague_or_wrong, zone) is None, vague_or_wrong


def test_extended_xmp_is_joined_from_its_parts_and_a_part_missing_gives_none(tmp_path):
    whole = media.jpeg_with_xmp(extended=True, photoshop_DateCreated="2013-04-05")
    (packet,) = ct.jpeg_extended_xmp(io.BytesIO(whole))
    assert b'photoshop:DateCreated="2013-04-05"' in packet and packet.endswith(b'<?xpacket end="w"?>')
    second_part = whole.rfind(b"\xff\xe1")
    length = int.from_bytes(whole[second_part + 2:second_part + 4], "big")
    assert ct.jpeg_extended_xmp(io.BytesIO(whole[:second_part] + whole[second_part + 2 + length:])) == []
    assert ct.jpeg_extended_xmp(io.BytesIO(b"not a jpeg")) == []
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[:second_part + 10])   # cut off in a segment: no date, no error
    assert ct.photo_tags(path, UTC) == (None, "", None)


def test_without_libexiv2_those_dates_fall_through_to_the_next_source(tmp_path, monkeypatch):
    path = tmp_path / "IMG-20190704-WA0001.jpg"
    path.write_bytes(media.jpeg_with_iptc("20120304", "050607+0100"))
    assert ct.photo_tags(path, UTC)[1] == "iptc"
    monkeypatch.setattr(ct, "_exiv2", lambda: None)   # a machine without its wheel (32-bit ARM)
    assert ct.photo_tags(path, UTC) == (None, "", None)
    assert ct.date_readers().endswith(", no libexiv2")


# --- sidecars and pairs ----------------------------------------------------------------------------

def takeout_json(title: str, taken: dt.datetime) -> bytes:
    """A Google Takeout sidecar as Google Photos exports it (photoTakenTime: UTC seconds)."""
    seconds = int(taken.timestamp())
    return json.dumps({"title": title, "description": "", "imageViews": "3",
                       "creationTime": {"timestamp": "1700000000", "formatted": "14 Nov 2023, 22:13:20 UTC"},
                       "photoTakenTime": {"timestamp": str(seconds), "formatted": "..."},
                       "geoData": {"latitude": 0.0, "longitude": 0.0}}).encode()


UNDATED_RAW = media.tiff_raw(None, written=None)   # a RAW whose EXIF holds no time at all


def test_sidecars_give_their_photo_its_date_and_travel_with_it(env):
    env.put("lr/IMG_0001.CR2", UNDATED_RAW)                     # Lightroom: NAME.xmp
    env.put("lr/IMG_0001.xmp", media.xmp_packet(exif_DateTimeOriginal="2016-05-04T03:02:01+02:00"))
    env.put("dt/DSC_0002.NEF", UNDATED_RAW)                     # darktable: NAME.EXT.xmp
    env.put("dt/DSC_0002.NEF.xmp", media.xmp_packet(xmp_CreateDate="2015-04-03T02:01:00Z"))
    taken = dt.datetime(2019, 7, 4, 14, 10, tzinfo=UTC)
    env.put("to/IMG_0003.jpg", media.jpeg(None))                # Takeout: NAME.EXT.json
    env.put("to/IMG_0003.jpg.json", takeout_json("IMG_0003.jpg", taken))
    env.put("to/IMG_20200101_120000.jpg", media.jpeg(None))     # newer Takeout: beats the date in the name
    env.put("to/IMG_20200101_120000.jpg.supplemental-metadata.json", takeout_json("IMG_20200101_120000.jpg", taken))
    long = "Screenshot_20200315-142233_Samsung Internet Browser.jpg"   # its sidecar's name cut at 51 characters
    env.put(f"to/{long}", media.jpeg(None))
    env.put(f"to/{long[:46]}.json", takeout_json(long, taken))
    env.put(f"to/{long[:46]}r.jpg", media.jpeg(None))            # its name fits the cut too: the title says no
    env.put("to/IMG_0004.jpg", media.jpeg(None))
    env.put("to/IMG_0004.jpg.supplemen.json", takeout_json("IMG_0004.jpg", taken))
    env.put("ip/IMG_0005.HEIC", media.heic("2018:03:01 08:00:00", "-05:00"))
    env.put("ip/IMG_0005.AAE", b'<?xml version="1.0"?><plist version="1.0"><dict/></plist>')   # edits: travels along
    env.put("alone/IMG_0006.xmp", media.xmp_packet(xmp_CreateDate="2015-04-03T02:01:00Z"))     # its photo is gone
    env.put("big/IMG_0007.jpg", media.jpeg("2019:07:05 18:30:12") + bytes(200_000))            # left out by --max-size
    env.put("big/IMG_0007.jpg.xmp", media.xmp_packet(xmp_CreateDate="2015-04-03T02:01:00Z"))
    assert env.main("--max-size", "100K", "--report", str(env.cwd / "r.json")) == 0
    dates = dates_of(env)
    assert dates["lr/IMG_0001.CR2"][:2] == (at(2016, 5, 4, 1, 2, 1),) * 2
    assert dates["lr/IMG_0001.xmp"] == (at(2016, 5, 4, 1, 2, 1),) * 2 + ("application/rdf+xml",)
    assert dates["dt/DSC_0002.NEF"][:2] == dates["dt/DSC_0002.NEF.xmp"][:2] == (at(2015, 4, 3, 2, 1, 0),) * 2
    for key in ("to/IMG_0003.jpg", "to/IMG_20200101_120000.jpg", f"to/{long}", "to/IMG_0004.jpg"):
        assert dates[key][:2] == (at(2019, 7, 4, 14, 10, 0),) * 2, key
    assert dates["to/IMG_0003.jpg.json"] == (at(2019, 7, 4, 14, 10, 0),) * 2 + ("application/json",)
    assert dates[f"to/{long[:46]}r.jpg"][:2] == (at(2020, 3, 15, 14, 22, 33),) * 2   # from its own name
    assert dates["ip/IMG_0005.AAE"][:2] == dates["ip/IMG_0005.HEIC"][:2] == (at(2018, 3, 1, 13, 0, 0),) * 2
    assert "alone/IMG_0006.xmp" not in dates and "big/IMG_0007.jpg.xmp" not in dates
    report = json.loads((env.cwd / "r.json").read_text())
    # a sidecar without any photo beside it is no sidecar: "not a photo or video"
    assert report["skipped_by_reason"] == {ct.SKIP_SIDECAR_ALONE: 1, ct.SKIP_FILTERED: 1, ct.SKIP_NOT_MEDIA: 1}
    sources = {item["key"]: item.get("date_source") for item in report["objects"]}
    assert sources["lr/IMG_0001.CR2"] == sources["to/IMG_0004.jpg"] == "sidecar"
    assert sources["lr/IMG_0001.xmp"] == sources["to/IMG_0003.jpg.json"] == "pair"   # dated as their photo
    assert sources["ip/IMG_0005.AAE"] == "pair"


def test_a_sidecar_lands_in_its_photos_date_folder_whatever_date_it_holds(env):
    env.put("a/IMG_0001.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00"))
    env.put("a/IMG_0001.jpg.xmp", media.xmp_packet(exif_DateTimeOriginal="2016-05-04T03:02:01+02:00"))
    env.put("a/IMG_20180102_030405.png", media.plain_png())               # its date: in its name
    env.put("a/IMG_20180102_030405.png.json", b'{"title": "x"}')
    assert env.main("--layout", "date", "--timezone", "UTC") == 0
    assert set(dates_of(env)) == {"2019/07/IMG_0001.jpg", "2019/07/IMG_0001.jpg.xmp", "2018/01/IMG_20180102_030405.png",
                                  "2018/01/IMG_20180102_030405.png.json"}


def test_a_sidecar_follows_its_photo_whatever_the_date_source_and_a_copied_photo_first(env):
    env.put("a/IMG_0001.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00"))
    env.put("a/IMG_0001.jpg.xmp", media.xmp_packet(exif_DateTimeOriginal="2016-05-04T03:02:01+02:00"))
    env.put("b/IMG_0002.CR2", UNDATED_RAW)                                           # no date in the file or name:
    env.put("b/IMG_0002.xmp", media.xmp_packet(xmp_CreateDate="2015-04-03T02:01:00Z"))   # this is the photo's
    assert env.main("--layout", "date", "--timezone", "UTC", "--date-from", "s3") == 0
    folders = {path.rsplit("/", 1)[1]: path.rsplit("/", 1)[0] for path in dates_of(env)}
    assert folders["IMG_0001.jpg.xmp"] == folders["IMG_0001.jpg"] and folders["IMG_0002.xmp"] == folders["IMG_0002.CR2"]


def test_a_sidecar_of_two_photos_follows_the_one_that_is_copied(env):
    env.put("c/IMG_3.CR2", media.tiff_raw("2012:01:01 10:00:00") + bytes(300_000))   # left out by --max-size
    env.put("c/IMG_3.JPG", media.jpeg(None))
    env.put("c/IMG_3.xmp", media.xmp_packet(xmp_CreateDate="2015-04-03T02:01:00Z"))
    assert env.main("--layout", "date", "--timezone", "UTC", "--max-size", "100K") == 0
    assert set(dates_of(env)) == {"2015/04/IMG_3.JPG", "2015/04/IMG_3.xmp"}


def test_takeouts_duplicates_find_their_own_sidecars(env):
    first, second = dt.datetime(2019, 7, 4, 14, 10, tzinfo=UTC), dt.datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    env.put("to/IMG_0009.jpg", media.jpeg(None))
    env.put("to/IMG_0009(1).jpg", media.jpeg(None))               # a second photo of that name in the album
    env.put("to/IMG_0009.jpg.json", takeout_json("IMG_0009.jpg", first))
    env.put("to/IMG_0009.jpg(1).json", takeout_json("IMG_0009.jpg", second))
    env.put("to/IMG_0010(1).jpg", media.jpeg(None))
    env.put("to/IMG_0010.jpg.supplemental-metadata(1).json", takeout_json("IMG_0010.jpg", second))
    assert env.main() == 0
    dates = dates_of(env)
    assert dates["to/IMG_0009.jpg"][:2] == (at(2019, 7, 4, 14, 10, 0),) * 2
    assert dates["to/IMG_0009(1).jpg"][:2] == dates["to/IMG_0010(1).jpg"][:2] == (at(2020, 1, 2, 3, 4, 5),) * 2
    assert "to/IMG_0009.jpg(1).json" in dates


def test_no_sidecars_leaves_them_out_and_still_reads_them(env):
    env.put("lr/IMG_0001.CR2", UNDATED_RAW)
    env.put("lr/IMG_0001.xmp", media.xmp_packet(exif_DateTimeOriginal="2016-05-04T03:02:01+02:00"))
    assert env.main("--no-sidecars", "--report", str(env.cwd / "r.json")) == 0
    assert dates_of(env) == {"lr/IMG_0001.CR2": (at(2016, 5, 4, 1, 2, 1),) * 2 + ("image/x-canon-cr2",)}
    assert json.loads((env.cwd / "r.json").read_text())["skipped_by_reason"] == {ct.SKIP_SIDECARS_OFF: 1}


def test_the_halves_of_a_pair_share_a_date_and_a_folder(env):
    env.put("2019/IMG_0010.HEIC", media.heic("2018:12:31 23:30:00", "+01:00"))   # Live Photo: its MOV has no date
    env.put("2019/IMG_0010.MOV", media.mov(None))
    env.put("2019/DSC_0011.ARW", UNDATED_RAW)                                     # RAW+JPEG: the JPEG has it
    env.put("2019/DSC_0011.JPG", media.jpeg("2017:06:05 04:03:02", "+00:00"))
    env.put("2019/DSC_0012.ARW", UNDATED_RAW)                                     # a name group with no date
    assert env.main("--layout", "date:YYYY/MM/DD", "--timezone", "UTC") == 0
    dates = dates_of(env)
    assert dates["2018/12/31/IMG_0010.HEIC"][:2] == dates["2018/12/31/IMG_0010.MOV"][:2] == (at(2018, 12, 31, 22, 30, 0),) * 2
    assert dates["2017/06/05/DSC_0011.ARW"][:2] == dates["2017/06/05/DSC_0011.JPG"][:2]
    assert any(path.endswith("/DSC_0012.ARW") for path in dates)
    status = env.run("status")   # counts the copies by where their dates came from
    assert ("dates of the copies: 2 from EXIF, 2 from the other half of a pair (or a sidecar's photo), 1 from S3 "
            "upload times") in status.stdout


def test_sidecars_and_twins_are_found_in_the_name_group_and_nowhere_else():
    def obj(key):
        return ct.SourceObject(key=key, size=1, etag="e", last_modified=dt.datetime(2020, 1, 1, tzinfo=UTC))
    keys = ["a/IMG_1 copy.jpg", "a/IMG_1.CR2", "a/IMG_1.JPG", "a/IMG_1.MOV", "a/IMG_1.jpg.json", "a/IMG_1.xmp",
            "a/IMG_1/inside.jpg", "a/IMG_10.jpg", "a/IMG_10.xmp", "a/notes.json", "b/IMG_1.xmp"]
    groups = [[o.key for o in group] for group in ct.sibling_groups(map(obj, keys))]
    assert groups == [["a/IMG_1 copy.jpg"], ["a/IMG_1.CR2", "a/IMG_1.JPG", "a/IMG_1.MOV", "a/IMG_1.jpg.json", "a/IMG_1.xmp"],
                      ["a/IMG_1/inside.jpg"], ["a/IMG_10.jpg", "a/IMG_10.xmp"], ["a/notes.json"], ["b/IMG_1.xmp"]]
    sidecars, twins, targets = ct.sibling_relations([obj(key) for key in groups[1]])
    assert targets == {"a/IMG_1.jpg.json": ["a/IMG_1.JPG"], "a/IMG_1.xmp": ["a/IMG_1.CR2", "a/IMG_1.JPG", "a/IMG_1.MOV"]}
    assert [o.key for o in sidecars["a/IMG_1.JPG"]] == ["a/IMG_1.jpg.json", "a/IMG_1.xmp"]
    assert twins["a/IMG_1.MOV"].key == "a/IMG_1.CR2" and twins["a/IMG_1.CR2"].key == "a/IMG_1.JPG"
    assert ct.sidecar_targets("a/notes.json", {"notes.jpg": ["a/notes.jpg"]}) == []
    assert [len(group) for group in ct.sibling_groups(map(obj, [f"a/2019.{n:04d}.jpg" for n in range(5)]), limit=2)] == [2, 2, 1]


def test_a_cut_takeout_sidecar_is_matched_by_its_title_in_either_unicode_form():
    taken = dt.datetime(2019, 7, 4, 14, 10, tzinfo=UTC)
    composed, decomposed = "Ferien am Bodensee mit Großmutter und Jürgen.jpg", "Ferien am Bodensee mit Großmutter und Ju\u0308rgen.jpg"
    assert ct.takeout_time(takeout_json(decomposed, taken), [composed]) == taken    # a key uploaded from a Mac
    assert ct.takeout_time(takeout_json("another photo.jpg", taken), [composed]) is None


def test_takeout_times_and_what_is_not_one():
    assert ct.takeout_time(takeout_json("a.jpg", dt.datetime(2019, 7, 4, 14, 10, tzinfo=UTC))) == dt.datetime(
        2019, 7, 4, 14, 10, tzinfo=UTC)
    for data in (b"{}", b"[1, 2]", b"not json", b'{"photoTakenTime": {"timestamp": "0"}}',
                 b'{"photoTakenTime": {"timestamp": "99999999999999"}}', b'{"photoTakenTime": "x"}'):
        assert ct.takeout_time(data) is None, data


def test_a_verbose_dry_run_says_where_each_date_would_come_from_and_which_fall_back(env):
    env.put("d/IMG_0001.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00") + bytes(400_000))   # past the head
    env.put("d/canon.crw", media.crw(dt.datetime(2014, 5, 6, 7, 8, 9), raw_bytes=600_000))   # its table: at the end
    env.put("d/Screenshot_20200315-142233.png", media.plain_png())
    env.put("d/scan.png", media.plain_png())                                                    # no date anywhere
    env.put("d/clip.mkv", media.matroska(dt.datetime(2016, 7, 8, 9, 10, 11, tzinfo=UTC), cluster_bytes=300_000))
    env.put("d/IMG_0002.CR2", UNDATED_RAW)
    env.put("d/IMG_0002.xmp", media.xmp_packet(exif_DateTimeOriginal="2016-05-04T03:02:01+02:00"))
    result = env.run("--dry-run", "-v")
    assert result.returncode == 0, result.stderr
    said = {line.split(": ", 1)[1].split(" (")[0]: line for line in result.stderr.splitlines() if "would copy: " in line}
    assert "date from EXIF)" in said["d/IMG_0001.jpg"] and "date from EXIF)" in said["d/canon.crw"]
    assert "date from file names)" in said["d/Screenshot_20200315-142233.png"]
    assert "date from S3 upload times)" in said["d/scan.png"]
    assert "date from video headers)" in said["d/clip.mkv"]
    assert "date from sidecars (XMP, Takeout JSON))" in said["d/IMG_0002.CR2"]
    assert "1 would be dated by their S3 upload time" in result.stdout
    assert env.drive.list_files() == [] and not env.checkpoint.exists()


def test_sub_seconds_that_are_no_digits_are_left_out():
    for subsec in ("²", "-5", " ", "1a"):
        assert ct.parse_exif_datetime("2019:07:05 18:30:12", "+02:00", None, subsec).microsecond == 0, subsec


def test_sub_seconds_keep_a_bursts_photos_in_their_order(env):
    for n, fraction in enumerate(("047", "5", "999")):
        env.put(f"burst/IMG_{n}.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00", subsec=fraction))
    assert env.main() == 0
    created = {path: files[0]["createdTime"] for path, files in env.drive_files().items()}
    assert [created[f"Amazon Photos Transfer/burst/IMG_{n}.jpg"] for n in range(3)] == [
        "2019-07-05T16:30:12.047Z", "2019-07-05T16:30:12.500Z", "2019-07-05T16:30:12.999Z"]


# the samples of the first tests of this file, as ExifTool reads them (the Drive times they get are
# asserted there): (file name, sample, ExifTool's tag, the zone of a time without offset, instant)
FIRST_SAMPLES = [
    ("a.jpg", media.jpeg("2019:07:05 18:30:12", "+02:00", subsec="047"), "Composite:SubSecDateTimeOriginal", UTC,
     dt.datetime(2019, 7, 5, 16, 30, 12, tzinfo=UTC)),
    ("b.heic", media.heic("2018:03:01 08:00:00", "-05:00"), "Composite:SubSecDateTimeOriginal", UTC,
     dt.datetime(2018, 3, 1, 13, 0, 0, tzinfo=UTC)),
    ("b2.heic", media.heic("2018:03:02 08:00:00", "+00:00", absolute_iloc=True), "Composite:SubSecDateTimeOriginal", UTC,
     dt.datetime(2018, 3, 2, 8, 0, 0, tzinfo=UTC)),
    ("c.dng", media.tiff_raw("2017:12:31 23:59:59", "+01:00"), "Composite:SubSecDateTimeOriginal", UTC,
     dt.datetime(2017, 12, 31, 22, 59, 59, tzinfo=UTC)),
    ("d.png", media.png("2016:02:29 12:00:00", "+09:00"), "Composite:SubSecDateTimeOriginal", UTC,
     dt.datetime(2016, 2, 29, 3, 0, 0, tzinfo=UTC)),
    ("e.webp", media.webp("2015:06:15 06:15:00", "-03:30"), "Composite:SubSecDateTimeOriginal", UTC,
     dt.datetime(2015, 6, 15, 9, 45, 0, tzinfo=UTC)),
    ("scan.tif", media.tiff_raw(None, written="2014:02:03 04:05:06"), "IFD0:ModifyDate", BERLIN_WINTER,
     dt.datetime(2014, 2, 3, 3, 5, 6, tzinfo=UTC)),
    ("front.mp4", media.mp4(dt.datetime(2020, 8, 9, 10, 11, 12, tzinfo=UTC)), "QuickTime:CreateDate", UTC,
     dt.datetime(2020, 8, 9, 10, 11, 12, tzinfo=UTC)),
    ("end.mov", media.mov(dt.datetime(2020, 8, 10, 10, 11, 12, tzinfo=UTC), moov_last=True), "QuickTime:CreateDate", UTC,
     dt.datetime(2020, 8, 10, 10, 11, 12, tzinfo=UTC)),
]


@pytest.mark.parametrize("name, sample, tag, zone, expected", FIRST_SAMPLES, ids=[row[0] for row in FIRST_SAMPLES])
def test_the_first_samples_hold_what_exiftool_reads(name, sample, tag, zone, expected):
    reading = media.exiftool_reading(sample, name.rsplit(".", 1)[1])
    if reading is None:
        pytest.skip("ExifTool is not installed: the recorded values stand")
    assert exif_time(reading[tag], zone) == expected
