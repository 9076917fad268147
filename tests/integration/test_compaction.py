"""Compaction through the real server: restic `forget --prune` on a device that allows deletes
gives the disk space of the pruned packs back (background compaction)."""

import os
import shutil
import time

import cv
from test_restic import Restic, make_tree, tree_digest

K, M = 4, 2  # the node's default erasure profile (server/config.h)
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
    on the job runner's main lane, so the second pass to end after `since_ms` started after it."""
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

