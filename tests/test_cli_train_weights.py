"""``gwa-diag train --weights``: fine-tuning from a state-dict file (offline, small resnet18 runs),
what run.json records, resuming, and the one-line refusals."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from gwa_diag.cli import build_parser, main
from gwa_diag.cli import train as cli_train


def _npz(path: Path, n: int = 16, c: int = 3) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8), labels=np.arange(n) % c)
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("gwa-diag train: error:"), err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture
def imagenet_r18(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    torch.save(state, tmp_path / "r18.pt")
    return tmp_path / "r18.pt", state


def test_weights_file_fine_tunes_records_and_resumes(tmp_path, capsys, monkeypatch, imagenet_r18):
    from gwa_diag.training import engine

    path, state = imagenet_r18
    real_train, seen = engine.train, {}

    def checked_train(model, *args, **kwargs):
        # Before any step: the file's weights, a fresh 3-way head.
        own = model.state_dict()
        seen["loaded"] = all(torch.equal(own[k], v) for k, v in state.items() if not k.startswith("fc."))
        seen["head"] = model.fc.out_features
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(engine, "train", checked_train)
    out = tmp_path / "run"
    command = ["train", "--data", "npz", "--data-path", str(_npz(tmp_path / "d.npz")), "--model", "tv:resnet18",
               "--weights", str(path), "--epochs", "1", "--batch-size", "8", "--quiet", "--out", str(out)]
    assert main(command) == 0
    assert "--mode finetune" in capsys.readouterr().out
    assert seen == {"loaded": True, "head": 3}
    meta = json.loads((out / "run.json").read_text())
    assert meta["config"]["mode"] == "finetune"
    assert meta["weights"] == {"source": "file", "file": str(path.resolve()),
                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert (out / "epochs.parquet").is_file() and (out / "checkpoints" / "last.pt").is_file()
    # Resuming takes the weights from the checkpoint: the file is not read again.
    path.unlink()
    seen.clear()
    assert main(command + ["--resume"]) == 0
    assert seen["head"] == 3 and json.loads((out / "run.json").read_text())["weights"] == meta["weights"]


def test_explicit_mode_scratch_stays_with_weights(imagenet_r18):
    path, _ = imagenet_r18
    parse = build_parser().parse_args
    args = parse(["train", "--model", "tv:resnet18", "--weights", str(path), "--mode", "scratch"])
    assert cli_train._settle_weights(args, 0) == str(path)
    assert cli_train._config(args).mode == "scratch"
    plain = parse(["train"])
    assert cli_train._settle_weights(plain, 0) is None and cli_train._config(plain).mode == "scratch"


def test_weights_refusals_are_one_line_before_the_run_exists(tmp_path, capsys, imagenet_r18):
    path, state = imagenet_r18
    grey = dict(state, **{"conv1.weight": torch.zeros(64, 1, 7, 7)})
    torch.save(grey, tmp_path / "grey.pt")
    data = _npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    base = ["train", "--data", "npz", "--data-path", str(data), "--epochs", "1", "--quiet", "--out", str(out)]
    for extra, named in [(["--model", "tv:resnet18", "--weights", str(tmp_path / "grey.pt")], "conv1.weight"),
                         (["--model", "tiny", "--weights", "DEFAULT"], "--weights FILE"),
                         (["--model", "tv:resnet18", "--weights", str(tmp_path / "nope.pt")], "nope.pt")]:
        assert main(base + extra) == 2, extra
        assert named in _one_line_error(capsys), extra
        assert not out.exists(), extra


def test_default_weights_download_failure_is_one_line(tmp_path, capsys, monkeypatch):
    from urllib.error import URLError

    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    out = tmp_path / "run"
    assert main(["train", "--data", "npz", "--data-path", str(_npz(tmp_path / "d.npz")), "--model", "tv:resnet18",
                 "--weights", "DEFAULT", "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    err = _one_line_error(capsys)
    assert "download" in err and "--weights FILE" in err
    assert not out.exists()
