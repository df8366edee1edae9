"""Preprocess a whole raw dataset for one configuration, in parallel, resumable."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from tqdm import tqdm

from suprem_auto.planning.view import plans_view
from suprem_auto.preprocessing.case import preprocess_files, sample_foreground_locations
from suprem_auto.preprocessing.storage import case_files, case_is_complete, save_preprocessed_case
from suprem_auto.utils.atomic import atomic_write, atomic_write_json, load_json
from suprem_auto.utils.output_rules import check_inside_root, check_not_an_input


def _process_one(job: Tuple[str, List[str], Optional[str], Dict[str, Any], str, str, Any]) -> str:
    case_id, images, label, plans, configuration, out_folder, label_spec = job
    data, seg, props = preprocess_files(images, plans, configuration, label)
    if seg is None:
        raise ValueError(f"{case_id}: training case without a label file")
    locations = sample_foreground_locations(seg, label_spec)
    props["case_id"] = case_id
    props["classes_with_locations"] = {k: int(len(v)) for k, v in locations.items()}
    save_preprocessed_case(out_folder, case_id, data, seg, props, locations)
    return case_id


def _record_configuration(out_folder: Path, plans: Dict[str, Any], configuration: str) -> bool:
    """Store what the data was made with; True when earlier data in the folder was made differently (stale)."""
    used = {"plans_name": plans["plans_name"], "reorient_to_ras": plans["reorient_to_ras"],
            "transpose_forward": plans["transpose_forward"], "configuration": configuration,
            "settings": {k: v for k, v in plans_view(plans).configuration(configuration).to_json().items()
                         if k in ("spacing", "normalization", "resampling")}}
    path = out_folder / "preprocessing_settings.json"
    stale = path.is_file() and load_json(path) != json.loads(json.dumps(used))
    if stale:
        print(f"{out_folder}: plans changed since these cases were preprocessed; redoing all cases")
    atomic_write_json(path, used)
    return stale


def copy_ground_truth(ds: Any, output_folder: Path, clean: bool = False) -> Path:
    """Copy every training label file to ``<output_folder>/gt_segmentations/<case><file_ending>`` (atomic)."""
    gt = Path(output_folder) / "gt_segmentations"
    gt.mkdir(parents=True, exist_ok=True)
    for case_id, case in ds.cases.items():
        if case.label is None:
            continue
        target = check_inside_root(gt / f"{case_id}{ds.file_ending}", gt, f"ground truth of case {case_id!r}")
        check_not_an_input([target], [case.label, *case.images])
        if clean or not target.is_file():
            atomic_write(target, lambda tmp, src=case.label: shutil.copyfile(src, tmp))
    return gt


def preprocess_dataset(ds: Any, plans: Dict[str, Any], configuration: str, output_folder: Path,
                       num_processes: int = 2, clean: bool = False, progress: bool = True) -> List[str]:
    """Preprocess the training cases of ``ds`` into ``<output_folder>/<data_identifier>/``.

    Finished cases are skipped unless ``clean``. Returns the ids of the cases processed in this call. A cascade
    stage (``3d_cascade_fullres``) preprocesses the data of the configuration it shares it with (``3d_fullres``).
    """
    configuration = plans_view(plans).data_configuration(configuration)
    data_identifier = plans_view(plans).configuration(configuration).data_identifier
    out_folder = Path(output_folder) / data_identifier
    for case_id, case in ds.cases.items():
        for path in case_files(out_folder, case_id).values():  # the same rule for writing and for --clean
            check_inside_root(path, out_folder, f"preprocessed file of case {case_id!r}")
            check_not_an_input([path], [p for p in (case.label, *case.images) if p is not None])
    out_folder.mkdir(parents=True, exist_ok=True)
    clean = _record_configuration(out_folder, plans, configuration) or clean
    copy_ground_truth(ds, output_folder, clean)
    todo = []
    for case_id, case in ds.cases.items():
        if clean:
            for path in case_files(out_folder, case_id).values():
                path.unlink(missing_ok=True)
        elif case_is_complete(out_folder, case_id):
            continue
        todo.append((case_id, [str(p) for p in case.images], str(case.label) if case.label else None, plans,
                     configuration, str(out_folder), ds.labels))
    done: List[str] = []
    bar = tqdm(total=len(todo), desc=f"preprocess {configuration}", disable=not progress or not todo, unit="case")
    if num_processes <= 1 or len(todo) <= 1:
        for job in todo:
            done.append(_process_one(job))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=num_processes, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_process_one, job) for job in todo]
            for future in as_completed(futures):
                done.append(future.result())
                bar.update()
    bar.close()
    return sorted(done)
