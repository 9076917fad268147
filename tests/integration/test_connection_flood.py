"""Availability under a cheap attack: thousands of idle TCP connections from one address (no TLS
handshake, reconnected as soon as the node closes them) while a real restic inits and backs up
from another address, without a single error or retry.

Two defences, one test each:
- the per-address limit ([server] max_connections_per_address, 128 by default) keeps the
  attacker's address from holding more than 128 connections at all;
- with that limit off, the node at max_connections (1024) makes room for a new connection by
  closing the oldest one that has not finished its TLS handshake.

The attacker binds its sockets to 127.0.0.2 (any 127/8 address works on Linux loopback); restic
comes from 127.0.0.1. Every test is bounded in time and closes all its sockets."""

import os
import resource
import selectors
import socket
import subprocess
import threading
import time

import pytest

import cv
from test_restic import RESTIC, Restic, make_tree

ATTACKER = "127.0.0.2"
SOCKETS = 3000
RESTIC_TIMEOUT = 180  # seconds for each restic command
# The attacker reconnects what the node closed at most this fast (connections per second), so
# that the churn it causes is heavy but the same on every run.
RECONNECTS_PER_S = 500


def raise_nofile(need):
    """Raises this process's RLIMIT_NOFILE soft limit to `need` (skips if the hard one is lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def node_nofile(node):
    """The running chunkvaultd's soft RLIMIT_NOFILE (/proc/PID/limits)."""
    with open(f"/proc/{node.proc.pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft = line.split()[3]
                return float("inf") if soft == "unlimited" else int(soft)
    raise AssertionError("no 'Max open files' in /proc/PID/limits")


class Flood:
    """`count` TCP connections from `source` to `addr` that never send a byte. A thread watches
    them and reconnects each one the node closes, like an attacker would, until stop()."""

    def __init__(self, addr, source, count):
        self.addr, self.source, self.count = addr, source, count
        self.sel = selectors.DefaultSelector()  # epoll: no FD_SETSIZE limit
        self.open = 0
        self.reconnects = 0
        self.connect_errors = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((self.source, 0))
            s.settimeout(5)
            s.connect(self.addr)
            s.setblocking(False)
        except OSError:
            s.close()
            self.connect_errors += 1
            return False
        self.sel.register(s, selectors.EVENT_READ)
        self.open += 1
        return True

    def start(self, timeout=60):
        deadline = time.monotonic() + timeout
        while self.open < self.count:
            assert time.monotonic() < deadline, f"only {self.open} of {self.count} connected"
            self._connect()
        self.thread.start()
        return self

    def _run(self):
        owed = 0  # connections the node closed and that are not back yet
        budget_start, used = time.monotonic(), 0
        while not self.stopping.is_set():
            for key, _ in self.sel.select(timeout=0.02):
                s = key.fileobj
                try:
                    if s.recv(1) != b"":
                        continue  # cannot happen: no handshake, so the node sends nothing
                except BlockingIOError:
                    continue
                except OSError:
                    pass  # reset: refused or evicted
                self.sel.unregister(s)
                s.close()
                self.open -= 1
                owed += 1
            now = time.monotonic()
            if now - budget_start >= 1:
                budget_start, used = now, 0
            while owed > 0 and used < RECONNECTS_PER_S and not self.stopping.is_set():
                used += 1
                if self._connect():
                    owed -= 1
                    self.reconnects += 1
                else:
                    break

    def stop(self):
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()
        self.open = 0


def restic_run(restic, *args):
    """Runs restic (bounded); returns the CompletedProcess."""
    return subprocess.run([RESTIC, "-r", restic.url, "--cacert", restic.ca, *args], env=restic.env,
                          capture_output=True, text=True, timeout=RESTIC_TIMEOUT)


def backup_under_flood(node, workdir):
    """restic init + backup of a 4 MiB tree while SOCKETS idle sockets from ATTACKER are held:
    both succeed with no retry. Returns the flood (stopped) for its counters and /metrics as
    scraped while the flood was still on."""
    raise_nofile(SOCKETS + 1024)
    # chunkvaultd raises its own limit to the hard one (server/main.cc): it must cover
    # max_connections plus its extents, index and listeners.
    assert node_nofile(node) >= 4096, node_nofile(node)
    dev = node.new_device(append_only=False)
    src = os.path.join(workdir, "src")
    make_tree(src, 4, seed=15)
    restic = Restic(dev, workdir)
    flood = Flood(node.agent_addr, ATTACKER, SOCKETS)
    try:
        flood.start()
        time.sleep(1)  # the node has accepted (and admitted or refused) the whole flood
        for args in (["init"], ["backup", "--json", src]):
            p = restic_run(restic, *args)
            out = f"restic {args[0]} ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
            assert p.returncode == 0, out
            # restic retries a failed request a few times ("... returned error, retrying after
            # ..."): a retry means the node turned a real client away, which is the bug.
            assert "retrying" not in p.stderr, out
        assert flood.open > 0 and flood.thread.is_alive()
        during = node.metrics()
    finally:
        flood.stop()
    summary = [l for l in p.stdout.splitlines() if '"message_type":"summary"' in l]
    assert summary, p.stdout[-2000:]
    assert dev.usage()["last_backup_ns"] > 0
    return flood, during


# Idle sockets are not closed by the handshake timeout during the test: only the defences
# close them.
SLOW_HANDSHAKES = "[server]\nhandshake_timeout_s = 60\n"


def test_idle_flood_from_one_address_is_held_to_the_per_address_limit(fresh_node, workdir):
    node = fresh_node(SLOW_HANDSHAKES)  # max_connections 1024, 128 per address: the defaults
    flood, during = backup_under_flood(node, workdir)
    # The attacker's address never held more than 128: restic (up to 5) and the scrape fit.
    assert cv.metric_value(during, "chunkvault_open_connections") <= 128 + 8
    text = node.metrics()
    assert cv.metric_value(text, "chunkvault_rejected_connections_per_address_total") >= SOCKETS - 128
    # Nobody else was refused, and the node never got full enough to evict.
    assert cv.metric_value(text, "chunkvault_rejected_connections_total") == 0
    assert cv.metric_value(text, "chunkvault_evicted_connections_total") == 0
    assert flood.reconnects > 0


def test_full_node_evicts_connections_still_in_their_handshake(fresh_node, workdir):
    node = fresh_node(SLOW_HANDSHAKES + "max_connections_per_address = 0\n")
    flood, during = backup_under_flood(node, workdir)
    text = node.metrics()
    # The flood alone went past max_connections: the node closed its oldest idle sockets for
    # the newer ones, restic's included, and refused none.
    assert cv.metric_value(text, "chunkvault_evicted_connections_total") >= SOCKETS - 1024
    assert cv.metric_value(text, "chunkvault_rejected_connections_total") == 0
    assert cv.metric_value(text, "chunkvault_rejected_connections_per_address_total") == 0
    assert flood.reconnects > 0
