"""The wall-clock schedule on real hippocampus cases: a busy CPU early in a --budget run costs iterations, not the
schedule (ends within budget + 5 s, lr at the end of its cosine); an honest final-validation reserve; fold 'all'
trains without validating on its training cases."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training_data import DATASET, make_training_roots, read_metrics, tiny_plans

from suprem_auto.cli.train import main as train_main
from suprem_auto.paths import Roots

FAST = ["--num_workers", "1", "-device", "cpu"]
#: a busy stretch of a random length (fixed seed) that starts during the run's first seconds
HOG_SEED = 14
HOG_CODE = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


@pytest.fixture(scope="module")
def shared_roots(tmp_path_factory):
    return make_training_roots(tmp_path_factory.mktemp("budget_clock"), 6,
                               tiny_plans(patch_size=(16, 24, 16), features=(4, 8, 16)))


@pytest.fixture
def roots(shared_roots, tmp_path):
    return Roots(shared_roots.raw, shared_roots.preprocessed, tmp_path / "results")


def _flags(roots: Roots) -> list:
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]


def _fold_dir(roots: Roots, fold: str) -> Path:
    return roots.results / DATASET / "SupremTrainer__suprem_plans__3d_fullres" / f"fold_{fold}"


def _start_hog(rng: random.Random) -> "tuple[subprocess.Popen, float]":
    seconds = rng.uniform(8.0, 20.0)
    return subprocess.Popen([sys.executable, "-c", HOG_CODE.format(seconds=seconds)]), seconds


def test_budget_holds_and_the_schedule_ends_with_a_busy_cpu_at_the_start(roots):
    rng = random.Random(HOG_SEED)
    budget = 60
    hog, hog_seconds = _start_hog(rng)
    try:
        start = time.monotonic()
        assert train_main(["4", "3d_fullres", "0", "--budget", f"{budget}s", *FAST, *_flags(roots)]) == 0
        elapsed = time.monotonic() - start
    finally:
        hog.kill()
        hog.wait()
    assert elapsed <= budget + 5, f"{elapsed:.1f}s for a {budget}s budget (hog {hog_seconds:.0f}s)"
    fold = _fold_dir(roots, "0")
    metrics = read_metrics(fold)
    hp = json.loads((fold / "hyperparameters.json").read_text())
    peak = hp["config"]["lr"]
    assert metrics[-1]["lr"] < 0.01 * peak, f"last lr {metrics[-1]['lr']:.3g} of a cosine from {peak:g}"
    assert max(m["lr"] for m in metrics) > 0.3 * peak, "the schedule went through its peak"
    plan = json.loads((fold / "budget_plan.json").read_text())
    assert plan["kind"] == "clock" and plan["progress"] > 0.95
    # the reserve is the final validation's real cost, not a multiple of it
    measured, reserved = plan["final_validation_measured_s"], plan["final_validation_s"]
    assert plan["final_validation"]["num_cases"] >= 1 and measured > 0
    assert measured <= reserved + 3.0 and reserved <= 3 * measured + 3.0, (measured, reserved)
    log = (fold / "training_log.txt").read_text()
    assert "budget: run ended at" in log
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["metric_per_case"]


def test_fold_all_trains_without_validating_on_its_training_cases(roots):
    assert train_main(["4", "3d_fullres", "all", "--iterations", "3", "--val_iters", "1", *FAST,
                       *_flags(roots)]) == 0
    fold = _fold_dir(roots, "all")
    assert (fold / "checkpoint_final.pth").is_file()
    assert not (fold / "validation").exists()
    log = (fold / "training_log.txt").read_text()
    assert "fold all: final validation skipped" in log and "--val_on_train" in log
    assert "fold all: pseudo-Dice on 1 batches of training cases" in log
    from suprem_auto.cli.train import build_parser
    from suprem_auto.inference.predictor import Predictor
    from suprem_auto.training.config import overrides_from_args
    from suprem_auto.training.run import build_trainer

    # instead, the post-processing is chosen on the training cases (all 6: fewer than the default 16) and the
    # predictor applies that choice when it predicts with fold 'all'
    assert "fold all: post-processing chosen on 6 training cases" in log
    decision = json.loads((fold / "postprocessing.json").read_text())
    training_cases = sorted(p.name[:-len(".nii.gz")] for p in (roots.raw / DATASET / "labelsTr").glob("*.nii.gz"))
    assert decision["cases"] == training_cases and decision["num_cases"] == 6
    assert sorted(p.name for p in (fold / "postprocessing_check").glob("*.nii.gz")) == \
        [f"{c}.nii.gz" for c in training_cases]
    predictor = Predictor.from_model_folder(fold.parent, folds=["all"], device="cpu")
    assert predictor.postprocessing == decision

    overrides = overrides_from_args(build_parser().parse_args(["4", "all", "--val_on_train"]))
    assert overrides == {"val_on_train": True}
    with_validation = build_trainer(4, "3d_fullres", "all", roots, overrides=overrides, device="cpu", echo=False)
    assert with_validation.final_validation_runs() and with_validation.postprocessing_check_cases() == []
    assert build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False).final_validation_runs()
    two = build_trainer(4, "3d_fullres", "all", roots, overrides={"postprocessing_cases": 2}, device="cpu",
                        echo=False)
    assert two.end_of_run_cases() == [training_cases[0], training_cases[-1]]
    assert build_trainer(4, "3d_fullres", "all", roots, overrides={"postprocessing_cases": 0}, device="cpu",
                         echo=False).end_of_run_cases() == []


def test_fold_all_spends_few_batches_on_its_pseudo_dice(roots):
    """Fold all validates on its training cases: a few pseudo-Dice batches per epoch, not nnU-Net's 50 (the time
    goes to training); --val_iters still wins, and cross-validation folds keep the full count."""
    from suprem_auto.training.run import FOLD_ALL_VAL_ITERS, build_trainer

    fold_all = build_trainer(4, "3d_fullres", "all", roots, overrides={"budget_s": 600.0}, device="cpu", echo=False)
    assert fold_all.config.val_iters_per_epoch == FOLD_ALL_VAL_ITERS < 50
    assert fold_all.ensure_schedule().val_iterations(500) == FOLD_ALL_VAL_ITERS
    asked = build_trainer(4, "3d_fullres", "all", roots, overrides={"val_iters_per_epoch": 20}, device="cpu",
                          echo=False)
    assert asked.config.val_iters_per_epoch == 20
    assert build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False).config.val_iters_per_epoch == 50


def test_resume_continues_the_clock_schedule_from_its_stored_time(roots):
    """A checkpoint of a --budget run holds the clock schedule: the resumed trainer continues its elapsed time and
    progress (the lr does not restart its warm-up), whatever budget the new command asks for."""
    from suprem_auto.training import checkpointing
    from suprem_auto.training.budget import ClockSchedule
    from suprem_auto.training.run import build_trainer

    first = build_trainer(4, "3d_fullres", 2, roots, overrides={"budget_s": 100.0, "num_workers": 0},
                          device="cpu", echo=False)
    first.initialize()
    schedule = first.ensure_schedule()
    assert isinstance(schedule, ClockSchedule)
    schedule.begin(5.0)
    schedule.record_epoch_end(1.0)
    peak = schedule.lr
    first.clock.continue_from(50.0)
    lr_before = schedule.learning_rate(3, first.clock.elapsed_s)
    assert 0.3 * peak < lr_before < 0.7 * peak  # half-way: the cosine is half down
    first.fold_dir.mkdir(parents=True, exist_ok=True)
    first.save(checkpointing.LATEST)

    resumed = build_trainer(4, "3d_fullres", 2, roots, overrides={"budget_s": 900.0, "num_workers": 0},
                            device="cpu", echo=False)
    resumed.resume(first.fold_dir / checkpointing.LATEST)
    assert isinstance(resumed.schedule, ClockSchedule) and resumed.config.budget_s == 100.0
    assert 50.0 <= resumed.clock.elapsed_s < 55.0
    assert resumed.schedule.train_start_s == 5.0 and resumed.schedule.progress == schedule.progress
    assert resumed.learning_rate(3) <= lr_before * 1.02
    assert "resumed budget plan: budget 100s" in (resumed.fold_dir / "training_log.txt").read_text()


def _ddp_rank(rank: int, world: int, port: int, roots: Roots, out_dir: str, tests_dir: str) -> None:
    import os

    sys.path.insert(0, tests_dir)
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    import torch

    from suprem_auto.training.run import build_trainer, train_fold

    trainer = build_trainer(4, "3d_fullres", 1, roots, device="cpu", echo=False,
                            overrides={"budget_s": 20.0, "num_workers": 0, "num_threads": 1, "batch_size": 2})
    train_fold(trainer, run_validation=False)
    lrs = [h["lr"] for h in trainer.log.history] if trainer.dist.is_main else []
    torch.save({"weights": trainer.network.state_dict(), "iteration": trainer.schedule.iteration,
                "epochs": trainer.current_epoch, "lrs": lrs}, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.slow  # two fresh interpreters: ~40 s on the shared 2-core machine
def test_distributed_clock_run_takes_rank0_decisions(roots, tmp_path):
    """Every rank reads its own clock; the lr and the ends of epochs and run are rank 0's, so the ranks take the
    same steps and end with identical weights."""
    import socket

    import torch
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_rank, args=(2, port, roots, str(tmp_path), str(Path(__file__).parent)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["iteration"] == r1["iteration"] > 0 and r0["epochs"] == r1["epochs"]
    for key in r0["weights"]:
        assert torch.equal(r0["weights"][key], r1["weights"][key]), key
    plan = json.loads((_fold_dir(roots, "1") / "budget_plan.json").read_text())
    assert plan["kind"] == "clock" and plan["final_validation_s"] == 0.0  # no final validation: nothing reserved
    assert plan["elapsed_s"] <= 20.0 + 5.0
