"""Export of a network's inference path (`forward_infer`) to ONNX and TorchScript, and
runners of the ONNX graph (ONNX Runtime, OpenVINO).

- `graph`: `InferenceGraph`, `forward_infer` in a form that traces for every input shape.
- `rewrites`: equivalent forms of ConvTranspose3d and InstanceNorm3d for the exported graph.
- `onnx_export`: `export_onnx` / `onnx_bytes` (needs the optional `onnx` package).
- `onnx_runtime`: `OnnxRunner`, the graph through ONNX Runtime on the CPU (needs `onnxruntime`).
- `openvino_runtime`: `OpenVinoRunner`, the graph through OpenVINO on the CPU (needs `openvino`).
- `torchscript_export`: `export_torchscript`, `load_torchscript`.

onnx and onnxruntime are an optional extra (`pip install 'pfseg[onnx]'`), openvino another
(`pip install 'pfseg[openvino]'`); nothing here imports them until it is called.
"""
