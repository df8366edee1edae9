"""Nothing a user owns is lost: runs moved aside, --c resumes only its own run, one process per fold, plans kept per
fold, whole log lines, watched data workers, finished-case listing, and kill/resume at random moments (real runs)."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from training_data import DATASET, make_training_roots, read_metrics, tiny_plans

from suprem_auto.cli.train import main as train_main
from suprem_auto.crossval.gather import fold_is_finished, read_learning_curves
from suprem_auto.paths import Roots
from suprem_auto.training.data.cases import PreprocessedCases, list_preprocessed_cases
from suprem_auto.training.data.sampler import PatchSampler
from suprem_auto.training.data.workers import BatchStream, DataWorkerError
from suprem_auto.training.progress import RunLog
from suprem_auto.training.run import build_trainer, train_fold
from suprem_auto.training.trainers import SupremTrainer
from suprem_auto.utils.atomic import TEMP_FILE_PATTERN

FAST = ["--iters_per_epoch", "2", "--val_iters", "1", "--num_workers", "1", "-device", "cpu"]
MODEL = "SupremTrainer__suprem_plans__3d_fullres"


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """6 real hippocampus cases, tiny plan (patch 16x24x16, 3-stage U-Net with 4-16 features)."""
    return make_training_roots(tmp_path_factory.mktemp("safety"), 6,
                               tiny_plans(patch_size=(16, 24, 16), features=(4, 8, 16)))


def _fresh(roots: Roots, tmp_path: Path) -> Roots:
    """The module's raw/preprocessed data with an empty results folder of this test."""
    return Roots(roots.raw, roots.preprocessed, tmp_path / "results")


def _flags(roots: Roots) -> List[str]:
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]


def _fold(roots: Roots, fold: int = 0) -> Path:
    return roots.results / DATASET / MODEL / f"fold_{fold}"


def _temp_files(folder: Path) -> List[Path]:
    return [p for p in folder.rglob(".*") if p.is_file() and TEMP_FILE_PATTERN.match(p.name)]


class _StopAfterFirstEpoch(SupremTrainer):
    """Stands for a run killed in its second epoch (checkpoint_latest of epoch 0 written)."""

    def train_step(self, batch):
        if self.current_epoch == 1:
            raise KeyboardInterrupt
        return super().train_step(batch)


def test_new_run_moves_the_old_one_aside_and_c_resumes_only_its_own_run(roots, tmp_path):
    roots = _fresh(roots, tmp_path)
    assert train_main(["4", "0", "--epochs", "1", *FAST, *_flags(roots)]) == 0
    fold = _fold(roots)
    old_run = json.loads((fold / "run.json").read_text())["run_id"]
    assert torch.load(fold / "checkpoint_final.pth", weights_only=True)["run_id"] == old_run
    assert fold_is_finished(fold.parent, 0)

    # a new training (no --c) of 3 epochs, killed in epoch 1
    overrides = dict(num_epochs=3, iters_per_epoch=2, val_iters_per_epoch=1, num_workers=1)
    new = build_trainer(4, "3d_fullres", 0, roots, overrides=overrides, device="cpu", echo=False,
                        trainer_class=_StopAfterFirstEpoch)
    with pytest.raises(KeyboardInterrupt):
        train_fold(new)
    (previous,) = (fold / "previous_runs").iterdir()
    assert (previous / "checkpoint_final.pth").is_file() and (previous / "validation" / "summary.json").is_file()
    assert [m["epoch"] for m in read_metrics(previous)] == [0], "the old run's log is kept whole"
    assert json.loads((previous / "run.json").read_text())["run_id"] == old_run
    assert not (fold / "checkpoint_final.pth").exists() and not (fold / "validation").exists()
    assert not fold_is_finished(fold.parent, 0), "a fold whose new run is unfinished is not finished"
    assert [m["epoch"] for m in read_metrics(fold)] == [0], "the new run's log starts empty"
    assert not (fold / "train.lock").exists(), "the lock is released when the run stops"

    # someone copies the old final checkpoint back: --c must not resume a checkpoint of another run
    shutil.copy(previous / "checkpoint_final.pth", fold / "checkpoint_final.pth")
    assert train_main(["4", "0", "--c", "--epochs", "3", *FAST, *_flags(roots)]) == 0
    assert "resumed from checkpoint_latest.pth at epoch 1" in (fold / "training_log.txt").read_text()
    assert [m["epoch"] for m in read_metrics(fold)] == [0, 1, 2]
    final = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert final["epoch"] == 3 and final["run_id"] == json.loads((fold / "run.json").read_text())["run_id"] != old_run
    assert fold_is_finished(fold.parent, 0)


_HOLD_LOCK = ("import sys, time\nfrom suprem_auto.training.run_folder import FoldLock\n"
              "FoldLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(600)\n")


def test_a_second_trainer_on_a_fold_refuses_and_a_dead_holders_lock_is_taken_over(roots, tmp_path, capsys):
    roots = _fresh(roots, tmp_path)
    fold = _fold(roots)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(fold)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        start = time.monotonic()
        assert train_main(["4", "0", "--epochs", "1", *FAST, *_flags(roots)]) == 2
        assert time.monotonic() - start < 10, "refused at once"
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(fold / "train.lock") in err and f"PID {holder.pid}" in err
        assert sorted(p.name for p in fold.iterdir()) == ["train.lock"], "the refused run wrote nothing"
    finally:
        holder.kill()
        holder.wait()
    assert (fold / "train.lock").is_file(), "a killed holder leaves its lock file"
    assert train_main(["4", "0", "--epochs", "1", "--no_final_validation", *FAST, *_flags(roots)]) == 0
    assert (fold / "checkpoint_final.pth").is_file() and not (fold / "train.lock").exists()


def test_plans_stay_per_fold_and_a_run_with_other_plans_is_refused(roots, tmp_path, capsys):
    roots = _fresh(roots, tmp_path)
    assert train_main(["4", "0", "--epochs", "1", "--no_final_validation", *FAST, *_flags(roots)]) == 0
    model = _fold(roots).parent
    plans_before = (model / "plans.json").read_bytes()
    assert json.loads((_fold(roots) / "plans.json").read_text()) == json.loads(plans_before)
    # --val and building a trainer (as cross-validation does for folds it skips) never rewrite it
    assert train_main(["4", "0", "--val", "--patch_size", "16x16x16", *FAST, *_flags(roots)]) == 0
    build_trainer(4, "3d_fullres", 0, roots, overrides={"patch_size": [16, 16, 16]}, device="cpu", echo=False)
    assert (model / "plans.json").read_bytes() == plans_before
    capsys.readouterr()
    # fold 1 with another patch: refused, one line naming the file and the field; nothing written
    assert train_main(["4", "1", "--epochs", "1", "--patch_size", "16x16x16", *FAST, *_flags(roots)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(model / "plans.json") in err and "patch_size" in err and "fold_0" in err
    assert (model / "plans.json").read_bytes() == plans_before and not _fold(roots, 1).exists()
    # the only fold may change its own plans with a new run (its earlier run is moved aside)
    assert train_main(["4", "0", "--epochs", "1", "--patch_size", "16x16x16", "--no_final_validation", *FAST,
                       *_flags(roots)]) == 0
    assert json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"]["patch_size"] == [16] * 3


def test_log_appends_leave_no_glued_half_line(tmp_path):
    log = RunLog(tmp_path, echo=False)
    record = {"epoch": 0, "train_loss": 1.0, "val_loss": 1.0, "pseudo_dice": [0.5], "mean_pseudo_dice": 0.5,
              "ema_pseudo_dice": 0.5, "lr": 0.01, "epoch_time_s": 1.0}
    log.epoch_end(record)
    with open(log.metrics_path, "a") as f:  # what a kill in the middle of a write leaves
        f.write('{"epoch": 1, "train_lo')
    log.epoch_end(dict(record, epoch=1))
    fold = tmp_path / "model" / "fold_0"
    fold.mkdir(parents=True)
    shutil.copy(log.metrics_path, fold / "metrics.jsonl")
    with open(fold / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "tr')
    assert [r["epoch"] for r in read_learning_curves(tmp_path / "model", [0])[0]] == [0, 1]
    assert all(line.startswith("20") for line in (tmp_path / "training_log.txt").read_text().splitlines())


class _HangWhenFlagged:
    """An augmentation that stops making progress once ``flag`` exists (a worker stuck in I/O or a deadlock)."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __call__(self, **batch):
        while self.flag.exists():
            time.sleep(0.05)
        return batch


def _sampler(roots: Roots) -> PatchSampler:
    folder = roots.preprocessed / DATASET / "suprem_plans_3d_fullres"
    return PatchSampler(PreprocessedCases(folder, list_preprocessed_cases(folder)), (16, 24, 16), 2, 1, seed=0)


def test_dead_worker_noticed_within_two_seconds_among_several(roots, tmp_path):
    stream = BatchStream(_sampler(roots), _HangWhenFlagged(tmp_path / "never"), num_workers=3, seed=0)
    try:
        for _ in range(6):
            next(stream)
        os.kill(stream._processes[1].pid, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(DataWorkerError, match=r"data worker 1 died .*exit code -9"):
            for _ in range(10_000):
                next(stream)
        assert time.monotonic() - start < 2.0
    finally:
        stream.close()


class _LargeBatches:
    """An augmentation whose batches (8 MB) are far larger than a pipe's buffer: a kill lands in mid-message."""

    def __call__(self, **batch):
        batch["data"] = np.random.rand(2, 1, 64, 128, 64).astype(np.float32)
        return batch


def test_worker_killed_in_the_middle_of_a_batch_is_noticed_not_waited_for(roots):
    """A worker killed for memory while its batch is half sent must not leave the trainer waiting forever."""
    for trial in range(3):
        stream = BatchStream(_sampler(roots), _LargeBatches(), num_workers=3, seed=trial)
        outcome: List[BaseException] = []

        def read_until_it_fails() -> None:
            try:
                for _ in range(10_000):
                    next(stream)
            except BaseException as error:  # noqa: BLE001 - handed to the test thread
                outcome.append(error)

        try:
            next(stream)
            time.sleep(0.3)  # the workers are now blocked writing their next batches into full pipes
            os.kill(stream._processes[trial].pid, signal.SIGKILL)
            reader = threading.Thread(target=read_until_it_fails, daemon=True)
            reader.start()
            reader.join(timeout=15)
            assert not reader.is_alive(), "the trainer is still waiting on a dead worker's half-sent batch"
            assert isinstance(outcome[0], DataWorkerError) and f"data worker {trial} died" in str(outcome[0])
        finally:
            stream.close()


def test_hung_worker_noticed_after_the_timeout(roots, tmp_path):
    flag = tmp_path / "hang"
    stream = BatchStream(_sampler(roots), _HangWhenFlagged(flag), num_workers=2, seed=0, hang_timeout_s=1.5)
    try:
        next(stream)
        flag.touch()
        start = time.monotonic()
        with pytest.raises(DataWorkerError, match="hung: no sign of life"):
            for _ in range(10_000):
                next(stream)
        assert 1.0 < time.monotonic() - start < 6.0
    finally:
        stream.close()
    assert not any(p.is_alive() for p in stream._processes)


def test_worker_failure_is_one_line_at_the_cli(roots, tmp_path, capsys):
    """A truncated preprocessed array (a full disk during preprocessing) fails in the data worker."""
    pre = tmp_path / "preprocessed"
    shutil.copytree(roots.preprocessed, pre)
    data = pre / DATASET / "suprem_plans_3d_fullres"
    for case in list_preprocessed_cases(data):
        seg = data / f"{case}_seg.npy"
        seg.write_bytes(seg.read_bytes()[:100])
    broken = Roots(roots.raw, pre, tmp_path / "results")
    assert train_main(["4", "0", "--epochs", "1", *FAST, *_flags(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data worker 0 failed" in err and "Traceback" not in err
    log = (_fold(broken) / "training_log.txt").read_text()
    assert "Traceback" in log and "_seg.npy" in log


def test_training_lists_finished_cases_still_in_the_raw_dataset(roots, tmp_path):
    raw = tmp_path / "raw"
    pre = tmp_path / "preprocessed"
    shutil.copytree(roots.raw, raw)
    shutil.copytree(roots.preprocessed, pre)
    data = pre / DATASET / "suprem_plans_3d_fullres"
    cases = list_preprocessed_cases(data)
    assert len(cases) == 6 and "preprocessing_settings" not in cases
    trainer = build_trainer(4, "3d_fullres", 0, Roots(raw, pre, tmp_path / "results"), device="cpu", echo=False)
    trainer.split()  # the splits of the six cases
    marker = (data / f"{cases[0]}.json").read_bytes()
    (data / f"{cases[0]}.json").unlink()  # preprocessing killed before the marker was written
    for image in (raw / DATASET / "imagesTr").glob(f"{cases[1]}_*"):  # removed from the raw dataset
        image.unlink()
    (raw / DATASET / "labelsTr" / f"{cases[1]}.nii.gz").unlink()
    assert list_preprocessed_cases(data) == cases[1:]
    assert list_preprocessed_cases(data, raw / DATASET) == cases[2:]
    with pytest.raises(ValueError, match="splits_final.json: fold 0 names cases not in the dataset: "
                                         f"{cases[0]}, {cases[1]}"):
        trainer.split()  # splits made when they were there: a one-line error, not a training on stale data
    (data / f"{cases[0]}.json").write_bytes(marker)
    (pre / DATASET / "splits_final.json").unlink()
    train, val = trainer.split()
    assert sorted(train + val) == [cases[0], *cases[2:]]


def _train_process(roots: Roots, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "suprem_auto.cli.train", "4", "3d_fullres", "0", "--iterations", "4",
               "--precision", "fp32", *FAST, *_flags(roots), *extra]
    roots.results.parent.mkdir(parents=True, exist_ok=True)
    with open(roots.results.parent / "stderr.txt", "a") as err:  # a file: a full pipe would stall the child
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)


def _wait_for_log(proc: subprocess.Popen, fold: Path) -> float:
    """Wait until the process has grown its training log (training started); returns that moment."""
    log = fold / "training_log.txt"
    size = log.stat().st_size if log.is_file() else 0
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if log.is_file() and log.stat().st_size > size:
            break
        time.sleep(0.02)
    return time.monotonic()


def test_killed_at_random_moments_and_resumed_ends_like_an_uninterrupted_run(roots, tmp_path):
    """SIGKILL at seeded random times (checkpoint writes, validation, final export) and --c each time: the same
    iterations as an uninterrupted run, every epoch logged once, no temp files, the fold finished."""
    reference = _fresh(roots, tmp_path / "reference")
    proc = _train_process(reference)
    started = _wait_for_log(proc, _fold(reference))
    assert proc.wait(timeout=120) == 0, (tmp_path / "reference" / "stderr.txt").read_text()[-2000:]
    active = time.monotonic() - started  # from the first log line to the exit: training, checkpoints, validation
    ref_fold = _fold(reference)
    ref_plan = torch.load(ref_fold / "checkpoint_final.pth", weights_only=True)["budget_plan"]
    ref_epochs = [m["epoch"] for m in read_metrics(ref_fold)]

    killed = _fresh(roots, tmp_path / "killed")
    fold = _fold(killed)
    rng = random.Random(15)
    kills = 0
    for round_ in range(6):
        proc = _train_process(killed, *(["--c"] if round_ else []))
        if round_ < 4:
            _wait_for_log(proc, fold)
            try:
                delay = rng.uniform(0.05, 0.45) * active
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                if (fold / "metrics.jsonl").is_file():
                    epochs = [m["epoch"] for m in read_learning_curves(fold.parent, [0])[0]]
                    assert len(epochs) == len(set(epochs)), f"round {round_}: an epoch logged twice"
                continue
        assert proc.wait(timeout=120) == 0, (tmp_path / "killed" / "stderr.txt").read_text()[-2000:]
        break
    assert kills >= 2, "the seeded kill times should interrupt the run several times"
    final = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert final["budget_plan"]["iteration"] == ref_plan["iteration"] == 4
    assert [m["epoch"] for m in read_metrics(fold)] == ref_epochs
    assert not _temp_files(fold), _temp_files(fold)
    assert fold_is_finished(fold.parent, 0) and not (fold / "train.lock").exists()


def test_cross_validation_recipe_reaches_the_trainer(roots, tmp_path):
    from suprem_auto.cli.cross_validate import main as crossval_main

    roots = _fresh(roots, tmp_path)
    args = ["-d", "4", "--folds", "0", "--iterations", "2", "--val_iters", "1", "--num_workers", "1",
            "-device", "cpu", *_flags(roots)]
    assert crossval_main([*args, "--recipe", "trainer"]) == 0
    hp = json.loads((_fold(roots) / "hyperparameters.json").read_text())
    assert hp["recipe"] is None and hp["config"]["optimizer"] == "sgd", "--recipe trainer keeps nnU-Net's recipe"
    shutil.rmtree(roots.results)
    assert crossval_main([*args, "--recipe", "short"]) == 0
    hp = json.loads((_fold(roots) / "hyperparameters.json").read_text())
    assert hp["recipe"]["name"] == "short_budget" and hp["config"]["optimizer"] != "sgd"
