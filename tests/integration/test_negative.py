"""Requests the node must refuse: each test checks the status, the JSON error body and that
nothing was stored (the device's usage and listings are unchanged)."""

import os
import socket
import warnings
import ssl
import time

import pytest

import cv
from cv import parse_raw_response, sha256_hex


def snapshot_state(dev):
    return (dev.usage()["objects"], dev.usage()["bytes"],
            {t: dev.listing(t) for t in ("data", "keys", "locks", "snapshots", "index")},
            dev.request("HEAD", "/config").status)


@pytest.fixture
def dev(node):
    d = node.new_device(append_only=False)
    assert d.put("data", b"seed object").status == 200
    return d


BAD_NAMES = [
    ("dotdot", "..", 400, "invalid_path"),
    ("dot", ".", 400, "invalid_path"),
    ("pct-dotdot", "%2e%2e", 400, "invalid_path"),
    ("pct-slash", "a%2fb", 400, "invalid_path"),
    ("pct-nul", "%00", 400, "invalid_path"),
    ("not-hex", "z" * 64, 400, "invalid_argument"),
    ("upper-hex", "A" * 64, 400, "invalid_argument"),
    ("short", "a" * 63, 400, "invalid_argument"),
    ("long", "a" * 65, 400, "invalid_argument"),
    ("over-long", "a" * 300, 400, "invalid_argument"),
    ("space", "a%20b", 400, "invalid_path"),
]


@pytest.mark.parametrize("label,name,status,code", BAD_NAMES, ids=[b[0] for b in BAD_NAMES])
def test_bad_object_names(dev, label, name, status, code):
    before = snapshot_state(dev)
    body = b"x" * 100
    for method in ("POST", "GET", "HEAD", "DELETE"):
        r = dev.request(method, f"/data/{name}", body if method == "POST" else None)
        assert r.status == status, (method, r)
        if method != "HEAD":
            assert r.error_code() == code, (method, r)
    assert snapshot_state(dev) == before


def test_traversal_paths(dev):
    before = snapshot_state(dev)
    for path in ["/../config", "/data/../config", "/%2e%2e/config", "/data/..%2fconfig",
                 "/./data/" + sha256_hex(b"x"), "/data/%2e%2e%2f%2e%2e%2fetc%2fpasswd"]:
        r = dev.request("POST", path, b"x")
        assert r.status == 400, (path, r)
        assert r.error_code() == "invalid_path", (path, r)
    assert snapshot_state(dev) == before


def test_nul_byte_in_target(node, dev):
    before = snapshot_state(dev)
    req = (f"POST /{dev.id}/data/ab\x00cd HTTP/1.1\r\nHost: x\r\nAuthorization: {dev.basic()}\r\n"
           "Content-Length: 1\r\n\r\nx").encode()
    r = parse_raw_response(node.raw(req, timeout=10))
    assert r.status == 400
    r.error_code()
    assert snapshot_state(dev) == before


def test_unknown_type(dev):
    before = snapshot_state(dev)
    data = b"payload"
    r = dev.request("POST", f"/blobs/{sha256_hex(data)}", data)
    assert r.status == 400 and r.error_code() == "invalid_argument"
    assert "type" in r.json()["error"]["message"]
    r = dev.request("GET", "/blobs/")
    assert r.status == 400 and r.error_code() == "invalid_argument"
    r = dev.request("POST", "/config/" + sha256_hex(data), data)
    assert r.status == 400
    assert snapshot_state(dev) == before


def test_hash_mismatch(dev):
    before = snapshot_state(dev)
    data = os.urandom(1000)
    wrong = sha256_hex(data + b"!")
    r = dev.request("POST", f"/data/{wrong}", data)
    assert r.status == 400 and r.error_code() == "invalid_argument"
    assert dev.request("HEAD", f"/data/{wrong}").status == 404
    assert snapshot_state(dev) == before
    # Large enough to span several stripes: the check happens at the end, nothing is kept.
    big = os.urandom(3 * 1024 * 1024 + 17)
    r = dev.request("POST", f"/data/{sha256_hex(big[:-1])}", big)
    assert r.status == 400 and r.error_code() == "invalid_argument"
    assert snapshot_state(dev) == before


def test_content_length_smaller_than_body(node, dev):
    before = snapshot_state(dev)
    body = os.urandom(1000)
    req = (f"POST /{dev.id}/data/{sha256_hex(body)} HTTP/1.1\r\nHost: x\r\n"
           f"Authorization: {dev.basic()}\r\nContent-Length: 500\r\n\r\n").encode() + body
    r = parse_raw_response(node.raw(req, timeout=10))
    # The first 500 bytes are the body (HTTP framing); their hash does not match the name.
    assert r.status == 400 and r.error_code() == "invalid_argument"
    assert snapshot_state(dev) == before


def test_content_length_larger_than_body_times_out(node, dev):
    """A client that announces more than it sends (or stalls mid-body) is cut off after
    body_timeout_s (2 s in the tests) and nothing is stored."""
    before = snapshot_state(dev)
    body = os.urandom(1000)
    req = (f"POST /{dev.id}/data/{sha256_hex(body)} HTTP/1.1\r\nHost: x\r\n"
           f"Authorization: {dev.basic()}\r\nContent-Length: 2000\r\n\r\n").encode() + body
    t0 = time.monotonic()
    answer = node.raw(req, timeout=15)
    elapsed = time.monotonic() - t0
    assert b"HTTP/1.1 200" not in answer
    assert elapsed < 10, elapsed  # closed by the server, not by our 15 s timeout
    assert dev.request("HEAD", f"/data/{sha256_hex(body)}").status == 404
    assert snapshot_state(dev) == before


def test_client_stalls_mid_body_of_large_upload(node, dev):
    before = snapshot_state(dev)
    body = os.urandom(4 * 1024 * 1024)
    name = sha256_hex(body)
    s = node.tls_socket(timeout=15)
    try:
        s.sendall((f"POST /{dev.id}/data/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: {dev.basic()}\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode())
        s.sendall(body[: 3 * 1024 * 1024])  # then stop sending
        t0 = time.monotonic()
        answer = cv.read_all(s)
        assert time.monotonic() - t0 < 10
        assert b"HTTP/1.1 200" not in answer
    finally:
        s.close()
    assert dev.request("HEAD", f"/data/{name}").status == 404
    assert snapshot_state(dev) == before


def test_client_disconnects_mid_body(node, dev):
    before = snapshot_state(dev)
    body = os.urandom(2 * 1024 * 1024)
    name = sha256_hex(body)
    s = node.tls_socket(timeout=15)
    s.sendall((f"POST /{dev.id}/data/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: {dev.basic()}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:1024 * 1024])
    s.close()
    time.sleep(0.5)
    assert dev.request("HEAD", f"/data/{name}").status == 404
    assert snapshot_state(dev) == before


def test_missing_content_length(node, dev):
    before = snapshot_state(dev)
    body = b"hello"
    name = sha256_hex(body)
    r = parse_raw_response(node.raw(
        (f"POST /{dev.id}/data/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: {dev.basic()}\r\n"
         "Connection: close\r\n\r\n").encode(), timeout=10))
    assert r.status == 411 and r.error_code() == "length_required"
    chunked = b"5\r\nhello\r\n0\r\n\r\n"
    r = parse_raw_response(node.raw(
        (f"POST /{dev.id}/data/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: {dev.basic()}\r\n"
         "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() + chunked, timeout=10))
    assert r.status == 411 and r.error_code() == "length_required"
    assert snapshot_state(dev) == before


def test_oversized_header(node, dev):
    before = snapshot_state(dev)
    body = b"hello"
    req = (f"POST /{dev.id}/data/{sha256_hex(body)} HTTP/1.1\r\nHost: x\r\nAuthorization: {dev.basic()}\r\n"
           f"X-Big: {'a' * 20000}\r\nContent-Length: 5\r\n\r\n").encode() + body
    r = parse_raw_response(node.raw(req, timeout=10))
    assert r.status == 431 and r.error_code() == "header_too_large"
    assert snapshot_state(dev) == before


def test_too_many_headers(node, dev):
    before = snapshot_state(dev)
    body = b"hello"
    fields = "".join(f"X-F{i}: {i}\r\n" for i in range(100))
    req = (f"POST /{dev.id}/data/{sha256_hex(body)} HTTP/1.1\r\nHost: x\r\nAuthorization: {dev.basic()}\r\n"
           f"{fields}Content-Length: 5\r\n\r\n").encode() + body
    r = parse_raw_response(node.raw(req, timeout=10))
    assert r.status == 431 and r.error_code() == "too_many_headers"
    assert snapshot_state(dev) == before


@pytest.mark.parametrize("rng,status,code", [
    ("bytes=abc", 400, "invalid_range"),
    ("bytes=5-2", 400, "invalid_range"),
    ("bytes=0-1,4-5", 400, "invalid_range"),
    ("items=0-1", 400, "invalid_range"),
    ("bytes=", 400, "invalid_range"),
    ("bytes=--1", 400, "invalid_range"),
    ("bytes=1024-", 416, "range_not_satisfiable"),
    ("bytes=5000-6000", 416, "range_not_satisfiable"),
    ("bytes=-0", 416, "range_not_satisfiable"),
])
def test_bad_ranges(dev, rng, status, code):
    data = os.urandom(1024)
    name = sha256_hex(data)
    assert dev.put("data", data).status == 200
    r = dev.request("GET", f"/data/{name}", headers={"Range": rng})
    assert r.status == status, r
    assert r.error_code() == code
    if status == 416:
        assert r.header("Content-Range") == "bytes */1024"


def test_missing_and_wrong_credentials(node, dev):
    before = snapshot_state(dev)
    data = b"payload"
    path = f"/{dev.id}/data/{sha256_hex(data)}"
    r = node.request("POST", path, data)  # none
    assert r.status == 401 and r.error_code() == "unauthenticated"
    assert any(v.startswith("Basic") for v in r.headers_named("WWW-Authenticate"))
    for auth in [dev.basic(token="0" * 64), dev.basic(token=""), "Basic !!!notbase64",
                 "Bearer " + "0" * 64, "Digest foo", dev.basic(user="nobody")]:
        r = node.request("POST", path, data, {"Authorization": auth})
        assert r.status == 401, (auth, r)
        assert r.error_code() == "unauthenticated"
        assert r.headers_named("WWW-Authenticate")
    assert snapshot_state(dev) == before


def test_other_devices_credentials_get_404(node, dev):
    other = node.new_device(append_only=False)
    data = b"secret"
    assert dev.put("data", data).status == 200
    name = sha256_hex(data)
    before = snapshot_state(dev)
    # Device B's valid credentials on device A's repository: as if A did not exist...
    for method, body in [("GET", None), ("HEAD", None), ("DELETE", None), ("POST", b"other")]:
        r = node.request(method, f"/{dev.id}/data/{name}", body, other.headers())
        assert r.status == 404, (method, r)
    r = node.request("GET", f"/{dev.id}/data/", None, other.headers())
    assert r.status == 404 and r.error_code() == "not_found"
    # ...exactly like a repository that does not exist.
    r2 = node.request("GET", f"/{'0' * 32}/data/", None, other.headers())
    assert (r2.status, r2.body) == (r.status, r.body)
    # B's Bearer token on A's path: the same 404 (the token names B), and on a path that
    # exists nowhere too; only a token that is nobody's is 401.
    bearer = {"Authorization": f"Bearer {other.token}"}
    for method, body in [("GET", None), ("HEAD", None), ("DELETE", None), ("POST", b"other")]:
        r = node.request(method, f"/{dev.id}/data/{name}", body, bearer)
        assert r.status == 404, (method, r)
    r = node.request("GET", f"/{dev.id}/data/", None, bearer)
    assert (r.status, r.body) == (r2.status, r2.body)
    r3 = node.request("GET", f"/{'0' * 32}/data/", None, bearer)
    assert (r3.status, r3.body) == (r2.status, r2.body)
    r = node.request("GET", f"/{dev.id}/data/", None, {"Authorization": f"Bearer {other.token}x"})
    assert r.status == 401
    # And B's Bearer token still opens B.
    r = node.request("GET", f"/{other.id}/data/", None, bearer)
    assert r.status == 200
    assert snapshot_state(dev) == before


def test_method_not_allowed(dev):
    r = dev.request("PUT", f"/data/{sha256_hex(b'x')}", b"x")
    assert r.status == 405 and r.error_code() == "method_not_allowed"
    assert r.header("Allow")


def test_oversized_json_body(dev):
    r = dev.request("POST", "/v1/exists", b"[" + b" " * (2 << 20) + b"]")
    assert r.status == 413 and r.error_code() == "too_large"


def test_tls_1_0_and_1_1_refused(node):
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(node.ca)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = version
            ctx.maximum_version = version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the client offer what the server must refuse
        raw = socket.create_connection(node.agent_addr, timeout=10)
        try:
            with pytest.raises(ssl.SSLError) as e:
                ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()
            # Refused by the server (its protocol_version alert), not by our own client.
            assert "PROTOCOL_VERSION" in str(e.value), e.value
        finally:
            raw.close()


def test_tls_1_2_and_1_3_accepted_with_aead(node):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = node.ssl_context()
        ctx.minimum_version = ctx.maximum_version = version
        raw = socket.create_connection(node.agent_addr, timeout=10)
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            assert s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
            cipher = s.cipher()[0]
            assert "GCM" in cipher or "CHACHA20" in cipher, cipher
    # A CBC-only TLS 1.2 client finds no common cipher.
    ctx = node.ssl_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:AES128-SHA")
    raw = socket.create_connection(node.agent_addr, timeout=10)
    try:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()
    finally:
        raw.close()


def test_plaintext_http_on_tls_port(node):
    s = socket.create_connection(node.agent_addr, timeout=10)
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        t0 = time.monotonic()
        data = cv.read_all(s)
        assert time.monotonic() - t0 < 8  # closed by the server, not by our timeout
    finally:
        s.close()
    assert b"HTTP/" not in data and b"ok" not in data
    # The node is unaffected.
    assert node.request("GET", "/healthz").status == 200


def test_unknown_route_and_root(node):
    r = node.request("GET", "/")
    assert r.status == 404 and r.error_code() == "not_found"
