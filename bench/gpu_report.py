"""Turn gpu_check.json (bench/gpu_check.py) into the `gpu_check` section of docs/BENCHMARKS.md.

    python -m bench.gpu_report gpu_check_out/gpu_check.json   # the section from a GPU run
    python -m bench.gpu_report --no-gpu                       # the section saying no GPU was available
    python -m bench.gpu_report FILE --no-write                # print only

The section is written through `bench.__main__.write_page`, so the other sections are kept.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

GiB = 2**30
SECTION = "gpu_check"
TITLE = "GPU check: memory model, training and inference speed on a GPU"
HOW_TO = """How to run it (on a machine with one CUDA GPU, Python with torch and numpy; nothing to install,
no network needed), from the repository root:

```
bash bench/gpu_check.sh     # on the GPU machine: about 5 minutes on an H100; writes $OUT/gpu_check.json
python -m bench.gpu_report gpu_check_out/gpu_check.json   # here: this section from the JSON
```

`PYTHONPATH=. python -m bench.gpu_check --dry-run` runs the same code on the CPU at tiny shapes
in seconds (tests/bench/test_gpu_check.py does, with nibabel, SimpleITK, batchgenerators and MedPy,
absent on the GPU machine, blocked from import).
"""
WHAT = """What it measures:

- **Memory model**: the peak predicted by `planners/memory.py` (traced tensor bytes, and with the
  stated allowance) against `torch.cuda.max_memory_allocated` / `max_memory_reserved` of a real
  training step (forward_train, loss, backward, Adam; fp16 autocast + GradScaler, gradient
  clipping, cuDNN benchmark: as the trainer runs), plus the device's own count
  (`torch.cuda.mem_get_info`, which includes the CUDA context), for PFSeg, ResUNet3D and HDC at
  three shapes/batches each; from these, the allowance factor and context bytes to record in
  `planners/memory.py`.
- **Training speed**: steps per second with mixed precision at the default BraTS plan (the real
  planner on a BraTS-like fingerprint, 240x240x155, four modalities, 11 GiB budget) and at the
  paper preset (128x192x192, T2, WT), PFSeg and ResUNet3D; random batches already on the GPU
  (the data loader is measured separately, in `loader_speed`). The default plan's also with
  weights and batch channels-last, the trainer's layout on a CPU, to see whether a GPU gains from it.
- **Inference**: seconds per case at 240x240x155 and on the paper's 128x192x192 grid, PFSeg whole
  volume vs the ResUNet3D Gaussian sliding window (the plan's patch, step 0.5), network only and
  end to end (host float32 array -> GPU -> padding -> prediction -> probabilities on the host ->
  threshold). NIfTI reading and writing are excluded: nibabel is absent on the GPU machine.
"""


def _gib(n) -> str:
    return "-" if n is None else f"{n / GiB:.2f}"


def _shape(s) -> str:
    return "x".join(map(str, s))


def markdown(results: dict) -> str:
    """The section body (without its '## ' title) from gpu_check's results."""
    env = results.get("environment", {})
    where = env.get("gpu") or env.get("device", "?")
    lines = []
    if env.get("dry_run"):
        lines += ["**Dry run on the CPU at tiny shapes: these figures only show that the script works.**", ""]
    lines += [f"Run {env.get('date_utc', '?')} on {where}"
              + (f" ({_gib(env['gpu_memory_bytes'])} GiB)" if env.get("gpu_memory_bytes") else "")
              + f"; torch {env.get('torch')}, CUDA {env.get('cuda', '-')}, cuDNN {env.get('cudnn', '-')}, "
              f"Python {env.get('python')}; `bash bench/gpu_check.sh` "
              f"({results.get('seconds', {}).get('total', '?')} s).", ""]
    plans = results.get("plans", {})
    for key, name in (("default", "Default BraTS plan"), ("paper", "Paper preset")):
        p = plans.get(key)
        if p:
            lines.append(f"- {name}: HR {_shape(p['hr_shape_zyx'])} (z y x), "
                         f"LR scale {_shape(p['lr_scale_zyx'])}, guidance {_shape(p['guidance_patch_zyx'])}, "
                         f"batch {p['batch_size']}, PFSeg branches {p.get('pfseg_branches', 'full')}, "
                         f"{len(p['modalities'])} channel(s), target {p['target']}; baseline patch "
                         f"{_shape(p['baseline_patch_zyx'])} batch {p['baseline_batch_size']}.")
    lines.append("")

    mem = results.get("memory", {})
    if mem.get("rows"):
        a = results.get("allowance", {})
        lines += ["### Memory model vs a real training step (mixed precision)", "",
                  f"Allowance in use: x{a.get('factor')} + {_gib(a.get('context_bytes'))} GiB context. "
                  "Ratios are measured / predicted traced bytes.", "",
                  "| network | input (z y x) | batch | predicted traced GiB | predicted + allowance GiB "
                  "| max allocated GiB | max reserved GiB | device used GiB | allocated / traced "
                  "| reserved / traced |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in mem["rows"]:
            # PFSeg's row where it is not the whole method (the default plan's segmentation network)
            name = r["network"] + (f" ({r['ablation']})" if r.get("ablation", "full") != "full" else "")
            lines.append(f"| {name} | {_shape(r['shape_zyx'])} | {r['batch']} | "
                         f"{_gib(r['predicted_tensor_bytes'])} | {_gib(r['predicted_bytes'])} | "
                         f"{_gib(r['allocated_bytes'])} | {_gib(r['reserved_bytes'])} | "
                         f"{_gib(r.get('device_used_bytes'))} | {r['ratio_allocated']:.3f} | "
                         f"{r['ratio_reserved']:.3f} |")
        c = mem.get("calibration", {})
        if c:
            lines += ["", f"Calibration: reserved / traced at most {c['measured_factor_max']:.3f} "
                      f"(allocated / traced median {c['measured_factor_allocated_median']:.3f}, max "
                      f"{c['measured_factor_allocated_max']:.3f}); context and other non-PyTorch memory "
                      f"at most {_gib(c.get('measured_context_bytes_max'))} GiB. Suggested allowance: "
                      f"x{c['suggested_factor']:.2f} + {_gib(c.get('suggested_context_bytes'))} GiB "
                      f"(in use: x{c['current_factor']} + {_gib(c['current_context_bytes'])} GiB, which "
                      f"covers {c['current_allowance_covers']} rows' reserved + context)."]
        lines.append("")

    speed = results.get("speed", {})
    if speed.get("rows"):
        lines += ["### Training steps per second (mixed precision, random batches on the device)", "",
                  "| plan | network | layout | input (z y x) | batch | s / step | steps / s "
                  "| peak allocated GiB |",
                  "|---|---|---|---|---:|---:|---:|---:|"]
        for r in speed["rows"]:
            layout = "channels-last" if r.get("channels_last") else "contiguous"
            lines.append(f"| {r['plan']} | {r['network']} | {layout} | {_shape(r['shape_zyx'])} | "
                         f"{r['batch']} | "
                         f"{r['seconds_per_step']:.3f} | {r['steps_per_second']:.2f} | "
                         f"{_gib(r.get('peak_allocated_bytes'))} |")
        lines.append("")

    inf = results.get("inference", {})
    if inf.get("rows"):
        lines += ["### Prediction time per case", "",
                  "| case | network | input (C z y x) | inference | forward passes | network s "
                  "| end-to-end s | peak allocated GiB |",
                  "|---|---|---|---|---:|---:|---:|---:|"]
        for r in inf["rows"]:
            lines.append(f"| {r['case']} | {r['network']} | {_shape(r['input_shape_czyx'])} | "
                         f"{r['inference']} | {r['forward_passes']} | {r['network_seconds']:.3f} | "
                         f"{r['end_to_end_seconds']:.3f} | {_gib(r.get('peak_allocated_bytes'))} |")
        for case, ratio in inf.get("ratios", {}).items():
            lines.append("")
            lines.append(f"{case}: PFSeg is {ratio['network']:.1f}x faster in the network and "
                         f"{ratio['end_to_end']:.1f}x end to end (ResUNet3D / PFSeg).")
        lines.append("")
    for note in results.get("notes", []):
        lines.append(f"Note: {note}")
    if results.get("errors"):
        lines += ["", "Failed measurements:"]
        lines += [f"- {e['what']}: {e['error'].splitlines()[0][:300]}" for e in results["errors"]]
    return "\n".join(lines).rstrip() + "\n"


def no_gpu_markdown(date: str | None = None) -> str:
    date = date or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    return (f"**Not run yet: no GPU machine was available on {date}.** The figures of this section "
            "come from one run of the prepared check on a GPU; until then the memory model's allowance "
            "in `planners/memory.py` is the stated, uncalibrated one, and every speed figure on this "
            "page is from a CPU.\n\n" + HOW_TO + "\n" + WHAT)


def section(results: dict | None) -> str:
    body = markdown(results) if results is not None else no_gpu_markdown()
    return f"## {TITLE}\n\n{body.rstrip()}\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("json", nargs="?", help="gpu_check.json written by bench/gpu_check.sh")
    parser.add_argument("--no-gpu", action="store_true", help="write the section saying no GPU was available")
    parser.add_argument("--no-write", action="store_true", help="print, do not update docs/BENCHMARKS.md")
    args = parser.parse_args(argv)
    if not args.json and not args.no_gpu:
        parser.error("give gpu_check.json or --no-gpu")
    results = None if args.no_gpu else json.loads(Path(args.json).read_text())
    text = section(results)
    print(text)
    if not args.no_write:
        from bench.__main__ import PAGE, write_page

        write_page({SECTION: text})
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
