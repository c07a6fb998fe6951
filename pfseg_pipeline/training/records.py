"""What a training run leaves beside its checkpoints: metrics.csv, progress.png, peak memory.

`history` is a list of one dict per epoch (kept in the checkpoint, so a resumed run rewrites
the same file): `epoch`, `loss` and `loss_<term>`, `val_dice_<region>` and `val_dice_mean`
(with validation, in the epochs it was scored after; blank in the others), `lr`, and the
timing columns, whose names end in `_seconds`.
"""

from __future__ import annotations

import csv
import io
import resource
import statistics
import sys
from pathlib import Path

import torch

from pfseg_pipeline.fileio import atomic_path, write_text

TIMING_SUFFIX = "_seconds"


def seconds_per_iteration(history: list[dict], iterations_per_epoch: int) -> float | None:
    """The training seconds per iteration of a run: the median over its epochs, the first left
    out while there are others (warm-up: workers, allocator, cuDNN). The median, so that one
    disturbed epoch (the process paused, a backup running) does not move it."""
    per_epoch = [row[f"train{TIMING_SUFFIX}"] / iterations_per_epoch for row in history]
    steady = per_epoch[1:] or per_epoch
    return statistics.median(steady) if steady else None


def columns(history: list[dict]) -> list[str]:
    """Every column in first-seen order."""
    seen: dict[str, None] = {}
    for row in history:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(history), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buffer.getvalue())


def plot_progress(path: Path, history: list[dict]) -> None:
    """Losses, validation Dice and learning rate against the epoch (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    cols = columns(history)
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for name in (c for c in cols if c.startswith("loss")):
        axes[0].plot(epochs, [row.get(name) for row in history], label=name, lw=2 if name == "loss" else 1)
    axes[0].set_ylabel("training loss")
    dice_cols = [c for c in cols if c.startswith("val_dice_")]
    for name in dice_cols:   # the epochs it was scored after (training.validation_interval)
        scored = [row for row in history if name in row]
        axes[1].plot([row["epoch"] for row in scored], [row[name] for row in scored],
                     marker="." if len(scored) < len(history) else None, label=name[len("val_dice_"):])
    axes[1].set_ylabel("validation Dice")
    if not dice_cols:
        axes[1].text(0.5, 0.5, "no validation cases in this split", ha="center", transform=axes[1].transAxes)
    axes[2].plot(epochs, [row.get("lr") for row in history])
    axes[2].set_yscale("log")
    axes[2].set_ylabel("learning rate")
    axes[2].set_xlabel("epoch")
    for ax in axes[:2]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def peak_memory(device: torch.device, plans_memory: dict | None) -> dict:
    """Peak memory of the run, each figure labelled with where it comes from."""
    if device.type == "cuda":
        return {"device": "cuda", "bytes": int(torch.cuda.max_memory_allocated(device)),
                "label": "torch.cuda.max_memory_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB
    out = {"device": device.type,
           "peak_rss": {"bytes": rss_bytes, "label": "peak RSS of the training process (resource.getrusage)"}}
    if plans_memory:
        out["memory_model"] = {**plans_memory, "label": "memory model (planner's prediction, plans.json)"}
    return out


def headline_memory(memory: dict, network: str | None, ablation: str | None = None) -> dict:
    """The one peak figure `pfseg_compare` shows: `peak_memory_gb` (GiB) with `peak_memory_kind`.

    On a GPU the measured max allocated; on the CPU the memory model's predicted GPU training
    peak for this network (what a user sizing a GPU needs), else the peak RSS, each labelled.
    The planner prices pfseg's whole method: for another ablation row (e.g. the segmentation
    network alone at LR scale 1) the label says the figure is that upper bound.
    """
    if memory.get("device") == "cuda":
        return {"peak_memory_gb": memory["bytes"] / 2 ** 30, "peak_memory_kind": memory["label"]}
    predicted = (memory.get("memory_model") or {}).get("predicted_peak_bytes")
    if isinstance(predicted, dict) and network in predicted:
        kind = "memory model: predicted GPU training peak (CPU run)"
        if ablation not in (None, "full"):
            kind += f", of the whole method: an upper bound for this {ablation} run"
        return {"peak_memory_gb": predicted[network] / 2 ** 30, "peak_memory_kind": kind}
    return {"peak_memory_gb": memory["peak_rss"]["bytes"] / 2 ** 30, "peak_memory_kind": "peak RSS (CPU)"}
