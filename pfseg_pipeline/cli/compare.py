"""pfseg_compare: the results table of every network trained for a dataset."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pfseg_pipeline.cli.common import ArgumentParser, add_common_args, entry_point, setup_logging
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.compare import compare
from pfseg_pipeline.paths import Workspace

log = logging.getLogger(__name__)

EXAMPLES = """\
examples:
  pfseg_compare Demo                  # fold 0 of every network in results/Demo/
  pfseg_compare Demo -f 0 1 2 3 4     # the five cross-validation folds pooled
  pfseg_compare BraTS2020 -f paper --workspace /data/pfseg

Reads results/NAME/<network>/fold_<F>/{validation/summary.json, validation/timings.json,
train_summary.json}; prints the table as Markdown and writes results/NAME/comparison.md,
comparison.csv and comparison.png. A missing file shows as "-".
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pfseg_compare", description=__doc__, epilog=EXAMPLES)
    parser.add_argument("name", metavar="NAME", help="dataset name (results/NAME)")
    parser.add_argument("-f", "--folds", nargs="+", default=["0"], metavar="FOLD",
                        help="fold(s): 0-4, all, paper, paper622; several are pooled (default: 0)")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    results_dir = Workspace.resolve(args.workspace).results(args.name)
    if not results_dir.is_dir():
        raise UserError(f"{results_dir}: no results for dataset {args.name!r} (train a network first)")
    setup_logging(results_dir / "pfseg_compare.log", args.verbose)
    print(compare(results_dir, args.folds), end="")
    return 0


console = entry_point(main)

if __name__ == "__main__":
    console()
