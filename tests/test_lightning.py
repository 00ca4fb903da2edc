"""GWACallback inside a real Lightning Trainer.fit on synthetic data with injected noise."""

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

L = pytest.importorskip("lightning.pytorch")

from noisy_blobs import BlobDataset  # noqa: E402

from gwa_diag.training.lightning import GWACallback  # noqa: E402
from gwa_diag.store import open_run  # noqa: E402

N, D, C = 600, 16, 4


def _Data():
    return BlobDataset(N, D, C)  # items (x, y, sample id)


class _Module(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, C))

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def test_callback_records_every_sample_each_epoch(tmp_path):
    torch.manual_seed(0)
    data = _Data()
    loader = torch.utils.data.DataLoader(data, batch_size=50, shuffle=True)
    trainer = L.Trainer(max_epochs=4, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=2,
                        callbacks=[GWACallback(tmp_path / "run")])
    trainer.fit(_Module(), loader)
    run = open_run(tmp_path / "run")
    assert run.completed_epochs() == [0, 1, 2, 3] and run.meta["status"] == "finished"
    df = run.samples()
    assert (df.groupby(["epoch", "sample_id"]).size() == 1).all() and len(df) == 4 * N
    mean_align = df[df.epoch >= 2].groupby("sample_id")["alignment"].mean()
    assert roc_auc_score(data.noisy.numpy()[mean_align.index], -mean_align.values) > 0.85


def test_fit_from_a_checkpoint_continues_the_run(tmp_path):
    """Train 3 epochs with a checkpoint each, then resume from epoch 0's checkpoint to 4
    epochs: epochs 1-3 are recorded again, each (epoch, sample) once, steps going on from
    epoch 0's last step."""
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(_Data(), batch_size=50, shuffle=True)

    def trainer(epochs):
        ckpt = L.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
        return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[GWACallback(tmp_path / "run"), ckpt])

    trainer(3).fit(_Module(), loader)
    first = open_run(tmp_path / "run")
    assert first.completed_epochs() == [0, 1, 2]
    run_id, before = first.meta["run_id"], first.samples()
    (epoch0,) = (tmp_path / "ckpt").glob("epoch=0-*.ckpt")
    trainer(4).fit(_Module(), loader, ckpt_path=str(epoch0))
    run = open_run(tmp_path / "run")
    assert run.completed_epochs() == [0, 1, 2, 3] and run.meta["run_id"] == run_id and run.meta["status"] == "finished"
    df = run.samples()
    assert (df.groupby(["epoch", "sample_id"]).size() == 1).all() and len(df) == 4 * N
    pd.testing.assert_frame_equal(df[df.epoch == 0].reset_index(drop=True), before[before.epoch == 0].reset_index(drop=True))
    steps = df.groupby("epoch")["step"].agg(["min", "max"])
    assert (steps["min"].iloc[1:].to_numpy() == steps["max"].iloc[:-1].to_numpy() + 1).all()  # no gap, no overlap
    assert run.epochs()["end_step"].tolist() == (steps["max"] + 1).tolist()
