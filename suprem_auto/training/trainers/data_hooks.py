"""The data of a fold as hooks of :class:`BaseTrainer` (a mixin): its split (``splits_final.json``, subject-grouped,
fold 'all' without one), the preprocessed data folder, and the training / validation batch streams (patches, or
slices for 2d; a cascade's previous-stage maps cropped with them)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

from suprem_auto.training import augmentation, cascade, ddp
from suprem_auto.training.data.cases import PreprocessedCases, class_presence, list_preprocessed_cases
from suprem_auto.training.data.sampler import PatchSampler
from suprem_auto.training.data.slices import SliceSampler
from suprem_auto.training.data.workers import BatchStream
from suprem_auto.training.splits import find_subject_rule, fold_cases, load_or_create_splits


class DataHooks:
    """split(), data_folder, build_streams() and close_streams() of a trainer."""

    def split(self) -> "tuple[List[str], List[str]]":
        """(train, val) case IDs of this fold from splits_final.json (created if missing, with ``num_folds`` folds
        keeping each subject's cases together, ``training/splits.py``). Fold 'all' reads and writes no split: every
        case trains, and its validation cases (pseudo-Dice only) are the same cases."""
        data_folder = self.data_folder
        cases = list_preprocessed_cases(data_folder, self.raw_dataset)
        if not cases:
            raise FileNotFoundError(f"{data_folder}: no preprocessed cases (run suprem_plan_and_preprocess)")
        if str(self.fold) == "all":
            return sorted(cases), sorted(cases)
        presence = class_presence(data_folder, cases)
        rule = find_subject_rule(self.config.subject_pattern, self.dataset_json,
                                 self.preprocessed_dataset / "dataset.json", self.raw_dataset)

        def splits() -> List[Dict[str, List[str]]]:
            return load_or_create_splits(self.preprocessed_dataset, presence, self.raw_dataset,
                                         num_folds=self.config.num_folds, subject_rule=rule)

        if self.dist.is_main:
            folds = splits()
        ddp.barrier(self.dist)
        if not self.dist.is_main:
            folds = splits()
        return fold_cases(folds, self.fold, cases)

    @property
    def is_2d(self) -> bool:
        """A 2D configuration: the network sees (b, c, y, x) slices of the (c, z, y, x) cases."""
        return len(self.patch_size) == 2

    @property
    def data_folder(self) -> Path:
        return self.preprocessed_dataset / self.configuration_plan.data_identifier

    def build_streams(self) -> "tuple[BatchStream, BatchStream]":
        """Training and validation batch streams for this rank (seeded by run seed, epoch and rank)."""
        train_cases, val_cases = self.split()
        bs = ddp.rank_batch_size(self.global_batch_size, self.dist)
        forced = ddp.rank_forced_foreground(self.global_batch_size, self.config.oversample_foreground, self.dist)
        crop = augmentation.initial_patch_size(self.patch_size) if self.config.augmentation else self.patch_size
        seed = self.config.seed + 1_000_003 * self.current_epoch + 101 * self.dist.rank
        workers = self.num_workers
        sampler = SliceSampler if self.is_2d else PatchSampler  # 2D: slices of the 3D arrays (training/data/slices.py)
        previous = cascade.prepare_previous_stage(self) if self.previous_stage_labels else None  # cascade inputs
        train_sampler = sampler(PreprocessedCases(self.data_folder, train_cases, previous), crop, bs, forced, seed)
        val_sampler = sampler(PreprocessedCases(self.data_folder, val_cases, previous), self.patch_size, bs, forced,
                              seed + 1)
        train = BatchStream(train_sampler, self.training_transforms(), workers, seed)
        val = BatchStream(val_sampler, self.validation_transforms(), max(1, workers // 2) if workers else 0, seed + 1)
        self._streams = [train, val]
        return train, val

    def close_streams(self) -> None:
        for s in self._streams:
            s.close()
        self._streams = []
