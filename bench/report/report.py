#!/usr/bin/env python3
"""bench/report/report.py: turns what bench/run.sh measured into REPORT.md and PNG plots.

Reads RESULTS/data.tsv (curve, series, x, run, metric, value: one line per measured value) and
RESULTS/notes.tsv (curve, text: commands and caveats), computes min/median/max over the runs,
draws every curve with gnuplot (one generated script per figure) and writes RESULTS/REPORT.md: the
headline table (ratios measured in the same run, next to their goals), then one section per
curve with its figure, command, number of runs and a min/median/max table.
Python 3 standard library only.
"""
import argparse
import collections
import datetime
import os
import statistics
import subprocess
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
NAMES = {"cv": "chunkvaultd", "nginx": "nginx (no fsync)", "rclone": "rclone serve restic (no fsync)",
         "local": "restic to a local directory", "lmdb": "index alone"}
NGINX_NOTE = ("nginx and rclone never fsync: their 2xx means the bytes are in the page cache, and their "
              "restores come from it; chunkvaultd fdatasyncs its extents and commits its index before "
              "each 2xx and reads its shards with O_DIRECT.")


def load(results):
    data = collections.defaultdict(list)  # (curve, series, x, metric) -> values over the runs
    with open(os.path.join(results, "data.tsv")) as f:
        next(f)
        for line in f:
            curve, series, x, _run, metric, value = line.rstrip("\n").split("\t")
            try:
                data[(curve, series, x, metric)].append(float(value))
            except ValueError:
                pass  # an empty value: the measurement did not happen
    notes = collections.defaultdict(list)
    path = os.path.join(results, "notes.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                curve, _, text = line.rstrip("\n").partition("\t")
                notes[curve].append(text)
    return data, notes


class Report:
    def __init__(self, args, data, notes):
        self.a, self.data, self.notes = args, data, notes

    def values(self, curve, series, x, metric):
        return self.data.get((curve, series, str(x), metric), [])

    def med(self, curve, series, x, metric):
        v = self.values(curve, series, x, metric)
        return statistics.median(v) if v else None

    def xs(self, curve):
        return sorted({k[2] for k in self.data if k[0] == curve}, key=sort_key)

    def series(self, curve, metric):
        order = ["cv", "nginx", "rclone", "local", "lmdb"]
        found = {k[1] for k in self.data if k[0] == curve and k[3] == metric}
        return sorted(found, key=lambda s: (order.index(s) if s in order else 9, sort_key(s)))

    def nruns(self, curve):
        return max((len(v) for k, v in self.data.items() if k[0] == curve), default=0)

    def has(self, curve):
        return any(k[0] == curve for k in self.data)

    # ---- output helpers
    def cell(self, curve, series, x, metric, fmt="{:.1f}"):
        v = self.values(curve, series, x, metric)
        if not v:
            return "n/a"
        m = fmt.format(statistics.median(v))
        return m if len(v) == 1 else f"{m} ({fmt.format(min(v))}–{fmt.format(max(v))})"

    def table(self, curve, columns, xlabel, xfmt=str):
        """columns: list of (header, series, metric, fmt)"""
        out = ["| " + xlabel + " | " + " | ".join(c[0] for c in columns) + " |",
               "|---|" + "---:|" * len(columns)]
        for x in self.xs(curve):
            cells = [self.cell(curve, s, x, m, f) for _, s, m, f in columns]
            if any(c != "n/a" for c in cells):
                out.append(f"| {xfmt(x)} | " + " | ".join(cells) + " |")
        return "\n".join(out)

    def dat(self, name, curve, columns, xmap=lambda x: x):
        """Writes RESULTS/name.dat: x, then median min max for each (series, metric) column."""
        path = os.path.join(self.a.results, name + ".dat")
        with open(path, "w") as f:
            f.write("# x " + " ".join(f"{s}:{m}(median min max)" for s, m in columns) + "\n")
            for x in self.xs(curve):
                row = [str(xmap(x))]
                for s, m in columns:
                    v = self.values(curve, s, x, m)
                    row += ([f"{statistics.median(v):g}", f"{min(v):g}", f"{max(v):g}"] if v else ["NaN"] * 3)
                f.write(" ".join(row) + "\n")
        return path

    def plot(self, name, title, command, panels, runs=None):
        """panels: list of (ylabel, xlabel, logx, [(column index in .dat, label)], style).
        One PNG, side-by-side panels, the machine/command/runs stated in the title."""
        runs = runs or f"median of {self.nruns(name)} run(s)"
        cmds = [n for n in self.notes.get(name, []) if n.startswith(("command:", "end to end:", "purge:"))]
        px = max(460 * len(panels), 760)
        width = int(px / 6.5)  # characters of the title font that fit in the image
        lines = [f"{title}: {self.a.mode} run, {runs}, bars = min..max",
                 f"machine: {self.a.machine}; {self.a.pinning}"]
        for c in cmds or [command]:
            lines += textwrap.wrap(c, width)
        head = "\\n".join(lines)
        script = [f'set terminal pngcairo size {px},{400 + 13 * len(lines)} font ",8" noenhanced',
                  f'set output "{os.path.join(self.a.results, name + ".png")}"',
                  f'set multiplot layout 1,{len(panels)} title "{esc(head)}" font ",8"',
                  "set key below", "set grid", "set yrange [0:*]", f"set tmargin {len(lines) + 2}",
                  "set offsets graph 0.04, graph 0.04, 0, 0"]
        for ylabel, xlabel, logx, cols, style in panels:
            script += ["unset logscale x", "set xtics auto", 'set format x "%g"']
            if logx:
                script.append(f"set logscale x {logx}")
            if style == "profiles":
                script.append("set xrange [3:11]")
            elif style == "int":
                script += ["set xrange [*:*]", "set xtics 1"]
            elif style == "bars":  # column 1 is a label
                script += ["set xrange [*:*]", "set style data histograms",
                           "set style histogram errorbars gap 2 lw 1", "set style fill solid 0.6 border -1"]
            else:
                script.append("set xrange [*:*]")
            script += [f'set ylabel "{ylabel}"', f'set xlabel "{xlabel}"']
            plots = []
            for col, label in cols:
                c = 2 + 3 * col
                if style == "bars":
                    plots.append(f'"{self.datfile}" using {c}:{c + 1}:{c + 2}:xtic(1) title "{esc(label)}"')
                else:
                    plots.append(f'"{self.datfile}" using 1:{c}:{c + 1}:{c + 2} with yerrorlines lw 2 title "{esc(label)}"')
            script.append("plot " + ", ".join(plots))
        script.append("unset multiplot")
        gp = os.path.join(self.a.results, name + ".gp")
        with open(gp, "w") as f:
            f.write("\n".join(script) + "\n")
        r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
        os.unlink(gp)
        if r.returncode != 0:
            return f"(gnuplot failed: {r.stderr.strip()[:300]})"
        return f"![{title}]({name}.png)"

    def loader_busy(self, curve):
        """One sentence: the loader core's highest busy share per server (CPU time / wall time)."""
        busy = []
        for s in self.series(curve, "upload_mib_s"):
            v = [x for k, vals in self.data.items() if k[0] == curve and k[1] == s
                 and k[3].endswith("_loader_busy") for x in vals]
            if v:
                busy.append(f"{NAMES.get(s, s)} {100 * max(v):.0f}%")
        return ("Loader core busy at most (CPU time / wall time of a phase): " + ", ".join(busy) +
                "; near 100% a figure is the loader's limit (TLS, SHA-256), not the server's.") if busy else ""

    def section(self, curve, title, body):
        out = [f"## {title}", ""]
        cmds = [n for n in self.notes.get(curve, [])]
        if not self.has(curve):
            out.append("Not measured in this run." + (" " + " ".join(cmds) if cmds else ""))
            return "\n".join(out) + "\n"
        out.append(body)
        if cmds:
            out += [""] + [f"- {n}" for n in cmds]
        return "\n".join(out) + "\n"


def esc(s):
    return s.replace('"', "'")


def sort_key(x):
    try:
        return (0, float(x))
    except ValueError:
        if "+" in x:
            return (0, float(x.split("+")[0]))
        return (1, x)


def size_name(x):
    b = int(float(x))
    return f"{b >> 20} MiB" if b >= 1 << 20 else f"{b >> 10} KiB"


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def fmt_ratio(r, goal=None, lower_is_better=False):
    if r is None:
        return "n/a", ""
    met = "" if goal is None else ("yes" if (r <= goal if lower_is_better else r >= goal) else "**no**")
    return f"{r:.2f}", met


def headline(R):
    rows = []
    for op, peer, goal in (("upload", "nginx", 1.0), ("upload", "rclone", 2.0),
                           ("restore", "nginx", 1.0), ("restore", "rclone", None)):
        vals = []
        mets = []
        for x in (4 << 20, 16 << 20):
            r = ratio(R.med("size", "cv", x, f"{op}_mib_s"), R.med("size", peer, x, f"{op}_mib_s"))
            v, met = fmt_ratio(r, goal)
            vals.append(f"{v} ({x >> 20} MiB)")
            mets.append(met)
        met = "**no**" if "**no**" in mets else (mets[0] or "—")
        what = f"{op} MiB/s, chunkvaultd / {NAMES[peer]}, 4 conns"
        rows.append((what, ", ".join(vals), f">= {goal}" if goal else "none set", met, "size"))
    ec = [c / b for c, b in zip(R.values("ec", "4+2", 4, "codec_mib_s"), R.values("ec", "4+2", 4, "bare_mib_s"))]
    v, met = fmt_ratio(statistics.median(ec) if ec else None, 0.9)
    rows.append(("EC stage (`Codec::Encode`) / bare ISA-L `ec_encode_data`, 4+2", v, ">= 0.9", met, "ec"))
    ing = [e / r for e, r in zip(R.values("ingest", "4+2", 4, "engine_mb_s"), R.values("ingest", "4+2", 4, "raw_mb_s"))]
    v, met = fmt_ratio(statistics.median(ing) if ing else None, 0.8)
    rows.append(("engine ingest / raw sequential disk write, 4+2, 4 concurrent Puts", v, ">= 0.8", met, "ec"))
    p = R.med("micro", "purge", 0, "objects_per_s")
    rows.append(("device purge, small objects deleted per second", f"{p:,.0f}" if p else "n/a", ">= 50,000",
                 "" if p is None else ("yes" if p >= 50000 else "**no**"), "micro"))
    v, met = fmt_ratio(R.med("micro", "purge", 0, "p99_ratio"), 1.5, lower_is_better=True)
    rows.append(("other uploads' p99 during / without a purge", v, "<= 1.5", met, "micro"))
    v, met = fmt_ratio(R.med("micro", "courier", 0, "ratio"), 0.7)
    rows.append(("courier image write / plain sequential disk read", v, ">= 0.7", met, "micro"))
    cs = [int(x) for x in R.xs("rss")]
    if cs:
        lo, hi = min(cs), max(cs)
        a, b = R.med("rss", "cv", lo, "peak_rss_mib"), R.med("rss", "cv", hi, "peak_rss_mib")
        if a is not None and b is not None and hi > lo:
            per = (b - a) / (hi - lo)
            rows.append((f"chunkvaultd peak RSS at {hi} concurrent 16 MiB uploads; growth per upload",
                         f"{b:.0f} MiB; {per:.2f} MiB per upload", "<= 6 MiB per upload (4 stripes)",
                         "yes" if per <= 6 else "**no**", "rss"))
    d0, dm = R.med("degraded", "cv", 0, "restore_mib_s"), R.med("degraded", "cv", 2, "restore_mib_s")
    if d0 and dm:
        rows.append(("restore with m = 2 disks failed / with none (4+2)", f"{dm / d0:.2f}", "none set", "—", "degraded"))
    for phase in ("backup", "restore"):
        r = ratio(R.med("restic", "cv", phase, "seconds"), R.med("restic", "rclone", phase, "seconds"))
        if r:
            rows.append((f"restic {phase} wall time, through chunkvaultd / through rclone", f"{r:.2f}",
                         "none set (lower is better)", "—", "restic"))
    out = [f"Measured in one `bench/run.sh{' --quick' if R.a.mode == 'quick' else ''}` run "
           f"({R.nruns('size')} run(s) of each server per point); every ratio compares two figures measured in that run with the "
           "same loader and the same CPU pinning. Medians.", "",
           "| figure | measured | goal | met |", "|---|---:|---|---|"]
    for what, v, goal, met, curve in rows:
        out.append(f"| {what} ([curve](#{anchor(curve)})) | {v} | {goal} | {met or '—'} |")
    out += ["", NGINX_NOTE]
    return "\n".join(out)


ANCHORS = {"size": "1-upload-and-restore-vs-object-size", "conns": "2-uploads-vs-concurrent-connections",
           "index": "3-index-insert-rate-lookup-latency-and-size-vs-stored-objects",
           "rss": "4-peak-rss-vs-concurrent-16-mib-uploads",
           "ec": "5-erasure-profiles-ingest-and-bytes-written", "degraded": "6-degraded-reads",
           "restic": "7-restic-backup-and-restore-wall-time", "micro": "purge-and-courier"}


def anchor(curve):
    return ANCHORS[curve]


def main():
    ap = argparse.ArgumentParser()
    for opt in ("results", "mode", "machine", "pinning", "commit"):
        ap.add_argument("--" + opt, required=True)
    ap.add_argument("--budget", type=int, required=True)
    a = ap.parse_args()
    data, notes = load(a.results)
    R = Report(a, data, notes)
    meta = dict(n.split("=", 1) for n in notes.get("meta", []) if "=" in n)
    md = ["# chunkvault performance report", "",
          f"{'Quick' if a.mode == 'quick' else 'Full'} run of `bench/run.sh{' --quick' if a.mode == 'quick' else ''}` "
          f"on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit `{a.commit}`, "
          f"{meta.get('elapsed_s', '?')} s of a {a.budget} s budget (build excluded).", "",
          f"Machine: {a.machine}. {a.pinning}. Absolute numbers are this machine's only (2 shared "
          "cores: other builds ran meanwhile); compare the ratios. Raw values: [data.tsv](data.tsv).", "",
          "## Headline", "", headline(R), ""]

    peers3 = [p for p in ("cv", "nginx", "rclone") if R.series("size", "upload_mib_s").count(p)]
    if R.has("size"):
        R.datfile = R.dat("size", "size", [(p, m) for m in ("upload_mib_s", "restore_mib_s") for p in peers3],
                          xmap=lambda x: float(x) / (1 << 20))
        n = len(peers3)
        fig = R.plot("size", "Upload and restore vs object size", "loadgen, 4 TLS connections",
                     [("upload MiB/s", "object size (MiB)", 2, [(i, NAMES[p]) for i, p in enumerate(peers3)], ""),
                      ("restore MiB/s", "object size (MiB)", 2, [(n + i, NAMES[p]) for i, p in enumerate(peers3)], "")])
        body = fig + "\n\n" + R.table("size", [(f"{op} {NAMES[p]}", p, f"{op}_mib_s", "{:.1f}")
                                                for op in ("upload", "restore") for p in peers3],
                                       "object size", size_name)
        body += "\n\n" + NGINX_NOTE + " " + R.loader_busy("size")
    else:
        body = ""
    md.append(R.section("size", "1. Upload and restore vs object size", body))

    peers = R.series("conns", "upload_mib_s")
    body = ""
    if R.has("conns"):
        R.datfile = R.dat("conns", "conns", [(p, m) for m in ("upload_mib_s", "upload_p99_ms") for p in peers])
        n = len(peers)
        body = R.plot("conns", "Uploads vs concurrent connections", "loadgen, 1 MiB objects, uploads only",
                      [("upload MiB/s", "connections", 2, [(i, NAMES[p]) for i, p in enumerate(peers)], ""),
                       ("upload p99 latency (ms)", "connections", 2, [(n + i, NAMES[p]) for i, p in enumerate(peers)], "")])
        body += "\n\n" + R.table("conns", [(f"{NAMES[p]} MiB/s", p, "upload_mib_s", "{:.1f}") for p in peers] +
                                 [(f"{NAMES[p]} p99 ms", p, "upload_p99_ms", "{:.1f}") for p in peers], "connections")
        body += "\n\n" + R.loader_busy("conns")
    md.append(R.section("conns", "2. Uploads vs concurrent connections", body))

    body = ""
    if R.has("index"):
        cols = [("lmdb", m) for m in ("insert_per_s", "lookup_p50_us", "lookup_p99_us", "bytes_per_object")]
        cols += [("cv", "head_p50_ms"), ("cv", "head_p99_ms")]
        R.datfile = R.dat("index", "index", cols, xmap=lambda x: float(x) / 1e6)
        xl = "stored objects (millions)"
        body = R.plot("index", "Index: LMDB alone and HEAD through chunkvaultd", "index_bench; loadgen --head-names, 4 connections",
                      [("objects inserted per second", xl, 0, [(0, "durable batches of 1000")], ""),
                       ("lookup latency, index alone (µs)", xl, 0, [(1, "p50"), (2, "p99")], ""),
                       ("HEAD latency through chunkvaultd (ms)", xl, 0, [(4, "p50"), (5, "p99")], ""),
                       ("data.mdb bytes per object", xl, 0, [(3, "bytes/object")], "")],
                      runs="one run")
        body += "\n\n" + R.table("index", [("inserts/s", "lmdb", "insert_per_s", "{:,.0f}"),
                                           ("lookup p50 µs", "lmdb", "lookup_p50_us", "{:.1f}"),
                                           ("lookup p99 µs", "lmdb", "lookup_p99_us", "{:.1f}"),
                                           ("data.mdb bytes/object", "lmdb", "bytes_per_object", "{:.0f}"),
                                           ("HEAD p50 ms", "cv", "head_p50_ms", "{:.2f}"),
                                           ("HEAD p99 ms", "cv", "head_p99_ms", "{:.2f}")],
                                 "stored objects", lambda x: f"{int(float(x)):,}")
    md.append(R.section("index", "3. Index: insert rate, lookup latency and size vs stored objects", body))

    body = ""
    if R.has("rss"):
        R.datfile = R.dat("rss", "rss", [("cv", "peak_rss_mib"), ("cv", "start_rss_mib")])
        body = R.plot("rss", "chunkvaultd peak RSS", "loadgen C x 16 MiB over C connections, fresh process per point",
                      [("RSS (MiB)", "concurrent 16 MiB uploads", 2, [(0, "peak RSS (VmHWM)"), (1, "RSS after start-up")], "")])
        body += "\n\n" + R.table("rss", [("peak RSS MiB", "cv", "peak_rss_mib", "{:.0f}"),
                                         ("after start-up MiB", "cv", "start_rss_mib", "{:.0f}"),
                                         ("upload MiB/s", "cv", "upload_mib_s", "{:.1f}")], "concurrent uploads")
    md.append(R.section("rss", "4. Peak RSS vs concurrent 16 MiB uploads", body))

    body = ""
    if R.has("ec"):
        rows = ["| profile | bare ISA-L MiB/s | Codec MiB/s | engine ingest MB/s | raw write MB/s | engine/raw | disk bytes written per client byte |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        plist = R.series("ec", "codec_mib_s")
        path = os.path.join(a.results, "ec.dat")
        with open(path, "w") as f:
            f.write("# k codec(median min max) bare engine raw written_per_byte\n")
            for p in plist:
                k = p.split("+")[0]
                row = [k]
                for curve, m in (("ec", "codec_mib_s"), ("ec", "bare_mib_s"), ("ingest", "engine_mb_s"),
                                 ("ingest", "raw_mb_s"), ("ingest", "written_per_byte")):
                    v = R.values(curve, p, k, m)
                    row += [f"{statistics.median(v):g}", f"{min(v):g}", f"{max(v):g}"] if v else ["NaN"] * 3
                f.write(" ".join(row) + "\n")
                e, r = R.med("ingest", p, k, "engine_mb_s"), R.med("ingest", p, k, "raw_mb_s")
                rows.append(f"| {p} | {R.cell('ec', p, k, 'bare_mib_s', '{:.0f}')} | {R.cell('ec', p, k, 'codec_mib_s', '{:.0f}')} | "
                            f"{R.cell('ingest', p, k, 'engine_mb_s')} | {R.cell('ingest', p, k, 'raw_mb_s')} | "
                            f"{fmt_ratio(ratio(e, r))[0]} | {R.cell('ingest', p, k, 'written_per_byte', '{:.3f}')} |")
        R.datfile = path
        body = R.plot("ec", "Erasure profiles 4+2, 6+3, 8+3, 10+4 (x = k)", "ec_bench and ingest_bench, not pinned",
                      [("encode MiB/s (data bytes)", "k (data shards)", 0, [(0, "Codec::Encode"), (1, "bare ISA-L")], "profiles"),
                       ("ingest MB/s (client bytes)", "k (data shards)", 0, [(2, "engine (durable Puts)"), (3, "raw sequential write")], "profiles"),
                       ("disk bytes written / client byte", "k (data shards)", 0, [(4, "engine (/proc/self/io)")], "profiles")],
                      runs="ec_bench: median of 3 alternated runs, ingest_bench: of its rounds")
        body += "\n\n" + "\n".join(rows) + "\n\n(k+m)/k is 1.5, 1.5, 1.375 and 1.4; the rest is shard headers, padding of the last stripe and LMDB."
    md.append(R.section("ec", "5. Erasure profiles: ingest and bytes written", body))

    body = ""
    if R.has("degraded"):
        R.datfile = R.dat("degraded", "degraded", [("cv", "restore_mib_s")])
        body = R.plot("degraded", "Degraded reads (4+2)", "loadgen 16 MiB objects, 4 connections; disk folders removed while serving",
                      [("restore MiB/s", "failed disks", 0, [(0, "chunkvaultd restore")], "int")])
        body += "\n\n" + R.table("degraded", [("restore MiB/s", "cv", "restore_mib_s", "{:.1f}"),
                                              ("restore p99 ms", "cv", "restore_p99_ms", "{:.1f}"),
                                              ("disks marked failed in the log", "cv", "disks_marked_failed", "{:.0f}")],
                                 "failed disks")
    md.append(R.section("degraded", "6. Degraded reads", body))

    body = ""
    if R.has("restic"):
        series = R.series("restic", "seconds")
        rows = ["| restic repository | backup s | restore s |", "|---|---:|---:|"]
        for s in series:
            rows.append(f"| {NAMES.get(s, s)} | {R.cell('restic', s, 'backup', 'seconds', '{:.2f}')} | "
                        f"{R.cell('restic', s, 'restore', 'seconds', '{:.2f}')} |")
        path = os.path.join(a.results, "restic.dat")
        with open(path, "w") as f:
            f.write("# phase, then median min max per series\n")
            for phase in ("backup", "restore"):
                row = [phase]
                for s in series:
                    v = R.values("restic", s, phase, "seconds")
                    row += [f"{statistics.median(v):g}", f"{min(v):g}", f"{max(v):g}"] if v else ["NaN"] * 3
                f.write(" ".join(row) + "\n")
        R.datfile = path
        body = R.plot("restic", "restic backup and restore wall time", "restic client on the loader core",
                      [("seconds (lower is better)", "", 0, [(i, NAMES.get(s, s)) for i, s in enumerate(series)], "bars")])
        body += ("\n\n" + "\n".join(rows) + "\n\nThe restic client (chunking, SHA-256, encryption, on one core) "
                 "dominates these times: restic to a local directory is the client-side floor, and what a "
                 "server adds is the difference to it.")
    md.append(R.section("restic", "7. restic backup and restore wall time", body))

    body = ""
    if R.has("micro"):
        body = ("| benchmark | figure | median (min–max) |\n|---|---|---:|\n"
                f"| purge_bench | small objects purged per second | {R.cell('micro', 'purge', 0, 'objects_per_s', '{:,.0f}')} |\n"
                f"| purge_bench | other uploads' p99 during / without purge | {R.cell('micro', 'purge', 0, 'p99_ratio', '{:.2f}')} |\n"
                f"| courier_bench | courier MB/s | {R.cell('micro', 'courier', 0, 'courier_mb_s')} |\n"
                f"| courier_bench | plain read MB/s | {R.cell('micro', 'courier', 0, 'read_mb_s')} |\n"
                f"| courier_bench | courier / read | {R.cell('micro', 'courier', 0, 'ratio', '{:.3f}')} |")
        if R.values("micro", "courier", 0, "bound"):
            body += ("\n| courier_bench | one SHA-256 pass on one core / read: the highest courier / read "
                     "any job that lists its image's SHA-256 can reach | "
                     f"{R.cell('micro', 'courier', 0, 'bound', '{:.3f}')} |")
    md.append(R.section("micro", "Purge and courier", body))

    for extra in sorted(set(notes) - {"meta", "size", "conns", "index", "rss", "ec", "degraded", "restic", "micro"}):
        md += [f"- {extra}: {n}" for n in notes[extra]]
    with open(os.path.join(a.results, "REPORT.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print(os.path.join(a.results, "REPORT.md"))


if __name__ == "__main__":
    main()
