"""Gradient-weight alignment: the pure math (torch tensors in, no autograd).

Per-sample alignment (Hölzl et al., NeurIPS 2025) is the cosine between the negative
cross-entropy gradient of one sample w.r.t. the head weight ``W`` (C x D) and ``W`` itself::

    a_i = cos(-dL_i/dW, W) = -((p_i - y_i)^T W z_i) / (||p_i - y_i|| ||z_i|| ||W||_F)

Direction: **lower is more suspicious**. ``a < 0`` means the sample pulls the head against
its current direction (mislabeled, atypical or being memorised).

The formulas as the paper writes them are ``alignment_reference`` and ``gwa_reference``:
a few readable lines each, float64, used by the tests as the reference. The fast path
(``alignment_from_head``, ``per_sample_alignment``, ``Moments``) computes the same numbers in
O(B (C + D)) from values the forward pass already has, without per-sample gradients.

The dataset-level score of one epoch is ``GWA = mean(a) / (K + 1.2)`` with ``K`` the
population excess kurtosis of that epoch's scores. Moments are kept as float64 power sums
so that batches, epochs-in-progress and distributed workers merge exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch

# The early-stopping rule needs no torch; it lives apart so the analysis can import it
# without loading torch, and is re-exported here with the rest of the math.
from gwa_diag.early_stopping import EarlyStopResult, select_epoch
from gwa_diag.checks import InputError

__all__ = [
    "BETA",
    "MIN_DENOMINATOR",
    "per_sample_alignment",
    "alignment_from_head",
    "alignment_reference",
    "Moments",
    "GWAResult",
    "gwa_from_scores",
    "gwa_reference",
    "EarlyStopResult",
    "select_epoch",
]

BETA = 1.2
# GWA = mean / (K + beta). Near K + beta = 0 the score explodes and below it the sign flips;
# an epoch whose denominator is under this floor is reported as undefined (it would
# otherwise be more than 20x its own mean and dominate early-stopping selection).
MIN_DENOMINATOR = 0.05


def _check_inputs(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 2:
        raise InputError(f"logits must be [batch, classes], got shape {tuple(logits.shape)}")
    if targets.ndim == 1:
        if targets.shape[0] != logits.shape[0]:
            raise InputError(
                f"targets has {targets.shape[0]} entries but the batch has {logits.shape[0]}"
            )
        if targets.is_floating_point() or targets.is_complex():
            raise TypeError("class-index targets must be an integer tensor (or pass soft targets [B, C])")
    elif targets.ndim == 2:
        if targets.shape != logits.shape:
            raise InputError(
                f"soft targets must have the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}"
            )
    else:
        raise InputError("targets must be class indices [B] or soft targets [B, C]")


def alignment_from_head(
    scores: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    feature_norm: torch.Tensor,
    weight_norm: torch.Tensor,
) -> torch.Tensor:
    """Alignment from quantities the forward pass already has (float32, shape [B]).

    ``scores`` is ``W z`` (= logits - bias) in float32, ``logits`` gives the softmax that
    the loss used, ``feature_norm`` is ``||z_i||`` and ``weight_norm`` is ``||W||_F``.
    Lower is more suspicious.
    """
    logits = logits.float()
    scores = scores.float()
    if targets.ndim == 1:
        # One-hot target y: p - y is, up to the positive factor sum_{c!=y} p_c, the vector q
        # with q_c = softmax over the non-label logits and q_y = -1. Working with q keeps the
        # direction exact when the softmax saturates (p_y rounds to 1 in float32), where the
        # naive p - y would lose the label entry entirely.
        idx = targets.long().unsqueeze(1)
        masked = logits.scatter(1, idx, float("-inf"))
        q = torch.softmax(masked, dim=1)
        s_y = scores.gather(1, idx).squeeze(1)
        numerator = s_y - (q * scores).sum(dim=1)
        grad_norm = torch.sqrt(1.0 + (q * q).sum(dim=1))
    else:
        probs = torch.softmax(logits, dim=1)
        soft = targets.float()
        # The top class's entry p_top - q_top cancels when p_top rounds to 1 (a confidently
        # fitted sample with a one-hot or near one-hot target), which loses the entry and can
        # flip the sign of the alignment. (1 - q_top) - sum_{c != top} p_c is the same number
        # without the cancellation: the probabilities sum to 1 and each small p_c is exact
        # to float32's relative precision.
        top = logits.argmax(dim=1, keepdim=True)
        rest = probs.scatter(1, top, 0.0).sum(dim=1, keepdim=True)
        off_top = 1.0 - soft.gather(1, top)
        diff = (probs - soft).scatter(1, top, off_top - rest)
        # A target with all its mass on the top class gives p - q = rest * (r - e_top), with
        # r the softmax over the other logits: the class-index path's direction. Using it
        # directly keeps the direction once rest underflows to 0 (logit gaps beyond ~87).
        on_top = (off_top == 0) & (soft.scatter(1, top, 0.0) == 0).all(dim=1, keepdim=True)
        fitted = torch.softmax(logits.scatter(1, top, float("-inf")), dim=1).scatter(1, top, -1.0)
        diff = torch.where(on_top, fitted, diff)
        numerator = -(diff * scores).sum(dim=1)
        grad_norm = diff.norm(dim=1)
    denom = grad_norm * feature_norm.float() * weight_norm.float()
    # A zero gradient (perfect soft fit) or zero features gives no pull either way: 0.
    # NaN/inf logits stay NaN so that they are counted, never silently turned into numbers.
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    out = torch.where(denom > 0, numerator / safe, torch.zeros_like(numerator))
    return torch.where(torch.isfinite(logits).all(dim=1), out, torch.full_like(out, float("nan")))


def alignment_reference(
    logits: torch.Tensor,
    features: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Textbook per-sample alignment, float64, shape [B]; lower is more suspicious.

    The slow, readable reference for tests and for reading: it forms every sample's
    last-layer gradient ``dL_i/dW = (p_i - y_i) z_i^T`` explicitly (O(B C D) memory) and
    takes its cosine with ``W``::

        a_i = cos(-dL_i/dW, W) = -<(p_i - y_i) z_i^T, W>_F / (||(p_i - y_i) z_i^T||_F ||W||_F)

    ``a_i < 0``: the sample pulls the head against its current direction. Never use it for
    recording: use ``per_sample_alignment`` / ``alignment_from_head``, which need no per-sample
    gradients and keep the direction when the softmax saturates. Here, once ``1 - p_y``
    rounds to 0 (a label-logit margin beyond about 37 in float64), ``p - y`` loses its label
    entry and the result is wrong, often with the wrong sign.

    Args:
        logits: head outputs [B, C] (``W z + b``) that give the softmax ``p``.
        features: head inputs ``z`` [B, D].
        weight: head weight ``W`` [C, D], the one that produced ``logits`` (no bias).
        targets: class indices [B] (int) or soft targets [B, C].
    """
    _check_inputs(logits, targets)
    p = torch.softmax(logits.detach().double(), dim=1)
    if targets.ndim == 1:
        y = torch.nn.functional.one_hot(targets.long(), p.shape[1]).double()
    else:
        y = targets.double()
    z, w = features.detach().double(), weight.detach().double()
    grads = (p - y)[:, :, None] * z[:, None, :]  # [B, C, D]: one C x D gradient per sample
    numerator = -(grads * w).sum(dim=(1, 2))
    denom = grads.flatten(1).norm(dim=1) * w.norm()
    # Same conventions as the fast path: no gradient (or no features) means no pull, 0;
    # NaN logits stay NaN.
    return torch.where(denom == 0, 0.0, numerator / denom)


def per_sample_alignment(
    features: torch.Tensor,
    logits: torch.Tensor,
    targets: torch.Tensor,
    weight: torch.Tensor,
) -> torch.Tensor:
    """Per-sample alignment ``a_i`` in [-1, 1], float32, shape [B]; lower is more suspicious.

    Args:
        features: head inputs ``z`` [B, D] (any float dtype; computed in float32).
        logits: head outputs [B, C] as used by the loss (bf16/fp16 allowed).
        targets: class indices [B] (int) or soft targets [B, C] (rows summing to 1).
        weight: head weight ``W`` [C, D], the one that produced ``logits``.
    """
    _check_inputs(logits, targets)
    if features.ndim != 2 or features.shape[0] != logits.shape[0]:
        raise InputError(
            f"features must be [batch={logits.shape[0]}, dim], got {tuple(features.shape)}"
        )
    if weight.shape != (logits.shape[1], features.shape[1]):
        raise InputError(
            f"weight must be [classes={logits.shape[1]}, dim={features.shape[1]}], got {tuple(weight.shape)}"
        )
    with torch.no_grad():
        z = features.detach().float()
        w = weight.detach().float()
        return alignment_from_head(z @ w.T, logits.detach(), targets, z.norm(dim=1), w.norm())


@dataclass(frozen=True)
class GWAResult:
    """Dataset-level score of one set of alignments (one epoch).

    ``gwa`` is None when undefined; ``reason`` then says why. Higher GWA = better aligned
    training set (early stopping picks the highest).
    """

    n: int
    n_nan: int
    mean: float | None
    m2: float | None
    m4: float | None
    kurtosis: float | None
    gwa: float | None
    valid: bool
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Moments:
    """Power sums (n, sum a, sum a^2, sum a^3, sum a^4) in float64, plus a NaN count.

    They add exactly, so batches, ranks and partial epochs merge with ``+`` or one
    all-reduce of ``as_tensor()``. Non-finite scores are counted in ``n_nan`` and kept out
    of the sums.
    """

    sums: torch.Tensor = field(default_factory=lambda: torch.zeros(6, dtype=torch.float64))

    @classmethod
    def from_scores(cls, scores: torch.Tensor) -> "Moments":
        a = scores.detach().to(torch.float64).reshape(-1)
        finite = torch.isfinite(a)
        x = torch.where(finite, a, torch.zeros_like(a))
        f = finite.to(torch.float64)
        sums = torch.stack(
            [f.sum(), x.sum(), (x * x).sum(), (x**3).sum(), (x**4).sum(), (1.0 - f).sum()]
        )
        return cls(sums)

    def __add__(self, other: "Moments") -> "Moments":
        return Moments(self.sums + other.sums.to(self.sums.device))

    def as_tensor(self) -> torch.Tensor:
        """The 6 float64 sums [n, s1, s2, s3, s4, n_nan] (all-reduce with SUM)."""
        return self.sums

    def compute(self, *, beta: float = BETA, min_denominator: float = MIN_DENOMINATOR) -> GWAResult:
        n, s1, s2, s3, s4, n_nan = (float(v) for v in self.sums.detach().cpu().tolist())
        return _gwa_from_sums(n, s1, s2, s3, s4, int(n_nan), beta=beta, min_denominator=min_denominator)


def _gwa_from_sums(
    n: float, s1: float, s2: float, s3: float, s4: float, n_nan: int, *, beta: float, min_denominator: float
) -> GWAResult:
    if n <= 0:
        return GWAResult(0, n_nan, None, None, None, None, None, False, "no finite alignment scores")
    mu = s1 / n
    e2, e3, e4 = s2 / n, s3 / n, s4 / n
    m2 = max(e2 - mu * mu, 0.0)
    m4 = max(e4 - 4 * mu * e3 + 6 * mu * mu * e2 - 3 * mu**4, 0.0)
    # Relative floor: with scores in [-1, 1], a variance this small is rounding noise.
    if m2 <= 1e-12 * max(e2, 1e-300):
        return GWAResult(int(n), n_nan, mu, m2, m4, None, None, False, "zero variance (m2 = 0): kurtosis undefined")
    kurt = m4 / (m2 * m2) - 3.0
    denom = kurt + beta
    if denom <= min_denominator:
        return GWAResult(
            int(n), n_nan, mu, m2, m4, kurt, None, False,
            f"kurtosis + {beta:g} = {denom:.4g} <= {min_denominator:g}: GWA would explode or flip sign",
        )
    return GWAResult(int(n), n_nan, mu, m2, m4, kurt, mu / denom, True, "ok")


def gwa_from_scores(
    scores: torch.Tensor | Sequence[float], *, beta: float = BETA, min_denominator: float = MIN_DENOMINATOR
) -> GWAResult:
    """GWA of one set of per-sample alignments (population moments). Higher = better."""
    t = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(list(scores), dtype=torch.float64)
    return Moments.from_scores(t).compute(beta=beta, min_denominator=min_denominator)


def gwa_reference(scores: Sequence[float] | torch.Tensor, *, beta: float = BETA) -> float:
    """Textbook GWA of one epoch's alignments: ``mean / (excess kurtosis + beta)``.

    Population (biased) moments, computed directly in float64 from the scores. Higher = better
    aligned training set. The readable reference for tests: unlike ``gwa_from_scores`` it has
    no guards, so zero variance gives NaN and ``K + beta <= 0`` gives inf or a flipped sign.
    """
    a = torch.as_tensor(scores, dtype=torch.float64).reshape(-1)
    mu = a.mean()
    m2 = ((a - mu) ** 2).mean()
    m4 = ((a - mu) ** 4).mean()
    kurtosis = m4 / m2**2 - 3.0
    return float(mu / (kurtosis + beta))
