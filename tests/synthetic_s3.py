"""A synthetic S3 bucket of any size for the benchmark's scale scenario: ListObjectsV2 pages are
generated on request, so a million objects cost no memory and no seeding time.

Keys are `NNNN/IMG_NNNNNNN.jpg` (1,000 photos per folder), listed in key order as S3 does; each
object's ETag, size and LastModified derive from its number (`synthetic_object`). Only listing is
served: the scenario re-runs a bucket whose checkpoint says every object is done, so nothing is
downloaded.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

LAST_MODIFIED = "2021-06-01T12:00:00.000Z"


def synthetic_object(n: int) -> tuple[str, str, int]:
    """(key, ETag, size) of object number n."""
    return f"{n // 1000:04d}/IMG_{n:07d}.jpg", hashlib.md5(str(n).encode()).hexdigest(), 1_000_000 + n % 9973


@contextlib.contextmanager
def synthetic_bucket(bucket: str, count: int) -> Iterator[str]:
    """Serve `count` objects in `bucket` on 127.0.0.1; yields the endpoint URL."""

    def answer(path: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        if path.strip("/") != bucket or query.get("list-type") != "2":
            return 404, "application/xml", b"<Error><Code>NoSuchKey</Code></Error>"
        start = int(query.get("continuation-token") or 0)
        end = min(count, start + int(query.get("max-keys") or 1000))
        contents = "".join(
            f"<Contents><Key>{escape(key)}</Key><LastModified>{LAST_MODIFIED}</LastModified>"
            f"<ETag>&quot;{etag}&quot;</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
            for key, etag, size in map(synthetic_object, range(start, end)))
        more = end < count
        body = ('<?xml version="1.0" encoding="UTF-8"?>'
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>{bucket}</Name><Prefix></Prefix><KeyCount>{end - start}</KeyCount>"
                f"<MaxKeys>1000</MaxKeys><IsTruncated>{'true' if more else 'false'}</IsTruncated>"
                + (f"<NextContinuationToken>{end}</NextContinuationToken>" if more else "")
                + contents + "</ListBucketResult>")
        return 200, "application/xml", body.encode()

    with serve_on_loopback(answer) as url:
        yield url


@contextlib.contextmanager
def serve_on_loopback(answer: Callable[[str, dict[str, str]], tuple[int, str, bytes]]) -> Iterator[str]:
    """Answer GET requests on 127.0.0.1 from a thread with `answer(path, query)` → (status, content
    type, body); yields the base URL (no trailing slash)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            status, content_type, body = answer(split.path, query)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
