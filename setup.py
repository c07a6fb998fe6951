from setuptools import find_packages, setup

setup(
    name="pfseg",
    version="0.1.0",
    description="Self-configuring patch-free 3D brain-tumour segmentation (PFSeg, MICCAI 2021)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pfseg_pipeline", "pfseg_pipeline.*"]),
    install_requires=[
        # a range: the Makefile installs the pinned CPU build first (TORCH_SPEC); >=2.5 for the
        # memory tracker the planner uses
        "torch>=2.5",
        "numpy>=1.24",
        "batchgenerators>=0.25",
        "SimpleITK>=2.2",
        "nibabel>=5.0",
        "scikit-image>=0.21",
        "scipy>=1.10",
        "medpy>=0.5",
        "pandas>=2.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        # model packages: inference-only weights in a format whose reading runs no code
        "safetensors>=0.4",
    ],
    extras_require={
        "dev": ["pytest>=7", "ruff>=0.5"],
        # the reference the benchmarks measure against; 2.6.x with dynamic-network-architectures
        # <0.4 runs on the CPU torch (newer ones pull timm -> torchvision -> a CUDA torch)
        "bench": ["nnunetv2>=2.6,<2.7", "dynamic-network-architectures<0.4"],
        # ONNX export and the ONNX Runtime backend (tested with onnx 1.23.2, onnxruntime 1.32.0)
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],
        # the OpenVINO backend: the same ONNX graph on OpenVINO's CPU plugin (tested with 2026.4.1)
        "openvino": ["onnx>=1.16", "openvino>=2024.0"],
    },
    entry_points={
        "console_scripts": [
            "pfseg_make_synthetic=pfseg_pipeline.cli.make_synthetic:console",
            "pfseg_plan_and_preprocess=pfseg_pipeline.cli.plan_and_preprocess:console",
            "pfseg_train=pfseg_pipeline.cli.train:console",
            "pfseg_predict=pfseg_pipeline.cli.predict:console",
            "pfseg_evaluate=pfseg_pipeline.cli.evaluate:console",
            "pfseg_compare=pfseg_pipeline.cli.compare:console",
            "pfseg_find_postprocessing=pfseg_pipeline.cli.find_postprocessing:console",
            "pfseg_export_model=pfseg_pipeline.cli.export_model:console",
            "pfseg_install_model=pfseg_pipeline.cli.install_model:console",
        ],
    },
)
