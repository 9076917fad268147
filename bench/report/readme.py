#!/usr/bin/env python3
"""bench/report/readme.py: copies the headline table of bench/results/REPORT.md into the
"Performance" section of the top-level README.md (creating the section before "Running a
node" if missing). Run from the source tree after bench/run.sh."""
import re
rep = open('bench/results/REPORT.md').read()
first = rep.splitlines()[2]
m = re.search(r'on (\S+ \S+) UTC', first)
when = m.group(1) if m else '?'
table = rep[rep.index('| figure |'):]
table = table[:table.index('\n\n')]
table = table.replace('](#', '](bench/results/REPORT.md#')
mode = 'quick' if 'Quick run' in first else 'full'
cmd = 'bench/run.sh --quick' if mode == 'quick' else 'bench/run.sh'
sec = f'''## Performance
`bench/run.sh --quick` (under 5 minutes) or `bench/run.sh` (full, time-bounded) installs the
peers from Debian packages, builds in Release, runs every benchmark and writes
[bench/results/REPORT.md](bench/results/REPORT.md) with its plots; see
[bench/README.md](bench/README.md). The table below is from a {mode} run (`{cmd}`, {when} UTC)
on this project's shared 2-core development machine while other builds ran: absolute
figures are that machine's, and the ratios compare figures measured in the same run with the
same loader and CPU pinning. nginx and rclone never fsync.

{table}

Plots: [object size](bench/results/size.png), [connections](bench/results/conns.png),
[index](bench/results/index.png), [RSS](bench/results/rss.png),
[erasure profiles](bench/results/ec.png), [degraded reads](bench/results/degraded.png),
[restic](bench/results/restic.png).

'''
readme = open('README.md').read()
if '## Performance\n' in readme:
    a = readme.index('## Performance\n')
    b = readme.index('\n## ', a + 5) + 1
    readme = readme[:a] + sec + readme[b:]
else:
    a = readme.index('## Running a node')
    readme = readme[:a] + sec + readme[a:]
open('README.md', 'w').write(readme)
