"""Extension points without editing the package.

The architecture registry: a backbone added from outside the package (one ``register_backbone`` call) plans,
trains, predicts and re-loads its own checkpoint on real hippocampus cases; the command-line tools find it through
the ``suprem_auto.backbones`` entry-point group; the shipped entries describe their real networks.
Trainer plugins: ``suprem_train -tr tests.plugin_trainer:MyTrainer`` trains with a user's trainer class, imported
from the current directory; a wrong plugin is a one-line error that writes nothing."""
from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
from torch import nn

from conftest import REPO, hippo_cases, hippo_image
from training_data import DATASET, make_training_roots, tiny_plans

from suprem_auto.cli.train import main as train_main
from suprem_auto.inference.predictor import Predictor
from suprem_auto.networks import build_network, parameter_groups, scale_width
from suprem_auto.networks.registry import (Backbone, backbone_names, backbones, get_backbone, register_backbone,
                                           unregister_backbone)
from suprem_auto.planning import PlansError, load_plans
from suprem_auto.training.registry import resolve_trainer, trainer_classes, trainer_for_backbone
from suprem_auto.training.run import build_trainer, train_fold
from suprem_auto.training.trainers import FineTuneTrainer


class TinyNet(nn.Module):
    """A two-level 3D conv net: what a user would register (any input edge divisible by 2)."""

    def __init__(self, num_input_channels: int, num_outputs: int, width: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv3d(num_input_channels, width, 3, padding=1), nn.InstanceNorm3d(width, affine=True),
            nn.LeakyReLU(0.01), nn.Conv3d(width, 2 * width, 3, stride=2, padding=1),
            nn.InstanceNorm3d(2 * width, affine=True), nn.LeakyReLU(0.01))
        self.decoder = nn.Sequential(nn.ConvTranspose3d(2 * width, width, 2, stride=2),
                                     nn.InstanceNorm3d(width, affine=True), nn.LeakyReLU(0.01))
        self.head = nn.Conv3d(width, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(x)))


TINY = "tiny_test_net"
# everything but the factory, so that the entry-point plugin below declares the very same entry
TINY_FIELDS = dict(name=TINY, allowed_kwargs={"width"}, description="test two-level conv net", width_arg="width",
                   width_multiple=4, patch_divisor=2, encoder_prefixes=("encoder.",), head_prefixes=("head.",),
                   first_layers=("encoder.0.weight",))
TINY_ARCH = {"name": TINY, "kwargs": {"width": 8}}
ITERATIONS = dict(iterations=6, val_iters_per_epoch=1, num_workers=0)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def tiny_backbone():
    """The test's backbone registered from this module alone; removed again afterwards."""
    entry = register_backbone(Backbone(factory=TinyNet, **TINY_FIELDS))
    yield entry
    unregister_backbone(TINY)


@pytest.fixture(scope="module")
def trained(tiny_backbone, tmp_path_factory):
    """5 real cases planned with the tiny backbone, fold 0 trained for a few iterations: (roots, model folder)."""
    plans = tiny_plans(patch_size=(16, 24, 16))
    plans["configurations"]["3d_fullres"]["architecture"] = TINY_ARCH
    roots = make_training_roots(tmp_path_factory.mktemp("tinynet"), 5, plans)
    trainer = build_trainer(4, "3d_fullres", 0, roots, device="cpu", echo=False, overrides=ITERATIONS)
    summary = train_fold(trainer)
    return roots, trainer.fold_dir.parent, summary


def test_backbone_from_outside_plans_trains_predicts_and_reloads(trained, tmp_path):
    roots, model, summary = trained
    assert load_plans(roots.preprocessed / DATASET / "suprem_plans.json")["configurations"]["3d_fullres"][
        "architecture"]["name"] == TINY  # the plans schema knows the new name
    assert model.name == "SupremTrainer__suprem_plans__3d_fullres"
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=True)
    assert checkpoint["architecture"] == TINY_ARCH
    assert {"encoder.0.weight", "head.weight"} <= set(checkpoint["network_weights"])
    assert summary["metric_per_case"]  # the final validation predicted the fold's validation case

    # prediction from the model folder on a case the training never saw, in the input's geometry
    case = hippo_cases(1, start=5)[0]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"{case}_0000.nii.gz").symlink_to(hippo_image(case))
    predictor = Predictor.from_model_folder(model, folds=[0], device="cpu", progress=False)
    report = predictor.predict_files(tmp_path / "in", tmp_path / "out")
    assert report.ok, report.failed
    seg = sitk.ReadImage(str(tmp_path / "out" / f"{case}.nii.gz"))
    assert seg.GetSize() == sitk.ReadImage(str(hippo_image(case))).GetSize()
    assert set(sitk.GetArrayFromImage(seg).ravel().tolist()) <= {0, 1, 2}

    # -pretrained with our own checkpoint: the trainer is SupremTrainer (no default_trainer), every tensor loads
    source = model / "fold_0" / "checkpoint_final.pth"
    trainer = build_trainer(4, "3d_fullres", 1, roots, pretrained=str(source), device="cpu", echo=False,
                            overrides=ITERATIONS)
    assert trainer.trainer_name == "SupremTrainer"
    trainer.initialize()
    trainer.initialize_from_pretrained(str(source))
    for key, value in trainer.network.state_dict().items():
        assert torch.equal(value, checkpoint["network_weights"][key]), key
    load_report = json.loads((trainer.fold_dir / "load_report.json").read_text())
    assert load_report["layout"] == "suprem_auto_checkpoint" and load_report["target_backbone"] == TINY
    assert not load_report["reinitialised"]


def test_registry_entry_drives_groups_width_and_channel_adaptation(tiny_backbone, tmp_path):
    net = build_network(TINY_ARCH, 1, 3, deep_supervision=True)
    groups = parameter_groups(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in groups["encoder"]} == {"encoder"}
    assert {names[id(p)].split(".")[0] for p in groups["decoder"]} == {"decoder"}
    assert {names[id(p)] for p in groups["head"]} == {"head.weight", "head.bias"}
    assert scale_width(TINY_ARCH, 0.5)["kwargs"]["width"] == 4  # width_arg, rounded to width_multiple
    assert scale_width(TINY_ARCH, 1.3)["kwargs"]["width"] == 12

    # a 1-channel checkpoint initialises a 2-channel network: the registry's first layer is adapted
    from suprem_auto.pretrained import load_pretrained

    one = build_network(TINY_ARCH, 1, 3, deep_supervision=False)
    path = tmp_path / "tiny.pth"
    torch.save({"network_weights": one.state_dict(), "trainer_name": "SupremTrainer", "architecture": TINY_ARCH},
               path)
    two = build_network(TINY_ARCH, 2, 3, deep_supervision=False)
    report = load_pretrained(two, TINY, path)
    assert list(report.adapted) == ["encoder.0.weight"]
    assert torch.allclose(two.state_dict()["encoder.0.weight"].sum(1), one.state_dict()["encoder.0.weight"][:, 0])


def test_unknown_or_duplicate_backbones_are_clear_errors(tiny_backbone, tmp_path):
    with pytest.raises(ValueError, match="unknown architecture 'nope'.*tiny_test_net"):
        get_backbone("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(Backbone(factory=nn.Identity, **{**TINY_FIELDS, "patch_divisor": 4}))
    assert get_backbone(TINY) is tiny_backbone  # the refused entry changed nothing
    plans = tiny_plans()
    plans["configurations"]["3d_fullres"]["architecture"] = {"name": "nope", "kwargs": {}}
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(plans))
    with pytest.raises(PlansError, match=f"{path}.*'configurations.3d_fullres.architecture.name' must be one of"):
        load_plans(path)


def test_default_trainer_of_an_entry_is_a_finetune_trainer_with_its_backbone():
    entry = register_backbone(Backbone(factory=TinyNet, **{**TINY_FIELDS, "name": "tiny_finetuned"},
                                       default_trainer="TinyFineTuneTrainer"))
    try:
        cls = trainer_classes()["TinyFineTuneTrainer"]
        assert issubclass(cls, FineTuneTrainer) and cls.backbone == "tiny_finetuned"
        assert cls.default_config().optimizer == "adamw"
        assert trainer_for_backbone("tiny_finetuned") == "TinyFineTuneTrainer"
        assert resolve_trainer("TinyFineTuneTrainer_3epochs") == (cls, {"num_epochs": 3})
        assert entry.description in cls.description
    finally:
        unregister_backbone("tiny_finetuned")
    assert "TinyFineTuneTrainer" not in trainer_classes()


def test_shipped_entries_describe_their_networks():
    """Every shipped entry's prefixes and first layers name real parameters of its network (small widths)."""
    small = {"plain_unet": tiny_plans(features=(4, 8))["configurations"]["3d_fullres"]["architecture"]["kwargs"],
             "resenc_unet": {"n_stages": 2, "features_per_stage": [4, 8], "kernel_sizes": [[3, 3, 3]] * 2,
                             "strides": [[1, 1, 1], [2, 2, 2]], "n_blocks_per_stage": [1, 1],
                             "n_conv_per_stage_decoder": [1]},
             "suprem_unet": {"base_width": 4}, "segresnet": {"init_filters": 8}, "swin_unetr": {"feature_size": 12}}
    assert set(small) <= set(backbone_names())
    for entry in backbones():
        if entry.name not in small:
            continue
        net = build_network({"name": entry.name, "kwargs": small[entry.name]}, 2, 3, deep_supervision=False)
        state = net.state_dict()
        params = dict(net.named_parameters())
        for key in entry.first_layers:
            assert key in state and state[key].shape[1] == 2, (entry.name, key)
        groups = {g: {n for n in params if entry.group_of(n) == g} for g in ("encoder", "decoder", "head")}
        assert all(groups.values()), (entry.name, {g: len(v) for g, v in groups.items()})
        assert entry.width_arg in inspect.signature(entry.network_class()).parameters
    assert trainer_for_backbone("suprem_unet") == "SupremUNetTrainer"
    assert trainer_for_backbone("resenc_unet") == "SupremTrainer"


def _entry_point_plugin(folder: Path) -> Path:
    """An installed-looking package declaring TinyNet in the ``suprem_auto.backbones`` entry-point group."""
    folder.mkdir()
    (folder / "tiny_backbone_plugin.py").write_text(
        "import torch\nfrom torch import nn\nfrom suprem_auto.networks.registry import Backbone\n\n\n"
        + textwrap.dedent(inspect.getsource(TinyNet))
        + f"\n\nBACKBONE = Backbone(factory=TinyNet, **{TINY_FIELDS!r})\n")
    dist = folder / "tiny_backbone_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-backbone-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[suprem_auto.backbones]\n{TINY} = tiny_backbone_plugin:BACKBONE\n")
    return folder


def test_command_line_finds_a_backbone_through_its_entry_point(trained, tmp_path):
    """suprem_predict in a fresh process predicts with the tiny model once the entry point is installed, and
    without it stops with one line naming the plans field and the unknown architecture."""
    _, model, _ = trained
    case = hippo_cases(1, start=5)[0]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / f"{case}_0000.nii.gz").symlink_to(hippo_image(case))
    command = [sys.executable, "-m", "suprem_auto.cli.predict", "-i", str(tmp_path / "in"), "-m", str(model),
               "-f", "0", "-device", "cpu", "--disable_progress_bar"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    plain = subprocess.run(command + ["-o", str(tmp_path / "without")], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
    assert plain.returncode != 0 and f"architecture.name' must be one of" in plain.stderr
    assert f"got '{TINY}'" in plain.stderr and len(plain.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "without" / f"{case}.nii.gz").exists()

    env["PYTHONPATH"] = str(_entry_point_plugin(tmp_path / "site"))
    run = subprocess.run(command + ["-o", str(tmp_path / "with")], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "with" / f"{case}.nii.gz").is_file()


# ----------------------------------------------------------------------------------------------- trainer plugins
@pytest.fixture(scope="module")
def plain_roots(tmp_path_factory):
    """5 real cases with the tiny plain U-Net plan."""
    return make_training_roots(tmp_path_factory.mktemp("plugin"), 5, tiny_plans(patch_size=(16, 24, 16),
                                                                                 features=(4, 8, 16)))


def _root_flags(roots) -> list:
    return ["--raw", str(roots.raw), "--preprocessed", str(roots.preprocessed), "--results", str(roots.results)]


def test_trainer_plugin_trains_from_the_current_directory(plain_roots, tmp_path):
    """Run like the installed ``suprem_train`` script (whose folder, not the current one, is first on sys.path):
    the plugin module is found from the working directory, its recipe and hook are used, and the fold folder is
    named after the class."""
    launcher = tmp_path / "suprem_train_script.py"
    launcher.write_text("import sys\nfrom suprem_auto.cli.train import main\nsys.exit(main())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, str(launcher), "4", "0", "-tr", "tests.plugin_trainer:MyTrainer",
                          "--iterations", "4", "--val_iters", "1", "--num_workers", "0", "-device", "cpu",
                          *_root_flags(plain_roots)], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    fold = plain_roots.results / DATASET / "MyTrainer__suprem_plans__3d_fullres" / "fold_0"
    hp = json.loads((fold / "hyperparameters.json").read_text())
    assert hp["trainer_class"] == "MyTrainer" and hp["trainer_name"] == "tests.plugin_trainer:MyTrainer"
    assert hp["config"]["lr"] == 0.005 and hp["config"]["deep_supervision"] is False
    epochs = [json.loads(line)["epoch"] for line in (fold / "metrics.jsonl").read_text().splitlines() if line]
    noted = [int(line.split()[0]) for line in (fold / "plugin_epochs.txt").read_text().splitlines()]
    assert noted == epochs and epochs  # the plugin's hook ran after every epoch
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "validation" / "summary.json").is_file()


@pytest.mark.parametrize("spec, problem", [
    ("tests.plugin_trainer:NotATrainer", "'NotATrainer' in module 'tests.plugin_trainer' is not a subclass of "
                                         "suprem_auto.training.trainers.BaseTrainer"),
    ("tests.plugin_trainer:Nope", r"module 'tests.plugin_trainer' \(.*plugin_trainer\.py\) has no 'Nope'"),
    ("no_such_plugin_module:MyTrainer", "cannot import module 'no_such_plugin_module' \\(ModuleNotFoundError"),
    ("tests.plugin_trainer:", "a trainer plugin is written package.module:ClassName"),
])
def test_wrong_trainer_plugin_is_one_line_and_writes_nothing(plain_roots, capsys, spec, problem):
    assert train_main(["4", "1", "-tr", spec, "--iterations", "2", "-device", "cpu", *_root_flags(plain_roots)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"suprem_train: error: -tr {spec}: ")
    assert re.search(problem, err), err
    assert not any("fold_1" in str(p) for p in plain_roots.results.rglob("*"))


def test_plugin_suffixes_and_help():
    from tests.plugin_trainer import MyTrainer

    assert resolve_trainer("tests.plugin_trainer:MyTrainer_NoMirroring_3epochs") == (
        MyTrainer, {"mirror_axes": None, "num_epochs": 3})
    from suprem_auto.cli.train import build_parser

    assert "package.module:ClassName" in build_parser().format_help()
