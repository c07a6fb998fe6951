"""What a model package is, and how to read one safely (the layer below inference).

- `manifest`: `pfseg_model.json`, what a package holds (format, network, folds, each file's
  size and SHA-256), and the names of its members.
- `archive`: writing a package zip, and checking and unpacking one (no absolute paths, no `..`,
  no links, no pickle, size and compression-ratio limits).
- `weights`: inference-only weights (training-only modules left out) in safetensors.

Making packages (`pfseg_export_model`) and installing them is `sharing/`; predicting with one
is `inference.packaged` (through `inference.predictor.load_models`).
"""
