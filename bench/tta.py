"""Does mirror test-time augmentation (TTA) earn its time? Each network at the default preset's
recipe, trained once per seed and predicted twice: one pass, and the mean over the 8 mirror
combinations its training flipped (`pfseg_predict --tta`, nnU-Net's default inference).

    python -m bench tta                       # 3 seeds (about 40 minutes on 2 cores; resumes)
    python -m bench tta --seeds 1 2 3 4 5     # more seeds: the finished ones are read
    python -m bench tta --quick               # a smoke run (minutes)

Why: bench nnunet_compare scores nnU-Net with its default inference (mirroring) and PFSeg and
ResUNet3D with one pass, pfseg's default. Whether pfseg's default should mirror is asked here, on
cases of the study's own, so that the comparison's test cases do not choose it.

Data: bench branches' (16 training cases of seed 1 at 4 mm, `--preset demo` plan at LR scale 1;
`--test-cases` test cases of seed 3, 80 by default, 6 of them ET-free). The recipe is the default
preset's training plan, pinned in the study folder when it first runs (bench.recipe.Study).
Every run trains PFSeg (the whole method) or ResUNet3D on all training cases for `--iterations`
iterations, then predicts and scores the test cases without and with TTA (the same weights, so
the pair differs only in the inference). Each process takes a core of its own; two processes may
share the study (`python -m bench tta --no-write & python -m bench tta`). The verdict is the
recipe study's rule, per network: TTA wins where its mean Dice (WT, TC, ET averaged) beats one
pass by more than one standard error of the paired differences over 3+ seeds; else one pass, the
simpler and 8 times cheaper option, stays.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from pathlib import Path

from bench import recipe
from bench.branches import TEST_SEED, TEST_START, et_free_cases, painted
from bench.recipe import REGIONS, TRAIN_SEED, Row, Study, _mean_dice, _mean_sd, pin_to_a_free_core, verdict

log = logging.getLogger(__name__)

WORK = Path(__file__).resolve().parent / "_work" / "tta"   # git-ignored
NETWORKS = ("pfseg", "resunet3d")
ROWS = {"base": Row("base", "the default recipe, predicted with and without mirror TTA", networks=NETWORKS,
                    tta=True)}
LABELS = {"pfseg": "PFSeg (whole method)", "resunet3d": "ResUNet3D"}


def options(argv: list[str]) -> dict:
    """`python -m bench tta`'s own options (bench/__main__.py passes the rest of the line)."""
    parser = recipe.study_parser("tta", "tiny: 4 + 2 cases, 2 iterations, 2 seeds",
                                 "training iterations per run (default 500)", 80, WORK)
    return vars(parser.parse_args(argv))


def run(quick: bool = False, iterations: int | None = None, seeds=None, test_cases: int = 80,
        work: Path = WORK) -> dict:
    iterations = iterations or (2 if quick else 500)
    seeds = tuple(seeds or ((1, 2) if quick else (1, 2, 3)))
    cases = 4 if quick else 16
    if quick:             # 2 test cases: each is predicted 9 times per run (one pass, 8 mirrors)
        test_cases = 2
    study = Study(Path(work) / f"4mm_{cases}x{test_cases}", 4, cases, test_cases, "default",
                  test_seed=TEST_SEED, test_start=TEST_START, rows=ROWS)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if not quick:     # a core of its own once this process trains (a table of finished runs takes none)
            study.before_training = lambda: pin_to_a_free_core(study.root, stack)
        for network in NETWORKS:
            for seed in seeds:
                study.run(ROWS["base"], network, seed, iterations)
    runs = {n: [r for r in (study.result("base", n, s, iterations) for s in seeds) if r is not None]
            for n in NETWORKS}
    figures = {"title": "Mirror test-time augmentation: one pass against the mean over 8 mirrors, "
                        "the same models (4 mm anatomy)",
               "iterations": iterations, "seeds": list(seeds), "cases": cases, "test_cases": test_cases,
               "recipe": study.baseline_recipe(), "seconds": time.perf_counter() - t0, "runs": runs}
    figures["markdown"] = markdown(figures)
    return figures


def _mirrored(run: dict) -> dict:
    """The run's TTA figures in the shape of a run (what the table's cells read)."""
    return {**run, **run["tta"]}


def markdown(f: dict) -> str:
    """The study's table: `f["runs"]` = {network: [one run's JSON per seed, each with its "tta"]}."""
    every = [r for runs in f["runs"].values() for r in runs if "tta" in r]
    if not every:
        return "No runs yet.\n"
    et_free = et_free_cases(every)
    n_test = len(every[0]["per_case_dice"])
    hours = sum(r.get("wall_seconds") or 0 for r in every) / 3600
    out = [
        f"{f['cases']} training MNI152 anatomy cases at 4 mm (seed {TRAIN_SEED}) and {n_test} test cases "
        f"(seed {TEST_SEED}), {len(et_free)} of them without enhancing tumour: bench branches' data. "
        f"`--preset demo` plan (LR scale 1), the default preset's recipe when the study was planned "
        f"({f.get('recipe') or 'see the runs'}); every run {f['iterations']} iterations (whole epochs) on "
        "all training cases, then the final model predicts the test cases twice: one pass, and the mean "
        "of the sigmoid probabilities over the 8 mirror combinations (z, y, x) that training flipped "
        f"(`--tta`). Seeds {', '.join(map(str, f['seeds']))}; one torch thread per run on a core of its "
        "own. Mean (sd) over seeds of the test-set Dice (an ET-free case scores ET 1 when no ET is "
        "painted, else 0) and HD95 (mm); ET-free cases painted: the (case, run) pairs with any ET voxel; "
        "s / case: the median network seconds per test case (one thread; the mirrors are 8 passes); "
        "Δ = TTA's mean Dice (WT, TC, ET averaged) minus one pass's, paired by run, ± its standard "
        f"error: TTA wins where Δ > SE over 3+ seeds, else one pass stays. {len(every)} runs, "
        f"{hours:.1f} core-hours.", "",
        "| network | inference | WT Dice | TC Dice | ET Dice | ET-free cases painted | WT HD95 | TC HD95 "
        "| ET HD95 | s / case | Δ TTA - one pass ± SE | verdict |",
        "|---|---|---|---|---|---|---|---|---|---:|---|---|"]
    for network, runs in f["runs"].items():
        runs = [r for r in runs if "tta" in r]
        if not runs:
            continue
        for label, shown in (("one pass", runs), ("mirror TTA (8 passes)", [_mirrored(r) for r in runs])):
            cells = [_mean_sd([r["dice"][x] for r in shown], 3) for x in REGIONS]
            voxels = painted(shown, et_free)
            cells.append(f"{sum(1 for v in voxels if v)} of {len(voxels)}")
            cells += [_mean_sd([r["hd95"][x] for r in shown], 1) for x in REGIONS]
            cells.append(f"{statistics.median(r['predict_seconds_per_case'] for r in shown):.2f}")
            if shown is runs:
                cells += ["-", "-"]
            else:
                mean, se, word = verdict([_mean_dice(t) - _mean_dice(p) for t, p in zip(shown, runs)])
                word = {"wins": "TTA wins", "the simpler option stays": "one pass stays"}.get(word, word)
                cells += [f"{mean:+.4f} ± {se:.4f}", word]     # the same weights: small, steady differences
            out.append(f"| {LABELS.get(network, network)} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    return recipe.study_main(run, options, argv)


if __name__ == "__main__":
    raise SystemExit(main())
