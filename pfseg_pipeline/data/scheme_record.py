"""label_scheme.json: the label scheme a folder of label maps is written in, beside the files.

Every prediction folder records it (`inference.pipeline.predict_folder`), so `pfseg_evaluate`
can refuse to score predictions against references whose numbers mean other regions (an MSD
model's 1 is edema, a BraTS 2020 reference's 1 is the necrotic core).
"""

from __future__ import annotations

import os
from pathlib import Path

from pfseg_pipeline.data.labels import LabelScheme
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json, write_json

SCHEME_FILE = "label_scheme.json"


def write_scheme_record(folder: str | os.PathLike, scheme: LabelScheme, target: str) -> Path:
    """Write `folder/label_scheme.json` (the scheme, the target and what each region holds)."""
    path = Path(folder) / SCHEME_FILE
    write_json(path, {"label_scheme": scheme.to_json(), "target": target})
    return path


def read_scheme_record(folder: str | os.PathLike) -> LabelScheme | None:
    """The scheme `folder/label_scheme.json` records; None when there is no such file."""
    path = Path(folder) / SCHEME_FILE
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("label_scheme"), dict):
        raise UserError(f"{path}: expected {{\"label_scheme\": {{...}}, \"target\": ...}}")
    try:
        return LabelScheme.from_json(data["label_scheme"])
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from exc


def same_regions(a: LabelScheme, b: LabelScheme) -> bool:
    """Whether two schemes put the same label values in each region (their names aside)."""
    return {k: tuple(v) for k, v in a.regions.items()} == {k: tuple(v) for k, v in b.regions.items()}
