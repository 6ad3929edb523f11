"""A fault-injecting HTTP proxy in front of moto server, for S3 faults moto cannot produce itself.

The tool under test talks real S3 HTTP to this proxy (``AWS_ENDPOINT_URL`` = ``proxy.url``); the
proxy forwards every request to moto unchanged and, when asked, answers or damages it instead:

- ``slowdown_count``: the next N object GETs get ``503 SlowDown`` (S3's throttling answer);
- ``truncate_count``: the next N object GETs send the headers and half the body, then hang up;
- ``on_object_get(key)``: called before an object GET is forwarded (a test deletes the object there
  to get "deleted between list and get", or blocks to hold a download in flight).

Only object GETs are faulted (listings and HEADs pass), so a test decides exactly what breaks.
"""
from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import unquote, urlsplit

SLOWDOWN_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
                 b"<Message>Please reduce your request rate.</Message></Error>")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class S3FaultProxy:
    """Forwards to `upstream_url` (moto); faults are counted in `counts`. Thread-safe via `lock`."""

    def __init__(self, upstream_url: str):
        split = urlsplit(upstream_url)
        self.upstream_host, self.upstream_port = split.hostname, split.port
        self.lock = threading.Lock()
        self.slowdown_count = 0
        self.truncate_count = 0
        self.on_object_get: Callable[[str], None] | None = None
        self.counts: Counter[str] = Counter()
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

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        split = urlsplit(handler.path)
        parts = unquote(split.path).lstrip("/").split("/", 1)
        is_object_get = handler.command == "GET" and len(parts) == 2 and parts[1] != ""
        if is_object_get:
            if self.on_object_get is not None:
                self.on_object_get(parts[1])
            if self._take("slowdown_count"):
                handler.send_response(503, "Slow Down")
                handler.send_header("Content-Type", "application/xml")
                handler.send_header("Content-Length", str(len(SLOWDOWN_BODY)))
                handler.end_headers()
                handler.wfile.write(SLOWDOWN_BODY)
                return
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
        finally:
            upstream.close()
        truncate = is_object_get and response.status == 200 and len(payload) > 1 and self._take("truncate_count")
        handler.send_response(response.status, response.reason)
        for name, value in response.getheaders():
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
