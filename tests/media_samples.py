"""Real, small media files built in memory, with known capture dates, for tests of date reading.

Images are encoded by Pillow (HEIC by pillow-heif); MP4/MOV are written box by box with struct.
Each sample also carries a decoy date (DECOY_DATE) in a tag or box a careless reader might take
instead: EXIF DateTime (IFD0) in images, the track header (tkhd) in videos.
"""
from __future__ import annotations

import io
import struct
from datetime import datetime, timedelta, timezone

from PIL import Image

DATE_1904 = datetime(1904, 1, 1, tzinfo=timezone.utc)   # epoch of ISO BMFF / QuickTime times
DECOY_DATE = datetime(2001, 1, 1, tzinfo=timezone.utc)
DECOY_EXIF = "2001:01:01 00:00:00"   # DECOY_DATE as EXIF writes it

_EXIF_IFD, _DATETIME = 0x8769, 0x0132
_DATETIME_ORIGINAL, _OFFSET_TIME_ORIGINAL, _SUBSEC_TIME_ORIGINAL = 0x9003, 0x9011, 0x9291


def _exif(taken: str | None, offset: str | None, subsec: str | None = None, written: str | None = DECOY_EXIF) -> bytes:
    """'Exif\\0\\0' + TIFF: IFD0 with DateTime (`written`: the decoy unless told), an EXIF IFD with
    the capture date."""
    sub = {_DATETIME_ORIGINAL: taken, _OFFSET_TIME_ORIGINAL: offset, _SUBSEC_TIME_ORIGINAL: subsec}
    exif = Image.Exif()
    if written is not None:
        exif[_DATETIME] = written
    exif[_EXIF_IFD] = {tag: value for tag, value in sub.items() if value is not None}
    return exif.tobytes()   # a dict value becomes a sub-IFD (Pillow 10.0 drops get_ifd() edits)


def _encode(fmt: str, exif: bytes | None = None, **options) -> bytes:
    out = io.BytesIO()
    if exif is not None:
        options["exif"] = exif
    Image.new("RGB", (8, 8), (200, 60, 30)).save(out, fmt, **options)
    return out.getvalue()


def jpeg(taken: str | None, offset: str | None = None, *, subsec: str | None = None,
         written: str | None = DECOY_EXIF) -> bytes:
    """8x8 JPEG by Pillow; EXIF DateTimeOriginal=taken (+ OffsetTimeOriginal, SubSecTimeOriginal),
    IFD0 DateTime=written.

    taken and written None: a JPEG with no EXIF segment at all (offset and subsec are then ignored).
    """
    if taken is None and written in (None, DECOY_EXIF):   # jpeg(None): no EXIF at all
        return _encode("JPEG")
    return _encode("JPEG", _exif(taken, offset, subsec, written))


def jpeg_broken_exif() -> bytes:
    """A decodable 8x8 JPEG whose APP1 Exif segment is corrupt.

    Valid 'Exif\\0\\0' and TIFF headers, but IFD0's DateTime value and its EXIF IFD pointer point
    far past the segment's end and the next-IFD offset is garbage; the string
    '2023:06:15 12:34:56' sits in the segment, reachable by no pointer.
    """
    tiff = b"II*\x00" + struct.pack("<IH", 8, 2)
    tiff += struct.pack("<HHII", _DATETIME, 2, 20, 0x7FFFFFF0)   # ASCII, 20 bytes, offset past end
    tiff += struct.pack("<HHII", _EXIF_IFD, 4, 1, 0xFFFFFF00)    # LONG pointer past end
    tiff += struct.pack("<I", 0xDEADBEEF) + b"2023:06:15 12:34:56\x00"
    segment = b"Exif\x00\x00" + tiff
    plain = _encode("JPEG")
    return plain[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + plain[2:]


def heic(taken: str, offset: str | None = None, *, absolute_iloc: bool = False) -> bytes:
    """8x8 HEIC by pillow-heif (libheif + x265), ftyp brand 'heic', with the EXIF of jpeg().

    libheif locates items by iloc base_offset (extent_offset 0). absolute_iloc=True rewrites the
    iloc in place to base_offset 0 and extent_offset = file position, the same item positions
    written the way exifread (3.5) expects; it ignores base_offset.
    """
    from pillow_heif import register_heif_opener

    register_heif_opener()
    data = _encode("HEIF", _exif(taken, offset))
    return _iloc_absolute(data) if absolute_iloc else data


def _children(data: bytes | bytearray, start: int, end: int):
    """(type, body start, box end) of the boxes in data[start:end] (32-bit sizes only)."""
    while start < end:
        size, kind = struct.unpack_from(">I4s", data, start)
        yield kind, start + 8, start + size
        start += size


def _iloc_absolute(data: bytes) -> bytes:
    """data with each iloc extent_offset made absolute (base_offset added in) and base_offset 0."""
    buf = bytearray(data)
    meta = next((b, e) for k, b, e in _children(buf, 0, len(buf)) if k == b"meta")
    pos = next(b for k, b, _ in _children(buf, meta[0] + 4, meta[1]) if k == b"iloc")
    version = buf[pos]
    off_size, len_size = buf[pos + 4] >> 4, buf[pos + 4] & 15
    base_size, idx_size = buf[pos + 5] >> 4, (buf[pos + 5] & 15) if version else 0
    count, pos = struct.unpack_from(">H", buf, pos + 6)[0], pos + 8
    if base_size == 0 or off_size < 4 or version > 1:
        raise ValueError("unexpected iloc layout from libheif")
    for _ in range(count):
        if version and struct.unpack_from(">H", buf, pos + 2)[0] != 0:   # construction_method
            raise ValueError("iloc item not located by file offset")
        pos += 2 + (2 if version else 0) + 2   # item_ID, construction_method (v1), data_ref_index
        base = int.from_bytes(buf[pos:pos + base_size], "big")
        buf[pos:pos + base_size] = bytes(base_size)
        extents, pos = struct.unpack_from(">H", buf, pos + base_size)[0], pos + base_size + 2
        for _ in range(extents):
            pos += idx_size
            extent = int.from_bytes(buf[pos:pos + off_size], "big") + base
            buf[pos:pos + off_size] = extent.to_bytes(off_size, "big")
            pos += off_size + len_size
    return bytes(buf)


def tiff_raw(taken: str | None, offset: str | None = None, written: str | None = DECOY_EXIF) -> bytes:
    """8x8 TIFF by Pillow, as DNG/NEF/ARW are TIFF containers: IFD0 pointing to an EXIF sub-IFD."""
    return _encode("TIFF", _exif(taken, offset, written=written))


def png(taken: str, offset: str | None = None) -> bytes:
    """8x8 PNG by Pillow with an eXIf chunk (raw TIFF, no 'Exif\\0\\0' prefix)."""
    return _encode("PNG", _exif(taken, offset))


def webp(taken: str, offset: str | None = None) -> bytes:
    """8x8 lossy WebP by Pillow: VP8X, VP8, then an EXIF chunk (raw TIFF, as the spec says)."""
    return _encode("WEBP", _exif(taken, offset))


# --- ISO BMFF (MP4) / QuickTime (MOV), ISO/IEC 14496-12 layouts ------------------------------

_MATRIX = struct.pack(">9i", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)   # identity


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), kind) + body


def _seconds_1904(moment: datetime | None) -> int:
    """Seconds since 1904-01-01 UTC; 0 for None; a naive datetime is taken as UTC."""
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int((moment - DATE_1904) // timedelta(seconds=1))


def _times(version: int, flags: int, *values: int) -> bytes:
    """Version, flags, then creation/modification times (u32 for version 0, u64 for version 1)."""
    if version not in (0, 1):
        raise ValueError("mvhd/tkhd version is 0 or 1")
    if not all(0 <= v < 2 ** (64 if version else 32) for v in values):
        raise ValueError("times before 1904, or (version 0) after 2040: use version=1")
    times = struct.pack(">QQ" if version else ">II", *values)
    return struct.pack(">I", version << 24 | flags) + times


def _moov(creation: datetime | None, version: int) -> bytes:
    """moov: mvhd (first child, the movie's times) and a trak whose tkhd carries DECOY_DATE."""
    created = _seconds_1904(creation)
    modified = created + 60 if creation is not None else 0
    duration = ">Q" if version else ">I"
    mvhd = _box(b"mvhd", _times(version, 0, created, modified)
                + struct.pack(">I", 1000) + struct.pack(duration, 1000)   # timescale, 1 s
                + struct.pack(">ih10x", 0x10000, 0x100)     # rate 1.0, volume 1.0, reserved
                + _MATRIX + bytes(24)                       # matrix, pre_defined[6]
                + struct.pack(">I", 2))                     # next_track_ID
    decoy = _seconds_1904(DECOY_DATE)
    tkhd = _box(b"tkhd", _times(version, 7, decoy, decoy)   # flags: enabled, in movie, preview
                + struct.pack(">I4x", 1) + struct.pack(duration, 1000)    # track_ID, duration
                + struct.pack(">8xhhh2x", 0, 0, 0)          # layer, alternate_group, volume
                + _MATRIX + struct.pack(">II", 8 << 16, 8 << 16))         # width, height 8.0
    return _box(b"moov", mvhd + _box(b"trak", tkhd))


def _ftyp(brand: bytes) -> bytes:
    compatible = [brand] if brand == b"qt  " else [brand, b"iso2", b"mp41"]
    return _box(b"ftyp", brand + struct.pack(">I", 0) + b"".join(compatible))


def _mdat_header(payload: int, large: bool) -> bytes:
    if large:   # size 1: a 64-bit largesize follows the type
        return struct.pack(">I4sQ", 1, b"mdat", 16 + payload)
    return struct.pack(">I4s", 8 + payload, b"mdat")


def mp4(creation: datetime | None, *, moov_last: bool = False, mdat_bytes: int = 4096,
        brand: bytes = b"isom", version: int = 0, large_mdat: bool = False) -> bytes:
    """ftyp, moov (mvhd creation_time = creation, 0 if None), mdat of mdat_bytes zeros.

    moov_last: moov after mdat (a phone's file not made "fast start"); large_mdat: mdat with the
    64-bit largesize form; version 1: 64-bit times in mvhd and tkhd.
    """
    moov = _moov(creation, version)
    mdat = _mdat_header(mdat_bytes, large_mdat) + bytes(mdat_bytes)
    return _ftyp(brand) + (mdat + moov if moov_last else moov + mdat)


def mov(creation: datetime | None, *, moov_last: bool = False, mdat_bytes: int = 4096,
        version: int = 0, large_mdat: bool = False) -> bytes:
    """As mp4(), as a QuickTime file: ftyp brand 'qt  ' (mvhd/tkhd layouts are the same)."""
    return mp4(creation, moov_last=moov_last, mdat_bytes=mdat_bytes, brand=b"qt  ",
               version=version, large_mdat=large_mdat)


def mp4_header_with_huge_mdat(creation: datetime | None, mdat_size: int) -> tuple[bytes, bytes]:
    """(prefix, suffix) of an MP4 too big for memory: write prefix, seek mdat_size, write suffix.

    prefix = ftyp + mdat header declaring mdat_size payload bytes (64-bit form when needed),
    suffix = moov; the file is sparse where the payload would be.
    """
    large = 8 + mdat_size > 0xFFFFFFFF
    return _ftyp(b"isom") + _mdat_header(mdat_size, large), _moov(creation, 0)
