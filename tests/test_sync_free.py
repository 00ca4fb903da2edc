"""The recorder's per-step path adds no host-device synchronisation, checked without a GPU.

``tests/test_cuda.py`` checks this with torch's sync debug mode where CUDA exists. Here the
same forward + ``update`` runs on *fake* CUDA tensors (torch's FakeTensorMode: shapes,
dtypes and devices, no data, no driver), under a dispatch mode that flags every op that
would make the host wait for the device: reading a value back (``.item()``, ``int()``,
``bool()``), data-dependent shapes (``nonzero``) and device-to-host copies.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_leaves
from torch.utils._python_dispatch import TorchDispatchMode

from gwa_diag.recorder import AlignmentRecorder

fake_tensor = pytest.importorskip("torch._subclasses.fake_tensor")

# Ops whose result the host must read back from the device before it can go on.
_SYNCING_OPS = {
    "aten._local_scalar_dense.default",  # .item(), int(t), float(t), bool(t)
    "aten.is_nonzero.default",
    "aten.nonzero.default",
    "aten.masked_select.default",
    "aten.unique_dim.default",
    "aten._unique2.default",
}


class _SyncSpy(TorchDispatchMode):
    """Records every op on a CUDA tensor that would synchronise the host with the device."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        on_device = any(isinstance(t, torch.Tensor) and t.device.type == "cuda" for t in tree_leaves((args, kwargs)))
        if on_device and str(func) in _SYNCING_OPS:
            self.syncs.append(str(func))  # before the call: a fake tensor refuses to give a value
        out = func(*args, **kwargs)
        if on_device and any(isinstance(t, torch.Tensor) and t.device.type == "cpu" for t in tree_leaves(out)):
            self.syncs.append(f"{func} (device to host copy)")
        return out


@pytest.fixture
def fake_cuda():
    with fake_tensor.FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def _model() -> nn.Module:
    # bf16 weights give bf16 logits, as an autocast forward on a GPU does.
    kw = {"device": "cuda", "dtype": torch.bfloat16}
    return nn.Sequential(nn.Linear(32, 64, **kw), nn.ReLU(), nn.Linear(64, 10, **kw))


@pytest.mark.parametrize("ids_on", ["cpu", "cuda"])
@pytest.mark.parametrize("soft", [False, True], ids=["class-index", "soft"])
def test_forward_and_update_issue_no_sync(fake_cuda, tmp_path, ids_on, soft):
    model = _model()
    recorder = AlignmentRecorder(model, tmp_path / "run")
    x = torch.randn(256, 32, device="cuda", dtype=torch.bfloat16)
    labels = torch.randint(0, 10, (256,), device="cuda")
    targets = F.one_hot(labels, 10).float() if soft else labels
    ids = torch.arange(256, device=ids_on)  # a DataLoader yields CPU ids; the engine's fast path CUDA ids
    spy = _SyncSpy()
    with spy:
        for _ in range(3):
            model(x)  # the hook runs here
            recorder.update(ids, targets)
    assert spy.ops > 50, "the spy saw no ops: the check would pass vacuously"
    assert spy.syncs == [], f"per-step host-device syncs: {spy.syncs}"
    assert recorder.step == 3 and len(recorder._floats) == 3
    assert recorder._floats[0].device.type == "cuda" and recorder._floats[0].shape == (256, 5)
    recorder._clear()
    recorder.close()


def test_spy_catches_the_syncs_it_looks_for(fake_cuda):
    """The check above can fail: a value read back and a device-to-host copy are both seen."""
    y = torch.randint(0, 10, (256,), device="cuda")
    spy = _SyncSpy()
    with spy:
        with pytest.raises(Exception):  # fake tensors have no value to give
            int(y.max())
        y.cpu()
    assert spy.syncs == ["aten._local_scalar_dense.default", "aten._to_copy.default (device to host copy)"]


def test_spy_catches_a_recorder_that_checks_targets_every_step(fake_cuda, tmp_path, monkeypatch):
    """A recorder that range-checked device targets eagerly (``bool((y < 0).any())``) would be
    caught: the deferred check in ``update`` is what keeps the step sync-free."""
    model = _model()
    recorder = AlignmentRecorder(model, tmp_path / "run")
    original = AlignmentRecorder.update

    def eager_check(self, sample_ids, targets):
        try:
            bool((targets < 0).any())  # the host waits for the device here
        except Exception:
            pass  # a fake tensor has no value to give; the spy has seen the read-back
        return original(self, sample_ids, targets)

    monkeypatch.setattr(AlignmentRecorder, "update", eager_check)
    spy = _SyncSpy()
    with spy:
        model(torch.randn(8, 32, device="cuda", dtype=torch.bfloat16))
        recorder.update(torch.arange(8), torch.randint(0, 10, (8,), device="cuda"))
    assert any("_local_scalar_dense" in s or "is_nonzero" in s for s in spy.syncs)
    recorder._clear()
    recorder.close()
