"""The deploy files agree with the node: every metric the alert rules use is one the node
exports, the certificate expiry and last-scrub gauges carry real values, and the systemd unit
has the hardening and reload settings README promises."""

import os
import re
import ssl
import subprocess
import time

import yaml

import cv

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy")


def metrics(node):
    r = node.request("GET", "/metrics")
    assert r.status == 200, r
    return r.body.decode()


def test_alert_rules_use_exported_metrics(fresh_node):
    node = fresh_node("[scrub]\ninterval_s = 3600\n[jobs]\njob_poll_ms = 50\n")
    dev = node.new_device()
    assert dev.put("data", b"something").status == 200
    # Wait for the background scrub's first (empty-ish) pass.
    deadline = time.monotonic() + 30
    while cv.metric_value(metrics(node), "chunkvault_last_full_scrub_timestamp_seconds") == 0:
        assert time.monotonic() < deadline, "no scrub pass recorded"
        time.sleep(0.1)
    text = metrics(node)
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
    not_after = cv.metric_value(text, "chunkvault_tls_certificate_not_after_timestamp_seconds")
    out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in",
                          os.path.join(node.root, "tls", "server.pem")],
                         capture_output=True, text=True, check=True).stdout
    want = ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])
    assert abs(not_after - want) < 2, (not_after, want)
    assert not_after > time.time() + 30 * 86400
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
    assert prom["scrape_configs"][0]["metrics_path"] == "/metrics"
    assert "alerts.yml" in prom["rule_files"]
