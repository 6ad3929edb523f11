#!/usr/bin/env python3
"""cloud_transfer — copy a photo library from an Amazon S3 bucket into Google Drive, exactly once.

Run it once from a terminal, re-run it after a failure, or schedule it with cron until the copy is
complete: every run lists the bucket, skips what earlier runs finished, and uploads the rest.

    python cloud_transfer.py [transfer|verify|rollback|status|auth] [options]

Commands (no command means ``transfer``):
    transfer  copy new and changed photos/videos from S3 into a Drive folder, mirroring key prefixes
    verify    compare S3 with the Drive folder (present once, size and MD5 equal); writes nothing
    rollback  move to the trash what this tool uploaded (per the checkpoint); ``--permanent`` deletes
    status    summarise what the checkpoint says
    auth      run the Google consent in a browser and store token.json (0600)

Exit codes are stable (cron scripts may branch on them): the EXIT_CODES table below, which
``--help`` prints and the README's table is checked against.

How to read this file: sections run in data-flow order, each opened by a three-line banner, so
``grep -n '^# .*####' cloud_transfer.py`` prints the table of contents:
constants → errors → configuration → output → retry and pacing → local files → S3 source →
Google Drive destination → checkpoint → transfer engine → commands → main.

Design in one paragraph: S3Source and DriveDestination are the only code that touches their SDKs;
each turns the SDK's errors into a Verdict (retry / skip / fail / stop). Every Drive file the tool
creates carries its provenance in ``appProperties`` (a hash of bucket+key, the source ETag and the
MD5), so Drive itself is the source of truth and the checkpoint is a fast cache and audit trail.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import bisect
import contextlib
import dataclasses
import datetime as dt
import difflib
import email.errors
import email.header
import errno
import fcntl
import hashlib
import html
import heapq
import http.client
import io
import itertools
import json
import logging
import math
import mimetypes
import os
import queue
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import unicodedata
import uuid
import zlib
import warnings
from array import array
from collections import Counter, defaultdict, deque
from enum import IntEnum
from pathlib import Path
from typing import Any, Callable, Collection, Iterable, Iterator

# google-api-core warns on every import when the running Python nears or passes its end of life (3.10
# today, 3.11 from mid-2027); the tool supports 3.10+, and the warning would break one-line errors.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\._python_version_support")

try:  # after the filter above, as the Google imports must be
    import boto3  # noqa: E402
    import botocore.config
    import botocore.exceptions
    import botocore.handlers
    import dotenv  # noqa: F401  (imported where used; checked here so a missing one fails at once)
    import exifread  # noqa: F401
    import httplib2
    import tqdm  # noqa: F401
    import urllib3
    from google.auth.exceptions import GoogleAuthError, RefreshError, TransportError
    from google.oauth2.credentials import Credentials
    from google_auth_httplib2 import AuthorizedHttp
    from googleapiclient.discovery import build_from_document
    from googleapiclient.discovery_cache import get_static_doc
    from googleapiclient.errors import HttpError
    from googleapiclient.http import MediaIoBaseDownload, MediaIoBaseUpload, build_http
except ImportError as missing:   # run outside its virtualenv: one line, exit 2 (ExitCode.USAGE)
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.stderr.write(f"error: the Python package {missing.name or missing} is missing for {sys.executable}: run "
                     f"'pip install -r requirements.txt' in {_here} (inside its virtualenv, see the README), or "
                     "run the script with the virtualenv's python\n")
    raise SystemExit(2) from None

__version__ = "1.0.0"

#######################################################################
# Constants ###########################################################
#######################################################################
# Defaults and fixed facts of the services. Units are in the names.

DEFAULT_FOLDER_NAME = "Amazon Photos Transfer"
DEFAULT_CHECKPOINT = "cloud_transfer_checkpoint.json"
DEFAULT_CREDENTIALS = "credentials.json"
DEFAULT_TOKEN = "token.json"
DEFAULT_ENV_FILE = ".env"
DEFAULT_WORKERS = 4
DEFAULT_CHUNK_MIB = 64.0
DEFAULT_PAGE_SIZE = 1000

#: The placeholders of credentials.json.example and .env.example: left in place, they are named as such
#: rather than sent to Google or S3 for an answer about a client or bucket that does not exist.
EXAMPLE_CLIENT_IDS = ("1234567890-abcdefg.apps.googleusercontent.com",)
EXAMPLE_CLIENT_SECRET = "GOCSPX-your-client-secret"
EXAMPLE_ENV_VALUES = {"AWS_ACCESS_KEY_ID": "your_access_key", "AWS_SECRET_ACCESS_KEY": "your_secret_key",
                      "S3_BUCKET_NAME": "your-bucket-name"}


#: Drive rejects non-final resumable chunks that are not a multiple of 256 KiB.
#: https://developers.google.com/drive/api/guides/manage-uploads#resumable
CHUNK_QUANTUM_BYTES = 256 * 1024
#: Drive suggests a single multipart request up to 5 MB; one request per small photo decides wall time.
SINGLE_REQUEST_MAX_BYTES = 5 * 1024 * 1024
DOWNLOAD_BLOCK_BYTES = 1024 * 1024
STREAM_SEND_BLOCK_BYTES = 1024 * 1024   #: block read from the staging file per send() of a chunk
#: A streamed upload's staging file holds this many chunks at most: the one being sent and what the
#: download has fetched ahead of it, so temporary disk is bounded whatever the object's size.
STAGING_WINDOW_CHUNKS = 3

SCOPE_DRIVE_FILE = "https://www.googleapis.com/auth/drive.file"  #: sees only what the tool created
SCOPE_DRIVE_FULL = "https://www.googleapis.com/auth/drive"
FOLDER_MIME = "application/vnd.google-apps.folder"

VERIFY_DETAILS = 100    #: problems of each kind verify lists (all are counted)
VERIFY_SHOWN = 5        #: of those, the ones a terminal shows
DATE_SOURCES = ("auto", "exif", "metadata", "s3")    #: --date-from
ORDERS = ("key", "oldest", "newest", "smallest", "largest")   #: --order
LAYOUT_MIRROR, LAYOUT_FLAT = "mirror", "flat"         #: --layout, besides date:<pattern>
LAYOUT_PATTERNS = ("YYYY", "YYYY/MM", "YYYY/MM/DD")   #: folders of --layout date:<pattern>

#: appProperties keys written on every file the tool creates (Drive: <= 124 bytes per key+value).
PROP_SOURCE = "ctSrc"   # sha256(s3://bucket/key)[:32]: which object this file is a copy of
PROP_ETAG = "ctEtag"    # the source ETag when copied: a changed object gets a new revision
PROP_MD5 = "ctMd5"      # MD5 of the bytes sent: lets a later run check the file without the source
PROP_RUN = "ctRun"      # the run that uploaded it: rollback takes only its own run's files
PROP_LEASE = "ctLease"  # on the root: "<expiry epoch s> <run id> <pid> <host>" of the one run that writes
PROP_ROOT = "ctRoot"    # on the root folder: sha256(the configured folder name)[:32], found wherever it is
PROP_NEXT = "ctNext"    # on a folder Drive calls full: the folder beside it where its path continues
PROP_MORE_OF = "ctMoreOf"   # on such a continuation: the id of the path's first folder

DRIVE_FILE_FIELDS = ("id,name,mimeType,parents,size,md5Checksum,appProperties,createdTime,modifiedTime,trashed,driveId,"
                     "headRevisionId")
DRIVE_LIST_FIELDS = f"nextPageToken,incompleteSearch,files({DRIVE_FILE_FIELDS})"
REVISION_CHUNK_BYTES = 32 * 1024 * 1024   # a rollback's download of an earlier revision, per request
DRIVE_CHANGES_FIELDS = "nextPageToken,newStartPageToken,changes(fileId,removed,file(id,mimeType,parents,trashed))"
GENERATED_IDS_PER_CALL = 1000   #: files.generateIds' maximum: one request per 1,000 creates

#: 2: an entry's Drive id is stored as "id" (1: "drive_id"), and a done entry leaves out an MD5 equal
#: to its ETag, a first attempt and its time. Version 1 files are read as they are.
CHECKPOINT_VERSION = 2
FLUSH_EVERY_N = 500        #: journal lines buffered before an fsync'd append
FLUSH_INTERVAL_S = 10.0    #: ... or this long, whichever comes first
COMPACT_AFTER_JOURNAL_LINES = 1000   #: fold the journal in anyway once it is this long (runs that change nothing)
COMPACT_AFTER_OBJECTS = 100_000      #: ... and mid-run once this many outcomes wait in memory (a first run's)
DRIVE_PAGE_SIZE = 1000              #: files.list's largest page
DRIVE_PARALLEL_REQUESTS = 8          #: folders `verify` lists, files `rollback` removes, at a time
SNAPSHOT_READ_BYTES = 1024 * 1024   #: snapshot lines read (and parsed by one json.loads) at a time
RETRY_NOTICE_S = 30.0      #: "cannot reach …: retrying" at most this often
LOG_INTERVAL_S = 30.0      #: progress log line interval (CLOUD_TRANSFER_PROGRESS_S)
MAX_REQUEST_ATTEMPTS = 8   #: per Drive request (transient errors)
MAX_OBJECT_ATTEMPTS = 3    #: per object (checksum mismatch, truncated download, exhausted retries)
BUDGET_GRACE_MAX_S = 900.0  #: past --max-duration, in-flight uploads get a tenth of it (1-15 min) to finish
DAILY_WINDOW_S = 24 * 3600  #: Google's upload cap is per rolling 24 hours
LOCK_ATTEMPTS, LOCK_RETRY_S = 5, 0.025  #: a lock held for an instant by `status` is not a run
NOTIFY_TIMEOUT_S = 10.0    #: per --notify request; a monitor that is down must not hold up cron
NOTIFY_ATTEMPTS = 3
NOTIFY_BACKOFF_S = 0.5
SENT_SAVE_INTERVAL_S = 60.0  #: a killed run's bytes still count against the day, to the last minute
DAILY_WAIT_MAX_S = 15 * 60  #: a run waits this long at most for the bytes of a day ago to age out
DEFAULT_DAILY_LIMIT = "740GB"  #: 740 x 10^9 bytes: under Google's 750 GB a day whether Google counts GB or GiB
STOP_GRACE_S = 5.0         #: after SIGINT/SIGTERM, how long in-flight work may take to reach a stopping point
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 64.0
#: A service that answers nothing but network errors or 5xx for this long (to every worker) is down:
#: the run stops (exit 7) instead of grinding through every object's retries; cron tries later.
OUTAGE_WINDOW_S = 600.0
LEASE_S = 600.0          #: a run's hold on its Drive folder lasts this long unless renewed ...
LEASE_RENEW_S = 120.0    #: ... which it is this often while the run lives
LEASE_SETTLE_S = 2.0     #: wait between writing the lease and reading it back (see DriveLease)
LEASE_TRIES = 10
#: Pacing Drive's writes once it pushes back (see Pacer). Tuned in tests/pacer_sim.py (4 and 16
#: workers against token buckets of 1-20 writes/s, with and without 0.5-5% random refusals), then
#: measured with `python -m tests.benchmark quota faults`.
PACE_FIRST_DECREASE = 0.5
PACE_DISCOVERY_DOUBLING_S = 1.0
PACE_MEASURE_WRITES = 10
PACE_MEASURES = 3
PACE_MARGIN = 0.03
PACE_PROBE_GROWTH = 0.0001       #: per accepted write held back, right after a cut ...
PACE_PROBE_DOUBLING_WRITES = 40  #: ... doubling every this many writes ...
PACE_PROBE_MAX_GROWTH = 0.03     #: ... up to this
PACE_NOISE_REFUSALS = 3
PACE_FORGET_S = 300.0
PACE_DECREASE = 0.85
PACE_MIN_RATE = 0.05
PACE_WINDOW_S = 5.0
PACE_OUTCOMES = 10
PACE_START_REFUSALS = 4      #: refusals among the last PACE_OUTCOMES writes (within PACE_WINDOW_S) that start pacing
PACE_START_IN_A_ROW = 3      #: ... or refusals in a row (the writes in flight when a burst allowance ran out)
PACE_START_MIN_RATE = 1.0    #: pacing never starts slower (a quiet spell of large videos accepts ~0 writes/s)

#: Where a file's date came from, in the order they are tried (OriginalDates.date_of), as the run
#: summary says it. A run's counts, its report and the status page use these names.
DATE_SOURCE_NAMES = {
    "exif": "from EXIF", "xmp": "from XMP", "iptc": "from IPTC", "video": "from video headers",
    "sidecar": "from sidecars (XMP, Takeout JSON)", "pair": "from the other half of a pair (or a sidecar's photo)",
    "filename": "from file names",
    "exif-datetime": "from EXIF's last-written time", "metadata": "from file times in S3 metadata",
    "s3": "from S3 upload times",
}
PHOTO_TAG_SOURCES = frozenset({"exif", "xmp", "iptc", "exif-datetime", "pair"})   #: a time with the photo's own offset or wall clock
#: Every photo and video format the tool knows, by extension, with the type Drive gets for it (what a
#: generic Content-Type is replaced by; Python's `mimetypes` lacks HEIC, most RAW formats and several
#: video containers). RAW types are the registered or de-facto ones (image/x-<vendor>-<format>, as
#: shared-mime-info and ExifTool name them). Photo or video is told by the type.
MEDIA_TYPES = {
    "jpg": "image/jpeg", "jpeg": "image/jpeg", "jpe": "image/jpeg", "jfif": "image/jpeg", "insp": "image/jpeg",
    "png": "image/png", "gif": "image/gif", "bmp": "image/bmp", "tif": "image/tiff", "tiff": "image/tiff",
    "webp": "image/webp", "heic": "image/heic", "heif": "image/heif", "hif": "image/heif", "avif": "image/avif",
    "jxl": "image/jxl", "jp2": "image/jp2", "psd": "image/vnd.adobe.photoshop",
    "dng": "image/x-adobe-dng", "cr2": "image/x-canon-cr2", "cr3": "image/x-canon-cr3", "crw": "image/x-canon-crw",
    "nef": "image/x-nikon-nef", "nrw": "image/x-nikon-nrw", "arw": "image/x-sony-arw", "srf": "image/x-sony-srf",
    "sr2": "image/x-sony-sr2", "orf": "image/x-olympus-orf", "rw2": "image/x-panasonic-rw2",
    "raw": "image/x-panasonic-raw", "rwl": "image/x-leica-rwl", "raf": "image/x-fuji-raf",
    "pef": "image/x-pentax-pef", "srw": "image/x-samsung-srw", "x3f": "image/x-sigma-x3f",
    "3fr": "image/x-hasselblad-3fr", "fff": "image/x-hasselblad-fff", "erf": "image/x-epson-erf",
    "kdc": "image/x-kodak-kdc", "dcr": "image/x-kodak-dcr", "mrw": "image/x-minolta-mrw",
    "iiq": "image/x-phaseone-iiq", "mef": "image/x-mamiya-mef", "mos": "image/x-leaf-mos",
    "gpr": "image/x-gopro-gpr", "ari": "image/x-arri-ari",
    "mp4": "video/mp4", "m4v": "video/x-m4v", "mov": "video/quicktime", "qt": "video/quicktime",
    "insv": "video/mp4", "lrv": "video/mp4", "3gp": "video/3gpp", "3g2": "video/3gpp2",
    "avi": "video/x-msvideo", "divx": "video/x-msvideo", "mkv": "video/x-matroska", "webm": "video/webm",
    "wmv": "video/x-ms-wmv", "asf": "video/x-ms-asf", "mpg": "video/mpeg", "mpeg": "video/mpeg",
    "mpe": "video/mpeg", "mod": "video/mpeg", "tod": "video/mp2t", "vob": "video/dvd", "mts": "video/mp2t",
    "m2ts": "video/mp2t", "m2t": "video/mp2t", "ts": "video/mp2t", "flv": "video/x-flv", "f4v": "video/mp4",
    "ogv": "video/ogg", "dv": "video/x-dv", "mxf": "application/mxf", "r3d": "video/x-red-r3d",
    "braw": "video/x-blackmagic-raw",
}
PHOTO_EXTENSIONS = frozenset(ext for ext, kind in MEDIA_TYPES.items() if kind.startswith("image/"))
VIDEO_EXTENSIONS = frozenset(MEDIA_TYPES) - PHOTO_EXTENSIONS
MEDIA_EXTENSIONS = frozenset(MEDIA_TYPES)
#: An object without an extension is told by its first bytes: (offset, signature, extension), the
#: first that matches; a TIFF signature covers the TIFF-based RAW formats too.
MEDIA_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", "jpg"), (0, b"\x89PNG\r\n\x1a\n", "png"), (0, b"GIF87a", "gif"), (0, b"GIF89a", "gif"),
    (8, b"WEBP", "webp"), (8, b"AVI ", "avi"), (4, b"ftypcrx ", "cr3"), (4, b"ftypheic", "heic"),
    (4, b"ftypheix", "heic"), (4, b"ftypmif1", "heif"), (4, b"ftypavif", "avif"), (4, b"ftypqt  ", "mov"),
    (4, b"ftyp3g2", "3g2"), (4, b"ftyp3gp", "3gp"), (4, b"ftyp", "mp4"), (4, b"moov", "mov"), (4, b"mdat", "mov"),
    (0, b"FUJIFILMCCD-RAW", "raf"), (0, b"\x00MRM", "mrw"), (0, b"FOVb", "x3f"), (0, b"II\x1a\x00\x00\x00HEAPCCDR", "crw"),
    (0, b"IIRO", "orf"), (0, b"IIRS", "orf"), (0, b"IIU\x00", "rw2"), (0, b"II*\x00", "tif"), (0, b"MM\x00*", "tif"),
    (0, b"\x1aE\xdf\xa3", "mkv"), (0, b"\x00\x00\x01\xba", "mpg"), (0, b"0&\xb2u\x8ef\xcf\x11", "wmv"),
    (0, b"FLV\x01", "flv"), (0, b"8BPS", "psd"), (0, b"\xff\x0a", "jxl"), (0, b"\x00\x00\x00\x0cJXL ", "jxl"),
    (4, b"RED1", "r3d"), (4, b"RED2", "r3d"),
)
SNIFF_BYTES = 200   #: read from an object without an extension to tell its format (MPEG-TS needs 189)


def sniff_format(head: bytes) -> str | None:
    """The media extension an object's first bytes say, None when they say none we know."""
    for offset, signature, extension in MEDIA_SIGNATURES:
        if head[offset:offset + len(signature)] == signature:
            return extension
    if len(head) >= 189 and head[0] == head[188] == 0x47:   # MPEG-TS: a sync byte every 188 bytes
        return "ts"
    if len(head) >= 197 and head[4] == head[196] == 0x47:   # M2TS (AVCHD): 192-byte packets
        return "m2ts"
    if head[:2] == b"BM" and int.from_bytes(head[14:18], "little") in (12, 40, 52, 56, 108, 124):   # + DIB header
        return "bmp"
    return None


GENERIC_CONTENT_TYPES = frozenset({"", "binary/octet-stream", "application/octet-stream"})
DRIVE_PROPERTY_BYTES = 124      #: Drive: key + value of one property, in UTF-8
DRIVE_PROPERTIES_PER_APP = 30   #: Drive: public properties one app may set on a file
#: Zero-byte objects that S3 tools (console, s3fs, Hadoop) write to pretend a folder exists.
FOLDER_PLACEHOLDER_SUFFIXES = ("_$folder$",)
ARCHIVED_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})   # readable only once restored
#: Its Archive Access and Deep Archive Access tiers are readable only once restored too; only a HEAD
#: (x-amz-archive-status) tells an object in them from the others.
#: How long an Intelligent-Tiering object found archived is believed so without a HEAD: its
#: slowest restore (Deep Archive Access, bulk) takes up to 48 hours (AWS documentation).
TIERED_RECHECK_S = 48 * 3600
TIERED_STORAGE_CLASS = "INTELLIGENT_TIERING"
DRIVE_FOLDER_ITEMS = 500_000   #: items directly in one Drive folder (403 numChildrenInNonRootLimitExceeded)
#: What an object's archive says: readable now, waiting for a restore, being restored, or only a
#: HEAD can tell (a store whose listing says nothing of restores).
READABLE, ARCHIVED, RESTORING, ASK_S3 = "readable", "archived", "restoring", "ask"

#######################################################################
# Errors and exit codes ###############################################
#######################################################################
# One exception tree; main() maps it to exit codes. Each backend has one pure classifier
# that turns an SDK error into a Verdict.


class ExitCode(IntEnum):
    OK = 0
    PARTIAL = 1
    USAGE = 2
    AUTH = 3
    LOCKED = 4
    QUOTA = 5
    BUDGET = 6
    UNAVAILABLE = 7
    INTERNAL = 8
    DISK_FULL = 11   # not 9 or 10: rclone means success with those (no files transferred, --max-duration)
    INTERRUPTED = 130


class CloudTransferError(Exception):
    """Root of the tool's errors; the message is one line a user can act on."""
    exit_code = ExitCode.PARTIAL


class UsageError(CloudTransferError):
    """Bad flags or configuration."""
    exit_code = ExitCode.USAGE


class DiskFullError(CloudTransferError):
    """A local disk is full (the checkpoint's or the temporary directory's): free space, re-run."""
    exit_code = ExitCode.DISK_FULL


class CheckpointError(UsageError):
    """The checkpoint file is corrupt, foreign or from a newer version."""


class AuthError(CloudTransferError):
    """Credentials missing, rejected, expired or lacking permission."""
    exit_code = ExitCode.AUTH


class LockHeldError(CloudTransferError):
    """Another run holds the lock."""
    exit_code = ExitCode.LOCKED


class QuotaExceededError(CloudTransferError):
    """Drive storage quota, daily upload cap or shared-drive item limit reached."""
    exit_code = ExitCode.QUOTA


class DailyCapError(QuotaExceededError):
    """Google's daily upload cap (or our --daily-limit under it): the next 24 hours decide."""


class GoogleCapError(DailyCapError):
    """Google itself refused new uploads with its daily cap (which counts every upload to the account)."""


class UnavailableError(CloudTransferError):
    """S3 or Drive cannot be reached, or keeps failing (network, outage, a listing that failed)."""
    exit_code = ExitCode.UNAVAILABLE


class InterruptedRun(CloudTransferError):
    """SIGINT/SIGTERM asked the run to stop."""
    exit_code = ExitCode.INTERRUPTED


class ObjectError(CloudTransferError):
    """One object (or request) could not be done now; `verdict` says whether to retry, skip or fail it.
    Outside the per-object loop (root folder, verify, rollback) it ends the command with exit 1.
    `date`: the original date that put it outside --newer-than/--older-than (kept in the checkpoint)."""

    def __init__(self, verdict: Verdict, date: dt.datetime | None = None):
        super().__init__(verdict.reason)
        self.verdict, self.date = verdict, date


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What to do about an error: RETRY it, RESTART an upload session, SKIP or FAIL the object, STOP the
    run; EXISTS: a create's id is taken (the create had landed); NEW_ID: Drive will not take the id;
    FOLDER_FULL: the parent holds Drive's 500,000 items (the path continues in a folder beside it)."""
    action: str                        # one of the names below
    reason: str                        # one line, no secrets
    retry_after_s: float | None = None  # server's Retry-After, if it sent one
    rate_limited: bool = False          # slow every worker down, not just this one
    daily_cap: bool = False             # maybe the daily upload cap: stops the run if it persists
    unreachable: bool = False           # no answer at all (connection refused, unknown host, no route)
    stop_error: type[CloudTransferError] | None = None  # for STOP: the error to raise

    RETRY = "retry"
    RESTART = "restart"
    SKIP = "skip"
    FAIL = "fail"
    STOP = "stop"
    EXISTS = "exists"
    NEW_ID = "new-id"
    FOLDER_FULL = "folder-full"


def raise_for(verdict: Verdict) -> None:
    """Turn a Verdict into the exception that carries it up: run-stopping or per-object."""
    if verdict.action == Verdict.STOP:
        raise (verdict.stop_error or CloudTransferError)(verdict.reason)
    if verdict.action == Verdict.NEW_ID:
        raise IdNotUsable(verdict.reason)
    raise ObjectError(verdict)


class IdNotUsable(Exception):
    """Drive refused a pre-allocated id (never generated, expired, or taken by a deleted file)."""


#: Errors from sockets, TLS and the HTTP layers that mean "the network hiccupped": retry.
TRANSIENT_NETWORK_ERRORS = (
    ConnectionError, TimeoutError, socket.timeout, socket.gaierror, ssl.SSLError,
    http.client.HTTPException, httplib2.HttpLib2Error, TransportError,
    urllib3.exceptions.HTTPError,   # e.g. a TLS error while reading an S3 body, which botocore leaves as it is
)

SKIP_DELETED = "deleted from S3 since it was listed"
SKIP_ARCHIVED, SKIP_RESTORING = "archived: waits for a restore", "archived: being restored"
SKIP_SSE_C = "encrypted with a customer-provided key (SSE-C): set S3_SSE_C_KEY to copy it"
#: A copy gone from Drive (the user's hands, as Drive's changes feed or a walk tells): copied again,
#: or with --removed-in-drive leave, left out. The entry's reason says how it went.
SKIP_REMOVED = "removed in Drive"
REMOVED_HOW = {"trashed": f"{SKIP_REMOVED}: trashed", "deleted": f"{SKIP_REMOVED}: deleted for good",
               "moved": f"{SKIP_REMOVED}: moved out of the copy's folders", "missing": f"{SKIP_REMOVED}: not found"}
SKIP_LEFT_OUT = f"{SKIP_REMOVED}, left out (--removed-in-drive leave)"
REMOVED_COPY, REMOVED_LEAVE = "copy", "leave"
_S3_RETRY_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                   "RequestTimeTooSkewed", "Throttling", "ThrottlingException", "503", "500"}
_S3_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                  "TokenRefreshRequired", "AccountProblem"}


#: botocore's ways of saying a sign-in (SSO, an MFA role session, credential_process, a container or
#: instance role) expired or failed. They are BotoCoreErrors like a network outage, yet waiting never
#: helps: the user must sign in again.
AWS_SIGNIN_ERRORS = (
    botocore.exceptions.SSOError,   # UnauthorizedSSOTokenError, SSOTokenLoadError
    botocore.exceptions.TokenRetrievalError, botocore.exceptions.CredentialRetrievalError,
    botocore.exceptions.RefreshWithMFAUnsupportedError, botocore.exceptions.PartialCredentialsError,
)


def aws_signin_problem(exc: BaseException, profile: str | None = None) -> str:
    """One line for a failed AWS sign-in: what failed and how to sign in again (never botocore's
    message, which may quote a credential process's output)."""
    login = f"aws sso login --profile {profile}" if profile else "aws sso login (with --profile NAME if you use one)"
    if isinstance(exc, (botocore.exceptions.SSOError, botocore.exceptions.TokenRetrievalError)):
        how = f"the AWS SSO sign-in expired or is missing: run `{login}`, then start again"
    elif isinstance(exc, botocore.exceptions.RefreshWithMFAUnsupportedError):
        how = ("the AWS role session that needed an MFA code expired and cannot renew itself: start again "
               "to enter a new code, or use a role without MFA or longer sessions for unattended runs")
    elif isinstance(exc, botocore.exceptions.PartialCredentialsError):
        how = "the AWS credentials are incomplete (a key without its secret?): check .env and ~/.aws"
    else:
        how = ("the AWS credential source (credential_process, SSO, container or instance role) gave no "
               f"credentials: run it by hand to see why (for SSO: `{login}`), then start again")
    return f"AWS sign-in failed ({type(exc).__name__}): {how}"


def classify_s3_error(exc: BaseException, profile: str | None = None) -> Verdict:
    """Map a boto3/botocore error (or a local check) to a Verdict; `profile` names the AWS profile
    in sign-in advice."""
    if isinstance(exc, ObjectError):
        return exc.verdict
    if isinstance(exc, AWS_SIGNIN_ERRORS):
        return Verdict(Verdict.STOP, aws_signin_problem(exc, profile), stop_error=AuthError)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return Verdict(Verdict.STOP, "no AWS credentials found: set AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY in .env, or use a profile or role", stop_error=AuthError)
    if isinstance(exc, botocore.exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchKey", "404") or status == 404:
            return Verdict(Verdict.SKIP, SKIP_DELETED)
        if code == "InvalidRequest" and "Server Side Encryption" in str(error.get("Message", "")):
            return Verdict(Verdict.SKIP, SKIP_SSE_C)
        if code == "InvalidObjectState":
            return Verdict(Verdict.SKIP, SKIP_ARCHIVED)
        if code == "PreconditionFailed" or status == 412:
            return Verdict(Verdict.FAIL, "changed in S3 during the transfer: the next run copies it")
        if code in _S3_AUTH_CODES:
            return Verdict(Verdict.STOP, f"S3 rejected the credentials ({code})", stop_error=AuthError)
        if code in _S3_RETRY_CODES or status >= 500 or status == 429:
            return Verdict(Verdict.RETRY, f"S3 answered {code or status}")
        if code == "AccessDenied" or status == 403:
            return Verdict(Verdict.FAIL, "access denied reading the object (check s3:GetObject and KMS permissions)")
        return Verdict(Verdict.FAIL, f"S3 error {code or status}: {error.get('Message', '')}".strip())
    if isinstance(exc, botocore.exceptions.FlexibleChecksumError):   # boto3 >= 1.36 checks full GETs by default
        return Verdict(Verdict.RETRY, "corrupted download: S3's checksum does not match the bytes")
    if isinstance(exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError,
                        botocore.exceptions.IncompleteReadError, botocore.exceptions.ResponseStreamingError,
                        *TRANSIENT_NETWORK_ERRORS)):
        return Verdict(Verdict.RETRY, f"network error reading S3: {type(exc).__name__}")
    if isinstance(exc, OSError) and is_disk_full(exc):
        return Verdict(Verdict.STOP, f"cannot stage the download ({os.strerror(exc.errno)}): free space in the "
                       "temporary directory or point --temp-dir at a larger disk", stop_error=DiskFullError)
    return Verdict(Verdict.FAIL, f"unexpected error reading S3: {type(exc).__name__}: {exc}")


def drive_error_details(exc: HttpError) -> tuple[int, str, str]:
    """(status, reason, message) of a Drive error response."""
    status = int(getattr(exc.resp, "status", 0) or 0)
    reason, message = "", ""
    try:
        body = json.loads(exc.content.decode("utf-8"))["error"]
        message = str(body.get("message", ""))
        errors = body.get("errors") or [{}]
        # newer answers may carry only google.rpc.ErrorInfo in details (e.g. SERVICE_DISABLED)
        info = next((d for d in body.get("details") or () if isinstance(d, dict) and d.get("reason")), {})
        reason = str(errors[0].get("reason", "")) or str(info.get("reason", "")) or str(body.get("status", ""))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        pass
    return status, reason, message


def _retry_after_s(headers: Any) -> float | None:
    try:
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


#: The daily upload cap (~750 GB/24 h) arrives as userRateLimitExceeded with exactly this message;
#: the per-minute limit has a longer one. Backoff does not clear it.
DAILY_CAP_MESSAGE = "User rate limit exceeded."


def classify_drive_error(exc: BaseException, in_upload_session: bool = False, upload: bool = False) -> Verdict:
    """Map a googleapiclient/google-auth error to a Verdict (rclone's shouldRetry, drive.go).

    `in_upload_session`: the error answered a chunk of a started resumable session, where a 4xx
    (other than a rate limit) means: start a new session, not that a file is missing. `upload`: the request
    sends a file's bytes, the only kind the daily upload cap refuses."""
    if isinstance(exc, ObjectError):
        return exc.verdict
    if isinstance(exc, RefreshError):
        if getattr(exc, "retryable", False):   # google-auth's own retries of a 5xx/429 token endpoint ran out
            return Verdict(Verdict.RETRY, "Google's token endpoint is unavailable for now")
        details = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
        if details.get("error") == "invalid_grant" and "JWT" in str(details.get("error_description", "")):
            # only a service account signs in with a JWT: its key is deleted, or this machine's clock is off
            return Verdict(Verdict.STOP, "Google refused the service account's key (invalid_grant: "
                           f"{details['error_description']}): check that the key still exists (IAM → Service "
                           "accounts → Keys) or create a new one, and that this machine's clock is right",
                           stop_error=AuthError)
        if details.get("error") == "invalid_grant":
            return Verdict(Verdict.STOP, "Google no longer accepts the sign-in in token.json (invalid_grant: "
                           f"{details.get('error_description') or 'expired or revoked'}): run 'python cloud_transfer.py "
                           "auth' in a terminal. If this comes about a week after each sign-in, the OAuth consent "
                           "screen of credentials.json's project is in Testing, where Google ends sign-ins after "
                           "7 days: publish the app (Google Auth Platform → Audience → Publish app), or use a "
                           "service account", stop_error=AuthError)
        return Verdict(Verdict.STOP, "the Google token cannot be refreshed (expired or revoked): "
                       "run 'python cloud_transfer.py auth' in a terminal", stop_error=AuthError)
    if isinstance(exc, HttpError):
        status, reason, message = drive_error_details(exc)
        retry_after = _retry_after_s(exc.resp)
        if reason == "storageQuotaExceeded" and "Service Accounts do not have storage quota" in message:
            return Verdict(Verdict.STOP, "a service account cannot own files in a My Drive (Google: \"Service "
                           "Accounts do not have storage quota\"): use --impersonate, or --folder-id of a folder in "
                           "a shared drive", stop_error=UsageError)
        if reason in ("accessNotConfigured", "SERVICE_DISABLED"):
            # Google: "Drive API has not been used in project N before or it is disabled. Enable it by
            # visiting https://console.developers.google.com/apis/api/drive.googleapis.com/overview?project=N"
            link = re.search(r"https://console\.(?:developers|cloud)\.google\.com/\S*?(?=\s|$| then)", message)
            return Verdict(Verdict.STOP, "the Google Drive API is not enabled in the Google Cloud project of "
                           "credentials.json: enable it at " + (link[0] if link else "Google Cloud Console → APIs & "
                           "Services → Library → Google Drive API") + " and re-run a few minutes later",
                           stop_error=AuthError)
        if reason in ("storageQuotaExceeded", "quotaExceeded"):
            return Verdict(Verdict.STOP, "Google Drive storage is full: free space or buy more, then re-run",
                           stop_error=QuotaExceededError)
        if reason == "dailyLimitExceededUnreg":   # "Daily Limit for Unauthenticated Use": no usable token
            return Verdict(Verdict.STOP, "Google took a request as unauthenticated (dailyLimitExceededUnreg): "
                           "run 'python cloud_transfer.py auth' in a terminal", stop_error=AuthError)
        if reason == "dailyLimitExceeded":
            return Verdict(Verdict.STOP, "the Drive API's daily request quota of this OAuth client is used up: "
                           "re-run tomorrow", stop_error=QuotaExceededError)
        if reason == "teamDriveFileLimitExceeded":
            return Verdict(Verdict.STOP, "the shared drive holds its maximum number of items (500,000)",
                           stop_error=QuotaExceededError)
        if reason == "numChildrenInNonRootLimitExceeded":
            return Verdict(Verdict.FOLDER_FULL, "a Drive folder holds its maximum number of items (500,000)")
        if reason == "activeItemCreationLimitExceeded":
            return Verdict(Verdict.STOP, "the Google account holds its maximum number of Drive items",
                           stop_error=QuotaExceededError)
        if status == 403 and reason == "userRateLimitExceeded" and message.strip() == DAILY_CAP_MESSAGE and upload:
            # The cap's message is also that of a short throttle; the Pacer stops the run only when
            # it persists after a backoff.
            return Verdict(Verdict.RETRY, "Drive refused an upload: maybe the daily upload limit",
                           retry_after_s=retry_after, rate_limited=True, daily_cap=True)
        if status == 409:
            return Verdict(Verdict.EXISTS, "a file with this id already exists")
        if reason == "fileIdNotUsable":
            return Verdict(Verdict.NEW_ID, "Drive will not use this pre-allocated file id")
        if status == 429 or reason in ("rateLimitExceeded", "userRateLimitExceeded"):
            return Verdict(Verdict.RETRY, f"Drive rate limit ({reason or status})",
                           retry_after_s=retry_after, rate_limited=True)
        if status >= 500:
            return Verdict(Verdict.RETRY, f"Drive answered {status}", retry_after_s=retry_after)
        if 400 <= status < 500 and in_upload_session:
            # Google: "For any 4xx errors (including 403) during a resumable upload, restart the
            # upload" (manage-uploads); an expired session (a week idle) answers 404.
            return Verdict(Verdict.RESTART, f"the upload session answered {status}: starting a new one")
        if status == 401:
            return Verdict(Verdict.STOP, "Google rejected the token: run 'python cloud_transfer.py auth'",
                           stop_error=AuthError)
        if status == 403 and reason in ("insufficientPermissions", "insufficientFilePermissions",
                                        "appNotAuthorizedToFile", "forbidden", "domainPolicy"):
            return Verdict(Verdict.STOP, f"Drive refused access ({reason}): the folder may need --full-scope "
                           "and 'python cloud_transfer.py auth --full-scope'", stop_error=AuthError)
        if status == 404:
            return Verdict(Verdict.FAIL, f"Drive says not found: {message}")
        return Verdict(Verdict.FAIL, f"Drive error {status} {reason}: {message}".strip())
    if isinstance(exc, ssl.SSLCertVerificationError):   # an SSLError, but no retry will fix it
        return Verdict(Verdict.STOP, "Google's TLS certificate could not be verified (a proxy intercepting "
                       "HTTPS?); verification stays on: fix the system's trusted certificates", stop_error=CloudTransferError)
    if isinstance(exc, TRANSIENT_NETWORK_ERRORS):
        # Only "no answer at all" is called unreachable; a cut-off answer did reach Google.
        unreachable = isinstance(exc, (ConnectionRefusedError, socket.gaierror, httplib2.ServerNotFoundError)) or (
            isinstance(exc, OSError) and exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH))
        return Verdict(Verdict.RETRY, f"network error talking to Drive: {type(exc).__name__}", unreachable=unreachable)
    if isinstance(exc, GoogleAuthError):
        return Verdict(Verdict.STOP, f"Google authentication failed: {exc}", stop_error=AuthError)
    return Verdict(Verdict.FAIL, f"unexpected error talking to Drive: {type(exc).__name__}: {exc}")

#######################################################################
# Configuration #######################################################
#######################################################################
# Flags > environment > .env > defaults. Only load_config() reads argv, the environment or .env;
# everything after it receives a Config.

COMMAND_NAMES = ("transfer", "verify", "rollback", "status", "auth")

#: What each exit code means (the first clause is --help's line; the README says more) and rclone's
#: nearest code, so that wrappers written for rclone are not misread: its 7 is "fatal", ours "later".
EXIT_CODES: dict[ExitCode, tuple[str, str]] = {
    ExitCode.OK: ("everything eligible is in Drive and validated (verify: each object once, intact)", "0"),
    ExitCode.PARTIAL: ("some objects failed (others done), or verify found problems; re-run to retry them",
                       "1 or 5"),
    ExitCode.USAGE: ("usage or configuration error", "2"),
    ExitCode.AUTH: ("authentication/authorisation error (run: python cloud_transfer.py auth)", "7"),
    ExitCode.LOCKED: ("another run holds the lock", "none"),
    ExitCode.QUOTA: ("Drive storage quota or daily upload limit reached (stopped cleanly; resume later)", "7"),
    ExitCode.BUDGET: ("stopped at a run budget (resume later)", "8 or 10"),
    ExitCode.UNAVAILABLE: ("S3 or Drive unreachable, or failing every request for a while (state saved; re-run "
                           "later)", "5"),
    ExitCode.INTERNAL: ("internal error (a bug; re-run with --verbose and report it)", "1"),
    ExitCode.DISK_FULL: ("a local disk is full (the checkpoint's or --temp-dir's; free space, re-run)", "1"),
    ExitCode.INTERRUPTED: ("interrupted (SIGINT/SIGTERM); state flushed", "none"),
}
EXIT_CODE_HELP = "exit codes:\n" + "".join(
    f"  {int(code):<4} {meaning} [rclone: {rclone}]\n" for code, (meaning, rclone) in EXIT_CODES.items())

@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting, validated and typed. Secrets are kept out of repr()."""
    command: str = "transfer"
    bucket: str = ""
    prefix: str = ""
    folder_name: str = DEFAULT_FOLDER_NAME
    folder_id: str | None = None
    credentials_path: Path = Path(DEFAULT_CREDENTIALS)
    token_path: Path = Path(DEFAULT_TOKEN)
    checkpoint_path: Path = Path(DEFAULT_CHECKPOINT)
    temp_dir: Path | None = None         # parent of the private download directory
    workers: int = DEFAULT_WORKERS
    chunk_size_bytes: int = int(DEFAULT_CHUNK_MIB * 1024 * 1024)
    page_size: int = DEFAULT_PAGE_SIZE   # ListObjectsV2 keys per page
    dry_run: bool = False
    check: bool = False                  # transfer --check: the pre-flight checks only
    all_files: bool = False
    no_sidecars: bool = False
    filters: tuple[tuple[str, str], ...] = ()   # ("+"|"-", glob) in command-line order (--include/--exclude)
    min_size: int | None = None
    max_size: int | None = None
    newer_than: dt.datetime | None = None  # original date (LastModified where none is known)
    older_than: dt.datetime | None = None
    ignore_quota: bool = False           # skip the Drive storage pre-check (--ignore-quota)
    max_transfer: int | None = None      # bytes this run may start uploading (--max-transfer)
    max_duration_s: float | None = None  # seconds after which no new upload starts (--max-duration)
    daily_limit: int | None = None       # bytes per rolling 24 h across runs (--daily-limit); None: off
    daily_limit_text: str = DEFAULT_DAILY_LIMIT   # as the user wrote it: messages keep their units
    notify_url: str | None = None        # a healthchecks.io-style ping URL (--notify)
    bwlimit: tuple[tuple[int, int | None], ...] = ()   # (minute of the day, upload bytes/s or None), sorted
    order: str = "key"                   # which objects go first (ORDERS)
    layout: str = LAYOUT_MIRROR          # where files go: mirror, flat, or date:<pattern> (LAYOUT_PATTERNS)
    date_from: str = "auto"              # where each file's original date comes from (DATE_SOURCES)
    timezone: dt.tzinfo | None = None    # EXIF times without an offset are read in it; None: local
    full_scope: bool = False             # ask for the whole-Drive scope instead of drive.file
    service_account_path: Path | None = None   # a service-account key instead of token.json (--service-account)
    impersonate: str | None = None       # the Workspace user a service account acts for (--impersonate)
    no_browser: bool = False             # auth: print the consent URL instead of opening a browser
    oauth_port: int = 0                  # auth: local redirect port (0 = any free port)
    quiet: bool = False
    verbose: bool = False
    log_file: Path | None = None
    report_path: Path | None = None      # transfer: a JSON run report for scripts (--report)
    json_output: bool = False            # verify/status: machine-readable report on stdout
    html_path: Path | None = None        # status: also write a self-contained page here (--html)
    reset_checkpoint: bool = False
    recheck: bool = False                # look in Drive for objects the checkpoint calls done
    removed_in_drive: str | None = None  # copy | leave copies removed in Drive; None: as the checkpoint remembers
    new_root: bool = False               # start a new copy in a new root folder
    rollback_run: str | None = None      # rollback: "last" or a run id
    permanent: bool = False              # rollback: delete instead of trash
    assume_yes: bool = False
    backoff_base_s: float = BACKOFF_BASE_S   # first retry waits up to this long (full jitter)
    lease_settle_s: float = LEASE_SETTLE_S
    backoff_cap_s: float = BACKOFF_CAP_S     # no single wait is longer (except a server's Retry-After)
    outage_window_s: float = OUTAGE_WINDOW_S  # failing this long, a service is down: stop (exit 7)
    progress_interval_s: float = LOG_INTERVAL_S   # a progress line in logs this often
    drive_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    aws_profile: str | None = None
    aws_access_key_id: str | None = dataclasses.field(default=None, repr=False)
    aws_secret_access_key: str | None = dataclasses.field(default=None, repr=False)
    aws_session_token: str | None = dataclasses.field(default=None, repr=False)
    sse_c_key: bytes | None = dataclasses.field(default=None, repr=False)   # S3_SSE_C_KEY, decoded
    aws_ca_bundle: str | None = None
    aws_max_attempts: int = 10           # AWS_MAX_ATTEMPTS: botocore's standard retry mode, per request
    aws_checksum_calculation: str | None = None   # AWS_REQUEST_CHECKSUM_CALCULATION (some S3-compatible stores)
    aws_checksum_validation: str | None = None    # AWS_RESPONSE_CHECKSUM_VALIDATION
    env_file: Path = Path(DEFAULT_ENV_FILE)
    notices: tuple[str, ...] = ()        # warnings found while reading the settings (.env typos)
    bucket_origin: str = "--bucket"      # where the bucket name came from, as a user would say it

    @property
    def scopes(self) -> list[str]:
        return [SCOPE_DRIVE_FULL if self.full_scope else SCOPE_DRIVE_FILE]

    def secrets(self) -> list[str]:
        # The access key id is an identifier, not a secret; blanking it would garble bucket names.
        key = base64.b64encode(self.sse_c_key).decode() if self.sse_c_key else None
        return [s for s in (self.aws_secret_access_key, self.aws_session_token, key, self.notify_url) if s]


class _FilterAction(argparse.Action):
    """--include/--exclude into one list that keeps their order (rclone's rules: first match wins)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        rules = list(getattr(namespace, self.dest, None) or [])
        rules.append(("+" if option_string == "--include" else "-", str(values)))
        setattr(namespace, self.dest, rules)


#: A unit typed apart from its number: "--daily-limit 740 GB", "--max-duration 6 hours".
_UNIT_WORD = re.compile(r"(?i)([kmgtp]i?b?|bytes?|[smhd]|secs?|seconds?|mins?|minutes?|hours?|days?)")
_NUMBER = re.compile(r"\d+(\.\d+)?")
_TIME_WORDS = {"sec", "second", "min", "minute", "hour", "day"}


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing usage and exiting,
    names a mistyped option before anything else can misread it, and takes no abbreviations (a
    `--dry` in a cron line must not start a real run when a `--dry-run-x` appears one day)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see --help)")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        tokens = list(sys.argv[1:] if args is None else args)
        self._check_tokens(tokens[:tokens.index("--")] if "--" in tokens else tokens)
        return super().parse_known_args(tokens, namespace)

    def _check_tokens(self, tokens: list[str]) -> None:
        known = self._option_string_actions
        for i, token in enumerate(tokens):
            name = token.split("=", 1)[0]
            before = known.get(tokens[i - 1]) if i else None
            is_value = before is not None and before.nargs is None   # the value of an option: --exclude -x.jpg
            combined = re.fullmatch(r"-[a-zA-Z]{2,}", token) and all(f"-{c}" in known for c in token[1:])   # -vn
            if (token.startswith("-") and len(token) > 1 and not is_value and not _NUMBER.fullmatch(token[1:])
                    and name not in known and not combined):
                close = difflib.get_close_matches(name, [o for o in known if o.startswith("--")], n=1, cutoff=0.6)
                raise UsageError(f"unknown option {name}" + (f" (did you mean {close[0]}?)" if close else "")
                                 + " (see --help)")
            action = known.get(token)
            if (action is not None and action.nargs is None and i + 2 < len(tokens)
                    and _NUMBER.fullmatch(tokens[i + 1]) and _UNIT_WORD.fullmatch(tokens[i + 2])):
                unit = tokens[i + 2]
                unit = unit[0].lower() if unit.lower().rstrip("s") in _TIME_WORDS else unit
                raise UsageError(f"{token} {tokens[i + 1]} {tokens[i + 2]}: write the value without a space, "
                                 f"as {token} {tokens[i + 1]}{unit}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cloud_transfer.py",
        description="Copy photos and videos from an S3 bucket into Google Drive, exactly once, resumably.",
        epilog=help_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", default="transfer", choices=COMMAND_NAMES,
                        help="what to do (default: transfer)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    groups: dict[str, Any] = {}
    for row in SETTINGS:
        if row.flags:
            group = groups.get(row.group) or groups.setdefault(row.group, parser.add_argument_group(row.group))
            group.add_argument(*row.flags, dest=row.field, default=None, help=row.help_text(), **row.arg)
    return parser


def help_epilog() -> str:
    width = max(len(", ".join(row.env)) for row in SETTINGS if row.env)
    variables = "".join(f"  {', '.join(row.env):<{width}}  {row.flags[0] if row.flags else row.help_text(variables=False)}\n"
                        for row in SETTINGS if row.env)
    return f"""\
examples:
  python cloud_transfer.py auth                      # once, in a terminal: browser consent, writes token.json
  python cloud_transfer.py                           # copy everything (S3_BUCKET_NAME from .env)
  python cloud_transfer.py --prefix 2019/ --dry-run  # what would be copied, touching nothing
  python cloud_transfer.py verify --json             # compare S3 with Drive
  python cloud_transfer.py rollback --run last       # trash what the last run uploaded

environment (.env is read from the current directory; real environment variables win; a flag wins over both):
{variables}  {'GOOGLE_APPLICATION_CREDENTIALS':<{width}}  a service-account key, used with --impersonate

{EXIT_CODE_HELP}"""


def read_env_file(path: Path, required: bool) -> dict[str, str]:
    """Values from a .env file (python-dotenv); a missing optional file is empty."""
    from dotenv import dotenv_values

    from dotenv.parser import parse_stream

    if not path.is_file():
        if required:
            raise UsageError(f"env file not found: {path}")
        return {}
    try:
        # python-dotenv only warns about a malformed line and drops it; a dropped secret would then
        # surface as a confusing "not set" error, so name the line (never its content) instead.
        with open(path, encoding="utf-8") as stream:
            broken = [binding.original.line for binding in parse_stream(stream) if binding.error]
        if broken:
            raise UsageError(f"{path} line {broken[0]} is not KEY=VALUE: fix or remove it")
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc.__class__.__name__}") from None
    return {k: v for k, v in values.items() if v is not None}


#: Every variable the tool reads; a .env key that looks like one of ours but is not gets a warning.
def parse_notify_url(text: str | None) -> str | None:
    if not text or text == "off":
        return None
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError("--notify must be an http(s) URL, like https://hc-ping.com/<uuid>")
    return text


def unknown_setting_notices(values: dict[str, str], env_file: Path) -> Iterator[str]:
    """A typo in .env (S3_BUCKET instead of S3_BUCKET_NAME) would otherwise copy from the wrong
    place or with the wrong settings, silently. botocore reads many more AWS_ variables, so those
    are only questioned when they are close to one of ours."""
    
    for key in values:
        upper = key.upper()
        if key in KNOWN_SETTINGS or not upper.startswith(("AWS_", "S3_", "DRIVE_", "CLOUD_TRANSFER_")):
            continue
        close = difflib.get_close_matches(upper, KNOWN_SETTINGS, n=2, cutoff=0.75)
        if upper.startswith("AWS_") and not close:
            continue
        yield (f"{env_file}: {key} is not a setting of this tool" + (f"; did you mean {' or '.join(close)}?" if close
                                                                     else " (see .env.example); it is ignored"))


def parse_chunk_size(mib: float) -> int:
    """MiB (multiple of 0.25) → bytes, a multiple of Drive's 256 KiB chunk quantum."""
    size_bytes = mib * 1024 * 1024
    if mib <= 0 or size_bytes % CHUNK_QUANTUM_BYTES:
        raise UsageError(f"--chunk-size must be a positive multiple of 0.25 MiB (256 KiB), not {mib:g}")
    return int(size_bytes)


def parse_sse_c_key(value: str | None) -> bytes | None:
    """S3_SSE_C_KEY: the base64 of the 256-bit key the objects were encrypted with (SSE-C)."""
    if not value:
        return None
    try:
        key = base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        key = b""
    if len(key) != 32:
        raise UsageError("S3_SSE_C_KEY must be the base64 of a 256-bit (32-byte) key")
    return key


SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "p": 1024 ** 5,
              "kib": 1024, "mib": 1024 ** 2, "gib": 1024 ** 3, "tib": 1024 ** 4,
              "kb": 1000, "mb": 1000 ** 2, "gb": 1000 ** 3, "tb": 1000 ** 4}


def parse_size(value: str, name: str, allow_off: bool = False) -> int | None:
    """'700G' → bytes. K/M/G/T alone and KiB... are powers of 1024 (as rclone); KB/MB/GB/TB of 1000."""
    text = str(value).strip().lower().replace(" ", "")
    if allow_off and text in ("off", "0", "none"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-z]*)", text)
    if not match or match[2] not in SIZE_UNITS or float(match[1]) <= 0:
        raise UsageError(f"{name} must be a size such as 700G, 1.5T or 500MB" + (" (or off)" if allow_off else "")
                         + f", not {value!r}")
    return int(float(match[1]) * SIZE_UNITS[match[2]])


def parse_duration(value: str, name: str) -> float:
    """'6h', '1h30m', '90m', '45s', '2d' → seconds."""
    text = str(value).strip().lower().replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise UsageError(f"{name} must be a duration such as 6h, 1h30m or 45m, not {value!r}")
    seconds = sum(float(number) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit] for number, unit in parts)
    if seconds <= 0:
        raise UsageError(f"{name} must be longer than nothing, not {value!r}")
    return seconds


def parse_utc(value: Any) -> dt.datetime | None:
    """A time this tool recorded ("2026-12-01T01:00:00Z"), None when absent or unreadable."""
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def parse_moment(value: str, name: str) -> dt.datetime:
    """'2019-06-30' or '2019-06-30T12:00' (this machine's zone unless one is given) or an age ('90d')."""
    text = str(value).strip()
    try:
        moment = dt.datetime.fromisoformat(text)
        return moment if moment.tzinfo else moment.astimezone()
    except ValueError:
        pass
    try:
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=parse_duration(text, name))
    except UsageError:
        raise UsageError(f"{name} must be a date (2019-06-30) or an age (90d, 12h), not {value!r}") from None


def parse_bwlimit(value: str) -> tuple[tuple[int, int | None], ...]:
    """'4M' → ((0, 4 MiB),); rclone's timetable '08:00,1M 19:00,4M 23:00,off' → one entry per time
    (minute of the day, bytes/s or None for off), sorted; 'off' → (). As in rclone, a bare number
    is KiB/s."""
    def rate_of(text: str) -> int | None:
        return parse_size(text + "k" if re.fullmatch(r"\d+(\.\d+)?", text) else text, "--bwlimit", allow_off=True)

    usage = (f"--bwlimit must be a rate such as 4M or off, or a timetable such as \"08:00,1M 19:00,4M 23:00,off\", "
             f"not {value!r}")
    parts = str(value).split()
    try:
        if len(parts) == 1 and "," not in parts[0]:
            rate = rate_of(parts[0])
            return () if rate is None else ((0, rate),)
        table = {}
        for part in parts:
            at, _, rate_text = part.partition(",")
            match = re.fullmatch(r"(\d{1,2}):(\d\d)", at)
            minute = int(match[1]) * 60 + int(match[2]) if match else -1
            if not 0 <= minute < 24 * 60 or int(match[2]) > 59 or minute in table:
                raise UsageError(usage)
            table[minute] = rate_of(rate_text)
    except UsageError:
        raise UsageError(usage) from None
    return tuple(sorted(table.items()))


def parse_order(value: str) -> str:
    if value not in ORDERS:
        raise UsageError(f"CLOUD_TRANSFER_ORDER must be one of {', '.join(ORDERS)}, not {value!r}")
    return value


def parse_layout(value: str) -> str:
    """mirror | flat | date[:YYYY|YYYY/MM|YYYY/MM/DD] → its normal form (date = date:YYYY/MM)."""
    layout = value.strip()
    layout = {"date": f"date:{LAYOUT_PATTERNS[1]}"}.get(layout, layout)
    if layout in (LAYOUT_MIRROR, LAYOUT_FLAT) or layout.removeprefix("date:") in LAYOUT_PATTERNS and layout.startswith("date:"):
        return layout
    raise UsageError(f"--layout must be mirror, flat, date, or date:YYYY, date:YYYY/MM, date:YYYY/MM/DD; not {value!r}")


def parse_date_from(value: str) -> str:
    if value.lower() not in DATE_SOURCES:
        raise UsageError(f"--date-from must be one of {', '.join(DATE_SOURCES)}, not {value!r}")
    return value.lower()


def parse_timezone(name: str | None) -> dt.tzinfo | None:
    """An IANA zone name → tzinfo (DST-aware); None keeps the machine's own zone."""
    if not name:
        return None
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        if not zoneinfo.available_timezones():
            raise UsageError(f"--timezone {name}: this machine has no time zone database "
                             "(install the tzdata package)") from None
        raise UsageError(f"--timezone {name!r} is not a time zone name (an IANA name such as Europe/Paris "
                         "or America/New_York)") from None


def _positive_int(value: Any, name: str) -> int:
    if not str(value).strip().isdigit() or int(value) < 1:
        raise UsageError(f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)


def _positive_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if number <= 0:
        raise UsageError(f"{name} must be a positive number of seconds, not {value!r}")
    return number


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting, said once: its Config field, its flags and environment variables (a flag wins,
    then the first variable that is set, then the default), how its text is read, its help, and
    the commands it applies to. SETTINGS builds the parser, the merge in load_config, the help's
    list of environment variables and the .env typo check."""
    field: str
    flags: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    default: Any = None        # read by `parse` as a user's text would be, or a value as it is
    parse: Callable[[Any, str], Any] | None = None   # (text, the flag or variable it came by) -> value
    help: str = ""
    shown: str | None = None   # the default as --help says it, when not str(default)
    commands: tuple[str, ...] = COMMAND_NAMES
    arg: dict[str, Any] = dataclasses.field(default_factory=dict)   # argparse: action, metavar, choices, dest
    group: str = ""

    @property
    def name(self) -> str:
        return (self.flags or self.env)[0]

    def help_text(self, variables: bool = True) -> str:
        scope = "" if self.commands == COMMAND_NAMES else "/".join(self.commands) + ": "
        shown = self.shown if self.shown is not None else None if self.default in (None, False, ()) else str(self.default)
        default = " or ".join([*(f"${name}" for name in self.env if variables), *([shown] if shown else [])])
        return scope + self.help + (f" (default: {default})" if default else "")


def _path(value: Any, name: str) -> Path:
    return Path(value)


def _whole(value: Any, name: str) -> int:
    """A whole number; its range is validate_config's to say."""
    if not str(value).strip().isdigit():
        raise UsageError(f"{name} must be a whole number, not {value!r}")
    return int(value)


def _number(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a number, not {value!r}") from None


def _port(value: Any, name: str) -> int:
    if not str(value).strip().isdigit() or not 0 <= int(value) <= 65535:
        raise UsageError(f"{name} must be a port number (0-65535; 0: any free port), not {value!r}")
    return int(value)


def _settings(group: str, *rows: Setting) -> list[Setting]:
    return [dataclasses.replace(row, group=group) for row in rows]


S = Setting
_TRANSFER, _READS_S3 = ("transfer",), ("transfer", "verify")
SETTINGS: list[Setting] = [
    *_settings(
        "source (S3)",
        S("bucket", ("--bucket",), ("S3_BUCKET_NAME",), "", help="S3 bucket, or s3://bucket/prefix"),
        S("prefix", ("--prefix",), ("S3_PREFIX",), "", help="only keys under this prefix", shown="all"),
        S("page_size", ("--page-size",), (), DEFAULT_PAGE_SIZE, _whole,
          "keys per S3 listing page, 1-1000", commands=_READS_S3, arg={"metavar": "N"}),
        S("all_files", ("--all-files",), (), False, help="copy every object, not only photos and videos",
          commands=_READS_S3, arg={"action": "store_true"}),
        S("no_sidecars", ("--no-sidecars",), (), False, commands=_READS_S3, arg={"action": "store_true"},
          help="leave out the XMP, .aae and Google Takeout JSON files beside photos (by default they are "
               "copied with their photo, and read for its date)"),
        S("filters", ("--include",), (), (), lambda v, n: tuple(v), commands=_READS_S3,
          help="only keys matching this rclone-style glob (repeatable; with --exclude, the first rule that "
               "matches decides, in command-line order)", arg={"action": _FilterAction, "metavar": "GLOB"}),
        S("filters", ("--exclude",), (), (), lambda v, n: tuple(v), "skip keys matching this glob (repeatable)",
          commands=_READS_S3, arg={"action": _FilterAction, "metavar": "GLOB"}),
        S("min_size", ("--min-size",), (), None, parse_size, "skip objects smaller than this, e.g. 100K",
          commands=_READS_S3, arg={"metavar": "SIZE"}),
        S("max_size", ("--max-size",), (), None, parse_size, "skip objects larger than this, e.g. 4G",
          commands=_READS_S3, arg={"metavar": "SIZE"}),
        S("newer_than", ("--newer-than",), (), None, parse_moment, commands=_READS_S3, arg={"metavar": "DATE|AGE"},
          help="only files whose original date is after this (2019-06-30, or an age such as 90d)"),
        S("older_than", ("--older-than",), (), None, parse_moment, "only files whose original date is before this",
          commands=_READS_S3, arg={"metavar": "DATE|AGE"}),
        S("sse_c_key", (), ("S3_SSE_C_KEY",), None, lambda v, n: parse_sse_c_key(v),
          "the base64 of the 256-bit key of objects encrypted with SSE-C"),
        S("s3_endpoint_url", (), ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"), help="an S3-compatible store"),
        S("aws_region", (), ("AWS_REGION", "AWS_DEFAULT_REGION"), help="the bucket's region"),
        S("aws_profile", (), ("AWS_PROFILE",), help="a profile of ~/.aws/config"),
        S("aws_access_key_id", (), ("AWS_ACCESS_KEY_ID",), help="an access key (else boto3 looks: profile, role)"),
        S("aws_secret_access_key", (), ("AWS_SECRET_ACCESS_KEY",), help="its secret"),
        S("aws_session_token", (), ("AWS_SESSION_TOKEN",), help="for temporary credentials"),
        S("aws_ca_bundle", (), ("AWS_CA_BUNDLE",), help="CA certificates of a private S3 endpoint"),
        S("aws_max_attempts", (), ("AWS_MAX_ATTEMPTS",), 10, _positive_int,
          "botocore's standard retries, per request"),
        S("aws_checksum_calculation", (), ("AWS_REQUEST_CHECKSUM_CALCULATION",), help="for some S3-compatible stores"),
        S("aws_checksum_validation", (), ("AWS_RESPONSE_CHECKSUM_VALIDATION",), help="the same, for answers"),
    ),
    *_settings(
        "photos",
        S("layout", ("--layout",), ("CLOUD_TRANSFER_LAYOUT",), LAYOUT_MIRROR, lambda v, n: parse_layout(v),
          "where files go in Drive: mirror = folders as the key prefixes, flat = all in the root folder, date = "
          "YYYY/MM folders from each file's date (date:YYYY and date:YYYY/MM/DD too); fixed once a checkpoint "
          "exists", commands=_READS_S3, arg={"metavar": "mirror|flat|date[:YYYY/MM]"}),
        S("date_from", ("--date-from",), ("CLOUD_TRANSFER_DATE_FROM",), "auto", lambda v, n: parse_date_from(v),
          "each file's date (Drive's created and modified time): auto = the capture time in the file, else the "
          "original file time in S3 metadata, else S3's upload time", commands=_READS_S3,
          arg={"choices": DATE_SOURCES}),
        S("timezone", ("--timezone",), ("CLOUD_TRANSFER_TIMEZONE",), None, lambda v, n: parse_timezone(v),
          "where photos whose EXIF has no time zone were taken, e.g. Europe/Paris", shown="this machine's zone",
          commands=_READS_S3, arg={"metavar": "ZONE"}),
    ),
    *_settings(
        "destination (Google Drive)",
        S("folder_name", ("--folder",), ("DRIVE_FOLDER_NAME",), DEFAULT_FOLDER_NAME,
          help="root folder in My Drive, found again on re-runs", shown=f'"{DEFAULT_FOLDER_NAME}"',
          arg={"metavar": "NAME"}),
        S("folder_id", ("--folder-id",), ("DRIVE_FOLDER_ID",), help="use this existing folder (e.g. in a shared drive)",
          arg={"metavar": "ID"}),
        S("credentials_path", ("--credentials",), (), Path(DEFAULT_CREDENTIALS), _path, "OAuth client file",
          arg={"metavar": "PATH"}),
        S("token_path", ("--token",), (), Path(DEFAULT_TOKEN), _path, "stored token", arg={"metavar": "PATH"}),
        S("full_scope", ("--full-scope",), (), False, arg={"action": "store_true"},
          help="ask for access to all of Drive (needed for a --folder-id the tool did not create)"),
        S("service_account_path", ("--service-account",), (), arg={"metavar": "FILE"},
          help="sign in with this service-account key instead of token.json, e.g. on a server (with "
               "--impersonate, $GOOGLE_APPLICATION_CREDENTIALS when it names one)"),
        S("impersonate", ("--impersonate",), ("DRIVE_IMPERSONATE",), arg={"metavar": "EMAIL"},
          help="with a service account: act for this Workspace user (domain-wide delegation), into their My Drive"),
        S("no_browser", ("--no-browser",), (), False, help="print the consent URL instead of opening it",
          arg={"action": "store_true"}),
        S("oauth_port", ("--oauth-port",), (), 0, _port,
          "local port for the consent redirect, e.g. for ssh -L", shown="any",
          arg={"metavar": "PORT"}),
        S("drive_endpoint_url", (), ("DRIVE_ENDPOINT_URL",), None, lambda v, n: v.rstrip("/") or None,
          "a Drive API emulator, for tests"),
    ),
    *_settings(
        "transfer",
        S("workers", ("--workers",), (), DEFAULT_WORKERS, _whole, "parallel transfers",
          commands=_TRANSFER, arg={"metavar": "N"}),
        S("chunk_size_bytes", ("--chunk-size",), (), DEFAULT_CHUNK_MIB, lambda v, n: parse_chunk_size(_number(v, n)),
          "upload chunk in MiB, a multiple of 0.25", shown=f"{DEFAULT_CHUNK_MIB:g}", commands=_TRANSFER,
          arg={"metavar": "MIB"}),
        S("max_transfer", ("--max-transfer",), (), None, parse_size, commands=_TRANSFER, arg={"metavar": "SIZE"},
          help="start no upload that would take this run past SIZE, e.g. 700G; uploads in flight finish (exit 6; "
               "the next run continues)"),
        S("max_duration_s", ("--max-duration",), (), None, parse_duration, commands=_TRANSFER,
          arg={"metavar": "DURATION"},
          help="start no new upload after this long, e.g. 6h or 1h30m; uploads in flight get a tenth of it "
               "(1-15 min) to finish (exit 6; the next run continues)"),
        S("daily_limit", ("--daily-limit",), ("CLOUD_TRANSFER_DAILY_LIMIT",), DEFAULT_DAILY_LIMIT,
          lambda v, n: parse_size(v, n, allow_off=True), commands=(*_TRANSFER, "status"), arg={"metavar": "SIZE|off"},
          help="bytes per rolling 24 hours across runs, kept under Google's ~750 GB daily upload cap; when "
               "spent, exit 5 with the time to resume"),
        S("notify_url", ("--notify",), ("CLOUD_TRANSFER_NOTIFY",), None, lambda v, n: parse_notify_url(v),
          commands=_TRANSFER, arg={"metavar": "URL"},
          help="tell a monitor each run's start (URL/start) and end: URL with the JSON report when on track, "
               "URL/fail otherwise (healthchecks.io); an Uptime Kuma .../api/push/... URL gets status=up|down at "
               "the end"),
        S("bwlimit", ("--bwlimit",), ("CLOUD_TRANSFER_BWLIMIT",), "off", lambda v, n: parse_bwlimit(v),
          commands=_TRANSFER, arg={"metavar": "RATE|TIMETABLE"},
          help="cap upload bytes per second for all workers together, e.g. 4M, or a day timetable in local "
               "time: \"08:00,1M 19:00,4M 23:00,off\""),
        S("order", ("--order",), ("CLOUD_TRANSFER_ORDER",), "key", lambda v, n: parse_order(v), commands=_TRANSFER,
          arg={"choices": ORDERS},
          help="which objects go first: key (listing order), oldest/newest (S3 LastModified), smallest/largest; "
               "all but key list the whole bucket before the first upload"),
        S("ignore_quota", ("--ignore-quota",), (), False, commands=_TRANSFER, arg={"action": "store_true"},
          help="start even when Drive's free space looks too small for what is left to copy"),
        S("temp_dir", ("--temp-dir",), (), None, _path, "where downloads are staged", shown="system temp",
          arg={"metavar": "PATH"}),
        S("dry_run", ("--dry-run", "-n"), (), False, help="list what would be copied (rollback: removed); write "
          "nothing anywhere", commands=("transfer", "rollback"), arg={"action": "store_true"}),
        S("check", ("--check",), (), False, commands=_TRANSFER, arg={"action": "store_true"},
          help="check S3, the Google sign-in, the Drive folder, the checkpoint, the temp dir, Drive's free space "
               "and today's budget, one line each; write nothing (exit 0 when all pass)"),
        S("new_root", ("--new-root",), (), False, commands=_TRANSFER, arg={"action": "store_true"},
          help="start a new, separate copy in a new root folder (e.g. after signing in with another OAuth "
               "client or account, which cannot see the earlier copy)"),
        S("recheck", ("--recheck",), (), False, commands=_TRANSFER, arg={"action": "store_true"},
          help="do not trust the checkpoint's 'done': look in Drive for every object (re-copies files deleted "
               "or trashed in Drive; uploads nothing that is intact)"),
        S("removed_in_drive", ("--removed-in-drive",), (), None, commands=_TRANSFER,
          arg={"choices": (REMOVED_COPY, REMOVED_LEAVE)},
          help="copies trashed, deleted or moved away in Drive: copy them again (the default) or leave them "
               "out; remembered by the checkpoint for later runs"),
        S("backoff_base_s", (), ("CLOUD_TRANSFER_BACKOFF_BASE_S",), BACKOFF_BASE_S, _positive_float,
          "the first retry waits up to this long, s (full jitter)"),
        S("backoff_cap_s", (), ("CLOUD_TRANSFER_BACKOFF_CAP_S",), BACKOFF_CAP_S, _positive_float,
          "no single retry wait is longer, s (but a server's Retry-After)"),
        S("outage_window_s", (), ("CLOUD_TRANSFER_OUTAGE_S",), OUTAGE_WINDOW_S, _positive_float,
          "a service failing every request this long, s, stops the run (exit 7)"),
        S("lease_settle_s", (), ("CLOUD_TRANSFER_LEASE_SETTLE_S",), LEASE_SETTLE_S, _positive_float,
          "the wait in taking a Drive folder for one run, s"),
    ),
    *_settings(
        "state and safety",
        S("checkpoint_path", ("--checkpoint",), (), Path(DEFAULT_CHECKPOINT), _path, "checkpoint file",
          arg={"metavar": "PATH"}),
        S("reset_checkpoint", ("--reset-checkpoint",), (), False, commands=_TRANSFER, arg={"action": "store_true"},
          help="move an unusable or foreign checkpoint aside and start a new one"),
        S("rollback_run", ("--run",), (), None, help="only this run", commands=("rollback",),
          arg={"metavar": "last|ID"}),
        S("permanent", ("--permanent",), (), False, help="delete instead of moving to trash", commands=("rollback",),
          arg={"action": "store_true"}),
        S("assume_yes", ("--yes",), (), False, help="do not ask", commands=("rollback",), arg={"action": "store_true"}),
    ),
    *_settings(
        "output",
        S("quiet", ("--quiet", "-q"), (), False, help="only warnings and errors (and the exit code)",
          arg={"action": "store_true"}),
        S("verbose", ("--verbose", "-v"), (), False, arg={"action": "store_true"},
          help="one line per copied object, debug logging, tracebacks on internal errors"),
        S("log_file", ("--log-file",), (), None, _path, "also write the full log here", arg={"metavar": "PATH"}),
        S("report_path", ("--report",), (), None, _path, commands=_TRANSFER, arg={"metavar": "PATH"},
          help="write a JSON report of the run here (counts, bytes, rates, errors, every object)"),
        S("json_output", ("--json",), (), False, help="print a machine-readable report", commands=("verify", "status"),
          arg={"action": "store_true"}),
        S("html_path", ("--html",), (), None, _path, commands=("status",), arg={"metavar": "PATH"},
          help="also write a self-contained HTML page of the copy here (open it in a browser)"),
        S("progress_interval_s", (), ("CLOUD_TRANSFER_PROGRESS_S",), LOG_INTERVAL_S, _positive_float,
          "a progress line in the log this often, s"),
        S("env_file", ("--env-file",), (), Path(DEFAULT_ENV_FILE), _path, "read settings from this file",
          arg={"metavar": "PATH"}),
    ),
]
del S
KNOWN_SETTINGS = tuple(dict.fromkeys(name for row in SETTINGS for name in row.env))   # .env typo check


def load_config(argv: list[str] | None, environ: dict[str, str]) -> Config:
    """Parse argv and merge it with the environment and .env (SETTINGS); the only reader of either."""
    args = build_parser().parse_args(argv)
    env_file = Path(args.env_file or DEFAULT_ENV_FILE)
    from_file = read_env_file(env_file, required=bool(args.env_file))
    env = {**from_file, **{k: v for k, v in environ.items()}}
    if args.command in ("transfer", "verify") and not (args.bucket or env.get("S3_BUCKET_NAME", "").strip()) \
            and not env_file.is_file():
        raise UsageError(f"no {env_file} here ({Path.cwd()}) and S3_BUCKET_NAME is not set: copy .env.example "
                         "to .env, fill it in, and run the tool from that directory (or pass --bucket)")

    if args.command in ("transfer", "verify"):
        for name, example in EXAMPLE_ENV_VALUES.items():
            if env.get(name, "").strip() == example and not (name == "S3_BUCKET_NAME" and args.bucket):
                where = "the environment" if name in environ else str(env_file)
                raise UsageError(f"{name} in {where} still holds the example's value {example!r} from .env.example: "
                                 "put your own there")

    texts: dict[str, Any] = {}    # each setting as given, before it is read
    values: dict[str, Any] = {}
    for row in SETTINGS:
        given = getattr(args, row.field) if row.flags else None
        if given is not None and given is not False and args.command not in row.commands:
            raise UsageError(f"{row.flags[0]} only applies to {' and '.join(row.commands)}")
        text, name = given, row.name
        for variable in row.env if text is None else ():
            if env.get(variable, "").strip():
                text, name = env[variable].strip(), variable
                break
        text = row.default if text is None else text
        texts[row.field] = text
        values[row.field] = row.parse(text, name) if row.parse is not None and text is not None else text
    values["bucket"], values["prefix"] = split_bucket(values["bucket"], values["prefix"])
    values["service_account_path"] = service_account_path(args.service_account_path, env, bool(values["impersonate"]))
    config = Config(
        command=args.command, **values, daily_limit_text=str(texts["daily_limit"]),
        notices=tuple(unknown_setting_notices(from_file, env_file)),
        bucket_origin="--bucket" if args.bucket else "S3_BUCKET_NAME in the environment"
                      if environ.get("S3_BUCKET_NAME", "").strip() else f"S3_BUCKET_NAME in {env_file}",
    )
    try:
        validate_config(config)
    except UsageError as exc:
        if config.notices:   # the typo is likely the cause: say both, still on one line
            raise UsageError(f"{exc} ({'; '.join(config.notices)})") from None
        raise
    return config


def service_account_path(flag: str | None, environ: dict[str, str], impersonate: bool) -> Path | None:
    """--service-account (`--service-account ""`: none), else GOOGLE_APPLICATION_CREDENTIALS when it
    names a service-account key and --impersonate (or DRIVE_IMPERSONATE) asks for one: servers set
    that variable for other Google tools, and it must never take the place of token.json unasked."""
    if flag is not None:
        return Path(flag) if flag.strip() else None
    named = environ.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip()
    if named and impersonate:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(Path(named).read_text(encoding="utf-8")).get("type") == "service_account":
                return Path(named)
    return None


def split_bucket(bucket: str, prefix: str) -> tuple[str, str]:
    """`s3://name/prefix` (as the AWS CLI writes it) → (name, prefix); a plain name is kept."""
    if not bucket.lower().startswith("s3://"):
        if bucket.startswith(("arn:", "http://", "https://")) or "/" in bucket:
            raise UsageError(f"bucket {bucket!r}: give its name (my-photos) or s3://my-photos/some/prefix; a "
                             "custom endpoint goes in AWS_ENDPOINT_URL")
        return bucket, prefix
    name, _, in_url = bucket[5:].partition("/")
    if in_url and prefix and in_url != prefix:
        raise UsageError(f"the prefix is given twice: {bucket!r} and --prefix {prefix!r}; keep one")
    return name, prefix or in_url


def validate_config(config: Config) -> None:
    """Every cross-flag rule, in one place."""
    needs_bucket = config.command in ("transfer", "verify")
    if needs_bucket and not config.bucket:
        raise UsageError("S3_BUCKET_NAME is empty or not set: add it to .env or pass --bucket")
    if config.aws_access_key_id and not config.aws_secret_access_key:
        raise UsageError("AWS_SECRET_ACCESS_KEY is empty or not set (AWS_ACCESS_KEY_ID is): add it to .env")
    if config.aws_secret_access_key and not config.aws_access_key_id:
        raise UsageError("AWS_ACCESS_KEY_ID is empty or not set (AWS_SECRET_ACCESS_KEY is): add it to .env")
    if not 1 <= config.workers <= 64:
        raise UsageError(f"--workers must be between 1 and 64, not {config.workers}")
    if not 1 <= config.page_size <= 1000:
        raise UsageError(f"--page-size must be between 1 and 1000, not {config.page_size}")
    if config.quiet and config.verbose:
        raise UsageError("--quiet and --verbose exclude each other")
    if config.prefix.startswith("/"):
        raise UsageError(f"--prefix must not start with '/': S3 keys have no leading slash ({config.prefix!r})")
    if config.reset_checkpoint and (config.command != "transfer" or config.dry_run or config.check):
        raise UsageError("--reset-checkpoint only applies to a transfer (not a dry run or --check)")
    if config.impersonate and config.service_account_path is None:
        raise UsageError("--impersonate needs a service account (--service-account or GOOGLE_APPLICATION_CREDENTIALS)")
    if config.service_account_path and not (config.impersonate or config.folder_id) and config.command == "transfer" \
            and not config.dry_run:
        raise UsageError("a service account has no Drive storage of its own (Google: \"Service Accounts do not have "
                         "storage quota\"): pass --impersonate EMAIL (domain-wide delegation) or --folder-id of a "
                         "folder in a shared drive it is a member of")
    if config.check and (config.command != "transfer" or config.dry_run):
        raise UsageError("--check is a transfer's pre-flight: use it without --dry-run")
    if config.new_root and (config.command != "transfer" or config.folder_id):
        raise UsageError("--new-root only applies to a transfer into a folder found by name (not --folder-id)")
    for _, pattern in config.filters:
        glob_regex(pattern)   # a malformed one fails here, before any work
    if config.min_size is not None and config.max_size is not None and config.min_size > config.max_size:
        raise UsageError("--min-size is larger than --max-size: nothing would be copied")
    if config.drive_endpoint_url and not re.match(r"^https?://[^/\s]+", config.drive_endpoint_url):
        raise UsageError(f"DRIVE_ENDPOINT_URL must be an http(s) URL, not {config.drive_endpoint_url!r}")

#######################################################################
# Output and progress #################################################
#######################################################################
# Stats counts; Reporter draws (tqdm on a terminal, a log line every LOG_INTERVAL_S otherwise);
# logging goes through a filter that blanks every known secret.

log = logging.getLogger("cloud_transfer")
file_log = logging.getLogger("cloud_transfer.file")   # --log-file only: what the terminal shows another way


class ObjectLedger:
    """Every object a run decided about (copied, found in Drive, skipped, failed, waiting for a
    restore), a JSON line each in an unnamed temporary file, for the --report's `objects`: a run of a
    million photos holds none of them in memory, and the file goes with the process."""

    def __init__(self, directory: Path | None = None):
        self._file = tempfile.TemporaryFile(dir=directory)
        self._lock = threading.Lock()
        self.broken = ""   # why the list is incomplete (a full disk): the report says so instead

    def add(self, key: str, outcome: str, **details: Any) -> None:
        record = {"key": key, "outcome": outcome, **{k: v for k, v in details.items() if v not in (None, "")}}
        line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        with self._lock:
            if self.broken:
                return
            try:
                self._file.write(line)
            except OSError as exc:
                self.broken = f"the list of objects is incomplete: {exc.strerror}"

    def lines(self) -> Iterator[bytes]:
        with self._lock:
            self._file.flush()
            self._file.seek(0)
            for line in self._file:
                yield line.rstrip(b"\n")

    def close(self) -> None:
        self._file.close()


class Stats:
    """Thread-safe counters of one run; no output of its own (`ledger`: the objects, for --report)."""

    FIELDS = ("listed", "eligible", "eligible_bytes", "already_done", "already_done_bytes",
              "transferred", "transferred_bytes", "adopted", "updated", "failed",
              "verified", "etag_checked", "checksum_mismatches", "retries", "rate_limited", "drive_requests", "internal_errors",
              "date_header_reads", "date_header_bytes",
              "listing_complete", "bwlimit_wait_ms", "archived", "archived_bytes", "restoring", "copied_again",
              "adopted_bytes", *(f"date_{source}" for source in DATE_SOURCE_NAMES))

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self.failures: list[tuple[str, str]] = []   # (key, reason), first few kept for the summary
        self.failure_reasons: Counter[str] = Counter()
        self.archived_example: str | None = None   # a key for the restore command the summary shows
        self.again: list[tuple[str, str]] = []     # (key, how its copy left Drive), first few
        self.listing_done = False
        self.ledger: ObjectLedger | None = None

    def note(self, key: str, outcome: str, **details: Any) -> None:
        if self.ledger is not None:
            self.ledger.add(key, outcome, **details)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] += n

    def add_all(self, counts: dict[str, int]) -> None:
        with self._lock:
            self.counts.update(counts)

    def skip(self, reason: str, key: str | None = None) -> None:
        with self._lock:
            self.skipped[reason] += 1
        if key is not None:
            self.note(key, "skipped", reason=reason)

    def archive(self, obj: SourceObject, reason: str) -> None:
        """An object that waits for a restore (or is being restored): counted apart, not skipped."""
        with self._lock:
            self.counts["archived"] += 1
            self.counts["archived_bytes"] += obj.size
            self.counts["restoring"] += reason == SKIP_RESTORING
            self.archived_example = self.archived_example or obj.key
        self.note(obj.key, "waiting for a restore", reason=reason, size=obj.size)

    def copied_again(self, key: str, why: str) -> None:
        with self._lock:
            self.counts["copied_again"] += 1
            if len(self.again) < 20:
                self.again.append((key, why))

    def fail(self, key: str, reason: str) -> None:
        with self._lock:
            self.counts["failed"] += 1
            self.failure_reasons[reason] += 1
            if len(self.failures) < 20:
                self.failures.append((key, reason))
        self.note(key, "failed", reason=reason)

    def __getitem__(self, name: str) -> int:
        with self._lock:
            return self.counts[name]

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            result: dict[str, Any] = {name: self.counts[name] for name in self.FIELDS}
            result["skipped"] = dict(self.skipped)
            result["failures"] = [{"key": k, "reason": r} for k, r in self.failures]
            result["failure_reasons"] = dict(self.failure_reasons)
            result["archived_example"] = self.archived_example
            result["copied_again_examples"] = [{"key": k, "reason": r} for k, r in self.again]
            return result


class SecretFilter(logging.Filter):
    """Blanks secrets (AWS keys, OAuth tokens, client secret) in every log record."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, *secrets: str | None) -> None:
        self._secrets.update(s for s in secrets if s and len(s) >= 6)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            import traceback
            message += "\n" + "".join(traceback.format_exception(*record.exc_info))
            record.exc_info = None
        record.msg, record.args = self.redact(message), ()
        return True


SECRETS = SecretFilter()


def setup_logging(config: Config) -> None:
    """Console at WARNING/INFO/DEBUG by --quiet/--verbose; --log-file always gets INFO or more."""
    log.handlers.clear()
    log.setLevel(logging.DEBUG)
    log.propagate = False
    logging.getLogger("exifread").setLevel(logging.CRITICAL)   # "format not recognized" for videos, PNGs...
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if config.quiet else logging.DEBUG if config.verbose else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    console.addFilter(SECRETS)
    log.addHandler(console)
    file_log.handlers.clear()
    file_log.propagate = False   # its lines are for --log-file only; without one they go nowhere
    if config.log_file:
        try:
            handler = logging.FileHandler(config.log_file, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot open --log-file {config.log_file}: {exc.strerror}") from None
        handler.setLevel(logging.DEBUG if config.verbose else logging.INFO)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handler.addFilter(SECRETS)
        log.addHandler(handler)
        file_log.setLevel(logging.INFO)
        file_log.addHandler(handler)


def format_duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 1440}d{minutes // 60 % 24}h" if minutes >= 1440 else \
        f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{int(seconds) % 60:02d}s"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def progress_bar(desc: str, *, position: int, as_bytes: bool, growing: Callable[[], bool], file: Any = None) -> Any:
    """A tqdm bar whose figures say only what is known: while S3 is still being listed its total
    grows, so it carries a "+" and no time left is guessed; bytes in binary units under their own
    names (tqdm calls MiB "MB" and counts its rate in decimal MB)."""
    from tqdm import tqdm

    def amount(n: float) -> str:
        return format_bytes(n) if as_bytes else f"{int(n):,}"

    class Bar(tqdm):  # type: ignore[misc,valid-type]
        @property
        def format_dict(self) -> dict[str, Any]:
            figures = super().format_dict
            n, total, elapsed = figures["n"], figures["total"] or 0, figures["elapsed"]
            rate = figures["rate"] or ((n - figures["initial"]) / elapsed if elapsed else None)
            more = growing()
            figures["shown"] = f"{amount(n)}/{amount(total)}{'+' if more else ''}" + ("" if as_bytes else " files")
            figures["speed"] = ((f"{format_bytes(rate)}/s" if as_bytes else f"{rate:.1f} files/s") if rate
                                else "…")
            figures["left"] = ("" if more or not rate or total <= n
                               else f", {tqdm.format_interval((total - n) / rate)} left")
            return figures

    return Bar(total=0, desc=desc, position=position, dynamic_ncols=True, file=file,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {shown} [{elapsed}{left}, {speed}]")


class Reporter:
    """Renders a Stats while a run goes: tqdm bars on a terminal, else a log line every interval."""

    def __init__(self, stats: Stats, *, enabled: bool, use_bars: bool,
                 clock: Callable[[], float] = time.monotonic, interval_s: float = LOG_INTERVAL_S,
                 bandwidth: BandwidthLimit | None = None):
        self.stats, self.enabled, self.clock, self.interval_s = stats, enabled, clock, interval_s
        self.bandwidth = bandwidth
        self._bars: tuple[Any, Any] | None = None
        self._last_log = clock()
        self._started = clock()
        self._log_redirect = contextlib.ExitStack()
        if enabled and use_bars:
            from tqdm.contrib.logging import logging_redirect_tqdm

            # Log lines go through tqdm.write while bars are drawn, so they do not tear the bars.
            self._log_redirect.enter_context(logging_redirect_tqdm(loggers=[log]))
            growing = lambda: not stats.listing_done   # noqa: E731
            self._bars = (progress_bar("files", position=0, as_bytes=False, growing=growing),
                          progress_bar("bytes", position=1, as_bytes=True, growing=growing))

    def tick(self) -> None:
        if not (self.enabled or file_log.handlers):
            return
        s = self.stats.as_dict()
        files_done = s["transferred"] + s["adopted"] + s["failed"]
        todo_files = s["eligible"] - s["already_done"]
        if self._bars:
            # Totals grow as listing pages arrive; update() (not assigning n) keeps tqdm's rate and ETA.
            files_bar, bytes_bar = self._bars
            files_bar.total = todo_files
            bytes_bar.total = max(s["eligible_bytes"] - s["already_done_bytes"], s["transferred_bytes"])
            files_bar.update(files_done - files_bar.n)
            bytes_bar.update(s["transferred_bytes"] - bytes_bar.n)
        if self.clock() - self._last_log >= self.interval_s:
            # A line a log can keep (cron, --log-file): the bars, if any, speak to the terminal.
            self._last_log = self.clock()
            elapsed = max(self.clock() - self._started, 1e-9)
            rate = s["transferred_bytes"] / elapsed
            left = s["eligible_bytes"] - s["already_done_bytes"] - s["transferred_bytes"]
            eta = f", ETA {format_duration(left / rate)}" if self.stats.listing_done and rate > 0 and left > 0 else ""
            limit = self.bandwidth.rate() if self.bandwidth else None
            line = (f"progress: {files_done}/{todo_files}{'' if self.stats.listing_done else '+'} files, "
                    f"{format_bytes(s['transferred_bytes'])} at {format_bytes(rate)}/s"
                    f"{f' (--bwlimit {format_bytes(limit)}/s)' if limit else ''}, {s['failed']} failed{eta}")
            (file_log if self._bars or not self.enabled else log).info("%s", line)

    def close(self) -> None:
        if self._bars:
            self.tick()
            for bar in self._bars:
                bar.close()
            self._bars = None
        self._log_redirect.close()


def summary_table(stats: dict[str, Any], elapsed_s: float, run_id: str) -> str:
    """The end-of-run validation table: counts, checksum results, request cost."""
    copied = stats["transferred"] + stats["adopted"]
    skipped = stats["skipped"]
    skipped_text = ", ".join(f"{reason} {n}" for reason, n in sorted(skipped.items()))
    per_file = f" ({stats['drive_requests'] / copied:.2f} per file)" if copied else ""
    rate = format_bytes(stats["transferred_bytes"] / elapsed_s) + "/s" if elapsed_s > 0 else "-"
    rows = [
        ("listed", f"{stats['listed']}"),
        ("eligible", f"{stats['eligible']}  ({format_bytes(stats['eligible_bytes'])})"),
        ("skipped", f"{sum(skipped.values())}" + (f"  ({skipped_text})" if skipped_text else "")),
        ("already done", f"{stats['already_done']}"),
        *([("waiting for restore", f"{stats['archived']}  ({format_bytes(stats['archived_bytes'])} archived in S3"
            + (f", {stats['restoring']} being restored" if stats["restoring"] else "") + ")")]
          if stats["archived"] else []),
        ("transferred", f"{stats['transferred']}  ({format_bytes(stats['transferred_bytes'])}, {rate})"
                        + (f", {stats['updated']} as new revisions" if stats["updated"] else "")
                        + (f", {stats['copied_again']} copied again (their copy had left Drive)"
                           if stats["copied_again"] else "")),
        ("found intact in Drive", f"{stats['adopted']}"),
        ("failed", f"{stats['failed']}"),
        ("dates", ", ".join(f"{stats[f'date_{source}']} {said}" for source, said in DATE_SOURCE_NAMES.items()
                            if stats[f"date_{source}"] or source in ("exif", "video", "metadata", "s3"))
                  + (f"  ({stats['date_header_reads']} ranged GETs of file headers and sidecars, "
                     f"{format_bytes(stats['date_header_bytes'])})" if stats["date_header_reads"] else "")),
        ("checksums", f"{stats['verified']} with Drive's MD5 = the downloaded bytes' "
                      f"({stats['etag_checked']} also = the S3 ETag; the others' ETags are no MD5: "
                      f"multipart, KMS/SSE-C or another store), {stats['checksum_mismatches']} mismatches re-sent"),
        ("retries", f"{stats['retries']}" + (f"  ({stats['rate_limited']} after Drive's rate limit: writes paced)"
                                             if stats["rate_limited"] else "")),
        ("Drive requests", f"{stats['drive_requests']}{per_file}"),
        ("elapsed", f"{elapsed_s:.1f} s"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [f"Summary of run {run_id}"] + [f"  {label:<{width}}  {value}" for label, value in rows]
    for failure in stats["failures"][:5]:
        lines.append(f"  failed: {failure['key']}: {failure['reason']}")
    return "\n".join(lines)

#######################################################################
# Retry and pacing ####################################################
#######################################################################
# Backoff and Pacer are pure delay calculations; the only sleeping happens in the callers'
# injected `sleep` (which is the run's stop event's wait, so Ctrl-C cuts a backoff short).


class Backoff:
    """Exponential backoff with full jitter and a cap; honours a server's Retry-After."""

    def __init__(self, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S,
                 rng: Callable[[], float] = random.random):
        self.base_s, self.cap_s, self.rng = base_s, cap_s, rng

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** max(attempt - 1, 0))
        jittered = self.rng() * ceiling
        if retry_after_s is not None:
            return max(min(retry_after_s, 3600.0), jittered)
        return jittered


class Pacer:
    """One write rate shared by every worker, measured from Drive's answers.

    Drive limits each user's writes (creates, updates) far below what 16 workers can send, answers
    403 userRateLimitExceeded or 429 beyond it, and counts the refused requests too; it also sends
    such answers now and then with no limit being hit. The limit acts as a token bucket (a burst
    allowance refilled at a steady rate), and a refusal at an empty bucket gives its rate away: the
    writes accepted between two such refusals are what it refilled in between. So:
    - Nothing is paced until a limit is plainly hit: PACE_START_REFUSALS of the last PACE_OUTCOMES
      writes refused, or PACE_START_IN_A_ROW in a row (the writes in flight when the allowance ran
      out). Pacing starts at half of what Drive accepted over the last few seconds, or just under
      the limit measured before, and doubles every PACE_DISCOVERY_DOUBLING_S until refused.
    - A refusal of a write sent after the last cut, with PACE_MEASURE_WRITES or more accepted since
      the cut and the rate at or above the limit, measures it: the limit is the accepted writes
      over the seconds of the last PACE_MEASURES such spans (a bucket that filled up meanwhile
      makes that an underestimate, which the next measures mend), and the rate is cut to
      PACE_MARGIN under it. From there it grows slowly, twice as fast every
      PACE_PROBE_DOUBLING_WRITES accepted writes, so it spends its time just under the limit,
      meets it again every half a minute or so (one refusal), and follows a limit that rises.
    - A refusal below the measured limit cannot come from that bucket: it is one of the random
      refusals, and the rate stays. PACE_NOISE_REFUSALS of them in a row, each within
      PACE_MEASURE_WRITES writes of the last, are a limit that fell: it is found anew.
    - A refusal too soon after a cut to measure is a rate over the limit: cut by PACE_DECREASE,
      or to the bound that refusal sets (the bucket was empty at the cut, so it refilled no more
      than the writes accepted since, plus one), and regrown fast no further than just under it.
    - PACE_FORGET_S with no refusal at all ends pacing, and what was measured is forgotten: a
      storm of refusals must not leave the run at the crawl it measured then.
    Refusals that persist (a second cut with no write accepted in between) also pause every
    request with exponential backoff; a Retry-After pauses every request for that long. Reads
    (gets, listings) are not paced, only held by pauses. Thread-safe.
    """

    def __init__(self, backoff: Backoff, clock: Callable[[], float] = time.monotonic):
        self.backoff, self.clock = backoff, clock
        self._lock = threading.Lock()
        self.rate: float | None = None          # writes per second; None: Drive has not pushed back
        self.limit: float | None = None         # the rate Drive was measured to sustain
        self._ceiling = math.inf                # the rate regrows fast up to this, slowly beyond
        self._next_write = 0.0                  # the earliest slot for the next paced write
        self._paused_until = 0.0                # every request waits for this
        self._last_refused = -math.inf
        self._last_decrease = -math.inf
        self._since_cut = 0                     # writes sent after the last cut and accepted
        self._since_refused = 0                 # writes accepted since the last refusal
        self._measures: deque[tuple[int, float]] = deque(maxlen=PACE_MEASURES)   # (accepted, seconds) between cuts
        self._below = 0                         # refusals below the limit in a row, few writes apart
        self._strikes = 0                       # cuts since the last accepted write
        self._accepted: deque[float] = deque()   # writes accepted in the last window
        self._outcomes: deque[tuple[float, bool]] = deque(maxlen=PACE_OUTCOMES)   # last write answers: (when, refused)
        self._first_write: float | None = None
        self._daily_cap: tuple[float, float, int] | None = None   # cap-like answers: (first, last, count)
        self.probe = False   # Google refused at its cap in the last 24 hours: one refused upload stops the run

    def reserve(self, write: bool = False) -> float:
        """0: go now (a paced write takes the slot); else how long to wait before asking again.
        Waiting workers ask again rather than queue for slots handed out in advance: when the rate
        grows, the next slot comes sooner for all of them (16 slots handed out at 1/s would hold
        the last worker 16 s whatever the rate does meanwhile)."""
        with self._lock:
            now = self.clock()
            wait = self._paused_until - now
            if write:
                if self._first_write is None:
                    self._first_write = now
                if self.rate:
                    wait = max(wait, self._next_write - now)
                    if wait <= 0:
                        self._next_write = now + 1 / self.rate
            return max(wait, 0.0)

    def rate_limited(self, retry_after_s: float | None, daily_cap: bool = False, sent_at: float | None = None) -> None:
        """A rate-limit answer to a request sent at `sent_at` (the pacer's clock). Uploads refused
        with the daily cap's message for the whole of the longest backoff (`backoff.cap_s`, 64 s),
        through growing pauses and with no upload going through, are the cap itself:
        QuotaExceededError stops the run. The message is undocumented and has been seen to clear
        (rclone's drive backend, stop_on_upload_limit)."""
        with self._lock:
            now = self.clock()
            if daily_cap and self.probe:
                raise GoogleCapError("Google refused new uploads again")
            if daily_cap:
                first, last, count = self._daily_cap or (now, now, 0)
                # an old, lone answer (longer ago than a backoff and a paced slot): a new episode
                if now - last > self.backoff.cap_s + (1 / self.rate if self.rate else 0):
                    first, count = now, 0
                self._daily_cap = (first, now, count + 1)
                if count + 1 >= 3 and now - first >= self.backoff.cap_s:
                    raise GoogleCapError("Google refused new uploads with its daily limit")
            if retry_after_s is not None:
                self._pause_until(now + min(retry_after_s, 3600.0))
            self._outcomes.append((now, True))
            self._last_refused = now
            if self.rate is None:
                recent = [refused for when, refused in self._outcomes if when >= now - PACE_WINDOW_S]
                if sum(recent) < PACE_START_REFUSALS and not (len(recent) >= PACE_START_IN_A_ROW
                                                              and all(recent[-PACE_START_IN_A_ROW:])):
                    # sporadic refusals are retried; only a limit being hit starts pacing. Until
                    # the writes in flight have answered (one round trip), none are sent.
                    if sent_at is not None:
                        self._pause_until(now + min(now - sent_at, 1.0))
                    return
                self._ceiling = (1 - PACE_MARGIN) * self.limit if self.limit else math.inf
                self.rate = min(self._ceiling, max(PACE_START_MIN_RATE, PACE_FIRST_DECREASE * self._accepted_rate(now)))
            elif sent_at is not None and sent_at <= self._last_decrease:
                return   # sent before the last cut: the same episode
            else:
                # a pause is part of the span: the bucket refills meanwhile (a long one wastes what
                # overflows, and the measure comes out low: a lower bound, as when the rate was low)
                span = max(now - self._last_decrease, 1e-3)
                accepted = self._since_cut
                if accepted >= PACE_MEASURE_WRITES and (self.limit is None or self.rate >= self.limit):
                    self._measures.append((accepted, span))
                    self.limit = sum(n for n, _ in self._measures) / sum(t for _, t in self._measures)
                    self.rate = self._ceiling = (1 - PACE_MARGIN) * self.limit
                    self._below = 0
                elif self.limit is not None and self.rate < self.limit:
                    quick, self._since_refused = self._since_refused < PACE_MEASURE_WRITES, 0
                    self._below = self._below + 1 if quick else 0
                    if self._below < PACE_NOISE_REFUSALS:
                        return   # a random refusal
                    log.debug("Drive rate limit: refused again and again under %.2f/s", self.limit)
                    self.limit, self._ceiling, self._below = None, math.inf, 0
                    self._measures.clear()
                    self.rate *= PACE_DECREASE
                else:
                    ceiling = (1 - PACE_MARGIN) * self.rate
                    if accepted:   # no deeper than half: the refusal may be a random one
                        ceiling = max(min(ceiling, (1 - PACE_MARGIN) * (accepted + 1) / span), self.rate / 2)
                    self._ceiling = ceiling
                    self.rate = min(self.rate * PACE_DECREASE, ceiling)
            self._cut(now)

    def _cut(self, now: float) -> None:
        self.rate = max(self.rate or 0.0, PACE_MIN_RATE)
        self._last_decrease, self._since_cut, self._since_refused = now, 0, 0
        self._next_write = now + 1 / self.rate
        self._strikes += 1
        if self._strikes > 1:
            self._pause_until(now + self.backoff.delay(self._strikes - 1))
        log.debug("Drive rate limit: pacing writes at %.2f/s", self.rate)

    def _pause_until(self, until: float) -> None:
        self._paused_until = max(self._paused_until, until)

    def _accepted_rate(self, now: float) -> float:
        self._forget_old(now)
        span = min(PACE_WINDOW_S, max(1.0, now - (self._first_write if self._first_write is not None else now)))
        return len(self._accepted) / span

    def _forget_old(self, now: float) -> None:
        while self._accepted and self._accepted[0] < now - PACE_WINDOW_S:
            self._accepted.popleft()

    def succeeded(self, upload: bool = False, write: bool = False, sent_at: float | None = None) -> None:
        with self._lock:
            if upload:
                self._daily_cap, self.probe = None, False
            if not write:
                return
            now = self.clock()
            self._strikes = 0
            self._outcomes.append((now, False))
            self._accepted.append(now)
            self._forget_old(now)
            self._since_refused += 1
            if sent_at is None or sent_at > self._last_decrease:
                self._since_cut += 1
            if self.rate is None:
                return
            if now - self._last_refused > PACE_FORGET_S:
                # minutes without a refusal: whatever was measured is stale (a storm of refusals
                # may have left it far too low); unpaced, the next limit hit is measured afresh
                log.debug("Drive rate limit: no refusal for %d s, writes no longer paced", PACE_FORGET_S)
                self.rate = self.limit = None
                self._measures.clear()
                return
            if self._next_write > now - 1 / self.rate:   # the rate holds writes back
                if self.rate < self._ceiling:   # doubling every PACE_DISCOVERY_DOUBLING_S
                    self.rate = min(self.rate * 2 ** (1 / (self.rate * PACE_DISCOVERY_DOUBLING_S)), self._ceiling)
                else:
                    growth = PACE_PROBE_GROWTH * 2 ** (self._since_cut / PACE_PROBE_DOUBLING_WRITES)
                    self.rate *= 1 + min(growth, PACE_PROBE_MAX_GROWTH)


class OutageWatch:
    """Notices a service that fails every request, from every worker, for `window_s`: then the run
    stops (UnavailableError, exit 7) with the state saved, instead of retrying object after object
    for hours. Any success or progress resets it, so one flaky worker never stops a run; and so do
    quiet spells (no failure for half the window, longer than botocore's ten attempts against a
    silent endpoint take, about 265 s): an outage keeps failing."""

    def __init__(self, window_s: float = OUTAGE_WINDOW_S, clock: Callable[[], float] = time.monotonic):
        self.window_s, self.clock = window_s, clock
        self._lock = threading.Lock()
        self._failing: dict[str, tuple[float, float]] = {}   # service -> (failing since, last failure)

    def ok(self, service: str) -> None:
        if self._failing:   # cheap enough to call for every block downloaded
            with self._lock:
                self._failing.pop(service, None)

    def failed(self, service: str, reason: str) -> None:
        with self._lock:
            now = self.clock()
            since, last = self._failing.get(service, (now, now))
            if now - last > self.window_s / 2:
                since = now
            self._failing[service] = (since, now)
        if now - since >= self.window_s:
            raise UnavailableError(f"{service} has failed every request for {now - since:.0f} s ({reason}): "
                                   "stopped with the state saved; re-run later")


def format_bwlimit(timetable: tuple[tuple[int, int | None], ...]) -> str:
    def rate(value: int | None) -> str:
        return f"{format_bytes(value)}/s" if value else "off"
    if len(timetable) == 1 and timetable[0][0] == 0:
        return rate(timetable[0][1])
    return " ".join(f"{minute // 60:02d}:{minute % 60:02d},{rate(value)}" for minute, value in timetable)


class BandwidthLimit:
    """--bwlimit: upload bytes per second for the whole process. Every read of bytes about to be
    sent waits its turn on one clock that all workers share, so the rate holds however many upload
    at once. Up to a second of unused time is credited (a send's own duration would otherwise be
    lost between two reads); an idle process gathers no larger burst than that."""

    def __init__(self, timetable: tuple[tuple[int, int | None], ...], stop: threading.Event, *,
                 stats: Stats | None = None, clock: Callable[[], float] = time.monotonic,
                 local_now: Callable[[], dt.datetime] = dt.datetime.now):
        self.timetable, self.stop, self.stats, self.clock, self.local_now = timetable, stop, stats, clock, local_now
        self._lock = threading.Lock()
        self._next: float | None = None   # set by the first send: nothing is credited before it

    def rate(self) -> int | None:
        """Bytes/s now (None: no limit). Before the day's first entry, the day before's last holds."""
        now = self.local_now()
        minute = now.hour * 60 + now.minute
        current = self.timetable[-1][1] if self.timetable else None
        for at, value in self.timetable:
            if at <= minute:
                current = value
        return current

    def take(self, size: int) -> None:
        rate = self.rate()
        if not rate or size <= 0:
            return
        with self._lock:
            now = self.clock()
            self._next = max(now if self._next is None else self._next, now - 1.0) + size / rate
            wait = self._next - now
        if wait > 0 and self.stats:
            self.stats.add("bwlimit_wait_ms", int(wait * 1000))
        if wait > 0 and self.stop.wait(wait):
            raise InterruptedRun("interrupted")


class _PacedReader(io.RawIOBase):
    """A stream for MediaIoBaseUpload whose reads (what is sent next) wait for the BandwidthLimit."""

    def __init__(self, stream: Any, limit: BandwidthLimit):
        super().__init__()
        self._stream, self._limit = stream, limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._limit.take(len(data))
        return data

#######################################################################
# Local files #########################################################
#######################################################################
# Atomic writes (token, checkpoint) and the private staging directory for downloads.


def file_md5(stream: Any) -> str:
    stream.seek(0)
    digest = hashlib.md5()
    while chunk := stream.read(1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_disk_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def checkpoint_write_error(exc: OSError) -> type[CloudTransferError]:
    return DiskFullError if is_disk_full(exc) else CloudTransferError


def write_atomically(path: Path, data: bytes | Iterable[bytes]) -> None:
    """temp file (0600) in the same directory + fsync + rename: readers see old or new, never half.
    `data` may come in pieces, written as they are produced."""
    path = path.absolute()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb", buffering=1024 * 1024) as handle:
            for piece in [data] if isinstance(data, bytes) else data:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # another user's process
    return True


def make_private_temp_dir(parent: Path | None) -> Path:
    """mkdtemp (0700) named after our pid; directories left by killed runs are removed first."""
    base = Path(parent or tempfile.gettempdir())
    try:
        for stale in base.glob("cloud_transfer-*-*"):
            with contextlib.suppress(ValueError, OSError):
                if stale.is_dir() and stale.stat().st_uid == os.getuid() and not _pid_alive(int(stale.name.split("-")[1])):
                    shutil.rmtree(stale, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=f"cloud_transfer-{os.getpid()}-", dir=base))
    except OSError as exc:
        raise UsageError(f"cannot create a temporary directory in {base}: {exc.strerror}; use --temp-dir") from None


#######################################################################
# S3 source ###########################################################
#######################################################################
# The only code that touches boto3. Pure helpers about keys live in the transfer engine.


@dataclasses.dataclass(frozen=True, slots=True)
class SourceObject:
    """One S3 object as listed (rclone's ObjectInfo)."""
    key: str
    size: int                      # bytes
    etag: str                      # as sent, without quotes: maybe an MD5, maybe empty (see `version`)
    last_modified: dt.datetime     # S3 upload time (UTC)
    storage_class: str = "STANDARD"
    restore: str | None = None     # what the listing says of a restore: RESTORING, READABLE or nothing

    @property
    def version(self) -> str:
        """What tells this version of the object from others: its ETag, whatever its form (MD5,
        multipart, KMS, SHA1, another store's hash), or LastModified from a store that sends none.
        Short enough for an appProperties value (124 bytes with the key)."""
        if not self.etag:
            return "lm:" + self.last_modified.astimezone(dt.timezone.utc).isoformat()
        if len(self.etag) > 64:
            return "h:" + hashlib.sha256(self.etag.encode("utf-8")).hexdigest()[:40]
        return self.etag


@dataclasses.dataclass(frozen=True)
class Download:
    """What a finished download tells: the bytes' MD5 and the object's own metadata."""
    md5: str
    content_type: str | None
    source_mtime: dt.datetime | None   # the file's own time from the user metadata (rclone, s3cmd)
    etag_checked: bool = False         # the bytes' MD5 was compared with an ETag that is an MD5
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)   # x-amz-meta-*, as sent


def parse_s3_timestamp(value: str) -> dt.datetime:
    """botocore's timestamp parser, fast for the ISO 8601 times of listings ("2026-11-30T12:00:00.000Z").
    PERF: botocore's default (dateutil) costs ~49 us a key, half of a re-run's listing CPU."""
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):   # HTTP dates (Last-Modified headers), epoch numbers
        import botocore.utils
        return botocore.utils.parse_timestamp(value)


def make_s3_client(config: Config) -> Any:
    """boto3 S3 client with botocore's standard retries; endpoint/credentials from the config or the chain."""
    try:
        session = boto3.session.Session(
            aws_access_key_id=config.aws_access_key_id, aws_secret_access_key=config.aws_secret_access_key,
            aws_session_token=config.aws_session_token, region_name=config.aws_region,
            profile_name=config.aws_profile)
    except botocore.exceptions.ProfileNotFound:
        raise UsageError(f"AWS profile not found: {config.aws_profile!r} (check AWS_PROFILE)") from None
    session._session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_s3_timestamp)
    checksum_options = {name: value for name, value in (
        ("request_checksum_calculation", config.aws_checksum_calculation),
        ("response_checksum_validation", config.aws_checksum_validation)) if value}
    boto_config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": config.aws_max_attempts},
        max_pool_connections=max(10, config.workers * 3),
        connect_timeout=20, read_timeout=120,
        user_agent_extra=f"cloud_transfer/{__version__}", **checksum_options)
    try:   # a credential_process runs here, SSO and role sessions at the first request
        client = session.client("s3", endpoint_url=config.s3_endpoint_url, config=boto_config,
                                verify=config.aws_ca_bundle or None)
    except AWS_SIGNIN_ERRORS as exc:
        raise AuthError(aws_signin_problem(exc, config.aws_profile)) from None
    said = [0.0]

    def say_retrying(attempts: int, caught_exception: BaseException | None = None, **_: Any) -> None:
        # botocore retries a dead endpoint quietly for a minute or more: say what is going on, at most
        # every RETRY_NOTICE_S (many workers may be failing at once)
        if isinstance(caught_exception, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)) \
                and attempts < config.aws_max_attempts and time.monotonic() - said[0] >= RETRY_NOTICE_S:
            said[0] = time.monotonic()
            log.warning("cannot reach S3 at %s (%s): retrying", client.meta.endpoint_url, type(caught_exception).__name__)
    client.meta.events.register("needs-retry.s3", say_retrying)
    lighten_200_error_check(client)
    return client


def lighten_200_error_check(client: Any) -> bool:
    """botocore (1.35.45 on) parses every S3 answer as XML once before its real parse, to catch an
    error sent with status 200 (CopyObject, UploadPartCopy, CompleteMultipartUpload do that) or a
    body cut short: a sixth of listing a million keys. A listing page that ends with its end tag is
    neither, and skips that parse; any other answer (another operation, a page that ends otherwise)
    gets botocore's check. Where botocore has no such handler, nothing changes. True: in place."""
    full_check = getattr(botocore.handlers, "_handle_200_error", None)
    if full_check is None:
        return False

    def check(operation_model: Any, response_dict: Any, **kwargs: Any) -> None:
        body = (response_dict or {}).get("body") or b""
        if operation_model.name == "ListObjectsV2" and response_dict.get("status_code") == 200 \
                and body[-64:].rstrip().endswith(b"</ListBucketResult>"):
            return None
        return full_check(operation_model, response_dict, **kwargs)
    client.meta.events.unregister("before-parse.s3.*", full_check)
    client.meta.events.register_first("before-parse.s3.*", check)
    return True


class S3Source:
    """Lists and reads objects of one bucket/prefix; turns botocore errors into ours.
    Downloads end early (InterruptedRun) once `stop` is set."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", page_size: int = DEFAULT_PAGE_SIZE,
                 stop: threading.Event | None = None, outage: OutageWatch | None = None, sse_c_key: bytes | None = None,
                 other_store: bool = False, bucket_origin: str = "S3_BUCKET_NAME", profile: str | None = None):
        self.client, self.bucket, self.prefix, self.page_size = client, bucket, prefix, page_size
        self.profile = profile   # AWS_PROFILE, for sign-in advice
        # AWS lists a restore status only for objects restored or being restored ("If the object hasn't
        # been restored, there is no header response", API_RestoreStatus): there, no status means
        # archived. Another store may ignore the request: its archived objects get a HEAD.
        self.restores_listed: bool | None = None if other_store else True
        self.bucket_origin = bucket_origin   # where the name came from, for the not-found message
        # On AWS a general-purpose bucket's MD5-shaped ETag is the MD5 unless GET says KMS or SSE-C; a
        # directory bucket's (name ending --x-s3) never is; other stores may send any 32 hex digits.
        self.opaque_etags = other_store
        self.etags_are_md5 = not bucket.endswith("--x-s3")
        self.stop = stop or threading.Event()
        self.outage = outage or OutageWatch()
        # SSE-C objects are read only with their key; AWS refuses the key for other objects, so it is
        # sent where the last object needed it and the other way is tried on that refusal.
        self._sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": sse_c_key} if sse_c_key else {}
        self._sse_c_first = False
        self._etag_mismatches: dict[tuple[str, str], str] = {}   # (key, ETag) -> MD5 of a download
        self._mismatch_lock = threading.Lock()

    def _read(self, method: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        """A GET or HEAD, with the SSE-C key where the object needs it."""
        first, second = (self._sse_c, {}) if self._sse_c_first else ({}, self._sse_c)
        try:
            return method(Bucket=self.bucket, **kwargs, **first)
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status == 400 and not self._sse_c and method == self.client.head_object:
                # A HEAD error has no body to say why; on an object S3 lists, a 400 means SSE-C.
                raise ObjectError(Verdict(Verdict.SKIP, SKIP_SSE_C)) from None
            if not self._sse_c or status != 400:
                raise
            self._sse_c_first = not self._sse_c_first
            return method(Bucket=self.bucket, **kwargs, **second)

    def check_access(self) -> None:
        """Fail early, naming the bucket and the denied call."""
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchBucket", "InvalidBucketName"):
                hint = (f"; bucket names on AWS are lowercase: did you mean {self.bucket.lower()!r}?"
                        if self.bucket != self.bucket.lower() else "")
                raise UsageError(f"S3 bucket {self.bucket!r} (from {self.bucket_origin}) does not exist at "
                                 f"{self.client.meta.endpoint_url}{hint}") from None
            if code in ("AccessDenied", "AllAccessDisabled") or code in _S3_AUTH_CODES:
                raise AuthError(f"S3 denied ListBucket on {self.bucket!r} ({code}): check the IAM policy "
                                "and the keys in .env") from None
            if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
                raise UsageError(f"S3 bucket {self.bucket!r} is in another region: set AWS_REGION") from None
            raise UnavailableError(f"S3 ListObjectsV2 on {self.bucket!r} failed: {code}") from None
        except (botocore.exceptions.NoCredentialsError, *AWS_SIGNIN_ERRORS) as exc:
            raise AuthError(classify_s3_error(exc, self.profile).reason) from None
        except (botocore.exceptions.BotoCoreError, *TRANSIENT_NETWORK_ERRORS) as exc:
            raise UnavailableError(f"cannot reach S3 at {self.client.meta.endpoint_url}: {type(exc).__name__}; "
                                   "check the network, AWS_REGION and AWS_ENDPOINT_URL") from None

    def iter_pages(self) -> Iterator[list[SourceObject]]:
        """ListObjectsV2 page by page, so memory stays flat in bucket size. Each object's restore
        status comes with it (OptionalObjectAttributes); a store that refuses to say is listed
        without, and its archived objects are asked about one HEAD each (`archive_state`)."""
        paginator = self.client.get_paginator("list_objects_v2")
        options = {"OptionalObjectAttributes": ["RestoreStatus"]} if self.restores_listed is not False else {}
        first = True
        try:
            while True:
                pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix, **options,
                                           PaginationConfig={"PageSize": self.page_size})
                try:
                    for page in pages:
                        first = False
                        yield [SourceObject(key=item["Key"], size=int(item.get("Size", 0)),
                                            etag=str(item.get("ETag", "")).strip('"'),
                                            last_modified=item["LastModified"],
                                            storage_class=item.get("StorageClass") or "STANDARD",
                                            restore=listed_restore(item.get("RestoreStatus")))
                               for item in page.get("Contents", [])]
                    return
                except botocore.exceptions.ClientError as exc:
                    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                    if not (first and options and status in (400, 403, 501)):
                        raise
                    log.debug("S3 refused OptionalObjectAttributes (%s): listing without restore status", status)
                    options, self.restores_listed = {}, False
        except AWS_SIGNIN_ERRORS as exc:
            raise AuthError(f"listing s3://{self.bucket}/{self.prefix} failed: "
                            f"{aws_signin_problem(exc, self.profile)}") from None
        except botocore.exceptions.BotoCoreError as exc:
            raise UnavailableError(f"listing s3://{self.bucket}/{self.prefix} failed: {type(exc).__name__}") from None
        except botocore.exceptions.ClientError as exc:
            verdict = classify_s3_error(exc, self.profile)
            error = verdict.stop_error or UnavailableError
            raise error(f"listing s3://{self.bucket}/{self.prefix} failed: {verdict.reason}") from None

    def head(self, key: str) -> dict[str, Any]:
        try:
            return self._read(self.client.head_object, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise_for(classify_s3_error(exc, self.profile))
            raise   # unreachable: raise_for always raises

    def headers_of(self, obj: SourceObject) -> Download:
        """What a GET would tell before its first byte (type, user metadata), from a HEAD."""
        return self._download(obj, "", self.head(obj.key))

    def exists(self, key: str) -> bool:
        """Whether the key is in the bucket; an answer other than "not found" (a throttle, SSE-C)
        says it is."""
        try:
            self.head(key)
        except ObjectError as exc:
            return exc.verdict.reason != SKIP_DELETED
        return True

    def content_type(self, key: str) -> str | None:
        """HEAD for objects whose name does not tell what they are."""
        return self.head(key).get("ContentType")

    def looks_like_media(self, obj: SourceObject) -> bool:
        """An object without an extension: its Content-Type says photo or video, or, when that is
        generic (as most upload tools leave it), its first bytes do (one ranged GET)."""
        content_type = self.content_type(obj.key)
        if is_media_content_type(content_type):
            return True
        given = (content_type or "").split(";")[0].strip().lower()
        return given in GENERIC_CONTENT_TYPES and sniff_format(self.read_range(obj, 0, SNIFF_BYTES)) is not None

    def archive_state(self, obj: SourceObject) -> str:
        """READABLE, ARCHIVED or RESTORING, as a HEAD of the object tells."""
        head = self.head(obj.key)
        return head_archive_state(head.get("StorageClass") or obj.storage_class, head.get("ArchiveStatus"),
                                  head.get("Restore"))

    def download_to(self, obj: SourceObject, fileobj: Any,
                    on_response: Callable[[Download], None] = lambda headers: None) -> Download:
        """Stream the object into `fileobj` (None: only hashed), hashing on the way; verify size and
        ETag. `on_response` gets the object's headers (MD5 still empty) before the first byte."""
        md5, received = hashlib.md5(), 0

        def write(block: bytes) -> None:
            nonlocal received
            md5.update(block)
            if fileobj is not None:
                fileobj.write(block)
            received += len(block)
        headers = self.stream(obj, write, 0, on_response)
        return self.checked(obj, dataclasses.replace(headers, md5=md5.hexdigest()), received)

    def stream(self, obj: SourceObject, write: Callable[[bytes], Any], start: int = 0,
               on_response: Callable[[Download], None] = lambda headers: None) -> Download:
        """Bytes `start`.. of the listed version, in order, block by block to `write`; the headers
        (MD5 empty) go to `on_response` before the first byte. Ends early (InterruptedRun) once
        `stop` is set."""
        try:
            headers = self._streamed_get(obj, write, start, on_response)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError,
                *TRANSIENT_NETWORK_ERRORS) as exc:
            verdict = classify_s3_error(exc, self.profile)
            if verdict.action == Verdict.RETRY:
                self.outage.failed("S3", verdict.reason)
            raise_for(verdict)
        self.outage.ok("S3")
        return headers

    def checked(self, obj: SourceObject, download: Download, received: int) -> Download:
        """A whole download's size and MD5 against the listing's size and ETag."""
        if received != obj.size:
            raise ObjectError(Verdict(Verdict.RETRY, f"truncated download: {received} of {obj.size} bytes"))
        if download.etag_checked and download.md5 != obj.etag:
            if not self.opaque_etags:
                raise ObjectError(Verdict(Verdict.RETRY, f"corrupted download: MD5 {download.md5} vs ETag {obj.etag}"))
            # Other stores may send 32 hex digits that are no MD5 and say nothing about it (their
            # encryption, say). Two downloads that agree are the bytes; Drive's md5Checksum still
            # checks the copy end to end.
            with self._mismatch_lock:
                earlier = self._etag_mismatches.pop((obj.key, obj.etag), None)
                if earlier != download.md5:
                    self._etag_mismatches[(obj.key, obj.etag)] = download.md5
                    raise ObjectError(Verdict(Verdict.RETRY, f"corrupted download: MD5 {download.md5} vs ETag {obj.etag}"))
            log.warning("the ETag of %s is not the MD5 of its bytes (two downloads agree): checking the copy "
                        "with Drive's MD5 only", obj.key)
            download = dataclasses.replace(download, etag_checked=False)
        return download

    def _pinned(self, obj: SourceObject) -> dict[str, str]:
        # IfMatch pins the bytes to the listed version: a concurrent overwrite fails with 412. A store
        # that sends no ETag has nothing to pin.
        return {"IfMatch": f'"{obj.etag}"'} if obj.etag else {}

    def _download(self, obj: SourceObject, md5: str, response: dict[str, Any]) -> Download:
        metadata = {str(k): str(v) for k, v in (response.get("Metadata") or {}).items()}
        return Download(md5, response.get("ContentType"), metadata_mtime(metadata),
                        etag_checked=self.etags_are_md5 and etag_is_md5(obj.etag, response), metadata=metadata)

    def _streamed_get(self, obj: SourceObject, write: Callable[[bytes], Any], start: int,
                      on_response: Callable[[Download], None]) -> Download:
        """One GET, read in order (an upload can follow it closely). A body cut off mid-way is
        resumed where it stopped with a Range GET pinned to the same ETag, so a dropped connection
        late in a 4 GB video costs a request, not the whole download.

        PERF: s3transfer's parallel ranged GETs were dropped here: they write out of order, so the
        upload could not start before the last byte, and the MD5 needed a second pass over the file.
        One stream is what rclone uses for cloud-to-cloud copies; measured on moto it moves 1 GiB at
        975 MiB/s against s3transfer's 22-68 MiB/s (moto reads the object for every range)."""
        written, headers = start, None
        for attempt in range(1, MAX_REQUEST_ATTEMPTS + 1):
            ranged = {"Range": f"bytes={written}-"} if written else {}
            answer = self._read(self.client.get_object, Key=obj.key, **self._pinned(obj), **ranged)
            if written and not str(answer.get("ContentRange", "")).startswith(f"bytes {written}-"):
                answer["Body"].close()   # a store that ignored the Range would send the whole body again
                raise ObjectError(Verdict(Verdict.RETRY, "S3 ignored the Range of a resumed download"))
            if headers is None:
                headers = self._download(obj, "", answer)
                on_response(headers)
            body = answer["Body"]
            try:
                for block in body.iter_chunks(DOWNLOAD_BLOCK_BYTES):
                    if self.stop.is_set():
                        raise InterruptedRun("interrupted")
                    self.outage.ok("S3")   # each block is progress: S3 is up
                    write(block)
                    written += len(block)
                break
            except (botocore.exceptions.BotoCoreError, *TRANSIENT_NETWORK_ERRORS):
                # Without an ETag nothing pins a second GET to the same version: the object is
                # tried again from the start.
                if attempt == MAX_REQUEST_ATTEMPTS or not obj.etag or written >= obj.size:
                    raise
                log.debug("S3 download of %s cut off at %d bytes: resuming there", obj.key, written)
            finally:
                body.close()
        assert headers is not None
        return headers

    def read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset` of this version of the object (a video's header)."""
        if offset >= obj.size or length <= 0:
            return b""
        end = min(obj.size, offset + length) - 1
        try:
            answer = self._read(self.client.get_object, Key=obj.key, Range=f"bytes={offset}-{end}", **self._pinned(obj))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise_for(classify_s3_error(exc, self.profile))
            raise   # unreachable: raise_for always raises
        body = answer["Body"]
        try:
            if not str(answer.get("ContentRange", "")).startswith(f"bytes {offset}-"):
                log.debug("%s: S3 ignored a Range; its header is not read", obj.key)
                return b""   # the whole object follows: not for a date
            return body.read(end + 1 - offset)
        except (botocore.exceptions.BotoCoreError, *TRANSIENT_NETWORK_ERRORS) as exc:
            raise ObjectError(Verdict(Verdict.RETRY, f"S3 read cut off: {exc.__class__.__name__}")) from None
        finally:
            body.close()


#######################################################################
# Photo and video dates ###############################################
#######################################################################
# Every file gets one original date, carried by createdTime and modifiedTime (what Drive shows as
# "Last modified" and filters by). Readers here are pure: bytes in, an aware datetime or None out.

MP4_EXTENSIONS = frozenset("mp4 m4v mov qt 3gp 3g2 insv lrv f4v".split())   #: ISO BMFF / QuickTime
HEADER_DATED_VIDEOS = frozenset("avi divx mkv webm".split())   #: RIFF and Matroska: the date in the header
MP4_TOP_LEVEL_BOXES = 64              #: boxes skipped before a file is taken for something else
HEADER_READ_BYTES = 64 * 1024         #: one ranged GET of a video's header (or of its moov's start)
EXIF_MAX_BYTES = 1024 * 1024          #: EXIF is at most 64 KiB in a JPEG; anything far larger is not EXIF
EPOCH_1904 = dt.datetime(1904, 1, 1, tzinfo=dt.timezone.utc)
EPOCH_1970 = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
#: Wall-clock times a device writes when its clock was never set (QuickTime, Unix, DOS, many cameras).
UNSET_CLOCK_YEARS = frozenset({1904, 1970, 1980, 2000})
NAME_DATE_MIN_YEAR = 1990   #: a date in a file name before this is a number that looks like one


@dataclasses.dataclass(frozen=True)
class OriginalDate:
    moment: dt.datetime     # aware
    source: str             # "exif" (a photo's EXIF), "video" (its container), "metadata", "s3"


def plausible(moment: dt.datetime | None, what: str) -> dt.datetime | None:
    """None for a time no photo can have: before 1900, after tomorrow, or a device's unset clock."""
    if moment is None:
        return None
    if (moment.month, moment.day, moment.hour, moment.minute, moment.second) == (1, 1, 0, 0, 0) \
            and moment.year in UNSET_CLOCK_YEARS:
        log.debug("ignoring %s %s: an unset clock", what, moment.isoformat())
        return None
    if not dt.datetime(1900, 1, 1, tzinfo=dt.timezone.utc) <= moment <= dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1):
        log.debug("ignoring %s %s: not a possible date", what, moment.isoformat())
        return None
    return moment


def in_zone(wall: dt.datetime, zone: dt.tzinfo | None) -> dt.datetime:
    """A wall-clock time without an offset (a camera's, a file name's) read in `zone` (--timezone;
    None: this machine's zone), never as UTC. OverflowError/OSError/ValueError for one out of range."""
    return wall.replace(tzinfo=zone) if zone is not None else wall.astimezone()


def parse_exif_datetime(value: str, offset: str = "", zone: dt.tzinfo | None = None, subsec: str = "") -> dt.datetime | None:
    """EXIF 'YYYY:MM:DD HH:MM:SS' (+ OffsetTimeOriginal '+02:00', + SubSecTimeOriginal '123': the
    fraction's digits, which keep a burst's photos in their order) → aware datetime; None if unusable.

    Without an offset (EXIF before 2.31) the time is the camera's wall clock where the photo was
    taken: it is read in `zone` (--timezone; None: this machine's zone), never as UTC."""
    try:
        wall = dt.datetime.strptime(value.strip()[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    if plausible(wall.replace(tzinfo=dt.timezone.utc), "EXIF time") is None:
        return None
    digits = subsec.strip()
    if re.fullmatch(r"[0-9]+", digits):   # str.isdigit() takes "²" too
        wall = wall.replace(microsecond=int((digits + "00000")[:6]))
    match = re.fullmatch(r"([+-])(\d\d):(\d\d)", offset.strip())
    if match and int(match[2]) < 24 and int(match[3]) < 60:   # "+24:00" is malformed, not a zone
        sign = 1 if match[1] == "+" else -1
        return wall.replace(tzinfo=dt.timezone(sign * dt.timedelta(hours=int(match[2]), minutes=int(match[3]))))
    try:
        return in_zone(wall, zone)
    except (OverflowError, OSError, ValueError):
        return None


def photo_capture_time(path: Path, zone: dt.tzinfo | None) -> dt.datetime | None:
    return photo_times(path, zone)[0]


def photo_times(path: Path, zone: dt.tzinfo | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    try:
        with open(path, "rb") as stream:
            return photo_times_in(stream, os.fstat(stream.fileno()).st_size, zone)
    except OSError:
        log.debug("unreadable %s", path, exc_info=True)
        return None, None


def photo_times_in(stream: Any, size: int, zone: dt.tzinfo | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(capture time, IFD0 DateTime) of a JPEG, HEIC/HEIF/AVIF, TIFF-based RAW, PNG or WebP: EXIF
    DateTimeOriginal (else DateTimeDigitized), and the time the file was last written, which scans,
    thermal cameras and many editors leave as the only one; None for what is missing or unreadable. ExifRead parses the EXIF and stops at the tag; for HEIF and WebP the
    EXIF block is found here first, because ExifRead 3.5 misplaces it in files libheif wrote (it
    ignores the iloc base_offset) and in every WebP (it expects an "Exif" prefix the spec has not)."""
    import exifread

    def read_at(offset: int, length: int) -> bytes:
        stream.seek(offset)
        return stream.read(length)

    try:
        head = read_at(0, 12)
        block: bytes | None = b""
        if head[:4] == b"FOVb":
            return x3f_times(read_at, size, zone)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            block = webp_exif(read_at, size)
        elif head[4:8] == b"ftyp":
            block = heif_exif(read_at, size)
        if block is None:
            return None, None
        stream.seek(0)
        tags = exifread.process_file(io.BytesIO(block) if block else stream, details=False,
                                     extract_thumbnail=False, stop_tag="SubSecTimeDigitized")
    except Exception:  # malformed metadata must never cost the photo itself
        log.debug("unreadable EXIF", exc_info=True)
        return None, None
    # DateTimeOriginal: when the shutter fired; DateTimeDigitized: when it was scanned (scanners
    # and some phones' screenshots fill only that one). DateTime (IFD0) is the last write: it comes
    # after a date in the file's name (OffsetTime is its offset).
    def tag(name: str) -> str:
        return str(tags.get(name, ""))

    return (parse_exif_datetime(tag("EXIF DateTimeOriginal"), tag("EXIF OffsetTimeOriginal"), zone,
                                tag("EXIF SubSecTimeOriginal"))
            or parse_exif_datetime(tag("EXIF DateTimeDigitized"), tag("EXIF OffsetTimeDigitized"), zone,
                                   tag("EXIF SubSecTimeDigitized")),
            parse_exif_datetime(tag("Image DateTime"), tag("EXIF OffsetTime"), zone, tag("EXIF SubSecTime")))


#: libexiv2 0.28 registers the XMP namespaces it meets in a table shared by all threads, unguarded:
#: reading XMP in several threads at once can crash the process (Exiv2 issue #3011, fixed after
#: 0.28.8 by #3448). It is only asked where ExifRead found nothing, so one lock costs little.
EXIV2_LOCK = threading.Lock()


def _exiv2() -> Any:
    """python-exiv2 (libexiv2 in its wheel), None where it has no wheel (32-bit ARM, see
    requirements.txt): there photo_tags reads nothing and those files take the next source."""
    try:
        import exiv2
    except ImportError:
        return None
    with EXIV2_LOCK:
        if not getattr(_exiv2, "initialized", False):
            exiv2.LogMsg.setLevel(exiv2.LogMsg.Level.mute)   # it would print every oddity to stderr
            exiv2.XmpParser.initialize()   # once, before threads use XMP (libexiv2's rule)
            _exiv2.initialized = True   # type: ignore[attr-defined]
    return exiv2


def parse_xmp_datetime(value: str, zone: dt.tzinfo | None) -> dt.datetime | None:
    """An XMP date (ISO 8601: "2013-04-05T06:07:08.25+02:00", "2013-04-05T06:07", "2013-04-05")
    or IPTC's date + time as libexiv2 gives it ("2012-03-04" "05:06:07+01:00"); a time without
    an offset is a wall-clock time in `zone`; a day alone gives its noon; a year or month alone
    is too vague to use."""
    match = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:[.,]\d+)?)?"
                         r"\s*(Z|[+-]\d\d:?\d\d)?)?", value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, offset = match.groups()
    try:
        wall = dt.datetime(int(year), int(month), int(day), int(hour or 12), int(minute or 0), int(second or 0))
        if offset:
            sign, digits = (1 if offset[0] != "-" else -1), offset[1:].replace(":", "")
            zone = dt.timezone.utc if offset == "Z" else dt.timezone(
                sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        moment = in_zone(wall, zone)
    except (ValueError, OverflowError, OSError):
        return None
    return plausible(moment, "XMP/IPTC date")


#: What photo_tags asks libexiv2 for, in order: EXIF in the containers ExifRead does not open (CR3,
#: CRW, MRW, RAF), then XMP (as Lightroom, Photoshop and digiKam write it, extended XMP included),
#: then IPTC (agency and PhotoMechanic workflows): (source, key, key of its offset or time).
PHOTO_TAG_KEYS = (
    ("exif", "Exif.Photo.DateTimeOriginal", "Exif.Photo.OffsetTimeOriginal"),   # + Exif.Photo.SubSecTime...
    ("exif", "Exif.Photo.DateTimeDigitized", "Exif.Photo.OffsetTimeDigitized"),
    ("xmp", "Xmp.exif.DateTimeOriginal", ""),
    ("xmp", "Xmp.photoshop.DateCreated", ""),
    ("xmp", "Xmp.xmp.CreateDate", ""),
    ("iptc", "Iptc.Application2.DateCreated", "Iptc.Application2.TimeCreated"),
)


def photo_tags(path: Path, zone: dt.tzinfo | None) -> tuple[dt.datetime | None, str, dt.datetime | None]:
    """(capture time, its source, IFD0 DateTime) that libexiv2 reads where ExifRead found no
    capture time (PHOTO_TAG_KEYS), None and "" when there is none or no libexiv2."""
    exiv2 = _exiv2()
    if exiv2 is None:
        return None, "", None
    found: dict[str, str] = {}
    try:
        with open(path, "rb") as stream:
            extended = jpeg_extended_xmp(stream)
        with EXIV2_LOCK:
            _read_tags(exiv2, path, extended, found)
    except Exception:   # malformed metadata must never cost the photo itself
        log.debug("unreadable metadata in %s", path, exc_info=True)
        return None, "", None
    written = parse_exif_datetime(found.get("Exif.Image.DateTime", ""), found.get("Exif.Photo.OffsetTime", ""), zone)
    moment, source = first_tag_time(found, zone)
    return moment, source, written


def _read_tags(exiv2: Any, path: Path, extended: list[bytes], found: dict[str, str]) -> None:
    """EXIF, XMP and IPTC of a file and the XMP of its extended packets into `found` (first wins)."""
    image = exiv2.ImageFactory.open(str(path))
    image.readMetadata()
    tags = [image.exifData(), image.xmpData(), image.iptcData()]
    tags += [_packet_xmp(exiv2, packet) for packet in extended]
    for data in tags:
        for datum in data:
            found.setdefault(datum.key(), str(datum.value()))


def _packet_xmp(exiv2: Any, packet: bytes) -> Any:
    """The XMP of a bare packet (a sidecar, an extended part), read as libexiv2 reads an XMP
    sidecar: its XMP only (libexiv2 copies it into EXIF and IPTC too). Under EXIV2_LOCK."""
    image = exiv2.ImageFactory.open(packet)
    image.readMetadata()
    return image.xmpData()


def first_tag_time(found: dict[str, str], zone: dt.tzinfo | None) -> tuple[dt.datetime | None, str]:
    """The first time of PHOTO_TAG_KEYS among libexiv2's `found` tags, and its source."""
    for source, key, companion in PHOTO_TAG_KEYS:
        value, extra = found.get(key, ""), found.get(companion, "")
        subsec = found.get(key.replace("DateTime", "SubSecTime"), "")
        moment = (parse_exif_datetime(value, extra, zone, subsec) if source == "exif"
                  else parse_xmp_datetime(f"{value}T{extra}" if extra else value, zone) if value else None)
        if moment is not None:
            return moment, source
    return None, ""


def xmp_sidecar_time(data: bytes, zone: dt.tzinfo | None) -> dt.datetime | None:
    """The capture time an XMP sidecar (or any XMP packet) holds, read by libexiv2."""
    exiv2 = _exiv2()
    if exiv2 is None:
        return None
    try:
        with EXIV2_LOCK:
            found = {datum.key(): str(datum.value()) for datum in _packet_xmp(exiv2, data)}
        return first_tag_time(found, zone)[0]
    except Exception:
        log.debug("unreadable XMP sidecar", exc_info=True)
        return None


def takeout_time(data: bytes, titles: Collection[str] = ()) -> dt.datetime | None:
    """Google Takeout's photoTakenTime (UTC seconds) from its JSON sidecar; with `titles`, only if
    the sidecar names one of them (a sidecar whose name was cut may belong to another photo)."""
    try:
        found = json.loads(data)
        if titles and unicodedata.normalize("NFC", str(found.get("title", ""))).lower() not in {
                unicodedata.normalize("NFC", title).lower() for title in titles}:   # keys from a Mac are NFD
            return None
        taken = found.get("photoTakenTime") or {}
        seconds = int(taken.get("timestamp") or 0)
        return plausible(dt.datetime.fromtimestamp(seconds, dt.timezone.utc), "Takeout photoTakenTime") if seconds else None
    except (ValueError, TypeError, AttributeError, OverflowError, OSError):
        return None


XMP_EXTENSION_SIGNATURE = b"http://ns.adobe.com/xmp/extension/\0"


def jpeg_extended_xmp(stream: Any) -> list[bytes]:
    """The extended XMP packets a JPEG splits over APP1 segments (XMP Specification Part 3,
    1.1.3.1: a GUID, the full length and each part's offset), joined; libexiv2 reads only the
    main packet. Segments are skipped by their lengths up to the image data."""
    if stream.read(2) != b"\xff\xd8":
        return []
    parts: dict[bytes, dict[int, bytes]] = {}
    lengths: dict[bytes, int] = {}
    while len(marker := stream.read(4)) == 4 and marker[0] == 0xFF and marker[1] not in (0xDA, 0xD9):
        length = struct.unpack(">H", marker[2:])[0] - 2
        head = stream.read(min(length, len(XMP_EXTENSION_SIGNATURE) + 40)) if marker[1] == 0xE1 else b""
        if head.startswith(XMP_EXTENSION_SIGNATURE) and len(head) == len(XMP_EXTENSION_SIGNATURE) + 40:
            guid, (total, offset) = head[-40:-8], struct.unpack(">II", head[-8:])
            lengths[guid] = total
            parts.setdefault(guid, {})[offset] = stream.read(length - len(head))
        else:
            stream.seek(length - len(head), io.SEEK_CUR)
    joined = {guid: b"".join(part for _, part in sorted(pieces.items())) for guid, pieces in parts.items()}
    return [data for guid, data in joined.items() if len(data) == lengths[guid]]


#: Dates phones, messengers and screenshot tools write into file names, for files without metadata.
#: A wall-clock time (read in --timezone) unless marked UTC; a day alone gives noon of that day, so
#: that no time zone moves it to another day. Years 1990 to now only, and the digits must stand
#: apart from other digits: an id such as 2019123412 is no date.
NAME_DATE_PATTERNS: tuple[tuple[re.Pattern[str], bool], ...] = tuple((re.compile(pattern, re.I), utc) for pattern, utc in (
    # Pixel: PXL_20210101_123456789.jpg is UTC (the camera app's documented naming)
    (r"^PXL_(?P<y>\d{4})(?P<mo>\d\d)(?P<d>\d\d)_(?P<h>\d\d)(?P<mi>\d\d)(?P<s>\d\d)\d{3}", True),
    # macOS: "Screenshot 2022-11-05 at 09.08.07", "Screen Shot 2019-03-01 at 10.11.12 AM", "Screen Recording ..."
    (r"(?<!\d)(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d) at (?P<h>\d\d?)\.(?P<mi>\d\d)\.(?P<s>\d\d)(?:\s?(?P<ampm>[AP]M))?", False),
    # IMG_20200315_142233, VID_20200315_142233, Screenshot_20200315-142233, 20190704_123456 (Samsung),
    # signal-2021-02-03-040506, 2019-07-04 12.34.56 (Dropbox), photo_2021-05-06_07-08-09 (Telegram),
    # Screenshot_2020-03-15-14-22-33
    (r"(?<!\d)(?P<y>\d{4})(?P<sep>-?)(?P<mo>\d\d)(?P=sep)(?P<d>\d\d)[ _T-](?P<h>\d\d)[-.:]?(?P<mi>\d\d)[-.:]?(?P<s>\d\d)(?!\d\d)", False),
    # WhatsApp IMG-20190704-WA0001, and a day alone: 2019-07-04, 20190704 between non-digits
    (r"(?<!\d)(?P<y>\d{4})(?P<sep>[-_.]?)(?P<mo>\d\d)(?P=sep)(?P<d>\d\d)(?!\d)", False),
))


def date_in_name(key: str, zone: dt.tzinfo | None) -> dt.datetime | None:
    """The capture time a file name holds (NAME_DATE_PATTERNS), None when it holds none."""
    name = key.rsplit("/", 1)[-1]
    for pattern, utc in NAME_DATE_PATTERNS:
        for found in pattern.finditer(name):
            parts = found.groupdict()
            hour = int(parts.get("h") or 12)
            if parts.get("ampm"):
                hour = hour % 12 + (12 if parts["ampm"].upper() == "PM" else 0)
            try:
                wall = dt.datetime(int(parts["y"]), int(parts["mo"]), int(parts["d"]), hour,
                                   int(parts.get("mi") or 0), int(parts.get("s") or 0))
            except ValueError:
                continue
            if wall.year < NAME_DATE_MIN_YEAR:
                continue
            try:
                moment = in_zone(wall, dt.timezone.utc if utc else zone)
            except (OverflowError, OSError, ValueError):
                continue
            if plausible(moment, "date in the file name"):
                return moment
    return None


def x3f_times(read_at: Callable[[int, int], bytes], size: int, zone: dt.tzinfo | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(capture time, IFD0 DateTime) of a Sigma X3F, which no library here opens (ExifTool's
    SigmaRaw.pm is the reference): the section directory ('SECd') whose offset ends the file
    names an IMA2 JPEG preview whose EXIF newer cameras fill, and a PROP section whose TIME (the
    camera's wall clock as Unix seconds) every camera writes."""
    if size < 16:
        return None, None
    start = struct.unpack("<I", read_at(size - 4, 4))[0]
    directory = read_at(start, 12)
    if directory[:4] != b"SECd" or len(directory) < 12:
        return None, None
    entries = read_at(start + 12, 12 * min(struct.unpack("<I", directory[8:12])[0], 64))
    sections = [(kind, offset, length) for offset, length, kind in struct.iter_unpack("<II4s", entries[:len(entries) // 12 * 12])]
    captured = written = None
    # the previews, largest first: a thumbnail may come last, the EXIF is in the large one
    for _, offset, length in sorted((section for section in sections if section[0] == b"IMA2"), key=lambda s: -s[2]):
        if read_at(offset, 32)[:32] == b"SECi\0\0\x02\0\x02\0\0\0\x12\0\0\0" + read_at(offset + 16, 12) + b"\xff\xd8\xff\xe1":
            captured, written = photo_times_in(io.BytesIO(read_at(offset + 28, min(length - 28, EXIF_MAX_BYTES))),
                                               length - 28, zone)
            if captured is not None:
                break
    prop = next((section for section in sections if section[0] == b"PROP"), None)
    if captured is None and prop is not None:
        _, offset, length = prop
        data = read_at(offset, min(length, EXIF_MAX_BYTES))
        if data[:4] == b"SECp" and len(data) >= 24:
            entries_count, char_format, chars = struct.unpack("<I", data[8:12])[0], data[12], struct.unpack("<I", data[20:24])[0]
            text = data[24 + 8 * entries_count:24 + 8 * entries_count + 2 * chars].decode("utf-16-le", "replace")
            for name_at, value_at in struct.iter_unpack("<II", data[24:24 + 8 * entries_count]):
                if char_format == 0 and text[name_at:].split("\0", 1)[0] == "TIME":
                    seconds = text[value_at:].split("\0", 1)[0]
                    if seconds.isdigit():
                        wall = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(seconds))
                        captured = parse_exif_datetime(wall.strftime("%Y:%m:%d %H:%M:%S"), "", zone)
    return captured, written


def webp_exif(read_at: Callable[[int, int], bytes], size: int) -> bytes | None:
    """The TIFF block of a WebP's EXIF chunk (RIFF chunks are skipped by their sizes)."""
    offset = 12
    while offset + 8 <= size:
        kind, length = struct.unpack("<4sI", read_at(offset, 8))
        if kind == b"EXIF":
            data = read_at(offset + 8, min(length, EXIF_MAX_BYTES))
            return data[6:] if data.startswith(b"Exif\0\0") else data
        offset += 8 + length + (length & 1)
    return None


def heif_exif(read_at: Callable[[int, int], bytes], size: int) -> bytes | None:
    """The TIFF block of a HEIC/HEIF/AVIF's Exif item: meta/iinf names the item, meta/iloc places it."""
    meta = next((box for box in _boxes(read_at, 0, size) if box[0] == b"meta"), None)
    if meta is None:
        return None
    exif_ids: set[int] = set()
    places: dict[int, tuple[int, int]] = {}
    for kind, start, end in _boxes(read_at, meta[1] + 4, meta[2]):   # meta is a full box
        if kind in (b"iinf", b"iloc"):
            data = read_at(start, min(end - start, EXIF_MAX_BYTES))
            if kind == b"iinf":
                first = 6 if data[0] == 0 else 8   # version, flags, entry count (16 or 32 bits)
                exif_ids = {item for item, item_type in _infe_items(data, first) if item_type == b"Exif"}
            else:
                places = _iloc_places(data)
    for item in exif_ids:
        if item in places:
            offset, length = places[item]
            data = read_at(offset, min(length, EXIF_MAX_BYTES))
            if len(data) >= 4:
                tiff = 4 + struct.unpack(">I", data[:4])[0]   # exif_tiff_header_offset
                return data[tiff:] if data[tiff:tiff + 2] in (b"II", b"MM") else None
    return None


def _boxes(read_at: Callable[[int, int], bytes], offset: int, end: int,
           limit: int = MP4_TOP_LEVEL_BOXES) -> Iterator[tuple[bytes, int, int]]:
    """The ISO BMFF boxes from `offset` to `end`, at most `limit`: (type, body start, box end)."""
    for _ in range(limit):
        box = _mp4_box(read_at, offset, end)
        if box is None:
            return
        yield box
        offset = box[2]


def _infe_items(data: bytes, offset: int) -> Iterator[tuple[int, bytes]]:
    """(item id, item type) of the infe boxes (version 2 or 3) in an iinf box's body."""
    # an iPhone's HEIC lists a hundred or more image tiles before its Exif item: every box is walked
    for kind, start, _ in _boxes(lambda at, n: data[at:at + n], offset, len(data), limit=len(data) // 8):
        version = data[start] if kind == b"infe" else -1
        if version == 2:
            yield struct.unpack(">H", data[start + 4:start + 6])[0], data[start + 8:start + 12]
        elif version == 3:
            yield struct.unpack(">I", data[start + 4:start + 8])[0], data[start + 10:start + 14]


def _iloc_places(data: bytes) -> dict[int, tuple[int, int]]:
    """Item id → (file offset, length) of its first extent, from an iloc box's body (ISO 14496-12
    8.11.3); items stored another way than at a file offset are left out."""
    version, places = data[0], {}
    offset_size, length_size, base_size = data[4] >> 4, data[4] & 15, data[5] >> 4
    index_size = data[5] & 15 if version in (1, 2) else 0
    position = 6

    def number(width: int) -> int:
        nonlocal position
        value = int.from_bytes(data[position:position + width], "big") if width else 0
        position += width
        return value

    for _ in range(number(2 if version < 2 else 4)):
        item = number(2 if version < 2 else 4)
        method = number(2) & 15 if version in (1, 2) else 0
        number(2)   # data_reference_index
        base = number(base_size)
        extents = [(number(index_size), number(offset_size), number(length_size))[1:] for _ in range(number(2))]
        if method == 0 and extents:
            places[item] = (base + extents[0][0], extents[0][1])
    return places


def _mp4_box(read_at: Callable[[int, int], bytes], offset: int, limit: int) -> tuple[bytes, int, int] | None:
    """(type, body start, end) of the ISO BMFF box at `offset`; None if it is not one."""
    header = read_at(offset, 16)
    if len(header) < 8:
        return None
    size, kind = struct.unpack(">I4s", header[:8])
    start = offset + 8
    if size == 1:   # 64-bit "largesize": an mdat over 4 GB
        if len(header) < 16:
            return None
        size, start = struct.unpack(">Q", header[8:16])[0], offset + 16
    elif size == 0:   # the box runs to the end of the file
        size = limit - offset
    if size < start - offset or offset + size > limit:
        return None
    return kind, start, offset + size


def apple_creation_date(meta: bytes, zone: dt.tzinfo | None) -> dt.datetime | None:
    """com.apple.quicktime.creationdate from a moov/meta body (hdlr 'mdta', keys, ilst: item i is
    key i's value), the capture time with its offset that iPhones write and keep when a video is
    edited or exported, where mvhd then holds the export's time."""
    at = 0 if meta[4:8] == b"hdlr" else 4   # a QuickTime meta has no version and flags, an ISO one has
    boxes = {kind: (start, end) for kind, start, end in _boxes(lambda offset, n: meta[offset:offset + n], at, len(meta))}
    if b"keys" not in boxes or b"ilst" not in boxes:
        return None
    start, end = boxes[b"keys"]
    names, position = [], start + 8   # version, flags, entry count
    while position + 8 <= end and len(names) < 256:
        length = struct.unpack(">I", meta[position:position + 4])[0]
        if length < 8:
            return None
        names.append(meta[position + 8:position + length])
        position += length
    if b"com.apple.quicktime.creationdate" not in names:
        return None
    wanted = names.index(b"com.apple.quicktime.creationdate") + 1
    start, end = boxes[b"ilst"]
    for kind, item_start, item_end in _boxes(lambda offset, n: meta[offset:offset + n], start, end, limit=256):
        if int.from_bytes(kind, "big") == wanted:
            data = next((found for found in _boxes(lambda offset, n: meta[offset:offset + n], item_start, item_end)
                         if found[0] == b"data"), None)
            if data is not None and meta[data[1]:data[1] + 4] == b"\0\0\0\x01":   # UTF-8 text
                text = meta[data[1] + 8:data[2]].decode("utf-8", "replace").rstrip("\0")   # some writers end it with NUL
                return parse_xmp_datetime(text, zone)
    return None


def mp4_creation_time(read_at: Callable[[int, int], bytes], size: int, zone: dt.tzinfo | None = None) -> dt.datetime | None:
    """The capture time of an MP4/MOV/M4V/3GP: Apple's creationdate in moov/meta where it is,
    else moov/mvhd creation_time (seconds since 1904, UTC). Top-level boxes are skipped by their
    sizes, never read: a moov after 4 GB of mdat costs two small reads."""
    offset = 0
    for index in range(MP4_TOP_LEVEL_BOXES):
        box = _mp4_box(read_at, offset, size)
        if box is None or (index == 0 and box[0] not in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")):
            return None
        kind, start, end = box
        if kind == b"moov":
            child, created = start, None
            while (found := _mp4_box(read_at, child, end)) is not None:
                if found[0] == b"meta" and found[2] - found[1] <= EXIF_MAX_BYTES:
                    if (apple := apple_creation_date(read_at(found[1], found[2] - found[1]), zone)) is not None:
                        return apple
                if found[0] == b"mvhd":
                    body = read_at(found[1], 12)
                    if len(body) < 8:
                        return None
                    seconds = (struct.unpack(">Q", body[4:12])[0] if body[0] == 1 and len(body) >= 12
                               else struct.unpack(">I", body[4:8])[0])
                    try:
                        moment = EPOCH_1904 + dt.timedelta(seconds=seconds)
                        if seconds and moment.year < 1970:   # a writer that counted from 1970, as ExifTool assumes
                            moment = EPOCH_1970 + dt.timedelta(seconds=seconds)
                    except OverflowError:
                        return None
                    created = plausible(moment, "video creation time")
                child = found[2]
            return created
        if end >= size:
            return None
        offset = end
    return None


SIDECAR_MAX_BYTES = 1024 * 1024   #: a sidecar is read whole for a date; anything larger is no sidecar
MATROSKA_EPOCH = dt.datetime(2001, 1, 1, tzinfo=dt.timezone.utc)   #: DateUTC counts nanoseconds from here
RIFF_MONTHS = {name: number for number, name in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), 1)}


def riff_date(text: str, zone: dt.tzinfo | None) -> dt.datetime | None:
    """An AVI date (a wall-clock time, read in `zone`) in the forms cameras write, as ExifTool reads
    them: "Mon Mar 10 15:04:43 2003" (IDIT), "2002-12-16  15:35:01", "2005:08:11 14:03:54",
    Casio's "2001/ 1/27  1:42PM", and a day alone (INFO ICRD "2015-06-07") at its noon."""
    text = text.strip("\0 \r\n\t")
    parts = text.split()
    found = None
    if len(parts) >= 5 and parts[1][:3].upper() in RIFF_MONTHS:
        found = (parts[4], RIFF_MONTHS[parts[1][:3].upper()], parts[2], *parts[3].split(":"))
    elif match := re.match(r"(\d{4})/\s*(\d+)/\s*(\d+)/?\s+(\d+):\s*(\d+)\s*([AP]M)?", text, re.I):
        hour = int(match[4]) % 12 + (12 if match[6].upper() == "PM" else 0) if match[6] else int(match[4])
        found = (match[1], match[2], match[3], hour, match[5], 0)
    elif match := re.match(r"(\d{4})[-/:](\d\d?)[-/:](\d\d?)(?:[ T]+(\d\d?):(\d\d):(\d\d))?", text):
        found = (*match.groups()[:3], *(match.groups()[3:] if match[4] else (12, 0, 0)))
    if found is None:
        return None
    try:
        moment = in_zone(dt.datetime(*(int(part) for part in found)), zone)
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return plausible(moment, "AVI date")


def _hachoir_parser(stream: Any, parser_class: str) -> Any:
    """A hachoir parser over `stream`, None when the file is not that format. hachoir reads fields
    lazily: only the chunks a date needs are read."""
    import hachoir.core.config
    from hachoir.parser.container import mkv, riff
    from hachoir.stream import InputIOStream

    hachoir.core.config.quiet = True   # it warns on stdout about every oddity it skips
    parser = {"riff": riff.RiffFile, "matroska": mkv.MkvFile}[parser_class](InputIOStream(stream, source="S3 object", tags=[]))
    return parser if parser.validate() is True else None


def avi_recording_time(stream: Any, zone: dt.tzinfo | None) -> dt.datetime | None:
    """An AVI's recording time: the camera's IDIT chunk in hdrl, else INFO's ICRD (read by hachoir)."""
    try:
        avi = _hachoir_parser(stream, "riff")
        if avi is None or avi["type"].value != "AVI ":
            return None
    except Exception:   # a malformed or cut-off header must never cost the video itself
        log.debug("unreadable AVI header", exc_info=True)
        return None
    dates: dict[str, str] = {}
    for parent in ("headers", "info", "headers/info"):
        try:   # one section at a time: junk before a late INFO list (VLC writes some) keeps an IDIT found
            if parent in avi:
                for chunk in avi[parent]:
                    if chunk.is_field_set and "tag" in chunk and "text" in chunk:
                        dates.setdefault(chunk["tag"].value, chunk["text"].value)
        except Exception:
            log.debug("unreadable AVI %s", parent, exc_info=True)
    return next(filter(None, (riff_date(dates[tag], zone) for tag in ("IDIT", "ICRD") if tag in dates)), None)


def matroska_recording_time(stream: Any) -> dt.datetime | None:
    """A Matroska/WebM file's Segment Info DateUTC (UTC, read by hachoir); 0 is a writer's unset value."""
    try:
        mkv = _hachoir_parser(stream, "matroska")
        path = "Segment[0]/Info[0]/DateUTC/date"
        nanoseconds = mkv[path].value if mkv is not None and path in mkv else 0
    except Exception:
        log.debug("unreadable Matroska header", exc_info=True)
        return None
    if not nanoseconds:
        return None
    try:
        return plausible(MATROSKA_EPOCH + dt.timedelta(microseconds=nanoseconds // 1000), "Matroska DateUTC")
    except OverflowError:
        return None


AVCHD_EXTENSIONS = frozenset("mts m2ts m2t".split())   #: AVCHD clips: MPEG-TS with H.264
AVCHD_HEAD_BYTES = 1024 * 1024   #: the first frames, whose SEI holds the recording time (Panasonic's: the second frame)
MDPM_SIGNATURE = bytes.fromhex("17ee8c60f84d11d98cd60800200c9a66") + b"MDPM"


def avchd_recording_time(head: bytes, zone: dt.tzinfo | None) -> dt.datetime | None:
    """The recording time an AVCHD camcorder (Sony, Panasonic, Canon) writes into the H.264 stream
    of an .MTS/.M2TS, no library reading it: the TS packets' payloads are joined per PID, H.264's
    emulation prevention bytes dropped, and the SEI user data with the MDPM ("modified DV pack
    meta") UUID read: tags 0x18-0x19 hold the date and time in BCD and the camera's zone (as
    ExifTool's H264.pm reads them); `head`: the file's first AVCHD_HEAD_BYTES."""
    size = 192 if head[4:5] == b"G" and head[196:197] == b"G" else 188   # M2TS: a 4-byte arrival time first
    streams: dict[int, bytearray] = {}
    for at in range(size - 188, len(head) - 187, size):
        packet = head[at:at + 188]
        if packet[0] != 0x47:
            return None   # lost sync: not a transport stream
        control = packet[3] >> 4 & 3
        start = 4 + (1 + packet[4] if control & 2 else 0)
        if control & 1 and start < 188:
            streams.setdefault((packet[1] & 0x1F) << 8 | packet[2], bytearray()).extend(packet[start:])
    for payload in streams.values():
        data = bytes(payload).replace(b"\0\0\3", b"\0\0")
        found = data.find(MDPM_SIGNATURE)
        if found < 0:
            continue
        count, entries = data[found + 20] if len(data) > found + 20 else 0, found + 21
        tags = {data[entry]: data[entry + 1:entry + 5] for entry in range(entries, entries + 5 * count, 5)
                if entry + 5 <= len(data)}
        if len(tags.get(0x18, b"")) == 4 and len(tags.get(0x19, b"")) == 4:
            zone_byte, *date = tags[0x18]
            digits = [(byte >> 4) * 10 + (byte & 15) for byte in (*date, *tags[0x19])]
            try:
                wall = dt.datetime(digits[0] * 100 + digits[1], *digits[2:])
                minutes = (zone_byte >> 1 & 0x0F) * 60 + (30 if zone_byte & 1 else 0)
                own = None if zone_byte & 0x80 else dt.timezone(dt.timedelta(minutes=-minutes if zone_byte & 0x20 else minutes))
                moment = in_zone(wall, own or zone)
            except (ValueError, OverflowError, OSError):
                return None
            return plausible(moment, "AVCHD recording time")
    return None


def metadata_mtime(metadata: dict[str, str]) -> dt.datetime | None:
    """The file's own modification time, as S3 tools keep it in user metadata (names in any case:
    MinIO sends X-Amz-Meta-Mtime, which boto3 hands back as "Mtime"): `mtime` (rclone, s3fs,
    Cyberduck: Unix seconds, older Cyberduck milliseconds), `s3cmd-attrs` (s3cmd: ".../mtime:SECONDS/..."),
    `mc-attrs` (MinIO mc: "...mtime:SECONDS#NANOS..."), `file-mtime` (AWS DataSync: "NANOSns"),
    `src_last_modified_millis` (Backblaze B2)."""
    lower = {str(k).lower(): str(v).strip() for k, v in (metadata or {}).items()}
    candidates = [lower.get("mtime"), lower.get("src-last-modified"), lower.get("file-mtime"),
                  lower.get("src_last_modified_millis")]
    for attrs in (lower.get("s3cmd-attrs", ""), lower.get("mc-attrs", "")):
        found = re.search(r"(?:^|[/;])mtime:(\d+(?:\.\d+)?)", attrs)
        candidates.append(found[1] if found else None)
    for value in candidates:
        try:
            seconds = float(value.removesuffix("ns")) / 1e9 if value and value.endswith("ns") else float(value or "")
        except ValueError:
            continue
        # seconds, or milliseconds/micro/nanoseconds from some writers: told apart by magnitude
        scale = next(unit for limit, unit in ((1e11, 1), (1e14, 1e3), (1e17, 1e6), (math.inf, 1e9)) if seconds < limit)
        try:
            moment = dt.datetime.fromtimestamp(seconds / scale, tz=dt.timezone.utc)
        except (OverflowError, OSError, ValueError):
            continue
        if plausible(moment, "metadata mtime"):
            return moment
    return None


class OriginalDates:
    """The date each file gets, first that exists per --date-from: `auto` = the capture time in the
    file (photo EXIF, video container) → the original file time in S3 user metadata → S3's
    LastModified; `exif`/`metadata`/`s3` force one source, with LastModified where it has none."""

    def __init__(self, source: S3Source, date_from: str = "auto", zone: dt.tzinfo | None = None,
                 stats: Stats | None = None):
        self.source, self.date_from, self.zone, self.stats = source, date_from, zone, stats or Stats()
        #: key → (its sidecars, its twin), set by the lister for the objects it hands to workers
        self.relatives: dict[str, tuple[tuple[SourceObject, ...], SourceObject | None]] = {}

    @property
    def basis(self) -> str:
        """What a date depends on besides the file: another --date-from or --timezone may give another."""
        return f"{self.date_from} {self.zone or 'local'}"

    def _read_range(self, obj: SourceObject, offset: int, length: int) -> bytes:
        data = self.source.read_range(obj, offset, length)
        self.stats.add("date_header_bytes", len(data))
        self.stats.add("date_header_reads")
        return data

    def date_of(self, obj: SourceObject, download: Download, staged: Path | None) -> OriginalDate:
        """`staged`: the whole file on disk, or None while it still downloads (then a video's header
        is read from S3 with ranged GETs). The chain (docs/photos.md): the capture time in the file,
        its sidecars, its twin, a date in its name, EXIF's last-written time, the file time in S3
        metadata, S3's. A sidecar gets its photo's date, whatever --date-from, so that a date layout
        puts the two in one folder: read from S3 without the photo's download (a ranged GET or two,
        a HEAD only when the photo's own times are needed)."""
        sidecars, twin = self.relatives.get(obj.key, ((), None))
        if twin is not None and media_format(obj.key) in SIDECAR_TYPES:
            photo = twin

            def photo_headers() -> Download:
                try:
                    return self.source.headers_of(photo)
                except ObjectError:   # the photo is gone or unreadable: its S3 times are not known
                    return Download("", None, None)
            return OriginalDate(self._chain(photo, photo_headers, None, sidecars, None).moment, "pair")
        return self._chain(obj, lambda: download, staged, sidecars, twin)

    def _chain(self, obj: SourceObject, headers: Callable[[], Download], staged: Path | None,
               sidecars: tuple[SourceObject, ...], twin: SourceObject | None) -> OriginalDate:
        written: dt.datetime | None = None
        if self.date_from in ("auto", "exif"):
            moment, source, written = self._in_file(obj, staged)
            if moment is not None:
                return OriginalDate(moment, source)
        if self.date_from == "auto":
            if (moment := self._from_sidecars(obj, sidecars)) is not None:
                return OriginalDate(moment, "sidecar")
            if twin is not None and (moment := self._in_file(twin, None)[0]) is not None:
                return OriginalDate(moment, "pair")   # a Live Photo's other half, RAW+JPEG
            if (named := date_in_name(obj.key, self.zone)) is not None:
                return OriginalDate(named, "filename")
        if written is not None:
            return OriginalDate(written, "exif-datetime")
        if self.date_from in ("auto", "metadata") and (mtime := headers().source_mtime) is not None:
            return OriginalDate(mtime, "metadata")
        return OriginalDate(obj.last_modified, "s3")

    def _from_sidecars(self, obj: SourceObject, sidecars: tuple[SourceObject, ...]) -> dt.datetime | None:
        """The capture time in `obj`'s sidecars: XMP, then Takeout JSON (each read whole: a sidecar is small)."""
        for sidecar in sorted(sidecars, key=lambda sidecar: sidecar.key.lower().endswith(".json")):
            extension = sidecar.key.rsplit(".", 1)[-1].lower()
            if extension == "aae" or sidecar.size > SIDECAR_MAX_BYTES:   # .aae: edits, no capture time
                continue
            data = self._read_range(sidecar, 0, sidecar.size)
            name = obj.key.rsplit("/", 1)[-1]
            cut_short = not sidecar.key.rsplit("/", 1)[-1].lower().startswith(name.lower())
            # a duplicate IMG_1(1).jpg: its sidecar's title is the name it was uploaded with, IMG_1.jpg
            titles = {name, re.sub(r"\(\d+\)(?=\.[^.]*$)", "", name)} if cut_short else set()
            if (moment := takeout_time(data, titles) if extension == "json"
                    else xmp_sidecar_time(data, self.zone)) is not None:
                return moment
        return None

    def _in_file(self, obj: SourceObject, staged: Path | None) -> tuple[dt.datetime | None, str, dt.datetime | None]:
        """(capture time, its source, the EXIF last-written time). A staged file is read where it
        lies; before its download (a twin's date, a video that streams), only what the format needs
        comes from S3 (ranged GETs)."""
        extension = media_format(obj.key, staged)
        if extension == "json" and staged is not None and obj.size <= SIDECAR_MAX_BYTES:   # a Takeout sidecar's own
            return takeout_time(staged.read_bytes()), "sidecar", None
        if staged is None or extension in VIDEO_EXTENSIONS:
            # through block_reader: 64 KiB ranged GETs of what the format needs (hachoir, too, reads
            # a field at a time: an AVI's header costs one GET, an INFO list after its frames one more)
            with (open(staged, "rb") if staged is not None else ReadAtStream(
                    block_reader(lambda offset, length: self._read_range(obj, offset, length)), obj.size)) as stream:
                if extension in MP4_EXTENSIONS:
                    return mp4_creation_time(lambda offset, length: (stream.seek(offset), stream.read(length))[1],
                                             obj.size, self.zone), "video", None
                if extension in AVCHD_EXTENSIONS:
                    return avchd_recording_time(stream.read(AVCHD_HEAD_BYTES), self.zone), "video", None
                if extension in HEADER_DATED_VIDEOS:
                    if MEDIA_TYPES[extension] == "video/x-msvideo":
                        return avi_recording_time(stream, self.zone), "video", None
                    return matroska_recording_time(stream), "video", None
                if extension in VIDEO_EXTENSIONS:
                    return None, "", None
                captured, written = photo_times_in(stream, obj.size, self.zone)   # a twin's or a sidecar's photo
                return captured, "exif", written
        captured, written = photo_times(staged, self.zone)
        if captured is not None:
            return captured, "exif", written
        captured, source, also_written = photo_tags(staged, self.zone)
        return captured, source, written or also_written


class ReadAtStream(io.RawIOBase):
    """A seekable binary stream over `read_at(offset, length)`: a library reads an S3 object's
    header through it as if it were a file."""

    def __init__(self, read_at: Callable[[int, int], bytes], size: int):
        super().__init__()
        self.read_at, self.size, self.position = read_at, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = max(0, offset + {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence])
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer: Any) -> int:
        data = self.read_at(self.position, min(len(buffer), max(0, self.size - self.position)))
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)


def block_reader(read_at: Callable[[int, int], bytes], block: int = HEADER_READ_BYTES) -> Callable[[int, int], bytes]:
    """`read_at` with reads of at least `block` bytes, kept: a box walk asks for 16 bytes at a time.
    Blocks start at 4 KiB boundaries, so that a parser stepping back a few bytes stays in one."""
    blocks: dict[int, bytes] = {}

    def read(offset: int, length: int) -> bytes:
        for start, data in blocks.items():
            if start <= offset and offset + length <= start + len(data):
                return data[offset - start: offset - start + length]
        start = offset - offset % 4096
        data = blocks[start] = read_at(start, max(offset + length - start, block))
        return data[offset - start: offset - start + length]

    return read


#######################################################################
# Google Drive destination ############################################
#######################################################################
# OAuth helpers, the Drive service factory, and DriveDestination: the only code that touches
# googleapiclient. It owns request-level retry, the folder cache and the resumable session.


@dataclasses.dataclass(frozen=True)
class DriveFile:
    """A Drive file or folder as the API reports it."""
    id: str
    name: str
    mime_type: str
    parent_id: str | None
    size: int | None                 # bytes; None for folders
    md5: str | None                  # Drive's md5Checksum; None for folders
    app_properties: dict[str, str]
    modified_time: str | None = None
    trashed: bool = False
    created_time: str | None = None
    drive_id: str | None = None      # the shared drive it lives in
    head_revision: str | None = None  # the revision whose bytes it holds now (binary files)

    @classmethod
    def from_resource(cls, resource: dict[str, Any]) -> DriveFile:
        parents = resource.get("parents") or [None]
        size = resource.get("size")
        return cls(id=resource["id"], name=resource.get("name", ""), mime_type=resource.get("mimeType", ""),
                   parent_id=parents[0], size=int(size) if size is not None else None,
                   md5=resource.get("md5Checksum"), app_properties=dict(resource.get("appProperties") or {}),
                   modified_time=resource.get("modifiedTime"), trashed=bool(resource.get("trashed")),
                   created_time=resource.get("createdTime"), drive_id=resource.get("driveId"),
                   head_revision=resource.get("headRevisionId"))

    @property
    def is_folder(self) -> bool:
        return self.mime_type == FOLDER_MIME


def removals_in(changes: Iterable[dict[str, Any]], copy_folders: set[str], root_id: str,
                files: dict[str, str], folders: dict[str, str]) -> None:
    """Sort one page of Drive's changes into `files` and `folders` (file id → how it went:
    "trashed", "deleted", "moved"): what left the copy's folder tree. A file renamed, or moved
    between the copy's own folders, is still in the copy. Which ids are ours is for the caller to
    say; the feed also names other copies' files, and this run's own folders and uploads."""
    for change in changes:
        file_id, resource = change.get("fileId"), change.get("file") or {}
        if not file_id or file_id == root_id:   # the root is found by its mark wherever it goes
            continue
        is_folder = resource.get("mimeType") == FOLDER_MIME
        if change.get("removed") or not resource:
            how = "deleted"
        elif resource.get("trashed"):
            how = "trashed"
        elif not set(resource.get("parents") or ()) & copy_folders:
            how = "moved"
        else:
            (folders if is_folder else files).pop(file_id, None)   # back where it was (untrashed, moved back)
            continue
        (folders if is_folder or file_id in copy_folders else files)[file_id] = how


def root_marker(folder_name: str) -> str:
    """The value of PROP_ROOT on the root folder of copies into `folder_name`."""
    return hashlib.sha256(folder_name.encode("utf-8")).hexdigest()[:32]


def drive_folder_url(folder_id: str) -> str:
    return f"https://drive.google.com/drive/folders/{folder_id}"


def root_location(root: DriveFile, folder_name: str, my_drive_id: str) -> str:
    """How to name the root in messages: its name, and where it is when someone moved or renamed it."""
    notes = []
    if root.name != folder_name:
        notes.append(f"renamed from {folder_name!r}")
    if my_drive_id and root.parent_id != my_drive_id:   # unknown under drive.file where files.get('root') is 404
        notes.append("moved from the top of My Drive")
    if not notes:
        return repr(root.name)
    return f"{root.name!r} ({', '.join(notes)}: used where it is, {drive_folder_url(root.id)})"


def drive_query_literal(value: str) -> str:
    """Quote a value for a Drive `q` string: backslash first, then the apostrophe."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def load_client_config(path: Path) -> dict[str, Any]:
    """The OAuth client from credentials.json; it must be a Desktop ("installed") client."""
    if not path.is_file():
        raise UsageError(f"OAuth client file not found: {path}: create a Desktop-app OAuth client in Google "
                         "Cloud Console and save it there (see credentials.json.example)")
    try:
        client_config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, OSError):
        raise UsageError(f"{path} is not a valid JSON OAuth client file: download it again") from None
    if isinstance(client_config, dict) and client_config.get("type") == "service_account":
        raise UsageError(f"{path} is a service-account key, not an OAuth client: sign in with it through "
                         f"--service-account {path} (see the README's service accounts), or save a Desktop-app "
                         "OAuth client here")
    if not isinstance(client_config, dict) or "installed" not in client_config:
        kind = next(iter(client_config), "?") if isinstance(client_config, dict) and client_config else "?"
        raise UsageError(f"{path} holds a {kind!r} OAuth client; create one of type 'Desktop app' instead")
    installed = client_config["installed"]
    for field in ("client_id", "client_secret", "auth_uri", "token_uri"):
        if not installed.get(field):
            raise UsageError(f"{path} lacks installed.{field}: download the OAuth client file again")
    if installed.get("client_id") in EXAMPLE_CLIENT_IDS or installed.get("client_secret") == EXAMPLE_CLIENT_SECRET:
        raise UsageError(f"{path} still holds the example's client from credentials.json.example: download your "
                         "own Desktop-app OAuth client from Google Cloud Console (APIs & Services → Credentials) "
                         "and save it there")
    SECRETS.add(installed.get("client_secret"))
    return client_config


def browser_available() -> bool:
    """Whether Python's webbrowser can find a browser here (a server over ssh has none)."""
    import webbrowser

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False   # over ssh: webbrowser would start lynx/w3m in this terminal instead
    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def free_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return int(probe.getsockname()[1])


def signals_interrupt() -> contextlib.AbstractContextManager[None]:
    """While waiting for consent nothing is in flight: one SIGINT or SIGTERM ends the wait (exit 130)
    instead of setting the stop flag that only a transfer watches."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return handling_signals(interrupt)


#: Our own keys in token.json (google-auth reads only its own): when the user signed in, and whether
#: a refresh has worked more than 7 days later, which a consent screen in Testing never allows.
TOKEN_SIGNED_IN, TOKEN_OUTLIVED_A_WEEK = "cloud_transfer_signed_in", "cloud_transfer_outlived_a_week"
TESTING_TOKEN_DAYS = 7   #: Google: refresh tokens of an app in "Testing" expire after 7 days


def save_token(creds: Credentials, path: Path, *, signed_in: bool = False) -> None:
    """Write token.json atomically with 0600 permissions (Google's quickstart does neither), keeping
    when the user signed in (a refresh keeps it; a consent starts it again)."""
    marks: dict[str, Any] = {}
    if signed_in:
        marks[TOKEN_SIGNED_IN] = utc_now_iso()
    else:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            old = json.loads(path.read_text(encoding="utf-8"))
            marks = {key: old[key] for key in (TOKEN_SIGNED_IN, TOKEN_OUTLIVED_A_WEEK) if key in old}
        age = token_age_days(marks)
        if age is not None and age > TESTING_TOKEN_DAYS:   # this save follows a refresh that worked
            marks[TOKEN_OUTLIVED_A_WEEK] = True
    write_atomically(path, json.dumps({**json.loads(creds.to_json()), **marks}).encode("utf-8"))


def token_age_days(token: dict[str, Any]) -> float | None:
    if (signed_in := parse_utc(token.get(TOKEN_SIGNED_IN))) is None:
        return None
    return (dt.datetime.now(dt.timezone.utc) - signed_in).total_seconds() / 86400


def testing_mode_warning(token_path: Path) -> str:
    """For --check: a sign-in older than 6 days whose refresh was never seen to outlive 7 may be one
    of a consent screen in Testing, which will end at 7 days and stop every cron run."""
    with contextlib.suppress(OSError, ValueError):
        token = json.loads(token_path.read_text(encoding="utf-8"))
        age = token_age_days(token)
        if age is not None and age > TESTING_TOKEN_DAYS - 1 and not token.get(TOKEN_OUTLIVED_A_WEEK):
            return (f"; this sign-in is {int(age)} days old: if the OAuth consent screen is in Testing, Google "
                    f"ends it at {TESTING_TOKEN_DAYS} days (publish the app, or use a service account)")
    return ""


def run_consent(config: Config) -> Credentials:
    """The installed-app flow (local-server redirect; the out-of-band flow no longer exists)."""
    from google_auth_oauthlib.flow import InstalledAppFlow

    client_config = load_client_config(config.credentials_path)
    flow = InstalledAppFlow.from_client_config(client_config, scopes=config.scopes)
    open_browser = not config.no_browser and browser_available()
    port = config.oauth_port
    if not open_browser:
        port = port or free_local_port()   # a fixed port, so that the ssh -L line can name it
        if not config.no_browser:
            log.warning("no web browser found here: open the URL below in a browser on any machine")
        log.warning("on a server, first run on your own computer: ssh -L %d:localhost:%d %s@%s, then open the "
                    "URL there", port, port, os.environ.get("USER", "you"), socket.gethostname())
    try:
        # access_type=offline (the library's default) asks for a refresh token; prompt=consent makes
        # Google send one again on a second `auth`, which it otherwise omits for an app already allowed.
        with signals_interrupt():
            creds = flow.run_local_server(port=port, open_browser=open_browser,
                                          authorization_prompt_message="Open this URL to allow access to Drive: {url}",
                                          prompt="consent")
    except Exception as exc:  # oauthlib/requests raise many types; all mean "consent did not finish"
        raise AuthError(f"Google consent did not complete: {type(exc).__name__}: {exc}") from None
    SECRETS.add(creds.token, creds.refresh_token)
    save_token(creds, config.token_path, signed_in=True)
    log.info("authorised; token saved to %s (mode 0600)", config.token_path)
    return creds


def load_service_account(config: Config) -> Any:
    """A service-account key → credentials with a token already fetched, so that a wrong key or a
    delegation the Workspace admin has not granted fails here, in words, before any Drive request."""
    from google.oauth2 import service_account

    path = config.service_account_path
    assert path is not None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        if info.get("type") != "service_account":
            raise ValueError(info.get("type"))
        creds = service_account.Credentials.from_service_account_info(info, scopes=config.scopes,
                                                                       subject=config.impersonate)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UsageError(f"{path} is not a service-account key (a JSON key from Google Cloud Console > IAM > "
                         "Service accounts > Keys)") from None
    SECRETS.add(info.get("private_key_id"))
    if config.drive_endpoint_url:
        creds = creds.with_token_uri(f"{config.drive_endpoint_url}/token")
    try:
        refresh_credentials(creds)
    except AuthError as exc:
        if config.impersonate and "unauthorized_client" in str(exc):
            raise AuthError(f"service account {creds.service_account_email} may not act for {config.impersonate}: "
                            f"a Workspace admin must allow its client ID {info.get('client_id')} the scope "
                            f"{config.scopes[0]} (Admin console > Security > API controls > Domain-wide "
                            "delegation; a new grant can take hours to apply)") from None
        raise AuthError(f"the service-account key {path} was refused ({exc}): it may be deleted or disabled") from None
    return creds


def load_credentials(config: Config, *, interactive: bool) -> Credentials:
    """token.json → valid Credentials, refreshing (and saving) as needed; consent only on a terminal.
    With a service account: its key, no token.json and no consent."""
    if config.service_account_path is not None:
        return load_service_account(config)
    if not config.token_path.exists():
        load_client_config(config.credentials_path)   # name a missing/bad client file first
        if not interactive:
            raise AuthError(f"no Google token ({config.token_path}) and no terminal for consent: run "
                            "'python cloud_transfer.py auth' interactively once")
        return _with_endpoint(run_consent(config), config)
    try:
        info = json.loads(config.token_path.read_text(encoding="utf-8"))
        creds = Credentials.from_authorized_user_info(info)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError):
        raise AuthError(f"{config.token_path} is unreadable or corrupted: run 'python cloud_transfer.py auth' "
                        "(it will be replaced)") from None
    SECRETS.add(creds.token, creds.refresh_token, creds.client_secret)
    granted = set(creds.scopes or [])
    if config.full_scope and SCOPE_DRIVE_FULL not in granted:
        raise AuthError(f"{config.token_path} does not grant full Drive access: run "
                        "'python cloud_transfer.py auth --full-scope'")
    if granted and not granted & {SCOPE_DRIVE_FILE, SCOPE_DRIVE_FULL}:
        raise AuthError(f"{config.token_path} grants no Drive access: run 'python cloud_transfer.py auth'")
    creds = _with_endpoint(creds, config)
    if not creds.valid:
        if not creds.refresh_token:
            raise AuthError(f"{config.token_path} has expired and holds no refresh token: run "
                            "'python cloud_transfer.py auth'")
        refresh_credentials(creds)
        save_token(creds, config.token_path)
    return creds


def refresh_credentials(creds: Credentials) -> None:
    from google.auth.transport.requests import Request

    try:
        creds.refresh(Request())
    except RefreshError as exc:
        verdict = classify_drive_error(exc)
        if verdict.action == Verdict.RETRY:
            raise UnavailableError(f"{verdict.reason}: try again later (token.json is fine)") from None
        raise AuthError(verdict.reason if isinstance(creds, Credentials) else str(exc.args[0] if exc.args else exc)) \
            from None
    except TransportError as exc:
        raise UnavailableError(f"cannot reach Google's token endpoint: {type(exc).__name__}") from None
    SECRETS.add(creds.token)


def _with_endpoint(creds: Credentials, config: Config) -> Credentials:
    # google-auth ignores a token_uri stored in token.json, so an emulator's token endpoint is set here.
    if config.drive_endpoint_url:
        rerouted = creds.with_token_uri(f"{config.drive_endpoint_url}/token")
        rerouted.expiry = creds.expiry   # the copy loses it (google-auth 2.63), hiding an expired token
        return rerouted
    return creds


_DISCOVERY_DOCS: dict[str | None, dict[str, Any]] = {}
_DISCOVERY_LOCK = threading.Lock()


def drive_discovery_doc(endpoint_url: str | None) -> dict[str, Any]:
    """The bundled Drive v3 discovery document, re-rooted at `endpoint_url` when one is set.

    client_options' api_endpoint keeps the https scheme for media URLs and drops drive/v3, so the
    document's rootUrl/baseUrl are rewritten instead; then every API and upload URL goes there.
    """
    with _DISCOVERY_LOCK:
        if endpoint_url not in _DISCOVERY_DOCS:
            doc = json.loads(get_static_doc("drive", "v3"))
            if endpoint_url:
                root = endpoint_url.rstrip("/") + "/"
                doc.update(rootUrl=root, mtlsRootUrl=root, baseUrl=root + doc.get("servicePath", "drive/v3/"))
            _DISCOVERY_DOCS[endpoint_url] = doc
        return _DISCOVERY_DOCS[endpoint_url]


class _SendOnceHttp(httplib2.Http):
    """httplib2.Http that never re-sends a request whose body is a stream.

    NOTE: httplib2 re-sends a request when the connection drops before the answer, on a first
    failure "regardless of the number of RETRIES" (httplib2 _conn_request). For a body held in
    memory that is harmless here: every create carries a pre-allocated id, so a re-sent create
    cannot make a twin (Drive answers 409). But a resumable chunk's body is a slice of the staged
    file that the first send consumed: re-sent, it goes out empty under the old Content-Length and
    the server waits for bytes that never come. Such errors reach DriveApi instead, whose next
    chunk first asks Drive how much it holds.
    """

    def _conn_request(self, conn: Any, request_uri: str, method: str, body: Any, headers: Any) -> Any:
        if body is None or isinstance(body, (bytes, str)):
            return super()._conn_request(conn, request_uri, method, body, headers)
        try:
            if conn.sock is None:
                conn.connect()
            conn.blocksize = STREAM_SEND_BLOCK_BYTES   # http.client reads a stream body 8 KiB at a time
            conn.request(method, request_uri, body, headers)
            raw_response = conn.getresponse()
            content = raw_response.read()
        except BaseException:
            conn.close()
            raise
        response = httplib2.Response(raw_response)
        limits = getattr(self, "limit_kwargs", None)   # httplib2 >= 0.31 takes decompression limits
        decompress = httplib2._decompressContent
        return response, (decompress(response, content, limits) if limits is not None
                          else decompress(response, content))


class _CountingAuthorizedHttp(AuthorizedHttp):
    """AuthorizedHttp that counts requests, so runs can report Drive requests per file."""

    def __init__(self, *args: Any, on_request: Callable[[], None], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_request = on_request

    def request(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("_credential_refresh_attempt"):
            self._on_request()
        return super().request(*args, **kwargs)


def make_drive_service_factory(config: Config, creds: Credentials, stats: Stats | None = None) -> Callable[[], Any]:
    """A factory of Drive services; call it once per thread (httplib2 is not thread-safe)."""
    doc = drive_discovery_doc(config.drive_endpoint_url)
    on_request = (lambda: stats.add("drive_requests")) if stats else (lambda: None)

    def factory() -> Any:
        transport = _SendOnceHttp(timeout=build_http().timeout)
        # As build_http() does: 308 is Drive's "resume incomplete", not a redirect.
        transport.redirect_codes = transport.redirect_codes - {308}
        http = _CountingAuthorizedHttp(creds, http=transport, on_request=on_request)
        return build_from_document(doc, http=http)

    return factory


class DriveApi:
    """Drive requests with the one loop that retries a request: classify → back off (or pace every
    worker) → retry. The other loops repeat something else: a resumable session started afresh
    (DriveUploader), a create with another id when Drive will not take one (DriveFolders.create,
    Sending.upload), another attempt at a whole object (Transfer._copy_with_retries).

    Thread-safe: each thread gets its own service (httplib2 objects are not shared). Creates carry
    ids from `new_id()` (files.generateIds, 1,000 per call), so a create whose answer was lost is
    re-sent safely: Drive refuses a twin with 409, and `create` then reads the file by its id
    (files.get is read-after-write consistent; files.list is not, so it is never asked).
    """

    def __init__(self, service_factory: Callable[[], Any], *, pacer: Pacer | None = None,
                 backoff: Backoff | None = None, sleep: Callable[[float], Any] = time.sleep,
                 stop: threading.Event | None = None, stats: Stats | None = None, outage: OutageWatch | None = None):
        self._factory = service_factory
        self._local = threading.local()
        self.backoff = backoff or Backoff()
        self.pacer = pacer or Pacer(self.backoff)
        self.outage = outage or OutageWatch()
        self.sleep, self.stop, self.stats = sleep, stop or threading.Event(), stats or Stats()
        self.list_options: dict[str, Any] = {"supportsAllDrives": True, "includeItemsFromAllDrives": True}
        self._ids: list[str] = []
        self._ids_lock = threading.Lock()
        self.endpoint = "https://www.googleapis.com"   # for messages only
        self._said_unreachable = 0.0

    def _service(self) -> Any:
        service = getattr(self._local, "service", None)
        if service is None:
            service = self._local.service = self._factory()
        return service

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self.sleep(seconds)
        if self.stop.is_set():
            raise InterruptedRun("interrupted")

    @staticmethod
    def _service_name(upload: bool) -> str:
        # Uploads go to Google's upload servers, which fail on their own: an API that still answers
        # (a get, a listing) does not make a failing upload service healthy.
        return "Google Drive's upload service" if upload else "Google Drive"

    def wait_turn(self, write: bool = False) -> float:
        """Wait for this request's slot from the pacer; returns when it is sent (the pacer's clock)."""
        while wait := self.pacer.reserve(write):
            self.pause(wait)
        if self.stop.is_set():
            raise InterruptedRun("interrupted")
        return self.pacer.clock()

    def after_error(self, verdict: Verdict, attempt: int, upload: bool = False, sent_at: float | None = None,
                    write: bool = True) -> None:
        """Count a retry and wait: rate limits slow every worker (the pacer), other errors this one;
        a failure that persists across the whole process for the outage window stops the run."""
        self.stats.add("retries")
        log.debug("retrying after: %s", verdict.reason)
        if verdict.rate_limited:
            self.stats.add("rate_limited")
        if verdict.rate_limited and write:
            self.pacer.rate_limited(verdict.retry_after_s, daily_cap=verdict.daily_cap, sent_at=sent_at)
        elif verdict.rate_limited:
            # A refused read backs off alone: the write rate learns from writes only (a verify's
            # thousands of listings must neither start pacing nor pile up global pauses).
            self.pause(self.backoff.delay(attempt, verdict.retry_after_s))
        else:
            if verdict.unreachable and time.monotonic() - self._said_unreachable >= RETRY_NOTICE_S:
                self._said_unreachable = time.monotonic()
                log.warning("%s: retrying", self.unreachable(verdict))
            self.outage.failed(self._service_name(upload), verdict.reason)
            self.pause(self.backoff.delay(attempt, verdict.retry_after_s))

    def succeeded(self, upload: bool = False, write: bool = False, sent_at: float | None = None) -> None:
        self.pacer.succeeded(upload, write=write or upload, sent_at=sent_at)
        self.outage.ok(self._service_name(upload))

    def unreachable(self, verdict: Verdict) -> str:
        return f"cannot reach Google Drive at {self.endpoint} ({verdict.reason})"

    def call(self, make_request: Callable[[Any], Any], *, missing_ok: bool = False, upload: bool = False,
             write: bool = False) -> Any:
        """Execute a request with retries. `write` marks creates, updates and deletes (paced once
        Drive pushes back); `upload` marks media creates and revisions (where the daily cap lives)."""
        for attempt in range(1, MAX_REQUEST_ATTEMPTS + 1):
            sent_at = self.wait_turn(write or upload)
            try:
                result = make_request(self._service()).execute(num_retries=0)
                self.succeeded(upload, write, sent_at)
                return result
            except CloudTransferError:
                raise   # from the bytes' side (a stop during a --bwlimit wait, a failed download), not Drive's
            except Exception as exc:  # classified: nothing is swallowed
                if missing_ok and isinstance(exc, HttpError) and exc.resp.status == 404:
                    self.succeeded(write=write, sent_at=sent_at)
                    return None
                verdict = classify_drive_error(exc, upload=upload)
                if verdict.action != Verdict.RETRY or attempt == MAX_REQUEST_ATTEMPTS:
                    raise_for(dataclasses.replace(verdict, reason=self.unreachable(verdict)) if verdict.unreachable
                              else verdict)
                self.after_error(verdict, attempt, upload, sent_at, write=write or upload)
        raise AssertionError("unreachable")

    def new_id(self) -> str:
        """A pre-allocated file id (files.generateIds; one request per 1,000 creates)."""
        with self._ids_lock:
            if not self._ids:
                answer = self.call(lambda service: service.files().generateIds(
                    count=GENERATED_IDS_PER_CALL, space="drive", type="files", fields="ids"))
                self._ids = list(reversed(answer.get("ids") or []))
                if not self._ids:
                    raise ObjectError(Verdict(Verdict.RETRY, "Drive generated no file ids"))
            return self._ids.pop()

    def create(self, make_request: Callable[[Any], Any], file_id: str, *, upload: bool = False) -> dict[str, Any]:
        """Create with a pre-allocated id; "already exists" (a re-sent create that had landed, or an
        answer lost in an earlier run) is the success it stands for, read back with files.get."""
        try:
            return self.call(make_request, upload=upload, write=True)
        except ObjectError as exc:
            if exc.verdict.action == Verdict.EXISTS:
                return self.existing(file_id)
            raise

    def existing(self, file_id: str) -> dict[str, Any]:
        found = self.get_resource(file_id)
        if found is None:   # "in use" yet not there: deleted, or an id Drive will not take again
            raise IdNotUsable(file_id)
        return found

    def get_resource(self, file_id: str, fields: str = DRIVE_FILE_FIELDS) -> dict[str, Any] | None:
        return self.call(lambda service: service.files().get(
            fileId=file_id, fields=fields, supportsAllDrives=True), missing_ok=True)

    def get(self, file_id: str) -> DriveFile | None:
        resource = self.get_resource(file_id)
        return DriveFile.from_resource(resource) if resource else None

    def list(self, query: str) -> Iterator[DriveFile]:
        """Every match of `query`, page by page. An incomplete answer (shared drives) is a failure,
        never "not there". No orderBy: Google warns it can time out on large collections."""
        page_token = None
        while True:
            response = self.call(lambda service, token=page_token: service.files().list(
                q=query, fields=DRIVE_LIST_FIELDS, pageSize=DRIVE_PAGE_SIZE, pageToken=token, **self.list_options))
            if response.get("incompleteSearch"):
                raise ObjectError(Verdict(Verdict.RETRY, "Drive answered an incomplete listing (incompleteSearch)"))
            for resource in response.get("files", []):
                yield DriveFile.from_resource(resource)
            page_token = response.get("nextPageToken")
            if not page_token:
                return

    def list_folder(self, folder_id: str) -> Iterator[DriveFile]:
        """Every non-trashed child of a folder."""
        return self.list(f"{drive_query_literal(folder_id)} in parents and trashed = false")

    def set_app_properties(self, file_id: str, props: dict[str, str], paced: bool = True) -> None:
        """Add to a file's appProperties (Drive merges them key by key). `paced` False: the run's
        lease, one write in minutes, which must not wait behind the workers' for a slot."""
        self.call(lambda service: service.files().update(
            fileId=file_id, body={"appProperties": props}, fields="id", supportsAllDrives=True), write=paced)

    def my_drive_id(self) -> str:
        """The id of My Drive's top folder (what `'root' in parents` means)."""
        return str((self.get_resource("root", fields="id") or {}).get("id") or "")

    def keep_revision(self, file_id: str, revision_id: str) -> None:
        """Keep a revision forever: Drive purges other non-head revisions after about 30 days, and
        keeps at most 200 so marked per file (Drive API "Manage revisions")."""
        self.call(lambda service: service.revisions().update(
            fileId=file_id, revisionId=revision_id, body={"keepForever": True}, fields="id"), write=True)

    def download_revision(self, file_id: str, revision_id: str, fileobj: Any) -> bool:
        """A revision's bytes into `fileobj`, chunk by chunk, each chunk retried; False when Drive
        no longer has that revision."""
        downloader = MediaIoBaseDownload(fileobj, self._service().revisions().get_media(
            fileId=file_id, revisionId=revision_id), chunksize=REVISION_CHUNK_BYTES)
        done = False
        while not done:
            answer = self.call(lambda service: _Executes(downloader.next_chunk), missing_ok=True)
            if answer is None:
                return False
            done = answer[1]
        return True

    def trash(self, file_id: str) -> None:
        self.call(lambda service: service.files().update(
            fileId=file_id, body={"trashed": True}, fields="id", supportsAllDrives=True), missing_ok=True, write=True)

    def delete(self, file_id: str) -> None:
        self.call(lambda service: service.files().delete(fileId=file_id, supportsAllDrives=True),
                  missing_ok=True, write=True)

    def free_space(self) -> int | None:
        """Bytes left in the account's storage (about.get storageQuota); None when it has no limit."""
        quota = self.call(lambda service: service.about().get(fields="storageQuota(limit,usage)")).get("storageQuota") or {}
        if quota.get("limit") is None:
            return None
        return int(quota["limit"]) - int(quota.get("usage") or 0)

    def account(self) -> dict[str, str]:
        """The signed-in Google account (about.get): its stable permissionId, and the email address
        for messages (Google: it "may not be present in certain contexts", and it can change)."""
        about = self.call(lambda service: service.about().get(fields="user(emailAddress,permissionId)"))
        user = about.get("user") or {}
        return {"account_id": str(user.get("permissionId") or ""), "account": str(user.get("emailAddress") or "")}

    def _feed_options(self) -> dict[str, Any]:
        drive_id = self.list_options.get("driveId")
        return {"driveId": drive_id, "supportsAllDrives": True} if drive_id else {}

    def start_page_token(self) -> str:
        """Where Drive's changes feed stands now: changes.list from it tells what changes after."""
        answer = self.call(lambda service: service.changes().getStartPageToken(
            fields="startPageToken", **self._feed_options()))
        return str(answer["startPageToken"])

    def changes(self, token: str) -> Iterator[list[dict[str, Any]] | str]:
        """Drive's changes since `token`, a page at a time, then the token to keep for next time.
        Under drive.file the feed holds only files this app can see (Drive API "Retrieve changes")."""
        shared = {"includeItemsFromAllDrives": True} if self._feed_options() else {}
        while True:
            page = self.call(lambda service, token=token: service.changes().list(
                pageToken=token, pageSize=1000, spaces="drive", fields=DRIVE_CHANGES_FIELDS,
                **self._feed_options(), **shared))
            yield page.get("changes") or []
            if page.get("newStartPageToken"):
                yield str(page["newStartPageToken"])
                return
            token = page.get("nextPageToken")
            if not token:   # neither: the feed broke its contract; a walk is the safe answer
                raise ObjectError(Verdict(Verdict.FAIL, "Drive's changes feed answered without a next token"))

    def use_shared_drive(self, drive_id: str | None) -> None:
        """List inside one shared drive (corpora=drive): allDrives may answer incompleteSearch."""
        if drive_id:
            self.list_options.update(corpora="drive", driveId=drive_id)


class _Executes:
    """What DriveApi.call runs: one step of a library object (a download's next chunk) as a request."""
    def __init__(self, step: Callable[[], Any]):
        self.step = step

    def execute(self, num_retries: int = 0) -> Any:
        return self.step()


@dataclasses.dataclass
class FolderListing:
    """What one Drive folder holds that matters to us; listed at most once per run."""
    folders: dict[str, str]                  # exact child folder name -> id (oldest wins)
    by_source: dict[str, list[DriveFile]]    # PROP_SOURCE value -> our files in the folder
    next_of: dict[str, str] = dataclasses.field(default_factory=dict)   # child folder id -> its PROP_NEXT


def folder_listing(items: Iterator[DriveFile]) -> FolderListing:
    listing = FolderListing({}, defaultdict(list))
    # Oldest first, sorted here (orderBy can time out); S3 keys are case-sensitive, so names are
    # compared exactly in Python, never by Drive's case-insensitive `name =`.
    for item in sorted(items, key=lambda f: (f.created_time or "", f.id)):   # ties (EXIF dates): by id
        if item.is_folder:
            if PROP_MORE_OF not in item.app_properties:   # "2019 (2)" continues "2019"; it is no prefix
                listing.folders.setdefault(item.name, item.id)
            if PROP_NEXT in item.app_properties:
                listing.next_of[item.id] = item.app_properties[PROP_NEXT]
        elif PROP_SOURCE in item.app_properties:
            listing.by_source[item.app_properties[PROP_SOURCE]].append(item)
    return listing


def folder_chain(api: DriveApi, first_id: str, next_id: str | None) -> list[str]:
    """A path's folders: the first, then each one a full folder's PROP_NEXT names, while that one
    says it continues this path (moved with it or not). A trashed link is passed over, not used."""
    chain, live = [first_id], [first_id]
    while next_id and next_id not in chain:
        folder = api.get(next_id)
        if not (folder and folder.is_folder and folder.app_properties.get(PROP_MORE_OF) == first_id):
            break
        chain.append(folder.id)
        if not folder.trashed:
            live.append(folder.id)
        next_id = folder.app_properties.get(PROP_NEXT)
    return live


class DriveFolders:
    """The folder tree under the root: one way to get a folder, whatever the run knows of it.

    A folder is, in order: the one this run already used; the one the checkpoint recorded (checked
    with files.get, which sees it at once); a child of that exact name in its parent's listing;
    else created with a pre-allocated id that is recorded (fsync'd) before the create is sent, so
    a lost answer or a killed run finds it again by id. Each path has its own lock: two workers
    never create the same folder.

    Drive holds at most 500,000 items in a folder (numChildrenInNonRootLimitExceeded). A path whose
    folder is full continues in a folder beside it, "Name (2)", marked as its continuation, and the
    full one is marked with where it continues: the chain is found from Drive, without the
    checkpoint. New items go to the chain's last folder; what a path holds is what all of them hold.
    """

    def __init__(self, api: DriveApi, *, recorded: Callable[[tuple[str, ...]], str | None] = lambda path: None,
                 record: Callable[[tuple[str, ...], str], None] = lambda path, folder_id: None,
                 recorded_more: Callable[[tuple[str, ...]], list[str]] = lambda path: [],
                 record_more: Callable[[tuple[str, ...], str], None] = lambda path, folder_id: None):
        self.api, self.recorded, self.record = api, recorded, record
        self.recorded_more, self.record_more = recorded_more, record_more
        self._lock = threading.Lock()
        self._path_locks: defaultdict[Any, threading.Lock] = defaultdict(threading.Lock)
        self._ids: dict[tuple[str, ...], str] = {}            # path -> the folder new items go to
        self._chains: dict[str, list[str]] = {}               # folder id -> its path's chain (one list per path)
        self._paths: dict[str, tuple[str, ...]] = {}          # chain member id -> path
        self._listings: dict[str, FolderListing] = {}
        self.my_drive_id = ""

    def set_root(self, root_id: str, next_id: str | None = None) -> None:
        """The root, with the folders it continues in if Drive called it full (`next_id`: its PROP_NEXT)."""
        self._use((), folder_chain(self.api, root_id, next_id) if next_id else [root_id])

    def _use(self, path: tuple[str, ...], chain: list[str]) -> None:
        with self._lock:
            for folder_id in chain:
                self._chains[folder_id], self._paths[folder_id] = chain, path
            self._ids[path] = chain[-1]

    def chain(self, folder_id: str) -> list[str]:
        """The folders of `folder_id`'s path, first to last (itself alone when it never filled up)."""
        with self._lock:
            return list(self._chains.get(folder_id, [folder_id]))

    def find_root(self, name: str) -> DriveFile | None:
        """The copy's root: the folder marked as this name's root wherever it is now (moved,
        renamed; the trash too, for the caller to refuse), else one made by an older version that
        left no mark, by exact name at the top of My Drive. The oldest of several. One request."""
        marker = root_marker(name)
        query = (f"mimeType = '{FOLDER_MIME}' and (appProperties has {{ key='{PROP_ROOT}' and value='{marker}' }}"
                 f" or (name = {drive_query_literal(name)} and 'root' in parents and trashed = false))")
        found = list(self.api.list(query))
        marked = [f for f in found if f.app_properties.get(PROP_ROOT) == marker]
        candidates = [f for f in marked if not f.trashed] or marked or [f for f in found if f.name == name]
        if len([f for f in candidates if not f.trashed]) > 1:
            log.warning("Drive holds %d folders that are the root of this copy; using the oldest", len(candidates))
        return min(candidates, key=lambda f: (f.trashed, f.created_time or "", f.id)) if candidates else None

    def create(self, name: str, parent_id: str, path: tuple[str, ...],
               app_properties: dict[str, str] | None = None, *, folder_id: str | None = None,
               record: Callable[[tuple[str, ...], str], None] | None = None) -> str:
        """A new folder, with `folder_id` (one recorded before an earlier try) or a pre-allocated id
        recorded by `record` before the create is sent."""
        for _ in range(MAX_REQUEST_ATTEMPTS):
            if not folder_id:
                folder_id = self.api.new_id()
                (record or self.record)(path, folder_id)   # before sending: how a lost answer is found again
            body = {"id": folder_id, "name": name, "mimeType": FOLDER_MIME, "parents": [parent_id],
                    **({"appProperties": app_properties} if app_properties else {})}
            try:
                answer = self.api.create(lambda service: service.files().create(
                    body=body, fields="id,parents", supportsAllDrives=True), folder_id)
                if parent_id == "root":   # what 'root' stands for: a later run tells a moved root by it
                    self.my_drive_id = (answer.get("parents") or [""])[0]
                break
            except IdNotUsable:
                folder_id = None
        else:
            raise ObjectError(Verdict(Verdict.RETRY, "Drive refused every pre-allocated folder id"))
        with self._lock:
            self._listings.setdefault(folder_id, FolderListing({}, defaultdict(list)))   # new: nothing to list
        return folder_id

    def listing(self, folder_id: str) -> FolderListing:
        with self._lock:
            listing = self._listings.get(folder_id)
            lock = self._path_locks[("\0listing", folder_id)]
        if listing is not None:
            return listing
        with lock:
            with self._lock:
                if folder_id in self._listings:
                    return self._listings[folder_id]
            listing = folder_listing(self.api.list_folder(folder_id))
            with self._lock:
                self._listings[folder_id] = listing
            return listing

    def _usable(self, folder_id: str, parent_ids: list[str]) -> DriveFile | None:
        folder = self.api.get(folder_id)
        usable = folder and folder.is_folder and not folder.trashed and folder.parent_id in parent_ids
        return folder if usable else None

    def _child(self, parents: list[str], name: str) -> tuple[str, str | None]:
        """The child folder `name` in any of a path's folders (the first found), and its PROP_NEXT."""
        for parent_id in parents:
            listing = self.listing(parent_id)
            if name in listing.folders:
                return listing.folders[name], listing.next_of.get(listing.folders[name])
        return "", None

    def ensure(self, parts: tuple[str, ...]) -> str:
        """The id of the folder new items of root/parts... go to, finding or creating each level once per run."""
        for depth in range(1, len(parts) + 1):
            path = parts[:depth]
            with self._lock:
                if path in self._ids:
                    continue
                path_lock = self._path_locks[path]
                parents = list(self._chains.get(self._ids[path[:-1]], [self._ids[path[:-1]]]))
            with path_lock:
                with self._lock:
                    if path in self._ids:
                        continue
                recorded = self.recorded(path)
                found = self._usable(recorded, parents) if recorded else None
                if found is not None:
                    folder_id, next_id = found.id, found.app_properties.get(PROP_NEXT)
                else:
                    folder_id, next_id = self._child(parents, path[-1])
                    # The recorded folder is trashed or gone; a lagging listing may not know yet.
                    if folder_id and recorded and (folder_id == recorded or not self._usable(folder_id, parents)):
                        folder_id, next_id = "", None
                    if folder_id:
                        self.record(path, folder_id)
                    else:
                        folder_id = self._create_in(path[-1], path[:-1], path)
                        parent_listing = self.listing(self._ids[path[:-1]])
                        with self._lock:
                            parent_listing.folders[path[-1]] = folder_id
                self._use(path, folder_chain(self.api, folder_id, next_id) if next_id else [folder_id])
        with self._lock:
            return self._ids[parts]

    def _create_in(self, name: str, parent_path: tuple[str, ...], path: tuple[str, ...]) -> str:
        """A new folder in the last folder of `parent_path`, which continues beside itself when full."""
        while True:
            with self._lock:
                parent_id = self._ids[parent_path]
            try:
                return self.create(name, parent_id, path)
            except ObjectError as exc:
                if exc.verdict.action != Verdict.FOLDER_FULL:
                    raise
                self.spill(parent_id)

    def _recorded_continuation(self, path: tuple[str, ...], chain: list[str]) -> str | None:
        """An id recorded for a continuation that a killed run may have created but not linked yet
        (nothing goes into one before the link): its create is sent again, or it is used as it is."""
        for more_id in self.recorded_more(path):
            if more_id in chain:
                continue
            found = self.api.get(more_id)
            if found is None or (found.is_folder and not found.trashed
                                 and found.app_properties.get(PROP_MORE_OF) == chain[0]):
                return more_id
        return None

    def _link(self, full_id: str, next_id: str) -> None:
        self.api.set_app_properties(full_id, {PROP_NEXT: next_id})

    def spill(self, full_id: str) -> str:
        """Drive called `full_id` full: its path continues in a new folder beside the path's first,
        "Name (N)". Idempotent: workers that met the same full folder share one continuation. The
        new id is recorded before the create, and the full folder marked before anything goes in."""
        with self._lock:
            chain = self._chains.get(full_id, [full_id])
            path = self._paths.get(full_id)
            path_lock = self._path_locks[("\0spill", chain[0])]
        if path is None:
            raise ObjectError(Verdict(Verdict.FAIL, "a Drive folder outside the copy's tree is full"))
        with path_lock:
            with self._lock:
                chain = self._chains.get(full_id, [full_id])
                if chain[-1] != full_id:   # another worker did it
                    return chain[-1]
            first = self.api.get(chain[0])
            if first is None or not first.parent_id:   # a shared drive's top: its own limit for all it holds
                raise QuotaExceededError("a Drive folder holds its maximum number of items (500,000) and has no "
                                         "parent folder to continue beside: copy part of it with --prefix into "
                                         "another --folder-id")
            parent_id = first.parent_id
            if not path and not first.drive_id and (parent_id == self.my_drive_id or self.api.get(parent_id) is None):
                # My Drive's top (under drive.file its own id may not be readable: the alias is what
                # takes children), or a folder of the user's that the app may not write in
                parent_id = "root"
            more_id = self._recorded_continuation(path, chain)
            try:
                more_id = self.create(f"{first.name} ({len(chain) + 1})", parent_id, path,
                                      {PROP_MORE_OF: chain[0]}, folder_id=more_id, record=self.record_more)
            except ObjectError as exc:
                if exc.verdict.action == Verdict.RETRY:   # Drive unwell now: the object is tried again
                    raise
                raise QuotaExceededError(f"Drive folder {first.name!r} holds its maximum number of items (500,000) "
                                         f"and a folder beside it to continue in cannot be made ({exc}): copy "
                                         "part of it with --prefix into another --folder-id") from None
            self._link(full_id, more_id)
            self._use(path, chain + [more_id])
            log.warning("Drive folder %r is full (Drive's limit is 500,000 items): continuing in %r beside it",
                        first.name, f"{first.name} ({len(chain) + 1})")
            return more_id

    def files_for_source(self, folder_id: str, source_id: str) -> list[DriveFile]:
        """Our files in `folder_id`'s path (every folder of its chain) that are copies of the given
        source object (cached listings)."""
        return [found for member in self.chain(folder_id) for found in self.listing(member).by_source.get(source_id, [])]


class DriveUploader:
    """Sends a staged file as a new Drive file (with a pre-allocated id) or as a new revision.

    Small files go in one multipart request; larger ones in a resumable session, which survives
    dropped connections (the next chunk asks Drive for its offset) and restarts when expired.
    """

    def __init__(self, api: DriveApi, chunk_size_bytes: int = CHUNK_QUANTUM_BYTES * 32,
                 bandwidth: BandwidthLimit | None = None):
        self.api, self.chunk_size_bytes, self.bandwidth = api, chunk_size_bytes, bandwidth

    def session_chunk_bytes(self) -> int:
        """Under --bwlimit a session's chunk is about ten seconds' worth at the rate of the moment
        (Google: keep chunks as large as possible; http.client sends a chunk in blocks, each read
        waiting its turn, so the rate is smooth whatever the chunk's size)."""
        rate = self.bandwidth.rate() if self.bandwidth else None
        if not rate:
            return self.chunk_size_bytes
        return max(CHUNK_QUANTUM_BYTES, min(self.chunk_size_bytes, rate * 10 // CHUNK_QUANTUM_BYTES * CHUNK_QUANTUM_BYTES))

    def upload(self, path: Path, size: int, metadata: dict[str, Any], mimetype: str, *, file_id: str,
               update: bool = False, progress: Callable[[int], None] | None = None,
               opener: Callable[[], Any] | None = None, session: str | None = None,
               on_session: Callable[[str], None] = lambda uri: None) -> DriveFile:
        """Create file `file_id` (or, with `update`, give it a new revision) from a local file
        (or from what `opener` opens: a download still being written). A resumable upload
        continues `session` if given, and reports the session it uses to `on_session`."""
        if not update:
            metadata = {**metadata, "id": file_id}
        with (opener or (lambda: open(path, "rb")))() as opened:
            stream = _PacedReader(opened, self.bandwidth) if self.bandwidth else opened
            if not self.is_resumable(size):
                resource = self._single(stream, metadata, mimetype, file_id, update)
            else:
                resource = self._resumable(stream, size, metadata, mimetype, file_id, update, progress,
                                           session, on_session)
        return DriveFile.from_resource(resource)

    def is_resumable(self, size: int) -> bool:
        return size > min(SINGLE_REQUEST_MAX_BYTES, self.chunk_size_bytes)

    def _request(self, service: Any, media: Any, metadata: dict[str, Any], file_id: str, update: bool) -> Any:
        if update:   # parents and createdTime are fixed once a file exists
            body = {k: v for k, v in metadata.items() if k not in ("parents", "createdTime", "id")}
            return service.files().update(fileId=file_id, body=body, media_body=media,
                                          fields=DRIVE_FILE_FIELDS, supportsAllDrives=True)
        return service.files().create(body=metadata, media_body=media, fields=DRIVE_FILE_FIELDS,
                                      supportsAllDrives=True)

    def _single(self, stream: Any, metadata: dict[str, Any], mimetype: str, file_id: str, update: bool) -> Any:
        def make_request(service: Any) -> Any:
            stream.seek(0)
            return self._request(service, MediaIoBaseUpload(stream, mimetype, resumable=False),
                                 metadata, file_id, update)
        if update:   # a re-sent revision is the same bytes again: harmless
            return self.api.call(make_request, upload=True)
        return self.api.create(make_request, file_id, upload=True)

    def _finished(self, file_id: str, metadata: dict[str, Any], update: bool) -> dict[str, Any] | None:
        """After an expired session: did its last chunk land? (files.get by id is consistent.)"""
        found = self.api.get_resource(file_id)
        if found and (not update or found.get("md5Checksum") == metadata["appProperties"].get(PROP_MD5, "")):
            return found
        return None

    def _resumable(self, stream: Any, size: int, metadata: dict[str, Any], mimetype: str, file_id: str,
                   update: bool, progress: Callable[[int], None] | None, session: str | None,
                   on_session: Callable[[str], None]) -> Any:
        api = self.api

        def new_session() -> Any:
            stream.seek(0)
            media = MediaIoBaseUpload(stream, mimetype, chunksize=self.session_chunk_bytes(), resumable=True)
            return self._request(api._service(), media, metadata, file_id, update)

        request, attempt, restarts, sent_at = new_session(), 0, 0, None
        if session:
            # A session of an earlier run: the first next_chunk asks Drive how much it holds and goes
            # on from there (googleapiclient issue #209); an expired one answers 404: start over.
            request.resumable_uri, request._in_error_state = session, True
        announced = session
        while True:
            if request.resumable_uri is None or attempt:   # starting a session is a create; retries are paced
                sent_at = api.wait_turn(write=request.resumable_uri is None)
            elif api.stop.is_set():
                raise InterruptedRun("interrupted")
            else:
                sent_at = api.pacer.clock()
            starting = request.resumable_uri is None
            try:
                status, response = request.next_chunk(num_retries=0)
            except CloudTransferError:
                raise   # from the bytes' side (a download that failed or was stopped), not Drive's
            except Exception as exc:  # classified below
                if request.resumable_uri != announced:
                    announced = request.resumable_uri
                    on_session(announced)
                verdict = classify_drive_error(exc, in_upload_session=request.resumable_uri is not None, upload=True)
                if verdict.action == Verdict.EXISTS and not update:
                    return api.existing(file_id)
                if verdict.action == Verdict.RESTART and restarts < MAX_REQUEST_ATTEMPTS:
                    restarts += 1
                    found = self._finished(file_id, metadata, update)
                    if found is not None:
                        return found
                    log.debug("upload session expired; starting a new one")
                    request = new_session()
                    continue
                attempt += 1
                if verdict.action != Verdict.RETRY or attempt >= MAX_REQUEST_ATTEMPTS:
                    raise_for(verdict)
                api.after_error(verdict, attempt, upload=True, sent_at=sent_at)
                continue
            attempt = 0
            api.outage.ok(api._service_name(upload=True))
            if starting:   # the session's create went through: the write Drive counts (and paces)
                api.pacer.succeeded(write=True, sent_at=sent_at)
            if request.resumable_uri != announced and response is None:
                announced = request.resumable_uri
                on_session(announced)
            if response is not None:
                api.pacer.succeeded(upload=True)   # an upload went through: not at the daily cap
                return response
            if status is not None and progress:
                progress(status.resumable_progress)


@dataclasses.dataclass
class DriveDestination:
    """The Drive side of a command: requests with retry (api), the folder tree, and uploads."""
    api: DriveApi
    folders: DriveFolders
    uploader: DriveUploader


#######################################################################
# Checkpoint (state) ##################################################
#######################################################################
# A JSON snapshot plus an append-only JSON-lines journal: recording an object costs one buffered
# line, not a rewrite of the whole file; the snapshot is rewritten (atomically) only at the end of
# a run. RunLock keeps two runs off the same checkpoint.

STATUS_DONE, STATUS_FAILED, STATUS_SKIPPED, STATUS_ROLLED_BACK = "done", "failed", "skipped", "rolled_back"
STATUS_SENDING = "sending"   # a create with `drive_id` was (maybe) sent; the next attempt asks Drive
RESET_HINT = "use --reset-checkpoint to move it aside and start over (files already in Drive are found again)"
CHECKPOINT_KIND = "cloud_transfer checkpoint"


@dataclasses.dataclass(slots=True)
class CheckpointEntry:
    """What the checkpoint knows about one S3 key (slots: a million of these live in memory)."""
    status: str                   # done | sending | failed | skipped | rolled_back
    etag: str                     # source ETag at the time of the outcome
    size: int                     # source size, bytes
    md5: str | None = None        # MD5 of the bytes sent
    drive_id: str | None = None
    session: str | None = None    # sending: the resumable session of the create, if it got that far
    attempts: int = 0             # attempts over all runs for this ETag
    run: str = ""                 # id of the run that wrote the entry
    reason: str | None = None     # why it failed or was skipped
    at: str = ""                  # UTC time of the outcome (not kept for a done one)
    name: str | None = None       # the Drive name, when a clash made it differ from the key's own
    date: str | None = None       # skipped by --newer-than/--older-than: "<ISO date> <OriginalDates.basis>"
    # A new revision replaced an earlier version's copy: that revision (kept forever) and the
    # copy's provenance then ("revision", "etag", "md5", "run", "modified"), for rollback.
    replaced: dict[str, str] | None = None
    taken: str | None = None      # done by an upload: the capture day and its source, "2019-07-04 exif"

    def to_json(self) -> dict[str, Any]:
        # The ETag is kept whatever it is: some S3-compatible stores send an empty one. A done entry
        # leaves out what most of a million share (PERF: bytes on disk): an MD5 equal to the ETag
        # (one uploaded whole), a first attempt, and its time (its run's record has it).
        data = {_ENTRY_JSON_NAMES.get(name, name): value for name in _ENTRY_FIELD_ORDER
                if (value := getattr(self, name)) not in (None, "") or name == "etag"}
        if self.status == STATUS_DONE:
            if self.md5 == self.etag:
                data.pop("md5", None)
            else:
                data["md5"] = self.md5   # None too: a missing one would be read as the ETag
            if self.attempts == 1:
                del data["attempts"]
            data.pop("at", None)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any] | CheckpointEntry) -> CheckpointEntry:
        if isinstance(data, CheckpointEntry):   # already built by json_entries_hook
            return data
        if "id" in data:   # version 2's name for drive_id
            data = {**data, "drive_id": data["id"]}
            del data["id"]
        if data.get("status") == STATUS_DONE:   # what to_json leaves out
            data = {"md5": data.get("etag"), "attempts": 1, **data}
        try:
            entry = cls(**data)
        except TypeError:   # a field this version does not know (written by a newer one): dropped
            entry = cls(**{k: v for k, v in data.items() if k in _ENTRY_FIELDS})
        # PERF: a few distinct statuses and run ids repeat across a million entries; share them.
        entry.status, entry.run = sys.intern(entry.status), sys.intern(entry.run)
        return entry


_ENTRY_FIELD_ORDER = tuple(f.name for f in dataclasses.fields(CheckpointEntry))
_ENTRY_FIELDS = frozenset(_ENTRY_FIELD_ORDER)
_ENTRY_JSON_NAMES = {"drive_id": "id"}   # PERF: 6 bytes an object on disk
_ENTRY_JSON_KEYS = _ENTRY_FIELDS | frozenset(_ENTRY_JSON_NAMES.values())


def stored_drive_id(data: dict[str, Any]) -> str | None:
    """The Drive id of an entry as the checkpoint stores it (version 2's "id", version 1's "drive_id")."""
    return data.get("id") or data.get("drive_id")


def entry_from_data(data: dict[str, Any]) -> CheckpointEntry:
    data.setdefault("etag", "")   # versions before 1.1 dropped an empty ETag when saving
    return CheckpointEntry.from_json(data)


def json_entries_hook(obj: dict[str, Any]) -> Any:
    """json object_hook turning entry-shaped objects into CheckpointEntry as they are parsed, so a
    million-entry snapshot is never held twice (as dicts and as entries) while loading."""
    if "status" in obj and "size" in obj and obj.keys() <= _ENTRY_JSON_KEYS:
        obj.setdefault("etag", "")   # versions before 1.1 dropped an empty ETag when saving
        try:
            return CheckpointEntry.from_json(obj)
        except TypeError:
            return obj
    return obj


def utc_now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


OBJECTS_LINE = b' "objects": {\n'   # in a snapshot, the last header line; one object per line follows


def snapshot_line(key: str, data: dict[str, Any]) -> bytes:
    """One object's line in the snapshot (without its comma): compact, still JSON to read."""
    return (json.dumps(key, ensure_ascii=False) + ":" + json.dumps(data, ensure_ascii=False, separators=(",", ":"))
            ).encode("utf-8")


class _NotLineFormat(Exception):
    """A snapshot written before objects went one per line: it is read whole, once."""


def parse_entry_lines(lines: list[bytes]) -> Iterable[tuple[str, dict[str, Any]]]:
    """(key, entry data) of snapshot object lines (`"key": {...},`), many per json.loads."""
    stripped = [line.rstrip(b"\r\n").rstrip(b",") for line in lines]
    parsed = json.loads(b"{" + b",".join(stripped) + b"}")
    if len(parsed) != len(lines):   # a key twice in one batch: one line at a time keeps them apart
        return [item for line in stripped for item in json.loads(b"{" + line + b"}").items()]
    return parsed.items()


def version_hash(etag: str, size: int) -> int:
    return hash((etag, size)) or 1   # 0 stands for "not done"


class HashedLines:
    """Lines of a file found by a hash of their name: 16 bytes a line in memory (offset; hash and
    position packed in one sorted 64-bit word), the lines themselves read back with pread when asked
    for. Names that share the hash's top 36 bits come back together; the caller tells them apart
    by what the lines say.

    Python's str hash is salted per process, so an index is built where it is used, never stored."""

    POSITION_BITS = 28   # up to 268 million lines; the hash keeps the other 36 bits

    def __init__(self) -> None:
        self._hashes, self._offsets = array("q"), array("q")   # in file order, until seal()
        self._sorted = array("Q")                              # (hash top 36 bits | position), sorted
        self._fd: int | None = None

    def __len__(self) -> int:
        return len(self._offsets)

    @classmethod
    def _hash_bits(cls, name_hash: int) -> int:
        return (name_hash & 0xFFFF_FFFF_FFFF_FFFF) >> cls.POSITION_BITS << cls.POSITION_BITS

    def seal(self, fd: int) -> None:
        """Sort; lines are then read from `fd`. PERF: in 256 buckets by the top 8 bits, each sorted
        on its own, so the transient Python ints (~44 bytes each) are a bucket's, not every line's:
        16 bytes a line at the peak instead of 52, and faster than one sort of a million."""
        if len(self._hashes) >> self.POSITION_BITS:
            raise CheckpointError(f"more than {1 << self.POSITION_BITS} objects in one index")
        buckets = [array("Q") for _ in range(256)]
        appends = [bucket.append for bucket in buckets]
        for position, bits in enumerate(map(self._hash_bits, self._hashes)):
            packed = bits | position
            appends[packed >> 56](packed)
        self._hashes = array("q")
        self._sorted = array("Q")
        for number in range(len(buckets)):
            self._sorted.extend(sorted(buckets[number]))
            buckets[number] = array("Q")
        self.close()
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _positions(self, name_hash: int) -> list[int]:
        """The positions (in file order) of the lines whose name may have this hash."""
        bits, sorted_hashes, mask = self._hash_bits(name_hash), self._sorted, (1 << self.POSITION_BITS) - 1
        at = bisect.bisect_left(sorted_hashes, bits)
        positions = []
        while at < len(sorted_hashes) and sorted_hashes[at] & ~mask == bits:
            positions.append(sorted_hashes[at] & mask)
            at += 1
        return positions

    def _line(self, position: int) -> bytes:
        assert self._fd is not None
        offset, line = self._offsets[position], b""
        while not line.endswith(b"\n"):
            block = os.pread(self._fd, 4096, offset + len(line))
            if not block:
                break
            line += block.partition(b"\n")[0] + (b"\n" if b"\n" in block else b"")
        return line


class SnapshotIndex(HashedLines):
    """Where each object's line is in the snapshot, found by a hash of its key: 30 bytes an object
    in memory instead of the ~600 of a parsed entry. A re-run of a million done photos answers
    "done, this version?" from here alone, and reads the file only for the objects it works on.

    Built at each load (one streamed parse of the snapshot). Keys that share the hash bits are told
    apart by reading their lines; a key absent from the snapshot must also match a CRC-32 of the
    stored one before the index answers for it (68 bits in all: at a million keys, one wrong answer
    in ~10^14 lookups)."""

    def __init__(self) -> None:
        super().__init__()
        # PERF: run numbers in 16 bits (a checkpoint has a few hundred runs), widened past 65,535
        self._versions, self._runs, self._crcs = array("q"), array("H"), array("I")
        self.named: list[tuple[str, str | None]] = []   # what Namer needs of the snapshot (few)
        self._run_ids: list[str] = []
        self._run_numbers: dict[str, int] = {}

    def add_lines(self, items: Iterable[tuple[str, dict[str, Any]]], offsets: Iterable[int]) -> None:
        """Index parsed snapshot lines (PERF: C-level maps where it can, a million times)."""
        items = list(items)
        keys = [key for key, _ in items]
        self._hashes.extend(map(hash, keys))
        self._crcs.extend(map(zlib.crc32, map(str.encode, keys)))
        self._offsets.extend(offsets)
        versions, runs, run_numbers = self._versions.append, self._runs.append, self._run_numbers
        # PERF: one C-level scan of the batch finds whether any key is not plain (almost never)
        suspect = bool(_UNPLAIN_IN_BATCH.search("\x00".join(keys))) and not all(map(is_plain_key, keys))
        for key, data in items:
            if (data.get("name") or (suspect and not is_plain_key(key))) and may_hold_a_name(data):
                self.named.append((key, data.get("name")))
            run = data.get("run") or ""
            number = run_numbers.get(run)
            if number is None:
                number = run_numbers[run] = len(self._run_ids)
                self._run_ids.append(run)
                if number > 0xFFFF and self._runs.typecode == "H":
                    self._runs = array("I", self._runs)
                    runs = self._runs.append
            versions(version_hash(data.get("etag", ""), data["size"]) if data["status"] == STATUS_DONE else 0)
            runs(number)

    def _read(self, position: int) -> tuple[str, dict[str, Any]]:
        return next(iter(parse_entry_lines([self._line(position)])))

    def get(self, key: str) -> CheckpointEntry | None:
        for position in self._positions(hash(key)):
            found, data = self._read(position)
            if found == key:
                return entry_from_data(data)
        return None

    def done_run(self, key: str, version: str, size: int) -> str | None:
        positions = self._positions(hash(key))
        if len(positions) == 1 and self._crcs[positions[0]] == zlib.crc32(key.encode("utf-8")):
            position = positions[0]
            if self._versions[position] == version_hash(version, size):
                return self._run_ids[self._runs[position]]
            return None
        entry = self.get(key) if positions else None
        return entry.run if entry and entry.status == STATUS_DONE and entry.etag == version and entry.size == size else None


def read_snapshot_lines(path: Path, offset: int) -> Iterator[tuple[int, list[bytes]]]:
    """Batches of the snapshot's object lines, each with the offset of its first line, from
    `offset` to the closing braces (read a megabyte of whole lines at a time)."""
    with open(path, "rb") as stream:
        stream.seek(offset)
        while lines := stream.readlines(SNAPSHOT_READ_BYTES):
            if lines[-1].startswith(b"}"):   # only the last batch ends with the closing braces
                end = len(lines) - 1
                while end and lines[end - 1].startswith(b"}"):
                    end -= 1
                if [line.strip() for line in lines[end:]] != [b"}", b"}"]:
                    raise ValueError("snapshot does not end as written")
                if end:
                    yield offset, lines[:end]
                return
            yield offset, lines
            offset += sum(map(len, lines))
    raise ValueError("snapshot cut short")   # a partial file must not pass for a smaller library


def read_snapshot_header(path: Path) -> tuple[dict[str, Any], int]:
    """The snapshot's fields other than its objects, and the offset of the first object line."""
    with open(path, "rb") as stream:
        head = bytearray()
        for line in stream:
            head += line
            if line == OBJECTS_LINE:
                break
        else:
            raise _NotLineFormat
        first = stream.readline()
    if first and not first.startswith(b"}"):
        try:
            next(iter(parse_entry_lines([first])))
        except (ValueError, StopIteration):
            raise _NotLineFormat from None
    return json.loads(bytes(head) + b"}\n}"), len(head)


class Checkpoint:
    """Per-key outcomes of all runs, bound to one bucket + prefix + Drive folder.

    Thread-safe (`_lock`). I/O happens only in load(), flush() and compact(). A checkpoint that is
    corrupt, foreign or newer is refused, never overwritten; --reset-checkpoint moves it aside.
    """

    def __init__(self, path: Path, binding: dict[str, str]):
        self.path, self.binding = path, binding
        self.journal_path = path.with_name(path.name + ".journal")
        self.root_folder_id: str | None = None
        self.identity: dict[str, str] = {}   # OAuth client_id and Google account the copy is made with
        # "a/b" -> {"id", "run", "more": the folders it continues in when full, "was": folders it had
        # before (moved within the copy: they still hold copies)}; "" is the root
        self.folders: dict[str, dict[str, Any]] = {}
        self.runs: list[dict[str, Any]] = []
        self._index = SnapshotIndex()                     # what the snapshot holds, by key hash
        self._recent: dict[str, CheckpointEntry] = {}    # outcomes since the snapshot (journal, this run)
        self._first_object = self._next_first_object = 0  # offset of the snapshot's first object line
        self._indexed = False
        # The run that found the root lost: outcomes of earlier runs may point into it and are checked
        # again until a run finishes. None: nothing to check; "": all (older checkpoints: true/false).
        self.recheck_from_run: str | None = None
        self.changes_token: str | None = None   # Drive's changes feed: where the next run reads from
        self.walk_reason: str | None = None     # without a token: why runs look in Drive for every copy
        self.removed_in_drive = REMOVED_COPY    # what runs do with copies removed in Drive (--removed-in-drive)
        self._pending: list[dict[str, Any]] = []
        self._journal_lines = 0       # in the journal file, replayed or appended
        self._changed = False         # anything but run records journaled since the snapshot
        self._last_flush = time.monotonic()
        self._lock = threading.RLock()

    # -- pure (de)serialisation ---------------------------------------------------------------
    def entries(self, as_data: bool = False) -> Iterator[tuple[str, Any]]:
        """Every (key, entry), in key order: the snapshot read as a stream, merged with what is newer.
        `as_data`: entries as their JSON dicts (twice as fast to count a million of)."""
        convert: Callable[[dict[str, Any]], Any] = (lambda data: data) if as_data else entry_from_data
        recent = sorted((key, entry.to_json() if as_data else entry) for key, entry in self._recent.items())
        position = 0
        try:
            for _, lines in read_snapshot_lines(self.path, self._first_object) if self._first_object else ():
                if not recent:   # PERF: status and most reads: nothing newer to merge
                    yield from ((key, convert(data)) for key, data in parse_entry_lines(lines))
                    continue
                for key, data in parse_entry_lines(lines):
                    while position < len(recent) and recent[position][0] < key:
                        yield recent[position]
                        position += 1
                    if position < len(recent) and recent[position][0] == key:
                        yield recent[position]
                        position += 1
                    else:
                        yield key, convert(data)
        except (ValueError, TypeError, AttributeError, OSError):
            raise CheckpointError(f"checkpoint {self.path} is damaged; {RESET_HINT}") from None
        yield from recent[position:]

    def claimed_names(self) -> list[tuple[str, str | None]]:
        """(key, recorded name) of the objects that may hold a Drive name another key could want in
        the mirror layout: renamed ones, and keys with '//', a leading '/' or control characters.
        Few, and gathered while the snapshot is indexed: no pass of their own."""
        with self._lock:
            self._index_snapshot()
            claimed = [(key, name) for key, name in self._index.named if key not in self._recent]
            claimed += [(key, entry.name) for key, entry in self._recent.items()
                        if (entry.name or not is_plain_key(key)) and may_hold_a_name(entry.to_json())]
        return claimed

    def _snapshot(self, index: SnapshotIndex) -> Iterator[bytes]:
        """The snapshot as JSON with one object per line, sorted by key (a person can read and grep
        it), produced piece by piece while `index` learns where each line is: saving a million
        entries holds no second copy of them."""
        head = {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "binding": self.binding,
                "root_folder_id": self.root_folder_id, "identity": self.identity,
                "recheck_from_run": self.recheck_from_run, "changes_token": self.changes_token,
                **({"walk_reason": self.walk_reason} if self.walk_reason else {}),
                "removed_in_drive": self.removed_in_drive, "folders": self.folders, "runs": self.runs,
                "objects": {}}
        text = json.dumps(head, ensure_ascii=False, indent=1)
        assert text.endswith('"objects": {}\n}')
        first = text[: -len("{}\n}")].encode("utf-8") + b"{\n"
        self._next_first_object = offset = len(first)
        yield first
        items: list[tuple[str, dict[str, Any]]] = []
        offsets: list[int] = []
        pieces: list[bytes] = []
        for n, (key, data) in enumerate(self.entries(as_data=True)):   # PERF: no entry objects
            line = snapshot_line(key, data)
            if n:
                pieces.append(b",\n")
                offset += 2
            items.append((key, data))
            offsets.append(offset)
            pieces.append(line)
            offset += len(line)
            if len(items) >= 1000:   # PERF: indexed and written a thousand lines at a time
                index.add_lines(items, offsets)
                yield b"".join(pieces)
                items, offsets, pieces = [], [], []
        index.add_lines(items, offsets)
        yield b"".join(pieces)
        yield b"\n}\n}\n" if offset > self._next_first_object else b"}\n}\n"

    def _apply(self, line: dict[str, Any]) -> None:
        """Replay one journal line (the same shapes flush() writes)."""
        if "key" in line:
            self._recent[line["key"]] = CheckpointEntry.from_json(line["entry"])
        elif "root" in line:
            self.root_folder_id = line["root"]
        elif "identity" in line:
            self.identity = dict(line["identity"])
        elif "recheck" in line:
            self.recheck_from_run = line["recheck"] if isinstance(line["recheck"], str) else "" if line["recheck"] else None
        elif "changes" in line:
            self.changes_token, self.walk_reason = line["changes"], line.get("walk")
        elif "removed_in_drive" in line:
            self.removed_in_drive = line["removed_in_drive"]
        elif "forget_folders" in line:
            self.folders.clear()
            self.root_folder_id = None
        elif "forget_folder" in line:
            self.folders.pop(line["forget_folder"], None)
        elif "folder_more" in line:
            self.folders.setdefault(line["folder_more"], {"id": "", "run": ""}).setdefault("more", []).append(line["id"])
        elif "folder" in line:
            self._set_folder(line["folder"], line["id"], line.get("run", ""))
        elif "sent_by" in line:   # a live run's bytes by minute, journaled as it goes (DailyWindow.unsaved)
            for run in self.runs:
                if run["id"] == line["sent_by"]:
                    run["sent"] = [*run.get("sent", ()), *line["sent"]]
        elif "run" in line:
            runs = {run["id"]: i for i, run in enumerate(self.runs)}
            if line["run"]["id"] in runs:
                self.runs[runs[line["run"]["id"]]] = line["run"]
            else:
                self.runs.append(line["run"])

    @classmethod
    def from_json(cls, path: Path, data: Any, binding: dict[str, str] | None) -> Checkpoint:
        """Everything but the objects. `binding` None: whatever the file is bound to (rollback, status)."""
        if not isinstance(data, dict) or data.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(f"{path} is not a cloud_transfer checkpoint; {RESET_HINT}")
        if not isinstance(data.get("version"), int) or data["version"] > CHECKPOINT_VERSION:
            raise CheckpointError(f"{path} was written by a newer cloud_transfer (version {data.get('version')}); "
                                  "upgrade this script")
        stored = data.get("binding") or {}
        binding = dict(stored) if binding is None else binding
        stored.setdefault("layout", LAYOUT_MIRROR)   # checkpoints from before --layout
        for field in ("bucket", "prefix", "folder"):
            if stored.get(field) != binding.get(field):
                raise CheckpointError(f"checkpoint {path} belongs to {field} {stored.get(field)!r}, not "
                                      f"{binding.get(field)!r}; use --checkpoint for another file or {RESET_HINT}")
        if binding.get("layout", LAYOUT_MIRROR) != stored["layout"]:
            raise CheckpointError(f"checkpoint {path} was made with --layout {stored['layout']}: another layout "
                                  "would copy the whole library a second time. Keep --layout "
                                  f"{stored['layout']}, or start a separate copy with --checkpoint NEW.json "
                                  "--folder NEW-NAME")
        checkpoint = cls(path, binding)
        try:
            checkpoint.root_folder_id = data.get("root_folder_id")
            checkpoint.identity = dict(data.get("identity") or {})
            checkpoint.recheck_from_run = data.get("recheck_from_run", "" if data.get("recheck_pending") else None)
            checkpoint.changes_token = data.get("changes_token")
            checkpoint.walk_reason = data.get("walk_reason")
            checkpoint.removed_in_drive = data.get("removed_in_drive") or REMOVED_COPY
            checkpoint.folders = dict(data.get("folders") or {})
            checkpoint.runs = list(data.get("runs") or [])
            # a snapshot of an older version, read whole: its objects count as new until compacted
            checkpoint._recent = {key: CheckpointEntry.from_json(entry)
                                  for key, entry in (data.get("objects") or {}).items()}
        except (TypeError, AttributeError):
            raise CheckpointError(f"{path} is damaged; {RESET_HINT}") from None
        checkpoint._changed = bool(checkpoint._recent)
        return checkpoint

    def _index_snapshot(self) -> None:
        """One streamed parse of the snapshot's object lines into the index, at the first lookup:
        `status` only streams the snapshot, and so parses it once."""
        if self._indexed or not self._first_object:
            return
        try:
            for offset, lines in read_snapshot_lines(self.path, self._first_object):
                items = list(parse_entry_lines(lines))
                if not all(isinstance(data, dict) and "status" in data and "size" in data for _, data in items):
                    raise TypeError("not an entry")
                self._index.add_lines(items, itertools.accumulate(map(len, lines[:-1]), initial=offset))
            self._index.seal(os.open(self.path, os.O_RDONLY))
        except (ValueError, TypeError, KeyError, OverflowError):
            self._index = SnapshotIndex()
            raise CheckpointError(f"checkpoint {self.path} is damaged; {RESET_HINT}") from None
        except OSError as exc:
            self._index = SnapshotIndex()
            raise CheckpointError(f"cannot read checkpoint {self.path}: {exc.strerror}") from None
        self._indexed = True

    # -- I/O ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, binding: dict[str, str] | None, *, reset: bool = False, create: bool = True) -> Checkpoint:
        """Open (or with `create`, start) the checkpoint at `path`, replaying its journal."""
        journal = path.with_name(path.name + ".journal")
        if reset:
            cls._move_aside(path, journal)
        if not path.exists():
            if journal.exists() and create:   # its snapshot was deleted: the lines mean nothing alone
                stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
                journal.rename(journal.with_name(f"{journal.name}.orphaned-{stamp}"))
                log.warning("journal without checkpoint: moved aside to %s.orphaned-%s", journal, stamp)
            return cls(path, binding or {})   # written at its first flush, so a run that stops early leaves none
        try:
            try:
                header, first_object = read_snapshot_header(path)
                checkpoint = cls.from_json(path, header, binding)
                checkpoint._first_object = first_object
                if create:   # a read-only look (status) may only stream it: indexed at its first lookup
                    checkpoint._index_snapshot()
            except _NotLineFormat:
                checkpoint = cls.from_json(path, json.loads(path.read_bytes(), object_hook=json_entries_hook), binding)
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError):
            raise CheckpointError(f"checkpoint {path} is not valid JSON (corrupted); {RESET_HINT}") from None
        if journal.exists():
            checkpoint._replay(journal, writable=create)
        return checkpoint

    def _replay(self, journal: Path, *, writable: bool) -> None:
        """Apply the journal's lines. A torn last line (a write a crash cut short) is ignored and, when
        we may write, cut off, so the next append does not glue a new line onto it."""
        raw = journal.read_bytes()
        complete, _, torn = raw.rpartition(b"\n")
        for number, line in enumerate(complete.split(b"\n"), 1):
            self._journal_lines += 1
            if line.strip():
                try:
                    self._apply(json.loads(line, object_hook=json_entries_hook))
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise CheckpointError(f"checkpoint journal {journal} is damaged at line {number}; "
                                          f"{RESET_HINT}") from None
        if torn.strip():
            log.debug("ignoring a torn last journal line")
            if writable:
                os.truncate(journal, len(complete) + 1 if complete else 0)

    @staticmethod
    def _move_aside(path: Path, journal: Path) -> None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        for file in (path, journal):
            if file.exists():
                target = file.with_name(f"{file.name}.{stamp}.bak")
                file.rename(target)
                log.warning("moved %s aside to %s", file, target)

    def _journal(self, line: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append(line)
            # A run record and the feed's token change on every run: a re-run that copied nothing
            # appends them and does not rewrite a snapshot of a million objects.
            self._changed = self._changed or line.keys() not in ({"run"}, {"changes"})
            if len(self._pending) >= FLUSH_EVERY_N or time.monotonic() - self._last_flush >= FLUSH_INTERVAL_S:
                self.flush()

    def flush(self) -> None:
        """Append buffered lines to the journal and fsync it (the first flush writes the snapshot)."""
        with self._lock:
            self._last_flush = time.monotonic()
            if not self.path.exists():
                self.compact()
                return
            if not self._pending:
                return
            data = b"".join(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n" for line in self._pending)
            try:
                fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                start = os.fstat(fd).st_size
                try:
                    while data:
                        data = data[os.write(fd, data):]
                    os.fsync(fd)
                except OSError:
                    # A short write then ENOSPC leaves half a line; cut it, or the next append glues on.
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)
                    raise
                finally:
                    os.close(fd)
            except OSError as exc:
                raise checkpoint_write_error(exc)(f"cannot write the checkpoint journal {self.journal_path}: "
                                                  f"{exc.strerror}; the run stops (what is in Drive stays)") from None
            self._journal_lines += len(self._pending)
            self._pending.clear()

    def finish(self) -> None:
        """End of a command: fold the journal into the snapshot when the state changed (or the journal
        has grown long). A run that changed nothing appends its run record and rewrites nothing: at a
        million objects the snapshot is a few hundred MB to serialise."""
        with self._lock:
            if self._changed or self._journal_lines + len(self._pending) > COMPACT_AFTER_JOURNAL_LINES:
                self.compact()
            else:
                self.flush()

    def compact(self) -> None:
        """Rewrite the snapshot with everything and empty the journal (end of a run)."""
        with self._lock:
            if self.path.exists():
                # The journal first gets what the snapshot will hold: a crash between the rename
                # below and the unlink then replays lines that agree with the snapshot, never older ones.
                self.flush()
            index = SnapshotIndex()
            try:
                write_atomically(self.path, self._snapshot(index))
                self._first_object = self._next_first_object
                index.seal(os.open(self.path, os.O_RDONLY))
            except OSError as exc:
                raise checkpoint_write_error(exc)(f"cannot write the checkpoint {self.path}: {exc.strerror}"
                                                  + ("; free space on that disk, then re-run (what is in Drive "
                                                     "stays)" if is_disk_full(exc) else "")) from None
            self._index.close()
            self._index, self._recent, self._indexed = index, {}, True
            self._pending.clear()
            self._journal_lines, self._changed = 0, False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.journal_path)

    # -- recording ----------------------------------------------------------------------------
    def get(self, key: str) -> CheckpointEntry | None:
        with self._lock:
            entry = self._recent.get(key)
            if entry is not None:
                return entry
            self._index_snapshot()
            return self._index.get(key)

    def done_run(self, key: str, version: str, size: int) -> str | None:
        """The run that copied this version of the object, if the checkpoint says it is done."""
        with self._lock:
            entry = self._recent.get(key)
            if entry is None:
                self._index_snapshot()
                return self._index.done_run(key, version, size)
            return entry.run if entry.status == STATUS_DONE and entry.etag == version and entry.size == size else None

    def record(self, key: str, entry: CheckpointEntry, durable: bool = False) -> None:
        """Remember an outcome; `durable`: on disk (fsync'd) before this returns."""
        entry.at = entry.at or utc_now_iso()
        with self._lock:
            self._recent[key] = entry
            self._journal({"key": key, "entry": entry.to_json()})
            if durable:
                self.flush()
            if len(self._recent) >= COMPACT_AFTER_OBJECTS:
                self.compact()   # memory stays flat through a first run of a million objects

    def set_recheck_from(self, run_id: str | None) -> None:
        with self._lock:
            if self.recheck_from_run != run_id:
                self.recheck_from_run = run_id
                self._journal({"recheck": run_id or False})

    def runs_since_recheck(self, current_run: str) -> set[str]:
        """The runs whose outcomes need no re-check: the one that found the root lost, and later ones."""
        with self._lock:
            ids = [run["id"] for run in self.runs]
            start = ids.index(self.recheck_from_run) if self.recheck_from_run in ids else len(ids)
            return set(ids[start:]) | {current_run} if self.recheck_from_run else {current_run}

    def set_root(self, folder_id: str | None) -> None:
        with self._lock:
            if self.root_folder_id != folder_id:
                self.root_folder_id = folder_id
                self._journal({"root": folder_id})
                if self.folders.pop("", None):   # what continued another root
                    self._journal({"forget_folder": ""})

    def set_identity(self, identity: dict[str, str]) -> None:
        with self._lock:
            if self.identity != identity:
                self.identity = dict(identity)
                self._journal({"identity": self.identity})

    def set_changes_token(self, token: str | None, walk_reason: str | None = None) -> None:
        """Where the next run reads the feed from; None with a reason: until a walk completes, every
        run walks (a run that stops midway must not leave the rest unlooked-at)."""
        with self._lock:
            if (self.changes_token, self.walk_reason) != (token, walk_reason):
                self.changes_token, self.walk_reason = token, walk_reason
                self._journal({"changes": token, **({"walk": walk_reason} if walk_reason else {})})

    def set_removed_in_drive(self, policy: str) -> None:
        with self._lock:
            if self.removed_in_drive != policy:
                self.removed_in_drive = policy
                self._journal({"removed_in_drive": policy})

    def forget_folders_under(self, paths: Iterable[str]) -> None:
        """Folders gone from the copy in Drive (trashed, deleted, moved away): made or found again."""
        with self._lock:
            for path in list(paths):
                for known in [k for k in self.folders if k == path or k.startswith(path + "/")]:
                    del self.folders[known]
                    self._journal({"forget_folder": known})

    def folder_ids(self) -> set[str]:
        """The ids of the copy's folders (those that continue a full one too), its root included."""
        with self._lock:
            return ({folder_id for folder in self.folders.values()
                     for folder_id in [folder["id"], *folder.get("more", ()), *folder.get("was", ())]}
                    | ({self.root_folder_id} if self.root_folder_id else set())) - {""}

    def folder_id(self, path: tuple[str, ...]) -> str | None:
        with self._lock:
            return (self.folders.get("/".join(path)) or {}).get("id") or None

    def folders_more(self, path: tuple[str, ...]) -> list[str]:
        """The folders a full one of this path continues in, as recorded before each was created."""
        with self._lock:
            return list((self.folders.get("/".join(path)) or {}).get("more", ()))

    def _set_folder(self, key: str, folder_id: str, run_id: str) -> None:
        known = self.folders.get(key) or {}
        same = known.get("id") in (folder_id, "", None)
        more = known.get("more") if same else None   # another first folder: not its continuations
        # A folder replaced at this path (moved within the copy by the user) still holds copies of it
        was = [*known.get("was", ()), *([] if same else [known["id"], *known.get("more", ())])]
        self.folders[key] = {"id": folder_id, "run": run_id, **({"more": more} if more else {}),
                             **({"was": was} if was else {})}

    def add_folder(self, path: tuple[str, ...], folder_id: str, run_id: str) -> None:
        key = "/".join(path)
        with self._lock:
            self._set_folder(key, folder_id, run_id)
            self._journal({"folder": key, "id": folder_id, "run": run_id})

    def add_folder_more(self, path: tuple[str, ...], folder_id: str) -> None:
        key = "/".join(path)
        with self._lock:
            self.folders.setdefault(key, {"id": "", "run": ""}).setdefault("more", []).append(folder_id)
            self._journal({"folder_more": key, "id": folder_id})

    def forget_folders(self) -> None:
        """Start a new copy: the folders of the old one are not used again."""
        with self._lock:
            self.folders.clear()
            self.root_folder_id = None
            self._journal({"forget_folders": True})

    def save_run(self, run: dict[str, Any]) -> None:
        with self._lock:
            self._apply({"run": run})
            self._journal({"run": run})
            self.flush()

    def save_sent(self, run_id: str, minutes: list[list[int]]) -> None:
        """Bytes a live run has sent since the last call, added to its record's `sent`."""
        with self._lock:
            line = {"sent_by": run_id, "sent": minutes}
            self._apply(line)
            self._journal(line)


class RunLock:
    """An exclusive fcntl lock beside the checkpoint; the kernel drops it when the process dies."""

    def __init__(self, path: Path, wait: Callable[[float], None] = time.sleep):
        self.path, self.wait = path, wait
        self._fd: int | None = None
        self.hold_until_exit = False   # threads that outlive the run keep the lock with them

    def __enter__(self) -> RunLock:
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UsageError(f"cannot create lock file {self.path}: {exc.strerror}") from None
        for attempt in range(LOCK_ATTEMPTS):
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 < LOCK_ATTEMPTS:
                    self.wait(LOCK_RETRY_S)   # `status` or `--check` holds it for an instant (lock_holder)
        else:
            os.close(self._fd)
            self._fd = None
            raise LockHeldError(f"another cloud_transfer run holds the lock {self.path}; "
                                "wait for it to finish (this run changed nothing)") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._fd is not None and not self.hold_until_exit:
            os.close(self._fd)   # closing releases the lock; the file stays (unlinking would race)
            self._fd = None


def lock_holder(path: Path) -> int | None:
    """The pid of the run that holds the lock now (0 if it wrote none), None when no run does. Asked
    with a shared lock given back at once; a run starting in that instant tries again (RunLock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            with contextlib.suppress(ValueError, IndexError):
                return int(os.pread(fd, 32, 0).split()[0])
            return 0
    finally:
        os.close(fd)

#######################################################################
# Transfer engine #####################################################
#######################################################################
# Pure decisions first (what to copy, where, whether a copy is intact), then Transfer: one lister
# thread feeding a bounded queue, N worker threads, the caller's thread drawing progress.


def etag_is_plain_md5(etag: str) -> bool:
    """True when the ETag has an MD5's shape. Only the shape: an SSE-KMS or SSE-C object's ETag looks
    the same and is not its MD5 (see `etag_is_md5`)."""
    return bool(re.fullmatch(r"[0-9a-f]{32}", etag))


def etag_is_md5(etag: str, response: dict[str, Any]) -> bool:
    """True when a GET/HEAD answer says nothing that makes the ETag other than the data's MD5: AWS
    documents that SSE-KMS (aws:kms, aws:kms:dsse) and SSE-C objects have ETags that are not."""
    encryption = str(response.get("ServerSideEncryption") or "")
    return etag_is_plain_md5(etag) and not encryption.startswith("aws:kms") and not response.get("SSECustomerAlgorithm")


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
#: a key that is not plain somewhere in NUL-joined keys (S3's XML listings cannot carry a NUL)
_UNPLAIN_IN_BATCH = re.compile(r"//|(?:^|\x00)/|/(?:\x00|$)|[\x01-\x1f\x7f]")


def drive_path_for(key: str) -> tuple[str, ...]:
    """S3 key → folder names + file name under the root.

    Empty segments ('//', a leading '/') vanish; control characters, which Drive's web UI cannot
    show or type, become '_'. Drive has no path syntax, so '.' and '..' stay ordinary names.
    """
    return tuple(_CONTROL_CHARACTERS.sub("_", segment) for segment in key.split("/") if segment)


def is_plain_key(key: str) -> bool:
    """The key maps to a Drive path that spells it (no '//', leading '/' or control characters):
    no other plain key can map to the same path."""
    return not ("//" in key or key.startswith("/") or key.endswith("/") or _CONTROL_CHARACTERS.search(key))


def numbered_name(name: str, number: int) -> str:
    """'IMG_1.jpg', 2 → 'IMG_1 (2).jpg' (as Drive's own uploads and most file managers number)."""
    if number == 1:
        return name
    stem, dot, extension = name.rpartition(".")
    return f"{stem} ({number}).{extension}" if dot and stem else f"{name} ({number})"


def date_folders(date: OriginalDate, layout: str, zone: dt.tzinfo | None) -> tuple[str, ...]:
    """--layout date:<pattern> folders for a date: the photo's own wall-clock date where EXIF gives
    it, else the date in --timezone (this machine's zone by default)."""
    moment = date.moment if date.source in PHOTO_TAG_SOURCES else (
        date.moment.astimezone(zone) if zone else date.moment.astimezone())
    parts = (f"{moment.year:04d}", f"{moment.month:02d}", f"{moment.day:02d}")
    return parts[:layout.removeprefix("date:").count("/") + 1]


class Namer:
    """Each new object's Drive name, decided by the lister in key order, so that one listing names
    its files the same way whatever the workers do: the first key that maps to a name gets it, each
    later one `name (2)`, `name (3)`, ... A name once given is recorded and kept by later runs.

    Names clash per folder in the mirror layout (only keys with '//', a leading '/' or control
    characters can); in the flat and date layouts per file name across the bucket, because a date
    folder is known only once the file is read, and names must not wait for every other file."""

    def __init__(self, layout: str, checkpoint: Checkpoint, source: S3Source):
        self.across_bucket = layout != LAYOUT_MIRROR
        self.checkpoint, self.source = checkpoint, source
        # hash of (scope, name) → hash of the key holding it; flat/date: one per object (~110 bytes)
        self._owners: dict[int, int] = {}
        if self.across_bucket:   # every name given counts: one streamed pass of the checkpoint
            claimed: Iterable[tuple[str, str | None]] = (
                (key, data.get("name")) for key, data in checkpoint.entries(as_data=True) if may_hold_a_name(data))
        else:
            claimed = checkpoint.claimed_names()
        for key, name in claimed:
            self._claim(key, name or drive_path_for(key)[-1])

    def _hash(self, key: str, name: str) -> int:
        return hash(((), name) if self.across_bucket else (drive_path_for(key)[:-1], name))

    def _claim(self, key: str, name: str) -> None:
        self._owners.setdefault(self._hash(key, name), hash(key))

    def name_for(self, key: str) -> str:
        """Called for each object to copy, in key order, once per run."""
        entry = self.checkpoint.get(key)
        if entry is not None and entry.name:
            self._claim(key, entry.name)
            return entry.name
        natural = drive_path_for(key)[-1]
        plain = self.across_bucket or is_plain_key(key)
        for number in itertools.count(1):
            name = numbered_name(natural, number)
            if self._owners.get(self._hash(key, name), hash(key)) != hash(key):
                continue   # another key holds it
            if not self.across_bucket and (number > 1 or not plain) and self._plain_key_holds(key, name):
                continue
            if self.across_bucket or not plain or number > 1:
                self._claim(key, name)   # plain mirror keys keep their own name: no other plain key wants it
            return name
        raise AssertionError("unreachable")

    def _plain_key_holds(self, key: str, name: str) -> bool:
        """Mirror layout: whether the plain key spelling this folder + name (`a/b.jpg` for `a//b.jpg`,
        `a/b (2).jpg` for a second `a/b.jpg`) holds the name: an earlier run gave it to it, or it
        sorts before this key and exists (then this listing gave it to it)."""
        twin = "/".join(drive_path_for(key)[:-1] + (name,))
        if twin == key:
            return False
        entry = self.checkpoint.get(twin)
        if entry is not None and not entry.name and may_hold_a_name(entry.to_json()):
            return True
        return twin < key and self.source.exists(twin)


def may_hold_a_name(data: dict[str, Any]) -> bool:
    """A checkpoint entry whose object has (or may have) a file in Drive under its name."""
    return data["status"] in (STATUS_DONE, STATUS_SENDING) or bool(stored_drive_id(data) or data.get("name"))


def source_id_for(bucket: str, key: str) -> str:
    """The provenance id stored in appProperties: short, fixed length, no key bytes leaked."""
    return hashlib.sha256(f"s3://{bucket}/{key}".encode("utf-8")).hexdigest()[:32]


def is_folder_marker(obj: SourceObject) -> bool:
    """Objects that only pretend a folder exists: 'x/' keys and zero-byte placeholders."""
    return (obj.key.endswith("/") or not drive_path_for(obj.key)
            or (obj.size == 0 and obj.key.endswith(FOLDER_PLACEHOLDER_SUFFIXES)))


def media_kind_for(key: str) -> bool | None:
    """True: a photo/video extension; False: another extension; None: no extension (ask S3)."""
    extension = media_format(key)
    return extension in MEDIA_EXTENSIONS if extension else None


def is_video(key: str) -> bool:
    return key.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS


def is_media_content_type(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower().startswith(("image/", "video/"))


PLAN_SKIP, PLAN_DONE, PLAN_COPY, PLAN_CHECK_TYPE, PLAN_ARCHIVED = "skip", "done", "copy", "check-type", "archived"
SKIP_MARKER, SKIP_NOT_MEDIA = "folder marker", "not a photo or video"


SKIP_FILTERED = "excluded by --include/--exclude/--min-size/--max-size"
SKIP_DATE_FILTERED = "original date outside --newer-than/--older-than"
SKIP_SIDECAR_ALONE = "a sidecar whose photo is not copied"
SKIP_SIDECARS_OFF = "a sidecar (--no-sidecars)"
SKIPPED_UNRECORDED = (SKIP_MARKER, SKIP_NOT_MEDIA, SKIP_FILTERED, SKIP_DATE_FILTERED, SKIP_SIDECAR_ALONE,
                      SKIP_SIDECARS_OFF)   # no checkpoint entry


def glob_regex(pattern: str) -> re.Pattern[str]:
    """An rclone filter glob as a regex on the key: `*` any run within a path segment, `**` any run,
    `?` one character but '/', `[...]` a class, `{a,b}` alternatives; a leading '/' anchors the
    pattern at the start of the key, otherwise it matches the key's last segments ('*.jpg')."""
    out, at, depth = [], 0, 0
    while at < len(pattern):
        char = pattern[at]
        if pattern.startswith("**", at):
            out.append(".*")
            at += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", at + 1)
            if end < 0:
                raise UsageError(f"filter {pattern!r}: '[' without ']'")
            out.append(pattern[at:end + 1].replace("\\", "\\\\"))
            at = end + 1
            continue
        elif char == "{":
            out.append("(?:")
            depth += 1
        elif char == "}" and depth:
            out.append(")")
            depth -= 1
        elif char == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(char))
        at += 1
    if depth:
        raise UsageError(f"filter {pattern!r}: '{{' without '}}'")
    body = "".join(out)
    return re.compile(("^" + body[len(re.escape("/")):] if pattern.startswith("/") else "(?:^|/)" + body) + "$")


class ObjectFilter:
    """--include/--exclude (rclone's order: the first rule that matches decides; with any --include,
    what no rule matches is excluded), --min-size/--max-size at listing; --newer-than/--older-than
    on the original date, once it is known (a file is read to learn it)."""

    def __init__(self, config: Config):
        self.rules = [(sign == "+", glob_regex(pattern)) for sign, pattern in config.filters]
        self.default = not any(include for include, _ in self.rules)
        self.min_size, self.max_size = config.min_size, config.max_size
        self.newer_than, self.older_than = config.newer_than, config.older_than
        self.sidecars = not config.no_sidecars

    def admits(self, obj: SourceObject) -> bool:
        if (self.min_size is not None and obj.size < self.min_size) or \
                (self.max_size is not None and obj.size > self.max_size):
            return False
        for include, rule in self.rules:
            if rule.search(obj.key):
                return include
        return self.default

    @property
    def by_date(self) -> bool:
        return self.newer_than is not None or self.older_than is not None

    def admits_date(self, moment: dt.datetime) -> bool:
        return (self.newer_than is None or moment > self.newer_than) and (self.older_than is None or moment < self.older_than)


def listed_restore(status: dict[str, Any] | None) -> str | None:
    """A listing's RestoreStatus: RESTORING, READABLE (restored) or None (not restored, or not said)."""
    if not status:
        return None
    return RESTORING if status.get("IsRestoreInProgress") else READABLE


def listed_archive_state(obj: SourceObject, archived_before: bool, restores_listed: bool | None) -> str:
    """An object's archive as the listing (and an earlier run's look) tells: READABLE, ARCHIVED,
    RESTORING, or ASK_S3 when only a HEAD can say. Intelligent-Tiering objects are asked unless an
    earlier run found this version archived and the listing reports restores."""
    tiered = obj.storage_class == TIERED_STORAGE_CLASS
    if obj.storage_class not in ARCHIVED_STORAGE_CLASSES and not tiered:
        return READABLE
    if obj.restore is not None:
        return obj.restore
    if restores_listed and (not tiered or archived_before):
        return ARCHIVED
    return ASK_S3


def recorded_as_archived(entry: CheckpointEntry | None, obj: SourceObject, now: dt.datetime | None = None) -> bool:
    """An earlier run found this version archived (or being restored), recently enough to believe it
    without a HEAD. For Intelligent-Tiering only for TIERED_RECHECK_S: its restore moves the object
    back to a readable tier with no restored copy, which a listing's RestoreStatus is not documented
    to show (AWS "Restoring an archived object"), so only a HEAD tells that it is back."""
    if not (entry and entry.status == STATUS_SKIPPED and entry.etag == obj.version
            and entry.reason in (SKIP_ARCHIVED, SKIP_RESTORING)):
        return False
    if obj.storage_class != TIERED_STORAGE_CLASS:
        return True
    if (recorded := parse_utc(entry.at)) is None:
        return False
    return ((now or dt.datetime.now(dt.timezone.utc)) - recorded).total_seconds() < TIERED_RECHECK_S


def head_archive_state(storage_class: str, archive_status: str | None, restore: str | None) -> str:
    """A HEAD's x-amz-restore (`ongoing-request="false", expiry-date=...` once restored) and
    x-amz-archive-status (an Intelligent-Tiering archive tier) as READABLE, ARCHIVED or RESTORING."""
    restore = (restore or "").replace(" ", "")
    if 'ongoing-request="false"' in restore:
        return READABLE
    if 'ongoing-request="true"' in restore:
        return RESTORING
    return ARCHIVED if storage_class in ARCHIVED_STORAGE_CLASSES or archive_status else READABLE


def plan_object(obj: SourceObject, done: bool, all_files: bool, archive: str = READABLE,
                sidecar: bool = False) -> tuple[str, str | None]:
    """What to do with a listed object (`done`: the checkpoint has this version; `archive`: its
    listed_archive_state; `sidecar`: it travels with a photo of the copy): (PLAN_*, why skipped or archived)."""
    if is_folder_marker(obj):
        return PLAN_SKIP, SKIP_MARKER
    kind = True if all_files or sidecar else media_kind_for(obj.key)
    if kind is False:
        return PLAN_SKIP, SKIP_NOT_MEDIA
    if done:
        return PLAN_DONE, None
    if archive in (ARCHIVED, RESTORING):
        return PLAN_ARCHIVED, SKIP_ARCHIVED if archive == ARCHIVED else SKIP_RESTORING
    return (PLAN_CHECK_TYPE if kind is None else PLAN_COPY), None


@dataclasses.dataclass(frozen=True, slots=True)
class Planned:
    """A listed object and what to do with it; `ask_archive`: a HEAD must tell if it is readable;
    `sidecars` and `twin`: its relatives in the listing (sibling_relations), for its date."""
    obj: SourceObject
    action: str
    reason: str | None = None
    ask_archive: bool = False
    sidecars: tuple[SourceObject, ...] = ()
    twin: SourceObject | None = None


#: Files that describe a photo beside it: XMP (Lightroom, darktable, digiKam, Capture One), Apple's
#: .aae edits, Google Takeout's JSON. Copied with their photo into its folder, with their Drive type.
SIDECAR_TYPES = {"xmp": "application/rdf+xml", "aae": "application/xml", "json": "application/json"}
TAKEOUT_SUFFIX = ".supplemental-metadata"   #: Takeout's newer NAME.EXT.supplemental-metadata.json (cut short in long names)
SIBLING_GROUP_MAX = 1000   #: keys of one name group the lister holds back at most
#: Takeout cuts a sidecar's name (without ".json") at 46 characters or more: a cut inside the
#: photo's own name keeps at least this much of it
TAKEOUT_CUT = 40


def name_group(key: str) -> str:
    """The folder and the name up to its first dot or parenthesis (at most TAKEOUT_CUT characters
    of it): a photo, its sidecars and its twin share it (Takeout names a duplicate's sidecar
    IMG_1.jpg(1).json for IMG_1(1).jpg), and S3's listing (in key order) gives the keys that share
    a prefix one after another."""
    cut = key.rfind("/") + 1
    end = min(cut + TAKEOUT_CUT, len(key))
    for mark in (".", "("):
        if (found := key.find(mark, cut, end)) >= 0:
            end = found
    return key[:end]


def sibling_groups(objects: Iterable[SourceObject], limit: int = SIBLING_GROUP_MAX) -> Iterator[list[SourceObject]]:
    """The listing in runs of keys of one name group (at most `limit`: a folder of "2019.*" names
    is cut in runs whose relatives across a cut are not seen)."""
    group: list[SourceObject] = []
    prefix = ""
    for obj in objects:
        if not (group and len(group) < limit and obj.key.startswith(prefix) and name_group(obj.key) == prefix):
            if group:
                yield group
            group, prefix = [], name_group(obj.key)
        group.append(obj)
    if group:
        yield group


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def sidecar_targets(key: str, media_names: dict[str, list[str]]) -> list[str]:
    """The names of the photos and videos (among `media_names`: lowercase name → names) that the
    sidecar `key` describes: NAME.EXT.xmp, NAME.xmp (every NAME.*), NAME.aae, NAME.EXT.json and
    NAME.EXT.supplemental-metadata.json (Takeout, cut anywhere; a cut inside a long name may fit
    several photos: the sidecar's title tells, when it is read); [] for no sidecar."""
    name = key.rsplit("/", 1)[-1]
    lower = name.lower()
    extension = lower.rsplit(".", 1)[-1] if "." in lower else ""
    if extension not in SIDECAR_TYPES:
        return []
    base = lower[:-len(extension) - 1]
    if extension == "json":   # IMG_1.jpg.supplemental-metadata, IMG_1.jpg.suppl, IMG_1.jpg; a long name cut
        duplicate = re.fullmatch(r"(.+)(\(\d+\))", base)   # IMG_1.jpg(1).json: the sidecar of IMG_1(1).jpg
        found = []
        for candidate, names in media_names.items():
            wanted = base
            if duplicate:
                stem, dot, extension = candidate.rpartition(".")
                if not (dot and stem.endswith(duplicate[2])):
                    continue
                candidate, wanted = stem[:-len(duplicate[2])] + "." + extension, duplicate[1]
            if (candidate + TAKEOUT_SUFFIX).startswith(wanted) and len(wanted) >= min(len(candidate), TAKEOUT_CUT):
                found += names
        return found
    if base in media_names:
        return media_names[base]
    return [found for candidate, names in media_names.items() if _stem(candidate) == base for found in names]


def sibling_relations(group: list[SourceObject]) -> tuple[dict[str, list[SourceObject]], dict[str, SourceObject], dict[str, list[str]]]:
    """In one name group: each photo's or video's sidecars, its twin (a Live Photo's other half,
    RAW+JPEG: another photo or video of the same name before the extension; a video's twin is a
    photo when it has one), and each sidecar's photos and videos."""
    media = [obj for obj in group if media_kind_for(obj.key)]
    media_names: dict[str, list[str]] = {}
    for obj in media:
        media_names.setdefault(obj.key.rsplit("/", 1)[-1].lower(), []).append(obj.key)
    sidecars: dict[str, list[SourceObject]] = {}
    targets: dict[str, list[str]] = {}
    for obj in group:
        if found := sidecar_targets(obj.key, media_names):
            targets[obj.key] = found
            for key in found:
                sidecars.setdefault(key, []).append(obj)
    twins: dict[str, SourceObject] = {}
    by_stem: dict[str, list[SourceObject]] = {}
    for obj in media:
        by_stem.setdefault(_stem(obj.key.rsplit("/", 1)[-1].lower()), []).append(obj)
    for pair in by_stem.values():
        for obj in pair:
            others = sorted((other for other in pair if other is not obj), key=lambda other: is_video(other.key))
            if others:
                twins[obj.key] = others[0]
    return sidecars, twins, targets


def layout_folder(key: str, layout: str) -> tuple[str, ...] | None:
    """The Drive folder path a key goes to when its name tells (None: a date layout, from the file)."""
    return None if layout.startswith("date:") else () if layout == LAYOUT_FLAT else drive_path_for(key)[:-1]


class FolderFill:
    """How many files each Drive folder will hold, as far as the layout tells from keys alone (not
    for a date layout), to warn before a folder passes Drive's 500,000 items."""

    def __init__(self, layout: str, root_name: str):
        self.layout, self.root_name = layout, root_name
        self.counts: Counter[tuple[str, ...]] = Counter()

    def add(self, planned: Planned) -> None:
        folder = layout_folder(planned.obj.key, self.layout)
        if planned.action in (PLAN_COPY, PLAN_CHECK_TYPE, PLAN_DONE) and folder is not None:
            self.counts[folder] += 1

    def warnings(self, limit: int = DRIVE_FOLDER_ITEMS) -> list[str]:
        return [f"{'/'.join(path) or self.root_name}: {n:,} files for one Drive folder, more than Drive's "
                f"{limit:,}: the rest go on in {(path[-1] if path else self.root_name) + ' (2)'!r} beside it "
                "(--layout date keeps folders small)" for path, n in sorted(self.counts.items()) if n > limit]


def plan_listing(source: S3Source, object_filter: ObjectFilter, all_files: bool,
                 done: Callable[[SourceObject], bool] = lambda obj: False,
                 archived_before: Callable[[SourceObject], bool] = lambda obj: False) -> Iterator[Planned]:
    """Every listed object with its plan: the one place where "filtered", "not media", "done" and
    "archived" are decided, for the run, --check, the dry run and verify alike. A sidecar follows
    its photo: copied when one of its photos is in the copy (whatever the filters say of the
    sidecar itself), left out otherwise or with --no-sidecars."""
    def plan(obj: SourceObject, sidecar: bool = False) -> Planned:
        # PERF: the checkpoint is asked only for Intelligent-Tiering objects, the one class where
        # an earlier run's look counts (a million reads of entry lines otherwise)
        archive = listed_archive_state(obj, obj.storage_class == TIERED_STORAGE_CLASS and archived_before(obj),
                                       source.restores_listed)
        action, reason = plan_object(obj, done(obj), all_files, archive, sidecar)
        return Planned(obj, action, reason, ask_archive=archive == ASK_S3 and action in (PLAN_COPY, PLAN_CHECK_TYPE))

    listing = (obj for page in source.iter_pages() for obj in page)
    for group in sibling_groups(listing):
        if len(group) == 1:   # most keys: no relatives
            yield plan(group[0]) if object_filter.admits(group[0]) else Planned(group[0], PLAN_SKIP, SKIP_FILTERED)
            continue
        sidecars, twins, targets = sibling_relations(group)
        plans: dict[str, Planned] = {}
        for obj in sorted(group, key=lambda obj: obj.key in targets):   # photos first: sidecars follow them
            photos = [plans[key] for key in targets.get(obj.key, ()) if key in plans]
            if obj.key in targets and not all_files:
                if not object_filter.sidecars:
                    plans[obj.key] = Planned(obj, PLAN_SKIP, SKIP_SIDECARS_OFF)
                    continue
                if not any(photo.action in (PLAN_COPY, PLAN_DONE, PLAN_ARCHIVED) for photo in photos):
                    plans[obj.key] = Planned(obj, PLAN_SKIP, SKIP_SIDECAR_ALONE)
                    continue
            elif not object_filter.admits(obj):
                plans[obj.key] = Planned(obj, PLAN_SKIP, SKIP_FILTERED)
                continue
            # a sidecar's relatives are its photo's (one that is copied first): it is dated as its
            # photo is, and lands beside it
            photos.sort(key=lambda photo: photo.action not in (PLAN_COPY, PLAN_DONE, PLAN_ARCHIVED))
            twin = twins.get(obj.key) or next((photo.obj for photo in photos), None)
            related = sidecars.get(twin.key if photos and twin is not None else obj.key, ())
            plans[obj.key] = dataclasses.replace(plan(obj, sidecar=obj.key in targets), sidecars=tuple(related), twin=twin)
        for obj in group:   # in key order, as listed
            yield plans[obj.key]


def is_intact_copy(drive_file: DriveFile, obj: SourceObject) -> bool:
    """A Drive file that is a complete copy of this version of the object (checkable without the source)."""
    # The recorded MD5 is that of the bytes downloaded and sent, which Drive confirmed at upload;
    # the ETag's shape proves nothing (SSE-KMS objects have MD5-shaped ETags that are not MD5s).
    props = drive_file.app_properties
    recorded_md5 = props.get(PROP_MD5)
    return (props.get(PROP_ETAG) == obj.version and drive_file.size == obj.size and recorded_md5 is not None
            and drive_file.md5 == recorded_md5 and not drive_file.trashed)


def copy_awaits_md5(drive_file: DriveFile, obj: SourceObject) -> bool:
    """A complete upload of this version whose MD5 was not yet recorded (videos get it by an
    update after their upload, since it is known only at the last byte)."""
    props = drive_file.app_properties
    return (props.get(PROP_ETAG) == obj.version and PROP_MD5 not in props and drive_file.size == obj.size
            and drive_file.md5 is not None and not drive_file.trashed)


def usable_copy(drive_file: DriveFile | None, folder_ids: Collection[str] | None) -> bool:
    """A live file in one of these folders (a path's chain; None: in any folder)."""
    return bool(drive_file and not drive_file.trashed and not drive_file.is_folder
                and (folder_ids is None or drive_file.parent_id in folder_ids))


def validate_upload(size: int, local_md5: str, drive_file: DriveFile) -> str | None:
    """None if Drive holds exactly what was sent; else what differs, naming both values."""
    if drive_file.size != size:
        return f"size {drive_file.size} in Drive vs {size} sent"
    if drive_file.md5 != local_md5:
        return f"MD5 {drive_file.md5} in Drive vs {local_md5} sent"
    return None


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# RFC 6838 section 4.2: type "/" subtype, each a restricted-name.
MEDIA_TYPE_SYNTAX = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def media_format(key: str, staged: Path | None = None) -> str:
    """The format (an extension of MEDIA_TYPES, or the name's own) that the media filter, the Drive
    type and the date readers go by: the name's extension, or for a name without one, what the
    staged file's first bytes say ("" when neither tells)."""
    name = key.rsplit("/", 1)[-1]
    if "." in name.strip("."):
        return name.rsplit(".", 1)[-1].lower()
    if staged is not None:
        with contextlib.suppress(OSError):
            with open(staged, "rb") as stream:
                return sniff_format(stream.read(SNIFF_BYTES)) or ""
    return ""


def guess_mimetype(key: str, content_type: str | None, staged: Path | None = None) -> str:
    """S3's Content-Type unless it is generic; then the format's (MEDIA_TYPES first)."""
    given = (content_type or "").split(";")[0].strip().lower()
    # Upload scripts set headers such as `jpg`; googleapiclient fails on a type without a slash.
    if given not in GENERIC_CONTENT_TYPES and MEDIA_TYPE_SYNTAX.fullmatch(given):
        return {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}.get(given, given)
    extension = media_format(key, staged)
    return (MEDIA_TYPES.get(extension) or SIDECAR_TYPES.get(extension) or mimetypes.guess_type(key.rsplit("/", 1)[-1])[0]
            or "application/octet-stream")


def build_file_metadata(obj: SourceObject, name: str, bucket: str, parent_id: str, md5: str, download: Download,
                        date: OriginalDate, run_id: str) -> dict[str, Any]:
    """The one place that builds a Drive create request's metadata (name, place, provenance, dates).

    createdTime (writable only at creation) and modifiedTime (Drive's "Last modified" column and
    "Date modified" search) both carry the original date; S3 user metadata goes to `properties`.
    """
    metadata = {
        "name": name,
        "parents": [parent_id],
        "createdTime": rfc3339(date.moment),
        "modifiedTime": rfc3339(date.moment),
        "description": f"Copied from s3://{bucket}/{obj.key} by cloud_transfer",
        "appProperties": {PROP_SOURCE: source_id_for(bucket, obj.key), PROP_ETAG: obj.version, PROP_MD5: md5,
                          PROP_RUN: run_id},
    }
    properties = drive_properties(download.metadata, obj.key)
    if properties:
        metadata["properties"] = properties
    return metadata


def drive_properties(metadata: dict[str, str], key: str) -> dict[str, str]:
    """S3 user metadata as Drive `properties`, where it fits Drive's limits: key + value at most 124
    bytes in UTF-8, 30 per app and file (the first 30 by name). What does not fit is dropped (logged)."""
    fitting: dict[str, str] = {}
    for name, value in sorted(metadata.items()):
        if "=?" in value:   # S3 returns non-ASCII values as RFC 2047 encoded-words
            with contextlib.suppress(ValueError, LookupError, email.errors.HeaderParseError):
                value = str(email.header.make_header(email.header.decode_header(value)))
        if len(fitting) == DRIVE_PROPERTIES_PER_APP:
            log.debug("%s: user metadata beyond %d entries not kept in Drive: %s", key, DRIVE_PROPERTIES_PER_APP, name)
        elif len(name.encode("utf-8")) + len(value.encode("utf-8")) > DRIVE_PROPERTY_BYTES or not name:
            log.debug("%s: user metadata %s is too long for a Drive property (%d bytes with its key)", key, name,
                      DRIVE_PROPERTY_BYTES)
        else:
            fitting[name] = value
    return fitting


@dataclasses.dataclass
class Staging:
    """One object's staging file, kept across its attempts: a download that finished (its MD5
    checked against the ETag where that is one) is not fetched again when only the upload failed."""
    path: Path
    stream: Any
    download: Download | None = None
    uploaded: bool = False     # bytes went to Drive (what a run budget counts)


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        if written <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        data, offset = data[written:], offset + written


class _Rewind(Exception):
    """Raised into a download whose bytes an upload must read again from further back."""


class _Abandoned(Exception):
    """Raised into a download whose upload is over."""


class StagedDownload:
    """A download written into a staging file of at most `window` bytes by a thread of its own,
    while an upload reads behind it and starts with the first chunk, not after the last byte.

    The file is a ring: byte n of the object lives at n % window. Every resumable chunk starts
    where Drive's last answer said it holds the bytes (the upload seeks there), so the bytes before
    that position are never read again and the download may overwrite them: it runs at most a
    window ahead of the chunk being sent. An upload that must go back further (a session Drive
    expired, a chunk Drive says it lost) has the download start again there with a ranged GET.
    The MD5 is taken on the first pass over each byte, so it is the whole object's however often
    a range was fetched again; bytes before where a resumed session goes on are hashed, not stored,
    unless the ETag is the object's MD5: then the download skips to where Drive's bytes end and the
    ETag stands for the MD5 that Drive's md5Checksum is checked against.
    """

    def __init__(self, size: int, stream: Any, stop: threading.Event, window: int):
        self.size, self._fd, self._stop = size, stream.fileno(), stop
        self.window = max(1, min(window, size))   # a file that fits is never overwritten: a retry resends it
        self._cond = threading.Condition()
        self._floor = 0           # where the chunk being sent starts: Drive holds everything before
        self._start = 0           # the first byte the file holds of the current pass
        self._written = 0         # the end of the current pass
        self._writing = 0         # the end of the write in progress (its slots are being overwritten)
        self._rewind_to: int | None = None
        self._md5: Any = hashlib.md5()
        self._hashed = 0
        self._headers: Download | None = None
        self._finished = self._closed = False
        self.result: Download | None = None
        self.error: BaseException | None = None

    def fill(self, source: S3Source, obj: SourceObject) -> None:
        """The download's thread: one pass to the end, then passes from wherever the upload rewinds
        to, until the upload is over (close)."""
        try:
            start: int | None = 0
            while start is not None:
                try:
                    headers = source.stream(obj, self._write, start, self._got_headers)
                except _Rewind:
                    start = self._rewound()
                    continue
                if self.result is None:
                    md5 = self._md5.hexdigest() if self._md5 else obj.etag   # skipped: see the class
                    self.result = source.checked(obj, dataclasses.replace(headers, md5=md5), self._written)
                start = self._next_rewind()
        except _Abandoned:
            pass   # the upload ended first (its file was there already): no result, and no error
        except BaseException as exc:  # handed to the uploading thread
            self.error = exc
        with self._cond:
            self._finished = True
            self._cond.notify_all()

    def _got_headers(self, headers: Download) -> None:
        with self._cond:
            self._headers = self._headers or headers
            self._cond.notify_all()

    def _rewound(self) -> int:
        with self._cond:
            assert self._rewind_to is not None
            if self._rewind_to > self._hashed:
                self._md5 = None
            self._start = self._written = self._writing = self._rewind_to
            self._rewind_to = None
            return self._start

    def _next_rewind(self) -> int | None:
        with self._cond:
            while self._rewind_to is None and not self._closed:
                self._cond.wait()
            return None if self._closed else self._rewound()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            with self._cond:
                while True:
                    if self._closed:
                        raise _Abandoned()
                    if self._rewind_to is not None:
                        raise _Rewind()
                    offset = self._written
                    # Bytes Drive holds already are hashed, not stored (a file that fits keeps them all)
                    stored = offset + len(view) > self._floor or self.holds_all()
                    room = min(self._floor + self.window - offset, self.window) if stored else len(view)
                    if room > 0:
                        break
                    if self._stop.is_set():
                        raise InterruptedRun("interrupted")
                    self._cond.wait(timeout=1.0)
                piece = view[:room]
                if stored:   # the slots of these bytes are being overwritten: not readable
                    self._writing = offset + len(piece)
            if self._md5 and offset + len(piece) > self._hashed:   # a pass again over hashed bytes adds nothing
                self._md5.update(piece[self._hashed - offset:])
                self._hashed = offset + len(piece)
            if stored:
                self._ring(_pwrite_all, offset, piece)
            with self._cond:
                self._written += len(piece)
                self._writing = self._written
                if not stored:
                    self._start = self._written
                self._cond.notify_all()
            view = view[len(piece):]

    def _ring(self, io_call: Callable[[int, Any, int], Any], offset: int, data: Any) -> None:
        """`io_call(fd, part, file offset)` for the one or two parts the object's bytes from
        `offset` on (a view to write, or a length to read) occupy in the ring."""
        at = offset % self.window
        length = data if isinstance(data, int) else len(data)
        first = min(length, self.window - at)
        parts = ((first, length - first) if isinstance(data, int) else (data[:first], data[first:]))
        io_call(self._fd, parts[0], at)
        if first < length:
            io_call(self._fd, parts[1], 0)

    def holds_all(self) -> bool:
        return self.window >= self.size

    def close(self) -> None:
        """The upload is over: the download stops, or its thread stops waiting for a rewind."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _wait(self, ready: Callable[[], bool]) -> None:
        with self._cond:
            while not ready():
                if self.error is not None:
                    raise self.error
                if self._finished:
                    raise ObjectError(Verdict(Verdict.RETRY, "download ended early"))
                if self._stop.is_set():
                    raise InterruptedRun("interrupted")
                self._cond.wait(timeout=1.0)

    def headers(self) -> Download:
        self._wait(lambda: self._headers is not None)
        assert self._headers is not None
        return self._headers

    def seek(self, position: int) -> None:
        """Where the upload's next chunk starts: Drive holds every byte before it."""
        with self._cond:
            self._floor = position
            if position > self._written + self.window and self._headers is not None and self._headers.etag_checked:
                self._rewind(position)   # a session resumed far ahead: the ETag stands for the MD5
            self._cond.notify_all()

    def _rewind(self, position: int) -> None:
        self._rewind_to = position
        self._floor = min(self._floor, position)
        self._cond.notify_all()

    def read(self, position: int, end: int) -> bytes:
        """Bytes [position, end) once the file holds them (a rewind, if it no longer does), cut at a
        window past the last seek: a chunk, and so each read of it, is a third of the window."""
        def ready() -> bool:
            nonlocal end
            end = min(end, max(self._floor, position) + self.window)
            if position < max(self._start, self._writing - self.window):   # overwritten, being so, or never stored
                if self._rewind_to is None or self._rewind_to > position:
                    self._rewind(position)
                return False
            return self._written >= end
        self._wait(ready)
        parts: list[bytes] = []
        self._ring(lambda fd, length, at: parts.append(os.pread(fd, length, at)), position, end - position)
        return b"".join(parts)

    def reader(self) -> _StagedReader:
        return _StagedReader(self)


class _StagedReader(io.RawIOBase):
    """A seekable view of a StagedDownload for googleapiclient's MediaIoBaseUpload: its size is the
    object's (seek to the end), reads wait for the bytes, and a seek to a chunk's start tells the
    download which bytes Drive holds."""

    def __init__(self, staged: StagedDownload):
        super().__init__()
        self._staged, self._pos = staged, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:   # MediaIoBaseUpload asks the size: not a chunk's start
            self._pos = self._staged.size + offset
            return self._pos
        self._pos = offset + (self._pos if whence == os.SEEK_CUR else 0)
        self._staged.seek(self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._staged.size if size is None or size < 0 else min(self._pos + size, self._staged.size)
        if end <= self._pos:
            return b""
        data = self._staged.read(self._pos, end)
        self._pos += len(data)
        return data


class DailyWindow:
    """--daily-limit as Google's cap is kept: a rolling 24 hours of bytes, each counted from the
    minute its upload finished (this run's and earlier runs'), so a run's bytes age out as they
    were sent, not all at once from its end. `limit` None: only recorded, for runs with a limit.
    Time only moves forward here: a minute that has aged out is dropped for good, and a running
    total keeps every question about the window as cheap as the minutes it must look at."""

    def __init__(self, limit: int | None, sent: Iterable[tuple[int, int]] = (), clock: Callable[[], float] = time.time):
        self.limit, self.clock = limit, clock
        minutes: Counter[int] = Counter()   # epoch minute -> bytes
        for minute, n in sent:
            minutes[int(minute)] += int(n)
        self._window: deque[list[int]] = deque(
            [minute, n] for minute, n in sorted(minutes.items()) if n > 0)   # oldest first, this run's too
        self._total = sum(n for _, n in self._window)
        self.this_run: Counter[int] = Counter()
        self._saved: Counter[int] = Counter()   # this run's bytes already journaled (unsaved())
        self._lock = threading.Lock()
        self._age_out(clock())

    def _age_out(self, now: float) -> None:
        """Under the lock: a minute counts until a day after it ended."""
        while self._window and (self._window[0][0] + 1) * 60 + DAILY_WINDOW_S <= now:
            self._total -= self._window.popleft()[1]

    def spent(self, now: float | None = None) -> int:
        with self._lock:
            self._age_out(self.clock() if now is None else now)
            return self._total

    def first_sent(self, now: float | None = None) -> float | None:
        with self._lock:
            self._age_out(self.clock() if now is None else now)
            return self._window[0][0] * 60.0 if self._window else None

    def fits_at(self, needed: int, now: float | None = None) -> float:
        """When `needed` more bytes fit under the limit: now, or once enough has aged out."""
        now = self.clock() if now is None else now
        with self._lock:
            self._age_out(now)
            over = self._total + needed - (self.limit if self.limit is not None else math.inf)
            for minute, n in self._window:
                if over <= 0:
                    break
                over -= n
                now = (minute + 1) * 60.0 + DAILY_WINDOW_S
        return now if over <= 0 else math.inf

    def add(self, n: int, now: float | None = None) -> None:
        minute = int((self.clock() if now is None else now) // 60)
        with self._lock:
            self.this_run[minute] += n
            self._total += n
            if self._window and self._window[-1][0] == minute:
                self._window[-1][1] += n
            else:
                # after the last minute but for a clock set back (or an earlier run's future minutes)
                at = len(self._window)
                while at and self._window[at - 1][0] > minute:
                    at -= 1
                if at and self._window[at - 1][0] == minute:
                    self._window[at - 1][1] += n
                else:
                    self._window.insert(at, [minute, n])

    def record(self) -> list[list[int]]:
        """This run's bytes by minute, for its run record."""
        with self._lock:
            return [[minute, n] for minute, n in sorted(self.this_run.items()) if n > 0]

    def unsaved(self) -> list[list[int]]:
        """This run's bytes not handed out before, by minute: journaled as the run goes, so that a
        killed run's uploads still count against the next run's day."""
        with self._lock:
            fresh = self.this_run - self._saved
            self._saved.update(fresh)
        return [[minute, n] for minute, n in sorted(fresh.items())]


def sent_by_minute(runs: list[dict[str, Any]]) -> Iterator[tuple[int, int]]:
    """What earlier runs uploaded, by minute; a run recorded before minutes were kept, all at its end."""
    for run in runs:
        if "sent" in run:
            yield from ((int(minute), int(n)) for minute, n in run["sent"])
        elif (ended := parse_utc(run.get("ended"))) is not None:
            yield int(ended.timestamp() // 60), int((run.get("counts") or {}).get("transferred_bytes", 0))


class RunBudget:
    """What a run may send: --max-transfer, --max-duration, and --daily-limit over the rolling 24
    hours. Each object reserves its size before it starts, so no budget is overshot (the first
    object of a run may be larger than a run budget; one larger than the whole daily limit goes
    alone after a quiet day). When the day is full but bytes of a day ago age out within
    DAILY_WAIT_MAX_S (and before the duration ends), the object waits for them; otherwise no new
    object starts. Objects in flight finish; those past the duration's grace period stop and resume."""

    def __init__(self, max_bytes: int | None = None, max_seconds: float | None = None, *,
                 daily: DailyWindow | None = None, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], bool] = lambda seconds: True):
        self.clock, self.max_bytes, self.daily, self.wait = clock, max_bytes, daily, wait
        self.deadline = clock() + max_seconds if max_seconds else None
        self.grace_s = min(BUDGET_GRACE_MAX_S, max(60.0, max_seconds / 10)) if max_seconds else 0.0
        self._reserved = 0    # this run's admitted bytes (given back when nothing was uploaded)
        self._in_flight = 0   # admitted, not yet uploaded: counted as sent now
        self._lock = threading.Lock()
        self._finished = threading.Condition(self._lock)
        self.reached = ""   # "transfer" | "daily" | "duration" once spent
        self.daily_frees_at: float | None = None   # when "daily": the epoch time the next object fits
        # True while Google's answer to one upload is awaited (it refused at its cap in the last
        # 24 hours): objects go one at a time, so that a refusal costs one request, not one per worker
        self.probing: Callable[[], bool] = lambda: False

    def admit(self, size: int) -> bool:
        """True once `size` may be sent; `wait(seconds)` (True: the run is stopping) for the day to make room."""
        while True:
            with self._lock:
                while self.probing() and self._in_flight and not self.reached:
                    self._finished.wait(1.0)
                    if self.wait(0):
                        return False
                if not self.reached and self.deadline is not None and self.clock() >= self.deadline:
                    self.reached = "duration"
                if not self.reached and self.max_bytes is not None and self._reserved and \
                        self._reserved + size > self.max_bytes:
                    self.reached = "transfer"
                delay = 0.0
                if not self.reached and self.daily is not None and self.daily.limit is not None:
                    now = self.daily.clock()
                    alone = self._in_flight == 0 and size > self.daily.limit and self.daily.spent(now) == 0
                    delay = 0.0 if alone else self.daily.fits_at(self._in_flight + size, now) - now
                    if delay > DAILY_WAIT_MAX_S or (self.deadline is not None and self.clock() + delay >= self.deadline):
                        self.reached, self.daily_frees_at = "daily", now + delay
                if self.reached:
                    return False
                if delay <= 0:
                    self._reserved += size
                    self._in_flight += size
                    return True
            if self.wait(delay):
                return False

    @contextlib.contextmanager
    def spending(self, size: int, staging: Staging) -> Iterator[None]:
        """An admitted object's reservation: counted in the day's minutes once uploaded, given back if
        nothing was (adopted, failed)."""
        try:
            yield
        except GoogleCapError:
            with self._lock:   # before a worker waiting on this probe wakes: it must not be sent
                self.reached = self.reached or "daily"
            raise
        finally:
            with self._lock:
                self._in_flight -= size
                if not staging.uploaded:
                    self._reserved -= size
                elif self.daily is not None:   # counted in the day as it leaves the in-flight count
                    self.daily.add(size)
                self._finished.notify_all()

    def overdue(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline + self.grace_s


ORDER_KEYS: dict[str, Callable[[WorkItem], Any]] = {   # --order; ties in key order (the listing's; sort is stable)
    "oldest": lambda item: item.obj.last_modified, "newest": lambda item: -item.obj.last_modified.timestamp(),
    "smallest": lambda item: item.obj.size, "largest": lambda item: -item.obj.size,
}


@dataclasses.dataclass(frozen=True)
class Place:
    """Where one object goes in Drive."""
    name: str
    folder_path: tuple[str, ...]
    folder_id: str
    date: OriginalDate | None   # known before the upload when the layout or a date filter needed it


class Sending:
    """One object's upload attempts: a pre-allocated id recorded before each create, a resumable
    session recorded as it starts, and the bytes credited to the progress so far (taken back
    when an attempt fails, since the next one sends them again)."""

    def __init__(self, transfer: Transfer, obj: SourceObject, attempts: int, update_id: str | None,
                 session: tuple[str, str] | None):
        self.transfer, self.obj, self.attempts = transfer, obj, attempts
        self.update_id, self.session = update_id, session
        self.sent = 0

    def progress(self, done_bytes: int) -> None:
        self.transfer.stats.add("transferred_bytes", done_bytes - self.sent)
        self.sent = done_bytes

    def upload(self, path: Path, metadata: dict[str, Any], mimetype: str,
               opener: Callable[[], Any] | None = None) -> DriveFile:
        transfer, obj, update_id = self.transfer, self.obj, self.update_id
        for _ in range(MAX_REQUEST_ATTEMPTS):
            file_id, uri = self.session or (update_id or transfer.drive.api.new_id(), None)
            self.session = None
            if not update_id and not uri:
                transfer._record_sending(obj, file_id, self.attempts)

            def record_session(new_uri: str, file_id: str = file_id) -> None:
                if not update_id:
                    transfer._record_sending(obj, file_id, self.attempts, session=new_uri)
            try:
                return transfer.drive.uploader.upload(path, obj.size, metadata, mimetype, file_id=file_id,
                                                      update=bool(update_id), progress=self.progress, opener=opener,
                                                      session=uri, on_session=record_session)
            except BaseException as exc:
                transfer.stats.add("transferred_bytes", -self.sent)   # the next attempt sends it all again
                self.sent = 0
                if not isinstance(exc, IdNotUsable):   # Drive would not take the id: take another
                    raise
        raise ObjectError(Verdict(Verdict.RETRY, "Drive refused every pre-allocated file id"))


@dataclasses.dataclass(frozen=True, slots=True)
class WorkItem:
    obj: SourceObject
    check_type: bool = False      # extension says nothing: ask S3 for the Content-Type first
    check_archive: bool = False   # an archive storage class the listing says nothing of: ask S3 first


class Transfer:
    """Copies every listed object that needs it; reports through Stats and the checkpoint, never prints.

    Threads: one lister fills a bounded queue (memory flat in bucket size), `workers` threads copy.
    `stop` (set by SIGINT/SIGTERM or a run-stopping error) makes everyone finish the step in hand.
    """

    def __init__(self, source: S3Source, drive: DriveDestination, checkpoint: Checkpoint, stats: Stats, *,
                 bucket: str, run_id: str, temp_dir: Path, workers: int = DEFAULT_WORKERS,
                 all_files: bool = False, recheck: bool = False, trusted_runs: set[str] | None = None,
                 stop: threading.Event | None = None,
                 backoff: Backoff | None = None, dates: OriginalDates | None = None, layout: str = LAYOUT_MIRROR,
                 budget: RunBudget | None = None, object_filter: ObjectFilter | None = None, order: str = "key",
                 lease: DriveLease | None = None, leave_removed: bool = False):
        self.source, self.drive, self.checkpoint, self.stats = source, drive, checkpoint, stats
        self.leave_removed = leave_removed   # copies removed in Drive stay removed (--removed-in-drive leave)
        self.lease = lease   # taken before this run's first write to Drive
        self.dates = dates or OriginalDates(source, stats=stats)
        self.layout, self.order = layout, order
        self.namer = Namer(layout, checkpoint, source)
        self.budget = budget or RunBudget()
        self.filter = object_filter or ObjectFilter(Config())
        self.draining = threading.Event()   # the budget is spent: no new object starts
        self.budget_stopped = False         # uploads in flight were stopped at the end of --max-duration
        self._renamed: dict[str, str] = {}   # key → Drive name, for objects in flight whose name is not their own
        self.bucket, self.run_id, self.temp_dir, self.workers = bucket, run_id, temp_dir, workers
        # trusted_runs (after a lost root): only these runs' "done" is taken without looking in Drive.
        self.all_files, self.recheck, self.trusted_runs = all_files, recheck, trusted_runs
        self.stop = stop or threading.Event()
        self.backoff = backoff or Backoff()
        self._queue: queue.Queue[WorkItem | None] = queue.Queue(maxsize=workers * 4)
        self._fatal: CloudTransferError | None = None
        self._fatal_lock = threading.Lock()
        self._temp_counter = 0
        self._sessions_tried: set[str] = set()   # keys whose recorded upload session this run has tried
        self.abandoned = False   # some worker was still in a network call when the run ended

    def run(self, tick: Callable[[], None] = lambda: None) -> None:
        """Copy everything; raises the first run-stopping error, or InterruptedRun after a stop."""
        threads = [threading.Thread(target=self._list, name="lister", daemon=True)]
        threads += [threading.Thread(target=self._work, name=f"worker-{n}", daemon=True) for n in range(self.workers)]
        for thread in threads:
            thread.start()
        stopped_at: float | None = None
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.25)
                    tick()
                    if self.budget.overdue() and not self.stop.is_set():
                        log.warning("--max-duration is over: stopping the uploads still in flight "
                                    "(the next run resumes them)")
                        self.draining.set()
                        self.budget_stopped = True
                        self.stop.set()
                    if self.stop.is_set():
                        stopped_at = stopped_at or time.monotonic()
                        if time.monotonic() - stopped_at > STOP_GRACE_S:
                            # A worker stuck in a network call (a stalled GET) is abandoned: its staging
                            # file goes with the temp directory, and whatever it was sending is found
                            # again in Drive by provenance next run.
                            log.warning("abandoning transfers still in flight after %.0f s", STOP_GRACE_S)
                            break
        finally:   # a second Ctrl-C (KeyboardInterrupt) leaves through here too
            self.abandoned = any(thread.is_alive() for thread in threads)
        if self._fatal is not None:
            raise self._fatal
        if self.stop.is_set() and not self.budget_stopped:
            raise InterruptedRun("interrupted: in-flight transfers abandoned, state saved; re-run to resume")

    def _stop_run(self, error: CloudTransferError) -> None:
        with self._fatal_lock:
            if self._fatal is None:
                self._fatal = error
        self.stop.set()

    def _put(self, item: WorkItem | None) -> bool:
        while not (self.stop.is_set() or self.draining.is_set()):
            try:
                self._queue.put(item, timeout=0.25)
                return True
            except queue.Full:
                continue
        return False

    def _list(self) -> None:
        held: list[WorkItem] | None = None if self.order == "key" else []   # --order: all, then sorted
        try:
            for planned in plan_listing(self.source, self.filter, self.all_files, self._done, self._archived_before):
                obj, action, reason = planned.obj, planned.action, planned.reason
                if self.stop.is_set() or self.draining.is_set():
                    return
                if action == PLAN_DONE:   # PERF: most objects of a re-run; one lock, not five
                    self.stats.add_all({"listed": 1, "eligible": 1, "eligible_bytes": obj.size,
                                        "already_done": 1, "already_done_bytes": obj.size})
                    continue
                self.stats.add("listed")
                if action in (PLAN_COPY, PLAN_CHECK_TYPE) and self.filter.by_date and self._outside_dates_as_recorded(obj):
                    action, reason = PLAN_SKIP, SKIP_DATE_FILTERED
                if action in (PLAN_COPY, PLAN_CHECK_TYPE) and self.leave_removed and self._removed_in_drive(obj, done_counts=False):
                    action, reason = PLAN_SKIP, SKIP_LEFT_OUT
                if action == PLAN_SKIP:
                    self.stats.skip(reason or "", obj.key)
                    continue
                if action == PLAN_ARCHIVED:
                    self.stats.archive(obj, reason or SKIP_ARCHIVED)
                    continue
                if action == PLAN_COPY and not planned.ask_archive:
                    self._count_eligible(obj)
                name = self.namer.name_for(obj.key)
                if name != drive_path_for(obj.key)[-1]:
                    self._renamed[obj.key] = name
                if planned.sidecars or planned.twin:
                    self.dates.relatives[obj.key] = (planned.sidecars, planned.twin)
                item = WorkItem(obj, check_type=action == PLAN_CHECK_TYPE, check_archive=planned.ask_archive)
                if held is not None:
                    held.append(item)
                elif not self._put(item):
                    return
            self.stats.add("listing_complete")
            if held:
                self.stats.listing_done = True   # totals are known: progress lines get their ETA
                held.sort(key=ORDER_KEYS[self.order])
                for item in held:
                    if not self._put(item):
                        return
        except CloudTransferError as exc:
            self._stop_run(exc)
        except Exception as exc:  # a listing that dies unseen would end the run "complete": stop it
            log.debug("listing failed", exc_info=True)
            self._stop_run(CloudTransferError(f"listing failed: {type(exc).__name__}: {exc}"))
        finally:
            self.stats.listing_done = True
            for _ in range(self.workers):
                self._put(None)

    def _done(self, obj: SourceObject) -> bool:
        done_run = self.checkpoint.done_run(obj.key, obj.version, obj.size)
        # not trusted: look in Drive, "done" may point into a lost root
        return done_run is not None and not self.recheck and (self.trusted_runs is None or done_run in self.trusted_runs)

    def _removed_in_drive(self, obj: SourceObject, done_counts: bool = True) -> str | None:
        """How this version's copy left Drive: as the feed told, or (`done_counts`, once Drive has
        been looked in) recorded done yet not found."""
        entry = self.checkpoint.get(obj.key)
        if not entry or entry.etag != obj.version:
            return None
        if entry.status == STATUS_SKIPPED and (entry.reason or "").startswith(SKIP_REMOVED):
            return entry.reason
        return REMOVED_HOW["missing"] if done_counts and entry.status == STATUS_DONE else None

    def _archived_before(self, obj: SourceObject) -> bool:
        return recorded_as_archived(self.checkpoint.get(obj.key), obj)

    def _count_eligible(self, obj: SourceObject) -> None:
        self.stats.add("eligible")
        self.stats.add("eligible_bytes", obj.size)

    def _work(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.25)
            except queue.Empty:
                if self.stop.is_set() or self.draining.is_set():
                    return
                continue
            if item is None or self.stop.is_set() or self.draining.is_set():
                return
            if not self.budget.admit(item.obj.size):
                self.draining.set()   # the lister stops; objects in flight finish
                return
            try:
                self._copy_with_retries(item)
            except InterruptedRun:
                return
            except CloudTransferError as exc:
                self._stop_run(exc)
                return
            except Exception as exc:  # a bug must cost one object, not hang the run
                self.stats.add("internal_errors")
                log.debug("internal error on %s", item.obj.key, exc_info=True)
                self.stats.fail(item.obj.key, f"internal error: {type(exc).__name__}: {exc}")
                log.error("failed %s: internal error: %s: %s (run with --verbose for details)",
                          item.obj.key, type(exc).__name__, exc)
            finally:
                self._renamed.pop(item.obj.key, None)
                self.dates.relatives.pop(item.obj.key, None)

    def _copy_with_retries(self, item: WorkItem) -> None:
        obj = item.obj
        entry = self.checkpoint.get(obj.key)
        attempts = entry.attempts if entry and entry.etag == obj.version and entry.status == STATUS_FAILED else 0
        with self._staging() as staging, self.budget.spending(obj.size, staging):   # kept across attempts
            for attempt in range(1, MAX_OBJECT_ATTEMPTS + 1):
                try:
                    if item.check_archive:
                        state = self.source.archive_state(obj)
                        if state != READABLE:   # before any folder is made for it, or a GET
                            raise ObjectError(Verdict(Verdict.SKIP, SKIP_ARCHIVED if state == ARCHIVED else SKIP_RESTORING))
                        if not item.check_type:
                            self._count_eligible(obj)
                        item = WorkItem(obj, check_type=item.check_type)
                    if item.check_type:
                        if not self.source.looks_like_media(obj):
                            self.stats.skip(SKIP_NOT_MEDIA, obj.key)
                            return
                        self._count_eligible(obj)
                        item = WorkItem(obj)
                    if self.lease is not None:
                        self.lease.hold()
                    self._copy(obj, attempts + attempt, staging)
                    return
                except ObjectError as exc:
                    verdict = exc.verdict
                    if verdict.action == Verdict.RETRY and attempt < MAX_OBJECT_ATTEMPTS:
                        self.stats.add("retries")
                        log.info("retrying %s: %s", obj.key, verdict.reason)
                        self.stop.wait(self.backoff.delay(attempt))
                        if self.stop.is_set():
                            raise InterruptedRun("interrupted") from None
                        continue
                    status = STATUS_SKIPPED if verdict.action == Verdict.SKIP else STATUS_FAILED
                    latest = self.checkpoint.get(obj.key)   # keeps an id a create may have used
                    if verdict.reason in (SKIP_ARCHIVED, SKIP_RESTORING):
                        self._archived(obj, verdict.reason, latest, counted=not item.check_archive)
                        return
                    self.checkpoint.record(obj.key, CheckpointEntry(
                        status=status, etag=obj.version, size=obj.size, attempts=attempts + attempt,
                        run=self.run_id, reason=verdict.reason, drive_id=latest.drive_id if latest else None,
                        name=self._renamed.get(obj.key),
                        date=f"{exc.date.isoformat()} {self.dates.basis}" if exc.date else None))
                    if status == STATUS_SKIPPED:
                        self.stats.skip(verdict.reason, obj.key)
                        log.warning("skipped %s: %s", obj.key, verdict.reason)
                    else:
                        self.stats.fail(obj.key, verdict.reason)
                        log.warning("failed %s: %s", obj.key, verdict.reason)
                    return

    def _archived(self, obj: SourceObject, reason: str, entry: CheckpointEntry | None, counted: bool) -> None:
        """Counted apart; recorded (once, not every run) so that a later run asks S3 no more than its
        listing tells, and so that no GET is tried again before a restore."""
        if counted:   # a GET refused what the listing did not call archived
            self.stats.add("eligible", -1)
            self.stats.add("eligible_bytes", -obj.size)
        self.stats.archive(obj, reason)
        if not (entry and entry.reason == reason and recorded_as_archived(entry, obj)):   # new, or due for a look
            self.checkpoint.record(obj.key, CheckpointEntry(status=STATUS_SKIPPED, etag=obj.version, size=obj.size,
                                                            run=self.run_id, reason=reason,
                                                            drive_id=entry.drive_id if entry else None))
        log.info("waits for a restore in S3: %s", obj.key)

    def _recorded_copy_is_intact(self, obj: SourceObject, folder_path: tuple[str, ...] | None, attempts: int) -> bool:
        """The checkpoint's copy of this version, intact in its folder (`folder_path` None: anywhere,
        as in a date layout): adopted without reading the object for its date."""
        entry = self.checkpoint.get(obj.key)
        if not (entry and entry.drive_id and entry.etag == obj.version and entry.status in (STATUS_DONE, STATUS_SENDING)):
            return False   # nothing recorded for this version: _copies looks, once
        folder_id = None if folder_path is None else self.drive.folders.ensure(folder_path)
        found = self.drive.api.get(entry.drive_id)
        if not (usable_copy(found, None if folder_id is None else self.drive.folders.chain(folder_id)) and found is not None and is_intact_copy(found, obj)):
            return False
        self._record_done(obj, found, attempts, adopted=True)
        return True

    def _outside_dates_as_recorded(self, obj: SourceObject) -> bool:
        """A version an earlier run read and found outside --newer-than/--older-than is judged by the
        date it recorded, while --date-from and --timezone are as they were: a nightly run with a
        date filter must not download the rest again (and it reserves nothing of the budgets)."""
        entry = self.checkpoint.get(obj.key)
        if not (entry and entry.date and entry.status == STATUS_SKIPPED and entry.etag == obj.version):
            return False
        moment, _, basis = entry.date.partition(" ")
        return basis == self.dates.basis and not self.filter.admits_date(dt.datetime.fromisoformat(moment))

    def _copies(self, obj: SourceObject, folder_id: str) -> list[DriveFile]:
        """This version's copies in the folder: the one the checkpoint's id points at, asked with
        files.get (consistent, so its 404 means a recorded create never happened), else those the
        folder's listing shows. When the recorded file is gone or trashed, the listing may not know
        yet (it lags): what it shows is checked with files.get before anything relies on it."""
        entry = self.checkpoint.get(obj.key)
        recorded_id = entry.drive_id if entry else None
        found = self.drive.api.get(recorded_id) if recorded_id else None
        # In a date layout the recorded file stays the copy even if the date now says another folder
        # (a changed --timezone or photo): moving on would leave it behind as a second copy. So does
        # one the user moved to another of the copy's folders (as the changes feed sees it, and verify).
        chain = self.drive.folders.chain(folder_id)
        if usable_copy(found, None if self.layout.startswith("date:") else chain) or (
                usable_copy(found, None) and found is not None and found.parent_id in self.checkpoint.folder_ids()):
            return [found]
        listed = self.drive.folders.files_for_source(folder_id, source_id_for(self.bucket, obj.key))
        if not recorded_id:
            return listed
        rechecked = (self.drive.api.get(copy.id) for copy in listed if copy.id != recorded_id)
        return [copy for copy in rechecked if usable_copy(copy, chain)]

    def _copy(self, obj: SourceObject, attempts: int, staging: Staging) -> None:
        """One attempt, in steps: place it (its folder, and its date where that decides), adopt an
        intact copy already in Drive, else send it; each step records what it did."""
        place = self._place(obj, attempts, staging)
        if place is None:
            return
        copies = self._copies(obj, place.folder_id)
        if not self._adopt(obj, copies, attempts, staging):
            self._send(obj, place, copies, attempts, staging)

    def _place(self, obj: SourceObject, attempts: int, staging: Staging) -> Place | None:
        """Where the object goes; None when the checkpoint's copy turned out intact (a --recheck of a
        date layout or filter, which would otherwise read the object for its date)."""
        name = self._renamed.get(obj.key) or drive_path_for(obj.key)[-1]
        folder_path = layout_folder(obj.key, self.layout)
        date = None
        if folder_path is None or self.filter.by_date:   # the folder or the filter needs it first: a download
            if self._recorded_copy_is_intact(obj, folder_path, attempts):
                return None
            date = self._date_before_upload(obj, staging)
            if not self.filter.admits_date(date.moment):
                raise ObjectError(Verdict(Verdict.SKIP, SKIP_DATE_FILTERED), date=date.moment)
        if folder_path is None:
            assert date is not None
            folder_path = date_folders(date, self.layout, self.dates.zone)
        return Place(name, folder_path, self.drive.folders.ensure(folder_path), date)

    def _adopt(self, obj: SourceObject, copies: list[DriveFile], attempts: int, staging: Staging) -> bool:
        """An intact copy (or a complete one whose MD5 is still to be recorded) becomes the copy."""
        intact = [copy for copy in copies if is_intact_copy(copy, obj)]
        awaiting_md5 = [copy for copy in copies if copy_awaits_md5(copy, obj)]
        keep = intact[0] if intact else awaiting_md5[0] if awaiting_md5 and self._finish_md5(
            obj, awaiting_md5[0], staging) else None
        if keep is None:
            return False
        self._retire_extra_copies(obj, keep=keep, copies=copies)
        self._record_done(obj, keep, attempts, adopted=True)
        log.debug("already in Drive, intact: %s", obj.key)
        return True

    def _send(self, obj: SourceObject, place: Place, copies: list[DriveFile], attempts: int,
              staging: Staging) -> None:
        """Download and upload (a stale copy gets new content, not a twin), validate, record."""
        update_id = copies[0].id if copies else None
        replaced = self._keep_earlier(obj, copies[0], attempts) if copies else None
        removed = None if copies else self._removed_in_drive(obj)
        if removed and self.leave_removed:   # a walk found it gone: left out like the feed's news
            raise ObjectError(Verdict(Verdict.SKIP, removed))
        entry = self.checkpoint.get(obj.key)
        session = None
        if (not update_id and entry and entry.status == STATUS_SENDING and entry.session and entry.drive_id
                and entry.etag == obj.version and obj.key not in self._sessions_tried):
            # An earlier run was killed mid-upload: finish its session instead of sending it all again
            # (once: a second try in this run starts afresh).
            self._sessions_tried.add(obj.key)
            session = (entry.drive_id, entry.session)
        sending = Sending(self, obj, attempts, update_id, session)
        date, path = place.date, staging.path
        try:
            if self._streams(obj, staging):
                uploaded, download, date = self._upload_while_downloading(
                    obj, place.name, place.folder_id, staging, sending.upload, created=update_id is None, date=date)
            else:
                download = self._staged(obj, staging)
                date = date or self.dates.date_of(obj, download, path)
                metadata = build_file_metadata(obj, place.name, self.bucket, place.folder_id, download.md5, download,
                                               date, self.run_id)
                uploaded = sending.upload(path, metadata, guess_mimetype(obj.key, download.content_type, path))
        except ObjectError as exc:
            if exc.verdict.action != Verdict.FOLDER_FULL or update_id:
                raise
            self.drive.folders.spill(place.folder_id)
            raise ObjectError(Verdict(Verdict.RETRY, "its Drive folder is full: sending it to the one that "
                                                     "continues it")) from None
        self.stats.add("transferred_bytes", obj.size - sending.sent)
        problem = validate_upload(obj.size, download.md5, uploaded)
        if problem:
            self.stats.add("transferred_bytes", -obj.size)
            self.stats.add("checksum_mismatches")
            log.warning("corrupted on transfer, removing the Drive copy: %s: %s", obj.key, problem)
            if update_id is None:
                self._remove_bad_copy(uploaded.id)
            raise ObjectError(Verdict(Verdict.RETRY, f"corrupted on transfer: {problem}"))
        staging.uploaded = True
        self._retire_extra_copies(obj, keep=uploaded, copies=copies)
        for counted, yes in (("verified", True), ("etag_checked", download.etag_checked), ("transferred", True),
                             ("updated", bool(update_id)), (f"date_{date.source}", True)):
            if yes:
                self.stats.add(counted)
        if removed:
            self.stats.copied_again(obj.key, removed)
        self._record_done(obj, uploaded, attempts, replaced=replaced, date=date)
        how = "new revision" if update_id else "again" if removed else "new"
        drive_path = "/".join((*place.folder_path, place.name))
        self.stats.note(obj.key, f"copied ({how})", drive_id=uploaded.id, drive_path=drive_path, size=obj.size,
                        date_source=date.source, reason=removed or None)
        log.debug("copied (%s): %s → %s (%s, date from %s)", how, obj.key, drive_path, format_bytes(obj.size),
                  date.source)

    def _streams(self, obj: SourceObject, staging: Staging) -> bool:
        """Whether the object uploads while it downloads: a resumable video, and anything larger
        than the staging window, unless an earlier attempt left the whole object in the staging
        file. A photo up to the window is staged whole: its date readers (libexiv2's among them)
        want the file."""
        return (staging.download is None and self.drive.uploader.is_resumable(obj.size)
                and (is_video(obj.key) or obj.size > self.staging_window_bytes()))

    def _date_before_upload(self, obj: SourceObject, staging: Staging) -> OriginalDate:
        """The date, before any upload starts: from the staged file, or for a file that will upload
        while it downloads, from a HEAD (its metadata) and its header's ranged GETs."""
        if self._streams(obj, staging):
            return self.dates.date_of(obj, self.source.headers_of(obj), None)
        return self.dates.date_of(obj, self._staged(obj, staging), staging.path)

    def _upload_while_downloading(self, obj: SourceObject, name: str, folder_id: str, staging: Staging,
                                  upload: Callable[..., DriveFile], created: bool,
                                  date: OriginalDate | None) -> tuple[DriveFile, Download, OriginalDate]:
        """An upload that follows its download closely instead of waiting for the last byte, through
        a staging file of a few chunks whatever the object's size (StagedDownload).

        Its MD5 is known only at the end, so it reaches `appProperties` by one update after the
        upload (one request per large file); its date, which createdTime must carry from the create
        on, comes from its header, read with ranged GETs while the download starts.
        A download that fails after the last byte was sent (an MD5 that is not the ETag's) removes
        the new Drive file before the object is tried again."""
        staging.stream.seek(0)
        staging.stream.truncate()
        staged = StagedDownload(obj.size, staging.stream, self.source.stop, self.staging_window_bytes())
        thread = threading.Thread(target=staged.fill, args=(self.source, obj), name="download", daemon=True)
        thread.start()
        try:
            headers = staged.headers()
            date = date or self.dates.date_of(obj, headers, None)
            metadata = build_file_metadata(obj, name, self.bucket, folder_id, "", headers, date, self.run_id)
            # unknown until the last byte; a revision clears the old one (updates merge appProperties)
            if created:
                del metadata["appProperties"][PROP_MD5]
            else:
                metadata["appProperties"][PROP_MD5] = None
            uploaded = upload(staging.path, metadata, guess_mimetype(obj.key, headers.content_type),
                              opener=staged.reader)
        finally:
            staged.close()
            thread.join()
            if staged.holds_all():   # finished and verified: another attempt sends it as it is
                staging.download = staged.result
        if staged.error is not None:
            if created:
                self._remove_bad_copy(uploaded.id)
            raise staged.error
        # The upload can end before the download does (its file was complete in Drive already): the
        # bytes are then hashed to the end, not staged, to check that file
        download = staged.result or self.source.download_to(obj, None)
        if validate_upload(obj.size, download.md5, uploaded):
            return uploaded, download, date   # the caller removes it and tries again
        return self._set_md5(uploaded.id, download.md5, date), download, date

    def _set_md5(self, file_id: str, md5: str, date: OriginalDate) -> DriveFile:
        """Record the MD5 of the bytes sent, which the next runs check copies against; the date again,
        since an upload of content sets modifiedTime to now."""
        resource = self.drive.api.call(lambda service: service.files().update(
            fileId=file_id, body={"appProperties": {PROP_MD5: md5}, "modifiedTime": rfc3339(date.moment)},
            fields=DRIVE_FILE_FIELDS, supportsAllDrives=True), write=True)
        return DriveFile.from_resource(resource)

    def _staged(self, obj: SourceObject, staging: Staging) -> Download:
        """The object's bytes in the staging file (downloaded once per object, whatever the attempts)."""
        if staging.download is None:
            staging.stream.seek(0)
            staging.stream.truncate()
            staging.download = self.source.download_to(obj, staging.stream)
            staging.stream.flush()
        return staging.download

    def _finish_md5(self, obj: SourceObject, copy: DriveFile, staging: Staging) -> bool:
        """A file uploaded in full whose MD5 update never came (the run was killed, or the update
        failed, after the last chunk): download it (larger than the staging window: only hashed),
        and if Drive holds these very bytes, record their MD5 instead of uploading it again."""
        fits = obj.size <= self.staging_window_bytes()
        download = self._staged(obj, staging) if fits else self.source.download_to(obj, None)
        if copy.md5 != download.md5:
            return False
        log.info("%s: already uploaded in full; recording its MD5", obj.key)
        self._set_md5(copy.id, download.md5, self.dates.date_of(obj, download, staging.path if fits else None))
        return True

    def staging_window_bytes(self) -> int:
        return STAGING_WINDOW_CHUNKS * self.drive.uploader.chunk_size_bytes

    def _remove_bad_copy(self, file_id: str) -> None:
        try:
            self.drive.api.delete(file_id)
        except AuthError:   # in a shared drive only an organizer may delete: the trash will do
            self.drive.api.trash(file_id)

    def _record_sending(self, obj: SourceObject, file_id: str, attempts: int, session: str | None = None) -> None:
        """Before a create is sent, its id goes to disk: whatever happens next (a lost answer, kill -9),
        the next attempt or run asks Drive for that id (files.get is consistent) instead of a search.
        A resumable upload's session goes there too, once Drive has opened it: a run killed at 60%
        of a video lets the next one send only the rest."""
        self.checkpoint.record(obj.key, CheckpointEntry(
            status=STATUS_SENDING, etag=obj.version, size=obj.size, drive_id=file_id, session=session,
            attempts=attempts, run=self.run_id, name=self._renamed.get(obj.key)), durable=True)

    def _retire_extra_copies(self, obj: SourceObject, keep: DriveFile, copies: list[DriveFile]) -> None:
        """Copies left by older versions of the tool (or by Drive itself): move the extras to the trash."""
        for copy in copies:
            if copy.id != keep.id:
                log.warning("trashing a duplicate Drive copy of %s (id %s)", obj.key, copy.id)
                self.drive.api.trash(copy.id)

    def _keep_earlier(self, obj: SourceObject, stale: DriveFile, attempts: int) -> dict[str, str] | None:
        """Before a changed object's new content goes into its copy: the copy's current revision is
        kept forever (else Drive purges it in about 30 days), and what rollback needs to bring it
        back is on disk before the upload starts."""
        entry = self.checkpoint.get(obj.key)
        earlier = entry.replaced if entry and entry.etag == obj.version and entry.replaced else None
        if stale.app_properties.get(PROP_ETAG) == obj.version or not stale.head_revision:
            return earlier   # this version's own upload that went wrong: nothing of it to keep
        if earlier and earlier["revision"] == stale.head_revision:
            return earlier   # kept by an earlier attempt
        self.drive.api.keep_revision(stale.id, stale.head_revision)
        props = stale.app_properties
        replaced = {"revision": stale.head_revision, "etag": props.get(PROP_ETAG, ""), "md5": props.get(PROP_MD5, ""),
                    # a copy made before ctRun existed: the run this checkpoint recorded for it
                    "run": props.get(PROP_RUN) or (entry.run if entry and entry.drive_id == stale.id else ""),
                    "modified": stale.modified_time or ""}
        self.checkpoint.record(obj.key, CheckpointEntry(
            status=STATUS_SENDING, etag=obj.version, size=obj.size, drive_id=stale.id, attempts=attempts,
            run=self.run_id, name=self._renamed.get(obj.key), replaced=replaced), durable=True)
        return replaced

    def _record_done(self, obj: SourceObject, drive_file: DriveFile, attempts: int, adopted: bool = False,
                     replaced: dict[str, str] | None = None, date: OriginalDate | None = None) -> None:
        previous = self.checkpoint.get(obj.key)
        if adopted:
            self.stats.add("adopted")
            self.stats.add("adopted_bytes", obj.size)
            self.stats.note(obj.key, "found in Drive", drive_id=drive_file.id, size=obj.size)
        # An adopted file keeps the run that uploaded it: `rollback --run last` must not take files a
        # --recheck merely found again.
        same_file = adopted and previous is not None and previous.drive_id == drive_file.id and previous.run
        name = drive_file.name or self._renamed.get(obj.key)   # the name it has in Drive, adopted or not
        self.checkpoint.record(obj.key, CheckpointEntry(
            status=STATUS_DONE, etag=obj.version, size=obj.size, md5=drive_file.md5, drive_id=drive_file.id,
            attempts=attempts, run=previous.run if same_file else self.run_id,
            name=name if name and name != drive_path_for(obj.key)[-1] else None,
            replaced=previous.replaced if same_file and previous.etag == obj.version else replaced,
            taken=f"{date.moment.date().isoformat()} {date.source}" if date else previous.taken if same_file else None))

    @contextlib.contextmanager
    def _staging(self) -> Iterator[Staging]:
        """A private staging file (name not derived from the key), removed on every exit path."""
        with self._fatal_lock:
            self._temp_counter += 1
            path = self.temp_dir / f"object-{self._temp_counter}.part"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w+b") as stream:
                yield Staging(path, stream)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

#######################################################################
# Setup: the copy's Drive folder ######################################
#######################################################################
# Before a run writes: which folder is the copy's root (wherever it is now), that no other run
# writes there, and what changed in Drive since the last run.

def describe_identity(identity: dict[str, str]) -> str:
    return f"OAuth client {identity.get('client_id') or '?'} as {identity.get('account') or '?'}"


def same_identity(recorded: dict[str, str], current: dict[str, str]) -> bool:
    """Same OAuth client and same Google account; an account told by its permissionId when both have
    one (an email address can change), else by email."""
    if recorded.get("client_id") != current.get("client_id"):
        return False
    key = "account_id" if recorded.get("account_id") and current.get("account_id") else "account"
    return bool(recorded.get(key)) and recorded.get(key) == current.get(key)


def open_root(config: Config, drive: DriveDestination, checkpoint: Checkpoint, client_id: str,
              run_id: str) -> tuple[str, str]:
    """The root folder's (id, name for messages): --folder-id, else the one earlier runs filled,
    else the one its mark names wherever it is (another checkpoint's, a moved or renamed one), else
    a new copy's.

    Under drive.file a folder is visible only to the OAuth client's Google Cloud project and the
    account that made it: a remembered root that answers 404 may be deleted, or may be hidden from a
    new credentials.json or another account. Only the first is a reason to copy again; the second
    stops before any upload, naming both. A trashed root stops too: restoring it is one click,
    copying everything again takes days under Google's daily cap.
    """
    api, recorded = drive.api, dict(checkpoint.identity)

    def current_identity(ask: bool = False) -> dict[str, str]:
        known = checkpoint.identity
        if not ask and known.get("client_id") == client_id and known.get("account_id"):
            return dict(known)   # the root is visible: no need to ask Drive who we are on every run
        return {"client_id": client_id, **api.account()}

    def my_drive_id() -> str:
        known = checkpoint.identity.get("my_drive_id")
        if not known:   # "?": drive.file may not read it (files.get('root') is 404): asked once
            known = api.my_drive_id() or "?"
            checkpoint.set_identity({**checkpoint.identity, "my_drive_id": known})
        return "" if known == "?" else known

    root: DriveFile | None = None
    if config.folder_id:
        folder = chosen_folder(config, api)
        api.use_shared_drive(folder.drive_id)
        root_id, label, root = folder.id, folder.id, folder
    else:
        remembered = api.get(checkpoint.root_folder_id) if checkpoint.root_folder_id else None
        if remembered is not None and remembered.is_folder and not remembered.trashed:
            if config.new_root:   # left in a cron line it would start a new copy every night
                raise UsageError("--new-root: the Drive folder earlier runs filled is visible and in use; "
                                 "run without --new-root")
            root = remembered
        else:
            current = current_identity(ask=True)
            if config.new_root:
                log.warning("--new-root: starting a new copy in a new folder %r; an earlier copy stays as it is",
                            config.folder_name)
            elif remembered is not None:
                raise UsageError(f"the Drive folder earlier runs filled ({checkpoint.root_folder_id}) is in the "
                                 "trash: restore it and re-run, or pass --new-root to start a new copy")
            elif checkpoint.root_folder_id:
                if not recorded:
                    raise AuthError(
                        f"the Drive folder earlier runs filled ({checkpoint.root_folder_id}) is not visible to this "
                        f"sign-in ({describe_identity(current)}), and an older version did not record who made it: "
                        "if it was deleted, pass --new-root; else use the original credentials.json and account")
                if not same_identity(recorded, current):
                    raise AuthError(
                        f"the Drive folder earlier runs filled ({checkpoint.root_folder_id}) is not visible to this "
                        f"sign-in: it was made with {describe_identity(recorded)}, this is {describe_identity(current)}. "
                        "Use the original credentials.json and run 'auth' again, or pass --new-root to start a "
                        "second, separate copy")
                log.warning("the Drive folder earlier runs filled is gone (deleted permanently): "
                            "copying everything again into a new folder")
            if checkpoint.root_folder_id or config.new_root:
                # What earlier runs copied is not here: every object is checked against Drive, in this
                # run and any that resume it, until one finishes.
                checkpoint.forget_folders()
                checkpoint.set_recheck_from(run_id)
            # Recorded before the root is created, so a run that dies creating it is not taken for
            # another sign-in next time.
            checkpoint.set_identity(current)
            root = None if config.new_root else drive.folders.find_root(config.folder_name)
            if root is not None and root.trashed:
                raise UsageError(f"the Drive folder of this copy ({root.id}, {root.name!r}) is in the trash: restore "
                                 "it and re-run, or pass --new-root to start a new copy")
        if root is None:
            root_id, label = drive.folders.create(config.folder_name, "root", (), {PROP_ROOT: root_marker(
                config.folder_name)}), repr(config.folder_name)
            if drive.folders.my_drive_id:
                checkpoint.set_identity({**checkpoint.identity, "my_drive_id": drive.folders.my_drive_id})
        else:
            root_id, label = root.id, root_location(root, config.folder_name, my_drive_id())
            if label != repr(config.folder_name):
                log.warning("the copy's Drive folder was moved or renamed: %s", label)
            if root.app_properties.get(PROP_ROOT) != root_marker(config.folder_name):
                # made by an older version: marked once, so that it is found again after a move
                api.set_app_properties(root.id, {PROP_ROOT: root_marker(config.folder_name)})
    if not same_identity(checkpoint.identity, current := current_identity()):
        checkpoint.set_identity(current)   # e.g. a new client of the same project, which still sees the copy
    checkpoint.set_root(root_id)
    drive.folders.set_root(root_id, root.app_properties.get(PROP_NEXT) if root is not None else None)
    return root_id, label


def chosen_folder(config: Config, api: DriveApi) -> DriveFile:
    """--folder-id's folder, or a one-line reason it cannot take the copy."""
    folder = api.get(config.folder_id or "")
    if folder is None or not folder.is_folder:
        raise UsageError(f"--folder-id {config.folder_id} is not a folder this app can see: with the default "
                         "drive.file scope the tool sees only folders it created; use --full-scope")
    if folder.trashed:
        raise UsageError(f"--folder-id {config.folder_id} is in the Drive trash: restore it, or choose another")
    if config.service_account_path and not config.impersonate and not folder.drive_id:
        raise UsageError(f"--folder-id {config.folder_id} is in a My Drive, where a service account cannot own "
                         "files: use a folder in a shared drive, or --impersonate its owner")
    return folder


@dataclasses.dataclass(frozen=True)
class LeaseHolder:
    expires: float
    run_id: str
    pid: int
    host: str

    @classmethod
    def parse(cls, value: str | None) -> LeaseHolder | None:
        parts = (value or "").split(" ", 3)
        try:
            return cls(float(parts[0]), parts[1], int(parts[2]), parts[3]) if len(parts) == 4 else None
        except ValueError:
            return None

    def value(self) -> str:
        # appProperties: key + value <= 124 bytes in UTF-8; a long host name is cut
        text = f"{int(self.expires)} {self.run_id} {self.pid} {self.host}"
        return text.encode("utf-8")[:124 - len(PROP_LEASE)].decode("utf-8", "ignore")

    def describe(self) -> str:
        since = self.run_id.split("-")[0]
        started = dt.datetime.strptime(since, "%Y%m%dT%H%M%SZ").strftime("%Y-%m-%d %H:%M UTC") \
            if re.fullmatch(r"\d{8}T\d{6}Z", since) else "an unknown time"
        until = dt.datetime.fromtimestamp(self.expires, dt.timezone.utc).strftime("%H:%M UTC")
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {started}, holds it until {until} unless renewed)"


def lease_is_live(holder: LeaseHolder | None, now: float, host: str, pid_alive: Callable[[int], bool]) -> bool:
    """A lease another run may not take: unexpired, and not of a process on this host that is gone."""
    if holder is None or holder.expires <= now:
        return False
    here = LeaseHolder.parse(dataclasses.replace(holder, host=host).value())   # cut as the mark cuts it
    return holder.host != (here.host if here else host) or pid_alive(holder.pid)


class DriveLease:
    """One writing run per Drive folder, across checkpoints, directories and machines.

    The lease is an appProperty of the root folder. Drive has no compare-and-swap for metadata, so
    taking it follows Fischer's timed mutual exclusion: read it; if no live run holds it, write
    ours; wait `settle_s`; read it back. files.get sees a write at once (observed, e.g. kopia #90; Google
    documents no consistency model, files.list is known to lag), so two runs that both read
    it free both see the last writer's value after the wait, and only that one goes on — as long as
    each read-to-written step took less than the wait, which is checked (a slower one starts over;
    if it overwrote a run that had already gone on, that run's next renewal sees it and stops).
    Taken before the first write of a run (a re-run with nothing to do writes nothing and takes
    nothing), renewed while the run lives, given back at its end. A killed run's lease lapses after
    LEASE_S, at once for a process on the same host that is gone."""

    def __init__(self, api: DriveApi, root_id: str, run_id: str, *, settle_s: float = LEASE_SETTLE_S,
                 clock: Callable[[], float] = time.time, host: str | None = None, unsupported: bool = False):
        self.api, self.root_id, self.run_id, self.settle_s, self.clock = api, root_id, run_id, settle_s, clock
        self.host = host or socket.gethostname() or "unknown-host"
        self.held, self._unsupported = False, unsupported
        self.lost: str | None = None   # why this run no longer holds it
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._renewer: threading.Thread | None = None

    def _mine(self) -> LeaseHolder:
        return LeaseHolder(self.clock() + LEASE_S, self.run_id, os.getpid(), self.host)

    def _read(self) -> LeaseHolder | None:
        resource = self.api.get_resource(self.root_id, fields="appProperties") or {}
        return LeaseHolder.parse((resource.get("appProperties") or {}).get(PROP_LEASE))

    def _write(self, value: str | None) -> None:
        self.api.set_app_properties(self.root_id, {PROP_LEASE: value}, paced=False)   # None deletes the key

    def _refuse(self, holder: LeaseHolder) -> LockHeldError:
        return LockHeldError(f"another run is copying into this Drive folder: {holder.describe()}; this run "
                             "stops before writing anything (two writers would make duplicates)")

    def hold(self) -> None:
        """Return once this run holds the lease; LockHeldError when another live run does."""
        with self._lock:
            if self.lost:
                raise LockHeldError(self.lost)
            if self.held:
                return
            if self._unsupported:
                log.warning("the top folder of a shared drive cannot carry the mark that keeps a second run "
                            "out: runs from other checkpoints or machines are not stopped (a folder inside "
                            "the shared drive, as --folder-id, can)")
                self.held = True
                return
            # Errors propagate: a Drive that fails now must not leave this run writing without the lease.
            self._take()

    def _take(self) -> None:
        """Fischer's protocol (see the class); LockHeldError when a live run holds the lease."""
        for _ in range(LEASE_TRIES):
            started = time.monotonic()
            holder = self._read()
            if holder and holder.run_id != self.run_id and \
                    lease_is_live(holder, self.clock(), self.host, _pid_alive):
                raise self._refuse(holder)
            self._write(self._mine().value())
            if time.monotonic() - started > self.settle_s:
                continue   # slower than the wait: another run's read-back may have missed it
            time.sleep(self.settle_s)   # the protocol's wait, not a poll
            holder = self._read()
            if holder is None or holder.run_id != self.run_id:
                if holder is not None and lease_is_live(holder, self.clock(), self.host, _pid_alive):
                    raise self._refuse(holder)
                continue
            self.held = True
            self._renewer = threading.Thread(target=self._renew, name="lease", daemon=True)
            self._renewer.start()
            return
        raise UnavailableError("cannot take this run's hold on the Drive folder: Drive answered too slowly "
                               f"{LEASE_TRIES} times in a row; try again later")

    def _renew(self) -> None:
        while not self._done.wait(LEASE_RENEW_S):
            try:
                holder = self._read()
                if holder is None or holder.run_id != self.run_id:
                    self.lost = (f"this run's hold on the Drive folder was taken by "
                                 f"{holder.describe() if holder else 'nobody (it was removed)'}: stopping")
                    log.error("%s", self.lost)
                    return
                self._write(self._mine().value())
            except CloudTransferError as exc:   # retried in the next round; a lapse shows then
                log.warning("could not renew this run's hold on the Drive folder: %s", exc)

    def release(self) -> None:
        self._done.set()
        if self._renewer is not None:
            self._renewer.join(timeout=30)
        if not self.held or self.lost or self._unsupported:
            return
        with contextlib.suppress(CloudTransferError):
            holder = self._read()
            if holder is not None and holder.run_id == self.run_id:
                self._write(None)
        self.held = False


@dataclasses.dataclass
class DriveNews:
    """What a run learnt about Drive before it starts: from the changes feed, or that it must walk."""
    walk: str | None = None    # why every copy is looked for in Drive this run (None: the feed told all)
    token: str | None = None   # the feed's position, kept once the walk has looked at everything
    removed: Counter[str] = dataclasses.field(default_factory=Counter)   # how → copies of this checkpoint gone


def read_removals(api: DriveApi, checkpoint: Checkpoint, root_id: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """Drive's changes since the checkpoint's token: (the new token, {file id: how it left the copy},
    {folder id: how}); writes nothing. ObjectError when the feed cannot be read."""
    files: dict[str, str] = {}
    folders: dict[str, str] = {}
    copy_folders = checkpoint.folder_ids() | {root_id}
    token = checkpoint.changes_token or ""
    for page in api.changes(token):
        if isinstance(page, str):
            token = page
        else:
            removals_in(page, copy_folders, root_id, files, folders)
    return token, files, folders


def read_drive_changes(api: DriveApi, checkpoint: Checkpoint, root_id: str, run_id: str) -> DriveNews:
    """Which of this checkpoint's copies left Drive since the last run (trashed, deleted for good,
    moved out of the copy's folders), for one request when nothing changed: their objects are
    recorded as removed, to be copied again (or left out). A checkpoint that never read the feed,
    a feed that cannot be read, or a folder of the copy gone, makes this run walk instead."""
    if checkpoint.changes_token is None:
        token = api.start_page_token()
        if not checkpoint.runs:   # a first run: there is nothing it could have missed
            checkpoint.set_changes_token(token)
            return DriveNews()
        return DriveNews(walk=checkpoint.walk_reason or "this checkpoint has not read Drive's changes feed before",
                         token=token)
    try:
        token, files, folders = read_removals(api, checkpoint, root_id)
    except ObjectError as exc:
        return DriveNews(walk=f"Drive's changes feed could not be read ({exc})", token=api.start_page_token())
    news = DriveNews()
    gone_folders = [path for path, folder in checkpoint.folders.items()
                    if {folder["id"], *folder.get("more", ()), *folder.get("was", ())} & folders.keys()]
    if gone_folders:
        # Whether Drive lists what such a folder held as changed too is not documented: look for it all,
        # in this run and in every run after it until one has looked at everything.
        news = DriveNews(walk=f"{len(gone_folders)} of the copy's folders were trashed, deleted or moved away "
                              "in Drive", token=token)
        checkpoint.set_changes_token(None, walk_reason=news.walk)
        checkpoint.forget_folders_under(gone_folders)
    gone: list[tuple[str, dict[str, Any]]] = []
    if files:   # one pass over the checkpoint, only when something left
        gone = [(key, data) for key, data in checkpoint.entries(as_data=True)
                if data["status"] == STATUS_DONE and stored_drive_id(data) in files]
    for key, data in gone:
        how = files[stored_drive_id(data)]
        news.removed[how] += 1
        checkpoint.record(key, dataclasses.replace(entry_from_data(data), status=STATUS_SKIPPED, reason=REMOVED_HOW[how],
                                                   run=run_id, at=""))
    if news.walk is None:
        checkpoint.set_changes_token(token)
    checkpoint.flush()
    return news


def describe_removed(removed: Counter[str]) -> str:
    return ", ".join(f"{n} {REMOVED_HOW[how].split(': ', 1)[1]}" for how, n in sorted(removed.items()))


def say_drive_news(config: Config, checkpoint: Checkpoint, news: DriveNews) -> bool:
    """Tell what the feed found (or why this run walks), and remember --removed-in-drive; True when
    copies removed in Drive are left out."""
    if config.removed_in_drive:
        checkpoint.set_removed_in_drive(config.removed_in_drive)
    leave = checkpoint.removed_in_drive == REMOVED_LEAVE
    if news.removed:
        log.warning("since the last run, %d copies left Drive (%s): %s", sum(news.removed.values()),
                    describe_removed(news.removed), "left out (--removed-in-drive leave)" if leave
                    else "copying them again (--removed-in-drive leave would leave them out)")
    if news.walk:
        log.warning("%s: looking for every copy in Drive this run (a walk)", news.walk)
    return leave


#######################################################################
# Commands ############################################################
#######################################################################
# cmd_x(config, runtime) -> ExitCode. They wire the parts together and render results;
# policy lives above.


@dataclasses.dataclass
class Runtime:
    """What a command needs from the process around it (injected by main, or by tests)."""
    interactive: bool                       # a terminal is attached: consent and prompts are possible
    stop: threading.Event                   # set by SIGINT/SIGTERM
    out: Any = dataclasses.field(default_factory=lambda: sys.stdout)
    progress_bars: bool = False             # stderr is a terminal
    abandoned_work: bool = False            # a run ended with threads stuck in network calls
    report: dict[str, Any] | None = None    # the run's report once made (--report, --notify)
    notifier: Notifier | None = None        # --notify


def binding_for(config: Config) -> dict[str, str]:
    folder = f"id:{config.folder_id}" if config.folder_id else f"name:{config.folder_name}"
    return {"bucket": config.bucket, "prefix": config.prefix, "folder": folder, "layout": config.layout}


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


def lock_path_for(config: Config) -> Path:
    return config.checkpoint_path.with_name(config.checkpoint_path.name + ".lock")


def open_checkpoint(config: Config, *, create: bool = True) -> Checkpoint:
    try:
        if create and not config.checkpoint_path.exists():
            # The snapshot is written at the first flush; find out now that it can be, before any work.
            tempfile.TemporaryFile(dir=config.checkpoint_path.absolute().parent).close()
        return Checkpoint.load(config.checkpoint_path, binding_for(config), reset=config.reset_checkpoint,
                               create=create)
    except PermissionError as exc:
        raise UsageError(f"cannot write the checkpoint {config.checkpoint_path}: {exc.strerror}; "
                         "use --checkpoint PATH in a writable directory") from None
    except OSError as exc:
        raise UsageError(f"checkpoint {config.checkpoint_path}: {exc.strerror}") from None


def make_source(config: Config, runtime: Runtime, outage: OutageWatch | None = None) -> S3Source:
    return S3Source(make_s3_client(config), config.bucket, config.prefix, config.page_size, runtime.stop, outage,
                    config.sse_c_key, other_store=bool(config.s3_endpoint_url), bucket_origin=config.bucket_origin,
                    profile=config.aws_profile)


def make_drive(config: Config, runtime: Runtime, stats: Stats, outage: OutageWatch | None = None,
               checkpoint: Checkpoint | None = None, run_id: str = "") -> tuple[DriveDestination, Credentials]:
    creds = load_credentials(config, interactive=runtime.interactive)
    backoff = Backoff(config.backoff_base_s, config.backoff_cap_s)
    api = DriveApi(make_drive_service_factory(config, creds, stats), pacer=Pacer(backoff), backoff=backoff,
                   sleep=runtime.stop.wait, stop=runtime.stop, stats=stats, outage=outage)
    api.endpoint = config.drive_endpoint_url or api.endpoint
    folders = DriveFolders(api)
    if checkpoint is not None:
        def record(path: tuple[str, ...], folder_id: str) -> None:
            if path:
                checkpoint.add_folder(path, folder_id, run_id)
            else:
                checkpoint.set_root(folder_id)
            checkpoint.flush()   # on disk before a create is sent: a lost answer is found by this id

        def record_more(path: tuple[str, ...], folder_id: str) -> None:
            checkpoint.add_folder_more(path, folder_id)
            checkpoint.flush()
        folders = DriveFolders(api, recorded=checkpoint.folder_id, record=record,
                               recorded_more=checkpoint.folders_more, record_more=record_more)
    bandwidth = BandwidthLimit(config.bwlimit, runtime.stop, stats=stats) if config.bwlimit else None
    return DriveDestination(api, folders, DriveUploader(api, config.chunk_size_bytes, bandwidth)), creds


def _save_refreshed_token(creds: Credentials, token_before: str | None, config: Config) -> None:
    if isinstance(creds, Credentials) and creds.token and creds.token != token_before:   # not a service account's
        with contextlib.suppress(OSError):
            save_token(creds, config.token_path)


def client_id_of(creds: Any) -> str:
    """Who Drive's drive.file scope ties files to: the OAuth client, or the service account."""
    return getattr(creds, "client_id", None) or getattr(creds, "service_account_email", None) or ""


def cmd_transfer(config: Config, runtime: Runtime) -> ExitCode:
    if config.check:
        return cmd_check(config, runtime)
    if config.dry_run:
        return cmd_dry_run(config, runtime)
    started = utc_now_iso()
    runtime.notifier = Notifier(config.notify_url, runtime.stop) if config.notify_url else None
    code, daily_stop = ExitCode.INTERNAL, False
    try:
        code = _transfer(config, runtime)
        return code
    except CloudTransferError as exc:
        code, daily_stop = exc.exit_code, isinstance(exc, DailyCapError)
        if runtime.report is None:
            # stopped before the run began (a spent daily budget, a wrong bucket): a cron script
            # reading the report still learns what happened
            runtime.report = run_report(config, {"started": started}, exc.exit_code, {}, 0.0, error=str(exc))
            write_report(config, runtime.report)
        raise
    except KeyboardInterrupt:
        code = ExitCode.INTERRUPTED
        raise
    finally:
        # another run holds the lock: that run reports itself, and this one did nothing to report
        if runtime.notifier is not None and code != ExitCode.LOCKED:
            report = runtime.report or run_report(config, {"started": started}, code, {}, 0.0,
                                                  error="internal error (see the log)")
            daily_stop = daily_stop or report.get("stopped_at_budget") == "daily"
            runtime.notifier.finish(code in (ExitCode.OK, ExitCode.BUDGET) or (code == ExitCode.QUOTA and daily_stop),
                                    report)


def _transfer(config: Config, runtime: Runtime) -> ExitCode:
    outage = OutageWatch(config.outage_window_s)
    source = make_source(config, runtime, outage)
    source.check_access()   # first: a wrong bucket name is the likeliest mistake, and the clearest error
    with RunLock(lock_path_for(config)) as lock:
        if runtime.notifier is not None:
            runtime.notifier.start()   # not before: a run that finds the lock held reports nothing
        checkpoint = open_checkpoint(config)
        # a spent daily budget stops here, no Drive request made
        budget = run_budget(config, checkpoint.runs, wait=runtime.stop.wait)
        stats = Stats()
        if config.report_path is not None:
            stats.ledger = ObjectLedger(config.temp_dir)
        run_id = new_run_id()
        drive, creds = make_drive(config, runtime, stats, outage, checkpoint, run_id)
        if (refused_at := last_google_refusal(checkpoint.runs, time.time())) is not None:
            drive.api.pacer.probe = True
            budget.probing = lambda: drive.api.pacer.probe
            log.info("Google refused new uploads at %s: one upload first tells whether it takes them again",
                     local_time(refused_at))
        token_before = creds.token
        lease: DriveLease | None = None
        try:
            if not config.ignore_quota and not config.folder_id:   # a shared drive's space is not the user's
                check_storage(config, drive.api, checkpoint, source)
            # Before the run is recorded, so that a wrong --folder-id leaves the checkpoint as it was.
            root_id, root_label = open_root(config, drive, checkpoint, client_id_of(creds), run_id)
            lease = DriveLease(drive.api, root_id, run_id, settle_s=config.lease_settle_s,
                               unsupported=root_id == drive.api.list_options.get("driveId"))   # a shared drive's top
            news = read_drive_changes(drive.api, checkpoint, root_id, run_id)
            leave_removed = say_drive_news(config, checkpoint, news)
            lost_root = checkpoint.recheck_from_run is not None
            return _run_transfer(config, runtime, root_label, Transfer(
                source, drive, checkpoint, stats, bucket=config.bucket, run_id=run_id,
                temp_dir=make_private_temp_dir(config.temp_dir), workers=config.workers,
                all_files=config.all_files, recheck=config.recheck or news.walk is not None,
                leave_removed=leave_removed and not lost_root,
                trusted_runs=checkpoint.runs_since_recheck(run_id) if lost_root else None,
                stop=runtime.stop, backoff=drive.api.backoff,
                dates=OriginalDates(source, config.date_from, config.timezone, stats), layout=config.layout,
                budget=budget, object_filter=ObjectFilter(config), order=config.order, lease=lease), news)
        finally:
            if lease is not None:
                lease.release()
            _save_refreshed_token(creds, token_before, config)
            lock.hold_until_exit = runtime.abandoned_work


REPORT_VERSION = 1


def run_report(config: Config, run: dict[str, Any], exit_code: ExitCode, counts: dict[str, Any],
               seconds: float, stopped_at: str = "", error: str = "") -> dict[str, Any]:
    """The --report document. Its top-level counts are a contract scripts rely on (README): keys
    are only ever added, never renamed."""
    skipped: dict[str, int] = counts.get("skipped") or {}
    return {
        "report_version": REPORT_VERSION, "run_id": run.get("id"), "started": run.get("started"),
        "ended": run.get("ended") or utc_now_iso(), "outcome": exit_code.name.lower(), "exit_code": int(exit_code),
        "error": error or None, "source": f"s3://{config.bucket}/{config.prefix}",
        "destination": f"id:{config.folder_id}" if config.folder_id else config.folder_name,
        "listed": counts.get("listed", 0), "eligible": counts.get("eligible", 0),
        "transferred": counts.get("transferred", 0), "already_done": counts.get("already_done", 0),
        "found_in_drive": counts.get("adopted", 0), "failed": counts.get("failed", 0),
        "skipped": sum(skipped.values()), "bytes_transferred": counts.get("transferred_bytes", 0),
        "eligible_bytes": counts.get("eligible_bytes", 0), "updated": counts.get("updated", 0),
        "seconds": round(seconds, 3),
        "files_per_s": round(counts.get("transferred", 0) / seconds, 3) if seconds > 0 else 0.0,
        "mb_per_s": round(counts.get("transferred_bytes", 0) / 1e6 / seconds, 3) if seconds > 0 else 0.0,
        "retries": counts.get("retries", 0), "rate_limit_waits": counts.get("rate_limited", 0),
        "drive_requests": counts.get("drive_requests", 0),
        "errors_by_class": counts.get("failure_reasons") or {}, "failures": counts.get("failures") or [],
        "skipped_by_reason": skipped,
        "waiting_for_restore": counts.get("archived", 0), "waiting_for_restore_bytes": counts.get("archived_bytes", 0),
        "copied_again": counts.get("copied_again", 0), "copied_again_examples": counts.get("copied_again_examples") or [],
        "date_sources": {source: counts.get(f"date_{source}", 0) for source in DATE_SOURCE_NAMES},
        "stopped_at_budget": stopped_at or None,
        "bwlimit": format_bwlimit(config.bwlimit) if config.bwlimit else None,
        "bwlimit_waited_s": round(counts.get("bwlimit_wait_ms", 0) / 1000, 1),
    }


class Notifier:
    """--notify URL: tells a monitor each run's start and end. healthchecks.io's convention (Cronitor
    and others take it too): URL/start, then URL with the run report (JSON) when the run ends on track
    (done, or stopped at a budget or the daily cap: the next run goes on), URL/fail otherwise; every
    ping carries the run's `rid`, so overlapping runs are told apart. An Uptime Kuma push URL
    (/api/push/) gets a GET (Kuma 1.x takes no other) with status=up|down and a short msg, at the end.
    A monitor that cannot be told never fails the run: a few short tries, then a warning."""

    def __init__(self, url: str, stop: threading.Event):
        self.url, self.stop = url, stop
        parts = urllib.parse.urlsplit(url)
        self.host = parts.netloc.rsplit("@", 1)[-1]   # logs name the host only: the path is the secret
        self.kuma_push = "/api/push/" in parts.path
        self.rid = str(uuid.uuid4())
        SECRETS.add(url, parts.path, parts.query)

    def start(self) -> None:
        if not self.kuma_push:   # Kuma has no start signal: a push says the monitor is up
            self._send("/start", {"rid": self.rid})

    def finish(self, on_track: bool, report: dict[str, Any]) -> None:
        if self.kuma_push:
            outcome = f"{report.get('outcome')}: {report.get('transferred', 0)} copied"
            self._send("", {"status": "up" if on_track else "down",
                            "msg": SECRETS.redact(report.get("error") or outcome)[:200]})
        else:
            body = SECRETS.redact(json.dumps(report, ensure_ascii=False)).encode("utf-8")
            self._send("" if on_track else "/fail", {"rid": self.rid}, body)

    def _send(self, suffix: str, query: dict[str, str], body: bytes | None = None) -> None:
        parts = urllib.parse.urlsplit(self.url)
        target = urllib.parse.urlunsplit(parts._replace(
            path=parts.path.rstrip("/") + suffix,
            # ours replace the URL's own: Kuma shows its push URL as ...?status=up&msg=OK&ping=, and a
            # key given twice reaches it as a list, which it takes for "down"
            query=urllib.parse.urlencode([*((key, value) for key, value in urllib.parse.parse_qsl(
                parts.query, keep_blank_values=True) if key not in query and (value or key != "ping")), *query.items()])))
        problem = ""
        for attempt in range(NOTIFY_ATTEMPTS):
            request = urllib.request.Request(target, data=body, method="GET" if self.kuma_push else "POST",
                                             headers={"Content-Type": "application/json", "User-Agent": "cloud_transfer"})
            try:
                with urllib.request.urlopen(request, timeout=NOTIFY_TIMEOUT_S) as response:
                    response.read()
                return
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
                if exc.code < 500 and exc.code != 429:
                    break   # a wrong URL stays wrong
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                problem = str(getattr(exc, "reason", "") or exc) or type(exc).__name__
            if attempt + 1 < NOTIFY_ATTEMPTS:
                self.stop.wait(NOTIFY_BACKOFF_S * 2 ** attempt)
        log.warning("--notify: %s could not be told the run %s (%s); the run is not affected", self.host,
                    "started" if suffix == "/start" else "ended", SECRETS.redact(problem))


def write_report(config: Config, report: dict[str, Any], ledger: ObjectLedger | None = None) -> None:
    """The report, and with a ledger its `objects` last, streamed from the ledger's file."""
    if config.report_path is None:
        return
    if ledger is not None and ledger.broken:
        report = {**report, "objects_error": ledger.broken}
    text = json.dumps(report, indent=1, ensure_ascii=False)

    def pieces() -> Iterator[bytes]:
        yield text[:-2].encode("utf-8") + b',\n "objects": ['   # text ends with "\n}"
        for n, line in enumerate(ledger.lines() if ledger is not None else ()):
            yield (b"\n  " if n == 0 else b",\n  ") + line
        yield b"\n ]\n}\n"

    try:
        write_atomically(config.report_path, pieces() if ledger is not None and not ledger.broken
                         else (text + "\n").encode("utf-8"))
    except OSError as exc:
        log.error("cannot write the report %s: %s", config.report_path, exc.strerror)


def check_storage(config: Config, api: DriveApi, checkpoint: Checkpoint, source: S3Source) -> None:
    """Exit 5 before anything is uploaded when Drive's free space cannot hold what is left: known
    from the last run's listing, or on a first run from a listing of its own (sizes only). A
    re-run with nothing left asks Drive nothing here."""
    listed = [run["counts"] for run in checkpoint.runs if (run.get("counts") or {}).get("listing_complete")]
    needed: int | None = None
    if listed:   # what the last run left, at most (files it found in Drive are counted as left): cheap
        counts = listed[-1]
        at_most = (counts["eligible_bytes"] - counts.get("already_done_bytes", 0) - counts.get("adopted_bytes", 0)
                   - counts.get("transferred_bytes", 0))
        if at_most <= 0:
            return
        free = api.free_space()
        if free is None or at_most <= free:
            return
        needed = copy_outlook(checkpoint.runs, checkpoint_done_bytes(checkpoint), None)["bytes_left"]
    else:
        free = api.free_space()
        if free is None:
            return
        needed = sum(planned.obj.size for planned in plan_listing(source, ObjectFilter(config), config.all_files)
                     if planned.action == PLAN_COPY and not (planned.ask_archive and
                                                             planned.obj.storage_class in ARCHIVED_STORAGE_CLASSES))
    if needed is not None and needed > free:
        raise storage_shortfall(free, needed)


def storage_shortfall(free: int, needed: int) -> QuotaExceededError:
    return QuotaExceededError(f"Google Drive has {format_bytes(free)} free and the copy needs {format_bytes(needed)} "
                              "more: free space or buy storage, copy a part (--prefix, --include), or pass "
                              "--ignore-quota to copy what fits")


def checkpoint_done_bytes(checkpoint: Checkpoint) -> int:
    return sum(data["size"] for _, data in checkpoint.entries(as_data=True) if data["status"] == STATUS_DONE)


def format_like(n: float, example: str) -> str:
    """Bytes in the user's own units: decimal (GB) when they wrote the limit so, else binary (GiB)."""
    if not re.search(r"(?i)\d\s*[kmgt]b$", example.strip()):
        return format_bytes(n)
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def local_time(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def daily_budget_message(config: Config, daily: DailyWindow, frees_at: float) -> str:
    first = daily.first_sent()
    return (f"--daily-limit {config.daily_limit_text} is used: this tool sent "
            f"{format_like(daily.spent(), config.daily_limit_text)} in the last 24 hours"
            + (f" (since {local_time(first)})" if first is not None else "")
            + "; the next run can upload from " + (local_time(frees_at) if math.isfinite(frees_at) else "tomorrow"))


def google_refused_message(config: Config, daily: DailyWindow, refused_at: float) -> str:
    first = daily.first_sent(refused_at)
    return (f"Google refused new uploads at {local_time(refused_at)} (its daily cap of about 750 GB counts every upload to this "
            f"account, not only this tool's); this tool sent "
            f"{format_like(daily.spent(refused_at), config.daily_limit_text)}"
            + (f" since {local_time(first)}" if first is not None else " in the last 24 hours")
            + "; the next run tries one upload first and goes on if Google takes it")


def last_google_refusal(runs: list[dict[str, Any]], now: float) -> float | None:
    """When Google last refused at its cap, if within the last 24 hours."""
    for run in reversed(runs):
        if (refused := parse_utc(run.get("google_refused"))) is not None:
            return refused.timestamp() if now - refused.timestamp() < DAILY_WINDOW_S else None
    return None


def run_budget(config: Config, runs: list[dict[str, Any]], wait: Callable[[float], bool] = lambda s: True) -> RunBudget:
    """This run's budget (`runs`: the checkpoint's); exit 5 at once when the last 24 hours spent the
    daily limit for longer than a run waits."""
    daily = DailyWindow(config.daily_limit, sent_by_minute(runs))
    if config.daily_limit is not None:
        now = daily.clock()
        frees_at = daily.fits_at(1, now)
        if frees_at - now > DAILY_WAIT_MAX_S:
            raise DailyCapError(daily_budget_message(config, daily, frees_at))
    return RunBudget(config.max_transfer, config.max_duration_s, daily=daily, wait=wait)


def _run_transfer(config: Config, runtime: Runtime, root_label: str, transfer: Transfer,
                  news: DriveNews | None = None) -> ExitCode:
    """Run a transfer between two records in the checkpoint; always flush, clean up and summarise."""
    checkpoint, stats = transfer.checkpoint, transfer.stats
    run = {"id": transfer.run_id, "started": utc_now_iso(), "outcome": "running", "pid": os.getpid()}
    checkpoint.save_run(run)
    log.info("copying s3://%s/%s into Drive folder %s (run %s)", config.bucket, config.prefix, root_label,
             transfer.run_id)
    started = time.monotonic()
    reporter = Reporter(stats, enabled=not config.quiet, use_bars=runtime.progress_bars,
                        interval_s=config.progress_interval_s, bandwidth=transfer.drive.uploader.bandwidth)
    exit_code, error = ExitCode.PARTIAL, ""   # until the run says otherwise
    daily, sent_saved = transfer.budget.daily, time.monotonic()

    def tick() -> None:
        nonlocal sent_saved
        reporter.tick()
        if daily is not None and time.monotonic() - sent_saved >= SENT_SAVE_INTERVAL_S:
            sent_saved = time.monotonic()
            if fresh := daily.unsaved():
                checkpoint.save_sent(run["id"], fresh)

    try:
        transfer.run(tick=tick)
        reached = transfer.budget.reached
        if not reached:   # every listed object has been looked at
            checkpoint.set_recheck_from(None)
            if news is not None and news.token:
                checkpoint.set_changes_token(news.token)   # a walk is done: the feed tells from here on
        exit_code = (ExitCode.INTERNAL if stats["internal_errors"] else ExitCode.QUOTA if reached == "daily"
                     else ExitCode.BUDGET if reached else ExitCode.PARTIAL if stats["failed"] else ExitCode.OK)
    except GoogleCapError:
        refused_at = time.time()
        run["google_refused"] = utc_now_iso()
        error = google_refused_message(config, transfer.budget.daily or DailyWindow(None), refused_at)
        exit_code = ExitCode.QUOTA
        raise GoogleCapError(error) from None
    except CloudTransferError as exc:
        exit_code, error = exc.exit_code, str(exc)
        raise
    except KeyboardInterrupt:
        exit_code = ExitCode.INTERRUPTED
        raise
    finally:
        runtime.abandoned_work = transfer.abandoned
        reporter.close()
        shutil.rmtree(transfer.temp_dir, ignore_errors=True)
        counts = stats.as_dict()
        run["ended"] = utc_now_iso()
        if transfer.budget.daily is not None and transfer.budget.daily.record():
            run["sent"] = transfer.budget.daily.record()   # by minute: they age out as they were sent
        runtime.report = run_report(config, run, exit_code, counts, time.monotonic() - started,
                                    transfer.budget.reached, error)
        write_report(config, runtime.report, stats.ledger)
        if stats.ledger is not None:
            stats.ledger.close()
        checkpoint.save_run({**{k: v for k, v in run.items() if v is not None},
                             "outcome": exit_code.name.lower(),
                             "exit_code": int(exit_code),
                             "counts": {k: v for k, v in counts.items()
                                        if k not in ("failures", "failure_reasons", "copied_again_examples")}})
        checkpoint.finish()
        summary = summary_table(counts, time.monotonic() - started, transfer.run_id)
        file_log.info("%s", summary)   # the log keeps it even with --quiet
        if not config.quiet:
            print(summary, file=runtime.out, flush=True)
    if counts["copied_again"]:   # named before any "validated": the user may have removed them on purpose
        again = sorted(counts["copied_again_examples"], key=lambda e: e["key"])
        named = "; ".join(f"{e['key']} ({e['reason'].split(': ', 1)[-1]})" for e in again)
        more = counts["copied_again"] - len(counts["copied_again_examples"])
        log.warning("copied again %d whose copy had left Drive: %s%s%s", counts["copied_again"], named,
                    f"; and {more} more" if more > 0 else "",
                    "" if transfer.leave_removed else "; to leave out what you remove in Drive: --removed-in-drive leave")
    reached = transfer.budget.reached
    if reached == "daily" and transfer.budget.daily is not None:
        log.warning("stopped: %s", daily_budget_message(config, transfer.budget.daily,
                                                        transfer.budget.daily_frees_at or math.inf))
    elif reached:
        limit = {"transfer": f"--max-transfer {format_bytes(config.max_transfer or 0)}",
                 "duration": "--max-duration"}[reached]
        log.warning("stopped at %s: no new upload started after it; the next run continues", limit)
    elif counts["listed"] == 0:
        log.info("nothing to transfer: no objects under s3://%s/%s", config.bucket, config.prefix)
    elif exit_code == ExitCode.OK:
        log.info("done: everything eligible is in Drive and validated")
    else:
        log.warning("%d objects failed; re-run to retry them", counts["failed"])
    if counts["archived"]:
        log.warning("%s", restore_advice(config.bucket, counts))
    return exit_code


def restore_advice(bucket: str, counts: dict[str, Any]) -> str:
    """The line that says what waits for a restore, and how to start one."""
    example = shlex.quote(counts.get("archived_example") or "KEY")
    being = f" ({counts['restoring']} being restored)" if counts.get("restoring") else ""
    n = counts["archived"]
    return (f"{n} {'object' if n == 1 else 'objects'} ({format_bytes(counts['archived_bytes'])}) "
            f"{'waits' if n == 1 else 'wait'} for a restore from "
            f"an S3 archive{being}; the next run after a restore copies them. Restore one: aws s3api "
            f"restore-object --bucket {shlex.quote(bucket)} --key {example} --restore-request "
            "'{\"Days\":7,\"GlacierJobParameters\":{\"Tier\":\"Bulk\"}}' (Intelligent-Tiering: "
            "--restore-request '{}'); many: S3 Batch Operations with a restore job")


def date_readers() -> str:
    """The metadata readers this machine has, for --check; a missing libexiv2 is a warning."""
    import importlib.metadata
    versions = {name: importlib.metadata.version(name) for name in ("ExifRead", "hachoir")}
    exiv2 = _exiv2()
    if exiv2 is None:
        log.warning("no libexiv2 (the exiv2 package has no wheel for this machine): XMP, IPTC, CR3, CRW, MRW and "
                    "RAF dates fall back to a date in the name or the file times")
        return ", ".join(f"{name} {version}" for name, version in versions.items()) + ", no libexiv2"
    return ", ".join(f"{name} {version}" for name, version in versions.items()) + f", libexiv2 {exiv2.version()}"


def cmd_check(config: Config, runtime: Runtime) -> ExitCode:
    """transfer --check: every precondition of a run on a line of its own, ok or why not; exit 0
    only when all pass, else the exit code of the first that failed. Writes nothing but what any run
    would (a refreshed token.json): no checkpoint, no folder, and it never asks for consent."""
    failed: list[ExitCode] = []

    def check(name: str, run: Callable[[], str]) -> bool:
        try:
            detail, code = run(), None
        except ObjectError as exc:   # a request that kept failing
            detail = str(exc)
            code = ExitCode.UNAVAILABLE if exc.verdict.action in (Verdict.RETRY, Verdict.RESTART) else exc.exit_code
        except CloudTransferError as exc:
            detail, code = str(exc), exc.exit_code
        if code is not None:
            failed.append(code)
        print(f"{'FAIL' if code is not None else 'ok':<5} {name}: {detail}", file=runtime.out, flush=True)
        return code is None

    source = make_source(config, runtime)
    checkpoint: Checkpoint | None = None
    left = {"bytes": 0, "objects": 0, "archived": 0, "largest": [0] * config.workers}   # a heap of the largest

    def s3() -> str:
        source.check_access()
        listed, first = 0, None
        done = (lambda obj: checkpoint.done_run(obj.key, obj.version, obj.size) is not None) if checkpoint else \
            (lambda obj: False)
        fill = FolderFill(config.layout, config.folder_name)
        for planned in plan_listing(source, ObjectFilter(config), config.all_files, done):
            listed += 1
            fill.add(planned)
            obj = planned.obj
            if planned.action == PLAN_ARCHIVED:
                left["archived"] += 1
            elif planned.action in (PLAN_COPY, PLAN_CHECK_TYPE):
                left["bytes"] += obj.size
                left["objects"] += 1
                heapq.heappushpop(left["largest"], obj.size)
                if first is None and obj.size and not planned.ask_archive:
                    first = obj
        if first is not None:
            try:
                source.read_range(first, 0, 1)   # s3:GetObject, not only ListBucket
            except ObjectError as exc:
                if exc.verdict.action != Verdict.SKIP:   # a skipped object (SSE-C, deleted) is a run's business
                    raise
        for warning in fill.warnings():
            log.warning("%s", warning)
        return (f"s3://{config.bucket}/{config.prefix} at {source.client.meta.endpoint_url} is readable: "
                f"{listed} objects, {left['objects']} to copy ({format_bytes(left['bytes'])})"
                + (f", {left['archived']} archived: they wait for a restore" if left["archived"] else ""))

    def checkpoint_file() -> str:
        """Where a run writes: the checkpoint's directory, its files and the lock, as a run would open them."""
        nonlocal checkpoint
        path = config.checkpoint_path.absolute()
        if not path.parent.is_dir():
            raise UsageError(f"the checkpoint's directory {path.parent} does not exist: create it, or use "
                             "--checkpoint PATH")
        try:
            tempfile.TemporaryFile(dir=path.parent).close()
        except OSError as exc:
            raise UsageError(f"cannot write in the checkpoint's directory {path.parent} ({exc.strerror}): use "
                             "--checkpoint PATH in a writable directory") from None
        journal, lock = path.with_name(path.name + ".journal"), lock_path_for(config)
        for existing in (path, journal, lock):
            if existing.exists() and not os.access(existing, os.R_OK | os.W_OK):
                raise UsageError(f"{existing} is not writable for this user: fix its owner or mode")
        if (holder := lock_holder(lock)) is not None:
            raise LockHeldError(f"a cloud_transfer run (pid {holder}) holds the lock {lock} now: a second run "
                                "would stop with exit 4")
        if path.exists():
            checkpoint = open_checkpoint(config, create=False)
            return f"{path} is writable: {len(checkpoint.runs)} earlier runs"
        return f"{path} will be created (its directory is writable)"

    def temp_dir() -> str:
        staging = make_private_temp_dir(config.temp_dir)
        shutil.rmtree(staging, ignore_errors=True)
        window = STAGING_WINDOW_CHUNKS * config.chunk_size_bytes
        free, needed = shutil.disk_usage(staging.parent).free, sum(min(size, window) for size in left["largest"])
        bound = f"{config.workers} files in flight, each staged in at most {format_bytes(window)}"
        if needed > free:
            raise UsageError(f"{staging.parent} has {format_bytes(free)} free; {bound} need {format_bytes(needed)}: "
                             "use --temp-dir, a smaller --chunk-size or fewer --workers")
        return f"{staging.parent} is writable, {format_bytes(free)} free ({format_bytes(needed)} needed at most: {bound})"

    def daily_budget() -> str:
        runs = checkpoint.runs if checkpoint else []
        refused_at = last_google_refusal(runs, time.time())
        refused = (f"; Google refused new uploads at {local_time(refused_at)}: the run tries one upload first"
                   if refused_at is not None else "")
        if config.daily_limit is None:
            return "off" + refused
        spent = DailyWindow(config.daily_limit, sent_by_minute(runs)).spent()
        return (f"{format_like(spent, config.daily_limit_text)} of --daily-limit {config.daily_limit_text} used "
                "in the last 24 hours" + refused)

    check("settings", lambda: f"bucket {config.bucket!r} from {config.bucket_origin}, layout {config.layout}, "
                              f"{config.workers} workers")
    check("photo dates", date_readers)
    check("checkpoint", checkpoint_file)
    listed = check("S3", s3)
    drive: DriveDestination | None = None

    def sign_in() -> str:
        nonlocal drive
        drive, _ = make_drive(config, dataclasses.replace(runtime, interactive=False), Stats())
        who = drive.api.account()
        if config.service_account_path is not None:
            return f"service account key {config.service_account_path} works: acting as {who['account'] or who['account_id']}"
        return (f"{config.token_path} is valid: signed in as {who['account'] or who['account_id']}"
                + testing_mode_warning(config.token_path))

    def destination() -> str:
        assert drive is not None
        if config.folder_id:
            return f"folder {config.folder_id} ({chosen_folder(config, drive.api).name!r}) is usable"
        remembered = drive.api.get(checkpoint.root_folder_id) if checkpoint and checkpoint.root_folder_id else None
        if remembered is not None and remembered.is_folder and not remembered.trashed:
            return f"folder {config.folder_name!r} of earlier runs is usable ({remembered.id})"
        if remembered is not None:
            raise UsageError(f"the folder earlier runs filled ({remembered.id}) is in the trash: restore it")
        if checkpoint and checkpoint.root_folder_id and not config.new_root:
            raise AuthError(f"the folder earlier runs filled ({checkpoint.root_folder_id}) is not visible to this "
                            "sign-in: deleted, or made with another credentials.json or account; a run explains "
                            "which, or pass --new-root to start a new copy")
        found = drive.folders.find_root(config.folder_name)
        if found is not None and found.trashed:
            raise UsageError(f"the Drive folder of this copy ({found.id}, {found.name!r}) is in the trash: restore it")
        if found is None:
            return f"folder {config.folder_name!r} will be created in My Drive"
        return f"folder {root_location(found, config.folder_name, drive.api.my_drive_id())} exists ({found.id})"

    def storage() -> str:
        assert drive is not None
        if config.folder_id or config.ignore_quota:
            return "not checked (" + ("--ignore-quota" if config.ignore_quota else "a shared drive's space") + ")"
        free = drive.api.free_space()
        if free is None:
            return "no limit"
        if left["bytes"] > free:
            raise storage_shortfall(free, left["bytes"])
        return f"{format_bytes(free)} free, {format_bytes(left['bytes'])} left to copy"

    signed_in = check("Google sign-in", sign_in)
    if signed_in:
        check("Drive folder", destination)
    check("temp dir", temp_dir)
    if signed_in and listed:
        check("Drive storage", storage)
    check("daily budget", daily_budget)
    return failed[0] if failed else ExitCode.OK


def removed_since_last_run(config: Config, runtime: Runtime, checkpoint: Checkpoint | None) -> tuple[set[str], str]:
    """For a dry run: the keys whose copy left Drive since the last run, from the changes feed (read,
    its position not kept), or why that is not known. Nothing when they are left out anyway."""
    leave = (config.removed_in_drive or checkpoint and checkpoint.removed_in_drive) == REMOVED_LEAVE
    if checkpoint is not None and checkpoint.walk_reason:
        return set(), f"{checkpoint.walk_reason}: the next run looks for every copy in Drive"
    if checkpoint is None or not checkpoint.changes_token or not checkpoint.root_folder_id or leave:
        return set(), ""
    try:
        drive, _ = make_drive(config, dataclasses.replace(runtime, interactive=False), Stats())
        if config.folder_id:
            drive.api.use_shared_drive(chosen_folder(config, drive.api).drive_id)
        _, files, folders = read_removals(drive.api, checkpoint, checkpoint.root_folder_id)
    except CloudTransferError as exc:
        return set(), f"copies removed in Drive since the last run are not counted (Drive could not be asked: {exc})"
    if folders:
        return set(), "a folder of the copy left Drive since the last run: the next run looks for every copy"
    return {key for key, data in checkpoint.entries(as_data=True)
            if data["status"] == STATUS_DONE and stored_drive_id(data) in files}, ""


def dry_run_checkpoint(config: Config) -> Checkpoint | None:
    """What a dry run plans against. A look at another part of the bucket (another --prefix) uses
    the checkpoint's records all the same, and says that a real run would refuse; a dry run never
    refuses what it only reads."""
    if not config.checkpoint_path.exists():
        return None
    try:
        return open_checkpoint(config, create=False)
    except CheckpointError as refusal:
        stored = Checkpoint.load(config.checkpoint_path, None, create=False)   # a damaged file: its own error
        wanted = binding_for(config)
        if any(stored.binding.get(field) != wanted[field] for field in ("bucket", "folder", "layout")):
            log.warning("%s; this dry run plans as a first run would", refusal)
            return None
        log.warning("the checkpoint %s is for --prefix %r: this dry run counts what it holds as done, but a real "
                    "run with --prefix %r would stop; give that one its own --checkpoint FILE",
                    config.checkpoint_path, stored.binding.get("prefix", ""), config.prefix)
        return stored


DRY_RUN_HEAD_BYTES, DRY_RUN_TAIL_BYTES = 256 * 1024, 64 * 1024


def dry_run_date(dates: OriginalDates, planned: Planned, temp_dir: Path | None) -> OriginalDate | None:
    """The date a run would give an object, without downloading it: a video's header is read as a
    streamed upload reads it; a photo's first 256 KiB and last 64 KiB go into a sparse file of its
    size (its metadata sits in one or the other), read as the staged file would be."""
    obj = planned.obj
    if planned.sidecars or planned.twin:
        dates.relatives[obj.key] = (planned.sidecars, planned.twin)
    try:
        headers = dates.source.headers_of(obj)
        if is_video(obj.key):
            return dates.date_of(obj, headers, None)
        with tempfile.NamedTemporaryFile(dir=temp_dir, suffix="." + media_format(obj.key)) as sparse:
            sparse.write(dates.source.read_range(obj, 0, DRY_RUN_HEAD_BYTES))
            if obj.size > DRY_RUN_HEAD_BYTES:
                tail = max(DRY_RUN_HEAD_BYTES, obj.size - DRY_RUN_TAIL_BYTES)
                sparse.seek(tail)
                sparse.write(dates.source.read_range(obj, tail, obj.size - tail))
            sparse.truncate(obj.size)
            sparse.flush()
            return dates.date_of(obj, headers, Path(sparse.name))
    except ObjectError as exc:
        log.debug("%s: no date in a dry run: %s", obj.key, exc)
        return None
    finally:
        dates.relatives.pop(obj.key, None)


def cmd_dry_run(config: Config, runtime: Runtime) -> ExitCode:
    """List and plan only: no lock, no checkpoint written; of Drive only its changes feed is read,
    for the copies removed there since the last run."""
    source = make_source(config, runtime)
    source.check_access()
    checkpoint = dry_run_checkpoint(config)
    stats, shown, untyped, tiered, again, fallbacks = Stats(), 0, 0, 0, 0, 0
    dates = OriginalDates(source, config.date_from, config.timezone, stats)
    left_drive, unknown = removed_since_last_run(config, runtime, checkpoint)
    if unknown:
        log.warning("%s", unknown)
    done = (lambda obj: obj.key not in left_drive and checkpoint.done_run(obj.key, obj.version, obj.size) is not None) \
        if checkpoint else (lambda obj: False)
    fill = FolderFill(config.layout, config.folder_name)
    for planned in plan_listing(source, ObjectFilter(config), config.all_files, done):
        obj, action = planned.obj, planned.action
        stats.add("listed")
        fill.add(planned)
        if action == PLAN_SKIP:
            stats.skip(planned.reason or "")
        elif action == PLAN_ARCHIVED:
            stats.archive(obj, planned.reason or SKIP_ARCHIVED)
        elif action == PLAN_DONE:
            stats.add("already_done")
        elif action == PLAN_CHECK_TYPE or planned.ask_archive:   # a dry run asks S3 nothing per object
            untyped += action == PLAN_CHECK_TYPE
            tiered += action != PLAN_CHECK_TYPE
            if shown < 20 or config.verbose:
                shown += 1
                log.info("would copy if S3 says it is %s: %s (%s)", "readable" if planned.ask_archive else
                         "a photo or video", obj.key, format_bytes(obj.size))
        else:
            stats.add("eligible")
            stats.add("eligible_bytes", obj.size)
            again += obj.key in left_drive
            dated = ""
            if config.verbose:   # reads each file's metadata, as a run would (a HEAD and a ranged GET or two)
                date = dry_run_date(dates, planned, config.temp_dir)
                fallbacks += date is not None and date.source == "s3"
                dated = f", date {DATE_SOURCE_NAMES[date.source]}" if date else ", date unknown (S3 refused a read)"
            if shown < 20 or config.verbose:
                shown += 1
                log.info("would copy%s: %s (%s%s)", " again (its copy left Drive)" if obj.key in left_drive else "",
                         obj.key, format_bytes(obj.size), dated)
    counts = stats.as_dict()
    for warning in fill.warnings():
        log.warning("%s", warning)
    if not config.quiet:
        skipped = ", ".join(f"{reason} {n}" for reason, n in sorted(counts["skipped"].items())) or "none"
        print(f"dry run: {counts['listed']} listed, {counts['eligible']} would be copied "
              f"({format_bytes(counts['eligible_bytes'])}"
              + (f"; {again} of them again, their copy left Drive since the last run" if again else "")
              + f"), {counts['already_done']} already done"
              + (f", {untyped} more without an extension if S3 says they are photos or videos" if untyped else "")
              + (f", {tiered} more if S3 says they are not in an archive" if tiered else "")
              + (" (not asked in a dry run)" if untyped or tiered else "")
              + (f"; {fallbacks} would be dated by their S3 upload time, none of the file, a sidecar, a twin, "
                 "its name or S3 metadata telling (listed above)" if config.verbose else "")
              + (f", {counts['archived']} archived ({format_bytes(counts['archived_bytes'])}): they wait for a "
                 "restore" if counts["archived"] else "")
              + f"; skipped: {skipped}. Nothing was written.", file=runtime.out)
    return ExitCode.OK


class DriveCopies(HashedLines):
    """The files of a Drive walk, spilled to an unlinked temporary file, one JSON line each: ~20
    bytes a file in memory instead of the ~2 KB of a parsed listing (a million photos, and a flat
    bucket puts them all in one folder). Found by provenance (whatever the layout and the name),
    or, for files another tool copied, by path. `claimed` marks the lines an S3 object accounted for."""

    def __init__(self, directory: Path | None) -> None:
        super().__init__()
        self._file = tempfile.TemporaryFile(dir=directory)
        self._end = 0
        self._lock = threading.Lock()
        self.claimed = bytearray()

    def add(self, folder: tuple[str, ...], files: list[DriveFile]) -> None:
        """The files of one folder's page. Called from the walk's threads; PERF: one lock a page, the
        lines made outside it (a lock a file had the threads queueing for it and the GIL in turn)."""
        lines, hashes = [], []
        for drive_file in files:
            path = folder + (drive_file.name,)
            lines.append(json.dumps([path, drive_file.id, drive_file.size, drive_file.md5, drive_file.app_properties],
                                    ensure_ascii=False).encode("utf-8") + b"\n")
            source = drive_file.app_properties.get(PROP_SOURCE)
            hashes.append(hash(("source", source)) if source else hash(path))
        with self._lock:
            self._file.write(b"".join(lines))
            self._hashes.extend(hashes)
            for line in lines:
                self._offsets.append(self._end)
                self._end += len(line)

    def seal(self) -> None:  # type: ignore[override]
        self._file.flush()
        super().seal(os.dup(self._file.fileno()))
        self._file.close()
        self.claimed = bytearray(len(self))

    def close(self) -> None:
        self._file.close()   # a walk that failed before seal() leaves it open
        super().close()

    def copies_of(self, source_id: str, path: tuple[str, ...] | None) -> list[tuple[int, DriveFile]]:
        """(position, file) of the files carrying this provenance, or when none does, of the files
        at `path` that carry none (copied by something else)."""
        ours = self._found(hash(("source", source_id)), lambda stored, props: props.get(PROP_SOURCE) == source_id)
        if ours or path is None:
            return ours
        return self._found(hash(path), lambda stored, props: tuple(stored) == path and PROP_SOURCE not in props)

    def _found(self, name_hash: int, wanted: Callable[[list[str], dict[str, str]], bool]) -> list[tuple[int, DriveFile]]:
        found = []
        for position in self._positions(name_hash):
            stored, file_id, size, md5, props = json.loads(self._line(position))
            if wanted(stored, props):
                found.append((position, DriveFile(id=file_id, name=stored[-1], mime_type="", parent_id=None,
                                                  size=size, md5=md5, app_properties=props)))
        return found

    def unclaimed(self, limit: int) -> list[str]:
        """Paths of up to `limit` files no object claimed, in walk order."""
        paths, position = [], self.claimed.find(0)
        while position >= 0 and len(paths) < limit:
            paths.append("/".join(json.loads(self._line(position))[0]))
            position = self.claimed.find(0, position + 1)
        return paths


def walk_drive_tree(api: DriveApi, root_ids: list[str], on_files: Callable[[tuple[str, ...], list[DriveFile]], None],
                    workers: int = DRIVE_PARALLEL_REQUESTS) -> None:
    """Every file under the root (and the folders it continues in), with its folder's path, to
    `on_files` (from the walk's threads, a page at most at a time): one listing per folder,
    DRIVE_PARALLEL_REQUESTS at a time (one at a time, 10,000 folders at 150 ms a request took 25
    minutes; reads are not paced). Pages are handed on as they come, never held. A folder that
    continues a full one ("2019 (2)") is that one's path."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="walk") as pool:
        def listing(folder_id: str, path: tuple[str, ...]) -> concurrent.futures.Future[list[DriveFile]]:
            def subfolders() -> list[DriveFile]:
                found: list[DriveFile] = []
                files: list[DriveFile] = []
                for item in api.list_folder(folder_id):
                    (found if item.is_folder else files).append(item)
                    if len(files) >= DRIVE_PAGE_SIZE:
                        on_files(path, files)
                        files = []
                if files:
                    on_files(path, files)
                return found
            return pool.submit(subfolders)

        pending = {listing(root_id, ()): () for root_id in root_ids}
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                path = pending.pop(future)
                folders = future.result()
                names = {folder.id: folder.name for folder in folders}
                for folder in folders:
                    name = names.get(folder.app_properties.get(PROP_MORE_OF, ""), folder.name)
                    pending[listing(folder.id, path + (name,))] = path + (name,)


def cmd_verify(config: Config, runtime: Runtime) -> ExitCode:
    """Compare S3 with Drive per key: present once at the mirrored path, size and MD5 equal. No writes."""
    source = make_source(config, runtime)
    source.check_access()
    stats = Stats()
    drive, _ = make_drive(config, runtime, stats)
    checkpoint = open_checkpoint(config, create=False) if config.checkpoint_path.exists() else None
    root_id = config.folder_id or (checkpoint.root_folder_id if checkpoint else None)
    if config.folder_id:
        folder = drive.api.get(config.folder_id)
        if folder is None or not folder.is_folder:
            raise UsageError(f"--folder-id {config.folder_id} is not a folder this app can see")
        drive.api.use_shared_drive(folder.drive_id)
    root = (folder if config.folder_id else drive.api.get(root_id) if root_id
            else drive.folders.find_root(config.folder_name))
    copies_found = DriveCopies(config.temp_dir)
    try:
        if root is not None and root.is_folder and not root.trashed:
            walk_drive_tree(drive.api, folder_chain(drive.api, root.id, root.app_properties.get(PROP_NEXT)),
                            copies_found.add)
        copies_found.seal()
        counts, problems, checked, apart = _verify_objects(config, source, checkpoint, copies_found)
        extra_count, extra = copies_found.claimed.count(0), copies_found.unclaimed(VERIFY_DETAILS)
    finally:
        copies_found.close()
    report = {"checked": checked, **{name: counts[name] for name in problems}, "extra": extra_count,
              "archived_not_copied": apart["archived"], "left_out": apart["left_out"],
              "details": {**problems, "extra": extra}}
    clean = not counts
    if config.json_output:
        print(json.dumps(report, indent=1, ensure_ascii=False), file=runtime.out)
    elif not config.quiet:
        print(f"verify: {checked} objects checked; missing {report['missing']}, duplicated {report['duplicated']}, "
              f"mismatched {report['mismatched']}, extra in Drive {report['extra']}"
              + (f", {apart['archived']} archived in S3 (they wait for a restore)" if apart["archived"] else "")
              + (f", {apart['left_out']} removed in Drive and left out (--removed-in-drive leave)"
                 if apart["left_out"] else ""), file=runtime.out)
        for name, items in {**problems, "extra": [{"key": path} for path in extra]}.items():
            for item in items[:VERIFY_SHOWN]:
                print(f"  {name}: {item['key']}" + (f" ({item['problem']})" if "problem" in item else ""),
                      file=runtime.out)
            if (more := report[name] - VERIFY_SHOWN) > 0:
                print(f"  {name}: and {more:,} more (" + ("see --json" if report[name] <= VERIFY_DETAILS else
                      f"--json lists the first {VERIFY_DETAILS}") + ")", file=runtime.out)
    return ExitCode.OK if clean else ExitCode.PARTIAL


def _verify_objects(config: Config, source: S3Source, checkpoint: Checkpoint | None,
                    copies_found: DriveCopies) -> tuple[Counter[str], dict[str, list[dict[str, Any]]], int, Counter[str]]:
    """Each eligible object against its copies in Drive: (problems by kind, the first
    VERIFY_DETAILS of each kind, checked, counted apart: archived, left_out). Counted, not listed:
    a verify half-way through a million photos must not hold half a million "missing" records."""
    counts: Counter[str] = Counter()
    problems: dict[str, list[dict[str, Any]]] = {"missing": [], "duplicated": [], "mismatched": []}

    def report(kind: str, **detail: Any) -> None:
        counts[kind] += 1
        if len(problems[kind]) < VERIFY_DETAILS:
            problems[kind].append(detail)

    checked = 0
    apart: Counter[str] = Counter()
    object_filter = ObjectFilter(config)
    leave = checkpoint is not None and checkpoint.removed_in_drive == REMOVED_LEAVE

    def archived_before(obj: SourceObject) -> bool:
        return recorded_as_archived(checkpoint.get(obj.key) if checkpoint else None, obj)

    for planned in plan_listing(source, object_filter, config.all_files, archived_before=archived_before):
        obj, action = planned.obj, planned.action
        if action == PLAN_SKIP or (action == PLAN_CHECK_TYPE and not _looks_like_media(source, obj)):
            continue
        checked += 1
        located = copies_found.copies_of(source_id_for(config.bucket, obj.key), foreign_path(obj.key, config.layout))
        copies = [drive_file for _, drive_file in located]
        for position, _ in located:
            copies_found.claimed[position] = 1
        if not copies and object_filter.by_date and checkpoint and (entry := checkpoint.get(obj.key)) \
                and entry.status == STATUS_SKIPPED and entry.reason == SKIP_DATE_FILTERED:
            checked -= 1   # read by a transfer and found outside the dates asked for
        elif not copies and (action == PLAN_ARCHIVED or planned.ask_archive and archived_before(obj)):
            apart["archived"] += 1   # unreadable until restored: transfer counts it so too
        elif not copies and planned.ask_archive and _unreadable_archive(source, obj):
            apart["archived"] += 1
        elif not copies and leave and checkpoint is not None and (entry := checkpoint.get(obj.key)) \
                and entry.status == STATUS_SKIPPED and (entry.reason or "").startswith(SKIP_REMOVED) \
                and entry.etag == obj.version:
            apart["left_out"] += 1   # the user removed it in Drive and asked for it to stay removed
        elif not copies:
            report("missing", key=obj.key)
        elif len(copies) > 1:
            report("duplicated", key=obj.key, ids=[f.id for f in copies])
        else:
            problem = _compare_copy(obj, copies[0], checkpoint, source)
            if problem:
                report("mismatched", key=obj.key, id=copies[0].id, problem=problem)
    return counts, problems, checked, apart


def foreign_path(key: str, layout: str) -> tuple[str, ...] | None:
    """Where a copy made by another tool (no provenance) would be found: the mirrored path, or the
    root in the flat layout; in a date layout, nowhere knowable without reading the file."""
    path = drive_path_for(key)
    return path if layout == LAYOUT_MIRROR else path[-1:] if layout == LAYOUT_FLAT else None


def _unreadable_archive(source: S3Source, obj: SourceObject) -> bool:
    try:
        return source.archive_state(obj) != READABLE
    except ObjectError:
        return False


def _looks_like_media(source: S3Source, obj: SourceObject) -> bool:
    try:
        return source.looks_like_media(obj)
    except ObjectError:
        return False


def _compare_copy(obj: SourceObject, drive_file: DriveFile, checkpoint: Checkpoint | None,
                  source: S3Source) -> str | None:
    """What is wrong with this copy of this version of the object, if anything. The MD5 to expect is
    the one recorded when the bytes were sent (provenance, else the checkpoint); an ETag stands in
    only for files copied by something else, and only when S3 says it is an MD5 (not SSE-KMS/SSE-C)."""
    if drive_file.size != obj.size:
        return f"size {drive_file.size} in Drive vs {obj.size} in S3"
    props = drive_file.app_properties
    if PROP_SOURCE in props and props.get(PROP_ETAG) != obj.version:
        return "an older version of the object (its ETag changed in S3); the next transfer updates it"
    entry = checkpoint.get(obj.key) if checkpoint and props.get(PROP_ETAG) != obj.version else None
    if props.get(PROP_ETAG) == obj.version:
        expected = props.get(PROP_MD5)
    elif entry and entry.etag == obj.version and entry.md5:
        expected = entry.md5
    elif etag_is_plain_md5(obj.etag) and etag_is_md5(obj.etag, source.head(obj.key)):
        expected = obj.etag
    else:
        return None   # copied by something else, ETag no MD5: size is all that can be compared
    if drive_file.md5 != expected:
        return f"MD5 {drive_file.md5} in Drive vs {expected} expected"
    return None


def cmd_rollback(config: Config, runtime: Runtime) -> ExitCode:
    """Trash (or delete) what this tool uploaded per the checkpoint; only files carrying our provenance."""
    if not config.checkpoint_path.exists():
        raise UsageError(f"no checkpoint at {config.checkpoint_path}: nothing to roll back")
    def say(text: str) -> None:
        if not config.quiet:
            print(text, file=runtime.out)

    with RunLock(lock_path_for(config)):
        checkpoint = Checkpoint.load(config.checkpoint_path, None)
        run_id = config.rollback_run
        if run_id == "last":   # a nightly run that copied nothing must not make "last" a no-op
            uploaders = [run["id"] for run in checkpoint.runs if (run.get("counts") or {}).get("transferred")
                         or run.get("outcome") in (None, "running", "interrupted")]
            run_id = uploaders[-1] if uploaders else None
            if run_id is None:
                say("rollback: no run uploaded anything")
                return ExitCode.OK

        def targets() -> Iterator[tuple[str, CheckpointEntry]]:
            """A stream (read twice: to count, then to act), so a million entries are never held.
            "sending": a create a killed run may have carried out; removed only if Drive has it."""
            return ((key, entry) for key, entry in checkpoint.entries()
                    if entry.status in (STATUS_DONE, STATUS_SENDING) and entry.drive_id
                    and (run_id is None or entry.run == run_id))

        verb = "delete permanently" if config.permanent else "move to the Drive trash"
        count = sum(1 for _ in targets())
        say(f"rollback: {count} files to {verb}" + (f" (run {run_id})" if run_id else ""))
        if config.dry_run:
            for key, entry in targets():
                say(f"  would {'restore the earlier content of' if entry.replaced else 'remove'}: {key} ({entry.drive_id})")
            return ExitCode.OK
        if not count:
            return ExitCode.OK
        if not config.assume_yes:
            if not runtime.interactive:
                raise UsageError("rollback needs --yes when no terminal is attached")
            first = [key for key, _ in itertools.islice(targets(), VERIFY_SHOWN)]
            say("  " + ", ".join(first) + (f" and {count - len(first):,} more (rollback --dry-run lists them all)"
                                           if count > len(first) else ""))
            answer = input((f"Delete these {count:,} files for good?" if config.permanent else
                            f"Move these {count:,} files to the Drive trash?") + " [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                say("rollback: nothing changed")
                return ExitCode.OK
        stats = Stats()
        drive = make_drive(config, runtime, stats)[0]
        api = drive.api
        bucket = checkpoint.binding["bucket"]
        own_runs = {run["id"] for run in checkpoint.runs}
        rolled_back = own_runs if run_id is None else {run_id}
        staging = make_private_temp_dir(config.temp_dir)

        def restore(key: str, entry: CheckpointEntry, drive_file: DriveFile) -> str:
            """A copy whose earlier content the run replaced gets that content back, as a new
            revision with the provenance it had; the run's revision stays in the file's history."""
            earlier = entry.replaced or {}
            checkpoint.record(key, dataclasses.replace(entry, status=STATUS_ROLLED_BACK, at=utc_now_iso(),
                                                       reason="rolled back: earlier content restored"), durable=True)
            path = staging / f"{drive_file.id}.revision"
            try:
                with open(path, "w+b") as staged:
                    if not api.download_revision(drive_file.id, earlier.get("revision", ""), staged):
                        log.warning("cannot restore %s: Drive no longer has its earlier content (revision %s); "
                                    "it keeps the new content", key, earlier.get("revision"))
                        return "unrestorable"
                    size, md5 = staged.tell(), file_md5(staged)
                if earlier.get("md5") and md5 != earlier["md5"]:
                    log.warning("cannot restore %s: Drive's earlier revision is not the content that was replaced "
                                "(MD5 %s, expected %s); it keeps the new content", key, md5, earlier["md5"])
                    return "unrestorable"
                metadata: dict[str, Any] = {"appProperties": {PROP_ETAG: earlier.get("etag"), PROP_MD5: md5,
                                                              PROP_RUN: earlier.get("run") or None}}
                if earlier.get("modified"):
                    metadata["modifiedTime"] = earlier["modified"]
                restored = drive.uploader.upload(path, size, metadata, drive_file.mime_type, file_id=drive_file.id,
                                                 update=True)
            finally:
                path.unlink(missing_ok=True)
            problem = validate_upload(size, md5, restored)
            if problem:
                log.warning("restoring %s: Drive holds other bytes than were sent: %s", key, problem)
                return "unrestorable"
            return "restored"

        def remove(key: str, entry: CheckpointEntry) -> str:
            drive_file = api.get(entry.drive_id or "")
            if drive_file and drive_file.app_properties.get(PROP_SOURCE) != source_id_for(bucket, key):
                log.warning("not removing %s (%s): it does not carry this tool's provenance", key, entry.drive_id)
                return "refused"
            uploader = drive_file.app_properties.get(PROP_RUN, entry.run) if drive_file else entry.run
            if uploader not in own_runs or (run_id is not None and uploader != run_id):
                # adopted: another checkpoint (another directory, machine) or an earlier run uploaded it
                log.info("keeping %s (%s): uploaded by run %s, not by %s", key, entry.drive_id, uploader,
                         run_id or "this checkpoint's runs")
                return "kept"
            earlier_run = entry.replaced.get("run") if entry.replaced else None
            # rolling back every run: an earlier content of unknown origin went up from here too
            if drive_file and entry.replaced and earlier_run not in rolled_back and (earlier_run or run_id is not None):
                return restore(key, entry, drive_file)
            # Recorded (and fsync'd) before the file goes: a rollback killed here leaves an entry a
            # later transfer checks against Drive, never a trashed photo the checkpoint calls done.
            checkpoint.record(key, dataclasses.replace(entry, status=STATUS_ROLLED_BACK, at=utc_now_iso(),
                                                       reason="rolled back"), durable=True)
            if not drive_file:
                return "gone"
            api.delete(drive_file.id) if config.permanent else api.trash(drive_file.id)
            return "removed"

        # Several files at a time: one at a time, 10,000 files cost 20,000 round trips in a row. The
        # removals are writes, paced with the rest once Drive pushes back.
        outcomes: Counter[str] = Counter()
        pool = concurrent.futures.ThreadPoolExecutor(DRIVE_PARALLEL_REQUESTS, thread_name_prefix="rollback")
        try:
            pending = targets()
            while batch := list(itertools.islice(pending, 1000)):   # map() would submit them all at once
                outcomes.update(pool.map(lambda target: remove(*target), batch))
        finally:
            pool.shutdown(cancel_futures=True)   # an error or Ctrl-C stops what has not started
            checkpoint.finish()
            shutil.rmtree(staging, ignore_errors=True)
        removed, refused, kept = outcomes["removed"], outcomes["refused"], outcomes["kept"]
        # NOTE: under drive.file the user's own files in our folders are invisible to the tool, and
        # trashing or deleting a folder takes everything in it: no folder is ever proven empty.
        say(f"rollback: removed {removed} files; refused {refused} without our provenance"
            + (f"; kept {kept} that another run or checkpoint uploaded (this one found them in Drive)" if kept else "")
            + (f"; restored {outcomes['restored']} to the content the run had replaced" if outcomes["restored"] else "")
            + (f"; could not restore {outcomes['unrestorable']} (see the warnings)" if outcomes["unrestorable"] else "")
            + ". Folders are "
              "left in place: files you added to them are invisible to this tool, and removing a folder "
            "removes everything in it")
        return ExitCode.OK if not (refused or outcomes["unrestorable"]) else ExitCode.PARTIAL


def cmd_status(config: Config, runtime: Runtime) -> ExitCode:
    """What the checkpoint says: per status counts, failure reasons, runs."""
    if not config.checkpoint_path.exists():
        raise UsageError(f"no checkpoint at {config.checkpoint_path}: nothing has run yet (or use --checkpoint)")
    checkpoint = Checkpoint.load(config.checkpoint_path, None, create=False)   # one parse of the snapshot
    live_run = running_now(checkpoint.runs, lock_holder(lock_path_for(config)))
    by_status: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    skip_reasons: Counter[str] = Counter()
    done_bytes = sending_now = archived = 0
    years: Counter[tuple[str, str]] = Counter()   # (capture year, date source) of what is done
    for _, entry in checkpoint.entries(as_data=True):   # a stream: a million are never held at once
        status = entry["status"]
        by_status[status] += 1
        if status == STATUS_DONE:
            done_bytes += entry["size"]
            taken = entry.get("taken") or ""
            years[(taken[:4], taken[11:]) if taken else ("", "not recorded")] += 1
        elif status == STATUS_SENDING and live_run and entry.get("run") == live_run:
            sending_now += 1
        elif status == STATUS_SKIPPED and entry.get("reason") in (SKIP_ARCHIVED, SKIP_RESTORING):
            by_status[status] -= 1   # counted apart, as the run's summary does: they wait, they are not left out
            archived += 1
            reasons[entry["reason"]] += 1
        elif status in (STATUS_FAILED, STATUS_SKIPPED) and entry.get("reason"):
            reasons[entry["reason"]] += 1
            skip_reasons[entry["reason"]] += status == STATUS_SKIPPED
    # Objects the listing passes over (not photos, excluded) have no entry: the last full listing counted them.
    listed = [run["counts"] for run in checkpoint.runs if (run.get("counts") or {}).get("listing_complete")]
    for reason, n in (listed[-1].get("skipped") or {}).items() if listed else ():
        if reason in SKIPPED_UNRECORDED and n > skip_reasons[reason]:
            reasons[reason] += n - skip_reasons[reason]
            by_status[STATUS_SKIPPED] += n - skip_reasons[reason]
    removed = sum(n for reason, n in reasons.items() if reason.startswith(SKIP_REMOVED))
    leave = checkpoint.removed_in_drive == REMOVED_LEAVE
    interrupted = by_status[STATUS_SENDING] - sending_now
    pending = (by_status[STATUS_FAILED] + by_status[STATUS_ROLLED_BACK] + interrupted   # retried next
               + (0 if leave else removed))
    outlook = copy_outlook(checkpoint.runs, done_bytes, config.daily_limit)
    full_folders = {path: len(folder["more"]) for path, folder in checkpoint.folders.items() if folder.get("more")}
    date_sources: Counter[str] = Counter()
    for (_, source), n in years.items():
        date_sources[source] += n
    report = {"binding": checkpoint.binding, "root_folder_id": checkpoint.root_folder_id,
              "objects": dict(by_status), "pending": pending, "done_bytes": done_bytes, "reasons": dict(reasons),
              "removed_in_drive": checkpoint.removed_in_drive, "removed_in_drive_objects": removed,
              "waiting_for_restore": next((run["counts"].get("archived", 0) for run in reversed(checkpoint.runs)
                                           if (run.get("counts") or {}).get("listing_complete")), None),
              "full_folders": full_folders, "date_sources": dict(date_sources), **outlook, "running_now": live_run,
              "runs": [{**run, "outcome": run_outcome(run, live_run)} for run in checkpoint.runs]}
    if config.json_output:
        print(json.dumps(report, indent=1, ensure_ascii=False), file=runtime.out)
        return ExitCode.OK
    binding = checkpoint.binding
    lines = [f"checkpoint {config.checkpoint_path}: s3://{binding.get('bucket')}/{binding.get('prefix')} → "
             f"Drive {binding.get('folder')} ({checkpoint.root_folder_id or 'not created yet'})",
             f"  done {by_status[STATUS_DONE]} ({format_bytes(done_bytes)}), failed {by_status[STATUS_FAILED]}, "
             f"skipped {by_status[STATUS_SKIPPED]}, " + (f"waiting for a restore {archived}, " if archived else "")
             + f"rolled back {by_status[STATUS_ROLLED_BACK]}, "
             + (f"sending {sending_now} now, " if live_run else "")
             + f"interrupted while sending {interrupted}; "
             f"pending {pending} (the next run retries them; objects no run has seen yet: see --dry-run)"]
    lines += [f"  {n} × {reason}" for reason, n in reasons.most_common(10)]
    if date_sources:
        lines.append("  dates of the copies: " + ", ".join(
            f"{date_sources[source]} {DATE_SOURCE_NAMES.get(source, 'not recorded (copied by an older version)')}"
            for source in [*DATE_SOURCE_NAMES, "not recorded"] if date_sources[source]))
    lines.append("  copies removed in Drive: " + (
        f"left out ({removed} now; --removed-in-drive copy brings them back)" if leave else
        f"copied again by the next run ({removed} now; --removed-in-drive leave leaves them out)"))
    if full_folders:
        lines.append("  Drive folders that reached Drive's 500,000 items and continue beside them: " + ", ".join(
            f"{binding.get('folder') if not path else path} (+{n})" for path, n in sorted(full_folders.items())))
    if listed and listed[-1].get("archived"):
        lines.append(f"  as the last run listed S3: {restore_advice(binding.get('bucket') or '', listed[-1])}")
    if outlook["bytes_left"] is not None:
        lines.append(f"  left when the last run listed S3: {format_bytes(outlook['bytes_left'])}"
                     + (f"; observed rate {format_bytes(outlook['rate_bytes_per_s'])}/s while running"
                        if outlook["rate_bytes_per_s"] else "")
                     + (f"; {format_days(outlook['days_left'])} at the daily budget of "
                        f"{format_like(config.daily_limit or 0, config.daily_limit_text)}"
                        if outlook["days_left"] is not None and outlook["bytes_left"] else ""))
    for run in checkpoint.runs[-10:]:
        lines.append(f"  run {run['id']}: {run.get('started', '?')} → {run.get('ended', '(no end recorded)')} "
                     f"{run_outcome(run, live_run)}")
    print("\n".join(lines), file=runtime.out)
    if config.html_path is not None:
        page = status_page(config, report, years, lines, restore_advice(binding.get("bucket") or "", listed[-1])
                           if listed and listed[-1].get("archived") else "")
        try:
            write_atomically(config.html_path, page.encode("utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot write {config.html_path}: {exc.strerror}") from None
        print(f"page written: {config.html_path.absolute().as_uri()}", file=runtime.out)
    return ExitCode.OK


DATE_SOURCE_COLOURS = {"exif": "#2b7bb9", "xmp": "#4f6fd0", "iptc": "#5a8fa8", "video": "#7a5cc0", "sidecar": "#9a6fb0",
                       "pair": "#6d8f3a", "filename": "#1f9e9e", "exif-datetime": "#8fb4d9",
                       "metadata": "#3a9d5d", "s3": "#e08a1e", "not recorded": "#b0b7bf"}


def svg_bars(bars: list[tuple[str, dict[str, float]]], colours: dict[str, str], *, fmt: Callable[[float], str],
             limit: float | None = None, limit_label: str = "", width: int = 760, height: int = 240) -> str:
    """Stacked bars as inline SVG (no script, nothing fetched): one bar per label, a segment per
    series, an optional dashed line for a limit; each bar's figures in its tooltip."""
    top = max([sum(parts.values()) for _, parts in bars] + [limit or 0, 1])
    left, bottom, plot_w, plot_h = 64, 34, width - 74, height - 50
    step = plot_w / max(1, len(bars))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img">',
           f'<line x1="{left}" y1="{10 + plot_h}" x2="{left + plot_w}" y2="{10 + plot_h}" stroke="#888"/>',
           f'<text x="{left - 6}" y="16" text-anchor="end" class="axis">{html.escape(fmt(top))}</text>',
           f'<text x="{left - 6}" y="{10 + plot_h}" text-anchor="end" class="axis">0</text>']
    every = max(1, math.ceil(len(bars) / 12))
    for i, (label, parts) in enumerate(bars):
        x, y = left + i * step + step * 0.12, 10 + plot_h
        tip = f"{label}: " + ", ".join(f"{name} {fmt(v)}" for name, v in parts.items() if v) if any(
            parts.values()) else f"{label}: none"
        out.append(f"<g><title>{html.escape(tip)}</title>")
        for name, value in parts.items():
            h = plot_h * value / top
            if h > 0:
                y -= h
                out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{step * 0.76:.1f}" height="{h:.1f}" '
                           f'fill="{colours.get(name, "#888")}"/>')
        out.append("</g>")
        if i % every == 0:
            out.append(f'<text x="{x + step * 0.38:.1f}" y="{height - 12}" text-anchor="middle" class="axis">'
                       f"{html.escape(label)}</text>")
    if limit:
        y = 10 + plot_h - plot_h * limit / top
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#c0392b" '
                   f'stroke-dasharray="6 4"/><text x="{left + plot_w}" y="{y + 14:.1f}" text-anchor="end" '
                   f'class="limit">{html.escape(limit_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def status_page(config: Config, report: dict[str, Any], years: Counter[tuple[str, str]], text_lines: list[str],
                restore: str, today: dt.date | None = None) -> str:
    """`status --html`: the copy at a glance in one file a browser opens from disk: the counts, bytes
    per day against the daily budget, photos per capture year by where their date came from (a
    spike in the upload year shows dates that fell back), the reasons, and what to do next."""
    today = today or dt.datetime.now().astimezone().date()
    days = [today - dt.timedelta(days=n) for n in range(29, -1, -1)]
    per_day: Counter[dt.date] = Counter()
    for minute, n in sent_by_minute(report["runs"]):
        per_day[dt.datetime.fromtimestamp(minute * 60).astimezone().date()] += n
    sources = [name for name in DATE_SOURCE_COLOURS if any(src == name for _, src in years)]
    year_labels = sorted({year for year, _ in years if year})
    year_bars = [(year, {src: float(years[(year, src)]) for src in sources}) for year in year_labels]
    if years.get(("", "not recorded")):
        year_bars.append(("unknown", {"not recorded": float(years[("", "not recorded")])}))
    objects = report["objects"]
    failed, pending = objects.get(STATUS_FAILED, 0), report["pending"]
    waiting = report.get("waiting_for_restore") or 0
    left = report.get("bytes_left")
    steps = []
    if report.get("running_now"):
        steps.append("A run is copying right now; this page shows the checkpoint as it stood when it was made.")
    if failed:
        steps.append(f"{failed:,} objects failed: the next run retries them. Their reasons are below.")
    if waiting:
        steps.append(restore)
    if left:
        steps.append(f"{format_bytes(left)} left to copy"
                     + (f": {format_days(report['days_left'])} at the daily budget" if report.get("days_left") else "")
                     + ". Keep the cron line; each run continues where the last stopped.")
    if not failed and not left and not pending and left is not None:
        steps.append("Everything listed is copied. Run `python cloud_transfer.py verify` to compare S3 with "
                     "Drive, then remove the cron line.")
    if years.get((str(today.year), "s3")):
        n = years[(str(today.year), "s3")]
        steps.append(f"{n:,} {'file has' if n == 1 else 'files have'} no capture date of its own and "
                     f"{'is' if n == 1 else 'are'} dated by the S3 upload time (the orange part of this year's bar).")
    reasons = report["reasons"]
    tiles = [("done", f"{objects.get(STATUS_DONE, 0):,}", format_bytes(report["done_bytes"])),
             ("left", "unknown" if left is None else format_bytes(left), "as the last run listed S3"),
             ("failed", f"{failed:,}", "retried by the next run"),
             ("waiting for a restore", f"{waiting:,}", "in an S3 archive")]
    limit = config.daily_limit
    binding = report["binding"]
    title = f"s3://{binding.get('bucket')}/{binding.get('prefix') or ''} → Drive {binding.get('folder')}"
    legend = "".join(f'<span><i style="background:{DATE_SOURCE_COLOURS[src]}"></i>{html.escape(src)}</span>'
                     for src in sources)
    made = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>cloud_transfer: {html.escape(title)}</title>
<style>
body{{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:820px;color:#1d2329;background:#fff}}
h1{{font-size:1.3rem}} h2{{font-size:1.05rem;margin-top:2rem}}
.tiles{{display:grid;grid-template-columns:repeat(4,1fr);gap:.8rem}}
.tile{{border:1px solid #d5dbe1;border-radius:8px;padding:.7rem}} .tile b{{display:block;font-size:1.5rem}}
.tile small{{color:#5b6670}} .axis{{font-size:11px;fill:#5b6670}} .limit{{font-size:11px;fill:#c0392b}}
.legend span{{margin-right:1rem}} .legend i{{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem}}
table{{border-collapse:collapse}} td{{padding:.2rem .8rem .2rem 0;vertical-align:top}}
pre{{background:#f4f6f8;padding:.8rem;overflow-x:auto;font-size:12px}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>From checkpoint {html.escape(str(config.checkpoint_path))}, {html.escape(made)}.</p>
<div class="tiles">{"".join(f'<div class="tile">{html.escape(name)}<b>{html.escape(value)}</b><small>{html.escape(note)}</small></div>'
                            for name, value, note in tiles)}</div>
<h2>What to do next</h2>
<ul>{"".join(f"<li>{html.escape(step)}</li>" for step in steps) or "<li>Nothing: no run has listed S3 yet.</li>"}</ul>
<h2>Uploaded per day, last 30 days</h2>
{svg_bars([(day.strftime("%m-%d"), {"sent": float(per_day[day])}) for day in days], {"sent": "#2b7bb9"},
          fmt=lambda v: format_like(v, config.daily_limit_text), limit=limit,
          limit_label=f"--daily-limit {config.daily_limit_text}" if limit else "")}
<h2>Copied photos and videos per capture year, by where the date came from</h2>
<p class="legend">{legend}</p>
{svg_bars(year_bars, DATE_SOURCE_COLOURS, fmt=lambda v: f"{v:,.0f}") if year_bars else "<p>Nothing copied yet.</p>"}
<h2>Failures and skips</h2>
{"<table>" + "".join(f"<tr><td>{n:,}</td><td>{html.escape(reason)}</td></tr>" for reason, n in
                     sorted(reasons.items(), key=lambda item: -item[1])) + "</table>" if reasons else "<p>None.</p>"}
<h2>As the terminal shows it</h2>
<pre>{html.escape(chr(10).join(text_lines))}</pre>
</body></html>
"""


def running_now(runs: list[dict[str, Any]], holder: int | None) -> str | None:
    """The id of the run that is live now: it holds the lock (its pid, for runs that recorded one)."""
    if holder is None or not runs:
        return None
    for run in reversed(runs):
        if run.get("outcome") == "running" and run.get("pid", holder) == holder:
            return run["id"] if "pid" in run or run is runs[-1] else None
    return None


def run_outcome(run: dict[str, Any], live_run: str | None) -> str:
    outcome = run.get("outcome", "")
    if outcome == "running":
        return "running now" if run["id"] == live_run else "stopped without a summary (killed or crashed)"
    return outcome


def format_days(days: float) -> str:
    return ("under an hour" if days < 1 / 24 else f"about {round(days * 24)} hours" if days < 1
            else f"about {days:.1f} days")


def copy_outlook(runs: list[dict[str, Any]], done_bytes: int, daily_limit: int | None) -> dict[str, Any]:
    """What is left as of the last run's listing (status reads no S3), the rate runs have achieved
    while running, and the days left at the daily budget (or at that rate, if slower)."""
    listed = [run for run in runs if (run.get("counts") or {}).get("listing_complete")]   # not one cut short
    left = max(0, listed[-1]["counts"]["eligible_bytes"] - done_bytes) if listed else None
    sent = seconds = 0.0
    for run in runs[-20:]:
        started, ended = parse_utc(run.get("started")), parse_utc(run.get("ended"))
        if started and ended and (run.get("counts") or {}).get("transferred_bytes"):
            sent += run["counts"]["transferred_bytes"]
            seconds += max(1.0, (ended - started).total_seconds())   # times are kept to the second
    rate = sent / seconds if seconds > 0 else None
    per_day = min(x for x in (daily_limit, rate * 86400 if rate else None) if x) if (daily_limit or rate) else None
    return {"bytes_left": left, "rate_bytes_per_s": rate,
            "days_left": left / per_day if left is not None and per_day else None}


def cmd_auth(config: Config, runtime: Runtime) -> ExitCode:
    """Browser consent, then token.json (0600); with a service account, only a check of its key."""
    if config.service_account_path is not None:
        creds = load_service_account(config)
        acting = f", acting for {config.impersonate}" if config.impersonate else ""
        print(f"service account {creds.service_account_email} works{acting}: no token.json is needed",
              file=runtime.out)
        return ExitCode.OK
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)   # the URL must show now, even through a pipe or tee
    run_consent(config)
    print(f"authorised: token saved to {config.token_path}", file=runtime.out)
    return ExitCode.OK


COMMANDS: dict[str, Callable[[Config, Runtime], ExitCode]] = {
    "transfer": cmd_transfer, "verify": cmd_verify, "rollback": cmd_rollback, "status": cmd_status, "auth": cmd_auth,
}

#######################################################################
# main ################################################################
#######################################################################


@contextlib.contextmanager
def handling_signals(handle: Callable[[int, Any], None]) -> Iterator[None]:
    """`handle` SIGINT and SIGTERM while the block runs (Python lets only the main thread do so)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_on_signals(stop: threading.Event) -> contextlib.AbstractContextManager[None]:
    """SIGINT/SIGTERM set `stop` (work in hand finishes or is abandoned, state is flushed); a second
    SIGINT raises KeyboardInterrupt."""
    def handle(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("%s received: stopping after the step in hand (state is saved)", signal.Signals(signum).name)
        stop.set()

    return handling_signals(handle)


def release_freed_memory() -> None:
    """Hand the heap's free memory back to the OS (glibc's malloc_trim). PERF: Python compiles a
    script it runs (no .pyc), and this one's compiler leaves ~20 MiB of freed heap that a run's
    large arrays, allocated elsewhere (mmap), never reuse: a tenth of a million-photo run's peak."""
    if sys.platform.startswith("linux"):   # glibc's; musl has no malloc_trim (AttributeError)
        with contextlib.suppress(ImportError, OSError, AttributeError):
            import ctypes
            ctypes.CDLL(None).malloc_trim(0)


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None, *, own_process: bool = False) -> int:
    """Run one command; returns its exit code. `own_process` (the script itself, not a caller
    using it as a library) lets it end the process at once when work had to be abandoned."""
    if environ is None:
        environ = dict(os.environ)
    if own_process:
        release_freed_memory()
    try:
        config = load_config(argv, environ)
        setup_logging(config)
        for notice in config.notices:
            log.warning("%s", notice)
    except CloudTransferError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    SECRETS.add(*config.secrets())
    runtime = Runtime(interactive=sys.stdin is not None and sys.stdin.isatty(), stop=threading.Event(),
                      progress_bars=sys.stderr.isatty())
    with stop_on_signals(runtime.stop):
        try:
            code = _run_command(config, runtime)
            sys.stdout.flush()   # here, not at exit, where a closed pipe would cost a traceback and exit 120
        except BrokenPipeError:   # `status | head -1`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no complaint at exit either
            code = ExitCode.OK
    if runtime.abandoned_work and own_process:
        # Threads stuck in network calls (s3transfer's are not daemons) would keep this process, and
        # the lock it still holds, alive for minutes; the state is saved, so end it now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run_command(config: Config, runtime: Runtime) -> int:
    """Dispatch, and turn every way of failing into one line and an exit code."""
    try:
        return COMMANDS[config.command](config, runtime)
    except ObjectError as exc:   # a request outside the per-object loop (root, verify, rollback)
        log.error("error: %s", exc)
        return ExitCode.UNAVAILABLE if exc.verdict.action in (Verdict.RETRY, Verdict.RESTART) else exc.exit_code
    except CloudTransferError as exc:
        log.error("error: %s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as exc:  # the last resort: one line, traceback only with --verbose
        log.error("internal error: %s: %s (run with --verbose for details)", type(exc).__name__, exc)
        log.debug("traceback", exc_info=True)
        return ExitCode.INTERNAL


if __name__ == "__main__":
    sys.exit(main(own_process=True))
