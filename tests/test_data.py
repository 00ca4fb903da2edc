"""Tests of gwa_diag.training.data: every source, spec round trips, label sets, noise, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gwa_diag.training import data as gd
from gwa_diag.training.data import (
    CIFAR10N_LABEL_SETS,
    ArrayDataset,
    ImageFolderDataset,
    SampleDataset,
    cifar10,
    cifar10n_labels,
    inject_noise,
    load_cifar10n,
    load_dataset,
    load_label_file,
    load_npz,
    sample_data,
    with_cifar10n,
    with_label_file,
    with_label_set,
    with_noise,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_CIFAR10N = SHARED_DATA / "cifar10n" / "CIFAR-10_human.pt"
REAL_TRAIN_NPZ = SHARED_DATA / "cifar10" / "train_first20000.npz"


def _rng_images(n: int, h: int = 8, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def _roundtrip(ds: SampleDataset) -> SampleDataset:
    """Rebuild through JSON, as a run directory would."""
    return load_dataset(json.loads(json.dumps(ds.spec)))


def _assert_same(a: SampleDataset, b: SampleDataset) -> None:
    assert type(a) is type(b)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.sample_ids, b.sample_ids)
    if a.clean_labels is None:
        assert b.clean_labels is None
    else:
        np.testing.assert_array_equal(a.clean_labels, b.clean_labels)
    assert a.class_names == b.class_names
    assert a.num_classes == b.num_classes
    for i in (0, len(a) - 1):
        np.testing.assert_array_equal(a.image(i), b.image(i))
    assert a.spec == b.spec


@pytest.fixture
def fake_cifar10n(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A CIFAR-10-N-shaped label file of 100 ids, saved the way the official one was."""
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 10, size=100).astype(np.int64)
    arrays = {"clean_label": clean}
    for key in CIFAR10N_LABEL_SETS.values():
        if key != "clean_label":
            arrays[key] = np.where(rng.random(100) < 0.3, (clean + 1) % 10, clean).astype(np.int64)
    path = tmp_path / "CIFAR-10_human.pt"
    torch.save(arrays, path)
    return path, arrays


# --------------------------------------------------------------------------------------
# arrays and npz
# --------------------------------------------------------------------------------------


def test_array_dataset_items_and_attributes() -> None:
    imgs = _rng_images(6)
    ds = ArrayDataset(imgs, [0, 1, 2, 0, 1, 2], sample_ids=[10, 11, 12, 13, 14, 15],
                      class_names=["a", "b", "c"])
    assert len(ds) == 6 and ds.num_classes == 3 and ds.class_names == ["a", "b", "c"]
    assert ds.labels.dtype == np.int64 and ds.sample_ids.dtype == np.int64
    assert ds.clean_labels is None
    assert ds.images_nchw.shape == (6, 3, 8, 8) and ds.images_nchw.dtype == torch.uint8
    assert ds.images_nchw.is_contiguous()
    img, label, sid = ds[4]
    assert img.dtype == torch.uint8 and img.shape == (3, 8, 8)
    assert (label, sid) == (1, 14) and isinstance(label, int) and isinstance(sid, int)
    np.testing.assert_array_equal(ds.image(4), imgs[4])
    np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), imgs[4])
    np.testing.assert_array_equal(ds.positions([15, 10, 12]), [5, 0, 2])
    with pytest.raises(ValueError, match="not in this dataset"):
        ds.positions([10, 99])
    with pytest.raises(IndexError):
        ds[6]


def test_array_dataset_layouts_agree() -> None:
    nhwc = _rng_images(4)
    a = ArrayDataset(nhwc, [0, 1, 0, 1])
    b = ArrayDataset(np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2)), [0, 1, 0, 1])
    c = ArrayDataset(torch.from_numpy(nhwc), [0, 1, 0, 1])
    assert torch.equal(a.images_nchw, b.images_nchw) and torch.equal(a.images_nchw, c.images_nchw)
    gray = nhwc[..., 0]
    g = ArrayDataset(gray, [0, 1, 0, 1])
    assert g.images_nchw.shape == (4, 3, 8, 8)
    assert torch.equal(g.images_nchw[:, 0], g.images_nchw[:, 2])
    g1 = ArrayDataset(gray[:, None], [0, 1, 0, 1])  # NCHW with one channel
    assert torch.equal(g.images_nchw, g1.images_nchw)


def test_array_dataset_bad_inputs() -> None:
    imgs = _rng_images(3)
    with pytest.raises(TypeError, match="uint8"):
        ArrayDataset(imgs.astype(np.float32) / 255, [0, 1, 0])
    with pytest.raises(ValueError, match="3 samples but labels has 2"):
        ArrayDataset(imgs, [0, 1])
    with pytest.raises(ValueError, match="unique"):
        ArrayDataset(imgs, [0, 1, 0], sample_ids=[1, 1, 2])
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        ArrayDataset(imgs, [0, 1, 2], num_classes=2)
    with pytest.raises(ValueError, match="outside"):
        ArrayDataset(imgs, [0, -1, 1])
    with pytest.raises(TypeError, match="integers"):
        ArrayDataset(imgs, [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="channel axis"):
        ArrayDataset(np.zeros((3, 8, 8, 5), np.uint8), [0, 1, 0])
    with pytest.raises(ValueError, match="class_names"):
        ArrayDataset(imgs, [0, 1, 0], class_names=["a", "b"], num_classes=3)


def test_load_npz_and_roundtrip(tmp_path: Path) -> None:
    imgs = _rng_images(5)
    path = tmp_path / "d.npz"
    np.savez(path, images=imgs, labels=np.array([0, 1, 2, 1, 0], np.uint8),
             sample_ids=np.array([7, 3, 9, 1, 5]), clean_labels=np.array([0, 1, 2, 2, 0]))
    ds = load_npz(path, class_names=["x", "y", "z"])
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.sample_ids, [7, 3, 9, 1, 5])
    np.testing.assert_array_equal(ds.clean_labels, [0, 1, 2, 2, 0])
    assert ds.spec["source"] == "npz"
    _assert_same(ds, _roundtrip(ds))

    # A label column other than "labels", and no optional keys.
    np.savez(tmp_path / "e.npz", images=imgs, noisy=np.array([1, 1, 0, 0, 1]))
    e = load_npz(tmp_path / "e.npz", label_key="noisy")
    np.testing.assert_array_equal(e.sample_ids, np.arange(5))
    assert e.clean_labels is None
    _assert_same(e, _roundtrip(e))

    with pytest.raises(ValueError, match=r"no array 'labels'.*label_key="):
        load_npz(tmp_path / "e.npz")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "missing.npz")


def test_in_memory_arrays_spec_cannot_be_reloaded() -> None:
    ds = ArrayDataset(_rng_images(2), [0, 1])
    with pytest.raises(ValueError, match="load_npz"):
        load_dataset(ds.spec)


def test_dataloader_collates_batches() -> None:
    ds = ArrayDataset(_rng_images(10), np.arange(10) % 3, sample_ids=np.arange(100, 110))
    imgs, labels, ids = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert imgs.shape == (4, 3, 8, 8) and imgs.dtype == torch.uint8
    assert labels.tolist() == [0, 1, 2, 0] and ids.tolist() == [100, 101, 102, 103]


# --------------------------------------------------------------------------------------
# CIFAR-10 via torchvision
# --------------------------------------------------------------------------------------


def test_cifar10_missing_files_raise_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        cifar10(tmp_path, download=False)


def test_cifar10_wraps_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    imgs = _rng_images(12, 32, 32)
    calls = []

    class FakeCIFAR10:
        classes = list(gd.CIFAR10_CLASSES)

        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((root, train, download))
            self.data = imgs
            self.targets = [i % 10 for i in range(12)]

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    ds = cifar10(tmp_path, train=False)
    assert calls[-1] == (str(tmp_path), False, False)
    np.testing.assert_array_equal(ds.sample_ids, np.arange(12))
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    np.testing.assert_array_equal(ds.image(3), imgs[3])
    assert ds.spec == {"source": "cifar10", "root": str(tmp_path.resolve()), "train": False,
                       "steps": []}
    noisy = with_noise(ds, rate=0.5, seed=2)
    _assert_same(noisy, _roundtrip(noisy))


# --------------------------------------------------------------------------------------
# CIFAR-10-N
# --------------------------------------------------------------------------------------


def test_cifar10n_loader_on_numpy2_pickle(fake_cifar10n: tuple[Path, dict]) -> None:
    path, arrays = fake_cifar10n
    loaded = load_cifar10n(path)
    assert set(loaded) == set(CIFAR10N_LABEL_SETS.values())
    for key, value in arrays.items():
        assert loaded[key].dtype == np.int64
        np.testing.assert_array_equal(loaded[key], value)
    labels, clean = cifar10n_labels(path, "worst")
    np.testing.assert_array_equal(labels, arrays["worse_label"])
    np.testing.assert_array_equal(clean, arrays["clean_label"])


def test_cifar10n_unknown_label_set(fake_cifar10n: tuple[Path, dict]) -> None:
    path, _ = fake_cifar10n
    with pytest.raises(ValueError, match=r"unknown CIFAR-10-N label set 'worse'.*'worst'"):
        cifar10n_labels(path, "worse")
    with pytest.raises(ValueError, match="aggre"):
        sample_data(label_set="noisy")


def _run_payload(marker: str) -> str:
    """Writes a marker file: proof that unpickling ran code."""
    Path(marker).write_text("code ran")
    return "payload"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_run_payload, (str(self.marker),))


def test_cifar10n_loader_never_runs_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    torch.save({"clean_label": np.arange(3, dtype=np.int64), "x": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=r"refused, never executed.*_run_payload"):
        load_cifar10n(path)
    assert not marker.exists()
    # Control: an unrestricted load of the same file does run the payload.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_cifar10n_loader_refuses_types_outside_allow_list(tmp_path: Path) -> None:
    path = tmp_path / "floats.pt"
    torch.save({"clean_label": np.zeros(3, dtype=np.float64)}, path)
    with pytest.raises(ValueError, match="read safely"):
        load_cifar10n(path)
    with pytest.raises(FileNotFoundError, match="cifar-10-100n"):
        load_cifar10n(tmp_path / "nope.pt")


def test_with_label_set_joins_by_sample_id(fake_cifar10n: tuple[Path, dict]) -> None:
    path, arrays = fake_cifar10n
    ids = np.array([5, 99, 0, 42])
    base = ArrayDataset(_rng_images(4), arrays["clean_label"][ids], sample_ids=ids,
                        class_names=list(gd.CIFAR10_CLASSES))
    ds = with_cifar10n(base, path, label_set="aggre")
    np.testing.assert_array_equal(ds.labels, arrays["aggre_label"][ids])
    np.testing.assert_array_equal(ds.clean_labels, arrays["clean_label"][ids])
    assert ds.images_nchw is base.images_nchw  # images shared, not copied
    assert base.clean_labels is None  # the original is untouched
    assert ds.spec["steps"] == [{"op": "label_set", "name": "aggre", "path": str(path.resolve())}]

    npz = path.parent / "sub.npz"
    # Labels alone would give 9 classes here; the class_names key fixes the class count.
    np.savez(npz, images=_rng_images(4), labels=arrays["clean_label"][ids], sample_ids=ids,
             class_names=np.array(gd.CIFAR10_CLASSES))
    assert load_npz(npz).class_names == list(gd.CIFAR10_CLASSES)
    full = with_noise(with_cifar10n(load_npz(npz), path, label_set="random2"), rate=0.5, seed=4)
    again = _roundtrip(full)
    _assert_same(full, again)
    # Noise on top of a known label set keeps the known clean labels.
    np.testing.assert_array_equal(again.clean_labels, arrays["clean_label"][ids])

    arrays_only = with_label_set(base, arrays["worse_label"], name="mine")
    assert arrays_only.spec["steps"] == [{"op": "labels", "name": "mine"}]
    spec = {"source": "npz", "path": str(npz), "steps": arrays_only.spec["steps"]}
    with pytest.raises(ValueError, match="in-memory arrays.*with_labels=False"):
        load_dataset(spec)
    # The images can still be found again by sample id.
    images_only = load_dataset(spec, with_labels=False)
    np.testing.assert_array_equal(images_only.sample_ids, ids)
    assert images_only.spec["steps"] == []


def test_with_label_set_bad_inputs() -> None:
    base = ArrayDataset(_rng_images(4), [0, 1, 2, 3], sample_ids=[0, 1, 2, 10], num_classes=4)
    with pytest.raises(ValueError, match=r"has 5 entries.*1 of the dataset's 4 sample ids.*10"):
        with_label_set(base, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        with_label_set(base, np.full(11, 7))
    with pytest.raises(AttributeError, match="sample_ids"):  # Python's own error says it
        with_label_set(np.zeros(3), np.zeros(3, np.int64))  # type: ignore[arg-type]


@pytest.mark.skipif(not REAL_CIFAR10N.is_file(),
                    reason=f"real CIFAR-10-N file not available at {REAL_CIFAR10N}")
def test_real_cifar10n_noise_rates() -> None:
    arrays = load_cifar10n(REAL_CIFAR10N)
    assert all(len(v) == 50_000 and v.dtype == np.int64 for v in arrays.values())
    expected = {"aggre": 0.0901, "random1": 0.1723, "random2": 0.1812, "random3": 0.1764,
                "worst": 0.4021, "clean": 0.0}
    for name, rate in expected.items():
        labels, clean = cifar10n_labels(REAL_CIFAR10N, name)
        assert abs(float(np.mean(labels != clean)) - rate) < 5e-5, name


@pytest.mark.skipif(not (REAL_CIFAR10N.is_file() and REAL_TRAIN_NPZ.is_file()),
                    reason=f"real CIFAR-10 / CIFAR-10-N files not available under {SHARED_DATA}")
def test_real_cifar10_subset_with_cifar10n() -> None:
    ds = with_cifar10n(load_npz(REAL_TRAIN_NPZ), REAL_CIFAR10N, label_set="worst")
    assert len(ds) == 20_000
    # The npz labels are CIFAR-10's, i.e. CIFAR-10-N's clean labels at the same indices.
    np.testing.assert_array_equal(load_npz(REAL_TRAIN_NPZ).labels, ds.clean_labels)
    assert abs(float(np.mean(ds.labels != ds.clean_labels)) - 0.4055) < 5e-5


# --------------------------------------------------------------------------------------
# user label files
# --------------------------------------------------------------------------------------


def test_label_file_csv_and_npy(tmp_path: Path) -> None:
    base = ArrayDataset(_rng_images(4), [0, 1, 2, 0], sample_ids=[3, 1, 0, 2])
    csv = tmp_path / "labels.csv"
    csv.write_text("sample_id,label\n2,1\n0,2\n1,0\n3,2\n")
    np.testing.assert_array_equal(load_label_file(csv), [2, 0, 1, 2])
    ds = with_label_file(base, csv)
    np.testing.assert_array_equal(ds.labels, [2, 0, 2, 1])
    assert ds.clean_labels is None
    assert ds.spec["steps"] == [{"op": "label_file", "path": str(csv.resolve())}]

    npy = tmp_path / "labels.npy"
    np.save(npy, np.array([1, 1, 0, 0, 2]))  # longer than needed is fine
    np.testing.assert_array_equal(with_label_file(base, npy).labels, [0, 1, 1, 0])

    npz = tmp_path / "d.npz"
    np.savez(npz, images=_rng_images(4), labels=base.labels, sample_ids=base.sample_ids)
    rebuilt = with_label_file(load_npz(npz), csv)
    _assert_same(rebuilt, _roundtrip(rebuilt))


def test_label_file_csv_with_huge_sparse_ids(tmp_path: Path) -> None:
    """Ids such as hashes or database keys: joined on the ids, no array indexed by id."""
    ids = [5_000_000_000_123, 17, 4_611_686_018_427_387_000]
    base = ArrayDataset(_rng_images(3), [0, 1, 2], sample_ids=ids)
    csv = tmp_path / "labels.csv"
    csv.write_text(f"sample_id,label\n{ids[2]},0\n{ids[0]},2\n99,1\n{ids[1]},1\n")
    np.testing.assert_array_equal(with_label_file(base, csv).labels, [2, 1, 0])
    with pytest.raises(ValueError, match="too sparse.*with_label_file"):
        load_label_file(csv)
    gap = tmp_path / "gap.csv"
    gap.write_text(f"sample_id,label\n{ids[0]},2\n{ids[1]},1\n")
    with pytest.raises(ValueError, match=r"lists 2 sample ids but 1 of the dataset's 3 sample ids have no label"):
        with_label_file(base, gap)


def test_label_file_wrong_length_or_gaps(tmp_path: Path) -> None:
    base = ArrayDataset(_rng_images(4), [0, 1, 2, 0])
    npy = tmp_path / "short.npy"
    np.save(npy, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"has 2 entries.*2 of the dataset's 4 sample ids"):
        with_label_file(base, npy)
    csv = tmp_path / "gap.csv"
    csv.write_text("sample_id,label\n0,1\n1,1\n3,0\n")
    with pytest.raises(ValueError, match=r"1 of the dataset's 4 sample ids have no label.*2"):
        with_label_file(base, csv)
    dup = tmp_path / "dup.csv"
    dup.write_text("sample_id,label\n0,1\n0,2\n")
    with pytest.raises(ValueError, match="more than once"):
        load_label_file(dup)
    cols = tmp_path / "cols.csv"
    cols.write_text("id,y\n0,1\n")
    with pytest.raises(ValueError, match="sample_id,label"):
        load_label_file(cols)
    with pytest.raises(ValueError, match=".csv or .npy"):
        (tmp_path / "l.txt").write_text("1\n")
        load_label_file(tmp_path / "l.txt")
    with pytest.raises(FileNotFoundError):
        load_label_file(tmp_path / "missing.csv")


# --------------------------------------------------------------------------------------
# synthetic noise
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, 0.013, 0.2, 0.5, 1.0])
@pytest.mark.parametrize("kind", ["symmetric", "pair"])
def test_inject_noise_exact_count(rate: float, kind: str) -> None:
    labels = np.arange(1000) % 10
    noisy = inject_noise(labels, rate=rate, num_classes=10, kind=kind, seed=0)
    assert int((noisy != labels).sum()) == round(rate * 1000)
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < 10


def test_inject_noise_seeded_and_never_same_class() -> None:
    labels = np.random.default_rng(0).integers(0, 5, size=5000)
    a = inject_noise(labels, rate=0.3, num_classes=5, seed=7)
    np.testing.assert_array_equal(a, inject_noise(labels, rate=0.3, num_classes=5, seed=7))
    assert not np.array_equal(a, inject_noise(labels, rate=0.3, num_classes=5, seed=8))
    flipped = a != labels
    assert flipped.sum() == 1500  # every chosen sample really changed class
    # Symmetric: every other class is a target, roughly uniformly.
    offsets = (a[flipped] - labels[flipped]) % 5
    counts = np.bincount(offsets, minlength=5)
    assert counts[0] == 0 and counts[1:].min() > 300


def test_inject_noise_pair_mapping() -> None:
    labels = np.arange(300) % 3
    noisy = inject_noise(labels, rate=0.5, num_classes=3, kind="pair", seed=1)
    flipped = noisy != labels
    np.testing.assert_array_equal(noisy[flipped], (labels[flipped] + 1) % 3)


def test_inject_noise_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"'symmetric', 'pair'"):
        inject_noise([0, 1], rate=0.5, num_classes=2, kind="uniform")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        inject_noise([0, 1], rate=20, num_classes=2)
    with pytest.raises(ValueError, match="at least 2"):
        inject_noise([0, 0], rate=0.5, num_classes=1)
    with pytest.raises(ValueError, match="outside"):
        inject_noise([0, 5], rate=0.5, num_classes=3)


def test_with_noise_records_clean_labels_and_spec() -> None:
    base = ArrayDataset(_rng_images(20), np.arange(20) % 4)
    ds = with_noise(base, rate=0.25, kind="pair", seed=3)
    np.testing.assert_array_equal(ds.clean_labels, base.labels)
    assert int((ds.labels != ds.clean_labels).sum()) == 5
    assert ds.spec["steps"] == [{"op": "noise", "rate": 0.25, "kind": "pair", "seed": 3}]
    json.dumps(ds.spec)


# --------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------


def _save(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (6, 5),
          fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


def _make_folder(root: Path) -> None:
    _save(root / "dog" / "b.png", (0, 0, 200))
    _save(root / "dog" / "a.JPG", (0, 200, 0), fmt="JPEG")
    _save(root / "cat" / "z.bmp", (200, 0, 0))
    _save(root / "cat" / "sub" / "y.webp", (10, 20, 30), fmt="WEBP")
    _save(root / "cat" / ".hidden.png", (1, 2, 3))
    _save(root / "cat" / ".cache" / "x.png", (1, 2, 3))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".trash").mkdir()


def test_image_folder_order_ids_and_images(tmp_path: Path) -> None:
    _make_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path)
    assert ds.class_names == ["cat", "dog"] and ds.num_classes == 2
    rel = [p.relative_to(tmp_path.resolve()).as_posix() for p in ds.paths]
    assert rel == ["cat/sub/y.webp", "cat/z.bmp", "dog/a.JPG", "dog/b.png"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 1, 1])
    np.testing.assert_array_equal(ds.sample_ids, [0, 1, 2, 3])
    img, label, sid = ds[3]
    assert img.dtype == torch.uint8 and img.shape == (3, 5, 6) and (label, sid) == (1, 3)
    assert img[2].float().mean() == 200 and img[0].float().mean() == 0
    assert ds.image(1).shape == (5, 6, 3) and ds.image(1)[0, 0].tolist() == [200, 0, 0]
    _assert_same(ds, _roundtrip(ds))
    # Ids are stable when the folder is listed again.
    np.testing.assert_array_equal(ImageFolderDataset(tmp_path).sample_ids, ds.sample_ids)


def test_image_folder_sizes(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "1.png", (5, 5, 5), size=(8, 8))
    _save(tmp_path / "b" / "2.png", (9, 9, 9), size=(16, 12))
    with pytest.raises(ValueError, match=r"2\.png is 16x12.*image_size="):
        ImageFolderDataset(tmp_path)
    ds = ImageFolderDataset(tmp_path, image_size=10)
    assert ds[0][0].shape == (3, 10, 10) and ds.image(1).shape == (10, 10, 3)
    assert _roundtrip(ds).image_size == 10
    grey = tmp_path / "a" / "3.png"
    Image.new("L", (7, 7), 100).save(grey)
    ds2 = ImageFolderDataset(tmp_path, image_size=10)
    assert ds2.image(1)[0, 0].tolist() == [100, 100, 100]  # grayscale decoded to RGB


def test_image_folder_16_bit_images_keep_their_range_and_floats_are_refused(tmp_path: Path) -> None:
    ramp = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)  # 0..65535
    for c in "ab":
        (tmp_path / c).mkdir()
        Image.fromarray(ramp).save(tmp_path / c / "x.png")
    assert Image.open(tmp_path / "a" / "x.png").mode.startswith("I")
    img = ImageFolderDataset(tmp_path).image(0)
    np.testing.assert_array_equal(img[..., 0], (ramp >> 8).astype(np.uint8))  # 0..255, not clipped white
    assert (img[..., 0] == img[..., 2]).all()
    Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32)).save(tmp_path / "b" / "f.tiff")
    with pytest.raises(ValueError, match=r"f\.tiff holds 32-bit floats"):
        ImageFolderDataset(tmp_path)


def test_image_folder_big_endian_and_32_bit_int_grey_images(tmp_path: Path) -> None:
    # TIFF keeps these modes as written (a PNG reopens as I;16): I;16B and I (32-bit int,
    # read as holding a 16-bit range: values outside 0..65535 are clipped first).
    ramp = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)  # 0..65535
    wide = ramp.astype(np.int32)
    wide[0, :2] = [-5, 70_000]
    for c in "ab":
        (tmp_path / c).mkdir()
    Image.fromarray(ramp.astype(">u2")).save(tmp_path / "a" / "big.tiff")
    Image.fromarray(wide).save(tmp_path / "b" / "int.tiff")
    assert Image.open(tmp_path / "a" / "big.tiff").mode == "I;16B" and Image.open(tmp_path / "b" / "int.tiff").mode == "I"
    ds = ImageFolderDataset(tmp_path)
    expected = (ramp >> 8).astype(np.uint8)
    np.testing.assert_array_equal(ds.image(0)[..., 1], expected)
    expected[0, :2] = [0, 255]
    np.testing.assert_array_equal(ds.image(1)[..., 1], expected)
    assert ds.image(1).mean() < 130  # PIL's own convert("RGB") gives almost all 255 here


def test_image_folder_unreadable_file(tmp_path: Path) -> None:
    _save(tmp_path / "a" / "ok.png", (1, 1, 1))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        ImageFolderDataset(tmp_path)
    # A truncated file whose header is intact is caught too.
    good = (tmp_path / "a" / "ok.png").read_bytes()
    (tmp_path / "b" / "broken.png").write_bytes(good[: len(good) - 20])
    with pytest.raises(ValueError, match=r"broken\.png"):
        ImageFolderDataset(tmp_path)


def test_image_folder_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataset(tmp_path, image_size=0)


# --------------------------------------------------------------------------------------
# shipped sample data and load_dataset validation
# --------------------------------------------------------------------------------------


def test_sample_data_path_without_the_installed_package(monkeypatch) -> None:
    """A source tree used without installing it still finds its top-level sample_data/."""
    import importlib.resources

    installed = gd.sample_data_path()

    def missing(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(importlib.resources, "files", missing)
    checkout = Path(__file__).resolve().parents[1] / "sample_data" / installed.name
    assert gd.sample_data_path() == checkout and checkout.is_file()


@pytest.mark.skipif(not gd.sample_data_path().is_file(), reason="sample_data/ not in this checkout")
def test_sample_data() -> None:
    train, test = sample_data()
    assert len(train) == 2500 and len(test) == 500
    assert train.images_nchw.shape == (2500, 3, 32, 32) and test.images_nchw.shape == (500, 3, 32, 32)
    assert train.class_names[0] == "airplane" and train.num_classes == 10
    assert train.sample_ids.min() >= 0 and train.sample_ids.max() < 20_000
    np.testing.assert_array_equal(np.bincount(train.clean_labels), np.full(10, 250))
    rates = {name: float(np.mean(sample_data(label_set=name)[0].labels != train.clean_labels))
             for name in ("clean", "aggre", "worst")}
    assert rates["clean"] == 0.0
    assert abs(rates["aggre"] - 0.0908) < 1e-9 and abs(rates["worst"] - 0.418) < 1e-9
    np.testing.assert_array_equal(test.labels, test.clean_labels)
    _assert_same(train, _roundtrip(train))
    _assert_same(test, _roundtrip(test))


def test_load_dataset_validates_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'npz'.*'cifar10'"):
        load_dataset({"source": "hdf5"})
    with pytest.raises(ValueError, match="no 'source'"):
        load_dataset({"path": "x"})
    with pytest.raises(ValueError, match=r"unknown 'image_folder' spec key\(s\) 'size'.*'image_size'"):
        load_dataset({"source": "image_folder", "root": str(tmp_path), "size": 3})
    np.savez(tmp_path / "d.npz", images=_rng_images(2), labels=np.array([0, 1]))
    with pytest.raises(ValueError, match="'label_set', 'label_file', 'noise'"):
        load_dataset({"source": "npz", "path": str(tmp_path / "d.npz"), "steps": [{"op": "shuffle"}]})
    with pytest.raises(ValueError, match=r"unknown 'noise' step key\(s\) 'p'"):
        load_dataset({"source": "npz", "path": str(tmp_path / "d.npz"),
                      "steps": [{"op": "noise", "p": 0.1}]})
    with pytest.raises(TypeError):
        load_dataset("d.npz")  # type: ignore[arg-type]


def test_unreadable_files_are_input_errors(tmp_path: Path) -> None:
    from gwa_diag.checks import InputError

    (tmp_path / "text.npz").write_text("not an npz file")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "bad.csv").write_bytes(b'sample_id,label\n"0,1\n')
    (tmp_path / "pickled.npy").write_bytes(b"")
    np.save(tmp_path / "objects.npy", np.array([0, "a"], dtype=object), allow_pickle=True)
    for path in ("text.npz", "empty.npz"):
        with pytest.raises(InputError, match=rf"cannot read .*{path} as an \.npz file"):
            load_npz(tmp_path / path)
    with pytest.raises(InputError, match=r"bad\.csv as a CSV file"):
        load_label_file(tmp_path / "bad.csv")
    for path in ("pickled.npy", "objects.npy"):  # no data, and pickled objects (never unpickled)
        with pytest.raises(InputError, match=rf"{path} as an \.npy array"):
            load_label_file(tmp_path / path)
