"""The methods table: accuracy, speed, memory and size of every network trained for a dataset.

Reads, for each ``results/NAME/<network[__variant]>/fold_<F>/`` of the requested folds:

- ``validation/summary.json``: `pfseg_evaluate`'s schema (``per_case`` entries with a metrics
  dict per region; ``hd95_definition``; ``units``);
- ``validation/timings.json``: per-case inference timings in seconds, written by the predictor::

      {"per_case": [{"case": ID, "read": s, "preprocess": s, "network": s, "export": s,
                     "total": s}, ...], ...any other keys}

  Also accepted: the list of per-case entries alone, or a mapping ``{case: entry}`` where an
  entry is such a dict or a number (the total). A missing ``total`` is the sum of the four
  parts when all four are there;
- ``train_summary.json``: ``parameters`` (a count, or a mapping with ``total``),
  ``seconds_per_iteration``, ``peak_memory_gb`` and ``peak_memory_kind`` (e.g.
  ``"cuda max allocated"`` or ``"memory model (CPU)"``).

Several folds are pooled: per-case metrics and timings of all of them together (each case is
validated in one fold of a cross-validation), the largest peak memory, the mean s/iteration.
A missing or unreadable file leaves its columns as "-" (with a warning naming it); a region no
method has (e.g. TC and ET under the ``wt`` target) gets no column. DSC and HD95 are shown as
mean(std) over cases, population std, like the paper's table (DSC 4 decimals, HD95 2).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pfseg_pipeline.data.labels import REGION_NAMES
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.evaluate import summarise
from pfseg_pipeline.fileio import atomic_path, read_json, write_text

log = logging.getLogger(__name__)

TIMING_PARTS = ("read", "preprocess", "network", "export")
MISSING = "-"


@dataclass
class MethodResult:
    """What the result files of one network (over the requested folds) say."""

    name: str
    folds: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)         # region -> metric -> {mean, std, median, n}
    n_cases: int = 0
    hd95_definition: str | None = None
    units: str | None = None
    seconds_per_case: float | None = None
    seconds_per_iteration: float | None = None
    settings: dict = field(default_factory=dict)        # plans fields a variant changed (--set)
    peak_memory_gb: float | None = None
    peak_memory_kind: str | None = None
    parameters: int | None = None


def collect_methods(results_dir: str | os.PathLike,
                    folds: Sequence[str | int] = ("0",)) -> list[MethodResult]:
    """Every network folder under `results_dir` with at least one of the `folds` trained."""
    results_dir = Path(results_dir)
    folds = [str(f) for f in folds]
    if not results_dir.is_dir():
        raise UserError(f"{results_dir}: no results folder (train a network first: pfseg_train)")
    methods = []
    for network_dir in sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        fold_dirs = [(f, network_dir / f"fold_{f}") for f in folds if (network_dir / f"fold_{f}").is_dir()]
        if fold_dirs:
            methods.append(_read_method(network_dir.name, fold_dirs))
    if not methods:
        raise UserError(f"{results_dir}: no trained network with fold(s) {', '.join(folds)} "
                        "(expected <network>/fold_<F>/ folders; train one with pfseg_train)")
    return methods


def comparison_table(methods: Sequence[MethodResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Markdown table (text cells, "-" where a figure is missing)."""
    regions = [r for r in REGION_NAMES if any(r in m.summary for m in methods)]
    header = (["Method"] + [f"{r} {k}" for r in regions for k in ("DSC", "HD95")]
              + ["s/case", "peak GB", "params"])
    rows = []
    for m in methods:
        row = [m.name]
        for region in regions:
            metrics = m.summary.get(region, {})
            row.append(_mean_std(metrics.get("dice"), 4))
            row.append(_mean_std(metrics.get("hd95"), 2))
        row.append(_number(m.seconds_per_case, 2))
        row.append(_number(m.peak_memory_gb, 2))
        row.append(MISSING if m.parameters is None else f"{m.parameters / 1e6:.2f} M")
        rows.append(row)
    return header, rows


def render_markdown(methods: Sequence[MethodResult], title: str = "") -> str:
    """The table in Markdown, with notes on units, HD95 definition and memory figures."""
    header, rows = comparison_table(methods)
    lines = [f"# {title}", ""] if title else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    definitions = sorted({m.hd95_definition for m in methods if m.hd95_definition})
    units = sorted({m.units for m in methods if m.units})
    lines.append(f"- DSC and HD95: mean(std) over validation cases; HD95 in {' / '.join(units) or 'mm'}, "
                 f"definition: {' / '.join(definitions) or 'unknown'} (pooled = MedPy's, directed-max = "
                 "the BraTS tool's).")
    for m in methods:
        details = [f"fold(s) {', '.join(m.folds)}", f"{m.n_cases} case(s)"]
        if m.peak_memory_kind:
            details.append(f"peak memory: {m.peak_memory_kind}")
        if m.seconds_per_iteration is not None:
            details.append(f"{m.seconds_per_iteration:.3g} s/iteration")
        if m.settings:
            details.append("set: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in m.settings.items()))
        lines.append(f"- {m.name}: " + "; ".join(details))
    return "\n".join(lines) + "\n"


def comparison_frame(methods: Sequence[MethodResult]):
    """The same figures as numbers (a pandas DataFrame, one row per method)."""
    import pandas as pd

    rows = []
    for m in methods:
        row = {"method": m.name, "folds": " ".join(m.folds), "n_cases": m.n_cases}
        for region in REGION_NAMES:
            for metric in ("dice", "hd95"):
                stats = m.summary.get(region, {}).get(metric) or {}
                row[f"{region}_{metric}_mean"] = stats.get("mean")
                row[f"{region}_{metric}_std"] = stats.get("std")
        row.update(seconds_per_case=m.seconds_per_case, seconds_per_iteration=m.seconds_per_iteration,
                   peak_memory_gb=m.peak_memory_gb, peak_memory_kind=m.peak_memory_kind,
                   parameters=m.parameters, hd95_definition=m.hd95_definition, units=m.units)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_comparison(methods: Sequence[MethodResult], path: str | os.PathLike) -> None:
    """Grouped bars of Dice and HD95 (mean with std) for every region, and seconds per case.

    One group per method, one bar per region present (WT, TC, ET); a missing figure is marked
    "n/a" rather than drawn as zero.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = [r for r in REGION_NAMES if any(r in m.summary for m in methods)] or ["WT"]
    x = np.arange(len(methods))
    width = 0.8 / len(regions)
    colours = {"WT": "tab:green", "TC": "tab:olive", "ET": "tab:red"}
    fig, axes = plt.subplots(1, 3, figsize=(max(9.0, 2.4 * len(methods) + 5), 3.8))
    for ax, metric, label in ((axes[0], "dice", "Dice"), (axes[1], "hd95", f"HD95 ({_units(methods)})")):
        for k, region in enumerate(regions):
            stats = [m.summary.get(region, {}).get(metric) or {} for m in methods]
            means = [s.get("mean") for s in stats]
            offsets = x + (k - (len(regions) - 1) / 2) * width
            ax.bar(offsets, [v if v is not None else 0.0 for v in means], width,
                   yerr=[s.get("std") or 0.0 for s in stats], capsize=2, label=region,
                   color=colours.get(region))
            for xi, v in zip(offsets, means):
                if v is None:
                    ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
        ax.set_title(label)
        ax.set_xticks(x, [m.name for m in methods], rotation=30, ha="right")
    axes[0].set_ylim(0, 1.18)   # headroom above Dice 1 for the legend
    axes[0].set_yticks(np.linspace(0, 1, 6))
    axes[0].legend(fontsize=8, loc="upper center", ncol=len(regions), frameon=False)
    seconds = [m.seconds_per_case for m in methods]
    axes[2].bar(x, [v if v is not None else 0.0 for v in seconds], color="tab:blue")
    for xi, v in zip(x, seconds):
        if v is None:
            axes[2].text(xi, 0, "n/a", ha="center", va="bottom", fontsize=8)
    axes[2].set_xticks(x, [m.name for m in methods], rotation=30, ha="right")
    axes[2].set_title("seconds per case")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _units(methods: Sequence[MethodResult]) -> str:
    return " / ".join(sorted({m.units for m in methods if m.units})) or "mm"


def compare(results_dir: str | os.PathLike, folds: Sequence[str | int] = ("0",), write: bool = True) -> str:
    """Collect, write comparison.md / .csv / .png into `results_dir`, return the Markdown."""
    results_dir = Path(results_dir)
    folds = [str(f) for f in folds]
    methods = collect_methods(results_dir, folds)
    markdown = render_markdown(methods, title=f"{results_dir.name}: fold {', '.join(folds)}")
    if write:
        write_text(results_dir / "comparison.md", markdown)
        with atomic_path(results_dir / "comparison.csv") as tmp:
            comparison_frame(methods).to_csv(tmp, index=False)
        plot_comparison(methods, results_dir / "comparison.png")
        log.info("wrote %s, comparison.csv and comparison.png", results_dir / "comparison.md")
    return markdown


def read_timings(data) -> dict[str, float]:
    """Per-case total seconds from a timings.json content (any of the accepted shapes)."""
    if isinstance(data, dict) and "per_case" in data:
        data = data["per_case"]
    if isinstance(data, dict):
        entries = [dict(v, case=k) if isinstance(v, dict) else {"case": k, "total": v}
                   for k, v in data.items()]
    elif isinstance(data, list):
        entries = data
    else:
        raise ValueError("expected a list of per-case timings or a mapping")
    totals = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"per-case entry {i} is not an object")
        case = str(entry.get("case", i))
        total = entry.get("total")
        if total is None and all(entry.get(p) is not None for p in TIMING_PARTS):
            total = sum(float(entry[p]) for p in TIMING_PARTS)
        if total is None:
            raise ValueError(f"case {case}: no 'total' (nor all of {', '.join(TIMING_PARTS)})")
        totals[case] = float(total)
    return totals


def _read_method(name: str, fold_dirs: list[tuple[str, Path]]) -> MethodResult:
    method = MethodResult(name=name, folds=[f for f, _ in fold_dirs])
    per_case, totals, iteration_times, peaks, kinds = [], [], [], [], []
    file_summaries = []
    for _fold, fold_dir in fold_dirs:
        summary = _optional_json(fold_dir / "validation" / "summary.json")
        if isinstance(summary, dict):
            entries = summary.get("per_case") or []
            per_case += entries
            if isinstance(summary.get("summary"), dict):
                file_summaries.append(summary["summary"])
            method.regions = method.regions or list(summary.get("regions") or
                                                    [r for r in REGION_NAMES if entries and r in entries[0]])
            method.hd95_definition = method.hd95_definition or summary.get("hd95_definition")
            method.units = method.units or summary.get("units")
        timings_path = fold_dir / "validation" / "timings.json"
        timings = _optional_json(timings_path)
        if timings is not None:
            try:
                totals += list(read_timings(timings).values())
            except (ValueError, TypeError) as exc:
                log.warning("%s: unreadable timings (%s): s/case left out", timings_path, exc)
        train = _optional_json(fold_dir / "train_summary.json")
        if isinstance(train, dict):
            method.parameters = method.parameters or _parameter_count(train.get("parameters"))
            method.settings = method.settings or dict(train.get("settings") or {})
            if _is_number(train.get("seconds_per_iteration")):
                iteration_times.append(float(train["seconds_per_iteration"]))
            if _is_number(train.get("peak_memory_gb")):
                peaks.append(float(train["peak_memory_gb"]))
                if train.get("peak_memory_kind"):
                    kinds.append(str(train["peak_memory_kind"]))
    if per_case and method.regions:
        method.summary = summarise(per_case, method.regions)
        method.n_cases = len(per_case)
    elif len(file_summaries) == 1 and len(fold_dirs) == 1:  # a summary without per-case entries
        method.summary = file_summaries[0]
        method.regions = [r for r in REGION_NAMES if r in method.summary]
        method.n_cases = max((s.get("n", 0) for s in (method.summary.get("WT") or {}).values()
                              if isinstance(s, dict)), default=0)
    if totals:
        method.seconds_per_case = float(np.mean(totals))
    if iteration_times:
        method.seconds_per_iteration = float(np.mean(iteration_times))
    if peaks:
        method.peak_memory_gb = max(peaks)
        method.peak_memory_kind = " / ".join(dict.fromkeys(kinds)) or None
    return method


def _optional_json(path: Path):
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except UserError as exc:
        log.warning("%s: its columns are left as '-'", exc)
        return None


def _parameter_count(value) -> int | None:
    if isinstance(value, dict):
        value = value.get("total")
    return int(value) if _is_number(value) else None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _mean_std(stats: dict | None, decimals: int) -> str:
    if not isinstance(stats, dict) or not _is_number(stats.get("mean")):
        return MISSING
    if not _is_number(stats.get("std")):
        return f"{stats['mean']:.{decimals}f}"
    return f"{stats['mean']:.{decimals}f}({stats['std']:.{decimals}f})"


def _number(value: float | None, decimals: int) -> str:
    return MISSING if value is None else f"{value:.{decimals}f}"
