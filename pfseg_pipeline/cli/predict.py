"""pfseg_predict: segment every case of a folder of scans (or one case's files) with a trained network."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path

from pfseg_pipeline import locks
from pfseg_pipeline.checkpoints import CHECKPOINT_KINDS
from pfseg_pipeline.cli.common import (
    EXIT_INTERNAL,
    ArgumentParser,
    add_common_args,
    entry_point,
    setup_logging,
)
from pfseg_pipeline.data.case_inputs import cases_from_paths, parse_channels, stacked_order
from pfseg_pipeline.data.image_io import OUTPUT_FORMATS
from pfseg_pipeline.data.labels import SCHEMES, get_scheme
from pfseg_pipeline.data.layouts import Case
from pfseg_pipeline.devices import DEVICE_CHOICES, resolve_device
from pfseg_pipeline.errors import UserError
from pfseg_pipeline.evaluation.report import SCAN_PREFERENCE, write_preview
from pfseg_pipeline.inference.backends import BACKENDS, backend_device
from pfseg_pipeline.inference.distribution import load_training_distribution
from pfseg_pipeline.inference.pipeline import check_folders, output_path, predict_folder
from pfseg_pipeline.inference.postprocessing import POSTPROCESSING_FILE
from pfseg_pipeline.inference.predictor import Predictor, load_models
from pfseg_pipeline.model_package.archive import is_package_zip, unpacked
from pfseg_pipeline.networks.registry import DEFAULT_NETWORK, network_spec
from pfseg_pipeline.paths import Workspace

log = logging.getLogger(__name__)

LOG_FILE = "pfseg_predict.log"
LOCKED = "prediction output folder"   # two runs never write one output folder at once
EXAMPLES = """\
examples:
  pfseg_predict -i BraTS2020_ValidationData -o predictions -d BraTS
  pfseg_predict -i scans -o pred_resunet -d BraTS --network resunet3d -f 0 1 2
  pfseg_predict -i scans -o pred -d BraTS --no-tta               # one pass per case: 8x faster
  pfseg_predict -i scans -o pred -d BraTS --network pfseg --variant us --checkpoint best
  pfseg_predict -i scans -o pred --model-dir /models/pfseg      # a copied results folder
  pfseg_predict -i P01_t1.mha P01_t1ce.mha P01_t2.mha P01_flair.mha -o pred -d BraTS --preview
  pfseg_predict -i BRATS_485.nii.gz -o pred -d MSD --channels FLAIR T1w T1gd T2w   # one 4D file
  pfseg_predict -i scans -o pred --model-dir pfseg_brats.zip    # a model package (pfseg_export_model)
  pfseg_predict -i scans -o pred -d BraTS --backend onnxruntime # the networks on ONNX Runtime (CPU)
  pfseg_predict -i scans -o pred -d BraTS --backend openvino    # ... on OpenVINO (CPU; fastest there)

IN: a folder of cases: BraTS case folders (<case>/<case>_<modality>.nii.gz), an nnU-Net raw or MSD
dataset (imagesTr/), or a flat folder of <case>_<modality> / <case>_000K files; one case's
folder (its files named <modality>, e.g. t1.nii.gz, FLAIR.mha); the files of one case; or one 4D
file with the modalities stacked (order: --channels, else the model's training data's, else the
model's modality order). Images: .nii, .nii.gz, .mha, .nrrd; labels are not needed.
OUT gets one <case> label map per case on the case's own grid, in its input's format (or
--output-format), label_scheme.json (the label values written), timings.json (with each case
checked against the training cases: one warning line for a case unlike them, e.g. swapped
modalities or another resolution) and pfseg_predict.log; --preview adds preview.html. Cases whose
output exists are skipped unless --overwrite. A bad case is reported in one line and skipped; the
command then exits 2 after predicting the others. A second pfseg_predict into the same OUT while
one runs is refused with one line naming the running one.

The model: results/NAME/NETWORK[__VARIANT] of the workspace, or --model-dir DIR, a folder holding
plans.json, dataset.json and fold_*/checkpoint_{final,best,latest}.pt (no preprocessed data
needed), or a model package zip from pfseg_export_model (checked, then unpacked to a temporary
folder). Default folds: every fold with the requested checkpoint; their probabilities are
averaged. --backend onnxruntime exports each fold to ONNX when loading (a package of format onnx
holds the graphs) and runs them with ONNX Runtime on the CPU (pip install 'pfseg[onnx]');
--backend openvino runs the same graphs with OpenVINO on the CPU (pip install 'pfseg[openvino]').
When the folder holds postprocessing.json (pfseg_find_postprocessing), its rules are applied to
every label map (--no-postprocessing: not); timings.json records which.
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pfseg_predict", description=__doc__, epilog=EXAMPLES)
    parser.add_argument("-i", "--input", required=True, nargs="+", metavar="IN",
                        help="a folder of cases, one case's folder, the files of one case, or one 4D file")
    parser.add_argument("--channels", nargs="+", default=None, metavar="MOD",
                        help="the modality of each file given, or of each volume of a 4D file, in order "
                             "(t1 t1ce t2 flair, or spellings such as T1w T1Gd T2w FLAIR)")
    parser.add_argument("--output-format", choices=("auto", *OUTPUT_FORMATS), default="auto",
                        help="format of the label maps (default: the input's)")
    parser.add_argument("--preview", action="store_true",
                        help="also write preview.html: per case three slices through the predicted tumour "
                             "with its WT/TC/ET contours over the scan")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="folder for the label maps")
    parser.add_argument("-d", "--dataset", default=None, metavar="NAME",
                        help="dataset name in the workspace (not needed with --model-dir)")
    parser.add_argument("--network", default=None,
                        help=f"network to predict with (default: {DEFAULT_NETWORK}; with --model-dir, the "
                             "one its checkpoints hold)")
    parser.add_argument("--variant", default=None, metavar="V",
                        help="variant folder NETWORK__V (e.g. an ablation row)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, metavar="FOLD",
                        help="folds to ensemble (0-4, all, paper...; default: every trained fold)")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_KINDS, default=None,
                        help=f"checkpoint_<kind>.pt to load (default: {CHECKPOINT_KINDS[0]}; a "
                             "package's own)")
    parser.add_argument("--model-dir", default=None, metavar="DIR",
                        help="a results network folder (plans.json + dataset.json + fold_*), anywhere, "
                             "or a model package zip")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="torch (eager PyTorch; default), onnxruntime (CPU; the default for an onnx "
                             "package) or openvino (CPU)")
    parser.add_argument("--device", default="auto", help=f"{DEVICE_CHOICES} (default: auto)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="mirror test-time augmentation over the axes training flipped (plans.json "
                             "training.augmentation.mirror_axes; 8 flips, 8x slower, for all three); "
                             "--no-tta: one network pass per case. Default: the model's plans.json "
                             "training.tta (on in the default and demo presets, off in the paper's)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write <case>.npz with the region probabilities (float16) on the "
                             "source grid")
    parser.add_argument("--overwrite", action="store_true", help="predict cases whose output exists")
    parser.add_argument("--workers", type=int, default=2, metavar="N",
                        help="threads reading and preprocessing ahead; at most N cases in memory "
                             "(default: %(default)s; 0: none)")
    parser.add_argument("--exclude", nargs="+", default=(), metavar="CASE", help="cases to leave out")
    parser.add_argument("--no-postprocessing", action="store_true",
                        help=f"do not apply the model folder's {POSTPROCESSING_FILE} "
                             "(written by pfseg_find_postprocessing)")
    parser.add_argument("--label-scheme", default=None, choices=sorted(SCHEMES),
                        help="label values to write (default: the scheme the model was trained with)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(parser)
    return parser


def model_dir_from_args(args) -> Path:
    if args.model_dir:
        if args.variant:
            raise UserError("--variant selects a folder in the workspace; with --model-dir name the "
                            "variant's folder itself")
        return Path(args.model_dir)
    if not args.dataset:
        raise UserError("pfseg_predict: give -d NAME (a dataset of the workspace) or --model-dir DIR")
    workspace = Workspace.resolve(args.workspace)
    return workspace.network_dir(args.dataset, args.network or DEFAULT_NETWORK, args.variant)


def main(argv: Sequence[str] | None = None) -> int:
    with contextlib.ExitStack() as stack:   # holds a package's temporary folder until the end
        return _main(argv, stack)


def _main(argv: Sequence[str] | None, stack: contextlib.ExitStack) -> int:
    args = build_parser().parse_args(argv)
    if args.workers < 0:
        raise UserError(f"--workers must be 0 or more, got {args.workers}")
    if args.network is not None:
        network_spec(args.network)  # an unknown name: one line listing the networks
    setup_logging(None, args.verbose)
    inputs, output_dir = [Path(p) for p in args.input], Path(args.output)
    input_dir = inputs[0] if len(inputs) == 1 and inputs[0].is_dir() else None
    if len(inputs) == 1 and not inputs[0].exists():
        check_folders(inputs[0], output_dir)  # reports the missing input, creates nothing
    model_dir = model_dir_from_args(args)
    if is_package_zip(model_dir):   # unpacked for the whole run: every reader sees a folder
        model_dir = stack.enter_context(unpacked(model_dir))
    device = resolve_device(backend_device(args.backend, args.device))
    loaded = load_models(model_dir, args.folds, args.checkpoint, device=device, network=args.network,
                         backend=args.backend, postprocessing=not args.no_postprocessing)
    found = cases_from_paths(inputs, loaded.plans.modalities, parse_channels(args.channels),
                             stacked_order(loaded.dataset), args.exclude)
    postprocessing = loaded.postprocessing   # postprocessing.json, unless --no-postprocessing
    check_folders(input_dir, output_dir)  # only now create OUT: a model error leaves no empty folder
    locks.check_free(output_dir, LOCKED)  # a refused run writes no line into the other's log
    setup_logging(output_dir / LOG_FILE, args.verbose)
    log.info("model %s: %s, fold(s) %s, checkpoint_%s, backend %s", args.model_dir or model_dir,
             loaded.network, ", ".join(loaded.folds), loaded.checkpoint, loaded.backend)
    if postprocessing is not None:
        log.info("postprocessing from %s: %s", Path(args.model_dir or model_dir) / POSTPROCESSING_FILE,
                 postprocessing.describe())
    else:
        log.info("no postprocessing (%s)", "--no-postprocessing" if args.no_postprocessing else
                 f"no {POSTPROCESSING_FILE} in the model folder; pfseg_find_postprocessing chooses one")
    predictor = Predictor.from_loaded(loaded, args.device, args.tta)
    scheme = get_scheme(args.label_scheme) if args.label_scheme else None
    with locks.exclusive(output_dir, LOCKED):
        report = predict_folder(None, output_dir, predictor=predictor, cases=found.cases,
                                problems=found.problems,
                                save_probabilities=args.save_probabilities, overwrite=args.overwrite,
                                workers=args.workers, exclude=args.exclude, label_scheme=scheme,
                                progress=not args.no_progress, output_format=args.output_format,
                                distribution=load_training_distribution(model_dir),
                                postprocessing=postprocessing)
        if args.preview:
            by_id = {c.case_id: c for c in found.cases}
            shown = [(c, output_path(output_dir, c, by_id.get(c), args.output_format), _scan(by_id.get(c)))
                     for c in [*report.skipped, *report.predicted]]
            write_preview(shown, output_dir,
                          scheme or loaded.plans.scheme, loaded.plans.target)
    if any(f.internal for f in report.failed):
        log.error("internal error in %d case(s): a bug in pfseg; the traceback is in %s",
                  sum(f.internal for f in report.failed), output_dir / LOG_FILE)
        return EXIT_INTERNAL
    if report.failed:
        raise UserError(f"{len(report.failed)} case(s) failed (see above); the other "
                        f"{len(report.predicted) + len(report.skipped)} are in {output_dir}")
    return 0


def _scan(case: Case | None) -> Case | None:
    """The case's background scan for the preview: its FLAIR, else the first modality it has."""
    if case is None:
        return None
    modality = next((m for m in SCAN_PREFERENCE if m in case.images), next(iter(case.images)))
    channels = {modality: case.channels[modality]} if modality in case.channels else {}
    return Case(case.case_id, {modality: case.images[modality]}, None, channels)


console = entry_point(main)

if __name__ == "__main__":
    console()
