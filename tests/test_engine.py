"""Training engine: recording, early-stopping checkpoint, resume after a crash, bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import gwa_diag.training.engine as train_mod
from gwa_diag.training.data import ArrayDataset, with_noise
from gwa_diag.training.models import tiny_cnn
from gwa_diag.store import RunDirError, open_run
from gwa_diag.training.batches import augment, batch_bounds
from gwa_diag.training.engine import TrainConfig, train

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
    with pytest.raises(ValueError, match=r"unknown optimizer 'lamb'.*'sgd', 'adamw'"):
        train(tiny_cnn(C), _dataset(), tmp_path / "run", config=TrainConfig(optimizer="lamb"))


def test_augment_is_crop_and_flip():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = augment(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    # Every output row is a (possibly flipped, shifted) window of the zero-padded input.
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(2):
        found = any(
            torch.equal(out[b], padded[b, :, dy : dy + 8, dx : dx + 8]) or torch.equal(out[b], padded[b, :, dy : dy + 8, dx : dx + 8].flip(-1))
            for dy in range(5) for dx in range(5)
        )
        assert found


def test_batch_bounds_never_leave_a_batch_of_one():
    assert batch_bounds(130, 64) == [(0, 64), (64, 128), (128, 130)]  # 2 left over: a batch
    assert batch_bounds(129, 64) == [(0, 64), (64, 129)]  # 1 left over joins the last batch
    assert batch_bounds(131, 64) == [(0, 64), (64, 128), (128, 131)]
    assert batch_bounds(1, 64) == [(0, 1)]
    # 2 ranks: 129 samples pad to 130; the last global batch (2 samples) cannot give each rank 2.
    assert batch_bounds(129, 64, world=2) == [(0, 64), (64, 130)]
    assert batch_bounds(132, 64, world=2) == [(0, 64), (64, 128), (128, 132)]


def test_a_last_batch_of_one_sample_trains_with_batchnorm(tmp_path):
    """65 images, batch 64: BatchNorm cannot train on the single last sample, so it joins
    the batch before; every sample is still recorded once."""
    imgs, labels = _images(n=65)
    ds = ArrayDataset(imgs, labels)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, C)
    )
    train(model, ds, tmp_path / "run", config=TrainConfig(**{**CFG, "epochs": 2}))
    run = open_run(tmp_path / "run")
    df = run.samples()
    assert len(df) == 2 * 65 and (df.groupby(["epoch", "sample_id"]).size() == 1).all()
    assert df.groupby("epoch")["step"].nunique().tolist() == [1, 1]
    assert run.meta["steps_per_epoch"] == 1


def test_eval_set_with_other_classes_is_refused_before_anything_is_written(tmp_path):
    imgs, _ = _images(n=20)
    bad_eval = ArrayDataset(imgs, np.arange(20) % 6)  # 6 classes; the training set has 4
    with pytest.raises(ValueError, match="evaluation set has labels in \\[0, 5\\].*4 classes"):
        train(tiny_cnn(C, width=8), _dataset(), tmp_path / "run", config=TrainConfig(**CFG), eval_set=bad_eval)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_other_labels_or_settings(tmp_path):
    cfg = TrainConfig(**{**CFG, "epochs": 2})
    out = tmp_path / "run"
    train(tiny_cnn(C, width=8), _dataset(), out, config=cfg, meta={"model_name": "tiny"})  # as the CLI records it
    before = (out / "run.json").read_text(), open_run(out).samples()
    with pytest.raises(ValueError, match="labels differ from the run's labels.parquet"):
        train(tiny_cnn(C, width=8), _dataset(noise=0.1), out, config=cfg, resume=True)
    with pytest.raises(ValueError, match=r"other settings \(batch_size: 64 -> 32, lr: 0.05 -> 0.1\)"):
        train(tiny_cnn(C, width=8), _dataset(), out, config=TrainConfig(**{**CFG, "epochs": 2, "batch_size": 32, "lr": 0.1}), resume=True)
    # Refused without touching the run.
    assert (out / "run.json").read_text() == before[0]
    pd.testing.assert_frame_equal(open_run(out).samples(), before[1])
    # Another network of the same class (other shapes) is refused too, before run.json changes.
    with pytest.raises(ValueError, match="different network"):
        train(tiny_cnn(C, width=16), _dataset(), out, config=cfg, resume=True)
    with pytest.raises(ValueError, match="resume with the same --model"):
        train(tiny_cnn(C, width=8), _dataset(), out, config=cfg, resume=True, meta={"model_name": "other"})
    assert (out / "run.json").read_text() == before[0]
    # Where it runs may change.
    train(tiny_cnn(C, width=8), _dataset(), out, config=TrainConfig(**{**CFG, "epochs": 2, "device": "cpu"}), resume=True)
    assert open_run(out).meta["status"] == "finished"


@pytest.mark.parametrize("where", ["in epoch 0", "after epoch 0's records, before its checkpoint"])
def test_run_stopped_before_its_first_checkpoint_resumes_from_the_start(tmp_path, monkeypatch, where):
    cfg = TrainConfig(**{**CFG, "epochs": 2})
    torch.manual_seed(0)
    train(tiny_cnn(C, width=8), _dataset(), tmp_path / "full", config=cfg)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt(f"simulated kill {where}")

    if where == "in epoch 0":
        monkeypatch.setattr(train_mod.AlignmentRecorder, "end_epoch", crash)
    else:
        monkeypatch.setattr(train_mod, "_atomic_save", crash)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cnn(C, width=8), _dataset(), tmp_path / "crash", config=cfg)
    monkeypatch.undo()
    assert open_run(tmp_path / "crash").completed_epochs() == ([] if where == "in epoch 0" else [0])
    torch.manual_seed(0)
    train(tiny_cnn(C, width=8), _dataset(), tmp_path / "crash", config=cfg, resume=True)
    pd.testing.assert_frame_equal(open_run(tmp_path / "full").samples(), open_run(tmp_path / "crash").samples())
    np.testing.assert_allclose(open_run(tmp_path / "full").epochs()["gwa"], open_run(tmp_path / "crash").epochs()["gwa"])


def test_resume_never_replaces_epochs_it_cannot_continue(tmp_path):
    import shutil

    from gwa_diag.recorder import AlignmentRecorder

    cfg = TrainConfig(**{**CFG, "epochs": 3})
    # A run recorded in another training loop: nothing for gwa-diag train to continue.
    plain = tmp_path / "plain"
    model = tiny_cnn(C, width=8)
    rec = AlignmentRecorder(model, plain)
    imgs, labels = _images(64)
    model(torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255)
    rec.update(torch.arange(64), torch.from_numpy(labels))
    rec.end_epoch(0)
    rec.close()
    before = (plain / "run.json").read_text()
    with pytest.raises(ValueError, match="recorded by an AlignmentRecorder in another training loop"):
        train(tiny_cnn(C, width=8), _dataset(), plain, config=cfg, resume=True)
    assert (plain / "run.json").read_text() == before and open_run(plain).completed_epochs() == [0]
    # A gwa-diag run whose checkpoints were removed: its recorded epochs stay.
    out = tmp_path / "run"
    train(tiny_cnn(C, width=8), _dataset(), out, config=cfg)
    shutil.rmtree(out / "checkpoints")
    rows = open_run(out).samples()
    with pytest.raises(ValueError, match="3 recorded epochs but no checkpoints/last.pt"):
        train(tiny_cnn(C, width=8), _dataset(), out, config=cfg, resume=True)
    pd.testing.assert_frame_equal(open_run(out).samples(), rows)


def test_resume_refuses_other_images_with_the_same_ids_and_labels(tmp_path):
    cfg = TrainConfig(**{**CFG, "epochs": 2})
    out = tmp_path / "run"
    train(tiny_cnn(C, width=8), _dataset(), out, config=cfg)
    ds = _dataset()
    inverted = ArrayDataset(255 - _images()[0], ds.labels, sample_ids=ds.sample_ids)
    with pytest.raises(ValueError, match="training images differ"):
        train(tiny_cnn(C, width=8), inverted, out, config=cfg, resume=True)
    # The same pixels from another object (a moved file) resume fine.
    train(tiny_cnn(C, width=8), _dataset(), out, config=cfg, resume=True)
    assert open_run(out).meta["status"] == "finished"


def test_a_second_train_on_a_run_being_written_is_refused(tmp_path, monkeypatch):
    import subprocess
    import sys

    cfg = TrainConfig(**{**CFG, "epochs": 2})
    out = tmp_path / "run"
    train(tiny_cnn(C, width=8), _dataset(), out, config=cfg)
    rows = open_run(out).samples()
    # Another process holds the run (a first `train` still running) ...
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match="being written by another gwa-diag train"):
            train(tiny_cnn(C, width=8), _dataset(), out, config=cfg, resume=True)
    finally:
        holder.kill()
        holder.wait()
    pd.testing.assert_frame_equal(open_run(out).samples(), rows)
    # ... and once it is gone (killed: the kernel drops its lock), resuming works.
    train(tiny_cnn(C, width=8), _dataset(), out, config=cfg, resume=True)
    assert open_run(out).meta["status"] == "finished"


def test_train_step_calls_any_step_recorder_with_the_weights_of_its_forward():
    # A benchmark's own recorder (train_step's StepRecorder): update() runs after backward and
    # before the optimizer step, so the head's weight it reads is the one the logits came from.
    torch.manual_seed(0)
    model = tiny_cnn(4, width=8)
    seen: dict[str, torch.Tensor] = {}

    class Pieces:
        def update(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
            seen.update(weight=model.head.weight.detach().clone(), ids=ids, grad=model.head.weight.grad.clone())

    before = model.head.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    batch = (images, torch.tensor([0, 1, 2, 3, 0, 1]), torch.arange(10, 16))
    mean, std = torch.full((1, 3, 1, 1), 127.0), torch.full((1, 3, 1, 1), 60.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss = train_mod.train_step(model, batch, opt, mean=mean, std=std, dtype=None, scaler=scaler, recorder=Pieces())
    assert torch.isfinite(loss) and seen["ids"].tolist() == list(range(10, 16))
    assert torch.equal(seen["weight"], before) and seen["grad"].abs().sum() > 0
    assert not torch.equal(model.head.weight, before)  # the step did happen, after update()
    assert train_mod.autocast_dtype("auto", torch.device("cpu")) is None
    assert train_mod.autocast_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_build_optimizer_is_the_engines_optimizer_and_schedule():
    model = tiny_cnn(4, width=8)
    opt, sched = train_mod.build_optimizer(model, TrainConfig(lr=0.2, warmup_epochs=1), total_steps=10, warmup_steps=2)
    decay, other = opt.param_groups
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim <= 1 for p in other["params"])
    assert decay["weight_decay"] == TrainConfig().weight_decay and other["weight_decay"] == 0.0
    assert isinstance(opt, torch.optim.SGD) and decay["nesterov"] and decay["lr"] == pytest.approx(0.1)  # warm-up step 1 of 2
    adamw, _ = train_mod.build_optimizer(model, TrainConfig(optimizer="adamw"), total_steps=10, warmup_steps=0)
    assert isinstance(adamw, torch.optim.AdamW)
