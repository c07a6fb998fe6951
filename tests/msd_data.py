"""Medical Segmentation Decathlon BrainTumour data (Task01) in both forms, built from BraTS-layout cases.

- "v1": the MSD's own release: dataset.json with `modality` and labels keyed by number, images
  4D NIfTI (x, y, z, 4) under imagesTr/<case>.nii.gz, channels FLAIR, T1w, t1gd, T2w.
- "v2": nnU-Net v2's conversion (Dataset001_BrainTumour): `channel_names`, labels by name,
  3D images imagesTr/<case>_000K.nii.gz in the same channel order.

Labels are the MSD's: 1 edema, 2 non-enhancing tumour, 3 enhancing tumour (BraTS 2020's 2, 1, 4).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from pfseg_pipeline.data.layouts import discover
from pfseg_pipeline.data.nifti import read_label, read_volume, write_label_map

MSD_CHANNELS = ("flair", "t1", "t1ce", "t2")      # the MSD's channel order
BRATS_TO_MSD = {0: 0, 1: 2, 2: 1, 4: 3}           # NCR/NET -> 2, ED -> 1, ET -> 3


def msd_labels(brats_seg: np.ndarray) -> np.ndarray:
    out = np.zeros_like(brats_seg)
    for brats, msd in BRATS_TO_MSD.items():
        out[brats_seg == brats] = msd
    return out


def write_msd_dataset(brats_root: Path, out: Path, form: str = "v1") -> list[str]:
    """Convert every case under `brats_root` to MSD form `form` under `out`; returns the case ids."""
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    cases = discover(brats_root, require_label=True).cases
    for case in cases:
        volumes = [read_volume(case.images[m])[0] for m in MSD_CHANNELS]
        seg, _ = read_label(case.label)
        reference = nib.load(str(case.images["t1"]))
        if form == "v1":
            stacked = np.stack([v.transpose(2, 1, 0) for v in volumes], axis=-1).astype(np.int16)
            image = nib.Nifti1Image(stacked, reference.affine, reference.header.copy())
            image.header.set_data_dtype(np.int16)
            nib.save(image, str(out / "imagesTr" / f"{case.case_id}.nii.gz"))
        else:
            for k, volume in enumerate(volumes):
                image = nib.Nifti1Image(volume.transpose(2, 1, 0).astype(np.int16), reference.affine,
                                        reference.header.copy())
                image.header.set_data_dtype(np.int16)
                nib.save(image, str(out / "imagesTr" / f"{case.case_id}_{k:04d}.nii.gz"))
        write_label_map(msd_labels(seg), reference, out / "labelsTr" / f"{case.case_id}.nii.gz")
    names = ["FLAIR", "T1w", "t1gd", "T2w"] if form == "v1" else ["FLAIR", "T1w", "T1gd", "T2w"]
    if form == "v1":
        dataset = {"name": "BRATS", "tensorImageSize": "4D",
                   "modality": {str(k): n for k, n in enumerate(names)},
                   "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                              "3": "enhancing tumour"},
                   "numTraining": len(cases),
                   "training": [{"image": f"./imagesTr/{c.case_id}.nii.gz",
                                 "label": f"./labelsTr/{c.case_id}.nii.gz"} for c in cases],
                   "test": []}
    else:
        dataset = {"channel_names": {str(k): n for k, n in enumerate(names)},
                   "labels": {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3},
                   "numTraining": len(cases), "file_ending": ".nii.gz"}
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return [c.case_id for c in cases]
