"""A fault-injecting HTTP proxy in front of moto server, for S3 faults moto cannot produce itself.

The tool under test talks real S3 HTTP to this proxy (``AWS_ENDPOINT_URL`` = ``proxy.url``); the
proxy forwards every request to moto unchanged and, when asked, answers or damages it instead:

- ``slowdown_count``: the next N object GETs get ``503 SlowDown`` (S3's throttling answer);
- ``truncate_count``: the next N object GETs send the headers and half the body, then hang up;
- ``listing_cut_count``: the next N listings answer 200 with half their XML (its length stated as
  that half: a body cut short where the client cannot tell from the framing);
- ``listing_error_count``: the next N listings answer 200 with an ``<Error>`` body (InternalError),
  as S3 documents for CopyObject and CompleteMultipartUpload ("a 200 OK response can contain
  either a success or an error");
- ``on_object_get(key)``: called before an object GET is forwarded (a test deletes the object there
  to get "deleted between list and get", or blocks to hold a download in flight).

Only object GETs and listings are faulted (HEADs pass), so a test decides exactly what breaks.

Four switches (off by default) make moto's answers look like other S3s. Each is a bool or a
predicate on the key, and is applied alike to the ListObjectsV2 XML, HEAD, GET (ranged too) and
PutObject answers, so a client sees one consistent object:

- ``sse_kms``: as AWS answers for an SSE-KMS object: ``x-amz-server-side-encryption: aws:kms``
  plus the key id, and an ETag of 32 hex digits that is NOT the MD5 of the bytes
  (md5(b"kms:" + moto's ETag));
- ``sse_c``: the same for SSE-C: ``x-amz-server-side-encryption-customer-algorithm: AES256``
  and the key's MD5, ETag md5(b"sse-c:" + ETag). As on AWS, a GET or HEAD without the customer
  key headers gets 400 InvalidRequest ("...the correct parameters must be provided...", AWS
  GetObject docs); with them (any key: none is checked) the object is served;
- ``opaque_etag``: an ETag of 32 hex digits that is not the MD5, with no header saying why
  (S3 Express directory buckets, other stores' encryption), md5(b"opaque:" + ETag);
- ``empty_etag``: the ETag is ``""`` everywhere, as some S3-compatible gateways send it;
- ``capitalise_metadata``: user metadata comes back as ``X-Amz-Meta-Mtime`` (MinIO, Go's
  canonical header case) instead of ``x-amz-meta-mtime``.

``intelligent_tiering`` (key -> archive tier or None) makes those keys Intelligent-Tiering objects
(AWS "Working with S3 Intelligent-Tiering"): listed and HEADed with StorageClass
INTELLIGENT_TIERING; while the value is ``ARCHIVE_ACCESS`` or ``DEEP_ARCHIVE_ACCESS`` a HEAD carries
``x-amz-archive-status`` and a GET gets 403 InvalidObjectState, as AWS answers for an object that
must be restored first; None is the frequent tier (readable, as after a restore, which a
RestoreObject through this proxy completes at once). Each object GET
and HEAD is counted per key in ``gets`` and ``heads``; ``get_ranges`` lists each object GET's key
and Range header (None without one), in order.

``restore_status_in_listing`` lists a ``RestoreStatus`` when the request asks for it
(``x-amz-optional-object-attributes: RestoreStatus``), as AWS does and moto does not: only for
objects restored (by a RestoreObject through this proxy; moto completes it at once) or being
restored (keys in ``restoring``: their HEAD says ``ongoing-request="true"`` and a GET still gets
403 InvalidObjectState). ``refuse_optional_attributes`` answers such a listing 400 InvalidArgument
instead, as a store that does not know the header may. "If the object hasn't been restored, there is no header response"
(AWS API_RestoreStatus), so an archived object without one is listed as moto lists it.

If-Match on an object whose ETag was rewritten: the rewritten value is translated back to moto's
before forwarding (so conditional GETs keep working, and an overwrite still gives 412); any other
value, the true MD5 included, gets 412 PreconditionFailed as on AWS. With ``empty_etag`` the
header is dropped, as ``rclone serve s3`` ignores If-Match. What fired is counted in ``counts``.
"""
from __future__ import annotations

import hashlib
import html
import http.client
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Union
from urllib.parse import parse_qs, unquote, urlsplit

SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                 b"<Message>Please reduce your request rate.</Message></Error>")
PRECONDITION_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code>'
                     b"<Message>At least one of the pre-conditions you specified did not hold</Message>"
                     b"<Condition>If-Match</Condition></Error>")
INTERNAL_ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
                       b"<Message>We encountered an internal error. Please try again.</Message></Error>")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
KMS_KEY_ID = "arn:aws:kms:us-east-1:111122223333:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
SSE_C_KEY_MD5 = "ZmFrZS1jdXN0b21lci1rZXk="   # any base64: no customer key is checked
SSE_C_KEY_MISSING_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidRequest</Code>'
                          b"<Message>The object was stored using a form of Server Side Encryption. The correct "
                          b"parameters must be provided to retrieve the object.</Message></Error>")
ARCHIVED_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidObjectState</Code>'
                 b"<Message>The operation is not valid for the object's access tier</Message>"
                 b"<StorageClass>INTELLIGENT_TIERING</StorageClass><AccessTier>ARCHIVE_ACCESS</AccessTier></Error>")
INVALID_ARGUMENT_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InvalidArgument</Code>'
                         b"<Message>Unknown header x-amz-optional-object-attributes</Message></Error>")
SSE_HEADERS = {"x-amz-server-side-encryption", "x-amz-server-side-encryption-aws-kms-key-id",
               "x-amz-server-side-encryption-customer-algorithm", "x-amz-server-side-encryption-customer-key-md5"}
Switch = Union[bool, Callable[[str], bool]]
_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.S)
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.S)
_ETAG = re.compile(rb"<ETag>(.*?)</ETag>", re.S)
_STORAGE_CLASS = re.compile(rb"<StorageClass>(.*?)</StorageClass>", re.S)


def _unquote_etag(value: str) -> str:
    value = html.unescape(value).strip()
    return value[2:] if value.startswith("W/") else value


def _canonical_case(name: str) -> str:
    """Go's (and MinIO's) canonical header case: x-amz-meta-src-last-modified → X-Amz-Meta-Src-Last-Modified."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


class S3FaultProxy:
    """Forwards to `upstream_url` (moto); faults are counted in `counts`. Thread-safe via `lock`."""

    def __init__(self, upstream_url: str):
        split = urlsplit(upstream_url)
        self.upstream_host, self.upstream_port = split.hostname, split.port
        self.lock = threading.Lock()
        self.slowdown_count = 0
        self.truncate_count = 0
        self.listing_cut_count = 0
        self.listing_error_count = 0
        self.on_object_get: Callable[[str], None] | None = None
        self.sse_kms: Switch = False
        self.sse_c: Switch = False
        self.opaque_etag: Switch = False
        self.empty_etag: Switch = False
        self.capitalise_metadata: Switch = False
        self.intelligent_tiering: dict[str, str | None] = {}
        self.restore_status_in_listing = False
        self.refuse_optional_attributes = False
        self.restored: set[str] = set()
        self.restoring: set[str] = set()
        self.gets: Counter[str] = Counter()
        self.heads: Counter[str] = Counter()
        self.get_ranges: list[tuple[str, str | None]] = []   # (key, Range header or None) of each object GET
        self.counts: Counter[str] = Counter()
        self._origin: dict[tuple[str, str], str] = {}   # (key, ETag we sent) -> moto's ETag
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> S3FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def hold_gets(self, key: str | None = None, timeout_s: float = 120) -> tuple[threading.Event, threading.Event]:
        """Stall object GETs (of `key`, or every one) until released; returns (reached, release)."""
        reached, release = threading.Event(), threading.Event()

        def hold(requested_key: str) -> None:
            if key is None or requested_key == key:
                reached.set()
                release.wait(timeout_s)

        self.on_object_get = hold
        return reached, release

    def _take(self, name: str) -> bool:
        with self.lock:
            left = getattr(self, name)
            if left > 0:
                setattr(self, name, left - 1)
                self.counts[name.removesuffix("_count")] += 1
                return True
            return False

    # -- answer rewriting (the switches) ------------------------------------------------------------
    def _on(self, switch: str, key: str) -> bool:
        value = getattr(self, switch)
        return bool(value(key)) if callable(value) else bool(value)

    def _etag_switch(self, key: str) -> str | None:
        """The switch that rewrites this key's ETag (empty_etag wins, then sse_kms, sse_c, opaque_etag)."""
        return next((name for name in ("empty_etag", "sse_kms", "sse_c", "opaque_etag") if self._on(name, key)), None)

    def _rewrite_etag(self, key: str, original: str) -> tuple[str, str | None]:
        """(ETag to send, with quotes; the switch that fired) for moto's `original` ETag (quotes optional)."""
        switch = self._etag_switch(key)
        if switch is None:
            return original, None
        bare = _unquote_etag(original).strip('"')
        if switch == "empty_etag":
            return '""', switch
        salt = {"sse_kms": b"kms:", "sse_c": b"sse-c:", "opaque_etag": b"opaque:"}[switch]
        rewritten = hashlib.md5(salt + bare.encode()).hexdigest()
        with self.lock:
            self._origin[(key, rewritten)] = bare
        return f'"{rewritten}"', switch

    def _count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n

    def _if_match(self, key: str, headers: dict[str, str]) -> bool:
        """Translate If-Match for a rewritten key in place; False when S3 would answer 412 now."""
        name = next((k for k in headers if k.lower() == "if-match"), None)
        switch = self._etag_switch(key)
        if name is None or switch is None:
            return True
        value = headers[name]
        if switch == "empty_etag":
            del headers[name]   # the gateway has no ETag to compare; rclone serve s3 ignores If-Match
            self._count("if_match_ignored")
            return True
        wanted = [_unquote_etag(v).strip('"') for v in value.split(",")]
        if "*" in wanted:
            return True
        with self.lock:
            originals = [self._origin[(key, v)] for v in wanted if (key, v) in self._origin]
        if not originals:
            self._count("if_match_refused")
            return False
        headers[name] = ", ".join(f'"{v}"' for v in originals)
        self._count("if_match_translated")
        return True

    def _object_headers(self, key: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """HEAD/GET/PUT answer headers with the switches applied."""
        out: list[tuple[str, str]] = []
        switch = self._etag_switch(key)
        encryption = "sse_kms" if self._on("sse_kms", key) else "sse_c" if self._on("sse_c", key) else None
        for name, value in headers:
            lower = name.lower()
            if lower == "etag" and switch:
                value, fired = self._rewrite_etag(key, value)
                self._count(str(fired))
            elif lower in SSE_HEADERS and encryption:
                continue   # replaced below, so moto's own SSE answer never doubles ours
            elif lower.startswith("x-amz-meta-") and self._on("capitalise_metadata", key):
                name = _canonical_case(lower)
                self._count("capitalise_metadata")
            out.append((name, value))
        if encryption == "sse_kms":
            out += [("x-amz-server-side-encryption", "aws:kms"),
                    ("x-amz-server-side-encryption-aws-kms-key-id", KMS_KEY_ID)]
        elif encryption == "sse_c":
            out += [("x-amz-server-side-encryption-customer-algorithm", "AES256"),
                    ("x-amz-server-side-encryption-customer-key-MD5", SSE_C_KEY_MD5)]
        if encryption and switch != encryption:
            self._count(encryption)   # encrypted, but the ETag came from another switch
        if key in self.intelligent_tiering:
            out = [(n, v) for n, v in out if n.lower() != "x-amz-storage-class"]
            out.append(("x-amz-storage-class", "INTELLIGENT_TIERING"))
            if self.intelligent_tiering[key]:
                out.append(("x-amz-archive-status", str(self.intelligent_tiering[key])))
        if key in self.restoring:
            out = [(n, v) for n, v in out if n.lower() != "x-amz-restore"]
            out.append(("x-amz-restore", 'ongoing-request="true"'))
        return out

    def _listing(self, payload: bytes, restore_status: bool = False) -> bytes:
        """ListObjects(V2) XML with each entry's ETag rewritten for its key (and its RestoreStatus)."""
        url_encoded = b"<EncodingType>url</EncodingType>" in payload

        def one(match: re.Match[bytes]) -> bytes:
            entry = match.group(0)
            key_match = _KEY.search(entry)
            if not key_match:
                return entry
            key = html.unescape(key_match.group(1).decode())
            key = unquote(key) if url_encoded else key
            if key in self.intelligent_tiering:
                tier = b"<StorageClass>INTELLIGENT_TIERING</StorageClass>"
                entry = _STORAGE_CLASS.sub(tier, entry) if _STORAGE_CLASS.search(entry) else \
                    entry.replace(b"</Contents>", tier + b"</Contents>")
            if restore_status and (key in self.restoring or key in self.restored):
                status = (b"<RestoreStatus><IsRestoreInProgress>true</IsRestoreInProgress></RestoreStatus>"
                          if key in self.restoring else
                          b"<RestoreStatus><IsRestoreInProgress>false</IsRestoreInProgress>"
                          b"<RestoreExpiryDate>2099-01-01T00:00:00.000Z</RestoreExpiryDate></RestoreStatus>")
                entry = entry.replace(b"</Contents>", status + b"</Contents>")
            etag_match = _ETAG.search(entry)
            if etag_match is None or self._etag_switch(key) is None:
                return entry
            rewritten, fired = self._rewrite_etag(key, html.unescape(etag_match.group(1).decode()))
            self._count(str(fired))
            new_tag = b"<ETag>" + html.escape(rewritten, quote=False).encode() + b"</ETag>"
            return entry[:etag_match.start()] + new_tag + entry[etag_match.end():]

        return _CONTENTS.sub(one, payload)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        parts = unquote(split.path).lstrip("/").split("/", 1)
        query = parse_qs(split.query, keep_blank_values=True)
        is_object = len(parts) == 2 and parts[1] != ""
        key = parts[1] if is_object else ""
        is_object_get = handler.command == "GET" and is_object
        is_object_read = handler.command in ("GET", "HEAD") and is_object and not query.keys() & {"uploadId", "tagging", "acl"}
        is_put_object = handler.command == "PUT" and is_object and not query.keys() & {"uploadId", "partNumber"} \
            and "x-amz-copy-source" not in {k.lower() for k in handler.headers}
        is_listing = handler.command == "GET" and not is_object and parts[0] != ""
        if is_listing and self.refuse_optional_attributes and "x-amz-optional-object-attributes" in \
                {k.lower() for k in handler.headers}:
            self._count("optional_attributes_refused")
            self._answer(handler, 400, "Bad Request", INVALID_ARGUMENT_BODY)
            return
        if is_object_read:
            with self.lock:
                (self.gets if is_object_get else self.heads)[key] += 1
        if handler.command == "POST" and is_object and "restore" in query:
            with self.lock:
                self.restored.add(key)
                tiered = key in self.intelligent_tiering
                if tiered:   # moto has no archive tier to restore from; the object is back at once
                    self.intelligent_tiering[key] = None
            if tiered:
                self._answer(handler, 202, "Accepted", b"")
                return
        if is_object_get and (self.intelligent_tiering.get(key) or key in self.restoring):
            self._count("archived_get")
            self._answer(handler, 403, "Forbidden", ARCHIVED_BODY)
            return
        if is_object_get:
            asked_range = next((v for k, v in handler.headers.items() if k.lower() == "range"), None)
            with self.lock:
                self.get_ranges.append((key, asked_range))
            if asked_range is not None:
                self._count("ranged_get")
            if self.on_object_get is not None:
                self.on_object_get(parts[1])
            if self._take("slowdown_count"):
                self._answer(handler, 503, "Slow Down", SLOWDOWN_BODY)
                return
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        if is_object_read and self._on("sse_c", key):
            customer = {k for k in headers if k.lower().startswith("x-amz-server-side-encryption-customer-")}
            if len(customer) < 3:
                self._count("sse_c_key_missing")
                self._answer(handler, 400, "Bad Request", SSE_C_KEY_MISSING_BODY)
                return
            for name in customer:   # moto holds the object unencrypted: it must not see the key
                del headers[name]
        if is_object_read and not self._if_match(key, headers):
            self._answer(handler, 412, "Precondition Failed", PRECONDITION_BODY)
            return
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        answer_headers = response.getheaders()
        if response.status in (200, 206) and (is_object_read or is_put_object):
            answer_headers = self._object_headers(key, answer_headers)
        elif response.status == 200 and is_listing and b"<ListBucketResult" in payload[:512]:
            asked = handler.headers.get("x-amz-optional-object-attributes", "")
            payload = self._listing(payload, self.restore_status_in_listing and "RestoreStatus" in asked)
        status, reason = response.status, response.reason
        if is_listing and status == 200 and self._take("listing_cut_count"):
            payload = payload[: len(payload) // 2]
        elif is_listing and status == 200 and self._take("listing_error_count"):
            payload = INTERNAL_ERROR_BODY
        truncate = is_object_get and response.status == 200 and len(payload) > 1 and self._take("truncate_count")
        handler.send_response(status, reason)
        for name, value in answer_headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        try:
            if handler.command != "HEAD":
                handler.wfile.write(payload[: len(payload) // 2] if truncate else payload)
            if truncate:
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass   # the client gave up on a damaged answer: that is the point
        if truncate:
            handler.close_connection = True

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, reason: str, body: bytes) -> None:
        handler.send_response(status, reason)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
