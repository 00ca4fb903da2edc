"""A guard against the analysis getting slower: ``analyze()`` (with its detection table) on a
1M-row synthetic run, against a bare DuckDB scan of the same parts in the same process.

Seconds are noise on a shared machine; the ratio to the scan is not. The bound is loose: it
lies well above the ratio the single-pass summaries give and well below the one of the
regression they fixed (the docs' benchmark page has both), so only a real regression trips
it. The targets themselves live in ``bench/analysis_scale.py``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: analyze() + detection over the bare scan, best of REPEATS each, above which the test fails.
MAX_RATIO = 3.25
REPEATS = 5


def _bench():
    spec = importlib.util.spec_from_file_location("analysis_scale", ROOT / "bench" / "analysis_scale.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["analysis_scale"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_analysis_stays_within_a_few_bare_scans(tmp_path):
    bench = _bench()
    path = bench.build_run(tmp_path / "run", 10_000, 100)
    bench.analysis_seconds(path)  # warm: the first call pays for imports and caches
    analysis, bare = [], []
    for _ in range(REPEATS):  # alternating, so both see the same load
        analysis.append(bench.analysis_seconds(path)[0])
        bare.append(bench.bare_scan_seconds(path))
    ratio = min(analysis) / min(bare)
    assert ratio <= MAX_RATIO, f"analyze() took {min(analysis):.3f} s, {ratio:.2f}x the bare scan ({min(bare):.3f} s)"
