"""The README's Hugging Face Trainer recipe, run as written on synthetic data with noise."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from noisy_blobs import BlobDataset  # noqa: E402

from gwa_diag import AlignmentRecorder, open_run  # noqa: E402

N, D, C = 600, 16, 4


def Data():
    return BlobDataset(N, D, C, item=lambda x, y, i: {"x": x, "labels": y, "sample_id": i})


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = transformers.PretrainedConfig()  # what a Hugging Face model carries
        self.body = nn.Sequential(nn.Linear(D, 32), nn.ReLU())
        self.head = nn.Linear(32, C)

    def forward(self, x, labels=None):
        logits = self.head(self.body(x))
        if labels is None:  # Trainer computes the loss itself (label smoothing)
            return {"logits": logits}
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


# --- the recipe (README, "Hugging Face Trainer") -----------------------------------------
class GWATrainer(Trainer):
    def __init__(self, *args, run_dir, head, **kwargs):
        super().__init__(*args, **kwargs)   # sets up torch.distributed under torchrun first
        self.recorder = AlignmentRecorder(self.model, run_dir, head=head)
        self.add_callback(GWAEpochEnd(self.recorder))

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        ids, labels = inputs.pop("sample_id"), inputs["labels"]  # compute_loss may pop labels
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        if model.training:
            self.recorder.update(ids, labels)
        return out


class GWAEpochEnd(TrainerCallback):
    def __init__(self, recorder):
        self.recorder = recorder

    def on_epoch_end(self, args, state, control, **kwargs):
        self.recorder.end_epoch(int(state.epoch - 1e-6))  # epoch index; a cut-short last epoch keeps its own

    def on_train_end(self, args, state, control, **kwargs):
        self.recorder.close()
# ------------------------------------------------------------------------------------------


def test_trainer_recipe_records_every_sample(tmp_path):
    torch.manual_seed(0)
    data, model = Data(), Net()
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=4, per_device_train_batch_size=50,
        learning_rate=0.1, optim="sgd", remove_unused_columns=False, report_to=[], use_cpu=True,
        save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
    )
    GWATrainer(model=model, args=args, train_dataset=data, run_dir=tmp_path / "run", head=model.head).train()
    run = open_run(tmp_path / "run")
    assert run.completed_epochs() == [0, 1, 2, 3] and run.meta["status"] == "finished"
    df = run.samples()
    assert (df.groupby(["epoch", "sample_id"]).size() == 1).all() and len(df) == 4 * N
    mean_align = df[df.epoch >= 2].groupby("sample_id")["alignment"].mean()
    assert roc_auc_score(data.noisy.numpy()[mean_align.index], -mean_align.values) > 0.85


def test_trainer_recipe_with_label_smoothing_and_a_cut_short_last_epoch(tmp_path):
    """Label smoothing makes Trainer pop the labels from the inputs; a fractional epoch count
    ends training inside an epoch. Neither may lose or replace a finished epoch."""
    torch.manual_seed(0)
    data, model = Data(), Net()
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=2.4, per_device_train_batch_size=50,
        learning_rate=0.1, optim="sgd", remove_unused_columns=False, report_to=[], use_cpu=True,
        save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0, label_smoothing_factor=0.1,
    )
    GWATrainer(model=model, args=args, train_dataset=data, run_dir=tmp_path / "run", head=model.head).train()
    run = open_run(tmp_path / "run")
    assert run.completed_epochs() == [0, 1, 2]
    counts = run.samples().groupby("epoch")["sample_id"].agg(["size", "nunique"])
    assert counts.loc[0].tolist() == [N, N] and counts.loc[1].tolist() == [N, N]
    # 12 steps per epoch; 2.4 epochs is 29 steps, so the last epoch has 5 batches of 50.
    assert counts.loc[2].tolist() == [250, 250]


_TORCHRUN_SCRIPT = """
import sys, torch
from test_hf_trainer import Data, Net, GWATrainer
from transformers import TrainingArguments
torch.manual_seed(0)
data, model = Data(), Net()
args = TrainingArguments(output_dir=sys.argv[1] + "_hf", num_train_epochs=2, per_device_train_batch_size=25,
    learning_rate=0.1, optim="sgd", remove_unused_columns=False, report_to=[], use_cpu=True,
    save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0, ddp_backend="gloo")
GWATrainer(model=model, args=args, train_dataset=data, run_dir=sys.argv[1], head=model.head).train()
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_trainer_recipe_under_torchrun(tmp_path):
    """Two CPU processes (gloo): the recipe's recorder sees the process group, so each rank
    writes its own part and the epoch counts every sample once."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "hf_ddp.py"
    script.write_text(_TORCHRUN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        # A free port, not torchrun's default 29500: two test runs at once must not meet.
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
         str(script), str(tmp_path / "run")],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = open_run(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "samples" / "epoch=1").iterdir()) == ["part-0.parquet", "part-1.parquet"]
    assert run.meta["world_size"] == 2 and run.completed_epochs() == [0, 1]
    df = run.samples()
    assert len(df) == 2 * N and (df.groupby(["epoch", "sample_id"]).size() == 1).all()
    assert (run.epochs()["n"] == N).all()
