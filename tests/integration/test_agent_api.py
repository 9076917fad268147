"""The agent API as restic 0.14 uses it (REST backend v2), plus the /v1 extensions."""

import json
import os
import time

import cv
from cv import sha256_hex

V2 = "application/vnd.x.restic.rest.v2"


def test_health_ready_metrics(node):
    r = node.request("GET", "/healthz")
    assert r.status == 200 and r.json() == {"status": "ok"}
    r = node.request("GET", "/readyz")
    assert r.status == 200 and r.json() == {"ready": True}
    r = node.request("GET", "/metrics")
    assert r.status == 200
    assert r.header("Content-Type").startswith("text/plain")
    text = r.body.decode()
    for series in ["chunkvault_http_requests_total", "chunkvault_http_request_duration_seconds_bucket",
                   "chunkvault_http_body_bytes_total", "chunkvault_open_connections",
                   "chunkvault_failed_disks", "chunkvault_reconstructed_reads_total",
                   "chunkvault_stored_bytes", "chunkvault_stored_objects"]:
        assert series in text, series
    # Label values are route templates, never device ids or object names.
    assert 'route="readyz"' in text


def test_commit_groups_are_counted(node, device):
    before = node.metrics()
    groups, jobs = (cv.metric_value(before, n) for n in
                    ("chunkvault_commit_groups_total", "chunkvault_commit_jobs_total"))
    body = os.urandom(300_000)
    assert device.request("POST", f"/data/{sha256_hex(body)}", body).status == 200
    after = node.metrics()
    # The upload was acknowledged after its group ran, so the counters already show it.
    assert cv.metric_value(after, "chunkvault_commit_groups_total") >= groups + 1
    assert cv.metric_value(after, "chunkvault_commit_jobs_total") >= jobs + 1
    for phase in ("sync", "index"):
        assert f'chunkvault_commit_seconds_total{{phase="{phase}"}}' in after


def test_create_repository_is_200(device):
    r = device.request("POST", "/?create=true")
    assert r.status == 200, r


def test_config_roundtrip(device):
    r = device.request("HEAD", "/config")
    assert r.status == 404
    assert r.body == b""
    cfg = os.urandom(155)
    r = device.request("POST", "/config", cfg)
    assert r.status == 200, r
    r = device.request("HEAD", "/config")
    assert r.status == 200 and r.header("Content-Length") == "155"
    r = device.request("GET", "/config", headers={"Range": "bytes=0-"})
    assert r.status == 206 and r.body == cfg
    r = device.request("GET", "/config")
    assert r.status == 200 and r.body == cfg
    # Same again: no-op. Different content: conflict.
    assert device.request("POST", "/config", cfg).status == 200
    r = device.request("POST", "/config", os.urandom(155))
    assert r.status == 409 and r.error_code() == "conflict"
    assert device.request("GET", "/config").body == cfg


def test_upload_is_exactly_200_and_readable(device):
    data = os.urandom(300_000)
    r = device.put("data", data)
    assert r.status == 200, r  # restic treats 201 and 204 as errors
    name = sha256_hex(data)
    r = device.request("HEAD", f"/data/{name}")
    assert r.status == 200 and int(r.header("Content-Length")) == len(data) and r.body == b""
    r = device.request("GET", f"/data/{name}")
    assert r.status == 200 and r.body == data
    # Re-upload of the same content is a no-op that still answers 200.
    assert device.put("data", data).status == 200
    assert device.usage()["objects"] == 1


def test_list_v1_and_v2(device):
    assert device.request("GET", "/keys/", headers={"Accept": V2}).body == b"[]"
    r = device.request("GET", "/keys/")
    assert r.status == 200 and r.json() == []
    blobs = [os.urandom(n) for n in (10, 2000, 70_000)]
    for b in blobs:
        assert device.put("keys", b).status == 200
    r = device.request("GET", "/keys/", headers={"Accept": V2})
    assert r.status == 200
    assert r.header("Content-Type") == V2
    got = sorted((e["name"], e["size"]) for e in r.json())
    assert got == sorted((sha256_hex(b), len(b)) for b in blobs)
    r = device.request("GET", "/keys/")  # v1: names only
    assert r.status == 200 and r.header("Content-Type") != V2
    assert sorted(r.json()) == sorted(sha256_hex(b) for b in blobs)
    # Other types stay empty.
    assert device.listing("snapshots") == []


def test_range_forms(device):
    data = bytes(range(256)) * 4  # 1024 bytes
    name = sha256_hex(data)
    assert device.put("data", data).status == 200

    def get(rng):
        return device.request("GET", f"/data/{name}", headers={"Range": rng})

    r = get("bytes=10-19")
    assert r.status == 206 and r.body == data[10:20]
    assert r.header("Content-Range") == "bytes 10-19/1024"
    r = get("bytes=1000-")
    assert r.status == 206 and r.body == data[1000:]
    r = get("bytes=-24")
    assert r.status == 206 and r.body == data[-24:]
    r = get("bytes=0-99999")  # clipped to the object
    assert r.status == 206 and r.body == data and r.header("Content-Range") == "bytes 0-1023/1024"
    r = get("bytes=0-")
    assert r.status == 206 and r.body == data


def test_delete_allowed_device(device):
    data = os.urandom(1000)
    name = sha256_hex(data)
    assert device.put("snapshots", data).status == 200
    r = device.request("DELETE", f"/snapshots/{name}")
    assert r.status == 200, r
    r = device.request("DELETE", f"/snapshots/{name}")
    assert r.status == 404 and r.error_code() == "not_found"
    assert device.request("HEAD", f"/snapshots/{name}").status == 404


def test_append_only_device_deletes_only_locks(node):
    dev = node.new_device(append_only=True)
    lock, data = os.urandom(100), os.urandom(100)
    assert dev.put("locks", lock).status == 200
    assert dev.put("data", data).status == 200
    r = dev.request("DELETE", f"/data/{sha256_hex(data)}")
    assert r.status == 403 and r.error_code() == "append_only"
    assert "append-only" in r.json()["error"]["message"]
    assert dev.request("HEAD", f"/data/{sha256_hex(data)}").status == 200
    assert dev.request("DELETE", f"/locks/{sha256_hex(lock)}").status == 200
    assert dev.listing("locks") == []
    # The operator flips the flag: now deletes work.
    r = node.admin("PATCH", f"/accounts/{dev.account}/devices/{dev.id}", {"append_only": False})
    assert r.status == 200 and r.json()["append_only"] is False
    assert dev.request("DELETE", f"/data/{sha256_hex(data)}").status == 200


def test_snapshot_upload_records_last_backup(device):
    assert device.usage()["last_backup_ns"] == 0
    assert device.put("data", os.urandom(50)).status == 200
    assert device.usage()["last_backup_ns"] == 0
    assert device.put("snapshots", os.urandom(50)).status == 200
    u = device.usage()
    assert u["last_backup_ns"] > 0
    r = device.node.admin("GET", f"/accounts/{device.account}/devices/{device.id}")
    assert cv.parse_rfc3339(r.json()["last_backup_at"]) == u["last_backup_ns"]


def test_exists_and_usage_extensions(device):
    present = [os.urandom(n) for n in (1, 500)]
    for b in present:
        assert device.put("data", b).status == 200
    absent = sha256_hex(b"not there")
    query = [{"type": "data", "name": sha256_hex(b)} for b in present] + [{"type": "data", "name": absent}]
    r = device.request("POST", "/v1/exists", json.dumps(query))
    assert r.status == 200, r
    assert sorted((e["name"], e["size"]) for e in r.json()) == sorted((sha256_hex(b), len(b)) for b in present)
    u = device.usage()
    assert u["objects"] == 2 and u["bytes"] == 501
    for bad in ['{"type":"data"}', '[{"type":"data","name":"x"}]', '[{"type":"nope","name":"%s"}]' % absent,
                '[{"type":"data","name":"%s","extra":1}]' % absent, "not json"]:
        r = device.request("POST", "/v1/exists", bad)
        assert r.status == 400, (bad, r)
        r.error_code()


def test_keep_alive_many_requests_one_connection(node, device):
    conn = node.connect()
    try:
        for i in range(20):
            data = os.urandom(1000 + i)
            r = node.request("POST", f"/{device.id}/data/{sha256_hex(data)}", data, device.headers(), conn=conn)
            assert r.status == 200
            r = node.request("GET", f"/{device.id}/data/{sha256_hex(data)}", None, device.headers(), conn=conn)
            assert r.status == 200 and r.body == data
    finally:
        conn.close()


def test_body_in_bursts_with_pauses_then_a_pipelined_request(node, device):
    """The body reader takes what has arrived without waiting and waits (with the body
    timeout) only when nothing has: a body sent in bursts with pauses, the last burst
    followed at once by the next request on the same connection, stores exactly the body
    and answers both requests in order."""
    body = os.urandom(3 * 1024 * 1024 + 12345)
    name = sha256_hex(body)
    cuts = [0, 1, 70_000, 1024 * 1024, 2 * 1024 * 1024 + 7, len(body)]
    s = node.tls_socket(timeout=20)
    try:
        s.sendall((f"POST /{device.id}/data/{name} HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: {device.basic()}\r\nContent-Length: {len(body)}\r\n\r\n").encode())
        for a, b in zip(cuts, cuts[1:-1]):
            s.sendall(body[a:b])
            time.sleep(0.3)  # well under body_timeout_s: the reader must wait, not give up
        s.sendall(body[cuts[-2]:] + (f"HEAD /{device.id}/data/{name} HTTP/1.1\r\nHost: x\r\n"
                                      f"Authorization: {device.basic()}\r\n"
                                      "Connection: close\r\n\r\n").encode())
        answer = cv.read_all(s)
    finally:
        s.close()
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"HTTP/1.1 200" in rest and f"Content-Length: {len(body)}".encode() in rest, rest[:300]
    assert device.request("GET", f"/data/{name}").body == body


def test_bearer_token(device):
    r = device.node.request("GET", f"/{device.id}/v1/usage", headers={"Authorization": f"Bearer {device.token}"})
    assert r.status == 200, r


def test_expect_100_continue(node, device):
    data = os.urandom(5000)
    head = (f"POST /{device.id}/data/{sha256_hex(data)} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: {device.basic()}\r\nContent-Length: {len(data)}\r\n"
            "Expect: 100-continue\r\n\r\n").encode()
    s = node.tls_socket()
    try:
        s.sendall(head)
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100 Continue"), first
        s.sendall(data)
        rest = b""
        while b"\r\n\r\n" not in rest:
            rest += s.recv(4096)
        assert rest.startswith(b"HTTP/1.1 200"), rest
    finally:
        s.close()
    assert device.request("GET", f"/data/{sha256_hex(data)}").body == data


def test_pipelined_requests_answered_in_order(node, device):
    blobs = [os.urandom(100 + i) for i in range(3)]
    reqs = b""
    for b in blobs:
        reqs += (f"POST /{device.id}/data/{sha256_hex(b)} HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: {device.basic()}\r\nContent-Length: {len(b)}\r\n\r\n").encode() + b
    for b in blobs:
        reqs += (f"GET /{device.id}/data/{sha256_hex(b)} HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: {device.basic()}\r\n\r\n").encode()
    reqs += b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data = node.raw(reqs, timeout=10)
    bodies = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
        bodies.append((status, rest[:length]))
        data = rest[length:]
    assert [s for s, _ in bodies] == [200] * 6 + [200]
    assert [b for _, b in bodies[3:6]] == blobs


def test_empty_object(device):
    empty = sha256_hex(b"")
    r = device.put("data", b"")
    assert r.status == 200, r
    r = device.request("HEAD", f"/data/{empty}")
    assert r.status == 200 and r.header("Content-Length") == "0"
    # restic always sends a Range; bytes=0- of an empty object is served whole.
    r = device.request("GET", f"/data/{empty}", headers={"Range": "bytes=0-"})
    assert r.status == 200 and r.body == b""
    r = device.request("GET", f"/data/{empty}", headers={"Range": "bytes=0-0"})
    assert r.status == 416
