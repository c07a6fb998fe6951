"""Handing a trained model on: export a results network folder as a package, install one.

- `build`: `export_model`, a results network folder -> a model package zip (what
  `pfseg_export_model` runs), in the pytorch (safetensors), onnx or torchscript format.
- `model_card`: the model card, JSON and Markdown.
- `install`: `install_model`, a package -> `results/NAME/NETWORK[__VARIANT]` of a workspace
  (what `pfseg_install_model` runs).

The package format and its safe reading are `model_package/`, one layer below inference.
"""
