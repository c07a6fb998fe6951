"""Training batches from the preprocessed cache, produced by background workers.

`CachedCaseLoader` (a batchgenerators `DataLoader`) reads each sampled case from
`cases/<case>.npz` when it is drawn (nothing is held in memory between batches, and the arrays
it reads are fresh copies, so augmentation can never write into the cache, defect 3) and cuts
the region the network trains on:

- patch-free networks: the HR volume, `plans.hr_shape_zyx`, placed around the brain at a random
  offset within the slack (padding with zeros where the brain box is smaller, cropping where it
  is larger);
- patch-based networks: a patch of `plans.patch_based.patch_shape_zyx`, centred on a random
  tumour voxel for a fraction of the samples (foreground oversampling) and anywhere otherwise.
  A margin is read around it so rotated corners hold image, not zeros.

`BackgroundBatches` runs the loader and the transforms in batchgenerators' augmenter (or in the
calling process for `num_workers=0`). Its workers are seeded from (seed, epoch, rank, worker) and
restarted at each epoch, so epoch e yields the same batches whether or not the run was resumed.
A worker that fails sends its formatted traceback as a batch; the main process raises it, so the
error names the real cause instead of "workers are no longer alive".
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from batchgenerators.dataloading.data_loader import DataLoader

from pfseg_pipeline.errors import UserError
from pfseg_pipeline.fileio import load_npz
from pfseg_pipeline.parallel import end_with_parent

log = logging.getLogger(__name__)

ERROR_KEY = "worker_error"


class WorkerError(RuntimeError):
    """A background worker failed; the message holds the worker's traceback."""


def load_case(cases_dir: Path, case_id: str, need_seg: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """(image (C, Z, Y, X) float32, seg (Z, Y, X) uint8 or None) of one cached case."""
    path = Path(cases_dir) / f"{case_id}.npz"
    arrays = load_npz(path)
    if "image" not in arrays:
        raise UserError(f"{path}: no 'image' array (re-run pfseg_plan_and_preprocess)")
    seg = arrays.get("seg")
    if need_seg and seg is None:
        raise UserError(f"{path}: no 'seg' array; training needs labelled cases")
    return arrays["image"].astype(np.float32, copy=False), seg


def extract_region(array: np.ndarray, start_zyx, shape_zyx) -> np.ndarray:
    """The box [start, start + shape) of the last three axes, zero where it leaves the array.

    `start` may be negative or run past the end: that part is padding.
    """
    spatial = array.shape[-3:]
    out = np.zeros(array.shape[:-3] + tuple(int(s) for s in shape_zyx), dtype=array.dtype)
    src, dst = [], []
    for start, size, extent in zip(start_zyx, shape_zyx, spatial):
        lo, hi = max(int(start), 0), min(int(start) + int(size), extent)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(start), hi - int(start)))
    out[(..., *dst)] = array[(..., *src)]
    return out


def placement_range(extent: int, size: int) -> tuple[int, int]:
    """Starts that keep the brain box and the region overlapping as much as they can."""
    return min(0, extent - size), max(0, extent - size)


class CachedCaseLoader(DataLoader):
    """Draws `batch_size` cases at random (with replacement) and cuts each one's training region.

    Parameters
    ----------
    cases_dir, case_ids : where the cache is and which cases to draw from.
    patch_shape_zyx : the region the network trains on (HR shape or baseline patch).
    batch_size : samples per batch.
    whole_volume : True for patch-free networks (whole HR volume around the brain), False for
        patch-based ones (a patch, with foreground oversampling).
    foreground_fraction : share of patches centred on a tumour voxel.
    margin_zyx : extra voxels read on each side (the spatial transform crops them away).
    max_shift_zyx : whole volumes only: extra random shift in voxels beyond the slack (the
        paper's "shift" augmentation where brain box and HR shape are the same size).
    random_placement : False places regions centrally (deterministic, for checks).
    """

    def __init__(self, cases_dir: Path, case_ids: list[str], patch_shape_zyx, batch_size: int,
                 whole_volume: bool, foreground_fraction: float = 0.33, margin_zyx=(0, 0, 0),
                 max_shift_zyx=(0, 0, 0), random_placement: bool = True):
        if not case_ids:
            raise UserError("no training cases in this split")
        super().__init__(list(case_ids), batch_size, num_threads_in_multithreaded=1, infinite=True)
        self.indices = list(range(len(case_ids)))  # batchgenerators needs it set (FACTS.md)
        self.cases_dir = Path(cases_dir)
        self.case_ids = list(case_ids)
        self.patch_shape = tuple(int(s) for s in patch_shape_zyx)
        self.margin = tuple(int(m) for m in margin_zyx)
        self.max_shift = tuple(int(m) for m in max_shift_zyx)
        self.whole_volume = whole_volume
        self.foreground_fraction = foreground_fraction
        self.random_placement = random_placement
        self._foreground: dict[str, np.ndarray] = {}  # per case, a sample of tumour voxels

    @property
    def region_shape(self) -> tuple[int, int, int]:
        return tuple(p + 2 * m for p, m in zip(self.patch_shape, self.margin))

    def foreground_voxels(self, case_id: str, seg: np.ndarray) -> np.ndarray:
        """(N, 3) tumour voxels patch centres are drawn from (a fixed sample of at most 5000)."""
        if case_id not in self._foreground:
            coords = np.argwhere(seg > 0).astype(np.int32)
            if len(coords) > 5000:  # a sample is enough to pick centres from (60 kB per case)
                coords = coords[np.random.RandomState(0).choice(len(coords), 5000, replace=False)]
            self._foreground[case_id] = coords
        return self._foreground[case_id]

    def start_ranges(self, seg: np.ndarray) -> list[tuple[int, int]]:
        """Per axis, the inclusive range a uniformly placed region's start is drawn from: the
        placement range, widened by `max_shift_zyx` for whole volumes."""
        ranges = [placement_range(e, s) for e, s in zip(seg.shape, self.patch_shape)]
        if self.whole_volume:
            ranges = [(lo - m, hi + m) for (lo, hi), m in zip(ranges, self.max_shift)]
        return ranges

    def foreground_starts(self, case_id: str, seg: np.ndarray) -> np.ndarray:
        """(N, 3) starts of the patches centred on the case's `foreground_voxels`."""
        return self.foreground_voxels(case_id, seg) - np.asarray([s // 2 for s in self.patch_shape])

    def _patch_start(self, case_id: str, seg: np.ndarray) -> list[int]:
        """Start of the final patch (without margin) on the cached grid."""
        ranges = self.start_ranges(seg)
        if not self.random_placement:   # the centre (the shift widens both ends alike)
            return [(lo + hi) // 2 for lo, hi in ranges]
        if not self.whole_volume and np.random.uniform() < self.foreground_fraction:
            starts = self.foreground_starts(case_id, seg)
            if len(starts):
                return [int(c) for c in starts[np.random.randint(len(starts))]]
        return [np.random.randint(lo, hi + 1) for lo, hi in ranges]

    def sample(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        image, seg = load_case(self.cases_dir, case_id)
        start = [s - m for s, m in zip(self._patch_start(case_id, seg), self.margin)]
        return (extract_region(image, start, self.region_shape),
                extract_region(seg, start, self.region_shape))

    def generate_train_batch(self) -> dict:
        try:
            chosen = [self.case_ids[i] for i in self.get_indices()]
            images, segs = zip(*(self.sample(c) for c in chosen))
            return {"data": np.stack(images), "seg": np.stack(segs)[:, None].astype(np.float32),
                    "case_ids": chosen}
        except Exception as exc:
            return _error_item(exc)


def _error_item(exc: BaseException) -> dict:
    item = {ERROR_KEY: traceback.format_exc()}
    if isinstance(exc, UserError):
        item["user_error"] = str(exc)
    return item


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class _Guarded:
    """Runs the transforms, turning any exception into an error item for the main process."""

    def __init__(self, transform, in_worker: bool):
        self.transform = transform
        self.in_worker = in_worker
        self._configured = False
        self.parent_pid = os.getpid()   # built in the training process, called in its workers

    def __call__(self, **batch):
        if ERROR_KEY in batch:
            return batch
        if self.in_worker and not self._configured:
            self._configured = True
            import torch  # one intra-op thread per worker: the workers are the parallelism

            torch.set_num_threads(1)
            # Ctrl-C reaches the whole process group: the trainer handles it and shuts the workers
            # down in order. SIGTERM (a scheduler's, or multiprocessing's terminate()) ends the
            # worker through batchgenerators' KeyboardInterrupt path, which flushes its queue; dying
            # mid-message instead would leave the main process blocked reading half a batch.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, _interrupt)
            # a trainer killed with -9 leaves no worker behind; SIGKILL, since a worker that exits
            # politely first flushes its queue into a pipe nobody reads any more, and waits forever
            end_with_parent(self.parent_pid, signal.SIGKILL)
        # batchgenerators' Gaussian noise draws from python's `random`, which the augmenter never
        # seeds: tie it to numpy's seeded stream so batches stay reproducible
        random.seed(int(np.random.randint(0, 2**31 - 1)))
        try:
            return self.transform(**batch) if self.transform is not None else batch
        except Exception as exc:
            return _error_item(exc)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """SIGINT blocked in this process while the block runs (workers forked in it inherit the
    mask, so Ctrl-C to the process group never reaches them: the trainer stops them in order).
    Blocked, not ignored: a Ctrl-C that arrives meanwhile stays pending and reaches the trainer's
    handler when the block ends; ignoring it lost the user's Ctrl-C whenever it fell while the
    workers of a new epoch started. Without `pthread_sigmask` (Windows) it is ignored meanwhile."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if hasattr(signal, "pthread_sigmask"):
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return
    restore = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, restore)


def worker_seed(seed: int, epoch: int, rank: int, worker: int) -> int:
    """A 32-bit seed for one worker of one rank in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, rank, worker]).generate_state(1)[0])


class BackgroundBatches:
    """An endless iterator of training batches, reseeded (and its workers restarted) per epoch.

    `num_workers=0` runs in the calling process (batchgenerators' SingleThreadedAugmenter),
    seeding numpy's global generator at the first batch of each epoch.
    """

    def __init__(self, loader, transform, num_workers: int, seed: int, rank: int = 0,
                 num_cached_per_worker: int = 2):
        self.loader = loader
        self.transform = transform
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.rank = int(rank)
        self.num_cached = num_cached_per_worker
        self.epoch: int | None = None
        self._augmenter = None
        self._pending_seed: int | None = None

    def set_epoch(self, epoch: int) -> None:
        """Start producing the batches of `epoch` (a no-op when already there)."""
        if epoch == self.epoch:
            return
        self.close()
        self.epoch = epoch
        if self.num_workers == 0:
            from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter

            self._augmenter = SingleThreadedAugmenter(self.loader, _Guarded(self.transform, False))
            self._pending_seed = worker_seed(self.seed, epoch, self.rank, 0)
            return
        from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter

        seeds = [worker_seed(self.seed, epoch, self.rank, w) for w in range(self.num_workers)]
        self._augmenter = MultiThreadedAugmenter(
            self.loader, _Guarded(self.transform, True), self.num_workers,
            num_cached_per_queue=self.num_cached, seeds=seeds)
        with _sigint_held():   # the workers start with Ctrl-C held off; the trainer handles it
            self._augmenter._start()  # start now so the workers prefetch during validation

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        if self._augmenter is None:
            self.set_epoch(0 if self.epoch is None else self.epoch)
        if self._pending_seed is not None:
            np.random.seed(self._pending_seed)
            self._pending_seed = None
        item = next(self._augmenter)
        if ERROR_KEY in item:
            if "user_error" in item:
                raise UserError(item["user_error"])
            raise WorkerError("a data-loading worker failed:\n" + item[ERROR_KEY])
        return item

    def close(self, force: bool = False) -> None:
        """Stop the workers (draining their queues); `force` is the quick path for shutdown."""
        if self._augmenter is not None and hasattr(self._augmenter, "_finish"):
            self._augmenter._finish(timeout=2 if force else 10, force=force)
        self._augmenter = None
        self.epoch = None

    def __del__(self):
        try:
            self.close(force=True)
        except Exception:  # interpreter shutdown
            pass


def build_training_batches(plans, cases_dir: Path, case_ids: list[str], inputs, batch_size: int,
                           num_workers: int, seed: int, rank: int = 0,
                           augment: bool = True) -> BackgroundBatches:
    """The training batch stream as the plans say, cut and completed as `inputs` (a
    `transforms.TrainingInputs`, from the network's spec) says."""
    from pfseg_pipeline.training.transforms import training_transforms

    config = plans.training.augmentation
    shift = (0, 0, 0)
    if inputs.whole_volume:
        shape, margin = list(plans.hr_shape_zyx), (0, 0, 0)
        if augment:
            shift = tuple(round(f * s) for f, s in zip(config.max_shift_zyx, shape))
    else:
        from pfseg_pipeline.training.transforms import augmentation_margin

        shape = list(plans.patch_based.patch_shape_zyx)
        # read enough around the patch that rotated and zoomed-out samples hold image, not zeros
        margin = augmentation_margin(shape, config) if augment else (0, 0, 0)
    loader = CachedCaseLoader(cases_dir, case_ids, shape, batch_size, whole_volume=inputs.whole_volume,
                              foreground_fraction=plans.patch_based.foreground_oversampling,
                              margin_zyx=margin, max_shift_zyx=shift)
    transform = training_transforms(plans, shape, inputs, config, augment=augment)
    return BackgroundBatches(loader, transform, num_workers, seed, rank)
