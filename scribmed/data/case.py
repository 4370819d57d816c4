"""The unit every reader yields: one 3D volume (or 2D image) with optional label and scribble.

Array convention (all readers, all layouts): arrays are ``(slices, H, W)``, slice axis first,
and ``spacing`` is given in the same axis order, in mm (``None`` when the layout stores none).
NIfTI files store ``(x, y, z)``; readers reverse the axes (``data.transpose(2, 1, 0)``) and the
zooms, and writers do the inverse, so a prediction written by scribmed reads back on the
reference's grid. 2D images are ``(1, H, W)``; multi-channel images (RGB microscopy) are
``(slices, C, H, W)``. Instance maps (``CaseArrays.instance``) are ``(slices, H, W)`` int32 with 0 =
background and ``k > 0`` = instance ``k``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # weak_labels imports ClassMap from here
    from scribmed.data.weak_labels import WeakLabel


@dataclass(frozen=True)
class ClassMap:
    """Class names by label value plus the scribble ignore value (unlabeled pixels)."""

    names: Mapping[int, str]
    ignore_index: int

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def foreground(self) -> list[int]:
        return [k for k in sorted(self.names) if k != 0]

    def to_json(self) -> dict:
        return {str(k): v for k, v in sorted(self.names.items())}


CARDIAC = ClassMap({0: "background", 1: "RV", 2: "Myo", 3: "LV"}, ignore_index=4)
ABDOMINAL = ClassMap(
    {0: "background", 1: "liver", 2: "right_kidney", 3: "left_kidney", 4: "spleen"}, ignore_index=5
)


@dataclass
class CaseArrays:
    """What a loader returns. ``affine`` is the NIfTI (x, y, z) affine when the source had one.

    ``instance`` is an instance map ``(slices, H, W)`` int32 (0 background, ``k`` = instance ``k``)
    for layouts that store instances (e.g. ``dsb2018``), else ``None``.
    """

    image: np.ndarray
    label: Optional[np.ndarray] = None
    scribble: Optional[np.ndarray] = None
    spacing: Optional[tuple[float, ...]] = None
    affine: Optional[np.ndarray] = None
    instance: Optional[np.ndarray] = None


@dataclass
class Case:
    """A lazily loaded case. ``load()`` reads once and caches; arrays are ``(slices, H, W)``.

    Attributes:
        case_id: unique id within the dataset (also the file stem of its prediction).
        patient_id: frames/phases of one patient share it; splits are by patient.
        source: the main file (or folder) this case comes from, for error messages.
        has_label / has_scribble / has_instance: known without loading (from the file listing).
        supervision: the case's training supervision stated by the dataset (``"full"``,
            ``"box"``, ``"point"``, ``"scribble"``, ``"none"``; see
            :mod:`scribmed.data.weak_labels`), ``None`` when the dataset states none.
        weak_loader: reads the case's box/point :class:`~scribmed.data.weak_labels.WeakLabel`
            (``None`` when it has none); :attr:`weak` calls it once and caches the result.
        source_files: the files the image is read from in slice order, when there is one per
            slice (DICOM: ``source_files[z]`` is slice ``z``); empty otherwise. Writers that
            reference the source (DICOM-SEG) need them.
    """

    case_id: str
    patient_id: str
    source: Path
    loader: Callable[[], CaseArrays] = field(repr=False)
    has_label: bool = False
    has_scribble: bool = False
    has_instance: bool = False
    _cache: Optional[CaseArrays] = field(default=None, repr=False)
    supervision: Optional[str] = None
    weak_loader: Optional[Callable[[], "WeakLabel"]] = field(default=None, repr=False)
    _weak: Optional["WeakLabel"] = field(default=None, repr=False)
    source_files: tuple[Path, ...] = field(default=(), repr=False)

    def load(self) -> CaseArrays:
        if self._cache is None:
            self._cache = self.loader()
        return self._cache

    def release(self) -> None:
        """Drop the cached arrays (e.g. after a case has been cached elsewhere)."""
        self._cache = None

    @property
    def image(self) -> np.ndarray:
        return self.load().image

    @property
    def label(self) -> Optional[np.ndarray]:
        return self.load().label

    @property
    def scribble(self) -> Optional[np.ndarray]:
        return self.load().scribble

    @property
    def instance(self) -> Optional[np.ndarray]:
        return self.load().instance

    @property
    def spacing(self) -> Optional[tuple[float, ...]]:
        return self.load().spacing

    @property
    def affine(self) -> Optional[np.ndarray]:
        return self.load().affine

    @property
    def has_weak(self) -> bool:
        """Whether the case has a box/point weak label (known without reading it)."""
        return self.weak_loader is not None

    @property
    def weak(self) -> Optional["WeakLabel"]:
        """The box/point weak label, read on first access and cached (``None`` when there is none).

        :meth:`release` keeps it: it is small.
        """
        if self._weak is None and self.weak_loader is not None:
            self._weak = self.weak_loader()
        return self._weak


def patients_of(cases: Sequence[Case]) -> list[str]:
    """Sorted unique patient ids."""
    return sorted({c.patient_id for c in cases})
