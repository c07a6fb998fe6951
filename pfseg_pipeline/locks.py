"""Locks on folders, so that two runs never write the same folder at once.

A folder that one run writes (a fold folder, a preprocessed dataset, a prediction output
folder) gets a lock file, `.pfseg.lock`, for as long as the run writes it. The lock says who
holds it: process id, host, boot id, the process's start time (from /proc), the command and
when it took the lock. A run that finds a live lock stops with one line naming the holder
(exit 2); nothing has been written by then.

- Creation is atomic: the content is written under a temporary name, then hard-linked to the
  lock's name, which fails when a lock exists (`O_CREAT | O_EXCL` where the file system has no
  hard links). A reader never sees half a lock, two runs never both create one.
- A lock whose holder is gone is stale and is taken over, with a log line: same host and boot,
  and the process id no longer runs, or runs a different process (its start time differs: the
  id was reused). A lock from another host is always taken as live (its process cannot be
  checked from here): the message names the file to delete if that run is gone. Taking over
  is serialised by `fcntl.flock` on the stale file, so two runs that find the same stale lock
  cannot both take it.
- Readers (`shared`): a run that only reads the folder (training reads the preprocessed cache)
  leaves a marker `.pfseg.reader.<host>.<pid>.json`; a writer refuses to start while a live
  reader's marker is there, and a reader refuses while a live writer holds the lock. Each
  announces itself first and looks for the other second, so of two that start together at
  least one sees the other.
- Within one process the locks are re-entrant (a run that holds a folder may take it again).

The command line a lock records is set by the command-line wrapper (`set_command`): the library
never reads sys.argv.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import write_error

log = logging.getLogger(__name__)

LOCK_FILE = ".pfseg.lock"
READER_PREFIX = ".pfseg.reader."
# a lock file without readable content is being written by its creator (the O_EXCL path only)
# for milliseconds; one older than this was left by a run killed between create and write
UNREADABLE_GRACE_SECONDS = 30.0
# how often to retry when the lock changes hands under us (a stale lock taken over by another run)
MAX_ATTEMPTS = 20
RETRY_SECONDS = 0.05

_command = "a Python session"
_held: dict[Path, int] = {}          # lock or marker path -> how often this process holds it
_held_guard = threading.Lock()


def set_command(text: str) -> None:
    """What the locks of this process record as its command (the CLI sets its command line)."""
    global _command
    _command = text


@dataclass(frozen=True)
class Holder:
    """Who holds a lock (the content of the lock file)."""

    pid: int
    host: str
    boot_id: str | None
    start_ticks: int | None     # the process's start time, clock ticks after boot (/proc/PID/stat)
    started: str                # when it took the lock, local time (ISO 8601)
    command: str

    @classmethod
    def this_process(cls) -> Holder:
        pid = os.getpid()
        return cls(pid, socket.gethostname(), _boot_id(), _start_ticks(pid),
                   dt.datetime.now().astimezone().isoformat(timespec="seconds"), _command)

    @classmethod
    def from_json(cls, data: object) -> Holder | None:
        try:
            return cls(int(data["pid"]), str(data["host"]), data.get("boot_id"), data.get("start_ticks"),
                       str(data.get("started", "?")), str(data.get("command", "?")))
        except (TypeError, KeyError, ValueError, AttributeError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, started {self.started}: {self.command}"

    def is_me(self) -> bool:
        me = Holder.this_process()
        return (self.pid, self.host, self.start_ticks) == (me.pid, me.host, me.start_ticks)

    def state(self) -> str:
        """'alive', 'dead' (its process is gone: the lock is stale) or 'unknown' (another host)."""
        if self.host != socket.gethostname():
            return "unknown"
        boot = _boot_id()
        if self.boot_id and boot and self.boot_id != boot:
            return "dead"   # the machine was restarted since
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return "dead"
        except PermissionError:
            pass            # a process of another user holds the pid
        now = _start_ticks(self.pid)
        if self.start_ticks is not None and now is not None and now != self.start_ticks:
            return "dead"   # the pid was reused by another process
        return "alive"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time after boot); None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its last ')'
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


# ---- the lock file ------------------------------------------------------------------------------
def _read(path: Path) -> tuple[bytes | None, float]:
    """(content, age in seconds) of a lock file; (None, 0) when it is gone."""
    try:
        content = path.read_bytes()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None, 0.0
    return content, age


def _parse(content: bytes) -> Holder | None:
    try:
        return Holder.from_json(json.loads(content.decode("utf-8")))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _create(path: Path, content: bytes) -> bool:
    """Create `path` holding `content` unless it exists (True when this call created it)."""
    tmp = path.with_name(f"{LOCK_FILE}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)   # atomic, fails when the lock exists: no reader sees half a lock
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
                raise
        # a file system without hard links: exclusive create, then write (readers allow a moment)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(path: Path, seen: bytes) -> bool:
    """Delete the lock file at `path` if it still holds `seen`; flock makes the check and the
    delete one step for every pfseg run, so of two runs taking over one stale lock one wins."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False             # another run is taking it over right now
        except OSError:
            pass                     # no flock on this file system: the inode check below remains
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            return False
        if not same or _read_fd(fd) != seen:
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)


def _read_fd(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


class Busy(UserError):
    """Another live pfseg run holds the lock (or is taking it right now)."""


def _busy(folder: Path, what: str, holder: Holder | None, path: Path, reading: bool = False) -> Busy:
    if holder is None:
        return Busy(f"{folder}: the {what} is being locked by another pfseg run right now ({path}); "
                         "try again in a moment")
    doing = "reading" if reading else "using"
    hint = ("wait for it to finish or stop it (a lock left by a killed run is taken over automatically)"
            if holder.state() == "alive" else
            f"pfseg cannot check a process on another host: if that run is gone, delete {path}")
    return Busy(f"{folder}: another pfseg run is {doing} this {what} ({holder.describe()}); {hint}")


def _holder_of(path: Path) -> tuple[bytes | None, Holder | None, str]:
    """(content, holder, state) of a lock file; state 'absent', 'alive', 'dead', 'unknown' or
    'young' (being written); an unreadable file past the grace period is 'dead'."""
    content, age = _read(path)
    if content is None:
        return None, None, "absent"
    holder = _parse(content)
    if holder is None:
        return content, None, "young" if age < UNREADABLE_GRACE_SECONDS else "dead"
    return content, holder, holder.state()


def _acquire(folder: Path, path: Path, what: str) -> None:
    content = json.dumps(asdict(Holder.this_process()), indent=1).encode() + b"\n"
    for _ in range(MAX_ATTEMPTS):
        if _create(path, content):
            return
        seen, holder, state = _holder_of(path)
        if state == "absent":
            continue
        if state == "young":
            time.sleep(RETRY_SECONDS)
            continue
        if state in ("alive", "unknown"):
            raise _busy(folder, what, holder, path)
        if _remove_stale(path, seen):
            log.warning("%s: took over the lock of a run that no longer runs (%s)", folder,
                        holder.describe() if holder else "an unreadable lock file")
        else:
            time.sleep(RETRY_SECONDS)
    raise _busy(folder, what, None, path)


def _live_reader(folder: Path) -> tuple[Holder, Path] | None:
    """A live reader of `folder` other than this process; stale markers are removed."""
    for marker in sorted(folder.glob(f"{READER_PREFIX}*.json")):
        _, holder, state = _holder_of(marker)
        if state in ("alive", "unknown") and not holder.is_me():
            return holder, marker
        if state == "dead":
            log.warning("%s: removing the marker of a reader that no longer runs (%s)", folder,
                        holder.describe() if holder else marker.name)
            marker.unlink(missing_ok=True)
    return None


@contextlib.contextmanager
def _reentrant(key: Path) -> Iterator[bool]:
    """Yield True when this process already holds `key` (then only counts it)."""
    with _held_guard:
        again = key in _held
        if again:
            _held[key] += 1
    try:
        yield again
    finally:
        if again:
            with _held_guard:
                _held[key] -= 1


def _mark_held(key: Path, held: bool) -> None:
    with _held_guard:
        if held:
            _held[key] = 1
        else:
            _held.pop(key, None)


@contextlib.contextmanager
def exclusive(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold `folder` for writing: no other run may write or read it meanwhile.

    `what` names the folder in messages ("fold folder", "preprocessed dataset", ...). Raises
    a UserError naming the holder when a live run holds it or reads it; takes over a stale lock.
    """
    folder = Path(folder).absolute()
    path = folder / LOCK_FILE
    with _reentrant(path) as again:
        if again:
            yield
            return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            _acquire(folder, path, what)
        except OSError as exc:
            raise write_error(folder, exc) from exc
        try:
            reader = _live_reader(folder)
            if reader is not None:
                raise _busy(folder, what, reader[0], reader[1], reading=True)
            _mark_held(path, True)
            yield
        finally:
            _mark_held(path, False)
            _release(path)


@contextlib.contextmanager
def shared(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Read `folder`: refuse while a live run holds it for writing, and keep writers out meanwhile."""
    folder = Path(folder).absolute()
    me = Holder.this_process()
    marker = folder / f"{READER_PREFIX}{me.host}.{me.pid}.json"
    with _reentrant(marker) as again:
        if again:
            yield
            return
        tmp = marker.with_name(f"{marker.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:  # written whole, then renamed: a writer never reads half a marker
            tmp.write_text(json.dumps(asdict(me), indent=1), encoding="utf-8")
            os.replace(tmp, marker)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(folder, exc) from exc
        try:
            check_free(folder, what)
            _mark_held(marker, True)
            yield
        finally:
            _mark_held(marker, False)
            marker.unlink(missing_ok=True)


def check_free(folder: str | os.PathLike, what: str) -> None:
    """Raise the busy UserError when a live run holds `folder`'s lock (creates nothing): a quick
    look before a command writes its log, so that a refused run leaves no trace."""
    folder = Path(folder).absolute()
    _, holder, state = _holder_of(folder / LOCK_FILE)
    if state in ("alive", "unknown") and not holder.is_me():
        raise _busy(folder, what, holder, folder / LOCK_FILE)


def _release(path: Path) -> None:
    """Delete our lock file (only if it is still ours: never another run's)."""
    content, holder, _ = _holder_of(path)
    if holder is not None and holder.is_me():
        path.unlink(missing_ok=True)
