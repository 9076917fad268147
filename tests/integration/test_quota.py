"""Hard quotas in the upload path of a real node: reservations before the body, 507 with the
numbers, concurrent uploads racing for the last bytes, add-ons that expire (with a real restic
restoring afterwards), usage recomputation (GET /admin/v1/fsck) after a mixed workload with
failed and interrupted uploads, and reservations left by a crash."""

import os
import signal
import socket
import ssl
import threading
import time

import cv
from cv import parse_raw_response, sha256_hex
from test_restic import Restic, make_tree, tree_digest

KIB = 1024
MIB = 1024 * 1024
DAY = 86400


def quota_error(r):
    """The 507 body: the issue's fields, all numbers."""
    assert r.status == 507, r
    assert r.error_code() == "quota_exceeded", r
    err = r.json()["error"]
    for k in ("quota_bytes", "used_bytes", "reserved_bytes"):
        assert isinstance(err[k], int) and err[k] >= 0, err
    return err


def wait_unreserved(node, account, timeout=15):
    """Reservations of uploads whose clients went away are released when the node notices."""
    deadline = time.monotonic() + timeout
    while True:
        u = node.account_usage(account)
        if u["reserved_bytes"] == 0 or time.monotonic() > deadline:
            return u
        time.sleep(0.1)


def test_quota_race_for_the_last_bytes(clock_node):
    n = clock_node
    size = 256 * KIB
    acct = n.new_account(plan_quota_bytes=10 * size + size // 2)
    dev = n.new_device(append_only=False, account=acct)
    bodies = [os.urandom(size) for _ in range(32)]
    results = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies))

    def upload(i):
        conn = n.connect()
        try:
            barrier.wait(timeout=30)
            results[i] = n.request("POST", f"/{dev.id}/data/{sha256_hex(bodies[i])}", bodies[i],
                                   dev.headers(), conn=conn)
        finally:
            conn.close()

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in results), results
    accepted = [i for i, r in enumerate(results) if r.status == 200]
    refused = [i for i, r in enumerate(results) if r.status != 200]
    for i in refused:
        quota_error(results[i])
    assert 1 <= len(accepted) <= 10, [r.status for r in results]
    u = n.account_usage(acct)
    assert u["used_bytes"] == len(accepted) * size <= u["quota_bytes"] == 10 * size + size // 2
    assert u["reserved_bytes"] == 0
    for i in accepted:
        assert dev.request("GET", f"/data/{sha256_hex(bodies[i])}").body == bodies[i]
    for i in refused:
        assert dev.request("HEAD", f"/data/{sha256_hex(bodies[i])}").status == 404
    # Exactly the rest still fits; one byte more does not.
    rest = u["quota_bytes"] - u["used_bytes"]
    last = os.urandom(rest)
    assert dev.put("data", last).status == 200
    err = quota_error(dev.put("data", b"x"))
    assert err["used_bytes"] == err["quota_bytes"] == u["quota_bytes"] and err["reserved_bytes"] == 0
    # A re-upload of an object that is there costs nothing; a delete frees its bytes at once.
    assert dev.put("data", last).status == 200
    assert dev.request("DELETE", f"/data/{sha256_hex(last)}").status == 200
    assert dev.put("data", b"x").status == 200
    assert n.account_usage(acct)["used_bytes"] == len(accepted) * size + 1


def test_refusal_before_the_body_keeps_the_connection(clock_node):
    n = clock_node
    acct = n.new_account(plan_quota_bytes=1000)
    dev = n.new_device(account=acct)
    big = os.urandom(100 * KIB)
    conn = n.connect()
    try:
        r = n.request("POST", f"/{dev.id}/data/{sha256_hex(big)}", big, dev.headers(), conn=conn)
        err = quota_error(r)
        assert err["quota_bytes"] == 1000 and err["used_bytes"] == 0
        # The same connection goes on.
        small = os.urandom(500)
        assert n.request("POST", f"/{dev.id}/data/{sha256_hex(small)}", small, dev.headers(), conn=conn).status == 200
        assert n.request("GET", f"/{dev.id}/data/{sha256_hex(small)}", None, dev.headers(), conn=conn).body == small
    finally:
        conn.close()
    # With Expect: 100-continue the refusal comes at once, and no body is asked for.
    s = n.tls_socket(timeout=10)
    try:
        s.sendall((f"POST /{dev.id}/data/{sha256_hex(big)} HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: {dev.basic()}\r\nContent-Length: {len(big)}\r\n"
                   "Expect: 100-continue\r\n\r\n").encode())
        s.settimeout(5)
        r = parse_raw_response(cv.read_all(s))
        quota_error(r)
    finally:
        s.close()
    assert n.account_usage(acct)["used_bytes"] == 500


def test_locks_past_the_quota_are_bounded(clock_node):
    """Small locks pass a full quota (restic locks to restore), but only a few per device."""
    n = clock_node
    acct = n.new_account(plan_quota_bytes=100)
    dev = n.new_device(account=acct)
    quota_error(dev.put("data", os.urandom(101)))
    for i in range(32):
        assert dev.put("locks", b"lock %d" % i).status == 200, i
    quota_error(dev.put("locks", b"one lock too many"))
    assert dev.request("DELETE", f"/locks/{sha256_hex(b'lock 0')}").status == 200
    assert dev.put("locks", b"one lock too many").status == 200


def test_expired_addon_stops_uploads_but_not_restores(clock_node, workdir):
    n = clock_node
    acct = n.new_account(plan_quota_bytes=1 * MIB)
    dev = n.new_device(append_only=False, account=acct)
    expires = n.now_ns() + DAY * 10**9
    r = n.admin("POST", f"/accounts/{acct}/addons", {"bytes": 40 * MIB, "expires_at": cv.rfc3339(expires)})
    assert r.status == 201 and r.json()["live"] is True, r
    src = os.path.join(workdir, "src")
    make_tree(src, 6, seed=6)
    restic = Restic(dev, workdir)
    restic.run("init")
    restic.backup(src)
    u = n.account_usage(acct)
    assert u["used_bytes"] > 5 * MIB and u["quota_bytes"] == 41 * MIB and u["addons"][0]["live"]

    n.advance(2 * DAY)  # the add-on expires; nothing stored goes away
    u = n.account_usage(acct)
    assert u["quota_bytes"] == 1 * MIB and u["addons"][0]["live"] is False
    assert u["used_bytes"] > u["quota_bytes"]
    err = quota_error(dev.put("data", os.urandom(100)))
    assert err["used_bytes"] == u["used_bytes"] and err["quota_bytes"] == 1 * MIB
    # (No refused restic backup here: restic retries a failed upload for about a minute.)
    # Restores still work (restic's lock is the one small upload let through).
    target = os.path.join(workdir, "restore")
    restic.run("restore", "latest", "--target", target)
    assert tree_digest(os.path.join(target, src.lstrip("/"))) == tree_digest(src)
    assert dev.usage()["quota_bytes"] == 1 * MIB
    # A new add-on lets uploads in again.
    assert n.admin("POST", f"/accounts/{acct}/addons", {"bytes": 40 * MIB}).status == 201
    assert dev.put("data", os.urandom(100)).status == 200
    assert wait_unreserved(n, acct)["reserved_bytes"] == 0


def test_usage_recomputation_after_mixed_workload(clock_node):
    n = clock_node
    acct = n.new_account(plan_quota_bytes=3 * MIB)
    d1 = n.new_device(append_only=False, account=acct, name="one")
    d2 = n.new_device(append_only=False, account=acct, name="two")
    kept = []
    for i in range(20):
        dev = (d1, d2)[i % 2]
        body = os.urandom(1000 * (i + 1))
        assert dev.put("data", body).status == 200
        kept.append((dev, body))
    assert d1.request("POST", "/config", b"config one").status == 200
    # Deletes, re-uploads, conflicts, wrong hashes, 507s.
    for dev, body in kept[:5]:
        assert dev.request("DELETE", f"/data/{sha256_hex(body)}").status == 200
    assert d2.put("data", kept[7][1]).status == 200
    assert d1.request("POST", "/config", b"another config").status == 409
    assert d1.put("data", os.urandom(5000), name=sha256_hex(b"something else")).status == 400
    quota_error(d1.put("data", os.urandom(4 * MIB)))
    # Interrupted uploads: the client goes away mid-body, or stops sending (body timeout).
    for dev, stop in ((d1, "close"), (d2, "stall")):
        body = os.urandom(300 * KIB)
        s = n.tls_socket(timeout=10)
        s.sendall((f"POST /{dev.id}/data/{sha256_hex(body)} HTTP/1.1\r\nHost: x\r\n"
                   f"Authorization: {dev.basic()}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
                  + body[:100 * KIB])
        if stop == "stall":
            time.sleep(3)  # past body_timeout_s = 2
        s.close()
    u = wait_unreserved(n, acct)
    assert u["reserved_bytes"] == 0, u
    report = n.fsck()
    assert report["clean"] is True and report["problems"] == [], report
    listed = sum(x["size"] for d in (d1, d2) for t in ("data",) for x in d.listing(t))
    assert u["used_bytes"] == listed + len(b"config one")
    assert u["used_bytes"] == sum(d["bytes"] for d in u["devices"])
    assert u["objects"] == sum(d["objects"] for d in u["devices"]) == 16


def test_crash_leaves_no_reservation_behind(fresh_node):
    n = fresh_node()
    acct = n.new_account(plan_quota_bytes=2 * MIB)
    dev = n.new_device(account=acct)
    body = os.urandom(MIB)
    s = n.tls_socket(timeout=10)
    s.sendall((f"POST /{dev.id}/data/{sha256_hex(body)} HTTP/1.1\r\nHost: x\r\n"
               f"Authorization: {dev.basic()}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
              + body[:200 * KIB])
    deadline = time.monotonic() + 10
    while n.account_usage(acct)["reserved_bytes"] != MIB:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    n.proc.send_signal(signal.SIGKILL)
    n.proc.wait(timeout=10)
    try:
        s.close()
    except (OSError, ssl.SSLError, socket.error):
        pass
    n.start()
    u = n.account_usage(acct)
    assert u["reserved_bytes"] == 0 and u["used_bytes"] == 0
    assert dev.put("data", os.urandom(2 * MIB)).status == 200  # the whole quota is usable again
    assert n.fsck()["clean"]
