"""The four MRI modalities of a BraTS case and the other names datasets give them."""

from __future__ import annotations

MODALITIES = ("t1", "t1ce", "t2", "flair")   # nnU-Net channels _0000.._0003 in this order
# Other spellings seen in BraTS releases and nnU-Net/MSD dataset.json files.
MODALITY_ALIASES = {
    "t1": "t1", "t1n": "t1", "t1w": "t1", "native": "t1",
    "t1ce": "t1ce", "t1c": "t1ce", "t1gd": "t1ce", "t1-gd": "t1ce", "t1wce": "t1ce", "t1-ce": "t1ce",
    "t2": "t2", "t2w": "t2",
    "flair": "flair", "t2f": "flair", "t2-flair": "flair", "t2flair": "flair",
}


def normalise_modality(name: str) -> str | None:
    """Our modality name for a spelling ('T1Gd' -> 't1ce'), or None.

    >>> normalise_modality("T1Gd"), normalise_modality("FLAIR"), normalise_modality("pd")
    ('t1ce', 'flair', None)
    """
    return MODALITY_ALIASES.get(str(name).strip().lower())
