"""cvctl against a real chunkvaultd: the operator routes (status, fsck, scrub, repair, index
backup), the offline index rebuild, and the exit codes scripts rely on (0 ok, 1 refused,
2 usage, 3 unreachable, 4 problems found)."""

import glob
import json
import os
import shutil
import socket
import struct
import subprocess

import pytest

import cv
from conftest import assert_clean_log
from cv import cvctl


def upload_some(dev, sizes=(700_000, 1_300_000, 90_000, 3_000, 100)):
    """Uploads objects of the given sizes (large ones striped, small ones replicated);
    returns {name: body}."""
    out = {}
    for i, n in enumerate(sizes):
        body = os.urandom(n - 1) + bytes([i])
        r = dev.put("data", body)
        assert r.status == 200, r
        out[cv.sha256_hex(body)] = body
    return out


def assert_reads_back(dev, objects):
    for name, body in objects.items():
        r = dev.request("GET", f"/data/{name}")
        assert r.status == 200, (name, r)
        assert r.body == body, name


def records(node):
    """(extent path, offset, header_len, payload_len) of the shard records in the node's extents,
    from their headers (storage/FORMAT.md)."""
    out = []
    for path in sorted(glob.glob(os.path.join(node.root, "disks", "d*", "extents", "*.ext"))):
        with open(path, "rb") as f:
            data = f.read()
        for off in range(0, len(data), 4096):
            if data[off:off + 4] != b"CVS1":
                continue
            header_len, payload_len = struct.unpack_from("<HI", data, off + 6)
            layout = data[off + 19]
            if layout in (1, 2) and payload_len > 0:
                out.append((path, off, header_len, payload_len))
    return out


def flip_payload_byte(path, offset, header_len):
    with open(path, "r+b") as f:
        f.seek(offset + header_len + 1)
        b = f.read(1)
        f.seek(offset + header_len + 1)
        f.write(bytes([b[0] ^ 0x5A]))
        f.flush()
        os.fsync(f.fileno())


@pytest.fixture(scope="module")
def ops_node(tmp_root):
    n = cv.Node(os.path.join(tmp_root, "cvctl-shared")).start()
    dev = n.new_device()
    upload_some(dev)
    yield n
    assert n.stop() == 0, n.log()
    assert_clean_log(n)


def write_key(tmp_root, name, key):
    path = os.path.join(tmp_root, name)
    with open(path, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return path


# ---- status ----

def test_status_human_view_is_a_short_dashboard(ops_node):
    r = cvctl("status", root=ops_node.root)
    assert r.returncode == 0, r
    out = r.stdout
    assert "erasure 4+2" in out and "5 objects" in out, out
    assert "ok: every stripe has all its shards" in out, out
    assert "last full pass" in out and "0 running" in out, out
    for i in range(6):
        assert os.path.join(ops_node.root, "disks", f"d{i}") in out, out
    assert "DISK" in out and "CAPACITY" in out, out


def test_status_json_is_the_nodes_answer(ops_node):
    r = cvctl("status", "--json", root=ops_node.root)
    assert r.returncode == 0, r
    doc = json.loads(r.stdout)
    direct = ops_node.admin("GET", "/status").json()
    assert set(doc) == set(direct)
    for field in ("node_id", "version", "uptime_s", "disks", "erasure", "objects", "bytes",
                  "stripes", "last_full_scrub_at", "jobs_running"):
        assert field in doc, field
    assert doc["erasure"] == {"k": 4, "m": 2}
    assert doc["objects"] == 5
    assert doc["bytes"] == sum((700_000, 1_300_000, 90_000, 3_000, 100))
    assert doc["jobs_running"] == 0
    assert len(doc["disks"]) == 6
    for d in doc["disks"]:
        assert d["state"] == "ok" and d["errors"] == 0
        assert d["capacity_bytes"] >= d["used_bytes"] > 0
    st = doc["stripes"]
    assert len(st["by_missing_shards"]) == 3  # 0, 1, 2 missing
    assert st["by_missing_shards"][0] == st["total"] > 0
    assert st["lost"] == 0 and st["degraded"] == 0


def test_status_is_operator_only(ops_node):
    _, partner_key = ops_node.new_partner("cvctl-partner")
    for method, path, body in (("GET", "/status", None), ("POST", "/scrub", {}),
                               ("POST", "/repair", {}),
                               ("POST", "/index/backup", {"path": "/var/tmp/never"})):
        r = ops_node.admin(method, path, body, key=partner_key)
        assert r.status == 403, (path, r)
        assert r.error_code() == "operator_only"
    key_file = write_key(ops_node.root, "partner.key", partner_key)
    r = cvctl("status", "--key-file", key_file, root=ops_node.root)
    assert r.returncode == 1, r
    assert "403" in r.stderr and "operator key" in r.stderr, r.stderr
    assert not os.path.exists("/var/tmp/never")


def test_operator_routes_take_strict_bodies(ops_node):
    r = ops_node.admin("POST", "/repair", {"include_failed_disks": "yes"})
    assert r.status == 400 and r.error_code() == "invalid_field", r
    r = ops_node.admin("POST", "/repair", {"bogus": True})
    assert r.status == 400 and r.error_code() == "unknown_field", r
    r = ops_node.admin("POST", "/scrub", {"deep": True})
    assert r.status == 400 and r.error_code() == "unknown_field", r
    r = ops_node.admin("POST", "/index/backup", {})
    assert r.status == 400 and r.error_code() == "missing_field", r
    r = ops_node.admin("GET", "/status?verbose=1")
    assert r.status == 400, r


# ---- exit codes ----

def test_wrong_key_exits_1_with_the_nodes_message(ops_node):
    key_file = write_key(ops_node.root, "wrong.key", "0" * 64)
    r = cvctl("fsck", "--key-file", key_file, root=ops_node.root)
    assert r.returncode == 1, r
    assert "401" in r.stderr and "a valid admin key is required" in r.stderr, r.stderr
    r = cvctl("status", "--json", "--key-file", key_file, root=ops_node.root)
    assert r.returncode == 1
    assert json.loads(r.stdout)["error"]["code"] == "unauthenticated"


def test_unreachable_node_exits_3(ops_node, tmp_root):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    key = ops_node.endpoints["admin_key_file"]
    r = cvctl("status", "--url", f"https://127.0.0.1:{port}", "--ca", ops_node.ca,
              "--key-file", key, "--timeout", "5")
    assert r.returncode == 3, r
    assert "cannot connect" in r.stderr, r.stderr
    # No node on this root: no endpoints.json.
    r = cvctl("status", root=os.path.join(tmp_root, "no-such-root"))
    assert r.returncode == 3, r
    assert "endpoints.json" in r.stderr


def test_certificate_from_another_ca_exits_3(ops_node, tmp_root):
    other = os.path.join(tmp_root, "other-ca")
    os.makedirs(other, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", os.path.join(other, "key.pem"), "-out",
                    os.path.join(other, "ca.pem")], check=True, capture_output=True, timeout=60)
    r = cvctl("status", "--ca", os.path.join(other, "ca.pem"), root=ops_node.root)
    assert r.returncode == 3, r
    assert "TLS" in r.stderr and "certificate verify failed" in r.stderr, r.stderr


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["index", "backup"],
    ["index"],
    ["status", "--timeout", "0"],
    ["repair", "--no-such-flag"],
    ["index", "rebuild"],  # neither --from-backup nor --without-backup
    ["index", "rebuild", "--from-backup", "/var/tmp", "--without-backup"],
    ["status", "--url", "http://127.0.0.1:1", "--key-file", "/dev/null"],
    ["status", "--url", "https://127.0.0.1:99999", "--key-file", "/dev/null"],
    ["status", "--url", "https://127.0.0.1:0", "--key-file", "/dev/null"],
    ["status", "--url", "https://user@127.0.0.1:1", "--key-file", "/dev/null"],
    ["status", "--url", "https://127.0.0.1:1/admin?x=1", "--key-file", "/dev/null"],
    ["status", "--url", "https://:1", "--key-file", "/dev/null"],
    ["status", "--url", "https://[::1:1", "--key-file", "/dev/null"],
])
def test_bad_usage_exits_2(ops_node, args):
    r = cvctl(*args, root=ops_node.root)
    assert r.returncode == 2, (args, r)
    assert r.stderr.strip(), args


def test_help_documents_the_exit_codes():
    r = cvctl("--help")
    assert r.returncode == 0
    for line in ("0  ok", "1  the node refused", "2  usage error", "3  the node cannot be reached",
                 "4  problems found"):
        assert line in r.stdout, line


# ---- checks and repair ----

def test_bit_rot_is_found_by_scrub_and_healed_by_repair(fresh_node):
    n = fresh_node()
    dev = n.new_device()
    objects = upload_some(dev)
    r = cvctl("fsck", root=n.root)
    assert r.returncode == 0 and "clean" in r.stdout, r
    r = cvctl("scrub", root=n.root)
    assert r.returncode == 0 and "clean" in r.stdout, r

    recs = records(n)
    assert len(recs) >= 10
    damaged = recs[:: max(1, len(recs) // 3)][:3]
    for path, off, hl, _ in damaged:
        flip_payload_byte(path, off, hl)

    r = cvctl("scrub", "--json", root=n.root)
    assert r.returncode == 4, r
    rep = json.loads(r.stdout)
    assert rep["clean"] is False and rep["damaged_shards"] == len(damaged), rep
    assert rep["lost_stripes"] == 0
    r = cvctl("scrub", "start", root=n.root)  # human view; damage is still there
    assert r.returncode == 4 and "damaged shard" in r.stdout and "cvctl repair" in r.stdout, r

    r = cvctl("status", "--json", root=n.root)
    assert r.returncode == 4, r  # repairs pending
    assert json.loads(r.stdout)["stripes"]["pending_repairs"] >= 1
    assert json.loads(r.stdout)["last_full_scrub_at"] is not None

    r = cvctl("repair", root=n.root)
    assert r.returncode == 0, r
    assert "complete" in r.stdout, r.stdout
    r = cvctl("scrub", root=n.root)
    assert r.returncode == 0 and "clean" in r.stdout, r
    assert cvctl("status", root=n.root).returncode == 0
    assert cvctl("fsck", root=n.root).returncode == 0
    assert_reads_back(dev, objects)
    actions = [a["action"] for a in n.admin("GET", "/audit?limit=1000").json()["items"]]
    assert "node.scrub" in actions and "node.repair" in actions


def test_lost_extent_file_fails_fsck_until_repaired(fresh_node):
    n = fresh_node()
    dev = n.new_device()
    objects = upload_some(dev)
    assert n.stop() == 0
    victim = sorted(glob.glob(os.path.join(n.root, "disks", "d2", "extents", "*.ext")))[0]
    os.unlink(victim)
    n.start()

    r = cvctl("fsck", root=n.root)
    assert r.returncode == 4, r
    assert "extent 2/1 is referenced but cannot be opened" in r.stdout, r.stdout
    # --fix corrects counters only: a lost extent stays a problem (repair's work), nothing
    # is "fixed" and nothing is audited.
    r = cvctl("fsck", "--fix", "--json", root=n.root)
    assert r.returncode == 4, r
    doc = json.loads(r.stdout)
    assert doc["fixed"] == [] and not doc["clean"], doc
    assert any("cannot be opened" in p for p in doc["problems"]), doc
    for body, code in (({}, "missing_field"), ({"fix": "yes"}, "invalid_field"),
                       ({"fix": True, "dry": 1}, "unknown_field")):
        bad = n.admin("POST", "/fsck", body)
        assert bad.status == 400 and bad.error_code() == code, (body, bad)
    audit = n.admin("GET", "/audit?limit=1000").json()["items"]
    assert not [e for e in audit if e["action"] == "node.fsck_fix"], audit
    r = cvctl("scrub", "--json", root=n.root)
    assert r.returncode == 4, r
    assert json.loads(r.stdout)["damaged_shards"] > 0
    assert_reads_back(dev, objects)  # from parity meanwhile

    r = cvctl("repair", root=n.root)
    assert r.returncode == 0, r
    r = cvctl("fsck", root=n.root)
    assert r.returncode == 0, r
    r = cvctl("fsck", "--fix", root=n.root)
    assert r.returncode == 0 and "clean" in r.stdout and "fixed:" not in r.stdout, r
    assert cvctl("scrub", root=n.root).returncode == 0
    assert_reads_back(dev, objects)


def test_status_counts_stripes_on_a_failed_disk_until_repair_moves_them(fresh_node, tmp_root):
    disks = [os.path.join(tmp_root, "cvctl-7disks", f"d{i}") for i in range(7)]
    n = fresh_node("[storage]\ndisks = [" + ", ".join(f'"{d}"' for d in disks) + "]\n")
    dev = n.new_device()
    objects = upload_some(dev)
    assert n.stop() == 0
    gone = disks[6] + ".gone"
    os.rename(disks[6], gone)
    shutil.rmtree(gone)
    n.start()

    r = cvctl("status", "--json", root=n.root)
    assert r.returncode == 4, r
    doc = json.loads(r.stdout)
    assert [d["state"] for d in doc["disks"]].count("failed") == 1
    st = doc["stripes"]
    assert st["by_missing_shards"][1] > 0 and st["lost"] == 0, st
    assert st["degraded"] == st["by_missing_shards"][1] + st["by_missing_shards"][2]
    r = cvctl("status", root=n.root)
    assert r.returncode == 4 and "DEGRADED" in r.stdout and "failed" in r.stdout, r

    r = cvctl("repair", root=n.root)  # queued damage only: the failed disk's shards stay
    assert r.returncode == 0, r
    assert cvctl("status", root=n.root).returncode == 4
    r = cvctl("repair", "--include-failed-disks", "--json", root=n.root)
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["stripes_repaired"] == st["degraded"]
    r = cvctl("status", "--json", root=n.root)
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["stripes"]["degraded"] == 0
    assert_reads_back(dev, objects)


# ---- index backup and rebuild ----

def test_index_backup_refuses_existing_and_relative_paths(ops_node, tmp_root):
    dest = os.path.join(tmp_root, "cvctl-backup-a")
    r = cvctl("index", "backup", dest, root=ops_node.root)
    assert r.returncode == 0, r
    assert os.path.getsize(os.path.join(dest, "data.mdb")) > 0
    assert dest in r.stdout
    r = cvctl("index", "backup", dest, root=ops_node.root)
    assert r.returncode == 1 and "409" in r.stderr and "exists" in r.stderr, r
    existing_file = os.path.join(tmp_root, "cvctl-a-file")
    open(existing_file, "w").close()
    r = cvctl("index", "backup", existing_file, "--json", root=ops_node.root)
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "exists", r
    r = cvctl("index", "backup", "relative/backup", root=ops_node.root)
    assert r.returncode == 1 and "400" in r.stderr and "absolute" in r.stderr, r
    r = cvctl("index", "backup", os.path.join(tmp_root, "no-such-dir", "bk"), root=ops_node.root)
    assert r.returncode == 1 and "does not exist" in r.stderr, r


def test_index_rebuild_from_backup_restores_every_object(fresh_node, tmp_root):
    n = fresh_node()
    dev = n.new_device(append_only=False)
    before_backup = upload_some(dev)
    gone_body = os.urandom(50_000)
    gone = cv.sha256_hex(gone_body)
    assert dev.put("data", gone_body).status == 200
    backup = os.path.join(tmp_root, "cvctl-rebuild-backup")
    r = cvctl("index", "backup", backup, "--json", root=n.root)
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["file"] == os.path.join(backup, "data.mdb")
    # After the backup: more objects, and a delete that must stay deleted.
    after_backup = upload_some(dev, sizes=(400_000, 2_000))
    assert dev.request("DELETE", f"/data/{gone}").status == 200
    objects = {**before_backup, **after_backup}
    usage = dev.usage()

    # Not while the node runs.
    r = cvctl("index", "rebuild", "--from-backup", backup, root=n.root)
    assert r.returncode == 1 and "stop chunkvaultd" in r.stderr, r

    assert n.stop() == 0
    # Not over an existing index.
    r = cvctl("index", "rebuild", "--from-backup", backup, root=n.root)
    assert r.returncode == 1 and "move it away" in r.stderr, r
    for f in glob.glob(os.path.join(n.root, "index", "*")):
        os.unlink(f)
    r = cvctl("index", "rebuild", "--from-backup", backup, "--config", n.config_file,
              root=n.root)
    assert r.returncode == 0, r
    assert f"{len(objects)} objects" in r.stdout, r.stdout

    n.start()
    assert_reads_back(dev, objects)  # the device and its token came from the backup
    assert dev.request("GET", f"/data/{gone}").status == 404
    assert dev.usage()["bytes"] == usage["bytes"]
    assert dev.usage()["objects"] == usage["objects"]
    r = cvctl("fsck", root=n.root)
    assert r.returncode == 0, r
    assert cvctl("scrub", root=n.root).returncode == 0


def test_accounts_and_devices_commands(ops_node):
    r = cvctl("accounts", "create", "--quota", "1000000", "--device-limit", "2", "--json",
              root=ops_node.root)
    assert r.returncode == 0, r
    acct = json.loads(r.stdout)["id"]
    r = cvctl("accounts", "show", acct, root=ops_node.root)
    assert r.returncode == 0 and acct in r.stdout and "active" in r.stdout, r
    r = cvctl("accounts", "list", "--limit", "1000", root=ops_node.root)
    assert r.returncode == 0 and acct in r.stdout and "STATUS" in r.stdout, r
    r = cvctl("accounts", "list", "--status", "nonsense", root=ops_node.root)
    assert r.returncode == 1 and "400" in r.stderr, r
    dev = ops_node.new_device(account=acct, name="front-desk")
    r = cvctl("devices", "list", "--account", acct, root=ops_node.root)
    assert r.returncode == 0 and dev.id in r.stdout and "front-desk" in r.stdout, r
    r = cvctl("devices", "list", "--json", root=ops_node.root)
    assert r.returncode == 0 and dev.id in [d["id"] for d in json.loads(r.stdout)["items"]]
    r = cvctl("accounts", "show", "0" * 32, root=ops_node.root)
    assert r.returncode == 1 and "404" in r.stderr, r
