"""The checkpoint from before memorisation: the engine reads the training phase online and
keeps the weights of the plateau before the onset; it equals the phase the analysis reads
offline from the same recording, and a resume after a kill keeps it exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import gwa_diag.training.engine as train_mod
from analysis_fixtures import colour_images_npz
from gwa_diag.analysis.pipeline import analyze
from gwa_diag.training.data import load_npz, with_noise
from gwa_diag.training.engine import TrainConfig, train
from gwa_diag.training.memorisation import KEPT_NAME
from gwa_diag.training.models import tiny_cnn

# AdamW at a constant rate without augmentation on easy images: the model fits the clean 75%
# within a few epochs, then memorises the 25% injected wrong labels.
CFG = TrainConfig(epochs=16, batch_size=50, lr=0.01, optimizer="adamw", schedule="constant", warmup_epochs=0.5,
                  augment=False, progress=False, seed=0)


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    data = colour_images_npz(tmp_path_factory.mktemp("data") / "d.npz", n=300, classes=4, seed=3)
    return lambda: with_noise(load_npz(data), rate=0.25, kind="symmetric", seed=0)


def _train(out: Path, dataset, **kwargs):
    torch.manual_seed(0)
    return train(tiny_cnn(4), dataset, out, config=CFG, **kwargs)


def test_the_kept_checkpoint_is_the_offline_plateau(tmp_path, noisy):
    _train(tmp_path / "run", noisy())
    record = json.loads((tmp_path / "run" / "run.json").read_text())["memorisation"]
    phase = analyze(tmp_path / "run").epoch_choices.phase
    assert phase.memorised and record["memorised"]
    assert record["onset"] == phase.onset and record["kept_epoch"] == phase.plateau < phase.onset
    kept = torch.load(tmp_path / "run" / "checkpoints" / KEPT_NAME, weights_only=True)
    assert kept["epoch"] == phase.plateau
    # `gwa-diag train` and the report name the kept weights, and which file to use without
    # held-out data (the run has no evaluation set).
    from gwa_diag.analysis.stopping import stopping

    text = "\n".join(stopping(tmp_path / "run").lines())
    assert f"(epoch {phase.plateau}) are in checkpoints/{KEPT_NAME}" in text
    assert "use checkpoints/last.pt" in text
    # Only the kept weights remain: none of the epochs that waited for the onset.
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.pt")) == sorted(
        [KEPT_NAME, "last.pt", "selected.pt"])


def test_resume_after_a_kill_keeps_the_same_checkpoint(tmp_path, noisy, monkeypatch):
    _train(tmp_path / "full", noisy())
    full = json.loads((tmp_path / "full" / "run.json").read_text())["memorisation"]
    onset, plateau = full["onset"], full["plateau"]
    real_save = train_mod._atomic_save

    def kill_after_the_onset(obj, path):
        # After the plateau is known, before memorisation is confirmed: its weights are waiting.
        if path.name == "last.pt" and obj["epoch"] == plateau + 2:
            raise KeyboardInterrupt("simulated kill")
        real_save(obj, path)

    monkeypatch.setattr(train_mod, "_atomic_save", kill_after_the_onset)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "crash", noisy())
    assert not (tmp_path / "crash" / "checkpoints" / KEPT_NAME).exists()
    monkeypatch.setattr(train_mod, "_atomic_save", real_save)
    _train(tmp_path / "crash", noisy(), resume=True)

    resumed = json.loads((tmp_path / "crash" / "run.json").read_text())["memorisation"]
    assert resumed == full
    a = torch.load(tmp_path / "full" / "checkpoints" / KEPT_NAME, weights_only=True)
    b = torch.load(tmp_path / "crash" / "checkpoints" / KEPT_NAME, weights_only=True)
    assert a["epoch"] == b["epoch"] == plateau
    for key in a["model"]:
        np.testing.assert_allclose(a["model"][key].float().numpy(), b["model"][key].float().numpy(), rtol=1e-5,
                                   atol=1e-6, err_msg=key)


def test_a_run_that_never_memorises_keeps_no_waiting_weights(tmp_path, noisy):
    # SGD with a decaying rate for 6 epochs: no plateau followed by fitting the wrong labels.
    config = TrainConfig(epochs=6, batch_size=50, lr=0.05, warmup_epochs=0.5, augment=True, progress=False)
    torch.manual_seed(0)
    train(tiny_cnn(4), noisy(), tmp_path / "run", config=config)
    record = json.loads((tmp_path / "run" / "run.json").read_text())["memorisation"]
    assert not record["memorised"] and record["kept_epoch"] is None and record["checkpoint"] is None
    assert not list((tmp_path / "run" / "checkpoints").glob("recent-*.pt"))
    assert not (tmp_path / "run" / "checkpoints" / KEPT_NAME).exists()


@pytest.mark.parametrize("fitted_wrong, kept", [(0.0, None), (0.3, 7), (0.4, 7), (0.6, 7)])
def test_the_plateau_weights_are_kept_once_memorisation_begins(tmp_path, fitted_wrong, kept):
    # Read online, epoch by epoch, as the engine does: a run that fitted a third of the
    # wrong labels it estimated keeps the plateau's weights as one past the threshold does,
    # and one that never began memorising keeps none.
    from test_phase import slow_fit

    from gwa_diag.training.memorisation import MemorisationKeeper

    fit, share = slow_fit(fitted_wrong)
    keeper = MemorisationKeeper(tmp_path, lambda obj, path: torch.save(obj, path), lambda fn, *a: fn(*a))
    history = []
    for e, (f, c) in enumerate(zip(fit, share)):
        history.append({"epoch": e, "train_acc": f, "contradicted": c, "lr": 1e-3})
        phase = keeper.after_epoch(history, e, {"w": torch.tensor([float(e)])})
    keeper.finish(phase)
    assert keeper.record(phase)["kept_epoch"] == kept
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    if kept is None:
        assert files == [] and phase.weight == 0
    else:
        assert files == [KEPT_NAME] and phase.weight > 0
        assert torch.load(tmp_path / KEPT_NAME, weights_only=True)["epoch"] == kept
