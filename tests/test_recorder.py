"""AlignmentRecorder in real training loops on synthetic data with injected label noise."""


import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from gwa_diag.alignment import per_sample_alignment
from gwa_diag.recorder import AlignmentRecorder, find_linear_head
from gwa_diag.store import RunDirError, open_run

N, D, C = 1200, 16, 4


def _data(seed=0, noise=0.2):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(C, D, generator=g) * 1.5
    y = torch.randint(0, C, (N,), generator=g)
    x = centers[y] + torch.randn(N, D, generator=g)
    noisy = torch.rand(N, generator=g) < noise
    shift = torch.randint(1, C, (N,), generator=g)
    yn = torch.where(noisy, (y + shift) % C, y)
    return x, yn, noisy


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, C))


def _train(run_dir, *, epochs=5, seed=0, update_after_step=True, batch=100):
    x, yn, noisy = _data()
    model = _model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rec = AlignmentRecorder(model, run_dir)
    ids = torch.arange(N) + 1000  # ids need not be positions
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        perm = torch.randperm(N, generator=g)
        for i in range(0, N, batch):
            b = perm[i : i + batch]
            logits = model(x[b])
            loss = F.cross_entropy(logits, yn[b])
            opt.zero_grad()
            loss.backward()
            if not update_after_step:
                rec.update(ids[b], yn[b])
            opt.step()
            if update_after_step:
                rec.update(ids[b], yn[b])
        rec.end_epoch(epoch, lr=0.1)
    rec.close()
    return noisy


def test_noisy_samples_rank_lower_and_every_sample_once(tmp_path):
    noisy = _train(tmp_path / "run")
    run = open_run(tmp_path / "run")
    df = run.samples()
    counts = df.groupby(["epoch", "sample_id"]).size()
    assert len(counts) == 5 * N and (counts == 1).all()
    mean_align = df.groupby("sample_id")["alignment"].mean()
    auroc = roc_auc_score(noisy.numpy()[mean_align.index - 1000], -mean_align.values)
    assert auroc > 0.9
    ep = run.epochs()
    assert list(ep["epoch"]) == [0, 1, 2, 3, 4]
    assert ep["valid"].all() and (ep["n"] == N).all() and (ep["n_nan"] == 0).all()
    assert run.meta["status"] == "finished"
    # The epoch GWA equals the GWA of that epoch's recorded scores.
    from gwa_diag.alignment import gwa_from_scores

    e3 = run.epoch_scores(3)["alignment"].to_numpy(dtype=np.float64)
    assert ep.loc[3, "gwa"] == pytest.approx(gwa_from_scores(torch.tensor(e3)).gwa, rel=1e-5)


def test_same_seed_same_values(tmp_path):
    _train(tmp_path / "a", epochs=2)
    _train(tmp_path / "b", epochs=2)
    _train(tmp_path / "c", epochs=2, seed=1)  # the control: another seed records other values
    a, b, c = (open_run(tmp_path / name).samples() for name in "abc")
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.sort_values(["epoch", "sample_id"])["alignment"].to_numpy(),
                           c.sort_values(["epoch", "sample_id"])["alignment"].to_numpy())


def test_update_before_or_after_step_is_identical(tmp_path):
    _train(tmp_path / "after", epochs=2, update_after_step=True)
    _train(tmp_path / "before", epochs=2, update_after_step=False)
    a, b = open_run(tmp_path / "after").samples(), open_run(tmp_path / "before").samples()
    pd.testing.assert_frame_equal(a, b)


def test_recorded_values_match_reference(tmp_path):
    torch.manual_seed(0)
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    logits = model(x[:50])
    rec.update(torch.arange(50), yn[:50])
    rec.end_epoch(0)
    rec.flush()
    df = open_run(tmp_path / "r").epoch_scores(0)
    with torch.no_grad():
        feats = model[1](model[0](x[:50]))
        ref = per_sample_alignment(feats, logits, yn[:50], model[2].weight)
        lg = logits.detach()
        p = torch.softmax(lg, 1)
    np.testing.assert_allclose(df["alignment"], ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(df["loss"], F.cross_entropy(lg, yn[:50], reduction="none").numpy(), atol=1e-5)
    np.testing.assert_allclose(df["p_label"], p[torch.arange(50), yn[:50]].numpy(), atol=1e-6)
    other = lg.clone()
    other[torch.arange(50), yn[:50]] = -float("inf")
    np.testing.assert_allclose(df["margin"], (lg[torch.arange(50), yn[:50]] - other.max(1).values).numpy(), atol=1e-5)
    np.testing.assert_array_equal(df["pred"], lg.argmax(1).numpy())


def test_autocast_bf16_and_grad_accumulation_and_repeats(tmp_path):
    model = _model()
    x, yn, _ = _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rec = AlignmentRecorder(model, tmp_path / "r")
    # A sampler that repeats ids within the epoch, with 2-step gradient accumulation.
    order = torch.cat([torch.arange(200), torch.arange(100)])
    for i in range(0, len(order), 50):
        b = order[i : i + 50]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x[b])
        assert logits.dtype == torch.bfloat16
        (F.cross_entropy(logits.float(), yn[b]) / 2).backward()
        rec.update(b, yn[b])
        if (i // 50) % 2 == 1:
            opt.step()
            opt.zero_grad()
    row = rec.end_epoch(0)
    rec.flush()
    df = open_run(tmp_path / "r").epoch_scores(0)
    assert len(df) == 300 and row["n"] == 300
    assert df.groupby("sample_id").size().max() == 2  # both presentations kept
    assert df.groupby(["sample_id", "step"]).size().max() == 1  # told apart by step
    assert df["alignment"].between(-1, 1).all() and df["alignment"].notna().all()


def test_eval_forward_under_no_grad_is_not_recorded(tmp_path):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    model(x[:10])
    with torch.no_grad():
        model(x[:7])  # evaluation pass between forward and update must not replace it
    rec.update(torch.arange(10), yn[:10])
    assert rec.end_epoch(0)["n"] == 10


def test_eval_mode_forward_with_grad_on_is_not_taken_for_the_training_batch(tmp_path):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    logits = model(x[:10])
    model.eval()
    model(x[500:510])  # validation that forgot no_grad, between forward and update
    model.train()
    rec.update(torch.arange(10), yn[:10])
    rec.end_epoch(0)
    rec.close()
    df = open_run(tmp_path / "r").epoch_scores(0)
    np.testing.assert_array_equal(df["pred"].to_numpy(), logits.argmax(1).numpy())
    z, w = _head_parts(model, x[:10])
    expected = per_sample_alignment(z, logits.detach(), yn[:10], w)
    np.testing.assert_allclose(df["alignment"].to_numpy(), expected.numpy(), atol=1e-5)


def _head_parts(model, x):
    z = model[1](model[0](x)).detach()
    return z, model[2].weight.detach()


def test_training_in_eval_mode_needs_the_opt_in(tmp_path):
    model = _model()
    x, yn, _ = _data()
    model.eval()  # e.g. fine-tuning with frozen BatchNorm statistics
    rec = AlignmentRecorder(model, tmp_path / "a")
    model(x[:10])
    with pytest.raises(RuntimeError, match="eval mode.*record_eval_mode=True"):
        rec.update(torch.arange(10), yn[:10])
    rec.close()
    rec = AlignmentRecorder(model, tmp_path / "b", record_eval_mode=True)
    model(x[:10])
    rec.update(torch.arange(10), yn[:10])
    assert rec.end_epoch(0)["n"] == 10
    rec.close()


def test_two_forwards_before_one_update_warn_once(tmp_path):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    with pytest.warns(RuntimeWarning, match="two training forwards"):
        model(x[:10])
        model(x[10:20])  # a second view; the recipe is one update per forward
    rec.update(torch.arange(10, 20), yn[10:20])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per recorder, not once per step
        model(x[:10])
        model(x[10:20])
    rec.update(torch.arange(10, 20), yn[10:20])
    rec.close()


def test_process_group_set_up_after_the_recorder_is_an_error(tmp_path, monkeypatch):
    import gwa_diag.recorder as recorder_mod

    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")  # made as rank 0 of 1
    model(x[:10])
    rec.update(torch.arange(10), yn[:10])
    monkeypatch.setattr(recorder_mod, "dist_info", lambda: (1, 2))  # then torchrun's group appears
    with pytest.raises(RuntimeError, match="after init_process_group"):
        rec.end_epoch(0)
    rec.close()
    assert open_run(tmp_path / "r").completed_epochs() == []


def test_recorder_under_torchrun_before_the_process_group_is_an_error(tmp_path, monkeypatch):
    """torchrun sets WORLD_SIZE; a recorder made before init_process_group would take every
    process for rank 0 of 1: refused at once, before any file is written."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="before torch.distributed was set up.*WORLD_SIZE=2"):
        AlignmentRecorder(_model(), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_nan_logits_recorded_and_counted(tmp_path):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    xb = x[:20].clone()
    xb[3] = float("nan")
    model(xb)
    rec.update(torch.arange(20), yn[:20])
    model(x[20:40])
    rec.update(torch.arange(20, 40), yn[20:40])
    row = rec.end_epoch(0)
    assert row["n_nan"] == 1 and row["n"] == 39 and row["valid"]
    rec.close()
    df = open_run(tmp_path / "r").epoch_scores(0)
    assert df.loc[df.sample_id == 3, "alignment"].isna().all()
    # train_loss is the mean of the finite losses, not diluted by the NaN one.
    assert row["train_loss"] == pytest.approx(df["loss"].dropna().astype(float).mean(), rel=1e-5)


def test_diverged_epoch_reports_nan_loss_not_zero(tmp_path):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    model(torch.full_like(x[:20], float("nan")))
    rec.update(torch.arange(20), yn[:20])
    row = rec.end_epoch(0)
    rec.close()
    assert row["n_nan"] == 20 and not row["valid"]
    assert np.isnan(row["train_loss"])


def test_bad_inputs(tmp_path):
    model = _model()
    with pytest.raises(TypeError, match="nn.Linear"):
        AlignmentRecorder(model, tmp_path / "a", head=nn.ReLU())
    with pytest.raises(TypeError, match="head="):
        find_linear_head(nn.Sequential(nn.Conv2d(3, 4, 3)))
    rec = AlignmentRecorder(model, tmp_path / "b")
    x, yn, _ = _data()
    with pytest.raises(RuntimeError, match="forward"):
        rec.update(torch.arange(4), yn[:4])
    model(x[:8])
    with pytest.raises(ValueError, match="one integer id per sample"):
        rec.update(torch.arange(5), yn[:8])
    model(x[:8])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        rec.update(torch.arange(8), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2]))
    # A directory that holds another run is refused and left untouched.
    rec.end_epoch(0)
    rec.flush()
    before = (tmp_path / "b" / "run.json").read_bytes()
    with pytest.raises(RunDirError, match="already holds run"):
        AlignmentRecorder(_model(), tmp_path / "b")
    assert (tmp_path / "b" / "run.json").read_bytes() == before
    assert open_run(tmp_path / "b").completed_epochs() == [0]


def test_background_write_failure_surfaces_and_keeps_earlier_epochs(tmp_path, monkeypatch):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    for epoch in range(2):
        model(x[:10])
        rec.update(torch.arange(10), yn[:10])
        rec.end_epoch(epoch)
    rec.flush()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rec.writer, "write_samples", disk_full)
    model(x[:10])
    rec.update(torch.arange(10), yn[:10])
    rec.end_epoch(2)  # returns at once; the write fails on the writer thread
    with pytest.raises(OSError, match="No space left"):
        rec.flush()
    run = open_run(tmp_path / "r")
    assert run.completed_epochs() == [0, 1] and len(run.samples()) == 20


def test_end_epoch_returns_before_the_write_and_flush_waits(tmp_path, monkeypatch):
    import threading

    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    gate = threading.Event()
    real = rec.writer.write_samples

    def slow_write(*args, **kwargs):
        gate.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(rec.writer, "write_samples", slow_write)
    model(x[:10])
    rec.update(torch.arange(10), yn[:10])
    row = rec.end_epoch(0)
    assert row["n"] == 10 and open_run(tmp_path / "r").completed_epochs() == []  # not yet on disk
    gate.set()
    rec.close()
    assert open_run(tmp_path / "r").completed_epochs() == [0]


def _one_batch(model, rec, x, yn, lo, hi, ids=None):
    model(x[lo:hi])
    rec.update(torch.arange(lo, hi) if ids is None else ids, yn[lo:hi])


def test_an_epoch_already_written_is_never_replaced(tmp_path):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    _one_batch(model, rec, x, yn, 0, 64)
    rec.end_epoch(0)
    _one_batch(model, rec, x, yn, 64, 96)
    rec.end_epoch(1)
    for again in (1, 0):
        with pytest.raises(ValueError, match="epochs must increase"):
            rec.end_epoch(again)
    rec.close()
    run = open_run(tmp_path / "r")
    assert run.epochs()["n"].tolist() == [64, 32]
    assert len(run.epoch_scores(1)) == 32
    assert run.meta["status"] == "finished"


def test_end_epoch_extras_are_checked_before_anything_is_lost(tmp_path):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    _one_batch(model, rec, x, yn, 0, 10)
    # Scalar tensors and numpy scalars are stored as numbers.
    row = rec.end_epoch(0, eval_acc=torch.tensor(0.75), lr=np.float32(0.1), note="warm-up")
    assert row["eval_acc"] == 0.75 and isinstance(row["eval_acc"], float)
    _one_batch(model, rec, x, yn, 10, 20)
    with pytest.raises(TypeError, match="'eval_acc' must be a scalar"):
        rec.end_epoch(1, eval_acc=torch.tensor([0.5, 0.6]))
    with pytest.raises(TypeError, match="'cfg' must be a number"):
        rec.end_epoch(1, cfg={"lr": 0.1})
    with pytest.raises(ValueError, match="replace the recorder's own 'n'"):
        rec.end_epoch(1, n=5)
    # Nothing of epoch 1 was taken out of memory by the refused calls.
    row = rec.end_epoch(1, eval_acc=0.5)
    rec.close()
    assert row["n"] == 10
    run = open_run(tmp_path / "r")
    assert run.completed_epochs() == [0, 1]
    assert run.epochs()["eval_acc"].tolist() == [0.75, 0.5]
    assert sorted(run.epoch_scores(1)["sample_id"]) == list(range(10, 20))


def test_ids_buffer_refilled_in_place_keeps_each_batch_ids(tmp_path):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    ids_np = np.zeros(16, dtype=np.int64)
    ids_t = torch.zeros(16, dtype=torch.int64)
    for lo in range(0, 64, 16):
        buf = ids_np if lo < 32 else ids_t
        buf[:] = np.arange(lo, lo + 16) if buf is ids_np else torch.arange(lo, lo + 16)
        _one_batch(model, rec, x, yn, lo, lo + 16, ids=buf)
    rec.end_epoch(0)
    rec.close()
    df = open_run(tmp_path / "r").epoch_scores(0)
    assert sorted(df["sample_id"]) == list(range(64))
    assert (df.sort_values("sample_id")["label"].to_numpy() == yn[:64].numpy()).all()


def test_diverged_rows_never_count_as_correct(tmp_path):
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    model(torch.full_like(x[:20], float("nan")))
    rec.update(torch.arange(20), torch.zeros(20, dtype=torch.long))  # argmax of NaN is 0
    assert np.isnan(rec.end_epoch(0)["train_acc"])
    model(torch.full_like(x[:20], float("nan")))
    rec.update(torch.arange(20), torch.zeros(20, dtype=torch.long))
    with torch.no_grad():
        pred = model(x[20:40]).argmax(1)
    model(x[20:40])
    rec.update(torch.arange(20, 40), pred)  # 20 correct among 40 rows
    assert rec.end_epoch(1)["train_acc"] == pytest.approx(0.5)
    rec.close()


def test_context_manager_finishes_the_run_or_leaves_it_resumable(tmp_path):
    model = _model()
    x, yn, _ = _data()
    with AlignmentRecorder(model, tmp_path / "ok") as rec:
        _one_batch(model, rec, x, yn, 0, 10)
        rec.end_epoch(0)
    assert open_run(tmp_path / "ok").meta["status"] == "finished"
    with pytest.raises(RuntimeError, match="closed"):
        rec.end_epoch(1)
    with pytest.raises(RuntimeError, match="closed"):
        rec.update(torch.arange(10), yn[:10])
    with pytest.raises(KeyError):
        with AlignmentRecorder(model, tmp_path / "crash") as rec:
            _one_batch(model, rec, x, yn, 0, 10)
            rec.end_epoch(0)
            raise KeyError("the training loop failed")
    run = open_run(tmp_path / "crash")
    assert run.meta["status"] == "running" and run.completed_epochs() == [0]


def test_compiled_model_run_before_the_recorder_is_explained(tmp_path):
    class Compiled(nn.Module):  # what torch.compile returns: the original under _orig_mod
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner

    rec = AlignmentRecorder(Compiled(_model()), tmp_path / "r")
    with pytest.raises(RuntimeError, match="create the recorder before its first compiled forward"):
        rec.update(torch.arange(4), torch.zeros(4, dtype=torch.long))


def test_contradicted_share_matches_a_slow_reference_on_the_written_rows(tmp_path):
    # A row counts when the model predicted another class j with p(j) at least the mean
    # p(label) of the rows labelled j in that epoch (confident learning's threshold).
    model = _model()
    x, yn, _ = _data()
    rec = AlignmentRecorder(model, tmp_path / "r")
    for i in range(0, 200, 50):
        b = torch.arange(i, i + 50)
        F.cross_entropy(model(x[b]), yn[b]).backward()
        rec.update(b, yn[b])
    row = rec.end_epoch(0)
    rec.flush()
    df = open_run(tmp_path / "r").epoch_scores(0)
    threshold = df.groupby("label")["p_label"].mean()
    hits = [(p != y) and (pp >= threshold.get(p, np.inf)) for y, p, pp in zip(df["label"], df["pred"], df["p_pred"])]
    assert 0 < sum(hits) < len(df)  # the check can tell a wrong share from a right one
    assert row["contradicted"] == pytest.approx(np.mean(hits), abs=1e-12)
