# `make demo` and `make test` work on a fresh machine with only Python 3 on it.
# torch is installed first, pinned (an unpinned torch pulls a multi-GB CUDA build here);
# override with e.g. `make test TORCH_SPEC="torch==2.11.0"`.
# The [onnx] and [openvino] extras (onnx, onnxruntime, openvino: ~120 MB) are installed too, so
# `make test` checks the ONNX export and both of its backends; the test target fails if they are
# missing rather than skipping those tests.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pfseg-installed

.PHONY: test demo lint install clean-demo

$(STAMP): setup.py pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,onnx,openvino]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check pfseg_pipeline tests bench
	$(PY) -c "import onnx, onnxruntime, openvino, safetensors"
	$(PY) -m pytest -q

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

lint: $(STAMP)
	$(PY) -m ruff check pfseg_pipeline tests bench
