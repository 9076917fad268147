"""An account's life as the partner portal drives it, with a real restic as the agent:
trial -> (the trial ends by itself) expired -> active (upgrade) -> expired (uploads 403, restic
restore still works) -> renewed -> suspended (agents 403) -> active."""

import os

import cv
from cv import sha256_hex
from test_restic import Restic, make_tree, tree_digest

DAY = 86400


def refused(r, code, status):
    assert r.status == 403, r
    assert r.error_code() == code, r
    assert r.json()["error"]["status"] == status, r


def test_account_lifecycle(clock_node, workdir):
    n = clock_node
    pid, key = n.new_partner("lifecycle")

    def account(**change):
        if change:
            r = n.admin("PATCH", f"/accounts/{acct}", change, key=key)
        else:
            r = n.admin("GET", f"/accounts/{acct}", key=key)
        assert r.status == 200, r
        return r.json()

    r = n.admin("POST", "/accounts", {"status": "trial", "trial_days": 14,
                                      "plan_quota_bytes": 200 << 20, "device_limit": 2}, key=key)
    assert r.status == 201, r
    acct = r.json()["id"]
    assert r.json()["status"] == "trial" and r.json()["partner"] == pid
    dev = n.new_device(append_only=True, account=acct, key=key)
    src = os.path.join(workdir, "src")
    make_tree(src, 3, seed=3)
    restic = Restic(dev, workdir)
    restic.run("init")
    restic.backup(src)

    def restore_matches(name):
        target = os.path.join(workdir, name)
        restic.run("restore", "latest", "--target", target)
        assert tree_digest(os.path.join(target, src.lstrip("/"))) == tree_digest(src)

    # The trial ends by itself: read-only.
    n.advance(15 * DAY)
    a = account()
    assert a["status"] == "expired" and a["stored_status"] == "trial"
    refused(dev.put("data", b"after the trial"), "account_expired", "expired")
    assert acct in [x["id"] for x in n.admin("GET", "/accounts?status=expired", key=key).json()["items"]]
    restore_matches("restore-trial-over")

    # Upgrade to a paid plan.
    a = account(status="active", expires_at=cv.rfc3339(n.now_ns() + 30 * DAY * 10**9))
    assert a["status"] == "active"
    with open(os.path.join(src, "paid.bin"), "wb") as f:
        f.write(os.urandom(300_000))
    restic.backup(src)
    assert len(restic.snapshots()) == 2

    # The subscription lapses: uploads and deletes are refused, naming the status; reads,
    # listings, restores and restic's own locks keep working.
    assert account(status="expired")["status"] == "expired"
    data = os.urandom(1000)
    r = dev.put("data", data)
    refused(r, "account_expired", "expired")
    assert "expired" in r.json()["error"]["message"]
    assert dev.request("HEAD", f"/data/{sha256_hex(data)}").status == 404
    snap = dev.listing("snapshots")[0]["name"]
    refused(dev.request("DELETE", f"/snapshots/{snap}"), "account_expired", "expired")
    lock = os.urandom(200)
    assert dev.put("locks", lock).status == 200
    assert dev.request("DELETE", f"/locks/{sha256_hex(lock)}").status == 200
    assert dev.request("HEAD", "/config").status == 200
    assert dev.usage()["status"] == "expired"
    restore_matches("restore-expired")
    restic.run("check")

    # Renewed.
    assert account(status="active", expires_at=cv.rfc3339(n.now_ns() + 365 * DAY * 10**9))["status"] == "active"
    with open(os.path.join(src, "renewed.bin"), "wb") as f:
        f.write(os.urandom(200_000))
    restic.backup(src)

    # Suspended: agents get 403 for everything, even reads and locks.
    assert account(status="suspended")["status"] == "suspended"
    for method, path, body in [("GET", "/config", None), ("HEAD", "/config", None),
                               ("GET", "/snapshots/", None), ("GET", "/v1/usage", None),
                               ("POST", f"/locks/{sha256_hex(lock)}", lock),
                               ("DELETE", f"/locks/{sha256_hex(lock)}", None),
                               ("POST", "/?create=true", None)]:
        r = dev.request(method, path, body)
        assert r.status == 403, (method, path, r)
        if method != "HEAD":
            refused(r, "account_suspended", "suspended")

    # Active again: everything is there.
    assert account(status="active")["status"] == "active"
    assert len(restic.snapshots()) == 3
    restore_matches("restore-active")
    actions = [x["action"] for x in n.admin("GET", f"/audit?account={acct}", key=key).json()["items"]]
    assert actions.count("account.update") == 5
