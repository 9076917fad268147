"""Courier recovery (issue 6) end to end: a real restic backs up a generated tree through
chunkvaultd; `cvctl courier create` makes the drive image(s); fsck.exfat (exfatprogs) checks
them; they are attached with `losetup -o OFFSET --sizelimit SIZE` (the offset read with
`sfdisk -J`) and mounted with mount.exfat-fuse; `sha256sum -c`, `restic check --read-data`
and `restic restore` run on the mounted drive; `cvctl courier verify` checks them offline.

The mount steps skip (not fail) where the machine has no loop devices or FUSE, saying why;
everything before them still runs."""

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import cv
from cv import cvctl
from test_restic import RESTIC, Restic, make_tree, tree_digest

PASSWORD = "integration-test-password"


# ---- helpers ---------------------------------------------------------------------------------

def backed_up(node, workdir, mib, seed, pack_mib=None, **device):
    """A device whose repository holds one restic backup of a generated tree: (dev, src).
    `device`: new_device's account and key (a partner's account); `pack_mib`: restic's pack
    size (its default, 16 MiB, makes a small tree one data object)."""
    dev = node.new_device(append_only=False, **device)
    src = os.path.join(workdir, "src")
    make_tree(src, mib, seed=seed)
    restic = Restic(dev, workdir)
    if pack_mib:
        restic.env["RESTIC_PACK_SIZE"] = str(pack_mib)
    restic.run("init")
    restic.backup(src)
    return dev, src


def save_pubkey(node, path):
    p = cvctl("courier", "pubkey", root=node.root)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("-----BEGIN PUBLIC KEY-----"), p.stdout
    with open(path, "w") as f:
        f.write(p.stdout)
    return path


def create(node, dev, out, *extra):
    p = cvctl("courier", "create", "--account", dev.account, "--device", dev.id, "--out", out,
              *extra, root=node.root, timeout=900)
    assert p.returncode == 0, f"cvctl courier create failed ({p.returncode}):\n{p.stdout}\n{p.stderr}\n{node.log()[-4000:]}"
    return p


def verify(image, pubkey):
    return cvctl("courier", "verify", image, "--pubkey", pubkey)


def partition(image):
    """(byte offset, byte size) of the image's one partition, as sfdisk -J reads it."""
    out = subprocess.run(["sfdisk", "-J", image], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    table = json.loads(out.stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    parts = table["partitions"]
    assert len(parts) == 1, parts
    assert table["label"] == "gpt", table
    return parts[0]["start"] * sector, parts[0]["size"] * sector


def fsck_clean(image, workdir):
    """fsck.exfat -n on the partition (a copy of its bytes: works without loop devices)."""
    off, size = partition(image)
    part = os.path.join(workdir, os.path.basename(image) + ".part")
    with open(image, "rb") as src, open(part, "wb") as dst:
        src.seek(off)
        left = size
        while left > 0:
            chunk = src.read(min(left, 4 << 20))
            assert chunk, "image shorter than its partition"
            dst.write(chunk)
            left -= len(chunk)
    r = subprocess.run(["fsck.exfat", "-n", part], capture_output=True, text=True, timeout=300)
    os.unlink(part)
    assert r.returncode == 0, f"fsck.exfat -n {image}:\n{r.stdout}\n{r.stderr}"


def mount_unavailable():
    """Why the mount steps cannot run here, or None."""
    if os.geteuid() != 0:
        return "mounting needs root"
    if not shutil.which("mount.exfat-fuse"):
        return "mount.exfat-fuse (exfat-fuse) is not installed"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices (/dev/loop-control missing)"
    return None


@contextlib.contextmanager
def mounted(image, where):
    """The image's partition attached read-only through a loop device at its sfdisk offset
    and mounted with mount.exfat-fuse; skips the test (the remaining steps) if that fails."""
    why = mount_unavailable()
    if why:
        pytest.skip("mount steps skipped: " + why)
    off, size = partition(image)
    r = subprocess.run(["losetup", "-f", "--show", "-r", "-o", str(off), "--sizelimit", str(size),
                        image], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        pytest.skip("mount steps skipped: losetup failed: " + r.stderr.strip())
    loop = r.stdout.strip()
    os.makedirs(where, exist_ok=True)
    try:
        m = subprocess.run(["mount.exfat-fuse", "-o", "ro", loop, where], capture_output=True,
                           text=True, timeout=60)
        if m.returncode != 0:
            pytest.skip("mount steps skipped: mount.exfat-fuse failed: " + m.stderr.strip())
        try:
            yield where
        finally:
            for _ in range(20):
                if subprocess.run(["umount", where], capture_output=True, timeout=60).returncode == 0:
                    break
                time.sleep(0.5)
            else:
                subprocess.run(["umount", "-l", where], capture_output=True, timeout=60)
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True, timeout=60)


def restic_local(repo, *args, workdir):
    env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, HOME=workdir,
               RESTIC_CACHE_DIR=os.path.join(workdir, "local-cache"))
    p = subprocess.run([RESTIC, "-r", repo, "--no-lock", *args], env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, f"restic {' '.join(args)} on {repo} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


def assert_restores(repo, src, workdir, name):
    restic_local(repo, "check", "--read-data", workdir=workdir)
    target = os.path.join(workdir, name)
    restic_local(repo, "restore", "latest", "--target", target, workdir=workdir)
    assert tree_digest(os.path.join(target, src.lstrip("/"))) == tree_digest(src)
    shutil.rmtree(target)


def job_of(node, dev):
    r = node.admin("GET", f"/jobs?account={dev.account}&kind=courier")
    assert r.status == 200, r
    items = r.json()["items"]
    assert items, "no courier job"
    return items[-1]


def wait_job(node, job_id, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = node.admin("GET", f"/jobs/{job_id}").json()
        if j["state"] in ("done", "failed", "cancelled"):
            return j
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


# ---- tests -----------------------------------------------------------------------------------

def test_image_restores_after_fsck_mount_and_checks(fresh_node, tmp_root):
    """The whole path: backup -> image -> fsck clean -> verify -> mount -> sha256sum -c ->
    restic check --read-data -> restore byte for byte. Also: Range downloads of the image."""
    node = fresh_node()
    work = tempfile.mkdtemp(prefix="courier-", dir=tmp_root)
    dev, src = backed_up(node, work, 12, seed=61)
    key = save_pubkey(node, os.path.join(work, "courier.pub"))
    image = os.path.join(work, "drive.img")
    create(node, dev, image)

    job = job_of(node, dev)
    assert job["state"] == "done", job
    [img] = job["result"]["images"]
    assert img["bytes"] == os.path.getsize(image)
    assert job["progress"]["bytes_written"] == job["progress"]["bytes_total"]
    # Range: a resumable download.
    r = node.request("GET", f"/admin/v1/jobs/{job['id']}/images/1", headers={
        "Authorization": f"Bearer {node.admin_key}", "Range": "bytes=1000-1999"}, which="admin")
    assert r.status == 206 and r.header("Content-Range") == f"bytes 1000-1999/{img['bytes']}"
    with open(image, "rb") as f:
        f.seek(1000)
        assert r.body == f.read(1000)
    r = node.request("GET", f"/admin/v1/jobs/{job['id']}/images/1", headers={
        "Authorization": f"Bearer {node.admin_key}", "Range": f"bytes={img['bytes']}-"},
        which="admin")
    assert r.status == 416, r
    assert node.admin("GET", f"/jobs/{job['id']}/images/2").status == 404
    # The audit log has the request.
    audit = node.admin("GET", f"/audit?account={dev.account}").json()["items"]
    assert any(a["action"] == "device.courier" for a in audit), audit

    fsck_clean(image, work)
    v = verify(image, key)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "clean" in v.stdout

    # Straight onto a block device (a loop device standing in for a USB drive).
    if not mount_unavailable():
        usb = os.path.join(work, "usb.bin")
        with open(usb, "wb") as f:
            f.truncate(img["bytes"])
        loop = subprocess.run(["losetup", "-f", "--show", usb], capture_output=True, text=True,
                              timeout=60)
        if loop.returncode == 0:
            dev_path = loop.stdout.strip()
            try:
                p = create(node, dev, dev_path)
                assert dev_path in p.stdout
                v = verify(dev_path, key)
                assert v.returncode == 0, v.stdout + v.stderr
            finally:
                subprocess.run(["losetup", "-d", dev_path], capture_output=True, timeout=60)

    with mounted(image, os.path.join(work, "mnt")) as mnt:
        names = sorted(os.listdir(mnt))
        assert names == ["README.txt", "SHA256SUMS", "SHA256SUMS.sig", "repo"], names
        assert sorted(os.listdir(os.path.join(mnt, "repo"))) == [
            "config", "data", "index", "keys", "locks", "snapshots"]
        assert os.listdir(os.path.join(mnt, "repo", "locks")) == []
        readme = open(os.path.join(mnt, "README.txt")).read()
        assert dev.id in readme and "Drive 1 of 1" in readme and "--no-lock" in readme
        s = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=mnt,
                           capture_output=True, text=True, timeout=600)
        assert s.returncode == 0, s.stdout + s.stderr
        assert_restores(os.path.join(mnt, "repo"), src, work, "restored")


def test_split_over_drives_each_clean_union_restores(fresh_node, tmp_root):
    node = fresh_node()
    work = tempfile.mkdtemp(prefix="courier-split-", dir=tmp_root)
    dev, src = backed_up(node, work, 40, seed=62)
    key = save_pubkey(node, os.path.join(work, "courier.pub"))
    out = os.path.join(work, "drive")
    # restic 0.14 packs reach 16 MiB plus one chunk (up to 8 MiB), and each drive also holds
    # the common files and the file system: 32 MiB drives fit any pack, and 40 MiB of data
    # still needs at least two of them. (24 MiB failed once: a 22.97 MB pack did not fit.)
    drive = 32 << 20
    create(node, dev, out, "--drive-size", str(drive))
    job = job_of(node, dev)
    n = job["result"]["drives"]
    assert n >= 2, job["result"]
    images = [f"{out}-{i}-of-{n}" for i in range(1, n + 1)]
    for img in images:
        assert os.path.getsize(img) == drive
        fsck_clean(img, work)
        v = verify(img, key)
        assert v.returncode == 0, v.stdout + v.stderr

    combined = os.path.join(work, "combined")
    for i, img in enumerate(images, start=1):
        with mounted(img, os.path.join(work, f"mnt{i}")) as mnt:
            assert f"Drive {i} of {n}" in open(os.path.join(mnt, "README.txt")).read()
            s = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=mnt,
                               capture_output=True, text=True, timeout=600)
            assert s.returncode == 0, s.stdout + s.stderr
            shutil.copytree(os.path.join(mnt, "repo"), os.path.join(combined, "repo"),
                            dirs_exist_ok=True)
    assert_restores(os.path.join(combined, "repo"), src, work, "restored")


def test_degraded_store_still_gives_a_complete_image(fresh_node, tmp_root):
    node = fresh_node()
    work = tempfile.mkdtemp(prefix="courier-degraded-", dir=tmp_root)
    dev, src = backed_up(node, work, 12, seed=63)
    key = save_pubkey(node, os.path.join(work, "courier.pub"))
    disk = os.path.join(node.root, "disks", "d2")
    os.rename(disk, disk + ".gone")
    shutil.rmtree(disk + ".gone")
    image = os.path.join(work, "drive.img")
    create(node, dev, image)
    fsck_clean(image, work)
    v = verify(image, key)
    assert v.returncode == 0, v.stdout + v.stderr
    with mounted(image, os.path.join(work, "mnt")) as mnt:
        assert_restores(os.path.join(mnt, "repo"), src, work, "restored")


def test_tampered_file_and_tampered_manifest_are_named(fresh_node, tmp_root):
    node = fresh_node()
    work = tempfile.mkdtemp(prefix="courier-tamper-", dir=tmp_root)
    dev, _ = backed_up(node, work, 4, seed=64)
    key = save_pubkey(node, os.path.join(work, "courier.pub"))
    image = os.path.join(work, "drive.img")
    create(node, dev, image)
    assert verify(image, key).returncode == 0
    p = cvctl("--json", "courier", "verify", image, "--pubkey", key)
    assert p.returncode == 0 and json.loads(p.stdout)["clean"] is True
    image2 = os.path.join(work, "drive2.img")
    shutil.copy(image, image2)
    clean = os.path.join(work, "clean.img")
    shutil.copy(image, clean)

    # One byte inside a pack file: its bytes found in the image by content.
    pack = dev.listing("data")[0]["name"]
    body = dev.request("GET", f"/data/{pack}").body
    with open(image, "r+b") as f:
        data = f.read()
        at = data.find(body[:4096])
        assert at > 0
        f.seek(at + 100)
        f.write(bytes([data[at + 100] ^ 0x01]))
    v = verify(image, key)
    assert v.returncode == 4, v.stdout + v.stderr
    first = v.stderr.splitlines()[0]
    assert f"repo/data/{pack[:2]}/{pack}: SHA-256 mismatch" in first, v.stderr
    assert "signature" not in v.stderr

    # Change SHA256SUMS (one hex digit of README.txt's line): the signature fails.
    with open(image2, "r+b") as f:
        data = f.read()
        readme_hash_line = data.find(b"  README.txt\n")
        assert readme_hash_line > 64
        pos = readme_hash_line - 64
        f.seek(pos)
        f.write(b"0" if data[pos:pos + 1] != b"0" else b"1")
    v = verify(image2, key)
    assert v.returncode == 4, v.stdout + v.stderr
    assert "SHA256SUMS.sig: the signature does not match" in v.stderr, v.stderr
    # A key that is not the node's: the signature fails too.
    other = subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519"], capture_output=True,
                           text=True, check=True).stdout
    pub = subprocess.run(["openssl", "pkey", "-pubout"], input=other, capture_output=True,
                         text=True, check=True).stdout
    other_key = os.path.join(work, "other.pub")
    open(other_key, "w").write(pub)
    v = verify(clean, other_key)
    assert v.returncode == 4 and "signature" in v.stderr, v.stderr
    assert "SHA-256 mismatch" not in v.stderr


def test_crash_mid_job_restarts_and_result_verifies(fresh_node, tmp_root):
    """A throttled job (2 MiB/s, 24 MiB) is killed with SIGKILL mid-way: after the restart the job
    completes and its image verifies and restores."""
    node = fresh_node("[jobs]\ncourier_mib_per_s = 2\njob_poll_ms = 100\n")
    work = tempfile.mkdtemp(prefix="courier-crash-", dir=tmp_root)
    dev, src = backed_up(node, work, 24, seed=65)
    key = save_pubkey(node, os.path.join(work, "courier.pub"))
    r = node.admin("POST", f"/accounts/{dev.account}/devices/{dev.id}/courier", {})
    assert r.status == 202, r
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        j = node.admin("GET", f"/jobs/{job_id}").json()
        prog = j.get("progress") or {}
        if j["state"] == "running" and prog.get("bytes_written", 0) > (3 << 20):
            break
        assert j["state"] in ("scheduled", "running"), j
        assert time.monotonic() < deadline, j
        time.sleep(0.2)
    node.kill()
    node.start()
    j = wait_job(node, job_id)
    assert j["state"] == "done", j
    [img] = j["result"]["images"]
    image = os.path.join(node.root, "courier", job_id, img["file"])
    assert cv.sha256_hex(open(image, "rb").read()) == img["sha256"]
    fsck_clean(image, work)
    v = verify(image, key)
    assert v.returncode == 0, v.stdout + v.stderr
    with mounted(image, os.path.join(work, "mnt")) as mnt:
        assert_restores(os.path.join(mnt, "repo"), src, work, "restored")


def test_partner_isolation(fresh_node, tmp_root):
    node = fresh_node()
    work = tempfile.mkdtemp(prefix="courier-partners-", dir=tmp_root)
    _, key_a = node.new_partner("a")
    _, key_b = node.new_partner("b")
    acc = node.new_account(key=key_a)
    dev = node.new_device(append_only=False, account=acc, key=key_a)
    restic = Restic(dev, work)
    restic.run("init")
    # Partner B sees nothing of A's device, cannot start a job for it.
    r = node.admin("POST", f"/accounts/{acc}/devices/{dev.id}/courier", {}, key=key_b)
    assert r.status == 404, r
    # A can; B cannot read the job or its image; the operator and A can.
    r = node.admin("POST", f"/accounts/{acc}/devices/{dev.id}/courier", {}, key=key_a)
    assert r.status == 202, r
    job_id = r.json()["id"]
    assert wait_job(node, job_id)["state"] == "done"
    assert node.admin("GET", f"/jobs/{job_id}", key=key_b).status == 404
    assert node.admin("GET", f"/jobs/{job_id}/images/1", key=key_b).status == 404
    assert node.admin("GET", f"/jobs/{job_id}/images/1", key=key_a).status == 200
    # A device of another account of the same partner is not A's device's path.
    other = node.new_account(key=key_a)
    assert node.admin("POST", f"/accounts/{other}/devices/{dev.id}/courier", {},
                      key=key_a).status == 404
    # Bad bodies.
    assert node.admin("POST", f"/accounts/{acc}/devices/{dev.id}/courier",
                      {"drive_bytes": 1000}).status == 400
    assert node.admin("POST", f"/accounts/{acc}/devices/{dev.id}/courier",
                      {"size": 1}).status == 400
    # Any admin key may read the public key.
    assert node.admin("GET", "/courier/pubkey", key=key_b).status == 200


def test_object_deleted_mid_job_fails_loudly_naming_it(fresh_node, tmp_root):
    """The job reads objects by key from its snapshot; one deleted meanwhile (here: by the
    agent, as restic prune would) cannot be copied: the attempt fails with the object's name
    in progress.last_error and the job will start over with a new snapshot (never a short or
    silently incomplete image)."""
    node = fresh_node("[jobs]\ncourier_mib_per_s = 1\njob_poll_ms = 100\n")
    work = tempfile.mkdtemp(prefix="courier-delete-", dir=tmp_root)
    # Several data objects, so that the one deleted is read seconds after the snapshot: the
    # job reads them in path order, at most 1 MiB/s.
    dev, _ = backed_up(node, work, 12, seed=66, pack_mib=4)
    data = sorted(o["name"] for o in dev.listing("data"))
    assert len(data) >= 3, data
    last = data[-1]  # read last (path order)
    r = node.admin("POST", f"/accounts/{dev.account}/devices/{dev.id}/courier", {})
    assert r.status == 202, r
    job_id = r.json()["id"]
    # Once its snapshot is on disk (a job that is merely "running" may not have listed the
    # objects yet, and would then never see the one deleted here); its progress names the
    # snapshot only later, when the first images may be written already.
    snapshot = os.path.join(node.root, "courier", job_id, "snapshot.json")
    cv.wait_for(lambda: os.path.exists(snapshot), timeout=60, what="the job's snapshot")
    assert dev.request("DELETE", f"/data/{last}").status == 200
    deadline = time.monotonic() + 120
    while True:
        j = node.admin("GET", f"/jobs/{job_id}").json()
        err = (j.get("progress") or {}).get("last_error")
        if err:
            break
        assert j["state"] == "running", j
        assert time.monotonic() < deadline, j
        time.sleep(0.2)
    assert f"repo/data/{last[:2]}/{last} was deleted after the job's snapshot" in err, err
    assert not os.path.exists(os.path.join(node.root, "courier", job_id, "snapshot.json"))
    assert not [f for f in os.listdir(os.path.join(node.root, "courier", job_id))
                if f.endswith(".img")]


def start_courier(node, dev, key=None):
    r = node.admin("POST", f"/accounts/{dev.account}/devices/{dev.id}/courier", {}, key=key)
    assert r.status == 202, r
    return r.json()["id"]


def partner_courier_job(node, work, mib, seed):
    """Partners A and B; a courier job started by A for a backed-up device of A's:
    (key_a, key_b, account, dev, job id)."""
    _, key_a = node.new_partner("a")
    _, key_b = node.new_partner("b")
    acc = node.new_account(key=key_a)
    dev, _ = backed_up(node, work, mib, seed, account=acc, key=key_a)
    return key_a, key_b, acc, dev, start_courier(node, dev, key=key_a)


def audit_actions(node, account):
    return [a["action"] for a in node.admin("GET", f"/audit?account={account}").json()["items"]]


def test_cancel_running_job_stops_it_and_removes_its_images(fresh_node, tmp_root):
    """A courier job throttled to 1 MiB/s is cancelled mid-way by its partner: 200, the job
    ends cancelled (audited), its folder (partial image, snapshot) is gone from disk at once and
    stays gone, its image is 404. Another partner cannot cancel it."""
    node = fresh_node("[jobs]\ncourier_mib_per_s = 1\njob_poll_ms = 100\n")
    work = tempfile.mkdtemp(prefix="courier-cancel-", dir=tmp_root)
    key_a, key_b, acc, dev, job_id = partner_courier_job(node, work, 16, seed=67)
    job_dir = os.path.join(node.root, "courier", job_id)
    deadline = time.monotonic() + 60
    while True:
        j = node.admin("GET", f"/jobs/{job_id}", key=key_a).json()
        if j["state"] == "running" and (j.get("progress") or {}).get("bytes_written", 0) > (1 << 20):
            break
        assert j["state"] in ("scheduled", "running"), j
        assert time.monotonic() < deadline, j
        time.sleep(0.1)
    assert any(f.endswith(".img.tmp") for f in os.listdir(job_dir)), os.listdir(job_dir)

    r = node.admin("POST", f"/jobs/{job_id}/cancel", {}, key=key_b)
    assert r.status == 404, r
    assert node.admin("GET", f"/jobs/{job_id}", key=key_a).json()["state"] == "running"

    started = time.monotonic()
    r = node.admin("POST", f"/jobs/{job_id}/cancel", {}, key=key_a)
    assert r.status == 200, r
    assert r.json()["state"] == "cancelled", r.json()
    assert time.monotonic() - started < 5
    assert not os.path.exists(job_dir), os.listdir(job_dir)
    assert node.admin("GET", f"/jobs/{job_id}/images/1", key=key_a).status == 404
    assert node.admin("GET", f"/jobs/{job_id}/images/1").status == 404
    # The writer has stopped and wrote nothing more; the job stays cancelled.
    time.sleep(1.5)
    assert not os.path.exists(job_dir)
    j = node.admin("GET", f"/jobs/{job_id}").json()
    assert j["state"] == "cancelled" and j["result"] is None, j
    assert '"job_error"' not in node.log()
    assert "job.cancel" in audit_actions(node, acc)
    # Cancelled: neither cancellable again nor a source of images to delete.
    assert node.admin("POST", f"/jobs/{job_id}/cancel", {}, key=key_a).status == 409
    r = node.admin("DELETE", f"/jobs/{job_id}/images", key=key_a)
    assert r.status == 409 and r.error_code() == "not_done", r
    # The node still writes courier images afterwards.
    again = start_courier(node, dev, key=key_a)
    assert wait_job(node, again, timeout=120)["state"] == "done"


def test_delete_images_keeps_the_job_and_is_partner_scoped(fresh_node, tmp_root):
    """DELETE /jobs/{j}/images removes a done courier job's image files: another partner gets
    404 and nothing is deleted; the owner gets 200, the files are gone, the image is 404, the
    job and its result stay (images_deleted_at), audited; a second DELETE is 200 and changes
    nothing. A job that is not a done courier job is 409. cvctl courier delete does the same."""
    node = fresh_node()
    work = tempfile.mkdtemp(prefix="courier-delete-images-", dir=tmp_root)
    key_a, key_b, acc, dev, job_id = partner_courier_job(node, work, 2, seed=68)
    assert wait_job(node, job_id)["state"] == "done"
    job_dir = os.path.join(node.root, "courier", job_id)
    image = os.path.join(job_dir, "drive-1-of-1.img")
    assert os.path.exists(image)

    # Isolation: another partner sees no such job and deletes nothing.
    r = node.admin("DELETE", f"/jobs/{job_id}/images", key=key_b)
    assert r.status == 404, r
    assert os.path.exists(image)
    assert node.admin("GET", f"/jobs/{job_id}/images/1", key=key_a).status == 200
    assert node.admin("DELETE", "/jobs/" + "0" * 32 + "/images", key=key_a).status == 404
    assert node.admin("DELETE", f"/jobs/{job_id}/images", raw_body="{}", key=key_a).status == 400
    assert os.path.exists(image)

    r = node.admin("DELETE", f"/jobs/{job_id}/images", key=key_a)
    assert r.status == 200, r
    deleted_at = r.json()["result"]["images_deleted_at"]
    assert deleted_at, r.json()
    assert not os.path.exists(job_dir)
    r = node.admin("GET", f"/jobs/{job_id}/images/1", key=key_a)
    assert r.status == 404 and "deleted" in r.json()["error"]["message"], r
    j = node.admin("GET", f"/jobs/{job_id}", key=key_a).json()
    assert j["state"] == "done" and len(j["result"]["images"]) == 1, j
    assert j["result"]["images_deleted_at"] == deleted_at
    assert audit_actions(node, acc).count("courier.images_delete") == 1
    # Again: 200, the same job, no second audit record.
    r = node.admin("DELETE", f"/jobs/{job_id}/images", key=key_a)
    assert r.status == 200 and r.json()["result"]["images_deleted_at"] == deleted_at, r
    assert audit_actions(node, acc).count("courier.images_delete") == 1

    # Not a courier job: a scheduled device purge of the same partner.
    r = node.admin("DELETE", f"/accounts/{acc}/devices/{dev.id}?grace=30d", key=key_a)
    assert r.status == 202, r
    r = node.admin("DELETE", f"/jobs/{r.json()['id']}/images", key=key_a)
    assert r.status == 409 and r.error_code() == "not_done", r

    # cvctl courier delete (operator key).
    work2 = os.path.join(work, "two")
    os.makedirs(work2)
    dev2, _ = backed_up(node, work2, 1, seed=69)
    job2 = start_courier(node, dev2)
    assert wait_job(node, job2)["state"] == "done"
    assert os.path.exists(os.path.join(node.root, "courier", job2))
    p = cvctl("courier", "delete", job2, root=node.root)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not os.path.exists(os.path.join(node.root, "courier", job2))
    assert node.admin("GET", f"/jobs/{job2}/images/1").status == 404
    p = cvctl("courier", "delete", "0" * 32, root=node.root)
    assert p.returncode == 1, p.stdout + p.stderr


# ---- lanes, one job per device, room in courier_dir (issue 15) --------------------------------

def raw_repository(dev, mib, seed):
    """A device holding a config object and `mib` data objects of 1 MiB, uploaded directly
    (a courier job copies objects; it does not need restic's format): {name: body}."""
    r = dev.request("POST", "/config", b"a courier job copies this as repo/config")
    assert r.status == 200, r
    return cv.put_objects(dev, mib, 1 << 20, seed=seed)


def wait_running(node, job_id, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        j = node.admin("GET", f"/jobs/{job_id}").json()
        if j["state"] == "running":
            return j
        assert j["state"] == "scheduled", j
        assert time.monotonic() < deadline, j
        time.sleep(0.05)


def test_a_purge_never_waits_for_a_courier_image(fresh_node):
    """Courier jobs shared one job lane with purges: a multi-terabyte image held up every
    deletion on the node. A courier job throttled to 1 MiB/s over 8 MiB runs for about 8 s; a
    device purge (grace 0) scheduled while it runs is done while the courier job still runs."""
    node = fresh_node("[jobs]\ncourier_mib_per_s = 1\njob_poll_ms = 50\n")
    slow = node.new_device(append_only=False, name="shipped")
    raw_repository(slow, 8, seed=70)
    courier = start_courier(node, slow)
    wait_running(node, courier)

    victim = node.new_device(append_only=False, name="decommissioned")
    keep = node.new_device(account=victim.account, name="kept")
    kept = cv.put_objects(keep, 2, 50_000, seed=71)
    cv.put_objects(victim, 5, 100_000, seed=72)
    r = node.admin("DELETE", f"/accounts/{victim.account}/devices/{victim.id}?grace=0s")
    assert r.status == 202, r
    purge = cv.wait_job(node, r.json()["id"], timeout=30)
    assert purge["result"]["objects_removed"] == 5, purge
    j = node.admin("GET", f"/jobs/{courier}").json()
    assert j["state"] == "running", f"the purge waited for the courier job: {j}"
    cv.assert_reads_back(keep, kept)
    # Both lanes in the log.
    lanes = {e["job"]: e.get("lane") for e in cv.log_events(node, "job_run")}
    assert lanes[courier] == "courier" and lanes[purge["id"]] == "purge", lanes
    assert wait_job(node, courier, timeout=60)["state"] == "done"


def test_one_courier_job_per_device(fresh_node):
    """A second courier job for a device while one is scheduled or running is 409
    already_running naming the first, and nothing is created; another device of the account
    may have its own; once the first is over, the device may have a new one."""
    node = fresh_node("[jobs]\ncourier_mib_per_s = 1\njob_poll_ms = 50\n")
    _, key = node.new_partner("p")
    account = node.new_account(key=key)
    dev = node.new_device(append_only=False, account=account, key=key)
    sibling = node.new_device(append_only=False, account=account, name="sibling", key=key)
    raw_repository(dev, 4, seed=73)
    raw_repository(sibling, 1, seed=74)
    first = start_courier(node, dev, key=key)
    for state in ("scheduled or running", "running"):
        r = node.admin("POST", f"/accounts/{account}/devices/{dev.id}/courier", {}, key=key)
        assert r.status == 409, (state, r)
        err = r.json()["error"]
        assert err["code"] == "already_running" and err["job"] == first, err
        assert first in err["message"], err
        if state != "running":
            wait_running(node, first)
    r = node.admin("GET", f"/jobs?account={account}&kind=courier", key=key)
    assert [j["id"] for j in r.json()["items"]] == [first], r
    assert audit_actions(node, account).count("device.courier") == 1

    # Per device: the sibling's job is accepted (and waits on the courier lane).
    second = start_courier(node, sibling, key=key)
    assert node.admin("POST", f"/jobs/{first}/cancel", {}, key=key).status == 200
    again = start_courier(node, dev, key=key)
    for j in (second, again):
        assert wait_job(node, j, timeout=60)["state"] == "done"


def test_courier_job_refused_without_room(fresh_node, tmp_root):
    """courier_dir on a 16 MiB file system (a tmpfs the test mounts): a device of 20 MiB is
    refused up front with 507 insufficient_storage naming the bytes needed and free, and
    nothing is created. A device of 8 MiB fits, and while its job runs the room it still needs
    is held: a second 8 MiB device is refused (held_bytes). Its image really takes no more
    than it was promised. Once the first job's images are deleted, the second fits."""
    with cv.small_tmpfs(os.path.join(tmp_root, "courier-fs"), "16m") as mnt:
        node = fresh_node(f'[jobs]\ncourier_dir = "{mnt}/courier"\ncourier_mib_per_s = 2\n'
                          "job_poll_ms = 50\n")
        big = node.new_device(append_only=False, name="big")
        raw_repository(big, 20, seed=75)
        r = node.admin("POST", f"/accounts/{big.account}/devices/{big.id}/courier", {})
        assert r.status == 507, r
        err = r.json()["error"]
        assert err["code"] == "insufficient_storage", err
        assert err["needed_bytes"] > 20 << 20, err
        assert 0 < err["free_bytes"] <= 16 << 20 and err["held_bytes"] == 0, err
        assert str(err["needed_bytes"]) in err["message"], err
        assert str(err["free_bytes"]) in err["message"], err
        r = node.admin("GET", f"/jobs?account={big.account}&kind=courier")
        assert r.json()["items"] == [], r
        assert "device.courier" not in audit_actions(node, big.account)

        first_dev = node.new_device(append_only=False, name="first")
        raw_repository(first_dev, 8, seed=76)
        second_dev = node.new_device(append_only=False, name="second")
        raw_repository(second_dev, 8, seed=77)
        first = start_courier(node, first_dev)
        wait_running(node, first)
        r = node.admin("POST", f"/accounts/{second_dev.account}/devices/{second_dev.id}/courier",
                       {})
        assert r.status == 507, r
        err = r.json()["error"]
        assert err["code"] == "insufficient_storage" and err["held_bytes"] > 0, err

        done = wait_job(node, first, timeout=60)
        assert done["state"] == "done", done
        promised = done["params"]["needed_bytes"]
        job_dir = os.path.join(mnt, "courier", first)
        used = sum(os.lstat(os.path.join(job_dir, f)).st_blocks * 512 for f in os.listdir(job_dir))
        assert 8 << 20 < used <= promised < used + (3 << 20), (used, promised)
        # The finished image takes its room for real now: still no room for the second.
        r = node.admin("POST", f"/accounts/{second_dev.account}/devices/{second_dev.id}/courier",
                       {})
        assert r.status == 507, r
        assert node.admin("DELETE", f"/jobs/{first}/images").status == 200
        second = start_courier(node, second_dev)
        assert wait_job(node, second, timeout=60)["state"] == "done"
        node.stop()
