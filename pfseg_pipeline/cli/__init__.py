"""The console commands: one module per command (parse the options, call the library, report).

Before any command imports torch: OpenMP's threads wait passively between parallel regions
(unless the environment sets OMP_WAIT_POLICY), so a multi-threaded CPU step does not stall on
cores it shares with loader workers or other processes (training/cpu_threads.py). OpenMP reads
the variable once, when torch loads it, so it is set here, in the commands' package.
"""

import os

from pfseg_pipeline.training.cpu_threads import WAIT_POLICY

os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
