"""The region prior of a run from its own training cases, per network: whole volumes vs the
loader's foreground-oversampled patches, on hand-built cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pfseg_pipeline.fileio import read_json, save_npz
from pfseg_pipeline.training.data_loader import CachedCaseLoader, extract_region, placement_range
from pfseg_pipeline.training.region_prior import box_sums, fold_region_prior

NAME = "Tiny"


def _case(shape, tumour_start, tumour_size):
    """Edema (2) box with a core (1) and an enhancing (4) voxel block inside."""
    seg = np.zeros(shape, np.uint8)
    box = tuple(slice(s, s + n) for s, n in zip(tumour_start, tumour_size))
    seg[box] = 2
    inner = tuple(slice(s + 1, s + n - 1) for s, n in zip(tumour_start, tumour_size))
    seg[inner] = 1
    seg[tuple(slice(s + 1, s + 3) for s in tumour_start)] = 4
    return seg


@pytest.fixture
def cases(tmp_path):
    out = tmp_path / "cases"
    specs = {"a": ((12, 20, 20), (2, 3, 4), (5, 6, 6)), "b": ((16, 36, 30), (8, 20, 10), (4, 8, 10))}
    for case_id, (shape, start, size) in specs.items():
        seg = _case(shape, start, size)
        save_npz(out / f"{case_id}.npz", image=np.zeros((2, *shape), np.float32), seg=seg)
    return out


def _brute_force(seg_masks, shape, ranges, centres, fraction):
    """Every start one by one, with the loader's own region cutter."""
    patch_voxels = float(np.prod(shape))
    uniform = [[extract_region(m, s, shape).sum() / patch_voxels for s in itertools.product(
        *(range(lo, hi + 1) for lo, hi in ranges))] for m in seg_masks]
    shares = [np.mean(u) for u in uniform]
    if fraction:
        centred = [np.mean([extract_region(m, [c - p // 2 for c, p in zip(centre, shape)], shape).sum()
                            / patch_voxels for centre in centres]) for m in seg_masks]
        shares = [fraction * c + (1 - fraction) * u for c, u in zip(centred, shares)]
    return shares


def test_box_sums_match_slicing_even_outside_the_array():
    rng = np.random.default_rng(0)
    mask = rng.random((7, 9, 8)) > 0.6
    starts = np.array([[0, 0, 0], [-3, 2, 5], [5, 7, 6], [-10, -10, -10], [2, -4, 3]])
    expected = [extract_region(mask.astype(np.int64), s, (4, 5, 6)).sum() for s in starts]
    assert box_sums(mask, starts, (4, 5, 6)).tolist() == expected


def test_patches_hold_more_tumour_than_whole_volumes_as_the_loader_samples_them(cases, make_plans):
    from pfseg_pipeline.data.labels import labels_to_regions

    plans = make_plans(hr=(16, 32, 32), patch=(8, 16, 16))         # foreground oversampling 0.5
    ids = ["a", "b"]
    whole = fold_region_prior(plans, cases, ids, whole_volume=True)
    patches = fold_region_prior(plans, cases, ids, whole_volume=False)
    expected_whole, expected_patches = [], []
    for case_id in ids:
        seg = np.load(cases / f"{case_id}.npz")["seg"]
        masks = labels_to_regions(seg, plans.scheme, plans.target).astype(np.int64)
        hr, patch = plans.hr_shape_zyx, plans.patch_based.patch_shape_zyx
        expected_whole.append(_brute_force(masks, hr, [placement_range(e, s) for e, s in zip(seg.shape, hr)],
                                           [], 0.0))
        centres = np.argwhere(seg > 0)
        expected_patches.append(_brute_force(masks, patch, [placement_range(e, s) for e, s in
                                                            zip(seg.shape, patch)], centres, 0.5))
    assert whole == pytest.approx(np.mean(expected_whole, axis=0).tolist(), rel=1e-3)
    assert patches == pytest.approx(np.mean(expected_patches, axis=0).tolist(), rel=1e-3)
    # the whole HR volume holds every tumour voxel whatever the placement (the brain is smaller)
    wt_voxels = [int((np.load(cases / f"{c}.npz")["seg"] > 0).sum()) for c in ids]
    assert whole[0] == pytest.approx(np.mean(wt_voxels) / (16 * 32 * 32), rel=1e-3)
    assert all(p > 2 * w for p, w in zip(patches, whole))            # oversampled patches: much more tumour


def test_the_prior_agrees_with_the_loaders_own_draws(cases, make_plans):
    """3000 patches drawn by the real loader: their mean tumour share is the computed one."""
    plans = make_plans(hr=(16, 32, 32), patch=(8, 16, 16))
    computed = fold_region_prior(plans, cases, ["b"], whole_volume=False)
    loader = CachedCaseLoader(cases, ["b"], plans.patch_based.patch_shape_zyx, 1, whole_volume=False,
                              foreground_fraction=plans.patch_based.foreground_oversampling)
    np.random.seed(0)
    seg = np.load(cases / "b.npz")["seg"]
    shares = [(loader.sample("b")[1] > 0).mean() for _ in range(3000)]
    assert np.mean(shares) == pytest.approx(computed[0], rel=0.08)
    assert seg.shape == (16, 36, 30)


def test_a_fold_run_records_its_own_prior_per_network(tmp_path, make_workspace, make_plans):
    from pfseg_pipeline.checkpoints import read_checkpoint
    from pfseg_pipeline.networks.registry import build_network
    from pfseg_pipeline.splits import read_splits, select_split
    from pfseg_pipeline.training.recipe import Overrides, train_fold

    plans = make_plans(hr=(8, 16, 16), patch=(8, 16, 16))
    ws = make_workspace(tmp_path / "ws", plans, n_cases=5)
    overrides = Overrides(epochs=1, iterations_per_epoch=1, num_workers=0, progress_bar=False, lr=1e-7,
                          settings=(("training.region_prior_source", "fold"),))
    train_ids = select_split(read_splits(ws.preprocessed(NAME) / "splits.json", ws.cases_dir(NAME), 12345),
                             "folds", "1")[0]
    priors = {}
    for network, whole in (("pfseg", True), ("resunet3d", False)):
        assert train_fold(ws, NAME, network, "1", overrides=overrides) is None
        fold = ws.root / "results" / NAME / network / "fold_1"
        recorded = read_json(fold / "train_summary.json")["region_prior"]
        assert recorded["values"] == fold_region_prior(plans, ws.cases_dir(NAME), train_ids, whole)
        assert recorded["source"].startswith(f"fold: the {len(train_ids)} training cases")
        ckpt = read_checkpoint(fold / "checkpoint_final.pt")
        assert ckpt["run_info"]["region_prior"] == recorded
        model = build_network(network, plans, **ckpt["network_options"])
        model.load_state_dict(ckpt["model"])
        expected = torch.logit(torch.tensor(recorded["values"]))
        torch.testing.assert_close(model.output_head().bias.detach(), expected, rtol=0, atol=1e-4)   # lr 1e-7
        priors[network] = recorded["values"]
    assert priors["resunet3d"][0] > priors["pfseg"][0]


def test_the_whole_volume_prior_counts_the_loaders_shift(cases, make_plans):
    """With a shift beyond the slack (the paper's shift augmentation) the HR region cuts through the
    tumour for some starts: the prior is the exact mean over the loader's widened range, and it
    differs from the unshifted one."""
    from pfseg_pipeline.data.labels import labels_to_regions

    plans = make_plans(hr=(8, 16, 16))
    shift = (0, 4, 4)
    ids = ["a", "b"]
    shifted = fold_region_prior(plans, cases, ids, whole_volume=True, max_shift_zyx=shift)
    plain = fold_region_prior(plans, cases, ids, whole_volume=True)
    loader = CachedCaseLoader(cases, ids, plans.hr_shape_zyx, 1, whole_volume=True, max_shift_zyx=shift)
    expected = []
    for case_id in ids:
        seg = np.load(cases / f"{case_id}.npz")["seg"]
        masks = labels_to_regions(seg, plans.scheme, plans.target).astype(np.int64)
        ranges = [(lo - m, hi + m) for (lo, hi), m in
                  zip((placement_range(e, s) for e, s in zip(seg.shape, plans.hr_shape_zyx)), shift)]
        assert loader.start_ranges(seg) == ranges
        expected.append(_brute_force(masks, plans.hr_shape_zyx, ranges, [], 0.0))
    assert shifted == pytest.approx(np.mean(expected, axis=0).tolist(), rel=1e-3)
    assert shifted != pytest.approx(plain, rel=1e-3)
