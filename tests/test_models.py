"""Tests of gwa_diag.training.models: presets, head replacement, head lookup and class-count checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gwa_diag.training.models import (
    build_model,
    check_num_classes,
    find_head,
    resnet18_cifar,
    tiny_cnn,
    torchvision_model,
    torchvision_model_names,
)


def test_tiny_cnn_shapes_and_head() -> None:
    model = tiny_cnn(7)
    out = model(torch.randn(4, 3, 32, 32))
    assert out.shape == (4, 7)
    assert isinstance(model.head, nn.Linear) and find_head(model) is model.head
    # Global average pooling: other input sizes and channel counts work too.
    assert tiny_cnn(3, in_channels=1, width=8)(torch.randn(2, 1, 48, 40)).shape == (2, 3)
    with pytest.raises(ValueError, match="width"):
        tiny_cnn(10, width=0)
    with pytest.raises(TypeError, match="num_classes"):
        tiny_cnn(10.0)  # type: ignore[arg-type]


def test_tiny_cnn_learns() -> None:
    torch.manual_seed(0)
    model = tiny_cnn(2, width=8)
    x = torch.randn(32, 3, 32, 32)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first


def test_resnet18_cifar() -> None:
    model = resnet18_cifar(10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert isinstance(model.fc, nn.Linear) and model.fc.out_features == 10
    assert find_head(model) is model.fc
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("resnet18", "fc"),
        ("mobilenet_v3_small", "classifier.3"),
        ("efficientnet_b0", "classifier.1"),
        ("swin_t", "head"),
        ("vit_b_16", "heads.head"),
    ],
)
def test_torchvision_model_replaces_head(name: str, path: str) -> None:
    model = torchvision_model(name, 5)
    head = model.get_submodule(path)
    assert isinstance(head, nn.Linear) and head.out_features == 5
    assert find_head(model) is head


# torchvision warns that GoogLeNet's default init will change; irrelevant here.
@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")
def test_torchvision_model_forward_and_aux_heads() -> None:
    model = torchvision_model("mobilenet_v3_small", 4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    g = torchvision_model("googlenet", 3)
    assert g.fc.out_features == 3 and g.aux1.fc2.out_features == 3 and g.aux2.fc2.out_features == 3


def test_torchvision_model_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown torchvision model 'resnet19'.*resnet18"):
        torchvision_model("resnet19", 10)
    with pytest.raises(ValueError, match="nn.Linear"):
        torchvision_model("squeezenet1_0", 10)
    assert "resnet18" in torchvision_model_names()


def test_build_model() -> None:
    assert build_model("tiny", 3, width=8).head.out_features == 3
    assert build_model("resnet18_cifar", 4).fc.out_features == 4
    assert build_model("tv:resnet18", 6).fc.out_features == 6
    with pytest.raises(ValueError, match=r"unknown model 'resnet'.*tiny.*resnet18_cifar.*tv:"):
        build_model("resnet", 10)
    with pytest.raises(ValueError, match=r"unknown option\(s\) widht.*in_channels, width"):
        build_model("tiny", 10, widht=8)
    with pytest.raises(ValueError, match=r"valid options are \(none\)"):
        build_model("resnet18_cifar", 10, width=8)
    with pytest.raises(ValueError, match="tv:resnet50"):
        build_model("tv:", 10)


def test_find_head_errors() -> None:
    conv_only = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(TypeError, match=r"no nn.Linear.*head=\.\.\. explicitly"):
        find_head(conv_only)
    with pytest.raises(AttributeError, match="modules"):  # not a model: Python's own error says so
        find_head("model")  # type: ignore[arg-type]
    two = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    assert find_head(two) is two[2]


def test_check_num_classes() -> None:
    model = tiny_cnn(10, width=8)
    assert check_num_classes(model, 10) is model.head
    with pytest.raises(ValueError, match=r"10 outputs but the dataset has 100 classes.*num_classes=100"):
        check_num_classes(model, 100)
    other = nn.Linear(8, 100)
    assert check_num_classes(model, 100, head=other) is other
    with pytest.raises(AttributeError, match="out_features"):  # not a linear head
        check_num_classes(model, 10, head=nn.Conv2d(1, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="head="):
        check_num_classes(nn.Sequential(nn.Conv2d(3, 4, 3)), 10)


# --------------------------------------------------------------------------------------
# weights: a state-dict file or torchvision's pretrained weights (offline: no download)
# --------------------------------------------------------------------------------------


def _others_equal(model: nn.Module, state: dict[str, torch.Tensor], head: str) -> bool:
    got = model.state_dict()
    return all(torch.equal(got[k], v) for k, v in state.items() if not k.startswith(head + "."))


def test_weights_file_is_loaded_and_the_head_fits_the_classes(tmp_path) -> None:
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()  # an ImageNet-shaped file
    torch.save(state, tmp_path / "r18.pt")
    model = build_model("tv:resnet18", 5, weights=tmp_path / "r18.pt")
    assert _others_equal(model, state, "fc")
    assert model.fc.out_features == 5 and find_head(model) is model.fc
    # gwa-diag's own checkpoint layout, from an earlier 5-class run: its head is kept as loaded.
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "selected.pt")
    again = build_model("tv:resnet18", 5, weights=str(tmp_path / "selected.pt"))
    assert torch.equal(again.fc.weight, model.fc.weight) and _others_equal(again, state, "fc")


def test_weights_file_wrappers_for_the_small_presets(tmp_path) -> None:
    torch.manual_seed(0)
    state = build_model("tiny", 3, width=8).state_dict()
    # A DistributedDataParallel save under a "state_dict" key: the prefix is removed.
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "ddp.pt")
    model = build_model("tiny", 4, width=8, weights=tmp_path / "ddp.pt")
    assert _others_equal(model, state, "head") and model.head.out_features == 4
    assert not torch.equal(model.head.weight[:3], state["head.weight"])  # a fresh 4-way head


def test_weights_that_do_not_fit_are_refused_naming_the_keys(tmp_path) -> None:
    import torchvision

    from gwa_diag.checks import InputError, MissingFileError

    state = torchvision.models.resnet18().state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    torch.save(state, tmp_path / "grey.pt")
    with pytest.raises(InputError, match=r"conv1\.weight: file \(64, 1, 7, 7\) vs model \(64, 3, 7, 7\).*--model"):
        build_model("tv:resnet18", 5, weights=tmp_path / "grey.pt")
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pt")
    with pytest.raises(InputError, match=r"not in the model: layer1\.2\.\S+, .*\(and \d+ more\)") as exc:
        build_model("tv:resnet18", 5, weights=tmp_path / "r34.pt")
    assert "\n" not in str(exc.value)
    (tmp_path / "junk.pt").write_text("not a tensor file")
    with pytest.raises(InputError, match="cannot read weights file"):
        build_model("tiny", 5, weights=tmp_path / "junk.pt")
    torch.save({"epoch": 3}, tmp_path / "no_state.pt")
    with pytest.raises(InputError, match="holds no state dict"):
        build_model("tiny", 5, weights=tmp_path / "no_state.pt")
    with pytest.raises(MissingFileError, match="missing.pt"):
        build_model("tiny", 5, weights=tmp_path / "missing.pt")
    with pytest.raises(InputError, match=r"--weights DEFAULT.*tv:<name>.*--weights FILE"):
        build_model("resnet18_cifar", 5, weights="DEFAULT")


def test_default_weights_whose_download_fails_name_the_file_option(monkeypatch) -> None:
    from urllib.error import URLError

    from torchvision.models._api import WeightsEnum

    from gwa_diag.checks import InputError

    def offline(self, *args, **kwargs):
        raise URLError("Name or service not known")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(InputError, match=r"download .*ResNet18_Weights.*failed.*--weights FILE"):
        build_model("tv:resnet18", 5, weights="DEFAULT")
