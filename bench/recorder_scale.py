"""Recorder memory and flush time at ImageNet scale (1.28 million presentations per epoch).

    python bench/recorder_scale.py                     # CPU: 10 classes
    python bench/recorder_scale.py --classes 1000      # ImageNet head (slow on CPU, quick on GPU)

A linear head on random features stands in for the network. Per epoch: the memory the
recorder holds, the time ``end_epoch`` blocks the loop, and the background Parquet write.
The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn as nn

from gwa_diag.recorder import AlignmentRecorder
from gwa_diag.store import open_run
from harness import add_common_args, device_name, write_page


def _buffer_bytes(rec: AlignmentRecorder) -> int:
    return sum(t.numel() * t.element_size() for t in (*rec._ids, *rec._ints, *rec._floats))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_281_167, help="presentations per epoch (ImageNet train: 1,281,167)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_common_args(ap, data=False)
    args = ap.parse_args()
    t0, lines = time.perf_counter(), []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    device = torch.device(args.device)
    torch.manual_seed(0)
    head = nn.Linear(args.dim, args.classes).to(device)
    tmp = tempfile.TemporaryDirectory(prefix="gwa-scale-")  # removed at exit: ~50 MB per epoch at N = 1.28 M
    out = tmp.name + "/run"
    rec = AlignmentRecorder(head, out)
    z = torch.randn(args.batch, args.dim, device=device, requires_grad=False)
    y = torch.randint(0, args.classes, (args.batch,), device=device)
    say(f"device: {device_name(device)}; N = {args.n:,} per epoch, batch {args.batch}, head {args.dim} -> {args.classes}")
    say(f"{'epoch':>5s} {'held at end (MB)':>17s} {'B/sample':>9s} {'end_epoch blocks':>17s} {'write (bg)':>11s} "
          f"{'steps/s':>8s}" + (f" {'cuda peak MB':>12s}" if device.type == "cuda" else ""))
    for epoch in range(args.epochs):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        t_epoch = time.perf_counter()
        done = 0
        while done < args.n:
            b = min(args.batch, args.n - done)
            with torch.enable_grad():
                head(z[:b])
            rec.update(torch.arange(done, done + b), y[:b])
            done += b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        steps_s = (args.n / args.batch) / (time.perf_counter() - t_epoch)
        held = _buffer_bytes(rec)
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else None
        t1 = time.perf_counter()
        rec.end_epoch(epoch)
        blocked = time.perf_counter() - t1
        t2 = time.perf_counter()
        rec.flush()
        write = time.perf_counter() - t2 + blocked
        say(f"{epoch:5d} {held / 2**20:17.1f} {held / args.n:9.1f} {blocked:16.2f}s {write:10.2f}s {steps_s:8.0f}"
              + (f" {peak:12.1f}" if peak is not None else ""))
    rec.close()
    rows = len(open_run(out).epoch_scores(args.epochs - 1))
    say(f"rows in the last epoch's part: {rows:,} (expected {args.n:,})")
    say("note: 'write (bg)' is the end_epoch call plus the background write it starts; "
          "training continues during the background part")
    tmp.cleanup()

    page, _ = write_page(__file__, "\n".join(["# Recorder memory and flush at scale", "", "```", *lines, "```"]), {"lines": lines},
                         pages_dir=args.pages_dir, wall_s=time.perf_counter() - t0)
    print(f"page: {page}")


if __name__ == "__main__":
    main()
