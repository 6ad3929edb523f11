"""S3 compatibility: answers real S3s and S3-compatible stores give that moto alone does not.

- SSE-KMS and SSE-C objects, whose ETag is 32 hex digits but not the MD5 of the bytes;
- an empty ETag (``""``), as gateways over backends without MD5 send it;
- user metadata in another header case (``X-Amz-Meta-Mtime``, MinIO and Go servers);
- ETags of odd shapes in the checkpoint (empty, quoted, not hex, SHA1, multipart);
- a second, independent S3 implementation: ``rclone serve s3``, with and without ETags.

moto is put behind ``S3FaultProxy`` with its compatibility switches for the first three; the proxy's
own tests (boto3 against it) come first, so an end-to-end failure below is the tool's, not the
proxy's. Each end-to-end test runs the real script as a subprocess against these servers and the
Drive emulator, and checks Drive independently (every photo exactly once, right MD5) besides the
tool's own ``verify``. Nothing here sleeps to synchronise.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import http.client
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import pytest

from cloud_transfer import Checkpoint, CheckpointEntry
from tests.conftest import AWS_KEY_ID, AWS_SECRET, RCLONE_MODES, assert_drive_matches, photo_bytes
from tests.s3_fault_proxy import S3FaultProxy
from tests.test_faults import FAST_RETRIES, ROOT, populate

MTIME = 1262347445   # 2010-01-01T12:04:05Z: long before any test object's S3 upload time


@pytest.fixture
def penv(env, moto_url):
    """`env` with S3 behind the proxy (every switch off until the test turns one on), fast retries."""
    with S3FaultProxy(moto_url) as proxy:
        env.vars.update(AWS_ENDPOINT_URL=proxy.url, **FAST_RETRIES)
        env.proxy = proxy
        yield env


@pytest.fixture
def proxy(moto_url):
    with S3FaultProxy(moto_url) as running:
        yield running


def client_for(url: str):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=AWS_KEY_ID, aws_secret_access_key=AWS_SECRET)


def etags_seen(client, bucket: str, key: str) -> tuple[str, str, str]:
    """The ETag of `key` as the listing, HEAD and GET give it (boto3's values, quotes included)."""
    listed = {item["Key"]: item["ETag"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]}
    return listed[key], client.head_object(Bucket=bucket, Key=key)["ETag"], \
        client.get_object(Bucket=bucket, Key=key)["ETag"]


def uploads(drive) -> list[dict]:
    """Every request that sends file content to Drive (creates and new revisions alike)."""
    with drive.lock:
        return [r for r in drive.requests if r["path"].startswith("/upload/")]


def modified_seconds(item: dict) -> int:
    return int(dt.datetime.fromisoformat(item["modifiedTime"].replace("Z", "+00:00")).timestamp())


# -- the proxy's switches, seen through boto3 --------------------------------------------------------

def test_proxy_switches_are_off_by_default(proxy, s3, bucket):
    """With no switch on, the proxy changes nothing: ETag = MD5 everywhere, no SSE, metadata as sent."""
    body = b"plain bytes"
    s3.put_object(Bucket=bucket, Key="a/plain.jpg", Body=body, Metadata={"mtime": "1"})
    client = client_for(proxy.url)
    md5 = f'"{hashlib.md5(body).hexdigest()}"'
    assert etags_seen(client, bucket, "a/plain.jpg") == (md5, md5, md5)
    head = client.head_object(Bucket=bucket, Key="a/plain.jpg")
    assert "ServerSideEncryption" not in head and "SSECustomerAlgorithm" not in head
    assert head["Metadata"] == {"mtime": "1"}
    assert not +proxy.counts


def test_proxy_sse_kms_etag_is_hex_not_md5_and_one_value_everywhere(proxy, s3, bucket):
    """SSE-KMS as AWS answers it: aws:kms + key id, and one 32-hex ETag in listing, HEAD and GET that
    is not the MD5 of the bytes (the bytes themselves are untouched)."""
    body = b"kms-encrypted photo"
    s3.put_object(Bucket=bucket, Key="k/IMG_1.jpg", Body=body)
    proxy.sse_kms = True
    client = client_for(proxy.url)
    listed, headed, got = etags_seen(client, bucket, "k/IMG_1.jpg")
    md5 = hashlib.md5(body).hexdigest()
    assert listed == headed == got == f'"{hashlib.md5(b"kms:" + md5.encode()).hexdigest()}"'
    assert len(listed.strip('"')) == 32 and listed.strip('"') != md5
    head = client.head_object(Bucket=bucket, Key="k/IMG_1.jpg")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].startswith("arn:aws:kms:")
    assert client.get_object(Bucket=bucket, Key="k/IMG_1.jpg")["Body"].read() == body
    assert proxy.counts["sse_kms"] == 5   # 1 listing entry, 2 HEADs, 2 GETs


def test_proxy_sse_kms_if_match_takes_only_the_served_etag(proxy, s3, bucket):
    """If-Match with the ETag the proxy served is translated for moto (the GET works, and still fails
    412 once the object is overwritten); the true MD5 or any other value gets 412, as on AWS."""
    body = b"conditional bytes"
    s3.put_object(Bucket=bucket, Key="k/IMG_2.jpg", Body=body)
    proxy.sse_kms = True
    client = client_for(proxy.url)
    served = client.head_object(Bucket=bucket, Key="k/IMG_2.jpg")["ETag"]
    assert client.get_object(Bucket=bucket, Key="k/IMG_2.jpg", IfMatch=served)["Body"].read() == body
    for wrong in (f'"{hashlib.md5(body).hexdigest()}"', '"0123456789abcdef0123456789abcdef"'):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            client.get_object(Bucket=bucket, Key="k/IMG_2.jpg", IfMatch=wrong)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    s3.put_object(Bucket=bucket, Key="k/IMG_2.jpg", Body=b"overwritten")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client.get_object(Bucket=bucket, Key="k/IMG_2.jpg", IfMatch=served)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert (proxy.counts["if_match_translated"], proxy.counts["if_match_refused"]) == (2, 2)


def test_proxy_sse_c_etag_is_hex_not_md5_with_customer_algorithm(proxy, s3, bucket):
    """SSE-C: AES256 customer-algorithm headers and one non-MD5 32-hex ETag everywhere."""
    body = b"sse-c photo"
    s3.put_object(Bucket=bucket, Key="c/IMG_1.jpg", Body=body)
    proxy.sse_c = True
    client = client_for(proxy.url)
    with pytest.raises(botocore.exceptions.ClientError) as refused:   # no key: AWS answers 400
        client.get_object(Bucket=bucket, Key="c/IMG_1.jpg")
    assert refused.value.response["Error"]["Code"] == "InvalidRequest"
    key = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": b"k" * 32}
    listed = {item["Key"]: item["ETag"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]}["c/IMG_1.jpg"]
    head = client.head_object(Bucket=bucket, Key="c/IMG_1.jpg", **key)
    got = client.get_object(Bucket=bucket, Key="c/IMG_1.jpg", **key)
    md5 = hashlib.md5(body).hexdigest()
    assert listed == head["ETag"] == got["ETag"] == f'"{hashlib.md5(b"sse-c:" + md5.encode()).hexdigest()}"'
    assert head["SSECustomerAlgorithm"] == "AES256" and "ServerSideEncryption" not in head
    assert client.get_object(Bucket=bucket, Key="c/IMG_1.jpg", IfMatch=got["ETag"], **key)["Body"].read() == body
    assert proxy.counts["sse_c"] == 4 and proxy.counts["sse_c_key_missing"] == 1


def test_proxy_empty_etag_everywhere_and_if_match_ignored(proxy, s3, bucket):
    """empty_etag: `""` in listing, HEAD and GET; If-Match is ignored as rclone serve s3 does."""
    s3.put_object(Bucket=bucket, Key="e/IMG_1.jpg", Body=b"no etag here")
    proxy.empty_etag = True
    client = client_for(proxy.url)
    assert etags_seen(client, bucket, "e/IMG_1.jpg") == ('""', '""', '""')
    for condition in ('""', '"0123456789abcdef0123456789abcdef"'):
        assert client.get_object(Bucket=bucket, Key="e/IMG_1.jpg", IfMatch=condition)["Body"].read() == b"no etag here"
    assert (proxy.counts["empty_etag"], proxy.counts["if_match_ignored"]) == (5, 2)


def test_proxy_capitalised_metadata_reaches_boto3_capitalised(proxy, s3, bucket):
    """On the wire the header is X-Amz-Meta-Mtime; botocore keeps that case: Metadata == {"Mtime": ...}
    from HEAD and GET alike (botocore does not lowercase user-metadata names)."""
    s3.put_object(Bucket=bucket, Key="m/IMG_1.jpg", Body=b"meta", Metadata={"mtime": "1600000000"})
    proxy.capitalise_metadata = True
    client = client_for(proxy.url)
    assert client.head_object(Bucket=bucket, Key="m/IMG_1.jpg")["Metadata"] == {"Mtime": "1600000000"}
    assert client.get_object(Bucket=bucket, Key="m/IMG_1.jpg")["Metadata"] == {"Mtime": "1600000000"}
    connection = http.client.HTTPConnection(urlsplit(proxy.url).hostname, urlsplit(proxy.url).port, timeout=10)
    try:
        connection.request("HEAD", f"/{bucket}/m/IMG_1.jpg", headers={   # moto wants one; it checks no signature
            "Authorization": f"AWS4-HMAC-SHA256 Credential={AWS_KEY_ID}/20260101/us-east-1/s3/aws4_request, "
                             "SignedHeaders=host, Signature=0"})
        response = connection.getresponse()
        assert response.status == 200
        names = [name for name, _ in response.getheaders()]
    finally:
        connection.close()
    assert "X-Amz-Meta-Mtime" in names and "x-amz-meta-mtime" not in names
    assert proxy.counts["capitalise_metadata"] == 3   # HEAD, GET, raw HEAD


def test_proxy_switch_can_be_a_key_predicate(proxy, s3, bucket):
    """A predicate turns a switch on per key: only the encrypted prefix looks encrypted."""
    s3.put_object(Bucket=bucket, Key="enc/a.jpg", Body=b"a")
    s3.put_object(Bucket=bucket, Key="open/b.jpg", Body=b"b")
    proxy.sse_kms = lambda key: key.startswith("enc/")
    client = client_for(proxy.url)
    assert etags_seen(client, bucket, "open/b.jpg") == (f'"{hashlib.md5(b"b").hexdigest()}"',) * 3
    assert etags_seen(client, bucket, "enc/a.jpg")[0] != f'"{hashlib.md5(b"a").hexdigest()}"'
    assert "ServerSideEncryption" not in client.head_object(Bucket=bucket, Key="open/b.jpg")
    assert client.head_object(Bucket=bucket, Key="enc/a.jpg")["ServerSideEncryption"] == "aws:kms"


# -- the tool against encrypted buckets ------------------------------------------------------------

def test_sse_kms_bucket_copies_verifies_and_is_adopted_without_checkpoint(penv):
    """SSE-KMS ETags are not MD5s: the copy must not be refused as "corrupted" (MD5 vs ETag), verify
    must find nothing wrong, and with the checkpoint gone a re-run must recognise the intact copies
    by their provenance (zero uploads) rather than send every photo again."""
    penv.proxy.sse_kms = True
    bodies = populate(penv, 8)
    result = penv.run()
    assert result.returncode == 0, result.stderr
    assert penv.proxy.counts["sse_kms"] >= len(bodies)   # the tool did see the KMS ETags
    assert_drive_matches(penv, bodies)

    penv.checkpoint.unlink()
    penv.drive.clear_requests()
    result = penv.run()
    assert result.returncode == 0, result.stderr
    assert uploads(penv.drive) == [], "intact copies were sent again"
    assert_drive_matches(penv, bodies)


def test_sse_c_objects_are_skipped_with_a_reason_without_the_key_and_copied_with_it(penv):
    """SSE-C objects can only be read with their key (AWS answers 400 InvalidRequest otherwise): without
    S3_SSE_C_KEY each is skipped, saying why; with it, each is copied once and verify finds nothing."""
    import base64

    penv.proxy.sse_c = lambda key: key.startswith("album/0/")
    bodies = populate(penv, 8)
    # No extension: its type is asked with a HEAD, whose 400 carries no error text.
    bodies["album/0/no-extension"] = penv.put("album/0/no-extension", photo_bytes("n", 3000), ContentType="image/jpeg")
    encrypted = [key for key in bodies if key.startswith("album/0/")]
    result = penv.run()
    assert result.returncode == 0, result.stderr
    assert f"encrypted with a customer-provided key (SSE-C): set S3_SSE_C_KEY to copy it {len(encrypted)}" in result.stdout
    assert set(penv.drive_files()) == {f"{ROOT}/{key}" for key in bodies if key not in encrypted}

    penv.vars["S3_SSE_C_KEY"] = base64.b64encode(b"k" * 32).decode()
    result = penv.run()
    assert result.returncode == 0, result.stderr
    assert penv.proxy.counts["sse_c"] >= len(encrypted) and penv.proxy.counts["sse_c_key_missing"] >= len(encrypted)
    assert penv.vars["S3_SSE_C_KEY"] not in result.stderr + result.stdout + penv.checkpoint.read_text()
    assert_drive_matches(penv, bodies)


def test_opaque_32_hex_etags_are_accepted_when_two_downloads_agree(penv):
    """S3 Express directory buckets (and other stores) send 32 hex digits that are not the MD5, with no
    header saying so: the object is downloaded twice, and two agreeing downloads are the bytes."""
    penv.proxy.opaque_etag = True
    bodies = populate(penv, 4)
    result = penv.run("--workers", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("is not the MD5 of its bytes (two downloads agree)") == len(bodies)
    assert_drive_matches(penv, bodies)
    assert penv.run().returncode == 0


def test_empty_etag_run_rerun_verify_and_status_succeed(penv):
    """An empty ETag must survive the checkpoint: run, re-run (uploading nothing), verify and status
    all exit 0 (a checkpoint entry without its etag reads back as damaged, exit 2)."""
    penv.proxy.empty_etag = True
    bodies = populate(penv, 6)
    result = penv.run()
    assert result.returncode == 0, result.stderr
    assert penv.proxy.counts["empty_etag"] >= len(bodies)

    penv.drive.clear_requests()
    result = penv.run()
    assert result.returncode == 0, result.stderr
    assert uploads(penv.drive) == [], "the re-run sent photos again"
    assert_drive_matches(penv, bodies)
    result = penv.run("status")
    assert result.returncode == 0, result.stderr


ODD_ETAGS = {
    "empty": "",
    "quoted": '"quoted"',
    "not-hex": "not-hex",
    "sha1": hashlib.sha1(b"x").hexdigest(),
    "multipart": "0cc175b9c0f1b6a831c399e269772661-3",
}


@pytest.mark.parametrize("via", ["snapshot", "journal"])
@pytest.mark.parametrize("etag", list(ODD_ETAGS.values()), ids=list(ODD_ETAGS))
def test_checkpoint_keeps_odd_etags_unchanged(tmp_path, etag, via):
    """Whatever an S3 sends as ETag is compared with the checkpoint on the next run, so it must read
    back exactly as written (the whole entry equal), through a compacted snapshot and through
    journal replay alike; a plain-MD5 entry beside it must be unaffected."""
    path = tmp_path / "checkpoint.json"
    binding = {"bucket": "photos", "prefix": "", "folder": ROOT}
    expected = {key: CheckpointEntry(status="done", etag=value, size=100 + n, md5=hashlib.md5(key.encode()).hexdigest(),
                                     drive_id=f"id-{n}", attempts=1, run="run-1")   # a done entry's time is its run's
                for n, (key, value) in enumerate({"odd/IMG_1.jpg": etag,
                                                  "plain/IMG_2.jpg": hashlib.md5(b"2").hexdigest()}.items())}
    written = Checkpoint(path, binding)
    if via == "journal":
        written.compact()   # an empty snapshot: the entries below live only in the journal
    for key, entry in expected.items():
        written.record(key, dataclasses.replace(entry))
    written.flush()
    if via == "snapshot":
        written.compact()
    assert written.journal_path.exists() == (via == "journal")

    loaded = Checkpoint.load(path, binding)
    assert {key: loaded.get(key) for key in expected} == expected


# -- user metadata in another case -----------------------------------------------------------------

@pytest.mark.parametrize("capitalise", [False, True], ids=["x-amz-meta-mtime", "X-Amz-Meta-Mtime"])
def test_mtime_metadata_sets_modified_time_in_any_header_case(penv, capitalise):
    """An object's x-amz-meta-mtime (rclone's, s3cmd's original file time) becomes Drive's modifiedTime,
    whatever case the server gives the header (MinIO and Go servers send X-Amz-Meta-Mtime). The
    lowercase case is the control: it shows the test itself reads modifiedTime right."""
    penv.proxy.capitalise_metadata = capitalise
    key = "camera/IMG_0001.jpg"
    body = penv.put(key, Metadata={"mtime": str(MTIME)})
    result = penv.run()
    assert result.returncode == 0, result.stderr
    assert bool(penv.proxy.counts["capitalise_metadata"]) == capitalise
    [copy] = penv.drive_files()[f"{ROOT}/{key}"]
    assert copy["md5Checksum"] == hashlib.md5(body).hexdigest()
    assert modified_seconds(copy) == MTIME, f"modifiedTime {copy['modifiedTime']}, metadata mtime {MTIME}"


# -- rclone serve s3: a second S3 implementation ---------------------------------------------------

@pytest.mark.parametrize("rclone_s3", list(RCLONE_MODES), indirect=True)
def test_rclone_serve_s3_answers_as_documented(rclone_s3):
    """What the other tests rely on about rclone serve s3, per mode: the ETag it lists (unquoted MD5,
    or empty), the ETag of HEAD/GET (quoted MD5, or `""`), If-Match ignored, metadata names in Go's
    case (Mtime), and LastModified taken from the mtime metadata of a put."""
    client, bucket = rclone_s3.client, rclone_s3.make_bucket()
    rclone_s3.write(bucket, "files/written.jpg", b"written", mtime=MTIME)
    client.put_object(Bucket=bucket, Key="puts/put.jpg", Body=b"put", Metadata={"mtime": str(MTIME + 1)})
    listed = {item["Key"]: item for item in client.list_objects_v2(Bucket=bucket)["Contents"]}
    for key, body in (("files/written.jpg", b"written"), ("puts/put.jpg", b"put")):
        md5 = hashlib.md5(body).hexdigest()
        assert listed[key]["ETag"] == (md5 if rclone_s3.mode == "default" else "")
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ETag"] == (f'"{md5}"' if rclone_s3.mode == "default" else '""')
        wrong = client.get_object(Bucket=bucket, Key=key, IfMatch='"0123456789abcdef0123456789abcdef"')
        assert wrong["Body"].read() == body
    assert int(listed["files/written.jpg"]["LastModified"].timestamp()) == MTIME
    assert int(listed["puts/put.jpg"]["LastModified"].timestamp()) == MTIME + 1
    assert client.head_object(Bucket=bucket, Key="puts/put.jpg")["Metadata"] == {"Mtime": str(MTIME + 1)}


@pytest.mark.parametrize("rclone_s3", list(RCLONE_MODES), indirect=True)
def test_rclone_serve_s3_copies_every_photo_once_and_reruns_clean(rclone_env, rclone_s3):
    """Against rclone serve s3 (with MD5 ETags, and with none): 12 photos in nested prefixes, half
    written as files and half put through S3, plus a text file that must be skipped. Run, re-run and
    verify exit 0; every photo is in Drive once with the right MD5 and its original time; the re-run
    uploads nothing."""
    env = rclone_env
    bodies = {}
    for n in range(12):
        key = f"trips/{2019 + n % 3}/day-{n // 4}/IMG_{n:03d}.jpg"
        if n % 2:
            bodies[key] = rclone_s3.write(env.bucket, key, photo_bytes(key, 2000 + n), mtime=MTIME + n)
        else:
            bodies[key] = env.put(key, photo_bytes(key, 2000 + n), Metadata={"mtime": str(MTIME + n)})
    rclone_s3.write(env.bucket, "trips/2019/notes.txt", b"not a photo")

    result = env.run()
    assert result.returncode == 0, result.stderr
    assert_drive_matches(env, bodies)   # exactly the photos: notes.txt was skipped
    files = env.drive_files()
    times = {key: modified_seconds(files[f"{ROOT}/{key}"][0]) for key in bodies}
    assert times == {key: MTIME + int(key[-7:-4]) for key in bodies}

    env.drive.clear_requests()
    result = env.run()
    assert result.returncode == 0, result.stderr
    assert uploads(env.drive) == [], "the re-run sent photos again"
    assert_drive_matches(env, bodies)
