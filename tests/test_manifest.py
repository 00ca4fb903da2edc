"""Manifest CSV data, evaluation sets from folders and manifests, and the `path` column a
dataset read from files leaves in labels.parquet and suspects.csv."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.cli import main
from gwa_diag.training.data import (
    ImageFolderDataset,
    ManifestDataset,
    load_dataset,
    load_eval_set,
    load_manifest,
    load_npz,
    with_noise,
)


def _save(path: Path, value: int, size: tuple[int, int] = (6, 5)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)


def _manifest(root: Path, rows: list[tuple[str, ...]], header: str = "path,label,split",
              name: str = "data.csv") -> Path:
    """Write the images the rows name (grey level = row number) and the CSV."""
    for i, row in enumerate(rows):
        if not Path(row[0]).is_absolute():
            _save(root / row[0], 10 * i)
    csv = root / name
    csv.write_text(header + "\n" + "".join(",".join(r) + "\n" for r in rows))
    return csv


ROWS = [
    ("img/dog1.png", "dog", "train"),
    ("img/cat1.png", "cat", "val"),
    ("img/cat2.png", "cat", "train"),
    ("img/bird1.png", "bird", "test"),
    ("img/dog2.png", "dog", "val"),
    ("img/bird2.png", "bird", "train"),
]


def _roundtrip(ds):
    return load_dataset(json.loads(json.dumps(ds.spec)))


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------


def test_manifest_with_class_names_every_split_shares_classes_and_ids(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, ROWS)
    train, held_out = load_manifest(csv)
    assert train.class_names == ["bird", "cat", "dog"]  # sorted names over every row
    np.testing.assert_array_equal(train.sample_ids, [0, 2, 5])  # row positions over all splits
    np.testing.assert_array_equal(train.labels, [2, 1, 0])
    assert train.relative_paths() == ["img/dog1.png", "img/cat2.png", "img/bird2.png"]
    assert held_out is not None and held_out.class_names == train.class_names
    np.testing.assert_array_equal(held_out.sample_ids, [1, 4])  # the val rows
    np.testing.assert_array_equal(held_out.labels, [1, 2])
    assert train.image(1)[0, 0].tolist() == [20, 20, 20]  # row 2's image
    test_rows = ManifestDataset(csv, split="test")
    np.testing.assert_array_equal(test_rows.sample_ids, [3])
    every = ManifestDataset(csv)
    np.testing.assert_array_equal(every.sample_ids, np.arange(6))
    # Ids and labels of a row are the same whichever split is read.
    assert dict(zip(every.sample_ids, every.labels))[5] == dict(zip(train.sample_ids, train.labels))[5]


def test_manifest_without_split_trains_on_every_row_and_has_no_eval_set(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, [r[:2] for r in ROWS], header="path,label")
    train, held_out = load_manifest(csv)
    assert held_out is None and len(train) == 6
    with pytest.raises(InputError, match="no 'split' column"):
        ManifestDataset(csv, split="train")


def test_manifest_test_rows_evaluate_without_val_rows(tmp_path: Path) -> None:
    rows = [(p, lab, "test" if s == "val" else s) for p, lab, s in ROWS]
    _, held_out = load_manifest(_manifest(tmp_path, rows))
    assert held_out is not None and held_out.split == "test" and len(held_out) == 3


def test_manifest_index_labels_and_sample_id_column(tmp_path: Path) -> None:
    rows = [("a.png", "2", "11"), ("sub/b.png", "0", "5"), ("c.png", "1", "7")]
    csv = _manifest(tmp_path, rows, header="path,label,sample_id")
    ds = ManifestDataset(csv)
    assert ds.class_names == ["0", "1", "2"]
    np.testing.assert_array_equal(ds.labels, [2, 0, 1])
    np.testing.assert_array_equal(ds.sample_ids, [11, 5, 7])
    assert ds.relative_paths() == ["a.png", "sub/b.png", "c.png"]
    np.testing.assert_array_equal(ds.positions([5]), [1])


def test_manifest_paths_are_relative_to_its_folder_and_may_leave_it_when_the_file_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _save(tmp_path / "shared" / "x.png", 1)
    _save(tmp_path / "shared" / "y.png", 2)
    _save(tmp_path / "abs.png", 3)
    lists = tmp_path / "lists"
    lists.mkdir()
    csv = lists / "m.csv"
    csv.write_text(f"path,label\n../shared/x.png,a\n../shared/y.png,b\n{tmp_path / 'abs.png'},b\n")
    monkeypatch.chdir(tmp_path / "shared")  # the working directory does not matter
    ds = ManifestDataset(csv)
    assert ds.relative_paths() == ["../shared/x.png", "../shared/y.png", str(tmp_path / "abs.png")]
    assert ds.paths[0] == (tmp_path / "shared" / "x.png").resolve()


def test_manifest_image_size_and_spec_round_trip(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, ROWS)
    _save(tmp_path / "img" / "dog1.png", 0, size=(9, 9))
    with pytest.raises(InputError, match="--image-size"):
        load_manifest(csv)
    train, held_out = load_manifest(csv, image_size=4)
    assert train[0][0].shape == (3, 4, 4)
    for ds in (train, held_out):
        back = _roundtrip(ds)
        assert type(back) is ManifestDataset and back.spec == ds.spec
        np.testing.assert_array_equal(back.sample_ids, ds.sample_ids)
        np.testing.assert_array_equal(back.labels, ds.labels)
        assert back.relative_paths() == ds.relative_paths() and back.class_names == ds.class_names
        np.testing.assert_array_equal(back.image(0), ds.image(0))
    # Label steps keep the files: a noisy copy still knows each sample's path.
    noisy = with_noise(train, rate=0.5, seed=0)
    assert noisy.relative_paths() == train.relative_paths()
    assert _roundtrip(noisy).relative_paths() == train.relative_paths()


def test_datasets_without_files_have_no_paths(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=np.zeros((4, 4, 4, 3), np.uint8), labels=np.array([0, 1, 0, 1]))
    assert load_npz(tmp_path / "d.npz").relative_paths() is None


# --------------------------------------------------------------------------------------
# refusals: each names the problem and the fix
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, error, named",
    [
        ("file,label\nimg/a.png,x\n", InputError, "lacks column(s) path"),
        ("path,label\n", InputError, "no rows"),
        ("path,label\nimg/a.png,\nimg/b.png,y\n", InputError, "empty 'label' cell(s) (line(s) 2)"),
        ("path,label\nimg/a.png,x\nimg/missing1.png,y\nimg/missing2.png,y\n", MissingFileError,
         "2 of the 3 files"),
        ("path,label\nimg/a.png,x\nimg/../img/a.png,y\n", InputError, "lists 1 file(s) twice"),
        ("path,label,sample_id\nimg/a.png,x,3\nimg/b.png,y,3\n", InputError, "'sample_id' repeats 1 id(s) (e.g. 3)"),
        ("path,label,sample_id\nimg/a.png,x,1.5\nimg/b.png,y,2\n", InputError, "'1.5'"),
        ("path,label\nimg/a.png,x\nimg/b.png,x\n", InputError, "has class 'x'"),
        ("path,label\nimg/a.png,0\nimg/b.png,-1\n", InputError, "negative values"),
        ("path,label,split\nimg/a.png,x,train\nimg/b.png,y,validation\n", InputError,
         "'validation'; valid: 'train', 'val', 'test'"),
    ],
)
def test_bad_manifests_are_refused_naming_the_problem(tmp_path: Path, text: str, error: type, named: str) -> None:
    _save(tmp_path / "img" / "a.png", 1)
    _save(tmp_path / "img" / "b.png", 2)
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(error) as exc:
        ManifestDataset(tmp_path / "m.csv")
    assert named in str(exc.value)


def test_missing_files_are_counted_and_the_first_few_named(tmp_path: Path) -> None:
    _save(tmp_path / "a.png", 1)
    rows = "".join(f"gone{i}.png,{i % 2}\n" for i in range(8))
    (tmp_path / "m.csv").write_text("path,label\na.png,0\n" + rows)
    with pytest.raises(MissingFileError) as exc:
        ManifestDataset(tmp_path / "m.csv")
    message = str(exc.value)
    assert "8 of the 9 files" in message and "gone0.png" in message and "gone4.png" in message
    assert "gone5.png" not in message


def test_manifest_option_errors(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, ROWS)
    with pytest.raises(MissingFileError, match="manifest not found"):
        ManifestDataset(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="unknown manifest split 'valid'"):
        ManifestDataset(csv, split="valid")
    only_val = _manifest(tmp_path, [r for r in ROWS if r[2] != "train"], name="no_train.csv")
    with pytest.raises(InputError, match="no 'train' rows"):
        load_manifest(only_val)


def test_a_bad_manifest_on_the_command_line_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "m.csv").write_text("path,label,split\nx.png,a,train\ny.png,b,dev\n")
    assert main(["train", "--data", "manifest", "--data-path", str(tmp_path / "m.csv"),
                 "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gwa-diag train: error:") and "'dev'" in err and "'val'" in err
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------
# evaluation sets
# --------------------------------------------------------------------------------------


def test_eval_folder_maps_its_classes_onto_the_training_classes(tmp_path: Path) -> None:
    # The evaluation folder lacks "bird": by its own sorted names cat would be 0, not 1.
    for name in ("cat", "dog"):
        _save(tmp_path / "eval" / name / "1.png", 5)
    ev = load_eval_set(tmp_path / "eval", class_names=["bird", "cat", "dog"])
    assert isinstance(ev, ImageFolderDataset) and ev.class_names == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(ev.labels, [1, 2])
    assert _roundtrip(ev).labels.tolist() == [1, 2]
    _save(tmp_path / "eval" / "horse" / "1.png", 5)
    with pytest.raises(InputError, match="'horse' that the training set lacks"):
        load_eval_set(tmp_path / "eval", class_names=["bird", "cat", "dog"])


def test_eval_manifest_reads_its_val_rows_mapped_by_name(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, ROWS)
    ev = load_eval_set(csv, class_names=["ant", "bird", "cat", "dog"])
    assert isinstance(ev, ManifestDataset) and ev.split == "val"
    np.testing.assert_array_equal(ev.labels, [2, 3])
    no_split = _manifest(tmp_path, [("img/cat1.png", "cat"), ("img/dog1.png", "dog")], header="path,label",
                         name="plain.csv")
    assert len(load_eval_set(no_split, class_names=["cat", "dog"])) == 2  # every row
    with pytest.raises(InputError, match="'bird'"):
        load_eval_set(csv, class_names=["cat", "dog"])
    only_train = _manifest(tmp_path, [r for r in ROWS if r[2] == "train"], name="train_only.csv")
    with pytest.raises(InputError, match="no 'val' or 'test' rows"):
        load_eval_set(only_train, class_names=["bird", "cat", "dog"])
    (tmp_path / "x.txt").write_text("?")
    with pytest.raises(InputError, match="an .npz file, an image folder .* or a manifest .csv"):
        load_eval_set(tmp_path / "x.txt", class_names=["a"])


def test_eval_data_on_the_command_line_replaces_the_manifest_val_rows(tmp_path: Path) -> None:
    csv = _manifest(tmp_path, ROWS)
    for name in ("cat", "dog"):
        _save(tmp_path / "other" / name / "1.png", 5)
    from gwa_diag.cli.train import load_train_data
    from gwa_diag.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "manifest", "--data-path", str(csv)])
    train, ev = load_train_data(args)
    assert ev is not None and ev.split == "val" and len(train) == 3
    args = build_parser().parse_args(["train", "--data", "manifest", "--data-path", str(csv),
                                      "--eval-data", str(tmp_path / "other"), "--image-size", "4"])
    train, ev = load_train_data(args)
    assert isinstance(ev, ImageFolderDataset) and ev.labels.tolist() == [1, 2] and ev.image(0).shape == (4, 4, 3)


# --------------------------------------------------------------------------------------
# the path column: labels.parquet, the summary, suspects.csv
# --------------------------------------------------------------------------------------


def _folder(root: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        for i in range(n):
            f = root / c / f"{i:02d}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(f)
    return root


def _train_and_rank(tmp_path: Path, data: list[str]) -> Path:
    out = tmp_path / "run"
    assert main(["train", *data, "--epochs", "2", "--batch-size", "8", "--quiet", "--out", str(out)]) == 0
    assert main(["rank", str(out), "--k", "5"]) == 0
    return out


def test_a_folder_run_names_each_file_in_labels_and_suspects(tmp_path: Path) -> None:
    from gwa_diag.analysis.rank import read_suspects
    from gwa_diag.store import open_run

    folder = _folder(tmp_path / "images")
    out = _train_and_rank(tmp_path, ["--data", "folder", "--data-path", str(folder)])
    labels = open_run(out).labels()
    assert list(labels.columns) == ["sample_id", "label", "path"]
    expected = ImageFolderDataset(folder).relative_paths()
    assert labels.sort_values("sample_id")["path"].tolist() == expected
    assert expected[0] == "cat/00.png"
    header = (out / "analysis" / "suspects.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["sample_id", "path"]
    suspects = read_suspects(out / "analysis" / "suspects.csv")
    assert len(suspects) == 5 and str(suspects["path"].dtype) == "string"
    for sid, path in zip(suspects["sample_id"], suspects["path"]):
        assert path == expected[sid]  # a folder's ids are positions in its sorted file list


def test_an_npz_run_has_no_path_column(tmp_path: Path) -> None:
    from gwa_diag.store import open_run

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8),
             labels=np.arange(24) % 2)
    out = _train_and_rank(tmp_path, ["--data", "npz", "--data-path", str(tmp_path / "d.npz")])
    assert list(open_run(out).labels().columns) == ["sample_id", "label"]
    header = (out / "analysis" / "suspects.csv").read_text().splitlines()[0]
    assert header.startswith("sample_id,given_label,") and "path" not in header.split(",")
    frame = pd.read_csv(out / "analysis" / "suspects.csv")
    assert "path" not in frame.columns


def test_write_labels_refuses_paths_of_another_length(tmp_path: Path) -> None:
    from gwa_diag.store import RunWriter

    writer = RunWriter(tmp_path / "r")
    with pytest.raises(InputError, match="one path per sample"):
        writer.write_labels([0, 1], [0, 1], paths=["a.png"])
    assert not (tmp_path / "r" / "labels.parquet").exists()
