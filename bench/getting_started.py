"""How long each step of the getting-started guide takes, and the demo's first screen.

    python bench/getting_started.py

Runs, as a new user would, `gwa-diag demo`, then the guide's own-folder steps on the bundled
images written out as an image folder, each the `gwa-diag` command itself timed from start
to exit. Also writes docs/benchmarks/demo-first-screen.txt and replaces the first screen
between the README's first-screen markers. The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from PIL import Image

from harness import REPO, add_common_args, markdown_table, splice, write_page

from gwa_diag.cli.app import READY_MESSAGE
from gwa_diag.cli.demo import DEMO_EPOCHS
from gwa_diag.cli.summary import DETAILS_HEADING
from gwa_diag.store import atomic_write_bytes
from gwa_diag.training.data import sample_data

FIRST_SCREEN = "demo-first-screen.txt"
#: The step table alone, for the guide to include (a .txt snippet, not a page of its own).
STEPS = "getting-started-steps.txt"
SCREEN_START, SCREEN_END = "<!-- first-screen:start -->", "<!-- first-screen:end -->"
AUDIT_N = 200


def gwa(*args: str, cwd: Path) -> tuple[str, float]:
    """Run `gwa-diag ARGS` in ``cwd``; its standard output and its seconds from start to exit."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gwa_diag", *args], cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"gwa-diag {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout, seconds


def app_ready_seconds(run: str, cwd: Path, port: int) -> float:
    """Seconds from `gwa-diag app RUN` to the line saying it served its first page."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gwa_diag", "app", run, "--port", str(port), "--no-browser"],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if READY_MESSAGE in line:
                return time.perf_counter() - t0
        raise SystemExit(f"gwa-diag app exited ({proc.wait()}) before it was ready")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def write_folder(root: Path) -> pd.Series:
    """The bundled training images as an image folder (given labels as sub-folders); returns
    the clean label of each file's sample id, as the folder numbers them (sorted paths)."""
    train, _ = sample_data()
    names = train.class_names
    files = []
    for i, (label, clean, sid) in enumerate(zip(train.labels, train.clean_labels, train.sample_ids)):
        path = root / names[int(label)] / f"{int(sid):05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(train.image(i)).save(path)
        files.append((str(path.relative_to(root)), int(clean)))
    files.sort()
    return pd.Series([c for _, c in files], name="clean_label")


def first_screen(demo_output: str) -> str:
    """The demo's first screen: what it prints after training, before the details heading."""
    head = demo_output.split(DETAILS_HEADING, 1)[0]
    return head.strip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(ap, data=False)
    ap.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help="epochs of each training (default: the demo's)")
    ap.add_argument("--readme", type=Path, default=REPO / "README.md",
                    help="README whose first screen is replaced (default: the repository's)")
    ap.add_argument("--port", type=int, default=8765, help="port the app is started on (default 8765)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    steps: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="gwa-getting-started-") as tmp:
        work = Path(tmp)
        demo_out, s = gwa("demo", "--quiet", "--epochs", str(args.epochs), "--out", "runs/demo", cwd=work)
        steps.append(("the demo: train, record, rank, score, report", "gwa-diag demo", s))
        truth = write_folder(work / "my_images")
        train = ["train", "--data", "folder", "--data-path", "my_images", "--model", "tiny",
                 "--epochs", str(args.epochs), "--quiet", "--out", "runs/mine"]
        _, s = gwa(*train, cwd=work)
        steps.append(("train and record on the folder", "gwa-diag " + " ".join(train), s))
        for what, cmd in [("rank", ["rank", "runs/mine"]), ("report", ["report", "runs/mine"]),
                          (f"draw {AUDIT_N} labels to verify", ["audit", "runs/mine", "--n", str(AUDIT_N), "--seed", "0"])]:
            _, s = gwa(*cmd, cwd=work)
            steps.append((what, "gwa-diag " + " ".join(cmd), s))
        sheet = pd.read_csv(work / "runs/mine/audit/sheet.csv")
        sheet["verified_label"] = truth.loc[sheet["sample_id"]].to_numpy()
        sheet.to_csv(work / "answers.csv", index=False)
        for what, cmd in [("read the answers: the count and its interval", ["audit", "runs/mine", "--answers", "answers.csv"]),
                          ("corrected labels", ["labels", "runs/mine", "--out", "fixed.csv", "--auto", "drop"])]:
            _, s = gwa(*cmd, cwd=work)
            steps.append((what, "gwa-diag " + " ".join(cmd), s))
        steps.append(("the app, until its first page is served", "gwa-diag app runs/mine",
                      app_ready_seconds("runs/mine", work, args.port)))

    screen = first_screen(demo_out)
    table = markdown_table(["step", "command", "seconds"], [[w, f"`{c}`", f"{s:.1f}"] for w, c, s in steps], "llr")
    markdown = "\n".join([
        "# Getting started, timed", "",
        "Each step of the Getting started guide as a new user runs it: the bundled "
        "2,500 CIFAR-10 images with their CIFAR-10-N *worst* labels, written out as an image folder, "
        f"and the tiny CNN for {args.epochs} epochs. Seconds from the command's start to its exit "
        "(the app: to the line saying its first page was served).", "",
        *table, "", "The demo's whole output:", "", "```", demo_out.strip("\n"), "```", ""])
    numbers = {"steps": [{"step": w, "command": c, "seconds": round(s, 2)} for w, c, s in steps],
               "first_screen": screen}
    args.pages_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.pages_dir / FIRST_SCREEN, screen.encode())
    atomic_write_bytes(args.pages_dir / STEPS, ("\n".join(table) + "\n").encode())
    page, _ = write_page(__file__, markdown, numbers, pages_dir=args.pages_dir,
                         wall_s=time.perf_counter() - t_start)
    spliced = splice(args.readme, SCREEN_START, SCREEN_END, f"```\n{screen}```\n")
    print("\n".join(table))
    print(f"\npage: {page}; first screen: {args.pages_dir / FIRST_SCREEN}"
          + (f"; README first screen replaced ({args.readme})" if spliced else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
