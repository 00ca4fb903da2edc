"""Alignment math: the textbook reference, test vectors, fast path vs reference, moments,
early stopping.

``alignment_reference`` / ``gwa_reference`` are the formulas as the paper writes them
(explicit per-sample gradients, directly computed moments). They are checked against the
design document's test vectors and against torch.func autograd, then serve as the reference
for the fast path on random inputs.
"""

import math

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from gwa_diag.alignment import (
    Moments,
    alignment_from_head,
    alignment_reference,
    gwa_from_scores,
    gwa_reference,
    per_sample_alignment,
    select_epoch,
)

W1 = torch.tensor([[1.0, -0.5], [0.2, 0.8]], dtype=torch.float64)
B1 = torch.tensor([0.1, -0.2], dtype=torch.float64)
Z1 = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.3, -1.2]], dtype=torch.float64)
Y1 = torch.tensor([0, 1, 1])
EXPECTED1 = [-0.4097263082, 0.6601146077, -0.7406842969]
SCORES2 = [0.9, 0.8, 0.75, 0.6, 0.5, 0.3, -0.2, -0.6]
GWA2 = 0.5841364121


def test_example1_vector():
    logits = Z1 @ W1.T + B1
    # The textbook formula reproduces the design document's values (given to 10 decimals).
    ref = alignment_reference(logits, Z1, W1, Y1)
    assert ref.dtype == torch.float64
    np.testing.assert_allclose(ref.numpy(), EXPECTED1, rtol=0, atol=1e-9)
    a = per_sample_alignment(Z1, logits, Y1, W1)
    np.testing.assert_allclose(a.numpy(), EXPECTED1, atol=1e-6)
    np.testing.assert_allclose(a.numpy(), ref.numpy(), atol=1e-6)


def test_example1_weights_after_step_differ():
    # Reading W after an SGD step gives different scores; the recorder must not do that.
    logits = Z1 @ W1.T + B1
    p = torch.softmax(logits, 1)
    g = (p - torch.nn.functional.one_hot(Y1, 2)).T @ Z1 / 3
    a_after = per_sample_alignment(Z1, logits, Y1, W1 - 1.0 * g)
    assert abs(a_after[0].item() - EXPECTED1[0]) > 0.1
    assert abs(alignment_reference(logits, Z1, W1 - 1.0 * g, Y1)[0].item() - EXPECTED1[0]) > 0.1


def test_example2_gwa():
    assert gwa_reference(SCORES2) == pytest.approx(GWA2, abs=1e-9)
    r = gwa_from_scores(SCORES2)
    assert r.valid and r.reason == "ok"
    assert r.mean == pytest.approx(0.38125, abs=1e-9)
    assert r.kurtosis == pytest.approx(-0.5473271104, abs=1e-8)
    assert r.gwa == pytest.approx(GWA2, abs=1e-8)
    # Power sums (fast, mergeable) and centred moments (textbook) agree to rounding.
    assert r.gwa == pytest.approx(gwa_reference(SCORES2), abs=1e-12)


def test_power_sum_gwa_matches_textbook_on_random_scores():
    rng = np.random.default_rng(5)
    for mu in (-0.1, 0.2, 0.6):
        x = np.tanh(rng.normal(mu, 0.4, 5000))
        r = gwa_from_scores(torch.tensor(x))
        assert r.valid
        assert r.gwa == pytest.approx(gwa_reference(x), rel=1e-9)


def test_textbook_gwa_has_no_guards():
    # Why gwa_from_scores refuses these epochs: the plain formula returns a number anyway.
    assert gwa_reference([-0.5, 0.5] * 20) == pytest.approx(0.0, abs=1e-12)  # K + 1.2 = -0.8
    assert gwa_reference([-0.4, 0.6] * 20) < 0 < float(np.mean([-0.4, 0.6]))  # flipped sign
    assert math.isnan(gwa_reference([0.3] * 10))  # zero variance


def _torch_func_alignment(z, soft_targets, w, b):
    """Independent check of the textbook version: per-sample gradients from autograd."""

    def loss(wt, zi, ti):
        lg = zi @ wt.T + b
        return -(ti * torch.log_softmax(lg, -1)).sum()

    grads = vmap(grad(loss), in_dims=(None, 0, 0))(w, z, soft_targets)
    flat = (-grads).reshape(grads.shape[0], -1)
    return torch.nn.functional.cosine_similarity(flat, w.reshape(1, -1), dim=1)


def _random_head(seed: int, soft: bool, n: int = 64, d: int = 16, c: int = 7):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(c, d, generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64)
    if soft:
        t = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, 1)
        targets = t
    else:
        y = torch.randint(0, c, (n,), generator=g)
        t = torch.nn.functional.one_hot(y, c).double()
        targets = y
    return z, w, b, t, targets


@pytest.mark.parametrize("soft", [False, True])
def test_textbook_matches_torch_func(soft):
    z, w, b, t, targets = _random_head(0, soft)
    ref = alignment_reference(z @ w.T + b, z, w, targets)
    # Measured: 3e-16 (float64 rounding only).
    np.testing.assert_allclose(ref.numpy(), _torch_func_alignment(z, t, w, b).numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("soft", [False, True])
def test_closed_form_matches_reference(soft):
    for seed in range(3):
        z, w, b, _, targets = _random_head(seed, soft)
        logits = z @ w.T + b
        ref = alignment_reference(logits, z, w, targets)
        ours = per_sample_alignment(z, logits, targets, w)
        # Measured over 20 seeds: at most 8e-8 (float32 arithmetic on float64 inputs).
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=0, atol=1e-6)
        assert ours.abs().max() > 0.05  # not a degenerate all-zero case
        if not soft:  # random labels: both directions occur (random soft targets pull against W)
            assert (ref < 0).any() and (ref > 0).any()


@pytest.mark.parametrize("soft", [False, True])
def test_alignment_from_head_matches_reference(soft):
    # The recorder's entry point, fed float32 values as a forward pass would capture them.
    z, w, b, _, targets = _random_head(1, soft)
    zf, wf = z.float(), w.float()
    logits = zf @ wf.T + b.float()
    t = targets.float() if soft else targets
    ours = alignment_from_head(zf @ wf.T, logits, t, zf.norm(dim=1), wf.norm())
    ref = alignment_reference(logits, zf, wf, t)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=0, atol=1e-6)


def test_bf16_logits_close_to_reference():
    g = torch.Generator().manual_seed(1)
    n, d, c = 128, 32, 10
    z = torch.randn(n, d, generator=g)
    w = torch.randn(c, d, generator=g) * 0.3
    y = torch.randint(0, c, (n,), generator=g)
    ref = alignment_reference((z @ w.T).double(), z, w, y)
    z_bf16, w_bf16 = z.to(torch.bfloat16), w.to(torch.bfloat16)
    logits_bf16 = (z @ w.T).to(torch.bfloat16)
    ours = per_sample_alignment(z_bf16, logits_bf16, y, w_bf16)
    assert ours.dtype == torch.float32
    # bf16 rounding of logits and weights: close, not identical (measured 3.5e-4, corr 0.999997).
    assert torch.max(torch.abs(ours.double() - ref)).item() < 0.03
    assert np.corrcoef(ours.numpy(), ref.numpy())[0, 1] > 0.999
    # Given the same bf16 values, the float32 fast path is the formula (measured 3e-8).
    same_inputs = alignment_reference(logits_bf16, z_bf16, w_bf16, y)
    np.testing.assert_allclose(ours.numpy(), same_inputs.numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confident_head_matches_reference(one_hot, seed):
    # A head that has fitted most of its samples: for many of them p_label rounds to 1 in
    # float32, where p - y computed naively in float32 loses the label entry. The fast path
    # must still agree with the float64 textbook formula wherever float64 resolves 1 - p_top
    # (beyond a logit margin of ~37 float64 loses it too; see the saturated test below).
    g = torch.Generator().manual_seed(seed)
    n, d, c = 256, 8, 10
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(c, d, generator=g, dtype=torch.float64) * 8
    logits = z @ w.T
    pred = logits.argmax(1)
    y = torch.where(torch.arange(n) % 4 == 0, (pred + 1) % c, pred)  # 3/4 fitted, 1/4 not
    resolved = 1.0 - torch.softmax(logits, 1).max(1).values > 1e-10
    saturated32 = torch.softmax(logits.float(), 1).max(1).values == 1.0
    assert (resolved & saturated32).sum() >= 20  # the hard case is really exercised
    ref = alignment_reference(logits, z, w, y)
    targets = torch.nn.functional.one_hot(y, c).float() if one_hot else y
    ours = per_sample_alignment(z.float(), logits.float(), targets, w.float())
    # Measured: at most 2e-7; naive float32 p - y is off by 0.26-0.30 on these samples.
    np.testing.assert_allclose(ours.numpy()[resolved], ref.numpy()[resolved], rtol=0, atol=1e-6)


def test_saturated_softmax_keeps_direction():
    # p_label rounds to 1.0 in float32; the naive p - y would give a zero vector.
    z = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[60.0, 0.0], [-40.0, 0.0], [0.0, 1.0]])
    logits = z @ w.T
    assert torch.softmax(logits, 1)[0, 0].item() == 1.0
    a = per_sample_alignment(z, logits, torch.tensor([0]), w).item()
    # Analytic limit: -grad is proportional to [q_label=1, -q_others] x z with q the softmax
    # over the non-label logits (~[0, 1]); dot with W = 60, norms sqrt(2) and ||W||_F.
    expected = 60.0 / (math.sqrt(2.0) * math.sqrt(60**2 + 40**2 + 1))
    assert a == pytest.approx(expected, abs=1e-6)
    # Even the float64 textbook formula (and float64 autograd) loses the label entry here
    # (1 - p_label rounds to 0): the reference is only a reference below that margin.
    naive = alignment_reference(logits, z, w, torch.tensor([0]))
    assert abs(naive.item() - expected) > 0.1
    autograd = _torch_func_alignment(z.double(), torch.tensor([[1.0, 0, 0]]).double(), w.double(), torch.zeros(3).double())
    assert abs(autograd.item() - expected) > 0.1


@pytest.mark.parametrize("scale", [1.0, 10.0, 40.0, 300.0])
def test_one_hot_soft_targets_match_class_indices_when_confident(scale):
    # The same labels as one-hot float targets (a pipeline that yields one-hot vectors, mixup
    # with lam = 1) must give the class-index values, also once the softmax saturates: at
    # scale 40 p_top rounds to 1 in float32, at 300 the other probabilities underflow to 0.
    g = torch.Generator().manual_seed(3)
    n, d, c = 96, 8, 5
    z = torch.randn(n, d, generator=g)
    w = torch.randn(c, d, generator=g) * scale
    logits = z @ w.T
    pred = logits.argmax(1)
    y = torch.where(torch.arange(n) % 4 == 0, (pred + 1) % c, pred)  # 3/4 fitted, 1/4 not
    by_index = per_sample_alignment(z, logits, y, w)
    by_one_hot = per_sample_alignment(z, logits, torch.nn.functional.one_hot(y, c).float(), w)
    assert torch.isfinite(by_one_hot).all()
    np.testing.assert_allclose(by_one_hot.numpy(), by_index.numpy(), atol=2e-6)


def test_label_smoothed_targets_on_a_confident_head_match_float64():
    # Near-one-hot targets (label smoothing 0.01) with p_top close to 1: float32 must agree
    # with the float64 textbook formula to float32 accuracy.
    g = torch.Generator().manual_seed(4)
    n, d, c = 64, 8, 10
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(c, d, generator=g, dtype=torch.float64) * 20
    logits = z @ w.T
    smooth = torch.full((n, c), 0.01 / c, dtype=torch.float64)
    smooth.scatter_(1, logits.argmax(1, keepdim=True), 1 - 0.01 + 0.01 / c)
    ref = alignment_reference(logits, z, w, smooth)
    ours = per_sample_alignment(z.float(), logits.float(), smooth.float(), w.float())
    assert torch.softmax(logits, 1).max(1).values.median() > 0.99999  # confident: the hard case
    # Measured: 1.3e-7 (this bound was 5e-4 before the fast path handled the top class).
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=0, atol=1e-6)


def test_nan_logits_give_nan_not_crash():
    z = torch.randn(3, 4)
    w = torch.randn(2, 4)
    logits = z @ w.T
    logits[1, 0] = float("nan")
    a = per_sample_alignment(z, logits, torch.tensor([0, 1, 0]), w)
    assert math.isnan(a[1].item()) and not math.isnan(a[0].item())
    ref = alignment_reference(logits, z, w, torch.tensor([0, 1, 0]))
    assert math.isnan(ref[1].item())
    np.testing.assert_allclose(a.numpy()[[0, 2]], ref.numpy()[[0, 2]], rtol=0, atol=1e-6)


def test_moments_merge_exactly():
    rng = np.random.default_rng(0)
    x = torch.tensor(np.tanh(rng.normal(0.2, 0.4, 1001)))  # uniform would have K = -1.2: undefined
    whole = Moments.from_scores(x)
    parts = Moments.from_scores(x[:10]) + Moments.from_scores(x[10:500]) + Moments.from_scores(x[500:])
    torch.testing.assert_close(whole.as_tensor(), parts.as_tensor(), rtol=1e-12, atol=1e-12)
    a, b = whole.compute(), parts.compute()
    assert a.gwa == pytest.approx(b.gwa, rel=1e-10)


def test_nan_scores_counted_and_excluded():
    r = gwa_from_scores(torch.tensor(SCORES2 + [float("nan")], dtype=torch.float64))
    assert r.n == 8 and r.n_nan == 1
    assert r.gwa == pytest.approx(0.5841364121, abs=1e-8)


def test_undefined_epochs_have_reasons():
    zero_var = gwa_from_scores([0.3] * 10)
    assert not zero_var.valid and zero_var.gwa is None and "m2 = 0" in zero_var.reason
    bimodal = gwa_from_scores([-0.5, 0.5] * 20)  # K = -2: K + 1.2 < 0 would flip the sign
    assert not bimodal.valid and bimodal.gwa is None and "kurtosis" in bimodal.reason
    assert bimodal.kurtosis == pytest.approx(-2.0)
    empty = gwa_from_scores([])
    assert not empty.valid and empty.n == 0


def test_select_epoch_scratch_skips_warmup_and_undefined():
    epochs = list(range(10))
    gwa = [9.0, 0.1, 0.2, 0.5, None, 0.4, float("nan"), 0.45, 0.3, 0.2]
    r = select_epoch(epochs, gwa, mode="scratch")
    assert r.epoch == 3  # epoch 0 is inside the first 10%; None/NaN never chosen
    assert 0 not in r.candidates and 4 not in r.candidates and 6 not in r.candidates
    # Planned 40 epochs: epochs 0-3 are warm-up even though only 10 have run.
    r40 = select_epoch(epochs, [0.9, 0.8, 0.7, 0.6, 0.1, 0.2, 0.3, 0.2, 0.1, 0.1], total_epochs=40)
    assert r40.epoch == 6


def test_select_epoch_finetune():
    gwa = [0.9, 0.7, 0.5, 0.55, 0.6, 0.8, 0.7]
    r = select_epoch(list(range(7)), gwa, mode="finetune")
    assert r.epoch == 5 and "local minimum at epoch 2" in r.reason
    falling = select_epoch([0, 1, 2], [0.9, 0.8, 0.7], mode="finetune")
    assert falling.epoch is None and "still falling" in falling.reason


def test_select_epoch_finetune_plateaus():
    # A flat step inside the fall is not the minimum: the minimum is epoch 3, then epoch 4.
    r = select_epoch(list(range(5)), [3, 2, 2, 1, 1.5], mode="finetune")
    assert r.epoch == 4 and "local minimum at epoch 3" in r.reason
    # A flat bottom counts once the curve rises after it; candidates start after the flat.
    r = select_epoch(list(range(5)), [3, 1, 1, 2, 1.5], mode="finetune")
    assert r.epoch == 3 and r.candidates == [3, 4]
    assert select_epoch([0, 1, 2], [3, 1, 1], mode="finetune").epoch is None  # no rise yet
    rising = select_epoch(list(range(4)), [0.1, 0.2, 0.3, 0.4], mode="finetune")
    assert rising.epoch is None and "only risen" in rising.reason


def test_select_epoch_bad_mode():
    with pytest.raises(ValueError, match="valid modes"):
        select_epoch([0], [0.1], mode="best")
