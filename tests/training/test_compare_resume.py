"""bench/nnunet_compare.py's pfseg trainings cross a session's end: a training stopped part-way
resumes from its latest checkpoint (same network, epochs, iterations and seed), anything else
starts over."""

from __future__ import annotations

import json


def test_a_stopped_comparison_training_resumes_and_another_starts_over(tmp_path, workspace, monkeypatch):
    from bench import nnunet_compare

    monkeypatch.setattr(nnunet_compare, "NAME", "Tiny")      # the tiny workspace's dataset
    first = nnunet_compare._pfseg_train(workspace.root, "pfseg", 1, 1, 7, tmp_path / "first.log")
    assert first["resumed"] is False and first["iterations"] == 1
    assert first["compute"]["device"] == "cpu" and first["compute"]["torch"]   # the kernels, recorded
    assert not (tmp_path / "first.started.json").exists()            # done: no marker left

    # a 2-epoch training of the same network and seed stopped after its first epoch: its marker
    # and the latest checkpoint (epoch 1 done) are there; the rerun trains the second epoch only
    stopped = {"network": "pfseg", "epochs": 2, "iterations": 1, "seed": 7}
    (tmp_path / "second.started.json").write_text(json.dumps(stopped))
    (tmp_path / "second.log").write_text("the part before the stop\n")
    second = nnunet_compare._pfseg_train(workspace.root, "pfseg", 2, 1, 7, tmp_path / "second.log")
    log = (tmp_path / "second.log").read_text()
    assert second["resumed"] is True and second["iterations"] == 2
    assert log.startswith("the part before the stop\n") and "resuming from" in log and "at epoch 1" in log
    assert not (tmp_path / "second.started.json").exists()

    # another seed's marker does not match: the folder is removed and the training starts over
    (tmp_path / "third.started.json").write_text(json.dumps({**stopped, "seed": 8}))
    third = nnunet_compare._pfseg_train(workspace.root, "pfseg", 2, 1, 7, tmp_path / "third.log")
    assert third["resumed"] is False and "resuming from" not in (tmp_path / "third.log").read_text()
