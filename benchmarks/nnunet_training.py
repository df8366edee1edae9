"""nnU-Net v2's default trainer cut to a wall-time budget, as source text for a script that runs in nnU-Net's own
venv (benchmarks/budget.py and benchmarks/nnunet_predict.py append what they do with the trained trainer).

``train_on_budget(budget_s, preprocessed_folder, fold, configuration="3d_fullres")``: nnUNetTrainer with all its settings, epochs of 5
iterations (1 validation iteration, nnU-Net's 250:50 ratio), the number of epochs and the poly schedule's length
re-fitted to the time left after every epoch; returns ``(trainer, iterations, training seconds)``.
"""

NNUNET_BUDGET_TRAINING = r'''
import json, os, sys, time
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json, join
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


def train_on_budget(budget, pre, fold, configuration="3d_fullres"):
    t0 = time.monotonic()
    plans = load_json(join(pre, "nnUNetPlans.json"))
    plans["continue_training"] = False  # nnU-Net 2.8.1 reads (and pops) this from the plans dict
    tr = nnUNetTrainer(plans, configuration, fold, load_json(join(pre, "dataset.json")), torch.device("cpu"))
    tr.num_iterations_per_epoch, tr.num_val_iterations_per_epoch = 5, 1
    tr.initialize()
    tr.on_train_start()
    iters = 0
    while tr.current_epoch < tr.num_epochs:
        t = time.monotonic()
        tr.on_epoch_start(); tr.on_train_epoch_start()
        outs = [tr.train_step(next(tr.dataloader_train)) for _ in range(tr.num_iterations_per_epoch)]
        iters += len(outs)
        tr.on_train_epoch_end(outs)
        with torch.no_grad():
            tr.on_validation_epoch_start()
            tr.on_validation_epoch_end([tr.validation_step(next(tr.dataloader_val))
                                        for _ in range(tr.num_val_iterations_per_epoch)])
        tr.on_epoch_end()
        left = budget - (time.monotonic() - t0)
        tr.num_epochs = tr.current_epoch + max(0, int(left / (time.monotonic() - t)))
        tr.lr_scheduler.max_steps = max(tr.num_epochs, 1)
    tr.on_train_end()
    return tr, iters, time.monotonic() - t0
'''
