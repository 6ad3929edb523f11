"""Real, small media files built in memory, with known capture dates, for tests of date reading.

Images are encoded by Pillow (HEIC by pillow-heif); MP4/MOV are written box by box with struct.
Each sample also carries a decoy date (DECOY_DATE) in a tag or box a careless reader might take
instead: EXIF DateTime (IFD0) in images, the track header (tkhd) in videos.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import tempfile
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


def plain_png() -> bytes:
    """An 8x8 PNG without any metadata (a screenshot, a scan)."""
    return _encode("PNG")


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


def apple_keys_meta(creation_date: str, full_box: bool = False) -> bytes:
    """moov/meta as an iPhone writes it: hdlr 'mdta', keys (com.apple.quicktime.creationdate and
    a decoy), ilst (item i holds key i's value in a 'data' box: type 1, UTF-8). A QuickTime meta
    has no version and flags; an ISO one (`full_box`) has."""
    hdlr = _box(b"hdlr", bytes(8) + b"mdta" + bytes(12) + b"\0")
    names = [b"com.apple.quicktime.make", b"com.apple.quicktime.creationdate"]
    keys = _box(b"keys", struct.pack(">II", 0, len(names)) + b"".join(
        struct.pack(">I", 8 + len(name)) + b"mdta" + name for name in names))
    values = [b"Apple", creation_date.encode()]
    ilst = _box(b"ilst", b"".join(_box(struct.pack(">I", index), _box(b"data", struct.pack(">II", 1, 0) + value))
                                  for index, value in enumerate(values, 1)))
    return _box(b"meta", (bytes(4) if full_box else b"") + hdlr + keys + ilst)


def _moov(creation: datetime | None, version: int, meta: bytes = b"") -> bytes:
    """moov: mvhd (first child, the movie's times), a trak whose tkhd carries DECOY_DATE, `meta`."""
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
    return _box(b"moov", mvhd + _box(b"trak", tkhd) + meta)


def _ftyp(brand: bytes) -> bytes:
    compatible = [brand] if brand == b"qt  " else [brand, b"iso2", b"mp41"]
    return _box(b"ftyp", brand + struct.pack(">I", 0) + b"".join(compatible))


def _mdat_header(payload: int, large: bool) -> bytes:
    if large:   # size 1: a 64-bit largesize follows the type
        return struct.pack(">I4sQ", 1, b"mdat", 16 + payload)
    return struct.pack(">I4s", 8 + payload, b"mdat")


def mp4(creation: datetime | None, *, moov_last: bool = False, mdat_bytes: int = 4096,
        brand: bytes = b"isom", version: int = 0, large_mdat: bool = False, meta: bytes = b"") -> bytes:
    """ftyp, moov (mvhd creation_time = creation, 0 if None; then `meta`), mdat of mdat_bytes zeros.

    moov_last: moov after mdat (a phone's file not made "fast start"); large_mdat: mdat with the
    64-bit largesize form; version 1: 64-bit times in mvhd and tkhd.
    """
    moov = _moov(creation, version, meta)
    mdat = _mdat_header(mdat_bytes, large_mdat) + bytes(mdat_bytes)
    return _ftyp(brand) + (mdat + moov if moov_last else moov + mdat)


def mov(creation: datetime | None, *, moov_last: bool = False, mdat_bytes: int = 4096,
        version: int = 0, large_mdat: bool = False, meta: bytes = b"") -> bytes:
    """As mp4(), as a QuickTime file: ftyp brand 'qt  ' (mvhd/tkhd layouts are the same)."""
    return mp4(creation, moov_last=moov_last, mdat_bytes=mdat_bytes, brand=b"qt  ",
               version=version, large_mdat=large_mdat, meta=meta)


def mp4_header_with_huge_mdat(creation: datetime | None, mdat_size: int) -> tuple[bytes, bytes]:
    """(prefix, suffix) of an MP4 too big for memory: write prefix, seek mdat_size, write suffix.

    prefix = ftyp + mdat header declaring mdat_size payload bytes (64-bit form when needed),
    suffix = moov; the file is sparse where the payload would be.
    """
    large = 8 + mdat_size > 0xFFFFFFFF
    return _ftyp(b"isom") + _mdat_header(mdat_size, large), _moov(creation, 0)


# --- RIFF AVI (Microsoft's AVI RIFF reference; OpenDML) ----------------------------------------

def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack("<4sI", kind, len(body)) + body + b"\0" * (len(body) & 1)   # word-aligned


def _riff_list(kind: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", kind + b"".join(chunks))


def avi(idit: str | None = None, icrd: str | None = None, *, info_after_movi: bool = False,
        movi_bytes: int = 1024) -> bytes:
    """A one-stream AVI: hdrl (avih, strl, and the camera's IDIT `idit` when given), LIST INFO with
    ICRD `icrd` (before movi, or after it and idx1 when `info_after_movi`), movi of one frame."""
    avih = struct.pack("<14I", 40000, 0, 0, 0x10, 1, 0, 1, movi_bytes, 8, 8, 0, 0, 0, 0)   # has index
    strh = struct.pack("<4s4sIHHIIIIIIIIhhhh", b"vids", b"MJPG", 0, 0, 0, 0, 1, 25, 0, 1, movi_bytes,
                       0xFFFFFFFF, 0, 0, 0, 8, 8)
    strf = struct.pack("<IiiHH4sIiiII", 40, 8, 8, 1, 24, b"MJPG", 192, 0, 0, 0, 0)
    hdrl = [_chunk(b"avih", avih), _riff_list(b"strl", _chunk(b"strh", strh), _chunk(b"strf", strf))]
    if idit is not None:
        hdrl.append(_chunk(b"IDIT", idit.encode("latin-1")))
    info = _riff_list(b"INFO", _chunk(b"ISFT", b"media_samples\0"),
                      *([_chunk(b"ICRD", icrd.encode("latin-1") + b"\0")] if icrd is not None else []))
    movi = _riff_list(b"movi", _chunk(b"00dc", bytes(movi_bytes)))
    idx1 = _chunk(b"idx1", struct.pack("<4sIII", b"00dc", 0x10, 4, movi_bytes))
    body = b"AVI " + _riff_list(b"hdrl", *hdrl) + (movi + idx1 + info if info_after_movi else info + movi + idx1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- Matroska / WebM (RFC 9559; EBML, RFC 8794) -----------------------------------------------

MATROSKA_EPOCH = datetime(2001, 1, 1, tzinfo=timezone.utc)   # DateUTC counts nanoseconds from here


def _ebml(element_id: int, body: bytes) -> bytes:
    """An EBML element: its ID's bytes, an 8-byte size (marker 0x01), the body."""
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + b"\x01" + len(body).to_bytes(7, "big") + body


def _uint(element_id: int, value: int, width: int = 4) -> bytes:
    return _ebml(element_id, value.to_bytes(width, "big"))


def matroska(date_utc: datetime | None, *, doctype: str = "matroska", cluster_bytes: int = 1024) -> bytes:
    """EBML header, then a Segment: Info (TimecodeScale, MuxingApp, WritingApp, DateUTC = date_utc
    when given, Duration), Tags with an ENCODER tag, one Cluster."""
    header = _ebml(0x1A45DFA3, _uint(0x4286, 1, 1) + _uint(0x42F7, 1, 1) + _uint(0x42F2, 4, 1) + _uint(0x42F3, 8, 1)
                   + _ebml(0x4282, doctype.encode()) + _uint(0x4287, 4, 1) + _uint(0x4285, 2, 1))
    info = _uint(0x2AD7B1, 1_000_000) + _ebml(0x4D80, b"media_samples") + _ebml(0x5741, b"media_samples")
    if date_utc is not None:
        nanoseconds = (date_utc - MATROSKA_EPOCH) // timedelta(microseconds=1) * 1000
        info += _ebml(0x4461, nanoseconds.to_bytes(8, "big", signed=True))
    info += _ebml(0x4489, struct.pack(">d", 1000.0))
    encoder = _ebml(0x67C8, _ebml(0x45A3, b"ENCODER") + _ebml(0x4487, b"media_samples"))
    tags = _ebml(0x1254C367, _ebml(0x7373, _ebml(0x63C0, b"") + encoder))
    cluster = _ebml(0x1F43B675, _uint(0xE7, 0, 1) + _ebml(0xA3, b"\x81\x00\x00\x80" + bytes(cluster_bytes)))
    return header + _ebml(0x18538067, _ebml(0x1549A966, info) + tags + cluster)


# --- ExifTool, the reference reader --------------------------------------------------------------

def exiftool_reading(data: bytes, suffix: str) -> dict | None:
    """What ExifTool (`exiftool -j -G1 -n`) reads in a sample, None when it is not installed
    (CLOUD_TRANSFER_REQUIRE_EXIFTOOL=1, as .ci/run sets, makes its absence an error)."""
    if shutil.which("exiftool") is None:
        if os.environ.get("CLOUD_TRANSFER_REQUIRE_EXIFTOOL") == "1":
            raise RuntimeError("exiftool is required here (Debian: apt-get install libimage-exiftool-perl)")
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "sample." + suffix)
        with open(path, "wb") as out:
            out.write(data)
        found = subprocess.run(["exiftool", "-j", "-G1", "-n", path], capture_output=True, text=True, check=True)
    (reading,) = json.loads(found.stdout)
    return reading


# --- XMP and IPTC in JPEG (XMP Specification Part 3, 1.1.3; IPTC IIM 4.2 in Photoshop's APP13) ----

XMP_NAMESPACES = {"exif": "http://ns.adobe.com/exif/1.0/", "photoshop": "http://ns.adobe.com/photoshop/1.0/",
                  "xmp": "http://ns.adobe.com/xap/1.0/", "xmpNote": "http://ns.adobe.com/xmp/note/"}


def xmp_packet(**properties: str) -> bytes:
    """An XMP packet with one rdf:Description holding `properties` ("exif_DateTimeOriginal" for
    exif:DateTimeOriginal) as attributes."""
    names = " ".join(f'xmlns:{prefix}="{uri}"' for prefix, uri in XMP_NAMESPACES.items())
    values = " ".join(f'{name.replace("_", ":", 1)}="{value}"' for name, value in properties.items())
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
            f'<rdf:Description rdf:about="" {names} {values}/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>').encode()


def _app(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def _with_segments(jpeg_bytes: bytes, *segments: bytes) -> bytes:
    return jpeg_bytes[:2] + b"".join(segments) + jpeg_bytes[2:]   # right after SOI


def jpeg_with_xmp(extended: bool = False, **properties: str) -> bytes:
    """A JPEG without EXIF whose XMP holds `properties`; `extended`: they sit in an extended-XMP
    segment (as writers do when the main packet is full), the main packet pointing to it by GUID."""
    if not extended:
        return _with_segments(jpeg(None), _app(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + xmp_packet(**properties)))
    import hashlib
    full = xmp_packet(**properties)
    guid = hashlib.md5(full).hexdigest().upper().encode()
    main = xmp_packet(xmpNote_HasExtendedXMP=guid.decode())
    half = len(full) // 2
    parts = [_app(0xE1, b"http://ns.adobe.com/xmp/extension/\0" + guid + struct.pack(">II", len(full), at) + full[at:end])
             for at, end in ((0, half), (half, len(full)))]
    return _with_segments(jpeg(None), _app(0xE1, b"http://ns.adobe.com/xap/1.0/\0" + main), *parts)


def jpeg_with_iptc(date: str, time: str | None = None) -> bytes:
    """A JPEG without EXIF whose IPTC (APP13, Photoshop resource 0x0404) has 2:55 DateCreated
    `date` (CCYYMMDD) and 2:60 TimeCreated `time` (HHMMSS±HHMM) when given."""
    def dataset(number: int, value: bytes) -> bytes:
        return struct.pack(">BBBH", 0x1C, 2, number, len(value)) + value
    iim = dataset(0, b"\0\x04") + dataset(55, date.encode()) + (dataset(60, time.encode()) if time else b"")
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iim)) + iim + b"\0" * (len(iim) & 1)
    return _with_segments(jpeg(None), _app(0xED, b"Photoshop 3.0\0" + resource))


# --- RAW containers ExifRead does not open --------------------------------------------------------

def _tiff(taken: str | None = None, written: str | None = None) -> bytes:
    """A bare TIFF block (no "Exif" prefix): IFD0 DateTime `written`, EXIF IFD DateTimeOriginal `taken`."""
    exif = Image.Exif()
    if written is not None:
        exif[_DATETIME] = written
    if taken is not None:
        exif[_EXIF_IFD] = {_DATETIME_ORIGINAL: taken}
    return exif.tobytes()[6:]


def raf(taken: str) -> bytes:
    """Fujifilm RAF: the 'FUJIFILMCCD-RAW' header whose offsets 84/88 place an embedded JPEG
    (holding the EXIF), 92/96 the CFA header, 100/104 the CFA (a TIFF block), as ExifTool reads it."""
    embedded = jpeg(taken)
    header = b"FUJIFILMCCD-RAW 0201FF383501" + b"X-T1".ljust(32, b"\0") + b"0100" + bytes(20)
    at = 160
    cfa_header, cfa = bytes(4), b"II*\0" + struct.pack("<IHI", 8, 0, 0)
    header += struct.pack(">6I", at, len(embedded), at + len(embedded), len(cfa_header),
                          at + len(embedded) + len(cfa_header), len(cfa))
    return header.ljust(at, b"\0") + embedded + cfa_header + cfa


def mrw(taken: str) -> bytes:
    """Minolta MRW: '\\0MRM' and the blocks PRD (picture dimensions) and TTW (a TIFF block with
    the EXIF), then the raw data."""
    tiff = _tiff(taken, DECOY_EXIF)
    tiff += b"\0" * (len(tiff) & 1)
    prd = struct.pack(">8sHHHHBBBBHH", b"21810002", 8, 8, 8, 8, 12, 12, 0x59, 0, 1, 0)
    blocks = b"\0PRD" + struct.pack(">I", len(prd)) + prd + b"\0TTW" + struct.pack(">I", len(tiff)) + tiff
    return b"\0MRM" + struct.pack(">I", len(blocks)) + blocks + bytes(64)


def _ciff_heap(entries: list[tuple[int, bytes]]) -> bytes:
    """A CIFF heap: the records' data, the table (count, then tag, size, offset of each), the
    table's offset in its last 4 bytes."""
    body, table = b"", []
    for tag, data in entries:
        table.append(struct.pack("<HII", tag, len(data), len(body)))
        body += data + b"\0" * (len(data) & 1)
    return body + struct.pack("<H", len(table)) + b"".join(table) + struct.pack("<I", len(body))


def crw(taken: datetime, raw_bytes: int = 0) -> bytes:
    """Canon CRW (CIFF, no EXIF): ImageProps (0x300a) holding TimeStamp (0x180e: seconds since
    1970 of the camera's wall clock, a zone code, zone info); `raw_bytes` of raw data before it
    (the heap's table, which finds the records, sits at the file's end)."""
    seconds = int((taken.replace(tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())
    props = _ciff_heap([(0x180E, struct.pack("<IiI", seconds, 0, 0))])
    root = _ciff_heap([(0x080A, b"Canon\0Canon EOS D30\0"), *([(0x2005, bytes(raw_bytes))] if raw_bytes else []),
                       (0x300A, props)])
    return b"II" + struct.pack("<I", 26) + b"HEAPCCDR" + struct.pack("<I", 0x00010002) + bytes(8) + root


CANON_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")


def cr3(taken: str) -> bytes:
    """Canon CR3 (ISO BMFF, brand 'crx '): moov/uuid(Canon) with CMT1 (IFD0: the decoy DateTime)
    and CMT2 (the EXIF IFD as a TIFF block of its own: DateTimeOriginal)."""
    cmt2 = Image.Exif()
    cmt2[_DATETIME_ORIGINAL] = taken
    canon = _box(b"uuid", CANON_UUID + _box(b"CNCV", b"CanonCR3_001/00.09.00/00.00.00")
                 + _box(b"CMT1", _tiff(written=DECOY_EXIF)) + _box(b"CMT2", cmt2.tobytes()[6:]))
    return _box(b"ftyp", b"crx " + struct.pack(">I", 1) + b"crx isom") + _box(b"moov", canon) + _box(b"mdat", bytes(64))


# --- AVCHD (MPEG-2 TS / BDAV M2TS with H.264; the recording time in SEI "MDPM" user data) ----------

MDPM_UUID = bytes.fromhex("17ee8c60f84d11d98cd60800200c9a66")


def _mpeg_crc32(data: bytes) -> int:
    """CRC-32/MPEG-2 (polynomial 0x04C11DB7, no reflection), as PSI tables carry it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def _psi(table_id: int, extension: int, body: bytes) -> bytes:
    section = struct.pack(">BHHBBB", table_id, 0xB000 | (len(body) + 9), extension, 0xC1, 0, 0) + body
    return b"\0" + section + struct.pack(">I", _mpeg_crc32(section))   # pointer_field 0


def _ts_packets(pid: int, payload: bytes, m2ts: bool) -> bytes:
    """TS packets of one PID carrying `payload` (the first with payload_unit_start), the last
    padded with an adaptation field; M2TS puts a 4-byte arrival time before each packet."""
    out, counter, first = b"", 0, True
    while payload or first:
        piece, payload = payload[:184], payload[184:]
        header = struct.pack(">BHB", 0x47, (0x4000 if first else 0) | pid, 0x10 | counter)
        if len(piece) < 184:   # adaptation field of stuffing bytes
            stuffing = 184 - len(piece) - 1
            header = header[:3] + bytes([0x30 | counter]) + bytes([stuffing]) + (b"\0" + b"\xff" * (stuffing - 1) if stuffing else b"")
        out += (struct.pack(">I", counter * 1000) if m2ts else b"") + header + piece
        counter, first = (counter + 1) & 15, False
    return out


def _escape_emulation(rbsp: bytes) -> bytes:
    """H.264 emulation prevention: 00 00 followed by 00-03 gets a 03 between."""
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _bcd(number: int) -> int:
    return (number // 10) << 4 | number % 10


def avchd(taken: datetime | None, zone_byte: int = 0x12, *, m2ts: bool = True, lead_bytes: int = 150) -> bytes:
    """An AVCHD clip's start as camcorders write it: PAT, PMT (one H.264 stream, PID 0x1011),
    then the first video PES: an access unit delimiter, `lead_bytes` of filler NAL (so that the SEI
    straddles two TS packets), and an SEI with MDPM user data: TimeCode (0x13, zeros: the
    encoder must escape them), DateTimeOriginal (0x18: `zone_byte`, year, month; 0x19: day and
    time, in BCD, the camera's wall clock; `zone_byte` 0x12 is +09:00), when `taken` is given."""
    pat = _psi(0x00, 1, struct.pack(">HH", 1, 0xE000 | 0x100))
    pmt = _psi(0x02, 1, struct.pack(">HH", 0xE000 | 0x1011, 0xF000) + struct.pack(">BHH", 0x1B, 0xE000 | 0x1011, 0xF000))
    entries = [(0x13, bytes(4))]
    if taken is not None:
        entries += [(0x18, bytes([zone_byte, _bcd(taken.year // 100), _bcd(taken.year % 100), _bcd(taken.month)])),
                    (0x19, bytes([_bcd(taken.day), _bcd(taken.hour), _bcd(taken.minute), _bcd(taken.second)]))]
    user_data = MDPM_UUID + b"MDPM" + bytes([len(entries)]) + b"".join(bytes([tag]) + data for tag, data in entries)
    sei = bytes([0x06, 5, len(user_data)]) + user_data + b"\x80"
    units = b"\0\0\0\x01\x09\xf0" + b"\0\0\x01\x0c" + b"\xff" * lead_bytes + b"\0\0\x01" + _escape_emulation(sei)
    pes = b"\0\0\x01\xe0\0\0" + b"\x80\x80\x05" + b"\x21\0\x01\0\x01" + units   # PTS only
    return (_ts_packets(0, pat, m2ts) + _ts_packets(0x100, pmt, m2ts) + _ts_packets(0x1011, pes, m2ts)
            + _ts_packets(0x1011, b"\0\0\x01\xe0\0\0\x80\0\0" + bytes(2000), m2ts))


def x3f(taken: datetime | None = None, embedded_taken: str | None = None, thumbnail: bool = False) -> bytes:
    """Sigma/Foveon X3F: the 'FOVb' header (version 2.0), the sections, and at the end their
    directory ('SECd': offset, length, type of each) whose offset is the file's last 4 bytes. A
    PROP section ('SECp': UTF-16 name/value pairs) with TIME = `taken` (the camera's wall clock
    as Unix seconds) when given; an IMA2 section (a JPEG preview with EXIF DateTimeOriginal
    `embedded_taken`, as newer cameras write) when given, and after it a small IMA2 thumbnail
    without EXIF when `thumbnail`."""
    header = b"FOVb" + struct.pack("<I", 0x00020000) + bytes(16) + struct.pack("<IIII", 0, 8, 8, 0) + bytes(32 + 64)
    sections: list[tuple[bytes, bytes]] = []
    if taken is not None:
        seconds = int((taken.replace(tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)).total_seconds())
        pairs = [("CAMMANUF", "SIGMA"), ("TIME", str(seconds))]
        chars, table = "", b""
        for name, value in pairs:
            table += struct.pack("<II", len(chars), len(chars) + len(name) + 1)
            chars += name + "\0" + value + "\0"
        sections.append((b"PROP", b"SECp" + struct.pack("<IIIII", 0x00020000, len(pairs), 0, 0, len(chars))
                         + table + chars.encode("utf-16-le")))
    if embedded_taken is not None:
        preview = jpeg(embedded_taken)
        if preview[2:4] == b"\xff\xe0":   # Sigma's JpgFromRaw starts with its EXIF segment: no JFIF APP0
            preview = preview[:2] + preview[4 + struct.unpack(">H", preview[4:6])[0]:]
        sections.append((b"IMA2", b"SECi" + struct.pack("<IIIIII", 0x00020000, 2, 18, 8, 8, 24) + preview))
    if thumbnail:
        sections.append((b"IMA2", b"SECi" + struct.pack("<IIIIII", 0x00020000, 2, 18, 8, 8, 24) + jpeg(None)))
    body, directory = header, b""
    for kind, data in sections:
        directory += struct.pack("<II4s", len(body), len(data), kind)
        body += data
    return body + b"SECd" + struct.pack("<II", 0x00020000, len(sections)) + directory + struct.pack("<I", len(body))
