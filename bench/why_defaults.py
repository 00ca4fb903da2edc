"""The measurements behind two of gwa-diag's defaults, each from a run made here.

    python bench/why_defaults.py                  # both parts
    python bench/why_defaults.py --part gap       # only part 1

1. ``--part gap``: where mean alignment loses to AUM, piece by piece (:class:`Pieces` reads
   each piece of the alignment between backward and the optimizer step).
2. ``--part window``: on a run that memorises (generated images, injected wrong labels), the
   estimated count against the same confident disagreement read over the second half. The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gwa_diag.alignment import alignment_from_head
from gwa_diag.analysis.metrics import auroc, average_precision
from gwa_diag.training.batches import Batches
from gwa_diag.training.data import load_npz, with_cifar10n
from gwa_diag.training.engine import build_optimizer, train_step
from harness import add_common_args, data_files, first_images, new_model, normalisation, recipe, write_page

PIECES = ("alignment", "margin", "margin_no_bias", "soft", "soft_over_z")


class Pieces:
    """The recorder of part 1 (a :class:`gwa_diag.training.engine.StepRecorder`): alignment
    and its pieces per (epoch, sample), from the head's input ``z`` and output (the logits)
    of the step's forward and the head weight before the optimizer step."""

    def __init__(self, model: torch.nn.Module, n: int, epochs: int) -> None:
        self.head, self.epoch, self.seen = model.head, 0, {}
        self.out = {k: np.zeros((epochs, n)) for k in PIECES}
        self.head.register_forward_hook(lambda m, i, o: self.seen.update(z=i[0].detach(), logits=o.detach()))

    @torch.no_grad()
    def update(self, ids: torch.Tensor, labels: torch.Tensor) -> None:
        z, logits, w, target = self.seen["z"], self.seen["logits"].float(), self.head.weight, labels[:, None]
        scores = z @ w.T  # the logits without the bias, [B, C]
        others = logits.scatter(1, target, float("-inf"))
        soft = scores.gather(1, target).squeeze(1) - (torch.softmax(others, dim=1) * scores).nan_to_num(0).sum(1)
        plain = scores.scatter(1, target, float("-inf"))
        rows, e = ids.numpy(), self.epoch  # ids = rows of the first n images
        self.out["alignment"][e, rows] = alignment_from_head(scores, logits, labels, z.norm(dim=1), w.norm()).numpy()
        self.out["margin"][e, rows] = (logits.gather(1, target).squeeze(1) - others.max(1).values).numpy()
        self.out["margin_no_bias"][e, rows] = (scores.gather(1, target).squeeze(1) - plain.max(1).values).numpy()
        self.out["soft"][e, rows] = soft.numpy()
        self.out["soft_over_z"][e, rows] = (soft / z.norm(dim=1)).numpy()


def pieces(label_set: str, data: Path, n: int = 5000, epochs: int = 15, seed: int = 0) -> dict[str, np.ndarray]:
    """Per (epoch, sample): alignment and its pieces, from one run of the CPU recipe."""
    files = data_files(data)
    ds = with_cifar10n(first_images(load_npz(files.train), n), files.labels, label_set=label_set)
    cfg = recipe("decay", epochs=epochs, seed=seed)
    model = new_model("tiny", ds.num_classes, seed)
    batches = Batches(ds, torch.device("cpu"), cfg.batch_size, num_workers=0)
    opt, sched = build_optimizer(model, cfg, epochs * len(batches), int(round(cfg.warmup_epochs * len(batches))))
    mean, std = normalisation(ds.images_nchw, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    record = Pieces(model, n, epochs)
    model.train()
    for record.epoch in range(epochs):
        gen = torch.Generator().manual_seed(seed * 100_003 + record.epoch)  # order and augmentation, as the engine
        for batch in batches.epoch(gen):
            train_step(model, batch, opt, mean=mean, std=std, dtype=None, scaler=scaler, recorder=record,
                       scheduler=sched, augment_with=gen)
    return {**record.out, "is_noisy": np.asarray(ds.labels) != np.asarray(ds.clean_labels)}


def gap(label_set: str, data: Path) -> tuple[list[str], dict[str, object]]:
    """Part 1: (its lines, its numbers)."""
    rec = pieces(label_set, data)
    noisy = rec["is_noisy"]
    half = slice(rec["alignment"].shape[0] // 2, None)
    lines = [f"1. where mean alignment loses to AUM ({label_set}, {noisy.sum()} of {noisy.size} labels wrong; "
             "means over the second half; AUROC / AP, higher score = more suspicious)", ""]
    rows = [("margin (AUM)", "margin"), ("margin without the head's bias", "margin_no_bias"),
            ("soft margin without bias", "soft"), ("soft margin / ||z||", "soft_over_z"),
            ("alignment (also / ||W|| and the gradient norm)", "alignment")]
    numbers: dict[str, object] = {"label_set": label_set, "wrong": int(noisy.sum()), "n": int(noisy.size)}
    for text, key in rows:
        score = -rec[key][half].mean(axis=0)
        numbers[key] = {"auroc": auroc(score, noisy), "ap": average_precision(score, noisy)}
        lines.append(f"    {text:48s} {numbers[key]['auroc']:.4f} / {numbers[key]['ap']:.4f}")
    return lines, numbers


def window() -> tuple[list[str], dict[str, object]]:
    """Part 2: (its lines, its numbers)."""
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
        train_acc = [float(v) for v in a.run.epochs()["train_acc"]]
        numbers = {"wrong": int(a.truth.sum()), "n": len(a.truth), "train_acc": train_acc,
                   "selected_epoch": a.selection.epoch, "estimate": int(a.estimate.total),
                   "second_half": [int(second_half[0]), int(second_half[-1])], "second_half_count": late_count}
    lines = [f"2. the estimated count on a run that memorises ({numbers['wrong']} of {numbers['n']} labels wrong; "
             f"train accuracy per epoch {', '.join(f'{v:.2f}' for v in train_acc)}; GWA-selected epoch "
             f"{numbers['selected_epoch']})", "",
             f"    the analysis' estimate (the default, read with the training phase): {numbers['estimate']}",
             f"    over the second half of training ({second_half[0]}..{second_half[-1]}): {late_count}"]
    return lines, numbers


def main() -> None:
    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=["gap", "window", "both"], default="both")
    ap.add_argument("--label-set", default="worst", help="CIFAR-10-N label set of part 1 (default worst)")
    add_common_args(ap)
    args = ap.parse_args()
    lines, numbers = ["# The measurements behind two defaults", ""], {}
    for part, run in (("gap", lambda: gap(args.label_set, args.data)), ("window", window)):
        if args.part in (part, "both"):
            text, numbers[part] = run()
            lines += [*text, ""]
    print("\n".join(lines))
    page, _ = write_page(__file__, "\n".join(lines), numbers, pages_dir=args.pages_dir, wall_s=time.perf_counter() - t0)
    print(f"page: {page}")


if __name__ == "__main__":
    main()
