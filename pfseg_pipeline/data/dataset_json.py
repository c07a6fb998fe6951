"""What an nnU-Net (v1 or v2) or MSD dataset.json says: channel order and label scheme.

- Channels: v2 `channel_names` or v1/MSD `modality`, {"0": "FLAIR", "1": "T1w", ...}, mapped to
  our modalities by their names (`MODALITY_ALIASES`: FLAIR, T1w, T1gd, t1c, T2w ... ).
- Labels: v2 `{"background": 0, "edema": 1, ...}`, v1/MSD `{"0": "background", "1": "edema", ...}`
  (numbers as keys), both read by name (`label_names`); or nnU-Net's region-based form
  (`{"whole tumor": [1, 2, 3], ...}` + `regions_class_order`), taken in order as WT, TC, ET.
"""

from __future__ import annotations

from pfseg_pipeline.data.label_names import scheme_from_label_names
from pfseg_pipeline.data.labels import REGION_NAMES, LabelScheme
from pfseg_pipeline.data.modalities import normalise_modality
from pfseg_pipeline.errors import UserError


def channel_indices(dataset: dict, source: str = "dataset.json") -> dict[str, int]:
    """modality -> channel number, from `channel_names` (v2) or `modality` (v1, MSD)."""
    channels = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(channels, dict) or not channels:
        raise UserError(f"{source}: 'channel_names' must map channel numbers to modality names")
    channel_of: dict[str, int] = {}
    for key, name in channels.items():
        modality = normalise_modality(str(name))
        try:
            index = int(key)
        except ValueError:
            raise UserError(f"{source}: channel key {key!r} is not a number") from None
        if modality is None:
            raise UserError(f"{source}: channel {key} is {name!r}, not one of t1, t1ce, t2, flair")
        if modality in channel_of:
            raise UserError(f"{source}: channels {channel_of[modality]} and {index} are both {modality}")
        channel_of[modality] = index
    return channel_of


def label_scheme_of(dataset: dict, source: str = "dataset.json",
                    given: LabelScheme | None = None) -> LabelScheme | None:
    """The scheme a dataset.json declares (None when it has no `labels`); `given` is the user's
    `--label-scheme`, which the declaration must not contradict."""
    labels = dataset.get("labels")
    if labels is None:
        return given
    if not isinstance(labels, dict) or not labels:
        raise UserError(f"{source}: 'labels' must be a non-empty mapping")
    if all(isinstance(v, str) for v in labels.values()) and all(_is_int(k) for k in labels):
        labels = {name: int(key) for key, name in labels.items()}   # v1 / MSD: "1": "edema"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        return scheme_from_label_names(labels, source, given)
    scheme = _scheme_from_regions(dataset, labels, source)
    if given is not None and given.regions != scheme.regions:
        raise UserError(f"{source}: its regions {scheme.regions} differ from --label-scheme "
                        f"{given.name}'s {given.regions}; leave out --label-scheme")
    return scheme


def _is_int(text: str) -> bool:
    try:
        int(text)
    except (TypeError, ValueError):
        return False
    return True


def _scheme_from_regions(dataset: dict, labels: dict, source: str) -> LabelScheme:
    """nnU-Net's region-based labels (name -> list of values) with `regions_class_order`."""
    regions = [(name, tuple(v) if isinstance(v, (list, tuple)) else (v,))
               for name, v in labels.items() if v not in (0, [0], (0,))]
    order = dataset.get("regions_class_order")
    if not isinstance(order, list) or len(order) != len(regions) or len(regions) != 3:
        raise UserError(f"{source}: region labels need three regions and 'regions_class_order'")
    sets = [set(r) for _, r in regions]
    if not (sets[0] >= sets[1] >= sets[2]):
        raise UserError(f"{source}: regions must be nested (whole tumour, core, enhancing)")
    return LabelScheme(
        name="nnunet",
        labels={f"label_{v}": int(v) for v in sorted(sets[0])},
        regions={name: tuple(int(x) for x in r) for name, (_, r) in zip(REGION_NAMES, regions)},
        regions_class_order=tuple(int(x) for x in order),
    )
