"""Checkpoint sizes of a fold folder, before and after final/best left out the optimiser state.

Computed from the state dicts, without training: the default preset's PFSeg at the paper's
widths (32-32-64-128-256, 4 modalities, 3 regions) is built, its planned optimiser (Adam) takes
one step on zero gradients so that its state exists (two moments per weight), and the tensors
each checkpoint kind holds are counted: latest = weights + optimiser state (what resuming
needs), final and best = weights (what prediction needs). `--saved` also writes each payload
with torch.save into memory to show the file sizes agree.

README.md quotes these figures; tests/bench/test_checkpoint_sizes.py checks that it still does.
"""

from __future__ import annotations

import argparse
import io
from typing import Any

MB = 10 ** 6


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor inside nested dicts, lists and tuples."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def default_plans():
    """The default preset's plans for BraTS data at the paper's widths (shapes do not change the
    weights: every layer is a convolution)."""
    from pfseg_pipeline.data.labels import BRATS2020
    from pfseg_pipeline.data.layouts import MODALITIES
    from pfseg_pipeline.plans import Plans
    from pfseg_pipeline.presets import PAPER_GRID_ZYX

    return Plans(dataset_name="BraTS", modalities=list(MODALITIES), label_scheme=BRATS2020.to_json(),
                 hr_shape_zyx=list(PAPER_GRID_ZYX), target_spacing_zyx=[1.0, 1.0, 1.0])


def checkpoint_sizes(plans=None, network: str = "pfseg", saved: bool = False) -> dict[str, int]:
    """Bytes per checkpoint kind and per fold folder (`saved`: also torch.save's file sizes)."""
    import torch

    from pfseg_pipeline.checkpoints import for_prediction
    from pfseg_pipeline.networks.registry import build_network, network_spec
    from pfseg_pipeline.networks.step import make_optimizer

    plans = plans or default_plans()
    torch.manual_seed(0)
    model = build_network(network, plans)
    optimizer = make_optimizer(model.parameters(), plans.training)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()   # creates the state (Adam: exp_avg, exp_avg_sq per weight); nothing is trained
    latest = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": {}, "scaler": {},
              "rng": {"torch": torch.get_rng_state()}}
    final = for_prediction(latest)
    modules = network_spec(network).training_only_modules(model)   # PFSeg's SR decoder
    training_only = sum(tensor_bytes(m.state_dict()) for m in modules)
    sizes = {"weights": tensor_bytes(latest["model"]), "optimizer": tensor_bytes(latest["optimizer"]),
             "latest": tensor_bytes(latest), "final": tensor_bytes(final), "training_only": training_only}
    # a fold folder: before, three full checkpoints; after, latest + final + best (the kept
    # generation, checkpoint_latest.prev.pt, exists only while the fold trains)
    sizes["fold_before"] = 3 * sizes["latest"]
    sizes["fold_after"] = sizes["latest"] + 2 * sizes["final"]
    sizes["fold_training"] = 2 * sizes["latest"] + sizes["final"]
    if saved:
        for kind, payload in (("latest", latest), ("final", final)):
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            sizes[f"saved_{kind}"] = buffer.tell()
    return sizes


def readme_line(sizes: dict[str, int]) -> str:
    """The sentence README.md carries (checked by a test)."""
    mb = {k: round(v / MB) for k, v in sizes.items()}
    return (f"a checkpoint_latest.pt of {mb['latest']} MB ({mb['weights']} MB of weights, "
            f"{mb['optimizer']} MB of Adam state), checkpoint_final.pt and checkpoint_best.pt of "
            f"{mb['final']} MB each: {mb['fold_after']} MB per finished fold instead of "
            f"{mb['fold_before']} MB when every checkpoint held the optimiser state "
            f"({mb['fold_training']} MB while it trains, with the kept generation)")


def run(quick: bool = False) -> dict:
    sizes = checkpoint_sizes(saved=True)
    mb = {k: v / MB for k, v in sizes.items()}
    lines = ["The default preset's PFSeg at the paper's widths (32-32-64-128-256; 4 modalities, 3 regions), "
             "its Adam state created by one step on zero gradients (no training); tensor bytes per "
             "checkpoint kind, and torch.save's file size of the same payload.", "",
             "| checkpoint | holds | tensors (MB) | torch.save (MB) |", "|---|---|---:|---:|",
             f"| latest | weights + optimiser, scheduler, scaler, RNG | {mb['latest']:.1f} | "
             f"{mb['saved_latest']:.1f} |",
             f"| final, best | weights (SR decoder, training-only, {mb['training_only']:.1f} MB, included) | "
             f"{mb['final']:.1f} | {mb['saved_final']:.1f} |", "",
             f"A finished fold folder: {mb['fold_after']:.0f} MB (latest + final + best), before: "
             f"{mb['fold_before']:.0f} MB (three full checkpoints); {mb['fold_training']:.0f} MB while "
             "training (latest, checkpoint_latest.prev.pt and best)."]
    return {**sizes, "markdown": "\n".join(lines) + "\n", "title": "Checkpoint sizes"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.checkpoint_sizes", description=__doc__)
    parser.parse_args(argv)
    print(run()["markdown"])
    print(readme_line(checkpoint_sizes()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
