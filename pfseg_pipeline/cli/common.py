"""What every command shares: exit codes, one-line errors, logging beside the outputs.

Exit 0 on success, 2 on a user error (one line naming the file and the problem, no
traceback), 1 on an internal error (traceback, to be reported as a bug) or, in one line, on a
device that ran out of memory under pfseg's own plan (`errors.DeviceMemoryError`).
"""

from __future__ import annotations

import argparse
import errno
import logging
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from pfseg_pipeline import locks
from pfseg_pipeline.errors import DeviceMemoryError, UserError, VerificationError

EXIT_OK, EXIT_INTERNAL, EXIT_USER = 0, 1, 2
# OS errors that say something about the user's files or machine, not about pfseg
ENVIRONMENT_ERRNOS = {
    errno.EACCES: "permission denied (a read-only folder?)",
    errno.EPERM: "operation not permitted (a read-only folder?)",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "cannot write, the disk is full",
    errno.EDQUOT: "cannot write, the disk quota is exceeded",
}
log = logging.getLogger(__name__)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad options as a UserError (exit 2, one line)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}")


def add_common_args(parser: argparse.ArgumentParser, workspace: bool = True) -> None:
    """The options every command takes last: `--workspace` (where it has one) and `-v`."""
    if workspace:
        parser.add_argument("--workspace", default=None, metavar="DIR",
                            help="workspace folder (default: $PFSEG_HOME, else ./pfseg_data)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def setup_logging(log_file: Path | None = None, verbose: bool = False) -> None:
    """Log to stderr (INFO) and, when given, to a file beside the command's outputs."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_pfseg", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("numexpr").setLevel(logging.WARNING)  # pandas' "NumExpr defaulting to ..." line
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    stream._pfseg = True
    root.addHandler(stream)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(log_file, encoding="utf-8")
        except OSError:
            return  # the command itself reports unwritable folders with a clear line
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        fh._pfseg = True
        root.addHandler(fh)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call a command's body and turn its outcome into an exit code."""
    words = list(argv) if argv is not None else sys.argv[1:]
    locks.set_command(shlex.join([_command_name(main), *map(str, words)]))  # what a lock says it holds
    try:
        return int(main(argv) or 0)
    except VerificationError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: {len(exc.problems)} problem(s) found", file=sys.stderr)
        return EXIT_USER
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER
    except DeviceMemoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USER
    except OSError as exc:
        # a folder the user cannot write or a full disk that no stage turned into a UserError:
        # still the user's to fix, so one line naming the file (anything else is a bug)
        reason = ENVIRONMENT_ERRNOS.get(exc.errno or 0)
        if reason is None or exc.filename is None:
            return _internal_error()
        print(f"error: {exc.filename}: {reason}", file=sys.stderr)
        return EXIT_USER
    except Exception:
        return _internal_error()


def _command_name(main: Callable) -> str:
    """pfseg_train for pfseg_pipeline.cli.train.main (the console script's name)."""
    return "pfseg_" + getattr(main, "__module__", "command").rsplit(".", 1)[-1]


def _internal_error() -> int:
    traceback.print_exc()
    print("error: internal error (a bug in pfseg; please report it with the traceback above)",
          file=sys.stderr)
    return EXIT_INTERNAL


def entry_point(main: Callable[[Sequence[str] | None], int]) -> Callable[[], None]:
    """A console-script function: `sys.exit(run(main))`."""
    def _entry() -> None:
        sys.exit(run(main))
    return _entry
