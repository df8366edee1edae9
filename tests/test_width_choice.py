"""The network width of a --budget run, chosen from step times timed on this machine and measured learning curves
(issue 14): the rule on hand-made curves, the shipped curves file, and real budgeted runs on hippocampus cases."""
from __future__ import annotations

import json
import time

import pytest
import torch

from training_data import DATASET, make_training_roots, tiny_plans

from suprem_auto.cli.train import main as train_main
from suprem_auto.networks import scale_width
from suprem_auto.paths import Roots
from suprem_auto.training.run import build_trainer
from suprem_auto.training.width_choice import (CURVES_FILE, choose_width, load_curves, measured_widths,
                                               relative_quality)

START_UP_MARGIN_S = 30.0
FAST = ["--num_workers", "1", "-device", "cpu"]

#: two datasets of different difficulty; the wide network learns more per iteration, the narrow one is cheaper
CURVES = {"curves": [
    {"dataset": "a", "points": {"0.25": [[250, 0.70], [1000, 0.80], [4000, 0.84]],
                                "1.0": [[250, 0.78], [1000, 0.88]]}},
    {"dataset": "b", "points": {"0.25": [[250, 0.35], [1000, 0.40], [4000, 0.42]],
                                "1.0": [[250, 0.39], [1000, 0.44]]}},
]}


def test_relative_quality_interpolates_in_log_iterations_and_stays_flat_past_the_last_point():
    assert relative_quality(CURVES, 1.0, 1000) == pytest.approx(1.0)              # each dataset's best
    assert relative_quality(CURVES, 0.25, 250) == pytest.approx((0.70 / 0.88 + 0.35 / 0.44) / 2)
    assert relative_quality(CURVES, 0.25, 500) == pytest.approx(((0.75 / 0.88) + (0.375 / 0.44)) / 2)
    assert relative_quality(CURVES, 1.0, 10 ** 6) == relative_quality(CURVES, 1.0, 1000), "no unmeasured gain"
    assert relative_quality(CURVES, 0.25, 1) == 0.0
    assert relative_quality(CURVES, 0.5, 1000) is None, "no curve, no prediction"
    assert measured_widths(CURVES) == [0.25, 1.0]


def test_choose_width_follows_the_iterations_the_budget_buys():
    # a slow machine: 600 s buy 150 iterations of the wide network but 1,200 of the narrow one -> narrow
    slow = choose_width({0.25: 0.5, 1.0: 4.0}, 600, CURVES)
    assert slow.width == 0.25 and slow.predicted_iterations == {"0.25": 1200, "1": 150}
    # a fast machine: the same budget buys 1,000+ wide iterations -> wide
    fast = choose_width({0.25: 0.05, 1.0: 0.4}, 600, CURVES)
    assert fast.width == 1.0 and fast.predicted_quality["1"] == pytest.approx(1.0)
    # near-tie: the narrower one
    tie = choose_width({0.25: 0.01, 1.0: 0.6}, 600, {"curves": [
        {"dataset": "a", "points": {"0.25": [[1000, 0.875]], "1.0": [[1000, 0.88]]}}]})
    assert tie.width == 0.25 and "narrower" in tie.reason
    # a timed width without a curve is never chosen
    assert choose_width({0.25: 0.5, 0.5: 0.01}, 600, CURVES).width == 0.25
    with pytest.raises(ValueError, match="no width"):
        choose_width({}, 600, CURVES)


def test_shipped_curves_cover_the_recipe_candidates_on_two_datasets(tmp_path):
    from suprem_auto.training.budget import RECIPE_FILE

    curves = load_curves()
    candidates = json.loads(RECIPE_FILE.read_text())["network_width"]["candidates"]
    assert {c["dataset"] for c in curves["curves"]} >= {"hippocampus", "acdc"}
    assert set(measured_widths(curves)) <= set(candidates)
    bad = tmp_path / "curves.json"
    bad.write_text(json.dumps({"curves": [{"dataset": "x", "points": {"wide": [[10, 0.5]]}}]}))
    with pytest.raises(ValueError, match="curves.json"):
        load_curves(bad)
    assert CURVES_FILE.is_file()


@pytest.fixture(scope="module")
def shared_roots(tmp_path_factory):
    return make_training_roots(tmp_path_factory.mktemp("width"), 6,
                               tiny_plans(patch_size=(16, 24, 16), features=(8, 16, 32)))


def _flags(roots: Roots) -> list:
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]


def _model(roots: Roots):
    return roots.results / DATASET / "SupremTrainer__suprem_plans__3d_fullres"


def test_the_trainer_times_each_candidate_and_keeps_the_chosen_width(shared_roots, tmp_path):
    """A 10-minute budget: each candidate is timed with real training steps of its network, the choice follows the
    shipped curves, and the probe's networks are dropped (training builds the chosen one from the run's seed)."""
    roots = Roots(shared_roots.raw, shared_roots.preprocessed, tmp_path / "results")
    trainer = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False,
                            overrides={"budget_s": 600, "num_workers": 1})
    assert trainer.config.width_candidates == [0.25, 0.5, 1.0] and trainer.config.network_width == 0.25
    start = time.monotonic()
    choice = trainer.choose_network_width()
    assert time.monotonic() - start < 0.03 * 600 + 10, "the probe keeps to its share of the budget"
    assert set(choice.step_s) | set(choice.skipped) == {"0.25", "0.5", "1"} and "0.25" in choice.step_s
    assert all(s > 0 for s in choice.step_s.values())
    steps = {float(w): s for w, s in choice.step_s.items()}
    assert choice.width == choose_width(steps, choice.training_s, load_curves()).width
    assert trainer.config.network_width == choice.width and trainer.config.width_candidates is None
    assert trainer.network is None and trainer.optimizer is None
    # after training, what the width really did is recorded beside the probe's prediction
    trainer.fold_dir.mkdir(parents=True, exist_ok=True)
    trainer.record_width_choice()
    trainer.record_width_outcome(1234, 0.31)
    recorded = json.loads((trainer.fold_dir / "width_choice.json").read_text())
    assert recorded["outcome"] == {"iterations": 1234, "sec_per_iteration": 0.31,
                                   "predicted_iterations": choice.predicted_iterations[f"{choice.width:g}"]}
    assert recorded["step_s"] == choice.step_s
    # the same prediction decides the augmentation: these tiny steps buy many passes over the training cases
    min_passes = trainer.config.augmentation_min_passes
    assert min_passes is not None, "the short-budget recipe sets the rule"
    predicted = choice.predicted_iterations[f"{choice.width:g}"]
    cases = len(trainer.split()[0])
    assert recorded["augmentation"]["training_samples"] == cases
    assert recorded["augmentation"]["predicted_passes"] == pytest.approx(predicted * 2 / cases, rel=0.01)
    assert recorded["augmentation"]["augment"] is True and trainer.config.augmentation is True


def test_a_budget_of_few_passes_over_the_data_trains_without_augmentation(shared_roots, tmp_path):
    roots = Roots(shared_roots.raw, shared_roots.preprocessed, tmp_path / "results")
    trainer = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False,
                            overrides={"budget_s": 150, "num_workers": 1, "augmentation_min_passes": 1e9})
    choice = trainer.choose_network_width()
    assert trainer.config.augmentation is False
    assert choice.augmentation["augment"] is False
    assert choice.augmentation["training_samples"] == len(trainer.split()[0])
    assert choice.augmentation["predicted_passes"] < 1e9 and "fewer than" in choice.augmentation["reason"]
    # a flag that already switched it off is left alone, and without the rule nothing is decided
    off = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False,
                        overrides={"budget_s": 150, "num_workers": 1, "augmentation": False})
    assert not off.choose_network_width().augmentation and off.config.augmentation is False
    # mirroring asked for on the command line goes with the augmentation the rule switches off (no test-time
    # mirroring of a model that never saw a mirrored image); kept where augmentation stays on
    mirrored = dict(budget_s=150, num_workers=1, mirror_axes=[2])
    dropped = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False,
                            overrides={**mirrored, "augmentation_min_passes": 1e9})
    dropped.choose_network_width()
    assert dropped.config.augmentation is False and dropped.config.mirror_axes is None
    kept = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False,
                         overrides={**mirrored, "augmentation_min_passes": 0})
    kept.choose_network_width()
    assert kept.config.augmentation is True and kept.config.mirror_axes == [2]
    from suprem_auto.cli.train import build_parser
    from suprem_auto.training.config import overrides_from_args

    def parsed(*flags: str):
        return overrides_from_args(build_parser().parse_args(["4", "all", *flags]))

    assert parsed("--mirror_axes", "2,0")["mirror_axes"] == [0, 2]
    assert parsed("--mirror_axes", "0", "1", "2")["mirror_axes"] == [0, 1, 2]  # spaces, as in -f 0 1 2
    for wrong, message in [(["--mirror_axes", "3"], "among 0, 1 and 2"), (["--mirror_axes", "x"], "not a list of axes"),
                           (["--mirror_axes", "2", "--no_mirroring"], "cannot be combined")]:
        with pytest.raises(ValueError, match=message):
            parsed(*wrong)


def test_budget_run_records_its_width_and_later_folds_take_it(shared_roots, tmp_path):
    roots = Roots(shared_roots.raw, shared_roots.preprocessed, tmp_path / "results")
    budget = 45
    start = time.monotonic()
    assert train_main(["4", "3d_fullres", "0", "--budget", f"{budget}s", "--no_final_validation", *FAST,
                       *_flags(roots)]) == 0
    assert time.monotonic() - start <= budget + START_UP_MARGIN_S
    fold = _model(roots) / "fold_0"
    choice = json.loads((fold / "width_choice.json").read_text())
    assert choice["width"] == 0.25 and "nothing timed" in choice["reason"], "too short to time: the fallback"
    hyper = json.loads((fold / "hyperparameters.json").read_text())
    assert hyper["config"]["network_width"] == choice["width"] and hyper["config"]["width_candidates"] is None
    expected = scale_width({"name": "plain_unet", "kwargs": {"features_per_stage": [8, 16, 32]}}, choice["width"])
    ckpt = torch.load(fold / "checkpoint_final.pth", weights_only=True)
    assert ckpt["architecture"]["kwargs"]["features_per_stage"] == expected["kwargs"]["features_per_stage"]
    assert f"network width {choice['width']:g}" in (fold / "training_log.txt").read_text()
    # a second fold of the same model folder takes the first fold's width (prediction builds one network)
    assert train_main(["4", "3d_fullres", "1", "--budget", "20s", "--no_final_validation", *FAST,
                       *_flags(roots)]) == 0
    second = json.loads((_model(roots) / "fold_1" / "width_choice.json").read_text())
    assert second["width"] == choice["width"] and "other folds" in second["reason"] and not second["step_s"]


def test_a_width_given_on_the_command_line_is_not_rechosen(shared_roots, tmp_path):
    roots = Roots(shared_roots.raw, shared_roots.preprocessed, tmp_path / "results")
    assert train_main(["4", "3d_fullres", "0", "--budget", "15s", "--network_width", "0.5", "--no_final_validation",
                       *FAST, *_flags(roots)]) == 0
    fold = _model(roots) / "fold_0"
    assert not (fold / "width_choice.json").exists()
    assert json.loads((fold / "hyperparameters.json").read_text())["config"]["network_width"] == 0.5
