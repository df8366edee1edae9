"""Training the cascade (``3d_cascade_fullres``): the previous stage's cross-validation predictions as extra inputs.

Where they live: ``<results>/<Dataset>/<trainer>__<plans>__3d_lowres/predicted_next_stage/<cascade configuration>/
<case>.npy``, int16 ``(1, z, y, x)`` on the cascade's preprocessed grid (the full-res data: same crop and spacing as
``<preprocessed>/<Dataset>/<data_identifier>/<case>.npy``), plus ``gathered.json`` naming the fold that predicted each
case. nnU-Net keeps them in the same place (``predicted_next_stage/``); they belong to one low-res model (trainer and
plans), not to the preprocessed data, so they are not written beside it.

Gathering (:func:`gather_previous_stage`, run by the cascade trainer before its first batch) reads each low-res fold's
``validation/<case><file_ending>`` (the fold's final validation, in the input's geometry) and maps it onto the grid
with :func:`suprem_auto.inference.cascade.to_preprocessed_grid`, the same mapping prediction applies to the low-res
model's output, so a case is encoded alike at training and at prediction. Every case must have been predicted by a
fold that did not train on it, so every fold of ``splits_final.json`` is needed; a missing one is an error naming the
folds, the cases and the command to run. Fold ``all`` of the cascade uses the same cross-validation predictions (as
nnU-Net does: its docs require the five low-res folds before any cascade fold, and its lowres fold ``all`` does not
provide out-of-fold maps); with fewer cases than folds (e.g. 4) nnU-Net cannot make its 5 folds at all, so such a
dataset needs a ``splits_final.json`` with fewer folds (``--num_folds``) before the low-res stage is trained.

In the batches the previous-stage map travels as a second segmentation channel, so the spatial transforms and
mirroring move it exactly like the label (label-wise interpolation, border -1, never an intensity change);
:class:`PreviousStageToData` then turns it into one-hot data channels. nnU-Net also perturbs these masks at random
during training (binary dilation/erosion/opening/closing, p=0.4; removal of connected components, p=0.2); that is not
done here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from batchgenerators.transforms.abstract_transforms import AbstractTransform, Compose

from suprem_auto.inference.cascade import GatheredPreviousStage, one_hot, to_preprocessed_grid
from suprem_auto.utils.atomic import atomic_save_npy, atomic_write_json, load_json

NEXT_STAGE_FOLDER = "predicted_next_stage"
MANIFEST = "gathered.json"
SPLITS_FILE = "splits_final.json"


def previous_stage_labels(configuration_plan: Any, labels: Any) -> Optional[List[int]]:
    """The foreground labels one-hot encoded as extra inputs of a cascade configuration (a
    :class:`~suprem_auto.planning.view.ConfigurationPlan`; None: not a cascade)."""
    return [int(v) for v in labels.foreground_labels] if configuration_plan.previous_stage else None


def previous_stage_model_dir(fold_dir: Path, previous_stage: str) -> Path:
    """``<trainer>__<plans>__<previous_stage>`` beside the cascade's ``<trainer>__<plans>__<cascade>/fold_<k>``."""
    model_dir = Path(fold_dir).parent
    trainer_and_plans = model_dir.name.rsplit("__", 1)[0]
    return model_dir.parent / f"{trainer_and_plans}__{previous_stage}"


def next_stage_folder(previous_model_dir: Path, configuration: str) -> Path:
    """``<previous stage's model folder>/predicted_next_stage/<configuration>``."""
    return Path(previous_model_dir) / NEXT_STAGE_FOLDER / configuration


def read_splits(preprocessed_dataset: Path, raw_dataset: Optional[Path]) -> List[Dict[str, List[str]]]:
    """The cross-validation folds the previous stage trained on (the raw dataset's ``splits_final.json`` wins)."""
    for folder in ([Path(raw_dataset)] if raw_dataset else []) + [Path(preprocessed_dataset)]:
        if (folder / SPLITS_FILE).is_file():
            return load_json(folder / SPLITS_FILE)
    raise FileNotFoundError(f"{Path(preprocessed_dataset) / SPLITS_FILE}: no cross-validation folds yet; the cascade "
                            f"trains on the previous stage's cross-validation (train its folds first)")


def _sources(previous_model_dir: Path, splits: Sequence[Mapping[str, List[str]]], case_ids: Sequence[str],
             file_ending: str) -> Tuple[Dict[str, Tuple[int, Path]], Dict[int, List[str]], List[str]]:
    """(case -> (fold, validation file)), missing cases per fold, cases in no fold's validation."""
    found: Dict[str, Tuple[int, Path]] = {}
    missing: Dict[int, List[str]] = {}
    wanted = set(case_ids)
    for k, fold in enumerate(splits):
        for case in fold["val"]:
            if case not in wanted or case in found:
                continue
            path = Path(previous_model_dir) / f"fold_{k}" / "validation" / f"{case}{file_ending}"
            if path.is_file():
                found[case] = (k, path)
            else:
                missing.setdefault(k, []).append(case)
    in_no_fold = sorted(wanted - set(found) - {c for cases in missing.values() for c in cases})
    for cases in missing.values():  # a case validated by another fold is not missing
        cases[:] = [c for c in cases if c not in found]
    return found, {k: v for k, v in missing.items() if v}, in_no_fold


def gather_previous_stage(previous_model_dir: Path, previous_stage: str, plans: Mapping[str, Any],
                          configuration: str, data_folder: Path, case_ids: Sequence[str],
                          splits: Sequence[Mapping[str, List[str]]], file_ending: str, dataset: str = "<dataset>",
                          trainer: str = "") -> Path:
    """Map every case's out-of-fold prediction of ``previous_stage`` onto the preprocessed grid of ``data_folder``
    (``<case>.npy``, written atomically, redone only when its validation file is newer); returns the folder."""
    from suprem_auto.imageio import read_segmentation

    found, missing, in_no_fold = _sources(previous_model_dir, splits, case_ids, file_ending)
    if missing or in_no_fold:
        parts = [f"fold {k} ({len(v)} case(s): {', '.join(v[:3])}{', ...' if len(v) > 3 else ''})"
                 for k, v in sorted(missing.items())]
        if in_no_fold:
            parts.append(f"{len(in_no_fold)} case(s) in no fold's validation: {', '.join(in_no_fold[:3])}")
        tr = f" -tr {trainer}" if trainer else ""
        folds = " ".join(str(k) for k in sorted(missing)) or "K"
        raise FileNotFoundError(
            f"{previous_model_dir}: the cascade '{configuration}' needs the '{previous_stage}' validation prediction "
            f"of every case, missing: {'; '.join(parts)}; run: for f in {folds}; do suprem_train {dataset} "
            f"{previous_stage} $f{tr}; done (--val re-runs only a finished fold's validation)")
    out = next_stage_folder(previous_model_dir, configuration)
    out.mkdir(parents=True, exist_ok=True)
    reorient = bool(plans.get("reorient_to_ras", False))
    for case, (_, source) in sorted(found.items()):
        target = out / f"{case}.npy"
        if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
            continue
        seg, _ = read_segmentation(source, reorient_to_ras=reorient)
        grid = to_preprocessed_grid(seg, load_json(Path(data_folder) / f"{case}.json"), plans, configuration)
        shape = np.load(Path(data_folder) / f"{case}.npy", mmap_mode="r").shape[1:]
        if tuple(grid.shape[1:]) != tuple(shape):
            raise ValueError(f"{source}: mapped onto {list(grid.shape[1:])} voxels, the preprocessed case has "
                             f"{list(shape)} (was {data_folder} preprocessed again with other plans?)")
        atomic_save_npy(target, grid)
    atomic_write_json(out / MANIFEST, {"previous_stage": previous_stage, "configuration": configuration,
                                       "cases": {c: {"fold": k, "source": str(p)} for c, (k, p) in sorted(found.items())}})
    return out


def prepare_previous_stage(trainer: Any, sync: bool = True) -> Path:
    """The cascade trainer's previous-stage folder, gathered by rank 0 (with ``sync`` the others wait for it)."""
    from suprem_auto.training import ddp
    from suprem_auto.training.data.cases import list_preprocessed_cases

    previous = trainer.configuration_plan.previous_stage
    low_dir = previous_stage_model_dir(trainer.fold_dir, previous)
    out = next_stage_folder(low_dir, trainer.configuration)
    if trainer.dist.is_main:
        cases = list_preprocessed_cases(trainer.data_folder, trainer.raw_dataset)
        splits = read_splits(trainer.preprocessed_dataset, trainer.raw_dataset)
        trainer_name = low_dir.name.split("__")[0]
        out = gather_previous_stage(low_dir, previous, trainer.plans, trainer.configuration, trainer.data_folder,
                                    cases, splits, trainer.dataset_json.get("file_ending", ".nii.gz"),
                                    trainer.preprocessed_dataset.name, trainer_name)
        trainer.log.message(f"cascade: previous stage '{previous}' predictions of {len(cases)} cases in {out}")
    if sync:
        ddp.barrier(trainer.dist)
    return out


def final_validation_stage(trainer: Any) -> Optional[GatheredPreviousStage]:
    """Rank 0's final validation of a cascade fold: the gathered out-of-fold maps of its validation cases (as
    nnU-Net validates a cascade); None for other configurations."""
    if not trainer.previous_stage_labels:
        return None
    return GatheredPreviousStage(prepare_previous_stage(trainer, sync=False), trainer.previous_stage_labels)


class PreviousStageToData(AbstractTransform):
    """Move ``seg[:, 1]`` (the previous stage's labels, carried through the spatial transforms like the label) into
    ``data`` as one-hot channels, one per foreground label; ``seg`` keeps only the label channel."""

    def __init__(self, foreground_labels: Sequence[int]) -> None:
        self.foreground_labels = [int(v) for v in foreground_labels]

    def __call__(self, **data_dict: Any) -> Dict[str, Any]:
        seg = data_dict["seg"]
        if seg.shape[1] != 2:
            raise ValueError(f"cascade batch: expected the label and the previous stage as 2 segmentation channels, "
                             f"got {seg.shape[1]}")
        encoded = np.stack([one_hot(s[1:2], self.foreground_labels) for s in seg])
        data_dict["data"] = np.concatenate([np.asarray(data_dict["data"], dtype=np.float32), encoded], axis=1)
        data_dict["seg"] = seg[:, :1]
        return data_dict


def with_previous_stage(transforms: AbstractTransform, foreground_labels: Optional[Sequence[int]]) -> AbstractTransform:
    """``transforms`` followed by :class:`PreviousStageToData` for a cascade (unchanged otherwise)."""
    if foreground_labels is None:
        return transforms
    return Compose([transforms, PreviousStageToData(foreground_labels)])
