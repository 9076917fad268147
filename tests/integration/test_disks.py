"""Disk replacement with cvctl against a real chunkvaultd: `cvctl disk add|drain|remove|list`.
A dead disk is replaced (add a new one, remove the dead one: repair rebuilds its shards on the
others); a readable disk is drained (every shard moves off it, even while uploads go on) and
then removed; the node's disk table survives restarts; bad requests change nothing."""

import glob
import json
import os
import random
import threading
import time

import cv
from cv import cvctl
from test_faults import (FAULT_CONFIG, assert_all_read_back, assert_fsck_clean, disk_config,
                         remove_disk, status_json, upload_mix)

SEED = int(os.environ.get("CV_FAULT_SEED", "20261126"))


def disks_json(node):
    r = cvctl("disk", "list", "--json", root=node.root)
    assert r.returncode == 0, r
    return json.loads(r.stdout)["items"]


def extent_files(path):
    return glob.glob(os.path.join(path, "extents", "*.ext"))


def node_with_disks(fresh_node, tmp_root, name, count):
    """A fresh node on `count` disk directories under tmp_root/name: (node, base, disks)."""
    base = os.path.join(tmp_root, name)
    disks = [os.path.join(base, f"d{i}") for i in range(count)]
    return fresh_node(disk_config(disks)), base, disks


def test_replace_a_dead_disk(fresh_node, tmp_root):
    """6 disks, 4+2 (no spare room: every stripe uses every disk). A new disk is added while
    the node serves, a disk dies, `cvctl disk remove` declares it gone and follows the repair
    that rebuilds its shards onto the others (the new disk included): status is clean again,
    every object reads back byte-exact, fsck is clean. After a restart (the config still
    lists the 6 original disks) the node has its 7 disks, the removed one stays removed even
    though its directory is back, and everything reads back."""
    rng = random.Random(SEED)
    node, base, disks = node_with_disks(fresh_node, tmp_root, "disks-replace", 6)
    dev = node.new_device()
    objects = upload_mix(dev, rng, 40)

    new = os.path.join(base, "new0")
    r = cvctl("disk", "add", new, "--json", root=node.root)
    assert r.returncode == 0, r
    added = json.loads(r.stdout)
    assert added["position"] == 6 and added["state"] == "ok" and added["path"] == new, added
    assert os.path.isfile(os.path.join(new, "chunkvault-disk"))
    objects.update(upload_mix(dev, rng, 10))  # the new disk takes shards at once
    assert extent_files(new), "no shard went to the added disk"

    dead = 2
    remove_disk(disks[dead])
    assert_all_read_back(dev, {n: n for n in objects})  # served from parity meanwhile
    rc, st = status_json(node)  # status notices the vanished directory
    assert rc == 4 and st["disks"][dead]["state"] == "failed", st
    red = st["redundancy"]
    assert red["missing_bytes"] > 0 and red["time_to_full_s"] >= 1, red
    assert red["time_to_full_s"] == -(-red["missing_bytes"] // red["repair_rate_bytes_per_s"]), red
    r = cvctl("status", root=node.root)
    assert "to full redundancy" in r.stdout, r.stdout
    r = cvctl("disk", "remove", disks[dead], root=node.root)
    assert r.returncode == 0, r
    assert "repair" in r.stdout, r.stdout
    rc, st = status_json(node)
    assert rc == 0, st
    assert st["stripes"]["degraded"] == 0 and st["stripes"]["lost"] == 0, st
    assert st["redundancy"]["time_to_full_s"] == 0 and st["redundancy"]["missing_bytes"] == 0, st
    states = [d["state"] for d in st["disks"]]
    assert states == ["ok", "ok", "removed", "ok", "ok", "ok", "ok"], states
    assert st["disks"][dead]["live_bytes"] == 0, st["disks"][dead]
    assert st["disks"][6]["live_bytes"] > 0, st["disks"][6]
    assert_all_read_back(dev, {n: n for n in objects})
    assert_fsck_clean(node)
    objects.update(upload_mix(dev, rng, 10))  # uploads go on with full redundancy

    assert node.stop() == 0, node.log()
    os.makedirs(disks[dead])  # the dead disk's directory comes back, empty: still removed
    node.start()
    listed = disks_json(node)
    assert [d["path"] for d in listed] == disks + [new], listed
    assert [d["state"] for d in listed] == ["ok", "ok", "removed", "ok", "ok", "ok", "ok"], listed
    assert "disk_from_index" in node.log()
    assert_all_read_back(dev, {n: n for n in objects})
    assert dev.usage()["objects"] == len(objects)
    rc, st = status_json(node)
    assert rc == 0 and st["stripes"]["degraded"] == 0, st
    assert_fsck_clean(node)
    assert not extent_files(disks[dead]), "a removed disk received shards"


def test_drain_while_uploading_then_remove(fresh_node, tmp_root):
    """7 disks, 4+2. `cvctl disk drain` moves every shard off disk 0 while two clients keep
    uploading: the job ends complete with nothing referenced on the disk and its extent files
    deleted, every object (old and new) reads back, fsck is clean, and the disk receives no
    new shard. `cvctl disk remove` then needs no --force and starts no repair."""
    rng = random.Random(SEED + 1)
    node, base, disks = node_with_disks(fresh_node, tmp_root, "disks-drain", 7)
    dev = node.new_device()
    objects = upload_mix(dev, rng, 60)
    assert extent_files(disks[0])

    stop = threading.Event()
    during = {}
    errors = []

    def upload(seed):
        urng = random.Random(seed)
        while not stop.is_set():
            try:
                during.update(upload_mix(dev, urng, 1))
            except AssertionError as e:  # a refused upload is a failure of the test
                errors.append(e)
                return

    threads = [threading.Thread(target=upload, args=(SEED + 10 + i,), daemon=True)
               for i in range(2)]
    for t in threads:
        t.start()
    try:
        r = cvctl("disk", "drain", disks[0], "--json", root=node.root, timeout=120)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert r.returncode == 0, r
    res = json.loads(r.stdout)
    assert res["complete"] and res["remaining_bytes"] == 0, res
    assert res["stripes_moved"] > 0 and res["stripes_failed"] == 0, res
    assert res["extents_removed"] > 0, res
    assert not extent_files(disks[0]), os.listdir(os.path.join(disks[0], "extents"))
    objects.update(during)
    assert during, "no upload completed during the drain"
    assert_all_read_back(dev, {n: n for n in objects})
    assert_fsck_clean(node)

    listed = disks_json(node)
    assert listed[0]["state"] == "draining" and listed[0]["live_bytes"] == 0, listed[0]
    objects.update(upload_mix(dev, rng, 10))
    assert not extent_files(disks[0]), "a draining disk received shards"
    rc, st = status_json(node)
    assert rc == 0 and st["stripes"]["degraded"] == 0, st

    r = cvctl("disk", "remove", "0", "--json", root=node.root)
    assert r.returncode == 0, r
    doc = json.loads(r.stdout)
    assert doc["disk"]["state"] == "removed" and doc["repair"] is None, doc
    assert_all_read_back(dev, {n: n for n in objects})
    assert_fsck_clean(node)


def test_cancelled_drain_puts_the_disk_back(fresh_node, tmp_root):
    """A drain cancelled while it is scheduled or running leaves the disk active: it takes
    new shards again, and what was moved stays readable."""
    rng = random.Random(SEED + 2)
    node, _, disks = node_with_disks(fresh_node, tmp_root, "disks-cancel", 7)
    dev = node.new_device()
    objects = upload_mix(dev, rng, 30)
    r = cvctl("disk", "drain", "1", "--no-wait", "--json", root=node.root)
    assert r.returncode == 0, r
    job = json.loads(r.stdout)
    assert job["kind"] == "disk.drain", job
    r = node.admin("POST", f"/jobs/{job['id']}/cancel", {})
    # Cancelled, or finished before the cancel reached it (a small store drains fast).
    if r.status == 200:
        assert r.json()["state"] == "cancelled", r
        assert disks_json(node)[1]["state"] == "ok"
        live_before = disks_json(node)[1]["live_bytes"]
        objects.update(upload_mix(dev, rng, 20))
        assert disks_json(node)[1]["live_bytes"] > live_before, \
            "the disk took no new shard after the cancel"
    else:
        assert r.status == 409 and r.error_code() == "not_cancellable", r
    assert_all_read_back(dev, {n: n for n in objects})
    assert_fsck_clean(node)


def test_bad_disk_requests_change_nothing(fresh_node, tmp_root):
    """Every refusal is a clear status + JSON error, and the disk table is unchanged."""
    node, base, disks = node_with_disks(fresh_node, tmp_root, "disks-negative", 6)
    dev = node.new_device()
    upload_mix(dev, random.Random(SEED + 3), 12)
    before = disks_json(node)

    def refused(method, path, body, status, code):
        r = node.admin(method, "/" + path, body)
        assert r.status == status and r.error_code() == code, (path, body, r)

    refused("POST", "disks", {"path": "relative/dir"}, 400, "invalid_field")
    refused("POST", "disks", {"path": ""}, 400, "invalid_field")
    refused("POST", "disks", {}, 400, "missing_field")
    refused("POST", "disks", {"path": "/x", "extra": 1}, 400, "unknown_field")
    refused("POST", "disks", {"path": os.path.join(base, "no", "such", "parent")}, 400,
            "invalid_field")
    refused("POST", "disks", {"path": disks[3]}, 409, "conflict")
    refused("POST", "disks", {"path": disks[3] + "/"}, 409, "conflict")
    other = os.path.join(base, "other")  # holds a chunkvault disk already (another node's)
    os.makedirs(other)
    with open(os.path.join(other, "chunkvault-disk"), "w") as f:
        f.write("chunkvault-disk v1\nnode 00\nposition 0\n")
    refused("POST", "disks", {"path": other}, 409, "conflict")
    full = os.path.join(base, "full")
    os.makedirs(os.path.join(full, "extents"))
    open(os.path.join(full, "extents", "x"), "w").close()
    refused("POST", "disks", {"path": full}, 409, "conflict")
    a_file = os.path.join(base, "a-file")
    open(a_file, "w").close()
    refused("POST", "disks", {"path": a_file}, 400, "invalid_field")

    # 6 disks for 4+2: draining or removing one would leave too few.
    refused("POST", "disks/0/drain", {}, 409, "too_few_disks")
    refused("POST", "disks/0/remove", {"force": True}, 409, "too_few_disks")
    refused("POST", "disks/0/remove", {}, 409, "disk_in_use")
    refused("POST", "disks/0/remove", {"force": "yes"}, 400, "invalid_field")
    refused("POST", "disks/99/drain", {}, 404, "not_found")
    refused("POST", "disks/x/drain", {}, 400, "invalid_disk")
    refused("POST", "disks/01/drain", {}, 400, "invalid_disk")
    refused("POST", "disks/0/drain", {"now": True}, 400, "unknown_field")
    refused("DELETE", "disks/0", None, 404, "not_found")

    _, partner_key = node.new_partner()
    r = node.admin("GET", "/disks", key=partner_key)
    assert r.status == 403 and r.error_code() == "operator_only", r
    r = node.admin("POST", "/disks", {"path": os.path.join(base, "p")}, key=partner_key)
    assert r.status == 403, r

    r = cvctl("disk", "drain", "/not/a/disk", root=node.root)
    assert r.returncode == 1 and "not one of the node's disks" in r.stderr, r
    r = cvctl("disk", "remove", disks[0], root=node.root)
    assert r.returncode == 1 and "disk_in_use" in r.stderr, r

    def table(items):
        return [(d["position"], d["path"], d["state"], d["live_bytes"]) for d in items]

    assert table(disks_json(node)) == table(before)
    assert not os.path.exists(os.path.join(base, "p"))
    # The audit log holds no disk change.
    r = node.admin("GET", "/audit?limit=1000")
    assert r.status == 200, r
    assert not [e for e in r.json()["items"] if e["action"].startswith("disk.")], r.json()
