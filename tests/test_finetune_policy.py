"""Fine-tuning policies (issue 18): a -pretrained run takes the measured default policy, a flag picks another and
single fields still override it; the policy's mechanisms (warm-up + poly, encoder frozen for a share of the run,
layer-wise rate decay over the encoder) do what they say on a real run and a real network."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training_data import DATASET, make_training_roots, tiny_plans

from suprem_auto.cli.train import main as train_main
from suprem_auto.networks import build_network
from suprem_auto.paths import Roots
from suprem_auto.training.config import TrainingConfig
from suprem_auto.training.finetune_policy import default_policy_name, get_policy, policy_names
from suprem_auto.training.optim import build_optimizer
from suprem_auto.training.schedule import lr_at_progress

FAST = ["--num_workers", "1", "-device", "cpu", "--no_final_validation"]


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> Roots:
    return make_training_roots(tmp_path_factory.mktemp("policy"), 4,
                               tiny_plans(patch_size=(16, 24, 16), features=(4, 8, 16)))


def _flags(roots: Roots, results: Path) -> list:
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(results)]


def _fold(results: Path, trainer: str = "SupremTrainer") -> Path:
    return results / DATASET / f"{trainer}__suprem_plans__3d_fullres" / "fold_all"


@pytest.fixture(scope="module")
def source_checkpoint(roots, tmp_path_factory) -> Path:
    """A real checkpoint of this task (a few iterations from scratch) to fine-tune from."""
    results = tmp_path_factory.mktemp("source")
    assert train_main(["4", "3d_fullres", "all", "--iterations", "2", *FAST, *_flags(roots, results)]) == 0
    return _fold(results) / "checkpoint_final.pth"


def test_a_pretrained_run_takes_the_default_policy_and_flags_override_it(roots, source_checkpoint, tmp_path):
    default = get_policy(None)
    assert default is not None and default.name == default_policy_name()
    assert train_main(["4", "3d_fullres", "all", "--iterations", "3", "-pretrained", str(source_checkpoint), *FAST,
                       *_flags(roots, tmp_path / "a")]) == 0
    hp = json.loads((_fold(tmp_path / "a") / "hyperparameters.json").read_text())
    assert hp["finetune_policy"]["name"] == default.name
    for key, value in default.changes.items():
        assert hp["config"][key] == value, key

    # another policy by name, and one of its fields overridden by its own flag
    other = next(n for n in policy_names() if n not in (default.name, "trainer"))
    assert train_main(["4", "3d_fullres", "all", "--iterations", "3", "-pretrained", str(source_checkpoint),
                       "--finetune_policy", other, "--lr", "0.0042", *FAST, *_flags(roots, tmp_path / "b")]) == 0
    hp = json.loads((_fold(tmp_path / "b") / "hyperparameters.json").read_text())
    assert hp["finetune_policy"]["name"] == other and hp["finetune_policy"]["overridden_by_flags"] == ["lr"]
    assert hp["config"]["lr"] == 0.0042
    assert hp["config"]["optimizer"] == get_policy(other).changes["optimizer"]


def test_a_scratch_run_has_no_policy_and_an_unknown_policy_is_refused(roots, tmp_path, capsys):
    assert train_main(["4", "3d_fullres", "all", "--iterations", "2", "--finetune_policy", "layer_decay", *FAST,
                       *_flags(roots, tmp_path / "s")]) == 0
    hp = json.loads((_fold(tmp_path / "s") / "hyperparameters.json").read_text())
    assert hp["finetune_policy"] is None and hp["config"]["finetune_policy"] is None
    assert hp["config"]["encoder_layer_decay"] == 1.0
    code = train_main(["4", "3d_fullres", "all", "--iterations", "2", "--finetune_policy", "no_such_policy", *FAST,
                       *_flags(roots, tmp_path / "u")])
    assert code != 0 and "no_such_policy" in capsys.readouterr().err


def test_encoder_frozen_for_the_whole_run_keeps_the_pretrained_encoder(roots, source_checkpoint, tmp_path):
    """``frozen_encoder_warmup`` with the frozen share set to the whole run: the encoder leaves training exactly as
    loaded, the decoder has learned."""
    assert train_main(["4", "3d_fullres", "all", "--iterations", "4", "-pretrained", str(source_checkpoint),
                       "--finetune_policy", "frozen_encoder_warmup", "--freeze_encoder_fraction", "1.0", *FAST,
                       *_flags(roots, tmp_path / "f")]) == 0
    before = torch.load(source_checkpoint, weights_only=True)["network_weights"]
    after = torch.load(_fold(tmp_path / "f") / "checkpoint_final.pth", weights_only=True)["network_weights"]
    encoder = [k for k in before if k.startswith("encoder.") and before[k].is_floating_point()
               and "running" not in k]
    decoder = [k for k in before if k.startswith("decoder.") and k.endswith("weight")]
    assert encoder and decoder
    assert all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)


def test_layer_decay_gives_deeper_encoder_stages_higher_rates():
    architecture = tiny_plans(features=(4, 8, 16))["configurations"]["3d_fullres"]["architecture"]
    network = build_network(architecture, 1, 3, deep_supervision=True)
    optimizer = build_optimizer(network, TrainingConfig(encoder_layer_decay=0.5))
    encoder = [g for g in optimizer.param_groups if g["group_name"] == "encoder"]
    assert [g["encoder_stage"] for g in encoder] == list(range(len(encoder))) and len(encoder) == 3
    assert [g["lr_multiplier"] for g in encoder] == pytest.approx([0.125, 0.25, 0.5])
    assert all(g["lr_multiplier"] == 1.0 for g in optimizer.param_groups if g["group_name"] != "encoder")
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in network.parameters())  # every parameter exactly once


def test_warmup_poly_rises_to_the_peak_then_decays_to_zero():
    lrs = [lr_at_progress("warmup_poly", 1e-3, i / 100, 0.05, first_step=0.01) for i in range(101)]
    assert lrs[:5] == sorted(lrs[:5]) and lrs[5] == pytest.approx(1e-3)
    assert lrs[5:] == sorted(lrs[5:], reverse=True) and lrs[-1] == 0.0


def _preprocessing_warnings(fold: Path) -> list:
    return [line for line in (fold / "training_log.txt").read_text().splitlines()
            if "preprocessing differs from the checkpoint's" in line]


def test_own_checkpoint_records_its_preprocessing_and_fine_tuning_elsewhere_says_what_to_expect(
        roots, source_checkpoint, tmp_path):
    """A checkpoint knows what it was trained on; fine-tuning on the same preprocessing warns of nothing, on a
    coarser spacing it names both spacings and the scale, then trains."""
    stored = torch.load(source_checkpoint, weights_only=True)["preprocessing"]
    assert stored["dataset_name"] == DATASET and stored["configuration"] == "3d_fullres"
    assert stored["spacing"] == [1.0, 1.0, 1.0] and stored["normalization"] == ["zscore"]
    assert stored["channel_names"] == ["MRI"] and stored["foreground_labels"] == ["Anterior", "Posterior"]

    assert train_main(["4", "3d_fullres", "all", "--iterations", "2", "-pretrained", str(source_checkpoint), *FAST,
                       *_flags(roots, tmp_path / "same")]) == 0
    assert _preprocessing_warnings(_fold(tmp_path / "same")) == []

    plans = tiny_plans(patch_size=(16, 24, 16), features=(4, 8, 16))
    plans["configurations"]["3d_fullres"]["spacing"] = [1.5, 1.5, 1.5]
    coarse = make_training_roots(tmp_path / "coarse", 3, plans)
    assert train_main(["4", "3d_fullres", "all", "--iterations", "2", "-pretrained", str(source_checkpoint), *FAST,
                       *_flags(coarse, tmp_path / "coarse_results")]) == 0
    warnings = _preprocessing_warnings(_fold(tmp_path / "coarse_results"))
    assert len(warnings) == 1, warnings
    assert "[1.5, 1.5, 1.5] mm" in warnings[0] and "[1.0, 1.0, 1.0] mm" in warnings[0]
    assert "appear 0.67x the size" in warnings[0] and "PRETRAINING.md" in warnings[0]
