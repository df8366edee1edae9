"""The network width of a budgeted run, chosen on this machine, as hooks of :class:`BaseTrainer` (a mixin).

With ``--budget`` and a network whose width may change, the short-budget recipe gives ``width_candidates``; before
the run's folder is prepared the trainer times a real training step (forward, loss, backward, optimiser; the run's
patch, batch, precision and threads) of each candidate, narrowest first, and :func:`choose_width` picks the one
whose measured learning curve predicts the best Dice for the iterations the budget buys. The probe counts against
the budget (the clock runs) and is capped at :data:`PROBE_SHARE` of it; folds of one model folder share one network
(prediction builds one), so a fold whose siblings have trained takes their width.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Dict, Optional

import numpy as np
import torch

from suprem_auto.training.augmentation_choice import AugmentationChoice, choose_augmentation
from suprem_auto.training.width_choice import WidthChoice, choose_width, load_curves
from suprem_auto.utils.atomic import atomic_write_json

#: at most this share of the budget goes to timing candidate widths
PROBE_SHARE = 0.03
#: shorter budgets time nothing and keep the recipe's fallback width: the first step of a new network (kernel
#: set-up) alone can take seconds on a busy CPU (11.7 s measured on 2 shared cores), which a short run cannot spare
MIN_PROBE_BUDGET_S = 120.0
#: timed steps per candidate (after one untimed warm-up step); their median is the step time
PROBE_STEPS = 2
#: a wider candidate is assumed to cost at least this many times the previous one's step, until timed
WIDER_STEP_FACTOR = 2.5
WIDTH_CHOICE_FILE = "width_choice.json"


class WidthHooks:
    """``choose_network_width`` (before the run folder is prepared), ``record_width_choice`` (after) and
    ``record_width_outcome`` (when training ends)."""

    width_choice: Optional[WidthChoice] = None

    def choose_network_width(self) -> Optional[WidthChoice]:
        """Time the candidate widths and set ``config.network_width`` to the chosen one (None: nothing to choose:
        no candidates, no budget, or a distributed run, which keeps the recipe's fallback width)."""
        candidates = self.config.width_candidates
        if not candidates or self.config.budget_s is None or self.dist.enabled:
            return None
        sibling = self._sibling_config()
        if sibling is not None:
            choice = WidthChoice(width=float(sibling["network_width"]),
                                 reason="the width the model folder's other folds trained with "
                                        "(prediction builds one network for all folds)")
        elif float(self.config.budget_s) < MIN_PROBE_BUDGET_S:
            choice = WidthChoice(width=self.config.network_width,
                                 reason=f"budget under {MIN_PROBE_BUDGET_S:.0f}s: nothing timed, the recipe's "
                                        f"fallback width")
        else:
            choice = self._timed_choice(sorted({float(c) for c in candidates}))  # narrowest first
        self.config = self.config.replace(network_width=choice.width, width_candidates=None)
        self.width_choice = choice
        augmentation = self._augmentation_choice(choice, sibling)
        if augmentation is not None:
            choice.augmentation = augmentation.to_json()
            self.config = self.config.with_augmentation(augmentation.augment)
        return choice

    def _augmentation_choice(self, choice: WidthChoice,
                             sibling: Optional[Dict[str, Any]]) -> Optional[AugmentationChoice]:
        """With the recipe's ``augmentation_min_passes``: augmentation off when the iterations predicted for the
        chosen width see each training sample fewer than that many times (``training/augmentation_choice.py``); a
        fold whose siblings trained takes their setting. None: nothing decided (no rule, augmentation already off,
        or no prediction)."""
        min_passes = self.config.augmentation_min_passes
        if min_passes is None or not self.config.augmentation:
            return None
        if sibling is not None and "augmentation" in sibling:
            return AugmentationChoice(bool(sibling["augmentation"]), "the setting the model folder's other folds "
                                                                     "trained with")
        predicted = choice.predicted_iterations.get(f"{choice.width:g}")
        if predicted is None:
            return None
        train_cases, _ = self.split()
        if self.is_2d:  # the 2D sampler draws slices
            samples = sum(int(np.load(self.data_folder / f"{case}.npy", mmap_mode="r").shape[1])
                          for case in train_cases)
        else:
            samples = len(train_cases)
        return choose_augmentation(int(predicted), self.global_batch_size, samples, float(min_passes))

    def _timed_choice(self, candidates: "list[float]") -> WidthChoice:
        deadline = time.monotonic() + PROBE_SHARE * float(self.config.budget_s)
        step_s, skipped = {}, {}
        expected = None
        for width in candidates:
            left = deadline - time.monotonic()
            if step_s and (expected * (PROBE_STEPS + 1) > left):
                skipped[f"{width:g}"] = (f"timing it would take ~{expected * (PROBE_STEPS + 1):.0f}s, past "
                                         f"{PROBE_SHARE:.0%} of the budget")
                continue
            step_s[width] = self.time_training_step(width, deadline=deadline)
            expected = step_s[width] * WIDER_STEP_FACTOR
        training_s = max(0.0, float(self.config.budget_s) - self.clock.elapsed_s)
        choice = choose_width(step_s, training_s, load_curves())
        choice.skipped = skipped
        return choice

    def time_training_step(self, width: float, steps: int = PROBE_STEPS, deadline: Optional[float] = None) -> float:
        """Median seconds of ``steps`` training steps (after one warm-up) of the network at ``width`` on a batch
        of random data shaped like the run's; fewer when ``deadline`` (``time.monotonic()``) passes (the warm-up
        step alone, an over-estimate, if it ends past the deadline). The network is dropped afterwards
        (``initialize`` builds the chosen one from the run's seed)."""
        self.config = self.config.replace(network_width=width)
        try:
            self.initialize()
            batch = self._probe_batch()
            times = []
            for _ in range(steps + 1):
                start = time.perf_counter()
                self.train_step(batch)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                times.append(time.perf_counter() - start)
                if deadline is not None and time.monotonic() >= deadline:
                    break
            return float(statistics.median(times[1:] or times))
        finally:
            self.release_network()

    def _probe_batch(self) -> Dict[str, Any]:
        rng = np.random.default_rng(0)
        batch = self.global_batch_size  # one process: choose_network_width skips distributed runs
        data = rng.standard_normal((batch, self.num_input_channels, *self.patch_size)).astype(np.float32)
        values = np.array([0, *self.labels.foreground_labels], dtype=np.int16)  # labels the loss sees
        seg = rng.choice(values, size=(batch, 1, *self.patch_size)).astype(np.int16)
        return {"data": data, "seg": seg}

    def release_network(self) -> None:
        """Forget the network, optimiser and loss, so that ``initialize`` builds them again."""
        self.network = self.forward_module = self.optimizer = self.loss = self.grad_scaler = None

    def _sibling_config(self) -> Optional[Dict[str, Any]]:
        """The training configuration another trained fold of the model folder recorded (its hyperparameters.json,
        else its checkpoint's config: ``run.recorded_run``) with a network width, if any."""
        from suprem_auto.training.model_folder import other_trained_folds
        from suprem_auto.training.run import recorded_run

        model_dir = self.fold_dir.parent
        for name in other_trained_folds(model_dir, self.fold_dir):
            config = (recorded_run(model_dir / name) or {}).get("config") or {}
            if config.get("network_width") is not None:
                return config
        return None

    def record_width_choice(self) -> None:
        """Log the choice and write ``width_choice.json`` into the fold folder (after it is prepared)."""
        if self.width_choice is None or not self.dist.is_main:
            return
        self.log.message(self.width_choice.describe())
        if self.width_choice.augmentation:
            self.log.message(AugmentationChoice(**self.width_choice.augmentation).describe())
        atomic_write_json(self.fold_dir / WIDTH_CHOICE_FILE, self.width_choice.to_json())

    def record_width_outcome(self, iterations: int, sec_per_iteration: float) -> None:
        """After training: what the chosen width really did beside what the probe predicted (the probe times bare
        steps; data waits, epoch ends and checkpoints make the run's iterations fewer), in ``width_choice.json``."""
        if self.width_choice is None or not self.dist.is_main or not self.width_choice.predicted_iterations:
            return
        predicted = self.width_choice.predicted_iterations.get(f"{self.width_choice.width:g}")
        self.width_choice.outcome = {"iterations": int(iterations), "sec_per_iteration": round(sec_per_iteration, 4),
                                     "predicted_iterations": predicted}
        self.log.message(f"network width {self.width_choice.width:g}: {iterations} iterations trained at "
                         f"{sec_per_iteration:.3f}s (median step), probe predicted ~{predicted}")
        atomic_write_json(self.fold_dir / WIDTH_CHOICE_FILE, self.width_choice.to_json())
