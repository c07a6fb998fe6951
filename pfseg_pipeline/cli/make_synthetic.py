"""pfseg_make_synthetic: write a BraTS-layout dataset of synthetic cases."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

from pfseg_pipeline.cli.common import ArgumentParser, entry_point, setup_logging
from pfseg_pipeline.data.synthetic import DEFAULT_SHAPE_XYZ, write_dataset

log = logging.getLogger("pfseg.make_synthetic")

EXAMPLES = """\
Writes OUT/BraTS20_Training_001/BraTS20_Training_001_{t1,t1ce,t2,flair,seg}.nii.gz and so on:
1 mm voxels, LPS axes like real BraTS files, labels 1 (necrosis), 2 (edema), 4 (enhancing).
Case k depends only on (--seed, k), so the same case comes out whatever --cases is.

examples:
  pfseg_make_synthetic raw/synth                                 # 20 cases of 240 240 155
  pfseg_make_synthetic raw/synth --cases 40 --shape 96 96 64     # a small fast dataset
  pfseg_make_synthetic raw/test --cases 10 --start-index 101     # a separate test set
  pfseg_make_synthetic raw/synth --cases 5 --seed 7 --overwrite
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="pfseg_make_synthetic",
                            description="Write a BraTS 2020-layout dataset of synthetic brain-tumour cases.",
                            epilog=EXAMPLES)
    parser.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    parser.add_argument("--cases", type=int, default=20, metavar="N", help="number of cases (default 20)")
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE_XYZ),
                        metavar=("X", "Y", "Z"),
                        help="volume shape as the NIfTI stores it, x y z (default 240 240 155)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--start-index", type=int, default=1, metavar="I",
                        help="number of the first case id, BraTS20_Training_III (default 1)")
    parser.add_argument("--overwrite", action="store_true", help="replace case folders that exist")
    parser.add_argument("-np", "--workers", type=int, default=1, metavar="N",
                        help="cases generated in parallel (default 1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    setup_logging(out / "make_synthetic.log", verbose=args.verbose)
    start = time.perf_counter()
    cases = write_dataset(out, args.cases, tuple(args.shape), seed=args.seed,
                          start_index=args.start_index, overwrite=args.overwrite,
                          workers=args.workers, progress=True)
    log.info("wrote %d case(s) to %s in %.1f s", len(cases), out, time.perf_counter() - start)
    return 0


console = entry_point(main)

if __name__ == "__main__":
    console()
