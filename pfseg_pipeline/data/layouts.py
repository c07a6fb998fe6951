"""Finding cases on disk: the BraTS layout, the nnU-Net raw layout and flat folders.

- BraTS: `ROOT/**/<case>/<case>_{t1,t1ce,t2,flair}.nii[.gz]` (+ `<case>_seg`), at any depth.
  BraTS 2023 names (`<case>-t1n`, `-t1c`, `-t2w`, `-t2f`, `-seg`) are read too.
- nnU-Net raw: `dataset.json` + `imagesTr/<case>_000K.nii.gz` + `labelsTr/<case>.nii.gz`; or the
  MSD's (and nnU-Net v1's) `imagesTr/<case>.nii.gz`, one 4D file with the modalities stacked in the
  order dataset.json's `modality` gives. Its labels are read by name (`data.dataset_json`).
- Flat: `<case>_<modality>.nii[.gz]` or `<case>_000K.nii[.gz]` in one folder.

Images may be NIfTI, .mha or .nrrd (`data.image_io`). Files are paired by case id, never by
sorted position. Discovery never raises on a bad case:
it returns every problem as one line naming the file, so verification can report all at once.

`discover` finds cases (images, and labels when there are); `find_label_maps` finds label maps
alone (evaluation's references and predictions): `labelsTr/<case>`, BraTS `<case>_seg` at any
depth, or a flat folder of `<case>.nii[.gz]`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pfseg_pipeline.data.dataset_json import channel_indices, label_scheme_of
from pfseg_pipeline.data.image_io import IMAGE_SUFFIXES, strip_image_suffix
from pfseg_pipeline.data.labels import LabelScheme
from pfseg_pipeline.data.modalities import MODALITIES, normalise_modality
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import read_json

LABEL_SUFFIXES = ("seg",)
_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_NAMED_RE = re.compile(r"^(?P<case>.+?)[_-](?P<kind>[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class Case:
    """One case: its id, its image files by modality (in the requested order) and its label.

    `channels` gives, for a modality stored in a 4D file with others (the MSD layout), its
    volume in that file; a modality not listed has a 3D file of its own.
    """

    case_id: str
    images: dict[str, Path]
    label: Path | None = None
    channels: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = {"case": self.case_id, "images": {m: str(p) for m, p in self.images.items()},
               "label": str(self.label) if self.label else None}
        if self.channels:
            out["channels"] = dict(self.channels)
        return out

    @classmethod
    def from_json(cls, d: dict) -> Case:
        return cls(d["case"], {m: Path(p) for m, p in d["images"].items()},
                   Path(d["label"]) if d.get("label") else None,
                   {str(m): int(k) for m, k in (d.get("channels") or {}).items()})


@dataclass
class Discovery:
    """What was found under a root: complete cases, problems (one line each), the layout."""

    layout: str
    cases: list[Case] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    label_scheme: LabelScheme | None = None  # declared by an nnU-Net dataset.json


def check_case_id(case_id: str) -> str | None:
    """Why a case id is unusable as a file name (None when it is fine)."""
    if not case_id or case_id in (".", "..") or "/" in case_id or "\\" in case_id or "\x00" in case_id:
        return f"case id {case_id!r} is not usable as a file name (empty, '.', '..' or a path separator)"
    if any(ord(ch) < 32 for ch in case_id):
        return f"case id {case_id!r} contains control characters"
    return None


def discover(root: str | os.PathLike, modalities: tuple[str, ...] = MODALITIES,
             require_label: bool = False, exclude: tuple[str, ...] = (),
             label_scheme: LabelScheme | None = None) -> Discovery:
    """Find the cases under `root` in whichever layout it uses.

    `label_scheme` is the user's `--label-scheme`: an nnU-Net dataset.json's labels must agree
    with it; without it they are read by name. Cases found for prediction (`require_label`
    False) do not need labels the names can place.
    """
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: input path does not exist")
    if not root.is_dir():
        raise UserError(f"{root}: input path is not a folder")
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise UserError(f"unknown modality {unknown[0]!r} (choose from {', '.join(MODALITIES)})")
    if (root / "dataset.json").is_file() and (root / "imagesTr").is_dir():
        found = _discover_nnunet(root, modalities, require_label, label_scheme)
    else:
        found = _discover_named(root, modalities, require_label)
    excluded = set(exclude)
    if excluded:
        # an excluded id is "not there" only when no case and no problem line is about it (a
        # problem can name the case only through its file, e.g. a label without images)
        missing = {e for e in excluded - {c.case_id for c in found.cases} - _problem_case_ids(found)
                   if not any(_mentions(p, e) for p in found.problems)}
        found.cases = [c for c in found.cases if c.case_id not in excluded]
        found.problems = [p for p in found.problems if not any(_mentions(p, e) for e in excluded)]
        for case_id in sorted(missing):
            found.problems.append(f"{root}: --exclude names case {case_id!r}, which is not there")
    found.cases.sort(key=lambda c: c.case_id)
    if not found.cases and not found.problems:
        found.problems.append(f"{root}: no cases found (expected BraTS <case>/<case>_<modality>.nii.gz "
                              "files, an nnU-Net raw dataset, or a flat folder of image files)")
    return found


def _mentions(problem: str, case_id: str) -> bool:
    """Whether a discovery problem is about `case_id`: "case ID: ..." or "PATH: ..." where the
    file's name parses to that case or a folder of the path is named after it (an exact match,
    so excluding case 'A' keeps the problems of case 'A_1')."""
    if problem.startswith(f"case {case_id}:"):
        return True
    path = Path(problem.split(": ", 1)[0])
    stem = strip_image_suffix(path.name)
    if stem is not None and parse_stem(stem)[0] == case_id:
        return True
    return case_id in path.parts[:-1] or case_id == path.name


def _problem_case_ids(found: Discovery) -> set[str]:
    ids = set()
    for p in found.problems:
        m = re.match(r"case (.+?):", p)
        if m:
            ids.add(m.group(1))
    return ids


def _walk_nifti(root: Path, recursive: bool = True):
    """(path, stem) of every visible image file (NIfTI, .mha, .nrrd) under `root` (in sorted
    order), at any depth or (not `recursive`) in `root` itself."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            stem = strip_image_suffix(name)
            if stem is not None:
                yield Path(dirpath) / name, stem


def _discover_named(root: Path, modalities: tuple[str, ...], require_label: bool) -> Discovery:
    """BraTS folders at any depth, or flat folders of `<case>_<modality>` / `<case>_000K` files."""
    found = Discovery(layout="brats")
    images: dict[str, dict[str, list[Path]]] = {}
    labels: dict[str, list[Path]] = {}
    unrecognised: dict[Path, list[Path]] = {}
    for path, stem in _walk_nifti(root):
        case_id, kind = parse_stem(stem)
        if case_id is None:
            unrecognised.setdefault(path.parent, []).append(path)
            continue
        if kind == "seg":
            labels.setdefault(case_id, []).append(path)
        else:
            images.setdefault(case_id, {}).setdefault(kind, []).append(path)
    for case_id in sorted(set(images) | set(labels)):
        by_mod = images.get(case_id, {})
        problem_id = check_case_id(case_id)
        if problem_id:
            files = sorted([p for paths in by_mod.values() for p in paths] + labels.get(case_id, []))
            found.problems.append(f"{files[0]}: {problem_id}")
            continue
        if not by_mod:
            # a label without any image: report it, it may be a misnamed case folder
            found.problems.append(f"{labels[case_id][0]}: label file without any image of case {case_id}")
            continue
        case = _assemble(found, case_id, by_mod, labels.get(case_id, []), modalities, require_label,
                         unrecognised.get(next(iter(next(iter(by_mod.values())))).parent, []))
        if case is not None:
            found.cases.append(case)
    return found


def parse_stem(stem: str) -> tuple[str | None, str | None]:
    """(case id, modality or 'seg') of a file name without its suffix; (None, None) when it is neither."""
    m = _CHANNEL_RE.match(stem)
    if m:
        k = int(m.group("channel"))
        if k < len(MODALITIES):
            return m.group("case"), MODALITIES[k]
        return None, None
    m = _NAMED_RE.match(stem)
    if m:
        kind = m.group("kind").lower()
        if kind in LABEL_SUFFIXES:
            return m.group("case"), "seg"
        modality = normalise_modality(kind)
        if modality:
            return m.group("case"), modality
    return None, None


def _assemble(found: Discovery, case_id: str, by_mod: dict[str, list[Path]], label_paths: list[Path],
              modalities: tuple[str, ...], require_label: bool, strays: list[Path]) -> Case | None:
    ok = True
    for modality in modalities:
        paths = by_mod.get(modality, [])
        if not paths:
            where = next(iter(next(iter(by_mod.values())))).parent
            found.problems.append(f"case {case_id}: missing modality {modality} "
                                  f"(no {case_id}_{modality}.nii[.gz] in {where})")
            ok = False
    # one line per duplicated case (not one per file): the folders that both hold it, or, when
    # one folder holds two files of a kind (x_t1.nii and x_t1.nii.gz), those files
    duplicates = [paths for paths in [*(by_mod.get(m, []) for m in modalities), label_paths]
                  if len(paths) > 1]
    if duplicates:
        folders = sorted({str(p.parent) for paths in duplicates for p in paths})
        if len(folders) > 1:
            found.problems.append(f"case {case_id}: duplicate case id, found in " + " and ".join(folders))
        else:
            found.problems.append(f"case {case_id}: duplicate files in {folders[0]}: " + "; ".join(
                " and ".join(p.name for p in paths) for paths in duplicates))
        ok = False
    if require_label and not label_paths:
        hint = f"; found unrecognised {', '.join(p.name for p in strays)} (misnamed label?)" if strays else ""
        where = next(iter(next(iter(by_mod.values())))).parent
        found.problems.append(f"case {case_id}: missing label (no {case_id}_seg.nii[.gz] in {where}){hint}")
        ok = False
    if not ok:
        return None
    return Case(case_id, {m: by_mod[m][0] for m in modalities}, label_paths[0] if label_paths else None)


def _discover_nnunet(root: Path, modalities: tuple[str, ...], require_label: bool,
                     given: LabelScheme | None = None) -> Discovery:
    """nnU-Net v2 (`<case>_000K` files) or MSD / nnU-Net v1 (one 4D `<case>` file) raw data."""
    found = Discovery(layout="nnunet")
    dataset_path = root / "dataset.json"
    dataset = read_json(dataset_path)
    if not isinstance(dataset, dict):
        raise UserError(f"{dataset_path}: expected a JSON object")
    channel_of = channel_indices(dataset, str(dataset_path))
    ending = dataset.get("file_ending", ".nii.gz")
    if ending not in IMAGE_SUFFIXES:
        raise UserError(f"{dataset_path}: file_ending {ending!r} is not an image ending we read "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    try:
        found.label_scheme = label_scheme_of(dataset, str(dataset_path), given)
    except UserError:
        if require_label:
            raise
        found.label_scheme = given   # predicting: the labels' names do not matter
    for modality in modalities:
        if modality not in channel_of:
            raise UserError(f"{dataset_path}: no channel for modality {modality}")
    images: dict[str, dict[int, Path]] = {}
    stacked: dict[str, Path] = {}
    for path in sorted((root / "imagesTr").iterdir()):
        stem = strip_image_suffix(path.name)
        if stem is None or path.name.startswith("._"):   # "._x": macOS metadata (the MSD's tarballs)
            continue
        if "file_ending" in dataset and not path.name.lower().endswith(ending.lower()):
            raise UserError(f"{dataset_path}: file_ending {ending!r}, but {root / 'imagesTr'} holds "
                            f"{path.name}; correct file_ending")
        m = _CHANNEL_RE.match(stem)
        if m:
            images.setdefault(m.group("case"), {})[int(m.group("channel"))] = path
        else:   # the MSD layout: the case's modalities stacked in one 4D file
            stacked[stem] = path
    labels_dir = root / "labelsTr"
    for case_id in sorted(set(images) | set(stacked)):
        problem_id = check_case_id(case_id)
        if problem_id:
            found.problems.append(f"{stacked.get(case_id) or min(images[case_id].values())}: {problem_id}")
            continue
        if case_id in stacked and case_id in images:
            found.problems.append(f"case {case_id}: both a 4D file {stacked[case_id].name} and "
                                  f"{case_id}_000K files in {root / 'imagesTr'}")
            continue
        label = next((p for p in (labels_dir / f"{case_id}{e}" for e in IMAGE_SUFFIXES) if p.is_file()), None)
        if require_label and label is None:
            found.problems.append(f"case {case_id}: missing label (no {case_id}{ending} in {labels_dir})")
            continue
        if case_id in stacked:
            found.cases.append(Case(case_id, {m: stacked[case_id] for m in modalities}, label,
                                    {m: channel_of[m] for m in modalities}))
            continue
        by_mod = {}
        for modality in modalities:
            path = images[case_id].get(channel_of[modality])
            if path is None:
                found.problems.append(f"case {case_id}: missing modality {modality} (no "
                                      f"{case_id}_{channel_of[modality]:04d}{ending} in {root / 'imagesTr'})")
            else:
                by_mod[modality] = path
        if len(by_mod) == len(modalities):
            found.cases.append(Case(case_id, by_mod, label))
    return found


# ---- label maps alone (evaluation) -----------------------------------------------------------------
@dataclass
class LabelMaps:
    """Label maps found under a folder, by case id, and the problems (one line per case)."""

    layout: str
    labels: dict[str, Path] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # case id -> one line
    label_scheme: LabelScheme | None = None  # declared by an nnU-Net dataset.json


def find_label_maps(root: str | os.PathLike, flat: bool = False,
                    label_scheme: LabelScheme | None = None) -> LabelMaps:
    """Label maps under `root`: nnU-Net `labelsTr/<case>` (its dataset.json giving the scheme,
    which must agree with the user's `label_scheme`), BraTS `<case>_seg` / `<case>-seg` at any
    depth, else (or with `flat`) every `<case>.<image suffix>` in the folder that is not named
    like an image (`<case>_0000`, `<case>_t1`)."""
    root = Path(root)
    if flat:
        found = LabelMaps(layout="flat")
        _collect(found, ((p, stem) for p, stem in _walk_nifti(root, recursive=False)))
        return found
    if (root / "labelsTr").is_dir():
        found = LabelMaps(layout="nnunet")
        dataset_path = root / "dataset.json"
        if dataset_path.is_file():
            dataset = read_json(dataset_path)
            if isinstance(dataset, dict):
                found.label_scheme = label_scheme_of(dataset, str(dataset_path), label_scheme)
        _collect(found, _walk_nifti(root / "labelsTr", recursive=False))
        return found
    seg_files = [(path, case_id) for path, stem in _walk_nifti(root)
                 for case_id, kind in [parse_stem(stem)] if kind == "seg"]
    if seg_files:
        found = LabelMaps(layout="brats")
        _collect(found, seg_files)
        return found
    found = LabelMaps(layout="flat")
    _collect(found, ((p, stem) for p, stem in _walk_nifti(root, recursive=False) if not _image_name(stem)))
    return found


def _image_name(stem: str) -> bool:
    """`<case>_0000`-style (any channel number) or `<case>_t1`-style names: images, not label maps."""
    if _CHANNEL_RE.match(stem):
        return True
    match = _NAMED_RE.match(stem)
    return bool(match and normalise_modality(match.group("kind")))


def _collect(found: LabelMaps, files) -> None:
    for path, case_id in files:
        problem = check_case_id(case_id)
        if problem:
            found.problems[case_id] = f"{path}: {problem}"
        elif case_id in found.labels:
            found.problems[case_id] = f"duplicate case id: {found.labels.pop(case_id)} and {path}"
        elif case_id in found.problems:
            found.problems[case_id] += f" and {path}"
        else:
            found.labels[case_id] = path
