"""The fingerprint of real (synthetic) files: per-case values checked against the arrays."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pfseg_pipeline.data.labels import BRATS2020
from pfseg_pipeline.data.layouts import MODALITIES, discover
from pfseg_pipeline.data.nifti import read_label, read_volume
from pfseg_pipeline.planners.fingerprint import compute_fingerprint, weighted_size_percentile


def test_fingerprint_matches_the_arrays(synthetic_raw):
    cases = discover(synthetic_raw, MODALITIES, require_label=True).cases
    fp = compute_fingerprint(cases, MODALITIES, BRATS2020, workers=1, progress=False)
    assert [c["case"] for c in fp["cases"]] == [c.case_id for c in cases]
    first, case = fp["cases"][0], cases[0]
    images = np.stack([read_volume(case.images[m])[0] for m in MODALITIES])
    seg, _ = read_label(case.label)
    assert first["shape_zyx"] == [16, 20, 24] and first["spacing_zyx"] == [1.0, 1.0, 1.0]
    assert first["orientation"] == "LPS"
    brain = np.any(images != 0, axis=0)
    nz = np.nonzero(brain)
    assert first["brain_box_zyx"] == [[int(a.min()), int(a.max()) + 1] for a in nz]
    assert first["brain_voxels"] == int(brain.sum())
    t2 = images[MODALITIES.index("t2")][brain]
    assert np.isclose(first["intensity"]["t2"]["p50"], np.percentile(t2, 50))
    assert np.isclose(first["intensity"]["t2"]["mean"], t2.mean(), rtol=1e-5)
    assert sum(first["label_voxels"].values()) == seg.size
    wt = np.isin(seg, (1, 2, 4))
    assert sum(first["components"]["WT"]) == int(wt.sum())
    _, n = ndimage.label(wt, structure=np.ones((3, 3, 3)))
    assert len(first["components"]["WT"]) == n
    ds = fp["dataset"]
    assert ds["n_cases"] == 3 and ds["median_spacing_zyx"] == [1.0, 1.0, 1.0]
    assert ds["orientations"] == {"LPS": 3}
    assert set(ds["components"]) == {"WT", "TC", "ET"}


def test_voxel_weighted_percentile_ignores_specks():
    assert weighted_size_percentile([1, 1, 1, 1000], 5) == 1000
    assert weighted_size_percentile([10, 10, 10, 10], 50) == 10
    assert weighted_size_percentile([], 5) is None
