"""DMPLS's configuration: the shared segmentor schedule plus the pseudo-label weight (Luo et al., MICCAI 2022)."""

from __future__ import annotations

from dataclasses import dataclass

from scribmed.training.config import TrainConfig

__all__ = ["DMPLSConfig"]


@dataclass
class DMPLSConfig(TrainConfig):
    """Hyper-parameters of one DMPLS training run (defaults: the paper's).

    ``L = 0.5 * (pCE(y1, s) + pCE(y2, s)) + lam * 0.5 * (Dice(y1, PL) + Dice(y2, PL))``.

    Attributes:
        lam: weight of the pseudo-label Dice term (paper: 0.5).
    """

    lam: float = 0.5

    RESULT_FIELDS = (*TrainConfig.RESULT_FIELDS, "lam")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam < 0:
            raise ValueError(f"DMPLSConfig.lam must be >= 0, got {self.lam}")
