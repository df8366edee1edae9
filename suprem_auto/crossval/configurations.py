"""Which configurations a cross-validation trains when the user names none: every one the plans hold whose data is
preprocessed, a cascade's previous stage before the cascade (its validation predictions are the cascade's input)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from suprem_auto.planning import load_plans, plans_view

#: the order of nnU-Net's configurations in reports; others follow alphabetically
PREFERRED_ORDER = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")


def training_order(names: List[str], plans: dict) -> List[str]:
    """``names`` with each cascade stage after its previous stage (which is added when missing)."""
    view = plans_view(plans)
    rank = {n: i for i, n in enumerate(PREFERRED_ORDER)}
    ordered: List[str] = []

    def add(name: str) -> None:
        if name in ordered:
            return
        previous = view.configuration(name).previous_stage
        if previous is not None:
            add(previous)
        ordered.append(name)

    for name in sorted(names, key=lambda n: (rank.get(n, len(rank)), n)):
        add(name)
    return ordered


def default_configurations(pre_dataset: Path, plans_name: str) -> Tuple[List[str], List[str]]:
    """(configurations to cross-validate, one line per planned configuration left out and why)."""
    plans_file = Path(pre_dataset) / f"{plans_name}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: plans file missing (run suprem_plan_and_preprocess, or check -p)")
    plans = load_plans(plans_file)
    view = plans_view(plans, plans_file)
    chosen, skipped = [], []
    for name in view.configurations:
        data_config = view.data_configuration(name)
        folder = Path(pre_dataset) / view.configuration(data_config).data_identifier
        if not (folder.is_dir() and any(folder.glob("*_seg.npy"))):
            skipped.append(f"{name}: not preprocessed ({folder} is empty or missing; run suprem_plan_and_preprocess "
                           f"-d {Path(pre_dataset).name} -c {data_config} to include it)")
            continue
        chosen.append(name)
    for name in list(chosen):
        previous = view.configuration(name).previous_stage
        if previous is not None and previous not in chosen:
            chosen.remove(name)
            skipped.append(f"{name}: its previous stage {previous} is not preprocessed")
    return training_order(chosen, plans), skipped
