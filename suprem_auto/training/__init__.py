"""Training: trainers (nnU-Net recipe + SuPreM fine-tuning), data loading, augmentation, splits, checkpoints, logs.

Entry points: :func:`suprem_auto.training.run.build_trainer` + :func:`suprem_auto.training.run.train_fold`
(what ``suprem_train`` calls), :func:`suprem_auto.training.registry.resolve_trainer`.
"""
