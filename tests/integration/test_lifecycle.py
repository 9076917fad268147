"""Process behaviour: endpoints.json, graceful drain on SIGTERM, the connection limit,
slowing down credential guessing, the admin API's validation."""

import json
import os
import signal
import socket
import ssl
import threading
import time

import cv
from cv import sha256_hex


def test_endpoints_json(node):
    ep = node.endpoints
    assert set(ep) >= {"agent", "admin", "ca", "admin_key_file"}
    assert ep["agent"].startswith("https://127.0.0.1:") and ep["admin"].startswith("https://127.0.0.1:")
    assert ep["agent"] != ep["admin"]
    assert os.path.isfile(ep["ca"])
    assert os.stat(ep["admin_key_file"]).st_mode & 0o777 == 0o600
    # The agent and admin listeners are separate: the admin API is not on the agent port.
    r = node.request("POST", "/admin/v1/accounts", "{}", {"Authorization": f"Bearer {node.admin_key}"})
    assert r.status in (401, 404)
    # Operators can also probe and scrape on the (private) admin listener.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert node.request("GET", path, which="admin").status == 200, path


def refused(node, which="agent"):
    """True when a new connection to the listener is refused or closed before it is served."""
    try:
        node.request("GET", "/healthz", which=which, timeout=3)
        return False
    except (ConnectionError, ssl.SSLError, socket.timeout, OSError):
        return True


def test_sigterm_drains_running_upload(fresh_node):
    node = fresh_node()
    dev = node.new_device(append_only=False)
    body = os.urandom(3 * 1024 * 1024)
    name = sha256_hex(body)
    idle = node.tls_socket(timeout=10)  # an idle keep-alive connection
    s = node.tls_socket(timeout=20)
    # The 100 Continue says the node has read the header and is reading the body: the upload
    # is running when SIGTERM comes.
    s.sendall((f"POST /{dev.id}/data/{name} HTTP/1.1\r\nHost: x\r\nAuthorization: {dev.basic()}\r\n"
               f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode())
    interim = b""
    while b"\r\n\r\n" not in interim:
        chunk = s.recv(4096)
        assert chunk, interim
        interim += chunk
    assert interim.startswith(b"HTTP/1.1 100"), interim
    s.sendall(body[:1024 * 1024])
    node.signal(signal.SIGTERM)
    # The idle connection is closed at once (read_all waits for that, up to its timeout)...
    assert cv.read_all(idle) == b""
    idle.close()
    # ...no new connections are accepted (each worker closes its listeners when it learns of
    # the signal)...
    cv.wait_for(lambda: refused(node), timeout=10, what="the listeners to close")
    # ...and the running upload finishes, answered with Connection: close.
    s.sendall(body[1024 * 1024:])
    answer = cv.read_all(s)
    s.close()
    r = cv.parse_raw_response(answer)
    assert r.status == 200, answer[:300]
    assert r.header("connection") == "close"
    assert node.proc.wait(timeout=15) == 0
    # The object survived: start the node again on the same root and read it.
    node.start()
    r = node.request("GET", f"/{dev.id}/data/{name}", None, dev.headers())
    assert r.status == 200 and r.body == body


def test_connection_limit(fresh_node):
    """At max_connections a new agent connection is closed at once and counted, once; when
    connections close, new ones are served again. The admin listener counts apart
    (max_admin_connections): agents at the limit do not lock the operators out, and the admin
    listener's own limit holds."""
    node = fresh_node("[server]\nmax_connections = 3\nmax_admin_connections = 2\n")
    # The metrics are read over one keep-alive admin connection, one of the admin listener's
    # two: a new connection for each reading would itself count.
    scraper = node.connect("admin")

    def metric(name):
        r = node.request("GET", "/metrics", which="admin", conn=scraper)
        assert r.status == 200, r
        return cv.metric_value(r.body.decode(), name)

    def held_connections(which, n):
        # The node counts a connection when it accepts it, before the TLS handshake, so once
        # tls_socket returns (the handshake needed the node's answer) it is counted. One
        # request on each makes sure the node has finished its side of the handshake too: at
        # the limit, a new connection evicts the oldest one still in its handshake, and is
        # refused only when there is none.
        held = [node.tls_socket(which, timeout=10) for _ in range(n)]
        for s in held:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200"), "a held connection was not served"
        return held

    try:
        assert metric("chunkvault_open_connections") == 1
        held = held_connections("agent", 3)
        try:
            assert metric("chunkvault_open_connections") == 4
            assert refused(node)
            assert metric("chunkvault_rejected_connections_total") == 1
            # The agents' limit is theirs: a new admin connection is served.
            assert node.request("GET", "/healthz", which="admin").status == 200
        finally:
            for s in held:
                s.close()
        cv.wait_for(lambda: metric("chunkvault_open_connections") == 1, timeout=10,
                    what="the node to close the held connections")
        assert node.request("GET", "/healthz").status == 200
        assert metric("chunkvault_rejected_connections_total") == 1
        # The admin listener's own limit: the scraper and one more.
        held = held_connections("admin", 1)
        try:
            assert refused(node, "admin")
            assert metric("chunkvault_rejected_connections_total") == 2
            assert node.request("GET", "/healthz").status == 200  # agents are not affected
        finally:
            for s in held:
                s.close()
    finally:
        scraper.close()


def test_repeated_auth_failures_are_slowed_down(fresh_node):
    node = fresh_node("[auth]\nfree_failures = 2\nfailure_delay_ms = 500\nmax_failure_delay_ms = 1000\n")
    dev = node.new_device()
    bad = {"Authorization": dev.basic(token="f" * 64)}
    times = []
    for _ in range(5):
        t0 = time.monotonic()
        r = node.request("GET", f"/{dev.id}/keys/", None, bad)
        times.append(time.monotonic() - t0)
        assert r.status == 401
    assert times[0] < 0.45 and times[1] < 0.45, times  # the free failures
    assert times[2] >= 0.48 and times[3] >= 0.98 and times[4] >= 0.98, times  # 500 ms, doubling
    assert times[4] < 3, times  # capped at 1 s
    # Valid credentials are not delayed.
    t0 = time.monotonic()
    assert dev.request("GET", "/keys/").status == 200
    assert time.monotonic() - t0 < 0.45


def test_admin_api_validation(node):
    acct = node.new_account()
    assert len(acct) == 32
    path = f"/accounts/{acct}/devices"
    cases = [
        ({"name": "x", "colour": "red"}, "unknown_field", "colour"),
        ({"name": 5}, "invalid_field", "name"),
        ({"name": "x", "append_only": "yes"}, "invalid_field", "append_only"),
        ({"name": "x", "kind": "phone"}, "invalid_field", "kind"),
        ({"kind": "server"}, "missing_field", "name"),
        ({"name": ""}, "invalid_field", "name"),
    ]
    for body, code, field in cases:
        r = node.admin("POST", path, body)
        assert r.status == 400, (body, r)
        assert r.error_code() == code and r.json()["error"]["field"] == field, (body, r)
    for raw in ["not json", "[1]", '{"name": "x",}']:
        r = node.admin("POST", path, raw_body=raw)
        assert r.status == 400 and r.error_code() == "invalid_json", (raw, r)
    # Missing and wrong keys.
    r = node.admin("POST", path, {"name": "x"}, key="")
    assert r.status == 401 and r.headers_named("WWW-Authenticate")
    r = node.admin("POST", path, {"name": "x"}, key="0" * 64)
    assert r.status == 401 and r.error_code() == "unauthenticated"
    # A device: defaults, GET, PATCH (strict too), foreign account -> 404.
    r = node.admin("POST", path, {"name": "srv", "kind": "server"})
    assert r.status == 201
    d = r.json()
    assert len(d["id"]) == 32 and len(d["token"]) == 64 and d["append_only"] is True and d["kind"] == "server"
    r = node.admin("GET", f"{path}/{d['id']}")
    assert r.status == 200 and "token" not in r.json() and r.json()["name"] == "srv"
    r = node.admin("PATCH", f"{path}/{d['id']}", {"append_only": "false"})
    assert r.status == 400 and r.json()["error"]["field"] == "append_only"
    r = node.admin("PATCH", f"{path}/{d['id']}", {"append_only": False, "name": "srv2"})
    assert r.status == 200 and r.json()["append_only"] is False and r.json()["name"] == "srv2"
    other = node.new_account()
    assert node.admin("GET", f"/accounts/{other}/devices/{d['id']}").status == 404
    assert node.admin("GET", f"/accounts/{acct}/devices/{'0' * 32}").status == 404
    assert node.admin("GET", "/nothing").status == 404


def test_bad_config_is_refused_at_start(tmp_root):
    root = os.path.join(tmp_root, "badconfig")
    os.makedirs(root)
    cfg = os.path.join(root, "bad.toml")
    with open(cfg, "w") as f:
        f.write('bogus = 1\n[server]\nthreads = "2"\n[tls]\nwatch_interval_s = -1\n')
    p = __import__("subprocess").run([cv.BINARY, "--config", cfg, "--root", root, "--listen", "127.0.0.1:0",
                                      "--admin-listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    for needle in ["unknown key 'bogus'", "'server.threads' must be an integer", "'tls.watch_interval_s'"]:
        assert needle in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(root, "run", "endpoints.json"))


def test_documented_config_file_loads(tmp_root):
    """deploy/chunkvaultd.toml (every key, at its default) is a valid configuration."""
    example = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "chunkvaultd.toml")
    n = cv.Node(os.path.join(tmp_root, "documented"))
    n.config_file = example
    n.start()
    try:
        assert n.request("GET", "/readyz").status == 200
    finally:
        assert n.stop() == 0
