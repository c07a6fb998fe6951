"""A model package as a zip: written reproducibly, unpacked only after every member is checked.

A package comes from someone else, so nothing in it is trusted until checked. From the zip's
directory, before anything is written: the member count; each name (no absolute path, no `..`,
no backslash, plain names at most one folder deep, none twice); each entry's type (no symbolic
link or other special file, as recorded in its Unix mode bits; no encryption; stored or deflated
only); each file type (JSON, Markdown, safetensors, ONNX, and TorchScript only in a torchscript
package; a pickle file such as .pt or .pkl is refused by name); the manifest's list (every
member listed, with its size); each size and the total against `Limits`, and the ratio of
unpacked to packed size (a zip bomb). While unpacking, each member's bytes: its SHA-256 against
the manifest, no pickle stream (its opening bytes) and no nested zip archive (a `torch.save`
file is one) outside a TorchScript member, JSON that parses, UTF-8 Markdown, a well-formed
safetensors header. A refused package is one `UserError` line naming the zip and the member,
and leaves nothing behind: members are unpacked into a temporary folder renamed into place at
the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import atomic_path
from pfseg_pipeline.model_package.manifest import MANIFEST, WEIGHT_SUFFIXES, Manifest

GIB, MIB = 2 ** 30, 2 ** 20
# a reproducible zip: the same export gives the same bytes (zip's earliest date)
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
TEXT_SUFFIXES = (".json", ".md")
ALLOWED_SUFFIXES = TEXT_SUFFIXES + tuple(WEIGHT_SUFFIXES.values())
# files that hold a pickle (torch.save, pickle, joblib, numpy object arrays): never in a package
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".npy", ".npz", ".joblib", ".tar")
PICKLE_MAGIC = tuple(bytes([0x80, protocol]) for protocol in range(2, 6))   # PROTO opcode, protocols 2-5
ZIP_MAGIC = b"PK\x03\x04"
CHUNK = MIB


@dataclass(frozen=True)
class Limits:
    """What a package may hold. The defaults leave room for 5 folds of a network 50x the
    paper's (10 M float32 parameters, 40 MB) and refuse what no export of ours writes."""

    members: int = 1000
    member_bytes: int = 2 * GIB        # ONNX's own limit for one graph file (protobuf)
    total_bytes: int = 12 * GIB
    ratio: float = 100.0               # deflated JSON packs 5-20x; zeros pack about 1000x
    ratio_from_bytes: int = MIB        # smaller members cannot fill a disk, whatever their ratio
    manifest_bytes: int = MIB


DEFAULT_LIMITS = Limits()


def is_package_zip(path: str | os.PathLike) -> bool:
    """Whether `path` is a file in zip format (a folder or anything else is not)."""
    path = Path(path)
    return path.is_file() and zipfile.is_zipfile(path)


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_package(path: str | os.PathLike, members: Mapping[str, bytes]) -> Path:
    """Write `members` (name -> bytes) as a zip, atomically; weights stored, text deflated."""
    path = Path(path)
    with atomic_path(path, suffix=".zip") as tmp:
        with open(tmp, "wb") as f:
            with zipfile.ZipFile(f, "w", allowZip64=True) as archive:
                for name, data in members.items():
                    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
                    info.create_system = 3                              # Unix mode bits below
                    info.external_attr = (stat.S_IFREG | 0o644) << 16
                    # float weights barely deflate (a few per cent); stored, they unpack at disk speed
                    info.compress_type = (zipfile.ZIP_DEFLATED if name.endswith(TEXT_SUFFIXES)
                                          else zipfile.ZIP_STORED)
                    archive.writestr(info, data)
            f.flush()
            os.fsync(f.fileno())
    return path


# ---- checking ---------------------------------------------------------------------------------
def _name_problem(name: str) -> str | None:
    """What is wrong with a member's name (None when it is a plain relative name)."""
    if "\\" in name or "\x00" in name:
        return "has a backslash or NUL in its name"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        return "climbs out of the package (..)"
    if any(p in ("", ".") for p in parts):
        return "has an empty or '.' path component"
    if any(not (p[0].isalnum() or p[0] == "_") or not all(c.isalnum() or c in "._-" for c in p)
           or not p.isascii() for p in parts):
        return "has a name outside [A-Za-z0-9._-] (or one starting with '.' or '-')"
    if len(parts) > 2:
        return "lies deeper than one folder (fold_K/...)"
    return None


def _entry_problem(info: zipfile.ZipInfo, package_format: str | None) -> str | None:
    """What is wrong with a member's type, flags or file type (None when nothing is)."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "is not a regular file (a device, pipe or socket)"
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"is compressed with zip method {info.compress_type} (pfseg writes stored or deflated members)"
    if info.is_dir():
        return None
    suffix = PurePosixPath(info.filename).suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return f"is a pickle file ({suffix}): pfseg packages hold safetensors, ONNX or JSON, never pickle"
    if suffix not in ALLOWED_SUFFIXES:
        return f"has a file type pfseg packages never hold ({suffix or 'no suffix'})"
    if suffix == WEIGHT_SUFFIXES["torchscript"] and package_format not in (None, "torchscript"):
        return f"is a TorchScript file in a {package_format} package"
    return None


def _refused(zip_path: Path, name: str, problem: str) -> UserError:
    return UserError(f"{zip_path}: refused: member {name!r} {problem}")


def _open(zip_path: Path) -> zipfile.ZipFile:
    if not zip_path.is_file():
        raise UserError(f"{zip_path}: model package not found")
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"{zip_path}: not a readable zip file ({exc})") from None


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    data = bytearray()
    with archive.open(info) as stream:
        while chunk := stream.read(CHUNK):
            data += chunk
            if len(data) > limit:
                raise ValueError(f"unpacks to more than {limit} bytes")
    return bytes(data)


def check_package(zip_path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS
                  ) -> tuple[Manifest, list[zipfile.ZipInfo]]:
    """The manifest and file members of a package, after every check its directory allows.

    Raises a UserError (one line naming the zip and the member) on the first problem.
    """
    zip_path = Path(zip_path)
    with _open(zip_path) as archive:
        infos = archive.infolist()
        if len(infos) > limits.members:
            raise UserError(f"{zip_path}: refused: {len(infos)} members (at most {limits.members})")
        seen: set[str] = set()
        for info in infos:
            problem = _name_problem(info.filename) or _entry_problem(info, None)
            if problem is None and info.filename.rstrip("/") in seen:
                problem = "appears twice"
            if problem:
                raise _refused(zip_path, info.filename, problem)
            seen.add(info.filename.rstrip("/"))
        by_name = {i.filename: i for i in infos if not i.is_dir()}
        if MANIFEST not in by_name:
            raise UserError(f"{zip_path}: not a pfseg model package (no {MANIFEST}; make one with "
                            "pfseg_export_model)")
        try:
            raw = _read_member(archive, by_name[MANIFEST], limits.manifest_bytes)
            manifest = Manifest.from_json(json.loads(raw.decode("utf-8")), f"{zip_path}: {MANIFEST}")
        except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, OSError) as exc:
            raise _refused(zip_path, MANIFEST, f"is not readable JSON ({exc})") from None
    files = [i for name, i in by_name.items() if name != MANIFEST]
    for info in files:
        problem = _entry_problem(info, manifest.format)
        if problem is None and info.filename not in manifest.files:
            problem = f"is not listed in {MANIFEST}"
        if problem is None and info.file_size != manifest.files[info.filename]["bytes"]:
            problem = (f"is {info.file_size} bytes, {MANIFEST} says "
                       f"{manifest.files[info.filename]['bytes']}")
        if problem is None and info.file_size > limits.member_bytes:
            problem = f"declares {info.file_size} bytes unpacked, over the limit of {limits.member_bytes}"
        if (problem is None and info.file_size > limits.ratio_from_bytes
                and info.file_size > limits.ratio * max(1, info.compress_size)):
            problem = (f"would unpack to {info.file_size / max(1, info.compress_size):.0f}x its packed size "
                       f"(at most {limits.ratio:g}x: a zip bomb?)")
        if problem:
            raise _refused(zip_path, info.filename, problem)
    missing = sorted(set(manifest.files) - {i.filename for i in files})
    if missing:
        raise UserError(f"{zip_path}: refused: {MANIFEST} lists {missing[0]!r}, which the zip lacks")
    total = sum(i.file_size for i in files)
    if total > limits.total_bytes:
        raise UserError(f"{zip_path}: refused: {total} bytes unpacked in all, over the limit of "
                        f"{limits.total_bytes}")
    return manifest, files


def _content_problem(name: str, head: bytes, path: Path) -> str | None:
    """What is wrong with an unpacked member's bytes (`head`: its first bytes)."""
    if head.startswith(PICKLE_MAGIC):
        return "holds a pickle stream"
    suffix = PurePosixPath(name).suffix.lower()
    if head.startswith(ZIP_MAGIC) and suffix != WEIGHT_SUFFIXES["torchscript"]:
        return "holds a zip archive (a torch.save file?)"
    if suffix in TEXT_SUFFIXES:
        try:
            text = path.read_bytes().decode("utf-8")
            if suffix == ".json":
                json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            return f"is not valid {'JSON' if suffix == '.json' else 'UTF-8 text'} ({exc})"
    if suffix == WEIGHT_SUFFIXES["pytorch"]:
        from pfseg_pipeline.model_package.weights import safetensors_problem

        return safetensors_problem(path)
    return None


def extract_package(zip_path: str | os.PathLike, destination: str | os.PathLike,
                    limits: Limits = DEFAULT_LIMITS) -> Manifest:
    """Check and unpack a package into `destination`, a folder that must not exist yet.

    Members go to a temporary folder beside `destination`, renamed into place when every one
    has passed; on any problem the temporary folder is removed and a UserError raised.
    """
    zip_path, destination = Path(zip_path), Path(destination)
    if destination.exists():
        raise UserError(f"{destination}: already exists (unpacking needs a new folder)")
    manifest, files = check_package(zip_path, limits)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name[:40]}.", suffix=".unpacking",
                                    dir=destination.parent))
    try:
        with _open(zip_path) as archive:
            for info in files + [archive.getinfo(MANIFEST)]:
                _extract_member(zip_path, archive, info, staging, manifest, limits)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _extract_member(zip_path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, staging: Path,
                    manifest: Manifest, limits: Limits) -> None:
    target = staging.joinpath(*info.filename.split("/"))
    digest, size, head = hashlib.sha256(), 0, b""
    limit = limits.manifest_bytes if info.filename == MANIFEST else min(info.file_size, limits.member_bytes)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)    # fails where a file took the folder's name
        with archive.open(info) as stream, open(target, "xb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _refused(zip_path, info.filename, f"unpacks to more than its {limit} bytes")
                if len(head) < 8:
                    head += chunk[:8]
                digest.update(chunk)
                out.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:   # CRC error, truncated stream ...
        raise _refused(zip_path, info.filename, f"cannot be unpacked ({exc})") from None
    if info.filename != MANIFEST:
        expected = manifest.files[info.filename]
        if size != expected["bytes"] or digest.hexdigest() != expected["sha256"]:
            raise _refused(zip_path, info.filename, f"differs from its SHA-256 in {MANIFEST}")
    problem = _content_problem(info.filename, head, target)
    if problem:
        raise _refused(zip_path, info.filename, problem)


@contextlib.contextmanager
def unpacked(zip_path: str | os.PathLike, limits: Limits = DEFAULT_LIMITS) -> Iterator[Path]:
    """Yield the folder a package unpacks to, in a temporary folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pfseg-model-") as tmp:
        folder = Path(tmp) / "model"
        extract_package(zip_path, folder, limits)
        yield folder
