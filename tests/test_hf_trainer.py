"""The README's Hugging Face Trainer recipe, run as written on synthetic data with noise."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from noisy_blobs import noisy_blobs  # noqa: E402

from gwa_diag import AlignmentRecorder, open_run  # noqa: E402

N, D, C = 600, 16, 4


class Data(torch.utils.data.Dataset):
    def __init__(self):
        self.x, self.y, self.noisy = noisy_blobs(N, D, C)

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i], "sample_id": i}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(D, 32), nn.ReLU())
        self.head = nn.Linear(32, C)

    def forward(self, x, labels=None):
        logits = self.head(self.body(x))
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


# --- the recipe (README, "Hugging Face Trainer") -----------------------------------------
class GWATrainer(Trainer):
    """Trainer that hands each training batch's ids and labels to the recorder."""

    def __init__(self, *args, recorder, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorder = recorder

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        ids = inputs.pop("sample_id")
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        if model.training:
            self.recorder.update(ids, inputs["labels"])
        return out


class GWAEpochEnd(TrainerCallback):
    def __init__(self, recorder):
        self.recorder = recorder

    def on_epoch_end(self, args, state, control, **kwargs):
        self.recorder.end_epoch(round(state.epoch) - 1)

    def on_train_end(self, args, state, control, **kwargs):
        self.recorder.close()
# ------------------------------------------------------------------------------------------


def test_trainer_recipe_records_every_sample(tmp_path):
    torch.manual_seed(0)
    data, model = Data(), Net()
    recorder = AlignmentRecorder(model, tmp_path / "run", head=model.head)
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=4, per_device_train_batch_size=50,
        learning_rate=0.1, optim="sgd", remove_unused_columns=False, report_to=[], use_cpu=True,
        save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0,
    )
    GWATrainer(model=model, args=args, train_dataset=data, recorder=recorder,
               callbacks=[GWAEpochEnd(recorder)]).train()
    run = open_run(tmp_path / "run")
    assert run.completed_epochs() == [0, 1, 2, 3] and run.meta["status"] == "finished"
    df = run.samples()
    assert (df.groupby(["epoch", "sample_id"]).size() == 1).all() and len(df) == 4 * N
    mean_align = df[df.epoch >= 2].groupby("sample_id")["alignment"].mean()
    assert roc_auc_score(data.noisy.numpy()[mean_align.index], -mean_align.values) > 0.85
