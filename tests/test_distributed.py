"""Two CPU processes (gloo) record exactly what one process records on the same batches."""


import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from gwa_diag.training.data import ArrayDataset, with_noise
from gwa_diag.store import open_run
from gwa_diag.training.batches import Batches
from gwa_diag.training.engine import TrainConfig, train

N, C = 480, 4
CFG = dict(epochs=2, batch_size=64, lr=0.05, warmup_epochs=0.5, progress=False, augment=False, device="cpu")


def _dataset():
    rng = np.random.default_rng(0)
    templates = rng.integers(0, 256, size=(C, 1, 1, 3))
    labels = rng.integers(0, C, size=N)
    imgs = np.clip(templates[labels] + rng.normal(0, 40, size=(N, 8, 8, 3)), 0, 255).astype(np.uint8)
    return with_noise(ArrayDataset(imgs, labels), rate=0.2, seed=0)


def _model():
    # No BatchNorm: per-rank batch statistics would make 2 ranks differ from 1 process.
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 32), nn.ReLU(), nn.Linear(32, C))


def _worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        train(_model(), _dataset(), out, config=TrainConfig(**CFG))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path):
    train(_model(), _dataset(), tmp_path / "one", config=TrainConfig(**CFG))
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "two")), nprocs=2, join=True)
    one, two = open_run(tmp_path / "one"), open_run(tmp_path / "two")
    assert sorted(p.name for p in (tmp_path / "two" / "samples" / "epoch=1").iterdir()) == ["part-0.parquet", "part-1.parquet"]
    a, b = one.samples(), two.samples()
    assert len(b) == 2 * N and (b.groupby(["epoch", "sample_id"]).size() == 1).all()
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-4, atol=1e-5)
    ea, eb = one.epochs(), two.epochs()
    np.testing.assert_allclose(ea["gwa"], eb["gwa"], rtol=1e-4)
    assert (eb["n"] == N).all() and two.meta["world_size"] == 2


def test_sharding_pads_like_distributed_sampler():
    ds = ArrayDataset(np.zeros((7, 4, 4, 3), dtype=np.uint8), np.arange(7) % 2)
    batches = Batches(ds, torch.device("cpu"), 4, num_workers=0)
    seen = []
    for rank in range(2):
        seen += [i for _, _, ids in batches.epoch(torch.Generator().manual_seed(3), rank, 2) for i in ids.tolist()]
    # 7 samples over 2 ranks: padded to 8, exactly one sample presented twice, none lost.
    assert sorted(set(seen)) == list(range(7)) and len(seen) == 8
