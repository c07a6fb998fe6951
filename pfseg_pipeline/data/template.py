"""The MNI152 2009 brain template: fetched once from the package index, checked, read in memory.

The ICBM 152 nonlinear symmetric 2009a template (1 mm, T1 and grey/white matter probability
maps) ships inside the nilearn wheel on PyPI. The wheel is downloaded with
`pip download --no-deps` into the template cache (`paths.template_cache_dir()`), its sha256 is
checked against the pinned value, and the three NIfTI files are read straight out of the zip:
nilearn is never installed or imported. A cached file whose checksum differs is refused and
fetched again, so every case is generated from the same bytes.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import file_sha256

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "nilearn==0.14.1"
WHEEL_NAME = "nilearn-0.14.1-py3-none-any.whl"
WHEEL_SHA256 = "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a"
_MEMBER = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
TEMPLATE_MAPS = ("t1", "gm", "wm")
# The template's voxel grid (x y z, RAS, 1 mm) as the wheel stores it; anything else is refused.
_TEMPLATE_SHAPE_XYZ = (197, 233, 189)
_DOWNLOAD_TIMEOUT_S = 900   # pip's own per-request timeout still applies inside it


@dataclass(frozen=True)
class Template:
    """The template's maps, (Z, Y, X) float32 in LPS voxel order (x: to the left, y: to the
    back, z: up), 1 mm voxels, like a BraTS volume's array.

    t1 : T1-weighted intensity scaled to [0, 1] (0 outside the skull-stripped brain).
    gm, wm : grey and white matter probability in [0, 1].
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray


def _manual_hint(cache_dir: Path) -> str:
    return (f"place {WHEEL_NAME} (sha256 {WHEEL_SHA256}) in {cache_dir} by hand "
            f"(`pip download {WHEEL_REQUIREMENT} --no-deps -d {cache_dir}` on a machine that "
            f"reaches PyPI) or point PFSEG_CACHE at a folder that holds it")


def ensure_template_wheel(cache_dir: str | os.PathLike) -> Path:
    """The path of the checked template wheel in `cache_dir`, downloading it when needed.

    A cached file whose sha256 differs from the pinned one is removed and fetched again.
    Raises `UserError` (one line: the cache path, the pinned file and checksum, and how to
    place it by hand) when the wheel is neither cached nor downloadable.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / WHEEL_NAME
    if path.is_file():
        digest = file_sha256(path)
        if digest == WHEEL_SHA256:
            return path
        log.warning("%s: sha256 %s is not the pinned %s; refusing it and fetching it again",
                    path, digest, WHEEL_SHA256)
        try:
            path.unlink()
        except OSError as exc:
            raise UserError(f"{path}: corrupt cached template (sha256 {digest}) that cannot be "
                            f"removed ({exc.strerror or exc}); {_manual_hint(cache_dir)}") from exc
    _download(cache_dir)
    return path


def _download(cache_dir: Path) -> None:
    """pip download the wheel into a temporary folder in the cache, check it, move it in place."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=cache_dir))
    except OSError as exc:
        raise UserError(f"{cache_dir}: cannot create the template cache ({exc.strerror or exc}); "
                        f"{_manual_hint(cache_dir)}") from exc
    log.info("fetching the MNI152 template (%s, 11.5 MB) into %s", WHEEL_NAME, cache_dir)
    try:
        command = [sys.executable, "-m", "pip", "download", WHEEL_REQUIREMENT, "--no-deps",
                   "--only-binary=:all:", "--disable-pip-version-check", "-q", "-d", str(tmp)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=_DOWNLOAD_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
            reason = _last_line(done.stderr) if done.returncode else ""
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        fetched = tmp / WHEEL_NAME
        if reason or not fetched.is_file():
            raise UserError(f"{cache_dir / WHEEL_NAME}: the MNI152 template is neither cached nor "
                            f"downloadable (pip download {WHEEL_REQUIREMENT}: "
                            f"{reason or 'no wheel came back'}); {_manual_hint(cache_dir)}")
        digest = file_sha256(fetched)
        if digest != WHEEL_SHA256:
            raise UserError(f"{cache_dir / WHEEL_NAME}: the downloaded template has sha256 {digest}, "
                            f"not the pinned one; {_manual_hint(cache_dir)}")
        os.replace(fetched, cache_dir / WHEEL_NAME)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def read_template(wheel: str | os.PathLike) -> Template:
    """The template's T1, GM and WM maps read from the wheel (checked first), in memory (about
    100 MB). Not kept: its caller keeps what the cases reuse (`anatomy`'s 1 mm channels)."""
    import nibabel as nib

    wheel = Path(wheel)
    if file_sha256(wheel) != WHEEL_SHA256:
        raise UserError(f"{wheel}: sha256 differs from the pinned {WHEEL_SHA256} (corrupt template)")
    maps = {}
    with zipfile.ZipFile(wheel) as archive:
        for name in TEMPLATE_MAPS:
            img = nib.Nifti1Image.from_bytes(gzip.decompress(archive.read(_MEMBER.format(name))))
            if img.shape != _TEMPLATE_SHAPE_XYZ or nib.aff2axcodes(img.affine) != ("R", "A", "S"):
                raise UserError(f"{wheel}: {_MEMBER.format(name)} is not the expected 1 mm RAS grid")
            data = np.asarray(img.dataobj, dtype=np.float32) / 255.0   # uint8 maps: 255 is 1
            # RAS -> LPS (flip x and y), then (x, y, z) -> (z, y, x) like every array here
            maps[name] = np.ascontiguousarray(data[::-1, ::-1, :].transpose(2, 1, 0))
    return Template(**maps)
