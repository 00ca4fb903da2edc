"""Training throughput of the gwa-diag engine (images per second), against its bare step.

    python bench/train_speed.py                      # CPU: tiny CNN (+ the GPU case when CUDA exists)
    python bench/train_speed.py --skip-cpu           # only the GPU case
    python bench/train_speed.py --cpu-epochs 4 --repeats 9

Two measurements per case: the engine end to end (:func:`gwa_diag.training.engine.train`,
the median of the epochs after the first), and its step
(:func:`gwa_diag.training.engine.train_step`) alone in timed blocks, without the recorder
(the recorder's cost per step: ``bench/recorder_overhead.py``). Random images stand in when
the data file is absent. The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from gwa_diag.training.data import ArrayDataset, load_npz
from gwa_diag.training.batches import Batches as _Batches, channel_stats as _channel_stats
from gwa_diag.training.engine import TrainConfig, build_optimizer, train, train_step
from gwa_diag.training.models import resnet18_cifar, tiny_cnn
from gwa_diag.store import open_run
from harness import DEFAULT_DATA, add_common_args, device_name, first_images, hardware, sync, write_page

DEFAULT_DATA_FILE = DEFAULT_DATA / "cifar10" / "train_first20000.npz"


def dataset(path: Path, n: int) -> tuple[ArrayDataset, str]:
    if path.is_file():
        full = load_npz(path)
        n = min(n, len(full))
        return first_images(full, n), f"first {n} images of {path.name}"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return ArrayDataset(images, labels, num_classes=10), f"{n} random uint8 images ({path} not found)"


def engine_end_to_end(make_model, ds, device: torch.device, *, epochs: int, batch: int, lr: float,
                      precision: str) -> dict[str, Any]:
    """Wall time of gwa_diag.training.engine.train; per-epoch seconds from the run's epoch rows."""
    torch.manual_seed(0)
    model = make_model()
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=lr, warmup_epochs=min(2.0, epochs / 2), schedule="linear",
                      precision=precision, device=str(device), progress=False)
    with tempfile.TemporaryDirectory(prefix="gwa-speed-") as tmp:
        sync(device)
        t0 = time.perf_counter()
        train(model, ds, Path(tmp) / "run", config=cfg)
        sync(device)
        total = time.perf_counter() - t0
        seconds = open_run(Path(tmp) / "run").epochs().sort_values("epoch")["seconds"].tolist()
    steady = seconds[1:] if len(seconds) > 1 else seconds
    per_epoch = statistics.median(steady)
    return {"total_s": total, "epochs": epochs, "first_s": seconds[0], "per_epoch_s": per_epoch,
            "min_s": min(steady), "max_s": max(steady), "images_s": len(ds) / per_epoch, "n": len(ds)}


def raw_step_loop(make_model, ds, device: torch.device, *, batch: int, lr: float, dtype, steps: int,
                  repeats: int, warmup: int) -> dict[str, Any]:
    """The engine's training step (:func:`gwa_diag.training.engine.train_step`) alone, without
    the recorder: the ceiling of the engine's throughput. The recorder's own cost per step is
    ``bench/recorder_overhead.py``'s question."""
    torch.manual_seed(0)
    model = make_model().to(device).train()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    opt, sched = build_optimizer(model, TrainConfig(lr=lr, schedule="constant"), warmup + repeats * steps + 1, 0)
    # As the engine makes it: enabled for fp16 only, else a pass-through (plain backward and step).
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    batches = _Batches(ds, device, batch, num_workers=0)
    mean, std = _channel_stats(batches.images)
    mean, std = mean.to(device)[None, :, None, None], std.to(device)[None, :, None, None]
    gen = torch.Generator().manual_seed(0)
    # Full batches only, cycled: every block does the same work.
    full = [item for item in batches.epoch(torch.Generator().manual_seed(0)) if len(item[1]) == batch]

    def block(n: int, start: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        for i in range(start, start + n):
            train_step(model, full[i % len(full)], opt, mean=mean, std=std, dtype=dtype, scaler=scaler,
                       recorder=None, scheduler=sched, augment_with=gen)
        sync(device)
        return time.perf_counter() - t0

    block(warmup, 0)  # allocator, cuDNN autotuning, thread pools
    times = [block(steps, warmup + r * steps) for r in range(repeats)]
    med, imgs = statistics.median(times), steps * batch
    return {"images_s": imgs / med, "spread": (imgs / max(times), imgs / min(times)), "step_ms": 1000 * med / steps}


def report(label: str, device_name: str, data_desc: str, e2e: dict[str, Any] | None, raw: dict[str, Any],
           say: Callable[[str], None]) -> None:
    say(f"\n== {label} on {device_name}; data: {data_desc}")
    if e2e is not None:
        say(f"engine end to end (gwa_diag.training.engine.train, recorder on, {e2e['epochs']} epochs of {e2e['n']} images, "
            f"first epoch excluded):")
        say(f"  {e2e['per_epoch_s']:.3f} s/epoch (median; min {e2e['min_s']:.3f}, max {e2e['max_s']:.3f}) -> "
            f"{e2e['images_s']:,.0f} images/s; first epoch {e2e['first_s']:.3f} s; whole call {e2e['total_s']:.1f} s")
    lo, hi = raw["spread"]
    say(f"raw step loop, recorder off (median of blocks): {raw['images_s']:,.0f} images/s ({raw['step_ms']:.1f} ms/step; "
        f"blocks {lo:,.0f}..{hi:,.0f})")
    if e2e is not None:
        say(f"  engine end to end / raw step: {e2e['images_s'] / raw['images_s']:.2f} of the raw step's throughput")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_DATA_FILE), help="train_first20000.npz (random images when missing)")
    ap.add_argument("--skip-cpu", action="store_true", help="skip the CPU case")
    ap.add_argument("--skip-gpu", action="store_true", help="skip the GPU case even when CUDA exists")
    ap.add_argument("--skip-engine", action="store_true", help="only the raw step loop, no end-to-end engine run")
    ap.add_argument("--cpu-n", type=int, default=5000, help="images for the CPU case (default 5000)")
    ap.add_argument("--cpu-batch", type=int, default=256)
    ap.add_argument("--cpu-epochs", type=int, default=3, help="engine epochs on CPU; the first is warm-up (default 3)")
    ap.add_argument("--gpu-n", type=int, default=20000, help="images for the GPU case (default 20000)")
    ap.add_argument("--gpu-batch", type=int, default=512)
    ap.add_argument("--gpu-epochs", type=int, default=6, help="engine epochs on GPU; the first is warm-up (default 6)")
    ap.add_argument("--steps", type=int, default=8, help="steps per timed block on CPU (GPU: 4x this)")
    ap.add_argument("--repeats", type=int, default=7, help="timed blocks of the raw step (default 7)")
    ap.add_argument("--warmup-steps", type=int, default=3, help="untimed steps before the blocks (GPU: 4x this)")
    add_common_args(ap, data=False)
    args = ap.parse_args()
    t0, lines = time.perf_counter(), []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    if min(args.cpu_epochs, args.gpu_epochs) < 2:
        raise SystemExit("--cpu-epochs/--gpu-epochs must be >= 2 (the first epoch is excluded as warm-up)")
    say(hardware())

    if not args.skip_cpu:
        device = torch.device("cpu")
        ds, desc = dataset(Path(args.data), args.cpu_n)
        make = functools.partial(tiny_cnn, 10)
        e2e = None if args.skip_engine else engine_end_to_end(
            make, ds, device, epochs=args.cpu_epochs, batch=args.cpu_batch, lr=0.1, precision="fp32")
        raw = raw_step_loop(make, ds, device, batch=args.cpu_batch, lr=0.1, dtype=None, steps=args.steps,
                            repeats=args.repeats, warmup=args.warmup_steps)
        report(f"tiny CNN, batch {args.cpu_batch}, fp32", device_name(device), desc, e2e, raw, say)

    if args.skip_gpu:
        say("\nGPU case skipped (--skip-gpu)")
    elif not torch.cuda.is_available():
        say("\nno CUDA device: GPU case (CIFAR ResNet-18, 20,000 images, batch 512, bf16) skipped")
    else:
        device = torch.device("cuda")
        ds, desc = dataset(Path(args.data), args.gpu_n)
        make = functools.partial(resnet18_cifar, 10)
        e2e = None if args.skip_engine else engine_end_to_end(
            make, ds, device, epochs=args.gpu_epochs, batch=args.gpu_batch, lr=0.2, precision="bf16")
        raw = raw_step_loop(make, ds, device, batch=args.gpu_batch, lr=0.2, dtype=torch.bfloat16, steps=4 * args.steps,
                            repeats=args.repeats, warmup=4 * args.warmup_steps)
        report(f"CIFAR ResNet-18, batch {args.gpu_batch}, bf16", device_name(device), desc, e2e, raw, say)

    page, _ = write_page(__file__, "\n".join(["# Training throughput", "", "```", *lines, "```"]), {"lines": lines},
                         pages_dir=args.pages_dir, wall_s=time.perf_counter() - t0)
    print(f"page: {page}")


if __name__ == "__main__":
    main()
