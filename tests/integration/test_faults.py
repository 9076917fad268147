"""The fault suite (issue 7): a real chunkvaultd, real faults, the durability rules checked
after each one with the agent API and cvctl.

1. crash under load: kill -9 at seeded random moments while several clients upload;
2. disk loss: m disk directories removed while serving, repair, then m more;
3. bit rot: 100 bytes flipped in 100 distinct shard payloads, scrub finds 100/100;
4. index loss: the LMDB files deleted, rebuilt from a hot backup and the extents;
5. LMDB map full: a node whose map starts at 64 KiB takes many concurrent uploads.

Every test is seeded (CV_FAULT_SEED, default fixed) and bounded: each waits with timeouts
and stops by itself. CV_FAULT_ROUNDS sets the crash rounds (default 8 for CI; see
tests/README.md for the documented 100-round run)."""

import glob
import hashlib
import json
import os
import random
import shutil
import struct
import threading
import time

import pytest

import cv
from cv import cvctl

SEED = int(os.environ.get("CV_FAULT_SEED", "20261126"))
ROUNDS = int(os.environ.get("CV_FAULT_ROUNDS", "8"))

# Small shard unit so that multi-stripe objects stay small (a stripe is 4 x 64 KiB), and
# small extents: every restart starts a new preallocated extent on every disk.
FAULT_CONFIG = """
[storage]
shard_unit_bytes = 65536
extent_bytes = 4194304
[jobs]
compact_interval_s = 0
"""


def body_for(rng, kind):
    """A random body: "small" (replicated: m+1 copies), "medium" (one stripe) or "large"
    (several stripes, an unaligned tail)."""
    if kind == "small":
        n = rng.randint(1, 8000)
    elif kind == "medium":
        n = rng.randint(9000, 250_000)
    else:
        n = rng.randint(270_000, 900_000)
    return rng.randbytes(n)


def random_kind(rng):
    return rng.choices(("small", "medium", "large"), weights=(4, 3, 3))[0]


def read_object(dev, name, conn=None):
    r = dev.request("GET", f"/data/{name}", conn=conn)
    return r.status, r.body


def assert_all_read_back(dev, digests, threads=4):
    """Every {name: sha256 hex} object reads back with that SHA-256 (the name of a data object
    is the SHA-256 of its body, so this is byte-exact), in parallel over kept-alive
    connections."""
    names = sorted(digests)
    failures = []

    def work(part):
        conn = dev.node.connect()
        try:
            for name in part:
                status, body = read_object(dev, name, conn)
                if status != 200 or hashlib.sha256(body).hexdigest() != digests[name]:
                    failures.append((name, status, len(body)))
        finally:
            conn.close()

    ts = [threading.Thread(target=work, args=(names[i::threads],)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
        assert not t.is_alive(), "a reader thread hung"
    assert not failures, f"{len(failures)} objects do not read back: {failures[:5]}"


def listing(dev):
    return {e["name"]: e["size"] for e in dev.listing("data")}


def status_json(node):
    r = cvctl("status", "--json", root=node.root)
    assert r.returncode in (0, 4), r
    return r.returncode, json.loads(r.stdout)


def assert_fsck_clean(node):
    r = cvctl("fsck", root=node.root)
    assert r.returncode == 0, f"fsck not clean:\n{r.stdout}\n{r.stderr}"


# ---------------------------------------------------------------------------------------------
# 1. Crash under load

class Uploader(threading.Thread):
    """Uploads seeded random bodies over one kept-alive HTTPS connection until told to stop
    or the node goes away. Records what was acknowledged (200) and what was attempted but not
    acknowledged (the connection broke, or any other answer)."""

    def __init__(self, dev, seed):
        super().__init__(daemon=True)
        self.dev, self.rng = dev, random.Random(seed)
        self.acked, self.unacked = {}, {}  # name -> size
        self.stop_flag = threading.Event()
        self.error = None

    def run(self):
        conn = None
        try:
            while not self.stop_flag.is_set():
                body = body_for(self.rng, random_kind(self.rng))
                name = cv.sha256_hex(body)
                try:
                    conn = conn or self.dev.node.connect(timeout=10)
                    r = self.dev.request("POST", f"/data/{name}", body, conn=conn)
                except OSError:
                    self.unacked[name] = len(body)
                    return  # the node died
                if r.status == 200:
                    self.acked[name] = len(body)
                else:
                    self.unacked[name] = len(body)
                    if r.status not in (500, 503):
                        self.error = f"unexpected answer {r}"
                        return
                    conn.close()
                    conn = None
        finally:
            if conn is not None:
                conn.close()


def test_crash_under_load_loses_no_acknowledged_object(fresh_node):
    """Rounds of kill -9 at a seeded random moment while 4 clients upload small, one-stripe
    and multi-stripe objects. After each restart: every acknowledged object reads back
    byte-exact, the listing holds every acknowledged object and nothing else but complete
    objects whose upload was cut off (rule 2: absent or complete), usage equals the listing,
    and cvctl fsck is clean."""
    node = fresh_node(FAULT_CONFIG, threads=2)
    dev = node.new_device()
    rng = random.Random(SEED)
    acked, attempted = {}, {}  # name -> size
    completed_unacked = 0  # cut off after the commit, before the answer: complete, listed
    started = time.monotonic()
    for rnd in range(ROUNDS):
        uploaders = [Uploader(dev, rng.getrandbits(64)) for _ in range(4)]
        for u in uploaders:
            u.start()
        time.sleep(rng.uniform(0.05, 1.0))
        node.kill()
        for u in uploaders:
            u.join(timeout=30)
            assert not u.is_alive(), "an uploader hung after kill -9"
            assert u.error is None, u.error
            acked.update(u.acked)
            attempted.update(u.unacked)
        node.start()

        listed = listing(dev)
        missing = [n for n in acked if n not in listed]
        assert not missing, f"round {rnd}: {len(missing)} acknowledged objects not listed"
        strangers = [n for n in listed if n not in acked and n not in attempted]
        assert not strangers, f"round {rnd}: listed but never uploaded: {strangers[:3]}"
        for name, size in listed.items():
            assert size == acked.get(name, attempted.get(name)), (rnd, name, size)
        # Complete unacknowledged uploads count as stored from now on: they must read back too.
        for name in listed:
            if name not in acked:
                acked[name] = attempted.pop(name)
                completed_unacked += 1
        assert_all_read_back(dev, {n: n for n in listed})
        usage = dev.usage()
        assert usage["objects"] == len(listed) and usage["bytes"] == sum(listed.values()), usage
        assert_fsck_clean(node)
    elapsed = time.monotonic() - started
    print(f"\ncrash under load: {ROUNDS} rounds, {len(acked)} objects stored "
          f"({sum(acked.values())} bytes, {completed_unacked} of them complete although their "
          f"answer was cut off), {len(attempted)} cut-off uploads left nothing, {elapsed:.1f} s")
    assert len(acked) > ROUNDS  # the clients did upload between the kills
    r = cvctl("scrub", root=node.root)
    assert r.returncode == 0, r


# ---------------------------------------------------------------------------------------------
# Shared set-up for the disk, bit rot and index tests

def upload_mix(dev, rng, count):
    """Uploads `count` seeded bodies of every kind; returns {name: size}."""
    out = {}
    for _ in range(count):
        body = body_for(rng, random_kind(rng))
        r = dev.put("data", body)
        assert r.status == 200, r
        out[cv.sha256_hex(body)] = len(body)
    return out


def disk_config(disks):
    return FAULT_CONFIG.replace("[storage]\n", "[storage]\ndisks = [" +
                                ", ".join(f'"{d}"' for d in disks) + "]\n")


def remove_disk(path):
    """A dead disk: the directory vanishes (renamed away, then removed)."""
    gone = path + ".gone"
    os.rename(path, gone)
    shutil.rmtree(gone)


# ---------------------------------------------------------------------------------------------
# 2. Disk loss

def test_disk_loss_repair_and_second_loss(fresh_node, tmp_root):
    """8 disks, 4+2. Two random disk directories are removed while the node serves: every
    object still reads back byte-exact and cvctl status reports the degraded stripes (exit
    4). cvctl repair --include-failed-disks rebuilds their shards onto the 6 healthy disks
    (8 rather than 6 disks: a stripe needs k+m distinct healthy disks; test_disks.py shows
    the other way, replacing the dead disk), after which status is clean. Then two other disks are lost:
    everything still reads back."""
    rng = random.Random(SEED + 2)
    base = os.path.join(tmp_root, "faults-8disks")
    disks = [os.path.join(base, f"d{i}") for i in range(8)]
    node = fresh_node(disk_config(disks))
    dev = node.new_device()
    objects = upload_mix(dev, rng, 60)
    rc, st = status_json(node)
    assert rc == 0 and st["stripes"]["degraded"] == 0, st

    first = rng.sample(range(8), 2)
    for d in first:
        remove_disk(disks[d])
    assert_all_read_back(dev, {n: n for n in objects})  # served from parity meanwhile

    deadline = time.monotonic() + 30
    while True:
        rc, st = status_json(node)
        failed = [i for i, d in enumerate(st["disks"]) if d["state"] == "failed"]
        if sorted(failed) == sorted(first) and st["stripes"]["degraded"] > 0:
            break
        assert time.monotonic() < deadline, f"status never showed disks {first} failed: {st}"
        # Reads touching the lost disks are what shows them failed.
        assert_all_read_back(dev, {n: n for n in objects})
    assert rc == 4, st
    stripes = st["stripes"]
    assert stripes["lost"] == 0, stripes
    assert stripes["degraded"] == sum(stripes["by_missing_shards"][1:]), stripes
    assert stripes["by_missing_shards"][2] > 0, stripes  # some stripes lost both disks

    # Uploads go on with 6 healthy disks, and are stored with full redundancy.
    objects.update(upload_mix(dev, rng, 10))

    r = cvctl("repair", "--include-failed-disks", "--json", root=node.root)
    assert r.returncode == 0, r
    rep = json.loads(r.stdout)
    assert rep["stripes_lost"] == 0 and rep["still_queued"] == 0, rep
    rc, st = status_json(node)
    assert rc == 0, st
    assert st["stripes"]["degraded"] == 0 and st["stripes"]["lost"] == 0, st
    assert_all_read_back(dev, {n: n for n in objects})
    assert_fsck_clean(node)

    # Two more disks die, the node restarts on what is left: still everything there.
    healthy = [d for d in range(8) if d not in first]
    second = rng.sample(healthy, 2)
    for d in second:
        remove_disk(disks[d])
    assert_all_read_back(dev, {n: n for n in objects})
    assert node.stop() == 0
    node.start()
    rc, st = status_json(node)
    assert rc == 4 and st["stripes"]["lost"] == 0, st
    assert sorted(i for i, d in enumerate(st["disks"]) if d["state"] == "failed") == \
        sorted(first + second), st
    assert_all_read_back(dev, {n: n for n in objects})
    assert dev.usage()["objects"] == len(objects)


# ---------------------------------------------------------------------------------------------
# 3. Bit rot

def shard_records(node):
    """Every shard record in the node's extents, from their headers (storage/FORMAT.md):
    (path, offset, header_len, payload_len, stripe key) where the stripe key names the
    object and stripe (device, type, name, stripe number)."""
    out = []
    for path in sorted(glob.glob(os.path.join(node.root, "disks", "d*", "extents", "*.ext"))):
        with open(path, "rb") as f:
            data = f.read()
        for off in range(0, len(data), 4096):
            if data[off:off + 4] != b"CVS1":
                continue
            version, header_len, payload_len, stripe = struct.unpack_from("<HHII", data, off + 4)
            layout = data[off + 19]
            if version != 1 or layout not in (1, 2) or payload_len == 0:
                continue
            device = data[off + 80:off + 96]
            typ, name_len = data[off + 96], data[off + 97]
            name = data[off + 98:off + 98 + name_len]
            out.append((path, off, header_len, payload_len, (device, typ, name, stripe)))
    return out


def test_bit_rot_scrub_finds_100_of_100_and_repair_heals(fresh_node):
    """100 bytes flipped (seeded) in the payloads of 100 distinct shard records, at most m
    per stripe so that every stripe stays recoverable, while the node runs: reads stay
    byte-exact, cvctl scrub reports exactly 100 damaged shards, cvctl repair heals them,
    reads are byte-exact after, and a second scrub and fsck are clean."""
    rng = random.Random(SEED + 3)
    node = fresh_node(FAULT_CONFIG)
    dev = node.new_device()
    objects = upload_mix(dev, rng, 80)
    assert cvctl("scrub", root=node.root).returncode == 0

    recs = shard_records(node)
    rng.shuffle(recs)
    per_stripe, victims = {}, []
    for rec in recs:
        if per_stripe.get(rec[4], 0) < 2:  # m = 2
            per_stripe[rec[4]] = per_stripe.get(rec[4], 0) + 1
            victims.append(rec)
            if len(victims) == 100:
                break
    assert len(victims) == 100, f"only {len(victims)} records can be hit"
    for path, off, header_len, payload_len, _ in victims:
        pos = off + header_len + rng.randrange(payload_len)
        with open(path, "r+b") as f:
            f.seek(pos)
            b = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([b ^ rng.randrange(1, 256)]))
            f.flush()
            os.fsync(f.fileno())

    assert_all_read_back(dev, {n: n for n in objects})
    r = cvctl("scrub", "--json", root=node.root)
    assert r.returncode == 4, r
    rep = json.loads(r.stdout)
    assert rep["damaged_shards"] == 100, rep
    assert rep["lost_stripes"] == 0, rep
    assert_all_read_back(dev, {n: n for n in objects})

    r = cvctl("repair", "--json", root=node.root)
    assert r.returncode == 0, r
    rep = json.loads(r.stdout)
    assert rep["stripes_lost"] == 0 and rep["still_queued"] == 0, rep
    assert rep["shards_rewritten"] >= 100, rep
    assert_all_read_back(dev, {n: n for n in objects})
    r = cvctl("scrub", "--json", root=node.root)
    assert r.returncode == 0, r
    assert json.loads(r.stdout)["damaged_shards"] == 0
    assert_fsck_clean(node)
    assert cvctl("status", root=node.root).returncode == 0


# ---------------------------------------------------------------------------------------------
# 4. Index loss

def test_index_loss_rebuild_from_backup(fresh_node, tmp_root):
    """A hot cvctl index backup taken while clients upload; more uploads and a delete after
    it; then the node is stopped, its LMDB files deleted and cvctl index rebuild
    --from-backup run: after the start every object reads back byte-exact, the listings and
    the usage of every device and account equal what they were, the deleted object stays
    deleted, and fsck and scrub are clean."""
    rng = random.Random(SEED + 4)
    node = fresh_node(FAULT_CONFIG)
    devs = [node.new_device(append_only=False, name=f"dev{i}") for i in range(2)]
    devs.append(node.new_device(account=devs[0].account, name="dev-same-account"))
    objects = {d.id: upload_mix(d, rng, 15) for d in devs}

    # Hot backup while uploads run.
    loaders = [Uploader(d, rng.getrandbits(64)) for d in devs]
    for u in loaders:
        u.start()
    time.sleep(0.2)
    backup = os.path.join(tmp_root, "faults-index-backup")
    r = cvctl("index", "backup", backup, root=node.root)
    assert r.returncode == 0, r
    for u in loaders:
        u.stop_flag.set()
    for u, d in zip(loaders, devs):
        u.join(timeout=60)
        assert not u.is_alive() and u.error is None and not u.unacked, (u.error, u.unacked)
        objects[d.id].update(u.acked)

    # After the backup: more objects, and deletes that must stay deleted.
    for d in devs:
        objects[d.id].update(upload_mix(d, rng, 5))
    deleted = []
    for d in devs[:2]:
        name = sorted(objects[d.id])[0]
        assert d.request("DELETE", f"/data/{name}").status == 200
        del objects[d.id][name]
        deleted.append((d, name))

    listings = {d.id: listing(d) for d in devs}
    for d in devs:
        assert listings[d.id] == objects[d.id]
    usages = {d.id: d.usage() for d in devs}
    accounts = {d.account for d in devs}
    acct_usage = {a: node.account_usage(a)["used_bytes"] for a in accounts}

    assert node.stop() == 0
    index_files = glob.glob(os.path.join(node.root, "index", "*"))
    assert any(f.endswith("data.mdb") for f in index_files), index_files
    for f in index_files:
        os.unlink(f)
    r = cvctl("index", "rebuild", "--from-backup", backup, "--config", node.config_file,
              root=node.root)
    assert r.returncode == 0, r
    node.start()

    for d in devs:
        assert listing(d) == listings[d.id]
        assert_all_read_back(d, {n: n for n in objects[d.id]})
        u = d.usage()
        assert (u["bytes"], u["objects"]) == (usages[d.id]["bytes"], usages[d.id]["objects"]), d.id
    for d, name in deleted:
        assert d.request("GET", f"/data/{name}").status == 404
    for a in accounts:
        assert node.account_usage(a)["used_bytes"] == acct_usage[a]
    assert_fsck_clean(node)
    assert cvctl("scrub", root=node.root).returncode == 0


# ---------------------------------------------------------------------------------------------
# 5. LMDB map full

def test_map_full_during_uploads_grows_the_map(fresh_node):
    """A node whose LMDB map starts at 64 KiB ([storage] index_initial_map_bytes) takes 1600
    concurrent small uploads from 4 clients: every one is acknowledged (200), the log shows
    the map growing several times, every object reads back, fsck is clean, and a restart
    reopens the grown index."""
    node = fresh_node(FAULT_CONFIG.replace("[storage]\n",
                                           "[storage]\nindex_initial_map_bytes = 65536\n"))
    dev = node.new_device()
    results, lock = {}, threading.Lock()

    def work(seed):
        rng = random.Random(seed)
        conn = node.connect()
        try:
            # 400 each: 600 in all left the map at 256 KiB or 512 KiB depending on how many
            # pages concurrent commits could reuse (timing), and "grown >= 3 times" flaked.
            for _ in range(400):
                body = rng.randbytes(rng.randint(1, 3000))
                name = cv.sha256_hex(body)
                r = dev.request("POST", f"/data/{name}", body, conn=conn)
                with lock:
                    results[name] = r.status
        finally:
            conn.close()

    ts = [threading.Thread(target=work, args=(SEED + 5 + i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
        assert not t.is_alive()
    bad = {n: s for n, s in results.items() if s != 200}
    assert not bad, f"{len(bad)} uploads failed: {list(bad.values())[:10]}"
    with open(node.log_path, "rb") as f:
        log = f.read().decode(errors="replace")
    grown = [json.loads(line) for line in log.splitlines() if '"index_map_grown"' in line]
    assert len(grown) >= 3, node.log()[-3000:]
    assert int(grown[-1]["to"]) >= 8 * 65536, grown[-1]
    assert_all_read_back(dev, {n: n for n in results})
    assert dev.usage()["objects"] == len(results)
    assert_fsck_clean(node)
    assert node.stop() == 0
    node.start()
    assert_all_read_back(dev, {n: n for n in results})
    more = upload_mix(dev, random.Random(SEED + 6), 20)
    assert dev.usage()["objects"] == len(results) + len(more)
