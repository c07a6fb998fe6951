"""Atomic file writing and safe reading: no partial file ever looks complete, no pickle.

Every writer writes to a temporary name in the destination folder and renames it into place
(`os.replace` is atomic on POSIX), so a crash or a full disk leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pfseg_pipeline.errors import UserError

HASH_CHUNK = 1 << 20   # bytes read at a time while hashing a file


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes (hex), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only (0600); finished files get the usual
# permissions (0666 less the umask, as open() would give), so a shared dataset stays readable.
_FILE_MODE = 0o666 & ~_current_umask()


def write_error(path: Path, exc: OSError) -> UserError:
    """The one line for an OSError while writing `path` (a file, or a folder being written into)."""
    if exc.errno == errno.ENOSPC:
        return UserError(f"{path}: cannot write, the disk is full")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return UserError(f"{path}: cannot write, permission denied (read-only folder?)")
    return UserError(f"{path}: cannot write ({exc.strerror or exc})")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`.

    The temporary name keeps the final suffix (some writers look at it, e.g. nibabel picks
    gzip from '.gz'). On any error the temporary file is removed and the destination is left
    as it was; OSErrors become a `UserError` naming the destination.
    """
    path = Path(path)
    suffix = suffix if suffix is not None else "".join(path.suffixes[-2:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem[:40]}.", suffix=f".tmp{suffix}",
                                        dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise write_error(path, exc) from exc
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise write_error(path, exc) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file is a `UserError` naming it."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise UserError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def save_npz(path: str | os.PathLike, compress: bool = False, **arrays: np.ndarray) -> None:
    """Write arrays to an .npz atomically (no object arrays: they would need pickle)."""
    for name, arr in arrays.items():
        if np.asarray(arr).dtype == object:
            raise TypeError(f"array {name!r} has dtype object, which would need pickle")
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def load_npz(path: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Load every array of an .npz (or those of `names` it holds) into memory, never unpickling; a
    corrupt file is a UserError."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files if names is None or k in names}
    except FileNotFoundError as exc:
        raise UserError(f"{path}: file not found") from exc
    except Exception as exc:  # zipfile.BadZipFile, ValueError, EOFError, zlib.error ...
        raise UserError(f"{path}: corrupt or truncated npz ({type(exc).__name__}: {exc})") from exc
