"""Scrub and repair as jobs: the background scrubber (a pass whenever the last full one is
older than [scrub] interval_s, throttled), stopping a running scrub, a scrub that resumes
after kill -9 where it stopped, and automatic repair of what a scrub finds."""

import os
import random
import subprocess
import time

import cv
from cv import put_objects, assert_reads_back, wait_job

CVCTL = os.path.join(cv.BUILD_DIR, "bin", "cvctl")


def cvctl(node, *args, timeout=120):
    return subprocess.run([CVCTL, "--root", node.root, *args], capture_output=True, text=True,
                          timeout=timeout)


def jobs_of(node, kind, state=None):
    q = f"/jobs?kind={kind}" + (f"&state={state}" if state else "")
    r = node.admin("GET", q)
    assert r.status == 200, r
    return r.json()["items"]


def flip_payload_bytes(node, count, seed):
    """XORs `count` bytes in the middle of extent files, well inside written records."""
    rng = random.Random(seed)
    extents = []
    for i in range(6):
        d = os.path.join(node.root, "disks", f"d{i}", "extents")
        for f in sorted(os.listdir(d)):
            extents.append(os.path.join(d, f))
    flipped = 0
    for path in rng.sample(extents, len(extents)):
        with open(path, "r+b") as f:
            data = f.read(1 << 20)
            # a record payload: skip the 4 KiB-aligned header block of the first record
            nz = [i for i in range(4096, len(data), 509) if data[i] != 0]
            if not nz:
                continue
            at = rng.choice(nz)
            f.seek(at)
            f.write(bytes([data[at] ^ 0x5A]))
            flipped += 1
        if flipped == count:
            break
    assert flipped == count
    return flipped


def test_background_scrub_runs_and_is_recorded(fresh_node):
    node = fresh_node("[scrub]\ninterval_s = 3\nmin_mib_per_s = 64\n[jobs]\njob_poll_ms = 50\n")
    dev = node.new_device()
    put_objects(dev, 10, 200_000, seed=1)
    done = cv.wait_for(lambda: [j for j in jobs_of(node, "scrub", "done")
                             if j["result"]["objects"] >= 10], timeout=60, what="a background scrub")
    job = done[0]
    assert job["params"]["background"] is True
    assert job["params"]["max_bytes_per_sec"] >= 64 << 20
    assert job["result"]["clean"] is True
    r = node.admin("GET", "/status")
    assert r.json()["last_full_scrub_at"] is not None
    # Audited as the node's own work.
    r = node.admin("GET", "/audit")
    actions = [(a["action"], a["role"]) for a in r.json()["items"]]
    assert ("node.scrub", "system") in actions, actions


def test_scrub_stop_and_resume_after_kill(fresh_node):
    # A slow background pass (1 MiB/s over ~12 MiB of shards) that the test can catch.
    node = fresh_node("[scrub]\ninterval_s = 1\nmin_mib_per_s = 1\nmax_mib_per_s = 1\n"
                      "[jobs]\njob_poll_ms = 50\n")
    dev = node.new_device()
    bodies = put_objects(dev, 8, 1 << 20, seed=2)
    # A pass that starts after the uploads (earlier ones may have started with fewer objects).
    earlier = {j["id"] for j in jobs_of(node, "scrub")}
    running = cv.wait_for(lambda: [j for j in jobs_of(node, "scrub", "running")
                                if j["id"] not in earlier], what="a running scrub")[0]

    def done_so_far():
        return (node.admin("GET", f"/jobs/{running['id']}").json()["progress"] or {}).get(
            "objects_done", 0)

    cv.wait_for(lambda: done_so_far() >= 2, timeout=60, what="scrub progress")
    before = done_so_far()
    node.kill()
    node.start()
    # The same job goes on from where its progress says, and finishes.
    job = wait_job(node, running["id"], timeout=120)
    assert job["result"]["objects"] == len(bodies), job
    assert job["result"]["clean"] is True
    log = node.log()
    assert f'"job":"{running["id"]}"' in log
    assert before >= 2

    # Stop: the next pass starts (interval 1 s); `cvctl scrub stop` cancels it.
    running = cv.wait_for(lambda: jobs_of(node, "scrub", "running"), what="the next pass")[0]
    r = cvctl(node, "scrub", "status")
    assert r.returncode == 0 and running["id"] in r.stdout, r
    r = cvctl(node, "scrub", "stop")
    assert r.returncode == 0, r
    job = node.admin("GET", f"/jobs/{running['id']}").json()
    assert job["state"] == "cancelled", job
    time.sleep(0.5)
    # Cancelled stays cancelled: the runner does not overwrite it when it stops.
    assert node.admin("GET", f"/jobs/{running['id']}").json()["state"] == "cancelled"
    assert_reads_back(dev, bodies)


def test_scrub_job_finds_damage_and_auto_repair_heals_it(fresh_node):
    node = fresh_node("[scrub]\nauto_repair = true\n[jobs]\njob_poll_ms = 50\n")
    dev = node.new_device()
    bodies = put_objects(dev, 12, 300_000, seed=3)
    node.stop()
    flip_payload_bytes(node, 3, seed=4)
    node.start()
    r = cvctl(node, "scrub", "--json")
    assert r.returncode == 4, r  # damage found...
    import json
    result = json.loads(r.stdout)
    assert result["damaged_shards"] == 3, result
    assert result["repair"]["stripes_repaired"] >= 1, result  # ...and repaired at once
    r = cvctl(node, "scrub")
    assert r.returncode == 0, r
    assert_reads_back(dev, bodies)
    # A second scrub while one is scheduled or running is refused with the job's id.
    r1 = node.admin("POST", "/scrub", {})
    assert r1.status == 202, r1
    r2 = node.admin("POST", "/scrub", {})
    if r2.status == 409:
        assert r2.error_code() == "already_running" and r1.json()["id"] in r2.body.decode()
    else:  # the first one was already done
        assert r2.status == 202, r2
    r = cvctl(node, "scrub", "--no-wait")
    assert r.returncode in (0, 1), r
