"""Tests for the Drive v3 emulator.

Two kinds of client: a real googleapiclient service (built from the bundled
discovery document, exactly as cloud_transfer builds it) to prove the emulator
accepts what the library sends, and raw http.client requests for protocol edge
cases the library never produces.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httplib2
import pytest
from google.auth import crypt
from google.auth import jwt as google_jwt
from google.auth.exceptions import RefreshError
from google.oauth2 import service_account
from google.oauth2.credentials import Credentials
from google_auth_httplib2 import AuthorizedHttp
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from googleapiclient.http import MediaIoBaseDownload, MediaIoBaseUpload, build_http

from tests.drive_emulator import (
    DAILY_CAP_MESSAGE,
    DEFAULT_CLIENT_ID,
    DEFAULT_USER_EMAIL,
    DELEGATION_DENIED,
    FOLDER_LIMIT_MESSAGE,
    FOLDER_MIME,
    GOOGLE_TOKEN_URI,
    JWT_BAD_AUDIENCE,
    JWT_BAD_SCOPE,
    JWT_BAD_SIGNATURE,
    JWT_BAD_WINDOW,
    JWT_BEARER_GRANT,
    JWT_NO_ACCOUNT,
    KEEP_FOREVER_OFF_MESSAGE,
    MAX_KEEP_FOREVER_REVISIONS,
    MAX_PURGEABLE_REVISIONS,
    QUOTA_MESSAGE,
    REVISION_DOWNLOAD_MESSAGE,
    ROOT_FOLDER_ID,
    SCOPE_DRIVE,
    SCOPE_DRIVE_FILE,
    SERVICE_ACCOUNT_QUOTA_MESSAGE,
    DriveEmulator,
    Faults,
    parse_fields,
    rsa_public_key,
    select_fields,
)
from tests.service_accounts import DEFAULT_SERVICE_ACCOUNT, make_service_account, service_account_info

CHUNK = 256 * 1024
TRANSPORT_ERRORS = (OSError, http.client.HTTPException, httplib2.HttpLib2Error)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


@pytest.fixture
def emu():
    # A short body timeout keeps tests fast when httplib2 re-sends a consumed stream.
    with DriveEmulator(body_timeout_s=0.3) as e:
        yield e
        assert e.internal_errors == []  # an emulator bug must never pass as a Drive error


def service(emu: DriveEmulator, token: str | None = None, refresh_token: str | None = None,
            client_id: str = "client-id"):
    """A googleapiclient Drive service on its own Http (they are not thread-safe)."""
    creds = Credentials(
        token=token if token is not None or refresh_token else emu.issue_token(),
        refresh_token=refresh_token,
        token_uri=emu.url + "/token",
        client_id=client_id,
        client_secret="client-secret",
    )
    return build_from_document(emu.discovery_document(), http=AuthorizedHttp(creds, http=build_http()))


def q_literal(text: str) -> str:
    """Quote a value for `q` the documented way: backslash first, then apostrophe."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def media(data: bytes, mime: str = "image/jpeg", resumable: bool = True) -> MediaIoBaseUpload:
    return MediaIoBaseUpload(io.BytesIO(data), mimetype=mime, chunksize=CHUNK, resumable=resumable)


def run_upload(request) -> dict:
    response = None
    while response is None:
        _, response = request.next_chunk()
    return response


def upload(svc, data: bytes, name: str, parents: list[str] | None = None,
           fields: str = "id,name,size,md5Checksum,parents", **meta) -> dict:
    body = dict(meta, name=name)
    if parents:
        body["parents"] = parents
    return run_upload(svc.files().create(body=body, media_body=media(data), fields=fields))


def raw(emu: DriveEmulator, method: str, path: str, body: bytes | str | dict | None = None,
        headers: dict | None = None, token: str | None = "auto", host: str | None = None):
    """One request over http.client; returns (status, headers, decoded body)."""
    hdrs = dict(headers or {})
    if token == "auto":
        token = emu.issue_token("raw-test-token")
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    if isinstance(body, dict):
        body = json.dumps(body)
        hdrs.setdefault("Content-Type", "application/json; charset=UTF-8")
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=host is not None)
        if host is not None:
            conn.putheader("Host", host)
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body or b"")))
        conn.endheaders(body or b"")
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    ctype = resp.getheader("Content-Type") or ""
    decoded = json.loads(data) if data and "json" in ctype else data
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, decoded


def reason_of(body: dict) -> str:
    return body["error"]["errors"][0]["reason"]


def http_reason(err: HttpError) -> str:
    return err.error_details[0]["reason"]


def start_session(emu: DriveEmulator, meta: dict | None = None, headers: dict | None = None,
                  query: str = "") -> str:
    hdrs = {"X-Upload-Content-Type": "image/jpeg"}
    hdrs.update(headers or {})
    status, h, _ = raw(emu, "POST", "/upload/drive/v3/files?uploadType=resumable" + query,
                       meta or {"name": "session.jpg"}, hdrs)
    assert status == 200, status
    loc = urlsplit(h["location"])
    return f"{loc.path}?{loc.query}"


def put(emu: DriveEmulator, session: str, data: bytes, content_range: str | None):
    headers = {"Content-Range": content_range} if content_range is not None else {}
    return raw(emu, "PUT", session, data, headers)


# ---------------------------------------------------------------------------
# googleapiclient against the emulator: uploads
# ---------------------------------------------------------------------------


def test_resumable_multichunk_upload_gives_right_md5_and_size(emu):
    svc = service(emu)
    folder = svc.files().create(body={"name": "2019", "mimeType": FOLDER_MIME}, fields="id").execute()
    data = bytes(range(256)) * 4096 + b"12345"  # 1 MiB + 5 bytes: 4 full chunks and a tail
    request = svc.files().create(
        body={"name": "IMG_1.jpg", "parents": [folder["id"]]},
        media_body=media(data),
        fields="id,size,md5Checksum,sha256Checksum,mimeType,parents",
    )
    progress = []
    response = None
    while response is None:
        status, response = request.next_chunk()
        if status:
            progress.append(status.resumable_progress)
            assert len(emu.list_files()) == 1  # only the folder until the upload completes
    assert progress == [CHUNK, 2 * CHUNK, 3 * CHUNK, 4 * CHUNK]
    assert response["size"] == str(len(data))
    assert response["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert response["sha256Checksum"] == hashlib.sha256(data).hexdigest()
    assert response["mimeType"] == "image/jpeg"
    assert response["parents"] == [folder["id"]]
    assert emu.content(response["id"]) == data
    assert emu.path_of(response["id"]) == "2019/IMG_1.jpg"
    puts = [r["status"] for r in emu.requests if r["method"] == "PUT"]
    assert puts == [308, 308, 308, 308, 200]


def test_file_appears_only_when_resumable_upload_completes(emu):
    svc = service(emu)
    request = svc.files().create(body={"name": "big.jpg"}, media_body=media(b"x" * (CHUNK + 1)), fields="id")
    status, response = request.next_chunk()
    assert response is None and status.resumable_progress == CHUNK
    assert emu.list_files() == []
    assert svc.files().list(q="name = 'big.jpg'").execute()["files"] == []
    _, response = request.next_chunk()
    assert [f["id"] for f in emu.list_files()] == [response["id"]]


def test_multipart_and_media_uploads(emu):
    svc = service(emu)
    data = b"\x00\r\n--not-a-boundary\n\xff" * 100
    made = svc.files().create(
        body={"name": "multi.jpg", "description": "from S3", "appProperties": {"src": "s3://b/k"}},
        media_body=media(data, resumable=False),
        fields="id,size,md5Checksum,mimeType,description,appProperties",
    ).execute()
    assert made["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert made["size"] == str(len(data))
    assert made["appProperties"] == {"src": "s3://b/k"}
    assert emu.content(made["id"]) == data
    assert [r["query"]["uploadType"] for r in emu.requests] == ["multipart"]

    empty = svc.files().create(body={"name": "empty.bin"}, media_body=media(b"", "application/octet-stream", False),
                               fields="id,size,md5Checksum").execute()
    assert empty["size"] == "0" and empty["md5Checksum"] == hashlib.md5(b"").hexdigest()

    simple = svc.files().create(media_body=media(b"simple", "text/plain", False), fields="name,mimeType").execute()
    assert simple == {"name": "Untitled", "mimeType": "text/plain"}


def test_empty_file_resumable_upload(emu):
    response = upload(service(emu), b"", "empty.jpg")
    assert response["size"] == "0"
    assert response["md5Checksum"] == hashlib.md5(b"").hexdigest()


def test_update_content_is_a_new_revision_with_same_id(emu):
    svc = service(emu)
    first = upload(svc, b"one" * 1000, "photo.jpg", fields="id,md5Checksum,modifiedTime,createdTime,version")
    time.sleep(0.002)  # only so the millisecond timestamps can differ
    request = svc.files().update(fileId=first["id"], body={"description": "v2"}, media_body=media(b"two" * 100000),
                                 fields="id,md5Checksum,size,modifiedTime,createdTime,description,version")
    second = run_upload(request)
    assert second["id"] == first["id"]
    assert second["md5Checksum"] == hashlib.md5(b"two" * 100000).hexdigest() != first["md5Checksum"]
    assert second["size"] == "300000"
    assert second["modifiedTime"] > first["modifiedTime"]
    assert second["createdTime"] == first["createdTime"]
    assert int(second["version"]) > int(first["version"])
    assert second["description"] == "v2"
    assert len(emu.files) == 1


def test_download_with_googleapiclient_and_range(emu):
    svc = service(emu)
    data = bytes(range(256)) * 1000
    made = upload(svc, data, "d.jpg")
    buf = io.BytesIO()
    downloader = MediaIoBaseDownload(buf, svc.files().get_media(fileId=made["id"]), chunksize=100000)
    done = False
    while not done:
        _, done = downloader.next_chunk()
    assert buf.getvalue() == data
    status, headers, body = raw(emu, "GET", f"/drive/v3/files/{made['id']}?alt=media", headers={"Range": "bytes=10-19"})
    assert status == 206 and body == data[10:20]
    assert headers["content-range"] == f"bytes 10-19/{len(data)}"
    folder = svc.files().create(body={"name": "f", "mimeType": FOLDER_MIME}).execute()
    status, _, body = raw(emu, "GET", f"/drive/v3/files/{folder['id']}?alt=media")
    assert status == 403 and reason_of(body) == "fileNotDownloadable"


def test_parallel_uploads_each_with_own_http(emu):
    results, errors = {}, []

    def worker(n: int) -> None:
        try:
            data = bytes([n]) * (2 * CHUNK + n)
            results[n] = (upload(service(emu), data, f"p{n}.jpg"), data)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for response, data in results.values():
        assert response["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert len(emu.files) == 6


# ---------------------------------------------------------------------------
# Resumable protocol edge cases (raw HTTP)
# ---------------------------------------------------------------------------


def test_session_location_uses_client_host_and_308_has_no_location(emu):
    session = start_session(emu)
    status, headers, _ = raw(emu, "POST", "/upload/drive/v3/files?uploadType=resumable", {"name": "h.jpg"},
                             {"X-Upload-Content-Type": "image/jpeg"}, host=f"localhost:{emu.port}")
    assert headers["location"].startswith(f"http://localhost:{emu.port}/upload/drive/v3/files?uploadType=resumable&upload_id=")
    status, headers, _ = put(emu, session, b"", "bytes */*")
    assert status == 308 and "range" not in headers and "location" not in headers
    status, headers, _ = put(emu, session, b"a" * CHUNK, "bytes 0-262143/*")
    assert status == 308 and headers["range"] == "bytes=0-262143" and "location" not in headers


def test_non_multiple_intermediate_chunk_is_rejected(emu):
    session = start_session(emu)
    status, _, body = put(emu, session, b"a" * 100, "bytes 0-99/1000")
    assert status == 400
    assert "262144" in body["error"]["message"] and "multiple" in body["error"]["message"]
    status, _, body = put(emu, session, b"a" * (CHUNK + 1), f"bytes 0-{CHUNK}/*")
    assert status == 400
    # The final chunk may have any length.
    status, _, body = put(emu, session, b"a" * 100, "bytes 0-99/100")
    assert status == 200 and body["name"] == "session.jpg"


def test_offset_beyond_received_is_rejected(emu):
    session = start_session(emu)
    status, _, body = put(emu, session, b"a" * CHUNK, f"bytes {CHUNK}-{2 * CHUNK - 1}/*")
    assert status == 400
    assert "exceeds already uploaded size of 0 byte(s)" in body["error"]["message"]
    assert reason_of(body) == "badRequest"


@pytest.mark.parametrize("content_range", [
    "bytes 0-99", "bytes=0-99/100", "0-99/100", "bytes 99-0/100", "bytes a-b/c", "bytes 0-99/50", "items 0-99/100",
])
def test_malformed_content_range_is_rejected(emu, content_range):
    session = start_session(emu)
    status, _, body = put(emu, session, b"a" * 100, content_range)
    assert status == 400, content_range
    assert body["error"]["code"] == 400


def test_body_length_must_match_content_range(emu):
    session = start_session(emu)
    status, _, body = put(emu, session, b"a" * 10, "bytes 0-99/100")
    assert status == 400


def test_total_must_match_declared_length(emu):
    session = start_session(emu, headers={"X-Upload-Content-Length": "1000"})
    status, _, _ = put(emu, session, b"a" * 100, "bytes 0-99/100")
    assert status == 400
    status, _, _ = put(emu, session, b"a" * (2 * CHUNK), f"bytes 0-{2 * CHUNK - 1}/*")
    assert status == 400  # runs past the declared 1000 bytes


def test_retransmitted_chunk_is_accepted_and_status_query_completes(emu):
    session = start_session(emu, query="&fields=id,size,md5Checksum")
    data = b"z" * (CHUNK + 7)
    assert put(emu, session, data[:CHUNK], f"bytes 0-{CHUNK - 1}/*")[0] == 308
    status, headers, _ = put(emu, session, data[:CHUNK], f"bytes 0-{CHUNK - 1}/*")  # a retry of the same chunk
    assert status == 308 and headers["range"] == f"bytes=0-{CHUNK - 1}"
    status, _, body = put(emu, session, data[CHUNK:], f"bytes {CHUNK}-{len(data) - 1}/{len(data)}")
    assert status == 200
    assert body == {"id": body["id"], "size": str(len(data)), "md5Checksum": hashlib.md5(data).hexdigest()}
    # After completion a status query answers with the file again.
    status, _, again = put(emu, session, b"", f"bytes */{len(data)}")
    assert status == 200 and again == body


def test_chunks_sent_as_post_are_taken_as_google_and_rclone_send_them(emu):
    session = start_session(emu, query="&fields=id,size,md5Checksum")
    data = b"p" * (CHUNK + 5)
    headers = {"Content-Range": f"bytes 0-{CHUNK - 1}/{len(data)}"}
    assert raw(emu, "POST", session, data[:CHUNK], headers)[0] == 308
    headers = {"Content-Range": f"bytes {CHUNK}-{len(data) - 1}/{len(data)}"}
    status, _, body = raw(emu, "POST", session, data[CHUNK:], headers)
    assert status == 200 and body["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert raw(emu, "DELETE", session, b"", {})[0] == 404   # other methods are not


def test_unknown_session_is_404(emu):
    status, _, body = put(emu, "/upload/drive/v3/files?uploadType=resumable&upload_id=nope", b"", "bytes */*")
    assert status == 404 and reason_of(body) == "notFound"


def test_multipart_with_crlf_and_base64_parts(emu):
    data = bytes(range(256)) * 3 + b"\r"
    body = (
        b"--XyZ\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
        + json.dumps({"name": "crlf.jpg", "parents": ["root"]}).encode()
        + b"\r\n--XyZ\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(data)
        + b"\r\n--XyZ--\r\n"
    )
    status, _, made = raw(emu, "POST", "/upload/drive/v3/files?uploadType=multipart&fields=id,md5Checksum,mimeType,parents",
                          body, {"Content-Type": 'multipart/related; boundary="XyZ"'})
    assert status == 200, made
    assert made["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert made["mimeType"] == "image/png" and made["parents"] == [ROOT_FOLDER_ID]
    status, _, err = raw(emu, "POST", "/upload/drive/v3/files?uploadType=multipart", b"--XyZ--\r\n",
                         {"Content-Type": 'multipart/related; boundary="XyZ"'})
    assert status == 400 and "0 mime parts" in err["error"]["message"]


def test_chunked_request_body_is_read(emu):
    conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    conn.request("POST", "/upload/drive/v3/files?uploadType=media&fields=size", body=iter([b"ab", b"cde"]),
                 headers={"Authorization": "Bearer " + emu.issue_token(), "Content-Type": "image/jpeg"},
                 encode_chunked=True)
    assert json.loads(conn.getresponse().read()) == {"size": "5"}
    conn.close()


def test_upload_type_is_required(emu):
    status, _, body = raw(emu, "POST", "/upload/drive/v3/files", b"abc", {"Content-Type": "image/jpeg"})
    assert status == 400 and body["error"]["errors"][0]["location"] == "uploadType"


# ---------------------------------------------------------------------------
# Recovery flows googleapiclient relies on
# ---------------------------------------------------------------------------


def test_status_query_after_dropped_connection_resumes(emu):
    svc = service(emu)
    data = bytes(range(256)) * 3072 + b"tail"  # 3 chunks + 4 bytes
    request = svc.files().create(body={"name": "drop.jpg"}, media_body=media(data), fields="id,md5Checksum")
    assert request.next_chunk()[0].resumable_progress == CHUNK
    emu.faults.drop_rate = 1.0
    with pytest.raises(TRANSPORT_ERRORS):
        request.next_chunk()
    assert emu.fault_counts["drop"] >= 1
    emu.faults.drop_rate = 0.0
    emu.clear_requests()
    response = run_upload(request)
    assert response["md5Checksum"] == hashlib.md5(data).hexdigest()
    # The library first asked for the offset, then continued from byte 262144.
    assert emu.requests[0]["content_range"] == f"bytes */{len(data)}"
    assert emu.requests[1]["content_range"].startswith(f"bytes {CHUNK}-")


def test_lost_answer_to_final_chunk_is_recovered_by_status_query(emu):
    svc = service(emu)
    data = b"q" * (CHUNK + 5)
    request = svc.files().create(body={"name": "lost.jpg"}, media_body=media(data), fields="id,size")
    request.next_chunk()
    emu.faults.drop_response_rate = 1.0
    with pytest.raises(TRANSPORT_ERRORS):
        request.next_chunk()
    assert len(emu.files) == 1  # the file was created although the client never heard
    emu.faults.drop_response_rate = 0.0
    response = run_upload(request)
    assert response["size"] == str(len(data))
    assert len(emu.files) == 1


def test_lost_answer_to_metadata_create_duplicates_unless_id_is_pregenerated(emu):
    svc = service(emu)
    emu.faults.drop_response_rate = 1.0
    with pytest.raises(TRANSPORT_ERRORS):
        svc.files().create(body={"name": "dup", "mimeType": FOLDER_MIME}).execute()
    # httplib2 silently re-sent the POST: Drive now has two folders of that name.
    assert [f["name"] for f in emu.list_files()] == ["dup", "dup"]
    emu.faults.drop_response_rate = 0.0
    file_id = svc.files().generateIds(count=1).execute()["ids"][0]
    emu.faults.drop_response_rate = 1.0
    with pytest.raises(TRANSPORT_ERRORS):
        svc.files().create(body={"id": file_id, "name": "once", "mimeType": FOLDER_MIME}).execute()
    assert [f["id"] for f in emu.list_files() if f["name"] == "once"] == [file_id]
    assert emu.fault_counts["drop_response"] == 4


def test_expired_session_is_404_and_new_session_works(emu):
    svc = service(emu)
    request = svc.files().create(body={"name": "exp.jpg"}, media_body=media(b"e" * (CHUNK + 1)))
    request.next_chunk()
    emu.faults.expire_sessions = True
    # Edge-triggered: a session started after the switch works...
    assert upload(svc, b"fresh", "fresh.jpg")["size"] == "5"
    # ...while the one that existed when it flipped is gone for good.
    with pytest.raises(HttpError) as err:
        request.next_chunk()
    assert err.value.status_code == 404
    assert emu.fault_counts["expired_session"] == 1
    session = start_session(emu)
    emu.expire_all_sessions()
    assert put(emu, session, b"", "bytes */*")[0] == 404


# ---------------------------------------------------------------------------
# Query language
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("q", [
    "name = x",                      # unquoted value
    'name = "x"',                    # double quotes
    "name 'x'",                      # missing operator
    "name = 'x' and",                # dangling connective
    "(name = 'x'",                   # unbalanced
    "name = 'x')",
    "name = 'unterminated",
    r"name = 'bad\escape'",          # only \' and \\ are escapes
    "size > '5'",                    # unknown field
    "name ~ 'x'",                    # unknown operator
    "name > 'x'",                    # operator the field lacks
    "trashed = maybe",
    "modifiedTime > 'yesterday'",
    "appProperties has { key='k' }",
    "'x' in owners",
    "and name = 'x'",
])
def test_invalid_queries_are_400_invalid(emu, q):
    with pytest.raises(HttpError) as err:
        service(emu).files().list(q=q).execute()
    assert err.value.status_code == 400
    assert err.value.error_details == [
        {"message": "Invalid Value", "domain": "global", "reason": "invalid", "location": "q",
         "locationType": "parameter"}
    ]


def test_escaped_quotes_and_backslashes_find_the_right_files(emu):
    svc = service(emu)
    names = ["O'Brien's party.jpg", "back\\slash.jpg", "back\\\\double.jpg", "plain.jpg"]
    ids = {n: svc.files().create(body={"name": n}, fields="id").execute()["id"] for n in names}
    for name in names:
        found = svc.files().list(q=f"name = {q_literal(name)}", fields="files(id,name)").execute()["files"]
        assert found == [{"id": ids[name], "name": name}]
    found = svc.files().list(q=r"name contains 'O\'Brien'", fields="files(name)").execute()["files"]
    assert found == [{"name": "O'Brien's party.jpg"}]


def test_query_combinators_and_fields(emu):
    svc = service(emu)
    trip = svc.files().create(body={"name": "Trip", "mimeType": FOLDER_MIME}, fields="id").execute()["id"]
    a = upload(svc, b"a", "HelloWorld.jpg", [trip], modifiedTime="2019-05-01T10:00:00Z", description="beach sunset")["id"]
    b = upload(svc, b"b", "other.png", [trip], modifiedTime="2021-01-01T00:00:00+02:00", mimeType="image/png")["id"]
    c = upload(svc, b"c", "top.jpg", modifiedTime="2020-06-01T00:00:00Z")["id"]

    def ids(q: str) -> set[str]:
        return {f["id"] for f in svc.files().list(q=q, fields="files(id)").execute()["files"]}

    assert ids(f"'{trip}' in parents") == {a, b}
    assert ids("'root' in parents and mimeType != 'application/vnd.google-apps.folder'") == {c}
    assert ids(f"mimeType = '{FOLDER_MIME}'") == {trip}
    assert ids("name contains 'Hello'") == {a}
    assert ids("name contains 'World'") == set()  # Drive's name contains matches prefixes
    assert ids("fullText contains 'sunset'") == {a}
    assert ids("modifiedTime > '2020-01-01T00:00:00'") == {b, c, trip}
    assert ids("modifiedTime < '2020-01-01T00:00:00Z' or name = 'top.jpg'") == {a, c}
    assert ids(f"not '{trip}' in parents and not name = 'Trip'") == {c}
    assert ids(f"('{trip}' in parents or name = 'top.jpg') and (mimeType = 'image/png' or name contains 'top')") == {b, c}
    assert ids("trashed = false AND name = 'other.png'") == {b}


def test_unicode_names_round_trip(emu):
    svc = service(emu)
    name = "Été 写真 📷 naïve.jpg"
    folder = svc.files().create(body={"name": "Ålbum ✈", "mimeType": FOLDER_MIME}, fields="id,name").execute()
    made = upload(svc, b"u" * 10, name, [folder["id"]], fields="id,name", appProperties={"ключ": "значение"})
    assert made["name"] == name
    found = svc.files().list(q=f"name = {q_literal(name)} and appProperties has {{ key='ключ' and value='значение' }}",
                             fields="files(id,name)").execute()["files"]
    assert found == [made]
    assert svc.files().get(fileId=made["id"], fields="name").execute() == {"name": name}
    assert emu.path_of(made["id"]) == f"Ålbum ✈/{name}"


def test_app_properties_has_query_and_merge(emu):
    svc = service(emu)
    one = upload(svc, b"1", "1.jpg", appProperties={"s3key": "photos/1.jpg", "etag": "abc"})["id"]
    upload(svc, b"2", "2.jpg", appProperties={"s3key": "photos/2.jpg"})
    q = "appProperties has { key='s3key' and value='photos/1.jpg' }"
    assert [f["id"] for f in svc.files().list(q=q).execute()["files"]] == [one]
    assert svc.files().list(q="properties has { key='s3key' and value='photos/1.jpg' }").execute()["files"] == []
    patched = svc.files().update(fileId=one, body={"appProperties": {"etag": None, "run": "r1"}},
                                 fields="appProperties").execute()
    assert patched == {"appProperties": {"s3key": "photos/1.jpg", "run": "r1"}}


def test_app_properties_limits(emu):
    svc = service(emu)
    ok = svc.files().create(body={"name": "ok", "appProperties": {"k": "é" * 61 + "x"}}, fields="id").execute()
    assert ok["id"]
    with pytest.raises(HttpError) as err:  # 1 + 124 bytes
        svc.files().create(body={"name": "long", "appProperties": {"k": "é" * 62}}).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "propertyLengthLimitExceeded"
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"name": "many", "appProperties": {f"k{i}": "v" for i in range(31)}}).execute()
    assert err.value.status_code == 403


def test_pagination(emu):
    svc = service(emu)
    for i in range(25):
        emu.add_file(f"f{i:02}.jpg", b"x")
    seen, token, pages = [], None, 0
    while True:
        page = svc.files().list(pageSize=10, pageToken=token, q="trashed = false",
                                fields="nextPageToken,files(name)").execute()
        seen += [f["name"] for f in page["files"]]
        pages += 1
        token = page.get("nextPageToken")
        if not token:
            break
    assert pages == 3 and seen == [f"f{i:02}.jpg" for i in range(25)]
    # nextPageToken comes only when asked for (or with the default fields).
    assert "nextPageToken" not in svc.files().list(pageSize=10, fields="files(id)").execute()
    default = svc.files().list(pageSize=10).execute()
    assert set(default) == {"kind", "incompleteSearch", "files", "nextPageToken"}
    assert set(default["files"][0]) == {"kind", "id", "name", "mimeType"}
    for bad in (1001, 0):
        with pytest.raises(HttpError) as err:
            svc.files().list(pageSize=bad).execute()
        assert err.value.status_code == 400 and err.value.error_details[0]["location"] == "pageSize"
    with pytest.raises(HttpError):
        svc.files().list(pageToken=default["nextPageToken"], q="name = 'x'").execute()  # token of another query


# ---------------------------------------------------------------------------
# Metadata: fields, parents, ids, trash, about
# ---------------------------------------------------------------------------


def test_fields_selector():
    doc = {"kind": "k", "files": [{"id": "1", "name": "a", "x": 1}], "nextPageToken": "t"}
    assert select_fields(doc, parse_fields("files(id,name)")) == {"files": [{"id": "1", "name": "a"}]}
    assert select_fields(doc, parse_fields("files/id,nextPageToken")) == {"files": [{"id": "1"}], "nextPageToken": "t"}
    assert select_fields(doc, parse_fields("*")) == doc
    for bad in ("files(id", "a,,b", "a)", ""):
        with pytest.raises(ValueError):
            parse_fields(bad)


def test_file_fields_default_star_and_invalid(emu):
    svc = service(emu)
    made = upload(svc, b"abc", "f.jpg", fields="id")
    assert set(svc.files().get(fileId=made["id"]).execute()) == {"kind", "id", "name", "mimeType"}
    full = svc.files().get(fileId=made["id"], fields="*").execute()
    assert full["md5Checksum"] == hashlib.md5(b"abc").hexdigest() and full["trashed"] is False
    assert full["parents"] == [ROOT_FOLDER_ID]
    assert "content" not in full
    with pytest.raises(HttpError) as err:
        svc.files().get(fileId=made["id"], fields="id,md5checksum").execute()
    assert err.value.status_code == 400 and http_reason(err.value) == "invalidParameter"
    for bad_create in (svc.files().create(body={"name": "n"}, fields="id,nope"),
                       svc.files().create(body={"name": "n"}, media_body=media(b"x"), fields="files(id)")):
        with pytest.raises(HttpError) as err:
            bad_create.execute()
        assert err.value.status_code == 400
    assert len(emu.files) == 1  # refused before anything was stored
    with pytest.raises(HttpError) as err:
        svc.files().get(fileId="missing").execute()
    assert err.value.status_code == 404 and err.value.reason == "File not found: missing."
    assert err.value.error_details[0]["reason"] == "notFound"
    root = svc.files().get(fileId="root", fields="id,name,mimeType").execute()
    assert root == {"id": ROOT_FOLDER_ID, "name": "My Drive", "mimeType": FOLDER_MIME}


def test_times_are_writable_at_create_only(emu):
    svc = service(emu)
    made = svc.files().create(body={"name": "t.jpg", "createdTime": "2019-05-01T10:00:00+02:00",
                                    "modifiedTime": "2019-05-01T10:00:01.5Z"},
                              fields="id,createdTime,modifiedTime").execute()
    assert made["createdTime"] == "2019-05-01T08:00:00.000Z"
    assert made["modifiedTime"] == "2019-05-01T10:00:01.500Z"
    with pytest.raises(HttpError) as err:
        svc.files().update(fileId=made["id"], body={"createdTime": "2020-01-01T00:00:00Z"}).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "fieldNotWritable"
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"name": "x", "modifiedTime": "not a date"}).execute()
    assert err.value.status_code == 400
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"name": "x", "md5Checksum": "0" * 32}).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "fieldNotWritable"


def test_parents_validation_and_moves(emu):
    svc = service(emu)
    a = svc.files().create(body={"name": "A", "mimeType": FOLDER_MIME}, fields="id").execute()["id"]
    b = svc.files().create(body={"name": "B", "mimeType": FOLDER_MIME}, fields="id").execute()["id"]
    f = upload(svc, b"x", "x.jpg", [a])["id"]
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"name": "n", "parents": ["nope"]}).execute()
    assert err.value.status_code == 404 and err.value.reason == "File not found: nope."
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"name": "n", "parents": [a, b]}).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "cannotAddParent"
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"name": "n", "parents": [f]}).execute()
    assert err.value.status_code == 400
    with pytest.raises(HttpError) as err:
        svc.files().update(fileId=f, body={"parents": [b]}).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "fieldNotWritable"
    with pytest.raises(HttpError) as err:
        svc.files().update(fileId=f, addParents=b).execute()
    assert http_reason(err.value) == "cannotAddParent"
    moved = svc.files().update(fileId=f, addParents=b, removeParents=a, fields="parents").execute()
    assert moved == {"parents": [b]}
    assert emu.path_of(f) == "B/x.jpg"
    with pytest.raises(HttpError) as err:
        svc.files().update(fileId=a, addParents=a, removeParents="root").execute()
    assert err.value.status_code == 400


def test_generate_ids_and_create_with_id(emu):
    svc = service(emu)
    answer = svc.files().generateIds(count=3).execute()
    assert answer["kind"] == "drive#generatedIds" and answer["space"] == "drive" and len(answer["ids"]) == 3
    file_id = answer["ids"][0]
    made = upload(svc, b"x", "with-id.jpg", fields="id", id=file_id)
    assert made == {"id": file_id}
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"id": file_id, "name": "again"}).execute()
    assert err.value.status_code == 409 and http_reason(err.value) == "fileIdInUse"
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"id": "1madeUpIdThatWasNeverGeneratedXXXX", "name": "bad"}).execute()
    assert err.value.status_code == 400 and http_reason(err.value) == "fileIdNotUsable"
    with pytest.raises(HttpError) as err:
        svc.files().generateIds(count=1001).execute()
    assert err.value.status_code == 400


def test_trash_and_delete(emu):
    svc = service(emu)
    top = emu.add_folder("Top")
    sub = emu.add_folder("Sub", top["id"])
    leaf = emu.add_file("leaf.jpg", b"123", sub["id"])
    svc.files().update(fileId=top["id"], body={"trashed": True}).execute()
    # files.list returns trashed items unless the query excludes them.
    assert len(svc.files().list().execute()["files"]) == 3
    assert svc.files().list(q="trashed = false").execute()["files"] == []
    got = svc.files().get(fileId=leaf["id"], fields="trashed,explicitlyTrashed").execute()
    assert got == {"trashed": True, "explicitlyTrashed": False}
    assert emu.list_files() == [] and len(emu.list_files(include_trashed=True)) == 3
    about = svc.about().get(fields="storageQuota").execute()["storageQuota"]
    assert about["usageInDriveTrash"] == "3"
    svc.files().update(fileId=top["id"], body={"trashed": False}).execute()
    assert len(emu.list_files()) == 3
    assert svc.files().delete(fileId=top["id"]).execute() == ""
    assert emu.files == {}
    status, _, _ = raw(emu, "DELETE", f"/drive/v3/files/{top['id']}")
    assert status == 404


def test_about_requires_fields(emu):
    svc = service(emu)
    with pytest.raises(HttpError) as err:
        svc.about().get().execute()
    assert err.value.status_code == 400 and http_reason(err.value) == "required"
    about = svc.about().get(fields="user(emailAddress),storageQuota,maxUploadSize").execute()
    assert set(about) == {"user", "storageQuota", "maxUploadSize"}
    assert "limit" not in about["storageQuota"]  # unlimited
    emu.faults.storage_quota_bytes = 10**9
    about = svc.about().get(fields="storageQuota(limit,usage)").execute()
    assert about == {"storageQuota": {"limit": str(10**9), "usage": "0"}}


# ---------------------------------------------------------------------------
# Auth and the token endpoint
# ---------------------------------------------------------------------------


def test_requests_without_valid_token_get_401(emu):
    status, headers, body = raw(emu, "GET", "/drive/v3/files", token=None)
    assert status == 401 and body["error"]["status"] == "UNAUTHENTICATED"
    assert reason_of(body) == "required"  # real Drive: no credential at all is "required"
    status, headers, body = raw(emu, "GET", "/drive/v3/files", token="forged")
    assert status == 401 and reason_of(body) == "authError"
    assert body["error"]["message"].startswith("Request had invalid authentication credentials.")
    assert body["error"]["errors"][0]["locationType"] == "header"
    assert "www-authenticate" in headers
    status, _, _ = raw(emu, "PUT", "/upload/drive/v3/files?uploadType=resumable&upload_id=x", b"", token=None)
    assert status == 401
    token = emu.issue_token()
    assert raw(emu, "GET", f"/drive/v3/files?access_token={token}", token=None)[0] == 200


def test_require_auth_false_accepts_anonymous():
    with DriveEmulator(require_auth=False) as open_emu:
        assert raw(open_emu, "GET", "/drive/v3/files", token=None)[0] == 200


def test_refresh_through_token_endpoint_and_invalid_grant(emu):
    svc = service(emu, token=None, refresh_token="rt-good")
    assert svc.files().list().execute()["files"] == []
    assert emu.token_refreshes == 1
    emu.expire_access_tokens()  # the hour is up: 401, then a silent refresh
    assert svc.files().list().execute()["files"] == []
    assert emu.token_refreshes == 2
    assert [r["path"] for r in emu.requests] == ["/token", "/drive/v3/files", "/drive/v3/files", "/token",
                                                 "/drive/v3/files"]
    emu.revoke_refresh_token("rt-good")  # also kills access tokens minted from it
    with pytest.raises(RefreshError) as err:
        svc.files().list().execute()
    assert "invalid_grant" in str(err.value)
    assert emu.token_refreshes == 2


def test_token_endpoint_raw(emu):
    form = {"grant_type": "refresh_token", "refresh_token": "rt", "client_id": "c", "client_secret": "s",
            "scope": "https://www.googleapis.com/auth/drive.file"}
    hdrs = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _, body = raw(emu, "POST", "/token", urlencode(form), hdrs, token=None)
    assert status == 200
    assert body["expires_in"] == 3599 and body["token_type"] == "Bearer" and body["scope"] == form["scope"]
    assert raw(emu, "GET", "/drive/v3/files", token=body["access_token"])[0] == 200
    emu.revoke_refresh_token("rt")
    status, _, body = raw(emu, "POST", "/token", urlencode(form), hdrs, token=None)
    assert (status, body) == (400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."})
    status, _, body = raw(emu, "POST", "/token", urlencode({"grant_type": "refresh_token", "client_id": "c"}), hdrs,
                          token=None)
    assert status == 400 and body["error"] == "invalid_request"


# ---------------------------------------------------------------------------
# Faults
# ---------------------------------------------------------------------------


def test_rate_limit_alternates_403_and_429_with_retry_after(emu):
    emu.faults.create_rate_per_s = 0.001  # effectively no refill during the test
    emu.faults.create_burst = 2
    emu.faults.retry_after_s = 7
    svc = service(emu)
    for i in range(2):
        svc.files().create(body={"name": f"ok{i}"}).execute()
    statuses = []
    for _ in range(3):
        status, headers, body = raw(emu, "POST", "/drive/v3/files", {"name": "limited"})
        statuses.append((status, reason_of(body)))
        assert headers["retry-after"] == "7"
        assert body["error"]["errors"][0]["domain"] == "usageLimits"
    assert statuses == [(403, "userRateLimitExceeded"), (429, "rateLimitExceeded"), (403, "userRateLimitExceeded")]
    assert body["error"]["message"].startswith("User rate limit exceeded for quota metric")
    with pytest.raises(HttpError) as err:  # uploads count as creations too
        svc.files().create(body={"name": "u"}, media_body=media(b"x", resumable=False)).execute()
    assert err.value.status_code == 429
    assert svc.files().list().execute()  # reads are not limited
    assert emu.fault_counts == {"rate_limit_403": 2, "rate_limit_429": 2}


def test_rate_limit_refills():
    with DriveEmulator(require_auth=False) as e:
        e.faults = Faults(create_rate_per_s=1000.0, create_burst=1)
        for _ in range(5):
            status, _, _ = raw(e, "POST", "/drive/v3/files", {"name": "x"}, token=None)
            time.sleep(0.002)  # lets the bucket refill; this is the thing under test, not a sync point
            assert status == 200


def test_storage_quota(emu):
    svc = service(emu)
    emu.faults.storage_quota_bytes = 1000
    upload(svc, b"a" * 600, "a.jpg")
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"name": "b.jpg"}, media_body=media(b"b" * 600, resumable=False)).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "storageQuotaExceeded"
    assert err.value.reason == QUOTA_MESSAGE
    status, _, body = raw(emu, "POST", "/upload/drive/v3/files?uploadType=resumable", {"name": "c"},
                          {"X-Upload-Content-Length": "600"})
    assert status == 403 and reason_of(body) == "storageQuotaExceeded"
    with pytest.raises(HttpError):  # without a declared length the chunk itself is refused
        upload(svc, b"d" * 600, "d.jpg")
    assert emu.fault_counts["storage_quota"] == 3
    assert len(emu.files) == 1


def test_daily_upload_cap(emu):
    svc = service(emu)
    emu.faults.daily_upload_cap_bytes = 1000
    upload(svc, b"a" * 800, "a.jpg")
    upload(svc, b"b" * 800, "b.jpg")  # crosses the cap and still completes
    with pytest.raises(HttpError) as err:
        upload(svc, b"c" * 10, "c.jpg")
    assert err.value.status_code == 403 and http_reason(err.value) == "userRateLimitExceeded"
    assert err.value.reason == DAILY_CAP_MESSAGE
    with pytest.raises(HttpError) as err:
        svc.files().create(body={"name": "m"}, media_body=media(b"m", resumable=False)).execute()
    assert err.value.reason == DAILY_CAP_MESSAGE
    assert svc.files().create(body={"name": "folder", "mimeType": FOLDER_MIME}).execute()  # no bytes: allowed
    assert emu.fault_counts["daily_cap"] == 2
    assert emu.uploaded_bytes == 1600


def test_wrong_md5_once(emu):
    svc = service(emu)
    emu.faults.wrong_md5_count = 1
    data = b"photo" * 1000
    first = upload(svc, data, "1.jpg")
    assert first["md5Checksum"] != hashlib.md5(data).hexdigest()
    assert hashlib.md5(emu.content(first["id"])).hexdigest() == hashlib.md5(data).hexdigest()
    assert svc.files().get(fileId=first["id"], fields="md5Checksum").execute()["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert upload(svc, data, "2.jpg")["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert emu.fault_counts["wrong_md5"] == 1


def test_partial_chunks_still_complete_with_googleapiclient(emu):
    emu.faults = Faults(partial_chunk_rate=0.5, seed=3)
    data = bytes(range(256)) * 4096 + b"xyz"
    response = upload(service(emu), data, "partial.jpg")
    assert response["md5Checksum"] == hashlib.md5(data).hexdigest()
    assert emu.content(response["id"]) == data
    assert emu.fault_counts["partial_chunk"] >= 1
    puts = [r for r in emu.requests if r["method"] == "PUT"]
    assert len(puts) > 5  # shortened chunks were re-sent from the Range the server gave


def test_error_rate_answers_5xx_deterministically(emu):
    emu.faults = Faults(error_rate=1.0, seed=1)
    statuses = {raw(emu, "GET", "/drive/v3/files")[0] for _ in range(12)}
    assert statuses == {500, 502, 503}
    status, headers, body = raw(emu, "GET", "/drive/v3/files")
    assert status in (500, 502, 503)
    with pytest.raises(HttpError) as err:
        service(emu).files().list().execute()
    assert err.value.status_code >= 500
    counts = sum(v for k, v in emu.fault_counts.items() if k.startswith("server_error_"))
    assert counts == 14

    def sequence(seed: int) -> list[int]:
        emu.faults = Faults(error_rate=0.5, seed=seed)
        return [raw(emu, "GET", "/drive/v3/files")[0] for _ in range(10)]

    assert sequence(7) == sequence(7)


def test_latency_and_fail_paths(emu):
    emu.faults.latency_s = 0.05
    started = time.monotonic()
    raw(emu, "GET", "/drive/v3/files")
    assert time.monotonic() - started >= 0.05
    assert emu.fault_counts["latency"] == 1
    emu.faults = Faults(fail_paths={r"^/drive/v3/files\?.*q=": 503})
    svc = service(emu)
    assert svc.files().list().execute()["files"] == []
    with pytest.raises(HttpError) as err:
        svc.files().list(q="trashed = false").execute()
    assert err.value.status_code == 503
    assert emu.fault_counts["fail_path"] == 1


def test_reset_clears_state_but_keeps_tokens(emu):
    token = emu.issue_token()
    emu.add_file("x", b"1")
    emu.faults.error_rate = 1.0
    emu.reset()
    assert emu.files == {} and emu.requests == [] and emu.faults == Faults() and emu.fault_counts == {}
    assert raw(emu, "GET", "/drive/v3/files", token=token)[0] == 200


def test_stop_cuts_pooled_connections():
    emu = DriveEmulator().start()
    svc = service(emu)
    svc.files().list().execute()  # leaves a keep-alive connection in the pool
    emu.stop()
    with pytest.raises(TRANSPORT_ERRORS):
        svc.files().list().execute()


def test_command_line_prints_url_and_token():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "tests.drive_emulator", "--port", "0"], cwd=root,
                            stdout=subprocess.PIPE, text=True)
    try:
        url_line = proc.stdout.readline()
        token_line = proc.stdout.readline()
        assert token_line.startswith("token: ")
        url = url_line.split()[-1]
        port = int(url.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/drive/v3/files", headers={"Authorization": "Bearer " + token_line.split()[1]})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=5)


# ---------------------------------------------------------------------------
# Real Drive behaviour behind switches: list lag, per-app visibility, shared
# drives, reused ids; and what is always on (case-insensitive name =, orderBy)
# ---------------------------------------------------------------------------

OTHER_APP = "other-project.apps.googleusercontent.com"


def listed(svc, q: str = "", **params) -> list[str]:
    """Names a files.list answers with, in its order."""
    return [f["name"] for f in svc.files().list(q=q, fields="files(name)", **params).execute()["files"]]


def not_found_error(request) -> HttpError:
    with pytest.raises(HttpError) as err:
        request.execute()
    assert err.value.status_code == 404 and http_reason(err.value) == "notFound"
    return err.value


def test_list_lag_hides_new_items_from_lists_but_not_from_get(emu):
    emu.faults.list_lag_s = float("inf")
    svc = service(emu)
    folder = svc.files().create(body={"name": "Trip", "mimeType": FOLDER_MIME}, fields="id").execute()["id"]
    photo = upload(svc, b"p", "p.jpg", [folder])["id"]
    assert svc.files().get(fileId=photo, fields="id,parents").execute() == {"id": photo, "parents": [folder]}
    assert listed(svc) == [] and listed(svc, f"'{folder}' in parents") == []
    assert emu.fault_counts["list_lag"] == 3  # two hidden in the first answer, one in the second
    assert [f["id"] for f in emu.list_files()] == [folder, photo]  # the helper is never lagged
    emu.settle()
    assert listed(svc) == ["Trip", "p.jpg"]
    # A finite lag: what happened a moment ago is not listed yet...
    emu.faults.list_lag_s = 30
    emu.add_file("new.jpg", b"n", folder)
    assert listed(svc, f"'{folder}' in parents") == ["p.jpg"]
    # ...and is once the lag has passed (shrunk here instead of sleeping).
    emu.faults.list_lag_s = 1e-9
    assert listed(svc, f"'{folder}' in parents") == ["p.jpg", "new.jpg"]


def test_list_lag_shows_moved_and_trashed_items_as_they_were(emu):
    svc = service(emu)
    a, b = emu.add_folder("A")["id"], emu.add_folder("B")["id"]
    x = emu.add_file("x.jpg", b"x", a)["id"]
    inner = emu.add_file("inner.jpg", b"i", b)["id"]
    emu.faults.list_lag_s = float("inf")
    moved = svc.files().update(fileId=x, addParents=b, removeParents=a, fields="parents").execute()
    assert moved == {"parents": [b]}
    assert listed(svc, f"'{a}' in parents") == ["x.jpg"]  # still where it was...
    assert listed(svc, f"'{b}' in parents") == ["inner.jpg"]  # ...and not yet where it is
    svc.files().update(fileId=b, body={"trashed": True}).execute()
    # Trashing B trashed inner.jpg too; lists still see both alive, get does not.
    stale = svc.files().list(q="trashed = false", fields="files(name,trashed)").execute()["files"]
    assert {f["name"]: f["trashed"] for f in stale} == {"A": False, "B": False, "x.jpg": False,
                                                      "inner.jpg": False}
    assert svc.files().get(fileId=inner, fields="trashed").execute() == {"trashed": True}
    emu.settle()
    assert listed(svc, "trashed = false") == ["A"]
    assert listed(svc, f"'{b}' in parents") == ["x.jpg", "inner.jpg"]


def test_name_equality_ignores_case_but_contains_is_unchanged(emu):
    svc = service(emu)
    for name in ("IMG_1.JPG", "img_1.jpg", "Img_10.jpg", "other.jpg"):
        emu.add_file(name, b"x")
    assert listed(svc, "name = 'img_1.jpg'") == ["IMG_1.JPG", "img_1.jpg"]
    assert listed(svc, "name != 'IMG_1.jpg'") == ["Img_10.jpg", "other.jpg"]
    assert listed(svc, "name contains 'img_1'") == ["IMG_1.JPG", "img_1.jpg", "Img_10.jpg"]
    assert listed(svc, "mimeType = 'APPLICATION/OCTET-STREAM'") == []  # only names ignore case


def test_drive_file_scope_sees_only_its_own_apps_files(emu):
    emu.faults.app_visibility = True
    ours = service(emu)  # default client, drive.file
    theirs = service(emu, token=emu.issue_token(client_id=OTHER_APP))
    folder = ours.files().create(body={"name": "Photos", "mimeType": FOLDER_MIME}, fields="id").execute()["id"]
    mine = upload(ours, b"mine", "mine.jpg", [folder], appProperties={"src": "ours"})["id"]
    users = emu.add_file("holiday.jpg", b"the user's", folder)["id"]  # made in the web UI: no app
    # Another app: our files are 404 exactly like missing ones, and lists leave them out.
    err = not_found_error(theirs.files().get(fileId=mine))
    assert err.reason == f"File not found: {mine}."
    not_found_error(theirs.files().update(fileId=mine, body={"name": "renamed"}))
    not_found_error(theirs.files().update(fileId=mine, media_body=media(b"new", resumable=False)))
    not_found_error(theirs.files().update(fileId=mine, media_body=media(b"new")))
    not_found_error(theirs.files().delete(fileId=mine))
    assert listed(theirs) == []
    # Creating into a folder it cannot see: 404 for the parent, on every create path.
    err = not_found_error(theirs.files().create(body={"name": "n", "mimeType": FOLDER_MIME, "parents": [folder]}))
    assert err.reason == f"File not found: {folder}."
    for resumable in (False, True):
        not_found_error(theirs.files().create(body={"name": "n.jpg", "parents": [folder]},
                                              media_body=media(b"n", resumable=resumable)))
    # We see ours but not the user's own file in our folder.
    assert listed(ours, f"'{folder}' in parents") == ["mine.jpg"]
    not_found_error(ours.files().get(fileId=users))
    # The Python helpers see everything.
    assert [emu.path_of(f["id"]) for f in emu.list_files()] == ["Photos", "Photos/mine.jpg", "Photos/holiday.jpg"]
    assert [f["name"] for f in emu.files_of_app(DEFAULT_CLIENT_ID)] == ["Photos", "mine.jpg"]
    assert [f["name"] for f in emu.files_of_app(None)] == ["holiday.jpg"]
    assert emu.content(users) == b"the user's"
    # With the switch off, every token sees everything again.
    emu.faults.app_visibility = False
    assert listed(theirs, f"'{folder}' in parents") == ["mine.jpg", "holiday.jpg"]


def test_app_properties_are_private_to_each_app_even_with_full_scope(emu):
    emu.faults.app_visibility = True
    ours = service(emu)
    wide = service(emu, token=emu.issue_token(client_id=OTHER_APP, scope=SCOPE_DRIVE))
    mine = upload(ours, b"mine", "mine.jpg", appProperties={"src": "ours"})["id"]
    users = emu.add_file("holiday.jpg", b"u")["id"]
    # The full drive scope reaches every file of the user...
    assert listed(wide) == ["mine.jpg", "holiday.jpg"]
    assert wide.files().get(fileId=mine, fields="id,appProperties").execute() == {"id": mine}
    # ...but only its own app's appProperties, in answers and in queries.
    wide.files().update(fileId=mine, body={"appProperties": {"src": "theirs"}}).execute()
    wide.files().update(fileId=users, body={"appProperties": {"tag": "t"}}).execute()
    assert ours.files().get(fileId=mine, fields="appProperties").execute() == {"appProperties": {"src": "ours"}}
    assert wide.files().get(fileId=mine, fields="appProperties").execute() == {"appProperties": {"src": "theirs"}}
    assert listed(ours, "appProperties has { key='src' and value='theirs' }") == []
    assert listed(wide, "appProperties has { key='src' and value='theirs' }") == ["mine.jpg"]
    ours.files().update(fileId=mine, body={"appProperties": {"src": None, "run": "r1"}}).execute()
    assert ours.files().get(fileId=mine, fields="appProperties").execute() == {"appProperties": {"run": "r1"}}
    assert wide.files().get(fileId=mine, fields="appProperties").execute() == {"appProperties": {"src": "theirs"}}
    # The omniscient helper merges every app's.
    assert emu.list_files()[0]["appProperties"] == {"src": "theirs", "run": "r1"}


def test_trash_and_delete_of_a_folder_take_what_the_app_cannot_see(emu):
    """The danger our tool must avoid: Drive cascades to the user's own files too."""
    emu.faults.app_visibility = True
    svc = service(emu)
    folder = svc.files().create(body={"name": "Photos", "mimeType": FOLDER_MIME}, fields="id").execute()["id"]
    emu.add_file("users-own.jpg", b"precious", folder)
    sub = emu.add_folder("Sub", folder, app=OTHER_APP)["id"]
    emu.add_file("deep.jpg", b"d", sub)
    assert listed(svc, f"'{folder}' in parents") == []  # nothing visible in there
    svc.files().update(fileId=folder, body={"trashed": True}).execute()
    assert emu.list_files() == [] and len(emu.list_files(include_trashed=True)) == 4
    svc.files().update(fileId=folder, body={"trashed": False}).execute()
    assert len(emu.list_files()) == 4
    svc.files().delete(fileId=folder).execute()
    assert emu.files == {}


def test_tokens_carry_client_user_and_scope(emu):
    emu.faults.app_visibility = True
    alice = service(emu)
    rt = emu.issue_refresh_token(client_id="bob-client", user_email="bob.smith@example.com", scope=SCOPE_DRIVE)
    bob = service(emu, token=None, refresh_token=rt, client_id="bob-client")
    bob_user = bob.about().get(fields="user").execute()["user"]
    alice_user = alice.about().get(fields="user(emailAddress,displayName,permissionId)").execute()["user"]
    assert bob_user["emailAddress"] == "bob.smith@example.com" and bob_user["displayName"] == "Bob Smith"
    assert bob_user["me"] is True and bob_user["permissionId"].isdigit()
    assert alice_user["emailAddress"] == DEFAULT_USER_EMAIL and alice_user["displayName"] == "Emulated User"
    assert alice_user["permissionId"] != bob_user["permissionId"]
    # Users do not see each other's My Drive, whatever the scope.
    bobs = bob.files().create(body={"name": "bob.txt"}, fields="id,ownedByMe,owners(emailAddress)").execute()
    assert bobs["ownedByMe"] is True and bobs["owners"] == [{"emailAddress": "bob.smith@example.com"}]
    alices = alice.files().create(body={"name": "alice.txt"}, fields="id").execute()["id"]
    assert listed(bob) == ["bob.txt"] and listed(alice) == ["alice.txt"]
    not_found_error(bob.files().get(fileId=alices))
    # The refresh token belongs to bob-client: another client cannot use it.
    with pytest.raises(RefreshError) as err:
        service(emu, token=None, refresh_token=rt, client_id=OTHER_APP).files().list().execute()
    assert "unauthorized_client" in str(err.value)
    # An unregistered refresh token is the default user, for the client that sent it.
    stranger = service(emu, token=None, refresh_token="rt-unknown", client_id=OTHER_APP)
    made = stranger.files().create(body={"name": "s"}, fields="id").execute()["id"]
    assert [f["id"] for f in emu.files_of_app(OTHER_APP)] == [made]
    assert listed(alice) == ["alice.txt"]  # same user, different app
    # An authorization code redeemed by a client makes a lasting grant for that client and user.
    code = emu.issue_auth_code(user_email="carol@example.com")
    form = {"grant_type": "authorization_code", "code": code, "client_id": "carol-client", "client_secret": "s"}
    status, _, body = raw(emu, "POST", "/token", urlencode(form),
                          {"Content-Type": "application/x-www-form-urlencoded"}, token=None)
    assert status == 200 and body["scope"] == "https://www.googleapis.com/auth/drive.file"
    carol = service(emu, token=None, refresh_token=body["refresh_token"], client_id="carol-client")
    assert carol.about().get(fields="user(emailAddress)").execute() == {"user": {"emailAddress": "carol@example.com"}}


def create_in(svc, body: dict, data: bytes | None = None, resumable: bool = True, **params) -> dict:
    """files.create with extra parameters (supportsAllDrives...), metadata-only or an upload."""
    fields = params.pop("fields", "id,name,driveId,parents,md5Checksum")
    if data is None:
        return svc.files().create(body=body, fields=fields, **params).execute()
    request = svc.files().create(body=body, media_body=media(data, resumable=resumable), fields=fields, **params)
    return run_upload(request) if resumable else request.execute()


def test_shared_drive_items_need_supports_all_drives_and_carry_drive_id(emu):
    svc = service(emu)
    drive_id = emu.add_shared_drive("Team")
    folder_meta = {"name": "Shared", "mimeType": FOLDER_MIME, "parents": [drive_id]}
    not_found_error(svc.files().create(body=folder_meta))  # without supportsAllDrives the drive "is not there"
    folder = create_in(svc, folder_meta, supportsAllDrives=True)
    assert folder["driveId"] == drive_id and folder["parents"] == [drive_id]
    for resumable in (False, True):
        body = {"name": f"p{resumable}.jpg", "parents": [folder["id"]]}
        err = not_found_error(svc.files().create(body=body, media_body=media(b"p", resumable=resumable)))
        assert err.reason == f"File not found: {folder['id']}."
        assert create_in(svc, body, b"p", resumable, supportsAllDrives=True)["driveId"] == drive_id
    not_found_error(svc.files().get(fileId=folder["id"]))
    assert svc.files().get(fileId=folder["id"], supportsAllDrives=True, fields="driveId").execute() == {
        "driveId": drive_id}
    top = svc.files().get(fileId=drive_id, supportsAllDrives=True, fields="id,name,mimeType").execute()
    assert top == {"id": drive_id, "name": "Team", "mimeType": FOLDER_MIME}
    emu.add_file("mine.jpg", b"m")
    assert "driveId" not in emu.list_files()[-1]
    # Lists: My Drive only by default; everything with includeItemsFromAllDrives; one drive with corpora=drive.
    assert listed(svc) == ["mine.jpg"]
    everything = ["Shared", "pFalse.jpg", "pTrue.jpg", "mine.jpg"]
    assert listed(svc, includeItemsFromAllDrives=True, supportsAllDrives=True) == everything
    assert listed(svc, corpora="allDrives", includeItemsFromAllDrives=True, supportsAllDrives=True) == everything
    assert listed(svc, corpora="drive", driveId=drive_id, includeItemsFromAllDrives=True,
                  supportsAllDrives=True) == ["Shared", "pFalse.jpg", "pTrue.jpg"]
    # A move out of the shared drive takes the file (and driveId) with it.
    moved = svc.files().update(fileId=folder["id"], addParents="root", removeParents=drive_id,
                               supportsAllDrives=True, fields="driveId,parents").execute()
    assert moved == {"parents": [ROOT_FOLDER_ID]}
    assert all("driveId" not in f for f in emu.list_files())


@pytest.mark.parametrize("params, status, reason", [
    ({"corpora": "drive", "includeItemsFromAllDrives": True}, 400, "teamDriveIdRequiresTeamDriveCorpora"),
    ({"driveId": "DRIVE", "includeItemsFromAllDrives": True}, 400, "teamDriveIdRequiresTeamDriveCorpora"),
    ({"corpora": "allDrives", "driveId": "DRIVE", "includeItemsFromAllDrives": True}, 400,
     "teamDriveIdRequiresTeamDriveCorpora"),
    ({"corpora": "drive", "driveId": "DRIVE"}, 403, "teamDriveInclusionRequired"),
    ({"corpora": "allDrives"}, 403, "teamDriveInclusionRequired"),
    ({"corpora": "everything"}, 400, "invalid"),
    ({"corpora": "drive", "driveId": "0AnoSuchDriveUk9PVA", "includeItemsFromAllDrives": True}, 404, "notFound"),
])
def test_corpora_and_drive_id_rules(emu, params, status, reason):
    drive_id = emu.add_shared_drive("Team")
    if params.get("driveId") == "DRIVE":
        params = dict(params, driveId=drive_id)
    with pytest.raises(HttpError) as err:
        service(emu).files().list(supportsAllDrives=True, **params).execute()
    assert (err.value.status_code, http_reason(err.value)) == (status, reason)


def test_incomplete_search_over_all_drives(emu):
    svc = service(emu)
    drive_id = emu.add_shared_drive("Team")
    for n in range(3):
        emu.add_file(f"my{n}.jpg", b"m")
        emu.add_file(f"team{n}.jpg", b"t", drive_id)
    every = {"includeItemsFromAllDrives": True, "supportsAllDrives": True}
    assert len(listed(svc, **every)) == 6
    emu.faults.incomplete_search_all_drives = True
    answer = svc.files().list(corpora="allDrives", fields="incompleteSearch,files(name)", **every).execute()
    assert answer["incompleteSearch"] is True
    assert [f["name"] for f in answer["files"]] == ["my0.jpg", "my1.jpg", "my2.jpg"]  # every second left out
    assert emu.fault_counts["incomplete_search"] == 3
    complete = svc.files().list(corpora="user", fields="incompleteSearch,files(name)", **every).execute()
    assert complete["incompleteSearch"] is False and len(complete["files"]) == 6


def test_order_by_sorts_and_refuses_unknown_keys(emu):
    svc = service(emu)
    emu.add_file("2", b"xx", createdTime="2021-01-01T00:00:00Z")
    emu.add_file("12", b"x", createdTime="2019-01-01T00:00:00Z")
    emu.add_folder("folder", createdTime="2020-01-01T00:00:00Z")
    emu.add_file("1", b"xxx", createdTime="2022-01-01T00:00:00Z")
    assert listed(svc) == ["2", "12", "folder", "1"]  # no orderBy: creation order here
    assert listed(svc, orderBy="createdTime") == ["12", "folder", "2", "1"]
    assert listed(svc, orderBy="createdTime desc") == ["1", "2", "folder", "12"]
    assert listed(svc, orderBy="name") == ["1", "12", "2", "folder"]
    assert listed(svc, orderBy="name_natural") == ["1", "2", "12", "folder"]
    assert listed(svc, orderBy="folder,name desc") == ["folder", "2", "12", "1"]
    assert listed(svc, orderBy="quotaBytesUsed desc,modifiedTime") == ["1", "2", "12", "folder"]
    assert emu.requests[-1]["query"]["orderBy"] == "quotaBytesUsed desc,modifiedTime"
    for bad in ("size", "name,", "createdTime descending"):
        with pytest.raises(HttpError) as err:
            svc.files().list(orderBy=bad).execute()
        assert err.value.status_code == 400 and err.value.error_details[0]["location"] == "orderBy"
    with pytest.raises(HttpError) as err:  # documented in Drive's "Resolve errors" guide
        svc.files().list(q="fullText contains 'x'", orderBy="name").execute()
    assert err.value.status_code == 400 and err.value.reason.startswith("Sorting is not supported")


def test_generate_ids_parameters(emu):
    svc = service(emu)
    assert len(svc.files().generateIds(count=2, space="drive", type="files").execute()["ids"]) == 2
    assert svc.files().generateIds(space="appDataFolder").execute()["space"] == "appDataFolder"
    assert len(svc.files().generateIds(type="shortcuts").execute()["ids"]) == 10  # default count
    for params in ({"space": "photos"}, {"type": "folders"}, {"type": "shortcuts", "space": "appDataFolder"}):
        with pytest.raises(HttpError) as err:
            svc.files().generateIds(**params).execute()
        assert err.value.status_code == 400


def test_pregenerated_id_is_single_use_on_every_create_path(emu):
    svc = service(emu)
    folder_id, multi_id, resumable_id = svc.files().generateIds(count=3).execute()["ids"]
    folder = {"id": folder_id, "name": "F", "mimeType": FOLDER_MIME}
    assert create_in(svc, folder, fields="id") == {"id": folder_id}
    multi = {"id": multi_id, "name": "m.jpg"}
    assert create_in(svc, multi, b"m", resumable=False, fields="id") == {"id": multi_id}
    for body, data, resumable in ((folder, None, False), (multi, b"m", False), (multi, b"m", True)):
        with pytest.raises(HttpError) as err:
            create_in(svc, body, data, resumable)
        assert err.value.status_code == 409 and http_reason(err.value) == "fileIdInUse"
    # A re-sent resumable initiation: both sessions start, only the first to finish makes the file.
    first = start_session(emu, {"id": resumable_id, "name": "r.jpg"})
    second = start_session(emu, {"id": resumable_id, "name": "r.jpg"})
    status, _, made = put(emu, first, b"one", "bytes 0-2/3")
    assert status == 200 and made["id"] == resumable_id
    status, _, body = put(emu, second, b"two", "bytes 0-2/3")
    assert status == 409 and reason_of(body) == "fileIdInUse"
    assert len(emu.files) == 3 and emu.content(resumable_id) == b"one"


def test_reused_id_can_answer_success_with_the_existing_file(emu):
    emu.faults.reused_id_answer = "success"
    svc = service(emu)
    folder_id, multi_id, resumable_id = svc.files().generateIds(count=3).execute()["ids"]
    create_in(svc, {"id": folder_id, "name": "once", "mimeType": FOLDER_MIME})
    again = create_in(svc, {"id": folder_id, "name": "twice", "mimeType": FOLDER_MIME}, fields="id,name")
    assert again == {"id": folder_id, "name": "once"}
    create_in(svc, {"id": multi_id, "name": "m.jpg"}, b"first", resumable=False)
    for resumable in (False, True):
        answer = create_in(svc, {"id": multi_id, "name": "m2.jpg"}, b"second", resumable)
        # 200, yet for the old file: only the checksum tells the new bytes were not stored.
        assert answer["name"] == "m.jpg" and answer["md5Checksum"] == hashlib.md5(b"first").hexdigest()
    first = start_session(emu, {"id": resumable_id, "name": "r.jpg"})
    second = start_session(emu, {"id": resumable_id, "name": "r.jpg"})
    assert put(emu, first, b"one", "bytes 0-2/3")[0] == 200
    status, _, body = put(emu, second, b"two", "bytes 0-2/3")
    assert status == 200 and body["id"] == resumable_id
    assert len(emu.files) == 3 and emu.content(multi_id) == b"first" and emu.content(resumable_id) == b"one"
    assert emu.fault_counts["reused_id"] == 4
    # Another app's file is never handed out this way (guess): still 409.
    emu.faults.app_visibility = True
    other = service(emu, token=emu.issue_token(client_id=OTHER_APP))
    with pytest.raises(HttpError) as err:
        create_in(other, {"id": folder_id, "name": "x", "mimeType": FOLDER_MIME})
    assert err.value.status_code == 409


# ---------------------------------------------------------------------------
# Service accounts: the JWT grant at /token, domain-wide delegation, and no
# storage quota of their own
# ---------------------------------------------------------------------------

SA = DEFAULT_SERVICE_ACCOUNT
ALICE = "alice@example.com"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def sa_service(emu: DriveEmulator, key_file: Path, subject: str | None = None, scopes=(SCOPE_DRIVE,)):
    """A Drive service on service-account credentials, built the way cloud_transfer builds them."""
    creds = service_account.Credentials.from_service_account_file(
        str(key_file), scopes=list(scopes), subject=subject).with_token_uri(emu.url + "/token")
    return build_from_document(emu.discovery_document(), http=AuthorizedHttp(creds, http=build_http()))


def assertion(key_file: Path, key_id: str | None = None, **claims) -> str:
    """A JWT signed with the key file's key like google-auth's, with `claims` changed (None drops one)."""
    info = json.loads(key_file.read_text())
    now = int(time.time())
    payload = {"iat": now, "exp": now + 3600, "iss": info["client_email"], "aud": GOOGLE_TOKEN_URI,
               "scope": SCOPE_DRIVE}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return google_jwt.encode(crypt.RSASigner.from_service_account_info(info), payload, key_id=key_id).decode()


def jwt_grant(emu: DriveEmulator, jwt: str) -> tuple[int, dict]:
    status, _, body = raw(emu, "POST", "/token", urlencode({"grant_type": JWT_BEARER_GRANT, "assertion": jwt}),
                          FORM, token=None)
    return status, body


def test_service_account_token_speaks_for_the_account_and_its_client(emu, tmp_path):
    emu.faults.app_visibility = True
    key_file = make_service_account(tmp_path, emu)
    client_id = json.loads(key_file.read_text())["client_id"]
    emu.add_file("users.jpg", b"u")  # in the default user's My Drive
    drive_id = emu.add_shared_drive("Team")
    svc = sa_service(emu, key_file)
    assert svc.about().get(fields="user(emailAddress)").execute() == {"user": {"emailAddress": SA}}
    assert listed(svc) == []  # its own, empty My Drive: not the user's
    made = create_in(svc, {"name": "team.jpg", "parents": [drive_id]}, b"t", supportsAllDrives=True)
    assert [f["id"] for f in emu.files_of_app(client_id)] == [made["id"]]  # its client id is the "app"
    assert emu.token_refreshes == 1  # one token, reused for every request
    assert emu.requests[0]["path"] == "/token" and emu.requests[0]["user"] is None
    assert emu.requests_by_user == {SA: len(emu.requests) - 1}
    assert {r["client_id"] for r in emu.requests[1:]} == {client_id}
    # The hour is up: the 401 makes google-auth sign a new JWT.
    emu.expire_access_tokens()
    assert listed(svc) == []
    assert emu.token_refreshes == 2
    # Google's answer to this grant, exactly (no refresh token, no scope).
    status, body = jwt_grant(emu, assertion(key_file))
    assert status == 200 and set(body) == {"access_token", "expires_in", "token_type"}
    assert (body["expires_in"], body["token_type"]) == (3599, "Bearer")
    assert raw(emu, "GET", "/drive/v3/files", token=body["access_token"])[0] == 200


def test_service_account_with_delegation_acts_as_the_subject(emu, tmp_path):
    emu.faults.app_visibility = True
    key_file = make_service_account(tmp_path, emu, delegation=True)
    client_id = json.loads(key_file.read_text())["client_id"]
    emu.add_file("alice.jpg", b"a", owner=ALICE)
    emu.add_file("users.jpg", b"u")
    alice = sa_service(emu, key_file, subject=ALICE)
    assert alice.about().get(fields="user(emailAddress)").execute() == {"user": {"emailAddress": ALICE}}
    assert listed(alice) == ["alice.jpg"]
    # Her My Drive, her quota: no refusal for the service account's lack of one.
    made = upload(alice, b"new", "new.jpg", fields="id,ownedByMe,owners(emailAddress)")
    assert made["ownedByMe"] is True and made["owners"] == [{"emailAddress": ALICE}]
    assert "service_account_quota" not in emu.fault_counts
    assert [f["name"] for f in emu.files_of_app(client_id)] == ["new.jpg"]
    # drive.file: only what this service account's client made, of her files.
    assert listed(sa_service(emu, key_file, subject=ALICE, scopes=(SCOPE_DRIVE_FILE,))) == ["new.jpg"]
    assert SA not in emu.requests_by_user and emu.requests_by_user[ALICE] == len(
        [r for r in emu.requests if r["path"] != "/token"])


def test_subject_without_delegation_is_unauthorized_client(emu, tmp_path):
    key_file = make_service_account(tmp_path, emu)
    with pytest.raises(RefreshError) as err:
        sa_service(emu, key_file, subject=ALICE).files().list().execute()
    assert err.value.args[0] == "unauthorized_client: " + DELEGATION_DENIED
    status, body = jwt_grant(emu, assertion(key_file, sub=ALICE))
    assert (status, body) == (401, {"error": "unauthorized_client", "error_description": DELEGATION_DENIED})
    # Delegation covers the scopes the admin listed for the client, and no more.
    emu.allow_delegation(SA, [SCOPE_DRIVE_FILE])
    assert jwt_grant(emu, assertion(key_file, sub=ALICE, scope=SCOPE_DRIVE))[0] == 401
    assert jwt_grant(emu, assertion(key_file, sub=ALICE, scope=SCOPE_DRIVE_FILE))[0] == 200
    assert emu.requests_by_user == {}  # nothing reached the API


def test_jwt_not_signed_by_a_registered_key_is_invalid_grant(emu, tmp_path):
    key_file = make_service_account(tmp_path, emu)  # registered with key 0
    rogue = make_service_account(tmp_path, emu, key_index=1, register=False)  # same account, unknown key
    with pytest.raises(RefreshError) as err:
        sa_service(emu, rogue).files().list().execute()
    assert err.value.args[0] == "invalid_grant: " + JWT_BAD_SIGNATURE
    # The signature itself is checked, not only the key id: key 1 claiming to be key 0...
    kid = json.loads(key_file.read_text())["private_key_id"]
    assert jwt_grant(emu, assertion(rogue, key_id=kid)) == (
        400, {"error": "invalid_grant", "error_description": JWT_BAD_SIGNATURE})
    # ...and a genuine JWT whose claims were changed after signing.
    head, _, signature = assertion(key_file).split(".")
    forged = assertion(key_file, sub=ALICE).split(".")[1]
    assert jwt_grant(emu, f"{head}.{forged}.{signature}")[1]["error_description"] == JWT_BAD_SIGNATURE
    assert jwt_grant(emu, "not-a-jwt")[1]["error_description"] == JWT_BAD_SIGNATURE
    # An account Google does not know at all.
    ghost = make_service_account(tmp_path, emu, "ghost@proj.iam.gserviceaccount.com", register=False)
    with pytest.raises(RefreshError) as err:
        sa_service(emu, ghost).files().list().execute()
    assert err.value.args[0] == "invalid_grant: " + JWT_NO_ACCOUNT
    assert jwt_grant(emu, assertion(key_file))[0] == 200  # the real key still works
    assert emu.requests_by_user == {}


def test_jwt_claims_are_checked(emu, tmp_path):
    key_file = make_service_account(tmp_path, emu)
    now = int(time.time())
    refused = [
        ({"aud": "https://www.googleapis.com/oauth2/v4/token"}, "invalid_grant", JWT_BAD_AUDIENCE),
        ({"aud": None}, "invalid_grant", JWT_BAD_AUDIENCE),
        ({"iat": now, "exp": now + 3601}, "invalid_grant", JWT_BAD_WINDOW),  # longer than an hour
        ({"iat": now - 7200, "exp": now - 3600}, "invalid_grant", JWT_BAD_WINDOW),  # expired
        ({"iat": now + 900, "exp": now + 4500}, "invalid_grant", JWT_BAD_WINDOW),  # from the future
        ({"iat": None}, "invalid_grant", JWT_BAD_WINDOW),
        ({"scope": None}, "invalid_scope", JWT_BAD_SCOPE),
        ({"scope": " "}, "invalid_scope", JWT_BAD_SCOPE),
    ]
    for claims, error, description in refused:
        assert jwt_grant(emu, assertion(key_file, **claims)) == (
            400, {"error": error, "error_description": description}), claims
    # The emulator's own token URI is an audience too; a sub naming the account itself is no delegation.
    assert jwt_grant(emu, assertion(key_file, aud=emu.url + "/token"))[0] == 200
    assert jwt_grant(emu, assertion(key_file, sub=SA))[0] == 200
    status, _, body = raw(emu, "POST", "/token", urlencode({"grant_type": JWT_BEARER_GRANT}), FORM, token=None)
    assert status == 400 and body["error"] == "invalid_request"


def test_service_account_owns_nothing_in_a_my_drive(emu, tmp_path):
    key_file = make_service_account(tmp_path, emu)
    svc = sa_service(emu, key_file)
    user_folder = emu.add_folder("Shared with the robot")["id"]  # a user's folder it can reach
    attempts = [({"name": "F", "mimeType": FOLDER_MIME}, None, False),
                ({"name": "Doc", "mimeType": "application/vnd.google-apps.document"}, None, False),
                ({"name": "a.jpg"}, b"a", False), ({"name": "b.jpg"}, b"b", True),
                ({"name": "c.jpg", "parents": [user_folder]}, b"c", True)]
    for body, data, resumable in attempts:
        with pytest.raises(HttpError) as err:
            create_in(svc, body, data, resumable)
        assert (err.value.status_code, http_reason(err.value)) == (403, "storageQuotaExceeded"), body
        assert err.value.reason == SERVICE_ACCOUNT_QUOTA_MESSAGE
    assert emu.fault_counts == {"service_account_quota": len(attempts)}
    assert [f["name"] for f in emu.list_files()] == ["Shared with the robot"]
    assert emu.upload_sessions == {}  # resumable uploads are refused at initiation
    assert svc.about().get(fields="storageQuota(limit,usage)").execute() == {
        "storageQuota": {"limit": "0", "usage": "0"}}
    # A token issued directly for a service-account address is one too.
    robot = service(emu, token=emu.issue_token(user_email="robot@other.iam.gserviceaccount.com"))
    with pytest.raises(HttpError) as err:
        robot.files().create(body={"name": "x"}).execute()
    assert err.value.status_code == 403
    # Switched off: the service accounts of before April 2025, with their 15 GB.
    emu.faults.service_account_no_quota = False
    assert create_in(svc, {"name": "old.jpg"}, b"o")["name"] == "old.jpg"
    assert "limit" not in svc.about().get(fields="storageQuota").execute()["storageQuota"]


def test_service_account_creates_in_a_shared_drive(emu, tmp_path):
    emu.faults.app_visibility = True
    svc = sa_service(emu, make_service_account(tmp_path, emu))
    drive_id = emu.add_shared_drive("Team")
    folder = create_in(svc, {"name": "Photos", "mimeType": FOLDER_MIME, "parents": [drive_id]},
                       supportsAllDrives=True)
    assert folder["driveId"] == drive_id
    for resumable in (False, True):
        made = create_in(svc, {"name": f"p{int(resumable)}.jpg", "parents": [folder["id"]]}, b"photo",
                         resumable, supportsAllDrives=True)
        assert made["driveId"] == drive_id and made["md5Checksum"] == hashlib.md5(b"photo").hexdigest()
    assert "service_account_quota" not in emu.fault_counts
    assert sorted(emu.path_of(f["id"]) for f in emu.list_files()) == ["Photos", "Photos/p0.jpg", "Photos/p1.jpg"]
    # A member with full Drive scope sees what the service account put there.
    member = service(emu, token=emu.issue_token(scope=SCOPE_DRIVE))
    assert listed(member, corpora="drive", driveId=drive_id, includeItemsFromAllDrives=True,
                  supportsAllDrives=True) == ["Photos", "p0.jpg", "p1.jpg"]


def test_rsa_public_key_reads_both_pem_forms():
    from cryptography.hazmat.primitives import serialization

    info = service_account_info()
    key = serialization.load_pem_private_key(info["private_key"].encode(), None).public_key()
    numbers = key.public_numbers()
    for fmt in (serialization.PublicFormat.SubjectPublicKeyInfo, serialization.PublicFormat.PKCS1):
        assert rsa_public_key(key.public_bytes(serialization.Encoding.PEM, fmt)) == (numbers.n, numbers.e)
    with pytest.raises(ValueError):
        rsa_public_key(info["private_key"])  # a private key is no public key


# ---------------------------------------------------------------------------
# The changes feed
# ---------------------------------------------------------------------------

CHANGE_FIELDS = ("nextPageToken,newStartPageToken,"
                 "changes(fileId,removed,file(id,name,parents,trashed,appProperties,md5Checksum,size))")


def all_changes(svc, token: str, **params) -> tuple[list[dict], str, int]:
    """Every change since `token`, page by page: (changes, newStartPageToken, pages)."""
    params.setdefault("fields", CHANGE_FIELDS)
    out, pages = [], 0
    while True:
        page = svc.changes().list(pageToken=token, **params).execute()
        pages += 1
        out += page["changes"]
        if "nextPageToken" in page:
            assert "newStartPageToken" not in page
            token = page["nextPageToken"]
            continue
        return out, page["newStartPageToken"], pages


def test_changes_feed_start_token_and_one_entry_per_file(emu):
    svc = service(emu)
    emu.add_file("before.jpg", b"b")  # before the token: never listed
    answer = svc.changes().getStartPageToken().execute()
    assert set(answer) == {"kind", "startPageToken"} and answer["kind"] == "drive#startPageToken"
    token = answer["startPageToken"]
    assert token == emu.start_page_token()
    # An unchanged Drive costs one request and gives the same token back.
    page = svc.changes().list(pageToken=token).execute()
    assert page == {"kind": "drive#changeList", "changes": [], "newStartPageToken": token}
    folder = svc.files().create(body={"name": "Trip", "mimeType": FOLDER_MIME}, fields="id").execute()["id"]
    photo = upload(svc, b"v1", "a.jpg", [folder], appProperties={"src": "s3://b/a.jpg"})["id"]
    svc.files().update(fileId=photo, body={"name": "b.jpg"}).execute()
    run_upload(svc.files().update(fileId=photo, media_body=media(b"v2")))
    changes, new_token, pages = all_changes(svc, token)
    assert pages == 1
    # One entry per file, in its latest state, ordered by its latest change.
    assert changes == [
        {"fileId": folder, "removed": False,
         "file": {"id": folder, "name": "Trip", "parents": [ROOT_FOLDER_ID], "trashed": False}},
        {"fileId": photo, "removed": False,
         "file": {"id": photo, "name": "b.jpg", "parents": [folder], "trashed": False,
                  "appProperties": {"src": "s3://b/a.jpg"}, "md5Checksum": hashlib.md5(b"v2").hexdigest(),
                  "size": "2"}},
    ]
    assert int(new_token) > int(token)
    assert all_changes(svc, new_token)[0] == []
    # Without fields: the kinds, time, type and the file's default fields.
    default = svc.changes().list(pageToken=token).execute()
    first = default["changes"][0]
    assert set(first) == {"kind", "type", "changeType", "time", "removed", "fileId", "file"}
    assert (first["kind"], first["type"], first["changeType"]) == ("drive#change", "file", "file")
    assert set(first["file"]) == {"kind", "id", "name", "mimeType"}
    assert first["time"].endswith("Z")
    with pytest.raises(HttpError) as err:
        svc.changes().list(pageToken=token, fields="changes(file(nope))").execute()
    assert err.value.status_code == 400 and http_reason(err.value) == "invalidParameter"


def test_changes_feed_records_moves_trash_and_permanent_delete(emu):
    svc = service(emu)
    a, b = emu.add_folder("A")["id"], emu.add_folder("B")["id"]
    x = emu.add_file("x.jpg", b"x", a, appProperties={"k": "v"})["id"]
    y = emu.add_file("y.jpg", b"y", a)["id"]
    token = svc.changes().getStartPageToken().execute()["startPageToken"]
    svc.files().update(fileId=x, addParents=b, removeParents=a, body={"name": "x2.jpg"}).execute()
    svc.files().update(fileId=a, body={"trashed": True}).execute()  # y goes to the trash with A
    svc.files().delete(fileId=x).execute()
    changes, _, _ = all_changes(svc, token)
    assert changes == [
        {"fileId": y, "removed": False, "file": {"id": y, "name": "y.jpg", "parents": [a], "trashed": True,
                                                  "md5Checksum": hashlib.md5(b"y").hexdigest(), "size": "1"}},
        {"fileId": a, "removed": False, "file": {"id": a, "name": "A", "parents": [ROOT_FOLDER_ID], "trashed": True}},
        {"fileId": x, "removed": True},  # deleted for good: no file
    ]
    assert [c["fileId"] for c in all_changes(svc, token, includeRemoved=False)[0]] == [y, a]
    # Untrash and a permanent delete of a folder: every descendant is its own removal.
    token = emu.start_page_token()
    svc.files().update(fileId=a, body={"trashed": False}).execute()
    assert [(c["fileId"], c["file"]["trashed"]) for c in all_changes(svc, token)[0]] == [(y, False), (a, False)]
    token = emu.start_page_token()
    svc.files().delete(fileId=a).execute()
    assert all_changes(svc, token)[0] == [{"fileId": a, "removed": True}, {"fileId": y, "removed": True}]
    # A move is recorded with the new parents, and appProperties stay.
    token = emu.start_page_token()
    z = emu.add_file("z.jpg", b"z", b, appProperties={"s3key": "k/z.jpg"})["id"]
    svc.files().update(fileId=z, addParents="root", removeParents=b).execute()
    assert all_changes(svc, token)[0] == [{"fileId": z, "removed": False, "file": {
        "id": z, "name": "z.jpg", "parents": [ROOT_FOLDER_ID], "trashed": False,
        "appProperties": {"s3key": "k/z.jpg"}, "md5Checksum": hashlib.md5(b"z").hexdigest(), "size": "1"}}]


def test_changes_feed_pages(emu):
    svc = service(emu)
    token = emu.start_page_token()
    ids = [emu.add_file(f"f{i}.jpg", b"x")["id"] for i in range(5)]
    pages = []
    page_token = token
    while True:
        page = svc.changes().list(pageToken=page_token, pageSize=2, fields="nextPageToken,newStartPageToken,"
                                  "changes(fileId)").execute()
        pages.append([c["fileId"] for c in page["changes"]])
        if "nextPageToken" not in page:
            assert page["newStartPageToken"] == emu.start_page_token()
            break
        assert "newStartPageToken" not in page
        page_token = page["nextPageToken"]
    assert pages == [ids[:2], ids[2:4], ids[4:]]
    # pageSize above 1000 is coerced, not refused ("values above 1000 will be coerced to 1000").
    assert len(svc.changes().list(pageToken=token, pageSize=5000).execute()["changes"]) == 5
    with pytest.raises(HttpError) as err:
        svc.changes().list(pageToken=token, pageSize=0).execute()
    assert err.value.status_code == 400


def test_changes_tokens_invalid_and_expired(emu):
    svc = service(emu)
    old = svc.changes().getStartPageToken().execute()["startPageToken"]
    emu.add_file("a.jpg", b"a")
    future = str(int(emu.start_page_token()) + 5)
    for bad in ("abc", "0", future):
        with pytest.raises(HttpError) as err:
            svc.changes().list(pageToken=bad).execute()
        assert err.value.status_code == 400
        assert err.value.error_details[0] == {"message": "Invalid Value", "domain": "global", "reason": "invalid",
                                              "location": "pageToken", "locationType": "parameter"}
    assert len(svc.changes().list(pageToken=old).execute()["changes"]) == 1
    emu.expire_change_tokens()
    with pytest.raises(HttpError) as err:
        svc.changes().list(pageToken=old).execute()
    assert err.value.status_code == 400 and http_reason(err.value) == "invalid"
    assert emu.fault_counts["expired_change_token"] == 1
    fresh = svc.changes().getStartPageToken().execute()["startPageToken"]
    emu.add_file("b.jpg", b"b")
    assert [c["file"]["name"] for c in svc.changes().list(pageToken=fresh).execute()["changes"]] == ["b.jpg"]


def test_changes_feed_shows_only_what_the_caller_may_see(emu):
    emu.faults.app_visibility = True
    ours = service(emu)
    theirs = service(emu, token=emu.issue_token(client_id=OTHER_APP))
    wide = service(emu, token=emu.issue_token(client_id=OTHER_APP, scope=SCOPE_DRIVE))
    token = emu.start_page_token()
    mine = upload(ours, b"m", "mine.jpg", appProperties={"src": "ours"})["id"]
    other = upload(theirs, b"o", "other.jpg")["id"]
    users = emu.add_file("holiday.jpg", b"u")["id"]  # the web UI: no app
    theirs.files().delete(fileId=other).execute()
    assert [(c["fileId"], c["removed"]) for c in all_changes(ours, token)[0]] == [(mine, False)]
    assert [(c["fileId"], c["removed"]) for c in all_changes(theirs, token)[0]] == [(other, True)]
    # A wide scope sees every file of the user, still with only its own app's appProperties.
    seen = all_changes(wide, token)[0]
    assert [(c["fileId"], c["removed"]) for c in seen] == [(mine, False), (users, False), (other, True)]
    assert "appProperties" not in seen[0]["file"]
    # Shared drives: only with includeItemsFromAllDrives, or one drive with driveId.
    drive_id = emu.add_shared_drive("Team")
    token = emu.start_page_token()
    team = emu.add_file("team.jpg", b"t", drive_id, app=DEFAULT_CLIENT_ID)["id"]
    own = emu.add_file("own.jpg", b"o", app=DEFAULT_CLIENT_ID)["id"]
    every = {"includeItemsFromAllDrives": True, "supportsAllDrives": True}
    assert [c["fileId"] for c in all_changes(ours, token)[0]] == [own]
    assert [c["fileId"] for c in all_changes(ours, token, **every)[0]] == [team, own]
    assert [c["fileId"] for c in all_changes(ours, token, restrictToMyDrive=True, **every)[0]] == [own]
    in_drive = all_changes(ours, token, driveId=drive_id, fields="changes(fileId,driveId),newStartPageToken",
                           **every)[0]
    assert in_drive == [{"fileId": team, "driveId": drive_id}]
    assert all_changes(ours, token, spaces="appDataFolder")[0] == []
    with pytest.raises(HttpError) as err:
        ours.changes().list(pageToken=token, spaces="photos").execute()
    assert err.value.status_code == 400


# ---------------------------------------------------------------------------
# Per-folder item limit
# ---------------------------------------------------------------------------


def assert_folder_full(request) -> None:
    with pytest.raises(HttpError) as err:
        run_upload(request) if getattr(request, "resumable", None) else request.execute()
    assert err.value.status_code == 403
    assert err.value.error_details == [{"message": FOLDER_LIMIT_MESSAGE, "domain": "global",
                                        "reason": "numChildrenInNonRootLimitExceeded"}]
    assert err.value.reason == FOLDER_LIMIT_MESSAGE


def test_folder_item_limit_on_create_and_move(emu):
    emu.faults.folder_item_limit = 3
    svc = service(emu)
    full = emu.add_folder("Full")["id"]
    sub = emu.add_folder("Sub", full)["id"]
    for i in range(2):
        emu.add_file(f"in{i}.jpg", b"x", full)
    for i in range(5):  # what subfolders hold does not count
        emu.add_file(f"deep{i}.jpg", b"d", sub)
    for request in (svc.files().create(body={"name": "n", "mimeType": FOLDER_MIME, "parents": [full]}),
                    svc.files().create(body={"name": "n.jpg", "parents": [full]}, media_body=media(b"n", resumable=False)),
                    svc.files().create(body={"name": "n.jpg", "parents": [full]}, media_body=media(b"n"))):
        assert_folder_full(request)
    assert emu.fault_counts["folder_item_limit"] == 3
    # My Drive's root has no limit.
    for i in range(4):
        svc.files().create(body={"name": f"top{i}.jpg"}).execute()
    outside = emu.add_file("outside.jpg", b"o")["id"]
    assert_folder_full(svc.files().update(fileId=outside, addParents=full, removeParents="root"))
    # Renaming or updating what is already inside is no move in.
    inside = emu.list_files()[2]["id"]
    svc.files().update(fileId=inside, addParents=full, body={"name": "renamed.jpg"}).execute()
    # Trashed children still count (the stricter guess) unless switched off.
    svc.files().update(fileId=inside, body={"trashed": True}).execute()
    assert_folder_full(svc.files().create(body={"name": "n", "parents": [full]}))
    emu.faults.folder_limit_counts_trashed = False
    svc.files().update(fileId=outside, addParents=full, removeParents="root").execute()
    emu.faults.folder_limit_counts_trashed = True
    # Deleting for good makes room: the trashed one, then one more.
    svc.files().delete(fileId=inside).execute()
    assert_folder_full(svc.files().create(body={"name": "n", "parents": [full]}))
    svc.files().delete(fileId=outside).execute()
    assert svc.files().create(body={"name": "fits", "parents": [full]}, fields="parents").execute() == {
        "parents": [full]}


def test_folder_item_limit_checked_again_when_a_resumable_upload_completes(emu):
    emu.faults.folder_item_limit = 1
    svc = service(emu)
    folder = emu.add_folder("F")["id"]
    request = svc.files().create(body={"name": "big.jpg", "parents": [folder]}, media_body=media(b"b" * (CHUNK + 1)))
    status, response = request.next_chunk()
    assert response is None and status.resumable_progress == CHUNK
    emu.add_file("meanwhile.jpg", b"m", folder)  # the folder fills up meanwhile
    assert_folder_full(request)
    assert [f["name"] for f in emu.list_files()] == ["F", "meanwhile.jpg"]
    assert emu.faults.folder_item_limit is not None and Faults().folder_item_limit is None  # default: Drive's 500,000


# ---------------------------------------------------------------------------
# Revisions
# ---------------------------------------------------------------------------

REV_FIELDS = "revisions(id,keepForever,md5Checksum,size,mimeType,originalFilename,modifiedTime)"


def media_update(emu: DriveEmulator, file_id: str, data: bytes, keep: bool = False, mime: str = "image/jpeg"):
    query = "uploadType=media" + ("&keepRevisionForever=true" if keep else "")
    status, _, body = raw(emu, "PATCH", f"/upload/drive/v3/files/{file_id}?{query}", data, {"Content-Type": mime})
    return status, body


def download(request) -> bytes:
    buf = io.BytesIO()
    downloader = MediaIoBaseDownload(buf, request)
    done = False
    while not done:
        _, done = downloader.next_chunk()
    return buf.getvalue()


def test_uploads_make_revisions_that_can_be_listed_pinned_and_downloaded(emu):
    svc = service(emu)
    made = upload(svc, b"one", "photo.jpg", fields="id,headRevisionId")
    file_id = made["id"]
    listing = svc.revisions().list(fileId=file_id).execute()
    assert listing["kind"] == "drive#revisionList"
    assert [set(r) for r in listing["revisions"]] == [{"kind", "id", "mimeType", "modifiedTime"}]
    assert listing["revisions"][0]["id"] == made["headRevisionId"]
    second = run_upload(svc.files().update(fileId=file_id, media_body=media(b"two two"), keepRevisionForever=True,
                                           fields="headRevisionId,md5Checksum,quotaBytesUsed"))
    third = svc.files().update(fileId=file_id, body={"originalFilename": "IMG_3.jpg"},
                               media_body=media(b"three", "image/png", resumable=False),
                               fields="headRevisionId,quotaBytesUsed,mimeType").execute()
    revs = svc.revisions().list(fileId=file_id, fields=REV_FIELDS).execute()["revisions"]
    assert [r["keepForever"] for r in revs] == [False, True, False]
    assert [r["md5Checksum"] for r in revs] == [hashlib.md5(d).hexdigest() for d in (b"one", b"two two", b"three")]
    assert [r["size"] for r in revs] == ["3", "7", "5"]
    assert [r["mimeType"] for r in revs] == ["image/jpeg", "image/jpeg", "image/png"]
    assert [r["originalFilename"] for r in revs] == ["photo.jpg", "photo.jpg", "IMG_3.jpg"]
    assert [r["id"] for r in revs][1:] == [second["headRevisionId"], third["headRevisionId"]]
    # quotaBytesUsed: the head and the kept revisions, not the purgeable one.
    assert second["quotaBytesUsed"] == "7" and third["quotaBytesUsed"] == str(5 + 7)
    assert svc.about().get(fields="storageQuota(usage)").execute()["storageQuota"]["usage"] == "12"
    # The emulator's own view, bytes included.
    state = emu.revisions_of(file_id)
    assert [(r["content"], r["keepForever"], r["head"]) for r in state] == [
        (b"one", False, False), (b"two two", True, False), (b"three", False, True)]
    # Only revisions kept forever can be downloaded (documented), the head included (guess).
    assert download(svc.revisions().get_media(fileId=file_id, revisionId=revs[1]["id"])) == b"two two"
    for rev in (revs[0], revs[2]):
        with pytest.raises(HttpError) as err:
            svc.revisions().get_media(fileId=file_id, revisionId=rev["id"]).execute()
        assert err.value.status_code == 403 and err.value.error_details == [
            {"message": REVISION_DOWNLOAD_MESSAGE, "domain": "global", "reason": "download_restricted_for_revision"}]
    assert svc.files().get_media(fileId=file_id).execute() == b"three"  # files.get always has the head
    emu.faults.revision_download_needs_keep_forever = False
    assert svc.revisions().get_media(fileId=file_id, revisionId=revs[0]["id"]).execute() == b"one"
    status, headers, body = raw(emu, "GET", f"/drive/v3/files/{file_id}/revisions/{revs[1]['id']}?alt=media",
                                headers={"Range": "bytes=4-"})
    assert status == 206 and body == b"two" and headers["content-range"] == "bytes 4-6/7"
    # revisions.get without alt=media: metadata, default or chosen fields.
    got = svc.revisions().get(fileId=file_id, revisionId=revs[0]["id"]).execute()
    assert set(got) == {"kind", "id", "mimeType", "modifiedTime"} and got["kind"] == "drive#revision"
    who = svc.revisions().get(fileId=file_id, revisionId=revs[0]["id"], fields="lastModifyingUser(me)").execute()
    assert who == {"lastModifyingUser": {"me": True}}


def test_keep_forever_can_be_set_but_not_unset(emu):
    svc = service(emu)
    file_id = upload(svc, b"one", "p.jpg")["id"]
    media_update(emu, file_id, b"two")
    first = emu.revisions_of(file_id)[0]["id"]
    pinned = svc.revisions().update(fileId=file_id, revisionId=first, body={"keepForever": True},
                                    fields="id,keepForever").execute()
    assert pinned == {"id": first, "keepForever": True}
    with pytest.raises(HttpError) as err:
        svc.revisions().update(fileId=file_id, revisionId=first, body={"keepForever": False}).execute()
    assert err.value.status_code == 400 and err.value.error_details == [
        {"message": KEEP_FOREVER_OFF_MESSAGE, "domain": "global", "reason": "illegalKeepForeverModification"}]
    assert err.value.reason == KEEP_FOREVER_OFF_MESSAGE
    with pytest.raises(HttpError) as err:  # output-only fields
        svc.revisions().update(fileId=file_id, revisionId=first, body={"md5Checksum": "0" * 32}).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "fieldNotWritable"
    # Pinning an old revision makes its bytes count against the quota again.
    emu.faults.storage_quota_bytes = 3 + 3
    second = emu.revisions_of(file_id)[1]["id"]
    media_update(emu, file_id, b"333")
    with pytest.raises(HttpError) as err:
        svc.revisions().update(fileId=file_id, revisionId=second, body={"keepForever": True}).execute()
    assert http_reason(err.value) == "storageQuotaExceeded"
    # Unknown revisions and revision-less files.
    with pytest.raises(HttpError) as err:
        svc.revisions().get(fileId=file_id, revisionId="nope").execute()
    assert err.value.status_code == 404 and err.value.reason == "Revision not found: nope."
    folder = emu.add_folder("F")["id"]
    with pytest.raises(HttpError) as err:
        svc.revisions().list(fileId=folder).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "revisionsNotSupported"
    not_found_error(svc.revisions().list(fileId="missing"))


def test_at_most_200_revisions_kept_forever(emu):
    svc = service(emu)
    file_id = upload(svc, b"0", "p.bin", fields="id")["id"]
    for n in range(MAX_KEEP_FOREVER_REVISIONS):
        assert media_update(emu, file_id, str(n + 1).encode(), keep=True)[0] == 200
    status, body = media_update(emu, file_id, b"too many", keep=True)
    assert status == 403 and reason_of(body) == "keepForeverRevisionLimitExceeded"
    assert emu.content(file_id) == str(MAX_KEEP_FOREVER_REVISIONS).encode()  # nothing stored
    with pytest.raises(HttpError) as err:  # the resumable path refuses at initiation
        run_upload(svc.files().update(fileId=file_id, media_body=media(b"r"), keepRevisionForever=True))
    assert http_reason(err.value) == "keepForeverRevisionLimitExceeded"
    assert media_update(emu, file_id, b"plain")[0] == 200  # a revision not kept forever is fine
    revs = emu.revisions_of(file_id)
    assert len(revs) == MAX_KEEP_FOREVER_REVISIONS + 2
    with pytest.raises(HttpError) as err:
        svc.revisions().update(fileId=file_id, revisionId=revs[0]["id"], body={"keepForever": True}).execute()
    assert http_reason(err.value) == "keepForeverRevisionLimitExceeded"
    # Deleting a pinned revision makes room ("try deleting pinned revisions").
    svc.revisions().delete(fileId=file_id, revisionId=revs[1]["id"]).execute()
    assert media_update(emu, file_id, b"fits", keep=True)[0] == 200


def test_purgeable_revisions_are_capped_and_purged(emu):
    svc = service(emu)
    file_id = upload(svc, b"r0", "p.bin", fields="id")["id"]
    for n in range(1, MAX_PURGEABLE_REVISIONS + 1):
        assert media_update(emu, file_id, f"r{n}".encode())[0] == 200
    revs = emu.revisions_of(file_id)
    assert len(revs) == MAX_PURGEABLE_REVISIONS and revs[0]["content"] == b"r1"  # the oldest went early
    assert emu.fault_counts["revision_purged"] == 1
    # Drive's ~30-day purge, at once: all but the head and what is kept forever.
    svc.revisions().update(fileId=file_id, revisionId=revs[5]["id"], body={"keepForever": True}).execute()
    token = emu.start_page_token()
    assert emu.purge_old_revisions() == MAX_PURGEABLE_REVISIONS - 2
    assert [r["content"] for r in emu.revisions_of(file_id)] == [b"r6", f"r{MAX_PURGEABLE_REVISIONS}".encode()]
    assert svc.changes().list(pageToken=token).execute()["changes"] == []  # purging changes no file
    assert emu.purge_old_revisions(file_id) == 0


def test_revision_delete_rules(emu):
    svc = service(emu)
    file_id = upload(svc, b"one", "p.jpg")["id"]
    media_update(emu, file_id, b"two", keep=True)
    media_update(emu, file_id, b"three")
    r1, r2, r3 = (r["id"] for r in emu.revisions_of(file_id))
    with pytest.raises(HttpError) as err:
        svc.revisions().delete(fileId=file_id, revisionId=r3).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "cannotDeleteHeadRevision"
    assert svc.revisions().delete(fileId=file_id, revisionId=r1).execute() == ""
    assert svc.revisions().delete(fileId=file_id, revisionId=r2).execute() == ""  # kept forever: deletable
    with pytest.raises(HttpError) as err:
        svc.revisions().delete(fileId=file_id, revisionId=r1).execute()
    assert err.value.status_code == 404
    with pytest.raises(HttpError) as err:
        svc.revisions().delete(fileId=file_id, revisionId=r3).execute()
    assert err.value.status_code == 403 and http_reason(err.value) == "cannotDeleteOnlyRevision"
    # With the switch on, deleting the head brings the previous revision back as the file.
    emu.faults.head_revision_deletable = True
    media_update(emu, file_id, b"four")
    head = emu.revisions_of(file_id)[-1]["id"]
    token = emu.start_page_token()
    svc.revisions().delete(fileId=file_id, revisionId=head).execute()
    got = svc.files().get(fileId=file_id, fields="md5Checksum,size,headRevisionId").execute()
    assert got == {"md5Checksum": hashlib.md5(b"three").hexdigest(), "size": "5", "headRevisionId": r3}
    assert emu.content(file_id) == b"three"
    assert [c["fileId"] for c in svc.changes().list(pageToken=token).execute()["changes"]] == [file_id]
    with pytest.raises(HttpError) as err:
        svc.revisions().delete(fileId=file_id, revisionId=r3).execute()
    assert http_reason(err.value) == "cannotDeleteOnlyRevision"


# ---------------------------------------------------------------------------
# appProperties searches anywhere; moves and renames
# ---------------------------------------------------------------------------


def test_app_properties_has_finds_files_anywhere(emu):
    svc = service(emu)
    top = emu.add_folder("2019")["id"]
    deep = emu.add_folder("Trip", top, appProperties={"s3key": "photos/"})["id"]
    hit_top = upload(svc, b"1", "a.jpg", appProperties={"s3key": "photos/a.jpg", "run": "r1"})["id"]
    hit_deep = upload(svc, b"2", "A.JPG", [deep], appProperties={"s3key": "photos/a.jpg"})["id"]
    trashed = upload(svc, b"3", "a.jpg", [top], appProperties={"s3key": "photos/a.jpg"})["id"]
    svc.files().update(fileId=trashed, body={"trashed": True}).execute()
    upload(svc, b"4", "b.png", [deep], appProperties={"s3key": "photos/b.png"}, mimeType="image/png")

    def ids(q: str) -> list[str]:
        return [f["id"] for f in svc.files().list(q=q, fields="files(id)").execute()["files"]]

    has = "appProperties has { key='s3key' and value='photos/a.jpg' }"
    assert ids(has) == [hit_top, hit_deep, trashed]
    assert ids(f"{has} and trashed = false") == [hit_top, hit_deep]
    assert ids(f"trashed = false and {has} and mimeType = 'image/jpeg'") == [hit_top, hit_deep]
    assert ids(f"{has} and name = 'a.jpg' and trashed = false") == [hit_top, hit_deep]  # name = ignores case
    assert ids(f"{has} and appProperties has {{ key='run' and value='r1' }}") == [hit_top]
    assert ids(f"{has} and mimeType != '{FOLDER_MIME}' and '{deep}' in parents") == [hit_deep]
    assert ids(f"appProperties has {{ key='s3key' and value='photos/' }} and mimeType = '{FOLDER_MIME}'") == [deep]
    assert ids("appProperties has { key='s3key' and value='photos/A.jpg' }") == []  # values match exactly
    # Per app: another app's identical property is not ours to find.
    emu.faults.app_visibility = True
    theirs = service(emu, token=emu.issue_token(client_id=OTHER_APP, scope=SCOPE_DRIVE))
    upload(theirs, b"5", "c.jpg", appProperties={"s3key": "photos/a.jpg"})
    assert ids(f"{has} and trashed = false") == [hit_top, hit_deep]


def test_move_and_rename_in_one_update(emu):
    svc = service(emu)
    a = svc.files().create(body={"name": "A", "mimeType": FOLDER_MIME}, fields="id").execute()["id"]
    b = svc.files().create(body={"name": "B", "mimeType": FOLDER_MIME}, fields="id").execute()["id"]
    f = upload(svc, b"x", "x.jpg", [a], appProperties={"s3key": "k/x.jpg"})["id"]
    token = svc.changes().getStartPageToken().execute()["startPageToken"]
    moved = svc.files().update(fileId=f, addParents=b, removeParents=a, body={"name": "y.jpg"},
                               fields="id,name,parents,appProperties,md5Checksum").execute()
    assert moved == {"id": f, "name": "y.jpg", "parents": [b], "appProperties": {"s3key": "k/x.jpg"},
                     "md5Checksum": hashlib.md5(b"x").hexdigest()}
    assert emu.path_of(f) == "B/y.jpg" and emu.content(f) == b"x"
    assert len(emu.revisions_of(f)) == 1  # metadata changes make no revision
    # A folder moves with what it holds.
    svc.files().update(fileId=b, addParents=a, removeParents="root", body={"name": "B2"}).execute()
    assert emu.path_of(f) == "A/B2/y.jpg"
    changes = all_changes(svc, token)[0]
    assert [(c["fileId"], c["file"]["name"], c["file"]["parents"]) for c in changes] == [
        (f, "y.jpg", [b]), (b, "B2", [a])]
