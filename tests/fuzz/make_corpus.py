#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into tests/fuzz/corpus/<target>/seed-*.

Seeds are small, valid inputs of each target's input format (see the comment at the top of
each fuzz_<target>.cc). Checksums are left to the targets, which patch or append them, so this
script needs nothing but Python. fuzz_index_schema writes its own value seeds (it encodes real
records): run `build-fuzz/bin/fuzz_index_schema -runs=0` with CV_FUZZ_WRITE_SEEDS=<dir>.
Inputs that once failed are kept next to the seeds as regress-<name>; this script leaves them.
"""
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
DEV = "0123456789abcdef0123456789abcdef"
SHA = "5a" * 32


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def http_head():
    def wire(method, target, *headers):
        lines = [f"{method} {target} HTTP/1.1", "Host: node:8443", *headers, "", ""]
        return b"\x00" + "\r\n".join(lines).encode()

    basic = "Basic " + __import__("base64").b64encode(f"{DEV}:{'t' * 64}".encode()).decode()
    write("http_head", "get-object", wire("GET", f"/{DEV}/data/{SHA}", f"Authorization: {basic}",
                                          "Range: bytes=0-99"))
    write("http_head", "list-v2", wire("GET", f"/{DEV}/keys/", "Authorization: Bearer " + "t" * 64,
                                       "Accept: application/vnd.x.restic.rest.v2"))
    write("http_head", "post-config", wire("POST", f"/{DEV}/config", "Content-Length: 5"))
    write("http_head", "create-repo", wire("POST", f"/{DEV}/?create=true", "Content-Length: 0"))
    write("http_head", "exists", wire("POST", f"/{DEV}/v1/exists", "Content-Length: 2"))
    write("http_head", "usage", wire("GET", f"/{DEV}/v1/usage"))
    write("http_head", "delete-lock", wire("DELETE", f"/{DEV}/locks/{SHA}"))
    write("http_head", "dotdot", wire("GET", f"/{DEV}/../x"))
    write("http_head", "direct-object", f"\x01/{DEV}/snapshots/{SHA}?x=1\n{basic}")
    write("http_head", "direct-percent", f"\x01/{DEV}/data/%2e%2e\nBearer abc")


def names_ranges():
    def rng(size, header):
        return b"\x00" + struct.pack("<Q", size) + header.encode()

    write("names_ranges", "range-closed", rng(1000, "bytes=0-99"))
    write("names_ranges", "range-open", rng(1000, "bytes=500-"))
    write("names_ranges", "range-suffix", rng(1000, "bytes=-10"))
    write("names_ranges", "range-spaces", rng(1 << 40, " Bytes= 7 - 9 "))
    write("names_ranges", "range-two", rng(10, "bytes=0-1,3-4"))
    write("names_ranges", "name-data", b"\x01\x02" + SHA.encode())
    write("names_ranges", "name-config", b"\x01\x01")
    write("names_ranges", "agent-data", "\x02data\n" + SHA)
    write("names_ranges", "agent-config", "\x02config\n")
    write("names_ranges", "agent-upper", "\x02index\n" + SHA.upper())


def admin_json():
    write("admin_json", "body-account",
          '\x00{"plan_quota_bytes":1099511627776,"device_limit":5,"status":"trial",'
          '"trial_days":30}')
    write("admin_json", "body-addon", '\x00{"bytes":1000,"expires_at":"2030-01-31T12:00:00.5Z"}')
    write("admin_json", "body-device", '\x00{"name":"laptop","kind":"server","append_only":false}')
    write("admin_json", "body-nested", '\x00{"partner":"' + DEV + '","x":{"a":[1,2.5e3,null]}}')
    write("admin_json", "body-dup", '\x00{"name":"a","name":"b"}')
    write("admin_json", "query-list", "\x01limit=50&cursor=" + DEV + "&status=active")
    write("admin_json", "query-escaped", "\x01stale_for=72h&partner=%41%42")
    write("admin_json", "times", "\x021d12h\n2025-01-31T12:00:00+00:00")
    write("admin_json", "times-fraction", "\x0290m\n1970-01-01T00:00:00.000000001Z")
    op = "\x03\x00"
    write("admin_json", "handle-create-partner", op + 'POST\n/admin/v1/partners\n{"name":"p"}')
    write("admin_json", "handle-create-account",
          op + 'POST\n/admin/v1/accounts\n{"plan_quota_bytes":1000,"device_limit":2,'
          '"status":"active"}')
    write("admin_json", "handle-list-accounts", op + "GET\n/admin/v1/accounts?limit=10\n")
    write("admin_json", "handle-status", op + "GET\n/admin/v1/status\n")
    write("admin_json", "handle-fsck", op + "GET\n/admin/v1/fsck\n")
    write("admin_json", "handle-devices", op + "GET\n/admin/v1/devices?stale_for=72h\n")
    write("admin_json", "handle-patch", op + 'PATCH\n/admin/v1/accounts/' + DEV +
          '\n{"status":"suspended"}')
    write("admin_json", "handle-no-key", "\x03\x02GET\n/admin/v1/jobs\n")


def record(name_bytes, payload_len, layout=2, hb=None):
    """A shard record header (storage/FORMAT.md) with a zero checksum: the targets patch it."""
    n = len(name_bytes)
    if hb is None:
        hb = (98 + n + 8 + 63) // 64 * 64
    h = struct.pack("<IHHIIBBBBIQqQ", 0x31535643, 1, hb, payload_len, 0, 1, 4, 2, layout,
                    262144, 1 << 20, 1700000000 * 10**9, 0)
    h += b"\0" * 32 + bytes.fromhex(DEV) + bytes([2, n]) + name_bytes
    return h + b"\0" * (hb - len(h))


def record_header():
    write("record_header", "patched-erasure", b"\x01" + record(SHA.encode(), 4000))
    write("record_header", "patched-config", b"\x01" + record(b"", 10, layout=1))
    write("record_header", "patched-tombstone", b"\x01" + record(SHA.encode(), 0, layout=3))
    write("record_header", "raw", b"\x00" + record(SHA.encode(), 100))
    fields = bytes([1, 4, 2, 3]) + struct.pack("<IIIQqQ", 7, 262144, 4096, 1 << 30, 5, 9)
    write("record_header", "fields", b"\x02" + fields + b"\x11" * 48 + b"\x02" + SHA.encode())


def scan_extent():
    block = 4096
    one = record(SHA.encode(), 100)
    write("scan_extent", "one-record", b"\x01" + one + b"\0" * (block - len(one)))
    two = bytearray(3 * block)
    two[0:len(one)] = one
    big = record(SHA.encode(), 5000)  # spans two blocks
    two[block:block + len(big)] = big
    write("scan_extent", "two-records", b"\x01" + bytes(two))
    pieces = b"".join(p + b"\0" * (512 - len(p)) for p in (
        record(SHA.encode(), 10), b"garbage", record(b"", 0, layout=3), record(SHA.encode(), 9000)))
    write("scan_extent", "pieces", b"\x02" + pieces)
    write("scan_extent", "garbage", b"\x00" + bytes(range(256)) * 20)


def courier_manifest():
    a, b = "ab" * 32, "0f" * 32
    write("courier_manifest", "drive",
          f"{a}  README.txt\n{b}  repo/config\n{a}  repo/data/5a/{SHA}\n{b}  repo/keys/{SHA}\n")
    write("courier_manifest", "no-final-newline", f"{a}  README.txt")
    write("courier_manifest", "utf8-name", f"{a}  repo/caf\u00e9 \u65e5\u672c.txt\n")
    write("courier_manifest", "dotdot", f"{a}  repo/../etc/passwd\n")
    write("courier_manifest", "duplicate", f"{a}  x\n{b}  x\n")
    write("courier_manifest", "upper-hex", f"{a.upper()}  x\n")
    write("courier_manifest", "binary-mode", f"{a} *x\n")
    write("courier_manifest", "empty", "")


def main():
    for gen in (http_head, names_ranges, admin_json, record_header, scan_extent, courier_manifest):
        gen()
    return 0


if __name__ == "__main__":
    sys.exit(main())
