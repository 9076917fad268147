"""The partner-scoped admin API against a real node: partner isolation on every route, release,
strict validation (each refusal leaves the node unchanged), admin key expiry and revocation,
the device limit, token rotation, the stale-devices report and the audit log. The node's clock
is a file the tests move (clock_node)."""

import json
import os

import pytest

import cv
from cv import sha256_hex

NO_SUCH_ACCOUNT = "0" * 31 + "1"
DAY = 86400


def ids(page):
    return [x["id"] for x in page["items"]]


class World:
    """Partner A with an account, a device holding data and an add-on; partner B with one
    account of its own."""

    def __init__(self, node):
        self.node = node
        self.a_id, self.a_key = node.new_partner("A")
        self.b_id, self.b_key = node.new_partner("B")
        self.acct = node.new_account(key=self.a_key, plan_quota_bytes=10 << 20, device_limit=3)
        self.dev = node.new_device(append_only=False, account=self.acct, key=self.a_key)
        assert self.dev.put("data", b"partner A's data").status == 200
        r = node.admin("POST", f"/accounts/{self.acct}/addons", {"bytes": 1 << 20}, key=self.a_key)
        assert r.status == 201, r
        self.addon = r.json()["id"]
        self.b_acct = node.new_account(key=self.b_key)

    def state(self):
        """Everything the operator can see about A's account (audit included)."""
        n = self.node
        out = {}
        for path in (f"/accounts/{self.acct}", f"/accounts/{self.acct}/addons",
                     f"/accounts/{self.acct}/devices", f"/accounts/{self.acct}/devices/{self.dev.id}",
                     f"/accounts/{self.acct}/usage", f"/audit?account={self.acct}",
                     f"/accounts?partner={self.a_id}", f"/accounts?partner={self.b_id}"):
            r = n.admin("GET", path)
            assert r.status == 200, (path, r)
            out[path] = r.json()
        return out


@pytest.fixture(scope="module")
def world(clock_node):
    return World(clock_node)


def test_partner_isolation_matrix(clock_node, world):
    n, w = clock_node, world
    a, d, x = w.acct, w.dev.id, w.addon
    before = w.state()
    # Every route that names an account, with valid bodies, on A's account and on one that does
    # not exist: B gets the same 404 for both.
    routes = [
        ("GET", "/accounts/{a}", None),
        ("PATCH", "/accounts/{a}", {"status": "suspended"}),
        ("POST", "/accounts/{a}/release", None),
        ("POST", "/accounts/{a}/addons", {"bytes": 1 << 30}),
        ("GET", "/accounts/{a}/addons", None),
        ("DELETE", "/accounts/{a}/addons/{x}", None),
        ("GET", "/accounts/{a}/usage", None),
        ("POST", "/accounts/{a}/devices", {"name": "intruder"}),
        ("GET", "/accounts/{a}/devices", None),
        ("GET", "/accounts/{a}/devices/{d}", None),
        ("PATCH", "/accounts/{a}/devices/{d}", {"append_only": True}),
        ("POST", "/accounts/{a}/devices/{d}/token", None),
        ("GET", "/audit?account={a}", None),
    ]
    for method, tmpl, body in routes:
        r = n.admin(method, tmpl.format(a=a, d=d, x=x), body, key=w.b_key)
        ref = n.admin(method, tmpl.format(a=NO_SUCH_ACCOUNT, d=d, x=x), body, key=w.b_key)
        assert r.status == 404 and r.error_code() == "not_found", (method, tmpl, r)
        assert (r.status, r.body) == (ref.status, ref.body), (method, tmpl, r, ref)
    # A's device and add-on seen through B's own account: not B's either.
    for method, path, body in [("GET", f"/accounts/{w.b_acct}/devices/{d}", None),
                               ("PATCH", f"/accounts/{w.b_acct}/devices/{d}", {"name": "x"}),
                               ("POST", f"/accounts/{w.b_acct}/devices/{d}/token", None),
                               ("DELETE", f"/accounts/{w.b_acct}/addons/{x}", None)]:
        r = n.admin(method, path, body, key=w.b_key)
        assert r.status == 404 and r.error_code() == "not_found", (method, path, r)
    # Listings: nothing of A's.
    assert a not in ids(n.admin("GET", "/accounts", key=w.b_key).json())
    assert ids(n.admin("GET", f"/accounts?partner={w.a_id}", key=w.b_key).json()) == []
    assert d not in ids(n.admin("GET", "/devices", key=w.b_key).json())
    assert ids(n.admin("GET", f"/devices?partner={w.a_id}", key=w.b_key).json()) == []
    assert all(r["account"] != a for r in n.admin("GET", "/audit", key=w.b_key).json()["items"])
    assert n.admin("GET", f"/audit?partner={w.a_id}", key=w.b_key).json()["items"] == []
    # B cannot create an account under A.
    r = n.admin("POST", "/accounts", {"partner": w.a_id, "status": "active", "plan_quota_bytes": 1,
                                      "device_limit": 1}, key=w.b_key)
    assert r.status == 400 and r.json()["error"]["field"] == "partner", r
    # Operator-only routes.
    for method, path, body in [("POST", "/partners", {"name": "C"}), ("GET", "/partners", None),
                               ("GET", f"/partners/{w.a_id}", None),
                               ("POST", f"/partners/{w.b_id}/keys", {}),
                               ("GET", "/fsck", None)]:
        r = n.admin(method, path, body, key=w.b_key)
        assert r.status == 403 and r.error_code() == "operator_only", (method, path, r)
    # Nothing changed; A's device still works with its token.
    assert w.state() == before
    assert w.dev.request("GET", "/data/").status == 200
    # The partner sees its own account, and the operator everything.
    assert a in ids(n.admin("GET", "/accounts", key=w.a_key).json())
    assert {a, w.b_acct} <= set(ids(n.admin("GET", "/accounts?limit=1000").json()))


def test_released_account_leaves_the_partners_view(clock_node):
    n = clock_node
    pid, key = n.new_partner("releasing")
    acct = n.new_account(key=key)
    dev = n.new_device(append_only=False, account=acct, key=key)
    data = os.urandom(1000)
    assert dev.put("data", data).status == 200
    r = n.admin("POST", f"/accounts/{acct}/release", {}, key=key)
    assert r.status == 200 and r.json()["partner"] is None, r
    # Gone from the partner's view, exactly like an account that never existed...
    for method, tmpl in [("GET", "/accounts/{a}"), ("GET", "/accounts/{a}/usage"),
                         ("GET", "/accounts/{a}/devices"), ("POST", "/accounts/{a}/release"),
                         ("GET", "/audit?account={a}")]:
        r = n.admin(method, tmpl.format(a=acct), key=key)
        ref = n.admin(method, tmpl.format(a=NO_SUCH_ACCOUNT), key=key)
        assert r.status == 404 and (r.status, r.body) == (ref.status, ref.body), (tmpl, r)
    assert acct not in ids(n.admin("GET", "/accounts", key=key).json())
    assert dev.id not in ids(n.admin("GET", "/devices", key=key).json())
    # ...its data intact and its device still working; the operator still manages it.
    assert dev.request("GET", f"/data/{sha256_hex(data)}").body == data
    assert dev.put("data", b"after release").status == 200
    r = n.admin("GET", f"/accounts/{acct}")
    assert r.status == 200 and r.json()["partner"] is None and r.json()["objects"] == 2
    assert acct not in ids(n.admin("GET", f"/accounts?partner={pid}").json())
    r = n.admin("POST", f"/accounts/{acct}/release", {})
    assert r.status == 409 and r.error_code() == "already_released"
    # The partner's audit view keeps the release (its own action) and nothing after it.
    mine = [r for r in n.admin("GET", "/audit", key=key).json()["items"] if r["account"] == acct]
    assert [r["action"] for r in mine][-1] == "account.release"


def admin_state(node, acct):
    """What a refused admin request must not change."""
    out = {}
    for path in (f"/accounts/{acct}", f"/accounts/{acct}/addons", f"/accounts/{acct}/devices",
                 f"/audit?account={acct}", "/partners?limit=1000", "/accounts?limit=1000"):
        r = node.admin("GET", path)
        assert r.status == 200, (path, r)
        out[path] = r.json()
    return out


def test_admin_negative(clock_node):
    n = clock_node
    acct = n.new_account(plan_quota_bytes=1000, device_limit=5)
    dev = n.new_device(account=acct)
    a = f"/accounts/{acct}"
    future = cv.rfc3339(n.now_ns() + 30 * DAY * 10**9)
    new_account = {"status": "active", "plan_quota_bytes": 1, "device_limit": 1}
    cases = [
        # (method, path, body (dict or raw str), status, code, field)
        ("POST", "/accounts", "not json", 400, "invalid_json", None),
        ("POST", "/accounts", "[1,2]", 400, "invalid_json", None),
        ("POST", "/accounts", '{"status":"active",}', 400, "invalid_json", None),
        ("POST", "/accounts", {"status": "active", "device_limit": 1}, 400, "missing_field", "plan_quota_bytes"),
        ("POST", "/accounts", {"status": "active", "plan_quota_bytes": 1}, 400, "missing_field", "device_limit"),
        ("POST", "/accounts", {"plan_quota_bytes": 1, "device_limit": 1}, 400, "missing_field", "status"),
        ("POST", "/accounts", dict(new_account, colour="red"), 400, "unknown_field", "colour"),
        ("POST", "/accounts", dict(new_account, plan_quota_bytes="1"), 400, "invalid_field", "plan_quota_bytes"),
        ("POST", "/accounts", dict(new_account, plan_quota_bytes=-1), 400, "invalid_field", "plan_quota_bytes"),
        ("POST", "/accounts", dict(new_account, plan_quota_bytes=1.5), 400, "invalid_field", "plan_quota_bytes"),
        ("POST", "/accounts", dict(new_account, plan_quota_bytes=(1 << 60) + 1), 400, "invalid_field", "plan_quota_bytes"),
        ("POST", "/accounts", dict(new_account, plan_quota_bytes=1 << 64), 400, "invalid_field", "plan_quota_bytes"),
        ("POST", "/accounts", dict(new_account, device_limit=True), 400, "invalid_field", "device_limit"),
        ("POST", "/accounts", dict(new_account, device_limit=10**6), 400, "invalid_field", "device_limit"),
        ("POST", "/accounts", dict(new_account, status="expired"), 400, "invalid_field", "status"),
        ("POST", "/accounts", dict(new_account, status=1), 400, "invalid_field", "status"),
        ("POST", "/accounts", dict(new_account, status="trial"), 400, "missing_field", "expires_at"),
        ("POST", "/accounts", dict(new_account, expires_at="2030-02-30T00:00:00Z"), 400, "invalid_field", "expires_at"),
        ("POST", "/accounts", dict(new_account, expires_at="2030-01-01T00:00:00+02:00"), 400, "invalid_field", "expires_at"),
        ("POST", "/accounts", dict(new_account, expires_at="2030-01-01"), 400, "invalid_field", "expires_at"),
        ("POST", "/accounts", dict(new_account, expires_at=1893456000), 400, "invalid_field", "expires_at"),
        ("POST", "/accounts", dict(new_account, expires_at="2001-01-01T00:00:00Z"), 400, "invalid_field", "expires_at"),
        ("POST", "/accounts", dict(new_account, status="trial", trial_days=0), 400, "invalid_field", "trial_days"),
        ("POST", "/accounts", dict(new_account, status="trial", trial_days=14, expires_at=future), 400, "invalid_field", "trial_days"),
        ("POST", "/accounts", dict(new_account, trial_days=14), 400, "invalid_field", "trial_days"),
        ("POST", "/accounts", dict(new_account, partner="xyz"), 400, "invalid_field", "partner"),
        ("POST", "/accounts", dict(new_account, partner="0" * 32), 400, "invalid_field", "partner"),
        ("POST", "/accounts", '{"status":"active","plan_quota_bytes":1,"device_limit":1,"device_limit":9}', 400, "duplicate_field", "device_limit"),
        ("PATCH", a, {}, 400, "nothing_to_change", None),
        ("PATCH", a, {"status": "paused"}, 400, "invalid_field", "status"),
        ("PATCH", a, {"plan_quota_bytes": None}, 400, "invalid_field", "plan_quota_bytes"),
        ("PATCH", a, {"expires_at": "yesterday"}, 400, "invalid_field", "expires_at"),
        ("PATCH", a, {"status": "trial", "expires_at": None}, 400, "missing_field", "expires_at"),
        ("PATCH", a, {"partner": "0" * 32}, 400, "unknown_field", "partner"),
        ("PATCH", a, {"used_bytes": 0}, 400, "unknown_field", "used_bytes"),
        ("POST", f"{a}/release", {"now": True}, 400, "unknown_field", "now"),
        ("POST", f"{a}/addons", {}, 400, "missing_field", "bytes"),
        ("POST", f"{a}/addons", {"bytes": 0}, 400, "invalid_field", "bytes"),
        ("POST", f"{a}/addons", {"bytes": -5}, 400, "invalid_field", "bytes"),
        ("POST", f"{a}/addons", {"bytes": 10, "expires_at": "2000-01-01T00:00:00Z"}, 400, "invalid_field", "expires_at"),
        ("POST", f"{a}/devices", {"kind": "server"}, 400, "missing_field", "name"),
        ("POST", f"{a}/devices", {"name": ""}, 400, "invalid_field", "name"),
        ("POST", f"{a}/devices", {"name": "x", "kind": "phone"}, 400, "invalid_field", "kind"),
        ("POST", f"{a}/devices", {"name": "x", "append_only": "yes"}, 400, "invalid_field", "append_only"),
        ("POST", f"{a}/devices", {"name": "x", "token": "mine"}, 400, "unknown_field", "token"),
        ("PATCH", f"{a}/devices/{dev.id}", {"append_only": 0}, 400, "invalid_field", "append_only"),
        ("PATCH", f"{a}/devices/{dev.id}", {"account": acct}, 400, "unknown_field", "account"),
        ("POST", f"{a}/devices/{dev.id}/token", {"token": "mine"}, 400, "unknown_field", "token"),
        # Bad ids in paths and queries.
        ("GET", "/accounts/XYZ", None, 400, "invalid_id", "account"),
        ("GET", f"/accounts/{acct.upper()}", None, 400, "invalid_id", "account"),
        ("PATCH", f"{a}/devices/123", {"name": "x"}, 400, "invalid_id", "device"),
        ("DELETE", f"{a}/addons/nope", None, 400, "invalid_id", "addon"),
        ("GET", "/accounts?partner=abc", None, 400, "invalid_parameter", "partner"),
        ("GET", "/accounts?status=lost", None, 400, "invalid_parameter", "status"),
        ("GET", "/accounts?limit=0", None, 400, "invalid_parameter", "limit"),
        ("GET", "/accounts?colour=red", None, 400, "unknown_parameter", "colour"),
        ("GET", "/devices?stale_for=3x", None, 400, "invalid_parameter", "stale_for"),
        ("GET", "/audit?cursor=-1", None, 400, "invalid_parameter", "cursor"),
        ("GET", f"{a}?x=1", None, 400, "unknown_parameter", "x"),
        # Nonexistent things.
        ("GET", f"/accounts/{NO_SUCH_ACCOUNT}", None, 404, "not_found", None),
        ("DELETE", f"{a}/addons/{'0' * 32}", None, 404, "not_found", None),
        ("GET", f"{a}/devices/{'0' * 32}", None, 404, "not_found", None),
        ("POST", f"/partners/{'0' * 32}/keys", {}, 404, "not_found", None),
        ("GET", "/nothing", None, 404, "not_found", None),
        ("PUT", a, {}, 405, "method_not_allowed", None),
    ]
    before = admin_state(n, acct)
    for method, path, body, status, code, field in cases:
        raw = body if isinstance(body, str) else None
        r = n.admin(method, path, None if raw is not None else body, raw_body=raw)
        assert r.status == status, (method, path, body, r)
        assert r.error_code() == code, (method, path, body, r)
        assert r.json()["error"].get("field") == field, (method, path, body, r)
        assert admin_state(n, acct) == before, (method, path, body)
    # Missing, malformed and unknown keys.
    for key in ("", "0" * 64, "x"):
        r = n.admin("PATCH", a, {"status": "suspended"}, key=key)
        assert r.status == 401 and r.error_code() == "unauthenticated", (key, r)
        assert r.header("WWW-Authenticate")
    assert admin_state(n, acct) == before
    assert dev.request("GET", "/data/").status == 200


def test_partner_keys_expire_and_can_be_revoked(clock_node):
    n = clock_node
    pid, _ = n.new_partner("keys")
    r = n.admin("POST", f"/partners/{pid}/keys", {"expires_at": cv.rfc3339(n.now_ns() + 3600 * 10**9)})
    assert r.status == 201, r
    short, short_id = r.json()["key"], r.json()["id"]
    assert r.json()["usable"] is True and len(short) == 64
    r = n.admin("POST", f"/partners/{pid}/keys", {})
    long_key, long_id = r.json()["key"], r.json()["id"]
    acct = n.new_account(key=short)
    assert n.admin("GET", f"/accounts/{acct}", key=short).status == 200
    n.advance(3601)
    before = admin_state(n, acct)
    r = n.admin("PATCH", f"/accounts/{acct}", {"status": "suspended"}, key=short)
    assert r.status == 401 and r.error_code() == "unauthenticated", r
    assert admin_state(n, acct) == before
    assert n.admin("GET", f"/partners/{pid}/keys/{short_id}").json()["usable"] is False
    # The other key still works until it is revoked.
    assert n.admin("GET", f"/accounts/{acct}", key=long_key).status == 200
    r = n.admin("DELETE", f"/partners/{pid}/keys/{long_id}")
    assert r.status == 200 and r.json()["disabled"] is True
    assert n.admin("GET", f"/accounts/{acct}", key=long_key).status == 401
    # Revocations are audited under the partner.
    actions = [x["action"] for x in n.admin("GET", f"/audit?partner={pid}").json()["items"]]
    assert actions.count("partner_key.create") == 3 and "partner_key.revoke" in actions


def test_device_limit_and_token_rotation(clock_node):
    n = clock_node
    _, key = n.new_partner("devices")
    acct = n.new_account(key=key, device_limit=2)
    d1 = n.new_device(append_only=False, account=acct, key=key, name="one")
    n.new_device(account=acct, key=key, name="two")
    r = n.admin("POST", f"/accounts/{acct}/devices", {"name": "three"}, key=key)
    assert r.status == 409 and r.error_code() == "device_limit", r
    assert len(n.admin("GET", f"/accounts/{acct}/devices", key=key).json()["items"]) == 2
    # Raising the limit allows one more.
    assert n.admin("PATCH", f"/accounts/{acct}", {"device_limit": 3}, key=key).status == 200
    assert n.admin("POST", f"/accounts/{acct}/devices", {"name": "three"}, key=key).status == 201

    data = os.urandom(500)
    assert d1.put("data", data).status == 200
    old = d1.token
    r = n.admin("POST", f"/accounts/{acct}/devices/{d1.id}/token", {}, key=key)
    assert r.status == 200, r
    d1.token = r.json()["token"]
    assert d1.token != old and len(d1.token) == 64
    r = d1.request("GET", f"/data/{sha256_hex(data)}", headers={"Authorization": d1.basic(token=old)})
    assert r.status == 401
    # The old token as a Bearer token names no device any more: 401, not 404.
    r = d1.request("GET", f"/data/{sha256_hex(data)}", headers={"Authorization": f"Bearer {old}"})
    assert r.status == 401
    assert d1.request("GET", f"/data/{sha256_hex(data)}").body == data
    r = d1.request("GET", f"/data/{sha256_hex(data)}", headers={"Authorization": f"Bearer {d1.token}"})
    assert r.status == 200 and r.body == data
    # The audit record of a rotation holds no secret.
    rec = n.admin("GET", f"/audit?account={acct}", key=key).json()["items"][-1]
    assert rec["action"] == "device.token_rotate" and d1.token not in json.dumps(rec)


def test_stale_devices_report(clock_node):
    n = clock_node
    pid, key = n.new_partner("stale")
    acct = n.new_account(key=key)
    backs_up = n.new_device(account=acct, key=key, name="backs-up")
    gave_up = n.new_device(account=acct, key=key, name="gave-up")
    never = n.new_device(account=acct, key=key, name="never")
    for dev in (backs_up, gave_up):
        assert dev.put("snapshots", os.urandom(100)).status == 200

    def stale(query="stale_for=72h"):
        r = n.admin("GET", f"/devices?{query}", key=key)
        assert r.status == 200, r
        return {x["name"] for x in r.json()["items"]}

    # Nothing is stale yet, not even the device that never backed up: it is brand new.
    assert stale() == set()
    assert stale("") == {"backs-up", "gave-up", "never"}
    n.advance(2 * DAY)
    assert backs_up.put("snapshots", os.urandom(100)).status == 200
    n.advance(2 * DAY)
    assert stale() == {"gave-up", "never"}
    assert stale("stale_for=1d") == {"backs-up", "gave-up", "never"}
    items = n.admin("GET", "/devices?stale_for=72h", key=key).json()["items"]
    by_name = {x["name"]: x for x in items}
    assert by_name["never"]["last_backup_at"] is None and by_name["gave-up"]["partner"] == pid
    # The operator sees them too, across partners; paging walks the whole list.
    all_stale = set()
    cursor = ""
    for _ in range(100):
        page = n.admin("GET", f"/devices?stale_for=72h&limit=2{cursor}").json()
        all_stale |= {x["id"] for x in page["items"]}
        if not page["next_cursor"]:
            break
        cursor = "&cursor=" + page["next_cursor"]
    assert {gave_up.id, never.id} <= all_stale and backs_up.id not in all_stale


def test_every_mutation_is_audited(clock_node):
    n = clock_node
    pid, key = n.new_partner("audited")
    acct = n.new_account(key=key, plan_quota_bytes=100)
    r = n.admin("PATCH", f"/accounts/{acct}", {"plan_quota_bytes": 200}, key=key)
    assert r.status == 200
    x = n.admin("POST", f"/accounts/{acct}/addons", {"bytes": 50}, key=key).json()["id"]
    assert n.admin("DELETE", f"/accounts/{acct}/addons/{x}", key=key).status == 200
    dev = n.new_device(account=acct, key=key)
    assert n.admin("PATCH", f"/accounts/{acct}/devices/{dev.id}", {"name": "renamed"}, key=key).status == 200
    assert n.admin("POST", f"/accounts/{acct}/devices/{dev.id}/token", key=key).status == 200
    assert n.admin("PATCH", f"/accounts/{acct}", {"status": "suspended"}).status == 200  # operator
    recs = n.admin("GET", f"/audit?account={acct}", key=key).json()["items"]
    assert [r["action"] for r in recs] == [
        "account.create", "account.update", "addon.create", "addon.delete", "device.create",
        "device.update", "device.token_rotate", "account.update"]
    assert all(r["account"] == acct and r["partner"] == pid for r in recs)
    assert {r["role"] for r in recs[:-1]} == {f"partner:{pid}"} and recs[-1]["role"] == "operator"
    assert recs[1]["before"]["plan_quota_bytes"] == 100 and recs[1]["after"]["plan_quota_bytes"] == 200
    assert recs[0]["before"] is None and recs[3]["after"] is None
    assert len({r["key_id"] for r in recs}) == 2
    assert recs == sorted(recs, key=lambda r: r["seq"])
    # Paging with the cursor yields the same records.
    page1 = n.admin("GET", f"/audit?account={acct}&limit=5", key=key).json()
    page2 = n.admin("GET", f"/audit?account={acct}&limit=5&cursor={page1['next_cursor']}", key=key).json()
    assert page1["items"] + page2["items"] == recs and page2["next_cursor"] is None
