"""Leaving samples out of training: the exclusion step, its spec, its refusals, and --resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gwa_diag.checks import InputError, MissingFileError
from gwa_diag.cli import main
from gwa_diag.training.data import load_dataset, load_exclusion_file, load_npz, with_noise, without_samples
from gwa_diag.training.resume import data_fingerprint


def _npz(path: Path, n: int = 60, c: int = 3) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % c
    images = rng.integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=labels, sample_ids=np.arange(n) * 2 + 5)
    return path


def _csv(path: Path, ids: list[int], extra: bool = True) -> Path:
    rows = [f"{i},cls/{i}.png,auto:drop: flagged" if extra else str(i) for i in ids]
    header = "sample_id,path,reason" if extra else "sample_id"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_without_samples_leaves_them_out_and_the_spec_rebuilds_it(tmp_path):
    ds = with_noise(load_npz(_npz(tmp_path / "d.npz")), rate=0.2, seed=3)
    excl = _csv(tmp_path / "x.excluded.csv", [5, 9, 63])
    sub = without_samples(ds, excl)
    keep = ~np.isin(ds.sample_ids, [5, 9, 63])
    assert sub.sample_ids.tolist() == ds.sample_ids[keep].tolist()
    assert (sub.labels == ds.labels[keep]).all() and (sub.clean_labels == ds.clean_labels[keep]).all()
    # The images go with their ids, on the fast in-memory path too.
    assert (sub.images_nchw == ds.images_nchw[keep]).all()
    assert (sub.image(0) == ds.image(int(np.flatnonzero(keep)[0]))).all()
    step = sub.spec["steps"][-1]
    assert step["op"] == "exclude" and step["count"] == 3 and step["path"] == str(excl.resolve())
    again = load_dataset(json.loads(json.dumps(sub.spec)))
    assert again.sample_ids.tolist() == sub.sample_ids.tolist() and (again.labels == sub.labels).all()
    assert data_fingerprint(again) == data_fingerprint(sub)
    # Images only (the app's view of a run): every id of the source finds its image.
    assert len(load_dataset(sub.spec, with_labels=False)) == len(ds)


def test_a_changed_exclusion_file_is_refused_when_rebuilding(tmp_path):
    ds = load_npz(_npz(tmp_path / "d.npz"))
    excl = _csv(tmp_path / "x.csv", [5, 9])
    spec = without_samples(ds, excl).spec
    _csv(excl, [5, 11])
    with pytest.raises(InputError) as err:
        load_dataset(spec)
    assert str(excl.resolve()) in str(err.value) and "changed" in str(err.value)


def test_exclusion_files_csv_with_header_only_and_npy(tmp_path):
    assert load_exclusion_file(_csv(tmp_path / "a.csv", [])).tolist() == []
    assert load_exclusion_file(_csv(tmp_path / "b.csv", [9, 5, 9], extra=False)).tolist() == [5, 9]
    np.save(tmp_path / "c.npy", np.array([7, 5], np.int64))
    assert load_exclusion_file(tmp_path / "c.npy").tolist() == [5, 7]
    ds = load_npz(_npz(tmp_path / "d.npz"))
    assert len(without_samples(ds, tmp_path / "a.csv")) == len(ds)


@pytest.mark.parametrize("ids, named", [
    ([5, 1000, 1002, 4], "3 sample id(s)"),        # 4, 1000, 1002 are not ids of the data
    (list(range(5, 125, 2)), "all 60 samples"),
    ([i for i in range(5, 125, 2) if (i - 5) // 2 % 3], "at least two classes"),  # leaves class 0 only
])
def test_exclusions_that_cannot_be_meant_are_refused(tmp_path, ids, named):
    ds = load_npz(_npz(tmp_path / "d.npz"))
    with pytest.raises(InputError) as err:
        without_samples(ds, _csv(tmp_path / "x.csv", ids))
    assert named in str(err.value)
    if named.startswith("3 "):
        assert "1000" in str(err.value) and "4" in str(err.value)


def test_bad_exclusion_files(tmp_path):
    ds = load_npz(_npz(tmp_path / "d.npz"))
    with pytest.raises(MissingFileError):
        without_samples(ds, tmp_path / "missing.csv")
    (tmp_path / "noid.csv").write_text("id\n5\n")
    with pytest.raises(InputError, match="sample_id"):
        without_samples(ds, tmp_path / "noid.csv")
    (tmp_path / "ids.txt").write_text("5\n")
    with pytest.raises(InputError, match="'.txt'"):
        without_samples(ds, tmp_path / "ids.txt")


def test_train_exclude_records_it_and_resume_with_another_exclusion_is_refused(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz", n=120)
    first, other = _csv(tmp_path / "a.csv", [5, 7, 9]), _csv(tmp_path / "b.csv", [11, 13, 15])
    run = tmp_path / "run"
    base = ["train", "--data", "npz", "--data-path", str(data), "--epochs", "1", "--batch-size", "40",
            "--no-augment", "--quiet", "--out", str(run)]
    assert main([*base, "--exclude", str(first)]) == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["exclusion"]["count"] == 3 and meta["exclusion"]["path"] == str(first.resolve())
    assert meta["dataset"]["steps"][-1]["op"] == "exclude" and "label_provenance" not in meta
    capsys.readouterr()
    before = (run / "run.json").read_text()
    # Same number of samples, other ids: another dataset, so the rest of the run would be recorded
    # against another problem.
    assert main([*base, "--exclude", str(other), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gwa-diag train: error: cannot resume") and err.count("\n") == 1
    assert main([*base, "--resume"]) == 2  # no exclusion at all: more samples
    assert (run / "run.json").read_text() == before
    assert main([*base, "--exclude", str(first), "--resume"]) == 0


def test_train_exclude_errors_are_one_line(tmp_path, capsys):
    data = _npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    rc = main(["train", "--data", "npz", "--data-path", str(data), "--epochs", "1", "--quiet", "--out", str(out),
               "--exclude", str(_csv(tmp_path / "x.csv", [5, 2000]))])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("gwa-diag train: error: ") and "2000" in err and err.count("\n") == 1
    assert not out.exists()


def test_subset_of_an_image_folder_keeps_each_file_with_its_id(tmp_path):
    from PIL import Image

    from gwa_diag.training.data import ImageFolderDataset

    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 100 if cls == "a" else 200, 0)).save(tmp_path / "imgs" / cls / f"{i}.png")
    ds = ImageFolderDataset(tmp_path / "imgs")
    sub = without_samples(ds, _csv(tmp_path / "x.csv", [1, 4]))
    paths = dict(zip(ds.sample_ids.tolist(), ds.relative_paths()))
    assert sub.relative_paths() == [paths[i] for i in sub.sample_ids.tolist()]
    assert (sub.image(1) == ds.image(2)).all()  # position 1 of the subset is id 2
