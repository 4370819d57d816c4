"""One generated phantom volume: image, label, scribble, spacing and metadata.

What :func:`~scribmed.data.phantoms.generate_cardiac` / ``generate_abdominal`` return; turns into
an in-memory :class:`~scribmed.data.case.Case` for pipelines that take cases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scribmed.data.case import Case, CaseArrays, ClassMap


@dataclass
class PhantomCase:
    """One generated volume.

    Attributes:
        case_id / patient_id: ids in the convention of the target layout.
        image: float32 ``(slices, H, W)`` in [0, 1].
        label: uint8 ``(slices, H, W)`` full ground truth.
        scribble: uint16 ``(slices, H, W)`` synthesised scribble (``class_map.ignore_index`` = unlabeled).
        spacing: ``(dz, dy, dx)`` in mm.
        class_map: ``CARDIAC`` or ``ABDOMINAL``.
        meta: e.g. ``{"phase": "ED", "frame": 1}`` or ``{"modality": "T1"}``.
    """

    case_id: str
    patient_id: str
    image: np.ndarray
    label: np.ndarray
    scribble: Optional[np.ndarray]
    spacing: tuple[float, float, float]
    class_map: ClassMap
    meta: dict[str, Any] = field(default_factory=dict)

    def to_case(self, source: str | Path = "<phantom>") -> Case:
        """An in-memory :class:`Case` (already loaded), for pipelines that take cases."""
        arrays = CaseArrays(self.image, self.label, self.scribble, self.spacing)
        return Case(
            self.case_id,
            self.patient_id,
            Path(source),
            loader=lambda: arrays,
            has_label=True,
            has_scribble=self.scribble is not None,
            _cache=arrays,
        )


__all__ = ["PhantomCase"]
