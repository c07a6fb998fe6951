"""Run pfseg_train with training steps that take long (used as a subprocess by
test_train_signals.py; not a test module).

    python slow_step_runner.py FAST SECONDS -- ARGV...

The first FAST training steps run as usual; every later one first sleeps SECONDS, the way one
full-size PFSeg iteration on a CPU takes minutes. The sleep is interruptible (a signal handler
that raises ends it), so a stop that works during it works during a real step too, once the
running operator returns.
"""

import sys
import time

from pfseg_pipeline.cli import train
from pfseg_pipeline.training import trainer


def main() -> None:
    fast, seconds, sep, *argv = sys.argv[1:]
    if sep != "--":
        sys.exit(f"usage: {__doc__}")
    real_step, calls = trainer.train_step, [0]

    def slow_step(*args, **kwargs):
        calls[0] += 1
        if calls[0] > int(fast):
            time.sleep(float(seconds))
        return real_step(*args, **kwargs)

    trainer.train_step = slow_step
    sys.argv = ["pfseg_train", *argv]
    train.console()


if __name__ == "__main__":
    main()
