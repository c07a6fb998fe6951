"""The recipe study of issue 14: each training-recipe change alone against the default, on
MNI152 anatomy cases, several paired seeds per row, for PFSeg and ResUNet3D.

    python -m bench recipe --iterations 500                   # the whole study (hours; resumes)
    python -m bench recipe --rows base a1 c2 --seeds 1 2 3    # some rows
    python -m bench recipe --spacing 2 --rows base lr1 lr2 lr4 --seeds 1 2 --iterations 200
    python -m bench recipe --quick                            # a smoke run (tiny; minutes)

Data: `--cases` training cases (seed 1) and `--test-cases` test cases (seed 2, ids from 901) of
`pfseg_make_synthetic --anatomy mni152 --spacing S`, planned and preprocessed from the training
cases alone with `--preset demo` (narrow widths; the LR rows force `--lr-scale`). Every run
trains on all training cases (fold `all`: no validation cases; the monitor rows carve theirs
from the training cases) for a fixed number of iterations (`--iterations`; epochs = iterations
/ iterations per epoch, rounded), then predicts the test cases on their native grid and scores
them (Dice, HD95 in mm): the test cases never steer anything.

The baseline (`base`) is the default recipe: the `--base-preset` preset's training plan
(default: the default preset's, one pass over the cases per epoch) on the demo plan's networks,
pinned in the study folder (baseline_settings.json) when the study first runs, so that it stays
the same when the presets change. Each other row changes one thing (ROWS);
an LR-scale row that forces the scale the planner chose for the baseline anyway is the
baseline's plan, and its runs are the baseline's (read, not trained again). Runs go one at a
time in this process and each writes one JSON (`WORK/runs/...`): a rerun skips what is done.
Each process runs on one core of its own (`pin_to_a_free_core`: a run's figures depend on its
thread count, and rows are paired with the baseline by seed), and several processes may share
one study: each run is locked while it runs and the others skip it (`python -m bench.recipe &
python -m bench.recipe`: on 2 cores two one-thread processes train PFSeg about 1.15x as fast in
all as one two-thread process, 8.2 s per 8-iteration epoch each against 4.7 s, and ResUNet3D,
whose steps are too small for two threads, about 2x; only the s / it column depends on how the
cores were shared). The table is made from every run on disk: `python -m bench recipe` once the
others are done writes the whole table. The table (docs/BENCHMARKS.md, section `recipe`) gives
per row and network the mean (sd) over seeds, the paired difference to the baseline's mean Dice
(WT, TC, ET averaged) with its standard error, and the decision rule's verdict: a change wins
when its mean gain exceeds one standard error of the paired differences (3+ seeds); else the
simpler option stays. Rows are named (`recipe:a1`, ...) for plans.json reasons. Data and runs
live under bench/_work/recipe (`--work`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from pfseg_pipeline.errors import UserError

log = logging.getLogger(__name__)

TRAIN_SEED, TEST_SEED, TEST_START = 1, 2, 901
REGIONS = ("WT", "TC", "ET")
AUX = ("sr", "guidance", "tel", "ssl")
WORK = Path(__file__).resolve().parent / "_work" / "recipe"   # git-ignored
# the TrainingPlan fields the baseline sets explicitly (Study.base_settings): every one a row changes
BASELINE_FIELDS = ("optimizer", "lr", "weight_decay", "momentum", "scheduler", "monitor_fraction",
                   "early_stopping_patience", "loss_weights", "aux_intensity", "deep_supervision",
                   "region_prior_source", "augmentation")


@dataclass(frozen=True)
class Row:
    """One change against the baseline: plans settings, and what else the run differs in."""

    key: str
    title: str
    settings: tuple = ()
    networks: tuple = ("pfseg", "resunet3d")
    lr_scale: int | None = None          # re-planned with --lr-scale (None: the planner's choice)
    ablation: str = "full"
    tta: bool = False                    # also predict the test cases with mirror TTA (same model)
    notes: str = ""
    extra: dict = field(default_factory=dict)


ROWS = {r.key: r for r in (
    Row("base", "the default recipe when the study began"),
    Row("a1", "aux losses on the bounded intensity scale", (("training.aux_intensity", "bounded"),),
        ("pfseg",)),
    Row("a2", "aux loss weights 0.1 (as_is scale)", tuple((f"training.loss_weights.{t}", 0.1) for t in AUX),
        ("pfseg",)),
    Row("a3", "aux bounded, weights 1", (("training.aux_intensity", "bounded"),)
        + tuple((f"training.loss_weights.{t}", 1.0) for t in AUX), ("pfseg",)),
    Row("b1", "plateau (0.1 / 20) on 20 % monitor cases", (("training.monitor_fraction", 0.2),),
        notes="the baseline's plateau has no monitor cases, so it runs poly decay by iteration"),
    Row("b2", "b1 + early stopping (patience 20) on the monitor cases",
        (("training.monitor_fraction", 0.2), ("training.early_stopping_patience", 20))),
    Row("c1", "Adam 3e-4", (("training.lr", 3e-4),)),
    Row("c2", "Adam 1e-3", (("training.lr", 1e-3),)),
    Row("c3", "SGD 1e-2, Nesterov 0.99, wd 3e-5, poly (nnU-Net's)",
        (("training.optimizer", "sgd"), ("training.lr", 1e-2), ("training.momentum", 0.99),
         ("training.weight_decay", 3e-5), ("training.scheduler", "poly"))),
    Row("c4", "Adam 3e-3", (("training.lr", 3e-3),), notes="the demo preset's value before the study"),
    Row("d1", "deep supervision", (("training.deep_supervision", True),)),
    Row("e1", "nnU-Net's augmentation", (("training.augmentation", "nnunet"),)),
    Row("f1", "250 iterations per epoch (nnU-Net)", (("training.iterations_per_epoch", 250),),
        notes="same iterations in all; poly is by iteration, so this differs mainly in the data order"),
    Row("g1", "region prior from the run's training cases, per network",
        (("training.region_prior_source", "fold"),)),
    *(Row(f"lr{s}{'' if a == 'full' else '-us'}",
          f"LR scale {s}, {'full PFSeg' if a == 'full' else 'seg only (US)'}",
          networks=("pfseg",), lr_scale=s, ablation=a) for s in (1, 2, 4) for a in ("full", "us")),
    Row("c4-us", "Adam 3e-3, seg only (US)", (("training.lr", 3e-3),), ("pfseg",), ablation="us",
        notes="the lr1-us question at the adopted learning rate: set against recipe:c4"),
)}
# the LR table's lines: (label, segmentation-only row, full row)
US_PAIRS = (("1", "lr1-us", "lr1"), ("1, Adam 3e-3", "c4-us", "c4"), ("2", "lr2-us", "lr2"),
            ("4", "lr4-us", "lr4"))
STUDY_ROWS = tuple(ROWS)
QUICK_ROWS = ("base", "c2", "lr1", "lr1-us")


def study_parser(name: str, quick_help: str, iterations_help: str, test_cases: int,
                 work: Path) -> argparse.ArgumentParser:
    """The options the studies share (recipe, branches, tta): `--quick`, `--iterations`,
    `--seeds`, `--test-cases` and `--work`."""
    p = argparse.ArgumentParser(prog=f"python -m bench {name}")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--iterations", type=int, default=None, help=iterations_help)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="paired seeds (default 1 2 3)")
    p.add_argument("--test-cases", type=int, default=test_cases)
    p.add_argument("--work", type=Path, default=work, help=f"data and runs, resumable (default {work})")
    return p


def options(argv: list[str]) -> dict:
    """`python -m bench recipe`'s own options (bench/__main__.py passes the rest of the line)."""
    p = study_parser("recipe", "tiny: 4 + 2 cases, 2 iterations, 2 seeds, 4 rows",
                     "training iterations per run (default 500)", 8, WORK)
    p.add_argument("--rows", nargs="+", default=None, choices=STUDY_ROWS, metavar="ROW",
                   help=f"rows to run (default: all): {' '.join(STUDY_ROWS)}")
    p.add_argument("--spacing", type=int, choices=(1, 2, 4), default=4, help="case grid in mm (default 4)")
    p.add_argument("--cases", type=int, default=16)
    p.add_argument("--base-preset", choices=("default", "demo"), default="default",
                   help="whose training recipe is the baseline (default: the default preset's)")
    return vars(p.parse_args(argv))


def run(quick: bool = False, iterations: int | None = None, seeds=None, rows=None, spacing: int = 4,
        cases: int = 16, test_cases: int = 8, base_preset: str = "default",
        work: Path = WORK) -> dict:
    iterations = iterations or (2 if quick else 500)
    seeds = tuple(seeds or ((1, 2) if quick else (1, 2, 3)))
    rows = tuple(rows or (QUICK_ROWS if quick else STUDY_ROWS))
    if quick:
        cases, test_cases = 4, 2
    if "base" not in rows:
        rows = ("base", *rows)
    study = Study(Path(work) / f"{spacing}mm_{cases}x{test_cases}", spacing, cases, test_cases, base_preset)
    t0 = time.perf_counter()
    results = {}
    with contextlib.ExitStack() as stack:
        if not quick:     # a core of its own once this process trains (a table of finished runs takes none)
            study.before_training = lambda: pin_to_a_free_core(study.root, stack)
        for row_key in rows:
            row = ROWS[row_key]
            for network in row.networks:
                for seed in seeds:
                    study.run(row, network, seed, iterations)
    for row_key in rows:           # every run on disk: those that other processes ran too
        for network in ROWS[row_key].networks:
            for seed in seeds:
                done = study.result(row_key, network, seed, iterations)
                if done is not None:
                    results[(row_key, network, seed)] = done
    title = f"Recipe study: each change alone against the default it began from ({spacing} mm anatomy)"
    figures = {"title": title,
               "iterations": iterations, "seeds": list(seeds), "spacing_mm": spacing, "cases": cases,
               "test_cases": test_cases, "base_preset": base_preset, "rows": list(rows),
               "baseline_recipe": study.baseline_recipe(),
               "seconds": time.perf_counter() - t0,
               "runs": {f"{r}/{n}/{s}": v for (r, n, s), v in results.items()}}
    figures["markdown"] = markdown(figures, results)
    return figures


def pin_to_a_free_core(root: Path, stack: contextlib.ExitStack) -> int:
    """Run this process on one core that no other process of the study holds (its lock kept on
    `stack`), so torch trains every run with one thread: a run's figures depend on its thread
    count (float sums in another order; a seed whose ET is on the edge of vanishing tips one
    way with 1 thread and the other with 2), and the rows are compared with the baseline seed by
    seed. Two processes on 2 cores take one core each."""
    cores = sorted(os.sched_getaffinity(0))
    for core in cores:
        if _take(stack, root / f".core{core}", f"core {core} of the study"):
            os.sched_setaffinity(0, {core})
            log.info("this study process runs on core %d (one torch thread, as every run of the study)", core)
            return core
    raise UserError(f"every core this process may use ({cores}) already runs a process of this study")


def _take(stack: contextlib.ExitStack, folder: Path, what: str) -> bool:
    """Hold the lock of `folder` on `stack`; False when another live process holds it."""
    from pfseg_pipeline import locks

    try:
        stack.enter_context(locks.exclusive(folder, what))
    except locks.Busy:
        return False
    return True


@contextlib.contextmanager
def _waiting_for(folder: Path, what: str, poll_seconds: float = 10.0):
    """Hold the lock of `folder`, waiting while another process holds it."""
    with contextlib.ExitStack() as stack:
        while not _take(stack, folder, what):
            log.info("waiting for another process: %s", what)
            time.sleep(poll_seconds)
        yield


class Study:
    """The study's data, plans and runs under one folder."""

    def __init__(self, root: Path, spacing: int, cases: int, test_cases: int, base_preset: str,
                 test_seed: int = TEST_SEED, test_start: int = TEST_START, rows: dict | None = None):
        self.root, self.spacing, self.n_cases, self.n_test = root, spacing, cases, test_cases
        self.base_preset = base_preset
        self.test_seed, self.test_start = test_seed, test_start
        self.rows = ROWS if rows is None else rows       # row key -> Row (bench.branches has its own)
        self.train_raw, self.test_raw = root / "raw_train", root / "raw_test"
        self._plans: dict = {}
        self.before_training = None      # called (once) before the first run this process trains

    def data(self) -> None:
        from pfseg_pipeline.data.synthetic import write_dataset

        for raw, n, seed, start in ((self.train_raw, self.n_cases, TRAIN_SEED, 1),
                                    (self.test_raw, self.n_test, self.test_seed, self.test_start)):
            if not (raw / ".complete").is_file():
                write_dataset(raw, n, None, seed=seed, start_index=start, overwrite=True, anatomy="mni152",
                              spacing_mm=self.spacing, workers=2)
                (raw / ".complete").write_text("ok\n")

    def _plan_name(self, lr_scale: int | None):
        from pfseg_pipeline.paths import Workspace

        return Workspace(self.root / "ws"), "Anat" if lr_scale is None else f"AnatLR{lr_scale}"

    def workspace(self, lr_scale: int | None):
        """(Workspace, dataset name) of the plan with this LR scale (None: the planner's own)."""
        from pfseg_pipeline.preprocessing.pipeline import plan_and_preprocess

        ws, name = self._plan_name(lr_scale)
        if name not in self._plans:
            with _waiting_for(self.root / ".setup", "the study's data and plans"):   # one process at a time
                self.data()
                if not ws.plans_file(name).is_file():
                    plan_and_preprocess(self.train_raw, name, ws, preset="demo", lr_scale=lr_scale,
                                        workers=2, progress=False)
            self._plans[name] = True
        return ws, name

    def base_settings(self, plans) -> list:
        """The baseline's settings on the study's plans: the base preset's recipe (the fields a
        row may change), one pass over the cases per epoch (the planner's rule where the preset
        leaves it to the data). Written to the study folder on first use and read from there
        after, so that the baseline stays what its runs trained with when the presets change
        (plans made later, e.g. an LR row's, would carry the new defaults)."""
        from pfseg_pipeline.fileio import write_json
        from pfseg_pipeline.plans import preset_training

        pinned = self.root / "baseline_settings.json"
        if pinned.is_file():
            return [tuple(pair) for pair in json.loads(pinned.read_text())]
        base = dataclasses.asdict(preset_training(self.base_preset))
        per_epoch = base["iterations_per_epoch"] if self.base_preset == "demo" else max(
            1, math.ceil(self.n_cases / plans.batch_size))
        settings = [(f"training.{k}", base[k]) for k in BASELINE_FIELDS]
        settings.append(("training.iterations_per_epoch", per_epoch))
        write_json(pinned, [list(pair) for pair in settings])
        return settings

    def baseline_recipe(self, lr_scale: int | None = None) -> str | None:
        """The baseline's training recipe in words, from the study's plan (at this forced LR
        scale; None: the planner's own) and the baseline's settings: the table keeps saying what
        the baseline was after the presets change."""
        from pfseg_pipeline.plans import load_plans
        from pfseg_pipeline.plans_settings import apply_settings

        ws, name = self._plan_name(lr_scale)
        if not ws.plans_file(name).is_file():
            return None
        plans = load_plans(ws.plans_file(name))
        t = apply_settings(plans, self.base_settings(plans), log_changes=False).training
        scheduler = t.scheduler
        if scheduler == "plateau" and not t.monitor_fraction:
            scheduler = "plateau without monitor cases, so poly decay by iteration"
        weights = ", ".join(f"{k} {v:g}" for k, v in t.loss_weights.items())
        a = t.augmentation
        augmentation = (f"rotation +-{max(a.rotation_deg_zyx):g} deg p {a.p_rotation:g}, scaling p "
                        f"{a.p_scale:g}, blur p {a.p_blur:g}, low resolution p {a.p_low_resolution:g}")
        return (f"{t.optimizer} lr {t.lr:g}, weight decay {t.weight_decay:g}, {scheduler}, "
                f"{t.iterations_per_epoch} iterations per epoch, loss weights {weights} ({t.aux_intensity} "
                f"intensities), deep supervision {'on' if t.deep_supervision else 'off'}, region prior "
                f"{t.region_prior_source}, augmentation: {augmentation}")

    def _out(self, row_key: str, network: str, seed: int, iterations: int) -> Path:
        return self.root / "runs" / f"it{iterations}" / row_key / network / f"seed{seed}.json"

    def same_as_base(self, row: Row) -> bool:
        """Whether `row` only forces the LR scale that the planner chose for the baseline anyway:
        then its plan is the baseline's (a forced scale replaces the planner's choice and nothing
        else) and, one torch thread per run, so are its runs; they are not trained twice."""
        if row.key == "base" or row.lr_scale is None or row.ablation != "full" or row.settings:
            return False
        from pfseg_pipeline.plans import load_plans

        ws, name = self.workspace(None)
        return list(load_plans(ws.plans_file(name)).lr_scale_zyx) == [row.lr_scale] * 3

    def result(self, row_key: str, network: str, seed: int, iterations: int) -> dict | None:
        """The JSON of a finished run, or None (a row with the baseline's plan: the baseline's run)."""
        if self.same_as_base(self.rows[row_key]):
            base = self.result("base", network, seed, iterations)
            return None if base is None else {**base, "row": row_key, "same_runs_as": "base"}
        out = self._out(row_key, network, seed, iterations)
        return json.loads(out.read_text()) if out.is_file() else None

    def run(self, row: Row, network: str, seed: int, iterations: int) -> dict | None:
        """Train, predict and score one run; its JSON. None when another process is running it."""
        if self.same_as_base(row):
            self.run(self.rows["base"], network, seed, iterations)
            return self.result(row.key, network, seed, iterations)
        out = self._out(row.key, network, seed, iterations)
        done = self.result(row.key, network, seed, iterations)
        if done is not None:
            return done
        with contextlib.ExitStack() as stack:
            if not _take(stack, out.with_name(f".{out.stem}"), "recipe run"):
                log.info("recipe %s, %s, seed %d: running in another process", row.key, network, seed)
                return None
            done = self.result(row.key, network, seed, iterations)   # finished by another process meanwhile?
            if done is not None:
                return done
            if self.before_training is not None:
                self.before_training()
                self.before_training = None
            return self._train_and_score(row, network, seed, iterations, out)

    def _train_and_score(self, row: Row, network: str, seed: int, iterations: int, out: Path) -> dict:
        from pfseg_pipeline.data.layouts import discover
        from pfseg_pipeline.fileio import read_json, write_json
        from pfseg_pipeline.plans import load_plans
        from pfseg_pipeline.plans_settings import apply_settings
        from pfseg_pipeline.training.recipe import Overrides, fold_directory, train_fold

        ws, name = self.workspace(row.lr_scale)
        plans = load_plans(ws.plans_file(name))
        settings = tuple(self.base_settings(plans)) + tuple(row.settings)
        planned = apply_settings(plans, settings)
        ipe = planned.training.iterations_per_epoch
        epochs = max(1, round(iterations / ipe))
        variant = f"{row.key}-s{seed}".replace("_", "-")
        overrides = Overrides(epochs=epochs, iterations_per_epoch=ipe, seed=seed, settings=settings,
                              variant=variant, progress_bar=False)
        log.info("recipe %s, %s, seed %d: %d epochs x %d iterations", row.key, network, seed, epochs, ipe)
        t0 = time.perf_counter()
        if train_fold(ws, name, network, "all", ablation=row.ablation, overrides=overrides) is not None:
            raise KeyboardInterrupt   # a signal stopped the training: stop the study (rerun to resume)
        train_seconds = time.perf_counter() - t0
        fold = fold_directory(ws, name, network, "all", row.ablation, variant)
        test = discover(self.test_raw, tuple(planned.modalities), require_label=True).cases
        scored = self._predict_and_score(fold, test, planned, tta=False)
        train = read_json(fold / "train_summary.json")
        result = {
            "row": row.key, "network": network, "seed": seed, "ablation": row.ablation,
            "settings": {k: v for k, v in settings}, "epochs": epochs, "iterations_per_epoch": ipe,
            "iterations": epochs * ipe, "lr_scale_zyx": planned.lr_scale_zyx,
            "hr_shape_zyx": planned.hr_shape_zyx, **scored,
            "seconds_per_iteration": train.get("seconds_per_iteration"), "train_seconds": train_seconds,
            "predicted_peak_bytes": (planned.memory.get("predicted_peak_bytes") or {}).get(network),
            "region_prior": train.get("region_prior"), "torch_threads": train.get("torch_threads"),
            "num_workers": train.get("num_workers"), "compute": train.get("compute")}
        if row.tta:    # the same model's predictions averaged over the mirrors training flipped
            result["tta"] = self._predict_and_score(fold, test, planned, tta=True)
        result["wall_seconds"] = time.perf_counter() - t0
        write_json(out, result)
        shutil.rmtree(fold.parent)     # checkpoints and predictions: the JSON holds what the table needs
        return result

    def _predict_and_score(self, fold: Path, test, planned, tta: bool) -> dict:
        """Predict the test cases with the fold's final model (with or without mirror TTA) on
        one process and score them: Dice, HD95, per case, ET voxel counts, and the median
        network seconds per case."""
        from pfseg_pipeline.evaluation.evaluate import evaluate_folder
        from pfseg_pipeline.fileio import read_json
        from pfseg_pipeline.inference.pipeline import predict_folder

        pred = fold.parent / ("test_predictions_tta" if tta else "test_predictions")
        predict_folder(None, pred, fold.parent, cases=test, folds=["all"], device="cpu", overwrite=True,
                       workers=1, progress=False, tta=tta)
        summary = evaluate_folder(self.test_raw, pred, scheme=planned.scheme, target=planned.target,
                                  write=False, progress=False)
        timings = read_json(pred / "timings.json")["per_case"]
        return {"dice": {r: summary["summary"][r]["dice"]["mean"] for r in REGIONS},
                "hd95": {r: summary["summary"][r]["hd95"]["mean"] for r in REGIONS},
                "per_case_dice": {c["case"]: {r: c[r]["dice"] for r in REGIONS} for c in summary["per_case"]},
                "per_case_voxels": voxel_counts(summary),
                "predict_seconds_per_case": statistics.median(t["network"] for t in timings)}


def voxel_counts(summary: dict) -> dict:
    """{case: {region: [reference voxels, predicted voxels]}} from an evaluate_folder result (its
    nnU-Net-style counts, one entry per scored case in the order of `per_case`)."""
    keys = summary["region_keys"]
    return {case["case"]: {r: [entry["metrics"][keys[r]]["n_ref"], entry["metrics"][keys[r]]["n_pred"]]
                           for r in REGIONS}
            for case, entry in zip(summary["per_case"], summary["metric_per_case"])}


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _mean_dice(result: dict) -> float:
    return sum(result["dice"][r] for r in REGIONS) / len(REGIONS)


def verdict(diffs: list[float]) -> tuple[float, float, str]:
    """(mean paired difference, its standard error, the decision rule's word)."""
    mean = statistics.mean(diffs)
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else float("nan")
    if len(diffs) < 3:
        return mean, se, "too few seeds"
    return mean, se, "wins" if mean > se else "the simpler option stays"


def _paired(runs: dict, row: str, other: str, network: str, seeds) -> list[tuple[dict, dict]]:
    """(run of `row`, run of `other`) per seed where both are done: the pairs share a seed."""
    return [(runs[(row, network, s)], runs[(other, network, s)]) for s in seeds
            if (row, network, s) in runs and (other, network, s) in runs]


def _mean_sd(values: list[float], digits: int) -> str:
    mean, sd = _stats(values)
    return f"{mean:.{digits}f} ({sd:.{digits}f})"


def markdown(f: dict, results: dict) -> str:
    """The study's table from its runs: `results[(row, network, seed)]` = one run's JSON.

    Per row and network: the mean (sd) over seeds of the test Dice and HD95 per region, the
    paired difference of the mean Dice to the baseline (same seeds) with its standard error and
    the decision rule's verdict, the median seconds per iteration and the memory model's peak.
    """
    seeds = f["seeds"]
    hours = sum(r.get("wall_seconds") or 0 for r in results.values()) / 3600
    lines = [
        f"{f['cases']} training + {f['test_cases']} test MNI152 anatomy cases at {f['spacing_mm']} mm "
        f"(`pfseg_make_synthetic --anatomy mni152`, seeds {TRAIN_SEED} / {TEST_SEED}), `--preset demo` plan "
        f"(narrow widths), baseline recipe: the {f['base_preset']} preset's training plan when the study "
        f"was planned ({f.get('baseline_recipe') or 'see the runs'}); every run "
        f"{f['iterations']} iterations (epochs rounded to whole ones) on all training cases, then scored on "
        f"the test cases (Dice; HD95 in mm, MedPy's pooled form); seeds {', '.join(map(str, seeds))} paired "
        "(same seed for a row and the baseline: weights, sampling, augmentation). Mean (sd) over seeds; "
        "Δ = paired difference of the mean Dice (WT, TC, ET averaged) to the baseline, ± its standard error; "
        "a change wins when Δ > SE over 3+ seeds, else the simpler option stays. s / it: the median over "
        "seeds of a run's seconds per iteration, one torch thread on a core of its own (two study processes "
        "side by side): compare within a table, not across days. GiB (model): the memory model's predicted "
        "GPU training peak of the row's plan for the network as specified (- for a segmentation-only row, "
        "which needs less). The default preset's recipe follows this "
        "table (presets.py: each studied field's reason in plans.json names its row; a change is adopted "
        "where it wins for PFSeg, or for ResUNet3D where PFSeg's runs are unchanged, and loses beyond its "
        "standard error for neither). "
        f"{len(results)} runs on disk, {hours:.1f} core-hours, each made on a core of its own: the date "
        "above is the table's, not the runs'.", "",
        "| row | change | network | WT Dice | TC Dice | ET Dice | WT HD95 | TC HD95 | ET HD95 "
        "| Δ mean Dice ± SE | verdict | s / it | GiB (model) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---:|---:|"]
    for key in f["rows"]:
        row = ROWS[key]
        for network in row.networks:
            mine = [results[(key, network, s)] for s in seeds if (key, network, s) in results]
            if not mine:
                continue
            cells = [_mean_sd([x["dice"][r] for x in mine], 3) for r in REGIONS]
            cells += [_mean_sd([x["hd95"][r] for x in mine], 1) for r in REGIONS]
            pairs = _paired(results, key, "base", network, seeds)
            if key == "base":
                cells += ["-", "baseline"]
            elif all(x.get("same_runs_as") == "base" for x in mine):
                cells += ["-", "the baseline's plan and runs"]
            elif not pairs:
                cells += ["-", "no baseline"]
            else:
                mean, se, word = verdict([_mean_dice(x) - _mean_dice(b) for x, b in pairs])
                cells += [f"{mean:+.3f} ± {se:.3f}", word]
            spi = [x["seconds_per_iteration"] for x in mine if x.get("seconds_per_iteration")]
            # the plan's figure is the network as specified: a segmentation-only row would need less
            peak = mine[0].get("predicted_peak_bytes") if row.ablation == "full" else None
            cells += [f"{statistics.median(spi):.2f}" if spi else "-",
                      f"{peak / 2 ** 30:.2f}" if peak else "-"]
            title = row.title + (f" ({row.notes})" if row.notes else "")
            lines.append(f"| recipe:{key} | {title} | {network} | " + " | ".join(cells) + " |")
    lines += _lr_table(f, results)
    return "\n".join(lines) + "\n"


def _lr_table(f: dict, runs: dict) -> list[str]:
    """Per LR scale: the full PFSeg against its segmentation-only network, paired by seed."""
    rows = []
    for label, us_row, full_row in US_PAIRS:
        pairs = _paired(runs, us_row, full_row, "pfseg", f["seeds"])
        if not pairs:
            continue
        us, full = [u for u, _ in pairs], [x for _, x in pairs]
        mean, se, _ = verdict([_mean_dice(u) - _mean_dice(x) for u, x in pairs])
        spi = [statistics.median([x["seconds_per_iteration"] or 0 for x in xs]) for xs in (full, us)]
        gib = (full[0].get("predicted_peak_bytes") or 0) / 2 ** 30
        et = [_mean_sd([x["dice"]["ET"] for x in xs], 3) for xs in (full, us)]
        mean_dice = [_mean_sd([_mean_dice(x) for x in xs], 3) for xs in (full, us)]
        rows.append(f"| {label} | {et[0]} | {et[1]} | {mean_dice[0]} | {mean_dice[1]} | "
                    f"{mean:+.3f} ± {se:.3f} | {spi[0]:.2f}, {spi[1]:.2f} | {gib:.2f} "
                    f"| {len(pairs)} |")
    if not rows:
        return []
    return ["", "PFSeg per LR scale (rows lr1, lr2, lr4 re-plan with `--lr-scale`; `recipe:base` keeps the "
            "planner's own scale, and the row forcing that same scale is the baseline's runs): the full "
            "network (SR + SGM) against the segmentation-only one (US, "
            "`--ablation us`), paired by seed, Δ = US - full of the mean Dice: whether the SR and SGM "
            "branches earn their time at that scale. The line `1, Adam 3e-3` asks it at the learning "
            "rate the default adopted (recipe:c4-us against recipe:c4), the others at the baseline's. "
            "GiB: the memory model's predicted GPU training peak "
            "of the full network on the scale's plan (batch as planned).", "",
            "| LR scale | full: ET Dice | US: ET Dice | full: mean Dice | US: mean Dice | Δ US - full ± SE "
            "| s / it full, US | GiB full | seeds |", "|---|---|---|---|---|---|---|---|---:|", *rows]


def study_main(run, options, argv=None) -> int:
    """A study's command line: its options, the run, the table printed."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(run(**options(argv))["markdown"])
    return 0


def main(argv=None) -> int:
    return study_main(run, options, argv)


if __name__ == "__main__":
    raise SystemExit(main())
