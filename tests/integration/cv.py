"""Helpers for the integration tests: start and stop a real chunkvaultd, talk to it over
HTTPS with the standard library only (http.client + ssl + socket), create devices through the
admin API. Every network operation and every wait has a timeout."""

import base64
import calendar
import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import time

BUILD_DIR = os.environ.get(
    "CV_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
BINARY = os.path.join(BUILD_DIR, "bin", "chunkvaultd")

IO_TIMEOUT = 30  # seconds, for any single socket operation of a test client

# Short server timeouts so that the tests about them run quickly.
TEST_CONFIG = """
[server]
handshake_timeout_s = 5
idle_timeout_s = 30
body_timeout_s = 2
write_timeout_s = 20
drain_timeout_s = 10
[tls]
watch_interval_s = 0
[auth]
free_failures = 50
[storage]
extent_bytes = 67108864
[scrub]
interval_s = 0
auto_repair = false
"""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def headers_named(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def error_code(self):
        """The "code" of a JSON error body; fails the test if the body is not one."""
        doc = self.json()
        assert set(doc) == {"error"}, doc
        assert isinstance(doc["error"]["code"], str) and isinstance(doc["error"]["message"], str), doc
        return doc["error"]["code"]

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


class Device:
    def __init__(self, node, account, dev_id, token, append_only):
        self.node, self.account, self.id, self.token = node, account, dev_id, token
        self.append_only = append_only

    def basic(self, token=None, user=None):
        raw = f"{user or self.id}:{token if token is not None else self.token}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def headers(self, extra=None):
        h = {"Authorization": self.basic()}
        h.update(extra or {})
        return h

    def restic_url(self):
        host, port = self.node.agent_addr
        return f"rest:https://{self.id}:{self.token}@{host}:{port}/{self.id}/"

    # --- shortcuts on this device's repository ---
    def request(self, method, path, body=None, headers=None, **kw):
        return self.node.request(method, f"/{self.id}{path}", body, self.headers(headers), **kw)

    def put(self, typ, data, name=None):
        name = name if name is not None else sha256_hex(data)
        return self.request("POST", f"/{typ}/{name}", data)

    def usage(self):
        r = self.request("GET", "/v1/usage")
        assert r.status == 200, r
        return r.json()

    def listing(self, typ):
        r = self.request("GET", f"/{typ}/", headers={"Accept": "application/vnd.x.restic.rest.v2"})
        assert r.status == 200, r
        return r.json()


class Node:
    """A chunkvaultd process on a private root, listening on kernel-chosen ports. With
    fake_clock, the node's clock is the file ROOT/clock (see set_clock/advance)."""

    def __init__(self, root, extra_config="", threads=2, fake_clock=False):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.config_file = os.path.join(self.root, "test.toml")
        with open(self.config_file, "w") as f:
            f.write(TEST_CONFIG if not extra_config else merge_toml(TEST_CONFIG, extra_config))
        self.threads = threads
        self.proc = None
        self.log_path = os.path.join(self.root, "chunkvaultd.log")
        self.clock_file = os.path.join(self.root, "clock") if fake_clock else None
        if self.clock_file and not os.path.exists(self.clock_file):
            self.set_clock(time.time_ns())

    # --- the fake clock ---
    def now_ns(self):
        if not self.clock_file:
            return time.time_ns()
        with open(self.clock_file) as f:
            return int(f.read())

    def set_clock(self, ns):
        """Moves the node's clock (a new file renamed over the old one: the node sees it at its
        next reading)."""
        tmp = self.clock_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(int(ns)))
        os.replace(tmp, self.clock_file)

    def advance(self, seconds):
        self.set_clock(self.now_ns() + int(seconds * 1e9))

    # --- process ---
    def start(self, timeout=30):
        assert os.access(BINARY, os.X_OK), f"build chunkvaultd first: {BINARY} missing"
        endpoints = os.path.join(self.root, "run", "endpoints.json")
        if os.path.exists(endpoints):
            os.unlink(endpoints)
        self.log_file = open(self.log_path, "ab")
        args = [BINARY, "--config", self.config_file, "--root", self.root,
                "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                "--threads", str(self.threads)]
        if self.clock_file:
            args += ["--fake-clock-file", self.clock_file]
        self.proc = subprocess.Popen(args, stdout=self.log_file, stderr=self.log_file)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chunkvaultd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with open(endpoints) as f:
                    ep = json.load(f)
                if ep.get("pid") == self.proc.pid:
                    break
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.05)
        else:
            self.kill()
            raise RuntimeError(f"chunkvaultd did not write endpoints.json in {timeout}s:\n{self.log()}")
        self.endpoints = ep
        self.agent_addr = parse_url(ep["agent"])
        self.admin_addr = parse_url(ep["admin"])
        self.ca = ep["ca"]
        with open(ep["admin_key_file"]) as f:
            self.admin_key = f.read().strip()
        self.metrics_token = None
        if "metrics_token_file" in ep:  # absent only from builds older than the token
            with open(ep["metrics_token_file"]) as f:
                self.metrics_token = f.read().strip()
        return self

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit code (kills after `timeout`)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"chunkvaultd did not stop within {timeout}s after SIGTERM")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def status_kb(self, field):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    # --- TLS and HTTP ---
    def ssl_context(self):
        return ssl.create_default_context(cafile=self.ca)

    def connect(self, which="agent", timeout=IO_TIMEOUT):
        host, port = self.agent_addr if which == "agent" else self.admin_addr
        return http.client.HTTPSConnection(host, port, context=self.ssl_context(), timeout=timeout)

    def request(self, method, path, body=None, headers=None, which="agent", conn=None, timeout=IO_TIMEOUT):
        """One request. GET /metrics is a scrape: it carries the node's metrics token unless
        `headers` has an Authorization of its own (test_metrics_auth.py sends none or wrong ones
        through raw requests)."""
        headers = dict(headers or {})
        if (path == "/metrics" and self.metrics_token
                and not any(k.lower() == "authorization" for k in headers)):
            headers["Authorization"] = f"Bearer {self.metrics_token}"
        own = conn is None
        c = conn or self.connect(which, timeout)
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            return Response(r.status, r.getheaders(), data)
        finally:
            if own:
                c.close()

    def metrics(self, which="agent"):
        """The Prometheus text of /metrics, scraped with the metrics token."""
        r = self.request("GET", "/metrics", which=which)
        assert r.status == 200, r
        return r.body.decode()

    def tls_socket(self, which="agent", timeout=IO_TIMEOUT):
        host, port = self.agent_addr if which == "agent" else self.admin_addr
        raw = socket.create_connection((host, port), timeout=timeout)
        return self.ssl_context().wrap_socket(raw, server_hostname=host)

    def raw(self, data: bytes, which="agent", timeout=IO_TIMEOUT, shutdown_write=False):
        """Sends raw bytes over TLS; returns everything received until the server closes or
        `timeout` passes without data."""
        s = self.tls_socket(which, timeout)
        try:
            s.sendall(data)
            return read_all(s)
        finally:
            s.close()

    def admin(self, method, path, obj=None, key=None, raw_body=None):
        body = raw_body if raw_body is not None else (json.dumps(obj) if obj is not None else None)
        headers = {"Authorization": f"Bearer {key if key is not None else self.admin_key}",
                   "Content-Type": "application/json"}
        return self.request(method, "/admin/v1" + path, body, headers, which="admin")

    def new_account(self, key=None, **fields):
        """An account (by default active, 1 PiB, 1000 devices); returns its id."""
        body = {"status": "active", "plan_quota_bytes": 1 << 50, "device_limit": 1000}
        body.update(fields)
        r = self.admin("POST", "/accounts", body, key=key)
        assert r.status == 201, r
        return r.json()["id"]

    def new_partner(self, name="partner"):
        """A partner and a key for it: (partner id, key)."""
        r = self.admin("POST", "/partners", {"name": name})
        assert r.status == 201, r
        pid = r.json()["id"]
        r = self.admin("POST", f"/partners/{pid}/keys", {})
        assert r.status == 201, r
        return pid, r.json()["key"]

    def new_device(self, append_only=True, account=None, name="test-device", key=None):
        account = account or self.new_account(key=key)
        r = self.admin("POST", f"/accounts/{account}/devices",
                       {"name": name, "kind": "computer", "append_only": append_only}, key=key)
        assert r.status == 201, r
        d = r.json()
        return Device(self, account, d["id"], d["token"], append_only)

    def account_usage(self, account):
        r = self.admin("GET", f"/accounts/{account}/usage")
        assert r.status == 200, r
        return r.json()

    def fsck(self):
        r = self.admin("GET", "/fsck")
        assert r.status == 200, r
        return r.json()


def rfc3339(ns):
    """ns since the epoch -> the admin API's RFC 3339 UTC form (whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


def parse_rfc3339(text):
    """The admin API's RFC 3339 UTC times -> ns since the epoch."""
    assert text.endswith("Z"), text
    whole, _, frac = text[:-1].partition(".")
    secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int((frac + "000000000")[:9])


def read_all(sock, limit=1 << 24):
    out = b""
    try:
        while len(out) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    except (socket.timeout, ConnectionResetError, ssl.SSLError, OSError):
        pass
    return out


def parse_raw_response(data: bytes):
    """The first HTTP response in `data` (status, headers dict lower-case, body by
    Content-Length)."""
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    return Response(status, list(headers.items()), rest[:n])


def parse_url(url):
    assert url.startswith("https://"), url
    hostport = url[len("https://"):]
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), int(port)


def merge_toml(base, extra):
    """Overlays simple `[section] key = value` TOML: keys of `extra` replace those of `base`."""
    def parse(text):
        sections, cur = {"": {}}, ""
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                cur = line.strip("[]")
                sections.setdefault(cur, {})
            else:
                k, _, v = line.partition("=")
                sections[cur][k.strip()] = v.strip()
        return sections
    merged = parse(base)
    for sec, kv in parse(extra).items():
        merged.setdefault(sec, {}).update(kv)
    out = []
    for sec, kv in merged.items():
        if sec:
            out.append(f"[{sec}]")
        out.extend(f"{k} = {v}" for k, v in kv.items())
    return "\n".join(out) + "\n"


# --- cvctl, the operators' command line ---
CVCTL = os.path.join(BUILD_DIR, "bin", "cvctl")


def cvctl(*args, root=None, timeout=300):
    """Runs build/bin/cvctl (with --root ROOT first when given); returns the CompletedProcess
    (returncode, stdout, stderr as text)."""
    assert os.access(CVCTL, os.X_OK), f"build cvctl first: {CVCTL} missing"
    cmd = [CVCTL] + (["--root", str(root)] if root is not None else []) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


# --- objects, jobs and disk space (purge and compaction tests) ---
def disk_bytes(node):
    """Bytes allocated on the file system by the node's data disks (what statvfs would see if
    the node had the file system to itself; /var/tmp is shared with other processes)."""
    total = 0
    for dirpath, _, files in os.walk(os.path.join(node.root, "disks")):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def wait_for(pred, timeout=60, what="condition"):
    """Polls pred() every 0.1 s until it returns something true, and returns that; fails
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.1)


def metric_value(text, name):
    """The value of the unlabelled sample `name` in a Prometheus text exposition."""
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def wait_job(node, job_id, states=("done",), timeout=120, key=None):
    """Polls GET /jobs/{id} until the job is in one of `states`; fails on failed/cancelled."""
    deadline = time.monotonic() + timeout
    while True:
        r = node.admin("GET", f"/jobs/{job_id}", key=key)
        assert r.status == 200, r
        job = r.json()
        if job["state"] in states:
            return job
        assert job["state"] not in ("failed", "cancelled"), job
        assert time.monotonic() < deadline, f"job still {job['state']}: {job}"
        time.sleep(0.05)


def put_objects(dev, count, size, seed):
    """Uploads `count` random data objects of `size` bytes (seeded); returns {name: body}."""
    rng = random.Random(seed)
    bodies = {}
    for _ in range(count):
        body = rng.randbytes(size)
        r = dev.put("data", body)
        assert r.status == 200, r
        bodies[sha256_hex(body)] = body
    return bodies


def assert_reads_back(dev, bodies):
    """Every {name: body} of `bodies` reads back from `dev` byte for byte."""
    for name, body in bodies.items():
        r = dev.request("GET", f"/data/{name}")
        assert r.status == 200, r
        assert r.body == body, name


def log_events(node, event):
    """The node's JSON log lines whose "event" is `event`, oldest first (the whole log file,
    over every start of the node)."""
    out = []
    try:
        with open(node.log_path, "rb") as f:
            for line in f:
                if f'"event":"{event}"'.encode() not in line:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut short by kill -9
    except FileNotFoundError:
        pass
    return out


@contextlib.contextmanager
def small_tmpfs(path, size):
    """A tmpfs of `size` (mount's syntax: "16m") mounted at `path` for the `with` block, to
    fill a file system for real (mount needs root: the test skips where it cannot); unmounted
    lazily afterwards, so that a process still holding a file there cannot keep it."""
    import pytest
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)
