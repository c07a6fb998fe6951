"""The mni152 anatomy generator: BraTS geometry, determinism, nested labels, contrasts, variety.

The template wheel is fetched at most once per test session into the user's template cache
(`paths.template_cache_dir()`, PyPI reachable as in CI); every test after that reads the cache.
Cases are generated at 4 mm (60 x 60 x 39 voxels, about 0.1 s each).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.make_synthetic import main
from pfseg_pipeline.data.anatomy import brats_grid
from pfseg_pipeline.data.layouts import MODALITIES, discover
from pfseg_pipeline.data.mni152 import make_mni152_case, simulate_case
from pfseg_pipeline.data.nifti import read_label, read_volume
from pfseg_pipeline.data.template import WHEEL_NAME, WHEEL_SHA256, ensure_template_wheel
from pfseg_pipeline.paths import template_cache_dir

N_CASES = 8


@pytest.fixture(scope="module")
def wheel():
    return ensure_template_wheel(template_cache_dir())


@pytest.fixture(scope="module")
def cases(wheel):
    return [simulate_case(wheel, 4, (5, k)) for k in range(N_CASES)]


@pytest.fixture(scope="module")
def written(wheel, tmp_path_factory):
    """Three 4 mm cases written by the command line, in two worker processes."""
    out = tmp_path_factory.mktemp("mni152") / "raw"
    assert run(main, [str(out), "--anatomy", "mni152", "--spacing", "4", "--cases", "3", "--seed", "2",
                      "-np", "2"]) == 0
    return out


def test_brats_grid_at_each_spacing():
    for spacing, shape_xyz in ((1, (240, 240, 155)), (2, (120, 120, 78)), (4, (60, 60, 39))):
        shape_zyx, affine = brats_grid(spacing)
        assert shape_zyx == tuple(reversed(shape_xyz))
        assert np.allclose(np.abs(np.diag(affine)[:3]), spacing)
        assert nib.aff2axcodes(affine) == ("L", "P", "S")
        # a coarse voxel's centre is the centre of the 1 mm voxels it covers
        first_1mm = brats_grid(1)[1] @ np.array([(spacing - 1) / 2.0] * 3 + [1.0])
        assert np.allclose(affine @ np.array([0, 0, 0, 1.0]), first_1mm)


def test_written_cases_are_brats_files_on_the_4mm_grid(written, caplog):
    found = discover(written, require_label=True)
    assert found.problems == []
    assert [c.case_id for c in found.cases] == [f"BraTS20_Training_{k:03d}" for k in (1, 2, 3)]
    for case in found.cases:
        img = nib.load(str(case.images["flair"]))
        assert img.shape == (60, 60, 39) and img.get_data_dtype() == np.int16
        assert np.allclose(img.header.get_zooms(), 4.0)
        assert np.allclose(img.affine, brats_grid(4)[1])
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
        seg = nib.load(str(case.label))
        assert seg.get_data_dtype() == np.uint8 and np.allclose(seg.affine, img.affine)
    log = (written / "make_synthetic.log").read_text()
    assert "case 3/3: BraTS20_Training_003" in log


def test_case_k_is_the_same_bytes_whatever_else_is_written(written, tmp_path):
    assert run(main, [str(tmp_path / "alone"), "--anatomy", "mni152", "--spacing", "4", "--cases", "1",
                      "--seed", "2", "--start-index", "2"]) == 0
    case = "BraTS20_Training_002"
    for suffix in (*MODALITIES, "seg"):
        name = f"{case}/{case}_{suffix}.nii.gz"
        assert (tmp_path / "alone" / name).read_bytes() == (written / name).read_bytes()
    # and the files hold what the library returns
    images, seg = make_mni152_case(ensure_template_wheel(template_cache_dir()), 4, (2, 2))
    assert np.array_equal(read_volume(written / case / f"{case}_t1ce.nii.gz")[0], images["t1ce"])
    assert np.array_equal(read_label(written / case / f"{case}_seg.nii.gz")[0], seg)


def test_same_seed_same_case_and_another_seed_differs(wheel, cases):
    again = simulate_case(wheel, 4, (5, 1))
    assert np.array_equal(again.seg, cases[1].seg)
    for modality in MODALITIES:
        assert np.array_equal(again.images[modality], cases[1].images[modality])
    assert not np.array_equal(cases[0].images["t1"], cases[1].images["t1"])


def test_every_modality_is_zero_exactly_outside_the_brain(cases):
    for case in cases:
        brain = case.images["t1"] > 0
        assert 0.1 < brain.mean() < 0.3
        for modality in MODALITIES:
            image = case.images[modality]
            assert np.array_equal(image > 0, brain), modality
            assert image.min() == 0 and image[brain].min() >= 1 and np.array_equal(image, np.rint(image))
        assert not (case.seg[~brain] > 0).any()
        # brain volume of an adult (the template scaled by 0.86-0.97 per case)
        assert 1.0e6 < brain.sum() * 64 < 1.9e6


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels 6-adjacent to `mask`, outside it."""
    return ndimage.binary_dilation(mask) & ~mask


def test_labels_are_nested_as_in_brats(cases):
    """Labels 1/2/4 only; the core (1 + 4) is wrapped in edema; necrosis lies inside the rim."""
    touching_normal, core_surface, necrosis_exposed, necrosis_surface = 0, 0, 0, 0
    seen = set()
    for case in cases:
        seg, brain = case.seg, case.images["t1"] > 0
        values = set(np.unique(seg).tolist())
        assert values <= {0, 1, 2, 4} and 2 in values and (1 in values or 4 in values)
        seen |= values
        core = (seg == 1) | (seg == 4)
        around = _neighbours(core) & brain
        core_surface += around.sum()
        touching_normal += (around & (seg == 0)).sum()
        necrosis = seg == 1
        ring = _neighbours(necrosis) & brain
        necrosis_surface += ring.sum()
        necrosis_exposed += (ring & (seg == 0)).sum()
    assert seen == {0, 1, 2, 4}
    assert touching_normal < 0.25 * core_surface          # edema around the core
    assert necrosis_exposed < 0.1 * necrosis_surface      # necrosis inside the tumour


def _class_masks(case, threshold: float = 0.8) -> dict[str, np.ndarray]:
    brain = case.images["t1"] > 0
    normal = brain & (case.seg == 0)
    return {name: normal & (case.tissue[name] > threshold) for name in ("wm", "gm", "csf")}


def test_contrasts_follow_the_tissue_classes(cases):
    for case in cases:
        masks = _class_masks(case)
        t1, t1ce, t2, flair = (case.images[m] for m in MODALITIES)
        assert flair[masks["csf"]].mean() < flair[masks["wm"]].mean() < flair[case.seg == 2].mean()
        assert flair[masks["wm"]].mean() < flair[masks["gm"]].mean()
        assert t2[masks["csf"]].mean() > t2[masks["gm"]].mean() > t2[masks["wm"]].mean()
        assert t1[masks["csf"]].mean() < t1[masks["gm"]].mean() < t1[masks["wm"]].mean()
        if (case.seg == 4).sum() >= 5:
            assert t1ce[case.seg == 4].mean() > 1.15 * t1ce[masks["wm"]].mean()
        if (case.seg == 1).sum() >= 5 and all(lesion.enhancing for lesion in case.lesions):
            assert t1ce[case.seg == 1].mean() < t1ce[case.seg == 4].mean()


def test_edema_follows_white_matter(cases):
    """Edema voxels hold more white matter than the brain around the lesion does (cases whose
    edema reaches beyond the thin shell that wraps every core)."""
    spreading = [case for case in cases if min(lesion.edema_mm for lesion in case.lesions) > 8.0]
    assert len(spreading) >= 4
    for case in spreading:
        edema = case.seg == 2
        nearby = ndimage.binary_dilation(case.seg > 0, iterations=3) & (case.images["t1"] > 0)
        assert case.tissue["wm"][edema].mean() > case.tissue["wm"][nearby & ~(case.seg > 0)].mean() + 0.1


def test_the_deformation_varies_the_brain_between_cases(cases):
    brains = [case.images["t1"] > 0 for case in cases]
    volumes = np.array([b.sum() for b in brains], dtype=float)
    assert volumes.std() / volumes.mean() > 0.03
    for a, b in zip(brains, brains[1:]):
        overlap = 2.0 * np.sum(a & b) / (a.sum() + b.sum())
        assert overlap < 0.97
    wm = [case.tissue["wm"] for case in cases]
    assert min(np.abs(x - y).mean() for x, y in zip(wm, wm[1:])) > 0.02


def test_tumours_vary_in_size_and_enhancing_components_come_in_many_sizes(cases):
    whole = np.array([np.count_nonzero(case.seg) for case in cases]) * 64e-3       # ml
    assert whole.max() > 4 * whole.min()
    components = []
    for case in cases:
        pieces, n = ndimage.label(case.seg == 4, structure=np.ones((3, 3, 3)))
        components += list(np.bincount(pieces.ravel())[1:] * 64e-3)
    assert min(components) < 0.5 and max(components) > 3.0


def test_one_flair_threshold_is_an_imperfect_whole_tumour_segmenter(cases):
    """Even the best threshold for each case (an oracle) stays short of a good segmentation."""
    best = []
    for case in cases:
        flair, whole = case.images["flair"], case.seg > 0
        thresholds = np.quantile(flair[flair > 0], np.linspace(0.5, 0.999, 100))
        best.append(max(2.0 * np.sum((flair > t) & whole) / (np.sum(flair > t) + whole.sum())
                        for t in thresholds))
    assert np.mean(best) < 0.88, best


def test_mni152_refuses_shape_and_blobs_refuse_spacing(tmp_path, capsys):
    out = tmp_path / "raw"
    assert run(main, [str(out), "--anatomy", "mni152", "--shape", "64", "64", "48"]) == 2
    assert "--shape applies to --anatomy blobs only" in capsys.readouterr().err
    assert run(main, [str(out), "--spacing", "2", "--cases", "1", "--shape", "16", "16", "12"]) == 2
    assert "--spacing 2 applies to --anatomy mni152 only" in capsys.readouterr().err
    assert run(main, [str(out), "--anatomy", "mni152", "--spacing", "3"]) == 2
    assert not any(out.glob("BraTS*"))


def _offline_env(cache, find_links: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env.update(PFSEG_CACHE=str(cache), PIP_NO_INDEX="1", PIP_FIND_LINKS=find_links,
               PIP_CONFIG_FILE=os.devnull)
    return env


def test_no_template_and_no_index_is_one_clear_error(tmp_path):
    cache, out = tmp_path / "empty_cache", tmp_path / "raw"
    done = subprocess.run([sys.executable, "-m", "pfseg_pipeline.cli.make_synthetic", str(out),
                           "--anatomy", "mni152", "--spacing", "4", "--cases", "1"],
                          env=_offline_env(cache), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert str(cache / WHEEL_NAME) in errors[0] and WHEEL_SHA256 in errors[0]
    assert "by hand" in errors[0] and "PFSEG_CACHE" in errors[0]
    assert not any(out.glob("BraTS*")) and not any(cache.glob("*.whl"))


def test_a_corrupt_cached_wheel_is_refused_and_fetched_again(wheel, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WHEEL_NAME).write_bytes(b"not the template")
    # no index: pip can fetch only from the folder that holds the good wheel
    for key, value in _offline_env(cache, find_links=str(wheel.parent)).items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.WARNING):
        fetched = ensure_template_wheel(cache)
    assert fetched == cache / WHEEL_NAME and fetched.read_bytes() == wheel.read_bytes()
    assert "refusing it" in caplog.text
    # with nowhere to fetch from, the corrupt file is refused all the same
    (cache / WHEEL_NAME).write_bytes(b"truncated")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(Exception, match=WHEEL_SHA256) as error:
        ensure_template_wheel(cache)
    assert type(error.value).__name__ == "UserError" and not (cache / WHEEL_NAME).exists()


def test_plan_and_preprocess_runs_on_anatomy_cases(written, tmp_path):
    from pfseg_pipeline.cli.plan_and_preprocess import main as plan_main
    from pfseg_pipeline.plans import load_plans

    ws = tmp_path / "ws"
    assert run(plan_main, ["-i", str(written), "-d", "Brain", "--preset", "demo", "-np", "1",
                           "--workspace", str(ws)]) == 0
    plans = load_plans(ws / "preprocessed" / "Brain" / "plans.json")
    assert plans.preset == "demo"


def test_the_template_is_read_in_lps_voxel_order(wheel):
    from pfseg_pipeline.data.template import read_template

    template = read_template(wheel)
    assert template.t1.shape == template.gm.shape == template.wm.shape == (189, 233, 197)
    for array in (template.t1, template.gm, template.wm):
        assert array.dtype == np.float32 and 0.0 <= array.min() and array.max() <= 1.0
    brain = template.t1 > 0
    assert np.all(template.gm + template.wm <= 1.0 + 1e-6)
    # y grows to the back (P): the cerebellum below the cerebrum lies behind the brain's middle
    z, y, _ = np.nonzero(brain)
    assert y[z < 40].mean() > y.mean() + 10
    # z grows upwards (S): the brain's bottom slices are the narrow brainstem and cerebellum
    assert brain[5].sum() < 0.5 * brain[100].sum()


def test_tumours_grow_from_seeds_in_white_matter(cases):
    from pfseg_pipeline.data.anatomy import axis_positions_mm

    axes = axis_positions_mm(cases[0].seg.shape, 4)
    for case in cases:
        for seed in case.seeds_mm:
            index = tuple(int(np.argmin(np.abs(a - c))) for a, c in zip(axes, seed))
            assert case.tissue["wm"][index] > 0.5
            assert case.seg[index] in (1, 4)          # the seed ends up inside its tumour core


def test_mass_effect_pushes_tissue_away_from_the_lesion_and_not_past_the_skull():
    from pfseg_pipeline.data.anatomy import MassEffect, TemplateChannels, Warp, warp_channels

    ramp = np.broadcast_to(np.arange(61, dtype=np.float32), (61, 61, 61)).copy()   # value = x index
    template = TemplateChannels(1, {"mask": ramp}, np.array([30.0, 30.0, 30.0]))
    identity = Warp(np.eye(3), np.zeros(3), np.zeros((3, 4, 4, 4), dtype=np.float32))
    axes = [np.array([0.0]), np.array([0.0]), np.arange(-28.0, 29.0, 2.0)]
    plain = warp_channels(template, identity, axes, names=("mask",))["mask"][0, 0]
    assert np.allclose(plain, axes[2] + 30.0)
    push = MassEffect(np.zeros(3), strength=0.5, reach_mm=8.0)
    pushed = warp_channels(template, identity, axes, (push,), names=("mask",))["mask"][0, 0] - 30.0
    x = axes[2]
    assert np.allclose(pushed, x * (1.0 - 0.5 * np.exp(-(x / 8.0) ** 2)), atol=1e-4)
    assert np.all(np.diff(pushed) > 0)                         # one-to-one: no folding
    near = np.abs(x) <= 6
    assert np.all(np.abs(pushed[near]) <= np.abs(x[near]))      # what was near is pushed outwards
    assert np.allclose(pushed[np.abs(x) >= 26], x[np.abs(x) >= 26], atol=0.01)
    # at the brain surface (depth 0) the skull holds the tissue in place
    still = warp_channels(template, identity, axes, (push,), np.zeros((1, 1, len(x)), np.float32),
                          names=("mask",))["mask"][0, 0]
    assert np.allclose(still, plain)


def test_block_mean_keeps_partial_volume():
    from pfseg_pipeline.data.fields import block_mean

    mask = np.zeros((4, 4, 5), dtype=np.float32)
    mask[:2, :2, :2] = 1.0
    coarse = block_mean(mask, 2)
    assert coarse.shape == (2, 2, 3) and coarse[0, 0, 0] == 1.0 and coarse.sum() == 1.0
    mask[:, :, 4] = 1.0
    assert block_mean(mask, 2, "edge")[0, 0, 2] == 1.0 and block_mean(mask, 2)[0, 0, 2] == 0.5
