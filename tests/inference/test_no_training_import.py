"""Inference never imports training code (DESIGN.md): a whole prediction in a fresh interpreter."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
import pfseg_pipeline.inference.sliding_window, pfseg_pipeline.inference.whole_volume
import pfseg_pipeline.inference.predictor, pfseg_pipeline.inference.export, pfseg_pipeline.inference.pipeline
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.cli.predict import main
from tests.inference.conftest import tiny_plans, write_case, write_model_dir

root = Path({root!r})
write_case(root / "in", "case_0", with_label=False)
write_model_dir(root / "model", tiny_plans(), "pfseg")
code = run(main, ["-i", str(root / "in"), "-o", str(root / "out"), "--model-dir", str(root / "model"),
                  "--device", "cpu", "--no-progress"])
assert code == 0, code
assert (root / "out" / "case_0.nii.gz").is_file()
print(",".join(sorted(m for m in sys.modules if m.split(".")[:2] == ["pfseg_pipeline", "training"])))
"""


def test_a_prediction_imports_no_training_module(tmp_path):
    script = SCRIPT.format(repo=str(REPO), root=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"training modules imported: {result.stdout.strip()}"
