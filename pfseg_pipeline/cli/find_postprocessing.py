"""pfseg_find_postprocessing: choose a network's postprocessing on its cross-validation cases."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pfseg_pipeline.cli.common import ArgumentParser, add_common_args, entry_point, setup_logging
from pfseg_pipeline.evaluation.postprocessing import SMALL_ET_THRESHOLDS_MM3, find_postprocessing
from pfseg_pipeline.networks.registry import DEFAULT_NETWORK, network_spec
from pfseg_pipeline.paths import Workspace

log = logging.getLogger(__name__)

LOG_FILE = "pfseg_find_postprocessing.log"
EXAMPLES = f"""\
examples:
  pfseg_find_postprocessing BraTS2020 --network pfseg              # every trained fold 0-4
  pfseg_find_postprocessing BraTS2020 --network resunet3d -f 0 1 2
  pfseg_find_postprocessing BraTS2020 --network pfseg --variant us

Reads each fold's validation/ predictions (native grid, written at the end of pfseg_train) and
the reference label files that dataset.json lists, and chooses per region, as nnU-Net does:
keep the largest connected component (WT, then TC, then ET) where it raises that region's mean
Dice and lowers none; then the BraTS small-ET rule, relabelling a case's ET as necrosis when its
volume is under a threshold chosen from {', '.join(f'{t:g}' for t in SMALL_ET_THRESHOLDS_MM3)} mm^3
(0 = off) by mean ET Dice. Writes results/NAME/NETWORK[__VARIANT]/postprocessing.json, which
pfseg_predict applies (--no-postprocessing skips it). The figures in it are chosen on those
cases, so they flatter them; a separate test set gives the clean figures.
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pfseg_find_postprocessing", description=__doc__, epilog=EXAMPLES)
    parser.add_argument("name", metavar="NAME", help="dataset name (results/NAME)")
    parser.add_argument("--network", default=DEFAULT_NETWORK,
                        help="network whose folds to read (default: %(default)s)")
    parser.add_argument("--variant", default=None, metavar="V",
                        help="variant folder NETWORK__V (e.g. an ablation row)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, metavar="FOLD",
                        help="cross-validation folds to pool (default: every fold with validation cases)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, metavar="N",
                        help="worker processes reading the cases (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    network_spec(args.network)  # an unknown name: one line listing the networks
    network_dir = Workspace.resolve(args.workspace).network_dir(args.name, args.network, args.variant)
    setup_logging(network_dir / LOG_FILE if network_dir.is_dir() else None, args.verbose)
    choice, path = find_postprocessing(network_dir, args.folds, max(1, args.num_processes),
                                       progress=not args.no_progress)
    log.info("chosen on %d case(s) of fold(s) %s: %s", len(choice.cases), ", ".join(choice.folds),
             choice.summary_line())
    log.info("wrote %s (its figures are chosen on these cases: optimistic for them)", path)
    return 0


console = entry_point(main)

if __name__ == "__main__":
    console()
