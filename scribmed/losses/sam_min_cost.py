"""WISH's mask cost against SAM: the minimum over SAM's candidate masks.

A point or box prompt is ambiguous (a nucleus, its cell, the cluster), and SAM answers it with
``M`` (= 3) candidate masks. WISH does not pick one in advance: each predicted instance mask is
compared with all of them and matched to whichever it agrees with best, so the cost is

    cost_n = min_m c(pred_n, candidate_nm)

with ``c`` the soft Dice loss, the binary cross-entropy, or their sum (``"dice+bce"``):

- Dice: ``1 - (2 Σ p t + s) / (Σ p + Σ t + s)`` with smoothing ``s`` (1, as Mask2Former's
  matching costs; two empty masks cost 0);
- BCE: the mean over pixels of ``-(t log p + (1 - t) log(1 - p))`` (from logits: the stable
  ``softplus`` form; from probabilities: logs clamped at -100 as in PyTorch).

Candidates are binarised (``> threshold``, SAM's logit 0, or booleans) and never differentiated;
the gradient flows into the prediction through the chosen candidate's cost.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["COSTS", "SAMMinCostLoss", "sam_min_cost"]

COSTS: tuple[str, ...] = ("dice", "bce", "dice+bce")
_LOG_FLOOR = -100.0


def _pairwise_costs(pred: torch.Tensor, target: torch.Tensor, cost: str, from_logits: bool,
                    smooth: float) -> torch.Tensor:
    """``(N, M)`` cost of each prediction ``(N, HW)`` against each of its targets ``(N, M, HW)``."""
    hw = pred.shape[-1]
    out = torch.zeros(target.shape[:2], dtype=pred.dtype, device=pred.device)
    if from_logits:
        p = torch.sigmoid(pred)
        neg_log_p, neg_log_1mp = F.softplus(-pred), F.softplus(pred)
    else:
        p = pred
        neg_log_p = -torch.log(pred).clamp_min(_LOG_FLOOR)
        neg_log_1mp = -torch.log1p(-pred).clamp_min(_LOG_FLOOR)
    if cost in ("dice", "dice+bce"):
        inter = torch.einsum("nx,nmx->nm", p, target)
        out = out + 1.0 - (2.0 * inter + smooth) / (p.sum(-1, keepdim=True) + target.sum(-1) + smooth)
    if cost in ("bce", "dice+bce"):
        pos = torch.einsum("nx,nmx->nm", neg_log_p, target)
        neg = torch.einsum("nx,nmx->nm", neg_log_1mp, 1.0 - target)
        out = out + (pos + neg) / hw
    return out


def sam_min_cost(
    pred: torch.Tensor,
    candidates: torch.Tensor,
    cost: str = "dice+bce",
    valid: Optional[torch.Tensor] = None,
    from_logits: bool = True,
    smooth: float = 1.0,
    threshold: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per instance, the lowest cost of the prediction over SAM's candidate masks.

    Args:
        pred: ``(N, H, W)`` per-instance logits (``from_logits``) or probabilities in [0, 1].
        candidates: ``(N, M, H, W)`` SAM's candidates per instance: logits (in the mask where
            ``> threshold``), booleans, or binary floats; detached.
        cost: ``"dice"``, ``"bce"`` or ``"dice+bce"`` (the sum).
        valid: optional ``(N, M)`` bool; ``False`` excludes a candidate.
        from_logits: ``pred`` holds logits (else probabilities).
        smooth: Dice smoothing ``s``.
        threshold: candidate binarisation threshold (non-boolean candidates).

    Returns:
        ``(costs, index)``: ``(N,)`` minimum costs (differentiable w.r.t. ``pred``) and int64
        ``(N,)`` chosen candidates. A row with no valid candidate gets cost 0 and index -1.

    Raises:
        ValueError: shapes do not match or ``cost`` is unknown.
    """
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    if pred.ndim != 3:
        raise ValueError(f"pred must be (N, H, W), got {tuple(pred.shape)}")
    if candidates.ndim != 4 or candidates.shape[0] != pred.shape[0] or candidates.shape[2:] != pred.shape[1:]:
        raise ValueError(f"candidates must be (N, M, H, W) = ({pred.shape[0]}, M, {pred.shape[1]}, {pred.shape[2]}), "
                         f"got {tuple(candidates.shape)}")
    n, m = int(candidates.shape[0]), int(candidates.shape[1])
    if valid is not None:
        valid = torch.as_tensor(valid, device=pred.device).bool()
        if tuple(valid.shape) != (n, m):
            raise ValueError(f"valid must be (N, M) = {(n, m)}, got {tuple(valid.shape)}")
    if n == 0 or m == 0:
        zero = pred.sum() * 0.0
        return zero.expand(n), torch.full((n,), -1, dtype=torch.long, device=pred.device)
    cand = candidates.detach().to(pred.device)
    target = (cand if cand.dtype == torch.bool else cand > threshold).to(pred.dtype).flatten(2)
    costs = _pairwise_costs(pred.flatten(1), target, cost, from_logits, float(smooth))  # (N, M)
    if valid is not None:
        costs = torch.where(valid, costs, torch.full_like(costs, float("inf")))
    best, index = costs.min(dim=1)
    if valid is not None:
        any_valid = valid.any(dim=1)
        best = torch.where(any_valid, best, torch.zeros_like(best))
        index = torch.where(any_valid, index, torch.full_like(index, -1))
    return best, index


class SAMMinCostLoss(nn.Module):
    """Mean over instances of :func:`sam_min_cost` (WISH's mask loss against SAM's candidates).

    Rows without a valid candidate are left out of the mean; with none at all (or ``N = 0``)
    the loss is 0 and still carries a graph to ``pred``.

    Args:
        cost: ``"dice"``, ``"bce"`` or ``"dice+bce"`` (default).
        from_logits: predictions are logits (default) or probabilities.
        smooth: Dice smoothing (1).
        threshold: candidate binarisation threshold (0).

    Call ``loss(pred (N, H, W), candidates (N, M, H, W), valid=None)``.
    """

    def __init__(self, cost: str = "dice+bce", from_logits: bool = True, smooth: float = 1.0,
                 threshold: float = 0.0) -> None:
        super().__init__()
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
        self.cost = cost
        self.from_logits = bool(from_logits)
        self.smooth = float(smooth)
        self.threshold = float(threshold)

    def forward(self, pred: torch.Tensor, candidates: torch.Tensor,
                valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        costs, index = sam_min_cost(pred, candidates, self.cost, valid, self.from_logits, self.smooth,
                                    self.threshold)
        counted = (index >= 0).to(costs.dtype)
        if costs.numel() == 0:
            return pred.sum() * 0.0
        return (costs * counted).sum() / counted.sum().clamp_min(1.0)

    def extra_repr(self) -> str:
        return f"cost={self.cost!r}, from_logits={self.from_logits}, smooth={self.smooth}"
