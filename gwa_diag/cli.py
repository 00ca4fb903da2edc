"""Command line: ``gwa-diag train | demo | rank | score | report | app``."""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .cli_analysis import register as register_analysis
from .cli_app import register as register_app
from .demo import register as register_demo
from .store import RunDirError

__all__ = ["main", "build_parser"]


def _add_train_args(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--data", default="sample", choices=["sample", "cifar10", "npz", "folder"],
                      help="sample: the bundled CIFAR-10-N subset (offline); cifar10: torchvision CIFAR-10 "
                           "under --data-path; npz: an .npz with images/labels; folder: one sub-folder per class")
    data.add_argument("--data-path", type=Path, help="CIFAR-10 root, .npz file or image folder")
    data.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10 into --data-path")
    data.add_argument("--label-set", help="CIFAR-10-N label set: clean, aggre, worst, random1, random2, random3")
    data.add_argument("--cifar10n", type=Path, help="path to CIFAR-10_human.pt (for --label-set with cifar10/npz data)")
    data.add_argument("--labels", type=Path, help="label file to train on instead (CSV sample_id,label or .npy)")
    data.add_argument("--noise-rate", type=float, default=0.0, help="inject synthetic label noise at this rate")
    data.add_argument("--noise-kind", default="symmetric", choices=["symmetric", "pair"])
    data.add_argument("--noise-seed", type=int, default=0)
    data.add_argument("--eval-data", type=Path, help=".npz evaluation set (accuracy each epoch)")
    data.add_argument("--image-size", type=int, help="resize folder images to this size")
    model = p.add_argument_group("model and optimisation")
    model.add_argument("--model", default="tiny", help="tiny, resnet18_cifar, or tv:<torchvision model name>")
    model.add_argument("--epochs", type=int, default=20)
    model.add_argument("--batch-size", type=int, default=256)
    model.add_argument("--lr", type=float, default=0.1)
    model.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    model.add_argument("--weight-decay", type=float, default=5e-4)
    model.add_argument("--warmup-epochs", type=float, default=2.0)
    model.add_argument("--schedule", default="linear", choices=["cosine", "linear", "constant"])
    model.add_argument("--no-augment", action="store_true", help="disable crop+flip augmentation")
    model.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"])
    model.add_argument("--mode", default="scratch", choices=["scratch", "finetune"],
                       help="GWA early-stopping rule: from scratch, or fine-tuning a pre-trained model")
    model.add_argument("--device", default="auto")
    model.add_argument("--seed", type=int, default=0)
    model.add_argument("--workers", type=int, default=0, help="DataLoader workers (image folders)")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="run directory (default runs/<time>-<4 hex digits>)")
    out.add_argument("--resume", action="store_true", help="continue the killed run in --out from its checkpoint")
    out.add_argument("--quiet", action="store_true", help="no progress bar")


def load_train_data(args: argparse.Namespace) -> tuple[Any, Any | None]:
    """Build (train_set, eval_set) from the CLI data options."""
    from . import data

    # Options that cannot go together are refused before any data is read.
    if args.label_set and args.data == "folder":
        # CIFAR-10-N labels are keyed by CIFAR-10 training index, not by a folder's file order.
        raise ValueError("--label-set (CIFAR-10-N labels) needs the CIFAR-10 images: use --data cifar10 or "
                         "npz, or train a folder on your own labels with --labels FILE")
    if args.image_size is not None and args.data != "folder":
        raise ValueError("--image-size resizes image folders only (--data folder); drop it for this data")
    eval_set = None
    if args.data == "sample":
        train_set, eval_set = data.sample_data(label_set=args.label_set or "worst")
    elif args.data == "cifar10":
        if args.data_path is None:
            raise SystemExit("--data cifar10 needs --data-path (the folder that holds or will hold cifar-10-batches-py)")
        train_set = data.cifar10(args.data_path, train=True, download=args.download)
        eval_set = data.cifar10(args.data_path, train=False, download=args.download)
    elif args.data == "npz":
        if args.data_path is None:
            raise SystemExit("--data npz needs --data-path FILE.npz")
        train_set = data.load_npz(args.data_path)
    else:
        if args.data_path is None:
            raise SystemExit("--data folder needs --data-path (one sub-folder per class)")
        train_set = data.ImageFolderDataset(args.data_path, image_size=args.image_size)
    if args.label_set and args.data != "sample":
        if args.cifar10n is None:
            raise SystemExit("--label-set needs --cifar10n PATH/TO/CIFAR-10_human.pt")
        # with_cifar10n/with_label_file record the label source in the dataset spec, so the
        # app and the analysis can rebuild the same dataset from run.json.
        train_set = data.with_cifar10n(train_set, args.cifar10n, label_set=args.label_set)
    if args.labels is not None:
        train_set = data.with_label_file(train_set, args.labels)
    if args.noise_rate:
        train_set = data.with_noise(train_set, rate=args.noise_rate, kind=args.noise_kind, seed=args.noise_seed)
    if args.eval_data is not None:
        eval_set = data.load_npz(args.eval_data)
    return train_set, eval_set


def _config(args: argparse.Namespace):
    from .engine import TrainConfig

    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, schedule=args.schedule,
        augment=not args.no_augment, precision=args.precision, device=args.device, seed=args.seed,
        mode=args.mode, num_workers=args.workers, progress=not args.quiet,
    )


def _init_distributed(args: argparse.Namespace) -> int:
    """Under torchrun (WORLD_SIZE > 1): join the process group; returns this rank."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    if args.out is None:
        raise SystemExit("under torchrun pass --out: every rank must write into the same run directory")
    use_cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        args.device = f"cuda:{local}"
    elif args.device == "auto":
        args.device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank()


def _cmd_train(args: argparse.Namespace) -> int:
    from .models import build_model
    from .engine import train

    rank = _init_distributed(args)
    if rank != 0:
        args.quiet = True
    train_set, eval_set = load_train_data(args)
    # The default name is unique even for two runs started in the same second.
    out = args.out = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    import torch

    torch.manual_seed(args.seed)  # the model's initial weights are part of what --seed fixes
    model = build_model(args.model, train_set.num_classes)
    t0 = time.perf_counter()
    result = train(model, train_set, out, config=_config(args), eval_set=eval_set, resume=args.resume,
                   meta={"model_name": args.model})
    sel = result.selected
    if rank != 0:
        return 0
    print(f"run directory: {out}  ({time.perf_counter() - t0:.1f} s)")
    weights = Path(out) / "checkpoints" / "selected.pt"
    if sel.epoch is not None and weights.exists():
        print(f"GWA-selected epoch: {sel.epoch} ({sel.reason}); weights in {weights}")
    else:
        print(f"GWA selected no epoch ({sel.reason}); the last epoch's weights are in {Path(out) / 'checkpoints' / 'last.pt'}")
    q = shlex.quote(str(out))
    print(f"next: gwa-diag rank {q}   |   gwa-diag report {q}   |   gwa-diag app {q}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gwa-diag", description="Find mislabeled training samples with gradient-weight alignment.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a model and record per-sample alignment")
    _add_train_args(p)
    p.set_defaults(func=_cmd_train)
    register_demo(sub)
    register_analysis(sub)
    register_app(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TypeError, RunDirError) as exc:
        # Bad input: one clear line (what is wrong and how to fix it), no traceback.
        print(f"gwa-diag {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # A file where a folder goes (or the reverse), no permission, a full disk ...
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"gwa-diag {args.command}: error: {exc.strerror or exc}{where}; check the paths given "
              "(--out, --data-path, ...): folders must be folders, files files, and writable", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command == "train" and getattr(args, "out", None) is not None:
            resume = shlex.join(["gwa-diag", *(argv if argv is not None else sys.argv[1:])])
            resume += "" if getattr(args, "resume", False) else " --resume"
            if "--out" not in resume:
                resume += f" --out {shlex.quote(str(args.out))}"
            print(f"\ninterrupted: the epochs recorded so far are kept in {args.out}; continue with:\n  {resume}",
                  file=sys.stderr)
        else:
            print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
