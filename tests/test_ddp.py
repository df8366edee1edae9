"""Two-process DDP training on CPU (gloo): both ranks end with identical weights."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from training_data import make_training_roots, tiny_plans


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, roots, out_dir: str, tests_dir: str) -> None:
    sys.path.insert(0, tests_dir)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    from suprem_auto.training.run import build_trainer, train_fold

    trainer = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False,
                            overrides=dict(num_epochs=1, iters_per_epoch=3, val_iters_per_epoch=1, num_workers=0,
                                           batch_size=2))
    trainer.initialize()
    initial = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    train_fold(trainer, run_validation=False)
    torch.save({"initial": initial, "final": trainer.network.state_dict(),
                "batch": trainer.global_batch_size, "world": trainer.dist.world_size},
               Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.slow  # two fresh interpreters importing torch + MONAI: ~60 s on the shared 2-core machine
def test_two_rank_gloo_training_keeps_ranks_identical(tmp_path: Path):
    roots = make_training_roots(tmp_path, 5, tiny_plans(patch_size=(16, 16, 16), features=(4, 8, 16)))
    mp.spawn(_rank_main, args=(2, _free_port(), roots, str(tmp_path), str(Path(__file__).parent)), nprocs=2,
             join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    for key in r0["final"]:
        assert torch.equal(r0["final"][key], r1["final"][key]), key
    changed = [k for k in r0["final"] if not torch.equal(r0["final"][k], r0["initial"][k])]
    assert changed  # training did update the weights
    ckpt = torch.load(next(roots.results.rglob("checkpoint_final.pth")), weights_only=True)
    assert all(torch.equal(ckpt["network_weights"][k], r0["final"][k]) for k in r0["final"])
