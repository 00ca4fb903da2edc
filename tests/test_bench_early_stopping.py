"""bench/early_stopping.py end to end at a toy size: it prints its tables, writes the JSON
curves and removes its temporary run directories."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATA / "cifar10n" / "CIFAR-10_human.pt").is_file(), reason="needs ../shared/data"),
]


def test_early_stopping_bench_toy(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(scratch), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "early_stopping.py"), "--regime", "memorise", "finetune",
         "--label-sets", "worst", "--seeds", "0", "--pool", "200", "--epochs", "4", "--pretrain-epochs", "1",
         "--test-block", "1000", "--workers", "1", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "2,000 clean images" in text and "CLEAN labels, never trained on" in text
    for regime in ("memorise", "finetune"):
        assert f"## Regime {regime}" in text
    assert text.count("| worst (") == 2, text
    # Four epochs cannot show memorisation: the script must say so, not hide it.
    assert "did NOT memorise" in text or "Memorisation confirmed" in text
    dump = json.loads(next(out.glob("curves-*.json")).read_text())
    runs = {(r["regime"], r["run"]) for r in dump["runs"]}
    assert ("finetune", "pretrain") in runs and ("memorise", "val1") in runs
    full = next(r for r in dump["runs"] if r["regime"] == "memorise" and r["run"] == "full")
    assert len(full["curves"]["test_acc"]) == 4 and full["curves"]["changes"][0] is None
    assert all(c is not None for c in full["curves"]["changes"][1:])
    leftovers = sorted(p.name for p in scratch.iterdir() if p.name.startswith("gwa-"))
    assert leftovers == [], leftovers
