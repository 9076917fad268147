"""Deleting a decommissioned device's backups (DELETE /admin/v1/accounts/{a}/devices/{d}): the
agent is refused at once (410), the purge job runs after its grace period, frees the account's
usage and the disk space, can be cancelled while scheduled, survives kill -9, works on a full
disk, and a partner can neither see nor touch another partner's jobs."""

import os
import random
import re
import shutil
import time

import pytest

import cv
from test_restic import Restic, make_tree, tree_digest

# Small extents so that a device's data fills whole extents that compaction can remove, and a
# runner that looks for due jobs often.
PURGE_CONFIG = """
[storage]
extent_bytes = 4194304
[jobs]
job_poll_ms = 50
compact_interval_s = 0
compact_mib_per_s = 0
"""


def delete_device(node, dev, grace="0s", key=None):
    r = node.admin("DELETE", f"/accounts/{dev.account}/devices/{dev.id}?grace={grace}", key=key)
    assert r.status == 202, r
    job = r.json()
    assert job["kind"] == "device.purge" and job["state"] == "scheduled", job
    assert r.header("Location") == f"/admin/v1/jobs/{job['id']}"
    return job


def test_purge_frees_usage_and_disk(fresh_node):
    node = fresh_node(PURGE_CONFIG)
    account = node.new_account()
    victim = node.new_device(account=account, name="old-server", append_only=False)
    sibling = node.new_device(account=account, name="sibling")
    stranger = node.new_device(name="other-account")

    keep_sibling = cv.put_objects(sibling, 4, 300_000, seed=1)
    keep_stranger = cv.put_objects(stranger, 4, 300_000, seed=2)
    victim_bodies = cv.put_objects(victim, 48, 1 << 20, seed=3)
    victim_bytes = sum(len(b) for b in victim_bodies.values())
    before_usage = node.account_usage(account)
    assert before_usage["used_bytes"] >= victim_bytes
    before_disk = cv.disk_bytes(node)

    # Closed to its agent at once, whatever the request (seen during a grace period: with
    # grace 0 the purge may be over before the agent asks: still 410, see
    # test_purged_device_answers_410_while_its_account_exists).
    waiting = delete_device(node, victim, grace="1h")
    for method, path in (("GET", "/config"), ("GET", "/data/"), ("POST", "/data/" + "0" * 64)):
        r = victim.request(method, path, b"x" if method == "POST" else None)
        assert r.status == 410, r
        assert r.error_code() == "device_deleted", r
    assert node.admin("POST", f"/jobs/{waiting['id']}/cancel").status == 200
    assert victim.request("GET", "/data/").status == 200

    job = delete_device(node, victim)

    done = cv.wait_job(node, job["id"])
    receipt = done["result"]
    assert receipt["objects_removed"] == len(victim_bodies), done
    assert receipt["bytes_removed"] == victim_bytes, done
    assert receipt["disk_bytes_reclaimed"] > 0, done
    assert done["progress"]["objects_done"] == done["progress"]["objects_total"] == len(victim_bodies)
    assert cv.parse_rfc3339(receipt["finished_at"]) >= cv.parse_rfc3339(receipt["started_at"])

    # The device is gone, its usage with it; the others are intact.
    r = node.admin("GET", f"/accounts/{account}/devices/{victim.id}")
    assert r.status == 404, r
    after_usage = node.account_usage(account)
    assert after_usage["used_bytes"] == before_usage["used_bytes"] - victim_bytes, after_usage
    r = victim.request("GET", "/config")
    assert r.status == 410 and r.error_code() == "device_deleted", r
    cv.assert_reads_back(sibling, keep_sibling)
    cv.assert_reads_back(stranger, keep_stranger)

    freed = before_disk - cv.disk_bytes(node)
    assert freed >= 0.9 * victim_bytes, (freed, victim_bytes)

    # The receipt is in the audit log too.
    r = node.admin("GET", f"/audit?account={account}")
    assert r.status == 200, r
    purges = [a for a in r.json()["items"] if a["action"] == "device.purge"]
    assert len(purges) == 1 and purges[0]["role"] == "system", purges
    assert purges[0]["after"]["objects_removed"] == len(victim_bodies)
    assert node.fsck()["clean"], node.fsck()


def test_cancel_in_grace_restores_device(fresh_node, workdir):
    node = fresh_node(PURGE_CONFIG)
    dev = node.new_device(append_only=False)
    src = os.path.join(workdir, "src")
    make_tree(src, 4, seed=7)
    restic = Restic(dev, workdir)
    restic.run("init")
    restic.backup(src)
    usage = node.account_usage(dev.account)

    job = delete_device(node, dev, grace="7d")
    r = node.admin("GET", f"/accounts/{dev.account}/devices/{dev.id}")
    assert r.status == 200 and r.json()["purge_job"] == job["id"], r
    assert r.json()["deleted_at"] is not None
    # Usage still shows during the grace period; the agent is refused.
    assert node.account_usage(dev.account)["used_bytes"] == usage["used_bytes"]
    assert restic.run("snapshots", check=False).returncode != 0
    # A second delete, a token rotation and a rename are refused while it is deleted.
    r = node.admin("DELETE", f"/accounts/{dev.account}/devices/{dev.id}")
    assert r.status == 409 and r.error_code() == "already_deleted", r
    r = node.admin("POST", f"/accounts/{dev.account}/devices/{dev.id}/token", {})
    assert r.status == 409 and r.error_code() == "device_deleted", r

    r = node.admin("POST", f"/jobs/{job['id']}/cancel")
    assert r.status == 200 and r.json()["state"] == "cancelled", r
    r = node.admin("POST", f"/jobs/{job['id']}/cancel")
    assert r.status == 409 and r.error_code() == "not_cancellable", r

    # Back exactly as it was: same token, same data.
    r = node.admin("GET", f"/accounts/{dev.account}/devices/{dev.id}")
    assert r.status == 200 and r.json()["deleted_at"] is None and r.json()["purge_job"] is None, r
    restic.run("check", "--read-data")
    target = os.path.join(workdir, "restore")
    restic.run("restore", "latest", "--target", target)
    assert tree_digest(os.path.join(target, src.lstrip("/"))) == tree_digest(src)
    assert node.account_usage(dev.account)["used_bytes"] == usage["used_bytes"]
    r = node.admin("GET", f"/audit?account={dev.account}")
    actions = [a["action"] for a in r.json()["items"]]
    assert "device.delete" in actions and "job.cancel" in actions, actions


def test_partner_isolation_of_jobs(fresh_node):
    node = fresh_node(PURGE_CONFIG)
    pa, key_a = node.new_partner("a")
    pb, key_b = node.new_partner("b")
    dev_a = node.new_device(account=node.new_account(key=key_a), key=key_a)
    dev_b = node.new_device(account=node.new_account(key=key_b), key=key_b)

    # B cannot delete A's device; nothing changes.
    r = node.admin("DELETE", f"/accounts/{dev_a.account}/devices/{dev_a.id}", key=key_b)
    assert r.status == 404, r
    assert dev_a.request("GET", "/data/").status == 200
    # A partner may not shorten the grace period; the operator may.
    r = node.admin("DELETE", f"/accounts/{dev_a.account}/devices/{dev_a.id}?grace=0s", key=key_a)
    assert r.status == 403, r
    job_a = delete_device(node, dev_a, grace="30d", key=key_a)

    for method, path in (("GET", f"/jobs/{job_a['id']}"), ("POST", f"/jobs/{job_a['id']}/cancel")):
        r = node.admin(method, path, key=key_b)
        assert r.status == 404, r
    r = node.admin("GET", "/jobs", key=key_b)
    assert r.status == 200 and r.json()["items"] == [], r
    r = node.admin("GET", f"/jobs?account={dev_a.account}", key=key_b)
    assert r.status == 404, r
    r = node.admin("GET", "/jobs", key=key_a)
    assert [j["id"] for j in r.json()["items"]] == [job_a["id"]], r
    r = node.admin("GET", "/jobs?state=scheduled")
    assert job_a["id"] in [j["id"] for j in r.json()["items"]], r
    # B's own device is untouched by all this.
    assert dev_b.request("GET", "/data/").status == 200
    # Still scheduled: B's attempt to cancel changed nothing.
    assert node.admin("GET", f"/jobs/{job_a['id']}").json()["state"] == "scheduled"


@pytest.mark.parametrize("bad", ["grace=", "grace=-1s", "grace=7", "grace=1y", "other=1"])
def test_delete_rejects_bad_query(node, bad):
    dev = node.new_device()
    r = node.admin("DELETE", f"/accounts/{dev.account}/devices/{dev.id}?{bad}")
    assert r.status == 400, r
    assert dev.request("GET", "/data/").status == 200


def test_jobs_negative(node):
    r = node.admin("GET", "/jobs/" + "0" * 32)
    assert r.status == 404, r
    r = node.admin("GET", "/jobs/xyz")
    assert r.status == 400, r
    r = node.admin("GET", "/jobs?state=sleeping")
    assert r.status == 400 and "state" in r.body.decode(), r
    r = node.admin("POST", "/jobs/" + "0" * 32 + "/cancel", {"now": True})
    assert r.status == 400, r
    dev = node.new_device()
    r = node.admin("DELETE", f"/accounts/{dev.account}/devices/{dev.id}", raw_body="{}")
    assert r.status == 400, r


def test_purge_survives_kill9(fresh_node):
    """kill -9 at seeded random moments while a purge (small batches) and its compaction run:
    after each restart the job goes on, and in the end it is done, nothing of another device
    is lost, usage equals a recomputation (fsck) and extent accounting is exact."""
    config = PURGE_CONFIG.replace("job_poll_ms = 50", "job_poll_ms = 20") + "purge_batch_objects = 3\n"
    node = fresh_node(config)
    account = node.new_account()
    victim = node.new_device(account=account, name="victim", append_only=False)
    keeper = node.new_device(account=account, name="keeper")
    rng = random.Random(20261126)
    keep = cv.put_objects(keeper, 20, 40_000, seed=11)
    # Many small objects (many batches) and some large ones (extents for compaction).
    victim_small = cv.put_objects(victim, 400, 2_000, seed=12)
    victim_large = cv.put_objects(victim, 12, 1 << 20, seed=13)
    total = len(victim_small) + len(victim_large)
    job = delete_device(node, victim)

    kills = 0
    for _ in range(12):
        time.sleep(rng.uniform(0.0, 0.25))
        node.kill()
        kills += 1
        node.start()
        state = node.admin("GET", f"/jobs/{job['id']}").json()
        assert state["state"] in ("running", "scheduled", "done"), state
        if state["state"] == "done":
            break
    done = cv.wait_job(node, job["id"])
    assert kills >= 10 or done["state"] == "done"
    assert done["result"]["objects_removed"] == total, done
    cv.assert_reads_back(keeper, keep)
    fsck = node.fsck()
    assert fsck["clean"], fsck
    usage = node.account_usage(account)
    assert usage["used_bytes"] == sum(len(b) for b in keep.values()), usage


def test_purge_on_full_disk(fresh_node, tmp_root):
    """The data disks' file system is full (a size-limited tmpfs made by the test): deleting a
    device still completes and its space comes back."""
    with cv.small_tmpfs(os.path.join(tmp_root, "full-fs"), "96m") as mnt:
        disks = [os.path.join(mnt, f"d{i}") for i in range(6)]
        config = PURGE_CONFIG + "[storage]\ndisks = [" + ", ".join(f'"{d}"' for d in disks) + "]\n"
        config = config.replace("[storage]\nextent_bytes = 4194304\n", "", 1)
        config = config.replace("[storage]\n", "[storage]\nextent_bytes = 4194304\n", 1)
        node = fresh_node(config)
        account = node.new_account()
        victim = node.new_device(account=account, name="victim", append_only=False)
        keeper = node.new_device(account=account, name="keeper")
        keep = cv.put_objects(keeper, 3, 100_000, seed=21)
        # Fill with the victim's data until the node says the disks are full.
        rng = random.Random(22)
        stored = 0
        for _ in range(200):
            body = rng.randbytes(1 << 20)
            resp = victim.put("data", body)
            if resp.status == 507:
                break
            assert resp.status == 200, resp
            stored += len(body)
        else:
            pytest.fail("the 96 MiB file system never filled up")
        # The 507 says which data disks are full, by the positions `cvctl disk list` shows, and
        # what an operator does about it; no paths of the node.
        assert resp.error_code() == "no_space", resp
        message = resp.json()["error"]["message"]
        named = re.match(r"data disks? ([0-9, and]+) of this node (is|are) full", message)
        assert named, message
        positions = {int(p) for p in re.findall(r"[0-9]+", named.group(1))}
        listed = {d["position"]: d["path"] for d in node.admin("GET", "/disks").json()["items"]}
        assert positions and positions <= set(listed), (message, listed)
        assert all(shutil.disk_usage(listed[p]).free < 8 << 20 for p in positions), message
        assert "cvctl disk add" in message and mnt not in message, message
        # Whatever is left goes to a filler file: not a byte free.
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        free_before = shutil.disk_usage(mnt).free
        assert free_before < 1 << 20, free_before

        job = delete_device(node, victim)
        done = cv.wait_job(node, job["id"], timeout=120)
        assert done["result"]["objects_removed"] > 0
        free_after = shutil.disk_usage(mnt).free
        assert free_after - free_before >= 0.9 * stored, (free_before, free_after, stored)
        cv.assert_reads_back(keeper, keep)
        os.unlink(filler)
        # And the node takes uploads again.
        assert keeper.put("data", b"after the purge").status == 200
        assert node.fsck()["clean"]
        node.stop()


def test_account_delete_purges_every_device_then_the_account(fresh_node):
    node = fresh_node(PURGE_CONFIG)
    pid, pkey = node.new_partner("p")
    account = node.new_account(key=pkey)
    devs = [node.new_device(account=account, name=f"d{i}", key=pkey, append_only=False)
            for i in range(2)]
    other = node.new_device(name="elsewhere")
    keep = cv.put_objects(other, 3, 50_000, seed=31)
    total = 0
    for i, d in enumerate(devs):
        total += sum(len(b) for b in cv.put_objects(d, 5, 100_000, seed=40 + i).values())
    r = node.admin("POST", f"/accounts/{account}/addons", {"bytes": 1 << 30})
    assert r.status == 201, r

    # Operator only; a partner's attempt changes nothing.
    r = node.admin("DELETE", f"/accounts/{account}", key=pkey)
    assert r.status == 403, r
    # With a grace period: every device closed at once, no new device, cancel reopens all.
    r = node.admin("DELETE", f"/accounts/{account}?grace=1h")
    assert r.status == 202 and r.json()["kind"] == "account.purge", r
    waiting = r.json()
    for d in devs:
        assert d.request("GET", "/data/").status == 410
    r = node.admin("POST", f"/accounts/{account}/devices", {"name": "new"})
    assert r.status == 409 and r.error_code() == "account_deleted", r
    assert node.admin("DELETE", f"/accounts/{account}").status == 409
    assert node.admin("POST", f"/jobs/{waiting['id']}/cancel").status == 200
    for d in devs:
        assert d.request("GET", "/data/").status == 200

    r = node.admin("DELETE", f"/accounts/{account}?grace=0s")
    assert r.status == 202, r
    done = cv.wait_job(node, r.json()["id"])
    assert done["result"]["devices_removed"] == 2, done
    assert done["result"]["objects_removed"] == 10, done
    assert done["result"]["bytes_removed"] == total, done
    assert node.admin("GET", f"/accounts/{account}").status == 404
    for d in devs:
        assert d.request("GET", "/data/").status == 401
    cv.assert_reads_back(other, keep)
    assert node.fsck()["clean"], node.fsck()
    r = node.admin("GET", "/audit")
    actions = [a["action"] for a in r.json()["items"]]
    assert "account.delete" in actions and "account.purge" in actions, actions


DAY = 86400


def test_a_device_being_deleted_frees_its_slot(fresh_node):
    """A partner replacing a decommissioned server adds the new one at once: a device being
    deleted does not count against the device limit and is not "stale"; cancelling its deletion
    once the slot is taken is 409 device_limit and changes nothing."""
    node = fresh_node(PURGE_CONFIG, fake_clock=True)
    _, pkey = node.new_partner("replaces-a-server")
    account = node.new_account(key=pkey, device_limit=1)
    old = node.new_device(account=account, name="old-server", key=pkey)
    job = delete_device(node, old, grace="7d", key=pkey)
    r = old.request("GET", "/config")  # closed to its agent at once, as before
    assert r.status == 410 and r.error_code() == "device_deleted", r

    r = node.admin("POST", f"/accounts/{account}/devices", {"name": "new-server", "kind": "server"},
                   key=pkey)
    assert r.status == 201, r
    new_id = r.json()["id"]
    r = node.admin("POST", f"/accounts/{account}/devices", {"name": "third"}, key=pkey)
    assert r.status == 409 and r.error_code() == "device_limit", r  # the new one took the slot

    # Neither has backed up for 4 days; only the one in use is "not backing up".
    node.advance(4 * DAY)
    r = node.admin("GET", "/devices?stale_for=72h", key=pkey)
    assert r.status == 200, r
    assert [d["id"] for d in r.json()["items"]] == [new_id], r
    r = node.admin("GET", "/devices?stale_for=72h")
    assert old.id not in [d["id"] for d in r.json()["items"]], r
    # The account's own listing still shows the deleted device, with its job.
    r = node.admin("GET", f"/accounts/{account}/devices", key=pkey)
    assert {d["id"]: d["purge_job"] for d in r.json()["items"]} == {old.id: job["id"], new_id: None}, r

    # Cancelling would reopen a second device: refused; job, device and audit log unchanged.
    audit = node.admin("GET", f"/audit?account={account}", key=pkey).json()["items"]
    r = node.admin("POST", f"/jobs/{job['id']}/cancel", key=pkey)
    assert r.status == 409 and r.error_code() == "device_limit", r
    assert node.admin("GET", f"/jobs/{job['id']}", key=pkey).json()["state"] == "scheduled"
    d = node.admin("GET", f"/accounts/{account}/devices/{old.id}", key=pkey).json()
    assert d["purge_job"] == job["id"] and d["deleted_at"] is not None, d
    assert old.request("GET", "/config").status == 410
    assert node.admin("GET", f"/audit?account={account}", key=pkey).json()["items"] == audit

    # With room for it, the same cancel brings the device back.
    assert node.admin("PATCH", f"/accounts/{account}", {"device_limit": 2}, key=pkey).status == 200
    r = node.admin("POST", f"/jobs/{job['id']}/cancel", key=pkey)
    assert r.status == 200 and r.json()["state"] == "cancelled", r
    assert old.request("GET", "/data/").status == 200


def test_purged_device_answers_410_while_its_account_exists(fresh_node, workdir):
    """After the purge, the old agent's own credentials (Basic or Bearer) get 410
    device_deleted, not 401, which reads as a wrong password; any other token on that device's
    id is still 401, as for any device. Once the account itself is purged, the node forgets."""
    node = fresh_node(PURGE_CONFIG)
    account = node.new_account()
    dev = node.new_device(account=account, name="decommissioned", append_only=False)
    keeper = node.new_device(account=account, name="keeper")
    src = os.path.join(workdir, "src")
    make_tree(src, 1, seed=15)
    restic = Restic(dev, workdir)
    restic.run("init")
    restic.backup(src)
    cv.wait_job(node, delete_device(node, dev, grace="0s")["id"])
    assert node.admin("GET", f"/accounts/{account}/devices/{dev.id}").status == 404

    bearer = {"Authorization": f"Bearer {dev.token}"}
    for headers in (None, bearer):
        for method, path in (("GET", "/config"), ("GET", "/data/"), ("POST", "/data/" + "0" * 64)):
            r = dev.request(method, path, b"x" if method == "POST" else None, headers=headers)
            assert r.status == 410 and r.error_code() == "device_deleted", (headers, method, path, r)
    p = restic.run("snapshots", check=False)
    assert p.returncode != 0 and "410" in p.stdout + p.stderr, p
    # Guessing: any other token (another device's included) on the deleted id is 401.
    wrong = "0" * 64
    for auth in (dev.basic(token=wrong), f"Bearer {wrong}", dev.basic(token=keeper.token)):
        r = dev.request("GET", "/config", headers={"Authorization": auth})
        assert r.status == 401 and r.error_code() == "unauthenticated", (auth, r)
    # The old credentials on another device's path say nothing about that device.
    for auth in (dev.basic(), f"Bearer {dev.token}"):
        r = node.request("GET", f"/{keeper.id}/config", headers={"Authorization": auth})
        assert r.status == 404, r
    assert keeper.request("GET", "/data/").status == 200
    assert node.fsck()["clean"], node.fsck()

    r = node.admin("DELETE", f"/accounts/{account}?grace=0s")
    assert r.status == 202, r
    cv.wait_job(node, r.json()["id"])
    for auth in (dev.basic(), f"Bearer {dev.token}"):
        r = dev.request("GET", "/config", headers={"Authorization": auth})
        assert r.status == 401 and r.error_code() == "unauthenticated", r
    assert node.fsck()["clean"], node.fsck()


def test_partner_cannot_cancel_the_operators_account_deletion(fresh_node):
    """Issue 15: the account's partner could cancel the operator's account.purge (200, every
    device reopened). A key may cancel only the kinds of job its role may create: a partner
    key device.purge (and courier) jobs of its own accounts, never an account.purge. The
    refusal is 403 operator_only, recorded in the audit log, and changes nothing else."""
    node = fresh_node(PURGE_CONFIG)
    pid, pkey = node.new_partner("p")
    account = node.new_account(key=pkey)
    devs = [node.new_device(account=account, name=f"d{i}", key=pkey, append_only=False)
            for i in range(2)]
    r = node.admin("DELETE", f"/accounts/{account}?grace=1h")
    assert r.status == 202, r
    job = r.json()
    for d in devs:
        assert d.request("GET", "/data/").status == 410

    # The partner sees the deletion of its account (GET, the list) but cannot cancel it, nor
    # delete its "images".
    assert node.admin("GET", f"/jobs/{job['id']}", key=pkey).status == 200
    r = node.admin("GET", f"/jobs?account={account}", key=pkey)
    assert [j["id"] for j in r.json()["items"]] == [job["id"]], r
    r = node.admin("POST", f"/jobs/{job['id']}/cancel", key=pkey)
    assert r.status == 403 and r.error_code() == "operator_only", r
    r = node.admin("DELETE", f"/jobs/{job['id']}/images", key=pkey)
    assert r.status == 403 and r.error_code() == "operator_only", r

    # Nothing changed: the job is still scheduled, every device still closed.
    after = node.admin("GET", f"/jobs/{job['id']}").json()
    assert after["state"] == "scheduled" and after["finished_at"] is None, after
    for d in devs:
        assert d.request("GET", "/data/").status == 410
        r = node.admin("GET", f"/accounts/{account}/devices/{d.id}")
        assert r.json()["purge_job"] == job["id"] and r.json()["deleted_at"] is not None, r

    # The refused attempts are in the audit log, the partner's own view included.
    r = node.admin("GET", f"/audit?account={account}", key=pkey)
    assert r.status == 200, r
    items = r.json()["items"]
    refused = [a for a in items if a["action"] == "job.cancel.refused"]
    assert len(refused) == 1, items
    assert refused[0]["role"] == f"partner:{pid}" and refused[0]["target"] == f"job/{job['id']}"
    assert refused[0]["before"]["state"] == "scheduled", refused[0]
    assert refused[0]["after"]["refused"]["code"] == "operator_only", refused[0]
    assert [a["action"] for a in items].count("courier.images_delete.refused") == 1, items
    assert "job.cancel" not in [a["action"] for a in items]

    # What a partner may create, it may cancel: a device purge of another of its accounts.
    other = node.new_device(account=node.new_account(key=pkey), key=pkey)
    mine = delete_device(node, other, grace="7d", key=pkey)
    r = node.admin("POST", f"/jobs/{mine['id']}/cancel", key=pkey)
    assert r.status == 200 and r.json()["state"] == "cancelled", r
    assert other.request("GET", "/data/").status == 200
    # And the operator may cancel the account's deletion.
    assert node.admin("POST", f"/jobs/{job['id']}/cancel").status == 200
    for d in devs:
        assert d.request("GET", "/data/").status == 200
