"""pfseg_make_synthetic: write a BraTS-layout dataset of synthetic cases."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from pfseg_pipeline.cli.common import ArgumentParser, add_common_args, entry_point, setup_logging
from pfseg_pipeline.data.synthetic import ANATOMIES, write_dataset
from pfseg_pipeline.paths import template_cache_dir

log = logging.getLogger("pfseg.make_synthetic")

EXAMPLES = """\
Writes OUT/BraTS20_Training_001/BraTS20_Training_001_{t1,t1ce,t2,flair,seg}.nii.gz and so on:
LPS axes like real BraTS files, labels 1 (necrosis / non-enhancing core), 2 (edema),
4 (enhancing). Case k depends only on (--seed, k), so the same case comes out whatever --cases is.

Two anatomies:
  blobs   a made-up brain of any --shape at 1 mm (fast; the unit tests' data)
  mni152  the MNI152 2009 brain template, warped per case, gliomas grown along white matter,
          on the BraTS grid (240 x 240 x 155 mm) at --spacing 1, 2 or 4 mm. The template ships
          in the nilearn wheel on PyPI: fetched once (pip download, 11.5 MB, sha256 pinned) into
          $PFSEG_CACHE (default ~/.cache/pfseg_pipeline); nilearn itself is never installed.

examples:
  pfseg_make_synthetic raw/brain --anatomy mni152 --spacing 4 --cases 20 -np 2   # ~0.15 s a case
  pfseg_make_synthetic raw/brain --anatomy mni152 --cases 100 -np 8              # 1 mm BraTS size
  pfseg_make_synthetic raw/synth --cases 40 --shape 96 96 64     # blobs: a small fast dataset
  pfseg_make_synthetic raw/test --cases 10 --start-index 101     # a separate test set
  pfseg_make_synthetic raw/synth --cases 5 --seed 7 --overwrite
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pfseg_make_synthetic",
                            description="Write a BraTS 2020-layout dataset of synthetic brain-tumour cases.",
                            epilog=EXAMPLES)
    parser.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    parser.add_argument("--anatomy", choices=ANATOMIES, default="blobs",
                        help="blobs (default: a made-up brain) or mni152 (the MNI152 template)")
    parser.add_argument("--cases", type=int, default=20, metavar="N", help="number of cases (default 20)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="blobs only: volume shape as the NIfTI stores it, x y z (default 240 240 155)")
    parser.add_argument("--spacing", type=int, choices=(1, 2, 4), default=1, metavar="MM",
                        help="mni152 only: voxel size in mm, 1, 2 or 4 (default 1: 240x240x155 voxels; "
                             "2: 120x120x78; 4: 60x60x39)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--start-index", type=int, default=1, metavar="I",
                        help="number of the first case id, BraTS20_Training_III (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace case folders that exist")
    parser.add_argument("-np", "--workers", type=int, default=1, metavar="N",
                        help="cases generated in parallel processes (default 1)")
    add_common_args(parser, workspace=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    setup_logging(out / "make_synthetic.log", verbose=args.verbose)
    start = time.perf_counter()
    shape = tuple(args.shape) if args.shape is not None else None
    cases = write_dataset(out, args.cases, shape, seed=args.seed, start_index=args.start_index,
                          overwrite=args.overwrite, workers=args.workers, progress=True,
                          anatomy=args.anatomy, spacing_mm=args.spacing,
                          template_cache=template_cache_dir() if args.anatomy == "mni152" else None)
    log.info("wrote %d case(s) to %s in %.1f s", len(cases), out, time.perf_counter() - start)
    return 0


console = entry_point(main)

if __name__ == "__main__":
    console()
