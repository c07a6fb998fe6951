from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.networks import inputs
from pfseg_pipeline.plans import load_plans, preset_training
from pfseg_pipeline.training.data_loader import (
    BackgroundBatches,
    CachedCaseLoader,
    WorkerError,
    build_training_batches,
    extract_region,
    load_case,
    worker_seed,
)
from pfseg_pipeline.training.transforms import TrainingInputs, training_transforms

NAME = "Tiny"
IDS = ["case_00", "case_01", "case_02"]


def _plans(ws):
    return load_plans(ws.plans_file(NAME))


def _batches(ws, network="pfseg", workers=0, seed=1, rank=0, augment=True, batch_size=2, plans=None):
    return build_training_batches(plans or _plans(ws), ws.cases_dir(NAME), IDS,
                                  TrainingInputs.for_network(network), batch_size, workers, seed, rank,
                                  augment=augment)


def _take(stream, epoch, n):
    stream.set_epoch(epoch)
    out = [next(stream) for _ in range(n)]
    stream.close()
    return out


def test_extract_region_pads_and_crops():
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    out = extract_region(a, (-1, 1, 2), (4, 2, 5))
    assert out.shape == (2, 4, 2, 5)
    np.testing.assert_array_equal(out[:, 1:4, :, :3], a[:, :, 1:3, 2:5])
    assert out[:, 0].sum() == 0 and out[..., 3:].sum() == 0
    assert extract_region(a, (5, 0, 0), (2, 2, 2)).sum() == 0  # entirely outside: all padding


def test_patch_free_batch_has_hr_shape_and_derived_inputs(workspace):
    plans = _plans(workspace)
    for batch in _take(_batches(workspace, plans=plans), 0, 3):
        image, target = batch["image"], batch["target"]
        assert image.shape == (2, 2, *plans.hr_shape_zyx) and image.dtype == np.float32
        assert target.shape == (2, 3, *plans.hr_shape_zyx)
        assert set(np.unique(target)) <= {0.0, 1.0}
        assert np.all(target[:, 2] <= target[:, 1]) and np.all(target[:, 1] <= target[:, 0])  # ET in TC in WT
        hr = torch.from_numpy(image)
        lr = inputs.lr_from_hr(hr, plans.lr_scale_zyx, plans.lr_operator)
        torch.testing.assert_close(torch.from_numpy(batch["lr_image"]), lr, rtol=1e-6, atol=1e-6)
        origin = inputs.guidance_origin(hr, plans.guidance.patch_shape_zyx, plans.guidance.location)
        np.testing.assert_array_equal(batch["guidance_origin_zyx"], origin.numpy())
        torch.testing.assert_close(torch.from_numpy(batch["guidance_patch"]),
                                   inputs.cut_guidance(hr, origin, plans.guidance.patch_shape_zyx))


def test_patch_based_batch_and_foreground_oversampling(workspace):
    plans = _plans(workspace)
    plans.patch_based.foreground_oversampling = 1.0
    batches = _take(_batches(workspace, network="resunet3d", augment=False, plans=plans), 0, 6)
    for batch in batches:
        assert batch["image"].shape == (2, 2, *plans.patch_based.patch_shape_zyx)
        assert "lr_image" not in batch
        assert np.all(batch["target"][:, 0].sum(axis=(1, 2, 3)) > 0), "every patch centred on tumour"


def test_augmentation_never_modifies_the_cache(workspace):
    cases = workspace.cases_dir(NAME)

    def digest():
        out = {}
        for c in IDS:
            image, seg = load_case(cases, c)
            out[c] = (hashlib.sha256(image.tobytes()).hexdigest(), hashlib.sha256(seg.tobytes()).hexdigest(),
                      hashlib.sha256((cases / f"{c}.npz").read_bytes()).hexdigest())
        return out

    before = digest()
    plans = _plans(workspace)
    loader = CachedCaseLoader(cases, IDS, plans.hr_shape_zyx, 1, whole_volume=True, random_placement=False)
    first = loader.sample("case_00")[0].copy()
    transform = training_transforms(plans, plans.hr_shape_zyx, TrainingInputs.for_network("pfseg"))
    np.random.seed(0)
    for _ in range(4):  # in-process, so an in-place write into a shared array would show
        image, seg = loader.sample("case_00")
        transform(data=image[None], seg=seg[None, None].astype(np.float32), case_ids=["case_00"])
    _take(_batches(workspace, workers=0), 0, 4)
    assert digest() == before
    np.testing.assert_array_equal(loader.sample("case_00")[0], first)  # nothing accumulates


def test_batches_are_reproducible_per_epoch_and_rank(workspace):
    def key(batches):
        return [hashlib.sha256(b["image"].tobytes() + b["target"].tobytes()).hexdigest() for b in batches]

    in_process = key(_take(_batches(workspace, workers=0), 0, 3))
    assert key(_take(_batches(workspace, workers=0), 0, 3)) == in_process
    # one background worker is seeded like the in-process loader: the same batches
    assert key(_take(_batches(workspace, workers=1), 0, 3)) == in_process
    assert key(_take(_batches(workspace, workers=0), 1, 3)) != in_process
    assert key(_take(_batches(workspace, workers=0, rank=1), 0, 3)) != in_process
    assert len({worker_seed(1, e, r, w) for e in range(3) for r in range(2) for w in range(3)}) == 18


def test_every_random_draw_is_seeded(workspace):
    """Python's `random` (batchgenerators' noise uses it) must not leak into the batches."""
    import random

    plans = _plans(workspace)
    config = dataclasses.replace(plans.training.augmentation, p_rotation=1, p_scale=1, p_gamma=1, p_noise=1,
                                 p_brightness=1, p_contrast=1)

    def run(python_seed):
        random.seed(python_seed)
        loader = CachedCaseLoader(workspace.cases_dir(NAME), IDS, plans.hr_shape_zyx, 2, whole_volume=True)
        inputs = TrainingInputs.for_network("pfseg")
        transform = training_transforms(plans, plans.hr_shape_zyx, inputs, config)
        stream = BackgroundBatches(loader, transform, 0, seed=5)
        return [hashlib.sha256(b["image"].tobytes()).hexdigest() for b in _take(stream, 0, 2)]

    assert run(1) == run(2)


class _Exploding:
    def __call__(self, **batch):
        raise ValueError("intensity went sideways in case 42")


@pytest.mark.parametrize("workers", [0, 1])
def test_worker_error_surfaces_the_real_exception(workspace, workers):
    shape = _plans(workspace).hr_shape_zyx
    loader = CachedCaseLoader(workspace.cases_dir(NAME), IDS, shape, 1, whole_volume=True)
    stream = BackgroundBatches(loader, _Exploding(), workers, seed=0)
    with pytest.raises(WorkerError, match="ValueError: intensity went sideways in case 42") as info:
        next(stream)
    assert "_Exploding" in str(info.value) or "__call__" in str(info.value)  # the worker's traceback
    stream.close()


def test_corrupt_cache_file_is_a_user_error_from_the_worker(workspace):
    (workspace.cases_dir(NAME) / "case_01.npz").write_bytes(b"not a zip")
    loader = CachedCaseLoader(workspace.cases_dir(NAME), ["case_01"], _plans(workspace).hr_shape_zyx, 1,
                              whole_volume=True)
    stream = BackgroundBatches(loader, None, 1, seed=0)
    with pytest.raises(UserError, match="case_01.npz"):
        next(stream)
    stream.close()


def test_paper_preset_shifts_in_plane_only(workspace):
    plans = _plans(workspace)
    plans.training.augmentation = preset_training("paper").augmentation
    config = plans.training.augmentation
    assert config.mirror_axes == [1, 2] and config.rotation_deg_zyx[1:] == [0.0, 0.0]
    assert config.p_gamma == config.p_noise == config.p_scale == 0.0
    stream = _batches(workspace, plans=plans)
    loader = stream.loader
    assert loader.max_shift == (0, 3, 3)  # 10 % of 32 in-plane, none along z
    seg = np.zeros(plans.hr_shape_zyx, np.uint8)  # a brain box exactly the HR shape: no slack
    np.random.seed(0)
    starts = np.array([loader._patch_start("case_01", seg) for _ in range(200)])
    assert np.all(starts[:, 0] == 0)
    assert starts[:, 1:].min() == -3 and starts[:, 1:].max() == 3


def test_a_ctrl_c_while_the_workers_start_reaches_the_trainer_and_not_the_workers(workspace, monkeypatch):
    """Ctrl-C is held off while an epoch's workers start (they must never see it), and then
    delivered: ignoring it instead lost the user's Ctrl-C when it fell in that window."""
    import os
    import signal

    from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter

    start = MultiThreadedAugmenter._start

    def start_then_ctrl_c(self):
        start(self)                           # the workers are forked with SIGINT blocked
        os.kill(os.getpid(), signal.SIGINT)   # Ctrl-C lands before the start is over

    received = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    monkeypatch.setattr(MultiThreadedAugmenter, "_start", start_then_ctrl_c)
    stream = _batches(workspace, workers=1)
    try:
        stream.set_epoch(0)
        assert received == [signal.SIGINT]    # delivered once the workers are up
        assert next(stream)["image"].shape[0] == 2   # the workers did not die of it
    finally:
        stream.close()
        signal.signal(signal.SIGINT, previous)
