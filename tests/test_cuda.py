"""GPU path: runs only where CUDA exists (skipped elsewhere)."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gwa_diag.recorder import AlignmentRecorder
from gwa_diag.store import open_run

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_update_adds_no_host_device_sync(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = AlignmentRecorder(model, tmp_path / "run")
    x = torch.randn(256, 32, device="cuda")
    y = torch.randint(0, 10, (256,), device="cuda")
    ids = torch.arange(256)  # ids on the CPU, as a DataLoader yields them

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rec.update(ids, y)

    step()  # warm-up outside the check (allocator, kernels)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    row = rec.end_epoch(0)
    rec.close()
    assert row["n"] == 6 * 256 and row["n_nan"] == 0
    df = open_run(tmp_path / "run").epoch_scores(0)
    assert len(df) == 6 * 256 and df["alignment"].between(-1, 1).all()
