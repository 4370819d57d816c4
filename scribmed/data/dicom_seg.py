"""A label map as a DICOM Segmentation (DICOM-SEG) object referencing its source series.

One binary segment per foreground class of the class map, in class-value order (segment ``i``
is the ``i``-th foreground class), labelled with the class name, even when the class is absent
from the label map: every frame is kept (no empty-frame omission), so a reader finds every
class and an absent one is all zeros. Frame ``z`` of each segment lies on source slice ``z``
(``source_files[z]``, the order :mod:`scribmed.data.dicom_series` sorts a series in).

Coding: category SNOMED CT "Anatomical Structure"; type the SNOMED CT structure for the class
names scribmed's own class maps use (cardiac, abdominal), "Anatomical Structure" for others;
algorithm type AUTOMATIC, identified as ``scribmed`` with its version and the recipe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from scribmed.data.dicom_series import DICOM_ERRORS
from scribmed.data.errors import DataError
from scribmed.data.validation import short_reason
from scribmed.runtime.files import atomic_output

#: SNOMED CT codes ``(value, meaning)`` of the structures named by scribmed's class maps (lower case).
STRUCTURE_CODES: dict[str, tuple[str, str]] = {
    "lv": ("87878005", "Left ventricle"),
    "rv": ("53085002", "Right ventricle"),
    "myo": ("74281007", "Myocardium"),
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "right_kidney": ("9846003", "Right kidney"),
    "left_kidney": ("18639004", "Left kidney"),
}
ANATOMICAL_STRUCTURE = ("91723000", "Anatomical Structure")
SERIES_NUMBER = 100


def _code(value_meaning: tuple[str, str]) -> Any:
    from pydicom.sr.coding import Code

    return Code(value_meaning[0], "SCT", value_meaning[1])


def _segments(class_names: Mapping[int, str], recipe: str, version: str) -> list[Any]:
    """One SegmentDescription per foreground class, numbered 1, 2, ... in class-value order."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="scribmed", family=codes.cid7162.ArtificialIntelligence, version=version or "unknown",
        parameters={"recipe": recipe})
    out = []
    for number, value in enumerate(sorted(k for k in class_names if k != 0), 1):
        name = str(class_names[value])
        out.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            segmented_property_category=_code(ANATOMICAL_STRUCTURE),
            segmented_property_type=_code(STRUCTURE_CODES.get(name.lower(), ANATOMICAL_STRUCTURE)),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=name[:64],
        ))
    return out


def segment_map(labels: np.ndarray, class_names: Mapping[int, str], path: str | Path) -> np.ndarray:
    """The label map with class values replaced by segment numbers (0 stays background).

    Raises:
        DataError: a value that is not a class of ``class_names``.
    """
    foreground = sorted(k for k in class_names if k != 0)
    unknown = sorted(set(np.unique(labels).tolist()) - set(class_names))
    if unknown:
        raise DataError(path, f"label values {unknown} are not classes of the class map {dict(class_names)}")
    out = np.zeros(labels.shape, np.uint8 if len(foreground) < 256 else np.uint16)
    for number, value in enumerate(foreground, 1):
        out[labels == value] = number
    return out


def write_dicom_seg(
    path: str | Path,
    labels_zyx: np.ndarray,
    class_names: Mapping[int, str],
    source_files: Sequence[Path],
    *,
    recipe: str,
    version: str,
) -> Path:
    """Write ``labels_zyx`` (class values on the source grid) as one DICOM-SEG file, atomically.

    Args:
        path: the output file (``<case_id>.dcm``).
        labels_zyx: ``(z, y, x)`` label map; ``z`` indexes ``source_files``.
        class_names: class value -> name (0 = background, not a segment).
        source_files: the source series' files in slice order (``Case.source_files``).
        recipe: the recipe that predicted (recorded in the algorithm identification).
        version: scribmed's version (the algorithm version and SoftwareVersions).

    Raises:
        DataError: no source files, a shape that is not the source grid, values outside the
            class map, an unreadable source file, or a class map without a foreground class.
    """
    import highdicom as hd
    import pydicom

    path = Path(path)
    labels = np.asarray(labels_zyx)
    if not source_files:
        raise DataError(path, "no source DICOM files to reference (DICOM-SEG needs a DICOM input series)")
    if not any(k != 0 for k in class_names):
        raise DataError(path, "the class map has no foreground class: nothing to segment")
    sources = []
    for source in source_files:
        try:
            sources.append(pydicom.dcmread(source, stop_before_pixels=True))
        except DICOM_ERRORS as exc:
            raise DataError(source, f"cannot read DICOM: {short_reason(exc, path=source)}") from None
    grid = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if labels.shape != grid:
        raise DataError(path, f"label map of shape {labels.shape} is not on the source series' grid {grid}")
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segment_map(labels, class_names, path),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(class_names, recipe, version),
        series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="scribmed",
        manufacturer_model_name=f"scribmed {recipe}"[:64],
        software_versions=version or "unknown",
        device_serial_number="0",
        series_description=f"scribmed {recipe} segmentation"[:64],
        omit_empty_frames=False,
    )
    with atomic_output(path) as tmp:
        seg.save_as(tmp)
    return path


__all__ = ["STRUCTURE_CODES", "segment_map", "write_dicom_seg"]
