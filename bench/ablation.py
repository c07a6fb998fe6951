"""The paper's ablation rows trained on synthetic data: what each part of PFSeg contributes.

    python -m bench.ablation [--quick] [--epochs E] [--iterations N] [--cases N]

One synthetic dataset (BraTS-like, `--preset demo` plan) and one split (fold 0 of the 5 seeded
folds); each row of `networks.losses.ABLATIONS` is trained by the real command
(`pfseg_train NAME 0 --ablation ROW --device cpu`) with the same seed, data, split and number
of iterations, once per seed (default three seeds: at this budget the seed moves a row's score
by about as much as the row itself, so the rows are compared by their means over the seeds):

- us: the segmentation decoder alone (Dice + BCE), no SR decoder, no SGM;
- sr: + the SR decoder and its loss (MSE to the HR image);
- tel: + the target-enhanced loss;
- ssl: + the spatial similarity loss;
- full: + the SGM (guidance patch encoder) and the guidance loss: the complete method.

Reported: validation Dice per region, mean (std) over the fold's validation cases, from the
final checkpoint (`validation/summary.json`, written by the training command: label maps
exported to the native grid), the trainer's own last-epoch validation Dice (region channels on
the cached grid, metrics.csv), and the training seconds per iteration. The budget is tiny next
to the paper's (100 epochs on 295 BraTS cases on a GPU): the figures show what each switch does
at this budget on this data, not the paper's numbers, which are quoted for reference.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

ROWS = ("us", "sr", "tel", "ssl", "full")
LABELS = {"us": "US", "sr": "+SR", "tel": "+TEL", "ssl": "+SSL", "full": "+SGM (full)"}
# The README's ablation (ResUNet column, BraTS 2020, 6/2/2 split): DSC of the whole tumour.
PAPER_DSC = {"us": 0.8082, "sr": 0.8141, "tel": 0.8193, "ssl": 0.8281, "full": 0.8329}


def _last_epoch_val_wt(fold_dir: Path) -> float | None:
    """The trainer's own validation Dice of the last epoch (metrics.csv: region channels > 0.5 on
    the cached grid), beside the final evaluation (exported label maps on the native grid)."""
    path = fold_dir / "metrics.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    value = rows[-1].get("val_dice_WT") if rows else None
    return float(value) if value not in (None, "") else None


def run(quick: bool = False, epochs: int | None = None, iterations: int | None = None,
        n_cases: int | None = None, shape_xyz=None, seeds: tuple[int, ...] | None = None,
        fold: str = "0") -> dict:
    from bench.demo_data import console, demo_workspace
    from pfseg_pipeline.fileio import read_json
    from pfseg_pipeline.networks.losses import ABLATIONS
    from pfseg_pipeline.training.recipe import fold_directory

    epochs = epochs or (1 if quick else 15)
    iterations = iterations or (2 if quick else 10)
    n_cases = n_cases or (6 if quick else 20)
    shape_xyz = tuple(shape_xyz or ((48, 48, 32) if quick else (64, 64, 48)))
    seeds = tuple(seeds or ((12345,) if quick else (12345, 7, 2026)))
    rows: dict = {row: {"terms": sorted(ABLATIONS[row].terms),
                        "network_options": ABLATIONS[row].network_options(), "seeds": {}} for row in ROWS}
    with tempfile.TemporaryDirectory(prefix="pfseg-ablation-") as tmp:
        tmp = Path(tmp)
        ws, plans, info = demo_workspace(tmp, n_cases, shape_xyz)
        for seed in seeds:
            for row in ROWS:
                cmd = [console("pfseg_train"), info["name"], fold, "--ablation", row, "--device", "cpu",
                       "--epochs", str(epochs), "--iterations-per-epoch", str(iterations),
                       "--seed", str(seed), "--no-progress", "--workspace", str(ws.root)]
                log.info("ablation %s, seed %d: %s", row, seed, " ".join(cmd[1:]))
                t0 = time.perf_counter()
                logfile = tmp / f"train_{row}_{seed}.log"
                with open(logfile, "w") as f:
                    proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ))
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    raise RuntimeError(f"pfseg_train --ablation {row} failed ({proc.returncode}):\n"
                                       + logfile.read_text()[-3000:])
                fold_dir = fold_directory(ws, info["name"], "pfseg", fold, row)
                summary = read_json(fold_dir / "validation" / "summary.json")
                train = read_json(fold_dir / "train_summary.json")
                result = {
                    "dice": {r: summary["summary"][r]["dice"] for r in summary["summary"]},
                    "hd95": {r: summary["summary"][r]["hd95"] for r in summary["summary"]},
                    "last_epoch_val_dice_wt": _last_epoch_val_wt(fold_dir),
                    "seconds_per_iteration": train.get("seconds_per_iteration"), "wall_seconds": wall,
                }
                rows[row]["seeds"][seed] = result
                rows[row].update({k: train.get(k) for k in ("parameters", "val_cases", "train_cases",
                                                           "batch_size", "num_workers")})
                wt = result["dice"]["WT"]
                log.info("  WT Dice %.4f (%.4f), %.2f s/iteration, %.0f s", wt["mean"], wt["std"],
                         result["seconds_per_iteration"] or float("nan"), wall)
                shutil.rmtree(fold_dir.parent)   # the next seed starts from scratch
    figures = {"title": "Ablation: the paper's rows on synthetic data (CPU, small budget)",
               "cases": n_cases, "shape_xyz": list(shape_xyz), "fold": fold, "epochs": epochs,
               "iterations_per_epoch": iterations, "seeds": list(seeds), "hr_shape_zyx": plans.hr_shape_zyx,
               "widths": plans.network.widths, "rows": rows}
    figures["markdown"] = _markdown(figures)
    return figures


def _fmt(d: dict) -> str:
    return f"{d['mean']:.4f} ({d['std']:.4f})"


def _markdown(f: dict) -> str:
    first = next(iter(f["rows"].values()))
    seeds = f["seeds"]
    lines = [
        f"{f['cases']} synthetic cases of {' x '.join(map(str, f['shape_xyz']))} voxels (x y z), `--preset "
        f"demo` plan (HR {'x'.join(map(str, f['hr_shape_zyx']))}, widths {'-'.join(map(str, f['widths']))}); "
        f"fold {f['fold']}: {first['train_cases']} training, {first['val_cases']} validation cases; every "
        f"row `pfseg_train --ablation ROW` with the same seed ({', '.join(map(str, seeds))}: one run each), "
        f"{f['epochs']} epochs x {f['iterations_per_epoch']} iterations at batch {first['batch_size']}, "
        f"{first['num_workers']} loader process(es), CPU, final checkpoint. Dice mean (std) over the "
        "validation cases, from the training command's final evaluation (label maps exported to the native "
        "grid, as `pfseg_predict` writes them); the last column is the trainer's own last-epoch validation "
        "Dice (region channels on the cached grid).",
        "",
        "| row | seed | loss terms | SR decoder | SGM | WT Dice | TC Dice | ET Dice | WT HD95 mm "
        "| s / iteration | parameters | paper WT DSC (BraTS 2020) | last-epoch val WT Dice |",
        "|---|---:|---|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row, r in f["rows"].items():
        opts = r["network_options"]
        for seed, s in r["seeds"].items():
            last = s.get("last_epoch_val_dice_wt")
            lines.append(
                f"| {LABELS[row]} | {seed} | {', '.join(r['terms'])} | {'yes' if opts['use_sr'] else 'no'} | "
                f"{'yes' if opts['use_sgm'] else 'no'} | {_fmt(s['dice']['WT'])} | {_fmt(s['dice']['TC'])} | "
                f"{_fmt(s['dice']['ET'])} | {_fmt(s['hd95']['WT'])} | {s['seconds_per_iteration']:.2f} | "
                f"{r['parameters'] / 1e6:.2f} M | {PAPER_DSC[row]:.4f} | "
                f"{'-' if last is None else f'{last:.4f}'} |")
    lines += _mean_table(f["rows"], seeds)
    wt = {(row, seed): s["dice"]["WT"] for row, r in f["rows"].items() for seed, s in r["seeds"].items()}
    spread = max(w["std"] for w in wt.values())
    diffs = [wt[("full", seed)]["mean"] - wt[("us", seed)]["mean"] for seed in seeds]
    mean_diff = sum(diffs) / len(diffs)
    seed_text = ""
    if len(seeds) > 1:
        swing = max(max(wt[(row, s)]["mean"] for s in seeds) - min(wt[(row, s)]["mean"] for s in seeds)
                    for row in f["rows"])
        seed_text = f" Changing only the seed moves a row's WT Dice by up to {swing:.4f}."
    lines += ["", f"Full method minus US, WT Dice: {', '.join(f'{d:+.4f}' for d in diffs)} (seed "
              f"{', '.join(map(str, seeds))}; mean {mean_diff:+.4f}; the paper: "
              f"{PAPER_DSC['full'] - PAPER_DSC['us']:+.4f} after "
              f"100 epochs on BraTS 2020); the largest std over the validation cases is {spread:.4f}."
              f"{seed_text} {f['epochs'] * f['iterations_per_epoch']} iterations on {first['train_cases']} "
              "small synthetic cases check that every switch trains and what it costs per iteration; they "
              "do not reproduce the paper's table."]
    return "\n".join(lines) + "\n"


def _mean_table(rows: dict, seeds) -> list[str]:
    """Each row's validation Dice averaged over the seeds (the per-seed means), WT's range beside."""
    lines = ["", f"Mean over the {len(seeds)} seed(s) of each run's validation mean:", "",
             "| row | WT Dice | TC Dice | ET Dice | WT lowest - highest seed | paper WT DSC (BraTS 2020) |",
             "|---|---:|---:|---:|---|---:|"]
    for row, r in rows.items():
        per_seed = {region: [r["seeds"][seed]["dice"][region]["mean"] for seed in seeds]
                    for region in ("WT", "TC", "ET")}
        means = [f"{sum(v) / len(v):.4f}" for v in per_seed.values()]
        lines.append(f"| {LABELS[row]} | " + " | ".join(means) + f" | {min(per_seed['WT']):.4f} - "
                     f"{max(per_seed['WT']):.4f} | {PAPER_DSC[row]:.4f} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny budget (about 2 minutes)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None, help="iterations per epoch")
    parser.add_argument("--cases", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="one run of every row per seed (default: 12345 7 2026; quick: 12345)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    figures = run(quick=args.quick, epochs=args.epochs, iterations=args.iterations, n_cases=args.cases,
                  seeds=tuple(args.seeds) if args.seeds else None)
    print(json.dumps({k: v for k, v in figures.items() if k != "markdown"}, indent=1, default=str))
    print(figures["markdown"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
