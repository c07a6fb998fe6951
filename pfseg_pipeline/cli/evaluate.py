"""pfseg_evaluate: BraTS metrics (Dice, HD95, sensitivity, specificity) of a folder of predictions."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from pfseg_pipeline.cli.common import ArgumentParser, add_common_args, entry_point, setup_logging
from pfseg_pipeline.data.labels import SCHEMES, LabelScheme
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.evaluate import evaluate_folder
from pfseg_pipeline.evaluation.metrics import HD95_DEFINITIONS
from pfseg_pipeline.evaluation.report import write_evaluation_report

log = logging.getLogger(__name__)

EXAMPLES = """\
examples:
  pfseg_evaluate -r BraTS2020_TrainingData -p predictions
  pfseg_evaluate -r nnUNet_raw/Dataset001_BraTS -p predictions -o scores/summary.json -np 4
  pfseg_evaluate -r refs -p predictions --wt --paper-grid      # the PFSeg paper's protocol
  pfseg_evaluate -r refs -p predictions --hd95 directed-max    # the BraTS challenge tool's HD95
  pfseg_evaluate -r BraTS2020_TrainingData -p predictions --report   # + report.html, worst first

REF: BraTS case folders (<case>/<case>_seg.nii.gz), an nnU-Net raw dataset (labelsTr/) or a flat
folder of <case>.nii.gz / <case>_seg.nii.gz files (.nii, .nii.gz, .mha, .nrrd). PRED: <case> label
maps. A missing prediction is scored as an empty mask and listed under "missing". Predictions
whose label_scheme.json (written by pfseg_predict) puts other values in a region than the
references' scheme are refused. Writes summary.json (our keys, plus nnU-Net's metric_per_case,
mean and foreground_mean) and a per-case summary.csv beside it; --report adds report.html and
report/<case>.png (three slices through the tumour, reference and predicted contours over the
FLAIR found under --images, default REF). Exits 2 when any case could not be scored.
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pfseg_evaluate", description=__doc__, epilog=EXAMPLES)
    parser.add_argument("-r", "--reference", required=True, metavar="REF", help="reference label maps")
    parser.add_argument("-p", "--prediction", required=True, metavar="PRED", help="predicted label maps")
    parser.add_argument("-o", "--output", default=None, metavar="JSON",
                        help="summary file (default: PRED/summary.json); the CSV goes beside it")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--regions", dest="target", action="store_const", const="regions",
                        help="score WT, TC and ET (default)")
    target.add_argument("--wt", dest="target", action="store_const", const="wt",
                        help="score the whole tumour only (the paper's binary protocol)")
    parser.set_defaults(target="regions")
    parser.add_argument("--label-scheme", choices=sorted(SCHEMES), default=None,
                        help="label values of the maps (default: from an nnU-Net dataset.json, "
                             "else brats2020)")
    parser.add_argument("--hd95", choices=HD95_DEFINITIONS, default="pooled",
                        help="pooled: MedPy's definition (default); directed-max: the BraTS tool's")
    parser.add_argument("-np", "--num-processes", type=int, default=min(4, os.cpu_count() or 1),
                        metavar="N", help="cases scored in parallel (default: %(default)s)")
    parser.add_argument("--paper-grid", action="store_true",
                        help="score on the paper's 128x192x192 grid in voxels (crop 240->192 in-plane, "
                             "z 155->128 nearest neighbour)")
    parser.add_argument("--exclude", nargs="+", default=(), metavar="CASE", help="cases to leave out")
    parser.add_argument("--report", action="store_true",
                        help="also write report.html: per case three slices through the tumour with the "
                             "reference and predicted WT/TC/ET contours, worst case first")
    parser.add_argument("--images", default=None, metavar="DIR",
                        help="where the cases' scans are, for --report (default: REF)")
    add_common_args(parser, workspace=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_processes < 1:
        raise UserError(f"-np must be at least 1, got {args.num_processes}")
    output = Path(args.output) if args.output else Path(args.prediction) / "summary.json"
    # the log goes beside summary.json; nothing is created when PRED itself is missing
    log_file = output.parent / "pfseg_evaluate.log" if Path(args.prediction).is_dir() else None
    setup_logging(log_file, args.verbose)
    result = evaluate_folder(args.reference, args.prediction, output=output, scheme=args.label_scheme,
                             target=args.target, hd95_definition=args.hd95,
                             num_processes=args.num_processes, paper_grid=args.paper_grid,
                             exclude=args.exclude)
    for region, metrics in result["summary"].items():
        dsc, hd = metrics["dice"], metrics["hd95"]
        if dsc["n"]:
            log.info("%s: Dice %.4f (%.4f)  HD95 %.2f (%.2f) %s  n=%d", region, dsc["mean"], dsc["std"],
                     hd["mean"], hd["std"], result["units"], dsc["n"])
    if result["missing"]:
        log.warning("%d case(s) without a prediction, scored as empty: %s", len(result["missing"]),
                    ", ".join(result["missing"]))
    if args.report:
        write_evaluation_report(result, output, args.images or args.reference,
                                LabelScheme.from_json(result["label_scheme_definition"]))
    if result["failed"]:
        raise UserError(f"{len(result['failed'])} case(s) could not be scored (see the lines above and "
                        f"'failed' in {output}): {', '.join(f['case'] for f in result['failed'])}")
    return 0


console = entry_point(main)

if __name__ == "__main__":
    console()
