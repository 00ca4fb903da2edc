"""`gwa-diag train` and `gwa-diag app` on bad input: one-line errors, truthful messages.

Most cases never train: the refusals happen while the options are checked. The ones that do
train use 60 tiny images, the `tiny` model and 1-2 epochs.
"""

from __future__ import annotations

import http.server
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gwa_diag.cli import train as cli_train

from gwa_diag.cli import app as cli_app
from gwa_diag.cli import main


def _npz(path: Path, n: int = 60, c: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=labels)
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"gwa-diag {command}: error:"), err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusals must come before training: fail the test if training starts."""
    from gwa_diag.training import engine

    def train(*args, **kwargs):
        raise AssertionError("training started although the options should have been refused")

    monkeypatch.setattr(engine, "train", train)


# --------------------------------------------------------------------------------------
# option combinations that the help rules out
# --------------------------------------------------------------------------------------


def test_option_combinations_the_help_rules_out_are_refused(tmp_path, capsys, monkeypatch, no_training):
    data = _npz(tmp_path / "d.npz")
    folder = tmp_path / "folder"
    for c in "ab":
        (folder / c).mkdir(parents=True)
        Image.new("RGB", (4, 4), (9, 9, 9)).save(folder / c / "x.png")
    human = tmp_path / "CIFAR-10_human.pt"
    human.write_bytes(b"never read")
    labels = tmp_path / "labels.csv"
    labels.write_text("sample_id,label\n" + "".join(f"{i},{i % 3}\n" for i in range(60)))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path,label\nfolder/a/x.png,a\nfolder/b/x.png,b\n")
    monkeypatch.chdir(tmp_path)  # a refused default-named run would show up in ./runs
    npz = ["--data", "npz", "--data-path", str(data)]
    cases = [
        (["--data", "folder", "--data-path", str(folder), "--label-set", "worst", "--cifar10n", str(human)],
         "--label-set (CIFAR-10-N labels) needs the CIFAR-10 images"),
        (npz + ["--cifar10n", str(human)], "--cifar10n is read only with --label-set"),
        (npz + ["--label-set", "worst"], "--label-set needs --cifar10n"),
        (npz + ["--label-set", "worst", "--cifar10n", str(human), "--labels", str(labels)],
         "--label-set and --labels both choose the labels"),
        (["--data-path", str(data)], "--data-path is not used with --data sample"),
        (["--cifar10n", str(human)], "--data sample ships its own CIFAR-10-N label sets"),
        (npz + ["--download"], "--download fetches CIFAR-10 only"),
        (npz + ["--image-size", "8"], "--image-size resizes image folders and manifests only"),
        (["--data", "manifest", "--data-path", str(manifest), "--label-set", "worst", "--cifar10n", str(human)],
         "--label-set (CIFAR-10-N labels) needs the CIFAR-10 images"),
        (["--data", "manifest"], "--data manifest needs --data-path"),
        (["--data", "npz"], "--data npz needs --data-path"),
        (npz + ["--noise-kind", "pair"], "--noise-kind only applies with --noise-rate"),
        (npz + ["--noise-seed", "3", "--noise-kind", "pair"], "--noise-kind and --noise-seed only apply"),
        (npz + ["--resume"], "--resume continues an existing run: pass its directory with --out"),
    ]
    for extra, message in cases:
        assert main(["train", "--epochs", "1", "--quiet", *extra]) == 2, extra
        assert message in _one_line_error(capsys, "train"), extra
    assert not (tmp_path / "runs").exists()


def test_numbers_that_cannot_work_are_refused_while_parsing(tmp_path, capsys, no_training):
    data = _npz(tmp_path / "d.npz")
    base = ["train", "--data", "npz", "--data-path", str(data), "--out", str(tmp_path / "r")]
    for extra, message in [(["--epochs", "0"], "argument --epochs: must be at least 1, got 0"),
                           (["--batch-size", "-5"], "argument --batch-size: must be at least 1, got -5"),
                           (["--data", "folder", "--image-size", "0"], "argument --image-size: must be at least 1"),
                           (["--workers", "-1"], "argument --workers: must be 0 or more, got -1")]:
        with pytest.raises(SystemExit) as exc:
            main(base + extra)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err, extra
    assert not (tmp_path / "r").exists()


def test_bad_paths_devices_and_ports_are_one_line_errors(tmp_path, capsys, run_dir):
    data = _npz(tmp_path / "d.npz")
    (tmp_path / "a_file").write_text("not a folder")
    base = ["train", "--data", "npz", "--data-path", str(data), "--epochs", "1", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "a_file")]) == 2
    assert "check the paths given (--out, --data-path, ...)" in _one_line_error(capsys, "train")
    assert main(base + ["--device", "tpu", "--out", str(tmp_path / "r")]) == 2
    assert "unknown device 'tpu'; use auto, cpu, cuda, cuda:N or mps" in _one_line_error(capsys, "train")
    with pytest.raises(SystemExit) as exc:
        main(["app", str(run_dir), "--port", "99999"])
    assert exc.value.code == 2 and "argument --port: port 99999 is out of range: use 1-65535" in capsys.readouterr().err


# --------------------------------------------------------------------------------------
# data that cannot be trained on, and messages that speak to a CLI user
# --------------------------------------------------------------------------------------


def test_a_single_class_is_refused(tmp_path, capsys, no_training):
    one = tmp_path / "one.npz"
    np.savez(one, images=np.zeros((20, 8, 8, 3), np.uint8), labels=np.zeros(20, np.int64))
    assert main(["train", "--data", "npz", "--data-path", str(one), "--out", str(tmp_path / "r1")]) == 2
    err = _one_line_error(capsys, "train")
    assert "every one of the 20 training samples has class '0'" in err and "at least two classes" in err
    # Two class folders, one of them without images: one class is present, not two.
    for c in ("cat", "dog"):
        (tmp_path / "f" / c).mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (4, 4), (i, i, i)).save(tmp_path / "f" / "dog" / f"{i}.png")
    assert main(["train", "--data", "folder", "--data-path", str(tmp_path / "f"), "--out", str(tmp_path / "r2")]) == 2
    assert "every one of the 3 training samples has class 'dog'" in _one_line_error(capsys, "train")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_data_errors_name_the_file_fix_or_the_cli_flag(tmp_path, capsys, no_training):
    images = np.zeros((6, 8, 8, 3), np.uint8)
    np.savez(tmp_path / "float.npz", images=images, labels=np.arange(6, dtype=np.float64) % 2)
    np.savez(tmp_path / "targets.npz", images=images, targets=np.arange(6) % 2)
    np.savez(tmp_path / "empty.npz", images=images[:0], labels=np.zeros(0, np.int64))
    np.savez(tmp_path / "negative.npz", images=images, labels=np.array([0, 1, -1, 0, 1, 1]))
    (tmp_path / "names.csv").write_text("sample_id,label\n0,cat\n1,dog\n")
    np.savez(tmp_path / "ok.npz", images=images, labels=np.arange(6) % 2)
    for c, size in (("a", (4, 4)), ("b", (5, 4))):
        (tmp_path / "sizes" / c).mkdir(parents=True)
        Image.new("RGB", size).save(tmp_path / "sizes" / c / "x.png")
    npz = ["train", "--data", "npz", "--out", str(tmp_path / "r"), "--data-path"]
    cases = [
        (npz + [str(tmp_path / "float.npz")], "array 'labels' must hold integers, got dtype float64: save it as integers"),
        (npz + [str(tmp_path / "targets.npz")],
         "its arrays are images, targets: save the array under the name 'labels' (Python: load_npz(path, label_key=...))"),
        (npz + [str(tmp_path / "empty.npz")], "empty.npz holds no samples: its 'labels' array is empty"),
        (npz + [str(tmp_path / "negative.npz")], "negative values (e.g. -1 for 'unlabelled') are not classes"),
        (npz + [str(tmp_path / "ok.npz"), "--labels", str(tmp_path / "names.csv")],
         "names.csv label column must hold integers, got text (e.g. 'cat'): write each label as a class index"),
        (["train", "--data", "folder", "--data-path", str(tmp_path / "sizes"), "--out", str(tmp_path / "r")],
         "resize them all to NxN with --image-size N (Python: image_size=N)"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = _one_line_error(capsys, "train")
        assert message in err, err
        # No Python-only advice built from a file's name (the old "np.asarray(names.csv label column)").
        assert "np.asarray(" not in err and "pass num_classes=" not in err, err


# --------------------------------------------------------------------------------------
# what train prints: weights, default names, Ctrl-C
# --------------------------------------------------------------------------------------


def _fake_train(selected_epoch: int | None, write: dict[str, int]):
    """An engine.train stand-in that makes a run directory (no epochs recorded) and writes
    the named checkpoints ({file: epoch})."""
    from gwa_diag.early_stopping import EarlyStopResult
    from gwa_diag.store import RunWriter
    from gwa_diag.training.engine import TrainResult

    def train(model, train_set, out, **kwargs):
        RunWriter(out, meta={"num_classes": 2})
        (Path(out) / "checkpoints").mkdir(parents=True)
        for name, epoch in write.items():
            torch.save({"model": {}, "epoch": epoch}, Path(out) / "checkpoints" / name)
        return TrainResult(Path(out), EarlyStopResult(selected_epoch, "scratch", "a reason", []))

    return train


@pytest.mark.parametrize(
    "selected, files, expected, not_expected",
    [
        (3, {"selected.pt": 3, "last.pt": 4}, "GWA-selected epoch: 3 (a reason); weights in", "not kept"),
        (3, {"last.pt": 4}, "its weights were not kept (checkpoints/selected.pt is missing): the last epoch's weights are in",
         "weights in"),
        (3, {"selected.pt": 2, "last.pt": 4}, "not kept (checkpoints/selected.pt holds epoch 2)", "weights in"),
        (None, {"last.pt": 4}, "GWA selected no epoch (a reason); the last epoch's weights are in", "selected.pt"),
    ],
)
def test_train_names_only_weights_that_exist(tmp_path, capsys, monkeypatch, selected, files, expected, not_expected):
    from gwa_diag.training import engine

    monkeypatch.setattr(engine, "train", _fake_train(selected, files))
    data = _npz(tmp_path / "d.npz")
    assert main(["train", "--data", "npz", "--data-path", str(data), "--quiet", "--out", str(tmp_path / "r")]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "GWA" in line)
    assert expected in line and not_expected not in line, line


def test_default_run_names_differ_within_one_second(tmp_path, capsys, monkeypatch):
    from gwa_diag.training import engine

    monkeypatch.setattr(engine, "train", _fake_train(None, {"last.pt": 0}))
    monkeypatch.setattr(cli_train.time, "strftime", lambda fmt, *a: "20260101-000000")  # the same second
    monkeypatch.chdir(tmp_path)
    data = _npz(tmp_path / "d.npz")
    for _ in range(2):
        assert main(["train", "--data", "npz", "--data-path", str(data), "--quiet"]) == 0
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(names) == 2 and all(n.startswith("20260101-000000-") for n in names), names


def test_ctrl_c_prints_one_line_with_the_command_that_resumes(tmp_path, capsys, monkeypatch):
    from gwa_diag.training import engine

    calls = []
    real_select = engine.select_epoch

    def select_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # after epoch 1 is recorded, before its checkpoint
            raise KeyboardInterrupt
        return real_select(*args, **kwargs)

    monkeypatch.setattr(engine, "select_epoch", select_then_interrupt)
    monkeypatch.chdir(tmp_path)
    data = _npz(tmp_path / "my data.npz")
    argv = ["train", "--data", "npz", "--data-path", str(data), "--epochs", "2", "--batch-size", "30", "--quiet"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1, err
    (run,) = (tmp_path / "runs").iterdir()
    command = f"{shlex.join(['gwa-diag', *argv])} --resume --out {shlex.quote(str(Path('runs') / run.name))}"
    assert lines[0] == (f"interrupted; the epochs recorded so far are kept in {Path('runs') / run.name}: "
                        f"continue with {command}")
    # The printed command does continue the run: every epoch recorded once.
    monkeypatch.setattr(engine, "select_epoch", real_select)
    assert main(shlex.split(command)[1:]) == 0
    epochs = pd.read_parquet(run / "epochs.parquet")["epoch"].tolist()
    assert sorted(epochs) == [0, 1]


def test_ctrl_c_before_the_run_exists_does_not_suggest_resume(tmp_path, capsys, monkeypatch):
    from gwa_diag.training import engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train", interrupted)
    data = _npz(tmp_path / "d.npz")
    argv = ["train", "--data", "npz", "--data-path", str(data), "--quiet", "--out", str(tmp_path / "r")]
    assert main(argv) == 130
    err = capsys.readouterr().err.strip("\n")
    assert err == (f"interrupted before {tmp_path / 'r'} held a run, so there is nothing to resume: "
                   f"start again with {shlex.join(['gwa-diag', *argv])}")


# --------------------------------------------------------------------------------------
# gwa-diag app: a port in use, and whose server answered
# --------------------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    from gwa_diag.store import RunWriter

    run = tmp_path / "run"
    RunWriter(run, meta={"num_classes": 2})  # run.json: enough for the app's checks
    return run


def test_app_refuses_a_port_in_use_before_starting_streamlit(run_dir, capsys, monkeypatch):
    pytest.importorskip("streamlit")
    started = []
    monkeypatch.setattr(cli_app.subprocess, "Popen", lambda *a, **k: started.append(a))
    t0 = time.monotonic()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert main(["app", str(run_dir), "--port", str(port), "--no-browser"]) == 2
        err = _one_line_error(capsys, "app")
        assert f"port {port} on 127.0.0.1 is not available: it is in use (another gwa-diag app?); pass --port " in err
        suggested = int(err.rsplit("--port ", 1)[1])
        assert suggested > port and cli_app._bind_error("127.0.0.1", suggested) is None  # a free one
    assert started == [] and time.monotonic() - t0 < 5


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server's method name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args) -> None:
        pass


class _Proc:
    """Stands in for the Streamlit process: alive for ``alive_polls`` polls, then exited."""

    def __init__(self, pid: int, alive_polls: int) -> None:
        self.pid, self.left, self.returncode = pid, alive_polls, None

    def poll(self) -> int | None:
        self.left -= 1
        if self.left < 0:
            self.returncode = 1
        return self.returncode


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="socket ownership is read from /proc")
def test_app_readiness_needs_our_own_server_to_answer(monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    base = f"http://127.0.0.1:{port}"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        # Another process's server answers while ours starts and then fails: not ready.
        assert cli_app._wait_until_up(_Proc(other.pid, alive_polls=12), base) is False
        # This process holds the listening socket: its answer counts.
        assert cli_app._wait_until_up(_Proc(os.getpid(), alive_polls=1000), base) is True
    finally:
        other.kill()
        other.wait()
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------
# unreadable files are input errors; a bug keeps its traceback
# --------------------------------------------------------------------------------------


def test_unreadable_data_and_label_files_are_one_line_errors(tmp_path, capsys, no_training):
    (tmp_path / "text.npz").write_text("not an npz file\n" * 20)
    whole = _npz(tmp_path / "whole.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    np.savez(tmp_path / "objects.npz", images=np.zeros((2, 8, 8, 3), np.uint8), labels=np.array([0, "a"], dtype=object))
    (tmp_path / "latin1.csv").write_bytes(b"sample_id,label\n0,\xe9t\xe9\n")
    (tmp_path / "text.npy").write_text("0\n1\n")
    (tmp_path / "cifar").mkdir()
    ok = _npz(tmp_path / "ok.npz")
    npz = ["train", "--data", "npz", "--out", str(tmp_path / "r"), "--data-path"]
    cases = [
        (npz + [str(tmp_path / "text.npz")], "cannot read"),
        (npz + [str(tmp_path / "cut.npz")], "cannot read"),
        (npz + [str(tmp_path / "objects.npz")], "cannot read"),
        (npz + [str(ok), "--labels", str(tmp_path / "latin1.csv")], "as a CSV file"),
        (npz + [str(ok), "--labels", str(tmp_path / "text.npy")], "as an .npy array"),
        (["train", "--data", "cifar10", "--data-path", str(tmp_path / "cifar"), "--out", str(tmp_path / "r")],
         "cifar-10-batches-py"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = _one_line_error(capsys, "train")
        assert message in err, err


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), AttributeError("no attribute 'labels'")])
def test_a_programming_error_keeps_its_traceback(tmp_path, capsys, monkeypatch, bug):
    def broken(args):
        raise bug

    monkeypatch.setattr(cli_train, "load_train_data", broken)
    with pytest.raises(type(bug)):
        main(["train", "--out", str(tmp_path / "r")])
    assert "error:" not in capsys.readouterr().err


def test_train_options_are_the_config_fields_with_their_defaults():
    from dataclasses import asdict

    from gwa_diag.cli import build_parser
    from gwa_diag.training.config import TrainConfig

    args = build_parser().parse_args(["train"])
    assert cli_train._config(args) == TrainConfig()
    flipped = build_parser().parse_args(["train", "--no-augment", "--quiet", "--workers", "2", "--optimizer", "adamw",
                                         "--batch-size", "8", "--warmup-epochs", "0.5"])
    config = asdict(cli_train._config(flipped))
    assert config == {**asdict(TrainConfig()), "augment": False, "progress": False, "num_workers": 2,
                      "optimizer": "adamw", "batch_size": 8, "warmup_epochs": 0.5}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--momentum", "0.5"])  # a setting the CLI does not offer
