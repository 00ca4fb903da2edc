"""The benchmark scripts run end to end at toy sizes and leave no temporary files behind,
also when a step fails.

Their timings are not checked here (they are noise on a shared machine); what is checked is
that each script finishes, prints its table, and that background writes it starts succeed
(a failed write surfaces as a non-zero exit once the recorder is closed).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run_bench(script: str, args: list[str], tmp_path: Path, *, expect_fail: bool = False) -> str:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    if expect_fail:
        assert proc.returncode != 0, proc.stdout + proc.stderr
    else:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    # torch keeps its own caches (torchinductor_*) under TMPDIR; only the scripts' folders count.
    leftovers = sorted(p.name for p in scratch.iterdir() if p.name.startswith("gwa-"))
    assert leftovers == [], f"{script} left temporary files behind: {leftovers}"
    return proc.stdout + proc.stderr if expect_fail else proc.stdout


def test_recorder_overhead_runs_and_cleans_up(tmp_path: Path) -> None:
    out = _run_bench("recorder_overhead.py", ["--repeats", "2", "--steps", "2", "--cpu-batch", "32"], tmp_path)
    row = next(line for line in out.splitlines() if line.startswith("tiny CNN"))
    # The flush column counts every row the "on" blocks recorded: 2 repeats x 2 steps x 32 x 2.
    assert row.rstrip().endswith("/256"), row


def test_recorder_scale_runs_and_cleans_up(tmp_path: Path) -> None:
    out = _run_bench("recorder_scale.py", ["--n", "5000", "--batch", "512", "--dim", "16", "--epochs", "2"], tmp_path)
    assert "rows in the last epoch's part: 5,000 (expected 5,000)" in out


def test_analysis_scale_runs_and_cleans_up(tmp_path: Path) -> None:
    out = _run_bench("analysis_scale.py", ["--sizes", "toy", "--repeats", "1"], tmp_path)
    row = next(line for line in out.splitlines() if line.startswith("toy "))
    assert "2,000 x 4" in row, row


def test_analysis_scale_cleans_up_when_its_child_fails(tmp_path: Path) -> None:
    # The synthetic runs (up to 3 GB at full size) must go even when the measurement crashes.
    out = _run_bench("analysis_scale.py", ["--sizes", "toy", "--_fail-child"], tmp_path, expect_fail=True)
    assert "the measuring child failed" in out and "forced failure" in out, out


def test_app_speed_runs_and_cleans_up(tmp_path: Path) -> None:
    pytest.importorskip("streamlit")
    out = _run_bench("app_speed.py", ["--samples", "300", "--epochs", "3"], tmp_path)
    assert "48 thumbnails" in out and "one trajectory (3 epochs)" in out, out
