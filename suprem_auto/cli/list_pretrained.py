"""``suprem_list_pretrained``: print the model zoo as a table (nothing is downloaded)."""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from suprem_auto.pretrained.zoo import WEIGHTS_ENV, load_zoo


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="suprem_list_pretrained",
                                     description="List the public pre-trained checkpoints suprem_auto knows.")
    parser.add_argument("--weights-dir", default=None,
                        help=f"folder holding downloaded checkpoints (default: ${WEIGHTS_ENV}); adds an 'on disk' "
                             "column")
    parser.add_argument("--all", action="store_true",
                        help="also list checkpoints of other architectures that cannot be loaded")
    parser.add_argument("--json", action="store_true", help="print the entries as JSON instead of a table")
    parser.add_argument("--urls", action="store_true", help="add the download URL column")
    args = parser.parse_args(argv)
    entries = [e for e in load_zoo().values() if e.loadable or args.all]
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    folder = args.weights_dir or os.environ.get(WEIGHTS_ENV)
    header = ["name", "backbone", "params", "pre-training data", "plans preset", "file", "download page"]
    if args.urls:
        header.append("url")
    if folder:
        header.append("on disk")
    rows = [header]
    for e in entries:
        row = [e.name, e.backbone or "-", e.parameters, e.pretraining_data, e.plans_preset or "-", e.file_name,
               e.download_page]
        if args.urls:
            row.append(e.download_url)
        if folder:
            row.append("yes" if (Path(folder) / e.file_name).is_file() else "no")
        rows.append(row)
    print(_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
