"""``gwa-diag train``: build the data from the command-line options, train with the engine
and record; print where the run and the selected weights are.

The data options are defined here; the training options are built from the engine's
:class:`~gwa_diag.training.config.TrainConfig` fields (their defaults, help, minimums and
valid names), so they are written once. Torch is imported only inside the functions that
train, so ``gwa-diag --help`` and the analysis commands stay fast.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, Sequence, get_origin, get_type_hints

from gwa_diag.checks import InputError, NoiseKind, values
from gwa_diag.cli.common import int_in_range
from gwa_diag.store import file_sha256
from gwa_diag.training.config import TrainConfig  # no torch: building the parser stays fast

__all__ = ["register", "load_train_data", "interrupted_line"]

# --noise-kind / --noise-seed when --noise-rate comes without them (with_noise's own defaults,
# written here because importing gwa_diag.training.data would load torch with the parser).
NOISE_KIND: NoiseKind = "symmetric"
NOISE_SEED = 0
# What each noise kind does, for --noise-kind's help (the default is marked from NOISE_KIND).
_NOISE_KIND_HELP = {"symmetric": "", "pair": " (class c -> c+1)"}


def _add_train_args(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--data", default="sample",
                      choices=["sample", "cifar10", "npz", "folder", "manifest", "hf"],
                      help="sample: the bundled CIFAR-10-N subset (offline); cifar10: torchvision CIFAR-10 "
                           "under --data-path; npz: an .npz with images/labels; folder: one sub-folder per class; "
                           "manifest: a CSV with columns path,label[,split]; hf: a Hugging Face dataset (a save_to_disk "
                           "folder or a cached Hub name; pip install \"gwa-diag[hf]\")")
    data.add_argument("--data-path", type=Path,
                      help="CIFAR-10 root, .npz file, image folder, manifest CSV, or (--data hf) a save_to_disk "
                           "folder or Hub dataset name")
    data.add_argument("--split", help="--data hf: the split to train on (needed for a DatasetDict or a Hub name)")
    data.add_argument("--image-column", metavar="COLUMN",
                      help="--data hf: the image column (default: the one datasets.Image column)")
    data.add_argument("--label-column", metavar="COLUMN",
                      help="--data hf: the label column (default: the one datasets.ClassLabel column)")
    data.add_argument("--id-column", metavar="COLUMN",
                      help="--data hf: a column of unique whole-number sample ids (default: the row index)")
    data.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10 into --data-path")
    data.add_argument("--label-set", help="CIFAR-10-N label set: clean, aggre, worst, random1, random2, random3")
    data.add_argument("--cifar10n", type=Path, help="path to CIFAR-10_human.pt (for --label-set with cifar10/npz data)")
    data.add_argument("--labels", type=Path, help="label file to train on instead (CSV sample_id,label or .npy)")
    data.add_argument("--exclude", type=Path, metavar="FILE",
                      help="leave these samples out of training (CSV with a sample_id column, e.g. the "
                           "FILE.excluded.csv of gwa-diag labels, or an .npy of ids)")
    data.add_argument("--noise-rate", type=float, default=0.0, help="inject synthetic label noise at this rate")
    # None (not the real defaults) so a --noise-kind/--noise-seed without --noise-rate can be
    # refused: it would otherwise be ignored and the user believe noise was injected.
    data.add_argument("--noise-kind", choices=list(values(NoiseKind)),
                      help="with --noise-rate: " + " or ".join(
                          f"{kind}{' (default)' if kind == NOISE_KIND else ''}{_NOISE_KIND_HELP[kind]}"
                          for kind in values(NoiseKind)))
    data.add_argument("--noise-seed", type=int, help=f"with --noise-rate: seed of the flips (default {NOISE_SEED})")
    data.add_argument("--eval-data", type=Path,
                      help="evaluation set (accuracy each epoch): an .npz, an image folder, a manifest CSV or a "
                           "Hugging Face save_to_disk folder")
    data.add_argument("--image-size", type=int_in_range(1), help="resize folder, manifest and hf images to this size")
    model = p.add_argument_group("model and optimisation")
    model.add_argument("--model", default="tiny", help="tiny, resnet18_cifar, or tv:<torchvision model name>")
    model.add_argument("--weights", metavar="DEFAULT|FILE",
                       help="fine-tune from these weights: DEFAULT (torchvision's pretrained, tv: models; "
                            "downloads) or a state-dict FILE of --model; implies --mode finetune")
    _add_config_args(model, "model and optimisation")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="run directory (default runs/<time>-<4 hex digits>)")
    out.add_argument("--resume", action="store_true", help="continue the killed run in --out from its checkpoint")
    _add_config_args(out, "output")


def _add_config_args(group: Any, name: str) -> None:
    """One option per :class:`~gwa_diag.training.config.TrainConfig` field of group ``name``:
    the default, help, minimum and valid names come from the field, so they are never
    restated here. ``dest`` is the field's name, so :func:`_config` passes the parsed
    values on as they are."""
    hints = get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        meta = f.metadata
        if not meta.get("cli", True) or meta.get("group", "model and optimisation") != name:
            continue
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        options: dict[str, Any] = {"dest": f.name, "default": f.default}
        if f.name == "mode":
            # None tells "not given" apart from an explicit --mode scratch: --weights then picks
            # finetune (_settle_weights), else _config leaves TrainConfig's default.
            options["default"] = None
        if meta.get("help"):
            options["help"] = meta["help"]
        if kind is bool:
            # A switch away from the default: --no-augment sets augment False, --quiet progress False.
            options.update(action="store_const", const=not f.default)
        elif get_origin(kind) is Literal:
            options["choices"] = list(values(kind))
        else:
            options["metavar"] = flag[2:].upper().replace("-", "_")
            if kind is int:
                options["type"] = int_in_range(meta["minimum"]) if meta.get("minimum") is not None else int
            elif kind is float:
                options["type"] = float
        group.add_argument(flag, **options)


def _check_data_options(args: argparse.Namespace) -> None:
    """Refuse data options that cannot go together, before any data is read.

    Every option here would otherwise be silently ignored or overridden, and the run would
    train on other data or labels than the user asked for.

    Raises:
        ValueError: naming the options and what to pass instead.
    """
    if args.data == "sample" and args.data_path is not None:
        # The default --data is sample: `--data-path my.npz` alone would train on the bundled subset.
        raise InputError("--data-path is not used with --data sample (the bundled subset): pass --data npz, "
                         "folder, manifest or cifar10 to train on your data, or drop --data-path")
    if args.data != "sample" and args.data_path is None:
        need = {"cifar10": "the folder that holds or will hold cifar-10-batches-py",
                "npz": "a FILE.npz", "folder": "a folder with one sub-folder per class",
                "manifest": "a FILE.csv with columns path,label",
                "hf": "a folder written by save_to_disk, or a Hub dataset name in the local cache"}[args.data]
        raise InputError(f"--data {args.data} needs --data-path ({need})")
    if args.download and args.data != "cifar10":
        raise InputError("--download fetches CIFAR-10 only (--data cifar10); drop it for this data")
    if args.image_size is not None and args.data not in ("folder", "manifest", "hf"):
        raise InputError("--image-size resizes image folders and manifests only, and Hugging Face datasets "
                         "(--data folder, manifest or hf); drop it for this data")
    hf_only = [f"--{k.replace('_', '-')}" for k in ("split", "image_column", "label_column", "id_column")
               if getattr(args, k, None) is not None]
    if hf_only and args.data != "hf":
        raise InputError(f"{', '.join(hf_only)} {'is' if len(hf_only) == 1 else 'are'} read with --data hf only "
                         "(a Hugging Face dataset): drop it for this data, or pass --data hf")
    if args.label_set and args.data in ("folder", "manifest", "hf"):
        # CIFAR-10-N labels are keyed by CIFAR-10 training index, not by a folder's file order.
        raise InputError(f"--label-set (CIFAR-10-N labels) needs the CIFAR-10 images: use --data cifar10 or "
                         f"npz, or train a {'Hugging Face dataset' if args.data == 'hf' else args.data} on your "
                         "own labels with --labels FILE")
    if args.label_set and args.labels is not None:
        raise InputError("--label-set and --labels both choose the labels to train on: pass one of them")
    if args.cifar10n is not None and args.data == "sample":
        raise InputError("--data sample ships its own CIFAR-10-N label sets: drop --cifar10n and pick one "
                         "with --label-set")
    if args.cifar10n is not None and not args.label_set:
        raise InputError("--cifar10n is read only with --label-set: add --label-set worst (or clean, aggre, "
                         "random1, random2, random3), or drop --cifar10n")
    if args.label_set and args.data != "sample" and args.cifar10n is None:
        raise InputError("--label-set needs --cifar10n PATH/TO/CIFAR-10_human.pt (the official CIFAR-10-N "
                         "label file)")
    if not args.noise_rate and (args.noise_kind is not None or args.noise_seed is not None):
        given = [f for f, v in (("--noise-kind", args.noise_kind), ("--noise-seed", args.noise_seed)) if v is not None]
        verb, them = ("apply", "them") if len(given) > 1 else ("applies", "it")
        raise InputError(f"{' and '.join(given)} only {verb} with --noise-rate: add --noise-rate 0.2 (say) to "
                         f"inject synthetic noise, or drop {them}")
    if args.resume and args.out is None:
        raise InputError("--resume continues an existing run: pass its directory with --out DIR")


def _check_classes(train_set: Any) -> None:
    """Refuse training labels with fewer than two classes: the head's softmax then has
    nothing to separate, every loss is zero after a few steps and alignment means nothing."""
    import numpy as np

    present = np.unique(np.asarray(train_set.labels))
    if len(present) >= 2:
        return
    names = list(getattr(train_set, "class_names", []) or [])
    which = (f"class {names[int(present[0])]!r}" if len(present) and int(present[0]) < len(names)
             else f"label {int(present[0])}" if len(present) else "no label")
    raise InputError(
        f"every one of the {len(train_set)} training samples has {which}: a classifier needs at least "
        "two classes. Check --data-path (an image folder needs one sub-folder with images per class; "
        "an .npz needs labels of two or more classes) and --labels"
    )


def load_train_data(args: argparse.Namespace) -> tuple[Any, Any | None]:
    """Build (train_set, eval_set) from the CLI data options.

    Raises:
        ValueError: options that cannot go together, or data that cannot be trained on.
    """
    from gwa_diag.training import data
    _check_data_options(args)
    eval_set = None
    if args.data == "sample":
        train_set, eval_set = data.sample_data(label_set=args.label_set or "worst")
    elif args.data == "cifar10":
        train_set = data.cifar10(args.data_path, train=True, download=args.download)
        eval_set = data.cifar10(args.data_path, train=False, download=args.download)
    elif args.data == "npz":
        train_set = data.load_npz(args.data_path)
    elif args.data == "hf":
        # datasets is imported here only: without it this is an InputError naming the extra to install.
        train_set = data.HFImageDataset(str(args.data_path), split=args.split, image_column=args.image_column,
                                        label_column=args.label_column, id_column=args.id_column,
                                        image_size=args.image_size)
    elif args.data == "manifest":
        # With a split column: the train rows, and the val (else test) rows to evaluate on.
        train_set, eval_set = data.load_manifest(args.data_path, image_size=args.image_size,
                                                 with_eval=args.eval_data is None)
    else:
        train_set = data.ImageFolderDataset(args.data_path, image_size=args.image_size)
    if args.label_set and args.data != "sample":
        # with_cifar10n/with_label_file record the label source in the dataset spec, so the
        # app and the analysis can rebuild the same dataset from run.json.
        train_set = data.with_cifar10n(train_set, args.cifar10n, label_set=args.label_set)
    if args.labels is not None:
        train_set = data.with_label_file(train_set, args.labels)
    if args.exclude is not None:
        # A dataset step (recorded in the spec), so load_dataset(run.json's spec) and the
        # --resume data checks see the same samples.
        train_set = data.without_samples(train_set, args.exclude)
    # Before noise: flipped labels would hide a dataset that has one class only.
    _check_classes(train_set)
    if args.noise_rate:
        kind = args.noise_kind if args.noise_kind is not None else NOISE_KIND
        seed = args.noise_seed if args.noise_seed is not None else NOISE_SEED
        train_set = data.with_noise(train_set, rate=args.noise_rate, kind=kind, seed=seed)
    if args.eval_data is not None:
        eval_set = data.load_eval_set(args.eval_data, class_names=train_set.class_names, image_size=args.image_size)
    return train_set, eval_set


def _config(args: argparse.Namespace) -> Any:
    """The engine's config from the parsed options (each option's dest is its field; one
    left at None, i.e. not given, keeps TrainConfig's default)."""
    return TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                          if getattr(args, f.name, None) is not None})


def _settle_weights(args: argparse.Namespace, rank: int) -> str | None:
    """The weights to load (``args.weights``, or None) and the mode they imply, settled
    before any data is read or anything written.

    Loaded weights make a fine-tuning run: without --mode, the mode becomes finetune (an
    explicit --mode scratch stays), and a resumed run keeps its own mode. A resumed run with
    a checkpoint takes its weights from the checkpoint, so --weights is not read again; one
    that stopped before its first checkpoint starts over, from the same weights.
    """
    from gwa_diag.training.models import check_weights

    run: dict[str, Any] = {}
    checkpoint = False
    if args.resume and args.out is not None and (Path(args.out) / "run.json").is_file():
        import json

        try:
            run = json.loads((Path(args.out) / "run.json").read_text())
        except (OSError, ValueError):
            pass  # the engine's resume checks say what is wrong with the run
        run = run if isinstance(run, dict) else {}
        checkpoint = (Path(args.out) / "checkpoints" / "last.pt").is_file()
    stored = run.get("weights") if isinstance(run.get("weights"), dict) else None
    load = None if checkpoint else args.weights
    if load is not None:
        check_weights(args.model, load)
    elif stored and not checkpoint:
        again = stored.get("source") if stored.get("source") == "DEFAULT" else stored.get("file")
        raise InputError(f"{args.out} started from loaded weights but stopped before its first checkpoint, so it "
                         f"starts over: pass them again, --weights {again}")
    if args.mode is None and isinstance(run.get("config"), dict) and run["config"].get("mode"):
        args.mode = run["config"]["mode"]  # resuming: the run's own early-stopping rule
    elif args.mode is None and args.weights is not None:
        args.mode = "finetune"
        if rank == 0:
            print("loaded weights: GWA early stopping uses --mode finetune (pass --mode scratch for the "
                  "from-scratch rule)")
    return load


def _weights_record(model_name: str, weights: str) -> dict[str, str]:
    """What run.json says was loaded: torchvision's weights by name, or the file and its hash."""
    from gwa_diag.training.models import PRETRAINED

    if weights == PRETRAINED:
        import torchvision.models as tvm

        return {"source": PRETRAINED, "torchvision": str(tvm.get_model_weights(model_name[len("tv:"):]).DEFAULT)}
    return {"source": "file", "file": str(Path(weights).resolve()), "sha256": file_sha256(weights)}


def _label_records(args: argparse.Namespace, train_set: Any) -> dict[str, Any]:
    """run.json's ``label_provenance`` (the sidecar a ``gwa-diag labels`` export wrote next
    to --labels, with the label file's path and SHA-256) and ``exclusion`` (path, SHA-256 and
    count of --exclude), so the new run says which reviewed run its labels came from."""
    from gwa_diag.analysis.corrected import provenance_path, read_provenance

    records: dict[str, Any] = {}
    if args.labels is not None and provenance_path(args.labels).is_file():
        label_file = Path(args.labels).expanduser().resolve()
        sha = file_sha256(label_file)
        provenance = read_provenance(provenance_path(label_file))
        records["label_provenance"] = {
            **provenance, "label_file": str(label_file), "label_file_sha256": sha,
            # False when the file was edited after the export: the counts then describe another file.
            "label_file_matches": (provenance.get("sha256") or {}).get("labels") == sha,
        }
    step = next((s for s in reversed(train_set.spec.get("steps", [])) if s.get("op") == "exclude"), None)
    if step is not None:
        records["exclusion"] = {k: step[k] for k in ("path", "sha256", "count")}
    return records


def _init_distributed(args: argparse.Namespace) -> int:
    """Under torchrun (WORLD_SIZE > 1): join the process group; returns this rank."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    if args.out is None:
        raise InputError("under torchrun pass --out: every rank must write into the same run directory")
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
    from gwa_diag.training.models import build_model
    from gwa_diag.training.engine import train

    rank = _init_distributed(args)
    if rank != 0:
        args.progress = False  # one progress bar, rank 0's
    weights = _settle_weights(args, rank)
    train_set, eval_set = load_train_data(args)
    # The default name is unique even for two runs started in the same second.
    out = args.out = args.out or Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    import torch

    torch.manual_seed(args.seed)  # the model's initial weights are part of what --seed fixes
    model = build_model(args.model, train_set.num_classes, weights=weights)
    meta: dict[str, Any] = {"model_name": args.model}
    meta.update(_label_records(args, train_set))
    if weights is not None:
        meta["weights"] = _weights_record(args.model, weights)  # a resumed run keeps its own record
    t0 = time.perf_counter()
    result = train(model, train_set, out, config=_config(args), eval_set=eval_set, resume=args.resume,
                   meta=meta)
    sel = result.selected
    if rank != 0:
        return 0
    elapsed = time.perf_counter() - t0
    # What a newcomer needs first (counts, top suspects, the app command); the rest follows.
    from gwa_diag.analysis.pipeline import analyze
    from gwa_diag.cli.summary import DETAILS_HEADING, first_screen
    from gwa_diag.store import AnalysisError

    try:
        print(first_screen(analyze(out), out))
    except (AnalysisError, InputError) as e:
        print(f"no analysis yet: {e}")
    print(f"\n{DETAILS_HEADING}")
    print(f"run directory: {out}  ({elapsed:.1f} s)")
    print(_selection_line(Path(out), sel.epoch, sel.reason))
    from gwa_diag.analysis.stopping import stopping

    print(_phase_line(out))
    # A choice on a rising or flat GWA curve prints as confidently as a real peak: qualify it.
    # These lines also say which weights to use when the model memorised.
    for line in stopping(out, selection=sel).lines():
        print(line)
    q = shlex.quote(str(out))
    print(f"next: gwa-diag rank {q}   |   gwa-diag report {q}   |   gwa-diag app {q}")
    return 0


def _phase_line(out: str | Path) -> str:
    """Whether, and from which epoch, the model memorised its labels
    (:func:`gwa_diag.analysis.phase.training_phase`; duckdb and pandas, no torch)."""
    from gwa_diag.analysis.phase import training_phase

    return f"training phase: {training_phase(out).reason}"


def _selection_line(out: Path, epoch: int | None, reason: str) -> str:
    """What the early-stopping rule chose and where weights are: only files that exist are
    named, and a selected.pt left from another epoch is not passed off as this one's."""
    weights, last = out / "checkpoints" / "selected.pt", out / "checkpoints" / "last.pt"
    fallback = f"the last epoch's weights are in {last}" if last.exists() else "no weights were saved"
    if epoch is None:
        return f"GWA selected no epoch ({reason}); {fallback}"
    saved = _checkpoint_epoch(weights)
    if saved == epoch:
        return f"GWA-selected epoch: {epoch} ({reason}); weights in {weights}"
    why = "checkpoints/selected.pt is missing" if saved is None else f"checkpoints/selected.pt holds epoch {saved}"
    return f"GWA-selected epoch: {epoch} ({reason}); its weights were not kept ({why}): {fallback}"


def _checkpoint_epoch(path: Path) -> int | None:
    """The ``epoch`` stored in a checkpoint written by the engine; None if it cannot be read."""
    if not path.is_file():
        return None
    import torch

    try:
        # mmap: reads the small epoch entry without loading every tensor of a large model.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"])
    except Exception:  # noqa: BLE001 - any unreadable file is "not kept" for this message
        return None


def register(subparsers: Any) -> None:
    """Add ``train`` to the main CLI's subparsers."""
    p = subparsers.add_parser("train", help="train a model and record per-sample alignment")
    _add_train_args(p)
    p.set_defaults(func=_cmd_train)


def interrupted_line(args: argparse.Namespace, argv: Sequence[str] | None) -> str:
    """One line after Ctrl-C: for ``train``, what was kept and the exact command to go on."""
    out = getattr(args, "out", None)
    if args.command != "train" or out is None:
        return "interrupted"
    command = list(argv if argv is not None else sys.argv[1:])
    if not (Path(out) / "run.json").exists():
        # Stopped before the run directory was written: --resume would be refused.
        again = shlex.join(["gwa-diag", *(a for a in command if a != "--resume")])
        return f"interrupted before {out} held a run, so there is nothing to resume: start again with {again}"
    if not getattr(args, "resume", False):
        command.append("--resume")
    if not any(a == "--out" or a.startswith("--out=") for a in command):
        command += ["--out", str(out)]  # the default name chosen for this run
    return (f"interrupted; the epochs recorded so far are kept in {out}: continue with "
            f"{shlex.join(['gwa-diag', *command])}")
