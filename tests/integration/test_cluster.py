"""The cluster's membership on a real etcd (issue: a cluster coordinated by etcd): a node with a
[cluster] section registers under an etcd lease, leaves at once on SIGTERM, is down for the
cluster within the lease TTL + 2 s of a kill -9, keeps serving while etcd is down and registers
again when it is back; one node id is one node. Without the section nothing needs etcd."""
import os
import signal
import time

import pytest

import cv
from etcd import Etcd

TTL = 3  # lease_ttl_s of these tests' nodes


@pytest.fixture
def etcd(tmp_root, request):
    e = Etcd(os.path.join(tmp_root, f"etcd-{request.node.name}")).start()
    yield e
    e.kill()


def cluster_toml(etcd, node_id, ttl=TTL, endpoints=None):
    urls = endpoints if endpoints is not None else [etcd.url]
    return ("[cluster]\netcd_endpoints = [" + ", ".join(f'"{u}"' for u in urls) + "]\n"
            f'node_id = "{node_id}"\nlease_ttl_s = {ttl}\n')


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
    r = a.admin("GET", "/cluster")
    assert r.status == 503 and r.error_code() == "etcd_unavailable", r
    # Longer than the TTL: the lease is gone for etcd too; the node registers afresh.
    time.sleep(TTL + 1)
    etcd.start()
    cv.wait_for(lambda: "node-a" in etcd.nodes(), timeout=TTL + 10, what="registration after etcd's return")
    assert a.admin("GET", "/cluster").status == 200
    assert cv.log_events(a, "etcd_unreachable")


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
