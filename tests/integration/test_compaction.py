"""Compaction through the real server: restic `forget --prune` on a device that allows deletes
gives the disk space of the pruned packs back (background compaction), and compaction killed
with SIGKILL at seeded moments loses nothing, leaks no extent space and keeps the accounting
exact."""

import os
import random
import shutil
import time

import cv
from test_restic import Restic, make_tree, tree_digest

K, M = 4, 2  # the node's default erasure profile (common/config.h)
SHARD_UNIT = 256 * 1024
EXTENT_BYTES = 1 << 20


def compaction_config(live_percent, mib_per_s):
    """Small extents (so that what a test deletes fills whole extents), background compaction
    every second."""
    return f"""
[storage]
extent_bytes = {EXTENT_BYTES}
[jobs]
job_poll_ms = 20
compact_interval_s = 1
compact_live_percent = {live_percent}
compact_mib_per_s = {mib_per_s}
"""


def settle_compaction(node, since_ms, timeout=90):
    """Waits until a compaction pass that started after `since_ms` (wall clock, ms) found
    nothing to move or remove; returns that pass's log event. Passes run one after the other
    on the job runner's purge lane, so the second pass to end after `since_ms` started after it."""
    deadline = time.monotonic() + timeout
    while True:
        done = [e for e in cv.log_events(node, "compaction_done") if int(e["ts_ms"]) >= since_ms]
        for e in done[1:]:
            if e["removed"] == "0" and e["moved_records"] == "0":
                return e
        assert time.monotonic() < deadline, f"compaction still busy after {timeout}s: {done[-3:]}"
        time.sleep(0.1)


def now_ms():
    return time.time_ns() // 1_000_000


def test_restic_forget_prune_frees_disk_space(fresh_node, workdir):
    live_percent = 90
    node = fresh_node(compaction_config(live_percent, 0))
    dev = node.new_device(append_only=False)
    restic = Restic(dev, workdir)
    restic.run("init")
    # Two distinct trees of incompressible data at the same path: `forget --keep-last 1` then
    # drops the first snapshot, and every pack of the first backup is unreferenced.
    src = os.path.join(workdir, "src")
    first_mib, second_mib = 80, 8
    make_tree(src, first_mib, seed=501)
    restic.backup(src)
    shutil.rmtree(src)
    make_tree(src, second_mib, seed=502)
    restic.backup(src)
    assert len(restic.snapshots()) == 2

    # The disks as the backups left them (restic's deleted locks compacted away).
    settle_compaction(node, now_ms())
    packs_before = {o["name"]: o["size"] for o in dev.listing("data")}
    before = cv.disk_bytes(node)

    restic.run("forget", "--keep-last", "1", "--prune")
    assert len(restic.snapshots()) == 1
    packs_after = {o["name"]: o["size"] for o in dev.listing("data")}
    pruned = sum(s for n, s in packs_before.items() if n not in packs_after)
    repacked = sum(s for n, s in packs_after.items() if n not in packs_before)
    assert pruned >= first_mib * 2**20 * 0.95, (pruned, first_mib)

    # The bound. Each object of S bytes occupies at least S*(k+m)/k bytes of shard records:
    # k data shards of at least S/k bytes each plus m parity shards as long, each rounded up to
    # 4 KiB with its header; a single-stripe object is stored as m+1 copies only when that is
    # smaller, and (m+1)*S >= S*(k+m)/k anyway. So the pruned packs (net of what prune wrote
    # back: packs it repacked) held at least net*(k+m)/k bytes on the disks. What compaction
    # may leave of them, with 1 MiB extents (E) on k+m = 6 disks:
    #  - extents written during the first backup hold nothing live but restic's config and
    #    keys (the second backup's packs came later): they are rewritten and removed;
    #  - per disk at most one extent holds records of both backups. It is rewritten when its
    #    non-live space exceeds both 10% of E (live_percent 90) and the largest record
    #    (storage MaxRecordBytes: 2 x 260 KiB for 256 KiB shards at 4+2), so it keeps less
    #    than 520 KiB of pruned records: < 3.1 MiB in all;
    #  - the live records copied out of removed extents (< 1 MiB per disk: config, keys, the
    #    rest of such an extent) and prune's new index and repacked packs go to the disks'
    #    active extents and may open one new extent per disk: 6 MiB (preallocated) in all.
    # With 80 MiB pruned (>= 120 MiB of records) that is < 8% lost: the space that comes back
    # is at least 90% of net*(k+m)/k.
    net = pruned - repacked
    want = 0.9 * net * (K + M) / K
    deadline = time.monotonic() + 90
    while before - cv.disk_bytes(node) < want and time.monotonic() < deadline:
        time.sleep(0.2)
    settle_compaction(node, now_ms())
    freed = before - cv.disk_bytes(node)
    assert freed >= want, (freed, want, pruned, repacked, before)

    # What is left is restic's repository of the second tree, intact.
    restic.run("check", "--read-data")
    target = os.path.join(workdir, "restore")
    restic.run("restore", "latest", "--target", target)
    assert tree_digest(os.path.join(target, src.lstrip("/"))) == tree_digest(src)
    fsck = node.fsck()
    assert fsck["clean"], fsck


def record_bytes_bound(size):
    """At most how many bytes of shard records the node writes for an object of `size` bytes
    (storage/FORMAT.md): stripes of k shards of at most SHARD_UNIT bytes plus m parity shards,
    or m+1 whole copies for a one-stripe object when that is smaller; each record is its payload
    and a header (< 4 KiB) rounded up to 4 KiB."""
    slack = 8192
    full, rest = divmod(size, K * SHARD_UNIT)
    erasure = full * (K + M) * (SHARD_UNIT + slack) + (K + M) * (-(-rest // K) + slack) * (rest > 0)
    if full == 0 or (full == 1 and rest == 0):
        return min(erasure, (M + 1) * (size + slack))
    return erasure


def test_compaction_survives_kill9(fresh_node):
    """Rounds of new data and deletes (garbage interleaved with live records of three devices
    in the same extents), then SIGKILL at a seeded moment while the throttled background
    compaction copies live records; restart. In the end compaction completes, fsck is clean
    (usage counters = the objects' sums, extent live bytes = what the index references),
    every surviving object reads back byte-exact, no deleted one comes back, and no extent
    space leaks."""
    live_percent = 60
    # 2 MiB/s: a round's garbage takes compaction seconds to work through, so kills land in it.
    node = fresh_node(compaction_config(live_percent, 2))
    account = node.new_account()
    churn = node.new_device(account=account, name="churn", append_only=False)
    keeper = node.new_device(account=account, name="keeper")  # append-only: never deletes
    other = node.new_device(name="other-account", append_only=False)
    devices = (churn, keeper, other)
    kept = {d.id: {} for d in devices}
    rng = random.Random(20261127)
    rounds, mid_compaction = 12, 0
    started_ms = now_ms()
    for _ in range(rounds):
        fresh = []
        for i in range(24):
            dev = devices[i % 3]
            body = rng.randbytes(rng.choice((20_000, 150_000, 600_000)))
            r = dev.put("data", body)
            assert r.status == 200, r
            fresh.append((dev, cv.sha256_hex(body), body))
        for dev, name, body in fresh:
            if dev is keeper or rng.random() < 0.25:
                kept[dev.id][name] = body
            else:
                r = dev.request("DELETE", f"/data/{name}")
                assert r.status == 200, r
        # Wait until compaction is rewriting an extent of this round (it logs each one it
        # starts), then kill at a seeded moment soon after: at 2 MiB/s an extent's live
        # records take a few hundred ms to copy, and a pass holds several extents.
        deletes_done_ms = now_ms()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                int(e["ts_ms"]) >= deletes_done_ms for e in cv.log_events(node, "compaction_extent")):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        killed_ms = now_ms()
        node.kill()
        # Mid-compaction: an extent rewrite had started since the deletes and no pass had
        # ended after it.
        starts = [int(e["ts_ms"]) for e in cv.log_events(node, "compaction_extent")
                  if int(e["ts_ms"]) >= max(deletes_done_ms, started_ms)]
        ends = [int(e["ts_ms"]) for e in cv.log_events(node, "compaction_done")]
        if starts:
            mid_compaction += not any(max(starts) <= t <= killed_ms for t in ends)
        node.start()
        started_ms = now_ms()
    assert mid_compaction >= rounds // 2, f"only {mid_compaction} of {rounds} kills hit a compaction"

    settle_compaction(node, now_ms(), timeout=120)
    fsck = node.fsck()
    assert fsck["clean"], fsck
    for dev in devices:
        cv.assert_reads_back(dev, kept[dev.id])
        assert {o["name"] for o in dev.listing("data")} == set(kept[dev.id]), dev.id
        usage = dev.usage()
        assert usage["objects"] == len(kept[dev.id]), usage
        assert usage["bytes"] == sum(len(b) for b in kept[dev.id].values()), usage
    want = sum(len(b) for d in (churn, keeper) for b in kept[d.id].values())
    assert node.account_usage(account)["used_bytes"] == want
    # No leak: once compaction has nothing left to do, every extent but the k+m active ones is
    # more than live_percent live, or has less than one maximal record (storage
    # MaxRecordBytes: 2 x 260 KiB for 256 KiB shards at 4+2) of non-live space, which compaction
    # leaves alone; so the disks hold at most the live records / the smaller of those two live
    # shares, plus the active extents (and the disks' small identity files).
    live = sum(record_bytes_bound(len(b)) for d in devices for b in kept[d.id].values())
    live_share = min(live_percent / 100, 1 - 2 * 260 * 1024 / EXTENT_BYTES)
    limit = live / live_share + (K + M) * (EXTENT_BYTES + 64 * 1024)
    assert cv.disk_bytes(node) <= limit, (cv.disk_bytes(node), limit, live)
