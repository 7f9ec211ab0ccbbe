"""Buffer-size sweep over the full default grid: ``python -m flowkit.bench sweep`` with
defaults chosen for one complete run in a few minutes on a two-core machine.

Grid: buffer sizes 256 B, 1, 4, 16, 64, 256 KiB and 1 MiB; 1, 2, 4 and 16 buffers per
channel; buffer timeouts 0, 1, 10 and 100 ms and disabled (only when full): 140 jobs of
300,000 records of about 100 bytes over 1,000 keys, parallelism 2, unpaced source, fast
sink. Writes ``sweep.csv``, ``sweep.json`` and (with matplotlib installed) ``sweep.png``
into ``buffer-sweep/``, and prints a table.

Every option of the command may be given to override the defaults, e.g.

    python benchmarks/buffer_sweep.py --slow-sink-us 20 --out buffer-sweep-slow
    python benchmarks/buffer_sweep.py --rate 5000 --records 5000 --buffer-sizes 1k,32k

See benchmarks/README.md for what each column means and how to read the plot.
"""

from __future__ import annotations

import sys

from flowkit.bench.__main__ import main

#: Arguments given before the user's (a later occurrence of an option wins).
DEFAULTS = [
    "--buffer-sizes",
    "256,1k,4k,16k,64k,256k,1M",
    "--buffers-per-channel",
    "1,2,4,16",
    "--timeouts",
    "0,1,10,100,none",
    "--records",
    "300000",
    "--record-size",
    "100",
    "--keys",
    "1000",
    "--parallelism",
    "2",
    "--out",
    "buffer-sweep",
    "--plot",
]


if __name__ == "__main__":
    sys.exit(main(["sweep", *DEFAULTS, *sys.argv[1:]]))
