"""``gwa-diag relocate``: point a run at its data's new place (another machine, another folder).

    gwa-diag relocate RUN --data-path NEW [--eval-data-path NEW]

Rewrites the data location in RUN/run.json after checking that the data there is the data the
run trained on (:func:`gwa_diag.training.relocate.relocate_run`), so the app shows the images
again; the old location is kept in run.json's ``relocations``. torch is imported inside the
command only (rebuilding the dataset needs it), not when the parser is built.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _cmd_relocate(args: argparse.Namespace) -> int:
    """Check the data at the new place, then rewrite run.json (or refuse, writing nothing)."""
    from gwa_diag.training.relocate import relocate_run

    result = relocate_run(args.run, args.data_path, eval_data_path=args.eval_data_path)
    for key, label in (("dataset", "data"), ("eval_dataset", "evaluation data")):
        moved = result.get(key)
        if moved is None:
            continue
        if moved["from"] == moved["to"]:
            print(f"{label}: already at {moved['to']} (checked: {moved['evidence']}); run.json unchanged")
        else:
            print(f"{label}: {moved['from']} -> {moved['to']} (checked: {moved['evidence']})")
    return 0


def register(subparsers: Any) -> None:
    """Add ``relocate`` to the main CLI's subparsers."""
    p = subparsers.add_parser(
        "relocate", help="point a run at its data's new location (after moving the run or the data)",
        description="Rewrite the data location in RUN/run.json, after checking that the data at the new place "
                    "is the data the run trained on (its data fingerprint; for an image folder also the same "
                    "relative paths and file sizes). Other data is refused and nothing is written. The old "
                    "location is kept in run.json's 'relocations'.",
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (the --out of gwa-diag train)")
    p.add_argument("--data-path", type=Path, required=True, metavar="NEW",
                   help="the training data's new location: the .npz, image folder, manifest CSV or CIFAR-10 root")
    p.add_argument("--eval-data-path", type=Path, metavar="NEW",
                   help="the evaluation set's new location (the run's --eval-data)")
    p.set_defaults(func=_cmd_relocate)
