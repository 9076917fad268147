"""The deploy files agree with the node: every metric the alert rules use is one the node
exports, the certificate (serving and CA), readiness and last-scrub gauges carry real values,
and the systemd unit and the Prometheus example have the settings README promises."""

import os
import re
import ssl
import subprocess
import time

import yaml

import cv

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy")


def not_after(path):
    """notAfter of the first certificate in the PEM file `path`, unix seconds (openssl)."""
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in", path],
                         capture_output=True, text=True, check=True).stdout
    return ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])


def test_alert_rules_use_exported_metrics(fresh_node):
    node = fresh_node("[scrub]\ninterval_s = 3600\n[jobs]\njob_poll_ms = 50\n")
    dev = node.new_device()
    assert dev.put("data", b"something").status == 200
    # Wait for the background scrub's first (empty-ish) pass.
    deadline = time.monotonic() + 30
    while cv.metric_value(node.metrics(), "chunkvault_last_full_scrub_timestamp_seconds") == 0:
        assert time.monotonic() < deadline, "no scrub pass recorded"
        time.sleep(0.1)
    text = node.metrics()
    exported = set(re.findall(r"^(chunkvault_[a-z_]+?)(?:_bucket|_sum|_count)?[ {]", text, re.M))
    with open(os.path.join(DEPLOY, "alerts.yml")) as f:
        rules = yaml.safe_load(f)
    used = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] and rule["expr"] and rule["annotations"]["summary"], rule
            used |= set(re.findall(r"chunkvault_[a-z_]+", rule["expr"]))
    assert used, "no chunkvault metric in the alert rules"
    missing = used - exported
    assert not missing, f"alert rules use metrics the node does not export: {missing}"

    # The certificate gauge is the real notAfter of the certificate served.
    leaf = cv.metric_value(text, "chunkvault_tls_certificate_not_after_timestamp_seconds")
    want = not_after(os.path.join(node.root, "tls", "server.pem"))
    assert abs(leaf - want) < 2, (leaf, want)
    assert leaf > time.time() + 30 * 86400
    # The CA gauge is the notAfter of the CA agents pin (ca.pem), not the leaf's: the generated
    # CA lives 3650 days, the leaf 825.
    ca = cv.metric_value(text, "chunkvault_tls_ca_not_after_timestamp_seconds")
    want_ca = not_after(node.ca)
    assert abs(ca - want_ca) < 2, (ca, want_ca)
    assert ca > leaf + 365 * 86400, (ca, leaf)
    assert cv.metric_value(text, "chunkvault_ready") == 1
    # The last full scrub is recent and matches GET /status.
    last = cv.metric_value(text, "chunkvault_last_full_scrub_timestamp_seconds")
    status = node.admin("GET", "/status").json()
    assert abs(cv.parse_rfc3339(status["last_full_scrub_at"]) / 1e9 - last) < 2


def test_systemd_unit_and_config_are_complete():
    with open(os.path.join(DEPLOY, "chunkvaultd.service")) as f:
        unit = f.read()
    for line in ("User=chunkvault", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "LimitMEMLOCK=infinity", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID",
                 "ExecStart=/usr/local/bin/chunkvaultd --config /etc/chunkvault/chunkvaultd.toml"):
        assert line in unit, line
    with open(os.path.join(DEPLOY, "prometheus.yml")) as f:
        prom = yaml.safe_load(f)
    scrape = prom["scrape_configs"][0]
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["scheme"] == "https" and scrape["tls_config"]["ca_file"]
    # /metrics needs the token (test_metrics_auth.py): the example must send it.
    assert scrape["authorization"]["type"] == "Bearer"
    assert scrape["authorization"]["credentials_file"]
    assert "alerts.yml" in prom["rule_files"]

    with open(os.path.join(DEPLOY, "alerts.yml")) as f:
        rules = {r["alert"]: r for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
    assert "chunkvault_ready == 0" in rules["ChunkvaultNotReady"]["expr"]
    assert "chunkvault_tls_ca_not_after_timestamp_seconds" in rules["ChunkvaultCaCertificateExpiring"]["expr"]


def test_run_sh_builds_cvctl_and_cvctl_reaches_its_node(tmp_root):
    """A newcomer runs ./deploy/run.sh, then follows README's "Operating a node": run.sh has
    built build/bin/cvctl too (it is removed first, so only run.sh can have made it), and that
    cvctl reaches the node run.sh started."""
    src = os.path.abspath(os.path.join(DEPLOY, ".."))
    build = os.path.join(src, "build")
    if os.path.realpath(cv.BUILD_DIR) != os.path.realpath(build):
        import pytest
        pytest.skip("run.sh builds in the source tree's build/; CV_BUILD_DIR is elsewhere")
    cvctl_bin = os.path.join(build, "bin", "cvctl")
    kept = cvctl_bin + ".before-run-sh"  # put back if run.sh fails, for the suites after this one
    if os.path.exists(cvctl_bin):
        os.replace(cvctl_bin, kept)
    root = os.path.join(tmp_root, "run-sh")
    proc = subprocess.Popen(
        [os.path.join(DEPLOY, "run.sh"), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"],
        env={**os.environ, "CV_ROOT": root}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True)
    out = b""
    try:
        deadline = time.monotonic() + 600  # run.sh may have to relink cvctl
        os.set_blocking(proc.stdout.fileno(), False)
        while b"Ctrl-C stops the node." not in out:
            assert proc.poll() is None, f"run.sh exited early:\n{out.decode(errors='replace')}"
            assert time.monotonic() < deadline, f"run.sh did not come up:\n{out.decode(errors='replace')}"
            chunk = proc.stdout.read()
            if chunk:
                out += chunk
            else:
                time.sleep(0.1)
        assert os.access(cvctl_bin, os.X_OK), "run.sh did not build cvctl"
        assert f"cvctl --root {root} status".encode() in out, out.decode(errors="replace")
        r = subprocess.run([cvctl_bin, "--root", root, "status"], capture_output=True, timeout=60)
        assert r.returncode == 0, r
        assert b"disks" in r.stdout.lower(), r.stdout
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
        proc.wait(timeout=60)
        if os.path.exists(kept):
            if os.path.exists(cvctl_bin):
                os.unlink(kept)
            else:
                os.replace(kept, cvctl_bin)


def test_ready_gauge_follows_readyz(fresh_node):
    """chunkvault_ready is what /readyz says: 0 once a data disk is gone (4+2 on 6 disks has no
    spare), whatever the scrape itself did."""
    node = fresh_node()
    assert node.request("GET", "/readyz").status == 200
    assert cv.metric_value(node.metrics(), "chunkvault_ready") == 1
    disk = os.path.join(node.root, "disks", "d2")
    os.rename(disk, disk + ".gone")
    deadline = time.monotonic() + 20
    while cv.metric_value(node.metrics(), "chunkvault_ready") != 0:
        assert time.monotonic() < deadline, "chunkvault_ready stayed 1 with a disk gone"
        time.sleep(0.1)
    r = node.request("GET", "/readyz")
    assert r.status == 503 and r.error_code() == "unavailable", r


def test_no_ca_series_without_a_ca_file(fresh_node):
    """An operator's certificate from a public CA comes without a CA file: then there is no CA
    series at all (a 0 would read as "expired" to ChunkvaultCaCertificateExpiring)."""
    node = fresh_node()
    assert "chunkvault_tls_ca_not_after_timestamp_seconds " in node.metrics()
    node.stop()
    kept = os.path.join(node.root, "ca-of-the-clients.pem")  # the client still trusts it
    os.rename(os.path.join(node.root, "tls", "ca.pem"), kept)  # server.pem and .key stay
    node.start()
    node.ca = kept
    text = node.metrics()
    assert "chunkvault_tls_ca_not_after_timestamp_seconds " not in text
    assert cv.metric_value(text, "chunkvault_tls_certificate_not_after_timestamp_seconds") > time.time()
