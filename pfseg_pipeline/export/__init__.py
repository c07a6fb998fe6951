"""Export of a network's inference path (`forward_infer`) to ONNX and TorchScript, and an
ONNX Runtime runner.

- `graph`: `InferenceGraph`, `forward_infer` in a form that traces for every input shape.
- `rewrites`: equivalent forms of ConvTranspose3d and InstanceNorm3d for ONNX Runtime.
- `onnx_export`: `export_onnx` / `onnx_bytes` (needs the optional `onnx` package).
- `onnx_runtime`: `OnnxRunner`, the graph through ONNX Runtime on the CPU (needs `onnxruntime`).
- `torchscript_export`: `export_torchscript`, `load_torchscript`.

onnx and onnxruntime are an optional extra (`pip install 'pfseg[onnx]'`); nothing here imports
them until it is called.
"""
