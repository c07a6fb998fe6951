"""Run a pfseg command and SIGKILL it at a deterministic point (used as a subprocess by
test_crash_safety.py; not a test module).

    python crash_runner.py MODULE PATTERN K WHEN -- ARGV...

runs `pfseg_pipeline.cli.MODULE.console()` with ARGV, and when the K-th file whose name matches
PATTERN (fnmatch) is about to be renamed into place (WHEN=before: its temporary file is fully
written, the final name not yet there) or has just been renamed (WHEN=after), the process sends
itself SIGKILL: no handler, no `finally`, no atexit runs, exactly as `kill -9` from outside.
Every atomic writer of pfseg (fileio.atomic_path) ends with `os.replace`, which is where the
hook sits. PATTERN '-' runs the command without a kill.
"""

import fnmatch
import importlib
import os
import signal
import sys
from pathlib import Path


def main() -> None:
    module, pattern, k, when, sep, *argv = sys.argv[1:]
    if sep != "--" or when not in ("before", "after"):
        sys.exit(f"usage: {__doc__}")
    k = int(k)
    if pattern != "-":
        real_replace = os.replace
        seen = [0]

        def replace(src, dst, *args, **kwargs):
            hit = fnmatch.fnmatch(Path(os.fspath(dst)).name, pattern)
            if hit:
                seen[0] += 1
                if seen[0] == k and when == "before":
                    os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst, *args, **kwargs)
            if hit and seen[0] == k and when == "after":
                os.kill(os.getpid(), signal.SIGKILL)

        os.replace = replace
    command = importlib.import_module(f"pfseg_pipeline.cli.{module}")
    sys.argv = [f"pfseg_{module}", *argv]
    command.console()


if __name__ == "__main__":
    main()
