"""Makers of bad (and odd but valid) inputs, and fault injectors; every file is generated here.

Nothing in tests/bad_inputs is a committed data file: each test copies the tiny synthetic
dataset (tests/conftest.py) or a tiny model folder and damages one file of one case.
"""

from __future__ import annotations

import builtins
import errno
import gzip
import io
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

CASES = ("BraTS20_Training_001", "BraTS20_Training_002", "BraTS20_Training_003")
BAD = CASES[1]                 # the case each fault damages
GOOD = (CASES[0], CASES[2])    # the cases a batch command must still finish
MODALITIES = ("t1", "t1ce", "t2", "flair")
CHANNEL_NAMES = {"0": "t1", "1": "t1ce", "2": "t2", "3": "flair"}


# ---- where the files of the synthetic dataset are -----------------------------------------------
def image_file(raw: Path, case: str = BAD, modality: str = "t1ce") -> Path:
    return raw / case / f"{case}_{modality}.nii.gz"


def label_file(raw: Path, case: str = BAD) -> Path:
    return raw / case / f"{case}_seg.nii.gz"


def copy_tree(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def predictions_from_labels(raw: Path, out: Path) -> Path:
    """A folder of perfect predictions `<case>.nii.gz` (copies of the reference labels)."""
    out.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        shutil.copyfile(label_file(raw, case), out / f"{case}.nii.gz")
    return out


def to_nnunet(raw: Path, dest: Path, dataset: dict | None = None) -> Path:
    """The BraTS-layout dataset rewritten as an nnU-Net raw dataset (imagesTr/, labelsTr/)."""
    (dest / "imagesTr").mkdir(parents=True)
    (dest / "labelsTr").mkdir()
    for case in CASES:
        for k, modality in enumerate(MODALITIES):
            shutil.copyfile(image_file(raw, case, modality), dest / "imagesTr" / f"{case}_{k:04d}.nii.gz")
        shutil.copyfile(label_file(raw, case), dest / "labelsTr" / f"{case}.nii.gz")
    if dataset is None:
        dataset = nnunet_dataset_json()
    import json
    (dest / "dataset.json").write_text(json.dumps(dataset))
    return dest


def nnunet_dataset_json() -> dict:
    return {"channel_names": dict(CHANNEL_NAMES),
            "labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 4},
            "numTraining": len(CASES), "file_ending": ".nii.gz"}


# ---- damaging one NIfTI file (in place, keeping its name) ------------------------------------
def _like(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    """Write `data` (X, Y, Z storage order) to `path` with the header of the file there now."""
    img = nib.load(str(path))
    header = img.header.copy()
    header.set_data_dtype(data.dtype)
    out = nib.Nifti1Image(data, img.affine if affine is None else affine, header=header)
    if affine is not None:
        out.set_qform(affine, code=1)
        out.set_sform(affine, code=1)
    nib.save(out, str(path))


def truncate(path: Path) -> None:
    """Cut the gzip stream in half: the header still parses, the voxels end early."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def not_gzip(path: Path) -> None:
    """An uncompressed NIfTI stored under the .nii.gz name."""
    path.write_bytes(gzip.decompress(path.read_bytes()))


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def four_d(path: Path) -> None:
    data = np.asanyarray(nib.load(str(path)).dataobj)
    _like(path, np.stack([data, data], axis=-1))


def two_d(path: Path) -> None:
    data = np.asanyarray(nib.load(str(path)).dataobj)
    _like(path, np.ascontiguousarray(data[:, :, data.shape[2] // 2]))


def nan_voxels(path: Path) -> None:
    data = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    data[3, 4, 5] = np.nan
    data[4, 4, 5] = np.inf
    _like(path, data)


def all_zero(path: Path) -> None:
    data = np.asanyarray(nib.load(str(path)).dataobj)
    _like(path, np.zeros_like(data))


def other_shape(path: Path) -> None:
    data = np.asanyarray(nib.load(str(path)).dataobj)
    _like(path, np.ascontiguousarray(data[:-2]))


def shifted_affine(path: Path, mm: float = 2.0) -> None:
    img = nib.load(str(path))
    affine = img.affine.copy()
    affine[:3, 3] += mm
    _like(path, np.asanyarray(img.dataobj), affine)


def label_value_7(path: Path) -> None:
    data = np.asanyarray(nib.load(str(path)).dataobj).copy()
    data[2, 2, 2] = 7
    _like(path, data)


def label_other_grid(path: Path) -> None:
    """The label map one voxel shorter along x: on another grid than its images."""
    data = np.asanyarray(nib.load(str(path)).dataobj)
    _like(path, np.ascontiguousarray(data[:-1]))


def scaled_int16(path: Path) -> None:
    """Re-store an image as int16 with scl_slope 0.5 / scl_inter 10 (same real values)."""
    img = nib.load(str(path))
    values = np.asarray(img.dataobj, dtype=np.float64)
    raw = np.rint((values - 10.0) / 0.5).astype(np.int16)
    header = img.header.copy()
    header.set_data_dtype(np.int16)
    out = nib.Nifti1Image(raw, img.affine, header=header)
    out.header.set_slope_inter(0.5, 10.0)
    nib.save(out, str(path))


def oblique_case(case_dir: Path, degrees: float = 12.0, ras: bool = False) -> None:
    """Every file of a case moved onto an oblique (rotated) grid, optionally with RAS voxel axes."""
    theta = np.deg2rad(degrees)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    for path in sorted(case_dir.glob("*.nii*")):
        img = nib.load(str(path))
        affine = img.affine.copy()
        linear = affine[:3, :3]
        if ras:
            linear = np.abs(linear)
        affine[:3, :3] = rotation @ linear
        _like(path, np.asanyarray(img.dataobj), affine)


def no_tumour(path: Path) -> None:
    data = np.asanyarray(nib.load(str(path)).dataobj)
    _like(path, np.zeros_like(data))


def to_uncompressed(path: Path) -> Path:
    """`x.nii.gz` -> `x.nii` (same data), returns the new path."""
    new = path.with_name(path.name[: -len(".gz")])
    new.write_bytes(gzip.decompress(path.read_bytes()))
    path.unlink()
    return new


# ---- fault injection ---------------------------------------------------------------------------
def _inside(path, folder: Path) -> bool:
    try:
        p = Path(os.fspath(path)).absolute()
    except TypeError:
        return False
    folder = folder.absolute()
    return p == folder or folder in p.parents


def simulate_read_only(monkeypatch, folder: Path) -> None:
    """Make `folder` behave like a read-only folder for this process (root ignores chmod).

    Creating or writing any file or folder under it raises PermissionError (EACCES), as the
    kernel would: open() for writing, os.open with O_CREAT/O_WRONLY/O_RDWR (mkstemp), mkdir.
    """
    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def denied(path):
        return PermissionError(errno.EACCES, "Permission denied", os.fspath(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and _inside(file, folder):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if flags & writing and _inside(path, folder):
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if _inside(path, folder) and not Path(path).exists():
            raise denied(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def disk_full_fsync(monkeypatch, match: str = "") -> None:
    """fileio's writers: the data goes to the temporary file, then fsync reports ENOSPC (as a
    delayed-allocation file system does) for files whose name contains `match`."""
    import pfseg_pipeline.fileio as fileio

    real_fsync = os.fsync

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if match in Path(name).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(fileio.os, "fsync", fsync)


def disk_full_nifti(monkeypatch, match: str) -> None:
    """nibabel.save writes half of the file, then the disk is full (for names containing `match`)."""
    real_save = nib.save

    def save(img, filename, *args, **kwargs):
        if match in Path(os.fspath(filename)).name:
            Path(filename).write_bytes(b"\x1f\x8b" + b"\0" * 64)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(img, filename, *args, **kwargs)

    monkeypatch.setattr(nib, "save", save)


def snapshot(*folders: Path) -> dict[Path, bytes]:
    """Every file under `folders` with its content (to prove what changed and what did not)."""
    files = {}
    for folder in folders:
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    files[path] = path.read_bytes()
    return files


def temporary_files(*folders: Path) -> list[Path]:
    """Left-over temporary files of the atomic writers (`.<name>.XXXX.tmp<suffix>`)."""
    found = []
    for folder in folders:
        if folder.is_dir():
            found += [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith(".pfseg-")]
    return sorted(found)


# ---- another run's locks ------------------------------------------------------------------------
def foreign_lock(path: Path, command: str) -> Path:
    """A lock (or reader marker) at `path` held by a live process that is not this one: the one
    that started pytest. Its pid and start time are real, so pfseg must take it as live."""
    import json
    import socket

    from pfseg_pipeline import locks

    pid = os.getppid()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "boot_id": locks._boot_id(),
                                "start_ticks": locks._start_ticks(pid),
                                "started": "2026-11-27T09:00:00+00:00", "command": command}))
    return path
