"""pfseg_plan_and_preprocess: verify a raw dataset, fingerprint it, plan, preprocess."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from pfseg_pipeline.cli.common import ArgumentParser, add_common_args, entry_point, setup_logging
from pfseg_pipeline.data.labels import SCHEMES
from pfseg_pipeline.data.layouts import MODALITIES, check_case_id
from pfseg_pipeline.data.verify import VerifyReport, verify_dataset
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.presets import PRESETS

log = logging.getLogger(__name__)

LOG_FILE = "plan_and_preprocess.log"  # in preprocessed/NAME/ of the workspace
EXAMPLES = """\
examples:
  pfseg_plan_and_preprocess -i raw/BraTS2020_TrainingData -d BraTS2020 --verify-only
  pfseg_plan_and_preprocess -i raw/BraTS2020_TrainingData -d BraTS2020 --exclude BraTS20_Training_355
  pfseg_plan_and_preprocess -i raw/synth -d Synth --preset demo -np 2
  pfseg_plan_and_preprocess -i raw/BraTS2020_TrainingData -d Paper --preset paper   # t2 only, WT

RAW: BraTS case folders at any depth (<case>/<case>_{t1,t1ce,t2,flair,seg}.nii[.gz]), an nnU-Net
raw dataset (dataset.json + imagesTr/ + labelsTr/) or a flat folder of NIfTI files.
Every file is read in full first; all problems are listed, one line each, and the command exits
2 without writing anything. --exclude leaves known bad cases out (BraTS 2020 case 355 has a
misnamed label in some copies).
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pfseg_plan_and_preprocess", description=__doc__, epilog=EXAMPLES)
    parser.add_argument("-i", "--input", required=True, metavar="RAW", help="raw dataset folder")
    parser.add_argument("-d", "--dataset", required=True, metavar="NAME",
                        help="dataset name in the workspace (preprocessed/NAME, results/NAME)")
    parser.add_argument("--preset", choices=PRESETS, default="default",
                        help="default (self-configured), paper (the paper's protocol: t2, WT, "
                             "128x192x192) or demo (small and fast); default: %(default)s")
    parser.add_argument("--modalities", nargs="+", choices=MODALITIES, default=None, metavar="MOD",
                        help="modalities to use, in this order (default: t1 t1ce t2 flair; "
                             "paper preset: t2)")
    parser.add_argument("--label-scheme", choices=tuple(SCHEMES), default=None,
                        help="label values of the dataset (default: what an nnU-Net dataset.json "
                             "declares, else brats2020)")
    parser.add_argument("--gpu-memory-gb", type=float, default=11.0, metavar="GB",
                        help="GPU memory budget the plan must fit (default: %(default)g)")
    parser.add_argument("--lr-scale", type=int, nargs="+", default=None, metavar="S",
                        help="LR scale, one value for every axis or three (z y x); default: the "
                             "smallest that fits the budget (1 where it fits; paper preset: 2)")
    parser.add_argument("-np", "--num-processes", type=int, default=None, metavar="N",
                        help="worker processes (default: min(8, CPU count))")
    parser.add_argument("--verify-only", action="store_true",
                        help="only read and check every file of the dataset, then stop")
    parser.add_argument("--exclude", nargs="+", default=(), metavar="CASE",
                        help="case ids to leave out")
    parser.add_argument("--force", action="store_true",
                        help="rebuild every cached case, even those whose sources and plans are unchanged")
    add_common_args(parser)
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Option values argparse cannot check alone: one clear line each."""
    problem = check_case_id(args.dataset)
    if problem:
        raise UserError(f"-d {args.dataset!r}: {problem.replace('case id', 'dataset name')}")
    if args.num_processes is not None and args.num_processes < 1:
        raise UserError(f"-np must be at least 1 (got {args.num_processes})")
    if args.gpu_memory_gb <= 0:
        raise UserError(f"--gpu-memory-gb must be positive (got {args.gpu_memory_gb:g})")
    if args.lr_scale is not None:
        if len(args.lr_scale) not in (1, 3) or any(s < 1 for s in args.lr_scale):
            raise UserError("--lr-scale takes one or three integers >= 1 (z y x), "
                            f"got {' '.join(map(str, args.lr_scale))}")
    if args.modalities is not None and len(set(args.modalities)) != len(args.modalities):
        raise UserError(f"--modalities lists a modality twice: {' '.join(args.modalities)}")


def modalities_of(args: argparse.Namespace) -> tuple[str, ...]:
    """The modalities to verify and use: --modalities, else the preset's."""
    from pfseg_pipeline.preprocessing.pipeline import default_modalities

    return tuple(args.modalities) if args.modalities else default_modalities(args.preset)


def workers_of(args: argparse.Namespace) -> int:
    return args.num_processes or max(1, min(8, os.cpu_count() or 1))


def verify_step(args: argparse.Namespace) -> VerifyReport:
    """Read and check every file of the raw dataset; raise VerificationError listing all problems."""
    report = verify_dataset(args.input, modalities=modalities_of(args), require_label=True,
                            exclude=tuple(args.exclude), label_scheme=args.label_scheme,
                            workers=workers_of(args), progress=True)
    report.raise_for_problems()
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    setup_logging(None, verbose=args.verbose)
    if args.verify_only:
        report = verify_step(args)
        print(f"verified {len(report.cases)} cases: OK")
        return 0
    from pfseg_pipeline.preprocessing.pipeline import plan_and_preprocess

    summary = plan_and_preprocess(
        args.input, args.dataset, workspace=args.workspace, preset=args.preset, modalities=args.modalities,
        gpu_memory_gb=args.gpu_memory_gb, lr_scale=args.lr_scale, workers=args.num_processes,
        exclude=tuple(args.exclude), label_scheme=args.label_scheme, force=args.force)
    print(format_summary(summary))
    return 0


# what PFSeg trains (plans.json training.pfseg_branches), in the summary's words
BRANCH_WORDS = {"full": "whole method", "us": "segmentation network alone (us)"}


def format_summary(summary: dict) -> str:
    """The few lines a user reads at the end of a run."""
    p = summary["plan"]
    x = "x".join
    peaks = ", ".join(f"{k} {v:.2f}" for k, v in p["predicted_peak_gb"].items())
    return "\n".join([
        f"{summary['cases']} case(s) preprocessed into {summary['preprocessed']} "
        f"({summary['written']} written, {summary['skipped']} unchanged, {summary['workers']} worker(s))",
        f"plan ({p['preset']}): HR {x(map(str, p['hr_shape_zyx']))}, "
        f"LR scale {x(map(str, p['lr_scale_zyx']))} "
        f"(LR {x(map(str, p['lr_shape_zyx']))}), guidance {x(map(str, p['guidance_patch_zyx']))}, "
        f"batch {p['batch_size']}, PFSeg {BRANCH_WORDS.get(p['pfseg_branches'], p['pfseg_branches'])}, "
        f"baseline patch {x(map(str, p['baseline_patch_zyx']))} (z y x)",
        f"predicted training-step peak, GiB (budget {p['budget_gb']:g}): {peaks}",
        "time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["seconds"].items()),
    ])


console = entry_point(main)

if __name__ == "__main__":
    console()
