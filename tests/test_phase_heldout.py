"""The training-phase rule on runs it was not tuned on.

tests/data/heldout_phase_curves.json holds, for 18 CPU runs recorded after the rule's
constants were chosen (three label sets: CIFAR-10-N random2 and random3, 30% pair noise;
six training regimes, from an ordinary SGD run to slow and fast memorisers), the per-epoch
curves the rule reads, the true number of wrong labels, and the AUROC of the default scorer
(aum) over the windows the default ``phase`` window can be. The tests ask what the rule must
deliver there, judged by the truth the rule never sees: the right verdict, an onset that is
never late, and a ranking that holds up against the best fixed window.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from gwa_diag.analysis.phase import TrainingPhase, phase_of_curves, window_epochs

FIXTURE = Path(__file__).resolve().parent / "data" / "heldout_phase_curves.json"
RUNS: dict[str, dict[str, Any]] = json.loads(FIXTURE.read_text())["runs"]


def _phase(cell: dict[str, Any]) -> TrainingPhase:
    lr = cell["lr"] if isinstance(cell["lr"], list) else [cell["lr"]] * len(cell["epochs"])
    return phase_of_curves(cell["epochs"], cell["fit"], cell["contradicted"], lr)


def _true_crossing(cell: dict[str, Any], share_of_wrong: float) -> int | None:
    """The first epoch whose fit passed the clean share plus ``share_of_wrong`` of the true
    wrong labels: from there the model has fitted wrong labels (by the truth, not by the
    rule's estimate); None when it never did."""
    noise = cell["wrong"] / cell["n"]
    return next((e for e, f in zip(cell["epochs"], cell["fit"]) if f > 1.0 - noise + share_of_wrong * noise), None)


def _default_auroc(cell: dict[str, Any], phase: TrainingPhase) -> float:
    """AUROC of aum over the ``phase`` window the rule reads on these curves."""
    epochs = cell["epochs"]
    window = window_epochs(epochs, "phase", phase=phase)
    first, last = window[0], window[-1]
    aurocs = cell["aum_auroc"]
    if window == epochs[len(epochs) // 2:]:
        return aurocs["second_half"]
    assert first == 1, f"the window {first}-{last} has no stored AUROC: the rule's read changed; look, then re-extract"
    return aurocs["first_to"][last]


def _best_fixed(cell: dict[str, Any]) -> float:
    return max(cell["aum_auroc"][w] for w in ("second_half", "after_warmup", "all"))


@pytest.mark.parametrize("name", sorted(RUNS))
def test_the_verdict_matches_what_the_run_fitted(name):
    # Memorised by the truth: the fit passed the clean share plus half the true wrong labels
    # (every constant-rate run without augmentation did; the SGD and fine-tuning runs never
    # passed the clean share at all). The rule must say the same, without the truth.
    cell = RUNS[name]
    phase = _phase(cell)
    fitted_half = _true_crossing(cell, 0.5) is not None
    assert phase.memorised == fitted_half, (name, phase.reason)
    if not fitted_half:
        assert not phase.memorising and phase.onset is None and _true_crossing(cell, 0.0) is None


@pytest.mark.parametrize("name", sorted(n for n in RUNS if _true_crossing(RUNS[n], 0.0) is not None))
def test_the_onset_is_never_after_the_wrong_labels_are_fitted(name):
    # The onset (fit above 1 - the estimated noise) comes at or before the epoch whose fit
    # passed the true clean share, so the window never averages epochs with wrong labels
    # fitted; early, because the estimate runs high (the model still contradicts hard correct
    # labels at its plateau). Measured on these runs: 0 to 16 epochs early, plateau first.
    cell = RUNS[name]
    phase = _phase(cell)
    crossing = _true_crossing(cell, 0.0)
    assert phase.plateau is not None and phase.onset is not None and phase.plateau < phase.onset
    assert crossing - 18 <= phase.onset <= crossing, (phase.onset, crossing)
    assert phase.noise >= cell["wrong"] / cell["n"]


def test_the_default_window_ranks_about_as_well_as_the_best_fixed_window():
    # aum over the phase window against the best of the fixed windows (second half, after the
    # warm-up, all epochs), which a user cannot pick without the truth. Measured: from 0.039
    # below (fine-tuning on pair noise, whose best epochs are its first) to 0.061 above, 0.014
    # above on average, 0.025 above on average over the memorised runs.
    gaps = {name: _default_auroc(cell, _phase(cell)) - _best_fixed(cell) for name, cell in RUNS.items()}
    assert min(gaps.values()) >= -0.045, gaps
    assert sum(gaps.values()) / len(gaps) >= 0.005, gaps
    memorised = [gaps[n] for n, cell in RUNS.items() if _phase(cell).memorised]
    assert len(memorised) == 12 and sum(memorised) / len(memorised) >= 0.015, gaps


def test_the_fixture_is_whole():
    # 18 runs: 6 regimes x 3 label sets, curves of one length per run, AUROCs in [0, 1].
    assert len(RUNS) == 18 and len({c["regime"] for c in RUNS.values()}) == 6
    for cell in RUNS.values():
        n = len(cell["epochs"])
        assert len(cell["fit"]) == len(cell["contradicted"]) == len(cell["aum_auroc"]["first_to"]) == n
        assert isinstance(cell["lr"], float) or len(cell["lr"]) == n
        assert all(0 <= a <= 1 for a in cell["aum_auroc"]["first_to"][1:] if not math.isnan(a))
