"""The suite from a fresh clone: without ../shared the tests run on the bundled demo data and skip, with a reason,
only what needs a set that is not bundled. Simulated with ``SUPREM_SHARED_DATA`` pointing at an empty folder
(which means "no shared data": there is no fallback)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import DEMO, REPO

# a representative subset: real-image I/O, integrity, conversion (DICOM/CT parts need the shared set), evaluation
SUBSET = ["tests/test_imageio.py", "tests/test_integrity.py", "tests/test_conversion.py",
          "tests/test_postprocessing.py"]


def _env_without_shared(tmp_path: Path) -> dict:
    empty = tmp_path / "no_shared_data"
    empty.mkdir()
    return dict(os.environ, SUPREM_SHARED_DATA=str(empty))


def test_empty_shared_folder_means_the_bundled_demo(tmp_path: Path) -> None:
    code = ("import sys; sys.path.insert(0, 'tests'); import conftest as c; "
            "print(c.HIPPO); print(len(c.HIPPO_CASES)); print(c.TOTALSEG.is_dir())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env_without_shared(tmp_path),
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    assert out == [str(DEMO), "24", "False"]


def test_tests_name_no_machine_paths() -> None:
    offenders = [f"{p.name}:{i}" for folder in ("tests", "benchmarks") for p in sorted((REPO / folder).glob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"['\"]/work/", line)]
    assert offenders == []


def test_representative_subset_passes_without_shared_data(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *SUBSET],
                         cwd=REPO, env=_env_without_shared(tmp_path), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    skipped = int(re.search(r"(\d+) skipped", summary).group(1))
    assert passed >= 20 and skipped >= 5, summary
    # every skip names the missing set and how to provide it
    reasons = [line for line in run.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all("SUPREM_SHARED_DATA" in line for line in reasons), reasons
