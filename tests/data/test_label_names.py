"""Labels by name: dataset.json label names placed on edema / core / enhancing, whatever the numbers."""

from __future__ import annotations

import numpy as np
import pytest

from pfseg_pipeline.data.dataset_json import channel_indices, label_scheme_of
from pfseg_pipeline.data.label_names import label_class, scheme_from_label_names
from pfseg_pipeline.data.labels import BRATS2020, BRATS2023, MSD, labels_to_regions, regions_to_labels
from pfseg_pipeline.errors import UserError

MSD_V2 = {"background": 0, "edema": 1, "non-enhancing tumor": 2, "enhancing tumour": 3}
MSD_V1 = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}


@pytest.mark.parametrize("name, expected", [
    ("edema", "edema"), ("Peritumoral Oedema", "edema"), ("ED", "edema"), ("SNFH", "edema"),
    ("surrounding non-enhancing FLAIR hyperintensity", "edema"),
    ("non-enhancing tumor", "core"), ("Non Enhancing Tumour Core", "core"), ("NCR/NET", "core"),
    ("necrotic core", "core"), ("NETC", "core"), ("necrosis", "core"), ("nonenhancing", "core"),
    ("enhancing tumour", "enhancing"), ("GD-enhancing tumor", "enhancing"), ("ET", "enhancing"),
    ("background", "background"),
    ("tumour", None), ("resection cavity", None), ("whole tumor", None), ("label1", None),
])
def test_label_class(name, expected):
    assert label_class(name) == expected


def test_msd_labels_in_both_dataset_json_forms_give_tc_core_plus_enhancing():
    for labels in (MSD_V2, MSD_V1):
        scheme = label_scheme_of({"labels": labels})
        assert scheme == MSD
        assert scheme.regions == {"WT": (1, 2, 3), "TC": (2, 3), "ET": (3,)}
    seg = np.array([0, 1, 2, 3], dtype=np.uint8).reshape(1, 1, 4)
    wt, tc, et = labels_to_regions(seg, MSD)
    assert wt.ravel().tolist() == [False, True, True, True]
    assert tc.ravel().tolist() == [False, False, True, True]     # brats2023 would say [F, T, F, T]
    assert et.ravel().tolist() == [False, False, False, True]
    assert np.array_equal(regions_to_labels(labels_to_regions(seg, MSD), MSD), seg)


def test_brats_names_give_the_builtin_schemes():
    assert label_scheme_of({"labels": {"background": 0, "NCR": 1, "ED": 2, "ET": 4}}) is BRATS2020
    assert label_scheme_of({"labels": {"background": 0, "NETC": 1, "SNFH": 2, "ET": 3}}) is BRATS2023


def test_any_numbering_is_placed_by_name_and_round_trips():
    scheme = scheme_from_label_names({"background": 0, "enhancing": 1, "oedema": 5, "necrosis": 7,
                                      "non-enhancing": 9})
    assert scheme.regions == {"WT": (1, 5, 7, 9), "TC": (1, 7, 9), "ET": (1,)}
    assert scheme.regions_class_order == (5, 7, 1) and scheme.name.startswith("named_")
    seg = np.array([0, 5, 7, 1], dtype=np.uint8).reshape(1, 2, 2)
    assert np.array_equal(regions_to_labels(labels_to_regions(seg, scheme), scheme), seg)


def test_a_name_it_cannot_place_asks_for_label_scheme():
    with pytest.raises(UserError, match=r"D/dataset.json: 'labels': cannot tell which tumour class label 4 "
                                        r"'resection cavity' is.*--label-scheme brats2020\|brats2023\|msd"):
        label_scheme_of({"labels": {**MSD_V2, "resection cavity": 4}}, "D/dataset.json")
    with pytest.raises(UserError, match="name no enhancing tumour label"):
        label_scheme_of({"labels": {"background": 0, "edema": 1, "necrosis": 2}})
    # with --label-scheme the user decides what the names cannot
    given = label_scheme_of({"labels": {"background": 0, "NCR": 1, "ED": 2, "label 4": 4}}, given=BRATS2020)
    assert given is BRATS2020


def test_names_that_contradict_the_given_scheme_are_refused():
    with pytest.raises(UserError, match=r"label 1 'edema' is edema, but --label-scheme brats2023 makes 1 "
                                        r"necrotic / non-enhancing core"):
        label_scheme_of({"labels": MSD_V2}, given=BRATS2023)
    assert label_scheme_of({"labels": MSD_V2}, given=MSD) is MSD


def test_msd_channel_names():
    assert channel_indices({"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}}) == \
        {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
    assert channel_indices({"channel_names": {"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"}}) == \
        {"flair": 0, "t1": 1, "t1ce": 2, "t2": 3}
    with pytest.raises(UserError, match="channels 0 and 1 are both t1"):
        channel_indices({"channel_names": {"0": "T1", "1": "T1w"}})
