import os
import shutil
import tempfile

import pytest

import cv


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running (the 200 MiB restic round trip)")


@pytest.fixture(scope="session")
def tmp_root():
    # /var/tmp rather than /tmp: the data disks must be on a real file system, not tmpfs.
    base = os.environ.get("CV_TEST_TMP", "/var/tmp")
    d = tempfile.mkdtemp(prefix="cv-integration-", dir=base)
    yield d
    if os.environ.get("CV_KEEP_TMP"):
        print(f"\nkept {d}")
    else:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def node(tmp_root):
    """One node shared by the tests that do not change its process state."""
    n = cv.Node(os.path.join(tmp_root, "shared")).start()
    yield n
    rc = n.stop()
    assert rc == 0, f"chunkvaultd exited with {rc}:\n{n.log()}"
    assert_clean_log(n)


def assert_clean_log(n):
    """Handlers report errors as values: an exception reaching the event loop is a bug."""
    log = n.log()
    for event in ('"session_exception"', '"worker_exception"', '"accept_loop_exception"'):
        assert event not in log, f"{event} in the log of {n.root}:\n{log[-5000:]}"


@pytest.fixture
def fresh_node(tmp_root, request):
    """A node of its own (for signals, reloads, special configuration). Parametrize through
    `request.param` = extra TOML, or call the factory."""
    started = []

    def make(extra_config="", threads=2, fake_clock=False):
        n = cv.Node(os.path.join(tmp_root, f"{request.node.name}-{len(started)}"), extra_config, threads,
                    fake_clock)
        started.append(n)
        return n.start()

    yield make
    for n in started:
        try:
            n.stop()
        finally:
            n.kill()
        assert_clean_log(n)


@pytest.fixture(scope="module")
def clock_node(tmp_root, request):
    """A node of the test module whose clock the tests move (Node.advance): expiry, staleness."""
    n = cv.Node(os.path.join(tmp_root, "clock-" + request.module.__name__), fake_clock=True).start()
    yield n
    rc = n.stop()
    assert rc == 0, f"chunkvaultd exited with {rc}:\n{n.log()}"
    assert_clean_log(n)


@pytest.fixture
def device(node):
    return node.new_device(append_only=False)


@pytest.fixture
def workdir(tmp_root, request):
    """A scratch directory under the session's root (removed with it, unlike tmp_path)."""
    d = os.path.join(tmp_root, "work-" + request.node.name)
    os.makedirs(d)
    yield d
    if not os.environ.get("CV_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)
