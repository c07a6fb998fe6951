"""The console commands: one module per command (parse the options, call the library, report).

Before any command imports torch: OpenMP's threads wait passively between parallel regions
(unless the environment sets OMP_WAIT_POLICY), so a multi-threaded CPU step does not stall on
cores it shares with loader workers or other processes (training/cpu_threads.py). OpenMP reads
the variable once, when torch loads it, so it is set here, in the commands' package.
"""

import os

# OpenMP's wait between parallel regions: its default spins first, which on cores shared with any
# other busy process (a loader worker, another training, other users) stalls every region of a
# multi-threaded step. Defined here, not in training/: a prediction imports no training module.
WAIT_POLICY = "PASSIVE"

os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
