"""A fold's cases as an nnU-Net v2 raw dataset: scribbles with nnU-Net's ignore label, and the fold's split.

nnU-Net learns from partial labels through its *ignore label*: the highest label value, declared
as ``"ignore"`` in ``dataset.json``; its voxels are left out of the loss. scribmed scribbles mark
unlabeled pixels with the class map's ``ignore_index``, so the export maps that value to
``num_classes`` (the value right above the last class) and keeps every class value as it is.

Layout (nnU-Net's own; the three roots live in one folder of the run, so nothing needs
``nnUNet_raw`` & co. set by the user)::

    <root>/raw/Dataset001_scribmed/
        dataset.json
        imagesTr/<case_id>_0000.nii.gz      (one file per channel)
        labelsTr/<case_id>.nii.gz           (scribble, ignore label = num_classes)
    <root>/preprocessed/Dataset001_scribmed/splits_final.json
    <root>/results/Dataset001_scribmed/...

Images keep the case's geometry (its NIfTI affine when it came from one, else its spacing; a
layout without spacing gets 1 mm). scribmed arrays are ``(slices, H, W)`` and nnU-Net reads NIfTI
through SimpleITK as ``(z, y, x)``, the same order, so predictions need no transposing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from scribmed.data.case import Case, ClassMap
from scribmed.data.errors import DataError
from scribmed.data.nifti import write_nifti
from scribmed.runtime.files import atomic_write_text

__all__ = ["DATASET_ID", "DATASET_NAME", "NNUNetFolders", "dataset_json", "ignore_label_scribble",
           "write_raw_dataset", "write_split"]

DATASET_ID = 1
DATASET_NAME = "Dataset001_scribmed"
FILE_ENDING = ".nii.gz"


@dataclass(frozen=True)
class NNUNetFolders:
    """nnU-Net's three folders (raw, preprocessed, results) under one ``root``, and the dataset in each."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def preprocessed(self) -> Path:
        return self.root / "preprocessed"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def raw_dataset(self) -> Path:
        return self.raw / DATASET_NAME

    @property
    def preprocessed_dataset(self) -> Path:
        return self.preprocessed / DATASET_NAME

    def environment(self) -> dict[str, str]:
        """The ``nnUNet_raw`` / ``nnUNet_preprocessed`` / ``nnUNet_results`` variables nnU-Net reads."""
        return {"nnUNet_raw": str(self.raw), "nnUNet_preprocessed": str(self.preprocessed),
                "nnUNet_results": str(self.results)}


def ignore_label_scribble(scribble: np.ndarray, class_map: ClassMap, source: Any = None) -> np.ndarray:
    """``scribble`` with ``class_map.ignore_index`` mapped to nnU-Net's ignore label ``num_classes``.

    Args:
        scribble: ``(slices, H, W)`` integer scribble (class values and ``ignore_index``).
        class_map: the dataset's classes (values ``0 .. num_classes - 1``).
        source: named in the error.

    Returns:
        ``(slices, H, W)`` uint8 (int16 beyond 255 classes) label map for ``labelsTr``.

    Raises:
        DataError: a value that is neither a class nor the ignore value.
    """
    scribble = np.asarray(scribble)
    k = class_map.num_classes
    if sorted(class_map.names) != list(range(k)):
        raise DataError(source, f"nnU-Net needs class values 0..{k - 1}; the class map has {sorted(class_map.names)}")
    values = np.unique(scribble)
    bad = [int(v) for v in values if v != class_map.ignore_index and not 0 <= v < k]
    if bad:
        raise DataError(source, f"scribble holds value(s) {bad[:5]} that are neither a class (0..{k - 1}) nor "
                        f"the unlabeled value {class_map.ignore_index}")
    out = scribble.astype(np.uint8 if k < 255 else np.int16, copy=True)
    out[scribble == class_map.ignore_index] = k
    return out


def dataset_json(class_map: ClassMap, channels: int, num_training: int) -> dict[str, Any]:
    """nnU-Net's ``dataset.json``: one z-scored channel per image channel, the classes and ``ignore``."""
    names = {0: "background", **{k: str(v) for k, v in class_map.names.items() if k != 0}}
    labels: dict[str, int] = {}
    for value in sorted(names):
        name = names[value]
        labels[name if name not in labels and name != "ignore" else f"{name}_{value}"] = value
    labels["ignore"] = class_map.num_classes
    channel_names = {"0": "MRI"} if channels == 1 else {str(c): f"channel_{c}" for c in range(channels)}
    return {
        "name": DATASET_NAME,
        "description": "a scribmed fold's training and validation cases; labels are scribbles, unlabeled = ignore",
        "channel_names": channel_names,
        "labels": labels,
        "numTraining": int(num_training),
        "file_ending": FILE_ENDING,
    }


def _channels(case: Case) -> int:
    shape = case.image.shape
    return 1 if len(shape) == 3 else int(shape[1])


def _geometry(case: Case) -> tuple[tuple[float, float, float], Any]:
    """``(spacing (dz, dy, dx), affine or None)`` to write ``case`` with."""
    spacing = case.spacing
    if spacing is None:
        spacing = (1.0, 1.0, 1.0)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) == 2:
        spacing = (1.0, *spacing)
    return spacing, case.affine  # type: ignore[return-value]


def write_raw_dataset(cases: Sequence[Case], class_map: ClassMap, dataset_dir: Path) -> list[str]:
    """Write ``cases`` (a fold's training and validation cases) as nnU-Net training cases into ``dataset_dir``.

    Resumable: a case whose image and label files exist is kept (each file is written atomically).
    Nothing is written next to the input data.

    Returns:
        the case identifiers, in ``cases`` order.

    Raises:
        DataError: a case without a scribble, a scribble of another shape than its image, values
            outside the class map, or cases with different channel counts.
    """
    dataset_dir = Path(dataset_dir)
    missing = [c for c in cases if not c.has_scribble]
    if missing:
        raise DataError(missing[0].source, f"nnU-Net + partial loss trains on scribbles; no scribble: "
                        f"{', '.join(c.case_id for c in missing[:5])}")
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise DataError(cases[0].source, "two cases share a case id; nnU-Net names files by it")
    (dataset_dir / "imagesTr").mkdir(parents=True, exist_ok=True)
    (dataset_dir / "labelsTr").mkdir(parents=True, exist_ok=True)
    channels = None
    for case in cases:
        c = _channels(case)
        if channels is not None and c != channels:
            raise DataError(case.source, f"image has {c} channel(s), other cases {channels}")
        channels = c
        label_path = dataset_dir / "labelsTr" / f"{case.case_id}{FILE_ENDING}"
        image_paths = [dataset_dir / "imagesTr" / f"{case.case_id}_{ch:04d}{FILE_ENDING}" for ch in range(c)]
        if label_path.exists() and all(p.exists() for p in image_paths):
            continue
        image = np.asarray(case.image, dtype=np.float32)
        scribble = np.asarray(case.scribble)
        spatial = image.shape if c == 1 and image.ndim == 3 else (image.shape[0], *image.shape[2:])
        if scribble.shape != spatial:
            raise DataError(case.source, f"scribble shape {scribble.shape} differs from the image's {spatial}")
        spacing, affine = _geometry(case)
        for ch, path in enumerate(image_paths):
            write_nifti(path, image if image.ndim == 3 else image[:, ch], spacing, affine)
        write_nifti(label_path, ignore_label_scribble(scribble, class_map, case.source), spacing, affine, is_label=True)
        case.release()
    atomic_write_text(dataset_dir / "dataset.json",
                      json.dumps(dataset_json(class_map, channels or 1, len(cases)), indent=2) + "\n")
    return ids


def write_split(path: Path, train_ids: Sequence[str], val_ids: Sequence[str]) -> None:
    """nnU-Net's ``splits_final.json`` with one fold (nnU-Net fold 0): scribmed's training and validation cases.

    A fold without validation cases validates on its training cases (nnU-Net's fold ``all``), and
    the recipe then predicts with the final checkpoint.
    """
    split = [{"train": list(train_ids), "val": list(val_ids) or list(train_ids)}]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(split, indent=2) + "\n")
