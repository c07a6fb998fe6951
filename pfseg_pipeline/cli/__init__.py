"""The console commands: one module per command (parse the options, call the library, report).

Before any command imports torch, the OpenMP environment (`OPENMP_ENV`, each variable only where
the environment does not set it): a thread that finishes a parallel region spins for a bounded
while (GNU OpenMP's GOMP_SPINCOUNT, the runtime of torch's Linux wheels), then sleeps; other
OpenMP runtimes, which do not read that count, sleep at once (OMP_WAIT_POLICY=PASSIVE). OpenMP
reads them once, when torch loads it, so they are set here, in the commands' package.

Why a bounded spin (bench omp_wait, docs/BENCHMARKS.md): a CPU training step runs thousands of
short parallel regions. A long spin (OpenMP's default, 300,000 spins) stalls every region on cores
shared with another busy process (a loader worker, another training, other users); sleeping at
once pays a wake-up per region, which cost PFSeg's step 1.4x and ResUNet3D's 2.1x on idle
cores. 30,000 spins stayed within 12 % of the fastest wait in every case measured, idle and
shared, PFSeg and ResUNet3D (the bench's rule: the smallest worst ratio to the fastest wait; 3,000
came to 1.44x, OpenMP's default 1.87x, passive alone 2.08x; an earlier run: 1.04x for 30,000).
"""

import os

# Defined here, not in training/: a prediction imports no training module.
WAIT_POLICY = "PASSIVE"
SPIN_COUNT = "30000"     # GNU OpenMP's default is 300000 (0 under PASSIVE alone)
OPENMP_ENV = {"OMP_WAIT_POLICY": WAIT_POLICY, "GOMP_SPINCOUNT": SPIN_COUNT}

for _name, _value in OPENMP_ENV.items():
    os.environ.setdefault(_name, _value)
