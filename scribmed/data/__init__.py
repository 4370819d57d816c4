"""Dataset readers (one per public layout), splits, phantoms, scribble synthesis and weak labels.

Arrays are ``(slices, H, W)`` with spacing ``(dz, dy, dx)`` in mm (or ``None``); see
:mod:`scribmed.data.case` and ``docs/data.md``.
"""

from scribmed.data.case import ABDOMINAL, CARDIAC, Case, CaseArrays, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError, SplitError
from scribmed.data.layouts import LAYOUTS, open_dataset, write_dataset
from scribmed.data.nifti import read_image_nifti, read_label_nifti, write_prediction
from scribmed.data.phantoms import (
    PhantomCase,
    generate_abdominal,
    generate_cardiac,
    write_phantom_dataset,
)
from scribmed.data.scribble_synthesis import (
    ABDOMINAL_STYLE,
    ScribbleStyle,
    scribble_stats,
    synthesize_scribbles,
)
from scribmed.data.split_files import load_split, save_split
from scribmed.data.split_types import Fold, Split
from scribmed.data.splits import (
    SplitReport,
    carve_validation,
    fold_cases,
    make_kfold_split,
    resolve_split,
    validate_split,
)
from scribmed.data.supervision_mix import assign_supervision
from scribmed.data.weak_conversion import boxes_from_label, make_weak_dataset, points_from_label
from scribmed.data.weak_labels import (
    SUPERVISION_TYPES,
    PointSet,
    WeakLabel,
    read_supervision,
    read_weak_label,
    write_supervision,
    write_weak_label,
)

__all__ = [
    "ABDOMINAL",
    "CARDIAC",
    "LAYOUTS",
    "Case",
    "CaseArrays",
    "ClassMap",
    "DataError",
    "Dataset",
    "Fold",
    "PhantomCase",
    "ABDOMINAL_STYLE",
    "ScribbleStyle",
    "Split",
    "SplitError",
    "SplitReport",
    "carve_validation",
    "fold_cases",
    "generate_abdominal",
    "generate_cardiac",
    "load_split",
    "make_kfold_split",
    "resolve_split",
    "save_split",
    "scribble_stats",
    "synthesize_scribbles",
    "validate_split",
    "write_phantom_dataset",
    "open_dataset",
    "read_image_nifti",
    "read_label_nifti",
    "write_dataset",
    "write_prediction",
    "SUPERVISION_TYPES",
    "PointSet",
    "WeakLabel",
    "assign_supervision",
    "boxes_from_label",
    "make_weak_dataset",
    "points_from_label",
    "read_supervision",
    "read_weak_label",
    "write_supervision",
    "write_weak_label",
]
