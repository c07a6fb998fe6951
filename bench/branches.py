"""Do PFSeg's SR decoder and SGM earn their time at LR scale 1 (or 2, or 4)? The whole method
against its segmentation network alone (US), at the default preset's recipe, scored on a test set
large enough to hold cases without enhancing tumour.

    python -m bench branches                       # 3 seeds (about an hour on 2 cores; resumes)
    python -m bench branches --seeds 1 2 3 4 5     # more seeds: the finished ones are read
    python -m bench branches --lr-scale 2          # the same question on an LR input of 8 mm
    python -m bench branches --quick               # a smoke run (minutes)

Why: recipe:c4-us found the two level at LR scale 1 (US - full -0.001 +- 0.003 mean Dice) on 8
test cases, each with enhancing tumour (ET), and made US the default there. In bench
nnunet_compare US then painted a few ET voxels into its one ET-free test case in each of 3 runs,
an ET Dice of 0 there (BraTS scores an ET-free case 1 for an empty ET and 0 for any voxel), where
the whole method had done so in 1 of 3. Choosing on that comparison's test cases would let them
steer the default: this study asks the question again on cases of its own.

Data: the recipe study's training cases (16 of seed 1 at 4 mm, one of them ET-free; `--preset
demo` plan, LR scale 1) and `--test-cases` test cases of seed 3 (ids from 1001; 80 by default, 6
of them ET-free). The recipe is the default preset's training plan, pinned in the study folder
when it first runs (bench.recipe.Study). Lines, each for PFSeg, paired by seed:
- full: the whole method, `--iterations` iterations;
- us: the segmentation network alone, the same iterations (the recipe study's rule);
- us at equal time: the segmentation network for as many iterations as the whole method's
  training took it (the ratio of their median seconds per iteration in this study, rounded to
  ten, kept in the study folder once computed): what a fixed time budget buys, as in bench
  nnunet_compare. Trained after the other two.
Every run trains on all training cases, then predicts and scores the test cases (Dice, HD95) and
counts the ET voxels it painted in each ET-free case. Each process takes a core of its own, as in
the recipe study; two processes may share the study (`python -m bench branches --no-write &
python -m bench branches`: the last to finish writes the table with every run). The verdict is
the recipe study's rule: the whole method is the default at LR scale 1 where its mean Dice (WT,
TC, ET averaged) beats US's by more than one standard error of the paired differences over 3+
seeds; else the simpler network is.

`--lr-scale 2` (or 4) asks the same question where the network sees an LR input 2 (4) times
coarser than the 4 mm grid it segments, as on BraTS-size volumes where the planner raises the
scale to fit the memory budget: the recipe study's rows lr2 / lr2-us asked it at the paper's
Adam 1e-4 only, where both networks failed on ET. The same data and recipe; the plan forced to
that scale (`--lr-scale`, every axis); the runs, the equal-time count and the page's section
(`branches_lr2`) are the scale's own, so the scale-1 table stays as it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
import time
from pathlib import Path

from bench import recipe
from bench.recipe import REGIONS, TRAIN_SEED, Row, Study, _mean_dice, _mean_sd, pin_to_a_free_core, verdict

log = logging.getLogger(__name__)

TEST_SEED, TEST_START = 3, 1001
WORK = Path(__file__).resolve().parent / "_work" / "branches"   # git-ignored
ROWS = {r.key: r for r in (
    Row("full", "whole method (segmentation network, SR decoder, SGM)", networks=("pfseg",)),
    Row("us", "segmentation network alone (US)", networks=("pfseg",), ablation="us"),
)}
LR_SCALES = (2, 4)          # `--lr-scale`: forced on every axis (none: the planner's own, 1 at 4 mm)


def rows_at(lr_scale: int | None) -> dict[str, Row]:
    """{"full": Row, "us": Row} of the study at this LR scale; a forced scale's rows have keys
    of their own ("full-lr2"), so that their runs sit beside the planner's-scale ones."""
    if lr_scale is None:
        return ROWS
    return {line: dataclasses.replace(row, key=f"{row.key}-lr{lr_scale}", lr_scale=lr_scale)
            for line, row in ROWS.items()}


def options(argv: list[str]) -> dict:
    """`python -m bench branches`'s own options (bench/__main__.py passes the rest of the line)."""
    parser = recipe.study_parser("branches", "tiny: 4 + 6 cases, 2 iterations, 2 seeds",
                                 "the whole method's iterations (default 500)", 80, WORK)
    parser.add_argument("--lr-scale", type=int, choices=LR_SCALES, default=None,
                        help="force this LR scale on every axis (default: the planner's own, 1 at 4 mm)")
    return vars(parser.parse_args(argv))


def equal_time_iterations(full: list[dict], us: list[dict], iterations: int) -> int | None:
    """US's iterations in the time of the whole method's `iterations`: the ratio of their median
    seconds per iteration over the finished runs, rounded to ten (None before both have runs)."""
    spi_full = [r["seconds_per_iteration"] for r in full if r.get("seconds_per_iteration")]
    spi_us = [r["seconds_per_iteration"] for r in us if r.get("seconds_per_iteration")]
    if not spi_full or not spi_us:
        return None
    return max(10, round(iterations * statistics.median(spi_full) / statistics.median(spi_us) / 10) * 10)


def run(quick: bool = False, iterations: int | None = None, seeds=None, test_cases: int = 80,
        work: Path = WORK, poll_seconds: float = 30.0, lr_scale: int | None = None) -> dict:
    iterations = iterations or (2 if quick else 500)
    seeds = tuple(seeds or ((1, 2) if quick else (1, 2, 3)))
    cases = 4 if quick else 16
    if quick:
        test_cases = 6
    rows = rows_at(lr_scale)
    study = Study(Path(work) / f"4mm_{cases}x{test_cases}", 4, cases, test_cases, "default",
                  test_seed=TEST_SEED, test_start=TEST_START, rows={r.key: r for r in rows.values()})
    t0 = time.perf_counter()

    def finished(key: str, its: int | None) -> list[dict]:
        found = [study.result(rows[key].key, "pfseg", s, its) for s in seeds] if its else []
        return [r for r in found if r is not None]

    with contextlib.ExitStack() as stack:
        if not quick:     # a core of its own once this process trains (a table of finished runs takes none)
            study.before_training = lambda: pin_to_a_free_core(study.root, stack)
        pending = [(key, seed) for seed in seeds for key in ("full", "us")]
        while pending:    # the equal-time count needs every run at `iterations`, another process's too
            pending = [(key, seed) for key, seed in pending
                       if study.run(rows[key], "pfseg", seed, iterations) is None]
            if pending:
                log.info("waiting for %d run(s) in another process", len(pending))
                time.sleep(poll_seconds)
        us_iterations = _pinned_equal_time(study.root, iterations, lambda: equal_time_iterations(
            finished("full", iterations), finished("us", iterations), iterations), lr_scale)
        if us_iterations is not None and us_iterations != iterations:
            for seed in seeds:
                study.run(rows["us"], "pfseg", seed, us_iterations)
    lines = {"full": finished("full", iterations), "us": finished("us", iterations)}
    if us_iterations is not None and us_iterations != iterations:
        lines["us_time"] = finished("us", us_iterations)
    figures = {"title": f"PFSeg's SR decoder and SGM at LR scale {lr_scale or 1}: the whole method against "
                        "the segmentation network alone, on a test set with ET-free cases (4 mm anatomy)",
               "iterations": iterations, "us_equal_time_iterations": us_iterations, "seeds": list(seeds),
               "cases": cases, "test_cases": test_cases, "recipe": study.baseline_recipe(lr_scale),
               "lr_scale": lr_scale, "seconds": time.perf_counter() - t0, "runs": lines}
    if lr_scale is not None:      # the page keeps the planner's-scale table beside this one
        figures["section"] = f"branches_lr{lr_scale}"
    figures["markdown"] = markdown(figures)
    return figures


def _pinned_equal_time(root: Path, iterations: int, compute, lr_scale: int | None = None) -> int | None:
    """US's equal-time iterations, computed once (from the seeds finished then) and kept in the
    study folder (per forced LR scale): a later run with more seeds trains its equal-time runs to
    the same count."""
    from pfseg_pipeline.fileio import read_json, write_json

    pinned = root / f"equal_time{'' if lr_scale is None else f'_lr{lr_scale}'}_it{iterations}.json"
    if pinned.is_file():
        return read_json(pinned)["us_iterations"]
    value = compute()
    if value is not None:
        write_json(pinned, {"us_iterations": value})
    return value


def et_free_cases(runs: list[dict]) -> list[str]:
    """The test cases whose reference has no ET voxel (from the runs' voxel counts)."""
    cases = set()
    for r in runs:
        cases |= {c for c, counts in r["per_case_voxels"].items() if counts["ET"][0] == 0}
    return sorted(cases)


def painted(runs: list[dict], cases: list[str]) -> list[int]:
    """ET voxels each run painted in each of `cases` (one entry per run and case)."""
    return [r["per_case_voxels"][c]["ET"][1] for r in runs for c in cases]


def _et_with_et(run: dict, et_free: set[str]) -> float:
    return statistics.mean(d["ET"] for c, d in run["per_case_dice"].items() if c not in et_free)


def _by_seed(runs: list[dict]) -> dict[int, dict]:
    return {r["seed"]: r for r in runs}


def markdown(f: dict) -> str:
    """The study's table from its runs: `f["runs"]` = {line: [one run's JSON per seed]}."""
    lines_runs = f["runs"]
    every = [r for runs in lines_runs.values() for r in runs]
    if not every:
        return "No runs yet.\n"
    et_free = et_free_cases(every)
    n_test = len(every[0]["per_case_dice"])
    hours = sum(r.get("wall_seconds") or 0 for r in every) / 3600
    labels = {"full": "whole method (segmentation network, SR decoder, SGM)",
              "us": "segmentation network alone (US), equal iterations",
              "us_time": "segmentation network alone (US), equal time"}
    scale = f.get("lr_scale")
    plan = ("`--preset demo` plan at LR scale 1" if scale is None else
            f"`--preset demo` plan forced to LR scale {scale} on every axis (`--lr-scale {scale}`: an LR "
            f"input of {4 * scale} mm for the 4 mm grid the network segments)")
    out = [
        f"{f['cases']} training MNI152 anatomy cases at 4 mm (seed {TRAIN_SEED}, the recipe study's) and "
        f"{n_test} test cases (seed {TEST_SEED}), {len(et_free)} of them without enhancing tumour "
        f"({', '.join(et_free) or 'none'}); {plan}, the default preset's recipe "
        f"when the study was planned ({f.get('recipe') or 'see the runs'}). The whole method trains "
        f"{f['iterations']} iterations; US the same, and at equal time "
        f"{f.get('us_equal_time_iterations') or '-'} (the ratio of the two networks' median seconds per "
        "iteration here), each rounded to whole epochs as the table gives. "
        f"Seeds {', '.join(map(str, f['seeds']))}, paired; one torch thread per run on a "
        "core of its own. Mean (sd) over seeds of the test-set Dice (BraTS's convention: an ET-free case "
        "scores ET 1 when no ET is painted and 0 otherwise) and HD95 (mm); ET-free cases painted: the (case, "
        "run) pairs with any ET voxel, and how many voxels; Δ = the whole method's mean Dice (WT, TC, ET "
        "averaged) minus this line's, paired by seed, ± its standard error: the whole method wins where "
        f"Δ > SE over 3+ seeds, else the simpler network stays. {sum(len(v) for v in lines_runs.values())} "
        f"runs, {hours:.1f} core-hours.", "",
        "| PFSeg | iterations | s / it | WT Dice | TC Dice | ET Dice | ET Dice, cases with ET "
        "| ET-free cases painted | voxels painted there | WT HD95 | Δ full - this ± SE | verdict |",
        "|---|---:|---:|---|---|---|---|---|---|---|---|---|"]
    full = _by_seed(lines_runs.get("full", []))
    for key, runs in lines_runs.items():
        if not runs:
            continue
        cells = [str(runs[0]["iterations"]),
                 f"{statistics.median(r['seconds_per_iteration'] or 0 for r in runs):.2f}"]
        cells += [_mean_sd([r["dice"][x] for r in runs], 3) for x in REGIONS]
        cells.append(_mean_sd([_et_with_et(r, set(et_free)) for r in runs], 3))
        voxels = painted(runs, et_free)
        hits = [v for v in voxels if v]
        cells.append(f"{len(hits)} of {len(voxels)}")
        cells.append(f"{min(hits)}-{max(hits)}" if hits else "-")
        cells.append(_mean_sd([r["hd95"]["WT"] for r in runs], 1))
        pairs = [(full[r["seed"]], r) for r in runs if r["seed"] in full]
        if key == "full" or not pairs:
            cells += ["-", "-"]
        else:
            mean, se, word = verdict([_mean_dice(a) - _mean_dice(b) for a, b in pairs])
            word = {"wins": "the whole method wins", "the simpler option stays": "US stays"}.get(word, word)
            cells += [f"{mean:+.3f} ± {se:.3f}", word]
        out.append(f"| {labels[key]} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"
