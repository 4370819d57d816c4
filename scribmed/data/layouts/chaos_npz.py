"""CHAOS MR (T1, T2) scribbles as 2D ``.npz`` slices (the PacingPseudo layout).

On disk: ``.npz`` files anywhere under ``root`` (searched recursively, sorted), one per slice::

    img  (H, W) float   image
    lab  (H, W) int     label: 0 bg, 1 liver, 2 right kidney, 3 left kidney, 4 spleen (optional)
    scb  (H, W) int     scribble, 5 = unlabeled (optional)
    uid  str            "<case>_<slice index>", e.g. "T1_patient05_12"

Grouping: the trailing integer of ``uid`` (after ``_`` or ``-``) is the slice index and the rest
is the case id; slices of a case are stacked in slice-index order into a ``(slices, H, W)``
volume. Without ``uid`` the file stem is used the same way. When the case id carries no
modality token (``T1``, ``T2``, ``T1DUAL``, ``T2SPIR``, ...) but a folder between ``root`` and
the file is one (``root/T1/patient05_3.npz``), that folder is prefixed: ``T1_patient05``. The
patient id is the case id without its modality tokens, so T1 and T2 of a patient share it.
No spacing is stored; pass ``spacing=(dz, dy, dx)`` for mm.
"""

from __future__ import annotations

import io
import re
import zipfile
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from scribmed.data.case import ABDOMINAL, Case, CaseArrays, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.validation import (
    READ_ERRORS,
    as_integer_labels,
    read_error,
    spacing_option,
)
from scribmed.runtime.files import atomic_output

NAME = "chaos-npz"
_SLICE_RE = re.compile(r"^(?P<case>.+?)[_\-](?P<slice>\d+)$")
_MODALITY_RE = re.compile(r"^t[12][a-z]*$", re.IGNORECASE)


def patient_of(case_id: str) -> str:
    """``"T1_patient05"`` -> ``"patient05"``: the case id without modality tokens."""
    parts = [p for p in case_id.split("_") if not _MODALITY_RE.match(p)]
    return "_".join(parts) or case_id


def _has_modality(case_id: str) -> bool:
    return any(_MODALITY_RE.match(p) for p in case_id.split("_"))


def _read_uid(path: Path) -> tuple[Optional[str], set[str]]:
    """The ``uid`` and the key list of one slice file (only the small ``uid`` member is read)."""
    with np.load(path, allow_pickle=False) as npz:
        keys = set(npz.files)
        if "uid" not in keys:
            return None, keys
        try:
            raw = npz["uid"]
        except ValueError:  # stored as a pickled object: not loaded, for safety
            return None, keys
    value = raw.item() if raw.size == 1 else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return (str(value) if value is not None else None), keys


def _load_slice(path: Path) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    if not path.is_file():
        raise DataError(path, "missing NPZ slice file")
    if not zipfile.is_zipfile(path):
        raise DataError(path, "cannot read NPZ: not a zip archive (truncated or not an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "img" not in npz.files:
                raise DataError(path, f"missing required key 'img' (keys: {sorted(npz.files)})")
            img = np.asarray(npz["img"])
            lab = np.asarray(npz["lab"]) if "lab" in npz.files else None
            scb = np.asarray(npz["scb"]) if "scb" in npz.files else None
    except DataError:
        raise
    except READ_ERRORS as exc:
        raise read_error(path, "NPZ", exc) from None

    def as2d(a: np.ndarray, what: str) -> np.ndarray:
        if a.ndim == 3 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 2:
            raise DataError(path, f"{what} must be a 2D (H, W) slice, got shape {tuple(a.shape)}")
        return a

    img = as2d(img, "img")
    if lab is not None:
        lab = as_integer_labels(path, as2d(lab, "lab"), "label")
    if scb is not None:
        scb = as_integer_labels(path, as2d(scb, "scb"), "scribble")
    for arr, what in ((lab, "lab"), (scb, "scb")):
        if arr is not None and arr.shape != img.shape:
            raise DataError(path, f"{what} shape {arr.shape} does not match img shape {img.shape}")
    return img, lab, scb


def load_npz_case(
    paths: Sequence[Path], spacing: Optional[tuple[float, float, float]] = None
) -> CaseArrays:
    """Stack the slice files of one case (given in slice order) into a volume."""
    images, labels, scribbles = [], [], []
    for path in paths:
        img, lab, scb = _load_slice(path)
        if images and img.shape != images[0].shape:
            raise DataError(
                path, f"slice shape {img.shape} differs from the case's first slice {images[0].shape}"
            )
        images.append(img)
        labels.append(lab)
        scribbles.append(scb)

    def stack(items: list, what: str) -> Optional[np.ndarray]:
        present = [a is not None for a in items]
        if not any(present):
            return None
        if not all(present):
            missing = paths[present.index(False)]
            raise DataError(missing, f"has no '{what}' while other slices of the case do")
        return np.stack(items)

    return CaseArrays(
        image=np.stack(images).astype(np.float32, copy=False),
        label=stack(labels, "lab"),
        scribble=stack(scribbles, "scb"),
        spacing=spacing,
        affine=None,
    )


def read_dataset(
    root: str | Path,
    *,
    spacing: Optional[Sequence[float]] = None,
    class_map: ClassMap = ABDOMINAL,
) -> Dataset:
    """List and group all ``.npz`` slices under ``root`` (reads each file's ``uid`` only).

    Args:
        root: the folder holding the slices (any depth).
        spacing: optional ``(dz, dy, dx)`` in mm for every case (then ``spacing_unit="mm"``).
        class_map: defaults to the abdominal map (ignore value 5).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    spacing_t = spacing_option(spacing)
    files = sorted(p for p in root.rglob("*.npz") if p.is_file())
    if not files:
        raise DataError(root, "no .npz slices found")
    groups: dict[str, list[tuple[Optional[int], Path, set[str]]]] = {}
    problems: list[DataError] = []
    for order, path in enumerate(files):
        try:
            uid, keys = _read_uid(path)
        except READ_ERRORS:
            uid, keys = None, {"img", "lab", "scb"}  # unreadable: loading the case will say why
        name = uid if uid else path.stem
        m = _SLICE_RE.match(name)
        case_id, index = (m.group("case"), int(m.group("slice"))) if m else (name, None)
        if not _has_modality(case_id):
            folders = path.relative_to(root).parts[:-1]
            mods = [f for f in folders if _MODALITY_RE.match(f)]
            if mods:
                case_id = f"{mods[-1]}_{case_id}"
        groups.setdefault(case_id, []).append((index, path, keys))
    cases: list[Case] = []
    meta: dict[str, dict] = {}
    for case_id, items in sorted(groups.items()):
        if any(i is None for i, _, _ in items):
            ordered = items  # no slice numbers: keep file order
        else:
            ordered = sorted(items, key=lambda t: t[0])
            indices = [i for i, _, _ in ordered]
            dup = sorted({i for i in indices if indices.count(i) > 1})
            if dup:
                clash = [p for i, p, _ in ordered if i == dup[0]]
                problems.append(
                    DataError(clash[-1], f"slice index {dup[0]} of case {case_id} also in {clash[0]}")
                )
        paths = [p for _, p, _ in ordered]
        cases.append(
            Case(
                case_id=case_id,
                patient_id=patient_of(case_id),
                source=paths[0].parent if len({p.parent for p in paths}) == 1 else root,
                loader=partial(load_npz_case, paths, spacing_t),
                has_label=all("lab" in k for _, _, k in ordered),
                has_scribble=all("scb" in k for _, _, k in ordered),
            )
        )
        meta[case_id] = {"files": {"image": paths[0]}, "slices": paths}
    return Dataset(NAME, root, class_map, cases, "mm" if spacing_t else "none", meta, problems)


def write_case(
    root: str | Path,
    case_id: str,
    patient_id: str,
    image: np.ndarray,
    label: Optional[np.ndarray] = None,
    scribble: Optional[np.ndarray] = None,
    spacing: Optional[Sequence[float]] = None,
    affine: Optional[np.ndarray] = None,
) -> Path:
    """Write ``root/<case_id>/<case_id>_<k>.npz`` per slice k (atomically), uid ``<case_id>_<k>``.

    ``case_id`` must reduce to ``patient_id`` by dropping modality tokens (``"T1_patient05"`` ->
    ``"patient05"``). The layout stores no spacing/affine (accepted and ignored). Returns the
    case folder.
    """
    if patient_of(case_id) != patient_id:
        raise ValueError(
            f"chaos-npz case id must be '<modality>_<patient_id>', got {case_id!r} for patient {patient_id!r}"
        )
    if _SLICE_RE.match(case_id):  # a trailing number would be read back as a slice index
        raise ValueError(f"chaos-npz case id must not end in '_<number>', got {case_id!r}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"image must be (slices, H, W), got shape {image.shape}")
    maps = {}
    for arr, what, key in ((label, "label", "lab"), (scribble, "scribble", "scb")):
        if arr is None:
            continue
        arr = as_integer_labels(what, np.asarray(arr), what)
        if arr.shape != image.shape:
            raise ValueError(f"{what} shape {arr.shape} does not match image shape {image.shape}")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
            raise ValueError(f"{what} values must lie in [0, 255] to be stored as uint8")
        maps[key] = arr.astype(np.uint8, copy=False)
    folder = Path(root) / case_id
    for k in range(image.shape[0]):
        uid = f"{case_id}_{k}"
        members = {"img": image[k], "uid": np.array(uid)}
        members.update({key: arr[k] for key, arr in maps.items()})
        buf = io.BytesIO()
        np.savez_compressed(buf, **members)
        with atomic_output(folder / f"{uid}.npz") as tmp:
            tmp.write_bytes(buf.getvalue())
    return folder
