"""pfseg_install_model: unpack a model package into the workspace, ready for pfseg_predict -d."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pfseg_pipeline.cli.common import ArgumentParser, add_common_args, entry_point, setup_logging
from pfseg_pipeline.paths import Workspace

log = logging.getLogger(__name__)

EXAMPLES = """\
examples:
  pfseg_install_model pfseg_brats.zip                  # -> results/<its dataset>/pfseg
  pfseg_install_model pfseg_brats.zip -d BraTS_shared --workspace /data/pfseg
  pfseg_predict -i scans -o pred -d BraTS_shared       # then predict with it

The package (from pfseg_export_model) is checked before anything is written: no absolute
paths, no '..', no links, no pickle, every file listed in its pfseg_model.json with its size and
SHA-256, size and compression-ratio limits. A refused package is one line and exit 2, and
leaves nothing behind. It unpacks to results/NAME/NETWORK[__VARIANT]; an existing folder is
replaced only with --force.
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pfseg_install_model", description=__doc__, epilog=EXAMPLES)
    parser.add_argument("package", metavar="ZIP", help="a model package (pfseg_export_model)")
    parser.add_argument("-d", "--dataset", default=None, metavar="NAME",
                        help="dataset name to install under (default: the one it was trained on)")
    parser.add_argument("--force", action="store_true", help="replace a model already installed there")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pfseg_pipeline.sharing.install import install_model

    args = build_parser().parse_args(argv)
    setup_logging(None, args.verbose)
    installed = install_model(Path(args.package), Workspace.resolve(args.workspace), args.dataset, args.force)
    m = installed.manifest
    variant = f" --variant {m.variant}" if m.variant else ""
    print(f"installed {m.network} ({m.format}, fold(s) {', '.join(m.folds)}, checkpoint_{m.checkpoint}) in "
          f"{installed.path}\npredict with: pfseg_predict -i IN -o OUT -d {installed.dataset} "
          f"--network {m.network}{variant}")
    return 0


console = entry_point(main)

if __name__ == "__main__":
    console()
