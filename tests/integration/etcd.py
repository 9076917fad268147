"""A real etcd (Debian etcd-server) for the cluster tests: one member on 127.0.0.1, its data
under a private folder, stopped at the end of the test. etcd takes no port 0 for its client URL
(it must advertise it), so free ports are picked by binding port 0 and closing; a start that
loses that race is retried on new ports."""
import base64
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    def __init__(self, root):
        self.root = str(root)
        os.makedirs(self.root, exist_ok=True)
        self.proc = None
        self.client_port = None
        self.peer_port = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout=30):
        """Starts (or restarts, on the same ports and data) and waits until it answers."""
        assert os.access(ETCD, os.X_OK), "etcd missing: run deploy/install-deps.sh"
        for attempt in range(3):
            if self.client_port is None or attempt > 0:
                self.client_port, self.peer_port = free_port(), free_port()
                shutil.rmtree(os.path.join(self.root, "data"), ignore_errors=True)
            log = open(os.path.join(self.root, "etcd.log"), "ab")
            peer = f"http://127.0.0.1:{self.peer_port}"
            self.proc = subprocess.Popen(
                [ETCD, "--name", "test", "--data-dir", os.path.join(self.root, "data"),
                 "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"test={peer}"],
                stdout=log, stderr=log)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    self.call("/v3/kv/range", {"key": base64.b64encode(b"/").decode()})
                    return self
                except OSError:
                    time.sleep(0.1)
            self.kill()
        raise RuntimeError("etcd did not start:\n" + self.log())

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self):
        try:
            with open(os.path.join(self.root, "etcd.log"), "rb") as f:
                return f.read().decode(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    def call(self, path, body, timeout=5):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read().decode().split("\n")[0])

    def get_prefix(self, prefix):
        """{key: (value, lease)} of every key under `prefix` (text)."""
        p = prefix.encode()
        end = p[:-1] + bytes([p[-1] + 1])
        out = self.call("/v3/kv/range", {"key": base64.b64encode(p).decode(),
                                         "range_end": base64.b64encode(end).decode()})
        return {base64.b64decode(kv["key"]).decode(): (base64.b64decode(kv.get("value", "")).decode(),
                                                       int(kv.get("lease", 0)))
                for kv in out.get("kvs", [])}

    def nodes(self):
        """The node records in etcd, by node id."""
        return {k.rsplit("/", 1)[1]: json.loads(v)
                for k, (v, _) in self.get_prefix("/chunkvault/v1/nodes/").items()}


class EtcdCluster:
    """Three etcd members on 127.0.0.1 (one raft group); `urls` are their client URLs."""

    def __init__(self, root, size=3):
        self.root = str(root)
        self.names = [f"m{i}" for i in range(1, size + 1)]
        self.client = {n: free_port() for n in self.names}
        self.peer = {n: free_port() for n in self.names}
        self.procs = {}

    @property
    def urls(self):
        return [f"http://127.0.0.1:{self.client[n]}" for n in self.names]

    def start(self, timeout=60):
        initial = ",".join(f"{n}=http://127.0.0.1:{self.peer[n]}" for n in self.names)
        for n in self.names:
            url = f"http://127.0.0.1:{self.client[n]}"
            peer = f"http://127.0.0.1:{self.peer[n]}"
            log = open(os.path.join(self.root, f"{n}.log"), "ab")
            self.procs[n] = subprocess.Popen(
                [ETCD, "--name", n, "--data-dir", os.path.join(self.root, n),
                 "--listen-client-urls", url, "--advertise-client-urls", url,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--initial-cluster-token", os.path.basename(self.root)],
                stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.member(0).call("/v3/kv/put", {"key": base64.b64encode(b"/ready").decode(),
                                                   "value": ""})
                return self
            except OSError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError("the etcd cluster did not form")

    def member(self, i):
        """An Etcd handle on member i (for calls; it does not own the process)."""
        e = Etcd(self.root)
        e.client_port = self.client[self.names[i]]
        return e

    def kill_member(self, i):
        p = self.procs[self.names[i]]
        p.kill()
        p.wait(timeout=10)

    def kill(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
