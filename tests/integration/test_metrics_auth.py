"""GET /metrics needs the node's metrics token ([server] metrics_token) on both listeners:
no token or a wrong one is 401 with WWW-Authenticate and the JSON error, the right one is 200
with the metrics. /healthz and /readyz stay open. The token file is generated on first start
(mode 0600, in endpoints.json) or read from the configured file."""

import os
import stat
import subprocess

import pytest

import cv


def scrape(node, authorization=None, which="agent", method="GET"):
    """A raw /metrics request (cv.Node.request would add the right token)."""
    headers = {} if authorization is None else {"Authorization": authorization}
    c = node.connect(which)
    try:
        c.request(method, "/metrics", headers=headers)
        r = c.getresponse()
        return cv.Response(r.status, r.getheaders(), r.read())
    finally:
        c.close()


def assert_refused(r, why):
    assert r.status == 401, (why, r)
    assert r.error_code() == "unauthenticated", (why, r)
    assert any(v.startswith("Bearer") for v in r.headers_named("WWW-Authenticate")), (why, r.headers)
    assert b"chunkvault_" not in r.body, why


@pytest.mark.parametrize("which", ["agent", "admin"])
def test_metrics_need_the_token(node, which):
    token = node.metrics_token
    assert_refused(scrape(node, which=which), "no token")
    assert_refused(scrape(node, "Bearer " + "0" * len(token), which=which), "wrong token")
    assert_refused(scrape(node, "Bearer " + token[:-1], which=which), "a prefix of the token")
    assert_refused(scrape(node, "Bearer " + token + "x", which=which), "the token and more")
    assert_refused(scrape(node, f"Bearer {node.admin_key}", which=which), "the admin key")
    assert_refused(scrape(node, "Basic bWV0cmljczo=", which=which), "Basic")
    assert_refused(scrape(node, "Bearer", which=which), "malformed")
    assert scrape(node, which=which, method="HEAD").status == 401
    assert scrape(node, "Bearer " + token, which=which, method="HEAD").status == 200
    r = scrape(node, "Bearer " + token, which=which)
    assert r.status == 200, r
    assert r.header("Content-Type").startswith("text/plain")
    assert b"chunkvault_http_requests_total" in r.body
    # The refusals above are counted like other requests, by status.
    assert f'listener="{which}",method="GET",route="metrics",status="401"'.encode() in r.body
    # Probes stay open.
    for path in ("/healthz", "/readyz"):
        assert node.request("GET", path, which=which).status == 200, path


def test_generated_token_file(node):
    path = node.endpoints["metrics_token_file"]
    assert path == os.path.join(node.root, "run", "metrics.token")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(node.metrics_token) >= 32


def test_configured_token_file_and_restart_keeps_a_generated_token(fresh_node, tmp_root):
    token_file = os.path.join(tmp_root, "operator-metrics.token")
    with open(token_file, "w") as f:
        f.write("  operator-chosen-token-0123456789\n")
    node = fresh_node(f'[server]\nmetrics_token = "{token_file}"\n')
    assert node.endpoints["metrics_token_file"] == token_file
    assert node.metrics_token == "operator-chosen-token-0123456789"
    assert scrape(node, "Bearer operator-chosen-token-0123456789").status == 200
    assert not os.path.exists(os.path.join(node.root, "run", "metrics.token"))

    # A generated token survives restarts (Prometheus keeps its copy).
    other = fresh_node()
    first = other.metrics_token
    other.stop()
    other.start()
    assert other.metrics_token == first
    assert scrape(other, "Bearer " + first).status == 200


@pytest.mark.parametrize("content,why", [(None, "No such file"), ("short\n", "shorter than 16"),
                                         ("has a space in it 0123\n", "space")],
                         ids=["missing", "short", "space"])
def test_bad_token_file_stops_the_start(tmp_root, request, content, why):
    root = os.path.join(tmp_root, f"bad-token-{request.node.callspec.id}")
    os.makedirs(root)
    token_file = os.path.join(root, "metrics.token")
    if content is not None:
        with open(token_file, "w") as f:
            f.write(content)
    config = os.path.join(root, "test.toml")
    with open(config, "w") as f:
        f.write(cv.merge_toml(cv.TEST_CONFIG, f'[server]\nmetrics_token = "{token_file}"\n'))
    p = subprocess.run([cv.BINARY, "--config", config, "--root", root, "--listen", "127.0.0.1:0",
                        "--admin-listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, p
    assert "metrics token" in p.stderr and why in p.stderr, p.stderr
