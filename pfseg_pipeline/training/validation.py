"""Validation on whole cached volumes: per-epoch Dice and the end-of-training summary.

Both run `network.forward_infer` on each case's whole cached volume, padded (never cropped) to
a shape the network accepts, threshold sigmoid at 0.5, and compare with the cached labels on
the cached (preprocessed) grid. `evaluate_cases` is the one end-of-training step; it writes
`validation/summary.json` in the schema of DESIGN.md (Conventions) and can be replaced by the
full native-grid prediction of `inference/` without touching the trainer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from pfseg_pipeline.data.labels import labels_to_regions, region_names
from pfseg_pipeline.fileio import read_json, write_json
from pfseg_pipeline.plans import Plans
from pfseg_pipeline.training.data_loader import load_case

log = logging.getLogger(__name__)


def pad_for_network(image: np.ndarray, divisor_zyx, min_shape_zyx=None) -> tuple[np.ndarray, tuple]:
    """Zero-pad (C, Z, Y, X) centrally to a multiple of `divisor_zyx` and at least `min_shape_zyx`.

    Returns the padded array and the slices that cut the original region back out.
    """
    spatial = image.shape[1:]
    minimum = min_shape_zyx or (1, 1, 1)
    target = [-(-max(n, m) // d) * d for n, m, d in zip(spatial, minimum, divisor_zyx)]
    before = [(t - n) // 2 for t, n in zip(target, spatial)]
    pad = [(0, 0)] + [(b, t - n - b) for b, t, n in zip(before, target, spatial)]
    crop = tuple(slice(b, b + n) for b, n in zip(before, spatial))
    return np.pad(image, pad), crop


@torch.no_grad()
def predict_probabilities(network: torch.nn.Module, image: np.ndarray, device: torch.device,
                          amp: bool = False, min_shape_zyx=None) -> np.ndarray:
    """Sigmoid probabilities (K, Z, Y, X) float32 of one case's image (C, Z, Y, X)."""
    divisor = getattr(network, "divisor_zyx", (1, 1, 1))
    padded, crop = pad_for_network(image, divisor, min_shape_zyx)
    x = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))[None].to(device)
    was_training = network.training
    network.eval()
    try:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"):
            logits = network.forward_infer(x)
    finally:
        network.train(was_training)
    probabilities = torch.sigmoid(logits.float())[0].cpu().numpy()
    return probabilities[(slice(None), *crop)]


def dice_per_region(prediction: np.ndarray, reference: np.ndarray) -> list[float]:
    """Dice of each region channel (K, Z, Y, X) bool; both empty counts 1 (BraTS convention)."""
    scores = []
    for p, r in zip(prediction, reference):
        denominator = p.sum() + r.sum()
        scores.append(1.0 if denominator == 0 else float(2.0 * np.logical_and(p, r).sum() / denominator))
    return scores


class ValidationCases:
    """Whole cached cases with their region masks, read one at a time."""

    def __init__(self, cases_dir: Path, case_ids: list[str], plans: Plans):
        self.cases_dir = Path(cases_dir)
        self.case_ids = list(case_ids)
        self.plans = plans
        self.regions = region_names(plans.target)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __iter__(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for case_id in self.case_ids:
            image, seg = load_case(self.cases_dir, case_id)
            yield case_id, image, labels_to_regions(seg, self.plans.scheme, self.plans.target)

    def spacing(self, case_id: str) -> list[float]:
        """The cached grid's voxel size (mm), from the case's json when there is one."""
        path = self.cases_dir / f"{case_id}.json"
        if path.is_file():
            spacing = read_json(path).get("spacing_zyx")
            if spacing:
                return [float(s) for s in spacing]
        return list(self.plans.target_spacing_zyx)


def _min_shape(network: torch.nn.Module, plans: Plans):
    """Patch-free networks see at least the planned HR shape, as in training."""
    return plans.hr_shape_zyx if getattr(network, "patch_free", False) else None


def validation_dice(network: torch.nn.Module, cases: ValidationCases, device: torch.device,
                    amp: bool = False) -> list[float]:
    """Mean Dice per region over the validation cases (the per-epoch model selection figure)."""
    scores = []
    for _, image, regions in cases:
        probabilities = predict_probabilities(network, image, device, amp, _min_shape(network, cases.plans))
        scores.append(dice_per_region(probabilities >= 0.5, regions))
    return np.mean(np.asarray(scores, dtype=np.float64), axis=0).tolist()


def evaluate_cases(network: torch.nn.Module, cases: ValidationCases, device: torch.device, out_dir: Path,
                   amp: bool = False, extra: dict | None = None) -> dict:
    """Predict every case, write `out_dir/summary.json` and `out_dir/timings.json`, return the summary.

    Metrics (Dice, HD95 in mm, sensitivity, specificity per region) are computed on the cached
    grid with `evaluation.metrics`; `extra` adds fields (which checkpoint, which cases).
    """
    from pfseg_pipeline.evaluation.evaluate import summarise
    from pfseg_pipeline.evaluation.metrics import region_metrics

    per_case, timings = [], []
    for case_id, image, regions in cases:
        start = time.perf_counter()
        probabilities = predict_probabilities(network, image, device, amp, _min_shape(network, cases.plans))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        prediction = probabilities >= 0.5
        spacing = cases.spacing(case_id)
        row = {"case": case_id}
        for k, name in enumerate(cases.regions):
            row[name] = region_metrics(regions[k], prediction[k], spacing)
        per_case.append(row)
        timings.append({"case": case_id, "network_seconds": seconds})
        log.info("validation %s: %s (%.2f s)", case_id,
                 ", ".join(f"{r} Dice {row[r]['dice']:.4f}" for r in cases.regions), seconds)
    summary = {"per_case": per_case, "summary": summarise(per_case, cases.regions), "missing": [],
               "grid": "preprocessed (cached) grid", **(extra or {})}
    write_json(Path(out_dir) / "summary.json", summary)
    mean = float(np.mean([t["network_seconds"] for t in timings])) if timings else None
    write_json(Path(out_dir) / "timings.json", {"per_case": timings, "mean_network_seconds": mean,
                                                "device": str(device)})
    return summary
