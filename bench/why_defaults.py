"""The measurements behind two of gwa-diag's defaults, each from a run made here.

    python bench/why_defaults.py                  # both parts, about 20 s on a quiet 2-core CPU
    python bench/why_defaults.py --part gap       # only part 1

1. **Where mean alignment loses to AUM** (``--part gap``). Alignment is, up to positive factors,
   the label's score minus the softmax-weighted score of the other classes, divided by the
   sample's feature norm ``||z||`` and by ``||W||``, with the head's bias left out. One run
   of the detection benchmark's CPU recipe (tiny CNN, first 5,000 CIFAR-10 images, CIFAR-10-N
   ``--label-set``, 15 epochs) records each piece per sample and epoch, and the AUROC / AP of
   their means over the second half of training show which step costs what.
2. **Why the estimated count reads the epochs around the GWA-selected one** (``--part window``).
   A run that fits easy generated images and then memorises 25% injected wrong labels (the
   data of ``tests/test_estimate.py``); the confident-disagreement count (the library's
   ``disagreement`` > 0.5) over three epochs around the selected one, against the same count
   over the second half of training.

The training loop of part 1 is written out here (not the engine) because the engine's
recorder keeps alignment, not its pieces; it follows the engine's recipe and augmentation.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cifar_bench import DEFAULT_DATA, data_files, first_images, hardware
from gwa_diag.alignment import alignment_from_head
from gwa_diag.analysis.metrics import auroc, average_precision
from gwa_diag.training.batches import augment, channel_stats
from gwa_diag.training.data import load_npz, with_cifar10n
from gwa_diag.training.models import tiny_cnn


def pieces(label_set: str, data: Path, n: int = 5000, epochs: int = 15, batch: int = 256) -> dict[str, np.ndarray]:
    """Per (epoch, sample): alignment and its pieces, from one run of the CPU recipe."""
    files = data_files(data)
    ds = with_cifar10n(first_images(load_npz(files.train), n), files.labels, label_set=label_set)
    images = ds.images_nchw
    mean, std = channel_stats(images)
    x_all = (images.float().div(255) - mean[None, :, None, None]) / std[None, :, None, None]
    y = torch.as_tensor(np.asarray(ds.labels)).long()
    torch.manual_seed(0)
    model = tiny_cnn(ds.num_classes)
    steps, warm = epochs * -(-n // batch), 2 * -(-n // batch)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    seen: dict[str, torch.Tensor] = {}
    model.head.register_forward_hook(lambda m, i, o: seen.__setitem__("z", i[0]))
    gen = torch.Generator().manual_seed(0)
    out = {k: np.zeros((epochs, n)) for k in ("alignment", "margin", "margin_no_bias", "soft", "soft_over_z")}
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, batch):
            idx = order[lo : lo + batch]
            for group in opt.param_groups:  # warm-up, then linear decay (the engine's schedule)
                group["lr"] = 0.1 * min((step + 1) / warm, max(0.0, (steps - step) / (steps - warm)))
            logits = model(augment(x_all[idx], gen))
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            with torch.no_grad():
                z, w, target = seen["z"], model.head.weight, y[idx][:, None]
                scores = z @ w.T  # the logits without the bias
                others = logits.scatter(1, target, float("-inf"))
                q = torch.softmax(others, dim=1)
                soft = scores.gather(1, target).squeeze(1) - (q * scores).nan_to_num(0).sum(1)
                rows = idx.numpy()
                out["alignment"][epoch, rows] = alignment_from_head(scores, logits, y[idx], z.norm(dim=1), w.norm()).numpy()
                out["margin"][epoch, rows] = (logits.gather(1, target).squeeze(1) - others.max(1).values).numpy()
                plain = scores.scatter(1, target, float("-inf"))
                out["margin_no_bias"][epoch, rows] = (scores.gather(1, target).squeeze(1) - plain.max(1).values).numpy()
                out["soft"][epoch, rows] = soft.numpy()
                out["soft_over_z"][epoch, rows] = (soft / z.norm(dim=1)).numpy()
    out["is_noisy"] = np.asarray(ds.labels) != np.asarray(ds.clean_labels)
    return out


def gap(label_set: str, data: Path) -> None:
    rec = pieces(label_set, data)
    noisy = rec["is_noisy"]
    half = slice(rec["alignment"].shape[0] // 2, None)
    print(f"\n1. where mean alignment loses to AUM ({label_set}, {noisy.sum()} of {noisy.size} labels wrong; "
          "means over the second half; AUROC / AP, higher score = more suspicious)")
    rows = [("margin (AUM)", "margin"), ("margin without the head's bias", "margin_no_bias"),
            ("soft margin without bias", "soft"), ("soft margin / ||z||", "soft_over_z"),
            ("alignment (also / ||W|| and the gradient norm)", "alignment")]
    for text, key in rows:
        score = -rec[key][half].mean(axis=0)
        print(f"  {text:48s} {auroc(score, noisy):.4f} / {average_precision(score, noisy):.4f}")


def window() -> None:
    from gwa_diag.analysis.pipeline import analyze
    from gwa_diag.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(3)  # the generated images of tests/test_estimate.py
        templates = rng.integers(0, 256, size=(4, 1, 1, 3))
        labels = rng.integers(0, 4, size=600)
        images = np.clip(templates[labels] + rng.normal(0, 40, size=(600, 12, 12, 3)), 0, 255).astype(np.uint8)
        np.savez(Path(tmp) / "d.npz", images=images, labels=labels)
        run = Path(tmp) / "run"
        main(["train", "--data", "npz", "--data-path", str(Path(tmp) / "d.npz"), "--noise-rate", "0.25", "--epochs", "6",
              "--batch-size", "50", "--lr", "0.05", "--warmup-epochs", "0.5", "--no-augment", "--quiet", "--out", str(run)])
        a = analyze(run)
        rows = a.run.samples()
        second_half = sorted(rows["epoch"].unique())[len(rows["epoch"].unique()) // 2:]
        late = rows[rows["epoch"].isin(second_half)]
        # The same confident disagreement, over the second half: per epoch and class, the
        # threshold is the mean p(label) of the samples labelled with that class.
        limit = late.groupby(["epoch", "label"])["p_label"].mean().rename("t")
        late = late.join(limit, on=["epoch", "pred"])
        late["hit"] = (late["pred"] != late["label"]) & (late["p_pred"] >= late["t"])
        late_count = int((late.groupby("sample_id")["hit"].mean() > 0.5).sum())
        train_acc = ", ".join(f"{v:.2f}" for v in a.run.epochs()["train_acc"])
        print(f"\n2. the estimated count on a run that memorises ({int(a.truth.sum())} of {len(a.truth)} labels wrong; "
              f"train accuracy per epoch {train_acc}; GWA-selected epoch {a.selection.epoch})")
        print(f"  around the selected epoch (the default): {a.estimate.total}")
        print(f"  over the second half of training ({second_half[0]}..{second_half[-1]}): {late_count}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["gap", "window", "both"], default="both")
    ap.add_argument("--label-set", default="worst", help="CIFAR-10-N label set of part 1 (default worst)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with cifar10/ and cifar10n/")
    args = ap.parse_args()
    print(hardware(torch.device("cpu")))
    if args.part in ("gap", "both"):
        gap(args.label_set, args.data)
    if args.part in ("window", "both"):
        window()


if __name__ == "__main__":
    main()
