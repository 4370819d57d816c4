"""S4M's structural distillation: match the *shape* of two feature spaces.

The student should arrange its pixels the way SAM's mask decoder does, whatever the channel
count of either. Per image, ``P`` (= 128) query pixels are sampled (half from the foreground when
a foreground mask is given, the rest uniformly over the image); each pixel's feature vector is
L2-normalised, giving the ``P x P`` cosine self-similarity matrices ``S_s`` (student) and ``S_t``
(teacher); the loss is the smooth-L1 (Huber, ``beta``) distance between them, averaged over the
``P²`` entries and the batch:

    loss = mean_b mean_ij huber_beta(S_s[b, i, j] - S_t[b, i, j])

Teacher features ``(B, Ct, h, w)`` are detached and resized bilinearly to the student's grid
``(H, W)`` first, so both matrices index the same pixels. A positive per-pixel rescaling of
either feature map leaves the loss unchanged.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StructuralDistillationLoss", "structural_distillation_loss", "sample_query_pixels"]


def _choose(pool: int, k: int, generator: Optional[torch.Generator], device: torch.device) -> torch.Tensor:
    """``k`` indices into ``range(pool)``: without replacement when ``pool >= k``, else with."""
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=device)
    if pool >= k:
        return torch.randperm(pool, generator=generator, device=device)[:k]
    return torch.randint(0, pool, (k,), generator=generator, device=device)


def sample_query_pixels(
    batch: int,
    hw: tuple[int, int],
    num_points: int = 128,
    foreground: Optional[torch.Tensor] = None,
    fg_fraction: float = 0.5,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Flat pixel indices ``(B, P)`` of the query points (row-major over ``(H, W)``).

    ``round(P * fg_fraction)`` come from each image's foreground pixels (with replacement when it
    has fewer; none when it has no foreground or ``foreground`` is ``None``), the rest uniformly
    from all pixels (with replacement only when the image has fewer than that many pixels).
    Indices are drawn on the generator's device (CPU by default) from ``generator``.
    """
    h, w = int(hw[0]), int(hw[1])
    device = generator.device if generator is not None else torch.device("cpu")
    n_fg = int(round(num_points * fg_fraction)) if foreground is not None else 0
    rows = []
    for b in range(batch):
        fg_idx = torch.zeros(0, dtype=torch.long, device=device)
        if n_fg:
            pool = torch.nonzero(foreground[b].reshape(-1).to(device), as_tuple=False).reshape(-1)
            if pool.numel():
                fg_idx = pool[_choose(int(pool.numel()), n_fg, generator, device)]
        rest = _choose(h * w, num_points - int(fg_idx.numel()), generator, device)
        rows.append(torch.cat([fg_idx, rest]))
    return torch.stack(rows) if rows else torch.zeros(0, num_points, dtype=torch.long, device=device)


def _similarity(features: torch.Tensor, index: torch.Tensor, eps: float) -> torch.Tensor:
    """Cosine self-similarity ``(B, P, P)`` of the features ``(B, C, H, W)`` at flat ``index`` ``(B, P)``."""
    flat = features.flatten(2)  # (B, C, HW)
    picked = torch.gather(flat, 2, index[:, None, :].expand(-1, flat.shape[1], -1))  # (B, C, P)
    unit = F.normalize(picked, dim=1, eps=eps)
    return unit.transpose(1, 2) @ unit


def structural_distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    foreground: Optional[torch.Tensor] = None,
    num_points: int = 128,
    fg_fraction: float = 0.5,
    beta: float = 1.0,
    generator: Optional[torch.Generator] = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Huber distance between the student's and the teacher's cosine self-similarity matrices.

    Args:
        student: ``(B, Cs, H, W)`` student features (gradients flow into them).
        teacher: ``(B, Ct, h, w)`` teacher (SAM decoder) features; detached, resized bilinearly
            to ``(H, W)`` when ``(h, w)`` differs.
        foreground: optional ``(B, H, W)`` (or ``(B, 1, H, W)``) mask; non-zero pixels supply
            ``round(num_points * fg_fraction)`` of each image's query points.
        num_points: query points per image ``P`` (S4M: 128).
        fg_fraction: share of the points taken from the foreground (0.5).
        beta: smooth-L1 threshold (1.0; 0 gives L1).
        generator: ``torch.Generator`` for the point draw (deterministic when seeded).
        eps: norm floor of the L2 normalisation (an all-zero feature gives zero similarities).

    Returns:
        Scalar loss (mean over entries and batch).

    Raises:
        ValueError: wrong ranks, batch sizes or foreground shape; bad ``num_points`` /
            ``fg_fraction`` / ``beta``.
    """
    if student.ndim != 4 or teacher.ndim != 4:
        raise ValueError(f"student and teacher must be (B, C, H, W), got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"student batch {student.shape[0]} and teacher batch {teacher.shape[0]} differ")
    if int(num_points) < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if not 0.0 <= float(fg_fraction) <= 1.0:
        raise ValueError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    b, _, h, w = student.shape
    if foreground is not None:
        if foreground.ndim == 4 and foreground.shape[1] == 1:
            foreground = foreground[:, 0]
        if tuple(foreground.shape) != (b, h, w):
            raise ValueError(f"foreground must be (B, H, W) = {(b, h, w)}, got {tuple(foreground.shape)}")
        foreground = foreground.detach() != 0
    t = teacher.detach().to(student.dtype)
    if tuple(t.shape[-2:]) != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    index = sample_query_pixels(b, (h, w), int(num_points), foreground, float(fg_fraction), generator)
    index = index.to(student.device)
    s_sim = _similarity(student, index, eps)
    t_sim = _similarity(t.to(student.device), index, eps)
    return F.smooth_l1_loss(s_sim, t_sim, beta=float(beta), reduction="mean")


class StructuralDistillationLoss(nn.Module):
    """Module form of :func:`structural_distillation_loss`.

    Args:
        num_points: query points per image (128).
        fg_fraction: share of the points from the foreground (0.5).
        beta: smooth-L1 threshold (1.0).
        seed: seeds the module's own CPU ``torch.Generator`` (advancing between calls, so a run
            is reproducible); ``None`` draws from torch's global generator.
        eps: L2-normalisation floor.

    Call ``loss(student (B, Cs, H, W), teacher (B, Ct, h, w), foreground=None)``.
    """

    def __init__(self, num_points: int = 128, fg_fraction: float = 0.5, beta: float = 1.0,
                 seed: Optional[int] = None, eps: float = 1e-8) -> None:
        super().__init__()
        if int(num_points) < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        if not 0.0 <= float(fg_fraction) <= 1.0:
            raise ValueError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.num_points = int(num_points)
        self.fg_fraction = float(fg_fraction)
        self.beta = float(beta)
        self.eps = float(eps)
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                foreground: Optional[torch.Tensor] = None) -> torch.Tensor:
        return structural_distillation_loss(student, teacher, foreground, self.num_points, self.fg_fraction,
                                            self.beta, self.generator, self.eps)

    def extra_repr(self) -> str:
        return f"num_points={self.num_points}, fg_fraction={self.fg_fraction}, beta={self.beta}"
