"""Training engine: recording, early-stopping checkpoint, resume after a crash, bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import gwa_diag.engine as train_mod
from gwa_diag.data import ArrayDataset, with_noise
from gwa_diag.models import tiny_cnn
from gwa_diag.store import RunDirError, open_run
from gwa_diag.engine import TrainConfig, train

C = 4


def _images(n=480, seed=0):
    """Class = one of C fixed colour templates plus pixel noise: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(C, 1, 1, 3))
    labels = rng.integers(0, C, size=n)
    imgs = templates[labels] + rng.normal(0, 40, size=(n, 32, 32, 3))
    return np.clip(imgs, 0, 255).astype(np.uint8), labels


def _dataset(noise=0.25):
    imgs, labels = _images()
    ds = ArrayDataset(imgs, labels, sample_ids=np.arange(len(labels)) * 3 + 7)
    return with_noise(ds, rate=noise, kind="symmetric", seed=1) if noise else ds


CFG = dict(epochs=4, batch_size=64, lr=0.05, warmup_epochs=0.5, progress=False, augment=False)


def test_train_records_noise_and_keeps_selected_checkpoint(tmp_path):
    ds = _dataset()
    torch.manual_seed(0)
    result = train(tiny_cnn(C, width=8), ds, tmp_path / "run", config=TrainConfig(**CFG), eval_set=_dataset(noise=0))
    run = open_run(tmp_path / "run")
    assert run.completed_epochs() == [0, 1, 2, 3]
    df = run.samples()
    assert (df.groupby(["epoch", "sample_id"]).size() == 1).all() and len(df) == 4 * len(ds)
    labels = run.labels().set_index("sample_id")
    noisy = labels["label"] != labels["clean_label"]
    assert noisy.sum() == round(0.25 * len(ds))
    mean_align = df[df.epoch >= 2].groupby("sample_id")["alignment"].mean()
    assert roc_auc_score(noisy.loc[mean_align.index], -mean_align) > 0.8
    ep = run.epochs()
    assert "eval_acc" in ep.columns and ep["eval_acc"].iloc[-1] > 0.5
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "finished" and meta["selected_epoch"] == result.selected.epoch
    assert meta["dataset"] == ds.spec and meta["config"]["epochs"] == 4
    sel = torch.load(tmp_path / "run" / "checkpoints" / "selected.pt", weights_only=True)
    assert sel["epoch"] == result.selected.epoch


def test_resume_after_crash_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    cfg = TrainConfig(**{**CFG, "epochs": 3})
    torch.manual_seed(0)
    train(tiny_cnn(C, width=8), _dataset(), tmp_path / "full", config=cfg)

    real_save = train_mod._atomic_save

    def crash_on_epoch1_checkpoint(obj, path):
        # Epoch 1's part and summary row are on disk, its checkpoint is not: the worst spot.
        if path.name == "last.pt" and obj["epoch"] == 1:
            raise KeyboardInterrupt("simulated kill")
        real_save(obj, path)

    monkeypatch.setattr(train_mod, "_atomic_save", crash_on_epoch1_checkpoint)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cnn(C, width=8), _dataset(), tmp_path / "crash", config=cfg)
    assert open_run(tmp_path / "crash").completed_epochs() == [0, 1]
    monkeypatch.setattr(train_mod, "_atomic_save", real_save)
    with pytest.raises(RunDirError, match="already holds run"):
        train(tiny_cnn(C, width=8), _dataset(), tmp_path / "crash", config=cfg)
    train(tiny_cnn(C, width=8), _dataset(), tmp_path / "crash", config=cfg, resume=True)

    full, resumed = open_run(tmp_path / "full"), open_run(tmp_path / "crash")
    assert resumed.completed_epochs() == [0, 1, 2]
    a, b = full.samples(), resumed.samples()
    assert (b.groupby(["epoch", "sample_id"]).size() == 1).all()
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full.epochs()["gwa"], resumed.epochs()["gwa"], rtol=1e-5)


def test_class_count_mismatch_is_refused(tmp_path):
    with pytest.raises(ValueError, match="num_classes=4"):
        train(tiny_cnn(10), _dataset(), tmp_path / "run", config=TrainConfig(**CFG))
    assert not (tmp_path / "run").exists()


def test_bad_config_names_valid_choices(tmp_path):
    with pytest.raises(ValueError, match="valid: sgd, adamw"):
        train(tiny_cnn(C), _dataset(), tmp_path / "run", config=TrainConfig(optimizer="lamb"))


def test_augment_is_crop_and_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = train_mod._augment(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    # Every output row is a (possibly flipped, shifted) window of the zero-padded input.
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        found = any(
            torch.equal(out[b], padded[b, :, dy : dy + 8, dx : dx + 8]) or torch.equal(out[b], padded[b, :, dy : dy + 8, dx : dx + 8].flip(-1))
            for dy in range(5) for dx in range(5)
        )
        assert found
