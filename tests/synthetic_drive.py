"""The Drive copy of tests/synthetic_s3.py's bucket, for the scale scenario's verify at a million
objects: files.list pages generated on request, as Drive would answer a walk of the copy the tool
made (folder `NNNN` under any root, 1,000 photos in each, every one carrying the tool's provenance).

Only what verify asks is served: `files.get` of the root (a folder, not full) and `'<id>' in
parents` listings, paged. The Drive emulator keeps its
files in a list it scans per query, which is right for tests and far too slow for a million.
"""
from __future__ import annotations

import contextlib
import json
import re
from typing import Callable, Iterator

from cloud_transfer import FOLDER_MIME, PROP_ETAG, PROP_MD5, PROP_SOURCE, source_id_for
from tests.synthetic_s3 import serve_on_loopback, synthetic_object

JSON = "application/json; charset=UTF-8"
PARENT_QUERY = re.compile(r"^'([^']*)' in parents")


@contextlib.contextmanager
def synthetic_drive(bucket: str, count: int) -> Iterator[str]:
    """Serve the copy of `count` synthetic objects of `bucket` on 127.0.0.1; yields the endpoint URL."""
    folders = (count + 999) // 1000

    def children(parent: str) -> tuple[int, Callable[[int], dict]]:
        if parent.startswith("folder-"):
            first = int(parent.removeprefix("folder-")) * 1000
            total = min(1000, count - first)

            def photo(i: int) -> dict:
                key, etag, size = synthetic_object(first + i)
                return {"id": f"photo-{first + i:09d}", "name": key.rsplit("/", 1)[1], "mimeType": "image/jpeg",
                        "parents": [parent], "size": str(size), "md5Checksum": etag, "trashed": False,
                        "appProperties": {PROP_SOURCE: source_id_for(bucket, key), PROP_ETAG: etag, PROP_MD5: etag}}
            return total, photo
        return folders, lambda i: {"id": f"folder-{i:04d}", "name": f"{i:04d}", "mimeType": FOLDER_MIME,
                                   "parents": [parent], "trashed": False, "appProperties": {}}

    def answer(path: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        if (got := re.fullmatch(r"/drive/v3/files/([^/]+)/?", path)) is not None:   # verify looks at its root first
            return 200, JSON, json.dumps({"id": got[1], "name": "Amazon Photos Transfer", "mimeType": FOLDER_MIME,
                                          "parents": ["my-drive"], "trashed": False, "appProperties": {}}).encode()
        match = PARENT_QUERY.match(query.get("q", ""))
        if path.rstrip("/") != "/drive/v3/files" or not match:
            return 404, JSON, json.dumps({"error": {"code": 404, "message": "not served here"}}).encode()
        total, make = children(match.group(1))
        start = int(query.get("pageToken") or 0)
        end = min(total, start + int(query.get("pageSize") or 100))
        page: dict = {"files": [make(i) for i in range(start, end)]}
        if end < total:
            page["nextPageToken"] = str(end)
        return 200, JSON, json.dumps(page).encode()

    with serve_on_loopback(answer) as url:
        yield url + "/"
