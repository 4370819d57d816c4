"""The DMPLS objective (Luo et al., MICCAI 2022) for a dual-branch network.

``L = 1/2 [pCE(y1, s) + pCE(y2, s)] + lam * 1/2 [Dice(y1, PL) + Dice(y2, PL)]`` with
``PL = argmax(alpha * softmax(y1) + (1 - alpha) * softmax(y2))`` computed from detached outputs and
``alpha ~ U(0, 1)`` drawn once per call (one training iteration) from the loss's own
``torch.Generator``. The generator's state is part of ``state_dict()`` so a resumed run draws the
same alphas as an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from scribmed.losses.partial_ce import PartialCrossEntropy
from scribmed.losses.pseudo_label_dice import SoftDiceLoss, mixed_pseudo_label

__all__ = ["DMPLSLoss"]


class DMPLSLoss(nn.Module):
    """Partial CE on both branches plus soft Dice of both against their random mixture's argmax.

    Args:
        num_classes: classes including background.
        ignore_index: the scribbles' unlabelled value.
        lam: weight of the pseudo-label Dice term (0.5 in DMPLS).
        generator: CPU generator for alpha; by default a new one seeded from the global torch
            RNG, so ``torch.manual_seed`` before construction makes runs reproducible.

    Call ``loss(logits_main, logits_aux, scribble)`` with logits ``(B, C, H, W)`` and the scribble
    ``(B, H, W)`` or ``(B, 1, H, W)``; it returns ``(total, parts)`` where ``parts`` holds the
    detached ``pce`` and ``dice`` terms (each already averaged over the two branches) and the
    float ``alpha`` used.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int,
        lam: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.lam = float(lam)
        self.pce = PartialCrossEntropy(ignore_index)
        self.dice = SoftDiceLoss(num_classes)
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        if generator.device.type != "cpu":
            raise ValueError("the alpha generator must be a CPU torch.Generator")
        self.generator = generator

    def manual_seed(self, seed: int) -> "DMPLSLoss":
        """Reseed the alpha generator; returns self."""
        self.generator.manual_seed(int(seed))
        return self

    def draw_alpha(self) -> float:
        """One draw of alpha ~ U(0, 1) from the loss's generator."""
        return float(torch.rand((), generator=self.generator).item())

    def forward(
        self, logits_main: torch.Tensor, logits_aux: torch.Tensor, scribble: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if logits_main.shape != logits_aux.shape:
            raise ValueError(
                f"branch logits differ in shape: {tuple(logits_main.shape)} vs {tuple(logits_aux.shape)}"
            )
        if logits_main.shape[1] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} channels, got logits {tuple(logits_main.shape)}")
        p_main = torch.softmax(logits_main, dim=1)
        p_aux = torch.softmax(logits_aux, dim=1)
        alpha = self.draw_alpha()
        pseudo = mixed_pseudo_label(p_main, p_aux, alpha)
        pce = 0.5 * (self.pce(logits_main, scribble) + self.pce(logits_aux, scribble))
        dice = 0.5 * (self.dice(p_main, pseudo) + self.dice(p_aux, pseudo))
        total = pce + self.lam * dice
        return total, {"pce": pce.detach(), "dice": dice.detach(), "alpha": alpha}

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator_state": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator_state"])

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ignore_index={self.ignore_index}, lam={self.lam}"
