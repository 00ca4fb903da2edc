"""The training phase read from a recording: synthetic curves of each phase (never fitted,
fitted, memorised from a known epoch), the rule's causality (what the engine relies on),
the share recomputed from the parts for older runs, the ``phase`` window, and the two real
GPU recordings.

Tests named ``test_pin_...`` pin the recorded runs the rule's constants were tuned on: they
say the rule still reads those runs as it did when it was tuned, not that it generalises;
tests/test_phase_heldout.py checks it on runs recorded after the tuning."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from analysis_fixtures import colour_images_npz, noisy_rows, write_run
from gwa_diag.analysis import phase as phase_mod
from gwa_diag.analysis.phase import choose_epochs, phase_of_curves, training_phase, window_epochs
from gwa_diag.analysis.pipeline import analyze
from gwa_diag.phase_rule import (
    MEMORISED_AT, MEMORISING_FROM, fit_at_share, memorisation_weight, pending_plateaus, read_phase,
)
from gwa_diag.store import open_run
from gwa_diag.training.data import load_npz, with_noise
from gwa_diag.training.engine import TrainConfig, train
from gwa_diag.training.models import tiny_cnn

GPU_RUNS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gpu_runs"


def memorising_fit(onset: int, epochs: int = 20, noise: float = 0.3) -> tuple[list[float], list[float]]:
    """Fit and contradicted share of a model that learns the clean labels (fit rises to
    1 - noise and levels off), then memorises the wrong ones from ``onset``."""
    clean = 1.0 - noise
    fit, contradicted = [], []
    for e in range(epochs):
        if e < onset:
            f = clean * (1 - 0.5 ** (e + 1)) + 0.002 * e  # levels off just below the clean share
        else:
            f = min(1.0, clean + 0.01 + noise * (1 - 0.6 ** (e - onset + 1)))
        fit.append(f)
        contradicted.append(max(0.0, min(noise, 1.0 - f)) * (0.9 if e < onset else 0.3))
    return fit, contradicted


def test_a_model_that_never_fits_never_memorises():
    fit = [0.1 + 0.01 * e for e in range(20)]  # slow steady learning, no plateau
    contradicted = [0.6] * 20
    p = read_phase(list(range(20)), fit, contradicted)
    assert not p.memorised and p.onset is None


def test_a_fitted_model_that_stops_at_the_clean_share_never_memorises():
    fit, contradicted = memorising_fit(onset=99, epochs=20)
    p = read_phase(list(range(20)), fit, contradicted)
    assert not p.memorised and p.onset is None and p.confirmed is None


@pytest.mark.parametrize("onset", [6, 9, 12])
def test_memorisation_is_found_from_a_known_epoch(onset):
    fit, contradicted = memorising_fit(onset=onset)
    p = read_phase(list(range(20)), fit, contradicted)
    assert p.memorised and p.onset == onset, p
    assert p.plateau is not None and p.plateau < onset
    assert p.noise == pytest.approx(contradicted[p.plateau])


def test_the_rule_is_causal_once_the_onset_is_known():
    # The engine reads the phase after every epoch: an onset, once given, never moves, and
    # an epoch's answer depends only on the epochs up to it.
    fit, contradicted = memorising_fit(onset=9)
    full = read_phase(list(range(20)), fit, contradicted)
    for k in range(1, 21):
        prefix = read_phase(list(range(k)), fit[:k], contradicted[:k])
        if prefix.crossing is not None:
            assert prefix.crossing == full.crossing and prefix.plateau == full.plateau
        if prefix.memorised:
            assert prefix.onset == full.onset


# Per-epoch fit and confidently contradicted share of two real recordings (CIFAR ResNet-18 on
# an H200, 9,000 CIFAR-10 images, 40 epochs, bench/regimes.py --mode gpu, seed 0).
# SGD with crop+flip and a linear decay on the aggre labels (9.1% wrong): the fitting rate
# drifts flat for 20 epochs, the model fits the wrong labels only as the rate decays, and the
# second half ranks within 0.002 AUROC of the best window.
SGD_AGGRE_FIT = [0.1599, 0.2002, 0.2732, 0.3368, 0.3674, 0.4048, 0.4309, 0.465, 0.4856, 0.5071, 0.5236, 0.5437,
                 0.5669, 0.5821, 0.6083, 0.6267, 0.6471, 0.6571, 0.674, 0.6856, 0.6979, 0.7126, 0.7248, 0.738,
                 0.7493, 0.7533, 0.7681, 0.7841, 0.7993, 0.8129, 0.8177, 0.8318, 0.8498, 0.8601, 0.8762, 0.8931,
                 0.9074, 0.9174, 0.9279, 0.9396]
SGD_AGGRE_CONTRADICTED = [0.7677, 0.7006, 0.597, 0.5447, 0.4868, 0.4372, 0.4112, 0.3783, 0.3504, 0.3244, 0.2994,
                          0.2834, 0.2619, 0.2474, 0.2212, 0.1991, 0.1871, 0.1808, 0.1686, 0.1503, 0.1396, 0.1308,
                          0.1189, 0.1081, 0.0991, 0.0926, 0.0831, 0.0736, 0.0603, 0.0572, 0.051, 0.0449, 0.0371,
                          0.0314, 0.0274, 0.0192, 0.0161, 0.0113, 0.0083, 0.0066]
# AdamW at a constant rate without augmentation on the worst labels (41.2% wrong): no dip
# before the rise, the model fits every label by epoch 15; epochs 1-3 rank best.
ADAMW_WORST_FIT = [0.2483, 0.357, 0.4288, 0.5111, 0.6303, 0.762, 0.8508, 0.9186, 0.9492, 0.9688, 0.9807, 0.9882,
                   0.9937, 0.9977, 0.9997] + [1.0] * 25
ADAMW_WORST_CONTRADICTED = [0.6563, 0.5064, 0.4079, 0.2998, 0.1847, 0.0777, 0.0278, 0.011, 0.0051, 0.0018, 0.0008,
                            0.0004, 0.0001, 0.0, 0.0001] + [0.0] * 25


# SGD with a 2-epoch warm-up then a linear decay, crop+flip (ResNet-18 on an H200, 9,000
# images, 30% pair noise): the fit falls in the first epoch while the rate ramps up.
WARMUP_FIT = [0.1356, 0.1109, 0.1716, 0.1862, 0.2157, 0.2433, 0.252, 0.2651, 0.2841, 0.3036, 0.3114, 0.3362,
              0.3437, 0.3677, 0.3732, 0.3827, 0.3967, 0.3982, 0.4212, 0.4233, 0.4393, 0.4493, 0.4666, 0.4757,
              0.4896, 0.5006, 0.5026, 0.5219, 0.5324, 0.5439, 0.5522, 0.5683, 0.5747, 0.5946, 0.6082, 0.6257,
              0.6509, 0.6606, 0.6792, 0.7054]
WARMUP_CONTRADICTED = [0.8519, 0.8891, 0.6422, 0.7131, 0.6923, 0.6831, 0.6868, 0.6666, 0.6439, 0.6151, 0.5993, 0.5808,
                       0.567, 0.52, 0.5293, 0.5081, 0.4852, 0.481, 0.4564, 0.4441, 0.4262, 0.4186, 0.3939, 0.3844,
                       0.3666, 0.3546, 0.3519, 0.3377, 0.3168, 0.3119, 0.3032, 0.28, 0.28, 0.2622, 0.2399, 0.2216,
                       0.1982, 0.1828, 0.1657, 0.1459]
WARMUP_LR = [0.00556, 0.10556] + [0.2 * (1 - k / 38) for k in range(38)]


def test_pin_the_plateau_is_not_read_during_the_learning_rate_warm_up():
    # Pin: the warm-up recording the warm-up rule (_warmup_end) was made for.
    # Read from epoch 2 (the fitting rate after the fall looked like a dip before a rise),
    # 64% "wrong labels" and memorised from epoch 13: the window 1-12 ranked at AUROC 0.730
    # against 0.851 for the second half.
    blind = read_phase(list(range(40)), WARMUP_FIT, WARMUP_CONTRADICTED)
    assert blind.memorised and blind.plateau == 2 and blind.onset == 13
    p = read_phase(list(range(40)), WARMUP_FIT, WARMUP_CONTRADICTED, WARMUP_LR)
    assert not p.memorised, p
    assert p.plateau is not None and p.plateau >= 4  # the rates of epochs 1 and 2 rose
    # Pin of the memorisation weight: after the plateau (16) the fit passes 1 - noise late in
    # the decay (epoch 27), and at most 39% of the estimated wrong labels are fitted: the window
    # moves about halfway towards the epochs before it, not to epochs 1-12.
    assert (p.plateau, p.onset) == (16, 27) and p.fitted_wrong == pytest.approx(0.393, abs=1e-3)
    assert 0 < p.weight < 1
    # A rate that never stops rising is all warm-up: no plateau is read.
    rising = [0.01 * (e + 1) for e in range(40)]
    assert read_phase(list(range(40)), WARMUP_FIT, WARMUP_CONTRADICTED, rising).plateau is None
    # A constant rate, or none recorded, leaves every epoch in.
    assert read_phase(list(range(40)), WARMUP_FIT, WARMUP_CONTRADICTED, [0.1] * 40) == blind
    assert read_phase(list(range(40)), WARMUP_FIT, WARMUP_CONTRADICTED, [None] * 40) == blind


def test_pin_an_ordinary_gpu_run_whose_fitting_rate_drifts_is_not_read_as_memorising():
    # Pin: a tuning run of PLATEAU_HORIZON and PLATEAU_RISE (a drifting rate read too early).
    # Its first dip (epoch 5) is not followed by a faster fitting rate: reading the noise
    # there (44%) called this run memorised from epoch 12 and ranked 0.12 AUROC below the
    # second half.
    p = read_phase(list(range(40)), SGD_AGGRE_FIT, SGD_AGGRE_CONTRADICTED)
    assert not p.memorised, p
    assert p.plateau is None or p.plateau > 12
    # Pin: the plateau is read at epoch 24, and the fit passes 1 - noise only at epoch 36, as
    # the rate decays: the window keeps most of the second half.
    assert (p.plateau, p.onset) == (24, 36) and 0 < p.weight < 1


def test_pin_a_run_that_memorises_without_a_dip_is_read_from_its_first_epochs():
    # Pin: a tuning run of the plateau rule (the first average counts when the next is higher).
    p = read_phase(list(range(40)), ADAMW_WORST_FIT, ADAMW_WORST_CONTRADICTED)
    assert p.memorised and p.plateau == 2 and p.onset == 4, p
    assert p.noise == pytest.approx(0.4079)  # 41.2% of the labels are wrong


@pytest.mark.parametrize("curves", [(ADAMW_WORST_FIT, ADAMW_WORST_CONTRADICTED, None),
                                    (SGD_AGGRE_FIT, SGD_AGGRE_CONTRADICTED, None),
                                    (*memorising_fit(onset=9), None), (WARMUP_FIT, WARMUP_CONTRADICTED, WARMUP_LR),
                                    (WARMUP_FIT, WARMUP_CONTRADICTED, [0.01 * (e + 1) for e in range(40)])],
                         ids=["adamw", "sgd", "synthetic", "warm-up", "rate-always-rising"])
def test_a_plateau_once_read_never_moves_and_its_weights_wait_until_then(curves):
    # The engine reads the phase after every epoch and keeps the weights of the epochs that
    # may still become the plateau (pending_plateaus, plus the last three): the plateau it
    # finally reads must be among them at every earlier epoch.
    fit, contradicted, lr = curves
    n = len(fit)
    full = read_phase(list(range(n)), fit, contradicted, lr)
    for k in range(1, n + 1):
        prefix = read_phase(list(range(k)), fit[:k], contradicted[:k], None if lr is None else lr[:k])
        if prefix.plateau is not None:
            assert prefix.plateau == full.plateau
        elif full.plateau is not None and full.plateau < k:
            assert full.plateau in set(pending_plateaus(fit[:k], None if lr is None else lr[:k])) | set(range(k - 3, k))


def test_unknown_values_never_make_a_plateau():
    fit, contradicted = memorising_fit(onset=9)
    fit[3] = math.nan
    p = read_phase(list(range(20)), fit, contradicted)
    assert p.plateau != 3
    assert not read_phase([0, 1, 2], [0.1, 0.2, 0.3], [0.5] * 3).memorised  # too few epochs


def slow_fit(fitted_wrong: float, epochs: int = 30) -> tuple[list[float], list[float]]:
    """The curves of :func:`memorising_fit` (onset 9, plateau 7) with the fit capped where
    the model has fitted ``fitted_wrong`` of the wrong labels the phase estimates: a model
    that memorises part of them and stops there."""
    fit, contradicted = memorising_fit(onset=9, epochs=epochs)
    noise = read_phase(list(range(epochs)), fit, contradicted).noise
    top = fit_at_share(noise, fitted_wrong)
    return [min(f, top) if e > 7 else f for e, f in enumerate(fit)], contradicted


def _window(fit: list[float], contradicted: list[float], lr: list[float] | None = None) -> tuple[int, int]:
    ep = list(range(len(fit)))
    w = window_epochs(ep, "phase", phase=phase_of_curves(ep, fit, contradicted, lr))
    return w[0], w[-1]


def test_no_cliff_a_hair_either_side_of_the_memorised_threshold():
    # The old rule read a run 0.2 points of "fitted wrong labels" short of the threshold as
    # never memorised (the second half, epochs 15-29) and one just past it from its early
    # epochs (1-8); the weight makes the two read almost alike.
    short = read_phase(list(range(30)), *slow_fit(MEMORISED_AT - 0.002))
    past = read_phase(list(range(30)), *slow_fit(MEMORISED_AT + 0.002))
    assert not short.memorised and past.memorised
    assert short.onset == past.onset == 9 and short.plateau == past.plateau == 7
    assert past.weight == 1 and short.weight == pytest.approx(1, abs=0.01)
    lo, hi = _window(*slow_fit(MEMORISED_AT - 0.002)), _window(*slow_fit(MEMORISED_AT + 0.002))
    assert hi == (1, 8) and abs(lo[0] - hi[0]) <= 1 and abs(lo[1] - hi[1]) <= 1, (lo, hi)


def test_the_window_moves_an_epoch_at_a_time_as_more_wrong_labels_are_fitted():
    # From a fit that never passes the memorising share to one that memorised everything, in
    # steps of 1% of the estimated wrong labels: both ends of the window move towards the
    # epochs before the onset, never back, and never by more than one epoch per step.
    windows = [_window(*slow_fit(k / 100)) for k in range(0, 101)]
    assert windows[0] == (15, 29) and windows[-1] == (1, 8)
    for (a0, b0), (a1, b1) in zip(windows, windows[1:]):
        assert 0 <= a0 - a1 <= 1 and 0 <= b0 - b1 <= 1, windows
    # The weight is 0 up to the memorising share and 1 from the memorised one.
    assert windows[round(100 * MEMORISING_FROM)] == (15, 29)
    assert windows[round(100 * MEMORISED_AT)] == (1, 8)
    assert [memorisation_weight(x) for x in (0.0, MEMORISING_FROM, MEMORISED_AT, 1.0)] == [0, 0, 1, 1]


# The SGD recording gpu_runs/dec_worst (ResNet-18, 40.6% wrong labels, crop+flip, warm-up then
# linear decay): its plateau's contradicted share (49.2%) over-estimates the wrong labels, so
# its fit passes 1 - noise at epoch 25 though it never fits more than 61% of its labels; the
# best window in hindsight is epochs 28-39.
DEC_WORST_FIT = [0.1432, 0.1862, 0.247, 0.276, 0.3162, 0.3284, 0.3518, 0.3641, 0.3751, 0.3696, 0.4015, 0.4095,
                 0.4212, 0.4276, 0.4378, 0.4458, 0.4438, 0.4566, 0.4659, 0.4712, 0.4684, 0.4894, 0.4956, 0.4902,
                 0.5022, 0.51, 0.518, 0.513, 0.5261, 0.5375, 0.5364, 0.5468, 0.555, 0.5534, 0.5628, 0.5758, 0.579,
                 0.584, 0.6001, 0.6081]
DEC_WORST_CONTRADICTED = [0.816, 0.682, 0.6668, 0.6182, 0.5637, 0.5399, 0.5005, 0.4975, 0.4916, 0.4822, 0.4594,
                          0.4404, 0.4354, 0.4241, 0.4233, 0.4149, 0.403, 0.3951, 0.3911, 0.385, 0.383, 0.3616, 0.3588,
                          0.355, 0.3504, 0.3398, 0.3342, 0.336, 0.3204, 0.3138, 0.3106, 0.2997, 0.2888, 0.293, 0.2785,
                          0.2676, 0.2599, 0.2592, 0.2364, 0.2327]
DEC_WORST_LR = [0.0025, 0.1025] + [0.2 * (1 - k / 38) for k in range(38)]


def test_pin_a_run_whose_fit_passes_an_over_estimated_clean_share_still_reads_never_memorised():
    # Pin: the curves of gpu_runs/dec_worst, a tuning run of MEMORISING_FROM.
    p = read_phase(list(range(40)), DEC_WORST_FIT, DEC_WORST_CONTRADICTED, DEC_WORST_LR)
    assert p.plateau == 8 and p.noise == pytest.approx(0.4916) and p.crossing == 25
    # It fitted a fifth of the wrong labels it estimated: below the memorising share, so the
    # crossing moves nothing, and the window stays the second half.
    assert p.fitted_wrong == pytest.approx((0.6081 - (1 - 0.4916)) / 0.4916)
    assert p.fitted_wrong < MEMORISING_FROM and p.weight == 0 and not p.memorising and p.onset is None
    assert "never memorised" in p.reason
    assert _window(DEC_WORST_FIT, DEC_WORST_CONTRADICTED, DEC_WORST_LR) == (20, 39)


def _phase_run(tmp_path: Path, fit: list[float], contradicted: list[float] | None) -> Path:
    epochs = len(fit)
    rows, _, clean = noisy_rows(n=60, epochs=epochs, seed=1)
    extra = {e: {"train_acc": fit[e], **({"contradicted": contradicted[e]} if contradicted is not None else {})}
             for e in range(epochs)}
    return write_run(tmp_path / "run", rows, num_classes=4, clean_labels=clean, extra_epoch=extra)


def test_the_phase_window_averages_the_epochs_before_the_onset(tmp_path):
    fit, contradicted = memorising_fit(onset=9)
    run = open_run(_phase_run(tmp_path, fit, contradicted))
    choices = choose_epochs(run, list(range(20)))
    assert choices.phase.onset == 9 and choices.window == tuple(range(1, 9))
    assert choices.disagreement_epochs == (6, 7, 8)
    assert "epoch 9" in choices.note and "1-8" in choices.note
    # The fixed windows stay available and ignore the phase.
    assert window_epochs(list(range(20)), "second_half", phase=choices.phase) == list(range(10, 20))
    assert choose_epochs(run, list(range(20)), window="all").window == tuple(range(20))


def test_a_run_that_began_memorising_says_how_far_its_window_moved(tmp_path):
    fit, contradicted = slow_fit((MEMORISING_FROM + MEMORISED_AT) / 2)
    choices = choose_epochs(open_run(_phase_run(tmp_path, fit, contradicted)), list(range(30)))
    assert not choices.phase.memorised and choices.phase.memorising and choices.phase.onset == 9
    # Halfway between the second half (15-29) and the epochs before the onset (1-8).
    assert choices.window == tuple(range(8, 19)), choices.window
    assert choices.note == ("the model began memorising its labels at epoch 9 (38% of the estimated wrong labels "
                            "fitted): scores are read from epochs 8-18, the second half moved 50% of the way "
                            "towards the epochs before epoch 9")


def test_a_run_that_never_memorised_reads_the_second_half(tmp_path):
    fit, contradicted = memorising_fit(onset=99)
    a = analyze(_phase_run(tmp_path, fit, contradicted))
    assert not a.epoch_choices.phase.memorised and a.epoch_choices.window == tuple(range(10, 20))
    assert a.epoch_choices.disagreement_epochs == (17, 18, 19)


def test_older_runs_get_the_share_from_their_parts(tmp_path):
    # A run recorded by the engine has the recorder's per-epoch share; the same share is
    # recomputed from the parts for runs recorded before the column existed.
    data = colour_images_npz(tmp_path / "d.npz", n=200, classes=4, seed=3)
    config = TrainConfig(epochs=4, batch_size=50, lr=0.01, optimizer="adamw", schedule="constant",
                         warmup_epochs=0.5, augment=False, progress=False)
    torch.manual_seed(0)
    train(tiny_cnn(4), with_noise(load_npz(data), rate=0.25, kind="symmetric", seed=0), tmp_path / "run",
          config=config)
    run = open_run(tmp_path / "run")
    recorded = run.epochs()["contradicted"].to_numpy()
    recomputed = phase_mod._contradicted_from_parts(run, [0, 1, 2, 3])
    np.testing.assert_allclose(recomputed, recorded, atol=1e-9)
    assert recorded.max() > 0  # the model does contradict some labels


def test_the_share_computed_from_the_parts_is_kept(tmp_path, monkeypatch):
    rows, _, _ = noisy_rows(n=80, epochs=4, num_classes=3, seed=1)
    run = open_run(write_run(tmp_path / "run", rows, num_classes=3))
    queried: list[str] = []
    real_sql = phase_mod.share_sql
    monkeypatch.setattr(phase_mod, "share_sql", lambda source: queried.append(source) or real_sql(source))
    first = phase_mod._contradicted_from_parts(run, [0, 1, 2, 3])
    assert len(queried) == 1 and (run.path / phase_mod.SHARE_CACHE).is_file()
    assert phase_mod._contradicted_from_parts(run, [0, 1, 2, 3]) == first and len(queried) == 1  # read back
    # An epoch recorded again (a resume) is computed again, alone.
    part = run.sample_files([2])[0]
    os.utime(part, ns=(part.stat().st_atime_ns, part.stat().st_mtime_ns + 10**9))
    assert phase_mod._contradicted_from_parts(run, [0, 1, 2, 3]) == first
    assert len(queried) == 2 and "epoch=2" in queried[1] and "epoch=1" not in queried[1]
    # A run directory that cannot be written still gets its share, computed each time.
    (run.path / phase_mod.SHARE_CACHE).unlink()

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(phase_mod, "atomic_write_bytes", refuse)
    assert phase_mod._contradicted_from_parts(run, [0, 1, 2, 3]) == first
    assert phase_mod._contradicted_from_parts(run, [0, 1, 2, 3]) == first and len(queried) == 4


def _recording(name: str) -> Path:
    """A recorded GPU run (read-only: only read here, never reported into)."""
    if not (GPU_RUNS / name).is_dir():
        pytest.skip(f"{GPU_RUNS / name} not available")
    return GPU_RUNS / name


def test_pin_the_memorising_gpu_recording_is_read_before_its_onset():
    # Pin: a tuning run of the plateau count and of MEMORISED_AT (the memorising GPU recording).
    tp = training_phase(_recording("mem_worst"))
    # AdamW without augmentation: per-epoch ranking peaks at epoch 3, 96% of the labels fitted by 11.
    assert tp.memorised and (tp.plateau, tp.onset) == (3, 7), tp.phase
    a = analyze(GPU_RUNS / "mem_worst")
    assert a.epoch_choices.window == tuple(range(1, 7))
    true = int(a.truth.sum())
    # Measured: 7,540 counted against 8,110 wrong labels (-7.0%); the old default counted 0.
    assert -0.08 * true <= a.estimate.total - true <= -0.06 * true
    # Measured 0.852; the second half ranked at 0.63.
    assert a.detection.loc["aum", "auroc"] == pytest.approx(0.852, abs=0.005)


def test_pin_the_ordinary_gpu_recording_never_memorised():
    # Pin: a tuning run of MEMORISING_FROM (its fit passes an over-estimated clean share).
    tp = training_phase(_recording("dec_worst"))
    assert not tp.memorising and tp.onset is None and tp.plateau == 8, tp.phase
    a = analyze(GPU_RUNS / "dec_worst")
    assert a.epoch_choices.window == tuple(range(20, 40))
    true = int(a.truth.sum())
    # Measured: 7,915 counted against 8,110 wrong labels (-2.4%).
    assert -0.03 * true <= a.estimate.total - true <= -0.02 * true
    # Measured 0.925 over the second half; the best window in hindsight (28-39) is not far above.
    assert a.detection.loc["aum", "auroc"] == pytest.approx(0.925, abs=0.005)
