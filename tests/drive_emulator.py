"""A Google Drive v3 emulator for tests, built on the standard library only.

Why it exists: cloud_transfer talks to Drive through googleapiclient (resumable
uploads, partial responses, the `q` language, OAuth refresh).  Mocking that
library hides exactly the behaviour that breaks in production: 308 handling,
256 KiB chunk rules, `nextPageToken` only when asked for, error bodies that
`HttpError` parses, rate limits, quota and the daily upload cap.  This module
answers real HTTP on 127.0.0.1 with Drive's paths, status codes and JSON, and
can inject the faults Drive is known for (see `Faults`).

Usage::

    with DriveEmulator() as emu:
        token = emu.issue_token()
        doc = emu.discovery_document()          # bundled drive.v3.json, pointed here
        service = build_from_document(doc, http=AuthorizedHttp(creds, http=build_http()))

Run stand-alone with ``python -m tests.drive_emulator --port 8081``.

Besides faults, `Faults` has switches (off by default) for real Drive behaviour
that makes tests harder to write but catches real bugs:

* ``list_lag_s`` — files.list lags behind writes (files.get does not); tests
  synchronise with ``emu.settle()`` instead of sleeping.
* ``app_visibility`` — the drive.file scope: each OAuth client (``client_id`` of
  the token) sees only the files it created, each user only their own My Drive,
  and ``appProperties`` are private per app.  Tokens come from
  ``issue_token(client_id=..., user_email=..., scope=...)`` or from /token with a
  refresh token registered by ``issue_refresh_token``.
* ``incomplete_search_all_drives`` — ``corpora=allDrives`` answers
  ``incompleteSearch: true`` with part of the result.
* ``reused_id_answer`` — what a create with an id that exists answers (409, or
  a success that creates nothing).

* ``folder_item_limit`` — the per-folder item limit (Drive's is 500,000) lowered so tests
  can reach 403 ``numChildrenInNonRootLimitExceeded``; ``folder_limit_counts_trashed``
  says whether trashed children count (on: the stricter guess).
* ``head_revision_deletable`` — revisions.delete may remove the head while older
  revisions exist (off: refused, the stricter guess).

Two switches are on by default, because real Drive does it and only a few callers
meet it: ``service_account_no_quota`` — a service account owns nothing in a My Drive
(403 ``storageQuotaExceeded``), only in shared drives; ``revision_download_needs_keep_forever``
— revisions.get alt=media serves only revisions marked keepForever.

Changes feed: ``GET /drive/v3/changes/startPageToken`` and ``GET /drive/v3/changes``
(one entry per changed file, latest state, ``removed`` for deleted ones).
``emu.start_page_token()`` gives the current token without HTTP;
``emu.expire_change_tokens()`` makes every token handed out so far invalid.

Revisions: every upload of a binary file makes a head revision (``keepRevisionForever``
pins it); ``GET/PATCH/DELETE /drive/v3/files/{id}/revisions[/{revId}]`` as in v3.
``emu.revisions_of(file_id)`` shows them with their bytes; ``emu.purge_old_revisions()``
does Drive's ~30-day purge of what is neither head nor keepForever at once.

Service accounts: ``register_service_account(email, public_key_pem)`` makes /token
accept the JWT-bearer grant google-auth's ``service_account.Credentials`` sends
(RS256, checked with the standard library); the token speaks for the service
account itself, or for the ``sub`` user once ``allow_delegation`` granted the
scopes.  ``tests/service_accounts.py`` writes a key file and registers it.  Every
API request records the user it spoke for (``requests[i]["user"]``,
``requests_by_user``).

Always on, because real Drive does it: ``name = '...'`` in ``q`` ignores case;
shared drives (``add_shared_drive``) need ``supportsAllDrives`` and the
``corpora``/``driveId``/``includeItemsFromAllDrives`` rules; ``orderBy`` sorts.
The Python helpers (``list_files``, ``path_of``, ``content``) see everything,
with no lag and no per-app view.

Where real Drive's answer was not verifiable, the choice is marked "guess" in a
comment next to it.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import collections
import copy
import dataclasses
import email.message
import hashlib
import hmac
import importlib.util
import json
import quopri
import random
import re
import secrets
import socket
import sys
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, quote, unquote, urlsplit

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

FOLDER_MIME = "application/vnd.google-apps.folder"
#: Real Drive gives My Drive a per-user id like "0AB…Uk9PVA"; the alias "root"
#: is accepted wherever a file id is, and stored parents hold the real id.
ROOT_FOLDER_ID = "0AEmuRootFolderUk9PVA"
CHUNK_GRANULARITY = 256 * 1024  # non-final resumable chunks: multiples of this
MAX_PAGE_SIZE = 1000
MAX_GENERATED_IDS = 1000
MAX_APP_PROPERTIES = 30
MAX_PROPERTY_BYTES = 124  # UTF-8 bytes of key + value
MAX_UPLOAD_SIZE = 5 * 1024**4  # about.maxUploadSize: 5 TB as on real Drive
#: "Each folder in a user's My Drive has a limit of 500,000 items. This limit doesn't apply to
#: the root folder of My Drive." (developers.google.com/workspace/drive/api/guides/folder,
#: "Folder-item limit"); `Faults.folder_item_limit` lowers it for tests.
FOLDER_ITEM_LIMIT = 500_000
#: "Up to 200 revisions can be set to "Keep Forever"" (developers.google.com/workspace/drive/api/
#: guides/manage-revisions; the Revision.keepForever field says the same).
MAX_KEEP_FOREVER_REVISIONS = 200
#: "Purgeable revisions are typically preserved for 30 days, but can be purged earlier if a file
#: has 100 revisions that aren't designated as "Keep Forever" and a new revision is uploaded"
#: (same guide).  guess: the emulator keeps at most this many such revisions, head included,
#: dropping the oldest when an upload would make more.
MAX_PURGEABLE_REVISIONS = 100
MAX_REVISION_PAGE_SIZE = 1000  # revisions.list and changes.list coerce larger pageSize to this

#: Who a token belongs to unless told otherwise (the conftest writes this client id).
DEFAULT_CLIENT_ID = "test-client.apps.googleusercontent.com"
DEFAULT_USER_EMAIL = "emulated.user@example.com"
SCOPE_DRIVE = "https://www.googleapis.com/auth/drive"
SCOPE_DRIVE_FILE = "https://www.googleapis.com/auth/drive.file"
#: Scopes that reach every file of the user, not only the app's own.
WIDE_SCOPES = frozenset({SCOPE_DRIVE, SCOPE_DRIVE + ".readonly", SCOPE_DRIVE + ".metadata",
                         SCOPE_DRIVE + ".metadata.readonly"})
#: files.list `corpora` values (v3 reference).
CORPORA = frozenset({"user", "drive", "allDrives", "domain"})
#: files.list `orderBy` keys documented for v3; anything else is refused.
ORDER_KEYS = frozenset(
    """createdTime folder modifiedByMeTime modifiedTime name name_natural quotaBytesUsed
    recency sharedWithMeTime starred viewedByMeTime""".split()
)

#: Every property of the File schema in the bundled discovery document.  A
#: `fields` selection naming anything else is refused as real Drive does; the
#: ones this emulator does not model are simply absent from responses.
FILE_FIELDS = frozenset(
    """appProperties capabilities clientEncryptionDetails contentHints contentRestrictions
    copyRequiresWriterPermission createdTime description downloadRestrictions driveId
    explicitlyTrashed exportLinks fileExtension folderColorRgb fullFileExtension
    hasAugmentedPermissions hasThumbnail headRevisionId iconLink id imageMediaMetadata
    inheritedPermissionsDisabled isAppAuthorized kind labelInfo lastModifyingUser
    linkShareMetadata md5Checksum mimeType modifiedByMe modifiedByMeTime modifiedTime name
    originalFilename ownedByMe owners parents permissionIds permissions properties
    quotaBytesUsed resourceKey sha1Checksum sha256Checksum shared sharedWithMeTime
    sharingUser shortcutDetails size spaces starred teamDriveId thumbnailLink
    thumbnailVersion trashed trashedTime trashingUser version videoMediaMetadata viewedByMe
    viewedByMeTime viewersCanCopyContent webContentLink webViewLink writersCanShare""".split()
)
FILE_LIST_FIELDS = frozenset({"files", "incompleteSearch", "kind", "nextPageToken"})
ABOUT_FIELDS = frozenset(
    """appInstalled canCreateDrives canCreateTeamDrives driveThemes exportFormats
    folderColorPalette importFormats kind maxImportSizes maxUploadSize storageQuota
    teamDriveThemes user""".split()
)
GENERATED_IDS_FIELDS = frozenset({"ids", "kind", "space"})
#: The Change, ChangeList and StartPageToken schemas of the bundled discovery document.
CHANGE_FIELDS = frozenset(
    "changeType drive driveId file fileId kind removed teamDrive teamDriveId time type".split()
)
CHANGE_LIST_FIELDS = frozenset({"changes", "kind", "newStartPageToken", "nextPageToken"})
START_PAGE_TOKEN_FIELDS = frozenset({"kind", "startPageToken"})
# guess: what changes.list answers without `fields` (the Change keys this emulator models, the file
# with files.get's defaults).
DEFAULT_CHANGE_LIST_FIELDS = ("kind,nextPageToken,newStartPageToken,"
                              "changes(kind,type,changeType,time,removed,fileId,file(kind,id,name,mimeType))")
#: The Revision and RevisionList schemas of the bundled discovery document.
REVISION_FIELDS = frozenset(
    """exportLinks id keepForever kind lastModifyingUser md5Checksum mimeType modifiedTime
    originalFilename publishAuto published publishedLink publishedOutsideDomain size""".split()
)
REVISION_LIST_FIELDS = frozenset({"kind", "nextPageToken", "revisions"})
# "the revisions.list method only returns the id, mimeType, kind, and modifiedTime fields"
# (developers.google.com/workspace/drive/api/guides/manage-revisions); guess: revisions.get the same.
DEFAULT_REVISION_FIELDS = "kind,id,mimeType,modifiedTime"
DEFAULT_REVISION_LIST_FIELDS = f"kind,nextPageToken,revisions({DEFAULT_REVISION_FIELDS})"
#: Fields revisions.update may set on a binary file's revision; the publish* ones concern Docs
#: Editors files only and are accepted and ignored here (guess).
REVISION_WRITABLE = frozenset({"keepForever", "modifiedTime", "published", "publishAuto", "publishedOutsideDomain"})

#: Fields a client may set in files.create; other File fields are output-only.
CREATE_WRITABLE = frozenset(
    """id name mimeType parents description appProperties properties createdTime
    modifiedTime starred originalFilename folderColorRgb contentHints viewedByMeTime
    writersCanShare copyRequiresWriterPermission contentRestrictions shortcutDetails
    kind""".split()
)
#: Fields a client may set in files.update (parents go through add/removeParents).
UPDATE_WRITABLE = frozenset(
    """name mimeType description appProperties properties modifiedTime trashed starred
    originalFilename folderColorRgb contentHints viewedByMeTime writersCanShare
    copyRequiresWriterPermission contentRestrictions kind""".split()
)
DEFAULT_FILE_FIELDS = "kind,id,name,mimeType"
DEFAULT_LIST_FIELDS = "kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)"

AUTH_HELP = (
    "Expected OAuth 2 access token, login cookie or other valid authentication "
    "credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
DAILY_CAP_MESSAGE = "User rate limit exceeded."
QUOTA_MESSAGE = "The user's Drive storage quota has been exceeded."
# Verbatim as Drive answers a service account that creates an item in a My Drive (since
# April 2025: Google's notice quoted in opnsense/core issue #8343; the text as reported in
# Jumbo810/Upload_Github_Artifacts_TO_GDrive issue #22, reason storageQuotaExceeded in
# bskim45/fastlane-plugin-google_drive issue #44).  Some 2026 reports (burnash/gspread
# issue #1592) got QUOTA_MESSAGE instead for the same situation.
SERVICE_ACCOUNT_QUOTA_MESSAGE = (
    "Service Accounts do not have storage quota. Leverage shared drives "
    "(https://developers.google.com/workspace/drive/api/guides/about-shareddrives), or use OAuth "
    "delegation (http://support.google.com/a/answer/7281227) instead."
)

# -- the service-account (JWT bearer, RFC 7523) grant at /token --
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: What google-auth puts in `aud` whatever token URI it posts to
#: (google/oauth2/service_account.py: _GOOGLE_OAUTH2_TOKEN_ENDPOINT).
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
MAX_ASSERTION_LIFETIME_S = 3600  # exp - iat; google-auth signs exactly this
ASSERTION_CLOCK_SKEW_S = 300  # guess: how far in the future iat may be
# Google's texts, as reported: googleapis/google-cloud-python issue #10004 (a key that does
# not sign for the account); googleapis/google-cloud-php issue #3622 (a deleted or disabled
# account); google/oauth2l issue #130 (aud); GoogleCloudPlatform/gce-rescue issue #42 (no
# scope).  The window text is the one many client projects quote for skewed clocks.
JWT_BAD_SIGNATURE = "Invalid JWT Signature."
JWT_NO_ACCOUNT = "Invalid grant: account not found"
JWT_BAD_AUDIENCE = "Invalid JWT: Failed audience check."
JWT_BAD_WINDOW = ("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
                  "timeframe. Check your iat and exp values in the JWT claim.")
JWT_BAD_SCOPE = "Invalid OAuth scope or ID token audience provided."
# A `sub` the account may not speak for (no domain-wide delegation for these scopes): status
# and text as n8n's docs quote Google (n8n-io/n8n-docs, gmail common-issues.md, "401 -
# {...}").  Older answers end after "this method."; Google's OAuth guide words it
# "Unauthorized client or scope in request." (not verified against a live answer).
DELEGATION_DENIED = ("Client is unauthorized to retrieve access tokens using this method, or client "
                     "not authorized for any of the scopes requested.")
USER_RATE_MESSAGE = (
    "User rate limit exceeded for quota metric 'Write requests' and limit "
    "'Write requests per minute per user' of service 'drive.googleapis.com' for "
    "consumer 'project_number:000000000000'."
)
RATE_429_MESSAGE = (
    "Quota exceeded for quota metric 'Write requests' and limit 'Write requests per "
    "minute' of service 'drive.googleapis.com' for consumer 'project_number:000000000000'."
)
# Verbatim from Drive's "Resolve errors" guide (developers.google.com/workspace/drive/api/guides/
# handle-errors, numChildrenInNonRootLimitExceeded): 403, domain global.
FOLDER_LIMIT_MESSAGE = "The limit for this folder's number of children (files and folders) has been exceeded."
# Same guide, illegalKeepForeverModification (400, domain global).
KEEP_FOREVER_OFF_MESSAGE = "Bad Request. Cannot update a revision to false that is marked as keepForever."
# Same guide, downloadRestrictedForRevision: 403, and the reason really is written
# "download_restricted_for_revision" in its JSON sample.
REVISION_DOWNLOAD_MESSAGE = "This revision cannot be downloaded by the authenticated user."
# Google's front end answers 502 with an HTML page, not JSON: clients must cope.
HTML_502 = (
    b"<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
    b"  <title>Error 502 (Server Error)!!1</title>\n"
    b"  <p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins>\n"
    b"  <p>The server encountered a temporary error and could not complete your request."
    b"<p>Please try again in 30 seconds.  <ins>That\xe2\x80\x99s all we know.</ins>\n"
)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


class ApiError(Exception):
    """A Drive error answer; rendered in the JSON shape googleapiclient parses.

    `HttpError.reason` takes `error.message`; `HttpError.error_details` takes
    `error.errors` (no `details` key is sent, so `errors` wins).
    """

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str | None = None,
        detail_message: str | None = None,
        status: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.detail_message = detail_message or message
        self.status = status
        self.headers = headers or {}

    def body(self) -> dict:
        detail: dict[str, Any] = {
            "message": self.detail_message,
            "domain": self.domain,
            "reason": self.reason,
        }
        if self.location:
            detail["location"] = self.location
            detail["locationType"] = self.location_type or "parameter"
        error: dict[str, Any] = {"code": self.code, "message": self.message, "errors": [detail]}
        if self.status:
            error["status"] = self.status
        return {"error": error}


def api_disabled_error(project: str) -> ApiError:
    """The Drive API disabled in the client's Cloud project. Body as quoted in transloadit/uppy#1300
    (errors[0]: domain usageLimits, reason accessNotConfigured) and openclaw/gogcli#489 (2026: "403
    accessNotConfigured: Google Drive API has not been used in project N before or it is disabled");
    the status PERMISSION_DENIED is that of Google's newer error bodies (guess for Drive v3)."""
    url = f"https://console.developers.google.com/apis/api/drive.googleapis.com/overview?project={project}"
    message = (f"Google Drive API has not been used in project {project} before or it is disabled. Enable it by "
               f"visiting {url} then retry. If you enabled this API recently, wait a few minutes for the action "
               "to propagate to our systems and retry.")
    return ApiError(403, "accessNotConfigured", message, domain="usageLimits", status="PERMISSION_DENIED")


def not_found(file_id: str) -> ApiError:
    msg = f"File not found: {file_id}."
    return ApiError(404, "notFound", msg, location="fileId", location_type="parameter")


def revision_not_found(revision_id: str) -> ApiError:
    # GAM maps a 404 notFound whose message has "Revision not found" to its own revisionNotFound
    # (GAM-team/GAM, src/gam/gamlib/glgapi.py, REASON_MESSAGE_MAP); the rest of the text and the
    # location mirror not_found (guess).
    return ApiError(404, "notFound", f"Revision not found: {revision_id}.",
                    location="revisionId", location_type="parameter")


def folder_full_error() -> ApiError:
    return ApiError(403, "numChildrenInNonRootLimitExceeded", FOLDER_LIMIT_MESSAGE)


def keep_forever_limit_error() -> ApiError:
    # guess: the limit (200) is documented; status, reason and text are not ("If the limit is
    # reached, try deleting pinned revisions", files.update's keepRevisionForever).
    return ApiError(403, "keepForeverRevisionLimitExceeded",
                    f"A file can have at most {MAX_KEEP_FOREVER_REVISIONS} revisions marked as keepForever. "
                    "Delete some revisions marked as keepForever.")


def bad_request(message: str, reason: str = "badRequest", **kw: Any) -> ApiError:
    return ApiError(400, reason, message, **kw)


def invalid_param(name: str, message: str = "Invalid Value") -> ApiError:
    return ApiError(400, "invalid", message, location=name, location_type="parameter")


def parse_error() -> ApiError:
    return ApiError(400, "parseError", "Parse Error")


def not_writable(message: str = "The resource body includes fields which are not directly writable.") -> ApiError:
    return ApiError(403, "fieldNotWritable", message)


def storage_quota_error() -> ApiError:
    return ApiError(403, "storageQuotaExceeded", QUOTA_MESSAGE, domain="usageLimits")


def service_account_quota_error() -> ApiError:
    # guess: the domain; the 403 and the reason are reported (see SERVICE_ACCOUNT_QUOTA_MESSAGE),
    # and gspread issue #1592 saw usageLimits on the older-worded answer to the same create.
    return ApiError(403, "storageQuotaExceeded", SERVICE_ACCOUNT_QUOTA_MESSAGE, domain="usageLimits")


def generic_error(code: int) -> ApiError:
    """The body Drive sends for a bare status (used by error_rate and fail_paths)."""
    table = {
        400: ("badRequest", "Bad Request"),
        401: ("authError", "Invalid Credentials"),
        403: ("forbidden", "Forbidden"),
        404: ("notFound", "Not Found"),
        409: ("conflict", "Conflict"),
        429: ("rateLimitExceeded", "Rate Limit Exceeded"),
        500: ("internalError", "Internal Error"),
        503: ("backendError", "The service is currently unavailable."),
    }
    reason, message = table.get(code, ("backendError", "Backend Error"))
    domain = "usageLimits" if code == 429 else "global"
    return ApiError(code, reason, message, domain=domain)


# ---------------------------------------------------------------------------
# Small helpers: time, ids, hashing
# ---------------------------------------------------------------------------


def rfc3339(dt: datetime) -> str:
    """Drive's timestamp form: UTC, milliseconds, trailing Z."""
    dt = dt.astimezone(timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def now_rfc3339() -> str:
    return rfc3339(datetime.now(timezone.utc))


_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|z|[+-]\d{2}:\d{2})?)?$"
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time (a missing zone means UTC, as Drive documents)."""
    m = _RFC3339.match(text.strip()) if isinstance(text, str) else None
    if not m:
        raise ValueError(text)
    y, mo, d, h, mi, s, frac, zone = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if zone and zone not in "Zz":
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    return datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0), micro, tz)


def new_file_id() -> str:
    """33 url-safe characters starting with "1", the shape of modern Drive ids."""
    return "1" + secrets.token_urlsafe(24)


def digests(content: bytes) -> dict[str, str]:
    return {
        "size": str(len(content)),
        "md5Checksum": hashlib.md5(content).hexdigest(),
        "sha1Checksum": hashlib.sha1(content).hexdigest(),
        "sha256Checksum": hashlib.sha256(content).hexdigest(),
    }


def is_google_type(mime: str) -> bool:
    """Folders and Docs-editor types carry no bytes, hence no size or checksums."""
    return mime.startswith("application/vnd.google-apps.")


# ---------------------------------------------------------------------------
# Partial responses: the `fields` selector
# ---------------------------------------------------------------------------


FieldTree = dict  # name -> FieldTree | None (None: the whole value)


def parse_fields(spec: str) -> FieldTree:
    """Parse `a,b/c,files(id,name),*` into a tree; raise ValueError on bad syntax."""
    tokens = re.findall(r"[A-Za-z0-9_*]+|[/,()]|\S", spec)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(spec)
        pos += 1
        return tokens[pos - 1]

    def name() -> str:
        tok = take()
        if not re.fullmatch(r"[A-Za-z0-9_*]+", tok):
            raise ValueError(tok)
        return tok

    def merge(tree: FieldTree, path: list[str], sub: FieldTree | None) -> None:
        for part in path[:-1]:
            node = tree.get(part, {})
            if node is None:  # already whole: nothing narrower matters
                return
            tree[part] = node
            tree = node
        last = path[-1]
        if sub is None or tree.get(last, {}) is None:
            tree[last] = None
        else:
            node = tree.setdefault(last, {})
            for key, value in sub.items():
                merge(node, [key], value)

    def selection() -> FieldTree:
        tree: FieldTree = {}
        while True:
            path = [name()]
            while peek() == "/":
                take()
                path.append(name())
            sub = None
            if peek() == "(":
                take()
                sub = selection()
                if take() != ")":
                    raise ValueError(spec)
            merge(tree, path, sub)
            if peek() != ",":
                return tree
            take()

    tree = selection()
    if peek() is not None:
        raise ValueError(spec)
    return tree


def select_fields(value: Any, tree: FieldTree | None) -> Any:
    """Apply a parsed selection to a JSON value (lists apply it to each item)."""
    if tree is None:
        return value
    if isinstance(value, list):
        return [select_fields(v, tree) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    if "*" in tree:
        for key, item in value.items():
            out[key] = select_fields(item, tree["*"])
    for key, sub in tree.items():
        if key != "*" and key in value:
            out[key] = select_fields(value[key], sub)
    return out


def checked_fields(
    spec: str | None, default: str, allowed: frozenset, nested: dict[str, Any] | None = None
) -> FieldTree:
    """Parse `fields` (or the method's default) and refuse names the schema lacks.

    `nested` maps a field to the names allowed inside it: a frozenset, or a pair
    (frozenset, nested) for a deeper level (changes(file(...)))."""

    def invalid(what: str) -> ApiError:
        return ApiError(400, "invalidParameter", f"Invalid field selection {what}",
                        location="fields", location_type="parameter")

    try:
        tree = parse_fields(spec if spec else default)
    except ValueError:
        raise invalid(spec or "") from None

    def check(node: FieldTree, names: frozenset, inner: dict[str, Any]) -> None:
        for key, sub in node.items():
            if key != "*" and key not in names:
                raise invalid(key)
            if sub and key in inner:
                spec = inner[key]
                if isinstance(spec, tuple):
                    check(sub, spec[0], spec[1])
                else:
                    check(sub, spec, {})

    check(tree, allowed, nested or {})
    return tree


# ---------------------------------------------------------------------------
# The `q` query language: tokenizer + recursive-descent parser
# ---------------------------------------------------------------------------


class QueryError(ValueError):
    """Any syntax or semantic problem in `q`; Drive answers 400 "Invalid Value"."""


Predicate = Callable[[dict], bool]


def tokenize_query(q: str) -> list[tuple[str, Any]]:
    """Split `q` into (kind, value) tokens: str, op, word, punctuation, eof.

    Strings are single-quoted; inside them only `\\'` and `\\\\` are escapes.
    """
    tokens: list[tuple[str, Any]] = []
    i, n = 0, len(q)
    while i < n:
        c = q[i]
        if c.isspace():
            i += 1
        elif c == "'":
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise QueryError("unterminated string")
                c = q[i]
                if c == "\\":
                    if i + 1 >= n or q[i + 1] not in "'\\":
                        raise QueryError("bad escape")
                    buf.append(q[i + 1])
                    i += 2
                elif c == "'":
                    i += 1
                    break
                else:
                    buf.append(c)
                    i += 1
            tokens.append(("str", "".join(buf)))
        elif q.startswith(("!=", "<=", ">="), i):
            tokens.append(("op", q[i : i + 2]))
            i += 2
        elif c in "=<>":
            tokens.append(("op", c))
            i += 1
        elif c in "(){}":
            tokens.append((c, c))
            i += 1
        elif c.isalpha() or c == "_":
            j = i
            while j < n and (q[j].isalnum() or q[j] == "_"):
                j += 1
            tokens.append(("word", q[i:j]))
            i = j
        else:
            raise QueryError(f"unexpected character {c!r}")
    tokens.append(("eof", None))
    return tokens


def _word_starts(text: str) -> list[int]:
    """Indexes where a word starts (start of text, or alnum after non-alnum)."""
    return [i for i, c in enumerate(text) if c.isalnum() and (i == 0 or not text[i - 1].isalnum())] or [0]


def name_contains(name: str, needle: str) -> bool:
    """Drive's `name contains` is prefix matching on words, case-insensitive.

    Documented: for "HelloWorld", 'Hello' matches and 'World' does not.  Matching
    at every word start is this emulator's reading of "prefix" for multi-word names.
    """
    hay, needle = name.casefold(), needle.casefold()
    return any(hay.startswith(needle, i) for i in _word_starts(hay))


def full_text_contains(text: str, needle: str) -> bool:
    """Approximation of `fullText contains`: whole-word (phrase) match, any case."""
    hay, needle = text.casefold(), needle.casefold().strip()
    if not needle:
        return False
    for i in _word_starts(hay):
        end = i + len(needle)
        if hay.startswith(needle, i) and (end >= len(hay) or not hay[end].isalnum()):
            return True
    return False


class QueryParser:
    """Recursive descent over the tokens; builds a predicate on stored files.

    Grammar (precedence: not > and > or)::

        expr    := and ('or' and)*
        and     := unary ('and' unary)*
        unary   := 'not' unary | '(' expr ')' | term
        term    := STR 'in' 'parents'
                 | ('name'|'mimeType') ('='|'!='|'contains') STR
                 | 'fullText' 'contains' STR
                 | ('trashed'|'starred') ('='|'!=') ('true'|'false')
                 | ('modifiedTime'|'createdTime') CMP STR
                 | ('appProperties'|'properties') 'has' '{' 'key' '=' STR 'and' 'value' '=' STR '}'
    """

    COMPARE = {
        "=": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }

    def __init__(self, q: str, resolve_id: Callable[[str], str]):
        self.tokens = tokenize_query(q)
        self.pos = 0
        self.resolve_id = resolve_id

    def parse(self) -> Predicate:
        pred = self.expr()
        self.expect("eof")
        return pred

    # -- token helpers
    def peek(self) -> tuple[str, Any]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, Any]:
        tok = self.tokens[self.pos]
        if tok[0] != "eof":
            self.pos += 1
        return tok

    def expect(self, kind: str, value: str | None = None) -> Any:
        tok = self.take()
        if tok[0] != kind or (value is not None and tok[1] != value):
            raise QueryError(f"expected {value or kind}, got {tok[1]!r}")
        return tok[1]

    def is_keyword(self, word: str) -> bool:
        kind, value = self.peek()
        return kind == "word" and value.lower() == word

    def keyword(self, word: str) -> None:
        if not self.is_keyword(word):
            raise QueryError(f"expected {word}")
        self.take()

    # -- grammar
    def expr(self) -> Predicate:
        parts = [self.conjunction()]
        while self.is_keyword("or"):
            self.take()
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda f: any(p(f) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.unary()]
        while self.is_keyword("and"):
            self.take()
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda f: all(p(f) for p in parts))

    def unary(self) -> Predicate:
        if self.is_keyword("not"):
            self.take()
            inner = self.unary()
            return lambda f: not inner(f)
        if self.peek()[0] == "(":
            self.take()
            inner = self.expr()
            self.expect(")")
            return inner
        return self.term()

    def term(self) -> Predicate:
        kind, value = self.take()
        if kind == "str":
            self.keyword("in")
            if self.expect("word") != "parents":
                raise QueryError("only 'parents' supports 'in'")
            parent = self.resolve_id(value)
            return lambda f: parent in f.get("parents", [])
        if kind != "word":
            raise QueryError(f"unexpected {value!r}")
        field = value
        if field in ("name", "mimeType"):
            if self.is_keyword("contains"):
                self.take()
                needle = self.expect("str")
                if field == "name":
                    return lambda f: name_contains(f["name"], needle)
                return lambda f: needle in f["mimeType"]
            op = self.expect("op")
            if op not in ("=", "!="):
                raise QueryError(f"{field} does not support {op}")
            text = self.expect("str")
            cmp = self.COMPARE[op]
            if field == "name":
                # Real Drive matches `name =` regardless of case (rclone re-checks the case of
                # what it gets back: see API-NOTES); S3 keys are case-sensitive, so this bites.
                folded = text.casefold()
                return lambda f: cmp(f["name"].casefold(), folded)
            return lambda f: cmp(f[field], text)
        if field == "fullText":
            self.keyword("contains")
            needle = self.expect("str")
            return lambda f: full_text_contains(f["name"], needle) or full_text_contains(
                f.get("description", ""), needle
            )
        if field in ("trashed", "starred"):
            op = self.expect("op")
            if op not in ("=", "!="):
                raise QueryError(f"{field} does not support {op}")
            word = self.expect("word").lower()
            if word not in ("true", "false"):
                raise QueryError("expected true or false")
            flag, cmp = word == "true", self.COMPARE[op]
            return lambda f: cmp(bool(f.get(field, False)), flag)
        if field in ("modifiedTime", "createdTime"):
            op = self.expect("op")
            try:
                when = parse_rfc3339(self.expect("str"))
            except ValueError:
                raise QueryError("bad date") from None
            cmp = self.COMPARE[op]
            return lambda f: cmp(parse_rfc3339(f[field]), when)
        if field in ("appProperties", "properties"):
            self.keyword("has")
            self.expect("{")
            self.keyword("key")
            self.expect("op", "=")
            key = self.expect("str")
            self.keyword("and")
            self.keyword("value")
            self.expect("op", "=")
            val = self.expect("str")
            self.expect("}")
            return lambda f: (f.get(field) or {}).get(key) == val
        raise QueryError(f"unknown field {field!r}")


def uses_full_text(q: str) -> bool:
    """Whether `q` has a fullText term (Drive then refuses orderBy)."""
    return any(kind == "word" and value == "fullText" for kind, value in tokenize_query(q))


def parse_order_by(spec: str) -> list[tuple[str, bool]]:
    """`folder,modifiedTime desc,name` -> [(key, descending), ...]; ValueError if unknown."""
    keys = []
    for part in spec.split(","):
        words = part.split()
        # Only the documented form: a key, optionally followed by `desc`.
        if not words or words[0] not in ORDER_KEYS or words[1:] not in ([], ["desc"]):
            raise ValueError(part)
        keys.append((words[0], words[1:] == ["desc"]))
    return keys


def _natural(text: str) -> list:
    """name_natural: digit runs compare as numbers (1, 2, 12, 22)."""
    return [(0, int(tok), "") if tok.isdigit() else (1, 0, tok) for tok in re.findall(r"\d+|\D+", text.casefold())]


def order_value(view: dict, key: str) -> Any:
    """The value one `orderBy` key sorts a file resource by."""
    if key == "folder":
        # guess: the reference says "the folder ID", but Drive's UIs and clients use it
        # to list folders before files; that is what this does.
        return view["mimeType"] != FOLDER_MIME
    if key == "name":
        return view["name"].casefold()  # guess: case plays no part, as in Drive's UI
    if key == "name_natural":
        return _natural(view["name"])
    if key == "quotaBytesUsed":
        return int(view.get("quotaBytesUsed", "0"))
    if key == "starred":
        return bool(view.get("starred"))
    if key == "recency":
        return max(view.get(k, "") for k in ("modifiedTime", "modifiedByMeTime", "viewedByMeTime", "createdTime"))
    return view.get(key, "")  # times: stored in one RFC 3339 form, so text order is time order


# ---------------------------------------------------------------------------
# multipart/related bodies (uploadType=multipart)
# ---------------------------------------------------------------------------


def parse_multipart_related(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """Split a multipart body into (headers, payload) parts.

    googleapiclient writes it with the email package: LF line ends, the media
    part marked `Content-Transfer-Encoding: binary`.  Other clients use CRLF;
    the style is taken from the first delimiter line so a payload ending in CR
    is never trimmed by mistake.  base64 and quoted-printable parts are decoded.
    """
    msg = email.message.Message()
    msg["content-type"] = content_type
    boundary = msg.get_param("boundary")
    if msg.get_content_type() not in ("multipart/related", "multipart/mixed") or not boundary:
        raise bad_request("Invalid multipart request with 0 mime parts.", "badContent")
    delim = b"--" + str(boundary).encode("latin-1")
    start = body.find(delim)
    if start < 0 or (start > 0 and body[start - 1 : start] != b"\n"):
        raise bad_request("Invalid multipart request with 0 mime parts.", "badContent")
    after = start + len(delim)
    eol = b"\r\n" if body[after : after + 2] == b"\r\n" else b"\n"
    separator = eol + delim
    malformed = bad_request("Malformed multipart body.", "badContent")
    parts = []
    pos = after
    while not body.startswith(b"--", pos):  # "--" after a delimiter closes the body
        if not body.startswith(eol, pos):
            raise malformed
        pos += len(eol)
        if body.startswith(eol, pos):  # a part without headers
            head, payload_start = b"", pos + len(eol)
        else:
            head_end = body.find(eol + eol, pos)
            if head_end < 0:
                raise malformed
            head, payload_start = body[pos:head_end], head_end + 2 * len(eol)
        headers = {}
        for line in head.split(eol):
            if line.strip():
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
        # Search from the blank line's own EOL: an empty payload shares it with
        # the next delimiter.
        nxt = body.find(separator, payload_start - len(eol))
        if nxt < 0:
            raise malformed
        payload = body[payload_start:nxt] if nxt >= payload_start else b""
        encoding = headers.get("content-transfer-encoding", "binary").lower()
        try:
            if encoding == "base64":
                payload = base64.b64decode(payload, validate=False)
            elif encoding == "quoted-printable":
                payload = quopri.decodestring(payload)
        except (binascii.Error, ValueError):
            raise bad_request("Invalid base64 in multipart body.", "badContent") from None
        parts.append((headers, payload))
        pos = nxt + len(separator)
    return parts


# ---------------------------------------------------------------------------
# Service-account assertions: RS256 JWTs, checked with the standard library
# ---------------------------------------------------------------------------

#: DER prefix of a SHA-256 DigestInfo (RFC 8017, section 9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")
_RSA_ENCRYPTION_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1


def _der(data: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """The content of the DER element of type `tag` at `pos`, and where the next one starts."""
    if pos + 2 > len(data) or data[pos] != tag:
        raise ValueError("unexpected DER element")
    length, pos = data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length, pos = int.from_bytes(data[pos : pos + count], "big"), pos + count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return data[pos : pos + length], pos + length


def rsa_public_key(pem: str | bytes) -> tuple[int, int]:
    """(n, e) of an RSA public key in PEM: SubjectPublicKeyInfo ("PUBLIC KEY", what
    `cryptography` writes) or PKCS#1 ("RSA PUBLIC KEY").  ValueError for anything else."""
    text = pem.decode("ascii") if isinstance(pem, bytes) else pem
    m = re.search(r"-----BEGIN (RSA )?PUBLIC KEY-----(.*?)-----END (?:RSA )?PUBLIC KEY-----", text, re.S)
    if not m:
        raise ValueError("not a PEM public key")
    try:
        der = base64.b64decode("".join(m.group(2).split()), validate=True)
    except binascii.Error:
        raise ValueError("bad base64 in PEM") from None
    if not m.group(1):  # SubjectPublicKeyInfo: the RSAPublicKey sits in its BIT STRING
        spki, _ = _der(der, 0, 0x30)
        algorithm, pos = _der(spki, 0, 0x30)
        if _der(algorithm, 0, 0x06)[0] != _RSA_ENCRYPTION_OID:
            raise ValueError("not an RSA key")
        bits, _ = _der(spki, pos, 0x03)
        if not bits or bits[0] != 0:
            raise ValueError("bad BIT STRING")
        der = bits[1:]
    seq, _ = _der(der, 0, 0x30)
    n, pos = _der(seq, 0, 0x02)
    e, _ = _der(seq, pos, 0x02)
    return int.from_bytes(n, "big"), int.from_bytes(e, "big")


def rs256_valid(key: tuple[int, int], signed: bytes, signature: bytes) -> bool:
    """RSASSA-PKCS1-v1_5 verification with SHA-256 (RFC 8017, section 8.2.2), which is
    what JWS calls RS256 (RFC 7518, section 3.3)."""
    n, e = key
    k = (n.bit_length() + 7) // 8
    digest_info = _SHA256_DIGEST_INFO + hashlib.sha256(signed).digest()
    if len(signature) != k or k < len(digest_info) + 11:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    expected = b"\x00\x01" + b"\xff" * (k - len(digest_info) - 3) + b"\x00" + digest_info
    return hmac.compare_digest(pow(s, e, n).to_bytes(k, "big"), expected)


def _b64url(segment: str) -> bytes:
    """Unpadded base64url (RFC 7515, section 2), strictly: other characters are an error."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", segment):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def decode_jwt(assertion: str) -> tuple[dict, dict, bytes, bytes]:
    """(header, claims, signed bytes, signature) of a compact JWS; ValueError if malformed.
    Nothing is verified here."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS")
    try:
        header, claims = json.loads(_b64url(parts[0])), json.loads(_b64url(parts[1]))
        signature = _b64url(parts[2])
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("bad JWS segment") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("JWS segments must be JSON objects")
    return header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature


# ---------------------------------------------------------------------------
# Faults and upload sessions
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class Faults:
    """Switches for Drive's failure modes; all off by default except
    `service_account_no_quota`, which only service-account callers meet, and
    `revision_download_needs_keep_forever`, which only revision downloads meet.

    Tests mutate these fields while the server runs.  Random choices come from
    `random.Random(seed)`, re-seeded whenever `seed` changes or a new Faults
    object is assigned to `emu.faults`, so the same requests in the same order
    fire the same faults.  What fired is counted in `DriveEmulator.fault_counts`
    under the key named in each comment.
    """

    latency_s: float = 0.0  # slept before every API/upload answer ("latency")
    # Token bucket on creations (files.create, every upload create incl. resumable
    # initiation).  Over it: 403 userRateLimitExceeded ("rate_limit_403") and 429
    # rateLimitExceeded ("rate_limit_429") alternate, starting with 403.
    create_rate_per_s: float | None = None
    create_burst: int = 10
    retry_after_s: float | None = None  # adds Retry-After (formatted with :g) to those
    error_rate: float = 0.0  # API/upload requests answered 500/502/503 ("server_error_<code>")
    # API/upload requests answered 403 userRateLimitExceeded or 429 at random, with no limit
    # being hit ("random_rate_limit"): Google's "additional rate limit checks on the Drive
    # backend" (developers.google.com/drive/api/guides/limits) are not a token bucket we can see.
    rate_limit_rate: float = 0.0
    drop_rate: float = 0.0  # socket closed after reading the request, nothing done ("drop")
    # Emulator addition: the request IS processed (file created, chunk stored) but
    # the answer is lost ("drop_response") — how duplicates happen on real Drive.
    drop_response_rate: float = 0.0
    # Chunk PUTs that store only a 256 KiB-multiple prefix and answer 308 ("partial_chunk").
    partial_chunk_rate: float = 0.0
    # Edge-triggered: when seen switched on, every session existing at that moment
    # answers 404 from then on ("expired_session"); sessions started later work.
    expire_sessions: bool = False
    storage_quota_bytes: int | None = None  # 403 storageQuotaExceeded ("storage_quota")
    # Bytes uploaded since reset; once above, new uploads are refused at initiation
    # with 403 userRateLimitExceeded "User rate limit exceeded." ("daily_cap").
    daily_upload_cap_bytes: int | None = None
    # The next N upload answers that include md5Checksum report a wrong one ("wrong_md5").
    wrong_md5_count: int = 0
    # regex (re.search on the request target incl. query string) -> status ("fail_path")
    fail_paths: dict = dataclasses.field(default_factory=dict)
    # The Cloud project number of an OAuth client whose project has the Drive API disabled: every
    # API and upload request answers 403 accessNotConfigured ("api_disabled"), as Drive does.
    api_disabled_project: str | None = None
    seed: int = 0

    # -- real Drive behaviour (not faults, but off by default so older tests stay simple) --
    # files.list is not read-after-write consistent (kopia issue #90; rclone's Drive docs):
    # for this many seconds after a file is created, or its parents or trashed state change,
    # lists show its old state (absent, for a new file); files.get is current at once.
    # float("inf") lags until emu.settle().  add_file/add_folder lag like API creates.
    # Each list answer an item is wrong in (left out, or still listed) counts once
    # ("list_lag").
    list_lag_s: float = 0.0
    # drive.file scope: a token sees only files its OAuth client created (others answer
    # 404 as if missing), only its own user's My Drive, and only its own app's
    # appProperties (a wide scope such as .../auth/drive sees every file of the user,
    # still with only its own appProperties).  Off: every token sees everything.
    app_visibility: bool = False
    # files.get("root") under drive.file answers 404, as rclone found (rclone commit
    # 1e423d21e, 2019: "With scope drive.files this fails with a 404"); whether it still
    # does is unknown, so the tool must cope with both answers.  Off: My Drive's top.
    root_hidden_under_drive_file: bool = False
    # A folder trashed, moved or deleted is one change in the feed, for the folder alone,
    # its descendants none (rclone PR #2606: "When moving a directory in drive, most of
    # the time only a notification for the directory itself is created").  Whether Drive
    # lists descendants is not documented.  Off: each descendant whose state changed is a
    # change too.
    folder_changes_only: bool = False
    # corpora=allDrives answers incompleteSearch: true and leaves out every second
    # matching item ("incomplete_search" counts the left-out ones).
    incomplete_search_all_drives: bool = False
    # A create with an id that already exists: "409" (fileIdInUse), or "success": 200 with
    # the EXISTING file's resource and nothing created, as some clients report.
    reused_id_answer: str = "409"
    # On by default: real Drive does it, and only service-account callers meet it.  Service
    # accounts have no storage quota: "New service accounts will not be able to own any Drive
    # items" (Google's notice for accounts created from April 15, 2025, quoted in opnsense/core
    # issue #8343; older accounts kept 15 GB, but reports from July 2025 on, e.g.
    # jsmaskeen/sa-drive issue #31, show old ones refused too).  So a service account (its own
    # token, not one impersonating a user) creating anything whose home is a My Drive -- its
    # own, or a user's folder it can reach -- gets 403 storageQuotaExceeded with
    # SERVICE_ACCOUNT_QUOTA_MESSAGE, folders and Google types included ("any Drive items";
    # mcp-google-sheets issue #40 for a spreadsheet), uploads at initiation; in a shared drive
    # the drive owns the item, and creating there works.  about.get shows it a quota
    # `limit` of "0".  Counted as "service_account_quota".
    service_account_no_quota: bool = True
    # Per-folder item limit: a create into, or a move (addParents) into, a folder that already
    # holds this many children answers 403 numChildrenInNonRootLimitExceeded with
    # FOLDER_LIMIT_MESSAGE ("folder_item_limit").  None: Drive's own 500,000 (FOLDER_ITEM_LIMIT).
    # My Drive's root and a shared drive's top are exempt; the Python helpers (add_file) too.
    # guess: folders inside shared drives are held to it as well (the guide speaks of My Drive).
    folder_item_limit: int | None = None
    # Whether trashed children count toward that limit.  The guides list what counts ("Folders",
    # "Files. All file types, regardless of file ownership.", shortcuts) and say nothing of the
    # trash; guess (stricter): a trashed item still sits in its folder, so it counts.
    folder_limit_counts_trashed: bool = True
    # On by default, because Google documents it: "You can only download blob file content
    # revisions marked as "Keep Forever"" (developers.google.com/workspace/drive/api/guides/
    # manage-revisions); revisions.get alt=media on any other revision answers 403
    # download_restricted_for_revision (handle-errors guide).  A 2025 report agrees ("While the
    # revision ID is available, the content is not", eight04/db-to-cloud PR #28).  guess
    # (stricter): the head revision too; files.get alt=media always gives the head's bytes.
    revision_download_needs_keep_forever: bool = True
    # revisions.delete on the head revision while older ones exist.  Documented: only "the last
    # remaining revision of the binary file" can't be deleted.  guess (stricter, off): refused
    # like the only revision; on: the newest older revision becomes the head (the file's bytes,
    # checksums and headRevisionId go back to it, a change the feed records).
    head_revision_deletable: bool = False


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who a request comes from: the OAuth client ("app"), the user, the granted scopes.

    `client_id` None stands for the user's own web UI (files made there belong to
    no app)."""

    client_id: str | None = DEFAULT_CLIENT_ID
    user_email: str = DEFAULT_USER_EMAIL
    scope: str = SCOPE_DRIVE_FILE

    @property
    def sees_all(self) -> bool:
        return bool(set(self.scope.split()) & WIDE_SCOPES)


@dataclasses.dataclass
class ServiceAccount:
    """A service account /token knows: its address, its OAuth client id (the "app" its
    tokens act as), its public keys, and the scopes a Workspace admin let it use for
    domain-wide delegation (None: no delegation at all)."""

    client_email: str
    client_id: str
    keys: list[tuple[str | None, tuple[int, int]]]  # (private_key_id or None: any kid, (n, e))
    delegated_scopes: frozenset[str] | None = None


def user_resource(email: str, me: bool) -> dict:
    """A drive#user; the permission id is derived from the address so it is stable."""
    default = email == DEFAULT_USER_EMAIL
    return {
        "kind": "drive#user",
        "displayName": "Emulated User" if default else email.split("@")[0].replace(".", " ").title(),
        "emailAddress": email,
        "me": me,
        "permissionId": str(int(hashlib.sha256(email.encode()).hexdigest(), 16))[:20],
    }


class _IdReused(Exception):
    """A create named an id that exists and `reused_id_answer` is "success"."""

    def __init__(self, existing: dict):
        super().__init__(existing["id"])
        self.existing = existing


@dataclasses.dataclass
class UploadSession:
    """State of one resumable upload; the file exists only once it completes."""

    upload_id: str
    create: dict | None  # validated create metadata, or None for an update
    file_id: str | None  # the file being updated (update sessions)
    patch: dict | None  # validated update metadata
    media_mime: str
    fields: str | None  # `fields` of the initiating request, used for the final answer
    declared_size: int | None  # X-Upload-Content-Length
    total: int | None = None  # total size once a Content-Range told it
    data: bytearray = dataclasses.field(default_factory=bytearray)
    done_file_id: str | None = None
    expired: bool = False
    caller: Caller | None = None  # who initiated it: the file will be that app's


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------


class Reply:
    """An HTTP answer: status, body bytes, extra headers (Content-Length is added)."""

    def __init__(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                 reason: str | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.reason = reason

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> "Reply":
        body = json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8")
        hdrs = {"Content-Type": "application/json; charset=UTF-8"}
        hdrs.update(headers or {})
        return cls(status, body, hdrs)

    @classmethod
    def error(cls, err: ApiError) -> "Reply":
        return cls.json(err.code, err.body(), err.headers)


class _Drop(Exception):
    """Raised to close the connection without an answer."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as httplib2 expects
    server_version = "ESF"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are closed after this

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without NODELAY, Nagle plus
        # the client's delayed ACK costs ~40 ms per request.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.connection, False)

    def _any(self) -> None:
        self.server.emulator._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature fixed
        """Silence the default stderr access log; `emu.requests` records requests."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up (dropped faults, stop(), test teardown) is normal
        here; anything else still gets socketserver's traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


# ---------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------


class DriveEmulator:
    """An in-memory Drive v3 answering HTTP on 127.0.0.1.

    State is guarded by `lock` (an RLock); tests may read `files`, `requests`,
    `fault_counts` under it and mutate `faults` at any time.
    """

    def __init__(self, port: int = 0, *, require_auth: bool = True, body_timeout_s: float = 2.0):
        """`body_timeout_s`: how long a request body may stall before the socket is
        closed.  It matters because httplib2 silently re-sends a request whose
        connection dropped, but an upload stream it already consumed goes out as
        an empty body under the old Content-Length: a real server times that out.
        """
        self.port = port
        self.require_auth = require_auth
        self.body_timeout_s = body_timeout_s
        self.lock = threading.RLock()
        self.faults = Faults()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        # access token -> (refresh token it came from, who it speaks for)
        self._access_tokens: dict[str, tuple[str | None, Caller]] = {}
        self._refresh_grants: dict[str, Caller] = {}  # refresh tokens registered for a user
        self._revoked_refresh: set[str] = set()
        self._auth_codes: dict[str, tuple[str, str]] = {}  # code -> (user, scope)
        self._service_accounts: dict[str, ServiceAccount] = {}  # client_email -> account
        # Access tokens /token minted from a refresh token or a service account's JWT (both are
        # what google-auth calls a refresh).
        self.token_refreshes = 0
        self.files: dict[str, dict] = {}
        self.shared_drives: dict[str, dict] = {}  # driveId -> {"name", "createdTime"}
        self.upload_sessions: dict[str, UploadSession] = {}
        self.requests: list[dict] = []
        self.fault_counts: dict[str, int] = {}
        # Tracebacks of emulator bugs (answered 500); a test can assert it stays empty.
        self.internal_errors: list[str] = []
        # Test hooks, called on the server thread: on_request(record) once a request's body is read,
        # before_reply(record, reply) after Drive did its work and before the answer is sent (a
        # test kills the client there to be "after Drive accepted it, before the client knew").
        self.on_request: Callable[[dict], None] | None = None
        self.before_reply: Callable[[dict, Reply], None] | None = None
        self.reset()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "DriveEmulator":
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.emulator = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="drive-emulator",
                                        daemon=True)  # short poll: quick stop()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections, so a stopped emulator
        looks like a dead server instead of answering on pooled sockets."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self.lock:
            conns = list(self._connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> "DriveEmulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("DriveEmulator is not started")
        return f"http://127.0.0.1:{self.port}"

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self.lock:
            (self._connections.add if alive else self._connections.discard)(conn)

    # -- state & Python API ------------------------------------------------

    def reset(self) -> None:
        """Drop all files, sessions, requests, generated ids, counters and faults
        (containers are cleared in place).  Access and refresh tokens survive, so
        clients built before keep working."""
        with self.lock:
            self.files.clear()
            self.shared_drives.clear()
            self.upload_sessions.clear()
            self.requests.clear()
            self.fault_counts.clear()
            self.internal_errors.clear()
            self.faults = Faults()
            self.uploaded_bytes = 0
            self._generated_ids: set[str] = set()
            self._rng = random.Random(0)
            self._rng_owner: tuple[Faults, int] | None = None  # (faults object, seed) it was seeded for
            self._bucket: tuple[tuple, float, float] | None = None  # (params, tokens, time)
            self._rate_limit_hits = 0
            self._expire_seen = False
            # file id -> (monotonic time of its last list-visible change, the state lists
            # still show: None while it is too new to be listed at all)
            self._list_lag: dict[str, tuple[float, dict | None]] = {}
            # The changes feed: file id -> its latest change (seq, time, removed, and who may see
            # it: _app, _owner, driveId), kept in seq order (a file changed again moves to the end,
            # which is how one entry per file comes about).  Tokens are seq numbers as strings.
            self._changes: dict[str, dict] = {}
            self._change_seq = 0
            self._change_token_floor = 1  # tokens below this were expired by expire_change_tokens()

    def issue_token(self, access_token: str | None = None, *, client_id: str = DEFAULT_CLIENT_ID,
                    user_email: str = DEFAULT_USER_EMAIL, scope: str = SCOPE_DRIVE_FILE) -> str:
        """Register (or mint) an access token that the API accepts, for that OAuth client
        (the "app"), user and scopes (space-separated)."""
        token = access_token or "ya29.emu-" + secrets.token_urlsafe(24)
        with self.lock:
            self._access_tokens[token] = (None, Caller(client_id, user_email, scope))
        return token

    def issue_refresh_token(self, refresh_token: str | None = None, *, client_id: str = DEFAULT_CLIENT_ID,
                            user_email: str = DEFAULT_USER_EMAIL, scope: str = SCOPE_DRIVE_FILE) -> str:
        """Register a refresh token granted to `client_id` for that user and scopes.  /token
        then mints access tokens for them, and refuses the token from another client as
        Google does.  Unregistered refresh tokens keep working for the default user."""
        token = refresh_token or "1//emu-" + secrets.token_urlsafe(24)
        with self.lock:
            self._refresh_grants[token] = Caller(client_id, user_email, scope)
        return token

    def issue_auth_code(self, *, user_email: str = DEFAULT_USER_EMAIL, scope: str = SCOPE_DRIVE_FILE) -> str:
        """A one-time authorization code, as Google's consent page hands to the redirect URI
        once `user_email` granted `scope`; the client is the one that redeems it."""
        code = "4/emu-" + secrets.token_urlsafe(16)
        with self.lock:
            self._auth_codes[code] = (user_email, scope)
        return code

    def register_service_account(self, client_email: str, public_key_pem: str | bytes, *,
                                 client_id: str | None = None, key_id: str | None = None) -> str:
        """Let /token accept JWTs that `client_email` signs with this key (an RSA public key
        in PEM).  `key_id` is the key file's private_key_id, which google-auth sends as the
        JWT's `kid` (None: the key answers any kid).  Registering again adds a key, as a
        second key of the same account does on Google.  `client_id` is the account's OAuth
        client id (21 digits on Google; derived from the address if not given), the "app"
        its tokens act as.  Returns the client id."""
        key = rsa_public_key(public_key_pem)
        derived = str(int(hashlib.sha256(client_email.encode()).hexdigest(), 16))[:21]
        with self.lock:
            account = self._service_accounts.get(client_email)
            if account is None:
                account = ServiceAccount(client_email, client_id or derived, [])
                self._service_accounts[client_email] = account
            elif client_id is not None and client_id != account.client_id:
                raise ValueError(f"{client_email} is registered with client id {account.client_id}")
            account.keys.append((key_id, key))
            return account.client_id

    def allow_delegation(self, client_email: str, scopes: str | list[str] | tuple[str, ...]) -> None:
        """Domain-wide delegation, as a Workspace admin grants it to the account's client
        id: from now on its JWTs may name a user in `sub` when they ask for no scope beyond
        `scopes` (a list, or space-separated).  Granting again replaces the scopes."""
        granted = frozenset(scopes.split() if isinstance(scopes, str) else scopes)
        with self.lock:
            if client_email not in self._service_accounts:
                raise KeyError(f"no service account {client_email} (register_service_account first)")
            self._service_accounts[client_email].delegated_scopes = granted

    def _is_service_account(self, email: str) -> bool:
        """A registered service account, or any address in Google's domain for them (so a
        token from issue_token(user_email=...) can stand for one too)."""
        return email in self._service_accounts or email.endswith(".gserviceaccount.com")

    @property
    def requests_by_user(self) -> collections.Counter:
        """How many API requests spoke for each user (the `user` of `requests`): the
        service account itself, or the user it impersonates.  Refused tokens count nowhere."""
        with self.lock:
            return collections.Counter(r["user"] for r in self.requests if r.get("user"))

    def revoke_refresh_token(self, refresh_token: str) -> None:
        """/token answers invalid_grant for it from now on, and the access tokens
        minted from it stop working (as revoking a grant does on Google)."""
        with self.lock:
            self._revoked_refresh.add(refresh_token)
            for tok, (rt, _) in list(self._access_tokens.items()):
                if rt == refresh_token:
                    del self._access_tokens[tok]

    def expire_access_tokens(self) -> None:
        """Every access token now gets 401, as after its hour is up; clients holding
        a refresh token recover through /token."""
        with self.lock:
            self._access_tokens.clear()

    def expire_all_sessions(self) -> None:
        """Every resumable session that exists now answers 404 from now on."""
        with self.lock:
            for sess in self.upload_sessions.values():
                sess.expired = True

    def start_page_token(self) -> str:
        """The token changes.getStartPageToken would answer now (changes after this moment)."""
        with self.lock:
            return str(self._change_seq + 1)

    def expire_change_tokens(self) -> None:
        """Every changes token handed out so far (start tokens, nextPageToken, newStartPageToken)
        is refused from now on with 400 invalid on `pageToken`; a new getStartPageToken works.

        Not real Drive as documented ("The page token doesn't expire", StartPageToken and
        ChangeList in the v3 reference): a stricter world for clients that must cope with a token
        the service rejects, which the older ChangeList docs told them to expect ("If the token is
        rejected for any reason, it should be discarded")."""
        with self.lock:
            self._change_token_floor = self._change_seq + 1

    def revisions_of(self, file_id: str) -> list[dict]:
        """Snapshots of a binary file's revisions, oldest first (the last is the head): id,
        modifiedTime, keepForever, md5Checksum, size, mimeType, originalFilename, content (bytes)
        and head (bool).  KeyError for an unknown id; [] for folders and Google types."""
        with self.lock:
            revs = self.files[file_id].get("_revisions") or []
            return [dict({k: v for k, v in r.items() if not k.startswith("_")}, head=i == len(revs) - 1)
                    for i, r in enumerate(revs)]

    def purge_old_revisions(self, file_id: str | None = None) -> int:
        """What Drive does about 30 days after newer content was uploaded: drop every revision
        that is neither the head nor keepForever (of one file, or of all).  Returns how many
        went.  Purging changes no file, so the changes feed records nothing."""
        with self.lock:
            purged = 0
            for f in [self.files[file_id]] if file_id is not None else list(self.files.values()):
                revs = f.get("_revisions") or []
                keep = [r for r in revs[:-1] if r["keepForever"]] + revs[-1:]
                purged += len(revs) - len(keep)
                if revs:
                    f["_revisions"] = keep
            return purged

    def clear_requests(self) -> None:
        with self.lock:
            self.requests.clear()

    def settle(self) -> None:
        """Let files.list catch up with every write so far (see `Faults.list_lag_s`)."""
        with self.lock:
            self._list_lag.clear()

    def list_files(self, include_trashed: bool = False) -> list[dict]:
        """Snapshot (deep copies, without content) of stored resources, in creation order.
        Omniscient: no list lag, every app's files, all apps' appProperties merged."""
        with self.lock:
            return [self._snapshot(f) for f in self.files.values() if include_trashed or not f["trashed"]]

    def files_of_app(self, client_id: str | None, include_trashed: bool = False) -> list[dict]:
        """Like list_files, only the files that OAuth client created (None: the web UI's)."""
        with self.lock:
            return [self._snapshot(f) for f in self.files.values()
                    if f["_app"] == client_id and (include_trashed or not f["trashed"])]

    def _snapshot(self, f: dict) -> dict:
        out = {k: v for k, v in f.items() if k != "content" and not k.startswith("_")}
        props = self._app_props_view(f, None)
        if props:
            out["appProperties"] = props
        return copy.deepcopy(out)

    def content(self, file_id: str) -> bytes:
        with self.lock:
            return bytes(self.files[file_id]["content"])

    def path_of(self, file_id: str) -> str:
        """Names from the top folder down to the file, My Drive itself excluded:
        a file in folder Trip in folder 2019 at the top gives "2019/Trip/IMG_1.jpg".
        KeyError for an unknown id."""
        names = []
        with self.lock:
            if file_id not in self.files:
                raise KeyError(file_id)
            current: str | None = file_id
            seen = set()
            while current and current in self.files and current not in seen:
                seen.add(current)
                f = self.files[current]
                names.append(f["name"])
                current = f["parents"][0] if f.get("parents") else None
        return "/".join(reversed(names))

    def add_folder(self, name: str, parent_id: str | None = None, **fields: Any) -> dict:
        """Create a folder directly (no HTTP, no faults); returns the resource."""
        return self.add_file(name, b"", parent_id, mimeType=FOLDER_MIME, **fields)

    def add_file(self, name: str, content: bytes = b"", parent_id: str | None = None, *,
                 app: str | None = None, owner: str = DEFAULT_USER_EMAIL, **fields: Any) -> dict:
        """Create a file directly (no HTTP, no faults).  `fields` are create metadata
        such as mimeType, appProperties, modifiedTime; returns the resource.  `app` is
        the OAuth client id that made it (None: the user, in Drive's web UI), `owner`
        the user whose My Drive holds it; appProperties are stored as that app's."""
        meta = dict(fields, name=name)
        if parent_id:
            meta["parents"] = [parent_id]
        with self.lock:
            norm = self._validate_create(meta, None, origin=Caller(app, owner, SCOPE_DRIVE))
            f = self._commit_create(norm, content, fields.get("mimeType") or "application/octet-stream")
            return self._snapshot(f)

    def user_edit(self, file_id: str, *, name: str | None = None, move_to: str | None = None,
                  trashed: bool | None = None) -> dict:
        """What the user does in Drive's web UI (rename, move, trash/restore), through the same
        checks and side effects as files.update (list lag, changes feed, descendants)."""
        meta: dict[str, Any] = {}
        query: dict[str, str] = {}
        if name is not None:
            meta["name"] = name
        if trashed is not None:
            meta["trashed"] = trashed
        web_ui = Caller(None, DEFAULT_USER_EMAIL, SCOPE_DRIVE)
        with self.lock:
            f = self._lookup(file_id, web_ui, True)
            if move_to is not None:
                query = {"addParents": move_to, "removeParents": ",".join(f.get("parents") or [])}
            self._apply_patch(f, self._validate_patch(f, meta, query, web_ui), None, None)
            return self._snapshot(f)

    def user_delete(self, file_id: str) -> None:
        """Delete forever, as the user does by emptying the trash (descendants go too)."""
        self._delete(file_id, {"supportsAllDrives": "true"}, Caller(None, DEFAULT_USER_EMAIL, SCOPE_DRIVE))

    def add_shared_drive(self, name: str) -> str:
        """Create a shared drive (every user is taken to be a member); returns its id,
        which is also the id of its top folder (the `parents` of what is made in it)."""
        drive_id = "0A" + secrets.token_urlsafe(8)[:11] + "Uk9PVA"  # shape of real driveIds
        with self.lock:
            self.shared_drives[drive_id] = {"name": name, "createdTime": now_rfc3339()}
        return drive_id

    def discovery_document(self) -> dict:
        """The discovery document bundled with googleapiclient, pointed at this
        emulator (found without importing googleapiclient, which this module avoids)."""
        spec = importlib.util.find_spec("googleapiclient")
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("googleapiclient is not installed")
        path = Path(list(spec.submodule_search_locations)[0]) / "discovery_cache" / "documents" / "drive.v3.json"
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["rootUrl"] = doc["mtlsRootUrl"] = self.url + "/"
        doc["baseUrl"] = self.url + "/drive/v3/"
        return doc

    # -- request entry point -------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        """Read one request, run faults and the route, send (or drop) the answer."""
        split = urlsplit(handler.path)
        path = unquote(split.path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        record = {
            "method": handler.command,
            "path": path,
            "query": query,
            "status": None,
            "host": handler.headers.get("Host", ""),
            "content_range": handler.headers.get("Content-Range"),  # shows resumable status queries
            # Who an API request spoke for, once its token was accepted (the user; the OAuth
            # client the token belongs to): None for /token and for refused requests.
            "user": None,
            "client_id": None,
            "at": time.monotonic(),   # when the request line arrived; "body_at": its body's last byte
        }
        with self.lock:
            self.requests.append(record)
        try:
            body = self._read_body(handler)
            record["body_bytes"] = len(body)
            record["body_at"] = time.monotonic()
        except (TimeoutError, OSError, ValueError):
            self._count("incomplete_body")  # stalled past body_timeout_s, or cut off
            handler.close_connection = True
            return
        is_api = path.startswith(("/drive/v3/", "/upload/drive/v3/"))
        if self.on_request is not None:
            self.on_request(record)
        try:
            reply = self._respond(handler, record, path, split.query, query, body, is_api)
        except _Drop:
            handler.close_connection = True
            return
        with self.lock:
            record["status"] = reply.status
        if self.before_reply is not None:
            self.before_reply(record, reply)
        self._send(handler, reply)

    def _respond(self, handler: _Handler, record: dict, path: str, raw_query: str, query: dict,
                 body: bytes, is_api: bool) -> Reply:
        if is_api and self._chance("drop_rate"):
            self._count("drop")
            raise _Drop
        try:
            reply = self._faulted_or_routed(handler, record, path, raw_query, query, body, is_api)
        except ApiError as err:
            reply = Reply.error(err)
        except Exception:  # an emulator bug: answer like Drive would, but keep the evidence
            trace = traceback.format_exc()
            with self.lock:
                self.internal_errors.append(trace)
            sys.stderr.write(f"drive emulator internal error:\n{trace}")
            reply = Reply.error(generic_error(500))
        if is_api:
            if self._chance("drop_response_rate"):
                self._count("drop_response")
                raise _Drop
            latency = self.faults.latency_s
            if latency > 0:
                self._count("latency")
                time.sleep(latency)
        return reply

    def _faulted_or_routed(self, handler: _Handler, record: dict, path: str, raw_query: str, query: dict,
                           body: bytes, is_api: bool) -> Reply:
        target = path + ("?" + raw_query if raw_query else "")
        caller = Caller()
        if is_api:
            self._apply_expire_switch()
            caller = self._check_auth(handler.headers.get("Authorization"), query)
            with self.lock:
                record["user"], record["client_id"] = caller.user_email, caller.client_id
        if is_api and self.faults.api_disabled_project:
            self._count("api_disabled")
            raise api_disabled_error(self.faults.api_disabled_project)
        for pattern, status in list(self.faults.fail_paths.items()):
            if re.search(pattern, target):
                self._count("fail_path")
                return self._status_reply(int(status))
        if is_api and self._chance("error_rate"):
            with self.lock:
                status = self._rng.choice((500, 502, 503))
            self._count(f"server_error_{status}")
            return self._status_reply(status)
        if is_api and self._chance("rate_limit_rate"):
            self._count("random_rate_limit")
            with self.lock:
                use_403 = self._rng.random() < 0.5
            if use_403:
                raise ApiError(403, "userRateLimitExceeded", USER_RATE_MESSAGE, domain="usageLimits")
            raise ApiError(429, "rateLimitExceeded", RATE_429_MESSAGE, domain="usageLimits", status="RESOURCE_EXHAUSTED")
        return self._route(handler, path, query, body, caller)

    def _status_reply(self, status: int) -> Reply:
        if status == 502:
            return Reply(502, HTML_502, {"Content-Type": "text/html; charset=UTF-8"})
        return Reply.error(generic_error(status))

    def _read_body(self, handler: _Handler) -> bytes:
        conn = handler.connection
        conn.settimeout(self.body_timeout_s)
        try:
            if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = bytearray()
                while True:
                    size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return bytes(out)
                    out += handler.rfile.read(size)
                    handler.rfile.readline()
            length = int(handler.headers.get("Content-Length") or 0)
            data = handler.rfile.read(length) if length else b""
            if len(data) != length:
                raise ValueError("short body")
            return data
        finally:
            conn.settimeout(handler.timeout)

    def _send(self, handler: _Handler, reply: Reply) -> None:
        handler.send_response(reply.status, reply.reason)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        if reply.body:
            handler.wfile.write(reply.body)

    # -- faults & auth -----------------------------------------------------

    def _count(self, key: str) -> None:
        with self.lock:
            self.fault_counts[key] = self.fault_counts.get(key, 0) + 1

    def _chance(self, rate_field: str) -> bool:
        """One seeded draw for a rate fault; no draw at all when it is off, so
        switching one fault on does not shift the others' sequence."""
        rate = getattr(self.faults, rate_field)
        if rate <= 0:
            return False
        with self.lock:
            owner = self._rng_owner
            if owner is None or owner[0] is not self.faults or owner[1] != self.faults.seed:
                self._rng_owner = (self.faults, self.faults.seed)
                self._rng = random.Random(self.faults.seed)
            return self._rng.random() < rate

    def _check_auth(self, header: str | None, query: dict) -> Caller:
        """Who the request speaks for (the default app and user when auth is off)."""
        token = None
        if header and header.lower().startswith("bearer "):
            token = header[7:].strip()
        elif "access_token" in query:  # Google APIs also take the token as a parameter
            token = query["access_token"]
        with self.lock:
            grant = self._access_tokens.get(token) if token else None
        if grant is not None:
            return grant[1]
        if not self.require_auth:
            return Caller()
        www = {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'}
        if not token:
            raise ApiError(
                401, "required", "Request is missing required authentication credential. " + AUTH_HELP,
                detail_message="Login Required.", location="Authorization", location_type="header",
                status="UNAUTHENTICATED", headers={"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        raise ApiError(
            401, "authError", "Request had invalid authentication credentials. " + AUTH_HELP,
            detail_message="Invalid Credentials", location="Authorization", location_type="header",
            status="UNAUTHENTICATED", headers=www,
        )

    def _check_create_rate(self) -> None:
        """Token bucket on creations; refusals alternate 403 and 429."""
        f = self.faults
        if f.create_rate_per_s is None:
            return
        now = time.monotonic()
        with self.lock:
            params = (f.create_rate_per_s, f.create_burst)
            if self._bucket is None or self._bucket[0] != params:
                self._bucket = (params, float(f.create_burst), now)
            _, tokens, then = self._bucket
            tokens = min(float(f.create_burst), tokens + (now - then) * f.create_rate_per_s)
            if tokens >= 1:
                self._bucket = (params, tokens - 1, now)
                return
            self._bucket = (params, tokens, now)
            hit = self._rate_limit_hits
            self._rate_limit_hits += 1
        headers = {"Retry-After": f"{f.retry_after_s:g}"} if f.retry_after_s is not None else {}
        if hit % 2 == 0:
            self._count("rate_limit_403")
            raise ApiError(403, "userRateLimitExceeded", USER_RATE_MESSAGE, domain="usageLimits",
                           headers=headers)
        self._count("rate_limit_429")
        raise ApiError(429, "rateLimitExceeded", RATE_429_MESSAGE, domain="usageLimits",
                       status="RESOURCE_EXHAUSTED", headers=headers)

    def _check_daily_cap(self) -> None:
        cap = self.faults.daily_upload_cap_bytes
        if cap is not None and self.uploaded_bytes > cap:
            self._count("daily_cap")
            raise ApiError(403, "userRateLimitExceeded", DAILY_CAP_MESSAGE, domain="usageLimits")

    def _usage(self) -> int:
        return sum(self._quota_bytes(f) for f in self.files.values())

    @staticmethod
    def _quota_bytes(f: dict) -> int:
        """quotaBytesUsed: "the head revision as well as previous revisions with `keepForever`
        enabled" (File.quotaBytesUsed in the v3 reference); other old revisions are free."""
        if is_google_type(f["mimeType"]):
            return 0
        revs = f.get("_revisions") or []
        return len(f["content"]) + sum(len(r["content"]) for r in revs[:-1] if r["keepForever"])

    @staticmethod
    def _freed_by_new_revision(f: dict) -> int:
        """Bytes a new head frees: the old head's, unless it is kept forever."""
        revs = f.get("_revisions") or []
        return 0 if revs and revs[-1]["keepForever"] else len(f["content"])

    def _check_storage(self, extra_bytes: int) -> None:
        quota = self.faults.storage_quota_bytes
        if quota is not None and self._usage() + extra_bytes > quota:
            self._count("storage_quota")
            raise storage_quota_error()

    # -- routing -------------------------------------------------------------

    def _route(self, handler: _Handler, path: str, query: dict, body: bytes, caller: Caller) -> Reply:
        method = handler.command
        headers = handler.headers
        if path == "/token":
            if method != "POST":
                raise generic_error(404)
            return self._token(body, headers.get("Host"))
        if path == "/drive/v3/about" and method == "GET":
            return self._about(query, caller)
        if path == "/drive/v3/files":
            if method == "GET":
                return self._list(query, caller)
            if method == "POST":
                return self._create(query, body, caller)
        elif path == "/drive/v3/files/generateIds" and method == "GET":
            return self._generate_ids(query)
        elif path == "/drive/v3/changes/startPageToken" and method == "GET":
            return self._start_page_token(query)
        elif path == "/drive/v3/changes" and method == "GET":
            return self._changes_list(query, caller)
        elif path.startswith("/drive/v3/files/"):
            file_id = path[len("/drive/v3/files/"):]
            if "/" not in file_id:
                if method == "GET":
                    return self._get(file_id, query, headers, caller)
                if method == "PATCH":
                    return self._update(file_id, query, body, caller)
                if method == "DELETE":
                    return self._delete(file_id, query, caller)
            parts = file_id.split("/")
            if len(parts) == 2 and parts[1] == "revisions" and method == "GET":
                return self._revisions_list(parts[0], query, caller)
            if len(parts) == 3 and parts[1] == "revisions" and parts[0] and parts[2]:
                if method == "GET":
                    return self._revision_get(parts[0], parts[2], query, headers, caller)
                if method == "PATCH":
                    return self._revision_update(parts[0], parts[2], query, body, caller)
                if method == "DELETE":
                    return self._revision_delete(parts[0], parts[2], query, caller)
        elif path == "/upload/drive/v3/files" or path.startswith("/upload/drive/v3/files/"):
            file_id = path[len("/upload/drive/v3/files/"):] or None
            if "upload_id" in query:
                # Google's documents say PUT; its Go client (google.golang.org/api gensupport,
                # resumable.go) and rclone (backend/drive/upload.go) send each chunk as POST, and
                # Drive takes both
                if method not in ("PUT", "POST"):
                    raise generic_error(404)
                return self._resumable_put(query, headers, body)
            if file_id is None and method == "POST":
                return self._upload(None, query, headers, body, handler, caller)
            if file_id and "/" not in file_id and method in ("PATCH", "PUT"):
                return self._upload(file_id, query, headers, body, handler, caller)
        raise generic_error(404)

    # -- OAuth token endpoint ------------------------------------------------

    def _token(self, body: bytes, host: str | None) -> Reply:
        """The refresh-token grant as google-auth sends it (form-encoded), the authorization-code
        grant the installed-app flow ends with (codes from issue_auth_code(), single use), and
        the service-account JWT grant (`_jwt_grant`)."""
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

        def oauth_error(status: int, error: str, description: str) -> Reply:
            return Reply.json(status, {"error": error, "error_description": description})

        grant = form.get("grant_type")
        if grant == JWT_BEARER_GRANT:
            return self._jwt_grant(form.get("assertion") or "", host)
        if grant == "authorization_code":
            with self.lock:
                if form.get("code") not in self._auth_codes:
                    return oauth_error(400, "invalid_grant", "Malformed auth code.")
                user, scope = self._auth_codes.pop(form["code"])
                # The grant belongs to the client that redeems the code, and lasts.
                caller = Caller(form.get("client_id") or DEFAULT_CLIENT_ID, user, scope)
                token = "ya29.emu-" + secrets.token_urlsafe(24)
                refresh = "1//emu-" + secrets.token_urlsafe(24)
                self._refresh_grants[refresh] = caller
                self._access_tokens[token] = (refresh, caller)
            return Reply.json(200, {"access_token": token, "refresh_token": refresh, "expires_in": 3599,
                                    "token_type": "Bearer", "scope": scope})
        if grant != "refresh_token":
            return oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant or ''}")
        rt = form.get("refresh_token")
        if not rt:
            return oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        if not form.get("client_id"):
            return oauth_error(400, "invalid_request", "Could not determine client ID from request.")
        with self.lock:
            if rt in self._revoked_refresh:
                return oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
            registered = self._refresh_grants.get(rt)
            if registered is not None and registered.client_id != form["client_id"]:
                # Google refuses a refresh token sent by another client; body as seen in
                # timfee/meet issue #25, the 401 status is a guess
                return oauth_error(401, "unauthorized_client", "Unauthorized")
            # An unregistered refresh token stands for the default user (older tests).
            user = registered.user_email if registered else DEFAULT_USER_EMAIL
            scope = registered.scope if registered else form.get("scope") or SCOPE_DRIVE_FILE
            token = "ya29.emu-" + secrets.token_urlsafe(24)
            self._access_tokens[token] = (rt, Caller(form["client_id"], user, scope))
            self.token_refreshes += 1
        answer = {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}
        if registered is not None or form.get("scope"):
            answer["scope"] = scope
        return Reply.json(200, answer)

    def _jwt_grant(self, assertion: str, host: str | None) -> Reply:
        """The JWT-bearer grant (RFC 7523) as google-auth's service_account.Credentials sends
        it: `assertion` is an RS256 JWT with iss (the account), aud, iat, exp, scope and, for
        domain-wide delegation, sub (the user to act as).  Refusals carry Google's texts (the
        JWT_* constants); the order of the checks (account, signature, aud, times, scope,
        delegation) is a guess."""

        def refused(status: int, error: str, description: str) -> Reply:
            return Reply.json(status, {"error": error, "error_description": description})

        if not assertion:
            # guess at the text: the RFC's error for a missing parameter
            return refused(400, "invalid_request", "Missing required parameter: assertion")
        try:
            header, claims, signed, signature = decode_jwt(assertion)
        except ValueError:
            return refused(400, "invalid_grant", JWT_BAD_SIGNATURE)  # guess: what a mangled JWT gets
        iss = claims.get("iss")
        with self.lock:
            account = self._service_accounts.get(iss) if isinstance(iss, str) else None
            keys = list(account.keys) if account else []
        if account is None:
            return refused(400, "invalid_grant", JWT_NO_ACCOUNT)
        kid = header.get("kid")
        # A key answers for its own private_key_id; google-auth always sends the kid.
        candidates = [key for key_id, key in keys if key_id is None or kid is None or key_id == kid]
        if header.get("alg") != "RS256" or not any(rs256_valid(k, signed, signature) for k in candidates):
            return refused(400, "invalid_grant", JWT_BAD_SIGNATURE)
        # google-auth always names Google's endpoint, also when it posts elsewhere (with_token_uri);
        # the emulator's own /token URL is accepted too, for clients that name the URI they use.
        audiences = {GOOGLE_TOKEN_URI, self.url + "/token"} | ({f"http://{host}/token"} if host else set())
        if claims.get("aud") not in audiences:
            return refused(400, "invalid_grant", JWT_BAD_AUDIENCE)
        iat, exp, now = claims.get("iat"), claims.get("exp"), time.time()
        in_window = (isinstance(iat, (int, float)) and isinstance(exp, (int, float))
                     and not isinstance(iat, bool) and not isinstance(exp, bool)
                     and 0 < exp - iat <= MAX_ASSERTION_LIFETIME_S
                     and exp > now and iat <= now + ASSERTION_CLOCK_SKEW_S)
        if not in_window:
            return refused(400, "invalid_grant", JWT_BAD_WINDOW)
        scope = claims.get("scope")
        scopes = scope.split() if isinstance(scope, str) else []
        if not scopes:
            return refused(400, "invalid_scope", JWT_BAD_SCOPE)
        user = account.client_email
        sub = claims.get("sub")
        # guess: a sub naming the account itself is no impersonation (old samples send it)
        if isinstance(sub, str) and sub and sub != account.client_email:
            granted = account.delegated_scopes
            # Delegation is granted per client id and scope list; asking for a scope beyond
            # the list is refused as a whole (guess: Google's text says "any of the scopes").
            if granted is None or not set(scopes) <= granted:
                return refused(401, "unauthorized_client", DELEGATION_DENIED)
            user = sub
        caller = Caller(account.client_id, user, " ".join(scopes))
        token = "ya29.emu-" + secrets.token_urlsafe(24)
        with self.lock:
            self._access_tokens[token] = (None, caller)
            self.token_refreshes += 1
        # Google's answer to this grant has no refresh_token and no scope.
        return Reply.json(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    # -- about & generateIds -----------------------------------------------

    def _about(self, query: dict, caller: Caller) -> Reply:
        if not query.get("fields"):
            raise ApiError(400, "required", "The 'fields' parameter is required for this method.",
                           location="fields", location_type="parameter")
        tree = checked_fields(query["fields"], "", ABOUT_FIELDS)
        with self.lock:
            usage = self._usage()
            trash = sum(self._quota_bytes(f) for f in self.files.values() if f["trashed"])
            quota = {"usage": str(usage), "usageInDrive": str(usage), "usageInDriveTrash": str(trash)}
            if self.faults.storage_quota_bytes is not None:
                quota["limit"] = str(self.faults.storage_quota_bytes)
            if self.faults.service_account_no_quota and self._is_service_account(caller.user_email):
                # guess: "no storage quota" shown as a limit of 0 (never verified on a live
                # about.get); what the account still owns in a My Drive is its usage.
                own = [f for f in self.files.values()
                       if f["_owner"] == caller.user_email and f.get("driveId") is None]
                used = sum(self._quota_bytes(f) for f in own)
                quota = {"limit": "0", "usage": str(used), "usageInDrive": str(used),
                         "usageInDriveTrash": str(sum(self._quota_bytes(f) for f in own if f["trashed"]))}
        about = {
            "kind": "drive#about",
            "user": user_resource(caller.user_email, True),
            "storageQuota": quota,
            "maxUploadSize": str(MAX_UPLOAD_SIZE),
            "appInstalled": True,
        }
        return Reply.json(200, select_fields(about, tree))

    def _generate_ids(self, query: dict) -> Reply:
        count = self._int_param(query, "count", 10, 1, MAX_GENERATED_IDS)
        tree = checked_fields(query.get("fields"), "kind,space,ids", GENERATED_IDS_FIELDS)
        # v3 reference: space is drive (default) or appDataFolder; type is files (default)
        # or shortcuts, the latter only in drive.  guess: other values are 400 invalid.
        space, kind = query.get("space") or "drive", query.get("type") or "files"
        if space not in ("drive", "appDataFolder"):
            raise invalid_param("space")
        if kind not in ("files", "shortcuts") or (kind == "shortcuts" and space != "drive"):
            raise invalid_param("type")
        ids = [new_file_id() for _ in range(count)]
        with self.lock:
            self._generated_ids.update(ids)
        answer = {"kind": "drive#generatedIds", "space": space, "ids": ids}
        return Reply.json(200, select_fields(answer, tree))

    @staticmethod
    def _int_param(query: dict, name: str, default: int, low: int, high: int) -> int:
        raw = query.get(name)
        if raw is None or raw == "":
            return default
        if not re.fullmatch(r"-?\d+", raw) or not low <= int(raw) <= high:
            raise invalid_param(name, f"Invalid value '{raw}'. Values must be within the range: [{low}, {high}]")
        return int(raw)

    # -- file resources --------------------------------------------------------

    def _resolve(self, file_id: str) -> str:
        return ROOT_FOLDER_ID if file_id == "root" else file_id

    def _root_resource(self) -> dict:
        return {"kind": "drive#file", "id": ROOT_FOLDER_ID, "name": "My Drive", "mimeType": FOLDER_MIME,
                "trashed": False, "explicitlyTrashed": False, "starred": False,
                "createdTime": "2010-01-01T00:00:00.000Z", "modifiedTime": "2010-01-01T00:00:00.000Z",
                "ownedByMe": True, "spaces": ["drive"]}

    def _drive_root_resource(self, drive_id: str) -> dict:
        """files.get on a driveId gives the shared drive's top folder."""
        drive = self.shared_drives[drive_id]
        return {"kind": "drive#file", "id": drive_id, "name": drive["name"], "mimeType": FOLDER_MIME,
                "driveId": drive_id, "trashed": False, "explicitlyTrashed": False, "starred": False,
                "createdTime": drive["createdTime"], "modifiedTime": drive["createdTime"],
                "ownedByMe": False, "spaces": ["drive"]}

    @staticmethod
    def _all_drives(query: dict) -> bool:
        """supportsAllDrives (or its deprecated name): without it, shared-drive items are
        404 as if missing (real Drive; e.g. plotlinelabs/loma PR #111)."""
        return "true" in (query.get("supportsAllDrives"), query.get("supportsTeamDrives"))

    def _visible(self, f: dict, caller: Caller | None) -> bool:
        """Whether `caller` may see f at all (None: the omniscient Python helpers)."""
        if caller is None or not self.faults.app_visibility:
            return True
        if f.get("driveId") is None and f["_owner"] != caller.user_email:
            return False  # another user's My Drive (nothing is shared between users here)
        return caller.sees_all or f["_app"] == caller.client_id

    def _lookup(self, file_id: str, caller: Caller | None = None, all_drives: bool = True) -> dict:
        """A file the caller may address; anything else is 404 exactly like a missing id,
        which is what real Drive answers for files outside a drive.file app's reach."""
        f = self.files.get(self._resolve(file_id))
        if f is None or not self._visible(f, caller) or (f.get("driveId") and not all_drives):
            raise not_found(file_id)
        return f

    def _app_props_view(self, f: dict, caller: Caller | None) -> dict:
        """appProperties as `caller` sees them: each app only its own on real Drive
        (app_visibility on); otherwise, and for the Python helpers, all apps' merged."""
        by_app = f.get("_app_props") or {}
        if caller is not None and self.faults.app_visibility:
            return dict(by_app.get(caller.client_id, {}))
        merged: dict = {}
        for props in by_app.values():
            merged.update(props)
        return merged

    def _public(self, f: dict, caller: Caller | None = None) -> dict:
        """The full API view of a stored file (stored keys plus derived ones) for `caller`."""
        out = {k: v for k, v in f.items() if k != "content" and not k.startswith("_")}
        props = self._app_props_view(f, caller)
        if props:
            out["appProperties"] = props
        out.setdefault("spaces", ["drive"])
        if f.get("driveId") is None:
            mine = caller is None or f["_owner"] == caller.user_email
            out["ownedByMe"] = mine
            out["owners"] = [user_resource(f["_owner"], mine)]
        else:
            out["ownedByMe"] = False  # a shared drive owns its files
        out["quotaBytesUsed"] = str(self._quota_bytes(f))
        if f["mimeType"] == FOLDER_MIME:
            out["webViewLink"] = f"https://drive.google.com/drive/folders/{f['id']}"
        else:
            out["webViewLink"] = f"https://drive.google.com/file/d/{f['id']}/view?usp=drivesdk"
        name = f["name"]
        if not is_google_type(f["mimeType"]) and "." in name and not name.startswith("."):
            out["fullFileExtension"] = name.split(".", 1)[1]
            out["fileExtension"] = name.rsplit(".", 1)[1]
        return out

    @staticmethod
    def _check_file_fields(query: dict) -> None:
        """Refuse a bad `fields` before anything is changed, as Drive does."""
        checked_fields(query.get("fields"), DEFAULT_FILE_FIELDS, FILE_FIELDS)

    def _file_reply(self, f: dict, fields: str | None, caller: Caller | None, *, upload: bool = False) -> Reply:
        tree = checked_fields(fields, DEFAULT_FILE_FIELDS, FILE_FIELDS)
        out = select_fields(self._public(f, caller), tree)
        if upload and "md5Checksum" in out:
            with self.lock:
                if self.faults.wrong_md5_count > 0:
                    self.faults.wrong_md5_count -= 1
                    out["md5Checksum"] = hashlib.md5(b"wrong:" + bytes(f["content"])).hexdigest()
                    self._count("wrong_md5")
        return Reply.json(200, out)

    def _get(self, file_id: str, query: dict, headers: Any, caller: Caller) -> Reply:
        with self.lock:
            resolved = self._resolve(file_id)
            if resolved == ROOT_FOLDER_ID and self.faults.root_hidden_under_drive_file and \
                    not caller.sees_all:
                raise not_found(file_id)
            if resolved == ROOT_FOLDER_ID or (resolved in self.shared_drives and self._all_drives(query)):
                tree = checked_fields(query.get("fields"), DEFAULT_FILE_FIELDS, FILE_FIELDS)
                top = self._root_resource() if resolved == ROOT_FOLDER_ID else self._drive_root_resource(resolved)
                return Reply.json(200, select_fields(top, tree))
            f = self._lookup(file_id, caller, self._all_drives(query))
            if query.get("alt") != "media":
                return self._file_reply(f, query.get("fields"), caller)
            if is_google_type(f["mimeType"]):
                raise ApiError(403, "fileNotDownloadable",
                               "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
                               location="alt", location_type="parameter")
            content = bytes(f["content"])
            mime = f["mimeType"]
        return self._media_reply(content, mime, headers.get("Range"))

    @staticmethod
    def _media_reply(content: bytes, mime: str, range_header: str | None) -> Reply:
        """alt=media, honouring `Range: bytes=a-b` as MediaIoBaseDownload sends it."""
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", (range_header or "").strip())
        if not m or not content or (not m.group(1) and not m.group(2)):
            return Reply(200, content, {"Content-Type": mime})
        size = len(content)
        if m.group(1):
            start, end = int(m.group(1)), int(m.group(2)) if m.group(2) else size - 1
        else:
            start, end = max(0, size - int(m.group(2))), size - 1
        if start >= size or end < start:
            return Reply(416, b"", {"Content-Range": f"bytes */{size}"})
        end = min(end, size - 1)
        return Reply(206, content[start : end + 1],
                     {"Content-Type": mime, "Content-Range": f"bytes {start}-{end}/{size}"})

    def _list_scope(self, query: dict) -> Callable[[dict], bool]:
        """Check corpora/driveId/includeItemsFromAllDrives; returns which files are in scope."""
        corpora = query.get("corpora") or "user"
        drive_id = query.get("driveId") or query.get("teamDriveId")
        include_all = "true" in (query.get("includeItemsFromAllDrives"), query.get("includeTeamDriveItems"))
        if corpora not in CORPORA:
            raise invalid_param("corpora")  # guess at the wording
        if bool(drive_id) != (corpora == "drive"):
            # Verified wording and reason (google-api-php-client issue #1825); the 400 is a guess.
            raise ApiError(400, "teamDriveIdRequiresTeamDriveCorpora",
                           "The driveId parameter must be specified if and only if corpora is set to drive.")
        if (drive_id or corpora in ("drive", "allDrives")) and not include_all:
            # Verified wording and status (pygsheets issue #437, a v3 call); the reason is a guess.
            raise ApiError(403, "teamDriveInclusionRequired",
                           "The includeItemsFromAllDrives parameter must be set to true when driveId is "
                           "specified or corpora contains drive or allDrives.")
        if drive_id:
            if drive_id not in self.shared_drives:
                # guess: "Shared drive not found" is what clients match on; status and rest guessed
                raise ApiError(404, "notFound", f"Shared drive not found: {drive_id}",
                               location="driveId", location_type="parameter")
            return lambda f: f.get("driveId") == drive_id
        if corpora == "allDrives" or include_all:
            return lambda f: True
        # guess: "domain" adds files shared with the domain, of which there are none here
        return lambda f: f.get("driveId") is None

    def _list(self, query: dict, caller: Caller) -> Reply:
        page_size = self._int_param(query, "pageSize", 100, 1, MAX_PAGE_SIZE)
        tree = checked_fields(query.get("fields"), DEFAULT_LIST_FIELDS, FILE_LIST_FIELDS, {"files": FILE_FIELDS})
        q = (query.get("q") or "").strip()
        predicate: Predicate = lambda f: True  # noqa: E731
        if q:
            try:
                predicate = QueryParser(q, self._resolve).parse()
            except QueryError:
                raise invalid_param("q") from None
        order = []
        if query.get("orderBy"):
            if q and uses_full_text(q):
                # Verified wording (Drive's "Resolve errors" guide).
                raise bad_request("Sorting is not supported for queries with fullText terms. Results are always "
                                  "in descending relevance order.", location="orderBy", location_type="parameter")
            try:
                order = parse_order_by(query["orderBy"])
            except ValueError:
                raise invalid_param("orderBy") from None  # guess at the wording
        in_scope = self._list_scope(query)
        all_drives = query.get("corpora") == "allDrives"
        offset = 0
        shape = "\0".join([q, query.get("orderBy") or "", query.get("corpora") or "", query.get("driveId") or ""])
        fingerprint = hashlib.sha256(shape.encode()).hexdigest()[:16]
        if query.get("pageToken"):
            try:
                token = json.loads(base64.urlsafe_b64decode(query["pageToken"].encode()))
                offset, token_q = int(token["o"]), token["q"]
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise invalid_param("pageToken") from None
            if token_q != fingerprint:
                raise invalid_param("pageToken")
        # Nothing lives in appDataFolder here; every other space is My Drive.
        in_space = "drive" in (query.get("spaces") or "drive").split(",")
        with self.lock:
            matches = self._matching(predicate, in_scope, caller) if in_space else []
            for key, descending in reversed(order):  # stable sorts, last key first
                matches.sort(key=lambda view: order_value(view, key), reverse=descending)
            incomplete = all_drives and self.faults.incomplete_search_all_drives
            if incomplete:
                for _ in matches[1::2]:
                    self._count("incomplete_search")
                matches = matches[::2]
            page = matches[offset : offset + page_size]
            more = offset + page_size < len(matches)
        answer: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": incomplete, "files": page}
        if more:
            raw = json.dumps({"o": offset + page_size, "q": fingerprint}).encode()
            answer["nextPageToken"] = base64.urlsafe_b64encode(raw).decode()
        return Reply.json(200, select_fields(answer, tree))

    def _matching(self, predicate: Predicate, in_scope: Callable[[dict], bool], caller: Caller) -> list[dict]:
        """The views of the files a list answers with, list lag included: an item changed
        within `list_lag_s` is judged (and shown) in the state before that change."""
        lag, now = self.faults.list_lag_s, time.monotonic()
        out = []
        for f in self.files.values():
            if not self._visible(f, caller) or not in_scope(f):
                continue
            view = self._public(f, caller)
            pending = self._list_lag.get(f["id"]) if lag > 0 else None
            if pending is not None and now - pending[0] >= lag:
                del self._list_lag[f["id"]]
                pending = None
            if pending is None:
                if predicate(view):
                    out.append(view)
                continue
            stale = None if pending[1] is None else dict(view, **pending[1])
            shown = stale is not None and predicate(stale)
            if shown != predicate(view):
                self._count("list_lag")
            if shown:
                out.append(stale)
        return out

    def _delete(self, file_id: str, query: dict, caller: Caller) -> Reply:
        with self.lock:
            if self._resolve(file_id) == ROOT_FOLDER_ID:
                raise ApiError(403, "insufficientFilePermissions",
                               "The user does not have sufficient permissions for this file.")
            f = self._lookup(file_id, caller, self._all_drives(query))
            # Every descendant goes too, also those the caller cannot see: that is real
            # Drive, and the danger of deleting a folder a user has put files in.
            doomed = [f["id"]] + self._descendants(f["id"])
            for fid in doomed:
                gone = self.files.pop(fid, None)
                self._list_lag.pop(fid, None)
                if gone is not None:
                    self._record_descendant_change(gone, fid != f["id"], removed=True)
        return Reply(204)

    # -- the changes feed ------------------------------------------------------------

    def _start_page_token(self, query: dict) -> Reply:
        """changes.getStartPageToken: GET /drive/v3/changes/startPageToken.  One counter for
        every corpus here (guess: real Drive keeps one per user and one per shared drive)."""
        tree = checked_fields(query.get("fields"), "kind,startPageToken", START_PAGE_TOKEN_FIELDS)
        drive_id = query.get("driveId") or query.get("teamDriveId")
        with self.lock:
            if drive_id and drive_id not in self.shared_drives:
                raise ApiError(404, "notFound", f"Shared drive not found: {drive_id}",
                               location="driveId", location_type="parameter")  # guess, as in files.list
            answer = {"kind": "drive#startPageToken", "startPageToken": str(self._change_seq + 1)}
        return Reply.json(200, select_fields(answer, tree))

    def _check_change_token(self, raw: str | None) -> int:
        """A changes pageToken: a seq number from 1 to the next one.  guess: anything else --
        garbage, a token from the future, one expire_change_tokens() voided -- is 400 invalid on
        pageToken, the answer Drive gives a bad files.list pageToken (brekkylab/backlot issue
        #337: "real answers 400 Invalid Value")."""
        if not raw:
            # guess at the wording; the parameter is required (discovery document)
            raise ApiError(400, "required", "Required parameter: pageToken",
                           location="pageToken", location_type="parameter")
        if not re.fullmatch(r"[1-9]\d{0,17}", raw) or int(raw) > self._change_seq + 1:
            raise invalid_param("pageToken")
        if int(raw) < self._change_token_floor:
            self._count("expired_change_token")
            raise invalid_param("pageToken")
        return int(raw)

    def _coerced_page_size(self, query: dict, default: int) -> int:
        """pageSize of changes.list and revisions.list: "values above 1000 will be coerced to
        1000" (v3 reference); guess: below 1 is refused as files.list refuses it."""
        raw = query.get("pageSize")
        if raw is not None and raw != "" and re.fullmatch(r"\d+", raw) and int(raw) > MAX_REVISION_PAGE_SIZE:
            return MAX_REVISION_PAGE_SIZE
        return self._int_param(query, "pageSize", default, 1, MAX_REVISION_PAGE_SIZE)

    def _changes_list(self, query: dict, caller: Caller) -> Reply:
        """changes.list (GET /drive/v3/changes): each file changed at or after `pageToken`, once,
        in its latest state, in the order of those latest changes (the guide: "retrieve the
        list of changes", developers.google.com/workspace/drive/api/guides/manage-changes).
        A file deleted for good comes as removed: true without `file`; a trashed one with
        file.trashed true.  Every create, update (metadata or media; moves, renames, trash and
        untrash, descendants a trash or move changed) and delete counts; revision and
        keepForever edits do not (guess).  With app_visibility, only what the caller may see
        (drive.file: its app's files).  pageSize defaults to 100 (coerced to at most 1000); the
        last page carries newStartPageToken, the others nextPageToken."""
        tree = checked_fields(query.get("fields"), DEFAULT_CHANGE_LIST_FIELDS, CHANGE_LIST_FIELDS,
                              {"changes": (CHANGE_FIELDS, {"file": FILE_FIELDS})})
        page_size = self._coerced_page_size(query, 100)
        spaces = (query.get("spaces") or "drive").split(",")
        if any(space not in ("drive", "appDataFolder") for space in spaces):
            raise invalid_param("spaces")  # "Supported values are 'drive' and 'appDataFolder'"
        include_removed = query.get("includeRemoved") != "false"  # default true
        restrict = query.get("restrictToMyDrive") == "true"
        all_drives = "true" in (query.get("includeItemsFromAllDrives"), query.get("includeTeamDriveItems"))
        drive_id = query.get("driveId") or query.get("teamDriveId")
        with self.lock:
            token = self._check_change_token(query.get("pageToken"))
            if drive_id and drive_id not in self.shared_drives:
                raise ApiError(404, "notFound", f"Shared drive not found: {drive_id}",
                               location="driveId", location_type="parameter")  # guess, as in files.list
            page: list[tuple[int, dict]] = []
            more = False
            # Nothing lives in appDataFolder here: without "drive" in spaces there is nothing.
            for file_id, rec in (self._changes.items() if "drive" in spaces else ()):
                if rec["seq"] < token:
                    continue
                f = None if rec["removed"] else self.files.get(file_id)
                holder = f if f is not None else rec
                if (not rec["removed"] and f is None) or not self._visible(holder, caller):
                    continue
                in_drive = holder.get("driveId")
                if drive_id:
                    if in_drive != drive_id:
                        continue
                elif in_drive is not None and (restrict or not all_drives):
                    continue  # shared-drive items need includeItemsFromAllDrives
                if rec["removed"] and not include_removed:
                    continue
                if len(page) == page_size:
                    more = True
                    break
                entry: dict[str, Any] = {"kind": "drive#change", "type": "file", "changeType": "file",
                                         "time": rec["time"], "removed": rec["removed"], "fileId": file_id}
                if in_drive:
                    entry["driveId"] = in_drive
                if f is not None:
                    entry["file"] = self._public(f, caller)
                page.append((rec["seq"], entry))
            answer: dict[str, Any] = {"kind": "drive#changeList", "changes": [e for _, e in page]}
            if more:
                answer["nextPageToken"] = str(page[-1][0] + 1)
            else:
                answer["newStartPageToken"] = str(self._change_seq + 1)
        return Reply.json(200, select_fields(answer, tree))

    # -- revisions -----------------------------------------------------------------

    def _revision_file(self, file_id: str, query: dict, caller: Caller) -> dict:
        f = self._lookup(file_id, caller, self._all_drives(query))
        if is_google_type(f["mimeType"]):
            # The reason is one GAM knows (GAM-team/GAM, src/gam/gamlib/glgapi.py); status, text,
            # and that every Google type gets it here (real Docs have revisions), are guesses.
            raise ApiError(403, "revisionsNotSupported", "The file does not support revisions.")
        return f

    @staticmethod
    def _find_revision(f: dict, revision_id: str) -> dict:
        for rev in f.get("_revisions") or ():
            if rev["id"] == revision_id:
                return rev
        raise revision_not_found(revision_id)

    @staticmethod
    def _revision_view(rev: dict, caller: Caller | None) -> dict:
        return {"kind": "drive#revision", "id": rev["id"], "mimeType": rev["mimeType"],
                "modifiedTime": rev["modifiedTime"], "keepForever": rev["keepForever"],
                "md5Checksum": rev["md5Checksum"], "size": rev["size"],
                "originalFilename": rev["originalFilename"],
                "lastModifyingUser": user_resource(rev["_by"], caller is None or rev["_by"] == caller.user_email)}

    def _revisions_list(self, file_id: str, query: dict, caller: Caller) -> Reply:
        """revisions.list: oldest first, the head last; pageSize defaults to 200."""
        tree = checked_fields(query.get("fields"), DEFAULT_REVISION_LIST_FIELDS, REVISION_LIST_FIELDS,
                              {"revisions": REVISION_FIELDS})
        page_size = self._coerced_page_size(query, 200)
        with self.lock:
            f = self._revision_file(file_id, query, caller)
            offset = 0
            if query.get("pageToken"):
                try:
                    token = json.loads(base64.urlsafe_b64decode(query["pageToken"].encode()))
                    offset, token_file = int(token["o"]), token["f"]
                except (ValueError, KeyError, TypeError, binascii.Error):
                    raise invalid_param("pageToken") from None
                if token_file != f["id"]:
                    raise invalid_param("pageToken")
            revs = f["_revisions"]
            answer: dict[str, Any] = {"kind": "drive#revisionList",
                                      "revisions": [self._revision_view(r, caller)
                                                    for r in revs[offset : offset + page_size]]}
            if offset + page_size < len(revs):
                raw = json.dumps({"o": offset + page_size, "f": f["id"]}).encode()
                answer["nextPageToken"] = base64.urlsafe_b64encode(raw).decode()
        return Reply.json(200, select_fields(answer, tree))

    def _revision_get(self, file_id: str, revision_id: str, query: dict, headers: Any, caller: Caller) -> Reply:
        """revisions.get, and with alt=media that revision's bytes (Range honoured)."""
        tree = checked_fields(query.get("fields"), DEFAULT_REVISION_FIELDS, REVISION_FIELDS)
        with self.lock:
            f = self._revision_file(file_id, query, caller)
            rev = self._find_revision(f, revision_id)
            if query.get("alt") != "media":
                return Reply.json(200, select_fields(self._revision_view(rev, caller), tree))
            if self.faults.revision_download_needs_keep_forever and not rev["keepForever"]:
                self._count("revision_download_restricted")
                raise ApiError(403, "download_restricted_for_revision", REVISION_DOWNLOAD_MESSAGE)
            content, mime = rev["content"], rev["mimeType"]
        return self._media_reply(content, mime, headers.get("Range"))

    def _revision_update(self, file_id: str, revision_id: str, query: dict, body: bytes, caller: Caller) -> Reply:
        """revisions.update (PATCH): keepForever false -> true (at most 200 per file); true ->
        false is refused: "Bad Request. Cannot update a revision to false that is marked as
        keepForever." (handle-errors guide, illegalKeepForeverModification).  Pinning an old
        revision makes its bytes count against the quota again."""
        tree = checked_fields(query.get("fields"), DEFAULT_REVISION_FIELDS, REVISION_FIELDS)
        meta = self._json_body(body)
        if any(k in REVISION_FIELDS and k not in REVISION_WRITABLE for k in meta):
            raise not_writable()
        keep = meta.get("keepForever")
        if keep is not None and not isinstance(keep, bool):
            raise bad_request("Invalid value for keepForever.", "invalid", location="keepForever",
                              location_type="body")  # guess at the wording
        with self.lock:
            f = self._revision_file(file_id, query, caller)
            rev = self._find_revision(f, revision_id)
            modified = self._check_time("modifiedTime", meta["modifiedTime"]) if meta.get("modifiedTime") else None
            if keep is False and rev["keepForever"]:
                raise ApiError(400, "illegalKeepForeverModification", KEEP_FOREVER_OFF_MESSAGE)
            if keep and not rev["keepForever"]:
                self._check_keep_forever_room(f)
                self._check_storage(0 if rev is f["_revisions"][-1] else len(rev["content"]))
                rev["keepForever"] = True
            if modified:
                rev["modifiedTime"] = modified  # guess: writable (not marked output-only)
            return Reply.json(200, select_fields(self._revision_view(rev, caller), tree))

    def _revision_delete(self, file_id: str, revision_id: str, query: dict, caller: Caller) -> Reply:
        """revisions.delete: "You can only delete revisions for blob files ... the last remaining
        revision of the binary file, can't be deleted" (manage-revisions guide); keepForever ones
        can be deleted.  The head: see Faults.head_revision_deletable."""
        with self.lock:
            f = self._lookup(file_id, caller, self._all_drives(query))
            if is_google_type(f["mimeType"]):
                # reason as GAM knows it (glgapi.py); status and text are guesses
                raise ApiError(403, "revisionDeletionNotSupported", "Revisions of this file cannot be deleted.")
            rev = self._find_revision(f, revision_id)
            revs = f["_revisions"]
            if len(revs) == 1:
                # reason as GAM knows it (glgapi.py, and a public Go tool that deletes headRevisionId
                # checks for it); status and text are guesses
                raise ApiError(403, "cannotDeleteOnlyRevision", "The only revision of a file cannot be deleted.")
            if rev is revs[-1]:
                if not self.faults.head_revision_deletable:
                    # guess: reason, status and text (see Faults.head_revision_deletable)
                    raise ApiError(403, "cannotDeleteHeadRevision", "The head revision of a file cannot be deleted.")
                revs.pop()
                self._restore_head(f)
            else:
                revs.remove(rev)
        return Reply(204)

    def _restore_head(self, f: dict) -> None:
        """The newest remaining revision is the file's content again (head_revision_deletable)."""
        head = f["_revisions"][-1]
        f["content"] = head["content"]
        f.update(digests(f["content"]))
        f["mimeType"], f["headRevisionId"] = head["mimeType"], head["id"]
        f["modifiedTime"] = head["modifiedTime"]  # guess
        f["version"] = str(int(f.get("version", "1")) + 1)
        self._record_change(f)

    def _descendants(self, folder_id: str) -> list[str]:
        out, frontier = [], [folder_id]
        while frontier:
            parent = frontier.pop()
            for f in self.files.values():
                if parent in f.get("parents", []):
                    out.append(f["id"])
                    frontier.append(f["id"])
        return out

    # -- list lag ----------------------------------------------------------------

    @staticmethod
    def _list_state(f: dict) -> dict:
        """What a list judges that lags behind: where the file is and whether it is trashed."""
        return {"parents": list(f.get("parents", [])), "trashed": f["trashed"],
                "explicitlyTrashed": f["explicitlyTrashed"]}

    def _lag_lists(self, f: dict, before: dict | None) -> None:
        """f was just created (before None) or moved/trashed: lists keep showing `before`
        for list_lag_s.  Within the window the first unseen state stays the one shown."""
        lag = self.faults.list_lag_s
        if lag <= 0:
            return
        now = time.monotonic()
        pending = self._list_lag.get(f["id"])
        if pending is not None and now - pending[0] < lag:
            before = pending[1]
        self._list_lag[f["id"]] = (now, before)

    # -- create & update validation -------------------------------------------

    @staticmethod
    def _json_body(body: bytes) -> dict:
        if not body.strip():
            return {}
        try:
            meta = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise parse_error() from None
        if not isinstance(meta, dict):
            raise parse_error()
        return meta

    @staticmethod
    def _check_properties(field: str, value: Any, existing: dict | None) -> dict:
        """Validate and merge appProperties/properties; a null value deletes a key."""
        if not isinstance(value, dict):
            raise bad_request(f"Invalid value for {field}.", "invalid", location=field, location_type="body")
        merged = dict(existing or {})
        for key, val in value.items():
            if val is None:
                merged.pop(key, None)
                continue
            if not isinstance(val, str):
                # guess: proto-JSON style refusal of a non-string map value
                raise bad_request(f"Invalid value at '{field}[{key}]' (TYPE_STRING), {json.dumps(val)}",
                                  "invalid", location=field, location_type="body")
            if len(key.encode("utf-8")) + len(val.encode("utf-8")) > MAX_PROPERTY_BYTES:
                # seen on real Drive (2026 report): 403 propertyLengthLimitExceeded
                raise ApiError(403, "propertyLengthLimitExceeded",
                               "Properties and app properties are limited to 124 bytes in UTF-8 encoding, "
                               "counting both the key and the value.")
            merged[key] = val
        if len(merged) > MAX_APP_PROPERTIES:
            # guess: the limit (30 per app per file) is documented, the error body is not
            raise ApiError(403, "propertyCountLimitExceeded",
                           f"A file can have at most {MAX_APP_PROPERTIES} {field} per application.")
        return merged

    @staticmethod
    def _check_time(field: str, value: Any) -> str:
        try:
            return rfc3339(parse_rfc3339(value))
        except (ValueError, TypeError):
            raise bad_request(f"Invalid value for: Invalid format: \"{value}\"", "invalid",
                              location=field, location_type="body") from None

    def _check_parent(self, parent_id: Any, caller: Caller | None = None, all_drives: bool = True) -> str:
        """A parent must be a folder the caller can see; a shared drive's folders (and its
        top, the driveId) only with supportsAllDrives: otherwise 404 as if missing."""
        if not isinstance(parent_id, str) or not parent_id:
            raise bad_request("Invalid value for parents.", "invalid", location="parents", location_type="body")
        resolved = self._resolve(parent_id)
        if resolved == ROOT_FOLDER_ID:
            return resolved
        if resolved in self.shared_drives:
            # guess: a drive.file app may create at a shared drive's top, as at My Drive's
            if not all_drives:
                raise not_found(parent_id)
            return resolved
        parent = self._lookup(parent_id, caller, all_drives)
        if parent["mimeType"] != FOLDER_MIME:
            # guess: Drive refuses a non-folder parent; the exact body is unverified
            raise bad_request("The specified parent is not a folder.", "invalid",
                              location="parents", location_type="body")
        return resolved

    def _check_new_id(self, file_id: Any, caller: Caller | None, *, defer_reuse: bool = False) -> str:
        """An `id` in files.create must come from generateIds and be unused.

        Verified from public reports: a reused id gives 409 fileIdInUse "A file
        already exists with the provided ID."; an id never generated gives 400
        fileIdNotUsable "The provided file ID is not usable." (the latter less
        certain).  With `reused_id_answer` "success" a reused id raises _IdReused
        instead (not for the Python helpers, caller None), or, with `defer_reuse`
        (resumable initiation), passes until the session completes."""
        if not isinstance(file_id, str) or file_id not in self._generated_ids and file_id not in self.files:
            raise ApiError(400, "fileIdNotUsable", "The provided file ID is not usable.",
                           location="file.id", location_type="other")
        existing = self.files.get(file_id)
        if existing is not None:
            # guess: a file the caller cannot see is still a 409, never its resource
            if self.faults.reused_id_answer == "success" and caller is not None and self._visible(existing, caller):
                if defer_reuse:
                    return file_id
                self._count("reused_id")
                raise _IdReused(existing)
            raise ApiError(409, "fileIdInUse", "A file already exists with the provided ID.")
        return file_id

    def _validate_create(self, meta: dict, caller: Caller | None, *, all_drives: bool = True,
                         origin: Caller | None = None, defer_reuse: bool = False,
                         keep_forever: bool = False) -> dict:
        """Check create metadata now (as Drive does at initiation); returns the
        normalised metadata `_commit_create` needs later.  `caller` is checked for
        access (None: no checks); the file will belong to `origin` (default: caller).
        `keep_forever`: keepRevisionForever, for the first revision."""
        output_only = [k for k in meta if k in FILE_FIELDS and k not in CREATE_WRITABLE]
        if output_only:
            raise not_writable()
        origin = origin or caller or Caller()
        norm: dict[str, Any] = {"_caller": caller, "_all_drives": all_drives, "_app": origin.client_id,
                                "_owner": origin.user_email, "_keep_forever": keep_forever}
        if "id" in meta:
            norm["id"] = self._check_new_id(meta["id"], caller, defer_reuse=defer_reuse)
        name = meta.get("name")
        if name is not None and not isinstance(name, str):
            raise bad_request("Invalid value for name.", "invalid", location="name", location_type="body")
        norm["name"] = name or "Untitled"  # real Drive names an unnamed file "Untitled"
        mime = meta.get("mimeType")
        if mime is not None and not isinstance(mime, str):
            raise bad_request("Invalid value for mimeType.", "invalid", location="mimeType", location_type="body")
        norm["mimeType"] = mime or None
        parents = meta.get("parents") or []
        if not isinstance(parents, list):
            raise bad_request("Invalid value for parents.", "invalid", location="parents", location_type="body")
        if len(parents) > 1:
            raise ApiError(403, "cannotAddParent", "Increasing the number of parents is not allowed")
        norm["parents"] = [self._check_parent(parents[0], caller, all_drives)] if parents else [ROOT_FOLDER_ID]
        if caller is not None:
            self._check_folder_room(norm["parents"][0])
        if (caller is not None and self.faults.service_account_no_quota
                and self._is_service_account(origin.user_email) and self._drive_of(norm["parents"][0]) is None):
            # The item would be the service account's, in a My Drive (see Faults).  The Python
            # helpers (caller None) may still make such files: accounts from before 2025 have them.
            self._count("service_account_quota")
            raise service_account_quota_error()
        for field in ("appProperties", "properties"):
            if meta.get(field) is not None:
                props = self._check_properties(field, meta[field], None)
                if props:
                    norm[field] = props
        for field in ("createdTime", "modifiedTime"):
            if meta.get(field) is not None:
                norm[field] = self._check_time(field, meta[field])
        if meta.get("description") is not None:
            norm["description"] = str(meta["description"])
        norm["starred"] = bool(meta.get("starred", False))
        if meta.get("originalFilename"):
            norm["originalFilename"] = str(meta["originalFilename"])
        return norm

    def _commit_create(self, norm: dict, content: bytes | None, media_mime: str) -> dict:
        """Store a new file from validated metadata (re-checking what may have
        changed since a resumable upload was initiated: the parent, and the id,
        which a re-sent initiation may have used up already)."""
        caller = norm["_caller"]
        for parent in norm["parents"]:
            if parent != ROOT_FOLDER_ID:
                self._check_parent(parent, caller, norm["_all_drives"])
        file_id = self._check_new_id(norm["id"], caller) if "id" in norm else new_file_id()
        if caller is not None:  # again: a resumable upload's folder may have filled up meanwhile
            self._check_folder_room(norm["parents"][0])
        self._generated_ids.discard(file_id)
        now = now_rfc3339()
        mime = norm["mimeType"] or media_mime
        f: dict[str, Any] = {
            "kind": "drive#file",
            "id": file_id,
            "name": norm["name"],
            "mimeType": mime,
            "parents": list(norm["parents"]),
            "createdTime": norm.get("createdTime", now),
            "modifiedTime": norm.get("modifiedTime", norm.get("createdTime", now)),
            "modifiedByMeTime": norm.get("modifiedTime", now),
            "viewedByMeTime": now,
            "trashed": False,
            "explicitlyTrashed": False,
            "starred": norm["starred"],
            "version": "1",
            "_app": norm["_app"],  # the OAuth client that made it (None: the web UI)
            "_owner": norm["_owner"],
            "_app_props": {norm["_app"]: norm["appProperties"]} if "appProperties" in norm else {},
        }
        drive_id = self._drive_of(norm["parents"][0])
        if drive_id:
            f["driveId"] = drive_id
        for key in ("description", "properties"):
            if key in norm:
                f[key] = norm[key]
        data = b"" if is_google_type(mime) else bytes(content or b"")
        if not is_google_type(mime):
            f["originalFilename"] = norm.get("originalFilename", norm["name"])
            f.update(digests(data))
        f["content"] = data
        if not is_google_type(mime):
            f["_revisions"] = []
            self._add_revision(f, norm["_keep_forever"], norm["_owner"])
        self._inherit_trash(f)
        self.files[file_id] = f
        self._lag_lists(f, None)
        self._record_change(f)
        return f

    def _check_folder_room(self, folder_id: str) -> None:
        """403 numChildrenInNonRootLimitExceeded if `folder_id` already holds the limit (see
        Faults.folder_item_limit).  My Drive's root is exempt (documented), so is a shared
        drive's top (its own limit, teamDriveFileLimitExceeded, is not modelled)."""
        if folder_id == ROOT_FOLDER_ID or folder_id not in self.files:
            return
        limit = self.faults.folder_item_limit
        limit = FOLDER_ITEM_LIMIT if limit is None else limit
        if len(self.files) - 1 < limit:  # cannot be full: spares counting on every create
            return
        with_trash = self.faults.folder_limit_counts_trashed
        held = sum(1 for g in self.files.values()
                   if folder_id in g.get("parents", ()) and (with_trash or not g["trashed"]))
        if held >= limit:
            self._count("folder_item_limit")
            raise folder_full_error()

    def _record_descendant_change(self, f: dict, descendant: bool, removed: bool = False) -> None:
        if not (descendant and self.faults.folder_changes_only):
            self._record_change(f, removed)

    def _record_change(self, f: dict, removed: bool = False) -> None:
        """One more change in the feed: f's latest state (or its permanent deletion) at a new seq."""
        self._change_seq += 1
        self._changes.pop(f["id"], None)
        self._changes[f["id"]] = {"seq": self._change_seq, "time": now_rfc3339(), "removed": removed,
                                  "_app": f["_app"], "_owner": f["_owner"], "driveId": f.get("driveId")}

    def _add_revision(self, f: dict, keep_forever: bool, by: str | None) -> None:
        """f's current bytes become its new head revision (Drive: "files.update with media makes
        a new head revision"); old purgeable ones beyond MAX_PURGEABLE_REVISIONS go."""
        rev = {"id": "0B" + secrets.token_urlsafe(30), "modifiedTime": f["modifiedTime"],
               "keepForever": bool(keep_forever), "md5Checksum": f["md5Checksum"], "size": f["size"],
               "mimeType": f["mimeType"], "originalFilename": f.get("originalFilename", f["name"]),
               "content": f["content"], "_by": by or f["_owner"]}
        revs = f["_revisions"]
        revs.append(rev)
        f["headRevisionId"] = rev["id"]
        while sum(1 for r in revs if not r["keepForever"]) > MAX_PURGEABLE_REVISIONS:
            oldest = next(r for r in revs[:-1] if not r["keepForever"])
            revs.remove(oldest)
            self._count("revision_purged")

    def _check_keep_forever_room(self, f: dict) -> None:
        if sum(1 for r in f.get("_revisions") or () if r["keepForever"]) >= MAX_KEEP_FOREVER_REVISIONS:
            raise keep_forever_limit_error()

    def _drive_of(self, folder_id: str) -> str | None:
        """The shared drive a folder is in (None: My Drive)."""
        if folder_id in self.shared_drives:
            return folder_id
        folder = self.files.get(folder_id)
        return folder.get("driveId") if folder else None

    def _inherit_trash(self, f: dict) -> None:
        parent = self.files.get(f["parents"][0]) if f.get("parents") else None
        if parent is not None and parent["trashed"]:
            f["trashed"] = True

    def _validate_patch(self, f: dict, meta: dict, query: dict, caller: Caller) -> dict:
        """Check files.update metadata and parent moves; returns the changes."""
        if "parents" in meta:
            raise not_writable("The parents field is not directly writable in update requests. "
                               "Use the addParents and removeParents parameters instead.")
        if any(k in FILE_FIELDS and k not in UPDATE_WRITABLE for k in meta):
            raise not_writable()
        changes: dict[str, Any] = {}
        if "name" in meta and meta["name"] is not None:
            if not isinstance(meta["name"], str):
                raise bad_request("Invalid value for name.", "invalid", location="name", location_type="body")
            changes["name"] = meta["name"]
        if meta.get("mimeType"):
            changes["mimeType"] = str(meta["mimeType"])
        if "description" in meta:
            changes["description"] = meta["description"]
        if meta.get("properties") is not None:
            changes["properties"] = self._check_properties("properties", meta["properties"], f.get("properties"))
        if meta.get("appProperties") is not None:
            # Merged into what this app sees; with per-app privacy off that is everyone's,
            # and the result is kept as the caller's own.
            mine = self._check_properties("appProperties", meta["appProperties"], self._app_props_view(f, caller))
            by_app = dict(f["_app_props"]) if self.faults.app_visibility else {}
            by_app.pop(caller.client_id, None)
            if mine:
                by_app[caller.client_id] = mine
            changes["_app_props"] = by_app
        if meta.get("modifiedTime") is not None:
            changes["modifiedTime"] = self._check_time("modifiedTime", meta["modifiedTime"])
        if meta.get("originalFilename") and not is_google_type(f["mimeType"]):
            changes["originalFilename"] = str(meta["originalFilename"])
        for flag in ("trashed", "starred"):
            if flag in meta and meta[flag] is not None:
                changes[flag] = bool(meta[flag])
        parents = list(f.get("parents", []))
        for pid in filter(None, (query.get("removeParents") or "").split(",")):
            parents = [p for p in parents if p != self._resolve(pid)]
        for pid in filter(None, (query.get("addParents") or "").split(",")):
            resolved = self._check_parent(pid, caller, self._all_drives(query))
            if resolved == f["id"] or resolved in self._descendants(f["id"]):
                # guess at the wording; Drive documents a 400 for parent cycles
                raise bad_request("A folder cannot be moved into itself or one of its descendants.",
                                  "invalid", location="addParents", location_type="parameter")
            if resolved not in parents:
                if resolved not in f.get("parents", []):
                    self._check_folder_room(resolved)  # moving in counts like creating there
                parents.append(resolved)
        if len(parents) > 1:
            raise ApiError(403, "cannotAddParent", "Increasing the number of parents is not allowed")
        if parents != f.get("parents", []):
            changes["parents"] = parents
        # keepRevisionForever "set[s] the keepForever field in the new head revision"; guess: a
        # metadata-only update ignores it.  _by: who made the revision (lastModifyingUser).
        changes["_keep_forever"] = self._keep_param(query)
        changes["_by"] = caller.user_email if caller else None
        return changes

    @staticmethod
    def _keep_param(query: dict) -> bool:
        return query.get("keepRevisionForever") == "true"

    def _apply_patch(self, f: dict, changes: dict, content: bytes | None, media_mime: str | None) -> None:
        if content is not None and changes.get("_keep_forever"):
            self._check_keep_forever_room(f)  # before anything changes
        old_drive = f.get("driveId")
        if "parents" in changes or changes.get("trashed", f["explicitlyTrashed"]) != f["explicitlyTrashed"]:
            self._lag_lists(f, self._list_state(f))  # lists go on showing it where (and as) it was
        for key in ("name", "mimeType", "parents", "starred", "modifiedTime", "_app_props", "originalFilename"):
            if key in changes:
                f[key] = changes[key]
        if "parents" in changes:  # a move may take it (and what it holds) into or out of a shared drive
            drive_id = self._drive_of(f["parents"][0]) if f["parents"] else None
            for moved in [f] + [self.files[fid] for fid in self._descendants(f["id"])]:
                moved.pop("driveId", None)
                if drive_id:
                    moved["driveId"] = drive_id
                if moved is not f and drive_id != old_drive:
                    self._record_descendant_change(moved, True)
        for key in ("description", "properties"):
            if key in changes:
                if changes[key]:
                    f[key] = changes[key]
                else:
                    f.pop(key, None)
        if "trashed" in changes and changes["trashed"] != f["explicitlyTrashed"]:
            self._set_trashed(f, changes["trashed"])
        if "parents" in changes:
            f["trashed"] = f["explicitlyTrashed"]
            self._inherit_trash(f)
        if content is not None:
            # A new revision: same id, new bytes, checksums and modifiedTime.
            if "mimeType" not in changes and media_mime:
                f["mimeType"] = media_mime
            f["content"] = bytes(content)
            f.update(digests(f["content"]))
            if "modifiedTime" not in changes:
                f["modifiedTime"] = now_rfc3339()
            if not is_google_type(f["mimeType"]):
                f.setdefault("_revisions", [])
                self._add_revision(f, changes.get("_keep_forever", False), changes.get("_by"))
        # guess: a metadata-only change leaves modifiedTime alone (it tracks content)
        f["modifiedByMeTime"] = now_rfc3339()
        f["version"] = str(int(f.get("version", "1")) + 1)
        self._record_change(f)  # every update is a change, metadata-only ones included

    def _set_trashed(self, f: dict, trashed: bool) -> None:
        """Trash/untrash a file; descendants follow, unless trashed on their own.
        All of them, also those the caller cannot see (real Drive does the same)."""
        affected = [f] + [self.files[fid] for fid in self._descendants(f["id"])]
        before = [self._list_state(g) for g in affected]
        f["explicitlyTrashed"] = trashed
        f["trashed"] = trashed or self._parent_trashed(f)
        if trashed:
            f["trashedTime"] = now_rfc3339()
        else:
            f.pop("trashedTime", None)
        for child in affected[1:]:
            child["trashed"] = child["explicitlyTrashed"] or self._parent_trashed(child)
        for g, old in zip(affected, before):
            if self._list_state(g) != old:
                self._lag_lists(g, old)
                if g is not f:  # f is recorded by _apply_patch; descendants changed state too
                    self._record_descendant_change(g, True)

    def _parent_trashed(self, f: dict) -> bool:
        parent = self.files.get(f["parents"][0]) if f.get("parents") else None
        return bool(parent and parent["trashed"])

    # -- metadata create / update ------------------------------------------------

    def _create(self, query: dict, body: bytes, caller: Caller) -> Reply:
        self._check_file_fields(query)
        meta = self._json_body(body)
        self._check_create_rate()
        with self.lock:
            try:
                norm = self._validate_create(meta, caller, all_drives=self._all_drives(query),
                                             keep_forever=self._keep_param(query))
                self._check_storage(0)
                f = self._commit_create(norm, b"", "application/octet-stream")
            except _IdReused as reused:
                f = reused.existing
            return self._file_reply(f, query.get("fields"), caller)

    def _update(self, file_id: str, query: dict, body: bytes, caller: Caller) -> Reply:
        self._check_file_fields(query)
        meta = self._json_body(body)
        with self.lock:
            f = self._lookup(file_id, caller, self._all_drives(query))
            changes = self._validate_patch(f, meta, query, caller)
            self._apply_patch(f, changes, None, None)
            return self._file_reply(f, query.get("fields"), caller)

    # -- uploads: media, multipart, resumable ----------------------------------------

    def _upload(self, file_id: str | None, query: dict, headers: Any, body: bytes, handler: _Handler,
                caller: Caller) -> Reply:
        upload_type = query.get("uploadType")
        if upload_type not in ("media", "multipart", "resumable"):
            # guess at the wording of Drive's refusal
            raise invalid_param("uploadType", "Invalid upload type." if upload_type else
                                "Upload requests must include an uploadType URL parameter and a URL-encoded file ID.")
        self._check_file_fields(query)
        if file_id is None:
            self._check_create_rate()
        with self.lock:
            self._check_daily_cap()
            target = self._lookup(file_id, caller, self._all_drives(query)) if file_id else None
        content_type = headers.get("Content-Type") or "application/octet-stream"
        if upload_type == "media":
            return self._finish_simple(target, query, {}, body, content_type.split(";")[0].strip(), caller)
        if upload_type == "multipart":
            parts = parse_multipart_related(content_type, body)
            if len(parts) != 2:
                raise bad_request(f"Invalid multipart request with {len(parts)} mime parts.", "badContent")
            (meta_headers, meta_raw), (media_headers, media) = parts
            if not meta_headers.get("content-type", "application/json").startswith("application/json"):
                raise bad_request("The metadata part of a multipart upload must be JSON.", "badContent")
            media_mime = media_headers.get("content-type", "application/octet-stream").split(";")[0].strip()
            return self._finish_simple(target, query, self._json_body(meta_raw), media, media_mime, caller)
        return self._start_resumable(target, query, headers, body, handler, caller)

    def _finish_simple(self, target: dict | None, query: dict, meta: dict, content: bytes, media_mime: str,
                       caller: Caller) -> Reply:
        with self.lock:
            if target is None:
                try:
                    norm = self._validate_create(meta, caller, all_drives=self._all_drives(query),
                                                 keep_forever=self._keep_param(query))
                    self._check_storage(len(content))
                    f = self._commit_create(norm, content, media_mime)
                except _IdReused as reused:
                    f = reused.existing  # the bytes sent are dropped: only the old file is there
            else:
                changes = self._validate_patch(target, meta, query, caller)
                self._check_storage(len(content) - self._freed_by_new_revision(target))
                self._apply_patch(target, changes, content, media_mime)
                f = target
            self.uploaded_bytes += len(content)
            return self._file_reply(f, query.get("fields"), caller, upload=True)

    def _start_resumable(self, target: dict | None, query: dict, headers: Any, body: bytes,
                         handler: _Handler, caller: Caller) -> Reply:
        meta = self._json_body(body)
        declared_raw = headers.get("X-Upload-Content-Length")
        declared = None
        if declared_raw is not None:
            if not declared_raw.strip().isdigit():
                raise bad_request("Invalid X-Upload-Content-Length header.", "badRequest")
            declared = int(declared_raw)
        with self.lock:
            if target is None:
                # A reused id is answered when the session completes (that is when a
                # file would be made), whichever answer `reused_id_answer` picks.
                create = self._validate_create(meta, caller, all_drives=self._all_drives(query),
                                               defer_reuse=True, keep_forever=self._keep_param(query))
                patch = None
            else:
                create, patch = None, self._validate_patch(target, meta, query, caller)
                if patch["_keep_forever"]:
                    self._check_keep_forever_room(target)
            self._check_storage(declared or 0)
            media_mime = (headers.get("X-Upload-Content-Type") or meta.get("mimeType")
                          or "application/octet-stream")
            upload_id = "AEnB2U" + secrets.token_urlsafe(48)
            self.upload_sessions[upload_id] = UploadSession(
                upload_id=upload_id, create=create, file_id=target["id"] if target else None, patch=patch,
                media_mime=str(media_mime).split(";")[0].strip(), fields=query.get("fields"),
                declared_size=declared, caller=caller,
            )
        host = handler.headers.get("Host") or f"127.0.0.1:{self.port}"
        path = "/upload/drive/v3/files" + (f"/{quote(target['id'])}" if target else "")
        location = f"http://{host}{path}?uploadType=resumable&upload_id={upload_id}"
        return Reply(200, b"", {"Location": location, "X-GUploader-UploadID": upload_id})

    _RANGE_DATA = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$", re.IGNORECASE)
    _RANGE_QUERY = re.compile(r"^bytes \*/(\d+|\*)$", re.IGNORECASE)

    def _resumable_put(self, query: dict, headers: Any, body: bytes) -> Reply:
        """One PUT on a session: a chunk, or a status query (`bytes */TOTAL`)."""
        with self.lock:
            sess = self.upload_sessions.get(query["upload_id"])
            if sess is None or sess.expired:
                if sess is not None:
                    self._count("expired_session")
                # guess at the body; the 404 status for a dead session is documented
                raise ApiError(404, "notFound", "Not Found")
            if sess.done_file_id is not None:
                return self._session_done_reply(sess, query)
            header = (headers.get("Content-Range") or "").strip()
            if not header:
                # No Content-Range: the body is the whole file in one request
                # (googleapiclient sends an empty file this way).
                if sess.data:
                    raise bad_request("Missing Content-Range header.", "badRequest")
                if not body:
                    sess.total = self._check_total(sess, 0)
                    return self._complete_session(sess, query)
                start, end, total = 0, len(body) - 1, len(body)
            elif m := self._RANGE_QUERY.match(header):
                if body:
                    raise bad_request("A status query must not carry a body.", "badRequest")
                total = self._check_total(sess, None if m.group(1) == "*" else int(m.group(1)))
                if total is not None and total == len(sess.data):
                    sess.total = total
                    return self._complete_session(sess, query)
                return self._incomplete_reply(sess)
            elif m := self._RANGE_DATA.match(header):
                start, end = int(m.group(1)), int(m.group(2))
                total = None if m.group(3) == "*" else int(m.group(3))
            else:
                raise bad_request("Failed to parse Content-Range header.", "badRequest")
            return self._store_chunk(sess, query, start, end, total, body)

    def _store_chunk(self, sess: UploadSession, query: dict, start: int, end: int, total: int | None,
                     body: bytes) -> Reply:
        if end < start or (total is not None and end >= total):
            raise bad_request("Failed to parse Content-Range header.", "badRequest")
        if len(body) != end - start + 1:
            raise bad_request(
                f"Invalid request. The Content-Range header says {end - start + 1} byte(s) but the "
                f"request body contained {len(body)} byte(s).", "badRequest")
        total = self._check_total(sess, total)
        limit = total if total is not None else sess.declared_size
        if limit is not None and end >= limit:
            raise bad_request(f"Invalid request. The chunk ends at byte {end}, beyond the upload size "
                              f"of {limit} byte(s).", "badRequest")
        received = len(sess.data)
        if start > received:
            # Verified wording (Drive via a public issue report).
            raise bad_request(
                f"Invalid request.  According to the Content-Range header, the upload offset is {start} "
                f"byte(s), which exceeds already uploaded size of {received} byte(s).", "badRequest")
        final = total is not None and end + 1 == total
        if not final and len(body) % CHUNK_GRANULARITY:
            raise bad_request(
                f"Invalid request.  The number of bytes uploaded is required to be a multiple of "
                f"{CHUNK_GRANULARITY} (256 KiB), except for the final request. The received request "
                f"contained {len(body)} bytes, which does not meet this requirement.", "badRequest")
        # guess: bytes before `received` were already stored (a retried chunk); they are skipped
        new = body[received - start :]
        if self._chance("partial_chunk_rate"):
            keep = self._rng.randrange(0, len(new) // CHUNK_GRANULARITY + 1) * CHUNK_GRANULARITY
            if keep < len(new):
                self._count("partial_chunk")
                final, new = False, new[:keep]
        self._check_storage(len(sess.data) + len(new) - self._replaced_bytes(sess))
        sess.total = total
        sess.data += new
        self.uploaded_bytes += len(new)
        if final:
            return self._complete_session(sess, query)
        return self._incomplete_reply(sess)

    def _replaced_bytes(self, sess: UploadSession) -> int:
        """Bytes an update session will free (the old revision) for quota checks."""
        old = self.files.get(sess.file_id) if sess.file_id else None
        return self._freed_by_new_revision(old) if old else 0

    @staticmethod
    def _check_total(sess: UploadSession, total: int | None) -> int | None:
        """Validate a Content-Range total against what the session knows; returns
        the total now in force.  Nothing is changed: a refused request leaves the
        session as it was."""
        if total is None:
            return sess.total
        known = sess.total if sess.total is not None else sess.declared_size
        if known is not None and known != total:
            raise bad_request(
                f"Invalid request. The total size {total} in Content-Range does not match the "
                f"upload size {known}.", "badRequest")
        if total < len(sess.data):
            raise bad_request(f"Invalid request. The total size {total} is smaller than the "
                              f"{len(sess.data)} byte(s) already uploaded.", "badRequest")
        return total

    @staticmethod
    def _incomplete_reply(sess: UploadSession) -> Reply:
        """308 Resume Incomplete, with Range only once something is stored and
        never a Location header (googleapiclient must not follow it)."""
        headers = {"Range": f"bytes=0-{len(sess.data) - 1}"} if sess.data else {}
        headers["X-GUploader-UploadID"] = sess.upload_id
        return Reply(308, b"", headers, reason="Resume Incomplete")

    def _complete_session(self, sess: UploadSession, query: dict) -> Reply:
        content = bytes(sess.data)
        if sess.file_id is None:
            try:
                f = self._commit_create(sess.create, content, sess.media_mime)
            except _IdReused as reused:
                f = reused.existing  # "success": the uploaded bytes are dropped
        else:
            f = self._lookup(sess.file_id, sess.caller)
            self._apply_patch(f, sess.patch, content, sess.media_mime)
        sess.done_file_id = f["id"]
        sess.data = bytearray()  # the bytes now live in the file
        sess.total = len(content)
        return self._file_reply(f, query.get("fields") or sess.fields, sess.caller, upload=True)

    def _session_done_reply(self, sess: UploadSession, query: dict) -> Reply:
        """A completed session answers 200 with the file again (status queries
        after a lost final answer land here)."""
        f = self.files.get(sess.done_file_id)
        if f is None:
            raise ApiError(404, "notFound", "Not Found")
        return self._file_reply(f, query.get("fields") or sess.fields, sess.caller, upload=True)

    def _apply_expire_switch(self) -> None:
        """`faults.expire_sessions` is edge-triggered: the first API request after
        it is switched on expires the sessions that exist at that moment, once."""
        with self.lock:
            if self.faults.expire_sessions and not self._expire_seen:
                self.expire_all_sessions()
            self._expire_seen = self.faults.expire_sessions


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a Google Drive v3 emulator on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    parser.add_argument("--token", help="access token to register (default: a random one)")
    args = parser.parse_args(argv)
    emu = DriveEmulator(args.port, require_auth=not args.no_auth).start()
    token = emu.issue_token(args.token)
    print(f"Drive emulator listening on {emu.url}", flush=True)
    print(f"token: {token}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
