"""The cases a prediction's inputs name: a folder of cases, one case's folder, or one case's files.

`pfseg_predict -i` takes
- one folder in any layout `layouts.discover` reads (BraTS, nnU-Net raw or MSD, flat);
- one case's folder whose files are named by modality alone (`t1.nii.gz`, `FLAIR.mha`, ...): the
  case is named after the folder; a folder of 4D files (the MSD's imagesTs/): one case each;
- the files of one case: named `<case>_<modality>`, `<case>_000K` or `<modality>`, or taken in
  the order `--channels` gives;
- one 4D file holding the modalities stacked (the MSD layout), in the order `--channels` gives,
  else the order the model's training data had (`stacked_order`), else the model's modality
  order (plans.json: t1, t1ce, t2, flair for the default preset).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from pfseg_pipeline.data.image_io import read_geometry, strip_image_suffix
from pfseg_pipeline.data.layouts import Case, Discovery, check_case_id, discover, parse_stem
from pfseg_pipeline.data.modalities import normalise_modality
from pfseg_pipeline.errors import UserError

log = logging.getLogger(__name__)


def stacked_order(dataset: dict | None) -> list[str] | None:
    """The modalities of a training set's 4D files, in file order (from the model folder's
    dataset.json: its cases' `channels`), or None when its images were 3D files."""
    cases = (dataset or {}).get("cases") or []
    channels = cases[0].get("channels") if cases and isinstance(cases[0], dict) else None
    if not channels:
        return None
    return [m for m, _ in sorted(channels.items(), key=lambda item: int(item[1]))]


def parse_channels(names: Sequence[str] | None) -> list[str] | None:
    """`--channels` values as our modality names (FLAIR -> flair, T1w -> t1 ...)."""
    if not names:
        return None
    out = []
    for name in names:
        modality = normalise_modality(name)
        if modality is None:
            raise UserError(f"--channels: {name!r} is not a modality (t1, t1ce, t2, flair or a spelling "
                            "such as T1w, T1Gd, T2w, FLAIR)")
        if modality in out:
            raise UserError(f"--channels: {modality} is named twice")
        out.append(modality)
    return out


def cases_from_paths(paths: Sequence[str | os.PathLike], modalities: Sequence[str],
                     channels: Sequence[str] | None = None, default_order: Sequence[str] | None = None,
                     exclude: Sequence[str] = ()) -> Discovery:
    """The cases to predict from `pfseg_predict -i` paths (see the module docstring).

    Parameters
    ----------
    paths : one folder, one file, or the files of one case.
    modalities : what the model reads (plans.modalities).
    channels : `--channels`: the modality of each file given, or of each volume of a 4D file.
    default_order : the order of a 4D file's volumes without `channels` (`stacked_order`);
        None: `modalities`.
    exclude : case ids to leave out (a folder's cases).

    A problem with the paths themselves is a `UserError`; problems with a folder's cases come
    back in `Discovery.problems`, as `discover` gives them.
    """
    paths = [Path(p) for p in paths]
    for path in paths:
        if not path.exists():
            raise UserError(f"{path}: input path does not exist")
    order = list(channels or default_order or modalities)
    if len(paths) == 1 and paths[0].is_dir():
        found = discover(paths[0], tuple(modalities), require_label=False, exclude=tuple(exclude))
        if found.cases or not _only_no_cases(found):
            return found
        cases = _folder_of_single_files(paths[0], modalities, order)
        return Discovery(layout="files", cases=[c for c in cases if c.case_id not in set(exclude)])
    if any(p.is_dir() for p in paths):
        raise UserError(f"{next(p for p in paths if p.is_dir())}: give one folder, or the files of one case")
    if len(paths) == 1 and len(channels or ()) != 1:   # --channels for one file: a 4D file's order
        return Discovery(layout="files", cases=[_case_from_one_file(paths[0], modalities, order)])
    return Discovery(layout="files", cases=[_case_from_files(paths, modalities, channels)])


def _only_no_cases(found: Discovery) -> bool:
    return len(found.problems) == 1 and "no cases found" in found.problems[0]


def _stem(path: Path) -> str:
    stem = strip_image_suffix(path.name)
    if stem is None:
        raise UserError(f"{path}: not an image file we read (.nii, .nii.gz, .mha, .nrrd)")
    return stem


def _case_from_one_file(path: Path, modalities: Sequence[str], order: Sequence[str]) -> Case:
    """One file: a 4D one holding every modality, or the one modality a single-modality model reads."""
    stem = _stem(path)
    _, n_volumes = read_geometry(path)
    if n_volumes > 1:
        if n_volumes != len(order):
            raise UserError(f"{path}: holds {n_volumes} volumes but the channel order has {len(order)} "
                            f"({' '.join(order)}); give --channels with one modality per volume")
        missing = [m for m in modalities if m not in order]
        if missing:
            raise UserError(f"{path}: the channel order {' '.join(order)} has no {missing[0]}, which the "
                            "model needs; give --channels")
        return _checked(Case(stem, {m: path for m in modalities}, None,
                             {m: order.index(m) for m in modalities}), path)
    case_id, kind = parse_stem(stem)
    if len(modalities) == 1:
        return _checked(Case(case_id if kind == modalities[0] else stem, {modalities[0]: path}), path)
    raise UserError(f"{path}: one 3D image, but the model reads {len(modalities)} modalities "
                    f"({', '.join(modalities)}): give the case's {len(modalities)} files, or one 4D file")


def _case_from_files(paths: list[Path], modalities: Sequence[str], channels: Sequence[str] | None) -> Case:
    """The files of one case, each a modality by `channels` (in order) or by its name."""
    if channels is not None and len(channels) != len(paths):
        raise UserError(f"--channels names {len(channels)} modalities for {len(paths)} files")
    by_modality: dict[str, Path] = {}
    case_ids = set()
    for k, path in enumerate(paths):
        stem = _stem(path)
        case_id, modality = parse_stem(stem)
        if modality is None or modality == "seg":
            case_id, modality = None, normalise_modality(stem)
        if channels is not None:
            modality = channels[k]
        if modality is None:
            raise UserError(f"{path}: cannot tell which modality this file is (name it <case>_<modality> "
                            "or <case>_000K, or give --channels with one modality per file)")
        if modality in by_modality:
            raise UserError(f"{path}: a second {modality} image (the first is {by_modality[modality]})")
        by_modality[modality] = path
        if case_id:
            case_ids.add(case_id)
    if len(case_ids) > 1:
        raise UserError(f"the files name different cases ({', '.join(sorted(case_ids))}); give the files "
                        "of one case, or their folder")
    missing = [m for m in modalities if m not in by_modality]
    if missing:
        raise UserError(f"no {missing[0]} image among the {len(paths)} files given (the model reads "
                        f"{', '.join(modalities)})")
    case_id = case_ids.pop() if case_ids else paths[0].resolve().parent.name
    return _checked(Case(case_id, {m: by_modality[m] for m in modalities}), paths[0])


def _folder_of_single_files(folder: Path, modalities: Sequence[str], order: Sequence[str]) -> list[Case]:
    """A case folder of `<modality>` files (one case, named after the folder), else a folder of
    4D files or, for a single-modality model, of 3D files (one case each)."""
    if not any(folder.iterdir()):
        raise UserError(f"{folder}: input folder is empty")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and strip_image_suffix(p.name) is not None)
    named = {normalise_modality(_stem(p)): p for p in files}
    if all(m in named for m in modalities):
        log.info("%s: one case, its files named by modality", folder)
        return [_checked(Case(folder.resolve().name, {m: named[m] for m in modalities}), folder)]
    cases = [_case_from_one_file(p, modalities, order) for p in files]
    if not cases:
        raise UserError(f"{folder}: no cases found (expected BraTS <case>/<case>_<modality> files, an "
                        "nnU-Net raw dataset, a case folder of <modality> files, or 4D files)")
    return cases


def _checked(case: Case, path: Path) -> Case:
    problem = check_case_id(case.case_id)
    if problem:
        raise UserError(f"{path}: {problem}")
    return case
