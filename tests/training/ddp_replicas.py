"""Run under torchrun by test_train_ddp.py: 2 DDP iterations on CPU (gloo), then each rank saves
its weights and the hashes of the batches it trained on.

Usage: torchrun --standalone --nproc_per_node 2 ddp_replicas.py WORKSPACE OUT
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

from pfseg_pipeline.networks.registry import build_network, network_spec
from pfseg_pipeline.plans import load_plans
from pfseg_pipeline.training import distributed as ddp
from pfseg_pipeline.training.data_loader import build_training_batches
from pfseg_pipeline.training.rng import seed_everything
from pfseg_pipeline.training.schedules import PolyDecay
from pfseg_pipeline.training.trainer import Trainer, TrainOptions
from pfseg_pipeline.training.transforms import TrainingInputs


class Recording:
    """Passes batches through and remembers a hash of each."""

    def __init__(self, stream):
        self.stream, self.hashes = stream, []

    def set_epoch(self, epoch):
        self.stream.set_epoch(epoch)

    def __next__(self):
        batch = next(self.stream)
        self.hashes.append(hashlib.sha256(batch["image"].tobytes()).hexdigest())
        return batch

    def close(self):
        self.stream.close()


def main(workspace: Path, out: Path) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    ctx = ddp.init_distributed(rank, world, int(os.environ["LOCAL_RANK"]), "cpu")
    torch.set_num_threads(1)
    plans = load_plans(workspace / "preprocessed" / "Tiny" / "plans.json")
    seed_everything(100 + rank)  # different initial weights per rank: DDP must broadcast rank 0's
    network = build_network("pfseg", plans)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    stream = Recording(build_training_batches(plans, workspace / "preprocessed" / "Tiny" / "cases",
                                              ["case_00", "case_01", "case_02", "case_03"],
                                              TrainingInputs.for_network("pfseg"), 1, 0, seed=3, rank=rank))
    options = TrainOptions(epochs=1, iterations_per_epoch=2, grad_clip=plans.training.grad_clip,
                           progress_bar=False, plot=False)
    loss = network_spec("pfseg").make_loss(plans, "full")
    trainer = Trainer(network, loss, stream, None, optimizer, PolyDecay(optimizer, 2, 0.9),
                      torch.device("cpu"), out / "fold", plans, options, {"network": "pfseg"}, ctx)
    trainer.fit()
    torch.save(network.state_dict(), out / f"rank{rank}.pt")
    (out / f"rank{rank}.json").write_text(json.dumps({"batches": stream.hashes,
                                                      "losses": trainer.history[-1]}))
    ddp.shutdown(ctx)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
