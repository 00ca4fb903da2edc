"""``gwa-diag relocate``: a run whose data moved is pointed at the new place, but only at
the data it trained on; anything else is refused and run.json is left byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis_fixtures import colour_images_npz
from gwa_diag.checks import InputError
from gwa_diag.cli import main
from gwa_diag.store import exclusive_lock
from gwa_diag.training.data import load_dataset
from gwa_diag.training.relocate import relocate_run

TRAIN = ["--epochs", "2", "--batch-size", "50", "--quiet"]


def _npz_run(tmp_path: Path, *, eval_set: bool = False) -> tuple[Path, Path]:
    (tmp_path / "server").mkdir()
    data = colour_images_npz(tmp_path / "server" / "d.npz", n=100, size=8)
    run = tmp_path / "run"
    extra = []
    if eval_set:
        extra = ["--eval-data", str(colour_images_npz(tmp_path / "server" / "e.npz", n=40, size=8, seed=3))]
    assert main(["train", "--data", "npz", "--data-path", str(data), *TRAIN, *extra, "--out", str(run)]) == 0
    return run, data


def _meta(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def test_moved_npz_is_found_again_and_the_move_is_recorded(tmp_path, capsys):
    run, data = _npz_run(tmp_path)
    before = _meta(run)
    new = tmp_path / "laptop" / "copy.npz"
    new.parent.mkdir()
    shutil.copy(data, new)
    data.unlink()
    with pytest.raises(InputError):
        load_dataset(before["dataset"])  # the situation: the recorded path is gone
    capsys.readouterr()
    assert main(["relocate", str(run), "--data-path", str(new)]) == 0
    out = capsys.readouterr().out
    assert str(new.resolve()) in out and "data fingerprint" in out
    meta = _meta(run)
    assert meta["dataset"]["path"] == str(new.resolve())
    assert {k: v for k, v in meta["dataset"].items() if k != "path"} == {
        k: v for k, v in before["dataset"].items() if k != "path"}
    (move,) = meta["relocations"]
    assert move["from"] == str(data.resolve()) and move["to"] == str(new.resolve()) and move["time"]
    assert move["dataset"] == "dataset"
    # Everything else in run.json is as it was.
    assert {k: v for k, v in meta.items() if k not in ("dataset", "relocations")} == {
        k: v for k, v in before.items() if k != "dataset"}
    assert len(load_dataset(meta["dataset"])) == 100
    # A second move appends.
    newer = tmp_path / "again.npz"
    shutil.copy(new, newer)
    relocate_run(run, newer)
    assert [m["to"] for m in _meta(run)["relocations"]] == [str(new.resolve()), str(newer.resolve())]


def test_other_data_is_refused_and_run_json_is_untouched(tmp_path, capsys):
    run, data = _npz_run(tmp_path)
    before = (run / "run.json").read_bytes()
    other = colour_images_npz(tmp_path / "other.npz", n=100, size=8, seed=1)  # other images, same ids
    with pytest.raises(InputError, match="not the data this run trained on: the same 100 sample ids, but other images"):
        relocate_run(run, other)
    fewer = colour_images_npz(tmp_path / "fewer.npz", n=60, size=8)
    assert main(["relocate", str(run), "--data-path", str(fewer)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gwa-diag relocate: error: ") and len(err.strip().splitlines()) == 1
    assert "holds 60 samples, the run trained on 100" in err
    z = dict(np.load(data))
    np.savez(tmp_path / "ids.npz", images=z["images"], labels=z["labels"], sample_ids=np.arange(100) + 1000)
    with pytest.raises(InputError, match="sample ids differ"):
        relocate_run(run, tmp_path / "ids.npz")
    assert (run / "run.json").read_bytes() == before


def test_missing_path_and_no_run_are_clear_errors(tmp_path, capsys):
    run, _ = _npz_run(tmp_path)
    before = (run / "run.json").read_bytes()
    assert main(["relocate", str(run), "--data-path", str(tmp_path / "nowhere.npz")]) == 2
    err = capsys.readouterr().err
    assert "--data-path" in err and "nowhere.npz does not exist" in err and len(err.strip().splitlines()) == 1
    assert main(["relocate", str(tmp_path), "--data-path", str(run)]) == 2
    assert "not a gwa-diag run directory" in capsys.readouterr().err
    # No evaluation set recorded: --eval-data-path has nothing to move.
    with pytest.raises(InputError, match="no 'eval_dataset' spec"):
        relocate_run(run, tmp_path / "server" / "d.npz", eval_data_path=tmp_path / "server" / "d.npz")
    assert (run / "run.json").read_bytes() == before


def test_refused_while_a_training_holds_the_run(tmp_path):
    run, data = _npz_run(tmp_path)
    before = (run / "run.json").read_bytes()
    with exclusive_lock(run, "held"):
        with pytest.raises(InputError, match="being written by a gwa-diag train"):
            relocate_run(run, data)
    assert (run / "run.json").read_bytes() == before


def test_eval_set_moves_too(tmp_path):
    run, data = _npz_run(tmp_path, eval_set=True)
    new = tmp_path / "laptop"
    shutil.copytree(tmp_path / "server", new)
    shutil.rmtree(tmp_path / "server")
    result = relocate_run(run, new / "d.npz", eval_data_path=new / "e.npz")
    assert result["eval_dataset"]["to"] == str((new / "e.npz").resolve())
    meta = _meta(run)
    assert meta["eval_dataset"]["path"] == str((new / "e.npz").resolve())
    assert [m["dataset"] for m in meta["relocations"]] == ["dataset", "eval_dataset"]
    assert len(load_dataset(meta["eval_dataset"])) == 40


def test_data_path_is_found_in_nested_specs_never_in_label_steps(tmp_path):
    # A derived dataset (a source of its own around the npz's spec) whose label step has a
    # path of its own: only the npz's path is the data location.
    from gwa_diag.training.relocate import _data_slots

    npz = {"source": "npz", "path": str(tmp_path / "d.npz")}
    spec = {"source": "arrays", "of": npz, "steps": [{"op": "label_file", "path": str(tmp_path / "labels.csv")}]}
    slots = _data_slots(spec)
    assert [(s["source"], k) for s, k in slots] == [("npz", "path")]


def _folder(root: Path, n: int = 30) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = "cat" if i % 2 else "dog"
        colour = (200, 40, 40) if cls == "cat" else (40, 40, 200)
        img = np.clip(np.array(colour) + rng.normal(0, 20, size=(8, 8, 3)), 0, 255).astype(np.uint8)
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / cls / f"{i:03d}.png")
    return root


def _run_on_folder(tmp_path: Path) -> tuple[Path, Path]:
    """(an image folder under tmp_path/server, a 1-epoch run trained on it)."""
    data = _folder(tmp_path / "server" / "images")
    run = tmp_path / "run"
    assert main(["train", "--data", "folder", "--data-path", str(data), "--epochs", "1", "--batch-size", "10",
                 "--quiet", "--out", str(run)]) == 0
    return data, run


def test_image_folder_moves(tmp_path):
    data, run = _run_on_folder(tmp_path)
    new = tmp_path / "laptop" / "images"
    shutil.copytree(data, new)
    shutil.rmtree(data)
    result = relocate_run(run, new)
    assert result["dataset"]["evidence"] == "data fingerprint"
    meta = _meta(run)
    assert meta["dataset"]["root"] == str(new.resolve())
    assert len(load_dataset(meta["dataset"])) == 30
    # One image replaced by another of the same size: refused.
    before = (run / "run.json").read_bytes()
    changed = tmp_path / "changed"
    shutil.copytree(new, changed)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(changed / "dog" / "000.png")
    with pytest.raises(InputError, match="other images"):
        relocate_run(run, changed)
    assert (run / "run.json").read_bytes() == before


def test_image_folder_with_same_paths_and_sizes_is_accepted(tmp_path, monkeypatch):
    """Images decoded differently on another machine (another libjpeg) change the
    fingerprint; the same relative paths and file sizes as the folder at the old place are
    evidence enough."""
    import gwa_diag.training.relocate as relocate

    data, run = _run_on_folder(tmp_path)
    new = tmp_path / "mount" / "images"
    shutil.copytree(data, new)
    monkeypatch.setattr(relocate, "data_fingerprint", lambda ds: "decoded-differently")
    assert relocate_run(run, new)["dataset"]["evidence"] == "relative paths and file sizes"
    assert _meta(run)["dataset"]["root"] == str(new.resolve())
