"""pfseg_install_model: a package into a workspace, predicted from with -d like a trained network."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from pfseg_pipeline.cli import install_model, predict
from pfseg_pipeline.cli.common import run
from pfseg_pipeline.model_package.manifest import MANIFEST
from pfseg_pipeline.sharing.build import export_model

from .conftest import NAME, make_workspace


def install(*args) -> int:
    return run(install_model.main, [str(a) for a in args])


def predicted(cases, out, *args) -> dict:
    assert run(predict.main, ["-i", str(cases), "-o", str(out), "--device", "cpu", "--no-progress",
                              *map(str, args)]) == 0
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(out.glob("*.nii.gz"))}


def test_an_installed_package_predicts_with_d_as_its_folder_did(workspace_with_model, cases_in, tmp_path,
                                                                capsys):
    root, model_dir = workspace_with_model
    package = export_model(model_dir, tmp_path / "tiny.zip").path
    elsewhere = tmp_path / "other_ws"
    assert install(package, "--workspace", elsewhere) == 0
    out = capsys.readouterr().out
    target = elsewhere / "results" / NAME / "pfseg"
    assert f"in {target}" in out and f"pfseg_predict -i IN -o OUT -d {NAME} --network pfseg" in out
    assert (target / MANIFEST).is_file() and (target / "fold_1" / "checkpoint_final.safetensors").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["pfseg"]      # no temporary folder left
    got = predicted(cases_in, tmp_path / "installed", "-d", NAME, "--workspace", elsewhere)
    expected = predicted(cases_in, tmp_path / "folder", "--model-dir", model_dir)
    assert got.keys() == expected.keys() and all(np.array_equal(got[k], expected[k]) for k in got)


def test_an_installed_model_is_replaced_only_with_force(tmp_path, capsys):
    first = make_workspace(tmp_path / "a", variant="us", seed=0)
    second = make_workspace(tmp_path / "b", variant="us", seed=7)
    one = export_model(first, tmp_path / "one.zip").path
    two = export_model(second, tmp_path / "two.zip").path
    ws = tmp_path / "ws"
    assert install(one, "--workspace", ws, "-d", "Shared") == 0
    target = ws / "results" / "Shared" / "pfseg__us"
    def digest():
        return json.loads((target / MANIFEST).read_text())["files"]["fold_0/checkpoint_final.safetensors"]

    first_digest = digest()
    capsys.readouterr()
    assert install(two, "--workspace", ws, "-d", "Shared") == 2
    assert f"{target}: already exists (--force replaces it)" in capsys.readouterr().err
    assert digest() == first_digest
    assert install(two, "--workspace", ws, "-d", "Shared", "--force") == 0
    assert digest() != first_digest
    assert sorted(p.name for p in target.parent.iterdir()) == ["pfseg__us"]
    assert install(two, "--workspace", ws, "-d", "../up") == 2
    assert "not a valid dataset name" in capsys.readouterr().err
