"""The trainer imports (and trains) with only torch and numpy among the heavy dependencies: the GPU
machine has no batchgenerators, nibabel, SimpleITK or MedPy (FACTS.md)."""

from __future__ import annotations

from tests.gpu_machine import run_without_gpu_machine_absentees as _run_blocked


def test_the_trainer_imports_and_trains_without_the_data_stack(tmp_path):
    proc = _run_blocked(f"""
        import torch
        import pfseg_pipeline.training.trainer as trainer_module
        from pfseg_pipeline.data.labels import BRATS2020
        from pfseg_pipeline.networks.step import build_step
        from pfseg_pipeline.plans import GuidancePlan, NetworkPlan, PatchPlan, Plans
        from pfseg_pipeline.training.schedules import PolyDecay

        class Batches:  # a fixed batch, as a data loader would hand it over
            def __init__(self, batch): self.batch = batch
            def set_epoch(self, epoch): pass
            def __next__(self): return self.batch
            def close(self): pass

        plans = Plans("Tiny", ["t1", "t2"], BRATS2020.to_json(), [16, 16, 16], [1.0, 1.0, 1.0],
                      guidance=GuidancePlan([4, 4, 4]), network=NetworkPlan([4, 8, 8], [4, 8], 4),
                      patch_based=PatchPlan([8, 8, 8]))
        step = build_step("pfseg", plans, 1)
        options = trainer_module.TrainOptions(epochs=1, iterations_per_epoch=2, grad_clip=12.0,
                                              progress_bar=False, plot=False)
        schedule = PolyDecay(step.optimizer, 2, 0.9)
        trainer = trainer_module.Trainer(step.model, step.loss, Batches(step.batch), None, step.optimizer,
                                         schedule, torch.device("cpu"), {str(tmp_path)!r}, plans, options,
                                         {{"network": "pfseg"}})
        assert trainer.fit() is None
        blocked = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        assert not blocked, blocked
        print("trained", trainer.history[-1]["loss"])
    """)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trained" in proc.stdout
    assert (tmp_path / "checkpoint_final.pt").is_file()


def test_the_blocker_is_not_vacuous():
    """The same blocker does stop the data loader (it needs batchgenerators)."""
    proc = _run_blocked("import pfseg_pipeline.training.data_loader\n")
    assert proc.returncode != 0 and "absent on the GPU machine: batchgenerators" in proc.stderr
