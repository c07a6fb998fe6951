"""pfseg_export_model: a trained network as one zip to hand on (a model package)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pfseg_pipeline.cli.common import ArgumentParser, add_common_args, entry_point, setup_logging
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.model_package.manifest import EXPORTABLE_CHECKPOINTS, FORMATS
from pfseg_pipeline.networks.registry import DEFAULT_NETWORK, network_spec
from pfseg_pipeline.paths import Workspace

log = logging.getLogger(__name__)

EXAMPLES = """\
examples:
  pfseg_export_model BraTS -o pfseg_brats.zip                        # pfseg, every fold, final
  pfseg_export_model BraTS -o resunet.zip --network resunet3d -f 0 1 --checkpoint best
  pfseg_export_model BraTS -o pfseg_onnx.zip --format onnx           # for ONNX Runtime
  pfseg_export_model BraTS -o pfseg_us.zip --variant us              # results/BraTS/pfseg__us

The package holds the folds' inference-only weights (--format pytorch: safetensors, the
training-only modules left out; onnx / torchscript: forward_infer with dynamic batch and spatial
axes), plans.json, dataset.json (no paths, no case list), the fingerprint and the
postprocessing choice when the network folder has them, a model card (MODEL_CARD.md,
model_card.json) and pfseg_model.json (every file's size and SHA-256). Use it with
`pfseg_predict --model-dir PACKAGE.zip`, `pfseg_install_model PACKAGE.zip` or
`pfseg_pipeline.api.load_model("PACKAGE.zip")`. TorchScript packages are for other runtimes
(libtorch, MONAI-style tools); pfseg predicts from pytorch and onnx packages.
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pfseg_export_model", description=__doc__, epilog=EXAMPLES)
    parser.add_argument("name", metavar="NAME", help="dataset name (results/NAME)")
    parser.add_argument("-o", "--output", required=True, metavar="ZIP", help="the package to write (*.zip)")
    parser.add_argument("--network", default=DEFAULT_NETWORK, help="network (default: %(default)s)")
    parser.add_argument("--variant", default=None, metavar="V", help="variant folder NETWORK__V")
    parser.add_argument("-f", "--folds", nargs="+", default=None, metavar="FOLD",
                        help="folds to ship (default: every fold with the checkpoint)")
    parser.add_argument("--checkpoint", choices=EXPORTABLE_CHECKPOINTS, default=EXPORTABLE_CHECKPOINTS[0],
                        help="checkpoint_<kind>.pt of each fold (default: %(default)s)")
    parser.add_argument("--format", choices=FORMATS, default=FORMATS[0], dest="fmt",
                        help="pytorch: safetensors weights (default); onnx: ONNX graphs for ONNX Runtime "
                             "(needs pip install 'pfseg[onnx]'); torchscript: TorchScript for other runtimes")
    parser.add_argument("--overwrite", action="store_true", help="replace the zip when it exists")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pfseg_pipeline.sharing.build import export_model

    args = build_parser().parse_args(argv)
    network_spec(args.network)   # an unknown name: one line listing the networks
    setup_logging(None, args.verbose)
    workspace = Workspace.resolve(args.workspace)
    network_dir = workspace.network_dir(args.name, args.network, args.variant)
    if not network_dir.is_dir():
        raise UserError(f"{network_dir}: no trained {args.network} for dataset {args.name!r} "
                        "(train it first, or check --network / --variant / --workspace)")
    fingerprint = workspace.preprocessed(args.name) / "fingerprint.json"   # when the folder has none
    exported = export_model(network_dir, Path(args.output), args.folds, args.checkpoint, args.fmt,
                            args.overwrite, fingerprint=fingerprint)
    m = exported.manifest
    print(f"{exported.path}: {m.network}, fold(s) {', '.join(m.folds)}, checkpoint_{m.checkpoint}, "
          f"{m.format}, {exported.bytes / 1e6:.1f} MB ({m.inference_parameters / 1e6:.2f} M parameters at "
          "inference)")
    return 0


console = entry_point(main)

if __name__ == "__main__":
    console()
