from __future__ import annotations

import pytest

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.splits import fold_label, held_out_cases, make_splits, select_split

IDS = [f"BraTS20_Training_{i:03d}" for i in range(1, 24)]


def test_folds_are_deterministic_disjoint_and_cover_every_case():
    a = make_splits(IDS, seed=3)
    b = make_splits(list(reversed(IDS)), seed=3)  # input order does not matter
    assert a == b
    vals = [set(f["val"]) for f in a["folds"]]
    assert len(vals) == 5 and set().union(*vals) == set(IDS)
    assert sum(len(v) for v in vals) == len(IDS)  # each case validates exactly once
    assert [len(v) for v in vals] == [5, 5, 5, 4, 4]
    for fold in a["folds"]:
        assert set(fold["train"]).isdisjoint(fold["val"])
        assert set(fold["train"]) | set(fold["val"]) == set(IDS)
    assert make_splits(IDS, seed=4)["folds"] != a["folds"]  # the seed matters
    # hashed, not sorted order: fold 0 is not simply the first cases
    assert a["folds"][0]["val"] != sorted(IDS)[:5]


def test_named_splits_follow_sorted_order():
    ids = [f"c{i}" for i in (5, 3, 9, 1, 7, 0, 2, 8, 6, 4)]
    s = make_splits(ids, seed=12345)
    ordered = sorted(ids)
    assert s["paper"] == {"train": ordered[:8], "val": [], "test": ordered[8:]}
    assert s["paper622"] == {"train": ordered[:6], "val": ordered[6:8], "test": ordered[8:]}
    big = make_splits([f"x{i:03d}" for i in range(369)], seed=12345)
    assert [len(big["paper"][k]) for k in ("train", "test")] == [295, 74]
    assert [len(big["paper622"][k]) for k in ("train", "val", "test")] == [221, 74, 74]


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_few_cases_still_give_usable_folds(n):
    ids = [f"c{i}" for i in range(n)]
    s = make_splits(ids, seed=12345)
    for fold in s["folds"]:
        assert fold["train"], "every fold trains on something"
        assert len(fold["val"]) == (0 if n == 1 else 1)
    assert s["paper"]["train"]
    with pytest.raises(UserError):
        make_splits([], seed=12345)


def test_select_split():
    s = make_splits(IDS, seed=12345)
    train, val = select_split(s, "folds", 2)
    assert (train, val) == (s["folds"][2]["train"], s["folds"][2]["val"])
    assert select_split(s, "folds", "all") == (sorted(IDS), [])
    assert select_split(s, "paper", 0) == (s["paper"]["train"], [])
    assert select_split(s, "paper622", "all") == (s["paper622"]["train"], s["paper622"]["val"])
    assert held_out_cases(s, "paper622") == s["paper622"]["test"]
    assert held_out_cases(s, "folds") == []
    assert fold_label("folds", 3) == "3" and fold_label("folds", "all") == "all"
    assert fold_label("paper", 0) == "paper"
    with pytest.raises(UserError, match="fold 7"):
        select_split(s, "folds", 7)
    with pytest.raises(UserError, match="unknown split"):
        select_split(s, "halves", 0)
    with pytest.raises(UserError, match="malformed"):
        select_split({"folds": [{"train": []}]}, "folds", 0)



def test_read_splits_reads_the_file_or_makes_it_from_the_cache(tmp_path, caplog):
    import json

    from pfseg_pipeline.splits import read_splits, write_splits

    cases = tmp_path / "cases"
    cases.mkdir()
    for case in IDS[:6]:
        (cases / f"{case}.npz").write_bytes(b"")
    (cases / ".tmp-half-written.npz").write_bytes(b"")  # an interrupted write is not a case
    path = tmp_path / "splits.json"
    made = read_splits(path, cases, seed=7, write=False)
    assert made == make_splits(IDS[:6], seed=7) and not path.exists()
    assert "was missing" in caplog.text
    made = read_splits(path, cases, seed=7)
    assert json.loads(path.read_text()) == made
    write_splits(path, IDS, seed=3)  # an existing file is read as it is, whatever the seed asked
    assert read_splits(path, cases, seed=7) == make_splits(IDS, seed=3)


def test_the_monitor_cases_are_deterministic_disjoint_and_independent_of_order():
    from pfseg_pipeline.splits import monitor_split

    ids = [f"case_{i:03d}" for i in range(20)]
    train, monitor = monitor_split(ids, 0.2, seed=12345)
    assert len(monitor) == 4 and len(train) == 16 and not set(train) & set(monitor)
    assert set(train) | set(monitor) == set(ids)
    assert train == [c for c in ids if c not in monitor]                         # order kept
    assert monitor_split(list(reversed(ids)), 0.2, seed=12345)[1] == monitor    # input order is irrelevant
    assert monitor_split(ids, 0.2, seed=7)[1] != monitor                         # the seed chooses
    assert monitor != sorted(ids)[:4] and monitor != sorted(ids)[-4:]            # hashed, not sorted order
    # a case keeps its role when the fold has one case more (hash order, not position)
    assert set(monitor_split(ids + ["case_999"], 0.2, seed=12345)[1]) & set(monitor)
    assert monitor_split(ids, 0.0, seed=1) == (ids, [])
    assert monitor_split(ids[:2], 0.01, seed=1)[1] != [] and len(monitor_split(ids[:2], 0.99, seed=1)[0]) == 1
    assert monitor_split(ids[:1], 0.5, seed=1) == (ids[:1], [])                  # nothing left to train on
