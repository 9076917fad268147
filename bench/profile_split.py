#!/usr/bin/env python3
"""bench/profile_split.py MIB < perf-script-output: the server's CPU per MiB uploaded, by kind of work.

Reads `perf script -F tid,ip,sym,dso -G` (one line per sample, the symbol it hit) of a
profile_upload.sh run, classifies each sample by its shared object and symbol, and prints the
share and the milliseconds of CPU per MiB of body for each kind (perf sampled at 2999 Hz)."""
import collections
import re
import sys

HZ = 2999.0  # profile_upload.sh records with perf record -F 2999


def kind(sym, dso):
    """The kind of work a sample that hit `sym` in `dso` was doing."""
    if dso.startswith("libcrypto"):
        return "TLS decrypt (AES-GCM) + SHA-256 (libcrypto)"
    if dso.startswith("libssl"):
        return "TLS record layer (libssl)"
    if dso.startswith("libisal"):
        return "EC encode (ISA-L)"
    if dso.startswith("libxxhash"):
        return "XXH3"
    if dso.startswith("liblmdb"):
        return "index (LMDB)"
    if dso.startswith(("libc.so", "libstdc++")):
        if re.search(r"memmove|memcpy|memset", sym):
            return "copies and clears (libc)"
        return "malloc/free, other libc"
    if dso == "chunkvaultd" or dso.startswith(("libboost", "libprometheus")):
        if re.search(r"flat_buffer|dynamic_buffer|beast::http|basic_parser", sym):
            return "HTTP parsing and its buffer (Beast)"
        if "ssl::detail" in sym:
            return "TLS stream (Asio)"
        return "our code (upload path, sessions, metrics)"
    if dso == "[kernel.kallsyms]":
        if re.search(r"tcp|_copy_to_iter|skb|net_rx|ip_|__check_object_size|sock|inet|loopback|"
                     r"softirq|netif|napi", sym):
            return "kernel: TCP receive and its copy"
        if re.search(r"io_uring|io_|blk|bio|ext4|iowrite|virtio|vring|nvme|fsync|jbd2|iomap|dio|"
                     r"submit", sym):
            return "kernel: disk I/O (io_uring, block, ext4, virtio)"
        if re.search(r"schedule|switch|spin_unlock|wake|futex|irqentry|irq|hrtimer|tick|idle|rcu", sym):
            return "kernel: scheduling, wakeups, IRQ"
        return "kernel: other (syscalls, memory)"
    return "other"


def main():
    mib = float(sys.argv[1])
    kinds = collections.Counter()
    for line in sys.stdin:
        m = re.match(r"\s*\S+\s+[0-9a-f]+\s+(.*) \((.*)\)\s*$", line)
        if m:
            sym, dso = m.groups()
            kinds[kind(sym, dso.split("/")[-1])] += 1
    total = sum(kinds.values())
    if total == 0:
        sys.exit("profile_split: no samples on stdin")
    print(f"total {total} samples, {total / HZ * 1000 / mib:.2f} ms CPU per MiB")
    for k, n in kinds.most_common():
        print(f"{k:<52} {100.0 * n / total:5.1f}%  {n / HZ * 1000 / mib:.3f} ms/MiB")


if __name__ == "__main__":
    main()
