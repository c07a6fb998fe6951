"""Errors a user can act on.

A `UserError` carries one line that names the file and the problem; the command-line
wrappers print it without a traceback and exit with code 2. Anything else is an internal
error (exit 1).
"""


class UserError(Exception):
    """A problem with the user's input, files or options: one clear line, exit code 2."""


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (at most `limit` characters), or its type's name
    when it has none: a third-party error quoted inside a one-line UserError."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


class VerificationError(UserError):
    """Several problems found at once; `problems` holds one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} problem(s) found:\n" + "\n".join(self.problems))


class DeviceMemoryError(Exception):
    """The device ran out of memory under a plan pfseg made: one line (no traceback), exit code 1,
    since the plan, not the user's input, was wrong; the line says how to plan again."""
