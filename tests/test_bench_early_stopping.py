"""bench/early_stopping.py end to end at a toy size: it prints its tables, writes the JSON
curves and its page, states the fall of test accuracy its runs show, and removes its
temporary run directories."""
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
         "--test-block", "1000", "--workers", "1", "--out", str(out), "--pages-dir", str(tmp_path / "pages")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "2,000 clean images" in text and "CLEAN labels, never trained on" in text
    for regime in ("memorise", "finetune"):
        assert f"## Regime {regime}" in text
    assert text.count("| worst (") == 2, text
    dump = json.loads(next(out.glob("curves-*.json")).read_text())
    # The memorisation line states the fall the runs show: worst's mean fall from the best test
    # epoch to the last, in points, and the verdict that fall implies against MEMORISE_DROP.
    full = next(r for r in dump["runs"] if r["regime"] == "memorise" and r["run"] == "full")
    test = full["curves"]["test_acc"]
    fall = 100 * (max(test) - test[-1])
    assert f"Mean fall of test accuracy from the best epoch to the last (points): worst {fall:.1f}." in text, text
    verdict = "Memorisation confirmed" if fall >= 3.0 else "did NOT memorise"
    assert verdict in text, text
    # The page holds the same tables, and its numbers the same choices.
    page = (tmp_path / "pages" / "early_stopping.md").read_text()
    assert f"worst {fall:.1f}." in page and page.count("| worst (") == 2
    choices = json.loads((tmp_path / "pages" / "early_stopping.json").read_text())["numbers"]["choices"]
    assert choices["memorise"]["worst"][0]["epoch"]["oracle"] == test.index(max(test))
    runs = {(r["regime"], r["run"]) for r in dump["runs"]}
    assert ("finetune", "pretrain") in runs and ("memorise", "val1") in runs
    assert len(full["curves"]["test_acc"]) == 4 and full["curves"]["changes"][0] is None
    assert all(c is not None for c in full["curves"]["changes"][1:])
    leftovers = sorted(p.name for p in scratch.iterdir() if p.name.startswith("gwa-"))
    assert leftovers == [], leftovers
