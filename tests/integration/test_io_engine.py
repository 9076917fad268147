"""The node's disk I/O engine as the operator sees it in /status: on io_uring, uploads and
restores go through the registered buffer region (io_uring_register_buffers), and uploads'
shard writes and restores' shard reads go through the worker's event-loop ring
(server/disk_ring.h), counted in "io";
with the posix engine nothing is counted as registered or asynchronous."""

import cv
from cv import put_objects, assert_reads_back, log_events


def io_counts(node):
    r = node.admin("GET", "/status")
    assert r.status == 200, r
    s = r.json()
    return s["io_engine"], s["io"]["requests"], s["io"]["registered_requests"], s["io"]["async_requests"]


def test_uploads_and_restores_use_registered_buffers_on_io_uring(fresh_node):
    node = fresh_node()
    dev = node.new_device()
    engine, req0, reg0, async0 = io_counts(node)
    bodies = put_objects(dev, 3, 3 << 20, seed=7)  # erasure-coded: several stripes each
    engine, req1, reg1, async1 = io_counts(node)
    assert req1 - req0 >= 3 * 6, (req0, req1)  # at least one stripe of 4+2 records per object
    assert_reads_back(dev, bodies)
    engine, req2, reg2, async2 = io_counts(node)
    assert req2 > req1, "restores read the disks"
    assert engine in ("uring", "posix"), engine
    if engine == "posix":
        assert reg2 == 0 and async2 == 0
        return
    if not log_events(node, "io_uring_buffers_unregistered"):
        # Every shard record of the uploads and the restores went through the region (64
        # concurrent uploads would exhaust it; three one at a time do not).
        assert reg1 - reg0 == req1 - req0, (req0, req1, reg0, reg1)
        assert reg2 - reg1 == req2 - req1, (req1, req2, reg1, reg2)
    # Every shard record the uploads wrote (3 objects x 3 stripes x 4+2 records) and every
    # data shard the restores read (3 objects x 3 stripes of 1 MiB x 4 data shards) went
    # through the workers' event-loop rings.
    assert async1 - async0 >= 3 * 3 * 6, (async0, async1)
    assert async2 - async1 >= 3 * 3 * 4, (req1, req2, async1, async2)
