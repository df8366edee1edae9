"""Training on real hippocampus cases: artifacts, resume, worker errors, freezing, loss, sampling, learning."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch

from training_data import DATASET, make_training_roots, read_metrics, tiny_plans

from suprem_auto.cli.train import main as train_main
from suprem_auto.training.data.cases import PreprocessedCases
from suprem_auto.training.data.sampler import PatchSampler
from suprem_auto.training.data.workers import DataWorkerError
from suprem_auto.training.ddp import DistributedContext, rank_batch_size, rank_forced_foreground
from suprem_auto.training.loss import DiceCELoss, deep_supervision_weights
from suprem_auto.training.run import build_trainer, train_fold
from suprem_auto.training.trainers import SupremTrainer

FAST = ["--iters_per_epoch", "2", "--val_iters", "1", "--num_workers", "1", "-device", "cpu"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """6 real cases preprocessed with a tiny hand plan (patch 16x24x16, 3-stage U-Net with 4-16 features)."""
    return make_training_roots(tmp_path_factory.mktemp("train"), 6,
                               tiny_plans(patch_size=(16, 24, 16), features=(4, 8, 16)))


def _root_flags(roots) -> list:
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]


def _fold_dir(roots, trainer: str, fold: str = "0") -> Path:
    return roots.results / DATASET / f"{trainer}__suprem_plans__3d_fullres" / f"fold_{fold}"


def _poly(epoch: int, epochs: int) -> float:
    return 0.01 * (1 - epoch / epochs) ** 0.9


def test_cli_run_writes_checkpoints_logs_and_validation(roots):
    trainer = "SupremTrainer_NoMirroring"
    assert train_main(["4", "3d_fullres", "0", "-tr", trainer, "--epochs", "2", *FAST, *_root_flags(roots)]) == 0
    fold = _fold_dir(roots, trainer)
    hp = json.loads((fold / "hyperparameters.json").read_text())
    assert hp["trainer_name"] == trainer and hp["config"]["num_epochs"] == 2
    assert hp["config"]["iters_per_epoch"] == 2 and hp["config"]["mirror_axes"] is None
    assert hp["config"]["optimizer"] == "sgd" and hp["config"]["lr"] == 0.01
    metrics = read_metrics(fold)
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert [m["lr"] for m in metrics] == pytest.approx([_poly(0, 2), _poly(1, 2)])
    assert all(len(m["pseudo_dice"]) == 2 for m in metrics)
    for name in ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth"):
        ckpt = torch.load(fold / name, weights_only=True)
        assert {"network_weights", "optimizer_state", "epoch", "trainer_name", "rng_state", "logging"} <= set(ckpt)
    final = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert final["epoch"] == 2 and final["configuration"] == "3d_fullres"
    from suprem_auto.networks import build_network
    net = build_network(final["architecture"], 1, 3, deep_supervision=False)
    net.load_state_dict(final["network_weights"])  # strict: the checkpoint rebuilds the network
    for name in ("progress.png", "training_log.txt"):
        assert (fold / name).stat().st_size > 0
    for name in ("plans.json", "dataset.json"):
        assert (fold.parent / name).is_file()
    splits = json.loads((roots.preprocessed / DATASET / "splits_final.json").read_text())
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert sorted(c["case"] for c in summary["metric_per_case"]) == sorted(splits[0]["val"])
    for case in splits[0]["val"]:
        assert (fold / "validation" / f"{case}.nii.gz").is_file()

    # DATASET FOLD form (configuration defaults to 3d_fullres) with --val re-runs only the validation
    (fold / "validation" / "summary.json").unlink()
    assert train_main(["4", "0", "-tr", trainer, "--val", "--npz", *FAST, *_root_flags(roots)]) == 0
    assert (fold / "validation" / "summary.json").is_file()
    for case in splits[0]["val"]:  # --npz: probabilities too
        assert (fold / "validation" / f"{case}.npz").is_file()
    assert len(read_metrics(fold)) == 2  # no training happened


def test_val_without_finished_training_is_a_clear_error(roots, capsys):
    assert train_main(["4", "1", "--val", *FAST, *_root_flags(roots)]) == 2
    assert "checkpoint_final.pth" in capsys.readouterr().err


class _Interrupted(SupremTrainer):
    """Simulates a kill inside epoch 1 (after checkpoint_latest of epoch 0 was written)."""

    def train_step(self, batch: Dict[str, Any]) -> float:
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return super().train_step(batch)


def test_kill_and_resume_keeps_schedule_and_logs_each_epoch_once(roots):
    overrides = dict(num_epochs=3, iters_per_epoch=1, val_iters_per_epoch=1, num_workers=0)
    first = build_trainer(4, "3d_fullres", 1, roots, overrides=overrides, device="cpu", echo=False,
                          trainer_class=_Interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_fold(first, run_validation=False)
    fold = first.fold_dir
    assert torch.load(fold / "checkpoint_latest.pth", weights_only=True)["epoch"] == 1
    assert not (fold / "checkpoint_final.pth").exists()

    resumed = build_trainer(4, "3d_fullres", 1, roots, overrides=overrides, device="cpu", echo=False)
    train_fold(resumed, continue_training=True, run_validation=False)
    metrics = read_metrics(fold)
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert [m["lr"] for m in metrics] == pytest.approx([_poly(e, 3) for e in range(3)])
    assert torch.load(fold / "checkpoint_final.pth", weights_only=True)["epoch"] == 3
    assert "resumed from checkpoint_latest.pth at epoch 1" in (fold / "training_log.txt").read_text()


class _BrokenAugmentation:
    def __call__(self, **batch):
        raise ValueError("boom: broken augmentation in worker")


class _BrokenTrainer(SupremTrainer):
    def training_transforms(self):
        return _BrokenAugmentation()


def test_worker_error_shows_the_workers_own_traceback(roots):
    trainer = build_trainer(4, "3d_fullres", 2, roots, device="cpu", echo=False, trainer_class=_BrokenTrainer,
                            overrides=dict(num_epochs=1, iters_per_epoch=2, num_workers=1))
    with pytest.raises(DataWorkerError) as info:
        train_fold(trainer, run_validation=False)
    message = str(info.value)
    assert "boom: broken augmentation in worker" in message
    assert "Traceback" in message and "in __call__" in message  # the worker's own frames


def _children(pid: int) -> list:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process table from /proc")
def test_killed_trainer_leaves_no_data_workers_behind(roots, tmp_path):
    """SIGKILL (a cluster's time limit, an OOM kill) runs no clean-up: the augmentation workers must still exit."""
    import subprocess
    import sys
    import time

    flags = ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "suprem_auto.cli.train", "4", "3d_fullres", "0", "--epochs", "500",
                             *FAST, *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        workers: list = []
        while not workers and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            workers = _children(proc.pid)
        assert workers, "the trainer started no data worker"
        time.sleep(2)  # let the workers fill the queue
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 15
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, 9)
    assert not left, f"data workers {left} kept running after their trainer was killed"


def test_trainer_name_suffix_and_cli_override(roots):
    t = build_trainer(4, "3d_fullres", 0, roots, trainer_name="SupremTrainer_5epochs", device="cpu", echo=False)
    assert t.config.num_epochs == 5 and t.config.iters_per_epoch == 250
    t = build_trainer(4, "3d_fullres", 0, roots, trainer_name="SupremTrainer_5epochs", device="cpu", echo=False,
                      overrides={"num_epochs": 7})
    assert t.config.num_epochs == 7
    with pytest.raises(ValueError, match="unknown trainer 'Nope'"):
        build_trainer(4, "3d_fullres", 0, roots, trainer_name="Nope", device="cpu")


def test_help_lists_trainers(capsys):
    with pytest.raises(SystemExit):
        train_main(["-h"])
    out = capsys.readouterr().out
    for name in ("SupremTrainer", "SupremUNetTrainer", "SegResNetTrainer", "SwinUNETRTrainer", "_<N>epochs",
                 "--freeze_encoder_epochs", "--iters_per_epoch", "--c", "--npz", "-pretrained"):
        assert name in out


def test_frozen_encoder_is_not_updated(roots):
    trainer = build_trainer(4, "3d_fullres", 3, roots, device="cpu", echo=False,
                            overrides=dict(num_epochs=2, iters_per_epoch=1, val_iters_per_epoch=1, num_workers=0,
                                           freeze_encoder_epochs=1))
    trainer.initialize()
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    trainer.config = trainer.config.replace(num_epochs=1)  # stop after the frozen epoch
    train_fold(trainer, run_validation=False)
    after = trainer.network.state_dict()
    enc = [k for k in before if k.startswith("encoder.") and before[k].dtype.is_floating_point
           and "running" not in k]
    dec = [k for k in before if k.startswith("decoder.") and before[k].dtype.is_floating_point
           and "running" not in k]
    assert enc and dec
    assert all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in dec)
    assert read_metrics(trainer.fold_dir)[0]["frozen"] == ["encoder"]


def test_deep_supervision_weights():
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    assert sum(deep_supervision_weights(5)) == pytest.approx(1.0)
    assert deep_supervision_weights(1) == [1.0]


def test_dice_ce_loss_perfect_and_ignored_voxels():
    target = torch.randint(0, 3, (2, 1, 6, 6, 6))
    perfect = torch.nn.functional.one_hot(target[:, 0], 3).movedim(-1, 1).float() * 50
    assert float(DiceCELoss()(perfect, target)) == pytest.approx(-1.0, abs=1e-4)
    logits = torch.randn(2, 3, 6, 6, 6)
    target[:, :, :2] = 3  # ignore label
    loss = DiceCELoss(ignore_label=3)
    changed = logits.clone()
    changed[:, :, :2] = torch.randn_like(changed[:, :, :2]) * 10
    assert float(loss(logits, target)) == pytest.approx(float(loss(changed, target)), rel=1e-5)


def test_sampler_forces_foreground_and_pads(roots):
    folder = roots.preprocessed / DATASET / "suprem_plans_3d_fullres"
    cases = PreprocessedCases(folder, sorted(p.name[:-4] for p in folder.glob("*.npy") if "_seg" not in p.name))
    sampler = PatchSampler(cases, (8, 8, 8), batch_size=8, num_forced=8, seed=0)
    batch = sampler.sample_batch()
    assert batch["data"].shape == (8, 1, 8, 8, 8) and batch["seg"].shape == (8, 1, 8, 8, 8)
    assert all((s > 0).any() for s in batch["seg"])  # every forced patch holds foreground
    big = PatchSampler(cases, (64, 64, 64), batch_size=1, num_forced=0, seed=0).sample_batch()
    seg, case = big["seg"][0, 0], cases.load(big["keys"][0])
    # the whole image lies inside the patch; the padding adds only -1 labels and zero intensities
    assert (seg == -1).sum() == 64 ** 3 - (np.asarray(case.seg) != -1).sum()
    assert (seg > 0).sum() == (np.asarray(case.seg) > 0).sum()
    assert big["data"].sum(dtype=np.float64) == pytest.approx(np.asarray(case.data).sum(dtype=np.float64), rel=1e-6)


def test_ddp_batch_and_oversampling_split_keep_global_rule():
    for global_bs, world in ((2, 2), (5, 2), (9, 4)):
        ranks = [DistributedContext(r, world) for r in range(world)]
        assert sum(rank_batch_size(global_bs, c) for c in ranks) == global_bs
        assert sum(rank_forced_foreground(global_bs, 0.33, c) for c in ranks) == int(round(global_bs * 0.33))


@pytest.mark.slow
def test_loss_falls_and_validation_dice_above_floor(tmp_path):
    """A ~1 minute CPU run on 10 real cases learns: the loss falls and the final sliding-window Dice on the two
    held-out cases is above an honest floor measured on this machine (see benchmarks/RESULTS.md)."""
    roots = make_training_roots(tmp_path, 10, tiny_plans(patch_size=(24, 32, 24), features=(8, 16, 32)))
    trainer = build_trainer(4, "3d_fullres", 0, roots, trainer_name="SupremTrainer_NoMirroring", device="cpu",
                            echo=False, overrides=DICE_RUN)
    summary = train_fold(trainer)
    metrics = read_metrics(trainer.fold_dir)
    assert np.mean([m["train_loss"] for m in metrics[-2:]]) < metrics[0]["train_loss"] - 0.3
    assert summary["foreground_mean"]["dice"] > DICE_FLOOR
    assert not math.isnan(summary["foreground_mean"]["dice"])


# measured (2 shared cores): 150 iterations reach a final Dice of 0.46 on the two held-out cases in ~85 s
DICE_RUN = dict(num_epochs=10, iters_per_epoch=15, val_iters_per_epoch=1, num_workers=1)
DICE_FLOOR = 0.3


def test_own_checkpoint_initialises_a_task_with_other_classes(roots, tmp_path):
    """A model trained with fold 'all' on 3-class hippocampus starts a 2-class task: every tensor but the head is
    copied, the head is re-initialised, the load report is written, and -tr defaults to SupremTrainer."""
    assert train_main(["4", "all", "--epochs", "1", "--no_final_validation", *FAST, *_root_flags(roots)]) == 0
    source = _fold_dir(roots, "SupremTrainer", "all") / "checkpoint_final.pth"
    source_weights = torch.load(source, weights_only=True)["network_weights"]

    target_roots = make_training_roots(tmp_path, 5, tiny_plans(patch_size=(16, 24, 16), features=(4, 8, 16)),
                                       dataset_id=5, name="HippocampusWhole", merge_labels=True)
    trainer = build_trainer(5, "3d_fullres", 0, target_roots, pretrained=str(source), device="cpu", echo=False)
    assert trainer.trainer_name == "SupremTrainer" and trainer.num_outputs == 2
    trainer.initialize()
    trainer.initialize_from_pretrained(str(source))
    loaded = trainer.network.state_dict()
    heads = [k for k in loaded if k.startswith("decoder.seg_layers.")]
    assert heads and all(loaded[k].shape[0] == 2 for k in heads if k.endswith("weight"))
    for key, value in loaded.items():
        if key not in heads:
            assert torch.equal(value, source_weights[key]), key
    report = json.loads((trainer.fold_dir / "load_report.json").read_text())
    assert set(report["reinitialised"]) == set(heads)


def test_finetune_trainer_uses_the_default_policy_and_its_backbone(roots):
    from suprem_auto.training.finetune_policy import get_policy

    policy = get_policy(None).changes  # the measured default fine-tuning policy
    trainer = "SegResNetTrainer_NoMirroring"
    assert train_main(["4", "3", "-tr", trainer, "--epochs", "2", "--warmup_epochs", "1", "--no_final_validation",
                       *FAST, *_root_flags(roots)]) == 0
    fold = _fold_dir(roots, trainer, "3")
    hp = json.loads((fold / "hyperparameters.json").read_text())
    assert hp["config"]["optimizer"] == policy["optimizer"] and hp["config"]["weight_decay"] == policy["weight_decay"]
    assert hp["architecture"]["name"] == "segresnet"
    # linear warm-up (epoch 0: lr/2) then the decay from the peak (epoch 1 of 1 decay epoch: the peak)
    assert [m["lr"] for m in read_metrics(fold)] == pytest.approx([policy["lr"] / 2, policy["lr"]])
    plans = json.loads((fold.parent / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["architecture"]["name"] == "segresnet"  # inference rebuilds it


def test_suprem_release_picks_its_trainer_loads_backbone_and_warns(roots, tmp_path):
    """-pretrained with a SuPreM SegResNet release file (synthetic weights, real key layout) and no -tr: the
    SegResNet fine-tuning trainer is chosen, the backbone is loaded, the head is new, and the z-score plan triggers
    preprocessing warnings (SuPreM was pre-trained on an HU window)."""
    import pretrained_fixtures as fx

    obj, expected = fx.suprem_segresnet_release(torch.Generator().manual_seed(0))
    path = tmp_path / "supervised_suprem_segresnet_2100.pth"
    torch.save(obj, path)
    trainer = build_trainer(4, "3d_fullres", 4, roots, pretrained=str(path), device="cpu", echo=False)
    assert trainer.trainer_name == "SegResNetTrainer" and trainer.config.optimizer == "adamw"
    trainer.initialize()
    trainer.initialize_from_pretrained(str(path))
    state = trainer.network.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
    report = json.loads((trainer.fold_dir / "load_report.json").read_text())
    assert len(report["loaded"]) == 81 and set(report["reinitialised"]) == {"conv_final.2.conv.weight",
                                                                           "conv_final.2.conv.bias"}
    log = (trainer.fold_dir / "training_log.txt").read_text()
    assert "WARNING (preprocessing differs" in log and "backbone tensors loaded 81/81" in log


def test_omp_num_threads_in_the_environment_caps_the_compute_threads(roots, monkeypatch):
    """Several jobs side by side set OMP_NUM_THREADS; more torch threads than that oversubscribe the cores."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    trainer = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False)
    assert trainer.compute_threads == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert trainer.compute_threads == 3
    flagged = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False, overrides={"num_threads": 2})
    assert flagged.compute_threads == 2  # the flag wins
