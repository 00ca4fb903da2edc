"""Hugging Face ``datasets`` data (``gwa-diag train --data hf``): columns found by feature type,
class names, sample ids, splits, streaming refused, a training run that finds injected noise,
and specs that rebuild the dataset (and refuse a changed one). Everything is built offline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gwa_diag.checks import InputError
from gwa_diag.cli import main
from gwa_diag.training.data import HFImageDataset, load_dataset, load_eval_set

datasets = pytest.importorskip("datasets")

NAMES = ["red", "green", "blue", "grey"]


def _colour_images(n: int, *, seed: int = 0, size: int = 12, classes: int = 4) -> tuple[list[Image.Image], np.ndarray]:
    """Coloured templates plus pixel noise (as tests/analysis_fixtures.py's colour_images_npz):
    the tiny model fits them in a few epochs, so injected label noise stands out."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(classes, 1, 1, 3))
    labels = rng.integers(0, classes, size=n)
    pixels = np.clip(templates[labels] + rng.normal(0, 40, size=(n, size, size, 3)), 0, 255).astype(np.uint8)
    return [Image.fromarray(p) for p in pixels], labels


def _dataset(n: int = 40, *, seed: int = 0, ids: bool = False, extra: dict | None = None):
    images, labels = _colour_images(n, seed=seed)
    columns = {"picture": images, "target": labels.tolist()}
    features = {"picture": datasets.Image(), "target": datasets.ClassLabel(names=NAMES)}
    if ids:
        columns["uid"] = [1000 + 7 * i for i in range(n)]
        features["uid"] = datasets.Value("int64")
    for name, (values, feature) in (extra or {}).items():
        columns[name], features[name] = values, feature
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _saved(path: Path, **kw) -> Path:
    _dataset(**kw).save_to_disk(str(path))
    return path


def test_columns_are_found_by_type_and_class_names_come_through(tmp_path: Path) -> None:
    path = _saved(tmp_path / "ds", n=30)
    ds = HFImageDataset(path)
    assert (ds.image_column, ds.label_column) == ("picture", "target")
    assert ds.class_names == NAMES and ds.num_classes == 4 and len(ds) == 30
    expected = _dataset(n=30)
    np.testing.assert_array_equal(ds.labels, np.asarray(expected["target"]))
    np.testing.assert_array_equal(ds.sample_ids, np.arange(30))  # the row index
    img, label, sid = ds[3]
    assert str(img.dtype) == "torch.uint8" and tuple(img.shape) == (3, 12, 12)
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), np.asarray(expected[3]["picture"]))
    assert (label, sid) == (int(expected[3]["target"]), 3)
    assert ds.spec["source"] == "hf" and ds.spec["fingerprint"] == ds.fingerprint


def test_ids_come_from_the_id_column_and_images_resize(tmp_path: Path) -> None:
    path = _saved(tmp_path / "ds", n=10, ids=True)
    ds = HFImageDataset(path, id_column="uid", image_size=5)
    np.testing.assert_array_equal(ds.sample_ids, 1000 + 7 * np.arange(10))
    assert tuple(ds[0][0].shape) == (3, 5, 5)
    np.testing.assert_array_equal(ds.positions([1007]), [1])
    with pytest.raises(InputError, match="no column 'nope'"):
        HFImageDataset(path, id_column="nope")


def test_two_candidate_columns_must_be_named(tmp_path: Path) -> None:
    images, _ = _colour_images(12, seed=3)
    path = _saved(tmp_path / "ds", n=12, extra={"mask": (images, datasets.Image())})
    with pytest.raises(InputError, match=r"2 Image columns \(picture, mask\).*--image-column"):
        HFImageDataset(path)
    assert HFImageDataset(path, image_column="mask").image_column == "mask"


def test_a_dataset_dict_needs_a_split_and_names_its_splits(tmp_path: Path) -> None:
    dd = datasets.DatasetDict({"train": _dataset(n=20), "validation": _dataset(n=8, seed=1)})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"'train', 'validation'.*--split"):
        HFImageDataset(tmp_path / "dd")
    with pytest.raises(InputError, match="no split 'test'"):
        HFImageDataset(tmp_path / "dd", split="test")
    train = HFImageDataset(tmp_path / "dd", split="train")
    assert len(train) == 20 and train.spec["split"] == "train"
    # --eval-data on the saved DatasetDict reads its validation split, in the training classes
    ev = load_eval_set(tmp_path / "dd", class_names=train.class_names)
    assert len(ev) == 8 and ev.class_names == NAMES
    # and on the command line, without --split, the error names the splits
    assert main(["train", "--data", "hf", "--data-path", str(tmp_path / "dd"), "--out", str(tmp_path / "r")]) == 2


def test_a_streaming_dataset_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="streaming.*without streaming=True"):
        HFImageDataset(_dataset(n=5).to_iterable_dataset())


def test_hf_options_need_data_hf(tmp_path: Path, capsys) -> None:
    assert main(["train", "--split", "train", "--out", str(tmp_path / "r")]) == 2
    assert "--split is read with --data hf only" in capsys.readouterr().err


def test_without_datasets_data_hf_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(InputError, match=r'pip install "gwa-diag\[hf\]"'):
        HFImageDataset(tmp_path)


def test_train_on_hf_data_finds_the_injected_noise_and_the_spec_rebuilds_it(tmp_path: Path) -> None:
    path = _saved(tmp_path / "ds", n=400)
    out = tmp_path / "run"
    assert main(["train", "--data", "hf", "--data-path", str(path), "--noise-rate", "0.25", "--epochs", "8",
                 "--no-augment", "--batch-size", "32", "--quiet", "--out", str(out)]) == 0
    from gwa_diag.analysis.metrics import auroc
    from gwa_diag.analysis.pipeline import analyze

    labels = pd.read_parquet(out / "labels.parquet").set_index("sample_id")
    noisy = labels["label"] != labels["clean_label"]
    assert noisy.sum() == 100
    a = analyze(out)
    assert auroc(a.summary.loc[noisy.index, "aum"], noisy) > 0.8
    # The app rebuilds the dataset from run.json's spec: the same images by sample id.
    spec = json.loads((out / "run.json").read_text())
    spec = spec["dataset"]
    again = load_dataset(spec)
    direct = HFImageDataset(path)
    np.testing.assert_array_equal(again.image(7), direct.image(7))
    np.testing.assert_array_equal(again.labels, labels.loc[again.sample_ids, "label"].to_numpy())
    # A different dataset saved at the same path is refused, also when only images are wanted.
    import shutil

    shutil.rmtree(path)
    _saved(path, n=400, seed=5)
    with pytest.raises(InputError, match="not the dataset that was recorded"):
        load_dataset(spec)
    with pytest.raises(InputError, match="not the dataset that was recorded"):
        load_dataset(spec, with_labels=False)
