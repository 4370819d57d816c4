"""Checks that turn bad input into one-line :class:`DataError` messages.

Readers call the cheap checks while loading (readable file, required keys, shapes, header
spacing agreement, integer labels); :meth:`Dataset.validate` additionally runs the value checks
(labels inside the class map, scribbles inside the class map plus the ignore value, finite
image). Every message names the file and the problem on a single line.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from scribmed.data.case import CaseArrays, ClassMap
from scribmed.data.errors import DataError

#: Exceptions that mean "this file cannot be read" (corrupt, truncated, wrong format, I/O).
READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zlib.error,
    struct.error,
    ValueError,
    RuntimeError,
    KeyError,
    TypeError,
)

try:  # nibabel's own format errors are ValueError/Exception subclasses depending on version
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError

    READ_ERRORS = READ_ERRORS + (ImageFileError, HeaderDataError)
except ImportError:  # pragma: no cover - nibabel is a hard dependency
    pass

#: Relative tolerance when comparing voxel spacings of image and label headers.
SPACING_RTOL = 1e-3


def short_reason(exc: BaseException, limit: int = 160, path: str | Path | None = None) -> str:
    """One-line exception message (or its type name), truncated to ``limit`` chars.

    When ``path`` is given, its full spelling inside the message is shortened to the file name
    (the error already starts with the full path).
    """
    text = " ".join(str(exc).split())
    if path is not None:
        text = text.replace(str(path), Path(path).name)
    if not text:
        text = type(exc).__name__
    elif type(exc).__name__ not in text:
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_error(path: str | Path, kind: str, exc: BaseException) -> DataError:
    """The error raised when ``path`` (of format ``kind``, e.g. "HDF5") cannot be read."""
    return DataError(path, f"cannot read {kind}: {short_reason(exc, path=path)}")


def require_file(path: Path, what: str) -> None:
    """Raise when ``path`` is not an existing file (``what`` says which role it plays)."""
    if not path.is_file():
        raise DataError(path, f"missing {what} file")


def check_volume_ndim(path: str | Path, array: np.ndarray, what: str) -> None:
    """Arrays must be ``(slices, H, W)``."""
    if array.ndim != 3:
        raise DataError(path, f"{what} must be 3D (slices, H, W), got shape {tuple(array.shape)}")


def check_shapes(
    path: str | Path,
    image: np.ndarray,
    label: Optional[np.ndarray] = None,
    scribble: Optional[np.ndarray] = None,
    *,
    label_path: str | Path | None = None,
    scribble_path: str | Path | None = None,
) -> None:
    """Image, label and scribble must share one shape; the message names the offending file."""
    for arr, what, where in ((label, "label", label_path), (scribble, "scribble", scribble_path)):
        if arr is not None and tuple(arr.shape) != tuple(image.shape):
            raise DataError(
                where or path,
                f"{what} shape {tuple(arr.shape)} does not match image shape {tuple(image.shape)}",
            )


def check_spacing_match(
    path: str | Path,
    image_spacing: Optional[Sequence[float]],
    other_spacing: Optional[Sequence[float]],
    what: str = "label",
    rtol: float = SPACING_RTOL,
) -> None:
    """Header spacings of image and ``what`` (label/scribble) must agree within ``rtol``."""
    if image_spacing is None or other_spacing is None:
        return
    a = np.asarray(image_spacing, dtype=float)
    b = np.asarray(other_spacing, dtype=float)
    if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=0.0):
        fa = ", ".join(f"{v:.6g}" for v in a)
        fb = ", ".join(f"{v:.6g}" for v in b)
        raise DataError(path, f"{what} spacing ({fb}) differs from image spacing ({fa})")


def as_integer_labels(path: str | Path, array: np.ndarray, what: str = "label") -> np.ndarray:
    """Return ``array`` with an integer dtype; float arrays must hold whole numbers only.

    Integer arrays are returned unchanged; float arrays with only integral values are cast to
    the smallest fitting integer dtype; anything else raises (naming a few bad values).
    """
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(path, f"{what} has unsupported dtype {array.dtype}")
    finite = np.isfinite(array)
    if not finite.all():
        raise DataError(path, f"{what} contains NaN or inf values")
    frac = array != np.round(array)
    if frac.any():
        bad = np.unique(array[frac])[:5]
        raise DataError(
            path, f"{what} has non-integer values (e.g. {', '.join(f'{v:g}' for v in bad)})"
        )
    return compact_int(array)


def compact_int(array: np.ndarray) -> np.ndarray:
    """Cast integral-valued ``array`` to uint8, int16 or int32, the smallest that holds it."""
    if array.size == 0:
        return array.astype(np.uint8)
    lo, hi = float(array.min()), float(array.max())
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return array.astype(dtype)
    return array.astype(np.int64)


def _present_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an integer array (bincount when values are small: fast)."""
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(array.min()), int(array.max())
    if lo >= 0 and hi < 65536:
        counts = np.bincount(array.ravel().astype(np.intp, copy=False), minlength=hi + 1)
        return np.nonzero(counts)[0]
    return np.unique(array)


def _fmt_values(values: Sequence[int], limit: int = 8) -> str:
    vals = [str(int(v)) for v in values[:limit]]
    more = "" if len(values) <= limit else f" (+{len(values) - limit} more)"
    return ", ".join(vals) + more


def check_label_values(path: str | Path, label: np.ndarray, class_map: ClassMap) -> None:
    """Every label value must be a class of ``class_map``; lists the values that are not."""
    label = as_integer_labels(path, label, "label")
    allowed = set(class_map.names)
    bad = [v for v in _present_values(label) if int(v) not in allowed]
    if bad:
        raise DataError(
            path,
            f"label values {_fmt_values(bad)} are not in the class map "
            f"{{{', '.join(str(k) for k in sorted(allowed))}}}",
        )


def check_scribble_values(path: str | Path, scribble: np.ndarray, class_map: ClassMap) -> None:
    """Scribble values must be classes or the ignore value; lists the values that are not."""
    scribble = as_integer_labels(path, scribble, "scribble")
    allowed = set(class_map.names) | {class_map.ignore_index}
    bad = [v for v in _present_values(scribble) if int(v) not in allowed]
    if bad:
        raise DataError(
            path,
            f"scribble values {_fmt_values(bad)} are neither classes "
            f"{{{', '.join(str(k) for k in sorted(class_map.names))}}} "
            f"nor the ignore value {class_map.ignore_index}",
        )


def check_image_finite(path: str | Path, image: np.ndarray) -> None:
    """The image must contain no NaN or inf (they poison normalisation and losses)."""
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        n = int(image.size - np.count_nonzero(np.isfinite(image)))
        raise DataError(path, f"image contains {n} NaN/inf voxel(s)")


def check_spacing_values(path: str | Path, spacing: Optional[Sequence[float]]) -> None:
    """Spacing, when present, must be 3 positive finite numbers."""
    if spacing is None:
        return
    arr = np.asarray(spacing, dtype=float)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise DataError(path, f"invalid voxel spacing {tuple(arr.tolist())} (need 3 positive mm values)")


def check_arrays(
    path: str | Path,
    arrays: CaseArrays,
    class_map: ClassMap,
    *,
    label_path: str | Path | None = None,
    scribble_path: str | Path | None = None,
) -> None:
    """All checks on one loaded case; raises the first problem found.

    Args:
        path: the image file (or main file) of the case, used in messages.
        arrays: what the case's loader returned.
        class_map: the dataset's class map (labels) and ignore value (scribbles).
        label_path / scribble_path: the files those arrays came from, when separate.
    """
    image = arrays.image
    grid = image
    if np.ndim(image) == 4:  # multi-channel images (slices, C, H, W), e.g. RGB microscopy: check per channel grid
        if np.shape(image)[1] not in (1, 3, 4):
            raise DataError(path, f"image has shape {np.shape(image)}: a 4D image must be (slices, C, H, W) with "
                            "1, 3 or 4 channels")
        grid = np.asarray(image)[:, 0]
    check_volume_ndim(path, grid, "image")
    check_shapes(
        path, grid, arrays.label, arrays.scribble, label_path=label_path, scribble_path=scribble_path
    )
    check_spacing_values(path, arrays.spacing)
    check_image_finite(path, image)
    if arrays.label is not None:
        check_label_values(label_path or path, arrays.label, class_map)
    if arrays.scribble is not None:
        check_scribble_values(scribble_path or path, arrays.scribble, class_map)


def spacing_option(spacing: Optional[Sequence[float]]) -> Optional[tuple[float, float, float]]:
    """Validate a user-supplied ``spacing=(dz, dy, dx)`` option (mm) for layouts without one."""
    if spacing is None:
        return None
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise DataError(None, f"spacing option must be 3 numbers (dz, dy, dx) in mm, got {spacing!r}") from None
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise DataError(None, f"spacing option must be 3 positive numbers (dz, dy, dx) in mm, got {spacing!r}")
    return values  # type: ignore[return-value]
