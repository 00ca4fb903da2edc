"""Regenerate sample_data/cifar10n_subset.npz from the full CIFAR-10 and CIFAR-10-N files.

    python sample_data/make_sample_data.py \
        --train-npz ../shared/data/cifar10/train_first20000.npz \
        --test-npz ../shared/data/cifar10/test_first1000.npz \
        --cifar10n ../shared/data/cifar10n/CIFAR-10_human.pt

The training npz must hold CIFAR-10 training images in the original training order (row =
CIFAR-10 training index) under ``images`` (uint8 NHWC) and ``labels``; the test npz the same
for test images. The script draws a seeded class-balanced subset, checks that the CIFAR-10
labels equal CIFAR-10-N's ``clean_label`` at every chosen index (so the two files are aligned),
writes the subset with ``np.savez_compressed`` and prints its size and noise rates.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck")
LABEL_KEYS = ("clean_label", "aggre_label", "worse_label",
              "random_label1", "random_label2", "random_label3")


def balanced_subset(labels: np.ndarray, n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` samples, ``n / num_classes`` drawn at random from each class."""
    if n % num_classes:
        raise ValueError(f"n={n} must be a multiple of num_classes={num_classes} for a balanced subset")
    per_class = n // num_classes
    picks = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            raise ValueError(f"class {c} has only {len(members)} samples, need {per_class}")
        picks.append(rng.choice(members, size=per_class, replace=False))
    # Sorted so the subset keeps the original training order.
    return np.sort(np.concatenate(picks)).astype(np.int64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-npz", type=Path, default=SHARED / "cifar10" / "train_first20000.npz")
    ap.add_argument("--test-npz", type=Path, default=SHARED / "cifar10" / "test_first1000.npz")
    ap.add_argument("--cifar10n", type=Path, default=SHARED / "cifar10n" / "CIFAR-10_human.pt")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "cifar10n_subset.npz")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-mb", type=float, default=9.0,
                    help="if the file is larger, retry with 2,500 training images")
    args = ap.parse_args(argv)

    # The safe loader (explicit numpy allow-list, no arbitrary unpickling).
    from gwa_diag.training.data import load_cifar10n

    for p in (args.train_npz, args.test_npz, args.cifar10n):
        if not p.is_file():
            print(f"missing input file: {p}", file=sys.stderr)
            return 2
    with np.load(args.train_npz, allow_pickle=False) as z:
        train_images, train_labels = z["images"], z["labels"].astype(np.int64)
    with np.load(args.test_npz, allow_pickle=False) as z:
        test_images, test_labels = z["images"], z["labels"].astype(np.int64)
    n10n = load_cifar10n(args.cifar10n)

    n_train = args.n_train
    while True:
        rng = np.random.default_rng(args.seed)
        train_idx = balanced_subset(train_labels, n_train, 10, rng)
        test_idx = balanced_subset(test_labels, args.n_test, 10, rng)
        clean = n10n["clean_label"][train_idx]
        if not np.array_equal(clean, train_labels[train_idx]):
            bad = train_idx[clean != train_labels[train_idx]]
            print(f"CIFAR-10 labels differ from CIFAR-10-N clean_label at {len(bad)} indices "
                  f"(e.g. {bad[:5].tolist()}): the image file is not in training order", file=sys.stderr)
            return 1
        arrays = {
            "images": np.ascontiguousarray(train_images[train_idx]),
            "sample_ids": train_idx,
            **{k: n10n[k][train_idx].astype(np.int64) for k in LABEL_KEYS},
            "test_images": np.ascontiguousarray(test_images[test_idx]),
            "test_labels": test_labels[test_idx],
            "test_sample_ids": test_idx,
            "class_names": np.array(CLASS_NAMES),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.out, **arrays)
        size_mb = args.out.stat().st_size / 1e6
        if size_mb <= args.max_mb or n_train <= 2500:
            break
        print(f"{args.out.name} is {size_mb:.2f} MB > {args.max_mb} MB with {n_train} training "
              "images; retrying with 2,500")
        n_train = 2500

    print(f"wrote {args.out} ({size_mb:.2f} MB): {n_train} train images "
          f"({n_train // 10} per class), {args.n_test} test images "
          f"({args.n_test // 10} per class), seed {args.seed}")
    print("noise rates in the subset (label != clean_label):")
    for name, key in (("aggre", "aggre_label"), ("random1", "random_label1"),
                      ("random2", "random_label2"), ("random3", "random_label3"),
                      ("worst", "worse_label")):
        rate = float(np.mean(arrays[key] != arrays["clean_label"]))
        print(f"  {name:8s} {rate * 100:6.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
