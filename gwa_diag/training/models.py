"""Model presets whose last layer is an ``nn.Linear`` classifier head.

Gradient-weight alignment is measured on the classifier head, so every preset here ends in a
plain ``nn.Linear`` that :func:`find_head` can locate:

* ``"tiny"``            :func:`tiny_cnn`, a small conv net that trains quickly on a CPU;
* ``"resnet18_cifar"``  :func:`resnet18_cifar`, the usual ResNet-18 for 32x32 images;
* ``"tv:<name>"``       :func:`torchvision_model`, any torchvision classification model.

Use :func:`build_model` to pick one by name (``weights=`` starts it from torchvision's
pretrained weights or a state-dict file, for fine-tuning), and :func:`check_num_classes`
before training to catch a head whose size does not match the dataset.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gwa_diag.recorder import find_linear_head
from gwa_diag.checks import InputError, MissingFileError

__all__ = [
    "PRESETS",
    "PRETRAINED",
    "build_model",
    "check_num_classes",
    "check_weights",
    "find_head",
    "resnet18_cifar",
    "tiny_cnn",
    "torchvision_model",
    "torchvision_model_names",
]

#: Names accepted by :func:`build_model` (``"tv:<name>"`` stands for any torchvision model).
PRESETS: tuple[str, ...] = ("tiny", "resnet18_cifar", "tv:<torchvision model name>")


def _check_num_classes_arg(num_classes: Any) -> int:
    # bool is an int subclass; True classes is always a mistake.
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(
            f"num_classes must be an int, got {type(num_classes).__name__}: pass the number "
            "of classes in the dataset, e.g. dataset.num_classes"
        )
    if num_classes < 1:
        raise InputError(f"num_classes must be at least 1, got {num_classes}")
    return num_classes


def _conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    # bias=False: the BatchNorm that follows has its own shift, a conv bias would be redundant.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class TinyCNN(nn.Module):
    """A 2x2-patch stem, three conv-bn-relu stages, global average pool, linear ``head``.

    Shapes for a 32x32 input and ``width=w``: [B,3,32,32] -stem-> [B,w,16,16]
    -conv-> [B,w,16,16] -pool-> [B,w,8,8] -conv-> [B,2w,8,8] -pool-> [B,2w,4,4]
    -conv-> [B,4w,4,4] -avg-> [B,4w] -head-> [B,num_classes].
    Global average pooling makes it accept any input size of at least 8x8.
    """

    def __init__(self, num_classes: int, *, in_channels: int = 3, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            # A stride-2 2x2 "patchify" stem: no conv runs at full 32x32 resolution, which
            # would otherwise cost most of the compute for little accuracy on CIFAR.
            nn.Conv2d(in_channels, w, kernel_size=2, stride=2, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            _conv_bn_relu(w, w),
            nn.MaxPool2d(2),
            _conv_bn_relu(w, 2 * w),
            nn.MaxPool2d(2),
            _conv_bn_relu(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * w, num_classes)
        # channels_last weights make oneDNN pick its NHWC kernels on CPU (about 1.2x faster
        # training steps on 2 cores); any input layout still works, and so does CUDA.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def tiny_cnn(num_classes: int, *, in_channels: int = 3, width: int = 32) -> nn.Module:
    """A small conv net for 32x32 images that trains fast on a few CPU cores.

    About 100k parameters at ``width=32``: small enough for the CPU benchmarks and tests
    (its speed and accuracy on CIFAR-10: ``bench/train_speed.py``, docs/benchmarks).

    Args:
        num_classes: number of outputs of the final ``nn.Linear`` (attribute ``head``).
        in_channels: channels of the input images (3 for RGB).
        width: channels of the first stages; later stages use ``2*width`` and ``4*width``.

    Returns:
        A :class:`TinyCNN` with its classifier at ``model.head``.
    """
    _check_num_classes_arg(num_classes)
    for name, value in (("in_channels", in_channels), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    return TinyCNN(num_classes, in_channels=in_channels, width=width)


def resnet18_cifar(num_classes: int) -> nn.Module:
    """ResNet-18 for 32x32 images (the common CIFAR variant).

    Differs from the ImageNet ResNet-18 only in the stem: a 3x3 stride-1 convolution and no
    max-pool, so that a 32x32 image is not shrunk to 8x8 before the first block. BasicBlocks
    [2, 2, 2, 2], adaptive average pooling, and a final ``nn.Linear`` at ``model.fc``.

    Args:
        num_classes: number of outputs of ``model.fc``.
    """
    _check_num_classes_arg(num_classes)
    from torchvision.models import resnet18

    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def torchvision_model_names() -> list[str]:
    """Names of the torchvision classification models :func:`torchvision_model` accepts."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def _replace_linear(parent: nn.Module, attr: str | int, num_classes: int) -> bool:
    """Swap ``parent[attr]`` (or ``parent.attr``) for a fresh Linear; False if it is not one."""
    old = parent[attr] if isinstance(attr, int) else getattr(parent, attr, None)  # type: ignore[index]
    if not isinstance(old, nn.Linear):
        return False
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    if isinstance(attr, int):
        parent[attr] = new  # type: ignore[index]
    else:
        setattr(parent, attr, new)
    return True


def _replace_aux_heads(model: nn.Module, num_classes: int) -> None:
    # Auxiliary heads (inception_v3, googlenet) only matter in training mode; resize them too
    # so that their loss, if a user adds it, has the right number of classes.
    for aux_name, attr in (("AuxLogits", "fc"), ("aux1", "fc2"), ("aux2", "fc2")):
        aux = getattr(model, aux_name, None)
        if isinstance(aux, nn.Module):
            _replace_linear(aux, attr, num_classes)


def _replace_head(model: nn.Module, name: str, num_classes: int) -> None:
    _replace_aux_heads(model, num_classes)
    # Where torchvision's families keep their classifier, tried in this order: resnet `fc`,
    # a Linear `classifier`, the last layer of a Sequential `classifier` (vgg, efficientnet,
    # mobilenet, convnext), vit `heads.head`, swin `head`.
    classifier, heads = getattr(model, "classifier", None), getattr(model, "heads", None)
    places: list[tuple[nn.Module, str | int]] = [(model, "fc"), (model, "classifier")]
    if isinstance(classifier, nn.Sequential) and len(classifier) > 0:
        places.append((classifier, len(classifier) - 1))
    if isinstance(heads, nn.Module):
        places.append((heads, "head"))
    places.append((model, "head"))
    if any(_replace_linear(parent, attr, num_classes) for parent, attr in places):
        return
    raise InputError(
        f"torchvision model {name!r} does not end in an nn.Linear classifier (e.g. squeezenet "
        "classifies with a convolution), so gradient-weight alignment has no linear head to "
        "measure: choose a model with a linear classifier such as 'resnet18' or "
        "'mobilenet_v3_small'"
    )


def _check_torchvision_name(name: str) -> None:
    valid = torchvision_model_names()
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise InputError(
            f"unknown torchvision model {name!r}.{hint} Valid names: {', '.join(valid)}"
        )


def torchvision_model(name: str, num_classes: int, *, weights: Any = None) -> nn.Module:
    """Any torchvision classification model with a new ``num_classes``-way linear head.

    Args:
        name: a torchvision model name, e.g. ``"resnet50"`` (see
            :func:`torchvision_model_names`).
        num_classes: outputs of the new final ``nn.Linear``.
        weights: passed to ``torchvision.models.get_model`` (``None`` for random init,
            ``"DEFAULT"`` or a weights enum for pretrained weights, which need a download).

    The final classifier layer (``.fc``, ``.classifier[-1]``, ``.heads.head`` or ``.head``)
    is replaced by a freshly initialised ``nn.Linear`` with ``num_classes`` outputs, so
    pretrained backbones can be fine-tuned on any label set.
    """
    _check_num_classes_arg(num_classes)
    _check_torchvision_name(name)
    import torchvision.models as tvm

    model = tvm.get_model(name, weights=weights)
    _replace_head(model, name, num_classes)
    return model


# Options each preset accepts, so that a misspelt option fails with the valid list.
_PRESET_OPTIONS: dict[str, tuple[str, ...]] = {
    "tiny": ("in_channels", "width"),
    "resnet18_cifar": (),
    "tv": (),
}

#: ``weights=`` value that asks for torchvision's pretrained weights (``tv:`` models).
PRETRAINED = "DEFAULT"


def build_model(
    name: str, num_classes: int, *, weights: str | os.PathLike[str] | None = None, **kw: Any
) -> nn.Module:
    """Build a model preset by name, with random or loaded weights.

    Args:
        name: ``"tiny"``, ``"resnet18_cifar"``, or ``"tv:<torchvision name>"`` (e.g.
            ``"tv:resnet50"``).
        num_classes: outputs of the model's linear head.
        weights: ``None`` for random initial weights; ``"DEFAULT"`` for torchvision's
            pretrained weights (``tv:`` models only; downloaded into the torch hub cache on
            first use); or a local state-dict file saved from the same architecture (bare,
            or under a ``model`` or ``state_dict`` key as in gwa-diag's own checkpoints; a
            ``module.`` prefix from DistributedDataParallel is removed). The state dict is
            loaded strictly; a head with another number of outputs (ImageNet's 1000) is then
            replaced by a fresh ``num_classes``-way ``nn.Linear``, and a head that already
            has ``num_classes`` outputs is kept as loaded.
        **kw: options of the preset: ``tiny`` takes ``in_channels``/``width``; the others
            take none.

    Raises:
        InputError: an unknown preset name or option, ``"DEFAULT"`` for a model without
            pretrained weights, a weights file that is missing, unreadable or of another
            architecture (naming the mismatched keys), or a failed download.
    """
    key = "tv" if name.startswith("tv:") else name
    if key not in _PRESET_OPTIONS:
        raise InputError(
            f"unknown model {name!r}: valid names are {', '.join(PRESETS)} "
            "(e.g. 'tv:resnet50')"
        )
    valid_opts = _PRESET_OPTIONS[key]
    unknown = sorted(set(kw) - set(valid_opts))
    if unknown:
        raise InputError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}: valid options are "
            f"{', '.join(valid_opts) if valid_opts else '(none)'}"
        )
    if weights is not None:
        check_weights(name, weights)
    if key == "tiny":
        model = tiny_cnn(num_classes, **kw)
    elif key == "resnet18_cifar":
        model = resnet18_cifar(num_classes)
    else:
        tv_name = name[len("tv:"):]
        if not tv_name:
            raise InputError("model name 'tv:' lacks the torchvision model name, e.g. 'tv:resnet50'")
        if weights == PRETRAINED:
            return _pretrained_torchvision(tv_name, num_classes)
        model = torchvision_model(tv_name, num_classes)
    if weights is not None:
        _load_weights_file(model, Path(weights), name, num_classes)
    return model


def check_weights(name: str, weights: str | os.PathLike[str]) -> None:
    """Check, without reading it, that ``weights`` can be asked of model ``name``:
    ``"DEFAULT"`` for a ``tv:`` model, or else an existing file. :func:`build_model` checks
    this too; call it first to refuse before slow work (reading the data).

    Raises:
        InputError: ``"DEFAULT"`` for a model without pretrained weights, or a path that is
            missing or a directory.
    """
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(
            f"weights must be None, {PRETRAINED!r} or the path of a state-dict file, got "
            f"{type(weights).__name__}"
        )
    if weights == PRETRAINED:
        if not name.startswith("tv:"):
            raise InputError(
                f"--weights {PRETRAINED} (torchvision's pretrained weights) is for tv:<name> models; "
                f"{name!r} has none: pass --weights FILE (a state dict saved from {name}), or a "
                "torchvision model such as --model tv:resnet18"
            )
        return
    path = Path(weights)
    if not path.exists():
        raise MissingFileError(
            f"weights file {path} does not exist: pass a state-dict file saved with "
            f"torch.save(model.state_dict(), FILE), or {PRETRAINED} for torchvision's pretrained weights"
        )
    if not path.is_file():
        raise InputError(f"weights {path} is a directory, not a state-dict file: pass the file itself")


def _pretrained_torchvision(name: str, num_classes: int) -> nn.Module:
    """torchvision's DEFAULT weights for ``name``; the head fits ``num_classes`` outputs."""
    import torchvision.models as tvm

    _check_num_classes_arg(num_classes)
    _check_torchvision_name(name)
    enum = tvm.get_model_weights(name).DEFAULT
    try:
        # Downloads into the torch hub cache; get_model below then reads the cached file.
        # Apart from the download, this cannot fail for torchvision's own weights.
        enum.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is the download's
        raise InputError(
            f"the download of torchvision's pretrained weights {enum} for tv:{name} failed "
            f"({type(exc).__name__}: {_first_line(exc)}): pass a local state-dict file instead, "
            "--weights FILE (e.g. one saved with torch.save(model.state_dict(), FILE) where the "
            "download works)"
        ) from None
    # get_model with the enum, not our own build: some models take other constructor
    # arguments with pretrained weights (inception_v3's transform_input).
    model = tvm.get_model(name, weights=enum)
    try:
        keep = find_head(model).out_features == num_classes
    except TypeError:
        keep = False  # no nn.Linear head (squeezenet): _replace_head refuses it, saying why
    if not keep:
        _replace_head(model, name, num_classes)
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``: bare, or under a ``model``/``state_dict`` key."""
    try:
        # weights_only: a weights file from elsewhere must not run code when it is read.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line refusal
        raise InputError(
            f"cannot read weights file {path} as a PyTorch state dict ({type(exc).__name__}: "
            f"{_first_line(exc)}): pass a file saved with torch.save(model.state_dict(), FILE)"
        ) from None
    state = obj
    if isinstance(obj, Mapping):
        # gwa-diag's checkpoints keep the weights under "model", Lightning's under "state_dict".
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                state = obj[key]
                break
    if not (isinstance(state, Mapping) and state
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise InputError(
            f"weights file {path} holds no state dict (parameter names mapped to tensors, bare or "
            "under a 'model' or 'state_dict' key): save one with torch.save(model.state_dict(), FILE)"
        )
    if all(k.startswith("module.") for k in state):
        # Saved from a DistributedDataParallel wrapper: its keys name the wrapped model's.
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _capped(names: list[str], limit: int = 3) -> str:
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _load_weights_file(model: nn.Module, path: Path, name: str, num_classes: int) -> None:
    """Load ``path`` strictly into ``model`` (built as preset ``name``); then fit the head to
    ``num_classes``. Every mismatch is reported in one line before anything is loaded."""
    state = _read_state_dict(path)
    head = find_head(model)
    head_name = next(n for n, m in model.named_modules() if m is head)
    file_head = state.get(f"{head_name}.weight")
    if file_head is not None and file_head.ndim == 2 and file_head.shape[0] != head.out_features:
        # The file's own head size (ImageNet's 1000): load it as saved, replace it afterwards.
        _resize_head(model, file_head.shape[0])
    own = model.state_dict()
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state and state[k].shape != v.shape]
    # BatchNorm fills in a missing num_batches_tracked itself (files saved by older torch).
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    problems = [_capped(shapes)] if shapes else []
    if missing:
        problems.append(f"missing from the file: {_capped(missing)}")
    if unexpected:
        problems.append(f"not in the model: {_capped(unexpected)}")
    if problems:
        raise InputError(
            f"weights file {path} does not fit model {name!r}: {'; '.join(problems)}. Pass the "
            "--model the file was saved from (e.g. tv:resnet34 for a torchvision ResNet-34 state dict)"
        )
    model.load_state_dict(state, strict=True)
    if find_head(model).out_features != num_classes:
        _resize_head(model, num_classes)


def _resize_head(model: nn.Module, num_classes: int) -> None:
    """Replace the head (:func:`find_head`: the last ``nn.Linear``, the one the recorder
    measures) and any auxiliary heads by fresh ``num_classes``-way ``nn.Linear`` layers."""
    head = find_head(model)
    path = next(n for n, m in model.named_modules() if m is head)
    parent_name, _, attr = path.rpartition(".")
    # setattr also replaces an nn.Sequential's item: its children are named "0", "1", ...
    setattr(model.get_submodule(parent_name), attr,
            nn.Linear(head.in_features, num_classes, bias=head.bias is not None))
    _replace_aux_heads(model, num_classes)


# One definition of "the head" for presets, engine and recorder.
find_head = find_linear_head


def check_num_classes(
    model: nn.Module, num_classes: int, *, head: nn.Linear | None = None
) -> nn.Linear:
    """Check that the model's head has one output per class; return the head.

    Args:
        model: the classifier.
        num_classes: number of classes of the dataset (``dataset.num_classes``).
        head: the classifier's final linear layer; found with :func:`find_head` if omitted.

    Raises:
        ValueError: if ``head.out_features != num_classes``.
    """
    _check_num_classes_arg(num_classes)
    if head is None:
        head = find_head(model)
    if head.out_features != num_classes:
        raise InputError(
            f"the model's head has {head.out_features} outputs but the dataset has "
            f"{num_classes} classes: build the model with num_classes={num_classes} "
            f"(e.g. build_model(name, {num_classes})) or replace its final nn.Linear"
        )
    return head
