"""A stock restic (Debian restic 0.14) as the agent: init, backup, check --read-data, restore
with a byte-exact comparison, an incremental backup, forget --prune, and prune refused cleanly
on an append-only device.

CV_RESTIC_MIB sets the size of the generated tree of the default round trip (default 60);
the test marked slow backs up the issue's 200 MiB."""

import hashlib
import json
import os
import random
import shutil
import subprocess

import pytest

RESTIC = "/usr/bin/restic"
TIMEOUT = 600  # seconds for any single restic command


def make_tree(root, total_mib, seed):
    """Many small files plus a few large ones, about total_mib MiB in all. Deterministic."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    small_budget = total_mib * 1024 * 1024 // 4
    large_budget = total_mib * 1024 * 1024 - small_budget
    written, i = 0, 0
    while written < small_budget:
        d = os.path.join(root, f"dir{i % 37:02d}", f"sub{i % 5}")
        os.makedirs(d, exist_ok=True)
        n = rng.randint(0, 24 * 1024)
        with open(os.path.join(d, f"file{i:05d}.bin"), "wb") as f:
            f.write(rng.randbytes(n))
        written += n
        i += 1
    for j in range(4):
        with open(os.path.join(root, f"large{j}.bin"), "wb") as f:
            left = large_budget // 4
            while left > 0:
                n = min(left, 4 * 1024 * 1024)
                f.write(rng.randbytes(n))
                left -= n
    os.symlink("large0.bin", os.path.join(root, "link"))
    os.makedirs(os.path.join(root, "empty-dir"))
    open(os.path.join(root, "empty-file"), "w").close()


def tree_digest(root):
    """Relative path -> sha256 (files) or link target (symlinks) or 'dir'."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            out[os.path.relpath(p, root)] = "link:" + os.readlink(p) if os.path.islink(p) else "dir"
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            if os.path.islink(p):
                out[os.path.relpath(p, root)] = "link:" + os.readlink(p)
            else:
                with open(p, "rb") as f:
                    out[os.path.relpath(p, root)] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


class Restic:
    def __init__(self, device, workdir):
        self.url = device.restic_url()
        self.ca = device.node.ca
        self.env = dict(os.environ, RESTIC_PASSWORD="integration-test-password",
                        RESTIC_CACHE_DIR=os.path.join(workdir, "cache"), HOME=workdir)

    def run(self, *args, check=True):
        p = subprocess.run([RESTIC, "-r", self.url, "--cacert", self.ca, *args],
                           env=self.env, capture_output=True, text=True, timeout=TIMEOUT)
        if check:
            assert p.returncode == 0, f"restic {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p

    def backup(self, path):
        p = self.run("backup", "--json", path)
        summary = [json.loads(l) for l in p.stdout.splitlines() if '"message_type":"summary"' in l][-1]
        return summary

    def snapshots(self):
        return json.loads(self.run("snapshots", "--json").stdout)


def round_trip(node, workdir, total_mib):
    dev = node.new_device(append_only=False)
    src = os.path.join(workdir, "src")
    make_tree(src, total_mib, seed=total_mib)
    restic = Restic(dev, workdir)

    restic.run("init")
    first = restic.backup(src)
    assert first["data_added"] >= total_mib * 1024 * 1024 * 0.95
    assert dev.usage()["last_backup_ns"] > 0
    restic.run("check", "--read-data")

    target = os.path.join(workdir, "restore1")
    restic.run("restore", "latest", "--target", target)
    assert tree_digest(os.path.join(target, src.lstrip("/"))) == tree_digest(src)

    # Incremental: change a little, back up again; only the change is uploaded.
    with open(os.path.join(src, "large1.bin"), "r+b") as f:
        f.seek(1000)
        f.write(os.urandom(4096))
    with open(os.path.join(src, "new-file.bin"), "wb") as f:
        f.write(os.urandom(300_000))
    os.remove(os.path.join(src, "large3.bin"))
    second = restic.backup(src)
    assert second["data_added"] < 16 * 1024 * 1024, second
    assert len(restic.snapshots()) == 2

    # Prune on a device that allows deletes.
    before = dev.usage()["bytes"]
    restic.run("forget", "--keep-last", "1", "--prune")
    assert len(restic.snapshots()) == 1
    assert dev.usage()["bytes"] < before  # large3's data went away
    restic.run("check", "--read-data")

    target = os.path.join(workdir, "restore2")
    restic.run("restore", "latest", "--target", target)
    assert tree_digest(os.path.join(target, src.lstrip("/"))) == tree_digest(src)


def test_restic_round_trip(node, workdir):
    round_trip(node, workdir, int(os.environ.get("CV_RESTIC_MIB", "60")))


@pytest.mark.slow
def test_restic_round_trip_200mib(node, workdir):
    round_trip(node, workdir, 200)


def test_restic_prune_refused_on_append_only_device(node, workdir):
    dev = node.new_device(append_only=True)
    src = os.path.join(workdir, "src")
    make_tree(src, 8, seed=8)
    restic = Restic(dev, workdir)
    restic.run("init")
    restic.backup(src)
    with open(os.path.join(src, "more.bin"), "wb") as f:
        f.write(os.urandom(100_000))
    restic.backup(src)
    snaps = restic.snapshots()
    assert len(snaps) == 2
    usage = dev.usage()

    p = restic.run("forget", "--keep-last", "1", "--prune", check=False)
    assert p.returncode != 0, p.stdout
    assert "403" in p.stdout + p.stderr or "Forbidden" in p.stdout + p.stderr, p.stderr

    # Nothing was deleted but the lock restic took and released; the repository is intact.
    assert [s["id"] for s in restic.snapshots()] == [s["id"] for s in snaps]
    assert dev.usage()["objects"] == usage["objects"] and dev.usage()["bytes"] == usage["bytes"]
    assert dev.listing("locks") == []
    restic.run("check")
    target = os.path.join(workdir, "restore")
    restic.run("restore", "latest", "--target", target)
    assert tree_digest(os.path.join(target, src.lstrip("/"))) == tree_digest(src)

    # What restic saw: a JSON error that says why.
    snap_name = dev.listing("snapshots")[0]["name"]
    r = dev.request("DELETE", f"/snapshots/{snap_name}")
    assert r.status == 403 and r.error_code() == "append_only"
