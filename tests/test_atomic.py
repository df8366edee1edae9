"""Atomic writes: files other team members can read, appends that never leave a glued half-line, temp leftovers
removed."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np

from suprem_auto.utils.atomic import (append_line, atomic_path, atomic_save_npy, atomic_write_json,
                                      read_complete_lines, remove_stale_temp_files)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_files_follow_the_umask(tmp_path: Path) -> None:
    """mkstemp creates 0600 files; a shared lab folder needs the umask's mode, like a plain open() gives."""
    old = os.umask(0o002)
    try:
        atomic_write_json(tmp_path / "plans.json", {"a": 1})
        atomic_save_npy(tmp_path / "case.npy", np.zeros(3, dtype=np.float32))
        with open(tmp_path / "plain.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "plans.json") == 0o664
    assert _mode(tmp_path / "case.npy") == 0o664
    assert _mode(tmp_path / "plans.json") == _mode(tmp_path / "plain.txt")


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "plans.json"
    atomic_write_json(target, {"version": 1})
    try:
        with atomic_path(target) as tmp:
            tmp.write_text('{"version": 2')
            raise RuntimeError("killed mid-write")
    except RuntimeError:
        pass
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["plans.json"]


def test_append_after_a_killed_writer_keeps_every_complete_line(tmp_path: Path) -> None:
    """A process killed inside a write leaves a fragment without newline; the next append must not glue onto it."""
    log = tmp_path / "metrics.jsonl"
    append_line(log, json.dumps({"epoch": 0}))
    with open(log, "a") as f:  # what a kill in the middle of a plain write leaves
        f.write('{"epoch": 1, "lo')
    append_line(log, json.dumps({"epoch": 1}))
    lines = read_complete_lines(log)
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pass
    assert parsed == [{"epoch": 0}, {"epoch": 1}]
    assert log.read_text().endswith("\n")


def test_read_complete_lines_drops_unterminated_fragment(tmp_path: Path) -> None:
    log = tmp_path / "training_log.txt"
    log.write_text("first\nsecond\nthi")
    assert read_complete_lines(log) == ["first", "second"]


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    """A real process killed while holding an atomic temp file leaves it; the cleanup removes it and nothing else."""
    script = (
        "import os, sys\n"
        "from suprem_auto.utils.atomic import atomic_path\n"
        f"with atomic_path({str(tmp_path / 'checkpoint_latest.pth')!r}) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000)\n"
        "    os._exit(9)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=False)
    (tmp_path / "checkpoint_best.pth").write_bytes(b"keep")
    (tmp_path / ".hidden_user_file").write_text("keep")
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint_latest.pth.")]
    assert len(leftovers) == 1
    removed = remove_stale_temp_files(tmp_path)
    assert removed == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden_user_file", "checkpoint_best.pth"]
