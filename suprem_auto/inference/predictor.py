"""The predictor: load a trained model folder once, then predict arrays or files in the inputs' exact geometry.

Preprocessing follows the plan (reorientation, crop, resampling, normalisation), each fold predicts with the
sliding window, folds are ensembled by averaging probabilities (softmax, or sigmoid for regions), and the
probabilities are reverted to the input's array space before the label map is derived and written.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from suprem_auto.dataset import LabelSpec, parse_labels
from suprem_auto.imageio import read_images
from suprem_auto.inference.cascade import (PreviousStage, PreviousStageModel, previous_stage_channels,
                                           previous_stage_model_folder)
from suprem_auto.inference.cases import (CaseInputs, InputCase, channel_names_of, check_outputs_spare_inputs,
                                         find_input_cases)
from suprem_auto.inference.intensity_check import intensity_warnings
from suprem_auto.inference.export import probabilities_path, segmentation_path, write_case
from suprem_auto.inference.postprocessing import POSTPROCESSING_FILE, apply_postprocessing, load_postprocessing
from suprem_auto.inference.sliding_window import predict_sliding_window, resolve_precision
from suprem_auto.networks import build_network
from suprem_auto.planning import PlansError, load_plans, plans_view
from suprem_auto.preprocessing import preprocess_case, probabilities_to_segmentation, revert_probabilities
from suprem_auto.utils.atomic import load_json
from suprem_auto.utils.checkpoint_format import CheckpointError
from suprem_auto.utils.checkpoint_format import load_checkpoint as read_our_checkpoint
from suprem_auto.utils.device import DeviceLike, resolve_device

logger = logging.getLogger(__name__)
PathLike = Union[str, Path]
StateDict = Dict[str, torch.Tensor]
DEFAULT_CHECKPOINT = "checkpoint_final.pth"
_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DistributedDataParallel wrappers


class ModelFolderError(ValueError):
    """A model folder or checkpoint is missing or invalid; the message names the file."""


@dataclass
class PredictionReport:
    """Outcome of :meth:`Predictor.predict_files`: written, skipped (already present) and failed cases."""

    written: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    failed: Dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _default_postprocessing_file(folder: Path, fold_names: Sequence[str]) -> Path:
    """The model folder's ``postprocessing.json``; when it has none and only fold 'all' predicts, the one that run
    chose on its training cases (``fold_all/postprocessing.json``, written by the trainer)."""
    shared = folder / POSTPROCESSING_FILE
    fold_all = folder / "fold_all" / POSTPROCESSING_FILE
    if not shared.is_file() and list(fold_names) == ["all"] and fold_all.is_file():
        return fold_all
    return shared


def _strip_prefixes(state: StateDict) -> StateDict:
    out = {}
    for key, value in state.items():
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load one of our checkpoints safely (:func:`suprem_auto.utils.checkpoint_format.load_checkpoint`); any problem
    is a ``ModelFolderError`` naming the file."""
    try:
        return read_our_checkpoint(path)
    except CheckpointError as exc:
        raise ModelFolderError(str(exc)) from None


def _load_plans(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise ModelFolderError(f"{path}: plans.json is missing")
    return load_plans(path)


def _discover_folds(model_folder: Path, checkpoint_name: str) -> List[str]:
    folds = sorted((p.name[len("fold_"):] for p in model_folder.glob("fold_*") if (p / checkpoint_name).is_file()),
                   key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0, f))
    if not folds:
        raise ModelFolderError(f"{model_folder}: no fold_*/{checkpoint_name} found")
    return folds


def default_tile_batch_size(patch_size: Sequence[int], device: torch.device) -> int:
    """Tiles per forward pass: small patches are batched (per-call overhead dominates), large ones go one by one
    on CPU (memory). Capped at 8 for 3D; a 2D patch (one slice per tile) gets twice the voxels and up to 64
    slices per call (bf16 CPU, 2 busy cores: 56x40 slices 170 ms/tile alone, 30 at 32, 26 at 64)."""
    voxels = int(np.prod(patch_size))
    two_d = len(patch_size) == 2
    budget = (2 ** 18 if device.type == "cpu" else 2 ** 21) * (2 if two_d else 1)
    return int(min(64 if two_d else 8, max(1, budget // max(voxels, 1))))


class Predictor:
    """Predicts segmentations with one network and one or more folds' weights.

    Build it with :meth:`from_model_folder` (trained model on disk) or :meth:`from_network` (a network in memory,
    e.g. the trainer's final validation), then call :meth:`predict_files`, :meth:`predict_array` or
    :meth:`predict_preprocessed` as often as needed.

    Example (a trained model folder; ``tests/test_predictor.py`` runs the same calls)::

        from suprem_auto.inference import Predictor
        predictor = Predictor.from_model_folder("results/Dataset004_Hippocampus/SupremTrainer__suprem_plans__3d_fullres",
                                                folds=[0], device="cpu", use_mirroring=False)
        report = predictor.predict_files("imagesTs/", "predictions/")   # report.written, report.failed
    """

    def __init__(self, network: nn.Module, plans: Dict[str, Any], configuration: str, dataset_json: Dict[str, Any],
                 fold_weights: Optional[Sequence[StateDict]] = None, mirror_axes: Optional[Sequence[int]] = None,
                 use_mirroring: bool = True, step_size: float = 0.5, device: DeviceLike = "auto",
                 tile_batch_size: Optional[int] = None, progress: bool = True, cpu_bf16: bool = False,
                 postprocessing: Optional[Dict[str, Any]] = None, precision: str = "auto",
                 nnunet_gaussian: bool = False, previous_stage: Optional[PreviousStage] = None) -> None:
        try:
            self.configuration_plan = plans_view(plans).configuration(configuration)
        except PlansError as exc:
            raise ModelFolderError(str(exc)) from None
        self.plans = plans
        self.configuration = configuration
        self.dataset_json = dataset_json
        self.labels: LabelSpec = parse_labels(dataset_json)
        self.num_channels = len(dataset_json["channel_names"])
        # cascade (3d_cascade_fullres): the previous stage's one-hot segmentation follows the image channels
        self.previous_stage = previous_stage
        self.num_input_channels = self.num_channels + (previous_stage.num_channels if previous_stage else 0)
        self.num_outputs = self.labels.num_segmentation_heads
        self.patch_size = list(self.configuration_plan.patch_size)
        self.device = resolve_device(device)
        self.network = network.to(self.device)
        self.fold_weights = [_strip_prefixes(w) for w in fold_weights] if fold_weights else []
        if len(self.fold_weights) == 1:
            self.network.load_state_dict(self.fold_weights[0])
        default_axes = tuple(range(len(self.patch_size)))
        self.mirror_axes = tuple(mirror_axes if mirror_axes is not None else default_axes) if use_mirroring else ()
        self.step_size = step_size
        self.tile_batch_size = tile_batch_size or default_tile_batch_size(self.patch_size, self.device)
        self.progress = progress
        # auto: bf16 on a CPU with native bf16 (the training's detection), fp16 on CUDA, else fp32; cpu_bf16 = bf16
        self.precision = resolve_precision(precision, self.device, cpu_bf16)
        self.postprocessing = postprocessing
        self.nnunet_gaussian = nnunet_gaussian  # nnU-Net model folders: tiles weighted with nnU-Net's map
        self.file_ending = dataset_json.get("file_ending", ".nii.gz")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model_folder(cls, model_folder: PathLike, folds: Optional[Sequence[Union[int, str]]] = None,
                          checkpoint_name: str = DEFAULT_CHECKPOINT, configuration: Optional[str] = None,
                          use_postprocessing: bool = True, postprocessing_file: Optional[PathLike] = None,
                          **options: Any) -> "Predictor":
        """Load ``plans.json``, ``dataset.json``, ``fold_<k>/<checkpoint_name>`` (all folds found when ``folds`` is
        None) and ``postprocessing.json`` (when present and ``use_postprocessing``; ``postprocessing_file`` names
        another one, e.g. the cross-validation's) from a results folder.

        ``options`` go to the constructor (``use_mirroring``, ``step_size``, ``device``, ``tile_batch_size``,
        ``precision``: auto / fp32 / bf16 / fp16, ...).
        """
        folder = Path(model_folder)
        if not folder.is_dir():
            raise ModelFolderError(f"{folder}: model folder does not exist")
        plans = _load_plans(folder / "plans.json")
        if not (folder / "dataset.json").is_file():
            raise ModelFolderError(f"{folder / 'dataset.json'}: dataset.json is missing")
        dataset_json = load_json(folder / "dataset.json")
        fold_names = [str(f) for f in folds] if folds else _discover_folds(folder, checkpoint_name)
        checkpoints = [load_checkpoint(folder / f"fold_{f}" / checkpoint_name) for f in fold_names]
        if configuration is None:
            parts = folder.name.split("__")
            configuration = parts[2] if len(parts) == 3 else checkpoints[0].get("configuration")
        configurations = plans_view(plans, folder / "plans.json").configurations
        if configuration is None and len(configurations) == 1:
            configuration = next(iter(configurations))
        if configuration not in configurations:
            raise ModelFolderError(f"{folder}: cannot tell the configuration ({configuration!r} not in plans.json)")
        labels = parse_labels(dataset_json, folder / "dataset.json")
        extra_channels = previous_stage_channels(plans, configuration, labels.foreground_labels)
        network = build_network(plans_view(plans).configuration(configuration).architecture.to_json(),
                                len(dataset_json["channel_names"]) + extra_channels, labels.num_segmentation_heads,
                                deep_supervision=False)
        if extra_channels and "previous_stage" not in options:  # cascade: the previous stage's model runs first
            options["previous_stage"] = cls._previous_stage_model(folder, plans, configuration, fold_names,
                                                                  checkpoint_name, labels.foreground_labels, options)
        if "mirror_axes" not in options:
            options["mirror_axes"] = checkpoints[0].get("inference_allowed_mirroring_axes")
        postprocessing = None
        pp_path = Path(postprocessing_file) if postprocessing_file else _default_postprocessing_file(folder,
                                                                                                    fold_names)
        if postprocessing_file and not pp_path.is_file():
            raise ModelFolderError(f"{pp_path}: postprocessing file does not exist")
        if use_postprocessing and pp_path.is_file():
            postprocessing = load_postprocessing(pp_path)
        fold_weights = [_strip_prefixes(c["network_weights"]) for c in checkpoints]
        for name, weights in zip(fold_names, fold_weights):
            problem = _state_dict_mismatch(network, weights)
            if problem:
                raise ModelFolderError(f"{folder / f'fold_{name}' / checkpoint_name}: weights do not fit the "
                                       f"network built from plans.json ({problem})")
        return cls(network, plans, configuration, dataset_json, fold_weights=fold_weights,
                   postprocessing=postprocessing, **options)

    @classmethod
    def _previous_stage_model(cls, folder: Path, plans: Dict[str, Any], configuration: str, fold_names: List[str],
                              checkpoint_name: str, foreground_labels: Sequence[int],
                              options: Dict[str, Any]) -> PreviousStageModel:
        """The cascade's previous stage: ``<trainer>__<plans>__<previous_stage>`` beside ``folder``, with the same
        folds when it has them all (else every fold it has), the same options and no post-processing."""
        previous = plans_view(plans).configuration(configuration).previous_stage
        low_folder = previous_stage_model_folder(folder, previous)
        if not low_folder.is_dir():
            raise ModelFolderError(f"{folder}: the cascade needs the model folder of its previous stage '{previous}', "
                                   f"{low_folder} does not exist (train it: suprem_train <dataset> {previous} <fold> "
                                   f"for every fold, with the same trainer and plans)")
        have = set(_discover_folds(low_folder, checkpoint_name))
        low_folds = fold_names if set(fold_names) <= have else None
        low_options = {k: v for k, v in options.items() if k not in ("mirror_axes", "previous_stage")}
        low = cls.from_model_folder(low_folder, folds=low_folds, checkpoint_name=checkpoint_name,
                                    configuration=previous, use_postprocessing=False, **low_options)
        return PreviousStageModel(low, plans, configuration, foreground_labels)

    @classmethod
    def from_network(cls, network: nn.Module, plans: Dict[str, Any], configuration: str,
                     dataset_json: Dict[str, Any], **options: Any) -> "Predictor":
        """Wrap an in-memory network with its current weights (no folder, no fold ensembling).

        The device defaults to the network's own device.
        """
        if "device" not in options:
            param = next(network.parameters(), None)
            options["device"] = param.device if param is not None else "cpu"
        return cls(network, plans, configuration, dataset_json, **options)

    # ------------------------------------------------------------------ prediction
    def _to_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.labels.has_regions else torch.softmax(logits, dim=0)

    def predict_preprocessed(self, data: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """Probabilities ``(C, z', y', x')`` (float32, CPU) of a preprocessed ``(c, z', y', x')`` array, averaged
        over the folds."""
        tensor = torch.as_tensor(np.ascontiguousarray(data) if isinstance(data, np.ndarray) else data).float()
        if tensor.ndim != 4 or tensor.shape[0] != self.num_input_channels:
            raise ValueError(f"expected preprocessed data ({self.num_input_channels}, z, y, x), got "
                             f"{tuple(tensor.shape)}")
        was_training = self.network.training
        self.network.eval()
        try:
            total: Optional[torch.Tensor] = None
            weights_per_pass: List[Optional[StateDict]] = list(self.fold_weights) if len(self.fold_weights) > 1 \
                else [None]
            for weights in weights_per_pass:
                if weights is not None:
                    self.network.load_state_dict(weights)
                logits = predict_sliding_window(self.network, tensor, self.patch_size, self.num_outputs,
                                                step=self.step_size, mirror_axes=self.mirror_axes,
                                                tile_batch_size=self.tile_batch_size, device=self.device,
                                                progress=self.progress, precision=self.precision,
                                                nnunet_gaussian=self.nnunet_gaussian)
                probs = self._to_probabilities(logits)
                total = probs if total is None else total.add_(probs)
            assert total is not None
            return total / len(weights_per_pass)
        finally:
            self.network.train(was_training)

    def preprocess(self, images: np.ndarray, props: Dict[str, Any],
                   case_id: Optional[str] = None) -> Tuple[np.ndarray, Dict[str, Any]]:
        """Preprocess a ``(c, z, y, x)`` array read with :func:`read_images` as the plan says (a cascade stage:
        plus the previous stage's one-hot segmentation channels)."""
        data, _, pprops = preprocess_case(images, None, props, self.plans, self.configuration)
        if self.previous_stage is not None:
            data = self.previous_stage.append_to(data, case_id, images, props, pprops)
        elif self.configuration_plan.previous_stage is not None:
            raise ValueError(f"configuration '{self.configuration}' is a cascade stage: it needs the segmentation of "
                             f"'{self.configuration_plan.previous_stage}' (previous_stage)")
        return data, pprops

    def finish(self, probabilities: torch.Tensor, pprops: Dict[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
        """Revert preprocessed-space probabilities to the input's array space; derive the (post-processed) labels."""
        reverted = revert_probabilities(probabilities, pprops, self.plans, self.configuration,
                                        regions=self.labels.has_regions)
        segmentation = np.asarray(probabilities_to_segmentation(reverted, self.labels))
        if self.postprocessing is not None:
            segmentation = apply_postprocessing(segmentation, self.postprocessing)
        return segmentation, reverted

    def predict_array(self, images: np.ndarray, props: Dict[str, Any],
                      case_id: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
        """Segmentation ``(z, y, x)`` and probabilities ``(C, z, y, x)`` of a case read with
        ``read_images(files, reorient_to_ras=plans['reorient_to_ras'])``, both in that array space.

        Write the segmentation in the input's exact geometry with ``write_segmentation(seg, path, props)``.
        """
        data, pprops = self.preprocess(images, props, case_id)
        return self.finish(self.predict_preprocessed(data), pprops)

    def read_case(self, files: Sequence[PathLike],
                  case_id: Optional[str] = None) -> Tuple[np.ndarray, Dict[str, Any], Dict[str, Any]]:
        """Read and preprocess one case: (preprocessed data, preprocessing props, read props)."""
        images, props = read_images(files, reorient_to_ras=bool(self.plans.get("reorient_to_ras", False)))
        for line in intensity_warnings(images, files, self.plans, self.configuration):
            logger.warning(line)
        data, pprops = self.preprocess(images, props, case_id)
        return data, pprops, props

    def _export(self, probabilities: torch.Tensor, pprops: Dict[str, Any], props: Dict[str, Any], seg_path: Path,
                prob_path: Optional[Path]) -> Path:
        segmentation, reverted = self.finish(probabilities, pprops)
        return write_case(segmentation, props, seg_path, reverted if prob_path else None, prob_path)

    def predict_files(self, inputs: CaseInputs, output_folder: PathLike, save_probabilities: bool = False,
                      continue_prediction: bool = False, num_parts: int = 1, part_id: int = 0) -> PredictionReport:
        """Predict every case of ``inputs`` (folder, file, DICOM folder, list of per-case file lists or
        ``{case: files}``) into ``output_folder`` as ``<case><file_ending>`` (+ ``<case>.npz``).

        Cases are split into ``num_parts`` interleaved parts and only part ``part_id`` is predicted. A case that
        fails is recorded in the report with its error and the others go on. Reading the next case and writing the
        previous one overlap with prediction (background threads).
        """
        if not 0 <= part_id < num_parts:
            raise ValueError(f"part_id must be in [0, {num_parts}), got {part_id}")
        start = time.perf_counter()
        output_folder = Path(output_folder)
        report = PredictionReport()
        cases = find_input_cases(inputs, self.num_channels, channel_names_of(self.dataset_json))[part_id::num_parts]
        check_outputs_spare_inputs(cases, output_folder, self.file_ending, save_probabilities)
        output_folder.mkdir(parents=True, exist_ok=True)
        todo: List[InputCase] = []
        for case in cases:
            seg_path = segmentation_path(output_folder, case.case_id, self.file_ending)
            done = seg_path.is_file() and (not save_probabilities or
                                           probabilities_path(output_folder, case.case_id).is_file())
            if case.error:
                report.failed[case.case_id] = case.error
            elif continue_prediction and done:
                report.skipped.append(case.case_id)
            else:
                todo.append(case)
        with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, \
                ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
            pending_writes: List[Tuple[str, Future]] = []
            next_read: Optional[Future] = reader.submit(self.read_case, todo[0].files, todo[0].case_id) if todo else None
            for i, case in enumerate(tqdm(todo, desc="cases", unit="case", disable=not self.progress)):
                current = next_read
                next_read = reader.submit(self.read_case, todo[i + 1].files, todo[i + 1].case_id) if i + 1 < len(todo) else None
                try:
                    data, pprops, props = current.result()
                    probabilities = self.predict_preprocessed(data)
                    del data
                except Exception as exc:  # noqa: BLE001 - report the case and go on
                    report.failed[case.case_id] = _describe(exc, case)
                    continue
                seg_path = segmentation_path(output_folder, case.case_id, self.file_ending)
                prob_path = probabilities_path(output_folder, case.case_id) if save_probabilities else None
                pending_writes.append((case.case_id, writer.submit(self._export, probabilities, pprops, props,
                                                                   seg_path, prob_path)))
                while len(pending_writes) >= 2:  # back-pressure: keep at most one export waiting
                    _collect(pending_writes.pop(0), report, case_lookup=todo)
            while pending_writes:
                _collect(pending_writes.pop(0), report, case_lookup=todo)
        report.seconds = time.perf_counter() - start
        return report


def _describe(exc: BaseException, case: InputCase) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    files = ", ".join(str(f) for f in case.files)
    return message if any(str(f) in message for f in case.files) else f"{files}: {type(exc).__name__}: {message}"


def _collect(item: Tuple[str, Future], report: PredictionReport, case_lookup: List[InputCase]) -> None:
    case_id, future = item
    try:
        future.result()
        report.written.append(case_id)
    except Exception as exc:  # noqa: BLE001
        case = next(c for c in case_lookup if c.case_id == case_id)
        report.failed[case_id] = _describe(exc, case)


def _state_dict_mismatch(network: nn.Module, weights: StateDict) -> Optional[str]:
    """Describe missing/unexpected keys or shape differences between a network and a state dict (None if they fit)."""
    own = network.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in weights and tuple(weights[k].shape) != tuple(own[k].shape)]
    parts = [f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
             f"shape {shapes[:3]}" if shapes else ""]
    text = "; ".join(p for p in parts if p)
    return text or None
