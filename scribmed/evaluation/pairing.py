"""The one place predictions meet their reference cases: id, shape and spacing checks.

Every evaluation in scribmed (the cross-validation runner with predictions in memory,
``scribmed evaluate`` and the bundles' evaluate workflow with NIfTI files) pairs predictions with
references through :class:`PairedCases`, so a missing prediction, a reference without a label, a
shape mismatch or a spacing of the wrong length is reported the same way everywhere: a one-line
:class:`~scribmed.data.errors.DataError` naming the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

from scribmed.data.errors import DataError

__all__ = ["Pair", "Reference", "ReferenceCase", "PairedCases"]

#: a prediction: a label map in memory, or a NIfTI file written by scribmed (read on demand)
Prediction = Union[np.ndarray, Path]


class ReferenceCase(Protocol):
    """What pairing needs of a reference: a :class:`~scribmed.data.case.Case` satisfies it."""

    case_id: str
    source: Path

    @property
    def has_label(self) -> bool: ...

    @property
    def label(self) -> Optional[np.ndarray]: ...

    @property
    def spacing(self) -> Optional[tuple[float, ...]]: ...


class Reference:
    """A reference label map outside a dataset: held in memory, or a NIfTI label file read when needed.

    Satisfies :class:`ReferenceCase`; :meth:`release` drops what a file-backed reference read.
    """

    def __init__(
        self,
        case_id: str,
        source: Path,
        label: Optional[np.ndarray] = None,
        spacing: Optional[tuple[float, ...]] = None,
        from_file: bool = False,
    ) -> None:
        self.case_id, self.source = case_id, Path(source)
        self._label, self._spacing, self._from_file = label, spacing, from_file

    @classmethod
    def from_file(cls, case_id: str, path: Path) -> "Reference":
        """A label file (NIfTI, scribmed's convention) read on first use."""
        return cls(case_id, path, from_file=True)

    def _read(self) -> None:
        if self._from_file and self._label is None:
            from scribmed.data.nifti import read_label_nifti

            image = read_label_nifti(self.source, "reference")
            self._label, self._spacing = image.array, image.spacing

    @property
    def has_label(self) -> bool:
        return self._from_file or self._label is not None

    @property
    def label(self) -> Optional[np.ndarray]:
        self._read()
        return self._label

    @property
    def spacing(self) -> Optional[tuple[float, ...]]:
        self._read()
        return self._spacing

    def release(self) -> None:
        if self._from_file:
            self._label = self._spacing = None


@dataclass
class Pair:
    """A prediction and its reference on the same grid, ready for :func:`scribmed.metrics.evaluate_cases`."""

    case_id: str
    prediction: np.ndarray
    reference: np.ndarray
    spacing: Optional[tuple[float, ...]]

    def __iter__(self) -> Iterator:
        """Unpacks as ``(case_id, prediction, reference, spacing)``, the form ``evaluate_cases`` takes."""
        return iter((self.case_id, self.prediction, self.reference, self.spacing))


def _load(prediction: Prediction) -> np.ndarray:
    if isinstance(prediction, np.ndarray):
        return prediction
    from scribmed.data.nifti import read_label_nifti

    return read_label_nifti(Path(prediction), "prediction").array


class PairedCases:
    """The labelled references that have a prediction, paired with it, in reference order.

    Checks everything that can be checked without reading arrays when it is created (so a missing
    prediction fails before any work), has a length (progress bars show a total), and yields a
    :class:`Pair` per reference when iterated, checking shapes and spacing as it reads.

    Args:
        references: reference cases (``Case`` objects or :class:`Reference`); cases without a
            label are skipped when ``allow_missing``, else an error.
        predictions: ``case_id -> label map or NIfTI path`` (on the reference grid).
        spacing: mm per axis overriding the references' (layouts that store none); ``None`` keeps
            each reference's spacing (``None`` there means pixels).
        allow_missing: skip references without a prediction (or without a label) instead of failing.
        where: the folder named in the error when a prediction is missing (default: the
            reference's source).
        release: drop each case's loaded arrays after it was yielded.

    Raises:
        DataError: a labelled reference has no prediction (unless ``allow_missing``), a reference
            has no label, no reference at all has a label, a prediction's shape differs from its
            reference's, or the spacing has the wrong length.
    """

    def __init__(
        self,
        references: Iterable[ReferenceCase],
        predictions: Mapping[str, Prediction],
        spacing: Optional[Sequence[float]] = None,
        allow_missing: bool = False,
        where: Optional[Path] = None,
        release: bool = True,
    ) -> None:
        refs = list(references)
        unlabelled = [r.case_id for r in refs if not r.has_label]
        if unlabelled and not allow_missing:
            raise DataError(refs[0].source if refs else where, f"{len(unlabelled)} reference case(s) have no label "
                            f"({', '.join(unlabelled[:5])})")
        labelled = [r for r in refs if r.has_label]
        if not labelled:
            raise DataError(where or (refs[0].source if refs else None),
                            "no reference case has a label to evaluate against")
        missing = [r.case_id for r in labelled if r.case_id not in predictions]
        if missing and not allow_missing:
            head = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DataError(
                where or labelled[0].source,
                f"no prediction for {len(missing)} of {len(labelled)} labelled cases ({head}); "
                "use --allow-missing to evaluate the others",
            )
        self._refs = [r for r in labelled if r.case_id in predictions]
        self._predictions = predictions
        self._spacing = tuple(float(s) for s in spacing) if spacing is not None else None
        self._release = release

    def __len__(self) -> int:
        return len(self._refs)

    def __iter__(self) -> Iterator[Pair]:
        for ref in self._refs:
            given = self._predictions[ref.case_id]
            pred = _load(given)
            label = ref.label
            where_pred = given if isinstance(given, Path) else ref.source
            if pred.shape != label.shape:
                raise DataError(where_pred, f"prediction shape {pred.shape} differs from the reference's {label.shape}")
            sp = self._spacing if self._spacing is not None else ref.spacing
            if sp is not None and len(sp) != label.ndim:
                raise DataError(ref.source, f"spacing {sp} has {len(sp)} values for a {label.ndim}D reference")
            yield Pair(ref.case_id, pred, label, sp)
            if self._release and hasattr(ref, "release"):
                ref.release()
