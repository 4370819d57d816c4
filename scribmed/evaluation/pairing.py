"""The one place predictions meet their reference cases: id, shape and spacing checks.

Every evaluation in scribmed (the cross-validation runner with predictions in memory,
``scribmed evaluate`` and the bundles' evaluate workflow with NIfTI files) pairs predictions with
references through :func:`paired_cases`, so a missing prediction, a reference without a label, a
shape mismatch or a spacing of the wrong length is reported the same way everywhere: a one-line
:class:`~scribmed.data.errors.DataError` naming the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Optional, Protocol, Sequence, Union

import numpy as np

from scribmed.data.errors import DataError

__all__ = ["Pair", "Reference", "ReferenceCase", "paired_cases"]

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


@dataclass
class Reference:
    """A reference label map that is not part of a dataset (e.g. a plain folder of NIfTI labels)."""

    case_id: str
    source: Path
    label: Optional[np.ndarray]
    spacing: Optional[tuple[float, ...]] = None

    @property
    def has_label(self) -> bool:
        return self.label is not None

    def release(self) -> None:
        """Nothing cached beyond the arrays held here."""


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


def paired_cases(
    references: Iterable[ReferenceCase],
    predictions: Mapping[str, Prediction],
    spacing: Optional[Sequence[float]] = None,
    allow_missing: bool = False,
    where: Optional[Path] = None,
    release: bool = True,
) -> Iterator[Pair]:
    """Yield a :class:`Pair` for every labelled reference that has a prediction, in reference order.

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
    refs = list(references)
    unlabelled = [r.case_id for r in refs if not r.has_label]
    if unlabelled and not allow_missing:
        raise DataError(refs[0].source if refs else where, f"{len(unlabelled)} reference case(s) have no label "
                        f"({', '.join(unlabelled[:5])})")
    labelled = [r for r in refs if r.has_label]
    if not labelled:
        raise DataError(where or (refs[0].source if refs else None), "no reference case has a label to evaluate against")
    missing = [r.case_id for r in labelled if r.case_id not in predictions]
    if missing and not allow_missing:
        head = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise DataError(
            where or labelled[0].source,
            f"no prediction for {len(missing)} of {len(labelled)} labelled cases ({head}); "
            "use --allow-missing to evaluate the others",
        )
    for ref in labelled:
        if ref.case_id not in predictions:
            continue
        given = predictions[ref.case_id]
        pred = _load(given)
        label = ref.label
        where_pred = given if isinstance(given, Path) else ref.source
        if pred.shape != label.shape:
            raise DataError(where_pred, f"prediction shape {pred.shape} differs from the reference's {label.shape}")
        sp = tuple(float(s) for s in spacing) if spacing is not None else ref.spacing
        if sp is not None and len(sp) != label.ndim:
            raise DataError(ref.source, f"spacing {sp} has {len(sp)} values for a {label.ndim}D reference")
        yield Pair(ref.case_id, pred, label, sp)
        if release and hasattr(ref, "release"):
            ref.release()
