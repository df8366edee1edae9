"""Fine-tuning policies as data (``recipes/finetune_policies.json``): the optimiser, learning rate, schedule,
encoder freezing and layer-wise decay of a run that starts from pre-trained weights.

A policy's changes are laid over the trainer's recipe (and the short-budget recipe of a budgeted run) and under the
flags. Every policy sets the same fields (those it leaves out take the neutral value of :data:`NEUTRAL`), so that two
policies differ only where they say they do.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

POLICY_FILE = Path(__file__).parent / "recipes" / "finetune_policies.json"
#: the name that keeps the trainer's own recipe (no policy laid over it)
TRAINER_RECIPE = "trainer"
#: values of the policy fields a policy does not name
NEUTRAL: Dict[str, Any] = {"freeze_encoder_fraction": 0.0, "encoder_layer_decay": 1.0, "freeze_encoder_epochs": 0}


@dataclass(frozen=True)
class FineTunePolicy:
    """One named policy: its description and the TrainingConfig changes it makes."""

    name: str
    description: str
    changes: Dict[str, Any]


@functools.lru_cache(maxsize=1)
def _policy_table() -> Dict[str, Any]:
    """The policy file, read once per process (callers copy what they change)."""
    return json.loads(POLICY_FILE.read_text())


def policy_names() -> list:
    """The policies the file declares (plus ``trainer``: no policy)."""
    return [*_policy_table()["policies"], TRAINER_RECIPE]


def default_policy_name() -> str:
    """The policy a ``-pretrained`` run uses when ``--finetune_policy`` is not given."""
    return str(_policy_table()["default"])


def get_policy(name: Optional[str] = None) -> Optional[FineTunePolicy]:
    """The named policy (``None``: the default); ``trainer`` returns None (keep the trainer's recipe). An unknown
    name raises a one-line error listing the known ones."""
    name = name or default_policy_name()
    if name == TRAINER_RECIPE:
        return None
    table = _policy_table()["policies"]
    if name not in table:
        raise ValueError(f"unknown fine-tuning policy '{name}' (known: {', '.join(policy_names())}; "
                         f"defined in {POLICY_FILE})")
    entry = table[name]
    return FineTunePolicy(name, entry.get("description", ""), {**NEUTRAL, **entry["changes"]})
