"""Label values by their names: an nnU-Net or MSD dataset.json's labels placed on the tumour regions.

A BraTS-like label map has three tumour classes, whatever numbers a dataset gives them:
edema (BraTS "ED", 2023 "SNFH"), the necrotic / non-enhancing core ("NCR/NET", "NETC", the
MSD's "non-enhancing tumor") and the enhancing tumour ("ET"). The regions follow from them:
WT = all three, TC = core + enhancing, ET = enhancing. So the MSD BrainTumour task's labels
(1 edema, 2 non-enhancing tumour, 3 enhancing tumour) give TC = {2, 3}, not BraTS 2023's {1, 3}
that the numbers alone would suggest.

`scheme_from_label_names` reads the names (common spellings, -our/-or, oedema/edema); a name it
cannot place is one error asking for `--label-scheme`, and a scheme given with `--label-scheme`
that the names contradict is one error too (the numbers would silently mean other regions).
"""

from __future__ import annotations

import re

from pfseg_pipeline.data.labels import BRATS2020, BRATS2023, MSD, LabelScheme
from pfseg_pipeline.errors import UserError

CLASSES = ("edema", "core", "enhancing")
CLASS_TEXT = {"edema": "edema", "core": "necrotic / non-enhancing core", "enhancing": "enhancing tumour",
              "background": "background"}
BUILTIN_SCHEMES = (BRATS2020, BRATS2023, MSD)
# Whole names (after normalisation) that are abbreviations, matched exactly.
_ABBREVIATIONS = {
    "ed": "edema", "snfh": "edema",
    "ncr": "core", "net": "core", "netc": "core", "ncr net": "core", "nec": "core", "necrosis": "core",
    "et": "enhancing", "enh": "enhancing",
    "background": "background", "bg": "background", "bkg": "background", "unlabeled": "background",
}


def _normalise(name: str) -> str:
    """Lower case, British spellings and separators folded
    ('Non-Enhancing Tumour' -> 'non enhancing tumor')."""
    text = re.sub(r"[^a-z0-9]+", " ", str(name).lower()).strip()
    return text.replace("tumour", "tumor").replace("oedema", "edema")


def label_class(name: str) -> str | None:
    """'edema', 'core', 'enhancing', 'background', or None when the name says none of them.

    >>> [label_class(n) for n in ("Oedema", "NCR/NET", "non-enhancing tumour", "GD-enhancing tumor")]
    ['edema', 'core', 'core', 'enhancing']
    """
    text = _normalise(name)
    if text in _ABBREVIATIONS:
        return _ABBREVIATIONS[text]
    # BraTS 2023's "surrounding non-enhancing FLAIR hyperintensity" is edema: tested first;
    # "non-enhancing" contains "enhancing": the core's words are tested before the enhancing ones
    if "edema" in text or "flair hyperintens" in text:
        return "edema"
    if "necro" in text or re.search(r"\bnon ?enhancing\b", text):
        return "core"
    if re.search(r"\benhancing\b", text) or re.search(r"\benhancement\b", text):
        return "enhancing"
    return None


def classes_of_scheme(scheme: LabelScheme) -> dict[int, str]:
    """value -> class of every tumour label of a scheme (from its regions, not its names)."""
    out = {}
    for value in scheme.values[1:]:
        if value in scheme.regions.get("ET", ()):
            out[value] = "enhancing"
        elif value in scheme.regions.get("TC", ()):
            out[value] = "core"
        else:
            out[value] = "edema"
    return out


def scheme_from_classes(classes: dict[int, str], names: dict[int, str]) -> LabelScheme:
    """The scheme of tumour labels placed in classes (value -> class); a built-in one when equal."""
    by_class = {c: tuple(sorted(v for v, k in classes.items() if k == c)) for c in CLASSES}
    regions = {"WT": tuple(sorted(classes)), "TC": tuple(sorted(by_class["core"] + by_class["enhancing"])),
               "ET": by_class["enhancing"]}
    order = (by_class["edema"][0], by_class["core"][0], by_class["enhancing"][0])
    for builtin in BUILTIN_SCHEMES:
        if builtin.regions == regions and builtin.regions_class_order == order:
            return builtin
    signature = "_".join(f"{c[:3]}{'+'.join(map(str, by_class[c]))}" for c in CLASSES)
    return LabelScheme(name=f"named_{signature}", labels={names[v]: v for v in sorted(classes)},
                       regions=regions, regions_class_order=order)


def scheme_from_label_names(labels: dict[str, int], source: str = "dataset.json",
                            given: LabelScheme | None = None) -> LabelScheme:
    """The scheme a dataset.json's `labels` (name -> value) describe, read by their names.

    Parameters
    ----------
    labels : name -> integer value, background included (value 0 is background whatever its name).
    source : the file, named in errors.
    given : the scheme the user asked for (`--label-scheme`); names it cannot place are then
        left to it, and a name that contradicts it is an error.

    Raises a one-line `UserError` for a name it cannot place (without `given`), a tumour class
    with no label, or a name that contradicts `given`.
    """
    names = {int(v): str(k) for k, v in labels.items()}
    classes, unplaced = {}, []
    for value, name in sorted(names.items()):
        found = label_class(name)
        if value == 0:
            continue
        if found in CLASSES:
            classes[value] = found
        else:
            unplaced.append(f"{value} {name!r}")
    if given is not None:
        expected = classes_of_scheme(given)
        for value, found in classes.items():
            if expected.get(value) != found:
                there = CLASS_TEXT[expected[value]] if value in expected else "not a label"
                raise UserError(f"{source}: label {value} {names[value]!r} is {CLASS_TEXT[found]}, but "
                                f"--label-scheme {given.name} makes {value} {there}; leave out "
                                "--label-scheme (the names are read) or correct the names")
        return given
    if unplaced:
        raise UserError(f"{source}: 'labels': cannot tell which tumour class label {unplaced[0]} is "
                        "(names read: edema, necrotic / non-enhancing core, enhancing tumour, with common "
                        "spellings); "
                        f"give --label-scheme {'|'.join(s.name for s in BUILTIN_SCHEMES)}")
    missing = [CLASS_TEXT[c] for c in CLASSES if c not in classes.values()]
    if missing:
        raise UserError(f"{source}: 'labels' {sorted(names.values())} name no {missing[0]} label; "
                        f"give --label-scheme {'|'.join(s.name for s in BUILTIN_SCHEMES)}")
    return scheme_from_classes(classes, names)
