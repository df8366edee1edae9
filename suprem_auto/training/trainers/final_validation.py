"""The final validation of a fold and its budget reserve, as hooks of :class:`BaseTrainer` (a mixin: the trainer's
network, schedule, split and plans are its inputs). Fold 'all' has no validation cases: instead a few training cases
are predicted to choose the connected-component post-processing on (nnU-Net chooses it on the cross-validation)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from suprem_auto.inference.postprocessing import POSTPROCESSING_FILE
from suprem_auto.training import cascade, ddp, reserve
from suprem_auto.training.budget import ClockSchedule


#: sub-folder of a fold 'all' run with the training cases predicted to choose the post-processing on
POSTPROCESSING_CHECK_DIR = "postprocessing_check"


def evenly_spread(cases: Sequence[str], count: int) -> List[str]:
    """``count`` of ``cases`` (all when fewer) at evenly spaced positions of the list, first and last included."""
    if count <= 0:
        return []
    if count >= len(cases):
        return list(cases)
    positions = np.unique(np.round(np.linspace(0, len(cases) - 1, count)).astype(int))
    return [cases[i] for i in positions]


class FinalValidationHooks:
    """Sliding-window prediction of the fold's validation cases after training, and the reserve a clock schedule
    keeps for it (sized from the cases and a network call timed on this machine)."""

    def final_validation_runs(self) -> bool:
        """Whether :meth:`perform_final_validation` predicts anything: fold 'all' validates on its own training
        cases, which says nothing about new cases, so only with ``--val_on_train``."""
        return str(self.fold) != "all" or bool(self.config.val_on_train)

    def postprocessing_check_cases(self) -> List[str]:
        """Fold 'all' without a final validation: the training cases (``--postprocessing_cases`` of them, evenly
        spread over the sorted ids) predicted after training to choose the post-processing on; none otherwise and
        for a cascade's full-resolution stage (its inputs would be the previous stage's out-of-fold maps)."""
        if self.final_validation_runs() or self.previous_stage_labels:
            return []
        _, cases = self.split()
        return evenly_spread(cases, int(self.config.postprocessing_cases))

    def end_of_run_cases(self) -> List[str]:
        """The cases predicted after training: the final validation's, else the post-processing check's."""
        return self.split()[1] if self.final_validation_runs() else self.postprocessing_check_cases()

    def final_validation_workload(self) -> reserve.ValidationWorkload:
        """What the final validation will predict: the fold's validation cases (preprocessed shapes, original
        voxels) at the patch it predicts with (``effective_plans``: this run's patch, ``--patch_size`` included),
        the predictor's tile batch and the test-time mirroring."""
        from suprem_auto.inference.predictor import default_tile_batch_size
        from suprem_auto.inference.sliding_window import mirror_combinations
        from suprem_auto.utils.atomic import load_json

        shapes, voxels = [], []
        for case in self.end_of_run_cases():
            shape = list(np.load(self.data_folder / f"{case}.npy", mmap_mode="r").shape[1:])
            props = self.data_folder / f"{case}.json"
            shapes.append(shape)
            voxels.append(reserve.original_voxels(load_json(props) if props.is_file() else None, shape))
        patch = list(self.patch_size)  # the patch of effective_plans(), which the predictor uses
        mirrors = len(mirror_combinations(self.config.mirror_axes)) if self.config.mirror_axes else 1
        return reserve.validation_workload(shapes, voxels, patch, default_tile_batch_size(patch, self.device),
                                           mirrors)

    def estimate_final_validation(self) -> None:
        """Clock schedules (rank 0): (re-)estimate the final validation from its workload and a network call timed
        now on this machine at the validation's patch, tile batch and precision (median of the latest timings)."""
        schedule = self.schedule
        if not isinstance(schedule, ClockSchedule) or not self.dist.is_main:
            return
        workload = self._validation_workload
        if workload is None or workload.num_cases == 0:
            schedule.set_final_validation(None, 0.0)
            return
        with self._without_deep_supervision():
            schedule.record_call(reserve.time_network_call(self.network, self.num_input_channels, workload.patch_size,
                                                           workload.tile_batch_size, self.device, self.precision,
                                                           warm_up=not schedule.call_times))
        schedule.set_final_validation(dict(workload.to_json(), call_s=schedule.call_s),
                                      workload.estimate_s(schedule.call_s))

    @contextmanager
    def _without_deep_supervision(self) -> Iterator[None]:
        """The network gives its full-resolution output only (as for inference) inside the block."""
        had_ds = getattr(self.network, "deep_supervision", False)
        if had_ds:
            self.network.deep_supervision = False
        try:
            yield
        finally:
            if had_ds:
                self.network.deep_supervision = True

    def perform_final_validation(self, save_probabilities: bool = False) -> Optional[Dict[str, Any]]:
        """Sliding-window prediction of this fold's validation cases into ``validation/`` and evaluation against
        ``gt_segmentations`` (rank 0 only); returns the summary."""
        from suprem_auto.training.validation import run_final_validation

        if self.network is None:
            self.initialize()
        if not self.final_validation_runs():
            self.log.message("fold all: final validation skipped (its cases are the training cases; "
                             "--val_on_train runs it anyway)")
            if self.dist.is_main:
                try:
                    self.choose_postprocessing_on_training_cases()
                except (OSError, RuntimeError, ValueError) as exc:  # the trained model stays; only the choice is lost
                    self.log.message(f"WARNING: fold all: post-processing check failed, none chosen: {exc}")
            ddp.barrier(self.dist)
            return None
        summary = None
        if self.dist.is_main:
            _, val_cases = self.split()
            start = time.monotonic()
            with self._without_deep_supervision():
                summary = run_final_validation(self.network, self.effective_plans(), self.configuration,
                                               self.dataset_json, val_cases, self.raw_dataset,
                                               self.preprocessed_dataset / "gt_segmentations",
                                               self.fold_dir / "validation", self.config.mirror_axes,
                                               save_probabilities, progress=self.log.echo, precision=self.precision,
                                               previous_stage=cascade.final_validation_stage(self))
            seconds = time.monotonic() - start
            mean = (summary.get("foreground_mean") or {}).get("dice")
            self.log.message(f"final validation on {len(val_cases)} cases ({self.precision}, {seconds:.1f}s): "
                             f"mean foreground Dice {mean}")
            self._record_end_of_run(seconds, "final validation")
        else:
            self.split()
        ddp.barrier(self.dist)
        return summary

    def choose_postprocessing_on_training_cases(self) -> Optional[Dict[str, Any]]:
        """Fold 'all': predict :meth:`postprocessing_check_cases` into ``postprocessing_check/`` and choose the
        largest-component post-processing on them by nnU-Net's rule, saved as the fold's ``postprocessing.json``
        (the predictor applies it when predicting with fold 'all' alone). The model has trained on these cases, so
        its false-positive islands are rarer there than on new cases: a component rule is accepted only where it
        helps even so. Returns the decision (None when no case is checked)."""
        from suprem_auto.dataset import parse_labels
        from suprem_auto.evaluation.postprocessing import determine_postprocessing
        from suprem_auto.training.validation import evaluated_classes, run_final_validation

        cases = self.postprocessing_check_cases()
        if not cases:
            return None
        start = time.monotonic()
        with self._without_deep_supervision():
            run_final_validation(self.network, self.effective_plans(), self.configuration, self.dataset_json, cases,
                                 self.raw_dataset, self.preprocessed_dataset / "gt_segmentations",
                                 self.fold_dir / POSTPROCESSING_CHECK_DIR, self.config.mirror_axes,
                                 progress=self.log.echo, precision=self.precision)
        labels = parse_labels(self.dataset_json)
        decision = determine_postprocessing(self.preprocessed_dataset / "gt_segmentations",
                                            self.fold_dir / POSTPROCESSING_CHECK_DIR, evaluated_classes(labels),
                                            self.dataset_json.get("file_ending", ".nii.gz"),
                                            out_json=self.fold_dir / POSTPROCESSING_FILE,
                                            ignore_label=labels.ignore_label)
        seconds = time.monotonic() - start
        applied = decision["apply"]
        parts = (["largest foreground component"] if applied["keep_largest_foreground_component"] else []) + \
            [f"largest component of {c}" for c in applied["keep_largest_component_of"]]
        before = decision["dice_before"]["foreground_mean"]
        after = decision["dice_after"]["foreground_mean"]
        self.log.message(f"fold all: post-processing chosen on {len(cases)} training cases ({seconds:.1f}s): "
                         f"{', '.join(parts) if parts else 'none'} (mean foreground Dice there {before:.4f} -> "
                         f"{after:.4f}); saved as {POSTPROCESSING_FILE}, applied by suprem_predict -f all; "
                         f"--postprocessing_cases 0 skips it")
        self._record_end_of_run(seconds, "post-processing check")
        return decision

    def _record_end_of_run(self, seconds: float, what: str) -> None:
        """Clock schedules: the measured time of the end-of-run prediction beside its reserve (log and schedule)."""
        if isinstance(self.schedule, ClockSchedule):
            self.schedule.final_validation_measured_s = seconds
            self.log.message(f"budget: run ended at {self.clock.elapsed_s:.0f}s of {self.schedule.budget_s:.0f}s "
                             f"({what} {seconds:.1f}s, {self.schedule.final_validation_s:.1f}s reserved)")
            self.write_schedule()
