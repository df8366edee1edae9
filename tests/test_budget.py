"""Training on a budget: --budget ends in time with a usable checkpoint, resume keeps the plan, bf16 detection and
bf16/fp32 agreement. Real hippocampus cases, tiny network."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from training_data import DATASET, make_training_roots, read_metrics, tiny_plans

from suprem_auto.cli.train import main as train_main
from suprem_auto.paths import Roots
from suprem_auto.training.budget import (ClockSchedule, IterationSchedule, RunClock, schedule_for,
                                         schedule_from_json, parse_duration)
from suprem_auto.training.config import TrainingConfig
from suprem_auto.training.precision import choose_precision, native_cpu_bf16
from suprem_auto.training.run import build_trainer, train_fold
from suprem_auto.training.trainers import SupremTrainer

#: start-up allowance on top of the budget: imports, splits, worker start and the first oneDNN calls are slow on
#: the 2 shared cores of these machines; the budget clock itself starts when the trainer is built
START_UP_MARGIN_S = 30.0
FAST = ["--num_workers", "1", "-device", "cpu"]


@pytest.fixture(scope="module")
def shared_roots(tmp_path_factory):
    return make_training_roots(tmp_path_factory.mktemp("budget"), 6,
                               tiny_plans(patch_size=(16, 24, 16), features=(4, 8, 16)))


@pytest.fixture
def roots(shared_roots, tmp_path):
    """The shared preprocessed cases with a results root of this test's own (runs with different networks may not
    share a model folder)."""
    return Roots(shared_roots.raw, shared_roots.preprocessed, tmp_path / "results")


def _flags(roots) -> list:
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]


def _fold_dir(roots, trainer: str = "SupremTrainer", fold: str = "0") -> Path:
    return roots.results / DATASET / f"{trainer}__suprem_plans__3d_fullres" / f"fold_{fold}"


def test_parse_duration():
    assert parse_duration("90s") == 90
    assert parse_duration("40m") == 2400
    assert parse_duration("6h") == 21600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("75") == 75
    for bad in ("", "ten minutes", "5x", "0s", "m5"):
        with pytest.raises(ValueError, match="--budget"):
            parse_duration(bad)


def _lr_at(schedule: IterationSchedule, iteration: int) -> float:
    schedule.iteration = iteration
    return schedule.learning_rate(0, 0.0)


def test_schedule_over_planned_iterations():
    plan = IterationSchedule(planned_iterations=100, iters_per_epoch=5, val_iters_per_epoch=1,
                             warmup_iterations=10, schedule="warmup_cosine", lr=1e-3)
    lrs = [_lr_at(plan, i) for i in range(101)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))          # rises during warm-up
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[55] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)                 # decayed exactly at the planned end
    poly = IterationSchedule(planned_iterations=50, iters_per_epoch=5, val_iters_per_epoch=1,
                             warmup_iterations=0, schedule="poly", lr=0.01)
    assert _lr_at(poly, 25) == pytest.approx(0.01 * 0.5 ** 0.9)
    assert plan.num_epochs == 20
    assert plan.run_done(0, 0.0) and not poly.run_done(0, 0.0)
    # --iterations N lays the same schedule out: N / 20 iterations per epoch, 5 % warm-up
    built = schedule_for(TrainingConfig(iterations=200, lr_schedule="warmup_cosine", val_iters_per_epoch=50))
    assert (built.planned_iterations, built.iters_per_epoch, built.val_iters_per_epoch,
            built.warmup_iterations) == (200, 10, 2, 10)


def test_clock_schedule_follows_the_share_of_training_time():
    """The lr is a function of the elapsed share of the training time: slow steps cost iterations, not the shape;
    the run ends when one more step would not leave the reserve inside the budget."""
    clock = ClockSchedule(lr=1e-2, schedule="warmup_cosine", budget_s=100.0, warmup_fraction=0.05, max_val_iters=50)
    clock.begin(10.0)                                    # 10 s of set-up before training
    clock.set_final_validation({"num_cases": 2}, 8.0)
    clock.record_epoch_end(2.0)
    assert clock.reserve_s == pytest.approx(10.0) and clock.training_s == pytest.approx(80.0)
    assert clock.learning_rate(0, 10.0) == pytest.approx(1e-2 / 11)       # warm-up starts at 1/11 of the peak
    assert clock.learning_rate(0, 14.0) == pytest.approx(1e-2)             # 5 % of 80 s: the peak
    assert clock.learning_rate(0, 50.0) == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 36 / 76)))
    for _ in range(30):
        clock.record_step(0.5)
    clock.record_step(30.0)                               # one very slow step barely moves the estimate
    assert clock.sec_per_iteration == pytest.approx(0.5)
    assert not clock.run_done(3, 89.0) and clock.run_done(3, 89.6)        # 89.6 + 0.5 + 10 >= 100
    assert clock.learning_rate(0, 89.6) < 1e-2 * 1e-3                       # the cosine is at its end
    assert clock.learning_rate(0, 60.0) < 1e-2 * 1e-3, "the lr never goes back up"
    # epochs last a share of the training time (at least 20 s) and end early when the run must end
    assert clock.epoch_s == pytest.approx(20.0)
    assert not clock.epoch_done(10, 19.0, 40.0) and clock.epoch_done(10, 20.0, 40.0)
    assert clock.epoch_done(1, 0.5, 89.6)
    assert clock.val_iterations(40) == 8 and clock.val_iterations(1) == 1
    restored = schedule_from_json(json.loads(json.dumps(clock.to_json())))
    assert isinstance(restored, ClockSchedule) and restored.to_json() == clock.to_json()
    # a legacy plan (before the clock schedule) still resumes
    legacy = schedule_from_json({"budget_s": None, "planned_iterations": 8, "iters_per_epoch": 1,
                                 "val_iters_per_epoch": 1, "warmup_iterations": 0, "schedule": "warmup_cosine",
                                 "lr": 0.01, "fixed": True, "iteration": 3})
    assert isinstance(legacy, IterationSchedule) and legacy.iteration == 3
    run_clock = RunClock(elapsed_s=50.0)
    assert 50.0 <= run_clock.elapsed_s < 51.0


def test_bf16_only_where_the_cpu_has_it_natively():
    cpu = torch.device("cpu")
    native = {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert native_cpu_bf16(native, torch_supported=True)
    assert choose_precision("auto", cpu, native, torch_supported=True) == "bf16"
    assert choose_precision("auto", cpu, {"fpu", "avx2", "amx_bf16"}, torch_supported=True) == "bf16"
    # AVX2 only (this kind of machine): emulated bf16 is far slower than fp32
    assert choose_precision("auto", cpu, {"fpu", "avx2", "fma"}, torch_supported=True) == "fp32"
    # flags present but torch's oneDNN says no
    assert choose_precision("auto", cpu, native, torch_supported=False) == "fp32"
    assert choose_precision("fp32", cpu, native, torch_supported=True) == "fp32"
    assert choose_precision("bf16", cpu, {"avx2"}, torch_supported=False) == "bf16"
    assert choose_precision("auto", torch.device("cuda"), set(), torch_supported=False) == "fp16"
    with pytest.raises(ValueError, match="precision"):
        choose_precision("fp8", cpu)


def test_bf16_and_fp32_steps_agree(roots):
    """The same batch, the same initial weights: the bf16 autocast step gives the fp32 loss and update."""
    trainers = {}
    for prec in ("fp32", "bf16"):
        t = build_trainer(4, "3d_fullres", 0, roots, overrides={"precision": prec, "num_workers": 0, "seed": 7},
                          device="cpu", echo=False)
        t.initialize()
        trainers[prec] = t
    assert trainers["bf16"].precision == "bf16" and trainers["fp32"].precision == "fp32"
    before = {k: v.clone() for k, v in trainers["fp32"].network.state_dict().items()}
    for k, v in trainers["bf16"].network.state_dict().items():
        assert torch.equal(v, before[k])
    rng = np.random.default_rng(0)
    case = np.load(roots.preprocessed / DATASET / "suprem_plans_3d_fullres" / "hippocampus_001.npy")
    seg = np.load(roots.preprocessed / DATASET / "suprem_plans_3d_fullres" / "hippocampus_001_seg.npy")
    z, y, x = (int(rng.integers(0, max(1, s - p + 1))) for s, p in zip(case.shape[1:], (16, 24, 16)))
    batch = {"data": np.stack([case[:, z:z + 16, y:y + 24, x:x + 16]] * 2),
             "seg": np.stack([np.maximum(seg[:, z:z + 16, y:y + 24, x:x + 16], 0)] * 2)}
    losses = {p: t.train_step(batch) for p, t in trainers.items()}
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.02)
    deltas = {p: torch.cat([(v.float() - before[k].float()).flatten()
                            for k, v in t.network.state_dict().items() if v.is_floating_point()])
              for p, t in trainers.items()}
    cosine = torch.nn.functional.cosine_similarity(deltas["bf16"], deltas["fp32"], dim=0)
    assert float(cosine) > 0.95
    assert torch.linalg.norm(deltas["fp32"]) > 0


def test_budget_run_ends_in_time_with_usable_checkpoint(roots):
    budget = 60
    start = time.monotonic()
    assert train_main(["4", "3d_fullres", "0", "--budget", f"{budget}s", *FAST, *_flags(roots)]) == 0
    elapsed = time.monotonic() - start
    assert elapsed <= budget + START_UP_MARGIN_S, f"{elapsed:.1f}s for a {budget}s budget"
    fold = _fold_dir(roots)
    log = (fold / "training_log.txt").read_text()
    assert "plan: budget 60s" in log and "iterations" in log and "schedule warmup_cosine" in log
    plan = json.loads((fold / "budget_plan.json").read_text())
    assert plan["kind"] == "clock" and plan["final_validation_measured_s"] is not None
    hp = json.loads((fold / "hyperparameters.json").read_text())
    assert hp["recipe"]["name"] == "short_budget" and hp["config"]["optimizer"] == "adamw"
    assert hp["precision"] == choose_precision("auto", torch.device("cpu"))
    metrics = read_metrics(fold)
    assert len(metrics) >= 1 and plan["iteration"] > len(metrics)
    ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert ckpt["budget_plan"]["kind"] == "clock" and ckpt["budget_plan"]["progress"] > 0.9
    from suprem_auto.networks import build_network

    net = build_network(ckpt["architecture"], 1, 3, deep_supervision=False)
    net.load_state_dict(ckpt["network_weights"])
    net.eval()
    case = np.load(roots.preprocessed / DATASET / "suprem_plans_3d_fullres" / "hippocampus_001.npy")
    with torch.no_grad():
        out = net(torch.from_numpy(np.ascontiguousarray(case[None, :, :16, :24, :16])))
    assert out.shape == (1, 3, 16, 24, 16) and torch.isfinite(out).all()
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["metric_per_case"], "final validation ran"


class _CrashAfterEpoch(SupremTrainer):
    """Simulates a killed run: raises after the checkpoint of epoch 2 was written."""

    def on_epoch_end(self, epoch, *args, **kwargs):
        super().on_epoch_end(epoch, *args, **kwargs)
        if epoch == 2:
            raise KeyboardInterrupt


def test_resume_keeps_the_plan(roots):
    args = ["4", "3d_fullres", "1", "--iterations", "8", "--val_iters", "1", "--no_final_validation", *FAST,
            *_flags(roots)]
    assert train_main(args) == 0
    reference = read_metrics(_fold_dir(roots, fold="1"))
    assert len(reference) == 8  # 8 iterations of 1 per epoch (20 epochs targeted, at least 1 iteration each)
    trainer = build_trainer(4, "3d_fullres", 2, roots, overrides={"iterations": 8, "val_iters_per_epoch": 1,
                                                                  "num_workers": 1},
                            device="cpu", echo=False, trainer_class=_CrashAfterEpoch)
    with pytest.raises(KeyboardInterrupt):
        train_fold(trainer, run_validation=False)
    fold = _fold_dir(roots, fold="2")
    assert not (fold / "checkpoint_final.pth").exists()
    # resume with a different request: the stored plan wins
    assert train_main(["4", "3d_fullres", "2", "--c", "--iterations", "50", "--no_final_validation",
                       *FAST, *_flags(roots)]) == 0
    resumed = read_metrics(fold)
    assert [m["epoch"] for m in resumed] == list(range(8))
    assert [m["lr"] for m in resumed] == pytest.approx([m["lr"] for m in reference])
    assert json.loads((fold / "budget_plan.json").read_text())["planned_iterations"] == 8
    assert "resumed budget plan" in (fold / "training_log.txt").read_text()


def test_network_width_scales_the_free_widths_only():
    from suprem_auto.networks import build_network, scale_width

    arch = tiny_plans(patch_size=(16, 24, 16), features=(8, 16, 32))["configurations"]["3d_fullres"]["architecture"]
    half = scale_width(arch, 0.5)
    assert half["kwargs"]["features_per_stage"] == [4, 8, 16]
    assert arch["kwargs"]["features_per_stage"] == [8, 16, 32], "the plans' entry is not modified"
    assert scale_width(arch, 0.1)["kwargs"]["features_per_stage"] == [4, 4, 4]  # never below 4
    small, full = (sum(p.numel() for p in build_network(a, 1, 3, True).parameters()) for a in (half, arch))
    assert small < full / 3
    # SegResNet's GroupNorm has 8 groups, Swin UNETR's feature_size must divide by 12: widths round to those.
    assert scale_width({"name": "segresnet", "kwargs": {}}, 0.5)["kwargs"]["init_filters"] == 8
    assert scale_width({"name": "segresnet", "kwargs": {}}, 0.25)["kwargs"]["init_filters"] == 8
    assert scale_width({"name": "swin_unetr", "kwargs": {"feature_size": 48}}, 0.25)["kwargs"]["feature_size"] == 12
    assert scale_width({"name": "suprem_unet", "kwargs": {}}, 0.25)["kwargs"]["base_width"] == 8
    for name in ("segresnet", "suprem_unet", "swin_unetr"):
        narrow = build_network(scale_width({"name": name, "kwargs": {}}, 0.25), 1, 3, False)
        released = build_network({"name": name, "kwargs": {}}, 1, 3, False)
        assert narrow.state_dict().keys() == released.state_dict().keys(), f"{name}: parameter names change"
        n_narrow, n_released = (sum(p.numel() for p in m.parameters()) for m in (narrow, released))
        assert n_narrow < n_released / 3, name
        assert narrow(torch.zeros(1, 1, 32, 64, 32)).shape == (1, 3, 32, 64, 32)  # swin: a 1-voxel bottleneck fails
    with pytest.raises(ValueError, match="must be > 0"):
        scale_width({"name": "suprem_unet", "kwargs": {}}, 0)


def test_short_budget_recipe_picks_width_from_its_table(monkeypatch, tmp_path):
    """The fallback table gives the width where nothing is timed; on CPU the recipe also gives the candidates the
    trainer times (trainers/width_hooks.py); never for a fixed iteration count, a checkpoint or a SuPreM backbone."""
    from suprem_auto.training import budget as budget_module
    from suprem_auto.training.run import budget_recipe

    recipe = json.loads(budget_module.RECIPE_FILE.read_text())
    recipe["network_width"]["fallback"]["cpu"] = [{"max_budget_s": 600, "factor": 0.25},
                                                  {"max_budget_s": None, "factor": 0.5}]
    path = tmp_path / "short_budget.json"
    path.write_text(json.dumps(recipe))
    monkeypatch.setattr(budget_module, "RECIPE_FILE", path)
    plain = {"name": "plain_unet", "kwargs": {}}
    assert budget_recipe(SupremTrainer, {"budget_s": 600}, "auto", "cpu", plain)["network_width"] == 0.25
    assert budget_recipe(SupremTrainer, {"budget_s": 601}, "auto", "cpu", plain)["network_width"] == 0.5
    assert budget_recipe(SupremTrainer, {"budget_s": 600}, "auto", "cpu", plain)["width_candidates"] == \
        recipe["network_width"]["candidates"]
    assert "network_width" not in budget_recipe(SupremTrainer, {"budget_s": 600}, "auto", "cuda", plain)
    assert "width_candidates" not in budget_recipe(SupremTrainer, {"budget_s": 600}, "auto", "cuda", plain)
    assert "network_width" not in budget_recipe(SupremTrainer, {"iterations": 100}, "auto", "cpu", plain)
    assert "width_candidates" not in budget_recipe(SupremTrainer, {"iterations": 100}, "auto", "cpu", plain)
    assert "network_width" not in budget_recipe(SupremTrainer, {"budget_s": 600}, "auto", "cpu", plain,
                                                pretrained="weights.pth"), "a checkpoint fixes the widths"
    assert "network_width" not in budget_recipe(SupremTrainer, {"budget_s": 600}, "auto", "cpu",
                                                {"name": "suprem_unet", "kwargs": {}})
    assert budget_recipe(SupremTrainer, {}, "auto", "cpu", plain) == {}


def test_short_budget_recipe_gives_2d_a_smaller_patch_on_cpu_only():
    """With a CPU budget the 2D patch shrinks to about 0.45 of its area, each axis a multiple of the network's
    stride and never under 128 voxels (training/budget_patch.py); 3D, GPU and fixed iteration counts keep the
    plan's patch."""
    from suprem_auto.training.run import budget_recipe

    unet_2d = {"name": "plain_unet", "kwargs": {"strides": [[1, 1]] + [[2, 2]] * 5}}
    unet_3d = {"name": "plain_unet", "kwargs": {"strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]]}}

    def patch(overrides, device="cpu", planned=(256, 224), architecture=unet_2d):
        return budget_recipe(SupremTrainer, overrides, "auto", device, architecture,
                             planned_patch=planned).get("patch_size")

    assert patch({"budget_s": 600}) == [160, 160]
    assert patch({"budget_s": 600}, planned=(512, 512)) == [352, 352]
    assert patch({"budget_s": 600}, planned=(192, 96)) == [128, 96], "no axis under 128 nor above the plan"
    assert patch({"budget_s": 600}, planned=(56, 40)) is None, "small slices keep their patch"
    assert patch({"budget_s": 600}, device="cuda") is None
    assert patch({"iterations": 500}) is None
    assert patch({"budget_s": 600}, planned=(10, 256, 224), architecture=unet_3d) is None
    assert patch({"budget_s": 600}, architecture={"name": "plain_unet", "kwargs": {}}) is None, "strides unknown"


def test_width_and_patch_reach_the_results_plans_and_threads_are_recorded(roots):
    """Prediction reads the results folder's plans (written from ``effective_plans`` when a training starts): they
    must hold the network and the patch the run trained on."""
    threads = torch.get_num_threads()
    trainer = build_trainer(4, "3d_fullres", 3, roots, overrides={"network_width": 2.0, "num_workers": 1,
                                                                  "num_threads": 1, "patch_size": [16, 16, 16]},
                            device="cpu", echo=False)
    try:
        trainer.initialize()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    widths = trainer.architecture["kwargs"]["features_per_stage"]
    assert widths == [8, 16, 32]
    results_plans = trainer.effective_plans()
    assert results_plans["configurations"]["3d_fullres"]["architecture"]["kwargs"]["features_per_stage"] == widths
    assert results_plans["configurations"]["3d_fullres"]["patch_size"] == [16, 16, 16]
    assert trainer.hyperparameters()["compute_threads"] == 1 and trainer.hyperparameters()["num_workers"] == 1


def test_val_rebuilds_the_network_the_budget_run_trained(roots):
    """--val after a run whose recipe narrowed the network: the recorded config (here only the checkpoint's, as for a
    checkpoint copied on its own) decides the network, not the defaults."""
    args = ["4", "3d_fullres", "4", "--iterations", "4", "--val_iters", "1", "--network_width", "0.5",
            "--no_mirroring", "--no_final_validation", *FAST, *_flags(roots)]
    assert train_main(args) == 0
    fold = _fold_dir(roots, fold="4")
    (fold / "hyperparameters.json").unlink()
    assert train_main(["4", "3d_fullres", "4", "--val", *FAST, *_flags(roots)]) == 0
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["metric_per_case"], "validation ran with the trained network"
    results_plans = json.loads((fold.parent / "plans.json").read_text())
    assert results_plans["configurations"]["3d_fullres"]["architecture"]["kwargs"]["features_per_stage"] == [4, 4, 8]
