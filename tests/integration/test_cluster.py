"""The cluster's membership on a real etcd (issue: a cluster coordinated by etcd): a node with a
[cluster] section registers under an etcd lease, leaves at once on SIGTERM, is down for the
cluster within the lease TTL + 2 s of a kill -9, keeps serving while etcd is down and registers
again when it is back; one node id is one node. Without the section nothing needs etcd."""
import json
import os
import signal
import subprocess
import time

import pytest

import cv
from etcd import Etcd, EtcdCluster

TTL = 3  # lease_ttl_s of these tests' nodes


@pytest.fixture
def etcd(tmp_root, request):
    e = Etcd(os.path.join(tmp_root, f"etcd-{request.node.name}")).start()
    yield e
    e.kill()


def cluster_toml(etcd, node_id, ttl=TTL, endpoints=None):
    urls = endpoints if endpoints is not None else [etcd.url]
    return ("[cluster]\netcd_endpoints = [" + ", ".join(f'"{u}"' for u in urls) + "]\n"
            f'node_id = "{node_id}"\nlease_ttl_s = {ttl}\netcd_timeout_ms = 500\n')


def node_uuid(node):
    return node.admin("GET", "/status").json()["node_id"]


def test_single_node_needs_no_etcd(fresh_node):
    n = fresh_node()
    r = n.admin("GET", "/cluster")
    assert r.status == 200 and r.json() == {"cluster": False}
    out = cv.cvctl("cluster", "status", root=n.root)
    assert out.returncode == 0 and "single node" in out.stdout, out


def test_nodes_register_under_a_lease_and_see_each_other(etcd, fresh_node):
    a = fresh_node(cluster_toml(etcd, "node-a"))
    b = fresh_node(cluster_toml(etcd, "node-b"))
    nodes = etcd.nodes()
    assert set(nodes) == {"node-a", "node-b"}
    assert nodes["node-a"]["agent_url"] == a.endpoints["agent"]
    assert nodes["node-a"]["admin_url"] == a.endpoints["admin"]
    assert nodes["node-a"]["uuid"] == node_uuid(a)
    assert nodes["node-a"]["state"] == "active"
    assert 0 < nodes["node-a"]["free_bytes"] <= nodes["node-a"]["capacity_bytes"]
    # Each record hangs on a lease of its own, which etcd knows with the configured TTL.
    leases = {k: lease for k, (_, lease) in etcd.get_prefix("/chunkvault/v1/nodes/").items()}
    assert len(set(leases.values())) == 2 and 0 not in leases.values()
    ttl = etcd.call("/v3/lease/timetolive", {"ID": str(leases["/chunkvault/v1/nodes/node-a"])})
    assert int(ttl["grantedTTL"]) == TTL
    # Either node's admin API and cvctl show both, and which one answered.
    view = b.admin("GET", "/cluster").json()
    assert view["cluster"] is True and view["node"] == "node-b" and view["lease_ttl_s"] == TTL
    assert [(x["id"], x["self"]) for x in view["nodes"]] == [("node-a", False), ("node-b", True)]
    out = cv.cvctl("cluster", "status", root=a.root)
    assert out.returncode == 0, out
    assert "node-a *" in out.stdout and "node-b" in out.stdout, out.stdout
    # Partner keys are not for cluster routes.
    _, partner_key = a.new_partner()
    r = a.admin("GET", "/cluster", key=partner_key)
    assert r.status == 403, r


def test_sigterm_leaves_at_once_and_kill_is_seen_within_the_ttl(etcd, fresh_node):
    a = fresh_node(cluster_toml(etcd, "node-a"))
    b = fresh_node(cluster_toml(etcd, "node-b"))
    assert set(etcd.nodes()) == {"node-a", "node-b"}
    assert a.stop() == 0
    # Revoked on the way out: gone without waiting for the lease.
    assert set(etcd.nodes()) == {"node-b"}
    assert cv.log_events(a, "cluster_left")
    b.kill()
    t0 = time.monotonic()
    cv.wait_for(lambda: not etcd.nodes(), timeout=TTL + 5, what="the killed node's key to go")
    assert time.monotonic() - t0 <= TTL + 2
    # Restarted, it is back under a new lease, with the same uuid.
    uuid = None
    b.start()
    uuid = node_uuid(b)
    assert etcd.nodes()["node-b"]["uuid"] == uuid


def test_a_restart_before_the_lease_runs_out_takes_the_record_over(etcd, fresh_node):
    a = fresh_node(cluster_toml(etcd, "node-a", ttl=30))
    old = etcd.get_prefix("/chunkvault/v1/nodes/")["/chunkvault/v1/nodes/node-a"][1]
    a.kill()  # its lease lives on for 30 s
    a.start()
    key = etcd.get_prefix("/chunkvault/v1/nodes/")["/chunkvault/v1/nodes/node-a"]
    assert key[1] != old
    assert etcd.nodes()["node-a"]["agent_url"] == a.endpoints["agent"]


def test_one_node_id_is_one_node(etcd, fresh_node, tmp_root):
    a = fresh_node(cluster_toml(etcd, "node-a"))
    before = etcd.nodes()
    twin = cv.Node(os.path.join(tmp_root, "twin"), cluster_toml(etcd, "node-a"))
    with pytest.raises(RuntimeError) as e:
        twin.start()
    assert "is registered in etcd by another node" in str(e.value)
    assert twin.proc.returncode == 1
    assert not os.path.exists(os.path.join(twin.root, "run", "endpoints.json"))
    assert etcd.nodes() == before
    assert a.admin("GET", "/cluster").status == 200


def test_the_node_serves_while_etcd_is_down_and_registers_when_it_is_back(etcd, fresh_node):
    a = fresh_node(cluster_toml(etcd, "node-a"))
    dev = a.new_device()
    etcd.kill()
    # Agents keep working: nothing on the request path waits for etcd.
    body = os.urandom(100_000)
    assert dev.put("data", body).status == 200
    assert dev.request("GET", f"/data/{cv.sha256_hex(body)}").body == body
    # The node's cache of the cluster no longer follows etcd: its view is refused, not stale.
    r = cv.wait_for(lambda: (lambda r: r if r.status == 503 else None)(a.admin("GET", "/cluster")),
                    timeout=5, what="GET /cluster to answer 503")
    assert r.error_code() == "etcd_unavailable", r
    # Longer than the TTL: the lease is gone for etcd too; the node registers afresh.
    time.sleep(TTL + 1)
    etcd.start()
    cv.wait_for(lambda: "node-a" in etcd.nodes(), timeout=TTL + 10, what="registration after etcd's return")
    # The cache's watch resumes too (it retries every second).
    cv.wait_for(lambda: a.admin("GET", "/cluster").status == 200, timeout=5, what="the watch to resume")
    assert cv.log_events(a, "etcd_unreachable")
    assert cv.log_events(a, "cluster_cache_watching")


def test_a_node_starts_while_etcd_is_down(etcd, fresh_node):
    etcd.kill()
    a = fresh_node(cluster_toml(etcd, "node-a"))
    assert a.request("GET", "/healthz").status == 200
    etcd.start()
    cv.wait_for(lambda: "node-a" in etcd.nodes(), timeout=10, what="registration once etcd is up")


def test_a_second_endpoint_is_used_when_the_first_is_down(etcd, fresh_node):
    dead = "http://127.0.0.1:1"
    fresh_node(cluster_toml(etcd, "node-a", endpoints=[dead, etcd.url]))
    assert "node-a" in etcd.nodes()


@pytest.mark.parametrize("cluster, message", [
    ('etcd_endpoints = ["http://127.0.0.1:2379"]\nnode_id = "Node A"\n', "node_id 'Node A' must be"),
    ('etcd_endpoints = ["https://127.0.0.1:2379"]\nnode_id = "a"\n', "is not http://HOST:PORT"),
    ('node_id = "a"\n', "'cluster.etcd_endpoints' is required"),
    ('etcd_endpoints = ["http://127.0.0.1:2379"]\nnode_id = "a"\nlease_ttl_s = 0\n',
     "'cluster.lease_ttl_s' must be between 2 and 300"),
])
def test_a_bad_cluster_section_stops_the_start(tmp_root, request, cluster, message):
    n = cv.Node(os.path.join(tmp_root, request.node.name), "[cluster]\n" + cluster)
    with pytest.raises(RuntimeError) as e:
        n.start()
    assert message in str(e.value)


def test_accounts_and_devices_are_placed_in_etcd_before_they_exist(etcd, fresh_node):
    a = fresh_node(cluster_toml(etcd, "node-a"))
    b = fresh_node(cluster_toml(etcd, "node-b"))
    dev = a.new_device()
    accounts = etcd.get_prefix("/chunkvault/v1/accounts/")
    assert {k: json.loads(v)["node"] for k, (v, _) in accounts.items()} == {
        f"/chunkvault/v1/accounts/{dev.account}": "node-a"}
    assert all(lease == 0 for _, lease in accounts.values())  # placement outlives the node's lease
    devices = etcd.get_prefix("/chunkvault/v1/devices/")
    assert {k: json.loads(v)["account"] for k, (v, _) in devices.items()} == {
        f"/chunkvault/v1/devices/{dev.id}": dev.account}
    view = a.admin("GET", "/cluster").json()
    assert {n["id"]: n["accounts"] for n in view["nodes"]} == {"node-a": 1, "node-b": 0}
    # node-b sees it too, through its watch of etcd, at etcd's revision.
    revision = int(etcd.call("/v3/kv/range", {"key": "AA=="})["header"]["revision"])
    view_b = cv.wait_for(lambda: (lambda v: v if v["revision"] >= revision else None)(
        b.admin("GET", "/cluster").json()), timeout=5, what="node-b's cache to catch up")
    assert {n["id"]: n["accounts"] for n in view_b["nodes"]} == {"node-a": 1, "node-b": 0}
    # A creation the node refuses takes its placement back: nothing is left in etcd.
    r = a.admin("POST", "/accounts", {"status": "active", "plan_quota_bytes": 1, "device_limit": 1,
                                      "partner": "0" * 32})
    assert r.status == 400, r
    _, partner_key = a.new_partner()
    r = a.admin("POST", f"/accounts/{dev.account}/devices", {"name": "x", "kind": "computer"},
                key=partner_key)
    assert r.status == 404, r  # not the partner's account
    assert len(etcd.get_prefix("/chunkvault/v1/accounts/")) == 1
    assert len(etcd.get_prefix("/chunkvault/v1/devices/")) == 1


def test_while_etcd_is_down_nothing_is_placed_and_the_rest_works(etcd, fresh_node):
    a = fresh_node(cluster_toml(etcd, "node-a"))
    dev = a.new_device()
    before = a.admin("GET", "/accounts").json()["items"]
    etcd.kill()
    r = a.admin("POST", "/accounts", {"status": "active", "plan_quota_bytes": 1 << 30, "device_limit": 5})
    assert r.status == 503 and r.error_code() == "etcd_unavailable", r
    assert r.header("Retry-After") == "5"
    r = a.admin("POST", f"/accounts/{dev.account}/devices", {"name": "x", "kind": "computer"})
    assert r.status == 503 and r.error_code() == "etcd_unavailable", r
    # Nothing was created; what the node holds keeps working, for agents and the admin API.
    assert a.admin("GET", "/accounts").json()["items"] == before
    assert len(a.admin("GET", f"/accounts/{dev.account}/devices").json()["items"]) == 1
    assert a.admin("PATCH", f"/accounts/{dev.account}", {"device_limit": 7}).status == 200
    assert dev.put("data", b"kept while etcd is down").status == 200
    etcd.start()
    cv.wait_for(lambda: a.admin("POST", "/accounts", {"status": "active", "plan_quota_bytes": 1 << 30,
                                                      "device_limit": 5}).status == 201,
                timeout=15, what="account creation once etcd is back")


def test_deploy_cluster_sh_up_status_down(tmp_root):
    """deploy/cluster.sh starts one etcd and three nodes under CV_CLUSTER_ROOT, returns once
    all are ready, shows them, and stops them all."""
    root = os.path.join(tmp_root, "cluster-sh")
    env = dict(os.environ, CV_CLUSTER_ROOT=root, CV_BUILD_DIR=cv.BUILD_DIR)
    script = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "cluster.sh")
    try:
        up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        for n in ("node1", "node2", "node3"):
            assert os.path.exists(os.path.join(root, n, "run", "endpoints.json")), n
        status = subprocess.run([script, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "node1 *" in status.stdout and "node2" in status.stdout and "node3" in status.stdout
    finally:
        down = subprocess.run([script, "down"], env=env, capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert down.stdout.count("stopped") == 4, down.stdout
    for n in ("node1", "node2", "node3"):
        assert not os.path.exists(os.path.join(root, n, "run", "endpoints.json")), n


def test_a_purged_account_leaves_the_cluster_with_its_devices(etcd, fresh_node):
    a = fresh_node(cluster_toml(etcd, "node-a"))
    gone = a.new_device()
    kept = a.new_device()
    r = a.admin("DELETE", f"/accounts/{gone.account}?grace=0s")
    assert r.status == 202, r
    cv.wait_job(a, r.json()["id"])
    keys = set(etcd.get_prefix("/chunkvault/v1/"))
    assert f"/chunkvault/v1/accounts/{gone.account}" not in keys
    assert f"/chunkvault/v1/devices/{gone.id}" not in keys
    assert f"/chunkvault/v1/accounts/{kept.account}" in keys
    assert f"/chunkvault/v1/devices/{kept.id}" in keys


def test_a_three_member_etcd_that_loses_one_member_keeps_working(tmp_root, fresh_node):
    """The node talks to all three members; the one it was using dies: registration, the
    watch and placements go on through the other two."""
    members = EtcdCluster(os.path.join(tmp_root, "etcd3"))
    os.makedirs(members.root, exist_ok=True)
    members.start()
    try:
        toml = ("[cluster]\netcd_endpoints = [" + ", ".join(f'"{u}"' for u in members.urls) + "]\n"
                'node_id = "node-a"\nlease_ttl_s = 6\netcd_timeout_ms = 500\n')
        a = fresh_node(toml)
        survivor = members.member(1)
        assert "node-a" in survivor.nodes()
        members.kill_member(0)  # the first endpoint: the one the node prefers
        # Placements go through another member. If the dead one led the raft group, the others
        # elect a new leader first (about a second): meanwhile a creation is 503 with
        # Retry-After, as a client retries it.
        def create():
            r = a.admin("POST", "/accounts", {"status": "active", "plan_quota_bytes": 1 << 30,
                                              "device_limit": 5})
            assert r.status in (201, 503) and (r.status == 201 or r.error_code() == "etcd_unavailable"), r
            return r.json()["id"] if r.status == 201 else None
        account = cv.wait_for(create, timeout=15, what="an account created through the other members")
        assert f"/chunkvault/v1/accounts/{account}" in survivor.get_prefix("/chunkvault/v1/accounts/")
        cv.wait_for(lambda: a.admin("GET", "/cluster").status == 200, timeout=10,
                    what="the watch on another member")
        # Longer than the TTL: the lease was renewed through the others all along.
        time.sleep(7)
        assert "node-a" in survivor.nodes()
        view = a.admin("GET", "/cluster").json()
        assert [(n["id"], n["accounts"]) for n in view["nodes"]] == [("node-a", 1)]
    finally:
        members.kill()
