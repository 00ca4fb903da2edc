"""Step-time ratio recorder-on / recorder-off, measured in one process.

    python bench/recorder_overhead.py            # tiny CNN on CPU (+ ResNet-18 bf16 when CUDA exists)
    python bench/recorder_overhead.py --repeats 15 --steps 20

On and off blocks of the engine's own step (:func:`gwa_diag.training.engine.train_step`)
alternate on the same model and batch; the per-epoch flush is timed separately. The
targets are printed under the table, and a miss exits 1 (after the page is written). The
protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import torch

from gwa_diag.recorder import AlignmentRecorder
from gwa_diag.training.engine import train_step
from harness import add_common_args, device_name, markdown_table, new_model, sync, write_page


def on_off_blocks(step: Callable[[Any], Any], recorder: Any, device: torch.device, *, steps: int, repeats: int,
                  warmup: int) -> tuple[list[float], list[float]]:
    """(off, on): the seconds of ``repeats`` blocks of ``steps`` calls ``step(recorder)``
    with the recorder attached, and as many ``step(None)`` with it detached, after one
    untimed block of ``warmup`` each (whose rows are dropped). Which goes first alternates,
    so drift in the machine's load favours neither side."""

    def block(on: bool, n: int) -> float:
        if on:
            recorder.attach()
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            step(recorder if on else None)
        sync(device)
        seconds = time.perf_counter() - t0
        if on:
            recorder.detach()
        return seconds

    recorder.detach()
    block(False, warmup), block(True, warmup)  # allocator, cuDNN autotuning, thread pools
    recorder._clear()
    off: list[float] = []
    on: list[float] = []
    for r in range(repeats):
        for flag in ((False, True) if r % 2 == 0 else (True, False)):
            (on if flag else off).append(block(flag, steps))
    return off, on


def measure(model: torch.nn.Module, device: torch.device, *, batch: int, steps: int, repeats: int,
            dtype: torch.dtype | None, label: str) -> dict[str, Any]:
    # The run directory only exists for the recorder to write into; nothing is left behind.
    with tempfile.TemporaryDirectory(prefix="gwa-bench-") as tmp:
        return _measure(model, device, tmp + "/run", batch=batch, steps=steps, repeats=repeats, dtype=dtype, label=label)


def _measure(model: torch.nn.Module, device: torch.device, run_dir: str, *, batch: int, steps: int, repeats: int,
             dtype: torch.dtype | None, label: str) -> dict[str, Any]:
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, 32, 32), generator=g, dtype=torch.uint8).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)
    ids = torch.arange(batch)
    mean, std = torch.full((1, 3, 1, 1), 127.5, device=device), torch.full((1, 3, 1, 1), 73.9, device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    rec = AlignmentRecorder(model, run_dir)
    off, on = on_off_blocks(lambda r: train_step(model, (images, y, ids), opt, mean=mean, std=std, dtype=dtype,
                                                 scaler=scaler, recorder=r), rec, device,
                            steps=steps, repeats=repeats, warmup=steps)
    # The recorder's own work per step (hook + update) timed alone on the same batch: a
    # noise-robust bound, since on a busy machine the on/off blocks differ by more than it.
    feats: dict = {}
    handle = rec.head.register_forward_hook(lambda m, i, o: feats.update(z=i[0].detach(), out=o.detach()))
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        model((images.float() - mean) / std)
    handle.remove()
    own = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            with torch.enable_grad():
                rec._hook(rec.head, (feats["z"],), feats["out"])
            rec.update(ids, y)
        sync(device)
        own.append((time.perf_counter() - t0) / steps)
    # Flush cost for the rows recorded by the "on" blocks.
    sync(device)
    t0 = time.perf_counter()
    rec.end_epoch(0)
    flush = time.perf_counter() - t0
    rec.close()  # wait for the background write before the directory is removed
    rows = repeats * steps * batch * 2
    med_off, med_on = statistics.median(off), statistics.median(on)
    return {
        "case": label,
        "device": device_name(device),
        "step_ms_off": 1000 * med_off / steps,
        "step_ms_on": 1000 * med_on / steps,
        "ratio": med_on / med_off,
        "own_ms": 1000 * statistics.median(own),
        "bound": 1 + statistics.median(own) / (med_off / steps),
        "flush_s": flush,
        "flush_rows": rows,
    }


def markdown(results: list[dict[str, Any]], notes: list[str]) -> str:
    head = ["case", "device", "off ms/step", "on ms/step", "ratio", "recorder ms/step", "1+rec/off", "flush"]
    rows = [[r["case"], r["device"], f"{r['step_ms_off']:.2f}", f"{r['step_ms_on']:.2f}", f"{r['ratio']:.4f}",
             f"{r['own_ms']:.3f}", f"{r['bound']:.4f}", f"{r['flush_s']:.3f} s / {r['flush_rows']} rows"] for r in results]
    return "\n".join(["# Recorder overhead", "", *markdown_table(head, rows, "llrrrrrr"), "", *(f"* {n}" for n in notes), ""])


#: The largest recorder-on / recorder-off step-time ratio accepted, per device type.
TARGETS = {"cpu": 1.02, "cuda": 1.01}


def main() -> int:
    t0 = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cpu-batch", type=int, default=256)
    ap.add_argument("--gpu-batch", type=int, default=512)
    ap.add_argument("--skip-cpu", action="store_true")
    add_common_args(ap, data=False)
    args = ap.parse_args()
    results = []
    notes = ["ratio: median on-block / off-block time; 1+rec/off: the recorder's own per-step work (hook + update, "
             "timed alone) over the plain step",
             f"targets: ratio <= {TARGETS['cpu']} on CPU, <= {TARGETS['cuda']} on GPU"]
    if not args.skip_cpu:
        results.append(measure(new_model("tiny", 10, 0), torch.device("cpu"), batch=args.cpu_batch, steps=args.steps,
                               repeats=args.repeats, dtype=None, label=f"tiny CNN, batch {args.cpu_batch}, fp32"))
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True
        results.append(measure(new_model("resnet18_cifar", 10, 0), torch.device("cuda"), batch=args.gpu_batch,
                               steps=args.steps * 5, repeats=args.repeats, dtype=torch.bfloat16,
                               label=f"CIFAR ResNet-18, batch {args.gpu_batch}, bf16"))
    else:
        notes.insert(0, "no CUDA device: GPU case (CIFAR ResNet-18, batch 512, bf16) skipped")
    missed = [r["case"] for r in results if r["ratio"] > TARGETS["cpu" if r["device"].startswith("cpu") else "cuda"]]
    notes.append(f"target missed: {', '.join(missed)}" if missed else "targets met")
    text = markdown(results, notes)
    print(text)
    headline = [{"result": f"recorder on / off step time, {r['case']}", "value": f"{r['ratio']:.3f}"} for r in results]
    page, _ = write_page(__file__, text, {"cases": results, "headline": headline},
                         pages_dir=args.pages_dir, wall_s=time.perf_counter() - t0)
    print(f"page: {page}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
