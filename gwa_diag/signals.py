"""The recorded signals as pure functions of tensors: per sample from one forward of the
head, and per epoch from the rows of the epoch. :class:`gwa_diag.recorder.AlignmentRecorder`
captures the inputs and buffers the outputs; the math lives here, where it can be read and
tested without a hook, a buffer or a file.

Every function keeps its tensors on their device (no host sync, no per-sample Python loop);
:func:`reduce_epoch` makes the one all-reduce of a distributed epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gwa_diag.alignment import BETA, MIN_DENOMINATOR, Moments, alignment_from_head

__all__ = ["FLOAT_COLUMNS", "INT_COLUMNS", "EpochTotals", "contradicted_rows", "reduce_epoch", "sample_signals"]

#: The columns of :func:`sample_signals`' outputs, in order.
INT_COLUMNS = ("label", "pred")
FLOAT_COLUMNS = ("alignment", "margin", "loss", "p_label", "p_pred")


def sample_signals(scores: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
                   feature_norm: torch.Tensor, weight_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample of one batch: ``(ints [B, 2] int64: label, pred; floats [B, 5] float32:
    alignment, margin, loss, p_label, p_pred)``, computed in float32 whatever the forward's
    precision.

    Args:
        scores: ``W z`` from the weights of the forward itself, float32 [B, C].
        logits: the head's output as the loss saw it, [B, C].
        targets: class indices [B] or soft targets [B, C].
        labels: the class index per sample [B] (the targets' argmax for soft targets).
        feature_norm: ``||z_i||`` [B]; weight_norm: ``||W||_F`` (scalar).

    Directions: alignment, margin and p_label are lower = more suspicious; loss is higher =
    more suspicious.
    """
    with torch.no_grad(), torch.autocast(device_type=logits.device.type, enabled=False):
        logits = logits.float()
        align = alignment_from_head(scores, logits, targets, feature_norm, weight_norm)
        idx = labels.long().unsqueeze(1)
        logit_y = logits.gather(1, idx).squeeze(1)
        others = logits.scatter(1, idx, float("-inf"))
        margin = logit_y - others.max(dim=1).values
        logp = F.log_softmax(logits, dim=1)
        if targets.ndim == 1:
            loss = -logp.gather(1, idx).squeeze(1)
        else:
            loss = -(targets.float() * logp).sum(dim=1)
        p_label = logp.gather(1, idx).squeeze(1).exp()
        top = logp.max(dim=1)
        pred, p_pred = top.indices, top.values.exp()
        return torch.stack([labels.long(), pred], 1), torch.stack([align, margin, loss, p_label, p_pred], 1)


def contradicted_rows(ints: torch.Tensor, floats: torch.Tensor, finite: torch.Tensor, num_classes: int,
                      world_size: int) -> torch.Tensor:
    """How many rows the model confidently contradicted (float64 scalar on the rows' device):
    predicted ``j != label`` with ``p(j)`` at least class ``j``'s threshold, the mean
    ``p(label)`` of the rows labelled ``j`` this epoch (confident learning's per-class
    threshold, Northcutt et al. 2021; the analysis' forms: :mod:`gwa_diag.analysis.contradiction`).
    Masks, not boolean indexing: no host sync."""
    label, pred = ints[:, 0].long(), ints[:, 1].long()
    ok = finite & torch.isfinite(floats[:, 3]) & torch.isfinite(floats[:, 4])
    sums = torch.zeros(2, num_classes, dtype=torch.float64, device=floats.device)
    sums[0].index_add_(0, label, torch.where(ok, floats[:, 3], 0.0).double())
    sums[1].index_add_(0, label, ok.double())
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(sums)  # every rank's thresholds over the whole epoch
    # A class nobody is labelled with has no threshold: predicting it never counts.
    threshold = torch.where(sums[1] > 0, sums[0] / sums[1].clamp_min(1.0), torch.inf)
    hits = ok & (pred != label) & (floats[:, 4].double() >= threshold[pred.clamp(0, num_classes - 1)])
    return hits.double().sum()


@dataclass(frozen=True)
class EpochTotals:
    """One epoch's summary over every rank's rows (:func:`reduce_epoch`)."""

    moments: dict  # the GWA moments and score (Moments.compute().as_dict())
    train_loss: float  # mean over the finite losses; NaN when none
    train_acc: float  # share of rows predicted as labelled (non-finite rows count as wrong)
    contradicted: float  # share of rows confidently contradicted

    def as_row(self) -> dict:
        return {**self.moments, "train_loss": self.train_loss, "train_acc": self.train_acc,
                "contradicted": self.contradicted}


def reduce_epoch(ints: torch.Tensor, floats: torch.Tensor, num_classes: int, world_size: int) -> EpochTotals:
    """The epoch's totals from its rows (``ints``, ``floats`` as :func:`sample_signals` makes
    them, concatenated): power sums of the alignment, loss, accuracy and contradicted counts,
    combined across ranks with one all-reduce, then one host sync."""
    moments = Moments.from_scores(floats[:, 0])
    finite_loss = torch.isfinite(floats[:, 2])
    loss_sum = torch.where(finite_loss, floats[:, 2], 0.0).double().sum()
    # Rows with non-finite logits have no prediction: they count as wrong, never as correct
    # (their argmax would be class 0), and train_acc is NaN when no row has one.
    finite = torch.isfinite(floats[:, 0])
    correct = ((ints[:, 1] == ints[:, 0]) & finite).double().sum()
    contradicted = contradicted_rows(ints, floats, finite, num_classes, world_size)
    totals = torch.cat([moments.as_tensor().to(floats.device),
                        torch.stack([loss_sum, correct, finite_loss.double().sum(), contradicted])])
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(totals)
    totals = totals.cpu()
    result = Moments(totals[:6]).compute(beta=BETA, min_denominator=MIN_DENOMINATOR)
    n_rows = result.n + result.n_nan
    return EpochTotals(
        moments=result.as_dict(),
        # Mean over the finite losses: a diverged epoch reads NaN, never a perfect 0.
        train_loss=float(totals[6]) / float(totals[8]) if float(totals[8]) else float("nan"),
        train_acc=float(totals[7]) / n_rows if result.n else float("nan"),
        # The training phase reads the share of wrong labels from it (gwa_diag.phase_rule).
        contradicted=float(totals[9]) / n_rows if result.n else float("nan"),
    )
