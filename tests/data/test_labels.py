"""BraTS labels <-> nested regions (WT, TC, ET) for the 2020 and 2023 schemes."""

from __future__ import annotations

import numpy as np
import pytest

from pfseg_pipeline.data.dataset_json import label_scheme_of
from pfseg_pipeline.data.labels import (
    BRATS2020,
    BRATS2023,
    LabelScheme,
    check_label_values,
    get_scheme,
    labels_to_regions,
    region_names,
    regions_to_labels,
)
from pfseg_pipeline.errors import UserError


def _label_map(values) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.choice(np.array(values, np.uint8), size=(4, 5, 6))


def test_brats2020_regions_and_back():
    seg = _label_map([0, 1, 2, 4])
    wt, tc, et = labels_to_regions(seg, BRATS2020)
    assert np.array_equal(wt, np.isin(seg, [1, 2, 4]))
    assert np.array_equal(tc, np.isin(seg, [1, 4]))
    assert np.array_equal(et, seg == 4)
    assert np.array_equal(regions_to_labels(np.stack([wt, tc, et]), BRATS2020), seg)


def test_brats2023_regions_and_back():
    seg = _label_map([0, 1, 2, 3])
    masks = labels_to_regions(seg, BRATS2023)
    assert masks.shape == (3, *seg.shape) and masks.dtype == bool
    assert np.array_equal(masks[0], seg > 0)
    assert np.array_equal(masks[1], np.isin(seg, [1, 3]))
    assert np.array_equal(masks[2], seg == 3)
    assert np.array_equal(regions_to_labels(masks, BRATS2023), seg)


def test_wt_target_is_binary():
    seg = _label_map([0, 1, 2, 4])
    masks = labels_to_regions(seg, BRATS2020, target="wt")
    assert masks.shape == (1, *seg.shape) and region_names("wt") == ("WT",)
    assert np.array_equal(regions_to_labels(masks, BRATS2020, target="wt"), (seg > 0).astype(np.uint8))


def test_inner_regions_are_kept_inside_the_outer_ones():
    masks = np.zeros((3, 1, 1, 5), bool)
    masks[2, 0, 0, 0] = True          # ET alone (independent sigmoids can do this): not tumour
    masks[1, 0, 0, 1] = True          # TC alone: not tumour either (it would inflate WT)
    masks[0, 0, 0, 2] = True          # WT alone -> edema
    masks[:2, 0, 0, 3] = True         # WT and TC -> necrosis / non-enhancing core
    masks[[0, 2], 0, 0, 4] = True     # WT and ET but not TC -> edema (ET stays inside TC)
    labels = regions_to_labels(masks, BRATS2020)
    assert labels.ravel().tolist() == [0, 0, 2, 1, 2]
    # the written whole tumour is exactly the WT channel
    assert np.array_equal(labels_to_regions(labels, BRATS2020)[0], masks[0])


def test_scheme_lookup_values_and_json():
    assert get_scheme("brats2023") is BRATS2023
    with pytest.raises(UserError, match="unknown label scheme"):
        get_scheme("brats2019")
    assert BRATS2020.values == (0, 1, 2, 4)
    assert check_label_values(np.array([0, 1, 3, 4, 7]), BRATS2020) == [3, 7]
    assert LabelScheme.from_json(BRATS2023.to_json()) == BRATS2023
    with pytest.raises(UserError, match="malformed"):
        LabelScheme.from_json({"name": "x"})


def test_nnunet_dataset_json_schemes():
    plain = {"labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 4}}
    assert label_scheme_of(plain) == BRATS2020
    region_based = {"labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                               "enhancing tumor": [3]}, "regions_class_order": [1, 2, 3]}
    scheme = label_scheme_of(region_based)
    assert scheme.regions == {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    seg = _label_map([0, 1, 2, 3])
    assert np.array_equal(regions_to_labels(labels_to_regions(seg, scheme), scheme), seg)
    with pytest.raises(UserError, match="cannot tell which tumour class label 1 'tumour' is.*--label-scheme"):
        label_scheme_of({"labels": {"background": 0, "tumour": 1}})
