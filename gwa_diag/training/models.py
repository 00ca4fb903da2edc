"""Model presets whose last layer is an ``nn.Linear`` classifier head.

Gradient-weight alignment is measured on the classifier head, so every preset here ends in a
plain ``nn.Linear`` that :func:`find_head` can locate:

* ``"tiny"``            :func:`tiny_cnn`, a small conv net that trains quickly on a CPU;
* ``"resnet18_cifar"``  :func:`resnet18_cifar`, the usual ResNet-18 for 32x32 images;
* ``"tv:<name>"``       :func:`torchvision_model`, any torchvision classification model.

Use :func:`build_model` to pick one by name, and :func:`check_num_classes` before training
to catch a head whose size does not match the dataset.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import nn

from gwa_diag.recorder import find_linear_head
from gwa_diag.checks import InputError

__all__ = [
    "PRESETS",
    "build_model",
    "check_num_classes",
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

    About 100k parameters at ``width=32``; a training step (forward, backward, SGD) on a
    batch of 256 32x32 images runs at about 2,000 images/s on 2 CPU cores, and six epochs
    on 20,000 CIFAR-10 images (crop+flip, one-cycle SGD) reach about 68% test accuracy.

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
    old = parent[attr] if isinstance(attr, int) else getattr(parent, attr)  # type: ignore[index]
    if not isinstance(old, nn.Linear):
        return False
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    if isinstance(attr, int):
        parent[attr] = new  # type: ignore[index]
    else:
        setattr(parent, attr, new)
    return True


def _replace_head(model: nn.Module, name: str, num_classes: int) -> None:
    # Auxiliary heads (inception_v3, googlenet) only matter in training mode; resize them too
    # so that their loss, if a user adds it, has the right number of classes.
    aux = getattr(model, "AuxLogits", None)
    if isinstance(aux, nn.Module) and isinstance(getattr(aux, "fc", None), nn.Linear):
        _replace_linear(aux, "fc", num_classes)
    for aux_name in ("aux1", "aux2"):
        aux = getattr(model, aux_name, None)
        if isinstance(aux, nn.Module) and isinstance(getattr(aux, "fc2", None), nn.Linear):
            _replace_linear(aux, "fc2", num_classes)

    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        _replace_linear(model, "fc", num_classes)
        return
    classifier = getattr(model, "classifier", None)
    if isinstance(classifier, nn.Linear):
        _replace_linear(model, "classifier", num_classes)
        return
    if isinstance(classifier, nn.Sequential) and len(classifier) > 0:
        if _replace_linear(classifier, len(classifier) - 1, num_classes):
            return
    heads = getattr(model, "heads", None)
    if isinstance(heads, nn.Module) and isinstance(getattr(heads, "head", None), nn.Linear):
        _replace_linear(heads, "head", num_classes)
        return
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        _replace_linear(model, "head", num_classes)
        return
    raise InputError(
        f"torchvision model {name!r} does not end in an nn.Linear classifier (e.g. squeezenet "
        "classifies with a convolution), so gradient-weight alignment has no linear head to "
        "measure: choose a model with a linear classifier such as 'resnet18' or "
        "'mobilenet_v3_small'"
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
    valid = torchvision_model_names()
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise InputError(
            f"unknown torchvision model {name!r}.{hint} Valid names: {', '.join(valid)}"
        )
    import torchvision.models as tvm

    model = tvm.get_model(name, weights=weights)
    _replace_head(model, name, num_classes)
    return model


# Options each preset accepts, so that a misspelt option fails with the valid list.
_PRESET_OPTIONS: dict[str, tuple[str, ...]] = {
    "tiny": ("in_channels", "width"),
    "resnet18_cifar": (),
    "tv": ("weights",),
}


def build_model(name: str, num_classes: int, **kw: Any) -> nn.Module:
    """Build a model preset by name.

    Args:
        name: ``"tiny"``, ``"resnet18_cifar"``, or ``"tv:<torchvision name>"`` (e.g.
            ``"tv:resnet50"``).
        num_classes: outputs of the model's linear head.
        **kw: options of the preset: ``tiny`` takes ``in_channels``/``width``, ``tv:`` takes
            ``weights``, ``resnet18_cifar`` takes none.

    Raises:
        ValueError: for an unknown preset name or an option the preset does not take.
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
    if key == "tiny":
        return tiny_cnn(num_classes, **kw)
    if key == "resnet18_cifar":
        return resnet18_cifar(num_classes)
    tv_name = name[len("tv:"):]
    if not tv_name:
        raise InputError("model name 'tv:' lacks the torchvision model name, e.g. 'tv:resnet50'")
    return torchvision_model(tv_name, num_classes, **kw)


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
